#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// O_PATH (Glibc's module does not export it).
let oPath: Int32 = 0o10000000

/// Path resolution confined to the sysroot: one component at a time with
/// openat(O_NOFOLLOW), symlinks read and expanded by hand (absolute targets
/// taken relative to the sysroot, as in the booted system), `..` above the
/// sysroot refused, at most `hopLimit` symlinks.
public struct SysrootResolver {
    public static let hopLimit = 40
    public let sysroot: [UInt8]
    public let root: FileDescriptor

    public enum Kind { case directory, regularFile }

    public struct Resolved {
        /// Components from the sysroot, without symlinks, `.` or `..`.
        public var components: [[UInt8]]
        /// The sysroot path joined with the components.
        public var path: [UInt8]
    }

    public init(sysroot: [UInt8]) throws(PrepareRootError) {
        self.sysroot = sysroot
        do { root = try FileDescriptor.open(sysroot, oPath | O_DIRECTORY) } catch {
            throw PrepareRootError("cannot open the sysroot \(displayPath(sysroot)): \(systemMessage(error))")
        }
    }

    public func close() { root.close() }

    public func resolve(_ path: [UInt8], as kind: Kind, what: String) throws(PrepareRootError) -> Resolved {
        try walk(path, as: kind, openingWith: nil, what: what).0
    }

    /// Resolves `path` as `resolve` does and opens what it names, never
    /// following a symlink there: a directory as O_PATH (for fstat and the
    /// *at calls), a regular file with `flags`, checked to be a regular file
    /// once open (so that what was checked is what is read). The descriptor
    /// is the caller's to close.
    public func open(_ path: [UInt8], as kind: Kind, flags: Int32 = O_RDONLY, what: String) throws(PrepareRootError) -> (Resolved, FileDescriptor) {
        let (r, fd) = try walk(path, as: kind, openingWith: flags, what: what)
        return (r, fd!)  // walk opens whenever it is given flags
    }

    private func walk(_ path: [UInt8], as kind: Kind, openingWith flags: Int32?, what: String) throws(PrepareRootError) -> (Resolved, FileDescriptor?) {
        var pending = split(path).reversed() as [[UInt8]]
        var fds: [FileDescriptor] = []
        var names: [[UInt8]] = []
        var hops = 0
        defer { fds.forEach { $0.close() } }
        func where_() -> String { "/" + names.map { displayPath($0) }.joined(separator: "/") }
        while let c = pending.popLast() {
            if c == [0x2e] { continue }
            if c == [0x2e, 0x2e] {
                guard let fd = fds.popLast() else {
                    throw PrepareRootError("\(what) \(displayPath(path)) leads outside the sysroot (.. above /)")
                }
                fd.close()
                names.removeLast()
                continue
            }
            let dir = fds.last ?? root
            var st = Glibc.stat()
            guard c.withCString({ fstatat(dir.rawValue, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                let e = SystemError.current("lstat")
                let at = where_() + (names.isEmpty ? "" : "/") + displayPath(c)
                if e.errno == ENOENT { throw PrepareRootError("\(what) \(displayPath(path)) does not exist in the sysroot (no \(at))") }
                throw PrepareRootError("\(what) \(displayPath(path)): \(at): \(e.message)")
            }
            switch st.st_mode & S_IFMT {
            case S_IFLNK:
                hops += 1
                guard hops <= Self.hopLimit else {
                    throw PrepareRootError("\(what) \(displayPath(path)): more than \(Self.hopLimit) symlinks (a symlink loop)")
                }
                let target: [UInt8]
                do { target = try FileSystem.readLink(c, relativeTo: dir) } catch {
                    throw PrepareRootError("\(what) \(displayPath(path)): \(systemMessage(error))")
                }
                guard !target.isEmpty else { throw PrepareRootError("\(what) \(displayPath(path)): empty symlink") }
                if target.first == 0x2f {
                    fds.forEach { $0.close() }
                    fds.removeAll()
                    names.removeAll()
                }
                pending.append(contentsOf: split(target).reversed())
            case S_IFDIR:
                let fd: FileDescriptor
                do { fd = try FileDescriptor.open(c, oPath | O_DIRECTORY | O_NOFOLLOW, relativeTo: dir) } catch {
                    throw PrepareRootError("\(what) \(displayPath(path)): \(systemMessage(error))")
                }
                fds.append(fd)
                names.append(c)
            case S_IFREG where pending.isEmpty && kind == .regularFile:
                names.append(c)
                let resolved = Resolved(components: names, path: join(names))
                guard let flags else { return (resolved, nil) }
                // O_NONBLOCK: a FIFO swapped in after the check must not block the open.
                let fd: FileDescriptor
                do { fd = try FileDescriptor.open(c, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, relativeTo: dir) } catch {
                    throw PrepareRootError("cannot open \(what) \(displayPath(resolved.path)): \(systemMessage(error))")
                }
                guard let st = try? fd.stat(), st.st_mode & S_IFMT == S_IFREG else {
                    fd.close()
                    throw PrepareRootError("\(what) \(displayPath(resolved.path)) is not a regular file")
                }
                return (resolved, fd)
            default:
                throw PrepareRootError("\(what) \(displayPath(path)): \(where_())/\(displayPath(c)) is not a \(pending.isEmpty && kind == .regularFile ? "regular file" : "directory")")
            }
        }
        guard kind == .directory else { throw PrepareRootError("\(what) \(displayPath(path)) is a directory") }
        let resolved = Resolved(components: names, path: join(names))
        guard flags != nil else { return (resolved, nil) }
        if let last = fds.popLast() { return (resolved, last) }
        do { return (resolved, try FileDescriptor.open(Array(".".utf8), oPath | O_DIRECTORY, relativeTo: root)) } catch {
            throw PrepareRootError("\(what) \(displayPath(path)): \(systemMessage(error))")
        }
    }

    func join(_ names: [[UInt8]]) -> [UInt8] {
        var p = sysroot
        while p.count > 1 && p.last == 0x2f { p.removeLast() }
        for n in names { p.append(0x2f); p += n }
        return p
    }

    func split(_ p: [UInt8]) -> [[UInt8]] {
        p.split(separator: 0x2f, omittingEmptySubsequences: true).map(Array.init)
    }
}

/// A deployment found from `ostree=`.
public struct Deployment {
    public var stateroot: [UInt8]
    public var checksum: String
    public var serial: String
    /// Canonical path (sysroot joined with ostree/deploy/...).
    public var path: [UInt8]
    public var relativePath: [UInt8]

    /// The resolved path must be `ostree/deploy/<stateroot>/deploy/<64 hex>.<serial>`.
    init(_ r: SysrootResolver.Resolved, argument: [UInt8]) throws(PrepareRootError) {
        let c = r.components
        let shape = "ostree/deploy/<stateroot>/deploy/<checksum>.<serial>"
        let rel = c.map { $0 }.joined(separator: [0x2f])
        guard c.count == 5, c[0] == Array("ostree".utf8), c[1] == Array("deploy".utf8), c[3] == Array("deploy".utf8) else {
            throw PrepareRootError("ostree=\(displayPath(argument)) resolves to /\(displayPath(Array(rel))), not a deployment (\(shape))")
        }
        let name = c[4]
        guard let dot = name.firstIndex(of: 0x2e), dot == 64,
              hexDecode(name[..<dot]) != nil,
              name.count > 65, name[(dot + 1)...].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            throw PrepareRootError("ostree=\(displayPath(argument)) resolves to /\(displayPath(Array(rel))), whose name is not <checksum>.<serial>")
        }
        stateroot = c[2]
        checksum = String(decoding: name[..<dot].map(asciiLower), as: UTF8.self)
        serial = String(decoding: name[(dot + 1)...], as: UTF8.self)
        path = r.path
        relativePath = Array(rel)
    }
}
