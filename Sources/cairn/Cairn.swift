import ArgumentParser
import CairnRepo
import Foundation

struct Cairn: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cairn",
        abstract: "Atomic OS deployments: commit trees into an ostree repository, deploy them as signed composefs images.",
        discussion: """
        Exit status: 0 on success, 1 on failure, 2 on a usage error.
        Shell completion: cairn --generate-completion-script bash|zsh|fish
        """,
        subcommands: [
            InitCommand.self, CommitCommand.self, LogCommand.self, ShowCommand.self,
            LsCommand.self, CatCommand.self, RefsCommand.self, DiffCommand.self,
            FsckCommand.self, PruneCommand.self, ImageCommand.self,
            KeygenCommand.self, SignCommand.self, VerifyCommand.self,
            SysrootCommand.self, DeployCommand.self, StatusCommand.self, RollbackCommand.self,
            SetDefaultCommand.self, UndeployCommand.self, PinCommand.self, KargsCommand.self,
            CleanupCommand.self, ConfigDiffCommand.self, PostCopyCommand.self,
        ]
    )

    /// Parses the command line and runs the command; errors are printed
    /// once as `cairn: error: ...`.
    static func runMain() -> Never {
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)  // --help, --version, completion scripts
            }
            var message = fullMessage(for: error)
            if message.hasPrefix("Error: ") { message.removeFirst(7) }
            Terminal.error(message.split(separator: "\n").first.map(String.init) ?? message)
            FileHandle.standardError.write(Data("Run 'cairn help' or 'cairn <command> --help' for usage.\n".utf8))
            Foundation.exit(2)
        }
        do {
            var command = command
            try command.run()
            Foundation.exit(0)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch let error as ValidationError {
            Terminal.error(error.message)
            Foundation.exit(2)
        } catch where exitCode(for: error) == .success {
            exit(withError: error)  // argument-parser's own (help requests)
        } catch {
            Terminal.error(String(describing: error).replacingOccurrences(of: "\n", with: " "))
            Foundation.exit(1)
        }
    }
}

/// `--repo`, shared by every command that works on a repository.
struct RepoOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Path of the ostree repository (default: $CAIRN_REPO, else /ostree/repo).", valueName: "path"))
    var repo: String?

    var path: String {
        repo ?? ProcessInfo.processInfo.environment["CAIRN_REPO"].flatMap { $0.isEmpty ? nil : $0 } ?? "/ostree/repo"
    }

    func open() throws -> Repository {
        try Repository.open(path: path)
    }
}

enum Terminal {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("cairn: error: \(message)\n".utf8))
    }

    static func warning(_ message: String) {
        FileHandle.standardError.write(Data("cairn: warning: \(message)\n".utf8))
    }

    static func note(_ message: String) {
        FileHandle.standardError.write(Data("cairn: \(message)\n".utf8))
    }

    static var stderrIsTerminal: Bool { isatty(2) == 1 }

    /// Writes raw bytes to stdout.
    static func write(_ bytes: [UInt8]) {
        FileHandle.standardOutput.write(Data(bytes))
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
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}

/// The folder part of a path ("" for a bare name), without Foundation's
/// NSString path methods, which trap on some short relative paths.
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "" }
    let parent = String(path[..<slash])
    return parent.isEmpty ? "/" : parent
}
