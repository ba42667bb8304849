import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// A running gateway: everything `xdpwg up` builds from a configuration, in the order it is
/// built, and torn down in reverse on every exit path (signal, error, normal stop).
///
/// Built: the data-plane tables → the uplink's XDP program → per uplink queue, a UMEM, an
/// AF_XDP socket and a worker pinned to its core → the control plane → then each tenant
/// (`addTenant`): namespace and veth pair, its XDP program, one lane (UMEM + AF_XDP socket)
/// per worker, its kernel UDP socket, its peers and route, its port on the uplink. The
/// calling thread then runs the control loop.
///
/// Tenants and peers change while running (`apply`, used by reload and by `wg set`): only
/// what differs is touched, so unchanged peers keep their sessions.
public final class Gateway {
    /// Frame and ring sizes (DESIGN §3).
    public struct Sizing: Sendable {
        public var frameSize = 2048
        public var uplinkFrames = 8192
        public var uplinkFillRing: UInt32 = 4096
        public var uplinkRing: UInt32 = 2048
        public var tenantFramesPerLane = 2048
        public var tenantRing: UInt32 = 1024
        public var tunnelMTU = 1420
        public init() {}
    }

    /// One tenant while it runs.
    final class TenantRuntime {
        let slot: Int
        var configuration: TenantConfiguration
        /// The inner side (namespace, veth pair, XDP program, lanes): replaced when a tenant
        /// that went down is reattached.
        var link: TenantLink
        var program: TenantProgram
        /// One per worker, in worker order; empty while the tenant is down.
        var lanes: [TenantLane] = []
        /// Peer handles by public key.
        var handles: [PublicKey: UInt32] = [:]
        /// Why the tenant is down (its namespace was deleted while running); nil while up.
        var down: String?

        init(slot: Int, configuration: TenantConfiguration, link: TenantLink, program: TenantProgram) {
            self.slot = slot
            self.configuration = configuration
            self.link = link
            self.program = program
        }
    }

    /// The configuration as running now (the file's, changed by reloads and `wg set`).
    public private(set) var configuration: GatewayConfiguration
    /// The file `reload` reads again.
    public let configurationPath: String?
    public let sizing: Sizing
    private var teardown: [(String, () -> Void)] = []
    private var workers: [Worker] = []
    private var controlQueues: [ControlQueue] = []
    private var uplinkProgram: UplinkProgram?
    private var control: ControlPlane?
    private var state: DataPlaneState?
    private var queues: [UInt32] = []
    private var uplink: NetworkInterface?
    /// Running tenants by name, and the free tenant slots.
    private var tenants: [String: TenantRuntime] = [:]
    private var freeSlots: [Int] = []
    private var controlSocket: ControlSocket?
    private var stats: StatsSegment?
    private var uapi: UAPIServer?
    private var nextStatsPublish = Instant.zero
    /// The peer stats walk: the next handle, which handles hold a published record (to empty
    /// the slots of peers that went away), and the tenants' sums of the pass under way.
    private var statsCursor = 0, lastPeerStats = Instant.zero
    private var publishedPeers: [Bool] = []
    private var tenantSums: [Int: TenantStatsRecord] = [:]
    private var publishedTenants = Set<Int>()
    /// The links the gateway depends on, polled by the control thread (`watchLinks`).
    private var linkWatch: RouteNetlink?
    private var nextLinkCheck = Instant.zero
    private var uplinkRunning = true
    private var uplinkDownEvents: UInt64 = 0
    /// Where each tenant's `wg` socket goes (tests use their own).
    public var uapiDirectory = "/var/run/wireguard"
    /// Where the control and stats files go (tests use their own).
    public var runtimeDirectory = ControlSocket.defaultDirectory
    /// `.off` only for the perf lab's crypto-off device (`Bench.CryptoOffGateway`): the
    /// workers copy instead of encrypting and decrypting, and authenticate nothing. Set
    /// before `start`. Perf-lab interface: visible only to `@_spi(PerfLab) import Gateway`,
    /// which nothing of the product does.
    @_spi(PerfLab) public var transportCrypto: TransportCrypto = .on
    /// The transport AEAD backend the workers and the control thread run (set by `start`).
    public private(set) var cipherBackend: AEADBackend?

    public init(configuration: GatewayConfiguration, configurationPath: String? = nil, sizing: Sizing = Sizing()) {
        self.configuration = configuration
        self.configurationPath = configurationPath
        self.sizing = sizing
    }

    deinit { tearDown() }

    /// The host end of tenant `name`'s veth pair in the gateway's namespace (IFNAMSIZ 15).
    public static func hostLinkName(_ tenant: String) -> String {
        if tenant.count <= 12 { return "xw-" + tenant }
        var h: UInt32 = 2_166_136_261
        for b in tenant.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return "xw-" + String(h, radix: 16)
    }

    // MARK: Start

    /// Refuses early, with the reason, when this process cannot do what `up` needs.
    public static func checkPrivileges() throws(GatewayError) {
        guard geteuid() == 0 else {
            throw GatewayError("xdpwg up must run as root: it loads XDP programs, creates network namespaces "
                               + "and AF_XDP sockets (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)")
        }
    }

    /// Builds everything. On failure, whatever was built is torn down before this throws.
    public func start() throws(GatewayError) {
        do throws(GatewayError) {
            try build()
        } catch {
            tearDown()
            throw error
        }
    }

    private func build() throws(GatewayError) {
        try Gateway.checkPrivileges()
        if transportCrypto == .off {
            Log.warning("crypto is OFF: benchmark mode, packets are NOT authenticated")
        }
        let config = configuration
        // First: a second gateway with the same name is refused before it touches anything.
        let controlSocket = try ControlSocket(name: config.gateway.name, directory: runtimeDirectory)
        self.controlSocket = controlSocket
        onTeardown("control socket") { [unowned self] in self.controlSocket = nil }
        let uplink: NetworkInterface
        do throws(SystemError) { uplink = try NetworkInterface.named(config.gateway.uplink, role: "uplink") } catch {
            throw GatewayError("\(error)")
        }
        self.uplink = uplink
        let queues = config.gateway.queues ?? (0..<UInt32(uplink.rxQueueCount)).map { $0 }
        for q in queues where Int(q) >= uplink.rxQueueCount {
            throw GatewayError("uplink \(uplink.name) has \(uplink.rxQueueCount) RX queue(s); queue \(q) does not exist")
        }
        self.queues = queues
        let cores: [Int]
        if let configured = config.gateway.cores {
            cores = configured
        } else {
            let local = CPUTopology.cores(onNode: uplink.numaNode)
            let pool = local.isEmpty ? CPUTopology.allowedCores() : local
            cores = queues.indices.map { pool[$0 % max(pool.count, 1)] }
        }

        let capacity = config.gateway.capacity(tenants: config.tenants.count, peers: config.peerCount)
        // The stats segment before anything touches the system: it also refuses a second
        // gateway of the same name. Closed last (the workers' counters live in it).
        let stats = try StatsSegment.create(name: config.gateway.name, directory: runtimeDirectory,
                                            workers: queues.enumerated().map { (queue: $1, core: $0 < cores.count ? cores[$0] : nil) },
                                            tenantCapacity: capacity.tenants, peerCapacity: capacity.peers,
                                            rxQueueCount: uplink.rxQueueCount)
        self.stats = stats
        onTeardown("stats segment") { stats.close() }
        let uapi = UAPIServer(directory: uapiDirectory, handler: self)
        self.uapi = uapi
        onTeardown("wg sockets") { uapi.shutdown() }
        let state = DataPlaneState(tenantCapacity: capacity.tenants, peerCapacity: capacity.peers,
                                   keypairCapacity: max(1024, capacity.peers * 4), workerCount: queues.count)
        self.state = state
        freeSlots = (0..<capacity.tenants).reversed()
        let cipherBackend = try Gateway.chooseCipher(config.gateway.crypto)
        self.cipherBackend = cipherBackend
        stats.publish(crypto: transportCrypto == .off ? nil : cipherBackend)

        let mode: XDPAttachMode = config.gateway.xdpMode == .generic ? .generic : .native
        let uplinkProgram: UplinkProgram
        do throws(BPFError) {
            // A frame longer than a UMEM frame holds is dropped and counted by the program: after
            // its redirect the kernel would drop it uncounted (a jumbo-MTU uplink, an attacker).
            uplinkProgram = try UplinkProgram(interfaceIndex: uplink.index, interfaceName: uplink.name, mode: mode,
                                              ports: [], maxFrameLength: sizing.frameSize - UplinkProgram.receiveHeadroom)
        } catch { throw GatewayError("\(error)") }
        self.uplinkProgram = uplinkProgram
        onTeardown("uplink XDP program") { uplinkProgram.detach() }
        if uplinkProgram.fellBackToGeneric {
            Log.warning("uplink \(uplink.name): native XDP failed; running in generic mode (slower)")
        }
        if let stale = uplinkProgram.replacedStaleProgramID {
            Log.warning("uplink \(uplink.name): found a stale xdpwg XDP program (id \(stale)) left attached by an "
                        + "earlier run; replaced it with this run's")
        }
        do throws(SystemError) { linkWatch = try RouteNetlink() } catch {
            Log.warning("rtnetlink unavailable (\(error)); uplink and tenant link faults will not be noticed")
        }

        // Per queue: a UMEM, an AF_XDP socket and a worker (its tenant lanes come with the tenants).
        for (w, queue) in queues.enumerated() {
            let cipher = try Gateway.cipher(cipherBackend)
            do throws(XDPError) {
                let uplinkUmem = try Umem(frameCount: sizing.uplinkFrames, frameSize: sizing.frameSize,
                                          fillRingSize: sizing.uplinkFillRing, completionRingSize: sizing.uplinkRing,
                                          numaNode: uplink.numaNode)
                let uplinkSocket = try XskSocket(interface: uplink.name, queue: queue, umem: uplinkUmem,
                                                 configuration: XskConfiguration(rxSize: sizing.uplinkRing,
                                                                                 txSize: sizing.uplinkRing))
                do throws(BPFError) { try uplinkProgram.register(socketFD: uplinkSocket.fd, queue: queue) } catch {
                    throw XDPError("registering AF_XDP sockets in xsks_map", code: EINVAL, detail: "\(error)")
                }
                let controlQueue = ControlQueue()
                controlQueues.append(controlQueue)
                workers.append(try Worker(index: w, core: w < cores.count ? cores[w] : nil, uplink: uplinkSocket,
                                          state: state, control: controlQueue, counters: stats.workerCounters(w),
                                          crypto: transportCrypto, cipher: cipher))
            } catch {
                throw GatewayError("queue \(queue): \(error)")
            }
        }

        let control = ControlPlane(state: state, cipher: try Gateway.cipher(cipherBackend))
        control.resolveRoute = Gateway.routeResolver(uplink: uplink)
        control.onSessionEstablished = Gateway.sessionLogger()
        self.control = control
        onTeardown("sessions") { control.shutdown() }
        if let listen = config.gateway.metricsListen {
            let server = MetricsServer(endpoint: listen, segment: stats)
            try server.start()
            onTeardown("metrics server") { server.stop() }
        }
        for worker in workers {
            do throws(XDPError) { try worker.start() } catch { throw GatewayError("\(error)") }
            onTeardown("worker \(worker.index)") { worker.stop() }
        }
        // Tenants go before the workers stop (they are torn down first, each on its own).
        onTeardown("tenants") { [unowned self] in
            for name in self.tenants.keys.sorted() { self.removeTenant(name) }
        }
        for tenant in config.tenants {
            try addTenant(tenant)
        }
        Log.info("up: uplink \(uplink.name) (\(uplinkProgram.attachedMode == .native ? "native" : "generic") XDP), "
                 + "queues \(queues.map(String.init).joined(separator: ",")) on cores "
                 + "\(cores.prefix(queues.count).map(String.init).joined(separator: ",")), "
                 + "\(config.tenants.count) tenant(s), \(config.peerCount) peer(s), "
                 + "crypto \(transportCrypto == .off ? "OFF" : cipherBackend.name)")
    }

    /// The transport AEAD backend for `setting`: a forced one if it passes its self-test
    /// (else start-up fails, saying why), or with `auto` the fastest of those that pass
    /// (`AEADSelection`; the others are skipped with a warning). Logs the choice with the rates.
    static func chooseCipher(_ setting: CryptoSetting) throws(GatewayError) -> AEADBackend {
        switch setting {
        case .forced(let backend):
            do throws(TransportCipherError) { _ = try AEADSelection.verifiedCipher(backend) } catch {
                throw GatewayError("[Gateway] Crypto = \(backend.name) cannot be used on this machine: \(error.reason) "
                                   + "(\(backend.libraryVersion)); set Crypto to auto or another backend")
            }
            Log.notice("crypto: \(backend.name) (forced by [Gateway] Crypto; \(backend.libraryVersion), self-test passed)")
            return backend
        case .auto:
            let survey = AEADSelection.survey()
            for m in survey where !m.isUsable {
                Log.warning("crypto: \(m.backend.name) skipped: \(m.failure ?? "unusable") (\(m.library))")
            }
            guard let chosen = AEADSelection.fastest(survey) else {
                throw GatewayError("no transport cipher backend passed its self-test on this machine: "
                                   + survey.map(\.summary).joined(separator: ", "))
            }
            Log.notice("crypto: \(chosen.name) (auto: \(AEADSelection.summary(survey, chosen: chosen)))")
            return chosen
        }
    }

    /// A self-tested cipher of `backend` for one thread (a worker, the control thread).
    static func cipher(_ backend: AEADBackend) throws(GatewayError) -> TransportCipher {
        do throws(TransportCipherError) { return try AEADSelection.verifiedCipher(backend) } catch {
            throw GatewayError("crypto: \(error)")
        }
    }

    /// Logs completed handshakes per peer: the first at once, then at most one line per peer
    /// every 10 minutes (rekeys come every 2 minutes per peer; thousands of peers must not
    /// flood the log), saying how many were not logged in between.
    static func sessionLogger() -> (String, PublicKey, Bool) -> Void {
        var throttle = Log.Throttle<PublicKey>(interval: .seconds(600))
        return { tenant, peer, first in
            guard let pass = throttle.admit(peer, now: Clock.now()) else { return }
            Log.info((first ? "session established" : "handshake completed") + pass.note,
                     ["tenant": tenant, "peer": peer.shortName])
        }
    }

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
            throw GatewayError("tenant \(tenant.name): \(error.description)")
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
            throw GatewayError("tenant \(tenant.name): \(error)")
        }
        for note in link.reclaimed { Log.info("tenant \(tenant.name): \(note)") }
        var program: TenantProgram?
        var lanes: [TenantLane] = []
        do throws(GatewayError) {
            let p: TenantProgram
            do throws(BPFError) {
                p = try TenantProgram(interfaceIndex: link.hostIndex, interfaceName: spec.hostName, mode: .native)
            } catch { throw GatewayError("\(error)") }
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
                } catch { throw GatewayError("queue \(w): \(error)") }
            }
            return InnerSide(link: link, program: p, lanes: lanes)
        } catch {
            lanes.removeAll()
            program?.detach()
            do throws(SystemError) { try link.destroy() } catch { Log.error("tenant \(tenant.name): \(error)") }
            throw GatewayError("tenant \(tenant.name): \(error.description)")
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
    private func watchLinks(now: Instant) {
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
    private func markDown(_ r: TenantRuntime, reason: String) {
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
    private func reattach(_ r: TenantRuntime) throws(GatewayError) {
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
        } catch { throw GatewayError("uplink XDP port map: \(error)") }
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
            } catch { failure = failure ?? GatewayError("tenant \(d.name): routes in namespace \(d.new.namespace): \(error)") }
        }
        if let failure { throw failure }
    }

    /// Applies the changes from the running configuration to `new`, and makes `new` (what
    /// was applied of it) the running configuration. Returns one line per change. A failure
    /// of one tenant does not stop the others; the first is thrown after all were tried.
    @discardableResult
    public func apply(_ new: GatewayConfiguration, fileName: String, source: String = "reload") throws(GatewayError) -> [String] {
        let diff: ConfigurationDiff
        do throws(ConfigurationError) { diff = try configuration.diff(to: new, fileName: fileName) } catch {
            throw GatewayError("\(error)")
        }
        var failures: [String] = []
        for name in diff.removedTenants { removeTenant(name) }
        for t in diff.rebuiltTenants {
            removeTenant(t.name)
            do throws(GatewayError) { try addTenant(t) } catch { failures.append(error.description) }
        }
        for d in diff.changedTenants {
            do throws(GatewayError) { try changeTenant(d) } catch { failures.append(error.description) }
        }
        for t in diff.addedTenants {
            do throws(GatewayError) { try addTenant(t) } catch { failures.append(error.description) }
        }
        // Tenants that went down (their namespace deleted) get a new inner side, with their
        // configuration as it now is.
        var summary = diff.summary
        for r in tenants.values.sorted(by: { $0.configuration.name < $1.configuration.name }) where r.down != nil {
            do throws(GatewayError) {
                try reattach(r)
                summary.append("tenant \(r.configuration.name): reattached to network namespace '\(r.configuration.namespace)' (it was down)")
            } catch { failures.append("tenant \(r.configuration.name) stays down: \(error.description)") }
        }
        // What runs now, in the new file's order.
        var running = new
        running.tenants = new.tenants.compactMap { tenants[$0.name]?.configuration }
        configuration = running
        for line in diff.summary { Log.info("\(source): \(line)") }
        if !failures.isEmpty { throw GatewayError(failures.joined(separator: "\n")) }
        return summary
    }

    /// Reads the configuration file again and applies what changed. A file with problems
    /// changes nothing: the running configuration stays.
    @discardableResult
    public func reload() throws(GatewayError) -> [String] {
        guard let path = configurationPath else { throw GatewayError("no configuration file to reload") }
        let new: GatewayConfiguration
        do throws(ConfigurationError) { new = try GatewayConfiguration.load(path: path) } catch {
            throw GatewayError("\(error)\nthe running configuration stays")
        }
        return try apply(new, fileName: path)
    }

    /// Outer header templates from the kernel's tables: the route to the endpoint must leave
    /// through the uplink; the next hop's MAC comes from the neighbour table (the kernel
    /// resolves it when our handshake messages leave through its socket).
    static func routeResolver(uplink: NetworkInterface) -> ((IPAddress, UInt16, UInt16) -> OuterHeaderTemplate?)? {
        let netlink: RouteNetlink
        do throws(SystemError) { netlink = try RouteNetlink() } catch {
            Log.warning("rtnetlink unavailable (\(error)); next hops are learned from received packets only")
            return nil
        }
        return { address, port, listenPort in
            guard let route = try? netlink.route(to: address), route.kind == .unicast,
                  route.interfaceIndex == uplink.index, let source = route.preferredSource,
                  let mac = try? netlink.neighbour(of: route.nextHop, interfaceIndex: uplink.index)
            else { return nil }
            return OuterHeaderTemplate(sourceMAC: uplink.macAddress, destinationMAC: mac, vlanTCI: 0,
                                       source: source, sourcePort: listenPort, destination: address,
                                       destinationPort: port)
        }
    }

    private func onTeardown(_ what: String, _ body: @escaping () -> Void) {
        teardown.append((what, body))
    }

    /// Undoes everything built, newest first. Idempotent.
    public func tearDown() {
        while let (_, body) = teardown.popLast() { body() }
        workers.removeAll()
        tenants.removeAll()
    }

    // MARK: Running

    /// Signals the control loop handles; block them in every thread before `start` so the
    /// workers inherit the mask and only the loop sees them.
    public static let handledSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP, SIGUSR1]

    public static func blockHandledSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in handledSignals { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Runs the control loop until SIGINT or SIGTERM: drains the workers' queues, fires
    /// timers, reports worker trouble. SIGUSR1 prints the counters; SIGHUP is reserved for
    /// reloading the configuration.
    public func runControlLoop() {
        guard let control else { return }
        var fixed = controlQueues.map { pollfd(fd: $0.eventFD, events: Int16(POLLIN), revents: 0) }
        if let controlSocket { fixed.append(pollfd(fd: controlSocket.fd, events: Int16(POLLIN), revents: 0)) }
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in Gateway.handledSignals { sigaddset(&signals, s) }
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        var reportedPinning = Set<Int>()
        while true {
            // The `wg` sockets change with the tenants: their descriptors are asked for each turn.
            var fds = fixed + (uapi?.pollDescriptors() ?? [])
            _ = poll(&fds, nfds_t(fds.count), 10)
            let now = Clock.now()
            control.drain(controlQueues, now: now)
            control.tick(now: now)
            watchLinks(now: now)
            publishStats(now: now)
            uapi?.service(Array(fds[fixed.count...]))
            for w in workers where w.pinningError != nil && !reportedPinning.contains(w.index) {
                reportedPinning.insert(w.index)
                Log.warning("worker \(w.index): could not pin to core: \(w.pinningError!)")
            }
            controlSocket?.service { command in self.command(command) }
            let signal = sigtimedwait(&signals, nil, &zero)
            if signal == SIGINT || signal == SIGTERM {
                Log.info("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopping")
                break
            } else if signal == SIGUSR1 {
                printCounters()
            } else if signal == SIGHUP {
                Log.info("SIGHUP: reloading the configuration")
                do throws(GatewayError) { try reload() } catch { Log.error("reload refused: \(error)") }
            }
        }
    }

    /// What `wg show` sees of a tenant: its configuration, with the endpoint the peer was
    /// last heard from, its latest handshake and its byte counters.
    func deviceState(_ r: TenantRuntime) -> UAPIDeviceState {
        UAPIDeviceState(privateKey: r.configuration.privateKey, listenPort: r.configuration.listenPort, fwmark: 0,
                        peers: r.configuration.peers.map { p in
            var state = UAPIPeerState(p)
            if let handle = r.handles[p.publicKey], let report = control?.report(handle) {
                if let e = report.endpoint { state.endpoint = Endpoint(address: e.address, port: e.port) }
                state.lastHandshake = report.lastHandshake.map {
                    let ns = StatsSegment.unixNanoseconds($0)
                    return (Int64(ns / 1_000_000_000), Int64(ns % 1_000_000_000))
                }
                state.rxBytes = report.activity.rxBytes
                state.txBytes = report.activity.txBytes
            }
            return state
        })
    }

    /// Answers a request on the control socket.
    private func command(_ command: String) -> (ok: Bool, lines: [String]) {
        switch command {
        case "reload":
            Log.info("reload requested")
            do throws(GatewayError) {
                let changes = try reload()
                return (true, changes.isEmpty ? ["no changes"] : changes)
            } catch {
                Log.error("reload refused: \(error)")
                return (false, error.description.split(separator: "\n").map(String.init))
            }
        default:
            return (false, ["unknown command '\(command)'; known: reload"])
        }
    }

    /// Stops the workers first (so nothing reads the tables), then tears everything down and
    /// prints the final counters.
    public func stop() {
        for w in workers { w.stop() }
        printCounters()
        tearDown()
    }

    // MARK: Counters

    /// Keeps the stats segment current: the heartbeat and handshakes every turn; XDP
    /// verdicts (BPF map reads) four times a second; peers a slice of handles at a time, sized
    /// by the time since the last slice so that a pass over the whole table takes about
    /// 250 ms however many peers there are and however fast the loop turns, and no turn
    /// stalls the loop; tenants (sums of their peers) after each pass.
    private func publishStats(now: Instant) {
        guard let stats, let control, let state else { return }
        stats.heartbeat()
        stats.publish(handshakes: control.counters)
        stats.publish(uplinkUp: uplinkRunning, uplinkDownEvents: uplinkDownEvents)
        if now >= nextStatsPublish, let program = uplinkProgram {
            nextStatsPublish = now + .milliseconds(250)
            stats.publish(xdpVerdicts: program.verdictCounters(), redirectsPerQueue: program.redirectsPerQueue())
        }
        let capacity = state.peers.capacity
        if publishedPeers.count != capacity { publishedPeers = Array(repeating: false, count: capacity) }
        let budget = Int64(capacity) * now.since(lastPeerStats).nanoseconds / 250_000_000
        guard budget >= Int64(min(256, capacity)) else { return }
        lastPeerStats = now
        let end = min(capacity, statsCursor + Int(min(budget, Int64(capacity))))
        for handle in UInt32(statsCursor)..<UInt32(end) {
            guard let s = control.peers[handle] else {
                if publishedPeers[Int(handle)] { stats.publishPeer(slot: Int(handle), nil) }
                publishedPeers[Int(handle)] = false
                continue
            }
            let a = state.peers.activity(handle)
            stats.publishPeer(slot: Int(handle), PeerStatsRecord(
                tenantSlot: s.tenant, publicKey: s.publicKey,
                endpoint: s.endpoint.map { Endpoint(address: $0.address, port: $0.port) },
                lastHandshakeNanoseconds: s.lastHandshake.map(StatsSegment.unixNanoseconds) ?? 0,
                keypairCreatedNanoseconds: s.slots.current.map { StatsSegment.wallNanoseconds(of: $0.createdAt) } ?? 0,
                rxPackets: a.rxPackets, rxBytes: a.rxBytes, txPackets: a.txPackets, txBytes: a.txBytes, drops: a.drops,
                handshakes: UInt64(s.handshakesCompleted)))
            publishedPeers[Int(handle)] = true
            var t = tenantSums[s.tenant] ?? TenantStatsRecord(name: "", listenPort: 0, peerCount: 0)
            t.peerCount += 1
            t.rxPackets &+= a.rxPackets; t.rxBytes &+= a.rxBytes
            t.txPackets &+= a.txPackets; t.txBytes &+= a.txBytes; t.drops &+= a.drops
            tenantSums[s.tenant] = t
        }
        statsCursor = end
        guard statsCursor >= capacity else { return }
        statsCursor = 0
        var slots = Set<Int>()
        for r in tenants.values {
            var record = tenantSums[r.slot] ?? TenantStatsRecord(name: "", listenPort: 0, peerCount: 0)
            record.name = r.configuration.name
            record.listenPort = r.configuration.listenPort
            record.up = r.down == nil
            stats.publishTenant(slot: r.slot, record)
            slots.insert(r.slot)
        }
        for slot in publishedTenants.subtracting(slots) { stats.publishTenant(slot: slot, nil) }
        publishedTenants = slots
        tenantSums.removeAll(keepingCapacity: true)
    }

    /// Every counter as `key=value` lines on standard error, one subject per line, so that
    /// people and tests can read them: per queue, per drop reason, XDP verdicts, handshakes,
    /// peers. (`xdpwg stats` will read the same counters from shared memory.)
    public func printCounters() {
        var lines: [String] = []
        for (w, worker) in workers.enumerated() {
            let c = worker.counters
            var line = "stats: queue=\(queues[w])"
            for k in WorkerCounter.allCases { line += " \(k.name)=\(c.value(k))" }
            lines.append(line)
            var drops = "stats: drops queue=\(queues[w])"
            for r in DropReason.allCases where c.value(r) > 0 { drops += " \(r.name)=\(c.value(r))" }
            lines.append(drops)
        }
        if let program = uplinkProgram {
            var line = "stats: xdp"
            for (verdict, count) in program.verdictCounters().sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                line += " \(verdict)=\(count)"
            }
            lines.append(line)
            var perQueue = "stats: xdp_redirects"
            for (q, n) in program.redirectsPerQueue().enumerated() where n > 0 { perQueue += " queue\(q)=\(n)" }
            lines.append(perQueue)
        }
        if let control {
            let h = control.counters
            var line = "stats: handshakes"
            for c in HandshakeCounter.allCases { line += " \(c.name)=\(h[c])" }
            for f in HandshakeFailure.allCases where h[f] > 0 { line += " \(f.name)=\(h[f])" }
            lines.append(line)
            for p in control.peerReports() {
                let endpoint = p.endpoint.map { ControlPlane.format($0.address, $0.port) } ?? "none"
                lines.append("stats: peer tenant=\(control.tenantName(slot: p.tenant) ?? "?") public_key=\(p.publicKey) endpoint=\(endpoint)"
                             + " handshakes=\(p.handshakes) rx_packets=\(p.activity.rxPackets) rx_bytes=\(p.activity.rxBytes)"
                             + " tx_packets=\(p.activity.txPackets) tx_bytes=\(p.activity.txBytes)")
            }
        }
        var text = lines.joined(separator: "\n") + "\n"
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}

// MARK: - `wg` (the cross-platform userspace API)

extension Gateway: UAPIHandler {
    public func uapiGet(interface: String) -> UAPIDeviceState? {
        tenants[interface].map(deviceState)
    }

    /// A `wg set` (or `setconf`, `syncconf`): the tenant's configuration with the request
    /// applied goes through the same diff as a reload, so unchanged peers keep their sessions.
    public func uapiSet(interface: String, _ request: UAPISetRequest) -> UAPIError? {
        guard let r = tenants[interface] else { return UAPIError(ENODEV, "no xdpwg tenant named \(interface)") }
        let changed: TenantConfiguration
        do throws(UAPIError) { changed = try request.applied(to: r.configuration) } catch { return error }
        if changed.listenPort != r.configuration.listenPort,
           let other = tenants.values.first(where: { $0 !== r && $0.configuration.listenPort == changed.listenPort }) {
            return UAPIError(EADDRINUSE, "listen port \(changed.listenPort) belongs to tenant \(other.configuration.name)")
        }
        var new = configuration
        new.tenants = new.tenants.map { $0.name == interface ? changed : $0 }
        do throws(GatewayError) {
            try apply(new, fileName: "wg set \(interface)", source: "wg set \(interface)")
        } catch {
            Log.error("wg set refused", ["tenant": interface, "error": error.description])
            return UAPIError(EINVAL, error.description)
        }
        return nil
    }
}
