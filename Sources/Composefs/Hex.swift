import CairnSystem

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

// (`hexValue`, `hexDecode` and `bytesFromHex` come from CairnSystem too.)

/// Backing-object path for a digest: "xx/<62 hex>" (spec §12).
public func objectPath(forDigest digest: [UInt8]) -> [UInt8] {
    var hex = hexEncode(digest)
    hex.insert(0x2f, at: 2)
    return hex
}
