import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// The signatures found in a commit's detached metadata, as libostree reads
/// it (for display; verification reads the raw bytes with its own parser).
public struct SignatureSummary: Sendable {
    /// Whether the commit has a `.commitmeta` at all.
    public var hasDetachedMetadata = false
    /// `ostree.sign.ed25519` elements (normally 64 bytes each).
    public var ed25519: [[UInt8]] = []
    /// `ostree.gpgsigs` elements: binary OpenPGP signatures.
    public var gpg: [[UInt8]] = []
    /// Entries present under the signature keys but of another type than aay.
    public var wrongTypes: [(key: String, type: String)] = []
    /// Every key of the detached metadata, in stored order.
    public var keys: [String] = []

    /// Issuer of each OpenPGP signature (fingerprint, else key id; hex),
    /// nil when the packet does not name one.
    public var gpgIssuers: [String?] { gpg.map(openPGPIssuer) }

    public init() {}

    /// The signatures in the bytes of an `a{sv}` signature file (a
    /// `summary.sig`), read with cairn's own parser; nil bytes for a missing
    /// file. Throws when the bytes are not a normal-form `a{sv}`.
    public init(signatureFile bytes: [UInt8]?) throws(GVariantError) {
        guard let bytes else { return }
        let dict = try VariantDictionary(serialized: bytes)
        hasDetachedMetadata = true
        keys = dict.keys
        for e in dict.entries where e.key == MetadataKey.ed25519Signatures || e.key == MetadataKey.gpgSignatures {
            guard e.value.type == .byteArrayArray else {
                wrongTypes.append((e.key, e.value.type.typeString))
                continue
            }
            let items = e.value.children.map { $0.byteArrayValue ?? [] }
            if e.key == MetadataKey.ed25519Signatures { ed25519 += items } else { gpg += items }
        }
    }
}

/// What libostree (gpgme) says about one OpenPGP signature of a commit.
public struct GPGSignatureStatus: Sendable {
    public var valid: Bool
    public var signatureExpired: Bool
    public var keyExpired: Bool
    public var keyRevoked: Bool
    public var keyMissing: Bool
    /// Fingerprint of the signing key (or what the signature names).
    public var fingerprint: String
    public var userName: String
    public var userEmail: String
    /// Signature creation time, seconds since the epoch.
    public var timestamp: Int64
}

extension Repository {
    // MARK: Detached metadata, raw

    static func metadataObjectPath(_ checksum: String, _ ext: String) -> String { OstreeObject.loosePath(checksum, ext) }

    static func validChecksum(_ checksum: String) -> Bool { OstreeObject.isChecksum(checksum) }

    /// The bytes of a file under the repository, nil when it does not exist.
    func readRepoFile(_ relative: String, limit: Int, what: String) throws -> [UInt8]? {
        do {
            let fd = try FileDescriptor.open(relative, O_RDONLY, relativeTo: directoryDescriptor)
            return try fd.closeAfter { () throws -> [UInt8] in try fd.readAll(limit: limit) }
        } catch let e as SystemError {
            if e.errno == ENOENT { return nil }
            throw RepoError("reading \(what) (\(path)/\(relative))", e.message)
        }
    }

    /// The exact bytes of a commit object as stored in `objects/XX/<rest>.commit`
    /// (what signatures cover), without any normalisation; libostree's copy when
    /// the object is not stored loose in this repository (e.g. a parent repository).
    public func rawCommitObject(_ checksum: String) throws -> [UInt8] {
        guard Repository.validChecksum(checksum) else { throw RepoError("reading commit '\(checksum)'", "not a commit checksum") }
        if let b = try readRepoFile(Repository.metadataObjectPath(checksum, "commit"), limit: 64 << 20, what: "commit \(checksum)") {
            return b
        }
        return try commitBytes(checksum)
    }

    /// The exact bytes of a commit's detached metadata file
    /// (`objects/XX/<rest>.commitmeta`), or nil when the commit has none. No
    /// parsing: the bytes may be hostile.
    public func rawDetachedMetadata(_ checksum: String) throws -> [UInt8]? {
        guard Repository.validChecksum(checksum) else { throw RepoError("reading detached metadata of '\(checksum)'", "not a commit checksum") }
        return try readRepoFile(Repository.metadataObjectPath(checksum, "commitmeta"), limit: 64 << 20,
                                what: "detached metadata of commit \(checksum)")
    }

    /// Replaces a commit's detached metadata with `bytes`, a serialized
    /// `a{sv}` in normal form (nil deletes it). libostree writes the file
    /// (atomically, by rename) and takes care of transactions.
    public func writeDetachedMetadata(_ checksum: String, _ bytes: [UInt8]?) throws {
        let context = "writing detached metadata of commit \(checksum)"
        guard let bytes else {
            try gcall(context) { ostree_repo_write_commit_detached_metadata(repo, checksum, nil, nil, $0) }
            return
        }
        guard let v = Variant(normalForm: bytes, type: "a{sv}") else {
            throw RepoError(context, "refusing to write an a{sv} that is not in GVariant normal form")
        }
        try gcall(context) { ostree_repo_write_commit_detached_metadata(repo, checksum, v.raw, nil, $0) }
    }

    // MARK: Listing signatures

    /// The signatures in a commit's detached metadata, read by libostree.
    public func signatures(_ checksum: String) throws -> SignatureSummary {
        var summary = SignatureSummary()
        var raw: OpaquePointer? = nil
        try gcall("reading detached metadata of commit \(checksum)") {
            ostree_repo_read_commit_detached_metadata(repo, checksum, &raw, nil, $0)
        }
        guard let raw else { return summary }
        let md = Variant(taking: raw)
        summary.hasDetachedMetadata = true
        for i in 0..<md.childCount {
            let entry = md.child(i)
            let key = entry.child(0).string
            summary.keys.append(key)
            guard key == MetadataKey.ed25519Signatures || key == MetadataKey.gpgSignatures else { continue }
            let value = entry.child(1).unboxed
            guard value.typeString == "aay" else {
                summary.wrongTypes.append((key, value.typeString))
                continue
            }
            let items = (0..<value.childCount).map { value.child($0).bytes }
            if key == MetadataKey.ed25519Signatures { summary.ed25519 += items } else { summary.gpg += items }
        }
        return summary
    }

    // MARK: OpenPGP through libostree (gpgme)

    /// Adds an OpenPGP signature by `keyID` (from the GnuPG home `homedir`,
    /// default ~/.gnupg) to `ostree.gpgsigs`, as `ostree gpg-sign` does.
    public func gpgSign(_ checksum: String, keyID: String, homedir: String?) throws {
        try gcall("signing commit \(checksum) with GPG key \(keyID)\(homedir.map { " (GnuPG home \($0))" } ?? "")") {
            ostree_repo_sign_commit(repo, checksum, keyID, homedir, nil, $0)
        }
    }

    /// Signs a few test bytes with `keyID`: fails, naming the key, when it
    /// cannot sign, so that a commit is not written unsigned.
    public func checkGPGSigningKey(_ keyID: String, homedir: String?) throws {
        let probe = Array("cairn signing-key check".utf8)
        let data = probe.withUnsafeBytes { g_bytes_new($0.baseAddress, gsize($0.count)) }
        defer { g_bytes_unref(data) }
        var out: OpaquePointer? = nil
        try keyID.withCString { id in
            var ids: [UnsafePointer<gchar>?] = [id, nil]
            try gcall("GPG key \(keyID)\(homedir.map { " (GnuPG home \($0))" } ?? "") cannot sign") {
                ostree_repo_gpg_sign_data(repo, data, nil, &ids, homedir, &out, nil, $0)
            }
        }
        if let out { g_bytes_unref(out) }
    }

    /// Checks the OpenPGP signatures of a commit with libostree. Trusted keys
    /// are the keyring files `*.gpg` in `keyringDirectory` (as `ostree show
    /// --gpg-homedir`), or the system's ostree keyrings when nil. Throws when
    /// the commit has no OpenPGP signature.
    public func gpgVerify(_ checksum: String, keyringDirectory: String?) throws -> [GPGSignatureStatus] {
        let dir: OpaquePointer? = keyringDirectory.flatMap { g_file_new_for_path($0) }
        defer { unref(dir) }
        var result: OpaquePointer? = nil
        try gcall("verifying GPG signatures of commit \(checksum)") {
            result = ostree_repo_verify_commit_ext(repo, checksum, dir, nil, nil, $0)
            return result == nil ? 0 : 1
        }
        guard let result else { return [] }
        defer { unref(result) }
        var attrs: [OstreeGpgSignatureAttr] = [
            OSTREE_GPG_SIGNATURE_ATTR_VALID, OSTREE_GPG_SIGNATURE_ATTR_SIG_EXPIRED,
            OSTREE_GPG_SIGNATURE_ATTR_KEY_EXPIRED, OSTREE_GPG_SIGNATURE_ATTR_KEY_REVOKED,
            OSTREE_GPG_SIGNATURE_ATTR_KEY_MISSING, OSTREE_GPG_SIGNATURE_ATTR_FINGERPRINT,
            OSTREE_GPG_SIGNATURE_ATTR_USER_NAME, OSTREE_GPG_SIGNATURE_ATTR_USER_EMAIL,
            OSTREE_GPG_SIGNATURE_ATTR_TIMESTAMP,
        ]
        let count = ostree_gpg_verify_result_count_all(result)
        return (0..<count).map { i in
            let t = Variant(taking: ostree_gpg_verify_result_get(result, i, &attrs, guint(attrs.count)))
            return GPGSignatureStatus(valid: t.child(0).boolean, signatureExpired: t.child(1).boolean,
                                      keyExpired: t.child(2).boolean, keyRevoked: t.child(3).boolean,
                                      keyMissing: t.child(4).boolean, fingerprint: t.child(5).string,
                                      userName: t.child(6).string, userEmail: t.child(7).string,
                                      timestamp: Int64(g_variant_get_int64(t.child(8).raw)))
        }
    }
}

/// The issuer named in a binary OpenPGP signature packet (RFC 4880 5.2):
/// the issuer fingerprint subpacket (33) in upper-case hex, else the issuer
/// key id (16) or the v3 key id. Nil when the bytes do not parse.
public func openPGPIssuer(_ sig: [UInt8]) -> String? {
    func hexUpper(_ b: ArraySlice<UInt8>) -> String { hexString(Array(b)).uppercased() }
    guard let first = sig.first, first & 0x80 != 0 else { return nil }
    var pos = 1
    let tag: UInt8
    var length: Int
    if first & 0x40 != 0 {  // new format
        tag = first & 0x3f
        guard pos < sig.count else { return nil }
        let o1 = Int(sig[pos]); pos += 1
        if o1 < 192 { length = o1 }
        else if o1 < 224 { guard pos < sig.count else { return nil }; length = ((o1 - 192) << 8) + Int(sig[pos]) + 192; pos += 1 }
        else if o1 == 255 {
            guard pos + 4 <= sig.count else { return nil }
            length = sig[pos..<pos + 4].reduce(0) { $0 << 8 | Int($1) }; pos += 4
        } else { return nil }  // partial lengths: not for signatures
    } else {
        tag = (first >> 2) & 0x0f
        switch first & 3 {
        case 0: guard pos < sig.count else { return nil }; length = Int(sig[pos]); pos += 1
        case 1: guard pos + 2 <= sig.count else { return nil }; length = Int(sig[pos]) << 8 | Int(sig[pos + 1]); pos += 2
        case 2: guard pos + 4 <= sig.count else { return nil }; length = sig[pos..<pos + 4].reduce(0) { $0 << 8 | Int($1) }; pos += 4
        default: length = sig.count - pos
        }
    }
    guard tag == 2, length >= 0, pos + length <= sig.count, length >= 1 else { return nil }
    let body = sig[pos..<pos + length]
    let b = body.startIndex
    if body[b] == 3 {
        guard body.count >= 15 else { return nil }
        return hexUpper(body[(b + 7)..<(b + 15)])
    }
    guard body[b] == 4 || body[b] == 5, body.count >= 6 else { return nil }
    var fingerprint: String? = nil
    var keyID: String? = nil
    func scan(_ area: ArraySlice<UInt8>) {
        var p = area.startIndex
        while p < area.endIndex {
            let o1 = Int(area[p]); p += 1
            var n: Int
            if o1 < 192 { n = o1 }
            else if o1 < 255 { guard p < area.endIndex else { return }; n = ((o1 - 192) << 8) + Int(area[p]) + 192; p += 1 }
            else { guard p + 4 <= area.endIndex else { return }; n = area[p..<p + 4].reduce(0) { $0 << 8 | Int($1) }; p += 4 }
            guard n >= 1, p + n <= area.endIndex else { return }
            let type = area[p] & 0x7f
            let data = area[(p + 1)..<(p + n)]
            if type == 33, data.count >= 2 { fingerprint = fingerprint ?? hexUpper(data.dropFirst()) }
            if type == 16, data.count == 8 { keyID = keyID ?? hexUpper(data) }
            p += n
        }
    }
    let hashedLength = Int(body[b + 4]) << 8 | Int(body[b + 5])
    guard b + 6 + hashedLength <= body.endIndex else { return nil }
    scan(body[(b + 6)..<(b + 6 + hashedLength)])
    let u = b + 6 + hashedLength
    if u + 2 <= body.endIndex {
        let unhashedLength = Int(body[u]) << 8 | Int(body[u + 1])
        if u + 2 + unhashedLength <= body.endIndex { scan(body[(u + 2)..<(u + 2 + unhashedLength)]) }
    }
    return fingerprint ?? keyID
}
