/// One WireGuard peer end to end, as a single-peer endpoint: its own identity, cookie checker
/// and rate limiter in front of one `Session`, and the transport AEAD. The in-memory and
/// interoperability tests drive it as an independent WireGuard peer; the gateway drives the
/// same `Session` per peer from its control plane, with the data plane doing the transport.
///
/// Use: feed datagrams from the peer to `decapsulate`, inner packets to `encapsulate`; then
/// call `poll` until it returns `.done` — it drains everything the last call or the timers
/// asked for (responses, keepalives, staged packets, retransmissions). Call `poll` also at
/// `nextDeadline`. One output per call, written into the caller's buffer: nothing allocates
/// on the data path except staging a packet while no session exists (bounded).
///
/// Not thread-safe: one owner.
public final class Tunnel: Session, SessionHost {
    public let identity: StaticIdentity
    private var cookieChecker: CookieChecker
    private var rateLimiter = RateLimiter()
    private let random: RandomBytesSource
    /// The transport AEAD: libsodium (a tunnel is the tests' peer, not the data plane, which
    /// picks its backend).
    private let cipher = TransportCipher()

    /// `random` supplies ephemeral keys, session indices, jitter and cookie secrets; tests
    /// pass a seeded source, production the default (the OS CSPRNG through libsodium).
    public init(identity: StaticIdentity, peer: PublicKey, presharedKey: PresharedKey = .none,
                persistentKeepalive: Duration = .zero,
                random: @escaping RandomBytesSource = systemRandomBytes) {
        self.identity = identity
        cookieChecker = CookieChecker(identity: identity, random: random)
        self.random = random
        super.init(handshake: PeerHandshake(identity: identity, remoteStatic: peer, presharedKey: presharedKey),
                   persistentKeepalive: persistentKeepalive, random: random)
    }

    // MARK: Outbound

    /// Encrypts an inner packet for the peer. Without a usable session the packet is staged
    /// and a handshake initiation is returned instead (when one is due).
    public func encapsulate(_ packet: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                            now: Instant, wallClock: TAI64N) -> Output {
        if let keypair = slots.sendingKeypair(at: now) {
            return seal(packet, with: keypair, into: out, now: now, cipher: cipher)
        }
        stage(packet, now: now)
        return poll(now: now, wallClock: wallClock, into: out)
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
        case .initiation: return receiveInitiation(datagram, into: out, now: now, source: source, port: port, underLoad: underLoad)
        case .response: return receiveResponse(datagram, into: out, now: now, source: source, port: port, underLoad: underLoad)
        case .cookieReply:
            do throws(HandshakeError) { try handshake.consumeCookieReply(datagram, now: now) } catch {
                return .dropped(.handshake(error))
            }
            return .done
        case .transport: return receiveTransport(datagram, into: out, now: now)
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

    private func receiveInitiation(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                   now: Instant, source: SourceAddress, port: UInt16, underLoad: Bool) -> Output {
        let message: InitiationMessage
        do throws(MessageError) { message = try InitiationMessage(datagram) } catch { return .dropped(.malformed(error)) }
        if let answer = admit(message, into: out, now: now, source: source, port: port, underLoad: underLoad) {
            return answer
        }
        do throws(HandshakeError) {
            let peer = handshake
            _ = try identity.consumeInitiation(message, now: now) { $0 == peer.remoteStatic ? peer : nil }
        } catch {
            return .dropped(.handshake(error))
        }
        return respond(now: now, into: out, host: self)
    }

    private func receiveResponse(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                                 now: Instant, source: SourceAddress, port: UInt16, underLoad: Bool) -> Output {
        let message: ResponseMessage
        do throws(MessageError) { message = try ResponseMessage(datagram) } catch { return .dropped(.malformed(error)) }
        if let answer = admit(message, into: out, now: now, source: source, port: port, underLoad: underLoad) {
            return answer
        }
        do throws(HandshakeError) { try consumeResponse(message, now: now, host: self) } catch {
            return .dropped(.handshake(error))
        }
        return .done
    }

    private func receiveTransport(_ datagram: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
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
        receivedWith(keypair, now: now, host: self)
        transportReceived(now: now, isKeepalive: length == 0)
        if length == 0 { return .done }
        guard let inner = InnerPacket(UnsafeRawBufferPointer(start: out.baseAddress, count: length)) else {
            return .dropped(.invalidInnerPacket)
        }
        return .writeToTunnel(inner.length)
    }

    // MARK: Timers and deferred work

    /// Carries out one pending action (staged packets, initiation, keepalive) or fires the
    /// timers; call until `.done`.
    public func poll(now: Instant, wallClock: TAI64N, into out: UnsafeMutableRawBufferPointer) -> Output {
        poll(now: now, wallClock: wallClock, into: out, cipher: cipher, host: self)
    }

    // MARK: SessionHost

    /// A random session index not held by another of our keypairs (receivers look keypairs
    /// up by it, so it must be unique among ours).
    public func allocateIndex() -> UInt32? {
        var index: UInt32 = 0
        repeat {
            withUnsafeMutableBytes(of: &index) { random($0) }
        } while slots.keypair(localIndex: index) != nil || index == handshakeIndex
        return index
    }

    // The slots are the only index table of a single peer: nothing else to keep up to date.
    public func releaseIndex(_ index: UInt32) {}
    public func keypairsChanged(installed: Keypair?, dropped: DroppedKeypairs) {}
    public func stagedPacketsExpired(_ count: Int) {}
}
