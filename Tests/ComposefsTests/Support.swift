import XCTest
import Foundation
import CCrypto
@testable import Composefs
import CairnSystem

/// Locations of the shared reference material (../shared from the package root).
enum Shared {
    static let packageRoot: URL = {
        // Tests/ComposefsTests/Support.swift → package root
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }()
    static let vectors = packageRoot.appendingPathComponent("../shared/vectors").standardized

    static func dir(_ sub: String) throws -> URL {
        let u = vectors.appendingPathComponent(sub)
        guard FileManager.default.fileExists(atPath: u.path) else {
            throw XCTSkip("shared vectors not found at \(u.path); skipping")
        }
        return u
    }

    struct ManifestRow {
        var vector: String
        var args: String
        var size: Int
        var sha256: String
        var fsverity: String
    }

    static func manifest(_ sub: String) throws -> [ManifestRow] {
        let text = try String(contentsOf: try dir(sub).appendingPathComponent("MANIFEST.tsv"), encoding: .utf8)
        return text.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 5, let size = Int(f[2]) else { return nil }
            return ManifestRow(vector: f[0], args: f[1], size: size, sha256: f[3], fsverity: f[4])
        }
    }

    /// Options for mkcomposefs arguments such as "--min-version=0 --max-version=0".
    static func options(_ args: String) -> ComposefsWriteOptions {
        var minV: UInt32?, maxV: UInt32?, epoch = false
        for a in args.split(separator: " ") {
            if a.hasPrefix("--min-version=") { minV = UInt32(a.dropFirst(14)) }
            if a.hasPrefix("--max-version=") { maxV = UInt32(a.dropFirst(14)) }
            if a == "--use-epoch" { epoch = true }
        }
        return .commandLine(minVersion: minV, maxVersion: maxV, useEpoch: epoch)
    }

    static func readVector(_ url: URL) throws -> [UInt8] {
        if url.pathExtension == "gz" {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/gzip")
            p.arguments = ["-dc", url.path]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return [UInt8](data)
        }
        return [UInt8](try Data(contentsOf: url))
    }
}

func sha256Hex(_ bytes: [UInt8]) -> String {
    var out = [UInt8](repeating: 0, count: 32)
    bytes.withUnsafeBufferPointer { b in _ = SHA256(b.baseAddress, b.count, &out) }
    return hexString(out)
}

func runTool(_ argv: [String], stdin: [UInt8]? = nil) throws -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

func tempDir() throws -> URL {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}
