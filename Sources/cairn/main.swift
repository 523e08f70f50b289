// The cairn front end. Commands a machine runs often and wants at once
// (`status`, `image digest`, `--version`) are answered here: this program
// loads no libostree, GLib, gpgme, libarchive or Foundation, and starts in
// about a millisecond. Everything else, and any spelling of these commands
// it does not recognise in full (help, unknown options), goes to
// cairn-full, which parses it with the argument parser and prints its
// usage messages. Both print errors as `cairn: error: ...`.
import CairnSysroot
import CairnSystem
import Composefs
import Trust
#if canImport(Glibc)
import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())

/// stdout through write(2): a reader that went away (EPIPE) ends the
/// program quietly with the status a shell shows for SIGPIPE.
func emit(_ text: String) {
    do { try FileDescriptor.standardOutput.write(Array(text.utf8)) } catch let e as SystemError where e.errno == EPIPE {
        exit(128 + SIGPIPE)
    } catch {
        exit(1)
    }
}

func fail(_ error: Error) -> Never {
    let message = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).joined(separator: " ")
    _ = try? FileDescriptor.standardError.write(Array("cairn: error: \(message)\n".utf8))
    exit(1)
}

/// cairn-full: beside this program in a build folder, else in
/// `<prefix>/libexec/cairn/` as `make install` puts it.
func fullProgram() -> String {
    let me = (try? FileSystem.realPath(Array("/proc/self/exe".utf8))).map { String(decoding: $0, as: UTF8.self) } ?? CommandLine.arguments[0]
    let folder = me.lastIndex(of: "/").map { String(me[..<$0]) } ?? "."
    let beside = folder + "/cairn-full"
    if FileSystem.exists(Array(beside.utf8)) { return beside }
    let parent = folder.lastIndex(of: "/").map { String(folder[..<$0]) } ?? ""
    return parent + "/libexec/cairn/cairn-full"
}

func handOver() -> Never {
    let program = fullProgram()
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
    execv(program, &argv)
    fail(RepoError("running \(program)", String(cString: strerror(errno))))
}

/// `status` with the options it takes (`--sysroot`, `--esp`, `--json`,
/// `--keys`, as `--opt value` or `--opt=value`); nil for anything else.
struct StatusArguments {
    var sysroot: String?
    var esp: String?
    var json = false
    var keys: [String] = []

    init?(_ args: ArraySlice<String>) {
        var i = args.startIndex
        while i < args.endIndex {
            let a = args[i]
            i += 1
            if a == "--json" { json = true; continue }
            var name = a, value: String? = nil
            if let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                value = String(a[a.index(after: eq)...])
            } else if i < args.endIndex, !args[i].hasPrefix("-"), !args[i].isEmpty {
                value = args[i]
                i += 1
            }
            guard let value else { return nil }
            switch name {
            case "--sysroot": sysroot = value
            case "--esp": esp = value
            case "--keys": keys.append(value)
            default: return nil
            }
        }
    }
}

switch arguments.first {
case "--version" where arguments.count == 1:
    emit(cairnVersion + "\n")
case "status":
    guard let options = StatusArguments(arguments.dropFirst()) else { handOver() }
    signal(SIGPIPE, SIG_IGN)
    do {
        let sysroot = Sysroot(path: options.sysroot ?? Sysroot.defaultPath())
        sysroot.esp = options.esp
        let report = try sysroot.statusReport(extraTrustedKeys: try RepositoryTrust(keyFiles: options.keys, revokedKeyFile: nil).trusted)
        for w in report.warnings { _ = try? FileDescriptor.standardError.write(Array("cairn: warning: \(w)\n".utf8)) }
        emit(options.json ? report.json().serialized() : report.text())
    } catch {
        fail(error)
    }
case "image" where arguments.count > 2 && arguments[1] == "digest" && !arguments.dropFirst(2).contains(where: { $0.hasPrefix("-") }):
    signal(SIGPIPE, SIG_IGN)
    do { try KernelVerity.printDigests(of: Array(arguments.dropFirst(2)), emit) } catch { fail(error) }
default:
    handOver()
}
exit(0)
