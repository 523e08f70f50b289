import ArgumentParser
import CairnDeploy
import CairnSysroot
import CairnRepo
import CairnSystem
import Trust

/// A repository: `--repo`, else the sysroot's (`--sysroot`, default /).
struct RepositoryTarget: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The physical root whose repository (ostree/repo) to use (default: /sysroot on a booted system, else /).", valueName: "path"))
    var sysroot: String?

    @Option(name: .long, help: ArgumentHelp("A repository instead of a sysroot's.", valueName: "path"))
    var repo: String?

    func validate() throws {
        if sysroot != nil && repo != nil { throw ValidationError("give --sysroot or --repo, not both") }
    }

    func open() throws -> Repository {
        if let repo { return try Repository.open(path: repo) }
        let s = Sysroot(path: sysroot ?? Sysroot.defaultPath())
        try s.ensureWritable()
        return try s.repository()
    }
}

struct TrustCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trust",
        abstract: "The ed25519 keys a sysroot (or repository) trusts: deploy refuses commits they did not sign.",
        discussion: """
        The keys are stored in the repository's config ([cairn] trusted-ed25519-keys and \
        revoked-ed25519-keys). Once a key is trusted, 'cairn deploy' refuses any commit \
        without a good signature by a trusted key that is not revoked, and 'cairn status' \
        says for each deployment whether it verifies. The initramfs checks signatures on \
        its own, with the keys of its prepare-root.conf (keypath).
        """,
        subcommands: [TrustAdd.self, TrustRemove.self, TrustList.self]
    )
}

struct TrustAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Trust (or, with --revoked, revoke) every key of public key files.")
    @OptionGroup var target: RepositoryTarget
    @Flag(help: "Add the keys to the revoked list instead: they never verify, even if trusted.") var revoked = false
    @Argument(help: ArgumentHelp("ed25519 public key files (one base64 key per line, as 'cairn keygen' writes).", valueName: "pubfile"))
    var files: [String]

    func run() throws {
        let keys = try loadTrust(files, revoked: nil).trusted
        let repository = try target.open()
        var trust = try repository.trust()
        var added: [Ed25519PublicKey] = []
        for key in keys where !(revoked ? trust.revoked : trust.trusted).contains(key) {
            if revoked { trust.revoked.append(key) } else { trust.trusted.append(key) }
            added.append(key)
        }
        if !added.isEmpty { try repository.setTrust(trust) }
        for key in keys {
            let done = added.contains(key)
            print("\(revoked ? "Revoked" : "Trusted") key \(key.base64)" + (done ? "" : " (already)"))
        }
        if !added.isEmpty { print("Updated \(repository.path)/config") }
    }
}

struct TrustRemove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Stop trusting (or un-revoke) keys, given as base64 or as key files.")
    @OptionGroup var target: RepositoryTarget
    @Argument(help: ArgumentHelp("Base64 public keys or public key files.", valueName: "key|pubfile"))
    var keys: [String]

    func run() throws {
        var wanted: [Ed25519PublicKey] = []
        for k in keys {
            if let bytes = Base64.decode(k), let key = Ed25519PublicKey(bytes: bytes) { wanted.append(key) } else {
                wanted += try loadTrust([k], revoked: nil).trusted
            }
        }
        let repository = try target.open()
        var trust = try repository.trust()
        let before = trust
        trust.trusted.removeAll { wanted.contains($0) }
        trust.revoked.removeAll { wanted.contains($0) }
        guard trust != before else { throw RepoError("removing keys from \(repository.path)/config", "none of them is trusted or revoked there") }
        try repository.setTrust(trust)
        for key in wanted where before.trusted.contains(key) || before.revoked.contains(key) { print("Removed key \(key.base64)") }
        if trust.trusted.isEmpty { Terminal.warning("no key is trusted any more: deploy verifies no signature") }
        print("Updated \(repository.path)/config")
    }
}

struct TrustList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the trusted and revoked keys.")
    @OptionGroup var target: RepositoryTarget
    @Flag(help: "Print JSON: {\"trusted\": [...], \"revoked\": [...]}.") var json = false

    func run() throws {
        let trust = try target.open().trust()
        if json {
            try Terminal.printJSON(["trusted": trust.trusted.map(\.base64), "revoked": trust.revoked.map(\.base64)])
            return
        }
        if trust.trusted.isEmpty { print("No trusted keys: deploy verifies no signature.") }
        for k in trust.trusted { print("trusted \(k.base64)\(trust.revoked.contains(k) ? " (revoked)" : "")") }
        for k in trust.revoked where !trust.trusted.contains(k) { print("revoked \(k.base64)") }
    }
}
