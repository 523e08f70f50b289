import ArgumentParser
import CairnDeploy
import CairnSysroot
import CairnRepo
import CairnSystem
import Foundation

/// Lines describing one commit, as `ostree log` prints them.
func commitSummary(_ c: CommitInfo) -> String {
    var lines = ["commit \(c.checksum)"]
    if let p = c.parent { lines.append("Parent:  \(p)") }
    lines.append("ContentChecksum:  \(c.contentChecksum)")
    lines.append("Date:  \(Terminal.date(c.timestamp))")
    if let v = c.version { lines.append("Version: \(v)") }
    lines.append("")
    if !c.subject.isEmpty { lines.append("    \(c.subject)") }
    if !c.body.isEmpty {
        lines.append("")
        lines += c.body.split(separator: "\n", omittingEmptySubsequences: false).map { "    \($0)" }
    }
    return lines.joined(separator: "\n") + "\n"
}

struct LogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "log", abstract: "Show the history of a ref or commit.")

    @OptionGroup var repo: RepoOptions

    @Argument(help: ArgumentHelp("Ref or commit to start from.", valueName: "rev"))
    var rev: String

    func run() throws {
        let r = try repo.open()
        let history = try r.history(try r.resolve(rev))
        print(history.map(commitSummary).joined(separator: "\n"), terminator: "")
        if let last = history.last, let p = last.parent {
            print("\n<< History beyond this commit not in the repository: \(p) >>")
        }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a commit: subject, body, timestamp, parent, metadata, checksums.")

    @OptionGroup var repo: RepoOptions

    @Flag(help: "Print JSON.")
    var json = false

    @Argument(help: ArgumentHelp("Ref or commit.", valueName: "rev"))
    var rev: String

    func run() throws {
        let r = try repo.open()
        let c = try r.commit(try r.resolve(rev))
        if json {
            var metadata: [String: Any] = [:]
            for (key, value) in c.metadata { metadata[key] = jsonValue(value) }
            var object: [String: Any] = [
                "checksum": c.checksum,
                "subject": c.subject,
                "body": c.body,
                "timestamp": Terminal.isoDate(c.timestamp),
                "timestampUnix": c.timestamp,
                "contentChecksum": c.contentChecksum,
                "rootTree": c.rootTree,
                "rootMeta": c.rootMeta,
                "metadata": metadata,
                "parent": c.parent ?? NSNull(),
                "version": c.version ?? NSNull(),
            ]
            object["composefsDigest"] = c.composefsDigest.map(hexString) ?? NSNull()
            object["signatures"] = signatureJSON(try r.signatures(c.checksum))
            try Terminal.printJSON(object)
            return
        }
        print(commitSummary(c), terminator: "")
        print("")
        print("RootTree:  \(c.rootTree)")
        print("RootMeta:  \(c.rootMeta)")
        if !c.metadata.isEmpty {
            print("Metadata:")
            for (key, value) in c.metadata { print("  \(key): \(value.text)") }
        }
        print(signatureLines(try r.signatures(c.checksum)).joined(separator: "\n"))
    }

    private func jsonValue(_ v: MetadataValue) -> Any {
        switch v.plain {
        case .string(let s): return s
        case .bytes(let b): return hexString(b)
        case .byteArrays(let a): return a.map(hexString)
        case .strings(let a): return a
        case .uint64(let n): return n
        case .int64(let n): return n
        case .bool(let b): return b
        case .other: return ["type": v.type, "text": v.text]
        }
    }
}

struct LsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List a path of a commit.")

    @OptionGroup var repo: RepoOptions

    @Flag(name: [.customShort("R"), .long], help: "List directories recursively.")
    var recursive = false

    @Argument(help: ArgumentHelp("Ref or commit.", valueName: "rev"))
    var rev: String

    @Argument(help: ArgumentHelp("Path inside the commit (default: /).", valueName: "path"))
    var path: String = "/"

    func run() throws {
        let r = try repo.open()
        let entry = try r.lookup(commit: try r.resolve(rev), path: path)
        var out: [UInt8] = []
        func line(_ e: TreeEntry) {
            switch e.kind {
            case .directory(_, _, let m):
                out += listingLine(type: "d", mode: m.mode, uid: m.uid, gid: m.gid, size: 0, path: e.path, target: nil)
            case .file(let f):
                out += listingLine(type: f.isSymlink ? "l" : "-", mode: f.mode, uid: f.uid, gid: f.gid,
                                   size: f.isSymlink ? 0 : f.size, path: e.path, target: f.symlinkTarget)
            }
            if out.count > 1 << 16 {
                Terminal.write(out)
                out.removeAll(keepingCapacity: true)
            }
        }
        if recursive {
            try r.walk(entry, line)
        } else {
            line(entry)
            for child in try r.children(of: entry) { line(child) }
        }
        Terminal.write(out)
    }
}

struct CatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cat", abstract: "Write the content of a file in a commit to stdout.")

    @OptionGroup var repo: RepoOptions

    @Argument(help: ArgumentHelp("Ref or commit.", valueName: "rev"))
    var rev: String

    @Argument(help: ArgumentHelp("Path of a regular file inside the commit.", valueName: "path"))
    var path: String

    func run() throws {
        let r = try repo.open()
        let entry = try r.lookup(commit: try r.resolve(rev), path: path)
        guard case .file(let f) = entry.kind else {
            throw RepoError("cat \(path)", "is a directory")
        }
        guard !f.isSymlink else { throw RepoError("cat \(path)", "is a symbolic link to \(displayPath(f.symlinkTarget!))") }
        Output.flush()
        try r.readContent(f.checksum) { try FileDescriptor.standardOutput.write($0) }
    }
}

struct RefsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "refs", abstract: "List refs.")

    @OptionGroup var repo: RepoOptions

    @Flag(name: .long, help: "Also print the commit each ref points at.")
    var commits = false

    func run() throws {
        for ref in try repo.open().refs() {
            print(commits ? "\(ref.name) \(ref.commit)" : ref.name)
        }
    }
}

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "diff", abstract: "List paths added (A), modified (M) and removed (D) between two commits.")

    @OptionGroup var repo: RepoOptions

    @Argument(help: ArgumentHelp("The older ref or commit.", valueName: "rev1"))
    var from: String

    @Argument(help: ArgumentHelp("The newer ref or commit.", valueName: "rev2"))
    var to: String

    func run() throws {
        let r = try repo.open()
        let d = try r.diff(try r.resolve(from), try r.resolve(to))
        var out: [UInt8] = []
        for (tag, paths) in [("M", d.modified), ("D", d.removed), ("A", d.added)] {
            for p in paths { out += Array("\(tag)    ".utf8) + p + [0x0a] }
        }
        Terminal.write(out)
    }
}

struct FsckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsck",
        abstract: "Verify every object's checksum, that every commit is complete, and that each commit's composefs image is the one it records.",
        discussion: "On a sysroot's repository (--sysroot, or a --repo at <sysroot>/ostree/repo) every deployment is checked too: its commit, the ref that keeps it from prune, and its image's digest."
    )

    @OptionGroup var repo: RepoOptions

    @Option(help: ArgumentHelp("Check this sysroot's repository and deployments.", valueName: "path"))
    var sysroot: String?

    @Option(help: ArgumentHelp("The sysroot's EFI system partition, when systemd-boot boots it.", valueName: "path"))
    var esp: String?

    func validate() throws {
        if sysroot != nil && repo.repo != nil { throw ValidationError("give --sysroot or --repo, not both") }
    }

    func run() throws {
        let s = sysroot.map { Sysroot(path: $0) }
        let r = try s?.repository() ?? repo.open()
        let progress = Terminal.stderrIsTerminal ? ProgressLine() : nil
        var report = try r.fsck(progress: progress.map { p in { done, total in if done % 500 == 0 { p.update("fsck: \(done)/\(total) objects") } } })
        progress?.finish()
        var deployments = ""
        if let owner = s ?? Sysroot.owning(repositoryPath: r.path) {
            owner.esp = esp
            let problems = try owner.checkDeployments(repo: r)
            report.problems += problems
            deployments = " and the deployments of \(owner.path)"
        }
        for problem in report.problems { Terminal.error(problem) }
        for c in report.partialCommits { Terminal.note("commit \(c) is partial (an interrupted pull): not checked; pull it again to complete it") }
        print("Checked \(report.objectsChecked) objects in \(report.commitsChecked) commits\(deployments): " +
              (report.problems.isEmpty ? "no problems" : "\(report.problems.count) problem(s)"))
        if !report.problems.isEmpty { throw ExitCode(1) }
    }
}

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prune", abstract: "Delete objects that no ref reaches.")

    @OptionGroup var repo: RepoOptions

    @Flag(name: .customLong("refs-only"), help: "Keep only objects reachable from refs (commits without a ref go too).")
    var refsOnly = false

    @Option(name: .customLong("keep-younger-than"), help: ArgumentHelp("Delete commits older than DATE that no ref points at (YYYY-MM-DD, 'YYYY-MM-DD HH:MM:SS', @EPOCH or 'N days ago'; UTC).", valueName: "date"))
    var keepYoungerThan: String?

    @Option(help: ArgumentHelp("Keep only N parents of each ref (-1: all).", valueName: "n"))
    var depth: Int32 = -1

    @Flag(name: .customLong("dry-run"), help: "Report what would be deleted without deleting.")
    var dryRun = false

    func validate() throws {
        if let k = keepYoungerThan, parseDate(k) == nil {
            throw ValidationError("--keep-younger-than: cannot read '\(k)' as a date")
        }
        if depth < -1 { throw ValidationError("--depth must be -1 or more") }
    }

    func run() throws {
        let r = try repo.open()
        var options = PruneOptions()
        options.refsOnly = refsOnly
        options.depth = depth
        options.dryRun = dryRun
        options.keepYoungerThan = keepYoungerThan.flatMap { parseDate($0) }
        let report = try r.prune(options)
        for c in report.commitsDeleted { print("\(dryRun ? "Would delete" : "Deleted") commit \(c)") }
        print("Total objects: \(report.objectsTotal)")
        if report.objectsPruned == 0 {
            print("No unreachable objects")
        } else {
            print("\(dryRun ? "Would delete" : "Deleted") \(report.objectsPruned) objects, \(formatBytes(report.bytesFreed)) freed")
        }
    }
}

/// Reads YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]", ISO 8601 with T/Z, @EPOCH,
/// or "N (seconds|minutes|hours|days|weeks) ago"; UTC.
func parseDate(_ text: String, now: UInt64 = UInt64(Date().timeIntervalSince1970)) -> UInt64? {
    let t = text.trimmingCharacters(in: .whitespaces)
    if t.hasPrefix("@") { return UInt64(t.dropFirst()) }
    let words = t.split(separator: " ")
    if words.count == 3, words[2] == "ago", let n = UInt64(words[0]) {
        let unit = words[1].hasSuffix("s") ? String(words[1].dropLast()) : String(words[1])
        let seconds: [String: UInt64] = ["second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800]
        guard let s = seconds[unit] else { return nil }
        let (d, overflow) = n.multipliedReportingOverflow(by: s)
        return overflow || d > now ? 0 : now - d
    }
    var normalized = t.replacingOccurrences(of: "T", with: " ")
    if normalized.hasSuffix("Z") { normalized.removeLast() }
    let parts = normalized.split(separator: " ")
    guard (1...2).contains(parts.count) else { return nil }
    let ymd = parts[0].split(separator: "-").compactMap { Int32($0) }
    guard ymd.count == 3 else { return nil }
    var hms: [Int32] = [0, 0, 0]
    if parts.count == 2 {
        let p = parts[1].split(separator: ":").compactMap { Int32($0) }
        guard (2...3).contains(p.count) else { return nil }
        for (i, v) in p.enumerated() { hms[i] = v }
    }
    guard (1...12).contains(ymd[1]), (1...31).contains(ymd[2]), (0...23).contains(hms[0]),
          (0...59).contains(hms[1]), (0...60).contains(hms[2]) else { return nil }
    var tmv = tm()
    tmv.tm_year = ymd[0] - 1900
    tmv.tm_mon = ymd[1] - 1
    tmv.tm_mday = ymd[2]
    tmv.tm_hour = hms[0]
    tmv.tm_min = hms[1]
    tmv.tm_sec = hms[2]
    let seconds = timegm(&tmv)
    return seconds < 0 ? nil : UInt64(seconds)
}
