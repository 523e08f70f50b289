// libFuzzer harness for the boot program's parsers (the kernel command line
// and prepare-root.conf). Built by run.sh with Sources/PrepareRoot's
// KernelCommandLine.swift and Config.swift (pure Swift, no system calls);
// this file is not part of the Swift package.
//
// First input byte even: the rest is a kernel command line; odd: a
// configuration file. Properties checked besides "never crashes":
//   - an accepted command line, written back with every argument quoted,
//     parses to the same arguments;
//   - an accepted key file, written back with values escaped, parses to
//     the same entries.

import Glibc

@inline(never) func fail(_ message: String) -> Never {
    fputs("PROPERTY VIOLATION: \(message)\n", stderr)
    abort()
}

func checkCommandLine(_ data: [UInt8]) {
    guard let c = try? KernelCommandLine(bytes: data) else { return }
    _ = try? BootArguments(c)
    var text: [UInt8] = []
    for a in c.arguments {
        text.append(0x22)
        text += a.key
        if let v = a.value { text.append(0x3d); text += v }
        text += [0x22, 0x20]
    }
    guard text.count <= KernelCommandLine.sizeLimit else { return }
    guard let again = try? KernelCommandLine(bytes: text) else { fail("re-quoted command line refused") }
    // An argument without '=' keeps no value; quoting keeps the split.
    guard again.arguments == c.arguments else { fail("re-quoted command line differs") }
}

func escape(_ s: String) -> String {
    // By scalar: "\r\n" is one Character (found by the fuzzer).
    var out = ""
    for (i, ch) in s.unicodeScalars.enumerated() {
        switch ch {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        case "\r": out += "\\r"
        case " " where i == 0: out += "\\s"
        default: out.unicodeScalars.append(ch)
        }
    }
    if out.hasSuffix(" ") { out = String(out.dropLast()) + "\\s" }
    return out
}

func checkConfig(_ data: [UInt8]) {
    _ = try? PrepareRootConfig(parsing: data, file: "fuzz")
    guard let doc = try? KeyFileDocument(parsing: data, file: "fuzz") else { return }
    var text = ""
    var group: String? = nil
    for e in doc.entries {
        if e.group != group { text += "[\(e.group)]\n"; group = e.group }
        text += "\(e.key)=\(escape(e.value))\n"
    }
    guard let again = try? KeyFileDocument(parsing: Array(text.utf8), file: "again") else { fail("rewritten key file refused:\n\(text)") }
    guard again.entries.map({ [$0.group, $0.key, $0.value] }) == doc.entries.map({ [$0.group, $0.key, $0.value] }) else {
        fail("rewritten key file differs")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard count > 0 else { return 0 }
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    let payload = Array(bytes.dropFirst())
    if bytes[0] & 1 == 0 { checkCommandLine(payload) } else { checkConfig(payload) }
    return 0
}
