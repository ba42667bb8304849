import Testing
@testable import WireGuard

@Suite struct HandshakeTests {
    // MARK: Deterministic vectors

    /// Computed independently by Vectors/noise_vectors.py (Python `cryptography` for X25519
    /// and ChaCha20-Poly1305, hashlib/hmac for BLAKE2s) from the same fixed inputs: static
    /// keys 01..20 and 21..40, ephemerals 41..60 and 61..80, PSK 81..a0, indices 0x11223344 and
    /// 0x55667788, time 1_700_000_000 s + 123_456_789 ns.
    struct Vector: Sendable, CustomTestStringConvertible {
        let usePSK: Bool
        let initiation: String
        let response: String
        let initiatorSend: String
        let initiatorReceive: String
        var testDescription: String { usePSK ? "with PSK" : "without PSK" }
    }

    static let initiationHex =
        "010000004433221164b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466158a0e4ca242d1"
        + "51ca97ab90159a98b67e616625e68b4065d357376b6598e644ad7d678c0295d22de4cb43d5135581ed36346bfa7cf4"
        + "2a182639f893ea30e4f69b47df0bf844fe3e46077e36cfec2a3fb477b40b1939665fb18e9c3f0000000000000000"
        + "0000000000000000"

    static let vectors = [
        Vector(
            usePSK: false,
            initiation: initiationHex,
            response: "020000008877665544332211244fe3b963e899dd295baffce248d3530f3a9a7479ba063002680ebfe7adad49"
                + "81d1a75866ce7861f14d75592df6b5fbb2adba16f8552d7b69f44507b7429f6600000000000000000000000000000000",
            initiatorSend: "c5f330b6dc92c8bd4124800733b33cd9d7e5dd2ac8c782e1b558f9b2b60804d8",
            initiatorReceive: "df0e53eac779a4c1ab023907c8dda549efdbf8ca9a4ce931ba1d27a2a8be73f9"),
        Vector(
            usePSK: true,
            initiation: initiationHex,
            response: "020000008877665544332211244fe3b963e899dd295baffce248d3530f3a9a7479ba063002680ebfe7adad49"
                + "ea04a6f074bad9dfc1932ed8db7820beabdcc7b16121526d437c4c7aae02680900000000000000000000000000000000",
            initiatorSend: "248a29611829aaf7ee8bc8e87df805c1019f08f82d80eb79b7625821ba0a1317",
            initiatorReceive: "848308e622b3e15e5ebc5312111efc31082e86c85e9ee93fe8c5aa7f972cc9c3"),
    ]

    @Test(arguments: vectors)
    func deterministicHandshakeMatchesPythonModel(_ v: Vector) throws {
        let psk = v.usePSK ? Fixture.presharedKey((129...160).map { UInt8($0) }) : .none
        let pair = PeerPair(initiator: Fixture.privateKey(from: 1), responder: Fixture.privateKey(from: 33), psk: psk)
        #expect(pair.initiator.publicKey.key.hex == "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c")
        #expect(pair.responder.publicKey.key.hex == "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b")
        let now = Fixture.start

        let initiation = try pair.initiatorPeer.createInitiation(
            ephemeral: Fixture.privateKey(from: 65), localIndex: 0x1122_3344,
            timestamp: TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 123_456_789), now: now)
        #expect(Hex.encode(initiation) == v.initiation)
        #expect(pair.initiatorPeer.state == .createdInitiation)

        let peer = try pair.consume(initiation, now: now)
        #expect(peer === pair.responderPeer)
        #expect(peer.state == .consumedInitiation)
        #expect(peer.remoteIndex == 0x1122_3344)

        let (response, responderKeys) = try peer.createResponse(
            ephemeral: Fixture.privateKey(from: 97), localIndex: 0x5566_7788, now: now)
        #expect(Hex.encode(response) == v.response)
        #expect(peer.state == .zeroed)

        let initiatorKeys = try pair.initiatorPeer.consumeResponse(response, now: now)
        #expect(initiatorKeys.sendKey.hex == v.initiatorSend)
        #expect(initiatorKeys.receiveKey.hex == v.initiatorReceive)
        #expect(initiatorKeys.isInitiator)
        #expect(initiatorKeys.localIndex == 0x1122_3344 && initiatorKeys.remoteIndex == 0x5566_7788)
        #expect(responderKeys.sendKey.hex == v.initiatorReceive)
        #expect(responderKeys.receiveKey.hex == v.initiatorSend)
        #expect(!responderKeys.isInitiator)
        #expect(responderKeys.localIndex == 0x5566_7788 && responderKeys.remoteIndex == 0x1122_3344)
        #expect(pair.initiatorPeer.state == .zeroed)
    }

    // MARK: Two peers in memory

    @Test(arguments: [false, true])
    func handshakeInBothDirections(usePSK: Bool) throws {
        let a = PrivateKey.generate(), b = PrivateKey.generate()
        let psk = usePSK ? PresharedKey.generate() : .none
        // A initiates to B, then B initiates to A, with the same long-lived peer objects.
        let aIdentity = StaticIdentity(privateKey: a), bIdentity = StaticIdentity(privateKey: b)
        let aPeerB = PeerHandshake(identity: aIdentity, remoteStatic: bIdentity.publicKey, presharedKey: psk)
        let bPeerA = PeerHandshake(identity: bIdentity, remoteStatic: aIdentity.publicKey, presharedKey: psk)
        var now = Fixture.start

        for (initiator, responderIdentity, responder, second) in [
            (aPeerB, bIdentity, bPeerA, UInt64(0)), (bPeerA, aIdentity, aPeerB, 1), (aPeerB, bIdentity, bPeerA, 2),
        ] {
            let initiation = try initiator.createInitiation(
                ephemeral: .generate(), localIndex: UInt32(100 + second), timestamp: Fixture.time(second), now: now)
            let found = try responderIdentity.consumeInitiation(initiation, now: now) {
                $0 == initiator.identity.publicKey ? responder : nil
            }
            #expect(found === responder)
            let (response, rKeys) = try responder.createResponse(ephemeral: .generate(), localIndex: UInt32(200 + second), now: now)
            let iKeys = try initiator.consumeResponse(response, now: now)
            #expect(iKeys.sendKey == rKeys.receiveKey)
            #expect(iKeys.receiveKey == rKeys.sendKey)
            #expect(iKeys.sendKey != iKeys.receiveKey)
            #expect(iKeys.localIndex == rKeys.remoteIndex && iKeys.remoteIndex == rKeys.localIndex)
            #expect(iKeys.isInitiator && !rKeys.isInitiator)
            #expect(iKeys.createdAt == now)
            now = now + .seconds(1)
        }
    }

    @Test func mismatchedPresharedKeyFailsAtResponse() throws {
        let pair = PeerPair()
        pair.responderPeer.setPresharedKey(.generate())
        let now = Fixture.start
        _ = try pair.consume(try pair.initiation(at: 0, now: now), now: now)
        let (response, _) = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 9, now: now)
        #expect(throws: HandshakeError.decryptionFailed) { try pair.initiatorPeer.consumeResponse(response, now: now) }
    }

    @Test func writesIntoCallerBuffer() throws {
        let pair = PeerPair()
        let now = Fixture.start
        var big = [UInt8](repeating: 0xEE, count: 200)
        try big.withUnsafeMutableBytes { b in
            try pair.initiatorPeer.createInitiation(ephemeral: .generate(), localIndex: 1, timestamp: Fixture.time(0), now: now, into: b)
        }
        #expect(big[148...].allSatisfy { $0 == 0xEE })
        let peer = try pair.consume(Array(big[0..<148]), now: now)
        var small = [UInt8](repeating: 0, count: 91)
        #expect(throws: HandshakeError.bufferTooSmall) {
            try small.withUnsafeMutableBytes { b in
                _ = try peer.createResponse(ephemeral: .generate(), localIndex: 2, now: now, into: b)
            }
        }
        #expect(peer.state == .consumedInitiation)
        #expect(throws: HandshakeError.bufferTooSmall) {
            try small.withUnsafeMutableBytes { b in
                try pair.initiatorPeer.createInitiation(ephemeral: .generate(), localIndex: 1, timestamp: Fixture.time(0), now: now, into: b)
            }
        }
    }

    // MARK: Initiation rejections

    @Test func badMAC1IsRejected() throws {
        let pair = PeerPair()
        var initiation = try pair.initiation(at: 0, now: Fixture.start)
        initiation[InitiationMessage.Offset.mac1] ^= 1
        #expect(throws: HandshakeError.invalidMAC1) { try pair.consume(initiation, now: Fixture.start) }
        // Any altered byte before mac1 also breaks it.
        initiation[InitiationMessage.Offset.mac1] ^= 1
        initiation[InitiationMessage.Offset.sender] ^= 1
        #expect(throws: HandshakeError.invalidMAC1) { try pair.consume(initiation, now: Fixture.start) }
        // A message MACed for someone else.
        let other = PeerPair()
        let foreign = try other.initiation(at: 0, now: Fixture.start)
        #expect(throws: HandshakeError.invalidMAC1) { try pair.consume(foreign, now: Fixture.start) }
        #expect(pair.responderPeer.state == .zeroed)
    }

    @Test(arguments: [InitiationMessage.Offset.encryptedStatic, InitiationMessage.Offset.encryptedStatic + 40,
                      InitiationMessage.Offset.encryptedTimestamp, InitiationMessage.Offset.encryptedTimestamp + 20,
                      InitiationMessage.Offset.ephemeral + 3])
    func tamperedInitiationFailsDecryption(offset: Int) throws {
        let pair = PeerPair()
        var initiation = try pair.initiation(at: 0, now: Fixture.start)
        initiation[offset] ^= 0x80
        resealMAC1(&initiation, receiver: pair.responder.publicKey)
        #expect(throws: HandshakeError.decryptionFailed) { try pair.consume(initiation, now: Fixture.start) }
        #expect(pair.responderPeer.state == .zeroed)
        #expect(pair.responderPeer.latestTimestamp == .zero)
    }

    @Test func unknownPeerIsRejected() throws {
        let pair = PeerPair()
        let initiation = try pair.initiation(at: 0, now: Fixture.start)
        #expect(throws: HandshakeError.unknownPeer) {
            try pair.responder.consumeInitiation(initiation, now: Fixture.start) { _ in nil }
        }
    }

    @Test func replayedInitiationIsRejected() throws {
        let pair = PeerPair()
        let initiation = try pair.initiation(at: 0, now: Fixture.start)
        _ = try pair.consume(initiation, now: Fixture.start)
        #expect(throws: HandshakeError.replayedTimestamp) {
            try pair.consume(initiation, now: Fixture.start + .seconds(1))
        }
        // Same timestamp in a fresh initiation is a replay too.
        let again = try pair.initiation(at: 0, now: Fixture.start + .seconds(2))
        #expect(throws: HandshakeError.replayedTimestamp) { try pair.consume(again, now: Fixture.start + .seconds(2)) }
    }

    @Test func olderTimestampIsRejected() throws {
        let pair = PeerPair()
        let older = try pair.initiation(at: 10, now: Fixture.start)
        let newer = try pair.initiation(at: 11, now: Fixture.start)
        _ = try pair.consume(newer, now: Fixture.start)
        #expect(throws: HandshakeError.replayedTimestamp) { try pair.consume(older, now: Fixture.start + .seconds(1)) }
        #expect(pair.responderPeer.latestTimestamp == Fixture.time(11))
    }

    @Test func initiationFloodIsRejected() throws {
        let pair = PeerPair()
        let t0 = Fixture.start
        _ = try pair.consume(try pair.initiation(at: 0, now: t0), now: t0)
        let second = try pair.initiation(at: 1, now: t0)
        #expect(throws: HandshakeError.floodedInitiations) { try pair.consume(second, now: t0 + .milliseconds(19)) }
        // A rejected initiation does not move the window; 20 ms after the accepted one is fine.
        _ = try pair.consume(second, now: t0 + .milliseconds(20))
        let third = try pair.initiation(at: 2, now: t0)
        #expect(throws: HandshakeError.floodedInitiations) { try pair.consume(third, now: t0 + .milliseconds(39)) }
        _ = try pair.consume(third, now: t0 + .milliseconds(40))
    }

    @Test(arguments: [
        // Low-order points of Curve25519: 0, 1, and a point of order 8.
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    ])
    func lowOrderEphemeralIsRejected(pointHex: String) throws {
        let pair = PeerPair()
        var initiation = try pair.initiation(at: 0, now: Fixture.start)
        initiation.replaceSubrange(InitiationMessage.Offset.ephemeral..<InitiationMessage.Offset.ephemeral + 32,
                                   with: Hex.decode(pointHex))
        resealMAC1(&initiation, receiver: pair.responder.publicKey)
        #expect(throws: HandshakeError.lowOrderPoint) { try pair.consume(initiation, now: Fixture.start) }
    }

    @Test func lowOrderPeerStaticKeyCannotHandshake() throws {
        let me = StaticIdentity(privateKey: .generate())
        let peer = PeerHandshake(identity: me, remoteStatic: PublicKey(.zero))
        #expect(throws: HandshakeError.lowOrderPoint) {
            try peer.createInitiation(ephemeral: .generate(), localIndex: 1, timestamp: Fixture.time(0), now: Fixture.start)
        }
    }

    @Test(arguments: [0, 1, 4, 147, 149, 300])
    func malformedInitiationLengths(length: Int) throws {
        let pair = PeerPair()
        let good = try pair.initiation(at: 0, now: Fixture.start)
        var bytes = Array(good.prefix(length))
        if length > good.count { bytes += [UInt8](repeating: 0, count: length - good.count) }
        let expected: MessageError = length < 4 || length < 148 ? .tooShort : .wrongLength
        #expect(throws: HandshakeError.malformed(expected)) { try pair.consume(bytes, now: Fixture.start) }
    }

    @Test func wrongMessageTypeIsMalformed() throws {
        let pair = PeerPair()
        var bytes = try pair.initiation(at: 0, now: Fixture.start)
        bytes[0] = 2
        #expect(throws: HandshakeError.malformed(.unexpectedType)) { try pair.consume(bytes, now: Fixture.start) }
        bytes[0] = 1
        bytes[2] = 1
        #expect(throws: HandshakeError.malformed(.reservedNotZero)) { try pair.consume(bytes, now: Fixture.start) }
    }

    // MARK: Response rejections

    /// An initiation consumed by the responder, and its response (not yet consumed).
    func respondedPair() throws -> (PeerPair, [UInt8]) {
        let pair = PeerPair()
        let now = Fixture.start
        _ = try pair.consume(try pair.initiation(at: 0, now: now), now: now)
        let (response, _) = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 0xABCD, now: now)
        return (pair, response)
    }

    @Test func responseWithoutInitiationIsRejected() throws {
        let (pair, response) = try respondedPair()
        let stranger = PeerHandshake(identity: pair.initiator, remoteStatic: pair.responder.publicKey)
        #expect(throws: HandshakeError.wrongState) { try stranger.consumeResponse(response, now: Fixture.start) }
    }

    @Test func responseAfterAbandonedInitiationIsRejected() throws {
        let (pair, response) = try respondedPair()
        pair.initiatorPeer.reset()
        #expect(throws: HandshakeError.wrongState) { try pair.initiatorPeer.consumeResponse(response, now: Fixture.start) }
    }

    @Test func responseWithWrongReceiverIndexIsRejected() throws {
        let (pair, response) = try respondedPair()
        var altered = response
        altered[ResponseMessage.Offset.receiver] ^= 0x5A
        resealMAC1(&altered, receiver: pair.initiator.publicKey)
        #expect(throws: HandshakeError.unknownIndex) { try pair.initiatorPeer.consumeResponse(altered, now: Fixture.start) }
        // The genuine response still completes the handshake.
        _ = try pair.initiatorPeer.consumeResponse(response, now: Fixture.start)
    }

    @Test func responseConsumedTwiceIsRejected() throws {
        let (pair, response) = try respondedPair()
        _ = try pair.initiatorPeer.consumeResponse(response, now: Fixture.start)
        #expect(throws: HandshakeError.wrongState) { try pair.initiatorPeer.consumeResponse(response, now: Fixture.start) }
    }

    @Test func responseToAnOlderInitiationIsRejected() throws {
        let (pair, response) = try respondedPair()
        // A new initiation replaces the one the response answers.
        _ = try pair.initiation(at: 5, now: Fixture.start)
        #expect(throws: HandshakeError.unknownIndex) { try pair.initiatorPeer.consumeResponse(response, now: Fixture.start) }
    }

    @Test(arguments: [ResponseMessage.Offset.encryptedNothing, ResponseMessage.Offset.encryptedNothing + 15,
                      ResponseMessage.Offset.ephemeral + 7, ResponseMessage.Offset.sender])
    func tamperedResponseIsRejectedAndHandshakeSurvives(offset: Int) throws {
        let (pair, response) = try respondedPair()
        var altered = response
        altered[offset] ^= 0x01
        #expect(throws: HandshakeError.invalidMAC1) { try pair.initiatorPeer.consumeResponse(altered, now: Fixture.start) }
        resealMAC1(&altered, receiver: pair.initiator.publicKey)
        if offset == ResponseMessage.Offset.sender {
            // The sender index is not authenticated by Noise (only by mac1): it is accepted.
            let keys = try pair.initiatorPeer.consumeResponse(altered, now: Fixture.start)
            #expect(keys.remoteIndex == 0xABCD ^ 0x01)
        } else {
            #expect(throws: HandshakeError.decryptionFailed) { try pair.initiatorPeer.consumeResponse(altered, now: Fixture.start) }
            #expect(pair.initiatorPeer.state == .createdInitiation)
            _ = try pair.initiatorPeer.consumeResponse(response, now: Fixture.start)
        }
    }

    @Test func lowOrderResponderEphemeralIsRejected() throws {
        let (pair, response) = try respondedPair()
        var altered = response
        altered.replaceSubrange(ResponseMessage.Offset.ephemeral..<ResponseMessage.Offset.ephemeral + 32,
                                with: [UInt8](repeating: 0, count: 32))
        resealMAC1(&altered, receiver: pair.initiator.publicKey)
        #expect(throws: HandshakeError.lowOrderPoint) { try pair.initiatorPeer.consumeResponse(altered, now: Fixture.start) }
    }

    @Test(arguments: [0, 91, 93])
    func malformedResponseLengths(length: Int) throws {
        let (pair, response) = try respondedPair()
        var bytes = Array(response.prefix(length))
        if length > response.count { bytes.append(0) }
        #expect(throws: HandshakeError.malformed(length < 92 ? .tooShort : .wrongLength)) {
            try pair.initiatorPeer.consumeResponse(bytes, now: Fixture.start)
        }
    }

    @Test func responseWithoutConsumedInitiationCannotBeCreated() throws {
        let pair = PeerPair()
        #expect(throws: HandshakeError.wrongState) {
            _ = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 1, now: Fixture.start)
        }
        // And only once per consumed initiation.
        _ = try pair.consume(try pair.initiation(at: 0, now: Fixture.start), now: Fixture.start)
        _ = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 1, now: Fixture.start)
        #expect(throws: HandshakeError.wrongState) {
            _ = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 2, now: Fixture.start)
        }
    }
}

/// The AEAD nonce: 4 zero bytes then the little-endian 64-bit counter. Expected values:
///   ChaCha20Poly1305(bytes(range(32))).encrypt(b"\0"*4 + struct.pack("<Q", c), b"hello wireguard!", b"")
@Suite struct HandshakeAEADNonceTests {
    static let key = Key32(bytes: (0..<32).map { UInt8($0) })!
    static let plaintext = Array("hello wireguard!".utf8)

    @Test func handshakeSealUsesTheZeroNonce() {
        var out = [UInt8](repeating: 0, count: 32)
        // Noise.seal authenticates a 32-byte hash: AD = 32 × 0x07 (same key and plaintext,
        // nonce = 12 zero bytes, in Python).
        let ad = Key32(bytes: [UInt8](repeating: 7, count: 32))!
        Self.plaintext.withUnsafeBytes { p in
            out.withUnsafeMutableBytes { o in Noise.seal(Self.key, p.baseAddress!, 16, o.baseAddress!, ad: ad) }
        }
        #expect(Hex.encode(out) == "70dd2e5dc2c6d1b861043b14ce312a0689fd408dc1d21f1abb96de18b775e356")
        var back = [UInt8](repeating: 0, count: 16)
        let ok = out.withUnsafeBytes { c in back.withUnsafeMutableBytes { Noise.open(Self.key, c, $0.baseAddress!, ad: ad) } }
        #expect(ok && back == Self.plaintext)
        let bad = out.withUnsafeBytes { c in back.withUnsafeMutableBytes { Noise.open(Self.key, c, $0.baseAddress!, ad: .zero) } }
        #expect(!bad)
        // Too short to hold a tag: rejected, no trap.
        let short = out.withUnsafeBytes { c in
            back.withUnsafeMutableBytes { Noise.open(Self.key, UnsafeRawBufferPointer(rebasing: c[0..<15]), $0.baseAddress!, ad: ad) }
        }
        #expect(!short)
    }

    /// A counter above 2^32 reaches the nonce whole (vector from pyca/cryptography): guards
    /// against a padded nonce layout, which would drop the counter's high half.
    @Test func sharedAEADWrapperNonceForLargeCounter() {
        var out = [UInt8](repeating: 0, count: 32)
        Self.key.withUnsafeBytes { k in
            Self.plaintext.withUnsafeBytes { p in
                out.withUnsafeMutableBytes { o in
                    AEAD.seal(key: k.baseAddress!, counter: (1 << 32) + 5, source: p.baseAddress!, length: 16,
                              destination: o.baseAddress!)
                }
            }
        }
        #expect(Hex.encode(out) == "62058661f5520ff7a7c8b0a450d2232eb5204d7fcbb4caa31a2d8680a159d310")
    }
}

/// Random well-framed handshake messages with a correct mac1 (so they reach the DH and AEAD
/// steps): every one is rejected with a named error, none traps or changes peer state.
@Suite struct HandshakeFuzzTests {
    @Test func randomInitiationsAreRejected() throws {
        let pair = PeerPair()
        var rng = SplitMix64(seed: 1)
        for i in 0..<200 {
            var bytes = (0..<148).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes.replaceSubrange(0..<4, with: [1, 0, 0, 0])
            if i % 4 == 0 { bytes.replaceSubrange(8..<40, with: [UInt8](repeating: 0, count: 32)) }
            resealMAC1(&bytes, receiver: pair.responder.publicKey)
            #expect(throws: HandshakeError.self) { try pair.consume(bytes, now: Fixture.start) }
        }
        #expect(pair.responderPeer.state == .zeroed)
        #expect(pair.responderPeer.latestTimestamp == .zero)
    }

    @Test func randomResponsesAreRejected() throws {
        let pair = PeerPair()
        _ = try pair.initiation(at: 0, now: Fixture.start)
        let index = pair.initiatorPeer.localIndex
        var rng = SplitMix64(seed: 2)
        for _ in 0..<200 {
            var bytes = (0..<92).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes.replaceSubrange(0..<4, with: [2, 0, 0, 0])
            withUnsafeBytes(of: index.littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
            resealMAC1(&bytes, receiver: pair.initiator.publicKey)
            #expect(throws: HandshakeError.self) { try pair.initiatorPeer.consumeResponse(bytes, now: Fixture.start) }
        }
        #expect(pair.initiatorPeer.state == .createdInitiation)
    }
}
