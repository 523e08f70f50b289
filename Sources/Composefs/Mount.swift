#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import CCairnShim

/// What to mount and how (spec §16, as `mount.composefs` does it).
public struct ComposefsMountOptions: Sendable {
    public var image: [UInt8]
    public var mountpoint: [UInt8]
    /// The object store: the data-only lower layer the image redirects into.
    public var basedir: [UInt8]
    /// Refuse the image unless its fs-verity digest is exactly this.
    public var expectedDigest: [UInt8]?
    /// Refuse the image unless it has fs-verity, and take its digest from the
    /// kernel (FS_IOC_MEASURE_VERITY); on by default when a digest is
    /// expected. Off, the digest is computed from the image's content, which
    /// says nothing of what EROFS reads later: for tests on kernels without
    /// fs-verity only.
    public var requireImageVerity: Bool
    /// Ask overlayfs to require fs-verity digests on every backing file
    /// (`verity=require`); on by default when a digest is expected.
    public var requireVerity: Bool

    public init(image: [UInt8], mountpoint: [UInt8], basedir: [UInt8], expectedDigest: [UInt8]? = nil,
                requireImageVerity: Bool? = nil, requireVerity: Bool? = nil) {
        self.image = image
        self.mountpoint = mountpoint
        self.basedir = basedir
        self.expectedDigest = expectedDigest
        self.requireImageVerity = requireImageVerity ?? (expectedDigest != nil)
        self.requireVerity = requireVerity ?? (expectedDigest != nil)
    }
}

/// Mounts composefs images: the EROFS image (file-backed, or through a loop
/// device on kernels before 6.12) under a private temporary folder, then
/// overlayfs with the image as metadata layer and the object store as a
/// data-only lower layer; the temporary EROFS mount is detached again, the
/// overlay keeping it alive.
public enum ComposefsMount {
    static let loopControlGetFree: UInt = 0x4C82
    static let loopConfigure: UInt = 0x4C0A

    /// Opens `o.image` and mounts it.
    public static func mount(_ o: ComposefsMountOptions) throws {
        let image: FileDescriptor
        do { image = try FileDescriptor.open(o.image, O_RDONLY) } catch let e as SystemError {
            throw ComposefsError(.mount, "opening the image: \(e.message)", path: o.image)
        }
        defer { image.close() }
        try mount(o, image: image)
    }

    /// Mounts the image open as `image` (`o.image` names it in messages):
    /// the descriptor whose digest is checked is the one EROFS reads, as
    /// /proc/self/fd/N or through a loop device bound to it.
    public static func mount(_ o: ComposefsMountOptions, image: FileDescriptor) throws {
        func fail(_ what: String, _ e: SystemError? = nil) -> ComposefsError {
            ComposefsError(.mount, e.map { "\(what): \($0.message)" } ?? what, path: o.image)
        }
        let measured = KernelVerity.measure(image)
        if o.requireImageVerity && measured == nil {
            throw ComposefsError(.noVerity, "has no fs-verity, so the kernel cannot check its content", path: o.image)
        }
        if let expected = o.expectedDigest {
            let actual: [UInt8]
            if let measured { actual = measured } else {
                do { actual = try fsVerityDigest(ofFile: image) } catch let e as SystemError {
                    throw fail("reading the image", e)
                }
            }
            guard actual == expected else {
                throw ComposefsError(.digestMismatch, "fs-verity digest is \(hexString(actual)), expected \(hexString(expected))", path: o.image)
            }
        }

        let base: [UInt8] = FileSystem.exists(Array("/run".utf8)) ? Array("/run/cairn-composefs.XXXXXX".utf8) : Array("/tmp/cairn-composefs.XXXXXX".utf8)
        var template = base.map { CChar(bitPattern: $0) } + [0]
        guard mkdtemp(&template) != nil else { throw fail("creating a temporary mount point", .current("mkdtemp")) }
        let lower = template.dropLast().map { UInt8(bitPattern: $0) }
        defer { _ = lower.withCString { rmdir($0) } }

        try mountErofs(image, at: lower, fail: fail)
        // The overlay keeps the EROFS mount alive; the private one goes now.
        defer { _ = lower.withCString { umount2($0, Int32(MNT_DETACH)) } }

        var options = "lowerdir=" + escape(lower) + "::" + escape(o.basedir) + ",metacopy=on,redirect_dir=on"
        if o.requireVerity { options += ",verity=require" }
        let r = o.mountpoint.withCString { target in
            Glibc.mount("composefs", target, "overlay", UInt(MS_RDONLY), options)
        }
        guard r == 0 else { throw fail("mounting overlayfs on \(displayPath(o.mountpoint))", .current("mount")) }
    }

    /// Overlayfs option values escape ':', ',' and '\' with a backslash.
    static func escape(_ path: [UInt8]) -> String {
        var out: [UInt8] = []
        for b in path {
            if b == 0x3a || b == 0x2c || b == 0x5c { out.append(0x5c) }
            out.append(b)
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func mountErofs(_ image: FileDescriptor, at target: [UInt8], fail: (String, SystemError?) -> ComposefsError) throws {
        let source = "/proc/self/fd/\(image.rawValue)"
        let flags = UInt(MS_RDONLY | MS_NODEV | MS_NOSUID)
        if target.withCString({ Glibc.mount(source, $0, "erofs", flags, "ro") }) == 0 { return }
        let fileBacked = SystemError.current("mount")
        // Kernels before 6.12 mount EROFS from block devices only.
        guard fileBacked.errno == ENOTBLK || fileBacked.errno == EINVAL else {
            throw fail("mounting the EROFS image", fileBacked)
        }
        let (loop, number) = try attachLoop(image, fail: fail)
        defer { loop.close() }
        let device = "/dev/loop\(number)"
        guard target.withCString({ Glibc.mount(device, $0, "erofs", flags, "ro") }) == 0 else {
            throw fail("mounting the EROFS image from \(device)", .current("mount"))
        }
    }

    /// A read-only loop device that frees itself when unmounted.
    private static func attachLoop(_ image: FileDescriptor, fail: (String, SystemError?) -> ComposefsError) throws -> (FileDescriptor, Int32) {
        let control: FileDescriptor
        do { control = try FileDescriptor.open("/dev/loop-control", O_RDWR) } catch let e as SystemError {
            throw fail("opening /dev/loop-control", e)
        }
        defer { control.close() }
        for _ in 0..<8 {
            let n = cairn_ioctl_int(control.rawValue, loopControlGetFree, 0)
            guard n >= 0 else { throw fail("finding a free loop device", .current("ioctl")) }
            let device: FileDescriptor
            do { device = try FileDescriptor.open("/dev/loop\(n)", O_RDONLY) } catch { continue }
            var config = loop_config()
            config.fd = UInt32(image.rawValue)
            config.info.lo_flags = UInt32(LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR)
            if cairn_ioctl_ptr(device.rawValue, loopConfigure, &config) == 0 {
                return (device, n)
            }
            let e = SystemError.current("ioctl")
            device.close()
            if e.errno != EBUSY { throw fail("attaching the image to /dev/loop\(n)", e) }
        }
        throw fail("no free loop device", nil)
    }
}
