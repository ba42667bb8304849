import Testing
@testable import WireGuard

/// A hand-driven clock: `t(s)` is `s` seconds after an arbitrary origin; `ms` and `ns` nudge.
private func t(_ seconds: Double) -> Instant { Instant(nanoseconds: UInt64(1_000_000_000_000 + seconds * 1e9)) }
private func justBefore(_ i: Instant) -> Instant { Instant(nanoseconds: i.nanoseconds - 1) }
private let noJitter = Duration.zero

private func keypair(initiator: Bool, at created: Instant, index: UInt32 = 1) -> Keypair {
    var keys = SessionKeys(sendKey: SessionPair.key(UInt8(truncatingIfNeeded: index)), receiveKey: SessionPair.key(3),
                           localIndex: index, remoteIndex: index &+ 1000, isInitiator: initiator, createdAt: created)
    return Keypair(consuming: &keys)
}

@Suite struct SessionTimersTests {
    // MARK: Handshake retransmission

    @Test func retransmitCadenceWithJitter() {
        var timers = SessionTimers()
        #expect(timers.requestHandshake(now: t(0)) == .sendHandshakeInitiation)
        timers.handshakeInitiationSent(now: t(0), jitter: .milliseconds(200))
        #expect(timers.retransmitHandshakeAt == t(5.2))
        #expect(timers.poll(now: justBefore(t(5.2))) == [])
        #expect(timers.poll(now: t(5.2)) == .sendHandshakeInitiation)
        #expect(timers.handshakeAttempts == 1)
        // Jitter is clamped to REKEY_TIMEOUT_JITTER_MAX.
        timers.handshakeInitiationSent(now: t(5.2), jitter: .seconds(3))
        #expect(timers.retransmitHandshakeAt == t(5.2) + .seconds(5) + .milliseconds(333))
        // A completed handshake stops the retries.
        timers.handshakeComplete(now: t(6))
        #expect(timers.retransmitHandshakeAt == nil)
        #expect(timers.handshakeAttempts == 0)
        #expect(timers.poll(now: t(20)) == [])
    }

    /// The kernel retries until the attempt counter exceeds MAX_TIMER_HANDSHAKES (18): 20
    /// initiations in all, 5 s apart, and gives up at the 20th expiry (~100 s, a little over
    /// REKEY_ATTEMPT_TIME), dropping staged packets and scheduling the key wipe.
    @Test func retriesThenGiveUp() {
        var timers = SessionTimers()
        var initiations = 0
        var now = t(0)
        #expect(timers.requestHandshake(now: now) == .sendHandshakeInitiation)
        timers.handshakeInitiationSent(now: now, jitter: noJitter)
        initiations += 1
        var gaveUpAt: Instant?
        while gaveUpAt == nil, now < t(200) {
            now = now + .seconds(1)
            let actions = timers.poll(now: now)
            if actions.contains(.sendHandshakeInitiation) {
                timers.handshakeInitiationSent(now: now, jitter: noJitter)
                initiations += 1
            }
            if actions.contains(.clearStagedPackets) { gaveUpAt = now }
        }
        #expect(SessionTimers.maxHandshakeRetries == 18)
        #expect(initiations == 20)
        #expect(gaveUpAt == t(100))
        #expect(timers.retransmitHandshakeAt == nil)
        #expect(timers.zeroKeyMaterialAt == t(100) + .seconds(540))
        #expect(timers.poll(now: t(300)) == [])
        // A later send asks afresh, with the attempt count reset.
        #expect(timers.requestHandshake(now: t(300)) == .sendHandshakeInitiation)
        #expect(timers.handshakeAttempts == 0)
    }

    @Test func initiationsAreRateLimitedToOnePerRekeyTimeout() {
        var timers = SessionTimers()
        timers.handshakeInitiationSent(now: t(10), jitter: noJitter)
        #expect(timers.requestHandshake(now: t(10)) == [])
        #expect(timers.requestHandshake(now: justBefore(t(15))) == [])
        #expect(timers.requestHandshake(now: t(15)) == .sendHandshakeInitiation)
        // Sending a response counts as a handshake sent too.
        timers.handshakeResponseSent(now: t(20))
        #expect(timers.requestHandshake(now: t(24)) == [])
        #expect(timers.requestHandshake(now: t(25)) == .sendHandshakeInitiation)
    }

    // MARK: Keepalives

    @Test func keepaliveTenSecondsAfterDataOnlyOncePerWindow() {
        var timers = SessionTimers()
        _ = timers.transportReceived(now: t(0), isKeepalive: false, current: nil)
        _ = timers.transportReceived(now: t(3), isKeepalive: false, current: nil)
        _ = timers.transportReceived(now: t(9), isKeepalive: false, current: nil)
        #expect(timers.sendKeepaliveAt == t(10))
        #expect(timers.poll(now: justBefore(t(10))) == [])
        #expect(timers.poll(now: t(10)) == .sendKeepalive)
        // Data arrived while it was pending, so one more window is armed...
        #expect(timers.sendKeepaliveAt == t(20))
        // ...unless something we send in the meantime already says we are alive.
        _ = timers.transportSent(now: t(10), isKeepalive: true, jitter: noJitter, keypair: nil)
        #expect(timers.sendKeepaliveAt == nil)
        #expect(timers.poll(now: t(30)) == [])
    }

    @Test func keepaliveOnlyOnceWithoutFurtherData() {
        var timers = SessionTimers()
        _ = timers.transportReceived(now: t(0), isKeepalive: false, current: nil)
        #expect(timers.poll(now: t(10)) == .sendKeepalive)
        #expect(timers.poll(now: t(20)) == [])
        #expect(timers.poll(now: t(60)) == [])
    }

    @Test func sendingDataCancelsTheKeepalive() {
        var timers = SessionTimers()
        _ = timers.transportReceived(now: t(0), isKeepalive: false, current: nil)
        _ = timers.transportSent(now: t(2), isKeepalive: false, jitter: noJitter, keypair: nil)
        #expect(timers.poll(now: t(10)) == [])
    }

    @Test func receivedKeepaliveDoesNotArmAKeepalive() {
        var timers = SessionTimers()
        _ = timers.transportReceived(now: t(0), isKeepalive: true, current: nil)
        #expect(timers.sendKeepaliveAt == nil)
        #expect(timers.poll(now: t(11)) == [])
    }

    @Test func persistentKeepaliveCadence() {
        var timers = SessionTimers()
        #expect(timers.setPersistentKeepalive(interval: .seconds(25), now: t(0)) == .sendKeepalive)
        _ = timers.transportSent(now: t(0), isKeepalive: true, jitter: noJitter, keypair: nil)
        #expect(timers.persistentKeepaliveAt == t(25))
        #expect(timers.poll(now: justBefore(t(25))) == [])
        #expect(timers.poll(now: t(25)) == .sendKeepalive)
        _ = timers.transportSent(now: t(25), isKeepalive: true, jitter: noJitter, keypair: nil)
        // Traffic in either direction pushes it back.
        _ = timers.transportReceived(now: t(40), isKeepalive: true, current: nil)
        #expect(timers.poll(now: t(50)) == [])
        #expect(timers.poll(now: t(65)) == .sendKeepalive)
        // Changing a non-zero interval does not send at once; turning it off stops it.
        #expect(timers.setPersistentKeepalive(interval: .seconds(10), now: t(66)) == [])
        _ = timers.transportSent(now: t(66), isKeepalive: true, jitter: noJitter, keypair: nil)
        #expect(timers.setPersistentKeepalive(interval: .zero, now: t(67)) == [])
        #expect(timers.poll(now: t(200)) == [])
    }

    // MARK: New handshake after silence

    @Test func newHandshakeAfterFifteenSecondsOfSilence() {
        var timers = SessionTimers()
        _ = timers.transportSent(now: t(0), isKeepalive: false, jitter: .milliseconds(100), keypair: nil)
        _ = timers.transportSent(now: t(5), isKeepalive: false, jitter: .milliseconds(300), keypair: nil)
        #expect(timers.newHandshakeAt == t(15.1), "armed by the first data sent, not pushed back")
        #expect(timers.poll(now: justBefore(t(15.1))) == [])
        #expect(timers.poll(now: t(15.1)) == .sendHandshakeInitiation)
    }

    @Test func anyReplyCancelsTheNewHandshake() {
        var timers = SessionTimers()
        _ = timers.transportSent(now: t(0), isKeepalive: false, jitter: noJitter, keypair: nil)
        _ = timers.transportReceived(now: t(14), isKeepalive: true, current: nil)
        #expect(timers.poll(now: t(15)) == [])
        // A sent keepalive is not data: it arms nothing.
        _ = timers.transportSent(now: t(20), isKeepalive: true, jitter: noJitter, keypair: nil)
        #expect(timers.newHandshakeAt == nil)
    }

    // MARK: Keep key fresh

    @Test func sendSideKeepKeyFreshByAge() {
        var timers = SessionTimers()
        let mine = keypair(initiator: true, at: t(0))
        #expect(timers.transportSent(now: justBefore(t(120)), isKeepalive: false, jitter: noJitter, keypair: mine) == [])
        #expect(timers.transportSent(now: t(120), isKeepalive: false, jitter: noJitter, keypair: mine) == .sendHandshakeInitiation)
        // Only the initiator rekeys by age.
        let theirs = keypair(initiator: false, at: t(0))
        var other = SessionTimers()
        #expect(other.transportSent(now: t(170), isKeepalive: false, jitter: noJitter, keypair: theirs) == [])
    }

    @Test func sendSideKeepKeyFreshByMessages() {
        var timers = SessionTimers()
        let theirs = keypair(initiator: false, at: t(0))
        theirs.setMessagesSent(WireGuardProtocol.rekeyAfterMessages)
        #expect(timers.keepKeyFreshAfterSending(current: theirs, now: t(1)) == [])
        theirs.setMessagesSent(WireGuardProtocol.rekeyAfterMessages + 1)
        #expect(timers.keepKeyFreshAfterSending(current: theirs, now: t(1)) == .sendHandshakeInitiation)
        theirs.invalidateForSending()
        #expect(timers.keepKeyFreshAfterSending(current: theirs, now: t(1)) == [])
    }

    @Test func receiveSideLastMinuteHandshake() {
        var timers = SessionTimers()
        let mine = keypair(initiator: true, at: t(0))
        #expect(SessionTimers.receiveRekeyAge == .seconds(165))
        #expect(timers.transportReceived(now: justBefore(t(165)), isKeepalive: true, current: mine) == [])
        #expect(timers.transportReceived(now: t(165), isKeepalive: true, current: mine) == .sendHandshakeInitiation)
        #expect(timers.sentLastMinuteHandshake)
        // Once per session, even after the rate limit has passed.
        #expect(timers.transportReceived(now: t(172), isKeepalive: true, current: mine) == [])
        timers.handshakeComplete(now: t(173))
        #expect(!timers.sentLastMinuteHandshake)
        // Responders do not.
        var other = SessionTimers()
        #expect(other.transportReceived(now: t(170), isKeepalive: false, current: keypair(initiator: false, at: t(0))) == [])
    }

    // MARK: Key expiry and wipe

    @Test func keypairCannotSendAtRejectAfterTime() {
        var slots = KeypairSlots()
        let k = keypair(initiator: true, at: t(0))
        _ = slots.install(k)
        #expect(slots.sendingKeypair(at: justBefore(t(180))) === k)
        #expect(slots.sendingKeypair(at: t(180)) == nil)
        var buf = [UInt8](repeating: 0, count: 64)
        let r: Result<SealedMessage, SealFailure> = buf.withUnsafeMutableBytes { b in
            Result { () throws(SealFailure) in
                try k.sealInPlace(b.baseAddress!, plaintextLength: 0, capacity: b.count, now: t(180),
                                  cipher: TransportCipher())
            }
        }
        #expect(r.error == .keypairExpired)
        // The caller's reaction: a handshake.
        var timers = SessionTimers()
        #expect(timers.requestHandshake(now: t(180)) == .sendHandshakeInitiation)
    }

    @Test func keypairCannotSendAfterRejectAfterMessages() {
        var slots = KeypairSlots()
        let k = keypair(initiator: true, at: t(0))
        _ = slots.install(k)
        k.setMessagesSent(WireGuardProtocol.rejectAfterMessages - 1)
        #expect(slots.sendingKeypair(at: t(1)) === k)
        k.setMessagesSent(WireGuardProtocol.rejectAfterMessages)
        #expect(slots.sendingKeypair(at: t(1)) == nil)
    }

    @Test func wipeKeysFiveHundredFortySecondsAfterLastSession() {
        var timers = SessionTimers()
        timers.handshakeResponseSent(now: t(0))
        #expect(timers.zeroKeyMaterialAt == t(540))
        _ = timers.handshakeResponseConsumed(now: t(100))      // a newer session re-arms it
        #expect(timers.poll(now: t(540)) == [])
        #expect(timers.poll(now: justBefore(t(640))) == [])
        #expect(timers.poll(now: t(640)) == .wipeKeyMaterial)
        #expect(timers.poll(now: t(2000)) == [])

        var slots = KeypairSlots()
        let a = keypair(initiator: true, at: t(0), index: 1)
        let b = keypair(initiator: true, at: t(100), index: 2)
        _ = slots.install(a)
        _ = slots.install(b)
        let dropped = Array(slots.clear())
        #expect(dropped.count == 2)
        #expect(slots.current == nil && slots.previous == nil && slots.next == nil)
        #expect(!a.isValidForReceiving && !b.isValidForSending)
    }

    @Test func nextDeadlineIsTheEarliest() {
        var timers = SessionTimers()
        #expect(timers.nextDeadline == nil)
        timers.handshakeResponseSent(now: t(0))                     // wipe at 540
        _ = timers.transportReceived(now: t(1), isKeepalive: false, current: nil)   // keepalive at 11
        #expect(timers.nextDeadline == t(11))
        _ = timers.transportSent(now: t(2), isKeepalive: false, jitter: noJitter, keypair: nil)
        #expect(timers.nextDeadline == t(17))
        timers.stop()
        #expect(timers.nextDeadline == nil)
    }

    @Test func initiatorSessionFlow() {
        var timers = SessionTimers()
        var slots = KeypairSlots()
        // A packet with no keypair: stage it and ask for a handshake.
        #expect(slots.sendingKeypair(at: t(0)) == nil)
        #expect(timers.requestHandshake(now: t(0)) == .sendHandshakeInitiation)
        timers.handshakeInitiationSent(now: t(0), jitter: noJitter)
        // The response arrives.
        timers.handshakeMessageReceived(now: t(0.05))
        let k = keypair(initiator: true, at: t(0.05))
        #expect(slots.install(k).isEmpty)
        #expect(timers.handshakeResponseConsumed(now: t(0.05)) == .sendKeepalive)
        #expect(timers.retransmitHandshakeAt == nil)
        #expect(timers.zeroKeyMaterialAt == t(0.05) + .seconds(540))
        #expect(slots.sendingKeypair(at: t(0.05)) === k)
    }

    // MARK: Keypair rotation

    @Test func initiatorRotation() {
        var slots = KeypairSlots()
        let k1 = keypair(initiator: true, at: t(0), index: 1)
        let k2 = keypair(initiator: true, at: t(120), index: 2)
        let k3 = keypair(initiator: true, at: t(240), index: 3)
        #expect(slots.install(k1).isEmpty)
        #expect(slots.current === k1 && slots.previous == nil && slots.next == nil)
        #expect(slots.install(k2).isEmpty)
        #expect(slots.current === k2 && slots.previous === k1)
        let dropped = Array(slots.install(k3))
        #expect(dropped.count == 1 && dropped[0] === k1)
        #expect(!k1.isValidForSending && !k1.isValidForReceiving)
        #expect(slots.current === k3 && slots.previous === k2 && slots.next == nil)
        #expect(slots.keypair(localIndex: 2) === k2)
        #expect(slots.keypair(localIndex: 1) == nil)
    }

    @Test func responderRotationWaitsForConfirmation() {
        var slots = KeypairSlots()
        let k1 = keypair(initiator: false, at: t(0), index: 1)
        #expect(slots.install(k1).isEmpty)
        #expect(slots.next === k1 && slots.current == nil)
        #expect(slots.sendingKeypair(at: t(0)) == nil, "a responder may not send before confirmation")
        var (confirmed, dropped) = slots.receivedWith(k1)
        #expect(confirmed && dropped.isEmpty)
        #expect(slots.current === k1 && slots.next == nil && slots.previous == nil)
        // Receiving on current again confirms nothing.
        (confirmed, _) = slots.receivedWith(k1)
        #expect(!confirmed)

        let k2 = keypair(initiator: false, at: t(120), index: 2)
        #expect(slots.install(k2).isEmpty)
        #expect(slots.sendingKeypair(at: t(121)) === k1, "keep sending on current until confirmed")
        (confirmed, dropped) = slots.receivedWith(k2)
        #expect(confirmed && dropped.isEmpty)
        #expect(slots.current === k2 && slots.previous === k1)

        // A new responder keypair drops previous; a second one replaces the unconfirmed next.
        let k3 = keypair(initiator: false, at: t(240), index: 3)
        let k4 = keypair(initiator: false, at: t(241), index: 4)
        #expect(Array(slots.install(k3)).map(\.localIndex) == [1])
        #expect(slots.previous == nil && slots.current === k2 && slots.next === k3)
        #expect(Array(slots.install(k4)).map(\.localIndex) == [3])
        #expect(slots.next === k4)
        (confirmed, _) = slots.receivedWith(k3)
        #expect(!confirmed, "a dropped keypair confirms nothing")
    }

    @Test func initiatorInstallWithPendingNext() {
        // We responded (k1 waits in next) and also initiated (k2): next becomes previous and
        // the old current is dropped.
        var slots = KeypairSlots()
        let k0 = keypair(initiator: true, at: t(0), index: 10)
        _ = slots.install(k0)
        let k1 = keypair(initiator: false, at: t(100), index: 11)
        _ = slots.install(k1)
        #expect(slots.current === k0 && slots.next === k1 && slots.previous == nil)
        let k2 = keypair(initiator: true, at: t(101), index: 12)
        let dropped = Array(slots.install(k2))
        #expect(dropped.map(\.localIndex) == [10])
        #expect(slots.current === k2 && slots.previous === k1 && slots.next == nil)
    }
}
