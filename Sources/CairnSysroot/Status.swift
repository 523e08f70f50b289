import CairnSystem
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// What `cairn status` shows: the deployments in boot order with their
/// commits' versions, composefs digests and signatures, and the staged,
/// finalize-failure and fallback records. Read from the sysroot's files
/// (loose commit objects included) without libostree or Foundation, so
/// that the front end answers in milliseconds.
public struct StatusReport {
    public struct Row {
        public var deployment: Deployment
        public var booted: Bool
        /// The commit's metadata; nil when its object is missing or unreadable.
        public var commit: Commit?
        /// Whether the deployment folder holds its composefs image.
        public var hasImage: Bool
        public var ed25519Signatures = 0
        public var gpgSignatures = 0
        /// Nil when no key is trusted (nothing to check).
        public var verification: Result<CommitVerification, CommitRefusal>?
    }

    public var sysroot: String
    public var state: SysrootState
    /// What systemd-boot says it booted.
    public var loaderEntrySelected: String?
    public var rows: [Row]
    public var staged: StagedDeployment?
    public var stagedVersion: String?
    public var finalizeFailure: FinalizeFailure?
    public var fallback: FallbackRecord?
    /// Records that could not be read: reported, and the rest shown.
    public var warnings: [String] = []
}

extension Sysroot {
    /// The exact bytes of a loose metadata object of the sysroot's
    /// repository (what signatures cover), nil when it does not exist. The
    /// repository is a bare one of ostree's layout: objects are loose.
    package func looseObject(_ checksum: String, _ ext: String) throws -> [UInt8]? {
        guard OstreeObject.isChecksum(checksum) else { throw DeployError("reading commit '\(checksum)'", "not a commit checksum") }
        let relative = OstreeObject.loosePath(checksum, ext)
        do {
            let repo = try FileDescriptor.open(repositoryPath, O_RDONLY | O_DIRECTORY)
            defer { repo.close() }
            let fd = try FileDescriptor.open(relative, O_RDONLY | O_NOFOLLOW, relativeTo: repo)
            return try fd.closeAfter { try fd.readAll(limit: 64 << 20) }
        } catch let e as SystemError {
            if e.errno == ENOENT { return nil }
            throw DeployError("reading \(repositoryPath)/\(relative)", e.message)
        }
    }

    /// The keys the sysroot's repository config trusts and revokes.
    public func repositoryTrust() throws -> RepositoryTrust {
        try RepositoryTrust(configValue: { try repositoryConfigValue(group: RepositoryTrust.group, key: $0) }, file: repositoryPath + "/config")
    }

    /// The status, with `extraTrustedKeys` trusted beside the sysroot's own keys.
    public func statusReport(extraTrustedKeys: [Ed25519PublicKey] = []) throws -> StatusReport {
        let state = try loadState()
        let trust = try repositoryTrust()
        let policy = TrustPolicy(trustedKeys: trust.trusted + extraTrustedKeys, revokedKeys: trust.revoked)
        let selected = state.bootLoader == .systemdBoot && state.bootedIndex != nil ? Sysroot.loaderEntrySelected() : nil
        var rows: [StatusReport.Row] = []
        for (i, d) in state.deployments.enumerated() {
            let commitBytes = Result { try looseObject(d.checksum, "commit") }
            let meta = (try? looseObject(d.checksum, "commitmeta")) ?? nil
            var row = StatusReport.Row(deployment: d, booted: state.bootedIndex == i,
                                       commit: ((try? commitBytes.get()) ?? nil).flatMap { try? Commit(serialized: $0) },
                                       hasImage: FileSystem.exists(Array((at(d.relativePath) + "/.ostree.cfs").utf8)))
            if let meta, let dict = try? GVariant(type: .vardict, data: meta) {
                func count(_ key: String) -> Int {
                    guard let v = dict.lookup(key), v.type == .byteArrayArray else { return 0 }
                    return v.childCount
                }
                row.ed25519Signatures = count(ed25519SignatureKey)
                row.gpgSignatures = count(gpgSignatureKey)
            }
            if !policy.trustedKeys.isEmpty {
                switch commitBytes {
                case .success(let bytes?): row.verification = policy.verifyCommitObject(d.checksum, commit: bytes, detachedMetadata: meta)
                case .success(nil): row.verification = .failure(CommitRefusal("commit \(d.checksum) is not in \(repositoryPath)"))
                case .failure(let e): row.verification = .failure(CommitRefusal("\(e)"))
                }
            }
            rows.append(row)
        }
        var report = StatusReport(sysroot: path, state: state, loaderEntrySelected: selected, rows: rows)
        func record<T>(_ read: () throws -> T?) -> T? {
            do { return try read() } catch { report.warnings.append("\(error)"); return nil }
        }
        // A record whose deployment is in the boot set is the leftover of a finalization cut short after its switch.
        report.staged = record(stagedDeployment).flatMap { state.lists($0.deployment) ? nil : $0 }
        report.stagedVersion = report.staged.flatMap { st in
            ((try? looseObject(st.deployment.checksum, "commit")) ?? nil).flatMap { try? Commit(serialized: $0) }?.version
        }
        report.finalizeFailure = record(finalizeFailure)
        // A fallback is news while the deployment it booted is running.
        let booted = state.bootedIndex.map { state.deployments[$0] }
        report.fallback = record(fallbackRecord).flatMap { f in booted.map { $0.stateroot == f.bootedStateroot && $0.name == f.bootedName } == true ? f : nil }
        return report
    }
}

extension StatusReport {
    /// The cairn/v1 schema documented in the README.
    public func json() -> JSONValue {
        let rowsJSON: [JSONValue] = rows.enumerated().map { i, r in
            let d = r.deployment
            var verifiedBy = JSONValue.null, verification = JSONValue.null
            switch r.verification {
            case .success(let v)?: verifiedBy = .string(v.description); verification = "verified"
            case .failure(let refusal)?: verification = .string("not verified: \(refusal.message)")
            case nil: break
            }
            return .object([
                "index": .int(i), "stateroot": .string(d.stateroot), "checksum": .string(d.checksum), "serial": .int(d.serial),
                "booted": .bool(r.booted), "default": .bool(i == 0), "rollback": .bool(i == 1), "pinned": .bool(d.pinned),
                "version": JSONValue(r.commit?.version), "refspec": JSONValue(d.refspec),
                "composefsDigest": JSONValue(composefsDigestText(r)),
                "signatures": .object(["ed25519": .int(r.ed25519Signatures), "gpg": .int(r.gpgSignatures)]),
                "verifiedBy": verifiedBy, "verification": verification,
                "kernelArguments": .array(d.kernelArguments.map { .string($0) }),
                "bootChecksum": .string(d.bootChecksum), "bootEntry": JSONValue(d.entryFile),
                "bootCounter": d.bootCounter.map { .object(["triesLeft": .int($0.left), "triesDone": .int($0.done)]) } ?? .null,
                "probation": .bool(d.bootCounter.map { $0.left > 0 } ?? false),
                "failedBoot": .bool(d.bootCounter.map { $0.left == 0 } ?? false),
                "path": .string(sysrootPath(d.relativePath)),
            ])
        }
        let stagedJSON: JSONValue = staged.map { st in
            .object(["stateroot": .string(st.deployment.stateroot), "checksum": .string(st.deployment.checksum), "serial": .int(st.deployment.serial),
                     "version": JSONValue(stagedVersion), "locked": .bool(st.locked), "stale": .bool(st.stale),
                     "time": .int(st.time), "path": .string(sysrootPath(st.deployment.relativePath))])
        } ?? .null
        let failureJSON: JSONValue = finalizeFailure.map { f in
            .object(["stateroot": .string(f.stateroot), "deployment": .string(f.deploymentName), "error": .string(f.error),
                     "time": .int(f.time), "earlierBoot": .bool(f.earlierBoot)])
        } ?? .null
        let fallbackJSON: JSONValue = fallback.map { f in
            .object(["failed": .object(["stateroot": .string(f.failedStateroot), "deployment": .string(f.failedName), "version": JSONValue(f.failedVersion)]),
                     "boots": .int(f.boots),
                     "booted": .object(["stateroot": .string(f.bootedStateroot), "deployment": .string(f.bootedName)]),
                     "time": .int(f.time), "demoted": .bool(f.demoted),
                     "reachedHealthChecks": .bool(f.health != nil),
                     "checks": .array((f.health?.checks ?? []).map { .object(["name": .string($0.name), "passed": .bool($0.passed), "result": .string($0.result), "output": .string($0.output)]) })])
        } ?? .null
        return .object(["apiVersion": "cairn/v1", "sysroot": .string(sysroot),
                        "bootVersion": state.bootVersion.map { .int($0) } ?? .null,
                        "bootLoader": .string(state.bootLoader.rawValue), "esp": JSONValue(state.esp),
                        "loaderEntrySelected": JSONValue(loaderEntrySelected), "deployments": .array(rowsJSON),
                        "staged": stagedJSON, "finalizeFailure": failureJSON, "fallback": fallbackJSON])
    }

    /// "none" without an image; "unrecorded" when the commit records no digest.
    func composefsDigestText(_ r: Row) -> String? {
        r.hasImage ? r.commit?.composefsDigest.flatMap { $0.count == 32 ? hexString($0) : nil } ?? "unrecorded" : nil
    }

    func sysrootPath(_ relative: String) -> String { (sysroot == "/" ? "" : sysroot) + "/" + relative }

    /// What a person reads.
    public func text() -> String {
        var out = ""
        func line(_ s: String) { out += s + "\n" }
        if let esp = state.esp { line("Boot loader: systemd-boot, entries in \(esp)/loader/entries" + (loaderEntrySelected.map { "; booted entry \($0)" } ?? "")) }
        if let f = fallback {
            line(Self.shown(Substring("Automatic rollback: \(f.failedStateroot) \(f.failedName)" + (f.failedVersion.map { " (version \($0))" } ?? "")
                 + " failed \(f.boots) boot(s), so systemd-boot booted \(f.bootedStateroot) \(f.bootedName) instead, on \(Self.date(f.time))"
                 + (f.demoted ? "; it is the default now" : "; the failed deployment stays the default ([cairn] keep-failed-default)"))))
            if let h = f.health {
                for c in h.checks where !c.passed {
                    line("    check \(Self.shown(Substring(c.name))) failed (\(Self.shown(Substring(c.result))))")
                    for l in c.output.split(separator: "\n").prefix(20) { line("      \(Self.shown(l))") }
                }
            } else {
                line("    no boot of it reached the health checks (its initramfs or early boot failed)")
            }
        }
        if let f = finalizeFailure {
            line(Self.shown(Substring("Finalization failed: the staged deployment \(f.stateroot) \(f.deploymentName) was not made the default (\(Self.date(f.time))); the previous default stayed: \(f.error)")))
        }
        if let st = staged {
            let when = st.stale ? "staged in an earlier boot that ended without finalizing it; the next deploy or cleanup removes it"
                : st.locked ? "locked: run 'cairn finalize' to make it the default" : "becomes the default when the system shuts down"
            line("Staged: \(st.deployment.stateroot) \(st.deployment.name) (\(when))")
        }
        if rows.isEmpty {
            line("No deployments.")
            return out
        }
        for (i, r) in rows.enumerated() {
            let d = r.deployment
            var marks: [String] = []
            if r.booted { marks.append("booted") }
            if i == 0 { marks.append("default") }
            if i == 1 { marks.append("rollback") }
            if d.pinned { marks.append("pinned") }
            if let c = d.bootCounter { marks.append(c.left > 0 ? "on probation: \(c.left) tries left" : "failed: no tries left") }
            line("\(r.booted ? "*" : " ") \(i): \(d.stateroot) \(d.checksum).\(d.serial)" + (marks.isEmpty ? "" : " (\(marks.joined(separator: ", ")))"))
            if let v = r.commit?.version { line("    Version: \(v)") }
            if let ref = d.refspec { line("    Refspec: \(ref)") }
            line("    Composefs: \(composefsDigestText(r) ?? "none")")
            line("    Signatures: ed25519 \(r.ed25519Signatures), gpg \(r.gpgSignatures)")
            switch r.verification {
            case .success(let v)?: line("    Trust: \(v.description)")
            case .failure(let refusal)?: line("    Trust: not verified: \(refusal.message)")
            case nil: break
            }
            line("    Kernel arguments: \(d.kernelArguments.joined(separator: " "))")
        }
        return out
    }

    /// Text from a state record or a check's output, for a terminal: the
    /// records sit on the disk outside the signed image, so control
    /// characters (escape sequences among them) are shown as \u{..}, not sent.
    public static func shown(_ text: Substring) -> String {
        String(text.unicodeScalars.map { u -> String in
            u.value < 0x20 && u != "\t" || u.value == 0x7f || (0x80..<0xa0).contains(u.value) ? "\\u{\(String(u.value, radix: 16))}" : String(u)
        }.joined())
    }

    /// Local time, as `date` shows it: "2026-12-03 11:52:00 UTC".
    public static func date(_ time: Int) -> String {
        var t = time_t(time)
        var parts = tm()
        guard localtime_r(&t, &parts) != nil else { return String(time) }
        var buffer = [CChar](repeating: 0, count: 64)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S %Z", &parts)
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The release, which `cairn --version` prints (the front end and cairn-full alike).
public let cairnVersion = "0.3.0"
