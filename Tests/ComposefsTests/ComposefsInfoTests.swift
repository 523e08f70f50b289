import XCTest
import Foundation
@testable import Composefs

/// `ImageReader.composefsInfoTree` + `DumpWriter.composefsInfoDump`/`Listing`
/// against text printed by composefs-info 1.0.8 (built from source), and the
/// strict dump parsing of mkcomposefs (`CFS_PARSE_STRICT`).
final class ComposefsInfoTests: XCTestCase {
    func image(_ dump: String, _ options: ComposefsWriteOptions = .init()) throws -> [UInt8] {
        try ImageWriter.image(of: try DumpParser.parse(Array(dump.utf8)), options: options)
    }

    func infoDump(_ img: [UInt8], topLevel: Set<[UInt8]>? = nil) throws -> String {
        String(decoding: DumpWriter.composefsInfoDump(try ImageReader.composefsInfoTree(img, topLevel: topLevel)), as: UTF8.self)
    }

    static let root = "/ 4096 40755 2 0 0 0 0.0 - - -\n"

    /// Hardlinks print their target's fields and xattrs; xattrs in the image's
    /// order; the root of a tree with a whiteout keeps both opaque markers;
    /// '=' escaped in values; the redirect read two bytes past a 4-aligned
    /// value (here the next entry's header, \x01\x01), as libcomposefs does.
    static let mixed = """
        / 4096 40755 2 0 0 0 0.0 - - - user.z=1 security.a=2
        /a\\x20b 0 40755 2 0 0 0 0.0 - - -
        /a\\x20b/f 100 100644 2 0 0 0 0.0 ab/cdef - 35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 user.b=x=y user.a=1
        /l 3 120777 1 0 0 0 0.0 x\\ty - -
        /h 0 @100644 0 0 0 0 0.0 /a\\x20b/f - -
        /i 5 100644 1 0 0 0 0.0 - hello -
        /w 0 20644 1 0 0 0 0.0 - - -

        """

    func testDumpAsComposefsInfoPrintsIt() throws {
        let img = try image(Self.mixed)
        XCTAssertEqual(try infoDump(img), """
            / 4096 40755 3 0 0 0 0.0 - - - security.a=2 trusted.overlay.opaque=x user.overlay.opaque=x user.z=1
            /a\\x20b 40 40755 2 0 0 0 0.0 - - -
            /a\\x20b/f 100 100644 2 0 0 0 0.0 ab/cdef\\x01\\x01 - 35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 user.a=1 user.b=x\\x3dy
            /h 100 @100644 2 0 0 0 0.0 /a\\x20b/f - 35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 user.a=1 user.b=x\\x3dy
            /i 5 100644 1 0 0 0 0.0 - hello -
            /l 3 120777 1 0 0 0 0.0 x\\ty - -
            /w 0 20644 1 0 0 0 0.0 - - -

            """)
        let ls = String(decoding: DumpWriter.composefsInfoListing(try ImageReader.composefsInfoTree(img)), as: UTF8.self)
        XCTAssertEqual(ls, "/a b/\t\n/a b/f\t@ ab/cdef\\x01\\x01\n/h\n/i\n/l\t-> x\\ty\n/w\n")
        // --filter: only the named top-level entries; /h then owns the inode.
        XCTAssertEqual(try infoDump(img, topLevel: [Array("h".utf8)]), """
            / 4096 40755 3 0 0 0 0.0 - - - security.a=2 trusted.overlay.opaque=x user.overlay.opaque=x user.z=1
            /h 100 100644 2 0 0 0 0.0 ab/cdef\\x01\\x01 - 35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 user.a=1 user.b=x\\x3dy

            """)
    }

    /// Inline xattrs come before shared ones: user.a=s is shared by two files.
    func testXattrsInImageOrder() throws {
        let dump = Self.root + "/a 1 100644 1 0 0 0 0.0 - x - user.b=one user.a=s\n/b 1 100644 1 0 0 0 0.0 - y - user.c=two user.a=s\n"
        XCTAssertEqual(try infoDump(try image(dump)), dump)
    }

    /// special.dump as v1: escaped overlay xattrs unescaped, the root's
    /// opaque markers, whiteouts back as 0:0 devices (composefs-info output).
    func testSpecialDumpLines() throws {
        let text = try Shared.readVector(try Shared.dir("composefs").appendingPathComponent("special.dump"))
        let out = try infoDump(try ImageWriter.image(of: try DumpParser.parse(text), options: .init(minVersion: 1, maxVersion: 1)))
        let lines = Set(out.split(separator: "\n").map(String.init))
        for l in ["/ 4096 40555 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 trusted.overlay.opaque=x user.foo2=bar-2 user.overlay.opaque=x",
                  "/chardev 0 20777 1 0 0 10769 1633950376.0 - - - trusted.foo=bar-2",
                  "/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - trusted.overlay.redirect=/foo\\n user.overlay.redirect=/foo\\n user.foo=bar-2",
                  "/whiteout 0 20777 1 0 0 0 1633950376.0 - - - trusted.foo=bar-2"] {
            XCTAssertTrue(lines.contains(l), l)
        }
    }

    /// A whiteout file that had content: size 0, its content printed as 0 bytes.
    /// A last inline xattr that is a bare prefix with an empty value is lost.
    func testLibcomposefsReadingQuirks() throws {
        let w = Self.root + "/w 3 100644 1 0 0 0 0.0 - abc - trusted.overlay.whiteout= user.x=1\n"
        XCTAssertEqual(try infoDump(try image(w)), Self.root + "/w 0 20644 1 0 0 0 0.0 -  - user.x=1\n")
        let bare = Self.root + "/f 1 100644 1 0 0 0 0.0 - x - trusted.x=x user.=\n"
        XCTAssertEqual(try infoDump(try image(bare)), Self.root + "/f 1 100644 1 0 0 0 0.0 - x - trusted.x=x\n")
    }

    /// tree1.dump is composefs-info's text of its image.
    func testTree1() throws {
        let text = try Shared.readVector(try Shared.dir("trees").appendingPathComponent("tree1.dump"))
        XCTAssertEqual(try infoDump(try ImageWriter.image(of: try DumpParser.parse(text))), String(decoding: text, as: UTF8.self))
    }

    /// As upstream's test-checksums.sh checks with composefs-info for its
    /// assets: the dump of each one's image, parsed strictly, gives the same
    /// image. (Not every image does: the reading quirks above lose bytes.)
    func testDumpRoundTripsStrictly() throws {
        var n = 0
        for row in try Shared.manifest("composefs") {
            let text = try Shared.readVector(try Shared.dir("composefs").appendingPathComponent(row.vector))
            let options = Shared.options(row.args)
            let img = try ImageWriter.image(of: try DumpParser.parse(text), options: options)
            let again = try ImageWriter.image(of: try DumpParser.parse(DumpWriter.composefsInfoDump(try ImageReader.composefsInfoTree(img)), strict: true), options: options)
            XCTAssertTrue(again == img, "\(row.vector) \(row.args)")
            n += 1
        }
        XCTAssertGreaterThan(n, 10)
    }

    // MARK: - CFS_PARSE_STRICT

    func strictError(_ dump: String) -> ComposefsError? {
        do { _ = try DumpParser.parse(Array(dump.utf8), strict: true); return nil } catch { return error as? ComposefsError }
    }

    /// Each rejection names the line and field; without strictness the same
    /// text gives the image mkcomposefs 1.0.8 writes from it (sha256).
    func testStrictRejections() throws {
        let cases: [(String, Int, String?, String, String)] = [
            (Self.root + "/f 0 100644 1 0 0 5 0.0 - - -\n", 2, "RDEV", "non-zero device number 5",
             "60bf5567c8744d87c0ab85705afee1d390560260a0b8e89d045e3f1e97835941"),
            (Self.root + "/l 9 120777 1 0 0 0 0.0 target - -\n", 2, "SIZE", "symlink size 9 does not match the length 6",
             "12e9a43ca3c04a3712acc739faee57a074925ff2e237abbc7d907d9701535538"),
            (Self.root + "/l 6 120777 1 0 0 0 0.0 target target -\n", 2, "CONTENT", "a symlink cannot have content",
             "12e9a43ca3c04a3712acc739faee57a074925ff2e237abbc7d907d9701535538"),
            (Self.root + "/f 0 100644 1 0 0 0 0.0 - - -", 2, nil, "missing newline",
             "60bf5567c8744d87c0ab85705afee1d390560260a0b8e89d045e3f1e97835941"),
            (Self.root + "/d 0 40755 2 0 0 4294967296 0.0 - - -\n", 2, "RDEV", "non-zero device number 4294967296", ""),
        ]
        for (dump, line, field, message, sha) in cases {
            let e = strictError(dump)
            XCTAssertEqual(e?.line, line, dump)
            XCTAssertEqual(e?.field, field, dump)
            XCTAssertTrue(e?.message.contains(message) ?? false, "\(e?.description ?? "accepted"): \(dump)")
            let lenient = try image(dump)
            if !sha.isEmpty { XCTAssertEqual(sha256Hex(lenient), sha, dump) }
        }
        // Accepted strictly: devices with numbers, a hardlink line's RDEV
        // (mkcomposefs reads only its path and target), matching symlinks.
        XCTAssertNil(strictError(Self.root + "/c 0 20644 1 0 0 9 0.0 - - -\n/b 0 60644 1 0 0 7 0.0 - - -\n/l 6 120777 1 0 0 0 0.0 target - -\n"))
        XCTAssertNil(strictError(Self.root + "/f 0 100644 1 0 0 0 0.0 - - -\n/h 0 @100644 1 0 0 7 0.0 /f - -\n"))
    }

    /// Upstream runs its assets strictly except these three, which strict
    /// mkcomposefs rejects.
    func testStrictVectors() throws {
        let dir = try Shared.dir("composefs")
        let lenientOnly: Set<String> = ["no-newline.dump", "longlink.dump", "honggfuzz-longlink-unterminated.dump"]
        for row in try Shared.manifest("composefs") {
            let text = try Shared.readVector(dir.appendingPathComponent(row.vector))
            if lenientOnly.contains(row.vector) {
                XCTAssertThrowsError(try DumpParser.parse(text, strict: true), row.vector)
            } else {
                XCTAssertNoThrow(try DumpParser.parse(text, strict: true), row.vector)
            }
            XCTAssertNoThrow(try DumpParser.parse(text), row.vector)
        }
    }

    // MARK: - peers, when built (composefs is not packaged for Debian 12)

    func findTool(_ name: String) -> String? {
        for d in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(d)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    func run(_ tool: String, _ args: [String]) throws -> [UInt8] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "\(tool) \(args)")
        return [UInt8](data)
    }

    /// Every vector's image written by mkcomposefs: composefs-info's dump and
    /// ls equal ours byte for byte.
    func testAgainstComposefsInfo() throws {
        guard let info = findTool("composefs-info"), let mk = findTool("mkcomposefs") else {
            throw XCTSkip("composefs-info and mkcomposefs (composefs 1.0.8) not on PATH; skipping the peer comparison")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cairn-cfsinfo-\(getpid())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        var n = 0
        for sub in ["composefs", "random"] {
            for row in try Shared.manifest(sub) {
                let dump = tmp.appendingPathComponent("in.dump"), img = tmp.appendingPathComponent("out.cfs")
                try Data(try Shared.readVector(try Shared.dir(sub).appendingPathComponent(row.vector))).write(to: dump)
                _ = try run(mk, row.args.split(separator: " ").map(String.init).filter { $0 != "-" } + ["--from-file", dump.path, img.path])
                let bytes = [UInt8](try Data(contentsOf: img))
                let tree = try ImageReader.composefsInfoTree(bytes)
                XCTAssertTrue(DumpWriter.composefsInfoDump(tree) == (try run(info, ["dump", img.path])), "dump: \(sub)/\(row.vector) \(row.args)")
                XCTAssertTrue(DumpWriter.composefsInfoListing(tree) == (try run(info, ["ls", img.path])), "ls: \(sub)/\(row.vector) \(row.args)")
                n += 1
            }
        }
        XCTAssertGreaterThan(n, 100)
    }
}
