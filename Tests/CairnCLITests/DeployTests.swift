import CairnTestSupport
import Foundation
import XCTest

/// Deployments on a sysroot in a scratch folder: the scenario, interop with
/// Debian's `ostree admin`, crash safety, a full disk, and bad input.
final class DeployTests: SysrootTestCase {
    override var scratchName: String { "cairn-deploy" }

    // MARK: The whole job

    func testDeployEtcMergeRollbackPinUndeployCleanup() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])  // idempotent
        let v1 = try commit("1.0")
        let out1 = try cairn(["deploy", "--sysroot", sys, "os/x", "--karg", "root=/dev/vda", "--karg", "console=ttyS0"]).stdout
        XCTAssertTrue(out1.contains("Deployed os \(v1).0"), out1)
        var st = try status()
        XCTAssertEqual(st.count, 1)
        XCTAssertEqual(st[0]["checksum"] as? String, v1)
        XCTAssertEqual(st[0]["default"] as? Bool, true)
        XCTAssertEqual(st[0]["kernelArguments"] as? [String], ["root=/dev/vda", "console=ttyS0"])
        let d1 = deploymentPath(st[0])

        // The image on disk is the one the commit records.
        XCTAssertEqual(try cairn(["image", "digest", d1 + "/.ostree.cfs"]).lastLine, st[0]["composefsDigest"] as? String)
        // The kernel is where the entry says.
        let entries = try TestSupport.sh("cat '\(sys)'/boot/loader/entries/*.conf")
        XCTAssertTrue(entries.contains("options root=/dev/vda console=ttyS0 ostree=/ostree/boot.1/os/"), entries)
        let linux = entries.split(separator: "\n").first { $0.hasPrefix("linux ") }!.dropFirst(6)
        XCTAssertEqual(try String(contentsOfFile: sys + "/boot" + linux, encoding: .utf8), "kernel-1\n")

        // Changes under v1: edit, add, delete, chmod, a new directory, a symlink; /var data.
        try TestSupport.sh("""
            set -e
            cd '\(d1)/etc'
            echo edited-host > hostname
            echo added > added.conf
            rm group
            chmod 0600 passwd
            mkdir -p newdir/sub && echo deep > newdir/sub/file
            ln -s hostname hostlink
            echo 1 > '\(sys)/ostree/deploy/os/var/counter'
            """)
        let varBefore = try snapshot(sys + "/ostree/deploy/os/var")

        // v2: new defaults (a changed default, a new default file).
        let v2 = try commit("2.0", extra: "echo new-default > etc/new-default.conf && echo changed > etc/passwd")
        let out2 = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(out2.contains("/etc: 2 modified, 5 added, 1 removed"), out2)
        st = try status()
        XCTAssertEqual(st.map { $0["checksum"] as? String }, [v2, v1])
        XCTAssertEqual(st[1]["rollback"] as? Bool, true)
        XCTAssertEqual(st[0]["kernelArguments"] as? [String], ["root=/dev/vda", "console=ttyS0"], "kernel arguments follow the default")
        let d2 = deploymentPath(st[0])
        let etc2 = d2 + "/etc"
        XCTAssertEqual(try String(contentsOfFile: etc2 + "/hostname", encoding: .utf8), "edited-host\n")
        XCTAssertEqual(try String(contentsOfFile: etc2 + "/added.conf", encoding: .utf8), "added\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: etc2 + "/group"))
        XCTAssertEqual(try TestSupport.sh("stat -c %a '\(etc2)/passwd'"), "600\n")
        XCTAssertEqual(try String(contentsOfFile: etc2 + "/passwd", encoding: .utf8), "root:x:0:0:root:/root:/bin/sh\n",
                       "a file the user changed keeps the user's version")
        XCTAssertEqual(try String(contentsOfFile: etc2 + "/newdir/sub/file", encoding: .utf8), "deep\n")
        XCTAssertEqual(try TestSupport.sh("readlink '\(etc2)/hostlink'"), "hostname\n")
        XCTAssertEqual(try String(contentsOfFile: etc2 + "/new-default.conf", encoding: .utf8), "new-default\n")
        XCTAssertEqual(try snapshot(sys + "/ostree/deploy/os/var"), varBefore, "/var is never touched")
        XCTAssertEqual(try cairn(["config-diff", "--sysroot", sys]).stdout.split(separator: "\n").count, 8)

        // Rollback swaps the two.
        try cairn(["rollback", "--sysroot", sys])
        st = try status()
        XCTAssertEqual(st.map { $0["checksum"] as? String }, [v1, v2])
        try cairn(["rollback", "--sysroot", sys])

        // Pin v1 (index 1), deploy v3: v3, v2 (rollback) and pinned v1 stay.
        try cairn(["pin", "--sysroot", sys, "1"])
        XCTAssertEqual(try status()[1]["pinned"] as? Bool, true)
        let v3 = try commit("3.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        st = try status()
        XCTAssertEqual(st.map { $0["checksum"] as? String }, [v3, v2, v1])
        // Unpinned, v1 goes at the next deploy.
        try cairn(["pin", "--sysroot", sys, "--unpin", "2"])
        let v4 = try commit("4.0")
        let out4 = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(out4.contains("removed os \(v1).0"), out4)
        st = try status()
        XCTAssertEqual(st.map { $0["checksum"] as? String }, [v4, v3])
        XCTAssertFalse(FileManager.default.fileExists(atPath: d1))

        // kargs, set-default, undeploy.
        try cairn(["kargs", "--sysroot", sys, "--append", "quiet", "--replace", "console=tty0", "--delete", "root"])
        XCTAssertEqual(try status()[0]["kernelArguments"] as? [String], ["console=tty0", "quiet"])
        try cairn(["set-default", "--sysroot", sys, "1"])
        XCTAssertEqual(try status().map { $0["checksum"] as? String }, [v3, v4])
        try cairn(["undeploy", "--sysroot", sys, "1"])
        XCTAssertEqual(try status().map { $0["checksum"] as? String }, [v3])
        try assertEntriesComplete()

        // Cleanup: v4's folder is gone already; the other boot set and unreferenced objects go.
        try TestSupport.sh("mkdir -p '\(sys)/ostree/deploy/os/deploy/stale.0' '\(sys)/boot/ostree/os-unused'")
        try cairn(["refs", "--repo", repo])
        try TestSupport.sh("rm -f '\(repo)/refs/heads/os/x'")
        let dry = try cairn(["cleanup", "--sysroot", sys, "--dry-run"]).stdout
        XCTAssertTrue(dry.contains("Would delete \(sys)/ostree/deploy/os/deploy/stale.0"), dry)
        XCTAssertTrue(FileManager.default.fileExists(atPath: sys + "/boot/ostree/os-unused"))
        let cleaned = try cairn(["cleanup", "--sysroot", sys]).stdout
        XCTAssertTrue(cleaned.contains("Deleted \(sys)/boot/ostree/os-unused"), cleaned)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sys + "/ostree/deploy/os/deploy/stale.0"))
        XCTAssertTrue(try cairn(["fsck", "--repo", repo]).stdout.contains("no problems"))
        // Every object the remaining image points to is still there.
        let image = deploymentPath(try status()[0]) + "/.ostree.cfs"
        XCTAssertEqual(try cairn(["image", "missing-objects", "--basedir", repo + "/objects", image]).stdout, "")
        XCTAssertEqual(try cairn(["log", "--repo", repo, v4], expect: 1).status, 1, "v4 is reachable from nothing and was pruned")
    }

    // MARK: Interop with Debian's ostree

    func testOstreeAdminReadsCairnSysrootAndCairnReadsOstrees() throws {
        try TestSupport.require(tool: "ostree")
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let v2 = try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let theirs = try TestSupport.sh("ostree admin status --sysroot='\(sys)'")
        let lines = theirs.split(separator: "\n").filter { $0.hasPrefix("  os ") || $0.hasPrefix("* os ") }
        XCTAssertEqual(lines.map { $0.split(separator: " ").last.map(String.init) }, ["\(v2).0", "\(v1).0"], theirs)
        try cairn(["rollback", "--sysroot", sys])
        let after = try TestSupport.sh("ostree admin status --sysroot='\(sys)'")
        XCTAssertTrue(after.contains("(rollback)") || after.split(separator: "\n").filter({ $0.contains(" os ") }).first?.contains(v1) == true, after)
        XCTAssertEqual(after.split(separator: "\n").filter { $0.contains(" os ") }.first.map { $0.contains(v1) }, true, after)

        // A sysroot made by ostree admin.
        let theirsRoot = dir + "/ostree-sysroot"
        let tree = try makeTree("9.0")
        try TestSupport.sh("""
            set -e
            mkdir -p '\(theirsRoot)'
            ostree admin init-fs '\(theirsRoot)' >/dev/null
            ostree admin os-init --sysroot='\(theirsRoot)' debian >/dev/null
            cp -a '\(tree)' '\(dir)/moved' && mv '\(dir)/moved/etc' '\(dir)/moved/usr/etc'
            ostree commit --repo='\(theirsRoot)/ostree/repo' -b debian/x --add-metadata-string version=9.0 '\(dir)/moved' >/dev/null
            ostree admin deploy --sysroot='\(theirsRoot)' --os=debian --karg=root=/dev/sda debian/x >/dev/null
            """)
        let c = try TestSupport.sh("ostree rev-parse --repo='\(theirsRoot)/ostree/repo' debian/x").trimmingCharacters(in: .whitespacesAndNewlines)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try cairn(["status", "--sysroot", theirsRoot, "--json"]).stdoutData) as? [String: Any])
        let ds = try XCTUnwrap(json["deployments"] as? [[String: Any]])
        XCTAssertEqual(ds.count, 1)
        XCTAssertEqual(ds[0]["checksum"] as? String, c)
        XCTAssertEqual(ds[0]["stateroot"] as? String, "debian")
        XCTAssertEqual(ds[0]["version"] as? String, "9.0")
        XCTAssertEqual(ds[0]["refspec"] as? String, "debian/x")
        XCTAssertEqual(ds[0]["kernelArguments"] as? [String], ["root=/dev/sda"])
        XCTAssertTrue(ds[0]["composefsDigest"] is NSNull, "ostree 2022.7 writes no composefs image")
    }

    /// Debian's ostree manages a cairn sysroot: `ostree admin deploy` on
    /// top of a cairn deployment (its /etc merge reads usr/etc), `undeploy`
    /// of its own deployment keeping cairn's (its kernel lookup reads
    /// usr/lib/modules, its entry usr/lib/os-release), and cairn takes the
    /// machine back, removing ostree's immutable deployment directory.
    func testOstreeAdminManagesACairnSysroot() throws {
        try TestSupport.require(tool: "ostree")
        try TestSupport.require(tool: "chattr")
        addTeardownBlock { [sys] in _ = try? TestSupport.sh("for d in '\(sys)'/ostree/deploy/*/deploy/*.[0-9]*; do chattr -i \"$d\" 2>/dev/null; done; true") }
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let ours = try status()[0]
        let oursPath = deploymentPath(ours)
        try TestSupport.sh("echo kept > '\(oursPath)/etc/added-under-cairn'")
        // What ostree reads is there as hardlinks to the repository's objects.
        let vmlinuz = oursPath + "/usr/lib/modules/6.12.0/vmlinuz"
        let links = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: vmlinuz)[.referenceCount] as? Int)
        XCTAssertGreaterThanOrEqual(links, 2, "a hardlink to the object")
        XCTAssertEqual(try TestSupport.sh("cd '\(oursPath)' && find usr/etc -type f | sort"),
                       try TestSupport.sh("cd '\(oursPath)' && find etc -type f ! -name added-under-cairn | sed 's|^|usr/|' | sort"))

        let v3 = try commit("3.0")
        try TestSupport.sh("ostree admin deploy --sysroot='\(sys)' --os=os os/x")
        var ds = try status()
        XCTAssertEqual(ds.map { $0["checksum"] as? String }, [v3, ours["checksum"] as? String])
        XCTAssertEqual(try TestSupport.sh("cat '\(deploymentPath(ds[0]))/etc/added-under-cairn'"), "kept\n", "ostree merged cairn's /etc")
        let live = Set(ds.map { URL(fileURLWithPath: deploymentPath($0)).lastPathComponent })
        let folders = Set(try FileManager.default.contentsOfDirectory(atPath: sys + "/ostree/deploy/os/deploy").filter { !$0.hasSuffix(".origin") })
        XCTAssertEqual(folders, live, "no half-made deployment folder")

        // ostree undeploys its own deployment and rewrites cairn's entry.
        try TestSupport.sh("ostree admin undeploy --sysroot='\(sys)' 0")
        ds = try status()
        XCTAssertEqual(ds.map { $0["checksum"] as? String }, [ours["checksum"] as? String])
        XCTAssertTrue(try TestSupport.sh("ostree admin status --sysroot='\(sys)'").contains(ours["checksum"] as! String))
        try assertEntriesComplete()

        // And back: cairn deploys on top of an ostree deployment and removes it when retention lets it go.
        try TestSupport.sh("ostree admin deploy --sysroot='\(sys)' --os=os os/x")
        let theirs = deploymentPath(try status()[0])
        XCTAssertTrue(try TestSupport.sh("lsattr -d '\(theirs)'").contains("i"), "ostree marks its deployment immutable")
        try commit("4.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: theirs))
        XCTAssertEqual(try status().count, 2)
        try assertEntriesComplete()
    }

    // MARK: Crash safety

    func testCrashAtEveryStepLeavesAWorkingSysroot() throws {
        try crashAtEveryStep()
    }

    func testDeployIntoANearlyFullFilesystemFailsCleanly() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        let tree1 = try makeTree("1.0")
        let tree2 = try makeTree("2.0", kernel: "kernel-2")
        let r = try TestSupport.run("unshare", ["-m", "/bin/sh", "-c", """
            set -e
            mkdir -p '\(sys)'
            mount -t tmpfs -o size=24m tmpfs '\(sys)'
            c='\(cairnPath)'
            $c sysroot init '\(sys)' --stateroot os >/dev/null
            $c commit --repo '\(repo)' -b os/x '\(tree1)' >/dev/null 2>&1
            $c deploy --sysroot '\(sys)' os/x >/dev/null
            $c commit --repo '\(repo)' -b os/x '\(tree2)' >/dev/null 2>&1
            before=$($c status --sysroot '\(sys)' --json)
            entries=$(cat '\(sys)'/boot/loader/entries/*)
            listing=$(ls -R '\(sys)/ostree/deploy' '\(sys)/boot')
            dd if=/dev/zero of='\(sys)/filler' bs=64k 2>/dev/null || true
            if $c deploy --sysroot '\(sys)' os/x 2>'\(dir)/deploy.err'; then echo "deploy succeeded"; exit 1; fi
            grep -q 'No space left on device' '\(dir)/deploy.err'
            test "$($c status --sysroot '\(sys)' --json)" = "$before"
            test "$(cat '\(sys)'/boot/loader/entries/*)" = "$entries"
            test "$(ls -R '\(sys)/ostree/deploy' '\(sys)/boot')" = "$listing"
            rm -f '\(sys)/filler'
            $c deploy --sysroot '\(sys)' os/x >/dev/null
            test "$($c status --sysroot '\(sys)' --json | grep -c '"checksum"')" = 2
            """])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    // MARK: Bad input

    func testBadInput() throws {
        // Uninitialised sysroot.
        let uninit = try cairn(["status", "--sysroot", dir + "/nothing"], expect: 1)
        XCTAssertTrue(uninit.stderr.contains("not initialised"), uninit.stderr)
        try cairn(["deploy", "--sysroot", dir + "/nothing", "x"], expect: 1)

        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        // Unknown REV.
        let unknown = try cairn(["deploy", "--sysroot", sys, "nosuchref"], expect: 1)
        XCTAssertTrue(unknown.stderr.contains("nosuchref"), unknown.stderr)
        // A commit without a kernel.
        let noKernel = dir + "/nokernel"
        try TestSupport.sh("mkdir -p '\(noKernel)/usr/etc' && echo x > '\(noKernel)/usr/etc/x'")
        try cairn(["commit", "--repo", repo, "-b", "nokernel", noKernel])
        let nk = try cairn(["deploy", "--sysroot", sys, "nokernel"], expect: 1)
        XCTAssertTrue(nk.stderr.contains("no kernel"), nk.stderr)
        // A recorded digest that does not match the image.
        let tree = try makeTree("1.0")
        let bad = "[byte " + Array(repeating: "0x13", count: 32).joined(separator: ", ") + "]"
        try cairn(["commit", "--repo", repo, "-b", "baddigest", "--no-composefs", "--add-metadata", "ostree.composefs.digest.v0=\(bad)", tree])
        let mismatch = try cairn(["deploy", "--sysroot", sys, "baddigest"], expect: 1)
        XCTAssertTrue(mismatch.stderr.contains("doesn't match expected digest"), mismatch.stderr)
        XCTAssertEqual(try status().count, 0, "nothing deployed")
        XCTAssertEqual(try TestSupport.sh("ls '\(sys)/ostree/deploy/os/deploy' | wc -l"), "0\n", "nothing left behind")

        try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        // Index out of range.
        let range = try cairn(["undeploy", "--sysroot", sys, "5"], expect: 1)
        XCTAssertTrue(range.stderr.contains("out of range"), range.stderr)
        try cairn(["set-default", "--sysroot", sys, "2"], expect: 1)
        try cairn(["pin", "--sysroot", sys, "-1"], expect: 2)
        // Undeploy of the booted deployment.
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": deploymentPath(try status()[1])]
        let refused = try TestSupport.run(cairnPath, ["undeploy", "--sysroot", sys, "1"], environment: booted)
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("is the booted deployment"), refused.stderr)
        let bootedStatus = try TestSupport.run(cairnPath, ["status", "--sysroot", sys, "--json"], environment: booted)
        XCTAssertTrue(bootedStatus.stdout.contains("\"booted\" : true"), bootedStatus.stdout)
        // A kernel argument with a newline.
        let nl = try cairn(["deploy", "--sysroot", sys, "os/x", "--karg", "evil\ninjected"], expect: 2)
        XCTAssertTrue(nl.stderr.contains("control character"), nl.stderr)
        try cairn(["kargs", "--sysroot", sys, "--append", "a b"], expect: 2)
        XCTAssertEqual(try status().count, 2)
    }
}

extension DeployTests {
    /// post-copy seals a sysroot where the kernel and filesystem can; this
    /// host's kernel has no fs-verity, so here it must refuse cleanly (the
    /// sealing itself runs in the VM boot test).
    func testPostCopy() throws {
        try deployFirstVersion()
        let image = deploymentPath(try status()[0]) + "/.ostree.cfs"
        let before = try cairn(["image", "digest", image]).lastLine
        if FileManager.default.fileExists(atPath: "/sys/fs/ext4/features/verity") {
            try TestSupport.requireRoot()
            let r = try TestSupport.run("unshare", ["-m", "/bin/sh", "-c", """
                set -e
                truncate -s 64M '\(dir)/verity.img'
                mkfs.ext4 -q -b 4096 -O verity '\(dir)/verity.img'
                mkdir -p '\(dir)/mnt'
                mount -o loop '\(dir)/verity.img' '\(dir)/mnt'
                cp -a '\(sys)' '\(dir)/mnt/sysroot'
                '\(cairnPath)' post-copy --sysroot '\(dir)/mnt/sysroot'
                fsverity measure '\(dir)/mnt/sysroot/ostree/deploy/os/deploy/'*/.ostree.cfs
                umount '\(dir)/mnt'
                """])
            XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
            XCTAssertTrue(r.stdout.contains("sha256:\(before)"), r.stdout)
        } else {
            let r = try cairn(["post-copy", "--sysroot", sys], expect: 1)
            XCTAssertTrue(r.stderr.contains("does not support fs-verity"), r.stderr)
            XCTAssertEqual(try cairn(["image", "digest", image]).lastLine, before)
        }
        try cairn(["post-copy", "--sysroot", dir + "/nothing"], expect: 1)
    }
}
