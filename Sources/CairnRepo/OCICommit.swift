import CLibArchive
import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Committing an OCI image: its layers applied in order, as the image
/// spec's changeset rules say, to a tree of metadata in memory; each
/// file's content streams from the layer into a content object as its
/// entry is read, so nothing of the image is unpacked to disk. Content a
/// later layer replaced or deleted is taken out of the transaction before
/// it commits.
///
/// Layers are hostile input: entry names are bytes, a name with `..`, a
/// hardlink that is absolute or goes up, a path through a non-directory
/// are refused naming the layer and the entry.

/// A path of the image's tree, in memory.
final class OCINode {
    enum Kind { case directory, file, symlink, special }

    var kind: Kind
    var uid: UInt32 = 0
    var gid: UInt32 = 0
    /// Permission bits (07777).
    var mode: UInt32 = 0o755
    var xattrs: [Xattr] = []
    /// The content object of a file or symlink.
    var checksum: String?
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

    var kindName: String {
        switch kind {
        case .directory: return "directory"
        case .file: return "regular file"
        case .symlink: return "symlink"
        case .special: return "device node, fifo or socket"
        }
    }
}

// MARK: A GInputStream over the current tar entry

/// What the stream reads: `remaining` bytes of the tar reader's current entry.
private final class EntryStreamState {
    let reader: LayerReader
    let context: String
    var remaining: Int64
    var failure: RepoError?

    init(reader: LayerReader, context: String, size: Int64) {
        self.reader = reader
        self.context = context
        self.remaining = size
    }

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

private let instanceSlotOffset = MemoryLayout<GInputStream>.stride

/// A GInputStream subclass whose read_fn pulls from libarchive; its
/// instances carry an EntryStreamState pointer after the GInputStream.
private let entryStreamType: GType = g_type_register_static_simple(
    g_input_stream_get_type(), "CairnLayerEntryStream", guint(MemoryLayout<GInputStreamClass>.stride),
    { klass, _ in
        let c = klass!.assumingMemoryBound(to: GInputStreamClass.self)
        c.pointee.read_fn = { stream, buffer, count, _, error in
            let slot = UnsafeMutableRawPointer(stream!).advanced(by: instanceSlotOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
            guard let raw = slot.pointee else {
                g_set_error_literal(error, g_io_error_quark(), gint(G_IO_ERROR_CLOSED.rawValue), "layer entry stream used after its entry")
                return -1
            }
            let state = Unmanaged<EntryStreamState>.fromOpaque(raw).takeUnretainedValue()
            let n = state.read(buffer!, Int(count))
            if n < 0 {
                g_set_error_literal(error, g_io_error_quark(), gint(G_IO_ERROR_FAILED.rawValue), state.failure?.reason ?? "read failed")
            }
            return gssize(n)
        }
    },
    guint(instanceSlotOffset + MemoryLayout<UnsafeMutableRawPointer?>.stride), nil, GTypeFlags(rawValue: 0))

// MARK: Applying layers

final class OCITreeBuilder {
    let repo: Repository
    let state: CommitFilterState
    let root = OCINode(kind: .directory, layer: 0)
    /// Every content object written, to find those no path keeps.
    var written: Set<String> = []
    private var layer = 0
    private var layerName = ""

    init(repo: Repository, state: CommitFilterState) {
        self.repo = repo
        self.state = state
    }

    private var keepXattrs: Bool {
        let leaveOut = OSTREE_REPO_COMMIT_MODIFIER_FLAGS_SKIP_XATTRS.rawValue | OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue
        return state.modifierFlags & leaveOut == 0
    }

    private var canonical: Bool { state.modifierFlags & OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue != 0 }

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
        if String(validating: name, as: UTF8.self) == nil {
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
            // A hardlink is the same file: its content object (ostree
            // stores a hardlink as two names of one object).
            let copy = OCINode(kind: node.kind, layer: layer)
            (copy.uid, copy.gid, copy.mode, copy.xattrs, copy.checksum) = (node.uid, node.gid, node.mode, node.xattrs, node.checksum)
            parent.children[leaf] = copy
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
            node.checksum = try writeContent(node, entry: entry, name: name, parts: parts, reader: reader)
            parent.children[leaf] = node
        default:
            // Device nodes, fifos, sockets: no repository stores them; the
            // tree keeps them so that later layers act on them as on any path.
            let node = OCINode(kind: .special, layer: layer)
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
        node.xattrs = []
        guard keepXattrs else { return }
        // Overlay bookkeeping of the build host and NFSv4 ACLs say nothing
        // of the image (umoci leaves them out too); security.capability and
        // SELinux labels are kept.
        node.xattrs = archiveEntryXattrs(entry).filter { x in
            !x.name.starts(with: Array("trusted.overlay.".utf8)) && x.name != Array("system.nfs4_acl".utf8)
        }
        // One order whatever the layer's: by name.
        node.xattrs.sort { $0.name.lexicographicallyPrecedes($1.name) }
    }

    /// A GFileInfo of `node` after the commit filter and modifier flags, as
    /// a directory commit gives them.
    private func fileInfo(_ node: OCINode, path: String, size: Int64 = 0, symlinkTarget: String? = nil) -> OpaquePointer {
        let info = g_file_info_new()!
        let type: UInt32 = node.kind == .directory ? S_IFDIR : node.kind == .symlink ? S_IFLNK : S_IFREG
        g_file_info_set_file_type(info, node.kind == .directory ? G_FILE_TYPE_DIRECTORY : node.kind == .symlink ? G_FILE_TYPE_SYMBOLIC_LINK : G_FILE_TYPE_REGULAR)
        g_file_info_set_attribute_uint32(info, "unix::mode", type | node.mode)
        g_file_info_set_attribute_uint32(info, "unix::uid", node.uid)
        g_file_info_set_attribute_uint32(info, "unix::gid", node.gid)
        if type == S_IFREG { g_file_info_set_size(info, goffset(size)) }
        if let symlinkTarget { g_file_info_set_symlink_target(info, symlinkTarget) }
        _ = state.apply(path, info)  // every kind here is one it allows
        if canonical {
            let mode = g_file_info_get_attribute_uint32(info, "unix::mode")
            if type != S_IFLNK { g_file_info_set_attribute_uint32(info, "unix::mode", mode & (type | 0o755)) }
            g_file_info_set_attribute_uint32(info, "unix::uid", 0)
            g_file_info_set_attribute_uint32(info, "unix::gid", 0)
        }
        return info
    }

    private func xattrVariant(_ node: OCINode) -> OpaquePointer? {
        keepXattrs ? makeXattrVariant(node.xattrs) : nil
    }

    /// Streams the entry's data into a content object; returns its checksum.
    private func writeContent(_ node: OCINode, entry: OpaquePointer, name: [UInt8], parts: [[UInt8]], reader: LayerReader) throws -> String {
        let path = Self.joined(parts[...])
        let context = "\(layerName), entry '\(displayPath(name))'"
        var target: String? = nil
        var size: Int64 = 0
        if node.kind == .symlink {
            guard let raw = archive_entry_symlink(entry), let t = String(validatingCString: raw) else {
                throw refuse(name, "a symlink whose target is not valid UTF-8, as ostree requires")
            }
            target = t
        } else {
            size = archive_entry_size(entry)
            if size < 0 { throw refuse(name, "a regular file of negative size") }
        }
        let info = fileInfo(node, path: path, size: size, symlinkTarget: target)
        defer { unref(info) }
        let xattrs = xattrVariant(node)
        defer { if let xattrs { g_variant_unref(xattrs) } }

        var input: UnsafeMutablePointer<GInputStream>? = nil
        let streamState = EntryStreamState(reader: reader, context: context, size: size)
        if node.kind == .file {
            let object = g_object_new_with_properties(entryStreamType, 0, nil, nil)!
            let slot = UnsafeMutableRawPointer(object).advanced(by: instanceSlotOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
            slot.pointee = Unmanaged.passUnretained(streamState).toOpaque()
            input = UnsafeMutableRawPointer(object).assumingMemoryBound(to: GInputStream.self)
        }
        defer {
            if let input {
                // Nothing may read through it once this frame is gone.
                UnsafeMutableRawPointer(input).advanced(by: instanceSlotOffset).assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee = nil
                g_object_unref(input)
            }
        }
        var contentStream: UnsafeMutablePointer<GInputStream>? = nil
        var length: guint64 = 0
        do {
            try gcall(context) { ostree_raw_file_to_content_stream(input, info, xattrs, &contentStream, &length, nil, $0) }
            defer { unref(contentStream) }
            var csum: UnsafeMutablePointer<guchar>? = nil
            try gcall(context) { ostree_repo_write_content(repo.repo, nil, contentStream, length, &csum, nil, $0) }
            let checksum = takeGString(ostree_checksum_from_bytes(csum))!
            g_free(csum)
            if streamState.remaining != 0 { throw RepoError(context, "libostree left \(streamState.remaining) bytes of the file unread") }
            written.insert(checksum)
            return checksum
        } catch let error as RepoError {
            throw streamState.failure ?? error  // the layer's own error, not libostree's retelling
        }
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

    /// Writes the dirmeta objects and fills `mtree`.
    func write(into mtree: OpaquePointer) throws {
        try write(root, path: "", into: mtree)
    }

    private func write(_ node: OCINode, path: String, into mtree: OpaquePointer) throws {
        let info = fileInfo(node, path: path.isEmpty ? "/" : path)
        defer { unref(info) }
        let xattrs = xattrVariant(node)
        let meta = ostree_create_directory_metadata(info, xattrs)!
        if let xattrs { g_variant_unref(xattrs) }
        defer { g_variant_unref(meta) }
        var csum: UnsafeMutablePointer<guchar>? = nil
        try gcall("writing metadata of \(path.isEmpty ? "/" : path)") {
            ostree_repo_write_metadata(repo.repo, OSTREE_OBJECT_TYPE_DIR_META, nil, meta, &csum, nil, $0)
        }
        ostree_mutable_tree_set_metadata_checksum(mtree, takeGString(ostree_checksum_from_bytes(csum)))
        g_free(csum)
        for (name, child) in node.children {
            let childName = String(decoding: name, as: UTF8.self)  // checked UTF-8 when applied
            let childPath = path + "/" + childName
            switch child.kind {
            case .directory:
                var sub: OpaquePointer? = nil
                try gcall("adding \(childPath)") { ostree_mutable_tree_ensure_dir(mtree, childName, &sub, $0) }
                defer { unref(sub) }
                try write(child, path: childPath, into: sub!)
            case .file, .symlink:
                try gcall("adding \(childPath)") { ostree_mutable_tree_replace_file(mtree, childName, child.checksum!, $0) }
            case .special:
                continue  // left out, as --skip-special asked (refused before otherwise)
            }
        }
    }

    /// Content objects written but named by no path of the final tree.
    func unreferencedObjects() -> Set<String> {
        var unused = written
        func walk(_ node: OCINode) {
            for child in node.children.values {
                if let c = child.checksum { unused.remove(c) }
                if child.kind == .directory { walk(child) }
            }
        }
        walk(root)
        return unused
    }
}

extension Repository {
    /// Commits the tree of an OCI image (`oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:TAG]`) to
    /// `options.branch`. The image's documents are checked before the
    /// transaction; each layer's digests as it is read; the ref moves only
    /// when everything checked and was written.
    public func commit(oci text: String, options: CommitOptions) throws -> CommitResult {
        try withUTF8ArchiveNames { try commitOCI(text, options: options) }
    }

    private func commitOCI(_ text: String, options: CommitOptions) throws -> CommitResult {
        try Repository.validateRef(options.branch)
        let source = try OCISource(parsing: text)
        let image = try OCIImage.open(source)
        var options = options
        if let m = image.manifestDigest { options.metadata.append((MetadataKey.ociManifestDigest, .string(m))) }
        options.metadata.append((MetadataKey.ociConfigDigest, .string(image.configDigest)))
        if let version = image.labels["org.opencontainers.image.version"], !options.metadata.contains(where: { $0.key == MetadataKey.version }) {
            options.metadata.append((MetadataKey.version, .string(version)))
        }
        let context = "committing \(source) to \(path)"
        return try commitTree(options: options, context: context, annotatePath: false) { mtree, state in
            let builder = OCITreeBuilder(repo: self, state: state)
            do {
                try builder.apply(image)
                if !options.keepEtc, try builder.moveEtc() {
                    options.notice("committing /etc as /usr/etc (ostree convention; --keep-etc keeps it in place)")
                }
            } catch let e as RepoError {
                throw RepoError("", e.description)
            }
            let special = builder.specialFiles()
            if special.count > 0 && !options.skipSpecial {
                let more = special.count > special.first.count ? ", ..." : ""
                throw RepoError("", "\(special.count) device node(s), fifo(s) or socket(s) cannot be stored: "
                                + special.first.joined(separator: ", ") + more + " (--skip-special leaves them out)")
            }
            try builder.write(into: mtree)
            try discardStagedContent(builder.unreferencedObjects())
            return special
        }
    }
}
