/// The tree libcomposefs' own reader (`lcfs_load_node_from_image`, 1.0.8)
/// builds from an image: what `composefs-info dump` and `ls` print. It
/// differs from `ImageReader.read`, which recovers mkcomposefs's input:
///
/// - entries are read depth-first in dirent order, and the first name met
///   for an inode owns it; later names are hardlinks to it;
/// - xattrs keep the image's order: the inline ones, then the shared ones;
/// - `trusted.overlay.redirect` and `.metacopy` become payload and digest of
///   regular files and are hidden; a regular file with
///   `trusted.overlay.overlay.whiteout` turns back into a 0:0 character
///   device of size 0; `trusted.overlay.overlay.whiteouts`,
///   `user.overlay.whiteout` and `user.overlay.whiteouts` are hidden; other
///   `trusted.overlay.overlay.*` are unescaped to `trusted.overlay.*`, and the
///   remaining `trusted.overlay.*` (the root's `opaque=y`) are hidden.
///   `user.overlay.opaque` and the unescaped `trusted.overlay.opaque=x` that
///   mark a directory holding whiteouts stay;
/// - real whiteouts (the root's `00`…`ff`, at any depth) are left out;
/// - a last inline xattr of a bare prefix with an empty value is lost;
/// - sizes are the inodes' (a directory's is its dirent bytes), and a
///   symlink's target ends at its first NUL.
extension ImageReader {
    /// `topLevel`: keep only these names in the root (composefs-info --filter);
    /// what is left out claims no inode, so a later name of it owns it.
    public static func composefsInfoTree(_ image: [UInt8], topLevel: Set<[UInt8]>? = nil) throws -> ComposefsTree {
        try image.withUnsafeBytes { try composefsInfoTree($0, topLevel: topLevel) }
    }

    public static func composefsInfoTree(_ image: UnsafeRawBufferPointer, topLevel: Set<[UInt8]>? = nil) throws -> ComposefsTree {
        var r = Reader(img: image)
        let (rootNid, _, _) = try r.header()
        return try r.libcomposefsTree(rootNid: rootNid, topLevel: topLevel)
    }
}

private let escapedOverlay = Array("trusted.overlay.overlay.".utf8)
private let hiddenMarkers = [xEscWhiteouts, xUserWhiteout, xUserWhiteouts]

extension Reader {
    func libcomposefsTree(rootNid: UInt64, topLevel: Set<[UInt8]>?) throws -> ComposefsTree {
        let rootRaw = try inode(rootNid)
        guard rootRaw.mode & FileMode.typeMask == FileMode.directory else { throw fail("root is not a directory") }
        var tree = ComposefsTree(root: try libcomposefsNode(rootRaw))
        var owner: [UInt64: Int] = [rootNid: ComposefsTree.root]
        // A stack, not recursion: hostile images may nest deeply. Children
        // go on reversed so they come off in dirent order, each subtree
        // before the next sibling, as libcomposefs' recursion visits them.
        var stack: [(parent: Int, name: [UInt8], nid: UInt64)] = []
        func push(_ dir: RawInode, _ entry: Int, filter: Set<[UInt8]>?) throws {
            for (name, nid, _) in try dirents(dir).reversed() where filter?.contains(name) ?? true {
                stack.append((entry, name, nid))
            }
        }
        try push(rootRaw, ComposefsTree.root, filter: topLevel)
        while let (parent, name, nid) = stack.popLast() {
            if let o = owner[nid] {
                guard !tree[o].isDirectory else { throw fail("directory linked twice (nid \(nid))") }
                try tree.addHardlink(parent, name: name, target: o, incrementNlink: false)
                continue
            }
            let raw = try inode(nid)
            if raw.mode & FileMode.typeMask == FileMode.charDevice && raw.iu == 0 { continue }
            let e = try tree.addChild(parent, name: name, node: try libcomposefsNode(raw))
            owner[nid] = e
            if raw.mode & FileMode.typeMask == FileMode.directory { try push(raw, e, filter: nil) }
        }
        return tree
    }

    func libcomposefsNode(_ n: RawInode) throws -> ComposefsNode {
        var node = ComposefsNode(mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.nlink, size: n.size,
                                 mtimeSec: n.mtimeSec, mtimeNsec: n.mtimeNsec)
        let at = Int(n.nid) * 32
        switch n.mode & FileMode.typeMask {
        case FileMode.charDevice, FileMode.blockDevice:
            node.rdev = n.iu
        case FileMode.symlink:
            let t = try data(n, limit: 4095).prefix { $0 != 0 }
            guard !t.isEmpty else { throw fail("empty symlink target", at) }
            node.payload = Array(t)
            node.size = UInt64(t.count)
        case FileMode.regular where n.size > 0:
            if n.layout == 0 || n.layout == 2 {
                node.content = try data(n, limit: ImageWriter.maxInlineContent)
            } else if n.layout != 4 {
                throw fail("file data neither flat nor chunk-based", at)
            }
        case FileMode.directory, FileMode.regular, FileMode.fifo, FileMode.socket:
            break
        default:
            throw fail("unknown file type in mode \(String(n.mode, radix: 8))", at)
        }
        // libcomposefs reads an inline entry only while its 4-byte header
        // ends strictly before the xattr area does: a last entry of just a
        // header (a bare prefix such as "user." with an empty value) is lost.
        let inline = (n.sharedCount..<n.xattrs.count).filter { n.xattrOffsets[$0] + 4 < n.tailOffset }
        let order = inline + Array(0..<n.sharedCount)
        for i in order {
            var x = n.xattrs[i]
            let regular = node.isRegular
            if x.name == xRedirect {
                if regular { node.payload = redirectPayload(entryAt: n.xattrOffsets[i], x.value.count) }
                continue
            }
            if x.name == xMetacopy {
                if regular && x.value.count == 36 { node.digest = Array(x.value[4...]) }
                continue
            }
            if x.name == xEscWhiteout && regular {
                node.mode = FileMode.charDevice | (node.mode & ~FileMode.typeMask)
                node.rdev = 0
                node.size = 0
                continue
            }
            if hiddenMarkers.contains(x.name) { continue }
            if hasPrefix(x.name, trustedOverlay) {
                guard hasPrefix(x.name, escapedOverlay) else { continue }
                x.name.removeSubrange(8..<16)   // "trusted.overlay.overlay.k" → "trusted.overlay.k"
            }
            // Set-or-replace as libcomposefs does: the old entry's place
            // goes to the last one, the new value comes last.
            if let j = node.xattrs.firstIndex(where: { $0.name == x.name }) {
                node.xattrs.swapAt(j, node.xattrs.count - 1)
                node.xattrs.removeLast()
            }
            node.xattrs.append(x)
        }
        return node
    }

    /// libcomposefs 1.0.8 drops the redirect's leading '/' by advancing the
    /// value and *growing* its length by one, then copies it as a C string:
    /// the result runs up to two bytes past the value, stopping at a NUL.
    /// Those bytes are usually padding (zero), but when the entry fills its
    /// 4-byte alignment they are the next entry's header, and composefs-info
    /// prints them. This is what it prints.
    func redirectPayload(entryAt o: Int, _ valueLength: Int) -> [UInt8] {
        let nameLength = Int(img[o])
        var start = o + 4 + nameLength
        var length = valueLength
        if valueLength > 1 && img[start] == 0x2f {
            start += 1
            length += 1
        }
        var out: [UInt8] = []
        var p = start
        while p < min(start + length, img.count) && img[p] != 0 {
            out.append(img[p])
            p += 1
        }
        return out
    }
}
