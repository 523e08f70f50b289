import CairnSystem

/// A small GLib key file (`[group]` then `key=value` lines, the format of
/// ostree's origin and config files) for cairn's own state records (staged
/// deployments, boot failures, health results) and for reading a
/// repository's config. Read and written as GLib's GKeyFile reads and
/// writes them (the tests hold it to GLib), without linking GLib: status
/// reads these files and starts in milliseconds. Values are escaped as
/// GLib escapes them (newlines among them), so a check's output survives
/// intact; other control characters are kept as they are, as GLib does.
public struct StateFile: Sendable {
    public private(set) var groups: [(name: String, entries: [(key: String, value: String)])] = []

    public init() {}

    /// Parses `bytes` as g_key_file_load_from_data and g_key_file_get_string
    /// do: blank and `#` lines skipped, `[group]` lines, a `\r` before `\n` dropped, blanks
    /// before a key and around `=` trimmed, escapes `\s \n \t \r \\`, a
    /// repeated group merged and a repeated key's last value kept; a line
    /// ends at a NUL, and a key, value or group name that is not UTF-8 is
    /// left out (no lookup reaches it in GLib either). `path`
    /// names the file in errors.
    public init(parsing bytes: [UInt8], path: String) throws {
        func refuse(_ line: Int, _ why: String) -> RepoError { RepoError("reading \(path)", "line \(line): \(why)") }
        var current: Int? = nil
        var unreachable = false
        var number = 0
        for raw in bytes.split(separator: 0x0a, omittingEmptySubsequences: false) {
            number += 1
            var line = raw
            if let nul = line.firstIndex(of: 0) { line = line[..<nul] }
            if line.last == 0x0d { line.removeLast() }
            while let c = line.first, isASCIISpace(c) { line.removeFirst() }
            if line.isEmpty || line.first == 0x23 { continue }
            if line.first == 0x5b, let close = line.firstIndex(of: 0x5d),
               line[line.index(after: close)...].allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                // A group: `[name]`, then only blanks; GLib's name rules.
                let name = line[line.index(after: line.startIndex)..<close]
                guard !name.isEmpty, !name.contains(where: { $0 == 0x5b || $0 < 0x20 || $0 == 0x7f }) else {
                    throw refuse(number, "an invalid group name")
                }
                // GLib takes a name that is not UTF-8, whose keys no lookup reaches.
                guard String(validating: name, as: UTF8.self) != nil else { current = nil; unreachable = true; continue }
                unreachable = false
                let text = String(decoding: name, as: UTF8.self)
                if let i = groups.firstIndex(where: { $0.name == text }) { current = i } else {
                    groups.append((text, []))
                    current = groups.count - 1
                }
                continue
            }
            guard let eq = line.firstIndex(of: 0x3d), eq != line.startIndex else {
                throw refuse(number, "not a group header, key=value or comment")
            }
            if unreachable { continue }
            guard let g = current else { throw refuse(number, "a key before the first [group]") }
            var key = line[..<eq]
            while let c = key.last, isASCIISpace(c) { key.removeLast() }
            var value = line[line.index(after: eq)...]
            while let c = value.first, isASCIISpace(c) { value.removeFirst() }
            // GLib's key names: no `=` `[` `]`, except one `[locale]` suffix
            // (a translation, which lookups of the plain key never see).
            if let open = key.firstIndex(of: 0x5b) {
                let locale = key[key.index(after: open)...]
                guard open != key.startIndex, locale.last == 0x5d, !locale.dropLast().contains(where: { $0 == 0x5b || $0 == 0x5d }) else {
                    throw refuse(number, "an invalid key")
                }
                continue
            }
            guard !key.contains(0x5d), key.first != 0x20 else { throw refuse(number, "an invalid key") }
            guard String(validating: key, as: UTF8.self) != nil, String(validating: value, as: UTF8.self) != nil else { continue }
            let name = String(decoding: key, as: UTF8.self)
            let unescaped = Self.unescape(value)
            if let k = groups[g].entries.firstIndex(where: { $0.key == name }) {
                groups[g].entries[k].value = unescaped
            } else {
                groups[g].entries.append((name, unescaped))
            }
        }
    }

    /// GLib's unescaping, leniency included: an unknown escape stays as
    /// written and a backslash ending the value is dropped (GLib reports
    /// those, yet g_key_file_get_string returns this value, and libostree
    /// and older cairn used it).
    static func unescape(_ v: ArraySlice<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(v.count)
        var i = v.startIndex
        while i < v.endIndex {
            let c = v[i]
            i += 1
            guard c == 0x5c else { out.append(c); continue }
            guard i < v.endIndex else { break }
            switch v[i] {
            case 0x73: out.append(0x20)
            case 0x6e: out.append(0x0a)
            case 0x74: out.append(0x09)
            case 0x72: out.append(0x0d)
            case 0x5c: out.append(0x5c)
            default: out += [0x5c, v[i]]
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    public subscript(group: String, key: String) -> String? {
        get { groups.first { $0.name == group }?.entries.first { $0.key == key }?.value }
        set {
            let g: Int
            if let i = groups.firstIndex(where: { $0.name == group }) { g = i } else {
                guard newValue != nil else { return }
                groups.append((group, []))
                g = groups.count - 1
            }
            if let k = groups[g].entries.firstIndex(where: { $0.key == key }) {
                if let newValue { groups[g].entries[k].value = newValue } else { groups[g].entries.remove(at: k) }
            } else if let newValue {
                groups[g].entries.append((key, newValue))
            }
        }
    }

    /// The key file's text, as g_key_file_set_string and g_key_file_to_data
    /// write it: a blank line between groups; leading blanks, newlines,
    /// carriage returns and backslashes escaped; a value ends at a NUL, as
    /// a C string does. Group names must not hold `[`, `]` or control
    /// characters, nor keys `=`, `[` or whitespace: callers use fixed names.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        for (group, entries) in groups {
            if !out.isEmpty { out.append(0x0a) }
            out += Array("[\(group)]\n".utf8)
            for (key, value) in entries {
                out += Array(key.utf8)
                out.append(0x3d)
                var leading = true
                for c in value.utf8 {
                    if c == 0 { break }
                    switch c {
                    case 0x20 where leading: out += [0x5c, 0x73]
                    case 0x09 where leading: out += [0x5c, 0x74]
                    case 0x0a: out += [0x5c, 0x6e]
                    case 0x0d: out += [0x5c, 0x72]
                    case 0x5c: out += [0x5c, 0x5c]; leading = false
                    default: out.append(c); leading = false
                    }
                }
                out.append(0x0a)
            }
        }
        return out
    }
}

/// g_ascii_isspace: space, \t, \n, \v, \f, \r.
@inline(__always) func isASCIISpace(_ c: UInt8) -> Bool { c == 0x20 || (0x09...0x0d).contains(c) }
