import Engine
import WireGuard

// Staging, and what sessions send: responses, initiations, staged packets, keepalives,
// cookie replies, through the tenant's kernel socket.
extension ControlPlane {
    // MARK: Staging

    /// A worker had no keypair for a packet to `handle`: the session holds it (within its own
    /// bound and the global byte budget) and asks for a handshake, or sends it at once when a
    /// keypair appeared after the worker looked.
    func stage(peer handle: UInt32, _ packet: UnsafeRawBufferPointer, now: Instant) {
        guard let session = peers[handle] else { return }
        let bytesBefore = session.stagedBytes
        if session.makeRoomToStage() { counters.add(.stagedDropped) }   // the kernel drops the oldest
        stagedBytes += session.stagedBytes - bytesBefore
        if stagedBytes + packet.count > stagedByteBudget {
            // Over the global budget: this packet is dropped (what others staged stays theirs).
            counters.add(.stagedDropped)
            session.packetWaiting(now: now)
        } else {
            session.stage(packet, now: now)
            stagedBytes += packet.count
        }
        perform(session, now: now)
    }

    // MARK: Sending

    /// Carries out everything the session asks for now (`Session.poll` until done): keys
    /// wiped, staged packets given up or sent, keepalives, initiations. Looks up a route to a
    /// configured endpoint first, then queues the session at its next deadline.
    func perform(_ session: PeerSession, now: Instant) {
        if let endpoint = session.endpoint, now >= session.nextRouteLookup, let resolveRoute,
           state.peers.currentRoute(session.handle) == nil {
            session.nextRouteLookup = now + .seconds(1)
            if let template = resolveRoute(endpoint.address, endpoint.port, tenants[session.tenant]!.socket.port) {
                if let old = state.peers.setRoute(session.handle, template) { reclaimer.retire(.memory(old)) }
            }
        }
        let mtu = tenants[session.tenant]!.mtu
        let host = host(session)
        let wallClock = Clock.wall()
        let bytesBefore = session.stagedBytes
        polling: while true {
            let output = session.poll(now: now, wallClock: wallClock, into: buffer, cipher: cipher, mtu: mtu,
                                      reachable: session.endpoint != nil, host: host)
            switch output {
            case .done:
                break polling
            case .writeToNetwork(let length):
                let isInitiation = buffer[0] == MessageType.initiation.rawValue
                if isInitiation, let index = session.handshakeIndex { pendingHandshakes[index] = session.handle }
                send(length, for: session)
                if isInitiation { counters.add(.initiationsSent) }
            case .dropped(let reason):
                count(reason, of: session)
            case .writeToTunnel:
                break   // a session's poll only writes messages for the network
            }
        }
        stagedBytes += session.stagedBytes - bytesBefore
        schedule(session)
    }

    /// A message a session could not make: counted, or logged.
    func count(_ reason: Session.DropReason, of session: PeerSession) {
        switch reason {
        case .noFreeIndex:
            counters.fail(.noFreeIndex)
        case .handshake(let error):
            counters.fail(HandshakeFailure(error))
        case .noEndpoint:
            Log.debug("\(tenantName(session)): no endpoint for peer \(session.publicKey.shortName): cannot initiate")
        case .seal(.cipherFailed):
            Log.error("\(tenantName(session)): the \(cipher.backend) cipher failed to seal a packet for peer "
                      + "\(session.publicKey.shortName); dropped")
        case .seal, .malformed, .transport, .unknownReceiverIndex, .invalidInnerPacket, .rateLimited, .bufferTooSmall:
            break   // a keypair that cannot send asked for a handshake; the rest is not made here
        }
    }

    func send(_ length: Int, for session: PeerSession) {
        guard let endpoint = session.endpoint else { return }
        sendRaw(length, tenant: session.tenant, to: endpoint.address, port: endpoint.port)
    }

    func sendRaw(_ length: Int, tenant: Int, to address: IPAddress, port: UInt16) {
        guard let socket = tenants[tenant]?.socket else { return }
        let error = socket.send(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), to: address,
                                                port: port)
        if error != nil { counters.add(.sendErrors) }
    }
}
