#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// Parser for the composefs dump format (spec appendix A), as read by
/// `mkcomposefs --from-file`. Errors name the 1-based line and the field.
///
/// `strict` is mkcomposefs's `CFS_PARSE_STRICT` (any value): it also refuses
/// a last line without its newline, a non-zero RDEV on anything but a
/// character or block device, and a symlink whose SIZE is not the length of
/// its target or that has CONTENT.
public enum DumpParser {
    static let fieldNames = ["PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT", "DIGEST"]

    /// mkcomposefs parses strictly when this environment variable is set, whatever its value.
    public static let strictEnvironmentVariable = "CFS_PARSE_STRICT"

    public static func parse(_ text: [UInt8], strict: Bool = false) throws -> ComposefsTree {
        try text.withUnsafeBufferPointer { try parse($0, strict: strict) }
    }

    public static func parse(_ text: UnsafeBufferPointer<UInt8>, strict: Bool = false) throws -> ComposefsTree {
        var state = State()
        state.strict = strict
        var lineNo = 0
        var start = 0
        let n = text.count
        while start < n {
            var end = start
            while end < n && text[end] != 0x0a { end += 1 }
            lineNo += 1
            if strict && end == n {
                throw ComposefsError(.invalidDump, "missing newline at the end of the last line", line: lineNo)
            }
            try state.parseLine(UnsafeBufferPointer(rebasing: text[start..<end]), line: lineNo)
            start = end + 1
        }
        guard var tree = state.tree else {
            throw ComposefsError(.invalidDump, "no root directory line", line: max(lineNo, 1))
        }
        try resolveHardlinks(&tree, state.fixups)
        return tree
    }

    struct Fixup {
        var entry: Int
        var target: [UInt8]
        var line: Int
    }

    struct State {
        var strict = false
        var tree: ComposefsTree?
        var fixups: [Fixup] = []
        /// Xattr lists already parsed, by the hash of their raw text: most
        /// entries repeat a few lists (selinux labels), which then share one
        /// array instead of three allocations per entry.
        var xattrCache: [Int: (text: [UInt8], xattrs: [ComposefsXattr])] = [:]

        mutating func parseLine(_ line: UnsafeBufferPointer<UInt8>, line no: Int) throws {
            func fail(_ msg: String, _ field: Int? = nil, path: [UInt8]? = nil) -> ComposefsError {
                ComposefsError(.invalidDump, msg, path: path, line: no, field: field.map { DumpParser.fieldNames[$0] })
            }
            // Split the eleven fixed fields, then the xattrs.
            var fields: [UnsafeBufferPointer<UInt8>] = []
            fields.reserveCapacity(11)
            var p = 0
            let n = line.count
            // Like mkcomposefs, fields missing at the end of a line are empty.
            for _ in 0..<11 {
                if p > n { fields.append(UnsafeBufferPointer(rebasing: line[n..<n])); continue }
                var e = p
                while e < n && line[e] != 0x20 { e += 1 }
                fields.append(UnsafeBufferPointer(rebasing: line[p..<e]))
                p = e + 1
            }
            let path = try unescape(fields[0]).orThrow { fail($0, 0) }
            var modeField = fields[2]
            let isHardlink = modeField.first == 0x40
            if isHardlink { modeField = UnsafeBufferPointer(rebasing: modeField[1...]) }
            let mode64 = try parseInt(modeField, base: 8).orThrow { fail($0, 2, path: path) }
            let mode = UInt32(truncatingIfNeeded: mode64)
            guard FileMode.isKnownType(mode) else { throw fail("unknown file type in mode \(String(mode64, radix: 8))", 2, path: path) }

            var node = ComposefsNode(mode: mode)
            if isHardlink {
                guard mode & FileMode.typeMask != FileMode.directory else {
                    throw fail("directories can't be hardlinked", 2, path: path)
                }
                let entry = try add(path, node, fail)
                guard let target = try unescapeOptional(fields[8]).orThrow({ fail($0, 8, path: path) }) else {
                    throw fail("hardlink without target path", 8, path: path)
                }
                fixups.append(Fixup(entry: entry, target: target, line: no))
                return
            }
            node.size = try parseInt(fields[1], base: 10).orThrow { fail($0, 1, path: path) }
            node.nlink = UInt32(truncatingIfNeeded: try parseInt(fields[3], base: 10).orThrow { fail($0, 3, path: path) })
            node.uid = UInt32(truncatingIfNeeded: try parseInt(fields[4], base: 10).orThrow { fail($0, 4, path: path) })
            node.gid = UInt32(truncatingIfNeeded: try parseInt(fields[5], base: 10).orThrow { fail($0, 5, path: path) })
            let rdev64 = try parseInt(fields[6], base: 10).orThrow { fail($0, 6, path: path) }
            let rdev = UInt32(truncatingIfNeeded: rdev64)
            // MTIME: SECONDS.NANOSECONDS
            let mt = fields[7]
            guard let dot = mt.firstIndex(of: 0x2e) else { throw fail("expected SECONDS.NANOSECONDS", 7, path: path) }
            var secField = UnsafeBufferPointer(rebasing: mt[..<dot])
            let negative = secField.first == 0x2d
            if negative { secField = UnsafeBufferPointer(rebasing: secField[1...]) }
            let sec = try parseInt(secField, base: 10).orThrow { fail($0, 7, path: path) }
            let nsec = try parseInt(UnsafeBufferPointer(rebasing: mt[(dot + 1)...]), base: 10).orThrow { fail($0, 7, path: path) }
            guard nsec < 1_000_000_000 else { throw fail("nanoseconds out of range", 7, path: path) }
            node.mtimeSec = negative ? 0 &- Int64(bitPattern: sec) : Int64(bitPattern: sec)
            node.mtimeNsec = UInt32(nsec)
            let payload = try unescapeOptional(fields[8]).orThrow { fail($0, 8, path: path) }
            let content = try unescapeOptional(fields[9]).orThrow { fail($0, 9, path: path) }
            if let content {
                guard UInt64(content.count) == node.size else {
                    throw fail("content length \(content.count) does not match size \(node.size)", 9, path: path)
                }
                guard content.count <= ImageWriter.maxInlineContent else {
                    throw fail("inline content larger than \(ImageWriter.maxInlineContent) bytes", 9, path: path)
                }
            }
            if let d = try unescapeOptional(fields[10]).orThrow({ fail($0, 10, path: path) }), !d.isEmpty {
                guard d.count == 64, let raw = hexDecode(d) else { throw fail("digest must be 64 hex digits", 10, path: path) }
                node.digest = raw
            }
            let isDevice = node.fileType == FileMode.charDevice || node.fileType == FileMode.blockDevice
            if strict && !isDevice && rdev64 != 0 {
                throw fail("non-zero device number \(rdev64) on a file that is not a device", 6, path: path)
            }
            switch node.fileType {
            case FileMode.symlink:
                guard let t = payload, !t.isEmpty else { throw fail("symlink without target", 8, path: path) }
                guard t.count < 4096 else { throw fail("symlink target of 4096 bytes or more", 8, path: path) }
                if strict {
                    // mkcomposefs measures the target as a C string.
                    let length = UInt64(t.firstIndex(of: 0) ?? t.count)
                    guard node.size == length else {
                        throw fail("symlink size \(node.size) does not match the length \(length) of its target", 1, path: path)
                    }
                    if let content, !content.isEmpty { throw fail("a symlink cannot have content", 9, path: path) }
                }
                node.payload = t
                node.size = UInt64(t.count)
            case FileMode.regular:
                node.payload = payload
                node.content = content
                if content == nil && node.size > (UInt64(1) << 53) { throw fail("file larger than 2^53 bytes", 1, path: path) }
            case FileMode.charDevice, FileMode.blockDevice:
                node.rdev = rdev
            default:
                break
            }
            // Xattrs: KEY=VALUE fields separated by single spaces.
            var cacheKey = 0
            if p < n {
                let tail = UnsafeBufferPointer(rebasing: line[p..<n])
                var h = Hasher()
                h.combine(bytes: UnsafeRawBufferPointer(tail))
                cacheKey = h.finalize()
                if let c = xattrCache[cacheKey], c.text.count == tail.count,
                   c.text.withUnsafeBufferPointer({ memcmp($0.baseAddress!, tail.baseAddress!, tail.count) == 0 }) {
                    node.xattrs = c.xattrs
                    _ = try add(path, node, fail)
                    return
                }
            }
            let tailStart = p
            var budget = 12
            while p < n {
                var e = p
                while e < n && line[e] != 0x20 { e += 1 }
                let field = UnsafeBufferPointer(rebasing: line[p..<e])
                p = e + 1
                let eq = field.firstIndex(of: 0x3d) ?? field.endIndex
                let key = try unescape(UnsafeBufferPointer(rebasing: field[..<eq])).orThrow { fail("xattr name: " + $0, path: path) }
                let value = eq < field.endIndex
                    ? try unescape(UnsafeBufferPointer(rebasing: field[(eq + 1)...])).orThrow { fail("xattr value: " + $0, path: path) }
                    : []
                guard !key.isEmpty else { throw fail("empty xattr name", path: path) }
                guard key.count <= 255 else { throw fail("xattr name longer than 255 bytes", path: path) }
                guard !key.contains(0) else { throw fail("xattr name contains NUL", path: path) }
                guard value.count <= 65535 else { throw fail("xattr value longer than 65535 bytes", path: path) }
                if let old = node.xattr(key) { budget -= 7 + key.count + old.count }
                budget += 7 + key.count + value.count
                guard budget <= ImageWriter.maxXattrBudget else { throw fail("xattrs exceed the per-inode limit", path: path) }
                node.setXattr(key, value)
            }
            if tailStart < n && xattrCache.count < 4096 {
                xattrCache[cacheKey] = (Array(line[tailStart..<n]), node.xattrs)
            }
            _ = try add(path, node, fail)
        }

        mutating func add(_ path: [UInt8], _ node: ComposefsNode,
                          _ fail: (String, Int?, [UInt8]?) -> ComposefsError) throws -> Int {
            if path == [0x2f] {
                guard tree == nil else { throw fail("duplicate root", 0, path) }
                guard node.isDirectory else { throw fail("root must be a directory", 2, path) }
                tree = ComposefsTree(root: node)
                return 0
            }
            guard tree != nil else { throw fail("the root directory must come first", 0, path) }
            guard path.first == 0x2f else { throw fail("path must be absolute", 0, path) }
            // Components separated by one or more slashes; the last must be non-empty.
            var parent = 0
            var i = 0
            let n = path.count
            while true {
                while i < n && path[i] == 0x2f { i += 1 }
                var j = i
                while j < n && path[j] != 0x2f { j += 1 }
                let name = Array(path[i..<j])
                if j == n {
                    do { return try tree!.addChild(parent, name: name, node: node) } catch let e as ComposefsError {
                        throw fail(e.message, 0, path)
                    }
                }
                guard !name.isEmpty, let c = tree!.child(parent, named: name) else {
                    throw fail("parent directory missing", 0, path)
                }
                parent = c
                i = j
            }
        }
    }

    static func resolveHardlinks(_ tree: inout ComposefsTree, _ fixups: [Fixup]) throws {
        var byEntry: [Int: Int] = [:]
        for (i, f) in fixups.enumerated() { byEntry[f.entry] = i }
        var done = [Bool](repeating: false, count: fixups.count)
        func resolve(_ i: Int, depth: Int) throws {
            if done[i] { return }
            let f = fixups[i]
            func fail(_ m: String) -> ComposefsError {
                ComposefsError(.invalidDump, m, path: f.target, line: f.line, field: "PAYLOAD")
            }
            guard depth < fixups.count + 1 else { throw fail("hardlink cycle") }
            guard let t = tree.lookup(path: f.target) else { throw fail("no hardlink target at this path") }
            guard t != f.entry else { throw fail("hardlink points to itself") }
            if let j = byEntry[t], !done[j] { try resolve(j, depth: depth + 1) }
            do { try tree.setHardlinkTarget(f.entry, t) } catch let e as ComposefsError { throw fail(e.message) }
            done[i] = true
        }
        for i in fixups.indices { try resolve(i, depth: 0) }
    }
}

// MARK: - field helpers

/// Either a value or a message for the caller to wrap with line/field context.
enum FieldResult<T> {
    case ok(T)
    case bad(String)
    func orThrow(_ wrap: (String) -> ComposefsError) throws -> T {
        switch self {
        case .ok(let v): return v
        case .bad(let m): throw wrap(m)
        }
    }
}

func parseInt(_ f: UnsafeBufferPointer<UInt8>, base: UInt64) -> FieldResult<UInt64> {
    guard !f.isEmpty else { return .bad("empty number") }
    var v: UInt64 = 0
    for c in f {
        let d = UInt64(c) &- 0x30
        guard c >= 0x30 && d < base else { return .bad("invalid digit in number") }
        let (m, o1) = v.multipliedReportingOverflow(by: base)
        let (a, o2) = m.addingReportingOverflow(d)
        guard !o1 && !o2 else { return .bad("number too large") }
        v = a
    }
    return .ok(v)
}

/// Decodes the escapes \\ \n \r \t \xHH.
func unescape(_ f: UnsafeBufferPointer<UInt8>) -> FieldResult<[UInt8]> {
    var out = [UInt8]()
    out.reserveCapacity(f.count)
    var i = 0
    let n = f.count
    while i < n {
        let c = f[i]
        i += 1
        if c != 0x5c { out.append(c); continue }
        guard i < n else { return .bad("no character after escape") }
        let e = f[i]
        i += 1
        switch e {
        case 0x5c: out.append(0x5c)
        case 0x6e: out.append(0x0a)
        case 0x72: out.append(0x0d)
        case 0x74: out.append(0x09)
        case 0x78:
            guard i + 1 < n || i + 2 <= n, i + 2 <= n else { return .bad("no hex digits after \\x") }
            guard let h = hexValue(f[i]), let l = hexValue(f[i + 1]) else { return .bad("invalid hex digits after \\x") }
            out.append(h << 4 | l)
            i += 2
        default:
            return .bad("unsupported escape \\\(Character(Unicode.Scalar(e)))")
        }
    }
    return .ok(out)
}

/// "-" means absent.
func unescapeOptional(_ f: UnsafeBufferPointer<UInt8>) -> FieldResult<[UInt8]?> {
    if f.count == 1 && f[0] == 0x2d { return .ok(nil) }
    switch unescape(f) {
    case .ok(let v): return .ok(v)
    case .bad(let m): return .bad(m)
    }
}
