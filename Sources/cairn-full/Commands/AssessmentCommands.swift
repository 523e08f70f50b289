import ArgumentParser
import CairnDeploy
import CairnSysroot
import CairnRepo
import CairnSystem
import Foundation

struct FinalizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finalize",
        abstract: "Finalize the staged deployment now: merge /etc and make it the default.",
        discussion: """
        A staged deployment ('deploy --stage', 'upgrade --stage') is finalized when the system \
        shuts down, by cairn-finalize-staged.service, which runs 'cairn finalize --at-shutdown'. \
        This command does it at once, also for one staged with --lock-finalization. A failure \
        keeps the previous default and is reported by 'cairn status'.
        """
    )
    @OptionGroup var sysroot: SysrootOptions
    @Flag(name: .customLong("at-shutdown"), help: "As the shutdown service: leave a deployment staged with --lock-finalization alone.")
    var atShutdown = false

    func run() throws {
        switch try sysroot.value.finalizeStaged(atShutdown: atShutdown) {
        case .nothingStaged:
            print("No staged deployment")
        case .locked(let d):
            print("The staged deployment \(d.stateroot) \(d.name) is locked (--lock-finalization); not finalized. Run 'cairn finalize' to finalize it.")
        case .discardedStale(let d):
            print("Discarded the staged deployment \(d.stateroot) \(d.name): it was staged in an earlier boot, which ended without finalizing it")
        case .finalized(let d, let removed, let etc):
            print("Finalized \(d.stateroot) \(d.name): the default on next boot"
                  + (d.bootCounter.map { "; on probation: \($0.left) boot tries until it is blessed" } ?? ""))
            if let etc { print("  /etc: \(etc.modified.count) modified, \(etc.added.count) added, \(etc.removed.count) removed carried over") }
            for r in removed { print("  removed \(r.stateroot) \(r.name)") }
        }
    }
}

struct HealthCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health-check",
        abstract: "Check the booted deployment's health; on probation, fail so that it is not blessed.",
        discussion: """
        Run by cairn-health-check.service before boot-complete.target. First records a fallback \
        if systemd-boot booted another deployment because the default used up its tries (and \
        makes the booted one the default, unless [cairn] keep-failed-default=true). Then runs \
        the executables in /usr/lib/cairn/health.d and /etc/cairn/health.d (a name in /etc \
        replaces the same name in /usr; a link to /dev/null disables it); each must exit 0. \
        While the booted entry counts tries, a failed check makes this command fail: \
        systemd-bless-boot does not bless the entry and the unit reboots into the next try. \
        On a blessed deployment failures are reported only.
        """
    )
    @OptionGroup var sysroot: SysrootOptions
    @Option(name: .customLong("checks-dir"), help: ArgumentHelp("A folder of checks, instead of the two default ones; repeatable (later folders replace earlier names).", valueName: "dir"))
    var directories: [String] = []
    @Option(help: ArgumentHelp("Seconds each check may run.", valueName: "seconds"))
    var timeout: Double = 120

    func run() throws {
        var o = HealthCheckOptions()
        if !directories.isEmpty { o.directories = directories }
        o.timeout = timeout
        let report = try sysroot.value.healthCheck(o)
        if let f = report.fallback {
            print("Fallback: \(f.failedStateroot) \(f.failedName) failed \(f.boots) boot(s); \(f.bootedStateroot) \(f.bootedName) booted instead"
                  + (f.demoted ? " and is now the default" : ""))
        }
        guard let booted = report.booted else {
            print("Not a booted cairn system: no checks run")
            return
        }
        for c in report.checks {
            print("\(c.passed ? "ok" : "FAILED") \(c.name) (\(c.result))")
            if !c.passed { for line in c.output.split(separator: "\n") { print("    \(line)") } }
        }
        let state = report.probation.map { "on probation, \($0.left) tries left" } ?? "blessed"
        print("\(booted.stateroot) \(booted.name): \(report.checks.count) check(s), \(report.checks.filter { !$0.passed }.count) failed; \(state)")
        if report.failed && report.probation != nil { throw ExitCode(1) }
    }
}
