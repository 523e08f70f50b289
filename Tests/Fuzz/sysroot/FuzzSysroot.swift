// libFuzzer harness for the sysroot records cairn reads from disk outside
// any signed image. Built by run.sh together with the module sources (this
// file is not part of the Swift package).
//
// The first input byte selects the target; the rest is the payload:
//   even: a state record or repository config (StateFile): an accepted file
//         must serialize to a file that reads back as the same groups and
//         values, and whose serialization is a fixed point
//   odd:  a boot entry (BootEntry): an accepted entry must read back from
//         its own text as the same fields when its text validates

import CairnSystem
import Glibc

typealias DeployError = RepoError

@inline(never) func fail(_ message: String) -> Never {
    fputs("PROPERTY VIOLATION: \(message)\n", stderr)
    abort()
}

func same(_ a: StateFile, _ b: StateFile) -> Bool {
    a.groups.elementsEqual(b.groups) { x, y in
        x.name == y.name && x.entries.elementsEqual(y.entries) { $0.key == $1.key && $0.value == $1.value }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSysroot(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let payload = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 == 0 {
        guard let parsed = try? StateFile(parsing: payload, path: "fuzz") else { return 0 }
        // Values cut at a NUL on writing, as GLib does: those cannot round-trip.
        if parsed.groups.contains(where: { $0.entries.contains { $0.value.utf8.contains(0) } }) { return 0 }
        let written = parsed.serialized()
        guard let again = try? StateFile(parsing: written, path: "fuzz") else { fail("cairn cannot read what it wrote") }
        if !same(parsed, again) { fail("a record read back differently: \(parsed.groups) became \(again.groups)") }
        if again.serialized() != written { fail("serialization is not a fixed point") }
    } else {
        guard let text = String(validating: payload, as: UTF8.self), let entry = try? BootEntry(parsing: text, file: "fuzz") else { return 0 }
        guard let written = try? entry.validatedText("fuzz") else { return 0 }
        guard let again = try? BootEntry(parsing: written, file: "fuzz") else { fail("a validated entry does not parse") }
        if again != entry { fail("a boot entry read back differently") }
    }
    return 0
}
