import Foundation
import XCTest
@testable import Trust

final class Ed25519Tests: XCTestCase {
    // RFC 8032 section 7.1, tests 1, 2 and 3.
    let vectors: [(seed: String, pub: String, msg: String, sig: String)] = [
        ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
         "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
        ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
         "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
         "72",
         "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
        ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
         "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ]

    func testRFC8032Vectors() throws {
        for v in vectors {
            let key = try Ed25519SecretKey(seed: unhex(v.seed))
            XCTAssertEqual(hex(key.publicKey.bytes), v.pub)
            let sig = try key.sign(unhex(v.msg))
            XCTAssertEqual(hex(sig), v.sig)
            XCTAssertTrue(key.publicKey.verify(signature: unhex(v.sig), message: unhex(v.msg)))
            XCTAssertFalse(key.publicKey.verify(signature: unhex(v.sig), message: unhex(v.msg) + [0]))
            // ostree's 64-byte secret key form round-trips.
            let again = try Ed25519SecretKey(ostreeBytes: key.ostreeBytes)
            XCTAssertEqual(again.seed, key.seed)
        }
    }

    func testRoundTripAndRejections() throws {
        let key = try Ed25519SecretKey.generate()
        let other = try Ed25519SecretKey.generate()
        XCTAssertNotEqual(key.seed, other.seed)
        let msg = Array("a commit".utf8)
        let sig = try key.sign(msg)
        XCTAssertEqual(sig.count, 64)
        XCTAssertTrue(key.publicKey.verify(signature: sig, message: msg))
        XCTAssertFalse(other.publicKey.verify(signature: sig, message: msg))
        var bad = sig; bad[10] ^= 1
        XCTAssertFalse(key.publicKey.verify(signature: bad, message: msg))
        XCTAssertFalse(key.publicKey.verify(signature: Array(sig.dropLast()), message: msg))
        XCTAssertFalse(key.publicKey.verify(signature: sig + [0], message: msg))
        XCTAssertFalse(key.publicKey.verify(signature: [UInt8](repeating: 0, count: 64), message: msg))
        // Empty message.
        let s0 = try key.sign([])
        XCTAssertTrue(key.publicKey.verify(signature: s0, message: []))
        // A mismatched public half is refused.
        var mixed = key.ostreeBytes
        mixed.replaceSubrange(32..<64, with: other.publicKey.bytes)
        XCTAssertThrowsError(try Ed25519SecretKey(ostreeBytes: mixed))
        XCTAssertThrowsError(try Ed25519SecretKey(ostreeBytes: Array(mixed.prefix(63))))
        XCTAssertThrowsError(try Ed25519SecretKey(seed: [1, 2, 3]))
        XCTAssertNil(Ed25519PublicKey(bytes: [UInt8](repeating: 1, count: 31)))
    }

    /// Our signatures verify with Python's `cryptography`, and its signatures with ours.
    func testInteropWithPythonCryptography() throws {
        try requireTool("python3")
        guard (try runTool(["python3", "-c", "import cryptography"])).status == 0 else {
            throw XCTSkip("python3 has no cryptography package")
        }
        let key = try Ed25519SecretKey.generate()
        var msg = [UInt8]()
        for i in 0..<1000 { msg.append(UInt8(truncatingIfNeeded: i &* 7 &+ 3)) }
        let sig = try key.sign(msg)
        let script = """
        import sys
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey, Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization
        pub, sig, msg, seed2 = [bytes.fromhex(x) for x in sys.argv[1:5]]
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)  # raises on failure
        try:
            Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg + b"x")
            print("tampered verified!"); sys.exit(3)
        except Exception:
            pass
        k = Ed25519PrivateKey.from_private_bytes(seed2)
        raw = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        print(raw.hex(), k.sign(msg).hex())
        """
        let seed2 = (0..<32).map { UInt8($0 * 3 + 1) }
        let r = try runTool(["python3", "-c", script, hex(key.publicKey.bytes), hex(sig), hex(msg), hex(seed2)])
        XCTAssertEqual(r.status, 0, "python refused our signature: \(r.err)\(r.out)")
        let parts = r.out.split(separator: " ").map { String($0).trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertEqual(parts.count, 2)
        guard parts.count == 2 else { return }
        let pyPub = Ed25519PublicKey(bytes: unhex(parts[0]))!
        XCTAssertEqual(pyPub, try Ed25519SecretKey(seed: seed2).publicKey)
        XCTAssertTrue(pyPub.verify(signature: unhex(parts[1]), message: msg))
        XCTAssertFalse(pyPub.verify(signature: unhex(parts[1]), message: msg + [1]))
    }

    func testBase64() {
        let cases: [(String, String)] = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, enc) in cases {
            XCTAssertEqual(Base64.encode(Array(plain.utf8)), enc)
            XCTAssertEqual(Base64.decode(enc), Array(plain.utf8))
        }
        let all = (0..<256).map { UInt8($0) }
        XCTAssertEqual(Base64.decode(Base64.encode(all)), all)
        XCTAssertEqual(Base64.encode(all), Data(all).base64EncodedString())
        XCTAssertEqual(Base64.decode("Zm8"), Array("fo".utf8))  // padding may be left out
        for bad in ["Z", "Zm9v=", "Zm===", "Zm9v!A==", "Zh==", "Zm9=", "Z m9v", "=Zm9"] {
            XCTAssertNil(Base64.decode(bad), bad)
        }
    }
}

final class KeyFileTests: XCTestCase {
    func testPublicKeysBlankLinesAndWhitespace() throws {
        let k1 = try Ed25519SecretKey.generate().publicKey
        let k2 = try Ed25519SecretKey.generate().publicKey
        let text = "\n  \(k1.base64)  \r\n\n\t\n\(k2.base64)"
        let keys = try KeyFile.parsePublicKeys(Array(text.utf8), path: "trusted.pub")
        XCTAssertEqual(keys, [k1, k2])
        XCTAssertEqual(try KeyFile.parsePublicKeys(Array(KeyFile.format([k1, k2]).utf8), path: "x"), [k1, k2])
    }

    func testMalformedLineNamesFileAndLine() throws {
        let k1 = try Ed25519SecretKey.generate().publicKey
        let text = "\(k1.base64)\n\nnot*base64\n"
        XCTAssertThrowsError(try KeyFile.parsePublicKeys(Array(text.utf8), path: "/etc/keys.pub")) { e in
            XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "/etc/keys.pub", line: 3, reason: .invalidBase64))
            XCTAssertTrue("\(e)".contains("/etc/keys.pub:3"), "\(e)")
        }
    }

    func testWrongLength() throws {
        let sk = try Ed25519SecretKey.generate()
        // A secret key in a public key file, and a public key in a secret key file.
        XCTAssertThrowsError(try KeyFile.parsePublicKeys(Array(sk.base64.utf8), path: "p")) { e in
            XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "p", line: 1, reason: .wrongLength(found: 64, expected: 32)))
        }
        XCTAssertThrowsError(try KeyFile.parseSecretKeys(Array("\n\(sk.publicKey.base64)\n".utf8), path: "s")) { e in
            XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "s", line: 2, reason: .wrongLength(found: 32, expected: 64)))
        }
        XCTAssertThrowsError(try KeyFile.parsePublicKeys(Array("AAAA".utf8), path: "p")) { e in
            XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "p", line: 1, reason: .wrongLength(found: 3, expected: 32)))
        }
    }

    func testEmptyFile() {
        for text in ["", "\n\n", "   \n\t\n"] {
            XCTAssertThrowsError(try KeyFile.parsePublicKeys(Array(text.utf8), path: "empty.pub")) { e in
                XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "empty.pub", reason: .noKeys))
            }
        }
        XCTAssertEqual(try KeyFile.parsePublicKeys([], path: "r", allowEmpty: true), [])
    }

    func testSecretKeys() throws {
        let a = try Ed25519SecretKey.generate(), b = try Ed25519SecretKey.generate()
        let keys = try KeyFile.parseSecretKeys(Array(KeyFile.format([a, b]).utf8), path: "s")
        XCTAssertEqual(keys.map(\.seed), [a.seed, b.seed])
        var mixed = a.ostreeBytes
        mixed.replaceSubrange(32..<64, with: b.publicKey.bytes)
        XCTAssertThrowsError(try KeyFile.parseSecretKeys(Array((a.base64 + "\n" + Base64.encode(mixed)).utf8), path: "s")) { e in
            XCTAssertEqual(e as? KeyFileError, KeyFileError(path: "s", line: 2, reason: .publicHalfMismatch))
        }
    }

    func testLoadFromFilesAndRevokedPolicy() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try Ed25519SecretKey.generate(), b = try Ed25519SecretKey.generate(), c = try Ed25519SecretKey.generate()
        try KeyFile.format([a.publicKey]).write(toFile: dir + "/one.pub", atomically: false, encoding: .utf8)
        try KeyFile.format([b.publicKey, c.publicKey]).write(toFile: dir + "/two.pub", atomically: false, encoding: .utf8)
        try KeyFile.format([b.publicKey]).write(toFile: dir + "/revoked.pub", atomically: false, encoding: .utf8)
        try "".write(toFile: dir + "/empty", atomically: false, encoding: .utf8)
        let policy = try TrustPolicy(trustedKeyFiles: [dir + "/one.pub", dir + "/two.pub"], revokedKeyFile: dir + "/revoked.pub")
        XCTAssertEqual(policy.effectiveKeys, [a.publicKey, c.publicKey])
        // An empty revoked-keys file is allowed; an empty trusted file is not.
        XCTAssertNoThrow(try TrustPolicy(trustedKeyFiles: [dir + "/one.pub"], revokedKeyFile: dir + "/empty"))
        XCTAssertThrowsError(try TrustPolicy(trustedKeyFiles: [dir + "/empty"])) { e in
            XCTAssertEqual((e as? KeyFileError)?.reason, .noKeys)
        }
        XCTAssertThrowsError(try TrustPolicy(trustedKeyFiles: [dir + "/missing"])) { e in
            guard case .unreadable(let se)? = (e as? KeyFileError)?.reason else { return XCTFail("\(e)") }
            XCTAssertEqual(se.errno, ENOENT)
        }
        let secret = try KeyFile.loadSecretKeys(path: { try! KeyFile.format([a]).write(toFile: dir + "/a.sec", atomically: false, encoding: .utf8); return dir + "/a.sec" }())
        XCTAssertEqual(secret.first?.publicKey, a.publicKey)
    }
}
