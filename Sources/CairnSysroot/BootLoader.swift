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
    package static let configGroup = "cairn"
    package static let configKey = "bootloader"
}

/// Where a sysroot's boot entries and kernels are written.
package enum BootLayout {
    case ostree
    /// systemd-boot, with the ESP's root folder.
    case esp(String)

    /// Our entry files in the ESP's shared `loader/entries`; other names
    /// there belong to other tools and are carried across every switch.
    package static let entryPrefix = "cairn-"
    /// The next set, written here in full before the exchange; after it,
    /// this folder holds the old set until it is removed.
    package static let stagedEntries = "loader/entries.cairn-staged"
}

/// FAT's statfs magic number (MSDOS_SUPER_MAGIC).
package let fatFilesystemType = 0x4d44

extension Sysroot {
    /// The boot loader recorded by `sysroot init --bootloader` (ostree's
    /// /boot layout when none is).
    public func bootLoader() throws -> BootLoader {
        guard let value = try repositoryConfigValue(group: BootLoader.configGroup, key: BootLoader.configKey) else { return .ostree }
        guard let loader = BootLoader(rawValue: value) else {
            throw DeployError("reading \(repositoryPath)/config", "[\(BootLoader.configGroup)] \(BootLoader.configKey)=\(value) is not a boot loader cairn knows (\(BootLoader.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return loader
    }

    /// A value of the repository's config (`ostree/repo/config`), read as
    /// libostree reads it (GLib key-file rules), without opening the
    /// repository through libostree.
    package func repositoryConfigValue(group: String, key: String) throws -> String? {
        guard isInitialized() else { throw notInitialised() }
        let file = repositoryPath + "/config"
        let bytes: [UInt8]
        do {
            let fd = try FileDescriptor.open(file, O_RDONLY | O_NOFOLLOW)
            bytes = try fd.closeAfter { try fd.readAll(limit: 4 << 20) }
        } catch let e as SystemError {
            throw DeployError("reading \(file)", e.message)
        }
        return try StateFile(parsing: bytes, path: file)[group, key]
    }

    /// Read once per Sysroot: one command's many steps share it.
    package func layout() throws -> BootLayout {
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

    package func isRunningSystemsSysroot() -> Bool {
        guard FileSystem.exists(Array("/run/ostree-booted".utf8)),
              let mine = try? FileSystem.stat(Array(at("ostree").utf8)),
              let booted = try? FileSystem.stat(Array("/sysroot/ostree".utf8)) else { return false }
        return mine.st_dev == booted.st_dev && mine.st_ino == booted.st_ino
    }

    // MARK: Per-layout places

    /// The folder holding the live entries of boot version `version`.
    package func liveEntriesDirectory(_ layout: BootLayout, version: Int) -> String {
        switch layout {
        case .ostree: return at("boot/loader.\(version)/entries")
        case .esp(let esp): return esp + "/loader/entries"
        }
    }

    /// The names of our entry files in `dir`.
    package func entryFileNames(_ layout: BootLayout, in dir: String) -> [String] {
        let names = ((try? FileSystem.directoryEntries(Array(dir.utf8))) ?? []).compactMap { String(validating: $0, as: UTF8.self) }
        switch layout {
        case .ostree: return names.filter { $0.hasSuffix(".conf") }
        case .esp: return names.filter { $0.hasPrefix(BootLayout.entryPrefix) && $0.hasSuffix(".conf") }
        }
    }

    /// The entry file name of a deployment: ostree numbers them; on the ESP
    /// the name is the deployment's, so systemd-boot's LoaderEntrySelected
    /// names the deployment it booted, with its boot counter, if any.
    /// The boot version of the live ESP entries: the `boot.<v>` their
    /// `ostree=` arguments name (nil without entries). Entries of two
    /// versions mean someone else wrote there; refused rather than guessed.
    package func espBootVersion(_ esp: String) throws -> Int? {
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

}
