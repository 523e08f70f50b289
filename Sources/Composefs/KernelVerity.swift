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

    public static func digest(ofFile path: [UInt8]) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return try fd.closeAfter { try digest(of: fd) }
    }
}
