// The gateway's per-packet pipeline (Engine's `PacketProcessor`), next to the core `Keypair`
// it is built on, on the same bytes in the same run:
//
//   Pipeline decrypt N B   uplink frame (Ethernet/IP/UDP + transport message) → outer header
//                          parse, port → tenant, receiver-index lookup, Keypair.open (replay
//                          window), endpoint/keypair-change checks, inner length, AllowedIPs
//                          source check, peer activity, Ethernet header → tenant frame
//   Keypair open N B       Keypair.open of the same messages into the same place
//   Pipeline encrypt N B   tenant frame → EtherType and inner length checks, AllowedIPs
//                          destination lookup, sending keypair and route, Keypair.seal,
//                          outer header (lengths, IPv4 checksum), peer activity
//   Keypair seal N B       Keypair.seal of the same inner packet into the same place
//
// Same loop shape and metrics as the other targets (README.md): one sample = 1000 packets
// (`.kilo`), everything built in `setup`: a `PipelineFixture` (from the main package's Fixtures,
// shared with `xdpwg bench-probe`), checked before anything is timed (`checked()`: a drop path
// would be faster and measure nothing). Every benchmark brackets its packet loop with
// `startMeasurement()`/`stopMeasurement()`: decrypt and open need a receive keypair that has
// not seen the sample's counters yet (made before the start), and the others are bracketed the
// same way so that all rows measure the same thing: the loop alone.

import Fixtures
import BenchSupport
import Benchmark
import BenchSodium
import Engine
import WireGuard

/// The fixture's names for the constants every benchmark here uses.
let pipelineNow = PipelineFixture.now
let tenantMTU = PipelineFixture.mtu
let frameCapacity = PipelineFixture.frameCapacity

/// A checked fixture with one frame per packet of a sample.
func pipelineFixture(length: Int, outerIPv6: Bool = false) throws -> PipelineFixture {
    try PipelineFixture(length: length, count: packetsPerSample.rawValue, outerIPv6: outerIPv6).checked()
}

let benchmarks: @Sendable () -> Void = {
    configureBenchmarkSuite()

    registerPipelineBaselines()
    registerPipelineBenchmarks()
    registerLookupBenchmarks()
}

/// Inner packet sizes: a TCP ACK class packet and a full 1420-byte MTU packet.
let pipelineSizes = [64, 1420]

// MARK: - Measured-region baselines for this executable

/// What the decrypt benchmarks do before `startMeasurement()` (retire the published keypair,
/// publish a new one: 3 frees and 3 mallocs) must not be counted, and what happens inside must
/// be: noop must show 0 mallocs per sample, the canary 1000.
func registerPipelineBaselines() {
    Benchmark("Pipeline noop, keypair renewed outside measured region (1k iterations)") { benchmark, s in
        s.renewEntry()
        let value = s.length
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            blackHole(value &+ i)
        }
        benchmark.stopMeasurement()
    } setup: {
        try PipelineFixture(length: 64, count: packetsPerSample.rawValue)
    }

    Benchmark("Pipeline malloc canary, keypair renewed outside measured region (1k iterations)") { benchmark, s in
        s.renewEntry()
        let value = s.length
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: 1)
            p.initialize(to: value &+ i)
            blackHole(p.pointee)
            p.deallocate()
        }
        benchmark.stopMeasurement()
    } setup: {
        try PipelineFixture(length: 64, count: packetsPerSample.rawValue)
    }
}

// MARK: - Pipeline and Keypair

/// Runs `body` with the fixture's processor as an inout local: one class access for the whole
/// measured loop, as the worker loop holds its processor (PacketProcessor is non-copyable: it
/// owns its worker's cipher contexts).
@inline(__always)
func withProcessor(_ s: PipelineFixture, _ body: (inout PacketProcessor) -> Void) {
    body(&s.processor)
}

func registerPipelineBenchmarks() {
    for size in pipelineSizes {
        // MARK: peer → tenant

        Benchmark("Pipeline decrypt \(size) B (1k packets)") { benchmark, s in
            s.renewEntry()                 // not measured: a keypair that has seen none of the counters
            let frames = s.frames, stride = s.stride, frameLength = s.frameLength, output = s.output
            var delivered = 0
            var failures = 0
            withProcessor(s) { processor in
                benchmark.startMeasurement()
                for i in benchmark.scaledIterations {
                    switch processor.decrypt(frames + i &* stride, length: frameLength, into: output,
                                             tenantCapacity: frameCapacity, now: pipelineNow) {
                    case .deliver(_, let length): delivered &+= length
                    default: failures &+= 1
                    }
                }
                benchmark.stopMeasurement()
            }
            blackHole(delivered)
            if failures != 0 { benchmark.error("\(failures) frames not delivered") }
        } setup: {
            try pipelineFixture(length: size)
        }

        Benchmark("Keypair open \(size) B (1k packets)") { benchmark, s in
            s.renewReceiver()              // not measured: fresh replay window
            let receiver = s.receiver
            let cipher = TransportCipher()
            let frames = s.frames, stride = s.stride, outerLength = s.outerLength
            let messageLength = s.messageLength
            let inner = s.output + Wire.ethernetHeaderSize
            var bytes = 0
            var failures = 0
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                do {
                    bytes &+= try receiver.open(frames + i &* stride + outerLength, length: messageLength, into: inner,
                                                capacity: frameCapacity - Wire.ethernetHeaderSize, now: pipelineNow,
                                                cipher: cipher)
                } catch {
                    failures &+= 1
                }
            }
            benchmark.stopMeasurement()
            blackHole(bytes)
            if failures != 0 { benchmark.error("\(failures) messages failed to open") }
        } setup: {
            try pipelineFixture(length: size)
        }

        // MARK: tenant → peer

        Benchmark("Pipeline encrypt \(size) B (1k packets)") { benchmark, s in
            let frame = UnsafeRawPointer(s.tenantFrame), length = Wire.ethernetHeaderSize + s.length
            let output = s.output
            var sent = 0
            var failures = 0
            withProcessor(s) { processor in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    switch processor.encrypt(tenant: 0, frame: frame, length: length, into: output,
                                             uplinkCapacity: frameCapacity, now: pipelineNow) {
                    case .send(let n): sent &+= n
                    default: failures &+= 1
                    }
                }
                benchmark.stopMeasurement()
            }
            blackHole(sent)
            if failures != 0 { benchmark.error("\(failures) frames not sent") }
        } setup: {
            try pipelineFixture(length: size)
        }

        Benchmark("Keypair seal \(size) B (1k packets)") { benchmark, s in
            let sender = s.sender
            let cipher = TransportCipher()
            let inner = UnsafeRawPointer(s.tenantFrame + Wire.ethernetHeaderSize), length = s.length
            let message = s.output + s.outerLength, capacity = frameCapacity - s.outerLength
            var bytes = 0
            var failures = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                do {
                    let sealed = try sender.seal(inner, length: length, into: message, capacity: capacity,
                                                 now: pipelineNow, cipher: cipher, mtu: tenantMTU)
                    bytes &+= sealed.length
                } catch {
                    failures &+= 1
                }
            }
            benchmark.stopMeasurement()
            blackHole(bytes)
            if failures != 0 { benchmark.error("\(failures) packets failed to seal") }
        } setup: {
            try pipelineFixture(length: size)
        }
    }

    // The IPv6 outer header needs a UDP checksum over the whole datagram (IPv4 may send 0):
    // the one place the pipeline reads every byte again after the cipher.
    Benchmark("Pipeline encrypt 1420 B, IPv6 outer (1k packets)") { benchmark, s in
        let frame = UnsafeRawPointer(s.tenantFrame), length = Wire.ethernetHeaderSize + s.length
        let output = s.output
        var sent = 0
        var failures = 0
        withProcessor(s) { processor in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                switch processor.encrypt(tenant: 0, frame: frame, length: length, into: output,
                                         uplinkCapacity: frameCapacity, now: pipelineNow) {
                case .send(let n): sent &+= n
                default: failures &+= 1
                }
            }
            benchmark.stopMeasurement()
        }
        blackHole(sent)
        if failures != 0 { benchmark.error("\(failures) frames not sent") }
    } setup: {
        try pipelineFixture(length: 1420, outerIPv6: true)
    }
}
