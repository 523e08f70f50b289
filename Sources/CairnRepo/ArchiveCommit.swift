import COSTree
import CLibArchive
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Committing a tar archive: libostree's importer
/// (`ostree_repo_import_archive_to_mtree`) does the work, after a pre-scan
/// that reads the whole archive once, before the transaction, and refuses
/// what the importer would fail on with "unknown error" or a bare file name
/// half-way through, or abort the process on (a hardlink target with `..`).

/// What the pre-scan of an archive found.
struct ArchiveScan {
    /// Commit /etc as /usr/etc (it has /etc, no /usr/etc, and no --keep-etc).
    var moveEtc = false
    /// Xattrs by committed path.
    var xattrs: [String: [Xattr]] = [:]
    var special = SpecialFiles()
    /// Committed paths of hardlinks to device nodes, fifos or sockets: the
    /// importer would look for their target in the tree, where a left-out
    /// special file is not.
    var linksToSpecial: Set<String> = []
}

/// As much of the tree an archive's entries build as the pre-scan needs:
/// every path's kind, and the entry that made it so.
struct ArchiveTree {
    enum Kind: Equatable {
        case directory, file, symlink, hardlink, special

        var name: String {
            switch self {
            case .directory: return "directory"
            case .file: return "regular file"
            case .symlink: return "symlink"
            case .hardlink: return "hardlink"
            case .special: return "device node, fifo or socket"
            }
        }
    }

    /// Names the archive in errors.
    let context: String
    /// Archive path ("/a/b") → kind and entry name; a parent that no entry
    /// names is a directory made by the first entry below it.
    private(set) var nodes: [String: (kind: Kind, entry: String)] = ["/": (.directory, ".")]
    /// Paths hardlinks name → the first hardlink entry naming them.
    private var linkTargets: [String: String] = [:]

    init(context: String) { self.context = context }

    private func refuse(_ reason: String) -> RepoError { RepoError(context, reason) }

    /// Adds the entry `entry` at `path`, a hardlink to `hardlink` if that is
    /// set; returns its kind (`.special` for a hardlink to a special file),
    /// or throws, naming the entries, what the importer could not take.
    mutating func add(entry: String, path: String, kind entryKind: Kind, hardlink: String?) throws(RepoError) -> Kind {
        var kind = entryKind
        var target: String? = nil
        if let hardlink {
            (kind, target) = try linkTarget(entry: entry, hardlink)
        }
        // The importer's filter leaves special files out before it looks at
        // the tree (or the scan refuses them): they clash with nothing.
        if kind == .special {
            if nodes[path] == nil { nodes[path] = (.special, entry) }
            return kind
        }
        if path == "/" {
            guard kind == .directory else { throw refuse("entry '\(entry)' is the root directory, but a \(kind.name)") }
            return kind
        }
        // Parents are made directories as needed; above the first that is
        // one already, all were checked when it was added.
        var parent = Self.parent(path)
        while true {
            if let node = nodes[parent], node.kind != .special {
                guard node.kind == .directory else {
                    throw refuse("entry '\(entry)' needs '\(parent)' to be a directory, but entry '\(node.entry)' before it made it a \(node.kind.name)")
                }
                break
            }
            nodes[parent] = (.directory, entry)
            parent = Self.parent(parent)
        }
        if let node = nodes[path], node.kind != .special {
            if (node.kind == .directory) != (kind == .directory) {
                throw refuse("entry '\(entry)' is a \(kind.name), but entry '\(node.entry)' before it made '\(path)' a \(node.kind.name)")
            }
            // The importer resolves hardlinks at the end: one to a path
            // named again would get the later content, not the one it was
            // made with.
            if kind != .directory, let link = linkTargets[path] {
                throw refuse("entry '\(entry)' replaces '\(path)', which the earlier hardlink entry '\(link)' names")
            }
            if kind == .directory { return kind }
        }
        nodes[path] = (kind, entry)
        if let target, linkTargets[target] == nil { linkTargets[target] = entry }
        return kind
    }

    /// The kind of a hardlink entry and its target's archive path. The
    /// target must be an earlier file or symlink entry (GNU tar records
    /// hardlinked symlinks this way): the importer asserts on `..` and
    /// cannot resolve a link to a link.
    private func linkTarget(entry: String, _ target: String) throws(RepoError) -> (Kind, String?) {
        let refusal = "hardlink entry '\(entry)' points at '\(target)'"
        if target.hasPrefix("/") {
            throw refuse(refusal + ", an absolute path; it must name an earlier entry of the archive")
        }
        if target.split(separator: "/").contains("..") {
            throw refuse(refusal + ", which goes up with '..'; it must name an earlier entry of the archive")
        }
        let path = Repository.normalizedArchivePath(target)
        guard let node = nodes[path] else {
            throw refuse(refusal + ", which no earlier entry of the archive is")
        }
        switch node.kind {
        case .file, .symlink: return (.hardlink, path)
        case .special: return (.special, nil)
        case .hardlink: throw refuse(refusal + ", itself a hardlink (entry '\(node.entry)'); it must name the file")
        case .directory: throw refuse(refusal + ", a directory (made by entry '\(node.entry)')")
        }
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }
}

extension Repository {
    func writeArchive(_ source: String, scan: ArchiveScan, into mtree: OpaquePointer, modifier: OpaquePointer,
                      state: CommitFilterState) throws {
        if scan.moveEtc {
            state.options.notice("committing /etc as /usr/etc (ostree convention; --keep-etc keeps it in place)")
        }
        state.archiveXattrs = scan.xattrs
        state.skip = scan.linksToSpecial
        if !state.options.noXattrs {
            ostree_repo_commit_modifier_set_xattr_callback(modifier, archiveXattrCallback, nil,
                                                           Unmanaged.passUnretained(state).toOpaque())
        }
        try Self.withArchive(source) { archive in
            var opts = OstreeRepoImportArchiveOptions()
            opts.autocreate_parents = 1
            opts.use_ostree_convention = scan.moveEtc ? 1 : 0
            try gcall("importing archive \(source)") {
                ostree_repo_import_archive_to_mtree(repo, &opts, UnsafeMutableRawPointer(archive), mtree, modifier, nil, $0)
            }
        }
    }

    /// Opens the archive for reading, with pax names read as UTF-8 (see
    /// withUTF8ArchiveNames).
    private static func withArchive<R>(_ source: String, _ body: (OpaquePointer) throws -> R) throws -> R {
        try withUTF8ArchiveNames { try openArchive(source, body) }
    }

    private static func openArchive<R>(_ source: String, _ body: (OpaquePointer) throws -> R) throws -> R {
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

    /// Reads the whole archive once, before anything is written: it must be
    /// complete, and every entry one the importer takes (see ArchiveTree);
    /// we learn its layout, xattrs and special files.
    static func scanArchive(_ source: String, keepXattrs: Bool, keepEtc: Bool) throws -> ArchiveScan {
        try withArchive(source) { a in
            let context = "reading archive \(source)"
            var scan = ArchiveScan()
            var tree = ArchiveTree(context: context)
            var xattrs: [String: [Xattr]] = [:]
            var specials: [String] = []
            var firstEtc: String? = nil
            var hasUsrEtc = false
            var entry: OpaquePointer? = nil
            var count = 0
            while true {
                let r = archive_read_next_header(a, &entry)
                if r == ARCHIVE_EOF { break }
                // The importer takes a warning (such as a name it cannot
                // convert) as an error, naming nothing.
                guard r == ARCHIVE_OK, let entry else {
                    let at = entry.flatMap { archive_entry_pathname($0) }.map { " at entry '\(displayName($0))'" }
                        ?? (count > 0 ? " after \(count) entries" : "")
                    throw RepoError(context + at, archiveError(a))
                }
                count += 1
                guard let raw = archive_entry_pathname(entry), let name = String(validatingCString: raw) else {
                    let shown = archive_entry_pathname(entry).map(displayName) ?? "#\(count)"
                    throw RepoError(context, "entry '\(shown)': the name is not valid UTF-8, which ostree requires")
                }
                if name.split(separator: "/").contains("..") {
                    throw RepoError(context, "entry '\(name)': '..' in the name would reach outside the tree")
                }
                var hardlink: String? = nil
                if let link = archive_entry_hardlink(entry) {
                    guard let target = String(validatingCString: link) else {
                        throw RepoError(context, "hardlink entry '\(name)' points at '\(displayName(link))', which is not valid UTF-8")
                    }
                    hardlink = target
                }
                let kind: ArchiveTree.Kind
                switch archive_entry_filetype(entry) & S_IFMT {
                case S_IFDIR: kind = .directory
                case S_IFREG: kind = .file
                case S_IFLNK: kind = .symlink
                default: kind = .special
                }
                // libostree stores the target as a GVariant string; an
                // invalid one comes out as a GLib critical and a broken link.
                if kind == .symlink, hardlink == nil, let target = archive_entry_symlink(entry),
                   String(validatingCString: target) == nil {
                    throw RepoError(context, "symlink entry '\(name)' points at '\(displayName(target))', which is not valid UTF-8, as ostree requires")
                }
                let path = normalizedArchivePath(name)
                let added = try tree.add(entry: name, path: path, kind: kind, hardlink: hardlink)
                if added == .special {
                    specials.append(path)
                    if hardlink != nil { scan.linksToSpecial.insert(path) }
                }
                if firstEtc == nil, path == "/etc" || path.hasPrefix("/etc/") { firstEtc = name }
                if path == "/usr/etc" || path.hasPrefix("/usr/etc/") { hasUsrEtc = true }
                if keepXattrs {
                    let list = archiveEntryXattrs(entry)
                    if !list.isEmpty { xattrs[path] = list }
                }
                // Skipping reads or seeks past the data, which is what finds a member cut short.
                guard archive_read_data_skip(a) == ARCHIVE_OK else {
                    throw RepoError(context + " at entry '\(name)'", archiveError(a))
                }
            }
            if count == 0 { throw RepoError(context, "no entries (empty or not a tar archive)") }

            scan.moveEtc = !keepEtc && firstEtc != nil && !hasUsrEtc
            if scan.moveEtc, let usr = tree.nodes["/usr"], usr.kind != .directory, usr.kind != .special {
                throw RepoError(context, "entry '\(usr.entry)' makes /usr a \(usr.kind.name), but entry '\(firstEtc!)' "
                                + "is committed below /usr/etc (ostree convention; --keep-etc keeps /etc in place)")
            }
            let committed = { (p: String) in scan.moveEtc && (p == "/etc" || p.hasPrefix("/etc/")) ? "/usr" + p : p }
            scan.xattrs = Dictionary(uniqueKeysWithValues: xattrs.map { (committed($0.key), $0.value) })
            scan.linksToSpecial = Set(scan.linksToSpecial.map(committed))
            specials.sort()
            scan.special.count = specials.count
            scan.special.first = Array(specials.prefix(5).map(committed))
            return scan
        }
    }

    /// An entry name for messages, invalid UTF-8 as \xNN.
    private static func displayName(_ raw: UnsafePointer<CChar>) -> String {
        displayPath(Array(UnsafeBufferPointer(start: raw, count: strlen(raw)).map { UInt8(bitPattern: $0) }))
    }

    /// "./a/b/" → "/a/b", as libostree names archive entries for callbacks.
    static func normalizedArchivePath(_ raw: String) -> String {
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }
}

/// Runs `body` with this thread's LC_CTYPE C.UTF-8, so that libarchive
/// reads pax names (UTF-8) as UTF-8 whatever the process's locale: in the C
/// locale (a program that never calls setlocale) it fails to convert any
/// non-ASCII name or link target ("Pathname can't be converted from UTF-8
/// to current locale"). Every tar reader of archives and image layers reads
/// inside it.
func withUTF8ArchiveNames<R>(_ body: () throws -> R) rethrows -> R {
    let utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", nil)
    let previous = utf8.map { uselocale($0) }
    defer {
        if let previous { uselocale(previous) }
        if let utf8 { freelocale(utf8) }
    }
    return try body()
}

/// An archive entry's xattrs (PAX `SCHILY.xattr.*` and the like), names as
/// libarchive gives them, values as bytes, in the archive's order.
func archiveEntryXattrs(_ entry: OpaquePointer?) -> [Xattr] {
    var list: [Xattr] = []
    archive_entry_xattr_reset(entry)
    var name: UnsafePointer<CChar>? = nil
    var value: UnsafeRawPointer? = nil
    var size = 0
    while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
        guard let name else { continue }
        let v = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        list.append(Xattr(name: Array(UnsafeRawBufferPointer(start: name, count: strlen(name))), value: v))
    }
    return list
}
