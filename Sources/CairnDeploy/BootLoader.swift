import CairnRepo
import CairnSystem
import CCairnShim
#if canImport(Glibc)
import Glibc
#endif

/// Which boot loader reads a sysroot's entries, and so where cairn writes
/// them and the kernels they name.
public enum BootLoader: String, Sendable, CaseIterable {
    /// ostree's layout in the sysroot's /boot: `loader -> loader.<v>`,
    /// switched by one rename of a symlink (GRUB's blscfg, syslinux,
    /// U-Boot, or any loader pointed at /boot/loader).
    case ostree
    /// systemd-boot on an EFI system partition. FAT has no symlinks, so the
    /// entries live in `loader/entries`, replaced with a complete new folder
    /// by one renameat2(RENAME_EXCHANGE); kernels in `cairn/<stateroot>-<bootcsum>/`.
    case systemdBoot = "systemd-boot"

    /// The choice lives in cairn's own group of the repository config: the
    /// values of ostree's `[sysroot] bootloader` are checked by libostree,
    /// which refuses to open a repository whose value it does not know.
    static let configGroup = "cairn"
    static let configKey = "bootloader"
}

/// Where a sysroot's boot entries and kernels are written.
enum BootLayout {
    case ostree
    /// systemd-boot, with the ESP's root folder.
    case esp(String)

    /// Our entry files in the ESP's shared `loader/entries`; other names
    /// there belong to other tools and are carried across every switch.
    static let entryPrefix = "cairn-"
    /// The next set, written here in full before the exchange; after it,
    /// this folder holds the old set until it is removed.
    static let stagedEntries = "loader/entries.cairn-staged"
}

/// FAT's statfs magic number (MSDOS_SUPER_MAGIC).
let fatFilesystemType = 0x4d44

extension Sysroot {
    /// The boot loader recorded by `sysroot init --bootloader` (ostree's
    /// /boot layout when none is).
    public func bootLoader() throws -> BootLoader {
        let repo = try repository()
        guard let value = repo.configValue(group: BootLoader.configGroup, key: BootLoader.configKey) else { return .ostree }
        guard let loader = BootLoader(rawValue: value) else {
            throw DeployError("reading \(repositoryPath)/config", "[\(BootLoader.configGroup)] \(BootLoader.configKey)=\(value) is not a boot loader cairn knows (\(BootLoader.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return loader
    }

    /// Records the boot loader. Refused once deployments exist under another
    /// one: their entries would be lost from the boot loader's sight.
    public func setBootLoader(_ loader: BootLoader) throws {
        let current = try bootLoader()
        guard current != loader else { return }
        // Folders, not entries: reading those may need the ESP.
        let deployed = stateroots().contains { !((try? FileSystem.directoryEntries(Array(at("ostree/deploy/\($0)/deploy").utf8))) ?? []).isEmpty }
        if deployed {
            throw DeployError("sysroot \(path)", "it has deployments booted by \(current.rawValue); cannot switch it to \(loader.rawValue)")
        }
        try repository().setConfigValue(group: BootLoader.configGroup, key: BootLoader.configKey, loader == .ostree ? nil : loader.rawValue)
        cachedLayout = nil
    }

    /// Prepares an ESP for cairn's entries and kernels: `loader/entries`
    /// and `cairn/`. Installing systemd-boot itself is bootctl's work.
    public func initializeESP() throws {
        let esp = try espPath()
        for dir in [esp + "/loader", esp + "/loader/entries", esp + "/cairn"] {
            try makeDirectory(dir, mode: 0o755)
        }
    }

    /// Read once per Sysroot: one command's many steps share it.
    func layout() throws -> BootLayout {
        if let cachedLayout { return cachedLayout }
        let layout: BootLayout
        switch try bootLoader() {
        case .ostree: layout = .ostree
        case .systemdBoot: layout = .esp(try espPath())
        }
        cachedLayout = layout
        return layout
    }

    /// The ESP: `--esp`, else, on the running system's own sysroot, the FAT
    /// filesystem mounted at /efi, /boot/efi or /boot (where bootctl looks).
    public func espPath() throws -> String {
        if let esp {
            guard let st = try? FileSystem.stat(Array(esp.utf8)), st.st_mode & S_IFMT == S_IFDIR else {
                throw DeployError("EFI system partition \(esp)", "not a directory")
            }
            return esp.count > 1 && esp.hasSuffix("/") ? String(esp.dropLast()) : esp
        }
        if isRunningSystemsSysroot() {
            for candidate in ["/efi", "/boot/efi", "/boot"] where (try? FileSystem.filesystemType(Array(candidate.utf8))) == fatFilesystemType {
                return candidate
            }
            throw DeployError("finding the EFI system partition", "this system boots with systemd-boot, but no FAT filesystem is mounted at /efi, /boot/efi or /boot; mount the ESP there or name it with --esp PATH")
        }
        throw DeployError("sysroot \(path)", "it boots with systemd-boot: name its EFI system partition with --esp PATH")
    }

    /// The sysroot commands act on by default: the physical root of a booted
    /// system is mounted at /sysroot (its / is the deployment), else /.
    public static func defaultPath() -> String {
        FileSystem.exists(Array("/run/ostree-booted".utf8)) && FileSystem.exists(Array("/sysroot/ostree/deploy".utf8)) ? "/sysroot" : "/"
    }

    /// The entry systemd-boot booted, from its EFI variable
    /// LoaderEntrySelected (4 bytes of attributes, then UTF-16LE with a
    /// final NUL); nil when it did not boot this machine.
    public static func loaderEntrySelected(efivars: String = "/sys/firmware/efi/efivars") -> String? {
        let file = efivars + "/LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
        guard let fd = try? FileDescriptor.open(file, O_RDONLY),
              let bytes = try? fd.closeAfter({ try fd.readAll(limit: 4096) }), bytes.count >= 6 else { return nil }
        var units: [UInt16] = []
        var i = 4
        while i + 1 < bytes.count {
            let u = UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8
            if u == 0 { break }
            units.append(u)
            i += 2
        }
        return String(decoding: units, as: UTF16.self)
    }

    /// A booted system's /sysroot is read-only for everyone (prepare-root's
    /// `[sysroot] readonly`); like libostree, cairn then writes through a
    /// private mount namespace of its own in which that mount is writable.
    /// Called before any thread is started: the namespace is this thread's
    /// and its children's. Nothing changes for other processes.
    public func ensureWritable() throws {
        var st = statvfs()
        guard statvfs(at("ostree"), &st) == 0, st.f_flag & UInt(ST_RDONLY) != 0 else { return }
        let real: [UInt8]
        let mounts: [MountEntry]
        do {
            real = try FileSystem.realPath(Array(at("ostree").utf8))
            mounts = try MountTable.current()
        } catch let e as SystemError {
            throw DeployError("making \(path) writable", e.description)
        }
        // The mount the repository is on: the longest mount point above it.
        guard let mount = mounts.filter({ m in m.mountPoint == [0x2f] || real == m.mountPoint || real.starts(with: m.mountPoint + [0x2f]) })
            .max(by: { $0.mountPoint.count < $1.mountPoint.count }) else {
            throw DeployError("making \(path) writable", "no mount holds \(displayPath(real))")
        }
        guard cairn_unshare_mount_namespace() == 0 else {
            throw DeployError("making \(path) writable", "unshare(CLONE_NEWNS): \(String(cString: strerror(errno)))")
        }
        guard Glibc.mount(nil, "/", nil, UInt(MS_REC | MS_SLAVE), nil) == 0 else {
            throw DeployError("making \(path) writable", "making / a slave mount: \(String(cString: strerror(errno)))")
        }
        let remounted = mount.mountPoint.withCString { Glibc.mount(nil, $0, nil, UInt(MS_REMOUNT | MS_BIND), nil) }
        guard remounted == 0 else {
            throw DeployError("making \(path) writable", "remounting \(displayPath(mount.mountPoint)) read-write in a private mount namespace: \(String(cString: strerror(errno)))")
        }
    }

    /// Whether this sysroot is the one the running system booted from.
    func isRunningSystemsSysroot() -> Bool {
        guard FileSystem.exists(Array("/run/ostree-booted".utf8)),
              let mine = try? FileSystem.stat(Array(at("ostree").utf8)),
              let booted = try? FileSystem.stat(Array("/sysroot/ostree".utf8)) else { return false }
        return mine.st_dev == booted.st_dev && mine.st_ino == booted.st_ino
    }

    // MARK: Per-layout places

    /// The folder holding the live entries of boot version `version`.
    func liveEntriesDirectory(_ layout: BootLayout, version: Int) -> String {
        switch layout {
        case .ostree: return at("boot/loader.\(version)/entries")
        case .esp(let esp): return esp + "/loader/entries"
        }
    }

    /// The names of our entry files in `dir`.
    func entryFileNames(_ layout: BootLayout, in dir: String) -> [String] {
        let names = ((try? FileSystem.directoryEntries(Array(dir.utf8))) ?? []).compactMap { String(validating: $0, as: UTF8.self) }
        switch layout {
        case .ostree: return names.filter { $0.hasSuffix(".conf") }
        case .esp: return names.filter { $0.hasPrefix(BootLayout.entryPrefix) && $0.hasSuffix(".conf") }
        }
    }

    /// The entry file name of a deployment: ostree numbers them; on the ESP
    /// the name is the deployment's, so systemd-boot's LoaderEntrySelected
    /// names the deployment it booted, with its boot counter, if any.
    func entryFileName(_ layout: BootLayout, _ d: Deployment, number: Int) -> String {
        switch layout {
        case .ostree: return "ostree-\(number)-\(d.stateroot).conf"
        case .esp: return espEntryBase(d) + (d.bootCounter?.suffix ?? "") + ".conf"
        }
    }

    /// An ESP entry's name without counter and `.conf`: the deployment's identity.
    func espEntryBase(_ d: Deployment) -> String { "\(BootLayout.entryPrefix)\(d.stateroot)-\(d.name)" }

    /// The live ESP entries that carry no counter, by base name: blessed.
    /// systemd-bless-boot may rename an entry while a command runs; a
    /// blessing seen here is kept rather than undone by the switch.
    func blessedESPEntries(_ esp: String) -> Set<String> {
        Set(entryFileNames(.esp(esp), in: esp + "/loader/entries").compactMap { name in
            let (base, counter) = BootCounter.split(entryFileName: name)
            return counter == nil ? base : nil
        })
    }

    /// Where a kernel folder is, and how its entry names it (relative to
    /// the partition the boot loader reads).
    func kernelDirectory(_ layout: BootLayout, stateroot: String, bootChecksum: String) -> (path: String, entryPath: String) {
        let name = "\(stateroot)-\(bootChecksum)"
        switch layout {
        case .ostree: return (at("boot/ostree/" + name), "/ostree/" + name)
        case .esp(let esp): return (esp + "/cairn/" + name, "/cairn/" + name)
        }
    }

    /// The folder of kernel folders.
    func kernelsDirectory(_ layout: BootLayout) -> String {
        switch layout {
        case .ostree: return at("boot/ostree")
        case .esp(let esp): return esp + "/cairn"
        }
    }

    /// The boot version of the live ESP entries: the `boot.<v>` their
    /// `ostree=` arguments name (nil without entries). Entries of two
    /// versions mean someone else wrote there; refused rather than guessed.
    func espBootVersion(_ esp: String) throws -> Int? {
        let dir = esp + "/loader/entries"
        var versions: Set<Int> = []
        for name in entryFileNames(.esp(esp), in: dir) {
            let file = dir + "/" + name
            let entry = try BootEntry(parsing: try readText(file), file: file)
            guard let arg = entry.ostreeArgument else { throw DeployError("reading boot entry \(file)", "no ostree= kernel argument") }
            let parts = arg.split(separator: "/")
            guard parts.count >= 2, parts[1].hasPrefix("boot."), let v = Int(parts[1].dropFirst(5)), v == 0 || v == 1 else {
                throw DeployError("reading boot entry \(file)", "malformed ostree=\(arg)")
            }
            versions.insert(v)
        }
        guard versions.count <= 1 else {
            throw DeployError("reading \(dir)", "its cairn entries name both boot versions; they were not written by one cairn boot-set switch")
        }
        return versions.first
    }

    /// Copies the entries other tools keep in the live ESP folder into the
    /// staged one, so that the switch keeps them. Only regular files, read
    /// without following symlinks.
    func carryForeignEntries(from live: String, to staged: String) throws {
        for name in (try? FileSystem.directoryEntries(Array(live.utf8))) ?? [] where !name.starts(with: Array(BootLayout.entryPrefix.utf8)) {
            let source = Array(live.utf8) + [0x2f] + name
            guard let st = try? FileSystem.lstat(source), st.st_mode & S_IFMT == S_IFREG else { continue }
            guard let text = String(validating: name, as: UTF8.self) else {
                throw DeployError("carrying the boot entry \(displayPath(source)) over", "its name is not UTF-8")
            }
            do {
                let fd = try FileDescriptor.open(source, O_RDONLY | O_NOFOLLOW)
                let bytes = try fd.closeAfter { try fd.readAll(limit: 1 << 20) }
                try FileSystem.writeAtomically(staged + "/" + text) { try $0.write(bytes) }
            } catch let e as SystemError {
                throw DeployError("carrying the boot entry \(displayPath(source)) over", e.message)
            }
        }
    }
}
