#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Points where a test may ask a mutating command to die (SIGKILL), through
/// `CAIRN_TEST_CRASH_AT=<step>`: crash safety is tested at every boundary.
public enum CrashPoint: String, CaseIterable, Sendable {
    case deploymentWritten = "deployment-written"
    case kernelCopied = "kernel-copied"
    case bootSetWritten = "bootset-written"
    case switched
    case originWritten = "origin-written"
    case removedOne = "removed-one"
    case pruned
    /// A commit written and signed, its transaction not yet committed.
    case commitSigned = "commit-signed"

    public func reach() {
        guard let wanted = getenv("CAIRN_TEST_CRASH_AT"), String(cString: wanted) == rawValue else { return }
        kill(getpid(), SIGKILL)
    }
}
