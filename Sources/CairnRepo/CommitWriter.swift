import COSTree
import CLibArchive
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// A metadata entry given on the command line.
public enum MetadataInput: Sendable {
    /// `--add-metadata-string KEY=VALUE`: a plain string.
    case string(String)
    /// `--add-metadata KEY=VALUE`: VALUE in GVariant text format.
    case gvariantText(String)
    /// A byte string (`ay`), such as a digest.
    case bytes([UInt8])
}

public enum ParentChoice: Sendable {
    /// The commit the branch points at now, if any.
    case branchHead
    case none
    case rev(String)
}

public struct CommitProgress: Sendable {
    public var entries: Int
    public var bytes: UInt64
    public var path: String
}

public struct CommitOptions {
    public var branch: String
    public var subject = ""
    public var body = ""
    public var metadata: [(key: String, value: MetadataInput)] = []
    public var ownerUID: UInt32?
    public var ownerGID: UInt32?
    public var canonicalPermissions = false
    public var noXattrs = false
    public var parent: ParentChoice = .branchHead
    /// Keep a top-level /etc where it is instead of committing it as /usr/etc.
    public var keepEtc = false
    /// Leave device nodes, fifos and sockets out instead of failing.
    public var skipSpecial = false
    /// Seconds since the epoch for the commit; nil means now.
    public var timestamp: UInt64?
    /// Called now and then while files are read.
    public var progress: ((CommitProgress) -> Void)?
    /// Messages for the user (stderr), such as the /etc move.
    public var notice: (String) -> Void = { _ in }
    /// Record the fs-verity digest of the commit's composefs image as
    /// `ostree.composefs.digest.v0`, like `ostree commit --generate-composefs-metadata`.
    public var composefsDigest = true
    /// Signs the new commit (its checksum) inside the transaction, before
    /// the branch moves: a failure aborts the commit, so the branch never
    /// points at an unsigned commit.
    public var sign: ((Repository, String) throws -> Void)?

    public init(branch: String) { self.branch = branch }
}

public struct CommitResult: Sendable {
    public var checksum: String
    public var entries: Int
    public var bytes: UInt64
    public var skippedSpecial: [String]
    public var skippedSpecialCount: Int
}

/// State shared with libostree's commit filter callback.
final class CommitFilterState {
    var options: CommitOptions
    /// Prefix that turns callback paths into paths of the committed tree.
    var prefix = ""
    /// Paths (as the callback names them) to leave out of this pass.
    var skip: Set<String> = []
    var entries = 0
    var bytes: UInt64 = 0
    var lastPath = ""
    /// The OstreeRepoCommitModifierFlags in use.
    var modifierFlags: UInt32 = 0
    var lastReport: UInt64 = 0
    /// Xattrs of archive entries by committed path ("/usr/etc/x").
    var archiveXattrs: [String: [Xattr]] = [:]

    init(options: CommitOptions) { self.options = options }

    func apply(_ rawPath: String, _ info: OpaquePointer) -> OstreeRepoCommitFilterResult {
        if skip.contains(rawPath) { return OSTREE_REPO_COMMIT_FILTER_SKIP }
        let path = prefix.isEmpty ? rawPath : (rawPath == "/" ? prefix : prefix + rawPath)
        lastPath = path
        let type = g_file_info_get_attribute_uint32(info, "unix::mode") & S_IFMT
        if type != S_IFREG && type != S_IFLNK && type != S_IFDIR {
            return OSTREE_REPO_COMMIT_FILTER_SKIP  // counted by the pre-scan; refused there unless skipped
        }
        entries += 1
        if g_file_info_get_file_type(info) == G_FILE_TYPE_REGULAR {
            bytes += UInt64(max(0, g_file_info_get_size(info)))
        }
        if let uid = options.ownerUID { g_file_info_set_attribute_uint32(info, "unix::uid", uid) }
        if let gid = options.ownerGID { g_file_info_set_attribute_uint32(info, "unix::gid", gid) }
        if let progress = options.progress {
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let now = UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
            if now - lastReport >= 100 {
                lastReport = now
                progress(CommitProgress(entries: entries, bytes: bytes, path: path))
            }
        }
        return OSTREE_REPO_COMMIT_FILTER_ALLOW
    }
}

private let commitFilter: OstreeRepoCommitFilter = { _, path, info, user in
    let state = Unmanaged<CommitFilterState>.fromOpaque(user!).takeUnretainedValue()
    return state.apply(String(cString: path!), info!)
}

private let archiveXattrCallback: OstreeRepoCommitModifierXattrCallback = { _, path, _, user in
    let state = Unmanaged<CommitFilterState>.fromOpaque(user!).takeUnretainedValue()
    let xattrs = state.archiveXattrs[String(cString: path!)] ?? []
    return makeXattrVariant(xattrs)
}

/// Builds an `a(ayay)` of xattrs (names as NUL-terminated bytestrings, as ostree stores them).
func makeXattrVariant(_ xattrs: [Xattr]) -> OpaquePointer {
    let type = g_variant_type_new("a(ayay)")
    defer { g_variant_type_free(type) }
    let builder = g_variant_builder_new(type)!
    defer { g_variant_builder_unref(builder) }
    for x in xattrs {
        let name = byteStringVariant(x.name + [0])
        let value = byteStringVariant(x.value)
        var children: [OpaquePointer?] = [name, value]
        g_variant_builder_add_value(builder, g_variant_new_tuple(&children, 2))
    }
    return g_variant_ref_sink(g_variant_builder_end(builder))
}

/// A new floating `ay` holding `bytes`.
func byteStringVariant(_ bytes: [UInt8]) -> OpaquePointer {
    bytes.withUnsafeBytes { buf in
        g_variant_new_fixed_array(g_variant_type_checked_("y"), buf.baseAddress, gsize(bytes.count), 1)
    }
}

/// Device nodes, fifos and sockets a tree holds.
struct SpecialFiles {
    var count = 0
    /// The first few, by path relative to the source.
    var first: [String] = []
    /// Every directory holding one at any depth, relative to the source
    /// ([] for the source itself, "/usr" below it).
    var directories: Set<[UInt8]> = []
}

/// What a pre-scan of an archive found.
private struct ArchiveScan {
    var hasEtc = false
    var hasUsrEtc = false
    var xattrs: [String: [Xattr]] = [:]
}

extension Repository {
    /// Commits a directory or a tar archive (plain, gzip, xz or zstd) as a
    /// new commit on `options.branch`. The ref moves only when everything
    /// was written; on any failure the transaction is aborted.
    public func commit(source: String, options: CommitOptions) throws -> CommitResult {
        try Repository.validateRef(options.branch)
        var st = stat()
        guard stat(source, &st) == 0 else {
            throw RepoError("reading source \(source)", String(cString: strerror(errno)))
        }
        let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        guard isDirectory || (st.st_mode & S_IFMT) == S_IFREG else {
            throw RepoError("reading source \(source)", "neither a directory nor a tar archive")
        }

        let special = isDirectory ? try Self.findSpecialFiles(source) : SpecialFiles()
        if special.count > 0 && !options.skipSpecial {
            let more = special.count > special.first.count ? ", ..." : ""
            throw RepoError("committing \(source)", "\(special.count) device node(s), fifo(s) or socket(s) cannot be stored: "
                            + special.first.joined(separator: ", ") + more + " (--skip-special leaves them out)")
        }

        let parent: String?
        switch options.parent {
        case .none: parent = nil
        case .branchHead: parent = try resolveRef(options.branch)
        case .rev(let rev): parent = try resolve(rev)
        }

        var flags = OSTREE_REPO_COMMIT_MODIFIER_FLAGS_NONE.rawValue
        if options.canonicalPermissions { flags |= OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue }
        if options.noXattrs { flags |= OSTREE_REPO_COMMIT_MODIFIER_FLAGS_SKIP_XATTRS.rawValue }

        let state = CommitFilterState(options: options)
        state.modifierFlags = flags
        let unmanaged = Unmanaged.passRetained(state)
        defer { unmanaged.release() }
        let modifier = ostree_repo_commit_modifier_new(OstreeRepoCommitModifierFlags(flags), commitFilter,
                                                       unmanaged.toOpaque(), nil)!
        defer { ostree_repo_commit_modifier_unref(modifier) }

        let context = "committing \(source) to \(path)"
        try gcall(context) { ostree_repo_prepare_transaction(repo, nil, nil, $0) }
        var committed = false
        defer { if !committed { _ = ostree_repo_abort_transaction(repo, nil, nil) } }

        let mtree = ostree_mutable_tree_new()!
        defer { unref(mtree) }

        do {
            if isDirectory {
                try writeDirectory(source, into: mtree, modifier: modifier, state: state, special: special)
            } else {
                try writeArchive(source, into: mtree, modifier: modifier, state: state)
            }
        } catch let error as RepoError {
            let at = state.lastPath.isEmpty ? "" : " (at \(state.lastPath))"
            throw RepoError(context + at, error.reason)
        }

        var rootFile: OpaquePointer? = nil
        try gcall(context) { ostree_repo_write_mtree(repo, mtree, &rootFile, nil, $0) }
        defer { unref(rootFile) }
        let rootTree = String(cString: ostree_repo_file_tree_get_contents_checksum(rootFile))
        let rootMeta = String(cString: ostree_repo_file_tree_get_metadata_checksum(rootFile))

        var metadataEntries = options.metadata
        if options.composefsDigest {
            // The digest is a function of the tree alone: an unchanged tree
            // keeps its parent's, if the parent commit object is the one its
            // checksum names. Otherwise every backing object is hashed now:
            // the digest cache never decides what a commit (and so its
            // signature) pins.
            if let p = parent, let pc = try? commit(p), pc.rootTree == rootTree, pc.rootMeta == rootMeta,
               let digest = pc.composefsDigest, (try? rawCommitObject(p)).map({ commitAlteration($0, p) == nil }) == true {
                metadataEntries.append((MetadataKey.composefsDigest, .bytes(digest)))
            } else {
                let image = try composefsImage(rootTree: rootTree, rootMeta: rootMeta, digests: .recompute)
                metadataEntries.append((MetadataKey.composefsDigest, .bytes(fsVerityDigest(image))))
            }
        }
        let metadata = try Self.metadataVariant(metadataEntries)
        defer { g_variant_unref(metadata) }

        var out: UnsafeMutablePointer<CChar>? = nil
        if let ts = options.timestamp {
            try gcall(context) { ostree_repo_write_commit_with_time(repo, parent, options.subject, options.body, metadata, rootFile, guint64(ts), &out, nil, $0) }
        } else {
            try gcall(context) { ostree_repo_write_commit(repo, parent, options.subject, options.body, metadata, rootFile, &out, nil, $0) }
        }
        let checksum = takeGString(out) ?? ""
        try options.sign?(self, checksum)
        CrashPoint.commitSigned.reach()
        ostree_repo_transaction_set_ref(repo, nil, options.branch, checksum)
        try gcall(context) { ostree_repo_commit_transaction(repo, nil, nil, $0) }
        committed = true
        return CommitResult(checksum: checksum, entries: state.entries, bytes: state.bytes,
                            skippedSpecial: special.first, skippedSpecialCount: special.count)
    }

    /// Walks to (creating as needed) a subdirectory of `mtree`; a directory
    /// created here gets the metadata of `mtree` itself.
    func ensureDirectory(_ components: [String], in mtree: OpaquePointer) throws -> OpaquePointer {
        var dir: OpaquePointer = g_object_ref(UnsafeMutableRawPointer(mtree)).map { OpaquePointer($0) }!
        for name in components {
            var sub: OpaquePointer? = nil
            let meta = ostree_mutable_tree_get_metadata_checksum(dir)
            do {
                try gcall("creating /\(components.joined(separator: "/"))") { ostree_mutable_tree_ensure_dir(dir, name, &sub, $0) }
            } catch {
                unref(dir)
                throw error
            }
            if ostree_mutable_tree_get_metadata_checksum(sub) == nil, let meta {
                ostree_mutable_tree_set_metadata_checksum(sub, meta)
            }
            unref(dir)
            dir = sub!
        }
        return dir
    }

    func isDirectory(_ path: String) -> Bool {
        guard let st = try? FileSystem.lstat(Array(path.utf8)) else { return false }
        return (st.st_mode & S_IFMT) == S_IFDIR
    }

    private func writeArchive(_ source: String, into mtree: OpaquePointer, modifier: OpaquePointer,
                              state: CommitFilterState) throws {
        let scan = try Self.scanArchive(source, keepXattrs: !state.options.noXattrs)
        let convention = !state.options.keepEtc && scan.hasEtc && !scan.hasUsrEtc
        if convention {
            state.options.notice("committing /etc as /usr/etc (ostree convention; --keep-etc keeps it in place)")
        }
        var xattrs = scan.xattrs
        if convention {
            // The callback sees translated paths.
            xattrs = Dictionary(uniqueKeysWithValues: xattrs.map { key, value in
                (key == "/etc" || key.hasPrefix("/etc/") ? "/usr" + key : key, value)
            })
        }
        state.archiveXattrs = xattrs
        if !state.options.noXattrs {
            ostree_repo_commit_modifier_set_xattr_callback(modifier, archiveXattrCallback, nil,
                                                           Unmanaged.passUnretained(state).toOpaque())
        }
        try Self.withArchive(source) { archive in
            var opts = OstreeRepoImportArchiveOptions()
            opts.autocreate_parents = 1
            opts.use_ostree_convention = convention ? 1 : 0
            try gcall("importing archive \(source)") {
                ostree_repo_import_archive_to_mtree(repo, &opts, UnsafeMutableRawPointer(archive), mtree, modifier, nil, $0)
            }
        }
    }

    private static func withArchive<R>(_ source: String, _ body: (OpaquePointer) throws -> R) throws -> R {
        let a = archive_read_new()!
        defer { archive_read_free(a) }
        archive_read_support_filter_all(a)
        archive_read_support_format_tar(a)
        archive_read_support_format_gnutar(a)
        guard archive_read_open_filename(a, source, 1 << 16) == ARCHIVE_OK else {
            throw RepoError("opening archive \(source)", archiveError(a))
        }
        let result = try body(a)
        guard archive_read_close(a) == ARCHIVE_OK else {
            throw RepoError("reading archive \(source)", archiveError(a))
        }
        return result
    }

    private static func archiveError(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unknown archive error"
    }

    /// Reads the whole archive once: it must be complete and valid before
    /// anything is imported, and we learn its layout and xattrs.
    private static func scanArchive(_ source: String, keepXattrs: Bool) throws -> ArchiveScan {
        try withArchive(source) { a in
            var scan = ArchiveScan()
            var entry: OpaquePointer? = nil
            var count = 0
            while true {
                let r = archive_read_next_header(a, &entry)
                if r == ARCHIVE_EOF { break }
                guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let entry else {
                    throw RepoError("reading archive \(source)" + (count > 0 ? " after \(count) entries" : ""), archiveError(a))
                }
                count += 1
                let path = normalizedArchivePath(archive_entry_pathname(entry).map { String(cString: $0) } ?? "")
                if path == "/etc" || path.hasPrefix("/etc/") { scan.hasEtc = true }
                if path == "/usr/etc" || path.hasPrefix("/usr/etc/") { scan.hasUsrEtc = true }
                if keepXattrs {
                    var list: [Xattr] = []
                    archive_entry_xattr_reset(entry)
                    var name: UnsafePointer<CChar>? = nil
                    var value: UnsafeRawPointer? = nil
                    var size = 0
                    while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
                        guard let name else { continue }
                        let v = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
                        list.append(Xattr(name: Array(String(cString: name).utf8), value: v))
                    }
                    if !list.isEmpty { scan.xattrs[path] = list }
                }
                // Reading the data (not skipping it) is what detects truncation.
                guard archive_read_data_skip(a) == ARCHIVE_OK else {
                    throw RepoError("reading archive \(source) at \(path)", archiveError(a))
                }
            }
            if count == 0 { throw RepoError("reading archive \(source)", "no entries (empty or not a tar archive)") }
            return scan
        }
    }

    /// "./a/b/" → "/a/b", as libostree names archive entries for callbacks.
    static func normalizedArchivePath(_ raw: String) -> String {
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    /// Builds the commit's `a{sv}` metadata.
    static func metadataVariant(_ entries: [(key: String, value: MetadataInput)]) throws -> OpaquePointer {
        let type = g_variant_type_new("a{sv}")
        defer { g_variant_type_free(type) }
        let builder = g_variant_builder_new(type)!
        defer { g_variant_builder_unref(builder) }
        for (key, input) in entries {
            let value: OpaquePointer
            switch input {
            case .string(let s):
                value = g_variant_new_string(s)
            case .bytes(let b):
                value = byteStringVariant(b)
            case .gvariantText(let text):
                var error: UnsafeMutablePointer<GError>? = nil
                guard let parsed = g_variant_parse(nil, text, nil, nil, &error) else {
                    throw RepoError("metadata \(key)=\(text)", "not in GVariant text format (\(consumeGError(error))); "
                                    + "quote strings, e.g. \(key)='\"1.0\"', or use --add-metadata-string")
                }
                value = parsed
            }
            g_variant_builder_add_value(builder, g_variant_new_dict_entry(g_variant_new_string(key), g_variant_new_variant(value)))
        }
        return g_variant_ref_sink(g_variant_builder_end(builder))
    }
}
