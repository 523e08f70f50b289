import ArgumentParser
import CairnDeploy
import CairnSysroot
import CairnRepo
import CairnSystem
import Composefs
import Foundation
import Trust

/// `--sysroot`, shared by the deployment commands.
struct SysrootOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The physical root holding ostree/ and boot/ (default: /sysroot on a booted system, else /).", valueName: "path"))
    var sysroot: String?

    @Option(name: .long, help: ArgumentHelp("The EFI system partition's root, for a sysroot booted by systemd-boot (default on a booted system: the FAT filesystem mounted at /efi, /boot/efi or /boot).", valueName: "path"))
    var esp: String?

    var value: Sysroot {
        let s = Sysroot(path: sysroot ?? Sysroot.defaultPath())
        s.esp = esp
        s.notice = Terminal.note
        return s
    }
}

/// `--stage` and `--lock-finalization`, shared by deploy, upgrade and switch.
struct StageOptions: ParsableArguments {
    @Flag(inversion: .prefixedNo, help: "Prepare the deployment now and switch the boot entries when the system shuts down (cairn-finalize-staged.service), merging /etc then (default: the sysroot's [cairn] stage setting, else no).")
    var stage: Bool?

    @Flag(name: .customLong("lock-finalization"), help: "With --stage: do not finalize at shutdown; 'cairn finalize' does it.")
    var lockFinalization = false

    func validate() throws {
        if lockFinalization && stage == false { throw ValidationError("--lock-finalization needs a staged deployment (not --no-stage)") }
    }

    /// --lock-finalization implies --stage.
    var staged: Bool? { lockFinalization ? true : stage }
}

struct SysrootCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sysroot", abstract: "Prepare a physical root for deployments.",
                                                    subcommands: [SysrootInit.self, SysrootConfig.self])
}

struct SysrootConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Show or change a sysroot setting ([cairn] in its repository's config).",
        discussion: """
        Settings: boot-tries (tries a new default entry gets from systemd-boot before it falls \
        back; 0 turns boot counting off; default 3), keep-failed-default (true: a deployment \
        that used up its tries stays the default; default false), stage (true: deploys on the \
        running system are staged; default false). Without VALUE, prints the value; with \
        --unset, restores the default.
        """
    )
    @OptionGroup var sysroot: SysrootOptions
    @Flag(help: "Remove the setting: its default applies.") var unset = false
    @Argument(help: ArgumentHelp("boot-tries, keep-failed-default or stage.", valueName: "key")) var key: String
    @Argument(help: ArgumentHelp("The new value.", valueName: "value")) var value: String?

    func run() throws {
        let s = sysroot.value
        if unset || value != nil {
            try s.setSetting(key, unset ? nil : value)
        } else {
            print(try s.setting(key))
        }
    }
}

struct SysrootInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the ostree layout in PATH: a bare repository, /boot, and a stateroot.",
        discussion: "Idempotent; run again with another --stateroot to add an operating system."
    )

    @Option(help: ArgumentHelp("Stateroot (operating system) to create, with its deploy/ and var/.", valueName: "name"))
    var stateroot: String?

    @Option(help: ArgumentHelp("The boot loader that reads the entries: ostree (ostree's /boot/loader layout, the default) or systemd-boot (entries and kernels on the EFI system partition).", valueName: "name"))
    var bootloader: String?

    @Option(help: ArgumentHelp("The EFI system partition's root, with --bootloader systemd-boot: its loader/entries and cairn/ folders are created.", valueName: "path"))
    var esp: String?

    @Flag(help: "Confirm changing this machine's own / and /boot (PATH is /).")
    var yes = false

    @Argument(help: ArgumentHelp("The physical root.", valueName: "path"))
    var path: String

    func run() throws {
        let s = Sysroot(path: path)
        let plan = s.initializationPlan(stateroot: stateroot)
        if !plan.isEmpty, (try? FileSystem.realPath(Array(path.utf8))) == [0x2f], !yes {
            throw DeployError("sysroot init /", "this would change the running machine's root: it would create \(plan.joined(separator: ", ")); run again with --yes if that is what you want")
        }
        let loader = try bootloader.map { name in
            guard let l = BootLoader(rawValue: name) else {
                throw DeployError("--bootloader \(name)", "not a boot loader cairn knows (\(BootLoader.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return l
        }
        if esp != nil && loader != .systemdBoot { throw DeployError("--esp", "only with --bootloader systemd-boot") }
        s.esp = esp
        try s.initialize(stateroot: stateroot)
        if let loader { try s.setBootLoader(loader) }
        if esp != nil { try s.initializeESP() }
        print("Initialised \(path)" + (stateroot.map { " with stateroot \($0)" } ?? "") + (loader == .systemdBoot ? ", booted by systemd-boot" + (esp.map { " from \($0)" } ?? "") : ""))
    }
}

/// Index argument with help.
private func indexHelp(_ what: String) -> ArgumentHelp {
    ArgumentHelp("\(what) (0 is the default, as `cairn status` numbers them).", valueName: "index")
}

struct DeployCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Deploy a commit: its composefs image, a merged /etc, its kernel, and a new boot entry set.",
        discussion: """
        The new deployment becomes the default (next boot) and the previous default the \
        rollback. Kept: the new default, the booted deployment, the rollback and pinned ones. \
        /etc changes of the current deployment are carried over (a three-way merge). \
        When the sysroot trusts keys ('cairn trust'), the commit must carry an ed25519 \
        signature by one of them that is not revoked.
        """
    )

    @OptionGroup var sysroot: SysrootOptions

    @Option(help: ArgumentHelp("Stateroot to deploy into (default: the default deployment's, or the only one).", valueName: "name"))
    var stateroot: String?

    @Option(name: .customLong("karg"), help: ArgumentHelp("Set a kernel argument, replacing others with the same key; repeatable.", valueName: "arg"))
    var kargs: [String] = []

    @Option(name: .customLong("karg-append"), help: ArgumentHelp("Append a kernel argument; repeatable.", valueName: "arg"))
    var kargsAppend: [String] = []

    @Flag(name: .customLong("not-as-default"), help: "Add the deployment after the default instead of making it the default.")
    var notAsDefault = false

    @Option(name: .customLong("keys"), help: ArgumentHelp("Also trust the keys in this file for this deploy (the sysroot's own are set with 'cairn trust'); repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []

    @Option(name: .customLong("revoked-keys"), help: ArgumentHelp("Also treat the keys in this file as revoked for this deploy.", valueName: "file"))
    var revokedKeys: String?

    @OptionGroup var staging: StageOptions

    @Argument(help: ArgumentHelp("Ref or commit in the sysroot's repository.", valueName: "rev"))
    var rev: String

    func validate() throws {
        for k in kargs + kargsAppend {
            do { try KernelArguments.validate(k) } catch let e as DeployError { throw ValidationError(e.description) }
        }
    }

    func run() throws {
        var options = DeployOptions(rev: rev)
        options.stateroot = stateroot
        options.kernelArguments = kargs
        options.appendedKernelArguments = kargsAppend
        options.notAsDefault = notAsDefault
        options.extraTrust = try loadTrust(keyFiles, revoked: revokedKeys)
        options.stage = staging.staged
        options.lockFinalization = staging.lockFinalization
        Self.printResult(try sysroot.value.deploy(options), notAsDefault: notAsDefault)
    }

    /// What a deploy did, for deploy, upgrade and switch.
    static func printResult(_ result: DeployResult, notAsDefault: Bool) {
        let d = result.deployment
        for w in result.warnings { Terminal.warning(w) }
        if let who = result.signedBy { print(who) }
        if let gone = result.discardedStaged { print("Discarded the staged deployment \(gone.stateroot) \(gone.name)") }
        if result.staged {
            print("Staged \(d.stateroot) \(d.name): it becomes the default when the system shuts down (/etc is merged again then)")
        } else {
            print("Deployed \(d.stateroot) \(d.name)" + (notAsDefault ? " (not as default)" : " (default on next boot)")
                  + (d.bootCounter.map { "; on probation: \($0.left) boot tries until it is blessed" } ?? ""))
        }
        print("  composefs digest: \(hexString(result.composefsDigest))")
        if let etc = result.etc {
            print("  /etc: \(etc.modified.count) modified, \(etc.added.count) added, \(etc.removed.count) removed carried over")
            for p in etc.modified { print("    M /etc/\(displayPath(p))") }
            for p in etc.added { print("    A /etc/\(displayPath(p))") }
            for p in etc.removed { print("    D /etc/\(displayPath(p))") }
            for f in etc.specialFiles { print("    carried \(f.kind) /etc/\(displayPath(f.path))") }
            for h in etc.hardlinks { print("    hardlink /etc/\(displayPath(h.path)) to /etc/\(displayPath(h.target))") }
            for p in etc.skippedSockets { Terminal.warning("left out the socket /etc/\(displayPath(p)): sockets cannot be carried into the new /etc") }
        } else {
            print("  /etc: the new defaults (no previous deployment to merge)")
        }
        if let n = result.populatedVar { print("  /var: the stateroot's empty /var was filled with the commit's /var (\(n) entries)") }
        for r in result.removed { print("  removed \(r.stateroot) \(r.name)") }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List the deployments in boot order.",
        discussion: "--json prints the cairn/v1 schema documented in the README."
    )

    @OptionGroup var sysroot: SysrootOptions

    @Flag(help: "Print JSON (apiVersion cairn/v1).")
    var json = false

    @Option(name: .customLong("keys"), help: ArgumentHelp("Also trust these keys when checking each commit's signatures (the sysroot's own trusted keys always apply); repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []

    func run() throws {
        let report = try sysroot.value.statusReport(extraTrustedKeys: try loadTrust(keyFiles, revoked: nil).trusted)
        for w in report.warnings { Terminal.warning(w) }
        Output.write(Array((json ? report.json().serialized() : report.text()).utf8))
    }
}

struct RollbackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rollback", abstract: "Make the previous deployment the default (swap the first two), atomically.")
    @OptionGroup var sysroot: SysrootOptions

    func run() throws {
        let state = try sysroot.value.rollback()
        print("Default is now \(state.deployments[0].stateroot) \(state.deployments[0].name); rollback \(state.deployments[1].name)")
    }
}

struct SetDefaultCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set-default", abstract: "Make a deployment the default for the next boot.")
    @OptionGroup var sysroot: SysrootOptions
    @Argument(help: indexHelp("Deployment to make the default")) var index: Int

    func run() throws {
        let state = try sysroot.value.setDefault(index)
        print("Default is now \(state.deployments[0].stateroot) \(state.deployments[0].name)")
    }
}

struct UndeployCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "undeploy", abstract: "Remove a deployment (never the booted one).")
    @OptionGroup var sysroot: SysrootOptions
    @Argument(help: indexHelp("Deployment to remove")) var index: Int

    func run() throws {
        let d = try sysroot.value.undeploy(index)
        print("Removed \(d.stateroot) \(d.name)")
    }
}

struct PinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pin", abstract: "Keep a deployment when newer ones are deployed.")
    @OptionGroup var sysroot: SysrootOptions
    @Flag(help: "Remove the pin instead.") var unpin = false
    @Argument(help: indexHelp("Deployment to pin")) var index: Int

    func run() throws {
        let d = try sysroot.value.pin(index, pinned: !unpin)
        print("\(unpin ? "Unpinned" : "Pinned") \(d.stateroot) \(d.name)")
    }
}

struct KargsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kargs", abstract: "Show or change the kernel arguments of the default deployment (new boot entries).")
    @OptionGroup var sysroot: SysrootOptions
    @Option(help: ArgumentHelp("Append an argument; repeatable.", valueName: "arg")) var append: [String] = []
    @Option(help: ArgumentHelp("Delete KEY=VALUE, or every KEY; repeatable.", valueName: "arg")) var delete: [String] = []
    @Option(help: ArgumentHelp("Set KEY=VALUE, replacing arguments with that key; repeatable.", valueName: "key=value")) var replace: [String] = []

    func validate() throws {
        for k in append + replace + delete {
            do { try KernelArguments.validate(k) } catch let e as DeployError { throw ValidationError(e.description) }
        }
    }

    func run() throws {
        if append.isEmpty && delete.isEmpty && replace.isEmpty {
            guard let d = try sysroot.value.loadState().deployments.first else { throw DeployError("kargs", "there are no deployments") }
            print(d.kernelArguments.joined(separator: " "))
            return
        }
        let d = try sysroot.value.changeKernelArguments(append: append, delete: delete, replace: replace)
        print(d.kernelArguments.joined(separator: " "))
    }
}

struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup",
        abstract: "Delete undeployed deployments, unused kernels, the inactive boot entry set, and unreachable objects."
    )
    @OptionGroup var sysroot: SysrootOptions
    @Flag(name: .customLong("dry-run"), help: "List what would be deleted.") var dryRun = false

    func run() throws {
        let report = try sysroot.value.cleanup(dryRun: dryRun)
        for p in report.removedPaths { print("\(dryRun ? "Would delete" : "Deleted") \(p)") }
        for k in report.kept { print("Kept \(k.path): \(k.reason)") }
        print("\(dryRun ? "Would delete" : "Deleted") \(report.prune.objectsPruned) of \(report.prune.objectsTotal) objects, \(formatBytes(report.prune.bytesFreed))")
    }
}

struct ConfigDiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config-diff", abstract: "List /etc changes of the booted (else the default) deployment against its /usr/etc.")
    @OptionGroup var sysroot: SysrootOptions

    func run() throws {
        let (_, changes) = try sysroot.value.configDiff()
        for p in changes.modified { print("M    /etc/\(displayPath(p))") }
        for p in changes.added { print("A    /etc/\(displayPath(p))") }
        for p in changes.removed { print("D    /etc/\(displayPath(p))") }
    }
}

struct PostCopyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "post-copy",
        abstract: "Enable fs-verity on every repository object and deployment image of a sysroot.",
        discussion: "For a sysroot prepared where fs-verity was not available (ostree calls this 'ostree admin post-copy'). Files that already have fs-verity are left as they are; on a filesystem without fs-verity support nothing changes and the command fails."
    )
    @OptionGroup var sysroot: SysrootOptions

    func run() throws {
        let s = sysroot.value
        _ = try s.repository()  // an initialised sysroot
        let report: SealReport
        do {
            report = try KernelVerity.sealSysroot(Array(s.path.utf8))
        } catch let e as SystemError {
            throw DeployError("enabling fs-verity in \(s.path)", e.description)
        }
        if report.unsupported {
            throw DeployError("enabling fs-verity in \(s.path)", "the filesystem does not support fs-verity (ext4 needs the verity feature: tune2fs -O verity)")
        }
        print("fs-verity enabled on \(report.enabled) file(s); \(report.alreadyEnabled) already had it")
    }
}

/// Keys named on the command line (`--keys`, `--revoked-keys`), each file
/// checked; a bad file fails with its path and line.
func loadTrust(_ trusted: [String], revoked: String?) throws -> RepositoryTrust {
    try RepositoryTrust(keyFiles: trusted, revokedKeyFile: revoked)
}
