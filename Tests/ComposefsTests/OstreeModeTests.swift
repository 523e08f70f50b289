import XCTest
@testable import Composefs
import CairnSystem

final class OstreeModeTests: XCTestCase {
    func testRules() throws {
        var tree = ComposefsTree(root: ComposefsNode(mode: 0o40755, mtimeSec: 5))
        let digest = fsVerityDigest(Array("moo\n".utf8))
        try tree.insert(path: "/baz", node: ComposefsNode(mode: 0o40755))
        try tree.insert(path: "/baz/cow", node: ComposefsNode(mode: 0o100644, size: 4, mtimeSec: 99,
            payload: OstreeMode.payload(forContentChecksum: "f6a517d53831a40cff3886a965c70d57aa50797a8e5ea965b2c49cc575a6ff51"),
            content: Array("moo\n".utf8), digest: digest))
        try tree.insert(path: "/empty", node: ComposefsNode(mode: 0o100644, payload: Array("aa/bb.file".utf8)))
        try tree.insert(path: "/usr", node: ComposefsNode(mode: 0o40700))
        try OstreeMode.apply(to: &tree)
        let cow = tree[tree.lookup(path: Array("/baz/cow".utf8))!]
        XCTAssertNil(cow.content)
        XCTAssertEqual(cow.mtimeSec, 0)
        XCTAssertEqual(String(decoding: cow.payload!, as: UTF8.self), "f6/a517d53831a40cff3886a965c70d57aa50797a8e5ea965b2c49cc575a6ff51.file")
        XCTAssertNil(tree[tree.lookup(path: Array("/empty".utf8))!].payload)
        for d in OstreeMode.topLevelDirectories { XCTAssertNotNil(tree.lookup(path: Array("/\(d)".utf8)), d) }
        XCTAssertEqual(tree[tree.lookup(path: Array("/usr".utf8))!].mode, 0o40700)   // existing dirs kept
        let img = try OstreeMode.image(of: tree)
        let back = try ImageReader.read(img).tree
        let line = DumpWriter.dumpString(back).split(separator: "\n").first { $0.hasPrefix("/baz/cow ") }
        XCTAssertEqual(line.map(String.init),
            "/baz/cow 4 100644 1 0 0 0 0.0 f6/a517d53831a40cff3886a965c70d57aa50797a8e5ea965b2c49cc575a6ff51.file - \(hexString(digest))")
    }
}
