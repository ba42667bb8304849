/// One peer's WireGuard session: its Noise handshake, its three keypair slots, its timers and
/// the packets staged while no keypair can carry them, composed in the kernel's order. This is
/// the one per-peer state machine: the gateway's control plane drives one per peer (its
/// `PeerSession` adds the peer's place in the data plane's tables), `Tunnel` drives one as a
/// complete single-peer endpoint (the tests' independent WireGuard peer).
///
/// In the style of boringtun's `Tunn`: events go in (a handshake message matched to this peer,
/// a keypair confirmed, traffic seen, a packet to stage), and `poll` hands out, one per call,
/// what they and the timers ask for — a message written into the caller's buffer, or a drop.
/// Call `poll` until `.done` after every event and at `nextDeadline`.
///
/// Pure: no I/O, no clock, no threads. Whatever the caller must do outside (local indices,
/// publishing keypairs) goes through the `SessionHost` passed in. Not thread-safe: one owner.
open class Session {
    /// What the caller must do with the output buffer.
    public enum Output: Equatable, Sendable {
        /// Nothing (more) to do.
        case done
        /// Send the first `n` bytes of the output buffer to the peer's endpoint.
        case writeToNetwork(Int)
        /// Deliver the first `n` bytes of the output buffer: an inner IP packet, trimmed to
        /// the length its header declares.
        case writeToTunnel(Int)
        /// The input (or the message asked for) was dropped, for this reason.
        case dropped(DropReason)
    }

    /// Why an input or a message was dropped. Each has its own counter in the gateway.
    public enum DropReason: Equatable, Sendable {
        case malformed(MessageError)
        case handshake(HandshakeError)
        case transport(TransportRejection)
        case seal(SealFailure)
        /// A transport message for a receiver index we do not hold.
        case unknownReceiverIndex
        /// Decrypted data that is not an IPv4 or IPv6 packet of a consistent length.
        case invalidInnerPacket
        /// Under load, the source exceeded its handshake rate.
        case rateLimited
        /// The output buffer cannot hold the result.
        case bufferTooSmall
        /// A handshake message was due, and every local index is in use.
        case noFreeIndex
        /// An initiation was due, and the caller has no endpoint to send it to.
        case noEndpoint
    }

    /// Packets held while no session exists, at most this many (wireguard-go's
    /// QueueStagedSize is 128; the kernel's MAX_STAGED_PACKETS is 128).
    public static let maxStagedPackets = 128

    public private(set) var handshake: PeerHandshake
    public private(set) var slots = KeypairSlots()
    public private(set) var timers: SessionTimers
    /// The local index of our initiation in progress (responses and cookie replies name it).
    public private(set) var handshakeIndex: UInt32?
    private var staged: [[UInt8]] = []
    /// Bytes in the staged packets.
    public private(set) var stagedBytes = 0
    /// Actions asked for by the last event or the timers, not yet carried out by `poll`.
    private var pending: TimerActions = []
    /// A keypair appeared (handshake completed, or confirmed): staged packets may go.
    private var flushStaged = false
    /// Supplies ephemeral keys and jitter.
    private let random: RandomBytesSource

    /// `random` supplies ephemeral keys and jitter; tests pass a seeded source, production the
    /// default (the OS CSPRNG through libsodium).
    public init(handshake: PeerHandshake, persistentKeepalive: Duration = .zero,
                random: @escaping RandomBytesSource = systemRandomBytes) {
        self.handshake = handshake
        timers = SessionTimers(persistentKeepaliveInterval: persistentKeepalive)
        self.random = random
    }

    /// When `poll` should be called next for the timers (nil: no timer is armed).
    public var nextDeadline: Instant? { timers.nextDeadline }

    /// Packets waiting for a session.
    public var stagedCount: Int { staged.count }

    // MARK: Events

    /// Holds `packet` until a keypair can carry it, and asks for one: a handshake, or (when a
    /// keypair appeared meanwhile) a flush. With `maxStagedPackets` held already the oldest
    /// goes first, as in the kernel; returns whether one went.
    @discardableResult
    public func stage(_ packet: UnsafeRawBufferPointer, now: Instant) -> Bool {
        let evicted = makeRoomToStage()
        staged.append(Array(packet))
        stagedBytes += packet.count
        packetWaiting(now: now)
        return evicted
    }

    /// Drops the oldest staged packet when `maxStagedPackets` are held; returns whether it did.
    public func makeRoomToStage() -> Bool {
        guard staged.count >= Session.maxStagedPackets else { return false }
        stagedBytes -= staged.removeFirst().count
        return true
    }

    /// A packet is waiting for this peer (staged, or dropped by the caller's own limits): asks
    /// for a flush when a keypair can send, else for a handshake.
    public func packetWaiting(now: Instant) {
        if slots.sendingKeypair(at: now) != nil {
            flushStaged = true
        } else {
            pending.formUnion(timers.requestHandshake(now: now))
        }
    }

    /// Answers an initiation from this peer, which the caller's identity consumed into
    /// `handshake` (`StaticIdentity.consumeInitiation`): the response goes into `out`, the new
    /// keypair into the slots (as `next`, until the initiator confirms it). Any initiation of
    /// ours in progress is abandoned.
    public func respond(now: Instant, into out: UnsafeMutableRawBufferPointer, host: some SessionHost) -> Output {
        timers.handshakeMessageReceived(now: now)
        abandonHandshake(host: host)   // a response replaces any initiation of ours in progress
        guard let index = host.allocateIndex() else { return .dropped(.noFreeIndex) }
        var keys: SessionKeys
        do throws(HandshakeError) {
            keys = try handshake.createResponse(ephemeral: newEphemeral(), localIndex: index, now: now, into: out)
        } catch {
            host.releaseIndex(index)
            return .dropped(.handshake(error))
        }
        install(Keypair(consuming: &keys), host: host)
        timers.handshakeResponseSent(now: now)
        return .writeToNetwork(ResponseMessage.size)
    }

    /// Consumes the response to our initiation: the new keypair is current at once, and staged
    /// packets (or a keepalive confirming the session) go at the next `poll`.
    public func consumeResponse(_ message: ResponseMessage, now: Instant, host: some SessionHost) throws(HandshakeError) {
        var keys = try handshake.consumeResponse(message, now: now)
        handshakeIndex = nil   // the index is the new keypair's now
        install(Keypair(consuming: &keys), host: host)
        timers.handshakeMessageReceived(now: now)
        // The session exists: send what was staged, or a keepalive to confirm it.
        pending.formUnion(timers.handshakeResponseConsumed(now: now))
        flushStaged = true
    }

    /// A transport message authenticated with `keypair` (one of the slots'): when it is the
    /// responder's `next`, the initiator has confirmed the session — it becomes current, and
    /// the staged packets go at the next `poll`. Returns whether that happened.
    @discardableResult
    public func receivedWith(_ keypair: Keypair, now: Instant, host: some SessionHost) -> Bool {
        let (confirmed, dropped) = slots.receivedWith(keypair)
        guard confirmed else { return false }
        host.keypairsChanged(installed: nil, dropped: dropped)
        timers.handshakeComplete(now: now)
        flushStaged = true
        return true
    }

    /// Transport traffic was received at `now` (`isKeepalive`: an empty one).
    public func transportReceived(now: Instant, isKeepalive: Bool) {
        pending.formUnion(timers.transportReceived(now: now, isKeepalive: isKeepalive, current: slots.current))
    }

    /// Transport traffic was sent at `now` by someone else than this session (the data plane).
    public func transportSent(now: Instant, isKeepalive: Bool) {
        pending.formUnion(timers.transportSent(now: now, isKeepalive: isKeepalive, jitter: jitter(),
                                               keypair: slots.current))
    }

    public func setPersistentKeepalive(_ interval: Duration, now: Instant) {
        pending.formUnion(timers.setPersistentKeepalive(interval: interval, now: now))
    }

    /// A new handshake for this peer (its tenant's private key changed): the old one is reset.
    /// Call `clear` first, so nothing of the old identity's sessions stays.
    public func replaceHandshake(with new: PeerHandshake) {
        let old = handshake
        handshake = new
        old.reset()
    }

    /// Our initiation in progress is replaced or given up: its index is free again.
    public func abandonHandshake(host: some SessionHost) {
        guard let index = handshakeIndex else { return }
        handshakeIndex = nil
        host.releaseIndex(index)
    }

    /// Ends the session: keypairs dropped, our initiation abandoned, staged packets dropped
    /// (returns how many). The handshake keeps its state (timestamps of the peer's initiations).
    @discardableResult
    public func clear(host: some SessionHost) -> Int {
        host.keypairsChanged(installed: nil, dropped: slots.clear())
        abandonHandshake(host: host)
        let dropped = staged.count
        staged.removeAll()
        stagedBytes = 0
        return dropped
    }

    // MARK: Sending

    /// Seals `packet` with `keypair` into `out` (a keepalive when empty) and tells the timers.
    /// A keypair that can no longer send asks for a handshake.
    public func seal(_ packet: UnsafeRawBufferPointer, with keypair: Keypair, into out: UnsafeMutableRawBufferPointer,
                     now: Instant, cipher: borrowing TransportCipher, mtu: Int = 0) -> Output {
        let sealed: SealedMessage
        do throws(SealFailure) {
            sealed = try keypair.seal(packet.baseAddress ?? UnsafeRawPointer(out.baseAddress!), length: packet.count,
                                      into: out.baseAddress!, capacity: out.count, now: now, cipher: cipher, mtu: mtu)
        } catch {
            switch error {
            case .keypairInvalid, .keypairExpired, .messagesExhausted:
                pending.formUnion(timers.requestHandshake(now: now))
            case .invalidLength, .destinationTooSmall, .cipherFailed:
                break   // the keypair is fine: a new one would not help
            }
            return .dropped(.seal(error))
        }
        pending.formUnion(timers.transportSent(now: now, isKeepalive: packet.isEmpty, jitter: jitter(),
                                               keypair: slots.current))
        return .writeToNetwork(sealed.length)
    }

    /// Carries out one pending action, or fires the timers, writing any message into `out`;
    /// call until `.done`. In order: keys wiped, staged packets given up, staged packets (or a
    /// keepalive) sealed, an initiation. `reachable`: the caller has an endpoint to send to
    /// (without one nothing is sealed, and a due initiation is `.dropped(.noEndpoint)`).
    /// `cipher` and `mtu` seal transport messages.
    public func poll(now: Instant, wallClock: TAI64N, into out: UnsafeMutableRawBufferPointer,
                     cipher: borrowing TransportCipher, mtu: Int = 0, reachable: Bool = true,
                     host: some SessionHost) -> Output {
        pending.formUnion(timers.poll(now: now))

        if pending.contains(.wipeKeyMaterial) {
            pending.remove(.wipeKeyMaterial)
            clear(host: host)
            handshake.reset()
        }
        if pending.contains(.clearStagedPackets) {
            pending.remove(.clearStagedPackets)
            let dropped = staged.count
            staged.removeAll()
            stagedBytes = 0
            if dropped > 0 { host.stagedPacketsExpired(dropped) }
        }
        if flushStaged || pending.contains(.sendKeepalive), reachable, let keypair = slots.sendingKeypair(at: now) {
            if !staged.isEmpty {
                // Any staged packet confirms the session as well as a keepalive would.
                pending.remove(.sendKeepalive)
                let packet = staged.removeFirst()
                stagedBytes -= packet.count
                return packet.withUnsafeBytes { seal($0, with: keypair, into: out, now: now, cipher: cipher, mtu: mtu) }
            }
            flushStaged = false
            if pending.contains(.sendKeepalive) {
                pending.remove(.sendKeepalive)
                return seal(UnsafeRawBufferPointer(start: nil, count: 0), with: keypair, into: out, now: now,
                            cipher: cipher, mtu: mtu)
            }
        }
        pending.remove(.sendKeepalive)   // no session to keep alive
        if pending.contains(.sendHandshakeInitiation) {
            pending.remove(.sendHandshakeInitiation)
            guard reachable else { return .dropped(.noEndpoint) }
            return initiate(now: now, wallClock: wallClock, into: out, host: host)
        }
        return .done
    }

    /// Writes an initiation into `out` now, with `wallClock` as its timestamp, whatever the
    /// timers say: `poll` calls it when one is due; a caller that paces handshakes itself (the
    /// perf lab's peer emulator) calls it directly. Any initiation in progress is abandoned.
    public func initiate(now: Instant, wallClock: TAI64N, into out: UnsafeMutableRawBufferPointer,
                         host: some SessionHost) -> Output {
        abandonHandshake(host: host)
        guard let index = host.allocateIndex() else { return .dropped(.noFreeIndex) }
        do throws(HandshakeError) {
            try handshake.createInitiation(ephemeral: newEphemeral(), localIndex: index, timestamp: wallClock, now: now,
                                           into: out)
        } catch {
            host.releaseIndex(index)
            return .dropped(.handshake(error))
        }
        handshakeIndex = index
        timers.handshakeInitiationSent(now: now, jitter: jitter())
        return .writeToNetwork(InitiationMessage.size)
    }

    // MARK: Helpers

    private func install(_ keypair: Keypair, host: some SessionHost) {
        let dropped = slots.install(keypair)
        host.keypairsChanged(installed: keypair, dropped: dropped)
    }

    private func newEphemeral() -> PrivateKey {
        var raw = Key32()
        raw.withUnsafeMutableBytes { random($0) }
        return PrivateKey(consuming: &raw)
    }

    /// Uniform in [0, 333 ms): spreads retransmissions of many peers apart.
    private func jitter() -> Duration {
        var r: UInt32 = 0
        withUnsafeMutableBytes(of: &r) { random($0) }
        let maxNs = UInt32(WireGuardProtocol.rekeyTimeoutJitterMax.nanoseconds)
        return .nanoseconds(Int64(r % maxNs))
    }
}

/// What a `Session` needs from whoever drives it: local indices for its handshakes, and word
/// of keypairs it installs and drops (a gateway publishes them for its data plane).
public protocol SessionHost {
    /// A free local index for a new handshake message (initiation or response), unique among
    /// the caller's keypairs and handshakes in progress; nil when none is free.
    func allocateIndex() -> UInt32?
    /// `index` will never name a keypair (its handshake failed or was abandoned): free again.
    func releaseIndex(_ index: UInt32)
    /// The slots changed: `installed` is new (its local index is one `allocateIndex` gave),
    /// `dropped` left them (invalidated; their indices are free once the caller is done).
    func keypairsChanged(installed: Keypair?, dropped: DroppedKeypairs)
    /// A handshake was given up and `count` staged packets with it.
    func stagedPacketsExpired(_ count: Int)
}
