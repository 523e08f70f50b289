import CairnRepo
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// One file, symlink or directory of an /etc tree, on disk or in a commit.
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

    var typeName: String { type == S_IFDIR ? "directory" : type == S_IFLNK ? "symlink" : "file" }

    func sameMetadata(_ o: EtcEntry) -> Bool {
        type == o.type && mode == o.mode && uid == o.uid && gid == o.gid && target == o.target
            && xattrs.sorted { $0.name.lexicographicallyPrecedes($1.name) } == o.xattrs.sorted { $0.name.lexicographicallyPrecedes($1.name) }
    }
}

/// What differs between a deployment's /etc and the defaults it came with.
public struct EtcChanges: Sendable {
    public var modified: [String] = []
    public var added: [String] = []
    public var removed: [String] = []
}

/// What a deploy did to /etc.
public struct EtcMergeResult: Sendable {
    public var changes = EtcChanges()
}

enum EtcTree {
    /// /usr/etc of a commit, by path relative to it ("" is /usr/etc itself).
    static func fromCommit(_ repo: Repository, _ commit: String) throws -> [String: EtcEntry] {
        let root: TreeEntry
        do { root = try repo.lookup(commit: commit, path: "/usr/etc") } catch {
            return [:]  // a tree without /usr/etc has no default configuration
        }
        var result: [String: EtcEntry] = [:]
        let prefix = Array("/usr/etc".utf8)
        try repo.walk(root) { e in
            let rel = String(decoding: e.path.dropFirst(prefix.count + (e.path.count > prefix.count ? 1 : 0)), as: UTF8.self)
            switch e.kind {
            case .directory(_, _, let m):
                result[rel] = EtcEntry(type: S_IFDIR, mode: m.mode & 0o7777, uid: m.uid, gid: m.gid, xattrs: m.xattrs, size: 0)
            case .file(let f):
                result[rel] = EtcEntry(type: f.isSymlink ? S_IFLNK : S_IFREG, mode: f.mode & 0o7777, uid: f.uid, gid: f.gid,
                                       xattrs: f.xattrs, size: f.size, target: f.symlinkTarget, checksum: f.checksum)
            }
        }
        return result
    }

    /// A directory tree on disk, by relative path ("" is the directory).
    static func fromDisk(_ path: String) throws -> [String: EtcEntry] {
        var result: [String: EtcEntry] = [:]
        func visit(_ rel: String) throws {
            let full = rel.isEmpty ? path : path + "/" + rel
            let bytes = Array(full.utf8)
            do {
                let st = try FileSystem.lstat(bytes)
                let type = st.st_mode & S_IFMT
                guard type == S_IFDIR || type == S_IFREG || type == S_IFLNK else { return }  // not storable; left alone
                let xattrs = try FileSystem.listXattrs(bytes).map { Xattr(name: $0, value: try FileSystem.getXattr(bytes, name: $0)) }
                result[rel] = EtcEntry(type: type, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid, xattrs: xattrs,
                                       size: type == S_IFREG ? UInt64(st.st_size) : 0,
                                       target: type == S_IFLNK ? try FileSystem.readLink(bytes) : nil)
                if type == S_IFDIR {
                    for child in try FileSystem.directoryEntries(bytes) {
                        try visit(rel.isEmpty ? String(decoding: child, as: UTF8.self) : rel + "/" + String(decoding: child, as: UTF8.self))
                    }
                }
            } catch let e as SystemError {
                throw DeployError("reading \(full)", e.message)
            }
        }
        try visit("")
        return result
    }

    /// Whether the file on disk equals the default from the repository.
    static func same(_ disk: EtcEntry, diskPath: String, _ def: EtcEntry, repo: Repository) throws -> Bool {
        guard disk.sameMetadata(def) else { return false }
        guard disk.type == S_IFREG else { return true }
        guard disk.size == def.size, let checksum = def.checksum else { return false }
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(diskPath, O_RDONLY | O_NOFOLLOW) } catch let e as SystemError {
            throw DeployError("reading \(diskPath)", e.message)
        }
        defer { fd.close() }
        var equal = true
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        try repo.readContent(checksum) { chunk in
            guard equal else { return }
            let n = try buffer.withUnsafeMutableBytes { try fd.readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<chunk.count])) }
            if n != chunk.count || !buffer[0..<n].elementsEqual(chunk) { equal = false }
        }
        var extra: UInt8 = 0
        if equal, (try? withUnsafeMutableBytes(of: &extra) { try fd.read(into: $0) }) ?? 0 > 0 { equal = false }
        return equal
    }

    /// Changes of `etcPath` against the defaults of `commit`.
    static func changes(etcPath: String, commit: String, repo: Repository) throws -> (EtcChanges, disk: [String: EtcEntry], defaults: [String: EtcEntry]) {
        let disk = try fromDisk(etcPath)
        let defaults = try fromCommit(repo, commit)
        var c = EtcChanges()
        for (rel, d) in disk where !rel.isEmpty {
            if let def = defaults[rel] {
                if !(try same(d, diskPath: etcPath + "/" + rel, def, repo: repo)) { c.modified.append(rel) }
            } else {
                c.added.append(rel)
            }
        }
        if let d = disk[""], let def = defaults[""], !d.sameMetadata(def) { c.modified.append("") }
        for rel in defaults.keys where !rel.isEmpty && disk[rel] == nil { c.removed.append(rel) }
        let byPath: (String, String) -> Bool = { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        c.modified.sort(by: byPath)
        c.added.sort(by: byPath)
        c.removed.sort(by: byPath)
        return (c, disk, defaults)
    }

    /// Three-way merge: `newEtc` holds the new defaults; every change the
    /// old deployment's /etc made to its defaults is carried onto it.
    /// A path whose type the defaults changed while the user changed it too
    /// is a conflict, and nothing is carried over then.
    static func merge(oldEtc: String, oldCommit: String, newCommit: String, newEtc: String, repo: Repository) throws -> EtcChanges {
        let (changes, disk, oldDefaults) = try changes(etcPath: oldEtc, commit: oldCommit, repo: repo)
        let newDefaults = try fromCommit(repo, newCommit)

        var conflicts: [String] = []
        func typeChanged(_ rel: String) -> Bool {
            guard let n = newDefaults[rel] else { return false }
            return oldDefaults[rel]?.type != n.type
        }
        for rel in changes.modified + changes.added where !rel.isEmpty {
            let user = disk[rel]!
            if let n = newDefaults[rel], typeChanged(rel), n.type != user.type {
                conflicts.append("/etc/\(rel) (changed here as a \(user.typeName); the new defaults make it a \(n.typeName))")
            }
        }
        for rel in changes.removed where typeChanged(rel) {
            conflicts.append("/etc/\(rel) (removed here; the new defaults make it a \(newDefaults[rel]!.typeName))")
        }
        if !conflicts.isEmpty {
            throw DeployError("merging /etc", "\(conflicts.count) conflict(s): " + conflicts.joined(separator: ", "))
        }

        // Removals first (deepest first), then additions and modifications parents first.
        for rel in changes.removed.reversed() where newDefaults[rel] != nil {
            try removeTree(newEtc + "/" + rel)
        }
        for rel in (changes.modified + changes.added).sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            let user = disk[rel]!
            let target = rel.isEmpty ? newEtc : newEtc + "/" + rel
            try ensureParents(of: rel, in: newEtc, from: oldEtc, disk: disk)
            if user.type == S_IFDIR {
                if let st = try? FileSystem.lstat(Array(target.utf8)), (st.st_mode & S_IFMT) != S_IFDIR { try removeTree(target) }
                try copyEntry(from: rel.isEmpty ? oldEtc : oldEtc + "/" + rel, to: target, user)
            } else {
                try removeTree(target)
                try copyEntry(from: oldEtc + "/" + rel, to: target, user)
            }
        }
        return changes
    }

    static func ensureParents(of rel: String, in newEtc: String, from oldEtc: String, disk: [String: EtcEntry]) throws {
        var parents: [String] = []
        var p = rel
        while let slash = p.lastIndex(of: "/") {
            p = String(p[..<slash])
            parents.append(p)
        }
        for parent in parents.reversed() where !FileSystem.exists(Array((newEtc + "/" + parent).utf8)) {
            guard let meta = disk[parent] else { continue }
            try copyEntry(from: oldEtc + "/" + parent, to: newEtc + "/" + parent, meta)
        }
    }

    /// Copies one entry with its mode, ownership and xattrs (directories:
    /// created if missing, their metadata set; contents are separate entries).
    static func copyEntry(from source: String, to target: String, _ e: EtcEntry) throws {
        let t = Array(target.utf8)
        do {
            switch e.type {
            case S_IFDIR:
                if !FileSystem.exists(t) { try FileSystem.makeDirectory(t, mode: 0o700) }
            case S_IFLNK:
                guard symlink(String(decoding: e.target ?? [], as: UTF8.self), target) == 0 else {
                    throw SystemError.current("symlink", path: t)
                }
            default:
                let src = try FileDescriptor.open(source, O_RDONLY | O_NOFOLLOW)
                defer { src.close() }
                let dst = try FileDescriptor.open(t, O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
                defer { dst.close() }
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let n = try buffer.withUnsafeMutableBytes { try src.read(into: $0) }
                    if n == 0 { break }
                    try buffer.withUnsafeBytes { try dst.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                }
                try dst.sync()
            }
            guard lchown(target, e.uid, e.gid) == 0 else { throw SystemError.current("lchown", path: t) }
            if e.type != S_IFLNK {
                guard chmod(target, mode_t(e.mode)) == 0 else { throw SystemError.current("chmod", path: t) }
            }
            for x in e.xattrs { try FileSystem.setXattr(t, name: x.name, value: x.value) }
        } catch let err as SystemError {
            throw DeployError("copying \(source) to \(target)", err.message)
        }
    }
}
