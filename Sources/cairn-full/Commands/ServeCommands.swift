import ArgumentParser
import CairnRepo
import CairnSystem
import Foundation
import Trust

// The serving side of updates: the summary clients read first, and static
// deltas. (The client side, remotes and pulls, shares the command group.)

// MARK: summary

struct SummaryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Regenerate, sign or show the repository's summary, the index clients pull from.",
        discussion: """
        --update regenerates 'summary' with libostree (every local ref with its commit, \
        'ostree.summary.last-modified', the static deltas in deltas/) and removes the old \
        'summary.sig'; each --sign-key then signs the new bytes into a new 'summary.sig' \
        (ed25519 in ostree's format: 'ostree.sign.ed25519' in an a{sv}). --expires adds \
        'ostree.summary.expires'; cairn's pull refuses a summary past it (ostree ignores it).

        --view shows the refs, dates, deltas and signatures; with --keys it also verifies \
        the signature and the expiry, and exits 1 with the reason when either fails.
        """
    )

    @OptionGroup var repo: RepoOptions

    @Flag(name: [.customShort("u"), .long], help: "Regenerate the summary (and sign it with --sign-key).")
    var update = false

    @Flag(name: [.customShort("v"), .long], help: "Show the summary.")
    var view = false

    @Option(name: .customLong("sign-key"), help: ArgumentHelp("With --update: ed25519 secret key file (ostree format) to sign the summary with; repeatable.", valueName: "secretfile"))
    var signKeys: [String] = []

    @Option(name: .long, help: ArgumentHelp("With --update: the summary expires this long after now: a whole number of seconds, minutes, hours or days (3600s, 90m, 12h, 30d).", valueName: "duration"))
    var expires: String?

    @Flag(name: .long, help: "With --view: print JSON (apiVersion cairn/v1).")
    var json = false

    @Option(name: .customLong("keys"), help: ArgumentHelp("With --view: file of trusted ed25519 public keys to verify summary.sig with; repeatable.", valueName: "pubfile"))
    var keyFiles: [String] = []

    @Option(name: .customLong("revoked-keys"), help: ArgumentHelp("With --view --keys: file of revoked ed25519 public keys; these never verify.", valueName: "file"))
    var revokedKeys: String?

    func validate() throws {
        guard update != view else { throw ValidationError("give exactly one of --update and --view") }
        if update {
            if json || !keyFiles.isEmpty || revokedKeys != nil { throw ValidationError("--json, --keys and --revoked-keys go with --view, not --update") }
            if let expires { _ = try Self.duration(expires) }
        } else {
            if !signKeys.isEmpty || expires != nil { throw ValidationError("--sign-key and --expires go with --update, not --view") }
            if revokedKeys != nil && keyFiles.isEmpty { throw ValidationError("--revoked-keys needs --keys") }
        }
    }

    /// Seconds in DURATION: digits (no sign, no leading zero) then one unit,
    /// s, m, h or d; at least one second, at most 100 years.
    static func duration(_ text: String) throws -> UInt64 {
        let refusal = ValidationError("--expires '\(text)' is not a duration: give a whole number and a unit, s, m, h or d (3600s, 90m, 12h, 30d)")
        let units: [Character: UInt64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        guard let unit = text.last, let scale = units[unit] else { throw refusal }
        let digits = text.dropLast()
        guard let first = digits.first, first != "0", digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              digits.count <= 12, let n = UInt64(digits) else { throw refusal }
        let seconds = n * scale
        guard seconds <= 36500 * 86400 else { throw ValidationError("--expires '\(text)' is longer than 100 years") }
        return seconds
    }

    func run() throws {
        if update { try runUpdate() } else { try runView() }
    }

    private func runUpdate() throws {
        let keys = try loadSecretKeys(signKeys)  // every key checked before anything is written
        let seconds = try expires.map(Self.duration)
        let repository = try repo.open()
        let result = try repository.updateSummary(signingKeys: keys, expiresIn: seconds)
        let s = result.summary
        print("Updated \(repository.path)/summary: \(s.refs.count) ref(s), \(s.staticDeltas.count) static delta(s), \(result.size) bytes")
        if let e = s.expires { print("Expires: \(Terminal.isoDate(e))") }
        for key in result.signedBy { print("Signed summary with ed25519 key \(key.base64)") }
        if result.signedBy.isEmpty {
            Terminal.note("the summary is not signed (no --sign-key); clients that verify summaries refuse it")
        }
    }

    private func runView() throws {
        var policy: TrustPolicy? = nil
        if !keyFiles.isEmpty {
            do { policy = try TrustPolicy(trustedKeyFiles: keyFiles, revokedKeyFile: revokedKeys) } catch {
                throw RepoError("key file \(error.description)", "")
            }
        }
        let repository = try repo.open()
        guard let (bytes, signatureBytes) = try repository.summary() else {
            throw RepoError("reading the summary of \(repository.path)", "there is none; make it with 'cairn summary --update'")
        }
        let summary: RepositorySummary
        do { summary = try RepositorySummary(serialized: bytes) } catch {
            // A summary its signature does not cover is refused for that first.
            if let policy, case .failure(let f) = policy.verify(summary: bytes, signatures: signatureBytes) {
                throw RepoError("summary of \(repository.path) is refused", f.description(for: .summary))
            }
            throw RepoError("reading \(repository.path)/summary", error.description)
        }
        var signatures = SignatureSummary()
        var signatureProblem: String? = nil
        do { signatures = try SignatureSummary(signatureFile: signatureBytes) } catch {
            signatureProblem = "summary.sig is corrupt: \(error)"
        }
        let now = UInt64(time(nil))
        let expired = summary.isExpired(now: now)

        var verdicts: [SignatureVerdict] = []
        var verification: Result<VerifiedSignature, VerificationFailure>? = nil
        if let policy {
            if case .success(let v) = policy.evaluate(summary: bytes, signatures: signatureBytes) { verdicts = v }
            verification = policy.verifiedSummary(bytes, signatures: signatureBytes, now: now).map(\.signature)
        }
        func verifiedLine(_ v: VerifiedSignature) -> String { "Good ed25519 signature #\(v.signatureIndex) by trusted key \(v.keyBase64)" }

        if json {
            var object: [String: Any] = [
                "apiVersion": "cairn/v1",
                "repository": repository.path,
                "size": bytes.count,
                "refs": summary.refs.map(Self.refJSON),
                "lastModified": summary.lastModified.map(Terminal.isoDate) as Any? ?? NSNull(),
                "expires": summary.expires.map(Terminal.isoDate) as Any? ?? NSNull(),
                "expired": expired,
                "mode": summary.mode as Any? ?? NSNull(),
                "collectionId": summary.collectionID as Any? ?? NSNull(),
                "staticDeltas": summary.staticDeltas.map { d -> [String: Any] in
                    ["name": d.name, "from": d.from as Any? ?? NSNull(), "to": d.to, "superblockSha256": hexString(d.superblockDigest)]
                },
                "metadataKeys": summary.metadata.keys,
                "signatures": [
                    "file": signatureBytes != nil,
                    "corrupt": signatureProblem != nil,
                    "ed25519Count": signatures.ed25519.count,
                    "ed25519": signatures.ed25519.map { ["base64": Base64.encode($0), "hex": hexString($0)] },
                    "gpgCount": signatures.gpg.count,
                ] as [String: Any],
                "verification": NSNull(),
                "verifiedBy": NSNull(),
            ]
            if !summary.collectionRefs.isEmpty {
                object["collectionRefs"] = summary.collectionRefs.map { ["collectionId": $0.collectionID, "refs": $0.refs.map(Self.refJSON)] as [String: Any] }
            }
            switch verification {
            case .success(let v): object["verification"] = "verified"; object["verifiedBy"] = verifiedLine(v)
            case .failure(let f): object["verification"] = "not verified: \(f.description(for: .summary))"
            case nil: break
            }
            try Terminal.printJSON(object)
        } else {
            print("Summary:       \(repository.path)/summary (\(bytes.count) bytes)")
            print("Last-Modified: \(summary.lastModified.map(Terminal.isoDate) ?? "not recorded")")
            print("Expires:       \(summary.expires.map { Terminal.isoDate($0) + (expired ? " (expired)" : "") } ?? "never")")
            if let mode = summary.mode { print("Mode:          \(mode)") }
            if let id = summary.collectionID { print("Collection:    \(id)") }
            print("Refs:          \(summary.refs.count)")
            summary.refs.forEach(Self.printRef)
            for (id, refs) in summary.collectionRefs {
                print("Refs of collection \(id): \(refs.count)")
                refs.forEach(Self.printRef)
            }
            print("Static deltas: \(summary.staticDeltas.count)")
            for d in summary.staticDeltas { print("  \(d.name) (superblock sha256 \(hexString(d.superblockDigest)))") }
            if let signatureProblem {
                print("Signatures:  \(signatureProblem)")
            } else {
                print(signatureLines(signatures, absent: "no summary.sig").joined(separator: "\n"))
            }
            for (i, v) in verdicts.enumerated() { print("ed25519 signature #\(i): \(v)") }
            if case .success(let v) = verification {
                print(verifiedLine(v))
                print("Summary verified" + (summary.expires == nil ? " (it does not expire)" : ", not expired"))
            }
        }
        if case .failure(let f) = verification {
            throw RepoError("summary of \(repository.path) is refused", f.description(for: .summary))
        }
    }

    static func printRef(_ ref: RepositorySummary.Ref) {
        print("  \(ref.name)")
        print("    Commit:    \(ref.checksum) (\(ref.commitSize) bytes)")
        if let t = ref.timestamp { print("    Timestamp: \(Terminal.isoDate(t))") }
        if let v = ref.version { print("    Version:   \(v)") }
    }

    static func refJSON(_ ref: RepositorySummary.Ref) -> [String: Any] {
        [
            "name": ref.name,
            "commit": ref.checksum,
            "commitSize": ref.commitSize,
            "timestamp": ref.timestamp.map(Terminal.isoDate) as Any? ?? NSNull(),
            "version": ref.version as Any? ?? NSNull(),
            "metadataKeys": ref.metadata.keys,
        ]
    }
}

// MARK: static-delta

struct StaticDeltaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "static-delta",
        abstract: "Generate, list and apply static deltas (libostree's delta engine).",
        discussion: "A delta holds what one commit adds to another (or a whole commit, from nothing) in a few files, which pulls fetch instead of single objects once 'cairn summary --update' lists it.",
        subcommands: [StaticDeltaGenerate.self, StaticDeltaList.self, StaticDeltaApplyOffline.self]
    )
}

struct StaticDeltaGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate a static delta into the repository's deltas/.",
        discussion: "From --from REV, or from nothing with --empty; by default from the parent of --to, as 'ostree static-delta generate'. Prints the delta's name and size."
    )

    @OptionGroup var repo: RepoOptions

    @Option(name: .long, help: ArgumentHelp("Ref or commit the delta starts from (default: the parent of --to).", valueName: "rev"))
    var from: String?

    @Flag(name: .long, help: "Start from nothing: the delta holds the whole commit.")
    var empty = false

    @Option(name: .long, help: ArgumentHelp("Ref or commit the delta leads to.", valueName: "rev"))
    var to: String

    @Flag(name: .customLong("inline"), help: "Put the parts inside the superblock: the delta is one file.")
    var inlineParts = false

    func validate() throws {
        if from != nil && empty { throw ValidationError("--from and --empty exclude each other: a delta starts from one commit or from nothing") }
    }

    func run() throws {
        let repository = try repo.open()
        let target = try repository.resolve(to)
        var source: String? = nil
        if let from {
            source = try repository.resolve(from)
        } else if !empty {
            guard let parent = try repository.commit(target).parent else {
                throw RepoError("generating a static delta to \(target)", "the commit has no parent; give --from REV or --empty")
            }
            source = parent
        }
        let delta = try repository.generateStaticDelta(from: source, to: target, inlineParts: inlineParts)
        print("From:  \(source ?? "empty")")
        print("To:    \(target)")
        print("Delta: \(delta.name)")
        print("Size:  \(delta.size) bytes in \(delta.files) file(s) (\(repository.path)/\(delta.relativePath))")
    }
}

struct StaticDeltaList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the repository's static deltas, one name a line (TO or FROM-TO).")

    @OptionGroup var repo: RepoOptions

    func run() throws {
        for name in try repo.open().staticDeltaNames() { print(name) }
    }
}

struct StaticDeltaApplyOffline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply-offline",
        abstract: "Apply a static delta from a folder or superblock file to the repository.",
        discussion: """
        PATH is a delta's folder (its superblock and part files, e.g. another repository's \
        deltas/XX/YYY) or its superblock file. The delta's source commit must be in the \
        repository. The target commit is written, complete, in one transaction; no ref is \
        set. A delta that fails to apply (corrupt part, wrong source) changes nothing.
        """
    )

    @OptionGroup var repo: RepoOptions

    @Argument(help: ArgumentHelp("Delta folder or superblock file.", valueName: "path"))
    var path: String

    func run() throws {
        let repository = try repo.open()
        let delta = try repository.applyStaticDeltaOffline(path)
        print("Applied static delta \(delta.name)")
        print("Commit: \(delta.to)")
    }
}
