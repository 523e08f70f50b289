#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// Options of `mkcomposefs SRC IMG` that affect the tree (spec §4.2).
public struct DirectoryScanOptions: Sendable {
    /// Every mtime 0.0 (--use-epoch).
    public var useEpoch = false
    /// No source xattrs (--skip-xattrs).
    public var skipXattrs = false
    /// Only `user.*` xattrs (--user-xattrs).
    public var userXattrsOnly = false
    /// Omit character and block devices (--skip-devices).
    public var skipDevices = false
    /// Copy objects (regular files larger than 64 bytes) here (--digest-store).
    public var digestStore: DigestStore?
    /// Hashing threads (default: all online CPUs).
    public var threads = onlineProcessorCount()

    public init(useEpoch: Bool = false, skipXattrs: Bool = false, userXattrsOnly: Bool = false,
                skipDevices: Bool = false, digestStore: DigestStore? = nil) {
        self.useEpoch = useEpoch; self.skipXattrs = skipXattrs; self.userXattrsOnly = userXattrsOnly
        self.skipDevices = skipDevices; self.digestStore = digestStore
    }
}

/// Builds a tree from a directory like `mkcomposefs SRC IMG`: lstat,
/// readlink, llistxattr; nlink 1 (source hardlinks become separate inodes,
/// as mkcomposefs does); regular files get their fs-verity digest and the
/// payload `xx/<62 hex>`, and files of at most 64 bytes are inlined.
///
/// The tree's owner may be hostile to whoever runs this (root, filling a
/// store of world-readable objects): the walk goes through directory
/// descriptors (each directory opened O_NOFOLLOW and checked to be the one
/// listed), each file read is checked to be the (device, inode) scanned,
/// and each new object's copy is hashed again. A file swapped or resized
/// meanwhile, or rewritten between its hash and its copy, is an error
/// naming it, never content from elsewhere.
public enum DirectoryScanner {
    /// Files of at most this many bytes are kept in the image, not in an object.
    public static let maxInline = 64

    public static func scan(_ source: [UInt8], options: DirectoryScanOptions = .init()) throws -> ComposefsTree {
        func io(_ e: SystemError) -> ComposefsError { ComposefsError(.io, e.description, path: e.path) }
        // Per regular file with content: its entry and which distinct file
        // (dev, ino) it is. Kept small: a tree of 50k files holds this and
        // the tree at once; paths are rebuilt from the tree when needed.
        var files: [(entry: Int32, unique: Int32)] = []
        var unique: [Int32] = []                 // index into `files` of each distinct file
        var identities: [DeviceInode] = []       // of each distinct file, checked when it is read
        var linked: [DeviceInode: Int32] = [:]   // only files with more than one link
        var tree = ComposefsTree(root: ComposefsNode(mode: FileMode.directory | 0o755))  // the root's node is the source's, below
        // Depth first, one open descriptor per level.
        func walk(_ dir: FileDescriptor, _ dirEntry: Int, _ dirPath: [UInt8]) throws {
            for name in try naming(dirPath, { try FileSystem.directoryEntries([0x2e], relativeTo: dir) }) {
                let path = dirPath + [0x2f] + name
                let st = try naming(path) { try FileSystem.lstat(name, relativeTo: dir) }
                let type = st.st_mode & S_IFMT
                if options.skipDevices && (type == S_IFCHR || type == S_IFBLK) { continue }
                if type == S_IFDIR {
                    let sub = try openDirectory(name, in: dir, scanned: st, path: path)
                    try sub.closeAfter {
                        let e = try tree.addChild(dirEntry, name: name, node: try node(nil, in: sub, st, options, path: path))
                        try walk(sub, e, path)
                    }
                    continue
                }
                let e = try tree.addChild(dirEntry, name: name, node: try node(name, in: dir, st, options, path: path))
                if type == S_IFREG && st.st_size > 0 {
                    let id = DeviceInode(st)
                    var u = Int32(unique.count)
                    if st.st_nlink > 1 {
                        if let known = linked[id] { u = known } else { linked[id] = u }
                    }
                    if u == Int32(unique.count) { unique.append(Int32(files.count)); identities.append(id) }
                    files.append((Int32(e), u))
                }
            }
        }
        do {
            let st = try FileSystem.lstat(source)
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw ComposefsError(.invalidTree, "source is not a directory", path: source)
            }
            let root = try openDirectory(source, in: .currentWorkingDirectory, scanned: st, path: source)
            try root.closeAfter {
                tree[ComposefsTree.root] = try node(nil, in: root, st, options, path: source)
                try walk(root, 0, source)
            }
        } catch let e as SystemError { throw io(e) }
        linked = [:]

        // Hash each distinct file once, on all threads, each with its own buffer.
        let digests = DigestSlots(unique.count)
        let contents = ResultSlots<[UInt8]>(unique.count)
        let objects = ResultSlots<DigestStoreObject>(unique.count)
        let failure = FirstFailure()
        let store = options.digestStore
        let workers = max(1, min(options.threads, unique.count))
        let buffers = (0..<workers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: hashBufferSize, alignment: 4096) }
        defer { for b in buffers { b.deallocate() } }
        do {
            let frozen = tree, entries = unique.map { files[Int($0)].entry }
            parallelFor(entries.count, threads: options.threads) { worker, u in
                let entry = Int(entries[u])
                let path = source + frozen.path(of: entry)
                do {
                    // By path, so checked: an intermediate directory may be a symlink by now.
                    let fd = try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
                    try fd.closeAfter {
                        let st = try fd.stat()
                        guard st.st_mode & S_IFMT == S_IFREG, DeviceInode(st) == identities[u] else {
                            throw replaced(path)
                        }
                        let (small, size) = try hash(fd, into: digests[u], keepIfAtMost: maxInline, buffer: buffers[worker])
                        guard size == frozen.nodes[entry].size else {
                            throw ComposefsError(.io, "it changed size while the image was being made", path: path)
                        }
                        if let small { contents[u] = small } else if let store {
                            objects[u] = try store.store(fd, path: path, digest: Array(digests[u]))
                        }
                    }
                } catch let e as SystemError {
                    failure.record(u, ComposefsError(.io, e.description, path: path))
                } catch let e as ComposefsError {
                    failure.record(u, e)
                } catch {
                    failure.record(u, ComposefsError(.io, "\(error)", path: path))
                }
            }
        }
        if let e = failure.error { throw e }
        if let store {
            // Several files with one content: the first copy gets the name.
            var seen = Set<[UInt8]>()
            var fresh: [(unique: Int, object: DigestStoreObject)] = []
            for u in 0..<unique.count {
                if let o = objects[u], seen.insert(o.digest).inserted { fresh.append((u, o)) }
            }
            do {
                try store.install(fresh.map(\.object)) { k, e in
                    ComposefsError(.io, e.description, path: source + tree.path(of: Int(files[Int(unique[fresh[k].unique])].entry)))
                }
            } catch let e as SystemError { throw io(e) }
        }
        for f in files {
            let u = Int(f.unique)
            let digest = Array(digests[u])
            var n = tree.nodes[Int(f.entry)]
            n.digest = digest
            n.payload = objectPath(forDigest: digest)
            if let content = contents[u] {
                n.content = content
                n.size = UInt64(content.count)
            }
            tree[Int(f.entry)] = n
        }
        return tree
    }

    public static func scan(_ source: String, options: DirectoryScanOptions = .init()) throws -> ComposefsTree {
        try scan(Array(source.utf8), options: options)
    }

    /// Runs `body`, naming `path` in its system error (calls relative to a
    /// directory descriptor name only the last component).
    static func naming<T>(_ path: [UInt8], _ body: () throws -> T) throws -> T {
        do { return try body() } catch var e as SystemError {
            e.path = path
            throw e
        }
    }

    static func replaced(_ path: [UInt8]) -> ComposefsError {
        ComposefsError(.io, "it was replaced while the image was being made", path: path)
    }

    /// The directory `name` in `dir`, if it is still the one `scanned`.
    static func openDirectory(_ name: [UInt8], in dir: FileDescriptor, scanned: stat, path: [UInt8]) throws -> FileDescriptor {
        let replaced = replaced(path)
        let fd: FileDescriptor
        do { fd = try dir.openDirectory(name) } catch let e as SystemError {
            if e.errno == ELOOP || e.errno == ENOTDIR || e.errno == ENOENT { throw replaced }
            throw SystemError(errno: e.errno, operation: e.operation, path: path)
        }
        let st: stat
        do { st = try fd.stat() } catch { fd.close(); throw error }
        guard DeviceInode(st) == DeviceInode(scanned) else { fd.close(); throw replaced }
        return fd
    }

    /// The node of `name` in `dir` (nil: `dir` itself), from its lstat `st`;
    /// `path` names it in errors.
    static func node(_ name: [UInt8]?, in dir: FileDescriptor, _ st: stat, _ o: DirectoryScanOptions, path: [UInt8]) throws -> ComposefsNode {
        var n = ComposefsNode(mode: UInt32(st.st_mode), uid: st.st_uid, gid: st.st_gid, nlink: 1,
                              rdev: UInt32(truncatingIfNeeded: st.st_rdev), size: UInt64(max(0, st.st_size)),
                              mtimeSec: o.useEpoch ? 0 : Int64(st.st_mtim.tv_sec),
                              mtimeNsec: o.useEpoch ? 0 : UInt32(truncatingIfNeeded: st.st_mtim.tv_nsec))
        let type = st.st_mode & S_IFMT
        if type == S_IFLNK, let name {
            let t: [UInt8]
            do { t = try FileSystem.readLink(name, relativeTo: dir) } catch let e as SystemError {
                if e.errno == EINVAL || e.errno == ENOENT { throw replaced(path) }  // no longer a symlink
                throw SystemError(errno: e.errno, operation: e.operation, path: path)
            }
            guard !t.isEmpty, t.count < 4096 else { throw ComposefsError(.invalidTree, "symlink target empty or too long", path: path) }
            n.payload = t
            n.size = UInt64(t.count)
        }
        if type != S_IFCHR && type != S_IFBLK { n.rdev = 0 }
        if !o.skipXattrs {
            // Named through the directory's descriptor, as libostree does
            // for symlinks: no extra open per entry.
            let via = name.map { dir.procPath(ofEntry: $0) }
            try naming(path) {
                for key in try via.map { try FileSystem.listXattrs($0) } ?? FileSystem.listXattrs(of: dir, path: path) {
                    if o.userXattrsOnly && !hasPrefix(key, Array("user.".utf8)) { continue }
                    n.setXattr(key, try via.map { try FileSystem.getXattr($0, name: key) } ?? FileSystem.getXattr(of: dir, name: key, path: path))
                }
            }
        }
        return n
    }

    /// Bytes each hashing thread reads at a time.
    static let hashBufferSize = 256 << 10

    /// Writes the fs-verity digest of the file open at `fd` (from its
    /// current offset) to `digest`; returns its bytes if it has at least
    /// one and at most `limit`, and how many bytes it hashed.
    static func hash(_ fd: FileDescriptor, into digest: UnsafeMutableRawBufferPointer, keepIfAtMost limit: Int,
                     buffer: UnsafeMutableRawBufferPointer) throws -> (small: [UInt8]?, size: UInt64) {
        let h = FsVerityHasher()
        var small: [UInt8]? = []
        while true {
            let n = try fd.read(into: buffer)
            if n == 0 { break }
            let part = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            h.update(part)
            if small != nil {
                if small!.count + n <= limit { small! += part } else { small = nil }
            }
        }
        if h.count == 0 { small = nil }
        let size = h.count
        _ = h.finalize().withUnsafeBytes { digest.copyMemory(from: $0) }
        return (small, size)
    }
}

/// A (device, inode) pair: one file, however many names it has.
struct DeviceInode: Hashable {
    var device: UInt64
    var inode: UInt64
    init(_ st: stat) { device = UInt64(st.st_dev); inode = UInt64(st.st_ino) }
}

/// 32-byte digests that worker threads write at distinct indices.
final class DigestSlots: @unchecked Sendable {
    private let p: UnsafeMutableRawPointer
    init(_ count: Int) {
        p = .allocate(byteCount: max(count, 1) * 32, alignment: 8)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1) * 32)
    }
    deinit { p.deallocate() }
    subscript(i: Int) -> UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: p + 32 * i, count: 32) }
}

/// The failure of the lowest index among parallel work items, so that the
/// error reported does not depend on thread timing.
final class FirstFailure: @unchecked Sendable {
    private var index = Int.max
    private(set) var error: ComposefsError?
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func record(_ i: Int, _ e: ComposefsError) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if i < index { index = i; error = e }
    }
}
