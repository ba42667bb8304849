/// Per-source-address limit on handshake processing under load (the kernel's ratelimiter.c):
/// a token bucket per address, 20 packets a second with a burst of 5. Time is passed in.

/// An IPv4 or IPv6 source address as a 16-byte value (IPv4 is kept as its 4 bytes with a
/// flag, so the cookie can MAC exactly the bytes of the packet's header).
public struct SourceAddress: Hashable, Sendable {
    /// The 16 address bytes in network order, as two big-endian-loaded words (IPv4 in the
    /// first four bytes, the rest zero).
    public private(set) var high: UInt64
    public private(set) var low: UInt64
    public let isIPv6: Bool

    /// From 4 (IPv4) or 16 (IPv6) bytes in network order; nil for any other length.
    public init?(bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 4:
            high = UInt64(UInt32(bigEndian: bytes.loadUnaligned(as: UInt32.self))) << 32
            low = 0
            isIPv6 = false
        case 16:
            high = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
            low = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            isIPv6 = true
        default:
            return nil
        }
    }

    public init?(_ bytes: [UInt8]) {
        guard let a = bytes.withUnsafeBytes({ SourceAddress(bytes: $0) }) else { return nil }
        self = a
    }

    /// An IPv4 address given as a host-order number (0x0a000001 for 10.0.0.1).
    public init(ipv4: UInt32) {
        high = UInt64(ipv4) << 32
        low = 0
        isIPv6 = false
    }

    /// Calls `body` with the 4 or 16 address bytes in network order.
    public func withAddressBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var words = (high.bigEndian, low.bigEndian)
        return try Swift.withUnsafeBytes(of: &words) { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(isIPv6 ? 16 : 4))) }
    }

    /// The rate limiter's key: the whole IPv4 address, or the /64 prefix of an IPv6 address
    /// (one host usually owns a whole /64, as in the kernel).
    public var rateLimitKey: SourceAddress {
        var k = self
        if isIPv6 { k.low = 0 }
        return k
    }
}

/// The outcome of asking the rate limiter about one packet.
public enum RateLimitDecision: Equatable, Sendable {
    case allowed
    /// The source's bucket is empty.
    case rateLimited
    /// The table is at its bound and this source is not in it.
    case tableFull
}

/// A token bucket per source (IPv6: per /64). Tokens are counted in nanoseconds of credit:
/// a packet costs 1/20 s, the bucket holds 5 packets' worth. Entries idle for over a second
/// are full again and are dropped by `expire(now:)`, which `allow` also runs once a second.
/// Control plane: allocates (a dictionary), not thread-safe.
public struct RateLimiter {
    public static let packetCost = UInt64(1_000_000_000 / WireGuardProtocol.rateLimitPacketsPerSecond)
    public static let maxTokens = packetCost * UInt64(WireGuardProtocol.rateLimitBurst)
    /// Entries idle longer than this are removed.
    public static let entryLifetime = Duration.seconds(1)
    /// The kernel's bound on machines with over 1 GiB of memory (8192 buckets × 8).
    public static let defaultMaxEntries = 65_536

    private struct Bucket {
        var tokens: UInt64
        var lastTime: Instant
    }

    public let maxEntries: Int
    private var buckets: [SourceAddress: Bucket] = [:]
    private var lastExpiry: Instant?

    public init(maxEntries: Int = RateLimiter.defaultMaxEntries) {
        precondition(maxEntries > 0)
        self.maxEntries = maxEntries
    }

    /// The number of sources tracked.
    public var count: Int { buckets.count }

    /// Takes one packet's worth of tokens from `source`'s bucket.
    public mutating func allow(_ source: SourceAddress, now: Instant) -> RateLimitDecision {
        if let last = lastExpiry {
            if now.since(last) >= RateLimiter.entryLifetime { expire(now: now) }
        } else {
            lastExpiry = now
        }
        let key = source.rateLimitKey
        if var b = buckets[key] {
            let elapsed = UInt64(now.since(b.lastTime).nanoseconds)
            b.tokens = min(RateLimiter.maxTokens, b.tokens &+ min(elapsed, RateLimiter.maxTokens))
            b.lastTime = max(b.lastTime, now)
            let ok = b.tokens >= RateLimiter.packetCost
            if ok { b.tokens -= RateLimiter.packetCost }
            buckets[key] = b
            return ok ? .allowed : .rateLimited
        }
        if buckets.count >= maxEntries {
            expire(now: now)
            if buckets.count >= maxEntries { return .tableFull }
        }
        // A new source starts with a full bucket, less this packet.
        buckets[key] = Bucket(tokens: RateLimiter.maxTokens - RateLimiter.packetCost, lastTime: now)
        return .allowed
    }

    /// Removes sources idle for over a second (their buckets would be full again anyway).
    public mutating func expire(now: Instant) {
        lastExpiry = now
        buckets = buckets.filter { now.since($0.value.lastTime) <= RateLimiter.entryLifetime }
    }

    /// Forgets every source.
    public mutating func removeAll() {
        buckets.removeAll()
        lastExpiry = nil
    }
}
