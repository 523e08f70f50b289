import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// The storage modes of an ostree repository.
public enum RepoMode: String, CaseIterable, Sendable {
    case bare
    case bareUser = "bare-user"
    case bareUserOnly = "bare-user-only"
    case archive

    var ostree: OstreeRepoMode {
        switch self {
        case .bare: return OSTREE_REPO_MODE_BARE
        case .bareUser: return OSTREE_REPO_MODE_BARE_USER
        case .bareUserOnly: return OSTREE_REPO_MODE_BARE_USER_ONLY
        case .archive: return OSTREE_REPO_MODE_ARCHIVE
        }
    }

    init?(_ mode: OstreeRepoMode) {
        guard let m = RepoMode.allCases.first(where: { $0.ostree == mode }) else { return nil }
        self = m
    }
}

/// An ostree repository opened through libostree.
public final class Repository {
    let repo: OpaquePointer
    public let path: String

    private init(repo: OpaquePointer, path: String) {
        self.repo = repo
        self.path = path
    }

    deinit { unref(repo) }

    /// Opens an existing repository.
    public static func open(path: String) throws -> Repository {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw RepoError("opening repository \(path)", String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw RepoError("opening repository \(path)", "not a directory")
        }
        guard access(path + "/config", F_OK) == 0, access(path + "/objects", F_OK) == 0 else {
            throw RepoError("opening repository \(path)", "not an ostree repository (no config or objects/); create one with 'cairn init'")
        }
        let file = g_file_new_for_path(path)
        defer { unref(file) }
        let repo = ostree_repo_new(file)!
        do {
            try gcall("opening repository \(path)") { ostree_repo_open(repo, nil, $0) }
        } catch {
            unref(repo)
            throw error
        }
        return Repository(repo: repo, path: path)
    }

    /// Creates a repository (or opens it if one of the same mode exists).
    public static func create(path: String, mode: RepoMode) throws -> Repository {
        let file = g_file_new_for_path(path)
        defer { unref(file) }
        let repo = ostree_repo_new(file)!
        do {
            try gcall("creating repository \(path)") { ostree_repo_create(repo, mode.ostree, nil, $0) }
        } catch {
            unref(repo)
            throw error
        }
        return Repository(repo: repo, path: path)
    }

    public var mode: RepoMode { RepoMode(ostree_repo_get_mode(repo)) ?? .bare }

    /// A descriptor of the repository directory, owned by libostree.
    public var directoryDescriptor: FileDescriptor { FileDescriptor(rawValue: ostree_repo_get_dfd(repo)) }

    // MARK: Refs and revisions

    /// Validates a ref name as ostree does.
    public static func validateRef(_ ref: String) throws {
        guard (try? gcall("") { ostree_validate_rev(ref, $0) }) != nil else {
            throw RepoError("invalid ref name '\(ref)'", "")
        }
    }

    /// The commit checksum a ref, a checksum or a unique checksum prefix
    /// names (`ref^` and `ref^^` name parents, as in ostree).
    public func resolve(_ rev: String) throws -> String {
        if rev.count >= 4, rev.count < 64, rev.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) {
            var table: OpaquePointer? = nil
            if (try? gcall("") { ostree_repo_list_commit_objects_starting_with(repo, rev, &table, nil, $0) }) != nil, let table {
                defer { g_hash_table_unref(table) }
                let matches = g_hash_table_size(table)
                if matches > 1 { throw RepoError("resolving '\(rev)'", "prefix matches \(matches) commits") }
                if matches == 1 {
                    var iter = GHashTableIter()
                    var key: gpointer? = nil
                    g_hash_table_iter_init(&iter, table)
                    if g_hash_table_iter_next(&iter, &key, nil) != 0, let key {
                        let name = Variant(taking: g_variant_ref(OpaquePointer(key)))
                        return name.child(0).string
                    }
                }
            }
        }
        var out: UnsafeMutablePointer<CChar>? = nil
        try gcall("unknown ref or commit '\(rev)'") { ostree_repo_resolve_rev(repo, rev, 0, &out, $0) }
        return takeGString(out) ?? ""
    }

    /// The commit a ref points at, or nil when the ref does not exist.
    public func resolveRef(_ ref: String) throws -> String? {
        var out: UnsafeMutablePointer<CChar>? = nil
        try gcall("reading ref '\(ref)'") { ostree_repo_resolve_rev(repo, ref, 1, &out, $0) }
        return takeGString(out)
    }

    /// All refs with the commits they point at, sorted by name.
    public func refs() throws -> [(name: String, commit: String)] {
        var table: OpaquePointer? = nil
        try gcall("listing refs of \(path)") { ostree_repo_list_refs(repo, nil, &table, nil, $0) }
        guard let table else { return [] }
        defer { g_hash_table_unref(table) }
        var result: [(String, String)] = []
        var iter = GHashTableIter()
        var key: gpointer? = nil
        var value: gpointer? = nil
        g_hash_table_iter_init(&iter, table)
        while g_hash_table_iter_next(&iter, &key, &value) != 0 {
            result.append((String(cString: key!.assumingMemoryBound(to: CChar.self)),
                           String(cString: value!.assumingMemoryBound(to: CChar.self))))
        }
        return result.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
    }

    /// Points `ref` at `commit` (nil deletes it), immediately and atomically.
    public func setRef(_ ref: String, to commit: String?) throws {
        try gcall("updating ref '\(ref)'") { ostree_repo_set_ref_immediate(repo, nil, ref, commit, nil, $0) }
    }

    // MARK: Objects

    func loadVariant(_ type: OstreeObjectType, _ checksum: String, what: String) throws -> Variant {
        var v: OpaquePointer? = nil
        try gcall("loading \(what) \(checksum)") { ostree_repo_load_variant(repo, type, checksum, &v, $0) }
        return Variant(taking: v!)
    }

    /// Reads a commit object.
    public func commit(_ checksum: String) throws -> CommitInfo {
        let v = try loadVariant(OSTREE_OBJECT_TYPE_COMMIT, checksum, what: "commit")
        return CommitInfo(checksum: checksum, variant: v)
    }

    /// The raw serialized bytes of a commit object (what signatures cover).
    public func commitBytes(_ checksum: String) throws -> [UInt8] {
        try loadVariant(OSTREE_OBJECT_TYPE_COMMIT, checksum, what: "commit").data
    }

    /// Reads a dirtree object.
    public func dirTree(_ checksum: String) throws -> DirTree {
        let v = try loadVariant(OSTREE_OBJECT_TYPE_DIR_TREE, checksum, what: "dirtree")
        var files: [DirTree.FileEntry] = []
        let fv = v.child(0)
        for i in 0..<fv.childCount {
            let e = fv.child(i)
            files.append(.init(name: Array(e.child(0).string.utf8), checksum: hexString(e.child(1).bytes)))
        }
        var dirs: [DirTree.DirEntry] = []
        let dv = v.child(1)
        for i in 0..<dv.childCount {
            let e = dv.child(i)
            dirs.append(.init(name: Array(e.child(0).string.utf8), treeChecksum: hexString(e.child(1).bytes),
                              metaChecksum: hexString(e.child(2).bytes)))
        }
        return DirTree(files: files, directories: dirs)
    }

    /// Reads a dirmeta object.
    public func dirMeta(_ checksum: String) throws -> DirMeta {
        let v = try loadVariant(OSTREE_OBJECT_TYPE_DIR_META, checksum, what: "dirmeta")
        return DirMeta(uid: UInt32(bigEndian: v.child(0).uint32), gid: UInt32(bigEndian: v.child(1).uint32),
                       mode: UInt32(bigEndian: v.child(2).uint32), xattrs: Self.xattrs(v.child(3)))
    }

    static func xattrs(_ v: Variant) -> [Xattr] {
        (0..<v.childCount).map { i in
            let e = v.child(i)
            var name = e.child(0).bytes
            if name.last == 0 { name.removeLast() }  // bytestrings carry their NUL
            return Xattr(name: name, value: e.child(1).bytes)
        }
    }

    /// Reads the metadata of a file object (and, on request, its content).
    public func file(_ checksum: String) throws -> FileObject {
        var info: OpaquePointer? = nil
        var xattrs: OpaquePointer? = nil
        try gcall("loading file object \(checksum)") {
            ostree_repo_load_file(repo, checksum, nil, &info, &xattrs, nil, $0)
        }
        defer { unref(info) }
        let mode = g_file_info_get_attribute_uint32(info, "unix::mode")
        let target = g_file_info_get_symlink_target(info).map { Array(String(cString: $0).utf8) }
        return FileObject(checksum: checksum,
                          mode: mode,
                          uid: g_file_info_get_attribute_uint32(info, "unix::uid"),
                          gid: g_file_info_get_attribute_uint32(info, "unix::gid"),
                          size: UInt64(g_file_info_get_size(info)),
                          symlinkTarget: (mode & S_IFMT) == S_IFLNK ? target : nil,
                          xattrs: xattrs.map { Self.xattrs(Variant(taking: $0)) } ?? [])
    }

    /// Streams a regular file object's content to `body` in chunks.
    public func readContent(_ checksum: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var input: UnsafeMutablePointer<GInputStream>? = nil
        try gcall("opening file object \(checksum)") {
            ostree_repo_load_file(repo, checksum, &input, nil, nil, nil, $0)
        }
        guard let input else { return }  // symlinks have no content
        defer { unref(input) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            var error: UnsafeMutablePointer<GError>? = nil
            let n = buffer.withUnsafeMutableBytes { g_input_stream_read(input, $0.baseAddress, gsize($0.count), nil, &error) }
            if n < 0 { throw RepoError("reading file object \(checksum)", consumeGError(error)) }
            if n == 0 { return }
            try buffer.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
    }

    /// The loose path of a bare-mode file object, relative to `objects/`
    /// ("XX/<62 hex>.file"), as composefs payloads name it.
    public static func looseObjectPath(_ checksum: String) -> String {
        let c = Array(checksum)
        return String(c[0..<2]) + "/" + String(c[2...]) + ".file"
    }

    /// The detached metadata of a commit (an `a{sv}`), serialized, or nil.
    public func detachedMetadata(_ checksum: String) throws -> [UInt8]? {
        var v: OpaquePointer? = nil
        try gcall("reading detached metadata of \(checksum)") {
            ostree_repo_read_commit_detached_metadata(repo, checksum, &v, nil, $0)
        }
        guard let v else { return nil }
        return Variant(taking: v).data
    }
}

/// One extended attribute, as raw bytes.
public struct Xattr: Equatable, Sendable {
    public var name: [UInt8]
    public var value: [UInt8]
    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

public struct DirTree: Sendable {
    public struct FileEntry: Sendable {
        public var name: [UInt8]
        public var checksum: String
    }
    public struct DirEntry: Sendable {
        public var name: [UInt8]
        public var treeChecksum: String
        public var metaChecksum: String
    }
    public var files: [FileEntry]
    public var directories: [DirEntry]
}

public struct DirMeta: Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var mode: UInt32
    public var xattrs: [Xattr]
}

public struct FileObject: Sendable {
    public var checksum: String
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var size: UInt64
    public var symlinkTarget: [UInt8]?
    public var xattrs: [Xattr]
    public var isSymlink: Bool { symlinkTarget != nil }
}

extension Repository {
    /// A string value of the repository's config, nil when absent.
    public func configValue(group: String, key: String) -> String? {
        let config = ostree_repo_get_config(repo)
        guard let value = g_key_file_get_string(config, group, key, nil) else { return nil }
        defer { g_free(value) }
        return String(cString: value)
    }

    /// Sets (nil: removes) one value of the config, which libostree
    /// rewrites atomically; a group left empty goes too.
    public func setConfigValue(group: String, key: String, _ value: String?) throws {
        let config = ostree_repo_copy_config(repo)
        defer { g_key_file_unref(config) }
        if let value {
            g_key_file_set_string(config, group, key, value)
        } else {
            g_key_file_remove_key(config, group, key, nil)
            var remaining: gsize = 0
            if let left = g_key_file_get_keys(config, group, &remaining, nil) {
                g_strfreev(left)
                if remaining == 0 { g_key_file_remove_group(config, group, nil) }
            }
        }
        try gcall("writing \(path)/config") { ostree_repo_write_config(repo, config, $0) }
    }
}
