import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// Reads the clocks the control plane passes into the core.
public enum Clock {
    /// The monotonic clock, for every protocol timer.
    public static func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    /// The wall clock as a handshake timestamp.
    public static func wall() -> TAI64N {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return TAI64N(secondsSinceEpoch: UInt64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }
}
