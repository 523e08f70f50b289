/// An `a{sv}` dictionary (ostree's commit metadata and detached metadata),
/// kept as an ordered list of entries so that reading then writing gives
/// back the same bytes.
public struct VariantDictionary: Sendable, CustomStringConvertible {
    public struct Entry: Sendable {
        public var key: String
        /// The value, unwrapped from its variant.
        public var value: GVariant
        public init(key: String, value: GVariant) {
            self.key = key
            self.value = value
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    /// Reads a serialized `a{sv}` in normal form.
    public init(serialized: [UInt8]) throws(GVariantError) {
        try self.init(try GVariant(type: .vardict, data: serialized))
    }

    /// Takes the entries of a checked `a{sv}` value.
    public init(_ value: GVariant) throws(GVariantError) {
        guard value.type == .vardict else {
            throw GVariantError(path: "", problem: "expected a{sv}, found \(value.type.typeString)")
        }
        var entries: [Entry] = []
        for e in value.children {
            guard let k = e.child(0)?.stringValue, let v = e.child(1)?.variantValue else {
                throw GVariantError(path: "", problem: "unreadable dictionary entry")
            }
            entries.append(Entry(key: k, value: v))
        }
        self.entries = entries
    }

    public var keys: [String] { entries.map(\.key) }

    /// The value of the first entry named `key` (as g_variant_lookup_value).
    public subscript(key: String) -> GVariant? {
        entries.first(where: { $0.key == key })?.value
    }

    /// The bytes of an `ay` entry, nil when absent or of another type.
    public func bytes(_ key: String) -> [UInt8]? { self[key]?.byteArrayValue }
    /// The text of an `s` entry, nil when absent or of another type.
    public func string(_ key: String) -> String? { self[key]?.stringValue }

    /// Replaces the first entry named `key` in place, or appends one.
    public mutating func set(_ key: String, _ value: GVariant) {
        if let i = entries.firstIndex(where: { $0.key == key }) {
            entries[i].value = value
        } else {
            entries.append(Entry(key: key, value: value))
        }
    }

    /// The `a{sv}` value, entries in their current order.
    public func variant() -> GVariant {
        let children = entries.map { e -> GVariant in
            // Keys come from validated strings or `set`; a zero byte cannot be
            // serialized, so such a key is cut at the zero byte.
            let k = (try? GVariant(string: e.key)) ?? GVariant(trusted: .string, data: Array(e.key.utf8.prefix { $0 != 0 }) + [0])
            return try! GVariant(dictEntryKey: k, value: GVariant(variant: e.value))
        }
        return GVariant(trusted: .vardict, data: GVariant.serializeArray(.dictEntry(.string, .variant), children))
    }

    /// The serialized `a{sv}` in normal form.
    public func serialized() -> [UInt8] { variant().serialized }

    /// The entries in the order GLib's GVariantDict emits them
    /// (g_variant_dict_init from these entries, then g_variant_dict_end):
    /// hash-table order, which is what libostree writes after adding a signature.
    public func inGVariantDictOrder() -> VariantDictionary {
        var table = GLibStringHashTable()
        var values: [String: GVariant] = [:]
        for e in entries {
            table.insert(e.key)
            values[e.key] = e.value
        }
        return VariantDictionary(entries: table.keysInIterationOrder().map { Entry(key: $0, value: values[$0]!) })
    }

    /// What libostree's `ostree_sign_commit` writes as detached metadata when
    /// it adds an ed25519 signature: the existing `ostree.sign.ed25519`
    /// array (if it has type aay) with `signature` appended, every other entry
    /// kept, in GVariantDict (hash-table) order.
    public func appendingSignature(_ signature: [UInt8], key: String = ed25519SignatureKey) -> VariantDictionary {
        var table = GLibStringHashTable()
        var values: [String: GVariant] = [:]
        for e in entries {
            table.insert(e.key)
            values[e.key] = e.value
        }
        var sigs: [GVariant] = []
        if let existing = values[key], existing.type == .byteArrayArray { sigs = existing.children }
        sigs.append(GVariant(bytes: signature))
        table.insert(key)
        values[key] = try! GVariant(arrayOf: .byteArray, sigs)
        return VariantDictionary(entries: table.keysInIterationOrder().map { Entry(key: $0, value: values[$0]!) })
    }

    public var description: String {
        "{" + entries.map { "\($0.key): <\($0.value.type.typeString)>" }.joined(separator: ", ") + "}"
    }
}

/// Key of ed25519 signatures in detached metadata.
public let ed25519SignatureKey = "ostree.sign.ed25519"
/// Key of OpenPGP signatures in detached metadata.
public let gpgSignatureKey = "ostree.gpgsigs"
/// Commit metadata key of the composefs image digest.
public let composefsDigestKey = "ostree.composefs.digest.v0"

/// A model of GLib's GHashTable (ghash.c, GLib 2.x since 2.60: open
/// addressing, quadratic probing, prime modulo, in-place resize) with
/// g_str_hash keys, used only to reproduce its iteration order.
struct GLibStringHashTable {
    private static let primeMod: [UInt32] = [
        1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
        65521, 131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213,
        33554393, 67108859, 134217689, 268435399, 536870909, 1073741789, 2147483647,
    ]
    private static let minShift = 3

    private var size = 8
    private var mod: UInt32 = 7
    private var mask = 7
    private var nnodes = 0
    private var noccupied = 0
    private var hashes: [UInt32] = Array(repeating: 0, count: 8)
    private var keys: [String?] = Array(repeating: nil, count: 8)

    static func strHash(_ s: String) -> UInt32 {
        var h: UInt32 = 5381
        for c in s.utf8 {  // g_str_hash reads signed char
            h = (h &<< 5) &+ h &+ UInt32(bitPattern: Int32(Int8(bitPattern: c)))
        }
        return h
    }

    private func index(_ hash: UInt32) -> Int { Int((hash &* 11) % mod) }

    private mutating func setShift(_ shift: Int) {
        size = 1 << shift
        mod = GLibStringHashTable.primeMod[shift]
        mask = size - 1
    }

    mutating func insert(_ key: String) {
        var hash = GLibStringHashTable.strHash(key)
        if hash < 2 { hash = 2 }
        var i = index(hash)
        var step = 0
        var firstTombstone: Int? = nil
        while hashes[i] != 0 {
            if hashes[i] == hash, keys[i] == key { return }  // existing: value replaced, position kept
            if hashes[i] == 1 && firstTombstone == nil { firstTombstone = i }
            step += 1
            i = (i + step) & mask
        }
        if let t = firstTombstone { i = t }
        let wasUnused = hashes[i] == 0
        hashes[i] = hash
        keys[i] = key
        nnodes += 1
        if wasUnused {
            noccupied += 1
            maybeResize()
        }
    }

    private mutating func maybeResize() {
        if (size > nnodes * 4 && size > 1 << GLibStringHashTable.minShift) || size <= noccupied + noccupied / 16 {
            resize()
        }
    }

    private mutating func resize() {
        let oldSize = size
        var n = Int(Double(nnodes) * 1.333)
        var shift = 0
        while n != 0 { n >>= 1; shift += 1 }
        setShift(max(shift, GLibStringHashTable.minShift))
        if size > oldSize {
            hashes += Array(repeating: 0, count: size - oldSize)
            keys += Array(repeating: nil, count: size - oldSize)
        }
        var relocated = Array(repeating: false, count: max(size, oldSize))
        for i in 0..<oldSize {
            let h = hashes[i]
            if h < 2 { hashes[i] = 0; continue }
            if relocated[i] { continue }
            hashes[i] = 0
            var nodeHash = h
            var nodeKey = keys[i]
            keys[i] = nil
            while true {
                var j = index(nodeHash)
                var step = 0
                while relocated[j] { step += 1; j = (j + step) & mask }
                relocated[j] = true
                let replacedHash = hashes[j]
                let replacedKey = keys[j]
                hashes[j] = nodeHash
                keys[j] = nodeKey
                if replacedHash < 2 { break }
                nodeHash = replacedHash
                nodeKey = replacedKey
            }
        }
        if size < oldSize {
            hashes.removeLast(oldSize - size)
            keys.removeLast(oldSize - size)
        }
        noccupied = nnodes
    }

    func keysInIterationOrder() -> [String] {
        (0..<size).compactMap { hashes[$0] >= 2 ? keys[$0] : nil }
    }
}
