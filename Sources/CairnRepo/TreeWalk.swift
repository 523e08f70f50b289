import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// One entry of a committed tree.
public struct TreeEntry: Sendable {
    public enum Kind: Sendable {
        case directory(tree: String, meta: String, DirMeta)
        case file(FileObject)
    }
    /// Absolute path inside the commit, raw bytes ("/" for the root).
    public var path: [UInt8]
    public var kind: Kind

    public var mode: UInt32 {
        switch kind {
        case .directory(_, _, let m): return m.mode
        case .file(let f): return f.mode
        }
    }
}

public struct TreeDiff: Sendable {
    public var added: [[UInt8]] = []
    public var modified: [[UInt8]] = []
    public var removed: [[UInt8]] = []
}

func joinPath(_ dir: [UInt8], _ name: [UInt8]) -> [UInt8] {
    dir == [0x2f] ? [0x2f] + name : dir + [0x2f] + name
}

extension Repository {
    /// The root directory of a commit as a tree entry.
    public func root(ofCommit checksum: String) throws -> TreeEntry {
        let c = try commit(checksum)
        return TreeEntry(path: [0x2f], kind: .directory(tree: c.rootTree, meta: c.rootMeta, try dirMeta(c.rootMeta)))
    }

    /// Finds `path` (absolute or relative to the root) in a commit.
    public func lookup(commit checksum: String, path: String) throws -> TreeEntry {
        var entry = try root(ofCommit: checksum)
        for component in path.split(separator: "/") where component != "." {
            guard case .directory(let tree, _, _) = entry.kind else {
                throw RepoError("looking up \(path) in \(checksum)", "\(displayPath(entry.path)) is not a directory")
            }
            let name = Array(component.utf8)
            let t = try dirTree(tree)
            let childPath = joinPath(entry.path, name)
            if let d = t.directories.first(where: { $0.name == name }) {
                entry = TreeEntry(path: childPath, kind: .directory(tree: d.treeChecksum, meta: d.metaChecksum, try dirMeta(d.metaChecksum)))
            } else if let f = t.files.first(where: { $0.name == name }) {
                entry = TreeEntry(path: childPath, kind: .file(try file(f.checksum)))
            } else {
                throw RepoError("looking up \(path) in commit \(checksum)", "no such file or directory")
            }
        }
        return entry
    }

    /// The children of a directory entry, sorted by name bytes.
    public func children(of entry: TreeEntry) throws -> [TreeEntry] {
        guard case .directory(let tree, _, _) = entry.kind else { return [] }
        let t = try dirTree(tree)
        var result: [TreeEntry] = []
        for d in t.directories {
            result.append(TreeEntry(path: joinPath(entry.path, d.name),
                                    kind: .directory(tree: d.treeChecksum, meta: d.metaChecksum, try dirMeta(d.metaChecksum))))
        }
        for f in t.files {
            result.append(TreeEntry(path: joinPath(entry.path, f.name), kind: .file(try file(f.checksum))))
        }
        return result.sorted { $0.path.lexicographicallyPrecedes($1.path) }
    }

    /// Visits `entry` and, depth first in name order, everything below it.
    public func walk(_ entry: TreeEntry, _ visit: (TreeEntry) throws -> Void) throws {
        try visit(entry)
        for child in try children(of: entry) {
            try walk(child, visit)
        }
    }

    /// Paths added, modified and removed from commit `a` to commit `b`.
    /// Subtrees with equal checksums are skipped without being read.
    public func diff(_ a: String, _ b: String) throws -> TreeDiff {
        let ca = try commit(a), cb = try commit(b)
        var result = TreeDiff()
        try diffDirectories(path: [0x2f], (ca.rootTree, ca.rootMeta), (cb.rootTree, cb.rootMeta), into: &result)
        for key in [\TreeDiff.added, \TreeDiff.modified, \TreeDiff.removed] {
            result[keyPath: key].sort { $0.lexicographicallyPrecedes($1) }
        }
        return result
    }

    private func diffDirectories(path: [UInt8], _ a: (String, String), _ b: (String, String), into result: inout TreeDiff) throws {
        if a.1 != b.1 { result.modified.append(path) }
        if a.0 == b.0 { return }
        let ta = try dirTree(a.0), tb = try dirTree(b.0)
        let filesA = Dictionary(ta.files.map { ($0.name, $0.checksum) }, uniquingKeysWith: { x, _ in x })
        let filesB = Dictionary(tb.files.map { ($0.name, $0.checksum) }, uniquingKeysWith: { x, _ in x })
        let dirsA = Dictionary(ta.directories.map { ($0.name, ($0.treeChecksum, $0.metaChecksum)) }, uniquingKeysWith: { x, _ in x })
        let dirsB = Dictionary(tb.directories.map { ($0.name, ($0.treeChecksum, $0.metaChecksum)) }, uniquingKeysWith: { x, _ in x })

        for (name, csum) in filesA {
            let p = joinPath(path, name)
            if let other = filesB[name] {
                if other != csum { result.modified.append(p) }
            } else if dirsB[name] != nil {
                result.modified.append(p)  // file became a directory
            } else {
                result.removed.append(p)
            }
        }
        for (name, sub) in dirsA {
            let p = joinPath(path, name)
            if let other = dirsB[name] {
                try diffDirectories(path: p, sub, other, into: &result)
            } else if filesB[name] != nil {
                result.modified.append(p)  // directory became a file
            } else {
                result.removed.append(p)
            }
        }
        for (name, _) in filesB where filesA[name] == nil && dirsA[name] == nil {
            result.added.append(joinPath(path, name))
        }
        for (name, sub) in dirsB where dirsA[name] == nil && filesA[name] == nil {
            try addAll(path: joinPath(path, name), tree: sub.0, into: &result)
        }
    }

    private func addAll(path: [UInt8], tree: String, into result: inout TreeDiff) throws {
        result.added.append(path)
        let t = try dirTree(tree)
        for f in t.files { result.added.append(joinPath(path, f.name)) }
        for d in t.directories { try addAll(path: joinPath(path, d.name), tree: d.treeChecksum, into: &result) }
    }

    /// The commit and its ancestors, newest first, as far as they are present.
    public func history(_ checksum: String, limit: Int = Int.max) throws -> [CommitInfo] {
        var result: [CommitInfo] = []
        var next: String? = checksum
        while let c = next, result.count < limit {
            guard hasObject(OSTREE_OBJECT_TYPE_COMMIT, c) else {
                if result.isEmpty { throw RepoError("reading history", "commit \(c) is not in the repository") }
                break  // history pruned or not pulled
            }
            let info = try commit(c)
            result.append(info)
            next = info.parent
        }
        return result
    }

    func hasObject(_ type: OstreeObjectType, _ checksum: String) -> Bool {
        var have: gboolean = 0
        return (try? gcall("") { ostree_repo_has_object(repo, type, checksum, &have, nil, $0) }) != nil && have != 0
    }
}
