import COSTree
import CairnSystem
import Composefs
import Trust
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
    /// A string array (`as`), such as the ref binding.
    case strings([String])
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
    /// Record `ostree.ref-binding` (the branch and `bindRefs`), as `ostree
    /// commit` does unless given --no-bindings: a pull then refuses this
    /// commit under any other ref name.
    public var refBinding = true
    /// More refs the commit is bound to (`ostree commit --bind-ref`).
    public var bindRefs: [String] = []
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
    /// The commit modifier this state filters for, while committing.
    var modifier: OpaquePointer?
    /// File objects the tree writer stored, by checksum, with the digests
    /// it computed from their bytes: the composefs digest needs no second
    /// read of them.
    var contentFacts: [String: ContentFacts] = [:]

    init(options: CommitOptions) { self.options = options }

    func apply(_ path: String, _ info: OpaquePointer) -> OstreeRepoCommitFilterResult {
        if skip.contains(path) { return OSTREE_REPO_COMMIT_FILTER_SKIP }
        lastPath = path
        let type = g_file_info_get_attribute_uint32(info, "unix::mode") & S_IFMT
        if type != S_IFREG && type != S_IFLNK && type != S_IFDIR {
            return OSTREE_REPO_COMMIT_FILTER_SKIP  // counted by the pre-scan; refused there unless skipped
        }
        // Linux gives every symlink mode 0777 and a bare repository stores
        // real symlinks: one checksummed with the other mode an archive
        // may record fails fsck.
        if type == S_IFLNK { g_file_info_set_attribute_uint32(info, "unix::mode", S_IFLNK | 0o777) }
        entries += 1
        if g_file_info_get_file_type(info) == G_FILE_TYPE_REGULAR {
            bytes += UInt64(max(0, g_file_info_get_size(info)))
        }
        if let uid = options.ownerUID { g_file_info_set_attribute_uint32(info, "unix::uid", uid) }
        if let gid = options.ownerGID { g_file_info_set_attribute_uint32(info, "unix::gid", gid) }
        if let progress = options.progress {
            let now = UInt64(monotonicSeconds() * 1000)
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

let archiveXattrCallback: OstreeRepoCommitModifierXattrCallback = { _, path, _, user in
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
}

extension Repository {
    /// Commits a directory or a tar archive (plain, gzip, xz or zstd) as a
    /// new commit on `options.branch`. The ref moves only when everything
    /// was written; on any failure the transaction is aborted, and what it
    /// staged removed unless publishing had begun.
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

        let scan = isDirectory ? nil : try Self.scanArchive(source, keepXattrs: !options.noXattrs, keepEtc: options.keepEtc)
        let special = try scan?.special ?? Self.findSpecialFiles(source)
        if special.count > 0 && !options.skipSpecial {
            let more = special.count > special.first.count ? ", ..." : ""
            throw RepoError("committing \(source)", "\(special.count) device node(s), fifo(s) or socket(s) cannot be stored: "
                            + special.first.joined(separator: ", ") + more + " (--skip-special leaves them out)")
        }

        let context = "committing \(source) to \(path)"
        return try commitTree(options: options, context: context, annotatePath: true) { mtree, state in
            if let scan {
                try writeArchive(source, scan: scan, into: mtree, modifier: state.modifier!, state: state)
            } else {
                try writeDirectory(source, into: mtree, state: state)
            }
            return special
        }
    }

    /// Commits the tree `writeTree` fills (returning the special files it
    /// left out) in a clean transaction, with the options' parent,
    /// metadata, composefs digest and signatures.
    func commitTree(options: CommitOptions, context: String, annotatePath: Bool,
                    _ writeTree: (OpaquePointer, CommitFilterState) throws -> SpecialFiles) throws -> CommitResult {
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
        state.modifier = modifier
        defer { state.modifier = nil }

        return try inCleanTransaction(context) {
            try writeCommit(options: options, parent: parent, state: state, context: context,
                            annotatePath: annotatePath, writeTree: writeTree)
        }
    }

    /// Runs `body` in a libostree transaction that starts empty (a staging
    /// directory taken over from an earlier transaction still holds that
    /// one's objects: see Staging.swift) and is committed after it. When
    /// `body` fails, the staged objects are removed and the transaction
    /// aborted. When the commit itself fails, some objects may be in
    /// objects/ already; the rest, complete like them, stay staged for the
    /// next transaction to publish, which completes this one instead of
    /// leaving it half there.
    func inCleanTransaction<T>(_ context: String, _ body: () throws -> T) throws -> T {
        var resumed: gboolean = 0
        try gcall(context) { ostree_repo_prepare_transaction(repo, &resumed, nil, $0) }
        let result: T
        do {
            if resumed != 0, try !discardStagedObjects() {
                throw RepoError(context, "libostree resumed a staging directory that cannot be found under \(path)/tmp")
            }
            result = try body()
        } catch {
            throw abortTransaction(after: error)
        }
        do {
            try gcall(context) { ostree_repo_commit_transaction(repo, nil, nil, $0) }
        } catch {
            _ = ostree_repo_abort_transaction(repo, nil, nil)
            throw error
        }
        return result
    }

    /// Empties the transaction's staging directory, then aborts it; returns
    /// `error`, with a note if the staged objects could not be removed.
    func abortTransaction(after error: Error) -> Error {
        var result = error
        do {
            try discardStagedObjects()
        } catch let cleanup as RepoError {
            if var e = error as? RepoError {
                e.reason += (e.reason.isEmpty ? "" : "; ") + "also \(cleanup)"
                result = e
            }
        } catch {}
        _ = ostree_repo_abort_transaction(repo, nil, nil)
        return result
    }

    /// Stages the tree and the commit, and sets the branch in the transaction.
    private func writeCommit(options: CommitOptions, parent: String?, state: CommitFilterState, context: String,
                             annotatePath: Bool,
                             writeTree: (OpaquePointer, CommitFilterState) throws -> SpecialFiles) throws -> CommitResult {
        let mtree = ostree_mutable_tree_new()!
        defer { unref(mtree) }

        let special: SpecialFiles
        do {
            special = try writeTree(mtree, state)
        } catch let error as RepoError {
            let at = state.lastPath.isEmpty || !annotatePath ? "" : " (at \(state.lastPath))"
            throw RepoError(context + at, error.reason)
        }

        var rootFile: OpaquePointer? = nil
        try gcall(context) { ostree_repo_write_mtree(repo, mtree, &rootFile, nil, $0) }
        defer { unref(rootFile) }
        let rootTree = String(cString: ostree_repo_file_tree_get_contents_checksum(rootFile))
        let rootMeta = String(cString: ostree_repo_file_tree_get_metadata_checksum(rootFile))

        var metadataEntries = options.metadata
        if options.refBinding {
            // ostree's order: the given metadata, then the binding (sorted
            // by bytes, as strcmp does), then the composefs digest.
            let refs = ([options.branch] + options.bindRefs).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            metadataEntries.append((MetadataKey.refBinding, .strings(refs)))
        }
        if options.composefsDigest {
            // The digest is a function of the tree alone: an unchanged tree
            // keeps its parent's, if the parent commit object is the one its
            // checksum names. Otherwise every backing object is hashed now:
            // the digest cache never decides what a commit (and so its
            // signature) pins.
            if let p = parent, let pc = try? commit(p), pc.rootTree == rootTree, pc.rootMeta == rootMeta,
               let digest = pc.composefsDigest, (try? rawCommitObject(p)).map({ OstreeObject.alteration($0, p) == nil }) == true {
                metadataEntries.append((MetadataKey.composefsDigest, .bytes(digest)))
            } else {
                let facts = state.contentFacts
                let image = try composefsImage(rootTree: rootTree, rootMeta: rootMeta, digests: .recompute,
                                               known: facts.compactMapValues(\.digest), knownFiles: facts.mapValues(\.object))
                metadataEntries.append((MetadataKey.composefsDigest, .bytes(fsVerityDigest(image))))
            }
        }
        cacheDigests(state.contentFacts.compactMap { c, f in f.digest.map { (c, $0) } })
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

    /// Builds the commit's `a{sv}` metadata.
    static func metadataVariant(_ entries: [(key: String, value: MetadataInput)]) throws -> OpaquePointer {
        try vardict(entries.map { key, input in
            switch input {
            case .string(let s): return (key, .string(s))
            case .bytes(let b): return (key, .bytes(b))
            case .gvariantText(let text): return (key, .text(text))
            case .strings(let list): return (key, .strings(list))
            }
        })
    }
}
