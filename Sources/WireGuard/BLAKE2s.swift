/// BLAKE2s (RFC 7693): 32-bit words, 64-byte blocks, digests of 1–32 bytes, optional key of
/// up to 32 bytes. libsodium ships only BLAKE2b, and WireGuard needs BLAKE2s.
///
/// The whole state lives inline (no heap): 8 chaining words, a 64-byte block buffer and the
/// byte counter. `finalize` wipes the state, because in WireGuard it is keyed with secrets
/// (HMAC keys, chaining keys, cookies).
///
///     var h = BLAKE2s(digestLength: 32)
///     h.update(header); h.update(body)
///     h.finalize(into: out)
public struct BLAKE2s {
    public static let blockSize = 64
    public static let maxDigestLength = 32
    public static let maxKeyLength = 32

    /// The chaining value h[0..7].
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    /// Bytes not yet compressed. The last block must be compressed with the final flag, so a
    /// full buffer is only compressed once more input arrives.
    private var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    private var bufferLength: Int
    /// Bytes compressed so far (the counter t; 64 bits is plenty).
    private var counter: UInt64
    public private(set) var digestLength: Int

    @inline(__always)
    private static var iv: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) {
        (0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
         0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19)
    }

    /// The message schedule σ of RFC 7693 §2.7, one row per round, entry j in bits 4j..4j+3.
    @inline(__always)
    private static func sigma(_ round: Int) -> UInt64 {
        switch round {
        case 0: 0xFEDC_BA98_7654_3210
        case 1: 0x357B_20C1_6DF9_84AE
        case 2: 0x4917_63EA_DF25_0C8B
        case 3: 0x8F04_A562_EBCD_1397
        case 4: 0xD386_CB1E_FA42_7509
        case 5: 0x91EF_57D4_38B0_A6C2
        case 6: 0xB829_3670_A4DE_F15C
        case 7: 0xA268_4F05_931C_E7BD
        case 8: 0x5A41_7D2C_803B_9EF6
        default: 0x0DC3_E9BF_5167_482A
        }
    }

    /// Starts a hash. `digestLength` must be 1...32 and `key` at most 32 bytes (programmer
    /// errors, not wire input: they trap).
    public init(digestLength: Int = 32, key: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) {
        precondition((1...BLAKE2s.maxDigestLength).contains(digestLength), "BLAKE2s digest length must be 1...32")
        precondition(key.count <= BLAKE2s.maxKeyLength, "BLAKE2s key must be at most 32 bytes")
        self.digestLength = digestLength
        h = BLAKE2s.iv
        // Parameter block: digest length, key length, fanout 1, depth 1 (RFC 7693 §2.5).
        h.0 ^= 0x0101_0000 ^ (UInt32(key.count) << 8) ^ UInt32(digestLength)
        buffer = (0, 0, 0, 0, 0, 0, 0, 0)
        bufferLength = 0
        counter = 0
        if key.count > 0 {
            // The key, zero-padded to a full block, is the first block of input.
            Swift.withUnsafeMutableBytes(of: &buffer) { $0.copyMemory(from: key) }
            bufferLength = BLAKE2s.blockSize
        }
    }

    /// A keyed hash whose key is a 32-byte value (HMAC keys, chaining keys, MAC keys).
    public init(digestLength: Int = 32, key: Key32) {
        self = key.withUnsafeBytes { BLAKE2s(digestLength: digestLength, key: $0) }
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard var input = data.baseAddress else { return }
        var remaining = data.count
        while remaining > 0 {
            if bufferLength == BLAKE2s.blockSize {
                counter &+= UInt64(BLAKE2s.blockSize)
                let t = counter
                Swift.withUnsafeBytes(of: &buffer) { block in
                    BLAKE2s.compress(&h, block: block.baseAddress!, counter: t, last: false)
                }
                bufferLength = 0
            }
            // Whole blocks straight from the input when more input follows them.
            if bufferLength == 0 {
                while remaining > BLAKE2s.blockSize {
                    counter &+= UInt64(BLAKE2s.blockSize)
                    BLAKE2s.compress(&h, block: input, counter: counter, last: false)
                    input += BLAKE2s.blockSize
                    remaining -= BLAKE2s.blockSize
                }
            }
            let n = Swift.min(BLAKE2s.blockSize - bufferLength, remaining)
            let offset = bufferLength
            Swift.withUnsafeMutableBytes(of: &buffer) { b in
                (b.baseAddress! + offset).copyMemory(from: input, byteCount: n)
            }
            bufferLength += n
            input += n
            remaining -= n
        }
    }

    public mutating func update(_ key: Key32) {
        key.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Writes the `digestLength`-byte digest to the start of `out` (which must hold it) and
    /// wipes the state; the hasher must not be used afterwards.
    public mutating func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= digestLength, "BLAKE2s output buffer too small")
        counter &+= UInt64(bufferLength)
        let used = bufferLength
        let t = counter
        Swift.withUnsafeMutableBytes(of: &buffer) { b in
            if used < BLAKE2s.blockSize {
                (b.baseAddress! + used).initializeMemory(as: UInt8.self, repeating: 0, count: BLAKE2s.blockSize - used)
            }
        }
        Swift.withUnsafeBytes(of: &buffer) { block in
            BLAKE2s.compress(&h, block: block.baseAddress!, counter: t, last: true)
        }
        let n = digestLength
        Swift.withUnsafeBytes(of: &h) { words in
            // h is stored in native order; the digest is little-endian.
            for i in 0..<n {
                let w = words.load(fromByteOffset: (i / 4) * 4, as: UInt32.self)
                out[i] = UInt8(truncatingIfNeeded: w >> (UInt32(i % 4) * 8))
            }
        }
        wipe()
    }

    /// The 32-byte digest (digestLength must be 32).
    public mutating func finalize() -> Key32 {
        precondition(digestLength == 32)
        var out = Key32()
        out.withUnsafeMutableBytes { finalize(into: $0) }
        return out
    }

    /// Zeroes the state.
    public mutating func wipe() {
        WireGuard.wipe(&h)
        WireGuard.wipe(&buffer)
        bufferLength = 0
        counter = 0
    }

    // MARK: One-shot

    /// BLAKE2s of `data` (keyed when `key` is not empty), `out.count` bytes long (1...32).
    public static func hash(_ data: UnsafeRawBufferPointer,
                            key: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                            into out: UnsafeMutableRawBufferPointer) {
        var s = BLAKE2s(digestLength: out.count, key: key)
        s.update(data)
        s.finalize(into: out)
    }

    /// BLAKE2s-256(a ‖ b): Noise's MixHash and WireGuard's label hashes.
    public static func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Key32 {
        var s = BLAKE2s()
        s.update(a)
        s.update(b)
        return s.finalize()
    }

    /// Convenience for tests and configuration code (allocates).
    public static func hash(_ data: [UInt8], key: [UInt8] = [], digestLength: Int = 32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: digestLength)
        data.withUnsafeBytes { d in
            key.withUnsafeBytes { k in
                out.withUnsafeMutableBytes { o in hash(d, key: k, into: o) }
            }
        }
        return out
    }

    // MARK: Compression (RFC 7693 §3.2)

    @inline(__always)
    private static func g(_ v: UnsafeMutablePointer<UInt32>, _ a: Int, _ b: Int, _ c: Int, _ d: Int,
                          _ x: UInt32, _ y: UInt32) {
        v[a] = v[a] &+ v[b] &+ x
        v[d] = rotr(v[d] ^ v[a], 16)
        v[c] = v[c] &+ v[d]
        v[b] = rotr(v[b] ^ v[c], 12)
        v[a] = v[a] &+ v[b] &+ y
        v[d] = rotr(v[d] ^ v[a], 8)
        v[c] = v[c] &+ v[d]
        v[b] = rotr(v[b] ^ v[c], 7)
    }

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    private static func compress(
        _ h: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
        block: UnsafeRawPointer, counter t: UInt64, last: Bool
    ) {
        var m: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
            = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = m
        Swift.withUnsafeMutableBytes(of: &m) { mb in
            Swift.withUnsafeMutableBytes(of: &v) { vb in
                Swift.withUnsafeMutableBytes(of: &h) { hb in
                    let mw = mb.baseAddress!.assumingMemoryBound(to: UInt32.self)
                    let vw = vb.baseAddress!.assumingMemoryBound(to: UInt32.self)
                    let hw = hb.baseAddress!.assumingMemoryBound(to: UInt32.self)
                    for i in 0..<16 {
                        mw[i] = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
                    }
                    Swift.withUnsafeBytes(of: iv) { ivb in
                        let ivw = ivb.baseAddress!.assumingMemoryBound(to: UInt32.self)
                        for i in 0..<8 {
                            vw[i] = hw[i]
                            vw[i + 8] = ivw[i]
                        }
                    }
                    vw[12] ^= UInt32(truncatingIfNeeded: t)
                    vw[13] ^= UInt32(truncatingIfNeeded: t >> 32)
                    if last { vw[14] = ~vw[14] }
                    for round in 0..<10 {
                        let s = sigma(round)
                        @inline(__always) func msg(_ j: UInt64) -> UInt32 { mw[Int((s >> (4 * j)) & 15)] }
                        g(vw, 0, 4, 8, 12, msg(0), msg(1))
                        g(vw, 1, 5, 9, 13, msg(2), msg(3))
                        g(vw, 2, 6, 10, 14, msg(4), msg(5))
                        g(vw, 3, 7, 11, 15, msg(6), msg(7))
                        g(vw, 0, 5, 10, 15, msg(8), msg(9))
                        g(vw, 1, 6, 11, 12, msg(10), msg(11))
                        g(vw, 2, 7, 8, 13, msg(12), msg(13))
                        g(vw, 3, 4, 9, 14, msg(14), msg(15))
                    }
                    for i in 0..<8 { hw[i] ^= vw[i] ^ vw[i + 8] }
                }
            }
        }
        // The working vector and the message words may hold key material.
        WireGuard.wipe(&m)
        WireGuard.wipe(&v)
    }
}
