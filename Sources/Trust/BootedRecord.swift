/// `/run/ostree-booted`: what the boot program that set up `/` records for
/// the booted system, a serialized `a{sv}` in normal form as libostree's
/// `ostree-prepare-root` writes it. The booted deployment is the one whose
/// directory has `backing-root-device-inode`'s device and inode (with
/// composefs `/` is an overlay, so a stat of `/` cannot say).
///
/// Written by `cairn-prepare-root`, read by `cairn` (no Foundation: it goes
/// into the initramfs).
public struct BootedRecord: Equatable, Sendable {
    /// st_dev and st_ino of a directory.
    public struct DeviceInode: Equatable, Sendable {
        public var device: UInt64
        public var inode: UInt64
        public init(device: UInt64, inode: UInt64) {
            self.device = device
            self.inode = inode
        }
    }

    /// `backing-root-device-inode` `(tt)`: the deployment directory that
    /// backs the root; nil in a record without it (ostree-prepare-root
    /// before composefs support wrote an empty file).
    public var backingRootDeviceInode: DeviceInode?
    /// `root.transient` b: a writable overlay over the whole root, in /run.
    public var rootTransient: Bool
    /// `composefs` b: the root is the deployment's composefs image.
    public var composefs: Bool
    /// `composefs.verity` b: overlayfs requires fs-verity on every backing
    /// file (`verity=require`).
    public var composefsVerity: Bool
    /// `composefs.signed` s: the trusted key file the commit's signature
    /// verified with (signed mode only).
    public var signingKeyPath: String?
    /// `sysroot-ro` b: the physical root is mounted read-only at /sysroot.
    public var sysrootReadOnly: Bool
    /// `transient-etc` s: the folder holding the upper layer of a transient /etc.
    public var transientEtc: String?

    public init(backingRootDeviceInode: DeviceInode?, rootTransient: Bool = false, composefs: Bool = false,
                composefsVerity: Bool = false, signingKeyPath: String? = nil, sysrootReadOnly: Bool = false,
                transientEtc: String? = nil) {
        self.backingRootDeviceInode = backingRootDeviceInode
        self.rootTransient = rootTransient
        self.composefs = composefs
        self.composefsVerity = composefsVerity
        self.signingKeyPath = signingKeyPath
        self.sysrootReadOnly = sysrootReadOnly
        self.transientEtc = transientEtc
    }

    static let deviceInodeType = GVariantType.tuple([.uint64, .uint64])

    /// Reads a record. Every key is optional (false or nil when missing) and
    /// keys this type does not know are ignored, as libostree does; a key of
    /// the wrong type is refused, the error naming it.
    public init(serialized: [UInt8]) throws(GVariantError) {
        let dict: VariantDictionary
        do { dict = try VariantDictionary(serialized: serialized) } catch { throw error.prefixed("ostree-booted") }
        func field(_ key: String, _ type: GVariantType) throws(GVariantError) -> GVariant? {
            guard let v = dict[key] else { return nil }
            guard v.type == type else {
                throw GVariantError(path: "ostree-booted['\(key)']", problem: "has type \(v.type.typeString), not \(type.typeString)")
            }
            return v
        }
        backingRootDeviceInode = try field("backing-root-device-inode", Self.deviceInodeType).map {
            DeviceInode(device: $0.children[0].uint64Value ?? 0, inode: $0.children[1].uint64Value ?? 0)
        }
        rootTransient = try field("root.transient", .boolean)?.boolValue ?? false
        composefs = try field("composefs", .boolean)?.boolValue ?? false
        composefsVerity = try field("composefs.verity", .boolean)?.boolValue ?? false
        signingKeyPath = try field("composefs.signed", .string)?.stringValue
        sysrootReadOnly = try field("sysroot-ro", .boolean)?.boolValue ?? false
        transientEtc = try field("transient-etc", .string)?.stringValue
    }

    /// The serialized `a{sv}`, keys in the order upstream adds them.
    /// Refuses a text field with a zero byte (GVariant strings cannot hold one).
    public func serialized() throws(GVariantError) -> [UInt8] {
        func string(_ key: String, _ s: String) throws(GVariantError) -> GVariant {
            do { return try GVariant(string: s) } catch { throw GVariantError(path: "ostree-booted['\(key)']", problem: error.problem) }
        }
        var d = VariantDictionary()
        if let b = backingRootDeviceInode {
            d.set("backing-root-device-inode", GVariant(tuple: [GVariant(uint64: b.device), GVariant(uint64: b.inode)]))
        }
        d.set("root.transient", GVariant(boolean: rootTransient))
        if let k = signingKeyPath { d.set("composefs.signed", try string("composefs.signed", k)) }
        d.set("composefs", GVariant(boolean: composefs))
        d.set("composefs.verity", GVariant(boolean: composefsVerity))
        d.set("sysroot-ro", GVariant(boolean: sysrootReadOnly))
        if let t = transientEtc { d.set("transient-etc", try string("transient-etc", t)) }
        return d.serialized()
    }
}
