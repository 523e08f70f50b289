import COSTree
import CairnSystem
import Trust

/// A metadata value of a commit, kept as its GVariant type and text, with
/// the plain value for the types cairn itself reads.
public struct MetadataValue: Sendable {
    public enum Plain: Sendable {
        case string(String)
        case bytes([UInt8])
        case byteArrays([[UInt8]])
        case strings([String])
        case uint64(UInt64)
        case int64(Int64)
        case bool(Bool)
        case other
    }
    public var type: String
    public var text: String
    public var plain: Plain

    init(_ v: Variant) {
        type = v.typeString
        text = v.text
        switch type {
        case "s", "o", "g": plain = .string(v.string)
        case "ay": plain = .bytes(v.bytes)
        case "aay": plain = .byteArrays((0..<v.childCount).map { v.child($0).bytes })
        case "as": plain = .strings((0..<v.childCount).map { v.child($0).string })
        case "t": plain = .uint64(v.uint64)
        case "u": plain = .uint64(UInt64(v.uint32))
        case "x": plain = .int64(Int64(g_variant_get_int64(v.raw)))
        case "i": plain = .int64(Int64(g_variant_get_int32(v.raw)))
        case "b": plain = .bool(v.boolean)
        default: plain = .other
        }
    }
}

/// The fields of a commit object.
public struct CommitInfo: Sendable {
    public var checksum: String
    public var metadata: [(key: String, value: MetadataValue)]
    public var parent: String?
    public var subject: String
    public var body: String
    /// Seconds since the epoch, UTC.
    public var timestamp: UInt64
    public var rootTree: String
    public var rootMeta: String
    /// ostree's content checksum: covers the root tree and metadata only,
    /// so identical trees committed twice share it.
    public var contentChecksum: String

    init(checksum: String, variant v: Variant) {
        self.checksum = checksum
        let md = v.child(0)
        metadata = (0..<md.childCount).map { i in
            let entry = md.child(i)
            return (entry.child(0).string, MetadataValue(entry.child(1).unboxed))
        }
        let parentBytes = v.child(1).bytes
        parent = parentBytes.count == 32 ? hexString(parentBytes) : nil
        subject = v.child(3).string
        body = v.child(4).string
        timestamp = UInt64(bigEndian: v.child(5).uint64)
        rootTree = hexString(v.child(6).bytes)
        rootMeta = hexString(v.child(7).bytes)
        contentChecksum = takeGString(ostree_commit_get_content_checksum(v.raw)) ?? ""
    }

    public func metadataValue(_ key: String) -> MetadataValue? {
        metadata.first(where: { $0.key == key })?.value
    }

    /// The `version` metadata string, if any.
    public var version: String? {
        if case .string(let s)? = metadataValue("version")?.plain { return s }
        return nil
    }

    /// The recorded composefs image digest (`ostree.composefs.digest.v0`).
    public var composefsDigest: [UInt8]? {
        if case .bytes(let b)? = metadataValue(MetadataKey.composefsDigest)?.plain, b.count == 32 { return b }
        return nil
    }
}

/// Metadata keys cairn shares with ostree.
public enum MetadataKey {
    public static let composefsDigest = Trust.composefsDigestKey
    /// `as`: the refs a commit may be pulled as.
    public static let refBinding = "ostree.ref-binding"
    public static let version = "version"
    public static let ed25519Signatures = Trust.ed25519SignatureKey
    public static let gpgSignatures = Trust.gpgSignatureKey
}
