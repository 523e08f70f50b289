import CairnTestSupport
import Foundation
import XCTest

/// Composefs images of commits and files through the `cairn` command, with
/// Debian's `ostree`, `fsverity` and `fsck.erofs` as independent peers.
final class ImageTests: CairnTestCase {
    override var scratchName: String { "cairn-image" }

    func sha256(_ path: String) throws -> String {
        String(try TestSupport.sh("sha256sum '\(path)'").prefix(64))
    }

    /// A real OS tree: copies of this machine's /etc and /usr/sbin, plus odd cases.
    func makeRealTree(_ path: String) throws {
        try TestSupport.sh("""
            set -e
            mkdir -p '\(path)/usr'
            cp -a /usr/sbin '\(path)/usr/sbin'
            cp -a /etc '\(path)/etc'
            find '\(path)' \\( -type c -o -type b -o -type p -o -type s \\) -delete
            : > '\(path)/usr/empty-file'
            printf 'x%.0s' $(seq 5000) > '\(path)/usr/five-thousand'
            ln -s /nonexistent/target '\(path)/usr/dangling'
            """)
    }

    func testCommitRecordsTheDigestOfItsImage() throws {
        try makeRealTree(dir + "/tree")
        try cairn(["init", "--repo", dir + "/r"])
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "os", dir + "/tree"]).lastLine
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try cairn(["show", "--repo", dir + "/r", "--json", c]).stdoutData) as? [String: Any])
        let recorded = try XCTUnwrap(json["composefsDigest"] as? String)
        let printed = try cairn(["image", "create", "--repo", dir + "/r", "--from-commit", c, dir + "/os.cfs", "--print-digest"]).lastLine
        XCTAssertEqual(printed, recorded)
        XCTAssertEqual(try cairn(["image", "digest", dir + "/os.cfs"]).lastLine, recorded)

        // The image is a valid EROFS filesystem.
        if (try? TestSupport.require(tool: "fsck.erofs")) != nil {
            try TestSupport.sh("fsck.erofs '\(dir)/os.cfs'")
        }
        // --no-composefs leaves the key out.
        let plain = try cairn(["commit", "--repo", dir + "/r", "-b", "plain", "--no-composefs", dir + "/tree"]).lastLine
        let plainJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: try cairn(["show", "--repo", dir + "/r", "--json", plain]).stdoutData) as? [String: Any])
        XCTAssertTrue(plainJSON["composefsDigest"] is NSNull)
    }

    /// The image of a commit equals the image of a dump written independently
    /// from `ostree ls` and `fsverity digest` by the rules of spec §17.
    func testFromCommitEqualsDumpBuiltByPeers() throws {
        try TestSupport.require(tool: "ostree")
        try TestSupport.require(tool: "fsverity")
        try makeRealTree(dir + "/tree")
        try cairn(["init", "--repo", dir + "/r"])
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "os", "--no-xattrs", dir + "/tree"]).lastLine
        try cairn(["image", "create", "--repo", dir + "/r", "--from-commit", c, dir + "/commit.cfs"])
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/Scripts/ostree_mode_dump.py").path
        try TestSupport.sh("python3 '\(script)' '\(dir)/r' \(c) '\(dir)/peer.dump'")
        try cairn(["image", "create", "--from-dump", dir + "/peer.dump", dir + "/peer.cfs"])
        XCTAssertEqual(try sha256(dir + "/peer.cfs"), try sha256(dir + "/commit.cfs"),
                       "image from the commit differs from the image of the peers' dump")

        // Round trip: dump of the image, back to the same bytes.
        let dump = try cairn(["image", "dump", dir + "/commit.cfs"]).stdoutData
        try dump.write(to: URL(fileURLWithPath: dir + "/commit.dump"))
        try cairn(["image", "create", "--from-dump", dir + "/commit.dump", dir + "/again.cfs"])
        XCTAssertEqual(try sha256(dir + "/again.cfs"), try sha256(dir + "/commit.cfs"))
        // Stdin and stdout work as files do.
        let piped = try TestSupport.run(cairnPath, ["image", "create", "--from-dump", "-", "-"], stdin: dump)
        XCTAssertEqual(piped.status, 0, piped.stderr)
        XCTAssertEqual(piped.stdoutData, try Data(contentsOf: URL(fileURLWithPath: dir + "/commit.cfs")))

        // Every backing object is in the repository; a removed one is reported.
        let objects = try cairn(["image", "objects", dir + "/commit.cfs"]).stdout.split(separator: "\n")
        XCTAssertGreaterThan(objects.count, 100)
        XCTAssertEqual(try cairn(["image", "missing-objects", "--basedir", dir + "/r/objects", dir + "/commit.cfs"]).stdout, "")
        try TestSupport.sh("mv '\(dir)/r/objects/\(objects[0])' '\(dir)/moved'")
        XCTAssertEqual(try cairn(["image", "missing-objects", "--basedir", dir + "/r/objects", dir + "/commit.cfs"]).stdout, "\(objects[0])\n")
    }

    func testDigestCacheHashesOnlyNewObjects() throws {
        try makeRealTree(dir + "/tree")
        try cairn(["init", "--repo", dir + "/r"])
        let c1 = try cairn(["commit", "--repo", dir + "/r", "-b", "os", dir + "/tree"]).lastLine
        let cache = dir + "/r/cairn/verity-digests"
        let size1 = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: cache)[.size] as? Int)
        XCTAssertEqual(size1 % 72, 0)
        // One new file: one new record.
        try TestSupport.sh("head -c 10000 /dev/urandom > '\(dir)/tree/usr/new-file'")
        try cairn(["commit", "--repo", dir + "/r", "-b", "os", dir + "/tree"])
        let size2 = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: cache)[.size] as? Int)
        XCTAssertEqual(size2 - size1, 72)

        // A torn last record and a corrupted one are ignored, and the digest stays right.
        try TestSupport.sh("printf 'torn' >> '\(cache)' && printf 'X' | dd of='\(cache)' bs=1 seek=40 conv=notrunc status=none")
        try cairn(["init", "--repo", dir + "/fresh"])
        try TestSupport.sh("rm '\(dir)/tree/usr/new-file'")
        let again = try cairn(["commit", "--repo", dir + "/r", "-b", "again", dir + "/tree"]).lastLine
        let fresh = try cairn(["commit", "--repo", dir + "/fresh", "-b", "again", dir + "/tree"]).lastLine
        func digest(_ repo: String, _ c: String) throws -> String? {
            let j = try JSONSerialization.jsonObject(with: try cairn(["show", "--repo", repo, "--json", c]).stdoutData) as? [String: Any]
            return j?["composefsDigest"] as? String
        }
        XCTAssertEqual(try digest(dir + "/r", again), try digest(dir + "/fresh", fresh))
        XCTAssertEqual(try digest(dir + "/r", again), try digest(dir + "/r", c1))
        let size3 = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: cache)[.size] as? Int)
        XCTAssertEqual(size3 % 72, 0, "a writer cuts the torn record off before appending")
    }

    /// The vector of issue 15: the empty file's fs-verity digest, alone and
    /// among other files.
    func testDigestOfAnEmptyFile() throws {
        let expected = "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        try TestSupport.sh(": > '\(dir)/empty' && printf hello > '\(dir)/hello'")
        XCTAssertEqual(try cairn(["image", "digest", dir + "/empty"]).stdout, expected + "\n")
        XCTAssertEqual(try cairn(["image", "digest", dir + "/hello", dir + "/empty"]).stdout,
                       "555b589c26ee43b7a2510e6c67ced9fb3190b6da6e9e683984551f5d77a763de  \(dir)/hello\n\(expected)  \(dir)/empty\n")
        if (try? TestSupport.require(tool: "fsverity")) != nil {
            XCTAssertEqual(try TestSupport.sh("fsverity digest '\(dir)/empty'"), "sha256:\(expected) \(dir)/empty\n")
        }
    }

    func testDigestAgreesWithFsverity() throws {
        try TestSupport.require(tool: "fsverity")
        var files: [String] = []
        for (i, size) in [0, 1, 4095, 4096, 4097, 65536, 1_048_579].enumerated() {
            let path = "\(dir)/f\(i)"
            try TestSupport.sh("head -c \(size) /dev/urandom > '\(path)'")
            files.append(path)
        }
        let ours = try cairn(["image", "digest"] + files).stdout.split(separator: "\n").map { String($0.prefix(64)) }
        for (i, f) in files.enumerated() {
            let theirs = try TestSupport.sh("fsverity digest --compact '\(f)'").trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertEqual(ours[i], theirs, f)
        }
        let missing = try cairn(["image", "digest", dir + "/nope"], expect: 1)
        XCTAssertTrue(missing.stderr.contains(dir + "/nope"))
    }

    /// CFS_PARSE_STRICT (any value, as mkcomposefs reads it): the error names
    /// the line and field and no image is written; unset, the same dump is
    /// accepted.
    func testStrictDumpParsing() throws {
        let lines = "/ 4096 40755 2 0 0 0 0.0 - - -\\n/l 9 120777 1 0 0 0 0.0 target - -\\n"
        try TestSupport.sh("printf '\(lines)' > '\(dir)/sym.dump'")
        for value in ["1", ""] {
            let r = try TestSupport.run(cairnPath, ["image", "create", "--from-dump", dir + "/sym.dump", dir + "/s.cfs"],
                                        environment: ["CFS_PARSE_STRICT": value])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.stderr, "cairn: error: reading dump \(dir)/sym.dump: line 2: SIZE: /l: symlink size 9 does not match the length 6 of its target\n")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/s.cfs"))
        }
        try cairn(["image", "create", "--from-dump", dir + "/sym.dump", dir + "/s.cfs"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/s.cfs"))
    }

    /// --print-digest-only prints what --print-digest prints and writes
    /// nothing; it takes no image argument, as in mkcomposefs.
    func testPrintDigestOnly() throws {
        try TestSupport.sh("mkdir -p '\(dir)/src/d' && printf 'x%.0s' $(seq 9000) > '\(dir)/src/d/big' && echo hi > '\(dir)/src/small'")
        try TestSupport.sh("printf '/ 4096 40755 2 0 0 0 0.0 - - -\\n/a 5 100644 1 0 0 0 0.0 - hello -\\n' > '\(dir)/a.dump'")
        for source in [["--from-dir", dir + "/src"], ["--from-dump", dir + "/a.dump"]] {
            let full = try cairn(["image", "create"] + source + ["--print-digest", dir + "/full.cfs"]).stdout
            let before = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
            let only = try cairn(["image", "create"] + source + ["--print-digest-only"]).stdout
            XCTAssertEqual(only, full)
            XCTAssertEqual(only.count, 65)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), before)
            try cairn(["image", "create"] + source + ["--print-digest-only", dir + "/no.cfs"], expect: 2)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/no.cfs"))
        }
        try cairn(["image", "create", "--from-dump", dir + "/a.dump"], expect: 2)
    }

    /// --threads N: the same image with 1 thread as with the default; N >= 1.
    func testThreads() throws {
        try TestSupport.sh("mkdir -p '\(dir)/src' && for i in $(seq 20); do printf 'file %0200d' $i > '\(dir)/src/f'$i; done")
        try cairn(["image", "create", "--from-dir", dir + "/src", dir + "/default.cfs"])
        try cairn(["image", "create", "--from-dir", dir + "/src", "--threads", "1", "--digest-store", dir + "/store", dir + "/one.cfs"])
        try cairn(["image", "create", "--from-dir", dir + "/src", "--threads=3", dir + "/three.cfs"])
        XCTAssertEqual(try sha256(dir + "/one.cfs"), try sha256(dir + "/default.cfs"))
        XCTAssertEqual(try sha256(dir + "/three.cfs"), try sha256(dir + "/default.cfs"))
        for bad in ["0", "-1", "x"] {
            try cairn(["image", "create", "--from-dir", dir + "/src", "--threads", bad, dir + "/bad.cfs"], expect: 2)
        }
        try TestSupport.sh("printf '/ 4096 40755 2 0 0 0 0.0 - - -\\n' > '\(dir)/r.dump'")
        try cairn(["image", "create", "--from-dump", dir + "/r.dump", "--threads", "2", dir + "/bad.cfs"], expect: 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.cfs"))
    }

    /// image dump and ls --format composefs-info print composefs-info's text
    /// (taken from composefs-info 1.0.8): a hardlink with its target's
    /// xattrs, the root's opaque markers, --filter.
    func testComposefsInfoFormats() throws {
        try TestSupport.sh("""
            printf '/ 4096 40755 2 0 0 0 0.0 - - - user.z=1\\n/f 100 100644 2 0 0 0 0.0 ab/cdef0 - - user.b=2 user.a=1\\n/h 0 @100644 0 0 0 0 0.0 /f - -\\n/w 0 20644 1 0 0 0 0.0 - - -\\n' > '\(dir)/h.dump'
            """)
        try cairn(["image", "create", "--from-dump", dir + "/h.dump", dir + "/h.cfs"])
        XCTAssertEqual(try cairn(["image", "dump", dir + "/h.cfs"]).stdout, """
            / 4096 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=x user.overlay.opaque=x user.z=1
            /f 100 100644 2 0 0 0 0.0 ab/cdef0 - - user.a=1 user.b=2
            /h 100 @100644 2 0 0 0 0.0 /f - - user.a=1 user.b=2
            /w 0 20644 1 0 0 0 0.0 - - -

            """)
        XCTAssertEqual(try cairn(["image", "ls", "--format", "composefs-info", dir + "/h.cfs"]).stdout, "/f\t@ ab/cdef0\n/h\n/w\n")
        XCTAssertEqual(try cairn(["image", "dump", "--filter", "w", dir + "/h.cfs"]).stdout,
                       "/ 4096 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=x user.overlay.opaque=x user.z=1\n/w 0 20644 1 0 0 0 0.0 - - -\n")
        try cairn(["image", "dump", "--filter", "a/b", dir + "/h.cfs"], expect: 2)
        try cairn(["image", "ls", "--filter", "w", dir + "/h.cfs"], expect: 2)
    }

    func testBadImagesAndDumpsAreRefusedWithoutLeftovers() throws {
        try TestSupport.sh("printf '/ 0 40755 2 0 0 0 0.0 - - -\\n/a 5 100644 1 0 0 0 0.0 - hello -\\n/a/b 0 100644 1 0 0 0 0.0 - - -\\n' > '\(dir)/bad.dump'")
        let r = try cairn(["image", "create", "--from-dump", dir + "/bad.dump", dir + "/out.cfs"], expect: 1)
        XCTAssertTrue(r.stderr.contains("bad.dump") && r.stderr.contains("line 3"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out.cfs"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".cairn-tmp") }, [])

        try TestSupport.sh("head -c 8192 /dev/urandom > '\(dir)/garbage.cfs'")
        let g = try cairn(["image", "dump", dir + "/garbage.cfs"], expect: 1)
        XCTAssertTrue(g.stderr.hasPrefix("cairn: error: reading image \(dir)/garbage.cfs"), g.stderr)
        try cairn(["image", "create", "--from-dir", dir, "--from-dump", dir + "/bad.dump", dir + "/x.cfs"], expect: 2)
    }

    /// Mounting (root, this kernel's EROFS and overlayfs, no fs-verity): the
    /// mounted image shows the commit's files, read through the repository.
    func testMountShowsTheCommit() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        try makeRealTree(dir + "/tree")
        try cairn(["init", "--repo", dir + "/r"])
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "os", "--keep-etc", dir + "/tree"]).lastLine
        try cairn(["image", "create", "--repo", dir + "/r", "--from-commit", c, dir + "/os.cfs"])
        try TestSupport.sh("mkdir -p '\(dir)/mnt'")
        let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            set -e
            '\(cairnPath)' image mount --basedir '\(dir)/r/objects' '\(dir)/os.cfs' '\(dir)/mnt'
            diff -r --no-dereference '\(dir)/tree/etc' '\(dir)/mnt/etc'
            diff -r --no-dereference '\(dir)/tree/usr' '\(dir)/mnt/usr'
            test "$(stat -c %a '\(dir)/mnt/etc/shadow')" = "$(stat -c %a '\(dir)/tree/etc/shadow')"
            test -d '\(dir)/mnt/sysroot'
            if touch '\(dir)/mnt/etc/new' 2>/dev/null; then echo writable; exit 1; fi
            umount '\(dir)/mnt'
            """])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    /// `--digest` trusts only the kernel's measurement: this kernel has no
    /// fs-verity, so even the image's own digest is refused, with nothing mounted.
    func testMountWithDigestNeedsImageVerity() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        try makeRealTree(dir + "/tree")
        try cairn(["init", "--repo", dir + "/r"])
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "os", dir + "/tree"]).lastLine
        try cairn(["image", "create", "--repo", dir + "/r", "--from-commit", c, dir + "/os.cfs"])
        let digest = try cairn(["image", "digest", dir + "/os.cfs"]).lastLine
        try TestSupport.sh("mkdir -p '\(dir)/mnt'")
        for d in [digest, String(repeating: "0", count: 64)] {
            let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
                '\(cairnPath)' image mount --basedir '\(dir)/r/objects' --digest \(d) '\(dir)/os.cfs' '\(dir)/mnt'
                echo "status $?"
                grep -c ' \(dir)/mnt ' /proc/self/mountinfo
                """])
            XCTAssertEqual(r.stdout, "status 1\n0\n", r.stderr)
            XCTAssertEqual(r.stderr, "cairn: error: mounting \(dir)/os.cfs on \(dir)/mnt: \(dir)/os.cfs: has no fs-verity, so the kernel cannot check its content; "
                           + "--digest needs fs-verity on the image (fsverity enable, or cairn post-copy for a sysroot)\n")
        }
    }
}

extension ImageTests {
    /// ostree's own test (tests/test-composefs.sh, ostree 2026.4) commits the
    /// tree of its test repository (tests/libtest.sh) with these options and
    /// pins three values: the commit's ostree.composefs.digest.v0, the sha256
    /// of `ostree checkout --composefs` and of `--composefs-noverity`, and the
    /// dump line of /baz/cow. cairn reproduces all of them, for its own
    /// commit and for Debian ostree's commit of the same tree.
    func testUpstreamOstreePinnedValues() throws {
        try TestSupport.sh("""
            set -e
            umask 022
            mkdir -p '\(dir)/files' && cd '\(dir)/files'
            ln -s nosuchfile somelink
            echo first > firstfile
            mkdir baz
            echo moo > baz/cow
            echo mooro > baz/cowro && chmod 600 baz/cowro
            echo alien > baz/saucer
            mkdir baz/deeper
            echo hi > baz/deeper/ohyeah
            echo hix > baz/deeper/ohyeahx && chmod 755 baz/deeper/ohyeahx
            ln -s nonexistent baz/alink
            mkdir baz/another && echo x > baz/another/y
            mkdir baz/sub1
            echo SAME_CONTENT > baz/sub1/duplicate_a
            echo SAME_CONTENT > baz/sub1/duplicate_b
            mkdir baz/sub2 && echo SAME_CONTENT > baz/sub2/duplicate_c
            """)
        let options = ["--owner-uid=0", "--owner-gid=0", "--no-xattrs", "--canonical-permissions"]
        try cairn(["init", "--repo", dir + "/repo", "--mode", "bare-user"])
        let c = try cairn(["commit", "--repo", dir + "/repo", "-b", "test-composefs"] + options + [dir + "/files"]).lastLine
        let recorded = try XCTUnwrap(try JSONSerialization.jsonObject(with: try cairn(["show", "--repo", dir + "/repo", "--json", c]).stdoutData) as? [String: Any])["composefsDigest"] as? String
        XCTAssertEqual(recorded, "be956966c70970ea23b1a8043bca58cfb0d011d490a35a7817b36d04c0210954")
        try cairn(["image", "create", "--repo", dir + "/repo", "--from-commit", c, dir + "/test2-co.cfs"])
        XCTAssertEqual(try sha256(dir + "/test2-co.cfs"), "031fab2c7f390b752a820146dc89f6880e5739cba7490f64024e0c7d11aad7c9")
        let bare = try cairn(["commit", "--repo", dir + "/repo", "-b", "test-composefs-without-meta", "--no-composefs"] + options + [dir + "/files"]).lastLine
        try cairn(["image", "create", "--repo", dir + "/repo", "--from-commit", bare, "--no-verity", dir + "/without-meta-noverity.cfs"])
        XCTAssertEqual(try sha256(dir + "/without-meta-noverity.cfs"), "78f873a76ccfea3ad7c86312ba0e06f8e0bca54ab4912b23871b31caafe59c24")
        if (try? TestSupport.require(tool: "ostree")) != nil {
            // Debian's ostree 2022.7 cannot write the digest itself; the image of its commit is the same.
            let peer = try TestSupport.sh("ostree commit --repo='\(dir)/repo' -b peer \(options.joined(separator: " ")) '\(dir)/files'")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try cairn(["image", "create", "--repo", dir + "/repo", "--from-commit", peer, dir + "/peer.cfs"])
            XCTAssertEqual(try sha256(dir + "/peer.cfs"), "031fab2c7f390b752a820146dc89f6880e5739cba7490f64024e0c7d11aad7c9")
        }
        let dump = try cairn(["image", "dump", dir + "/test2-co.cfs"]).stdout
        XCTAssertTrue(dump.contains("/baz/cow 4 100644 1 0 0 0 0.0 f6/a517d53831a40cff3886a965c70d57aa50797a8e5ea965b2c49cc575a6ff51.file - ebaa23af194a798df610e5fe2bd10725c9c4a3a56a6b62d4d0ee551d4fc4be27\n"), dump)

        // ostree checkout --composefs-noverity: the same line without the digest,
        // and otherwise the same image entry for entry.
        try cairn(["image", "create", "--repo", dir + "/repo", "--from-commit", c, "--no-verity", dir + "/test2-co-noverity.cfs"])
        let noverity = try cairn(["image", "dump", dir + "/test2-co-noverity.cfs"]).stdout
        XCTAssertTrue(noverity.contains("/baz/cow 4 100644 1 0 0 0 0.0 f6/a517d53831a40cff3886a965c70d57aa50797a8e5ea965b2c49cc575a6ff51.file - -\n"), noverity)
        let withoutDigests = dump.split(separator: "\n").map { line -> String in
            var fields = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            if fields.count >= 11 && fields[10] != "-" { fields[10] = "-" }
            return fields.joined(separator: " ")
        }
        XCTAssertEqual(noverity.split(separator: "\n").map(String.init), withoutDigests)
        XCTAssertNotEqual(try sha256(dir + "/test2-co-noverity.cfs"), try sha256(dir + "/test2-co.cfs"))
    }

    /// As ostree checkout --composefs refuses it: an image whose digest is not
    /// the one the commit records is not written (naming the commit and both
    /// digests) unless --no-digest-check; a corrupt object is named.
    func testFromCommitRefusesADigestTheCommitDoesNotRecord() throws {
        try TestSupport.sh("mkdir -p '\(dir)/t/usr' && echo moo > '\(dir)/t/usr/cow' && head -c 9000 /dev/urandom > '\(dir)/t/usr/blob'")
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        let good = try cairn(["commit", "--repo", repo, "-b", "good", dir + "/t"]).lastLine
        let right = try cairn(["image", "create", "--repo", repo, "--from-commit", "good", dir + "/good.cfs", "--print-digest"]).lastLine
        let wrong = String(repeating: "13ae", count: 16)
        let bytes = stride(from: 0, to: 64, by: 2).map { i -> String in
            let start = wrong.index(wrong.startIndex, offsetBy: i)
            return "0x" + wrong[start..<wrong.index(start, offsetBy: 2)]
        }
        let bad = try cairn(["commit", "--repo", repo, "-b", "bad", "--no-composefs",
                             "--add-metadata", "ostree.composefs.digest.v0=[byte \(bytes.joined(separator: ", "))]", dir + "/t"]).lastLine
        let refused = try cairn(["image", "create", "--repo", repo, "--from-commit", "bad", dir + "/bad.cfs"], expect: 1)
        assertOneLineError(refused, contains: "image of commit \(bad): its fs-verity digest \(right) doesn't match the digest \(wrong) the commit records (ostree.composefs.digest.v0)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.cfs"))
        let forced = try cairn(["image", "create", "--repo", repo, "--from-commit", "bad", "--no-digest-check", dir + "/bad.cfs", "--print-digest"]).lastLine
        XCTAssertEqual(forced, right)
        // Without verity digests there is nothing the record describes.
        try cairn(["image", "create", "--repo", repo, "--from-commit", "bad", "--no-verity", dir + "/bad-noverity.cfs"])
        XCTAssertEqual(try sha256(dir + "/bad-noverity.cfs"),
                       try { try cairn(["image", "create", "--repo", repo, "--from-commit", good, "--no-verity", dir + "/good-noverity.cfs"]); return try sha256(dir + "/good-noverity.cfs") }())

        // A record that is not 32 bytes is named as such.
        try cairn(["commit", "--repo", repo, "-b", "short", "--no-composefs", "--add-metadata", "ostree.composefs.digest.v0=[byte 0x01, 0x02]", dir + "/t"])
        assertOneLineError(try cairn(["image", "create", "--repo", repo, "--from-commit", "short", dir + "/short.cfs"], expect: 1),
                           contains: "its ostree.composefs.digest.v0 is 2 bytes, not 32 bytes (ay)")

        // A flipped byte in an object: the mismatch is traced to the object.
        let object = try TestSupport.sh("find '\(repo)/objects' -name '*.file' -size +4k | head -1").trimmingCharacters(in: .whitespacesAndNewlines)
        try TestSupport.sh("python3 -c \"import sys; f = open(sys.argv[1], 'r+b'); f.seek(10); b = f.read(1)[0]; f.seek(10); f.write(bytes([b ^ 0xff]))\" '\(object)'")
        let name = URL(fileURLWithPath: object).deletingLastPathComponent().lastPathComponent + URL(fileURLWithPath: object).deletingPathExtension().lastPathComponent
        assertOneLineError(try cairn(["image", "create", "--repo", repo, "--from-commit", good, dir + "/corrupt.cfs"], expect: 1),
                           contains: "file object \(name) is corrupt")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/corrupt.cfs"))

        // Options that only --from-commit takes.
        try cairn(["image", "create", "--from-dir", dir + "/t", "--no-verity", dir + "/x.cfs"], expect: 2)
    }
}

extension ImageTests {
    /// Whoever owns the source tree may swap one of its directories for a
    /// symlink while root runs `image create --from-dir` on it: no byte
    /// from outside the tree may reach the digest store (whose objects are
    /// world-readable) or the image. The scan walks directory descriptors
    /// and each file read is checked to be the file scanned; a swap seen
    /// is an error naming the file, or the tree as it was at that moment.
    func testSwappingADirectoryForASymlinkLeaksNothing() throws {
        try TestSupport.sh("""
            set -e
            mkdir -p '\(dir)/tree/d' '\(dir)/outside'
            for i in $(seq 400); do printf 'inside %0100d' $i > '\(dir)/tree/d/f'$i; printf 'SECRET %0100d' $i > '\(dir)/outside/f'$i; done
            chmod 600 '\(dir)/outside'/*
            """)
        // Swaps tree/d and a symlink to outside/, back and forth, until told to stop.
        let swapper = Process()
        swapper.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        // renameat2(RENAME_EXCHANGE): tree/d is always there, a directory or a symlink.
        swapper.arguments = ["-c", """
            import ctypes, os, sys
            libc = ctypes.CDLL(None, use_errno=True)
            t, o = sys.argv[1], sys.argv[2]
            os.symlink(o, t + "/../link")
            a, b = (t + "/d").encode(), (t + "/../link").encode()
            while not os.path.exists(t + "/../stop"):
                if libc.renameat2(-100, a, -100, b, 2) != 0:
                    sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
            """, dir + "/tree", dir + "/outside"]
        try swapper.run()
        defer {
            FileManager.default.createFile(atPath: dir + "/stop", contents: nil)
            swapper.waitUntilExit()
            XCTAssertEqual(swapper.terminationStatus, 0, "the swapper failed")
        }
        var outcomes: [Int32: Int] = [:]
        let deadline = Date().addingTimeInterval(20)
        var round = 0
        while Date() < deadline || round < 10 {
            round += 1
            let store = dir + "/store\(round)", image = dir + "/img\(round).cfs"
            let r = try TestSupport.run(cairnPath, ["image", "create", "--from-dir", dir + "/tree", "--digest-store", store, image])
            outcomes[r.status, default: 0] += 1
            if r.status != 0 {
                XCTAssertTrue(r.stderr.hasPrefix("cairn: error: ") && r.stderr.contains("\(dir)/tree/d"), r.stderr)
            }
            let leaked = try TestSupport.sh("grep -rl SECRET '\(store)' '\(image)' 2>/dev/null || true")
            XCTAssertEqual(leaked, "", "round \(round): bytes from outside the tree reached the store or the image")
            if !leaked.isEmpty { break }
            try? FileManager.default.removeItem(atPath: store)
            try? FileManager.default.removeItem(atPath: image)
        }
        print("swap race: \(round) rounds, exit statuses \(outcomes)")
    }
}
