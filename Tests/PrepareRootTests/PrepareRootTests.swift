import CairnTestSupport
import Foundation
import Trust
import XCTest

/// The built `cairn-prepare-root` (the debug build, a test build) on
/// sysroots made by `cairn deploy`, run as root with real mounts inside
/// `unshare -m --propagation private`, so that nothing reaches the host's
/// mount table. This kernel has no fs-verity: signed and pinned modes refuse
/// to boot here unless the test build's switch
/// CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE=1 is set (the image's digest then
/// computed from its content, and no verity=require).
final class PrepareRootTests: XCTestCase {
    /// Built once per class: a busybox tree committed (signed) and deployed,
    /// a second commit's image, a trusted and an untrusted key.
    nonisolated(unsafe) static var template = ""
    nonisolated(unsafe) static var cairn = ""

    var dir = ""
    var program = ""
    var sys: String { dir + "/sys" }
    var tree: String { Self.template + "/tree" }
    var keys: String { Self.template }

    override class func setUp() {
        super.setUp()
        guard getuid() == 0, let c = try? TestSupport.executable("cairn"), let t = try? TestSupport.scratchFolder("cairn-pr-template") else { return }
        cairn = c
        template = t
        let script = TestSupport.packageRoot.appendingPathComponent("scripts/make-sample-tree.sh").path
        let r = try? TestSupport.run("/bin/sh", ["-c", """
            set -e
            cd '\(t)'
            mk() {
                '\(script)' "$1" "$2" >/dev/null
                mkdir -p "$1/usr/lib/modules/6.12.0"
                echo kernel > "$1/usr/lib/modules/6.12.0/vmlinuz"
                echo initramfs > "$1/usr/lib/modules/6.12.0/initramfs.img"
            }
            mk tree 1.0
            mk tree2 2.0
            echo two > tree2/usr/share/doc/cairn-sample/second
            '\(c)' keygen --output key >/dev/null
            '\(c)' keygen --output other >/dev/null
            '\(c)' sysroot init sys --stateroot os >/dev/null
            '\(c)' commit --repo sys/ostree/repo -b os/x --sign-key key.secret tree >/dev/null 2>&1
            '\(c)' deploy --sysroot sys os/x >/dev/null
            # A second, different image (another commit) to swap in.
            mkdir other-sys
            '\(c)' sysroot init other-sys/sys --stateroot os >/dev/null
            '\(c)' commit --repo other-sys/sys/ostree/repo -b os/x --sign-key key.secret tree2 >/dev/null 2>&1
            '\(c)' deploy --sysroot other-sys/sys os/x >/dev/null
            cp other-sys/sys/ostree/deploy/os/deploy/*/.ostree.cfs image2.cfs
            """])
        if r?.status != 0 { template = ""; print("template setup failed: \(r?.stderr ?? "")") }
    }

    override class func tearDown() {
        if !template.isEmpty { TestSupport.remove(template) }
        super.tearDown()
    }

    override func setUpWithError() throws {
        try TestSupport.requireRoot()
        try TestSupport.require(tool: "unshare")
        guard !Self.template.isEmpty else { throw XCTSkip("fixture could not be built") }
        program = try TestSupport.executable("cairn-prepare-root")
        dir = try TestSupport.scratchFolder("cairn-pr")
        try TestSupport.sh("cp -a '\(Self.template)/sys' '\(dir)/sys' && mkdir '\(dir)/run' && : > '\(dir)/kmsg'")
    }

    override func tearDown() {
        if !dir.isEmpty { TestSupport.remove(dir) }
    }

    // MARK: Helpers

    var deployment: String {
        get throws { try TestSupport.sh("echo '\(sys)'/ostree/deploy/os/deploy/*.0").trimmingCharacters(in: .whitespacesAndNewlines) }
    }
    var checksum: String {
        get throws { String(URL(fileURLWithPath: try deployment).lastPathComponent.prefix(64)) }
    }
    var commitObject: String {
        get throws { let c = try checksum; return "\(sys)/ostree/repo/objects/\(c.prefix(2))/\(c.dropFirst(2)).commit" }
    }
    /// The `options` line of the boot entry.
    var cmdline: String {
        get throws { try TestSupport.sh("sed -n 's/^options //p' '\(sys)'/boot/loader/entries/*.conf").trimmingCharacters(in: .whitespacesAndNewlines) }
    }

    func config(_ text: String) throws -> String {
        let path = dir + "/prepare-root.conf"
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        return path
    }

    func signedConfig(extra: String = "") throws -> String {
        try config("[composefs]\nenabled = signed\nkeypath = \(keys)/key.pub\n\(extra)")
    }

    struct Outcome {
        var knob: Bool
        var status: Int32
        var stderr: String
        var checks: String
        var mountsBefore: String
        var mountsAfter: String
        var kmsg: String
    }

    /// Runs the program in a private mount namespace, then `check` (shell,
    /// with $SYS set) in the same namespace; records the mount table before
    /// and after. Returns when the namespace is gone.
    /// `setup` (shell) runs first, in the namespace: mounts as an initramfs has them.
    func prepare(cmdline: String, config: String, knob: Bool = true, setup: String = "", check: String = "", sysroot: String? = nil) throws -> Outcome {
        try TestSupport.sh(": > '\(dir)/kmsg'")
        let script = """
            \(setup)
            cat /proc/self/mountinfo > "$D/before"
            "$PROG" --cmdline "$CMDLINE" --config "$CONF" --run-dir "$D/run" --kmsg "$D/kmsg" "$SYS" 2> "$D/stderr"
            echo $? > "$D/status"
            cat /proc/self/mountinfo > "$D/after"
            { :
            \(check)
            } > "$D/checks" 2>&1
            """
        var env = ["D": dir, "PROG": program, "CMDLINE": cmdline, "CONF": config, "SYS": sysroot ?? sys, "TREE": tree]
        if knob { env["CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE"] = "1" }
        let r = try TestSupport.run("/usr/bin/unshare", ["-m", "--propagation", "private", "sh", "-c", script], environment: env)
        XCTAssertEqual(r.status, 0, r.stderr)
        func read(_ n: String) -> String { (try? String(contentsOfFile: dir + "/" + n, encoding: .utf8)) ?? "" }
        // Nothing leaks to the host.
        let host = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        XCTAssertFalse(host.contains(dir), "a mount leaked to the host: \(host)")
        return Outcome(knob: knob, status: Int32(read("status").trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1,
                       stderr: read("stderr"), checks: read("checks"),
                       mountsBefore: read("before"), mountsAfter: read("after"), kmsg: read("kmsg"))
    }

    static let warning = "cairn-prepare-root: WARNING: TEST BUILD with CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE=1: signed and pinned modes do not require fs-verity; never boot a system with it\n"

    /// The test build's warning, first on stderr and the console, exactly
    /// when the switch is set; returns stderr and the console after it.
    func afterWarning(_ o: Outcome, file: StaticString = #filePath, line: UInt = #line) -> (stderr: String, kmsg: String) {
        guard o.knob else {
            XCTAssertFalse(o.stderr.contains("WARNING"), o.stderr, file: file, line: line)
            return (o.stderr, o.kmsg)
        }
        XCTAssertTrue(o.stderr.hasPrefix(Self.warning), o.stderr, file: file, line: line)
        XCTAssertTrue(o.kmsg.hasPrefix("<4>" + Self.warning), o.kmsg, file: file, line: line)
        return (String(o.stderr.dropFirst(Self.warning.count)), String(o.kmsg.dropFirst(Self.warning.count + 3)))
    }

    /// A refusal: status 1, one line on stderr and on the console log naming
    /// `cause` (after the test build's warning), the mount table unchanged,
    /// nothing created.
    @discardableResult
    func assertRefused(_ o: Outcome, _ cause: String, file: StaticString = #filePath, line: UInt = #line) -> Outcome {
        XCTAssertEqual(o.status, 1, o.stderr, file: file, line: line)
        let (stderr, kmsg) = afterWarning(o, file: file, line: line)
        let lines = stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, "one line on stderr: \(o.stderr)", file: file, line: line)
        XCTAssertTrue(stderr.hasPrefix("cairn-prepare-root: refusing to boot: "), o.stderr, file: file, line: line)
        XCTAssertTrue(stderr.contains(cause), "expected \"\(cause)\" in: \(o.stderr)", file: file, line: line)
        XCTAssertEqual(kmsg, "<3>" + stderr, file: file, line: line)
        XCTAssertEqual(o.mountsBefore, o.mountsAfter, "something stayed mounted", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sys + ".tmp"), file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run/ostree-booted"), file: file, line: line)
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: dir + "/run")) ?? ["?"], [], file: file, line: line)
        return o
    }

    /// Checks run inside the namespace on a mounted root; each prints one line.
    let rootChecks = """
        DEP=$(echo "$SYS"/sysroot/ostree/deploy/os/deploy/*.0)
        diff -r --no-dereference -x etc "$TREE/usr" "$SYS/usr" && echo usr-equal
        diff -r --no-dereference "$TREE/etc" "$SYS/usr/etc" && echo usr-etc-equal
        (cd "$TREE" && find . -printf '%p %y %m %l\\n' | sed 's#^\\./etc#./usr/etc#' | sort) > "$D/tree.list"
        (cd "$SYS" && find . -xdev -printf '%p %y %m %l\\n' | sort) > "$D/root.list"
        grep -v -e '^\\./etc ' -e '^\\./boot ' "$D/root.list" | diff "$D/tree.list" - && echo listing-equal
        touch "$SYS/usr/x" 2>/dev/null || echo root-read-only
        diff -r --no-dereference "$DEP/etc" "$SYS/etc" && echo etc-equal
        touch "$SYS/etc/written" && [ -f "$DEP/etc/written" ] && echo etc-writable
        echo data > "$SYS/var/marker" && [ -f "$SYS/sysroot/ostree/deploy/os/var/marker" ] && echo var-bound
        [ -d "$SYS/sysroot/ostree/repo/objects" ] && echo sysroot-present
        [ -f "$D/run/ostree-booted" ] && echo ostree-booted
        grep -q " $SYS rw\\?o\\?,\\?.* - overlay composefs " /proc/self/mountinfo && echo composefs-mounted
        """

    func assertMounted(_ o: Outcome, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(o.status, 0, o.stderr, file: file, line: line)
        for c in ["usr-equal", "usr-etc-equal", "listing-equal", "root-read-only", "etc-equal", "etc-writable",
                  "var-bound", "sysroot-present", "ostree-booted", "composefs-mounted"] {
            XCTAssertTrue(o.checks.split(separator: "\n").contains(Substring(c)), "\(c) failed:\n\(o.checks)", file: file, line: line)
        }
        XCTAssertTrue(o.stderr.contains(" ms\n"), "duration logged: \(o.stderr)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sys + ".tmp"), file: file, line: line)
    }

    // MARK: Booting

    static let testBuildMode = " (TEST BUILD: fs-verity not required)"

    func testSignedBootMountsTheCommit() throws {
        let o = try prepare(cmdline: "root=/dev/vda rw " + (try cmdline) + " quiet", config: try signedConfig(), check: rootChecks)
        assertMounted(o)
        let (stderr, kmsg) = afterWarning(o)
        XCTAssertTrue(stderr.hasPrefix("cairn-prepare-root: signed\(Self.testBuildMode): mounted os/\(try checksum).0"), o.stderr)
        XCTAssertTrue(stderr.contains("signed by "), o.stderr)
        XCTAssertTrue(kmsg.hasPrefix("<6>cairn-prepare-root: signed\(Self.testBuildMode): mounted"), o.kmsg)
        // /etc and /var writes went to the deployment and the stateroot.
        XCTAssertTrue(FileManager.default.fileExists(atPath: try deployment + "/etc/written"))
        XCTAssertEqual(try String(contentsOfFile: sys + "/ostree/deploy/os/var/marker", encoding: .utf8), "data\n")
    }

    /// Without the switch (as the release build always is), signed and
    /// pinned modes need the kernel's measurement of the image: refused on
    /// this kernel, which has no fs-verity, saying how to seal it.
    func testSignedAndPinnedWithoutKnobNeedImageVerity() throws {
        let hint = "has no fs-verity, which signed mode requires: run `cairn post-copy` on the running system, or `cairn-prepare-root seal` from the initramfs"
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig(), knob: false), hint)
        let digest = try TestSupport.run(Self.cairn, ["image", "digest", try deployment + "/.ostree.cfs"]).lastLine
        let pinned = try prepare(cmdline: try cmdline + " composefs.digest=v1-sha256-12:\(digest)", config: try config("[composefs]\nenabled = yes\n"), knob: false)
        assertRefused(pinned, "has no fs-verity, which kernel-pinned mode requires: run `cairn post-copy`")
        // yes mode mounts without fs-verity, switch or not, and says nothing of a test build.
        let yes = try prepare(cmdline: try cmdline, config: try config("[composefs]\nenabled = yes\n"), knob: false)
        XCTAssertEqual(yes.status, 0, yes.stderr)
        XCTAssertTrue(yes.stderr.hasPrefix("cairn-prepare-root: yes: mounted"), yes.stderr)
    }

    func testKernelPinnedDigestBoots() throws {
        let digest = try TestSupport.run(Self.cairn, ["image", "digest", try deployment + "/.ostree.cfs"]).lastLine
        XCTAssertEqual(digest.count, 64)
        let o = try prepare(cmdline: try cmdline + " composefs.digest=v1-sha256-12:\(digest)", config: try config("[composefs]\nenabled = yes\n"), check: rootChecks)
        assertMounted(o)
        XCTAssertTrue(afterWarning(o).stderr.hasPrefix("cairn-prepare-root: kernel-pinned\(Self.testBuildMode): mounted"), o.stderr)
        // Legacy spelling, and a command line override of the mode.
        try TestSupport.sh("rm -f '\(dir)/run/ostree-booted'")
        let legacy = try prepare(cmdline: try cmdline + " composefs=\(digest) ostree.prepare-root.composefs=maybe", config: try config("[composefs]\nenabled = no\n"))
        XCTAssertEqual(legacy.status, 0, legacy.stderr)
    }

    func testYesModeWithoutVerity() throws {
        let o = try prepare(cmdline: try cmdline, config: try config("# plain composefs\n[composefs]\nenabled=yes\n"), knob: false, check: rootChecks)
        assertMounted(o)
        XCTAssertFalse(o.mountsAfter.contains("verity=require"))
    }

    /// With systemd in the initramfs (dracut) every mount is shared, and the
    /// sysroot is a mount of its own: the binds of its /etc, /var and root
    /// into the new root join its peer group. Attaching the new root on the
    /// sysroot must not propagate a copy of the new root onto its own
    /// /sysroot bind: $SYS/sysroot shows the physical root, and there is one
    /// composefs root, not two.
    func testSharedSysrootMountGetsNoCopyOfTheNewRoot() throws {
        let setup = """
            mount --make-rshared /
            mount --bind "$SYS" "$SYS"
            mount --make-private "$SYS"
            mount --make-shared "$SYS"
            """
        for readOnly in [false, true] {
            try TestSupport.sh("rm -f '\(dir)/run/ostree-booted'")
            let conf = try signedConfig(extra: "[sysroot]\nreadonly = \(readOnly)\n")
            let o = try prepare(cmdline: try cmdline, config: conf, setup: setup, check: rootChecks + """

                [ "$(grep -c ' - overlay composefs ' /proc/self/mountinfo)" = 1 ] && echo one-composefs-root
                awk -v m="$SYS/sysroot" '$5 == m { print $6 }' /proc/self/mountinfo | grep -q '^ro' && echo sysroot-bind-read-only
                true
                """)
            assertMounted(o)
            XCTAssertTrue(o.checks.split(separator: "\n").contains("one-composefs-root"), "a copy of the new root was propagated:\n\(o.mountsAfter)")
            XCTAssertEqual(o.checks.split(separator: "\n").contains("sysroot-bind-read-only"), readOnly, o.mountsAfter)
        }
    }

    func testTransientEtcAndReadOnlySysroot() throws {
        let conf = try signedConfig(extra: "[etc]\ntransient = true\n[sysroot]\nreadonly = true\n")
        let o = try prepare(cmdline: try cmdline, config: conf, check: """
            touch "$SYS/etc/new" && echo etc-writable
            diff -r "$TREE/etc" "$SYS/etc" | grep -v '^Only in .*: new$' | grep -q . || echo etc-is-usr-etc
            touch "$SYS/sysroot/x" 2>/dev/null || echo sysroot-read-only
            [ -f "$D/run/ostree/transient-etc/upper/new" ] && echo upper-in-run
            """)
        XCTAssertEqual(o.status, 0, o.stderr)
        for c in ["etc-writable", "etc-is-usr-etc", "sysroot-read-only", "upper-in-run"] {
            XCTAssertTrue(o.checks.contains(c), "\(c): \(o.checks)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: try deployment + "/etc/new"))
    }

    func testTransientRoot() throws {
        let o = try prepare(cmdline: try cmdline, config: try signedConfig(extra: "[root]\ntransient = true\n"), check: """
            echo x > "$SYS/usr/new" && echo root-writable
            cat "$SYS/usr/lib/os-release" | grep -q cairn && echo content
            [ -d "$SYS.tmp" ] || echo tmp-gone
            """)
        XCTAssertEqual(o.status, 0, o.stderr)
        for c in ["root-writable", "content", "tmp-gone"] { XCTAssertTrue(o.checks.contains(c), "\(c): \(o.checks)") }
    }

    // MARK: /run/ostree-booted

    /// The record names the deployment directory by device and inode (the
    /// mounted root, an overlay, has others), carries what was set up, and
    /// GLib reads it as the normal-form a{sv} upstream writes.
    func testBootedRecordNamesTheDeployment() throws {
        let helper = try GLibHelper.path()
        let ids = try TestSupport.sh("stat -c '%d %i' '\(try deployment)'").split(separator: " ")
            .map { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines))! }
        let (dev, ino) = (ids[0], ids[1])
        let devIno = "'backing-root-device-inode': <(uint64 \(dev), uint64 \(ino))>"
        let key = "\(keys)/key.pub"
        let signed = "[composefs]\nenabled = signed\nkeypath = \(key)\n"
        let cases: [(name: String, config: String, knob: Bool, record: BootedRecord, text: String)] = [
            ("signed", signed, true,
             BootedRecord(backingRootDeviceInode: .init(device: dev, inode: ino), composefs: true, signingKeyPath: key),
             "{\(devIno), 'root.transient': <false>, 'composefs.signed': <'\(key)'>, 'composefs': <true>, 'composefs.verity': <false>, 'sysroot-ro': <false>}"),
            ("transient etc", signed + "[etc]\ntransient = true\n[sysroot]\nreadonly = true\n", true,
             BootedRecord(backingRootDeviceInode: .init(device: dev, inode: ino), composefs: true, signingKeyPath: key, sysrootReadOnly: true,
                          transientEtc: dir + "/run/ostree/transient-etc"),
             "{\(devIno), 'root.transient': <false>, 'composefs.signed': <'\(key)'>, 'composefs': <true>, 'composefs.verity': <false>, "
                + "'sysroot-ro': <true>, 'transient-etc': <'\(dir)/run/ostree/transient-etc'>}"),
            ("transient root", signed + "[root]\ntransient = true\n", true,
             BootedRecord(backingRootDeviceInode: .init(device: dev, inode: ino), rootTransient: true, composefs: true, signingKeyPath: key),
             "{\(devIno), 'root.transient': <true>, 'composefs.signed': <'\(key)'>, 'composefs': <true>, 'composefs.verity': <false>, 'sysroot-ro': <false>}"),
            ("yes", "[composefs]\nenabled = yes\n", false,
             BootedRecord(backingRootDeviceInode: .init(device: dev, inode: ino), composefs: true),
             "{\(devIno), 'root.transient': <false>, 'composefs': <true>, 'composefs.verity': <false>, 'sysroot-ro': <false>}"),
        ]
        for c in cases {
            try TestSupport.sh("rm -rf '\(dir)/run' && mkdir '\(dir)/run'")
            let o = try prepare(cmdline: try cmdline, config: try config(c.config), knob: c.knob, check: """
                [ "$(stat -c '%d %i' "$SYS")" != "\(dev) \(ino)" ] && echo root-is-another-inode
                """)
            XCTAssertEqual(o.status, 0, "\(c.name): \(o.stderr)")
            XCTAssertTrue(o.checks.contains("root-is-another-inode"), "\(c.name): \(o.checks)")
            let file = dir + "/run/ostree-booted"
            XCTAssertEqual(try BootedRecord(serialized: [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))), c.record, c.name)
            let printed = try TestSupport.run(helper, ["print", "a{sv}", file])
            XCTAssertEqual(printed.stdout, "normal\n" + c.text + "\n", "\(c.name): \(printed.stderr)")
            XCTAssertEqual(try TestSupport.sh("stat -c %a '\(file)'"), "644\n", c.name)
            // Written by rename: no temporary file left beside it.
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/run").filter { $0 != "ostree" }, ["ostree-booted"], c.name)
        }
    }

    /// A symlink planted at the record's name is replaced, not written through.
    func testBootedRecordReplacesASymlink() throws {
        try TestSupport.sh("echo keep > '\(dir)/target' && ln -s '\(dir)/target' '\(dir)/run/ostree-booted'")
        let o = try prepare(cmdline: try cmdline, config: try signedConfig())
        XCTAssertEqual(o.status, 0, o.stderr)
        XCTAssertEqual(try String(contentsOfFile: dir + "/target", encoding: .utf8), "keep\n")
        XCTAssertEqual(try TestSupport.sh("stat -c %F '\(dir)/run/ostree-booted'"), "regular file\n")
    }

    // MARK: Refusals: the image and the signature

    func testFlippedImageByteIsRefused() throws {
        try TestSupport.sh("printf '\\377' | dd of='\(try deployment)/.ostree.cfs' bs=1 seek=1100 conv=notrunc 2>/dev/null")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "is not the one the signed commit records")
    }

    func testMissingSignatureIsRefused() throws {
        try TestSupport.sh("rm '\(try commitObject)meta'")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "no detached metadata")
    }

    func testCorruptSignatureIsRefused() throws {
        // Garbage detached metadata, then a well-formed one with a flipped signature byte.
        let meta = try commitObject + "meta"
        let good = try Data(contentsOf: URL(fileURLWithPath: meta))
        try Data(repeating: 0xA5, count: 57).write(to: URL(fileURLWithPath: meta))
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "detached metadata is corrupt")
        var flipped = good
        // a{sv} entry: key, NUL, the variant 8-aligned: the 64-byte signature first.
        let keyEnd = flipped.range(of: Data("ostree.sign.ed25519".utf8))!.upperBound + 1
        flipped[(keyEnd + 7) & ~7 + 5] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: meta))
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "verifies with a trusted key")
    }

    func testUntrustedKeyIsRefused() throws {
        let conf = try config("[composefs]\nenabled = signed\nkeypath = \(keys)/other.pub\n")
        assertRefused(try prepare(cmdline: try cmdline, config: conf), "none of the 1 ed25519 signature(s) verifies with a trusted key")
    }

    func testRevokedKeyIsRefused() throws {
        try TestSupport.sh("cat '\(keys)/other.pub' '\(keys)/key.pub' > '\(dir)/trusted' && cp '\(keys)/key.pub' '\(dir)/revoked'")
        let conf = try config("[composefs]\nenabled = signed\nkeypath = \(dir)/trusted\nrevokedkeypath = \(dir)/revoked\n")
        assertRefused(try prepare(cmdline: try cmdline, config: conf), "signed only by revoked key")
    }

    func testMissingKeyFileIsRefused() throws {
        let conf = try config("[composefs]\nenabled = signed\nkeypath = \(dir)/nokey\n")
        assertRefused(try prepare(cmdline: try cmdline, config: conf), "cannot load the trusted keys")
    }

    func testImageOfAnotherCommitIsRefused() throws {
        // The signed commit records digest A; the deployment holds image B.
        try TestSupport.sh("cp '\(keys)/image2.cfs' '\(try deployment)/.ostree.cfs'")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "is not the one the signed commit records")
    }

    func testSwappedCommitObjectIsRefused() throws {
        // Commit object content replaced: it no longer hashes to its name.
        try TestSupport.sh("printf 'x' >> '\(try commitObject)'")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "does not have the checksum")
    }

    func testPinnedDigestMismatchIsRefused() throws {
        let zeros = String(repeating: "0", count: 64)
        assertRefused(try prepare(cmdline: try cmdline + " composefs.digest=v1-sha256-12:\(zeros)", config: try config("[composefs]\nenabled = yes\n")),
                      "is not the one the command line pins")
        // Signed and pinned must agree.
        assertRefused(try prepare(cmdline: try cmdline + " composefs.digest=v1-sha256-12:\(zeros)", config: try signedConfig()),
                      "the signed commit records")
    }

    func testMissingImageIsRefusedInSignedMode() throws {
        try TestSupport.sh("rm '\(try deployment)/.ostree.cfs'")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "composefs image")
    }

    func testMissingObjectStoreIsRefused() throws {
        try TestSupport.sh("mv '\(sys)/ostree/repo/objects' '\(sys)/ostree/repo/objects.gone' && mkdir -p '\(sys)/ostree/repo/objects/\(try checksum.prefix(2))' && cp '\(sys)/ostree/repo/objects.gone/\(try checksum.prefix(2))/'*.commit* '\(sys)/ostree/repo/objects/\(try checksum.prefix(2))/' && rm -rf '\(sys)/ostree/repo/objects.gone'")
        // The commit verifies, the image matches, but the backing files are gone:
        // the mount is refused by overlayfs or the content is unreadable.
        let o = try prepare(cmdline: try cmdline, config: try signedConfig(), check: "cat \"$SYS/usr/lib/os-release\" >/dev/null 2>&1 || echo unreadable")
        if o.status == 0 { XCTAssertTrue(o.checks.contains("unreadable"), o.checks) } else { assertRefused(o, "composefs") }
    }

    func testVerityModeRefusesImageWithoutVerity() throws {
        // The test build's switch does not reach verity mode.
        for knob in [true, false] {
            assertRefused(try prepare(cmdline: try cmdline, config: try config("[composefs]\nenabled = verity\n"), knob: knob),
                          "has no fs-verity, which verity mode requires: run `cairn post-copy`")
        }
    }

    // MARK: Refusals: ostree=

    func testOstreeOutsideTheSysrootIsRefused() throws {
        assertRefused(try prepare(cmdline: "ostree=/../../etc", config: try signedConfig()), "leads outside the sysroot")
        // Through a relative symlink climbing out.
        try TestSupport.sh("mkdir -p '\(sys)/ostree/boot.1/os/evil' && ln -s ../../../../../../../../../../../../../../../../etc '\(sys)/ostree/boot.1/os/evil/0'")
        assertRefused(try prepare(cmdline: "ostree=/ostree/boot.1/os/evil/0", config: try signedConfig()), "leads outside the sysroot")
        // An absolute symlink stays inside the sysroot (where /tmp is not a deployment).
        try TestSupport.sh("ln -s /tmp '\(sys)/ostree/boot.1/os/evil/1'")
        assertRefused(try prepare(cmdline: "ostree=/ostree/boot.1/os/evil/1", config: try signedConfig()), "not a deployment")
        // A directory that is not a deployment.
        assertRefused(try prepare(cmdline: "ostree=/ostree/repo", config: try signedConfig()), "not a deployment")
    }

    func testMissingDeploymentIsRefused() throws {
        let c = try cmdline.replacingOccurrences(of: "/0", with: "/7")
        assertRefused(try prepare(cmdline: c, config: try signedConfig()), "does not exist in the sysroot")
        // The boot symlink is there, the deployment it names is gone.
        try TestSupport.sh("chattr -R -f -i '\(try deployment)'; rm -rf '\(try deployment)'")
        assertRefused(try prepare(cmdline: try cmdline, config: try signedConfig()), "does not exist in the sysroot")
    }

    func testSymlinkLoopIsRefused() throws {
        try TestSupport.sh("mkdir -p '\(sys)/ostree/loop' && ln -s b '\(sys)/ostree/loop/a' && ln -s a '\(sys)/ostree/loop/b'")
        assertRefused(try prepare(cmdline: "ostree=/ostree/loop/a", config: try signedConfig()), "symlink loop")
        try TestSupport.sh("ln -s . '\(sys)/ostree/loop/self' && ln -s self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/self/x '\(sys)/ostree/loop/deep'")
        assertRefused(try prepare(cmdline: "ostree=/ostree/loop/deep", config: try signedConfig()), "symlink loop")
    }

    // MARK: Refusals: configuration and command line

    func testMalformedConfigurationIsRefused() throws {
        let bad = try config("[composefs]\nenabled = signed\n[etc\ntransient = true\n")
        assertRefused(try prepare(cmdline: try cmdline, config: bad), "\(bad):3: invalid group header")
        let badValue = try config("[composefs]\nenabled = sometimes\n")
        assertRefused(try prepare(cmdline: try cmdline, config: badValue), "\(badValue):2: [composefs] enabled")
        let noGroup = try config("enabled = signed\n")
        assertRefused(try prepare(cmdline: try cmdline, config: noGroup), "\(noGroup):1: key before the first [group]")
        assertRefused(try prepare(cmdline: try cmdline, config: dir + "/absent.conf"), "cannot read configuration")
    }

    func testGarbageOnTheCommandLineIsRefused() throws {
        let conf = try signedConfig()
        assertRefused(try prepare(cmdline: "root=/dev/vda quiet", config: conf), "no ostree= argument")
        assertRefused(try prepare(cmdline: "ostree=\"/ostree/boot.1", config: conf), "unterminated double quote")
        assertRefused(try prepare(cmdline: "ostree=/a\u{1}b", config: conf), "control byte 0x01")
        assertRefused(try prepare(cmdline: "ostree=relative/path", config: conf), "not an absolute path")
        assertRefused(try prepare(cmdline: "ostree=/a ostree=/b", config: conf), "different values")
        assertRefused(try prepare(cmdline: try cmdline + " composefs.digest=v2-sha512:00", config: conf), "composefs.digest=")
        assertRefused(try prepare(cmdline: try cmdline + " ostree.prepare-root.composefs=perhaps", config: conf), "ostree.prepare-root.composefs=perhaps")
        assertRefused(try prepare(cmdline: "ostree", config: conf), "ostree without a value")
    }

    func testNoModeIsRefused() throws {
        assertRefused(try prepare(cmdline: try cmdline, config: try config("[composefs]\nenabled = no\n")), "composefs is disabled")
        assertRefused(try prepare(cmdline: try cmdline + " ostree.prepare-root.composefs=0", config: try signedConfig()), "composefs is disabled (ostree.prepare-root.composefs=")
    }

    func testUsage() throws {
        let help = try TestSupport.run(program, ["--help"])
        XCTAssertEqual(help.status, 0)
        // The debug build the tests run is a test build, and says so.
        XCTAssertTrue(help.stdout.contains("TEST BUILD. CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE=1"), help.stdout)
        XCTAssertTrue(help.stdout.contains("need fs-verity on the image"), help.stdout)
        let bad = try TestSupport.run(program, ["--nope"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1)
    }
}
