import CairnTestSupport
import Foundation
import XCTest

/// `cairn summary` and `cairn static-delta` against Debian's `ostree` (which
/// reads and writes the same files) and Python's `cryptography` (an
/// independent ed25519 checker).
final class ServeTests: CairnTestCase {
    override var scratchName: String { "cairn-serve" }
    var repo: String { dir + "/repo" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        try TestSupport.require(tool: "ostree")
        try TestSupport.sh("mkdir -p '\(dir)/src/usr/bin' && printf 'hello\\n' > '\(dir)/src/usr/bin/hello' && head -c 150000 /dev/urandom > '\(dir)/src/usr/bin/big'")
        try cairn(["init", "--repo", repo, "--mode", "archive"])
    }

    @discardableResult
    func ostree(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try TestSupport.run("ostree", args)
        XCTAssertEqual(r.status, 0, "ostree \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    /// Commits the source tree (changed a little each time) to `branch`.
    func commit(_ branch: String = "os/x86_64", _ extra: [String] = []) throws -> String {
        try TestSupport.sh("date +%s%N >> '\(dir)/src/usr/bin/hello'")
        return try cairn(["commit", "--repo", repo, "-b", branch, "-s", "subject"] + extra + [dir + "/src"]).lastLine
    }

    func keygen(_ name: String) throws -> (secret: String, pub: String, base64: String) {
        let r = try cairn(["keygen", "--output", dir + "/" + name])
        return (dir + "/\(name).secret", dir + "/\(name).pub", r.lastLine)
    }

    func viewJSON(_ extra: [String] = [], repo r: String? = nil, expect status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let out = try cairn(["summary", "--view", "--json", "--repo", r ?? repo] + extra, expect: status, file: file, line: line).stdoutData
        return try XCTUnwrap(JSONSerialization.jsonObject(with: out) as? [String: Any], file: file, line: line)
    }

    /// What a failed command may not change: refs, objects, deltas, the
    /// summary files, and anything staged under tmp/.
    func snapshot(_ r: String) throws -> String {
        try TestSupport.sh("cd '\(r)' && { find refs objects deltas delta-indexes -type f 2>/dev/null | sort | xargs -r sha256sum; ls summary* 2>/dev/null; find tmp -mindepth 2 2>/dev/null; sha256sum config; }")
    }

    /// libostree's folder of a delta: modified base64 of the checksums.
    func folderName(_ name: String) -> String {
        func b64(_ hex: String) -> String {
            var bytes: [UInt8] = []
            var i = hex.startIndex
            while i < hex.endIndex { let j = hex.index(i, offsetBy: 2); bytes.append(UInt8(hex[i..<j], radix: 16)!); i = j }
            return Data(bytes).base64EncodedString().replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        }
        let parts = name.split(separator: "-").map { b64(String($0)) }
        if parts.count == 1 { return "deltas/" + parts[0].prefix(2) + "/" + parts[0].dropFirst(2) }
        return "deltas/" + parts[0].prefix(2) + "/" + parts[0].dropFirst(2) + "-" + parts[1]
    }

    /// The ed25519 signatures in a summary.sig, as GLib reads the a{sv}.
    func glibSignatures(_ path: String) throws -> [String] {
        let helper = try GLibHelper.path()
        let printed = try TestSupport.run(helper, ["print", "a{sv}", path])
        XCTAssertEqual(printed.status, 0, printed.stderr)
        XCTAssertTrue(printed.stdout.hasPrefix("normal\n"), printed.stdout)
        XCTAssertTrue(printed.stdout.contains("'ostree.sign.ed25519'"), printed.stdout)
        return glibPrintedByteArrays(printed.stdout).filter { $0.count == 64 }.map { $0.map { String(format: "%02x", $0) }.joined() }
    }

    // MARK: The summary, both ways

    func testOstreeReadsCairnSummary() throws {
        let os = try commit()
        let app = try commit("apps/editor", ["--add-metadata-string", "version=2.1"])
        let k = try keygen("k")
        let update = try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret, "--expires", "30d"])
        XCTAssertTrue(update.stdout.contains("2 ref(s), 0 static delta(s)"), update.stdout)
        XCTAssertTrue(update.stdout.contains("Signed summary with ed25519 key \(k.base64)"), update.stdout)

        let view = try ostree(["summary", "--view", "--repo=\(repo)"])
        let refs = try cairn(["refs", "--repo", repo, "--commits"]).stdout
        XCTAssertEqual(refs, "apps/editor \(app)\nos/x86_64 \(os)\n")
        for (name, c) in [("apps/editor", app), ("os/x86_64", os)] {
            XCTAssertTrue(view.contains("* \(name)\n    Latest Commit ("), view)
            XCTAssertTrue(view.contains("\n      \(c)\n"), view)
        }
        XCTAssertTrue(view.contains("Version (ostree.commit.version): 2.1\n"), view)
        XCTAssertLessThan(try XCTUnwrap(view.range(of: "* apps/editor")).lowerBound, try XCTUnwrap(view.range(of: "* os/x86_64")).lowerBound)

        // Our reading of it agrees with ostree's, dates included.
        let json = try viewJSON(["--keys", k.pub])
        let ours = try XCTUnwrap(json["refs"] as? [[String: Any]])
        XCTAssertEqual(ours.map { "\($0["name"]!) \($0["commit"]!)\n" }.joined(), refs)
        XCTAssertEqual(ours[0]["version"] as? String, "2.1")
        for key in ["lastModified", "expires"] {
            let date = try XCTUnwrap(json[key] as? String)
            let label = key == "expires" ? "Expires (ostree.summary.expires)" : "Last-Modified (ostree.summary.last-modified)"
            XCTAssertTrue(view.contains("\(label): \(date.dropLast())+00\n"), "\(date) in \(view)")
        }
        let formatter = ISO8601DateFormatter()
        let expires = try XCTUnwrap(formatter.date(from: try XCTUnwrap(json["expires"] as? String)))
        let modified = try XCTUnwrap(formatter.date(from: try XCTUnwrap(json["lastModified"] as? String)))
        XCTAssertEqual(expires.timeIntervalSince(modified), 30 * 86400, accuracy: 2)
        XCTAssertEqual(json["expired"] as? Bool, false)
        XCTAssertEqual(json["verification"] as? String, "verified")
        XCTAssertEqual(json["verifiedBy"] as? String, "Good ed25519 signature #0 by trusted key \(k.base64)")
        XCTAssertEqual(json["mode"] as? String, "archive-z2")
    }

    func testCairnReadsOstreeSummary() throws {
        _ = try commit()
        _ = try commit("b/two")
        // Not "c": ostree rev-parse takes a hex name for a checksum prefix.
        try ostree(["commit", "--repo=\(repo)", "-b", "zed", "-s", "by ostree", "--add-metadata-string=version=9", dir + "/src"])
        try ostree(["summary", "-u", "--repo=\(repo)"])
        let json = try viewJSON()
        let refs = try XCTUnwrap(json["refs"] as? [[String: Any]])
        let names = try ostree(["refs", "--repo=\(repo)"]).split(separator: "\n").map(String.init).sorted()
        XCTAssertEqual(refs.map { $0["name"] as? String }, names)
        for r in refs {
            let name = try XCTUnwrap(r["name"] as? String)
            XCTAssertEqual(r["commit"] as? String, try ostree(["rev-parse", "--repo=\(repo)", name]).trimmingCharacters(in: .newlines))
        }
        XCTAssertEqual(refs.first { $0["name"] as? String == "zed" }?["version"] as? String, "9")
        let view = try ostree(["summary", "--view", "--repo=\(repo)"])
        let modified = try XCTUnwrap(json["lastModified"] as? String)
        XCTAssertTrue(view.contains("Last-Modified (ostree.summary.last-modified): \(modified.dropLast())+00\n"), view)
        XCTAssertTrue(json["expires"] is NSNull)
        let sigs = try XCTUnwrap(json["signatures"] as? [String: Any])
        XCTAssertEqual(sigs["file"] as? Bool, false)
        let text = try cairn(["summary", "--view", "--repo", repo]).stdout
        XCTAssertTrue(text.contains("Expires:       never\n") && text.contains("Signatures:  none (no summary.sig)\n"), text)
    }

    // MARK: summary.sig

    func testSummarySignatureVerifiesWithPythonCryptography() throws {
        try TestSupport.require(tool: "python3")
        _ = try commit()
        let a = try keygen("a"), b = try keygen("b")
        try cairn(["summary", "--update", "--repo", repo, "--sign-key", a.secret, "--sign-key", b.secret])
        let sigs = try glibSignatures(repo + "/summary.sig")
        XCTAssertEqual(sigs.count, 2)
        let script = """
            import base64, sys
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
            data = open(sys.argv[1], 'rb').read()
            for pub, sig in zip(sys.argv[2::2], sys.argv[3::2]):
                Ed25519PublicKey.from_public_bytes(base64.b64decode(open(pub).read().strip())).verify(bytes.fromhex(sig), data)
            print('ok')
            """
        let r = try TestSupport.run("python3", ["-c", script, repo + "/summary", a.pub, sigs[0], b.pub, sigs[1]])
        if r.stderr.contains("No module named 'cryptography'") { throw XCTSkip("python3-cryptography missing") }
        XCTAssertEqual(r.stdout, "ok\n", r.stderr)
        // And the wrong pairing fails for Python too: each signature is its key's.
        let wrong = try TestSupport.run("python3", ["-c", script, repo + "/summary", a.pub, sigs[1]])
        XCTAssertNotEqual(wrong.status, 0)

        let view = try cairn(["summary", "--view", "--repo", repo, "--keys", b.pub]).stdout
        XCTAssertTrue(view.contains("Signatures:  2 ed25519, 0 GPG\n"), view)
        XCTAssertTrue(view.contains("ed25519 signature #0: no trusted key verifies it\n"), view)
        XCTAssertTrue(view.contains("ed25519 signature #1: good signature by trusted key \(b.base64)\n"), view)
        XCTAssertTrue(view.contains("Summary verified (it does not expire)\n"), view)
    }

    func testPythonSignatureVerifiesWithCairn() throws {
        try TestSupport.require(tool: "python3")
        _ = try commit()
        try cairn(["summary", "--update", "--repo", repo])
        // An independent signer: raw Ed25519 over the summary's bytes, and
        // summary.sig serialized by hand (GVariant specification).
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/Scripts/ed25519_sign.py").path
        let r = try TestSupport.run("python3", [script, repo + "/summary", repo + "/summary.sig", dir + "/py.pub"])
        if r.stderr.contains("No module named 'cryptography'") { throw XCTSkip("python3-cryptography missing") }
        XCTAssertEqual(r.status, 0, r.stderr)
        let view = try cairn(["summary", "--view", "--repo", repo, "--keys", dir + "/py.pub"]).stdout
        XCTAssertTrue(view.contains("Good ed25519 signature #0 by trusted key \(r.lastLine)\n"), view)
        XCTAssertEqual(try glibSignatures(repo + "/summary.sig").count, 1)
    }

    func assertRefused(_ args: [String], _ reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try cairn(args, expect: 1, file: file, line: line)
        assertOneLineError(r, contains: reason, file: file, line: line)
    }

    func testRefusalReasons() throws {
        let os = try commit()
        let k = try keygen("k"), other = try keygen("other")
        try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret])
        let view = ["summary", "--view", "--repo", repo, "--keys", k.pub]
        try cairn(view)
        let summary = repo + "/summary", sig = repo + "/summary.sig"
        let goodSummary = try Data(contentsOf: URL(fileURLWithPath: summary)), goodSig = try Data(contentsOf: URL(fileURLWithPath: sig))

        // A byte of the ref's commit checksum: still a summary, no longer the signed one.
        var altered = goodSummary
        let checksum = Data((0..<32).map { UInt8(os.dropFirst($0 * 2).prefix(2), radix: 16)! })
        altered[try XCTUnwrap(altered.range(of: checksum)).lowerBound + 7] ^= 0x01
        try altered.write(to: URL(fileURLWithPath: summary))
        try assertRefused(view, "none of the 1 ed25519 signature(s) in summary.sig verifies the summary with a trusted key")
        // A framing byte: the signature check still comes first.
        altered = goodSummary
        altered[altered.count - 1] ^= 0x01
        try altered.write(to: URL(fileURLWithPath: summary))
        try assertRefused(view, "none of the 1 ed25519 signature(s) in summary.sig verifies")
        try goodSummary.write(to: URL(fileURLWithPath: summary))
        try cairn(view)

        // A byte of the signature, then of summary.sig's framing.
        var badSig = goodSig
        badSig[30] ^= 0x01  // inside the signature (the key name and its padding take 24 bytes)
        try badSig.write(to: URL(fileURLWithPath: sig))
        try assertRefused(view, "none of the 1 ed25519 signature(s) in summary.sig verifies")
        badSig = goodSig
        badSig[badSig.count - 1] ^= 0x01
        try badSig.write(to: URL(fileURLWithPath: sig))
        try assertRefused(view, "summary.sig is corrupt")
        XCTAssertTrue(try cairn(["summary", "--view", "--repo", repo]).stdout.contains("Signatures:  summary.sig is corrupt"))
        try goodSig.write(to: URL(fileURLWithPath: sig))

        try assertRefused(["summary", "--view", "--repo", repo, "--keys", other.pub], "none of the 1 ed25519 signature(s) in summary.sig verifies")
        try assertRefused(["summary", "--view", "--repo", repo, "--keys", k.pub, "--keys", other.pub, "--revoked-keys", k.pub],
                          "summary is signed only by revoked key \(k.base64)")
        try assertRefused(["summary", "--view", "--repo", repo, "--keys", k.pub, "--revoked-keys", k.pub], "no trusted ed25519 key is configured")
        let json = try viewJSON(["--keys", other.pub], expect: 1)
        XCTAssertEqual(json["verification"] as? String, "not verified: none of the 1 ed25519 signature(s) in summary.sig verifies the summary with a trusted key")

        // Unsigned: libostree removes the stale summary.sig, and says nothing is there.
        let unsigned = try cairn(["summary", "--update", "--repo", repo])
        XCTAssertTrue(unsigned.stderr.contains("the summary is not signed"), unsigned.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sig))
        try assertRefused(view, "summary has no signature file (summary.sig), hence no signature")
        // Debian's ostree removes ours too when it regenerates.
        try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret])
        try ostree(["summary", "-u", "--repo=\(repo)"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: sig))
    }

    func testExpiredSummaryIsReportedExpired() throws {
        _ = try commit()
        let k = try keygen("k")
        try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret, "--expires", "1s"])
        Thread.sleep(forTimeInterval: 2.2)
        try assertRefused(["summary", "--view", "--repo", repo, "--keys", k.pub], "summary expired at ")
        let text = try cairn(["summary", "--view", "--repo", repo]).stdout
        XCTAssertTrue(text.contains(" (expired)\n"), text)
        let json = try viewJSON(["--keys", k.pub], expect: 1)
        XCTAssertEqual(json["expired"] as? Bool, true)
        XCTAssertTrue((json["verification"] as? String ?? "").hasPrefix("not verified: summary expired at "), "\(json)")
        // ostree reads the expiry but does not enforce it.
        XCTAssertTrue(try ostree(["summary", "--view", "--repo=\(repo)"]).contains("Expires (ostree.summary.expires): "))
    }

    /// Web servers tell clients whether the summary changed from whole-second
    /// mtimes (and, in nginx's ETag, the size, which a signature file's never
    /// changes): an update within the second of the last one must still move
    /// both files' mtimes forward.
    func testSummaryRewrittenWithinASecondStillLooksNewer() throws {
        _ = try commit()
        let k = try keygen("k")
        func seconds() throws -> [Int] {
            try ["summary", "summary.sig"].map { ((try FileManager.default.attributesOfItem(atPath: repo + "/" + $0))[.modificationDate] as! Date).timeIntervalSince1970 }.map { Int($0.rounded(.down)) }
        }
        try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret])
        var last = try seconds()
        for _ in 0..<3 {
            _ = try commit()
            try cairn(["summary", "--update", "--repo", repo, "--sign-key", k.secret])
            let now = try seconds()
            XCTAssertGreaterThan(now[0], last[0], "summary")
            XCTAssertGreaterThan(now[1], last[1], "summary.sig")
            last = now
        }
    }

    func testUsageAndDurationErrorsWriteNothing() throws {
        _ = try commit()
        let k = try keygen("k")
        let before = try snapshot(repo)
        for bad in ["30w", "30", "d", "1.5h", "-1h", "+1h", "0s", "030d", "1h30m", " 1h", "1H", "１h", "99999999999999d"] {
            let r = try cairn(["summary", "--update", "--repo", repo, "--expires=\(bad)"], expect: 2).withoutUsageHint
            assertOneLineError(r, contains: "--expires '\(bad)' is not a duration")
        }
        assertOneLineError(try cairn(["summary", "--update", "--repo", repo, "--expires", "36501d"], expect: 2).withoutUsageHint, contains: "longer than 100 years")
        for (args, text) in [([], "exactly one of --update and --view"), (["--update", "--view"], "exactly one of --update and --view"),
                             (["--view", "--sign-key", k.secret], "--sign-key and --expires go with --update"),
                             (["--update", "--keys", k.pub], "go with --view, not --update"),
                             (["--view", "--revoked-keys", k.pub], "--revoked-keys needs --keys")] {
            assertOneLineError(try cairn(["summary", "--repo", repo] + args, expect: 2).withoutUsageHint, contains: text)
        }
        // A bad key is refused before the summary is regenerated.
        try assertRefused(["summary", "--update", "--repo", repo, "--sign-key", k.pub], "key is 32 bytes, expected 64")
        try assertRefused(["summary", "--view", "--repo", repo], "there is none; make it with 'cairn summary --update'")
        XCTAssertEqual(try snapshot(repo), before)
        for d in ["3600s", "90m", "12h", "30d"] { try cairn(["summary", "--update", "--repo", repo, "--expires", d]) }
    }

    // MARK: Static deltas

    func testCairnDeltasApplyWithOstreeAndAreListedInTheSummary() throws {
        let v1 = try commit()
        let v2 = try commit()
        let empty = try cairn(["static-delta", "generate", "--repo", repo, "--empty", "--to", "os/x86_64^"]).stdout
        XCTAssertTrue(empty.contains("Delta: \(v1)\n"), empty)
        let step = try cairn(["static-delta", "generate", "--repo", repo, "--to", "os/x86_64"]).stdout  // from its parent
        XCTAssertTrue(step.contains("From:  \(v1)\nTo:    \(v2)\nDelta: \(v1)-\(v2)\n"), step)
        XCTAssertTrue(step.contains(" bytes in 2 file(s) (\(repo)/\(folderName("\(v1)-\(v2)")))\n"), "\(folderName("\(v1)-\(v2)")) in \(step)")
        let size = try XCTUnwrap(Int(try XCTUnwrap(step.split(separator: "\n").last?.split(separator: " ")[1])))
        XCTAssertEqual(size, Int(try TestSupport.sh("cat '\(repo)/\(folderName("\(v1)-\(v2)"))'/* | wc -c").trimmingCharacters(in: .whitespacesAndNewlines)))

        let names = Set(["\(v1)", "\(v1)-\(v2)"])
        XCTAssertEqual(Set(try ostree(["static-delta", "list", "--repo=\(repo)"]).split(separator: "\n").map(String.init)), names)
        XCTAssertEqual(try cairn(["static-delta", "list", "--repo", repo]).stdout, names.sorted().joined(separator: "\n") + "\n")

        // Debian's ostree applies them, offline, to a repository with nothing in it.
        let other = dir + "/other"
        try ostree(["init", "--repo=\(other)", "--mode=bare-user"])
        try ostree(["static-delta", "apply-offline", "--repo=\(other)", repo + "/" + folderName(v1)])
        try ostree(["static-delta", "apply-offline", "--repo=\(other)", repo + "/" + folderName("\(v1)-\(v2)")])
        XCTAssertTrue(try ostree(["show", "--repo=\(other)", v2]).hasPrefix("commit \(v2)\n"))
        try ostree(["fsck", "--repo=\(other)"])
        XCTAssertEqual(try ostree(["ls", "--repo=\(other)", "-R", v2]), try ostree(["ls", "--repo=\(repo)", "-R", v2]))

        // summary --update lists both deltas, for cairn and for ostree.
        try cairn(["summary", "--update", "--repo", repo])
        let deltas = try XCTUnwrap(try viewJSON()["staticDeltas"] as? [[String: Any]])
        XCTAssertEqual(Set(deltas.compactMap { $0["name"] as? String }), names)
        let view = try ostree(["summary", "--view", "--repo=\(repo)"])
        for d in deltas {
            let name = try XCTUnwrap(d["name"] as? String)
            let digest = try TestSupport.sh("sha256sum '\(repo)/\(folderName(name))/superblock' | cut -c1-64").trimmingCharacters(in: .newlines)
            XCTAssertEqual(d["superblockSha256"] as? String, digest)
            let bytes = stride(from: 0, to: 64, by: 2).map { "0x" + digest.dropFirst($0).prefix(2) }.joined(separator: ", ")
            XCTAssertTrue(view.contains("'\(name)': <[byte \(bytes)]>"), "\(name) in \(view)")
        }
        XCTAssertEqual(d(deltas, v1)["from"] as? NSNull, NSNull())
        XCTAssertEqual(d(deltas, "\(v1)-\(v2)")["from"] as? String, v1)
        let text = try cairn(["summary", "--view", "--repo", repo]).stdout
        XCTAssertTrue(text.contains("Static deltas: 2\n"), text)

        // One file: parts inline.
        let inline = try cairn(["static-delta", "generate", "--repo", repo, "--from", v1, "--to", v2, "--inline"]).stdout
        XCTAssertTrue(inline.contains(" bytes in 1 file(s) "), inline)
        let third = dir + "/third"
        try ostree(["init", "--repo=\(third)", "--mode=bare-user"])
        try ostree(["static-delta", "apply-offline", "--repo=\(third)", repo + "/" + folderName(v1) + "/superblock"])
        try ostree(["static-delta", "apply-offline", "--repo=\(third)", repo + "/" + folderName("\(v1)-\(v2)")])
        try ostree(["fsck", "--repo=\(third)"])
    }

    private func d(_ deltas: [[String: Any]], _ name: String) -> [String: Any] {
        deltas.first { $0["name"] as? String == name } ?? [:]
    }

    func testOstreeDeltasApplyWithCairn() throws {
        let v1 = try commit()
        let v2 = try commit()
        try ostree(["static-delta", "generate", "--repo=\(repo)", "--empty", "--to=\(v1)"])
        try ostree(["static-delta", "generate", "--repo=\(repo)", "--from=\(v1)", "--to=\(v2)", "--inline"])
        XCTAssertEqual(try cairn(["static-delta", "list", "--repo", repo]).stdout, "\(v1)\n\(v1)-\(v2)\n")
        let target = dir + "/target"
        try cairn(["init", "--repo", target, "--mode", "bare-user"])
        // The step first: its source is missing, so nothing happens.
        let before = try snapshot(target)
        try assertRefused(["static-delta", "apply-offline", "--repo", target, repo + "/" + folderName("\(v1)-\(v2)")],
                          "its source commit \(v1) is not in the repository")
        XCTAssertEqual(try snapshot(target), before)
        var r = try cairn(["static-delta", "apply-offline", "--repo", target, repo + "/" + folderName(v1)])
        XCTAssertEqual(r.stdout, "Applied static delta \(v1)\nCommit: \(v1)\n")
        r = try cairn(["static-delta", "apply-offline", "--repo", target, repo + "/" + folderName("\(v1)-\(v2)") + "/superblock"])
        XCTAssertEqual(r.stdout, "Applied static delta \(v1)-\(v2)\nCommit: \(v2)\n")
        XCTAssertTrue(try ostree(["show", "--repo=\(target)", v2]).hasPrefix("commit \(v2)\n"))
        try ostree(["fsck", "--repo=\(target)"])
        try cairn(["fsck", "--repo", target])
        XCTAssertEqual(try ostree(["ls", "--repo=\(target)", "-R", v2]), try ostree(["ls", "--repo=\(repo)", "-R", v2]))
    }

    func testBadDeltaInputChangesNothing() throws {
        let v1 = try commit()
        let v2 = try commit()
        _ = try commit("solo/ref")
        // Options and revisions.
        assertOneLineError(try cairn(["static-delta", "generate", "--repo", repo, "--from", v1, "--empty", "--to", v2], expect: 2).withoutUsageHint,
                           contains: "--from and --empty exclude each other")
        let before = try snapshot(repo)
        try assertRefused(["static-delta", "generate", "--repo", repo, "--to", "no/such/ref"], "unknown ref or commit 'no/such/ref'")
        try assertRefused(["static-delta", "generate", "--repo", repo, "--from", "nope", "--to", v2], "unknown ref or commit 'nope'")
        try assertRefused(["static-delta", "generate", "--repo", repo, "--to", "solo/ref"], "the commit has no parent; give --from REV or --empty")
        XCTAssertEqual(try snapshot(repo), before)

        // Corrupt deltas, applied to a repository that has the source commit.
        try cairn(["static-delta", "generate", "--repo", repo, "--empty", "--to", v1])
        try cairn(["static-delta", "generate", "--repo", repo, "--from", v1, "--to", v2])
        try cairn(["static-delta", "generate", "--repo", repo, "--empty", "--to", v2, "--inline"])  // 150 kB of part inline
        try TestSupport.sh("cp -r '\(repo)/\(folderName(v2))' '\(dir)/inline'")
        try cairn(["static-delta", "generate", "--repo", repo, "--empty", "--to", v2])
        let target = dir + "/target"
        try cairn(["init", "--repo", target, "--mode", "bare-user"])
        try cairn(["static-delta", "apply-offline", "--repo", target, repo + "/" + folderName(v1)])
        try TestSupport.sh("""
            set -e
            cp -r '\(repo)/\(folderName(v2))' '\(dir)/parts'
            cp -r '\(repo)/\(folderName(v2))' '\(dir)/truncated'
            cp -r '\(repo)/\(folderName(v2))' '\(dir)/missing'
            truncate -s -20 '\(dir)/truncated/superblock'
            rm '\(dir)/missing/0'
            printf 'not a delta' > '\(dir)/junk'
            """)
        func flip(_ path: String) throws {
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            data[data.count / 2] ^= 0x01
            try data.write(to: URL(fileURLWithPath: path))
        }
        try flip(dir + "/parts/0")
        try flip(dir + "/inline/superblock")
        let clean = try snapshot(target)
        for (path, reason) in [
            ("parts", "part 0 of the delta (\(dir)/parts/0) is corrupt: its SHA-256 is "),
            ("inline", "the delta is corrupt or does not apply: "),
            ("truncated", "is not a static delta superblock"),
            ("missing", "part 0 of the delta: "),
            ("junk", "\(dir)/junk is not a static delta superblock"),
            ("nowhere", "reading static delta \(dir)/nowhere: No such file or directory"),
        ] {
            try assertRefused(["static-delta", "apply-offline", "--repo", target, dir + "/" + path], reason)
            XCTAssertEqual(try snapshot(target), clean, path)
        }
        // The good ones still apply afterwards, and only they are published.
        try cairn(["static-delta", "apply-offline", "--repo", target, repo + "/" + folderName("\(v1)-\(v2)")])
        try ostree(["fsck", "--repo=\(target)"])
    }
}
