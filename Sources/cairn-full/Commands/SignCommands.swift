import ArgumentParser
import CairnRepo
import CairnSystem
import Foundation
import Trust

// MARK: Shared helpers (also used by `cairn commit` and `cairn show`)

/// Loads and checks every secret key of the given ostree key files; a bad
/// file fails with its path and line.
func loadSecretKeys(_ paths: [String]) throws -> [Ed25519SecretKey] {
    var keys: [Ed25519SecretKey] = []
    for p in paths {
        do {
            keys += try KeyFile.loadSecretKeys(path: p)
        } catch {
            throw RepoError("secret key file \(error.description)", "")
        }
    }
    return keys
}

/// Lines for `cairn show` (and `cairn summary --view`): the signatures in
/// the detached metadata (`summary.sig`); `absent` says what is missing.
func signatureLines(_ s: SignatureSummary, absent: String = "no detached metadata") -> [String] {
    var lines: [String] = []
    guard s.hasDetachedMetadata else { return ["Signatures:  none (\(absent))"] }
    lines.append("Signatures:  \(s.ed25519.count) ed25519, \(s.gpg.count) GPG")
    for (i, sig) in s.ed25519.enumerated() {
        lines.append("  ed25519 #\(i): \(Base64.encode(sig))\(sig.count == 64 ? "" : " (\(sig.count) bytes, not 64)")")
    }
    for (i, issuer) in s.gpgIssuers.enumerated() {
        lines.append("  gpg #\(i): key \(issuer ?? "unknown")")
    }
    for w in s.wrongTypes { lines.append("  warning: \(w.key) has type \(w.type), not aay") }
    return lines
}

/// The `signatures` object of `cairn show --json`.
func signatureJSON(_ s: SignatureSummary) -> [String: Any] {
    [
        "detachedMetadata": s.hasDetachedMetadata,
        "detachedMetadataKeys": s.keys,
        "ed25519Count": s.ed25519.count,
        "ed25519": s.ed25519.map { ["base64": Base64.encode($0), "hex": hexString($0)] },
        "gpgCount": s.gpg.count,
        "gpgKeys": s.gpgIssuers.map { $0 ?? NSNull() as Any },
    ]
}

// MARK: keygen

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Generate an ed25519 key pair in ostree's key file format.",
        discussion: """
        Writes PREFIX.secret (mode 0600: base64 of the 32-byte seed and the 32-byte public key) \
        and PREFIX.pub (base64 of the public key). Refuses to overwrite either file; both \
        appear together or not at all.
        """
    )

    @Option(name: [.short, .long], help: ArgumentHelp("Path prefix of the key files.", valueName: "prefix"))
    var output: String

    func run() throws {
        let key: Ed25519SecretKey
        do { key = try Ed25519SecretKey.generate() } catch { throw RepoError("generating an ed25519 key", error.description) }
        let secretPath = output + ".secret", publicPath = output + ".pub"
        for p in [secretPath, publicPath] where access(p, F_OK) == 0 || errno != ENOENT {
            throw RepoError("writing key \(p)", "file exists; refusing to overwrite it")
        }
        // Write both to temporary files next to them, then link them into
        // place: link() never replaces an existing file.
        let secretTemp = try writeTemporary(near: secretPath, KeyFile.format([key]), mode: 0o600)
        defer { unlink(secretTemp) }
        let publicTemp = try writeTemporary(near: publicPath, KeyFile.format([key.publicKey]), mode: 0o644)
        defer { unlink(publicTemp) }
        guard link(secretTemp, secretPath) == 0 else {
            throw RepoError("writing key \(secretPath)", String(cString: strerror(errno)) + (errno == EEXIST ? "; refusing to overwrite it" : ""))
        }
        guard link(publicTemp, publicPath) == 0 else {
            let e = errno
            unlink(secretPath)
            throw RepoError("writing key \(publicPath)", String(cString: strerror(e)) + (e == EEXIST ? "; refusing to overwrite it" : ""))
        }
        syncDirectory(of: secretPath)
        if parentDirectory(of: publicPath) != parentDirectory(of: secretPath) {
            syncDirectory(of: publicPath)
        }
        print("Secret key: \(secretPath)")
        print("Public key: \(publicPath)")
        print(key.publicKey.base64)
    }

    /// Creates a temporary file in the directory of `path` with `text`,
    /// synced, and returns its path.
    private func writeTemporary(near path: String, _ text: String, mode: mode_t) throws -> String {
        var template = Array((path + ".tmp-XXXXXX").utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw RepoError("writing key \(path)", String(cString: strerror(errno))) }
        let temp = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let file = FileDescriptor(rawValue: fd)
        do {
            defer { file.close() }
            guard fchmod(fd, mode) == 0 else { throw SystemError.current("chmod", path: Array(temp.utf8)) }
            try file.write(text)
            try file.sync()
        } catch {
            unlink(temp)
            throw RepoError("writing key \(path)", String(describing: error))
        }
        return temp
    }

    private func syncDirectory(of path: String) {
        let dir = parentDirectory(of: path)
        try? FileSystem.syncDirectory(dir.isEmpty ? "." : dir)
    }
}

// MARK: sign

struct SignCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign a commit: ed25519 (ostree.sign.ed25519) or OpenPGP (ostree.gpgsigs).",
        discussion: """
        The signature covers the exact bytes of the commit object and is appended to the \
        commit's detached metadata; existing entries and signatures are kept. A key that \
        already signed the commit is not added again.
        """
    )

    @OptionGroup var repo: RepoOptions

    @Option(name: .customLong("key"), help: ArgumentHelp("ed25519 secret key file (ostree format, e.g. from 'cairn keygen'); repeatable.", valueName: "secretfile"))
    var keyFiles: [String] = []

    @Option(name: .customLong("gpg-key"), help: ArgumentHelp("Sign with this OpenPGP key (id or fingerprint) through libostree/gpgme; repeatable.", valueName: "keyid"))
    var gpgKeys: [String] = []

    @Option(name: .customLong("gpg-homedir"), help: ArgumentHelp("GnuPG home holding the OpenPGP secret key (default: ~/.gnupg).", valueName: "dir"))
    var gpgHomedir: String?

    @Argument(help: ArgumentHelp("Ref or commit to sign.", valueName: "rev"))
    var rev: String

    func validate() throws {
        if keyFiles.isEmpty && gpgKeys.isEmpty { throw ValidationError("give --key SECRETFILE or --gpg-key KEYID") }
        if gpgHomedir != nil && gpgKeys.isEmpty { throw ValidationError("--gpg-homedir needs --gpg-key") }
    }

    func run() throws {
        let keys = try loadSecretKeys(keyFiles)
        let repository = try repo.open()
        let checksum = try repository.resolve(rev)
        for (key, added) in try repository.addEd25519Signatures(commit: checksum, keys: keys) {
            if added {
                print("Signed commit \(checksum) with ed25519 key \(key.base64)")
            } else {
                Terminal.note("commit \(checksum) is already signed by ed25519 key \(key.base64); not adding it again")
            }
        }
        for id in gpgKeys {
            try repository.gpgSign(checksum, keyID: id, homedir: gpgHomedir)
            print("Signed commit \(checksum) with GPG key \(id)")
        }
    }
}

// MARK: verify

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Verify a commit's signatures against trusted keys.",
        discussion: """
        Exits 0 only if a signature verifies with a trusted key that is not revoked, and \
        prints which key; otherwise exits 1 with the reason. ed25519 checks read the raw \
        commit object and .commitmeta; OpenPGP checks go through libostree (gpgme) with \
        the keyring files (*.gpg) in --gpg-homedir as trusted keys, as 'ostree show \
        --gpg-homedir' does (export public keys there: gpg --export > DIR/trusted.gpg).
        """
    )

    @OptionGroup var repo: RepoOptions

    @Option(name: .customLong("keys"), help: ArgumentHelp("File of trusted ed25519 public keys (one base64 key per line); repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []

    @Option(name: .customLong("revoked-keys"), help: ArgumentHelp("File of revoked ed25519 public keys; these never verify.", valueName: "file"))
    var revokedKeys: String?

    @Option(name: .customLong("gpg-homedir"), help: ArgumentHelp("Check OpenPGP signatures with the keyrings (*.gpg) in this directory.", valueName: "dir"))
    var gpgHomedir: String?

    @Argument(help: ArgumentHelp("Ref or commit to verify.", valueName: "rev"))
    var rev: String

    func validate() throws {
        if keyFiles.isEmpty && gpgHomedir == nil { throw ValidationError("give --keys PUBFILE (ed25519) or --gpg-homedir DIR (OpenPGP)") }
        if revokedKeys != nil && keyFiles.isEmpty { throw ValidationError("--revoked-keys needs --keys") }
    }

    func run() throws {
        var policy: TrustPolicy? = nil
        if !keyFiles.isEmpty {
            do {
                policy = try TrustPolicy(trustedKeyFiles: keyFiles, revokedKeyFile: revokedKeys)
            } catch {
                throw RepoError("key file \(error.description)", "")
            }
        }
        let repository = try repo.open()
        let checksum = try repository.resolve(rev)
        var verified: [String] = []
        var reasons: [String] = []
        if let policy {
            // Every signature's verdict, then the one decision.
            if case .success(let verdicts) = try repository.ed25519Verdicts(checksum, policy: policy) {
                for (i, v) in verdicts.enumerated() { print("ed25519 signature #\(i): \(v)") }
            }
            switch repository.verifyEd25519(checksum, policy: policy) {
            case .success(let v): verified.append(v.description)
            case .failure(let refusal): reasons.append(refusal.message)
            }
        }
        if let dir = gpgHomedir {
            switch try verifyGPG(repository, checksum, dir) {
            case .success(let line): verified.append(line)
            case .failure(let refusal): reasons.append(refusal.message)
            }
        }
        guard verified.isEmpty else {
            verified.forEach { print($0) }
            print("Commit \(checksum) verified")
            return
        }
        throw RepoError("commit \(checksum) is not verified", reasons.joined(separator: "; "))
    }

    private func verifyGPG(_ r: Repository, _ checksum: String, _ dir: String) throws -> Result<String, CommitRefusal> {
        let summary = try r.signatures(checksum)
        guard !summary.gpg.isEmpty else { return .failure(CommitRefusal("commit has no GPG signature (\(MetadataKey.gpgSignatures))")) }
        let results = try r.gpgVerify(checksum, keyringDirectory: dir)
        if let good = results.first(where: { $0.valid && !$0.keyRevoked }) {
            let who = good.userEmail.isEmpty ? good.userName : "\(good.userName) <\(good.userEmail)>"
            return .success("Good GPG signature from \"\(who)\" (key \(good.fingerprint))")
        }
        let why = results.map { s -> String in
            if s.keyMissing { return "GPG key \(s.fingerprint) is not in the keyrings (*.gpg) of \(dir)" }
            if s.keyRevoked { return "GPG key \(s.fingerprint) is revoked" }
            if s.keyExpired { return "GPG key \(s.fingerprint) has expired" }
            if s.signatureExpired { return "GPG signature by \(s.fingerprint) has expired" }
            return "bad GPG signature by key \(s.fingerprint)"
        }
        return .failure(CommitRefusal(why.isEmpty ? "no GPG signature could be checked" : why.joined(separator: "; ")))
    }
}
