#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import CCairnShim

/// A store of backing objects named by fs-verity digest (spec §12), as
/// `mkcomposefs --digest-store=DIR` fills it: ROOT/xx/<62 hex>, mode 0644.
/// Any number of images can share one store; `collectGarbage` removes what
/// none of them names.
///
/// cairn's writers hold a shared flock on the store's directory while they
/// add objects and write the image naming them, and the collector an
/// exclusive one, so a collection never removes an object an image being
/// made is about to name. (mkcomposefs takes no lock.)
public struct DigestStore: Sendable {
    public let root: [UInt8]

    public init(root: [UInt8]) { self.root = root }
    public init(root: String) { self.root = Array(root.utf8) }

    /// Path of the object for `digest`: ROOT/xx/<62 hex>.
    public func objectPath(_ digest: [UInt8]) -> [UInt8] {
        root + [0x2f] + Composefs.objectPath(forDigest: digest)
    }

    /// Prefix of the temporary files objects are written to before they
    /// are renamed to their digest: in the object's own subdirectory when
    /// the digest is known beforehand, else in the root.
    static let temporaryPrefix = Array(".tmp".utf8)

    /// ROOT/xx, made if missing.
    func makeSubdirectory(_ digest: [UInt8]) throws -> [UInt8] {
        let dir = root + [0x2f] + Array(hexEncode([digest[0]]))
        if !FileSystem.exists(dir) {
            do { try FileSystem.makeDirectory(dir, mode: 0o755) } catch let e as SystemError where e.errno == EEXIST {}
        }
        return dir
    }

    /// Copies the whole file open at `source` into a new object unless the
    /// store has it: a reflink where the filesystem can, else
    /// copy_file_range from the start (as mkcomposefs does). The copy is
    /// hashed again, so a source rewritten
    /// after it was hashed never gives an object a name its content does
    /// not have. `path` names the file in errors. The object gets its name
    /// in `install`.
    public func store(_ source: FileDescriptor, path: [UInt8], digest: [UInt8]) throws -> DigestStoreObject? {
        if FileSystem.exists(objectPath(digest)) { return nil }
        // Beside its final name: creating thousands of temporaries in one
        // directory was the largest cost of a store being filled (ext4:
        // 1.1 ms a file against about a third of that spread over xx/).
        let object = try DigestStoreObject(store: self, in: try makeSubdirectory(digest))
        guard lseek(source.rawValue, 0, SEEK_SET) == 0, cairn_copy_file(source.rawValue, object.file.rawValue) == 0 else {
            throw SystemError.current("copying", path: path)
        }
        guard lseek(object.file.rawValue, 0, SEEK_SET) == 0 else { throw SystemError.current("lseek", path: object.temporaryPath) }
        guard try fsVerityDigest(ofFile: object.file) == digest else {
            throw ComposefsError(.io, "it changed while the image was being made (its copy in the digest store has another digest)", path: path)
        }
        _ = try object.finish(digest: digest)
        return object
    }

    /// Gives finished objects their names: first everything written to the
    /// store's filesystem is synced (once, not per object), so no name ever
    /// points at content a crash could leave half there, which a later
    /// image would reuse. `failed` names the object that could not be
    /// installed in the error.
    public func install(_ objects: [DigestStoreObject], failed: (Int, SystemError) -> Error) throws {
        guard !objects.isEmpty else { return }
        let dir = try FileDescriptor.open(root, O_RDONLY | O_DIRECTORY)
        defer { dir.close() }
        try dir.syncFilesystem()
        for (i, object) in objects.enumerated() {
            do { try object.install() } catch let e as SystemError { throw failed(i, e) }
        }
    }

    /// Takes the store's lock: shared to add objects, exclusive to collect.
    /// The store directory is made if missing. Released when the returned
    /// descriptor is closed.
    public func lock(exclusive: Bool) throws -> FileDescriptor {
        if !FileSystem.exists(root) {
            do { try FileSystem.makeDirectory(root, mode: 0o755) } catch let e as SystemError where e.errno == EEXIST {}
        }
        let dir = try FileDescriptor.open(root, O_RDONLY | O_DIRECTORY)
        guard retryingEINTR({ flock(dir.rawValue, exclusive ? LOCK_EX : LOCK_SH) }) == 0 else {
            let e = SystemError.current("flock", path: root)
            dir.close()
            throw e
        }
        return dir
    }
}

/// One object being added to a store: written to a temporary file in the
/// store's root or the subdirectory of its digest (`write`), made 0644 and
/// closed (`finish`), then, once the
/// store's filesystem is synced (`DigestStore.install`), fs-verity enabled
/// where the filesystem can (errors ignored, as mkcomposefs does) and
/// renamed to its digest. An object not installed is removed when this
/// goes away, so a writer can hold objects back until it knows which ones
/// its image names.
public final class DigestStoreObject {
    let store: DigestStore
    let file: FileDescriptor
    let temporaryPath: [UInt8]
    /// Whether the temporary is in the store's root, not already in its xx/.
    private let inRoot: Bool
    /// Made by the first `write` (copied objects are hashed by the caller).
    private var hasher: FsVerityHasher?
    private var written: UInt64 = 0
    private var closed = false
    /// Set by `finish`.
    public private(set) var digest: [UInt8] = []

    /// `directory`: the store's root (the default) or one of its xx/.
    public init(store: DigestStore, in directory: [UInt8]? = nil) throws {
        self.store = store
        let directory = directory ?? store.root
        inRoot = directory == store.root
        var template = directory + [0x2f] + DigestStore.temporaryPrefix + Array("XXXXXX".utf8) + [0]
        let fd = template.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { mkstemp($0.baseAddress!) }
        }
        guard fd >= 0 else { throw SystemError.current("mkstemp", path: directory) }
        temporaryPath = Array(template.dropLast())
        file = FileDescriptor(rawValue: fd)
    }

    deinit { discard() }

    /// Appends bytes to the object, hashing them on the way.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if hasher == nil { hasher = FsVerityHasher() }
        hasher!.update(bytes)
        written += UInt64(bytes.count)
        try file.write(bytes)
    }

    /// Bytes written so far.
    public var size: UInt64 { written }

    /// Ends the writing: the object's fs-verity digest (`known`, if the
    /// caller hashed it already); the file is closed. It is synced by
    /// `DigestStore.install`, with the others.
    public func finish(digest known: [UInt8]? = nil) throws -> [UInt8] {
        digest = known ?? (hasher ?? FsVerityHasher()).finalize()
        hasher = nil
        guard fchmod(file.rawValue, 0o644) == 0 else { throw SystemError.current("fchmod", path: temporaryPath) }
        // Verity wants no writer open: ours is closed before install.
        file.close()
        closed = true
        return digest
    }

    /// Renames the finished object to its digest, unless the store has
    /// that object already (then it is dropped). Only after the store's
    /// filesystem was synced: `DigestStore.install`.
    func install() throws {
        defer { discard() }
        let target = store.objectPath(digest)
        if FileSystem.exists(target) { return }
        if inRoot { _ = try store.makeSubdirectory(digest) }
        if let ro = try? FileDescriptor.open(temporaryPath, O_RDONLY) {
            _ = cairn_enable_verity(ro.rawValue)
            ro.close()
        }
        try FileSystem.rename(temporaryPath, to: target)
    }

    private func discard() {
        if !closed { file.close(); closed = true }
        _ = try? FileSystem.unlink(temporaryPath)  // ENOENT once renamed
    }
}

/// What a collection found and did.
public struct DigestStoreCollection: Sendable {
    /// Objects removed (or, with a dry run, that would be), as "xx/<62 hex>", with their sizes.
    public var removed: [(object: [UInt8], size: Int64)] = []
    /// Objects the images name that the store has.
    public var kept = 0
    /// Objects the images name that the store lacks.
    public var missing: [[UInt8]] = []
    /// Temporary files of writes that never finished, removed (".tmp…" or "xx/.tmp…").
    public var temporaries: [[UInt8]] = []

    public var removedBytes: Int64 { removed.reduce(0) { $0 + $1.size } }
}

extension DigestStore {
    /// The object name ("xx/<62 lowercase hex>") a payload of an image
    /// names, or nil if it is not the name of a digest store's object.
    public static func objectName(ofPayload payload: [UInt8]) -> [UInt8]? {
        var p = payload[...]
        if p.first == 0x2f { p = p.dropFirst() }
        guard p.count == 65, p[p.startIndex + 2] == 0x2f else { return nil }
        for (i, c) in p.enumerated() where i != 2 {
            guard (0x30...0x39).contains(c) || (0x61...0x66).contains(c) else { return nil }
        }
        return Array(p)
    }

    private static func isHex(_ name: [UInt8], count: Int) -> Bool {
        name.count == count && name.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// Removes every object no name in `keep` ("xx/<62 hex>") refers to,
    /// under the store's exclusive lock, and temporary files of writes
    /// untouched for `temporaryAge` seconds (cairn's writers hold the lock,
    /// so theirs are stale; mkcomposefs's may be in progress). Only
    /// entries shaped like objects are considered; nothing is followed
    /// through a symlink; with `dryRun` nothing is removed.
    public func collectGarbage(keep: Set<[UInt8]>, dryRun: Bool, temporaryAge: Int64 = 3600) throws -> DigestStoreCollection {
        let root = try lock(exclusive: true)
        defer { root.close() }
        var result = DigestStoreCollection()
        var found = Set<[UInt8]>()
        let now = Int64(time(nil))
        func removeIfStale(_ name: [UInt8], _ st: stat, in dir: FileDescriptor, as shown: [UInt8]) throws {
            guard st.st_mode & S_IFMT == S_IFREG, now - Int64(st.st_mtim.tv_sec) >= temporaryAge else { return }
            result.temporaries.append(shown)
            if !dryRun { try FileSystem.unlink(name, relativeTo: dir) }
        }
        for (name, _) in try FileSystem.directoryEntriesWithTypes([0x2e], relativeTo: root) {
            let st = try FileSystem.lstat(name, relativeTo: root)
            if name.starts(with: Self.temporaryPrefix) {
                try removeIfStale(name, st, in: root, as: name)
                continue
            }
            guard Self.isHex(name, count: 2), st.st_mode & S_IFMT == S_IFDIR else { continue }
            let sub: FileDescriptor
            do { sub = try root.openDirectory(name) } catch let e as SystemError where e.errno == ELOOP || e.errno == ENOTDIR { continue }
            try sub.closeAfter {
                for (entry, _) in try FileSystem.directoryEntriesWithTypes([0x2e], relativeTo: sub) {
                    if entry.starts(with: Self.temporaryPrefix) {
                        try removeIfStale(entry, try FileSystem.lstat(entry, relativeTo: sub), in: sub, as: name + [0x2f] + entry)
                        continue
                    }
                    guard Self.isHex(entry, count: 62) else { continue }
                    let est = try FileSystem.lstat(entry, relativeTo: sub)
                    guard est.st_mode & S_IFMT == S_IFREG else { continue }
                    let object = name + [0x2f] + entry
                    if keep.contains(object) {
                        found.insert(object)
                        continue
                    }
                    result.removed.append((object, Int64(est.st_size)))
                    if !dryRun { try FileSystem.unlink(entry, relativeTo: sub) }
                }
            }
        }
        result.kept = found.count
        result.missing = keep.subtracting(found).sorted { $0.lexicographicallyPrecedes($1) }
        result.removed.sort { $0.object.lexicographicallyPrecedes($1.object) }
        return result
    }
}
