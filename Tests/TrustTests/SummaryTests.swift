import CairnTestSupport
import Foundation
import XCTest
@testable import Trust

/// Builds summaries with the GVariant writer, as ostree_repo_regenerate_summary lays them out.
enum SummaryBuilder {
    struct Ref {
        var name: String
        var checksum: [UInt8] = Array(repeating: 0xab, count: 32)
        var size: UInt64 = 190
        var metadata: [(String, GVariant)] = []
    }

    static func bigEndian(_ t: UInt64) -> GVariant { GVariant(uint64: t.byteSwapped) }

    static func dict(_ entries: [(String, GVariant)]) -> GVariant {
        VariantDictionary(entries: entries.map { .init(key: $0.0, value: $0.1) }).variant()
    }

    static func refList(_ refs: [Ref]) -> GVariant {
        let elements = refs.map { r in
            GVariant(tuple: [try! GVariant(string: r.name),
                             GVariant(tuple: [GVariant(uint64: r.size), GVariant(bytes: r.checksum), dict(r.metadata)])])
        }
        return try! GVariant(arrayOf: RepositorySummary.refType, elements)
    }

    static func summary(_ refs: [Ref], _ metadata: [(String, GVariant)] = []) -> [UInt8] {
        GVariant(tuple: [refList(refs), dict(metadata)]).serialized
    }
}

final class SummaryTests: XCTestCase {
    typealias B = SummaryBuilder
    let key = try! Ed25519SecretKey(seed: Array(repeating: 3, count: 32))
    var policy: TrustPolicy { TrustPolicy(trustedKeys: [key.publicKey]) }

    func parseError(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> GVariantError? {
        do {
            _ = try RepositorySummary(serialized: bytes)
            XCTFail("accepted", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    func failure<T>(_ r: Result<T, VerificationFailure>) -> VerificationFailure? {
        if case .failure(let f) = r { return f }
        return nil
    }

    func testFieldsAndBigEndianTimes() throws {
        let a = [UInt8](repeating: 1, count: 32), b = [UInt8](repeating: 2, count: 32)
        let from = String(repeating: "0a", count: 32), to = String(repeating: "0b", count: 32)
        let bytes = B.summary([
            B.Ref(name: "apps/a", checksum: a, size: 158, metadata: [(SummaryKey.commitTimestamp, B.bigEndian(1_700_000_000))]),
            B.Ref(name: "os/x86_64", checksum: b, metadata: [(SummaryKey.commitVersion, try GVariant(string: "12.5")), ("other", GVariant(boolean: true))]),
        ], [
            (SummaryKey.lastModified, B.bigEndian(1_764_633_600)),
            (SummaryKey.expires, B.bigEndian(1_767_225_600)),
            (SummaryKey.mode, try GVariant(string: "archive-z2")),
            (SummaryKey.staticDeltas, B.dict([(to, GVariant(bytes: Array(repeating: 9, count: 32))),
                                              ("\(from)-\(to)", GVariant(bytes: Array(repeating: 8, count: 32)))])),
            ("custom", try GVariant(string: "kept")),
        ])
        let s = try RepositorySummary(serialized: bytes)
        XCTAssertEqual(s.refs.map(\.name), ["apps/a", "os/x86_64"])
        XCTAssertEqual(s.refs[0].checksum, String(repeating: "01", count: 32))
        XCTAssertEqual(s.refs[0].commitSize, 158)
        XCTAssertEqual(s.refs[0].timestamp, 1_700_000_000)
        XCTAssertNil(s.refs[0].version)
        XCTAssertEqual(s.refs[1].version, "12.5")
        XCTAssertEqual(s.refs[1].metadata.keys, [SummaryKey.commitVersion, "other"])
        XCTAssertEqual(s.ref("os/x86_64")?.checksumBytes, b)
        XCTAssertNil(s.ref("os"))
        XCTAssertEqual(s.lastModified, 1_764_633_600)
        XCTAssertEqual(s.expires, 1_767_225_600)
        XCTAssertEqual(s.mode, "archive-z2")
        XCTAssertEqual(s.staticDeltas, [
            .init(name: to, from: nil, to: to, superblockDigest: Array(repeating: 9, count: 32)),
            .init(name: "\(from)-\(to)", from: from, to: to, superblockDigest: Array(repeating: 8, count: 32)),
        ])
        XCTAssertEqual(s.metadata.string("custom"), "kept")
        XCTAssertTrue(s.collectionRefs.isEmpty)

        XCTAssertFalse(s.isExpired(now: 1_767_225_599))
        XCTAssertTrue(s.isExpired(now: 1_767_225_600))
        XCTAssertTrue(s.isExpired(now: 1_767_225_601))
        let never = try RepositorySummary(serialized: B.summary([]))
        XCTAssertFalse(never.isExpired(now: .max))
        XCTAssertTrue(never.refs.isEmpty && never.staticDeltas.isEmpty)
        XCTAssertNil(never.lastModified)
    }

    func testRefusalsNameTheField() throws {
        let sum = Array(repeating: UInt8(7), count: 32)
        func refs(_ names: [String]) -> [UInt8] { B.summary(names.map { B.Ref(name: $0) }) }
        XCTAssertEqual(parseError(refs(["b", "a"])), GVariantError(path: "summary.refs['a']", problem: "out of order (refs must be sorted by name)"))
        XCTAssertEqual(parseError(refs(["a", "a"]))?.path, "summary.refs['a']")
        XCTAssertEqual(parseError(refs(["a", "a"]))?.problem, "listed twice")
        for bad in ["", "../etc", "a/../b", "a//b", "/a", "a/", "-a", ".hidden", "a b", "a\u{1}b", "a:b", "a*"] {
            let e = parseError(refs([bad]))
            XCTAssertTrue(e?.problem.hasPrefix("invalid ref name") ?? false, "\(bad): \(String(describing: e))")
        }
        for good in ["a", "os/x86_64/stable", "a-b.c_d", "9", "fedora/39/x86_64/silverblue", "été/κ"] {
            XCTAssertNoThrow(try RepositorySummary(serialized: refs([good])), good)
        }
        var short = B.Ref(name: "os"); short.checksum = Array(sum.prefix(31))
        XCTAssertEqual(parseError(B.summary([short])), GVariantError(path: "summary.refs['os'].checksum", problem: "31 bytes, not 32"))
        var wrongTime = B.Ref(name: "os"); wrongTime.metadata = [(SummaryKey.commitTimestamp, GVariant(uint32: 5))]
        XCTAssertEqual(parseError(B.summary([wrongTime])), GVariantError(path: "summary.refs['os'].metadata['ostree.commit.timestamp']", problem: "has type u, not t"))
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.expires, try GVariant(string: "tomorrow"))])),
                       GVariantError(path: "summary.metadata['ostree.summary.expires']", problem: "has type s, not t"))
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.lastModified, GVariant(int64: 5))]))?.path, "summary.metadata['ostree.summary.last-modified']")
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.staticDeltas, B.dict([("abc", GVariant(bytes: sum))]))]))?.path,
                       "summary.metadata['ostree.static-deltas']['abc']")
        let name = String(repeating: "ab", count: 32)
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.staticDeltas, B.dict([(name, GVariant(bytes: [1]))]))])),
                       GVariantError(path: "summary.metadata['ostree.static-deltas']['\(name)']", problem: "superblock digest is 1 bytes, not 32"))
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.staticDeltas, B.dict([(name.uppercased(), GVariant(bytes: sum))]))]))?.problem,
                       "not a static delta name (TO or FROM-TO, 64 lower-case hex characters each)")
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.staticDeltas, try GVariant(string: "x"))]))?.problem, "has type s, not a{sv}")

        // Not normal form, truncated, another type: the generic reader's
        // errors, under the summary's field names.
        var bytes = refs(["a", "b"])
        bytes[bytes.count - 1] ^= 0x40
        XCTAssertTrue(parseError(bytes)?.path.hasPrefix("summary") ?? false)
        XCTAssertEqual(parseError([]), GVariantError(path: "summary", problem: "empty (0 bytes)"))
        let inRefs = refs(["a", "b"])
        var refFraming = inRefs
        let listEnd = Int(inRefs[inRefs.count - 1])  // the tuple's one framing offset: end of the ref list
        refFraming[listEnd - 1] ^= 0x01               // the list's last framing offset
        XCTAssertTrue(parseError(refFraming)?.path.hasPrefix("summary.refs") ?? false, String(describing: parseError(refFraming)))
    }

    func testCollectionMap() throws {
        let map = try GVariant(arrayOf: .dictEntry(.string, .array(RepositorySummary.refType)), [
            try GVariant(dictEntryKey: try GVariant(string: "org.example.A"), value: B.refList([B.Ref(name: "x"), B.Ref(name: "y")])),
            try GVariant(dictEntryKey: try GVariant(string: "org.example.B"), value: B.refList([B.Ref(name: "z")])),
        ])
        let s = try RepositorySummary(serialized: B.summary([B.Ref(name: "main")], [(SummaryKey.collectionID, try GVariant(string: "org.example.Main")),
                                                                                   (SummaryKey.collectionMap, map)]))
        XCTAssertEqual(s.collectionID, "org.example.Main")
        XCTAssertEqual(s.collectionRefs.map(\.collectionID), ["org.example.A", "org.example.B"])
        XCTAssertEqual(s.collectionRefs.map { $0.refs.map(\.name) }, [["x", "y"], ["z"]])
        let unsorted = try GVariant(arrayOf: .dictEntry(.string, .array(RepositorySummary.refType)), [
            try GVariant(dictEntryKey: try GVariant(string: "b"), value: B.refList([])),
            try GVariant(dictEntryKey: try GVariant(string: "a"), value: B.refList([])),
        ])
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.collectionMap, unsorted)]))?.path, "summary.metadata['ostree.summary.collection-map']['a']")
        let badRef = try GVariant(arrayOf: .dictEntry(.string, .array(RepositorySummary.refType)), [
            try GVariant(dictEntryKey: try GVariant(string: "c"), value: B.refList([B.Ref(name: "../x")])),
        ])
        XCTAssertEqual(parseError(B.summary([], [(SummaryKey.collectionMap, badRef)]))?.path, "summary.metadata['ostree.summary.collection-map']['c']['../x']")
    }

    // MARK: Signatures

    func testSignatureReasons() throws {
        let summary = B.summary([B.Ref(name: "os")], [(SummaryKey.lastModified, B.bigEndian(1))])
        let sig = try XCTUnwrap(try signSummary(summary, with: [key]))
        let v = try policy.verify(summary: summary, signatures: sig).get()
        XCTAssertEqual(v.key, key.publicKey)
        XCTAssertEqual(v.signatureIndex, 0)
        let (verified, parsed) = try policy.verifiedSummary(summary, signatures: sig, now: 100).get()
        XCTAssertEqual(verified, v)
        XCTAssertEqual(parsed.refs.map(\.name), ["os"])

        var flipped = summary; flipped[3] ^= 0x01
        XCTAssertEqual(failure(policy.verify(summary: flipped, signatures: sig)), .noValidSignature(signatures: 1))
        var sigFlipped = sig
        let at = try XCTUnwrap(Data(sig).range(of: Data(try key.sign(summary)))).lowerBound + 5
        sigFlipped[at] ^= 0x01
        XCTAssertEqual(failure(policy.verify(summary: summary, signatures: sigFlipped)), .noValidSignature(signatures: 1))
        XCTAssertEqual(failure(policy.verify(summary: summary, signatures: nil)), .noDetachedMetadata)
        guard case .corruptDetachedMetadata = failure(policy.verify(summary: summary, signatures: Array(sig.dropLast(3)))) else {
            return XCTFail("truncated summary.sig not refused as corrupt")
        }
        let stranger = TrustPolicy(trustedKeys: [try Ed25519SecretKey(seed: Array(repeating: 4, count: 32)).publicKey])
        XCTAssertEqual(failure(stranger.verify(summary: summary, signatures: sig)), .noValidSignature(signatures: 1))
        let revoking = TrustPolicy(trustedKeys: [key.publicKey, stranger.trustedKeys[0]], revokedKeys: [key.publicKey])
        XCTAssertEqual(failure(revoking.verify(summary: summary, signatures: sig)), .signedByRevokedKey(key.publicKey.base64))
        XCTAssertEqual(failure(TrustPolicy(trustedKeys: []).verify(summary: summary, signatures: sig)), .noTrustedKeys)
        XCTAssertEqual(try policy.evaluate(summary: summary, signatures: sig).get(), [.trusted(key.publicKey)])
        XCTAssertEqual(try revoking.evaluate(summary: summary, signatures: sig).get(), [.revoked(key.publicKey)])

        // A signature of garbage verifies, then the bytes do not parse.
        let garbage: [UInt8] = [1, 2, 3]
        guard case .corruptSummary(let e)? = failure(policy.verifiedSummary(garbage, signatures: try signSummary(garbage, with: [key]), now: 0)) else {
            return XCTFail("unparsable summary not refused")
        }
        XCTAssertTrue(e.path.hasPrefix("summary"), e.description)

        // The summary's wording of every shared reason names the summary or summary.sig.
        let shared: [VerificationFailure] = [.noDetachedMetadata, .corruptDetachedMetadata(e), .noSignatures, .signaturesHaveWrongType("s"),
                                            .malformedSignatures(count: 1), .signedByRevokedKey("k"), .noValidSignature(signatures: 2)]
        for f in shared {
            let text = f.description(for: .summary)
            XCTAssertTrue(text.contains("summary"), text)
            XCTAssertFalse(text.contains("commit"), text)
            XCTAssertEqual(f.description(for: .commit), f.description)
        }
        XCTAssertEqual(Set(shared.map { $0.description(for: .summary) }).count, shared.count)
    }

    func testExpiredSummaryWithFakeClock() throws {
        let summary = B.summary([B.Ref(name: "os")], [(SummaryKey.expires, B.bigEndian(1_000_000))])
        let sig = try XCTUnwrap(try signSummary(summary, with: [key]))
        XCTAssertNoThrow(try policy.verifiedSummary(summary, signatures: sig, now: 999_999).get())
        XCTAssertEqual(failure(policy.verifiedSummary(summary, signatures: sig, now: 1_000_000)), .summaryExpired(expires: 1_000_000))
        XCTAssertEqual(VerificationFailure.summaryExpired(expires: 1_000_000).description,
                       "summary expired at 1970-01-12T13:46:40Z (ostree.summary.expires)")
        // An expired summary whose signature is bad is refused for the signature.
        XCTAssertEqual(failure(policy.verifiedSummary(summary, signatures: nil, now: 2_000_000)), .noDetachedMetadata)
    }

    /// Our summary.sig is byte for byte what libostree's
    /// _sign_detached_metadata_append writes into a new a{sv}, key after key.
    func testSignatureFileMatchesGLib() throws {
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let summary = B.summary([B.Ref(name: "os")])
        let other = try Ed25519SecretKey(seed: Array(repeating: 5, count: 32))
        try writeBytes(try key.sign(summary), dir + "/s1")
        try writeBytes(try other.sign(summary), dir + "/s2")
        XCTAssertEqual(try runTool([helper, "append", "-", dir + "/s1", dir + "/one"]).status, 0)
        XCTAssertEqual(try runTool([helper, "append", dir + "/one", dir + "/s2", dir + "/two"]).status, 0)
        XCTAssertEqual(try signSummary(summary, with: [key]), try readBytes(dir + "/one"))
        XCTAssertEqual(try signSummary(summary, with: [key, other, key]), try readBytes(dir + "/two"))
        XCTAssertNil(try signSummary(summary, with: []))
    }

    func testUTCDate() {
        XCTAssertEqual(utcDate(0), "1970-01-01T00:00:00Z")
        XCTAssertEqual(utcDate(951_782_400), "2000-02-29T00:00:00Z")
        XCTAssertEqual(utcDate(1_764_633_599), "2025-12-01T23:59:59Z")
        XCTAssertEqual(utcDate(4_102_444_800), "2100-01-01T00:00:00Z")
        let f = ISO8601DateFormatter()
        for t in stride(from: UInt64(0), to: 5_000_000_000, by: 86_399 * 97) {
            XCTAssertEqual(utcDate(t), f.string(from: Date(timeIntervalSince1970: TimeInterval(t))))
        }
    }

    /// Every byte flip and truncation of a signed summary: parsed or refused
    /// without a crash, and never verified.
    func testFlipsAndTruncations() throws {
        let summary = B.summary([B.Ref(name: "a", metadata: [(SummaryKey.commitTimestamp, B.bigEndian(7))]), B.Ref(name: "b")],
                                [(SummaryKey.lastModified, B.bigEndian(5)), (SummaryKey.expires, B.bigEndian(9_999_999_999))])
        let sig = try XCTUnwrap(try signSummary(summary, with: [key]))
        for i in 0..<summary.count {
            for bit in [0x01, 0x80] as [UInt8] {
                var s = summary; s[i] ^= bit
                _ = try? RepositorySummary(serialized: s)
                if case .success = policy.verifiedSummary(s, signatures: sig, now: 0) { XCTFail("flip at \(i) verified") }
            }
        }
        for n in 0..<summary.count {
            let s = Array(summary.prefix(n))
            _ = try? RepositorySummary(serialized: s)
            if case .success = policy.verify(summary: s, signatures: sig) { XCTFail("truncation to \(n) verified") }
        }
    }

    // MARK: Against Debian's ostree

    /// `ostree summary -u` output, read by us, agrees with `ostree summary
    /// --view` and `ostree refs`.
    func testReadsOstreeSummary() throws {
        let fx = try OstreeFixture()
        defer { fx.cleanup() }
        var r = try runTool(["ostree", "refs", "--repo=\(fx.repo)", "--create=other/branch", fx.first])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runTool(["ostree", "static-delta", "generate", "--repo=\(fx.repo)", "--to=test"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try runTool(["ostree", "summary", "-u", "--repo=\(fx.repo)", "-m", "ostree.summary.expires=uint64 \(UInt64(1_900_000_000).byteSwapped)"])
        XCTAssertEqual(r.status, 0, r.err)
        let s = try RepositorySummary(serialized: try readBytes(fx.repo + "/summary"))

        let refs = try runTool(["ostree", "refs", "--repo=\(fx.repo)"]).out.split(separator: "\n").map(String.init).sorted()
        XCTAssertEqual(s.refs.map(\.name), refs)
        for ref in s.refs {
            XCTAssertEqual(try runTool(["ostree", "rev-parse", "--repo=\(fx.repo)", ref.name]).out, ref.checksum + "\n")
            XCTAssertEqual(ref.commitSize, UInt64(try fx.commitBytes(ref.checksum).count))
        }
        XCTAssertEqual(s.ref("other/branch")?.timestamp, 1_614_834_367)  // the fixture's --timestamp=2021-03-04 05:06:07
        XCTAssertEqual(s.staticDeltas.map(\.name), ["\(fx.first)-\(fx.second)"])
        XCTAssertEqual(s.staticDeltas.first?.from, fx.first)
        XCTAssertEqual(s.mode, "bare-user")
        XCTAssertEqual(s.expires, 1_900_000_000)
        XCTAssertEqual(s.metadata[SummaryKey.indexedDeltas]?.boolValue, true)

        let view = try runTool(["ostree", "summary", "--view", "--repo=\(fx.repo)"]).out
        for ref in s.refs {
            XCTAssertTrue(view.contains("* \(ref.name)\n    Latest Commit (\(ref.commitSize) bytes):\n      \(ref.checksum)\n"), view)
        }
        let lastModified = try XCTUnwrap(s.lastModified)
        let printed = utcDate(lastModified).dropLast() + "+00"   // ostree prints 2026-12-02T10:00:00+00
        XCTAssertTrue(view.contains("Last-Modified (ostree.summary.last-modified): \(printed)\n"), view)
        XCTAssertTrue(view.contains("Expires (ostree.summary.expires): 2030-03-17T17:46:40+00\n"), view)
        XCTAssertEqual(utcDate(1_900_000_000), "2030-03-17T17:46:40Z")
        XCTAssertTrue(view.contains("Static Deltas (ostree.static-deltas): {'\(fx.first)-\(fx.second)': <[byte 0x"), view)
        XCTAssertLessThan(abs(Int64(lastModified) - Int64(Date().timeIntervalSince1970)), 300)
    }
}
