import CairnTestSupport
import Foundation
import XCTest

/// The /etc three-way merge against a hostile user who owns files under
/// /etc: new defaults that turn a changed directory into a symlink, a
/// rename race during the deploy, names that are not UTF-8, and fifos,
/// device nodes, sockets and hardlinks.
final class EtcMergeTests: SysrootTestCase {
    override var scratchName: String { "cairn-etc" }

    // MARK: Symlinked parents

    /// The new defaults turn /etc/ssl, where the user changed and added
    /// files, into a symlink out of the deployment: the deploy fails naming
    /// /etc/ssl and writes (or unlinks) nothing outside, whichever way the
    /// symlink points. /boot is a tmpfs of a private mount namespace here.
    func testNewDefaultsTurningAChangedDirectoryIntoASymlinkFailNamingIt() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        let victim = dir + "/victim"
        for (label, target) in [("absolute", victim), ("relative", "../../.."), ("boot", "/boot")] {
            base = dir + "/" + label
            try TestSupport.sh("""
                set -e
                rm -rf '\(victim)' && mkdir -p '\(victim)' '\(base)'
                echo victim > '\(victim)/openssl.cnf'
                """)
            try cairn(["sysroot", "init", sys, "--stateroot", "os"])
            try commit("1.0", extra: "mkdir etc/ssl && echo default > etc/ssl/openssl.cnf")
            try cairn(["deploy", "--sysroot", sys, "os/x"])
            let old = deploymentPath(try status()[0])
            // "../../.." from the new etc/ssl is the stateroot folder: a victim there too.
            try TestSupport.sh("""
                set -e
                echo mine > '\(old)/etc/ssl/openssl.cnf'
                echo user > '\(old)/etc/ssl/user.pem'
                echo victim > '\(sys)/ostree/deploy/os/openssl.cnf'
                """)
            try commit("2.0", extra: "ln -s '\(target)' etc/ssl")
            let statusBefore = try cairn(["status", "--sysroot", sys, "--json"]).stdout
            let entriesBefore = try TestSupport.sh("cat '\(sys)'/boot/loader/entries/*.conf")
            let sysrootBefore = try snapshot(sys + "/ostree/deploy") + snapshot(sys + "/boot")
            let victimBefore = try snapshot(victim)

            let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
                mount -t tmpfs -o mode=0755 tmpfs /boot || exit 100
                echo victim > /boot/openssl.cnf
                '\(cairnPath)' deploy --sysroot '\(sys)' os/x >&2
                echo "status $?"
                ls -A /boot && cat /boot/openssl.cnf
                """])
            XCTAssertNotEqual(r.status, 100, "tmpfs on /boot: \(r.stderr)")
            XCTAssertTrue(r.stdout.hasPrefix("status 1\n"), "\(label): the deploy must fail: \(r.stdout) \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("/etc/ssl"), "\(label): the error names /etc/ssl: \(r.stderr)")
            XCTAssertEqual(r.stdout, "status 1\nopenssl.cnf\nvictim\n", "\(label): nothing written to or removed from /boot")
            XCTAssertEqual(try snapshot(victim), victimBefore, "\(label): the victim folder is untouched")
            XCTAssertEqual(try snapshot(sys + "/ostree/deploy") + snapshot(sys + "/boot"), sysrootBefore,
                           "\(label): nothing outside the deployment changed, and the half-made one is gone")
            XCTAssertEqual(try cairn(["status", "--sysroot", sys, "--json"]).stdout, statusBefore)
            XCTAssertEqual(try TestSupport.sh("cat '\(sys)'/boot/loader/entries/*.conf"), entriesBefore)
        }
    }

    // MARK: The rename race

    /// A user who owns a folder under /etc swaps a subfolder of it with a
    /// symlink to a root-only folder (renameat2 RENAME_EXCHANGE in a loop)
    /// while deploys run: no new /etc may ever hold the root-only content,
    /// and everything the user owns there holds only the user's content.
    func testRenameExchangeRaceDuringDeployNeverCopiesRootOnlyFiles() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "cc")
        let helper = dir + "/exchange"
        try TestSupport.sh("""
            cat > '\(dir)/exchange.c' <<'EOF'
            #define _GNU_SOURCE
            #include <fcntl.h>
            #include <grp.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <unistd.h>
            /* exchange DIR: as uid 1000, swaps DIR/sub and DIR/link until killed. */
            int main(int argc, char **argv) {
                if (argc != 2 || chdir(argv[1]) != 0) return 2;
                if (setgroups(0, NULL) != 0 || setgid(1000) != 0 || setuid(1000) != 0) return 3;
                printf("running\\n");
                fflush(stdout);
                for (;;) if (renameat2(AT_FDCWD, "sub", AT_FDCWD, "link", RENAME_EXCHANGE) != 0) { perror("renameat2"); return 4; }
            }
            EOF
            cc -O2 -o '\(helper)' '\(dir)/exchange.c'
            """)
        let old = try deployFirstVersion()
        let files = 40
        try TestSupport.sh("""
            set -e
            mkdir -m 0700 '\(dir)/secret'
            mkdir -p '\(old)/etc/userdir/sub'
            for i in $(seq -w 1 \(files)); do
                echo "TOPSECRET-$i" > '\(dir)/secret'/f$i && chmod 0600 '\(dir)/secret'/f$i
                echo "user data" > '\(old)/etc/userdir/sub'/f$i
            done
            ln -s '\(dir)/secret' '\(old)/etc/userdir/link'
            chown -hR 1000:1000 '\(old)/etc/userdir'
            """)
        try commit("2.0")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: helper)
        process.arguments = [old + "/etc/userdir"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        XCTAssertEqual(String(decoding: out.fileHandleForReading.availableData, as: UTF8.self), "running\n")

        let start = Date()
        var asDirectory = 0, asSymlink = 0, runs = 0
        var leaks: [String] = []
        while runs < 30 && Date().timeIntervalSince(start) < 50 {
            runs += 1
            // Not as default: every deploy merges from the same old deployment.
            try cairn(["deploy", "--sysroot", sys, "--not-as-default", "os/x"])
            let etc = deploymentPath(try status()[1]) + "/etc"
            let secret = try TestSupport.sh("grep -rl TOPSECRET '\(etc)' | wc -l")
            let foreign = try TestSupport.sh("find '\(etc)' -user 1000 -type f -exec grep -L '^user data$' {} + | wc -l")
            let special = try TestSupport.sh("find '\(etc)' -user 1000 ! -type f ! -type d ! -type l | wc -l")
            if secret != "0\n" || foreign != "0\n" || special != "0\n" {
                leaks.append("run \(runs): \(secret.dropLast()) file(s) with root-only content, \(foreign.dropLast()) file(s) of the user's with other content, \(special.dropLast()) other entries of the user's")
            }
            for name in ["sub", "link"] {
                let type = try TestSupport.sh("stat -c %F '\(etc)/userdir/\(name)'")
                if type == "directory\n" { asDirectory += 1 } else if type == "symbolic link\n" { asSymlink += 1 }
            }
        }
        XCTAssertTrue(process.isRunning, "the exchange loop ran throughout")
        print("exchange race: \(runs) deploys in \(String(format: "%.1f", Date().timeIntervalSince(start))) s; carried \(asDirectory) directories and \(asSymlink) symlinks; \(leaks.count) run(s) leaked")
        XCTAssertEqual(leaks, [], "\(leaks.count) of \(runs) deploys copied root-only content into a new /etc")
        XCTAssertGreaterThanOrEqual(runs, 10)
    }

    // MARK: Names that are not UTF-8

    /// Names with bytes that are not UTF-8 are carried byte for byte, listed
    /// escaped by deploy and config-diff, and removed by undeploy and cleanup.
    func testNamesThatAreNotUTF8AreCarriedListedAndRemoved() throws {
        let old = try deployFirstVersion()
        try TestSupport.sh("""
            set -e
            cd '\(old)/etc'
            echo cafe > "$(printf 'caf\\351.conf')"
            mkdir "$(printf 'd\\351j\\340')"
            echo deep > "$(printf 'd\\351j\\340/f\\377')"
            """)
        try commit("2.0")
        let out = try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout
        XCTAssertTrue(out.contains("/etc: 0 modified, 3 added, 0 removed"), out)
        for p in ["caf\\xe9.conf", "d\\xe9j\\xe0", "d\\xe9j\\xe0/f\\xff"] { XCTAssertTrue(out.contains("A /etc/\(p)\n"), out) }
        let new = deploymentPath(try status()[0])
        XCTAssertEqual(try TestSupport.sh("cd '\(new)/etc' && cat \"$(printf 'caf\\351.conf')\" \"$(printf 'd\\351j\\340/f\\377')\""), "cafe\ndeep\n")

        let diff = try cairn(["config-diff", "--sysroot", sys]).stdout
        XCTAssertEqual(diff, "A    /etc/caf\\xe9.conf\nA    /etc/d\\xe9j\\xe0\nA    /etc/d\\xe9j\\xe0/f\\xff\n")

        // Deploying again merges from the new deployment, names and all.
        try commit("3.0")
        XCTAssertTrue(try cairn(["deploy", "--sysroot", sys, "os/x"]).stdout.contains("3 added"))
        // The v1 deployment went at that deploy; undeploy the v2 one.
        XCTAssertFalse(FileManager.default.fileExists(atPath: old))
        try cairn(["undeploy", "--sysroot", sys, "1"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: new))
        XCTAssertEqual(try status().count, 1)

        // A leftover deployment folder with such names goes at cleanup.
        let stale = sys + "/ostree/deploy/os/deploy/stale.0"
        try TestSupport.sh("mkdir -p '\(stale)/etc' && cd '\(stale)/etc' && echo x > \"$(printf 'caf\\351')\" && ln -s / \"$(printf 'l\\351')\"")
        let cleaned = try cairn(["cleanup", "--sysroot", sys]).stdout
        XCTAssertTrue(cleaned.contains("Deleted \(stale)"), cleaned)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    /// Removing a deployment folder stops at a mount point inside it
    /// (here a tmpfs of a private mount namespace) and names it, leaving
    /// what is mounted there alone.
    func testCleanupDoesNotCrossAMountPointInADeploymentFolder() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        try cairn(["sysroot", "init", sys, "--stateroot", "os"])
        let mnt = sys + "/ostree/deploy/os/deploy/stale.0/etc/mnt"
        try TestSupport.sh("mkdir -p '\(mnt)'")
        let r = try TestSupport.run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            mount -t tmpfs tmpfs '\(mnt)' || exit 100
            echo keep > '\(mnt)/file'
            '\(cairnPath)' cleanup --sysroot '\(sys)' >&2
            echo "status $?"
            cat '\(mnt)/file'
            """])
        XCTAssertEqual(r.stdout, "status 1\nkeep\n", r.stderr)
        XCTAssertTrue(r.stderr.contains("removing \(mnt)") && r.stderr.contains("mount point"), r.stderr)
        try cairn(["cleanup", "--sysroot", sys])  // unmounted, it goes
        XCTAssertFalse(FileManager.default.fileExists(atPath: sys + "/ostree/deploy/os/deploy/stale.0"))
    }

    // MARK: Fifos, device nodes, sockets, hardlinks

    /// Fifos and device nodes are carried with type, mode, owner, device
    /// number and xattrs; a socket is reported and left out; files that are
    /// hard links of each other stay one inode.
    func testFifosDevicesAndHardlinksAreCarriedAndSocketsReported() throws {
        guard getuid() == 0 else { throw XCTSkip("creating device nodes needs root") }
        try TestSupport.require(tool: "python3")
        try TestSupport.require(tool: "setfattr")
        let old = try deployFirstVersion()
        try TestSupport.sh("""
            set -e
            cd '\(old)/etc'
            mkfifo -m 0640 fifo && chown 1000:1000 fifo && setfattr -h -n trusted.kind -v fifo fifo
            mknod -m 0660 ttyX c 4 64 && chown 0:5 ttyX
            mknod -m 0600 loopX b 7 200
            echo shared > a.conf && setfattr -n user.note -v hello a.conf && chmod 0604 a.conf
            ln a.conf b.conf
            mkdir -p links/deep && ln a.conf links/deep/c.conf
            ln -s hostname sl && setfattr -h -n trusted.note -v link sl
            python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("sock")'
            """)
        try commit("2.0")
        let r = try cairn(["deploy", "--sysroot", sys, "os/x"])
        for line in ["carried fifo /etc/fifo", "carried character device 4:64 /etc/ttyX", "carried block device 7:200 /etc/loopX",
                     "hardlink /etc/b.conf to /etc/a.conf", "hardlink /etc/links/deep/c.conf to /etc/a.conf"] {
            XCTAssertTrue(r.stdout.contains(line), "\(line): \(r.stdout)")
        }
        XCTAssertTrue(r.stdout.contains("/etc: 0 modified, 9 added, 0 removed"), r.stdout)
        XCTAssertTrue(r.stderr.contains("/etc/sock") && r.stderr.contains("socket"), "the socket is reported: \(r.stderr)")

        let etc = deploymentPath(try status()[0]) + "/etc"
        let st = try TestSupport.sh("cd '\(etc)' && stat -c '%n %F %a %u %g %t:%T' fifo ttyX loopX")
        XCTAssertEqual(st, "fifo fifo 640 1000 1000 0:0\nttyX character special file 660 0 5 4:40\nloopX block special file 600 0 0 7:c8\n")
        let links = try TestSupport.sh("cd '\(etc)' && stat -c '%i %h %a' a.conf b.conf links/deep/c.conf").split(separator: "\n")
        XCTAssertEqual(links.count, 3)
        XCTAssertEqual(Set(links).count, 1, "one inode: \(links)")
        XCTAssertTrue(links[0].hasSuffix(" 3 604"), "\(links)")
        XCTAssertEqual(try TestSupport.sh("cd '\(etc)' && cat links/deep/c.conf && getfattr --only-values -n user.note a.conf && echo"), "shared\nhello\n")
        XCTAssertEqual(try TestSupport.sh("cd '\(etc)' && getfattr -h --only-values -n trusted.note sl && echo && getfattr -h --only-values -n trusted.kind fifo"), "link\nfifo")
        XCTAssertFalse(FileManager.default.fileExists(atPath: etc + "/sock"))
        XCTAssertEqual(try TestSupport.sh("ls -A '\(etc)' | grep -c sock || true"), "0\n")
    }
}
