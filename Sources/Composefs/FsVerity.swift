#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCrypto
import CairnSystem

/// Streaming fs-verity digest (spec §2): SHA-256, 4096-byte Merkle blocks,
/// no salt. Feed bytes with `update`, then call `finalize` once.
///
/// Each Merkle level keeps one 4096-byte buffer. A full buffer is hashed into
/// the level above only when more data arrives, so at the end we know which
/// level holds a single block (its hash is the root).
public final class FsVerityHasher {
    public static let blockSize = 4096
    private static let maxLevels = 12          // 128^11 blocks: far beyond any file size

    private let data: UnsafeMutablePointer<UInt8>      // pending data block
    private var dataFill = 0
    private var dataBlocksHashed = 0                   // blocks already sent to level 1
    private let levels: UnsafeMutablePointer<UInt8>    // maxLevels × 4096 bytes; index 0 = level 1
    private var levelFill: [Int]
    private var levelFlushed: [Bool]
    private var total: UInt64 = 0

    public init() {
        data = .allocate(capacity: Self.blockSize)
        levels = .allocate(capacity: Self.blockSize * Self.maxLevels)
        levelFill = [Int](repeating: 0, count: Self.maxLevels)
        levelFlushed = [Bool](repeating: false, count: Self.maxLevels)
    }

    deinit {
        data.deallocate()
        levels.deallocate()
    }

    /// Number of bytes fed so far.
    public var count: UInt64 { total }

    /// Appends a 32-byte digest to `level`, first hashing that level's
    /// buffer upwards if it is full (the lazy flush).
    private func addDigest(_ level: Int, _ d: UnsafePointer<UInt8>) {
        precondition(level < Self.maxLevels, "fs-verity tree too deep")
        let buf = levels + level * Self.blockSize
        if levelFill[level] == Self.blockSize {
            var up = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &up) { u in
                let up = u.baseAddress!.assumingMemoryBound(to: UInt8.self)
                _ = SHA256(buf, Self.blockSize, up)
                addDigest(level + 1, up)
            }
            levelFill[level] = 0
            levelFlushed[level] = true
        }
        (buf + levelFill[level]).update(from: d, count: 32)
        levelFill[level] += 32
    }

    private func hashDataBlock(_ p: UnsafePointer<UInt8>) {
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &out) { o in
            let op = o.baseAddress!.assumingMemoryBound(to: UInt8.self)
            _ = SHA256(p, Self.blockSize, op)
            addDigest(0, op)
        }
        dataBlocksHashed += 1
    }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        guard var p = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), buffer.count > 0 else { return }
        var n = buffer.count
        total &+= UInt64(n)
        while n > 0 {
            if dataFill == Self.blockSize {
                hashDataBlock(data)
                dataFill = 0
            }
            if dataFill == 0 {
                // Hash whole blocks straight from the input; keep the last one
                // pending because we do not know yet whether more data follows.
                while n > Self.blockSize {
                    hashDataBlock(p)
                    p += Self.blockSize
                    n -= Self.blockSize
                }
            }
            let take = min(n, Self.blockSize - dataFill)
            (data + dataFill).update(from: p, count: take)
            dataFill += take
            p += take
            n -= take
        }
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The 32-byte fs-verity digest (SHA-256 of the 256-byte descriptor).
    /// Call once; the hasher cannot be fed afterwards.
    public func finalize() -> [UInt8] {
        var root = [UInt8](repeating: 0, count: 32)
        if total > 0 {
            (data + dataFill).initialize(repeating: 0, count: Self.blockSize - dataFill)
            if dataBlocksHashed == 0 {
                root.withUnsafeMutableBufferPointer { _ = SHA256(data, Self.blockSize, $0.baseAddress!) }
            } else {
                hashDataBlock(data)
                var level = 0
                while true {
                    let buf = levels + level * Self.blockSize
                    (buf + levelFill[level]).initialize(repeating: 0, count: Self.blockSize - levelFill[level])
                    if !levelFlushed[level] {
                        // A level that never overflowed holds exactly one block: the root.
                        root.withUnsafeMutableBufferPointer { _ = SHA256(buf, Self.blockSize, $0.baseAddress!) }
                        break
                    }
                    var up = [UInt8](repeating: 0, count: 32)
                    up.withUnsafeMutableBufferPointer { _ = SHA256(buf, Self.blockSize, $0.baseAddress!) }
                    up.withUnsafeBufferPointer { addDigest(level + 1, $0.baseAddress!) }
                    level += 1
                }
            }
        }
        return Self.descriptorDigest(root: root, size: total)
    }

    /// SHA-256 of the 256-byte fs-verity descriptor (version 1, SHA-256,
    /// 4096-byte blocks, no salt) naming the tree's root hash and the size.
    static func descriptorDigest(root: [UInt8], size total: UInt64) -> [UInt8] {
        var desc = [UInt8](repeating: 0, count: 256)
        desc[0] = 1; desc[1] = 1; desc[2] = 12
        var size = total
        for i in 0..<8 { desc[8 + i] = UInt8(truncatingIfNeeded: size); size >>= 8 }
        for i in 0..<32 { desc[16 + i] = root[i] }
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { o in
            desc.withUnsafeBufferPointer { _ = SHA256($0.baseAddress!, 256, o.baseAddress!) }
        }
        return out
    }

}

/// fs-verity digest of a byte buffer.
public func fsVerityDigest(_ bytes: [UInt8]) -> [UInt8] {
    let h = FsVerityHasher()
    h.update(bytes)
    return h.finalize()
}

public func fsVerityDigest(_ buffer: UnsafeRawBufferPointer) -> [UInt8] {
    let h = FsVerityHasher()
    h.update(buffer)
    return h.finalize()
}

/// fs-verity digest of everything readable from `fd` (from its current
/// offset), computed in userspace; read in 64 KiB chunks into a buffer on
/// the stack (a fresh heap buffer per file costs page faults on every one of
/// thousands of small objects).
public func fsVerityDigest(ofFile fd: FileDescriptor) throws -> [UInt8] {
    try withUnsafeTemporaryAllocation(byteCount: 64 << 10, alignment: 4096) { buf in
        let h = FsVerityHasher()
        while true {
            let n = try fd.read(into: buf)
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        return h.finalize()
    }
}

/// Whether a range of a parallel digest failed, and the first error, for the caller's thread.
private final class FirstError: @unchecked Sendable {
    private var error: SystemError?
    private(set) var failed = false
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func record(_ e: SystemError?) {
        pthread_mutex_lock(&mutex)
        if !failed { error = e }
        failed = true
        pthread_mutex_unlock(&mutex)
    }
    var value: SystemError? { error }
}

/// The fs-verity digest of the first `size` bytes of `fd` on `threads`
/// threads: the data blocks' hashes (the tree's bottom level, all but a
/// 128th of the work) in 1 MiB ranges read with pread (not mmap: a file
/// truncated meanwhile would kill the process with SIGBUS), then the levels
/// above and the descriptor, as FsVerityHasher makes them (the tests hold
/// the two to each other). For one large file, where the streaming hasher
/// would leave the other cores idle.
public func fsVerityDigest(ofFile fd: FileDescriptor, size: Int, threads: Int) throws -> [UInt8] {
    let block = FsVerityHasher.blockSize
    let blocks = (size + block - 1) / block
    guard blocks > 1 else { return try fsVerityDigest(ofFile: fd) }
    let chunkBlocks = 256
    let hashes = UnsafeMutablePointer<UInt8>.allocate(capacity: blocks * 32)
    defer { hashes.deallocate() }
    let failure = FirstError()
    let hashesAddress = Int(bitPattern: hashes)
    parallelFor((blocks + chunkBlocks - 1) / chunkBlocks, threads: threads) { chunk in
        let hashes = UnsafeMutablePointer<UInt8>(bitPattern: hashesAddress)!
        let first = chunk * chunkBlocks, count = min(chunkBlocks, blocks - first)
        let end = min((first + count) * block, size)
        // Read in 64 KiB pieces into one buffer on the stack: no page faults per piece.
        withUnsafeTemporaryAllocation(byteCount: 16 * block, alignment: block) { raw in
            let buffer = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            var offset = first * block
            while offset < end {
                let length = min(raw.count, end - offset)
                var done = 0
                while done < length {
                    let n = pread(fd.rawValue, buffer + done, length - done, off_t(offset + done))
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else {
                        // An error, or the file became shorter than its size: hashed again from the start below.
                        failure.record(n < 0 ? SystemError.current("reading") : nil)
                        return
                    }
                    done += n
                }
                let pieceBlocks = (length + block - 1) / block
                (buffer + length).initialize(repeating: 0, count: pieceBlocks * block - length)
                let index = offset / block
                for b in 0..<pieceBlocks { _ = SHA256(buffer + b * block, block, hashes + (index + b) * 32) }
                offset += length
            }
        }
    }
    if failure.failed {
        if let e = failure.value { throw e }
        guard lseek(fd.rawValue, 0, SEEK_SET) == 0 else { throw SystemError.current("seeking") }
        return try fsVerityDigest(ofFile: fd)
    }
    // The levels above: each hashes the one below in 4096-byte blocks, zero
    // padded, until one block holds them all; its hash is the root.
    var level = [UInt8](UnsafeBufferPointer(start: hashes, count: blocks * 32))
    while true {
        let padded = (level.count + block - 1) / block * block
        level += [UInt8](repeating: 0, count: padded - level.count)
        var next = [UInt8](repeating: 0, count: padded / block * 32)
        level.withUnsafeBufferPointer { l in
            next.withUnsafeMutableBufferPointer { n in
                for b in 0..<(padded / block) { _ = SHA256(l.baseAddress! + b * block, block, n.baseAddress! + b * 32) }
            }
        }
        if padded == block { return FsVerityHasher.descriptorDigest(root: next, size: UInt64(size)) }
        level = next
    }
}

/// fs-verity digest of the file at `path` (raw bytes).
public func fsVerityDigest(ofFile path: [UInt8]) throws -> [UInt8] {
    let fd = try FileDescriptor.open(path, O_RDONLY)
    return try fd.closeAfter { try fsVerityDigest(ofFile: fd) }
}

public func fsVerityDigest(ofFile path: String) throws -> [UInt8] {
    try fsVerityDigest(ofFile: Array(path.utf8))
}
