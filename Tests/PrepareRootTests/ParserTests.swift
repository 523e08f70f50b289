import Foundation
import PrepareRoot
import XCTest

/// The command line and configuration parsers, and replay of the fuzzer's
/// findings in Regressions/ (files starting with 'c' are command lines,
/// 'k' configurations; each must parse or be refused, never crash).
final class ParserTests: XCTestCase {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    func testKernelSplitting() throws {
        let c = try KernelCommandLine("  root=/dev/vda  \"quoted arg\" a=\"b c\" ro\n")
        XCTAssertEqual(c.arguments.map { String(decoding: $0.key, as: UTF8.self) }, ["root", "quoted arg", "a", "ro"])
        XCTAssertEqual(c.values("a"), [bytes("b c")])
        XCTAssertNil(c.arguments[3].value)
        XCTAssertEqual(try KernelCommandLine("").arguments.count, 0)
        XCTAssertEqual(try KernelCommandLine("x=").values("x"), [[]])
        XCTAssertThrowsError(try KernelCommandLine("a=\"b"))
        XCTAssertThrowsError(try KernelCommandLine("a\u{0}b"))
        XCTAssertThrowsError(try KernelCommandLine(bytes: [UInt8](repeating: 0x61, count: 70000)))
    }

    func testBootArguments() throws {
        let d = String(repeating: "ab", count: 32)
        let b = try BootArguments(commandLine: bytes("quiet ostree=/ostree/boot.1/os/abc/0 ostree=/ostree/boot.1/os/abc/0 composefs.digest=v1-sha256-12:\(d) ostree.prepare-root.composefs=Signed"))
        XCTAssertEqual(b.ostreePath, bytes("/ostree/boot.1/os/abc/0"))
        XCTAssertEqual(b.pinnedDigest, [UInt8](repeating: 0xab, count: 32))
        XCTAssertEqual(b.composefsMode, .signed)
        XCTAssertEqual(try BootArguments(commandLine: bytes("ostree=/x composefs=\(d.uppercased())")).pinnedDigest?.count, 32)
        for bad in ["", "ostree", "ostree=", "ostree=x", "ostree=/a ostree=/b", "ostree=/a composefs.digest=\(d)",
                    "ostree=/a composefs.digest=v1-sha256-12:\(d.dropLast())", "ostree=/a composefs=?\(d)",
                    "ostree=/a composefs=\(d) composefs.digest=v1-sha256-12:\(String(repeating: "0", count: 64))",
                    "ostree=/a ostree.prepare-root.composefs=sometimes", "ostree=/a ostree.prepare-root.composefs"] {
            XCTAssertThrowsError(try BootArguments(commandLine: bytes(bad)), bad)
        }
    }

    func testConfig() throws {
        let text = """
            # cairn
            [composefs]
            enabled = verity
            keypath=/etc/k\\s1
            unknown = whatever
            [etc]
            transient = true
            [root]
            transient=false
            [sysroot]
            readonly = 1
            [other]
            x = \\q is not checked? no: escapes are
            """
        XCTAssertThrowsError(try PrepareRootConfig(parsing: bytes(text), file: "f")) { e in
            XCTAssertEqual((e as? ConfigError)?.line, 13)
        }
        let c = try PrepareRootConfig(parsing: bytes(text.split(separator: "\n").dropLast().joined(separator: "\n")), file: "f")
        XCTAssertEqual(c.composefs, .verity)
        XCTAssertEqual(c.keyPath, "/etc/k 1")
        XCTAssertTrue(c.etcTransient)
        XCTAssertFalse(c.rootTransient)
        XCTAssertTrue(c.sysrootReadOnly)
        XCTAssertEqual(PrepareRootConfig().composefs, .maybe)
        XCTAssertEqual(PrepareRootConfig().keyPath, "/etc/ostree/initramfs-root-binding.key")
        let cases: [(String, Int?, String)] = [
            ("enabled = yes", 1, "key before the first [group]"),
            ("[composefs]\nenabled", 2, "not a group header"),
            ("[composefs\n", 1, "invalid group header"),
            ("[]\n", 1, "invalid group header"),
            ("[a]b]\n", 1, "invalid group name"),
            ("[composefs]\n=yes", 2, "empty key"),
            ("[composefs]\nenabled = maybe\nkeypath = relative", 3, "not an absolute path"),
            ("[etc]\ntransient = perhaps", 2, "not a boolean"),
            ("[etc]\ntransient = \\", 2, "backslash at end of line"),
            ("[etc]\n\u{1}x = 1", 2, "control character"),
        ]
        for (t, line, msg) in cases {
            XCTAssertThrowsError(try PrepareRootConfig(parsing: bytes(t), file: "/c.conf"), t) { e in
                let ce = e as? ConfigError
                XCTAssertEqual(ce?.line, line, t)
                XCTAssertTrue(ce?.description.contains(msg) ?? false, "\(t): \(String(describing: ce))")
                XCTAssertTrue(ce?.description.hasPrefix("/c.conf") ?? false)
            }
        }
        XCTAssertThrowsError(try PrepareRootConfig(parsing: [0x5b, 0x61, 0x5d, 0x0a, 0x62, 0x3d, 0xff], file: "f"))
        // Later duplicates win; locale keys are accepted and ignored.
        let d = try PrepareRootConfig(parsing: bytes("[composefs]\nenabled=no\nenabled[de]=ja\nenabled=signed\n"), file: "f")
        XCTAssertEqual(d.composefs, .signed)
    }

    func testRegressions() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for name in files.sorted() where !name.hasPrefix(".") {
            let data = [UInt8](try Data(contentsOf: folder.appendingPathComponent(name)))
            if name.hasPrefix("c") {
                _ = try? BootArguments(commandLine: data)
            } else {
                _ = try? PrepareRootConfig(parsing: data, file: name)
            }
        }
    }
}
