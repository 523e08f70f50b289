#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// Everything the program mounted or created, undone in reverse order when
/// a later step fails, so that a refusal leaves nothing behind.
final class MountStack {
    enum Step {
        case mount([UInt8])
        case directory([UInt8])
        case file([UInt8])
    }
    private(set) var steps: [Step] = []

    func recordMount(_ target: [UInt8]) { steps.append(.mount(target)) }

    /// Creates `path` (and missing parents) as directories; each one created is recorded.
    func makeDirectories(_ path: [UInt8]) throws(PrepareRootError) {
        var prefix: [UInt8] = path.first == 0x2f ? [0x2f] : []
        for c in path.split(separator: 0x2f) {
            if prefix.count > 1 || (prefix.count == 1 && prefix[0] != 0x2f) { prefix.append(0x2f) }
            prefix += c
            if prefix.withCString({ mkdir($0, 0o755) }) == 0 {
                steps.append(.directory(prefix))
            } else if errno != EEXIST {
                throw PrepareRootError("cannot create \(displayPath(prefix)): \(SystemError.current("mkdir").message)")
            }
        }
    }

    func recordFile(_ path: [UInt8]) { steps.append(.file(path)) }

    /// A mount target must be a real directory: never a symlink that would
    /// carry the mount elsewhere.
    static func checkTarget(_ target: [UInt8]) throws(PrepareRootError) {
        var st = Glibc.stat()
        guard target.withCString({ lstat($0, &st) }) == 0 else {
            throw PrepareRootError("mount point \(displayPath(target)): \(SystemError.current("lstat").message)")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw PrepareRootError("mount point \(displayPath(target)) is not a directory")
        }
    }

    func mount(_ source: [UInt8], on target: [UInt8], type: String?, flags: UInt, data: String?, what: String) throws(PrepareRootError) {
        try Self.checkTarget(target)
        let r = source.withCString { s in
            target.withCString { t in
                if let data { return Glibc.mount(s, t, type, flags, data) }
                return Glibc.mount(s, t, type, flags, nil)
            }
        }
        guard r == 0 else {
            throw PrepareRootError("\(what): mounting \(displayPath(source)) on \(displayPath(target)) failed: \(SystemError.current("mount").message)")
        }
        steps.append(.mount(target))
    }

    func bind(_ source: [UInt8], on target: [UInt8], readOnly: Bool = false, what: String) throws(PrepareRootError) {
        try mount(source, on: target, type: nil, flags: UInt(MS_BIND), data: nil, what: what)
        if readOnly {
            let r = target.withCString { Glibc.mount(nil, $0, nil, UInt(MS_REMOUNT | MS_BIND | MS_RDONLY), nil) }
            guard r == 0 else {
                throw PrepareRootError("\(what): making \(displayPath(target)) read-only failed: \(SystemError.current("mount").message)")
            }
        }
    }

    /// Undoes every step, last first; unmounts lazily when a plain unmount fails.
    func unwind() {
        for step in steps.reversed() {
            switch step {
            case .mount(let t):
                if t.withCString({ umount2($0, 0) }) != 0 { _ = t.withCString { umount2($0, Int32(MNT_DETACH)) } }
            case .directory(let d): _ = d.withCString { rmdir($0) }
            case .file(let f): _ = f.withCString { unlink($0) }
            }
        }
        steps.removeAll()
    }

    /// Forgets the steps (after success).
    func commit() { steps.removeAll() }
}

/// Overlayfs option values escape ':', ',' and '\' with a backslash.
func overlayEscape(_ path: [UInt8]) -> String {
    var out: [UInt8] = []
    for b in path {
        if b == 0x3a || b == 0x2c || b == 0x5c { out.append(0x5c) }
        out.append(b)
    }
    return String(decoding: out, as: UTF8.self)
}
