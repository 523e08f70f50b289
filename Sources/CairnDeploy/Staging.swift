import CairnRepo
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

public enum FinalizeOutcome: Sendable {
    case nothingStaged
    /// `--at-shutdown` and the deployment is locked: left staged.
    case locked(Deployment)
    /// Staged in an earlier boot: removed, not finalized.
    case discardedStale(Deployment)
    case finalized(Deployment, removed: [Deployment], etc: EtcChanges?)
}

/// The test-only failure of finalization (`CAIRN_TEST_FAIL_FINALIZE=1`),
/// after the /etc merge and before the boot entries switch.
func testFinalizeFailure() throws {
    if let v = getenv("CAIRN_TEST_FAIL_FINALIZE"), String(cString: v) == "1" {
        throw DeployError("finalizing", "failed on purpose (CAIRN_TEST_FAIL_FINALIZE=1, a test switch)")
    }
}

extension Sysroot {
    static let stageKey = "stage"

    /// `[cairn] stage=true`: deploys on the running system are staged
    /// unless told otherwise.
    func stagesByDefault(_ state: SysrootState) throws -> Bool {
        guard state.bootedIndex != nil else { return false }
        return try repository().configValue(group: BootLoader.configGroup, key: Self.stageKey)?.trimmingWhitespace() == "true"
    }

    func writeStagedRecord(_ d: Deployment, merge: Deployment?, locked: Bool) throws {
        var f = StateFile()
        f["staged", "stateroot"] = d.stateroot
        f["staged", "deployment"] = d.name
        f["staged", "boot-checksum"] = d.bootChecksum
        f["staged", "kernel-arguments"] = d.kernelArguments.joined(separator: " ")
        if let title = d.title { f["staged", "title"] = title }
        if let merge { f["staged", "merge-deployment"] = merge.name }
        f["staged", "locked"] = locked ? "true" : "false"
        f["staged", "boot-id"] = currentBootID()
        f["staged", "time"] = String(unixTime())
        try writeRecord(StateRecords.staged, f)
    }

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

    /// Removes the staged deployment (and its record), unless the boot set
    /// names it (an interrupted finalization that did switch). Returns it.
    @discardableResult
    func discardStaged(state: SysrootState) throws -> Deployment? {
        let record: StagedDeployment?
        do { record = try stagedDeployment() } catch {
            // Unreadable (forged, or cut short by another tool): it names nothing cairn trusts; a
            // staged folder it meant is unreferenced and goes with the next cleanup.
            notice("removing the unreadable staged-deployment record: \(error)")
            try removeRecord(StateRecords.staged)
            return nil
        }
        guard let staged = record else { return nil }
        let d = staged.deployment
        let live = state.lists(d)
        if !live { try removeDeploymentFiles(d) }
        try removeRecord(StateRecords.staged)
        return live ? nil : d
    }

    /// The last failed finalization, until a deployment succeeds.
    public func finalizeFailure() throws -> FinalizeFailure? {
        guard let f = try readRecord(StateRecords.finalizeFailure) else { return nil }
        return FinalizeFailure(stateroot: f["failure", "stateroot"] ?? "", deploymentName: f["failure", "deployment"] ?? "",
                               error: f["failure", "error"] ?? "", time: Int(f["failure", "time"] ?? "") ?? 0,
                               earlierBoot: f["failure", "boot-id"] != currentBootID())
    }

    /// Finalizes the staged deployment: /etc merged again from the running
    /// deployment (so that edits made after staging are kept), then the
    /// boot set switched as a deploy does, with retention. `atShutdown` (the
    /// service's stop) leaves a locked one staged. A failure keeps the old
    /// default, removes the staged deployment, and leaves a record that the
    /// next boot's `cairn status` shows, and a journal entry.
    public func finalizeStaged(atShutdown: Bool) throws -> FinalizeOutcome {
        let repo = try repository()
        return try withLock(command: atShutdown ? "finalize --at-shutdown" : "finalize", timeout: Self.lockTimeout) {
            guard let staged = try stagedDeployment() else { return .nothingStaged }
            let state = try loadState()
            var d = staged.deployment
            if state.lists(d) {
                // Switched already, by a finalization cut short before it removed the record.
                try removeRecord(StateRecords.staged)
                return .nothingStaged
            }
            if staged.stale {
                try discardStaged(state: state)
                return .discardedStale(d)
            }
            if atShutdown && staged.locked { return .locked(d) }
            notice("finalizing the staged deployment \(d.stateroot) \(d.name)")
            do {
                guard FileSystem.exists(Array((at(d.relativePath) + "/.ostree.cfs").utf8)) else {
                    throw DeployError("finalizing \(d.stateroot) \(d.name)", "its folder \(at(d.relativePath)) has no composefs image")
                }
                let merge = staged.mergeFrom.flatMap { name in state.deployments.first { $0.stateroot == d.stateroot && $0.name == name } }
                    ?? mergeDeployment(state, stateroot: d.stateroot)
                try removeTree(at(d.relativePath) + "/etc")
                let etc = try writeEtc(d, merge: merge, repo: repo)
                try syncFilesystems()
                try testFinalizeFailure()
                d.bootCounter = try newEntryCounter()
                let removed = try commitDeployment(d, state: state, notAsDefault: false)
                try removeRecord(StateRecords.staged)
                return .finalized(d, removed: removed, etc: etc)
            } catch {
                let switched = (try? loadState())?.lists(d) ?? true
                if switched {
                    // Finalized: what failed came after the switch (removing a retired deployment).
                    try? removeRecord(StateRecords.staged)
                    throw error
                }
                let message = "\(error)"
                var f = StateFile()
                f["failure", "stateroot"] = d.stateroot
                f["failure", "deployment"] = d.name
                f["failure", "error"] = message
                f["failure", "time"] = String(unixTime())
                f["failure", "boot-id"] = currentBootID()
                try? writeRecord(StateRecords.finalizeFailure, f)
                try? removeDeploymentFiles(d)
                try? removeRecord(StateRecords.staged)
                sendToJournal([("MESSAGE", "cairn: finalizing the staged deployment \(d.stateroot) \(d.name) failed; the previous default stays: \(message)"),
                               ("MESSAGE_ID", JournalMessageID.finalizeFailed), ("PRIORITY", "3"), ("SYSLOG_IDENTIFIER", "cairn"),
                               ("CAIRN_DEPLOYMENT", d.name)])
                throw error
            }
        }
    }
}
