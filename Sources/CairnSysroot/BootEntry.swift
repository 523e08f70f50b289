/// A Boot Loader Specification type 1 entry, as ostree writes them
/// (`/boot/loader.<v>/entries/ostree-<N>-<stateroot>.conf`).
public struct BootEntry: Equatable, Sendable {
    /// Keys in file order with their values (a key may repeat, e.g. initrd).
    public var fields: [(key: String, value: String)]

    public static func == (a: BootEntry, b: BootEntry) -> Bool {
        a.fields.elementsEqual(b.fields) { $0.key == $1.key && $0.value == $1.value }
    }

    public init(fields: [(key: String, value: String)]) { self.fields = fields }

    /// Parses an entry; blank lines and `#` comments are skipped. `file`
    /// names the entry in errors.
    public init(parsing text: String, file: String) throws {
        var fields: [(String, String)] = []
        // By Unicode scalars, not Characters: a blank followed by a
        // combining mark is one Character, and "\r\n" another.
        for (n, raw) in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(String.UnicodeScalarView(raw)).trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            let scalars = line.unicodeScalars
            guard let space = scalars.firstIndex(where: { $0 == " " || $0 == "\t" }) else {
                throw DeployError("reading boot entry \(file)", "line \(n + 1): '\(line)' has a key but no value")
            }
            fields.append((String(scalars[..<space]), String(scalars[space...]).trimmingWhitespace()))
        }
        self.fields = fields
    }

    public subscript(key: String) -> String? {
        fields.first(where: { $0.key == key })?.value
    }

    public var text: String {
        fields.map { "\($0.key) \($0.value)\n" }.joined()
    }

    /// The entry file's text, refusing any key or value that could end its
    /// line or start another: the Boot Loader Specification joins repeated
    /// `options` lines, so one injected line could change the kernel
    /// command line of a signed boot. `what` names the entry in errors.
    public func validatedText(_ what: String) throws -> String {
        for (key, value) in fields {
            guard !key.isEmpty, key.utf8.allSatisfy({ (0x61...0x7a).contains($0) || $0 == 0x5f || $0 == 0x2d }) else {
                throw DeployError("writing \(what)", "invalid key '\(key.debugDescription.dropFirst().dropLast())'")
            }
            if let bad = firstControlCharacter(value) {
                throw DeployError("writing \(what)", "the \(key) value '\(value.debugDescription.dropFirst().dropLast())' contains the control character U+\(String(bad.value, radix: 16, uppercase: true))")
            }
        }
        return text
    }

    /// The kernel command line split into arguments.
    public var options: [String] {
        (self["options"] ?? "").split(separator: " ").map(String.init)
    }

    /// The `ostree=` argument: /ostree/boot.<v>/<stateroot>/<bootcsum>/<bootserial>.
    public var ostreeArgument: String? {
        options.first(where: { $0.hasPrefix("ostree=") }).map { String($0.dropFirst("ostree=".count)) }
    }

    /// Sort key: the numeric `version` (ostree gives the default the highest).
    public var version: Int { Int(self["version"] ?? "") ?? -1 }
}

/// The first C0 or C1 control character (tab, CR and LF among them): none
/// may stand in a boot entry's value.
package func firstControlCharacter(_ text: String) -> Unicode.Scalar? {
    text.unicodeScalars.first { $0.value < 0x20 || $0.value == 0x7f || (0x80..<0xa0).contains($0.value) }
}

extension StringProtocol {
    /// Without leading and trailing blanks and carriage returns, taken as
    /// Unicode scalars (a blank before a combining mark is one Character).
    package func trimmingWhitespace() -> String {
        var s = Substring(self).unicodeScalars
        while let f = s.first, f == " " || f == "\t" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}

/// Kernel arguments as ostree treats them: `--karg KEY=VALUE` replaces every
/// argument with the same key, `--karg-append` adds one more.
public struct KernelArguments: Equatable, Sendable {
    public private(set) var arguments: [String]

    public init(_ arguments: [String]) { self.arguments = arguments }

    package static func key(_ arg: String) -> Substring { arg.split(separator: "=", maxSplits: 1).first ?? Substring(arg) }

    /// Checks one argument: no whitespace or control characters, which would
    /// split it or end the `options` line.
    public static func validate(_ arg: String) throws {
        guard !arg.isEmpty else { throw DeployError("kernel argument", "empty") }
        for u in arg.unicodeScalars where u.value < 0x21 || u.value == 0x7f {
            throw DeployError("kernel argument '\(arg.debugDescription.dropFirst().dropLast())'", "contains whitespace or a control character")
        }
    }

    public mutating func replace(_ arg: String) {
        let k = Self.key(arg)
        if let first = arguments.firstIndex(where: { Self.key($0) == k }) {
            arguments[first] = arg
            var i = arguments.count - 1
            while i > first {
                if Self.key(arguments[i]) == k { arguments.remove(at: i) }
                i -= 1
            }
        } else {
            arguments.append(arg)
        }
    }

    public mutating func append(_ arg: String) { arguments.append(arg) }

    /// Deletes `KEY=VALUE` exactly, or every `KEY...` when only a key is given.
    @discardableResult
    public mutating func delete(_ arg: String) -> Bool {
        let before = arguments.count
        if arg.contains("=") {
            arguments.removeAll { $0 == arg }
        } else {
            arguments.removeAll { Self.key($0) == Substring(arg) }
        }
        return arguments.count != before
    }
}
