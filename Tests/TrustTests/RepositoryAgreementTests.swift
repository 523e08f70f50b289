import Foundation
import XCTest
@testable import Trust

/// The pure-Swift GVariant reader against libostree: every commit object and
/// every detached metadata file of a repository made by cairn and ostree
/// (signed with ed25519 by cairn, with OpenPGP by ostree) is read by `Commit`
/// and `VariantDictionary` and compared field by field with what
/// `cairn show --json` reports, which reads through libostree/GLib.
final class RepositoryAgreementTests: XCTestCase {
    var dir = ""
    var cairn = ""
    var repo: String { dir + "/repo" }

    override func setUpWithError() throws {
        try requireTool("ostree")
        let built = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("cairn").path
        let fallback = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/cairn").path
        guard let c = [built, fallback].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("cairn is not built (looked next to the test bundle)")
        }
        cairn = c
        var template = Array("/var/tmp/trust-agree-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        dir = String(cString: p)
    }

    override func tearDown() {
        if !dir.isEmpty {
            _ = try? runTool(["gpgconf", "--kill", "all"].withEnv("GNUPGHOME=\(dir)/gnupg"))
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    @discardableResult
    func run(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try runTool(args)
        XCTAssertEqual(r.status, 0, "\(args.joined(separator: " ")): \(r.err)", file: file, line: line)
        return r.out
    }

    func makeRepository() throws {
        let src = dir + "/src"
        try run(["sh", "-c", "mkdir -p '\(src)/usr/bin' && echo hi > '\(src)/usr/bin/hi' && echo data > '\(src)/usr/data'"])
        try run([cairn, "init", "--repo", repo])
        for k in ["a", "b"] { try run([cairn, "keygen", "--output", "\(dir)/\(k)"]) }
        try run([cairn, "commit", "--repo", repo, "-b", "os", "-s", "first ünïcode", "-m", "body\nsecond line",
                 "--add-metadata-string", "version=1.0", "--add-metadata", "n=uint64 7", "--add-metadata", "flag=true",
                 "--add-metadata", "blob=[byte 1, 2, 3]", "--add-metadata", "list=[@ay [byte 1], [byte 2, 3]]",
                 "--timestamp", "1700000000", "--sign-key", "\(dir)/a.secret", src])
        try run([cairn, "commit", "--repo", repo, "-b", "os", "-s", "second", "--sign-key", "\(dir)/a.secret",
                 "--sign-key", "\(dir)/b.secret", src])
        try run([cairn, "commit", "--repo", repo, "-b", "plain", "--no-composefs", "--parent", "none", src])
        try run(["ostree", "commit", "--repo=\(repo)", "-b", "peer", "-s", "by ostree", "--add-metadata-string=k=v",
                 "--add-detached-metadata-string=note=kept", src])
        try run([cairn, "sign", "--repo", repo, "peer", "--key", "\(dir)/b.secret"])
        if haveTool("gpg") {
            let home = dir + "/gnupg"
            try run(["sh", "-c", """
                set -e; mkdir -m 700 '\(home)'; export GNUPGHOME='\(home)'
                gpg --batch --passphrase '' --quick-gen-key 'Agree <a@example.com>' ed25519 sign never 2>/dev/null
                fpr=$(gpg --list-keys --with-colons | awk -F: '/^fpr/ {print $10; exit}')
                ostree gpg-sign --repo='\(repo)' --gpg-homedir="$GNUPGHOME" peer "$fpr"
                ostree gpg-sign --repo='\(repo)' --gpg-homedir="$GNUPGHOME" plain "$fpr"
                """])
        }
    }

    func testReaderAgreesWithLibostreeOnEveryCommitAndDetachedMetadata() throws {
        try makeRepository()
        let files = try run(["sh", "-c", "cd '\(repo)/objects' && find . -name '*.commit' -o -name '*.commitmeta' | sort"])
            .split(separator: "\n").map { String($0.dropFirst(2)) }
        var commits = 0, metas = 0, ed25519 = 0, gpg = 0
        for f in files where f.hasSuffix(".commit") {
            let checksum = f.replacingOccurrences(of: "/", with: "").replacingOccurrences(of: ".commit", with: "")
            let bytes = try readBytes("\(repo)/objects/\(f)")
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try run([cairn, "show", "--repo", repo, "--json", checksum]).utf8)) as? [String: Any])
            let c = try Commit(serialized: bytes)
            commits += 1
            XCTAssertEqual(c.subject, json["subject"] as? String, f)
            XCTAssertEqual(c.body, json["body"] as? String, f)
            XCTAssertEqual(c.timestamp, (json["timestampUnix"] as? NSNumber)?.uint64Value, f)
            XCTAssertEqual(c.parent.isEmpty ? nil : hex(c.parent), json["parent"] as? String, f)
            XCTAssertEqual(hex(c.rootTree), json["rootTree"] as? String, f)
            XCTAssertEqual(hex(c.rootMetadata), json["rootMeta"] as? String, f)
            XCTAssertEqual(c.composefsDigest.map(hex), json["composefsDigest"] as? String, f)
            let metadata = try XCTUnwrap(json["metadata"] as? [String: Any])
            XCTAssertEqual(Set(c.metadata.keys), Set(metadata.keys), f)
            XCTAssertEqual(c.metadata.keys.count, metadata.count, f)
            for e in c.metadata.entries {
                let theirs = metadata[e.key]
                switch e.value.type.typeString {
                case "s": XCTAssertEqual(e.value.stringValue, theirs as? String, e.key)
                case "ay": XCTAssertEqual(e.value.byteArrayValue.map(hex), theirs as? String, e.key)
                case "aay": XCTAssertEqual(e.value.children.map { hex($0.byteArrayValue ?? []) }, theirs as? [String], e.key)
                case "as": XCTAssertEqual(e.value.children.map { $0.stringValue ?? "" }, theirs as? [String], e.key)
                case "t": XCTAssertEqual(e.value.uint64Value, (theirs as? NSNumber)?.uint64Value, e.key)
                case "b": XCTAssertEqual(e.value.boolValue, (theirs as? NSNumber)?.boolValue, e.key)
                default: XCTFail("untested metadata type \(e.value.type.typeString) of \(e.key)")
                }
            }

            let signatures = try XCTUnwrap(json["signatures"] as? [String: Any])
            let metaPath = "\(repo)/objects/\(f)meta"
            guard FileManager.default.fileExists(atPath: metaPath) else {
                XCTAssertEqual(signatures["detachedMetadata"] as? Bool, false, f)
                continue
            }
            metas += 1
            let dict = try VariantDictionary(serialized: try readBytes(metaPath))
            XCTAssertEqual(dict.keys, signatures["detachedMetadataKeys"] as? [String], f)
            let ours = dict[ed25519SignatureKey]?.children.map { hex($0.byteArrayValue ?? []) } ?? []
            let theirs = (signatures["ed25519"] as? [[String: String]] ?? []).map { $0["hex"] ?? "" }
            XCTAssertEqual(ours, theirs, f)
            XCTAssertEqual(dict["ostree.gpgsigs"]?.children.count ?? 0, signatures["gpgCount"] as? Int, f)
            ed25519 += ours.count
            gpg += dict["ostree.gpgsigs"]?.children.count ?? 0
            if let note = dict.string("note") { XCTAssertEqual(note, "kept") }
        }
        XCTAssertEqual(commits, 4)
        XCTAssertEqual(metas, haveTool("gpg") ? 4 : 3)
        XCTAssertEqual(ed25519, 4)
        XCTAssertEqual(gpg, haveTool("gpg") ? 2 : 0)
    }
}

private extension Array where Element == String {
    /// `env VAR=value cmd...` for runTool, which runs through /usr/bin/env.
    func withEnv(_ assignment: String) -> [String] { [assignment] + self }
}
