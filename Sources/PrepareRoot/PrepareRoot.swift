#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem
import CCrypto
import Composefs
import Trust

/// Why the root was not mounted: one line naming the cause.
public struct PrepareRootError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What the program was asked to do (from argv, the environment and defaults).
public struct PrepareRootOptions: Sendable {
    public var sysroot: [UInt8] = Array("/sysroot".utf8)
    /// The command line text; nil reads /proc/cmdline.
    public var commandLine: [UInt8]? = nil
    /// A configuration file used instead of the search below.
    public var configFile: String? = nil
    /// First existing file wins, wholesale (upstream order).
    public var configSearch = ["/etc/ostree/prepare-root.conf", "/usr/lib/ostree/prepare-root.conf"]
    /// Where ostree-booted and the transient upper layers go.
    public var runDir: [UInt8] = Array("/run".utf8)
    /// Console log; nil for none.
    public var kmsg: String? = "/dev/kmsg"
    /// fs-verity in signed and pinned modes: the image's, measured by the
    /// kernel, and overlayfs `verity=require` on every backing file. Only a
    /// test build (CAIRN_TEST_KNOBS, the debug configuration) can turn it
    /// off, from its environment; the program built for an initramfs has
    /// no such switch.
    public private(set) var requireVerity = true

    public init() {}

    public static let usage = """
        usage: cairn-prepare-root [--cmdline TEXT] [--config FILE] [--run-dir DIR] [--kmsg PATH|none] [SYSROOT]
               cairn-prepare-root seal SYSROOT

        Finds the deployment named by ostree= on the kernel command line under
        SYSROOT (default /sysroot), verifies it as prepare-root.conf says
        ([composefs] enabled = signed|verity|yes|maybe|no, keypath, revokedkeypath,
        [etc] transient, [root] transient, [sysroot] readonly), mounts its
        composefs image with /etc, /var and /sysroot, moves it onto SYSROOT and
        writes RUN/ostree-booted. Signed, verity and pinned (composefs.digest=)
        modes need fs-verity on the image and on every object.

          --cmdline TEXT   use TEXT instead of /proc/cmdline
          --config FILE    use FILE instead of /etc/ostree/prepare-root.conf,
                           else /usr/lib/ostree/prepare-root.conf
          --run-dir DIR    instead of /run (ostree-booted, transient layers)
          --kmsg PATH      console log instead of /dev/kmsg; none: no console log

        seal SYSROOT enables fs-verity on every repository object and deployment
        image (what `cairn post-copy` does), for a first boot on the target.

        """ + testKnobUsage

    #if CAIRN_TEST_KNOBS
    /// The test switch: only in test builds (debug configuration).
    public static let noVerityKnob = "CAIRN_PREPARE_ROOT_NO_VERITY_REQUIRE"
    static let testKnobUsage = """

        TEST BUILD. \(noVerityKnob)=1 in the environment
        lets signed and pinned modes mount an image without fs-verity (its digest
        is then computed from its content and compared) and drops verity=require,
        for kernels without fs-verity. Programs built for an initramfs (release)
        lack this switch.

        """
    #else
    static let testKnobUsage = ""
    #endif

    /// Parses argv (without the program name). Throws a usage message.
    public init(arguments: [String], environment: (String) -> String? = { getenv($0).map { String(cString: $0) } }) throws(PrepareRootError) {
        var positional: [String] = []
        var i = 0
        func value(_ name: String) throws(PrepareRootError) -> String {
            i += 1
            guard i < arguments.count else { throw PrepareRootError("\(name) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            let a = arguments[i]
            var name = a, inline: String? = nil
            if a.hasPrefix("--"), let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                inline = String(a[a.index(after: eq)...])
            }
            func v() throws(PrepareRootError) -> String { if let inline { return inline }; return try value(name) }
            switch name {
            case "--cmdline": commandLine = Array(try v().utf8)
            case "--config": configFile = try v()
            case "--run-dir": runDir = Array(try v().utf8)
            case "--kmsg": let k = try v(); kmsg = k == "none" ? nil : k
            case "-h", "--help": throw PrepareRootError("help")
            case "--": positional += arguments[(i + 1)...]; i = arguments.count; continue
            default:
                if a.hasPrefix("-") && a != "-" { throw PrepareRootError("unknown option \(a)") }
                positional.append(a)
            }
            i += 1
        }
        guard positional.count <= 1 else { throw PrepareRootError("more than one SYSROOT given") }
        if let s = positional.first {
            guard !s.isEmpty else { throw PrepareRootError("empty SYSROOT") }
            sysroot = Array(s.utf8)
        }
        #if CAIRN_TEST_KNOBS
        if environment(Self.noVerityKnob) == "1" { requireVerity = false }
        #endif
    }
}

/// What was mounted.
public struct PrepareRootOutcome: Sendable {
    public var mode: String
    public var deployment: String
    public var digest: [UInt8]?
    public var signingKey: String?
    public var composefs: Bool
}

public enum PrepareRoot {
    public static let name = "cairn-prepare-root"
    static let commitSizeLimit = 16 << 20

    /// The whole program: returns the exit status (0 mounted, 1 refused, 2 usage).
    public static func main(arguments: [String]) -> Int32 {
        let start = monotonicSeconds() * 1000
        let options: PrepareRootOptions
        do { options = try PrepareRootOptions(arguments: arguments) } catch {
            if error.message == "help" {
                try? FileDescriptor.standardOutput.write(PrepareRootOptions.usage)
                return 0
            }
            log("\(name): \(error.message) (--help for usage)", kmsg: nil, level: 3)
            return 2
        }
        #if CAIRN_TEST_KNOBS
        if !options.requireVerity {
            log("\(name): WARNING: TEST BUILD with \(PrepareRootOptions.noVerityKnob)=1: signed and pinned modes do not require fs-verity; never boot a system with it",
                kmsg: options.kmsg, level: 4)
        }
        #endif
        do {
            let o = try run(options)
            let ms = formatMilliseconds(monotonicSeconds() * 1000 - start)
            var line = "\(name): \(o.mode): mounted \(o.deployment) on \(displayPath(options.sysroot))"
            if let d = o.digest { line += ", composefs digest \(hexString(d))" }
            if let k = o.signingKey { line += ", signed by \(k)" }
            log(line + " in \(ms) ms", kmsg: options.kmsg, level: 6)
            return 0
        } catch {
            let ms = formatMilliseconds(monotonicSeconds() * 1000 - start)
            log("\(name): refusing to boot: \(error.message) (after \(ms) ms)", kmsg: options.kmsg, level: 3)
            return 1
        }
    }

    /// One line on stderr and, when writable, on the console log.
    static func log(_ message: String, kmsg: String?, level: Int) {
        let line = String(message.map { $0 == "\n" || $0 == "\r" ? " " : $0 }) + "\n"
        try? FileDescriptor.standardError.write(line)
        if let kmsg, let fd = try? FileDescriptor.open(kmsg, O_WRONLY | O_APPEND | O_NOCTTY) {
            try? fd.write("<\(level)>" + line)
            fd.close()
        }
    }

    static func formatMilliseconds(_ ms: Double) -> String {
        let tenths = Int((ms * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    static func readFile(_ path: [UInt8], limit: Int, what: String) throws(PrepareRootError) -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, O_RDONLY | O_NOFOLLOW)
            return try fd.closeAfter { () throws -> [UInt8] in try fd.readAll(limit: limit) }
        } catch let e as SystemError {
            if e.errno == EFBIG { throw PrepareRootError("\(what) \(displayPath(path)) is larger than \(limit) bytes") }
            throw PrepareRootError("cannot read \(what) \(displayPath(path)): \(e.message)")
        } catch {
            throw PrepareRootError("cannot read \(what) \(displayPath(path))")
        }
    }

    /// The configuration: `--config`, else the first file of the search path
    /// that exists (replacing the others wholesale), else the defaults.
    public static func loadConfig(_ o: PrepareRootOptions) throws(PrepareRootError) -> PrepareRootConfig {
        var file = o.configFile
        if file == nil { file = o.configSearch.first { FileSystem.exists(Array($0.utf8)) } }
        guard let file else { return PrepareRootConfig() }
        let bytes = try readFile(Array(file.utf8), limit: KeyFileDocument.sizeLimit, what: "configuration")
        do { return try PrepareRootConfig(parsing: bytes, file: file) } catch {
            throw PrepareRootError("configuration \(error.description)")
        }
    }

    /// Verifies and mounts. On any error everything mounted is unmounted
    /// and everything created is removed before the error is thrown.
    public static func run(_ o: PrepareRootOptions) throws(PrepareRootError) -> PrepareRootOutcome {
        let cmdline: [UInt8]
        if let c = o.commandLine { cmdline = c } else {
            cmdline = try readFile(Array("/proc/cmdline".utf8), limit: KernelCommandLine.sizeLimit, what: "kernel command line")
        }
        let boot: BootArguments
        do { boot = try BootArguments(commandLine: cmdline) } catch { throw PrepareRootError(error.description) }
        let config = try loadConfig(o)
        let mode = boot.composefsMode ?? config.composefs
        let pinned = boot.pinnedDigest
        guard mode != .no else {
            let from = boot.composefsMode != nil ? "ostree.prepare-root.composefs= on the command line" : "[composefs] enabled in \(config.source ?? "the defaults")"
            throw PrepareRootError("composefs is disabled (\(from)), and cairn deployments have no checkout of /usr to boot without it")
        }
        let strict = mode == .signed || mode == .verity || pinned != nil
        // fs-verity on the image and verity=require: always in verity mode;
        // in signed and pinned modes unless a test build is told otherwise.
        let requireVerity = mode == .verity || (strict && o.requireVerity)
        let baseModeName = pinned != nil && mode != .signed ? "kernel-pinned" : mode.rawValue
        #if CAIRN_TEST_KNOBS
        let modeName = strict && !requireVerity ? baseModeName + " (TEST BUILD: fs-verity not required)" : baseModeName
        #else
        let modeName = baseModeName
        #endif

        let resolver = try SysrootResolver(sysroot: o.sysroot)
        defer { resolver.close() }
        let (deploymentPath, deploymentDir) = try resolver.open(boot.ostreePath, as: .directory, what: "ostree=")
        defer { deploymentDir.close() }
        let deployment = try Deployment(deploymentPath, argument: boot.ostreePath)
        let deploymentName = "\(displayPath(deployment.stateroot))/\(deployment.checksum).\(deployment.serial)"
        func under(_ rel: String) -> [UInt8] { deployment.relativePath + Array(rel.utf8) }
        // What /run/ostree-booted names: the directory backing the new root.
        let deploymentStat: Glibc.stat
        do { deploymentStat = try deploymentDir.stat() } catch {
            throw PrepareRootError("cannot stat the deployment \(displayPath(deployment.path)): \(systemMessage(error))")
        }

        // The image, kept open: what is checked is what is mounted. Only
        // maybe mode may do without one.
        let image: SysrootResolver.Resolved?
        let imageFile: FileDescriptor?
        if mode == .maybe && !strict && !FileSystem.exists(deployment.path + Array("/.ostree.cfs".utf8)) {
            (image, imageFile) = (nil, nil)
        } else {
            (image, imageFile) = try resolver.open(under("/.ostree.cfs"), as: .regularFile, flags: O_RDONLY, what: "composefs image")
        }
        defer { imageFile?.close() }

        var expected = pinned
        var signingKey: String? = nil
        if mode == .signed {
            let policy: TrustPolicy
            do { policy = try TrustPolicy(trustedKeyFiles: [config.keyPath], revokedKeyFile: config.revokedKeyPath) } catch {
                throw PrepareRootError("cannot load the trusted keys: \(error.description)")
            }
            let c = deployment.checksum
            let commitFile = try resolver.resolve(Array(("ostree/repo/" + OstreeObject.loosePath(c, "commit")).utf8), as: .regularFile, what: "commit object")
            let commit = try readFile(commitFile.path, limit: commitSizeLimit, what: "commit object")
            guard hexString(OstreeObject.sha256(commit)) == c else {
                throw PrepareRootError("commit object \(displayPath(commitFile.path)) does not have the checksum \(c) of its name")
            }
            var meta: [UInt8]? = nil
            let metaRel = Array(("ostree/repo/" + OstreeObject.loosePath(c, "commitmeta")).utf8)
            if FileSystem.exists(resolver.join(metaRel.split(separator: 0x2f).map(Array.init))) {
                let f = try resolver.resolve(metaRel, as: .regularFile, what: "detached metadata")
                meta = try readFile(f.path, limit: commitSizeLimit, what: "detached metadata")
            }
            switch policy.verifiedComposefsDigest(commit: commit, detachedMetadata: meta) {
            case .failure(let f): throw PrepareRootError("commit \(c): \(f.description) (keys from \(config.keyPath))")
            case .success(let (verified, _, digest)):
                if let pinned, pinned != digest {
                    throw PrepareRootError("the command line pins composefs digest \(hexString(pinned)), the signed commit records \(hexString(digest))")
                }
                expected = digest
                signingKey = verified.keyBase64
            }
        }
        let objects = image == nil ? nil : try resolver.resolve(Array("ostree/repo/objects".utf8), as: .directory, what: "object store")
        let etc = try resolver.resolve(under("/etc"), as: .directory, what: "deployment /etc")
        let varDir = try resolver.resolve(Array("ostree/deploy/".utf8) + deployment.stateroot + Array("/var".utf8), as: .directory, what: "stateroot /var")

        var sysroot = o.sysroot
        while sysroot.count > 1 && sysroot.last == 0x2f { sysroot.removeLast() }
        let newRoot = sysroot + Array(".tmp".utf8)
        let transientEtc = o.runDir + Array("/ostree/transient-etc".utf8)
        let stack = MountStack()
        do throws(PrepareRootError) {
            // The new root sits on a private bind of itself, so that moving it
            // works even when the initramfs root is a shared mount.
            try stack.makeDirectories(newRoot)
            if !FileSystem.directoryEntriesOrEmpty(newRoot).isEmpty {
                throw PrepareRootError("\(displayPath(newRoot)) is not empty")
            }
            try stack.bind(newRoot, on: newRoot, what: "new root")
            guard newRoot.withCString({ Glibc.mount(nil, $0, nil, UInt(MS_PRIVATE), nil) }) == 0 else {
                throw PrepareRootError("making \(displayPath(newRoot)) private failed: \(SystemError.current("mount").message)")
            }
            if let image, let imageFile, let objects {
                do {
                    try ComposefsMount.mount(ComposefsMountOptions(image: image.path, mountpoint: newRoot, basedir: objects.path, expectedDigest: expected,
                                                                   requireImageVerity: requireVerity, requireVerity: requireVerity),
                                             image: imageFile)
                } catch let e as ComposefsError {
                    switch e.kind {
                    case .digestMismatch:
                        throw PrepareRootError("composefs image \(displayPath(image.path)) is not the one \(mode == .signed ? "the signed commit records" : "the command line pins"): \(e.message)")
                    case .noVerity:
                        throw PrepareRootError("composefs image \(displayPath(image.path)) has no fs-verity, which \(modeName) mode requires: run `cairn post-copy` on the running system, or `cairn-prepare-root seal` from the initramfs")
                    default:
                        throw PrepareRootError("composefs: \(e.description)")
                    }
                } catch {
                    throw PrepareRootError("composefs: \(error)")
                }
                stack.recordMount(newRoot)
            } else {
                try stack.bind(deployment.path, on: newRoot, what: "deployment (no composefs image, maybe mode)")
            }
            if config.rootTransient {
                let base = o.runDir + Array("/ostree/transient-root".utf8)
                try stack.makeDirectories(base + Array("/upper".utf8))
                try stack.makeDirectories(base + Array("/work".utf8))
                let data = "lowerdir=\(overlayEscape(newRoot)),upperdir=\(overlayEscape(base + Array("/upper".utf8))),workdir=\(overlayEscape(base + Array("/work".utf8)))"
                try stack.mount(Array("overlay".utf8), on: newRoot, type: "overlay", flags: 0, data: data, what: "transient root")
            }
            let etcTarget = newRoot + Array("/etc".utf8)
            if config.etcTransient {
                try stack.makeDirectories(transientEtc + Array("/upper".utf8))
                try stack.makeDirectories(transientEtc + Array("/work".utf8))
                let data = "lowerdir=\(overlayEscape(newRoot + Array("/usr/etc".utf8))),upperdir=\(overlayEscape(transientEtc + Array("/upper".utf8))),workdir=\(overlayEscape(transientEtc + Array("/work".utf8)))"
                try stack.mount(Array("overlay".utf8), on: etcTarget, type: "overlay", flags: 0, data: data, what: "transient /etc")
            } else if image != nil {
                try stack.bind(etc.path, on: etcTarget, what: "/etc")
            }
            try stack.bind(varDir.path, on: newRoot + Array("/var".utf8), what: "/var")
            try stack.bind(sysroot, on: newRoot + Array("/sysroot".utf8), readOnly: config.sysrootReadOnly, what: "/sysroot")

            let booted = o.runDir + Array("/ostree-booted".utf8)
            let record = BootedRecord(backingRootDeviceInode: .init(device: UInt64(deploymentStat.st_dev), inode: UInt64(deploymentStat.st_ino)),
                                      rootTransient: config.rootTransient, composefs: image != nil,
                                      composefsVerity: image != nil && requireVerity,
                                      signingKeyPath: signingKey == nil ? nil : config.keyPath,
                                      sysrootReadOnly: config.sysrootReadOnly,
                                      transientEtc: config.etcTransient ? String(decoding: transientEtc, as: UTF8.self) : nil)
            do {
                let bytes = try record.serialized()
                // A new file renamed over the name: never written through a symlink there.
                try FileSystem.writeAtomically(String(decoding: booted, as: UTF8.self)) { try $0.write(bytes) }
            } catch {
                throw PrepareRootError("cannot write \(displayPath(booted)): \(systemMessage(error))")
            }
            stack.recordFile(booted)

            // Every mount of the new tree goes private before it is attached
            // on the sysroot. Under systemd (a dracut initramfs) the
            // initramfs's mounts are shared, so the binds above of the
            // sysroot's /etc, /var and root joined the sysroot mount's peer
            // group; attaching the new root on the sysroot would then
            // propagate a copy of the whole new root onto its own /sysroot
            // bind, which after switch-root hides the physical root at
            // /sysroot behind a second composefs root. (Upstream makes all of
            // "/" recursively private; this touches only what we mounted.)
            guard newRoot.withCString({ Glibc.mount(nil, $0, nil, UInt(MS_REC | MS_PRIVATE), nil) }) == 0 else {
                throw PrepareRootError("making the mounts under \(displayPath(newRoot)) private failed: \(SystemError.current("mount").message)")
            }
            let moved = newRoot.withCString { s in sysroot.withCString { Glibc.mount(s, $0, nil, UInt(MS_MOVE), nil) } }
            guard moved == 0 else {
                throw PrepareRootError("moving \(displayPath(newRoot)) onto \(displayPath(sysroot)) failed: \(SystemError.current("mount").message)")
            }
        } catch {
            stack.unwind()
            throw error
        }
        // What stays at the temporary place (the private bind, and the
        // composefs mount under a transient root) goes; the moved tree stays.
        for _ in 0..<4 {
            if newRoot.withCString({ umount2($0, Int32(MNT_DETACH)) }) != 0 { break }
        }
        if stack.steps.contains(where: { if case .directory(let d) = $0 { return d == newRoot }; return false }) {
            _ = newRoot.withCString { rmdir($0) }
        }
        stack.commit()
        return PrepareRootOutcome(mode: modeName, deployment: deploymentName, digest: image == nil ? nil : expected,
                                  signingKey: signingKey, composefs: image != nil)
    }
}

/// The message of a SystemError, else the error's text.
func systemMessage(_ error: any Error) -> String {
    (error as? SystemError)?.message ?? "\(error)"
}

extension FileSystem {
    static func directoryEntriesOrEmpty(_ path: [UInt8]) -> [[UInt8]] {
        (try? directoryEntries(path)) ?? []
    }
}
