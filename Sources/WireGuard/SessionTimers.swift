/// What a peer's timers ask the caller to do. A set, not a list: several timers can expire in
/// one poll, and each action is idempotent within a poll.
public struct TimerActions: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Build and send a handshake initiation now, then report it with
    /// `handshakeInitiationSent(now:jitter:)` (that arms the retransmission timer).
    public static let sendHandshakeInitiation = TimerActions(rawValue: 1 << 0)
    /// Send a keepalive (an empty transport message) with the current keypair, or the staged
    /// packets if there are any (they confirm the session just as well).
    public static let sendKeepalive = TimerActions(rawValue: 1 << 1)
    /// Handshake retries were given up: drop the packets staged while waiting for a session.
    public static let clearStagedPackets = TimerActions(rawValue: 1 << 2)
    /// No new session for REJECT_AFTER_TIME × 3 (540 s): clear every keypair
    /// (`KeypairSlots.clear`) and the handshake state, wiping their keys.
    public static let wipeKeyMaterial = TimerActions(rawValue: 1 << 3)

    public var description: String {
        var names: [String] = []
        if contains(.sendHandshakeInitiation) { names.append("sendHandshakeInitiation") }
        if contains(.sendKeepalive) { names.append("sendKeepalive") }
        if contains(.clearStagedPackets) { names.append("clearStagedPackets") }
        if contains(.wipeKeyMaterial) { names.append("wipeKeyMaterial") }
        return "[" + names.joined(separator: ", ") + "]"
    }
}

/// Every WireGuard timer of one peer as a pure state machine: the kernel's timers.c (and
/// wireguard-go's timers.go) with each kernel timer replaced by a deadline, polled like
/// boringtun's `update_timers`. The caller feeds events with `now`, calls `poll(now:)` at or
/// after `nextDeadline`, and carries out the returned actions. No clock, no threads, no
/// randomness: the retransmission jitter (uniform in [0, 333 ms)) is passed in by the caller.
///
/// Events and the kernel functions they mirror:
/// - `dataSent` ← wg_timers_data_sent: arm "new handshake" (15 s + jitter) if not armed.
/// - `dataReceived` ← wg_timers_data_received: arm "send keepalive" (10 s) if not armed,
///   otherwise remember that another keepalive is needed.
/// - `anyAuthenticatedPacketSent` ← …_sent: disarm "send keepalive".
/// - `anyAuthenticatedPacketReceived` ← …_received: disarm "new handshake".
/// - `anyAuthenticatedPacketTraversal` ← …_traversal: re-arm the persistent keepalive.
/// - `handshakeInitiated` ← wg_timers_handshake_initiated: arm retransmission (5 s + jitter).
/// - `handshakeComplete` ← wg_timers_handshake_complete: disarm retransmission, reset attempts.
/// - `sessionDerived` ← wg_timers_session_derived: (re-)arm the 540 s key wipe.
/// The composite events (`transportSent`, `transportReceived`, `handshakeInitiationSent`,
/// `handshakeResponseSent`, `handshakeResponseConsumed`, `handshakeMessageReceived`) call them
/// in the kernel's order, so the caller cannot forget one.
public struct SessionTimers: Sendable {
    /// Retransmissions before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT = 18, the kernel's
    /// MAX_TIMER_HANDSHAKES. As in the kernel, the give-up happens on the retransmission timer
    /// that finds the attempt count already above it, i.e. after 1 + 19 initiations, about 20 ×
    /// REKEY_TIMEOUT after the first ("did not complete after 20 attempts").
    public static let maxHandshakeRetries = Int(WireGuardProtocol.rekeyAttemptTime.nanoseconds
                                                / WireGuardProtocol.rekeyTimeout.nanoseconds)
    /// REJECT_AFTER_TIME − KEEPALIVE_TIMEOUT − REKEY_TIMEOUT (165 s): an initiator that
    /// receives data on a keypair this old starts a handshake, so the session is renewed
    /// before the keypair expires even if we have nothing to send.
    public static let receiveRekeyAge = WireGuardProtocol.rejectAfterTime
        - WireGuardProtocol.keepaliveTimeout - WireGuardProtocol.rekeyTimeout
    /// KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s, plus jitter): sent data with no reply at all.
    public static let newHandshakeTimeout = WireGuardProtocol.keepaliveTimeout + WireGuardProtocol.rekeyTimeout

    // Deadlines: nil means the kernel timer is not pending.
    public private(set) var retransmitHandshakeAt: Instant?
    public private(set) var sendKeepaliveAt: Instant?
    public private(set) var newHandshakeAt: Instant?
    public private(set) var zeroKeyMaterialAt: Instant?
    public private(set) var persistentKeepaliveAt: Instant?

    /// Retransmissions of the current handshake attempt so far.
    public private(set) var handshakeAttempts = 0
    /// When we last sent an initiation or a response: initiations are at most one per
    /// REKEY_TIMEOUT (nil: never, so the first is always allowed).
    public private(set) var lastHandshakeSent: Instant?
    /// Data arrived while a keepalive was already scheduled.
    public private(set) var needAnotherKeepalive = false
    /// The receive-side "last minute" handshake was already requested for this session.
    public private(set) var sentLastMinuteHandshake = false
    /// Zero when off.
    public private(set) var persistentKeepaliveInterval: Duration = .zero

    public init(persistentKeepaliveInterval: Duration = .zero) {
        self.persistentKeepaliveInterval = max(persistentKeepaliveInterval, .zero)
    }

    @inline(__always)
    static func clampJitter(_ jitter: Duration) -> Duration {
        min(max(jitter, .zero), WireGuardProtocol.rekeyTimeoutJitterMax)
    }

    // MARK: Primitive events (kernel timers.c)

    public mutating func dataSent(now: Instant, jitter: Duration) {
        if newHandshakeAt == nil {
            newHandshakeAt = now + SessionTimers.newHandshakeTimeout + SessionTimers.clampJitter(jitter)
        }
    }

    public mutating func dataReceived(now: Instant) {
        if sendKeepaliveAt == nil {
            sendKeepaliveAt = now + WireGuardProtocol.keepaliveTimeout
        } else {
            needAnotherKeepalive = true
        }
    }

    /// Anything authenticated we sent (data, keepalive, handshake) already tells the peer we
    /// are alive, so the pending keepalive is not needed.
    public mutating func anyAuthenticatedPacketSent(now: Instant) {
        sendKeepaliveAt = nil
    }

    /// Anything authenticated from the peer shows the path works: no need for the
    /// "sent data but heard nothing" handshake.
    public mutating func anyAuthenticatedPacketReceived(now: Instant) {
        newHandshakeAt = nil
    }

    public mutating func anyAuthenticatedPacketTraversal(now: Instant) {
        if persistentKeepaliveInterval > .zero {
            persistentKeepaliveAt = now + persistentKeepaliveInterval
        }
    }

    public mutating func handshakeInitiated(now: Instant, jitter: Duration) {
        retransmitHandshakeAt = now + WireGuardProtocol.rekeyTimeout + SessionTimers.clampJitter(jitter)
    }

    public mutating func handshakeComplete(now: Instant) {
        retransmitHandshakeAt = nil
        handshakeAttempts = 0
        sentLastMinuteHandshake = false
    }

    public mutating func sessionDerived(now: Instant) {
        zeroKeyMaterialAt = now + WireGuardProtocol.wipeKeysAfter
    }

    /// Sets the persistent keepalive interval (zero turns it off). Turning it on from off asks
    /// for a keepalive at once, as `wg set … persistent-keepalive` does in the kernel.
    public mutating func setPersistentKeepalive(interval: Duration, now: Instant) -> TimerActions {
        let interval = max(interval, .zero)
        let turnedOn = persistentKeepaliveInterval == .zero && interval > .zero
        persistentKeepaliveInterval = interval
        if interval == .zero { persistentKeepaliveAt = nil }
        return turnedOn ? .sendKeepalive : []
    }

    // MARK: Handshake requests

    /// Asks for a handshake (no usable keypair, or a keep-key-fresh rule fired): the kernel's
    /// wg_packet_send_queued_handshake_initiation. A fresh request resets the retry count; the
    /// request is dropped when an initiation went out less than REKEY_TIMEOUT ago (that one's
    /// retransmission timer is still running).
    public mutating func requestHandshake(now: Instant, isRetry: Bool = false) -> TimerActions {
        if !isRetry { handshakeAttempts = 0 }
        if let last = lastHandshakeSent, now.since(last) < WireGuardProtocol.rekeyTimeout { return [] }
        return .sendHandshakeInitiation
    }

    /// Send-side keep_key_fresh, after sending with `current`: rekey when it carried more than
    /// REKEY_AFTER_MESSAGES, or when we initiated it REKEY_AFTER_TIME ago.
    public mutating func keepKeyFreshAfterSending(current: Keypair?, now: Instant) -> TimerActions {
        guard let current, current.isValidForSending, current.needsRekeyAfterSending(at: now) else { return [] }
        return requestHandshake(now: now)
    }

    /// Receive-side keep_key_fresh (wg_packet_consume_data_done): an initiator whose current
    /// keypair is 165 s old asks for one handshake, even if it has nothing to send, because
    /// the responder may not initiate and the keypair dies at 180 s.
    public mutating func keepKeyFreshAfterReceiving(current: Keypair?, now: Instant) -> TimerActions {
        if sentLastMinuteHandshake { return [] }
        guard let current, current.isValidForSending, current.isInitiator,
              now.since(current.createdAt) >= SessionTimers.receiveRekeyAge else { return [] }
        sentLastMinuteHandshake = true
        return requestHandshake(now: now)
    }

    // MARK: Composite events, in the kernel's order

    /// We sent an initiation (wg_packet_send_handshake_initiation).
    public mutating func handshakeInitiationSent(now: Instant, jitter: Duration) {
        lastHandshakeSent = now
        anyAuthenticatedPacketTraversal(now: now)
        anyAuthenticatedPacketSent(now: now)
        handshakeInitiated(now: now, jitter: jitter)
    }

    /// We sent a response and derived the (responder's) keypair (wg_packet_send_handshake_response).
    public mutating func handshakeResponseSent(now: Instant) {
        sessionDerived(now: now)
        anyAuthenticatedPacketTraversal(now: now)
        anyAuthenticatedPacketSent(now: now)
        lastHandshakeSent = now
    }

    /// A valid initiation or response arrived from the peer (the tail of
    /// wg_receive_handshake_packet). Cookie replies do not count.
    public mutating func handshakeMessageReceived(now: Instant) {
        anyAuthenticatedPacketReceived(now: now)
        anyAuthenticatedPacketTraversal(now: now)
    }

    /// As initiator we consumed the response and installed the keypair: the session exists.
    /// Returns `.sendKeepalive`: send the staged packets, or a keepalive when there are none,
    /// so the responder can confirm its keypair at once. Also call `handshakeMessageReceived`.
    public mutating func handshakeResponseConsumed(now: Instant) -> TimerActions {
        sessionDerived(now: now)
        handshakeComplete(now: now)
        return .sendKeepalive
    }

    /// After sending a transport message with `keypair` (the current one): the kernel's
    /// wg_packet_create_data_done. A keepalive is not data: it arms no "new handshake" timer.
    public mutating func transportSent(now: Instant, isKeepalive: Bool, jitter: Duration,
                                       keypair: Keypair?) -> TimerActions {
        anyAuthenticatedPacketTraversal(now: now)
        anyAuthenticatedPacketSent(now: now)
        if !isKeepalive { dataSent(now: now, jitter: jitter) }
        return keepKeyFreshAfterSending(current: keypair, now: now)
    }

    /// After a transport message authenticated (wg_packet_consume_data_done). `current` is the
    /// current keypair *after* `KeypairSlots.receivedWith` ran (if that returned true, also call
    /// `handshakeComplete` and send the staged packets). A keepalive arms no keepalive reply.
    public mutating func transportReceived(now: Instant, isKeepalive: Bool, current: Keypair?) -> TimerActions {
        let actions = keepKeyFreshAfterReceiving(current: current, now: now)
        anyAuthenticatedPacketReceived(now: now)
        anyAuthenticatedPacketTraversal(now: now)
        if !isKeepalive { dataReceived(now: now) }
        return actions
    }

    // MARK: Polling

    /// The earliest pending deadline: when the caller should poll next (nil: nothing pending).
    public var nextDeadline: Instant? {
        func earlier(_ a: Instant?, _ b: Instant?) -> Instant? {
            guard let a else { return b }
            guard let b else { return a }
            return min(a, b)
        }
        return earlier(earlier(earlier(retransmitHandshakeAt, sendKeepaliveAt), earlier(newHandshakeAt, zeroKeyMaterialAt)),
                       persistentKeepaliveAt)
    }

    @inline(__always)
    private static func due(_ deadline: Instant?, _ now: Instant) -> Bool {
        if let deadline { return deadline <= now }
        return false
    }

    /// Fires every timer whose deadline is at or before `now`, like the kernel's timer
    /// callbacks, and returns what they ask for.
    public mutating func poll(now: Instant) -> TimerActions {
        var actions: TimerActions = []

        // wg_expired_retransmit_handshake
        if SessionTimers.due(retransmitHandshakeAt, now) {
            retransmitHandshakeAt = nil
            if handshakeAttempts > SessionTimers.maxHandshakeRetries {
                // Give up: no keepalive for a dead session, drop what waited for it, and make
                // sure the old keys do not outlive the 540 s limit.
                sendKeepaliveAt = nil
                actions.insert(.clearStagedPackets)
                if zeroKeyMaterialAt == nil { zeroKeyMaterialAt = now + WireGuardProtocol.wipeKeysAfter }
            } else {
                handshakeAttempts += 1
                actions.formUnion(requestHandshake(now: now, isRetry: true))
            }
        }

        // wg_expired_send_keepalive
        if SessionTimers.due(sendKeepaliveAt, now) {
            sendKeepaliveAt = nil
            actions.insert(.sendKeepalive)
            if needAnotherKeepalive {
                needAnotherKeepalive = false
                sendKeepaliveAt = now + WireGuardProtocol.keepaliveTimeout
            }
        }

        // wg_expired_new_handshake: we sent data and heard nothing back for 15 s.
        if SessionTimers.due(newHandshakeAt, now) {
            newHandshakeAt = nil
            actions.formUnion(requestHandshake(now: now))
        }

        // wg_expired_zero_key_material
        if SessionTimers.due(zeroKeyMaterialAt, now) {
            zeroKeyMaterialAt = nil
            actions.insert(.wipeKeyMaterial)
        }

        // wg_expired_send_persistent_keepalive
        if SessionTimers.due(persistentKeepaliveAt, now) {
            persistentKeepaliveAt = nil
            if persistentKeepaliveInterval > .zero { actions.insert(.sendKeepalive) }
        }
        return actions
    }

    /// Disarms everything (peer removed or interface down: wg_timers_stop).
    public mutating func stop() {
        retransmitHandshakeAt = nil
        sendKeepaliveAt = nil
        newHandshakeAt = nil
        zeroKeyMaterialAt = nil
        persistentKeepaliveAt = nil
        needAnotherKeepalive = false
        handshakeAttempts = 0
    }
}

/// Keypairs that left the slots. The caller removes their local indices from its receiver
/// index table; they are already invalidated, and their keys are wiped when the last
/// reference goes. At most three, so a fixed struct rather than an array.
public struct DroppedKeypairs: Sequence, IteratorProtocol, Sendable {
    var a: Keypair?
    var b: Keypair?
    var c: Keypair?

    mutating func add(_ k: Keypair?) {
        guard let k else { return }
        k.invalidate()
        if a == nil { a = k } else if b == nil { b = k } else { c = k }
    }

    public mutating func next() -> Keypair? {
        if let k = a { a = b; b = c; c = nil; return k }
        return nil
    }

    public var isEmpty: Bool { a == nil }
}

/// A peer's three keypair slots with the kernel's noise.c rotation rules.
///
/// - `current` is the only keypair we send with.
/// - `next` holds a responder's new keypair: the responder may not send with it until the
///   initiator proves it has it, which it does by sending the first data (or keepalive)
///   message on it; `receivedWith` then promotes it.
/// - `previous` keeps the last current keypair so packets still in flight from the peer
///   under the old session decrypt after a rotation.
///
/// Class references only: lookups and the receive-path confirmation retain and release,
/// never allocate. Owned by the control plane; the data plane reads published snapshots.
public struct KeypairSlots: Sendable {
    public private(set) var previous: Keypair?
    public private(set) var current: Keypair?
    public private(set) var next: Keypair?

    public init() {}

    /// Installs a freshly derived keypair (add_new_keypair).
    ///
    /// Initiator: the new keypair is current at once (the response proved the peer has it).
    /// A pending `next` becomes previous and the old current is dropped (the peer will switch
    /// to `next`'s session or ours, never back to the older one); otherwise current becomes
    /// previous. Responder: the new keypair waits in `next` (replacing any earlier `next`), and
    /// previous is dropped, since current becomes previous when `next` is confirmed.
    public mutating func install(_ keypair: Keypair) -> DroppedKeypairs {
        var dropped = DroppedKeypairs()
        if keypair.isInitiator {
            if let pending = next {
                next = nil
                dropped.add(previous)
                previous = pending
                dropped.add(current)
            } else {
                dropped.add(previous)
                previous = current
            }
            current = keypair
        } else {
            dropped.add(next)
            next = keypair
            dropped.add(previous)
            previous = nil
        }
        return dropped
    }

    /// Call after a transport message authenticated with `keypair`
    /// (wg_noise_received_with_keypair). When it is `next`, the initiator has confirmed the
    /// session: previous is dropped, current becomes previous, next becomes current, and the
    /// result says so (the caller then runs `SessionTimers.handshakeComplete` and sends its
    /// staged packets).
    public mutating func receivedWith(_ keypair: Keypair) -> (confirmed: Bool, dropped: DroppedKeypairs) {
        var dropped = DroppedKeypairs()
        guard let pending = next, pending === keypair else { return (false, dropped) }
        dropped.add(previous)
        previous = current
        current = pending
        next = nil
        return (true, dropped)
    }

    /// The keypair to send with now: current, if it is still valid and younger than
    /// REJECT_AFTER_TIME with nonces left. Nil means "stage the packet and request a handshake".
    @inline(__always)
    public func sendingKeypair(at now: Instant) -> Keypair? {
        guard let current, current.canSend(at: now) else { return nil }
        return current
    }

    /// The slot keypair whose local index is `index` (for callers without their own table).
    public func keypair(localIndex index: UInt32) -> Keypair? {
        if let k = current, k.localIndex == index { return k }
        if let k = previous, k.localIndex == index { return k }
        if let k = next, k.localIndex == index { return k }
        return nil
    }

    /// Drops all three (wg_noise_keypairs_clear): key wipe at 540 s, peer removal, key change.
    public mutating func clear() -> DroppedKeypairs {
        var dropped = DroppedKeypairs()
        dropped.add(next)
        dropped.add(current)
        dropped.add(previous)
        next = nil
        current = nil
        previous = nil
        return dropped
    }
}
