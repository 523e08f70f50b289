import CairnRepo
import CairnSysroot
import CairnSystem
import Composefs
import PrepareRoot
import Trust
#if canImport(Glibc)
import Glibc
#endif

public struct DeployOptions {
    public var rev: String
    public var stateroot: String?
    /// `--karg KEY=VALUE`: replaces arguments with the same key.
    public var kernelArguments: [String] = []
    /// `--karg-append ARG`.
    public var appendedKernelArguments: [String] = []
    public var notAsDefault = false
    /// Stage: prepare now, switch the boot entries at shutdown. nil: the
    /// sysroot's `[cairn] stage` setting on the running system, else no.
    public var stage: Bool?
    /// With `stage`: finalize only when `cairn finalize` says so.
    public var lockFinalization = false
    /// Keys trusted for this deploy (`--keys`) on top of the repository's
    /// configured trust (`cairn trust`).
    public var extraTrust = RepositoryTrust()

    public init(rev: String) { self.rev = rev }
}

public struct DeployResult: Sendable {
    public var deployment: Deployment
    public var etc: EtcChanges?
    public var removed: [Deployment]
    public var signedBy: String?
    public var composefsDigest: [UInt8]
    /// Entries of the commit's /var copied into the stateroot's empty /var
    /// (its first deployment); nil when /var was left alone.
    public var populatedVar: Int?
    /// What the user must hear about, such as signed boot without trusted keys.
    public var warnings: [String] = []
    /// Prepared and staged: the boot entries change at shutdown.
    public var staged = false
    /// A staged deployment this deploy replaced.
    public var discardedStaged: Deployment?
    /// The deployment whose /etc was merged.
    public var mergedFrom: Deployment?

    var deploymentAndSelf: (Deployment, DeployResult) { (deployment, self) }
}

/// How a commit is trusted when it is deployed.
public struct DeployTrust: Sendable {
    /// The keys that must verify it (empty: nothing is verified).
    public var policy: TrustPolicy
    /// The commit's prepare-root.conf when it boots only signed commits.
    public var signedBootConfig: String?
}

public struct CleanupReport: Sendable {
    public var removedPaths: [String] = []
    /// Deployment folders no entry names that stay because they are in use.
    public var kept: [(path: String, reason: String)] = []
    public var prune = PruneReport()
}

extension Sysroot {
    static var lockTimeout: Double {
        getenv("CAIRN_LOCK_TIMEOUT").flatMap { Double(String(cString: $0)) } ?? 30
    }

    func checkKernelArgument(_ arg: String) throws {
        try KernelArguments.validate(arg)
    }

    /// The kernel and initramfs of a commit: /usr/lib/modules/<kver>/vmlinuz
    /// and initramfs.img (the first kernel version by name).
    func kernel(of commit: String, repo: Repository) throws -> (version: String, vmlinuz: String, initramfs: String?) {
        let modules: TreeEntry
        do { modules = try repo.lookup(commit: commit, path: "/usr/lib/modules") } catch {
            throw DeployError("deploying \(commit)", "the commit has no kernel (no /usr/lib/modules/<version>/vmlinuz)")
        }
        for dir in try repo.children(of: modules) {
            guard case .directory = dir.kind else { continue }
            var vmlinuz: String?, initramfs: String?
            for f in try repo.children(of: dir) {
                guard case .file(let object) = f.kind, !object.isSymlink else { continue }
                let name = String(decoding: f.path.split(separator: 0x2f).last ?? [], as: UTF8.self)
                if name == "vmlinuz" { vmlinuz = object.checksum }
                if name == "initramfs.img" { initramfs = object.checksum }
            }
            if let vmlinuz {
                let name = Array(dir.path.split(separator: 0x2f).last ?? [])
                try Self.validateKernelVersion(name)
                return (String(decoding: name, as: UTF8.self), vmlinuz, initramfs)
            }
        }
        throw DeployError("deploying \(commit)", "the commit has no kernel (no /usr/lib/modules/<version>/vmlinuz)")
    }

    /// A kernel version becomes a file name under /boot and part of a boot
    /// entry: letters, digits and . _ + ~ - only, as distributions name them.
    static func validateKernelVersion(_ name: [UInt8]) throws {
        let ok = !name.isEmpty && name.count <= 128 && name != [0x2e] && name != [0x2e, 0x2e] && name.allSatisfy {
            (0x30...0x39).contains($0) || (0x41...0x5a).contains($0) || (0x61...0x7a).contains($0) || [0x2e, 0x5f, 0x2b, 0x7e, 0x2d].contains($0)
        }
        guard ok else {
            throw DeployError("kernel version /usr/lib/modules/\(displayPath(name))", "refused: a kernel version may hold only letters, digits, '.', '_', '+', '~' and '-'")
        }
    }

    /// The trust a deploy of `checksum` needs: the repository's configured
    /// keys plus `extra`, and whether the commit's own prepare-root.conf
    /// (what its initramfs is built with) boots only signed commits.
    func deployTrust(_ checksum: String, repo: Repository, extra: RepositoryTrust) throws -> DeployTrust {
        let configured = try repo.trust()
        let policy = TrustPolicy(trustedKeys: configured.trusted + extra.trusted, revokedKeys: configured.revoked + extra.revoked)
        // The search order of prepare-root and of cairn's initramfs hooks.
        for path in ["/usr/etc/ostree/prepare-root.conf", "/usr/lib/ostree/prepare-root.conf", "/usr/share/cairn/prepare-root.conf"] {
            guard let e = try? repo.lookup(commit: checksum, path: path), case .file(let f) = e.kind, !f.isSymlink else { continue }
            var bytes: [UInt8] = []
            try repo.readContent(f.checksum) { bytes += $0 }
            let config: PrepareRootConfig
            do { config = try PrepareRootConfig(parsing: bytes, file: path) } catch {
                throw DeployError("deploying \(checksum)", "its \(error.description)")
            }
            return DeployTrust(policy: policy, signedBootConfig: config.composefs == .signed ? path : nil)
        }
        return DeployTrust(policy: policy, signedBootConfig: nil)
    }

    /// Verifies the commit as `trust` requires: with keys configured, an
    /// ed25519 signature by a trusted, non-revoked key; where signed boot is
    /// configured, a recorded composefs digest. Returns the verification
    /// line (nil when no keys are configured) and warnings.
    func checkTrust(_ checksum: String, _ commit: CommitInfo, _ trust: DeployTrust, repo: Repository) throws -> (String?, [String]) {
        let keysConfigured = !trust.policy.trustedKeys.isEmpty
        var warnings: [String] = []
        if (keysConfigured || trust.signedBootConfig != nil) && commit.composefsDigest == nil {
            throw DeployError("refusing to deploy \(checksum)", "the commit records no composefs digest (\(MetadataKey.composefsDigest)), which signed boot needs; commit it without --no-composefs")
        }
        if keysConfigured {
            switch repo.verifyEd25519(checksum, policy: trust.policy) {
            case .success(let v): return (v.description, warnings)
            case .failure(let refusal): throw DeployError("refusing to deploy \(checksum)", refusal.message)
            }
        }
        if let conf = trust.signedBootConfig {
            warnings.append("no trusted keys are configured for \(repo.path) ('cairn trust add --sysroot \(path) KEYFILE'), so this deploy verified no signature; but the commit's \(conf) boots only commits signed by a key in its initramfs: make sure this commit is signed, or the machine will refuse to boot it")
        }
        return (nil, warnings)
    }

    /// Creates a deployment of `o.rev` and makes it the default (or the
    /// second entry with `notAsDefault`), keeping the new default, the
    /// booted deployment, the rollback, the last known good one and pinned
    /// ones. With `stage`, the deployment is prepared but the boot entries
    /// are left alone until `finalizeStaged` (at shutdown).
    public func deploy(_ o: DeployOptions) throws -> DeployResult {
        for k in o.kernelArguments + o.appendedKernelArguments { try checkKernelArgument(k) }
        let repo = try repository()
        return try withLock(command: "deploy \(o.rev)", timeout: Self.lockTimeout) {
            let state = try loadState()
            let stage = try o.stage ?? stagesByDefault(state)
            if stage {
                guard state.bootedIndex != nil else {
                    throw DeployError("staging \(o.rev)", "a deployment is staged on the running system, to be finalized when it shuts down; \(path) is not the booted system's sysroot (deploy without --stage)")
                }
                guard !o.notAsDefault else { throw DeployError("staging \(o.rev)", "a staged deployment becomes the default; --not-as-default cannot be staged") }
            }
            // One staged deployment at most: a new deploy replaces it.
            let discarded = try discardStaged(state: state)
            var (deployment, result) = try prepareDeployment(o, state: state, repo: repo)
            result.discardedStaged = discarded
            if stage {
                try writeStagedRecord(deployment, merge: result.mergedFrom, locked: o.lockFinalization)
                result.staged = true
                return result
            }
            if !o.notAsDefault { deployment.bootCounter = try newEntryCounter() }
            result.deployment = deployment
            result.removed = try commitDeployment(deployment, state: state, notAsDefault: o.notAsDefault)
            return result
        }
    }

    /// Writes a deployment's folder (its composefs image, /etc merged from
    /// the booted or default deployment of the stateroot, its origin), fills
    /// an empty /var, and installs its kernel; no boot entry names it yet.
    func prepareDeployment(_ o: DeployOptions, state: SysrootState, repo: Repository) throws -> (Deployment, DeployResult) {
        let checksum = try repo.resolve(o.rev)
        let commit = try repo.commit(checksum)
        let stateroot = try o.stateroot ?? state.deployments.first?.stateroot ?? onlyStateroot()
        try Self.validateStateroot(stateroot)
        guard FileSystem.exists(Array(at("ostree/deploy/\(stateroot)/deploy").utf8)) else {
            throw DeployError("deploying \(o.rev)", "no stateroot '\(stateroot)' in \(path); run 'cairn sysroot init \(path) --stateroot \(stateroot)'")
        }
        let (signedBy, warnings) = try checkTrust(checksum, commit, try deployTrust(checksum, repo: repo, extra: o.extraTrust), repo: repo)
        let kernel = try kernel(of: checksum, repo: repo)
        let title = try osReleaseTitle(repo: repo, commit: checksum)

        // The image every boot mounts; it must be the one the commit names.
        // The digest cache makes it fast; were the cache wrong, the image
        // would not match and is built again from the objects, each
        // checked against its checksum, so a corrupt object is named.
        var image = try repo.composefsImage(commit: checksum, digests: .cached)
        var digest = fsVerityDigest(image)
        if let recorded = commit.composefsDigest, recorded != digest {
            image = try repo.composefsImage(commit: checksum, digests: .verifiedObjects)
            digest = fsVerityDigest(image)
        }
        if let recorded = commit.composefsDigest, recorded != digest {
            throw DeployError("deploying \(checksum)", "the composefs image has digest \(hexString(digest)), which doesn't match expected digest \(hexString(recorded)) recorded in the commit")
        }

        let bootChecksum = try repo.sha256(ofContents: [kernel.vmlinuz] + (kernel.initramfs.map { [$0] } ?? []))
        let merge = mergeDeployment(state, stateroot: stateroot)
        let used = Set(state.deployments.filter { $0.stateroot == stateroot && $0.checksum == checksum }.map(\.serial))
        let serial = (0...).first { !used.contains($0) }!
        let refspec = (try? repo.resolveRef(o.rev)) != nil ? o.rev : checksum

        var kargs = KernelArguments(merge?.kernelArguments ?? state.deployments.first?.kernelArguments ?? [])
        for k in o.kernelArguments { kargs.replace(k) }
        for k in o.appendedKernelArguments { kargs.append(k) }

        let deployment = Deployment(stateroot: stateroot, checksum: checksum, serial: serial, bootChecksum: bootChecksum,
                                    kernelArguments: kargs.arguments, origin: Origin(refspec: refspec),
                                    title: title)
        let dir = at(deployment.relativePath)
        try removeTree(dir)  // an unreferenced leftover of an interrupted deploy
        try removeTree(dir + ".origin")
        var etc: EtcChanges?
        do {
            try makeDirectory(dir, mode: 0o755)
            try writeFileAtomically(dir + "/.ostree.cfs", image)
            // Where the filesystem has fs-verity (a booted machine's), the
            // image and the objects it names get it now: the next boot
            // mounts them with verity required.
            if try enableVerity(dir + "/.ostree.cfs") { _ = try repo.enableVerity(onObjectsOf: checksum) }
            etc = try writeEtc(deployment, merge: merge, repo: repo)
            try writeOstreeFiles(deployment, kernel: kernel, repo: repo)
            try writeFileAtomically(dir + ".origin", Array(deployment.origin.text.utf8))
            try syncFilesystems()
        } catch {
            try? removeTree(dir)
            try? removeTree(dir + ".origin")
            throw error
        }
        CrashPoint.deploymentWritten.reach()
        let populatedVar = try populateVar(stateroot: stateroot, commit: checksum, repo: repo)

        try installKernel(kernel, stateroot: stateroot, bootChecksum: bootChecksum, repo: repo)
        CrashPoint.kernelCopied.reach()
        var result = DeployResult(deployment: deployment, etc: etc, removed: [], signedBy: signedBy, composefsDigest: digest,
                                  populatedVar: populatedVar, warnings: warnings)
        result.mergedFrom = merge
        return result.deploymentAndSelf
    }

    /// The deployment whose /etc a new one of `stateroot` merges: the booted
    /// one if it is of that stateroot, else its first.
    func mergeDeployment(_ state: SysrootState, stateroot: String) -> Deployment? {
        state.bootedIndex.map { state.deployments[$0] }.flatMap { $0.stateroot == stateroot ? $0 : nil }
            ?? state.deployments.first(where: { $0.stateroot == stateroot })
    }

    /// The new deployment's /etc: the commit's defaults (/usr/etc) with the
    /// changes of `merge`'s /etc carried over (three-way).
    func writeEtc(_ d: Deployment, merge: Deployment?, repo: Repository) throws -> EtcChanges? {
        let dir = at(d.relativePath)
        if (try? repo.lookup(commit: d.checksum, path: "/usr/etc")) != nil {
            try repo.checkoutCopy(commit: d.checksum, subpath: "/usr/etc", to: dir + "/etc")
        } else {
            try makeDirectory(dir + "/etc", mode: 0o755)
        }
        guard let merge else { return nil }
        return try EtcTree.merge(oldEtc: at(merge.relativePath) + "/etc", oldCommit: merge.checksum,
                                 newCommit: d.checksum, newEtc: dir + "/etc", repo: repo)
    }

    /// What ostree's own tools read in a deployment folder, so that
    /// `ostree admin deploy`, `undeploy` and `cleanup` work on a cairn
    /// sysroot and a machine can move to ostree and back: the commit's
    /// pristine /usr/etc (ostree's /etc merge diffs it against etc/), its
    /// kernel in usr/lib/modules/<kver>/ and its usr/lib/os-release (what
    /// ostree reads to write the boot entry of a deployment it keeps).
    /// Hardlinks to the repository's objects, so they cost no space; nothing
    /// boots from them (the root is the image).
    func writeOstreeFiles(_ d: Deployment, kernel: (version: String, vmlinuz: String, initramfs: String?), repo: Repository) throws {
        let usr = at(d.relativePath) + "/usr"
        try makeDirectory(usr, mode: 0o755)
        if (try? repo.lookup(commit: d.checksum, path: "/usr/etc")) != nil {
            try repo.checkoutLinked(commit: d.checksum, subpath: "/usr/etc", to: usr + "/etc")
        }
        let modules = usr + "/lib/modules/" + kernel.version
        for p in [usr + "/lib", usr + "/lib/modules", modules] { try makeDirectory(p, mode: 0o755) }
        try repo.linkContent(kernel.vmlinuz, to: modules + "/vmlinuz")
        if let initramfs = kernel.initramfs { try repo.linkContent(initramfs, to: modules + "/initramfs.img") }
        if case .file(let osRelease)? = (try? repo.lookup(commit: d.checksum, path: "/usr/lib/os-release"))?.kind, !osRelease.isSymlink {
            try repo.linkContent(osRelease.checksum, to: usr + "/lib/os-release")
        }
    }

    /// Makes a prepared deployment part of the boot set (the default, or
    /// second with `notAsDefault`) and removes the deployments retention
    /// lets go. Returns those. Until the switch a failure removes the new
    /// deployment and leaves everything else as it was.
    func commitDeployment(_ deployment: Deployment, state: SysrootState, notAsDefault: Bool) throws -> [Deployment] {
        var list = state.deployments
        list.insert(deployment, at: notAsDefault && !list.isEmpty ? 1 : 0)
        let kept = retained(list, new: deployment, state: state)
        let removed = list.filter { d in !kept.contains { $0.isSame(as: d) } }
        do { try writeBootSet(kept) } catch {
            // Not switched: the new deployment is referenced by nothing, and goes.
            if (try? currentBootVersion()) == state.bootVersion { try? removeDeploymentFiles(deployment) }
            throw error
        }
        // A new deployment closes the story of the last fallback and of a failed finalization.
        try removeRecord(StateRecords.fallback)
        try removeRecord(StateRecords.finalizeFailure)
        for (i, d) in removed.enumerated() {
            try removeDeploymentFiles(d)
            if i == 0 { CrashPoint.removedOne.reach() }
        }
        return removed
    }

    /// What a deploy keeps of `list` (the new set, new deployment included):
    /// the first (the new default), the new one, pinned ones, other
    /// stateroots', whatever is running or mounted (whatever the entries
    /// say), and the rollback: offline the second entry; on a booted system,
    /// as with ostree, the booted deployment (a deployment made since boot
    /// and never booted gives way to the next). Also the last known good:
    /// while the booted deployment is itself on probation (its entry still
    /// counts tries), the newest blessed one of the stateroot stays too, so
    /// that a fallback always has somewhere to go.
    func retained(_ list: [Deployment], new deployment: Deployment, state: SysrootState) -> [Deployment] {
        let stateroot = deployment.stateroot
        let bootedHere = state.bootedIndex.map { state.deployments[$0] }.flatMap { $0.stateroot == stateroot ? $0 : nil }
        func same(_ a: Deployment?, _ b: Deployment) -> Bool { a?.isSame(as: b) ?? false }
        let lastGood = bootedHere.flatMap { $0.bootCounter == nil ? $0 : nil }
            ?? list.first { $0.stateroot == stateroot && $0.bootCounter == nil && !same(deployment, $0) }
        var kept: [Deployment] = []
        for (i, d) in list.enumerated() {
            let keep = i == 0 || same(deployment, d) || (bootedHere == nil && i < 2) || same(lastGood, d) || d.pinned
                || d.stateroot != stateroot || inUseReason(d.relativePath) != nil
            if keep { kept.append(d) }
        }
        return kept
    }

    func onlyStateroot() throws -> String {
        let all = stateroots()
        guard all.count == 1 else {
            throw DeployError("choosing a stateroot", all.isEmpty ? "the sysroot has none; run 'cairn sysroot init \(path) --stateroot NAME'" : "several exist (\(all.joined(separator: ", "))); name one with --stateroot")
        }
        return all[0]
    }

    /// PRETTY_NAME of the commit's os-release, for the entry title. Lines
    /// end at LF bytes (a CR before it is dropped); a value with any other
    /// control character is refused, since the title goes into a boot entry.
    func osReleaseTitle(repo: Repository, commit: String) throws -> String? {
        for path in ["/usr/lib/os-release", "/usr/etc/os-release"] {
            guard let e = try? repo.lookup(commit: commit, path: path), case .file(let f) = e.kind, !f.isSymlink else { continue }
            var bytes: [UInt8] = []
            try repo.readContent(f.checksum) { bytes += $0 }
            let key = Array("PRETTY_NAME=".utf8)
            for var line in bytes.split(separator: 0x0a) where line.starts(with: key) {
                if line.last == 0x0d { line.removeLast() }
                var value = Array(line.dropFirst(key.count))
                if value.count >= 2, let q = value.first, q == 0x22 || q == 0x27, value.last == q { value = Array(value.dropFirst().dropLast()) }
                guard let text = String(validating: value, as: UTF8.self), firstControlCharacter(text) == nil else {
                    throw DeployError("deploying \(commit)", "PRETTY_NAME in \(path) is not UTF-8 text without control characters: \(displayPath(value))")
                }
                return text
            }
        }
        return nil
    }

    /// On a stateroot's first deployment its /var is empty: fill it from the
    /// commit's /var, as current ostree does (a Debian tree's /var/lib/dpkg
    /// lives there). A /var with anything in it is never touched. Returns
    /// the number of entries copied, nil when nothing was done.
    func populateVar(stateroot: String, commit: String, repo: Repository) throws -> Int? {
        let varDir = at("ostree/deploy/\(stateroot)/var")
        let entries: [[UInt8]]
        do { entries = try FileSystem.directoryEntries(Array(varDir.utf8)) } catch let e as SystemError {
            throw DeployError("reading \(varDir)", e.message)
        }
        guard entries.isEmpty, let root = try? repo.lookup(commit: commit, path: "/var"), case .directory = root.kind,
              !(try repo.children(of: root)).isEmpty else { return nil }
        // Checked out beside it, then renamed over the empty folder: /var is
        // either still empty or complete.
        let tmp = at("ostree/deploy/\(stateroot)/var.cairn-tmp")
        try removeTree(tmp)
        do {
            try repo.checkoutCopy(commit: commit, subpath: "/var", to: tmp)
            try FileSystem.syncDirectory(tmp)
            try FileSystem.rename(Array(tmp.utf8), to: Array(varDir.utf8))
            try FileSystem.syncDirectory(at("ostree/deploy/\(stateroot)"))
        } catch {
            try? removeTree(tmp)
            if let e = error as? SystemError { throw DeployError("populating \(varDir) from the commit's /var", e.message) }
            throw error
        }
        var count = 0
        try repo.walk(root) { _ in count += 1 }
        return count - 1
    }

    /// Copies kernel and initramfs to their folder (/boot/ostree/ or the
    /// ESP's cairn/, named <stateroot>-<bootcsum>) unless there already:
    /// written in a temporary folder, then renamed.
    func installKernel(_ k: (version: String, vmlinuz: String, initramfs: String?), stateroot: String, bootChecksum: String, repo: Repository) throws {
        let layout = try layout()
        let dir = kernelDirectory(layout, stateroot: stateroot, bootChecksum: bootChecksum).path
        if FileSystem.exists(Array(dir.utf8)) { return }
        try makeDirectories(kernelsDirectory(layout))
        let tmp = dir + ".tmp"
        try removeTree(tmp)
        try makeDirectory(tmp, mode: 0o755)
        do {
            try repo.writeContent(k.vmlinuz, to: tmp + "/vmlinuz-\(k.version)")
            if let i = k.initramfs { try repo.writeContent(i, to: tmp + "/initramfs-\(k.version).img") }
            try FileSystem.syncDirectory(tmp)
            try FileSystem.rename(Array(tmp.utf8), to: Array(dir.utf8))
            try FileSystem.syncDirectory(kernelsDirectory(layout))
        } catch let e as SystemError {
            try? removeTree(tmp)
            throw DeployError("installing the kernel into \(dir)", e.message)
        } catch {
            try? removeTree(tmp)
            throw error
        }
    }

    /// Enables fs-verity on a file just written; false where the filesystem
    /// cannot.
    func enableVerity(_ file: String) throws -> Bool {
        do {
            let fd = try FileDescriptor.open(file, O_RDONLY | O_NOFOLLOW)
            return try fd.closeAfter { try KernelVerity.enable(fd, path: Array(file.utf8)) }
        } catch let e as SystemError {
            throw DeployError("enabling fs-verity on \(file)", e.message)
        }
    }

    /// Removes a deployment's folder and origin; never one that is running
    /// or mounted (the last guard: callers keep those in the boot set).
    func removeDeploymentFiles(_ d: Deployment) throws {
        if let reason = inUseReason(d.relativePath) { throw DeployError("not removing \(at(d.relativePath))", reason) }
        try removeTree(at(d.relativePath) + ".origin")
        try removeTree(at(d.relativePath))
        try removeRecord(healthRecordPath(d))
    }

    /// A deployment that is to become the default must be whole: its commit
    /// still in the repository and its image on disk.
    func checkBootable(_ d: Deployment) throws {
        let repo = try repository()
        guard (try? repo.commit(d.checksum)) != nil else {
            throw DeployError("deployment \(d.stateroot) \(d.name)", "its commit \(d.checksum) is missing from \(repo.path); it cannot boot")
        }
        let image = at(d.relativePath) + "/.ostree.cfs"
        // cairn's deployments boot their image; ostree's without composefs, a
        // checkout (cairn's hold only ostree's files under usr/, no usr/bin).
        guard FileSystem.exists(Array(image.utf8)) || FileSystem.exists(Array(at(d.relativePath + "/usr/bin").utf8)) else {
            throw DeployError("deployment \(d.stateroot) \(d.name)", "its composefs image \(image) is missing; it cannot boot")
        }
    }

    func index(_ i: Int, in state: SysrootState) throws -> Deployment {
        guard i >= 0 && i < state.deployments.count else {
            throw DeployError("deployment index \(i)", state.deployments.isEmpty ? "there are no deployments" : "out of range (0 to \(state.deployments.count - 1))")
        }
        return state.deployments[i]
    }

    /// Makes the previous deployment the default: swaps the first two.
    public func rollback() throws -> SysrootState {
        try withLock(command: "rollback", timeout: Self.lockTimeout) {
            var state = try loadState()
            guard state.deployments.count >= 2 else {
                throw DeployError("rollback", "there is no previous deployment to roll back to")
            }
            try checkBootable(state.deployments[1])
            state.deployments.swapAt(0, 1)
            try retryIfSpent(&state.deployments[0])
            try writeBootSet(state.deployments)
            return try loadState()
        }
    }

    /// A deployment made the default by hand after it used up its tries
    /// gets fresh ones: systemd-boot would pass over it otherwise.
    func retryIfSpent(_ d: inout Deployment) throws {
        if let c = d.bootCounter, c.left == 0 { d.bootCounter = try newEntryCounter() }
    }

    public func setDefault(_ i: Int) throws -> SysrootState {
        try withLock(command: "set-default \(i)", timeout: Self.lockTimeout) {
            var state = try loadState()
            let d = try index(i, in: state)
            guard i != 0 else { return state }
            try checkBootable(d)
            state.deployments.remove(at: i)
            state.deployments.insert(d, at: 0)
            try retryIfSpent(&state.deployments[0])
            try writeBootSet(state.deployments)
            return try loadState()
        }
    }

    public func undeploy(_ i: Int) throws -> Deployment {
        try withLock(command: "undeploy \(i)", timeout: Self.lockTimeout) {
            var state = try loadState()
            let d = try index(i, in: state)
            if let reason = inUseReason(d.relativePath) {
                throw DeployError("undeploy \(i)", "deployment \(d.name) is in use: \(reason)")
            }
            state.deployments.remove(at: i)
            try writeBootSet(state.deployments)
            try removeDeploymentFiles(d)
            return d
        }
    }

    public func pin(_ i: Int, pinned: Bool) throws -> Deployment {
        try withLock(command: pinned ? "pin \(i)" : "pin --unpin \(i)", timeout: Self.lockTimeout) {
            var d = try index(i, in: try loadState())
            d.origin.set(section: "libostree-transient", key: "pinned", pinned ? "true" : nil)
            try writeFileAtomically(at(d.relativePath) + ".origin", Array(d.origin.text.utf8))
            CrashPoint.originWritten.reach()
            return d
        }
    }

    /// New boot entries for the default deployment with changed arguments.
    public func changeKernelArguments(append: [String], delete: [String], replace: [String]) throws -> Deployment {
        for k in append + replace { try checkKernelArgument(k) }
        return try withLock(command: "kargs", timeout: Self.lockTimeout) {
            var state = try loadState()
            _ = try index(0, in: state)
            var kargs = KernelArguments(state.deployments[0].kernelArguments)
            for k in delete {
                guard kargs.delete(k) else { throw DeployError("kargs --delete \(k)", "no such kernel argument") }
            }
            for k in replace { kargs.replace(k) }
            for k in append { kargs.append(k) }
            state.deployments[0].kernelArguments = kargs.arguments
            try writeBootSet(state.deployments)
            return state.deployments[0]
        }
    }

    /// Deletes what no boot entry refers to: deployment folders, kernel
    /// folders, the inactive entry set, and repository objects reachable from
    /// no deployment and no ref.
    public func cleanup(dryRun: Bool) throws -> CleanupReport {
        let repo = try repository()
        return try withLock(command: "cleanup", timeout: Self.lockTimeout) {
            let state = try loadState()
            var report = CleanupReport()
            var stagedCommit: String?
            var stagedBoot: [UInt8]?
            // Names stay bytes: a name that is not UTF-8 is no deployment's, and goes.
            var doomed: [[UInt8]] = []
            func entries(_ dir: String) -> [[UInt8]] {
                ((try? FileSystem.directoryEntries(Array(at(dir).utf8))) ?? []).sorted { $0.lexicographicallyPrecedes($1) }
            }
            var live = Set(state.deployments.map { "\($0.stateroot)/\($0.name)" })
            // A staged deployment waits for shutdown; one staged in an earlier boot never will be finalized.
            if let staged = try? stagedDeployment() {
                if staged.stale {
                    if !dryRun { try removeRecord(StateRecords.staged) }
                } else {
                    live.insert("\(staged.deployment.stateroot)/\(staged.deployment.name)")
                    stagedCommit = staged.deployment.checksum
                    stagedBoot = Array("\(staged.deployment.stateroot)-\(staged.deployment.bootChecksum)".utf8)
                }
            }
            for stateroot in stateroots() {
                let deployDir = "ostree/deploy/\(stateroot)/deploy"
                for name in entries(deployDir) {
                    let path = Array(at(deployDir).utf8) + [0x2f] + name
                    guard let text = String(validating: name, as: UTF8.self) else { doomed.append(path); continue }
                    let base = text.hasSuffix(".origin") ? String(text.dropLast(".origin".count)) : text
                    guard !live.contains("\(stateroot)/\(base)") else { continue }
                    if let reason = inUseReason(deployDir + "/" + base) {
                        report.kept.append((displayPath(path), reason))
                    } else {
                        doomed.append(path)
                    }
                }
            }
            let layout = try layout()
            var liveBoot = Set(state.deployments.map { Array("\($0.stateroot)-\($0.bootChecksum)".utf8) })
            if let stagedBoot { liveBoot.insert(stagedBoot) }
            let kernels = kernelsDirectory(layout)
            for name in ((try? FileSystem.directoryEntries(Array(kernels.utf8))) ?? []).sorted(by: { $0.lexicographicallyPrecedes($1) }) where !liveBoot.contains(name) {
                doomed.append(Array(kernels.utf8) + [0x2f] + name)
            }
            if case .esp(let esp) = layout, FileSystem.exists(Array((esp + "/" + BootLayout.stagedEntries).utf8)) {
                doomed.append(Array((esp + "/" + BootLayout.stagedEntries).utf8))
            }
            if let v = state.bootVersion {
                let other = 1 - v
                if case .ostree = layout, FileSystem.exists(Array(at("boot/loader.\(other)").utf8)) { doomed.append(Array(at("boot/loader.\(other)").utf8)) }
                for name in entries("ostree") where name == Array("boot.\(other)".utf8) || name.starts(with: Array("boot.\(other).".utf8)) {
                    doomed.append(Array(at("ostree").utf8) + [0x2f] + name)
                }
            }
            report.removedPaths = doomed.map(displayPath)
            if !dryRun {
                for (i, p) in doomed.enumerated() {
                    try removeTree(p)
                    if i == 0 { CrashPoint.removedOne.reach() }
                }
            }
            // A folder kept for being in use keeps its commit too ("<commit>.<serial>").
            let inUse = report.kept.compactMap { k in k.path.split(separator: "/").last?.split(separator: ".").first.map(String.init) }
            report.prune = try repo.prune(keeping: Array(Set(state.deployments.map(\.checksum) + inUse + (stagedCommit.map { [$0] } ?? []))), dryRun: dryRun)
            CrashPoint.pruned.reach()
            return report
        }
    }

    /// The /etc changes of the booted (else the default) deployment against its defaults.
    public func configDiff() throws -> (Deployment, EtcChanges) {
        let repo = try repository()
        let state = try loadState()
        guard let d = state.bootedIndex.map({ state.deployments[$0] }) ?? state.deployments.first else {
            throw DeployError("config-diff", "there are no deployments")
        }
        return (d, try EtcTree.changes(etcPath: at(d.relativePath) + "/etc", commit: d.checksum, repo: repo))
    }
}

extension Sysroot {
    /// The sysroot whose repository is at `repositoryPath`, if it is one
    /// (`<sysroot>/ostree/repo` beside `<sysroot>/ostree/deploy`).
    public static func owning(repositoryPath: String) -> Sysroot? {
        var parts = repositoryPath.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        while parts.count > 1 && parts.last == "" { parts.removeLast() }
        guard parts.count >= 2, parts.suffix(2) == ["ostree", "repo"] else { return nil }
        let root = parts.dropLast(2).joined(separator: "/")
        let s = Sysroot(path: root.isEmpty ? (repositoryPath.hasPrefix("/") ? "/" : ".") : root)
        return s.isInitialized() ? s : nil
    }

    /// What a deployment needs that is missing or wrong: its commit, a ref
    /// that keeps the commit from `prune`, its image with the digest the
    /// commit records. One line per problem, naming the deployment.
    public func checkDeployments(repo: Repository) throws -> [String] {
        let state = try loadState()
        var problems: [String] = []
        let refs = Dictionary((try repo.refs()).map { ($0.name, $0.commit) }, uniquingKeysWith: { a, _ in a })
        for (i, d) in state.deployments.enumerated() {
            let name = "deployment \(i) (\(d.stateroot) \(d.name))"
            guard let commit = try? repo.commit(d.checksum) else {
                problems.append("\(name): its commit \(d.checksum) is missing from \(repo.path)")
                continue
            }
            if let v = state.bootVersion, refs["ostree/\(v)/0/\(i)"] != d.checksum {
                problems.append("\(name): no deployment ref ostree/\(v)/0/\(i) points at its commit, so a prune may delete it")
            }
            let imagePath = at(d.relativePath) + "/.ostree.cfs"
            guard FileSystem.exists(Array(imagePath.utf8)) else { continue }  // an ostree deployment without composefs
            let image: [UInt8]
            do {
                let fd = try FileDescriptor.open(imagePath, O_RDONLY | O_NOFOLLOW)
                image = try fd.closeAfter { try fd.readAll(limit: 1 << 30) }
            } catch let e as SystemError {
                problems.append("\(name): cannot read its image \(imagePath): \(e.message)")
                continue
            }
            if let recorded = commit.composefsDigest, fsVerityDigest(image) != recorded {
                problems.append("\(name): its image \(imagePath) has digest \(hexString(fsVerityDigest(image))), not the \(hexString(recorded)) its commit records")
            }
        }
        return problems
    }
}
