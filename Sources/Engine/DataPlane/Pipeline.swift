import WireGuard

/// What the data path knows about one tenant: its routing table (AllowedIPs → peer handle)
/// and the MACs of its veth pair. Immutable while workers run.
public struct TenantRoute: Sendable {
    public var listenPort: UInt16
    public var allowedIPs: AllowedIPs
    /// The host end's MAC (our frames' source) and the namespace end's (their destination).
    public var hostMAC: EthernetAddress
    public var innerMAC: EthernetAddress
    /// The tenant interface's MTU: plaintext is padded up to it, never past it.
    public var mtu: Int

    public init(listenPort: UInt16, allowedIPs: AllowedIPs, hostMAC: EthernetAddress,
                innerMAC: EthernetAddress, mtu: Int) {
        self.listenPort = listenPort
        self.allowedIPs = allowedIPs
        self.hostMAC = hostMAC
        self.innerMAC = innerMAC
        self.mtu = mtu
    }
}

/// Everything the workers share with the control plane: the keypair and peer tables (the
/// control plane publishes, workers read), the tenants' routes and the port map (fixed while
/// workers run), and the epochs that make retirement safe.
public final class DataPlaneState: @unchecked Sendable {
    public let keypairs: KeypairTable
    public let peers: PeerTable
    public let epochs: WorkerEpochs
    /// Tenant routes, indexed by tenant number; one allocation the workers read by pointer
    /// (no array copies, no reference counting on the per-packet path).
    let tenants: UnsafeMutablePointer<TenantRoute>
    public let tenantCount: Int
    /// UDP port → tenant number + 1 (0: none), 65536 entries.
    let ports: UnsafeMutablePointer<UInt16>

    public init(tenants routes: [TenantRoute], peerCapacity: Int, keypairCapacity: Int, workerCount: Int) {
        keypairs = KeypairTable(capacity: keypairCapacity)
        peers = PeerTable(capacity: peerCapacity)
        epochs = WorkerEpochs(workerCount: workerCount)
        tenantCount = routes.count
        tenants = .allocate(capacity: max(routes.count, 1))
        tenants.initialize(from: routes, count: routes.count)
        ports = .allocate(capacity: 65536)
        ports.initialize(repeating: 0, count: 65536)
        for (i, r) in routes.enumerated() { ports[Int(r.listenPort)] = UInt16(i + 1) }
    }

    deinit {
        tenants.deinitialize(count: tenantCount)
        tenants.deallocate()
        ports.deallocate()
    }

    public func tenantRoute(_ i: Int) -> TenantRoute { tenants[i] }
}

/// The per-packet work of one worker, free of any socket: decrypt one uplink frame into a
/// tenant frame, or encrypt one tenant frame into an uplink frame. The worker loop moves
/// descriptors around it; tests drive it with frames in memory.
public struct PacketProcessor {
    /// Keeps the tables alive; never read per packet.
    public let state: DataPlaneState
    /// The shared tables and the control queue as plain pointers and values: touching a
    /// class reference per packet would retain and release the same objects on every worker
    /// (one cache line bouncing between cores). `state` and the worker's `ControlQueue` keep
    /// what they point to alive.
    let keypairs: KeypairTableView
    let peers: PeerTableView
    let tenants: UnsafeMutablePointer<TenantRoute>
    let ports: UnsafeMutablePointer<UInt16>
    public let counters: WorkerCounters
    public let control: ControlQueue.Producer
    public let workerIndex: UInt16
    /// Set when something was queued for the control plane in this batch (notify once).
    public var controlPending = false

    /// `control` must outlive the processor: only its producer end is kept.
    public init(state: DataPlaneState, counters: WorkerCounters, control: ControlQueue, workerIndex: Int) {
        self.state = state
        keypairs = state.keypairs.view
        peers = state.peers.view
        tenants = state.tenants
        ports = state.ports
        self.counters = counters
        self.control = control.producer
        self.workerIndex = UInt16(workerIndex)
    }

    public enum DecryptResult: Equatable {
        /// Send `length` bytes of the tenant frame to tenant `tenant`'s socket.
        case deliver(tenant: Int, length: Int)
        /// Handled, nothing to deliver (handshake forwarded, keepalive).
        case consumed
        case dropped(DropReason)
    }

    /// Processes one frame from the uplink. A transport message is decrypted out of place
    /// into `tenantFrame` behind a fresh Ethernet header (`tenantCapacity` bytes of room).
    @inline(__always)
    public mutating func decrypt(_ frame: UnsafeMutableRawPointer, length: Int,
                                 into tenantFrame: UnsafeMutableRawPointer, tenantCapacity: Int,
                                 now: Instant) -> DecryptResult {
        guard let outer = OuterFrame.parse(frame, length: length) else { return .dropped(.outerMalformed) }
        let tenantPlusOne = ports[Int(outer.destinationPort)]
        guard tenantPlusOne != 0 else { return .dropped(.unknownPort) }
        let tenant = Int(tenantPlusOne - 1)
        let message = frame + outer.payloadOffset
        let messageLength = outer.payloadLength
        guard messageLength >= 4 else { return .dropped(.messageMalformed) }
        let typeWord = UInt32(littleEndian: message.loadUnaligned(as: UInt32.self))
        switch typeWord {
        case TransportHeader.typeWord:
            break
        case 1, 2, 3:
            return forwardHandshake(outer, frame: frame, tenant: tenant)
        default:
            return .dropped(.messageMalformed)
        }
        guard messageLength >= WireGuardProtocol.keepaliveSize else { return .dropped(.messageMalformed) }
        let receiver = UInt32(littleEndian: message.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard let entry = keypairs.lookup(receiver), Int(entry.pointee.tenant) == tenant else {
            return .dropped(.unknownReceiver)
        }
        let peer = entry.pointee.peer
        let inner = tenantFrame + Wire.ethernetHeaderSize
        let result: Result<Int, TransportRejection> = entry.pointee.keypair._withUnsafeGuaranteedRef { keypair in
            do throws(TransportRejection) {
                return .success(try keypair.open(message, length: messageLength, into: inner,
                                                 capacity: tenantCapacity - Wire.ethernetHeaderSize, now: now))
            } catch {
                return .failure(error)
            }
        }
        let plaintextLength: Int
        switch result {
        case .success(let n): plaintextLength = n
        case .failure(let rejection): return .dropped(DropReason(rejection))
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
        guard let packetLength = Tunnel.innerPacketLength(UnsafeRawBufferPointer(start: inner, count: plaintextLength))
        else { return .dropped(.innerMalformed) }
        // Cryptokey routing: the inner source must be one of this peer's AllowedIPs.
        let isIPv6 = inner.load(as: UInt8.self) >> 4 == 6
        let owner = tenants[tenant].allowedIPs.lookup(
            ipv4OrIPv6: UnsafeRawPointer(inner + (isIPv6 ? 8 : 12)), isIPv6: isIPv6)
        guard owner == peer else { return .dropped(.innerSourceNotAllowed) }
        peers.noteReceived(peer, bytes: messageLength, keepalive: false, now: now)
        tenants[tenant].innerMAC.store(to: tenantFrame)
        tenants[tenant].hostMAC.store(to: tenantFrame + 6)
        Wire.store16(tenantFrame, 12, isIPv6 ? Wire.etherTypeIPv6 : Wire.etherTypeIPv4)
        return .deliver(tenant: tenant, length: Wire.ethernetHeaderSize + packetLength)
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
        guard let packetLength = Tunnel.innerPacketLength(
            UnsafeRawBufferPointer(start: inner, count: length - Wire.ethernetHeaderSize))
        else { return .dropped(.tenantMalformed) }
        let isIPv6 = inner.load(as: UInt8.self) >> 4 == 6
        guard isIPv6 == (etherType == Wire.etherTypeIPv6) else { return .dropped(.tenantMalformed) }
        guard let peer = tenants[tenant].allowedIPs.lookup(
            ipv4OrIPv6: inner + (isIPv6 ? 24 : 16), isIPv6: isIPv6)
        else { return .dropped(.noRoute) }

        guard let entry = peers.sendingEntry(peer) else {
            return stage(inner, length: packetLength, tenant: tenant, peer: peer)
        }
        guard let route = peers.route(peer) else { return .dropped(.noEndpoint) }
        let headerLength = route.pointee.length
        let mtu = tenants[tenant].mtu
        let result: Result<SealedMessage, SealFailure> = entry.pointee.keypair._withUnsafeGuaranteedRef { keypair in
            do throws(SealFailure) {
                return .success(try keypair.seal(inner, length: packetLength, into: uplinkFrame + headerLength,
                                                 capacity: uplinkCapacity - headerLength, now: now, mtu: mtu))
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
            return .dropped(.packetTooBig)
        case .failure:
            // The keypair expired or ran out: the control plane stages and rekeys.
            return stage(inner, length: packetLength, tenant: tenant, peer: peer)
        }
    }

    // MARK: Hand-overs to the control plane

    @inline(__always)
    private mutating func forwardHandshake(_ outer: OuterFrame, frame: UnsafeRawPointer, tenant: Int) -> DecryptResult {
        guard outer.payloadLength <= ControlMessage.payloadCapacity, let slot = control.reserve() else {
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
        guard let slot = control.reserve() else { return }
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
        guard let slot = control.reserve() else { return }
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

extension AllowedIPs {
    /// The peer owning the 4- or 16-byte address at `address`.
    @inline(__always)
    func lookup(ipv4OrIPv6 address: UnsafeRawPointer, isIPv6: Bool) -> UInt32? {
        isIPv6 ? lookup(ipv6: address) : lookup(ipv4: address)
    }
}
