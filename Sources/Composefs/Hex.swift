let hexDigits: [Character] = Array("0123456789abcdef")
private let hexBytes: [UInt8] = Array("0123456789abcdef".utf8)

// (`hexString` for text comes from CairnSystem.)

/// Lowercase hex of `bytes`, as ASCII bytes.
public func hexEncode(_ bytes: [UInt8]) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(hexBytes[Int(b >> 4)])
        out.append(hexBytes[Int(b & 15)])
    }
    return out
}

@inline(__always) func hexValue(_ c: UInt8) -> UInt8? {
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

public func hexDecode(_ text: String) -> [UInt8]? { hexDecode(Array(text.utf8)) }

/// Backing-object path for a digest: "xx/<62 hex>" (spec §12).
public func objectPath(forDigest digest: [UInt8]) -> [UInt8] {
    var hex = hexEncode(digest)
    hex.insert(0x2f, at: 2)
    return hex
}
