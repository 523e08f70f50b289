import CairnTestSupport
import Foundation
import XCTest
@testable import Trust

final class GVariantTests: XCTestCase {
    func testTypeStrings() throws {
        let c = try GVariantType("(a{sv}aya(say)sstayay)")
        XCTAssertEqual(c, Commit.type)
        XCTAssertEqual(c.alignment, 8)
        XCTAssertNil(c.fixedSize)
        XCTAssertEqual(try GVariantType("(yu)").fixedSize, 8)
        XCTAssertEqual(try GVariantType("(uy)").fixedSize, 8)
        XCTAssertEqual(try GVariantType("()").fixedSize, 1)
        XCTAssertEqual(try GVariantType("{ty}").fixedSize, 16)
        for bad in ["", "a", "(", "{vs}", "{ss", "r", "*", "?", "ss", "a{s}", "(y", "z"] {
            XCTAssertThrowsError(try GVariantType(bad), bad)
        }
        XCTAssertThrowsError(try GVariantType(String(repeating: "a", count: 200) + "y"))
    }

    func testKnownSerializations() throws {
        XCTAssertEqual(try GVariant(string: "hello").serialized, Array("hello\0".utf8))
        XCTAssertEqual(GVariant(byteArrays: [[1, 2], [3]]).serialized, [1, 2, 3, 2, 3])
        XCTAssertEqual(GVariant(byteArrays: []).serialized, [])
        XCTAssertEqual(GVariant(variant: GVariant(uint32: 7)).serialized, [7, 0, 0, 0, 0, 0x75])
        // Spec examples: ("foo", -1) as (si) and [["hi", "bye"]]-like arrays of strings.
        let si = GVariant(tuple: [try GVariant(string: "foo"), GVariant(int32: -1)])
        XCTAssertEqual(si.serialized, [0x66, 0x6f, 0x6f, 0, 0xff, 0xff, 0xff, 0xff, 4])
        let as_ = try GVariant(arrayOf: .string, [try GVariant(string: "i"), try GVariant(string: "can"), try GVariant(string: "has"), try GVariant(string: "strings?")])
        XCTAssertEqual(as_.serialized, Array("i\0can\0has\0strings?\0".utf8) + [2, 6, 10, 19])
        // Reading back.
        let back = try GVariant(typeString: "as", data: as_.serialized)
        XCTAssertEqual(back.children.compactMap(\.stringValue), ["i", "can", "has", "strings?"])
        let siBack = try GVariant(typeString: "(si)", data: si.serialized)
        XCTAssertEqual(siBack.child(0)?.stringValue, "foo")
        XCTAssertEqual(siBack.child(1)?.int32Value, -1)
        XCTAssertNil(siBack.child(2))
    }

    func testDictionaryRoundTripAndLookup() throws {
        var d = VariantDictionary()
        d.set("version", try GVariant(string: "1.0"))
        d.set("digest", GVariant(bytes: Array(0..<32)))
        d.set("sigs", GVariant(byteArrays: [[1, 2, 3], []]))
        d.set("when", GVariant(uint64: 1234))
        d.set("flag", GVariant(boolean: true))
        let bytes = d.serialized()
        let again = try VariantDictionary(serialized: bytes)
        XCTAssertEqual(again.keys, ["version", "digest", "sigs", "when", "flag"])
        XCTAssertEqual(again.string("version"), "1.0")
        XCTAssertEqual(again.bytes("digest"), Array(0..<32))
        XCTAssertEqual(again["sigs"]?.children.compactMap(\.byteArrayValue), [[1, 2, 3], []])
        XCTAssertEqual(again["when"]?.uint64Value, 1234)
        XCTAssertEqual(again["flag"]?.boolValue, true)
        XCTAssertNil(again["missing"])
        XCTAssertNil(again.bytes("version"))
        XCTAssertEqual(again.serialized(), bytes)
        let v = try GVariant(type: .vardict, data: bytes)
        XCTAssertEqual(v.lookup("version")?.stringValue, "1.0")
        XCTAssertNil(v.lookup("nope"))
    }

    /// Hand-made hostile inputs: each refused with an error naming where.
    func testHostileInputs() throws {
        func refuse(_ type: String, _ bytes: [UInt8], _ expect: String, file: StaticString = #filePath, line: UInt = #line) {
            do {
                _ = try GVariant(typeString: type, data: bytes)
                XCTFail("accepted \(bytes) as \(type)", file: file, line: line)
            } catch {
                if !expect.isEmpty { XCTAssertTrue(error.description.contains(expect), "\(error) lacks \(expect)", file: file, line: line) }
            }
        }
        refuse("s", [], "empty")
        refuse("s", [0x61], "zero-terminated")
        refuse("s", [0x61, 0, 0x62, 0], "zero byte")
        refuse("s", [0xff, 0], "UTF-8")
        refuse("b", [2], "not 0 or 1")
        refuse("u", [1, 2, 3], "4 bytes")
        refuse("as", [0x61, 0, 9], "beyond the array")     // offset beyond
        refuse("as", [0x61, 0, 0], "out of order")                      // end before start... element 0 "a\0" ends at 0 -> string empty
        refuse("as", [0x61, 0x62], "beyond the array")                     // last offset 0x62 > size
        refuse("aay", [1, 2, 1, 2, 0, 0], "")                             // framing nonsense
        refuse("(sy)", [0x61, 0, 7, 9], "")                               // tuple offset out of bounds
        refuse("(uy)", [1, 0, 0, 0, 2, 1, 0, 0], "non-zero trailing padding")
        refuse("(yu)", [1, 5, 0, 0, 2, 0, 0, 0], "non-zero alignment padding")
        refuse("v", [1, 0, 0, 0, 0], "type string")
        refuse("v", [1, 2, 3], "no type string separator")
        refuse("v", [1, 0, 0x75], "fixed-size type u")
        refuse("v", [0, 0x7a], "variant type string")
        refuse("a{sv}", [0x61, 0, 0, 0x75, 0], "")
        refuse("mu", [1, 2], "maybe")
        refuse("ms", [0x61], "trailing zero byte")
        refuse("o", Array("/a//b\0".utf8), "object path")
        refuse("g", Array("a\0".utf8), "signature")
        refuse("()", [1], "unit")
        // GLib's g_variant_is_normal_form accepts 0 bytes here, yet its serializer
        // (g_variant_get_normal_form) writes [0]: we accept only the latter, so
        // that the normal form stays unique.
        refuse("(ayay)", [], "framing offset")
        XCTAssertNoThrow(try GVariant(typeString: "(ayay)", data: [0]))
        // Variants nested past the depth limit.
        var deep: [UInt8] = [1]
        var t = "y"
        for _ in 0..<200 {
            deep = deep + [0] + Array(t.utf8)
            t = "v"
        }
        refuse("v", deep, "deeper")
        XCTAssertNoThrow(try GVariant(typeString: "ay", data: []))
        XCTAssertNoThrow(try GVariant(typeString: "o", data: Array("/a/b_1\0".utf8)))
        XCTAssertNoThrow(try GVariant(typeString: "g", data: Array("a{sv}(ii)\0".utf8)))
    }

    /// Values we build are in normal form by GLib's own judgement, and GLib's
    /// normal form of them is byte-identical.
    func testWriterMatchesGLib() throws {
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var samples: [(String, [UInt8])] = []
        var d = VariantDictionary()
        for i in 0..<40 {
            d.set("key\(i)", i % 3 == 0 ? GVariant(bytes: Array(repeating: UInt8(i), count: i * 13))
                  : i % 3 == 1 ? GVariant(byteArrays: (0..<i).map { Array(repeating: UInt8($0), count: 64) })
                  : try GVariant(string: String(repeating: "x", count: i * 50)))
            samples.append(("a{sv}", d.serialized()))
        }
        samples.append(("(a{sv}aya(say)sstayay)", GVariant(tuple: [d.variant(), GVariant(bytes: Array(0..<32)),
            try GVariant(arrayOf: .tuple([.string, .byteArray]), [GVariant(tuple: [try GVariant(string: "r"), GVariant(bytes: [9])])]),
            try GVariant(string: "subject"), try GVariant(string: ""), GVariant(uint64: 99), GVariant(bytes: Array(0..<32)), GVariant(bytes: Array(0..<32))]).serialized))
        // Containers just under and over the 1-, 2- and 4-byte framing boundaries.
        for n in [240, 250, 253, 254, 255, 256, 65_500, 65_530, 65_536, 70_000] {
            var big = VariantDictionary()
            big.set("a", GVariant(bytes: Array(repeating: 7, count: n)))
            big.set("b", GVariant(byteArrays: [[1], Array(repeating: 2, count: n / 2)]))
            samples.append(("a{sv}", big.serialized()))
            samples.append(("(ayay)", GVariant(tuple: [GVariant(bytes: Array(repeating: 1, count: n)), GVariant(bytes: [1])]).serialized))
            samples.append(("aay", GVariant(byteArrays: [Array(repeating: 1, count: n - 3), [], [2]]).serialized))
        }
        samples.append(("(yu)", GVariant(tuple: [GVariant(byte: 1), GVariant(uint32: 2)]).serialized))
        samples.append(("(uy)", GVariant(tuple: [GVariant(uint32: 2), GVariant(byte: 1)]).serialized))
        samples.append(("mv", try GVariant(maybe: .variant, GVariant(variant: GVariant(boolean: true))).serialized))
        samples.append(("a(tsy)", try GVariant(arrayOf: .tuple([.uint64, .string, .byte]), (0..<300).map { GVariant(tuple: [GVariant(uint64: UInt64($0)), try! GVariant(string: "s\($0)"), GVariant(byte: 1)]) }).serialized))
        for (i, (type, bytes)) in samples.enumerated() {
            try writeBytes(bytes, "\(dir)/\(i)")
            let normal = try runTool([helper, "normal", type, "\(dir)/\(i)"])
            XCTAssertEqual(normal.out, "1\n", "GLib says sample \(i) (\(type), \(bytes.count) bytes) is not normal")
            let n = try runTool([helper, "normalize", type, "\(dir)/\(i)", "\(dir)/\(i).n"])
            XCTAssertEqual(n.status, 0, n.err)
            XCTAssertEqual(try readBytes("\(dir)/\(i).n"), bytes, "GLib's normal form of sample \(i) differs")
            XCTAssertNoThrow(try GVariant(typeString: type, data: bytes))
        }
    }

    /// Thousands of mutations of real ostree objects: we accept exactly those
    /// GLib's g_variant_is_normal_form accepts.
    func testNormalFormAgreesWithGLib() throws {
        let helper = try GLibHelper.path()
        let fx = try OstreeFixture()
        defer { fx.cleanup() }
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = SystemRandomNumberGenerator()
        let inputs: [(String, [UInt8])] = [
            ("(a{sv}aya(say)sstayay)", try fx.commitBytes(fx.first)),
            ("(a{sv}aya(say)sstayay)", try fx.commitBytes(fx.second)),
            ("a{sv}", try fx.detachedBytes(fx.first)),
        ]
        var disagreements: [String] = []
        for (type, original) in inputs {
            var files: [String] = []
            var mutants: [[UInt8]] = []
            for i in 0..<700 {
                var m = original
                switch i % 5 {
                case 0: let p = Int.random(in: 0..<m.count, using: &rng); m[p] ^= UInt8.random(in: 1...255, using: &rng)
                case 1: m[Int.random(in: 0..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                        m[Int.random(in: 0..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 2: m = Array(m.prefix(Int.random(in: 0..<m.count, using: &rng)))
                case 3: m.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...m.count, using: &rng))
                default: let p = m.count - 1 - Int.random(in: 0..<min(12, m.count), using: &rng); m[p] = UInt8.random(in: 0...255, using: &rng)
                }
                let f = "\(dir)/m\(files.count)-\(type.count)"
                try writeBytes(m, f)
                files.append(f)
                mutants.append(m)
            }
            let r = try runTool([helper, "normal", type] + files)
            let verdicts = Array(r.out.trimmingCharacters(in: .whitespacesAndNewlines))
            XCTAssertEqual(verdicts.count, mutants.count)
            for (m, v) in zip(mutants, verdicts) {
                let ours = (try? GVariant(typeString: type, data: m)) != nil
                if ours != (v == "1") { disagreements.append("\(type) \(hex(m)): GLib \(v), ours \(ours)") }
            }
            XCTAssertEqual(verdicts.filter { $0 == "1" }.count > 0, true)
        }
        XCTAssertEqual(disagreements, [], disagreements.prefix(5).joined(separator: "\n"))
    }

    /// Adding a signature gives libostree's bytes (GVariantDict hash order).
    func testSignatureAppendMatchesLibostree() throws {
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let sig = (0..<64).map { UInt8($0) }
        try writeBytes(sig, dir + "/sig")
        var cases: [VariantDictionary?] = [nil, VariantDictionary()]
        var d = VariantDictionary()
        let names = ["ostree.gpgsigs", "k", "zz", "version", "a", "xa.data", "ostree.ref-binding", "é-ü", "\u{7f}x", "ostree.commit.timestamp"]
        for i in 0..<60 {
            d.set(i < names.count ? names[i] : "key-\(i * 7919)", try GVariant(string: "v\(i)"))
            cases.append(d)
        }
        var withSigs = VariantDictionary()
        withSigs.set("first", try GVariant(string: "1"))
        withSigs.set(ed25519SignatureKey, GVariant(byteArrays: [Array(repeating: 1, count: 64)]))
        withSigs.set("last", try GVariant(string: "2"))
        cases.append(withSigs)
        var wrongType = VariantDictionary()
        wrongType.set(ed25519SignatureKey, try GVariant(string: "not aay"))
        wrongType.set("x", GVariant(boolean: false))
        cases.append(wrongType)
        for (i, c) in cases.enumerated() {
            var input = "-"
            if let c {
                input = "\(dir)/in\(i)"
                try writeBytes(c.serialized(), input)
            }
            let r = try runTool([helper, "append", input, dir + "/sig", "\(dir)/out\(i)"])
            XCTAssertEqual(r.status, 0, r.err)
            let glib = try readBytes("\(dir)/out\(i)")
            let ours = (c ?? VariantDictionary()).appendingSignature(sig).serialized()
            XCTAssertEqual(ours, glib, "case \(i) keys \(c?.keys ?? [])")
            // And appending twice keeps both signatures.
            let twice = try VariantDictionary(serialized: ours).appendingSignature(sig)
            XCTAssertEqual(twice[ed25519SignatureKey]?.childCount, (c?[ed25519SignatureKey]?.type == .byteArrayArray ? 1 : 0) + 2)
        }
    }
}


/// Compares our normal-form verdict with GLib's on every GVariant input of
/// a libFuzzer corpus: the fuzz regressions kept in the repository, or the
/// folder TRUST_DIFF_CORPUS names (a corpus grown by Tests/Fuzz/trust/run.sh).
final class CorpusDifferentialTests: XCTestCase {
    func testCorpusAgreesWithGLib() throws {
        let corpus = ProcessInfo.processInfo.environment["TRUST_DIFF_CORPUS"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions").path
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var byType: [String: [(String, [UInt8])]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: corpus) {
            let input = try readBytes(corpus + "/" + name)
            guard let sel = input.first else { continue }
            let payload = Array(input.dropFirst())
            switch sel {
            case 0: byType[Commit.type.typeString, default: []].append((name, payload))
            case 1, 5: byType["a{sv}", default: []].append((name, payload))
            case 4:
                guard let nul = payload.firstIndex(of: 0), let t = try? GVariantType(String(decoding: payload[..<nul], as: UTF8.self)) else { continue }
                byType[t.typeString, default: []].append((name, Array(payload[(nul + 1)...])))
            default: continue
            }
        }
        var disagreements: [String] = []
        var checked = 0
        for (type, items) in byType {
            var files: [String] = []
            for (i, item) in items.enumerated() {
                let f = "\(dir)/\(files.count)-\(i)"
                try writeBytes(item.1, f)
                files.append(f)
            }
            for chunk in stride(from: 0, to: files.count, by: 500) {
                let part = Array(files[chunk..<min(chunk + 500, files.count)])
                let verdicts = Array(try runTool([helper, "normal", type] + part).out.trimmingCharacters(in: .whitespacesAndNewlines))
                for (k, v) in verdicts.enumerated() {
                    let (name, bytes) = items[chunk + k]
                    let ours = (try? GVariant(typeString: type, data: bytes)) != nil
                    checked += 1
                    if ours != (v == "1") { disagreements.append("\(name) \(type) GLib=\(v) ours=\(ours) \(hex(Array(bytes.prefix(64))))") }
                }
            }
        }
        print("compared \(checked) corpus inputs with GLib")
        XCTAssertGreaterThan(checked, 0, "no GVariant inputs in \(corpus)")
        XCTAssertEqual(disagreements, [], disagreements.prefix(10).joined(separator: "\n"))
    }
}
