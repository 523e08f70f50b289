import CairnTestSupport
import Foundation
import XCTest

/// `cairn init/commit/log/show/ls/cat/refs/diff/fsck/prune` against real
/// libostree repositories, with Debian's `ostree` CLI as the independent peer.
final class CommitTests: CairnTestCase {
    override var scratchName: String { "cairn-commit" }

    @discardableResult
    func ostree(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try TestSupport.run("ostree", args)
        XCTAssertEqual(r.status, 0, "ostree \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r.stdout
    }

    /// A small OS-like tree: nested dirs, a symlink, a hardlink, odd modes, xattrs, an empty file.
    func makeTree(_ path: String, withEtc: Bool = false) throws {
        try TestSupport.sh("""
            set -e
            mkdir -p '\(path)/usr/bin' '\(path)/usr/lib/x' '\(path)/usr/share/empty' '\(path)/var'
            printf 'hello\\n' > '\(path)/usr/bin/hello'
            chmod 0755 '\(path)/usr/bin/hello'
            ln -s hello '\(path)/usr/bin/hi'
            ln '\(path)/usr/bin/hello' '\(path)/usr/lib/x/hardlink'
            : > '\(path)/usr/lib/empty'
            head -c 100000 /dev/urandom > '\(path)/usr/lib/x/blob'
            chmod 4711 '\(path)/usr/lib/x/blob'
            chown 1000:100 '\(path)/usr/lib/x'
            setfattr -n user.cairn -v test '\(path)/usr/lib/x/blob' 2>/dev/null || true
            chmod 0700 '\(path)/var'
            """)
        if withEtc {
            try TestSupport.sh("mkdir -p '\(path)/etc/sub' && echo 'x' > '\(path)/etc/hostname' && chmod 0600 '\(path)/etc/hostname' && ln -s ../hostname '\(path)/etc/sub/link'")
        }
    }

    func ostreeRootChecksums(repo: String, ref: String) throws -> (String, String) {
        // `ostree ls -C` prints the checksums of the root's dirtree and dirmeta.
        let ls = try ostree(["ls", "--repo=\(repo)", "-C", "-d", ref, "/"])
        let fields = ls.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        // d00755 0 0 0 <dirtree> <dirmeta> /
        XCTAssertGreaterThanOrEqual(fields.count, 6, ls)
        return (fields[4], fields[5])
    }

    // MARK: Same tree, same result as the reference tool

    func testSameRootTreeAsOstreeCommit() throws {
        try TestSupport.require(tool: "ostree")
        let src = dir + "/src"
        try makeTree(src)
        try cairn(["init", "--repo", dir + "/a"])
        try ostree(["init", "--repo=\(dir)/b", "--mode=bare"])
        for options in [[String](), ["--owner-uid=0", "--owner-gid=0"], ["--canonical-permissions"], ["--no-xattrs"]] {
            let c = try cairn(["commit", "--repo", dir + "/a", "-b", "t", "-s", "s"] + options + [src]).lastLine
            try ostree(["commit", "--repo=\(dir)/b", "-b", "t", "-s", "s"] + options + [src])
            let ours = try ostreeRootChecksums(repo: dir + "/a", ref: c)
            let theirs = try ostreeRootChecksums(repo: dir + "/b", ref: "t")
            XCTAssertEqual(ours.0, theirs.0, "dirtree differs with \(options)")
            XCTAssertEqual(ours.1, theirs.1, "dirmeta differs with \(options)")
        }
        // The peer accepts the repository and reads the commits.
        let fsck = try ostree(["fsck", "--repo=\(dir)/a"])
        XCTAssertTrue(fsck.contains("no errors"), fsck)
        let log = try ostree(["log", "--repo=\(dir)/a", "t"])
        XCTAssertEqual(log.components(separatedBy: "commit ").count - 1, 4, log)
    }

    /// Files past the in-memory limit (hashed, then streamed to libostree),
    /// xattrs on a symlink and a directory: the same objects as ostree's.
    /// A recommit writes no object, and the recorded composefs digest is
    /// the one of the image built from the objects alone.
    func testLargeFilesXattrsAndARecommitThatWritesNothing() throws {
        try TestSupport.require(tool: "ostree")
        try TestSupport.requireRoot()
        let src = dir + "/src"
        try makeTree(src)
        try TestSupport.sh("""
            head -c 5000000 /dev/urandom > '\(src)/usr/lib/big' && head -c 4194304 /dev/urandom > '\(src)/usr/lib/limit'
            ln -s big '\(src)/usr/lib/big-link'
            setfattr -h -n trusted.cairn -v link '\(src)/usr/lib/big-link' && setfattr -n trusted.cairn -v dir '\(src)/usr/lib'
            setfattr -n trusted.cairn -v big '\(src)/usr/lib/big'
            """)
        try cairn(["init", "--repo", dir + "/a"])
        try ostree(["init", "--repo=\(dir)/b", "--mode=bare"])
        let c = try cairn(["commit", "--repo", dir + "/a", "-b", "t", src]).lastLine
        try ostree(["commit", "--repo=\(dir)/b", "-b", "t", src])
        XCTAssertEqual(try ostree(["ls", "--repo=\(dir)/a", "-R", "-C", "-X", c]), try ostree(["ls", "--repo=\(dir)/b", "-R", "-C", "-X", "t"]))
        let objects = "find '\(dir)/a/objects' -name '*.file' | sort | xargs ls -i"
        let before = try TestSupport.sh(objects)
        let again = try cairn(["commit", "--repo", dir + "/a", "-b", "t", src]).lastLine
        XCTAssertEqual(try TestSupport.sh(objects), before, "a recommit rewrote objects")
        for commit in [c, again] {
            let shown = try XCTUnwrap(try JSONSerialization.jsonObject(with: cairn(["show", "--repo", dir + "/a", "--json", commit]).stdoutData) as? [String: Any])
            let image = try cairn(["image", "create", "--repo", dir + "/a", "--from-commit", commit, dir + "/c.cfs", "--print-digest"]).lastLine
            XCTAssertEqual(shown["composefsDigest"] as? String, image)
        }
        XCTAssertTrue(try ostree(["fsck", "--repo=\(dir)/a"]).contains("no errors"))
    }

    /// `ostree commit -b REF` binds the commit to REF (`ostree.ref-binding`,
    /// with any --bind-ref, sorted); cairn records the same by default, so the
    /// two give the same commit checksum, with bindings or without.
    func testRefBindingsAsOstreeCommitRecordsThem() throws {
        try TestSupport.require(tool: "ostree")
        let src = dir + "/src"
        try makeTree(src)
        try cairn(["init", "--repo", dir + "/a"])
        try ostree(["init", "--repo=\(dir)/b", "--mode=bare"])
        let common = ["-b", "os/x", "-s", "s", "--add-metadata-string=version=1"]
        let cases: [(ours: [String], theirs: [String], binding: [String]?)] = [
            ([], [], ["os/x"]),
            (["--bind-ref", "os/z", "--bind-ref", "a/b"], ["--bind-ref=os/z", "--bind-ref=a/b"], ["a/b", "os/x", "os/z"]),
            (["--no-bindings"], ["--no-bindings"], nil),
        ]
        for (ours, theirs, binding) in cases {
            let c = try cairn(["commit", "--repo", dir + "/a", "--no-composefs", "--timestamp", "1700000000"] + common + ours + [src]).lastLine
            let o = try ostree(["commit", "--repo=\(dir)/b", "--timestamp=@1700000000"] + common + theirs + [src])
            XCTAssertEqual(c, o.trimmingCharacters(in: .whitespacesAndNewlines), "commit checksum differs with \(ours)")
            let show = try cairn(["show", "--repo", dir + "/a", "--json", c]).stdoutData
            let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: show) as? [String: Any])
            let metadata = try XCTUnwrap(json["metadata"] as? [String: Any])
            XCTAssertEqual(metadata["ostree.ref-binding"] as? [String], binding, "\(metadata)")
        }
        assertOneLineError(try cairn(["commit", "--repo", dir + "/a", "-b", "os/x", "--bind-ref", "bad ref!", src], expect: 2).withoutUsageHint,
                           contains: "bad ref!")
    }

    func testEtcIsCommittedAsUsrEtc() throws {
        try TestSupport.require(tool: "ostree")
        let src = dir + "/src"
        try makeTree(src, withEtc: true)
        try cairn(["init", "--repo", dir + "/a"])
        let r = try cairn(["commit", "--repo", dir + "/a", "-b", "os", src])
        XCTAssertTrue(r.stderr.contains("/etc as /usr/etc"), r.stderr)
        let ls = try cairn(["ls", "--repo", dir + "/a", "os", "/"]).stdout
        XCTAssertFalse(ls.contains(" /etc\n"), ls)
        let etc = try cairn(["ls", "--repo", dir + "/a", "-R", "os", "/usr/etc"]).stdout
        XCTAssertTrue(etc.contains("-00600 0 0      2 /usr/etc/hostname"), etc)
        XCTAssertTrue(etc.contains("/usr/etc/sub/link -> ../hostname"), etc)

        // Equal to ostree committing the same tree with /etc moved by hand.
        try TestSupport.sh("cp -a '\(src)' '\(dir)/moved' && mv '\(dir)/moved/etc' '\(dir)/moved/usr/etc'")
        try ostree(["init", "--repo=\(dir)/b", "--mode=bare"])
        try ostree(["commit", "--repo=\(dir)/b", "-b", "os", "\(dir)/moved"])
        XCTAssertEqual(try ostreeRootChecksums(repo: dir + "/a", ref: "os").0, try ostreeRootChecksums(repo: dir + "/b", ref: "os").0)

        // --keep-etc leaves it in place.
        let kept = try cairn(["commit", "--repo", dir + "/a", "-b", "kept", "--keep-etc", src])
        XCTAssertFalse(kept.stderr.contains("/usr/etc"))
        XCTAssertTrue(try cairn(["ls", "--repo", dir + "/a", "kept", "/etc"]).stdout.contains("/etc/hostname"))
    }

    func testTarArchivesGiveTheSameTreeAsTheDirectory() throws {
        try TestSupport.require(tool: "ostree")
        let src = dir + "/src"
        try makeTree(src, withEtc: true)
        try cairn(["init", "--repo", dir + "/a"])
        let fromDir = try cairn(["commit", "--repo", dir + "/a", "-b", "dir", src]).lastLine
        let expected = try ostreeRootChecksums(repo: dir + "/a", ref: fromDir)
        for (name, flag) in [("plain.tar", ""), ("t.tar.gz", "--gzip"), ("t.tar.xz", "--xz"), ("t.tar.zst", "--zstd")] {
            try TestSupport.sh("tar --xattrs --xattrs-include='*' --numeric-owner \(flag) -C '\(src)' -cf '\(dir)/\(name)' .")
            let c = try cairn(["commit", "--repo", dir + "/a", "-b", "tar", dir + "/" + name]).lastLine
            let got = try ostreeRootChecksums(repo: dir + "/a", ref: c)
            XCTAssertEqual(got.0, expected.0, "dirtree of \(name)")
            XCTAssertEqual(got.1, expected.1, "dirmeta of \(name)")
        }
    }

    // MARK: Reading commits

    func testLogShowLsCatRefsDiff() throws {
        let src = dir + "/src"
        try makeTree(src)
        try cairn(["init", "--repo", dir + "/r", "--mode", "bare-user"])
        let c1 = try cairn(["commit", "--repo", dir + "/r", "-b", "os/x86_64", "-s", "first", "-m", "line one\nline two",
                            "--add-metadata-string", "version=1.0", "--add-metadata", "answer=uint64 42", "--timestamp", "1700000000", src]).lastLine
        try TestSupport.sh("echo changed > '\(src)/usr/bin/hello' && rm '\(src)/usr/lib/empty' && mkdir '\(src)/usr/new' && echo n > '\(src)/usr/new/file'")
        let c2 = try cairn(["commit", "--repo", dir + "/r", "-b", "os/x86_64", "-s", "second", src]).lastLine
        XCTAssertEqual(c1.count, 64)

        let log = try cairn(["log", "--repo", dir + "/r", "os/x86_64"]).stdout
        XCTAssertTrue(log.hasPrefix("commit \(c2)\nParent:  \(c1)\n"), log)
        XCTAssertTrue(log.contains("Date:  2023-11-14 22:13:20 +0000\nVersion: 1.0\n\n    first\n\n    line one\n    line two"), log)

        let show = try cairn(["show", "--repo", dir + "/r", "--json", c1]).stdoutData
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: show) as? [String: Any])
        XCTAssertEqual(json["subject"] as? String, "first")
        XCTAssertEqual(json["body"] as? String, "line one\nline two")
        XCTAssertEqual(json["timestamp"] as? String, "2023-11-14T22:13:20Z")
        XCTAssertEqual(json["version"] as? String, "1.0")
        XCTAssertTrue(json["parent"] is NSNull)
        let metadata = try XCTUnwrap(json["metadata"] as? [String: Any])
        XCTAssertEqual(metadata["answer"] as? Int, 42)
        XCTAssertEqual((json["contentChecksum"] as? String)?.count, 64)
        let text = try cairn(["show", "--repo", dir + "/r", String(c1.prefix(10))]).stdout
        XCTAssertTrue(text.contains("  answer: uint64 42"), text)

        let ls = try cairn(["ls", "--repo", dir + "/r", c1, "/usr/bin"]).stdout
        XCTAssertEqual(ls, """
            d00755 0 0      0 /usr/bin
            -00755 0 0      6 /usr/bin/hello
            l00777 0 0      0 /usr/bin/hi -> hello

            """)
        let lsR = try cairn(["ls", "--repo", dir + "/r", "-R", c1]).stdout
        XCTAssertTrue(lsR.contains("d00755 1000 100      0 /usr/lib/x\n"), lsR)
        XCTAssertTrue(lsR.contains("-04711 0 0 100000 /usr/lib/x/blob\n"), lsR)

        XCTAssertEqual(try cairn(["cat", "--repo", dir + "/r", c1, "usr/bin/hello"]).stdout, "hello\n")
        XCTAssertEqual(try cairn(["cat", "--repo", dir + "/r", "os/x86_64", "/usr/bin/hello"]).stdout, "changed\n")
        let catDir = try cairn(["cat", "--repo", dir + "/r", c1, "/usr"], expect: 1)
        XCTAssertTrue(catDir.stderr.hasPrefix("cairn: error: cat /usr: is a directory"), catDir.stderr)
        let missing = try cairn(["cat", "--repo", dir + "/r", c1, "/nope"], expect: 1)
        XCTAssertTrue(missing.stderr.contains("/nope"), missing.stderr)

        XCTAssertEqual(try cairn(["refs", "--repo", dir + "/r"]).stdout, "os/x86_64\n")
        XCTAssertEqual(try cairn(["refs", "--repo", dir + "/r", "--commits"]).stdout, "os/x86_64 \(c2)\n")

        let diff = try cairn(["diff", "--repo", dir + "/r", c1, c2]).stdout
        XCTAssertEqual(diff, """
            M    /usr/bin/hello
            M    /usr/lib/x/hardlink
            D    /usr/lib/empty
            A    /usr/new
            A    /usr/new/file

            """)
        let unknown = try cairn(["log", "--repo", dir + "/r", "nosuchref"], expect: 1)
        XCTAssertTrue(unknown.stderr.contains("nosuchref"), unknown.stderr)
    }

    func testFsckFindsCorruptionAndPruneDeletesUnreachable() throws {
        let src = dir + "/src"
        try makeTree(src)
        try cairn(["init", "--repo", dir + "/r"])
        let c1 = try cairn(["commit", "--repo", dir + "/r", "-b", "a", "--timestamp", "1000000000", src]).lastLine
        try TestSupport.sh("head -c 5000 /dev/urandom > '\(src)/usr/lib/new'")
        let c2 = try cairn(["commit", "--repo", dir + "/r", "-b", "a", src]).lastLine
        XCTAssertTrue(try cairn(["fsck", "--repo", dir + "/r"]).stdout.contains("no problems"))

        // Depth 0 keeps only the ref heads: c1 and the blob only it reaches go.
        let dry = try cairn(["prune", "--repo", dir + "/r", "--refs-only", "--depth", "0", "--dry-run"]).stdout
        XCTAssertTrue(dry.contains("Would delete"), dry)
        XCTAssertEqual(try cairn(["log", "--repo", dir + "/r", c1]).status, 0)
        let pruned = try cairn(["prune", "--repo", dir + "/r", "--keep-younger-than", "2002-01-01"]).stdout
        XCTAssertTrue(pruned.contains("Deleted commit \(c1)"), pruned)
        XCTAssertEqual(try cairn(["log", "--repo", dir + "/r", c1], expect: 1).status, 1)
        let log = try cairn(["log", "--repo", dir + "/r", "a"]).stdout
        XCTAssertEqual(log.split(separator: "\n").filter { $0.hasPrefix("commit ") }.count, 1, log)
        XCTAssertTrue(log.contains("<< History beyond this commit not in the repository: \(c1) >>"), log)
        XCTAssertTrue(try cairn(["fsck", "--repo", dir + "/r"]).stdout.contains("no problems"))
        _ = c2

        // One flipped byte in a file object.
        let object = try TestSupport.sh("find '\(dir)/r/objects' -name '*.file' -size +4k | head -1").trimmingCharacters(in: .whitespacesAndNewlines)
        // Flipped, not overwritten: a byte that already held the new value would change nothing.
        try TestSupport.sh("python3 -c \"import sys; f = open(sys.argv[1], 'r+b'); f.seek(10); b = f.read(1)[0]; f.seek(10); f.write(bytes([b ^ 0xff]))\" '\(object)'")
        let bad = try cairn(["fsck", "--repo", dir + "/r"], expect: 1)
        let name = URL(fileURLWithPath: object).deletingLastPathComponent().lastPathComponent + URL(fileURLWithPath: object).deletingPathExtension().lastPathComponent
        XCTAssertTrue(bad.stderr.contains(name), bad.stderr)
    }

    // MARK: Bad input: one clear error, nothing changed

    func assertUnchanged(_ repo: String, _ before: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try refsSnapshot(repo), before, "refs changed", file: file, line: line)
        XCTAssertTrue(try cairn(["fsck", "--repo", repo]).stdout.contains("no problems"), file: file, line: line)
    }

    func testBadInputLeavesRepositoryAsItWas() throws {
        let src = dir + "/src"
        let repo = dir + "/r"
        try makeTree(src)
        try cairn(["init", "--repo", repo])
        try cairn(["commit", "--repo", repo, "-b", "os", src])
        let before = try refsSnapshot(repo)

        // Missing source.
        assertOneLineError(try cairn(["commit", "--repo", repo, "-b", "os", dir + "/missing"], expect: 1), contains: dir + "/missing")
        try assertUnchanged(repo, before)

        // Device nodes, fifos and sockets: all counted, first ones named.
        try TestSupport.requireRoot()
        try TestSupport.sh("cp -a '\(src)' '\(dir)/special' && mknod '\(dir)/special/usr/null' c 1 3 && mkfifo '\(dir)/special/usr/lib/fifo' && python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.bind('\(dir)/special/usr/sock')\"")
        let special = try cairn(["commit", "--repo", repo, "-b", "os", dir + "/special"], expect: 1)
        assertOneLineError(special, contains: "3 device node(s), fifo(s) or socket(s)")
        XCTAssertTrue(special.stderr.contains("/usr/null") && special.stderr.contains("/usr/lib/fifo") && special.stderr.contains("/usr/sock"), special.stderr)
        try assertUnchanged(repo, before)
        let skipped = try cairn(["commit", "--repo", repo, "-b", "skipped", "--skip-special", dir + "/special"])
        XCTAssertTrue(skipped.stderr.contains("warning: left out 3"), skipped.stderr)
        XCTAssertFalse(try cairn(["ls", "--repo", repo, "-R", "skipped"]).stdout.contains("null"))
        try TestSupport.sh("rm -f '\(repo)/refs/heads/skipped'")

        // Unreadable file: run without the capability that lets root read anything.
        try TestSupport.require(tool: "setpriv")
        try TestSupport.sh("cp -a '\(src)' '\(dir)/unreadable' && echo secret > '\(dir)/unreadable/usr/secret' && chown 1234 '\(dir)/unreadable/usr/secret' && chmod 0000 '\(dir)/unreadable/usr/secret'")
        let unreadable = try TestSupport.run("setpriv", ["--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", cairnPath,
                                                         "commit", "--repo", repo, "-b", "os", dir + "/unreadable"])
        XCTAssertEqual(unreadable.status, 1)
        assertOneLineError(unreadable, contains: "secret")
        XCTAssertTrue(unreadable.stderr.contains("Permission denied"), unreadable.stderr)
        try assertUnchanged(repo, before)

        // A name or a symlink target that is not UTF-8: ostree stores
        // strings (its own commit refuses the name and mangles the target).
        try TestSupport.sh("cp -a '\(src)' '\(dir)/latin1' && printf x > \"$(printf '\(dir)/latin1/usr/caf\\351')\"")
        assertOneLineError(try cairn(["commit", "--repo", repo, "-b", "os", dir + "/latin1"], expect: 1),
                           contains: "latin1/usr/caf\\xe9: its name is not UTF-8")
        try assertUnchanged(repo, before)
        try TestSupport.sh("rm -rf '\(dir)/latin1' && cp -a '\(src)' '\(dir)/latin1' && ln -s \"$(printf 'caf\\351')\" '\(dir)/latin1/usr/link'")
        assertOneLineError(try cairn(["commit", "--repo", repo, "-b", "os", dir + "/latin1"], expect: 1),
                           contains: "latin1/usr/link: its symlink target is not UTF-8")
        try assertUnchanged(repo, before)

        // Truncated and corrupt archives.
        try TestSupport.sh("tar -C '\(src)' -czf '\(dir)/good.tgz' . && head -c 20000 '\(dir)/good.tgz' > '\(dir)/truncated.tgz' && head -c 3000 /dev/urandom > '\(dir)/garbage.tar'")
        try TestSupport.sh("tar -C '\(src)' -cf '\(dir)/good.tar' . && head -c 60000 '\(dir)/good.tar' > '\(dir)/truncated.tar'")
        for name in ["truncated.tgz", "truncated.tar", "garbage.tar"] {
            let r = try cairn(["commit", "--repo", repo, "-b", "os", dir + "/" + name], expect: 1)
            assertOneLineError(r, contains: dir + "/" + name)
            try assertUnchanged(repo, before)
        }

        // Invalid ref name: a usage error.
        assertOneLineError(try cairn(["commit", "--repo", repo, "-b", "bad ref!", src], expect: 2).withoutUsageHint, contains: "bad ref!")

        // Not a repository.
        try TestSupport.sh("mkdir -p '\(dir)/notrepo'")
        assertOneLineError(try cairn(["commit", "--repo", dir + "/notrepo", "-b", "os", src], expect: 1), contains: dir + "/notrepo")
        assertOneLineError(try cairn(["log", "--repo", dir + "/nothing", "os"], expect: 1), contains: dir + "/nothing")
    }

    func testFullAndReadOnlyTargets() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        let src = dir + "/src"
        try makeTree(src)
        try TestSupport.sh("head -c 3000000 /dev/urandom > '\(src)/usr/lib/big'")
        // A 2 MiB tmpfs cannot hold the 3 MB file; a private mount namespace keeps the mount to ourselves.
        // With libostree's default reserve it refuses early; with none, the write itself hits ENOSPC.
        for (reserve, expected) in [("3%", "min-free-space"), ("0", "No space left on device")] {
            let full = try TestSupport.run("unshare", ["-m", "/bin/sh", "-c", """
                set -e
                mkdir -p '\(dir)/small'
                mount -t tmpfs -o size=2m tmpfs '\(dir)/small'
                '\(cairnPath)' init --repo '\(dir)/small/r' >/dev/null
                ostree config --repo='\(dir)/small/r' set core.min-free-space-percent \(reserve)
                '\(cairnPath)' commit --repo '\(dir)/small/r' -b os '\(src)/usr/bin' >/dev/null
                before=$(cat '\(dir)/small/r/refs/heads/os')
                if '\(cairnPath)' commit --repo '\(dir)/small/r' -b os '\(src)' 2>'\(dir)/err'; then echo "commit succeeded"; exit 1; fi
                test "$(cat '\(dir)/small/r/refs/heads/os')" = "$before"
                '\(cairnPath)' fsck --repo '\(dir)/small/r'
                """])
            XCTAssertEqual(full.status, 0, full.stdout + full.stderr)
            let err = try String(contentsOfFile: dir + "/err", encoding: .utf8)
            XCTAssertTrue(err.hasPrefix("cairn: error: committing \(src)"), err)
            XCTAssertTrue(err.contains(expected), err)
            XCTAssertEqual(err.split(separator: "\n").count, 1, err)
        }

        try cairn(["init", "--repo", dir + "/ro"])
        try cairn(["commit", "--repo", dir + "/ro", "-b", "os", src + "/usr/bin"])
        let before = try refsSnapshot(dir + "/ro")
        let ro = try TestSupport.run("unshare", ["-m", "/bin/sh", "-c", """
            mount --bind '\(dir)/ro' '\(dir)/ro' && mount -o remount,bind,ro '\(dir)/ro' && '\(cairnPath)' commit --repo '\(dir)/ro' -b os '\(src)'
            """])
        XCTAssertEqual(ro.status, 1, ro.stderr)
        assertOneLineError(ro, contains: dir + "/ro")
        XCTAssertTrue(ro.stderr.contains("Read-only file system"), ro.stderr)
        try assertUnchanged(dir + "/ro", before)
    }

    func testUsageErrorsExitWithTwo() throws {
        let r = try cairn(["commit"], expect: 2)
        XCTAssertTrue(r.stderr.hasPrefix("cairn: error: "), r.stderr)
        try cairn(["no-such-command"], expect: 2)
        try cairn(["init", "--repo", dir + "/r", "--mode", "weird"], expect: 2)
        XCTAssertTrue(try cairn(["commit", "--help"]).stdout.contains("--canonical-permissions"))
        XCTAssertTrue(try cairn(["--generate-completion-script", "bash"]).stdout.contains("cairn"))
    }
}

/// Shared with TarImportTests.
extension CairnTestCase {
    func refsSnapshot(_ repo: String) throws -> String {
        try TestSupport.sh("cd '\(repo)' && find refs -type f | sort | xargs -r -I{} sh -c 'echo {} $(cat {})'")
    }

    func assertOneLineError(_ r: ProcessResult, contains text: String, file: StaticString = #filePath, line: UInt = #line) {
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("cairn: error: "), r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(text), "expected \(text) in: \(r.stderr)", file: file, line: line)
    }
}

extension ProcessResult {
    /// stderr without the trailing "Run 'cairn help'..." hint of usage errors.
    var withoutUsageHint: ProcessResult {
        var copy = self
        copy.stderr = stderr.split(separator: "\n").filter { !$0.hasPrefix("Run 'cairn help'") }.joined(separator: "\n") + "\n"
        return copy
    }
}

extension CommitTests {
    /// One-letter relative paths once trapped in Foundation's path methods.
    func testShortRelativePaths() throws {
        for args in [["init", "--repo", "r"], ["keygen", "--output", "k"]] {
            let r = try TestSupport.run(cairnPath, args, cwd: dir)
            XCTAssertEqual(r.status, 0, "cairn \(args.joined(separator: " ")): \(r.stderr)")
        }
        try TestSupport.sh("mkdir -p '\(dir)/t' && echo x > '\(dir)/t/x'")
        let c = try TestSupport.run(cairnPath, ["commit", "--repo", "r", "-b", "b", "t"], cwd: dir)
        XCTAssertEqual(c.status, 0, c.stderr)
        let i = try TestSupport.run(cairnPath, ["image", "create", "--repo", "r", "--from-commit", "b", "i"], cwd: dir)
        XCTAssertEqual(i.status, 0, i.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/k.secret") && FileManager.default.fileExists(atPath: dir + "/i"))
    }
}
