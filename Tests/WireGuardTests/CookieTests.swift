import Testing
@testable import WireGuard

/// A deterministic randomness source for the cookie checker.
final class CountingRandom: @unchecked Sendable {
    var counter: UInt8 = 0
    func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        counter &+= 1
        for i in buffer.indices { buffer[i] = counter &+ UInt8(truncatingIfNeeded: i) }
    }
}

@Suite struct CookieTests {
    static let source = SourceAddress([198, 51, 100, 7])!
    static let port: UInt16 = 51820
    static let t0 = Fixture.start

    func checker(for pair: PeerPair, random: CountingRandom = CountingRandom()) -> CookieChecker {
        CookieChecker(identity: pair.responder, random: { random.fill($0) })
    }

    func decide(_ checker: inout CookieChecker, _ bytes: [UInt8], underLoad: Bool, now: Instant,
                source: SourceAddress = source, port: UInt16 = port) throws -> CookieDecision {
        try bytes.withUnsafeBytes { b in
            checker.evaluate(try InitiationMessage(b), source: source, port: port, underLoad: underLoad, now: now)
        }
    }

    func cookieReply(_ checker: inout CookieChecker, to bytes: [UInt8], now: Instant) throws -> [UInt8] {
        try bytes.withUnsafeBytes { b in
            checker.createCookieReply(to: try InitiationMessage(b), source: Self.source, port: Self.port, now: now)
        }
    }

    @Test func labelKeysMatchPython() {
        // hashlib.blake2s(b"mac1----" + bytes.fromhex(pub)).hexdigest(), pub = the responder
        // key of noise_vectors.py; likewise "cookie--".
        let pub = PublicKey(Key32(hex: "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b")!)
        #expect(LabelKeys.mac1Key(for: pub).hex == "5c5cbbfd0c782a2539047315dc2b629f825570bc6a8686d245dd060463b85e1b")
        #expect(LabelKeys.cookieKey(for: pub).hex == "17728e626505a9a7054fda9a980a5209fb72714de5d9e476848ec7214cc83713")
    }

    @Test func mac1IsCheckedAndNoLoadMeansProcess() throws {
        let pair = PeerPair()
        var checker = checker(for: pair)
        var initiation = try pair.initiation(at: 0, now: Self.t0)
        #expect(try decide(&checker, initiation, underLoad: false, now: Self.t0) == .process)
        // No cookie yet: mac2 is zero.
        #expect(initiation[InitiationMessage.Offset.mac2...].allSatisfy { $0 == 0 })
        initiation[20] ^= 1
        #expect(try decide(&checker, initiation, underLoad: false, now: Self.t0) == .dropInvalidMAC1)
        #expect(try decide(&checker, initiation, underLoad: true, now: Self.t0) == .dropInvalidMAC1)
    }

    @Test func cookieRoundTripUnderLoad() throws {
        let pair = PeerPair()
        var checker = checker(for: pair)
        var now = Self.t0

        // Under load, an initiation without mac2 gets a cookie reply instead of processing.
        let first = try pair.initiation(at: 0, now: now)
        #expect(try decide(&checker, first, underLoad: true, now: now) == .sendCookieReply)
        let reply = try cookieReply(&checker, to: first, now: now)
        #expect(reply.count == 64 && reply[0] == 3)
        #expect(Array(reply[4..<8]) == Array(first[4..<8]))    // receiver = the initiation's sender
        #expect(MessageType.classify(reply) == .success(.cookieReply))

        // The initiator stores the cookie; its next initiation carries a valid mac2.
        now = now + .milliseconds(300)
        try pair.initiatorPeer.consumeCookieReply(reply, now: now)
        #expect(pair.initiatorPeer.cookies.hasFreshCookie(now: now))
        let second = try pair.initiation(at: 1, now: now)
        #expect(!second[InitiationMessage.Offset.mac2...].allSatisfy { $0 == 0 })
        #expect(try decide(&checker, second, underLoad: true, now: now) == .processIfRateLimiterAllows)
        var limiter = RateLimiter()
        let (decision, rate) = try second.withUnsafeBytes { b in
            checker.evaluate(try InitiationMessage(b), source: Self.source, port: Self.port, underLoad: true,
                             now: now, rateLimiter: &limiter)
        }
        #expect(decision == .processIfRateLimiterAllows && rate == .allowed)
        let peer = try pair.consume(second, now: now)
        #expect(peer === pair.responderPeer)

        // The cookie is tied to the source endpoint.
        let other = SourceAddress([198, 51, 100, 8])!
        #expect(try decide(&checker, second, underLoad: true, now: now, source: other) == .sendCookieReply)
        #expect(try decide(&checker, second, underLoad: true, now: now, port: 51821) == .sendCookieReply)
        // Not under load, mac2 does not matter.
        #expect(try decide(&checker, second, underLoad: false, now: now, source: other) == .process)
    }

    @Test func staleCookieIsNotUsed() throws {
        let pair = PeerPair()
        var checker = checker(for: pair)
        let first = try pair.initiation(at: 0, now: Self.t0)
        try pair.initiatorPeer.consumeCookieReply(try cookieReply(&checker, to: first, now: Self.t0), now: Self.t0)

        let stillFresh = try pair.initiation(at: 1, now: Self.t0 + .seconds(100))
        #expect(!stillFresh[InitiationMessage.Offset.mac2...].allSatisfy { $0 == 0 })
        #expect(pair.initiatorPeer.cookies.hasFreshCookie(now: Self.t0 + .seconds(114)))
        #expect(!pair.initiatorPeer.cookies.hasFreshCookie(now: Self.t0 + .seconds(115)))

        let stale = try pair.initiation(at: 2, now: Self.t0 + .seconds(121))
        #expect(stale[InitiationMessage.Offset.mac2...].allSatisfy { $0 == 0 })
        #expect(try decide(&checker, stale, underLoad: true, now: Self.t0 + .seconds(121)) == .sendCookieReply)
    }

    @Test func cookieSecretRotatesAfter120Seconds() throws {
        let pair = PeerPair()
        let random = CountingRandom()
        var checker = checker(for: pair, random: random)
        let c1 = checker.cookie(for: Self.source, port: Self.port, now: Self.t0)
        #expect(checker.cookie(for: Self.source, port: Self.port, now: Self.t0 + .seconds(119)) == c1)
        let c2 = checker.cookie(for: Self.source, port: Self.port, now: Self.t0 + .seconds(120))
        #expect(c2 != c1)
        // A mac2 made with a cookie from before the rotation no longer verifies.
        let first = try pair.initiation(at: 0, now: Self.t0)
        try pair.initiatorPeer.consumeCookieReply(try cookieReply(&checker, to: first, now: Self.t0 + .seconds(100)),
                                                  now: Self.t0 + .seconds(100))
        let next = try pair.initiation(at: 1, now: Self.t0 + .seconds(110))
        #expect(try decide(&checker, next, underLoad: true, now: Self.t0 + .seconds(110)) == .processIfRateLimiterAllows)
        #expect(try decide(&checker, next, underLoad: true, now: Self.t0 + .seconds(241)) == .sendCookieReply)
    }

    @Test func cookieReplyRejections() throws {
        let pair = PeerPair()
        var checker = checker(for: pair)
        let first = try pair.initiation(at: 0, now: Self.t0)
        let reply = try cookieReply(&checker, to: first, now: Self.t0)

        // Nothing sent yet by this peer object: unexpected.
        let fresh = PeerHandshake(identity: pair.initiator, remoteStatic: pair.responder.publicKey)
        #expect(throws: HandshakeError.unexpectedCookieReply) { try fresh.consumeCookieReply(reply, now: Self.t0) }

        // Tampered nonce or ciphertext.
        for offset in [CookieReplyMessage.Offset.nonce, CookieReplyMessage.Offset.encryptedCookie, 63] {
            var bad = reply
            bad[offset] ^= 1
            #expect(throws: HandshakeError.decryptionFailed) { try pair.initiatorPeer.consumeCookieReply(bad, now: Self.t0) }
        }
        // A reply to an older message (different mac1) fails.
        _ = try pair.initiation(at: 1, now: Self.t0)
        #expect(throws: HandshakeError.decryptionFailed) { try pair.initiatorPeer.consumeCookieReply(reply, now: Self.t0) }

        // A reply is accepted once per sent message.
        let third = try pair.initiation(at: 2, now: Self.t0)
        let reply3 = try cookieReply(&checker, to: third, now: Self.t0)
        try pair.initiatorPeer.consumeCookieReply(reply3, now: Self.t0)
        #expect(throws: HandshakeError.unexpectedCookieReply) { try pair.initiatorPeer.consumeCookieReply(reply3, now: Self.t0) }

        // Malformed.
        #expect(throws: HandshakeError.malformed(.tooShort)) { try pair.initiatorPeer.consumeCookieReply(Array(reply3.prefix(63)), now: Self.t0) }
        #expect(throws: HandshakeError.malformed(.wrongLength)) { try pair.initiatorPeer.consumeCookieReply(reply3 + [0], now: Self.t0) }
    }

    @Test func responsesCarryMACsAndCanBeAnsweredWithACookie() throws {
        // The initiator may be under load too: it answers our response with a cookie reply.
        let pair = PeerPair()
        _ = try pair.consume(try pair.initiation(at: 0, now: Self.t0), now: Self.t0)
        let (response, _) = try pair.responderPeer.createResponse(ephemeral: .generate(), localIndex: 77, now: Self.t0)
        var initiatorChecker = CookieChecker(identity: pair.initiator)
        try response.withUnsafeBytes { b in
            let m = try ResponseMessage(b)
            #expect(initiatorChecker.checkMAC1(m))
            #expect(initiatorChecker.evaluate(m, source: Self.source, port: Self.port, underLoad: true, now: Self.t0) == .sendCookieReply)
            let reply = initiatorChecker.createCookieReply(to: m, source: Self.source, port: Self.port, now: Self.t0)
            #expect(Array(reply[4..<8]) == [77, 0, 0, 0])
            try pair.responderPeer.consumeCookieReply(reply, now: Self.t0)
        }
        #expect(pair.responderPeer.cookies.hasFreshCookie(now: Self.t0))
    }

    @Test func cookieReplyIntoSmallBufferIsRefused() throws {
        let pair = PeerPair()
        var checker = checker(for: pair)
        let first = try pair.initiation(at: 0, now: Self.t0)
        var small = [UInt8](repeating: 0, count: 63)
        let ok = try first.withUnsafeBytes { b in
            let m = try InitiationMessage(b)
            return small.withUnsafeMutableBytes { checker.createCookieReply(to: m, source: Self.source, port: Self.port, now: Self.t0, into: $0) }
        }
        #expect(!ok)
    }
}
