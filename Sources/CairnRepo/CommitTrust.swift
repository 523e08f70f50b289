import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

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

extension Repository {
    // MARK: Verification

    /// Verifies a commit's ed25519 signatures against `policy`, reading the
    /// raw commit object and `.commitmeta`. A commit object whose SHA-256 is
    /// not its name is refused even when a signature verifies.
    public func verifyEd25519(_ checksum: String, policy: TrustPolicy) -> Result<CommitVerification, CommitRefusal> {
        let commit: [UInt8]
        let meta: [UInt8]?
        do {
            commit = try rawCommitObject(checksum)
            meta = try rawDetachedMetadata(checksum)
        } catch {
            return .failure(CommitRefusal(String(describing: error)))
        }
        let altered = commitAlteration(commit, checksum)
        switch policy.verify(commit: commit, detachedMetadata: meta) {
        case .success(let v):
            if let altered { return .failure(CommitRefusal("a signature verifies, but \(altered)")) }
            return .success(CommitVerification(signature: v))
        case .failure(let f):
            return .failure(CommitRefusal(f.description + (altered.map { " (\($0))" } ?? "")))
        }
    }

    /// One verdict per ed25519 signature of the commit, for `cairn verify`;
    /// the failure says why there is nothing to check.
    public func ed25519Verdicts(_ checksum: String, policy: TrustPolicy) throws -> Result<[SignatureVerdict], VerificationFailure> {
        policy.evaluate(commit: try rawCommitObject(checksum), detachedMetadata: try rawDetachedMetadata(checksum))
    }

    /// Nil when the commit object hashes to its name, else why not.
    func commitAlteration(_ commit: [UInt8], _ checksum: String) -> String? {
        let actual = sha256Hex(commit)
        return actual == checksum ? nil : "the commit object's SHA-256 is \(actual), not its checksum: the object was altered or renamed"
    }

    // MARK: Signing

    /// Appends an ed25519 signature by each key to the commit's detached
    /// metadata (`ostree.sign.ed25519`), keeping every other entry and earlier
    /// signature. A key that already signed is skipped (ed25519 is
    /// deterministic: it would add an identical signature). The whole
    /// read-modify-write holds the repository's exclusive lock, so that
    /// concurrent signers never lose each other's signatures. Returns, per
    /// key, whether a signature was added.
    public func addEd25519Signatures(commit checksum: String, keys: [Ed25519SecretKey]) throws -> [(key: Ed25519PublicKey, added: Bool)] {
        try withExclusiveLock("signing commit \(checksum)") {
            let commitBytes = try rawCommitObject(checksum)
            if let altered = commitAlteration(commitBytes, checksum) {
                throw RepoError("signing commit \(checksum)", altered)
            }
            var meta = try rawDetachedMetadata(checksum)
            if let m = meta {
                do { _ = try VariantDictionary(serialized: m) } catch {
                    throw RepoError("signing commit \(checksum)", "its detached metadata is corrupt (\(error)); refusing to rewrite it")
                }
            }
            var results: [(Ed25519PublicKey, Bool)] = []
            for key in keys {
                if let m = meta, case .success = TrustPolicy(trustedKeys: [key.publicKey]).verify(commit: commitBytes, detachedMetadata: m) {
                    results.append((key.publicKey, false))
                    continue
                }
                do {
                    meta = try signCommit(commitBytes, existingDetachedMetadata: meta, with: key)
                } catch {
                    throw RepoError("signing commit \(checksum) with ed25519 key \(key.publicKey.base64)", String(describing: error))
                }
                results.append((key.publicKey, true))
            }
            if results.contains(where: { $0.1 }) {
                try writeDetachedMetadata(checksum, meta)
            }
            return results
        }
    }

    /// Runs `body` holding libostree's exclusive repository lock (the one
    /// `ostree prune` takes), which waits for other holders as the
    /// repository's `lock-timeout-secs` says.
    public func withExclusiveLock<R>(_ context: String, _ body: () throws -> R) throws -> R {
        try gcall("\(context): taking the lock of \(path)") {
            ostree_repo_lock_push(repo, OSTREE_REPO_LOCK_EXCLUSIVE, nil, $0)
        }
        defer { _ = ostree_repo_lock_pop(repo, OSTREE_REPO_LOCK_EXCLUSIVE, nil, nil) }
        return try body()
    }

    // MARK: The repository's trust policy

    /// The keys this repository's config trusts and revokes.
    public func trust() throws -> RepositoryTrust {
        let config = ostree_repo_get_config(repo)
        func keys(_ name: String) throws -> [Ed25519PublicKey] {
            var count: gsize = 0
            guard let list = g_key_file_get_string_list(config, RepositoryTrust.group, name, &count, nil) else { return [] }
            defer { g_strfreev(list) }
            return try (0..<Int(count)).compactMap { i -> Ed25519PublicKey? in
                let text = String(cString: list[i]!).trimmingCharacters(in: " \t")
                if text.isEmpty { return nil }
                guard let bytes = Base64.decode(text), let key = Ed25519PublicKey(bytes: bytes) else {
                    throw RepoError("reading \(path)/config", "[\(RepositoryTrust.group)] \(name) holds '\(text)', which is not a base64 ed25519 public key")
                }
                return key
            }
        }
        return RepositoryTrust(trusted: try keys(RepositoryTrust.trustedKey), revoked: try keys(RepositoryTrust.revokedKey))
    }

    /// Replaces the trust policy in the repository's config, atomically
    /// (libostree rewrites the config file by rename).
    public func setTrust(_ trust: RepositoryTrust) throws {
        let config = ostree_repo_copy_config(repo)
        defer { g_key_file_unref(config) }
        for (name, keys) in [(RepositoryTrust.trustedKey, trust.trusted), (RepositoryTrust.revokedKey, trust.revoked)] {
            if keys.isEmpty {
                g_key_file_remove_key(config, RepositoryTrust.group, name, nil)
                continue
            }
            let strings = keys.map { strdup($0.base64) }
            defer { strings.forEach { free($0) } }
            var pointers: [UnsafePointer<gchar>?] = strings.map { UnsafePointer($0) }
            g_key_file_set_string_list(config, RepositoryTrust.group, name, &pointers, gsize(pointers.count))
        }
        var remaining: gsize = 0
        if let left = g_key_file_get_keys(config, RepositoryTrust.group, &remaining, nil) {
            g_strfreev(left)
            if remaining == 0 { g_key_file_remove_group(config, RepositoryTrust.group, nil) }
        }
        try gcall("writing \(path)/config") { ostree_repo_write_config(repo, config, $0) }
    }
}
