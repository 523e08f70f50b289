import CairnTestSupport
import Foundation
import XCTest

/// What a security review found (issue 10): the running deployment kept,
/// deployed commits kept from prune, nothing signed from a cache, no
/// boot-entry injection, and the command line's rough edges.
final class SafetyTests: SysrootTestCase {
    override var scratchName: String { "cairn-safety" }

    // MARK: The booted deployment

    func testBootedDeploymentSurvivesTenCycles() throws {
        try bootedDeploymentSurvivesTenCycles()
    }

    /// A booted system's /sysroot is read-only (`[sysroot] readonly`): deploy
    /// and rollback write through a private mount namespace, and the mount
    /// stays read-only for everyone else.
    func testReadOnlySysrootIsWrittenThroughAPrivateNamespace() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        try deployFirstVersion()
        try commit("2.0")
        // An update server (a file:// one will do) for a pull inside.
        try cairn(["init", "--repo", dir + "/build", "--mode", "archive"])
        try cairn(["commit", "--repo", dir + "/build", "-b", "os/y", "--add-metadata-string", "version=3.0", try makeTree("3.0")])
        try cairn(["summary", "--repo", dir + "/build", "--update"])
        let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            set -e
            c='\(cairnPath)'
            mount --bind '\(sys)' '\(sys)'
            mount -o remount,bind,ro '\(sys)'
            if touch '\(sys)/ostree/probe' 2>/dev/null; then echo "the bind is writable"; exit 1; fi
            $c deploy --sysroot '\(sys)' os/x
            $c rollback --sysroot '\(sys)'
            $c remote add --sysroot '\(sys)' build 'file://\(dir)/build' --no-sign-verify
            $c switch --sysroot '\(sys)' build:os/y
            $c remote add --sysroot '\(sys)' origin http://127.0.0.1:9/repo --no-sign-verify
            if touch '\(sys)/ostree/probe' 2>/dev/null; then echo "cairn left the mount writable"; exit 1; fi
            $c status --sysroot '\(sys)' --json
            umount '\(sys)'
            """])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(try status().count, 2)
        XCTAssertEqual(try status().first?["version"] as? String, "3.0", "switch pulled and deployed")
        XCTAssertEqual(try cairn(["remote", "list", "--sysroot", sys]).stdout.contains("origin"), true)
    }

    /// A deployment whose etc/ is mounted somewhere (as a running system's
    /// /etc is) is kept by deploy and refused by undeploy, even when nothing
    /// says it is booted.
    func testDeploymentBehindAMountIsNeverRemoved() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        let d1 = try deployFirstVersion()
        for v in ["2.0", "3.0"] { try commit(v) }
        let tree4 = try makeTree("4.0")
        let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            set -e
            c='\(cairnPath)'
            mkdir -p '\(dir)/live-etc'
            mount --bind '\(d1)/etc' '\(dir)/live-etc'
            $c deploy --sysroot '\(sys)' os/x >/dev/null
            $c commit --repo '\(repo)' -b os/x '\(tree4)' >/dev/null 2>&1
            $c deploy --sysroot '\(sys)' os/x > '\(dir)/deploy.out'
            test -f '\(d1)/.ostree.cfs'
            test -f '\(dir)/live-etc/passwd'
            if $c undeploy --sysroot '\(sys)' 2 2>'\(dir)/undeploy.err'; then echo "undeploy succeeded"; exit 1; fi
            grep -q 'backs the mount' '\(dir)/undeploy.err'
            $c status --sysroot '\(sys)' --json > '\(dir)/status.json'
            umount '\(dir)/live-etc'
            """])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let out = try String(contentsOfFile: dir + "/deploy.out", encoding: .utf8)
        XCTAssertFalse(out.contains("  removed os "), out)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try Data(contentsOf: URL(fileURLWithPath: dir + "/status.json"))) as? [String: Any])
        XCTAssertEqual((json["deployments"] as? [[String: Any]])?.count, 3, "new default, rollback and the mounted one")
        // Unmounted, it is an ordinary old deployment again.
        try commit("5.0")
        XCTAssertTrue(try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout.contains("  removed os "))
    }

    // MARK: Prune keeps deployments

    func testPruneByCairnAndOstreeKeepsEveryDeployment() throws {
        try TestSupport.require(tool: "ostree")
        try deployFirstVersion()
        try commit("2.0", extra: "echo two > usr/share/two")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let refs = try cairn(["refs", "--repo", repo]).stdout
        XCTAssertTrue(refs.contains("ostree/"), "deployment refs: \(refs)")
        // The branch goes; only the deployments hold the commits now.
        try TestSupport.sh("rm -f '\(repo)/refs/heads/os/x'")
        try cairn(["prune", "--repo", repo, "--refs-only"])
        try TestSupport.sh("ostree prune --repo='\(repo)' --refs-only >/dev/null")
        let fsck = try cairn(["fsck", "--repo", repo]).stdout
        XCTAssertTrue(fsck.contains("and the deployments of") && fsck.contains("no problems"), fsck)
        for d in try status() {
            let c = d["checksum"] as! String
            XCTAssertNotEqual(d["composefsDigest"] as? String, "unrecorded")
            let rebuilt = try cairn(["image", "create", "--repo", repo, "--from-commit", c, dir + "/rebuilt.cfs", "--print-digest"]).lastLine
            XCTAssertEqual(rebuilt, d["composefsDigest"] as? String, "deployment \(c): the image rebuilt from the repository")
            XCTAssertEqual(try cairn(["image", "missing-objects", "--basedir", repo + "/objects", deploymentPath(d) + "/.ostree.cfs"]).stdout, "")
        }
        try cairn(["rollback", "--sysroot", sys])
        // Refs follow the boot set: still two after the rollback.
        XCTAssertEqual(try cairn(["refs", "--repo", repo]).stdout.split(separator: "\n").filter { $0.hasPrefix("ostree/") }.count, 2)

        // A deployment whose commit went anyway is reported, and cannot become the default.
        let victim = try status()[1]["checksum"] as! String
        try TestSupport.sh("rm -f '\(repo)/objects/\(victim.prefix(2))/\(victim.dropFirst(2)).commit'")
        let bad = try cairn(["fsck", "--sysroot", sys], expect: 1)
        XCTAssertTrue(bad.stderr.contains("deployment 1") && bad.stderr.contains("is missing"), bad.stderr)
        let refused = try cairn(["rollback", "--sysroot", sys], expect: 1)
        XCTAssertTrue(refused.stderr.contains("missing"), refused.stderr)
    }

    /// cleanup removes leftovers whose names are not UTF-8, and says so with
    /// the name escaped.
    func testCleanupRemovesLeftoversNamedWithAnyBytes() throws {
        try deployFirstVersion()
        try TestSupport.sh("mkdir \"$(printf '\(sys)/ostree/deploy/os/deploy/junk\\351')\" && touch \"$(printf '\(sys)/boot/ostree/old\\377')\"")
        let out = try cairn(["cleanup", "--sysroot", sys]).stdout
        XCTAssertTrue(out.contains("Deleted \(sys)/ostree/deploy/os/deploy/junk\\xe9"), out)
        XCTAssertTrue(out.contains("Deleted \(sys)/boot/ostree/old\\xff"), out)
        XCTAssertEqual(try TestSupport.sh("ls '\(sys)/ostree/deploy/os/deploy' '\(sys)/boot/ostree' | grep -c -e junk -e old || true"), "0\n")
        try assertEntriesComplete()
    }

    // MARK: The verity digest cache

    /// A valid record appended to the cache (an object → the digest of other
    /// bytes) changes neither what a commit records nor what deploy accepts;
    /// fsck names it.
    func testPoisonedDigestCacheNeitherSignsNorBoots() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try cairn(["keygen", "--output", dir + "/key"])
        try commit("1.0", ["--sign-key", dir + "/key.secret"])
        let cache = repo + "/cairn/verity-digests"
        XCTAssertTrue(FileManager.default.fileExists(atPath: cache))
        // An object v2 shares with v1: /usr/etc/passwd.
        let object = try TestSupport.sh("cd '\(repo)/objects' && grep -l 'root:x:0:0' */*.file | head -1 | sed 's|/||; s|\\.file$||'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(object.count, 64)
        func poison() throws {
            try TestSupport.sh("""
                python3 - '\(cache)' '\(object)' <<'EOF'
                import hashlib, sys
                key = bytes.fromhex(sys.argv[2]); digest = hashlib.sha256(b'other bytes').digest()
                record = key + digest
                open(sys.argv[1], 'ab').write(record + hashlib.sha256(record).digest()[:8])
                EOF
                """)
        }
        try poison()
        let v2 = try commit("2.0", extra: "echo two > usr/share/two", ["--sign-key", dir + "/key.secret"])
        let shown = try XCTUnwrap(try JSONSerialization.jsonObject(with: cairn(["show", "--repo", repo, "--json", v2]).stdoutData) as? [String: Any])
        let digest = try XCTUnwrap(shown["composefsDigest"] as? String)
        // An independent build: no cache at all.
        try TestSupport.sh("cp '\(cache)' '\(dir)/cache.saved' && rm '\(cache)'")
        let fresh = try cairn(["image", "create", "--repo", repo, "--from-commit", v2, dir + "/fresh.cfs", "--print-digest"]).lastLine
        XCTAssertEqual(digest, fresh, "the signed commit records what the objects say, not what the cache said")
        try TestSupport.sh("cp '\(dir)/cache.saved' '\(cache)'")
        try poison()
        let report = try cairn(["fsck", "--repo", repo], expect: 1)
        XCTAssertTrue(report.stderr.contains("fs-verity digest cache") && report.stderr.contains(object), report.stderr)
        // Deploy with a poisoned cache: the image is the signed one.
        try poison()
        let out = try cairn(["deploy", "--sysroot", sys, "os/x", "--keys", dir + "/key.pub"]).stdout
        XCTAssertTrue(out.contains("composefs digest: \(fresh)"), out)
        XCTAssertEqual(try cairn(["image", "digest", deploymentPath(try status()[0]) + "/.ostree.cfs"]).lastLine, fresh)
    }

    /// An object changed on disk is named by deploy, which refuses it.
    func testDeployNamesACorruptObject() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0")
        try TestSupport.sh("rm -f '\(repo)/cairn/verity-digests'")
        let passwd = try TestSupport.sh("cd '\(repo)/objects' && grep -l 'root:x:0:0' */*.file | head -1").trimmingCharacters(in: .whitespacesAndNewlines)
        try TestSupport.sh("chattr -i '\(repo)/objects/\(passwd)' 2>/dev/null; printf 'toor:x:0:0:evil:/root:/bin/sh\\n' > '\(repo)/objects/\(passwd)'")
        let r = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(r.stderr.contains("corrupt") && r.stderr.contains(passwd.replacingOccurrences(of: "/", with: "").replacingOccurrences(of: ".file", with: "")), r.stderr)
        XCTAssertEqual(try status().count, 0)
    }

    // MARK: Boot entries

    func testCommitContentCannotInjectBootEntryLines() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        // A CR LF inside PRETTY_NAME: the line ends at LF, nothing is injected.
        try commit("1.0", extra: "printf 'NAME=x\\r\\nPRETTY_NAME=\"Evil\\r\\noptions ostree.prepare-root.composefs=no\"\\r\\n' > usr/lib/os-release")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let entry = try TestSupport.sh("cat '\(sys)'/boot/loader/entries/*.conf")
        XCTAssertEqual(entry.split(separator: "\n").filter { $0.hasPrefix("options") }.count, 1, entry)
        XCTAssertFalse(entry.contains("composefs=no"), entry)
        XCTAssertFalse(entry.contains("\r"), entry.debugDescription)
        // A bare CR (or any control character) in the title is refused.
        try commit("2.0", extra: "printf 'PRETTY_NAME=\"Evil\\roptions x\"\\n' > usr/lib/os-release")
        let cr = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(cr.stderr.contains("PRETTY_NAME") && cr.stderr.contains("control character"), cr.stderr)
        // A kernel version with a newline.
        try commit("3.0", extra: "mv usr/lib/modules/6.12.0 \"usr/lib/modules/6.12.0\nsigned=no\"")
        let kv = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(kv.stderr.contains("kernel version"), kv.stderr)
        XCTAssertEqual(try status().count, 1, "nothing deployed by the refused commits")
        XCTAssertEqual(try TestSupport.sh("cat '\(sys)'/boot/loader/entries/*.conf"), entry)
    }

    // MARK: /var and sync

    func testFirstDeploymentFillsAnEmptyVarOnly() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0", extra: "mkdir -p var/lib/dpkg && echo 'Package: base-files' > var/lib/dpkg/status")
        let out = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(out.contains("/var: the stateroot's empty /var was filled"), out)
        let varDir = sys + "/ostree/deploy/os/var"
        XCTAssertEqual(try String(contentsOfFile: varDir + "/lib/dpkg/status", encoding: .utf8), "Package: base-files\n")
        try TestSupport.sh("echo local >> '\(varDir)/lib/dpkg/status'")
        let before = try snapshot(varDir)
        try commit("2.0", extra: "mkdir -p var/lib/dpkg && echo 'Package: other' > var/lib/dpkg/status")
        let out2 = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertFalse(out2.contains("/var:"), out2)
        XCTAssertEqual(try snapshot(varDir), before, "a /var in use is never touched")
    }

    /// deploy flushes its own filesystems (syncfs), never the whole machine (sync).
    func testDeployDoesNotCallSync() throws {
        try TestSupport.require(tool: "strace")
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0")
        let r = try TestSupport.run("strace", ["-f", "-e", "trace=sync,syncfs", "-o", dir + "/trace", cairnPath, "deploy", "--sysroot", sys, "os/x"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let trace = try String(contentsOfFile: dir + "/trace", encoding: .utf8)
        XCTAssertFalse(trace.split(separator: "\n").contains { $0.contains(" sync()") || $0.hasSuffix("sync()") || $0.contains("sync() =") }, trace)
        XCTAssertTrue(trace.contains("syncfs("), trace)
    }

    // MARK: Locks

    func testLockFileIsNeverFollowedAndTheHolderIsNamedAtOnce() throws {
        try TestSupport.require(tool: "flock")
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0")
        // A symlink planted as the lock: refused, its target untouched.
        try TestSupport.sh("echo precious > '\(dir)/victim' && ln -s '\(dir)/victim' '\(sys)/ostree/lock'")
        let planted = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(planted.stderr.contains("symlink"), planted.stderr)
        XCTAssertEqual(try String(contentsOfFile: dir + "/victim", encoding: .utf8), "precious\n")
        try TestSupport.sh("rm '\(sys)/ostree/lock'")
        try cairn(["deploy", "--sysroot", sys, "os/x"])

        // A live holder that left a stale record of someone else.
        try commit("2.0")
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/flock")
        holder.arguments = [sys + "/ostree/lock", "-c", "echo 'pid 999999: cairn deploy' > '\(sys)/ostree/lock'; exec sleep 3"]
        try holder.run()
        defer { holder.waitUntilExit() }
        usleep(400_000)
        let start = Date()
        let r = try TestSupport.run(cairnPath, ["deploy", "--sysroot", sys, "os/x"], environment: ["CAIRN_LOCK_TIMEOUT": "1"])
        XCTAssertEqual(r.status, 1)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 1, "it waited")
        let lines = r.stderr.split(separator: "\n")
        XCTAssertTrue(lines.first?.contains("waiting for the sysroot lock") == true, r.stderr)
        XCTAssertTrue(r.stderr.contains("pid \(holder.processIdentifier)"), "the real holder: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("stale") && r.stderr.contains("pid 999999: cairn deploy"), r.stderr)
        holder.waitUntilExit()
        try cairn(["deploy", "--sysroot", sys, "os/x"])  // free again
        XCTAssertEqual(try status().count, 2)
    }

    // MARK: Signing

    /// Eight `cairn sign` at once on one commit: every signature is kept.
    func testConcurrentSignersKeepEverySignature() throws {
        try cairn(["init", "--repo", dir + "/r"])
        try TestSupport.sh("mkdir -p '\(dir)/src' && echo x > '\(dir)/src/x'")
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "b", dir + "/src"]).lastLine
        for round in 0..<2 {
            var signers: [Process] = []
            for i in 0..<8 {
                try cairn(["keygen", "--output", dir + "/k\(round)-\(i)"])
                let p = Process()
                p.executableURL = URL(fileURLWithPath: cairnPath)
                p.arguments = ["sign", "--repo", dir + "/r", "--key", dir + "/k\(round)-\(i).secret", c]
                p.standardOutput = FileHandle.nullDevice
                signers.append(p)
            }
            signers.forEach { try? $0.run() }
            signers.forEach { $0.waitUntilExit() }
            XCTAssertEqual(signers.map(\.terminationStatus), Array(repeating: 0, count: 8))
            let show = try XCTUnwrap(JSONSerialization.jsonObject(with: cairn(["show", "--repo", dir + "/r", "--json", c]).stdoutData) as? [String: Any])
            XCTAssertEqual((show["signatures"] as? [String: Any])?["ed25519Count"] as? Int, 8 * (round + 1), "round \(round)")
        }
    }

    func testVerifyReportsEverySignature() throws {
        try cairn(["init", "--repo", dir + "/r"])
        try TestSupport.sh("mkdir -p '\(dir)/src' && echo x > '\(dir)/src/x'")
        for k in ["good", "stranger", "old"] { try cairn(["keygen", "--output", dir + "/" + k]) }
        let c = try cairn(["commit", "--repo", dir + "/r", "-b", "b", dir + "/src"]).lastLine
        for k in ["stranger", "old", "good"] { try cairn(["sign", "--repo", dir + "/r", "--key", dir + "/\(k).secret", c]) }
        try TestSupport.sh("cat '\(dir)/good.pub' '\(dir)/old.pub' > '\(dir)/trusted.pub'")
        let out = try cairn(["verify", "--repo", dir + "/r", "--keys", dir + "/trusted.pub", "--revoked-keys", dir + "/old.pub", c]).stdout
        XCTAssertTrue(out.contains("ed25519 signature #0: no trusted key verifies it"), out)
        XCTAssertTrue(out.contains("ed25519 signature #1: signature by revoked key"), out)
        XCTAssertTrue(out.contains("ed25519 signature #2: good signature by trusted key"), out)
    }

    /// A commit killed after it was written and signed, before its
    /// transaction ended, moves no branch; a branch only ever points at a
    /// signed commit.
    func testBranchNeverPointsAtAnUnsignedCommit() throws {
        try cairn(["init", "--repo", dir + "/r"])
        try cairn(["keygen", "--output", dir + "/key"])
        try TestSupport.sh("mkdir -p '\(dir)/src' && echo 1 > '\(dir)/src/x'")
        let first = try cairn(["commit", "--repo", dir + "/r", "-b", "b", "--sign-key", dir + "/key.secret", dir + "/src"]).lastLine
        try TestSupport.sh("echo 2 > '\(dir)/src/x'")
        let r = try TestSupport.run(cairnPath, ["commit", "--repo", dir + "/r", "-b", "b", "--sign-key", dir + "/key.secret", dir + "/src"],
                                    environment: ["CAIRN_TEST_CRASH_AT": "commit-signed"])
        XCTAssertEqual(r.status, 9, "killed at commit-signed: \(r.stderr)")
        XCTAssertEqual(try TestSupport.sh("cat '\(dir)/r/refs/heads/b'"), first + "\n", "the branch did not move")
        try cairn(["verify", "--repo", dir + "/r", "--keys", dir + "/key.pub", "b"])
        let again = try cairn(["commit", "--repo", dir + "/r", "-b", "b", "--sign-key", dir + "/key.secret", dir + "/src"]).lastLine
        try cairn(["verify", "--repo", dir + "/r", "--keys", dir + "/key.pub", again])
        XCTAssertTrue(try cairn(["fsck", "--repo", dir + "/r"]).stdout.contains("no problems"))
    }

    // MARK: Trust by default

    func testConfiguredTrustIsEnforcedByDeployAndShownByStatus() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        for k in ["vendor", "other"] { try cairn(["keygen", "--output", dir + "/" + k]) }
        // Signed boot configured in the tree, no key trusted yet: a loud warning.
        let conf = "mkdir -p usr/lib/ostree && printf '[composefs]\\nenabled = signed\\n' > usr/lib/ostree/prepare-root.conf"
        try commit("1.0", extra: conf, ["--sign-key", dir + "/vendor.secret"])
        let warned = try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertTrue(warned.stderr.contains("warning: no trusted keys are configured"), warned.stderr)

        let added = try cairn(["trust", "add", "--sysroot", sys, dir + "/vendor.pub"]).stdout
        XCTAssertTrue(added.contains("Trusted key"), added)
        XCTAssertTrue(try TestSupport.sh("ostree config --repo='\(repo)' get cairn.trusted-ed25519-keys").contains(try String(contentsOfFile: dir + "/vendor.pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        // Unsigned, and signed by another key: refused, nothing changes.
        let before = try cairn(["status", "--sysroot", sys, "--json"]).stdout
        try commit("2.0", extra: conf)
        let unsigned = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(unsigned.stderr.contains("refusing to deploy") && unsigned.stderr.contains("no detached metadata"), unsigned.stderr)
        try commit("3.0", extra: conf, ["--sign-key", dir + "/other.secret"])
        let untrusted = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(untrusted.stderr.contains("none of the 1 ed25519 signature(s) verifies"), untrusted.stderr)
        // No composefs digest where signed boot is configured.
        try commit("4.0", extra: conf, ["--sign-key", dir + "/vendor.secret", "--no-composefs"])
        let nodigest = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(nodigest.stderr.contains("records no composefs digest"), nodigest.stderr)
        XCTAssertEqual(try cairn(["status", "--sysroot", sys, "--json"]).stdout, before)
        // Signed by the vendor: deployed, and status says it verifies.
        try commit("5.0", extra: conf, ["--sign-key", dir + "/vendor.secret"])
        let ok = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(ok.contains("Good ed25519 signature"), ok)
        let st = try status()
        XCTAssertEqual(st[0]["verification"] as? String, "verified")
        XCTAssertTrue((st[0]["verifiedBy"] as? String)?.contains("trusted key") == true)
        // Revoked: the next deploy of its commits is refused, status says so.
        try cairn(["trust", "add", "--revoked", "--sysroot", sys, dir + "/vendor.pub"])
        XCTAssertTrue((try status()[0]["verification"] as? String)?.hasPrefix("not verified") == true)
        let list = try cairn(["trust", "list", "--sysroot", sys]).stdout
        XCTAssertTrue(list.contains("(revoked)"), list)
        try cairn(["trust", "remove", "--sysroot", sys, dir + "/vendor.pub"])
        XCTAssertTrue(try cairn(["trust", "list", "--sysroot", sys]).stdout.contains("No trusted keys"))
        try cairn(["trust", "add", "--sysroot", sys, dir + "/nothing.pub"], expect: 1)
    }

    // MARK: The command line

    func testClosedPipeEndsQuietly() throws {
        try cairn(["init", "--repo", dir + "/r"])
        try TestSupport.sh("mkdir -p '\(dir)/src' && for i in $(seq 1 4000); do echo $i > '\(dir)/src/file-'$i; done")
        try cairn(["commit", "--repo", dir + "/r", "-b", "b", dir + "/src"])
        let r = try TestSupport.run("/bin/bash", ["-c", "'\(cairnPath)' ls --repo '\(dir)/r' -R b | head -1; echo \"status ${PIPESTATUS[0]}\""])
        XCTAssertEqual(r.stdout.split(separator: "\n").last, "status 141", r.stdout)
        XCTAssertEqual(r.stderr, "", "no backtrace")
    }

    func testVersionAndMistypedNames() throws {
        XCTAssertEqual(try cairn(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, false)
        let option = try cairn(["deploy", "--sysroot", sys, "--kargs", "quiet", "os/x"], expect: 2)
        XCTAssertTrue(option.stderr.contains("'--kargs'") && option.stderr.contains("'--karg'"), option.stderr)
        XCTAssertFalse(option.stderr.contains("Missing expected argument"), option.stderr)
        let command = try cairn(["stauts"], expect: 2)
        XCTAssertTrue(command.stderr.contains("did you mean 'status'"), command.stderr)
        let sub = try cairn(["trust", "lsit"], expect: 2)
        XCTAssertTrue(sub.stderr.contains("did you mean 'list'"), sub.stderr)
    }

    /// On a machine that is not an ostree system, nothing defaults to its
    /// own / or /boot. Run in a throwaway copy of / (an overlay, in a private
    /// mount namespace), so that a regression cannot touch this machine.
    func testNoCommandChangesTheHostRootByDefault() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        guard !FileManager.default.fileExists(atPath: "/ostree") else { throw XCTSkip("this machine is an ostree system") }
        let tree = try makeTree("1.0")
        let r = try TestSupport.inThrowawayRoot(scratch: dir, """
            c='\(cairnPath)'
            for args in "init" "commit -b x \(tree)" "status" "sysroot init /" "deploy os/x"; do
                if $c $args >/tmp/out 2>/tmp/err; then echo "cairn $args succeeded"; fi
                echo "== $args: $(cat /tmp/err)"
            done
            ls -d /ostree /boot/ostree /boot/loader 2>/dev/null && echo "the root was changed"
            true
            """)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("succeeded"), r.stdout)
        XCTAssertFalse(r.stdout.contains("the root was changed"), r.stdout)
        XCTAssertFalse(r.stdout.contains("sysroot init /'"), "no suggestion to initialise the host: \(r.stdout)")
        XCTAssertTrue(r.stdout.contains("== status: cairn: error: sysroot /: this machine is not an ostree or cairn system"), r.stdout)
        XCTAssertTrue(r.stdout.contains("== sysroot init /: cairn: error: sysroot init /: this would change the running machine's root"), r.stdout)
    }
}
