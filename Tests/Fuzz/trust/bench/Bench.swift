// Times signed-boot work: verify one ed25519 signature over a commit and read
// the composefs digest from it. Built with -O by bench.sh.
import Glibc

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1e9 + Double(ts.tv_nsec)
}

func median(_ n: Int, _ body: () -> Void) -> Double {
    for _ in 0..<50 { body() }  // warm up
    var samples: [Double] = []
    samples.reserveCapacity(n)
    for _ in 0..<n {
        let t = now()
        body()
        samples.append(now() - t)
    }
    samples.sort()
    return samples[n / 2]
}

@main struct Bench {
    static func main() throws {
        // A commit shaped like a real OS commit: a dozen metadata entries and the digest.
        var meta = VariantDictionary()
        meta.set("version", try GVariant(string: "42.20250101.0"))
        meta.set("ostree.bootable", GVariant(boolean: true))
        meta.set("ostree.linux", try GVariant(string: "6.1.0-28-amd64"))
        meta.set("ostree.ref-binding", try GVariant(arrayOf: .string, [try GVariant(string: "os/x86_64/stable")]))
        for i in 0..<8 { meta.set("org.example.key\(i)", try GVariant(string: String(repeating: "v", count: 40))) }
        meta.set(composefsDigestKey, GVariant(bytes: (0..<32).map { UInt8($0) }))
        let commit = GVariant(tuple: [meta.variant(), GVariant(bytes: Array(repeating: 1, count: 32)),
            try GVariant(arrayOf: .tuple([.string, .byteArray]), []), try GVariant(string: "Release 42"),
            try GVariant(string: "body"), GVariant(uint64: UInt64(1_700_000_000).byteSwapped),
            GVariant(bytes: Array(repeating: 2, count: 32)), GVariant(bytes: Array(repeating: 3, count: 32))]).serialized
        let key = try Ed25519SecretKey(seed: Array(repeating: 9, count: 32))
        let detached = try signCommit(commit, existingDetachedMetadata: nil, with: key)
        let policy = TrustPolicy(trustedKeys: [key.publicKey])
        let n = Int(CommandLine.arguments.dropFirst().first ?? "") ?? 5000

        var sink = 0
        let full = median(n) {
            if case .success(let (_, _, d)) = policy.verifiedComposefsDigest(commit: commit, detachedMetadata: detached) { sink &+= Int(d[0]) }
        }
        let verifyOnly = median(n) {
            if case .success = policy.verify(commit: commit, detachedMetadata: detached) { sink &+= 1 }
        }
        let sig = try key.sign(commit)
        let rawVerify = median(n) { if key.publicKey.verify(signature: sig, message: commit) { sink &+= 1 } }
        let parse = median(n) { if let c = try? Commit(serialized: commit), let d = c.composefsDigest { sink &+= Int(d[1]) } }
        let lookup = median(n) {
            if let v = try? GVariant(type: Commit.type, data: commit), let d = v.child(0)?.lookup(composefsDigestKey)?.byteArrayValue { sink &+= Int(d[2]) }
        }
        print("commit \(commit.count) bytes, detached metadata \(detached.count) bytes, \(n) iterations, medians:")
        print("  verify signature + parse commit + read digest: \(Int(full / 1000)) µs")
        print("  TrustPolicy.verify (parse .commitmeta + 1 ed25519 verify): \(Int(verifyOnly / 1000)) µs")
        print("  Ed25519PublicKey.verify alone: \(Int(rawVerify / 1000)) µs")
        print("  Commit(serialized:) + composefsDigest: \(String(format2(parse / 1000))) µs")
        print("  GVariant check + lookup of the digest only: \(String(format2(lookup / 1000))) µs")
        if sink == 42 { print("") }
    }
}

func format2(_ x: Double) -> String {
    let hundredths = Int((x * 100).rounded())
    let frac = hundredths % 100
    return "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)"
}
