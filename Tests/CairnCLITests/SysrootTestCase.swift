import CairnTestSupport
import Foundation
import XCTest

/// Command-line tests on a sysroot in the scratch folder: sample OS trees
/// with a kernel, commits to os/x, `cairn status --json`.
class SysrootTestCase: CairnTestCase {
    /// Where the sysroot and trees go; a test with several sysroots moves it.
    var base = ""
    var sys: String { base + "/sysroot" }
    var repo: String { sys + "/ostree/repo" }

    /// Whether the test's sysroots boot with systemd-boot from the folder
    /// `esp`: every sysroot command run through `cairn()` (and `crash()`)
    /// then names it, and `sysroot init` chooses systemd-boot.
    var usesSystemdBoot: Bool { false }
    var esp: String { base + "/esp" }
    /// Where the live entries are, and the partition their paths are relative to.
    var entriesDir: String { usesSystemdBoot ? esp + "/loader/entries" : sys + "/boot/loader/entries" }
    var bootPartition: String { usesSystemdBoot ? esp : sys + "/boot" }

    func sysrootArgs(_ args: [String]) -> [String] {
        guard usesSystemdBoot, args.contains("--sysroot") || args.starts(with: ["sysroot", "init"]) else { return args }
        if args.starts(with: ["sysroot", "init"]) {
            try? FileManager.default.createDirectory(atPath: esp, withIntermediateDirectories: true)
            return args + ["--bootloader", "systemd-boot", "--esp", esp]
        }
        return args + ["--esp", esp]
    }

    override func cairn(_ args: [String], expect status: Int32 = 0, stdin: Data? = nil,
                        file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        try super.cairn(sysrootArgs(args), expect: status, stdin: stdin, file: file, line: line)
    }

    /// Runs `args` with the test crash point set; the process must die by SIGKILL.
    func crash(_ args: [String], at step: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try TestSupport.run(cairnPath, sysrootArgs(args), environment: ["CAIRN_TEST_CRASH_AT": step])
        XCTAssertEqual(r.status, 9, "cairn \(args.joined(separator: " ")) was to die at \(step): \(r.stderr)", file: file, line: line)
    }

    override func setUpWithError() throws {
        try super.setUpWithError()
        base = dir
    }

    /// The sample OS tree of `version`, with a kernel and initramfs in /usr/lib/modules.
    func makeTree(_ version: String, kernel: String = "kernel-1") throws -> String {
        let tree = base + "/tree-\(version)"
        let script = TestSupport.packageRoot.appendingPathComponent("scripts/make-sample-tree.sh").path
        try TestSupport.sh("""
            '\(script)' '\(tree)' \(version)
            mkdir -p '\(tree)/usr/lib/modules/6.12.0'
            echo '\(kernel)' > '\(tree)/usr/lib/modules/6.12.0/vmlinuz'
            echo 'initramfs for \(kernel)' > '\(tree)/usr/lib/modules/6.12.0/initramfs.img'
            """)
        return tree
    }

    @discardableResult
    func commit(_ version: String, extra: String = "", _ args: [String] = []) throws -> String {
        let tree = try makeTree(version)
        if !extra.isEmpty { try TestSupport.sh("cd '\(tree)' && \(extra)") }
        return try cairn(["commit", "--repo", repo, "-b", "os/x", "--add-metadata-string", "version=\(version)"] + args + [tree]).lastLine
    }

    /// A sysroot with stateroot os and v1.0 deployed; returns its folder.
    @discardableResult
    func deployFirstVersion() throws -> String {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        return deploymentPath(try status()[0])
    }

    func status() throws -> [[String: Any]] {
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try cairn(["status", "--sysroot", sys, "--json"]).stdoutData) as? [String: Any])
        XCTAssertEqual(json["apiVersion"] as? String, "cairn/v1")
        return try XCTUnwrap(json["deployments"] as? [[String: Any]])
    }

    func deploymentPath(_ d: [String: Any]) -> String { d["path"] as! String }

    /// Every boot entry names a complete deployment (image, etc/, origin)
    /// and a kernel and initramfs that are there; the live folder holds
    /// exactly the entries status lists.
    func assertEntriesComplete(file: StaticString = #filePath, line: UInt = #line) throws {
        let deployments = try status()
        for d in deployments {
            let p = deploymentPath(d)
            for needed in [p + "/.ostree.cfs", p + "/etc", p + ".origin"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: needed), "missing \(needed)", file: file, line: line)
            }
            let entryFile = try XCTUnwrap(d["bootEntry"] as? String, file: file, line: line)
            let entry = try String(contentsOfFile: entryFile, encoding: .utf8)
            for key in ["linux ", "initrd "] {
                let value = try XCTUnwrap(entry.split(separator: "\n").first { $0.hasPrefix(key) }, "no \(key)in \(entryFile)", file: file, line: line).dropFirst(key.count)
                XCTAssertTrue(FileManager.default.fileExists(atPath: bootPartition + value), "\(entryFile) names \(value), missing", file: file, line: line)
            }
        }
        let live = try FileManager.default.contentsOfDirectory(atPath: entriesDir).filter { $0.hasSuffix(".conf") && (!usesSystemdBoot || $0.hasPrefix("cairn-")) }
        XCTAssertEqual(live.count, deployments.count, "entries in \(entriesDir): \(live)", file: file, line: line)
    }

    /// Every entry below `path` with type, mode, owner, size, link target and content digest.
    func snapshot(_ path: String) throws -> String {
        try TestSupport.sh("cd '\(path)' && find . -printf '%p %y %m %U %G %s %l\\n' | sort && find . -type f -exec sha256sum {} + | sort")
    }

    /// Kills deploy, rollback, pin, undeploy and cleanup at each crash point
    /// and at random moments: every time, the entries name complete
    /// deployments, /var and every /etc are as they were, and the command
    /// run again succeeds.
    func crashAtEveryStep() throws {
        try deployFirstVersion()
        try TestSupport.sh("echo keep > '\(deploymentPath(try status()[0]))/etc/user.conf' && echo 7 > '\(sys)/ostree/deploy/os/var/data'")
        try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let other = try status()
        let varBefore = try snapshot(sys + "/ostree/deploy/os/var")
        let etcBefore = try other.map { try snapshot(deploymentPath($0) + "/etc") }
        func invariants(file: StaticString = #filePath, line: UInt = #line) throws {
            try assertEntriesComplete(file: file, line: line)
            XCTAssertEqual(try snapshot(sys + "/ostree/deploy/os/var"), varBefore, "/var changed", file: file, line: line)
            for (d, before) in zip(other, etcBefore) where FileManager.default.fileExists(atPath: deploymentPath(d)) {
                XCTAssertEqual(try snapshot(deploymentPath(d) + "/etc"), before, "etc of \(d["checksum"]!) changed", file: file, line: line)
            }
        }
        var version = 3
        for step in ["deployment-written", "kernel-copied", "bootset-written", "switched", "removed-one"] {
            try commit("\(version).0")
            version += 1
            try crash(["deploy", "--sysroot", sys, "os/x"], at: step)
            try invariants()
            try cairn(["deploy", "--sysroot", sys, "os/x"])  // rerunning succeeds
            try invariants()
        }
        for step in ["bootset-written", "switched"] {
            try crash(["rollback", "--sysroot", sys], at: step)
            try invariants()
            try cairn(["rollback", "--sysroot", sys])
        }
        try crash(["pin", "--sysroot", sys, "1"], at: "origin-written")
        try invariants()
        try crash(["undeploy", "--sysroot", sys, "1"], at: "switched")
        try invariants()
        XCTAssertEqual(try status().count, 1)
        try cairn(["status", "--sysroot", sys])
        for step in ["removed-one", "pruned"] {
            try crash(["cleanup", "--sysroot", sys], at: step)
            try invariants()
        }
        try cairn(["cleanup", "--sysroot", sys])
        try invariants()

        // And at random moments of a deploy.
        for delay in ["0.05", "0.15", "0.3", "0.5", "0.8"] {
            try commit("\(version).0")
            version += 1
            _ = try TestSupport.run("timeout", ["-s", "KILL", delay, cairnPath] + sysrootArgs(["deploy", "--sysroot", sys, "os/x"]))
            try invariants()
            try cairn(["deploy", "--sysroot", sys, "os/x"])
            try invariants()
        }
    }

    func run(_ args: [String], env: [String: String], expect status: Int32 = 0, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try TestSupport.run(cairnPath, sysrootArgs(args), environment: env)
        XCTAssertEqual(r.status, status, "cairn \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r
    }

    /// Ten deploy, rollback and kargs cycles on a "booted" v1: it stays,
    /// marked booted, its /etc untouched, and every merge starts from it.
    func bootedDeploymentSurvivesTenCycles() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let booted = deploymentPath(try status()[0])
        try TestSupport.sh("echo from-the-running-system > '\(booted)/etc/motd.local'")
        let etcBefore = try snapshot(booted + "/etc")
        let env = ["CAIRN_TEST_BOOTED_DEPLOYMENT": booted]
        for cycle in 2...11 {
            try commit("\(cycle).0")
            let out = try run(["deploy", "--sysroot", sys, "os/x"], env: env).stdout
            XCTAssertFalse(out.contains("removed os \(v1).0"), "cycle \(cycle): \(out)")
            // As with ostree, the booted deployment is the rollback: the one
            // deployed since boot gives way.
            let afterDeploy = try XCTUnwrap(JSONSerialization.jsonObject(with: try run(["status", "--sysroot", sys, "--json"], env: env).stdoutData) as? [String: Any])
            XCTAssertEqual((afterDeploy["deployments"] as? [[String: Any]])?.map { $0["checksum"] as? String }.last, v1, "cycle \(cycle)")
            XCTAssertEqual((afterDeploy["deployments"] as? [[String: Any]])?.count, 2, "cycle \(cycle)")
            if cycle % 3 == 0 { _ = try run(["rollback", "--sysroot", sys], env: env) }
            if cycle % 4 == 0 { _ = try run(["kargs", "--sysroot", sys, "--append", "cycle=\(cycle)"], env: env) }
            let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try run(["status", "--sysroot", sys, "--json"], env: env).stdoutData) as? [String: Any])
            let ds = try XCTUnwrap(json["deployments"] as? [[String: Any]])
            let bootedRows = ds.filter { $0["booted"] as? Bool == true }
            XCTAssertEqual(bootedRows.count, 1, "cycle \(cycle)")
            XCTAssertEqual(bootedRows.first?["checksum"] as? String, v1, "cycle \(cycle)")
            XCTAssertEqual(try snapshot(booted + "/etc"), etcBefore, "cycle \(cycle): the running /etc changed")
            XCTAssertTrue(FileManager.default.fileExists(atPath: booted + "/.ostree.cfs"), "cycle \(cycle)")
            XCTAssertEqual(try String(contentsOfFile: deploymentPath(ds[0]) + "/etc/motd.local", encoding: .utf8), "from-the-running-system\n",
                           "cycle \(cycle): the merge starts from the booted /etc")
            XCTAssertLessThanOrEqual(ds.count, 3, "cycle \(cycle): default, rollback and booted at most")
        }
        // Undeploy and cleanup leave it too.
        let index = try XCTUnwrap(try status().firstIndex { $0["checksum"] as? String == v1 })
        let refused = try run(["undeploy", "--sysroot", sys, String(index)], env: env, expect: 1)
        XCTAssertTrue(refused.stderr.contains("booted"), refused.stderr)
        _ = try run(["cleanup", "--sysroot", sys], env: env)
        XCTAssertEqual(try snapshot(booted + "/etc"), etcBefore)
    }
}
