/// One WireGuard session with one peer, end to end: the handshake, the keypair slots, the
/// timers, the cookie mechanism and the packets staged while no session exists. It composes
/// the core's pieces in the kernel's order, in the style of boringtun's `Tunn`: every call
/// takes bytes and `now` and returns one thing to do. It is the reference the gateway's
/// control plane follows, and what the in-memory and interoperability tests drive.
///
/// Use: feed datagrams from the peer to `decapsulate`, inner packets to `encapsulate`; then
/// call `poll` until it returns `.done` — it drains everything the last call or the timers
/// asked for (responses, keepalives, staged packets, retransmissions). Call `poll` also at
/// `nextDeadline`. One output per call, written into the caller's buffer: nothing allocates
/// on the data path except staging a packet while no session exists (bounded).
///
/// Not thread-safe: one owner.
public final class Tunnel {
    /// What the caller must do with the output buffer.
    public enum Output: Equatable, Sendable {
        /// Nothing (more) to do.
        case done
        /// Send the first `n` bytes of the output buffer to the peer's endpoint.
        case writeToNetwork(Int)
        /// Deliver the first `n` bytes of the output buffer: an inner IP packet, trimmed to
        /// the length its header declares.
        case writeToTunnel(Int)
        /// The input was dropped, for this reason.
        case dropped(DropReason)
    }

    /// Why an input was dropped. Each has its own counter in the gateway.
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
        /// No session and the staging queue is full.
        case stagingQueueFull
        /// The output buffer cannot hold the result.
        case bufferTooSmall
    }

    /// Packets held while no session exists, at most this many (wireguard-go's
    /// QueueStagedSize is 128; the kernel's MAX_STAGED_PACKETS is 128).
    public static let maxStagedPackets = 128

    public let identity: StaticIdentity
    public let handshake: PeerHandshake
    public private(set) var slots = KeypairSlots()
    public private(set) var timers: SessionTimers
    private var cookieChecker: CookieChecker
    private var rateLimiter = RateLimiter()
    private let random: RandomBytesSource
    /// The transport AEAD: libsodium (a tunnel is the reference and the tests' peer, not the
    /// data plane, which picks its backend).
    private let cipher = TransportCipher()
    private var staged: [[UInt8]] = []
    /// Actions asked for by the last call or the timers, not yet carried out by `poll`.
    private var pending: TimerActions = []
    /// A handshake just completed: staged packets may go.
    private var flushStaged = false

    /// `random` supplies ephemeral keys, session indices, jitter and cookie secrets; tests
    /// pass a seeded source, production the default (the OS CSPRNG through libsodium).
    public init(identity: StaticIdentity, peer: PublicKey, presharedKey: PresharedKey = .none,
                persistentKeepalive: Duration = .zero,
                random: @escaping RandomBytesSource = systemRandomBytes) {
        self.identity = identity
        handshake = PeerHandshake(identity: identity, remoteStatic: peer, presharedKey: presharedKey)
        timers = SessionTimers(persistentKeepaliveInterval: persistentKeepalive)
        cookieChecker = CookieChecker(identity: identity, random: random)
        self.random = random
    }

    /// When `poll` should be called next for the timers (nil: no timer is armed).
    public var nextDeadline: Instant? { timers.nextDeadline }

    /// Packets waiting for a session.
    public var stagedCount: Int { staged.count }

    // MARK: Outbound

    /// Encrypts an inner packet for the peer. Without a usable session the packet is staged
    /// and a handshake initiation is returned instead (when one is due).
    public func encapsulate(_ packet: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                            now: Instant, wallClock: TAI64N) -> Output {
        if let keypair = slots.sendingKeypair(at: now) {
            return seal(packet, with: keypair, into: out, now: now)
        }
        guard staged.count < Tunnel.maxStagedPackets else { return .dropped(.stagingQueueFull) }
        staged.append(Array(packet))
        pending.formUnion(timers.requestHandshake(now: now))
        return poll(now: now, wallClock: wallClock, into: out)
    }

    private func seal(_ packet: UnsafeRawBufferPointer, with keypair: Keypair,
                      into out: UnsafeMutableRawBufferPointer, now: Instant) -> Output {
        let sealed: SealedMessage
        do throws(SealFailure) {
            sealed = try keypair.seal(packet.baseAddress ?? UnsafeRawPointer(out.baseAddress!), length: packet.count,
                                      into: out.baseAddress!, capacity: out.count, now: now, cipher: cipher)
        } catch {
            if error == .keypairExpired || error == .messagesExhausted {
                pending.formUnion(timers.requestHandshake(now: now))
            }
            return .dropped(.seal(error))
        }
        pending.formUnion(timers.transportSent(now: now, isKeepalive: packet.isEmpty, jitter: jitter(),
                                               keypair: slots.current))
        return .writeToNetwork(sealed.length)
    }

    // MARK: Inbound

    /// Processes a datagram from the peer. `source`/`port` identify its sender for cookies;
    /// `underLoad` is the caller's judgement (e.g. its handshake queue is filling up).
    public func decapsulate(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                            now: Instant, wallClock: TAI64N,
                            source: SourceAddress = SourceAddress(ipv4: 0), port: UInt16 = 0,
                            underLoad: Bool = false) -> Output {
        let type: MessageType
        switch MessageType.classify(datagram) {
        case .failure(let e): return .dropped(.malformed(e))
        case .success(let t): type = t
        }
        switch type {
        case .initiation: return consumeInitiation(datagram, into: out, now: now, source: source, port: port, underLoad: underLoad)
        case .response: return consumeResponse(datagram, into: out, now: now, source: source, port: port, underLoad: underLoad)
        case .cookieReply:
            do throws(HandshakeError) { try handshake.consumeCookieReply(datagram, now: now) } catch {
                return .dropped(.handshake(error))
            }
            return .done
        case .transport: return consumeTransport(datagram, into: out, now: now)
        }
    }

    /// The cookie and rate-limit gate in front of every handshake message. Returns nil to go
    /// on, or what to answer instead.
    private func admit(_ message: some MACProtectedMessage, into out: UnsafeMutableRawBufferPointer, now: Instant,
                       source: SourceAddress, port: UInt16, underLoad: Bool) -> Output? {
        let (decision, limit) = cookieChecker.evaluate(message, source: source, port: port, underLoad: underLoad,
                                                       now: now, rateLimiter: &rateLimiter)
        switch decision {
        case .process: return nil
        case .dropInvalidMAC1: return .dropped(.handshake(.invalidMAC1))
        case .sendCookieReply:
            guard cookieChecker.createCookieReply(to: message, source: source, port: port, now: now, into: out) else {
                return .dropped(.bufferTooSmall)
            }
            return .writeToNetwork(CookieReplyMessage.size)
        case .processIfRateLimiterAllows:
            return limit == .allowed ? nil : .dropped(.rateLimited)
        }
    }

    private func consumeInitiation(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                   now: Instant, source: SourceAddress, port: UInt16, underLoad: Bool) -> Output {
        let message: InitiationMessage
        do throws(MessageError) { message = try InitiationMessage(datagram) } catch { return .dropped(.malformed(error)) }
        if let answer = admit(message, into: out, now: now, source: source, port: port, underLoad: underLoad) {
            return answer
        }
        var keys: SessionKeys
        do throws(HandshakeError) {
            let peer = handshake
            _ = try identity.consumeInitiation(message, now: now) { $0 == peer.remoteStatic ? peer : nil }
            timers.handshakeMessageReceived(now: now)
            keys = try handshake.createResponse(ephemeral: newEphemeral(), localIndex: newIndex(), now: now, into: out)
        } catch {
            return .dropped(.handshake(error))
        }
        install(Keypair(consuming: &keys))
        timers.handshakeResponseSent(now: now)
        return .writeToNetwork(ResponseMessage.size)
    }

    private func consumeResponse(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                 now: Instant, source: SourceAddress, port: UInt16, underLoad: Bool) -> Output {
        let message: ResponseMessage
        do throws(MessageError) { message = try ResponseMessage(datagram) } catch { return .dropped(.malformed(error)) }
        if let answer = admit(message, into: out, now: now, source: source, port: port, underLoad: underLoad) {
            return answer
        }
        var keys: SessionKeys
        do throws(HandshakeError) { keys = try handshake.consumeResponse(message, now: now) } catch {
            return .dropped(.handshake(error))
        }
        install(Keypair(consuming: &keys))
        timers.handshakeMessageReceived(now: now)
        // The session exists: send what was staged, or a keepalive to confirm it.
        pending.formUnion(timers.handshakeResponseConsumed(now: now))
        flushStaged = true
        return .done
    }

    private func consumeTransport(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                  now: Instant) -> Output {
        guard let header = TransportHeader(datagram) else { return .dropped(.transport(.tooShort)) }
        guard let keypair = slots.keypair(localIndex: header.receiverIndex) else { return .dropped(.unknownReceiverIndex) }
        let length: Int
        do throws(TransportRejection) {
            length = try keypair.open(datagram.baseAddress!, length: datagram.count,
                                      into: out.baseAddress!, capacity: out.count, now: now, cipher: cipher)
        } catch {
            return .dropped(.transport(error))
        }
        let (confirmed, _) = slots.receivedWith(keypair)
        if confirmed {
            timers.handshakeComplete(now: now)
            flushStaged = true
        }
        pending.formUnion(timers.transportReceived(now: now, isKeepalive: length == 0, current: slots.current))
        if length == 0 { return .done }
        guard let inner = Tunnel.innerPacketLength(UnsafeRawBufferPointer(start: out.baseAddress, count: length)) else {
            return .dropped(.invalidInnerPacket)
        }
        return .writeToTunnel(inner)
    }

    /// The length an inner IPv4/IPv6 packet declares, if it fits in the padded plaintext.
    public static func innerPacketLength(_ plaintext: UnsafeRawBufferPointer) -> Int? {
        guard plaintext.count >= 1 else { return nil }
        switch plaintext[0] >> 4 {
        case 4:
            guard plaintext.count >= 20 else { return nil }
            let total = Int(plaintext[2]) << 8 | Int(plaintext[3])
            return total >= 20 && total <= plaintext.count ? total : nil
        case 6:
            guard plaintext.count >= 40 else { return nil }
            let total = 40 + (Int(plaintext[4]) << 8 | Int(plaintext[5]))
            return total <= plaintext.count ? total : nil
        default:
            return nil
        }
    }

    // MARK: Timers and deferred work

    /// Carries out one pending action (staged packets, initiation, keepalive) or fires the
    /// timers; call until `.done`.
    public func poll(now: Instant, wallClock: TAI64N, into out: UnsafeMutableRawBufferPointer) -> Output {
        pending.formUnion(timers.poll(now: now))

        if pending.contains(.wipeKeyMaterial) {
            pending.remove(.wipeKeyMaterial)
            _ = slots.clear()
            handshake.reset()
            staged.removeAll()
        }
        if pending.contains(.clearStagedPackets) {
            pending.remove(.clearStagedPackets)
            staged.removeAll()
        }
        if flushStaged || pending.contains(.sendKeepalive), let keypair = slots.sendingKeypair(at: now) {
            if !staged.isEmpty {
                // Any staged packet confirms the session as well as a keepalive would.
                pending.remove(.sendKeepalive)
                let packet = staged.removeFirst()
                return packet.withUnsafeBytes { seal($0, with: keypair, into: out, now: now) }
            }
            flushStaged = false
            if pending.contains(.sendKeepalive) {
                pending.remove(.sendKeepalive)
                return seal(UnsafeRawBufferPointer(start: nil, count: 0), with: keypair, into: out, now: now)
            }
        }
        pending.remove(.sendKeepalive)   // no session to keep alive
        if pending.contains(.sendHandshakeInitiation) {
            pending.remove(.sendHandshakeInitiation)
            do throws(HandshakeError) {
                try handshake.createInitiation(ephemeral: newEphemeral(), localIndex: newIndex(),
                                               timestamp: wallClock, now: now, into: out)
            } catch {
                return .dropped(.handshake(error))
            }
            timers.handshakeInitiationSent(now: now, jitter: jitter())
            return .writeToNetwork(InitiationMessage.size)
        }
        return .done
    }

    /// Starts a handshake now (e.g. the operator asked, or a test).
    public func forceHandshake(now: Instant) {
        pending.formUnion(timers.requestHandshake(now: now))
    }

    // MARK: Helpers

    private func install(_ keypair: Keypair) {
        _ = slots.install(keypair)
    }

    private func newEphemeral() -> PrivateKey {
        var raw = Key32()
        raw.withUnsafeMutableBytes { random($0) }
        return PrivateKey(consuming: &raw)
    }

    /// A random session index not held by another of our keypairs (receivers look keypairs
    /// up by it, so it must be unique among ours).
    private func newIndex() -> UInt32 {
        var index: UInt32 = 0
        repeat {
            withUnsafeMutableBytes(of: &index) { random($0) }
        } while slots.keypair(localIndex: index) != nil
        return index
    }

    /// Uniform in [0, 333 ms): spreads retransmissions of many peers apart.
    private func jitter() -> Duration {
        var r: UInt32 = 0
        withUnsafeMutableBytes(of: &r) { random($0) }
        let maxNs = UInt32(WireGuardProtocol.rekeyTimeoutJitterMax.nanoseconds)
        return .nanoseconds(Int64(r % maxNs))
    }
}
