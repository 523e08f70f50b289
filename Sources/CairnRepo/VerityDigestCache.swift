import COSTree
import CCrypto
import CairnSystem
import CCairnShim
#if canImport(Glibc)
import Glibc
#endif

/// fs-verity digests of file objects, kept in the repository because an
/// object's digest never changes and computing it reads the whole object.
///
/// The cache is one append-only file, `<repo>/cairn/verity-digests`, of
/// fixed 72-byte records: object checksum (32), fs-verity digest (32), and
/// the first 8 bytes of the SHA-256 of those 64 bytes. Writers append under
/// an exclusive `flock`, first cutting off a partial record a crash may have
/// left; readers take whole records whose check matches and ignore the
/// rest. A lost or damaged record only costs recomputing that digest.
final class VerityDigestCache {
    static let recordSize = 72
    let path: String
    private(set) var digests: [[UInt8]: [UInt8]] = [:]

    init(repositoryPath: String) {
        path = repositoryPath + "/cairn/verity-digests"
        load()
    }

    private func load() {
        guard let fd = try? FileDescriptor.open(path, O_RDONLY) else { return }
        let data = (try? fd.closeAfter { try fd.readAll() }) ?? []
        var offset = 0
        while offset + Self.recordSize <= data.count {
            let record = Array(data[offset..<(offset + 64)])
            if Array(data[(offset + 64)..<(offset + 72)]) == Self.check(record) {
                digests[Array(record[0..<32])] = Array(record[32..<64])
            }
            offset += Self.recordSize
        }
    }

    /// The first 8 bytes of the record's SHA-256.
    static func check(_ record: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        record.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { _ = SHA256(b.baseAddress, b.count, $0.baseAddress) } }
        return Array(out.prefix(8))
    }

    subscript(checksum: String) -> [UInt8]? {
        bytesFromHex(checksum).flatMap { digests[$0] }
    }

    /// Appends new entries. Failing to record is not an error for the
    /// caller (the digests are still correct), so it only reports it.
    func record(_ entries: [(checksum: String, digest: [UInt8])]) -> SystemError? {
        guard !entries.isEmpty else { return nil }
        var data: [UInt8] = []
        data.reserveCapacity(entries.count * Self.recordSize)
        for (checksum, digest) in entries {
            guard let key = bytesFromHex(checksum), key.count == 32, digest.count == 32 else { continue }
            let record = key + digest
            data += record + Self.check(record)
            digests[key] = digest
        }
        do {
            let dir = Array(path.utf8.dropLast("/verity-digests".utf8.count))
            if !FileSystem.exists(dir) {
                do { try FileSystem.makeDirectory(dir, mode: 0o755) } catch let e as SystemError where e.errno == EEXIST {}
            }
            let fd = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_APPEND, mode: 0o644)
            return try fd.closeAfter {
                guard flock(fd.rawValue, LOCK_EX) == 0 else { throw SystemError.current("flock", path: Array(path.utf8)) }
                let size = try fd.stat().st_size
                if Int(size) % Self.recordSize != 0 {
                    try fd.truncate(Int64(Int(size) - Int(size) % Self.recordSize))
                }
                try fd.write(data)
                return nil
            }
        } catch let e as SystemError {
            return e
        } catch {
            return SystemError(errno: EIO, operation: "writing", path: Array(path.utf8))
        }
    }
}
