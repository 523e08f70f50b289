#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One line of /proc/self/mountinfo: which filesystem (device), which of
/// its directories (root) is visible where (mount point). Paths are bytes.
public struct MountEntry: Sendable, Equatable {
    public var device: UInt64
    /// The directory of the filesystem this mount shows ("/" for a whole
    /// filesystem, deeper for a bind mount).
    public var root: [UInt8]
    public var mountPoint: [UInt8]
    public var fsType: String
}

public enum MountTable {
    /// The calling process's mounts, in mount order.
    public static func current() throws -> [MountEntry] {
        let fd = try FileDescriptor.open("/proc/self/mountinfo", O_RDONLY)
        return parse(try fd.closeAfter { try fd.readAll(limit: 64 << 20) })
    }

    /// Parses mountinfo text (proc(5)); malformed lines are skipped.
    public static func parse(_ text: [UInt8]) -> [MountEntry] {
        var result: [MountEntry] = []
        for line in text.split(separator: 0x0a) {
            let fields = line.split(separator: 0x20, omittingEmptySubsequences: false)
            guard fields.count >= 10, let sep = fields.firstIndex(where: { $0.elementsEqual([0x2d]) }), sep >= 6, sep + 1 < fields.count else { continue }
            let devParts = fields[2].split(separator: 0x3a)
            guard devParts.count == 2, let major = UInt32(String(decoding: devParts[0], as: UTF8.self)),
                  let minor = UInt32(String(decoding: devParts[1], as: UTF8.self)) else { continue }
            result.append(MountEntry(device: deviceNumber(major: major, minor: minor), root: unescape(fields[3]),
                                     mountPoint: unescape(fields[4]), fsType: String(decoding: fields[sep + 1], as: UTF8.self)))
        }
        return result
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescape(_ field: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        var i = field.startIndex
        while i < field.endIndex {
            if field[i] == 0x5c, i + 3 < field.endIndex,
               let v = UInt8(String(decoding: field[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(field[i])
                i += 1
            }
        }
        return out
    }

    /// Mount points whose content comes from inside the directory `path`
    /// (it or anything below it is bind-mounted, or it is a mount point
    /// itself): such a directory is in use, for example a running system's
    /// /etc, and must not be removed.
    public static func mountsBacked(by path: [UInt8], in mounts: [MountEntry]) throws -> [[UInt8]] {
        let st = try FileSystem.stat(path)
        let real = try FileSystem.realPath(path)
        // The mount that holds `path`: the deepest mount point above it on the same device.
        guard let holder = mounts.filter({ $0.device == UInt64(st.st_dev) && isPrefix($0.mountPoint, of: real) })
            .max(by: { $0.mountPoint.count < $1.mountPoint.count }) else {
            return mounts.filter { $0.mountPoint == real }.map(\.mountPoint)
        }
        // `path` as a directory of its filesystem.
        let below = holder.mountPoint == [0x2f] ? real : Array(real.dropFirst(holder.mountPoint.count))
        let inFilesystem = holder.root == [0x2f] ? below : holder.root + below
        return mounts.filter { m in
            m.mountPoint == real || (m.device == UInt64(st.st_dev) && m.mountPoint != holder.mountPoint && isPrefix(inFilesystem, of: m.root))
        }.map(\.mountPoint)
    }

    /// Whether `prefix` is `path` or one of its parent directories.
    static func isPrefix(_ prefix: [UInt8], of path: [UInt8]) -> Bool {
        if prefix == [0x2f] { return path.first == 0x2f }
        return path.starts(with: prefix) && (path.count == prefix.count || path[prefix.count] == 0x2f)
    }
}

extension FileSystem {
    /// The canonical absolute path (symlinks resolved).
    public static func realPath(_ path: [UInt8]) throws -> [UInt8] {
        guard let p = path.withCString({ realpath($0, nil) }) else { throw SystemError.current("realpath", path: path) }
        defer { free(p) }
        return Array(UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }
}
