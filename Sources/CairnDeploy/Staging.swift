import CairnRepo
import CairnSysroot
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

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
        return try repositoryConfigValue(group: BootLoader.configGroup, key: Self.stageKey)?.trimmingWhitespace() == "true"
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
