import CairnSystem
#if canImport(Glibc)
import Glibc
#endif


/// systemd-boot's Automatic Boot Assessment counter, the `+LEFT[-DONE]`
/// before `.conf` in an entry's file name (Boot Loader Specification).
/// systemd-boot renames the file on each boot (`+3` → `+2-1`), sorts an
/// entry with no tries left after all others, and systemd-bless-boot drops
/// the counter once `boot-complete.target` is reached. An entry without a
/// counter is blessed: known to boot.
public struct BootCounter: Equatable, Sendable {
    public var left: Int
    public var done: Int

    public init(left: Int, done: Int) {
        self.left = left
        self.done = done
    }

    /// systemd-boot writes `+L-D` after a try; cairn writes `+L` for a new entry.
    package var suffix: String { done == 0 ? "+\(left)" : "+\(left)-\(done)" }

    /// "NAME+L[-D].conf" → ("NAME", counter); "NAME.conf" → ("NAME", nil).
    /// Digits only, as systemd-boot parses them; anything else is part of
    /// the name.
    package static func split(entryFileName name: String) -> (base: String, counter: BootCounter?) {
        let stem = name.hasSuffix(".conf") ? String(name.dropLast(5)) : name
        guard let plus = stem.lastIndex(of: "+") else { return (stem, nil) }
        let tail = stem[stem.index(after: plus)...]
        let parts = tail.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        func number(_ s: Substring) -> Int? { !s.isEmpty && s.count <= 9 && s.allSatisfy({ $0.isASCII && $0.isNumber }) ? Int(s) : nil }
        guard let left = number(parts[0]) else { return (stem, nil) }
        var done = 0
        if parts.count == 2 {
            guard let d = number(parts[1]) else { return (stem, nil) }
            done = d
        }
        return (String(stem[..<plus]), BootCounter(left: left, done: done))
    }
}

/// Where cairn keeps what must outlive a boot, outside every deployment:
/// `<sysroot>/ostree/cairn/`. libostree ignores it.
package enum StateRecords {
    package static let directory = "ostree/cairn"
    package static let staged = "ostree/cairn/staged"
    package static let finalizeFailure = "ostree/cairn/finalize-failure"
    package static let fallback = "ostree/cairn/fallback"
    package static let health = "ostree/cairn/health"
}

/// The ID of this boot (the kernel's random boot_id), which tells a record
/// made in this boot from one that a reboot or a power cut left behind.
/// `CAIRN_TEST_BOOT_ID` stands in for it in tests.
package func currentBootID() -> String {
    if let fake = getenv("CAIRN_TEST_BOOT_ID") { return String(cString: fake) }
    return ((try? readText("/proc/sys/kernel/random/boot_id")) ?? "").trimmingWhitespace()
}

package func unixTime() -> Int { Int(time(nil)) }

/// One check's outcome, as recorded and shown.
public struct HealthCheckOutcome: Sendable {
    public var name: String
    public var passed: Bool
    /// "exit status 1", "timed out", ...
    public var result: String
    public var output: String

    package init(name: String, passed: Bool, result: String, output: String) {
        self.name = name
        self.passed = passed
        self.result = result
        self.output = output
    }
}

/// The last health result of one deployment (`ostree/cairn/health/…`).
public struct HealthRecord: Sendable {
    public var bootID: String
    public var time: Int
    public var passed: Bool
    /// How many boots of this deployment failed their checks.
    public var failedBoots: Int
    public var checks: [HealthCheckOutcome]
}

/// What `cairn status` says after systemd-boot fell back from a
/// deployment that used up its tries.
public struct FallbackRecord: Sendable {
    public var failedStateroot: String
    public var failedName: String
    public var failedVersion: String?
    /// The tries systemd-boot made (the entry's `-DONE`).
    public var boots: Int
    public var bootedStateroot: String
    public var bootedName: String
    public var time: Int
    public var bootID: String
    /// Whether cairn made the booted deployment the default.
    public var demoted: Bool
    /// The failed deployment's last health result; nil when no boot of it
    /// reached the checks (its initramfs refused it, or it never came up).
    public var health: HealthRecord?

    package init(failedStateroot: String, failedName: String, failedVersion: String?, boots: Int, bootedStateroot: String,
                 bootedName: String, time: Int, bootID: String, demoted: Bool, health: HealthRecord?) {
        self.failedStateroot = failedStateroot
        self.failedName = failedName
        self.failedVersion = failedVersion
        self.boots = boots
        self.bootedStateroot = bootedStateroot
        self.bootedName = bootedName
        self.time = time
        self.bootID = bootID
        self.demoted = demoted
        self.health = health
    }
}

extension Sysroot {
    // MARK: Records

    package func readRecord(_ relative: String) throws -> StateFile? {
        let file = at(relative)
        guard FileSystem.exists(Array(file.utf8)) else { return nil }
        let bytes: [UInt8]
        do {
            let fd = try FileDescriptor.open(file, O_RDONLY | O_NOFOLLOW)
            bytes = try fd.closeAfter { try fd.readAll(limit: 4 << 20) }
        } catch let e as SystemError {
            throw DeployError("reading \(file)", e.message)
        }
        return try StateFile(parsing: bytes, path: file)
    }

    package func healthRecordPath(_ d: Deployment) -> String { "\(StateRecords.health)/\(d.stateroot)-\(d.name)" }
    package func healthRecordPath(stateroot: String, name: String) -> String { "\(StateRecords.health)/\(stateroot)-\(name)" }

    public func healthRecord(stateroot: String, name: String) throws -> HealthRecord? {
        guard let f = try readRecord(healthRecordPath(stateroot: stateroot, name: name)) else { return nil }
        var checks: [HealthCheckOutcome] = []
        for g in f.groups where g.name.hasPrefix("check ") {
            checks.append(HealthCheckOutcome(name: f[g.name, "name"] ?? "", passed: f[g.name, "passed"] == "true",
                                             result: f[g.name, "result"] ?? "", output: f[g.name, "output"] ?? ""))
        }
        return HealthRecord(bootID: f["health", "boot-id"] ?? "", time: Int(f["health", "time"] ?? "") ?? 0,
                            passed: f["health", "passed"] == "true", failedBoots: Int(f["health", "failed-boots"] ?? "") ?? 0,
                            checks: checks)
    }

    /// The record of the last fallback, if it concerns the deployment that
    /// booted (after a reboot into another one it is history, and `status`
    /// no longer shows it).
    public func fallbackRecord() throws -> FallbackRecord? {
        guard let f = try readRecord(StateRecords.fallback) else { return nil }
        let failedStateroot = f["fallback", "failed-stateroot"] ?? "", failedName = f["fallback", "failed-deployment"] ?? ""
        return FallbackRecord(failedStateroot: failedStateroot, failedName: failedName, failedVersion: f["fallback", "failed-version"],
                              boots: Int(f["fallback", "boots"] ?? "") ?? 0,
                              bootedStateroot: f["fallback", "booted-stateroot"] ?? "", bootedName: f["fallback", "booted-deployment"] ?? "",
                              time: Int(f["fallback", "time"] ?? "") ?? 0, bootID: f["fallback", "boot-id"] ?? "",
                              demoted: f["fallback", "demoted"] == "true",
                              health: try healthRecord(stateroot: failedStateroot, name: failedName))
    }
}
