#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCairnShim

/// Path-level system calls on raw-byte paths, each throwing a `SystemError`
/// that names the path.
public enum FileSystem {
    public static func lstat(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws -> Glibc.stat {
        var st = Glibc.stat()
        let r = path.withCString { fstatat(dir.rawValue, $0, &st, AT_SYMLINK_NOFOLLOW) }
        guard r == 0 else { throw SystemError.current("lstat", path: path) }
        return st
    }

    public static func stat(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws -> Glibc.stat {
        var st = Glibc.stat()
        let r = path.withCString { fstatat(dir.rawValue, $0, &st, 0) }
        guard r == 0 else { throw SystemError.current("stat", path: path) }
        return st
    }

    /// Whether `path` exists (without following a final symlink).
    public static func exists(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) -> Bool {
        var st = Glibc.stat()
        return path.withCString { fstatat(dir.rawValue, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
    }

    public static func readLink(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws -> [UInt8] {
        var size = 256
        while true {
            var buf = [UInt8](repeating: 0, count: size)
            let n = path.withCString { p in buf.withUnsafeMutableBufferPointer { readlinkat(dir.rawValue, p, $0.baseAddress!, size) } }
            guard n >= 0 else { throw SystemError.current("readlink", path: path) }
            if n < size { return Array(buf[0..<n]) }
            size *= 2
        }
    }

    /// Extended attribute names of `path` (not following symlinks), as raw bytes.
    public static func listXattrs(_ path: [UInt8]) throws -> [[UInt8]] {
        try xattrNames("llistxattr", path: path) { buf, size in path.withCString { llistxattr($0, buf, size) } }
    }

    public static func getXattr(_ path: [UInt8], name: [UInt8]) throws -> [UInt8] {
        try xattrValue("lgetxattr", path: path) { buf, size in path.withCString { p in name.withCString { lgetxattr(p, $0, buf, size) } } }
    }

    /// Extended attribute names of an open file, in the kernel's listing
    /// order; `path` only names it in errors.
    public static func listXattrs(of fd: FileDescriptor, path: [UInt8]) throws -> [[UInt8]] {
        try xattrNames("flistxattr", path: path) { buf, size in flistxattr(fd.rawValue, buf, size) }
    }

    public static func getXattr(of fd: FileDescriptor, name: [UInt8], path: [UInt8]) throws -> [UInt8] {
        try xattrValue("fgetxattr", path: path) { buf, size in name.withCString { fgetxattr(fd.rawValue, $0, buf, size) } }
    }

    /// Runs a list call (size query, then fill) until the list holds still;
    /// no xattr support means no names.
    private static func xattrNames(_ operation: String, path: [UInt8],
                                   _ list: (UnsafeMutablePointer<CChar>?, Int) -> Int) throws -> [[UInt8]] {
        while true {
            let size = list(nil, 0)
            if size < 0 {
                if Glibc.errno == ENOTSUP { return [] }
                throw SystemError.current(operation, path: path)
            }
            if size == 0 { return [] }
            var buf = [CChar](repeating: 0, count: size)
            let n = list(&buf, size)
            if n < 0 {
                if Glibc.errno == ERANGE { continue }  // grew meanwhile
                throw SystemError.current(operation, path: path)
            }
            return buf[0..<n].split(separator: 0, omittingEmptySubsequences: true).map { $0.map { UInt8(bitPattern: $0) } }
        }
    }

    private static func xattrValue(_ operation: String, path: [UInt8],
                                   _ get: (UnsafeMutableRawPointer?, Int) -> Int) throws -> [UInt8] {
        while true {
            let size = get(nil, 0)
            guard size >= 0 else { throw SystemError.current(operation, path: path) }
            if size == 0 { return [] }
            var buf = [UInt8](repeating: 0, count: size)
            let n = get(&buf, size)
            if n < 0 {
                if Glibc.errno == ERANGE { continue }
                throw SystemError.current(operation, path: path)
            }
            return Array(buf[0..<n])
        }
    }

    /// Names in the directory `path`, without "." and "..", unsorted.
    public static func directoryEntries(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws -> [[UInt8]] {
        try directoryEntriesWithTypes(path, relativeTo: dir).map(\.name)
    }

    /// Entries of the directory `path` with their `d_type` (DT_REG, DT_DIR,
    /// ...; DT_UNKNOWN where the filesystem does not say), unsorted.
    public static func directoryEntriesWithTypes(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws -> [(name: [UInt8], type: UInt8)] {
        let fd = try FileDescriptor.open(path, O_RDONLY | O_DIRECTORY, relativeTo: dir)
        guard let d = fdopendir(fd.rawValue) else {
            let e = SystemError.current("opendir", path: path)
            fd.close()
            throw e
        }
        defer { closedir(d) }
        var entries: [(name: [UInt8], type: UInt8)] = []
        while true {
            Glibc.errno = 0
            guard let ent = readdir(d) else {
                if Glibc.errno != 0 { throw SystemError.current("readdir", path: path) }
                return entries
            }
            let name = withUnsafeBytes(of: &ent.pointee.d_name) { raw -> [UInt8] in
                let bytes = raw.bindMemory(to: UInt8.self)
                let len = bytes.firstIndex(of: 0) ?? bytes.count
                return Array(bytes[0..<len])
            }
            if name == [0x2e] || name == [0x2e, 0x2e] { continue }
            entries.append((name, ent.pointee.d_type))
        }
    }

    public static func makeDirectory(_ path: [UInt8], mode: mode_t = 0o755, relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws {
        guard path.withCString({ mkdirat(dir.rawValue, $0, mode) }) == 0 else { throw SystemError.current("mkdir", path: path) }
    }

    public static func rename(_ from: [UInt8], to: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws {
        let r = from.withCString { f in to.withCString { renameat(dir.rawValue, f, dir.rawValue, $0) } }
        guard r == 0 else { throw SystemError.current("rename", path: from) }
    }

    /// Swaps two existing names in one step (renameat2 RENAME_EXCHANGE):
    /// whoever looks sees one or the other, never neither.
    public static func exchange(_ a: [UInt8], _ b: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws {
        let r = a.withCString { x in b.withCString { cairn_rename_exchange(dir.rawValue, x, dir.rawValue, $0) } }
        guard r == 0 else { throw SystemError.current("renameat2 (RENAME_EXCHANGE)", path: a) }
    }

    /// The statfs(2) magic number of the filesystem holding `path`.
    public static func filesystemType(_ path: [UInt8]) throws -> Int {
        let t = path.withCString { cairn_filesystem_type($0) }
        guard t >= 0 else { throw SystemError.current("statfs", path: path) }
        return Int(t)
    }

    public static func unlink(_ path: [UInt8], relativeTo dir: FileDescriptor = .currentWorkingDirectory) throws {
        guard path.withCString({ unlinkat(dir.rawValue, $0, 0) }) == 0 else { throw SystemError.current("unlink", path: path) }
    }

    /// Removes everything inside the open directory `dir`, never following
    /// a symlink (subdirectories are opened with O_NOFOLLOW relative to
    /// their parent). `path` names `dir` in errors.
    public static func removeContents(of dir: FileDescriptor, path: [UInt8]) throws {
        for name in try directoryEntries([0x2e], relativeTo: dir) {
            try removeTree(name, in: dir, path: path + [0x2f] + name)
        }
    }
}

public extension Array where Element == UInt8 {
    /// Calls `body` with a NUL-terminated copy of the bytes.
    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        var copy = self
        copy.append(0)
        return try copy.withUnsafeBufferPointer { buf in
            try buf.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }
}

public extension String {
    /// The string without leading and trailing characters of `set`.
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
