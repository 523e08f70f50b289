import CairnRepo
import CairnSysroot
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// One entry of an /etc tree, from a commit or from disk.
struct EtcEntry {
    var type: mode_t
    var mode: UInt32  // permission bits, setuid/setgid/sticky included
    var uid: UInt32
    var gid: UInt32
    var xattrs: [Xattr]
    var size: UInt64
    var target: [UInt8]?
    /// The file object, for entries read from a commit.
    var checksum: String?
    /// Device number of a character or block device.
    var rdev: UInt64 = 0

    var typeName: String {
        switch type {
        case S_IFDIR: return "directory"
        case S_IFLNK: return "symlink"
        case S_IFIFO: return "fifo"
        case S_IFCHR: return "character device \(deviceMajor(rdev)):\(deviceMinor(rdev))"
        case S_IFBLK: return "block device \(deviceMajor(rdev)):\(deviceMinor(rdev))"
        case S_IFSOCK: return "socket"
        default: return "file"
        }
    }

    func sameMetadata(_ o: EtcEntry) -> Bool {
        type == o.type && mode == o.mode && uid == o.uid && gid == o.gid && target == o.target && rdev == o.rdev
            && xattrs.sorted { $0.name.lexicographicallyPrecedes($1.name) } == o.xattrs.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }
}

/// What differs between a deployment's /etc and the defaults it came with;
/// from a deploy, what the merge carried over. Paths are relative to /etc,
/// raw bytes ("" is /etc itself), sorted by bytes; print them with
/// `displayPath`.
public struct EtcChanges: Sendable {
    public var modified: [[UInt8]] = []
    public var added: [[UInt8]] = []
    public var removed: [[UInt8]] = []
    /// Carried fifos and device nodes (also in `modified` or `added`).
    public var specialFiles: [SpecialFile] = []
    /// Carried names made hard links of an earlier carried name, as in the
    /// old /etc (also in `modified` or `added`).
    public var hardlinks: [Hardlink] = []
    /// Sockets of the old /etc, which a deploy cannot carry (config-diff
    /// lists them as changes like any other).
    public var skippedSockets: [[UInt8]] = []

    public struct SpecialFile: Sendable {
        public var path: [UInt8]
        /// "fifo", "character device 4:64", "block device 7:0"
        public var kind: String
    }

    public struct Hardlink: Sendable {
        public var path: [UInt8]
        public var target: [UInt8]
    }
}

/// The entries of a commit's /usr/etc by path relative to it, and each
/// directory's names.
struct EtcDefaults {
    var entries: [[UInt8]: EtcEntry] = [:]
    var children: [[UInt8]: [[UInt8]]] = [:]

    /// `rel` and every default below it, parents first.
    func subtree(_ rel: [UInt8]) -> [[UInt8]] {
        [rel] + (children[rel] ?? []).flatMap { subtree(EtcTree.join(rel, $0)) }
    }
}

enum EtcTree {
    static func join(_ dir: [UInt8], _ name: [UInt8]) -> [UInt8] { dir.isEmpty ? name : dir + [0x2f] + name }

    static func display(_ root: String, _ rel: [UInt8]) -> String { rel.isEmpty ? root : root + "/" + displayPath(rel) }

    /// /usr/etc of a commit; empty for a tree without one.
    static func defaults(_ repo: Repository, _ commit: String) throws -> EtcDefaults {
        let root: TreeEntry
        do { root = try repo.lookup(commit: commit, path: "/usr/etc") } catch {
            return EtcDefaults()  // a tree without /usr/etc has no default configuration
        }
        var result = EtcDefaults()
        let prefix = Array("/usr/etc".utf8)
        try repo.walk(root) { e in
            let rel = Array(e.path.dropFirst(prefix.count + (e.path.count > prefix.count ? 1 : 0)))
            switch e.kind {
            case .directory(_, _, let m):
                result.entries[rel] = EtcEntry(type: S_IFDIR, mode: m.mode & 0o7777, uid: m.uid, gid: m.gid, xattrs: m.xattrs, size: 0)
            case .file(let f):
                result.entries[rel] = EtcEntry(type: f.isSymlink ? S_IFLNK : S_IFREG, mode: f.mode & 0o7777, uid: f.uid, gid: f.gid,
                                               xattrs: f.xattrs, size: f.size, target: f.symlinkTarget, checksum: f.checksum)
            }
            if !rel.isEmpty {
                let slash = rel.lastIndex(of: 0x2f)
                result.children[slash.map { Array(rel[..<$0]) } ?? [], default: []].append(slash.map { Array(rel[($0 + 1)...]) } ?? rel)
            }
        }
        return result
    }

    /// Changes of the /etc at `etcPath` against the defaults of `commit` (config-diff).
    static func changes(etcPath: String, commit: String, repo: Repository) throws -> EtcChanges {
        let walk = EtcWalk(repo: repo, oldEtc: etcPath, oldDefaults: try defaults(repo, commit))
        try walk.run()
        return walk.changes
    }

    /// Three-way merge: `newEtc` holds the new defaults; every change the
    /// old deployment's /etc made to its own defaults is carried onto it,
    /// as it is read. A path whose type the new defaults changed while the
    /// user changed it too, or a changed directory that the new defaults
    /// made a symlink or file, is a conflict: the deploy fails naming it
    /// (the caller removes the half-made deployment). The old /etc is only read.
    static func merge(oldEtc: String, oldCommit: String, newCommit: String, newEtc: String, repo: Repository) throws -> EtcChanges {
        let walk = EtcWalk(repo: repo, oldEtc: oldEtc, oldDefaults: try defaults(repo, oldCommit))
        let target: FileDescriptor
        do { target = try FileDescriptor.open(newEtc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) } catch let e as SystemError {
            throw DeployError("opening \(newEtc)", e.message)
        }
        try target.closeAfter {
            walk.target = (newEtc, try defaults(repo, newCommit), target)
            try walk.run()
        }
        if !walk.conflicts.isEmpty {
            throw DeployError("merging /etc", "\(walk.conflicts.count) conflict(s): " + walk.conflicts.joined(separator: ", "))
        }
        return walk.changes
    }
}

/// A directory of the new /etc, opened (or created, for a directory the new
/// defaults lack) only when something is carried into it; its descriptor
/// stays open while its part of the old /etc is walked.
final class TargetDirectory {
    let parent: TargetDirectory?
    let name: [UInt8]
    let rel: [UInt8]
    /// The old /etc's directory: its metadata goes onto the new one if cairn
    /// creates it, or if the user changed it.
    let source: EtcEntry
    var fd: FileDescriptor?
    /// Whether `source`'s metadata is applied once its contents are written.
    var takesMetadata = false
    /// A conflict was recorded here: nothing goes below it.
    var failed = false

    init(parent: TargetDirectory?, name: [UInt8], rel: [UInt8], source: EtcEntry, fd: FileDescriptor? = nil) {
        self.parent = parent
        self.name = name
        self.rel = rel
        self.source = source
        self.fd = fd
    }
}

/// One pass over an old /etc against its defaults, each entry read once
/// through a descriptor relative to its parent's; with a target, each change
/// is carried onto the new /etc from the descriptor it was read through.
final class EtcWalk {
    let repo: Repository
    let oldEtc: String
    let oldDefaults: EtcDefaults
    /// The new /etc: its path (for messages), its defaults and its descriptor.
    var target: (path: String, defaults: EtcDefaults, fd: FileDescriptor)?
    var changes = EtcChanges()
    var conflicts: [String] = []
    /// The first carried name of each file with several names, by inode.
    var firstNames: [FileID: [UInt8]] = [:]

    struct FileID: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    init(repo: Repository, oldEtc: String, oldDefaults: EtcDefaults) {
        self.repo = repo
        self.oldEtc = oldEtc
        self.oldDefaults = oldDefaults
    }

    /// Carrying stops at the first conflict; the walk goes on to name them all.
    var carrying: Bool { target != nil && conflicts.isEmpty }

    func run() throws {
        let root: FileDescriptor
        do { root = try FileDescriptor.open(oldEtc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) } catch let e as SystemError {
            throw DeployError("reading \(oldEtc)", e.message)
        }
        try root.closeAfter {
            let meta = try reading([]) { try entry(of: root) }
            let top = target.map { TargetDirectory(parent: nil, name: [], rel: [], source: meta, fd: $0.fd) }
            if let def = oldDefaults.entries[[]], !meta.sameMetadata(def) {
                changes.modified.append([])
                top?.takesMetadata = true
            }
            try visitDirectory([], root, top)
            if let top { try finish(top) }
        }
        for key in [\EtcChanges.modified, \EtcChanges.added, \EtcChanges.removed, \EtcChanges.skippedSockets] {
            changes[keyPath: key].sort { $0.lexicographicallyPrecedes($1) }
        }
    }

    // MARK: Reading the old /etc

    func reading<T>(_ rel: [UInt8], _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as SystemError {
            throw DeployError("reading \(EtcTree.display(oldEtc, rel))", "\(e.operation): \(e.message)")
        }
    }

    /// Metadata of the file `fd` holds (xattrs through it, or through /proc
    /// for a path-only descriptor), never through a name.
    func entry(of fd: FileDescriptor) throws -> EtcEntry {
        let st = try fd.stat()
        let type = st.st_mode & S_IFMT
        let xattrs = try fd.extendedAttributeNames().map { Xattr(name: $0, value: try fd.extendedAttribute($0)) }
        return EtcEntry(type: type, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, xattrs: xattrs,
                        size: type == S_IFREG ? UInt64(st.st_size) : 0,
                        target: type == S_IFLNK ? try fd.symlinkTarget() : nil,
                        rdev: type == S_IFCHR || type == S_IFBLK ? UInt64(st.st_rdev) : 0)
    }

    func visitDirectory(_ rel: [UInt8], _ dir: FileDescriptor, _ into: TargetDirectory?) throws {
        let names = try reading(rel) { try FileSystem.directoryEntries([0x2e], relativeTo: dir) }.sorted { $0.lexicographicallyPrecedes($1) }
        var present = Set<[UInt8]>()
        for name in names {
            let childRel = EtcTree.join(rel, name)
            let pathFd: FileDescriptor
            do { pathFd = try dir.openEntry(name) } catch let e as SystemError where e.errno == ENOENT {
                continue  // gone since readdir: absent
            } catch let e as SystemError {
                throw DeployError("reading \(EtcTree.display(oldEtc, childRel))", "\(e.operation): \(e.message)")
            }
            present.insert(name)
            try pathFd.closeAfter { try visitEntry(childRel, name, pathFd, into) }
        }
        for name in oldDefaults.children[rel] ?? [] where !present.contains(name) {
            let childRel = EtcTree.join(rel, name)
            for below in oldDefaults.subtree(childRel) { noteRemoved(below) }
            if let into, target?.defaults.entries[childRel] != nil { try remove(name, childRel, into) }
        }
    }

    /// One entry, read once: the path-only descriptor `pathFd` decides what
    /// it is; files and directories are read through a descriptor reopened
    /// from it, so the content is that of the inode whose metadata was taken.
    func visitEntry(_ rel: [UInt8], _ name: [UInt8], _ pathFd: FileDescriptor, _ into: TargetDirectory?) throws {
        let type = try reading(rel) { try pathFd.stat().st_mode & S_IFMT }
        let io = try reading(rel) { type == S_IFREG || type == S_IFDIR ? try pathFd.reopen(type == S_IFDIR ? O_RDONLY | O_DIRECTORY : O_RDONLY) : nil }
        defer { io?.close() }
        let meta = try reading(rel) { try entry(of: io ?? pathFd) }
        let def = oldDefaults.entries[rel]

        if type == S_IFSOCK, target != nil {
            changes.skippedSockets.append(rel)  // config-diff lists it as a change like any other
            return
        }
        let changed = try def.map { !(try same(meta, io, $0, rel)) } ?? true
        var typeConflict = false
        if changed {
            if def == nil { changes.added.append(rel) } else { changes.modified.append(rel) }
            if let n = target?.defaults.entries[rel], def?.type != n.type, n.type != type {
                conflict(rel, "changed here as a \(meta.typeName); the new defaults make it a \(n.typeName)")
                typeConflict = true
            }
            if def?.type == S_IFDIR && type != S_IFDIR {
                for below in oldDefaults.subtree(rel).dropFirst() { noteRemoved(below) }
            }
        }

        if type == S_IFDIR {
            let node = into.map { TargetDirectory(parent: $0, name: name, rel: rel, source: meta) }
            node?.failed = typeConflict
            if changed, let node, !typeConflict { try carryDirectory(node) }
            try visitDirectory(rel, io!, node)
            if let node { try finish(node) }
        } else if changed, let into, let dir = try open(into), carrying {
            try carry(rel, name, meta, from: io ?? pathFd, into: dir)
        }
    }

    /// Whether an entry on disk equals its default: metadata, and for a
    /// file the content read through `io`.
    func same(_ disk: EtcEntry, _ io: FileDescriptor?, _ def: EtcEntry, _ rel: [UInt8]) throws -> Bool {
        guard disk.sameMetadata(def) else { return false }
        guard disk.type == S_IFREG else { return true }
        guard disk.size == def.size, let checksum = def.checksum, let io else { return false }
        var equal = true
        var offset: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        try reading(rel) {
            try repo.readContent(checksum) { chunk in
                guard equal else { return }
                if buffer.count < chunk.count { buffer = [UInt8](repeating: 0, count: chunk.count) }
                let n = try buffer.withUnsafeMutableBytes { try io.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<chunk.count]), atOffset: offset) }
                if n != chunk.count || !buffer[0..<n].elementsEqual(chunk) { equal = false }
                offset += Int64(n)
            }
            var extra: UInt8 = 0
            if equal, try withUnsafeMutableBytes(of: &extra, { try io.read(into: $0, atOffset: offset) }) > 0 { equal = false }
        }
        return equal
    }

    func noteRemoved(_ rel: [UInt8]) {
        changes.removed.append(rel)
        if let n = target?.defaults.entries[rel], oldDefaults.entries[rel]?.type != n.type {
            conflict(rel, "removed here; the new defaults make it a \(n.typeName)")
        }
    }

    func conflict(_ rel: [UInt8], _ why: String) {
        conflicts.append("\(EtcTree.display("/etc", rel)) (\(why))")
    }

    // MARK: Writing the new /etc

    func writing<T>(_ rel: [UInt8], _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as SystemError {
            // removeTree names the entry below `rel` that failed.
            let path = e.path.flatMap { $0.count > rel.count && $0.starts(with: rel + [0x2f]) ? $0 : nil } ?? rel
            throw DeployError("merging /etc: writing \(EtcTree.display(target!.path, path))", "\(e.operation): \(e.message)")
        }
    }

    /// The descriptor of a target directory, opening or creating it (and its
    /// parents) on first use. Nil when the new defaults turned it or a parent
    /// into something else, a conflict named once (checked from the new
    /// defaults, so also once nothing is written any more), or when not carrying.
    func open(_ node: TargetDirectory) throws -> FileDescriptor? {
        if let fd = node.fd { return fd }
        guard !node.failed, let parent = node.parent else { return nil }
        let parentFd = try open(parent)
        if parent.failed {
            node.failed = true
            return nil
        }
        if let n = target?.defaults.entries[node.rel], n.type != S_IFDIR {
            conflict(node.rel, "a directory here, with changes below it; the new defaults make it a \(n.typeName)")
            node.failed = true
            return nil
        }
        guard carrying, let parentFd else { return nil }
        node.fd = try writing(node.rel) {
            do { return try parentFd.openDirectory(node.name) } catch let e as SystemError where e.errno == ENOENT {
                // Gone from the new defaults: made again, with the old /etc's metadata.
                try FileSystem.makeDirectory(node.name, mode: 0o700, relativeTo: parentFd)
                node.takesMetadata = true
                return try parentFd.openDirectory(node.name)
            }
        }
        return node.fd
    }

    /// A directory the user changed or added: whatever the new defaults have
    /// at its name (other than a directory) goes; its metadata follows once
    /// its contents are written.
    func carryDirectory(_ node: TargetDirectory) throws {
        guard let parent = node.parent, let parentFd = try open(parent), carrying else { return }
        node.fd = try writing(node.rel) {
            if let st = try? FileSystem.lstat(node.name, relativeTo: parentFd), st.st_mode & S_IFMT != S_IFDIR {
                try FileSystem.removeTree(node.name, in: parentFd, path: node.rel)
            }
            do { try FileSystem.makeDirectory(node.name, mode: 0o700, relativeTo: parentFd) } catch let e as SystemError where e.errno == EEXIST {}
            return try parentFd.openDirectory(node.name)
        }
        node.takesMetadata = true
    }

    /// After a directory's contents: its metadata if cairn made or the user
    /// changed it, then its descriptor is closed.
    func finish(_ node: TargetDirectory) throws {
        guard let fd = node.fd else { return }
        defer {
            if node.parent != nil { fd.close() }  // the root's belongs to the caller
            node.fd = nil
        }
        if node.takesMetadata { try writing(node.rel) { try applyMetadata(node.source, to: fd) } }
    }

    /// Copies a file, symlink, fifo or device node into `into`, replacing
    /// what the new defaults have there; a further name of an inode already
    /// carried becomes a hard link of the first.
    func carry(_ rel: [UInt8], _ name: [UInt8], _ meta: EtcEntry, from source: FileDescriptor, into dir: FileDescriptor) throws {
        if meta.type == S_IFCHR || meta.type == S_IFBLK, geteuid() != 0 {
            throw DeployError("merging /etc: carrying \(EtcTree.display(oldEtc, rel))", "a \(meta.typeName); only root can create device nodes")
        }
        let st = try reading(rel) { try source.stat() }
        let id = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        try writing(rel) {
            try FileSystem.removeTree(name, in: dir, path: rel)
            if st.st_nlink > 1, let first = firstNames[id] {
                try linkFirst(first, as: name, in: dir)
                changes.hardlinks.append(.init(path: rel, target: first))
                return
            }
            switch meta.type {
            case S_IFREG:
                let out = try dir.createFile(name)
                try out.closeAfter {
                    var buffer = [UInt8](repeating: 0, count: 1 << 16)
                    var offset: Int64 = 0
                    while true {
                        let n = try reading(rel) { try buffer.withUnsafeMutableBytes { try source.read(into: $0, atOffset: offset) } }
                        if n == 0 { break }
                        try buffer.withUnsafeBytes { try out.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                        offset += Int64(n)
                    }
                    try applyMetadata(meta, to: out)
                }
            case S_IFLNK:
                try dir.makeSymlink(name, target: meta.target ?? [])
                let made = try dir.openEntry(name)
                try made.closeAfter { try applyMetadata(meta, to: made) }
            default:
                try dir.makeNode(name, mode: meta.type | 0o600, device: dev_t(meta.rdev))
                let made = try dir.openEntry(name)
                try made.closeAfter { try applyMetadata(meta, to: made) }
                changes.specialFiles.append(.init(path: rel, kind: meta.typeName))
            }
            if st.st_nlink > 1 { firstNames[id] = rel }
        }
    }

    /// A hard link `name` in `dir` to the carried file at `first` (found
    /// from the new /etc's root, which cairn made).
    func linkFirst(_ first: [UInt8], as name: [UInt8], in dir: FileDescriptor) throws {
        let parts = first.split(separator: 0x2f).map(Array.init)
        var parent = target!.fd
        var opened: [FileDescriptor] = []
        defer { opened.forEach { $0.close() } }
        for part in parts.dropLast() {
            parent = try parent.openDirectory(part)
            opened.append(parent)
        }
        try dir.makeHardLink(name, to: parts.last!, in: parent)
    }

    /// Owner, then mode (chown clears setuid bits), then xattrs (chown and
    /// writes clear security.capability), exactly the old entry's.
    func applyMetadata(_ meta: EtcEntry, to fd: FileDescriptor) throws {
        try fd.changeOwner(uid: meta.uid, gid: meta.gid)
        if meta.type != S_IFLNK { try fd.changeMode(mode_t(meta.mode)) }
        let wanted = Set(meta.xattrs.map(\.name))
        for name in try fd.extendedAttributeNames() where !wanted.contains(name) { try fd.removeExtendedAttribute(name) }
        for x in meta.xattrs { try fd.setExtendedAttribute(x.name, x.value) }
    }

    /// Removes from the new /etc a default that the user removed.
    func remove(_ name: [UInt8], _ rel: [UInt8], _ into: TargetDirectory) throws {
        guard let dir = try open(into), carrying else { return }
        try writing(rel) { try FileSystem.removeTree(name, in: dir, path: rel) }
    }
}
