#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// Why a key file was refused. `line` is 1-based, nil when the problem is
/// the whole file.
public struct KeyFileError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Reason: Equatable, Sendable {
        case unreadable(SystemError)
        case tooLarge(limit: Int)
        case invalidBase64
        case wrongLength(found: Int, expected: Int)
        /// A secret key whose second half is not the public key of its seed.
        case publicHalfMismatch
        case noKeys
    }

    public var path: String
    public var line: Int?
    public var reason: Reason

    public init(path: String, line: Int? = nil, reason: Reason) {
        self.path = path
        self.line = line
        self.reason = reason
    }

    public var description: String {
        let place = line.map { "\(path):\($0)" } ?? path
        switch reason {
        case .unreadable(let e): return "\(place): cannot read key file: \(e)"
        case .tooLarge(let limit): return "\(place): key file is larger than \(limit) bytes"
        case .invalidBase64: return "\(place): not a base64 key"
        case .wrongLength(let found, let expected): return "\(place): key is \(found) bytes, expected \(expected)"
        case .publicHalfMismatch: return "\(place): secret key's public half does not match its seed"
        case .noKeys: return "\(place): no keys in key file"
        }
    }
}

/// ostree's ed25519 key files: one base64 key per line, blank lines ignored,
/// whitespace around a key trimmed. Public keys are 32 bytes, secret keys
/// 64 (seed then public key).
public enum KeyFile {
    public static let sizeLimit = 1 << 20

    /// Non-blank lines as (line number, trimmed bytes).
    static func lines(_ contents: [UInt8]) -> [(Int, ArraySlice<UInt8>)] {
        var result: [(Int, ArraySlice<UInt8>)] = []
        var number = 0
        for raw in contents.split(separator: 0x0a, omittingEmptySubsequences: false) {
            number += 1
            var s = raw
            while let c = s.first, isSpace(c) { s.removeFirst() }
            while let c = s.last, isSpace(c) { s.removeLast() }
            if !s.isEmpty { result.append((number, s)) }
        }
        return result
    }

    @inline(__always) static func isSpace(_ c: UInt8) -> Bool {
        c == 0x20 || c == 0x09 || c == 0x0d || c == 0x0b || c == 0x0c
    }

    static func decode(_ contents: [UInt8], path: String, length: Int, allowEmpty: Bool) throws(KeyFileError) -> [(Int, [UInt8])] {
        var keys: [(Int, [UInt8])] = []
        for (n, text) in lines(contents) {
            guard let bytes = Base64.decode(text) else { throw KeyFileError(path: path, line: n, reason: .invalidBase64) }
            guard bytes.count == length else {
                throw KeyFileError(path: path, line: n, reason: .wrongLength(found: bytes.count, expected: length))
            }
            keys.append((n, bytes))
        }
        if keys.isEmpty && !allowEmpty { throw KeyFileError(path: path, reason: .noKeys) }
        return keys
    }

    /// Public keys from the contents of a key file named `path` (for messages).
    public static func parsePublicKeys(_ contents: [UInt8], path: String, allowEmpty: Bool = false) throws(KeyFileError) -> [Ed25519PublicKey] {
        try decode(contents, path: path, length: Ed25519PublicKey.size, allowEmpty: allowEmpty).map { Ed25519PublicKey(bytes: $0.1)! }
    }

    /// Secret keys from the contents of a key file, each checked against its seed.
    public static func parseSecretKeys(_ contents: [UInt8], path: String) throws(KeyFileError) -> [Ed25519SecretKey] {
        var keys: [Ed25519SecretKey] = []
        for (n, bytes) in try decode(contents, path: path, length: 64, allowEmpty: false) {
            do {
                keys.append(try Ed25519SecretKey(ostreeBytes: bytes))
            } catch {
                throw KeyFileError(path: path, line: n, reason: .publicHalfMismatch)
            }
        }
        return keys
    }

    static func read(_ path: String) throws(KeyFileError) -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, O_RDONLY)
            return try fd.closeAfter { () throws -> [UInt8] in try fd.readAll(limit: sizeLimit) }
        } catch let e as SystemError {
            if e.errno == EFBIG { throw KeyFileError(path: path, reason: .tooLarge(limit: sizeLimit)) }
            throw KeyFileError(path: path, reason: .unreadable(e))
        } catch {
            throw KeyFileError(path: path, reason: .unreadable(SystemError(errno: EIO, operation: "read", path: Array(path.utf8))))
        }
    }

    public static func loadPublicKeys(path: String, allowEmpty: Bool = false) throws(KeyFileError) -> [Ed25519PublicKey] {
        try parsePublicKeys(try read(path), path: path, allowEmpty: allowEmpty)
    }

    public static func loadSecretKeys(path: String) throws(KeyFileError) -> [Ed25519SecretKey] {
        try parseSecretKeys(try read(path), path: path)
    }

    /// Key file text for `keys`, one per line.
    public static func format(_ keys: [Ed25519PublicKey]) -> String {
        keys.map { $0.base64 + "\n" }.joined()
    }

    public static func format(_ keys: [Ed25519SecretKey]) -> String {
        keys.map { $0.base64 + "\n" }.joined()
    }
}
