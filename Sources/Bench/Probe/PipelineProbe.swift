// The fixed batch that `xdpwg bench-probe` runs and callgrind measures: the worker loop's
// per-packet work on frames in memory, without rings or syscalls.
//
//   decrypt   PacketProcessor.arrive (outer parse, port → tenant), then decrypt into a tenant
//             frame (receiver index, Keypair.open with the replay window, AllowedIPs source
//             check, peer activity, Ethernet header): what WorkerLoop.receiveUplink does per
//             descriptor
//   encrypt   PacketProcessor.encrypt of a tenant frame into an uplink frame (AllowedIPs
//             destination, sending keypair, Keypair.seal, outer header): what
//             WorkerLoop.receiveTenants does per descriptor
//
// Callgrind counts only the functions named `measuredBatch…` below (it dumps its counters
// when one is entered and when it returns: CallgrindProbe): everything before (fixture,
// checks, the warm-up that resolves lazy symbol binding and the runtime's one-time metadata)
// and after is not counted. No other function, closure or specialisation may carry that
// name: a second one entered inside the first would cut the batch in two dumps, which
// CallgrindProbe refuses.

import CSodium
import Engine
import Fixtures
import WireGuard

public enum PipelineProbe {
    /// The callgrind pattern matching the batch functions' mangled names
    /// (e.g. `$s5Bench20measuredBatchDecrypt…`) and nothing else.
    public static let regionPattern = "*measuredBatch*"
    /// The same functions, spelt differently (module Bench's mangling prefix): callgrind keeps
    /// one setting per pattern string, so --dump-after needs a pattern of its own.
    public static let regionExitPattern = "$s5Bench*measuredBatch*"
    /// Packets of the untimed warm-up batch before the measured one.
    static let warmUpPackets = 64

    /// What a probe run did: every packet of the measured batch must have been delivered
    /// (decrypt) or sent (encrypt), or the probe fails.
    public struct Outcome: Sendable, Equatable {
        public var direction: Direction
        public var innerSize: Int
        public var packets: Int
        public var completed: Int
        public var allocatingCanary: Bool
        public var cryptoOff: Bool
    }

    /// Builds the fixture for `size`-byte inner packets, checks it, warms up, then runs the
    /// measured batch of `packets` packets. `allocatingCanary` adds one heap allocation and one
    /// retain/release pair per packet inside the measured region: a self-check that the
    /// counting counts (the pipeline itself should show none).
    /// `cryptoOff`: the crypto-off variant (everything but the AEAD; see `PipelineFixture`).
    public static func run(direction: Direction, size: Int, packets: Int, allocatingCanary: Bool = false,
                           cryptoOff: Bool = false) throws(PipelineCheckFailed) -> Outcome {
        guard direction != .both else {
            throw PipelineCheckFailed("the probe measures one direction at a time: decrypt or encrypt")
        }
        guard packets >= 1, packets <= 1_000_000 else {
            throw PipelineCheckFailed("packets \(packets): must be 1...1000000")
        }
        // Decrypt needs a distinct counter per packet: one frame each. Encrypt reads one tenant frame.
        let fixture = try PipelineFixture(length: size, count: direction == .decrypt ? packets : 1,
                                          crypto: cryptoOff ? .off : .on).checked()
        let canary = CanaryBox()
        let tenantLength = Wire.ethernetHeaderSize + fixture.length
        let warmUp = min(packets, warmUpPackets)
        let warmed = direction == .decrypt
            ? decryptLoop(&fixture.processor, fixture: fixture, count: warmUp)
            : encryptLoop(&fixture.processor, fixture: fixture, tenantLength: tenantLength, count: warmUp)
        guard warmed == warmUp else {
            throw PipelineCheckFailed("warm-up: \(warmed) of \(warmUp) packets went through the \(direction) path")
        }
        if direction == .decrypt {
            fixture.renewEntry()        // a keypair that has seen none of the measured counters
        }

        let completed: Int
        switch (direction, allocatingCanary) {
        case (.decrypt, false):
            completed = measuredBatchDecrypt(&fixture.processor, fixture: fixture, count: packets)
        case (.decrypt, true):
            completed = measuredBatchDecryptAllocating(&fixture.processor, fixture: fixture, count: packets, canary: canary)
        case (_, false):
            completed = measuredBatchEncrypt(&fixture.processor, fixture: fixture, tenantLength: tenantLength, count: packets)
        case (_, true):
            completed = measuredBatchEncryptAllocating(&fixture.processor, fixture: fixture, tenantLength: tenantLength,
                                                       count: packets, canary: canary)
        }
        guard completed == packets else {
            throw PipelineCheckFailed("measured batch: \(completed) of \(packets) packets went through the \(direction) path")
        }
        return Outcome(direction: direction, innerSize: size, packets: packets, completed: completed,
                       allocatingCanary: allocatingCanary, cryptoOff: cryptoOff)
    }
}

// MARK: - The measured region

@inline(never)
func measuredBatchDecrypt(_ processor: inout PacketProcessor, fixture: PipelineFixture, count: Int) -> Int {
    decryptLoop(&processor, fixture: fixture, count: count)
}

@inline(never)
func measuredBatchEncrypt(_ processor: inout PacketProcessor, fixture: PipelineFixture, tenantLength: Int,
                          count: Int) -> Int {
    encryptLoop(&processor, fixture: fixture, tenantLength: tenantLength, count: count)
}

@inline(never)
func measuredBatchDecryptAllocating(_ processor: inout PacketProcessor, fixture: PipelineFixture, count: Int,
                                    canary: CanaryBox) -> Int {
    var completed = 0
    for i in 0..<count {
        completed &+= decryptLoop(&processor, fixture: fixture, first: i, count: 1)
        canary.allocateAndRetain()
    }
    return completed
}

@inline(never)
func measuredBatchEncryptAllocating(_ processor: inout PacketProcessor, fixture: PipelineFixture, tenantLength: Int,
                                    count: Int, canary: CanaryBox) -> Int {
    var completed = 0
    for _ in 0..<count {
        completed &+= encryptLoop(&processor, fixture: fixture, tenantLength: tenantLength, count: 1)
        canary.allocateAndRetain()
    }
    return completed
}

// MARK: - Per-packet work (inlined into the warm-up and into each measured function)

/// Frames `first..<first+count` through arrive + decrypt into the tenant frame; returns how
/// many were delivered.
@inline(__always)
func decryptLoop(_ processor: inout PacketProcessor, fixture: PipelineFixture, first: Int = 0, count: Int) -> Int {
    let frames = fixture.frames, stride = fixture.stride, frameLength = fixture.frameLength
    let output = fixture.output
    var delivered = 0
    for i in first..<(first + count) {
        let frame = frames + i &* stride
        switch processor.arrive(frame, length: frameLength) {
        case .transport(let outer, let tenant):
            if case .deliver = processor.decrypt(frame, outer: outer, tenant: tenant, into: output,
                                                 tenantCapacity: PipelineFixture.frameCapacity,
                                                 now: PipelineFixture.now) {
                delivered &+= 1
            }
        case .done:
            break
        }
    }
    return delivered
}

/// `count` encryptions of the tenant frame into the uplink frame; returns how many were sent.
@inline(__always)
func encryptLoop(_ processor: inout PacketProcessor, fixture: PipelineFixture, tenantLength: Int, count: Int) -> Int {
    let frame = UnsafeRawPointer(fixture.tenantFrame), output = fixture.output
    var sent = 0
    for _ in 0..<count {
        if case .send = processor.encrypt(tenant: 0, frame: frame, length: tenantLength, into: output,
                                          uplinkCapacity: PipelineFixture.frameCapacity,
                                          now: PipelineFixture.now) {
            sent &+= 1
        }
    }
    return sent
}

/// The canary's per-packet allocation and reference count traffic. The allocation escapes into
/// libsodium (an opaque C call), so neither Swift nor LLVM can remove it; the retain and
/// release surround that call on an object the probe keeps, so the ARC optimiser cannot pair
/// them away.
final class CanaryBox {
    @inline(never)
    func allocateAndRetain() {
        let unmanaged = Unmanaged.passUnretained(self).retain()
        let block = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        sodium_memzero(block, 64)
        block.deallocate()
        unmanaged.release()
    }
}
