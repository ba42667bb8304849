import Testing
@testable import WireGuard

@Suite struct RateLimiterTests {
    static let a = SourceAddress([192, 0, 2, 1])!
    static let b = SourceAddress([192, 0, 2, 2])!
    static let t0 = Instant(nanoseconds: 5_000_000_000)

    @Test func burstOfFiveThenLimited() {
        var limiter = RateLimiter()
        for _ in 0..<5 { #expect(limiter.allow(Self.a, now: Self.t0) == .allowed) }
        #expect(limiter.allow(Self.a, now: Self.t0) == .rateLimited)
        #expect(limiter.allow(Self.a, now: Self.t0) == .rateLimited)
        // Another source has its own bucket.
        #expect(limiter.allow(Self.b, now: Self.t0) == .allowed)
    }

    @Test func refillsAtTwentyPerSecond() {
        var limiter = RateLimiter()
        for _ in 0..<5 { _ = limiter.allow(Self.a, now: Self.t0) }
        #expect(limiter.allow(Self.a, now: Self.t0 + .milliseconds(49)) == .rateLimited)
        // 49 + 1 ms = one packet's worth (50 ms) since the last refill point.
        #expect(limiter.allow(Self.a, now: Self.t0 + .milliseconds(50)) == .allowed)
        #expect(limiter.allow(Self.a, now: Self.t0 + .milliseconds(50)) == .rateLimited)
        // A long pause refills only up to the burst of 5.
        let later = Self.t0 + .milliseconds(900)
        for _ in 0..<5 { #expect(limiter.allow(Self.a, now: later) == .allowed) }
        #expect(limiter.allow(Self.a, now: later) == .rateLimited)
        // Sustained 20/s is allowed indefinitely.
        var t = later
        for _ in 0..<100 {
            t = t + .milliseconds(50)
            #expect(limiter.allow(Self.a, now: t) == .allowed)
        }
    }

    @Test func ipv6SharesABucketPerSlash64() {
        var limiter = RateLimiter()
        let base: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1]
        let x = SourceAddress(base + [0, 0, 0, 0, 0, 0, 0, 1])!
        let y = SourceAddress(base + [0xff, 0, 0, 0, 0, 0, 0, 2])!
        let other = SourceAddress([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 2] + [0, 0, 0, 0, 0, 0, 0, 1])!
        for _ in 0..<3 { #expect(limiter.allow(x, now: Self.t0) == .allowed) }
        for _ in 0..<2 { #expect(limiter.allow(y, now: Self.t0) == .allowed) }
        #expect(limiter.allow(x, now: Self.t0) == .rateLimited)
        #expect(limiter.allow(other, now: Self.t0) == .allowed)
        #expect(limiter.count == 2)
    }

    @Test func expireRemovesIdleSources() {
        var limiter = RateLimiter()
        _ = limiter.allow(Self.a, now: Self.t0)
        _ = limiter.allow(Self.b, now: Self.t0 + .milliseconds(600))
        limiter.expire(now: Self.t0 + .milliseconds(1_500))
        #expect(limiter.count == 1)
        limiter.expire(now: Self.t0 + .seconds(3))
        #expect(limiter.count == 0)
    }

    @Test func allowCollectsGarbageOnceASecond() {
        var limiter = RateLimiter()
        for i in 0..<100 { _ = limiter.allow(SourceAddress(ipv4: 0x0A00_0000 + UInt32(i)), now: Self.t0) }
        #expect(limiter.count == 100)
        _ = limiter.allow(Self.a, now: Self.t0 + .seconds(2))
        #expect(limiter.count == 1)
    }

    @Test func tableSizeIsBounded() {
        var limiter = RateLimiter(maxEntries: 3)
        for i in 0..<3 { #expect(limiter.allow(SourceAddress(ipv4: UInt32(i + 1)), now: Self.t0) == .allowed) }
        #expect(limiter.allow(SourceAddress(ipv4: 99), now: Self.t0) == .tableFull)
        // Known sources still get their bucket.
        #expect(limiter.allow(SourceAddress(ipv4: 1), now: Self.t0) == .allowed)
        // Once the old entries are stale there is room again.
        #expect(limiter.allow(SourceAddress(ipv4: 99), now: Self.t0 + .milliseconds(1_100)) == .allowed)
        #expect(limiter.count == 1)
    }

    @Test func clockGoingBackwardsDoesNotTrap() {
        var limiter = RateLimiter()
        _ = limiter.allow(Self.a, now: Self.t0)
        #expect(limiter.allow(Self.a, now: Instant(nanoseconds: 0)) == .allowed)
    }

    @Test func sourceAddressParsing() {
        #expect(SourceAddress([1, 2, 3]) == nil)
        #expect(SourceAddress([UInt8](repeating: 0, count: 5)) == nil)
        #expect(SourceAddress([10, 0, 0, 1]) == SourceAddress(ipv4: 0x0A00_0001))
        let v4 = SourceAddress([10, 0, 0, 1])!
        #expect(v4.withAddressBytes { Array($0) } == [10, 0, 0, 1])
        let v6bytes: [UInt8] = (0..<16).map { UInt8($0 * 3) }
        #expect(SourceAddress(v6bytes)!.withAddressBytes { Array($0) } == v6bytes)
        // An IPv4-mapped IPv6 address is a different key from the IPv4 address.
        let mapped = SourceAddress([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1])!
        #expect(mapped != v4)
    }
}
