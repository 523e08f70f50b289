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

/// `image create --from-dir` with mkcomposefs's options as cairn-full
/// spells them; nil for anything else, or anything cairn-full would refuse
/// (it then prints the usage error).
struct ImageCreateArguments {
    var source = ""
    var image: String?
    var store: String?
    var scan = DirectoryScanOptions()
    var minVersion: UInt32?
    var maxVersion: UInt32?
    var printDigest = false
    var printDigestOnly = false

    init?(_ args: ArraySlice<String>) {
        var seen = Set<String>()
        var source: String?, threads: Int?
        var i = args.startIndex
        while i < args.endIndex {
            let a = args[i]
            i += 1
            if !a.hasPrefix("-") || a == "-" {
                guard image == nil else { return nil }
                image = a
                continue
            }
            var name = a, value: String? = nil
            if let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                value = String(a[a.index(after: eq)...])
            }
            guard seen.insert(name).inserted else { return nil }
            switch name {
            case "--use-epoch" where value == nil: scan.useEpoch = true
            case "--skip-xattrs" where value == nil: scan.skipXattrs = true
            case "--user-xattrs" where value == nil: scan.userXattrsOnly = true
            case "--skip-devices" where value == nil: scan.skipDevices = true
            case "--print-digest" where value == nil: printDigest = true
            case "--print-digest-only" where value == nil: printDigestOnly = true
            case "--from-dir", "--digest-store", "--min-version", "--max-version", "--threads":
                if value == nil, i < args.endIndex, !args[i].hasPrefix("-") {
                    value = args[i]
                    i += 1
                }
                guard let value, !value.isEmpty else { return nil }
                switch name {
                case "--from-dir": source = value
                case "--digest-store": store = value
                case "--min-version": guard let v = UInt32(value), v <= 1 else { return nil }; minVersion = v
                case "--max-version": guard let v = UInt32(value), v <= 1 else { return nil }; maxVersion = v
                default: guard let n = Int(value), n >= 1 else { return nil }; threads = n
                }
            default: return nil
            }
        }
        guard let source, printDigestOnly == (image == nil) else { return nil }
        if let lo = minVersion, let hi = maxVersion, lo > hi { return nil }
        self.source = source
        scan.digestStore = store.map { DigestStore(root: $0) }
        if let threads { scan.threads = threads }
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
case "image" where arguments.count > 2 && arguments[1] == "create":
    guard let c = ImageCreateArguments(arguments.dropFirst(2)) else { handOver() }
    // The same call as cairn-full's `image create --from-dir`.
    do {
        let options = ComposefsWriteOptions.commandLine(minVersion: c.minVersion, maxVersion: c.maxVersion, useEpoch: c.scan.useEpoch)
        let digest = try DirectoryImage.create(Array(c.source.utf8), scan: c.scan, options: options,
                                               output: DirectoryImage.Output(c.image), digest: c.printDigest)
        if let digest {
            // On stderr when the image itself went to stdout.
            let line = Array((hexString(digest) + "\n").utf8)
            if c.image == "-" { _ = try? FileDescriptor.standardError.write(line) } else { emit(String(decoding: line, as: UTF8.self)) }
        }
    } catch let e as SystemError where e.errno == EPIPE && c.image == "-" {
        exit(128 + SIGPIPE)
    } catch {
        fail(RepoError("creating image \(c.image ?? "(digest only)")", "\(error)"))
    }
default:
    handOver()
}
exit(0)
