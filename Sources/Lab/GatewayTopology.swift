import Foundation
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The network the gateway's integration tests run in: real wireguard-go peers on an
/// "internet", a 2-queue veth uplink into the "gateway" namespace, and tenant address ranges
/// that may overlap between tenants.
///
///     peer namespace k (one per peer)   internet namespace                      gateway namespace
///     TUN  innerAddress (10.10.1.2/32)  wireguard-go k, pinned to CPU queue(k)
///     route tenantRange dev TUN  ◀─fd─  UDP 192.0.2.1:(40000+k)
///                                       inet0 192.0.2.1/24 ══ veth, 2 queues ══ uplink0 192.0.2.2/24
///                                       XPS: CPU q → TX queue q                 (xdpwg up, or a stand-in)
///                                       mq qdisc: packets per TX queue
///
/// Overlapping inner addresses: each wireguard-go runs in the internet namespace (its UDP
/// socket lives there, one port per peer, all on 192.0.2.1) and its TUN interface is moved,
/// before it is ever up, into the peer's own namespace, where the inner address and the route
/// to the tenant's range live. Two peers may then have the same inner address and the same
/// tenant range without any routing conflict, and no forwarding is involved on the internet
/// side: what leaves inet0 is exactly what each wireguard-go sent. (A namespace per peer with
/// a veth of its own and forwarding in the internet namespace would separate the routes too,
/// but then inet0's TX queue is picked on the forwarding path, by whichever CPU runs the
/// softirq, every peer needs a source address of its own and the gateway routes back to them.)
///
/// Queue steering: veth delivers a packet sent on TX queue q of one end to RX queue q of the
/// other (its `rx_queue_index` as XDP sees it). The TX queue of a datagram sent by a local
/// socket is chosen by XPS from the CPU that sends it, so each wireguard-go is pinned (all of
/// its threads, from its start) to CPU q and XPS maps CPU q to TX queue q only. The mq qdisc
/// on inet0 counts packets per TX queue, which is the gateway's per-RX-queue count.
/// (tc `skbedit queue_mapping` would steer by port, but this kernel has neither act_skbedit
/// nor cls_flower.) The pinning is for steering, not speed: on a small machine the peers share
/// CPUs with the gateway's workers.
///
/// Tenant namespaces belong to whatever plays the gateway: register them (`adoptNamespace`,
/// `register`) so that `close()` removes them too. `close()` is idempotent, runs from
/// `deinit`, and removes every process and namespace on every path.
public final class GatewayTopology: @unchecked Sendable {
    public struct PeerSpec: Sendable {
        public init(tenant: String, innerAddress: String, tenantRange: String, queue: Int) {
            self.tenant = tenant
            self.innerAddress = innerAddress
            self.tenantRange = tenantRange
            self.queue = queue
        }

        /// The tenant this peer belongs to (a name the test and the gateway's config share).
        public var tenant: String
        /// The peer's inner address with its prefix length, e.g. "10.10.1.2/32".
        public var innerAddress: String
        /// The tenant's range, routed into the tunnel from the peer's namespace, e.g. "10.10.0.0/24".
        public var tenantRange: String
        /// The uplink queue this peer's datagrams arrive on at the gateway.
        public var queue: Int
    }

    public final class Peer: @unchecked Sendable {
        public let index: Int
        public let spec: PeerSpec
        /// Holds the TUN interface, the inner address and the route to the tenant's range:
        /// run ping, iperf3 and the like here.
        public let namespace: NetworkNamespace
        /// The process (and its UDP socket) lives in the internet namespace.
        public let wireGuard: WireGuardGo
        /// The CPU wireguard-go is pinned to; XPS maps it to TX queue `spec.queue`.
        public let cpu: Int

        public init(index: Int, spec: PeerSpec, namespace: NetworkNamespace, wireGuard: WireGuardGo, cpu: Int) {
            self.index = index
            self.spec = spec
            self.namespace = namespace
            self.wireGuard = wireGuard
            self.cpu = cpu
        }

        public var publicKey: String { wireGuard.publicKey }
        public var privateKey: String { wireGuard.privateKey }
        public var listenPort: Int { wireGuard.listenPort }
        /// The inner address without its prefix length.
        public var innerIP: String { String(spec.innerAddress.split(separator: "/")[0]) }
        /// The endpoint the gateway sees for this peer.
        public var endpoint: String { "\(GatewayTopology.internetAddress):\(listenPort)" }
    }

    public static let internetAddress = "192.0.2.1"
    public static let gatewayAddress = "192.0.2.2"
    public static let prefixLength = 24
    public static let queueCount = 2
    public static let firstPeerPort = 40000

    /// Who builds this topology: its namespaces are named for it.
    public let maker: NetworkNamespace.Maker
    public let internet: NetworkNamespace
    public let gateway: NetworkNamespace
    /// The uplink's name inside `gateway` (the interface the gateway attaches to).
    public let uplinkName = "uplink0"
    /// The far end of the uplink, inside `internet`.
    public let internetLinkName = "inet0"
    public private(set) var peers: [Peer] = []

    private let lock = NSLock()
    private var closed = false
    private var registered: [NetworkNamespace] = []
    private var cleanups: [() -> Void] = []

    public struct Failure: Error, CustomStringConvertible {
        public init(description: String) {
            self.description = description
        }

        public var description: String
    }

    /// Builds the internet and gateway namespaces, the uplink and one wireguard-go per peer
    /// (keys generated, inner address and route set; not yet told about the gateway: see
    /// `configurePeer`). Everything built so far is removed if a step fails. `progress` sees
    /// the topology after the uplink and after each peer is built (tests of the failure path
    /// use it to learn what must be gone afterwards).
    public init(peers specs: [PeerSpec], maker: NetworkNamespace.Maker = .test,
                progress: ((GatewayTopology) -> Void)? = nil) throws {
        self.maker = maker
        internet = try NetworkNamespace(tag: "inet", maker: maker)
        do {
            gateway = try NetworkNamespace(tag: "gw", maker: maker)
        } catch {
            internet.close()
            throw error
        }
        do {
            try buildUplink()
            progress?(self)
            for (index, spec) in specs.enumerated() {
                try addPeer(index: index, spec: spec)
                progress?(self)
            }
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private func buildUplink() throws {
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        guard online >= GatewayTopology.queueCount else {
            throw Failure(description: "steering \(GatewayTopology.queueCount) uplink queues needs as many CPUs; \(online) online")
        }
        let q = String(GatewayTopology.queueCount)
        // Created inside the internet namespace and one end moved: nothing touches the host's namespace.
        try internet.exec(["ip", "link", "add", internetLinkName, "numtxqueues", q, "numrxqueues", q, "type", "veth",
                           "peer", "name", uplinkName, "numtxqueues", q, "numrxqueues", q])
        try internet.exec(["ip", "link", "set", uplinkName, "netns", gateway.name])
        try internet.exec(["ip", "addr", "add", "\(GatewayTopology.internetAddress)/\(GatewayTopology.prefixLength)",
                           "dev", internetLinkName])
        try gateway.exec(["ip", "addr", "add", "\(GatewayTopology.gatewayAddress)/\(GatewayTopology.prefixLength)",
                          "dev", uplinkName])
        for queue in 0..<GatewayTopology.queueCount {
            // sysfs under `ip netns exec` shows the namespace's own devices.
            let path = "/sys/class/net/\(internetLinkName)/queues/tx-\(queue)/xps_cpus"
            try internet.exec(["tee", path], input: String(1 << queue, radix: 16))
        }
        // mq gives every TX queue a qdisc of its own, whose counters we read.
        try internet.exec(["tc", "qdisc", "add", "dev", internetLinkName, "root", "handle", "1:", "mq"])
        try internet.exec(["ip", "link", "set", internetLinkName, "up"])
        try gateway.exec(["ip", "link", "set", uplinkName, "up"])
    }

    private func addPeer(index: Int, spec: PeerSpec) throws {
        guard (0..<GatewayTopology.queueCount).contains(spec.queue) else {
            throw Failure(description: "peer \(index): queue \(spec.queue) is not one of the uplink's \(GatewayTopology.queueCount)")
        }
        let namespace = try NetworkNamespace(tag: "p\(index)", maker: maker)
        do {
            let cpu = spec.queue // XPS maps CPU q to TX queue q.
            let wireGuard = try WireGuardGo(in: internet, listenPort: GatewayTopology.firstPeerPort + index,
                                            address: spec.innerAddress, interfaceNamespace: namespace, cpus: [cpu])
            let peer = Peer(index: index, spec: spec, namespace: namespace, wireGuard: wireGuard, cpu: cpu)
            lock.lock()
            peers.append(peer)
            lock.unlock()
            try namespace.exec(["ip", "route", "add", spec.tenantRange, "dev", wireGuard.interface])
        } catch {
            namespace.close()
            throw error
        }
    }

    /// Tells peer `index` about the gateway: its public key, endpoint ("192.0.2.2:PORT") and
    /// what to route to it (default: the peer's tenant range).
    public func configurePeer(_ index: Int, gatewayPublicKey: String, endpoint: String, allowedIPs: String? = nil,
                       presharedKey: String? = nil, persistentKeepalive: Int? = nil) throws {
        let peer = peers[index]
        try peer.wireGuard.addPeer(publicKey: gatewayPublicKey, allowedIPs: allowedIPs ?? peer.spec.tenantRange,
                                   endpoint: endpoint, presharedKey: presharedKey,
                                   persistentKeepalive: persistentKeepalive)
    }

    // MARK: Traffic

    public struct PingResult: CustomStringConvertible {
        public var transmitted: Int
        public var received: Int
        public var output: String
        /// Every echo request got its reply.
        public var allReceived: Bool { transmitted > 0 && received == transmitted }
        public var description: String { output }
    }

    /// `count` echo requests from peer `index`'s namespace.
    public func ping(from index: Int, to address: String, count: Int = 3, interval: Double = 0.2) throws -> PingResult {
        try GatewayTopology.ping(in: peers[index].namespace, to: address, count: count, interval: interval)
    }

    /// `count` echo requests, `interval` seconds apart (below 0.2 needs root), from
    /// `namespace`; waits at most 3 s for the last reply.
    public static func ping(in namespace: NetworkNamespace, to address: String, count: Int = 3,
                     interval: Double = 0.2) throws -> PingResult {
        // -W bounds the wait per reply; -w would keep sending until `count` replies came.
        let (_, out, err) = try namespace.execAllowingFailure(
            ["ping", "-n", "-c", String(count), "-i", String(interval), "-W", "3", address])
        // "3 packets transmitted, 3 received, ..."
        func number(before word: String) -> Int {
            guard let range = out.range(of: " \(word)") else { return 0 }
            let digits = out[..<range.lowerBound].reversed().prefix { $0.isNumber }
            return Int(String(digits.reversed())) ?? 0
        }
        return PingResult(transmitted: number(before: "packets transmitted"), received: number(before: "received"),
                          output: "ping \(address) in \(namespace.name): " + out + err)
    }

    /// A TCP test of `seconds` from a client in `clientIn` to an iperf3 server at `server` in
    /// `serverIn`. `decoys`: namespaces that also own `server` (another tenant, another peer
    /// with the same inner address); each gets a server at the same address and port, and the
    /// run fails if any of them was reached, or if the real server did not see the bytes.
    /// Runs that share a namespace at the same time need distinct ports.
    public func iperf(clientIn: NetworkNamespace, server: String, serverIn: NetworkNamespace,
               decoys: [NetworkNamespace] = [], seconds: Int = 5, port: Int = Iperf.defaultPort) throws -> Iperf.Run {
        let decoyServers = try decoys.map { try Iperf.Server(in: $0, address: server, port: port) }
        defer { decoyServers.forEach { $0.stop() } }
        let real = try Iperf.Server(in: serverIn, address: server, port: port)
        defer { real.stop() }
        let client: Iperf.Result
        do {
            client = try Iperf.client(in: clientIn, to: server, port: port, seconds: seconds)
        } catch {
            let reached = decoyServers.filter { !$0.isRunning }.map(\.namespace.name)
            throw Failure(description: "\(error)" + (reached.isEmpty ? "" : "; decoy servers reached: \(reached)"))
        }
        let served = try real.result()
        for decoy in decoyServers where !decoy.isRunning {
            throw Failure(description: "isolation: the iperf3 server at \(server) in \(decoy.namespace.name) "
                              + "was reached by a client in \(clientIn.name): \(decoy.log)")
        }
        guard served.receivedBytes > 0 else {
            throw Failure(description: "the iperf3 server in \(serverIn.name) received nothing: \(served)")
        }
        return Iperf.Run(client: client, server: served)
    }

    // MARK: Uplink queues

    /// What one TX queue of inet0 sent (= what that RX queue of the uplink received).
    public struct QueueCounters: Equatable, CustomStringConvertible {
        public init(packets: UInt64, bytes: UInt64) {
            self.packets = packets
            self.bytes = bytes
        }

        public var packets: UInt64
        /// Whole frames: Ethernet, IPv4 and UDP headers (42 bytes) plus the WireGuard message.
        public var bytes: UInt64
        public var description: String { "\(packets) pkt/\(bytes) B" }
        public static func - (a: Self, b: Self) -> Self { .init(packets: a.packets &- b.packets, bytes: a.bytes &- b.bytes) }
    }

    /// Per TX queue of inet0, from the counters of the mq qdisc's classes (class 1:(q+1) is
    /// TX queue q). veth hands a packet sent on TX queue q to RX queue q of the uplink.
    public func uplinkQueueCounters() throws -> [QueueCounters] {
        let text = try internet.exec(["tc", "-s", "class", "show", "dev", internetLinkName])
        var counters = [QueueCounters?](repeating: nil, count: GatewayTopology.queueCount)
        var queue: Int?
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.first == "class", words.count >= 3 {
                // "class mq 1:2 root"
                queue = words[2].split(separator: ":").last.flatMap { Int($0) }.map { $0 - 1 }
            } else if words.first == "Sent", words.count >= 4, let q = queue, counters.indices.contains(q),
                      let bytes = UInt64(words[1]), let packets = UInt64(words[3]) {
                // " Sent 1234 bytes 56 pkt (dropped 0, ...)"
                counters[q] = QueueCounters(packets: packets, bytes: bytes)
            }
        }
        guard counters.allSatisfy({ $0 != nil }) else {
            throw Failure(description: "no per-queue counters in `tc -s class show dev \(internetLinkName)`: \(text)")
        }
        return counters.map { $0! }
    }

    /// Runs `body` and returns, beside its result, what each uplink queue carried meanwhile.
    public func countingQueues<R>(_ body: () throws -> R) throws -> (result: R, queues: [QueueCounters]) {
        let before = try uplinkQueueCounters()
        let result = try body()
        let after = try uplinkQueueCounters()
        return (result, zip(after, before).map { $0 - $1 })
    }

    /// Bytes each peer's wireguard-go has sent to the gateway (`wg show` transfer, all of its
    /// peers): whole WireGuard messages, handshakes and keepalives included.
    public func peerSentBytes() throws -> [UInt64] {
        try peers.map { peer in try peer.wireGuard.peers().reduce(0) { $0 + UInt64($1.sentBytes) } }
    }

    /// Frame overhead the mq byte counters add to each WireGuard message: Ethernet, IPv4, UDP.
    public static let frameOverhead: UInt64 = 14 + 20 + 8

    // MARK: Namespaces of the gateway, cleanup

    /// A name for a namespace the gateway will create (a tenant's): unique, and in the scheme
    /// that lets a later run remove it if this test process dies.
    public func namespaceName(tag: String) -> String { NetworkNamespace.uniqueName(tag: tag, maker: maker) }

    /// Takes charge of a namespace the gateway creates (or will create) under `name`:
    /// `close()` deletes it. Processes spawned through the returned object end with it.
    @discardableResult
    public func adoptNamespace(named name: String) -> NetworkNamespace {
        let namespace = NetworkNamespace(adopting: name)
        register(namespace)
        return namespace
    }

    /// `close()` will close `namespace` (after the cleanups, before the gateway namespace).
    public func register(_ namespace: NetworkNamespace) {
        lock.lock()
        registered.append(namespace)
        lock.unlock()
    }

    /// `close()` runs `body` first (last registered, first run), e.g. to stop a gateway.
    public func atClose(_ body: @escaping () -> Void) {
        lock.lock()
        cleanups.append(body)
        lock.unlock()
    }

    /// Every namespace this topology made or was given (to check that none is left).
    public var namespaceNames: [String] {
        lock.lock()
        defer { lock.unlock() }
        return [internet.name, gateway.name] + peers.map(\.namespace.name) + registered.map(\.name)
    }

    /// Stops the cleanups' subjects, the peers' wireguard-go, then removes the peers', the
    /// registered, the gateway's and the internet's namespaces (and every process started in
    /// them). Idempotent.
    public func close() {
        lock.lock()
        let wasClosed = closed
        closed = true
        let cleanups = self.cleanups.reversed()
        let peers = self.peers
        let registered = self.registered
        self.cleanups = []
        lock.unlock()
        guard !wasClosed else { return }
        for cleanup in cleanups { cleanup() }
        for peer in peers { peer.wireGuard.close() }
        for peer in peers { peer.namespace.close() }
        for namespace in registered { namespace.close() }
        gateway.close()
        internet.close()
    }
}

/// A stand-in for the gateway made of wireguard-go: per tenant, one wireguard-go interface in
/// the gateway namespace (its UDP port on the uplink) whose TUN end is moved into the tenant's
/// own namespace, with the tenant's address and a route per peer: the layout xdpwg builds,
/// overlapping tenant ranges included. It proves the topology today and gives later tests a
/// reference to compare the gateway with.
public final class WireGuardGoGateway: @unchecked Sendable {
    public struct TenantSpec: Sendable {
        public init(name: String, address: String, listenPort: Int) {
            self.name = name
            self.address = address
            self.listenPort = listenPort
        }

        public var name: String
        /// The tenant's address in its namespace, e.g. "10.10.0.1/24".
        public var address: String
        public var listenPort: Int
    }

    public final class Tenant: @unchecked Sendable {
        public let spec: TenantSpec
        public let namespace: NetworkNamespace
        public let wireGuard: WireGuardGo
        public init(spec: TenantSpec, namespace: NetworkNamespace, wireGuard: WireGuardGo) {
            self.spec = spec
            self.namespace = namespace
            self.wireGuard = wireGuard
        }
        /// The address without its prefix length.
        public var ip: String { String(spec.address.split(separator: "/")[0]) }
        public var endpoint: String { "\(GatewayTopology.gatewayAddress):\(spec.listenPort)" }
    }

    public private(set) var tenants: [String: Tenant] = [:]

    /// Starts one interface per tenant; the topology removes everything at its `close()`.
    public init(topology: GatewayTopology, tenants specs: [TenantSpec]) throws {
        topology.atClose { [self] in close() }
        for spec in specs {
            let namespace = try NetworkNamespace(tag: "t-\(spec.name)", maker: topology.maker)
            topology.register(namespace)
            let wireGuard = try WireGuardGo(in: topology.gateway, listenPort: spec.listenPort, address: spec.address,
                                            interfaceNamespace: namespace)
            tenants[spec.name] = Tenant(spec: spec, namespace: namespace, wireGuard: wireGuard)
        }
    }

    /// Connects every peer of the topology to its tenant, both ways: the tenant's interface
    /// learns the peer (AllowedIPs = its inner address, routed in the tenant's namespace) and
    /// the peer learns the tenant's key and endpoint.
    public func connect(_ topology: GatewayTopology, presharedKeys: Bool = false) throws {
        for peer in topology.peers {
            guard let tenant = tenants[peer.spec.tenant] else {
                throw GatewayTopology.Failure(description: "peer \(peer.index): no tenant \(peer.spec.tenant)")
            }
            let psk = presharedKeys
                ? try Command.run(["wg", "genpsk"]).trimmingCharacters(in: .whitespacesAndNewlines) : nil
            try tenant.wireGuard.addPeer(publicKey: peer.publicKey, allowedIPs: peer.spec.innerAddress, presharedKey: psk)
            try tenant.namespace.exec(["ip", "route", "add", peer.spec.innerAddress, "dev", tenant.wireGuard.interface])
            try topology.configurePeer(peer.index, gatewayPublicKey: tenant.wireGuard.publicKey,
                                       endpoint: tenant.endpoint, presharedKey: psk)
        }
    }

    public func close() {
        for tenant in tenants.values { tenant.wireGuard.close() }
    }
}
