import CSodium

/// 32 bytes held inline (no heap): public keys, hashes, chaining keys, symmetric keys.
/// Equality is constant time, because the same type holds secrets.
public struct Key32: Sendable, BitwiseCopyable {
    public static let byteCount = 32
    var storage: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public static var zero: Key32 { Key32() }

    public init() {}

    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Key32.byteCount else { return nil }
        withUnsafeMutableBytes { dst in
            for (i, b) in bytes.enumerated() { dst[i] = b }
        }
    }

    public init(copying raw: UnsafeRawBufferPointer) {
        precondition(raw.count >= Key32.byteCount)
        withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw.prefix(Key32.byteCount))) }
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

    /// Overwrites the value with zeros (for secrets held in `var`s).
    public mutating func wipe() { withUnsafeMutableBytes { Sodium.wipe($0) } }
}

extension Key32: Equatable {
    public static func == (a: Key32, b: Key32) -> Bool {
        a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in Sodium.constantTimeEqual(pa, pb) } }
    }
}

extension Key32: Hashable {
    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.0)
        hasher.combine(storage.1)
        hasher.combine(storage.2)
        hasher.combine(storage.3)
    }
}

extension Key32 {
    /// Standard base64 with padding: exactly 44 characters, canonical (as `wg` requires).
    public init?(base64: some StringProtocol) {
        var text = String(base64)
        guard let k = text.withUTF8({ KeyEncoding.decodeBase64(UnsafeRawBufferPointer($0)) }) else { return nil }
        self = k
    }

    /// Decodes base64 text held in the caller's buffer (which the caller wipes).
    public init?(base64Bytes: UnsafeRawBufferPointer) {
        guard let k = KeyEncoding.decodeBase64(base64Bytes) else { return nil }
        self = k
    }

    public var base64: String { KeyEncoding.encodeBase64(self) }

    /// Lowercase hex, 64 characters (the UAPI form).
    public init?(hex: some StringProtocol) {
        guard let k = Array(hex.utf8).withUnsafeBytes({ KeyEncoding.decodeHex($0) }) else { return nil }
        self = k
    }

    /// Decodes hex text held in the caller's buffer (which the caller wipes), so a secret's
    /// text is never copied (the UAPI server reads keys straight from its request buffer).
    public init?(hexBytes: UnsafeRawBufferPointer) {
        guard let k = KeyEncoding.decodeHex(hexBytes) else { return nil }
        self = k
    }

    public var hex: String { KeyEncoding.encodeHex(self) }

    /// Writes the 64 lowercase hex digits into the first 64 bytes of `out`, a buffer the
    /// caller wipes (the UAPI `get` reply holds the private key this way).
    public func writeHex(into out: UnsafeMutableRawBufferPointer) {
        KeyEncoding.writeHex(self, into: out)
    }
}

/// A Curve25519 public key. Public: printable and logged by its base64 form.
public struct PublicKey: Hashable, Sendable, CustomStringConvertible {
    public var key: Key32
    public init(_ key: Key32) { self.key = key }
    public init?(base64: some StringProtocol) {
        guard let k = Key32(base64: base64) else { return nil }
        key = k
    }
    public var base64: String { key.base64 }
    public var description: String { key.base64 }
}

/// Owns 32 secret bytes on the heap and wipes them when released. Secrets live in a class so
/// that no copy of them is left behind in freed stack frames or moved values.
public final class SecretKey: @unchecked Sendable {
    // Immutable after init; only read through `withUnsafeBytes`.
    private let pointer: UnsafeMutableRawPointer

    public init(_ key: Key32) {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: Key32.byteCount, alignment: 16)
        key.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: Key32.byteCount) }
    }

    /// Takes the secret out of `key` and wipes the source.
    public convenience init(consuming key: inout Key32) {
        self.init(key)
        key.wipe()
    }

    deinit {
        Sodium.wipe(UnsafeMutableRawBufferPointer(start: pointer, count: Key32.byteCount))
        pointer.deallocate()
    }

    @inline(__always)
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: Key32.byteCount))
    }

    /// A copy of the secret for code that needs it inline; the caller must wipe it.
    public var unsafeValue: Key32 { withUnsafeBytes { Key32(copying: $0) } }

    public var isZero: Bool { withUnsafeBytes { Sodium.isZero($0) } }

    /// Constant-time comparison.
    public func equals(_ other: SecretKey) -> Bool {
        withUnsafeBytes { a in other.withUnsafeBytes { b in Sodium.constantTimeEqual(a, b) } }
    }

    /// The secret's base64 form, for `genkey`/`showconf`-style output only. Never log it.
    public var base64ForDisplay: String { var k = unsafeValue; defer { k.wipe() }; return k.base64 }
    public var hexForDisplay: String { var k = unsafeValue; defer { k.wipe() }; return k.hex }
}

/// A Curve25519 private key, clamped, with its public key computed once.
public struct PrivateKey: Sendable {
    public let secret: SecretKey
    public let publicKey: PublicKey

    /// Clamps `raw` (as `wg` does) and wipes the caller's copy.
    public init(consuming raw: inout Key32) {
        Sodium.ensureInitialized()
        raw.withUnsafeMutableBytes { PrivateKey.clamp($0) }
        var pub = Key32()
        pub.withUnsafeMutableBytes { p in
            raw.withUnsafeBytes { s in
                _ = crypto_scalarmult_base(p.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                           s.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        secret = SecretKey(consuming: &raw)
        publicKey = PublicKey(pub)
    }

    public init?(base64: some StringProtocol) {
        guard var raw = Key32(base64: base64) else { return nil }
        self.init(consuming: &raw)
    }

    public init?(hex: some StringProtocol) {
        guard var raw = Key32(hex: hex) else { return nil }
        self.init(consuming: &raw)
    }

    /// A fresh random private key.
    public static func generate() -> PrivateKey {
        var raw = Key32()
        raw.withUnsafeMutableBytes { Sodium.randomBytes($0) }
        return PrivateKey(consuming: &raw)
    }

    /// RFC 7748 clamping: clear the three low bits, clear the top bit, set bit 254.
    static func clamp(_ k: UnsafeMutableRawBufferPointer) {
        k[0] &= 248
        k[31] = (k[31] & 127) | 64
    }

    /// X25519(self, peer) into `out`. Returns false when the result is all zeros (a
    /// low-order peer point), which WireGuard must reject.
    func sharedSecret(with peer: PublicKey, into out: inout Key32) -> Bool {
        var theirs = peer.key
        let rc = out.withUnsafeMutableBytes { o in
            secret.withUnsafeBytes { s in
                theirs.withUnsafeMutableBytes { p in
                    crypto_scalarmult(o.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      s.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      p.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return rc == 0 && !out.isZero
    }
}

/// A preshared symmetric key (all zeros when none is configured).
public struct PresharedKey: Sendable {
    public let secret: SecretKey
    public init(consuming raw: inout Key32) { secret = SecretKey(consuming: &raw) }
    public init?(base64: some StringProtocol) {
        guard var raw = Key32(base64: base64) else { return nil }
        self.init(consuming: &raw)
    }
    public static func generate() -> PresharedKey {
        var raw = Key32()
        raw.withUnsafeMutableBytes { Sodium.randomBytes($0) }
        return PresharedKey(consuming: &raw)
    }
    public static var none: PresharedKey { var z = Key32.zero; return PresharedKey(consuming: &z) }
}

extension SecretKey {
    /// Constant-time comparison of two secrets (configuration diffs: did the key change?).
    public func isEqual(to other: SecretKey) -> Bool {
        withUnsafeBytes { a in other.withUnsafeBytes { b in Sodium.constantTimeEqual(a, b) } }
    }
}

extension PrivateKey: Equatable {
    public static func == (a: PrivateKey, b: PrivateKey) -> Bool { a.secret.isEqual(to: b.secret) }
}

extension PresharedKey: Equatable {
    public static func == (a: PresharedKey, b: PresharedKey) -> Bool { a.secret.isEqual(to: b.secret) }
}

/// Branch-free base64 and hex for 32-byte keys, after wireguard-tools' encoding.c: the
/// decoders never index a table with secret data and accept only the canonical form.
enum KeyEncoding {
    private static func encodeSextet(_ v: Int32) -> UInt8 {
        // 'A'..'Z' for 0..25, 'a'..'z' for 26..51, '0'..'9' for 52..61, '+', '/'.
        var r = v + 65
        r += ((25 - v) >> 8) & 6
        r -= ((51 - v) >> 8) & 75
        r -= ((61 - v) >> 8) & 15
        r += ((62 - v) >> 8) & 3
        return UInt8(truncatingIfNeeded: r)
    }

    static func encodeBase64(_ key: Key32) -> String {
        key.withUnsafeBytes { src in
            var out = [UInt8]()
            out.reserveCapacity(44)
            var i = 0
            while i < 30 {
                let a = Int32(src[i]), b = Int32(src[i + 1]), c = Int32(src[i + 2])
                out.append(encodeSextet((a >> 2) & 63))
                out.append(encodeSextet(((a << 4) | (b >> 4)) & 63))
                out.append(encodeSextet(((b << 2) | (c >> 6)) & 63))
                out.append(encodeSextet(c & 63))
                i += 3
            }
            let a = Int32(src[30]), b = Int32(src[31])
            out.append(encodeSextet((a >> 2) & 63))
            out.append(encodeSextet(((a << 4) | (b >> 4)) & 63))
            out.append(encodeSextet((b << 2) & 63))
            out.append(UInt8(ascii: "="))
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// Decodes four characters; the result has bit 31 set when any is invalid.
    private static func decodeQuad(_ c0: UInt8, _ c1: UInt8, _ c2: UInt8, _ c3: UInt8) -> Int32 {
        var ret: Int32 = 0
        for (i, ch) in [c0, c1, c2, c3].enumerated() {
            let c = Int32(ch)
            var v: Int32 = -1
            v += (((0x40 - c) & (c - 0x5b)) >> 8) & (c - 64)          // 'A'..'Z' -> 0..25 (+1)
            v += (((0x60 - c) & (c - 0x7b)) >> 8) & (c - 70)          // 'a'..'z' -> 26..51 (+1)
            v += (((0x2f - c) & (c - 0x3a)) >> 8) & (c + 5)           // '0'..'9' -> 52..61 (+1)
            v += (((0x2a - c) & (c - 0x2c)) >> 8) & 63                // '+' -> 62 (+1)
            v += (((0x2e - c) & (c - 0x30)) >> 8) & 64                // '/' -> 63 (+1)
            ret |= v << (18 - 6 * Int32(i))
        }
        return ret
    }

    /// Decodes from borrowed bytes, so a secret's text is never copied.
    static func decodeBase64(_ s: UnsafeRawBufferPointer) -> Key32? {
        guard s.count == 44, s[43] == UInt8(ascii: "=") else { return nil }
        var key = Key32()
        var bad: Int32 = 0
        key.withUnsafeMutableBytes { dst in
            for i in 0..<10 {
                let v = decodeQuad(s[i * 4], s[i * 4 + 1], s[i * 4 + 2], s[i * 4 + 3])
                bad |= Int32(bitPattern: UInt32(bitPattern: v) >> 31)
                dst[i * 3] = UInt8(truncatingIfNeeded: v >> 16)
                dst[i * 3 + 1] = UInt8(truncatingIfNeeded: v >> 8)
                dst[i * 3 + 2] = UInt8(truncatingIfNeeded: v)
            }
            let v = decodeQuad(s[40], s[41], s[42], UInt8(ascii: "A"))
            bad |= Int32(bitPattern: UInt32(bitPattern: v) >> 31) | (v & 0xff)
            dst[30] = UInt8(truncatingIfNeeded: v >> 16)
            dst[31] = UInt8(truncatingIfNeeded: v >> 8)
        }
        if bad != 0 { key.wipe(); return nil }
        return key
    }

    static func encodeHex(_ key: Key32) -> String {
        var out = [UInt8](repeating: 0, count: 64)
        out.withUnsafeMutableBytes { writeHex(key, into: $0) }
        return String(decoding: out, as: UTF8.self)
    }

    static func writeHex(_ key: Key32, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= 64)
        // 0..9 -> '0'..'9', 10..15 -> 'a'..'f', without a branch on the value.
        func digit(_ nibble: Int32) -> UInt8 { UInt8(truncatingIfNeeded: 87 + nibble + (((nibble - 10) >> 8) & ~38)) }
        key.withUnsafeBytes { src in
            for (i, b) in src.enumerated() {
                out[i * 2] = digit(Int32(b >> 4))
                out[i * 2 + 1] = digit(Int32(b & 15))
            }
        }
    }

    static func decodeHex(_ s: UnsafeRawBufferPointer) -> Key32? {
        guard s.count == 64 else { return nil }
        var key = Key32()
        var bad: Int32 = 0
        key.withUnsafeMutableBytes { dst in
            for i in 0..<32 {
                var byte: Int32 = 0
                for j in 0..<2 {
                    let c = Int32(s[i * 2 + j])
                    let num = c ^ 48                                   // '0'..'9' -> 0..9
                    let numOK = (num - 10) >> 8                        // -1 when num < 10
                    let alpha = (c & ~32) - 55                         // 'a'..'f', 'A'..'F' -> 10..15
                    let alphaOK = ((alpha - 10) ^ (alpha - 16)) >> 8   // -1 when 10 <= alpha < 16
                    bad |= ~(numOK | alphaOK) & 1
                    byte = (byte << 4) | (numOK & num) | (alphaOK & alpha)
                }
                dst[i] = UInt8(truncatingIfNeeded: byte)
            }
        }
        if bad != 0 { key.wipe(); return nil }
        return key
    }
}
