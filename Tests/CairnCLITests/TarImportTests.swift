import CairnTestSupport
import Foundation
import XCTest

/// `cairn commit` of tar archives that libostree's importer would store
/// corrupt, fail on with a message naming nothing, or abort on; and what a
/// failed import leaves behind. Fixtures come from python3's tarfile, which
/// writes what no tar command would: any mode, any hardlink target,
/// non-UTF-8 names. Debian's `ostree` is the peer.
final class TarImportTests: CairnTestCase {
    override var scratchName: String { "cairn-tar" }

    static let tarPrelude = """
        import io, sys, tarfile
        out = sys.argv[1]
        t = tarfile.open(out, "w", format=getattr(tarfile, sys.argv[2] + "_FORMAT"), encoding="utf-8", errors="surrogateescape")
        D, F, L, H, FIFO, CHR = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE
        def add(name, type=F, mode=0o644, data=b"", link="", pax=None):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.linkname, ti.mtime = type, mode, link, 1700000000
            ti.pax_headers = pax or {}
            ti.size = len(data) if type == F else 0
            t.addfile(ti, io.BytesIO(data) if type == F else None)

        """

    /// Writes `dir/name` from Python calls of `add(name, type, mode, data=, link=, pax=)`.
    @discardableResult
    func makeTar(_ name: String, format: String = "GNU", _ entries: String,
                 file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let path = dir + "/" + name
        let r = try TestSupport.run("python3", ["-c", Self.tarPrelude + entries + "\nt.close()\n", path, format])
        XCTAssertEqual(r.status, 0, "writing \(name): \(r.stderr)", file: file, line: line)
        return path
    }

    /// Debian's ostree, which must succeed.
    @discardableResult
    func peer(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try TestSupport.run("ostree", args)
        XCTAssertEqual(r.status, 0, "ostree \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    func assertBothFscksPass(_ repo: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let ours = try cairn(["fsck", "--repo", repo], file: file, line: line)
        XCTAssertTrue(ours.stdout.contains("no problems"), ours.stdout + ours.stderr, file: file, line: line)
        XCTAssertTrue(try peer(["fsck", "--repo=\(repo)"], file: file, line: line).contains("no errors"), file: file, line: line)
    }

    /// Every object file, by its path under objects/.
    func objects(_ repo: String) throws -> [String] {
        try TestSupport.sh("cd '\(repo)/objects' && find . -type f | sort").split(separator: "\n").map(String.init)
    }

    /// Files inside libostree's staging directories (tmp/staging-<boot id>-XXXXXX).
    func stagedFiles(_ repo: String) throws -> [String] {
        try TestSupport.sh("cd '\(repo)/tmp' && find . -mindepth 2 -path './staging-*/*' -type f | sort").split(separator: "\n").map(String.init)
    }

    /// The commit is refused with one line naming every one of `texts`, and
    /// the repository is as it was: refs, objects, nothing staged, both fscks.
    func assertRefused(_ archive: String, repo: String, naming texts: [String], options: [String] = [],
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let refs = try refsSnapshot(repo)
        let objectsBefore = try objects(repo)
        let r = try cairn(["commit", "--repo", repo, "-b", "os"] + options + [archive], expect: 1, file: file, line: line)
        for text in texts { assertOneLineError(r, contains: text, file: file, line: line) }
        XCTAssertEqual(try refsSnapshot(repo), refs, "refs changed", file: file, line: line)
        XCTAssertEqual(try objects(repo), objectsBefore, "objects changed", file: file, line: line)
        XCTAssertEqual(try stagedFiles(repo), [], "objects left staged", file: file, line: line)
        try assertBothFscksPass(repo, file: file, line: line)
    }

    /// A repository with one commit on `os`, so that there is something to keep.
    func makeRepository(_ repo: String) throws {
        try cairn(["init", "--repo", repo])
        let base = try makeTar("base.tar", """
            add(".", D, 0o755)
            add("usr", D, 0o755)
            add("usr/base", data=b"base\\n")
            """)
        try cairn(["commit", "--repo", repo, "-b", "os", "--timestamp", "1700000000", base])
    }

    // MARK: Symlink modes

    func testSymlinkModesAreStoredAs0777() throws {
        try TestSupport.require(tool: "ostree")
        let tree = """
            add(".", D, 0o755)
            add("usr", D, 0o755)
            add("usr/f", data=b"x\\n")
            add("usr/l", L, MODE1, link="f")
            add("usr/abs", L, MODE2, link="/usr/f")
            """
        let odd = try makeTar("odd.tar", tree.replacingOccurrences(of: "MODE1", with: "0o755").replacingOccurrences(of: "MODE2", with: "0o600"))
        let plain = try makeTar("plain.tar", tree.replacingOccurrences(of: "MODE1", with: "0o777").replacingOccurrences(of: "MODE2", with: "0o777"))
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        // Unbound on both sides: the peer commits to two other branches.
        let c = try cairn(["commit", "--repo", repo, "-b", "t", "-s", "S", "--timestamp", "1700000000", "--no-composefs", "--no-bindings", odd]).lastLine
        try assertBothFscksPass(repo)
        let ls = try cairn(["ls", "--repo", repo, "t", "/usr"]).stdout
        XCTAssertTrue(ls.contains("l00777 0 0      0 /usr/l -> f\n") && ls.contains("l00777 0 0      0 /usr/abs -> /usr/f\n"), ls)

        // Debian's ostree imports odd.tar as it is, and then fails its own
        // fsck; the same archive with the modes Linux gives symlinks, and
        // the tree tar extracts from odd.tar, give our commit.
        let peerRepo = dir + "/o"
        try peer(["init", "--repo=\(peerRepo)", "--mode=bare"])
        let common = ["--repo=\(peerRepo)", "-s", "S", "--timestamp=@1700000000", "--no-bindings"]
        let fromTar = try peer(["commit", "-b", "tar", "--tree=tar=\(plain)", "--tar-autocreate-parents"] + common)
        XCTAssertEqual(fromTar.trimmingCharacters(in: .whitespacesAndNewlines), c)
        try TestSupport.sh("mkdir '\(dir)/extracted' && tar -C '\(dir)/extracted' -xf '\(odd)'")
        let fromDirectory = try peer(["commit", "-b", "dir"] + common + [dir + "/extracted"])
        XCTAssertEqual(fromDirectory.trimmingCharacters(in: .whitespacesAndNewlines), c)
    }

    // MARK: What a failed import leaves

    func testFailedImportPublishesNothingLater() throws {
        try TestSupport.require(tool: "ostree")
        let repo = dir + "/r"
        try makeRepository(repo)
        let refs = try refsSnapshot(repo)

        // Five files, then a symlink with a user xattr, which Linux does not
        // allow on symlinks: the write fails after the files were staged.
        let midway = try makeTar("midway.tar", format: "PAX", """
            add(".", D, 0o755)
            for i in range(5): add("data%d" % i, data=bytes([i]) * 5000)
            add("link", L, 0o777, link="data0", pax={"SCHILY.xattr.user.x": "1"})
            """)
        let failed = try cairn(["commit", "--repo", repo, "-b", "os", midway], expect: 1)
        assertOneLineError(failed, contains: "(at /link)")
        XCTAssertTrue(failed.stderr.contains("lsetxattr(user.x)"), failed.stderr)
        XCTAssertEqual(try refsSnapshot(repo), refs)
        XCTAssertEqual(try stagedFiles(repo), [], "the failed transaction's objects are still staged")
        try assertBothFscksPass(repo)

        // A member cut short after good ones: refused before anything is written.
        let truncated = try makeTar("truncated.tar", """
            for i in range(3): add("good%d" % i, data=bytes([i]) * 3000)
            add("big", data=b"z" * 50000)
            t.close()
            whole = open(out, "rb").read()
            open(out, "wb").write(whole[:-30000])
            """)
        try assertRefused(truncated, repo: repo, naming: ["entry 'big'", "runcated"])

        // The next commit, of another tree, publishes only its own objects:
        // the same as a fresh repository given the same commits.
        let other = try makeTar("other.tar", """
            add(".", D, 0o755)
            add("srv", D, 0o755)
            add("srv/other", data=b"other\\n")
            """)
        let c = try cairn(["commit", "--repo", repo, "-b", "other", "--timestamp", "1700000000", other]).lastLine
        let fresh = dir + "/fresh"
        try makeRepository(fresh)
        XCTAssertEqual(try cairn(["commit", "--repo", fresh, "-b", "other", "--timestamp", "1700000000", other]).lastLine, c)
        XCTAssertEqual(try objects(repo), try objects(fresh))
        try assertBothFscksPass(repo)
    }

    /// What another writer's failed transaction staged (here Debian's
    /// ostree) is not published by our next commit, which takes its staging
    /// directory over.
    func testLeftoversOfAnotherWriterAreNotPublished() throws {
        try TestSupport.require(tool: "ostree")
        let repo = dir + "/r"
        try makeRepository(repo)
        let midway = try makeTar("midway.tar", format: "PAX", """
            add(".", D, 0o755)
            for i in range(5): add("data%d" % i, data=bytes([i]) * 5000)
            add("link", L, 0o777, link="data0", pax={"SCHILY.xattr.user.x": "1"})
            """)
        let failed = try TestSupport.run("ostree", ["commit", "--repo=\(repo)", "-b", "peer", "--tree=tar=\(midway)", "--tar-autocreate-parents"])
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertFalse(try stagedFiles(repo).isEmpty, "the peer left nothing staged; this test needs it to")

        let other = try makeTar("other.tar", "add('.', D, 0o755)\nadd('other', data=b'other')")
        try cairn(["commit", "--repo", repo, "-b", "other", "--timestamp", "1700000000", other])
        let fresh = dir + "/fresh"
        try makeRepository(fresh)
        try cairn(["commit", "--repo", fresh, "-b", "other", "--timestamp", "1700000000", other])
        XCTAssertEqual(try objects(repo), try objects(fresh))
        XCTAssertEqual(try stagedFiles(repo), [])
        try assertBothFscksPass(repo)
    }

    // MARK: Hardlinks

    func testHardlinksThatNameNoEarlierFileAreRefused() throws {
        try TestSupport.require(tool: "ostree")
        let repo = dir + "/r"
        try makeRepository(repo)
        let cases: [(String, String, [String])] = [
            // libostree asserted on this one (exit 134).
            ("up.tar", "add('usr/f', data=b'x')\nadd('usr/h', H, link='../../../etc/shadow')",
             ["hardlink entry 'usr/h'", "'../../../etc/shadow'", "'..'"]),
            ("absolute.tar", "add('etc/shadow', data=b'x')\nadd('h', H, link='/etc/shadow')",
             ["hardlink entry 'h'", "'/etc/shadow'", "absolute"]),
            ("later.tar", "add('h', H, link='f')\nadd('f', data=b'x')",
             ["hardlink entry 'h'", "'f'", "no earlier entry"]),
            ("directory.tar", "add('usr', D, 0o755)\nadd('h', H, link='usr')",
             ["hardlink entry 'h'", "'usr'", "directory"]),
            ("chain.tar", "add('f', data=b'x')\nadd('h1', H, link='f')\nadd('h2', H, link='h1')",
             ["hardlink entry 'h2'", "'h1'", "itself a hardlink"]),
            // The importer resolves links at the end: h would get "y".
            ("renamed.tar", "add('f', data=b'x')\nadd('h', H, link='f')\nadd('f', data=b'y')",
             ["entry 'f' replaces", "hardlink entry 'h'"]),
        ]
        for (name, entries, texts) in cases {
            try assertRefused(try makeTar(name, entries), repo: repo, naming: texts)
        }

        // What GNU tar writes for hardlinked files and symlinks is taken, as
        // the same tree as the directory.
        try TestSupport.sh("""
            set -e
            mkdir -p '\(dir)/src/d'
            cd '\(dir)/src/d'
            echo x > f && ln f f2 && ln -s f s && ln s s2
            tar --xattrs --xattrs-include='*' --numeric-owner -C '\(dir)/src' -cf '\(dir)/gnu.tar' .
            """)
        XCTAssertTrue(try TestSupport.sh("tar -tvf '\(dir)/gnu.tar'").contains(" link to "), "no hardlink entry in the fixture")
        // Unbound: the two commits go to two branches, and are equal only without their names.
        let options = ["--timestamp", "1700000000", "--no-composefs", "--no-bindings"]
        let fromDirectory = try cairn(["commit", "--repo", repo, "-b", "dir"] + options + [dir + "/src"]).lastLine
        let fromTar = try cairn(["commit", "--repo", repo, "-b", "tar"] + options + [dir + "/gnu.tar"]).lastLine
        XCTAssertEqual(fromTar, fromDirectory)
        XCTAssertTrue(try cairn(["ls", "--repo", repo, "tar", "/d"]).stdout.contains("l00777 0 0      0 /d/s2 -> f\n"))
        try assertBothFscksPass(repo)
    }

    // MARK: Entries the importer cannot place

    func testClashesAndBadNamesNameTheEntries() throws {
        try TestSupport.require(tool: "ostree")
        let repo = dir + "/r"
        try makeRepository(repo)
        let cases: [(String, String, [String])] = [
            // libostree said "unknown error" for the first and third.
            ("file-then-child.tar", "add('a', data=b'x')\nadd('a/b', data=b'y')",
             ["entry 'a/b' needs '/a' to be a directory", "entry 'a' before it made it a regular file"]),
            ("child-then-symlink.tar", "add('a/b', data=b'y')\nadd('a', L, 0o777, link='x')",
             ["entry 'a' is a symlink", "entry 'a/b' before it made '/a' a directory"]),
            ("file-then-directory.tar", "add('a', data=b'x')\nadd('a', D, 0o755)",
             ["entry 'a/' is a directory", "entry 'a' before it made '/a' a regular file"]),
            ("root-file.tar", "add('.', data=b'x')", ["entry '.'", "root directory"]),
            ("dotdot.tar", "add('usr/../../x', data=b'x')", ["entry 'usr/../../x'", "'..'"]),
            ("latin1.tar", "add('caf\\udce9', data=b'x')", ["entry 'caf\\xe9'", "UTF-8"]),
            ("bad-target.tar", "add('s', L, 0o777, link='t\\udcff')", ["symlink entry 's'", "'t\\xff'", "UTF-8"]),
            // /etc goes to /usr/etc, below a symlink.
            ("usr-symlink.tar", "add('usr', L, 0o777, link='x')\nadd('etc/passwd', data=b'x')",
             ["entry 'usr' makes /usr a symlink", "entry 'etc/passwd'", "--keep-etc"]),
        ]
        for (name, entries, texts) in cases {
            try assertRefused(try makeTar(name, entries), repo: repo, naming: texts)
        }
        // In place, /etc clashes with nothing.
        try cairn(["commit", "--repo", repo, "-b", "kept", "--keep-etc", dir + "/usr-symlink.tar"])
        try assertBothFscksPass(repo)
    }

    // MARK: Special files

    func testSpecialFilesAreRefusedUnlessSkipped() throws {
        try TestSupport.require(tool: "ostree")
        let repo = dir + "/r"
        try makeRepository(repo)
        let special = try makeTar("special.tar", """
            add(".", D, 0o755)
            add("dev", D, 0o755)
            add("dev/null", CHR, 0o666)
            add("run", D, 0o755)
            add("run/fifo", FIFO, 0o600)
            add("run/fifo2", H, link="run/fifo")
            add("usr", D, 0o755)
            add("usr/f", data=b"x")
            """)
        try assertRefused(special, repo: repo, naming: ["3 device node(s), fifo(s) or socket(s)", "/dev/null, /run/fifo, /run/fifo2",
                                                        "--skip-special"])
        let skipped = try cairn(["commit", "--repo", repo, "-b", "skipped", "--skip-special", special])
        XCTAssertTrue(skipped.stderr.contains("warning: left out 3 device node(s), fifo(s) or socket(s), e.g. /dev/null"), skipped.stderr)
        let ls = try cairn(["ls", "--repo", repo, "-R", "skipped"]).stdout
        XCTAssertTrue(ls.contains(" /usr/f\n") && ls.contains(" /run\n") && ls.contains(" /dev\n"), ls)
        XCTAssertFalse(ls.contains("null") || ls.contains("fifo"), ls)
        try assertBothFscksPass(repo)
    }

    // MARK: Names outside ASCII

    /// pax archives carry names as UTF-8, which libarchive would convert to
    /// the C locale cairn runs in, failing on any non-ASCII name.
    func testPaxNamesOutsideASCII() throws {
        try TestSupport.require(tool: "ostree")
        let pax = try makeTar("pax.tar", format: "PAX", """
            add(".", D, 0o755)
            add("caf\u{e9}", data=b"x")
            add("l\u{f6}nk", L, 0o777, link="caf\u{e9}")
            """)
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        let r = try TestSupport.run(cairnPath, ["commit", "--repo", repo, "-b", "t", "-s", "S", "--timestamp", "1700000000", "--no-composefs", pax],
                                    environment: ["LC_ALL": "C"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(try cairn(["ls", "--repo", repo, "t", "/"]).stdout.contains("/l\u{f6}nk -> caf\u{e9}\n"))
        let peerRepo = dir + "/o"
        try peer(["init", "--repo=\(peerRepo)", "--mode=bare"])
        let theirs = try peer(["commit", "--repo=\(peerRepo)", "-b", "t", "-s", "S", "--timestamp=@1700000000",
                               "--tree=tar=\(pax)", "--tar-autocreate-parents"])
        XCTAssertEqual(theirs.trimmingCharacters(in: .whitespacesAndNewlines), r.lastLine)
        try assertBothFscksPass(repo)
    }
}
