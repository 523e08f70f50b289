import COSTree

/// A small GLib key file (`[group]` then `key=value` lines, the format of
/// ostree's origin and config files) for cairn's own state records: staged
/// deployments, boot failures, health results. GLib escapes what a value
/// holds (newlines among it), so a check's output survives intact.
public struct StateFile: Sendable {
    public private(set) var groups: [(name: String, entries: [(key: String, value: String)])] = []

    public init() {}

    /// Parses `bytes`; `path` names the file in errors.
    public init(parsing bytes: [UInt8], path: String) throws {
        guard !bytes.isEmpty else { return }
        let file = g_key_file_new()
        defer { g_key_file_free(file) }
        try bytes.withUnsafeBufferPointer { buffer in
            try buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count) { text in
                try gcall("reading \(path)") { g_key_file_load_from_data(file, text, gsize(bytes.count), G_KEY_FILE_NONE, $0) }
            }
        }
        var groupCount: gsize = 0
        guard let names = g_key_file_get_groups(file, &groupCount) else { return }
        defer { g_strfreev(names) }
        for g in 0..<Int(groupCount) {
            let group = String(cString: names[g]!)
            var entries: [(String, String)] = []
            var keyCount: gsize = 0
            if let keys = g_key_file_get_keys(file, group, &keyCount, nil) {
                defer { g_strfreev(keys) }
                for k in 0..<Int(keyCount) {
                    let key = String(cString: keys[k]!)
                    var error: UnsafeMutablePointer<GError>? = nil
                    guard let value = takeGString(g_key_file_get_string(file, group, key, &error)) else {
                        throw RepoError("reading \(path)", "[\(group)] \(key): \(consumeGError(error))")
                    }
                    entries.append((key, value))
                }
            }
            groups.append((group, entries))
        }
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

    /// The key file's text. Group names must not hold `[`, `]` or control
    /// characters, nor keys `=`, `[` or whitespace: callers use fixed names.
    public func serialized() -> [UInt8] {
        let file = g_key_file_new()
        defer { g_key_file_free(file) }
        for (group, entries) in groups {
            for (key, value) in entries { g_key_file_set_string(file, group, key, value) }
        }
        var length: gsize = 0
        guard let text = g_key_file_to_data(file, &length, nil) else { return [] }
        defer { g_free(text) }
        return Array(UnsafeRawBufferPointer(start: text, count: Int(length)))
    }
}
