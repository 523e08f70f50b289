import XCTest
import Foundation
@testable import Composefs
import CairnSystem

final class FsVerityTests: XCTestCase {
    // Spec §2.3.
    func testVectors() {
        let cases: [([UInt8], String)] = [
            ([], "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"),
            (Array("hello".utf8), "555b589c26ee43b7a2510e6c67ced9fb3190b6da6e9e683984551f5d77a763de"),
            ((0..<5000).map { UInt8($0 % 256) }, "c618e9f29a00583f67043799d7ff594d53820a4ab41e5975e9de621ad9c3bf01"),
            ([UInt8](repeating: 0, count: 4096), "babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"),
            ([UInt8](repeating: 0x61, count: 4097), "18b155c0b6e054f3f7d22488ed15340e74dc161ce2d123e13eb685c3ce565f70"),
            ((0...1_048_576).map { UInt8((7 * $0 + 3) % 251) }, "cd49f9a2c99e88f473ff8ce13e5daca7b20d66238ff1576db762f06192448b6b"),
            ([UInt8](repeating: 0x78, count: 100), "dac5f3c6c05fd30c02ab06d9447b03e0a0e7cbf3353d05b86a67eee17fb1c818"),
            ([UInt8](repeating: 0x7a, count: 65), "5d365a8a2bf72da9078dba1a7f6ae4b6a7072ec891845e4817f0a66dc2961c09"),
        ]
        for (data, hex) in cases {
            XCTAssertEqual(hexString(fsVerityDigest(data)), hex, "size \(data.count)")
            // Streaming in odd pieces gives the same digest.
            let h = FsVerityHasher()
            var i = 0
            var step = 1
            while i < data.count { let j = min(data.count, i + step); h.update(Array(data[i..<j])); i = j; step = step * 3 + 1 }
            XCTAssertEqual(hexString(h.finalize()), hex, "streamed size \(data.count)")
        }
    }

    /// The empty file (composefs's own tool got it wrong before 1.0.9): one
    /// hash of the descriptor with a zero root, however it is reached.
    func testEmptyFile() throws {
        let expected = "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
        XCTAssertEqual(hexString(FsVerityHasher().finalize()), expected)
        let h = FsVerityHasher()
        h.update([])
        XCTAssertEqual(hexString(h.finalize()), expected)
        let path = NSTemporaryDirectory() + "cairn-empty-\(UUID().uuidString)"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data()))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(hexString(try fsVerityDigest(ofFile: path)), expected)
        XCTAssertEqual(hexString(try KernelVerity.digest(ofFile: Array(path.utf8))), expected)
    }

    func testXxh32() {
        XCTAssertEqual(xxh32([], seed: 0), 0x02CC5D05)
        XCTAssertEqual(xxh32(Array("abc".utf8), seed: 0), 0x32D153FF)
        XCTAssertEqual(xxh32(Array("Nobody inspects the spammish repetition".utf8), seed: 0), 0xE2293B2F)
        XCTAssertEqual(xxh32(Array("overlay.opaque".utf8), seed: 0x25BBE093), 0x4CE0A7F4)
    }

    /// `fsverity digest` agrees on random files of several sizes.
    func testAgainstFsverityTool() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/fsverity") else {
            throw XCTSkip("fsverity (Debian package fsverity) not installed")
        }
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SystemRandomNumberGenerator()
        // 128 × 128 blocks + 1: a tree of three levels above the data.
        for size in [0, 1, 4095, 4096, 4097, 8192, 128 * 4096, 128 * 4096 + 1, (1 << 20) + 3, 3 * (1 << 20) + 12345, 128 * 128 * 4096 + 1] {
            var words = (0..<(size + 7) / 8).map { _ in UInt64.random(in: .min ... .max, using: &rng) }
            let data = words.withUnsafeBytes { Array($0.prefix(size)) }
            words = []
            let f = dir.appendingPathComponent("f\(size)")
            try Data(data).write(to: f)
            let (rc, out) = try runTool(["/usr/bin/fsverity", "digest", "--hash-alg=sha256", "--block-size=4096", f.path])
            XCTAssertEqual(rc, 0, out)
            let theirs = out.split(separator: " ").first.map { String($0.dropFirst("sha256:".count)) }
            XCTAssertEqual(hexString(try fsVerityDigest(ofFile: f.path)), theirs, "size \(size)")
            XCTAssertEqual(hexString(fsVerityDigest(data)), theirs, "size \(size)")
            // The parallel digest (one large file on all cores), on 1 to 3 threads.
            for threads in 1...3 {
                let fd = try FileDescriptor.open(f.path, O_RDONLY)
                let d = try fd.closeAfter { try fsVerityDigest(ofFile: fd, size: size, threads: threads) }
                XCTAssertEqual(hexString(d), theirs, "size \(size), \(threads) threads")
            }
            XCTAssertEqual(hexString(try KernelVerity.digest(ofFile: Array(f.path.utf8))), theirs, "size \(size)")
        }
    }
}
