/// What /run/ostree-booted says about the running root (a serialized
/// `a{sv}`, as ostree-prepare-root writes it). Placeholder reader of the one
/// key cairn needs; the boot program's writer replaces it.
public struct BootedRecord: Sendable {
    public var backingRootDeviceInode: (device: UInt64, inode: UInt64)?

    public init(serialized bytes: [UInt8]) throws(GVariantError) {
        let dict = try GVariant(type: .vardict, data: bytes)
        if let v = dict.lookup("backing-root-device-inode") {
            guard v.type.typeString == "(tt)", let d = v.child(0)?.uint64Value, let i = v.child(1)?.uint64Value else {
                throw GVariantError(path: "backing-root-device-inode", problem: "has type \(v.type.typeString), expected (tt)")
            }
            backingRootDeviceInode = (d, i)
        }
    }
}
