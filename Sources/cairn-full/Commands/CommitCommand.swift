import ArgumentParser
import CairnRepo
import CairnSystem
import Foundation

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Create an ostree repository.")

    @OptionGroup var repo: RepoOptions

    @Option(help: ArgumentHelp("Repository mode: bare, bare-user, bare-user-only or archive.", valueName: "mode"))
    var mode: String = "bare"

    func validate() throws {
        guard RepoMode(rawValue: mode) != nil else {
            throw ValidationError("unknown repository mode '\(mode)' (bare, bare-user, bare-user-only, archive)")
        }
    }

    func run() throws {
        // Creating a repository is never a default's doing.
        guard let path = repo.named else { throw ValidationError("give --repo PATH (or set CAIRN_REPO): init creates a repository only where it is told to") }
        let parent = parentDirectory(of: path)
        if !parent.isEmpty { try? FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
        let r = try Repository.create(path: path, mode: RepoMode(rawValue: mode)!)
        print("Initialised \(r.mode.rawValue) repository at \(r.path)")
    }
}

/// Parses KEY=VALUE.
private func keyValue(_ text: String, option: String) throws -> (String, String) {
    guard let eq = text.firstIndex(of: "="), eq != text.startIndex else {
        throw ValidationError("\(option) expects KEY=VALUE, got '\(text)'")
    }
    return (String(text[..<eq]), String(text[text.index(after: eq)...]))
}

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit",
        abstract: "Commit a directory, tar archive or OCI image to a branch.",
        discussion: """
        SOURCE is a directory or a tar archive (plain, gzip, xz or zstd); or, with \
        --from-oci, an OCI image: oci:DIR[:TAG] (an image layout), oci-archive:FILE[:TAG] \
        or docker-archive:FILE[:TAG] (as podman save writes), its layers applied in order \
        and every blob checked against its digest. The commit is bound to its branch \
        (ostree.ref-binding, as ostree commit records it) unless --no-bindings. A tree with /etc and no /usr/etc has \
        /etc committed as /usr/etc, as ostree expects of OS trees. The new commit \
        checksum is the last line of output.
        """
    )

    @OptionGroup var repo: RepoOptions

    @Option(name: [.short, .long], help: ArgumentHelp("Branch (ref) to commit to.", valueName: "ref"))
    var branch: String

    @Option(name: [.short, .long], help: "One-line subject.")
    var subject: String = ""

    @Option(name: [.customShort("m"), .long], help: "Full description.")
    var body: String = ""

    @Option(name: .customLong("add-metadata"), help: ArgumentHelp("Add metadata KEY=VALUE, VALUE in GVariant text format (e.g. version='\"1.0\"'); repeatable.", valueName: "key=value"))
    var addMetadata: [String] = []

    @Option(name: .customLong("add-metadata-string"), help: ArgumentHelp("Add metadata KEY=VALUE with VALUE a plain string; repeatable.", valueName: "key=value"))
    var addMetadataString: [String] = []

    @Option(name: .customLong("owner-uid"), help: ArgumentHelp("Set the owner of every file to this user id.", valueName: "uid"))
    var ownerUID: UInt32?

    @Option(name: .customLong("owner-gid"), help: ArgumentHelp("Set the group of every file to this group id.", valueName: "gid"))
    var ownerGID: UInt32?

    @Flag(name: .customLong("canonical-permissions"), help: "Canonicalise permissions as bare-user does for hardlinked files (uid/gid 0, no setuid bits, no group/other write).")
    var canonicalPermissions = false

    @Flag(name: .customLong("no-xattrs"), help: "Do not import extended attributes.")
    var noXattrs = false

    @Option(help: ArgumentHelp("Parent commit, or 'none' (default: the branch's current commit).", valueName: "rev"))
    var parent: String?

    @Flag(name: .customLong("keep-etc"), help: "Keep a top-level /etc in place instead of committing it as /usr/etc.")
    var keepEtc = false

    @Flag(name: .customLong("skip-special"), help: "Leave out device nodes, fifos and sockets (with a warning) instead of failing.")
    var skipSpecial = false

    @Flag(name: .customLong("no-composefs"), help: "Do not record the composefs image digest (ostree.composefs.digest.v0) in the commit.")
    var noComposefs = false

    @Flag(name: .customLong("no-bindings"), help: "Do not record the ref binding (ostree.ref-binding), which makes pulls refuse the commit under another ref name.")
    var noBindings = false

    @Option(name: .customLong("bind-ref"), help: ArgumentHelp("Also bind the commit to this ref; repeatable.", valueName: "ref"))
    var bindRefs: [String] = []

    @Option(help: ArgumentHelp("Commit timestamp in seconds since the epoch (default: now).", valueName: "seconds"))
    var timestamp: UInt64?

    @Option(name: .customLong("sign-key"), help: ArgumentHelp("Sign the new commit with this ed25519 secret key file (checked before committing); repeatable.", valueName: "secretfile"))
    var signKeys: [String] = []

    @Option(name: .customLong("gpg-sign"), help: ArgumentHelp("Sign the new commit with this OpenPGP key id; repeatable.", valueName: "keyid"))
    var gpgSign: [String] = []

    @Option(name: .customLong("gpg-homedir"), help: ArgumentHelp("GnuPG home for --gpg-sign (default: ~/.gnupg).", valueName: "dir"))
    var gpgHomedir: String?

    @Option(name: .customLong("from-oci"), help: ArgumentHelp("Commit the tree of this OCI image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG].", valueName: "image"))
    var fromOCI: String?

    @Argument(help: ArgumentHelp("Directory or tar archive to commit.", valueName: "source"))
    var source: String?

    func validate() throws {
        switch (source, fromOCI) {
        case (nil, nil): throw ValidationError("give a directory or tar archive to commit, or --from-oci IMAGE")
        case (_?, _?): throw ValidationError("give either a directory or tar archive, or --from-oci IMAGE, not both")
        default: break
        }
        for m in addMetadata { _ = try keyValue(m, option: "--add-metadata") }
        for m in addMetadataString { _ = try keyValue(m, option: "--add-metadata-string") }
        if noBindings && !bindRefs.isEmpty { throw ValidationError("--bind-ref and --no-bindings contradict each other") }
        do {
            try Repository.validateRef(branch)
            for ref in bindRefs { try Repository.validateRef(ref) }
        } catch let error as RepoError {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        let signingKeys = try loadSecretKeys(signKeys)  // a bad key fails before anything is written
        if gpgHomedir != nil && gpgSign.isEmpty { throw ValidationError("--gpg-homedir needs --gpg-sign") }
        let repository = try repo.open()
        for id in gpgSign { try repository.checkGPGSigningKey(id, homedir: gpgHomedir) }  // before anything is written
        var options = CommitOptions(branch: branch)
        options.subject = subject
        options.body = body
        options.metadata = try addMetadataString.map { try keyValue($0, option: "--add-metadata-string") }.map { ($0.0, .string($0.1)) }
            + addMetadata.map { try keyValue($0, option: "--add-metadata") }.map { ($0.0, .gvariantText($0.1)) }
        options.ownerUID = ownerUID
        options.ownerGID = ownerGID
        options.canonicalPermissions = canonicalPermissions
        options.noXattrs = noXattrs
        options.keepEtc = keepEtc
        options.skipSpecial = skipSpecial
        options.timestamp = timestamp
        options.composefsDigest = !noComposefs
        options.refBinding = !noBindings
        options.bindRefs = bindRefs
        switch parent {
        case nil: options.parent = .branchHead
        case "none"?: options.parent = .none
        case let rev?: options.parent = .rev(rev)
        }
        let progress = Terminal.stderrIsTerminal ? ProgressLine() : nil
        options.notice = { message in
            progress?.finish()  // a notice gets its own line, not the middle of the progress line
            Terminal.note(message)
        }
        if let progress {
            options.progress = { p in progress.update("committing: \(p.entries) entries, \(formatBytes(p.bytes))") }
        }
        let gpgHome = gpgHomedir, gpgKeys = gpgSign
        var signedWith: [String] = []
        if !signingKeys.isEmpty || !gpgKeys.isEmpty { options.sign = { repository, checksum in
            for (key, added) in try repository.addEd25519Signatures(commit: checksum, keys: signingKeys) where added {
                signedWith.append("ed25519 key \(key.base64)")
            }
            for id in gpgKeys {
                try repository.gpgSign(checksum, keyID: id, homedir: gpgHome)
                signedWith.append("GPG key \(id)")
            }
        } }
        let result = try fromOCI.map { try repository.commit(oci: $0, options: options) }
            ?? repository.commit(source: source!, options: options)
        progress?.finish()
        if result.skippedSpecialCount > 0 {
            Terminal.warning("left out \(result.skippedSpecialCount) device node(s), fifo(s) or socket(s), e.g. \(result.skippedSpecial.first!)")
        }
        for key in signedWith { Terminal.note("signed with \(key)") }
        print(result.checksum)
    }
}

/// A single self-overwriting status line on a terminal's stderr.
final class ProgressLine {
    func update(_ text: String) {
        Terminal.stderr("\r\u{1b}[K\(text)")
    }

    func finish() {
        Terminal.stderr("\r\u{1b}[K")
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}
