// The fixed world every target runs in: keys, clocks, addresses, a "random" source that
// repeats, and one real handshake between the fixed keys (made once, in memory).

import WireGuard

/// A repeatable stream of bytes standing in for the CSPRNG (cookie secrets, nonces, fixture
/// keys): xorshift64*, seeded. Not for anything but tests and fuzzing.
final class DeterministicRandom {
    private var state: UInt64

    init(seed: UInt64) { state = seed | 1 }

    func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        for i in buffer.indices {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            buffer[i] = UInt8(truncatingIfNeeded: (state &* 0x2545_F491_4F6C_DD1D) >> 56)
        }
    }
}

/// Fixed keys: 32 copies of one byte, clamped. Public values only matter to the harness; none
/// of them is a secret anywhere.
enum FuzzKeys {
    static func privateKey(_ byte: UInt8) -> PrivateKey {
        guard var raw = Key32(bytes: repeatElement(byte, count: Key32.byteCount)) else {
            harnessFailure("Key32 refused 32 bytes")
        }
        return PrivateKey(consuming: &raw)
    }

    /// The gateway's tenant: the responder.
    static let responder = privateKey(0x11)
    /// Peer A, with a preshared key: the initiator of the transcript.
    static let initiator = privateKey(0x22)
    /// Peer B, known to the responder, no preshared key.
    static let otherPeer = privateKey(0x33)
    /// Not a peer of the responder.
    static let stranger = privateKey(0x44)
    static let initiatorEphemeral = privateKey(0x55)
    static let responderEphemeral = privateKey(0x66)

    static func presharedKey() -> PresharedKey {
        guard var raw = Key32(bytes: repeatElement(UInt8(0x77), count: Key32.byteCount)) else {
            harnessFailure("Key32 refused 32 bytes")
        }
        return PresharedKey(consuming: &raw)
    }
}

/// Fixed clocks and addresses.
enum FuzzClock {
    /// The monotonic `now` of every step (cookie secrets are born at it, keypairs created at it).
    static let now = Instant(nanoseconds: 10_000_000_000)
    /// The initiator's wall clock.
    static let timestamp = TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 0)
    /// Where handshake messages come from (the cookie is bound to it).
    static let source = SourceAddress(ipv4: 0xC000_0201)   // 192.0.2.1
    static let port: UInt16 = 40000
}

/// A `CookieChecker` whose secret and nonces repeat from run to run, its secret already born
/// at `FuzzClock.now` (so copies of it agree on every cookie). Its "random" bytes are a fixed
/// pattern, not a stream: copies of the checker share the closure, and a stream would make
/// one run's nonces depend on the runs before it.
func makeCookieChecker(identity: StaticIdentity, seed: UInt8) -> CookieChecker {
    var checker = CookieChecker(identity: identity, random: { buffer in
        for i in buffer.indices { buffer[i] = UInt8(truncatingIfNeeded: i &* 37) ^ seed }
    })
    _ = checker.cookie(for: FuzzClock.source, port: FuzzClock.port, now: FuzzClock.now)
    return checker
}

/// One handshake between `FuzzKeys.initiator` and `FuzzKeys.responder`, with a cookie round
/// on the way (the responder under load answers the first initiation with a cookie reply; the
/// initiator's next initiation carries mac2), then transport messages from the initiator.
final class Transcript {
    nonisolated(unsafe) static let shared = Transcript()

    static let initiatorIndex: UInt32 = 0x1111_0001
    static let responderIndex: UInt32 = 0x2222_0001

    static let responderIdentity = StaticIdentity(privateKey: FuzzKeys.responder)
    static let initiatorIdentity = StaticIdentity(privateKey: FuzzKeys.initiator)
    /// The responder's cookie checker (secret born at `now`).
    let responderCookies: CookieChecker
    /// The initiator's first initiation: mac1 valid, mac2 zero.
    let initiation: [UInt8]
    /// The responder's cookie reply to `initiation`.
    let cookieReply: [UInt8]
    /// The initiator's initiation after the cookie: same body and mac1, mac2 valid.
    let initiationWithMAC2: [UInt8]
    /// The responder's response to the initiation.
    let response: [UInt8]
    let initiatorKeys: SessionKeys
    let responderKeys: SessionKeys
    /// From the initiator, counters 0, 1, 2: a keepalive, an IPv4 packet, an IPv6 packet.
    let transport: [[UInt8]]

    /// A handshake of the initiator's with the responder, in the state right after it sent the
    /// transcript's initiation (no cookie held). Made fresh: each costs three X25519.
    static func makeInitiator() -> PeerHandshake {
        let h = PeerHandshake(identity: initiatorIdentity, remoteStatic: FuzzKeys.responder.publicKey,
                              presharedKey: FuzzKeys.presharedKey())
        sendInitiation(h)
        return h
    }

    /// Lets `handshake` (the initiator's) send the transcript's initiation again: the same
    /// ephemeral, index and timestamp, so the same bytes (mac2 aside) and the same state.
    static func sendInitiation(_ handshake: PeerHandshake, into out: UnsafeMutableRawBufferPointer? = nil) {
        do throws(HandshakeError) {
            if let out {
                try handshake.createInitiation(ephemeral: FuzzKeys.initiatorEphemeral, localIndex: Transcript.initiatorIndex,
                                               timestamp: FuzzClock.timestamp, now: FuzzClock.now, into: out)
            } else {
                _ = try handshake.createInitiation(ephemeral: FuzzKeys.initiatorEphemeral,
                                                   localIndex: Transcript.initiatorIndex,
                                                   timestamp: FuzzClock.timestamp, now: FuzzClock.now)
            }
        } catch {
            harnessFailure("the initiator cannot create its initiation: \(error)")
        }
    }

    /// The responder's peers: A (the initiator, with the preshared key) and B. Made fresh after
    /// any accepted initiation (acceptance moves a peer's timestamp and flood clock).
    static func makeResponderPeers() -> [PeerHandshake] {
        [PeerHandshake(identity: responderIdentity, remoteStatic: FuzzKeys.initiator.publicKey,
                       presharedKey: FuzzKeys.presharedKey()),
         PeerHandshake(identity: responderIdentity, remoteStatic: FuzzKeys.otherPeer.publicKey)]
    }

    private init() {
        let now = FuzzClock.now
        var checker = makeCookieChecker(identity: Self.responderIdentity, seed: 0xC0)
        responderCookies = checker
        let initiator = Self.makeInitiator()
        var first = [UInt8](repeating: 0, count: InitiationMessage.size)
        first.withUnsafeMutableBytes { Self.sendInitiation(initiator, into: $0) }
        initiation = first
        cookieReply = first.withUnsafeBytes { b in
            guard let message = try? InitiationMessage(b) else { harnessFailure("the initiator's initiation does not parse") }
            return checker.createCookieReply(to: message, source: FuzzClock.source, port: FuzzClock.port, now: now)
        }
        do throws(HandshakeError) {
            try initiator.consumeCookieReply(cookieReply, now: now)
            var second = [UInt8](repeating: 0, count: InitiationMessage.size)
            second.withUnsafeMutableBytes { Self.sendInitiation(initiator, into: $0) }
            initiationWithMAC2 = second

            let peers = Self.makeResponderPeers()
            let peer = try Self.responderIdentity.consumeInitiation(second, now: now) { key in
                peers.first { $0.remoteStatic == key }
            }
            let (message, keys) = try peer.createResponse(ephemeral: FuzzKeys.responderEphemeral,
                                                          localIndex: Transcript.responderIndex, now: now)
            response = message
            responderKeys = keys
            initiatorKeys = try initiator.consumeResponse(message, now: now)
        } catch {
            harnessFailure("the fixed keys do not complete a handshake: \(error)")
        }
        guard initiatorKeys.sendKey == responderKeys.receiveKey, initiatorKeys.receiveKey == responderKeys.sendKey else {
            harnessFailure("the two sides of the transcript derived different session keys")
        }

        var keys = initiatorKeys
        let sender = Keypair(consuming: &keys)
        let packets: [[UInt8]] = [
            [],
            InnerPackets.ipv4(source: [10, 10, 1, 2], destination: [10, 10, 0, 1], payloadLength: 36),
            InnerPackets.ipv6(source: InnerPackets.peerIPv6, destination: InnerPackets.tenantIPv6, payloadLength: 24),
        ]
        transport = packets.map { packet in
            var out = [UInt8](repeating: 0, count: Keypair.messageLength(plaintextLength: packet.count))
            let sealed: SealedMessage? = packet.withUnsafeBytes { p in
                out.withUnsafeMutableBytes { o in
                    try? sender.seal(p.baseAddress ?? UnsafeRawPointer(o.baseAddress!), length: packet.count,
                                     into: o.baseAddress!, capacity: o.count, now: now, cipher: TransportCipher())
                }
            }
            guard let sealed, sealed.length == out.count else { harnessFailure("the initiator's keypair cannot seal") }
            return out
        }
    }
}

/// Inner IPv4/IPv6 + UDP packets for seeds and fixtures (checksums zero: nothing on the data
/// path reads them).
enum InnerPackets {
    /// Inside peer 0's AllowedIPs of the pipeline fixture (fd00:a::/64) and the tenant's side.
    static let peerIPv6: [UInt8] = [0xfd, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    static let tenantIPv6: [UInt8] = [0xfd, 0, 0, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]

    static func ipv4(source: [UInt8], destination: [UInt8], payloadLength: Int) -> [UInt8] {
        let length = 28 + payloadLength
        var p = [UInt8](repeating: 0, count: length)
        p[0] = 0x45
        p[2] = UInt8(length >> 8); p[3] = UInt8(length & 0xff)
        p[8] = 64; p[9] = 17
        p.replaceSubrange(12..<16, with: source)
        p.replaceSubrange(16..<20, with: destination)
        p[20] = 0x9c; p[21] = 0x40; p[22] = 0x13; p[23] = 0x89      // ports 40000 → 5001
        p[24] = UInt8((length - 20) >> 8); p[25] = UInt8((length - 20) & 0xff)
        for i in 28..<length { p[i] = UInt8(truncatingIfNeeded: i) }
        return p
    }

    static func ipv6(source: [UInt8], destination: [UInt8], payloadLength: Int) -> [UInt8] {
        let udpLength = 8 + payloadLength
        var p = [UInt8](repeating: 0, count: 40 + udpLength)
        p[0] = 0x60
        p[4] = UInt8(udpLength >> 8); p[5] = UInt8(udpLength & 0xff)
        p[6] = 17; p[7] = 64
        p.replaceSubrange(8..<24, with: source)
        p.replaceSubrange(24..<40, with: destination)
        p[40] = 0x9c; p[41] = 0x40; p[42] = 0x13; p[43] = 0x89
        p[44] = UInt8(udpLength >> 8); p[45] = UInt8(udpLength & 0xff)
        for i in 48..<p.count { p[i] = UInt8(truncatingIfNeeded: i) }
        return p
    }
}
