/// Why a commit did not verify. Each case is a distinct, testable reason.
public enum VerificationFailure: Error, Equatable, CustomStringConvertible, Sendable {
    /// The policy has no usable (trusted, non-revoked) key.
    case noTrustedKeys
    /// The commit has no detached metadata (.commitmeta) at all.
    case noDetachedMetadata
    /// The detached metadata is not a normal-form `a{sv}`.
    case corruptDetachedMetadata(GVariantError)
    /// `ostree.sign.ed25519` is absent or an empty array.
    case noSignatures
    /// `ostree.sign.ed25519` is present but not of type `aay`.
    case signaturesHaveWrongType(String)
    /// No signature has the 64 bytes of an Ed25519 signature.
    case malformedSignatures(count: Int)
    /// A signature verifies, but only with a revoked key (base64).
    case signedByRevokedKey(String)
    /// No signature verifies with any trusted key (commit or signature altered,
    /// or signed by an unknown key).
    case noValidSignature(signatures: Int)
    /// The signature is good but the commit object cannot be parsed.
    case corruptCommit(GVariantError)
    /// The verified commit has no `ostree.composefs.digest.v0` of type ay.
    case missingComposefsDigest
    /// The recorded composefs digest is not 32 bytes.
    case invalidComposefsDigest(length: Int)
    /// The summary's signature is good but its bytes do not parse.
    case corruptSummary(GVariantError)
    /// The verified summary's `ostree.summary.expires` (seconds since the
    /// epoch) is at or before the time of the check.
    case summaryExpired(expires: UInt64)

    public var description: String {
        switch self {
        case .noTrustedKeys: return "no trusted ed25519 key is configured (all are missing or revoked)"
        case .noDetachedMetadata: return "commit has no detached metadata, hence no signature"
        case .corruptDetachedMetadata(let e): return "detached metadata is corrupt: \(e)"
        case .noSignatures: return "commit has no ed25519 signature (\(ed25519SignatureKey))"
        case .signaturesHaveWrongType(let t): return "\(ed25519SignatureKey) has type \(t), expected aay"
        case .malformedSignatures(let n): return "none of the \(n) ed25519 signature(s) is 64 bytes long"
        case .signedByRevokedKey(let k): return "commit is signed only by revoked key \(k)"
        case .noValidSignature(let n): return "none of the \(n) ed25519 signature(s) verifies with a trusted key"
        case .corruptCommit(let e): return "commit object is corrupt: \(e)"
        case .missingComposefsDigest: return "commit metadata has no \(composefsDigestKey) (ay)"
        case .invalidComposefsDigest(let n): return "\(composefsDigestKey) is \(n) bytes, expected 32"
        case .corruptSummary(let e): return "summary is corrupt: \(e)"
        case .summaryExpired(let t): return "summary expired at \(utcDate(t)) (\(SummaryKey.expires))"
        }
    }

    /// The reason worded for what was verified: `description` speaks of a
    /// commit and its detached metadata; for a summary the signatures are
    /// in `summary.sig`.
    public func description(for subject: SignedObject) -> String {
        guard subject == .summary else { return description }
        switch self {
        case .noDetachedMetadata: return "summary has no signature file (summary.sig), hence no signature"
        case .corruptDetachedMetadata(let e): return "summary.sig is corrupt: \(e)"
        case .noSignatures: return "summary.sig has no ed25519 signature (\(ed25519SignatureKey))"
        case .signaturesHaveWrongType(let t): return "\(ed25519SignatureKey) in summary.sig has type \(t), expected aay"
        case .malformedSignatures(let n): return "none of the \(n) ed25519 signature(s) in summary.sig is 64 bytes long"
        case .signedByRevokedKey(let k): return "summary is signed only by revoked key \(k)"
        case .noValidSignature(let n): return "none of the \(n) ed25519 signature(s) in summary.sig verifies the summary with a trusted key"
        default: return description
        }
    }
}

/// What a signature covers, for wording a `VerificationFailure`.
public enum SignedObject: Sendable, Equatable {
    /// A commit object; signatures in its detached metadata (`.commitmeta`).
    case commit
    /// A repository's `summary` file; signatures in `summary.sig`.
    case summary
}

/// What one signature of a commit is worth under a policy.
public enum SignatureVerdict: Equatable, Sendable, CustomStringConvertible {
    /// Verifies with this trusted, non-revoked key.
    case trusted(Ed25519PublicKey)
    /// Verifies only with this revoked key.
    case revoked(Ed25519PublicKey)
    /// 64 bytes, but no trusted or revoked key verifies it (another signer,
    /// or the commit or signature was altered).
    case unknown
    /// Not the 64 bytes of an ed25519 signature.
    case malformed(length: Int)

    public var description: String {
        switch self {
        case .trusted(let k): return "good signature by trusted key \(k.base64)"
        case .revoked(let k): return "signature by revoked key \(k.base64)"
        case .unknown: return "no trusted key verifies it"
        case .malformed(let n): return "malformed (\(n) bytes, not 64)"
        }
    }
}

/// A successful verification.
public struct VerifiedSignature: Equatable, Sendable {
    /// The trusted key that verified the signature.
    public var key: Ed25519PublicKey
    /// Position of the good signature in `ostree.sign.ed25519`.
    public var signatureIndex: Int
    public var keyBase64: String { key.base64 }
}

/// Trusted public keys, minus revoked ones.
public struct TrustPolicy: Sendable {
    public var trustedKeys: [Ed25519PublicKey]
    public var revokedKeys: Set<Ed25519PublicKey>

    public init(trustedKeys: [Ed25519PublicKey], revokedKeys: [Ed25519PublicKey] = []) {
        self.trustedKeys = trustedKeys
        self.revokedKeys = Set(revokedKeys)
    }

    /// Loads every key of `trustedKeyFiles` (each must hold at least one key)
    /// and the keys of `revokedKeyFile` (which may be empty).
    public init(trustedKeyFiles: [String], revokedKeyFile: String? = nil) throws(KeyFileError) {
        var trusted: [Ed25519PublicKey] = []
        for f in trustedKeyFiles { trusted += try KeyFile.loadPublicKeys(path: f) }
        var revoked: [Ed25519PublicKey] = []
        if let r = revokedKeyFile { revoked = try KeyFile.loadPublicKeys(path: r, allowEmpty: true) }
        self.init(trustedKeys: trusted, revokedKeys: revoked)
    }

    /// Keys that may verify: trusted and not revoked, without duplicates.
    public var effectiveKeys: [Ed25519PublicKey] {
        var seen = Set<Ed25519PublicKey>()
        return trustedKeys.filter { !revokedKeys.contains($0) && seen.insert($0).inserted }
    }

    /// Checks every ed25519 signature in `detachedMetadata` (the .commitmeta
    /// bytes, nil if absent) over `commit` (the exact commit object bytes),
    /// one verdict per signature in stored order. Fails only when there is
    /// nothing to check (no key, no metadata, no signature array).
    public func evaluate(commit: [UInt8], detachedMetadata: [UInt8]?) -> Result<[SignatureVerdict], VerificationFailure> {
        evaluate(message: commit, signatures: detachedMetadata)
    }

    /// Verifies `commit` against the ed25519 signatures in
    /// `detachedMetadata`: the first signature by a trusted key wins.
    public func verify(commit: [UInt8], detachedMetadata: [UInt8]?) -> Result<VerifiedSignature, VerificationFailure> {
        verify(message: commit, signatures: detachedMetadata)
    }

    /// One verdict per ed25519 signature in `signatures` (an `a{sv}`, as in
    /// detached metadata and `summary.sig`) over the exact bytes `message`.
    func evaluate(message: [UInt8], signatures detachedMetadata: [UInt8]?) -> Result<[SignatureVerdict], VerificationFailure> {
        let keys = effectiveKeys
        guard !keys.isEmpty else { return .failure(.noTrustedKeys) }
        guard let detachedMetadata else { return .failure(.noDetachedMetadata) }
        let meta: GVariant
        do { meta = try GVariant(type: .vardict, data: detachedMetadata) } catch {
            return .failure(.corruptDetachedMetadata(error))
        }
        guard let entry = meta.lookup(ed25519SignatureKey) else { return .failure(.noSignatures) }
        guard entry.type == .byteArrayArray else { return .failure(.signaturesHaveWrongType(entry.type.typeString)) }
        let signatures = entry.children.map { $0.byteArrayValue ?? [] }
        guard !signatures.isEmpty else { return .failure(.noSignatures) }
        return .success(message.withUnsafeBytes { message in
            signatures.map { sig -> SignatureVerdict in
                guard sig.count == Ed25519.signatureSize else { return .malformed(length: sig.count) }
                if let key = keys.first(where: { $0.verify(signature: sig, message: message) }) { return .trusted(key) }
                if let key = revokedKeys.first(where: { $0.verify(signature: sig, message: message) }) { return .revoked(key) }
                return .unknown
            }
        })
    }

    /// The decision over `evaluate(message:signatures:)`: the first
    /// signature by a trusted key wins; else the most telling reason.
    func verify(message: [UInt8], signatures: [UInt8]?) -> Result<VerifiedSignature, VerificationFailure> {
        let verdicts: [SignatureVerdict]
        switch evaluate(message: message, signatures: signatures) {
        case .failure(let f): return .failure(f)
        case .success(let v): verdicts = v
        }
        for (i, v) in verdicts.enumerated() {
            if case .trusted(let key) = v { return .success(VerifiedSignature(key: key, signatureIndex: i)) }
        }
        for v in verdicts {
            if case .revoked(let key) = v { return .failure(.signedByRevokedKey(key.base64)) }
        }
        guard verdicts.contains(where: { if case .malformed = $0 { return false }; return true }) else {
            return .failure(.malformedSignatures(count: verdicts.count))
        }
        return .failure(.noValidSignature(signatures: verdicts.count))
    }

    /// What signed boot needs: verify the commit, then parse it and return its
    /// 32-byte composefs digest.
    public func verifiedComposefsDigest(commit: [UInt8], detachedMetadata: [UInt8]?) -> Result<(VerifiedSignature, Commit, [UInt8]), VerificationFailure> {
        let verified: VerifiedSignature
        switch verify(commit: commit, detachedMetadata: detachedMetadata) {
        case .failure(let f): return .failure(f)
        case .success(let v): verified = v
        }
        let parsed: Commit
        do { parsed = try Commit(serialized: commit) } catch { return .failure(.corruptCommit(error)) }
        guard let digest = parsed.composefsDigest else { return .failure(.missingComposefsDigest) }
        guard digest.count == 32 else { return .failure(.invalidComposefsDigest(length: digest.count)) }
        return .success((verified, parsed, digest))
    }
}

/// Signs `commit` with `key` and returns the new detached metadata bytes, as
/// libostree's ostree_sign_commit would write them: `existing` (nil when the
/// commit has none) with the signature appended to `ostree.sign.ed25519`.
public func signCommit(_ commit: [UInt8], existingDetachedMetadata existing: [UInt8]?, with key: Ed25519SecretKey) throws -> [UInt8] {
    let dict = try existing.map { b throws(GVariantError) in try VariantDictionary(serialized: b) } ?? VariantDictionary()
    let signature = try key.sign(commit)
    return dict.appendingSignature(signature).serialized()
}
