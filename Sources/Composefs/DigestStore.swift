#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import CCairnShim

/// A store of backing objects named by fs-verity digest (spec §12), as
/// `mkcomposefs --digest-store=DIR` fills it.
public struct DigestStore: Sendable {
    public let root: [UInt8]

    public init(root: [UInt8]) { self.root = root }
    public init(root: String) { self.root = Array(root.utf8) }

    /// Path of the object for `digest`: ROOT/xx/<62 hex>.
    public func objectPath(_ digest: [UInt8]) -> [UInt8] {
        root + [0x2f] + Composefs.objectPath(forDigest: digest)
    }

    /// Copies the file at `source` into the store unless the object exists:
    /// temp file in the store root, chmod 0644, fsync, try to enable
    /// fs-verity (errors ignored, as mkcomposefs does), then rename.
    public func store(source: [UInt8], digest: [UInt8]) throws {
        let target = objectPath(digest)
        if FileSystem.exists(target) { return }
        let dir = root + [0x2f] + Array(hexEncode([digest[0]]))
        if !FileSystem.exists(dir) {
            do { try FileSystem.makeDirectory(dir, mode: 0o755) } catch let e as SystemError where e.errno == EEXIST {}
        }
        var template = root + Array("/.tmpXXXXXX".utf8) + [0]
        let fd = template.withUnsafeMutableBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { mkstemp($0.baseAddress!) }
        }
        guard fd >= 0 else { throw SystemError.current("mkstemp", path: root) }
        let tmpPath = Array(template.dropLast())
        let out = FileDescriptor(rawValue: fd)
        var renamed = false
        defer {
            out.close()
            if !renamed { _ = try? FileSystem.unlink(tmpPath) }
        }
        let src = try FileDescriptor.open(source, O_RDONLY)
        try src.closeAfter {
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            defer { buf.deallocate() }
            while true {
                let n = try src.read(into: buf)
                if n == 0 { break }
                try out.write(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            }
        }
        guard fchmod(fd, 0o644) == 0 else { throw SystemError.current("fchmod", path: tmpPath) }
        try out.sync()
        // Verity needs a read-only descriptor: reopen it.
        if let ro = try? FileDescriptor.open(tmpPath, O_RDONLY) {
            _ = cairn_enable_verity(ro.rawValue)
            ro.close()
        }
        try FileSystem.rename(tmpPath, to: target)
        renamed = true
    }
}
