import CairnTestSupport
import Foundation
import XCTest

/// Boot counting on the ESP, health checks, automatic fallback and staged
/// deployments, on a sysroot in a folder. systemd-boot's part (renaming an
/// entry on each try) and systemd-bless-boot's (dropping the counter) are
/// played here by renames, as the Boot Loader Specification defines them;
/// the VM test has the real ones.
final class BootAssessmentTests: SysrootTestCase {
    override var scratchName: String { "cairn-assess" }
    override var usesSystemdBoot: Bool { true }

    func entryNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: entriesDir).filter { $0.hasPrefix("cairn-") }.sorted()
    }

    /// The live entry file of commit `c` (any counter).
    func entry(_ c: String) throws -> String {
        let names = try entryNames()
        return try XCTUnwrap(names.first { $0.hasPrefix("cairn-os-\(c).") }, "no entry for \(c) in \(names)")
    }

    /// What systemd-boot does to an entry when it tries it, or
    /// systemd-bless-boot when it blesses it: a rename.
    func renameEntry(_ c: String, to counter: String) throws {
        let old = try entry(c)
        let base = old.replacingOccurrences(of: #"(\+[0-9]+(-[0-9]+)?)?\.conf$"#, with: "", options: .regularExpression)
        try FileManager.default.moveItem(atPath: entriesDir + "/" + old, toPath: entriesDir + "/" + base + counter + ".conf")
    }

    func json(_ env: [String: String] = [:]) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: try run(["status", "--sysroot", sys, "--json"], env: env).stdoutData) as? [String: Any])
    }

    func rows(_ j: [String: Any]) -> [[String: Any]] { j["deployments"] as? [[String: Any]] ?? [] }

    func counter(_ row: [String: Any]) -> String {
        guard let c = row["bootCounter"] as? [String: Any] else { return "blessed" }
        return "\(c["triesLeft"]!)-\(c["triesDone"]!)"
    }

    /// A folder of health checks: name → shell script body (exit status is the verdict).
    func checks(_ scripts: [String: String], in name: String = "checks") throws -> String {
        let d = base + "/" + name
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        for (n, body) in scripts {
            try ("#!/bin/sh\n" + body + "\n").write(toFile: d + "/" + n, atomically: true, encoding: .utf8)
            chmod(d + "/" + n, 0o755)
        }
        return d
    }

    /// A datagram socket standing in for the journal's; returns what was sent to it.
    final class JournalListener {
        let fd: Int32
        let path: String
        init(_ path: String) throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var a = sockaddr_un()
            a.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &a.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
            let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            guard r == 0 else { throw NSError(domain: "bind", code: Int(errno)) }
        }
        func received() -> [String] {
            var out: [String] = []
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
                if n <= 0 { break }
                out.append(String(decoding: buf[..<n], as: UTF8.self))
            }
            return out
        }
        deinit { close(fd); unlink(path) }
    }

    func testNewDefaultsCountTriesAndCountersSurviveEverySwitch() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        XCTAssertEqual(try cairn(["sysroot", "config", "--sysroot", sys, "boot-tries"]).stdout, "3\n")
        let v1 = try commit("1.0")
        let out = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(out.contains("on probation: 3 boot tries"), out)
        XCTAssertEqual(try entry(v1), "cairn-os-\(v1).0+3.conf")
        try renameEntry(v1, to: "+2-1")  // systemd-boot tried it once
        XCTAssertEqual(rows(try json()).map(counter), ["2-1"])
        XCTAssertEqual(rows(try json()).first?["probation"] as? Bool, true)

        // A new default: counted; v1 keeps its counter through the switch.
        let v2 = try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertEqual(try entryNames(), ["cairn-os-\(v1).0+2-1.conf", "cairn-os-\(v2).0+3.conf"].sorted())
        try assertEntriesComplete()

        // Offline, neither is blessed yet; v1 is blessed now, then v3: v1 stays as
        // the last known good beside v3 (new) and v2 (rollback), both on probation.
        try renameEntry(v1, to: "")
        let v3 = try commit("3.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertEqual(rows(try json()).map { $0["checksum"] as! String }, [v3, v2, v1])
        XCTAssertEqual(rows(try json()).map(counter), ["3-0", "3-0", "blessed"])

        // Made the default by hand after using up its tries: fresh tries, or systemd-boot would skip it.
        try renameEntry(v2, to: "+0-3")
        XCTAssertEqual(rows(try json())[1]["failedBoot"] as? Bool, true)
        XCTAssertTrue(try cairn(["status", "--sysroot", sys]).stdout.contains("failed: no tries left"))
        try cairn(["set-default", "--sysroot", sys, "1"])
        XCTAssertEqual(rows(try json()).map { $0["checksum"] as! String }, [v2, v3, v1])
        XCTAssertEqual(try entry(v2), "cairn-os-\(v2).0+3.conf")
        try assertEntriesComplete()

        // Counting off: the next default has no counter.
        try cairn(["sysroot", "config", "--sysroot", sys, "boot-tries", "0"])
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertEqual(counter(rows(try json())[0]), "blessed")
        let bad = try cairn(["sysroot", "config", "--sysroot", sys, "boot-tries", "three"], expect: 1).stderr
        XCTAssertTrue(bad.contains("cairn: error: setting boot-tries=three: expected a number of tries from 0 (off) to 1000"), bad)
        let unknown = try cairn(["sysroot", "config", "--sysroot", sys, "boot-trys", "1"], expect: 1).stderr
        XCTAssertTrue(unknown.contains("not a sysroot setting"), unknown)
        try cairn(["sysroot", "config", "--sysroot", sys, "--unset", "boot-tries"])
        XCTAssertEqual(try cairn(["sysroot", "config", "--sysroot", sys, "boot-tries"]).stdout, "3\n")
    }

    func testHealthChecksFailOnlyOnProbationAndRefuseFilesOthersCouldWrite() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": rows(try json())[0]["path"] as! String]
        let usr = try checks(["10-ok": "echo fine", "20-fails": "echo 'disk on fire' >&2; exit 3", "30-disabled": "exit 1"], in: "usr")
        let etc = try checks(["20-fails": "echo replaced by /etc"], in: "etc")
        symlink("/dev/null", etc + "/30-disabled")
        // On probation, a failure fails the command (the unit then reboots).
        let writable = try checks(["40-anyone": "exit 0"], in: "writable")
        chmod(writable + "/40-anyone", 0o777)
        var r = try run(["health-check", "--sysroot", sys, "--checks-dir", usr, "--checks-dir", etc, "--checks-dir", writable], env: booted, expect: 1)
        XCTAssertTrue(r.stdout.contains("ok 10-ok (exit status 0)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("ok 20-fails (exit status 0)"), "the /etc check replaces /usr's: \(r.stdout)")
        XCTAssertFalse(r.stdout.contains("30-disabled"), r.stdout)
        XCTAssertTrue(r.stdout.contains("FAILED 40-anyone (writable by group or others; not run)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("on probation, 3 tries left"), r.stdout)
        chmod(writable + "/40-anyone", 0o755)
        r = try run(["health-check", "--sysroot", sys, "--checks-dir", usr, "--checks-dir", etc, "--checks-dir", writable], env: booted)
        XCTAssertTrue(r.stdout.contains("0 failed"), r.stdout)

        // A check that hangs is killed at the timeout, children and all.
        let slow = try checks(["50-hangs": "sleep 600 & sleep 600"], in: "slow")
        let started = Date()
        r = try run(["health-check", "--sysroot", sys, "--checks-dir", slow, "--timeout", "1"], env: booted, expect: 1)
        XCTAssertLessThan(Date().timeIntervalSince(started), 30)
        XCTAssertTrue(r.stdout.contains("FAILED 50-hangs (timed out)"), r.stdout)
        XCTAssertEqual(try TestSupport.sh("pgrep -x -f 'sleep 600' | wc -l"), "0\n", "the check's children were left running")

        // Blessed: the same failure is reported, and the command succeeds (no reboot loop).
        try renameEntry(v1, to: "")
        r = try run(["health-check", "--sysroot", sys, "--checks-dir", usr], env: booted)
        XCTAssertTrue(r.stdout.contains("FAILED 20-fails (exit status 3)") && r.stdout.contains("disk on fire") && r.stdout.contains("blessed"), r.stdout)
        // Not a booted system: nothing to check.
        XCTAssertTrue(try cairn(["health-check", "--sysroot", sys, "--checks-dir", usr]).stdout.contains("Not a booted cairn system"))
    }

    func testFallbackIsRecordedReportedAndTheBootedDeploymentBecomesTheDefault() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try renameEntry(v1, to: "")  // blessed
        let v1Path = rows(try json())[0]["path"] as! String
        let v2 = try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let v2Path = rows(try json())[0]["path"] as! String
        let journal = try JournalListener(base + "/journal.sock")
        let failing = try checks(["20-app": "echo 'app did not start: port 80 in use'; exit 1"])

        // Three tries of v2, each failing its checks.
        for tries in ["+2-1", "+1-2", "+0-3"] {
            try renameEntry(v2, to: tries)
            let r = try run(["health-check", "--sysroot", sys, "--checks-dir", failing],
                            env: ["CAIRN_TEST_BOOTED_DEPLOYMENT": v2Path, "CAIRN_TEST_JOURNAL_SOCKET": journal.path], expect: 1)
            XCTAssertTrue(r.stdout.contains("FAILED 20-app"), r.stdout)
        }
        let failures = journal.received()
        XCTAssertEqual(failures.count, 3)
        XCTAssertTrue(failures.allSatisfy { $0.contains("MESSAGE_ID=b41d8e0f5c6a4e2d93f7a1c0e8b5d269\n") }, "\(failures)")

        // systemd-boot skips v2 (no tries left) and boots v1: the next health check says so.
        let env = ["CAIRN_TEST_BOOTED_DEPLOYMENT": v1Path, "CAIRN_TEST_JOURNAL_SOCKET": journal.path]
        let r = try run(["health-check", "--sysroot", sys, "--checks-dir", try checks([:], in: "none")], env: env)
        XCTAssertTrue(r.stdout.contains("Fallback: os \(v2).0 failed 3 boot(s); os \(v1).0 booted instead and is now the default"), r.stdout)
        let messages = journal.received()
        XCTAssertEqual(messages.count, 1, "\(messages)")
        XCTAssertTrue(messages[0].contains("MESSAGE_ID=6c3f1b2e9a4d4f0b8e21c7d5a9f04b13\n") && messages[0].contains("CAIRN_BOOTS=3\n"), messages[0])
        XCTAssertTrue(messages[0].contains("failed checks: 20-app (exit status 1)"), messages[0])

        let j = try json(env)
        XCTAssertEqual(rows(j).map { $0["checksum"] as! String }, [v1, v2], "the booted deployment is the default, the failed one stays after it")
        XCTAssertEqual(rows(j).map(counter), ["blessed", "0-3"])
        let f = try XCTUnwrap(j["fallback"] as? [String: Any])
        XCTAssertEqual((f["failed"] as? [String: Any])?["deployment"] as? String, "\(v2).0")
        XCTAssertEqual((f["failed"] as? [String: Any])?["version"] as? String, "2.0")
        XCTAssertEqual((f["booted"] as? [String: Any])?["deployment"] as? String, "\(v1).0")
        XCTAssertEqual(f["boots"] as? Int, 3)
        XCTAssertEqual(f["demoted"] as? Bool, true)
        let check = try XCTUnwrap((f["checks"] as? [[String: Any]])?.first)
        XCTAssertEqual(check["name"] as? String, "20-app")
        XCTAssertEqual(check["output"] as? String, "app did not start: port 80 in use\n")
        let human = try run(["status", "--sysroot", sys], env: env).stdout
        XCTAssertTrue(human.contains("Automatic rollback: os \(v2).0 (version 2.0) failed 3 boot(s), so systemd-boot booted os \(v1).0 instead"), human)
        XCTAssertTrue(human.contains("check 20-app failed (exit status 1)") && human.contains("port 80 in use"), human)
        try assertEntriesComplete()

        // Once per boot: run again, nothing new is recorded or sent.
        _ = try run(["health-check", "--sysroot", sys, "--checks-dir", base + "/none"], env: env)
        XCTAssertEqual(journal.received().count, 0)
        // Retrying the update gives it fresh tries; a new deployment closes the story.
        try cairn(["rollback", "--sysroot", sys])
        XCTAssertEqual(try entry(v2), "cairn-os-\(v2).0+3.conf")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertTrue(try json(env)["fallback"] is NSNull)
    }

    func testFallbackWithoutHealthResultsAndAKeptFailedDefault() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        try cairn(["sysroot", "config", "--sysroot", sys, "keep-failed-default", "true"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try renameEntry(v1, to: "")
        let v1Path = rows(try json())[0]["path"] as! String
        let v2 = try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        // Its initramfs refused it three times: no health check ever ran.
        try renameEntry(v2, to: "+0-3")
        let env = ["CAIRN_TEST_BOOTED_DEPLOYMENT": v1Path, "CAIRN_TEST_JOURNAL_SOCKET": base + "/nobody-listens.sock"]
        let r = try run(["health-check", "--sysroot", sys, "--checks-dir", try checks([:], in: "none")], env: env)
        XCTAssertTrue(r.stdout.contains("Fallback: os \(v2).0 failed 3 boot(s); os \(v1).0 booted instead\n"), r.stdout)
        let j = try json(env)
        XCTAssertEqual(rows(j).map { $0["checksum"] as! String }, [v2, v1], "keep-failed-default: the order stays")
        let f = try XCTUnwrap(j["fallback"] as? [String: Any])
        XCTAssertEqual(f["reachedHealthChecks"] as? Bool, false)
        XCTAssertEqual(f["demoted"] as? Bool, false)
        XCTAssertTrue(try run(["status", "--sysroot", sys], env: env).stdout.contains("no boot of it reached the health checks"))
    }

    func testStagedDeploymentIsFinalizedWithEtcEditsMadeAfterStaging() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let v1Path = rows(try json())[0]["path"] as! String
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": v1Path]
        let entriesBefore = try entryNames()
        let v2 = try commit("2.0")
        // Offline there is no shutdown to finalize at.
        let offline = try cairn(["deploy", "--sysroot", sys, "--stage", "os/x"], expect: 1).stderr
        XCTAssertTrue(offline.contains("is not the booted system's sysroot"), offline)

        let staged = try run(["deploy", "--sysroot", sys, "--stage", "os/x"], env: booted).stdout
        XCTAssertTrue(staged.contains("Staged os \(v2).0"), staged)
        XCTAssertEqual(try entryNames(), entriesBefore, "staging writes no boot entry")
        var j = try json(booted)
        let st = try XCTUnwrap(j["staged"] as? [String: Any])
        XCTAssertEqual(st["checksum"] as? String, v2)
        XCTAssertEqual(st["locked"] as? Bool, false)
        XCTAssertTrue(try run(["status", "--sysroot", sys], env: booted).stdout.contains("Staged: os \(v2).0 (becomes the default when the system shuts down)"))
        // cleanup keeps it (and its commit).
        try cairn(["cleanup", "--sysroot", sys])
        XCTAssertTrue(FileManager.default.fileExists(atPath: st["path"] as! String + "/.ostree.cfs"))

        // An /etc edit after staging reaches the new deployment.
        try "edited after staging\n".write(toFile: v1Path + "/etc/late-edit", atomically: true, encoding: .utf8)
        let fin = try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: booted).stdout
        XCTAssertTrue(fin.contains("Finalized os \(v2).0"), fin)
        j = try json(booted)
        XCTAssertEqual(rows(j).map { $0["checksum"] as! String }, [v2, v1])
        XCTAssertTrue(j["staged"] is NSNull)
        XCTAssertEqual(try String(contentsOfFile: (rows(j)[0]["path"] as! String) + "/etc/late-edit", encoding: .utf8), "edited after staging\n")
        XCTAssertEqual(try entry(v2), "cairn-os-\(v2).0+3.conf")
        try assertEntriesComplete()
        XCTAssertTrue(try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: booted).stdout.contains("No staged deployment"))
    }

    func testLockedStaleAndFailedFinalizations() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let v1Path = rows(try json())[0]["path"] as! String
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": v1Path]
        let v2 = try commit("2.0")

        // Locked: shutdown leaves it; 'cairn finalize' finalizes.
        try run(["deploy", "--sysroot", sys, "--lock-finalization", "os/x"], env: booted)
        XCTAssertTrue(try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: booted).stdout.contains("is locked (--lock-finalization); not finalized"))
        XCTAssertEqual(rows(try json(booted)).count, 1)
        XCTAssertTrue(try run(["status", "--sysroot", sys], env: booted).stdout.contains("locked: run 'cairn finalize'"))
        try run(["finalize", "--sysroot", sys], env: booted)
        XCTAssertEqual(rows(try json(booted)).map { $0["checksum"] as! String }, [v2, v1])
        try cairn(["rollback", "--sysroot", sys])
        try cairn(["undeploy", "--sysroot", sys, "1"])

        // Staged in a boot that ended without a shutdown (a power cut): never finalized.
        let v3 = try commit("3.0")
        var stagedPath = ""
        try run(["deploy", "--sysroot", sys, "--stage", "os/x"], env: booted.merging(["CAIRN_TEST_BOOT_ID": "boot-a"]) { $1 })
        stagedPath = (try json(booted)["staged"] as! [String: Any])["path"] as! String
        let later = booted.merging(["CAIRN_TEST_BOOT_ID": "boot-b"]) { $1 }
        XCTAssertTrue(try run(["status", "--sysroot", sys], env: later).stdout.contains("staged in an earlier boot that ended without finalizing it"))
        XCTAssertTrue(try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: later).stdout.contains("Discarded the staged deployment os \(v3).0"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: stagedPath))
        XCTAssertEqual(rows(try json(booted)).map { $0["checksum"] as! String }, [v1])

        // A finalization that fails: the old default stays, the next boot's status says why.
        try run(["deploy", "--sysroot", sys, "--stage", "os/x"], env: booted)
        stagedPath = (try json(booted)["staged"] as! [String: Any])["path"] as! String
        let entriesBefore = try entryNames()
        let failed = try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: booted.merging(["CAIRN_TEST_FAIL_FINALIZE": "1"]) { $1 }, expect: 1)
        XCTAssertTrue(failed.stderr.contains("failed on purpose"), failed.stderr)
        XCTAssertEqual(try entryNames(), entriesBefore)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stagedPath), "the failed deployment is not left behind")
        let next = booted.merging(["CAIRN_TEST_BOOT_ID": "next-boot"]) { $1 }
        let j = try json(next)
        let f = try XCTUnwrap(j["finalizeFailure"] as? [String: Any])
        XCTAssertEqual(f["deployment"] as? String, "\(v3).0")
        XCTAssertEqual(f["earlierBoot"] as? Bool, true)
        XCTAssertTrue((f["error"] as? String ?? "").contains("CAIRN_TEST_FAIL_FINALIZE"))
        XCTAssertTrue(try run(["status", "--sysroot", sys], env: next).stdout.contains("Finalization failed: the staged deployment os \(v3).0 was not made the default"))
        try assertEntriesComplete()
        // The next deployment that succeeds clears it.
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        XCTAssertTrue(try json(next)["finalizeFailure"] is NSNull)
    }

    /// State records sit on the disk outside the signed image: a forged one
    /// is refused naming the file, and its names never become paths.
    func testForgedStagedRecordIsRefused() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        _ = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": rows(try json())[0]["path"] as! String]
        let record = sys + "/ostree/cairn/staged"
        try FileManager.default.createDirectory(atPath: sys + "/ostree/cairn", withIntermediateDirectories: true)
        let forged = [
            "stateroot=../../../tmp\ndeployment=\(String(repeating: "a", count: 64)).0": "stateroot name",
            "stateroot=os\ndeployment=../../x.0": "is not <commit>.<serial>",
            "stateroot=os\ndeployment=\(String(repeating: "a", count: 64)).0\nkernel-arguments=init=/bin/sh\u{7}": "control character",
        ]
        for (body, reason) in forged {
            try "[staged]\n\(body)\nboot-checksum=00\n".write(toFile: record, atomically: true, encoding: .utf8)
            let r = try run(["finalize", "--sysroot", sys], env: booted, expect: 1)
            XCTAssertTrue(r.stderr.contains("cairn: error: reading \(record)") && r.stderr.contains(reason), r.stderr)
            XCTAssertEqual(rows(try json(booted)).count, 1)
            let shown = try run(["status", "--sysroot", sys], env: booted)
            XCTAssertTrue(shown.stderr.contains("reading \(record)") && !shown.stdout.contains("Staged:"), shown.stderr)
        }
        // A deploy is not blocked by it: the record goes, with a note.
        _ = try commit("2.0")
        let r = try run(["deploy", "--sysroot", sys, "os/x"], env: booted)
        XCTAssertTrue(r.stderr.contains("removing the unreadable staged-deployment record"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: record))
        XCTAssertEqual(rows(try json(booted)).count, 2)
    }

    /// A crash at every step of a finalization leaves the old set or the
    /// new one, each complete; finalizing again (or the next boot) settles it.
    func testFinalizationCutShortAtEveryStep() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let v1Path = rows(try json())[0]["path"] as! String
        let booted = ["CAIRN_TEST_BOOTED_DEPLOYMENT": v1Path]
        for step in ["bootset-written", "switched", "removed-one"] {
            _ = try commit("2.\(step)")
            try run(["deploy", "--sysroot", sys, "--stage", "os/x"], env: booted)
            let r = try TestSupport.run(cairnPath, sysrootArgs(["finalize", "--sysroot", sys, "--at-shutdown"]), environment: booted.merging(["CAIRN_TEST_CRASH_AT": step]) { $1 })
            if step == "removed-one" && r.status == 0 { continue }  // nothing was retired this time
            XCTAssertEqual(r.status, 9, "\(step): \(r.stderr)")
            try assertEntriesComplete()
            let ids = rows(try json(booted)).map { $0["checksum"] as! String }
            XCTAssertTrue(ids.contains(v1), "\(step): the booted deployment is gone")
            // The shutdown goes on, or the next boot finds the record: either way, settled.
            _ = try run(["finalize", "--sysroot", sys, "--at-shutdown"], env: booted)
            XCTAssertTrue(try json(booted)["staged"] is NSNull, step)
            try assertEntriesComplete()
            try cairn(["set-default", "--sysroot", sys, String(rows(try json(booted)).firstIndex { $0["checksum"] as? String == v1 }!)])
        }
    }
}
