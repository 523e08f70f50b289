import COSTree
import CairnSysroot
import XCTest

/// cairn reads and writes key files (its state records, a repository's
/// config) without GLib; GLib's GKeyFile is what the files must agree with.
final class StateFileTests: XCTestCase {
    /// GLib's reading of `bytes`: every group's keys with the values g_key_file_get_string gives, or nil when it refuses the file.
    func glibRead(_ bytes: [UInt8]) -> [String: [String: String]]? {
        let file = g_key_file_new()
        defer { g_key_file_free(file) }
        let loaded = bytes.withUnsafeBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(b.count, 1)) { g_key_file_load_from_data(file, $0, gsize(b.count), G_KEY_FILE_NONE, nil) }
        }
        guard loaded != 0 else { return nil }
        var result: [String: [String: String]] = [:]
        var groupCount: gsize = 0
        guard let groups = g_key_file_get_groups(file, &groupCount) else { return result }
        defer { g_strfreev(groups) }
        for g in 0..<Int(groupCount) {
            let group = String(cString: groups[g]!)
            var keyCount: gsize = 0
            var entries: [String: String] = [:]
            if let keys = g_key_file_get_keys(file, group, &keyCount, nil) {
                defer { g_strfreev(keys) }
                for k in 0..<Int(keyCount) {
                    let key = String(cString: keys[k]!)
                    guard let v = g_key_file_get_string(file, group, key, nil) else { continue }
                    entries[key] = String(cString: v)
                    g_free(v)
                }
            }
            result[group] = entries
        }
        return result
    }

    func glibWrite(_ groups: [(String, [(String, String)])]) -> [UInt8] {
        let file = g_key_file_new()
        defer { g_key_file_free(file) }
        for (g, entries) in groups { for (k, v) in entries { g_key_file_set_string(file, g, k, v) } }
        var length: gsize = 0
        let text = g_key_file_to_data(file, &length, nil)!
        defer { g_free(text) }
        return Array(UnsafeRawBufferPointer(start: text, count: Int(length)))
    }

    func ours(_ f: StateFile) -> [String: [String: String]] {
        Dictionary(f.groups.map { g in (g.name, Dictionary(g.entries.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })) }, uniquingKeysWith: { $1 })
    }

    func testValuesRoundTripThroughGLibBothWays() throws {
        var rng = SystemRandomNumberGenerator()
        let pieces = [" ", "  ", "\t", "\n", "\r", "\\", "\\s", "=", "#", "[x]", "a", "é", "\u{1b}[31m", "\u{7f}", "; ", "text", "\u{2028}"]
        for round in 0..<300 {
            var groups: [(String, [(String, String)])] = []
            for g in 0..<Int.random(in: 1...3, using: &rng) {
                var entries: [(String, String)] = []
                for k in 0..<Int.random(in: 0...4, using: &rng) {
                    let value = (0..<Int.random(in: 0...8, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
                    entries.append(("key-\(k)", value))
                }
                groups.append(("group \(g)", entries))
            }
            var f = StateFile()
            for (g, entries) in groups { for (k, v) in entries { f[g, k] = v } }
            let expected = Dictionary(uniqueKeysWithValues: groups.map { ($0.0, Dictionary(uniqueKeysWithValues: $0.1)) })
            // What cairn writes, GLib reads back as it was; and the bytes are GLib's own.
            let written = f.serialized()
            XCTAssertEqual(glibRead(written).map { $0.filter { !$0.value.isEmpty } }, expected.filter { !$0.value.isEmpty }, "round \(round): \(String(decoding: written, as: UTF8.self))")
            XCTAssertEqual(written, glibWrite(groups), "round \(round)")
            // What GLib writes, cairn reads back as it was.
            let parsed = try StateFile(parsing: glibWrite(groups), path: "glib")
            XCTAssertEqual(ours(parsed).filter { !$0.value.isEmpty }, expected.filter { !$0.value.isEmpty }, "round \(round)")
        }
    }

    func testHandWrittenFilesReadAsGLibReadsThem() throws {
        let files = [
            "# comment\n\n[core]\nrepo_version=1\nmode=bare\n",
            "[a]\r\nkey = value with trailing blanks  \r\n",
            "  [a]\n  key\t=\t v\n[b]\nx=1\n[a]\nkey=later\ny=2\n",
            "[cairn]\ntrusted-ed25519-keys=AAAA;BBBB;\nbootloader=systemd-boot",
            "[g]\nk=\\s\\s two leading\\nnewline\\ttab\\\\slash\\r\n",
            "[g]\nk=a=b=c\n[h]\n",
            "[g]\nk=bad escape \\q stays\nj=ends in \\\nname[de]=a translation\n",
        ]
        for text in files {
            let bytes = Array(text.utf8)
            let glib = try XCTUnwrap(glibRead(bytes), text)
            XCTAssertEqual(ours(try StateFile(parsing: bytes, path: "f")), glib, text)
        }
    }

    func testFilesGLibRefusesAreRefusedNamingTheFileAndLine() {
        let files = ["key=before any group\n", "[g]\nnot a pair\n", "[g]x=1\n", "[g]\n k]=v\n", "[g\nk=v\n", "[g]\n=v\n"]
        for text in files {
            XCTAssertNil(glibRead(Array(text.utf8)), "GLib accepts \(text)")
            XCTAssertThrowsError(try StateFile(parsing: Array(text.utf8), path: "/x/record")) { e in
                XCTAssertTrue("\(e)".hasPrefix("reading /x/record: line "), "\(e)")
            }
        }
    }

    /// Bytes that are not text: each read as GLib reads it, or refused where GLib refuses.
    func testBytesThatAreNotTextReadAsGLibReadsThem() throws {
        let files: [[UInt8]] = [
            Array("[g]\nk=".utf8) + [0xff, 0x0a] + Array("j=fine\n".utf8),
            Array("# \u{1}".utf8) + [0xfe, 0x0a] + Array("[g]\nk=v\n".utf8),
            Array("[g]\nk=before".utf8) + [0] + Array("after\nj=v\n".utf8),
            Array("[g".utf8) + [0xc3] + Array("]\nk=v\n".utf8),
            Array("[g]\nk".utf8) + [0xc3] + Array("=v\n".utf8),
        ]
        for bytes in files {
            // Groups no value can be read from are left out on both sides.
            let ours = (try? StateFile(parsing: bytes, path: "f")).map(self.ours)?.filter { !$0.value.isEmpty }
            XCTAssertEqual(ours, glibRead(bytes)?.filter { !$0.value.isEmpty }, "\(bytes)")
        }
    }
}

/// Boot entries sit on the boot partition, outside any signed image: what
/// cairn writes must read back the same (found by Tests/Fuzz/sysroot).
final class BootEntryTests: XCTestCase {
    func testValuesStartingWithACombiningMarkAndCRLFLinesReadBack() throws {
        let entry = BootEntry(fields: [("title", "\u{35a}p] version"), ("options", "root=LABEL=r quiet"), ("version", "2")])
        let text = try entry.validatedText("test entry")
        XCTAssertEqual(try BootEntry(parsing: text, file: "e"), entry)
        let crlf = try BootEntry(parsing: "title  x \r\noptions a b\r\n", file: "e")
        XCTAssertEqual(crlf.fields.map(\.key), ["title", "options"])
        XCTAssertEqual(crlf["title"], "x")
        XCTAssertEqual(crlf.options, ["a", "b"])
    }
}
