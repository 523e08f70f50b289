import CairnSystem
import CCrypto

/// ostree's loose metadata objects, and what is checked of a commit's bytes
/// before its signatures mean anything.
public enum OstreeObject {
    public static func isChecksum(_ checksum: String) -> Bool {
        checksum.utf8.count == 64 && checksum.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// A loose metadata object's path relative to its repository
    /// (`objects/XX/<62 hex>.<ext>`).
    public static func loosePath(_ checksum: String, _ ext: String) -> String {
        "objects/\(checksum.prefix(2))/\(checksum.dropFirst(2)).\(ext)"
    }

    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { _ = SHA256(b.baseAddress, b.count, $0.baseAddress) } }
        return out
    }

    /// Nil when the commit object hashes to its name, else why not.
    public static func alteration(_ commit: [UInt8], _ checksum: String) -> String? {
        let actual = hexString(sha256(commit))
        return actual == checksum ? nil : "the commit object's SHA-256 is \(actual), not its checksum: the object was altered or renamed"
    }
}

/// Why a commit was not accepted: one sentence for the user.
public struct CommitRefusal: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A commit that verified: which signature and key, and the line to show.
public struct CommitVerification: Sendable {
    public var signature: VerifiedSignature
    public var description: String { "Good ed25519 signature #\(signature.signatureIndex) by trusted key \(signature.keyBase64)" }
}

/// The keys a repository trusts, kept in its config (a GLib key file that
/// libostree and `ostree config get cairn.trusted-ed25519-keys` read):
///
///     [cairn]
///     trusted-ed25519-keys=<base64>;<base64>;
///     revoked-ed25519-keys=<base64>;
///
/// Keys are stored inline rather than as paths, so that a sysroot's policy
/// means the same whether it is booted or mounted elsewhere.
public struct RepositoryTrust: Sendable, Equatable {
    public static let group = "cairn"
    public static let trustedKey = "trusted-ed25519-keys"
    public static let revokedKey = "revoked-ed25519-keys"

    public var trusted: [Ed25519PublicKey] = []
    public var revoked: [Ed25519PublicKey] = []

    public init(trusted: [Ed25519PublicKey] = [], revoked: [Ed25519PublicKey] = []) {
        self.trusted = trusted
        self.revoked = revoked
    }

    /// Whether any key is configured: then every deploy must verify.
    public var isConfigured: Bool { !trusted.isEmpty }

    public var policy: TrustPolicy { TrustPolicy(trustedKeys: trusted, revokedKeys: revoked) }
}

extension RepositoryTrust {
    /// The keys a repository config names, `value(key)` giving the config's
    /// value of `[cairn] key` (a `;`-separated list, as GLib writes it).
    public init(configValue value: (String) throws -> String?, file: String) throws {
        func keys(_ name: String) throws -> [Ed25519PublicKey] {
            try (try value(name) ?? "").split(separator: ";").compactMap { item -> Ed25519PublicKey? in
                let text = String(item).trimmingCharacters(in: " \t")
                if text.isEmpty { return nil }
                guard let bytes = Base64.decode(text), let key = Ed25519PublicKey(bytes: bytes) else {
                    throw RepoError("reading \(file)", "[\(RepositoryTrust.group)] \(name) holds '\(text)', which is not a base64 ed25519 public key")
                }
                return key
            }
        }
        self.init(trusted: try keys(RepositoryTrust.trustedKey), revoked: try keys(RepositoryTrust.revokedKey))
    }
}

extension RepositoryTrust {
    /// Keys from key files (`--keys`, `--revoked-keys`), one base64 key per line.
    public init(keyFiles trusted: [String], revokedKeyFile revoked: String?) throws {
        do {
            let p = try TrustPolicy(trustedKeyFiles: trusted, revokedKeyFile: revoked)
            self.init(trusted: p.trustedKeys, revoked: Array(p.revokedKeys))
        } catch {
            throw RepoError("key file \(error.description)", "")
        }
    }
}

extension TrustPolicy {
    /// Verifies the ed25519 signatures of the commit object named
    /// `checksum`, given its exact bytes and `.commitmeta`. A commit object
    /// whose SHA-256 is not its name is refused even when a signature verifies.
    public func verifyCommitObject(_ checksum: String, commit: [UInt8], detachedMetadata meta: [UInt8]?) -> Result<CommitVerification, CommitRefusal> {
        let altered = OstreeObject.alteration(commit, checksum)
        switch verify(commit: commit, detachedMetadata: meta) {
        case .success(let v):
            if let altered { return .failure(CommitRefusal("a signature verifies, but \(altered)")) }
            return .success(CommitVerification(signature: v))
        case .failure(let f):
            return .failure(CommitRefusal(f.description + (altered.map { " (\($0))" } ?? "")))
        }
    }
}
