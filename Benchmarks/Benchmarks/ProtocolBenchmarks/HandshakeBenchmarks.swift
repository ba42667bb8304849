// The Noise_IKpsk2 handshake, one operation per sample (`.one`), next to the X25519 it is
// built on (CoreBenchmarks: "libsodium X25519 crypto_scalarmult (per op)" and
// "... crypto_scalarmult_base (per op)").
//
//     initiator: PrivateKey.generate (ephemeral) + createInitiation ...... DH es, ss(precomputed)
//     responder: PrivateKey.generate + consumeInitiation + createResponse  DH es, ee, se
//     initiator: consumeResponse ......................................... DH ee, se
//
// The responder accepts an initiation only when its timestamp is newer than the last one
// from that peer and at least 20 ms after the previous one, so every sample advances the
// injected monotonic `now` by 20 ms and the TAI64N timestamp by one second, and the message
// a responder-side benchmark consumes is created fresh before its measured region.
// Ephemeral keys are made once in setup and reused (harmless here, never in production);
// generating one is benchmarked on its own.

import BenchSupport
import Benchmark
import BenchSodium
import WireGuard

final class HandshakeState {
    let initiatorIdentity: StaticIdentity
    let responderIdentity: StaticIdentity
    /// The initiator's handshake with the responder.
    let initiator: PeerHandshake
    /// The responder's handshake with the initiator (what `lookup` finds).
    let responderPeer: PeerHandshake
    let initiatorEphemeral: PrivateKey
    let responderEphemeral: PrivateKey
    let initiation: UnsafeMutableRawBufferPointer   // 148 bytes
    let response: UnsafeMutableRawBufferPointer     // 92 bytes
    var now = Instant(nanoseconds: 1_000_000_000)
    var seconds: UInt64 = 1_700_000_000
    var nextIndex: UInt32 = 1

    init() throws(SetupCheckFailed) {
        initiatorIdentity = StaticIdentity(privateKey: .generate())
        responderIdentity = StaticIdentity(privateKey: .generate())
        let psk = PresharedKey.generate()
        initiator = PeerHandshake(identity: initiatorIdentity, remoteStatic: responderIdentity.publicKey,
                                  presharedKey: psk)
        responderPeer = PeerHandshake(identity: responderIdentity, remoteStatic: initiatorIdentity.publicKey,
                                      presharedKey: psk)
        initiatorEphemeral = .generate()
        responderEphemeral = .generate()
        initiation = .allocate(byteCount: InitiationMessage.size, alignment: 16)
        response = .allocate(byteCount: ResponseMessage.size, alignment: 16)
        initiation.initializeMemory(as: UInt8.self, repeating: 0)
        response.initializeMemory(as: UInt8.self, repeating: 0)
        try check()
    }

    deinit {
        initiation.deallocate()
        response.deallocate()
    }

    /// Time moves on past the responder's flood limit, the wall clock by a second.
    @inline(__always)
    func advance() {
        now = now + PeerHandshake.minimumInitiationInterval
        seconds &+= 1
        nextIndex &+= 2
    }

    @inline(__always)
    func createInitiation() throws(HandshakeError) {
        try initiator.createInitiation(ephemeral: initiatorEphemeral, localIndex: nextIndex,
                                       timestamp: TAI64N(secondsSinceEpoch: seconds, nanoseconds: 0),
                                       now: now, into: initiation)
    }

    /// Responder: consume the initiation in `initiation`, write the response. Returns its keys.
    @inline(__always)
    func consumeInitiationAndRespond() throws(HandshakeError) -> SessionKeys {
        let message: InitiationMessage
        do { message = try InitiationMessage(UnsafeRawBufferPointer(initiation)) } catch { throw .malformed(error) }
        let expected = responderPeer
        let peer = try responderIdentity.consumeInitiation(message, now: now) {
            $0 == expected.remoteStatic ? expected : nil
        }
        return try peer.createResponse(ephemeral: responderEphemeral, localIndex: nextIndex &+ 1, now: now,
                                       into: response)
    }

    /// Initiator: consume the response in `response`. Returns its keys.
    @inline(__always)
    func consumeResponse() throws(HandshakeError) -> SessionKeys {
        let message: ResponseMessage
        do { message = try ResponseMessage(UnsafeRawBufferPointer(response)) } catch { throw .malformed(error) }
        return try initiator.consumeResponse(message, now: now)
    }

    /// Two complete handshakes before anything is timed: both sides end with mirrored keys
    /// (a data message sealed by one opens on the other), and a replayed initiation is refused.
    private func check() throws(SetupCheckFailed) {
        for _ in 0..<2 {
            advance()
            var r: SessionKeys, i: SessionKeys
            do throws(HandshakeError) {
                try createInitiation()
                r = try consumeInitiationAndRespond()
                i = try consumeResponse()
            } catch { throw SetupCheckFailed("handshake failed: \(error)") }
            guard i.sendKey == r.receiveKey, i.receiveKey == r.sendKey,
                  i.localIndex == r.remoteIndex, i.remoteIndex == r.localIndex else {
                throw SetupCheckFailed("the two sides derived different session keys")
            }
            let sender = Keypair(consuming: &i), receiver = Keypair(consuming: &r)
            var packet = [UInt8](repeating: 0x5a, count: 64)
            var wire = [UInt8](repeating: 0, count: 96), back = [UInt8](repeating: 0, count: 64)
            do {
                let sealed = try sender.seal(&packet, length: 64, into: &wire, capacity: 96, now: now,
                                             cipher: TransportCipher())
                let n = try wire.withUnsafeBytes { w throws(TransportRejection) in
                    try receiver.open(w.baseAddress!, length: sealed.length, into: &back, capacity: 64, now: now,
                                      cipher: TransportCipher())
                }
                guard n == 64, back == packet else { throw SetupCheckFailed("data did not round-trip") }
            } catch { throw SetupCheckFailed("data over the new session failed: \(error)") }
        }
        // The last initiation again, 20 ms later: its timestamp is not newer.
        now = now + PeerHandshake.minimumInitiationInterval
        var refusal: HandshakeError?
        do throws(HandshakeError) {
            var keys = try consumeInitiationAndRespond()
            keys.wipe()
        } catch { refusal = error }
        guard refusal == .replayedTimestamp else {
            throw SetupCheckFailed("a replayed initiation gave \(String(describing: refusal)), not .replayedTimestamp")
        }
    }
}

func registerHandshakeBenchmarks() {
    let perOperation = Benchmark.Configuration(
        metrics: packetMetrics, timeUnits: .nanoseconds, warmupIterations: 10,
        scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 10_000)

    // A fresh ephemeral key: CSPRNG bytes, clamping, one fixed-base X25519, a SecretKey.
    Benchmark("handshake ephemeral PrivateKey.generate (per op)", configuration: perOperation) { benchmark, _ in
        for _ in benchmark.scaledIterations {
            blackHole(PrivateKey.generate())
        }
    } setup: {
        0
    }

    Benchmark("handshake initiator createInitiation (per op)", configuration: perOperation) { benchmark, s in
        for _ in benchmark.scaledIterations {
            s.advance()
            do throws(HandshakeError) { try s.createInitiation() } catch { benchmark.error("\(error)") }
        }
        blackHole(s.initiation[147])
    } setup: {
        try HandshakeState()
    }

    Benchmark("handshake responder consumeInitiation + createResponse (per op)",
              configuration: perOperation) { benchmark, s in
        for _ in benchmark.scaledIterations {
            s.advance()
            do throws(HandshakeError) {
                try s.createInitiation()               // not measured
                benchmark.startMeasurement()
                var keys = try s.consumeInitiationAndRespond()
                benchmark.stopMeasurement()
                keys.wipe()
            } catch { benchmark.error("\(error)") }
        }
    } setup: {
        try HandshakeState()
    }

    Benchmark("handshake initiator consumeResponse (per op)", configuration: perOperation) { benchmark, s in
        for _ in benchmark.scaledIterations {
            s.advance()
            do throws(HandshakeError) {
                try s.createInitiation()               // not measured
                var theirs = try s.consumeInitiationAndRespond()
                theirs.wipe()
                benchmark.startMeasurement()
                var keys = try s.consumeResponse()
                benchmark.stopMeasurement()
                keys.wipe()
            } catch { benchmark.error("\(error)") }
        }
    } setup: {
        try HandshakeState()
    }
}
