import COSTree
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Committing a directory, walked here through directory descriptors with
/// libostree's object encoding and modifier rules (as `ostree commit`
/// applies them). Each file is read once: one pass computes its content
/// checksum and, for the composefs digest, its fs-verity digest; objects
/// the repository has are not written again, so a recommit of an unchanged
/// tree costs a read of it. Contents are hashed and written on all cores.
extension Repository {
    func writeDirectory(_ source: String, into mtree: OpaquePointer, state: CommitFilterState) throws {
        let root: DirectoryHandle
        do {
            root = DirectoryHandle(try FileDescriptor.open(source, O_RDONLY | O_DIRECTORY))
        } catch let e as SystemError {
            throw RepoError("reading \(source)", e.message)
        }
        do {
            try writeDirectory(root, source: source, into: mtree, state: state)
        } catch let e as RepoError {
            // The error names the file; where the walk had got to is no help.
            state.lastPath = ""
            throw RepoError("", e.description)
        }
    }

    private func writeDirectory(_ root: DirectoryHandle, source: String, into mtree: OpaquePointer, state: CommitFilterState) throws {
        let writer = DirectoryWriter(repo: self, source: Array(source.utf8), state: state)
        let etc = Array("etc".utf8)
        let moveEtc = !state.options.keepEtc && (try? FileSystem.lstat(etc, relativeTo: root.fd)).map { $0.st_mode & S_IFMT == S_IFDIR } == true
            && !FileSystem.exists(Array("usr/etc".utf8), relativeTo: root.fd)
        try writer.write(root, path: [], committed: [], into: mtree, skipping: moveEtc ? [etc] : [])
        if moveEtc {
            state.options.notice("committing /etc as /usr/etc (ostree convention; --keep-etc keeps it in place)")
            let usrEtc = try ensureDirectory(["usr", "etc"], in: mtree)
            defer { unref(usrEtc) }
            let dir = try writer.openDirectory(etc, in: root, path: Array("/etc".utf8))
            try writer.write(dir, path: Array("/etc".utf8), committed: Array("/usr/etc".utf8), into: usrEtc, skipping: [])
        }
        try writer.flush()
        state.contentFacts = writer.facts
    }

    /// Device nodes, fifos and sockets below `source`, found from directory
    /// entry types (an lstat only where the filesystem gives none).
    static func findSpecialFiles(_ source: String) throws -> SpecialFiles {
        var found = SpecialFiles()
        var pending: [[UInt8]] = [[]]
        let root = Array(source.utf8)
        while let rel = pending.popLast() {
            let entries: [(name: [UInt8], type: UInt8)]
            do {
                entries = try FileSystem.directoryEntriesWithTypes(root + rel)
            } catch let e as SystemError {
                throw RepoError("reading \(displayPath(root + rel))", e.message)
            }
            for (name, dtype) in entries {
                let path = rel + [0x2f] + name
                var type = Int32(dtype)
                if type == DT_UNKNOWN {
                    guard let st = try? FileSystem.lstat(root + path) else { continue }
                    type = Int32((st.st_mode & S_IFMT) >> 12)  // DT_* equals S_IF* >> 12
                }
                switch type {
                case Int32(DT_DIR): pending.append(path)
                case Int32(DT_REG), Int32(DT_LNK): break
                default:
                    found.count += 1
                    if found.first.count < 5 { found.first.append(displayPath(path)) }
                }
            }
        }
        found.first.sort()
        return found
    }
}

