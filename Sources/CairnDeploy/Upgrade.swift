import CairnRepo
import CairnSysroot
import CairnSystem
import Trust

/// `cairn upgrade` and `cairn switch`.
public struct UpgradeOptions {
    /// Only say whether the origin has a newer commit.
    public var check = false
    /// Fetch, but do not deploy.
    public var pullOnly = false
    /// Accept a commit older than the current one.
    public var allowDowngrade = false
    public var pull = PullOptions()
    /// Keys trusted for the deploy on top of the sysroot's (`--keys`).
    public var extraTrust = RepositoryTrust()
    /// As `DeployOptions.stage` and `lockFinalization`.
    public var stage: Bool?
    public var lockFinalization = false
    public init() {}
}

public enum UpgradeOutcome: Sendable {
    /// The origin names the commit already deployed.
    case upToDate(refspec: String, commit: String)
    /// `--check`: the origin names another commit.
    case available(refspec: String, from: String, to: String, version: String?)
    /// `--pull-only`: fetched, not deployed.
    case pulled(refspec: String, commit: String)
    case deployed(DeployResult)
}

public struct UpgradeResult: Sendable {
    public var outcome: UpgradeOutcome
    public var pull: PullReport?
}

/// An origin refspec, `REMOTE:REF` or a local `REF`.
public struct Refspec: Sendable, CustomStringConvertible {
    public var remote: String?
    public var ref: String

    public init(parsing text: String) throws {
        if let colon = text.firstIndex(of: ":") {
            remote = String(text[..<colon])
            ref = String(text[text.index(after: colon)...])
            guard !(remote ?? "").isEmpty, !ref.isEmpty else { throw DeployError("refspec '\(text)'", "expected REMOTE:REF") }
        } else {
            remote = nil
            ref = text
        }
        try Repository.validateRef(ref)
    }

    public var description: String { remote.map { "\($0):\(ref)" } ?? ref }
}

extension Sysroot {
    /// The deployment an upgrade starts from: the booted one, else the default.
    func upgradeBase(_ state: SysrootState) throws -> Deployment {
        guard let d = state.bootedIndex.map({ state.deployments[$0] }) ?? state.deployments.first else {
            throw DeployError("upgrade", "there are no deployments; deploy one first ('cairn deploy' or 'cairn switch REMOTE:REF')")
        }
        return d
    }

    /// Pulls the origin of the booted (else default) deployment and deploys
    /// it, as `cairn deploy` does (merge, trust policy, retention).
    public func upgrade(_ o: UpgradeOptions) throws -> UpgradeResult {
        let base = try upgradeBase(try loadState())
        guard let origin = base.refspec else {
            throw DeployError("upgrade", "deployment \(base.name) records no origin refspec; use 'cairn switch REMOTE:REF'")
        }
        return try update(to: try Refspec(parsing: origin), from: base, o)
    }

    /// Pulls `refspec` and deploys it, recording it as the new origin.
    public func switchTo(_ refspec: Refspec, _ o: UpgradeOptions) throws -> UpgradeResult {
        let state = try loadState()
        let base = state.bootedIndex.map { state.deployments[$0] } ?? state.deployments.first
        return try update(to: refspec, from: base, o)
    }

    func update(to spec: Refspec, from base: Deployment?, _ o: UpgradeOptions) throws -> UpgradeResult {
        // Before the pull starts its threads: they inherit the namespace.
        try ensureWritable()
        let repo = try repository()
        let refspec = spec.description
        let current = base?.checksum
        let currentTime = try current.map { try repo.commit($0).timestamp }

        if o.check {
            let target: String
            var version: String?
            if let remote = spec.remote {
                guard let r = try repo.remoteState(remote, revoked: o.pull.revoked, stallTimeout: o.pull.stallTimeout).ref(spec.ref) else {
                    throw DeployError("checking \(refspec)", "the remote's summary has no ref \(spec.ref)")
                }
                (target, version) = (r.checksum, r.version)
            } else {
                target = try repo.resolve(spec.ref)
                version = (try? repo.commit(target))?.version
            }
            if target == current { return UpgradeResult(outcome: .upToDate(refspec: refspec, commit: target)) }
            return UpgradeResult(outcome: .available(refspec: refspec, from: current ?? "", to: target, version: version))
        }

        var report: PullReport?
        if let remote = spec.remote {
            var pull = o.pull
            pull.accept = { ref, commit in
                guard commit != current, let currentTime, !o.allowDowngrade else { return }
                let time = try repo.commit(commit).timestamp
                if time < currentTime {
                    throw DeployError("refusing \(refspec) at \(commit)",
                                      "its timestamp \(time) is older than the deployed commit's \(currentTime) (a downgrade); --allow-downgrade accepts it")
                }
            }
            report = try repo.pull(remote: remote, refs: [spec.ref], pull)
        }
        let target = try repo.resolve(refspec)
        if target == current && base?.refspec == refspec {
            return UpgradeResult(outcome: .upToDate(refspec: refspec, commit: target), pull: report)
        }
        if spec.remote == nil, let currentTime, !o.allowDowngrade, try repo.commit(target).timestamp < currentTime {
            throw DeployError("refusing \(refspec) at \(target)", "it is older than the deployed commit (a downgrade); --allow-downgrade accepts it")
        }
        if o.pullOnly { return UpgradeResult(outcome: .pulled(refspec: refspec, commit: target), pull: report) }
        var deploy = DeployOptions(rev: refspec)
        deploy.stateroot = base?.stateroot
        deploy.extraTrust = o.extraTrust
        deploy.stage = o.stage
        deploy.lockFinalization = o.lockFinalization
        return UpgradeResult(outcome: .deployed(try self.deploy(deploy)), pull: report)
    }
}
