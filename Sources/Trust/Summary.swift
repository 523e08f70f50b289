import CairnSystem

/// Placeholder until the summary reader lands (same API): an ostree
/// `summary`, `(a(s(taya{sv}))a{sv})`.
public struct RepositorySummary: Sendable {
    public struct Ref: Sendable {
        public var name: String
        public var checksum: String
    }
    public var refs: [Ref] = []
    public var expires: UInt64?

    public init(serialized bytes: [UInt8]) throws(GVariantError) {
        let v = try GVariant(typeString: "(a(s(taya{sv}))a{sv})", data: bytes)
        for r in v.child(0)?.children ?? [] {
            let name = r.child(0)?.stringValue ?? ""
            let sum = r.child(1)?.child(1)?.byteArrayValue ?? []
            refs.append(Ref(name: name, checksum: hexString(sum)))
        }
        if let e = v.child(1)?.lookup("ostree.summary.expires")?.uint64Value { expires = UInt64(bigEndian: e) }
    }

    public func isExpired(now: UInt64) -> Bool { expires.map { $0 <= now } ?? false }
}

extension TrustPolicy {
    /// ed25519 signatures of `summary.sig` over the summary bytes.
    public func verify(summary: [UInt8], signatures: [UInt8]?) -> Result<VerifiedSignature, VerificationFailure> {
        verify(commit: summary, detachedMetadata: signatures)
    }
}
