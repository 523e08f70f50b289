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
// Anything else from the input: verification against a fixed key.

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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrust(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let selector = data[0]
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
    default:
        let policy = TrustPolicy(trustedKeys: [fuzzKey.publicKey])
        let half = payload.count / 2
        _ = policy.verifiedComposefsDigest(commit: Array(payload[..<half]), detachedMetadata: Array(payload[half...]))
    }
    return 0
}
