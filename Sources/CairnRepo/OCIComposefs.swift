import CLibArchive
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// The composefs image of an OCI image, as composefs does for container
/// storage: the layers applied (OCILayers.swift), each regular file's
/// content streamed into a digest store under its fs-verity digest, so any
/// number of images share one copy of each file. The image equals what
/// `mkcomposefs --digest-store` writes for the unpacked image, without the
/// unpacking.

final class DigestStoreSink: OCIContentSink {
    let store: DigestStore
    let options: DirectoryScanOptions
    /// Objects the store lacks, written but held back: a later layer may
    /// delete or replace their files, and only what the final tree names
    /// goes into the store (`installNamed`).
    private var pending: [[UInt8]: DigestStoreObject] = [:]
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    init(store: DigestStore, options: DirectoryScanOptions) {
        self.store = store
        self.options = options
    }

    deinit { buffer.deallocate() }

    let namesMustBeUTF8 = false

    func keptXattrs(_ xattrs: [Xattr]) -> [Xattr] {
        if options.skipXattrs { return [] }
        if options.userXattrsOnly { return xattrs.filter { $0.name.starts(with: Array("user.".utf8)) } }
        return xattrs
    }

    func writeContent(_ node: OCINode, entry: OpaquePointer, data: EntryData, path: String) throws {
        if node.kind == .symlink {
            let target = archive_entry_symlink(entry).map(OCILayerApplier.bytes) ?? []
            guard !target.isEmpty, target.count < 4096 else {
                throw RepoError(data.context, "a symlink whose target is empty or longer than 4095 bytes, which composefs cannot store")
            }
            node.content = .symlink(target: target)
            return
        }
        let size = UInt64(data.remaining)
        if size == 0 {
            node.content = .file(digest: nil, size: 0, inline: nil)
            return
        }
        // Small files live in the image itself (as mkcomposefs keeps them).
        if size <= UInt64(DirectoryScanner.maxInline) {
            var bytes: [UInt8] = []
            while true {
                let n = data.read(buffer.baseAddress!, buffer.count)
                if n < 0 { throw data.failure! }
                if n == 0 { break }
                bytes += UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            }
            node.content = .file(digest: fsVerityDigest(bytes), size: size, inline: bytes)
            return
        }
        let object: DigestStoreObject
        do { object = try DigestStoreObject(store: store) } catch let e as SystemError { throw RepoError("writing to the digest store", e.description) }
        while true {
            let n = data.read(buffer.baseAddress!, buffer.count)
            if n < 0 { throw data.failure! }
            if n == 0 { break }
            do { try object.write(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) } catch let e as SystemError {
                throw RepoError("\(data.context): writing to the digest store", e.description)
            }
        }
        let digest: [UInt8]
        do { digest = try object.finish() } catch let e as SystemError {
            throw RepoError("\(data.context): writing to the digest store", e.description)
        }
        // An object the store has (kept there by the shared lock until the
        // image is written) or one held already: this copy goes.
        if pending[digest] == nil, !FileSystem.exists(store.objectPath(digest)) { pending[digest] = object }
        node.content = .file(digest: digest, size: size, inline: nil)
    }

    /// Puts into the store the held-back objects that `tree` names; the
    /// others are removed.
    func installNamed(_ tree: ComposefsTree) throws {
        defer { pending = [:] }
        var named: [(entry: Int, object: DigestStoreObject)] = []
        for i in 0..<tree.count where !tree.isHardlink(i) {
            guard tree[i].content == nil, let d = tree[i].digest, let object = pending.removeValue(forKey: d) else { continue }
            named.append((i, object))
        }
        do {
            try store.install(named.map(\.object)) { k, e in
                RepoError("writing \(displayPath(tree.path(of: named[k].entry))) to the digest store", e.description)
            }
        } catch let e as SystemError {
            throw RepoError("syncing the digest store", e.description)
        }
    }

    /// The composefs tree of the applied image.
    func tree(_ root: OCINode) throws -> ComposefsTree {
        var tree = ComposefsTree(root: node(root))
        var stack: [(OCINode, Int)] = [(root, ComposefsTree.root)]
        while let (dir, index) = stack.popLast() {
            for (name, child) in dir.children {
                if options.skipDevices, child.kind == .special, child.specialType == S_IFCHR || child.specialType == S_IFBLK { continue }
                let i = try tree.addChild(index, name: name, node: node(child))
                if child.kind == .directory { stack.append((child, i)) }
            }
        }
        return tree
    }

    /// A node as DirectoryScanner makes one from the unpacked file.
    private func node(_ n: OCINode) -> ComposefsNode {
        let type: UInt32
        switch n.kind {
        case .directory: type = FileMode.directory
        case .file: type = FileMode.regular
        case .symlink: type = FileMode.symlink
        case .special: type = n.specialType
        }
        var c = ComposefsNode(mode: type | n.mode, uid: n.uid, gid: n.gid,
                              mtimeSec: options.useEpoch ? 0 : n.mtime, mtimeNsec: options.useEpoch ? 0 : n.mtimeNsec,
                              xattrs: n.xattrs.map { ComposefsXattr(name: $0.name, value: $0.value) })
        if n.kind == .special, n.specialType == S_IFCHR || n.specialType == S_IFBLK {
            c.rdev = UInt32(truncatingIfNeeded: n.rdev)
        }
        switch n.content {
        case .file(let digest, let size, let inline)?:
            c.size = size
            if let digest {
                c.digest = digest
                c.payload = objectPath(forDigest: digest)
            }
            c.content = inline
        case .symlink(let target)?:
            c.payload = target
            c.size = UInt64(target.count)
        case .object?, nil:
            break
        }
        return c
    }
}

public enum OCIComposefs {
    /// The composefs tree of the image at `text` (`oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:TAG]`), as
    /// DirectoryScanner gives it with `options` for the unpacked image; its
    /// regular files' contents added to `store`, which the caller holds a
    /// shared lock on until the image naming them is written. Every blob is
    /// checked against its digest as it is read; objects reach the store
    /// only once every layer checked, and only those the final tree names.
    public static func tree(of text: String, store: DigestStore, options: DirectoryScanOptions) throws -> ComposefsTree {
        let source = try OCISource(parsing: text)
        let image = try OCIImage.open(source)
        let sink = DigestStoreSink(store: store, options: options)
        let applier = OCILayerApplier(sink: sink)
        do {
            try withUTF8ArchiveNames { try applier.apply(image) }
            let tree = try sink.tree(applier.root)
            try sink.installNamed(tree)
            return tree
        } catch let e as RepoError {
            throw RepoError("reading image \(source)", e.description)
        } catch let e as ComposefsError {
            throw RepoError("reading image \(source)", e.description)
        }
    }
}
