// libFuzzer harness for the Trust module's parsers. Built by run.sh together
// with the module sources (this file is not part of the Swift package).
//
// The first input byte selects the target; the rest is the payload:
//   0: commit object            (Commit(serialized:))
//   1: detached metadata a{sv}  (VariantDictionary; must re-serialize byte-exactly)
//   2: public key file, 3: secret key file
//   4: any type: payload = type string, NUL, data; every accepted value must
//      rebuild from its children to the same bytes (normal form is unique)
//   5: /run/ostree-booted   (BootedRecord; its serialization must read back
//      as the same record, and be an a{sv} in normal form)
//   6: summary file         (RepositorySummary; an accepted summary must be
//      in normal form, its refs sorted, unique, with 32-byte checksums, and
//      signed by the fuzz key it must verify unless expired at time 1)
// Anything else from the input: verification against a fixed key.
// TRUST_FUZZ_TARGET=N in the environment runs target N on every input (the
// first byte is still taken off), to count runs of one parser.

import Glibc

@inline(never) func fail(_ message: String) -> Never {
    fputs("PROPERTY VIOLATION: \(message)\n", stderr)
    abort()
}

func rebuild(_ v: GVariant) -> GVariant {
    switch v.type.kind {
    case .variant:
        guard let inner = v.variantValue else { fail("variant without child") }
        return GVariant(variant: rebuild(inner))
    case .array:
        guard let a = try? GVariant(arrayOf: v.type.children[0], v.children.map(rebuild)) else { fail("array rebuild") }
        return a
    case .tuple:
        return GVariant(tuple: v.children.map(rebuild))
    case .dictEntry:
        let c = v.children
        guard c.count == 2, let e = try? GVariant(dictEntryKey: rebuild(c[0]), value: rebuild(c[1])) else { fail("dict entry rebuild") }
        return e
    case .maybe:
        guard let m = try? GVariant(maybe: v.type.children[0], v.child(0).map(rebuild)) else { fail("maybe rebuild") }
        return m
    default:
        return v
    }
}

let fuzzKey = try! Ed25519SecretKey(seed: Array(repeating: 7, count: 32))
let fuzzPolicy = TrustPolicy(trustedKeys: [fuzzKey.publicKey])
let forcedTarget: UInt8? = getenv("TRUST_FUZZ_TARGET").flatMap { UInt8(String(cString: $0)) }
func fuzzSignatures(_ summary: [UInt8]) -> [UInt8]? { try! signSummary(summary, with: [fuzzKey]) }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrust(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let selector = forcedTarget ?? data[0]
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch selector {
    case 0:
        if let c = try? Commit(serialized: payload) {
            _ = c.composefsDigest
            _ = c.metadata.serialized()
            let v = try! GVariant(type: Commit.type, data: payload)
            if rebuild(v).serialized != payload { fail("commit rebuild differs") }
        }
    case 1:
        if let d = try? VariantDictionary(serialized: payload) {
            if d.serialized() != payload { fail("a{sv} round trip differs") }
            let appended = d.appendingSignature(Array(repeating: 1, count: 64)).serialized()
            guard (try? VariantDictionary(serialized: appended)) != nil else { fail("appended dict unreadable") }
            _ = d.inGVariantDictOrder()
        }
    case 2:
        _ = try? KeyFile.parsePublicKeys(payload, path: "fuzz")
    case 3:
        _ = try? KeyFile.parseSecretKeys(payload, path: "fuzz")
    case 4:
        guard let nul = payload.firstIndex(of: 0) else { return 0 }
        let typeText = String(decoding: payload[..<nul], as: UTF8.self)
        guard let t = try? GVariantType(typeText) else { return 0 }
        let body = Array(payload[(nul + 1)...])
        if let v = try? GVariant(type: t, data: body) {
            if rebuild(v).serialized != body { fail("rebuild of \(t) differs") }
            _ = v.lookup("x")
        }
    case 5:
        if let r = try? BootedRecord(serialized: payload) {
            guard let bytes = try? r.serialized() else { fail("accepted record does not serialize") }
            guard (try? VariantDictionary(serialized: bytes)) != nil else { fail("record serialization is not a{sv}") }
            if (try? BootedRecord(serialized: bytes)) != r { fail("record round trip differs") }
        }
    case 6:
        guard let summary = try? RepositorySummary(serialized: payload) else {
            if case .success = fuzzPolicy.verifiedSummary(payload, signatures: fuzzSignatures(payload), now: 1) { fail("unreadable summary verified") }
            return 0
        }
        guard let v = try? GVariant(type: RepositorySummary.type, data: payload), rebuild(v).serialized == payload else { fail("summary rebuild differs") }
        for list in [summary.refs] + summary.collectionRefs.map(\.refs) {
            for (a, b) in zip(list, list.dropFirst()) where !Array(a.name.utf8).lexicographicallyPrecedes(Array(b.name.utf8)) {
                fail("refs \(a.name) and \(b.name) out of order")
            }
            for r in list where r.checksumBytes.count != 32
                || r.name.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
                fail("ref \(r.name) accepted")
            }
        }
        if summary.staticDeltas.contains(where: { $0.superblockDigest.count != 32 || $0.to.utf8.count != 64 }) { fail("bad delta accepted") }
        switch fuzzPolicy.verifiedSummary(payload, signatures: fuzzSignatures(payload), now: 1) {
        case .success(let (_, parsed)):
            if summary.isExpired(now: 1) { fail("expired summary verified") }
            if parsed.refs.map(\.checksum) != summary.refs.map(\.checksum) { fail("verified summary parsed differently") }
        case .failure(.summaryExpired):
            if !summary.isExpired(now: 1) { fail("unexpired summary refused as expired") }
        case .failure(let f):
            fail("signed summary refused: \(f)")
        }
    default:
        let policy = TrustPolicy(trustedKeys: [fuzzKey.publicKey])
        let half = payload.count / 2
        _ = policy.verifiedComposefsDigest(commit: Array(payload[..<half]), detachedMetadata: Array(payload[half...]))
    }
    return 0
}
