/// HMAC-BLAKE2s, the HKDF-style KDF of the WireGuard whitepaper §5.4, and WireGuard's 16-byte
/// keyed MAC. All state is inline; secrets are wiped before returning.

/// 16 bytes held inline: MAC1, MAC2 and cookies. Equality is constant time.
public struct MAC16: Sendable, BitwiseCopyable {
    public static let byteCount = 16
    var storage: (UInt64, UInt64) = (0, 0)

    public static var zero: MAC16 { MAC16() }

    public init() {}

    public init(copying raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= MAC16.byteCount)
        withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw.prefix(MAC16.byteCount))) }
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == MAC16.byteCount else { return nil }
        self.init()
        bytes.withUnsafeBytes { src in withUnsafeMutableBytes { $0.copyMemory(from: src) } }
    }

    @inline(__always)
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: storage, body)
    }

    @inline(__always)
    public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeMutableBytes(of: &storage, body)
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
    public var isZero: Bool { withUnsafeBytes { Sodium.isZero($0) } }
    public mutating func wipe() { withUnsafeMutableBytes { Sodium.wipe($0) } }

    /// WireGuard's MAC: keyed BLAKE2s with a 16-byte digest (mac1, mac2, cookie).
    public static func compute(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) -> MAC16 {
        var out = MAC16()
        out.withUnsafeMutableBytes { BLAKE2s.hash(data, key: key, into: $0) }
        return out
    }

    public static func compute(key: Key32, data: UnsafeRawBufferPointer) -> MAC16 {
        key.withUnsafeBytes { compute(key: $0, data: data) }
    }

    public static func compute(key: MAC16, data: UnsafeRawBufferPointer) -> MAC16 {
        key.withUnsafeBytes { compute(key: $0, data: data) }
    }
}

extension MAC16: Equatable {
    public static func == (a: MAC16, b: MAC16) -> Bool {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in Sodium.constantTimeEqual(pa, pb) } }
    }
}

/// HMAC (RFC 2104) over BLAKE2s-256: 64-byte block, 32-byte output. Incremental; keys longer
/// than a block are hashed first, as RFC 2104 says (WireGuard's keys are always 32 bytes).
public struct HMACBLAKE2s {
    private var inner: BLAKE2s
    /// key ⊕ opad, kept for the outer hash.
    private var outerPad: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    public init(key: UnsafeRawBufferPointer) {
        var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &block) { b in
            if key.count > BLAKE2s.blockSize {
                BLAKE2s.hash(key, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<32]))
            } else if key.count > 0 {
                b.copyMemory(from: key)
            }
        }
        let ipad: UInt64 = 0x3636_3636_3636_3636
        let opad: UInt64 = 0x5c5c_5c5c_5c5c_5c5c
        var innerPad = block
        outerPad = block
        Swift.withUnsafeMutableBytes(of: &innerPad) { i in
            let w = i.baseAddress!.assumingMemoryBound(to: UInt64.self)
            for j in 0..<8 { w[j] ^= ipad }
        }
        Swift.withUnsafeMutableBytes(of: &outerPad) { o in
            let w = o.baseAddress!.assumingMemoryBound(to: UInt64.self)
            for j in 0..<8 { w[j] ^= opad }
        }
        inner = BLAKE2s()
        Swift.withUnsafeBytes(of: &innerPad) { inner.update($0) }
        WireGuard.wipe(&innerPad)
        WireGuard.wipe(&block)
    }

    public init(key: Key32) {
        self = key.withUnsafeBytes { HMACBLAKE2s(key: $0) }
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) { inner.update(data) }
    public mutating func update(_ key: Key32) { inner.update(key) }
    public mutating func update(byte: UInt8) {
        var b = byte
        Swift.withUnsafeBytes(of: &b) { inner.update($0) }
    }

    /// The 32-byte tag; wipes the state.
    public mutating func finalize() -> Key32 {
        var innerDigest = inner.finalize()
        var outer = BLAKE2s()
        Swift.withUnsafeBytes(of: &outerPad) { outer.update($0) }
        outer.update(innerDigest)
        innerDigest.wipe()
        WireGuard.wipe(&outerPad)
        return outer.finalize()
    }

    /// One-shot HMAC-BLAKE2s(key, data).
    public static func authenticate(key: Key32, data: UnsafeRawBufferPointer) -> Key32 {
        var m = HMACBLAKE2s(key: key)
        m.update(data)
        return m.finalize()
    }

    /// Convenience for tests (allocates).
    public static func authenticate(key: [UInt8], data: [UInt8]) -> [UInt8] {
        key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                var m = HMACBLAKE2s(key: k)
                m.update(d)
                var tag = m.finalize()
                defer { tag.wipe() }
                return tag.bytes
            }
        }
    }
}

/// The whitepaper's KDF_n(key, input): τ0 = HMAC(key, input), τ1 = HMAC(τ0, 0x1),
/// τi = HMAC(τ0, τ(i−1) ‖ i); returns τ1 … τn. Callers wipe what they receive.
public enum KDF {
    /// The pseudorandom key τ0 (wiped by the callers below).
    @inline(__always)
    private static func extract(_ key: Key32, _ input: UnsafeRawBufferPointer) -> Key32 {
        HMACBLAKE2s.authenticate(key: key, data: input)
    }

    @inline(__always)
    private static func expand(_ prk: Key32, previous: Key32?, counter: UInt8) -> Key32 {
        var m = HMACBLAKE2s(key: prk)
        if let previous { m.update(previous) }
        m.update(byte: counter)
        return m.finalize()
    }

    public static func kdf1(key: Key32, input: UnsafeRawBufferPointer) -> Key32 {
        var prk = extract(key, input)
        defer { prk.wipe() }
        return expand(prk, previous: nil, counter: 1)
    }

    public static func kdf2(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32) {
        var prk = extract(key, input)
        defer { prk.wipe() }
        let t1 = expand(prk, previous: nil, counter: 1)
        let t2 = expand(prk, previous: t1, counter: 2)
        return (t1, t2)
    }

    public static func kdf3(key: Key32, input: UnsafeRawBufferPointer) -> (Key32, Key32, Key32) {
        var prk = extract(key, input)
        defer { prk.wipe() }
        let t1 = expand(prk, previous: nil, counter: 1)
        let t2 = expand(prk, previous: t1, counter: 2)
        let t3 = expand(prk, previous: t2, counter: 3)
        return (t1, t2, t3)
    }

    public static func kdf1(key: Key32, input: Key32) -> Key32 {
        input.withUnsafeBytes { kdf1(key: key, input: $0) }
    }

    public static func kdf2(key: Key32, input: Key32) -> (Key32, Key32) {
        input.withUnsafeBytes { kdf2(key: key, input: $0) }
    }

    public static func kdf3(key: Key32, input: Key32) -> (Key32, Key32, Key32) {
        input.withUnsafeBytes { kdf3(key: key, input: $0) }
    }

    /// Convenience for tests (allocates): the n outputs as byte arrays.
    public static func derive(key: [UInt8], input: [UInt8], count: Int) -> [[UInt8]] {
        precondition((1...3).contains(count))
        guard let k = Key32(bytes: key) else { preconditionFailure("KDF key must be 32 bytes") }
        return input.withUnsafeBytes { i -> [[UInt8]] in
            switch count {
            case 1: return [kdf1(key: k, input: i).bytes]
            case 2: let (a, b) = kdf2(key: k, input: i); return [a.bytes, b.bytes]
            default: let (a, b, c) = kdf3(key: k, input: i); return [a.bytes, b.bytes, c.bytes]
            }
        }
    }
}
