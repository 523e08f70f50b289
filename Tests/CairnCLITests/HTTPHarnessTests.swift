import CairnTestSupport
import Foundation
import XCTest

/// The HTTP test harness itself: nginx serving a folder and an ostree
/// archive repository, the fault proxy in front of it, each fault as seen
/// by curl and by Debian's `ostree pull` (libostree's libcurl fetcher), and
/// that servers never outlive a test.
final class HTTPHarnessTests: XCTestCase {
    var dir = ""
    /// curl and libcurl must not send 127.0.0.1 to a proxy from the environment.
    let noProxy = ["no_proxy": "*", "NO_PROXY": "*"]

    override func setUpWithError() throws {
        try TestSupport.require(tool: "curl")
        try TestSupport.require(tool: "ostree")
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") else {
            throw XCTSkip("nginx is not installed (make test installs nginx-light)")
        }
        dir = try TestSupport.scratchFolder("cairn-http")
    }

    override func tearDown() {
        TestSupport.remove(dir)
    }

    // MARK: helpers

    struct Fetch {
        var exit: Int32
        var status: Int
        var contentType: String
        var body: Data
        var stderr: String
    }

    func curl(_ url: String, _ options: [String] = []) throws -> Fetch {
        let out = dir + "/curl.out"
        try? FileManager.default.removeItem(atPath: out)
        let r = try TestSupport.run("curl", ["-sS", "-o", out, "-w", "%{http_code} %{content_type}"] + options + [url],
                                    environment: noProxy)
        let w = r.stdout.split(separator: " ", maxSplits: 1).map(String.init)
        return Fetch(exit: r.status, status: Int(w.first ?? "") ?? -1, contentType: w.count > 1 ? w[1] : "",
                     body: (try? Data(contentsOf: URL(fileURLWithPath: out))) ?? Data(), stderr: r.stderr)
    }

    /// A folder with small.txt, big.bin (2 MB of random bytes) and sub/nested.txt.
    func makeSite() throws -> String {
        let root = dir + "/www"
        try TestSupport.sh("""
            mkdir -p '\(root)/sub'
            printf 'hello\\n' > '\(root)/small.txt'
            printf 'nested\\n' > '\(root)/sub/nested.txt'
            head -c 2000000 /dev/urandom > '\(root)/big.bin'
            """)
        return root
    }

    func file(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    @discardableResult
    func ostree(_ args: [String], expect status: Int32? = 0, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        let r = try TestSupport.run("ostree", args, environment: noProxy)
        if let status { XCTAssertEqual(r.status, status, "ostree \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line) }
        return r
    }

    /// An archive repository (`ostree init --mode=archive`, `commit`,
    /// `summary -u`) whose branch `main` holds big.bin (2 MB, random) and a
    /// few small files.
    func makeServedRepo() throws -> (repo: String, tree: String) {
        let repo = dir + "/served", tree = dir + "/tree"
        try TestSupport.sh("""
            mkdir -p '\(tree)/usr/lib' '\(tree)/etc'
            head -c 2000000 /dev/urandom > '\(tree)/usr/lib/big.bin'
            echo one > '\(tree)/etc/version'
            echo hello > '\(tree)/usr/lib/greeting'
            """)
        try ostree(["init", "--repo=" + repo, "--mode=archive"])
        try ostree(["commit", "--repo=" + repo, "-b", "main", "--tree=dir=" + tree, "-s", "one"])
        try ostree(["summary", "--repo=" + repo, "-u"])
        return (repo, tree)
    }

    /// The URL path of a file's content object in an archive repository.
    func objectPath(_ repo: String, _ path: String) throws -> String {
        let fields = try ostree(["ls", "--repo=" + repo, "-C", "main", path]).stdout.split(separator: " ", omittingEmptySubsequences: true)
        let checksum = String(fields[4])
        return "/objects/\(checksum.prefix(2))/\(checksum.dropFirst(2)).filez"
    }

    /// A new bare-user repository with remote `origin` at `url` (no GPG).
    func makeClient(_ url: String) throws -> String {
        var template = Array("\(dir)/client-XXXXXX".utf8CString)
        let client = String(cString: mkdtemp(&template)!)
        try ostree(["init", "--repo=" + client, "--mode=bare-user"])
        try ostree(["remote", "add", "--repo=" + client, "--no-gpg-verify", "origin", url])
        return client
    }

    func pull(_ client: String, expect status: Int32? = 0, file: StaticString = #filePath, line: UInt = #line) throws -> ProcessResult {
        try ostree(["pull", "--repo=" + client, "origin", "main"], expect: status, file: file, line: line)
    }

    func elapsed(_ body: () throws -> Void) rethrows -> TimeInterval {
        let start = Date()
        try body()
        return Date().timeIntervalSince(start)
    }

    // MARK: nginx and the proxy

    func testNginxServesAFolderOnLoopbackAndLogsRequests() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        XCTAssertEqual(nginx.url, "http://127.0.0.1:\(nginx.port)")
        let listening = try TestSupport.sh("ss -ltnH 'sport = :\(nginx.port)'")
        XCTAssertEqual(listening.split(separator: "\n").count, 1, listening)
        XCTAssertTrue(listening.contains("127.0.0.1:\(nginx.port)"), listening)

        let small = try curl(nginx.url + "/small.txt")
        XCTAssertEqual(small.status, 200)
        XCTAssertEqual(small.body, Data("hello\n".utf8))
        XCTAssertEqual(small.contentType, "application/octet-stream")
        let big = try curl(nginx.url + "/big.bin")
        XCTAssertEqual(big.body, try file(root + "/big.bin"))
        let part = try curl(nginx.url + "/big.bin", ["-r", "1000-1999"])
        XCTAssertEqual(part.status, 206)
        XCTAssertEqual(part.body, try file(root + "/big.bin")[1000..<2000])
        XCTAssertEqual(try curl(nginx.url + "/missing").status, 404)
        XCTAssertEqual(try curl(nginx.url + "/sub/").status, 403, "no directory listing")

        let log = nginx.requests()
        XCTAssertEqual(log.map(\.path), ["/small.txt", "/big.bin", "/big.bin", "/missing", "/sub/"])
        XCTAssertEqual(log.map(\.status), [200, 200, 206, 404, 403])
        XCTAssertEqual(log.prefix(3).map(\.bytes), [6, 2_000_000, 1000])
        XCTAssertEqual(log.map(\.range), [nil, nil, "bytes=1000-1999", nil, nil])
        XCTAssertEqual(Set(log.map(\.method)), ["GET"])
        nginx.resetLog()
        XCTAssertEqual(nginx.requests(), [])
        _ = try curl(nginx.url + "/sub/nested.txt")
        XCTAssertEqual(nginx.requests().map(\.path), ["/sub/nested.txt"])
    }

    func testProxyForwardsRangesAndHeadersAndKeepsConnectionsAlive() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        XCTAssertEqual(proxy.url, "http://127.0.0.1:\(proxy.port)")
        XCTAssertTrue(try TestSupport.sh("ss -ltnH 'sport = :\(proxy.port)'").contains("127.0.0.1:\(proxy.port)"))
        let bigData = try file(root + "/big.bin")

        XCTAssertEqual(try curl(proxy.url + "/big.bin").body, bigData)
        let part = try curl(proxy.url + "/big.bin", ["-r", "1999990-", "-D", dir + "/headers"])
        XCTAssertEqual(part.status, 206)
        XCTAssertEqual(part.body, bigData.suffix(10))
        let headers = try String(contentsOfFile: dir + "/headers", encoding: .utf8)
        XCTAssertTrue(headers.contains("Content-Range: bytes 1999990-1999999/2000000"), headers)
        XCTAssertTrue(headers.contains("ETag: "), headers)
        XCTAssertEqual(headers.components(separatedBy: "\r\nServer: ").count, 2, "upstream's Server header, once: \(headers)")
        XCTAssertEqual(headers.components(separatedBy: "\r\nDate: ").count, 2, headers)
        let head = try curl(proxy.url + "/big.bin", ["-I"])
        XCTAssertEqual(head.status, 200)
        XCTAssertTrue(String(decoding: head.body, as: UTF8.self).contains("Content-Length: 2000000"))
        XCTAssertEqual(try curl(proxy.url + "/missing").status, 404)
        let conditional = try curl(proxy.url + "/small.txt", ["-H", "If-None-Match: " + (headers.split(separator: "\r\n").first { $0.hasPrefix("ETag: ") }!.dropFirst(6))])
        XCTAssertEqual(conditional.status, 200, "another file's ETag does not match")

        // Two transfers in one curl: the second reuses the first's connection.
        let connects = try TestSupport.run("curl", ["-sS", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n",
                                                    proxy.url + "/small.txt", proxy.url + "/sub/nested.txt"], environment: noProxy)
        XCTAssertEqual(connects.stdout, "1\n0\n", connects.stderr)

        let seen = proxy.requests()
        XCTAssertEqual(seen.map(\.path), ["/big.bin", "/big.bin", "/big.bin", "/missing", "/small.txt", "/small.txt", "/sub/nested.txt"])
        XCTAssertEqual(seen.map(\.method), ["GET", "GET", "HEAD", "GET", "GET", "GET", "GET"])
        XCTAssertEqual(seen.map(\.status), [200, 206, 200, 404, 200, 200, 200])
        XCTAssertEqual(seen.prefix(3).map(\.bytes), [2_000_000, 10, 0])
        XCTAssertEqual(seen[1].range, "bytes=1999990-")
        XCTAssertTrue(seen.allSatisfy { $0.fault == nil && $0.error == nil }, "\(seen)")
        let upstream = nginx.requests()
        XCTAssertEqual(upstream.map(\.path), seen.map(\.path), "every request reached nginx once")
        XCTAssertEqual(upstream.map(\.range), seen.map(\.range))
        proxy.resetLog()
        XCTAssertEqual(proxy.requests(), [])
    }

    func testOstreePullThroughTheProxyAndASecondPullFetchesOnlyWhatIsMissing() throws {
        let (repo, tree) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let client = try makeClient(proxy.url)
        try pull(client)
        XCTAssertEqual(try ostree(["rev-parse", "--repo=" + client, "origin:main"]).stdout,
                       try ostree(["rev-parse", "--repo=" + repo, "main"]).stdout)
        try ostree(["fsck", "--repo=" + client])

        let first = proxy.requests()
        print("libostree's requests, first pull:\n" + first.map { "  \($0.method) \($0.path) \($0.status) \($0.bytes)" }.joined(separator: "\n"))
        let bigObject = try objectPath(repo, "/usr/lib/big.bin")
        XCTAssertTrue(first.contains { $0.path == "/config" && $0.status == 200 })
        XCTAssertTrue(first.contains { $0.path == "/summary" && $0.status == 200 })
        XCTAssertEqual(first.filter { $0.path == bigObject }.count, 1)
        XCTAssertTrue(first.contains { $0.path.hasSuffix(".commit") })
        XCTAssertTrue(first.contains { $0.path.hasSuffix(".dirtree") })
        XCTAssertTrue(first.contains { $0.path.hasSuffix(".dirmeta") })
        XCTAssertEqual(first.filter { $0.path.hasPrefix("/objects/") && $0.status == 200 }.count,
                       Int(try TestSupport.sh("find '\(repo)/objects' -type f | wc -l").trimmingCharacters(in: .whitespacesAndNewlines)),
                       "every object of the served repository, each once")
        // The same requests; parallel fetches finish (nginx logs) in another order than they arrive (the proxy logs).
        XCTAssertEqual(nginx.requests().map(\.path).sorted(), first.map(\.path).sorted())

        // A second commit changes one small file: the second pull fetches the
        // new commit, the trees on its path and that file, and not big.bin.
        try TestSupport.sh("echo two > '\(tree)/etc/version'")
        try ostree(["commit", "--repo=" + repo, "-b", "main", "--tree=dir=" + tree, "-s", "two"])
        try ostree(["summary", "--repo=" + repo, "-u"])
        proxy.resetLog()
        try pull(client)
        let second = proxy.requests()
        print("libostree's requests, second pull:\n" + second.map { "  \($0.method) \($0.path) \($0.status) \($0.bytes)" }.joined(separator: "\n"))
        let objects = second.filter { $0.path.hasPrefix("/objects/") && $0.status == 200 }
        XCTAssertFalse(second.contains { $0.path == bigObject })
        XCTAssertEqual(objects.filter { $0.path.hasSuffix(".filez") }.map(\.path), [try objectPath(repo, "/etc/version")])
        XCTAssertEqual(objects.filter { $0.path.hasSuffix(".commit") }.count, 1)
        XCTAssertEqual(objects.filter { $0.path.hasSuffix(".dirtree") }.count, 2, "the root and /etc")
        XCTAssertEqual(objects.filter { $0.path.hasSuffix(".dirmeta") }.count, 0, "directory metadata unchanged")
        XCTAssertLessThan(second.reduce(0) { $0 + $1.bytes }, 100_000)
    }

    // MARK: faults

    func testStatusFault() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        try proxy.inject(.status(404), path: "^/small")
        let answer = try curl(proxy.url + "/small.txt")
        XCTAssertEqual(answer.status, 404)
        XCTAssertEqual(String(decoding: answer.body, as: UTF8.self), "fault_proxy: injected status 404\n")
        XCTAssertEqual(try curl(proxy.url + "/sub/nested.txt").status, 200, "other paths unaffected")
        XCTAssertEqual(nginx.requests().map(\.path), ["/sub/nested.txt"], "an injected status never asks upstream")
        try proxy.clear()
        XCTAssertEqual(try curl(proxy.url + "/small.txt").status, 200)
        XCTAssertEqual(proxy.requests().map(\.fault), ["status", nil, nil])
        // A rule the proxy cannot use (Python's re rejects the regex) is an answer naming it.
        try proxy.inject(.status(404), path: "(")
        let bad = try curl(proxy.url + "/small.txt")
        XCTAssertEqual(bad.status, 500)
        XCTAssertTrue(String(decoding: bad.body, as: UTF8.self).hasPrefix("fault_proxy: bad rules: missing ), unterminated subpattern"), "\(bad)")
    }

    func testStatusFaultsInOstreePull() throws {
        let (repo, _) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let big = try objectPath(repo, "/usr/lib/big.bin")

        // 404 on an object: the pull fails at once.
        try proxy.inject(.status(404), path: big + "$")
        let r404 = try pull(try makeClient(proxy.url), expect: 1)
        XCTAssertTrue(r404.stderr.contains("404"), r404.stderr)
        XCTAssertEqual(proxy.requests().filter { $0.path == big }.count, 1, "libostree does not retry a 404")

        // 500 is transient to libostree: it asks again, five times by default.
        try proxy.clear()
        proxy.resetLog()
        try proxy.inject(.status(500), path: big + "$")
        let r500 = try pull(try makeClient(proxy.url), expect: 1)
        XCTAssertTrue(r500.stderr.contains("500"), r500.stderr)
        XCTAssertEqual(proxy.requests().filter { $0.path == big }.map(\.status), Array(repeating: 500, count: 6))

        // The first two answers 500, then the object: the pull succeeds.
        try proxy.clear()
        proxy.resetLog()
        try proxy.inject(.status(500), path: big + "$", times: 2)
        try pull(try makeClient(proxy.url))
        XCTAssertEqual(proxy.requests().filter { $0.path == big }.map(\.status), [500, 500, 200])
    }

    func testDropMidBody() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        try proxy.inject(.drop(afterBytes: 1000), path: "big")
        let cut = try curl(proxy.url + "/big.bin")
        XCTAssertEqual(cut.exit, 18, "curl: transfer closed with bytes remaining: \(cut.stderr)")
        XCTAssertEqual(cut.body, try file(root + "/big.bin").prefix(1000))
        XCTAssertEqual(proxy.requests().last, .init(method: "GET", path: "/big.bin", range: nil, status: 200, bytes: 1000, fault: "drop", error: nil))
    }

    func testDropMidBodyInOstreePull() throws {
        let (repo, _) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let big = try objectPath(repo, "/usr/lib/big.bin")
        try proxy.inject(.drop(afterBytes: 100_000), path: big + "$")
        let client = try makeClient(proxy.url)
        let r = try pull(client, expect: 1)
        print("ostree pull, connection closed mid-object: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains(big), r.stderr)
        let attempts = proxy.requests().filter { $0.path == big }
        XCTAssertEqual(attempts.map(\.bytes), [100_000], "libostree does not retry a cut transfer")
        XCTAssertEqual(try ostree(["rev-parse", "--repo=" + client, "origin:main"], expect: nil).status, 1, "no ref written")

        // Pulled again without the fault: the objects the failed pull got are
        // kept (in the repository's staging folder), and only big.bin's is
        // asked for, whole (no Range: libostree does not resume a download).
        XCTAssertGreaterThan(proxy.requests().filter { $0.path.hasPrefix("/objects/") && $0.status == 200 && $0.fault == nil }.count, 5)
        try proxy.clear()
        proxy.resetLog()
        try pull(client)
        try ostree(["fsck", "--repo=" + client])
        let again = proxy.requests().filter { $0.path.hasPrefix("/objects/") && $0.status == 200 }
        XCTAssertEqual(again.map(\.path), [big])
        XCTAssertEqual(again.first?.range, nil)
        XCTAssertEqual(again.first?.bytes, try FileManager.default.attributesOfItem(atPath: repo + big)[.size] as? Int)
    }

    func testDropAfterRequests() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        try proxy.inject(.dropAfterRequests(2), path: "\\.txt$")
        XCTAssertEqual(try curl(proxy.url + "/small.txt").status, 200)
        XCTAssertEqual(try curl(proxy.url + "/sub/nested.txt").status, 200)
        let dropped = try curl(proxy.url + "/small.txt")
        XCTAssertEqual(dropped.exit, 52, "curl: empty reply from server: \(dropped.stderr)")
        XCTAssertEqual(try curl(proxy.url + "/big.bin").status, 200, "not matched")
        XCTAssertEqual(proxy.requests().map(\.status), [200, 200, 0, 200])
        XCTAssertEqual(nginx.requests().count, 3)
    }

    func testDropAfterRequestsInOstreePull() throws {
        let (repo, _) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        try proxy.inject(.dropAfterRequests(3), path: "^/objects/")
        let r = try pull(try makeClient(proxy.url), expect: 1)
        print("ostree pull, connections closed after 3 objects: \(r.stderr)")
        let objects = proxy.requests().filter { $0.path.hasPrefix("/objects/") }
        XCTAssertTrue(objects.prefix(3).allSatisfy { $0.status != 0 && $0.fault == nil }, "\(objects)")  // a .commitmeta's 404 included
        XCTAssertGreaterThan(objects.count, 3)
        XCTAssertTrue(objects.dropFirst(3).allSatisfy { $0.status == 0 && $0.fault == "dropAfterRequests" })
    }

    func testFlipByte() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let original = try file(root + "/big.bin")
        try proxy.inject(.flipByte(), path: "big")
        try proxy.inject(.flipByte(offset: 0), path: "small")
        let flipped = try curl(proxy.url + "/big.bin")
        XCTAssertEqual(flipped.body.count, original.count)
        let differ = zip(flipped.body, original).enumerated().filter { $0.element.0 != $0.element.1 }
        XCTAssertEqual(differ.map(\.offset), [1_000_000])
        XCTAssertEqual(differ.first.map { $0.element.0 ^ $0.element.1 }, 0xFF)
        XCTAssertEqual(try curl(proxy.url + "/small.txt").body, Data([UInt8(ascii: "h") ^ 0xFF] + Array("ello\n".utf8)))
        // In a Range answer offsets count in its own body: the middle of 10 bytes is offset 5.
        let part = try curl(proxy.url + "/big.bin", ["-r", "10-19"])
        XCTAssertEqual(part.status, 206)
        XCTAssertEqual(part.body.count, 10)
        XCTAssertEqual(zip(part.body, original[10..<20]).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset), [5])
        XCTAssertEqual(proxy.requests().map(\.fault), ["flip", "flip", "flip"])
    }

    func testFlipByteInOstreePullNamesTheObject() throws {
        let (repo, _) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let big = try objectPath(repo, "/usr/lib/big.bin")
        let checksum = big.dropFirst("/objects/".count).replacingOccurrences(of: "/", with: "").replacingOccurrences(of: ".filez", with: "")
        try proxy.inject(.flipByte(), path: big + "$")
        let r = try pull(try makeClient(proxy.url), expect: 1)
        print("ostree pull, one byte flipped in a content object: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains(checksum), r.stderr)

        // A flipped byte in the commit object: refused too, naming it.
        try proxy.clear()
        let commit = try ostree(["rev-parse", "--repo=" + repo, "main"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try proxy.inject(.flipByte(), path: "\\.commit$")
        let rc = try pull(try makeClient(proxy.url), expect: 1)
        print("ostree pull, one byte flipped in the commit object: \(rc.stderr)")
        XCTAssertTrue(rc.stderr.contains(commit), rc.stderr)
    }

    func testStall() throws {
        let root = try makeSite()
        let nginx = try serve(root, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        try proxy.inject(.stall(seconds: 0.5), path: "small")
        try proxy.inject(.stall(seconds: 20), path: "nested")
        var slow: Fetch!
        var t = try elapsed { slow = try curl(proxy.url + "/small.txt", ["--max-time", "5"]) }
        XCTAssertEqual(slow.status, 200)
        XCTAssertGreaterThanOrEqual(t, 0.5, "a short stall is a slow answer")
        var timedOut: Fetch!
        t = try elapsed { timedOut = try curl(proxy.url + "/sub/nested.txt", ["--max-time", "1"]) }
        XCTAssertEqual(timedOut.exit, 28, "curl: operation timed out: \(timedOut.stderr)")
        XCTAssertLessThan(t, 3)
        // The proxy notices the client leaving and ends the stalled request.
        t = elapsed { _ = proxy.requests(wait: 5) }
        XCTAssertLessThan(t, 2)
        let seen = proxy.requests()
        XCTAssertEqual(seen.map(\.status), [200, 0])
        XCTAssertEqual(seen.last?.error, "client went away during the stall")
        XCTAssertEqual(nginx.requests().map(\.path), ["/small.txt"], "a stalled request that is given up never reaches upstream")
    }

    func testStallInOstreePullHangsWithoutATimeoutOfItsOwn() throws {
        let (repo, _) = try makeServedRepo()
        let nginx = try serve(repo, scratch: dir)
        let proxy = try faultProxy(to: nginx.url, scratch: dir)
        let client = try makeClient(proxy.url)
        try proxy.inject(.stall(seconds: 1), path: "\\.commit$")
        XCTAssertGreaterThanOrEqual(try elapsed { try pull(client) }, 1, "a slow server: the pull waits")

        // libostree sets no read timeout (only curl's 30 s connect timeout):
        // a server that accepts and then says nothing holds the pull forever.
        let fresh = try makeClient(proxy.url)
        try proxy.inject(.stall(seconds: 60), path: "^/config$")
        let r = try TestSupport.run("timeout", ["2", "ostree", "pull", "--repo=" + fresh, "origin", "main"], environment: noProxy)
        XCTAssertEqual(r.status, 124, "still waiting after 2 s: \(r.stderr)")
        XCTAssertEqual(proxy.requests().last?.error, "client went away during the stall")
    }

    // MARK: no server outlives a test

    func testStopClosesThePortsAndLeavesNoProcess() throws {
        let root = try makeSite()
        var pids: [pid_t] = [], ports: [Int] = []
        do {
            let nginx = try NginxServer(root: root, scratch: dir)
            let proxy = try FaultProxy(upstream: nginx.url, scratch: dir)
            XCTAssertEqual(try curl(proxy.url + "/small.txt").status, 200)
            pids = [nginx.pid, proxy.pid]
            ports = [nginx.port, proxy.port]
            XCTAssertTrue(pids.allSatisfy(running))
            XCTAssertTrue(ports.allSatisfy { Loopback.isListening(port: $0) })
            proxy.stop()
            nginx.stop()
            assertGone(pids: pids, ports: ports)
            XCTAssertEqual(processes(mentioning: dir), [])
            proxy.stop()
            nginx.stop()
            XCTAssertEqual(nginx.requests().map(\.path), ["/small.txt"], "the log outlives the server")
            XCTAssertEqual(proxy.requests().map(\.status), [200])
        }
        // Dropped without stop(): deinit stops them.
        do {
            let nginx = try NginxServer(root: root, scratch: dir)
            let proxy = try FaultProxy(upstream: nginx.url, scratch: dir)
            pids = [nginx.pid, proxy.pid]
            ports = [nginx.port, proxy.port]
        }
        assertGone(pids: pids, ports: ports)
        XCTAssertEqual(try TestSupport.sh("ls '\(dir)' | grep -c -e '^nginx-' -e '^fault-proxy-' || true").trimmingCharacters(in: .whitespacesAndNewlines), "4",
                       "each server's files in its own folder of the scratch folder, removed with it")
    }

    func testNginxThatCannotStartSaysWhyAndLeavesNothingRunning() throws {
        let root = dir + "/www$nothing"  // nginx reads $nothing in `root` as a variable it does not know
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let before = try TestSupport.sh("ss -ltnH")
        XCTAssertThrowsError(try NginxServer(root: root, scratch: dir)) { error in
            XCTAssertTrue("\(error)".contains("nginx did not start on 127.0.0.1:"), "\(error)")
            XCTAssertTrue("\(error)".contains("unknown \"nothing\" variable"), "the error log's tail: \(error)")
        }
        XCTAssertThrowsError(try NginxServer(root: dir + "/absent", scratch: dir)) { error in
            XCTAssertEqual("\(error)", "nginx: \(dir)/absent is not a folder")
        }
        XCTAssertEqual(try TestSupport.sh("ss -ltnH"), before)
        XCTAssertEqual(processes(mentioning: dir), [])
    }

    func assertGone(pids: [pid_t], ports: [Int], file: StaticString = #filePath, line: UInt = #line) {
        for pid in pids {
            XCTAssertFalse(running(pid), "process \(pid) still runs", file: file, line: line)
        }
        for port in ports {
            XCTAssertFalse(Loopback.isListening(port: port), "port \(port) still open", file: file, line: line)
            let ss = (try? TestSupport.run("ss", ["-ltnH", "sport = :\(port)"]).stdout) ?? "?"
            XCTAssertEqual(ss, "", "ss -ltn still lists port \(port)", file: file, line: line)
        }
    }

    /// Runs HTTPHarnessProbe in a test process of its own, which starts
    /// nginx and the proxy and then fails a test, exits, or is killed.
    func runProbe(_ mode: String, test: String = "test1StartsServersThenMisbehaves") throws -> (status: Int32, pids: [pid_t], ports: [Int], report: String) {
        let probeDir = dir + "/probe-" + mode
        try FileManager.default.createDirectory(atPath: probeDir, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["CairnCLITests.HTTPHarnessProbe"]
        var env = ProcessInfo.processInfo.environment
        env["CAIRN_HTTP_PROBE"] = probeDir
        env["CAIRN_HTTP_PROBE_MODE"] = mode
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        if mode == "killed" {
            let deadline = Date().addingTimeInterval(20)
            while !FileManager.default.fileExists(atPath: probeDir + "/servers") && Date() < deadline { usleep(20_000) }
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        let fields = (try? String(contentsOfFile: probeDir + "/servers", encoding: .utf8))?.split(separator: " ").compactMap { Int($0) } ?? []
        XCTAssertEqual(fields.count, 4, "the probe started its servers")
        guard fields.count == 4 else { return (process.terminationStatus, [], [], "") }
        // The kernel delivers the parent-death signal as the probe dies; allow it a moment.
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline && [fields[0], fields[2]].contains(where: { running(pid_t($0)) }) { usleep(20_000) }
        let report = (try? String(contentsOfFile: probeDir + "/after-failure", encoding: .utf8)) ?? ""
        return (process.terminationStatus, [pid_t(fields[0]), pid_t(fields[2])], [fields[1], fields[3]], report)
    }

    func testServersStopWhenATestFailsMidway() throws {
        let probe = try runProbe("fail")
        XCTAssertNotEqual(probe.status, 0, "the probe's test failed")
        XCTAssertEqual(probe.report, "gone", "the failed test's teardown stopped its servers before the next test ran")
        assertGone(pids: probe.pids, ports: probe.ports)
    }

    func testServersStopWhenTheTestProcessExitsOrIsKilled() throws {
        let exited = try runProbe("exit")
        XCTAssertEqual(exited.status, 3)
        assertGone(pids: exited.pids, ports: exited.ports)  // atexit
        let killed = try runProbe("killed")
        XCTAssertEqual(killed.status, SIGKILL)
        assertGone(pids: killed.pids, ports: killed.ports)  // setpriv --pdeathsig KILL
    }
}

/// Run only by HTTPHarnessTests, in a process of its own (CAIRN_HTTP_PROBE
/// names a folder): starts nginx and the proxy, writes their pids and ports
/// to PROBE/servers, then fails mid-way (mode "fail"), calls exit(3) without
/// any teardown ("exit"), or waits to be killed ("killed"). In mode "fail",
/// test2 then writes "gone" or "alive" to PROBE/after-failure.
final class HTTPHarnessProbe: XCTestCase {
    let folder = ProcessInfo.processInfo.environment["CAIRN_HTTP_PROBE"] ?? ""
    let mode = ProcessInfo.processInfo.environment["CAIRN_HTTP_PROBE_MODE"] ?? ""
    /// Kept as tests keep their servers, in properties: XCTest keeps a test
    /// case alive after its test, so deinit does not stop them; teardown must.
    var nginx: NginxServer?
    var proxy: FaultProxy?

    override func setUpWithError() throws {
        if folder.isEmpty { throw XCTSkip("run by HTTPHarnessTests in a process of its own") }
    }

    func test1StartsServersThenMisbehaves() throws {
        let root = folder + "/www"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let nginx = try serve(root, scratch: folder)
        let proxy = try faultProxy(to: nginx.url, scratch: folder)
        (self.nginx, self.proxy) = (nginx, proxy)
        try "\(nginx.pid) \(nginx.port) \(proxy.pid) \(proxy.port)".write(toFile: folder + "/servers", atomically: true, encoding: .utf8)
        switch mode {
        case "exit":
            exit(3)
        case "killed":
            sleep(30)
        default:
            XCTFail("failing on purpose, mid-way")
            throw HTTPServerError(description: "failing on purpose")
        }
    }

    func test2AfterTheFailingTest() throws {
        guard mode == "fail" else { return }
        let fields = try String(contentsOfFile: folder + "/servers", encoding: .utf8).split(separator: " ").compactMap { Int($0) }
        let alive = [fields[0], fields[2]].contains { running(pid_t($0)) }
            || [fields[1], fields[3]].contains { Loopback.isListening(port: $0) }
        try (alive ? "alive" : "gone").write(toFile: folder + "/after-failure", atomically: true, encoding: .utf8)
    }
}

/// Whether `pid` is a process that has not ended. A zombie has ended: the
/// orphans of a killed test process wait as zombies until this machine's
/// init reaps them (here within a few seconds).
func running(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    return !stat[close...].hasPrefix(") Z")
}

/// The running processes (zombies left out) whose command line contains `text`.
func processes(mentioning text: String) -> [pid_t] {
    let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    return pids.filter { pid in
        guard running(pid), let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return false }
        return String(decoding: cmdline.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text)
    }
}
