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
///
/// One concern a file: this one builds, runs (the control loop) and tears down;
/// Gateway+Tenants.swift adds, changes and removes tenants and watches their links;
/// Gateway+Reload.swift applies configuration changes; Gateway+Stats.swift publishes the
/// stats segment and prints the counters; Gateway+UAPI.swift answers `wg`.
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
    public internal(set) var configuration: GatewayConfiguration
    /// The file `reload` reads again.
    public let configurationPath: String?
    public let sizing: Sizing
    private var teardown: [(String, () -> Void)] = []
    var workers: [Worker] = []
    private var controlQueues: [ControlQueue] = []
    var uplinkProgram: UplinkProgram?
    var control: ControlPlane?
    var state: DataPlaneState?
    var queues: [UInt32] = []
    var uplink: NetworkInterface?
    /// Running tenants by name, and the free tenant slots.
    var tenants: [String: TenantRuntime] = [:]
    var freeSlots: [Int] = []
    private var controlSocket: ControlSocket?
    var stats: StatsSegment?
    var uapi: UAPIServer?
    var nextStatsPublish = Instant.zero
    /// The peer stats walk: the next handle, which handles hold a published record (to empty
    /// the slots of peers that went away), and the tenants' sums of the pass under way.
    var statsCursor = 0, lastPeerStats = Instant.zero
    var publishedPeers: [Bool] = []
    var tenantSums: [Int: TenantStatsRecord] = [:]
    var publishedTenants = Set<Int>()
    /// The links the gateway depends on, polled by the control thread (`watchLinks`).
    var linkWatch: RouteNetlink?
    var nextLinkCheck = Instant.zero
    var uplinkRunning = true
    var uplinkDownEvents: UInt64 = 0
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
            throw GatewayError(error)
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
        } catch { throw GatewayError(error) }
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
                throw GatewayError("queue \(queue)", error)
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
            do throws(XDPError) { try worker.start() } catch { throw GatewayError(error) }
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
            throw GatewayError("crypto", error)
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
}
