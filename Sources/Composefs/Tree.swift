/// File-type bits of `st_mode` (spec §4.1).
public enum FileMode {
    public static let typeMask: UInt32 = 0o170000
    public static let regular: UInt32 = 0o100000
    public static let directory: UInt32 = 0o040000
    public static let symlink: UInt32 = 0o120000
    public static let blockDevice: UInt32 = 0o060000
    public static let charDevice: UInt32 = 0o020000
    public static let socket: UInt32 = 0o140000
    public static let fifo: UInt32 = 0o010000

    static func isKnownType(_ mode: UInt32) -> Bool {
        switch mode & typeMask {
        case regular, directory, symlink, blockDevice, charDevice, socket, fifo: return true
        default: return false
        }
    }
}

/// One extended attribute; name and value are raw bytes.
public struct ComposefsXattr: Hashable, Sendable {
    public var name: [UInt8]
    public var value: [UInt8]

    // Hash the bytes in bulk: the default hashes an array element by element.
    public func hash(into hasher: inout Hasher) {
        name.withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(name.count)
        value.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
    public init(name: [UInt8], value: [UInt8]) { self.name = name; self.value = value }
    public init(_ name: String, _ value: [UInt8]) { self.name = Array(name.utf8); self.value = value }
}

/// Bytewise unsigned comparison, shorter prefix first (C strcmp on NUL-free data).
@inline(__always)
func bytesLess(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            let n = min(pa.count, pb.count)
            if n > 0 {
                let c = memcmpBytes(pa.baseAddress!, pb.baseAddress!, n)
                if c != 0 { return c < 0 }
            }
            return pa.count < pb.count
        }
    }
}

@inline(__always)
private func memcmpBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Int32 {
    var i = 0
    while i < n {
        if a[i] != b[i] { return a[i] < b[i] ? -1 : 1 }
        i += 1
    }
    return 0
}

/// The metadata of one file in a composefs tree (spec §4.1).
///
/// - `payload`: symlink target, or for regular files the backing-object path
///   relative to the object store (e.g. `c6/18e9…`), which becomes the
///   `trusted.overlay.redirect` xattr.
/// - `content`: file bytes stored inside the image (≤ 5000 bytes); a regular
///   file with content is "inline" and gets no overlay xattrs.
/// - `digest`: 32-byte fs-verity digest of the content (regular files).
/// - `size`: regular files: logical size (content length when inline);
///   symlinks: ignored (the target length is used).
public struct ComposefsNode: Sendable, Equatable {
    public var mode: UInt32
    public var nlink: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var rdev: UInt32
    public var size: UInt64
    public var mtimeSec: Int64
    public var mtimeNsec: UInt32
    public var payload: [UInt8]?
    public var content: [UInt8]?
    public var digest: [UInt8]?
    /// In insertion order; names are unique (see `setXattr`).
    public var xattrs: [ComposefsXattr]

    public init(mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, nlink: UInt32 = 1, rdev: UInt32 = 0,
                size: UInt64 = 0, mtimeSec: Int64 = 0, mtimeNsec: UInt32 = 0,
                payload: [UInt8]? = nil, content: [UInt8]? = nil, digest: [UInt8]? = nil,
                xattrs: [ComposefsXattr] = []) {
        self.mode = mode; self.uid = uid; self.gid = gid; self.nlink = nlink; self.rdev = rdev
        self.size = size; self.mtimeSec = mtimeSec; self.mtimeNsec = mtimeNsec
        self.payload = payload; self.content = content; self.digest = digest; self.xattrs = xattrs
    }

    public var fileType: UInt32 { mode & FileMode.typeMask }
    public var isDirectory: Bool { fileType == FileMode.directory }
    public var isRegular: Bool { fileType == FileMode.regular }
    public var isSymlink: Bool { fileType == FileMode.symlink }
    /// An overlayfs whiteout: character device 0:0.
    public var isWhiteout: Bool { fileType == FileMode.charDevice && rdev == 0 }

    public func xattr(_ name: [UInt8]) -> [UInt8]? {
        for x in xattrs where x.name == name { return x.value }
        return nil
    }

    /// Sets or replaces an xattr (a name occurs at most once).
    public mutating func setXattr(_ name: [UInt8], _ value: [UInt8]) {
        for i in xattrs.indices where xattrs[i].name == name {
            xattrs[i].value = value
            return
        }
        xattrs.append(ComposefsXattr(name: name, value: value))
    }

    @discardableResult
    public mutating func removeXattr(_ name: [UInt8]) -> [UInt8]? {
        guard let i = xattrs.firstIndex(where: { $0.name == name }) else { return nil }
        return xattrs.remove(at: i).value
    }
}

/// A tree of composefs entries, stored in index-based arrays (entry 0 is the
/// root directory). Each entry has a name, a parent and either its own node
/// or a hardlink target (another, non-directory entry).
///
/// Build one programmatically:
/// ```
/// var tree = ComposefsTree(root: ComposefsNode(mode: 0o40755))
/// let etc = try tree.addChild(ComposefsTree.root, name: Array("etc".utf8), node: ComposefsNode(mode: 0o40755))
/// try tree.insert(path: Array("/etc/hostname".utf8), node: ComposefsNode(mode: 0o100644, size: 5, content: Array("host\n".utf8)))
/// try tree.addHardlink(etc, name: Array("alias".utf8), target: tree.lookup(path: Array("/etc/hostname".utf8))!)
/// ```
/// Children are kept in insertion order; the writer sorts them bytewise.
public struct ComposefsTree: Sendable {
    public static let root = 0

    /// Node data of each entry (ignored for hardlink entries).
    public private(set) var nodes: [ComposefsNode]
    public private(set) var names: [[UInt8]]
    /// Parent entry index (the root's parent is itself).
    public private(set) var parents: [Int32]
    /// For hardlink entries the (non-hardlink) target entry, else -1.
    public private(set) var hardlinkTargets: [Int32]
    /// Children of directory entries, in insertion order.
    public private(set) var children: [[Int32]]
    private var lookupTable: [ChildKey: Int32]

    private struct ChildKey: Hashable, Sendable {
        var parent: Int32
        var name: [UInt8]
        func hash(into hasher: inout Hasher) {
            hasher.combine(parent)
            name.withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }

    public init(root: ComposefsNode) {
        nodes = [root]
        names = [[]]
        parents = [0]
        hardlinkTargets = [-1]
        children = [[]]
        lookupTable = [:]
    }

    public var count: Int { nodes.count }

    /// Node data of entry `i` (for a hardlink entry, the target's node).
    public subscript(_ i: Int) -> ComposefsNode {
        get { nodes[resolve(i)] }
        set { nodes[resolve(i)] = newValue }
    }

    /// Follows a hardlink entry to its target; identity for other entries.
    public func resolve(_ i: Int) -> Int {
        let t = hardlinkTargets[i]
        return t >= 0 ? Int(t) : i
    }

    public func isHardlink(_ i: Int) -> Bool { hardlinkTargets[i] >= 0 }

    public func child(_ parent: Int, named name: [UInt8]) -> Int? {
        lookupTable[ChildKey(parent: Int32(parent), name: name)].map(Int.init)
    }

    static func validateName(_ name: [UInt8]) throws {
        guard !name.isEmpty else { throw ComposefsError(.invalidTree, "empty file name") }
        guard name.count <= 255 else { throw ComposefsError(.invalidTree, "file name longer than 255 bytes", path: name) }
        guard name != [0x2e] && name != [0x2e, 0x2e] else {
            throw ComposefsError(.invalidTree, "\".\" and \"..\" are not allowed as names", path: name)
        }
        guard !name.contains(0x2f) && !name.contains(0) else {
            throw ComposefsError(.invalidTree, "file name contains '/' or NUL", path: name)
        }
    }

    private mutating func appendEntry(_ parent: Int, _ name: [UInt8], _ node: ComposefsNode, link: Int32) throws -> Int {
        guard parent >= 0 && parent < nodes.count else { throw ComposefsError(.invalidTree, "no parent entry \(parent)") }
        guard hardlinkTargets[parent] < 0 && nodes[parent].isDirectory else {
            throw ComposefsError(.invalidTree, "parent is not a directory", path: path(of: parent))
        }
        try Self.validateName(name)
        let key = ChildKey(parent: Int32(parent), name: name)
        guard lookupTable[key] == nil else {
            throw ComposefsError(.invalidTree, "entry already exists", path: path(of: parent) + (parent == 0 ? [] : [0x2f]) + name)
        }
        let idx = nodes.count
        guard idx < Int(Int32.max) else { throw ComposefsError(.invalidTree, "too many entries") }
        nodes.append(node)
        names.append(name)
        parents.append(Int32(parent))
        hardlinkTargets.append(link)
        children.append([])
        children[parent].append(Int32(idx))
        lookupTable[key] = Int32(idx)
        return idx
    }

    /// Adds a new entry named `name` in directory `parent`; returns its index.
    @discardableResult
    public mutating func addChild(_ parent: Int, name: [UInt8], node: ComposefsNode) throws -> Int {
        try appendEntry(parent, name, node, link: -1)
    }

    /// Adds a hardlink entry `name` in `parent` to entry `target` (followed if
    /// it is itself a hardlink). Like libcomposefs, this increments the
    /// target's nlink unless `incrementNlink` is false (dump files keep NLINK).
    @discardableResult
    public mutating func addHardlink(_ parent: Int, name: [UInt8], target: Int, incrementNlink: Bool = true) throws -> Int {
        guard target >= 0 && target < nodes.count else { throw ComposefsError(.invalidTree, "no hardlink target \(target)") }
        let t = resolve(target)
        guard !nodes[t].isDirectory else { throw ComposefsError(.invalidTree, "directories can't be hardlinked", path: path(of: t)) }
        let idx = try appendEntry(parent, name, nodes[t], link: Int32(t))
        if incrementNlink { nodes[t].nlink &+= 1 }
        return idx
    }

    /// Makes an existing entry a hardlink to `target` (dump parsing resolves
    /// hardlinks after all lines are read).
    mutating func setHardlinkTarget(_ entry: Int, _ target: Int) throws {
        let t = resolve(target)
        guard t != entry else { throw ComposefsError(.invalidTree, "hardlink points to itself", path: path(of: entry)) }
        guard !nodes[t].isDirectory else { throw ComposefsError(.invalidTree, "directories can't be hardlinked", path: path(of: entry)) }
        guard children[entry].isEmpty else { throw ComposefsError(.invalidTree, "hardlink entry has children", path: path(of: entry)) }
        hardlinkTargets[entry] = Int32(t)
        // Entries that were linked to `entry` now follow it to `t`.
    }

    /// Index of the entry at absolute `path` ("/" is the root; repeated
    /// slashes are ignored), without following hardlinks.
    public func lookup(path: [UInt8]) -> Int? {
        var cur = 0
        var i = 0
        let n = path.count
        while i < n {
            while i < n && path[i] == 0x2f { i += 1 }
            if i == n { break }
            var j = i
            while j < n && path[j] != 0x2f { j += 1 }
            guard let c = child(cur, named: Array(path[i..<j])) else { return nil }
            cur = c
            i = j
        }
        return cur
    }

    /// Adds `node` at absolute `path`; the parent directory must exist.
    @discardableResult
    public mutating func insert(path: [UInt8], node: ComposefsNode) throws -> Int {
        let (parent, name) = try splitParent(path)
        return try addChild(parent, name: name, node: node)
    }

    public mutating func insert(path: String, node: ComposefsNode) throws -> Int {
        try insert(path: Array(path.utf8), node: node)
    }

    func splitParent(_ path: [UInt8]) throws -> (Int, [UInt8]) {
        var end = path.count
        while end > 0 && path[end - 1] == 0x2f { end -= 1 }
        var start = end
        while start > 0 && path[start - 1] != 0x2f { start -= 1 }
        guard start < end else { throw ComposefsError(.invalidTree, "path has no file name", path: path) }
        guard let parent = lookup(path: Array(path[0..<start])) else {
            throw ComposefsError(.invalidTree, "parent directory missing", path: path)
        }
        return (parent, Array(path[start..<end]))
    }

    /// Absolute path of entry `i` ("/" for the root).
    public func path(of i: Int) -> [UInt8] {
        if i == 0 { return [0x2f] }
        var parts: [[UInt8]] = []
        var cur = i
        var guardCount = 0
        while cur != 0 && guardCount < nodes.count {
            parts.append(names[cur])
            cur = Int(parents[cur])
            guardCount += 1
        }
        var out: [UInt8] = []
        for p in parts.reversed() { out.append(0x2f); out += p }
        return out
    }

    /// Children of `i` sorted bytewise by name.
    public func sortedChildren(_ i: Int) -> [Int32] {
        children[i].sorted { bytesLess(names[Int($0)], names[Int($1)]) }
    }
}

extension ComposefsTree {
    /// The backing objects the image refers to (payloads of regular files
    /// not stored inline), sorted, each once.
    public func backingObjects() -> [[UInt8]] {
        var seen = Set<[UInt8]>()
        for i in 0..<count where !isHardlink(i) {
            let n = self[i]
            if n.isRegular, n.content == nil, let p = n.payload, !p.isEmpty { seen.insert(p) }
        }
        return seen.sorted { $0.lexicographicallyPrecedes($1) }
    }
}
