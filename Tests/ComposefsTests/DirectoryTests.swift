import XCTest
import Foundation
import Glibc
@testable import Composefs
import CairnSystem

final class DirectoryTests: XCTestCase {
    func makeTree1() throws -> (URL, URL) {
        guard getuid() == 0 else { throw XCTSkip("make-tree1.sh needs root (chown, mknod, trusted.* xattrs)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/setfattr") else { throw XCTSkip("setfattr (package attr) not installed") }
        let script = try Shared.dir("trees").appendingPathComponent("make-tree1.sh")
        let tmp = try tempDir()
        let dest = tmp.appendingPathComponent("tree1")
        let (rc, out) = try runTool(["/bin/sh", script.path, dest.path])
        XCTAssertEqual(rc, 0, out)
        return (tmp, dest)
    }

    func testTree1Images() throws {
        let (tmp, dest) = try makeTree1()
        defer { try? FileManager.default.removeItem(at: tmp) }
        let expected = try String(contentsOf: try Shared.dir("trees").appendingPathComponent("tree1.expected"), encoding: .utf8)
        for line in expected.split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            let epoch = f[0] == "--use-epoch"
            let tree = try DirectoryScanner.scan(dest.path, options: DirectoryScanOptions(useEpoch: epoch))
            let img = try ImageWriter.image(of: tree)
            XCTAssertEqual(img.count, Int(f[1]), f[0])
            XCTAssertEqual(sha256Hex(img), f[2], f[0])
            XCTAssertEqual(hexString(fsVerityDigest(img)), f[3], f[0])
        }
    }

    func testTree1DigestStore() throws {
        let (tmp, dest) = try makeTree1()
        defer { try? FileManager.default.removeItem(at: tmp) }
        let store = tmp.appendingPathComponent("store")
        try FileManager.default.createDirectory(at: store, withIntermediateDirectories: true)
        var opts = DirectoryScanOptions(digestStore: DigestStore(root: store.path))
        opts.threads = 2
        _ = try DirectoryScanner.scan(dest.path, options: opts)
        // Twice: existing objects are kept.
        _ = try DirectoryScanner.scan(dest.path, options: opts)
        let want = try String(contentsOf: try Shared.dir("trees").appendingPathComponent("tree1.objects"), encoding: .utf8)
            .split(separator: "\n").map { String($0.dropFirst(2)) }.sorted()
        var got: [String] = []
        let e = FileManager.default.enumerator(atPath: store.path)!
        while let p = e.nextObject() as? String {
            var isDir: ObjCBool = false
            FileManager.default.fileExists(atPath: store.appendingPathComponent(p).path, isDirectory: &isDir)
            if !isDir.boolValue { got.append(p) }
        }
        XCTAssertEqual(got.sorted(), want)
        for p in got {
            let digest = try fsVerityDigest(ofFile: store.appendingPathComponent(p).path)
            XCTAssertEqual(String(decoding: objectPath(forDigest: digest), as: UTF8.self), p)
        }
    }

    func testScanOptions() throws {
        let tmp = try tempDir()
        defer { try? FileManager.default.removeItem(at: tmp) }
        let d = tmp.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        try Data("hello".utf8).write(to: d.appendingPathComponent("a"))
        try Data([UInt8](repeating: 7, count: 5000)).write(to: d.appendingPathComponent("big"))
        _ = try? runTool(["/usr/bin/setfattr", "-n", "user.x", "-v", "1", d.appendingPathComponent("a").path])
        let t = try DirectoryScanner.scan(d.path, options: DirectoryScanOptions(skipXattrs: true))
        let a = t.lookup(path: Array("/a".utf8))!
        XCTAssertEqual(t[a].xattrs, [])
        XCTAssertEqual(t[a].content, Array("hello".utf8))
        let b = t[t.lookup(path: Array("/big".utf8))!]
        XCTAssertNil(b.content)
        XCTAssertEqual(b.digest, fsVerityDigest([UInt8](repeating: 7, count: 5000)))
        XCTAssertEqual(b.payload, objectPath(forDigest: b.digest!))
    }

    /// fsck.erofs accepts the images we write.
    func testFsckErofs() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/fsck.erofs") else { throw XCTSkip("fsck.erofs (erofs-utils) not installed") }
        let dir = try Shared.dir("composefs")
        let tmp = try tempDir()
        defer { try? FileManager.default.removeItem(at: tmp) }
        var checked = 0
        for row in try Shared.manifest("composefs") + (try Shared.manifest("random")).map({ r -> Shared.ManifestRow in var r = r; r.vector = "../random/" + r.vector; return r }) {
            let tree = try DumpParser.parse(try Shared.readVector(dir.appendingPathComponent(row.vector)))
            let img = try ImageWriter.image(of: tree, options: Shared.options(row.args))
            let f = tmp.appendingPathComponent("img.cfs")
            try Data(img).write(to: f)
            let (rc, out) = try runTool(["/usr/bin/fsck.erofs", f.path])
            XCTAssertEqual(rc, 0, "\(row.vector): \(out)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0)
    }
}
