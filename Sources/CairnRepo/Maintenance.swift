import COSTree
import CairnSystem
import Composefs

public struct FsckReport: Sendable {
    public var objectsChecked = 0
    public var commitsChecked = 0
    /// One line per problem, naming the object.
    public var problems: [String] = []
    /// Commits an interrupted pull left without all their objects (libostree
    /// marks them partial; the next pull completes them). Not problems.
    public var partialCommits: [String] = []
}

public struct PruneOptions: Sendable {
    public var refsOnly = false
    /// Parents to keep per ref; -1 keeps all history.
    public var depth: Int32 = -1
    /// Delete commits older than this (seconds since epoch) that no ref points at.
    public var keepYoungerThan: UInt64?
    public var dryRun = false
    public init() {}
}

public struct PruneReport: Sendable {
    public var objectsTotal = 0
    public var objectsPruned = 0
    public var bytesFreed: UInt64 = 0
    public var commitsDeleted: [String] = []
    public init(objectsTotal: Int = 0, objectsPruned: Int = 0, bytesFreed: UInt64 = 0) {
        self.objectsTotal = objectsTotal
        self.objectsPruned = objectsPruned
        self.bytesFreed = bytesFreed
    }
}

/// One object of the repository by type and checksum.
struct ObjectName: Hashable {
    var type: OstreeObjectType
    var checksum: String

    static func == (a: ObjectName, b: ObjectName) -> Bool { a.type.rawValue == b.type.rawValue && a.checksum == b.checksum }
    func hash(into h: inout Hasher) {
        h.combine(type.rawValue)
        h.combine(checksum)
    }
}

extension Repository {
    /// Every object in the repository.
    func allObjects() throws -> [ObjectName] {
        var table: OpaquePointer? = nil
        try gcall("listing objects of \(path)") {
            ostree_repo_list_objects(repo, OSTREE_REPO_LIST_OBJECTS_ALL, &table, nil, $0)
        }
        guard let table else { return [] }
        defer { g_hash_table_unref(table) }
        return objectNames(in: table)
    }

    /// The keys of a hash table of serialized object names.
    private func objectNames(in table: OpaquePointer) -> [ObjectName] {
        var result: [ObjectName] = []
        var iter = GHashTableIter()
        var key: gpointer? = nil
        g_hash_table_iter_init(&iter, table)
        while g_hash_table_iter_next(&iter, &key, nil) != 0 {
            var csum: UnsafePointer<CChar>? = nil
            var type = OSTREE_OBJECT_TYPE_FILE
            ostree_object_name_deserialize(OpaquePointer(key), &csum, &type)
            result.append(ObjectName(type: type, checksum: String(cString: csum!)))
        }
        return result
    }

    /// Objects reachable from a commit (all its history when depth < 0).
    func reachable(from commit: String, depth: Int32 = 0) throws -> Set<ObjectName> {
        var table: OpaquePointer? = nil
        try gcall("traversing commit \(commit)") {
            ostree_repo_traverse_commit(repo, commit, depth, &table, nil, $0)
        }
        guard let table else { return [] }
        defer { g_hash_table_unref(table) }
        return Set(objectNames(in: table))
    }

    /// Checks every object's checksum, and that each commit's tree is complete.
    public func fsck(progress: ((Int, Int) -> Void)? = nil) throws -> FsckReport {
        var report = FsckReport()
        let objects = try allObjects()
        let present = Set(objects)
        for (i, object) in objects.enumerated() {
            var error: UnsafeMutablePointer<GError>? = nil
            if ostree_repo_fsck_object(repo, object.type, object.checksum, nil, &error) == 0 {
                report.problems.append("\(Self.typeName(object.type)) \(object.checksum): \(consumeGError(error))")
            }
            report.objectsChecked += 1
            progress?(i + 1, objects.count)
        }
        // Each commit complete, and its image the one it records, rebuilt
        // from the objects themselves (never from the digest cache, which is
        // read first and checked against what the objects say).
        let cache = VerityDigestCache(repositoryPath: path)
        var fresh: [String: [UInt8]] = [:]
        for commit in objects where commit.type == OSTREE_OBJECT_TYPE_COMMIT {
            report.commitsChecked += 1
            if isPartial(commit.checksum) {
                report.partialCommits.append(commit.checksum)
                continue
            }
            do {
                var complete = true
                for needed in try reachable(from: commit.checksum) where !present.contains(needed) {
                    report.problems.append("commit \(commit.checksum): missing \(Self.typeName(needed.type)) \(needed.checksum)")
                    complete = false
                }
                let info = try self.commit(commit.checksum)
                guard complete, let recorded = info.composefsDigest else { continue }
                let tree = try composefsTree(rootTree: info.rootTree, rootMeta: info.rootMeta, digests: .recompute, memo: &fresh)
                let digest = fsVerityDigest(try OstreeMode.image(of: tree))
                if digest != recorded {
                    report.problems.append("commit \(commit.checksum): its composefs image has digest \(hexString(digest)), not the \(hexString(recorded)) it records")
                }
            } catch let error as RepoError {
                report.problems.append("commit \(commit.checksum): \(error.reason)")
            } catch {
                report.problems.append("commit \(commit.checksum): \(error)")
            }
        }
        for (checksum, digest) in fresh.sorted(by: { $0.key < $1.key }) {
            if let cached = cache[checksum], cached != digest {
                report.problems.append("fs-verity digest cache \(cache.path): object \(checksum) is recorded with \(hexString(cached)), its digest is \(hexString(digest)) (the cache was altered; cairn never signs from it, and the right digest is recorded now)")
            }
        }
        return report
    }

    /// Whether libostree marks the commit partial (`state/<commit>.commitpartial`).
    func isPartial(_ checksum: String) -> Bool {
        var state = OSTREE_REPO_COMMIT_STATE_NORMAL
        var v: OpaquePointer? = nil
        guard ostree_repo_load_commit(repo, checksum, &v, &state, nil) != 0 else { return false }
        if let v { g_variant_unref(v) }
        return state.rawValue & OSTREE_REPO_COMMIT_STATE_PARTIAL.rawValue != 0
    }

    static func typeName(_ type: OstreeObjectType) -> String {
        String(cString: ostree_object_type_to_string(type))
    }

    /// Deletes objects no ref (or, with `depth`, no kept ancestor) reaches.
    public func prune(_ options: PruneOptions) throws -> PruneReport {
        var report = PruneReport()
        if let cutoff = options.keepYoungerThan {
            let heads = Set(try refs().map(\.commit))
            for object in try allObjects() where object.type == OSTREE_OBJECT_TYPE_COMMIT {
                guard !heads.contains(object.checksum) else { continue }
                let info = try commit(object.checksum)
                if info.timestamp < cutoff {
                    report.commitsDeleted.append(object.checksum)
                    if !options.dryRun {
                        try gcall("deleting commit \(object.checksum)") {
                            ostree_repo_delete_object(repo, OSTREE_OBJECT_TYPE_COMMIT, object.checksum, nil, $0)
                        }
                    }
                }
            }
        }
        var flags = OSTREE_REPO_PRUNE_FLAGS_NONE.rawValue
        if options.refsOnly || options.keepYoungerThan != nil { flags |= OSTREE_REPO_PRUNE_FLAGS_REFS_ONLY.rawValue }
        if options.dryRun { flags |= OSTREE_REPO_PRUNE_FLAGS_NO_PRUNE.rawValue }
        var total: gint = 0, pruned: gint = 0
        var size: guint64 = 0
        try gcall("pruning \(path)") {
            ostree_repo_prune(repo, OstreeRepoPruneFlags(flags), options.depth, &total, &pruned, &size, nil, $0)
        }
        report.objectsTotal = Int(total)
        report.objectsPruned = Int(pruned)
        report.bytesFreed = UInt64(size)
        return report
    }
}
