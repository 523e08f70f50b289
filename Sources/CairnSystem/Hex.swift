/// Hex text of raw bytes.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// The value of one hex digit (either case), or nil.
@inline(__always) public func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: return c - 0x30
    case 0x61...0x66: return c - 0x61 + 10
    case 0x41...0x46: return c - 0x41 + 10
    default: return nil
    }
}

/// Parses hex text (either case); nil if the length is odd or a character is not hex.
public func hexDecode<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
    guard text.count % 2 == 0 else { return nil }
    var out = [UInt8]()
    out.reserveCapacity(text.count / 2)
    var it = text.makeIterator()
    while let a = it.next(), let b = it.next() {
        guard let h = hexValue(a), let l = hexValue(b) else { return nil }
        out.append(h << 4 | l)
    }
    return out
}

/// Bytes of hex text, or nil when it is not hex.
public func bytesFromHex(_ text: String) -> [UInt8]? { hexDecode(Array(text.utf8)) }
