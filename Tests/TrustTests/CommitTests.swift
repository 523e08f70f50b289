import CairnTestSupport
import Foundation
import XCTest
@testable import Trust

/// Reads objects written by Debian's ostree CLI and checks every field
/// against what the CLI prints.
final class CommitTests: XCTestCase {
    func testCommitFieldsMatchOstreeCLI() throws {
        let fx = try OstreeFixture()
        defer { fx.cleanup() }
        let bytes = try fx.commitBytes(fx.first)
        let c = try Commit(serialized: bytes)
        XCTAssertEqual(c.subject, "first subject")
        XCTAssertEqual(c.body, "the body\nline2")
        XCTAssertEqual(c.timestamp, 1614834367)  // 2021-03-04 05:06:07 UTC
        XCTAssertEqual(c.parent, [])
        XCTAssertTrue(c.related.isEmpty)
        XCTAssertEqual(c.composefsDigest, OstreeFixture.digest)
        XCTAssertEqual(c.metadata.string("version"), "1.0")
        XCTAssertEqual(c.metadata.bytes("foo"), [1, 2])
        XCTAssertEqual(c.metadata["flag"]?.boolValue, true)
        XCTAssertEqual(c.metadata["num"]?.uint64Value, 1234567890123)

        // Metadata keys, as ostree prints them.
        for key in c.metadata.keys {
            let r = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-metadata-key=\(key)", fx.first])
            XCTAssertEqual(r.status, 0, r.err)
        }
        let version = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-metadata-key=version", fx.first])
        XCTAssertEqual(version.out.trimmingCharacters(in: .whitespacesAndNewlines), "'1.0'")
        let foo = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-metadata-key=foo", fx.first])
        XCTAssertEqual(foo.out.trimmingCharacters(in: .whitespacesAndNewlines), "[byte 0x01, 0x02]")

        // Root checksums, as `ostree ls -C` prints them for "/".
        let ls = try runTool(["ostree", "ls", "-C", "--repo=\(fx.repo)", fx.first, "/"])
        let fields = ls.out.split(separator: "\n").first.map { $0.split(separator: " ").map(String.init) } ?? []
        XCTAssertTrue(fields.contains(hex(c.rootTree)), ls.out)
        XCTAssertTrue(fields.contains(hex(c.rootMetadata)), ls.out)

        // The child: parent checksum, timestamp as the raw dump shows it.
        let child = try Commit(serialized: try fx.commitBytes(fx.second))
        XCTAssertEqual(hex(child.parent), fx.first)
        XCTAssertEqual(child.subject, "second")
        XCTAssertEqual(child.body, "")
        XCTAssertNil(child.composefsDigest)
        XCTAssertEqual(child.rootTree, c.rootTree)
        let raw = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--raw", fx.second])
        XCTAssertTrue(raw.out.contains("uint64 \(child.timestamp),"), raw.out)
        XCTAssertTrue(raw.out.contains("'second'"))
        let log = try runTool(["ostree", "log", "--repo=\(fx.repo)", "test"])
        XCTAssertTrue(log.out.contains("Parent:  \(hex(child.parent))"), log.out)
        XCTAssertTrue(log.out.contains("Date:  2021-03-04 05:06:07 +0000"), log.out)

        // The metadata dictionary reserializes to the exact bytes inside the commit.
        let v = try GVariant(type: Commit.type, data: bytes)
        XCTAssertEqual(c.metadata.serialized(), v.child(0)!.serialized)
        XCTAssertEqual(v.children.count, 8)
        XCTAssertEqual(GVariant(tuple: v.children).serialized, bytes, "commit rebuilt from its fields differs")
    }

    func testDetachedMetadataRoundTrip() throws {
        let fx = try OstreeFixture()
        defer { fx.cleanup() }
        let bytes = try fx.detachedBytes(fx.first)
        let d = try VariantDictionary(serialized: bytes)
        XCTAssertEqual(Set(d.keys), ["k", "zz"])
        XCTAssertEqual(d.string("k"), "v")
        XCTAssertEqual(d.string("zz"), "yy")
        XCTAssertEqual(d.serialized(), bytes)
        for key in ["k", "zz"] {
            let r = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-detached-metadata-key=\(key)", fx.first])
            XCTAssertEqual(r.out.trimmingCharacters(in: .whitespacesAndNewlines), "'\(d.string(key)!)'")
        }
        // Adding a signature and reading it back with ostree itself.
        let key = try Ed25519SecretKey.generate()
        let commit = try fx.commitBytes(fx.first)
        let signed = try signCommit(commit, existingDetachedMetadata: bytes, with: key)
        try writeBytes(signed, fx.objectPath(fx.first, "commitmeta"))
        let r = try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-detached-metadata-key=\(ed25519SignatureKey)", fx.first])
        XCTAssertEqual(r.status, 0, r.err)
        // GLib prints a signature ending in NUL as b'...': both forms, the same bytes.
        let written = try VariantDictionary(serialized: signed)[ed25519SignatureKey]?.children.map { $0.byteArrayValue ?? [] } ?? []
        XCTAssertEqual(glibPrintedByteArrays(r.out), written, r.out)
        XCTAssertEqual(try runTool(["ostree", "show", "--repo=\(fx.repo)", "--print-detached-metadata-key=k", fx.first]).out, "'v'\n")
        let policy = TrustPolicy(trustedKeys: [key.publicKey])
        XCTAssertEqual(try policy.verify(commit: commit, detachedMetadata: signed).get().key, key.publicKey)
    }

    func testCommitErrorsNameTheField() throws {
        let fx = try OstreeFixture()
        defer { fx.cleanup() }
        let bytes = try fx.commitBytes(fx.first)
        let v = try GVariant(type: Commit.type, data: bytes)
        var f = v.children
        // A 31-byte root tree checksum.
        f[6] = GVariant(bytes: Array(0..<31))
        XCTAssertThrowsError(try Commit(serialized: GVariant(tuple: f).serialized)) { e in
            XCTAssertEqual((e as? GVariantError)?.path, "commit.root tree")
        }
        // Subject that is not UTF-8: patch the string inside the bytes.
        var bad = bytes
        let subj = Array("first subject".utf8)
        if let at = (0..<(bad.count - subj.count)).first(where: { Array(bad[$0..<($0 + subj.count)]) == subj }) {
            bad[at] = 0xff
            XCTAssertThrowsError(try Commit(serialized: bad)) { e in
                XCTAssertTrue("\(e)".contains("commit.subject"), "\(e)")
                XCTAssertTrue("\(e)".contains("UTF-8"), "\(e)")
            }
        } else { XCTFail("subject not found") }
        // A metadata value with a broken variant: name the key.
        var meta = bytes
        let version = Array("1.0\0\0s".utf8)
        if let at = (0..<(meta.count - version.count)).first(where: { Array(meta[$0..<($0 + version.count)]) == version }) {
            meta[at + 5] = UInt8(ascii: "z")
            XCTAssertThrowsError(try Commit(serialized: meta)) { e in
                XCTAssertTrue("\(e)".contains("commit.metadata['version']"), "\(e)")
            }
        } else { XCTFail("version not found") }
        XCTAssertThrowsError(try Commit(serialized: []))
        XCTAssertThrowsError(try Commit(serialized: Array(bytes.dropLast())))
    }
}
