import CairnRepo
import CairnSysroot
import CairnSystem
import CCairnShim
import Trust
#if canImport(Glibc)
import Glibc
#endif

/// PrepareRoot has a Deployment of its own (what the boot program resolves).
public typealias Deployment = CairnSysroot.Deployment

extension Sysroot {
    /// Opens the repository, failing clearly when the sysroot was never initialised.
    public func repository() throws -> Repository {
        guard isInitialized() else {
            throw notInitialised()
        }
        return try Repository.open(path: repositoryPath)
    }

    /// Creates the layout: a bare repository, /boot with its `boot -> .`
    /// link, and the stateroot with `deploy/` and `var/`. Idempotent.
    public func initialize(stateroot: String?) throws {
        try Self.validateStateroot(stateroot ?? "default")
        for dir in ["", "boot", "boot/ostree", "ostree", "ostree/deploy", "dev", "proc", "run", "sys", "tmp", "home", "root"] {
            try makeDirectory(at(dir), mode: dir == "tmp" ? 0o1777 : dir == "root" ? 0o700 : 0o755)
        }
        if !FileSystem.exists(Array(at("boot/boot").utf8)) {
            guard symlink(".", at("boot/boot")) == 0 || errno == EEXIST else {
                throw DeployError("creating \(at("boot/boot"))", String(cString: strerror(errno)))
            }
        }
        if !FileSystem.exists(Array(at("ostree/repo/config").utf8)) {
            _ = try Repository.create(path: repositoryPath, mode: .bare)
        }
        if let stateroot {
            try makeDirectory(at("ostree/deploy/\(stateroot)"), mode: 0o755)
            try makeDirectory(at("ostree/deploy/\(stateroot)/deploy"), mode: 0o755)
            try makeDirectory(at("ostree/deploy/\(stateroot)/var"), mode: 0o755)
        }
    }

    func makeDirectory(_ p: String, mode: mode_t) throws {
        if mkdir(p, mode) != 0 && errno != EEXIST {
            throw DeployError("creating \(p)", String(cString: strerror(errno)))
        }
    }

    /// Why the deployment folder at `relativePath` is in use, or nil: the
    /// running system's, or feeding a mount (on a running system its etc/
    /// is mounted on /etc). Such a folder is never removed, whatever the
    /// boot entries say.
    func inUseReason(_ relativePath: String) -> String? {
        if let booted = Self.bootedIdentity(), isBooted(relativePath, booted) { return "it is the booted deployment" }
        let path = Array(at(relativePath).utf8)
        guard FileSystem.exists(path), let mounts = try? MountTable.current(),
              let backed = try? MountTable.mountsBacked(by: path, in: mounts), !backed.isEmpty else { return nil }
        return "it backs the mount(s) " + backed.map(displayPath).joined(separator: ", ")
    }

    // MARK: Locking

    /// Runs `body` holding the sysroot's exclusive lock (`ostree/lock`, the
    /// file libostree locks too). When another process holds it, says so at
    /// once through `notice`, waits up to `timeout` seconds, then fails
    /// naming the holder. The lock file is opened below the sysroot's own
    /// `ostree` folder without following symlinks, and must be a regular file.
    public func withLock<R>(command: String, timeout: Double, _ body: () throws -> R) throws -> R {
        try ensureWritable()
        let lockPath = at("ostree/lock")
        let fd: FileDescriptor
        do {
            let ostree = try FileDescriptor.open(at("ostree"), O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            fd = try ostree.closeAfter { try FileDescriptor.open("lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, mode: 0o600, relativeTo: ostree) }
        } catch let e as SystemError {
            throw DeployError("locking \(path)", e.errno == ELOOP ? "\(lockPath) is a symlink; refusing to use it" : "\(lockPath): \(e.message)")
        }
        defer { fd.close() }
        let st: stat
        do { st = try fd.stat() } catch let e as SystemError { throw DeployError("locking \(path)", e.description) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw DeployError("locking \(path)", "\(lockPath) is not a regular file") }
        let started = monotonicSeconds()
        var told = false
        while flock(fd.rawValue, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                throw DeployError("locking \(path)", String(cString: strerror(errno)))
            }
            if !told {
                notice("waiting for the sysroot lock \(lockPath), held by \(lockHolder(fd, st)) (up to \(Int(timeout)) s)")
                told = true
            }
            if monotonicSeconds() - started >= timeout {
                throw DeployError("locking \(path)", "the sysroot lock \(lockPath) is held by \(lockHolder(fd, st)) and was not released within \(Int(timeout)) s")
            }
            usleep(100_000)
        }
        // Say who holds it, for whoever waits next.
        _ = try? fd.truncate(0)
        let note = Array("pid \(getpid()): cairn \(command)\n".utf8)
        _ = note.withUnsafeBytes { pwrite(fd.rawValue, $0.baseAddress, $0.count, 0) }
        return try body()
    }

    /// Who holds the lock: the process the kernel names in /proc/locks, with
    /// its command line; the record a cairn holder leaves in the file is
    /// believed only when it names that process (other tools, libostree
    /// among them, leave none, and a record can outlive its writer).
    func lockHolder(_ fd: FileDescriptor, _ st: stat) -> String {
        let record = ((try? fd.read(atOffset: 0, limit: 4096)).map { String(decoding: $0, as: UTF8.self) } ?? "").trimmingWhitespace().replacingNewlines()
        let recordedPID = record.hasPrefix("pid ") ? Int32(record.dropFirst(4).prefix { $0.isNumber }) : nil
        guard let holder = Self.flockHolder(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) else {
            return record.isEmpty ? "another process" : "another process (the file says: \(record))"
        }
        if holder == recordedPID { return record }
        let cmdline = (try? readText("/proc/\(holder)/cmdline")).map { String($0.map { $0 == "\0" ? " " : $0 }).trimmingWhitespace() } ?? ""
        var text = "pid \(holder)" + (cmdline.isEmpty ? "" : ": \(cmdline)")
        if let r = recordedPID, kill(r, 0) != 0 && errno == ESRCH { text += " (the file's record '\(record)' is stale: pid \(r) has exited)" }
        return text
    }

    /// The pid holding an flock on the file with this device and inode, from
    /// /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF").
    static func flockHolder(device: UInt64, inode: UInt64) -> Int32? {
        guard let text = try? readText("/proc/locks") else { return nil }
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 6, f[1] == "FLOCK", let pid = Int32(f[4]) else { continue }
            let id = f[5].split(separator: ":")
            guard id.count == 3, let major = UInt32(id[0], radix: 16), let minor = UInt32(id[1], radix: 16), let ino = UInt64(id[2]) else { continue }
            if ino == inode && deviceNumber(major: major, minor: minor) == device { return pid }
        }
        return nil
    }
}

/// Writes a small file atomically and durably (CairnSystem's writeAtomically),
/// naming it in errors.
func writeFileAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
    do {
        try FileSystem.writeAtomically(path, mode: mode) { try $0.write(bytes) }
    } catch let e as SystemError {
        throw DeployError("writing \(path)", e.message)
    }
}
