#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CCairnShim

/// Descriptor-relative operations for trees that other users may change
/// while cairn reads or writes them: every name is one component below a
/// directory descriptor, symlinks are never followed, names are raw bytes.
/// Errors name the component; callers add the full path.
public extension FileDescriptor {
    /// The directory `name` below this one; a symlink fails (ELOOP), as does
    /// anything that is not a directory (ENOTDIR).
    func openDirectory(_ name: [UInt8]) throws -> FileDescriptor {
        try FileDescriptor.open(name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, relativeTo: self)
    }

    /// A path-only (O_PATH) descriptor of whatever `name` is, symlinks,
    /// fifos and devices included, without following or opening it: reading
    /// its type and metadata has no side effect, and whatever replaces the
    /// name afterwards, the descriptor stays on this file.
    func openEntry(_ name: [UInt8]) throws -> FileDescriptor {
        try FileDescriptor.open(name, cairn_O_PATH | O_NOFOLLOW, relativeTo: self)
    }

    /// "/proc/self/fd/N": the descriptor's own file for calls without a
    /// descriptor form. The kernel resolves it to that file, not through it
    /// (for an O_PATH descriptor of a symlink: the symlink itself).
    var procPath: [UInt8] { Array("/proc/self/fd/\(rawValue)".utf8) }

    /// "/proc/self/fd/N/NAME": the entry NAME of this directory, for the
    /// l*xattr calls, which have no *at() form (and no descriptor of a
    /// symlink carries its xattrs). N resolves to this directory itself,
    /// however it was reached; the l* calls do not follow NAME.
    func procPath(ofEntry name: [UInt8]) -> [UInt8] { procPath + [0x2f] + name }

    /// Whether this is a path-only descriptor, on which read, fchmod and
    /// f*xattr fail with EBADF.
    var isPathOnly: Bool { fcntl(rawValue, F_GETFL) & cairn_O_PATH != 0 }

    /// Opens the file of a path-only descriptor for reading: the same
    /// inode, whatever happened to its name since (through /proc/self/fd).
    func reopen(_ flags: Int32) throws -> FileDescriptor {
        do { return try FileDescriptor.open(procPath, flags | O_NOCTTY) } catch var e as SystemError {
            if e.errno == ENOENT { e.operation = "open (needs /proc mounted)" }
            throw e
        }
    }

    /// The target of the symlink that this path-only descriptor holds.
    func symlinkTarget() throws -> [UInt8] {
        try FileSystem.readLink([], relativeTo: self)
    }

    /// Clears the immutable flag (chattr -i) of this descriptor's file; no
    /// error where the filesystem has no such flags.
    func clearImmutableFlag() throws {
        guard cairn_clear_immutable(rawValue) == 0 else { throw SystemError.current("clearing the immutable flag") }
    }

    /// Sets owner and group of this descriptor's file (a symlink itself, not its target).
    func changeOwner(uid: uid_t, gid: gid_t) throws {
        let r = [UInt8]().withCString { fchownat(rawValue, $0, uid, gid, cairn_AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
        guard r == 0 else { throw SystemError.current("fchownat") }
    }

    /// Sets the permission bits (setuid, setgid and sticky included) of this
    /// descriptor's file, which must not be a symlink.
    func changeMode(_ mode: mode_t) throws {
        let r = isPathOnly ? procPath.withCString { chmod($0, mode) } : fchmod(rawValue, mode)
        guard r == 0 else { throw SystemError.current("fchmod") }
    }

    /// Extended attribute names of this descriptor's file, as raw bytes.
    func extendedAttributeNames() throws -> [[UInt8]] {
        let proc = isPathOnly ? procPath : nil
        func list(_ buf: UnsafeMutablePointer<CChar>?, _ size: Int) -> Int {
            if let proc { return proc.withCString { listxattr($0, buf, size) } }
            return flistxattr(rawValue, buf, size)
        }
        while true {
            let size = list(nil, 0)
            if size < 0 {
                if Glibc.errno == ENOTSUP { return [] }
                throw SystemError.current("listxattr")
            }
            if size == 0 { return [] }
            var buf = [CChar](repeating: 0, count: size)
            let n = buf.withUnsafeMutableBufferPointer { list($0.baseAddress, size) }
            if n < 0 {
                if Glibc.errno == ERANGE { continue }  // grew meanwhile
                throw SystemError.current("listxattr")
            }
            return buf[0..<n].split(separator: 0).map { $0.map { UInt8(bitPattern: $0) } }
        }
    }

    func extendedAttribute(_ name: [UInt8]) throws -> [UInt8] {
        let proc = isPathOnly ? procPath : nil
        func get(_ buf: UnsafeMutableRawPointer?, _ size: Int) -> Int {
            name.withCString { n in
                if let proc { return proc.withCString { getxattr($0, n, buf, size) } }
                return fgetxattr(rawValue, n, buf, size)
            }
        }
        while true {
            let size = get(nil, 0)
            guard size >= 0 else { throw SystemError.current("getxattr", path: name) }
            if size == 0 { return [] }
            var buf = [UInt8](repeating: 0, count: size)
            let n = buf.withUnsafeMutableBytes { get($0.baseAddress, size) }
            if n < 0 {
                if Glibc.errno == ERANGE { continue }
                throw SystemError.current("getxattr", path: name)
            }
            return Array(buf[0..<n])
        }
    }

    func setExtendedAttribute(_ name: [UInt8], _ value: [UInt8]) throws {
        let proc = isPathOnly ? procPath : nil
        let r = name.withCString { n in
            value.withUnsafeBytes { v in
                if let proc { return proc.withCString { setxattr($0, n, v.baseAddress, v.count, 0) } }
                return fsetxattr(rawValue, n, v.baseAddress, v.count, 0)
            }
        }
        guard r == 0 else { throw SystemError.current("setxattr", path: name) }
    }

    func removeExtendedAttribute(_ name: [UInt8]) throws {
        let proc = isPathOnly ? procPath : nil
        let r = name.withCString { n in
            if let proc { return proc.withCString { removexattr($0, n) } }
            return fremovexattr(rawValue, n)
        }
        guard r == 0 else { throw SystemError.current("removexattr", path: name) }
    }

    /// Creates the regular file `name` below this directory, failing if the
    /// name exists (never opening what is already there).
    func createFile(_ name: [UInt8], mode: mode_t = 0o600) throws -> FileDescriptor {
        try FileDescriptor.open(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: mode, relativeTo: self)
    }

    func makeSymlink(_ name: [UInt8], target: [UInt8]) throws {
        let r = target.withCString { t in name.withCString { symlinkat(t, rawValue, $0) } }
        guard r == 0 else { throw SystemError.current("symlinkat", path: name) }
    }

    /// mknodat: a fifo, character or block device (`mode` holds the type).
    func makeNode(_ name: [UInt8], mode: mode_t, device: dev_t) throws {
        let r = name.withCString { mknodat(rawValue, $0, mode, device) }
        guard r == 0 else { throw SystemError.current("mknodat", path: name) }
    }

    /// A new name `name` below this directory for the file `existing` below `directory` (not following symlinks).
    func makeHardLink(_ name: [UInt8], to existing: [UInt8], in directory: FileDescriptor) throws {
        let r = existing.withCString { e in name.withCString { linkat(directory.rawValue, e, rawValue, $0, 0) } }
        guard r == 0 else { throw SystemError.current("linkat", path: name) }
    }

    /// The id of the mount this descriptor's file is on; the device number
    /// on kernels without STATX_MNT_ID (a bind mount then goes unnoticed).
    func mountID() throws -> UInt64 {
        var id: UInt64 = 0
        if cairn_mount_id(rawValue, &id) == 0 { return id }
        guard Glibc.errno == ENOSYS || Glibc.errno == EINVAL else { throw SystemError.current("statx") }
        return UInt64(try stat().st_dev)
    }
}

extension FileSystem {
    /// Removes `name` below `directory` and, if it is a directory, all it
    /// holds, through descriptors: symlinks are removed, never followed; a
    /// mount point is not crossed (EXDEV, naming it); absent is fine.
    /// `path` names `name` in errors.
    public static func removeTree(_ name: [UInt8], in directory: FileDescriptor, path: [UInt8]) throws {
        // A name that another user swaps between a file and a directory
        // meanwhile is retried a few times; each attempt acts only on what
        // the descriptor it opened holds.
        for _ in 0..<8 {
            let r = name.withCString { unlinkat(directory.rawValue, $0, 0) }
            if r == 0 || Glibc.errno == ENOENT { return }
            guard Glibc.errno == EISDIR else { throw SystemError.current("unlink", path: path) }
            let sub: FileDescriptor
            do { sub = try directory.openDirectory(name) } catch let e as SystemError {
                if e.errno == ENOENT { return }
                if e.errno == ENOTDIR || e.errno == ELOOP { continue }  // no longer a directory
                throw SystemError(errno: e.errno, operation: "open", path: path)
            }
            let removed: Bool = try sub.closeAfter {
                let children: [[UInt8]]
                do {
                    guard try sub.mountID() == directory.mountID() else {
                        throw SystemError(errno: EXDEV, operation: "a mount point, not crossed", path: path)
                    }
                    children = try directoryEntries([0x2e], relativeTo: sub)
                } catch let e as SystemError where e.path != path {
                    throw SystemError(errno: e.errno, operation: e.operation, path: path)
                }
                for child in children { try removeTree(child, in: sub, path: path + [0x2f] + child) }
                let r = name.withCString { unlinkat(directory.rawValue, $0, AT_REMOVEDIR) }
                if r == 0 || Glibc.errno == ENOENT { return true }
                // Filled again, or swapped for another directory, meanwhile.
                guard Glibc.errno == ENOTEMPTY || Glibc.errno == EEXIST else { throw SystemError.current("rmdir", path: path) }
                return false
            }
            if removed { return }
        }
        throw SystemError(errno: EAGAIN, operation: "it keeps changing", path: path)
    }
}

/// Major and minor numbers of a device number (glibc's encoding).
/// glibc's makedev(3) encoding, the one st_dev uses (the macro is not
/// visible to Swift).
public func deviceNumber(major: UInt32, minor: UInt32) -> UInt64 {
    let ma = UInt64(major), mi = UInt64(minor)
    return ((ma & 0xffff_f000) << 32) | ((ma & 0x0000_0fff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0x0000_00ff)
}
public func deviceMajor(_ dev: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)) }
public func deviceMinor(_ dev: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff)) }
