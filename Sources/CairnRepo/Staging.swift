import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// libostree (2022.7) writes a transaction's objects into
/// `tmp/staging-<boot id>-XXXXXX`, locked through a `...-lock` file beside
/// it. Abort only unlocks that directory and keeps it; the next transaction
/// of the same boot, of any program, takes it over, and its commit renames
/// everything in it into objects/. So objects of a failed or killed commit
/// would be published by the next one. cairn therefore empties its own
/// staging directory before aborting (unless publishing had begun), and
/// empties one it took over before writing: a commit publishes only what it
/// wrote.
extension Repository {
    /// Removes everything staged in this transaction's staging directory.
    /// Returns false when there is none (commit_transaction removes it once
    /// it has renamed the objects).
    @discardableResult
    func discardStagedObjects() throws -> Bool {
        let context = "discarding staged objects in \(path)/tmp"
        return try withStagingDirectory(context) { dir, name in
            try FileSystem.removeContents(of: dir, path: Array("\(path)/tmp/".utf8) + name)
        } != nil
    }

    /// Removes the content objects `checksums` from this transaction's
    /// staging directory, where they are only if this transaction wrote
    /// them (it started empty); an object that was in the repository
    /// already is not staged again, and stays.
    func discardStagedContent(_ checksums: Set<String>) throws {
        guard !checksums.isEmpty else { return }
        let context = "discarding unused objects in \(path)/tmp"
        let compressed = mode == .archive
        _ = try withStagingDirectory(context) { dir, _ in
            for checksum in checksums {
                // The staging directory holds objects as objects/ does: xx/rest.file.
                guard checksum.utf8.count == 64 else { continue }
                let inStaging = "\(checksum.prefix(2))/\(checksum.dropFirst(2))" + (compressed ? ".filez" : ".file")
                if unlinkat(dir.rawValue, inStaging, 0) != 0 && errno != ENOENT {
                    throw RepoError(context, "removing \(inStaging): \(String(cString: strerror(errno)))")
                }
            }
        }
    }

    /// Runs `body` on this transaction's staging directory; nil when there is none.
    private func withStagingDirectory<R>(_ context: String, _ body: (FileDescriptor, [UInt8]) throws -> R) throws -> R? {
        do {
            let tmp = try FileDescriptor.open(Array("tmp".utf8), O_RDONLY | O_DIRECTORY, relativeTo: directoryDescriptor)
            return try tmp.closeAfter {
                var staging: [(name: [UInt8], dev: UInt64, ino: UInt64)] = []
                for (name, type) in try FileSystem.directoryEntriesWithTypes([0x2e], relativeTo: tmp)
                where name.starts(with: "staging-".utf8) && (type == DT_DIR || type == DT_UNKNOWN) {
                    guard let st = try? FileSystem.lstat(name, relativeTo: tmp), (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                    staging.append((name, UInt64(st.st_dev), UInt64(st.st_ino)))
                }
                // The one libostree holds open (GLnxTmpDir keeps a descriptor
                // for the whole transaction) is ours; the library has no
                // call that names it.
                var ours: Set<[UInt8]> = []
                for entry in try FileSystem.directoryEntries(Array("/proc/self/fd".utf8)) {
                    guard let fd = Int32(String(decoding: entry, as: UTF8.self)), fd != tmp.rawValue else { continue }
                    var st = stat()
                    guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { continue }
                    if let match = staging.first(where: { $0.dev == UInt64(st.st_dev) && $0.ino == UInt64(st.st_ino) }) {
                        ours.insert(match.name)
                    }
                }
                guard let name = ours.first else { return nil }
                guard ours.count == 1 else {
                    throw RepoError(context, "\(ours.count) staging directories are open in this process; not guessing which is this transaction's")
                }
                let dir = try FileDescriptor.open(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, relativeTo: tmp)
                return try dir.closeAfter { try body(dir, name) }
            }
        } catch let e as SystemError {
            throw RepoError(context, e.description)
        }
    }
}
