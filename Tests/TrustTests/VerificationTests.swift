import CairnTestSupport
import Foundation
import XCTest
@testable import Trust

final class VerificationTests: XCTestCase {
    var fx: OstreeFixture!
    var commit: [UInt8] = []
    var key: Ed25519SecretKey!
    var signed: [UInt8] = []

    override func setUpWithError() throws {
        fx = try OstreeFixture()
        commit = try fx.commitBytes(fx.first)
        key = try Ed25519SecretKey.generate()
        signed = try signCommit(commit, existingDetachedMetadata: try fx.detachedBytes(fx.first), with: key)
    }

    override func tearDown() { fx?.cleanup() }

    func failure(_ r: Result<VerifiedSignature, VerificationFailure>) -> VerificationFailure? {
        if case .failure(let f) = r { return f }
        return nil
    }

    func testGoodSignatureAmongOthers() throws {
        let other = try Ed25519SecretKey.generate()
        // Two signatures, first by an unknown key.
        let meta = try signCommit(commit, existingDetachedMetadata: try signCommit(commit, existingDetachedMetadata: nil, with: other), with: key)
        let policy = TrustPolicy(trustedKeys: [try Ed25519SecretKey.generate().publicKey, key.publicKey])
        let v = try policy.verify(commit: commit, detachedMetadata: meta).get()
        XCTAssertEqual(v.keyBase64, key.publicKey.base64)
        XCTAssertEqual(v.signatureIndex, 1)
        let (_, parsed, digest) = try policy.verifiedComposefsDigest(commit: commit, detachedMetadata: meta).get()
        XCTAssertEqual(digest, OstreeFixture.digest)
        XCTAssertEqual(parsed.subject, "first subject")
    }

    func testReasons() throws {
        let policy = TrustPolicy(trustedKeys: [key.publicKey])
        XCTAssertNoThrow(try policy.verify(commit: commit, detachedMetadata: signed).get())

        // Tampering.
        var c2 = commit; c2[c2.count / 2] ^= 0x01
        XCTAssertEqual(failure(policy.verify(commit: c2, detachedMetadata: signed)), .noValidSignature(signatures: 1))
        let d = try VariantDictionary(serialized: signed)
        var sig = d[ed25519SignatureKey]!.child(0)!.byteArrayValue!
        sig[5] ^= 0x80
        var d2 = d; d2.set(ed25519SignatureKey, GVariant(byteArrays: [sig]))
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: d2.serialized())), .noValidSignature(signatures: 1))
        var framing = signed; framing[framing.count - 1] ^= 0x01   // the a{sv}'s last framing offset
        guard case .corruptDetachedMetadata(let e1)? = failure(policy.verify(commit: commit, detachedMetadata: framing)) else {
            return XCTFail("framing flip not refused as corrupt metadata")
        }
        let truncated = Array(signed.dropLast(9))
        guard case .corruptDetachedMetadata(let e2)? = failure(policy.verify(commit: commit, detachedMetadata: truncated)) else {
            return XCTFail("truncation not refused as corrupt metadata")
        }
        XCTAssertNotEqual(e1, e2)
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: [])), .noSignatures)  // empty a{sv}

        // Other reasons.
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: nil)), .noDetachedMetadata)
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: try fx.detachedBytes(fx.first))), .noSignatures)
        var empty = d; empty.set(ed25519SignatureKey, GVariant(byteArrays: []))
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: empty.serialized())), .noSignatures)
        var wrong = d; wrong.set(ed25519SignatureKey, try GVariant(string: "x"))
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: wrong.serialized())), .signaturesHaveWrongType("s"))
        var short = d; short.set(ed25519SignatureKey, GVariant(byteArrays: [Array(sig.prefix(63))]))
        XCTAssertEqual(failure(policy.verify(commit: commit, detachedMetadata: short.serialized())), .malformedSignatures(count: 1))
        let stranger = TrustPolicy(trustedKeys: [try Ed25519SecretKey.generate().publicKey])
        XCTAssertEqual(failure(stranger.verify(commit: commit, detachedMetadata: signed)), .noValidSignature(signatures: 1))
        let revoked = TrustPolicy(trustedKeys: [key.publicKey, try Ed25519SecretKey.generate().publicKey], revokedKeys: [key.publicKey])
        XCTAssertEqual(failure(revoked.verify(commit: commit, detachedMetadata: signed)), .signedByRevokedKey(key.publicKey.base64))
        XCTAssertEqual(failure(TrustPolicy(trustedKeys: [key.publicKey], revokedKeys: [key.publicKey]).verify(commit: commit, detachedMetadata: signed)), .noTrustedKeys)
        XCTAssertEqual(failure(TrustPolicy(trustedKeys: []).verify(commit: commit, detachedMetadata: signed)), .noTrustedKeys)

        // Signed, but no digest / bad digest / corrupt commit.
        let second = try fx.commitBytes(fx.second)
        let signedSecond = try signCommit(second, existingDetachedMetadata: nil, with: key)
        guard case .failure(.missingComposefsDigest) = policy.verifiedComposefsDigest(commit: second, detachedMetadata: signedSecond) else {
            return XCTFail("missing digest not reported")
        }
        let v = try GVariant(type: Commit.type, data: commit)
        var meta = try VariantDictionary(v.child(0)!)
        meta.set(composefsDigestKey, GVariant(bytes: [1, 2, 3]))
        var fields = v.children; fields[0] = meta.variant()
        let shortDigest = GVariant(tuple: fields).serialized
        guard case .failure(.invalidComposefsDigest(length: 3)) = policy.verifiedComposefsDigest(commit: shortDigest, detachedMetadata: try signCommit(shortDigest, existingDetachedMetadata: nil, with: key)) else {
            return XCTFail("bad digest length not reported")
        }
        let garbage: [UInt8] = Array(commit.prefix(40))
        guard case .failure(.corruptCommit) = policy.verifiedComposefsDigest(commit: garbage, detachedMetadata: try signCommit(garbage, existingDetachedMetadata: nil, with: key)) else {
            return XCTFail("corrupt commit not reported")
        }

        // Every reason reads as a sentence.
        let all: [VerificationFailure] = [.noTrustedKeys, .noDetachedMetadata, .corruptDetachedMetadata(e1), .noSignatures,
            .signaturesHaveWrongType("s"), .malformedSignatures(count: 1), .signedByRevokedKey("k"), .noValidSignature(signatures: 2),
            .corruptCommit(e2), .missingComposefsDigest, .invalidComposefsDigest(length: 3)]
        XCTAssertEqual(Set(all.map(\.description)).count, all.count)
    }

    /// Every single-byte flip and every truncation of signed metadata is either
    /// refused or (when it does not touch the signature) still verifies; never a crash.
    func testExhaustiveFlipsAndTruncations() throws {
        let policy = TrustPolicy(trustedKeys: [key.publicKey])
        for i in 0..<signed.count {
            var m = signed; m[i] ^= 0xff
            _ = policy.verify(commit: commit, detachedMetadata: m)
        }
        for n in 0..<signed.count {
            let r = policy.verify(commit: commit, detachedMetadata: Array(signed.prefix(n)))
            if case .success = r { XCTFail("truncation to \(n) bytes verified") }
        }
        for i in stride(from: 0, to: commit.count, by: 1) {
            var c = commit; c[i] ^= 0x04
            if case .success = policy.verify(commit: c, detachedMetadata: signed) { XCTFail("flip at \(i) verified") }
            _ = try? Commit(serialized: c)
        }
    }
}

final class RegressionTests: XCTestCase {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions").path

    static func files(_ prefix: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// Rebuilds a value from its children with the writer; normal form is
    /// unique, so an accepted value must come back byte-identical.
    func rebuild(_ v: GVariant) throws -> GVariant {
        switch v.type.kind {
        case .variant: return GVariant(variant: try rebuild(XCTUnwrap(v.variantValue)))
        case .array: return try GVariant(arrayOf: v.type.children[0], v.children.map(rebuild))
        case .tuple: return GVariant(tuple: try v.children.map(rebuild))
        case .dictEntry: return try GVariant(dictEntryKey: rebuild(v.children[0]), value: rebuild(v.children[1]))
        case .maybe: return try GVariant(maybe: v.type.children[0], v.child(0).map(rebuild))
        default: return v
        }
    }

    /// `type-<TYPE>-<what>`: data of type TYPE that is not in normal form:
    /// refused by us (with a message) and by GLib's g_variant_is_normal_form.
    func testNonNormalRegressions() throws {
        let files = Self.files("type-")
        XCTAssertFalse(files.isEmpty)
        let helper = try? GLibHelper.path()
        for name in files {
            let typeText = String(name.dropFirst(5).prefix { $0 != "-" })
            let bytes = try readBytes(Self.dir + "/" + name)
            XCTAssertThrowsError(try GVariant(typeString: typeText, data: bytes), name)
            if let helper {
                XCTAssertEqual(try runTool([helper, "normal", typeText, Self.dir + "/" + name]).out, "0\n", "GLib accepts \(name)")
            }
        }
    }

    /// `fuzz-*`: raw libFuzzer inputs (selector byte + payload, see
    /// Tests/Fuzz/trust/FuzzTrust.swift) that once crashed or broke a property.
    func testFuzzRegressions() throws {
        for name in Self.files("fuzz-") {
            let input = try readBytes(Self.dir + "/" + name)
            guard let selector = input.first else { continue }
            let payload = Array(input.dropFirst())
            switch selector {
            case 0:
                if let c = try? Commit(serialized: payload) {
                    _ = c.composefsDigest
                    XCTAssertEqual(try rebuild(GVariant(type: Commit.type, data: payload)).serialized, payload, name)
                }
            case 1:
                if let d = try? VariantDictionary(serialized: payload) {
                    XCTAssertEqual(d.serialized(), payload, name)
                    XCTAssertNoThrow(try VariantDictionary(serialized: d.appendingSignature(Array(repeating: 1, count: 64)).serialized()))
                }
            case 2: _ = try? KeyFile.parsePublicKeys(payload, path: name)
            case 3: _ = try? KeyFile.parseSecretKeys(payload, path: name)
            case 4:
                guard let nul = payload.firstIndex(of: 0),
                      let t = try? GVariantType(String(decoding: payload[..<nul], as: UTF8.self)) else { continue }
                let body = Array(payload[(nul + 1)...])
                if let v = try? GVariant(type: t, data: body) {
                    XCTAssertEqual(try rebuild(v).serialized, body, name)
                }
            case 5:
                if let r = try? BootedRecord(serialized: payload) {
                    XCTAssertEqual(try BootedRecord(serialized: r.serialized()), r, name)
                }
            case 6:
                let key = try Ed25519SecretKey(seed: Array(repeating: 7, count: 32))
                let verified = TrustPolicy(trustedKeys: [key.publicKey]).verifiedSummary(payload, signatures: try signSummary(payload, with: [key]), now: 1)
                if let s = try? RepositorySummary(serialized: payload) {
                    XCTAssertEqual(try rebuild(GVariant(type: RepositorySummary.type, data: payload)).serialized, payload, name)
                    if case .failure(let f) = verified, f != .summaryExpired(expires: s.expires ?? 0) { XCTFail("\(name): \(f)") }
                } else if case .success = verified {
                    XCTFail("\(name): unreadable summary verified")
                }
            default:
                let half = payload.count / 2
                _ = TrustPolicy(trustedKeys: [try Ed25519SecretKey(seed: Array(repeating: 7, count: 32)).publicKey])
                    .verifiedComposefsDigest(commit: Array(payload[..<half]), detachedMetadata: Array(payload[half...]))
            }
        }
    }
}
