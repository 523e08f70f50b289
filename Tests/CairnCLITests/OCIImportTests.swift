import CairnTestSupport
import Foundation
import XCTest

/// `cairn commit --from-oci` of images that real tools made: buildah builds
/// them FROM scratch in layers (storage in the scratch folder, vfs driver:
/// no overlay mounts, no daemon), `buildah push` writes the OCI layout and
/// archive, `podman save` the docker archive. The independent peer is
/// `umoci unpack` of the same image, committed from the directory.
final class OCIImportTests: CairnTestCase {
    override var scratchName: String { "cairn-oci" }

    var script: String { TestSupport.packageRoot.appendingPathComponent("Tests/Scripts/oci_layout.py").path }

    func requireTools() throws {
        for tool in ["buildah", "podman", "umoci", "skopeo", "ostree", "zstd", "setfattr", "setcap"] { try TestSupport.require(tool: tool) }
        try TestSupport.requireRoot()  // buildah mount, and umoci unpack keeping owners and xattrs
    }

    /// The image: layer 1 an OS-like tree; layer 2 deletes a file, replaces
    /// a directory by a file, adds hardlinks (to a changed and to an
    /// unchanged file of layer 1), changes an xattr and adds a capability.
    /// Writes oci:DIR/layout:v1, DIR/image.oci.tar, DIR/skopeo.oci.tar
    /// (skopeo's copy of the layout, tagged v1), DIR/image.docker.tar.
    func buildImage() throws {
        try TestSupport.sh("""
            set -e
            cd '\(dir)'
            B="buildah --root $PWD/storage --runroot $PWD/run --storage-driver vfs"
            c=$($B from scratch)
            m=$($B mount $c)
            mkdir -p $m/usr/bin $m/usr/lib/plugins $m/usr/share/doc $m/etc/sub $m/var/lib
            printf 'hello\\n' > $m/usr/bin/hello; chmod 0755 $m/usr/bin/hello
            printf 'tool\\n' > $m/usr/bin/tool; chmod 0750 $m/usr/bin/tool
            ln -s hello $m/usr/bin/hi
            printf 'secret of layer one\\n' > $m/usr/lib/gone
            printf 'plugin\\n' > $m/usr/lib/plugins/p.so
            head -c 200000 /dev/urandom > $m/usr/share/doc/blob
            printf 'host\\n' > $m/etc/hostname; chmod 0600 $m/etc/hostname
            ln -s ../hostname $m/etc/sub/link
            chown 1000:100 $m/var/lib; chmod 0700 $m/var/lib
            setfattr -n user.origin -v one $m/usr/bin/hello
            $B commit -q $c img1 >/dev/null
            c2=$($B from img1)
            m2=$($B mount $c2)
            rm $m2/usr/lib/gone
            rm -r $m2/usr/lib/plugins; printf 'now a file\\n' > $m2/usr/lib/plugins
            ln $m2/usr/bin/hello $m2/usr/lib/hello-link
            ln $m2/usr/bin/tool $m2/usr/lib/tool-link
            setfattr -n user.origin -v two $m2/usr/bin/hello
            setcap cap_net_raw+ep $m2/usr/bin/tool
            printf 'layer two\\n' > $m2/usr/share/doc/new
            $B config --label org.opencontainers.image.version=2.5 $c2
            $B commit -q $c2 img2 >/dev/null
            $B push -q img2 oci:$PWD/layout:v1
            $B push -q img2 oci-archive:$PWD/image.oci.tar
            skopeo copy -q oci:$PWD/layout:v1 oci-archive:$PWD/skopeo.oci.tar:v1
            podman --root $PWD/storage --runroot $PWD/run --storage-driver vfs save -q --format docker-archive -o $PWD/image.docker.tar localhost/img2:latest
            """)
    }

    /// The checksums of the root's dirtree and dirmeta, from Debian's ostree.
    func rootChecksums(_ repo: String, _ ref: String) throws -> [String] {
        let ls = try TestSupport.sh("ostree ls --repo='\(repo)' -C -d '\(ref)' /")
        let fields = ls.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        XCTAssertGreaterThanOrEqual(fields.count, 6, ls)
        return Array(fields[4...5])
    }

    /// What umoci unpacks of `image`, committed from the directory (with
    /// `prepare` run in the unpacked rootfs first).
    func umociCommit(_ image: String, repo: String, ref: String, prepare: String = "") throws -> [String] {
        let bundle = dir + "/bundle-" + ref
        try TestSupport.sh("umoci unpack --image '\(image)' '\(bundle)' >/dev/null && cd '\(bundle)/rootfs' && true \(prepare.isEmpty ? "" : "&& " + prepare)")
        try cairn(["commit", "--repo", repo, "-b", ref, "--timestamp", "1700000000", bundle + "/rootfs"])
        return try rootChecksums(repo, ref)
    }

    func contentObjects(_ repo: String) throws -> [String] {
        try TestSupport.sh("cd '\(repo)/objects' && find . -name '*.file' | sort").split(separator: "\n").map(String.init)
    }

    func metadata(_ repo: String, _ ref: String) throws -> String {
        try cairn(["show", "--repo", repo, ref]).stdout
    }

    // MARK: The same tree as umoci's

    func testEverySourceGivesTheTreeUmociUnpacks() throws {
        try requireTools()
        try buildImage()
        let peer = dir + "/peer"
        try cairn(["init", "--repo", peer])
        let expected = try umociCommit(dir + "/layout:v1", repo: peer, ref: "umoci")

        let index = try String(contentsOfFile: dir + "/layout/index.json", encoding: .utf8)
        let manifestDigest = try XCTUnwrap(index.range(of: "sha256:[0-9a-f]{64}", options: .regularExpression).map { String(index[$0]) })
        for (i, source) in ["oci:\(dir)/layout", "oci:\(dir)/layout:v1", "oci-archive:\(dir)/image.oci.tar",
                            "oci-archive:\(dir)/skopeo.oci.tar:v1", "docker-archive:\(dir)/image.docker.tar"].enumerated() {
            let repo = dir + "/r\(i)"
            try cairn(["init", "--repo", repo])
            let r = try cairn(["commit", "--repo", repo, "-b", "os", "--timestamp", "1700000000", "--from-oci", source])
            XCTAssertTrue(r.stderr.contains("/etc as /usr/etc"), r.stderr)
            XCTAssertEqual(try rootChecksums(repo, "os"), expected, "tree of \(source)")
            // Only the final tree's content: what later layers replaced or
            // deleted (layer one's /usr/lib/gone, hello before its xattr
            // changed) is not in the repository.
            XCTAssertEqual(try contentObjects(repo), try contentObjects(peer), "objects of \(source)")
            let show = try metadata(repo, "os")
            XCTAssertTrue(show.contains("version: '2.5'"), show)
            XCTAssertTrue(show.contains("cairn.oci.config-digest: 'sha256:"), show)
            XCTAssertTrue(show.contains("ostree.ref-binding: ['os']"), show)
            if source.hasPrefix("docker-archive:") {
                XCTAssertFalse(show.contains("cairn.oci.manifest-digest"), show)
            } else {
                XCTAssertTrue(show.contains("cairn.oci.manifest-digest: '\(manifestDigest)'"), show)
            }
            let fsck = try cairn(["fsck", "--repo", repo]).stdout
            XCTAssertTrue(fsck.contains("no problems"), fsck)
        }
        // What the tree holds, read back: layer two's changes are there.
        let ls = try cairn(["ls", "--repo", dir + "/r0", "-R", "os", "/usr"]).stdout
        XCTAssertFalse(ls.contains("/usr/lib/gone"), ls)
        XCTAssertTrue(ls.contains("-00644 0 0     11 /usr/lib/plugins\n"), ls)
        XCTAssertFalse(ls.contains("p.so"), ls)
        XCTAssertTrue(ls.contains("/usr/lib/tool-link") && ls.contains("/usr/etc/hostname"), ls)

        // --add-metadata-string version wins over the label.
        let v = try cairn(["commit", "--repo", dir + "/r0", "-b", "v", "--add-metadata-string", "version=9", "--from-oci", "oci:\(dir)/layout"])
        XCTAssertEqual(v.status, 0)
        let show = try metadata(dir + "/r0", "v")
        XCTAssertTrue(show.contains("version: '9'") && !show.contains("'2.5'"), show)

        // Signed inside the transaction like any commit, with its composefs digest.
        try cairn(["keygen", "--output", dir + "/k"])
        let signed = try cairn(["commit", "--repo", dir + "/r0", "-b", "signed", "--sign-key", dir + "/k.secret",
                                "--from-oci", "oci-archive:\(dir)/image.oci.tar"])
        XCTAssertTrue(signed.stderr.contains("signed with ed25519 key"), signed.stderr)
        try cairn(["verify", "--repo", dir + "/r0", "signed", "--keys", dir + "/k.pub"])
        XCTAssertTrue(try metadata(dir + "/r0", "signed").contains("ostree.composefs.digest.v0"))
    }

    /// Opaque directories, whiteouts of absent paths, a file replaced by a
    /// directory, a SELinux label, in a layer umoci adds to the buildah
    /// image; and the same image with every layer uncompressed or zstd.
    func testOpaqueDirectoriesWhiteoutsAndCompressions() throws {
        try requireTools()
        try buildImage()
        let layer = dir + "/layer3.tar"
        try TestSupport.sh("""
            python3 - '\(layer)' <<'EOF'
            import io, sys, tarfile
            t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
            def add(name, type=tarfile.REGTYPE, mode=0o644, data=b"", link="", pax=None):
                ti = tarfile.TarInfo(name)
                ti.type, ti.mode, ti.linkname, ti.mtime, ti.pax_headers = type, mode, link, 1700000000, pax or {}
                ti.size = len(data) if type == tarfile.REGTYPE else 0
                t.addfile(ti, io.BytesIO(data) if type == tarfile.REGTYPE else None)
            add("usr/share/doc/kept", data=b"listed before the opaque marker\\n")
            add("usr/share/doc/.wh..wh..opq")
            add("usr/share/.wh.never-there")
            add("usr/lib/.wh.no-such-dir")
            add("usr/lib/plugins", tarfile.DIRTYPE, 0o755)
            add("usr/lib/plugins/again", data=b"a directory once more\\n", pax={"SCHILY.xattr.security.selinux": "system_u:object_r:lib_t:s0"})
            add("etc/sub/.wh.link")
            t.close()
            EOF
            python3 '\(script)' add-layer '\(dir)/layout' v1 v2 '\(layer)' gzip
            python3 '\(script)' recompress '\(dir)/layout' v2 plain none
            python3 '\(script)' recompress '\(dir)/layout' v2 zstd zstd
            """)
        let peer = dir + "/peer"
        try cairn(["init", "--repo", peer])
        // umoci leaves SELinux labels out of what it unpacks; cairn keeps them.
        let expected = try umociCommit(dir + "/layout:v2", repo: peer, ref: "umoci",
                                       prepare: "setfattr -n security.selinux -v system_u:object_r:lib_t:s0 usr/lib/plugins/again")
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        for tag in ["v2", "plain", "zstd"] {
            try cairn(["commit", "--repo", repo, "-b", tag, "--from-oci", "oci:\(dir)/layout:\(tag)"])
            XCTAssertEqual(try rootChecksums(repo, tag), expected, "tree of \(tag)")
        }
        let ls = try cairn(["ls", "--repo", repo, "-R", "v2", "/usr/share/doc"]).stdout
        XCTAssertTrue(ls.contains("/usr/share/doc/kept") && !ls.contains("/usr/share/doc/blob") && !ls.contains("/usr/share/doc/new"), ls)
        let label = try TestSupport.sh("ostree ls --repo='\(repo)' -X v2 /usr/lib/plugins/again")
        XCTAssertTrue(label.contains("security.selinux"), label)
        XCTAssertEqual(try contentObjects(repo).count, try contentObjects(peer).count)
    }

    // MARK: Composefs images over one digest store

    /// The store's files ("xx/<62 hex>"), sorted.
    func storeObjects(_ store: String) throws -> [String] {
        try TestSupport.sh("cd '\(store)' && find . -mindepth 2 -type f | sort").split(separator: "\n").map(String.init)
    }

    /// `image create --from-oci` gives, for every source, the bytes and
    /// the store that `image create --from-dir` (mkcomposefs's bytes) gives
    /// for what umoci unpacks, mtimes included; the image mounts and reads.
    func testComposefsImageOfEverySourceIsMkcomposefsOfTheUnpackedImage() throws {
        try requireTools()
        try buildImage()
        try TestSupport.sh("cd '\(dir)' && umoci unpack --image layout:v1 bundle >/dev/null")
        try cairn(["image", "create", "--from-dir", dir + "/bundle/rootfs", "--digest-store", dir + "/peer-store", dir + "/peer.cfs"])
        let peer = try Data(contentsOf: URL(fileURLWithPath: dir + "/peer.cfs"))
        let peerObjects = try storeObjects(dir + "/peer-store")
        XCTAssertEqual(peerObjects.count, 1, "the fixture's one file above the inline limit")
        let store = dir + "/store"
        for (i, source) in ["oci:\(dir)/layout", "oci-archive:\(dir)/image.oci.tar", "oci-archive:\(dir)/skopeo.oci.tar:v1",
                            "docker-archive:\(dir)/image.docker.tar"].enumerated() {
            let out = "\(dir)/img\(i).cfs"
            let r = try cairn(["image", "create", "--from-oci", source, "--digest-store", store, "--print-digest", out])
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), peer, "image of \(source)")
            XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), try cairn(["image", "digest", out]).stdout.trimmingCharacters(in: .whitespacesAndNewlines))
            XCTAssertEqual(try storeObjects(store), peerObjects, "store after \(source)")
        }
        // Each object is named by its fs-verity digest, mode 0644, and no
        // temporary file is left.
        for object in try storeObjects(store) {
            let path = store + "/" + object.dropFirst(2)
            XCTAssertEqual(try cairn(["image", "digest", path]).stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                           object.dropFirst(2).replacingOccurrences(of: "/", with: ""))
            XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int, 0o644)
        }
        XCTAssertEqual(try TestSupport.sh("cd '\(store)' && find . -maxdepth 1 -name '.tmp*'"), "")
        // --use-epoch and the xattr options mean what they mean for --from-dir.
        for flags in [["--use-epoch"], ["--skip-xattrs"], ["--user-xattrs"]] {
            try cairn(["image", "create", "--from-dir", dir + "/bundle/rootfs", "--digest-store", dir + "/peer-store"] + flags + [dir + "/p.cfs"])
            try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout", "--digest-store", store] + flags + [dir + "/o.cfs"])
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/o.cfs")), try Data(contentsOf: URL(fileURLWithPath: dir + "/p.cfs")), "\(flags)")
        }
        // Mounted over the store, the image reads as the image's files.
        try TestSupport.require(tool: "unshare")
        let read = try TestSupport.run("unshare", ["-m", "/bin/sh", "-c", """
            set -e; mkdir -p '\(dir)/mnt'
            '\(cairnPath)' image mount --basedir '\(store)' '\(dir)/img0.cfs' '\(dir)/mnt'
            cat '\(dir)/mnt/usr/lib/plugins'; cmp '\(dir)/mnt/usr/share/doc/blob' '\(dir)/bundle/rootfs/usr/share/doc/blob' && echo same
            umount '\(dir)/mnt'
            """])
        XCTAssertEqual(read.stdout, "now a file\nsame\n", read.stderr)

        let usage = try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout", dir + "/x.cfs"], expect: 2)
        XCTAssertTrue(usage.stderr.contains("--from-oci needs --digest-store"), usage.stderr)

        // What a later layer deletes never reaches the store, though its
        // layer streamed it first.
        try TestSupport.sh("""
            cd '\(dir)' && python3 -c 'import io, tarfile; t = tarfile.open("wh.tar", "w"); t.addfile(tarfile.TarInfo("usr/share/doc/.wh.blob")); t.close()'
            python3 '\(script)' add-layer '\(dir)/layout' v1 gone '\(dir)/wh.tar' gzip
            """)
        try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout:gone", "--digest-store", dir + "/store2", dir + "/gone.cfs"])
        XCTAssertEqual(try storeObjects(dir + "/store2"), [])
        XCTAssertEqual(try TestSupport.sh("cd '\(dir)/store2' && find . -maxdepth 1 -name '.tmp*'"), "")
        XCTAssertFalse(try cairn(["image", "ls", dir + "/gone.cfs"]).stdout.contains("/usr/share/doc/blob"))
    }

    /// `image gc` removes exactly the objects no named image refers to,
    /// lists them first with --dry-run, leaves alone what is not an object
    /// and what lies behind a symlink, and waits for a writer's lock.
    func testImageGCKeepsWhatTheNamedImagesUse() throws {
        try requireTools()
        try buildImage()
        let changed = "\(dir)/layer3.tar"
        try TestSupport.sh("""
            cd '\(dir)' && mkdir -p l3/usr/share/doc && head -c 70000 /dev/urandom > l3/usr/share/doc/only-in-v2 && tar --format=pax -C l3 -cf layer3.tar usr
            python3 '\(script)' add-layer '\(dir)/layout' v1 v2 '\(changed)' gzip
            """)
        let store = dir + "/store"
        let (a, b) = (dir + "/a.cfs", dir + "/b.cfs")
        try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout:v1", "--digest-store", store, a])
        try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout:v2", "--digest-store", store, b])
        func objects(_ image: String) throws -> Set<String> {
            Set(try cairn(["image", "objects", image]).stdout.split(separator: "\n").map(String.init))
        }
        let onlyB = try objects(b).subtracting(try objects(a))
        XCTAssertEqual(onlyB.count, 1)
        // Things gc must leave: a file that is no object, an object-named
        // file behind a symlinked "directory", a fresh temporary file.
        let outside = dir + "/outside/ab"
        let hex62 = String(repeating: "0", count: 62)
        try TestSupport.sh("""
            mkdir -p '\(outside)' && echo keep > '\(outside)/\(hex62)' && ln -s '\(outside)' '\(store)/ab'
            echo notes > '\(store)/README' && echo partial > '\(store)/.tmpFresh1' && echo stale > '\(store)/.tmpStale1'
            touch -d '2 hours ago' '\(store)/.tmpStale1'
            mkdir -p '\(store)/cd' && echo partial > '\(store)/cd/.tmpFresh2' && echo stale > '\(store)/cd/.tmpStale2'
            touch -d '2 hours ago' '\(store)/cd/.tmpStale2'
            """)
        let before = try TestSupport.sh("cd '\(store)' && find . | sort")

        let dry = try cairn(["image", "gc", "--digest-store", store, "--dry-run", a])
        XCTAssertEqual(try TestSupport.sh("cd '\(store)' && find . | sort"), before, "a dry run removed something")
        XCTAssertTrue(dry.stdout.contains("would remove \(onlyB.first!) (70000 bytes)"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("would remove .tmpStale1 (unfinished write)") && !dry.stdout.contains("tmpFresh1"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("would remove cd/.tmpStale2 (unfinished write)") && !dry.stdout.contains("tmpFresh2"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("would remove 1 object(s), 70000 bytes;"), dry.stdout)

        let gc = try cairn(["image", "gc", "--digest-store", store, a])
        XCTAssertTrue(gc.stdout.contains("removed 1 object(s), 70000 bytes; \(try objects(a).count) object(s) in use; removed 2 unfinished write(s)"), gc.stdout)
        XCTAssertEqual(try cairn(["image", "missing-objects", "--basedir", store, a]).stdout, "")
        XCTAssertEqual(Set(try cairn(["image", "missing-objects", "--basedir", store, b]).stdout.split(separator: "\n").map(String.init)), onlyB)
        XCTAssertEqual(try TestSupport.sh("cat '\(outside)/\(hex62)' '\(store)/README' '\(store)/.tmpFresh1' '\(store)/cd/.tmpFresh2'"), "keep\nnotes\npartial\npartial\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: store + "/.tmpStale1"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: store + "/cd/.tmpStale2"))
        // With both images named nothing goes; the missing object is reported.
        let both = try cairn(["image", "gc", "--digest-store", store, a, b])
        XCTAssertTrue(both.stdout.contains("removed 0 object(s), 0 bytes"), both.stdout)
        XCTAssertTrue(both.stderr.contains("1 object(s) the images refer to are missing"), both.stderr)

        // Bad input removes nothing: a file that is no image, an image whose
        // files are not store objects (ostree's, over objects/), no image.
        try cairn(["image", "create", "--from-oci", "oci:\(dir)/layout:v2", "--digest-store", store, b])
        let full = try TestSupport.sh("cd '\(store)' && find . | sort")
        try TestSupport.sh("echo junk > '\(dir)/junk.cfs'")
        assertOneLineError(try cairn(["image", "gc", "--digest-store", store, a, dir + "/junk.cfs"], expect: 1), contains: "junk.cfs")
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        try cairn(["commit", "--repo", repo, "-b", "os", "--from-oci", "oci:\(dir)/layout:v1"])
        try cairn(["image", "create", "--repo", repo, "--from-commit", "os", dir + "/ostree.cfs"])
        let foreign = try cairn(["image", "gc", "--digest-store", store, a, dir + "/ostree.cfs"], expect: 1)
        assertOneLineError(foreign, contains: "not an object of a digest store")
        try cairn(["image", "gc", "--digest-store", store], expect: 2)
        XCTAssertEqual(try TestSupport.sh("cd '\(store)' && find . | sort"), full)

        // A writer's shared lock holds the collection back until it is released.
        try TestSupport.require(tool: "flock")
        let start = Date()
        let held = try TestSupport.sh("flock -s '\(store)' sh -c 'sleep 2' & sleep 0.3; '\(cairnPath)' image gc --digest-store '\(store)' '\(a)'; wait")
        XCTAssertGreaterThan(Date().timeIntervalSince(start), 1.9, held)
        XCTAssertTrue(held.contains("removed 1 object(s), 70000 bytes"), held)
    }

    /// Names and link targets beyond ASCII (Debian's ca-certificates has
    /// /etc/ssl/certs/NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem and links
    /// to it), which Go's archive/tar writes as pax path and linkpath
    /// records: committed whatever the locale (cairn never sets one, so
    /// libarchive would convert them to the C locale's ASCII and fail), the
    /// same tree as the folder's.
    func testNonASCIINamesAndLinkTargets() throws {
        try requireTools()
        try TestSupport.sh("""
            set -e
            cd '\(dir)'
            mkdir -p tree/etc/ssl/certs tree/usr/share/ça
            printf 'cert\\n' > 'tree/etc/ssl/certs/NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem'
            ln -s 'NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem' tree/etc/ssl/certs/988a38cb.0
            printf 'ü\\n' > tree/usr/share/ça/über
            B="buildah --root $PWD/storage --runroot $PWD/run --storage-driver vfs"
            c=$($B from scratch)
            cp -a tree/. "$($B mount $c)/"
            $B commit -q $c names >/dev/null
            $B push -q names oci:$PWD/names
            """)
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        try cairn(["commit", "--repo", repo, "-b", "folder", "--timestamp", "1700000000", dir + "/tree"])
        try cairn(["commit", "--repo", repo, "-b", "os", "--timestamp", "1700000000", "--from-oci", "oci:\(dir)/names"])
        XCTAssertEqual(try rootChecksums(repo, "os"), try rootChecksums(repo, "folder"))
        let ls = try cairn(["ls", "--repo", repo, "-R", "os", "/usr"]).stdout
        XCTAssertTrue(ls.contains("/usr/etc/ssl/certs/988a38cb.0 -> NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem"), ls)
        XCTAssertTrue(ls.contains("/usr/share/ça/über"), ls)
        // The composefs image of the same layers reads them alike.
        try cairn(["image", "create", "--from-oci", "oci:\(dir)/names", "--digest-store", dir + "/store", dir + "/names.cfs"])
        let image = try cairn(["image", "ls", dir + "/names.cfs"]).stdout
        XCTAssertTrue(image.contains("/etc/ssl/certs/988a38cb.0 -> NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem") && image.contains("/usr/share/ça/über"), image)
    }

    // MARK: Bad input

    /// Refused with one `cairn: error:` line naming each of `texts`; the
    /// ref, the objects and the staging directory as they were.
    func assertRefused(_ source: String, repo: String, naming texts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let refs = try refsSnapshot(repo)
        let objects = try TestSupport.sh("cd '\(repo)/objects' && find . -type f | sort")
        let r = try cairn(["commit", "--repo", repo, "-b", "os", "--from-oci", source], expect: 1, file: file, line: line)
        for text in texts { assertOneLineError(r, contains: text, file: file, line: line) }
        XCTAssertEqual(try refsSnapshot(repo), refs, "refs changed", file: file, line: line)
        XCTAssertEqual(try TestSupport.sh("cd '\(repo)/objects' && find . -type f | sort"), objects, "objects changed", file: file, line: line)
        XCTAssertEqual(try TestSupport.sh("cd '\(repo)/tmp' && find . -mindepth 2 -path './staging-*/*' -type f"), "", "objects left staged", file: file, line: line)
    }

    func testBadImagesAreRefusedNamingTheBlobOrEntry() throws {
        try requireTools()
        try buildImage()
        let repo = dir + "/r"
        try cairn(["init", "--repo", repo])
        try cairn(["commit", "--repo", repo, "-b", "os", "--from-oci", "oci:\(dir)/layout"])

        /// A copy of the layout that oci_layout.py COMMAND ARGS rewrote, tagged "bad".
        var copies = 0
        func broken(_ command: String, _ args: String) throws -> String {
            copies += 1
            let copy = "\(dir)/bad\(copies)"
            try TestSupport.sh("cp -a '\(dir)/layout' '\(copy)' && python3 '\(script)' \(command) '\(copy)' v1 bad \(args)")
            return "oci:\(copy):bad"
        }

        try assertRefused(try broken("break", "truncate-blob 2"), repo: repo, naming: ["layer 2 of 2 (sha256:", "truncated"])
        try assertRefused(try broken("break", "flip-byte 1"), repo: repo, naming: ["layer 1 of 2 (sha256:"])
        try assertRefused(try broken("break", "missing-blob 2"), repo: repo, naming: ["layer 2 of 2 (sha256:", "not in the image"])
        try assertRefused(try broken("break", "media-type 1 application/vnd.oci.image.layer.v1.tar+bzip2"), repo: repo,
                          naming: ["layer 1 of 2", "application/vnd.oci.image.layer.v1.tar+bzip2", "does not handle"])
        try assertRefused(try broken("break", "diff-id 2"), repo: repo, naming: ["layer 2 of 2 (sha256:", "diff_id"])
        // The blob's digest differs from the manifest's while its size
        // agrees and it reads as a good tar: a byte of a file's content.
        let flipped = try broken("recompress", "none")
        let flippedDir = String(flipped.dropFirst(4).dropLast(4))
        try TestSupport.sh("python3 '\(script)' break '\(flippedDir)' bad worse flip-byte 2 'layer two'")
        try assertRefused("oci:\(flippedDir):worse", repo: repo, naming: ["layer 2 of 2 (sha256:", "the blob has digest sha256:", "not the one the manifest names"])
        // A manifest whose own bytes differ from its digest.
        try TestSupport.sh("cp -a '\(dir)/layout' '\(dir)/badmanifest' && cd '\(dir)/badmanifest' && m=$(python3 -c 'import json; print(json.load(open(\"index.json\"))[\"manifests\"][0][\"digest\"][7:])') && sed -i 's/localhost/Localhost/' blobs/sha256/$m")
        try assertRefused("oci:\(dir)/badmanifest", repo: repo, naming: ["manifest sha256:", "is not the blob its descriptor names"])

        // Hostile layers, every digest consistent.
        func hostile(_ name: String, _ entries: String) throws -> String {
            let tar = "\(dir)/\(name).tar"
            try TestSupport.sh("""
                python3 - '\(tar)' <<'EOF'
                import io, sys, tarfile
                t = tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT)
                def add(name, type=tarfile.REGTYPE, data=b"", link=""):
                    ti = tarfile.TarInfo(name)
                    ti.type, ti.mode, ti.linkname, ti.mtime = type, 0o644, link, 1700000000
                    ti.size = len(data) if type == tarfile.REGTYPE else 0
                    t.addfile(ti, io.BytesIO(data) if type == tarfile.REGTYPE else None)
                \(entries)
                t.close()
                EOF
                """)
            return try broken("add-layer", "'\(tar)' gzip")
        }
        try assertRefused(try hostile("up", "add('usr/../../etc/evil', data=b'x')"), repo: repo,
                          naming: ["layer 3 of 3 (sha256:", "entry 'usr/../../etc/evil'", "'..'"])
        try assertRefused(try hostile("abs", "add('usr/h', tarfile.LNKTYPE, link='/etc/shadow')"), repo: repo,
                          naming: ["layer 3 of 3", "entry 'usr/h'", "'/etc/shadow', an absolute path"])
        try assertRefused(try hostile("uplink", "add('usr/h', tarfile.LNKTYPE, link='usr/../../etc/shadow')"), repo: repo,
                          naming: ["entry 'usr/h'", "goes up with '..'"])
        try assertRefused(try hostile("nolink", "add('usr/h', tarfile.LNKTYPE, link='usr/lib/gone')"), repo: repo,
                          naming: ["entry 'usr/h'", "no earlier entry"])
        try assertRefused(try hostile("through", "add('usr/bin/hi/x', data=b'x')"), repo: repo,
                          naming: ["entry 'usr/bin/hi/x'", "needs /usr/bin/hi to be a directory", "symlink"])
        // A layer cut inside a member's data, its digests made to match:
        // the first member is the 200000-byte blob, its data from 1536 on.
        let big = "\(dir)/big.tar"
        try TestSupport.sh("cd '\(dir)' && mkdir -p bigtree/usr && head -c 200000 /dev/urandom > bigtree/usr/big && tar --format=pax -C bigtree -cf big.tar usr/big")
        let cut = try broken("add-layer", "'\(big)' gzip")
        let cutDir = String(cut.dropFirst(4).dropLast(4))
        try TestSupport.sh("python3 '\(script)' break '\(cutDir)' bad cut truncate-tar 3 60000")
        try assertRefused("oci:\(cutDir):cut", repo: repo, naming: ["layer 3 of 3 (sha256:", "entry 'usr/big'", "runcated"])

        // The same refusals from `image create --from-oci`: no image written,
        // no temporary file left in the store.
        let store = dir + "/store"
        for (source, texts) in [(try broken("break", "truncate-blob 2"), ["layer 2 of 2 (sha256:", "truncated"]),
                                ("oci:\(flippedDir):worse", ["the blob has digest sha256:"]),
                                ("oci:\(cutDir):cut", ["entry 'usr/big'", "runcated"]),
                                (try hostile("up2", "add('usr/../../etc/evil', data=b'x')"), ["entry 'usr/../../etc/evil'", "'..'"])] {
            let r = try cairn(["image", "create", "--from-oci", source, "--digest-store", store, dir + "/bad.cfs"], expect: 1)
            for text in texts { assertOneLineError(r, contains: text) }
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.cfs"), source)
            XCTAssertEqual(try TestSupport.sh("cd '\(store)' && find . -maxdepth 1 -name '.tmp*'"), "", source)
        }

        // A whiteout of what never was is no error (runtimes ignore it).
        let absent = try hostile("absent", "add('usr/.wh.nothing-here')\nadd('nowhere/at/.wh.all')")
        try cairn(["commit", "--repo", repo, "-b", "absent", "--from-oci", absent])
        XCTAssertEqual(try rootChecksums(repo, "absent"), try rootChecksums(repo, "os"))

        // Usage: one source only; an unknown transport.
        let both = try cairn(["commit", "--repo", repo, "-b", "os", "--from-oci", "oci:\(dir)/layout", dir], expect: 2)
        XCTAssertTrue(both.stderr.contains("not both"), both.stderr)
        try assertRefused("docker://example/image", repo: repo, naming: ["expected oci:DIR[:TAG]"])
        try assertRefused("oci:\(dir)/layout:nope", repo: repo, naming: ["no manifest tagged 'nope'", "v1"])
    }
}
