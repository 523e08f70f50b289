import CairnTestSupport
import Foundation
import XCTest

/// Sysroots booted by systemd-boot: entries and kernels on an ESP (a
/// folder here; the VM test uses a real FAT partition), switched by one
/// renameat2(RENAME_EXCHANGE), with the crash and booted-system guarantees
/// of ostree's /boot layout.
final class SystemdBootTests: SysrootTestCase {
    override var scratchName: String { "cairn-sdboot" }
    override var usesSystemdBoot: Bool { true }

    func entries() throws -> [String: String] {
        var result: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: entriesDir) {
            result[name] = try String(contentsOfFile: entriesDir + "/" + name, encoding: .utf8)
        }
        return result
    }

    func field(_ entry: String, _ key: String) -> String? {
        entry.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map { String($0.dropFirst(key.count + 1)) }
    }

    func testEntriesAndKernelsOnTheESP() throws {
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        XCTAssertTrue(try String(contentsOfFile: repo + "/config", encoding: .utf8).contains("[cairn]\nbootloader=systemd-boot\n"))
        // The layout without boot counting (BootAssessmentTests has it).
        try cairn(["sysroot", "config", "--sysroot", sys, "boot-tries", "0"])
        // libostree still opens the repository (it checks [sysroot] bootloader, which cairn leaves alone).
        try TestSupport.require(tool: "ostree")
        try TestSupport.sh("ostree refs --repo='\(repo)'")

        // An entry of another operating system shares loader/entries.
        try TestSupport.sh("printf 'title Memtest86+\\nefi /memtest.efi\\n' > '\(entriesDir)/memtest.conf'")
        let v1 = try commit("1.0")
        try cairn(["deploy", "--sysroot", sys, "os/x", "--karg", "console=ttyS0"])
        let v2 = try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        var e = try entries()
        XCTAssertEqual(Set(e.keys), ["memtest.conf", "cairn-os-\(v2).0.conf", "cairn-os-\(v1).0.conf"])
        XCTAssertEqual(e["memtest.conf"], "title Memtest86+\nefi /memtest.efi\n")
        let newest = try XCTUnwrap(e["cairn-os-\(v2).0.conf"]), older = try XCTUnwrap(e["cairn-os-\(v1).0.conf"])
        // systemd-boot sorts one sort key by version, highest first, and boots the first.
        XCTAssertEqual(field(newest, "sort-key"), "cairn")
        XCTAssertEqual(field(newest, "version"), "2")
        XCTAssertEqual(field(older, "version"), "1")
        XCTAssertEqual(field(newest, "title"), "cairn sample 2.0 (ostree:0)")
        XCTAssertEqual(field(older, "title"), "cairn sample 1.0 (ostree:1)")
        XCTAssertTrue(field(newest, "options")!.hasPrefix("console=ttyS0 ostree=/ostree/boot.0/os/"), newest)
        XCTAssertEqual(try String(contentsOfFile: esp + field(newest, "linux")!, encoding: .utf8), "kernel-1\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: sys + "/boot/loader"), "nothing in ostree's /boot layout")
        XCTAssertEqual(try TestSupport.sh("ls '\(sys)/boot/ostree' | wc -l"), "0\n")
        try assertEntriesComplete()

        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: try cairn(["status", "--sysroot", sys, "--json"]).stdoutData) as? [String: Any])
        XCTAssertEqual(json["bootLoader"] as? String, "systemd-boot")
        XCTAssertEqual(json["esp"] as? String, esp)
        XCTAssertEqual(try status().map { $0["bootEntry"] as? String }, [entriesDir + "/cairn-os-\(v2).0.conf", entriesDir + "/cairn-os-\(v1).0.conf"])

        // Rollback renumbers: v1 gets the higher version and index 0.
        try cairn(["rollback", "--sysroot", sys])
        e = try entries()
        XCTAssertEqual(field(try XCTUnwrap(e["cairn-os-\(v1).0.conf"]), "version"), "2")
        XCTAssertEqual(field(try XCTUnwrap(e["cairn-os-\(v2).0.conf"]), "version"), "1")
        XCTAssertEqual(try status().map { $0["checksum"] as? String }, [v1, v2])
        XCTAssertNotNil(e["memtest.conf"])

        // A new kernel; then cleanup keeps only the kernels entries name, and leftovers of a switch go.
        try TestSupport.sh("""
            set -e
            d=$(mktemp -d '\(dir)/t.XXXX'); '\(TestSupport.packageRoot.path)/scripts/make-sample-tree.sh' "$d" 3.0 >/dev/null
            mkdir -p "$d/usr/lib/modules/6.13.0"; echo kernel-3 > "$d/usr/lib/modules/6.13.0/vmlinuz"; echo initramfs-3 > "$d/usr/lib/modules/6.13.0/initramfs.img"
            '\(cairnPath)' commit --repo '\(repo)' -b os/x "$d" >/dev/null 2>&1
            """)
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        try cairn(["deploy", "--sysroot", sys, "os/x"])  // the old kernel's deployments leave the set
        try TestSupport.sh("mkdir -p '\(esp)/loader/entries.cairn-staged' '\(esp)/cairn/os-unused.tmp'")
        XCTAssertEqual(try TestSupport.sh("ls '\(esp)/cairn' | wc -l"), "3\n")
        let cleaned = try cairn(["cleanup", "--sysroot", sys]).stdout
        XCTAssertTrue(cleaned.contains("Deleted \(esp)/loader/entries.cairn-staged"), cleaned)
        XCTAssertEqual(try TestSupport.sh("ls '\(esp)/cairn'"), try status().compactMap { "os-" + ($0["bootChecksum"] as! String) }.sorted().first! + "\n")
        try assertEntriesComplete()
        XCTAssertNotNil(try entries()["memtest.conf"])
    }

    func testTheESPMustBeNamedAndTheChoiceKept() throws {
        try deployFirstVersion()
        let r = try TestSupport.run(cairnPath, ["status", "--sysroot", sys])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "cairn: error: sysroot \(sys): it boots with systemd-boot: name its EFI system partition with --esp PATH\n")
        let missing = try TestSupport.run(cairnPath, ["status", "--sysroot", sys, "--esp", dir + "/nowhere"])
        XCTAssertTrue(missing.stderr.contains("EFI system partition \(dir)/nowhere: not a directory"), missing.stderr)
        // With deployments, the boot loader cannot change under them.
        let change = try TestSupport.run(cairnPath, ["sysroot", "init", sys, "--bootloader", "ostree"])
        XCTAssertEqual(change.status, 1)
        XCTAssertTrue(change.stderr.contains("it has deployments booted by systemd-boot; cannot switch it to ostree"), change.stderr)
        let bad = try TestSupport.run(cairnPath, ["sysroot", "init", sys, "--bootloader", "lilo"])
        XCTAssertTrue(bad.stderr.contains("--bootloader lilo: not a boot loader cairn knows (ostree, systemd-boot)"), bad.stderr)
        try TestSupport.sh("sed -i 's/^bootloader=.*/bootloader=grub9/' '\(repo)/config'")
        let unknown = try cairn(["status", "--sysroot", sys], expect: 1)
        XCTAssertTrue(unknown.stderr.contains("[cairn] bootloader=grub9 is not a boot loader cairn knows"), unknown.stderr)
    }

    /// Another tool left cairn entries of both boot versions: refused, not guessed.
    func testEntriesOfTwoBootVersionsAreRefused() throws {
        try deployFirstVersion()
        try commit("2.0")
        try cairn(["deploy", "--sysroot", sys, "os/x"])
        let before = try entries()
        try TestSupport.sh("cd '\(entriesDir)' && f=$(ls cairn-*.conf | head -n 1) && sed 's|ostree=/ostree/boot.0/|ostree=/ostree/boot.1/|' \"$f\" > cairn-os-forged.conf")
        let r = try cairn(["deploy", "--sysroot", sys, "os/x"], expect: 1)
        XCTAssertTrue(r.stderr.contains("its cairn entries name both boot versions"), r.stderr)
        var after = try entries()
        after["cairn-os-forged.conf"] = nil
        XCTAssertEqual(after, before)
    }

    func testCrashAtEveryStepLeavesAWorkingESP() throws {
        try crashAtEveryStep()
    }

    func testBootedDeploymentSurvivesTenCyclesOnTheESP() throws {
        try bootedDeploymentSurvivesTenCycles()
    }
}
