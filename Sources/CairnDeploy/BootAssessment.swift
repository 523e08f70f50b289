import CairnRepo
import CairnSysroot
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// Stable journal MESSAGE_IDs (`journalctl MESSAGE_ID=...`), as systemd's
/// catalog uses them: one per kind of event, never reused.
public enum JournalMessageID {
    /// The firmware booted another deployment: the default used up its tries.
    public static let bootFallback = "6c3f1b2e9a4d4f0b8e21c7d5a9f04b13"
    /// A staged deployment could not be finalized at shutdown.
    public static let finalizeFailed = "0e7b9d64c2a1485f9f3c5b8e1d2a7c46"
    /// A health check failed on a deployment on probation.
    public static let healthCheckFailed = "b41d8e0f5c6a4e2d93f7a1c0e8b5d269"
}

/// What `cairn health-check` found and did.
public struct HealthReport: Sendable {
    public var booted: Deployment?
    /// The booted entry's counter: non-nil while it is on probation.
    public var probation: BootCounter?
    public var fallback: FallbackRecord?
    public var checks: [HealthCheckOutcome] = []
    public var failed: Bool { checks.contains { !$0.passed } }
}

public struct HealthCheckOptions: Sendable {
    /// Searched in order; a later folder's check replaces an earlier one of
    /// the same name, and a link to /dev/null disables it (as systemd's
    /// drop-ins work).
    public var directories = ["/usr/lib/cairn/health.d", "/etc/cairn/health.d"]
    /// Seconds each check may take.
    public var timeout: Double = 120
    public init() {}
}

extension Sysroot {
    static let bootTriesKey = "boot-tries"
    static let keepFailedDefaultKey = "keep-failed-default"
    public static let defaultBootTries = 3

    /// `[cairn] boot-tries` (default 3; 0 turns boot counting off): the tries
    /// a new default entry gets on systemd-boot.
    public func bootTries() throws -> Int {
        guard let value = try repositoryConfigValue(group: BootLoader.configGroup, key: Self.bootTriesKey) else { return Self.defaultBootTries }
        guard let n = Int(value.trimmingWhitespace()), n >= 0, n <= 1000 else {
            throw DeployError("reading \(repositoryPath)/config", "[\(BootLoader.configGroup)] \(Self.bootTriesKey)=\(value) is not a number of tries from 0 (off) to 1000")
        }
        return n
    }

    /// The counter a new default entry starts with: none on ostree's /boot
    /// layout (its loaders do not count) or with counting off.
    func newEntryCounter() throws -> BootCounter? {
        guard case .esp = try layout() else { return nil }
        let tries = try bootTries()
        return tries > 0 ? BootCounter(left: tries, done: 0) : nil
    }

    /// The settings `cairn sysroot config` changes, with their defaults and
    /// what a value must look like.
    static let settings: [(key: String, defaultValue: String, valid: @Sendable (String) -> Bool, expected: String)] = [
        (bootTriesKey, String(defaultBootTries), { Int($0).map { (0...1000).contains($0) } ?? false }, "a number of tries from 0 (off) to 1000"),
        (keepFailedDefaultKey, "false", { $0 == "true" || $0 == "false" }, "true or false"),
        (stageKey, "false", { $0 == "true" || $0 == "false" }, "true or false"),
    ]

    static func settingSpec(_ key: String) throws -> (key: String, defaultValue: String, valid: @Sendable (String) -> Bool, expected: String) {
        guard let spec = settings.first(where: { $0.key == key }) else {
            throw DeployError("setting \(key)", "not a sysroot setting (\(settings.map(\.key).joined(separator: ", ")))")
        }
        return spec
    }

    /// A setting's value, its default when unset.
    public func setting(_ key: String) throws -> String {
        let spec = try Self.settingSpec(key)
        return try repositoryConfigValue(group: BootLoader.configGroup, key: key) ?? spec.defaultValue
    }

    /// Sets (nil: removes) a setting, refusing a value it cannot take.
    public func setSetting(_ key: String, _ value: String?) throws {
        let spec = try Self.settingSpec(key)
        if let value, !spec.valid(value) { throw DeployError("setting \(key)=\(value)", "expected \(spec.expected)") }
        try ensureWritable()
        try repository().setConfigValue(group: BootLoader.configGroup, key: key, value)
    }

    /// `[cairn] keep-failed-default=true` leaves a deployment that used up
    /// its tries as the default (systemd-boot still boots the next one).
    func keepsFailedDefault() -> Bool {
        (try? repositoryConfigValue(group: BootLoader.configGroup, key: Self.keepFailedDefaultKey))??.trimmingWhitespace() == "true"
    }

    // MARK: Records

    func writeRecord(_ relative: String, _ record: StateFile) throws {
        try makeDirectories(at(StateRecords.directory))
        if relative.hasPrefix(StateRecords.health + "/") { try makeDirectories(at(StateRecords.health)) }
        try writeFileAtomically(at(relative), record.serialized())
    }

    func removeRecord(_ relative: String) throws {
        try removeTree(at(relative))
    }

    func writeHealthRecord(_ d: Deployment, checks: [HealthCheckOutcome]) throws {
        let previous = try? healthRecord(stateroot: d.stateroot, name: d.name)
        let passed = checks.allSatisfy(\.passed)
        var f = StateFile()
        f["health", "boot-id"] = currentBootID()
        f["health", "time"] = String(unixTime())
        f["health", "passed"] = passed ? "true" : "false"
        f["health", "failed-boots"] = String((previous?.failedBoots ?? 0) + (passed ? 0 : 1))
        for (i, c) in checks.enumerated() {
            let g = "check \(i)"
            f[g, "name"] = c.name
            f[g, "passed"] = c.passed ? "true" : "false"
            f[g, "result"] = c.result
            f[g, "output"] = c.output
        }
        try writeRecord(healthRecordPath(d), f)
    }

    // MARK: Falling back

    /// A deployment ahead of the booted one whose entry has no tries left:
    /// systemd-boot passed over it and booted this one instead.
    func detectFallback(_ state: SysrootState) -> (failed: Deployment, booted: Deployment)? {
        guard let b = state.bootedIndex else { return nil }
        for d in state.deployments[..<b] {
            if let c = d.bootCounter, c.left == 0 { return (d, state.deployments[b]) }
        }
        return nil
    }

    /// Records a fallback once per boot, tells the journal, and (unless
    /// `keep-failed-default`) makes the booted deployment the default, so
    /// that `status` and the boot entries say what the firmware does. The
    /// failed deployment stays, after it, with its spent counter: `cairn
    /// rollback` retries it with fresh tries.
    func recordFallback(_ failed: Deployment, booted: Deployment, state: SysrootState) throws -> FallbackRecord {
        let repo = try repository()
        let version = (try? repo.commit(failed.checksum))?.version
        let bootID = currentBootID()
        if let existing = try fallbackRecord(), existing.bootID == bootID, existing.failedName == failed.name {
            return existing
        }
        let demote = !keepsFailedDefault()
        var f = StateFile()
        f["fallback", "failed-stateroot"] = failed.stateroot
        f["fallback", "failed-deployment"] = failed.name
        if let version { f["fallback", "failed-version"] = version }
        f["fallback", "boots"] = String(failed.bootCounter?.done ?? 0)
        f["fallback", "booted-stateroot"] = booted.stateroot
        f["fallback", "booted-deployment"] = booted.name
        f["fallback", "time"] = String(unixTime())
        f["fallback", "boot-id"] = bootID
        f["fallback", "demoted"] = demote ? "true" : "false"
        try writeRecord(StateRecords.fallback, f)
        if demote {
            var list = state.deployments
            if let b = list.firstIndex(where: { $0.isSame(as: booted) }) {
                let d = list.remove(at: b)
                list.insert(d, at: 0)
                try writeBootSet(list)
            }
        }
        let record = try fallbackRecord()!
        var message = "deployment \(failed.stateroot) \(failed.name)" + (version.map { " (version \($0))" } ?? "")
            + " failed \(record.boots) boot(s); systemd-boot booted \(booted.stateroot) \(booted.name) instead"
        if let h = record.health, !h.passed {
            message += "; failed checks: " + h.checks.filter { !$0.passed }.map { "\($0.name) (\($0.result))" }.joined(separator: ", ")
        } else {
            message += "; no boot of it reached the health checks"
        }
        sendToJournal([("MESSAGE", "cairn: " + message), ("MESSAGE_ID", JournalMessageID.bootFallback), ("PRIORITY", "3"),
                       ("SYSLOG_IDENTIFIER", "cairn"), ("CAIRN_FAILED_DEPLOYMENT", failed.name), ("CAIRN_BOOTED_DEPLOYMENT", booted.name),
                       ("CAIRN_BOOTS", String(record.boots))])
        notice(message)
        return record
    }

    // MARK: Health checks

    /// The checks to run: executables in `directories`, by name, a later
    /// folder's replacing an earlier's; only regular files owned by root and
    /// writable by no one else, so that a user who can write a file in
    /// `/etc` cannot make the machine run it as root (refused, and failing
    /// the check: the machine's owner must know).
    func healthChecks(_ directories: [String]) -> [(name: String, path: String, refusal: String?)] {
        var chosen: [String: (path: String, refusal: String?)] = [:]
        for dir in directories {
            for raw in (try? FileSystem.directoryEntries(Array(dir.utf8))) ?? [] {
                guard let name = String(validating: raw, as: UTF8.self), !name.hasPrefix(".") else { continue }
                let path = dir + "/" + name
                if let target = try? FileSystem.readLink(Array(path.utf8)), target == Array("/dev/null".utf8) {
                    chosen[name] = nil
                    continue
                }
                guard let st = try? FileSystem.stat(Array(path.utf8)) else { continue }
                if st.st_mode & S_IFMT == S_IFDIR { continue }
                var refusal: String?
                if st.st_mode & S_IFMT != S_IFREG { refusal = "not a regular file" }
                else if st.st_uid != 0 { refusal = "owned by uid \(st.st_uid), not root; not run" }
                else if st.st_mode & 0o022 != 0 { refusal = "writable by group or others; not run" }
                else if st.st_mode & 0o100 == 0 { refusal = "not executable" }
                chosen[name] = (path, refusal)
            }
        }
        return chosen.keys.sorted().map { ($0, chosen[$0]!.path, chosen[$0]!.refusal) }
    }

    /// `cairn health-check`, run by cairn-health-check.service on every boot
    /// before boot-complete.target: records a fallback if systemd-boot made
    /// one, then runs the health checks. A failure counts only while the
    /// booted entry is on probation (its counter): the caller then fails,
    /// so boot-complete.target is not reached, systemd-bless-boot does not
    /// bless the entry, and the unit's FailureAction reboots into the next
    /// try. On a blessed deployment a failure is reported, nothing more: no
    /// reboot loop on a machine that booted fine before.
    public func healthCheck(_ o: HealthCheckOptions) throws -> HealthReport {
        var report = HealthReport()
        let state = try loadState()
        if let (failed, booted) = detectFallback(state) {
            report.fallback = try withLock(command: "health-check", timeout: Self.lockTimeout) {
                // Again under the lock: another command may have changed the set.
                let now = try loadState()
                guard let (f, b) = detectFallback(now), f.name == failed.name, b.name == booted.name else { return nil }
                return try recordFallback(f, booted: b, state: now)
            }
        }
        let after = try loadState()
        guard let b = after.bootedIndex else { return report }
        let booted = after.deployments[b]
        report.booted = booted
        report.probation = booted.bootCounter
        for check in healthChecks(o.directories) {
            if let refusal = check.refusal {
                report.checks.append(HealthCheckOutcome(name: check.name, passed: false, result: refusal, output: ""))
                continue
            }
            let outcome: HealthCheckOutcome
            do {
                let r = try runProgram(check.path, timeout: o.timeout)
                var text = String(decoding: r.output, as: UTF8.self)
                if r.truncated { text += "\n[output truncated]" }
                outcome = HealthCheckOutcome(name: check.name, passed: r.succeeded, result: r.summary, output: text)
            } catch let e as SystemError {
                outcome = HealthCheckOutcome(name: check.name, passed: false, result: "could not run: \(e.message)", output: "")
            }
            report.checks.append(outcome)
        }
        try ensureWritable()
        try writeHealthRecord(booted, checks: report.checks)
        if report.failed {
            let failed = report.checks.filter { !$0.passed }.map { "\($0.name) (\($0.result))" }.joined(separator: ", ")
            let tries = booted.bootCounter.map { c in c.left > 0 ? "; \(c.left) tries left before systemd-boot falls back" : "; no tries left: the next boot falls back" }
            let message = "health checks of \(booted.stateroot) \(booted.name) failed: \(failed)" + (tries ?? " (the deployment is blessed: nothing else happens)")
            sendToJournal([("MESSAGE", "cairn: " + message), ("MESSAGE_ID", JournalMessageID.healthCheckFailed), ("PRIORITY", "3"),
                           ("SYSLOG_IDENTIFIER", "cairn"), ("CAIRN_DEPLOYMENT", booted.name)])
        }
        return report
    }
}
