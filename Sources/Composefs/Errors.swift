/// An error from any part of the composefs module: a value with enough
/// context (path, dump line and field, image offset) to point at the cause.
public struct ComposefsError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case invalidDump      // dump text that cannot be parsed or is rejected
        case invalidTree      // a tree the writer cannot represent
        case invalidImage     // a malformed or hostile image
        case io               // a system call failed
        case mount            // mounting an image failed
        case digestMismatch   // an image is not the one expected
        case noVerity         // an image must have fs-verity and has none
    }

    public var kind: Kind
    public var message: String
    /// Path of the entry concerned (raw bytes), if known.
    public var path: [UInt8]?
    /// 1-based line number in a dump file.
    public var line: Int?
    /// Dump field name (PATH, SIZE, MODE, …) or structure field.
    public var field: String?
    /// Byte offset in an image.
    public var offset: Int?

    public init(_ kind: Kind, _ message: String, path: [UInt8]? = nil, line: Int? = nil,
                field: String? = nil, offset: Int? = nil) {
        self.kind = kind
        self.message = message
        self.path = path
        self.line = line
        self.field = field
        self.offset = offset
    }

    public var description: String {
        var s = ""
        if let line { s += "line \(line): " }
        if let field { s += "\(field): " }
        if let path { s += "\(escapeForDisplay(path)): " }
        if let offset { s += "at offset \(offset): " }
        return s + message
    }
}

/// Printable rendering of raw bytes for messages (non-printables as \xNN).
func escapeForDisplay(_ bytes: [UInt8]) -> String {
    var out = ""
    for b in bytes {
        if b >= 0x20 && b < 0x7f && b != 0x5c {
            out.unicodeScalars.append(Unicode.Scalar(b))
        } else {
            out += "\\x" + String(hexDigits[Int(b >> 4)]) + String(hexDigits[Int(b & 15)])
        }
    }
    return out
}
