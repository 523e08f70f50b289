/// Why a serialized GVariant was refused: `path` names the field (for
/// example `metadata['version']` or `[2]`), `problem` says what is wrong.
public struct GVariantError: Error, Equatable, CustomStringConvertible, Sendable {
    public var path: String
    public var problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        path.isEmpty ? problem : "\(path): \(problem)"
    }

    func prefixed(_ component: String) -> GVariantError {
        var e = self
        if e.path.isEmpty || e.path.hasPrefix("[") || e.path.hasPrefix(".") {
            e.path = component + e.path
        } else {
            e.path = component + "." + e.path
        }
        return e
    }
}

/// A serialized GVariant value in normal form: a type and a range of bytes.
///
/// Values made by `init(type:data:)` have been checked to be in GLib's normal
/// form (the unique serialization g_variant_get_normal_form produces), so
/// that every framing offset is in bounds and consistent. Accessors never
/// copy more than the bytes asked for; children share the parent's buffer.
public struct GVariant: @unchecked Sendable, CustomStringConvertible {
    public let type: GVariantType
    @usableFromInline let buffer: [UInt8]
    @usableFromInline let range: Range<Int>

    /// Reads `data` as a value of `type`, refusing anything not in normal form.
    public init(type: GVariantType, data: [UInt8]) throws(GVariantError) {
        try GVariant.checkNormal(type, data, 0..<data.count, depth: 0)
        self.type = type
        self.buffer = data
        self.range = 0..<data.count
    }

    /// Reads `data` as a value of the type written as `typeString`.
    public init(typeString: String, data: [UInt8]) throws(GVariantError) {
        try self.init(type: GVariantType(typeString), data: data)
    }

    /// A value known to be normal (children of checked values, or values we serialized).
    init(trusted type: GVariantType, buffer: [UInt8], range: Range<Int>) {
        self.type = type
        self.buffer = buffer
        self.range = range
    }

    init(trusted type: GVariantType, data: [UInt8]) {
        self.init(trusted: type, buffer: data, range: 0..<data.count)
    }

    /// The serialized bytes of this value.
    public var data: ArraySlice<UInt8> { buffer[range] }
    public var serialized: [UInt8] { Array(buffer[range]) }
    public var size: Int { range.count }

    // MARK: Basic values

    @inline(__always) func readLE(_ n: Int) -> UInt64 {
        guard range.count >= n else { return 0 }
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(buffer[range.lowerBound + i]) << (8 * i) }
        return v
    }

    public var boolValue: Bool? { type.kind == .boolean ? readLE(1) != 0 : nil }
    public var byteValue: UInt8? { type.kind == .byte ? UInt8(readLE(1)) : nil }
    public var int16Value: Int16? { type.kind == .int16 ? Int16(truncatingIfNeeded: readLE(2)) : nil }
    public var uint16Value: UInt16? { type.kind == .uint16 ? UInt16(readLE(2)) : nil }
    public var int32Value: Int32? { type.kind == .int32 || type.kind == .handle ? Int32(truncatingIfNeeded: readLE(4)) : nil }
    public var uint32Value: UInt32? { type.kind == .uint32 ? UInt32(readLE(4)) : nil }
    public var int64Value: Int64? { type.kind == .int64 ? Int64(bitPattern: readLE(8)) : nil }
    /// A `t` read as GVariant stores it (little-endian). ostree stores the
    /// commit timestamp big-endian: use `.byteSwapped` on the result.
    public var uint64Value: UInt64? { type.kind == .uint64 ? readLE(8) : nil }
    public var doubleValue: Double? { type.kind == .double ? Double(bitPattern: readLE(8)) : nil }

    /// The text of an `s`, `o` or `g` value.
    public var stringValue: String? {
        switch type.kind {
        case .string, .objectPath, .signature:
            guard !range.isEmpty else { return nil }
            return String(decoding: buffer[range.lowerBound..<(range.upperBound - 1)], as: UTF8.self)
        default: return nil
        }
    }

    /// The bytes of an `ay` value.
    public var byteArrayValue: [UInt8]? {
        type.kind == .array && type.children[0].kind == .byte ? Array(buffer[range]) : nil
    }

    // MARK: Containers

    /// Number of children: elements of an array, members of a tuple or dict
    /// entry, 0 or 1 for a maybe, 1 for a variant, 0 for basic values.
    public var childCount: Int {
        switch type.kind {
        case .array:
            let element = type.children[0]
            if let fixed = element.fixedSize { return range.count / fixed }
            guard let frame = try? GVariant.arrayFrame(buffer, range) else { return 0 }
            return frame.count
        case .tuple, .dictEntry: return type.children.count
        case .maybe: return range.isEmpty ? 0 : 1
        case .variant: return 1
        default: return 0
        }
    }

    /// The child at `index`, or nil when out of range.
    public func child(_ index: Int) -> GVariant? {
        guard index >= 0, index < childCount else { return nil }
        switch type.kind {
        case .array:
            let element = type.children[0]
            guard let r = try? GVariant.arrayElementRange(element, buffer, range, index) else { return nil }
            return GVariant(trusted: element, buffer: buffer, range: r)
        case .tuple, .dictEntry:
            guard let ranges = try? GVariant.tupleMemberRanges(type, buffer, range, depth: 0, check: false),
                  index < ranges.count else { return nil }
            return GVariant(trusted: type.children[index], buffer: buffer, range: ranges[index])
        case .maybe:
            let element = type.children[0]
            let end = element.fixedSize == nil ? range.upperBound - 1 : range.upperBound
            return GVariant(trusted: element, buffer: buffer, range: range.lowerBound..<end)
        case .variant:
            return variantValue
        default:
            return nil
        }
    }

    /// All children in order.
    public var children: [GVariant] {
        if type.kind == .tuple || type.kind == .dictEntry {
            guard let ranges = try? GVariant.tupleMemberRanges(type, buffer, range, depth: 0, check: false) else { return [] }
            return zip(type.children, ranges).map { GVariant(trusted: $0, buffer: buffer, range: $1) }
        }
        return (0..<childCount).compactMap { child($0) }
    }

    /// The value inside a `v`.
    public var variantValue: GVariant? {
        guard type.kind == .variant, let (t, r) = try? GVariant.variantParts(buffer, range, depth: 0) else { return nil }
        return GVariant(trusted: t, buffer: buffer, range: r)
    }

    /// For a dictionary `a{s*}`: the value of the first entry whose key is `key`.
    /// (For `a{sv}` this is the variant; use `lookup(_:)` to unwrap it.)
    public func entry(_ key: String) -> GVariant? {
        guard type.kind == .array, type.children[0].kind == .dictEntry,
              type.children[0].children[0].kind == .string else { return nil }
        let want = Array(key.utf8) + [0]
        for i in 0..<childCount {
            guard let e = child(i), let ranges = try? GVariant.tupleMemberRanges(e.type, buffer, e.range, depth: 0, check: false)
            else { continue }
            if buffer[ranges[0]].elementsEqual(want) {
                return GVariant(trusted: e.type.children[1], buffer: buffer, range: ranges[1])
            }
        }
        return nil
    }

    /// For `a{sv}`: the value (unwrapped from its variant) stored under `key`.
    public func lookup(_ key: String) -> GVariant? {
        guard let v = entry(key) else { return nil }
        return v.type.kind == .variant ? v.variantValue : v
    }

    public var description: String { "GVariant<\(type.typeString)>(\(range.count) bytes)" }
}

// MARK: - Framing and normal-form checks (GVariant specification; GLib gvariant-serialiser.c)

extension GVariant {
    /// Size of a framing offset in a container of `size` bytes.
    @inline(__always) static func offsetSize(_ size: Int) -> Int {
        if size == 0 { return 0 }
        if size <= 0xff { return 1 }
        if size <= 0xffff { return 2 }
        if UInt64(size) <= 0xffff_ffff { return 4 }
        return 8
    }

    @inline(__always) static func readOffset(_ b: [UInt8], _ at: Int, _ n: Int) -> Int {
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(b[at + i]) << (8 * i) }
        return v > UInt64(Int.max) ? Int.max : Int(v)
    }

    struct ArrayFrame { var offsetSize: Int; var lastEnd: Int; var count: Int }

    /// Framing of a non-empty array of variable-size elements (relative positions).
    static func arrayFrame(_ b: [UInt8], _ r: Range<Int>) throws(GVariantError) -> ArrayFrame {
        let size = r.count
        if size == 0 { return ArrayFrame(offsetSize: 0, lastEnd: 0, count: 0) }
        let os = offsetSize(size)
        guard size >= os else { throw GVariantError(path: "", problem: "array of \(size) bytes is too short for its framing offset") }
        let lastEnd = readOffset(b, r.upperBound - os, os)
        guard lastEnd <= size else {
            throw GVariantError(path: "", problem: "array framing offset \(lastEnd) is beyond the array's \(size) bytes")
        }
        let tail = size - lastEnd
        guard tail % os == 0 else {
            throw GVariantError(path: "", problem: "array framing offsets occupy \(tail) bytes, not a multiple of \(os)")
        }
        guard tail > 0 else { throw GVariantError(path: "", problem: "non-empty array has no elements") }
        return ArrayFrame(offsetSize: os, lastEnd: lastEnd, count: tail / os)
    }

    /// Absolute range of element `index` of an array (no normal-form check of padding).
    static func arrayElementRange(_ element: GVariantType, _ b: [UInt8], _ r: Range<Int>, _ index: Int) throws(GVariantError) -> Range<Int> {
        if let fixed = element.fixedSize {
            let start = r.lowerBound + index * fixed
            guard index >= 0, start + fixed <= r.upperBound else { throw GVariantError(path: "[\(index)]", problem: "out of range") }
            return start..<(start + fixed)
        }
        let f = try arrayFrame(b, r)
        guard index >= 0, index < f.count else { throw GVariantError(path: "[\(index)]", problem: "out of range") }
        let offsets = r.lowerBound + f.lastEnd
        let start = index == 0 ? 0 : alignUp(readOffset(b, offsets + (index - 1) * f.offsetSize, f.offsetSize), element.alignment)
        let end = readOffset(b, offsets + index * f.offsetSize, f.offsetSize)
        guard start <= end, end <= f.lastEnd else {
            throw GVariantError(path: "[\(index)]", problem: "element framing offsets \(start)..<\(end) are out of order or out of bounds")
        }
        return (r.lowerBound + start)..<(r.lowerBound + end)
    }

    /// Absolute ranges of the members of a tuple or dict entry. With `check`,
    /// refuses non-normal framing and padding (GLib gvs_tuple_is_normal).
    static func tupleMemberRanges(_ type: GVariantType, _ b: [UInt8], _ r: Range<Int>, depth: Int, check: Bool) throws(GVariantError) -> [Range<Int>] {
        let size = r.count
        let base = r.lowerBound
        if let fixed = type.fixedSize, size != fixed {
            throw GVariantError(path: "", problem: "\(type.typeString) must be \(fixed) bytes, found \(size)")
        }
        let os = offsetSize(size)
        var offsetPtr = size
        var offset = 0
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(type.children.count)
        let members = type.children
        for (i, m) in members.enumerated() {
            while offset & (m.alignment - 1) != 0 {
                guard offset < offsetPtr else {
                    throw GVariantError(path: ".\(i)", problem: "member starts beyond the end of its container")
                }
                if check && b[base + offset] != 0 {
                    throw GVariantError(path: ".\(i)", problem: "non-zero alignment padding before member")
                }
                offset += 1
            }
            let end: Int
            if let fixed = m.fixedSize {
                end = offset + fixed
            } else if i == members.count - 1 {
                end = offsetPtr
            } else {
                guard offsetPtr >= os + offset, os > 0 else {
                    throw GVariantError(path: ".\(i)", problem: "container too short for the member's framing offset")
                }
                offsetPtr -= os
                end = readOffset(b, base + offsetPtr, os)
            }
            guard end >= offset, end <= offsetPtr else {
                throw GVariantError(path: ".\(i)", problem: "member framing offset \(end) is out of order or out of bounds (start \(offset), limit \(offsetPtr))")
            }
            if check {
                do { try checkNormal(m, b, (base + offset)..<(base + end), depth: depth + 1) }
                catch { throw error.prefixed(type.kind == .dictEntry ? (i == 0 ? ".key" : ".value") : ".\(i)") }
            }
            ranges.append((base + offset)..<(base + end))
            offset = end
        }
        if check {
            if let _ = type.fixedSize {
                if members.isEmpty {
                    guard b[base] == 0 else { throw GVariantError(path: "", problem: "unit value is not a zero byte") }
                    offset += 1
                } else {
                    while offset & (type.alignment - 1) != 0 {
                        guard offset < size, b[base + offset] == 0 else {
                            throw GVariantError(path: "", problem: "non-zero trailing padding in \(type.typeString)")
                        }
                        offset += 1
                    }
                }
            }
            guard offsetPtr == offset else {
                throw GVariantError(path: "", problem: "\(offsetPtr - offset) unexpected bytes between the last member and the framing offsets")
            }
            // Framing offsets must have the smallest size that fits (GLib's
            // serializer picks it from body size plus offsets).
            let framing = (size - offsetPtr) / max(os, 1)
            if framing > 0 && totalSize(body: offsetPtr, offsets: framing).total != size {
                throw GVariantError(path: "", problem: "framing offsets of \(os) bytes are wider than needed (not normal form)")
            }
        }
        return ranges
    }

    /// The type and absolute range of the value inside a variant.
    static func variantParts(_ b: [UInt8], _ r: Range<Int>, depth: Int) throws(GVariantError) -> (GVariantType, Range<Int>) {
        guard !r.isEmpty else { throw GVariantError(path: "", problem: "empty variant") }
        var nul = r.upperBound - 1
        while nul > r.lowerBound && b[nul] != 0 { nul -= 1 }
        guard b[nul] == 0 else { throw GVariantError(path: "", problem: "variant has no type string separator") }
        var pos = nul + 1
        let typeBytes = b[(nul + 1)..<r.upperBound]
        let t: GVariantType
        do {
            t = try GVariantType.scan(typeBytes, &pos, depth: depth + 1)
        } catch {
            throw GVariantError(path: "", problem: "variant type string: \(error.problem)")
        }
        guard pos == r.upperBound else {
            throw GVariantError(path: "", problem: "variant type string has trailing characters")
        }
        let childRange = r.lowerBound..<nul
        if let fixed = t.fixedSize, fixed != childRange.count {
            throw GVariantError(path: "", problem: "variant holds \(childRange.count) bytes for fixed-size type \(t.typeString) of \(fixed)")
        }
        return (t, childRange)
    }

    /// Refuses any serialization of `type` in `b[r]` that is not in normal form.
    static func checkNormal(_ type: GVariantType, _ b: [UInt8], _ r: Range<Int>, depth: Int) throws(GVariantError) {
        guard r.lowerBound >= 0, r.upperBound <= b.count, r.lowerBound <= r.upperBound else {
            throw GVariantError(path: "", problem: "value out of bounds")
        }
        guard depth < GVariantType.maxDepth else {
            throw GVariantError(path: "", problem: "nested deeper than \(GVariantType.maxDepth)")
        }
        let size = r.count
        switch type.kind {
        case .boolean:
            guard size == 1 else { throw GVariantError(path: "", problem: "boolean must be 1 byte, found \(size)") }
            guard b[r.lowerBound] < 2 else { throw GVariantError(path: "", problem: "boolean byte is \(b[r.lowerBound]), not 0 or 1") }
        case .byte, .int16, .uint16, .int32, .uint32, .handle, .int64, .uint64, .double:
            guard size == type.fixedSize! else {
                throw GVariantError(path: "", problem: "\(type.typeString) must be \(type.fixedSize!) bytes, found \(size)")
            }
        case .string, .objectPath, .signature:
            try checkString(type, b, r)
        case .variant:
            let (t, cr) = try variantParts(b, r, depth: depth)
            do { try checkNormal(t, b, cr, depth: depth + 1) }
            catch { throw error.prefixed("<\(t.typeString)>") }
        case .maybe:
            if size == 0 { return }
            let element = type.children[0]
            if let fixed = element.fixedSize {
                guard size == fixed else { throw GVariantError(path: "", problem: "maybe of \(size) bytes for fixed-size \(element.typeString)") }
                try checkNormal(element, b, r, depth: depth + 1)
            } else {
                guard b[r.upperBound - 1] == 0 else { throw GVariantError(path: "", problem: "maybe value lacks its trailing zero byte") }
                try checkNormal(element, b, r.lowerBound..<(r.upperBound - 1), depth: depth + 1)
            }
        case .array:
            let element = type.children[0]
            if let fixed = element.fixedSize {
                guard size % fixed == 0 else {
                    throw GVariantError(path: "", problem: "array of \(size) bytes is not a multiple of its element size \(fixed)")
                }
                // Byte arrays (ay) are always normal; skip the per-byte loop.
                if element.kind == .byte { return }
                var i = 0, start = r.lowerBound
                while start < r.upperBound {
                    do { try checkNormal(element, b, start..<(start + fixed), depth: depth + 1) }
                    catch { throw error.prefixed("[\(i)]") }
                    start += fixed; i += 1
                }
                return
            }
            if size == 0 { return }
            let f = try arrayFrame(b, r)
            guard totalSize(body: f.lastEnd, offsets: f.count).total == size else {
                throw GVariantError(path: "", problem: "array framing offsets of \(f.offsetSize) bytes are wider than needed (not normal form)")
            }
            let offsets = r.lowerBound + f.lastEnd
            var offset = 0
            let stringKeyed = element.kind == .dictEntry && element.children[0].kind == .string
            for i in 0..<f.count {
                let end = readOffset(b, offsets + i * f.offsetSize, f.offsetSize)
                guard end >= offset, end <= f.lastEnd else {
                    throw GVariantError(path: "[\(i)]", problem: "element framing offset \(end) is out of order or out of bounds (start \(offset), limit \(f.lastEnd))")
                }
                while offset & (element.alignment - 1) != 0 {
                    guard offset < end, b[r.lowerBound + offset] == 0 else {
                        throw GVariantError(path: "[\(i)]", problem: "bad alignment padding before element")
                    }
                    offset += 1
                }
                let er = (r.lowerBound + offset)..<(r.lowerBound + end)
                do { try checkNormal(element, b, er, depth: depth + 1) }
                catch {
                    // Name dictionary entries by their key when it is readable.
                    if stringKeyed, let key = readableKey(element, b, er) { throw error.prefixed("['\(key)']") }
                    throw error.prefixed("[\(i)]")
                }
                offset = end
            }
        case .tuple, .dictEntry:
            _ = try tupleMemberRanges(type, b, r, depth: depth, check: true)
        }
    }

    /// The key of a `{s…}` entry for error messages, when it can be read safely.
    static func readableKey(_ entry: GVariantType, _ b: [UInt8], _ r: Range<Int>) -> String? {
        guard let ranges = try? tupleMemberRanges(entry, b, r, depth: 0, check: false),
              let kr = ranges.first, !kr.isEmpty, b[kr.upperBound - 1] == 0,
              let s = String(validating: b[kr.lowerBound..<(kr.upperBound - 1)], as: UTF8.self),
              !s.utf8.contains(0), s.utf8.count <= 200 else { return nil }
        return s
    }

    static func checkString(_ type: GVariantType, _ b: [UInt8], _ r: Range<Int>) throws(GVariantError) {
        let what = type.kind == .string ? "string" : type.kind == .objectPath ? "object path" : "signature"
        guard !r.isEmpty else { throw GVariantError(path: "", problem: "\(what) is empty (no terminating zero byte)") }
        guard b[r.upperBound - 1] == 0 else { throw GVariantError(path: "", problem: "\(what) is not zero-terminated") }
        let body = b[r.lowerBound..<(r.upperBound - 1)]
        if body.contains(0) { throw GVariantError(path: "", problem: "\(what) contains a zero byte") }
        guard String(validating: body, as: UTF8.self) != nil else {
            throw GVariantError(path: "", problem: "\(what) is not valid UTF-8")
        }
        switch type.kind {
        case .objectPath:
            guard isObjectPath(body) else { throw GVariantError(path: "", problem: "invalid object path") }
        case .signature:
            var pos = body.startIndex
            while pos < body.endIndex {
                do { _ = try GVariantType.scan(body, &pos, depth: 0) }
                catch { throw GVariantError(path: "", problem: "invalid signature: \(error.problem)") }
            }
        default: break
        }
    }

    static func isObjectPath(_ s: ArraySlice<UInt8>) -> Bool {
        guard s.first == UInt8(ascii: "/") else { return false }
        if s.count == 1 { return true }
        var previousSlash = true
        for c in s.dropFirst() {
            if c == UInt8(ascii: "/") {
                if previousSlash { return false }
                previousSlash = true
            } else {
                let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x5f
                if !ok { return false }
                previousSlash = false
            }
        }
        return !previousSlash
    }
}
