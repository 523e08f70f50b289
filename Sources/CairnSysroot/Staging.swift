import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// A deployment prepared on the running system whose boot entries are
/// written at shutdown (`cairn-finalize-staged.service`), as ostree stages.
public struct StagedDeployment: Sendable {
    public var deployment: Deployment
    /// The deployment whose /etc is merged at finalization.
    public var mergeFrom: String?
    /// Finalized only by `cairn finalize`, not at shutdown.
    public var locked: Bool
    public var time: Int
    /// Staged in an earlier boot that ended without finalizing it (a crash
    /// or a power cut): it will never be finalized, and the next deploy or
    /// cleanup removes it.
    public var stale: Bool
}

/// A finalization that failed, kept until the next deployment succeeds.
public struct FinalizeFailure: Sendable {
    public var stateroot: String
    public var deploymentName: String
    public var error: String
    public var time: Int
    /// True when it failed in an earlier boot than this one.
    public var earlierBoot: Bool
}

extension Sysroot {
    /// The staged deployment, if one is recorded and its folder exists.
    public func stagedDeployment() throws -> StagedDeployment? {
        guard let f = try readRecord(StateRecords.staged) else { return nil }
        let file = at(StateRecords.staged)
        guard let stateroot = f["staged", "stateroot"], let name = f["staged", "deployment"], let bootChecksum = f["staged", "boot-checksum"],
              let dot = name.lastIndex(of: "."), let serial = Int(name[name.index(after: dot)...]) else {
            throw DeployError("reading \(file)", "it does not name a deployment (stateroot, deployment <commit>.<serial>, boot-checksum)")
        }
        // The record sits on the disk outside any signed image: names are checked before they become paths.
        do { try Self.validateStateroot(stateroot) } catch { throw DeployError("reading \(file)", "\(error)") }
        let checksum = String(name[..<dot])
        guard checksum.count == 64, checksum.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw DeployError("reading \(file)", "deployment \(name) is not <commit>.<serial>")
        }
        let kargs = (f["staged", "kernel-arguments"] ?? "").split(separator: " ").map(String.init)
        for k in kargs {
            do { try KernelArguments.validate(k) } catch { throw DeployError("reading \(file)", "\(error)") }
        }
        let originText = (try? readText(at("ostree/deploy/\(stateroot)/deploy/\(name).origin"))) ?? ""
        let d = Deployment(stateroot: stateroot, checksum: checksum, serial: serial, bootChecksum: bootChecksum, kernelArguments: kargs,
                           origin: Origin(text: originText), title: f["staged", "title"])
        return StagedDeployment(deployment: d, mergeFrom: f["staged", "merge-deployment"], locked: f["staged", "locked"] == "true",
                                time: Int(f["staged", "time"] ?? "") ?? 0, stale: f["staged", "boot-id"] != currentBootID())
    }

    /// The last failed finalization, until a deployment succeeds.
    public func finalizeFailure() throws -> FinalizeFailure? {
        guard let f = try readRecord(StateRecords.finalizeFailure) else { return nil }
        return FinalizeFailure(stateroot: f["failure", "stateroot"] ?? "", deploymentName: f["failure", "deployment"] ?? "",
                               error: f["failure", "error"] ?? "", time: Int(f["failure", "time"] ?? "") ?? 0,
                               earlierBoot: f["failure", "boot-id"] != currentBootID())
    }
}
