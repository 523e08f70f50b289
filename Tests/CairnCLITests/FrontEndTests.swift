import CairnTestSupport
import Foundation
import XCTest

/// The `cairn` front end answers `status`, `image digest`, `image create
/// --from-dir` and `--version` itself, reading the sysroot without libostree; cairn-full does the rest.
final class FrontEndTests: SysrootTestCase {
    func full(_ args: [String], expect status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try TestSupport.run(try TestSupport.executable("cairn-full"), args)
        XCTAssertEqual(r.status, status, "cairn-full \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r
    }

    func testLoadsNoLibostreeGLibGpgmeLibarchiveOrFoundation() throws {
        let libraries = try TestSupport.sh("ldd '\(cairnPath)'")
        for name in ["libostree", "libglib", "libgio", "libgpgme", "libarchive", "Foundation", "libcurl"] {
            XCTAssertFalse(libraries.contains(name), "the front end links \(name):\n\(libraries)")
        }
        XCTAssertTrue(try TestSupport.sh("ldd '\(try TestSupport.executable("cairn-full"))'").contains("libostree"))
    }

    func testStatusAgreesWithLibostreeAndWithCairnFull() throws {
        try cairn(["keygen", "--output", dir + "/vendor"])
        try deployFirstVersion()
        let v2 = try commit("2.0", extra: "", ["--sign-key", dir + "/vendor.secret"])
        try cairn(["deploy", "--sysroot", sys, "os/x", "--karg", "quiet"])
        try cairn(["pin", "--sysroot", sys, "1"])
        try cairn(["trust", "add", "--sysroot", sys, dir + "/vendor.pub"])
        let st = try status()
        XCTAssertEqual(st.count, 2)
        XCTAssertEqual(st[0]["checksum"] as? String, v2)

        for row in st {
            let c = try XCTUnwrap(row["checksum"] as? String)
            // What libostree reads of the same commit.
            let version = try TestSupport.sh("ostree show --repo='\(repo)' --print-metadata-key=version \(c)").trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertEqual("'\(row["version"] as? String ?? "")'", version)
            let digest = glibPrintedByteArrays(try TestSupport.sh("ostree show --repo='\(repo)' --print-metadata-key=ostree.composefs.digest.v0 \(c)"))
            XCTAssertEqual(row["composefsDigest"] as? String, digest.first.map { $0.map { String(format: "%02x", $0) }.joined() })
            let signed = (row["signatures"] as? [String: Int])?["ed25519"]
            let sigs = try TestSupport.sh("ostree show --repo='\(repo)' --print-detached-metadata-key=ostree.sign.ed25519 \(c) 2>/dev/null || true")
            XCTAssertEqual(signed, glibPrintedByteArrays(sigs).count, sigs)
        }
        XCTAssertEqual(st[0]["verification"] as? String, "verified")
        XCTAssertTrue((st[1]["verification"] as? String)?.hasPrefix("not verified: ") == true, "\(st[1])")
        XCTAssertEqual(st[1]["pinned"] as? Bool, true)
        XCTAssertEqual(st[0]["kernelArguments"] as? [String], ["quiet"])

        // The front end and cairn-full print the same, byte for byte, whatever the spelling of the options.
        for args in [["status", "--sysroot", sys], ["status", "--json", "--sysroot", sys], ["status", "--sysroot=\(sys)", "--keys", dir + "/vendor.pub"],
                     ["status", "--keys=\(dir)/vendor.pub", "--json", "--sysroot", sys]] {
            let a = try cairn(args), b = try full(args)
            XCTAssertEqual(a.stdout, b.stdout, args.joined(separator: " "))
            XCTAssertEqual(a.stderr, b.stderr, args.joined(separator: " "))
        }
        let text = try cairn(["status", "--sysroot", sys]).stdout
        XCTAssertTrue(text.contains("\n  0: os \(v2).0 (default)\n") || text.hasPrefix("  0: os \(v2).0 (default)\n"), text)
        XCTAssertTrue(text.contains("    Trust: Good ed25519 signature #0 by trusted key"), text)

        // A tampered commit object: a signature that verifies does not make it verified.
        let object = repo + "/objects/\(v2.prefix(2))/\(v2.dropFirst(2)).commit"
        try TestSupport.sh("chmod u+w '\(object)' && printf 'x' >> '\(object)'")
        let tampered = try status()
        XCTAssertTrue((tampered[0]["verification"] as? String)?.contains("not its checksum") == true, "\(tampered[0])")
        XCTAssertEqual(try cairn(["status", "--sysroot", sys]).stdout, try full(["status", "--sysroot", sys]).stdout)
    }

    func testWhatTheFrontEndDoesNotRecogniseGoesToCairnFull() throws {
        try deployFirstVersion()
        let help = try cairn(["status", "--help"]).stdout
        XCTAssertTrue(help.contains("USAGE: cairn status") && help.contains("--json"), help)
        let bad = try cairn(["status", "--sysroot", sys, "--bogus"], expect: 2)
        XCTAssertTrue(bad.stderr.hasPrefix("cairn: error: Unknown option '--bogus'"), bad.stderr)
        let missing = try cairn(["status", "--sysroot"], expect: 2)
        XCTAssertTrue(missing.stderr.hasPrefix("cairn: error: "), missing.stderr)
        XCTAssertTrue(try cairn(["image", "digest"], expect: 2).stderr.contains("Missing expected argument '<file> ...'"))
        XCTAssertEqual(try cairn(["--version"]).stdout, try full(["--version"]).stdout)
        // Other commands run in cairn-full.
        XCTAssertTrue(try cairn(["refs", "--repo", repo]).stdout.contains("os/x"))

        // image digest: the same lines both ways, one file or several, and the same error naming the file.
        let a = dir + "/a", empty = dir + "/empty"
        try Data(repeating: 7, count: 3 << 20).write(to: URL(fileURLWithPath: a))
        FileManager.default.createFile(atPath: empty, contents: Data())
        XCTAssertEqual(try cairn(["image", "digest", empty]).stdout, "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95\n")
        XCTAssertEqual(try cairn(["image", "digest", a, empty]).stdout, try full(["image", "digest", a, empty]).stdout)
        let gone = try cairn(["image", "digest", a, dir + "/missing"], expect: 1)
        XCTAssertEqual(gone.stderr, try full(["image", "digest", a, dir + "/missing"], expect: 1).stderr)
        XCTAssertTrue(gone.stderr.hasPrefix("cairn: error: hashing \(dir)/missing: "), gone.stderr)
    }

    /// `image create --from-dir`: the front end, alone in a folder (so that
    /// it cannot hand over), writes the bytes, digest store, digest lines
    /// and errors cairn-full writes, whatever the options.
    func testImageCreateFromDirectoryIsTheFrontEndsAndTheSame() throws {
        let alone = dir + "/alone"
        try FileManager.default.createDirectory(atPath: alone, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: cairnPath, toPath: alone + "/cairn")
        let tree = dir + "/tree"
        try TestSupport.sh("""
            mkdir -p '\(tree)/usr/bin' '\(tree)/etc/empty' && printf 'small' > '\(tree)/etc/hostname' \
            && head -c 300000 /dev/urandom > '\(tree)/usr/bin/big' && cp '\(tree)/usr/bin/big' '\(tree)/usr/bin/copy' \
            && ln '\(tree)/usr/bin/big' '\(tree)/usr/bin/link' && ln -s ../usr/bin/big '\(tree)/etc/alias' \
            && : > '\(tree)/etc/zero' && setfattr -n user.note -v hi '\(tree)/etc/hostname' \
            && mkfifo '\(tree)/etc/fifo' && touch -d @1700000000 '\(tree)/usr/bin/big'
            """)
        func listing(_ folder: String) throws -> String {
            try TestSupport.sh("cd '\(folder)' && find . -printf '%p %s %m\\n' | sort")
        }
        let variants: [[String]] = [
            [], ["--use-epoch"], ["--digest-store", "STORE"], ["--digest-store=STORE", "--threads", "1", "--print-digest"],
            ["--skip-xattrs", "--max-version=0"], ["--user-xattrs", "--min-version", "1"], ["--skip-devices", "--threads=2"],
        ]
        for (k, v) in variants.enumerated() {
            var outputs: [String] = []
            for (who, program) in [("front", alone + "/cairn"), ("full", try TestSupport.executable("cairn-full"))] {
                let store = dir + "/store-\(who)-\(k)", image = dir + "/\(who)-\(k).cfs"
                let args = ["image", "create"] + v.map { $0.replacingOccurrences(of: "STORE", with: store) } + ["--from-dir", tree, image]
                let r = try TestSupport.run(program, args)
                XCTAssertEqual(r.status, 0, "\(who) \(args): \(r.stderr)")
                let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
                outputs.append("\(r.stdout)|\(r.stderr)|\(bytes.base64EncodedString())|" + (v.contains { $0.contains("STORE") } ? try listing(store) : ""))
            }
            XCTAssertEqual(outputs[0], outputs[1], "image create \(v)")
            XCTAssertFalse(outputs[0].contains(".tmp"), "a temporary file left in the store: \(v)")
            if v.contains("--print-digest") {
                XCTAssertEqual(outputs[0].prefix(65), try TestSupport.sh("fsverity digest --compact '\(dir)/front-\(k).cfs'").prefix(65))
            }
        }
        // To stdout (the digest then on stderr), and the digest alone.
        let cairnAlone = alone + "/cairn", full = try TestSupport.executable("cairn-full")
        for args in [["--print-digest", "-"], ["--print-digest-only"]] {
            let a = try TestSupport.run(cairnAlone, ["image", "create", "--from-dir", tree] + args)
            let b = try TestSupport.run(full, ["image", "create", "--from-dir", tree] + args)
            XCTAssertEqual(a.status, 0, a.stderr)
            XCTAssertEqual(a.stdoutData, b.stdoutData, "\(args)")
            XCTAssertEqual(a.stderr, b.stderr, "\(args)")
        }
        XCTAssertEqual(try TestSupport.run(cairnAlone, ["image", "create", "--from-dir", tree, "--print-digest-only"]).stdout,
                       try TestSupport.run(cairnAlone, ["image", "create", "--from-dir", tree, "--print-digest", dir + "/again.cfs"]).stdout)
        // The same error, naming the image and the missing source.
        let missing = ["image", "create", "--from-dir", dir + "/nothing", dir + "/x.cfs"]
        let a = try TestSupport.run(cairnAlone, missing), b = try TestSupport.run(full, missing)
        XCTAssertEqual(a.status, 1)
        XCTAssertEqual(a.stderr, b.stderr)
        XCTAssertTrue(a.stderr.hasPrefix("cairn: error: creating image \(dir)/x.cfs: ") && a.stderr.contains("nothing"), a.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.cfs"))
        // What cairn-full refuses, it refuses for the front end too (handed over).
        for bad in [["--from-dir", tree], ["--from-dir", tree, "--threads", "0", dir + "/y.cfs"], ["--from-dir", tree, "--max-version", "2", dir + "/y.cfs"],
                    ["--from-dir", tree, "--print-digest-only", dir + "/y.cfs"], ["--from-dump", dir + "/nothing", "--use-epoch", dir + "/y.cfs"]] {
            let r = try TestSupport.run(cairnPath, ["image", "create"] + bad)
            XCTAssertNotEqual(r.status, 0, "\(bad)")
            XCTAssertEqual(r.stderr, try TestSupport.run(full, ["image", "create"] + bad).stderr, "\(bad)")
            XCTAssertTrue(r.stderr.hasPrefix("cairn: error: "), r.stderr)
            // Alone, the front end could only have handed these over.
            XCTAssertTrue(try TestSupport.run(cairnAlone, ["image", "create"] + bad).stderr.contains("cairn-full"), "\(bad)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/y.cfs"))
    }
}
