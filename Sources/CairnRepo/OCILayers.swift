import CLibArchive
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Applying an OCI image's layers in order, as the image spec's changeset
/// rules say, to a tree of metadata in memory. Each file's content streams
/// from the layer to a sink as its entry is read (content objects of a
/// repository for a commit, a digest store for a composefs image), so
/// nothing of the image is unpacked to disk.
///
/// Layers are hostile input: entry names are bytes, a name with `..`, a
/// hardlink that is absolute or goes up, a path through a non-directory
/// are refused naming the layer and the entry.

/// A path of the image's tree, in memory.
final class OCINode {
    enum Kind { case directory, file, symlink, special }

    /// Where a file's or symlink's content went.
    enum Content {
        /// A repository's content object (files and symlinks).
        case object(String)
        /// A regular file: its fs-verity digest (nil when empty) and its
        /// bytes where an image keeps them inline.
        case file(digest: [UInt8]?, size: UInt64, inline: [UInt8]?)
        case symlink(target: [UInt8])
    }

    var kind: Kind
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    /// Permission bits (07777).
    var mode: UInt32 = 0o755
    var mtime: Int64 = 0
    var mtimeNsec: UInt32 = 0
    /// Of a special file: its S_IFMT bits and device number.
    var specialType: UInt32 = 0
    var rdev: UInt64 = 0
    var xattrs: [Xattr] = []
    var content: Content?
    var children: [[UInt8]: OCINode] = [:]
    /// The layer whose entry made it (1-based; an implicit parent: the
    /// layer of the entry that needed it).
    var layer: Int
    /// The newest layer with an entry at or below it: what an opaque
    /// directory or a whiteout keeps.
    var touched: Int

    init(kind: Kind, layer: Int) {
        self.kind = kind
        self.layer = layer
        self.touched = layer
    }

    /// The content object of a committed file or symlink.
    var checksum: String? {
        if case .object(let c) = content { return c }
        return nil
    }

    /// A second name of the same file (a hardlink), made by `layer`.
    func link(layer: Int) -> OCINode {
        let copy = OCINode(kind: kind, layer: layer)
        (copy.uid, copy.gid, copy.mode, copy.mtime, copy.mtimeNsec) = (uid, gid, mode, mtime, mtimeNsec)
        (copy.specialType, copy.rdev, copy.xattrs, copy.content) = (specialType, rdev, xattrs, content)
        return copy
    }

    var kindName: String {
        switch kind {
        case .directory: return "directory"
        case .file: return "regular file"
        case .symlink: return "symlink"
        case .special: return "device node, fifo or socket"
        }
    }
}

/// The data of the tar reader's current entry: `remaining` bytes.
final class EntryData {
    let reader: LayerReader
    /// "layer N of M (sha256:...), entry 'NAME'", for messages.
    let context: String
    var remaining: Int64
    var failure: RepoError?

    init(reader: LayerReader, context: String, size: Int64) {
        self.reader = reader
        self.context = context
        self.remaining = size
    }

    /// Up to `count` bytes; 0 at the entry's end; -1 with `failure` set.
    func read(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        if remaining == 0 { return 0 }
        let n = archive_read_data(reader.tar, buffer, Int(min(Int64(count), remaining)))
        if n < 0 {
            failure = reader.failure(context)
            return -1
        }
        if n == 0 {
            failure = RepoError(context, "truncated: \(remaining) bytes of the file missing")
            return -1
        }
        remaining -= Int64(n)
        return n
    }
}

/// Where an applier's file contents go.
protocol OCIContentSink: AnyObject {
    /// Whether names must be UTF-8 (ostree's rule; composefs takes any bytes).
    var namesMustBeUTF8: Bool { get }
    /// The xattrs of an entry that the result keeps.
    func keptXattrs(_ xattrs: [Xattr]) -> [Xattr]
    /// Streams the content of the regular file or symlink entry `node` was
    /// made from (its metadata set) to the store, and sets `node.content`.
    /// `path` is the node's path in the tree ("/usr/bin/env").
    func writeContent(_ node: OCINode, entry: OpaquePointer, data: EntryData, path: String) throws
}

// MARK: Applying layers

final class OCILayerApplier {
    let sink: OCIContentSink
    let root = OCINode(kind: .directory, layer: 0)
    private var layer = 0
    private var layerName = ""

    init(sink: OCIContentSink) {
        self.sink = sink
    }

    func apply(_ image: OCIImage) throws {
        for (i, layer) in image.layers.enumerated() {
            self.layer = i + 1
            self.layerName = layer.name
            let reader: LayerReader
            do { reader = try LayerReader(layer, store: image.store) } catch let e as RepoError { throw RepoError(layer.name, e.reason) }
            var entry: OpaquePointer? = nil
            var last: String? = nil
            while true {
                let r = archive_read_next_header(reader.tar, &entry)
                if r == ARCHIVE_EOF { break }
                guard r == ARCHIVE_OK, let entry else {
                    let at = entry.flatMap { archive_entry_pathname($0) }.map { " at entry '\(Self.display($0))'" }
                        ?? last.map { " after entry '\($0)'" } ?? ""
                    throw reader.failure(layer.name + at)
                }
                try applyEntry(entry, reader: reader)
                last = archive_entry_pathname(entry).map(Self.display)
            }
            try reader.finish()
        }
    }

    static func bytes(_ p: UnsafePointer<CChar>) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }

    static func display(_ p: UnsafePointer<CChar>) -> String { displayPath(bytes(p)) }

    /// Path components of an entry or hardlink name; nil if one is "..".
    static func components(_ name: [UInt8]) -> [[UInt8]]? {
        var parts: [[UInt8]] = []
        for part in name.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if part.elementsEqual([0x2e]) { continue }
            if part.elementsEqual([0x2e, 0x2e]) { return nil }
            parts.append(Array(part))
        }
        return parts
    }

    private func refuse(_ entry: [UInt8], _ reason: String) -> RepoError {
        RepoError("\(layerName), entry '\(displayPath(entry))'", reason)
    }

    private static func joined(_ parts: ArraySlice<[UInt8]>) -> String {
        "/" + parts.map { displayPath($0) }.joined(separator: "/")
    }

    /// The node at `parts`, or nil; with `why`, a non-directory on the way is refused.
    private func lookup(_ parts: [[UInt8]]) -> OCINode? {
        var node = root
        for part in parts {
            guard node.kind == .directory, let next = node.children[part] else { return nil }
            node = next
        }
        return node
    }

    /// The directory holding `parts`, made (as 0755 root:root, as
    /// runtimes make missing parents) where missing, each marked touched.
    private func parentDirectory(_ parts: [[UInt8]], entry: [UInt8]) throws -> OCINode {
        var node = root
        node.touched = layer
        for (i, part) in parts.dropLast().enumerated() {
            if let next = node.children[part] {
                guard next.kind == .directory else {
                    throw refuse(entry, "needs \(Self.joined(parts[...i])) to be a directory, but layer \(next.layer) made it a \(next.kindName)")
                }
                node = next
            } else {
                try checkUTF8(part, entry: entry)
                let made = OCINode(kind: .directory, layer: layer)
                node.children[part] = made
                node = made
            }
            node.touched = layer
        }
        return node
    }

    private func checkUTF8(_ name: [UInt8], entry: [UInt8]) throws {
        if sink.namesMustBeUTF8, String(validating: name, as: UTF8.self) == nil {
            throw refuse(entry, "the name is not valid UTF-8, which ostree requires")
        }
    }

    private func applyEntry(_ entry: OpaquePointer, reader: LayerReader) throws {
        guard let rawName = archive_entry_pathname(entry) else { throw RepoError(layerName, "an entry without a name") }
        let name = Self.bytes(rawName)
        guard let parts = Self.components(name) else { throw refuse(name, "'..' in the name would reach outside the tree") }

        // Whiteouts (image spec, layer.md): they hide what lower layers made.
        if let last = parts.last, last.starts(with: Array(".wh.".utf8)) {
            let target = Array(last.dropFirst(4))
            guard let dir = lookup(Array(parts.dropLast())), dir.kind == .directory else { return }  // nothing to hide
            if target == Array(".wh..opq".utf8) {
                for (child, node) in dir.children { hideLower(node, named: child, in: dir) }
            } else if target.starts(with: Array(".wh.".utf8)) {
                return  // aufs bookkeeping (.wh..wh.plnk and the like), which runtimes ignore
            } else if let node = dir.children[target] {
                hideLower(node, named: target, in: dir)
            }
            return
        }

        let type = archive_entry_filetype(entry) & S_IFMT
        if parts.isEmpty {
            // The root itself: its metadata.
            guard archive_entry_hardlink(entry) == nil, type == S_IFDIR else { throw refuse(name, "is the root directory, but not a directory") }
            try setMetadata(root, from: entry, name: name)
            root.layer = layer
            root.touched = layer
            return
        }
        for part in parts { try checkUTF8(part, entry: name) }
        let parent = try parentDirectory(parts, entry: name)
        let leaf = parts.last!
        let existing = parent.children[leaf]

        if let link = archive_entry_hardlink(entry) {
            let linkName = Self.bytes(link)
            if linkName.first == 0x2f { throw refuse(name, "a hardlink to '\(displayPath(linkName))', an absolute path; it must name a file of the image") }
            guard let target = Self.components(linkName) else {
                throw refuse(name, "a hardlink to '\(displayPath(linkName))', which goes up with '..'; it must name a file of the image")
            }
            if target == parts { return }  // itself: nothing changes
            guard let node = lookup(target) else {
                throw refuse(name, "a hardlink to '\(displayPath(linkName))', which no earlier entry of this or a lower layer made")
            }
            guard node.kind != .directory else { throw refuse(name, "a hardlink to '\(displayPath(linkName))', a directory") }
            // A hardlink is the same file: the same content (ostree stores
            // a hardlink as two names of one object; mkcomposefs as two
            // inodes with one backing object).
            parent.children[leaf] = node.link(layer: layer)
            return
        }

        switch type {
        case S_IFDIR:
            if let existing, existing.kind == .directory {
                // A directory over a directory: new metadata, lower contents stay.
                try setMetadata(existing, from: entry, name: name)
                existing.layer = layer
                existing.touched = layer
                return
            }
            let node = OCINode(kind: .directory, layer: layer)
            try setMetadata(node, from: entry, name: name)
            parent.children[leaf] = node
        case S_IFREG, S_IFLNK:
            let node = OCINode(kind: type == S_IFREG ? .file : .symlink, layer: layer)
            try setMetadata(node, from: entry, name: name)
            let size = type == S_IFREG ? archive_entry_size(entry) : 0
            if size < 0 { throw refuse(name, "a regular file of negative size") }
            let data = EntryData(reader: reader, context: "\(layerName), entry '\(displayPath(name))'", size: size)
            try sink.writeContent(node, entry: entry, data: data, path: Self.joined(parts[...]))
            parent.children[leaf] = node
        default:
            // Device nodes, fifos, sockets: a composefs image keeps them; no
            // repository does, but the tree keeps them so that later layers
            // act on them as on any path.
            let node = OCINode(kind: .special, layer: layer)
            try setMetadata(node, from: entry, name: name)
            node.specialType = UInt32(type)
            node.rdev = UInt64(archive_entry_rdev(entry))
            parent.children[leaf] = node
        }
    }

    /// A whiteout or opaque marker hides what lower layers made of `node`;
    /// what this layer itself put there stays (the spec: whiteouts apply to
    /// lower layers only, in whatever order the layer lists its entries).
    private func hideLower(_ node: OCINode, named name: [UInt8], in dir: OCINode) {
        if node.touched < layer {
            dir.children[name] = nil
        } else if node.kind == .directory {
            for (child, sub) in node.children { hideLower(sub, named: child, in: node) }
        }
    }

    private func setMetadata(_ node: OCINode, from entry: OpaquePointer, name: [UInt8]) throws {
        let uid = archive_entry_uid(entry), gid = archive_entry_gid(entry)
        guard (0...Int64(UInt32.max)).contains(uid), (0...Int64(UInt32.max)).contains(gid) else {
            throw refuse(name, "owner \(uid):\(gid) is not a 32-bit user and group id")
        }
        node.uid = UInt32(uid)
        node.gid = UInt32(gid)
        node.mode = UInt32(archive_entry_perm(entry)) & 0o7777
        node.mtime = Int64(archive_entry_mtime(entry))
        node.mtimeNsec = UInt32(clamping: archive_entry_mtime_nsec(entry))
        // Overlay bookkeeping of the build host and NFSv4 ACLs say nothing
        // of the image (umoci leaves them out too); security.capability and
        // SELinux labels are kept.
        node.xattrs = sink.keptXattrs(archiveEntryXattrs(entry).filter { x in
            !x.name.starts(with: Array("trusted.overlay.".utf8)) && x.name != Array("system.nfs4_acl".utf8)
        })
        // One order whatever the layer's: by name.
        node.xattrs.sort { $0.name.lexicographicallyPrecedes($1.name) }
    }

    // MARK: The finished tree

    /// Special files left in the tree, by path.
    func specialFiles() -> SpecialFiles {
        var found = SpecialFiles()
        var paths: [String] = []
        func walk(_ node: OCINode, _ path: String) {
            for (name, child) in node.children {
                let p = path + "/" + displayPath(name)
                if child.kind == .special { found.count += 1; paths.append(p) }
                if child.kind == .directory { walk(child, p) }
            }
        }
        walk(root, "")
        paths.sort()
        found.first = Array(paths.prefix(5))
        return found
    }

    /// ostree's convention, as for a directory: /etc (with no /usr/etc) is
    /// committed as /usr/etc; a /usr made for it gets the root's metadata.
    func moveEtc() throws -> Bool {
        guard let etc = root.children[Array("etc".utf8)], etc.kind == .directory else { return false }
        let usrName = Array("usr".utf8)
        let usr: OCINode
        if let existing = root.children[usrName] {
            guard existing.kind == .directory else {
                throw RepoError("/usr", "is a \(existing.kindName), but /etc is committed below /usr/etc (ostree convention; --keep-etc keeps /etc in place)")
            }
            if existing.children[Array("etc".utf8)] != nil { return false }
            usr = existing
        } else {
            usr = OCINode(kind: .directory, layer: 0)
            (usr.uid, usr.gid, usr.mode, usr.xattrs) = (root.uid, root.gid, root.mode, root.xattrs)
            root.children[usrName] = usr
        }
        root.children[Array("etc".utf8)] = nil
        usr.children[Array("etc".utf8)] = etc
        return true
    }
}
