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
/// Built: tenant namespaces and veth pairs → the data-plane tables → the XDP programs on the
/// uplink and on each tenant's host end → per uplink queue, a UMEM and an AF_XDP socket, a
/// tenant UMEM with one socket per tenant, a worker pinned to its core → the tenants' kernel
/// UDP sockets → the control plane. The calling thread then runs the control loop.
public final class Gateway {
    /// Frame and ring sizes (DESIGN §3).
    public struct Sizing: Sendable {
        public var frameSize = 2048
        public var uplinkFrames = 8192
        public var uplinkFillRing: UInt32 = 4096
        public var uplinkRing: UInt32 = 2048
        public var tenantFramesPerTenant = 2048
        public var tenantRing: UInt32 = 1024
        public var tunnelMTU = 1420
        public init() {}
    }

    public let configuration: GatewayConfiguration
    public let sizing: Sizing
    private var teardown: [(String, () -> Void)] = []
    private var workers: [Worker] = []
    private var controlQueues: [ControlQueue] = []
    private var uplinkProgram: UplinkProgram?
    private var control: ControlPlane?
    private var state: DataPlaneState?
    private var queues: [UInt32] = []
    private var uplink: NetworkInterface?
    private var tenantNames: [String] = []

    public init(configuration: GatewayConfiguration, sizing: Sizing = Sizing()) {
        self.configuration = configuration
        self.sizing = sizing
    }

    deinit { tearDown() }

    /// The host end of tenant `name`'s veth pair in the gateway's namespace (IFNAMSIZ 15).
    static func hostLinkName(_ tenant: String) -> String {
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
        let config = configuration
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

        // Tenants: namespaces and veth pairs, peers numbered densely across tenants.
        var routes: [TenantRoute] = []
        var setups: [ControlPlane.TenantSetup] = []
        var links: [TenantLink] = []
        var nextHandle: UInt32 = 0
        for tenant in config.tenants {
            let spec = TenantLinkSpec(namespace: tenant.namespace, hostName: Gateway.hostLinkName(tenant.name),
                                      innerName: tenant.interfaceName, queues: queues.count,
                                      addresses: tenant.addresses.map { ($0.address, $0.length) },
                                      routes: tenant.peers.flatMap { $0.allowedIPs }, mtu: sizing.tunnelMTU)
            let link: TenantLink
            do throws(SystemError) { link = try TenantLink.create(spec) } catch {
                throw GatewayError("tenant \(tenant.name): \(error)")
            }
            links.append(link)
            onTeardown("tenant \(tenant.name) links") {
                do throws(SystemError) { try link.destroy() } catch { Log.error("tenant \(tenant.name): \(error)") }
            }
            var table = AllowedIPs()
            var peerSetups: [ControlPlane.PeerSetup] = []
            for peer in tenant.peers {
                for prefix in peer.allowedIPs { table.insert(prefix, peer: nextHandle) }
                peerSetups.append(ControlPlane.PeerSetup(
                    handle: nextHandle, publicKey: peer.publicKey, presharedKey: peer.presharedKey,
                    endpoint: peer.endpoint.map { ($0.address, $0.port) }, endpointTemplate: nil,
                    persistentKeepalive: Int(peer.persistentKeepalive)))
                nextHandle += 1
            }
            routes.append(TenantRoute(listenPort: tenant.listenPort, allowedIPs: table, hostMAC: link.hostMAC,
                                      innerMAC: link.innerMAC, mtu: sizing.tunnelMTU))
            let socket = try HandshakeSocket(port: tenant.listenPort)
            setups.append(ControlPlane.TenantSetup(name: tenant.name, privateKey: tenant.privateKey, socket: socket,
                                                   mtu: sizing.tunnelMTU, peers: peerSetups))
            tenantNames.append(tenant.name)
        }
        let peerCount = Int(nextHandle)
        let state = DataPlaneState(tenants: routes, peerCapacity: peerCount,
                                   keypairCapacity: max(1024, peerCount * 4), workerCount: queues.count)
        self.state = state

        // XDP programs: the uplink's, then each tenant host end's.
        let mode: XDPAttachMode = config.gateway.xdpMode == .generic ? .generic : .native
        let uplinkProgram: UplinkProgram
        do throws(BPFError) {
            uplinkProgram = try UplinkProgram(interfaceIndex: uplink.index, interfaceName: uplink.name, mode: mode,
                                              ports: config.tenants.map { $0.listenPort })
        } catch { throw GatewayError("\(error)") }
        self.uplinkProgram = uplinkProgram
        onTeardown("uplink XDP program") { uplinkProgram.detach() }
        if uplinkProgram.fellBackToGeneric {
            Log.warning("uplink \(uplink.name): native XDP failed; running in generic mode (slower)")
        }
        var tenantPrograms: [TenantProgram] = []
        for (t, link) in links.enumerated() {
            do throws(BPFError) {
                let program = try TenantProgram(interfaceIndex: link.hostIndex, interfaceName: link.spec.hostName,
                                                mode: .native)
                tenantPrograms.append(program)
                onTeardown("tenant \(config.tenants[t].name) XDP program") { program.detach() }
            } catch { throw GatewayError("tenant \(config.tenants[t].name): \(error)") }
        }

        // Per queue: sockets, UMEMs and a worker.
        for (w, queue) in queues.enumerated() {
            do throws(XDPError) {
                let uplinkUmem = try Umem(frameCount: sizing.uplinkFrames, frameSize: sizing.frameSize,
                                          fillRingSize: sizing.uplinkFillRing, completionRingSize: sizing.uplinkRing,
                                          numaNode: uplink.numaNode)
                let uplinkSocket = try XskSocket(interface: uplink.name, queue: queue, umem: uplinkUmem,
                                                 configuration: XskConfiguration(rxSize: sizing.uplinkRing,
                                                                                 txSize: sizing.uplinkRing))
                let tenantUmem = try Umem(frameCount: sizing.tenantFramesPerTenant * links.count,
                                          frameSize: sizing.frameSize, fillRingSize: sizing.tenantRing,
                                          completionRingSize: sizing.tenantRing, numaNode: uplink.numaNode)
                var tenantSockets: [XskSocket] = []
                for link in links {
                    // veth cannot do zero-copy: copy mode, and a UMEM of its own (DESIGN §3).
                    tenantSockets.append(try XskSocket(interface: link.spec.hostName, queue: UInt32(w), umem: tenantUmem,
                                                       configuration: XskConfiguration(rxSize: sizing.tenantRing,
                                                                                       txSize: sizing.tenantRing,
                                                                                       copyMode: true)))
                }
                do throws(BPFError) {
                    try uplinkProgram.register(socketFD: uplinkSocket.fd, queue: queue)
                    for (t, s) in tenantSockets.enumerated() { try tenantPrograms[t].register(socketFD: s.fd, queue: UInt32(w)) }
                } catch { throw XDPError("registering AF_XDP sockets in xsks_map", code: EINVAL, detail: "\(error)") }
                let queue = ControlQueue()
                controlQueues.append(queue)
                workers.append(Worker(index: w, core: w < cores.count ? cores[w] : nil, uplink: uplinkSocket,
                                      tenantSockets: tenantSockets, state: state, control: queue))
            } catch {
                throw GatewayError("queue \(queue): \(error)")
            }
        }

        let control = ControlPlane(state: state, tenants: setups, now: Clock.now())
        control.resolveRoute = Gateway.routeResolver(uplink: uplink)
        self.control = control
        onTeardown("sessions") { control.shutdown() }
        for worker in workers {
            do throws(XDPError) { try worker.start() } catch { throw GatewayError("\(error)") }
            onTeardown("worker \(worker.index)") { worker.stop() }
        }
        Log.info("up: uplink \(uplink.name) (\(uplinkProgram.attachedMode == .native ? "native" : "generic") XDP), "
                 + "queues \(queues.map(String.init).joined(separator: ",")) on cores "
                 + "\(cores.prefix(queues.count).map(String.init).joined(separator: ",")), "
                 + "\(config.tenants.count) tenant(s), \(peerCount) peer(s)")
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
        var fds = controlQueues.map { pollfd(fd: $0.eventFD, events: Int16(POLLIN), revents: 0) }
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in Gateway.handledSignals { sigaddset(&signals, s) }
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        var reportedPinning = Set<Int>()
        while true {
            _ = poll(&fds, nfds_t(fds.count), 10)
            let now = Clock.now()
            control.drain(controlQueues, now: now)
            control.tick(now: now)
            for w in workers where w.pinningError != nil && !reportedPinning.contains(w.index) {
                reportedPinning.insert(w.index)
                Log.warning("worker \(w.index): could not pin to core: \(w.pinningError!)")
            }
            let signal = sigtimedwait(&signals, nil, &zero)
            if signal == SIGINT || signal == SIGTERM {
                Log.info("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopping")
                break
            } else if signal == SIGUSR1 {
                printCounters()
            } else if signal == SIGHUP {
                Log.warning("SIGHUP: live reload is not implemented yet; the running configuration stays")
            }
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
                lines.append("stats: peer tenant=\(p.tenant) public_key=\(p.publicKey) endpoint=\(p.endpoint ?? "none")"
                             + " handshakes=\(p.handshakes) rx_packets=\(p.activity.rxPackets) rx_bytes=\(p.activity.rxBytes)"
                             + " tx_packets=\(p.activity.txPackets) tx_bytes=\(p.activity.txBytes)")
            }
        }
        var text = lines.joined(separator: "\n") + "\n"
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
