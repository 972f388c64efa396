import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

/// Streaming SHA-256: CryptoKit on Apple platforms, a small portable implementation elsewhere
/// (Linux `swift test`), same hex digest either way.
public struct SHA256Hasher {
    #if canImport(CryptoKit)
    private var h = CryptoKit.SHA256()
    public init() {}
    public mutating func update(_ data: Data) { h.update(data: data) }
    public mutating func finalizeHex() -> String { h.finalize().map { String(format: "%02x", $0) }.joined() }
    #else
    private var state: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public init() {}

    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    private mutating func block(_ b: ArraySlice<UInt8>) {
        var w = [UInt32](repeating: 0, count: 64)
        var i = b.startIndex
        for t in 0..<16 {
            w[t] = UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
            i += 4
        }
        for t in 16..<64 {
            let s0 = SHA256Hasher.rotr(w[t - 15], 7) ^ SHA256Hasher.rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            let s1 = SHA256Hasher.rotr(w[t - 2], 17) ^ SHA256Hasher.rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w[t] = w[t - 16] &+ s0 &+ w[t - 7] &+ s1
        }
        var a = state[0], bb = state[1], c = state[2], d = state[3], e = state[4], f = state[5], g = state[6], h = state[7]
        for t in 0..<64 {
            let S1 = SHA256Hasher.rotr(e, 6) ^ SHA256Hasher.rotr(e, 11) ^ SHA256Hasher.rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = h &+ S1 &+ ch &+ SHA256Hasher.k[t] &+ w[t]
            let S0 = SHA256Hasher.rotr(a, 2) ^ SHA256Hasher.rotr(a, 13) ^ SHA256Hasher.rotr(a, 22)
            let maj = (a & bb) ^ (a & c) ^ (bb & c)
            let t2 = S0 &+ maj
            h = g; g = f; f = e; e = d &+ t1; d = c; c = bb; bb = a; a = t1 &+ t2
        }
        state[0] = state[0] &+ a; state[1] = state[1] &+ bb; state[2] = state[2] &+ c; state[3] = state[3] &+ d
        state[4] = state[4] &+ e; state[5] = state[5] &+ f; state[6] = state[6] &+ g; state[7] = state[7] &+ h
    }

    public mutating func update(_ data: Data) {
        length &+= UInt64(data.count)
        buffer.append(contentsOf: data)
        var off = 0
        while buffer.count - off >= 64 {
            block(buffer[off..<(off + 64)])
            off += 64
        }
        buffer.removeFirst(off)
    }

    public mutating func finalizeHex() -> String {
        let bits = length &* 8
        var pad: [UInt8] = [0x80]
        while (buffer.count + pad.count) % 64 != 56 { pad.append(0) }
        for i in (0..<8).reversed() { pad.append(UInt8((bits >> (UInt64(i) * 8)) & 0xff)) }
        buffer.append(contentsOf: pad)
        var off = 0
        while off < buffer.count { block(buffer[off..<(off + 64)]); off += 64 }
        buffer = []
        return state.map { String(format: "%08x", $0) }.joined()
    }
    #endif

    /// sha256 of a file, read 1 MiB at a time; `onBytes` gets each chunk's size (progress).
    public static func file(_ url: URL, onBytes: ((Int) -> Void)? = nil) throws -> String {
        let fh = try FileHandle(forReadingFrom: url)
        defer { try? fh.close() }
        var h = SHA256Hasher()
        while true {
            let chunk = fh.readData(ofLength: 1 << 20)
            if chunk.isEmpty { break }
            h.update(chunk)
            onBytes?(chunk.count)
        }
        return h.finalizeHex()
    }
}
