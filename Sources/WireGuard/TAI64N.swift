/// A TAI64N timestamp (cr.yp.to/libtai/tai64.html) as WireGuard sends it in initiations:
/// 12 bytes, big-endian, 8 bytes of seconds offset by 2^62 and 4 bytes of nanoseconds.
/// Responders accept an initiation only when its timestamp is greater than the last one
/// accepted from that peer, which defeats replay of captured initiations.
///
/// The core has no clock: the caller passes the wall-clock time in. Like the kernel and
/// wireguard-go, the nanoseconds are rounded down to a multiple of 2^24 ns (≈ 16.8 ms, the
/// largest power of two below 1 s / 50 initiations), so the timestamp does not leak
/// fine-grained timing of the sender.
public struct TAI64N: Comparable, Hashable, Sendable {
    public static let byteCount = 12
    /// 2^62: TAI64 label of the Unix epoch (WireGuard, like the kernel, ignores leap seconds).
    public static let epochOffset: UInt64 = 1 << 62
    /// Nanoseconds are rounded down to a multiple of this (the kernel's
    /// rounddown_pow_of_two(NSEC_PER_SEC / INITIATIONS_PER_SECOND) = 2^24).
    public static let whitenerGranularity: UInt32 = 1 << 24

    /// The TAI64 label (seconds + 2^62), as on the wire.
    public var seconds: UInt64
    /// Nanoseconds as on the wire (a well-formed value is < 10^9; a received one may not be).
    public var nanoseconds: UInt32

    /// A timestamp for `secondsSinceEpoch` (Unix time) and `nanoseconds` (0..<10^9), with the
    /// nanoseconds rounded down to a multiple of 2^24.
    public init(secondsSinceEpoch: UInt64, nanoseconds: UInt32) {
        seconds = TAI64N.epochOffset &+ secondsSinceEpoch
        self.nanoseconds = (nanoseconds % 1_000_000_000) & ~(TAI64N.whitenerGranularity - 1)
    }

    /// The raw fields, unmodified (for timestamps read from the wire).
    public init(label seconds: UInt64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// Reads 12 big-endian bytes; nil when fewer are given.
    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= TAI64N.byteCount else { return nil }
        seconds = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        nanoseconds = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
    }

    public init?(bytes: [UInt8]) {
        guard let t = bytes.withUnsafeBytes({ TAI64N(bytes: $0) }) else { return nil }
        self = t
    }

    /// Writes the 12 wire bytes at `out` (which must hold them).
    public func write(to out: UnsafeMutableRawPointer) {
        out.storeBytes(of: seconds.bigEndian, toByteOffset: 0, as: UInt64.self)
        out.storeBytes(of: nanoseconds.bigEndian, toByteOffset: 8, as: UInt32.self)
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: TAI64N.byteCount)
        out.withUnsafeMutableBytes { write(to: $0.baseAddress!) }
        return out
    }

    /// Order of the 12 wire bytes compared as a big-endian number (the kernel's memcmp).
    public static func < (a: TAI64N, b: TAI64N) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    /// The smallest timestamp: every real initiation is newer.
    public static let zero = TAI64N(label: 0, nanoseconds: 0)
}
