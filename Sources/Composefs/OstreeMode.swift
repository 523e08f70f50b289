/// What ostree does to a commit's tree before writing its composefs image
/// (spec §17), so that our image equals upstream ostree's `.ostree.cfs`.
public enum OstreeMode {
    /// Top-level directories ostree adds when the commit lacks them.
    public static let topLevelDirectories = ["usr", "etc", "boot", "var", "sysroot"]

    /// Writer options ostree uses: version 0, upgraded to 1 only for whiteouts.
    public static let writeOptions = ComposefsWriteOptions(minVersion: 0, maxVersion: 1)

    /// Loose-object payload for an ostree content checksum: "xx/<62 hex>.file".
    public static func payload(forContentChecksum checksum: String) -> [UInt8] {
        var p = Array(checksum.utf8)
        p.insert(0x2f, at: min(2, p.count))
        return p + Array(".file".utf8)
    }

    /// Applies the ostree rules to a tree filled from a commit: every mtime
    /// 0.0, nlink 1, regular files never inline (payload and digest kept;
    /// empty files get neither), and the five top-level directories added
    /// (mode 040755, uid/gid 0, no xattrs) where missing.
    public static func apply(to tree: inout ComposefsTree) throws {
        for e in 0..<tree.count where !tree.isHardlink(e) {
            var n = tree.nodes[e]
            n.mtimeSec = 0
            n.mtimeNsec = 0
            n.nlink = 1
            if n.isRegular {
                if let c = n.content { n.size = UInt64(c.count) }
                n.content = nil
                if n.size == 0 { n.payload = nil; n.digest = nil }
            }
            tree[e] = n
        }
        for name in topLevelDirectories where tree.child(ComposefsTree.root, named: Array(name.utf8)) == nil {
            try tree.addChild(ComposefsTree.root, name: Array(name.utf8), node: ComposefsNode(mode: 0o040755))
        }
    }

    /// `apply`, then write the image with ostree's version policy.
    public static func image(of tree: ComposefsTree) throws -> [UInt8] {
        var t = tree
        try apply(to: &t)
        return try ImageWriter.image(of: t, options: writeOptions)
    }
}
