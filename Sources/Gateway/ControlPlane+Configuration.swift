import Engine
import WireGuard

// Configuration changes: tenants and peers come, change and go.
extension ControlPlane {
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
            session.replaceHandshake(with: PeerHandshake(identity: tenant.identity, remoteStatic: session.publicKey,
                                                         presharedKey: session.presharedKey ?? .none))
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
            session.setPersistentKeepalive(.seconds(Int64(setup.persistentKeepalive)), now: now)
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

    /// Wipes a session's keypairs, abandons its handshake and drops its staged packets
    /// (counted as `staged_dropped`).
    func endSession(_ session: PeerSession) {
        let bytesBefore = session.stagedBytes
        let dropped = session.clear(host: host(session))
        stagedBytes += session.stagedBytes - bytesBefore
        counters.add(.stagedDropped, dropped)
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
        session.setPersistentKeepalive(.seconds(Int64(seconds)), now: now)
        markDue(session)
    }

    public func handle(tenant slot: Int, publicKey: PublicKey) -> UInt32? {
        tenants[slot]?.peersByKey[publicKey]
    }
}
