// Tenants while running: adding, changing and removing them, their inner side (namespace,
// veth pair, XDP program, lanes), and the link faults the control thread watches for.

import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

extension Gateway {
    // MARK: Tenants while running

    /// Builds and starts serving one tenant. On failure nothing of it remains.
    func addTenant(_ tenant: TenantConfiguration) throws(GatewayError) {
        guard let control else { throw GatewayError("the gateway is not running") }
        guard let slot = freeSlots.popLast() else {
            throw GatewayError("tenant \(tenant.name): no room for another tenant (MaxTenants \(state?.tenantCapacity ?? 0))")
        }
        let inner: InnerSide
        do throws(GatewayError) { inner = try buildInnerSide(tenant, slot: slot) } catch {
            freeSlots.append(slot)
            throw error
        }
        let r = TenantRuntime(slot: slot, configuration: tenant, link: inner.link, program: inner.program)
        r.lanes = inner.lanes
        do throws(GatewayError) {
            let socket = try HandshakeSocket(port: tenant.listenPort)
            try uapi?.listen(interface: tenant.name)
            // Lanes first, so that frames find their lane as soon as the port is mapped.
            for (w, worker) in workers.enumerated() { worker.setLanes(worker.lanes + [r.lanes[w]]) }
            control.addTenant(slot: slot, name: tenant.name, privateKey: tenant.privateKey, socket: socket,
                              mtu: sizing.tunnelMTU)
            tenants[tenant.name] = r
            for peer in tenant.peers { try addPeer(peer, to: r) }
            publishRoute(r)
            try updateUplinkPorts()
        } catch {
            if tenants[tenant.name] === r {
                removeTenant(tenant.name)
            } else {
                uapi?.stopListening(interface: tenant.name)
                r.lanes.removeAll()
                r.program.detach()
                do throws(SystemError) { try r.link.destroy() } catch { Log.error("tenant \(tenant.name): \(error)") }
                freeSlots.append(slot)
            }
            throw GatewayError("tenant \(tenant.name)", error)
        }
    }

    /// What a tenant has in its namespace's direction.
    private struct InnerSide {
        let link: TenantLink
        let program: TenantProgram
        let lanes: [TenantLane]
    }

    /// The namespace (created if absent) and veth pair, the tenant XDP program on the host end
    /// and one lane (UMEM + AF_XDP socket) per worker, not yet handed to the workers. What an
    /// earlier run left behind is reclaimed and logged. On failure nothing of it remains.
    private func buildInnerSide(_ tenant: TenantConfiguration, slot: Int) throws(GatewayError) -> InnerSide {
        let spec = TenantLinkSpec(namespace: tenant.namespace, hostName: Gateway.hostLinkName(tenant.name),
                                  innerName: tenant.interfaceName, queues: workers.count,
                                  addresses: tenant.addresses.map { ($0.address, $0.length) },
                                  routes: tenant.peers.flatMap { $0.allowedIPs }, mtu: sizing.tunnelMTU)
        let link: TenantLink
        do throws(SystemError) { link = try TenantLink.create(spec) } catch {
            throw GatewayError("tenant \(tenant.name)", error)
        }
        for note in link.reclaimed { Log.info("tenant \(tenant.name): \(note)") }
        var program: TenantProgram?
        var lanes: [TenantLane] = []
        do throws(GatewayError) {
            let p: TenantProgram
            do throws(BPFError) {
                p = try TenantProgram(interfaceIndex: link.hostIndex, interfaceName: spec.hostName, mode: .native)
            } catch { throw GatewayError(error) }
            program = p
            if let stale = p.replacedStaleProgramID {
                Log.warning("tenant \(tenant.name): found a stale xdpwg XDP program (id \(stale)) on \(spec.hostName); "
                            + "replaced it with this run's")
            }
            for w in workers.indices {
                do throws(XDPError) {
                    // veth cannot do zero-copy: copy mode, and a UMEM per lane (DESIGN §3).
                    let umem = try Umem(frameCount: sizing.tenantFramesPerLane, frameSize: sizing.frameSize,
                                        fillRingSize: sizing.tenantRing, completionRingSize: sizing.tenantRing,
                                        numaNode: uplink?.numaNode)
                    let socket = try XskSocket(interface: spec.hostName, queue: UInt32(w), umem: umem,
                                               configuration: XskConfiguration(rxSize: sizing.tenantRing,
                                                                               txSize: sizing.tenantRing, copyMode: true))
                    do throws(BPFError) { try p.register(socketFD: socket.fd, queue: UInt32(w)) } catch {
                        throw XDPError("registering AF_XDP sockets in xsks_map", code: EINVAL, detail: "\(error)")
                    }
                    lanes.append(TenantLane(tenant: slot, socket: socket))
                } catch { throw GatewayError("queue \(w)", error) }
            }
            return InnerSide(link: link, program: p, lanes: lanes)
        } catch {
            lanes.removeAll()
            program?.detach()
            do throws(SystemError) { try link.destroy() } catch { Log.error("tenant \(tenant.name): \(error)") }
            throw GatewayError("tenant \(tenant.name)", error)
        }
    }

    // MARK: Faults

    /// Faults the gateway rides out, noticed by polling twice a second on the control thread
    /// (the data path never waits for it); each is logged once when it starts and once when
    /// it ends, and shown in the stats segment.
    ///
    /// - The uplink set down, or losing its carrier: nothing is rebuilt, because nothing
    ///   breaks. Our XDP program hangs on a bpf_link, which survives down and up; the AF_XDP
    ///   sockets stay bound (the kernel unbinds them only when the device goes away); the
    ///   kernel refuses to transmit meanwhile (ENETDOWN: descriptors wait in the TX ring, or
    ///   are dropped as `uplink_tx_ring_full` once it fills) and receives nothing. When the
    ///   link is up again, traffic resumes where it was, sessions included.
    /// - A tenant's namespace deleted (its name gone, or the veth pair gone with it): the
    ///   tenant goes down (`markDown`). Peers, sessions, the port and the `wg` socket stay, so
    ///   that `wg show` still shows the tenant and a reattached tenant resumes at once.
    func watchLinks(now: Instant) {
        guard let linkWatch, let uplink, now >= nextLinkCheck else { return }
        nextLinkCheck = now + .milliseconds(500)
        let state: LinkState?
        do throws(SystemError) { state = try linkWatch.linkState(named: uplink.name) } catch {
            return     // an rtnetlink hiccup is no evidence either way: ask again next time
        }
        let running = state.map { $0.index == uplink.index && $0.isRunning } ?? false
        if running != uplinkRunning {
            uplinkRunning = running
            if running {
                Log.notice("uplink \(uplink.name) is up again: traffic resumes (XDP program and AF_XDP sockets were kept)")
            } else {
                uplinkDownEvents += 1
                let why = state == nil || state?.index != uplink.index ? "it is gone"
                    : state?.isUp == false ? "set down" : "no carrier"
                Log.error("uplink \(uplink.name) is down (\(why)): nothing is received or sent until it is up again")
            }
        }
        for r in tenants.values where r.down == nil {
            if !r.link.namespaceExists {
                markDown(r, reason: "its network namespace '\(r.configuration.namespace)' was deleted")
                continue
            }
            // An rtnetlink error is no evidence either way: ask again next time.
            do throws(SystemError) {
                if try linkWatch.linkState(named: r.link.spec.hostName)?.index != r.link.hostIndex {
                    markDown(r, reason: "its veth '\(r.link.spec.hostName)' is gone")
                }
            } catch {}
        }
    }

    /// Takes a tenant whose namespace is gone off the data path: its lanes go (the workers
    /// then drop its peers' packets as `tenant_down`), its XDP program is detached and the
    /// host end of its veth removed if still there. The tenant stays configured: a reload
    /// (`xdpwg reload`, SIGHUP) reattaches it to a namespace of that name, made anew if
    /// absent, as at start. It is not reattached on its own: a namespace that vanished was
    /// most likely removed on purpose, and one that reappears may not be meant for us.
    func markDown(_ r: TenantRuntime, reason: String) {
        let name = r.configuration.name
        r.down = reason
        Log.error("tenant \(name) is down: \(reason); its peers' packets are dropped (tenant_down) until "
                  + "`xdpwg reload` (or SIGHUP) reattaches it")
        for worker in workers { worker.setLanes(worker.lanes.filter { $0.tenant != r.slot }) }
        r.lanes.removeAll()        // the sockets close; the workers no longer hold them
        r.program.detach()
        do throws(SystemError) { try r.link.abandon() } catch { Log.error("tenant \(name): \(error)") }
    }

    /// Gives a down tenant a new inner side (its namespace made anew if absent), keeping its
    /// peers and their sessions. On failure it stays down.
    func reattach(_ r: TenantRuntime) throws(GatewayError) {
        let inner = try buildInnerSide(r.configuration, slot: r.slot)
        r.link = inner.link
        r.program = inner.program
        r.lanes = inner.lanes
        r.down = nil
        for (w, worker) in workers.enumerated() { worker.setLanes(worker.lanes + [r.lanes[w]]) }
        publishRoute(r)            // the new veth pair has new MAC addresses
        Log.notice("tenant \(r.configuration.name) is up again: reattached to network namespace '\(r.configuration.namespace)'")
    }

    /// Stops serving a tenant and removes everything of it: its port, peers (keys wiped),
    /// route, lanes, XDP program, veth pair and (if we made it) namespace.
    func removeTenant(_ name: String) {
        guard let r = tenants.removeValue(forKey: name) else { return }
        tenantSums[r.slot] = nil   // the stats pass under way counted its peers
        uapi?.stopListening(interface: name)
        do throws(GatewayError) { try updateUplinkPorts() } catch { Log.error("tenant \(name): \(error)") }
        control?.removeTenant(slot: r.slot)
        for worker in workers { worker.setLanes(worker.lanes.filter { $0.tenant != r.slot }) }
        r.lanes.removeAll()        // the sockets close; the workers no longer hold them
        r.program.detach()
        do throws(SystemError) { try r.link.destroy() } catch { Log.error("tenant \(name): \(error)") }
        freeSlots.append(r.slot)
    }

    private func addPeer(_ peer: PeerConfiguration, to r: TenantRuntime) throws(GatewayError) {
        guard let control else { return }
        let setup = ControlPlane.PeerSetup(publicKey: peer.publicKey, presharedKey: peer.presharedKey,
                                           endpoint: peer.endpoint.map { ($0.address, $0.port) },
                                           persistentKeepalive: Int(peer.persistentKeepalive))
        guard let handle = control.addPeer(tenant: r.slot, setup, now: Clock.now()) else {
            throw GatewayError("peer \(peer.publicKey.shortName): no room for another peer (MaxPeers "
                               + "\(state?.peers.capacity ?? 0))")
        }
        r.handles[peer.publicKey] = handle
    }

    /// Publishes the tenant's route from its configuration: every AllowedIP to its peer.
    private func publishRoute(_ r: TenantRuntime) {
        var table = AllowedIPs()
        for peer in r.configuration.peers {
            guard let handle = r.handles[peer.publicKey] else { continue }
            for prefix in peer.allowedIPs { table.insert(prefix, peer: handle) }
        }
        control?.publishRoute(tenant: r.slot, TenantRoute(listenPort: r.configuration.listenPort, allowedIPs: table,
                                                          hostMAC: r.link.hostMAC, innerMAC: r.link.innerMAC,
                                                          mtu: sizing.tunnelMTU))
    }

    /// The uplink's XDP program steers exactly the running tenants' ports.
    private func updateUplinkPorts() throws(GatewayError) {
        do throws(BPFError) {
            try uplinkProgram?.setPorts(tenants.values.map { $0.configuration.listenPort }.sorted())
        } catch { throw GatewayError("uplink XDP port map", error) }
    }

    /// Changes a running tenant in place: key, port, peers. Peers that keep their public key
    /// keep their session.
    func changeTenant(_ d: TenantDiff) throws(GatewayError) {
        guard let control, let r = tenants[d.name] else { return }
        if d.listenPortChanged {
            let socket = try HandshakeSocket(port: d.new.listenPort)
            control.setSocket(tenant: r.slot, socket)
        }
        if d.privateKeyChanged { control.setPrivateKey(tenant: r.slot, d.new.privateKey) }
        let oldPrefixes = r.configuration.peers.flatMap(\.allowedIPs)
        let removed = d.removedPeers.compactMap { r.handles.removeValue(forKey: $0) }
        r.configuration = d.new
        var failure: GatewayError?
        for peer in d.addedPeers {
            do throws(GatewayError) { try addPeer(peer, to: r) } catch { failure = failure ?? error }
        }
        for p in d.changedPeers {
            guard let handle = r.handles[p.new.publicKey] else { continue }
            if p.presharedKeyChanged { control.setPresharedKey(handle, p.new.presharedKey) }
            if p.endpointChanged { control.setEndpoint(handle, p.new.endpoint.map { ($0.address, $0.port) }) }
            if p.keepaliveChanged {
                control.setPersistentKeepalive(handle, seconds: Int(p.new.persistentKeepalive), now: Clock.now())
            }
        }
        if failure != nil {
            // Keep the configuration true to what runs: peers that could not be added are not in it.
            r.configuration.peers.removeAll { r.handles[$0.publicKey] == nil }
        }
        // The route without removed peers goes out before they are removed, so that no
        // packet is routed to a peer that no longer exists.
        if d.routesChanged || failure != nil { publishRoute(r) }
        for handle in removed { control.removePeer(handle) }
        if d.listenPortChanged { try updateUplinkPorts() }
        // A down tenant has no namespace to route in: reattaching builds its routes afresh.
        if r.down == nil {
            do throws(SystemError) {
                try r.link.updateRoutes(from: oldPrefixes, to: r.configuration.peers.flatMap(\.allowedIPs))
            } catch { failure = failure ?? GatewayError("tenant \(d.name): routes in namespace \(d.new.namespace)", error) }
        }
        if let failure { throw failure }
    }
}
