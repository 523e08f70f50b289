// libFuzzer entry point for the composefs image reader and dump parser.
// CFS_FUZZ_TARGET=image (default) or dump selects the input kind.
import Composefs
#if canImport(Glibc)
import Glibc
#endif

private let fuzzDump: Bool = {
    guard let p = getenv("CFS_FUZZ_TARGET") else { return false }
    return String(cString: p) == "dump"
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let buf = UnsafeBufferPointer(start: data, count: size)
    if fuzzDump {
        // Parse; if accepted, the writer must succeed or throw, and its image
        // must read back.
        guard let tree = try? DumpParser.parse(buf) else { return 0 }
        if let img = try? ImageWriter.image(of: tree) {
            guard (try? ImageReader.read(img)) != nil else { fatalError("image we wrote does not read back") }
        }
    } else {
        guard let info = try? ImageReader.read(UnsafeRawBufferPointer(buf)) else { return 0 }
        let dump = DumpWriter.dump(info.tree)
        if let tree = try? DumpParser.parse(dump) { _ = try? ImageWriter.image(of: tree) }
    }
    return 0
}
