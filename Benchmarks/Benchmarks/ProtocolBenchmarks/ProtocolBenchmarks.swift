// The protocol layer above the cipher: transport (`Keypair.seal`/`open`, with header, counter,
// expiry checks and the replay window) and the Noise_IKpsk2 handshake, each next to the raw
// libsodium work it is built on. Same loop shape and metrics as CoreBenchmarks (see README.md):
// one sample = 1000 packets (`.kilo`) for per-packet paths, one operation (`.one`) for the
// handshake; state built in `setup`.
//
// Some benchmarks need fresh state every sample (a new receive Keypair, because the replay
// window rejects counters it has seen). They build it at the top of the closure and bracket
// the measured loop with `benchmark.startMeasurement()`/`stopMeasurement()`: wall clock,
// throughput and malloc counts then cover the loop only. The two "measured region" baselines
// below prove that bracketing works for malloc counts in both directions.

import BenchSupport
import Benchmark
import BenchSodium
import WireGuard

let benchmarks: @Sendable () -> Void = {
    configureBenchmarkSuite()

    registerProtocolBaselines()
    registerTransportBenchmarks()
    registerHandshakeBenchmarks()
}

// MARK: - Baselines for this executable

/// A receive keypair made and dropped every sample, as the open benchmarks do.
final class BaselineState {
    var value = 0
    var keypair: Keypair
    let keys: SessionKeys

    init() {
        keys = SessionKeys(sendKey: randomKey32(), receiveKey: randomKey32(), localIndex: 1, remoteIndex: 2,
                           isInitiator: false, createdAt: .zero)
        var k = keys
        keypair = Keypair(consuming: &k)
    }

    /// Replaces the keypair: frees the old one and allocates a new one (mallocs, on purpose).
    func renewKeypair() {
        var k = keys
        keypair = Keypair(consuming: &k)
    }
}

func registerProtocolBaselines() {
    // The plain loop of the seal benchmarks, in this executable.
    Benchmark("protocol noop (1k iterations)") { benchmark, s in
        for i in benchmark.scaledIterations {
            blackHole(s.value &+ i)
        }
    } setup: {
        BaselineState()
    }

    // The shape of the open benchmarks: a Keypair freed and allocated before
    // startMeasurement(). Must show the same mallocs as the plain noop: what happens before
    // the explicit start is not counted.
    Benchmark("protocol noop, Keypair renewed outside measured region (1k iterations)") { benchmark, s in
        s.renewKeypair()
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            blackHole(s.value &+ i)
        }
        benchmark.stopMeasurement()
    } setup: {
        BaselineState()
    }

    // ...and what happens between start and stop is: must show noop + 1000.
    Benchmark("protocol malloc canary, Keypair renewed outside measured region (1k iterations)") { benchmark, s in
        s.renewKeypair()
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: 1)
            p.initialize(to: s.value &+ i)
            blackHole(p.pointee)
            p.deallocate()
        }
        benchmark.stopMeasurement()
    } setup: {
        BaselineState()
    }
}

// MARK: - Helpers

func randomKey32() -> Key32 {
    var k = Key32()
    k.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, 32) }
    return k
}

/// Why a benchmark's setup refused to time something: the thing under test does not do
/// what the protocol says, so its speed would mean nothing.
struct SetupCheckFailed: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
