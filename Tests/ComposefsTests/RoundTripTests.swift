import XCTest
import Foundation
@testable import Composefs
import CairnSystem

final class RoundTripTests: XCTestCase {
    /// dump → image → (reader) → dump → image gives identical bytes.
    func roundTrip(_ sub: String) throws {
        let dir = try Shared.dir(sub)
        var failures: [String] = []
        for row in try Shared.manifest(sub) {
            let opts = Shared.options(row.args)
            do {
                let tree = try DumpParser.parse(try Shared.readVector(dir.appendingPathComponent(row.vector)))
                let img1 = try ImageWriter.image(of: tree, options: opts)
                let info = try ImageReader.read(img1)
                let dump2 = DumpWriter.dump(info.tree)
                let img2 = try ImageWriter.image(of: try DumpParser.parse(dump2), options: opts)
                if img1 != img2 { failures.append("\(row.vector) [\(row.args)]: images differ") }
                // And the dump is stable once normalised.
                let dump3 = DumpWriter.dump(try ImageReader.read(img2).tree)
                if dump2 != dump3 { failures.append("\(row.vector) [\(row.args)]: dumps differ") }
            } catch {
                failures.append("\(row.vector) [\(row.args)]: \(error)")
            }
        }
        XCTAssertEqual(failures, [], failures.joined(separator: "\n"))
    }

    func testRoundTripComposefsVectors() throws { try roundTrip("composefs") }
    func testRoundTripRandomVectors() throws { try roundTrip("random") }

    /// The reference images in random/images read back to trees that write the same bytes.
    func testReadReferenceImages() throws {
        let dir = try Shared.dir("random/images")
        for f in try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() where f.hasSuffix(".cfs") {
            let img = [UInt8](try Data(contentsOf: dir.appendingPathComponent(f)))
            let info = try ImageReader.read(img)
            let again = try ImageWriter.image(of: try DumpParser.parse(DumpWriter.dump(info.tree)))
            XCTAssertEqual(again, img, f)
        }
    }

    /// tree1.dump (printed by composefs-info from the default image) gives
    /// that image, and our dump of it is the same text.
    func testTree1Dump() throws {
        let dir = try Shared.dir("trees")
        let text = try Shared.readVector(dir.appendingPathComponent("tree1.dump"))
        let expected = try String(contentsOf: dir.appendingPathComponent("tree1.expected"), encoding: .utf8)
        let row = expected.split(separator: "\n").first { $0.hasPrefix("(default)") }!.split(separator: " ", omittingEmptySubsequences: true)
        let img = try ImageWriter.image(of: try DumpParser.parse(text))
        XCTAssertEqual(sha256Hex(img), String(row[2]))
        XCTAssertEqual(hexString(fsVerityDigest(img)), String(row[3]))
        let ours = DumpWriter.dumpString(try ImageReader.read(img).tree)
        XCTAssertEqual(ours, String(decoding: text, as: UTF8.self))
    }
}
