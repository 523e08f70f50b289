import ArgumentParser
import CairnDeploy
import CairnSysroot
import CairnRepo
import CairnSystem
import Foundation
import Trust

// MARK: remote

struct RemoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remote",
        abstract: "The remotes a repository pulls from, stored as ostree stores them ([remote \"NAME\"] in its config).",
        subcommands: [RemoteAdd.self, RemoteList.self, RemoteShow.self, RemoteDelete.self, RemoteRefs.self]
    )
}

struct RemoteAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Add a remote: a URL serving an ostree repository (http, https, file, or mirrorlist=URL).",
        discussion: """
        Its commits (and its summary) must carry an ed25519 signature by one of the keys of \
        --sign-keys; one key is stored inline (verification-ed25519-key), several as the key \
        file's path (verification-ed25519-file). Debian's ostree 2022.7 has no ed25519 and \
        refuses to pull from a remote that asks for it.
        """
    )
    @OptionGroup var target: RepositoryTarget
    @Option(name: .customLong("contenturl"), help: ArgumentHelp("Fetch content objects from this URL instead (a CDN, say).", valueName: "url"))
    var contentURL: String?
    @Option(name: .customLong("sign-keys"), help: ArgumentHelp("ed25519 public keys the remote's commits are signed with.", valueName: "pubfile"))
    var signKeys: String?
    @Flag(name: .customLong("no-sign-verify"), help: "Accept the remote's commits without a signature (not for machines in the field).")
    var noSignVerify = false
    @Option(name: .customLong("set"), help: ArgumentHelp("Write another option of the remote, as ostree remote add --set; repeatable.", valueName: "key=value"))
    var set: [String] = []
    @Argument(help: ArgumentHelp("Remote name.", valueName: "name")) var name: String
    @Argument(help: ArgumentHelp("URL of the repository.", valueName: "url")) var url: String

    func validate() throws {
        if noSignVerify && signKeys != nil { throw ValidationError("give --sign-keys or --no-sign-verify, not both") }
        if !noSignVerify && signKeys == nil { throw ValidationError("give --sign-keys PUBFILE (the keys its commits are signed with), or --no-sign-verify") }
        for s in set where !s.contains("=") || s.hasPrefix("=") { throw ValidationError("--set expects KEY=VALUE, got '\(s)'") }
    }

    func run() throws {
        var o = RemoteOptions()
        o.contentURL = contentURL
        o.signVerify = !noSignVerify
        if let file = signKeys {
            o.keys = try loadTrust([file], revoked: nil).trusted
            o.keyFile = file.hasPrefix("/") ? file : FileManager.default.currentDirectoryPath + "/" + file
        }
        o.extra = set.map { s in
            let eq = s.firstIndex(of: "=")!
            return (String(s[..<eq]), String(s[s.index(after: eq)...]))
        }
        let repository = try target.open()
        try repository.addRemote(name, url: url, o)
        print("Added remote \(name) (\(url)) to \(repository.path)/config" + (noSignVerify ? "; its commits are NOT verified" : "; commits must be signed by \(o.keys.count) key(s)"))
    }
}

struct RemoteList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the remotes.")
    @OptionGroup var target: RepositoryTarget
    @Flag(name: [.customShort("u"), .long], help: "Show their URLs too.") var showUrls = false

    func run() throws {
        for r in try target.open().remotes() { print(showUrls ? "\(r.name)  \(r.url)" : r.name) }
    }
}

struct RemoteShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a remote's options and keys.")
    @OptionGroup var target: RepositoryTarget
    @Argument(help: ArgumentHelp("Remote name.", valueName: "name")) var name: String

    func run() throws {
        let repository = try target.open()
        let r = try repository.remote(name)
        print("Remote: \(r.name)")
        print("URL: \(r.url)")
        for (k, v) in r.options { print("\(k): \(v)") }
        if r.signVerify {
            for k in try repository.remoteKeys(r) { print("Trusted key: \(k.base64)") }
        } else {
            print("Signatures: not verified")
        }
    }
}

struct RemoteDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a remote (its refs stay).")
    @OptionGroup var target: RepositoryTarget
    @Argument(help: ArgumentHelp("Remote name.", valueName: "name")) var name: String

    func run() throws {
        let repository = try target.open()
        try repository.deleteRemote(name)
        print("Deleted remote \(name) from \(repository.path)/config")
    }
}

struct RemoteRefs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "refs", abstract: "List the refs a remote publishes (from its verified summary).")
    @OptionGroup var target: RepositoryTarget
    @Argument(help: ArgumentHelp("Remote name.", valueName: "name")) var name: String

    func run() throws {
        let state = try target.open().remoteState(name)
        for w in state.warnings { Terminal.warning(w) }
        for r in state.refs { print("\(name):\(r.name)  \(r.checksum)") }
    }
}

// MARK: pull

/// Options shared by pull, upgrade and switch.
struct PullFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Also fetch this many parent commits (-1: all history).", valueName: "n"))
    var depth: Int32 = 0
    @Flag(name: .customLong("disable-static-deltas"), help: "Fetch objects one by one even where a static delta exists.")
    var disableStaticDeltas = false
    @Option(name: .customLong("stall-timeout"), help: ArgumentHelp("Give up when nothing arrives for this many seconds (default 60).", valueName: "seconds"))
    var stallTimeout: Double = 60
    @Flag(name: .customLong("disable-verify-bindings"), help: "Accept a commit whose ref binding (ostree.ref-binding) does not name the ref pulled.")
    var disableVerifyBindings = false

    func options(dryRun: Bool = false, mirror: Bool = false) -> PullOptions {
        var o = PullOptions()
        o.depth = depth
        o.dryRun = dryRun
        o.mirror = mirror
        o.disableStaticDeltas = disableStaticDeltas
        o.stallTimeout = stallTimeout
        o.verifyBindings = !disableVerifyBindings
        if Terminal.stderrIsTerminal {
            let line = ProgressLine()
            o.progress = { p in line.update(PullCommand.progressText(p)) }
        }
        return o
    }
}

struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Fetch refs of a remote, verifying each commit's ed25519 signature before its content.",
        discussion: """
        REMOTE alone pulls every ref of the remote's summary. A commit that is unsigned, signed \
        by an unknown or revoked key, bound to another ref (ostree.ref-binding), or whose summary \
        is tampered with or expired, is refused: \
        the ref stays where it was. Static deltas are used where the server has one.
        """
    )
    @OptionGroup var target: RepositoryTarget
    @OptionGroup var flags: PullFlags
    @Flag(help: "Write the refs as local branches, as a mirror does.") var mirror = false
    @Flag(name: .customLong("dry-run"), help: "Say what would be fetched (bytes exact with a static delta); fetch only commit metadata.")
    var dryRun = false
    @Argument(help: ArgumentHelp("REMOTE or REMOTE:REF; repeatable.", valueName: "remote[:ref]"))
    var specs: [String]

    func run() throws {
        var byRemote: [(String, [String])] = []
        for s in specs {
            let (remote, ref) = s.firstIndex(of: ":").map { (String(s[..<$0]), String(s[s.index(after: $0)...])) } ?? (s, "")
            if let i = byRemote.firstIndex(where: { $0.0 == remote }) {
                if !ref.isEmpty { byRemote[i].1.append(ref) }
            } else {
                byRemote.append((remote, ref.isEmpty ? [] : [ref]))
            }
        }
        let repository = try target.open()
        for (remote, refs) in byRemote {
            let report = try repository.pull(remote: remote, refs: refs, flags.options(dryRun: dryRun, mirror: mirror))
            if Terminal.stderrIsTerminal { ProgressLine().finish() }
            Self.printReport(report, dryRun: dryRun)
        }
    }

    static func progressText(_ p: PullProgress) -> String {
        var text = "pulling: \(p.fetched)/\(p.requested) objects, \(formatBytes(p.bytesTransferred))"
        if p.elapsed > 0.5 { text += " (\(formatBytes(UInt64(Double(p.bytesTransferred) / p.elapsed)))/s)" }
        if p.totalDeltaParts > 0 { text += ", delta parts \(p.fetchedDeltaParts)/\(p.totalDeltaParts)" }
        return text
    }

    static func printReport(_ report: PullReport, dryRun: Bool) {
        for w in report.warnings { Terminal.warning(w) }
        for r in report.refs {
            let move = r.from == r.to ? "already at \(r.to)" : "\(r.from ?? "(none)") -> \(r.to)"
            print("\(r.remote):\(r.ref): \(dryRun ? "would move " : "")\(move)")
            if let v = r.verifiedBy { print("  \(v)") }
            if dryRun {
                print(r.wouldFetchBytes.map { "  would fetch \(formatBytes($0)) (a static delta)" } ?? "  no static delta: the size is known only once the trees are fetched")
            }
        }
        print(fetchedLine(report.progress))
    }

    /// The one line a pull ends with: what arrived, in how long.
    static func fetchedLine(_ p: PullProgress) -> String {
        "Fetched \(p.fetched) objects"
            + (p.totalDeltaParts > 0 ? " and \(p.fetchedDeltaParts) delta part\(p.fetchedDeltaParts == 1 ? "" : "s")" : "")
            + ", \(formatBytes(p.bytesTransferred)) in \(String(format: "%.1f", p.elapsed)) s"
    }
}

struct PullLocalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pull-local", abstract: "Copy refs (all when none is named) from another repository on this machine, checking every object.")
    @OptionGroup var target: RepositoryTarget
    @Argument(help: ArgumentHelp("The source repository.", valueName: "path")) var source: String
    @Argument(help: ArgumentHelp("Refs to copy.", valueName: "ref")) var refs: [String] = []

    func run() throws {
        let repository = try target.open()
        let n = try repository.pullLocal(from: source, refs: refs)
        print("Copied \(n) ref(s) from \(source)")
    }
}

// MARK: upgrade, switch

struct UpgradeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgrade",
        abstract: "Pull the running (else default) deployment's origin and deploy it.",
        discussion: """
        Like 'cairn deploy' after 'cairn pull': /etc merged, the trust policy applied, old \
        deployments retired. --check exits 0 and prints the update when there is one, 77 when \
        there is none (as rpm-ostree does). A commit older than the deployed one is refused \
        unless --allow-downgrade.
        """
    )
    @OptionGroup var sysroot: SysrootOptions
    @OptionGroup var flags: PullFlags
    @Flag(help: "Only say whether an update is available (exit 77: none).") var check = false
    @Flag(name: .customLong("pull-only"), help: "Fetch the update, do not deploy it.") var pullOnly = false
    @Flag(name: .customLong("allow-downgrade"), help: "Accept a commit older than the deployed one.") var allowDowngrade = false
    @Option(name: .customLong("keys"), help: ArgumentHelp("Also trust these keys for the deploy; repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []
    @OptionGroup var staging: StageOptions

    func run() throws {
        var o = UpgradeOptions()
        o.stage = staging.staged
        o.lockFinalization = staging.lockFinalization
        o.check = check
        o.pullOnly = pullOnly
        o.allowDowngrade = allowDowngrade
        o.pull = flags.options()
        o.extraTrust = try loadTrust(keyFiles, revoked: nil)
        try Self.report(try sysroot.value.upgrade(o), check: check)
    }

    static func report(_ result: UpgradeResult, check: Bool) throws {
        if Terminal.stderrIsTerminal, result.pull != nil { ProgressLine().finish() }
        if let p = result.pull {
            for w in p.warnings { Terminal.warning(w) }
            for r in p.refs { if let v = r.verifiedBy { print(v) } }
            print(PullCommand.fetchedLine(p.progress))
        }
        switch result.outcome {
        case .upToDate(let refspec, let commit):
            print("No update available: \(refspec) is at \(commit), which is deployed")
            if check { throw ExitCode(77) }
        case .available(let refspec, let from, let to, let version):
            print("Update available: \(refspec) \(from.isEmpty ? "" : "\(from) -> ")\(to)" + (version.map { " (version \($0))" } ?? ""))
        case .pulled(let refspec, let commit):
            print("Pulled \(refspec) at \(commit); not deployed (--pull-only)")
        case .deployed(let d):
            DeployCommand.printResult(d, notAsDefault: false)
        }
    }
}

struct SwitchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch",
        abstract: "Pull another ref and deploy it; it becomes the origin that upgrade follows."
    )
    @OptionGroup var sysroot: SysrootOptions
    @OptionGroup var flags: PullFlags
    @Flag(name: .customLong("allow-downgrade"), help: "Accept a commit older than the deployed one.") var allowDowngrade = false
    @Option(name: .customLong("keys"), help: ArgumentHelp("Also trust these keys for the deploy; repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []
    @OptionGroup var staging: StageOptions
    @Argument(help: ArgumentHelp("REMOTE:REF (or a local REF).", valueName: "refspec")) var refspec: String

    func run() throws {
        var o = UpgradeOptions()
        o.stage = staging.staged
        o.lockFinalization = staging.lockFinalization
        o.allowDowngrade = allowDowngrade
        o.pull = flags.options()
        o.extraTrust = try loadTrust(keyFiles, revoked: nil)
        try UpgradeCommand.report(try sysroot.value.switchTo(try Refspec(parsing: refspec), o), check: false)
    }
}
