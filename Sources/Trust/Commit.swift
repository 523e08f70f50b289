/// An ostree commit object, GVariant type `(a{sv}aya(say)sstayay)`.
public struct Commit: Sendable {
    public static let type = try! GVariantType("(a{sv}aya(say)sstayay)")
    static let fieldNames = ["metadata", "parent", "related", "subject", "body", "timestamp", "root tree", "root metadata"]

    /// The commit's own metadata (the commit checksum and signatures cover it).
    public var metadata: VariantDictionary
    /// Parent commit checksum: 32 bytes, or empty for a commit without parent.
    public var parent: [UInt8]
    /// Related objects: name and commit checksum.
    public var related: [(name: String, checksum: [UInt8])]
    public var subject: String
    public var body: String
    /// Seconds since the epoch (ostree stores them big-endian; already swapped).
    public var timestamp: UInt64
    /// Checksum of the root dirtree object (32 bytes).
    public var rootTree: [UInt8]
    /// Checksum of the root dirmeta object (32 bytes).
    public var rootMetadata: [UInt8]

    /// Parses the bytes of a commit object, refusing any non-normal form or a
    /// checksum of the wrong length, with the offending field in the error.
    public init(serialized: [UInt8]) throws(GVariantError) {
        let v: GVariant
        do {
            v = try GVariant(type: Commit.type, data: serialized)
        } catch {
            throw Commit.nameField(error)
        }
        let f = v.children
        guard f.count == 8 else { throw GVariantError(path: "commit", problem: "unreadable") }
        do { metadata = try VariantDictionary(f[0]) } catch { throw error.prefixed("commit.metadata") }
        parent = f[1].byteArrayValue ?? []
        guard parent.isEmpty || parent.count == 32 else {
            throw GVariantError(path: "commit.parent", problem: "checksum is \(parent.count) bytes, not 32 or 0")
        }
        var related: [(name: String, checksum: [UInt8])] = []
        for (i, r) in f[2].children.enumerated() {
            let name = r.child(0)?.stringValue ?? ""
            let sum = r.child(1)?.byteArrayValue ?? []
            guard sum.count == 32 else {
                throw GVariantError(path: "commit.related[\(i)]", problem: "checksum is \(sum.count) bytes, not 32")
            }
            related.append((name, sum))
        }
        self.related = related
        subject = f[3].stringValue ?? ""
        body = f[4].stringValue ?? ""
        timestamp = (f[5].uint64Value ?? 0).byteSwapped
        rootTree = f[6].byteArrayValue ?? []
        rootMetadata = f[7].byteArrayValue ?? []
        guard rootTree.count == 32 else {
            throw GVariantError(path: "commit.root tree", problem: "checksum is \(rootTree.count) bytes, not 32")
        }
        guard rootMetadata.count == 32 else {
            throw GVariantError(path: "commit.root metadata", problem: "checksum is \(rootMetadata.count) bytes, not 32")
        }
    }

    /// Turns ".3" in a generic path into "commit.subject" and so on.
    static func nameField(_ e: GVariantError) -> GVariantError {
        var e = e
        if e.path.hasPrefix(".") {
            let rest = e.path.dropFirst()
            let digits = rest.prefix { $0.isNumber }
            if let i = Int(digits), i < fieldNames.count {
                e.path = "commit." + fieldNames[i] + rest.dropFirst(digits.count)
                return e
            }
        }
        e.path = e.path.isEmpty ? "commit" : "commit" + (e.path.hasPrefix("[") ? "" : ".") + e.path
        return e
    }

    /// The composefs digest recorded in the metadata (`ostree.composefs.digest.v0`,
    /// type ay), or nil when absent or of another type. Length is not checked here.
    public var composefsDigest: [UInt8]? { metadata.bytes(composefsDigestKey) }

    /// The `version` the commit's metadata records (type s), as ostree shows it.
    public var version: String? { metadata.string("version") }
}
