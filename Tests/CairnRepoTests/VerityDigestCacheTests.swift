import XCTest
import Foundation
@testable import CairnRepo
import Composefs
import CairnSystem

/// The fs-verity digest of an empty file (composefs fixed its own tool for
/// it after 1.0.8): computed for an empty file object and kept by the
/// repository's digest cache like any other.
final class VerityDigestCacheTests: XCTestCase {
    static let emptyDigest = "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "cairn-repo-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/tree/usr", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    func testEmptyFileObjectDigestIsComputedAndCached() throws {
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/tree/usr/empty", contents: Data()))
        let repo = try Repository.create(path: dir + "/repo", mode: .bare)
        var options = CommitOptions(branch: "os")
        options.timestamp = 1_700_000_000
        let commit = try repo.commit(source: dir + "/tree", options: options).checksum
        let usr = try XCTUnwrap(try repo.dirTree(try repo.commit(commit).rootTree).directories.first { $0.name == Array("usr".utf8) })
        let empty = try XCTUnwrap(try repo.dirTree(usr.treeChecksum).files.first { $0.name == Array("empty".utf8) }).checksum

        // Hashed from the object (not taken from the cache), then recorded.
        let computed = try repo.verityDigests(of: [empty], .recompute)
        XCTAssertEqual(computed[empty].map(hexString), Self.emptyDigest)
        XCTAssertEqual(try repo.verityDigests(of: [empty], .verifiedObjects)[empty].map(hexString), Self.emptyDigest)

        // A fresh reader of the cache file has it, and .cached returns it.
        let cache = VerityDigestCache(repositoryPath: repo.path)
        XCTAssertEqual(cache[empty].map(hexString), Self.emptyDigest)
        XCTAssertEqual(try repo.verityDigests(of: [empty], .cached)[empty].map(hexString), Self.emptyDigest)
    }

    func testCacheKeepsTheEmptyFileDigestAcrossReaders() throws {
        let repo = try Repository.create(path: dir + "/repo", mode: .bare)
        let key = String(repeating: "ab", count: 32)
        let digest = try XCTUnwrap(bytesFromHex(Self.emptyDigest))
        XCTAssertNil(VerityDigestCache(repositoryPath: repo.path).record([(key, digest)]))
        XCTAssertEqual(VerityDigestCache(repositoryPath: repo.path)[key], digest)
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: repo.path + "/cairn/verity-digests")[.size] as? Int)
        XCTAssertEqual(size, VerityDigestCache.recordSize)
    }
}
