import COSTree
import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// What `pull` is asked to do.
public struct PullOptions {
    /// Parent commits to fetch as well (0: the commit only; -1: all).
    public var depth: Int32 = 0
    /// Write the refs as local branches, as a mirror does.
    public var mirror = false
    /// Say what would be fetched; fetch only the commit metadata.
    public var dryRun = false
    public var disableStaticDeltas = false
    /// Called now and then while objects arrive (in the pulling thread).
    public var progress: ((PullProgress) -> Void)?
    /// Keys that never verify, whatever the remote says (the repository's
    /// revoked keys apply too).
    public var revoked: [Ed25519PublicKey] = []
    /// Seconds without a byte arriving after which a pull gives up (Debian's
    /// libostree has no read timeout: a stalled server would hang it).
    public var stallTimeout: Double = 60
    /// Called with each verified commit before its content is fetched and
    /// its ref moves; throwing refuses it (an upgrade's downgrade check).
    public var accept: ((_ ref: String, _ commit: String) throws -> Void)?
    /// Refuse a commit whose `ostree.ref-binding` does not name the ref
    /// pulled, as libostree does (`ostree pull --disable-verify-bindings`).
    public var verifyBindings = true
    public init() {}
}

/// libostree's progress counters of a pull.
public struct PullProgress: Sendable {
    public var fetched: UInt32 = 0
    public var requested: UInt32 = 0
    public var outstanding: UInt32 = 0
    public var metadataFetched: UInt32 = 0
    public var bytesTransferred: UInt64 = 0
    public var fetchedDeltaParts: UInt32 = 0
    public var totalDeltaParts: UInt32 = 0
    public var totalDeltaPartSize: UInt64 = 0
    /// Seconds since the pull started.
    public var elapsed: Double = 0
}

/// One ref a pull moved (or would move).
public struct PulledRef: Sendable {
    public var remote: String
    public var ref: String
    /// The commit the local ref pointed at before, nil when it had none.
    public var from: String?
    public var to: String
    /// The line saying which key verified the commit; nil when the remote
    /// does not verify signatures.
    public var verifiedBy: String?
    /// Bytes a dry run would fetch: exact with a static delta, nil unknown.
    public var wouldFetchBytes: UInt64?
    public var usesDelta: Bool = false
}

public struct PullReport: Sendable {
    public var refs: [PulledRef] = []
    public var progress = PullProgress()
    /// Warnings for the user (an unsigned summary the remote accepts, say).
    public var warnings: [String] = []
}

/// What a remote publishes, from its summary, checked as its keys require.
public struct RemoteState: Sendable {
    public var remote: Remote
    /// The refs with their commits (hex checksum, and version and timestamp
    /// where the summary records them).
    public var refs: [RepositorySummary.Ref]
    /// The key line that verified the summary, nil when it is unsigned.
    public var summaryVerifiedBy: String?
    public var warnings: [String] = []

    public func checksum(of ref: String) -> String? { self.ref(ref)?.checksum }
    public func ref(_ name: String) -> RepositorySummary.Ref? { refs.first { $0.name == name } }
}

extension Repository {
    /// The remote's summary, fetched with libostree (mirrorlist and all),
    /// verified when the remote has keys: a summary must carry a good
    /// signature (unless the remote turns `sign-verify-summary` off) and
    /// must not have expired (`ostree.summary.expires`).
    public func remoteState(_ name: String, revoked: [Ed25519PublicKey] = [], stallTimeout: Double = 60) throws -> RemoteState {
        let remote = try self.remote(name)
        let keys = try remoteKeys(remote)
        var summaryBytes: OpaquePointer? = nil, signatureBytes: OpaquePointer? = nil
        let options = try vardict([("n-network-retries", .uint32(2))])
        defer { g_variant_unref(options) }
        try withStallWatch(progress: nil, timeout: stallTimeout, what: "the summary of remote \(name) (\(remote.url))") { cancellable in
            try gcall("fetching the summary of remote \(name) (\(remote.url))") {
                ostree_repo_remote_fetch_summary_with_options(repo, name, options, &summaryBytes, &signatureBytes, cancellable, $0)
            }
        }
        defer {
            if let summaryBytes { g_bytes_unref(summaryBytes) }
            if let signatureBytes { g_bytes_unref(signatureBytes) }
        }
        guard let summaryBytes else {
            throw RepoError("remote \(name) (\(remote.url))", "it publishes no summary; on the server run 'cairn summary --update' (or 'ostree summary -u')")
        }
        let summary = bytes(of: summaryBytes)
        let signatures = signatureBytes.map(bytes(of:))
        var state = RemoteState(remote: remote, refs: [])
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let parsed: RepositorySummary
        if remote.signVerify && (signatures != nil || remote.signVerifySummary) {
            // Signature, then parse, then expiry: the summary is read only once it verifies.
            let policy = TrustPolicy(trustedKeys: keys, revokedKeys: try trust().revoked + revoked)
            switch policy.verifiedSummary(summary, signatures: signatures, now: UInt64(now.tv_sec)) {
            case .success(let (v, s)):
                state.summaryVerifiedBy = "Good ed25519 signature #\(v.signatureIndex) by trusted key \(v.keyBase64)"
                parsed = s
            case .failure(let f):
                throw RepoError("summary of remote \(name) (\(remote.url))", "refused: \(f.description(for: .summary))")
            }
        } else {
            do { parsed = try RepositorySummary(serialized: summary) } catch {
                throw RepoError("summary of remote \(name) (\(remote.url))", "\(error)")
            }
            if remote.signVerify {
                state.warnings.append("the summary of remote \(name) is not signed (sign-verify-summary is off); commits are still verified")
            }
            if let expires = parsed.expires, parsed.isExpired(now: UInt64(now.tv_sec)) {
                throw RepoError("summary of remote \(name) (\(remote.url))", "refused: \(VerificationFailure.summaryExpired(expires: expires).description(for: .summary))")
            }
        }
        state.refs = parsed.refs
        return state
    }

    func bytes(of b: OpaquePointer) -> [UInt8] {
        var size: gsize = 0
        guard let data = g_bytes_get_data(b, &size) else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: Int(size)))
    }

    /// Pulls `refs` of `remote` (all its refs when empty). For each ref, the
    /// commit it names in the (verified) summary is fetched first with its
    /// detached metadata only, its signature checked with the remote's keys,
    /// and only then its content, pinned to that very commit; libostree
    /// checks every object's checksum as it arrives and moves the local ref
    /// `remote:ref` once all is there. A refused commit moves nothing, and
    /// its commit object (if new) is removed again.
    public func pull(remote name: String, refs requested: [String], _ o: PullOptions) throws -> PullReport {
        let state = try remoteState(name, revoked: o.revoked, stallTimeout: o.stallTimeout)
        let keys = try remoteKeys(state.remote)
        let policy = TrustPolicy(trustedKeys: keys, revokedKeys: try trust().revoked + o.revoked)
        var report = PullReport(warnings: state.warnings)
        let wanted = requested.isEmpty ? state.refs.map(\.name) : requested
        let started = PullTimer()
        for ref in wanted {
            guard let target = state.checksum(of: ref) else {
                throw RepoError("pulling \(name):\(ref)", "the remote's summary has no ref \(ref) (it has: \(state.refs.map(\.name).joined(separator: ", ")))")
            }
            let localRef = o.mirror ? ref : "\(name):\(ref)"
            let before = try resolveRef(localRef)
            var pulled = PulledRef(remote: name, ref: ref, from: before, to: target)
            let hadCommit = (try? commit(target)) != nil

            // 1. The commit and its detached metadata, by checksum: no ref moves.
            try runPull(name, [("refs", .strings([target])), ("flags", .int32(Int32(bitPattern: OSTREE_REPO_PULL_FLAGS_COMMIT_ONLY.rawValue)))],
                        context: "fetching commit \(target) of \(name):\(ref)", o, &report)
            if state.remote.signVerify {
                switch verifyEd25519(target, policy: policy) {
                case .success(let v): pulled.verifiedBy = v.description
                case .failure(let refusal):
                    if !hadCommit { try? forgetCommit(target) }
                    throw RepoError("refusing \(name):\(ref) at \(target)", refusal.message)
                }
            }
            if o.verifyBindings, let refusal = try bindingRefusal(target, ref: ref) {
                if !hadCommit { try? forgetCommit(target) }
                throw RepoError("refusing \(name):\(ref) at \(target)", refusal)
            }
            do { try o.accept?(ref, target) } catch {
                if !hadCommit { try? forgetCommit(target) }
                throw error
            }
            if o.dryRun {
                pulled.wouldFetchBytes = try dryRunSize(name, ref: ref, target: target, from: before, o, &pulled)
                report.refs.append(pulled)
                continue
            }
            // 2. The content, pinned to the verified commit; libostree moves the ref at the end.
            var entries: [(String, VariantValue)] = [("refs", .strings([ref])), ("override-commit-ids", .strings([target])), ("depth", .int32(o.depth))]
            if o.mirror { entries.append(("flags", .int32(Int32(bitPattern: OSTREE_REPO_PULL_FLAGS_MIRROR.rawValue)))) }
            if o.disableStaticDeltas { entries.append(("disable-static-deltas", .bool(true))) }
            if !o.verifyBindings { entries.append(("disable-verify-bindings", .bool(true))) }
            // Digests are for deploying, which an archive repository (a mirror) never does.
            let hasher = mode == .archive ? nil : StagingHasher(repositoryDescriptor: directoryDescriptor)
            hasher?.start()
            do {
                try runPull(name, entries, context: "pulling \(name):\(ref) at \(target)", o, &report)
            } catch {
                _ = hasher?.stop()
                throw error
            }
            if let hasher { try warmDigestCache(commit: target, known: hasher.stop()) }
            report.refs.append(pulled)
        }
        report.progress.elapsed = started.seconds
        return report
    }

    /// Why `commit` may not be pulled as `ref`, nil when it may: its
    /// `ostree.ref-binding` lists other refs only. A commit without a
    /// binding may be pulled as anything (cairn has no collection IDs,
    /// which would require one); a binding of the wrong type is refused,
    /// where libostree would ignore it.
    func bindingRefusal(_ checksum: String, ref: String) throws -> String? {
        guard let binding = try commit(checksum).metadataValue(MetadataKey.refBinding) else { return nil }
        guard case .strings(let refs) = binding.plain else {
            return "its \(MetadataKey.refBinding) is of type \(binding.type), not as (an array of ref names)"
        }
        if refs.contains(ref) { return nil }
        let bound = refs.isEmpty ? "no ref" : refs.map { "'\($0)'" }.joined(separator: ", ")
        return "the commit is bound to \(bound) (\(MetadataKey.refBinding)), not to '\(ref)'; "
            + "the server's ref points at a commit made for another ref (--disable-verify-bindings pulls it anyway)"
    }

    /// One libostree pull with cairn's fixed options: signatures are checked
    /// by cairn (Debian's libostree has no ed25519), OpenPGP is off.
    func runPull(_ remote: String, _ entries: [(String, VariantValue)], context: String, _ o: PullOptions, _ report: inout PullReport) throws {
        let options = try vardict(entries + [
            ("disable-sign-verify", .bool(true)), ("disable-sign-verify-summary", .bool(true)),
            ("gpg-verify", .bool(false)), ("gpg-verify-summary", .bool(false)), ("n-network-retries", .uint32(3)),
        ])
        defer { g_variant_unref(options) }
        let box = ProgressBox(o.progress)
        let unmanaged = Unmanaged.passRetained(box)
        defer { unmanaged.release() }
        let progress = ostree_async_progress_new_and_connect({ p, user in
            guard let p, let user else { return }
            let box = Unmanaged<ProgressBox>.fromOpaque(user).takeUnretainedValue()
            box.callback?(PullProgress(reading: p))
        }, unmanaged.toOpaque())!
        defer { unref(progress) }
        do {
            try withStallWatch(progress: progress, timeout: o.stallTimeout, what: remote) { cancellable in
                try gcall(context) { ostree_repo_pull_with_options(repo, remote, options, progress, cancellable, $0) }
            }
        } catch {
            ostree_async_progress_finish(progress)
            throw error
        }
        ostree_async_progress_finish(progress)
        let last = PullProgress(reading: progress)
        report.progress.fetched += last.fetched
        report.progress.requested += last.requested
        report.progress.metadataFetched += last.metadataFetched
        report.progress.bytesTransferred += last.bytesTransferred
        report.progress.fetchedDeltaParts += last.fetchedDeltaParts
        report.progress.totalDeltaParts += last.totalDeltaParts
        report.progress.totalDeltaPartSize += last.totalDeltaPartSize
    }

    /// Bytes a pull of `target` would fetch: libostree's dry run reads the
    /// static delta's superblock (exact); without a delta, unknown (nil).
    func dryRunSize(_ remote: String, ref: String, target: String, from: String?, _ o: PullOptions, _ pulled: inout PulledRef) throws -> UInt64? {
        guard !o.disableStaticDeltas else { return nil }
        var report = PullReport()
        do {
            try runPull(remote, [("refs", .strings([ref])), ("override-commit-ids", .strings([target])), ("dry-run", .bool(true)),
                                 ("require-static-deltas", .bool(true))], context: "dry run of \(remote):\(ref)", o, &report)
        } catch {
            return nil  // no static delta from here to there
        }
        pulled.usesDelta = true
        return report.progress.totalDeltaPartSize
    }

    /// Copies refs (every ref when none is named) and their objects from the
    /// repository at `source` on this machine, checking every object's
    /// checksum; returns how many refs were copied.
    public func pullLocal(from source: String, refs: [String]) throws -> Int {
        let from = try Repository.open(path: source)
        let names = refs.isEmpty ? try from.refs().map(\.name) : refs
        for r in names { _ = try from.resolve(r) }  // each named ref exists there
        let url = "file://" + (source.hasPrefix("/") ? source : String(cString: getcwd(nil, 0)) + "/" + source)
        var report = PullReport()
        try runPull(url, [("refs", .strings(names)), ("flags", .int32(Int32(bitPattern: OSTREE_REPO_PULL_FLAGS_UNTRUSTED.rawValue)))],
                    context: "copying \(names.joined(separator: ", ")) from \(source)", PullOptions(), &report)
        return names.count
    }

    /// Removes a commit object and its detached metadata fetched for a
    /// verification that failed, so that nothing unverified stays behind.
    func forgetCommit(_ checksum: String) throws {
        try gcall("removing refused commit \(checksum)") { ostree_repo_delete_object(repo, OSTREE_OBJECT_TYPE_COMMIT, checksum, nil, $0) }
        _ = try? writeDetachedMetadata(checksum, nil)
    }
}

/// Runs `body` with a cancellable that a watchdog thread cancels when
/// `progress` shows no new byte or object for `timeout` seconds — or,
/// without a progress, when `timeout` seconds have passed; the error then
/// says so. (libostree runs each pull in a main context of its own, so the
/// watch needs a thread of its own too.)
func withStallWatch(progress: OpaquePointer?, timeout: Double, what: String, _ body: (UnsafeMutablePointer<GCancellable>?) throws -> Void) throws {
    let cancellable = g_cancellable_new()
    defer { unref(cancellable) }
    let watch = StallWatch(progress: progress, timeout: timeout, cancellable: cancellable)
    var thread = pthread_t()
    let started = pthread_create(&thread, nil, { arg in
        let watch = Unmanaged<StallWatch>.fromOpaque(arg!).takeRetainedValue()
        while watch.tick() { _ = watch.signal.sleep(milliseconds: 200) }
        return nil
    }, Unmanaged.passRetained(watch).toOpaque()) == 0
    defer {
        watch.signal.stop()
        if started { pthread_join(thread, nil) }
    }
    do {
        try body(cancellable)
    } catch let e as RepoError where watch.stalled {
        throw RepoError(e.context, "nothing arrived from \(what) for \(Int(timeout)) s; gave up (pull again to resume: what arrived is kept)")
    }
}

final class StallWatch: @unchecked Sendable {
    let progress: OpaquePointer?
    let timeout: Double
    let cancellable: UnsafeMutablePointer<GCancellable>?
    let signal = StopSignal()
    private var last: (UInt64, UInt32) = (0, 0)
    private var lastChange = monotonicSeconds()
    private var gaveUp = false
    /// TCP sockets that existed before the watched call: never touched.
    private let preexisting: Set<UInt> = Set(tcpSockets().map(\.inode))

    var stalled: Bool { signal.withLock { _ in gaveUp } }

    init(progress: OpaquePointer?, timeout: Double, cancellable: UnsafeMutablePointer<GCancellable>?) {
        self.progress = progress
        self.timeout = timeout
        self.cancellable = cancellable
    }

    /// One look at the progress; false once the watched call has ended.
    func tick() -> Bool {
        signal.withLock { stopped in
            if stopped { return false }
            if let progress {
                let now = (UInt64(ostree_async_progress_get_uint64(progress, "bytes-transferred")), ostree_async_progress_get_uint(progress, "fetched"))
                if now != last { last = now; lastChange = monotonicSeconds() }
            }
            if !gaveUp && monotonicSeconds() - lastChange > timeout {
                gaveUp = true
                g_cancellable_cancel(cancellable)
            }
            if gaveUp {
                // Debian's libostree fetches with curl, which watches neither the
                // cancellable nor the clock, and retries a cut transfer: end the
                // connections opened since the call began, again on every tick.
                for s in tcpSockets() where !preexisting.contains(s.inode) { _ = shutdown(s.fd, Int32(SHUT_RDWR)) }
            }
            return true
        }
    }
}

/// The inode numbers of this process's TCP sockets, by descriptor.
func tcpSockets() -> [(fd: Int32, inode: UInt)] {
    var found: [(fd: Int32, inode: UInt)] = []
    for name in (try? FileSystem.directoryEntries(Array("/proc/self/fd".utf8))) ?? [] {
        guard let fd = Int32(String(decoding: name, as: UTF8.self)) else { continue }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK else { continue }
        var domain: Int32 = 0, type: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0, domain == AF_INET || domain == AF_INET6 else { continue }
        size = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0, type == Int32(SOCK_STREAM.rawValue) else { continue }
        found.append((fd, UInt(st.st_ino)))
    }
    return found
}

final class ProgressBox {
    let callback: ((PullProgress) -> Void)?
    init(_ callback: ((PullProgress) -> Void)?) { self.callback = callback }
}

extension PullProgress {
    init(reading p: OpaquePointer) {
        fetched = ostree_async_progress_get_uint(p, "fetched")
        requested = ostree_async_progress_get_uint(p, "requested")
        outstanding = ostree_async_progress_get_uint(p, "outstanding-fetches")
        metadataFetched = ostree_async_progress_get_uint(p, "metadata-fetched")
        bytesTransferred = UInt64(ostree_async_progress_get_uint64(p, "bytes-transferred"))
        fetchedDeltaParts = ostree_async_progress_get_uint(p, "fetched-delta-parts")
        totalDeltaParts = ostree_async_progress_get_uint(p, "total-delta-parts")
        totalDeltaPartSize = UInt64(ostree_async_progress_get_uint64(p, "total-delta-part-size"))
        let start = UInt64(ostree_async_progress_get_uint64(p, "start-time"))
        elapsed = start == 0 ? 0 : Double(UInt64(g_get_monotonic_time()) &- start) / 1e6
    }
}

/// Wall time since creation.
struct PullTimer {
    let start = monotonicSeconds()
    var seconds: Double { monotonicSeconds() - start }
}
