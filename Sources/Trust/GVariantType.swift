/// A definite GVariant type, parsed from a type string.
///
/// Instances are immutable and carry their alignment and fixed size, computed
/// once, as GLib's GVariantTypeInfo does.
public final class GVariantType: Equatable, Hashable, CustomStringConvertible, @unchecked Sendable {
    public enum Kind: Equatable, Sendable {
        case boolean, byte, int16, uint16, int32, uint32, handle, int64, uint64, double
        case string, objectPath, signature, variant
        case maybe, array, tuple, dictEntry
    }

    public let kind: Kind
    /// Element type (maybe, array), members (tuple), key and value (dict entry).
    public let children: [GVariantType]
    /// Alignment in bytes: 1, 2, 4 or 8.
    public let alignment: Int
    /// Size of every value of this type, or nil when values vary in size.
    public let fixedSize: Int?
    /// The type string, e.g. "a{sv}".
    public let typeString: String
    /// Container nesting depth of the type (basic types are 0).
    public let depth: Int

    /// The deepest type nesting accepted, as GLib's G_VARIANT_MAX_RECURSION_DEPTH.
    public static let maxDepth = 128

    private init(kind: Kind, children: [GVariantType] = [], typeString: String) {
        self.kind = kind
        self.children = children
        self.typeString = typeString
        self.depth = children.isEmpty ? (kind == .tuple ? 1 : 0) : 1 + children.map(\.depth).max()!
        switch kind {
        case .boolean, .byte: alignment = 1; fixedSize = 1
        case .int16, .uint16: alignment = 2; fixedSize = 2
        case .int32, .uint32, .handle: alignment = 4; fixedSize = 4
        case .int64, .uint64, .double: alignment = 8; fixedSize = 8
        case .string, .objectPath, .signature: alignment = 1; fixedSize = nil
        case .variant: alignment = 8; fixedSize = nil
        case .maybe, .array: alignment = children[0].alignment; fixedSize = nil
        case .tuple, .dictEntry:
            let a = children.map(\.alignment).max() ?? 1
            alignment = a
            if children.allSatisfy({ $0.fixedSize != nil }) {
                if children.isEmpty {
                    fixedSize = 1  // the unit type "()" is one zero byte
                } else {
                    var size = 0
                    for c in children { size = alignUp(size, c.alignment) + c.fixedSize! }
                    fixedSize = alignUp(size, a)
                }
            } else {
                fixedSize = nil
            }
        }
    }

    public static let boolean = GVariantType(kind: .boolean, typeString: "b")
    public static let byte = GVariantType(kind: .byte, typeString: "y")
    public static let int16 = GVariantType(kind: .int16, typeString: "n")
    public static let uint16 = GVariantType(kind: .uint16, typeString: "q")
    public static let int32 = GVariantType(kind: .int32, typeString: "i")
    public static let uint32 = GVariantType(kind: .uint32, typeString: "u")
    public static let handle = GVariantType(kind: .handle, typeString: "h")
    public static let int64 = GVariantType(kind: .int64, typeString: "x")
    public static let uint64 = GVariantType(kind: .uint64, typeString: "t")
    public static let double = GVariantType(kind: .double, typeString: "d")
    public static let string = GVariantType(kind: .string, typeString: "s")
    public static let objectPath = GVariantType(kind: .objectPath, typeString: "o")
    public static let signature = GVariantType(kind: .signature, typeString: "g")
    public static let variant = GVariantType(kind: .variant, typeString: "v")
    public static let byteArray = GVariantType.array(.byte)
    public static let byteArrayArray = GVariantType.array(.byteArray)
    /// `a{sv}`, the vardict.
    public static let vardict = GVariantType.array(.dictEntry(.string, .variant))

    public static func array(_ element: GVariantType) -> GVariantType {
        GVariantType(kind: .array, children: [element], typeString: "a" + element.typeString)
    }
    public static func maybe(_ element: GVariantType) -> GVariantType {
        GVariantType(kind: .maybe, children: [element], typeString: "m" + element.typeString)
    }
    public static func tuple(_ members: [GVariantType]) -> GVariantType {
        GVariantType(kind: .tuple, children: members, typeString: "(" + members.map(\.typeString).joined() + ")")
    }
    /// A dictionary entry; the key must be a basic type (not checked here, see `init(_:)`).
    public static func dictEntry(_ key: GVariantType, _ value: GVariantType) -> GVariantType {
        GVariantType(kind: .dictEntry, children: [key, value], typeString: "{" + key.typeString + value.typeString + "}")
    }

    public var isBasic: Bool {
        switch kind {
        case .variant, .maybe, .array, .tuple, .dictEntry: return false
        default: return true
        }
    }

    /// Parses a complete definite type string such as "(a{sv}aya(say)sstayay)".
    public convenience init(_ string: String) throws(GVariantError) {
        let bytes = Array(string.utf8)
        var pos = 0
        let t = try GVariantType.scan(bytes[...], &pos, depth: 0)
        guard pos == bytes.count else {
            throw GVariantError(path: "", problem: "type string \"\(string)\" has trailing characters")
        }
        self.init(kind: t.kind, children: t.children, typeString: t.typeString)
    }

    /// Parses one complete type from `bytes[pos...]`, advancing `pos`.
    static func scan(_ bytes: ArraySlice<UInt8>, _ pos: inout Int, depth: Int) throws(GVariantError) -> GVariantType {
        func fail(_ why: String) -> GVariantError {
            GVariantError(path: "", problem: "invalid type string: \(why)")
        }
        guard depth < maxDepth else { throw fail("nested deeper than \(maxDepth)") }
        guard pos < bytes.endIndex else { throw fail("ends too early") }
        let c = bytes[pos]
        pos += 1
        switch c {
        case UInt8(ascii: "b"): return .boolean
        case UInt8(ascii: "y"): return .byte
        case UInt8(ascii: "n"): return .int16
        case UInt8(ascii: "q"): return .uint16
        case UInt8(ascii: "i"): return .int32
        case UInt8(ascii: "u"): return .uint32
        case UInt8(ascii: "h"): return .handle
        case UInt8(ascii: "x"): return .int64
        case UInt8(ascii: "t"): return .uint64
        case UInt8(ascii: "d"): return .double
        case UInt8(ascii: "s"): return .string
        case UInt8(ascii: "o"): return .objectPath
        case UInt8(ascii: "g"): return .signature
        case UInt8(ascii: "v"): return .variant
        case UInt8(ascii: "a"): return .array(try scan(bytes, &pos, depth: depth + 1))
        case UInt8(ascii: "m"): return .maybe(try scan(bytes, &pos, depth: depth + 1))
        case UInt8(ascii: "("):
            var members: [GVariantType] = []
            while true {
                guard pos < bytes.endIndex else { throw fail("unclosed (") }
                if bytes[pos] == UInt8(ascii: ")") { pos += 1; break }
                members.append(try scan(bytes, &pos, depth: depth + 1))
            }
            return .tuple(members)
        case UInt8(ascii: "{"):
            let key = try scan(bytes, &pos, depth: depth + 1)
            guard key.isBasic else { throw fail("dictionary key is not a basic type") }
            let value = try scan(bytes, &pos, depth: depth + 1)
            guard pos < bytes.endIndex, bytes[pos] == UInt8(ascii: "}") else { throw fail("unclosed {") }
            pos += 1
            return .dictEntry(key, value)
        default:
            throw fail("unexpected character 0x\(String(c, radix: 16)) (indefinite types are not allowed)")
        }
    }

    public static func == (a: GVariantType, b: GVariantType) -> Bool { a === b || a.typeString == b.typeString }
    public func hash(into h: inout Hasher) { h.combine(typeString) }
    public var description: String { typeString }
}

@inline(__always) func alignUp(_ n: Int, _ alignment: Int) -> Int {
    (n + alignment - 1) & ~(alignment - 1)
}
