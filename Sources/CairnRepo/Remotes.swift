import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// A remote as the repository config stores it (`[remote "NAME"]`), the
/// keys ostree reads: `url`, `contenturl`, `sign-verify`,
/// `verification-ed25519-key` (one inline key) or
/// `verification-ed25519-file` (a file of keys), `gpg-verify`, and any other
/// `--set KEY=VALUE`.
public struct Remote: Sendable {
    public var name: String
    public var url: String
    public var options: [(key: String, value: String)]

    public func option(_ key: String) -> String? { options.last { $0.key == key }?.value }

    func bool(_ key: String, default value: Bool) -> Bool {
        guard let v = option(key)?.lowercased() else { return value }
        return v == "true" || v == "1" || v == "yes"
    }

    /// Whether commits (and summaries) from this remote must carry a good
    /// ed25519 signature by one of its keys.
    public var signVerify: Bool { bool("sign-verify", default: false) }
    /// Whether the summary must be signed too: with `sign-verify`, unless
    /// `sign-verify-summary=false`. cairn checks it itself and never writes
    /// `sign-verify-summary=true`, which would make Debian's libostree
    /// (without ed25519) refuse to fetch the summary at all.
    public var signVerifySummary: Bool { signVerify && bool("sign-verify-summary", default: true) }
    public var contentURL: String? { option("contenturl") }
}

/// How a remote is added.
public struct RemoteOptions: Sendable {
    public var contentURL: String?
    /// Keys its commits must be signed by; nil with `signVerify` false.
    public var keys: [Ed25519PublicKey] = []
    /// The key file the keys came from: kept as ostree keeps it when it
    /// holds more than one key.
    public var keyFile: String?
    public var signVerify = true
    /// `--set KEY=VALUE`, written as given.
    public var extra: [(key: String, value: String)] = []
    public init() {}
}

extension Repository {
    static func validateRemoteName(_ name: String) throws {
        let ok = !name.isEmpty && name.count < 256 && !name.hasPrefix("-") && name.utf8.allSatisfy {
            (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e
        }
        guard ok else { throw RepoError("remote name '\(name)'", "use letters, digits, '.', '_' and '-'") }
    }

    /// Adds a remote to the repository config, as `ostree remote add` does.
    /// One key is stored inline (`verification-ed25519-key`, valid wherever
    /// the repository is mounted); several as the key file's path
    /// (`verification-ed25519-file`), as ostree stores them. OpenPGP
    /// verification is off: Debian's libostree would otherwise ask for it.
    public func addRemote(_ name: String, url: String, _ o: RemoteOptions) throws {
        try Self.validateRemoteName(name)
        try Self.validateURL(url, what: "url")
        if let c = o.contentURL { try Self.validateURL(c, what: "contenturl") }
        if o.signVerify && o.keys.isEmpty {
            throw RepoError("adding remote \(name)", "give the keys its commits are signed with (--sign-keys FILE), or --no-sign-verify")
        }
        if try remotes().contains(where: { $0.name == name }) {
            throw RepoError("adding remote \(name)", "a remote of that name exists; delete it first ('cairn remote delete \(name)')")
        }
        var entries: [(String, VariantValue)] = [("gpg-verify", .string("false")), ("gpg-verify-summary", .string("false"))]
        if let c = o.contentURL { entries.append(("contenturl", .string(c))) }
        entries.append(("sign-verify", .string(o.signVerify ? "true" : "false")))
        if o.signVerify {
            if o.keys.count == 1 {
                entries.append(("verification-ed25519-key", .string(o.keys[0].base64)))
            } else if let file = o.keyFile {
                entries.append(("verification-ed25519-file", .string(file)))
            }
        }
        for (k, v) in o.extra { entries.append((k, .string(v))) }
        let options = try vardict(entries)
        defer { g_variant_unref(options) }
        try gcall("adding remote \(name) to \(path)/config") { ostree_repo_remote_add(repo, name, url, options, nil, $0) }
    }

    static func validateURL(_ url: String, what: String) throws {
        let schemes = ["http://", "https://", "file://", "mirrorlist=http://", "mirrorlist=https://", "mirrorlist=file://"]
        guard schemes.contains(where: { url.hasPrefix($0) }), !url.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7f }) else {
            throw RepoError("\(what) '\(url)'", "not an http://, https:// or file:// URL (or mirrorlist= one of those)")
        }
    }

    public func deleteRemote(_ name: String) throws {
        guard try remotes().contains(where: { $0.name == name }) else { throw RepoError("remote \(name)", "no such remote in \(path)/config") }
        try gcall("deleting remote \(name) from \(path)/config") { ostree_repo_remote_delete(repo, name, nil, $0) }
    }

    /// The remotes of the repository config, by name.
    public func remotes() throws -> [Remote] {
        let config = ostree_repo_get_config(repo)
        var n: gsize = 0
        guard let groups = g_key_file_get_groups(config, &n) else { return [] }
        defer { g_strfreev(groups) }
        var result: [Remote] = []
        for i in 0..<Int(n) {
            let group = String(cString: groups[i]!)
            guard group.hasPrefix("remote \""), group.hasSuffix("\""), group.count > 9 else { continue }
            let name = String(group.dropFirst(8).dropLast())
            var count: gsize = 0
            var options: [(String, String)] = []
            var url = ""
            if let keys = g_key_file_get_keys(config, group, &count, nil) {
                defer { g_strfreev(keys) }
                for k in 0..<Int(count) {
                    let key = String(cString: keys[k]!)
                    let value = takeGString(g_key_file_get_value(config, group, key, nil)) ?? ""
                    if key == "url" { url = value } else { options.append((key, value)) }
                }
            }
            result.append(Remote(name: name, url: url, options: options))
        }
        return result.sorted { $0.name < $1.name }
    }

    public func remote(_ name: String) throws -> Remote {
        guard let r = try remotes().first(where: { $0.name == name }) else {
            throw RepoError("remote \(name)", "no such remote in \(path)/config; add it with 'cairn remote add \(name) URL'")
        }
        return r
    }

    /// The keys a remote's commits and summary must be signed by: the inline
    /// key, else those of its key file.
    public func remoteKeys(_ remote: Remote) throws -> [Ed25519PublicKey] {
        if let inline = remote.option("verification-ed25519-key") {
            guard let bytes = Base64.decode(inline), let key = Ed25519PublicKey(bytes: bytes) else {
                throw RepoError("remote \(remote.name)", "verification-ed25519-key '\(inline)' is not a base64 ed25519 public key")
            }
            return [key]
        }
        if let file = remote.option("verification-ed25519-file") {
            do { return try KeyFile.loadPublicKeys(path: file) } catch {
                throw RepoError("remote \(remote.name)", "verification-ed25519-file \(error.description)")
            }
        }
        return []
    }
}

/// A GVariant value for option dictionaries (`a{sv}`).
enum VariantValue {
    case string(String)
    case strings([String])
    case bool(Bool)
    case int32(Int32)
    case uint32(UInt32)
    case uint64(UInt64)
    case bytes([UInt8])
    /// GVariant text format, parsed (`--add-metadata KEY='"1.0"'`).
    case text(String)

    /// A new floating reference; `key` names it in errors.
    func make(key: String) throws -> OpaquePointer {
        switch self {
        case .text(let text):
            var error: UnsafeMutablePointer<GError>? = nil
            guard let parsed = g_variant_parse(nil, text, nil, nil, &error) else {
                throw RepoError("metadata \(key)=\(text)", "not in GVariant text format (\(consumeGError(error))); "
                                + "quote strings, e.g. \(key)='\"1.0\"', or use --add-metadata-string")
            }
            return parsed
        case .string(let s): return g_variant_new_string(s)
        case .bool(let b): return g_variant_new_boolean(b ? 1 : 0)
        case .int32(let v): return g_variant_new_int32(v)
        case .uint32(let v): return g_variant_new_uint32(v)
        case .uint64(let v): return g_variant_new_uint64(guint64(v))
        case .bytes(let b): return byteStringVariant(b)
        case .strings(let list):
            let copies = list.map { strdup($0) }
            defer { copies.forEach { free($0) } }
            var pointers: [UnsafePointer<gchar>?] = copies.map { UnsafePointer($0) }
            return g_variant_new_strv(&pointers, gssize(pointers.count))
        }
    }
}

/// An `a{sv}` of `entries`, sunk (the caller unrefs it).
func vardict(_ entries: [(String, VariantValue)]) throws -> OpaquePointer {
    let type = g_variant_type_new("a{sv}")
    defer { g_variant_type_free(type) }
    let builder = g_variant_builder_new(type)!
    defer { g_variant_builder_unref(builder) }
    for (key, value) in entries {
        g_variant_builder_add_value(builder, g_variant_new_dict_entry(g_variant_new_string(key), g_variant_new_variant(try value.make(key: key))))
    }
    return g_variant_ref_sink(g_variant_builder_end(builder))
}
