import CairnRepo
import CairnSysroot
import CairnSystem
import CCairnShim
#if canImport(Glibc)
import Glibc
#endif

extension Sysroot {
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
