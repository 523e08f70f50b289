/// Writes a tree in the composefs dump format (spec appendix A), in the
/// layout `composefs-info dump` uses: depth-first, children sorted bytewise.
public enum DumpWriter {
    public static func dump(_ tree: ComposefsTree) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(tree.count * 96)
        var stack: [Int] = [0]
        while let e = stack.popLast() {
            line(tree, e, into: &out)
            if !tree.isHardlink(e) && tree.nodes[e].isDirectory {
                for c in tree.sortedChildren(e).reversed() { stack.append(Int(c)) }
            }
        }
        return out
    }

    public static func dumpString(_ tree: ComposefsTree) -> String {
        String(decoding: dump(tree), as: UTF8.self)
    }

    static func line(_ tree: ComposefsTree, _ e: Int, into out: inout [UInt8]) {
        let n = tree[e]
        escape(tree.path(of: e), into: &out, equal: false)
        func num<T: BinaryInteger>(_ v: T, _ radix: Int = 10) { out.append(0x20); out += Array(String(v, radix: radix).utf8) }
        num(n.isDirectory || n.isSymlink || n.isRegular ? n.size : 0)
        out.append(0x20)
        if tree.isHardlink(e) { out.append(0x40) }
        out += Array(String(n.mode, radix: 8).utf8)
        num(n.nlink); num(n.uid); num(n.gid)
        num(n.fileType == FileMode.charDevice || n.fileType == FileMode.blockDevice ? n.rdev : 0)
        out.append(0x20)
        out += Array("\(n.mtimeSec).\(n.mtimeNsec)".utf8)
        out.append(0x20)
        if tree.isHardlink(e) {
            escape(tree.path(of: tree.resolve(e)), into: &out, equal: false)
            out += Array(" - -\n".utf8)
            return
        }
        optional(n.isSymlink || n.isRegular ? n.payload : nil, into: &out)
        out.append(0x20)
        optional(n.isRegular ? n.content : nil, into: &out)
        out.append(0x20)
        if n.isRegular, let d = n.digest { out += hexEncode(d) } else { out.append(0x2d) }
        for x in n.xattrs.sorted(by: { bytesLess($0.name, $1.name) }) {
            out.append(0x20)
            escape(x.name, into: &out, equal: true)
            out.append(0x3d)
            escape(x.value, into: &out, equal: false)
        }
        out.append(0x0a)
    }

    static func optional(_ v: [UInt8]?, into out: inout [UInt8]) {
        guard let v else { out.append(0x2d); return }
        if v == [0x2d] { out += Array("\\x2d".utf8); return }
        escape(v, into: &out, equal: false)
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// Printable ASCII (graph characters, and space if `space`) stays;
    /// backslash, \n \r \t get their short escapes; anything else (and '='
    /// if `equal`) becomes \xHH.
    static func escape(_ bytes: [UInt8], into out: inout [UInt8], equal: Bool, space: Bool = false) {
        for b in bytes {
            switch b {
            case 0x5c: out += [0x5c, 0x5c]
            case 0x0a: out += [0x5c, 0x6e]
            case 0x0d: out += [0x5c, 0x72]
            case 0x09: out += [0x5c, 0x74]
            case 0x3d where equal: out += [0x5c, 0x78, 0x33, 0x64]
            case 0x20 where space: out.append(b)
            case 0x21...0x7e: out.append(b)
            default: out += [0x5c, 0x78, hex[Int(b >> 4)], hex[Int(b & 15)]]
            }
        }
    }
}

/// `composefs-info dump` and `ls` (1.0.8, tools/composefs-info.c), for a tree
/// from `ImageReader.composefsInfoTree`.
extension DumpWriter {
    /// Depth-first, children sorted bytewise. A hardlink line prints its
    /// target's fields (size, mode after '@', content, digest, xattrs) with
    /// the target's path as PAYLOAD; xattrs in the tree's order, '=' escaped
    /// in names and values.
    public static func composefsInfoDump(_ tree: ComposefsTree) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(tree.count * 96)
        walk(tree) { e in
            let link = tree.isHardlink(e)
            let n = tree[e]
            escape(tree.path(of: e), into: &out, equal: false)
            out += Array(" \(n.size) \(link ? "@" : "")\(String(n.mode, radix: 8)) \(n.nlink) \(n.uid) \(n.gid) \(n.rdev) \(n.mtimeSec).\(n.mtimeNsec) ".utf8)
            optional(link ? tree.path(of: tree.resolve(e)) : n.payload, into: &out)
            out.append(0x20)
            // Printed as SIZE bytes: a whiteout read back keeps its content, with size 0.
            optional(n.content.map { Array($0.prefix(Int(clamping: n.size))) }, into: &out)
            out.append(0x20)
            if let d = n.digest { out += hexEncode(d) } else { out.append(0x2d) }
            for x in n.xattrs {
                out.append(0x20)
                escape(x.name, into: &out, equal: true)
                out.append(0x3d)
                escape(x.value, into: &out, equal: true)
            }
            out.append(0x0a)
        }
        return out
    }

    /// Every entry but the root: its path (spaces kept), then "/\t" for a
    /// directory, "\t-> TARGET" for a symlink, "\t@ PAYLOAD" for a file
    /// with a backing object; nothing more for a hardlink.
    public static func composefsInfoListing(_ tree: ComposefsTree) -> [UInt8] {
        var out: [UInt8] = []
        walk(tree) { e in
            guard e != ComposefsTree.root else { return }
            escape(tree.path(of: e), into: &out, equal: false, space: true)
            if !tree.isHardlink(e) {
                let n = tree[e]
                if n.isDirectory {
                    out += [0x2f, 0x09]
                } else if n.isSymlink, let t = n.payload {
                    out += Array("\t-> ".utf8)
                    escape(t, into: &out, equal: false)
                } else if n.isRegular, let p = n.payload {
                    out += Array("\t@ ".utf8)
                    escape(p, into: &out, equal: false)
                }
            }
            out.append(0x0a)
        }
        return out
    }

    /// Pre-order, children sorted bytewise.
    static func walk(_ tree: ComposefsTree, _ visit: (Int) -> Void) {
        var stack: [Int] = [ComposefsTree.root]
        while let e = stack.popLast() {
            visit(e)
            if !tree.isHardlink(e) && tree.nodes[e].isDirectory {
                for c in tree.sortedChildren(e).reversed() { stack.append(Int(c)) }
            }
        }
    }
}
