import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// What `updateSummary` wrote.
public struct SummaryUpdate: Sendable {
    /// The new summary, as read back from the file libostree wrote.
    public var summary: RepositorySummary
    /// Size of the `summary` file in bytes.
    public var size: Int
    /// The keys whose signatures `summary.sig` now holds (none: there is no
    /// `summary.sig`).
    public var signedBy: [Ed25519PublicKey]
}

/// A static delta in the repository's `deltas/` folder.
public struct StaticDeltaInfo: Sendable {
    /// "TO" or "FROM-TO" (hex), as ostree names it.
    public var name: String
    /// Its folder relative to the repository (`deltas/<b64>/<b64>`).
    public var relativePath: String
    /// Bytes of the superblock and every part file.
    public var size: UInt64
    /// Number of files: the superblock and its parts (1 when parts are inline).
    public var files: Int
}

/// What a static delta's superblock says it goes from and to.
public struct StaticDeltaEnds: Sendable {
    /// The source commit, nil for a delta from nothing.
    public var from: String?
    public var to: String
    public var name: String { from.map { "\($0)-\(to)" } ?? to }
}

extension Repository {
    static let summaryFile = "summary"
    static let summarySignatureFile = "summary.sig"
    static let staticDeltaSuperblockType = "(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))"

    // MARK: The summary

    /// Regenerates the repository's `summary` with libostree
    /// (`ostree_repo_regenerate_summary`: every local ref, sorted, with its
    /// commit's size, timestamp and version; `ostree.summary.last-modified`;
    /// the static deltas in `deltas/`; it also rewrites `delta-indexes/`),
    /// adding `ostree.summary.expires` = now + `expiresIn` seconds when
    /// given. libostree removes `summary.sig` (it signed the previous
    /// bytes); with `signingKeys`, a new one is written (atomically) with an
    /// ed25519 signature by each key over the new summary's exact bytes, in
    /// ostree's format (`signSummary`). Holds the repository's exclusive lock
    /// throughout, so that no other writer's summary ends up beside these
    /// signatures.
    ///
    /// Between libostree's rename of `summary` and the new `summary.sig`, a
    /// client may read the new summary with no signature (or, for an instant,
    /// with the old one): it must refuse it and retry, never accept it.
    @discardableResult
    public func updateSummary(signingKeys: [Ed25519SecretKey], expiresIn: UInt64?) throws -> SummaryUpdate {
        let context = "updating the summary of \(path)"
        return try withExclusiveLock(context) {
            var additional: Variant? = nil
            if let expiresIn {
                let (expires, overflow) = UInt64(time(nil)).addingReportingOverflow(expiresIn)
                guard !overflow, expires <= UInt64(Int64.max) else { throw RepoError(context, "an expiry \(expiresIn) s from now is out of range") }
                var extra = VariantDictionary()
                extra.set(SummaryKey.expires, GVariant(uint64: expires.byteSwapped))  // big-endian, as ostree reads it
                guard let v = Variant(normalForm: extra.serialized(), type: "a{sv}") else { throw RepoError(context, "cannot build the additional metadata") }
                additional = v
            }
            let previous = [Self.summaryFile, Self.summarySignatureFile].map { ($0, modificationSecond($0)) }
            try gcall(context) { ostree_repo_regenerate_summary(repo, additional?.raw, nil, $0) }
            defer { for (name, second) in previous { if let second { keepAfter(second, name) } } }
            guard let bytes = try readRepoFile(Self.summaryFile, limit: Self.summaryLimit, what: "the new summary") else {
                throw RepoError(context, "libostree wrote no \(path)/\(Self.summaryFile)")
            }
            let parsed: RepositorySummary
            do { parsed = try RepositorySummary(serialized: bytes) } catch {
                throw RepoError(context, "the summary libostree wrote does not read back: \(error)")
            }
            var signedBy: [Ed25519PublicKey] = []
            if !signingKeys.isEmpty {
                let signatures: [UInt8]
                do { signatures = try signSummary(bytes, with: signingKeys) ?? [] } catch {
                    throw RepoError(context, "the summary was regenerated but not signed: \(error)")
                }
                do {
                    try FileSystem.writeAtomically(path + "/" + Self.summarySignatureFile) { try $0.write(signatures) }
                } catch {
                    throw RepoError(context, "the summary was regenerated but \(path)/\(Self.summarySignatureFile) not written: \(error)")
                }
                var seen = Set<Ed25519PublicKey>()
                signedBy = signingKeys.map(\.publicKey).filter { seen.insert($0).inserted }
            }
            return SummaryUpdate(summary: parsed, size: bytes.count, signedBy: signedBy)
        }
    }

    /// The whole-second modification time of a file of the repository, nil
    /// when it is absent.
    func modificationSecond(_ name: String) -> Int? {
        var st = stat()
        guard fstatat(directoryDescriptor.rawValue, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { return nil }
        return st.st_mtim.tv_sec
    }

    /// Moves the mtime of `name` past `second` when a rewrite within that very
    /// second left it there: clients ask a web server whether the summary
    /// changed with If-Modified-Since and ETags that nginx builds from whole
    /// seconds and the size (which a signature's never changes), and a 304
    /// would keep them on the old summary.
    func keepAfter(_ second: Int, _ name: String) {
        guard let now = modificationSecond(name), now <= second else { return }
        var times = [timespec(tv_sec: second + 1, tv_nsec: 0), timespec(tv_sec: second + 1, tv_nsec: 0)]
        _ = utimensat(directoryDescriptor.rawValue, name, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// The largest `summary` read (Flathub's is some tens of MiB).
    static let summaryLimit = 512 << 20

    /// The exact bytes of `summary` and of `summary.sig` (nil when absent),
    /// or nil when the repository has no summary. No parsing: the bytes may
    /// be hostile (read them with `RepositorySummary` and `TrustPolicy`).
    public func summary() throws -> (summary: [UInt8], signatures: [UInt8]?)? {
        guard let summary = try readRepoFile(Self.summaryFile, limit: Self.summaryLimit, what: "the summary") else { return nil }
        let signatures = try readRepoFile(Self.summarySignatureFile, limit: 64 << 20, what: "the summary's signatures")
        return (summary, signatures)
    }

    // MARK: Static deltas (libostree's engine)

    /// The static deltas in `deltas/` (those with a superblock), by name.
    public func staticDeltaNames() throws -> [String] {
        var names: UnsafeMutablePointer<GPtrArray>? = nil
        try gcall("listing the static deltas of \(path)") { ostree_repo_list_static_delta_names(repo, &names, nil, $0) }
        guard let names else { return [] }
        defer { g_ptr_array_unref(names) }
        let list = (0..<Int(names.pointee.len)).map { String(cString: names.pointee.pdata[$0]!.assumingMemoryBound(to: CChar.self)) }
        return list.sorted()
    }

    /// Generates a static delta from commit `from` (nil: from nothing) to
    /// commit `to` into `deltas/` (`ostree_repo_static_delta_generate`,
    /// optimised for size as `ostree static-delta generate` asks); with
    /// `inlineParts` the parts go inside the superblock, one file in all.
    /// Both are full commit checksums. The summary lists it after the next
    /// `updateSummary`.
    public func generateStaticDelta(from: String?, to: String, inlineParts: Bool) throws -> StaticDeltaInfo {
        for c in [from, to].compactMap({ $0 }) where !Repository.validChecksum(c) {
            throw RepoError("generating a static delta", "'\(c)' is not a commit checksum")
        }
        let name = from.map { "\($0)-\(to)" } ?? to
        let context = "generating static delta \(name) in \(path)"
        var params = VariantDictionary()
        if inlineParts { params.set("inline-parts", GVariant(boolean: true)) }
        guard let p = Variant(normalForm: params.serialized(), type: "a{sv}") else { throw RepoError(context, "cannot build the parameters") }
        try gcall(context) {
            ostree_repo_static_delta_generate(repo, OSTREE_STATIC_DELTA_GENERATE_OPT_MAJOR, from, to, nil, p.raw, nil, $0)
        }
        return try staticDelta(from: from, to: to)
    }

    /// The delta from `from` to `to` in `deltas/`: its folder, and the size
    /// of its superblock and the part files the superblock names (libostree
    /// leaves stale part files of an earlier generation of the same delta,
    /// which are not counted).
    func staticDelta(from: String?, to: String) throws -> StaticDeltaInfo {
        let name = from.map { "\($0)-\(to)" } ?? to
        let relative = try Self.staticDeltaPath(from: from, to: to)
        let delta = try Self.readStaticDelta(path + "/" + relative, checkParts: false)
        var size: UInt64 = 0
        for file in [delta.superblockFile] + delta.partFiles {
            var st = stat()
            guard stat(file, &st) == 0 else { throw RepoError("reading static delta \(name)", "\(file): \(String(cString: strerror(errno)))") }
            size += UInt64(st.st_size)
        }
        return StaticDeltaInfo(name: name, relativePath: relative, size: size, files: 1 + delta.partFiles.count)
    }

    /// libostree's folder of a delta: `deltas/` then the checksums in its
    /// modified base64 (`/` as `_`, no padding), `from` (else `to`) split
    /// after two characters: `deltas/AB/CDE…-TO…`, or `deltas/AB/CDE…`.
    static func staticDeltaPath(from: String?, to: String) throws -> String {
        func b64(_ checksum: String) throws -> String {
            guard Repository.validChecksum(checksum), let bytes = bytesFromHex(checksum) else {
                throw RepoError("naming a static delta", "'\(checksum)' is not a commit checksum")
            }
            return takeGString(bytes.withUnsafeBufferPointer { ostree_checksum_b64_from_bytes($0.baseAddress) }) ?? ""
        }
        let t = try b64(to)
        guard let from else { return "deltas/" + t.prefix(2) + "/" + t.dropFirst(2) }
        let f = try b64(from)
        return "deltas/" + f.prefix(2) + "/" + f.dropFirst(2) + "-" + t
    }

    /// Applies an offline static delta: `path` is a delta folder (with its
    /// `superblock` and part files, e.g. one of another repository's
    /// `deltas/`) or a superblock file (`ostree_repo_static_delta_execute_offline`,
    /// in one transaction). The delta's source commit must be in this
    /// repository. No ref is set: the commit is written, complete. On any
    /// failure nothing is published and what was staged is removed. A
    /// signed superblock's signatures are not checked (libostree 2022.7
    /// cannot check ed25519).
    @discardableResult
    public func applyStaticDeltaOffline(_ path: String) throws -> StaticDeltaEnds {
        let ends = try Self.readStaticDelta(path, checkParts: true).ends
        let context = "applying static delta \(path) to \(self.path)"
        if let from = ends.from, try !hasCommit(from) {
            throw RepoError(context, "its source commit \(from) is not in the repository (apply the delta to \(from) first)")
        }
        try inCleanTransaction(context) {
            let file = g_file_new_for_path(path)
            defer { unref(file) }
            do {
                try gcall(context) { ostree_repo_static_delta_execute_offline(repo, file, 0, nil, $0) }
            } catch var e as RepoError {
                e.reason = "the delta is corrupt or does not apply: " + e.reason
                throw e
            }
            guard try hasCommit(ends.to) else { throw RepoError(context, "the delta did not write commit \(ends.to)") }
        }
        return ends
    }

    func hasCommit(_ checksum: String) throws -> Bool {
        var have: gboolean = 0
        try gcall("looking up commit \(checksum)") { ostree_repo_has_object(repo, OSTREE_OBJECT_TYPE_COMMIT, checksum, &have, nil, $0) }
        return have != 0
    }

    /// A delta's superblock, read and checked.
    struct StaticDeltaSuperblock {
        var ends: StaticDeltaEnds
        var superblockFile: String
        /// The part files it names (parts not inline), in order.
        var partFiles: [String]
    }

    /// Reads the source and target commits and the parts from a delta's
    /// superblock (a folder's `superblock`, or the file itself), refusing a
    /// file that is not a superblock in GVariant normal form (libostree would
    /// read one with zeros where fields are unreadable) and, with
    /// `checkParts`, a part file whose SHA-256 is not the one the superblock
    /// records.
    static func readStaticDelta(_ path: String, checkParts: Bool) throws -> StaticDeltaSuperblock {
        let context = "reading static delta \(path)"
        var st = stat()
        guard stat(path, &st) == 0 else { throw RepoError(context, String(cString: strerror(errno))) }
        let file = (st.st_mode & S_IFMT) == S_IFDIR ? path + "/superblock" : path
        var error: UnsafeMutablePointer<GError>? = nil
        guard let mapped = g_mapped_file_new(file, 0, &error) else { throw RepoError(context, consumeGError(error)) }
        defer { g_mapped_file_unref(mapped) }
        let bytes = g_mapped_file_get_bytes(mapped)
        defer { g_bytes_unref(bytes) }
        var superblock = Variant(normalForm: bytes, type: staticDeltaSuperblockType)
        if superblock == nil, let signed = Variant(normalForm: bytes, type: "(taya{sv})"),
           UInt64(bigEndian: signed.child(0).uint64) == 0x4F53_5453_474E_4454 {  // "OSTSGNDT": a signed superblock
            let inner = g_variant_get_data_as_bytes(signed.child(1).raw)
            defer { g_bytes_unref(inner) }
            superblock = Variant(normalForm: inner, type: staticDeltaSuperblockType)
        }
        guard let superblock else {
            throw RepoError(context, "\(file) is not a static delta superblock (not a GVariant \(staticDeltaSuperblockType) in normal form)")
        }
        let from = superblock.child(2).bytes, to = superblock.child(3).bytes
        guard to.count == 32, from.isEmpty || from.count == 32 else {
            throw RepoError(context, "\(file): the superblock's commit checksums are \(from.count) and \(to.count) bytes, not 32")
        }
        let ends = StaticDeltaEnds(from: from.isEmpty ? nil : hexString(from), to: hexString(to))

        // Parts not inline in the superblock are files 0, 1, ... beside it,
        // each named with its SHA-256 in the superblock. libostree checks
        // that too, but reports a corrupt part as "Data is corrupt".
        let metadata = superblock.child(0), headers = superblock.child(6)
        let partPrefix = try staticDeltaPath(from: ends.from, to: ends.to) + "/"
        let folder = file.lastIndex(of: "/").map { String(file[..<$0]) } ?? "."
        var parts: [String] = []
        for i in 0..<headers.childCount {
            if let inline = g_variant_lookup_value(metadata.raw, partPrefix + String(i), nil) {
                g_variant_unref(inline)
                continue
            }
            let part = folder + "/" + String(i)
            parts.append(part)
            guard checkParts else { continue }
            let expected = hexString(headers.child(i).child(1).bytes)
            guard let partFile = g_mapped_file_new(part, 0, &error) else {
                throw RepoError(context, "part \(i) of the delta: \(consumeGError(error))")
            }
            defer { g_mapped_file_unref(partFile) }
            let partBytes = g_mapped_file_get_bytes(partFile)
            defer { g_bytes_unref(partBytes) }
            let actual = takeGString(g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, partBytes)) ?? ""
            guard actual == expected else {
                throw RepoError(context, "part \(i) of the delta (\(part)) is corrupt: its SHA-256 is \(actual), the superblock says \(expected)")
            }
        }
        return StaticDeltaSuperblock(ends: ends, superblockFile: file, partFiles: parts)
    }
}
