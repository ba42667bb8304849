// Targets `handshakeInitiation`, `handshakeResponse` and `handshakeCookie`: the handshake
// messages as the control plane handles them (ControlPlane.handleHandshake): the cookie and
// rate-limit gate, then the Noise responder (a peer's `Session` answers) or initiator of the
// protocol core.
//
// The fuzzer cannot compute a MAC, so a flag in the control byte lets the harness write a
// valid mac1 (and mac2, with a cookie the sender really got) over the mutated body: mutations
// then reach the decryption and the state machine, not only the MAC check.

import WireGuard

/// The gate in front of every handshake message (ControlPlane.admit): mac1, then under load
/// mac2 or a cookie reply, and the per-source rate limiter.
struct HandshakeGate {
    let checker: CookieChecker
    let reply = Scratch(CookieReplyMessage.size)

    /// What the gate did with `message`: nil when the message goes on to the handshake.
    /// `sender` is the generator that wrote the message's MACs, when the harness wrote them:
    /// a cookie reply is then checked end to end (the sender accepts it, and its next mac2
    /// passes). `exhausted` spends the source's burst first.
    func admit(_ message: some MACProtectedMessage, writable: UnsafeMutableRawBufferPointer, underLoad: Bool,
               exhausted: Bool, sender: CookieGenerator?) -> FuzzResult? {
        var checker = self.checker
        var limiter = RateLimiter()
        let now = FuzzClock.now
        if exhausted {
            for _ in 0..<WireGuardProtocol.rateLimitBurst { _ = limiter.allow(FuzzClock.source, now: now) }
        }
        let (decision, limit) = checker.evaluate(message, source: FuzzClock.source, port: FuzzClock.port,
                                                 underLoad: underLoad, now: now, rateLimiter: &limiter)
        switch decision {
        case .process:
            return nil
        case .dropInvalidMAC1:
            return .rejected("invalid mac1")
        case .processIfRateLimiterAllows:
            if limit == .allowed { return nil }
            guard exhausted else { finding("a fresh source was rate limited (\(String(describing: limit)))") }
            return .rejected("rate limited")
        case .sendCookieReply:
            guard checker.createCookieReply(to: message, source: FuzzClock.source, port: FuzzClock.port, now: now,
                                            into: reply.buffer)
            else { finding("createCookieReply refused a 64-byte buffer") }
            guard var sender else { return .accepted("cookie reply") }
            // The sender must take the reply, and its next message must then pass mac2.
            do throws(HandshakeError) {
                let parsed: CookieReplyMessage
                do { parsed = try CookieReplyMessage(UnsafeRawBufferPointer(reply.buffer)) } catch { throw .malformed(error) }
                try sender.consumeCookieReply(parsed, now: now)
            } catch {
                finding("the sender refused the cookie reply to its own message: \(error)")
            }
            sender.addMACs(to: writable, now: now)
            guard checker.checkMAC2(message, source: FuzzClock.source, port: FuzzClock.port, now: now) else {
                finding("a message carrying the cookie just received fails mac2")
            }
            return .accepted("cookie reply, taken by the sender")
        }
    }
}

/// A responder that always answers with the transcript's index (no table of its own).
struct FixedIndexHost: SessionHost {
    let index: UInt32
    func allocateIndex() -> UInt32? { index }
    func releaseIndex(_ index: UInt32) {}
    func keypairsChanged(installed: Keypair?, dropped: DroppedKeypairs) {}
    func stagedPacketsExpired(_ count: Int) {}
}

/// `generator` takes `reply`, a cookie reply to the last message it wrote MACs for; false
/// when it refuses it.
func takeCookie(_ generator: inout CookieGenerator, _ reply: [UInt8]) -> Bool {
    reply.withUnsafeBytes { b in
        guard let parsed = try? CookieReplyMessage(b) else { return false }
        do throws(HandshakeError) {
            try generator.consumeCookieReply(parsed, now: FuzzClock.now)
            return true
        } catch {
            return false
        }
    }
}

/// `handshakeInitiation`. Control byte: `Flag` bits; the rest is the message, or with
/// `constructed` the fields of a genuine initiation the harness builds.
final class InitiationHarness {
    nonisolated(unsafe) static let shared = InitiationHarness()

    enum Flag {
        /// Write a valid mac1 over the body (when it is 148 bytes).
        static let validMAC1: UInt8 = 0x01
        /// Write mac1 and a valid mac2 (the initiator holds a cookie for our source).
        static let validMAC2: UInt8 = 0x02
        /// The responder is under load: no valid mac2, a cookie reply.
        static let underLoad: UInt8 = 0x04
        /// The source spent its burst already (with a valid mac2 under load: rate limited).
        static let exhaustedSource: UInt8 = 0x08
        /// Build a genuine initiation from the body's fields and consume it, then replay it,
        /// then a newer one after a delay: the timestamp and flood rules.
        static let constructed: UInt8 = 0x10
    }

    let transcript = Transcript.shared
    let gate: HandshakeGate
    /// The responder's peers, as the gateway holds them (a `Session` each): rebuilt after
    /// every accepted initiation.
    var peers: [Session]
    /// The initiator's generators towards the responder: without, and with, a cookie.
    let plainMACs: CookieGenerator
    let cookieMACs: CookieGenerator
    /// Initiators for constructed initiations: peer A, peer B, a stranger.
    let senders: [PeerHandshake]
    let message = Scratch(FuzzTarget.maxPacketInput)
    let response = Scratch(ResponseMessage.size)
    let sealed = Scratch(WireGuardProtocol.keepaliveSize)
    let opened = Scratch(64)

    private init() {
        gate = HandshakeGate(checker: transcript.responderCookies)
        peers = Self.makeResponderSessions()
        plainMACs = CookieGenerator(peer: FuzzKeys.responder.publicKey)
        var withCookie = CookieGenerator(peer: FuzzKeys.responder.publicKey)
        var initiation = transcript.initiation
        initiation.withUnsafeMutableBytes { withCookie.addMACs(to: $0, now: FuzzClock.now) }
        guard takeCookie(&withCookie, transcript.cookieReply) else { harnessFailure("the transcript's cookie reply is refused") }
        cookieMACs = withCookie
        let responder = FuzzKeys.responder.publicKey
        senders = [
            PeerHandshake(identity: Transcript.initiatorIdentity, remoteStatic: responder, presharedKey: FuzzKeys.presharedKey()),
            PeerHandshake(identity: StaticIdentity(privateKey: FuzzKeys.otherPeer), remoteStatic: responder),
            PeerHandshake(identity: StaticIdentity(privateKey: FuzzKeys.stranger), remoteStatic: responder),
        ]
    }

    func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let input = ControlledInput(input)
        if input.control & Flag.constructed != 0 { return runConstructed(input.body) }
        let m = message.load(input.body)
        var sender: CookieGenerator?
        if input.control & (Flag.validMAC1 | Flag.validMAC2) != 0 && m.count == InitiationMessage.size {
            var g = input.control & Flag.validMAC2 != 0 ? cookieMACs : plainMACs
            g.addMACs(to: m, now: FuzzClock.now)
            sender = g
        }
        let parsed: InitiationMessage
        do { parsed = try InitiationMessage(UnsafeRawBufferPointer(m)) } catch { return .rejected("malformed: \(error)") }
        if let done = gate.admit(parsed, writable: m, underLoad: input.control & Flag.underLoad != 0,
                                 exhausted: input.control & Flag.exhaustedSource != 0, sender: sender) {
            return done
        }
        return consume(parsed)
    }

    /// The responder's peers A and B as sessions whose ephemeral key is always
    /// `FuzzKeys.responderEphemeral` (their "random" bytes are its 32 copies of 0x66).
    static func makeResponderSessions() -> [Session] {
        Transcript.makeResponderPeers().map { handshake in
            Session(handshake: handshake, random: { buffer in
                for i in buffer.indices { buffer[i] = 0x66 }
            })
        }
    }

    /// The tenant's identity matches an admitted initiation to a peer, whose session answers
    /// it (ControlPlane's initiation case). `rebuild`: make the peers afresh after an
    /// acceptance (constructed runs rebuild at their end).
    private func consume(_ message: InitiationMessage, now: Instant = FuzzClock.now, rebuild: Bool = true) -> FuzzResult {
        let session: Session
        do throws(HandshakeError) {
            let peer = try Transcript.responderIdentity.consumeInitiation(message, now: now) { key in
                self.peers.first { $0.handshake.remoteStatic == key }?.handshake
            }
            guard let found = peers.first(where: { $0.handshake === peer }) else {
                harnessFailure("consumeInitiation returned a handshake of no session")
            }
            session = found
        } catch {
            return .rejected("\(error)")
        }
        defer { if rebuild { peers = Self.makeResponderSessions() } }
        let output = session.respond(now: now, into: response.buffer, host: FixedIndexHost(index: Transcript.responderIndex))
        guard output == .writeToNetwork(ResponseMessage.size), let keypair = session.slots.next else {
            finding("the responder accepted an initiation but cannot answer it: \(output)")
        }
        // Only the sender index and the MACs of the transcript's initiation are not
        // authenticated: an accepted initiation with its ephemeral gives its session keys.
        if session.handshake.remoteStatic == FuzzKeys.initiator.publicKey
            && message.ephemeral == FuzzKeys.initiatorEphemeral.publicKey {
            guard holdsTranscriptKeys(keypair, now: now) else {
                finding("the transcript's initiation accepted with different session keys")
            }
            return .accepted("response to the transcript's initiation, same session keys")
        }
        return .accepted("response")
    }

    /// Whether the responder's `keypair` has the transcript's session keys: it opens the
    /// initiator's first transport message (its receive key), and the initiator's keys open a
    /// keepalive it seals (its send key). `now`: when the keypair was made (a constructed run
    /// accepts a second initiation up to 65 s after the first; its keypair is that young).
    private func holdsTranscriptKeys(_ keypair: Keypair, now: Instant) -> Bool {
        let cipher = TransportCipher()
        let first = transcript.transport[0]
        let received: Int? = first.withUnsafeBytes { m in
            try? keypair.open(m.baseAddress!, length: m.count, into: opened.buffer.baseAddress!,
                              capacity: opened.buffer.count, now: now, cipher: cipher)
        }
        guard received != nil else { return false }
        guard let message = try? keypair.seal(sealed.buffer.baseAddress!, length: 0, into: sealed.buffer.baseAddress!,
                                              capacity: sealed.buffer.count, now: now, cipher: cipher)
        else { return false }
        // The keepalive is addressed to the sender index the initiation carried, which is not
        // authenticated (a constructed run picks its own); the initiator's keypair answers to
        // the transcript's. The header is outside the AEAD: readdress it.
        sealed.buffer.storeBytes(of: Transcript.initiatorIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        var keys = transcript.initiatorKeys
        let initiator = Keypair(consuming: &keys)
        let back = try? initiator.open(sealed.buffer.baseAddress!, length: message.length,
                                       into: opened.buffer.baseAddress!, capacity: opened.buffer.count,
                                       now: now, cipher: cipher)
        return back != nil
    }

    /// Body: sender (0 peer A, 1 peer B, 2 a stranger), ephemeral private key (32), timestamp
    /// (12), sender index (4), delay before the replay and the next initiation in ms (2, LE);
    /// missing bytes are zero.
    private func runConstructed(_ body: UnsafeRawBufferPointer) -> FuzzResult {
        var fields = [UInt8](repeating: 0, count: 51)
        for (i, b) in body.prefix(fields.count).enumerated() { fields[i] = b }
        let which = Int(fields[0] % 3)
        let sender = senders[which]
        guard var raw = Key32(bytes: fields[1..<33]) else { harnessFailure("Key32 refused 32 bytes") }
        let ephemeral = PrivateKey(consuming: &raw)
        guard let timestamp = TAI64N(bytes: Array(fields[33..<45])) else { harnessFailure("TAI64N refused 12 bytes") }
        let index = UInt32(fields[45]) | UInt32(fields[46]) << 8 | UInt32(fields[47]) << 16 | UInt32(fields[48]) << 24
        let delay = Duration.milliseconds(Int(fields[49]) | Int(fields[50]) << 8)

        func initiate(_ stamp: TAI64N) -> InitiationMessage {
            do throws(HandshakeError) {
                try sender.createInitiation(ephemeral: ephemeral, localIndex: index, timestamp: stamp,
                                            now: FuzzClock.now, into: message.buffer)
            } catch {
                harnessFailure("a constructed initiation failed: \(error)")
            }
            guard let m = try? InitiationMessage(UnsafeRawBufferPointer(rebasing: message.buffer[..<InitiationMessage.size]))
            else { harnessFailure("a constructed initiation does not parse") }
            return m
        }

        defer { peers = Self.makeResponderSessions() }
        let initiation = initiate(timestamp)
        let first = consume(initiation, rebuild: false)
        let expectAccepted = which != 2 && timestamp > .zero
        guard first.isAccepted == expectAccepted else {
            finding("constructed initiation from sender \(which), timestamp \(timestamp.bytes): \(first)")
        }
        guard expectAccepted else { return first }
        // The same bytes again, later: a replay, whatever the delay.
        let replay = consume(initiation, now: FuzzClock.now + delay, rebuild: false)
        guard replay == .rejected("\(HandshakeError.replayedTimestamp)") else {
            finding("a replayed initiation \(delay) later: \(replay)")
        }
        // A newer timestamp is accepted only once the flood interval has passed.
        guard timestamp.seconds < UInt64.max else { return .accepted("first accepted, replay refused") }
        let newer = TAI64N(label: timestamp.seconds + 1, nanoseconds: timestamp.nanoseconds)
        let next = consume(initiate(newer), now: FuzzClock.now + delay, rebuild: false)
        let expectNext = delay >= PeerHandshake.minimumInitiationInterval
        guard next.isAccepted == expectNext,
              expectNext || next == .rejected("\(HandshakeError.floodedInitiations)") else {
            finding("a newer initiation \(delay) after an accepted one: \(next)")
        }
        return .accepted("first accepted, replay refused, newer \(expectNext ? "accepted" : "refused as a flood")")
    }
}

/// `handshakeResponse`: the initiator (waiting with the transcript's initiation) consumes the
/// body as a response. Control byte: `Flag` bits.
final class ResponseHarness {
    nonisolated(unsafe) static let shared = ResponseHarness()

    enum Flag {
        /// Write a valid mac1 over the body (when it is 92 bytes).
        static let validMAC1: UInt8 = 0x01
        /// Write mac1 and a valid mac2 (the responder holds a cookie from the initiator).
        static let validMAC2: UInt8 = 0x02
        /// The initiator is under load: without a valid mac2, a cookie reply.
        static let underLoad: UInt8 = 0x04
    }

    let transcript = Transcript.shared
    let gate: HandshakeGate
    /// The initiator, in the state right after sending: rebuilt after every accepted response.
    var initiator: PeerHandshake
    /// The responder's generators towards the initiator: without, and with, a cookie.
    let plainMACs: CookieGenerator
    let cookieMACs: CookieGenerator
    let message = Scratch(FuzzTarget.maxPacketInput)

    private init() {
        let checker = makeCookieChecker(identity: Transcript.initiatorIdentity, seed: 0x1A)
        gate = HandshakeGate(checker: checker)
        initiator = Transcript.makeInitiator()
        plainMACs = CookieGenerator(peer: FuzzKeys.initiator.publicKey)
        // The responder gets a cookie from the initiator's checker for the transcript's response.
        var withCookie = CookieGenerator(peer: FuzzKeys.initiator.publicKey)
        var response = transcript.response
        var replyChecker = checker
        let reply: [UInt8] = response.withUnsafeMutableBytes { b in
            withCookie.addMACs(to: b, now: FuzzClock.now)
            guard let m = try? ResponseMessage(UnsafeRawBufferPointer(b)) else { harnessFailure("the transcript's response does not parse") }
            return replyChecker.createCookieReply(to: m, source: FuzzClock.source, port: FuzzClock.port, now: FuzzClock.now)
        }
        guard takeCookie(&withCookie, reply) else { harnessFailure("the initiator's cookie reply is refused") }
        cookieMACs = withCookie
    }

    func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let input = ControlledInput(input)
        let m = message.load(input.body)
        var sender: CookieGenerator?
        if input.control & (Flag.validMAC1 | Flag.validMAC2) != 0 && m.count == ResponseMessage.size {
            var g = input.control & Flag.validMAC2 != 0 ? cookieMACs : plainMACs
            g.addMACs(to: m, now: FuzzClock.now)
            sender = g
        }
        let parsed: ResponseMessage
        do { parsed = try ResponseMessage(UnsafeRawBufferPointer(m)) } catch { return .rejected("malformed: \(error)") }
        if let done = gate.admit(parsed, writable: m, underLoad: input.control & Flag.underLoad != 0,
                                 exhausted: false, sender: sender) {
            return done
        }
        let keys: SessionKeys
        do throws(HandshakeError) {
            keys = try initiator.consumeResponse(parsed, now: FuzzClock.now)
        } catch {
            guard initiator.state == .createdInitiation else {
                finding("a refused response (\(error)) changed the initiator's state to \(initiator.state)")
            }
            return .rejected("\(error)")
        }
        initiator = Transcript.makeInitiator()
        // Only the sender index and MACs of a response are unauthenticated: any accepted
        // response gives the transcript's keys.
        guard keys.sendKey == transcript.initiatorKeys.sendKey, keys.receiveKey == transcript.initiatorKeys.receiveKey,
              keys.isInitiator else {
            finding("an accepted response gave session keys other than the transcript's")
        }
        return .accepted("session keys of the transcript")
    }
}

/// `handshakeCookie`: the initiator (waiting with the transcript's initiation) consumes the
/// body as a cookie reply. Control byte: bit 0 writes the initiation's index as the receiver.
final class CookieHarness {
    nonisolated(unsafe) static let shared = CookieHarness()

    let transcript = Transcript.shared
    /// Rebuilt after every accepted reply (it then holds a cookie).
    var initiator: PeerHandshake
    let message = Scratch(FuzzTarget.maxPacketInput)
    let initiation = Scratch(InitiationMessage.size)

    private init() { initiator = Transcript.makeInitiator() }

    func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let input = ControlledInput(input)
        let m = message.load(input.body)
        if input.control & 1 != 0 && m.count >= 8 {
            m.storeBytes(of: Transcript.initiatorIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        }
        let reply: CookieReplyMessage
        do { reply = try CookieReplyMessage(UnsafeRawBufferPointer(m)) } catch { return .rejected("malformed: \(error)") }
        // The control plane finds the handshake by the receiver index.
        guard reply.receiverIndex == Transcript.initiatorIndex else { return .rejected("cookie reply to no initiation") }
        do throws(HandshakeError) {
            try initiator.consumeCookieReply(reply, now: FuzzClock.now)
        } catch {
            return .rejected("\(error)")
        }
        // The cookie is authenticated: the initiator's next initiation must pass mac2 under load.
        let holder = initiator
        initiator = Transcript.makeInitiator()
        Transcript.sendInitiation(holder, into: initiation.buffer)
        var checker = transcript.responderCookies
        guard let next = try? InitiationMessage(UnsafeRawBufferPointer(initiation.buffer)) else {
            finding("the initiator's next initiation does not parse")
        }
        let decision = checker.evaluate(next, source: FuzzClock.source, port: FuzzClock.port, underLoad: true,
                                        now: FuzzClock.now)
        guard decision == .processIfRateLimiterAllows else {
            finding("after an accepted cookie reply the next initiation gets \(decision) under load")
        }
        return .accepted("cookie taken, next mac2 valid")
    }
}
