// The fuzz harness compiles this file with CairnSystem's Hex.swift in one module.
#if canImport(CairnSystem)
import CairnSystem
#endif

/// Parsing of the kernel command line and of the arguments the boot program
/// reads from it. Pure Swift on byte arrays, no system calls: fuzzed by
/// Tests/Fuzz/prepare-root.

/// Why the command line was refused. One line, naming the argument.
public struct CommandLineError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "kernel command line: " + message }
}

/// The kernel command line split the way the kernel splits it: arguments
/// separated by blanks, double quotes grouping blanks into one argument and
/// removed (`a="b c"` is key `a`, value `b c`).
public struct KernelCommandLine: Sendable {
    public static let sizeLimit = 65536

    public struct Argument: Equatable, Sendable {
        public var key: [UInt8]
        /// nil for a bare word without `=`.
        public var value: [UInt8]?
    }

    public var arguments: [Argument]

    public init(_ text: String) throws(CommandLineError) { try self.init(bytes: Array(text.utf8)) }

    /// Refuses NUL and control bytes (other than tab and newline), an
    /// unterminated quote and more than `sizeLimit` bytes.
    public init(bytes: [UInt8]) throws(CommandLineError) {
        guard bytes.count <= Self.sizeLimit else {
            throw CommandLineError("longer than \(Self.sizeLimit) bytes")
        }
        var args: [Argument] = []
        var current: [UInt8] = []
        var inWord = false
        var quoted = false
        func finish() {
            if let eq = current.firstIndex(of: 0x3d) {
                args.append(Argument(key: Array(current[..<eq]), value: Array(current[(eq + 1)...])))
            } else {
                args.append(Argument(key: current, value: nil))
            }
            current.removeAll(keepingCapacity: true)
            inWord = false
        }
        for (i, b) in bytes.enumerated() {
            let blank = b == 0x20 || b == 0x09 || b == 0x0a
            if b < 0x20 && !blank || b == 0x7f {
                throw CommandLineError("control byte 0x\(hex2(b)) at offset \(i)")
            }
            if b == 0x22 {
                quoted.toggle()
                inWord = true
                continue
            }
            if blank && !quoted {
                if inWord { finish() }
                continue
            }
            current.append(b)
            inWord = true
        }
        guard !quoted else { throw CommandLineError("unterminated double quote") }
        if inWord { finish() }
        arguments = args
    }

    /// Values of every `key=value` argument with this key, in order.
    public func values(_ key: String) -> [[UInt8]] {
        let k = Array(key.utf8)
        return arguments.compactMap { $0.key == k ? $0.value : nil }
    }

    /// Whether `key` appears as a bare word or with a value.
    public func contains(_ key: String) -> Bool {
        let k = Array(key.utf8)
        return arguments.contains { $0.key == k }
    }
}

/// What the boot program takes from the command line.
public struct BootArguments: Equatable, Sendable {
    /// `ostree=`: the boot symlink path, absolute, relative to the sysroot.
    public var ostreePath: [UInt8]
    /// `ostree.prepare-root.composefs=`: overrides `[composefs] enabled`.
    public var composefsMode: ComposefsMode?
    /// `composefs.digest=v1-sha256-12:<hex>` or legacy `composefs=<hex>`.
    public var pinnedDigest: [UInt8]?

    public static let pathLimit = 4096

    public init(ostreePath: [UInt8], composefsMode: ComposefsMode? = nil, pinnedDigest: [UInt8]? = nil) {
        self.ostreePath = ostreePath
        self.composefsMode = composefsMode
        self.pinnedDigest = pinnedDigest
    }

    public init(commandLine text: [UInt8]) throws(CommandLineError) {
        try self.init(KernelCommandLine(bytes: text))
    }

    /// Each key may repeat only with the same value; anything else is refused.
    public init(_ cmdline: KernelCommandLine) throws(CommandLineError) {
        func single(_ key: String) throws(CommandLineError) -> [UInt8]? {
            if cmdline.arguments.contains(where: { $0.key == Array(key.utf8) && $0.value == nil }) {
                throw CommandLineError("\(key) without a value")
            }
            let vs = cmdline.values(key)
            guard let first = vs.first else { return nil }
            guard vs.allSatisfy({ $0 == first }) else {
                throw CommandLineError("\(key)= is given \(vs.count) times with different values")
            }
            return first
        }
        guard let path = try single("ostree") else { throw CommandLineError("no ostree= argument") }
        guard path.first == 0x2f else { throw CommandLineError("ostree=\(printable(path)) is not an absolute path") }
        guard path.count <= Self.pathLimit else { throw CommandLineError("ostree= is longer than \(Self.pathLimit) bytes") }
        ostreePath = path

        composefsMode = nil
        if let m = try single("ostree.prepare-root.composefs") {
            guard let mode = ComposefsMode(parsing: m) else {
                throw CommandLineError("ostree.prepare-root.composefs=\(printable(m)) is not one of yes, no, maybe, signed, verity")
            }
            composefsMode = mode
        }

        let modern = try single("composefs.digest")
        let legacy = try single("composefs")
        var digest: [UInt8]? = nil
        if let m = modern {
            let prefix = Array("v1-sha256-12:".utf8)
            guard m.starts(with: prefix), let d = hexDecode(m[prefix.count...]), d.count == 32 else {
                throw CommandLineError("composefs.digest=\(printable(m)) is not v1-sha256-12:<64 hex digits>")
            }
            digest = d
        }
        if let l = legacy {
            guard let d = hexDecode(l[...]), d.count == 32 else {
                throw CommandLineError("composefs=\(printable(l)) is not 64 hex digits")
            }
            if let digest, digest != d { throw CommandLineError("composefs= and composefs.digest= name different digests") }
            digest = d
        }
        pinnedDigest = digest
    }
}

/// `[composefs] enabled` and `ostree.prepare-root.composefs=`.
public enum ComposefsMode: String, Equatable, Sendable, CaseIterable {
    case no, maybe, yes, signed, verity

    /// yes/true/1, no/false/0, maybe, signed, verity (ASCII case ignored).
    public init?(parsing bytes: [UInt8]) {
        switch String(decoding: bytes.map(asciiLower), as: UTF8.self) {
        case "yes", "true", "1": self = .yes
        case "no", "false", "0": self = .no
        case "maybe": self = .maybe
        case "signed": self = .signed
        case "verity": self = .verity
        default: return nil
        }
    }
}

@inline(__always) func asciiLower(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5a ? b + 32 : b }

func hex2(_ b: UInt8) -> String {
    let d = Array("0123456789abcdef".utf8)
    return String(decoding: [d[Int(b >> 4)], d[Int(b & 15)]], as: UTF8.self)
}

/// Bytes for a one-line message: printable ASCII kept, the rest as \xNN,
/// cut after 200 bytes.
public func printable<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var out = ""
    for (i, b) in bytes.enumerated() {
        if i == 200 { out += "..."; break }
        if b >= 0x20 && b < 0x7f && b != 0x5c { out.unicodeScalars.append(Unicode.Scalar(b)) } else { out += "\\x" + hex2(b) }
    }
    return out
}
