import Foundation
import XCTest

/// What a finished process printed and returned.
public struct ProcessResult {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var stdoutData: Data

    public var lastLine: String {
        stdout.split(separator: "\n").last.map(String.init) ?? ""
    }
}

/// Helpers shared by the integration tests: locating the built programs,
/// running commands, scratch folders, and skipping when a tool is absent.
public enum TestSupport {
    /// The package root (two levels above Tests/<Target>/).
    public static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    /// ../shared next to the package, where the reference vectors live.
    public static var sharedFolder: URL { packageRoot.deletingLastPathComponent().appendingPathComponent("shared") }

    /// The build folder holding the test bundle and the executables.
    public static let buildFolder: URL = {
        Bundle.main.bundleURL.deletingLastPathComponent().standardizedFileURL
    }()

    /// Path of a built executable of this package (`make test` builds them
    /// first). `CAIRN_TEST_BIN=DIR` runs the tests against the programs in
    /// DIR instead (another build, or an older version to see a test fail).
    public static func executable(_ name: String) throws -> String {
        let override = ProcessInfo.processInfo.environment["CAIRN_TEST_BIN"].map { [URL(fileURLWithPath: $0)] } ?? []
        for folder in override + [buildFolder, buildFolder.appendingPathComponent(".."), packageRoot.appendingPathComponent(".build/debug")] {
            let candidate = folder.appendingPathComponent(name).standardizedFileURL.path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        XCTFail("\(name) is not built (looked next to \(buildFolder.path)); run `swift build` first")
        throw XCTSkip("\(name) not built")
    }

    /// Runs a program and waits for it.
    @discardableResult
    public static func run(_ program: String, _ arguments: [String], environment: [String: String] = [:],
                           stdin: Data? = nil, cwd: String? = nil) throws -> ProcessResult {
        let process = Process()
        if program.contains("/") {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [program] + arguments
        }
        var env = ProcessInfo.processInfo.environment
        env["LC_ALL"] = "C.UTF-8"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        let inPipe = Pipe()
        process.standardInput = stdin == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let stdin {
            inPipe.fileHandleForWriting.write(stdin)
            try? inPipe.fileHandleForWriting.close()
        }
        // Read stderr on another thread so that neither pipe fills up.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box()
        let errDone = DispatchSemaphore(value: 0)
        let errHandle = errPipe.fileHandleForReading
        Thread {
            errBox.data = errHandle.readDataToEndOfFile()
            errDone.signal()
        }.start()
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        errDone.wait()
        process.waitUntilExit()
        return ProcessResult(status: process.terminationStatus,
                             stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errBox.data, as: UTF8.self),
                             stdoutData: outData)
    }

    /// Runs a shell command line; fails the test when it fails.
    @discardableResult
    public static func sh(_ command: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try run("/bin/sh", ["-c", command])
        if r.status != 0 {
            XCTFail("`\(command)` failed (\(r.status)): \(r.stderr)", file: file, line: line)
            throw XCTSkip("setup command failed")
        }
        return r.stdout
    }

    /// Skips the test unless `tool` is on PATH.
    public static func require(tool: String) throws {
        let r = try run("/bin/sh", ["-c", "command -v \(tool)"])
        if r.status != 0 { throw XCTSkip("\(tool) is not installed (make test installs it)") }
    }

    public static func requireRoot() throws {
        if getuid() != 0 { throw XCTSkip("needs root") }
    }

    /// A fresh scratch folder under /var/tmp, removed by the returned cleanup.
    public static func scratchFolder(_ name: String = "cairn-test") throws -> String {
        var template = Array("/var/tmp/\(name)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw XCTSkip("mkdtemp failed") }
        return String(cString: p)
    }

    /// Runs a shell script as root in a throwaway copy of this machine's /:
    /// an overlay of / with its upper layer on a tmpfs, in a private mount
    /// namespace, with /proc and /dev bound. Whatever the script changes in
    /// / vanishes with the namespace. `scratch` holds the mount points.
    public static func inThrowawayRoot(scratch: String, _ script: String) throws -> ProcessResult {
        let base = scratch + "/throwaway-root"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        try script.write(toFile: scratch + "/throwaway-script.sh", atomically: true, encoding: .utf8)
        return try run("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", """
            set -e
            mount -t tmpfs tmpfs '\(base)'
            mkdir '\(base)/upper' '\(base)/work' '\(base)/root'
            mount -t overlay overlay -o lowerdir=/,upperdir='\(base)/upper',workdir='\(base)/work' '\(base)/root'
            mount --rbind /proc '\(base)/root/proc'
            mount --rbind /dev '\(base)/root/dev'
            exec chroot '\(base)/root' /bin/sh '\(scratch)/throwaway-script.sh'
            """])
    }

    /// Removes a scratch folder, first lifting the immutable flag ostree
    /// sets on deployment folders.
    public static func remove(_ path: String) {
        _ = try? run("/bin/sh", ["-c", "chattr -R -f -i \"$1\" 2>/dev/null; rm -rf --one-file-system \"$1\"", "sh", path])
    }
}

/// Base class of the command-line tests: a scratch folder per test (removed
/// afterwards) and the built `cairn`, run with an expected exit status.
open class CairnTestCase: XCTestCase {
    public var dir = ""
    public var cairnPath = ""

    open var scratchName: String { "cairn-test" }

    open override func setUpWithError() throws {
        cairnPath = try TestSupport.executable("cairn")
        dir = try TestSupport.scratchFolder(scratchName)
    }

    open override func tearDown() {
        TestSupport.remove(dir)
    }

    @discardableResult
    open func cairn(_ args: [String], expect status: Int32 = 0, stdin: Data? = nil,
                    file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try TestSupport.run(cairnPath, args, stdin: stdin)
        XCTAssertEqual(r.status, status, "cairn \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        return r
    }
}

/// The elements of an `aay` as g_variant_print shows them: `[byte 0x12, ...]`,
/// or for an element ending in a NUL the bytestring form `b'...'` (octal and
/// C escapes; the final NUL implied).
public func glibPrintedByteArrays(_ text: String) -> [[UInt8]] {
    let c = Array(text.utf8)
    var result: [[UInt8]] = []
    var i = 0
    func at(_ k: Int) -> UInt8 { k < c.count ? c[k] : 0 }
    while i < c.count {
        if c[i] == UInt8(ascii: "b") && (at(i + 1) == UInt8(ascii: "'") || at(i + 1) == UInt8(ascii: "\"")) {
            let quote = c[i + 1]
            var bytes: [UInt8] = []
            i += 2
            while i < c.count && c[i] != quote {
                guard c[i] == UInt8(ascii: "\\") else { bytes.append(c[i]); i += 1; continue }
                var v = 0, k = 1
                while k <= 3, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(at(i + k)) { v = v * 8 + Int(at(i + k) - 48); k += 1 }
                if k > 1 { bytes.append(UInt8(v)); i += k; continue }
                let escapes: [UInt8: UInt8] = [110: 10, 116: 9, 114: 13, 97: 7, 98: 8, 102: 12, 118: 11]
                bytes.append(escapes[at(i + 1)] ?? at(i + 1))
                i += 2
            }
            result.append(bytes + [0])
            i += 1
        } else if c[i] == UInt8(ascii: "[") && at(i + 1) != UInt8(ascii: "b") || (c[i] == UInt8(ascii: "[") && Array(c[(i + 1)..<Swift.min(i + 6, c.count)]) == Array("byte ".utf8)) {
            var bytes: [UInt8] = []
            i += 1
            while i < c.count && c[i] != UInt8(ascii: "]") && c[i] != UInt8(ascii: "[") {
                if c[i] == UInt8(ascii: "0") && at(i + 1) == UInt8(ascii: "x"), let v = UInt8(String(decoding: c[(i + 2)..<Swift.min(i + 4, c.count)], as: UTF8.self), radix: 16) {
                    bytes.append(v)
                    i += 4
                } else {
                    i += 1
                }
            }
            if !bytes.isEmpty { result.append(bytes) }
        } else {
            i += 1
        }
    }
    return result
}
