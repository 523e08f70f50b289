import CairnSystem

/// Keys of an ostree `summary` and of its refs' metadata (ostree-core.h,
/// ostree-repo.c `ostree_repo_regenerate_summary`).
public enum SummaryKey {
    /// `t`, big-endian seconds since the epoch: when the summary was generated.
    public static let lastModified = "ostree.summary.last-modified"
    /// `t`, big-endian seconds since the epoch: after it the summary is stale.
    /// ostree writes it (from additional metadata) but never enforces it.
    public static let expires = "ostree.summary.expires"
    /// `a{sv}`: static delta name ("TO" or "FROM-TO", hex) → `ay`, the
    /// SHA-256 of its superblock file.
    public static let staticDeltas = "ostree.static-deltas"
    /// `s`: the repository's mode (`bare`, `archive-z2`, ...).
    public static let mode = "ostree.summary.mode"
    /// `b`: whether the repository keeps tombstone commits.
    public static let tombstoneCommits = "ostree.summary.tombstone-commits"
    /// `b`: whether deltas are also listed in `delta-indexes/`.
    public static let indexedDeltas = "ostree.summary.indexed-deltas"
    /// `s`: the collection id of the refs in the main list.
    public static let collectionID = "ostree.summary.collection-id"
    /// `a{sa(s(taya{sv}))}`: refs of other collections, by collection id.
    public static let collectionMap = "ostree.summary.collection-map"
    /// Per ref, `t`, big-endian: the commit's timestamp.
    public static let commitTimestamp = "ostree.commit.timestamp"
    /// Per ref, `s`: the commit's `version` metadata (ostree 2022.2 and later).
    public static let commitVersion = "ostree.commit.version"
}

/// An ostree repository's `summary` file, GVariant `(a(s(taya{sv}))a{sv})`:
/// its refs and metadata, read from the file's exact bytes (no Foundation,
/// no GLib).
///
/// The bytes must be in GVariant normal form, which every ostree writes.
/// Refs must be sorted by name and unique (ostree looks them up by binary
/// search, so an unsorted list would mean different things to ostree and to
/// cairn); every checksum must be 32 bytes; a known key of the wrong type is
/// refused. Errors name the field, e.g. `summary.refs['os'].checksum` or
/// `summary.metadata['ostree.summary.expires']`.
///
/// Reading a summary says nothing about who made it: verify its bytes first
/// with `TrustPolicy.verify(summary:signatures:)` (or
/// `verifiedSummary(_:signatures:now:)`, which does both and checks expiry).
public struct RepositorySummary: Sendable {
    public static let type = try! GVariantType("(a(s(taya{sv}))a{sv})")
    static let refType = try! GVariantType("(s(taya{sv}))")
    static let collectionMapType = try! GVariantType("a{sa(s(taya{sv}))}")

    /// One ref of the summary.
    public struct Ref: Sendable {
        public var name: String
        /// The commit checksum: 64 lower-case hex characters.
        public var checksum: String { hexString(checksumBytes) }
        /// The commit checksum as stored, 32 bytes.
        public var checksumBytes: [UInt8]
        /// Size of the commit object in bytes (stored in the summary writer's
        /// byte order, little-endian on every machine ostree runs on).
        public var commitSize: UInt64
        /// The ref's metadata as stored (keys below included).
        public var metadata: VariantDictionary
        /// `ostree.commit.timestamp`, when present.
        public var timestamp: UInt64?
        /// `ostree.commit.version`, when present.
        public var version: String?
    }

    /// A static delta the summary lists (`ostree.static-deltas`).
    public struct StaticDelta: Sendable, Equatable {
        /// "TO", or "FROM-TO" (hex commit checksums), as `ostree static-delta list` prints it.
        public var name: String
        /// The source commit, nil for a delta from nothing (`--empty`).
        public var from: String?
        public var to: String
        /// SHA-256 of the delta's superblock file (32 bytes).
        public var superblockDigest: [UInt8]
    }

    /// Refs of the main list, in stored (sorted) order.
    public var refs: [Ref]
    /// Refs of other collections (`ostree.summary.collection-map`), by
    /// collection id in stored order; empty when absent.
    public var collectionRefs: [(collectionID: String, refs: [Ref])]
    /// The summary's metadata as stored, every key included.
    public var metadata: VariantDictionary
    /// `ostree.summary.last-modified`, seconds since the epoch, when present.
    public var lastModified: UInt64?
    /// `ostree.summary.expires`, seconds since the epoch, when present.
    public var expires: UInt64?
    /// `ostree.static-deltas`, in stored order; empty when absent.
    public var staticDeltas: [StaticDelta]
    /// `ostree.summary.mode`, when present.
    public var mode: String?
    /// `ostree.summary.collection-id`, when present.
    public var collectionID: String?

    /// Parses the exact bytes of a `summary` file.
    public init(serialized: [UInt8]) throws(GVariantError) {
        guard !serialized.isEmpty else { throw GVariantError(path: "summary", problem: "empty (0 bytes)") }
        let v: GVariant
        do { v = try GVariant(type: RepositorySummary.type, data: serialized) } catch { throw RepositorySummary.nameField(error) }
        let parts = v.children
        guard parts.count == 2 else { throw GVariantError(path: "summary", problem: "unreadable") }
        refs = try RepositorySummary.refs(parts[0], path: "summary.refs")
        do { metadata = try VariantDictionary(parts[1]) } catch { throw error.prefixed("summary.metadata") }

        let meta = metadata
        func field(_ key: String, _ type: GVariantType) throws(GVariantError) -> GVariant? {
            guard let value = meta[key] else { return nil }
            guard value.type == type else {
                throw GVariantError(path: "summary.metadata['\(key)']", problem: "has type \(value.type.typeString), not \(type.typeString)")
            }
            return value
        }
        lastModified = try field(SummaryKey.lastModified, .uint64)?.uint64Value?.byteSwapped
        expires = try field(SummaryKey.expires, .uint64)?.uint64Value?.byteSwapped
        mode = try field(SummaryKey.mode, .string)?.stringValue
        collectionID = try field(SummaryKey.collectionID, .string)?.stringValue
        _ = try field(SummaryKey.tombstoneCommits, .boolean)
        _ = try field(SummaryKey.indexedDeltas, .boolean)

        staticDeltas = []
        if let deltas = try field(SummaryKey.staticDeltas, .vardict) {
            let dict: VariantDictionary
            do { dict = try VariantDictionary(deltas) } catch { throw error.prefixed("summary.metadata['\(SummaryKey.staticDeltas)']") }
            var seen = Set<String>()
            for e in dict.entries {
                let path = "summary.metadata['\(SummaryKey.staticDeltas)']['\(e.key)']"
                guard let (from, to) = RepositorySummary.parseDeltaName(e.key) else {
                    throw GVariantError(path: path, problem: "not a static delta name (TO or FROM-TO, 64 lower-case hex characters each)")
                }
                guard seen.insert(e.key).inserted else { throw GVariantError(path: path, problem: "listed twice") }
                guard let digest = e.value.byteArrayValue else {
                    throw GVariantError(path: path, problem: "has type \(e.value.type.typeString), not ay")
                }
                guard digest.count == 32 else {
                    throw GVariantError(path: path, problem: "superblock digest is \(digest.count) bytes, not 32")
                }
                staticDeltas.append(StaticDelta(name: e.key, from: from, to: to, superblockDigest: digest))
            }
        }

        collectionRefs = []
        if let map = try field(SummaryKey.collectionMap, RepositorySummary.collectionMapType) {
            var previous: [UInt8]? = nil
            for entry in map.children {
                let id = entry.children[0].stringValue ?? ""
                let path = "summary.metadata['\(SummaryKey.collectionMap)']['\(id)']"
                let idBytes = Array(id.utf8)
                if let previous, !previous.lexicographicallyPrecedes(idBytes) {
                    throw GVariantError(path: path, problem: idBytes == previous ? "listed twice" : "out of order (collection ids must be sorted)")
                }
                previous = idBytes
                collectionRefs.append((id, try RepositorySummary.refs(entry.children[1], path: path)))
            }
        }
    }

    /// The ref of the main list named `name`.
    public func ref(_ name: String) -> Ref? { refs.first { $0.name == name } }

    /// Whether `ostree.summary.expires` is at or before `now` (seconds since
    /// the epoch). A summary without the key never expires.
    public func isExpired(now: UInt64) -> Bool {
        guard let expires else { return false }
        return now >= expires
    }

    // MARK: Parts

    /// An `a(s(taya{sv}))`: sorted, unique, valid names, 32-byte checksums.
    static func refs(_ list: GVariant, path: String) throws(GVariantError) -> [Ref] {
        var refs: [Ref] = []
        var previous: [UInt8]? = nil
        for (i, r) in list.children.enumerated() {
            let name = r.children[0].stringValue ?? ""
            let nameBytes = Array(name.utf8)
            let here = RepositorySummary.printable(name) ? "\(path)['\(name)']" : "\(path)[\(i)]"
            if let problem = refNameProblem(nameBytes) {
                throw GVariantError(path: here, problem: "invalid ref name: \(problem)")
            }
            if let previous, !previous.lexicographicallyPrecedes(nameBytes) {
                throw GVariantError(path: here, problem: nameBytes == previous ? "listed twice" : "out of order (refs must be sorted by name)")
            }
            previous = nameBytes
            let info = r.children[1].children
            let checksum = info[1].byteArrayValue ?? []
            guard checksum.count == 32 else {
                throw GVariantError(path: here + ".checksum", problem: "\(checksum.count) bytes, not 32")
            }
            let metadata: VariantDictionary
            do { metadata = try VariantDictionary(info[2]) } catch { throw error.prefixed(here + ".metadata") }
            func field(_ key: String, _ type: GVariantType) throws(GVariantError) -> GVariant? {
                guard let value = metadata[key] else { return nil }
                guard value.type == type else {
                    throw GVariantError(path: here + ".metadata['\(key)']", problem: "has type \(value.type.typeString), not \(type.typeString)")
                }
                return value
            }
            refs.append(Ref(name: name, checksumBytes: checksum, commitSize: info[0].uint64Value ?? 0, metadata: metadata,
                            timestamp: try field(SummaryKey.commitTimestamp, .uint64)?.uint64Value?.byteSwapped,
                            version: try field(SummaryKey.commitVersion, .string)?.stringValue))
        }
        return refs
    }

    /// Why `name` is not a ref name by ostree_validate_rev's rule
    /// (`FRAGMENT(/FRAGMENT)*`, a fragment `[\w\d][-._\w\d]*`), or nil. ASCII
    /// characters are checked exactly; other characters are accepted, since
    /// GLib's `\w` is Unicode-aware and this module has no Unicode tables.
    /// Nothing accepted here can climb out of a folder: no empty, `.` or `..`
    /// component, no leading or trailing `/`.
    static func refNameProblem(_ name: [UInt8]) -> String? {
        guard !name.isEmpty else { return "empty" }
        for fragment in name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            guard let first = fragment.first else { return "empty path component" }
            if first == UInt8(ascii: "-") || first == UInt8(ascii: ".") { return "a component starts with '\(Character(Unicode.Scalar(first)))'" }
            for c in fragment where c < 0x80 {
                let ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)
                    || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
                if !ok { return c < 0x20 || c == 0x7f ? "control character 0x\(String(c, radix: 16))" : "character '\(Character(Unicode.Scalar(c)))'" }
            }
        }
        return nil
    }

    /// Whether a name can be shown inside quotes in a message.
    static func printable(_ s: String) -> Bool {
        s.utf8.count <= 200 && s.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7f && $0 != "'" }
    }

    /// "TO" or "FROM-TO", each 64 lower-case hex characters.
    static func parseDeltaName(_ name: String) -> (from: String?, to: String)? {
        func isChecksum(_ s: Substring) -> Bool {
            s.utf8.count == 64 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        }
        let parts = name.split(separator: "-", omittingEmptySubsequences: false)
        switch parts.count {
        case 1 where isChecksum(parts[0]): return (nil, String(parts[0]))
        case 2 where isChecksum(parts[0]) && isChecksum(parts[1]): return (String(parts[0]), String(parts[1]))
        default: return nil
        }
    }

    /// Turns ".0..." of the generic normal-form check into "summary.refs...".
    static func nameField(_ e: GVariantError) -> GVariantError {
        var e = e
        for (i, name) in ["refs", "metadata"].enumerated() where e.path.hasPrefix(".\(i)") {
            e.path = "summary." + name + e.path.dropFirst(2)
            return e
        }
        e.path = e.path.isEmpty ? "summary" : "summary" + (e.path.hasPrefix("[") ? "" : ".") + e.path
        return e
    }
}

// MARK: - Verification

extension TrustPolicy {
    /// One verdict per ed25519 signature in `signatures` (the bytes of
    /// `summary.sig`, nil when the file is absent) over `summary` (the exact
    /// bytes of the `summary` file), in stored order. Fails only when there is
    /// nothing to check: no key, no `summary.sig`, no signature array.
    /// Word a failure with `description(for: .summary)`.
    public func evaluate(summary: [UInt8], signatures: [UInt8]?) -> Result<[SignatureVerdict], VerificationFailure> {
        evaluate(message: summary, signatures: signatures)
    }

    /// Verifies a summary's ed25519 signatures as upstream ostree with
    /// `sign-verify-summary` does: `summary.sig` is an `a{sv}` whose
    /// `ostree.sign.ed25519` (`aay`) holds pure Ed25519 signatures over the
    /// exact bytes of `summary`; the first by a trusted, non-revoked key wins.
    /// The same decision, and the same reasons, as for commits
    /// (`verify(commit:detachedMetadata:)`); word a failure with
    /// `failure.description(for: .summary)`. The summary is not parsed here:
    /// use `verifiedSummary(_:signatures:now:)` to get it parsed and checked
    /// for expiry as well.
    public func verify(summary: [UInt8], signatures: [UInt8]?) -> Result<VerifiedSignature, VerificationFailure> {
        verify(message: summary, signatures: signatures)
    }

    /// What a pull needs: verify the summary's signature, then parse it, then
    /// refuse it when `ostree.summary.expires` is at or before `now` (seconds
    /// since the epoch). Failures: those of `verify(summary:signatures:)`,
    /// then `.corruptSummary`, then `.summaryExpired`.
    public func verifiedSummary(_ summary: [UInt8], signatures: [UInt8]?, now: UInt64)
        -> Result<(signature: VerifiedSignature, summary: RepositorySummary), VerificationFailure> {
        let verified: VerifiedSignature
        switch verify(summary: summary, signatures: signatures) {
        case .failure(let f): return .failure(f)
        case .success(let v): verified = v
        }
        let parsed: RepositorySummary
        do { parsed = try RepositorySummary(serialized: summary) } catch { return .failure(.corruptSummary(error)) }
        if parsed.isExpired(now: now), let expires = parsed.expires { return .failure(.summaryExpired(expires: expires)) }
        return .success((verified, parsed))
    }
}

/// Signs `summary` (the exact bytes of a `summary` file) with each key and
/// returns the bytes of a new `summary.sig`, as upstream's
/// `ostree summary --sign` writes it after `ostree summary -u` (which removes
/// the old one): an `a{sv}` with `ostree.sign.ed25519` holding one signature
/// per key, in order. A key given twice signs once (ed25519 is
/// deterministic). Nil when `keys` is empty.
public func signSummary(_ summary: [UInt8], with keys: [Ed25519SecretKey]) throws(CryptoError) -> [UInt8]? {
    var dict: VariantDictionary? = nil
    var signed = Set<Ed25519PublicKey>()
    for key in keys where signed.insert(key.publicKey).inserted {
        dict = (dict ?? VariantDictionary()).appendingSignature(try key.sign(summary))
    }
    return dict?.serialized()
}

/// "2026-12-02T10:00:00Z" for seconds since the epoch (proleptic Gregorian,
/// UTC), without Foundation or the C library's time zone state.
func utcDate(_ seconds: UInt64) -> String {
    let days = Int64(seconds / 86400), rest = Int(seconds % 86400)
    // Howard Hinnant's civil_from_days.
    let z = days + 719468
    let era = z / 146097
    let doe = z - era * 146097
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(year)-\(two(Int(month)))-\(two(Int(day)))T\(two(rest / 3600)):\(two(rest / 60 % 60)):\(two(rest % 60))Z"
}
