import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

extension Repository {
    // MARK: Verification

    /// Verifies a commit's ed25519 signatures against `policy`, reading the
    /// raw commit object and `.commitmeta`. A commit object whose SHA-256 is
    /// not its name is refused even when a signature verifies.
    public func verifyEd25519(_ checksum: String, policy: TrustPolicy) -> Result<CommitVerification, CommitRefusal> {
        do {
            return policy.verifyCommitObject(checksum, commit: try rawCommitObject(checksum), detachedMetadata: try rawDetachedMetadata(checksum))
        } catch {
            return .failure(CommitRefusal(String(describing: error)))
        }
    }

    /// One verdict per ed25519 signature of the commit, for `cairn verify`;
    /// the failure says why there is nothing to check.
    public func ed25519Verdicts(_ checksum: String, policy: TrustPolicy) throws -> Result<[SignatureVerdict], VerificationFailure> {
        policy.evaluate(commit: try rawCommitObject(checksum), detachedMetadata: try rawDetachedMetadata(checksum))
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
            if let altered = OstreeObject.alteration(commitBytes, checksum) {
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
        try RepositoryTrust(configValue: { configValue(group: RepositoryTrust.group, key: $0) }, file: "\(path)/config")
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
