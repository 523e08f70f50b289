import CairnSystem
#if canImport(Glibc)
import Glibc
#endif

/// What a program run by `runProgram` did.
struct ProgramResult: Sendable {
    /// Its exit status; nil when a signal ended it (or the timeout did).
    var status: Int32?
    var signal: Int32?
    var timedOut: Bool
    /// stdout and stderr together, the first `outputLimit` bytes.
    var output: [UInt8]
    var truncated: Bool

    var succeeded: Bool { status == 0 && !timedOut }

    var summary: String {
        if timedOut { return "timed out" }
        if let status { return "exit status \(status)" }
        return "killed by signal \(signal ?? 0)"
    }
}

/// Runs `path` with `arguments`, stdin /dev/null, stdout and stderr into one
/// pipe; after `timeout` seconds its process group is killed. The program
/// is the only member of its new process group, so a check that starts
/// children cannot leave them behind.
func runProgram(_ path: String, arguments: [String] = [], timeout: Double, outputLimit: Int = 64 << 10) throws -> ProgramResult {
    var fds: [Int32] = [-1, -1]
    guard pipe(&fds) == 0 else { throw SystemError.current("pipe") }
    // Not inherited by anything else this process may start meanwhile.
    _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
    let reader = FileDescriptor(rawValue: fds[0])
    defer { reader.close() }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
    close(fds[1])
    guard spawned == 0 else { throw SystemError(errno: spawned, operation: "running", path: Array(path.utf8)) }

    var output: [UInt8] = []
    var truncated = false
    var timedOut = false
    let deadline = monotonicSeconds() + timeout
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let left = deadline - monotonicSeconds()
        if left <= 0 { timedOut = true; break }
        var p = pollfd(fd: reader.rawValue, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, Int32(min(left, 3600) * 1000) + 1)
        if ready < 0 && errno == EINTR { continue }
        if ready == 0 { continue }
        let n = buffer.withUnsafeMutableBytes { read(reader.rawValue, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }  // every writer closed: the program (and its children) are done
        let room = outputLimit - output.count
        if room > 0 { output += buffer[..<min(n, room)] }
        if n > room { truncated = true }
    }
    if timedOut { kill(-pid, SIGKILL) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // The group's stragglers, if the program exited and left children holding the pipe.
    kill(-pid, SIGKILL)
    let exited = status & 0x7f == 0
    return ProgramResult(status: exited && !timedOut ? (status >> 8) & 0xff : nil, signal: exited ? nil : status & 0x7f,
                         timedOut: timedOut, output: output, truncated: truncated)
}

/// systemd's journal, through its native protocol (one datagram per entry
/// to /run/systemd/journal/socket), so that an entry carries structured
/// fields such as a stable MESSAGE_ID that `journalctl MESSAGE_ID=...`
/// finds. Returns false where no journal listens; callers print as well.
@discardableResult
func sendToJournal(_ fields: [(String, String)]) -> Bool {
    // Tests listen on a socket of their own rather than write to the host's journal.
    let socketPath = getenv("CAIRN_TEST_JOURNAL_SOCKET").map { String(cString: $0) } ?? "/run/systemd/journal/socket"
    var datagram: [UInt8] = []
    for (key, value) in fields {
        let bytes = Array(value.utf8)
        if bytes.contains(0x0a) {
            // KEY\n, the length as 64-bit little endian, the value, \n.
            datagram += Array(key.utf8) + [0x0a]
            var length = UInt64(bytes.count).littleEndian
            datagram += withUnsafeBytes(of: &length) { Array($0) }
            datagram += bytes + [0x0a]
        } else {
            datagram += Array("\(key)=".utf8) + bytes + [0x0a]
        }
    }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let pathBytes = Array(socketPath.utf8)
    guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in pathBytes.enumerated() { raw[i] = b }
    }
    let sent = withUnsafePointer(to: &address) { a in
        a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            datagram.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, sa, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
    return sent == datagram.count
}
