import COSTree
import CairnSystem
import Composefs
#if canImport(Glibc)
import Glibc
#endif

/// Hashes file objects while a pull writes them: a thread looks into the
/// repository's staging folders (`tmp/staging-*/xx/<rest>.file`, where
/// libostree links each object once it is complete and its checksum
/// checked) every 100 ms and computes the fs-verity digest of each new
/// regular file, so the digest cache is filled at the end without reading
/// the objects again. Anything it could not do (fs-verity could not be
/// enabled yet, a file renamed away) is simply left to the pass after the
/// pull.
final class StagingHasher: @unchecked Sendable {
    private let repo: FileDescriptor
    private let signal = StopSignal()
    private var digests: [String: [UInt8]] = [:]
    private var tried: Set<String> = []
    private var thread = pthread_t()
    private var started = false

    init(repositoryDescriptor: FileDescriptor) {
        repo = repositoryDescriptor
    }

    func start() {
        let me = Unmanaged.passRetained(self)
        started = pthread_create(&thread, nil, { arg in
            let h = Unmanaged<StagingHasher>.fromOpaque(arg!).takeRetainedValue()
            while h.signal.sleep(milliseconds: 100) { h.scan() }
            return nil
        }, me.toOpaque()) == 0
        if !started { me.release() }  // the pass after the pull does it all
    }

    /// Stops the thread and returns the digests it computed, by checksum.
    func stop() -> [String: [UInt8]] {
        signal.stop()
        if started { pthread_join(thread, nil) }
        return digests
    }

    private func scan() {
        guard let tmp = try? FileSystem.directoryEntriesWithTypes(Array("tmp".utf8), relativeTo: repo) else { return }
        for staging in tmp where (staging.type == DT_DIR || staging.type == DT_UNKNOWN) && staging.name.starts(with: Array("staging-".utf8)) {
            guard let dir = try? FileDescriptor.open(Array("tmp/".utf8) + staging.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, relativeTo: repo) else { continue }
            defer { dir.close() }
            for prefix in (try? FileSystem.directoryEntriesWithTypes(Array(".".utf8), relativeTo: dir)) ?? []
            where (prefix.type == DT_DIR || prefix.type == DT_UNKNOWN) && prefix.name.count == 2 {
                for entry in (try? FileSystem.directoryEntriesWithTypes(prefix.name, relativeTo: dir)) ?? []
                where (entry.type == DT_REG || entry.type == DT_UNKNOWN) && entry.name.count == 62 + 5 && entry.name.suffix(5) == Array(".file".utf8) {
                    if signal.withLock({ $0 }) { return }
                    let checksum = String(decoding: prefix.name + entry.name.prefix(62), as: UTF8.self)
                    guard tried.insert(checksum).inserted else { continue }
                    if let d = digest(prefix.name + [0x2f] + entry.name, in: dir) { digests[checksum] = d }
                }
            }
        }
    }

    /// The digest of one staged object, with fs-verity enabled on it where
    /// the filesystem has it (as the pass after the pull would); nil when
    /// that cannot be done now (a writer still has it open).
    private func digest(_ name: [UInt8], in dir: FileDescriptor) -> [UInt8]? {
        guard let fd = try? FileDescriptor.open(name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, relativeTo: dir) else { return nil }
        defer { fd.close() }
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_size > 0 else { return nil }
        if let d = KernelVerity.measure(fd) { return d }
        guard let enabled = try? KernelVerity.enable(fd) else { return nil }
        if enabled { return KernelVerity.measure(fd) }
        return try? fsVerityDigest(ofFile: fd)
    }
}
