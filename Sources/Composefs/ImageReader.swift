import CairnSystem

/// What `ImageReader` recovers from an image.
public struct ComposefsImageInfo: Sendable {
    /// The tree as mkcomposefs was given it: overlay xattrs turned back into
    /// payload/digest, escaped xattrs unescaped, whiteouts turned back into
    /// char devices 0:0, the synthetic root whiteouts and the root opaque
    /// marker removed.
    public var tree: ComposefsTree
    /// composefs format version from the header (0 or 1).
    public var formatVersion: UInt32
    /// Header flags (bit 0: HAS_ACL).
    public var flags: UInt32
    public var inodeCount: UInt64
}

/// Parses composefs images (spec §3, §10). Every offset, count and size is
/// checked against the image length; directories are entered at most once,
/// so hostile images give an error, never a trap, loop or huge allocation.
public enum ImageReader {
    public static func read(_ image: [UInt8]) throws -> ComposefsImageInfo {
        try image.withUnsafeBytes { try read($0) }
    }

    public static func read(_ image: UnsafeRawBufferPointer) throws -> ComposefsImageInfo {
        var r = Reader(img: image)
        return try r.run()
    }

    /// Reads an image file (raw-byte path).
    public static func read(path: [UInt8]) throws -> ComposefsImageInfo {
        let bytes: [UInt8]
        do {
            let fd = try FileDescriptor.open(path, O_RDONLY)
            bytes = try fd.closeAfter { try fd.readAll(limit: 1 << 34) }
        } catch let e as SystemError {
            throw ComposefsError(.io, e.description, path: path)
        }
        return try read(bytes)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct RawInode {
    var nid: UInt64
    var mode: UInt32
    var nlink: UInt32
    var uid: UInt32
    var gid: UInt32
    var size: UInt64
    var iu: UInt32
    var ino: UInt32
    var mtimeSec: Int64
    var mtimeNsec: UInt32
    var layout: Int
    var xattrs: [ComposefsXattr]   // the shared ones first, then the inline ones
    var xattrOffsets: [Int]        // where each entry of `xattrs` starts in the image
    var sharedCount: Int
    var tailOffset: Int        // where inline data starts
}

struct Reader {
    let img: UnsafeRawBufferPointer
    var buildSec: Int64 = 0
    var buildNsec: UInt32 = 0
    var xattrBase = 0
    var version: UInt32 = 0

    init(img: UnsafeRawBufferPointer) { self.img = img }

    func fail(_ m: String, _ off: Int? = nil) -> ComposefsError { ComposefsError(.invalidImage, m, offset: off) }

    func check(_ off: Int, _ len: Int) throws {
        guard off >= 0, len >= 0, off <= img.count, len <= img.count - off else {
            throw fail("structure of \(len) bytes beyond the end of the image", off)
        }
    }
    func u8(_ o: Int) throws -> UInt8 { try check(o, 1); return img[o] }
    func u16(_ o: Int) throws -> UInt16 { try check(o, 2); return UInt16(img[o]) | UInt16(img[o + 1]) << 8 }
    func u32(_ o: Int) throws -> UInt32 {
        try check(o, 4)
        return UInt32(img[o]) | UInt32(img[o + 1]) << 8 | UInt32(img[o + 2]) << 16 | UInt32(img[o + 3]) << 24
    }
    func u64(_ o: Int) throws -> UInt64 { UInt64(try u32(o)) | UInt64(try u32(o + 4)) << 32 }
    func bytes(_ o: Int, _ n: Int) throws -> [UInt8] { try check(o, n); return Array(img[o..<(o + n)]) }

    mutating func run() throws -> ComposefsImageInfo {
        let (rootNid, inos, flags) = try header()
        let tree = try buildTree(rootNid: rootNid)
        return ComposefsImageInfo(tree: tree, formatVersion: version, flags: flags, inodeCount: inos)
    }

    /// Checks the magics and reads what the rest needs; returns the root nid,
    /// the inode count and the header flags.
    mutating func header() throws -> (UInt64, UInt64, UInt32) {
        guard img.count >= 1152 else { throw fail("image shorter than header and superblock") }
        guard try u32(0) == 0xD078_629A else { throw fail("bad composefs magic", 0) }
        let flags = try u32(8)
        version = try u32(12)
        guard try u32(1024) == 0xE0F5_E1E2 else { throw fail("bad EROFS magic", 1024) }
        guard try u8(1024 + 12) == 12 else { throw fail("block size is not 4096", 1036) }
        let rootNid = UInt64(try u16(1024 + 14))
        let inos = try u64(1024 + 16)
        buildSec = Int64(bitPattern: try u64(1024 + 24))
        buildNsec = try u32(1024 + 32)
        let (xb, o) = Int(try u32(1024 + 44)).multipliedReportingOverflow(by: 4096)
        guard !o else { throw fail("bad xattr_blkaddr", 1068) }
        xattrBase = xb
        return (rootNid, inos, flags)
    }

    func inode(_ nid: UInt64) throws -> RawInode {
        guard nid <= UInt64(img.count / 32) else { throw fail("nid \(nid) beyond the image") }
        let o = Int(nid) * 32
        let format = try u16(o)
        guard format & ~0x0F == 0 else { throw fail("unsupported inode format \(format)", o) }
        let extended = format & 1 == 1
        let layout = Int(format >> 1) & 7
        guard layout == 0 || layout == 2 || layout == 4 else { throw fail("unsupported data layout \(layout)", o) }
        let icount = Int(try u16(o + 2))
        let mode = UInt32(try u16(o + 4))
        var n = RawInode(nid: nid, mode: mode, nlink: 0, uid: 0, gid: 0, size: 0, iu: 0, ino: 0,
                         mtimeSec: buildSec, mtimeNsec: buildNsec, layout: layout, xattrs: [], xattrOffsets: [],
                         sharedCount: 0, tailOffset: 0)
        var q: Int
        if extended {
            try check(o, 64)
            n.size = try u64(o + 8); n.iu = try u32(o + 16); n.ino = try u32(o + 20)
            n.uid = try u32(o + 24); n.gid = try u32(o + 28)
            n.mtimeSec = Int64(bitPattern: try u64(o + 32)); n.mtimeNsec = try u32(o + 40)
            n.nlink = try u32(o + 44)
            q = o + 64
        } else {
            try check(o, 32)
            n.nlink = UInt32(try u16(o + 6)); n.size = UInt64(try u32(o + 8)); n.iu = try u32(o + 16)
            n.ino = try u32(o + 20); n.uid = UInt32(try u16(o + 24)); n.gid = UInt32(try u16(o + 26))
            q = o + 32
        }
        if icount > 0 {
            let areaSize = 12 + (icount - 1) * 4
            try check(q, areaSize)
            let end = q + areaSize
            let shared = Int(try u8(q + 4))
            guard 12 + shared * 4 <= areaSize else { throw fail("shared xattr count exceeds the xattr area", q) }
            n.sharedCount = shared
            for s in 0..<shared {
                let id = Int(try u32(q + 12 + 4 * s))
                let eo = xattrBase + id * 4
                n.xattrs.append(try entry(eo).0)
                n.xattrOffsets.append(eo)
            }
            var p = q + 12 + shared * 4
            while p < end {
                let (x, len) = try entry(p)
                guard p + len <= end else { throw fail("xattr entry crosses the end of the xattr area", p) }
                n.xattrs.append(x)
                n.xattrOffsets.append(p)
                p += len
            }
            q = end
        }
        n.tailOffset = q
        return n
    }

    func entry(_ o: Int) throws -> (ComposefsXattr, Int) {
        let nameLen = Int(try u8(o))
        let idx = try u8(o + 1)
        let valueLen = Int(try u16(o + 2))
        let prefix: [UInt8]
        switch idx {
        case 0: prefix = []
        case 1: prefix = Array("user.".utf8)
        case 2: prefix = Array("system.posix_acl_access".utf8)
        case 3: prefix = Array("system.posix_acl_default".utf8)
        case 4: prefix = Array("trusted.".utf8)
        case 5: prefix = Array("lustre.".utf8)
        case 6: prefix = Array("security.".utf8)
        default: throw fail("unknown xattr name index \(idx)", o)
        }
        let name = prefix + (try bytes(o + 4, nameLen))
        let value = try bytes(o + 4 + nameLen, valueLen)
        return (ComposefsXattr(name: name, value: value), (4 + nameLen + valueLen + 3) & ~3)
    }

    /// The data of a flat (plain or inline) inode, at most `limit` bytes.
    func data(_ n: RawInode, limit: Int) throws -> [UInt8] {
        guard n.size <= UInt64(limit), n.size <= UInt64(img.count) else { throw fail("data size \(n.size) too large", Int(n.nid) * 32) }
        let size = Int(n.size)
        var out = [UInt8]()
        out.reserveCapacity(size)
        let fullBlocks = n.layout == 2 ? size / 4096 : (size + 4095) / 4096
        for b in 0..<fullBlocks {
            let off = (Int(n.iu) + b) * 4096
            let len = min(4096, size - out.count)
            try check(off, len)
            out += img[off..<(off + len)]
        }
        if out.count < size {
            let len = size - out.count
            try check(n.tailOffset, len)
            out += img[n.tailOffset..<(n.tailOffset + len)]
        }
        return out
    }

    /// Directory entries (name, nid, type), without "." and "..".
    func dirents(_ n: RawInode) throws -> [([UInt8], UInt64, UInt8)] {
        let d = try data(n, limit: img.count)
        var out: [([UInt8], UInt64, UInt8)] = []
        var g = 0
        while g < d.count {
            let gend = min(g + 4096, d.count)
            func at16(_ o: Int) throws -> Int {
                guard o + 2 <= gend else { throw fail("dirent beyond its block") }
                return Int(d[o]) | Int(d[o + 1]) << 8
            }
            let first = try at16(g + 8)
            guard first >= 12, first % 12 == 0, g + first <= gend else { throw fail("bad first dirent name offset \(first)") }
            let count = first / 12
            for i in 0..<count {
                let e = g + 12 * i
                var nid: UInt64 = 0
                for k in 0..<8 { nid |= UInt64(d[e + k]) << (8 * k) }
                let off = try at16(e + 8)
                let type = d[e + 10]
                var end: Int
                if i + 1 < count { end = try at16(e + 12 + 8) } else {
                    end = gend - g
                    // Names of a full block end at the first NUL.
                    if let z = d[(g + off)..<gend].firstIndex(of: 0), off < end { end = z - g }
                }
                guard off <= end, g + end <= gend, off >= first else { throw fail("bad dirent name offset") }
                let name = Array(d[(g + off)..<(g + end)])
                guard !name.isEmpty, name.count <= 255 else { throw fail("bad dirent name length") }
                if name == [0x2e] || name == [0x2e, 0x2e] { continue }
                guard !name.contains(0x2f) else { throw fail("dirent name contains '/'") }
                out.append((name, nid, type))
            }
            g += 4096
        }
        return out
    }

    /// Turns an image inode into the input node mkcomposefs was given.
    func node(_ n: RawInode, isRoot: Bool) throws -> (ComposefsNode, convertedWhiteout: Bool) {
        var node = ComposefsNode(mode: n.mode, uid: n.uid, gid: n.gid, nlink: n.nlink,
                                 mtimeSec: n.mtimeSec, mtimeNsec: n.mtimeNsec)
        var objectBacked = false
        var isWhiteout = false
        for x in n.xattrs {
            if hasPrefix(x.name, trustedOverlay) {
                let rest = Array(x.name[trustedOverlay.count...])
                if hasPrefix(rest, Array("overlay.".utf8)) {
                    if x.name == xEscWhiteout { isWhiteout = true; continue }
                    node.setXattr(trustedOverlay + rest[8...], x.value)
                } else if x.name == xMetacopy {
                    objectBacked = true
                    if x.value.count == 36 && x.value[0] == 0 && x.value[1] == 0x24 { node.digest = Array(x.value[4...]) }
                } else if x.name == xRedirect {
                    node.payload = x.value.first == 0x2f ? Array(x.value.dropFirst()) : x.value
                }
                continue   // composefs' own markers (root opaque) are not input xattrs
            }
            node.setXattr(x.name, x.value)
        }
        switch n.mode & FileMode.typeMask {
        case FileMode.directory:
            node.size = n.size
        case FileMode.regular:
            node.size = n.size
            if n.layout == 4 || objectBacked {
                if n.layout != 4 { throw fail("metacopy file without chunk-based layout", Int(n.nid) * 32) }
            } else if n.size > 0 {
                node.content = try data(n, limit: ImageWriter.maxInlineContent)
                node.payload = nil
            }
            if isWhiteout && n.size == 0 {
                node.mode = FileMode.charDevice | (n.mode & 0o7777)
                node.removeXattr(xUserWhiteout)
                return (node, true)
            }
            if isWhiteout { node.setXattr(trustedOverlay + Array("whiteout".utf8), []) }
        case FileMode.symlink:
            let t = try data(n, limit: 4095)
            guard !t.isEmpty else { throw fail("empty symlink target", Int(n.nid) * 32) }
            node.payload = t
            node.size = UInt64(t.count)
        case FileMode.charDevice, FileMode.blockDevice:
            node.rdev = n.iu
        case FileMode.fifo, FileMode.socket:
            break
        default:
            throw fail("unknown file type in mode \(String(n.mode, radix: 8))", Int(n.nid) * 32)
        }
        if isWhiteout && !node.isRegular { node.setXattr(trustedOverlay + Array("whiteout".utf8), []) }
        _ = isRoot
        return (node, false)
    }

    func buildTree(rootNid: UInt64) throws -> ComposefsTree {
        let rootRaw = try inode(rootNid)
        guard rootRaw.mode & FileMode.typeMask == FileMode.directory else { throw fail("root is not a directory") }
        var tree = ComposefsTree(root: try node(rootRaw, isRoot: true).0)
        var visitedDirs: Set<UInt64> = [rootNid]
        var owner: [UInt64: Int] = [:]          // nid → entry owning the node
        var pending: [(entry: Int, nid: UInt64)] = []
        var queue: [(nid: UInt64, raw: RawInode, entry: Int)] = [(rootNid, rootRaw, 0)]
        var nextIno: UInt32 = 1
        var qi = 0
        while qi < queue.count {
            let (_, raw, entry) = queue[qi]
            qi += 1
            var hadWhiteout = false
            for (name, nid, _) in try dirents(raw) {
                let isDir: Bool
                if let o = owner[nid] {
                    // Another name for a node we already own: a hardlink.
                    guard !tree[o].isDirectory else { throw fail("directory linked twice (nid \(nid))") }
                    let e = try tree.addChild(entry, name: name, node: tree[o])
                    try tree.setHardlinkTarget(e, o)
                    continue
                }
                let child = try inode(nid)
                isDir = child.mode & FileMode.typeMask == FileMode.directory
                if isDir {
                    guard visitedDirs.insert(nid).inserted else { throw fail("directory cycle or linked directory (nid \(nid))") }
                }
                // The synthetic whiteouts 00…ff of the root are not input entries.
                if entry == 0 && child.mode & FileMode.typeMask == FileMode.charDevice && child.iu == 0
                    && name.count == 2 && whiteoutNames.contains(name) {
                    nextIno &+= 1
                    continue
                }
                // mkcomposefs numbers inodes in BFS order; an entry seen before
                // its node's turn is a hardlink whose owner comes later.
                if !isDir && child.ino != nextIno {
                    let e = try tree.addChild(entry, name: name, node: try node(child, isRoot: false).0)
                    pending.append((e, nid))
                    continue
                }
                nextIno &+= 1
                let (n, wasWhiteout) = try node(child, isRoot: false)
                hadWhiteout = hadWhiteout || wasWhiteout
                let e = try tree.addChild(entry, name: name, node: n)
                owner[nid] = e
                if isDir { queue.append((nid, child, e)) }
            }
            if hadWhiteout {
                // Undo what the writer added to the parent of whiteouts (§5.2c).
                var p = tree[entry]
                p.removeXattr(trustedOverlay + Array("whiteouts".utf8))
                p.removeXattr(xUserWhiteouts)
                if version >= 1 {
                    if p.xattr(xOpaque) == [0x78] { p.removeXattr(xOpaque) }
                    if p.xattr(xUserOpaque) == [0x78] { p.removeXattr(xUserOpaque) }
                }
                tree[entry] = p
            }
        }
        for (e, nid) in pending {
            if let o = owner[nid] {
                try tree.setHardlinkTarget(e, o)
            } else {
                owner[nid] = e    // inode numbers did not match BFS order: first name owns it
            }
        }
        return tree
    }
}
