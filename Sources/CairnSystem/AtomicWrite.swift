#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension FileSystem {
    /// Writes the file at `path` atomically and durably: `body` fills a new
    /// temporary file beside it, which is given `mode`, synced and renamed
    /// over `path`, then the folder is synced. On any error the temporary
    /// file is removed and `path` is as it was.
    public static func writeAtomically(_ path: String, mode: mode_t = 0o644, _ body: (FileDescriptor) throws -> Void) throws {
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        var template = Array((dir + "/.cairn-tmp-XXXXXX").utf8CString)
        let raw = mkstemp(&template)
        guard raw >= 0 else { throw SystemError.current("mkstemp", path: Array(dir.utf8)) }
        let tmp = template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            try fd.closeAfter {
                try body(fd)
                guard fchmod(fd.rawValue, mode) == 0 else { throw SystemError.current("fchmod", path: tmp) }
                try fd.sync()
            }
            try rename(tmp, to: Array(path.utf8))
        } catch {
            try? unlink(tmp)
            throw error
        }
        try syncDirectory(dir)
    }

    /// fsync of a folder, so that entries renamed or created in it are durable.
    public static func syncDirectory(_ dir: String) throws {
        let fd = try FileDescriptor.open(dir, O_RDONLY | O_DIRECTORY)
        try fd.closeAfter { try fd.sync() }
    }
}
