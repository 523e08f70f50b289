import CairnTestSupport
import Foundation
import XCTest

/// Updates over HTTP (issue 11): a build server's archive repository written
/// by cairn (signed commits, a signed summary, static deltas) served by nginx
/// on 127.0.0.1, faults from the tests' proxy, Debian's ostree as the peer.
final class NetworkTests: SysrootTestCase {
    override var scratchName: String { "cairn-net" }

    var build: String { dir + "/build" }
    var key: String { dir + "/vendor.secret" }
    var pub: String { dir + "/vendor.pub" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        try TestSupport.require(tool: "nginx")
        try cairn(["init", "--repo", build, "--mode", "archive"])
        try cairn(["keygen", "--output", dir + "/vendor"])
    }

    /// Commits the sample tree of `version` on the server (signed unless told
    /// otherwise) and publishes a signed summary; returns the commit.
    @discardableResult
    func publish(_ version: String, branch: String = "os/x", extra: String = "", sign: [String]? = nil, summaryArgs: [String] = []) throws -> String {
        let tree = try makeTree(version)
        if !extra.isEmpty { try TestSupport.sh("cd '\(tree)' && \(extra)") }
        let signArgs = (sign ?? [key]).flatMap { ["--sign-key", $0] }
        let c = try cairn(["commit", "--repo", build, "-b", branch, "--add-metadata-string", "version=\(version)"] + signArgs + [tree]).lastLine
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key] + summaryArgs)
        return c
    }

    /// A machine: a sysroot with remote `origin` at `url`.
    func machine(_ url: String, _ extra: [String] = []) throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", pub, "origin", url] + extra)
    }

    /// Refs, deployments and /var of the machine, to show a refusal changed nothing.
    func machineState() throws -> String {
        let refs = try cairn(["refs", "--repo", repo]).stdout
        let st = try cairn(["status", "--sysroot", sys, "--json"]).stdout
        return refs + st + (try snapshot(sys + "/ostree/deploy/os/var"))
    }

    /// Asserts a refusal with one error line containing `reason`, and no change.
    func assertRefused(_ args: [String], _ reason: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let before = try machineState()
        let r = try cairn(args, expect: 1, file: file, line: line)
        XCTAssertTrue(r.stderr.contains(reason), "expected '\(reason)' in: \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stderr.components(separatedBy: "cairn: error:").count - 1, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(try machineState(), before, "a refusal changed refs, deployments or /var", file: file, line: line)
    }

    // MARK: The whole round trip

    func testUpgradeThroughAStaticDeltaSwitchAndOstreeAsPeer() throws {
        try TestSupport.require(tool: "ostree")
        let server = try serve(build, scratch: dir)
        let v1 = try publish("1.0")
        try machine(server.url)
        let pulled = try cairn(["switch", "--sysroot", sys, "origin:os/x"]).stdout
        XCTAssertTrue(pulled.contains("Good ed25519 signature"), pulled)
        XCTAssertEqual(try status().first?["checksum"] as? String, v1)
        XCTAssertEqual(try status().first?["refspec"] as? String, "origin:os/x")
        try cairn(["upgrade", "--sysroot", sys, "--check"], expect: 77)

        let v2 = try publish("2.0", extra: "echo two > usr/share/two")
        try cairn(["static-delta", "generate", "--repo", build, "--from", v1, "--to", v2])
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key])
        let check = try cairn(["upgrade", "--sysroot", sys, "--check"]).stdout
        XCTAssertTrue(check.contains("Update available") && check.contains(v2) && check.contains("version 2.0"), check)
        server.resetLog()
        let up = try cairn(["upgrade", "--sysroot", sys]).stdout
        XCTAssertTrue(up.contains("Deployed os \(v2).0"), up)
        let paths = server.requests().map(\.path)
        XCTAssertTrue(paths.contains { $0.hasPrefix("/deltas/") }, "the delta was used: \(paths)")
        XCTAssertFalse(paths.contains { $0.hasSuffix(".filez") }, "no loose content object was fetched: \(paths)")
        XCTAssertEqual(try status().map { $0["checksum"] as? String }, [v2, v1])
        try cairn(["upgrade", "--sysroot", sys, "--check"], expect: 77)

        // Another ref; it becomes the origin.
        let other = try publish("9.0", branch: "os/other")
        let sw = try cairn(["switch", "--sysroot", sys, "origin:os/other"]).stdout
        XCTAssertTrue(sw.contains("Deployed os \(other).0"), sw)
        XCTAssertEqual(try status().first?["refspec"] as? String, "origin:os/other")

        // Debian's ostree reads the same config and pulls from the same server
        // (through a remote without ed25519, which its libostree lacks).
        let list = try TestSupport.sh("ostree remote list --repo='\(repo)' -u")
        XCTAssertTrue(list.contains("origin") && list.contains(server.url), list)
        let peer = dir + "/peer"
        try TestSupport.sh("""
            ostree init --repo='\(peer)' --mode=bare
            ostree remote add --repo='\(peer)' --no-gpg-verify srv '\(server.url)'
            ostree pull --repo='\(peer)' srv os/x os/other >/dev/null
            """)
        XCTAssertEqual(try TestSupport.sh("ostree rev-parse --repo='\(peer)' srv:os/x").trimmingCharacters(in: .whitespacesAndNewlines), v2)
        try TestSupport.sh("ostree fsck --repo='\(peer)' >/dev/null")
    }

    /// cairn pulls from a repository that Debian's ostree wrote and summarised
    /// (commits signed with cairn, the summary unsigned).
    func testPullFromARepositoryOstreeWrote() throws {
        try TestSupport.require(tool: "ostree")
        let theirs = dir + "/theirs"
        let tree = try makeTree("1.0")
        try TestSupport.sh("""
            ostree init --repo='\(theirs)' --mode=archive
            cp -a '\(tree)' '\(dir)/t' && mv '\(dir)/t/etc' '\(dir)/t/usr/etc'
            ostree commit --repo='\(theirs)' -b os/x '\(dir)/t' >/dev/null
            """)
        try cairn(["sign", "--repo", theirs, "os/x", "--key", key])
        try TestSupport.sh("ostree summary -u --repo='\(theirs)'")
        let server = try serve(theirs, scratch: dir)
        try machine(server.url, ["--set", "sign-verify-summary=false"])
        let r = try cairn(["pull", "--sysroot", sys, "origin:os/x"])
        XCTAssertTrue(r.stderr.contains("summary of remote origin is not signed"), r.stderr)
        XCTAssertTrue(r.stdout.contains("Good ed25519 signature"), r.stdout)
        XCTAssertEqual(try cairn(["remote", "refs", "--sysroot", sys, "origin"]).stdout.contains("origin:os/x"), true)
    }

    // MARK: Refusals

    func testRefusalsLeaveTheMachineAsItWas() throws {
        let server = try serve(build, scratch: dir)
        let proxy = try faultProxy(to: server.url, scratch: dir)
        let v1 = try publish("1.0")
        try machine(proxy.url)
        try cairn(["switch", "--sysroot", sys, "origin:os/x"])
        try TestSupport.sh("echo 5 > '\(sys)/ostree/deploy/os/var/data'")

        // Unsigned, by an untrusted key, by a revoked key.
        try publish("2.0", sign: [])
        try assertRefused(["upgrade", "--sysroot", sys], "no detached metadata")
        try cairn(["keygen", "--output", dir + "/stranger"])
        try publish("3.0", sign: [dir + "/stranger.secret"])
        try assertRefused(["upgrade", "--sysroot", sys], "verifies with a trusted key")
        try cairn(["keygen", "--output", dir + "/old"])
        try cairn(["remote", "delete", "--sysroot", sys, "origin"])
        try TestSupport.sh("cat '\(pub)' '\(dir)/old.pub' > '\(dir)/both.pub'")
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", dir + "/both.pub", "origin", proxy.url])
        try cairn(["trust", "add", "--revoked", "--sysroot", sys, dir + "/old.pub"])
        try publish("4.0", sign: [dir + "/old.secret"])
        try assertRefused(["upgrade", "--sysroot", sys], "revoked key")

        // Altered on the server: the commit object, then a file object.
        let v5 = try publish("5.0", extra: "echo five > usr/share/five")
        try proxy.inject(.flipByte(), path: "\\.commit$")
        try assertRefused(["upgrade", "--sysroot", sys], "Corrupted commit object")
        try proxy.clear()
        try proxy.inject(.flipByte(), path: "\\.filez$")
        let flipped = try cairn(["upgrade", "--sysroot", sys], expect: 1)
        XCTAssertTrue(flipped.stderr.contains("Corrupted file object"), flipped.stderr)
        XCTAssertNotEqual(try status().first?["checksum"] as? String, v5)
        try proxy.clear()

        // The summary: tampered with, then expired.
        // libostree keeps the last summary and asks the server whether it
        // changed (a 304 carries no body to alter): without that copy, a
        // tampered summary.sig or summary is fetched, and refused.
        try TestSupport.sh("rm -rf '\(repo)/tmp/cache/summaries'")
        try proxy.inject(.flipByte(), path: "^/summary\\.sig$")
        try assertRefused(["upgrade", "--sysroot", sys], "summary of remote origin")
        try proxy.clear()
        try TestSupport.sh("rm -rf '\(repo)/tmp/cache/summaries'")
        try proxy.inject(.flipByte(), path: "^/summary$")
        try assertRefused(["upgrade", "--sysroot", sys], "summary of remote origin")
        try proxy.clear()
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key, "--expires", "1s"])
        sleep(2)
        try assertRefused(["upgrade", "--sysroot", sys], "expired")
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key])

        // A downgrade: the server's ref goes back to v1.
        try cairn(["upgrade", "--sysroot", sys])  // v5 now
        try TestSupport.sh("ostree reset --repo='\(build)' os/x '\(v1)'")
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key])
        try assertRefused(["upgrade", "--sysroot", sys], "downgrade")
        let down = try cairn(["upgrade", "--sysroot", sys, "--allow-downgrade"]).stdout
        XCTAssertTrue(down.contains("Deployed os \(v1)."), down)

        // The server goes away.
        server.stop()
        try assertRefused(["upgrade", "--sysroot", sys], "origin")
    }

    /// A server whose ref os/a names a commit bound to os/b (ostree.ref-binding):
    /// pull, upgrade and switch refuse it as libostree does, naming the ref and
    /// the binding, and leave the machine as it was (the refused commit object
    /// is not kept); --disable-verify-bindings takes it.
    func testCommitBoundToAnotherRefIsRefused() throws {
        let server = try serve(build, scratch: dir)
        let v1 = try publish("1.0", branch: "os/a")
        try machine(server.url)
        try cairn(["switch", "--sysroot", sys, "origin:os/a"])
        let v2 = try publish("2.0", branch: "os/b", extra: "echo two > usr/share/two")
        try TestSupport.sh("cp '\(build)/refs/heads/os/b' '\(build)/refs/heads/os/a'")
        try cairn(["summary", "--repo", build, "--update", "--sign-key", key])
        let reason = "refusing origin:os/a at \(v2): the commit is bound to 'os/b' (ostree.ref-binding), not to 'os/a'"
        try assertRefused(["pull", "--sysroot", sys, "origin:os/a"], reason)
        try assertRefused(["upgrade", "--sysroot", sys], reason)
        try assertRefused(["switch", "--sysroot", sys, "origin:os/a"], reason)
        XCTAssertEqual(try TestSupport.sh("cat '\(repo)/refs/remotes/origin/os/a'"), v1 + "\n")
        try cairn(["show", "--repo", repo, v2], expect: 1)

        // The same commit under the ref it is bound to is fine, and the
        // remote's os/a with bindings unchecked.
        try cairn(["pull", "--sysroot", sys, "origin:os/b"])
        let taken = try cairn(["pull", "--sysroot", sys, "--disable-verify-bindings", "origin:os/a"])
        XCTAssertTrue(taken.stdout.contains("Good ed25519 signature"), taken.stdout)
        XCTAssertEqual(try TestSupport.sh("cat '\(repo)/refs/remotes/origin/os/a'"), v2 + "\n")
    }

    /// A server that stops sending mid-object is given up on after the stall
    /// timeout, not waited for forever (Debian's libostree has no read timeout).
    func testStalledServerIsGivenUpOn() throws {
        let server = try serve(build, scratch: dir)
        let proxy = try faultProxy(to: server.url, scratch: dir)
        try publish("1.0")
        try machine(proxy.url)
        try proxy.inject(.stall(seconds: 60), path: "\\.filez$")
        let start = Date()
        let r = try cairn(["pull", "--sysroot", sys, "origin:os/x", "--stall-timeout", "2"], expect: 1)
        XCTAssertLessThan(Date().timeIntervalSince(start), 30)
        XCTAssertTrue(r.stderr.contains("nothing arrived") && r.stderr.contains("for 2 s"), r.stderr)
        XCTAssertTrue(try cairn(["refs", "--repo", repo]).stdout.isEmpty)
    }

    // MARK: Resuming, mirrors, a full disk

    func testInterruptedPullResumesFetchingOnlyWhatIsMissing() throws {
        let server = try serve(build, scratch: dir)
        let proxy = try faultProxy(to: server.url, scratch: dir)
        try publish("1.0", extra: "for i in $(seq 1 40); do echo $i > usr/share/f$i; done")
        try machine(proxy.url)
        try proxy.inject(.dropAfterRequests(25), path: "\\.filez$")
        try cairn(["pull", "--sysroot", sys, "origin:os/x", "--disable-static-deltas"], expect: 1)
        let first = proxy.requests().filter { $0.path.hasSuffix(".filez") && $0.status == 200 }.map(\.path)
        XCTAssertGreaterThan(first.count, 10)
        try proxy.clear()
        proxy.resetLog()
        try cairn(["pull", "--sysroot", sys, "origin:os/x", "--disable-static-deltas"])
        let second = proxy.requests().filter { $0.path.hasSuffix(".filez") }.map(\.path)
        XCTAssertTrue(Set(second).isDisjoint(with: first), "the second pull fetched again what the first had: \(Set(second).intersection(first))")
        XCTAssertTrue(try cairn(["fsck", "--repo", repo]).stdout.contains("no problems"))
    }

    func testMirrorlistWithADeadFirstMirror() throws {
        let server = try serve(build, scratch: dir)
        try publish("1.0")
        let dead = try Loopback.freePort()
        try TestSupport.sh("mkdir -p '\(dir)/ml' && printf 'http://127.0.0.1:\(dead)/\\n\(server.url)/\\n' > '\(dir)/ml/mirrors'")
        let listServer = try serve(dir + "/ml", scratch: dir)
        try machine("mirrorlist=\(listServer.url)/mirrors")
        let r = try cairn(["pull", "--sysroot", sys, "origin:os/x"])
        XCTAssertTrue(r.stdout.contains("Good ed25519 signature"), r.stdout)
        XCTAssertTrue(server.requests().contains { $0.path.hasSuffix(".commit") })
    }

    /// A mirror: `pull --mirror` into an archive repository keeps the refs as
    /// local branches and the signatures, hashes nothing for deploying (no
    /// digest cache), and, once summarised and served, feeds a machine.
    func testMirrorIntoAnArchiveRepositoryFeedsAMachine() throws {
        let server = try serve(build, scratch: dir)
        let v1 = try publish("1.0")
        let mirror = dir + "/mirror"
        try cairn(["init", "--repo", mirror, "--mode", "archive"])
        try cairn(["remote", "add", "--repo", mirror, "--sign-keys", pub, "upstream", server.url])
        let r = try cairn(["pull", "--repo", mirror, "--mirror", "upstream:os/x"])
        XCTAssertTrue(r.stdout.contains("Good ed25519 signature"), r.stdout)
        XCTAssertEqual(try cairn(["refs", "--repo", mirror]).stdout, "os/x\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: mirror + "/cairn/verity-digests"))
        try cairn(["summary", "--repo", mirror, "--update", "--sign-key", key])
        let mirrorServer = try serve(mirror, scratch: dir)
        try machine(mirrorServer.url)
        let pulled = try cairn(["switch", "--sysroot", sys, "origin:os/x"]).stdout
        XCTAssertTrue(pulled.contains("Good ed25519 signature") && pulled.contains("Deployed os \(v1).0"), pulled)
        XCTAssertTrue(mirrorServer.requests().contains { $0.path.hasSuffix(".commitmeta") })
    }

    func testFullDiskMidPullFailsCleanlyAndTheNextPullSucceeds() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        let server = try serve(build, scratch: dir)
        try publish("1.0", extra: "head -c 6000000 /dev/urandom > usr/share/big")
        let c = cairnPath
        let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            set -e
            mkdir -p '\(sys)'
            mount -t tmpfs -o size=5m tmpfs '\(sys)'
            '\(c)' sysroot init '\(sys)' --stateroot os >/dev/null
            '\(c)' remote add --sysroot '\(sys)' --sign-keys '\(pub)' origin '\(server.url)' >/dev/null
            if '\(c)' pull --sysroot '\(sys)' origin:os/x 2>'\(dir)/pull.err'; then echo "pull succeeded"; exit 1; fi
            # ENOSPC, or libostree's reserve (min-free-space-percent) first
            grep -q -E 'No space left on device|min-free-space' '\(dir)/pull.err'
            test "$(grep -c 'cairn: error:' '\(dir)/pull.err')" = 1
            test -z "$('\(c)' refs --repo '\(repo)')"
            '\(c)' fsck --repo '\(repo)' 2>'\(dir)/fsck.err' >/dev/null
            grep -q 'is partial' '\(dir)/fsck.err' 
            mount -o remount,size=64m '\(sys)'
            '\(c)' pull --sysroot '\(sys)' origin:os/x >/dev/null
            '\(c)' fsck --repo '\(repo)' | grep -q 'no problems'
            '\(c)' refs --repo '\(repo)' | grep -q '^origin:os/x$'
            umount '\(sys)'
            """])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    // MARK: Bad input

    func testRemoteCommandsAndBadInput() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try cairn(["remote", "add", "--sysroot", sys, "origin", "http://127.0.0.1:1/"], expect: 2)  // neither keys nor --no-sign-verify
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", pub, "bad name", "http://127.0.0.1:1/"], expect: 1)
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", pub, "origin", "ftp://example/"], expect: 1)
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", dir + "/missing.pub", "origin", "http://127.0.0.1:1/"], expect: 1)
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", pub, "origin", "http://127.0.0.1:1/"])
        try cairn(["remote", "add", "--sysroot", sys, "--sign-keys", pub, "origin", "http://127.0.0.1:1/"], expect: 1)
        try cairn(["remote", "add", "--sysroot", sys, "--no-sign-verify", "open", "http://127.0.0.1:2/"])
        XCTAssertEqual(try cairn(["remote", "list", "--sysroot", sys]).stdout, "open\norigin\n")
        let show = try cairn(["remote", "show", "--sysroot", sys, "origin"]).stdout
        XCTAssertTrue(show.contains("Trusted key: \(try String(contentsOfFile: pub, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))"), show)
        let unreachable = try cairn(["pull", "--sysroot", sys, "origin:os/x"], expect: 1)
        XCTAssertTrue(unreachable.stderr.contains("remote origin") && unreachable.stderr.contains("127.0.0.1:1"), unreachable.stderr)
        try cairn(["pull", "--sysroot", sys, "nosuch:os/x"], expect: 1)
        try cairn(["upgrade", "--sysroot", sys], expect: 1)  // nothing deployed
        try cairn(["switch", "--sysroot", sys, "origin:"], expect: 1)
        try cairn(["remote", "delete", "--sysroot", sys, "open"])
        try cairn(["remote", "delete", "--sysroot", sys, "open"], expect: 1)
    }
}
