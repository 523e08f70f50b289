#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CairnSystem

/// `mkcomposefs SRC IMAGE` as one step, for both the cairn front end and
/// cairn-full: scan the directory (copying its files into the digest store,
/// if any), lay out the image and stream it out; the image's bytes are never
/// all in memory.
public enum DirectoryImage {
    /// Where the image goes.
    public enum Output: Equatable, Sendable {
        /// Written nowhere: only its digest is wanted (--print-digest-only).
        case digestOnly
        /// Standard output ("-").
        case standardOutput
        /// A file, written atomically and durably.
        case file(String)

        public init(_ argument: String?) {
            switch argument {
            case nil: self = .digestOnly
            case "-": self = .standardOutput
            case let path?: self = .file(path)
            }
        }
    }

    /// Writes the image of `source` to `output`; returns its fs-verity
    /// digest when `digest` is set (always for `.digestOnly`). The digest
    /// store's shared lock is held until the image naming its new objects
    /// is written, so `image gc` never removes them in between. Errors are
    /// `ComposefsError` (the tree) or `SystemError` (the output).
    public static func create(_ source: [UInt8], scan: DirectoryScanOptions, options: ComposefsWriteOptions,
                              output: Output, digest: Bool) throws -> [UInt8]? {
        let lock = try scan.digestStore?.lock(exclusive: false)
        defer { lock?.close() }
        let prepared = try ImageWriter.prepare(try DirectoryScanner.scan(source, options: scan), options: options)
        switch output {
        case .digestOnly:
            let null = try FileDescriptor.open(Array("/dev/null".utf8), O_WRONLY)
            return try null.closeAfter { try prepared.write(to: null, digest: true) }
        case .standardOutput:
            return try prepared.write(to: .standardOutput, digest: digest)
        case .file(let path):
            var result: [UInt8]?
            try FileSystem.writeAtomically(path) { result = try prepared.write(to: $0, digest: digest) }
            return result
        }
    }
}
