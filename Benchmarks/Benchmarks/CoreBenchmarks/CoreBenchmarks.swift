// Per-packet costs of the WireGuard protocol core, with raw libsodium beside them.
//
// Loop shape, shared by every per-packet benchmark here (and by "noop", the harness
// baseline): one sample = `benchmark.scaledIterations` packets (`.kilo`, 1000), on buffers
// and tables built in `setup`, outside the measurement. With `--scale` the harness prints
// per-sample figures (malloc counts per 1000 packets); by default it divides the `*` columns
// by the scaling factor (per packet). See README.md.
//
// Transport (`Keypair.seal`/`Keypair.open`) and handshake benchmarks are in the
// `ProtocolBenchmarks` target beside this one, with the same metrics and loop shape.

import BenchSupport
import Benchmark
import BenchSodium

let benchmarks: @Sendable () -> Void = {
    configureBenchmarkSuite()

    registerNoopBenchmark()
    registerAEADBenchmarks()
    registerX25519Benchmark()
    registerAllowedIPsBenchmarks()
}

// MARK: - noop: the harness's own cost

/// Something for the loop to read, so "noop" touches state from `setup` as the others do.
final class NoopState {
    var value = 0
}

/// The same loop as the per-packet benchmarks, with nothing in it: the malloc count it shows
/// is what the harness itself adds per sample. A benchmark that allocates nothing per packet
/// shows the same count, whatever the number of packets per sample.
func registerNoopBenchmark() {
    Benchmark("noop (1k iterations)") { benchmark, state in
        for i in benchmark.scaledIterations {
            blackHole(state.value &+ i)
        }
    } setup: {
        NoopState()
    }

    // The instrument check: exactly one heap allocation per iteration, so this must show
    // the harness's count plus 1000 per sample. If it shows the same as "noop", malloc
    // counting is not working and the zero-malloc claim above proves nothing.
    Benchmark("malloc canary, 1 alloc per iteration (1k iterations)") { benchmark, state in
        for i in benchmark.scaledIterations {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: 1)
            p.initialize(to: state.value &+ i)
            blackHole(p.pointee)
            p.deallocate()
        }
    } setup: {
        NoopState()
    }
}
