import CCrypto

/// An error from libcrypto, with OpenSSL's error queue text.
public struct CryptoError: Error, CustomStringConvertible, Equatable, Sendable {
    public var operation: String
    public var detail: String
    public var description: String { detail.isEmpty ? "\(operation) failed" : "\(operation) failed: \(detail)" }

    /// Takes (and clears) OpenSSL's error queue of this thread.
    static func take(_ operation: String) -> CryptoError {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return CryptoError(operation: operation, detail: parts.joined(separator: "; "))
    }
}

/// An Ed25519 public key: 32 bytes.
public struct Ed25519PublicKey: Hashable, Sendable, CustomStringConvertible {
    public static let size = 32
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == Ed25519PublicKey.size else { return nil }
        self.bytes = bytes
    }

    /// The key as written in an ostree key file.
    public var base64: String { Base64.encode(bytes) }
    public var description: String { base64 }

    /// Whether `signature` is a valid pure-Ed25519 signature of `message` by this key.
    public func verify(signature: [UInt8], message: [UInt8]) -> Bool {
        guard signature.count == Ed25519.signatureSize else { return false }
        return message.withUnsafeBufferPointer { m in verify(signature: signature, message: UnsafeRawBufferPointer(m)) }
    }

    public func verify(signature: [UInt8], message: UnsafeRawBufferPointer) -> Bool {
        guard signature.count == Ed25519.signatureSize else { return false }
        guard let pkey = bytes.withUnsafeBufferPointer({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count) }) else {
            ERR_clear_error()
            return false
        }
        defer { EVP_PKEY_free(pkey) }
        guard let ctx = EVP_MD_CTX_new() else { ERR_clear_error(); return false }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestVerifyInit(ctx, nil, nil, nil, pkey) == 1 else { ERR_clear_error(); return false }
        let r = signature.withUnsafeBufferPointer { s in
            EVP_DigestVerify(ctx, s.baseAddress, s.count, message.bindMemory(to: UInt8.self).baseAddress ?? Ed25519.emptyByte, message.count)
        }
        if r != 1 { ERR_clear_error() }
        return r == 1
    }
}

/// An Ed25519 secret key, kept as its 32-byte seed with the derived public key.
public struct Ed25519SecretKey: Sendable {
    public let seed: [UInt8]
    public let publicKey: Ed25519PublicKey

    /// The key from a 32-byte seed (RFC 8032's "private key").
    public init(seed: [UInt8]) throws(CryptoError) {
        guard seed.count == 32 else { throw CryptoError(operation: "ed25519 key", detail: "seed is \(seed.count) bytes, not 32") }
        let pkey = try Ed25519.privateKey(seed)
        defer { EVP_PKEY_free(pkey) }
        var pub = [UInt8](repeating: 0, count: 32)
        var len = 32
        guard EVP_PKEY_get_raw_public_key(pkey, &pub, &len) == 1, len == 32 else { throw CryptoError.take("EVP_PKEY_get_raw_public_key") }
        self.seed = seed
        self.publicKey = Ed25519PublicKey(bytes: pub)!
    }

    /// The key from ostree's 64-byte form (seed followed by public key),
    /// refusing it when the public half does not belong to the seed.
    public init(ostreeBytes: [UInt8]) throws(CryptoError) {
        guard ostreeBytes.count == 64 else {
            throw CryptoError(operation: "ed25519 key", detail: "secret key is \(ostreeBytes.count) bytes, not 64")
        }
        try self.init(seed: Array(ostreeBytes[0..<32]))
        guard publicKey.bytes == Array(ostreeBytes[32..<64]) else {
            throw CryptoError(operation: "ed25519 key", detail: "public half does not match the seed")
        }
    }

    /// A new random key (EVP_PKEY_keygen, seeded by OpenSSL's CSPRNG).
    public static func generate() throws(CryptoError) -> Ed25519SecretKey {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else { throw CryptoError.take("EVP_PKEY_CTX_new_id") }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1 else { throw CryptoError.take("EVP_PKEY_keygen_init") }
        var pkey: OpaquePointer? = nil
        guard EVP_PKEY_keygen(ctx, &pkey) == 1, let key = pkey else { throw CryptoError.take("EVP_PKEY_keygen") }
        defer { EVP_PKEY_free(key) }
        var seed = [UInt8](repeating: 0, count: 32)
        var len = 32
        guard EVP_PKEY_get_raw_private_key(key, &seed, &len) == 1, len == 32 else { throw CryptoError.take("EVP_PKEY_get_raw_private_key") }
        return try Ed25519SecretKey(seed: seed)
    }

    /// ostree's 64-byte secret key form: seed followed by public key.
    public var ostreeBytes: [UInt8] { seed + publicKey.bytes }
    /// The secret key as written in an ostree key file.
    public var base64: String { Base64.encode(ostreeBytes) }

    /// A pure Ed25519 signature (64 bytes) of `message`.
    public func sign(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
        let pkey = try Ed25519.privateKey(seed)
        defer { EVP_PKEY_free(pkey) }
        guard let ctx = EVP_MD_CTX_new() else { throw CryptoError.take("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, nil, nil, pkey) == 1 else { throw CryptoError.take("EVP_DigestSignInit") }
        var sig = [UInt8](repeating: 0, count: Ed25519.signatureSize)
        var len = sig.count
        let r = message.withUnsafeBufferPointer { m in
            EVP_DigestSign(ctx, &sig, &len, m.baseAddress ?? Ed25519.emptyByte, m.count)
        }
        guard r == 1, len == Ed25519.signatureSize else { throw CryptoError.take("EVP_DigestSign") }
        return sig
    }
}

public enum Ed25519 {
    public static let signatureSize = 64
    nonisolated(unsafe) static let emptyByte: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.initialize(to: 0)
        return UnsafePointer(p)
    }()

    static func privateKey(_ seed: [UInt8]) throws(CryptoError) -> OpaquePointer {
        guard let pkey = seed.withUnsafeBufferPointer({ EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.baseAddress, $0.count) }) else {
            throw CryptoError.take("EVP_PKEY_new_raw_private_key")
        }
        return pkey
    }
}
