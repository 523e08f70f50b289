import COSTree
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// An open directory of the source tree, closed when the last walk step or
/// pending file that needs it is done.
final class DirectoryHandle: @unchecked Sendable {
    let fd: FileDescriptor
    init(_ fd: FileDescriptor) { self.fd = fd }
    deinit { fd.close() }
}

/// What a commit learnt of one file object while writing it: its metadata
/// and, for regular files with content, the fs-verity digest of the very
/// bytes its checksum covers. Both are functions of the checksum, so the
/// composefs image built from them equals the one built from the objects.
struct ContentFacts {
    var object: FileObject
    var digest: [UInt8]?
}

/// A regular file or symlink waiting to be hashed and stored.
private final class ContentJob: @unchecked Sendable {
    let directory: DirectoryHandle
    let name: [UInt8]
    /// `name` as the UTF-8 string libostree's tree stores.
    let treeName: String
    let path: [UInt8]
    let info: OpaquePointer
    let mtree: OpaquePointer
    let device: UInt64
    let inode: UInt64
    var checksum = ""
    var facts: ContentFacts?
    var error: RepoError?

    init(directory: DirectoryHandle, name: [UInt8], treeName: String, path: [UInt8], info: OpaquePointer, mtree: OpaquePointer, st: stat) {
        self.directory = directory
        self.name = name
        self.treeName = treeName
        self.path = path
        self.info = info
        self.mtree = OpaquePointer(g_object_ref(UnsafeMutableRawPointer(mtree)))!
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    deinit {
        unref(info)
        unref(mtree)
    }
}

/// The walk of a directory commit. Directories are read and filtered on the
/// calling thread (libostree's mutable tree and the commit filter are not
/// for threads); file contents go to all cores in batches.
final class DirectoryWriter {
    let repo: Repository
    let source: [UInt8]
    let state: CommitFilterState
    private(set) var facts: [String: ContentFacts] = [:]
    private var pending: [ContentJob] = []
    private var pendingDirectories = 0
    /// Files held in memory between the hashing pass and libostree's write;
    /// larger ones are read twice (libostree checks the second read against
    /// the checksum of the first).
    static let inMemoryLimit = 4 << 20

    init(repo: Repository, source: [UInt8], state: CommitFilterState) {
        self.repo = repo
        self.source = source
        self.state = state
    }

    private var flags: UInt32 { state.modifierFlags }
    private var keepsXattrs: Bool {
        flags & (OSTREE_REPO_COMMIT_MODIFIER_FLAGS_SKIP_XATTRS.rawValue | OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue) == 0
    }

    private func display(_ path: [UInt8]) -> String { displayPath(source + path) }

    func openDirectory(_ name: [UInt8], in parent: DirectoryHandle, path: [UInt8]) throws -> DirectoryHandle {
        do {
            return DirectoryHandle(try FileDescriptor.open(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, relativeTo: parent.fd))
        } catch let e as SystemError {
            throw RepoError("reading \(display(path))", e.message)
        }
    }

    /// Writes the directory `dir` (at `path` below the source; `committed`
    /// in the commit) into `mtree`, leaving out the children `skipping` names.
    func write(_ dir: DirectoryHandle, path: [UInt8], committed: [UInt8], into mtree: OpaquePointer, skipping: Set<[UInt8]>) throws {
        let st: stat
        do { st = try dir.fd.stat() } catch let e as SystemError { throw RepoError("reading \(display(path))", e.message) }
        guard let info = try modifiedInfo(st, committed: committed, path: path, symlinkTarget: nil) else { return }
        defer { unref(info) }
        let xattrs = keepsXattrs ? makeXattrVariant(try readXattrs(of: dir.fd, path: path)) : nil
        let meta = ostree_create_directory_metadata(info, xattrs)!
        if let xattrs { g_variant_unref(xattrs) }
        var csum: UnsafeMutablePointer<guchar>? = nil
        defer { g_free(csum) }
        do {
            try gcall("writing metadata of \(display(path))") {
                ostree_repo_write_metadata(repo.repo, OSTREE_OBJECT_TYPE_DIR_META, nil, meta, &csum, nil, $0)
            }
        } catch {
            g_variant_unref(meta)
            throw error
        }
        g_variant_unref(meta)
        ostree_mutable_tree_set_metadata_checksum(mtree, takeGString(ostree_checksum_from_bytes(csum)))

        let entries: [(name: [UInt8], type: UInt8)]
        do {
            entries = try FileSystem.directoryEntriesWithTypes([0x2e], relativeTo: dir.fd)
        } catch let e as SystemError {
            throw RepoError("reading \(display(path))", e.message)
        }
        var usesDirectory = false
        for (name, _) in entries where !skipping.contains(name) {
            let childPath = path + [0x2f] + name
            let childCommitted = committed + [0x2f] + name
            let cname = try utf8Name(name, path: childPath)
            let cst: stat
            do { cst = try FileSystem.lstat(name, relativeTo: dir.fd) } catch let e as SystemError {
                throw RepoError("reading \(display(childPath))", e.message)
            }
            switch cst.st_mode & S_IFMT {
            case S_IFDIR:
                var sub: OpaquePointer? = nil
                try gcall("adding \(display(childPath))") { ostree_mutable_tree_ensure_dir(mtree, cname, &sub, $0) }
                defer { unref(sub) }
                try write(try openDirectory(name, in: dir, path: childPath), path: childPath, committed: childCommitted, into: sub!, skipping: [])
            case S_IFREG, S_IFLNK:
                var target: [UInt8]? = nil
                if cst.st_mode & S_IFMT == S_IFLNK {
                    do { target = try FileSystem.readLink(name, relativeTo: dir.fd) } catch let e as SystemError {
                        throw RepoError("reading \(display(childPath))", e.message)
                    }
                }
                guard let info = try modifiedInfo(cst, committed: childCommitted, path: childPath, symlinkTarget: target) else { continue }
                pending.append(ContentJob(directory: dir, name: name, treeName: cname, path: childPath, info: info, mtree: mtree, st: cst))
                if !usesDirectory { usesDirectory = true; pendingDirectories += 1 }
                // Pending files keep their directories open: flush before
                // the descriptors run short.
                if pending.count >= 4096 || pendingDirectories >= 256 {
                    try flush()
                    usesDirectory = false
                }
            default:
                guard state.options.skipSpecial else {
                    throw RepoError(display(childPath), "a device node, fifo or socket cannot be stored (--skip-special leaves them out)")
                }
            }
        }
    }

    /// Hashes and stores every pending file on all cores, then adds them to
    /// their trees in walk order; the first error in that order is thrown.
    func flush() throws {
        let jobs = pending
        pending = []
        pendingDirectories = 0
        guard !jobs.isEmpty else { return }
        let wantDigests = state.options.composefsDigest
        let keepsXattrs = keepsXattrs
        parallelFor(jobs.count, threads: onlineProcessorCount()) { [self] i in
            do {
                try store(jobs[i], digest: wantDigests, xattrs: keepsXattrs)
            } catch let e as RepoError {
                jobs[i].error = e
            } catch {
                jobs[i].error = RepoError("writing \(display(jobs[i].path))", "\(error)")
            }
        }
        for job in jobs {
            if let e = job.error { throw e }
            try gcall("adding \(display(job.path))") { ostree_mutable_tree_replace_file(job.mtree, job.treeName, job.checksum, $0) }
            if let f = job.facts { facts[job.checksum] = f }
        }
    }

    /// One file: its xattrs and content read, its content checksum (sha256
    /// of ostree's file header and the content) and fs-verity digest
    /// computed in the same pass, and the object written unless the
    /// repository has it.
    private func store(_ job: ContentJob, digest wantDigest: Bool, xattrs keepsXattrs: Bool) throws {
        let isLink = g_file_info_get_file_type(job.info) == G_FILE_TYPE_SYMBOLIC_LINK
        let size = isLink ? 0 : Int(g_file_info_get_size(job.info))
        var fd: FileDescriptor? = nil
        defer { fd?.close() }
        var xattrList: [Xattr] = []
        if isLink {
            // No descriptor of a symlink itself carries its xattrs: name it
            // through the directory's descriptor, as libostree does.
            if keepsXattrs { xattrList = try readXattrs(ofLinkNamed: job.name, in: job.directory.fd, path: job.path) }
        } else {
            let opened: FileDescriptor
            do {
                opened = try FileDescriptor.open(job.name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, relativeTo: job.directory.fd)
            } catch let e as SystemError {
                throw RepoError("reading \(display(job.path))", e.message)
            }
            fd = opened
            let st = try opened.stat()
            guard st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_dev) == job.device, UInt64(st.st_ino) == job.inode else {
                throw RepoError("reading \(display(job.path))", "it was replaced while being committed")
            }
            if keepsXattrs { xattrList = try readXattrs(of: opened, path: job.path) }
        }
        let xattrs = keepsXattrs ? makeXattrVariant(xattrList) : nil
        defer { if let xattrs { g_variant_unref(xattrs) } }

        let header = try fileHeader(job.info, xattrs, path: job.path)
        let sha = SHA256Hasher()
        header.withUnsafeBytes { sha.update($0) }
        let verity = wantDigest && size > 0 ? FsVerityHasher() : nil
        var content: UnsafeMutableRawBufferPointer? = nil
        defer { content?.deallocate() }
        if let fd {
            if size <= Self.inMemoryLimit {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(size, 1), alignment: 16)
                content = buffer
                let got = try readContent(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), path: job.path)
                guard got == size else { throw RepoError("reading \(display(job.path))", "it shrank while being committed") }
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<size])
                sha.update(bytes)
                verity?.update(bytes)
            } else {
                let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
                defer { chunk.deallocate() }
                var left = size
                while left > 0 {
                    let n = try readContent(fd, into: UnsafeMutableRawBufferPointer(rebasing: chunk[0..<min(left, chunk.count)]), path: job.path)
                    guard n > 0 else { throw RepoError("reading \(display(job.path))", "it shrank while being committed") }
                    let bytes = UnsafeRawBufferPointer(rebasing: chunk[0..<n])
                    sha.update(bytes)
                    verity?.update(bytes)
                    left -= n
                }
            }
        }
        job.checksum = hexString(sha.finishBytes())

        var have: gboolean = 0
        try gcall("looking up the object of \(display(job.path))") {
            ostree_repo_has_object(repo.repo, OSTREE_OBJECT_TYPE_FILE, job.checksum, &have, nil, $0)
        }
        if have == 0 {
            var input: UnsafeMutablePointer<GInputStream>? = nil
            if let content {
                input = UnsafeMutablePointer(OpaquePointer(g_memory_input_stream_new_from_data(content.baseAddress, gssize(size), nil)))
            } else if let fd {
                guard lseek(fd.rawValue, 0, SEEK_SET) == 0 else {
                    throw RepoError("reading \(display(job.path))", String(cString: strerror(errno)))
                }
                input = UnsafeMutablePointer(OpaquePointer(g_unix_input_stream_new(fd.rawValue, 0)))
            }
            defer { unref(input) }
            var object: UnsafeMutablePointer<GInputStream>? = nil
            var length: guint64 = 0
            try gcall("reading \(display(job.path))") {
                ostree_raw_file_to_content_stream(input, job.info, xattrs, &object, &length, nil, $0)
            }
            defer { unref(object) }
            // With the checksum given, libostree hashes what it writes and
            // refuses a difference: a file changed between the two reads.
            try gcall("writing \(display(job.path))") {
                ostree_repo_write_content(repo.repo, job.checksum, object, length, nil, nil, $0)
            }
        }
        let target = g_file_info_get_symlink_target(job.info).map { p in Array(UnsafeRawBufferPointer(start: p, count: strlen(p))) }
        job.facts = ContentFacts(
            object: FileObject(checksum: job.checksum,
                               mode: g_file_info_get_attribute_uint32(job.info, "unix::mode"),
                               uid: g_file_info_get_attribute_uint32(job.info, "unix::uid"),
                               gid: g_file_info_get_attribute_uint32(job.info, "unix::gid"),
                               size: UInt64(size), symlinkTarget: isLink ? target : nil, xattrs: xattrList),
            digest: verity?.finalize())
    }

    private func readContent(_ fd: FileDescriptor, into buffer: UnsafeMutableRawBufferPointer, path: [UInt8]) throws -> Int {
        do { return try fd.readFully(into: buffer) } catch let e as SystemError {
            throw RepoError("reading \(display(path))", e.message)
        }
    }

    /// ostree's file header (`(uuuusa(ayay))`, size-prefixed) as libostree
    /// streams it ahead of the content: the first bytes the checksum covers.
    private func fileHeader(_ info: OpaquePointer, _ xattrs: OpaquePointer?, path: [UInt8]) throws -> [UInt8] {
        let empty = g_memory_input_stream_new()
        defer { g_object_unref(empty) }
        var stream: UnsafeMutablePointer<GInputStream>? = nil
        var length: guint64 = 0
        let input = g_file_info_get_file_type(info) == G_FILE_TYPE_REGULAR ? UnsafeMutablePointer<GInputStream>(OpaquePointer(empty)) : nil
        try gcall("reading \(display(path))") { ostree_raw_file_to_content_stream(input, info, xattrs, &stream, &length, nil, $0) }
        defer { unref(stream) }
        var header: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            var error: UnsafeMutablePointer<GError>? = nil
            let n = chunk.withUnsafeMutableBytes { g_input_stream_read(stream, $0.baseAddress, 4096, nil, &error) }
            if n < 0 { throw RepoError("reading \(display(path))", consumeGError(error)) }
            if n == 0 { break }
            header += chunk[0..<n]
        }
        return header
    }

    /// The file's attributes after the commit filter and the modifier
    /// flags, as libostree applies them; nil when the filter skips it.
    private func modifiedInfo(_ st: stat, committed: [UInt8], path: [UInt8], symlinkTarget: [UInt8]?) throws -> OpaquePointer? {
        let info = g_file_info_new()!
        let type = st.st_mode & S_IFMT
        g_file_info_set_file_type(info, type == S_IFDIR ? G_FILE_TYPE_DIRECTORY : type == S_IFLNK ? G_FILE_TYPE_SYMBOLIC_LINK : G_FILE_TYPE_REGULAR)
        g_file_info_set_attribute_uint32(info, "unix::mode", st.st_mode)
        g_file_info_set_attribute_uint32(info, "unix::uid", st.st_uid)
        g_file_info_set_attribute_uint32(info, "unix::gid", st.st_gid)
        if type == S_IFREG { g_file_info_set_size(info, goffset(st.st_size)) }
        if let symlinkTarget {
            guard !symlinkTarget.contains(0), let target = String(validating: symlinkTarget, as: UTF8.self) else {
                unref(info)
                throw RepoError(display(path), "its symlink target is not UTF-8, which ostree cannot store")
            }
            g_file_info_set_symlink_target(info, target)
        }
        let shown = committed.isEmpty ? "/" : String(decoding: committed, as: UTF8.self)
        if state.apply(shown, info) != OSTREE_REPO_COMMIT_FILTER_ALLOW {
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

    /// A name as the C string libostree stores; ostree names are UTF-8.
    private func utf8Name(_ name: [UInt8], path: [UInt8]) throws -> String {
        guard let s = String(validating: name, as: UTF8.self) else {
            throw RepoError(display(path), "its name is not UTF-8, which ostree cannot store")
        }
        return s
    }

    private func readXattrs(of fd: FileDescriptor, path: [UInt8]) throws -> [Xattr] {
        do {
            return try FileSystem.listXattrs(of: fd, path: source + path).map {
                Xattr(name: $0, value: try FileSystem.getXattr(of: fd, name: $0, path: source + path))
            }
        } catch let e as SystemError {
            throw RepoError("reading xattrs of \(display(path))", e.message)
        }
    }

    private func readXattrs(ofLinkNamed name: [UInt8], in dir: FileDescriptor, path: [UInt8]) throws -> [Xattr] {
        let viaDirectory = dir.procPath(ofEntry: name)
        do {
            return try FileSystem.listXattrs(viaDirectory).map { Xattr(name: $0, value: try FileSystem.getXattr(viaDirectory, name: $0)) }
        } catch let e as SystemError {
            throw RepoError("reading xattrs of \(display(path))", e.message)
        }
    }
}
