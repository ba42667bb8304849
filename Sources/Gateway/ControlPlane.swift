import Engine
import WireGuard

/// Everything about one peer that only the control thread touches: the Noise handshake, the
/// keypair slots, the timers, the packets staged while no session exists, the endpoint.
/// The data path sees the peer only through its `PeerTable` slot (handle `handle`).
final class PeerSession {
    let handle: UInt32
    let tenant: Int
    let publicKey: PublicKey
    /// Replaced when the tenant's private key changes.
    var handshake: PeerHandshake
    /// Kept to build the handshake again with a new private key.
    var presharedKey: PresharedKey?
    var slots = KeypairSlots()
    var timers: SessionTimers
    /// Keypair entries published in the keypair table, by local index.
    var entries: [UInt32: UnsafeMutablePointer<KeypairEntry>] = [:]
    /// The local index of our handshake in progress (an initiation we sent).
    var handshakeIndex: UInt32?
    var staged: [[UInt8]] = []
    /// Bytes in `staged` (counted against the control plane's global budget).
    var stagedBytes = 0
    var endpoint: (address: IPAddress, port: UInt16)?
    var pending: TimerActions = []
    var flushStaged = false
    /// Activity timestamps already turned into timer events.
    var seen = (sent: Instant.zero, received: Instant.zero, keepalive: Instant.zero)
    var lastHandshake: TAI64N?
    var handshakesCompleted = 0
    /// When to ask the kernel's tables again for a route to an endpoint without one.
    var nextRouteLookup = Instant.zero
    /// The time this session is queued at in the control plane's `WakeupHeap` (nil: not queued).
    var scheduled: Instant?
    /// Whether it is in the control plane's list of sessions to `perform` this turn.
    var due = false

    init(handle: UInt32, tenant: Int, publicKey: PublicKey, handshake: PeerHandshake, persistentKeepalive: Duration) {
        self.handle = handle
        self.tenant = tenant
        self.publicKey = publicKey
        self.handshake = handshake
        timers = SessionTimers(persistentKeepaliveInterval: persistentKeepalive)
    }
}

/// One tenant as the control plane sees it: its identity, cookie state, rate limiter and
/// the kernel socket its handshake messages leave through.
final class TenantControl {
    let name: String
    var identity: StaticIdentity
    var cookies: CookieChecker
    var rateLimiter = RateLimiter()
    var socket: HandshakeSocket
    var peersByKey: [PublicKey: UInt32] = [:]
    let mtu: Int

    init(name: String, identity: StaticIdentity, socket: HandshakeSocket, mtu: Int) {
        self.name = name; self.identity = identity; self.cookies = CookieChecker(identity: identity)
        self.socket = socket; self.mtu = mtu
    }
}

/// What the control plane counts about handshakes. The names are stable: they appear in
/// `xdpwg stats`, its JSON and the metrics.
public enum HandshakeCounter: Int, CaseIterable, Sendable {
    case initiationsReceived, responsesReceived, cookieRepliesReceived
    case initiationsSent, responsesSent, cookieRepliesSent
    case sessionsEstablished
    /// Packets staged while no session existed that were dropped (queue full, or timed out).
    case stagedDropped
    /// Handshake or staged messages the kernel socket refused to send.
    case sendErrors

    public var name: String {
        switch self {
        case .initiationsReceived: "initiations_received"
        case .responsesReceived: "responses_received"
        case .cookieRepliesReceived: "cookie_replies_received"
        case .initiationsSent: "initiations_sent"
        case .responsesSent: "responses_sent"
        case .cookieRepliesSent: "cookie_replies_sent"
        case .sessionsEstablished: "sessions_established"
        case .stagedDropped: "staged_dropped"
        case .sendErrors: "send_errors"
        }
    }
}

/// Why a handshake message was not answered or not accepted.
public enum HandshakeFailure: Int, CaseIterable, Sendable {
    case malformedInitiation, malformedResponse, malformedCookieReply
    case responseToNoInitiation, cookieReplyToNoInitiation, unknownMessageType
    /// mac1 did not verify (the sender does not know the tenant's public key).
    case invalidMAC1
    /// Over the per-source limit while under load.
    case rateLimited
    /// Every local index is in use.
    case noFreeIndex
    // From the Noise handshake itself (`HandshakeError`).
    case decryptionFailed, unknownPeer, replayedTimestamp, floodedInitiations, lowOrderPoint
    case wrongState, unknownIndex, unexpectedCookieReply, internalError

    public var name: String {
        switch self {
        case .malformedInitiation: "malformed_initiation"
        case .malformedResponse: "malformed_response"
        case .malformedCookieReply: "malformed_cookie_reply"
        case .responseToNoInitiation: "response_to_no_initiation"
        case .cookieReplyToNoInitiation: "cookie_reply_to_no_initiation"
        case .unknownMessageType: "unknown_message_type"
        case .invalidMAC1: "invalid_mac1"
        case .rateLimited: "rate_limited"
        case .noFreeIndex: "no_free_index"
        case .decryptionFailed: "decryption_failed"
        case .unknownPeer: "unknown_peer"
        case .replayedTimestamp: "replayed_timestamp"
        case .floodedInitiations: "flooded_initiations"
        case .lowOrderPoint: "low_order_point"
        case .wrongState: "wrong_state"
        case .unknownIndex: "unknown_index"
        case .unexpectedCookieReply: "unexpected_cookie_reply"
        case .internalError: "internal_error"
        }
    }

    init(_ error: HandshakeError) {
        switch error {
        case .malformed: self = .malformedInitiation
        case .invalidMAC1: self = .invalidMAC1
        case .decryptionFailed: self = .decryptionFailed
        case .unknownPeer: self = .unknownPeer
        case .replayedTimestamp: self = .replayedTimestamp
        case .floodedInitiations: self = .floodedInitiations
        case .lowOrderPoint: self = .lowOrderPoint
        case .wrongState: self = .wrongState
        case .unknownIndex: self = .unknownIndex
        case .unexpectedCookieReply: self = .unexpectedCookieReply
        case .bufferTooSmall: self = .internalError
        }
    }
}

/// The control plane's handshake counters (one thread writes them).
public struct HandshakeCounters: Sendable {
    public private(set) var counts = [UInt64](repeating: 0, count: HandshakeCounter.allCases.count)
    public private(set) var failures = [UInt64](repeating: 0, count: HandshakeFailure.allCases.count)

    public subscript(_ c: HandshakeCounter) -> UInt64 { counts[c.rawValue] }
    public subscript(_ f: HandshakeFailure) -> UInt64 { failures[f.rawValue] }

    mutating func add(_ c: HandshakeCounter, _ n: Int = 1) { counts[c.rawValue] &+= UInt64(n) }
    mutating func fail(_ f: HandshakeFailure) { failures[f.rawValue] &+= 1 }
}

/// The control thread's state machine: handshakes (responder and initiator), cookies under
/// load, timers, keypair rotation and publication, endpoint learning, staged packets.
/// One thread owns it; workers reach it only through their `ControlQueue`s and the tables.
public final class ControlPlane {
    let state: DataPlaneState
    /// The control thread's own transport AEAD contexts (staged packets, keepalives): the
    /// workers' backend, never shared with a worker.
    let cipher: TransportCipher
    var reclaimer: Reclaimer
    /// By tenant slot (the slot in `DataPlaneState`).
    var tenants: [Int: TenantControl] = [:]
    /// By peer handle (the slot in the peer table).
    var peers: [UInt32: PeerSession] = [:]
    /// Handles free for new peers, and handles whose peer is gone and that every worker has
    /// moved past, waiting for one more drain of the queues (a message about the old peer
    /// may have been queued just before) before reuse.
    private var freeHandles: [UInt32]
    private var coolingHandles: [UInt32] = []
    /// Our handshakes in progress, by local index (responses and cookie replies name it).
    var pendingHandshakes: [UInt32: UInt32] = [:]
    public private(set) var counters = HandshakeCounters()
    /// Builds an outer header template for an endpoint from the kernel's route and
    /// neighbour tables (rtnetlink), or nil while the next hop is unresolved. Used for
    /// endpoints we know before hearing from them (configured); received frames are the
    /// fast path and replace what this built.
    public var resolveRoute: ((_ address: IPAddress, _ port: UInt16, _ listenPort: UInt16) -> OuterHeaderTemplate?)?
    /// Called on every session established (`first`: the peer's first); the caller rate-limits logging.
    public var onSessionEstablished: ((_ tenant: String, _ peer: PublicKey, _ first: Bool) -> Void)?
    private var underLoadUntil = Instant.zero
    /// Sessions that something touched since the last `tick` (a message, a configuration
    /// change, new activity, a due timer): `tick` performs exactly these.
    private var dueSessions: [PeerSession] = []
    /// Every session's next deadline (timers, route lookups).
    private var wakeups = WakeupHeap()
    /// Bytes staged across all peers, bounded by `stagedByteBudget`.
    public private(set) var stagedBytes = 0
    /// The global bound on staged packets (the per-peer bound is `Tunnel.maxStagedPackets`):
    /// 100,000 peers × 128 packets × 1,500 bytes would be 19 GB. A packet that does not fit
    /// is dropped and counted as `staged_dropped`.
    public var stagedByteBudget = ControlPlane.defaultStagedByteBudget
    public static let defaultStagedByteBudget = 32 << 20
    /// Where outgoing handshake and transport messages are built (one at a time).
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    public struct PeerSetup {
        public var publicKey: PublicKey
        public var presharedKey: PresharedKey?
        public var endpoint: (address: IPAddress, port: UInt16)?
        public var persistentKeepalive: Int
        public init(publicKey: PublicKey, presharedKey: PresharedKey?, endpoint: (address: IPAddress, port: UInt16)?,
                    persistentKeepalive: Int) {
            self.publicKey = publicKey; self.presharedKey = presharedKey
            self.endpoint = endpoint; self.persistentKeepalive = persistentKeepalive
        }
    }

    public init(state: DataPlaneState, cipher: consuming TransportCipher = TransportCipher()) {
        self.state = state
        self.cipher = cipher
        reclaimer = Reclaimer(epochs: state.epochs)
        freeHandles = (0..<UInt32(state.peers.capacity)).reversed()
    }

    // MARK: Tenants and peers (configuration changes)

    /// Starts serving tenant slot `slot`: its key, its handshake socket. Its peers come next
    /// (`addPeer`), its route after them (`publishRoute`).
    public func addTenant(slot: Int, name: String, privateKey: PrivateKey, socket: HandshakeSocket, mtu: Int) {
        precondition(tenants[slot] == nil, "tenant slot \(slot) is in use")
        tenants[slot] = TenantControl(name: name, identity: StaticIdentity(privateKey: privateKey), socket: socket,
                                      mtu: mtu)
    }

    /// Stops serving tenant slot `slot`: every peer removed (keys wiped), route unpublished,
    /// port unmapped. Its socket closes with it.
    public func removeTenant(slot: Int) {
        guard let tenant = tenants[slot] else { return }
        state.mapPort(tenant.socket.port, to: nil)
        for handle in tenant.peersByKey.values { removePeer(handle) }
        publishRoute(tenant: slot, nil)
        tenants[slot] = nil
    }

    /// A new private key for tenant `slot`: as in the kernel, every peer's handshake and
    /// session start over (their keys were derived from the old identity).
    public func setPrivateKey(tenant slot: Int, _ key: PrivateKey) {
        guard let tenant = tenants[slot] else { return }
        tenant.identity = StaticIdentity(privateKey: key)
        tenant.cookies = CookieChecker(identity: tenant.identity)
        for handle in tenant.peersByKey.values {
            guard let session = peers[handle] else { continue }
            endSession(session)
            let old = session.handshake
            session.handshake = PeerHandshake(identity: tenant.identity, remoteStatic: session.publicKey,
                                              presharedKey: session.presharedKey ?? .none)
            old.reset()
            markDue(session)
        }
    }

    /// The tenant listens on a new port: the new socket replaces the old one, the port map
    /// follows, and the peers' outer headers (whose source port changed) are built again.
    public func setSocket(tenant slot: Int, _ socket: HandshakeSocket) {
        guard let tenant = tenants[slot] else { return }
        state.mapPort(tenant.socket.port, to: nil)
        tenant.socket = socket
        state.mapPort(socket.port, to: slot)
        for handle in tenant.peersByKey.values {
            if let old = state.peers.setRoute(handle, nil) { reclaimer.retire(.memory(old)) }
            guard let session = peers[handle] else { continue }
            session.nextRouteLookup = .zero
            markDue(session)
        }
    }

    /// Publishes tenant `slot`'s route (AllowedIPs → handles, MACs, MTU), and maps its port
    /// once it has one; the old route is retired. nil unpublishes.
    public func publishRoute(tenant slot: Int, _ route: TenantRoute?) {
        if let old = state.publishTenant(slot, route) { reclaimer.retire(.tenantRoute(old)) }
        if let route { state.mapPort(route.listenPort, to: slot) }
    }

    /// Adds a peer to tenant `slot` and returns its handle, or nil when the peer table is
    /// full. The peer is reachable once the tenant's route names the handle.
    public func addPeer(tenant slot: Int, _ setup: PeerSetup, now: Instant) -> UInt32? {
        guard let tenant = tenants[slot], tenant.peersByKey[setup.publicKey] == nil,
              let handle = freeHandles.popLast() else { return nil }
        let handshake = PeerHandshake(identity: tenant.identity, remoteStatic: setup.publicKey,
                                      presharedKey: setup.presharedKey ?? .none)
        let session = PeerSession(handle: handle, tenant: slot, publicKey: setup.publicKey, handshake: handshake,
                                  persistentKeepalive: .seconds(Int64(setup.persistentKeepalive)))
        session.endpoint = setup.endpoint
        session.presharedKey = setup.presharedKey
        peers[handle] = session
        tenant.peersByKey[setup.publicKey] = handle
        if setup.persistentKeepalive > 0 {
            session.pending.formUnion(session.timers.setPersistentKeepalive(
                interval: .seconds(Int64(setup.persistentKeepalive)), now: now))
        }
        markDue(session)
        return handle
    }

    /// Removes a peer: its keys are wiped, nothing of it stays published, and its handle is
    /// reused only after every worker has moved past it. The caller publishes the tenant's
    /// route without it first (so no packet routes to it any more).
    public func removePeer(_ handle: UInt32) {
        guard let session = peers.removeValue(forKey: handle) else { return }
        tenants[session.tenant]?.peersByKey.removeValue(forKey: session.publicKey)
        endSession(session)
        session.handshake.reset()
        session.scheduled = nil
        if let old = state.peers.setRoute(handle, nil) { reclaimer.retire(.memory(old)) }
        reclaimer.retire(.peerHandle(handle, state.peers, reuse: { [weak self] in self?.coolingHandles.append($0) }))
    }

    /// Wipes a session's keypairs, abandons its handshake and drops its staged packets.
    private func endSession(_ session: PeerSession) {
        retire(session.slots.clear(), of: session)
        publishSending(session)
        abandonHandshake(session)
        dropStaged(session, counted: true)
    }

    public func setPresharedKey(_ handle: UInt32, _ key: PresharedKey?) {
        guard let session = peers[handle] else { return }
        session.presharedKey = key
        session.handshake.setPresharedKey(key ?? .none)
        markDue(session)
    }

    /// A configured endpoint: used until the peer is heard from elsewhere.
    public func setEndpoint(_ handle: UInt32, _ endpoint: (address: IPAddress, port: UInt16)?) {
        guard let session = peers[handle] else { return }
        session.endpoint = endpoint
        if let old = state.peers.setRoute(handle, nil) { reclaimer.retire(.memory(old)) }
        session.nextRouteLookup = .zero
        markDue(session)
    }

    public func setPersistentKeepalive(_ handle: UInt32, seconds: Int, now: Instant) {
        guard let session = peers[handle] else { return }
        session.pending.formUnion(session.timers.setPersistentKeepalive(interval: .seconds(Int64(seconds)), now: now))
        markDue(session)
    }

    public func handle(tenant slot: Int, publicKey: PublicKey) -> UInt32? {
        tenants[slot]?.peersByKey[publicKey]
    }

    deinit {
        // Workers are stopped before the control plane goes away.
        reclaimer.releaseAll()
        buffer.deallocate()
    }

    // MARK: Messages from the workers

    /// Drains every worker queue and handles what they carried.
    public func drain(_ queues: [ControlQueue], now: Instant) {
        var handshakes = 0
        for q in queues {
            q.drain { header, payload in
                switch header.pointee.kind {
                case .handshake:
                    handshakes += 1
                    if handshakes > ControlPlane.underLoadThreshold { underLoadUntil = now + .seconds(1) }
                    handleHandshake(header, payload, now: now)
                case .stagedPacket:
                    stage(peer: header.pointee.peer, payload, now: now)
                case .keypairConfirmed:
                    confirm(peer: header.pointee.peer, localIndex: header.pointee.localIndex, now: now)
                case .endpointChanged:
                    // The peer may have been removed since the worker queued this.
                    if let session = peers[header.pointee.peer] {
                        learnEndpoint(session, from: header)
                        markDue(session)
                    }
                }
            }
        }
        freeHandles.append(contentsOf: coolingHandles)
        coolingHandles.removeAll()
    }

    /// Handshake messages in one drain above which we are "under load" (for a second after):
    /// an eighth of a worker queue, as the kernel's MAX_QUEUED_INCOMING_HANDSHAKES / 8.
    static let underLoadThreshold = 64

    private func handleHandshake(_ header: UnsafePointer<ControlMessage>, _ payload: UnsafeRawBufferPointer, now: Instant) {
        let t = Int(header.pointee.tenant)
        guard let tenant = tenants[t] else { return }
        let h = header.pointee
        let source = h.sourceAddress
        guard let sourceKey = source.bytes.withUnsafeBytes({ SourceAddress(bytes: $0) }) else { return }
        let underLoad = now < underLoadUntil
        switch payload.first {
        case 1:
            counters.add(.initiationsReceived)
            let message: InitiationMessage
            do throws(MessageError) { message = try InitiationMessage(payload) } catch {
                counters.fail(.malformedInitiation); return
            }
            guard admit(message, tenant: t, source: sourceKey, header: h, now: now, underLoad: underLoad) else { return }
            let session: PeerSession
            do throws(HandshakeError) {
                let peersByKey = tenant.peersByKey
                let all = peers
                let handshake = try tenant.identity.consumeInitiation(message, now: now) { key in
                    peersByKey[key].flatMap { all[$0]?.handshake }
                }
                guard let handle = tenant.peersByKey[handshake.remoteStatic], let found = peers[handle] else { return }
                session = found
            } catch {
                counters.fail(HandshakeFailure(error)); return
            }
            session.timers.handshakeMessageReceived(now: now)
            abandonHandshake(session)   // a response replaces any initiation of ours in progress
            guard let index = allocateIndex() else { counters.fail(.noFreeIndex); return }
            var keys: SessionKeys
            do throws(HandshakeError) {
                keys = try session.handshake.createResponse(ephemeral: .generate(), localIndex: index, now: now,
                                                            into: buffer)
            } catch {
                state.keypairs.release(index: index)
                counters.fail(HandshakeFailure(error)); return
            }
            install(Keypair(consuming: &keys), in: session)
            session.timers.handshakeResponseSent(now: now)
            learnEndpoint(session, from: header)
            send(ResponseMessage.size, for: session)
            counters.add(.responsesSent)
            markDue(session)
        case 2:
            counters.add(.responsesReceived)
            let message: ResponseMessage
            do throws(MessageError) { message = try ResponseMessage(payload) } catch {
                counters.fail(.malformedResponse); return
            }
            guard let handle = pendingHandshakes[message.receiverIndex], let session = peers[handle],
                  session.tenant == t else {
                counters.fail(.responseToNoInitiation); return
            }
            guard admit(message, tenant: t, source: sourceKey, header: h, now: now, underLoad: underLoad) else { return }
            var keys: SessionKeys
            do throws(HandshakeError) { keys = try session.handshake.consumeResponse(message, now: now) } catch {
                counters.fail(HandshakeFailure(error)); return
            }
            pendingHandshakes.removeValue(forKey: message.receiverIndex)
            session.handshakeIndex = nil
            install(Keypair(consuming: &keys), in: session)
            session.timers.handshakeMessageReceived(now: now)
            session.pending.formUnion(session.timers.handshakeResponseConsumed(now: now))
            session.flushStaged = true
            sessionEstablished(session)
            learnEndpoint(session, from: header)
            perform(session, now: now)
        case 3:
            counters.add(.cookieRepliesReceived)
            let message: CookieReplyMessage
            do throws(MessageError) { message = try CookieReplyMessage(payload) } catch {
                counters.fail(.malformedCookieReply); return
            }
            guard let handle = pendingHandshakes[message.receiverIndex], let session = peers[handle],
                  session.tenant == t else {
                counters.fail(.cookieReplyToNoInitiation); return
            }
            do throws(HandshakeError) { try session.handshake.consumeCookieReply(payload, now: now) } catch {
                counters.fail(HandshakeFailure(error))
            }
            markDue(session)
        default:
            counters.fail(.unknownMessageType)
        }
    }

    /// The cookie and rate-limit gate in front of every handshake message (Tunnel.admit).
    private func admit(_ message: some MACProtectedMessage, tenant t: Int, source: SourceAddress,
                       header: ControlMessage, now: Instant, underLoad: Bool) -> Bool {
        let tenant = tenants[t]!
        let (decision, limit) = tenant.cookies.evaluate(message, source: source, port: header.sourcePort,
                                                        underLoad: underLoad, now: now, rateLimiter: &tenant.rateLimiter)
        switch decision {
        case .process:
            return true
        case .dropInvalidMAC1:
            counters.fail(.invalidMAC1)
            return false
        case .sendCookieReply:
            let ok = tenant.cookies.createCookieReply(to: message, source: source, port: header.sourcePort,
                                                          now: now, into: buffer)
            if ok {
                sendRaw(CookieReplyMessage.size, tenant: t, to: header.sourceAddress, port: header.sourcePort)
                counters.add(.cookieRepliesSent)
            }
            return false
        case .processIfRateLimiterAllows:
            if limit == .allowed { return true }
            counters.fail(.rateLimited)
            return false
        }
    }

    // MARK: Keypairs

    private func allocateIndex() -> UInt32? {
        state.keypairs.allocateIndex {
            var r: UInt32 = 0
            withUnsafeMutableBytes(of: &r) { systemRandomBytes($0) }
            return r
        }
    }

    /// Our initiation in progress is replaced: its index is free again.
    private func abandonHandshake(_ session: PeerSession) {
        guard let index = session.handshakeIndex else { return }
        pendingHandshakes.removeValue(forKey: index)
        state.keypairs.release(index: index)
        session.handshakeIndex = nil
    }

    /// Puts a new keypair in the slots, publishes it for the workers and retires what it
    /// pushed out.
    private func install(_ keypair: Keypair, in session: PeerSession) {
        let dropped = session.slots.install(keypair)
        let entry = KeypairEntry.make(keypair, peer: session.handle, tenant: UInt32(session.tenant))
        session.entries[keypair.localIndex] = entry
        state.keypairs.publish(entry)
        publishSending(session)
        retire(dropped, of: session)
    }

    /// The workers send with the session's current keypair.
    private func publishSending(_ session: PeerSession) {
        let entry = session.slots.current.flatMap { session.entries[$0.localIndex] }
        state.peers.setSending(session.handle, entry)
    }

    private func retire(_ dropped: DroppedKeypairs, of session: PeerSession) {
        for keypair in dropped {
            keypair.invalidate()
            guard let entry = session.entries.removeValue(forKey: keypair.localIndex) else { continue }
            _ = state.keypairs.unpublish(index: keypair.localIndex)
            state.keypairs.release(index: keypair.localIndex)
            reclaimer.retire(.keypairEntry(entry))
        }
    }

    /// A worker decrypted with a keypair that is not the sending one: if it is the
    /// responder's "next" keypair, the initiator has confirmed the session.
    private func confirm(peer handle: UInt32, localIndex: UInt32, now: Instant) {
        guard let session = peers[handle] else { return }
        guard let next = session.slots.next, next.localIndex == localIndex else { return }
        let (confirmed, dropped) = session.slots.receivedWith(next)
        guard confirmed else { return }
        publishSending(session)
        retire(dropped, of: session)
        session.timers.handshakeComplete(now: now)
        session.flushStaged = true
        sessionEstablished(session)
        perform(session, now: now)
    }

    private func sessionEstablished(_ session: PeerSession) {
        counters.add(.sessionsEstablished)
        session.handshakesCompleted += 1
        session.lastHandshake = Clock.wall()
        onSessionEstablished?(tenantName(session), session.publicKey, session.handshakesCompleted == 1)
    }

    // MARK: Endpoints

    /// An authenticated message came from `header`'s source: send there from now on, through
    /// the hop it came from.
    private func learnEndpoint(_ session: PeerSession, from header: UnsafePointer<ControlMessage>) {
        let h = header.pointee
        let template = OuterHeaderTemplate(sourceMAC: h.destinationMAC, destinationMAC: h.sourceMAC, vlanTCI: h.vlanTCI,
                                           source: h.destinationAddress, sourcePort: h.destinationPort,
                                           destination: h.sourceAddress, destinationPort: h.sourcePort,
                                           endpointKey: h.endpointKey)
        let old = session.endpoint
        session.endpoint = (h.sourceAddress, h.sourcePort)
        if state.peers.currentRoute(session.handle) == template { return }
        if let retired = state.peers.setRoute(session.handle, template) { reclaimer.retire(.memory(retired)) }
        if let old, old.address != h.sourceAddress || old.port != h.sourcePort {
            Log.info("\(tenantName(session)): peer \(session.publicKey.shortName) moved to \(Self.format(h.sourceAddress, h.sourcePort))")
        }
    }

    public static func format(_ a: IPAddress, _ port: UInt16) -> String {
        a.isV4 ? "\(a):\(port)" : "[\(a)]:\(port)"
    }

    // MARK: Staging

    private func stage(peer handle: UInt32, _ packet: UnsafeRawBufferPointer, now: Instant) {
        guard let session = peers[handle] else { return }
        if session.staged.count >= Tunnel.maxStagedPackets {
            let oldest = session.staged.removeFirst()   // the kernel drops the oldest
            session.stagedBytes -= oldest.count
            stagedBytes -= oldest.count
            counters.add(.stagedDropped)
        }
        if stagedBytes + packet.count > stagedByteBudget {
            // Over the global budget: this packet is dropped (what others staged stays theirs).
            counters.add(.stagedDropped)
        } else {
            session.staged.append(Array(packet))
            session.stagedBytes += packet.count
            stagedBytes += packet.count
        }
        if session.slots.sendingKeypair(at: now) != nil {
            session.flushStaged = true       // a session appeared after the worker looked
        } else {
            session.pending.formUnion(session.timers.requestHandshake(now: now))
        }
        perform(session, now: now)
    }

    /// Empties a session's staged packets; `counted`: as `staged_dropped`.
    private func dropStaged(_ session: PeerSession, counted: Bool) {
        if counted { counters.add(.stagedDropped, session.staged.count) }
        stagedBytes -= session.stagedBytes
        session.stagedBytes = 0
        session.staged.removeAll()
    }

    /// Packets staged across all peers (tests and stats).
    public var stagedPackets: Int { peers.values.reduce(0) { $0 + $1.staged.count } }

    // MARK: Timers

    /// Puts a session on this turn's list for `tick`.
    private func markDue(_ session: PeerSession) {
        guard !session.due else { return }
        session.due = true
        dueSessions.append(session)
    }

    /// Queues the session at its next deadline: the earliest of its timers and, while its
    /// endpoint has no route, the next route lookup. Called after every `perform`.
    private func schedule(_ session: PeerSession) {
        var next = session.timers.nextDeadline
        if session.endpoint != nil, resolveRoute != nil, state.peers.currentRoute(session.handle) == nil {
            next = min(next ?? session.nextRouteLookup, session.nextRouteLookup)
        }
        guard let next else { return }
        if let queued = session.scheduled, queued <= next { return }   // that entry wakes it early enough
        session.scheduled = next
        wakeups.push(next, session)
        if wakeups.count > 2 * peers.count + 1024 { wakeups.compact(peers.values) }
    }

    /// Turns the workers' new activity into timer events, fires due timers and carries out
    /// what they ask, for the peers that have something to do (never a walk over all of
    /// them); frees what no worker can hold any more.
    public func tick(now: Instant) {
        state.peers.takeActive { handle in
            guard let session = peers[handle] else { return }
            noteActivity(session)
            markDue(session)
        }
        while let entry = wakeups.popDue(now) {
            let session = entry.session
            guard session.scheduled == entry.time, peers[session.handle] === session else { continue }   // stale
            session.scheduled = nil
            markDue(session)
        }
        let due = dueSessions
        dueSessions.removeAll(keepingCapacity: true)
        for session in due {
            session.due = false
            if peers[session.handle] === session { perform(session, now: now) }
        }
        reclaimer.collect()
    }

    /// The workers' activity stamps that are newer than what the timers saw.
    private func noteActivity(_ session: PeerSession) {
        let a = state.peers.activity(session.handle)
        if let t = a.lastDataSent, t > session.seen.sent {
            session.seen.sent = t
            session.pending.formUnion(session.timers.transportSent(now: t, isKeepalive: false, jitter: jitter(),
                                                                   keypair: session.slots.current))
        }
        if let t = a.lastKeepaliveReceived, t > session.seen.keepalive {
            session.seen.keepalive = t
            session.pending.formUnion(session.timers.transportReceived(now: t, isKeepalive: true,
                                                                       current: session.slots.current))
        }
        if let t = a.lastDataReceived, t > session.seen.received {
            session.seen.received = t
            session.pending.formUnion(session.timers.transportReceived(now: t, isKeepalive: false,
                                                                       current: session.slots.current))
        }
    }

    /// Carries out the session's pending actions (Tunnel.poll's order).
    private func perform(_ session: PeerSession, now: Instant) {
        session.pending.formUnion(session.timers.poll(now: now))
        if let endpoint = session.endpoint, now >= session.nextRouteLookup, let resolveRoute,
           state.peers.currentRoute(session.handle) == nil {
            session.nextRouteLookup = now + .seconds(1)
            if let template = resolveRoute(endpoint.address, endpoint.port, tenants[session.tenant]!.socket.port) {
                if let old = state.peers.setRoute(session.handle, template) { reclaimer.retire(.memory(old)) }
            }
        }
        if session.pending.contains(.wipeKeyMaterial) {
            session.pending.remove(.wipeKeyMaterial)
            retire(session.slots.clear(), of: session)
            publishSending(session)
            abandonHandshake(session)
            session.handshake.reset()
            dropStaged(session, counted: false)
        }
        if session.pending.contains(.clearStagedPackets) {
            session.pending.remove(.clearStagedPackets)
            dropStaged(session, counted: true)
        }
        if session.flushStaged || session.pending.contains(.sendKeepalive),
           let keypair = session.slots.sendingKeypair(at: now), session.endpoint != nil {
            if !session.staged.isEmpty {
                session.pending.remove(.sendKeepalive)
                let packets = session.staged
                dropStaged(session, counted: false)
                for packet in packets {
                    packet.withUnsafeBytes { sendTransport($0, keypair: keypair, session: session, now: now) }
                }
            } else if session.pending.contains(.sendKeepalive) {
                sendTransport(UnsafeRawBufferPointer(start: nil, count: 0), keypair: keypair, session: session, now: now)
            }
            session.flushStaged = false
        }
        session.pending.remove(.sendKeepalive)
        if session.pending.contains(.sendHandshakeInitiation) {
            session.pending.remove(.sendHandshakeInitiation)
            sendInitiation(session, now: now)
        }
        schedule(session)
    }

    private func sendTransport(_ packet: UnsafeRawBufferPointer, keypair: Keypair, session: PeerSession, now: Instant) {
        let sealed: SealedMessage
        do throws(SealFailure) {
            sealed = try keypair.seal(packet.baseAddress ?? UnsafeRawPointer(buffer.baseAddress!), length: packet.count,
                                      into: buffer.baseAddress!, capacity: buffer.count, now: now,
                                      cipher: cipher, mtu: tenants[session.tenant]!.mtu)
        } catch .cipherFailed {
            Log.error("\(tenantName(session)): the \(cipher.backend) cipher failed to seal a packet for peer "
                      + "\(session.publicKey.shortName); dropped")
            return
        } catch {
            session.pending.formUnion(session.timers.requestHandshake(now: now))
            return
        }
        send(sealed.length, for: session)
        session.pending.formUnion(session.timers.transportSent(now: now, isKeepalive: packet.isEmpty, jitter: jitter(),
                                                               keypair: session.slots.current))
    }

    private func sendInitiation(_ session: PeerSession, now: Instant) {
        guard session.endpoint != nil else {
            Log.debug("\(tenantName(session)): no endpoint for peer \(session.publicKey.shortName): cannot initiate")
            return
        }
        abandonHandshake(session)
        guard let index = allocateIndex() else { counters.fail(.noFreeIndex); return }
        do throws(HandshakeError) {
            try session.handshake.createInitiation(ephemeral: .generate(), localIndex: index, timestamp: Clock.wall(),
                                                   now: now, into: buffer)
        } catch {
            state.keypairs.release(index: index)
            counters.fail(HandshakeFailure(error))
            return
        }
        session.handshakeIndex = index
        pendingHandshakes[index] = session.handle
        send(InitiationMessage.size, for: session)
        counters.add(.initiationsSent)
        session.timers.handshakeInitiationSent(now: now, jitter: jitter())
    }

    // MARK: Sending

    private func send(_ length: Int, for session: PeerSession) {
        guard let endpoint = session.endpoint else { return }
        sendRaw(length, tenant: session.tenant, to: endpoint.address, port: endpoint.port)
    }

    private func sendRaw(_ length: Int, tenant: Int, to address: IPAddress, port: UInt16) {
        guard let socket = tenants[tenant]?.socket else { return }
        let error = socket.send(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), to: address,
                                                port: port)
        if error != nil { counters.add(.sendErrors) }
    }

    /// Uniform in [0, 333 ms), as Tunnel.jitter.
    private func jitter() -> Duration {
        var r: UInt32 = 0
        withUnsafeMutableBytes(of: &r) { systemRandomBytes($0) }
        return .nanoseconds(Int64(r % UInt32(WireGuardProtocol.rekeyTimeoutJitterMax.nanoseconds)))
    }

    // MARK: Reports

    func tenantName(_ session: PeerSession) -> String { tenants[session.tenant]?.name ?? "?" }

    /// What the control plane knows about one peer, for `wg show`, stats and logs.
    public struct PeerReport: Sendable {
        public var handle: UInt32
        public var tenant: Int
        public var publicKey: PublicKey
        public var endpoint: (address: IPAddress, port: UInt16)?
        public var handshakes: Int
        /// Wall clock of the latest completed handshake.
        public var lastHandshake: TAI64N?
        /// When (on the monotonic clock) the current keypair was made: its age is now minus this.
        public var keypairCreated: Instant?
        public var activity: PeerTable.Activity
    }

    public func report(_ handle: UInt32) -> PeerReport? {
        guard let s = peers[handle] else { return nil }
        return PeerReport(handle: handle, tenant: s.tenant, publicKey: s.publicKey, endpoint: s.endpoint,
                          handshakes: s.handshakesCompleted, lastHandshake: s.lastHandshake,
                          keypairCreated: s.slots.current?.createdAt, activity: state.peers.activity(handle))
    }

    public func peerReports() -> [PeerReport] {
        peers.keys.sorted().compactMap { report($0) }
    }

    public func tenantName(slot: Int) -> String? { tenants[slot]?.name }

    /// Stops every session: wipes keys (used at shutdown, after the workers stopped).
    public func shutdown() {
        for session in peers.values { endSession(session) }
        reclaimer.releaseAll()
    }
}
