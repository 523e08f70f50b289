import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Committing a directory. libostree's own walk (`write_dfd_to_mtree`) does
/// the work wherever it can; it refuses device nodes, fifos and sockets
/// before any filter sees them, so directories holding those (with
/// `--skip-special`) are walked here, with the same object encoding and the
/// same modifier rules, and their clean subdirectories handed back to it.
extension Repository {
    func writeDirectory(_ source: String, into mtree: OpaquePointer, modifier: OpaquePointer,
                        state: CommitFilterState, special: SpecialFiles) throws {
        let walk = DirectoryWalk(repo: self, source: Array(source.utf8), modifier: modifier, state: state, special: special)
        let moveEtc = !state.options.keepEtc && isDirectory(source + "/etc") && !FileSystem.exists(Array((source + "/usr/etc").utf8))
        try walk.write(relative: [], committed: [], into: mtree, skipping: moveEtc ? [Array("etc".utf8)] : [])
        guard moveEtc else { return }
        state.options.notice("committing /etc as /usr/etc (ostree convention; --keep-etc keeps it in place)")
        let etc = try ensureDirectory(["usr", "etc"], in: mtree)
        defer { unref(etc) }
        try walk.write(relative: Array("/etc".utf8), committed: Array("/usr/etc".utf8), into: etc, skipping: [])
    }

    /// Device nodes, fifos and sockets below `source`, found from directory
    /// entry types (an lstat only where the filesystem gives none).
    static func findSpecialFiles(_ source: String) throws -> SpecialFiles {
        var found = SpecialFiles()
        var pending: [[UInt8]] = [[]]
        let root = Array(source.utf8)
        while let rel = pending.popLast() {
            let entries: [(name: [UInt8], type: UInt8)]
            do {
                entries = try FileSystem.directoryEntriesWithTypes(root + rel)
            } catch let e as SystemError {
                throw RepoError("reading \(displayPath(root + rel))", e.message)
            }
            for (name, dtype) in entries {
                let path = rel + [0x2f] + name
                var type = Int32(dtype)
                if type == DT_UNKNOWN {
                    guard let st = try? FileSystem.lstat(root + path) else { continue }
                    type = Int32((st.st_mode & S_IFMT) >> 12)  // DT_* equals S_IF* >> 12
                }
                switch type {
                case Int32(DT_DIR): pending.append(path)
                case Int32(DT_REG), Int32(DT_LNK): break
                default:
                    found.count += 1
                    if found.first.count < 5 { found.first.append(displayPath(path)) }
                    var dir = rel
                    while found.directories.insert(dir).inserted, let slash = dir.lastIndex(of: 0x2f) {
                        dir = Array(dir[..<slash])
                    }
                }
            }
        }
        found.first.sort()
        return found
    }
}

private struct DirectoryWalk {
    let repo: Repository
    let source: [UInt8]
    let modifier: OpaquePointer
    let state: CommitFilterState
    let special: SpecialFiles

    var flags: UInt32 { state.modifierFlags }

    /// Writes the source directory at `relative` into `mtree`; `committed`
    /// is its path in the commit. `skipping` names children left out.
    func write(relative: [UInt8], committed: [UInt8], into mtree: OpaquePointer, skipping: Set<[UInt8]>) throws {
        let path = source + relative
        state.prefix = String(decoding: committed, as: UTF8.self)
        state.skip = Set(skipping.map { "/" + String(decoding: $0, as: UTF8.self) })
        defer { state.skip = [] }
        guard special.directories.contains(relative) else {
            try gcall("reading \(displayPath(path))") {
                ostree_repo_write_dfd_to_mtree(repo.repo, AT_FDCWD, String(decoding: path, as: UTF8.self), mtree, modifier, nil, $0)
            }
            return
        }
        state.skip = []
        let display = committed.isEmpty ? "/" : String(decoding: committed, as: UTF8.self)
        guard let info = try modifiedInfo(path: path, committed: display) else { return }
        defer { unref(info) }
        let meta = ostree_create_directory_metadata(info, try xattrs(path))!
        var csum: UnsafeMutablePointer<guchar>? = nil
        try gcall("writing metadata of \(displayPath(path))") {
            ostree_repo_write_metadata(repo.repo, OSTREE_OBJECT_TYPE_DIR_META, nil, meta, &csum, nil, $0)
        }
        g_variant_unref(meta)
        ostree_mutable_tree_set_metadata_checksum(mtree, takeGString(ostree_checksum_from_bytes(csum)))
        g_free(csum)

        let entries: [(name: [UInt8], type: UInt8)]
        do {
            entries = try FileSystem.directoryEntriesWithTypes(path)
        } catch let e as SystemError {
            throw RepoError("reading \(displayPath(path))", e.message)
        }
        for (name, _) in entries where !skipping.contains(name) {
            let childPath = path + [0x2f] + name
            let st = try lstat(childPath)
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                var sub: OpaquePointer? = nil
                try gcall("adding \(displayPath(childPath))") {
                    ostree_mutable_tree_ensure_dir(mtree, String(decoding: name, as: UTF8.self), &sub, $0)
                }
                defer { unref(sub) }
                try write(relative: relative + [0x2f] + name, committed: committed + [0x2f] + name, into: sub!, skipping: [])
            case S_IFREG, S_IFLNK:
                try writeFile(childPath, name: name, committed: committed + [0x2f] + name, into: mtree)
            default:
                continue  // left out, as --skip-special asked; counted by the pre-scan
            }
        }
    }

    private func lstat(_ path: [UInt8]) throws -> stat {
        do {
            return try FileSystem.lstat(path)
        } catch let e as SystemError {
            throw RepoError("reading \(displayPath(path))", e.message)
        }
    }

    /// The file's attributes after the commit filter and the modifier
    /// flags, as libostree applies them; nil when the filter skips it.
    private func modifiedInfo(path: [UInt8], committed: String) throws -> OpaquePointer? {
        let st = try lstat(path)
        let info = g_file_info_new()!
        let type = st.st_mode & S_IFMT
        g_file_info_set_file_type(info, type == S_IFDIR ? G_FILE_TYPE_DIRECTORY : type == S_IFLNK ? G_FILE_TYPE_SYMBOLIC_LINK : G_FILE_TYPE_REGULAR)
        g_file_info_set_attribute_uint32(info, "unix::mode", st.st_mode)
        g_file_info_set_attribute_uint32(info, "unix::uid", st.st_uid)
        g_file_info_set_attribute_uint32(info, "unix::gid", st.st_gid)
        if type == S_IFREG { g_file_info_set_size(info, goffset(st.st_size)) }
        if type == S_IFLNK {
            let target: [UInt8]
            do { target = try FileSystem.readLink(path) } catch let e as SystemError {
                unref(info)
                throw RepoError("reading \(displayPath(path))", e.message)
            }
            g_file_info_set_symlink_target(info, String(decoding: target, as: UTF8.self))
        }
        if state.apply(committed, info) != OSTREE_REPO_COMMIT_FILTER_ALLOW {
            unref(info)
            return nil
        }
        if flags & OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue != 0 {
            let mode = g_file_info_get_attribute_uint32(info, "unix::mode")
            if type == S_IFREG { g_file_info_set_attribute_uint32(info, "unix::mode", mode & (S_IFREG | 0o755)) }
            if type == S_IFDIR { g_file_info_set_attribute_uint32(info, "unix::mode", mode & (S_IFDIR | 0o755)) }
            g_file_info_set_attribute_uint32(info, "unix::uid", 0)
            g_file_info_set_attribute_uint32(info, "unix::gid", 0)
        }
        return info
    }

    /// Xattrs in listing order, as libostree reads them; nil when the
    /// modifier leaves them out.
    private func xattrs(_ path: [UInt8]) throws -> OpaquePointer? {
        let leaveOut = OSTREE_REPO_COMMIT_MODIFIER_FLAGS_SKIP_XATTRS.rawValue | OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue
        if flags & leaveOut != 0 { return nil }
        do {
            let list = try FileSystem.listXattrs(path).map { Xattr(name: $0, value: try FileSystem.getXattr(path, name: $0)) }
            return makeXattrVariant(list)
        } catch let e as SystemError {
            throw RepoError("reading xattrs of \(displayPath(path))", e.message)
        }
    }

    private func writeFile(_ path: [UInt8], name: [UInt8], committed: [UInt8], into mtree: OpaquePointer) throws {
        guard let info = try modifiedInfo(path: path, committed: String(decoding: committed, as: UTF8.self)) else { return }
        defer { unref(info) }
        var input: UnsafeMutablePointer<GInputStream>? = nil
        if g_file_info_get_file_type(info) == G_FILE_TYPE_REGULAR {
            let fd: FileDescriptor
            do { fd = try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW) } catch let e as SystemError {
                throw RepoError("reading \(displayPath(path))", e.message)
            }
            input = UnsafeMutablePointer(OpaquePointer(g_unix_input_stream_new(fd.rawValue, 1)))
        }
        defer { unref(input) }
        let xattrs = try xattrs(path)
        defer { if let xattrs { g_variant_unref(xattrs) } }
        var object: UnsafeMutablePointer<GInputStream>? = nil
        var length: guint64 = 0
        try gcall("reading \(displayPath(path))") {
            ostree_raw_file_to_content_stream(input, info, xattrs, &object, &length, nil, $0)
        }
        defer { unref(object) }
        var csum: UnsafeMutablePointer<guchar>? = nil
        try gcall("writing \(displayPath(path))") {
            ostree_repo_write_content(repo.repo, nil, object, length, &csum, nil, $0)
        }
        let checksum = takeGString(ostree_checksum_from_bytes(csum))
        g_free(csum)
        try gcall("adding \(displayPath(path))") {
            ostree_mutable_tree_replace_file(mtree, String(decoding: name, as: UTF8.self), checksum, $0)
        }
    }
}
