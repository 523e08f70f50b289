/// The boot program's configuration: GLib key-file syntax, as upstream's
/// `prepare-root.conf`. Pure Swift, no system calls (fuzzed).

/// A refused configuration: file, 1-based line (nil for the whole file), cause.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int?
    public var message: String
    public init(file: String, line: Int?, _ message: String) {
        self.file = file
        self.line = line
        self.message = message
    }
    public var description: String { (line.map { "\(file):\($0)" } ?? file) + ": " + message }
}

/// A parsed key file: groups of `key = value`, values unescaped, with the
/// line each came from. Later duplicates win, as in GLib.
public struct KeyFileDocument: Sendable {
    public struct Entry: Sendable {
        public var group: String
        public var key: String
        public var value: String
        public var line: Int
    }
    public var entries: [Entry] = []

    public static let sizeLimit = 1 << 20

    /// GLib rules: `#` comments and blank lines, `[group]` headers, `key=value`
    /// with blanks around both trimmed, escapes \s \n \t \r \\ in values,
    /// `key[locale]` accepted (and ignored by lookups), UTF-8 only.
    public init(parsing bytes: [UInt8], file: String) throws(ConfigError) {
        guard bytes.count <= Self.sizeLimit else {
            throw ConfigError(file: file, line: nil, "larger than \(Self.sizeLimit) bytes")
        }
        var group: String? = nil
        var number = 0
        for raw in bytes.split(separator: 0x0a, omittingEmptySubsequences: false) {
            number += 1
            var line = raw
            while let c = line.first, isBlank(c) { line.removeFirst() }
            while let c = line.last, isBlank(c) || c == 0x0d { line.removeLast() }
            if line.isEmpty || line.first == 0x23 { continue }
            guard let text = String(validating: line, as: UTF8.self) else {
                throw ConfigError(file: file, line: number, "not valid UTF-8")
            }
            if line.contains(where: { $0 < 0x20 && $0 != 0x09 || $0 == 0x7f }) {
                throw ConfigError(file: file, line: number, "control character")
            }
            if line.first == 0x5b {
                guard line.last == 0x5d, line.count > 2 else {
                    throw ConfigError(file: file, line: number, "invalid group header \(printable(line))")
                }
                let name = line.dropFirst().dropLast()
                guard !name.contains(0x5b), !name.contains(0x5d) else {
                    throw ConfigError(file: file, line: number, "invalid group name \(printable(name))")
                }
                group = String(decoding: name, as: UTF8.self)
                continue
            }
            guard let eq = line.firstIndex(of: 0x3d) else {
                throw ConfigError(file: file, line: number, "not a group header, key=value or comment: \(printable(line))")
            }
            guard let g = group else {
                throw ConfigError(file: file, line: number, "key before the first [group]")
            }
            var key = line[..<eq]
            while let c = key.last, isBlank(c) { key.removeLast() }
            var value = line[(eq + 1)...]
            while let c = value.first, isBlank(c) { value.removeFirst() }
            guard !key.isEmpty else { throw ConfigError(file: file, line: number, "empty key") }
            if let open = key.firstIndex(of: 0x5b) {
                guard key.last == 0x5d, open > key.startIndex else {
                    throw ConfigError(file: file, line: number, "invalid key \(printable(key))")
                }
            } else if key.contains(0x5d) {
                throw ConfigError(file: file, line: number, "invalid key \(printable(key))")
            }
            let unescaped: String
            do { unescaped = try Self.unescape(value) } catch {
                throw ConfigError(file: file, line: number, "\(error.message) in the value of \(printable(key))")
            }
            _ = text
            entries.append(Entry(group: g, key: String(decoding: key, as: UTF8.self), value: unescaped, line: number))
        }
    }

    struct EscapeError: Error { var message: String }

    static func unescape(_ v: ArraySlice<UInt8>) throws(EscapeError) -> String {
        var out: [UInt8] = []
        var i = v.startIndex
        while i < v.endIndex {
            let c = v[i]
            if c != 0x5c { out.append(c); i += 1; continue }
            i += 1
            guard i < v.endIndex else { throw EscapeError(message: "backslash at end of line") }
            switch v[i] {
            case 0x73: out.append(0x20)
            case 0x6e: out.append(0x0a)
            case 0x74: out.append(0x09)
            case 0x72: out.append(0x0d)
            case 0x5c: out.append(0x5c)
            default: throw EscapeError(message: "invalid escape \\\(printable([v[i]]))")
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The last value of `key` in `group`.
    public func entry(_ group: String, _ key: String) -> Entry? {
        entries.last { $0.group == group && $0.key == key }
    }
}

@inline(__always) func isBlank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }

/// The settings of `prepare-root.conf` the program honours.
public struct PrepareRootConfig: Equatable, Sendable {
    public static let defaultKeyPath = "/etc/ostree/initramfs-root-binding.key"

    /// `[composefs] enabled`; upstream's default without configuration is maybe.
    public var composefs: ComposefsMode = .maybe
    /// `[composefs] keypath`: trusted ed25519 public keys, one per line.
    public var keyPath: String = PrepareRootConfig.defaultKeyPath
    /// `[composefs] revokedkeypath` (cairn): keys that must not verify.
    public var revokedKeyPath: String? = nil
    public var etcTransient = false
    public var rootTransient = false
    public var sysrootReadOnly = false
    /// The file the settings came from, nil for the built-in defaults.
    public var source: String? = nil

    public init() {}

    /// Settings from key-file text. Unknown groups and keys are ignored (as
    /// upstream does); a known key with a bad value is an error at its line.
    public init(parsing bytes: [UInt8], file: String) throws(ConfigError) {
        let doc = try KeyFileDocument(parsing: bytes, file: file)
        source = file
        func bool(_ g: String, _ k: String) throws(ConfigError) -> Bool? {
            guard let e = doc.entry(g, k) else { return nil }
            switch e.value.lowercased() {
            case "true", "yes", "1": return true
            case "false", "no", "0": return false
            default: throw ConfigError(file: file, line: e.line, "[\(g)] \(k) = \(printable(Array(e.value.utf8))) is not a boolean (true or false)")
            }
        }
        if let e = doc.entry("composefs", "enabled") {
            guard let m = ComposefsMode(parsing: Array(e.value.utf8)) else {
                throw ConfigError(file: file, line: e.line, "[composefs] enabled = \(printable(Array(e.value.utf8))) is not one of yes, no, maybe, signed, verity")
            }
            composefs = m
        }
        for (k, assign) in [("keypath", { (c: inout PrepareRootConfig, v: String) in c.keyPath = v }),
                            ("revokedkeypath", { (c: inout PrepareRootConfig, v: String) in c.revokedKeyPath = v })] {
            if let e = doc.entry("composefs", k) {
                guard e.value.hasPrefix("/") else {
                    throw ConfigError(file: file, line: e.line, "[composefs] \(k) = \(printable(Array(e.value.utf8))) is not an absolute path")
                }
                assign(&self, e.value)
            }
        }
        etcTransient = try bool("etc", "transient") ?? false
        rootTransient = try bool("root", "transient") ?? false
        sysrootReadOnly = try bool("sysroot", "readonly") ?? false
    }
}
