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
public enum DirectoryScanner {
    /// Files of at most this many bytes are kept in the image, not in an object.
    public static let maxInline = 64

    public static func scan(_ source: [UInt8], options: DirectoryScanOptions = .init()) throws -> ComposefsTree {
        func io(_ e: SystemError) -> ComposefsError { ComposefsError(.io, e.description, path: e.path) }
        var files: [(entry: Int, path: [UInt8], size: UInt64, dev: UInt64, ino: UInt64)] = []
        var tree: ComposefsTree
        do {
            let st = try FileSystem.lstat(source)
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw ComposefsError(.invalidTree, "source is not a directory", path: source)
            }
            tree = ComposefsTree(root: try node(source, st, options))
            var stack: [(Int, [UInt8])] = [(0, source)]
            while let (dirEntry, dirPath) = stack.popLast() {
                for name in try FileSystem.directoryEntries(dirPath) {
                    let path = dirPath + [0x2f] + name
                    let st = try FileSystem.lstat(path)
                    let type = st.st_mode & S_IFMT
                    if options.skipDevices && (type == S_IFCHR || type == S_IFBLK) { continue }
                    let e = try tree.addChild(dirEntry, name: name, node: try node(path, st, options))
                    if type == S_IFDIR { stack.append((e, path)) }
                    if type == S_IFREG && st.st_size > 0 {
                        files.append((e, path, UInt64(st.st_size), UInt64(st.st_dev), UInt64(st.st_ino)))
                    }
                }
            }
        } catch let e as SystemError { throw io(e) }

        // Hash each distinct (dev, ino) once, on all threads.
        var firstOf: [[UInt64]: Int] = [:]
        var unique: [Int] = []
        var uniqueIndex = [Int](repeating: 0, count: files.count)
        for (i, f) in files.enumerated() {
            let key = [f.dev, f.ino]
            if let u = firstOf[key] { uniqueIndex[i] = u } else {
                firstOf[key] = unique.count; uniqueIndex[i] = unique.count; unique.append(i)
            }
        }
        let results = ResultSlots<Result<([UInt8], [UInt8]?), ComposefsError>>(unique.count)
        let objects = ResultSlots<DigestStoreObject>(unique.count)
        let work = unique.map { (files[$0].path, files[$0].size) }
        let store = options.digestStore
        parallelFor(work.count, threads: options.threads) { i in
            let (path, size) = work[i]
            do {
                let (digest, content) = try hashFile(path, size: size, keepIfAtMost: maxInline)
                if size > UInt64(maxInline), content == nil, let store { objects[i] = try store.store(source: path, digest: digest) }
                results[i] = .success((digest, content))
            } catch let e as SystemError {
                results[i] = .failure(ComposefsError(.io, e.description, path: path))
            } catch let e as ComposefsError {
                results[i] = .failure(e)
            } catch {
                results[i] = .failure(ComposefsError(.io, "\(error)", path: path))
            }
        }
        for u in 0..<unique.count { _ = try results[u]?.get() }
        if let store {
            // Several files with one content: the first copy gets the name.
            var seen = Set<[UInt8]>()
            var fresh: [(path: [UInt8], object: DigestStoreObject)] = []
            for u in 0..<unique.count {
                if let o = objects[u], seen.insert(o.digest).inserted { fresh.append((work[u].0, o)) }
            }
            do {
                try store.install(fresh.map(\.object)) { k, e in ComposefsError(.io, e.description, path: fresh[k].path) }
            } catch let e as SystemError { throw io(e) }
        }
        for (i, f) in files.enumerated() {
            guard let r = results[uniqueIndex[i]] else { continue }
            let (digest, content) = try r.get()
            var n = tree.nodes[f.entry]
            n.digest = digest
            n.payload = objectPath(forDigest: digest)
            if let content {
                n.content = content
                n.size = UInt64(content.count)
            }
            tree[f.entry] = n
        }
        return tree
    }

    public static func scan(_ source: String, options: DirectoryScanOptions = .init()) throws -> ComposefsTree {
        try scan(Array(source.utf8), options: options)
    }

    static func node(_ path: [UInt8], _ st: stat, _ o: DirectoryScanOptions) throws -> ComposefsNode {
        var n = ComposefsNode(mode: UInt32(st.st_mode), uid: st.st_uid, gid: st.st_gid, nlink: 1,
                              rdev: UInt32(truncatingIfNeeded: st.st_rdev), size: UInt64(max(0, st.st_size)),
                              mtimeSec: o.useEpoch ? 0 : Int64(st.st_mtim.tv_sec),
                              mtimeNsec: o.useEpoch ? 0 : UInt32(truncatingIfNeeded: st.st_mtim.tv_nsec))
        let type = st.st_mode & S_IFMT
        if type == S_IFLNK {
            let t = try FileSystem.readLink(path)
            guard !t.isEmpty, t.count < 4096 else { throw ComposefsError(.invalidTree, "symlink target empty or too long", path: path) }
            n.payload = t
            n.size = UInt64(t.count)
        }
        if type != S_IFCHR && type != S_IFBLK { n.rdev = 0 }
        if !o.skipXattrs {
            for name in try FileSystem.listXattrs(path) {
                if o.userXattrsOnly && !hasPrefix(name, Array("user.".utf8)) { continue }
                n.setXattr(name, try FileSystem.getXattr(path, name: name))
            }
        }
        return n
    }

    /// fs-verity digest of a file, plus its bytes if it has at most `keepIfAtMost` bytes.
    static func hashFile(_ path: [UInt8], size: UInt64, keepIfAtMost limit: Int) throws -> ([UInt8], [UInt8]?) {
        let fd = try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW)
        return try fd.closeAfter {
            // As much as the file holds (plus one byte to see its end), up to 1 MiB.
            let chunk = Int(min(size + 1, 1 << 20))
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            defer { buf.deallocate() }
            let h = FsVerityHasher()
            var small: [UInt8]? = []
            while true {
                let n = try fd.read(into: buf)
                if n == 0 { break }
                let part = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                h.update(part)
                if small != nil {
                    if small!.count + n <= limit { small! += part } else { small = nil }
                }
            }
            if h.count == 0 { small = nil }
            return (h.finalize(), small)
        }
    }
}
