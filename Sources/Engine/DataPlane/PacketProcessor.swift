import Synchronization
import WireGuard

/// The per-packet work of one worker, free of any socket: decrypt one uplink frame into a
/// tenant frame, or encrypt one tenant frame into an uplink frame. The worker loop moves
/// descriptors around it; tests drive it with frames in memory.
///
/// Non-copyable: it owns its worker's `TransportCipher` (per-thread cipher contexts).
public struct PacketProcessor: ~Copyable {
    /// Keeps the tables alive; never read per packet.
    public let state: DataPlaneState
    /// The shared tables and the control queue as plain pointers and values: touching a
    /// class reference per packet would retain and release the same objects on every worker
    /// (one cache line bouncing between cores). `state` and the worker's `ControlQueue` keep
    /// what they point to alive.
    let keypairs: KeypairTableView
    let peers: PeerTableView
    let tenants: UnsafeMutablePointer<Atomic<UInt>>
    let ports: UnsafeMutablePointer<Atomic<UInt16>>
    public let counters: WorkerCounters
    public let control: ControlQueue.Producer
    public let workerIndex: UInt16
    /// `.on` except in the perf lab's crypto-off mode (see `TransportCrypto`). Chosen once
    /// per worker and kept in this value (which the worker loop holds locally), so the
    /// per-packet test is a register compare, never a load of shared state.
    public let crypto: TransportCrypto
    /// The worker's own transport AEAD contexts (never shared with another thread).
    public let cipher: TransportCipher
    /// Set when something was queued for the control plane in this batch (notify once).
    public var controlPending = false

    /// `control` must outlive the processor: only its producer end is kept.
    public init(state: DataPlaneState, counters: WorkerCounters, control: ControlQueue, workerIndex: Int,
                crypto: TransportCrypto = .on, cipher: consuming TransportCipher = TransportCipher()) {
        self.state = state
        keypairs = state.keypairs.view
        peers = state.peers.view(worker: workerIndex)
        tenants = state.tenants
        ports = state.ports
        self.counters = counters
        self.control = control.producer
        self.workerIndex = UInt16(workerIndex)
        self.crypto = crypto
        self.cipher = cipher
    }

    /// The published route of tenant slot `t`, if the tenant exists. Acquire: its fields
    /// were written before it was published.
    @inline(__always)
    func route(_ t: Int) -> UnsafePointer<TenantRoute>? {
        UnsafePointer(bitPattern: tenants[t].load(ordering: .acquiring))
    }

    public enum DecryptResult: Equatable {
        /// Send `length` bytes of the tenant frame to tenant `tenant`'s socket.
        case deliver(tenant: Int, length: Int)
        /// Handled, nothing to deliver (handshake forwarded, keepalive).
        case consumed
        case dropped(DropReason)
    }

    /// What an uplink frame is, before any tenant frame is needed for it.
    public enum Arrival {
        /// A transport message for tenant slot `tenant`: decrypt it with `decrypt(_:outer:tenant:...)`.
        case transport(OuterFrame, tenant: Int)
        /// Nothing more to do (a handshake message handed to the control plane, or a drop).
        case done(DecryptResult)
    }

    /// First step for an uplink frame: parse it and find its tenant by UDP port. Handshake
    /// messages go to the control plane here; a transport message needs a frame of that
    /// tenant (the worker takes it from the tenant's own UMEM) and the second step.
    @inline(__always)
    public mutating func arrive(_ frame: UnsafeMutableRawPointer, length: Int) -> Arrival {
        guard let outer = OuterFrame.parse(frame, length: length) else { return .done(.dropped(.outerMalformed)) }
        let tenantPlusOne = ports[Int(outer.destinationPort)].load(ordering: .relaxed)
        guard tenantPlusOne != 0 else { return .done(.dropped(.unknownPort)) }
        let tenant = Int(tenantPlusOne - 1)
        let message = frame + outer.payloadOffset
        guard outer.payloadLength >= 4 else { return .done(.dropped(.messageMalformed)) }
        let typeWord = UInt32(littleEndian: message.loadUnaligned(as: UInt32.self))
        switch MessageType(typeWord: typeWord) {
        case .transport:
            return .transport(outer, tenant: tenant)
        case .initiation, .response, .cookieReply:
            return .done(forwardHandshake(outer, frame: frame, tenant: tenant,
                                          isInitiation: typeWord == MessageType.initiation.typeWord))
        case nil:
            return .done(.dropped(.messageMalformed))
        }
    }

    /// Both steps for a frame in memory (tests, benchmarks): `arrive`, then `decrypt` into
    /// `tenantFrame` (`tenantCapacity` bytes of room).
    @inline(__always)
    public mutating func decrypt(_ frame: UnsafeMutableRawPointer, length: Int,
                                 into tenantFrame: UnsafeMutableRawPointer, tenantCapacity: Int,
                                 now: Instant) -> DecryptResult {
        switch arrive(frame, length: length) {
        case .done(let result): return result
        case .transport(let outer, let tenant):
            return decrypt(frame, outer: outer, tenant: tenant, into: tenantFrame, tenantCapacity: tenantCapacity,
                           now: now)
        }
    }

    /// Second step: decrypts the transport message of `frame` out of place into
    /// `tenantFrame`, behind a fresh Ethernet header.
    @inline(__always)
    public mutating func decrypt(_ frame: UnsafeMutableRawPointer, outer: OuterFrame, tenant: Int,
                                 into tenantFrame: UnsafeMutableRawPointer, tenantCapacity: Int,
                                 now: Instant) -> DecryptResult {
        guard let route = route(tenant) else { return .dropped(.tenantDown) }
        let message = frame + outer.payloadOffset
        let messageLength = outer.payloadLength
        guard messageLength >= WireGuardProtocol.keepaliveSize else { return .dropped(.messageMalformed) }
        let receiver = UInt32(littleEndian: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard let entry = keypairs.lookup(receiver), Int(entry.pointee.tenant) == tenant else {
            return .dropped(.unknownReceiver)
        }
        let peer = entry.pointee.peer
        let inner = tenantFrame + Wire.ethernetHeaderSize
        let result: Result<Int, TransportRejection> = entry.pointee.keypair._withUnsafeGuaranteedRef { keypair in
            do throws(TransportRejection) {
                return .success(try crypto.open(keypair, message, length: messageLength, into: inner,
                                                capacity: tenantCapacity - Wire.ethernetHeaderSize, now: now,
                                                cipher: cipher))
            } catch {
                return .failure(error)
            }
        }
        let plaintextLength: Int
        switch result {
        case .success(let n): plaintextLength = n
        case .failure(let rejection):
            peers.noteDrop(peer)
            return .dropped(DropReason(rejection))
        }
        counters.add(.decrypted)

        // Authenticated: the peer is alive at this address. Tell the control plane about a
        // new keypair in use or a new endpoint, once each.
        if UInt(bitPattern: peers.sendingEntry(peer)) != UInt(bitPattern: entry),
           peers.shouldReportKeypair(peer, localIndex: entry.pointee.localIndex) {
            reportKeypairConfirmed(entry)
        }
        let key = outer.endpointKey(in: frame)
        if peers.route(peer)?.pointee.endpointKey != key, peers.shouldReportEndpoint(peer, key: key) {
            reportEndpoint(outer, frame: frame, tenant: tenant, peer: peer, key: key)
        }

        if plaintextLength == 0 {
            counters.add(.keepalivesReceived)
            peers.noteReceived(peer, bytes: messageLength, keepalive: true, now: now)
            return .consumed
        }
        guard let packet = InnerPacket(inner, count: plaintextLength) else {
            peers.noteDrop(peer)
            return .dropped(.innerMalformed)
        }
        // Cryptokey routing: the inner source must be one of this peer's AllowedIPs.
        guard route.pointee.allowedIPs.lookup(sourceOf: packet) == peer else {
            peers.noteDrop(peer)
            return .dropped(.innerSourceNotAllowed)
        }
        peers.noteReceived(peer, bytes: messageLength, keepalive: false, now: now)
        route.pointee.innerMAC.store(to: tenantFrame)
        route.pointee.hostMAC.store(to: tenantFrame + 6)
        Wire.store16(tenantFrame, 12, packet.isIPv6 ? Wire.etherTypeIPv6 : Wire.etherTypeIPv4)
        return .deliver(tenant: tenant, length: Wire.ethernetHeaderSize + packet.length)
    }

    public enum EncryptResult: Equatable {
        /// Send `length` bytes of the uplink frame.
        case send(length: Int)
        /// Handed to the control plane (no session yet); the tenant frame can be recycled.
        case staged
        case dropped(DropReason)
    }

    /// Processes one frame from tenant `tenant`'s namespace: route the inner destination to
    /// a peer, seal into `uplinkFrame` behind the peer's outer header.
    @inline(__always)
    public mutating func encrypt(tenant: Int, frame: UnsafeRawPointer, length: Int,
                                 into uplinkFrame: UnsafeMutableRawPointer, uplinkCapacity: Int,
                                 now: Instant) -> EncryptResult {
        guard length > Wire.ethernetHeaderSize else { return .dropped(.tenantMalformed) }
        let etherType = Wire.load16(frame, 12)
        guard etherType == Wire.etherTypeIPv4 || etherType == Wire.etherTypeIPv6 else { return .dropped(.tenantMalformed) }
        let inner = frame + Wire.ethernetHeaderSize
        guard let packet = InnerPacket(inner, count: length - Wire.ethernetHeaderSize) else {
            return .dropped(.tenantMalformed)
        }
        let packetLength = packet.length
        guard packet.isIPv6 == (etherType == Wire.etherTypeIPv6) else { return .dropped(.tenantMalformed) }
        guard let tenantRoute = route(tenant) else { return .dropped(.tenantDown) }
        guard let peer = tenantRoute.pointee.allowedIPs.lookup(destinationOf: packet) else { return .dropped(.noRoute) }

        guard let entry = peers.sendingEntry(peer) else {
            return stage(inner, length: packetLength, tenant: tenant, peer: peer)
        }
        guard let route = peers.route(peer) else {
            peers.noteDrop(peer)
            return .dropped(.noEndpoint)
        }
        let headerLength = route.pointee.length
        let mtu = tenantRoute.pointee.mtu
        let result: Result<SealedMessage, SealFailure> = entry.pointee.keypair._withUnsafeGuaranteedRef { keypair in
            do throws(SealFailure) {
                return .success(try crypto.seal(keypair, inner, length: packetLength, into: uplinkFrame + headerLength,
                                                capacity: uplinkCapacity - headerLength, now: now,
                                                cipher: cipher, mtu: mtu))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let sealed):
            route.pointee.write(to: uplinkFrame, payloadLength: sealed.length)
            counters.add(.encrypted)
            peers.noteSent(peer, bytes: sealed.length, now: now)
            return .send(length: headerLength + sealed.length)
        case .failure(.destinationTooSmall), .failure(.invalidLength):
            peers.noteDrop(peer)
            return .dropped(.packetTooBig)
        case .failure(.cipherFailed):
            peers.noteDrop(peer)
            return .dropped(.sealFailed)
        case .failure:
            // The keypair expired or ran out: the control plane stages and rekeys.
            return stage(inner, length: packetLength, tenant: tenant, peer: peer)
        }
    }

    // MARK: Hand-overs to the control plane

    @inline(__always)
    private mutating func forwardHandshake(_ outer: OuterFrame, frame: UnsafeRawPointer, tenant: Int,
                                           isInitiation: Bool) -> DecryptResult {
        // An initiation flood is the one the control thread cannot keep up with: initiations
        // may fill the queue to three quarters only, so that responses and cookie replies (to
        // the handshakes the gateway started, its rekeys included) and staged packets still
        // get through while it lasts.
        let spare = isInitiation ? control.capacity / 4 : 0
        guard outer.payloadLength <= ControlMessage.payloadCapacity, let slot = control.reserve(leaving: spare) else {
            return .dropped(.controlQueueFull)
        }
        slot.header.pointee = ControlMessage()
        slot.header.pointee.kind = .handshake
        slot.header.pointee.worker = workerIndex
        slot.header.pointee.tenant = UInt32(tenant)
        slot.header.pointee.length = UInt16(outer.payloadLength)
        slot.header.pointee.setOuter(outer, frame: frame)
        slot.payload.copyMemory(from: frame + outer.payloadOffset, byteCount: outer.payloadLength)
        control.commit()
        controlPending = true
        counters.add(.handshakeMessagesForwarded)
        return .consumed
    }

    @inline(__always)
    private mutating func stage(_ inner: UnsafeRawPointer, length: Int, tenant: Int, peer: UInt32) -> EncryptResult {
        guard length <= ControlMessage.payloadCapacity, let slot = control.reserve() else {
            return .dropped(.controlQueueFull)
        }
        slot.header.pointee = ControlMessage()
        slot.header.pointee.kind = .stagedPacket
        slot.header.pointee.worker = workerIndex
        slot.header.pointee.tenant = UInt32(tenant)
        slot.header.pointee.peer = peer
        slot.header.pointee.length = UInt16(length)
        slot.payload.copyMemory(from: inner, byteCount: length)
        control.commit()
        controlPending = true
        counters.add(.packetsStaged)
        return .staged
    }

    @inline(__always)
    private mutating func reportKeypairConfirmed(_ entry: UnsafePointer<KeypairEntry>) {
        // Once per keypair (shouldReportKeypair); the control plane ignores keypairs that are
        // not its "next" one (e.g. the previous keypair still in flight after a rotation).
        // A full queue must not lose the report for good (the responder would never send on
        // the session): the peer's next packet reports again.
        guard let slot = control.reserve() else {
            peers.forgetReports(entry.pointee.peer)
            return
        }
        slot.header.pointee = ControlMessage()
        slot.header.pointee.kind = .keypairConfirmed
        slot.header.pointee.worker = workerIndex
        slot.header.pointee.tenant = entry.pointee.tenant
        slot.header.pointee.peer = entry.pointee.peer
        slot.header.pointee.localIndex = entry.pointee.localIndex
        control.commit()
        controlPending = true
    }

    @inline(__always)
    private mutating func reportEndpoint(_ outer: OuterFrame, frame: UnsafeRawPointer, tenant: Int, peer: UInt32, key: UInt64) {
        guard let slot = control.reserve() else {
            peers.forgetReports(peer)   // as for keypairs: the next packet reports again
            return
        }
        slot.header.pointee = ControlMessage()
        slot.header.pointee.kind = .endpointChanged
        slot.header.pointee.worker = workerIndex
        slot.header.pointee.tenant = UInt32(tenant)
        slot.header.pointee.peer = peer
        slot.header.pointee.setOuter(outer, frame: frame)
        control.commit()
        controlPending = true
    }
}
