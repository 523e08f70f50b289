#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import CCairnShim

/// fs-verity as the kernel keeps it: enabling it on a file and reading the
/// digest it measured, with the userspace computation as the fallback.
public enum KernelVerity {
    /// The digest the kernel holds for `fd`, or nil when the file has no
    /// fs-verity (or the filesystem does not support it).
    public static func measure(_ fd: FileDescriptor) -> [UInt8]? {
        var digest = [UInt8](repeating: 0, count: 32)
        return cairn_measure_verity(fd.rawValue, &digest) == 0 ? digest : nil
    }

    /// Enables fs-verity (SHA-256, 4 KiB blocks) on a file opened read-only.
    /// Returns false where the filesystem cannot; other failures throw.
    @discardableResult
    public static func enable(_ fd: FileDescriptor, path: [UInt8]? = nil) throws -> Bool {
        if cairn_enable_verity(fd.rawValue) == 0 { return true }
        switch errno {
        case EEXIST: return true  // already enabled
        case EOPNOTSUPP, ENOTTY, EINVAL, ENOSYS: return false
        default: throw SystemError.current("enabling fs-verity on", path: path)
        }
    }

    /// The fs-verity digest of a file: measured by the kernel when the file
    /// has fs-verity, else computed from its content.
    public static func digest(of fd: FileDescriptor) throws -> [UInt8] {
        if let d = measure(fd) { return d }
        return try fsVerityDigest(ofFile: fd)
    }

    /// The digest of one file, on all cores when it is large (`image digest`).
    public static func digest(ofFile path: [UInt8]) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return try fd.closeAfter {
            if let d = measure(fd) { return d }
            let st = try fd.stat()
            let cores = onlineProcessorCount()
            guard st.st_mode & S_IFMT == S_IFREG, st.st_size >= 1 << 20, cores > 1 else { return try fsVerityDigest(ofFile: fd) }
            return try fsVerityDigest(ofFile: fd, size: Int(st.st_size), threads: cores)
        }
    }

    /// `cairn image digest`: for one file its digest, for several a
    /// `<digest>  <file>` line each (as sha256sum), each line to `emit`.
    public static func printDigests(of files: [String], _ emit: (String) -> Void) throws {
        for f in files {
            let d: [UInt8]
            do { d = try digest(ofFile: Array(f.utf8)) } catch let e as SystemError {
                throw RepoError("hashing \(f)", e.message)
            }
            emit(files.count == 1 ? hexString(d) + "\n" : "\(hexString(d))  \(f)\n")
        }
    }
}

/// What sealing a sysroot did.
public struct SealReport: Sendable {
    public var enabled = 0
    public var alreadyEnabled = 0
    /// The filesystem cannot do fs-verity (nothing was changed then).
    public var unsupported = false
    public init() {}
}

extension KernelVerity {
    /// Enables fs-verity on every file object of the sysroot's repository
    /// (`ostree/repo/objects/XX/*.file`) and every deployment image
    /// (`ostree/deploy/*/deploy/*/.ostree.cfs`), as `ostree admin post-copy`
    /// does: for a sysroot prepared where fs-verity was not available.
    public static func sealSysroot(_ sysroot: [UInt8]) throws -> SealReport {
        var report = SealReport()
        let base = sysroot == [0x2f] ? [] : sysroot
        var files: [[UInt8]] = []
        let objects = base + Array("/ostree/repo/objects".utf8)
        for dir in try FileSystem.directoryEntries(objects) where dir.count == 2 {
            let d = objects + [0x2f] + dir
            for name in (try? FileSystem.directoryEntries(d)) ?? [] where name.count > 5 && Array(name.suffix(5)) == Array(".file".utf8) {
                files.append(d + [0x2f] + name)
            }
        }
        let deploy = base + Array("/ostree/deploy".utf8)
        for stateroot in (try? FileSystem.directoryEntries(deploy)) ?? [] {
            let dir = deploy + [0x2f] + stateroot + Array("/deploy".utf8)
            for name in (try? FileSystem.directoryEntries(dir)) ?? [] {
                let image = dir + [0x2f] + name + Array("/.ostree.cfs".utf8)
                if FileSystem.exists(image) { files.append(image) }
            }
        }
        for path in files {
            guard let st = try? FileSystem.lstat(path), (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let fd = try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW)
            defer { fd.close() }
            if measure(fd) != nil {
                report.alreadyEnabled += 1
                continue
            }
            guard try enable(fd, path: path) else {
                report.unsupported = true
                return report
            }
            report.enabled += 1
        }
        return report
    }
}
