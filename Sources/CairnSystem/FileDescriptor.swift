#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCairnShim

/// An error from a system call, carrying errno, the call and the path
/// (raw bytes) it was about.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public var errno: Int32
    public var operation: String
    public var path: [UInt8]?

    public init(errno: Int32, operation: String, path: [UInt8]? = nil) {
        self.errno = errno
        self.operation = operation
        self.path = path
    }

    /// Builds an error from the thread's current `errno`.
    public static func current(_ operation: String, path: [UInt8]? = nil) -> SystemError {
        SystemError(errno: Glibc.errno, operation: operation, path: path)
    }

    public var message: String { String(cString: strerror(errno)) }

    public var description: String {
        if let path { return "\(operation) \(displayPath(path)): \(message)" }
        return "\(operation): \(message)"
    }
}

/// A path for messages: UTF-8 where it is valid, invalid bytes as \xNN.
public func displayPath(_ bytes: [UInt8]) -> String {
    var out = ""
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        if b < 0x80 {
            if b < 0x20 || b == 0x7f { out += "\\x" + hex2(b) } else { out.unicodeScalars.append(Unicode.Scalar(b)) }
            i += 1
            continue
        }
        // Take the longest valid UTF-8 sequence starting here, else escape one byte.
        let len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
        if len > 1, i + len <= bytes.count,
           let s = String(validating: bytes[i..<(i + len)], as: UTF8.self) {
            out += s
            i += len
        } else {
            out += "\\x" + hex2(b)
            i += 1
        }
    }
    return out
}

@inline(__always) private func hex2(_ b: UInt8) -> String {
    let digits: [Character] = Array("0123456789abcdef")
    return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
}

/// Retries a system call while it fails with EINTR.
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r == -1 && Glibc.errno == EINTR { continue }
        return r
    }
}

/// A file descriptor, modelled on swift-system's: a copyable value that is
/// closed explicitly, usually through `closeAfter`.
public struct FileDescriptor: Hashable, Sendable {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let currentWorkingDirectory = FileDescriptor(rawValue: AT_FDCWD)
    public static let standardInput = FileDescriptor(rawValue: 0)
    public static let standardOutput = FileDescriptor(rawValue: 1)
    public static let standardError = FileDescriptor(rawValue: 2)

    /// Opens `path` relative to `directory` (or the working directory).
    public static func open(_ path: [UInt8], _ flags: Int32, mode: mode_t = 0o644,
                            relativeTo directory: FileDescriptor = .currentWorkingDirectory) throws -> FileDescriptor {
        let fd = path.withCString { p in retryingEINTR { openat(directory.rawValue, p, flags | O_CLOEXEC, mode) } }
        guard fd >= 0 else { throw SystemError.current("open", path: path) }
        return FileDescriptor(rawValue: fd)
    }

    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644,
                            relativeTo directory: FileDescriptor = .currentWorkingDirectory) throws -> FileDescriptor {
        try open(Array(path.utf8), flags, mode: mode, relativeTo: directory)
    }

    public func close() {
        _ = Glibc.close(rawValue)
    }

    /// Runs `body`, then closes the descriptor whatever happened.
    public func closeAfter<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        defer { close() }
        return try body()
    }

    /// Reads up to `count` bytes into `buffer`; returns the number read (0 at end).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = retryingEINTR { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
        guard n >= 0 else { throw SystemError.current("read") }
        return n
    }

    /// Fills `buffer` completely unless end of file comes first; returns the bytes read.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, atOffset offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = retryingEINTR { pread(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done)) }
            guard n >= 0 else { throw SystemError.current("pread") }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Up to `limit` bytes from `offset`, without moving the file offset.
    public func read(atOffset offset: Int64, limit: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: limit)
        let n = try buffer.withUnsafeMutableBytes { try read(into: $0, atOffset: offset) }
        return Array(buffer[0..<n])
    }

    /// Reads to end of file, refusing more than `limit` bytes.
    public func readAll(limit: Int = Int.max) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { (b) -> Int in try read(into: b) }
            if n == 0 { return result }
            if result.count + n > limit { throw SystemError(errno: EFBIG, operation: "read") }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let n = retryingEINTR { Glibc.write(rawValue, buffer.baseAddress! + done, buffer.count - done) }
            guard n >= 0 else { throw SystemError.current("write") }
            done += n
        }
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { (b) in try write(b) }
    }

    public func write(_ string: String) throws {
        try write(Array(string.utf8))
    }

    public func write(_ buffer: UnsafeRawBufferPointer, atOffset offset: Int64) throws {
        var done = 0
        while done < buffer.count {
            let n = retryingEINTR { pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done)) }
            guard n >= 0 else { throw SystemError.current("pwrite") }
            done += n
        }
    }

    public func stat() throws -> Glibc.stat {
        var st = Glibc.stat()
        guard fstat(rawValue, &st) == 0 else { throw SystemError.current("fstat") }
        return st
    }

    public func sync() throws {
        guard retryingEINTR({ fsync(rawValue) }) == 0 else { throw SystemError.current("fsync") }
    }

    /// Flushes the whole filesystem the descriptor is on (syncfs(2)), not
    /// every filesystem of the machine as sync(2) does.
    public func syncFilesystem() throws {
        guard cairn_syncfs(rawValue) == 0 else { throw SystemError.current("syncfs") }
    }

    public func truncate(_ size: Int64) throws {
        guard retryingEINTR({ ftruncate(rawValue, off_t(size)) }) == 0 else { throw SystemError.current("ftruncate") }
    }

    public var isTerminal: Bool { isatty(rawValue) == 1 }
}
