import ArgumentParser
import CairnRepo
import CairnSysroot
import CairnSystem
import Foundation

struct Cairn: ParsableCommand {
    /// The release; `cairn --version` prints it.
    static let version = cairnVersion

    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "Atomic OS deployments: commit trees into an ostree repository, deploy them as signed composefs images.",
        discussion: """
        Exit status: 0 on success, 1 on failure, 2 on a usage error.
        Shell completion: cairn --generate-completion-script bash|zsh|fish
        """,
        version: version,
        groupedSubcommands: [
            CommandGroup(name: "Repository", subcommands: [
                InitCommand.self, CommitCommand.self, LogCommand.self, ShowCommand.self, LsCommand.self, CatCommand.self,
                RefsCommand.self, DiffCommand.self, FsckCommand.self, PruneCommand.self,
            ]),
            CommandGroup(name: "Images", subcommands: [ImageCommand.self]),
            CommandGroup(name: "Signing", subcommands: [KeygenCommand.self, SignCommand.self, VerifyCommand.self, TrustCommand.self]),
            CommandGroup(name: "Deployments", subcommands: [
                SysrootCommand.self, DeployCommand.self, StatusCommand.self, RollbackCommand.self, SetDefaultCommand.self,
                UndeployCommand.self, PinCommand.self, KargsCommand.self, CleanupCommand.self, ConfigDiffCommand.self,
                PostCopyCommand.self, FinalizeCommand.self, HealthCheckCommand.self,
            ]),
            CommandGroup(name: "Remotes and serving", subcommands: [
                RemoteCommand.self, PullCommand.self, PullLocalCommand.self, UpgradeCommand.self, SwitchCommand.self,
                SummaryCommand.self, StaticDeltaCommand.self,
            ]),
        ]
    )

    /// Parses the command line and runs the command; errors are printed
    /// once as `cairn: error: ...`.
    static func runMain() -> Never {
        // A closed pipe (`cairn ls -R | head`) is an EPIPE on the next write,
        // which Output turns into a quiet exit, as Unix tools end.
        signal(SIGPIPE, SIG_IGN)
        let arguments = Array(CommandLine.arguments.dropFirst())
        let command: ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                Output.flush()
                exit(withError: error)  // --help, --version, completion scripts
            }
            Terminal.error(usageMessage(for: error, arguments: arguments))
            Terminal.stderr("Run 'cairn help' or 'cairn <command> --help' for usage.\n")
            Output.exit(2)
        }
        do {
            var command = command
            try command.run()
            Output.exit(0)
        } catch let code as ExitCode {
            Output.exit(code.rawValue)
        } catch let error as ValidationError {
            Terminal.error(error.message)
            Output.exit(2)
        } catch where exitCode(for: error) == .success {
            Output.flush()
            exit(withError: error)  // argument-parser's own (help requests)
        } catch let e as SystemError where e.errno == EPIPE {
            Output.exit(Output.closedPipeStatus)
        } catch {
            Terminal.error(String(describing: error).replacingOccurrences(of: "\n", with: " "))
            Output.exit(1)
        }
    }

    /// One line for a command line that does not parse. The parser lists
    /// several problems, a missing argument often first; an unknown option
    /// or command is what the user mistyped, so it wins, with the closest
    /// known name as a suggestion.
    static func usageMessage(for error: Error, arguments: [String]) -> String {
        var lines = fullMessage(for: error).split(separator: "\n").map { line -> String in
            var l = String(line)
            if l.hasPrefix("Error: ") { l.removeFirst(7) }
            return l
        }.filter { !$0.isEmpty && !$0.hasPrefix("Usage:") && !$0.hasPrefix("  See ") }
        if let unknown = lines.first(where: { $0.hasPrefix("Unknown option") || $0.hasPrefix("Unexpected argument") }) {
            lines = [unknown]
        }
        var message = lines.first ?? fullMessage(for: error)
        // The command the arguments name (as far as they name one), for suggestions.
        var command: ParsableCommand.Type = Cairn.self
        var named = 0
        while named < arguments.count, let sub = subcommand(of: command, named: arguments[named]) {
            command = sub
            named += 1
        }
        let names = subcommandNames(command)
        if named < arguments.count, !arguments[named].hasPrefix("-"), !names.isEmpty {
            let path = (["cairn"] + arguments[..<named]).joined(separator: " ")
            message = "unknown command '\(arguments[named])' for '\(path)'" + suggestion(arguments[named], names)
        } else if !message.contains("Did you mean"), let option = message.firstQuoted(after: "Unknown option "), option.hasPrefix("--") {
            message += suggestion(option, optionNames(command))
        }
        return message
    }

    static func subcommandNames(_ command: ParsableCommand.Type) -> [String] {
        command.configuration.subcommands.compactMap { $0.configuration.commandName }
    }

    static func subcommand(of command: ParsableCommand.Type, named name: String) -> ParsableCommand.Type? {
        command.configuration.subcommands.first { $0.configuration.commandName == name }
    }

    static func suggestion(_ word: String, _ candidates: [String]) -> String {
        let scored = candidates.map { ($0, editDistance(word, $0)) }.filter { $0.1 <= max(2, word.count / 3) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return "" }
        return "; did you mean '\(best.0)'?"
    }

    /// Levenshtein distance.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}

/// Every long option name ("--karg") a command's help lists.
func optionNames(_ command: ParsableCommand.Type) -> [String] {
    var names: Set<String> = []
    for word in command.helpMessage(columns: 1000).split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" || $0 == "<" || $0 == "=" }) {
        guard word.hasPrefix("--"), word.count > 2 else { continue }
        names.insert(String(word.prefix { $0 == "-" || $0.isLetter || $0.isNumber }))
    }
    return names.sorted()
}

extension String {
    /// The text between the first pair of single quotes after `prefix`.
    func firstQuoted(after prefix: String) -> String? {
        guard let r = range(of: prefix) else { return nil }
        let tail = self[r.upperBound...]
        guard let open = tail.firstIndex(of: "'") else { return nil }
        let afterOpen = tail[tail.index(after: open)...]
        guard let close = afterOpen.firstIndex(of: "'") else { return nil }
        return String(afterOpen[..<close])
    }
}

/// `--repo`, shared by every command that works on a repository.
struct RepoOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Path of the ostree repository (default: $CAIRN_REPO, else /ostree/repo on an ostree or cairn system).", valueName: "path"))
    var repo: String?

    /// The repository named, else $CAIRN_REPO; nil when neither names one.
    var named: String? {
        repo ?? ProcessInfo.processInfo.environment["CAIRN_REPO"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The named repository, else this system's own /ostree/repo, but only
    /// where it exists: no command writes into / of a machine that is not an
    /// ostree or cairn system because a --repo was forgotten.
    var path: String {
        get throws {
            if let named { return named }
            guard FileManager.default.fileExists(atPath: "/ostree/repo/config") else {
                throw ValidationError("no repository named: give --repo PATH or set CAIRN_REPO (/ostree/repo is the default only on an ostree or cairn system, and this machine has none)")
            }
            return "/ostree/repo"
        }
    }

    func open() throws -> Repository {
        try Repository.open(path: try path)
    }
}

/// stdout, buffered, written with write(2): a reader that went away
/// (EPIPE) ends the program quietly, as Unix tools end on SIGPIPE, instead
/// of Foundation's FileHandle trapping.
enum Output {
    /// What a shell reports for a program ended by SIGPIPE.
    static let closedPipeStatus: Int32 = 128 + SIGPIPE
    nonisolated(unsafe) static var buffer: [UInt8] = []

    static func write(_ bytes: [UInt8]) {
        buffer += bytes
        if buffer.count >= 1 << 16 { flush() }
    }

    static func flush() {
        guard !buffer.isEmpty else { return }
        let pending = buffer
        buffer = []
        do { try FileDescriptor.standardOutput.write(pending) } catch let e as SystemError where e.errno == EPIPE {
            Foundation.exit(closedPipeStatus)
        } catch {
            // stdout is gone some other way (closed, full disk): nothing can report it there.
            Foundation.exit(1)
        }
    }

    static func exit(_ status: Int32) -> Never {
        flush()
        Foundation.exit(status)
    }
}

/// The cairn module's print: through Output, so that every line of every
/// command survives a closed pipe the same way.
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    Output.write(Array((items.map { "\($0)" }.joined(separator: separator) + terminator).utf8))
}

enum Terminal {
    static func error(_ message: String) {
        stderr("cairn: error: \(message)\n")
    }

    static func warning(_ message: String) {
        stderr("cairn: warning: \(message)\n")
    }

    static func note(_ message: String) {
        stderr("cairn: \(message)\n")
    }

    /// Writes to stderr after what stdout holds, ignoring a closed stderr.
    static func stderr(_ text: String) {
        Output.flush()
        try? FileDescriptor.standardError.write(text)
    }

    static var stderrIsTerminal: Bool { isatty(2) == 1 }

    /// Writes raw bytes to stdout.
    static func write(_ bytes: [UInt8]) {
        Output.write(bytes)
    }

    /// "2026-11-28 00:09:19 +0000"
    static func date(_ seconds: UInt64) -> String {
        var t = time_t(seconds)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S +0000", &tmv)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "2026-11-28T00:09:19Z"
    static func isoDate(_ seconds: UInt64) -> String {
        var t = time_t(seconds)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%SZ", &tmv)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func printJSON(_ value: Any) throws {
        let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        Output.write(Array(data) + [0x0a])
    }
}

/// The folder part of a path ("" for a bare name), without Foundation's
/// NSString path methods, which trap on some short relative paths.
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    let parent = String(path[..<slash])
    return parent.isEmpty ? "/" : parent
}
