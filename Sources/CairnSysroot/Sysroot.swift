import CairnSystem
import CCairnShim
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// Errors of the sysroot and deployment layers: what was being done
/// (naming the path, deployment or index) and why.
public typealias DeployError = RepoError

/// One deployment: a commit of a stateroot, its serial, and where its boot
/// entry points.
public struct Deployment: Sendable {
    public var stateroot: String
    public var checksum: String
    public var serial: Int
    public var bootChecksum: String
    /// Kernel arguments other than `ostree=`.
    public var kernelArguments: [String]
    public var origin: Origin
    /// The boot entry title, if it came from an entry.
    public var title: String?
    /// The boot entry file naming it, when read from one.
    public var entryFile: String?
    /// systemd-boot's boot counter in its entry's name: set while the
    /// deployment is on probation, nil once blessed (or never counted).
    public var bootCounter: BootCounter?

    package init(stateroot: String, checksum: String, serial: Int, bootChecksum: String, kernelArguments: [String], origin: Origin,
                 title: String? = nil, entryFile: String? = nil, bootCounter: BootCounter? = nil) {
        self.stateroot = stateroot
        self.checksum = checksum
        self.serial = serial
        self.bootChecksum = bootChecksum
        self.kernelArguments = kernelArguments
        self.origin = origin
        self.title = title
        self.entryFile = entryFile
        self.bootCounter = bootCounter
    }

    /// "<commit>.<serial>"
    public var name: String { "\(checksum).\(serial)" }
    public var relativePath: String { "ostree/deploy/\(stateroot)/deploy/\(name)" }
    public var pinned: Bool { origin.value(section: "libostree-transient", key: "pinned") == "true" }
    public var refspec: String? { origin.value(section: "origin", key: "refspec") }

    /// The same deployment (stateroot and `<commit>.<serial>`), whatever its entry holds.
    public func isSame(as other: Deployment) -> Bool { stateroot == other.stateroot && name == other.name }
}

/// An ostree origin file (a GLib key file), kept line by line so that what
/// cairn does not know survives a rewrite.
public struct Origin: Sendable {
    public var lines: [String]

    public init(text: String) {
        lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while lines.last == "" { lines.removeLast() }
    }

    public init(lines: [String]) { self.lines = lines }

    public init(refspec: String) {
        lines = ["[origin]", "refspec=\(refspec)"]
    }

    public var text: String { lines.joined(separator: "\n") + "\n" }

    public func value(section: String, key: String) -> String? {
        var current = ""
        for line in lines {
            let t = line.trimmingWhitespace()
            if t.hasPrefix("[") && t.hasSuffix("]") { current = String(t.dropFirst().dropLast()); continue }
            if current == section, let eq = t.firstIndex(of: "="), t[..<eq].trimmingWhitespace() == key {
                return t[t.index(after: eq)...].trimmingWhitespace()
            }
        }
        return nil
    }

    /// Sets (or with nil removes) a key, adding the section if needed.
    public mutating func set(section: String, key: String, _ value: String?) {
        var current = ""
        var sectionEnd: Int?
        for i in lines.indices {
            let t = lines[i].trimmingWhitespace()
            if t.hasPrefix("[") && t.hasSuffix("]") {
                current = String(t.dropFirst().dropLast())
                if current == section { sectionEnd = i + 1 }
                continue
            }
            if current == section {
                sectionEnd = i + 1
                if let eq = t.firstIndex(of: "="), t[..<eq].trimmingWhitespace() == key {
                    if let value { lines[i] = "\(key)=\(value)" } else { lines.remove(at: i) }
                    return
                }
            }
        }
        guard let value else { return }
        if let end = sectionEnd {
            lines.insert("\(key)=\(value)", at: end)
        } else {
            lines += ["[\(section)]", "\(key)=\(value)"]
        }
    }
}

/// What a sysroot holds now: the deployments in boot order (index 0 is the
/// default, the next boot) and which one is running.
public struct SysrootState: Sendable {
    /// 0 or 1, or nil before the first deployment.
    public var bootVersion: Int?
    public var bootLoader: BootLoader = .ostree
    /// The EFI system partition, with systemd-boot.
    public var esp: String?
    public var deployments: [Deployment]
    public var bootedIndex: Int?

    /// Whether the boot set names `d`.
    public func lists(_ d: Deployment) -> Bool { deployments.contains { $0.isSame(as: d) } }
}

/// A physical root in ostree's layout (interop spec section 4).
public final class Sysroot {
    public let path: String
    /// Messages for the user while a command runs (such as waiting for the lock).
    public var notice: (String) -> Void = { _ in }
    /// The EFI system partition's root folder (`--esp`), for systemd-boot;
    /// nil: found among the running system's mounts when needed.
    public var esp: String? { didSet { cachedLayout = nil } }
    package var cachedLayout: BootLayout?

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    /// An absolute path under the sysroot.
    public func at(_ relative: String) -> String {
        (path == "/" ? "" : path) + "/" + relative
    }

    public var repositoryPath: String { at("ostree/repo") }

    /// The refusal for a sysroot without the layout. For the running host's
    /// own root, no `sysroot init` is suggested: that would change its /boot.
    package func notInitialised() -> DeployError {
        if (try? FileSystem.realPath(Array(path.utf8))) == [0x2f] {
            return DeployError("sysroot /", "this machine is not an ostree or cairn system (no /ostree/repo or /ostree/deploy); name a sysroot elsewhere with --sysroot PATH")
        }
        return DeployError("sysroot \(path)", "not initialised (no ostree/repo or ostree/deploy); run 'cairn sysroot init \(path)'")
    }

    /// What `initialize(stateroot:)` would create: the paths that do not exist yet.
    public func initializationPlan(stateroot: String?) -> [String] {
        var paths = ["boot", "boot/boot", "boot/ostree", "ostree", "ostree/repo", "ostree/deploy"]
        if let stateroot { paths += ["ostree/deploy/\(stateroot)", "ostree/deploy/\(stateroot)/deploy", "ostree/deploy/\(stateroot)/var"] }
        return paths.map(at).filter { !FileSystem.exists(Array($0.utf8)) }
    }

    public func isInitialized() -> Bool {
        FileSystem.exists(Array(at("ostree/repo/config").utf8)) && FileSystem.exists(Array(at("ostree/deploy").utf8))
    }

    public static func validateStateroot(_ name: String) throws {
        let ok = !name.isEmpty && name.count < 256 && name != "." && name != ".." && !name.hasPrefix("-")
            && name.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d || $0 == 0x5f || $0 == 0x2e }
        guard ok else { throw DeployError("stateroot name '\(name)'", "use letters, digits, '.', '_' and '-'") }
    }

    public func stateroots() -> [String] {
        ((try? FileSystem.directoryEntries(Array(at("ostree/deploy").utf8))) ?? [])
            .map { String(decoding: $0, as: UTF8.self) }.sorted()
    }

    // MARK: Reading the current state

    /// The active boot version: from `/boot/loader -> loader.<v>`, or on an
    /// ESP from the live entries.
    public func currentBootVersion() throws -> Int? {
        try currentBootVersion(try layout())
    }

    package func currentBootVersion(_ layout: BootLayout) throws -> Int? {
        if case .esp(let esp) = layout { return try espBootVersion(esp) }
        guard FileSystem.exists(Array(at("boot/loader").utf8)) else { return nil }
        let target: [UInt8]
        do { target = try FileSystem.readLink(Array(at("boot/loader").utf8)) } catch let e as SystemError {
            throw DeployError("reading \(at("boot/loader"))", e.message)
        }
        switch String(decoding: target, as: UTF8.self) {
        case "loader.0": return 0
        case "loader.1": return 1
        case let other: throw DeployError("reading \(at("boot/loader"))", "points at '\(other)', not loader.0 or loader.1")
        }
    }

    /// Reads the deployments of the active boot entry set, default first.
    public func loadState() throws -> SysrootState {
        guard isInitialized() else {
            throw notInitialised()
        }
        let loader = try bootLoader()
        let layout = try layout()
        var espPath: String? = nil
        if case .esp(let esp) = layout { espPath = esp }
        guard let version = try currentBootVersion(layout) else {
            return SysrootState(bootVersion: nil, bootLoader: loader, esp: espPath, deployments: [], bootedIndex: nil)
        }
        let entriesDir = liveEntriesDirectory(layout, version: version)
        var entries: [(BootEntry, String)] = []
        for name in entryFileNames(layout, in: entriesDir) {
            let file = entriesDir + "/" + name
            entries.append((try BootEntry(parsing: try readText(file), file: file), file))
        }
        entries.sort { $0.0.version > $1.0.version }
        var deployments: [Deployment] = []
        for (entry, file) in entries {
            guard let arg = entry.ostreeArgument else {
                throw DeployError("reading boot entry \(file)", "no ostree= kernel argument")
            }
            deployments.append(try deployment(forOstreeArgument: arg, entry: entry, file: file))
        }
        return SysrootState(bootVersion: version, bootLoader: loader, esp: espPath, deployments: deployments, bootedIndex: bootedIndex(deployments))
    }

    /// Resolves `/ostree/boot.<v>/<stateroot>/<bootcsum>/<serial>` to its deployment.
    package func deployment(forOstreeArgument arg: String, entry: BootEntry?, file: String) throws -> Deployment {
        let parts = arg.split(separator: "/").map(String.init)
        guard parts.count == 5, parts[0] == "ostree", parts[1].hasPrefix("boot."), parts.allSatisfy({ $0 != ".." && $0 != "." }) else {
            throw DeployError("reading \(file)", "malformed ostree=\(arg)")
        }
        let link = at(parts.joined(separator: "/"))
        let target: String
        do { target = String(decoding: try FileSystem.readLink(Array(link.utf8)), as: UTF8.self) } catch let e as SystemError {
            throw DeployError("resolving ostree=\(arg) of \(file)", e.message)
        }
        // ../../../deploy/<stateroot>/deploy/<commit>.<serial>
        let t = target.split(separator: "/").map(String.init)
        guard t.count == 7, t[0] == "..", t[1] == "..", t[2] == "..", t[3] == "deploy", t[4] == parts[2], t[5] == "deploy" else {
            throw DeployError("resolving ostree=\(arg) of \(file)", "unexpected link target \(target)")
        }
        let name = t[6]
        guard let dot = name.lastIndex(of: "."), let serial = Int(name[name.index(after: dot)...]) else {
            throw DeployError("resolving ostree=\(arg) of \(file)", "deployment name \(name) is not <commit>.<serial>")
        }
        let checksum = String(name[..<dot])
        let stateroot = parts[2]
        let originFile = at("ostree/deploy/\(stateroot)/deploy/\(name).origin")
        let origin = (try? readText(originFile)).map { Origin(text: $0) } ?? Origin(lines: [])
        let fileName = String(file.split(separator: "/").last ?? "")
        let counter = fileName.hasPrefix(BootLayout.entryPrefix) ? BootCounter.split(entryFileName: fileName).counter : nil
        return Deployment(stateroot: stateroot, checksum: checksum, serial: serial, bootChecksum: parts[3],
                          kernelArguments: entry?.options.filter { !$0.hasPrefix("ostree=") } ?? [],
                          origin: origin, title: entry?["title"], entryFile: entry == nil ? nil : file, bootCounter: counter)
    }

    /// Which of `deployments` backs the running root. libostree's rule: the
    /// deployment directory whose device and inode /run/ostree-booted
    /// records (`backing-root-device-inode`), which no boot-set write can
    /// change; `ostree=` on /proc/cmdline names a path through a symlink farm
    /// that the next boot-set write replaces. Failing a record (an older
    /// prepare-root wrote an empty file), the deployment whose etc/ is the
    /// directory mounted on /etc. `CAIRN_TEST_BOOTED_DEPLOYMENT=<directory>`
    /// stands for "this directory backs /", for tests.
    package func bootedIndex(_ deployments: [Deployment]) -> Int? {
        guard let booted = Self.bootedIdentity() else { return nil }
        return deployments.firstIndex { isBooted($0.relativePath, booted) }
    }

    package func isBooted(_ relativePath: String, _ booted: (device: UInt64, inode: UInt64, isEtc: Bool)) -> Bool {
        guard let st = try? FileSystem.stat(Array(at(relativePath + (booted.isEtc ? "/etc" : "")).utf8)) else { return false }
        return UInt64(st.st_dev) == booted.device && UInt64(st.st_ino) == booted.inode
    }

    /// The device and inode of the running deployment's directory (or, with
    /// `isEtc`, of its etc/), nil when this is not a booted ostree system.
    package static func bootedIdentity() -> (device: UInt64, inode: UInt64, isEtc: Bool)? {
        if let fake = getenv("CAIRN_TEST_BOOTED_DEPLOYMENT") {
            guard let st = try? FileSystem.stat(Array(String(cString: fake).utf8)) else { return nil }
            return (UInt64(st.st_dev), UInt64(st.st_ino), false)
        }
        let marker = Array("/run/ostree-booted".utf8)
        guard FileSystem.exists(marker) else { return nil }
        if let fd = try? FileDescriptor.open(marker, O_RDONLY | O_NOFOLLOW),
           let bytes = try? fd.closeAfter({ try fd.readAll(limit: 1 << 20) }), !bytes.isEmpty,
           let record = try? BootedRecord(serialized: bytes), let backing = record.backingRootDeviceInode {
            return (backing.device, backing.inode, false)
        }
        guard let st = try? FileSystem.stat(Array("/etc".utf8)) else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino), true)
    }

}

extension String {
    package func replacingNewlines() -> String {
        String(map { $0 == "\n" ? " " : $0 })
    }
}

/// Reads a small text file.
package func readText(_ path: String) throws -> String {
    do {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return String(decoding: try fd.closeAfter { try fd.readAll(limit: 1 << 20) }, as: UTF8.self)
    } catch let e as SystemError {
        throw DeployError("reading \(path)", e.message)
    }
}

