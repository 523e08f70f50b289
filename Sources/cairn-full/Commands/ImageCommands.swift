import ArgumentParser
import CairnRepo
import CairnSystem
import Composefs
import Foundation

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image",
        abstract: "Create, inspect and mount composefs images.",
        subcommands: [ImageCreate.self, ImageDigest.self, ImageDump.self, ImageLs.self, ImageObjects.self,
                      ImageMissingObjects.self, ImageGC.self, ImageMount.self]
    )
}

/// Reads a whole file, or stdin for "-".
func readInput(_ path: String) throws -> [UInt8] {
    do {
        if path == "-" { return try FileDescriptor.standardInput.readAll() }
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return try fd.closeAfter { try readSized(fd) }
    } catch let e as SystemError {
        throw RepoError("reading \(path)", e.message)
    }
}

/// Reads to end of file into a buffer sized by fstat (no growth copies for
/// regular files; anything past the stat size is still read).
private func readSized(_ fd: FileDescriptor) throws -> [UInt8] {
    let st = try fd.stat()
    guard st.st_mode & S_IFMT == S_IFREG, st.st_size > 0 else { return try fd.readAll() }
    let size = Int(st.st_size)
    var out = try [UInt8](unsafeUninitializedCapacity: size) { buf, count in
        count = try fd.readFully(into: UnsafeMutableRawBufferPointer(buf))
    }
    if out.count == size { out += try fd.readAll() }
    return out
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), or
/// to stdout for "-": a failed write never leaves a partial file behind.
func writeOutput(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
    try writeOutput(to: path, mode: mode) { try $0.write(bytes) }
}

/// Like `writeOutput(_:to:mode:)`, with `body` writing the bytes to the
/// descriptor (stdout for "-", else the temporary file).
func writeOutput(to path: String, mode: mode_t = 0o644, _ body: (FileDescriptor) throws -> Void) throws {
    if path == "-" {
        Output.flush()
        try body(FileDescriptor.standardOutput)
        return
    }
    do {
        try FileSystem.writeAtomically(path, mode: mode, body)
    } catch let e as SystemError {
        throw RepoError("writing \(path)", e.message)
    }
}

func readImage(_ path: String) throws -> ComposefsImageInfo {
    let bytes = try readInput(path)
    do {
        return try ImageReader.read(bytes)
    } catch let e as ComposefsError {
        throw RepoError("reading image \(path)", e.description)
    }
}

/// One `ls`-style line: type and mode, owner, size, path, symlink target.
func listingLine(type: Character, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, path: [UInt8], target: [UInt8]?) -> [UInt8] {
    let m = String(mode & 0o7777, radix: 8)
    let sizeText = String(size)
    let head = "\(type)\(String(repeating: "0", count: max(0, 5 - m.count)))\(m) \(uid) \(gid) \(String(repeating: " ", count: max(0, 6 - sizeText.count)))\(sizeText) "
    return Array(head.utf8) + path + (target.map { Array(" -> ".utf8) + $0 } ?? []) + [0x0a]
}

struct ImageCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Write the composefs image of a directory, an OCI image, a dump file or a commit.",
        discussion: "Options mean what the same options of mkcomposefs mean; the bytes equal mkcomposefs 1.0.8's. --from-commit writes the image ostree writes for a deployment (.ostree.cfs), as ostree checkout --composefs does: refused when its fs-verity digest is not the one the commit records (ostree.composefs.digest.v0), unless --no-digest-check. --from-oci applies the image's layers in memory and streams each file into the --digest-store, so many images share one copy of each file; the image equals mkcomposefs's of the unpacked image."
    )

    @OptionGroup var repo: RepoOptions

    @Option(name: .customLong("from-dir"), help: ArgumentHelp("Scan this directory, like mkcomposefs SRC IMAGE.", valueName: "dir"))
    var fromDir: String?

    @Option(name: .customLong("from-dump"), help: ArgumentHelp("Read a composefs dump file (- for stdin), like mkcomposefs --from-file.", valueName: "file"))
    var fromDump: String?

    @Option(name: .customLong("from-commit"), help: ArgumentHelp("Build the image of this commit of --repo, as ostree does.", valueName: "rev"))
    var fromCommit: String?

    @Option(name: .customLong("from-oci"), help: ArgumentHelp("Apply the layers of this OCI image: oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:TAG] (needs --digest-store).", valueName: "source"))
    var fromOCI: String?

    @Option(name: .customLong("digest-store"), help: ArgumentHelp("With --from-dir or --from-oci: put regular files into this store of backing objects named by fs-verity digest.", valueName: "dir"))
    var digestStore: String?

    @Flag(name: .customLong("use-epoch"), help: "Write every mtime as 0.")
    var useEpoch = false

    @Flag(name: .customLong("skip-xattrs"), help: "With --from-dir or --from-oci: leave out extended attributes.")
    var skipXattrs = false

    @Flag(name: .customLong("user-xattrs"), help: "With --from-dir or --from-oci: keep only user.* extended attributes.")
    var userXattrs = false

    @Flag(name: .customLong("skip-devices"), help: "With --from-dir or --from-oci: leave out device nodes.")
    var skipDevices = false

    @Option(name: .customLong("min-version"), help: ArgumentHelp("Lowest image format version (0 or 1).", valueName: "n"))
    var minVersion: UInt32?

    @Option(name: .customLong("max-version"), help: ArgumentHelp("Highest image format version (0 or 1).", valueName: "n"))
    var maxVersion: UInt32?

    @Flag(name: .customLong("no-verity"), help: "With --from-commit: leave the fs-verity digests of the backing objects out, as ostree checkout --composefs-noverity does (the commit's recorded digest is then not checked).")
    var noVerity = false

    @Flag(name: .customLong("no-digest-check"), help: "With --from-commit: write the image even when its digest is not the one the commit records.")
    var noDigestCheck = false

    @Flag(name: .customLong("print-digest"), help: "Print the image's fs-verity digest.")
    var printDigest = false

    @Flag(name: .customLong("print-digest-only"), help: "Print the image's fs-verity digest and write no image (give no image argument).")
    var printDigestOnly = false

    @Option(name: .customLong("threads"), help: ArgumentHelp("With --from-dir: threads that hash and copy files (default: one per online CPU).", valueName: "n"))
    var threads: Int?

    @Argument(help: ArgumentHelp("Image file to write, - for stdout; left out with --print-digest-only.", valueName: "image"))
    var image: String?

    func validate() throws {
        let sources = [fromDir, fromOCI, fromDump, fromCommit].compactMap { $0 }
        guard sources.count == 1 else { throw ValidationError("give exactly one of --from-dir, --from-oci, --from-dump, --from-commit") }
        if digestStore != nil || skipXattrs || userXattrs || skipDevices, fromDir == nil && fromOCI == nil {
            throw ValidationError("--digest-store, --skip-xattrs, --user-xattrs and --skip-devices go with --from-dir or --from-oci")
        }
        if fromOCI != nil && digestStore == nil {
            throw ValidationError("--from-oci needs --digest-store: the image's files go there")
        }
        for v in [minVersion, maxVersion].compactMap({ $0 }) where v > 1 {
            throw ValidationError("image format versions are 0 and 1")
        }
        if let lo = minVersion, let hi = maxVersion, lo > hi { throw ValidationError("--min-version is above --max-version") }
        if fromCommit == nil && (noVerity || noDigestCheck) {
            throw ValidationError("--no-verity and --no-digest-check go with --from-commit")
        }
        if fromCommit != nil && (minVersion != nil || maxVersion != nil || useEpoch) {
            throw ValidationError("--from-commit writes ostree's image; --min-version, --max-version and --use-epoch do not apply")
        }
        if printDigestOnly && image != nil { throw ValidationError("--print-digest-only writes no image: leave out the image argument") }
        if !printDigestOnly && image == nil { throw ValidationError("name the image file to write (- for stdout)") }
        if let n = threads {
            guard fromDir != nil else { throw ValidationError("--threads goes with --from-dir") }
            guard n >= 1 else { throw ValidationError("--threads takes a number of at least 1") }
        }
    }

    /// What errors name: the image file, or the digest when none is written.
    var target: String { image ?? "(digest only)" }

    /// Prints the digest: on stderr when the image itself went to stdout.
    func show(_ digest: [UInt8]) {
        let line = hexString(digest) + "\n"
        if image == "-" { Terminal.stderr(line) } else { print(line, terminator: "") }
    }

    func run() throws {
        if let dump = fromDump { return try runFromDump(dump) }
        let options = ComposefsWriteOptions.commandLine(minVersion: minVersion, maxVersion: maxVersion, useEpoch: useEpoch)
        var scan = DirectoryScanOptions(useEpoch: useEpoch, skipXattrs: skipXattrs, userXattrsOnly: userXattrs,
                                        skipDevices: skipDevices, digestStore: digestStore.map { DigestStore(root: $0) })
        if let threads { scan.threads = threads }
        if let dir = fromDir {
            // The front end runs this same call (Sources/cairn).
            Output.flush()
            let digest: [UInt8]?
            do {
                digest = try DirectoryImage.create(Array(dir.utf8), scan: scan, options: options,
                                                   output: DirectoryImage.Output(image), digest: printDigest)
            } catch let e as SystemError where e.errno == EPIPE && image == "-" {
                throw e  // a reader that went away: the quiet exit of a closed pipe
            } catch let e as ComposefsError {
                throw RepoError("creating image \(target)", e.description)
            } catch let e as SystemError {
                throw RepoError("creating image \(target)", e.description)
            }
            if let digest { show(digest) }
            return
        }
        let bytes: [UInt8]
        // Held until the image naming the store's new objects is written:
        // `image gc` waits for it.
        var lock: FileDescriptor?
        defer { lock?.close() }
        do {
            if let store = scan.digestStore { lock = try store.lock(exclusive: false) }
            if let source = fromOCI, let store = scan.digestStore {
                bytes = try ImageWriter.image(of: try OCIComposefs.tree(of: source, store: store, options: scan), options: options)
            } else {
                let r = try repo.open()
                bytes = try r.composefsCheckout(commit: try r.resolve(fromCommit!), verity: !noVerity, checkRecordedDigest: !noDigestCheck)
            }
        } catch let e as ComposefsError {
            throw RepoError("creating image \(target)", e.description)
        } catch let e as SystemError {
            throw RepoError("creating image \(target)", e.description)
        }
        guard let image else { return show(fsVerityDigest(bytes)) }
        try writeOutput(bytes, to: image)
        if printDigest { show(fsVerityDigest(bytes)) }
    }
}

extension ImageCreate {
    /// --from-dump: the dump text is dropped once parsed and the image is
    /// streamed to the output instead of being built in memory.
    /// CFS_PARSE_STRICT (any value, as mkcomposefs reads it) parses strictly.
    func runFromDump(_ dump: String) throws {
        let options = ComposefsWriteOptions.commandLine(minVersion: minVersion, maxVersion: maxVersion, useEpoch: useEpoch)
        let strict = ProcessInfo.processInfo.environment[DumpParser.strictEnvironmentVariable] != nil
        let prepared: PreparedImage
        do {
            let tree: ComposefsTree
            do {
                let text = try readInput(dump)
                tree = try DumpParser.parse(text, strict: strict)
            }
            prepared = try ImageWriter.prepare(tree, options: options)
        } catch let e as ComposefsError {
            throw RepoError("reading dump \(dump)", e.description)
        }
        guard let image else { return show(prepared.digest()) }
        var digest: [UInt8]?
        try writeOutput(to: image) { fd in digest = try prepared.write(to: fd, digest: printDigest) }
        if let digest { show(digest) }
    }
}

struct ImageDigest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "digest",
        abstract: "Print the fs-verity digest (SHA-256, 4 KiB blocks) of files.",
        discussion: "One file: the 64 hex characters. Several: one '<digest>  <file>' line each."
    )

    @Argument(help: ArgumentHelp("Files to hash.", valueName: "file"))
    var files: [String]

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one file") }
    }

    func run() throws {
        try KernelVerity.printDigests(of: files) { Output.write(Array($0.utf8)) }
    }
}

/// The tree composefs-info reads from an image, `--filter` names kept at the top.
func readComposefsInfoTree(_ path: String, filter: [String]) throws -> ComposefsTree {
    let bytes = try readInput(path)
    do {
        return try ImageReader.composefsInfoTree(bytes, topLevel: filter.isEmpty ? nil : Set(filter.map { Array($0.utf8) }))
    } catch let e as ComposefsError {
        throw RepoError("reading image \(path)", e.description)
    }
}

func validateFilter(_ filter: [String]) throws {
    for f in filter where f.isEmpty || f.contains("/") {
        throw ValidationError("--filter takes a single name, not '\(f)'")
    }
}

struct ImageDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump",
        abstract: "Print an image as a composefs dump file, as composefs-info dump does.",
        discussion: "Byte for byte what composefs-info 1.0.8 prints: hardlinks as '@' lines with their target's fields and xattrs, xattrs in the image's order, the overlay markers composefs-info shows (a directory holding whiteouts keeps trusted.overlay.opaque=x and user.overlay.opaque=x). mkcomposefs --from-file (or image create --from-dump) of this text gives the image again."
    )

    @Option(help: ArgumentHelp("Only this top-level entry (repeatable), as composefs-info --filter.", valueName: "name"))
    var filter: [String] = []

    @Argument(help: ArgumentHelp("Image file, - for stdin.", valueName: "image"))
    var image: String

    func validate() throws { try validateFilter(filter) }

    func run() throws {
        Terminal.write(DumpWriter.composefsInfoDump(try readComposefsInfoTree(image, filter: filter)))
    }
}

struct ImageLs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List every entry of an image.",
        discussion: "--format cairn (the default): type and mode, owner, size, path and symlink target. --format composefs-info: what composefs-info ls prints (the path; '/' and a tab for a directory, a tab and '-> TARGET' for a symlink, a tab and '@ OBJECT' for a file with a backing object)."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable { case cairn, composefsInfo = "composefs-info" }

    @Option(help: "Output format: cairn or composefs-info.")
    var format: Format = .cairn

    @Option(help: ArgumentHelp("With --format composefs-info: only this top-level entry (repeatable).", valueName: "name"))
    var filter: [String] = []

    @Argument(help: ArgumentHelp("Image file, - for stdin.", valueName: "image"))
    var image: String

    func validate() throws {
        try validateFilter(filter)
        if !filter.isEmpty && format != .composefsInfo { throw ValidationError("--filter goes with --format composefs-info") }
    }

    func run() throws {
        if format == .composefsInfo {
            return Terminal.write(DumpWriter.composefsInfoListing(try readComposefsInfoTree(image, filter: filter)))
        }
        let tree = try readImage(image).tree
        var out: [UInt8] = []
        func visit(_ i: Int) {
            let n = tree[i]
            let type: Character = n.isDirectory ? "d" : n.isSymlink ? "l" : n.isRegular ? "-" :
                n.fileType == FileMode.charDevice ? "c" : n.fileType == FileMode.blockDevice ? "b" : n.fileType == FileMode.fifo ? "p" : "s"
            let path = i == ComposefsTree.root ? [0x2f] : tree.path(of: i)
            out += listingLine(type: type, mode: n.mode, uid: n.uid, gid: n.gid, size: n.isRegular ? n.size : 0,
                               path: path, target: n.isSymlink ? n.payload : nil)
            if n.isDirectory && !tree.isHardlink(i) {
                for c in tree.sortedChildren(i) { visit(Int(c)) }
            }
        }
        visit(ComposefsTree.root)
        Terminal.write(out)
    }
}

struct ImageObjects: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "objects", abstract: "List the backing objects an image refers to.")

    @Argument(help: ArgumentHelp("Image file, - for stdin.", valueName: "image"))
    var image: String

    func run() throws {
        Terminal.write(try readImage(image).tree.backingObjects().flatMap { $0 + [0x0a] })
    }
}

struct ImageMissingObjects: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "missing-objects", abstract: "List the backing objects of an image that a base directory lacks.")

    @Option(help: ArgumentHelp("The object store (for ostree: the repository's objects/).", valueName: "dir"))
    var basedir: String

    @Argument(help: ArgumentHelp("Image file, - for stdin.", valueName: "image"))
    var image: String

    func run() throws {
        let base = Array(basedir.utf8)
        guard FileSystem.exists(base) else { throw RepoError("reading \(basedir)", "no such directory") }
        let missing = try readImage(image).tree.backingObjects().filter { p in
            let path = base + (p.first == 0x2f ? p : [0x2f] + p)
            return (try? FileSystem.lstat(path)).map { ($0.st_mode & S_IFMT) != S_IFREG } ?? true
        }
        Terminal.write(missing.flatMap { $0 + [0x0a] })
    }
}

struct ImageMount: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount an image read-only: EROFS plus overlayfs with the base directory as data-only lower layer (root).",
        discussion: "With --digest the image must have fs-verity and the kernel's measurement of it must be exactly that digest; overlayfs is asked for verity=require (every backing file must carry fs-verity). The image is mounted from the descriptor that was measured. Unmount with umount MOUNTPOINT."
    )

    @Option(help: ArgumentHelp("The object store the image redirects into.", valueName: "dir"))
    var basedir: String

    @Option(help: ArgumentHelp("Expected fs-verity digest of the image (64 hex characters).", valueName: "hex"))
    var digest: String?

    @Argument(help: ArgumentHelp("Image file.", valueName: "image"))
    var image: String

    @Argument(help: ArgumentHelp("Directory to mount on.", valueName: "mountpoint"))
    var mountpoint: String

    func validate() throws {
        if let d = digest, d.count != 64 || bytesFromHex(d) == nil {
            throw ValidationError("--digest takes 64 hex characters")
        }
    }

    func run() throws {
        let options = ComposefsMountOptions(image: Array(image.utf8), mountpoint: Array(mountpoint.utf8),
                                            basedir: Array(basedir.utf8), expectedDigest: digest.flatMap(bytesFromHex))
        do {
            try ComposefsMount.mount(options)
        } catch let e as ComposefsError where e.kind == .noVerity {
            throw RepoError("mounting \(image) on \(mountpoint)", e.description + "; --digest needs fs-verity on the image (fsverity enable, or cairn post-copy for a sysroot)")
        } catch let e as ComposefsError {
            throw RepoError("mounting \(image) on \(mountpoint)", e.description)
        }
    }
}

struct ImageGC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove the objects of a digest store that none of the given images refers to.",
        discussion: "Every image that should keep its objects must be named: an object no named image refers to is removed. Waits for cairn commands adding to the store (they hold its lock) and refuses an image whose files are not objects of a digest store. Temporary files of writes that ended an hour or more ago are removed too."
    )

    @Option(name: .customLong("digest-store"), help: ArgumentHelp("The store of backing objects, as image create --digest-store fills it.", valueName: "dir"))
    var digestStore: String

    @Flag(name: .customLong("dry-run"), help: "List what would be removed; remove nothing.")
    var dryRun = false

    @Argument(help: ArgumentHelp("The images whose objects stay.", valueName: "image"))
    var images: [String] = []

    func validate() throws {
        if images.isEmpty { throw ValidationError("name the images whose objects stay (with none, every object would go)") }
    }

    func run() throws {
        var keep = Set<[UInt8]>()
        for image in images {
            for payload in try readImage(image).tree.backingObjects() {
                guard let name = DigestStore.objectName(ofPayload: payload) else {
                    throw RepoError("reading image \(image)", "a file's content is '\(displayPath(payload))', not an object of a digest store (xx/<62 hex>); nothing was removed")
                }
                keep.insert(name)
            }
        }
        guard FileSystem.exists(Array(digestStore.utf8)) else { throw RepoError("reading \(digestStore)", "no such directory") }
        let result: DigestStoreCollection
        do {
            result = try DigestStore(root: digestStore).collectGarbage(keep: keep, dryRun: dryRun)
        } catch let e as SystemError {
            throw RepoError("collecting \(digestStore)", e.description)
        }
        var out: [UInt8] = []
        if dryRun {
            for r in result.removed { out += Array("would remove ".utf8) + r.object + Array(" (\(r.size) bytes)\n".utf8) }
            for t in result.temporaries { out += Array("would remove ".utf8) + t + Array(" (unfinished write)\n".utf8) }
        }
        let verb = dryRun ? "would remove" : "removed"
        out += Array("\(verb) \(result.removed.count) object(s), \(result.removedBytes) bytes; \(result.kept) object(s) in use".utf8)
        if !result.temporaries.isEmpty { out += Array("; \(verb) \(result.temporaries.count) unfinished write(s)".utf8) }
        out += [0x0a]
        Terminal.write(out)
        if !result.missing.isEmpty {
            Terminal.stderr("cairn: warning: \(result.missing.count) object(s) the images refer to are missing from \(digestStore), first \(displayPath(result.missing[0]))\n")
        }
    }
}
