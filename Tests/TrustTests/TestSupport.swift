import Foundation
import XCTest
import CairnTestSupport
@testable import Trust

/// Runs a program found on PATH, returning its exit status and output.
@discardableResult
func runTool(_ args: [String], input: Data? = nil, cwd: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let r = try TestSupport.run("/usr/bin/env", args, stdin: input, cwd: cwd)
    return (r.status, r.stdout, r.stderr)
}

/// Whether `tool` is on PATH.
func haveTool(_ tool: String) -> Bool {
    (try? runTool(["sh", "-c", "command -v \(tool)"]).status) == 0
}

func requireTool(_ tool: String) throws {
    try TestSupport.require(tool: tool)
}

func makeTempDir() throws -> String {
    let dir = NSTemporaryDirectory() + "trust-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeBytes(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func unhex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var chars = Array(s.utf8)[...]
    while chars.count >= 2 {
        out.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16)!)
        chars = chars.dropFirst(2)
    }
    return out
}

/// A throwaway ostree repository with two commits made by the ostree CLI.
struct OstreeFixture {
    let dir: String
    let repo: String
    let first: String    // checksum of the first commit (with metadata and detached metadata)
    let second: String   // its child

    static let digest: [UInt8] = Array(0..<32)

    init() throws {
        try requireTool("ostree")
        dir = try makeTempDir()
        repo = dir + "/R"
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try "hi\n".write(toFile: tree + "/a", atomically: false, encoding: .utf8)
        try "x\n".write(toFile: tree + "/sub/b", atomically: false, encoding: .utf8)
        var r = try runTool(["ostree", "init", "--repo=\(repo)", "--mode=bare-user"])
        XCTAssertEqual(r.status, 0, r.err)
        let digestText = "@ay [" + OstreeFixture.digest.map(String.init).joined(separator: ",") + "]"
        r = try runTool(["ostree", "commit", "--repo=\(repo)", "-b", "test", "-s", "first subject", "-m", "the body\nline2",
                     "--timestamp=2021-03-04 05:06:07 +0000",
                     "--add-metadata-string=version=1.0", "--add-metadata=foo=@ay [1,2]",
                     "--add-metadata=flag=true", "--add-metadata=num=uint64 1234567890123",
                     "--add-metadata=ostree.composefs.digest.v0=\(digestText)",
                     "--add-detached-metadata-string=k=v", "--add-detached-metadata-string=zz=yy", tree])
        XCTAssertEqual(r.status, 0, r.err)
        first = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        r = try runTool(["ostree", "commit", "--repo=\(repo)", "-b", "test", "-s", "second", tree])
        XCTAssertEqual(r.status, 0, r.err)
        second = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func objectPath(_ checksum: String, _ ext: String) -> String {
        let a = checksum.startIndex, b = checksum.index(a, offsetBy: 2)
        return "\(repo)/objects/\(checksum[a..<b])/\(checksum[b...]).\(ext)"
    }

    func commitBytes(_ checksum: String) throws -> [UInt8] { try readBytes(objectPath(checksum, "commit")) }
    func detachedBytes(_ checksum: String) throws -> [UInt8] { try readBytes(objectPath(checksum, "commitmeta")) }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}
