import CairnSystem

/// Options of the image writer, matching mkcomposefs (spec §5.1).
public struct ComposefsWriteOptions: Sendable, Equatable {
    /// Lowest format version (0 or 1).
    public var minVersion: UInt32
    /// Highest format version; the writer upgrades to 1 only if the tree
    /// holds a whiteout (char device 0:0) and this allows it.
    public var maxVersion: UInt32
    /// Write every mtime as 0.0 (mkcomposefs --use-epoch).
    public var useEpoch: Bool

    public init(minVersion: UInt32 = 0, maxVersion: UInt32 = 1, useEpoch: Bool = false) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.useEpoch = useEpoch
    }

    /// The mkcomposefs command-line rule: with neither option min=0,max=1;
    /// if only one is given the other defaults to 0.
    public static func commandLine(minVersion: UInt32?, maxVersion: UInt32?, useEpoch: Bool = false) -> Self {
        if minVersion == nil && maxVersion == nil { return Self(useEpoch: useEpoch) }
        return Self(minVersion: minVersion ?? 0, maxVersion: maxVersion ?? 0, useEpoch: useEpoch)
    }
}

/// Writes composefs images byte-identical to mkcomposefs 1.0.8 (spec §5–13).
public enum ImageWriter {
    static let blockSize = 4096
    static let maxInlineContent = 5000
    static let maxXattrBudget = 32767

    /// The image bytes for `tree`.
    public static func image(of tree: ComposefsTree, options: ComposefsWriteOptions = .init()) throws -> [UInt8] {
        var w = try Builder(tree: tree, options: options)
        return try w.build()
    }

    /// Writes the image to `fd` (at its current position); returns the
    /// image's fs-verity digest.
    @discardableResult
    public static func write(_ tree: ComposefsTree, to fd: FileDescriptor,
                             options: ComposefsWriteOptions = .init()) throws -> [UInt8] {
        let bytes = try image(of: tree, options: options)
        do { try fd.write(bytes) } catch let e as SystemError {
            throw ComposefsError(.io, e.description)
        }
        return fsVerityDigest(bytes)
    }

    /// Checks what mkcomposefs rejects (spec §5.6) for one node.
    static func validate(_ node: ComposefsNode, path: @autoclosure () -> [UInt8]) throws {
        func fail(_ m: String) -> ComposefsError { ComposefsError(.invalidTree, m, path: path()) }
        guard FileMode.isKnownType(node.mode) else { throw fail("unknown file type (mode \(String(node.mode, radix: 8)))") }
        if node.isSymlink {
            guard let t = node.payload, !t.isEmpty else { throw fail("symlink without target") }
            guard t.count < 4096 else { throw fail("symlink target of 4096 bytes or more") }
        }
        if node.isRegular {
            if let c = node.content {
                guard c.count <= maxInlineContent else { throw fail("inline content larger than \(maxInlineContent) bytes") }
            } else if node.size > (UInt64(1) << 53) {
                throw fail("file larger than 2^53 bytes")
            }
            if let d = node.digest, d.count != 32 { throw fail("fs-verity digest is not 32 bytes") }
        }
        var budget = 12
        for x in node.xattrs {
            guard !x.name.isEmpty else { throw fail("empty xattr name") }
            guard x.name.count <= 255 else { throw fail("xattr name longer than 255 bytes") }
            guard !x.name.contains(0) else { throw fail("xattr name contains NUL") }
            guard x.value.count <= 65535 else { throw fail("xattr value longer than 65535 bytes") }
            budget += 7 + x.name.count + x.value.count
            guard budget <= maxXattrBudget else { throw fail("xattrs exceed the per-inode limit") }
        }
    }
}

// MARK: - xattr name prefixes (spec §10.7)

private let xattrPrefixes: [(UInt8, [UInt8])] = [
    (1, Array("user.".utf8)),
    (2, Array("system.posix_acl_access".utf8)),
    (3, Array("system.posix_acl_default".utf8)),
    (4, Array("trusted.".utf8)),
    (6, Array("security.".utf8)),
]

/// (name index, length of the stripped prefix).
@inline(__always)
func xattrPrefix(_ name: [UInt8]) -> (UInt8, Int) {
    for (idx, p) in xattrPrefixes where name.count >= p.count {
        var match = true
        for i in 0..<p.count where name[i] != p[i] { match = false; break }
        if match { return (idx, p.count) }
    }
    return (0, 0)
}

@inline(__always)
func xattrEntrySize(_ x: ComposefsXattr) -> Int {
    let (_, plen) = xattrPrefix(x.name)
    return (4 + x.name.count - plen + x.value.count + 3) & ~3
}

let trustedOverlay = Array("trusted.overlay.".utf8)
let xMetacopy = Array("trusted.overlay.metacopy".utf8)
let xRedirect = Array("trusted.overlay.redirect".utf8)
let xOpaque = Array("trusted.overlay.opaque".utf8)
let xEscWhiteout = Array("trusted.overlay.overlay.whiteout".utf8)
let xEscWhiteouts = Array("trusted.overlay.overlay.whiteouts".utf8)
let xEscOpaque = Array("trusted.overlay.overlay.opaque".utf8)
let xUserWhiteout = Array("user.overlay.whiteout".utf8)
let xUserWhiteouts = Array("user.overlay.whiteouts".utf8)
let xUserOpaque = Array("user.overlay.opaque".utf8)
let xSelinux = Array("security.selinux".utf8)
let xAclAccess = Array("system.posix_acl_access".utf8)
let xAclDefault = Array("system.posix_acl_default".utf8)

func hasPrefix(_ a: [UInt8], _ p: [UInt8]) -> Bool {
    guard a.count >= p.count else { return false }
    for i in 0..<p.count where a[i] != p[i] { return false }
    return true
}

@inline(__always)
func setXattr(_ list: inout [ComposefsXattr], _ name: [UInt8], _ value: [UInt8]) {
    for i in list.indices where list[i].name == name { list[i].value = value; return }
    list.append(ComposefsXattr(name: name, value: value))
}

/// Lowercase hex names "00"…"ff" of the synthetic root whiteouts.
let whiteoutNames: [[UInt8]] = (0..<256).map { i in
    let h: [UInt8] = Array("0123456789abcdef".utf8)
    return [h[i >> 4], h[i & 15]]
}

/// EROFS dirent file type for a mode.
@inline(__always)
func direntType(_ mode: UInt32) -> UInt8 {
    switch mode & FileMode.typeMask {
    case FileMode.regular: return 1
    case FileMode.directory: return 2
    case FileMode.charDevice: return 3
    case FileMode.blockDevice: return 4
    case FileMode.fifo: return 5
    case FileMode.socket: return 6
    case FileMode.symlink: return 7
    default: return 0
    }
}

// MARK: - builder

private enum Kind: UInt8 { case other, dir, regEmpty, regInline, regObject, symlink, device }

private struct WInode {
    var entry: Int32            // tree entry, or -1 - k for synthetic whiteout k
    var parentIno: Int32
    var kind: Kind
    var mode: UInt32
    var nlink: UInt32
    var uid: UInt32
    var gid: UInt32
    var rdev: UInt32
    var size: UInt64
    var mtimeSec: Int64
    var mtimeNsec: UInt32
    var xattrs: [ComposefsXattr] = []
    var direntStart: Int32 = 0
    var direntCount: Int32 = 0
    // placement
    var nBlocks: Int = 0
    var tail: Int = 0
    var compact: Bool = true
    var xattrSize: Int = 0
    var nid: UInt64 = 0
    var ipad: Int = 0
    var firstBlock: UInt32 = 0
    var sharedRefs: [Int32] = []   // per xattr: shared offset or -1 (inline)
}

private struct WDirent {
    var name: [UInt8]
    var target: Int32           // tree entry (resolved), or -1 - k synthetic
}

private struct Builder {
    let tree: ComposefsTree
    let options: ComposefsWriteOptions
    var version: UInt32 = 0
    var inodes: [WInode] = []
    var dirents: [WDirent] = []
    var entryIno: [Int32]
    var synthIno = [Int32](repeating: -1, count: 256)

    init(tree: ComposefsTree, options: ComposefsWriteOptions) throws {
        self.tree = tree
        self.options = options
        entryIno = [Int32](repeating: -1, count: tree.count)
        guard options.minVersion <= 1 && options.maxVersion <= 1 || options.maxVersion < options.minVersion && options.minVersion <= 1 else {
            throw ComposefsError(.invalidTree, "unsupported format version (only 0 and 1 exist)")
        }
    }

    func inoOf(_ target: Int32) -> Int32 {
        target >= 0 ? entryIno[Int(target)] : synthIno[Int(-1 - target)]
    }

    mutating func build() throws -> [UInt8] {
        guard tree.nodes[0].isDirectory else { throw ComposefsError(.invalidTree, "root is not a directory", path: [0x2f]) }
        // §5.1 version
        var maxV = options.maxVersion
        if maxV < options.minVersion { maxV = options.minVersion }
        version = options.minVersion
        if version < 1 && maxV >= 1 {
            for e in 0..<tree.count where !tree.isHardlink(e) && tree.nodes[e].isWhiteout { version = 1; break }
        }

        try collectInodes()
        finishXattrs()
        return try layoutAndEmit()
    }

    /// BFS over the tree (§6.2), rewriting nodes on the way (§5.2, §5.5).
    mutating func collectInodes() throws {
        inodes.reserveCapacity(tree.count + 256)
        try appendInode(entry: 0, parentIno: 0)
        var i = 0
        var list: [WDirent] = []
        while i < inodes.count {
            let ino = inodes[i]
            if ino.kind == .dir && ino.entry >= 0 {
                let e = Int(ino.entry)
                list.removeAll(keepingCapacity: true)
                list.append(WDirent(name: [0x2e], target: ino.entry))
                list.append(WDirent(name: [0x2e, 0x2e], target: inodes[Int(ino.parentIno)].entry))
                for c in tree.children[e] {
                    list.append(WDirent(name: tree.names[Int(c)], target: Int32(tree.resolve(Int(c)))))
                }
                if e == 0 {
                    for k in 0..<256 where tree.child(0, named: whiteoutNames[k]) == nil {
                        list.append(WDirent(name: whiteoutNames[k], target: Int32(-1 - k)))
                    }
                }
                list.sort { bytesLess($0.name, $1.name) }
                inodes[i].direntStart = Int32(dirents.count)
                inodes[i].direntCount = Int32(list.count)
                var subdirs: UInt32 = 0
                dirents.append(contentsOf: list)
                for d in list {
                    if d.name == [0x2e] || d.name == [0x2e, 0x2e] { continue }
                    if d.target < 0 {
                        let k = Int(-1 - d.target)
                        synthIno[k] = Int32(inodes.count)
                        let r = inodes[0]
                        var wh = WInode(entry: d.target, parentIno: 0, kind: .device, mode: 0o020644, nlink: 1,
                                        uid: r.uid, gid: r.gid, rdev: 0, size: 0,
                                        mtimeSec: r.mtimeSec, mtimeNsec: r.mtimeNsec)
                        for x in r.xattrs where x.name == xSelinux { wh.xattrs.append(x) }
                        inodes.append(wh)
                        continue
                    }
                    let c = Int(d.target)
                    // Hardlink entries point elsewhere: only the entry that owns the node creates an inode.
                    if tree.parents[c] != ino.entry || tree.names[c] != d.name { continue }
                    if tree.nodes[c].isDirectory { subdirs += 1 }
                    try appendInode(entry: Int32(c), parentIno: Int32(i))
                }
                inodes[i].nlink = 2 &+ subdirs
            }
            i += 1
        }
        // §5.3 the real opaque marker on the root.
        setXattr(&inodes[0].xattrs, xOpaque, [0x79])
    }

    mutating func appendInode(entry: Int32, parentIno: Int32) throws {
        let e = Int(entry)
        let n = tree.nodes[e]
        try ImageWriter.validate(n, path: tree.path(of: e))
        entryIno[e] = Int32(inodes.count)
        var mode = n.mode
        var size = n.size
        var kind: Kind
        var rdev: UInt32 = 0
        // §5.2(a) escape existing overlay xattrs.
        var xs = n.xattrs
        for i in xs.indices where hasPrefix(xs[i].name, trustedOverlay) {
            xs[i].name.insert(contentsOf: Array("overlay.".utf8), at: trustedOverlay.count)
        }
        switch n.fileType {
        case FileMode.directory:
            kind = .dir
            size = 0
        case FileMode.regular:
            if let c = n.content {
                size = UInt64(c.count)
                kind = c.isEmpty ? .regEmpty : .regInline
            } else if size == 0 {
                kind = .regEmpty
            } else {
                kind = .regObject
                // §5.2(b) object-backed file.
                if let d = n.digest {
                    setXattr(&xs, xMetacopy, [0x00, 0x24, 0x00, 0x01] + d)
                } else {
                    setXattr(&xs, xMetacopy, [])
                }
                if let p = n.payload, !p.isEmpty { setXattr(&xs, xRedirect, [0x2f] + p) }
            }
        case FileMode.symlink:
            kind = .symlink
            size = UInt64(n.payload?.count ?? 0)
        case FileMode.charDevice, FileMode.blockDevice:
            kind = .device
            rdev = n.rdev
            if n.isWhiteout {
                // §5.2(c) whiteout → regular file with escaped whiteout xattrs.
                kind = .regEmpty
                mode = FileMode.regular | (mode & 0o7777)
                size = 0
                rdev = 0
                setXattr(&xs, xEscWhiteout, [])
                setXattr(&xs, xUserWhiteout, [])
                let p = Int(parentIno)
                setXattr(&inodes[p].xattrs, xEscWhiteouts, [])
                setXattr(&inodes[p].xattrs, xUserWhiteouts, [])
                if version >= 1 {
                    setXattr(&inodes[p].xattrs, xEscOpaque, [0x78])
                    setXattr(&inodes[p].xattrs, xUserOpaque, [0x78])
                }
            }
        default:
            kind = .other
        }
        let epoch = options.useEpoch
        inodes.append(WInode(entry: entry, parentIno: parentIno, kind: kind, mode: mode, nlink: n.nlink,
                             uid: n.uid, gid: n.gid, rdev: rdev, size: size,
                             mtimeSec: epoch ? 0 : n.mtimeSec, mtimeNsec: epoch ? 0 : n.mtimeNsec,
                             xattrs: xs))
    }

    // §6.3 sort xattrs per inode.
    mutating func finishXattrs() {
        for i in inodes.indices where inodes[i].xattrs.count > 1 {
            inodes[i].xattrs.sort { bytesLess($0.name, $1.name) }
        }
    }

    /// Counts (name, value) pairs over all inodes; pairs used at least twice
    /// go to the shared table, sorted descending (§7.2). Sets each inode's
    /// `sharedRefs` (at most 128 shared references per inode, §7.3).
    mutating func assignSharedXattrs() -> ([ComposefsXattr], Int) {
        var counts: [ComposefsXattr: Int32] = [:]
        for n in inodes where !n.xattrs.isEmpty {
            for x in n.xattrs { counts[x, default: 0] += 1 }
        }
        var shareable = counts.compactMap { $0.value >= 2 ? $0.key : nil }
        counts = [:]
        shareable.sort { a, b in
            if a.name != b.name { return bytesLess(b.name, a.name) }
            if a.value.count != b.value.count { return a.value.count > b.value.count }
            return bytesLess(b.value, a.value)
        }
        var sharedOffset: [ComposefsXattr: Int32] = [:]
        var sharedSize = 0
        for x in shareable {
            sharedOffset[x] = Int32(sharedSize)
            sharedSize += xattrEntrySize(x)
        }
        for i in inodes.indices where !inodes[i].xattrs.isEmpty {
            var refs = [Int32](repeating: -1, count: inodes[i].xattrs.count)
            var s = 0
            if !sharedOffset.isEmpty {
                for (j, x) in inodes[i].xattrs.enumerated() where s < 128 {
                    if let off = sharedOffset[x] { refs[j] = off; s += 1 }
                }
            }
            inodes[i].sharedRefs = refs
        }
        return (shareable, sharedSize)
    }

    mutating func layoutAndEmit() throws -> [UInt8] {
        let bs = ImageWriter.blockSize
        // §6.3 min mtime, ACL flag.
        var minSec = inodes[0].mtimeSec, minNsec = inodes[0].mtimeNsec
        var hasAcl = false
        for n in inodes {
            if n.mtimeSec < minSec || (n.mtimeSec == minSec && n.mtimeNsec < minNsec) {
                minSec = n.mtimeSec; minNsec = n.mtimeNsec
            }
            for x in n.xattrs where x.name == xAclAccess || x.name == xAclDefault { hasAcl = true }
        }

        // §7 shared xattrs (the dictionaries are freed before the image is allocated).
        let (shareable, sharedSize) = assignSharedXattrs()

        // §8/§9 sizing and placement.
        var pos = 1152
        var nDataBlocks = 0
        for i in inodes.indices {
            var n = inodes[i]
            var s = 0, u = 0
            for (j, x) in n.xattrs.enumerated() {
                if n.sharedRefs[j] >= 0 { s += 1 } else { u += xattrEntrySize(x) }
            }
            n.xattrSize = (s == 0 && u == 0) ? 0 : (12 + 4 * s + u + 3) & ~3
            switch n.kind {
            case .dir:
                var blocks = 0, cur = 0
                for d in Int(n.direntStart)..<Int(n.direntStart + n.direntCount) {
                    let len = 12 + dirents[d].name.count
                    if cur + len > bs { blocks += 1; cur = 0 }
                    cur += len
                }
                if cur > bs / 2 { blocks += 1; cur = 0 }
                n.nBlocks = blocks; n.tail = cur
                n.size = UInt64(blocks * bs + cur)
            case .symlink:
                n.tail = Int(n.size)
            case .regInline:
                let sz = Int(n.size)
                n.nBlocks = sz / bs
                n.tail = sz % bs
                if n.tail > bs / 2 { n.nBlocks += 1; n.tail = 0 }
            case .regObject:
                n.tail = 4 * chunkCount(n.size)
            default:
                break
            }
            n.compact = n.mtimeSec == minSec && n.mtimeNsec == minNsec && n.nlink <= 0xFFFF
                && n.uid <= 0xFFFF && n.gid <= 0xFFFF && n.size <= 0xFFFF_FFFF  // §15.6: input size of devices too
            let isz = n.compact ? 32 : 64
            n.ipad = ((pos + 31) & ~31) - pos
            pos = (pos + 31) & ~31
            // §9.2 keep inline data within one block.
            var extra = 0
            if n.kind == .symlink {
                let total = isz + n.xattrSize + n.tail
                if total >= bs { n.nBlocks += 1; n.tail = 0 }
                if pos / bs != (pos + total - 1) / bs { extra = ((pos + bs - 1) & ~(bs - 1)) - pos }
            } else {
                let rem = bs - ((pos + isz + n.xattrSize) % bs)
                if rem < n.tail {
                    let e = (rem + 31) & ~31
                    let rem2 = bs - ((pos + isz + n.xattrSize + e) % bs)
                    if n.tail <= rem2 {
                        extra = e
                    } else {
                        n.nBlocks += 1; n.tail = 0
                        extra = ((pos + bs - 1) & ~(bs - 1)) - pos
                    }
                }
            }
            n.ipad += extra
            pos += extra
            n.nid = UInt64(pos / 32)
            nDataBlocks += n.nBlocks
            pos += isz + n.xattrSize + n.tail
            inodes[i] = n
        }
        let inodesEnd = (pos + 31) & ~31
        let dataStart = (inodesEnd + sharedSize + bs - 1) & ~(bs - 1)
        let (totalBytes, o1) = nDataBlocks.multipliedReportingOverflow(by: bs)
        guard !o1, totalBytes <= Int(UInt32.max) * bs - dataStart else { throw ComposefsError(.invalidTree, "image too large") }
        let fileSize = dataStart + totalBytes
        guard inodes[0].nid <= 0xFFFF else { throw ComposefsError(.invalidTree, "root inode beyond nid 65535") }

        var out = [UInt8](repeating: 0, count: fileSize)
        out.withUnsafeMutableBytes { buf in
            let p = buf.baseAddress!
            @inline(__always) func put16(_ o: Int, _ v: UInt16) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
            @inline(__always) func put32(_ o: Int, _ v: UInt32) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }
            @inline(__always) func put64(_ o: Int, _ v: UInt64) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt64.self) }
            @inline(__always) func putBytes(_ o: Int, _ b: [UInt8], from: Int = 0, count: Int? = nil) {
                let c = count ?? (b.count - from)
                if c > 0 { b.withUnsafeBytes { (p + o).copyMemory(from: $0.baseAddress! + from, byteCount: c) } }
            }
            func putEntry(_ o: Int, _ x: ComposefsXattr) -> Int {
                let (idx, plen) = xattrPrefix(x.name)
                let sl = x.name.count - plen
                p.storeBytes(of: UInt8(sl), toByteOffset: o, as: UInt8.self)
                p.storeBytes(of: idx, toByteOffset: o + 1, as: UInt8.self)
                put16(o + 2, UInt16(x.value.count))
                putBytes(o + 4, x.name, from: plen, count: sl)
                putBytes(o + 4 + sl, x.value)
                return (4 + sl + x.value.count + 3) & ~3
            }

            // §10.1 header
            put32(0, 0xD078_629A); put32(4, 1); put32(8, hasAcl ? 1 : 0); put32(12, version)
            // §10.2 superblock
            let sb = 1024
            put32(sb, 0xE0F5_E1E2); put32(sb + 8, 6)
            p.storeBytes(of: UInt8(12), toByteOffset: sb + 12, as: UInt8.self)
            put16(sb + 14, UInt16(inodes[0].nid))
            put64(sb + 16, UInt64(inodes.count))
            put64(sb + 24, UInt64(bitPattern: minSec))
            put32(sb + 32, minNsec)
            put32(sb + 36, UInt32(fileSize / bs))
            put32(sb + 44, UInt32(inodesEnd / bs))

            var nextBlock = UInt32(dataStart / bs)
            var blockPos = dataStart
            let sharedBase = inodesEnd % bs
            for (ino, n) in inodes.enumerated() {
                let o = Int(n.nid) * 32
                var iu: UInt32 = 0
                var layout: UInt16 = n.tail > 0 ? 2 : 0
                if n.nBlocks > 0 && (n.kind == .dir || n.kind == .regInline || n.kind == .regObject || n.kind == .symlink) {
                    iu = nextBlock
                    nextBlock &+= UInt32(n.nBlocks)
                }
                var isize: UInt64 = 0
                switch n.kind {
                case .dir, .regInline, .symlink: isize = n.size
                case .regObject:
                    layout = 4
                    isize = n.size
                    iu = (iu & 0xFFFF_0000) | UInt32(chunkBits(n.size) - 12)
                case .device: iu = n.rdev
                default: break
                }
                let icount: UInt16 = n.xattrSize == 0 ? 0 : UInt16((n.xattrSize - 12) / 4 + 1)
                if n.compact {
                    put16(o, layout << 1); put16(o + 2, icount); put16(o + 4, UInt16(truncatingIfNeeded: n.mode))
                    put16(o + 6, UInt16(n.nlink)); put32(o + 8, UInt32(isize)); put32(o + 16, iu)
                    put32(o + 20, UInt32(ino)); put16(o + 24, UInt16(n.uid)); put16(o + 26, UInt16(n.gid))
                } else {
                    put16(o, layout << 1 | 1); put16(o + 2, icount); put16(o + 4, UInt16(truncatingIfNeeded: n.mode))
                    put64(o + 8, isize); put32(o + 16, iu); put32(o + 20, UInt32(ino))
                    put32(o + 24, n.uid); put32(o + 28, n.gid)
                    put64(o + 32, UInt64(bitPattern: n.mtimeSec)); put32(o + 40, n.mtimeNsec); put32(o + 44, n.nlink)
                }
                var q = o + (n.compact ? 32 : 64)
                if n.xattrSize > 0 {
                    var bits: UInt32 = 0
                    var s = 0
                    for x in n.xattrs {
                        let (idx, plen) = xattrPrefix(x.name)
                        let h = x.name.withUnsafeBytes { xxh32(UnsafeRawBufferPointer(rebasing: $0[plen...]), seed: 0x25BB_E08F &+ UInt32(idx)) }
                        bits |= 1 << (h & 31)
                    }
                    for r in n.sharedRefs where r >= 0 { s += 1 }
                    put32(q, ~bits)
                    p.storeBytes(of: UInt8(s), toByteOffset: q + 4, as: UInt8.self)
                    var r = q + 12
                    for ref in n.sharedRefs where ref >= 0 {
                        put32(r, UInt32((sharedBase + Int(ref)) / 4)); r += 4
                    }
                    for (j, x) in n.xattrs.enumerated() where n.sharedRefs[j] < 0 {
                        r += putEntry(r, x)
                    }
                    q += n.xattrSize
                }
                // Tail data and data blocks.
                switch n.kind {
                case .dir:
                    let start = Int(n.direntStart), end = Int(n.direntStart + n.direntCount)
                    var g = start, cur = 0
                    var groups: [(Int, Int)] = []
                    for d in start..<end {
                        let len = 12 + dirents[d].name.count
                        if cur + len > bs { groups.append((g, d)); g = d; cur = 0 }
                        cur += len
                    }
                    groups.append((g, end))
                    for (gi, (a, b)) in groups.enumerated() {
                        let inline = gi == groups.count - 1 && n.tail > 0
                        let base: Int
                        if inline { base = q } else { base = blockPos; blockPos += bs }
                        var nameOff = 12 * (b - a)
                        for d in a..<b {
                            let de = dirents[d]
                            let t = inodes[Int(inoOf(de.target))]
                            let eo = base + 12 * (d - a)
                            put64(eo, t.nid); put16(eo + 8, UInt16(nameOff))
                            p.storeBytes(of: direntType(t.mode), toByteOffset: eo + 10, as: UInt8.self)
                            putBytes(base + nameOff, de.name)
                            nameOff += de.name.count
                        }
                    }
                case .regInline:
                    let c = tree.nodes[Int(n.entry)].content!
                    let inBlocks = min(c.count, n.nBlocks * bs)
                    putBytes(blockPos, c, from: 0, count: inBlocks)
                    blockPos += n.nBlocks * bs
                    if n.tail > 0 { putBytes(q, c, from: inBlocks, count: c.count - inBlocks) }
                case .symlink:
                    let t = tree.nodes[Int(n.entry)].payload ?? []
                    if n.nBlocks > 0 { putBytes(blockPos, t); blockPos += bs } else { putBytes(q, t) }
                case .regObject:
                    if n.nBlocks > 0 {
                        (p + blockPos).initializeMemory(as: UInt8.self, repeating: 0xFF, count: bs)
                        blockPos += bs
                    } else {
                        (p + q).initializeMemory(as: UInt8.self, repeating: 0xFF, count: n.tail)
                    }
                default:
                    break
                }
            }
            var so = inodesEnd
            for x in shareable { so += putEntry(so, x) }
        }
        return out
    }
}

/// §8.3 chunk geometry of object-backed files.
func chunkBits(_ size: UInt64) -> Int {
    var bits = size <= 1 ? 0 : 64 - (size - 1).leadingZeroBitCount
    bits = max(bits, 12)
    return min(bits, 43)
}

func chunkCount(_ size: UInt64) -> Int {
    let b = chunkBits(size)
    return Int((size >> UInt64(b)) + ((size & ((UInt64(1) << UInt64(b)) - 1)) != 0 ? 1 : 0))
}
