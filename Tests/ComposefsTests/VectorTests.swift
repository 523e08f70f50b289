import XCTest
import Foundation
@testable import Composefs
import CairnSystem

final class VectorTests: XCTestCase {
    func checkManifest(_ sub: String) throws {
        let dir = try Shared.dir(sub)
        var failures: [String] = []
        var cache: [String: ComposefsTree] = [:]
        for row in try Shared.manifest(sub) {
            let tree: ComposefsTree
            if let t = cache[row.vector] { tree = t } else {
                do {
                    tree = try DumpParser.parse(try Shared.readVector(dir.appendingPathComponent(row.vector)))
                } catch {
                    failures.append("\(row.vector): parse failed: \(error)"); continue
                }
                cache[row.vector] = tree
            }
            do {
                let img = try ImageWriter.image(of: tree, options: Shared.options(row.args))
                let sha = sha256Hex(img)
                let fv = hexString(fsVerityDigest(img))
                if img.count != row.size || sha != row.sha256 || fv != row.fsverity {
                    failures.append("\(row.vector) [\(row.args)]: size \(img.count) vs \(row.size), sha \(sha == row.sha256), verity \(fv == row.fsverity)")
                }
            } catch {
                failures.append("\(row.vector) [\(row.args)]: write failed: \(error)")
            }
        }
        XCTAssertEqual(failures, [], failures.joined(separator: "\n"))
    }

    func testComposefsVectors() throws { try checkManifest("composefs") }
    func testRandomVectors() throws { try checkManifest("random") }

    func testShouldFail() throws {
        let dir = try Shared.dir("composefs/should-fail")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".dump") }.sorted()
        XCTAssertFalse(files.isEmpty)
        for f in files {
            let bytes = try Shared.readVector(dir.appendingPathComponent(f))
            do {
                let tree = try DumpParser.parse(bytes)
                _ = try ImageWriter.image(of: tree)
                XCTFail("\(f) was accepted")
            } catch let e as ComposefsError {
                XCTAssertNotNil(e.line, "\(f): error without line: \(e)")
                XCTAssertTrue(e.description.contains("line "), "\(f): \(e)")
            }
        }
    }
}
