import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

extension Repository {
    /// Checks out `subpath` of a commit into `destination` (which must not
    /// exist), copying files rather than hardlinking them to objects, with
    /// ownership, modes and xattrs: a writable tree such as a deployment's
    /// /etc must never share inodes with the repository.
    public func checkoutCopy(commit: String, subpath: String, to destination: String) throws {
        try checkout(commit: commit, subpath: subpath, to: destination, copy: true)
    }

    /// Checks out `subpath` of a commit into `destination` (which must not
    /// exist) as hardlinks to the objects of a bare repository (copies
    /// otherwise), as ostree checks out a deployment: for trees nothing
    /// writes to.
    public func checkoutLinked(commit: String, subpath: String, to destination: String) throws {
        try checkout(commit: commit, subpath: subpath, to: destination, copy: false)
    }

    private func checkout(commit: String, subpath: String, to destination: String, copy: Bool) throws {
        var options = OstreeRepoCheckoutAtOptions()
        options.mode = OSTREE_REPO_CHECKOUT_MODE_NONE
        options.overwrite_mode = OSTREE_REPO_CHECKOUT_OVERWRITE_NONE
        options.force_copy = copy ? 1 : 0
        try subpath.withCString { sub in
            options.subpath = sub
            try gcall("checking out \(subpath) of \(commit) to \(destination)") {
                ostree_repo_checkout_at(repo, &options, AT_FDCWD, destination, commit, nil, $0)
            }
        }
    }

    /// Deletes objects that neither a ref nor any of `keep` (with the commits'
    /// trees) reaches; the commits of deployments are kept this way.
    public func prune(keeping keep: [String], dryRun: Bool) throws -> PruneReport {
        let reachable = g_hash_table_new_full(ostree_hash_object_name, g_variant_equal, { g_variant_unref(OpaquePointer($0)) }, nil)!
        defer { g_hash_table_unref(reachable) }
        try gcall("finding objects reachable from refs in \(path)") {
            ostree_repo_traverse_reachable_refs(repo, 0, reachable, nil, $0)
        }
        for commit in keep {
            try gcall("traversing commit \(commit)") {
                ostree_repo_traverse_commit_union(repo, commit, 0, reachable, nil, $0)
            }
        }
        var options = OstreeRepoPruneOptions()
        var flags = OSTREE_REPO_PRUNE_FLAGS_REFS_ONLY.rawValue
        if dryRun { flags |= OSTREE_REPO_PRUNE_FLAGS_NO_PRUNE.rawValue }
        options.flags = OstreeRepoPruneFlags(flags)
        options.reachable = reachable
        var total: gint = 0, pruned: gint = 0
        var size: guint64 = 0
        try gcall("pruning \(path)") {
            ostree_repo_prune_from_reachable(repo, &options, &total, &pruned, &size, nil, $0)
        }
        return PruneReport(objectsTotal: Int(total), objectsPruned: Int(pruned), bytesFreed: UInt64(size))
    }
}

extension Repository {
    /// SHA-256 (hex) of the contents of file objects, one after the other:
    /// ostree's boot checksum of a kernel and its initramfs.
    public func sha256(ofContents checksums: [String]) throws -> String {
        let sum = g_checksum_new(G_CHECKSUM_SHA256)!
        defer { g_checksum_free(sum) }
        for c in checksums {
            try readContent(c) { chunk in
                g_checksum_update(sum, chunk.baseAddress?.assumingMemoryBound(to: guchar.self), gssize(chunk.count))
            }
        }
        return String(cString: g_checksum_get_string(sum))
    }

    /// Gives a regular file object's content the name `path`: a hardlink to
    /// the object of a bare repository (the file's owner, mode and xattrs),
    /// else, or across filesystems, a copy (mode 0644).
    public func linkContent(_ checksum: String, to path: String) throws {
        if mode == .bare {
            let object = self.path + "/objects/" + checksum.prefix(2) + "/" + checksum.dropFirst(2) + ".file"
            if link(object, path) == 0 { return }
            let e = SystemError.current("link", path: Array(path.utf8))
            guard e.errno == EXDEV || e.errno == EPERM || e.errno == EMLINK else { throw RepoError("linking \(path) to \(object)", e.message) }
        }
        try writeContent(checksum, to: path)
    }

    /// Writes a regular file object's content to `path` (created, mode 0644).
    public func writeContent(_ checksum: String, to path: String) throws {
        do {
            let fd = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            try fd.closeAfter {
                try readContent(checksum) { try fd.write($0) }
                try fd.sync()
            }
        } catch let e as SystemError {
            throw RepoError("writing \(path)", e.message)
        }
    }
}
