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

    /// Every boot entry names a complete deployment: image, etc/, origin.
    func assertEntriesComplete(file: StaticString = #filePath, line: UInt = #line) throws {
        for d in try status() {
            let p = deploymentPath(d)
            for needed in [p + "/.ostree.cfs", p + "/etc", p + ".origin"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: needed), "missing \(needed)", file: file, line: line)
            }
        }
    }

    /// Every entry below `path` with type, mode, owner, size, link target and content digest.
    func snapshot(_ path: String) throws -> String {
        try TestSupport.sh("cd '\(path)' && find . -printf '%p %y %m %U %G %s %l\\n' | sort && find . -type f -exec sha256sum {} + | sort")
    }
}
