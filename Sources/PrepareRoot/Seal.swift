#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import Composefs

extension PrepareRoot {
    /// `cairn-prepare-root seal SYSROOT`: enables fs-verity on every
    /// repository object and deployment image, as `cairn post-copy` does,
    /// from a static program that runs where cairn (with libostree) cannot:
    /// a first boot on the target, inside the initramfs.
    public static func seal(arguments: [String]) -> Int32 {
        guard arguments.count == 1, !arguments[0].hasPrefix("-") else {
            try? FileDescriptor.standardError.write("usage: cairn-prepare-root seal SYSROOT\n")
            return 2
        }
        let path = arguments[0]
        do {
            let report = try KernelVerity.sealSysroot(Array(path.utf8))
            if report.unsupported {
                log("cairn-prepare-root: seal \(path): the filesystem does not support fs-verity", kmsg: "/dev/kmsg", level: 3)
                return 1
            }
            log("cairn-prepare-root: sealed \(path): fs-verity enabled on \(report.enabled) file(s), \(report.alreadyEnabled) already had it",
                kmsg: "/dev/kmsg", level: 6)
            return 0
        } catch {
            log("cairn-prepare-root: seal \(path): \(error)", kmsg: "/dev/kmsg", level: 3)
            return 1
        }
    }
}
