import Foundation
import XCTest

// HTTP servers for the network tests: nginx serving a folder, and a
// fault-injecting proxy (Tests/Scripts/fault_proxy.py) in front of it. Both
// listen on 127.0.0.1 only, on a free port. A server stops with stop(), with
// deinit, with the test (serve(_:scratch:) and faultProxy(to:scratch:) add
// an XCTest teardown block), at exit (atexit), and when the test process is
// killed: it runs under `setpriv --pdeathsig KILL`, so the kernel kills it
// when the thread that started it ends. XCTest runs tests on the main thread,
// whose end is the process's; a server started from a thread that ends
// earlier (a Thread of the test's own) dies with that thread.

/// A server that failed to start, with what it said.
public struct HTTPServerError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// nginx (Debian's nginx-light) serving `root` as static files on
/// 127.0.0.1, in one process (`master_process off`), with its
/// configuration, logs and temporary folders in a private prefix under
/// `scratch`.
public final class NginxServer {
    /// One line of the access log.
    public struct Request: Equatable, Sendable {
        public var method: String
        /// The request target as sent (`$request_uri`, query included).
        public var path: String
        public var status: Int
        /// Body bytes sent (`$body_bytes_sent`).
        public var bytes: Int
        /// `$request_time`, in seconds (millisecond resolution).
        public var seconds: Double
        /// The Range header, when there was one.
        public var range: String?

        public init(method: String, path: String, status: Int, bytes: Int, seconds: Double, range: String? = nil) {
            (self.method, self.path, self.status, self.bytes, self.seconds, self.range) = (method, path, status, bytes, seconds, range)
        }
    }

    public let root: String
    /// The private prefix: nginx.conf, error.log, access.log, tmp/.
    public let prefix: String
    public private(set) var port = 0
    /// `http://127.0.0.1:PORT`, no trailing slash.
    public var url: String { "http://127.0.0.1:\(port)" }
    public var pid: pid_t { process?.pid ?? 0 }

    private var process: ServerProcess?
    private let token = UUID().uuidString
    private var accessLog: String { prefix + "/access.log" }
    private var errorLog: String { prefix + "/error.log" }
    private static let barrier = "/__cairn-harness/ready"

    public init(root: String, scratch: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw HTTPServerError(description: "nginx: \(root) is not a folder")
        }
        self.root = URL(fileURLWithPath: root).standardizedFileURL.path
        prefix = try makePrivateFolder(in: scratch, name: "nginx")
        try FileManager.default.createDirectory(atPath: prefix + "/tmp", withIntermediateDirectories: true)

        var lastError = ""
        for _ in 0..<5 {
            port = try Loopback.freePort()
            try configuration().write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
            let started = try ServerProcess(
                "/usr/sbin/nginx", ["-p", prefix, "-c", prefix + "/nginx.conf", "-e", errorLog],
                cwd: prefix, output: prefix + "/stderr.log")
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline && started.isRunning {
                if let answer = Loopback.get(port: port, path: Self.barrier), answer.body == Data(token.utf8) {
                    process = started
                    return
                }
                usleep(20_000)
            }
            started.stop(signal: SIGKILL, grace: 1)
            lastError = tail(errorLog) + tail(prefix + "/stderr.log")
            // Another program took the port between freePort() and nginx's bind: try another.
            if !lastError.contains("Address already in use") { break }
        }
        throw HTTPServerError(description: "nginx did not start on 127.0.0.1:\(port) within 5 s; its log ends:\n\(lastError)")
    }

    deinit { stop() }

    /// Stops nginx (SIGQUIT, a graceful stop; SIGKILL after 5 s) and waits
    /// for it. Does nothing the second time.
    public func stop() {
        process?.stop(signal: SIGQUIT, grace: 5)
    }

    /// Every request logged since the start or the last resetLog(), oldest
    /// first. nginx logs a request once its answer is sent; a request to
    /// the server itself first (one process, answering in order) makes sure
    /// every answer already sent is in the log.
    public func requests() -> [Request] {
        settle()
        let text = (try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count == 6, let status = Int(f[2]), let bytes = Int(f[3]) else { return nil }
            return Request(method: f[0], path: f[1], status: status, bytes: bytes,
                           seconds: Double(f[4]) ?? 0, range: f[5] == "-" ? nil : f[5])
        }
    }

    /// Forgets the requests logged so far.
    public func resetLog() {
        settle()
        truncate(accessLog, 0)
    }

    private func settle() {
        if process?.isRunning == true { _ = Loopback.get(port: port, path: Self.barrier) }
    }

    private func configuration() -> String {
        """
        # Written by CairnTestSupport.NginxServer. One process, as the user
        # that started it (no user switch), everything inside this prefix.
        daemon off;
        master_process off;
        worker_processes 1;
        pid "\(prefix)/nginx.pid";
        lock_file "\(prefix)/nginx.lock";
        error_log "\(errorLog)" notice;
        events { worker_connections 256; }
        http {
            log_format cairn escape=default '$request_method\\t$request_uri\\t$status\\t$body_bytes_sent\\t$request_time\\t$http_range';
            access_log "\(accessLog)" cairn;
            client_body_temp_path "\(prefix)/tmp/body";
            proxy_temp_path "\(prefix)/tmp/proxy";
            fastcgi_temp_path "\(prefix)/tmp/fastcgi";
            uwsgi_temp_path "\(prefix)/tmp/uwsgi";
            scgi_temp_path "\(prefix)/tmp/scgi";
            types { }
            default_type application/octet-stream;
            sendfile on;
            server_tokens off;
            server {
                listen 127.0.0.1:\(port);
                root "\(root)";
                autoindex off;
                location = \(Self.barrier) { access_log off; return 200 "\(token)"; }
            }
        }

        """
    }
}

/// A fault-injecting proxy in front of an upstream on 127.0.0.1 (an
/// NginxServer's `url`): Tests/Scripts/fault_proxy.py, which forwards GET
/// and HEAD with their headers (Range included, hop-by-hop ones dropped),
/// streams bodies, and keeps client connections alive (HTTP/1.1) while
/// upstream answers with a Content-Length.
///
/// Faults are rules (a path regex, Python's `re.search` on the request
/// target, and a fault) kept in a JSON file that the proxy re-reads on every
/// request: a rule added here applies from the next request on. The first
/// matching rule applies.
public final class FaultProxy {
    public enum Fault: Equatable, Sendable {
        /// Answer with this status (and a short text body), upstream not asked.
        case status(Int)
        /// Send the status line, headers (the full Content-Length) and this
        /// many body bytes, then close the connection.
        case drop(afterBytes: Int)
        /// The first `n` matching requests go through; later ones get the
        /// connection closed without an answer. (libcurl asks once more, on
        /// a new connection, when a reused one closes without an answer:
        /// the proxy then counts that request twice.)
        case dropAfterRequests(Int)
        /// Flip (xor 0xff) the body byte at `offset`, by default the middle
        /// one. Offsets count in the body sent: a Range answer's own body.
        /// An offset beyond the body flips nothing (the request's `fault`
        /// says so).
        case flipByte(offset: Int? = nil)
        /// Send nothing for this long (ending early when the client goes
        /// away), then answer normally.
        case stall(seconds: Double)
    }

    /// One request the proxy answered (or is answering).
    public struct Request: Equatable, Sendable {
        public var method: String
        public var path: String
        public var range: String?
        /// The status sent to the client; 0 when no status line was sent.
        public var status: Int
        /// Body bytes written to the client.
        public var bytes: Int
        /// The fault applied: "status", "drop", "dropAfterRequests", "flip", "stall".
        /// A proxy that cannot read its rules answers 500, `fault` "status".
        public var fault: String?
        /// What went wrong, if anything (the client went away, upstream failed,
        /// "unfinished" when still in progress after requests()'s wait).
        public var error: String?

        public init(method: String, path: String, range: String? = nil, status: Int, bytes: Int,
                    fault: String? = nil, error: String? = nil) {
            (self.method, self.path, self.range, self.status, self.bytes, self.fault, self.error) =
                (method, path, range, status, bytes, fault, error)
        }
    }

    public let upstream: String
    /// The proxy's folder: rules.json, requests.jsonl, stderr.log.
    public let folder: String
    public let port: Int
    /// `http://127.0.0.1:PORT`, no trailing slash.
    public var url: String { "http://127.0.0.1:\(port)" }
    public var pid: pid_t { process.pid }

    private let process: ServerProcess
    private let stdinPipe = Pipe(), stdoutPipe = Pipe()
    private var rules: [[String: Any]] = []
    private var nextRuleID = 0
    private var rulesFile: String { folder + "/rules.json" }
    private var logFile: String { folder + "/requests.jsonl" }

    private static var script: String {
        TestSupport.packageRoot.appendingPathComponent("Tests/Scripts/fault_proxy.py").path
    }

    public init(upstream: String, scratch: String) throws {
        guard upstream.hasPrefix("http://127.0.0.1:") else {
            throw HTTPServerError(description: "fault proxy: upstream must be http://127.0.0.1:PORT, not \(upstream)")
        }
        self.upstream = upstream
        folder = try makePrivateFolder(in: scratch, name: "fault-proxy")
        _ = FileManager.default.createFile(atPath: folder + "/requests.jsonl", contents: nil)
        process = try ServerProcess("/usr/bin/python3", [Self.script, upstream, folder + "/rules.json", folder + "/requests.jsonl"],
                                    cwd: folder, output: folder + "/stderr.log", stdin: stdinPipe, stdout: stdoutPipe)
        guard let line = readLine(stdoutPipe.fileHandleForReading.fileDescriptor, while: process, timeout: 5), let port = Int(line) else {
            process.stop(signal: SIGKILL, grace: 1)
            throw HTTPServerError(description: "fault proxy did not start within 5 s; stderr ends:\n" + tail(folder + "/stderr.log"))
        }
        self.port = port
        try writeRules()
    }

    deinit { stop() }

    /// Stops the proxy (SIGTERM; SIGKILL after 5 s) and waits for it. Does
    /// nothing the second time.
    public func stop() {
        process.stop(signal: SIGTERM, grace: 5)
        try? stdinPipe.fileHandleForWriting.close()
    }

    /// Adds a rule: `fault` for requests whose target matches the regex
    /// `path` (the empty regex matches all), for its first `times` matching
    /// requests when given. Rules added earlier win.
    public func inject(_ fault: Fault, path: String = "", times: Int? = nil) throws {
        nextRuleID += 1
        var rule: [String: Any] = ["id": nextRuleID, "path": path]
        if let times { rule["times"] = times }
        switch fault {
        case .status(let code): rule["fault"] = "status"; rule["code"] = code
        case .drop(let n): rule["fault"] = "drop"; rule["after"] = n
        case .dropAfterRequests(let n): rule["fault"] = "dropAfterRequests"; rule["n"] = n
        case .flipByte(let offset): rule["fault"] = "flip"; rule["offset"] = offset ?? NSNull()
        case .stall(let seconds): rule["fault"] = "stall"; rule["seconds"] = seconds
        }
        rules.append(rule)
        try writeRules()
    }

    /// Removes every rule: from the next request on, everything goes through.
    public func clear() throws {
        rules = []
        try writeRules()
    }

    /// Every request since the start or the last resetLog(), in the order
    /// they arrived. Waits (up to `wait` seconds) for those still being
    /// answered; any left then are listed with error "unfinished".
    public func requests(wait: TimeInterval = 5) -> [Request] {
        let deadline = Date().addingTimeInterval(wait)
        while true {
            let (all, unfinished) = readLog()
            if unfinished == 0 || Date() >= deadline || !process.isRunning { return all }
            usleep(10_000)
        }
    }

    /// Forgets the requests logged so far.
    public func resetLog() {
        truncate(logFile, 0)
    }

    private func writeRules() throws {
        let data = try JSONSerialization.data(withJSONObject: ["rules": rules], options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: rulesFile), options: .atomic)
    }

    private func readLog() -> (requests: [Request], unfinished: Int) {
        let data = (try? Data(contentsOf: URL(fileURLWithPath: logFile))) ?? Data()
        var order: [Int] = []
        var byID: [Int: Request] = [:]
        var open = Set<Int>()
        for line in data.split(separator: UInt8(ascii: "\n")) {
            guard let e = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                  let id = e["id"] as? Int else { continue }
            if e["event"] as? String == "begin" {
                order.append(id)
                open.insert(id)
                byID[id] = Request(method: e["method"] as? String ?? "", path: e["path"] as? String ?? "",
                                   range: e["range"] as? String, status: 0, bytes: 0, fault: nil, error: "unfinished")
            } else if byID[id] != nil {  // an end whose begin a resetLog() removed is left out
                open.remove(id)
                byID[id]!.status = e["status"] as? Int ?? 0
                byID[id]!.bytes = e["bytes"] as? Int ?? 0
                byID[id]!.fault = e["fault"] as? String
                byID[id]!.error = e["error"] as? String
            }
        }
        return (order.compactMap { byID[$0] }, open.count)
    }
}

// MARK: - Processes

/// A server process started under `setpriv --pdeathsig KILL` (so that it
/// dies with the thread that started it), registered to be killed at exit.
final class ServerProcess {
    private let process = Process()
    let pid: pid_t
    private var stopped = false
    private let lock = NSLock()

    init(_ program: String, _ arguments: [String], cwd: String, output: String,
         stdin: Pipe? = nil, stdout: Pipe? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: program) else {
            throw HTTPServerError(description: "\(program) is not installed (make test installs it)")
        }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        guard let log = FileHandle(forWritingAtPath: output) else {
            throw HTTPServerError(description: "cannot write \(output)")
        }
        defer { try? log.close() }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--pdeathsig", "KILL", "--", program] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: cwd)
        process.standardInput = stdin ?? FileHandle.nullDevice
        process.standardOutput = stdout ?? log
        process.standardError = log
        try process.run()
        pid = process.processIdentifier
        LiveServers.shared.add(pid)
    }

    var isRunning: Bool { process.isRunning }

    /// Sends `signal`, then SIGKILL if the process still runs after `grace`
    /// seconds, and waits for it to end. Idempotent.
    func stop(signal: Int32, grace: TimeInterval) {
        lock.lock()
        defer { lock.unlock() }
        if stopped { return }
        stopped = true
        if process.isRunning {
            kill(pid, signal)
            let deadline = Date().addingTimeInterval(grace)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        LiveServers.shared.remove(pid)
    }
}

/// The servers still running, killed by an atexit handler: a test process
/// that exits without stopping them leaves nothing behind.
private final class LiveServers: @unchecked Sendable {
    static let shared = LiveServers()
    private let lock = NSLock()
    private var pids = Set<pid_t>()
    private var registered = false

    func add(_ pid: pid_t) {
        lock.lock()
        defer { lock.unlock() }
        pids.insert(pid)
        if !registered {
            registered = true
            atexit { LiveServers.shared.killAll() }
        }
    }

    func remove(_ pid: pid_t) {
        lock.lock()
        defer { lock.unlock() }
        pids.remove(pid)
    }

    func killAll() {
        lock.lock()
        defer { lock.unlock() }
        for pid in pids { kill(pid, SIGKILL) }
        pids.removeAll()
    }
}

// MARK: - Loopback sockets and small helpers

/// IPv4 loopback only: the tests never use another address.
public enum Loopback {
    private static func address(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return a
    }

    private static func withAddress<T>(_ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        var a = address(port: port)
        return withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError(description: "socket: errno \(errno)") }
        defer { close(fd) }
        guard withAddress(0, { bind(fd, $0, $1) }) == 0 else { throw HTTPServerError(description: "bind 127.0.0.1:0: errno \(errno)") }
        var a = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        guard rc == 0 else { throw HTTPServerError(description: "getsockname: errno \(errno)") }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    private static func connected(_ port: Int, timeout: TimeInterval) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard withAddress(port, { connect(fd, $0, $1) }) == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Whether something accepts connections on 127.0.0.1:`port`.
    public static func isListening(port: Int) -> Bool {
        guard let fd = connected(port, timeout: 1) else { return false }
        close(fd)
        return true
    }

    /// A plain HTTP/1.0 GET of `path` on 127.0.0.1:`port`: the status and
    /// body, or nil when nothing answered within `timeout` seconds.
    public static func get(port: Int, path: String, timeout: TimeInterval = 2) -> (status: Int, body: Data)? {
        guard let fd = connected(port, timeout: timeout) else { return nil }
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1:\(port)\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return nil }
            if n == 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        guard let end = response.firstRange(of: Data("\r\n\r\n".utf8)) else { return nil }
        let statusLine = String(decoding: response[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        return (status, Data(response[end.upperBound...]))
    }
}

/// A new folder `name-XXXXXX` inside `scratch`, so that several servers
/// can share one scratch folder.
private func makePrivateFolder(in scratch: String, name: String) throws -> String {
    var template = Array("\(scratch)/\(name)-XXXXXX".utf8CString)
    guard let p = mkdtemp(&template) else {
        throw HTTPServerError(description: "cannot make a folder in \(scratch): errno \(errno)")
    }
    return String(cString: p)
}

/// The last lines of a log file, for error messages.
private func tail(_ path: String, lines: Int = 20) -> String {
    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    return text.split(separator: "\n").suffix(lines).map { $0 + "\n" }.joined()
}

/// The first line `fd` delivers, waiting up to `timeout` seconds while the process runs.
private func readLine(_ fd: Int32, while process: ServerProcess, timeout: TimeInterval) -> String? {
    let deadline = Date().addingTimeInterval(timeout)
    var bytes: [UInt8] = []
    while Date() < deadline {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 100) > 0 {
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        } else if !process.isRunning {
            return nil
        }
    }
    return nil
}

// MARK: - In tests

extension XCTestCase {
    /// An NginxServer serving `root`, stopped when the test ends, passed or
    /// failed (an XCTest teardown block).
    public func serve(_ root: String, scratch: String) throws -> NginxServer {
        let server = try NginxServer(root: root, scratch: scratch)
        addTeardownBlock { server.stop() }
        return server
    }

    /// A FaultProxy in front of `upstream`, stopped when the test ends.
    public func faultProxy(to upstream: String, scratch: String) throws -> FaultProxy {
        let proxy = try FaultProxy(upstream: upstream, scratch: scratch)
        addTeardownBlock { proxy.stop() }
        return proxy
    }
}
