@testable import WireGuard

/// Hex helpers for the known-answer tests (test code only).
enum Hex {
    static func decode(_ s: String) -> [UInt8] {
        let chars = Array(s.utf8)
        precondition(chars.count % 2 == 0, "odd hex length")
        func nibble(_ c: UInt8) -> UInt8 {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: preconditionFailure("bad hex digit")
            }
        }
        return stride(from: 0, to: chars.count, by: 2).map { nibble(chars[$0]) << 4 | nibble(chars[$0 + 1]) }
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Deterministic keys and a two-peer setup for the handshake and cookie tests.
enum Fixture {
    static func privateKey(_ bytes: [UInt8]) -> PrivateKey {
        var raw = Key32(bytes: bytes)!
        return PrivateKey(consuming: &raw)
    }

    static func privateKey(from first: UInt8) -> PrivateKey {
        privateKey((0..<32).map { first &+ UInt8($0) })
    }

    static func presharedKey(_ bytes: [UInt8]) -> PresharedKey {
        var raw = Key32(bytes: bytes)!
        return PresharedKey(consuming: &raw)
    }

    /// 1 s after the start of a monotonic clock.
    static let start = Instant(nanoseconds: 1_000_000_000)
    static func time(_ seconds: UInt64, nanoseconds: UInt32 = 0) -> TAI64N {
        TAI64N(secondsSinceEpoch: 1_700_000_000 + seconds, nanoseconds: nanoseconds)
    }
}

/// Two interfaces, each with the other as its only peer.
final class PeerPair {
    let initiator: StaticIdentity
    let responder: StaticIdentity
    /// The initiator's handshake with the responder.
    let initiatorPeer: PeerHandshake
    /// The responder's handshake with the initiator.
    let responderPeer: PeerHandshake
    var nextIndex: UInt32 = 0x1000

    init(initiator: PrivateKey = .generate(), responder: PrivateKey = .generate(), psk: PresharedKey = .none) {
        self.initiator = StaticIdentity(privateKey: initiator)
        self.responder = StaticIdentity(privateKey: responder)
        initiatorPeer = PeerHandshake(identity: self.initiator, remoteStatic: self.responder.publicKey, presharedKey: psk)
        responderPeer = PeerHandshake(identity: self.responder, remoteStatic: self.initiator.publicKey, presharedKey: psk)
    }

    /// The responder's peer table.
    func lookup(_ key: PublicKey) -> PeerHandshake? { key == initiator.publicKey ? responderPeer : nil }

    func index() -> UInt32 { nextIndex += 1; return nextIndex }

    func initiation(at second: UInt64, now: Instant) throws -> [UInt8] {
        try initiatorPeer.createInitiation(ephemeral: .generate(), localIndex: index(),
                                           timestamp: Fixture.time(second), now: now)
    }

    func consume(_ initiation: [UInt8], now: Instant) throws(HandshakeError) -> PeerHandshake {
        try responder.consumeInitiation(initiation, now: now, lookup: lookup)
    }
}

/// Recomputes mac1 of a crafted or altered message so it reaches the checks after mac1.
func resealMAC1(_ message: inout [UInt8], receiver: PublicKey) {
    let offset = message.count - 32
    let mac = message.withUnsafeBytes {
        MAC16.compute(key: LabelKeys.mac1Key(for: receiver), data: UnsafeRawBufferPointer(rebasing: $0[0..<offset]))
    }
    message.replaceSubrange(offset..<offset + 16, with: mac.bytes)
}

/// The core's seeded generator, so a failing randomized test reproduces from its seed.
extension SplitMix64 {
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        for i in 0..<buffer.count { buffer[i] = UInt8(truncatingIfNeeded: next()) }
    }
}

/// A shared seeded generator for code that takes a `RandomBytesSource` closure.
final class SeededRandom: @unchecked Sendable {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    func fill(_ buffer: UnsafeMutableRawBufferPointer) { generator.fill(buffer) }
}
