import CCrypto
import CLibArchive
import CairnSystem
import Foundation  // JSONSerialization, for the image's small JSON documents
#if canImport(Glibc)
import Glibc
#endif

/// Reading an OCI image (an image layout directory, an OCI archive, or a
/// docker archive as `podman save` writes it): its manifest and config,
/// checked against their digests before anything is written, and its
/// layers as streams whose digests are checked as they are read.

extension MetadataKey {
    /// The digest of the image manifest a commit was made from ("sha256:...").
    public static let ociManifestDigest = "cairn.oci.manifest-digest"
    /// The digest of the image's config (the image id, "sha256:...").
    public static let ociConfigDigest = "cairn.oci.config-digest"
}

public struct OCISource: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case layout = "oci", ociArchive = "oci-archive", dockerArchive = "docker-archive" }
    public var kind: Kind
    public var path: String
    /// oci: the `org.opencontainers.image.ref.name` of a manifest in
    /// index.json; docker-archive: one of the image's RepoTags.
    public var tag: String?

    /// Parses `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:TAG]`; as skopeo does, the path ends at the
    /// first colon.
    public init(parsing text: String) throws(RepoError) {
        guard let colon = text.firstIndex(of: ":"), let kind = Kind(rawValue: String(text[..<colon])) else {
            throw RepoError("reading image \(text)", "expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG]")
        }
        let rest = text[text.index(after: colon)...]
        let parts = rest.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        self.kind = kind
        self.path = String(parts[0])
        self.tag = parts.count > 1 ? String(parts[1]) : nil
        if path.isEmpty { throw RepoError("reading image \(text)", "no path after '\(kind.rawValue):'") }
        if tag?.isEmpty == true { throw RepoError("reading image \(text)", "empty tag after the path") }
    }

    public var description: String { "\(kind.rawValue):\(path)" + (tag.map { ":" + $0 } ?? "") }
}

/// A content descriptor (OCI image spec, descriptor.md).
struct OCIDescriptor {
    var mediaType: String
    /// "sha256:<64 lowercase hex>", checked: it names files.
    var digest: String
    var size: Int64

    var hex: String { String(digest.dropFirst(7)) }
}

/// How a layer's bytes are compressed.
enum LayerCompression {
    case none, gzip, zstd
    /// docker-archive layers carry no media type: whatever libarchive finds.
    case detect

    init?(mediaType: String) {
        switch mediaType {
        case "application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar": self = .none
        case "application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip": self = .gzip
        case "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd": self = .zstd
        default: return nil
        }
    }
}

/// One layer to apply: where its blob is and what it must hash to.
struct OCILayer {
    /// "layer 2 of 3 (sha256:...)", for messages.
    var name: String
    /// The blob's name in its store.
    var blob: String
    var compression: LayerCompression
    /// The blob's digest and size; nil for docker-archive layers, which
    /// only the config's diff_id pins.
    var digest: String?
    var size: Int64?
    /// The config's rootfs.diff_ids entry: the digest of the uncompressed tar.
    var diffID: String
}

/// What reading an image's JSON documents found.
struct OCIImage {
    var source: OCISource
    var store: BlobStore
    var manifestDigest: String?
    var configDigest: String
    var layers: [OCILayer]
    var labels: [String: String]
}

// MARK: SHA-256

/// A running SHA-256 (OpenSSL: the layers of an OS image are gigabytes).
final class SHA256Hasher {
    private let ctx = EVP_MD_CTX_new()!
    private(set) var count: Int64 = 0

    init() { EVP_DigestInit_ex(ctx, EVP_sha256(), nil) }
    deinit { EVP_MD_CTX_free(ctx) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(ctx, base, bytes.count)
        count += Int64(bytes.count)
    }

    /// "sha256:<hex>".
    func finish() -> String { "sha256:" + hexString(finishBytes()) }

    /// The 32 bytes of the digest.
    func finishBytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &n)
        return out
    }

    static func digest(_ bytes: [UInt8]) -> String {
        let h = SHA256Hasher()
        bytes.withUnsafeBytes { h.update($0) }
        return h.finish()
    }
}

// MARK: Byte streams

/// A pull stream of bytes; `read` returns 0 at the end.
protocol ByteSource: AnyObject {
    func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

extension ByteSource {
    /// Reads to the end, at most `limit` bytes (more is an error naming `what`).
    func readAll(limit: Int, what: String) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try read($0) }
            if n == 0 { return result }
            result += chunk[0..<n]
            if result.count > limit { throw RepoError(what, "larger than \(limit) bytes, more than cairn reads of such a document") }
        }
    }

    /// Reads and drops the rest.
    func drain() throws {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while try chunk.withUnsafeMutableBytes({ try read($0) }) > 0 {}
    }
}

final class FileSource: ByteSource {
    let fd: Int32
    let path: String

    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepoError("reading \(path)", String(cString: strerror(errno))) }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw RepoError("reading \(path)", String(cString: strerror(errno))) }
        }
    }
}

/// The data of the current entry of a libarchive reader, which it owns.
final class ArchiveDataSource: ByteSource {
    let archive: OpaquePointer
    let what: String
    /// Keeps the reader's own input alive.
    let upstream: AnyObject?

    init(archive: OpaquePointer, what: String, upstream: AnyObject? = nil) {
        self.archive = archive
        self.what = what
        self.upstream = upstream
    }

    deinit { archive_read_free(archive) }

    func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = archive_read_data(archive, buffer.baseAddress, buffer.count)
        if n < 0 {
            if let feed = upstream as? ArchiveFeed, let e = feed.failure { throw e }
            throw RepoError(what, archiveErrorString(archive))
        }
        return n
    }
}

/// Hashes and counts what passes through.
final class HashingSource: ByteSource {
    let inner: ByteSource
    let hasher = SHA256Hasher()

    init(_ inner: ByteSource) { self.inner = inner }

    func read(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = try inner.read(buffer)
        hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        return n
    }
}

func archiveErrorString(_ a: OpaquePointer) -> String {
    archive_error_string(a).map { String(cString: $0) } ?? "unknown archive error"
}

/// Feeds a ByteSource to a libarchive reader through its read callback.
/// A failure of the source is kept here: libarchive only learns "-1".
final class ArchiveFeed {
    let source: ByteSource
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 16)
    var failure: Error?

    init(_ source: ByteSource) { self.source = source }
    deinit { buffer.deallocate() }

    /// A reader of `source` with `configure` choosing formats and filters.
    static func open(_ source: ByteSource, what: String, configure: (OpaquePointer) -> Void) throws -> (OpaquePointer, ArchiveFeed) {
        let feed = ArchiveFeed(source)
        let a = archive_read_new()!
        configure(a)
        let r = archive_read_open(a, Unmanaged.passUnretained(feed).toOpaque(), nil, { _, client, out in
            let feed = Unmanaged<ArchiveFeed>.fromOpaque(client!).takeUnretainedValue()
            do {
                let n = try feed.source.read(feed.buffer)
                out?.pointee = UnsafeRawPointer(feed.buffer.baseAddress)
                return n
            } catch {
                feed.failure = error
                return -1
            }
        }, nil)
        if r != ARCHIVE_OK {
            defer { archive_read_free(a) }
            if let e = feed.failure { throw e }
            throw RepoError(what, archiveErrorString(a))
        }
        return (a, feed)
    }
}

// MARK: Blob stores

/// Where an image's files are: a directory, or the members of a tar.
protocol BlobStore {
    /// The size of the file `name`, or nil when there is none.
    func size(of name: String) -> Int64?
    func open(_ name: String) throws -> ByteSource
}

struct DirectoryStore: BlobStore {
    let root: String

    func size(of name: String) -> Int64? {
        var st = stat()
        guard stat(root + "/" + name, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(st.st_size)
    }

    func open(_ name: String) throws -> ByteSource { try FileSource(path: root + "/" + name) }
}

/// The regular-file members of a tar archive, read in place: a member is
/// found by reading headers again (skipping data seeks in a file), so
/// layers are read in manifest order whatever the order of the archive.
struct TarStore: BlobStore {
    let path: String
    /// Member name ("./" and leading "/" dropped) → size; the last wins, as tar extracts.
    let members: [String: Int64]
    /// Symlink members → their targets as member names (docker archives
    /// link `<id>/layer.tar` to `../<diff id>.tar`); nil for one that leaves the archive.
    let links: [String: String?]

    init(path: String) throws {
        self.path = path
        var members: [String: Int64] = [:]
        var links: [String: String?] = [:]
        try Self.walk(path) { a, entry, name in
            members[name] = nil
            links[name] = nil
            switch archive_entry_filetype(entry) & S_IFMT {
            case S_IFREG: members[name] = archive_entry_size(entry)
            case S_IFLNK:
                guard let t = archive_entry_symlink(entry) else { break }
                let target = String(decoding: UnsafeRawBufferPointer(start: t, count: strlen(t)), as: UTF8.self)
                var parts = name.split(separator: "/").dropLast().map(String.init)
                var inside = !target.hasPrefix("/")
                for part in target.split(separator: "/") where part != "." {
                    if part == ".." { if parts.popLast() == nil { inside = false } } else { parts.append(String(part)) }
                }
                links[name] = .some(inside ? parts.joined(separator: "/") : nil)
            default: break
            }
            return false
        }
        if members.isEmpty { throw RepoError("reading \(path)", "no files in it (empty, or not a tar archive)") }
        self.members = members
        self.links = links
    }

    /// The regular member `name` names, through at most 8 symlinks.
    private func resolved(_ name: String) -> String? {
        var name = name
        for _ in 0..<8 {
            if members[name] != nil { return name }
            guard let next = links[name], let target = next else { return nil }
            name = target
        }
        return nil
    }

    static func normalized(_ raw: UnsafePointer<CChar>) -> String {
        let name = String(decoding: UnsafeRawBufferPointer(start: raw, count: strlen(raw)), as: UTF8.self)
        return name.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }.joined(separator: "/")
    }

    static func openReader(_ path: String) throws -> OpaquePointer {
        let a = archive_read_new()!
        archive_read_support_format_tar(a)
        archive_read_support_filter_all(a)  // an archive may be compressed as a whole
        guard archive_read_open_filename(a, path, 1 << 16) == ARCHIVE_OK else {
            defer { archive_read_free(a) }
            throw RepoError("reading \(path)", archiveErrorString(a))
        }
        return a
    }

    /// Calls `body` on each entry until it returns true; returns the reader
    /// positioned there (the caller frees it), or nil at the end.
    @discardableResult
    static func walk(_ path: String, _ body: (OpaquePointer, OpaquePointer, String) throws -> Bool) throws -> OpaquePointer? {
        let a = try openReader(path)
        var entry: OpaquePointer? = nil
        while true {
            let r = archive_read_next_header(a, &entry)
            if r == ARCHIVE_EOF { archive_read_free(a); return nil }
            guard r == ARCHIVE_OK || r == ARCHIVE_WARN, let entry, let raw = archive_entry_pathname(entry) else {
                defer { archive_read_free(a) }
                throw RepoError("reading \(path)", archiveErrorString(a))
            }
            if try body(a, entry, normalized(raw)) { return a }
        }
    }

    func size(of name: String) -> Int64? { resolved(name).flatMap { members[$0] } }

    func open(_ given: String) throws -> ByteSource {
        let name = resolved(given) ?? given
        let size = members[name]
        guard let a = try Self.walk(path, { _, entry, member in
            member == name && archive_entry_size(entry) == size && archive_entry_filetype(entry) & S_IFMT == S_IFREG
        }) else {
            throw RepoError("reading \(path)", "member \(name) went missing while reading")
        }
        return ArchiveDataSource(archive: a, what: "reading \(name) in \(path)")
    }
}

// MARK: The image's documents

/// A JSON object from untrusted bytes.
private func jsonObject(_ bytes: [UInt8], what: String) throws -> [String: Any] {
    guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
        throw RepoError(what, "not a JSON object")
    }
    return object
}

private func isSHA256Digest(_ s: String) -> Bool {
    let u = Array(s.utf8)
    return u.count == 71 && s.hasPrefix("sha256:") && u[7...].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
}

/// Checks a digest string; it becomes a file name.
private func checkedDigest(_ value: Any?, what: String) throws -> String {
    guard let s = value as? String else { throw RepoError(what, "no digest") }
    guard isSHA256Digest(s) else {
        if s.hasPrefix("sha512:") { throw RepoError(what, "digest \(s.prefix(20))...: cairn verifies sha256 digests only") }
        throw RepoError(what, "'\(s.prefix(80))' is not a sha256 digest (sha256:<64 lowercase hex digits>)")
    }
    return s
}

private func descriptor(_ value: Any?, what: String) throws -> OCIDescriptor {
    guard let d = value as? [String: Any] else { throw RepoError(what, "not a descriptor") }
    let digest = try checkedDigest(d["digest"], what: what)
    guard let size = (d["size"] as? NSNumber)?.int64Value, size >= 0 else { throw RepoError(what, "descriptor \(digest) has no valid size") }
    return OCIDescriptor(mediaType: d["mediaType"] as? String ?? "", digest: digest, size: size)
}

extension OCIImage {
    /// The largest manifest, index or config cairn reads (the distribution
    /// spec has registries refuse manifests above 4 MiB).
    static let documentLimit = 16 << 20

    /// Reads and checks everything but the layers' contents: every
    /// document against its digest, every layer blob present with the
    /// size its descriptor gives, every media type one cairn handles.
    static func open(_ source: OCISource) throws -> OCIImage {
        let context = "reading image \(source)"
        let store: BlobStore
        switch source.kind {
        case .layout:
            var st = stat()
            guard stat(source.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw RepoError(context, "\(source.path) is not a directory (an OCI image layout)")
            }
            store = DirectoryStore(root: source.path)
        case .ociArchive, .dockerArchive:
            store = try TarStore(path: source.path)
        }
        if source.kind == .dockerArchive { return try openDockerArchive(source, store: store, context: context) }

        guard store.size(of: "oci-layout") != nil, let indexSize = store.size(of: "index.json") else {
            throw RepoError(context, "no oci-layout and index.json: not an OCI image layout")
        }
        if indexSize > documentLimit { throw RepoError(context, "index.json is larger than \(documentLimit) bytes") }
        let index = try jsonObject(try store.open("index.json").readAll(limit: documentLimit, what: context + ": index.json"),
                                   what: context + ": index.json")
        guard let list = index["manifests"] as? [Any] else { throw RepoError(context, "index.json lists no manifests") }
        var candidates: [(OCIDescriptor, String?)] = []
        for (i, m) in list.enumerated() {
            let d = try descriptor(m, what: context + ": index.json manifest \(i + 1)")
            let name = ((m as? [String: Any])?["annotations"] as? [String: Any])?["org.opencontainers.image.ref.name"] as? String
            candidates.append((d, name))
        }
        let chosen: OCIDescriptor
        if let tag = source.tag {
            let matching = candidates.filter { $0.1 == tag }
            guard matching.count == 1 else {
                let tags = candidates.compactMap { $0.1 }
                throw RepoError(context, matching.isEmpty ? "index.json has no manifest tagged '\(tag)' (tags: \(tags.isEmpty ? "none" : tags.joined(separator: ", ")))"
                                : "index.json has \(matching.count) manifests tagged '\(tag)'")
            }
            chosen = matching[0].0
        } else {
            guard candidates.count == 1 else {
                let tags = candidates.compactMap { $0.1 }
                throw RepoError(context, "index.json lists \(candidates.count) manifests; name one as \(source.kind.rawValue):\(source.path):TAG"
                                + (tags.isEmpty ? "" : " (tags: \(tags.joined(separator: ", ")))"))
            }
            chosen = candidates[0].0
        }
        let manifestTypes = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]
        if chosen.mediaType == "application/vnd.oci.image.index.v1+json" || chosen.mediaType == "application/vnd.docker.distribution.manifest.list.v2+json" {
            throw RepoError(context, "manifest \(chosen.digest) is an image index (several platforms); cairn commits one image manifest")
        }
        guard manifestTypes.contains(chosen.mediaType) else {
            throw RepoError(context, "manifest \(chosen.digest) has media type '\(chosen.mediaType)', which cairn does not handle")
        }
        let manifestBytes = try readDocument(chosen, store: store, what: "manifest", context: context)
        let manifest = try jsonObject(manifestBytes, what: context + ": manifest \(chosen.digest)")
        if let mt = manifest["mediaType"] as? String, !manifestTypes.contains(mt) {
            throw RepoError(context, "manifest \(chosen.digest) says its media type is '\(mt)', which cairn does not handle")
        }
        let configDescriptor = try descriptor(manifest["config"], what: context + ": manifest \(chosen.digest) config")
        let configTypes = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"]
        guard configTypes.contains(configDescriptor.mediaType) else {
            throw RepoError(context, "config \(configDescriptor.digest) has media type '\(configDescriptor.mediaType)', which cairn does not handle (not a container image)")
        }
        guard let layerList = manifest["layers"] as? [Any] else { throw RepoError(context, "manifest \(chosen.digest) lists no layers") }
        var layerDescriptors: [OCIDescriptor] = []
        for (i, l) in layerList.enumerated() {
            let d = try descriptor(l, what: context + ": manifest \(chosen.digest) layer \(i + 1)")
            layerDescriptors.append(d)
        }
        // Before reading anything large: every blob there, of its size.
        for (i, d) in layerDescriptors.enumerated() {
            let name = "layer \(i + 1) of \(layerDescriptors.count) (\(d.digest))"
            guard LayerCompression(mediaType: d.mediaType) != nil else {
                throw RepoError(context, "\(name) has media type '\(d.mediaType)', which cairn does not handle (tar, tar+gzip, tar+zstd)")
            }
            try checkPresent(d, store: store, name: name, context: context)
        }
        let configBytes = try readDocument(configDescriptor, store: store, what: "config", context: context)
        let (diffIDs, labels) = try parseConfig(configBytes, what: context + ": config \(configDescriptor.digest)")
        guard diffIDs.count == layerDescriptors.count else {
            throw RepoError(context, "config \(configDescriptor.digest) lists \(diffIDs.count) diff_ids for the manifest's \(layerDescriptors.count) layers")
        }
        let layers = layerDescriptors.enumerated().map { i, d in
            OCILayer(name: "layer \(i + 1) of \(layerDescriptors.count) (\(d.digest))", blob: "blobs/sha256/" + d.hex,
                     compression: LayerCompression(mediaType: d.mediaType)!, digest: d.digest, size: d.size, diffID: diffIDs[i])
        }
        return OCIImage(source: source, store: store, manifestDigest: chosen.digest, configDigest: configDescriptor.digest,
                        layers: layers, labels: labels)
    }

    private static func checkPresent(_ d: OCIDescriptor, store: BlobStore, name: String, context: String) throws {
        guard let size = store.size(of: "blobs/sha256/" + d.hex) else {
            throw RepoError(context, "the manifest names \(name), which is not in the image (no blobs/sha256/\(d.hex.prefix(12))...)")
        }
        guard size == d.size else {
            throw RepoError(context, "\(name) is \(size) bytes, but its descriptor says \(d.size)" + (size < d.size ? " (truncated)" : ""))
        }
    }

    /// A manifest or config, checked against its descriptor.
    private static func readDocument(_ d: OCIDescriptor, store: BlobStore, what: String, context: String) throws -> [UInt8] {
        let name = "\(what) \(d.digest)"
        try checkPresent(d, store: store, name: name, context: context)
        if d.size > documentLimit { throw RepoError(context, "\(name) is \(d.size) bytes, more than cairn reads of such a document") }
        let bytes = try store.open("blobs/sha256/" + d.hex).readAll(limit: documentLimit, what: context + ": " + name)
        let actual = SHA256Hasher.digest(bytes)
        guard actual == d.digest, bytes.count == d.size else {
            throw RepoError(context, "\(name) has digest \(actual) (\(bytes.count) bytes): it is not the blob its descriptor names")
        }
        return bytes
    }

    private static func parseConfig(_ bytes: [UInt8], what: String) throws -> ([String], [String: String]) {
        let config = try jsonObject(bytes, what: what)
        guard let rootfs = config["rootfs"] as? [String: Any], let ids = rootfs["diff_ids"] as? [Any] else {
            throw RepoError(what, "no rootfs.diff_ids")
        }
        let diffIDs = try ids.enumerated().map { i, id in try checkedDigest(id, what: what + " diff_id \(i + 1)") }
        var labels: [String: String] = [:]
        if let c = config["config"] as? [String: Any], let l = c["Labels"] as? [String: Any] {
            for (k, v) in l { if let s = v as? String { labels[k] = s } }
        }
        return (diffIDs, labels)
    }

    /// `podman save`/`docker save` archives: manifest.json names the config
    /// and the layer tars by member name; only the config's diff_ids pin
    /// the layers, and there is no manifest blob to record.
    private static func openDockerArchive(_ source: OCISource, store: BlobStore, context: String) throws -> OCIImage {
        guard store.size(of: "manifest.json") != nil else { throw RepoError(context, "no manifest.json: not a docker archive") }
        let bytes = try store.open("manifest.json").readAll(limit: documentLimit, what: context + ": manifest.json")
        guard let list = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [[String: Any]] else {
            throw RepoError(context, "manifest.json is not a JSON array of images")
        }
        let chosen: [String: Any]
        if let tag = source.tag {
            let matching = list.filter { ($0["RepoTags"] as? [String])?.contains(tag) == true }
            guard matching.count == 1 else {
                let tags = list.flatMap { $0["RepoTags"] as? [String] ?? [] }
                throw RepoError(context, "manifest.json has \(matching.count) images tagged '\(tag)' (tags: \(tags.isEmpty ? "none" : tags.joined(separator: ", ")))")
            }
            chosen = matching[0]
        } else {
            guard list.count == 1 else { throw RepoError(context, "manifest.json lists \(list.count) images; name one as docker-archive:\(source.path):TAG") }
            chosen = list[0]
        }
        guard let configName = chosen["Config"] as? String, let layerNames = chosen["Layers"] as? [String] else {
            throw RepoError(context, "manifest.json names no Config and Layers")
        }
        guard let configSize = store.size(of: configName) else { throw RepoError(context, "manifest.json names config \(configName), which is not in the archive") }
        if configSize > documentLimit { throw RepoError(context, "config \(configName) is larger than \(documentLimit) bytes") }
        let configBytes = try store.open(configName).readAll(limit: documentLimit, what: context + ": config \(configName)")
        let configDigest = SHA256Hasher.digest(configBytes)
        // docker names the config by its digest (the image id): hold it to that.
        let stem = configName.hasSuffix(".json") ? String(configName.dropLast(5)) : configName
        if isSHA256Digest("sha256:" + stem), "sha256:" + stem != configDigest {
            throw RepoError(context, "config \(configName) has digest \(configDigest), not the one its name gives")
        }
        let (diffIDs, labels) = try parseConfig(configBytes, what: context + ": config \(configName)")
        guard diffIDs.count == layerNames.count else {
            throw RepoError(context, "config \(configName) lists \(diffIDs.count) diff_ids for manifest.json's \(layerNames.count) layers")
        }
        var layers: [OCILayer] = []
        for (i, member) in layerNames.enumerated() {
            let name = "layer \(i + 1) of \(layerNames.count) (\(member))"
            guard store.size(of: member) != nil else { throw RepoError(context, "manifest.json names \(name), which is not in the archive") }
            layers.append(OCILayer(name: name, blob: member, compression: .detect, digest: nil, size: nil, diffID: diffIDs[i]))
        }
        return OCIImage(source: source, store: store, manifestDigest: nil, configDigest: configDigest, layers: layers, labels: labels)
    }
}

// MARK: Reading a layer

/// A layer being read: blob bytes hashed, decompressed, hashed again, and
/// parsed as tar; `finish` drains both streams and checks both digests.
final class LayerReader {
    let layer: OCILayer
    let tar: OpaquePointer
    private let tarFeed: ArchiveFeed
    private let blob: HashingSource
    private let uncompressed: HashingSource
    /// The decompressor, kept alive while the tar reader pulls from it.
    private let decompressor: ByteSource?

    init(_ layer: OCILayer, store: BlobStore) throws {
        self.layer = layer
        let what = layer.name
        blob = HashingSource(try store.open(layer.blob))
        if layer.compression == .none {
            decompressor = nil
            uncompressed = blob
        } else {
            let (raw, feed) = try ArchiveFeed.open(blob, what: what) { a in
                archive_read_support_format_raw(a)
                switch layer.compression {
                case .gzip: archive_read_support_filter_gzip(a)
                case .zstd: archive_read_support_filter_zstd(a)
                case .detect: archive_read_support_filter_gzip(a); archive_read_support_filter_zstd(a); archive_read_support_filter_xz(a)
                case .none: break
                }
            }
            let source = ArchiveDataSource(archive: raw, what: what, upstream: feed)
            var entry: OpaquePointer? = nil
            let r = archive_read_next_header(raw, &entry)
            guard r == ARCHIVE_OK || r == ARCHIVE_EOF else {
                if let e = feed.failure { throw e }
                throw RepoError(what, archiveErrorString(raw))
            }
            let filter = archive_filter_code(raw, 0)
            switch layer.compression {
            case .gzip where filter != ARCHIVE_FILTER_GZIP: throw RepoError(what, "not gzip data, as its media type says")
            case .zstd where filter != ARCHIVE_FILTER_ZSTD: throw RepoError(what, "not zstd data, as its media type says")
            default: break
            }
            decompressor = source
            uncompressed = HashingSource(source)
        }
        (tar, tarFeed) = try ArchiveFeed.open(uncompressed, what: what) { a in
            archive_read_support_format_tar(a)
        }
    }

    deinit { archive_read_free(tar) }

    /// The error behind a failed libarchive call: the stream's, else the reader's.
    func failure(_ context: String) -> RepoError {
        if let e = tarFeed.failure as? RepoError { return RepoError(context, e.reason.isEmpty ? e.context : e.reason) }
        if let e = tarFeed.failure { return RepoError(context, "\(e)") }
        return RepoError(context, archiveErrorString(tar))
    }

    /// After the tar's end: reads what is left (padding after the end
    /// blocks is part of the hashed stream) and checks the digests.
    func finish() throws {
        try uncompressed.drain()
        if uncompressed !== blob { try blob.drain() }
        let what = layer.name
        let blobDigest = blob.hasher.finish()
        if let digest = layer.digest {
            guard blobDigest == digest else { throw RepoError(what, "the blob has digest \(blobDigest), not the one the manifest names") }
            if let size = layer.size, blob.hasher.count != size {
                throw RepoError(what, "the blob is \(blob.hasher.count) bytes, not the \(size) the manifest says")
            }
        }
        let diff = uncompressed === blob ? blobDigest : uncompressed.hasher.finish()
        guard diff == layer.diffID else {
            throw RepoError(what, "the uncompressed layer has digest \(diff), not the config's diff_id \(layer.diffID)")
        }
    }
}
