// Building values and serializing them in GLib's normal form
// (GLib gvariant-serialiser.c: gvs_*_serialise, gvs_calculate_total_size).

extension GVariant {
    public init(boolean: Bool) { self.init(trusted: .boolean, data: [boolean ? 1 : 0]) }
    public init(byte: UInt8) { self.init(trusted: .byte, data: [byte]) }
    public init(uint32: UInt32) { self.init(trusted: .uint32, data: GVariant.le(UInt64(uint32), 4)) }
    public init(int32: Int32) { self.init(trusted: .int32, data: GVariant.le(UInt64(UInt32(bitPattern: int32)), 4)) }
    /// A `t` stored little-endian as GVariant does. For ostree's big-endian
    /// timestamp pass `seconds.byteSwapped`.
    public init(uint64: UInt64) { self.init(trusted: .uint64, data: GVariant.le(uint64, 8)) }
    public init(int64: Int64) { self.init(trusted: .int64, data: GVariant.le(UInt64(bitPattern: int64), 8)) }

    /// An `s`. Refuses text with a zero byte, which GVariant cannot hold.
    public init(string: String) throws(GVariantError) {
        let bytes = Array(string.utf8)
        guard !bytes.contains(0) else { throw GVariantError(path: "", problem: "string contains a zero byte") }
        self.init(trusted: .string, data: bytes + [0])
    }

    /// An `ay`.
    public init(bytes: [UInt8]) { self.init(trusted: .byteArray, data: bytes) }

    /// An `aay`.
    public init(byteArrays: [[UInt8]]) {
        let children = byteArrays.map { GVariant(bytes: $0) }
        self.init(trusted: .byteArrayArray, data: GVariant.serializeArray(.byteArray, children))
    }

    /// A `v` holding `value`.
    public init(variant value: GVariant) {
        var out = Array(value.data)
        out.append(0)
        out.append(contentsOf: value.type.typeString.utf8)
        self.init(trusted: .variant, data: out)
    }

    /// An array of `element`; every child must have that type.
    public init(arrayOf element: GVariantType, _ children: [GVariant]) throws(GVariantError) {
        for (i, c) in children.enumerated() where c.type != element {
            throw GVariantError(path: "[\(i)]", problem: "element has type \(c.type.typeString), not \(element.typeString)")
        }
        self.init(trusted: .array(element), data: GVariant.serializeArray(element, children))
    }

    /// A tuple of `members` (the unit `()` when empty).
    public init(tuple members: [GVariant]) {
        let t = GVariantType.tuple(members.map(\.type))
        self.init(trusted: t, data: GVariant.serializeTuple(t, members))
    }

    /// A dictionary entry `{key value}`; the key must be of a basic type.
    public init(dictEntryKey key: GVariant, value: GVariant) throws(GVariantError) {
        guard key.type.isBasic else { throw GVariantError(path: "", problem: "dictionary key type \(key.type.typeString) is not basic") }
        let t = GVariantType.dictEntry(key.type, value.type)
        self.init(trusted: t, data: GVariant.serializeTuple(t, [key, value]))
    }

    /// A maybe of `element`: Nothing when `value` is nil.
    public init(maybe element: GVariantType, _ value: GVariant?) throws(GVariantError) {
        var out: [UInt8] = []
        if let value {
            guard value.type == element else { throw GVariantError(path: "", problem: "maybe value has type \(value.type.typeString), not \(element.typeString)") }
            out = Array(value.data)
            if element.fixedSize == nil { out.append(0) }
        }
        self.init(trusted: .maybe(element), data: out)
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] {
        (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }

    /// Size of a container with `body` bytes and `offsets` framing offsets.
    static func totalSize(body: Int, offsets: Int) -> (total: Int, offsetSize: Int) {
        if body + offsets <= 0xff { return (body + offsets, 1) }
        if body + 2 * offsets <= 0xffff { return (body + 2 * offsets, 2) }
        if UInt64(body + 4 * offsets) <= 0xffff_ffff { return (body + 4 * offsets, 4) }
        return (body + 8 * offsets, 8)
    }

    static func appendPadding(_ out: inout [UInt8], to alignment: Int) {
        while out.count & (alignment - 1) != 0 { out.append(0) }
    }

    static func appendOffsets(_ out: inout [UInt8], _ offsets: [Int]) {
        guard !offsets.isEmpty else { return }
        let (_, os) = totalSize(body: out.count, offsets: offsets.count)
        for o in offsets { out.append(contentsOf: le(UInt64(o), os)) }
    }

    static func serializeArray(_ element: GVariantType, _ children: [GVariant]) -> [UInt8] {
        var out: [UInt8] = []
        if element.fixedSize != nil {
            for c in children { out.append(contentsOf: c.data) }
            return out
        }
        var ends: [Int] = []
        ends.reserveCapacity(children.count)
        for c in children {
            appendPadding(&out, to: element.alignment)
            out.append(contentsOf: c.data)
            ends.append(out.count)
        }
        appendOffsets(&out, ends)
        return out
    }

    static func serializeTuple(_ type: GVariantType, _ members: [GVariant]) -> [UInt8] {
        if members.isEmpty { return [0] }
        var out: [UInt8] = []
        var ends: [Int] = []
        for (i, m) in members.enumerated() {
            appendPadding(&out, to: m.type.alignment)
            out.append(contentsOf: m.data)
            if m.type.fixedSize == nil && i != members.count - 1 { ends.append(out.count) }
        }
        if type.fixedSize != nil {
            appendPadding(&out, to: type.alignment)
        } else {
            appendOffsets(&out, ends.reversed())
        }
        return out
    }
}
