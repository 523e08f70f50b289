import COSTree
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// Where the fs-verity digests of backing objects come from.
public enum DigestSource: Sendable, Equatable {
    /// The repository's digest cache where it knows them. Only for images
    /// that are checked against a digest from elsewhere (a signed commit's),
    /// since anyone who can write the repository can write the cache.
    case cached
    /// Measured or computed from the objects: what goes into a commit.
    case recompute
    /// Like `recompute`, each object's content checksum verified first.
    case verifiedObjects
    /// None: redirects without digests, as `ostree checkout
    /// --composefs-noverity` writes them.
    case omitted
}

/// Composefs images of commits, built as ostree builds them (composefs
/// spec §17): the commit's tree with each non-empty regular file redirected
/// to its loose object `xx/<62 hex>.file` and pinned by that object's
/// fs-verity digest.
extension Repository {
    /// The tree of a commit's root (dirtree, dirmeta) for the composefs
    /// writer, with fs-verity digests of every backing object: from
    /// `known` where given, else as `digests` says.
    public func composefsTree(rootTree: String, rootMeta: String, digests source: DigestSource = .recompute,
                              known: [String: [UInt8]] = [:]) throws -> ComposefsTree {
        var memo = known
        return try composefsTree(rootTree: rootTree, rootMeta: rootMeta, digests: source, memo: &memo)
    }

    /// As above; `memo` gains every digest looked up, for the next tree.
    /// `knownFiles`: file objects' metadata by checksum, as just written
    /// (the rest is read from the repository).
    func composefsTree(rootTree: String, rootMeta: String, digests source: DigestSource, memo: inout [String: [UInt8]],
                       knownFiles: [String: FileObject] = [:]) throws -> ComposefsTree {
        let rootDir = try dirMeta(rootMeta)
        var tree = ComposefsTree(root: ComposefsNode(mode: rootDir.mode, uid: rootDir.uid, gid: rootDir.gid,
                                                     xattrs: rootDir.xattrs.map { ComposefsXattr(name: $0.name, value: $0.value) }))
        var files = knownFiles
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

        let unknown = source == .omitted ? [] : backed.keys.filter { memo[$0] == nil }
        for (c, d) in try verityDigests(of: Array(unknown), source) { memo[c] = d }
        for (checksum, entries) in backed {
            for e in entries { tree[e].digest = memo[checksum] }
        }
        return tree
    }

    /// The composefs image of a commit as ostree writes it (`.ostree.cfs`).
    public func composefsImage(commit checksum: String, digests: DigestSource = .recompute, known: [String: [UInt8]] = [:]) throws -> [UInt8] {
        let c = try commit(checksum)
        return try composefsImage(rootTree: c.rootTree, rootMeta: c.rootMeta, digests: digests, known: known)
    }

    public func composefsImage(rootTree: String, rootMeta: String, digests: DigestSource = .recompute,
                               known: [String: [UInt8]] = [:]) throws -> [UInt8] {
        try composefsImage(rootTree: rootTree, rootMeta: rootMeta, digests: digests, known: known, knownFiles: [:])
    }

    func composefsImage(rootTree: String, rootMeta: String, digests: DigestSource, known: [String: [UInt8]],
                        knownFiles: [String: FileObject]) throws -> [UInt8] {
        var memo = digests == .omitted ? [:] : known
        let tree = try composefsTree(rootTree: rootTree, rootMeta: rootMeta, digests: digests, memo: &memo, knownFiles: knownFiles)
        do {
            return try OstreeMode.image(of: tree)
        } catch let e as ComposefsError {
            throw RepoError("writing the composefs image of \(rootTree)", e.description)
        }
    }

    /// The image `ostree checkout --composefs` writes of a commit: refused,
    /// as there, when its fs-verity digest is not the one the commit
    /// records (`ostree.composefs.digest.v0`) unless `checkRecordedDigest`
    /// is false. Without `verity`, the image of `--composefs-noverity`:
    /// redirects without fs-verity digests, which the recorded digest (of
    /// the image with them) does not describe, so it is not checked.
    public func composefsCheckout(commit checksum: String, verity: Bool = true, checkRecordedDigest: Bool = true) throws -> [UInt8] {
        let c = try commit(checksum)
        let image = try composefsImage(rootTree: c.rootTree, rootMeta: c.rootMeta, digests: verity ? .recompute : .omitted)
        guard verity, checkRecordedDigest, let recorded = try recordedComposefsDigest(c) else { return image }
        guard fsVerityDigest(image) != recorded else { return image }
        // Name a corrupt object if that is the cause: rebuilt from objects
        // each checked against its checksum first.
        let checked = try composefsImage(rootTree: c.rootTree, rootMeta: c.rootMeta, digests: .verifiedObjects)
        throw RepoError("image of commit \(checksum)", "its fs-verity digest \(hexString(fsVerityDigest(checked))) doesn't match the digest "
                        + "\(hexString(recorded)) the commit records (\(MetadataKey.composefsDigest)); --no-digest-check writes it anyway")
    }

    /// The commit's recorded composefs digest; nil without one, an error
    /// when it is not 32 bytes of type `ay`.
    func recordedComposefsDigest(_ c: CommitInfo) throws -> [UInt8]? {
        guard let v = c.metadataValue(MetadataKey.composefsDigest) else { return nil }
        guard case .bytes(let b) = v.plain, b.count == 32 else {
            let what: String
            if case .bytes(let b) = v.plain { what = "\(b.count) bytes" } else { what = "of type \(v.type)" }
            throw RepoError("commit \(c.checksum)", "its \(MetadataKey.composefsDigest) is \(what), not 32 bytes (ay)")
        }
        return b
    }

    /// The file objects a commit's tree names, from its dirtrees alone
    /// (each read once, however often it recurs).
    func fileObjects(ofCommit checksum: String) throws -> Set<String> {
        var seenTrees: Set<String> = []
        var objects: Set<String> = []
        var pending = [try commit(checksum).rootTree]
        while let tree = pending.popLast() {
            guard seenTrees.insert(tree).inserted else { continue }
            let dir = try dirTree(tree)
            for f in dir.files { objects.insert(f.checksum) }
            pending.append(contentsOf: dir.directories.map(\.treeChecksum))
        }
        return objects
    }

    /// Puts into the digest cache the fs-verity digest of every regular file
    /// object of `commit` it lacks, so a deploy of it hashes nothing: what a
    /// pull does once the objects are in. Walks only the dirtrees; file
    /// objects are opened only where the cache has no digest (after an
    /// upgrade, the changed ones). `known`: digests already computed from
    /// these very objects (by a `StagingHasher` during the pull).
    public func warmDigestCache(commit checksum: String, known: [String: [UInt8]] = [:]) throws {
        let cache = VerityDigestCache(repositoryPath: path)
        var wanted = try fileObjects(ofCommit: checksum).filter { cache[$0] == nil }
        var fresh: [(checksum: String, digest: [UInt8])] = []
        for c in wanted { if let d = known[c] { fresh.append((c, d)); wanted.remove(c) } }
        _ = cache.record(fresh)  // a cache that cannot be written only costs time later
        let regular = try wanted.filter { let o = try file($0); return !o.isSymlink && o.size > 0 }
        _ = try verityDigests(of: Array(regular), .recompute)
    }

    /// Enables fs-verity on every regular file object of `commit` that lacks
    /// it, as `post-copy` does for the whole repository: a root mounted with
    /// verity=require reads no object without it. Returns how many were
    /// enabled; nil when the filesystem cannot do fs-verity.
    public func enableVerity(onObjectsOf checksum: String) throws -> Int? {
        var enabled = 0
        for object in try fileObjects(ofCommit: checksum).sorted() {
            guard let fd = try objectDescriptor(object) else { continue }
            let done: Bool? = try fd.closeAfter {
                var st = stat()
                guard fstat(fd.rawValue, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0, KernelVerity.measure(fd) == nil else { return false }
                do { return try KernelVerity.enable(fd) ? true : nil } catch let e as SystemError {
                    throw RepoError("enabling fs-verity on file object \(object)", e.message)
                }
            }
            guard let done else { return nil }
            if done { enabled += 1 }
        }
        return enabled
    }

    /// fs-verity digests of file objects. With `.cached`, from the
    /// repository's cache where it has them; every other digest is measured
    /// by the kernel (enabling fs-verity on the object first where the
    /// filesystem supports it) or computed, on all cores, and added to the
    /// cache. With `.verifiedObjects`, each object hashed is also checked
    /// against its content checksum first.
    public func verityDigests(of checksums: [String], _ source: DigestSource = .recompute) throws -> [String: [UInt8]] {
        let cache = VerityDigestCache(repositoryPath: path)
        var result: [String: [UInt8]] = [:]
        var missing: [String] = []
        for c in checksums {
            if source == .cached, let d = cache[c] { result[c] = d } else { missing.append(c) }
        }
        guard !missing.isEmpty else { return result }
        if source == .verifiedObjects {
            for c in missing {
                var error: UnsafeMutablePointer<GError>? = nil
                guard ostree_repo_fsck_object(repo, OSTREE_OBJECT_TYPE_FILE, c, nil, &error) != 0 else {
                    throw RepoError("file object \(c) is corrupt", consumeGError(error))
                }
            }
        }

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
        for (i, c) in missing.enumerated() { result[c] = computed[i]! }
        cacheDigests(missing.map { ($0, result[$0]!) }, in: cache)
        return result
    }

    /// Adds digests computed from the objects' bytes to the digest cache,
    /// for deploys to come (never for what a commit records).
    func cacheDigests(_ digests: [(checksum: String, digest: [UInt8])], in cache: VerityDigestCache? = nil) {
        let cache = cache ?? VerityDigestCache(repositoryPath: path)
        let fresh = digests.filter { cache[$0.checksum] != $0.digest }  // the file only grows by what it lacks or has wrong
        _ = cache.record(fresh)  // a cache that cannot be written only costs time later
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
