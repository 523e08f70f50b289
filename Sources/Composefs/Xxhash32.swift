/// XXH32 (spec appendix B), used for the EROFS xattr name filter.
/// Wrapping arithmetic throughout: the algorithm is defined modulo 2^32.
func xxh32(_ data: UnsafeRawBufferPointer, seed: UInt32) -> UInt32 {
    let p1: UInt32 = 0x9E3779B1, p2: UInt32 = 0x85EBCA77, p3: UInt32 = 0xC2B2AE3D
    let p4: UInt32 = 0x27D4EB2F, p5: UInt32 = 0x165667B1
    @inline(__always) func rotl(_ x: UInt32, _ r: UInt32) -> UInt32 { (x << r) | (x >> (32 - r)) }
    @inline(__always) func read32(_ p: Int) -> UInt32 {
        UInt32(data[p]) | UInt32(data[p + 1]) << 8 | UInt32(data[p + 2]) << 16 | UInt32(data[p + 3]) << 24
    }
    let n = data.count
    var p = 0
    var h: UInt32
    if n >= 16 {
        var v1 = seed &+ p1 &+ p2, v2 = seed &+ p2, v3 = seed, v4 = seed &- p1
        while p <= n - 16 {
            v1 = rotl(v1 &+ read32(p) &* p2, 13) &* p1
            v2 = rotl(v2 &+ read32(p + 4) &* p2, 13) &* p1
            v3 = rotl(v3 &+ read32(p + 8) &* p2, 13) &* p1
            v4 = rotl(v4 &+ read32(p + 12) &* p2, 13) &* p1
            p += 16
        }
        h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
    } else {
        h = seed &+ p5
    }
    h = h &+ UInt32(truncatingIfNeeded: n)
    while p + 4 <= n { h = rotl(h &+ read32(p) &* p3, 17) &* p4; p += 4 }
    while p < n { h = rotl(h &+ UInt32(data[p]) &* p5, 11) &* p1; p += 1 }
    h ^= h >> 15; h = h &* p2; h ^= h >> 13; h = h &* p3; h ^= h >> 16
    return h
}

func xxh32(_ bytes: [UInt8], seed: UInt32) -> UInt32 {
    bytes.withUnsafeBytes { xxh32($0, seed: seed) }
}
