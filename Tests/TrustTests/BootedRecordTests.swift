import CairnTestSupport
import Foundation
import XCTest
@testable import Trust

/// /run/ostree-booted: our bytes against GLib's, in both directions.
final class BootedRecordTests: XCTestCase {
    let full = BootedRecord(backingRootDeviceInode: .init(device: 2049, inode: 131075), rootTransient: false, composefs: true, composefsVerity: true,
                            signingKeyPath: "/etc/ostree/initramfs-root-binding.key", sysrootReadOnly: true,
                            transientEtc: "/run/ostree/transient-etc")
    let fullText = "{'backing-root-device-inode': <(uint64 2049, uint64 131075)>, 'root.transient': <false>, "
        + "'composefs.signed': <'/etc/ostree/initramfs-root-binding.key'>, 'composefs': <true>, 'composefs.verity': <true>, "
        + "'sysroot-ro': <true>, 'transient-etc': <'/run/ostree/transient-etc'>}"

    func testRoundTrip() throws {
        let minimal = BootedRecord(backingRootDeviceInode: .init(device: UInt64.max, inode: 0))
        for r in [full, minimal, BootedRecord(backingRootDeviceInode: nil)] {
            XCTAssertEqual(try BootedRecord(serialized: try r.serialized()), r)
        }
        // The device and inode are the first entry's (tt), 8-aligned after the key.
        let bytes = try full.serialized()
        XCTAssertEqual(Array(bytes.prefix(26)), Array("backing-root-device-inode".utf8) + [0])
        XCTAssertEqual(Array(bytes[32..<48]), GVariant.le(2049, 8) + GVariant.le(131075, 8))
    }

    /// GLib prints our bytes as the record we meant, and calls them normal form;
    /// GLib's serialization of that text is byte for byte ours.
    func testAgreesWithGLib() throws {
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeBytes(try full.serialized(), dir + "/ours")
        let printed = try runTool([helper, "print", "a{sv}", dir + "/ours"])
        XCTAssertEqual(printed.status, 0, printed.err)
        XCTAssertEqual(printed.out, "normal\n" + fullText + "\n")
        let parsed = try runTool([helper, "parse", "a{sv}", fullText, dir + "/glib"])
        XCTAssertEqual(parsed.status, 0, parsed.err)
        XCTAssertEqual(try readBytes(dir + "/glib"), try full.serialized())
    }

    /// What upstream's ostree-prepare-root writes without composefs (no
    /// composefs keys) and what newer versions add (root.transient-ro, unknown
    /// here): read, the unknown key ignored.
    func testReadsUpstreamRecords() throws {
        let helper = try GLibHelper.path()
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let text = "{'backing-root-device-inode': <(uint64 64768, uint64 42)>, 'root.transient': <true>, "
            + "'root.transient-ro': <false>, 'sysroot-ro': <false>}"
        let r = try runTool([helper, "parse", "a{sv}", text, dir + "/upstream"])
        XCTAssertEqual(r.status, 0, r.err)
        let record = try BootedRecord(serialized: try readBytes(dir + "/upstream"))
        XCTAssertEqual(record, BootedRecord(backingRootDeviceInode: .init(device: 64768, inode: 42), rootTransient: true))
        // The empty file older ostree-prepare-root writes is an empty a{sv}: no device and inode.
        XCTAssertEqual(try BootedRecord(serialized: []), BootedRecord(backingRootDeviceInode: nil))
    }

    func testMalformedRecordsNameTheField() throws {
        func refuse(_ bytes: [UInt8], _ expect: String, file: StaticString = #filePath, line: UInt = #line) {
            do {
                let r = try BootedRecord(serialized: bytes)
                XCTFail("accepted \(r)", file: file, line: line)
            } catch {
                XCTAssertTrue(error.description.contains(expect), "\(error) lacks \(expect)", file: file, line: line)
            }
        }
        func dict(_ entries: [(String, GVariant)]) -> [UInt8] {
            VariantDictionary(entries: entries.map { VariantDictionary.Entry(key: $0.0, value: $0.1) }).serialized()
        }
        let devIno = GVariant(tuple: [GVariant(uint64: 1), GVariant(uint64: 2)])
        refuse(dict([("backing-root-device-inode", GVariant(tuple: [GVariant(uint32: 1), GVariant(uint32: 2)]))]),
               "ostree-booted['backing-root-device-inode']: has type (uu), not (tt)")
        refuse(dict([("backing-root-device-inode", devIno), ("composefs", try GVariant(string: "yes"))]),
               "ostree-booted['composefs']: has type s, not b")
        refuse(dict([("backing-root-device-inode", devIno), ("composefs.signed", GVariant(boolean: true))]),
               "ostree-booted['composefs.signed']: has type b, not s")
        refuse(dict([("backing-root-device-inode", devIno), ("transient-etc", GVariant(bytes: [1]))]),
               "ostree-booted['transient-etc']: has type ay, not s")
        refuse(dict([("backing-root-device-inode", devIno), ("sysroot-ro", GVariant(byte: 1))]),
               "ostree-booted['sysroot-ro']: has type y, not b")
        // Not an a{sv} in normal form at all.
        refuse([0x41, 0x42, 0x43], "ostree-booted")
        var bad = try full.serialized()
        bad[bad.count - 1] ^= 0xff  // a framing offset
        refuse(bad, "ostree-booted")
    }

    func testZeroByteInAStringIsRefused() throws {
        var r = full
        r.signingKeyPath = "/etc/key\u{0}x"
        XCTAssertThrowsError(try r.serialized()) { XCTAssertTrue("\($0)".contains("ostree-booted['composefs.signed']"), "\($0)") }
    }
}
