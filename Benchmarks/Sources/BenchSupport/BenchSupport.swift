import Benchmark
import BenchSodium

/// Packets per sample. A per-packet allocation shows as ≥ this many mallocs per sample
/// (with `--scale`), far above the harness's own count (see "noop").
public var packetsPerSample: BenchmarkScalingFactor { .kilo }

/// The metrics of every per-packet benchmark.
public var packetMetrics: [BenchmarkMetric] { [.throughput, .wallClock, .mallocCountTotal] }

/// Inner packet sizes: a small packet (TCP ACK class), a mid-size one, and the largest a
/// 1500-byte path carries (1420 is wg-quick's default MTU).
public let packetSizes = [64, 512, 1420]

/// What every benchmark executable does first: initialise libsodium and set the shared
/// defaults (one sample = 1000 packets, at most 1 s or 10,000 samples, 10 warm-up samples).
public func configureBenchmarkSuite() {
    // libsodium picks its fastest ChaCha20 and Poly1305 code (AVX2/AVX-512 vs. reference)
    // in sodium_init; without it every AEAD call runs the portable reference code.
    precondition(sodium_init() >= 0, "sodium_init failed")

    Benchmark.defaultConfiguration = .init(
        metrics: packetMetrics,
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: packetsPerSample,
        maxDuration: .seconds(1),
        maxIterations: 10_000
    )
}
