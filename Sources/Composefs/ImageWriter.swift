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
        try prepare(tree, options: options).bytes()
    }

    /// Validates `tree` and lays out its image without producing any bytes;
    /// every tree error is thrown here, so writing the result can only fail
    /// with I/O errors.
    public static func prepare(_ tree: ComposefsTree, options: ComposefsWriteOptions = .init()) throws -> PreparedImage {
        var w = try Builder(tree: tree, options: options)
        try w.build()
        return PreparedImage(builder: w)
    }

    /// Writes the image to `fd` (at its current position) in pieces, without
    /// holding the whole image in memory; returns the image's fs-verity digest.
    @discardableResult
    public static func write(_ tree: ComposefsTree, to fd: FileDescriptor,
                             options: ComposefsWriteOptions = .init()) throws -> [UInt8] {
        let prepared = try prepare(tree, options: options)
        do { return try prepared.write(to: fd, digest: true)! } catch let e as SystemError {
            throw ComposefsError(.io, e.description)
        }
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

/// A laid-out image (see `ImageWriter.prepare`).
public struct PreparedImage {
    fileprivate var builder: Builder

    /// Size of the image in bytes.
    public var size: Int { builder.fileSize }

    /// The whole image in memory.
    public func bytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: builder.fileSize)
        out.withUnsafeMutableBytes { buf in
            var win = OutputWindow(memory: buf.baseAddress!, size: buf.count)
            // In memory nothing is written to a descriptor, so nothing throws.
            try! builder.emit(&win, data: buf.baseAddress!)
        }
        return out
    }

    /// The image's fs-verity digest, the image written nowhere.
    public func digest() -> [UInt8] { fsVerityDigest(bytes()) }

    /// Streams the image to `fd` (at its current position): the inode area
    /// through a small window, then the data blocks. With `digest` also
    /// returns the image's fs-verity digest.
    public func write(to fd: FileDescriptor, digest: Bool = false) throws -> [UInt8]? {
        let hasher = digest ? FsVerityHasher() : nil
        let b = builder
        var win = OutputWindow(fd: fd, hasher: hasher)
        defer { win.release() }
        let dataSize = b.fileSize - b.dataStart
        let data = UnsafeMutableRawPointer.allocate(byteCount: max(dataSize, 1), alignment: 16)
        defer { data.deallocate() }
        data.initializeMemory(as: UInt8.self, repeating: 0, count: max(dataSize, 1))
        try b.emit(&win, data: data - b.dataStart)
        try win.flush(upTo: b.dataStart)
        let d = UnsafeRawBufferPointer(start: data, count: dataSize)
        try fd.write(d)
        hasher?.update(d)
        return hasher?.finalize()
    }
}

/// The inode area of an image as it is written: byte offsets only grow, so
/// a window that has been passed is written out and reused.
struct OutputWindow {
    private var buf: UnsafeMutableRawPointer
    private var cap: Int
    private var base = 0            // image offset of buf[0]
    private var hi = 0              // end of the bytes touched so far
    private let fd: FileDescriptor?
    private let hasher: FsVerityHasher?
    private let owned: Bool

    init(memory: UnsafeMutableRawPointer, size: Int) {
        buf = memory; cap = size; fd = nil; hasher = nil; owned = false
    }

    init(fd: FileDescriptor, hasher: FsVerityHasher?, capacity: Int = 1 << 20) {
        self.fd = fd; self.hasher = hasher; owned = true
        cap = capacity
        buf = .allocate(byteCount: cap, alignment: 16)
        buf.initializeMemory(as: UInt8.self, repeating: 0, count: cap)
    }

    mutating func release() {
        if owned { buf.deallocate(); cap = 0 }
    }

    /// A pointer `p` such that `p + o` is writable for image offsets
    /// `start..<end` (zeroed unless written before); `start` never decreases.
    @inline(__always)
    mutating func at(_ start: Int, _ end: Int) throws -> UnsafeMutableRawPointer {
        if end > base + cap { try slide(start, end) }
        if end > hi { hi = end }
        return buf - base
    }

    private mutating func slide(_ start: Int, _ end: Int) throws {
        guard let fd else { preconditionFailure("image window overflow") }
        try flush(upTo: start)
        if end - start > cap {
            buf.deallocate()
            cap = end - start
            buf = .allocate(byteCount: cap, alignment: 16)
            buf.initializeMemory(as: UInt8.self, repeating: 0, count: cap)
        }
        _ = fd
    }

    /// Writes everything before image offset `end` (zeros past what was touched).
    mutating func flush(upTo end: Int) throws {
        guard let fd, end > base else { return }
        let fromBuf = min(end - base, cap)
        let chunk = UnsafeRawBufferPointer(start: buf, count: fromBuf)
        try fd.write(chunk)
        hasher?.update(chunk)
        var zeros = end - base - fromBuf
        if zeros > 0 {
            let z = [UInt8](repeating: 0, count: min(zeros, 1 << 16))
            try z.withUnsafeBytes { zb in
                while zeros > 0 {
                    let c = UnsafeRawBufferPointer(rebasing: zb[0..<min(zeros, zb.count)])
                    try fd.write(c)
                    hasher?.update(c)
                    zeros -= c.count
                }
            }
        }
        let used = max(0, min(hi - base, cap))
        if used > fromBuf {
            // Bytes past `end` already touched move to the front.
            (buf).copyMemory(from: buf + fromBuf, byteCount: used - fromBuf)
            (buf + (used - fromBuf)).initializeMemory(as: UInt8.self, repeating: 0, count: fromBuf)
        } else {
            buf.initializeMemory(as: UInt8.self, repeating: 0, count: used)
        }
        base = end
        if hi < base { hi = base }
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

/// An xattr of an inode being written. The overlay xattrs of object-backed
/// files keep their value as a reference to the node's digest or payload
/// (`kind` 1: metacopy header + digest, 2: "/" + payload) rather than a new
/// array per file.
fileprivate struct WXattr: Hashable {
    var name: [UInt8]
    var value: [UInt8]
    var kind: UInt8 = 0

    init(name: [UInt8], value: [UInt8], kind: UInt8 = 0) { self.name = name; self.value = value; self.kind = kind }
    init(_ x: ComposefsXattr) { name = x.name; value = x.value }

    static let metacopyHeader: [UInt8] = [0x00, 0x24, 0x00, 0x01]
    static let redirectHeader: [UInt8] = [0x2f]

    var header: [UInt8] { kind == 1 ? Self.metacopyHeader : kind == 2 ? Self.redirectHeader : [] }
    @inline(__always) var headerCount: Int { kind == 1 ? 4 : kind == 2 ? 1 : 0 }
    @inline(__always) var valueCount: Int { headerCount + value.count }
    /// The value's bytes.
    var fullValue: [UInt8] { kind == 0 ? value : header + value }

    // A synthesized metacopy/redirect xattr never equals a plain one: the
    // tree's own trusted.overlay.* names are escaped (§5.2(a)).
    func hash(into hasher: inout Hasher) {
        name.withUnsafeBytes { hasher.combine(bytes: $0) }
        value.withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(name.count << 8 | Int(kind))
    }

    static func == (a: WXattr, b: WXattr) -> Bool {
        a.kind == b.kind && a.name == b.name && a.value == b.value
    }
}

@inline(__always)
fileprivate func xattrEntrySize(_ x: WXattr) -> Int {
    let (_, plen) = xattrPrefix(x.name)
    return (4 + x.name.count - plen + x.valueCount + 3) & ~3
}

@inline(__always)
fileprivate func setXattr(_ list: inout [WXattr], _ name: [UInt8], _ value: [UInt8], kind: UInt8 = 0) {
    for i in list.indices where list[i].name == name { list[i].value = value; list[i].kind = kind; return }
    list.append(WXattr(name: name, value: value, kind: kind))
}

fileprivate enum Kind: UInt8 { case other, dir, regEmpty, regInline, regObject, symlink, device }

fileprivate struct WInode {
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
    var xattrs: [WXattr] = []
    var direntStart: Int32 = 0
    var direntCount: Int32 = 0
    // placement
    var nBlocksStorage: Int32 = 0
    var tailStorage: Int32 = 0
    var compact: Bool = true
    var xattrSizeStorage: Int32 = 0
    var nid: UInt64 = 0
    /// Start in `Builder.sharedRefs` (one per xattr: shared offset or -1 for inline).
    var refStart: Int32 = 0

    var nBlocks: Int { get { Int(nBlocksStorage) } set { nBlocksStorage = Int32(newValue) } }
    var tail: Int { get { Int(tailStorage) } set { tailStorage = Int32(newValue) } }
    var xattrSize: Int { get { Int(xattrSizeStorage) } set { xattrSizeStorage = Int32(newValue) } }
}

fileprivate struct WDirent {
    var name: [UInt8]
    var target: Int32           // tree entry (resolved), or -1 - k synthetic
}

fileprivate struct Builder {
    let tree: ComposefsTree
    let options: ComposefsWriteOptions
    var version: UInt32 = 0
    var inodes: [WInode] = []
    var dirents: [WDirent] = []
    var entryIno: [Int32]
    var synthIno = [Int32](repeating: -1, count: 256)
    // layout results
    var minSec: Int64 = 0
    var minNsec: UInt32 = 0
    var hasAcl = false
    var shareable: [WXattr] = []
    var sharedRefs: [Int32] = []
    /// Tree xattr lists converted once, by the identity of their storage.
    var xattrLists: [UnsafeRawPointer: [WXattr]] = [:]
    var sharedSize = 0
    var inodesEnd = 0
    var dataStart = 0
    var fileSize = 0

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

    mutating func build() throws {
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
        try layout()
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
        var xs = convertedXattrs(n.xattrs)
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
                xs.reserveCapacity(xs.count + 2)
                if let d = n.digest {
                    setXattr(&xs, xMetacopy, d, kind: 1)
                } else {
                    setXattr(&xs, xMetacopy, [])
                }
                if let p = n.payload, !p.isEmpty { setXattr(&xs, xRedirect, p, kind: 2) }
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

    /// The node's xattrs with existing overlay xattrs escaped (§5.2(a));
    /// identical lists (shared array storage) are converted once.
    mutating func convertedXattrs(_ list: [ComposefsXattr]) -> [WXattr] {
        if list.isEmpty { return [] }
        let key = list.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress!) }
        if let c = xattrLists[key] { return c }
        var xs = list.map(WXattr.init)
        for i in xs.indices where hasPrefix(xs[i].name, trustedOverlay) {
            xs[i].name.insert(contentsOf: Array("overlay.".utf8), at: trustedOverlay.count)
        }
        xattrLists[key] = xs
        return xs
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
    mutating func assignSharedXattrs() -> ([WXattr], Int) {
        // Count hashes first: only xattrs whose hash repeats can be shared, so
        // the exact (larger) table holds just those, not every file's
        // unique metacopy/redirect value.
        var hashCounts: [Int: UInt8] = [:]
        for n in inodes where !n.xattrs.isEmpty {
            for x in n.xattrs {
                let h = x.hashValue
                if let c = hashCounts[h] { if c < 2 { hashCounts[h] = 2 } } else { hashCounts[h] = 1 }
            }
        }
        var counts: [WXattr: Int32] = [:]
        for n in inodes where !n.xattrs.isEmpty {
            for x in n.xattrs where hashCounts[x.hashValue] == 2 {
                counts[x, default: 0] += 1
            }
        }
        hashCounts = [:]
        var shareable = counts.compactMap { $0.value >= 2 ? $0.key : nil }
        counts = [:]
        shareable.sort { a, b in
            if a.name != b.name { return bytesLess(b.name, a.name) }
            if a.valueCount != b.valueCount { return a.valueCount > b.valueCount }
            return bytesLess(b.fullValue, a.fullValue)
        }
        var sharedOffset: [WXattr: Int32] = [:]
        var sharedSize = 0
        for x in shareable {
            sharedOffset[x] = Int32(sharedSize)
            sharedSize += xattrEntrySize(x)
        }
        var total = 0
        for n in inodes { total += n.xattrs.count }
        sharedRefs = [Int32](repeating: -1, count: total)
        var start = 0
        for i in inodes.indices where !inodes[i].xattrs.isEmpty {
            inodes[i].refStart = Int32(start)
            var s = 0
            if !sharedOffset.isEmpty {
                for (j, x) in inodes[i].xattrs.enumerated() where s < 128 {
                    if let off = sharedOffset[x] { sharedRefs[start + j] = off; s += 1 }
                }
            }
            start += inodes[i].xattrs.count
        }
        return (shareable, sharedSize)
    }

    mutating func layout() throws {
        let bs = ImageWriter.blockSize
        // §6.3 min mtime, ACL flag.
        minSec = inodes[0].mtimeSec; minNsec = inodes[0].mtimeNsec
        hasAcl = false
        for n in inodes {
            if n.mtimeSec < minSec || (n.mtimeSec == minSec && n.mtimeNsec < minNsec) {
                minSec = n.mtimeSec; minNsec = n.mtimeNsec
            }
            for x in n.xattrs where x.name == xAclAccess || x.name == xAclDefault { hasAcl = true }
        }

        // §7 shared xattrs (the dictionaries are freed before the image is allocated).
        (shareable, sharedSize) = assignSharedXattrs()

        // §8/§9 sizing and placement.
        var pos = 1152
        var nDataBlocks = 0
        for i in inodes.indices {
            var n = inodes[i]
            var s = 0, u = 0
            for (j, x) in n.xattrs.enumerated() {
                if sharedRefs[Int(n.refStart) + j] >= 0 { s += 1 } else { u += xattrEntrySize(x) }
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
            pos += extra
            n.nid = UInt64(pos / 32)
            nDataBlocks += n.nBlocks
            pos += isz + n.xattrSize + n.tail
            inodes[i] = n
        }
        inodesEnd = (pos + 31) & ~31
        dataStart = (inodesEnd + sharedSize + bs - 1) & ~(bs - 1)
        let (totalBytes, o1) = nDataBlocks.multipliedReportingOverflow(by: bs)
        guard !o1, totalBytes <= Int(UInt32.max) * bs - dataStart else { throw ComposefsError(.invalidTree, "image too large") }
        fileSize = dataStart + totalBytes
        guard inodes[0].nid <= 0xFFFF else { throw ComposefsError(.invalidTree, "root inode beyond nid 65535") }
    }

    /// Writes the laid-out image: offsets below `dataStart` through `win`
    /// (in increasing order), data blocks at `data + offset`.
    func emit(_ win: inout OutputWindow, data dp: UnsafeMutableRawPointer) throws {
        let bs = ImageWriter.blockSize
        do {
            var p = try win.at(0, 1152)
            @inline(__always) func put16(_ o: Int, _ v: UInt16) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt16.self) }
            @inline(__always) func put32(_ o: Int, _ v: UInt32) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt32.self) }
            @inline(__always) func put64(_ o: Int, _ v: UInt64) { p.storeBytes(of: v.littleEndian, toByteOffset: o, as: UInt64.self) }
            @inline(__always) func putBytes(_ o: Int, _ b: [UInt8], from: Int = 0, count: Int? = nil) {
                let c = count ?? (b.count - from)
                if c > 0 { b.withUnsafeBytes { (p + o).copyMemory(from: $0.baseAddress! + from, byteCount: c) } }
            }
            @inline(__always) func dataBytes(_ o: Int, _ b: [UInt8], from: Int = 0, count: Int? = nil) {
                let c = count ?? (b.count - from)
                if c > 0 { b.withUnsafeBytes { (dp + o).copyMemory(from: $0.baseAddress! + from, byteCount: c) } }
            }
            func putEntry(_ o: Int, _ x: WXattr) -> Int {
                let (idx, plen) = xattrPrefix(x.name)
                let sl = x.name.count - plen
                let hl = x.headerCount
                p.storeBytes(of: UInt8(sl), toByteOffset: o, as: UInt8.self)
                p.storeBytes(of: idx, toByteOffset: o + 1, as: UInt8.self)
                put16(o + 2, UInt16(x.valueCount))
                putBytes(o + 4, x.name, from: plen, count: sl)
                if hl > 0 { putBytes(o + 4 + sl, x.header) }
                putBytes(o + 4 + sl + hl, x.value)
                return (4 + sl + x.valueCount + 3) & ~3
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
                p = try win.at(o, o + (n.compact ? 32 : 64) + n.xattrSize + n.tail)
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
                    let refs = sharedRefs[Int(n.refStart)..<Int(n.refStart) + n.xattrs.count]
                    for r in refs where r >= 0 { s += 1 }
                    put32(q, ~bits)
                    p.storeBytes(of: UInt8(s), toByteOffset: q + 4, as: UInt8.self)
                    var r = q + 12
                    for ref in refs where ref >= 0 {
                        put32(r, UInt32((sharedBase + Int(ref)) / 4)); r += 4
                    }
                    for (j, x) in n.xattrs.enumerated() where refs[refs.startIndex + j] < 0 {
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
                        let bp: UnsafeMutableRawPointer
                        if inline { base = q; bp = p } else { base = blockPos; bp = dp; blockPos += bs }
                        var nameOff = 12 * (b - a)
                        for d in a..<b {
                            let de = dirents[d]
                            let t = inodes[Int(inoOf(de.target))]
                            let eo = base + 12 * (d - a)
                            bp.storeBytes(of: t.nid.littleEndian, toByteOffset: eo, as: UInt64.self)
                            bp.storeBytes(of: UInt16(nameOff).littleEndian, toByteOffset: eo + 8, as: UInt16.self)
                            bp.storeBytes(of: direntType(t.mode), toByteOffset: eo + 10, as: UInt8.self)
                            let c = de.name.count
                            de.name.withUnsafeBytes { (bp + base + nameOff).copyMemory(from: $0.baseAddress!, byteCount: c) }
                            nameOff += c
                        }
                    }
                case .regInline:
                    let c = tree.nodes[Int(n.entry)].content!
                    let inBlocks = min(c.count, n.nBlocks * bs)
                    dataBytes(blockPos, c, from: 0, count: inBlocks)
                    blockPos += n.nBlocks * bs
                    if n.tail > 0 { putBytes(q, c, from: inBlocks, count: c.count - inBlocks) }
                case .symlink:
                    let t = tree.nodes[Int(n.entry)].payload ?? []
                    if n.nBlocks > 0 { dataBytes(blockPos, t); blockPos += bs } else { putBytes(q, t) }
                case .regObject:
                    if n.nBlocks > 0 {
                        (dp + blockPos).initializeMemory(as: UInt8.self, repeating: 0xFF, count: bs)
                        blockPos += bs
                    } else {
                        (p + q).initializeMemory(as: UInt8.self, repeating: 0xFF, count: n.tail)
                    }
                default:
                    break
                }
            }
            var so = inodesEnd
            for x in shareable {
                p = try win.at(so, so + xattrEntrySize(x))
                so += putEntry(so, x)
            }
        }
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
