import CairnRepo
import CairnSystem
import Composefs
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
    /// Checks the commit's signature before anything is written; returns a
    /// description of the key that verified, or throws.
    public var verifySignature: ((Repository, String) throws -> String)?

    public init(rev: String) { self.rev = rev }
}

public struct DeployResult: Sendable {
    public var deployment: Deployment
    public var etc: EtcChanges?
    public var removed: [Deployment]
    public var signedBy: String?
    public var composefsDigest: [UInt8]
}

public struct CleanupReport: Sendable {
    public var removedPaths: [String] = []
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
                return (String(decoding: dir.path.split(separator: 0x2f).last ?? [], as: UTF8.self), vmlinuz, initramfs)
            }
        }
        throw DeployError("deploying \(commit)", "the commit has no kernel (no /usr/lib/modules/<version>/vmlinuz)")
    }

    /// Creates a deployment of `o.rev` and makes it the default (or the
    /// second entry with `notAsDefault`), keeping the new default, the
    /// booted deployment, the rollback and pinned ones.
    public func deploy(_ o: DeployOptions) throws -> DeployResult {
        for k in o.kernelArguments + o.appendedKernelArguments { try checkKernelArgument(k) }
        let repo = try repository()
        return try withLock(command: "deploy \(o.rev)", timeout: Self.lockTimeout) {
            let state = try loadState()
            let checksum = try repo.resolve(o.rev)
            let commit = try repo.commit(checksum)
            let stateroot = try o.stateroot ?? state.deployments.first?.stateroot ?? onlyStateroot()
            try Self.validateStateroot(stateroot)
            guard FileSystem.exists(Array(at("ostree/deploy/\(stateroot)/deploy").utf8)) else {
                throw DeployError("deploying \(o.rev)", "no stateroot '\(stateroot)' in \(path); run 'cairn sysroot init \(path) --stateroot \(stateroot)'")
            }
            let signedBy = try o.verifySignature?(repo, checksum)
            let kernel = try kernel(of: checksum, repo: repo)

            // The image every boot mounts; it must be the one the commit names.
            let image = try repo.composefsImage(commit: checksum)
            let digest = fsVerityDigest(image)
            if let recorded = commit.composefsDigest, recorded != digest {
                throw DeployError("deploying \(checksum)", "the composefs image has digest \(hexString(digest)), which doesn't match expected digest \(hexString(recorded)) recorded in the commit")
            }

            let bootChecksum = try repo.sha256(ofContents: [kernel.vmlinuz] + (kernel.initramfs.map { [$0] } ?? []))
            let merge = state.bootedIndex.map { state.deployments[$0] }.flatMap { $0.stateroot == stateroot ? $0 : nil }
                ?? state.deployments.first(where: { $0.stateroot == stateroot })
            let used = Set(state.deployments.filter { $0.stateroot == stateroot && $0.checksum == checksum }.map(\.serial))
            let serial = (0...).first { !used.contains($0) }!
            let refspec = (try? repo.resolveRef(o.rev)) != nil ? o.rev : checksum

            var kargs = KernelArguments(merge?.kernelArguments ?? state.deployments.first?.kernelArguments ?? [])
            for k in o.kernelArguments { kargs.replace(k) }
            for k in o.appendedKernelArguments { kargs.append(k) }

            let deployment = Deployment(stateroot: stateroot, checksum: checksum, serial: serial, bootChecksum: bootChecksum,
                                        kernelArguments: kargs.arguments, origin: Origin(refspec: refspec),
                                        title: osReleaseTitle(repo: repo, commit: checksum))
            let dir = at(deployment.relativePath)
            try removeTree(dir)  // an unreferenced leftover of an interrupted deploy
            try removeTree(dir + ".origin")
            var etc: EtcChanges?
            do {
                try makeDirectory(dir, mode: 0o755)
                try writeFileAtomically(dir + "/.ostree.cfs", image)
                if (try? repo.lookup(commit: checksum, path: "/usr/etc")) != nil {
                    try repo.checkoutCopy(commit: checksum, subpath: "/usr/etc", to: dir + "/etc")
                } else {
                    try makeDirectory(dir + "/etc", mode: 0o755)
                }
                if let merge {
                    etc = try EtcTree.merge(oldEtc: at(merge.relativePath) + "/etc", oldCommit: merge.checksum,
                                            newCommit: checksum, newEtc: dir + "/etc", repo: repo)
                }
                try writeFileAtomically(dir + ".origin", Array(deployment.origin.text.utf8))
                sync()
            } catch {
                try? removeTree(dir)
                try? removeTree(dir + ".origin")
                throw error
            }
            CrashPoint.deploymentWritten.reach()

            try installKernel(kernel, stateroot: stateroot, bootChecksum: bootChecksum, repo: repo)
            CrashPoint.kernelCopied.reach()

            var list = state.deployments
            list.insert(deployment, at: o.notAsDefault && !list.isEmpty ? 1 : 0)
            let booted = state.bootedIndex.map { state.deployments[$0] }
            var kept: [Deployment] = []
            for (i, d) in list.enumerated() where i < 2 || d.pinned || (booted.map { $0.name == d.name && $0.stateroot == d.stateroot } ?? false) {
                kept.append(d)
            }
            let removed = list.filter { d in !kept.contains { $0.name == d.name && $0.stateroot == d.stateroot } }
            try writeBootSet(kept)
            for (i, d) in removed.enumerated() {
                try removeDeploymentFiles(d)
                if i == 0 { CrashPoint.removedOne.reach() }
            }
            return DeployResult(deployment: deployment, etc: etc, removed: removed, signedBy: signedBy, composefsDigest: digest)
        }
    }

    func onlyStateroot() throws -> String {
        let all = stateroots()
        guard all.count == 1 else {
            throw DeployError("choosing a stateroot", all.isEmpty ? "the sysroot has none; run 'cairn sysroot init \(path) --stateroot NAME'" : "several exist (\(all.joined(separator: ", "))); name one with --stateroot")
        }
        return all[0]
    }

    /// PRETTY_NAME (and VERSION_ID) of the commit's os-release, for the entry title.
    func osReleaseTitle(repo: Repository, commit: String) -> String? {
        for path in ["/usr/lib/os-release", "/usr/etc/os-release"] {
            guard let e = try? repo.lookup(commit: commit, path: path), case .file(let f) = e.kind, !f.isSymlink else { continue }
            var bytes: [UInt8] = []
            try? repo.readContent(f.checksum) { bytes += $0 }
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
                return String(line.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: "\"'")
            }
        }
        return nil
    }

    /// Copies kernel and initramfs to /boot/ostree/<stateroot>-<bootcsum>/
    /// unless there already: written in a temporary folder, then renamed.
    func installKernel(_ k: (version: String, vmlinuz: String, initramfs: String?), stateroot: String, bootChecksum: String, repo: Repository) throws {
        let dir = at("boot/ostree/\(stateroot)-\(bootChecksum)")
        if FileSystem.exists(Array(dir.utf8)) { return }
        try makeDirectories(at("boot/ostree"))
        let tmp = dir + ".tmp"
        try removeTree(tmp)
        try makeDirectory(tmp, mode: 0o755)
        do {
            try repo.writeContent(k.vmlinuz, to: tmp + "/vmlinuz-\(k.version)")
            if let i = k.initramfs { try repo.writeContent(i, to: tmp + "/initramfs-\(k.version).img") }
            try FileSystem.syncDirectory(tmp)
            try FileSystem.rename(Array(tmp.utf8), to: Array(dir.utf8))
            try FileSystem.syncDirectory(at("boot/ostree"))
        } catch let e as SystemError {
            try? removeTree(tmp)
            throw DeployError("installing the kernel into \(dir)", e.message)
        } catch {
            try? removeTree(tmp)
            throw error
        }
    }

    func removeDeploymentFiles(_ d: Deployment) throws {
        try removeTree(at(d.relativePath) + ".origin")
        try removeTree(at(d.relativePath))
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
            state.deployments.swapAt(0, 1)
            try writeBootSet(state.deployments)
            return try loadState()
        }
    }

    public func setDefault(_ i: Int) throws -> SysrootState {
        try withLock(command: "set-default \(i)", timeout: Self.lockTimeout) {
            var state = try loadState()
            let d = try index(i, in: state)
            guard i != 0 else { return state }
            state.deployments.remove(at: i)
            state.deployments.insert(d, at: 0)
            try writeBootSet(state.deployments)
            return try loadState()
        }
    }

    public func undeploy(_ i: Int) throws -> Deployment {
        try withLock(command: "undeploy \(i)", timeout: Self.lockTimeout) {
            var state = try loadState()
            let d = try index(i, in: state)
            guard state.bootedIndex != i else {
                throw DeployError("undeploy \(i)", "deployment \(d.name) is the booted one")
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
            let live = Set(state.deployments.map { "\($0.stateroot)/\($0.name)" })
            for stateroot in stateroots() {
                let deployDir = at("ostree/deploy/\(stateroot)/deploy")
                for name in ((try? FileSystem.directoryEntries(Array(deployDir.utf8))) ?? []).map({ String(decoding: $0, as: UTF8.self) }).sorted() {
                    let base = name.hasSuffix(".origin") ? String(name.dropLast(".origin".count)) : name
                    if !live.contains("\(stateroot)/\(base)") { report.removedPaths.append(deployDir + "/" + name) }
                }
            }
            let liveBoot = Set(state.deployments.map { "\($0.stateroot)-\($0.bootChecksum)" })
            for name in ((try? FileSystem.directoryEntries(Array(at("boot/ostree").utf8))) ?? []).map({ String(decoding: $0, as: UTF8.self) }).sorted()
            where !liveBoot.contains(name) {
                report.removedPaths.append(at("boot/ostree/" + name))
            }
            if let v = state.bootVersion {
                let other = 1 - v
                if FileSystem.exists(Array(at("boot/loader.\(other)").utf8)) { report.removedPaths.append(at("boot/loader.\(other)")) }
                for name in ((try? FileSystem.directoryEntries(Array(at("ostree").utf8))) ?? []).map({ String(decoding: $0, as: UTF8.self) }).sorted()
                where name == "boot.\(other)" || name.hasPrefix("boot.\(other).") {
                    report.removedPaths.append(at("ostree/" + name))
                }
            }
            if !dryRun {
                for (i, p) in report.removedPaths.enumerated() {
                    try removeTree(p)
                    if i == 0 { CrashPoint.removedOne.reach() }
                }
            }
            report.prune = try repo.prune(keeping: Array(Set(state.deployments.map(\.checksum))), dryRun: dryRun)
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

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
