import XCTest
import Foundation
@testable import Composefs
import CairnSystem

final class RobustnessTests: XCTestCase {
    func sampleImage() throws -> [UInt8] {
        let dir = try Shared.dir("composefs")
        let tree = try DumpParser.parse(try Shared.readVector(dir.appendingPathComponent("special.dump")))
        return try ImageWriter.image(of: tree)
    }

    /// Every truncation is rejected or read without crashing.
    func testTruncatedImages() throws {
        let img = try sampleImage()
        var rejected = 0
        for len in stride(from: 0, to: img.count, by: 97) {
            do { _ = try ImageReader.read(Array(img[0..<len])) } catch is ComposefsError { rejected += 1 }
        }
        XCTAssertGreaterThan(rejected, 0)
    }

    /// Flipped bytes in headers, inodes, xattrs and dirents never crash.
    func testFlippedBytes() throws {
        let img = try sampleImage()
        var positions = Array(0..<64) + Array(1024..<1152) + Array(stride(from: 1152, to: img.count, by: 89))
        positions = positions.filter { $0 < img.count }
        for p in positions {
            for mask: UInt8 in [0x01, 0xFF] {
                var m = img
                m[p] ^= mask
                if let info = try? ImageReader.read(m) {
                    // Whatever was read must dump and parse back.
                    _ = try? DumpParser.parse(DumpWriter.dump(info.tree))
                }
                if let tree = try? ImageReader.composefsInfoTree(m) {
                    _ = DumpWriter.composefsInfoDump(tree)
                    _ = DumpWriter.composefsInfoListing(tree)
                }
            }
        }
    }

    /// A directory entry pointing back at the root is a cycle, not a loop.
    func testDirectoryCycle() throws {
        var tree = ComposefsTree(root: ComposefsNode(mode: 0o40755))
        try tree.insert(path: "/sub", node: ComposefsNode(mode: 0o40755))
        var img = try ImageWriter.image(of: tree)
        // Point /sub's "." entry... simpler: make every dirent target the root nid (36).
        let info = try ImageReader.read(img)
        XCTAssertNotNil(info.tree.lookup(path: Array("/sub".utf8)))
        // Rewrite the nid of "sub" in the root's dirent block to the root's nid.
        let rootBlock = Int(img[0x490]) | Int(img[0x491]) << 8
        var o = rootBlock * 4096
        let count = (Int(img[o + 8]) | Int(img[o + 9]) << 8) / 12
        for _ in 0..<count { if img[o + 10] == 2 { img[o] = 36; img[o + 1] = 0 }; o += 12 }
        XCTAssertThrowsError(try ImageReader.read(img))
    }

    /// Inputs the fuzzer found: rejected with an error, never a crash.
    func testRegressions() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions")
        for f in (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] {
            let bytes = [UInt8](try Data(contentsOf: dir.appendingPathComponent(f)))
            if f.hasPrefix("image-") { _ = try? ImageReader.read(bytes) }
            if f.hasPrefix("dump-") {
                if let t = try? DumpParser.parse(bytes) { _ = try? ImageWriter.image(of: t) }
            }
        }
    }
}
