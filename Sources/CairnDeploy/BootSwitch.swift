import CairnRepo
import CairnSysroot
import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

extension Sysroot {
    /// Makes `deployments` (default first) the boot entry set, atomically.
    /// The `ostree=` symlink farm and the complete entry set are written
    /// and synced under the other boot version, then one step switches:
    /// with ostree's layout a rename of the `/boot/loader` symlink, on an
    /// ESP a renameat2(RENAME_EXCHANGE) of the staged folder with the live
    /// `loader/entries`. The old set is removed afterwards. A crash leaves
    /// either the old or the new set, each naming only complete deployments.
    public func writeBootSet(_ deployments: [Deployment]) throws {
        let layout = try layout()
        var deployments = deployments
        if case .esp(let esp) = layout {
            let blessed = blessedESPEntries(esp)
            for i in deployments.indices where deployments[i].bootCounter != nil && deployments[i].entryFile != nil && blessed.contains(espEntryBase(deployments[i])) {
                deployments[i].bootCounter = nil
            }
        }
        let current = try currentBootVersion(layout)
        let new = 1 - (current ?? 0)
        let farmDir = "ostree/boot.\(new).0"
        let staged: String
        switch layout {
        case .ostree: staged = at("boot/loader.\(new)")
        case .esp(let esp): staged = esp + "/" + BootLayout.stagedEntries
        }

        // Leftovers of an interrupted switch are not referenced by the current set.
        try removeTree(staged)
        try removeBootFarms(version: new)
        let repo = try repository()
        // Until the switch, a failure takes back what this call wrote, so the
        // sysroot (refs included) is as it was.
        do {
            try writeDeploymentRefs(deployments, bootVersion: new, repo: repo)

            var serials: [String: Int] = [:]
            var bootSerials: [Int] = []
            for d in deployments {
                let key = d.stateroot + "/" + d.bootChecksum
                bootSerials.append(serials[key, default: 0])
                serials[key, default: 0] += 1
            }
            for (d, bootSerial) in zip(deployments, bootSerials) {
                let dir = at("\(farmDir)/\(d.stateroot)/\(d.bootChecksum)")
                try makeDirectories(dir)
                let link = dir + "/\(bootSerial)"
                guard symlink("../../../deploy/\(d.stateroot)/deploy/\(d.name)", link) == 0 else {
                    throw DeployError("writing \(link)", String(cString: strerror(errno)))
                }
            }
            try makeDirectories(at(farmDir))
            let farmLink = at("ostree/boot.\(new)")
            guard symlink("boot.\(new).0", farmLink) == 0 else {
                throw DeployError("writing \(farmLink)", String(cString: strerror(errno)))
            }

            let entriesDir: String
            switch layout {
            case .ostree: entriesDir = staged + "/entries"
            case .esp(let esp): entriesDir = staged
                try makeDirectories(esp + "/loader")
            }
            try makeDirectories(entriesDir)
            if case .esp(let esp) = layout { try carryForeignEntries(from: esp + "/loader/entries", to: staged) }
            let count = deployments.count
            for (i, (d, bootSerial)) in zip(deployments, bootSerials).enumerated() {
                let n = count - i
                let entry = try bootEntry(for: d, layout: layout, index: i, version: n, bootVersion: new, bootSerial: bootSerial)
                let file = entriesDir + "/" + entryFileName(layout, d, number: n)
                try writeFileAtomically(file, Array(try entry.validatedText("the boot entry of \(d.stateroot) \(d.name)").utf8))
            }
            try syncFilesystems()  // the farm, the entries and the deployments they name are on disk
            CrashPoint.bootSetWritten.reach()
            try switchBootSet(layout, to: new, staged: staged)
        } catch {
            try? removeDeploymentRefs(repo: repo) { $0 == new }
            try? removeTree(staged)
            try? removeBootFarms(version: new)
            throw error
        }
        // Switched: from here on the new set is the current one, whatever fails.
        switch layout {
        case .ostree: try syncDirectory(at("boot"))
        case .esp(let esp): try syncDirectory(esp + "/loader")
        }
        CrashPoint.switched.reach()

        switch layout {
        case .ostree: if let old = current { try removeTree(at("boot/loader.\(old)")) }
        case .esp: try removeTree(staged)  // the old set, since the exchange
        }
        if let old = current { try removeBootFarms(version: old) }
        try removeDeploymentRefs(repo: repo) { $0 != new }
    }

    /// The one step that makes the staged set live.
    func switchBootSet(_ layout: BootLayout, to new: Int, staged: String) throws {
        switch layout {
        case .ostree:
            let tmpLink = at("boot/loader.tmp")
            unlink(tmpLink)
            guard symlink("loader.\(new)", tmpLink) == 0 else {
                throw DeployError("writing \(tmpLink)", String(cString: strerror(errno)))
            }
            do { try FileSystem.rename(Array(tmpLink.utf8), to: Array(at("boot/loader").utf8)) } catch let e as SystemError {
                throw DeployError("switching \(at("boot/loader"))", e.message)
            }
        case .esp(let esp):
            let live = esp + "/loader/entries"
            do {
                if FileSystem.exists(Array(live.utf8)) {
                    try FileSystem.exchange(Array(staged.utf8), Array(live.utf8))
                } else {
                    try FileSystem.rename(Array(staged.utf8), to: Array(live.utf8))
                }
            } catch let e as SystemError {
                throw DeployError("switching \(live) to the entries in \(staged)", "\(e.operation): \(e.message)")
            }
        }
    }

    func syncDirectory(_ dir: String) throws {
        do { try FileSystem.syncDirectory(dir) } catch let e as SystemError {
            throw DeployError("flushing \(dir) to disk", e.message)
        }
    }

    /// libostree's deployment refs, `ostree/<bootversion>/<subbootversion>/<index>`
    /// → commit, one per entry of the set: they keep every deployed commit
    /// from `prune`, cairn's and ostree's alike. Written before the switch,
    /// so that both sets are protected until it happens; the old set's refs
    /// go after it.
    func writeDeploymentRefs(_ deployments: [Deployment], bootVersion: Int, repo: Repository) throws {
        try removeDeploymentRefs(repo: repo) { $0 == bootVersion }
        for (i, d) in deployments.enumerated() {
            try repo.setRef("ostree/\(bootVersion)/0/\(i)", to: d.checksum)
        }
    }

    /// Deletes the deployment refs of the boot versions `which` selects.
    func removeDeploymentRefs(repo: Repository, _ which: (Int) -> Bool) throws {
        for (name, _) in try repo.refs() {
            let parts = name.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 4, parts[0] == "ostree", let v = Int(parts[1]), Int(parts[2]) != nil, Int(parts[3]) != nil, which(v) else { continue }
            try repo.setRef(name, to: nil)
        }
    }

    /// Flushes the filesystems of the sysroot and of /boot (often its own
    /// partition) — not every filesystem of the machine, as sync() would,
    /// which made a deploy's time depend on every other writer.
    func syncFilesystems() throws {
        var done: Set<UInt64> = []
        var dirs = [path, at("boot")]
        if case .esp(let esp) = try layout() { dirs.append(esp) }
        for dir in dirs {
            do {
                let fd = try FileDescriptor.open(dir, O_RDONLY | O_DIRECTORY)
                try fd.closeAfter {
                    guard done.insert(UInt64(try fd.stat().st_dev)).inserted else { return }
                    try fd.syncFilesystem()
                }
            } catch let e as SystemError {
                throw DeployError("flushing \(dir) to disk", e.message)
            }
        }
    }

    /// The entry for deployment `d`: title from its os-release, `linux` and
    /// `initrd` relative to the partition the boot loader reads, `options`
    /// with its kernel arguments and `ostree=`. On an ESP a `sort-key` too:
    /// systemd-boot orders entries of one sort key by version, highest
    /// first, and boots the first, so its order is cairn's.
    func bootEntry(for d: Deployment, layout: BootLayout, index: Int, version: Int, bootVersion: Int, bootSerial: Int) throws -> BootEntry {
        let kernelDir = kernelDirectory(layout, stateroot: d.stateroot, bootChecksum: d.bootChecksum)
        let files = (try? FileSystem.directoryEntries(Array(kernelDir.path.utf8)))?.map { String(decoding: $0, as: UTF8.self) } ?? []
        guard let kernel = files.filter({ $0.hasPrefix("vmlinuz") }).sorted().first else {
            throw DeployError("writing the boot entry of \(d.name)", "no kernel in \(kernelDir.path)")
        }
        let initramfs = files.filter { $0.hasPrefix("initramfs") }.sorted().first
        let title = (d.title.map(Self.titleWithoutIndex) ?? d.stateroot) + " (ostree:\(index))"
        var fields: [(String, String)] = [
            ("title", title),
            ("version", String(version)),
        ]
        if case .esp = layout { fields.append(("sort-key", "cairn")) }
        fields += [
            ("options", (d.kernelArguments + ["ostree=/ostree/boot.\(bootVersion)/\(d.stateroot)/\(d.bootChecksum)/\(bootSerial)"]).joined(separator: " ")),
            ("linux", "\(kernelDir.entryPath)/\(kernel)"),
        ]
        if let initramfs { fields.append(("initrd", "\(kernelDir.entryPath)/\(initramfs)")) }
        return BootEntry(fields: fields)
    }

    /// "Debian 12 (ostree:1)" → "Debian 12"
    static func titleWithoutIndex(_ title: String) -> String {
        let marker = Array(" (ostree:".utf8)
        let bytes = Array(title.utf8)
        guard bytes.count >= marker.count else { return title }
        for i in stride(from: bytes.count - marker.count, through: 0, by: -1) where Array(bytes[i..<(i + marker.count)]) == marker {
            return String(decoding: bytes[..<i], as: UTF8.self)
        }
        return title
    }

    func removeBootFarms(version: Int) throws {
        let names = ((try? FileSystem.directoryEntries(Array(at("ostree").utf8))) ?? []).map { String(decoding: $0, as: UTF8.self) }
        for name in names where name == "boot.\(version)" || name.hasPrefix("boot.\(version).") {
            try removeTree(at("ostree/" + name))
        }
    }

    func makeDirectories(_ p: String) throws {
        var prefix = p.hasPrefix("/") ? "" : "."
        for part in p.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw DeployError("creating \(prefix)", String(cString: strerror(errno)))
            }
        }
    }
}

/// Removes a file, symlink or directory tree; absent is fine. Does not
/// follow symlinks and does not cross mount points; names are bytes, so a
/// deployment whose /etc holds names that are not UTF-8 goes too.
func removeTree(_ path: String) throws {
    try removeTree(Array(path.utf8))
}

func removeTree(_ path: [UInt8]) throws {
    var bytes = path
    while bytes.count > 1 && bytes.last == 0x2f { bytes.removeLast() }
    let slash = bytes.lastIndex(of: 0x2f)
    let parent = slash.map { $0 == 0 ? [0x2f] : Array(bytes[..<$0]) } ?? [0x2e]
    let name = slash.map { Array(bytes[($0 + 1)...]) } ?? bytes
    do {
        let dir: FileDescriptor
        do { dir = try FileDescriptor.open(parent, O_RDONLY | O_DIRECTORY) } catch let e as SystemError where e.errno == ENOENT { return }
        try dir.closeAfter {
            // ostree marks the deployment directories it makes immutable.
            if let top = try? dir.openDirectory(name) {
                defer { top.close() }
                try top.clearImmutableFlag()
            }
            try FileSystem.removeTree(name, in: dir, path: bytes)
        }
    } catch let e as SystemError {
        throw DeployError("removing \(displayPath(e.path ?? bytes))", "\(e.operation): \(e.message)")
    }
}
