import CairnTestSupport
import Foundation
import XCTest

/// `cairn keygen/sign/verify`, `commit --sign-key/--gpg-sign` and the
/// signatures in `cairn show`, against Python's `cryptography` (ed25519),
/// Debian's `ostree` and GnuPG as independent peers.
final class SignTests: XCTestCase {
    var dir = ""
    var cairn = ""
    var repo: String { dir + "/repo" }
    var gnupgHome: String?

    override func setUpWithError() throws {
        cairn = try TestSupport.executable("cairn")
        dir = try TestSupport.scratchFolder("cairn-sign")
        try TestSupport.sh("mkdir -p '\(dir)/src/usr/bin' && printf 'hello\\n' > '\(dir)/src/usr/bin/hello'")
        try cairn(["init", "--repo", repo])
    }

    override func tearDown() {
        if let home = gnupgHome {
            _ = try? TestSupport.run("gpgconf", ["--kill", "all"], environment: ["GNUPGHOME": home])
        }
        TestSupport.remove(dir)
    }

    @discardableResult
    func cairn(_ args: [String], expect status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try TestSupport.run(cairn, args)
        XCTAssertEqual(r.status, status, "cairn \(args.joined(separator: " ")): \(r.stdout)\(r.stderr)", file: file, line: line)
        return r
    }

    @discardableResult
    func ostree(_ args: [String], environment: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try TestSupport.run("ostree", args, environment: environment)
        XCTAssertEqual(r.status, 0, "ostree \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    func commit(_ extra: [String] = [], branch: String = "os") throws -> String {
        try cairn(["commit", "--repo", repo, "-b", branch, "-s", "subject"] + extra + [dir + "/src"]).lastLine
    }

    func objectPath(_ checksum: String, _ ext: String) -> String {
        "\(repo)/objects/\(checksum.prefix(2))/\(checksum.dropFirst(2)).\(ext)"
    }

    func keygen(_ name: String) throws -> (secret: String, pub: String, base64: String) {
        let r = try cairn(["keygen", "--output", dir + "/" + name])
        return (dir + "/\(name).secret", dir + "/\(name).pub", r.lastLine)
    }

    func showJSON(_ rev: String) throws -> [String: Any] {
        let out = try cairn(["show", "--repo", repo, "--json", rev]).stdoutData
        return try XCTUnwrap(JSONSerialization.jsonObject(with: out) as? [String: Any])
    }

    func ed25519Signatures(_ rev: String) throws -> [String] {
        let sigs = try XCTUnwrap(try showJSON(rev)["signatures"] as? [String: Any])
        return try XCTUnwrap(sigs["ed25519"] as? [[String: String]]).map { $0["hex"] ?? "" }
    }

    /// Asserts a refusal: exit 1, one `cairn: error:` line naming `reason`.
    func assertRefused(_ args: [String], _ reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try cairn(args, expect: 1, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(reason), "expected '\(reason)' in: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.components(separatedBy: "cairn: error:").count - 1, 1, r.stderr, file: file, line: line)
    }

    func flipByte(_ path: String, at offset: Int) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        let i = offset >= 0 ? offset : data.count + offset
        data[i] ^= 0x01
        try TestSupport.sh("chmod u+w '\(path)'")
        try data.write(to: URL(fileURLWithPath: path))
    }

    // MARK: keygen

    func testKeygenModesAndRefusesToOverwrite() throws {
        let k = try keygen("k")
        XCTAssertEqual(try TestSupport.sh("stat -c %a '\(k.secret)'"), "600\n")
        XCTAssertEqual(try String(contentsOfFile: k.pub, encoding: .utf8), k.base64 + "\n")
        XCTAssertEqual(Data(base64Encoded: try String(contentsOfFile: k.secret, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))?.count, 64)
        let before = try TestSupport.sh("cat '\(k.secret)' '\(k.pub)'")
        try assertRefused(["keygen", "--output", dir + "/k"], "refusing to overwrite")
        XCTAssertEqual(try TestSupport.sh("cat '\(k.secret)' '\(k.pub)'"), before)
        // Only the .pub exists: still refused, and no .secret is left behind.
        try TestSupport.sh("echo x > '\(dir)/p.pub'")
        try assertRefused(["keygen", "--output", dir + "/p"], "refusing to overwrite")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/p.secret"))
        XCTAssertEqual(try TestSupport.sh("ls '\(dir)' | grep -c tmp || true"), "0\n")
    }

    // MARK: ed25519 interop

    func testCairnSignatureVerifiesWithPythonCryptographyAndOstreeShowsIt() throws {
        try TestSupport.require(tool: "python3")
        try TestSupport.require(tool: "ostree")
        let k = try keygen("k")
        let c = try commit(["--sign-key", k.secret])
        let sigs = try ed25519Signatures(c)
        XCTAssertEqual(sigs.count, 1)
        let script = """
            import base64, sys
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            pub = base64.b64decode(open(sys.argv[1]).read().strip())
            data = open(sys.argv[2], 'rb').read()
            Ed25519PublicKey.from_public_bytes(pub).verify(bytes.fromhex(sys.argv[3]), data)
            print('ok')
            """
        let r = try TestSupport.run("python3", ["-c", script, k.pub, objectPath(c, "commit"), sigs[0]])
        if r.stderr.contains("No module named 'cryptography'") { throw XCTSkip("python3-cryptography missing") }
        XCTAssertEqual(r.stdout, "ok\n", r.stderr)
        XCTAssertEqual(try cairn(["verify", "--repo", repo, "os", "--keys", k.pub]).stdout,
                       "ed25519 signature #0: good signature by trusted key \(k.base64)\n"
                       + "Good ed25519 signature #0 by trusted key \(k.base64)\nCommit \(c) verified\n")

        // Debian's ostree (no ed25519 support) reads the .commitmeta cairn wrote.
        let printed = try ostree(["show", "--repo=\(repo)", c, "--print-detached-metadata-key=ostree.sign.ed25519"])
        XCTAssertEqual(glibPrintedByteArrays(printed).map { $0.map { String(format: "%02x", $0) }.joined() }, sigs, printed)
    }

    func testPythonSignatureVerifiesWithCairn() throws {
        try TestSupport.require(tool: "python3")
        try TestSupport.require(tool: "ostree")
        let c = try commit()
        // An independent signer: raw Ed25519 over the .commit bytes, and the
        // detached metadata a{sv} serialized by hand (GVariant spec).
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/Scripts/ed25519_sign.py").path
        let r = try TestSupport.run("python3", [script, objectPath(c, "commit"), objectPath(c, "commitmeta"), dir + "/py.pub"])
        if r.stderr.contains("No module named 'cryptography'") { throw XCTSkip("python3-cryptography missing") }
        XCTAssertEqual(r.status, 0, r.stderr)
        let v = try cairn(["verify", "--repo", repo, "os", "--keys", dir + "/py.pub"])
        XCTAssertTrue(v.stdout.contains("by trusted key \(r.lastLine)"), v.stdout)
        // GLib reads the hand-made metadata too.
        let printed = try ostree(["show", "--repo=\(repo)", c, "--print-detached-metadata-key=ostree.sign.ed25519"])
        XCTAssertEqual(glibPrintedByteArrays(printed).map(\.count), [64], printed)
    }

    // MARK: sign keeps what is there

    func testSignAppendsKeepsOtherEntriesAndSkipsDuplicates() throws {
        try TestSupport.require(tool: "ostree")
        let a = try keygen("a"), b = try keygen("b")
        try ostree(["commit", "--repo=\(repo)", "-b", "os", "--add-detached-metadata-string=note=kept", dir + "/src"])
        let c = try cairn(["sign", "--repo", repo, "os", "--key", a.secret]).stdout
        XCTAssertTrue(c.contains("with ed25519 key \(a.base64)"), c)
        try cairn(["sign", "--repo", repo, "os", "--key", b.secret])
        let first = try ed25519Signatures("os")
        XCTAssertEqual(first.count, 2)
        let again = try cairn(["sign", "--repo", repo, "os", "--key", a.secret])
        XCTAssertTrue(again.stderr.contains("already signed by ed25519 key \(a.base64)"), again.stderr)
        XCTAssertEqual(try ed25519Signatures("os"), first)
        XCTAssertEqual(try ostree(["show", "--repo=\(repo)", "os", "--print-detached-metadata-key=note"]), "'kept'\n")
        for k in [a, b] { try cairn(["verify", "--repo", repo, "os", "--keys", k.pub]) }
        let text = try cairn(["show", "--repo", repo, "os"]).stdout
        XCTAssertTrue(text.contains("Signatures:  2 ed25519, 0 GPG"), text)
    }

    func testCommitWithMalformedSignKeyWritesNothing() throws {
        let good = try keygen("k")
        try commit()
        let snapshot = "cd '\(repo)' && find refs objects -type f | sort | xargs sha256sum"
        let before = try TestSupport.sh(snapshot)
        try TestSupport.sh("printf 'not base64!\\n' > '\(dir)/bad.secret'")
        try assertRefused(["commit", "--repo", repo, "-b", "os", "--sign-key", dir + "/bad.secret", dir + "/src"], "bad.secret:1: not a base64 key")
        // A public key where a secret key is expected.
        try assertRefused(["commit", "--repo", repo, "-b", "os", "--sign-key", good.pub, dir + "/src"], "key is 32 bytes, expected 64")
        try assertRefused(["commit", "--repo", repo, "-b", "new", "--sign-key", dir + "/missing.secret", dir + "/src"], "cannot read key file")
        XCTAssertEqual(try TestSupport.sh(snapshot), before)
    }

    // MARK: Refusals, each with its own reason

    func signedCommit() throws -> (commit: String, key: (secret: String, pub: String, base64: String)) {
        let k = try keygen("k")
        let c = try commit(["--sign-key", k.secret])
        try cairn(["verify", "--repo", repo, "os", "--keys", k.pub])
        return (c, k)
    }

    func testUnsignedCommitIsRefused() throws {
        let k = try keygen("k")
        try commit()
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "commit has no detached metadata, hence no signature")
    }

    func testFlippedByteInCommitObjectIsRefused() throws {
        let (c, k) = try signedCommit()
        // A byte of the subject: libostree still loads the commit.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: objectPath(c, "commit")))
        let at = try XCTUnwrap(bytes.range(of: Data("subject".utf8))).lowerBound
        try flipByte(objectPath(c, "commit"), at: at)
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "none of the 1 ed25519 signature(s) verifies with a trusted key")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "not its checksum: the object was altered")
    }

    func testFlippedByteInSignatureIsRefused() throws {
        let (c, k) = try signedCommit()
        let sig = try XCTUnwrap(Data(hex: try ed25519Signatures(c)[0]))
        let meta = try Data(contentsOf: URL(fileURLWithPath: objectPath(c, "commitmeta")))
        let at = try XCTUnwrap(meta.range(of: sig)).lowerBound + 10
        try flipByte(objectPath(c, "commitmeta"), at: at)
        let r = try cairn(["verify", "--repo", repo, "os", "--keys", k.pub], expect: 1)
        XCTAssertTrue(r.stderr.contains("none of the 1 ed25519 signature(s) verifies with a trusted key"), r.stderr)
        XCTAssertFalse(r.stderr.contains("checksum"), r.stderr)
    }

    func testFlippedByteInDetachedMetadataFramingIsRefused() throws {
        let (c, k) = try signedCommit()
        try flipByte(objectPath(c, "commitmeta"), at: -1)  // the array's framing offset
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "detached metadata is corrupt")
        // The key-length offset of the dictionary entry. (A branch name that
        // is not hex: libostree takes "b" for a partial checksum too, and
        // refuses it as not unique when commits start with b.)
        let c2 = try commit(["--sign-key", k.secret, "-m", "another commit"], branch: "other")
        try flipByte(objectPath(c2, "commitmeta"), at: -2)
        try assertRefused(["verify", "--repo", repo, "other", "--keys", k.pub], "detached metadata is corrupt")
        _ = try cairn(["show", "--repo", repo, "other"])  // show copes
    }

    func testTruncatedCommitmetaIsRefused() throws {
        let (c, k) = try signedCommit()
        try TestSupport.sh("truncate -s 50 '\(objectPath(c, "commitmeta"))'")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "detached metadata is corrupt")
        try TestSupport.sh("truncate -s 0 '\(objectPath(c, "commitmeta"))'")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub], "commit has no ed25519 signature")
    }

    func testUntrustedKeyIsRefused() throws {
        _ = try signedCommit()
        let other = try keygen("other")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", other.pub], "none of the 1 ed25519 signature(s) verifies with a trusted key")
    }

    func testRevokedKeyIsRefused() throws {
        let (_, k) = try signedCommit()
        let other = try keygen("other")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub, "--keys", other.pub, "--revoked-keys", k.pub],
                          "commit is signed only by revoked key \(k.base64)")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", k.pub, "--revoked-keys", k.pub], "no trusted ed25519 key is configured")
    }

    func testEmptyKeyFileIsRefused() throws {
        _ = try signedCommit()
        try TestSupport.sh("printf '\\n  \\n' > '\(dir)/empty.pub' && : > '\(dir)/empty.secret'")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", dir + "/empty.pub"], "empty.pub: no keys in key file")
        try assertRefused(["sign", "--repo", repo, "os", "--key", dir + "/empty.secret"], "empty.secret: no keys in key file")
    }

    func testMalformedKeyLineIsRefused() throws {
        let (_, k) = try signedCommit()
        try TestSupport.sh("(cat '\(k.pub)'; echo 'AAAA####') > '\(dir)/bad.pub'")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", dir + "/bad.pub"], "bad.pub:2: not a base64 key")
        try TestSupport.sh("(cat '\(k.pub)'; echo 'AAAA') > '\(dir)/short.pub'")
        try assertRefused(["verify", "--repo", repo, "os", "--keys", dir + "/short.pub"], "short.pub:2: key is 3 bytes, expected 32")
    }

    func testUsageErrorsExit2() throws {
        try cairn(["verify", "--repo", repo, "os"], expect: 2)
        try cairn(["sign", "--repo", repo, "os"], expect: 2)
        try cairn(["keygen"], expect: 2)
    }

    // MARK: OpenPGP

    /// A throwaway GnuPG home with an unprotected ed25519 key; its public
    /// key is also exported as a keyring file, where libostree looks.
    func makeGnuPGHome() throws -> (home: String, fingerprint: String) {
        try TestSupport.require(tool: "gpg")
        try TestSupport.require(tool: "ostree")
        let home = dir + "/gnupg"
        try TestSupport.sh("mkdir -m 700 '\(home)'")
        gnupgHome = home
        let env = ["GNUPGHOME": home]
        let gen = try TestSupport.run("gpg", ["--batch", "--passphrase", "", "--quick-gen-key", "Cairn Test <cairn@example.com>", "ed25519", "sign", "never"], environment: env)
        XCTAssertEqual(gen.status, 0, gen.stderr)
        let list = try TestSupport.run("gpg", ["--list-keys", "--with-colons"], environment: env).stdout
        let fpr = try XCTUnwrap(list.split(separator: "\n").first { $0.hasPrefix("fpr:") }?.split(separator: ":", omittingEmptySubsequences: false)[9])
        try TestSupport.sh("GNUPGHOME='\(home)' gpg --export > '\(home)/trusted.gpg'")
        return (home, String(fpr))
    }

    func testOstreeGPGSignatureVerifiesWithCairn() throws {
        let (home, fpr) = try makeGnuPGHome()
        let c = try commit()
        try ostree(["gpg-sign", "--repo=\(repo)", "--gpg-homedir=\(home)", c, fpr])
        let v = try cairn(["verify", "--repo", repo, "os", "--gpg-homedir", home])
        XCTAssertTrue(v.stdout.contains("Good GPG signature from \"Cairn Test <cairn@example.com>\" (key \(fpr))"), v.stdout)
        let sigs = try XCTUnwrap(try showJSON(c)["signatures"] as? [String: Any])
        XCTAssertEqual(sigs["gpgCount"] as? Int, 1)
        XCTAssertEqual(sigs["gpgKeys"] as? [String], [fpr])
        // Without the public key: refused with the reason.
        try TestSupport.sh("mkdir '\(dir)/nokeys'")
        try assertRefused(["verify", "--repo", repo, "os", "--gpg-homedir", dir + "/nokeys"], "GPG key \(fpr) is not in the keyrings")
    }

    func testCairnGPGSignatureIsGoodForOstree() throws {
        let (home, fpr) = try makeGnuPGHome()
        let k = try keygen("k")
        // Both kinds on one commit, at commit time; then `cairn sign`.
        let c = try commit(["--sign-key", k.secret, "--gpg-sign", fpr, "--gpg-homedir", home])
        var shown = try ostree(["show", "--repo=\(repo)", "--gpg-homedir=\(home)", c])
        XCTAssertTrue(shown.contains("Good signature from \"Cairn Test <cairn@example.com>\""), shown)
        let c2 = try commit(["-m", "another commit"], branch: "other")
        try cairn(["sign", "--repo", repo, "other", "--gpg-key", fpr, "--gpg-homedir", home])
        shown = try ostree(["show", "--repo=\(repo)", "--gpg-homedir=\(home)", c2])
        XCTAssertTrue(shown.contains("Good signature"), shown)
        // The ed25519 signature survived the GPG one, and each verifies.
        try cairn(["verify", "--repo", repo, "os", "--keys", k.pub])
        try cairn(["verify", "--repo", repo, "os", "--gpg-homedir", home])
        let text = try cairn(["show", "--repo", repo, "os"]).stdout
        XCTAssertTrue(text.contains("Signatures:  1 ed25519, 1 GPG") && text.contains("gpg #0: key \(fpr)"), text)
        // No ed25519 signature on the other commit, and no trusted GPG key: both reasons.
        try assertRefused(["verify", "--repo", repo, "other", "--keys", k.pub], "commit has no ed25519 signature")
    }
}

private extension Data {
    init?(hex: String) {
        var bytes: [UInt8] = []
        var it = hex.makeIterator()
        while let a = it.next() {
            guard let b = it.next(), let v = UInt8(String([a, b]), radix: 16) else { return nil }
            bytes.append(v)
        }
        self.init(bytes)
    }
}

final class GLibPrintedByteArraysTests: XCTestCase {
    func testBothForms() {
        XCTAssertEqual(glibPrintedByteArrays("[[byte 0x01, 0xff, 0x10], b'A\\001\\\\\\n']"), [[0x01, 0xff, 0x10], [0x41, 0x01, 0x5c, 0x0a, 0x00]])
        XCTAssertEqual(glibPrintedByteArrays("[b'\\332F/u']\n"), [[0o332, 0x46, 0x2f, 0x75, 0x00]])
        XCTAssertEqual(glibPrintedByteArrays("[[byte 0xde, 0xad]]"), [[0xde, 0xad]])
    }
}
