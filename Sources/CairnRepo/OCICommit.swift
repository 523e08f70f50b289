import CLibArchive
import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Committing an OCI image: the layers applied (OCILayers.swift) with each
/// file's content streamed into a content object as its entry is read.
/// Content a later layer replaced or deleted is taken out of the
/// transaction before it commits.

// MARK: A GInputStream over the current tar entry

private let instanceSlotOffset = MemoryLayout<GInputStream>.stride

/// A GInputStream subclass whose read_fn pulls from libarchive; its
/// instances carry an EntryData pointer after the GInputStream.
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
            let state = Unmanaged<EntryData>.fromOpaque(raw).takeUnretainedValue()
            let n = state.read(buffer!, Int(count))
            if n < 0 {
                g_set_error_literal(error, g_io_error_quark(), gint(G_IO_ERROR_FAILED.rawValue), state.failure?.reason ?? "read failed")
            }
            return gssize(n)
        }
    },
    guint(instanceSlotOffset + MemoryLayout<UnsafeMutableRawPointer?>.stride), nil, GTypeFlags(rawValue: 0))

// MARK: Content objects

final class OstreeContentSink: OCIContentSink {
    let repo: Repository
    let state: CommitFilterState
    /// Every content object written, to find those no path keeps.
    var written: Set<String> = []

    init(repo: Repository, state: CommitFilterState) {
        self.repo = repo
        self.state = state
    }

    let namesMustBeUTF8 = true

    private var keepXattrs: Bool {
        let leaveOut = OSTREE_REPO_COMMIT_MODIFIER_FLAGS_SKIP_XATTRS.rawValue | OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue
        return state.modifierFlags & leaveOut == 0
    }

    private var canonical: Bool { state.modifierFlags & OSTREE_REPO_COMMIT_MODIFIER_FLAGS_CANONICAL_PERMISSIONS.rawValue != 0 }

    func keptXattrs(_ xattrs: [Xattr]) -> [Xattr] { keepXattrs ? xattrs : [] }

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

    /// Streams the entry's data into a content object.
    func writeContent(_ node: OCINode, entry: OpaquePointer, data streamState: EntryData, path: String) throws {
        let context = streamState.context
        var target: String? = nil
        if node.kind == .symlink {
            guard let raw = archive_entry_symlink(entry), let t = String(validatingCString: raw) else {
                throw RepoError(context, "a symlink whose target is not valid UTF-8, as ostree requires")
            }
            target = t
        }
        let size = streamState.remaining
        let info = fileInfo(node, path: path, size: size, symlinkTarget: target)
        defer { unref(info) }
        let xattrs = xattrVariant(node)
        defer { if let xattrs { g_variant_unref(xattrs) } }

        var input: UnsafeMutablePointer<GInputStream>? = nil
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
            node.content = .object(checksum)
        } catch let error as RepoError {
            throw streamState.failure ?? error  // the layer's own error, not libostree's retelling
        }
    }

    // MARK: The finished tree

    /// Writes the dirmeta objects of the tree at `node` and fills `mtree`.
    func write(_ node: OCINode, path: String, into mtree: OpaquePointer) throws {
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

    /// Content objects written but named by no path of the tree at `root`.
    func unreferencedObjects(_ root: OCINode) -> Set<String> {
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
            let sink = OstreeContentSink(repo: self, state: state)
            let builder = OCILayerApplier(sink: sink)
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
            try sink.write(builder.root, path: "", into: mtree)
            try discardStagedContent(sink.unreferencedObjects(builder.root))
            return special
        }
    }
}
