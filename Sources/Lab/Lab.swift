import Foundation
import Gateway
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

// The single-machine lab: network namespaces, wireguard-go peers, the gateway as a child
// process, traffic (ping, iperf3) and teardown. `xdpwg lab` runs it; the perf lab and the
// integration tests build on the same topology.

/// One run of `xdpwg lab`: the whole gateway on one machine with real peers.
///
///     peer namespaces (wireguard-go TUN)    internet namespace        gateway namespace      tenant namespaces
///     10.10.1.(2+k)/32 per peer         ◀─  wireguard-go per peer ══ veth, 2 queues ══ xdpwg up ══ 10.10.0.1/24 each
///
/// Every tenant has the same addresses (10.10.0.1/24, peers 10.10.1.2, .3, …): overlapping
/// ranges are the multi-tenant case, and the traffic staying in its tenant shows isolation.
/// Each peer pings its tenant (the handshake), then iperf3 runs from every peer to its tenant
/// and back at once for `duration` seconds while the stats view (`xdpwg stats --watch`'s
/// renderer) refreshes every second. Then a summary, and everything is removed, on Ctrl-C too.
public final class LabRun: @unchecked Sendable {
    public struct Options: Sendable {
        public var tenants = 2
        public var peersPerTenant = 2
        /// Seconds of iperf3 traffic.
        public var duration = 20
        /// Stay up after the summary until SIGINT or SIGTERM.
        public var keep = false
        /// The xdpwg binary to run as the gateway.
        public var executable: String
        /// Passed to the gateway's `--log-level`.
        public var logLevel: String?
        /// Clear the screen before each stats frame (a terminal); otherwise frames follow each other.
        public var clearScreen = false

        public init(executable: String) { self.executable = executable }

        public static let tenantRange = 1...8
        public static let peerRange = 1...8
        public static let durationRange = 1...3600
    }

    /// Stops the run between steps: SIGINT and SIGTERM, blocked in every thread by the caller
    /// before any thread starts (`Interrupt.block()`), are taken here, so a Ctrl-C during any
    /// step leads to the teardown.
    public enum Interrupt {
        /// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later.
        public static func block() {
            var set = signals
            pthread_sigmask(SIG_BLOCK, &set, nil)
        }

        /// Waits up to `seconds`; true if SIGINT or SIGTERM arrived (now or earlier).
        public static func wait(seconds: Double) -> Bool {
            var set = signals
            let whole = max(0, seconds).rounded(.down)
            var timeout = timespec(tv_sec: Int(whole), tv_nsec: Int((max(0, seconds) - whole) * 1e9))
            let taken = sigtimedwait(&set, nil, &timeout)
            return taken == SIGINT || taken == SIGTERM
        }

        /// Whether SIGINT or SIGTERM is pending (taken, so it is reported once).
        public static func pending() -> Bool { wait(seconds: 0) }

        private static var signals: sigset_t {
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGINT)
            sigaddset(&set, SIGTERM)
            return set
        }
    }

    public struct Interrupted: Error, CustomStringConvertible {
        public init() {}
        public var description: String { "interrupted: tearing down" }
    }

    struct Tenant {
        let name: String
        let namespace: String
        let key: PrivateKey
        let port: Int
        var peers: [GatewayTopology.Peer] = []
    }

    private let options: Options
    private let say: (String) -> Void
    /// What went wrong in the run (a failed ping, an iperf3 run with no bytes); empty = success.
    public private(set) var failures: [String] = []

    public static let tenantAddress = "10.10.0.1"
    static let tenantPrefix = "10.10.0.1/24"
    static let firstListenPort = 51820
    static let firstIperfPort = 5201

    public init(options: Options, output: @escaping (String) -> Void) {
        self.options = options
        say = output
    }

    /// Runs the lab and removes everything it made before returning, whatever happens.
    /// Returns true if every peer reached its tenant and traffic flowed both ways.
    public func run() throws -> Bool {
        try Prerequisites.check()
        let tag = getpid() % 100_000
        let letters = Array("abcdefgh")
        var specs: [GatewayTopology.PeerSpec] = []
        for t in 0..<options.tenants {
            for k in 0..<options.peersPerTenant {
                specs.append(.init(tenant: "lab\(tag)\(letters[t])", innerAddress: "10.10.1.\(2 + k)/32",
                                   tenantRange: "10.10.0.0/24", queue: specs.count % GatewayTopology.queueCount))
            }
        }
        say("xdpwg lab: \(options.tenants) tenants × \(options.peersPerTenant) peers, \(options.duration) s of traffic")
        say("building: an internet namespace with \(specs.count) wireguard-go peers, the gateway's namespace "
            + "behind a \(GatewayTopology.queueCount)-queue veth, \(options.tenants) tenant namespaces")
        let topology = try GatewayTopology(peers: specs, maker: .lab)
        defer {
            say("teardown: stopping the gateway and \(specs.count) wireguard-go peers, removing \(topology.namespaceNames.count) namespaces")
            topology.close()
            let left = topology.namespaceNames.filter { FileManager.default.fileExists(atPath: "/var/run/netns/\($0)") }
            say(left.isEmpty ? "teardown: done, nothing left" : "teardown: namespaces left behind: \(left.joined(separator: " "))")
        }
        if Interrupt.pending() { throw Interrupted() }

        var tenants: [Tenant] = (0..<options.tenants).map { t in
            Tenant(name: "lab\(tag)\(letters[t])", namespace: topology.namespaceName(tag: "tenant-\(letters[t])"),
                   key: .generate(), port: LabRun.firstListenPort + t)
        }
        for peer in topology.peers {
            guard let t = tenants.firstIndex(where: { $0.name == peer.spec.tenant }) else { continue }
            tenants[t].peers.append(peer)
        }
        let gatewayName = "lab\(tag)"
        for tenant in tenants { topology.adoptNamespace(named: tenant.namespace) }
        var arguments: [String] = []
        if let level = options.logLevel { arguments += ["--log-level", level] }
        let gateway = try GatewayProcess(executable: options.executable, in: topology.gateway,
                                         configuration: configuration(name: gatewayName, tenants: tenants,
                                                                      uplink: topology.uplinkName),
                                         arguments: arguments)
        topology.atClose { gateway.stop() }
        say("gateway: `xdpwg up` running as pid \(gateway.processIdentifier) in \(topology.gateway.name), "
            + "stats name \(gatewayName)")
        if Interrupt.pending() { throw Interrupted() }

        for tenant in tenants {
            for peer in tenant.peers {
                try topology.configurePeer(peer.index, gatewayPublicKey: tenant.key.publicKey.description,
                                           endpoint: "\(GatewayTopology.gatewayAddress):\(tenant.port)",
                                           allowedIPs: "10.10.0.0/24")
            }
        }
        var pings: [String: (answered: Int, sent: Int)] = [:]
        for tenant in tenants {
            for peer in tenant.peers {
                let result = try topology.ping(from: peer.index, to: LabRun.tenantAddress, count: 3, interval: 0.2)
                pings[tenant.name, default: (0, 0)].answered += result.received
                pings[tenant.name, default: (0, 0)].sent += result.transmitted
                if !result.allReceived {
                    failures.append("peer \(peer.innerIP) of \(tenant.name): \(result.received)/\(result.transmitted) pings answered")
                }
                if Interrupt.pending() { throw Interrupted() }
            }
        }
        say("handshakes: every peer pinged its tenant at \(LabRun.tenantAddress): "
            + tenants.map { "\($0.name) \(pings[$0.name]?.answered ?? 0)/\(pings[$0.name]?.sent ?? 0)" }
                .joined(separator: ", "))

        let traffic = try startTraffic(tenants: tenants, topology: topology)
        let reader = try StatsReader.open(name: gatewayName)
        let deadline = Date().addingTimeInterval(Double(options.duration) + 25)
        var previous = reader.snapshot()
        var interrupted = false
        while !traffic.allSatisfy({ $0.isDone }) && Date() < deadline {
            if Interrupt.wait(seconds: 1) { interrupted = true; break }
            let current = reader.snapshot()
            let frame = StatsRendering.renderWatch(previous: previous, current: current)
            say((options.clearScreen ? "\u{1B}[H\u{1B}[2J" : "\n") + frame)
            previous = current
        }
        if interrupted {
            // While the tunnels still carry them: iperf3 clients stopped after the gateway
            // would wait for their servers until killed.
            say("interrupted: stopping the traffic")
            for flow in traffic { flow.server.stop() }
            throw Interrupted()
        }
        let final = reader.snapshot()
        summarize(tenants: tenants, traffic: traffic, pings: pings, snapshot: final)

        if options.keep {
            explain(tenants: tenants, topology: topology, gatewayName: gatewayName)
            while !Interrupt.wait(seconds: 3600) {}
        }
        return failures.isEmpty
    }

    /// The gateway's file: one tenant per namespace, every tenant on 10.10.0.1/24 with peers
    /// at 10.10.1.2, .3, …
    func configuration(name: String, tenants: [Tenant], uplink: String) -> String {
        var text = "# written by xdpwg lab\n[Gateway]\nUplink = \(uplink)\nName = \(name)\n"
        for tenant in tenants {
            text += "\n[Tenant]\nName = \(tenant.name)\nPrivateKey = \(tenant.key.secret.base64ForDisplay)\n"
            text += "ListenPort = \(tenant.port)\nNamespace = \(tenant.namespace)\nAddress = \(LabRun.tenantPrefix)\n"
            for peer in tenant.peers {
                text += "\n[Peer]\nPublicKey = \(peer.publicKey)\nAllowedIPs = \(peer.spec.innerAddress)\n"
            }
        }
        return text
    }

    // MARK: Traffic

    /// One iperf3 run in the background: a client thread and its server.
    final class Flow: @unchecked Sendable {
        let tenant: String
        let peer: GatewayTopology.Peer
        /// Data goes from the peer to the tenant (else from the tenant to the peer: `--reverse`).
        let upstream: Bool
        let server: Iperf.Server
        private let lock = NSLock()
        private var outcome: Result<Iperf.Result, Error>?

        init(tenant: String, peer: GatewayTopology.Peer, upstream: Bool, server: Iperf.Server) {
            self.tenant = tenant
            self.peer = peer
            self.upstream = upstream
            self.server = server
        }

        var isDone: Bool { lock.lock(); defer { lock.unlock() }; return outcome != nil }
        var result: Result<Iperf.Result, Error>? { lock.lock(); defer { lock.unlock() }; return outcome }

        func start(seconds: Int) {
            let thread = Thread { [self] in
                let r = Result { try Iperf.client(in: peer.namespace, to: LabRun.tenantAddress, port: server.port,
                                                  seconds: seconds, reverse: !upstream) }
                lock.lock()
                outcome = r
                lock.unlock()
            }
            thread.start()
        }
    }

    /// An iperf3 server per peer and direction in the tenant's namespace (the tenant's address,
    /// its own port), and a client in the peer's namespace: peer → tenant, and tenant → peer
    /// (`--reverse`), every flow at once.
    private func startTraffic(tenants: [Tenant], topology: GatewayTopology) throws -> [Flow] {
        var flows: [Flow] = []
        for tenant in tenants {
            let namespace = topology.adoptNamespace(named: tenant.namespace)
            for (k, peer) in tenant.peers.enumerated() {
                for upstream in [true, false] {
                    let port = LabRun.firstIperfPort + 2 * k + (upstream ? 0 : 1)
                    let server = try Iperf.Server(in: namespace, address: LabRun.tenantAddress, port: port)
                    flows.append(Flow(tenant: tenant.name, peer: peer, upstream: upstream, server: server))
                }
            }
        }
        say("traffic: iperf3 (TCP) from every peer to its tenant and back, \(flows.count) flows at once for "
            + "\(options.duration) s; the gateway's counters every second:")
        for flow in flows { flow.start(seconds: options.duration) }
        return flows
    }

    // MARK: Summary

    private func summarize(tenants: [Tenant], traffic: [Flow], pings: [String: (answered: Int, sent: Int)],
                           snapshot: StatsSnapshot) {
        var rows: [[String]] = [["tenant", "peers", "pings", "peer→tenant", "tenant→peer", "handshakes", "rx pkts",
                                 "tx pkts", "drops"]]
        for tenant in tenants {
            func rate(upstream: Bool) -> String {
                var bits = 0.0
                for flow in traffic where flow.tenant == tenant.name && flow.upstream == upstream {
                    switch flow.result {
                    case .success(let r):
                        bits += r.receiverBitsPerSecond
                        if r.receivedBytes == 0 {
                            failures.append("\(tenant.name) \(upstream ? "peer→tenant" : "tenant→peer") from \(flow.peer.innerIP): no bytes")
                        }
                    case .failure(let error):
                        failures.append("\(tenant.name) \(upstream ? "peer→tenant" : "tenant→peer") from \(flow.peer.innerIP): \(error)")
                    case nil:
                        failures.append("\(tenant.name) \(upstream ? "peer→tenant" : "tenant→peer") from \(flow.peer.innerIP): did not finish")
                    }
                }
                return String(format: "%.1f Mbit/s", bits / 1e6)
            }
            let stats = snapshot.tenants.first { $0.name == tenant.name }
            let handshakes = snapshot.peers.filter { $0.tenant == tenant.name }.reduce(0) { $0 + $1.handshakes }
            let ping = pings[tenant.name] ?? (0, 0)
            rows.append([tenant.name, String(tenant.peers.count), "\(ping.answered)/\(ping.sent)",
                         rate(upstream: true), rate(upstream: false), String(handshakes),
                         String(stats?.rxPackets ?? 0), String(stats?.txPackets ?? 0), String(stats?.drops ?? 0)])
        }
        var drops: [String: UInt64] = [:]
        for worker in snapshot.workers {
            for (reason, count) in worker.drops where count > 0 { drops[reason, default: 0] += count }
        }
        let dropText = drops.isEmpty ? "none"
            : drops.sorted { $0.value > $1.value }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        var text = "\nsummary: \(options.duration) s of iperf3 in each direction, every peer at once\n"
        text += LabRun.table(rows).map { "  " + $0 }.joined(separator: "\n")
        text += "\n  drops by reason: \(dropText)"
        let failed = snapshot.handshakes.failures.filter { $0.value > 0 }
        if !failed.isEmpty {
            text += "\n  handshake failures: " + failed.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                .joined(separator: " ")
        }
        text += failures.isEmpty ? "\nresult: every peer reached its tenant, traffic flowed both ways"
            : "\nresult: FAILED\n" + failures.map { "  " + $0 }.joined(separator: "\n")
        say(text)
    }

    private func explain(tenants: [Tenant], topology: GatewayTopology, gatewayName: String) {
        let peer = topology.peers[0]
        let tenant = tenants[0]
        say("""

            the lab keeps running (--keep). From another terminal, as root:
              ip netns exec \(peer.namespace.name) ping \(LabRun.tenantAddress)      # a peer of \(tenant.name) reaches its tenant
              ip netns exec \(tenant.namespace) ping \(peer.innerIP)           # and back
              wg show \(tenant.name)                                   # the tenant, through the standard wg tool
              xdpwg stats --name \(gatewayName) --watch                 # every counter, live
              ip netns list | grep \(NetworkNamespace.prefix)l\(getpid())-            # all of the lab's namespaces
            Press Ctrl-C here to tear it all down.
            """)
    }

    /// Left-aligned columns, two spaces apart.
    static func table(_ rows: [[String]]) -> [String] {
        guard let columns = rows.map(\.count).max() else { return [] }
        let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, cell in
                c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}
