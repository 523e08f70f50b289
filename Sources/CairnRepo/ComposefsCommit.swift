import COSTree
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// Composefs images of commits, built as ostree builds them (composefs
/// spec §17): the commit's tree with each non-empty regular file redirected
/// to its loose object `xx/<62 hex>.file` and pinned by that object's
/// fs-verity digest.
extension Repository {
    /// The tree of a commit's root (dirtree, dirmeta) for the composefs
    /// writer, with fs-verity digests of every backing object.
    public func composefsTree(rootTree: String, rootMeta: String) throws -> ComposefsTree {
        let rootDir = try dirMeta(rootMeta)
        var tree = ComposefsTree(root: ComposefsNode(mode: rootDir.mode, uid: rootDir.uid, gid: rootDir.gid,
                                                     xattrs: rootDir.xattrs.map { ComposefsXattr(name: $0.name, value: $0.value) }))
        var files: [String: FileObject] = [:]
        var metas: [String: DirMeta] = [rootMeta: rootDir]
        var backed: [String: [Int]] = [:]  // object checksum → entries it backs

        func add(_ treeChecksum: String, under parent: Int) throws {
            let dir = try dirTree(treeChecksum)
            for f in dir.files {
                let object = try files[f.checksum] ?? file(f.checksum)
                files[f.checksum] = object
                var node = ComposefsNode(mode: object.mode, uid: object.uid, gid: object.gid, size: object.isSymlink ? 0 : object.size,
                                         xattrs: object.xattrs.map { ComposefsXattr(name: $0.name, value: $0.value) })
                if let target = object.symlinkTarget {
                    node.payload = target
                    node.size = UInt64(target.count)
                } else if object.size > 0 {
                    node.payload = OstreeMode.payload(forContentChecksum: f.checksum)
                }
                let index = try tree.addChild(parent, name: f.name, node: node)
                if node.payload != nil && !object.isSymlink { backed[f.checksum, default: []].append(index) }
            }
            for d in dir.directories {
                let meta = try metas[d.metaChecksum] ?? dirMeta(d.metaChecksum)
                metas[d.metaChecksum] = meta
                let index = try tree.addChild(parent, name: d.name, node: ComposefsNode(
                    mode: meta.mode, uid: meta.uid, gid: meta.gid,
                    xattrs: meta.xattrs.map { ComposefsXattr(name: $0.name, value: $0.value) }))
                try add(d.treeChecksum, under: index)
            }
        }
        do {
            try add(rootTree, under: ComposefsTree.root)
        } catch let e as ComposefsError {
            throw RepoError("building the composefs tree of \(rootTree)", e.description)
        }

        let digests = try verityDigests(of: Array(backed.keys))
        for (checksum, entries) in backed {
            for e in entries { tree[e].digest = digests[checksum] }
        }
        return tree
    }

    /// The composefs image of a commit as ostree writes it (`.ostree.cfs`).
    public func composefsImage(commit checksum: String) throws -> [UInt8] {
        let c = try commit(checksum)
        return try composefsImage(rootTree: c.rootTree, rootMeta: c.rootMeta)
    }

    public func composefsImage(rootTree: String, rootMeta: String) throws -> [UInt8] {
        let tree = try composefsTree(rootTree: rootTree, rootMeta: rootMeta)
        do {
            return try OstreeMode.image(of: tree)
        } catch let e as ComposefsError {
            throw RepoError("writing the composefs image of \(rootTree)", e.description)
        }
    }

    /// fs-verity digests of file objects, from the repository's cache where
    /// known; the others are measured by the kernel (enabling fs-verity on
    /// the object first where the filesystem supports it) or computed, on
    /// all cores, and added to the cache.
    public func verityDigests(of checksums: [String]) throws -> [String: [UInt8]] {
        let cache = VerityDigestCache(repositoryPath: path)
        var result: [String: [UInt8]] = [:]
        var missing: [String] = []
        for c in checksums {
            if let d = cache[c] { result[c] = d } else { missing.append(c) }
        }
        guard !missing.isEmpty else { return result }

        // Objects written in the current transaction are still in libostree's
        // staging folder, so descriptors come from libostree (one thread, in
        // batches) and the hashing runs on all cores.
        var computed = [[UInt8]?](repeating: nil, count: missing.count)
        var start = 0
        while start < missing.count {
            let batch = Array(missing[start..<min(start + 256, missing.count)])
            var fds: [FileDescriptor?] = []
            defer { fds.forEach { $0?.close() } }
            for c in batch { fds.append(try objectDescriptor(c)) }
            let results = UnsafeMutableBufferPointer<Result<[UInt8], Error>?>.allocate(capacity: batch.count)
            results.initialize(repeating: nil)
            defer {
                results.deinitialize()
                results.deallocate()
            }
            parallelFor(batch.count, threads: onlineProcessorCount()) { i in
                guard let fd = fds[i] else { return }
                results[i] = Result {
                    if let d = KernelVerity.measure(fd) { return d }
                    if (try? KernelVerity.enable(fd)) == true, let d = KernelVerity.measure(fd) { return d }
                    return try fsVerityDigest(ofFile: fd)
                }
            }
            for i in 0..<batch.count {
                if fds[i] == nil {
                    // Not a plain file (archive mode): hash the content stream.
                    let h = FsVerityHasher()
                    try readContent(batch[i]) { h.update($0) }
                    computed[start + i] = h.finalize()
                    continue
                }
                switch results[i]! {
                case .success(let d): computed[start + i] = d
                case .failure(let e): throw RepoError("computing the fs-verity digest of object \(batch[i])", "\(e)")
                }
            }
            start += batch.count
        }
        var fresh: [(checksum: String, digest: [UInt8])] = []
        for (i, c) in missing.enumerated() {
            result[c] = computed[i]!
            fresh.append((c, computed[i]!))
        }
        _ = cache.record(fresh)  // a cache that cannot be written only costs time later
        return result
    }

    /// A read-only descriptor of a regular file object's content (staged or
    /// committed), or nil when the repository does not store content as
    /// plain files.
    func objectDescriptor(_ checksum: String) throws -> FileDescriptor? {
        guard mode != .archive else { return nil }
        var input: UnsafeMutablePointer<GInputStream>? = nil
        try gcall("opening file object \(checksum)") {
            ostree_repo_load_file(repo, checksum, &input, nil, nil, nil, $0)
        }
        guard let input else { return nil }
        defer { unref(input) }
        guard g_type_check_instance_is_a(UnsafeMutablePointer(OpaquePointer(input)), g_unix_input_stream_get_type()) != 0 else { return nil }
        let fd = dup(g_unix_input_stream_get_fd(UnsafeMutableRawPointer(input).assumingMemoryBound(to: GUnixInputStream.self)))
        guard fd >= 0 else { throw RepoError("opening file object \(checksum)", String(cString: strerror(errno))) }
        return FileDescriptor(rawValue: fd)
    }
}
