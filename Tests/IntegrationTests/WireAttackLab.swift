import Foundation
import Gateway
import TestSupport
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The topology the wire-attack tests run in: `GatewayTopology` (an "internet" namespace, a
/// 2-queue veth uplink, the gateway's namespace) with a real `xdpwg up` serving two tenants
/// with distinct ranges, so that "another tenant's address" means one thing:
///
///     tenant A  10.10.0.1/24, port 51820: wireguard-go peer A 10.10.1.2/32 (uplink queue 0)
///                                         core peer A         10.10.1.9/32 (started on demand)
///     tenant B  10.20.0.1/24, port 51821: wireguard-go peer B 10.20.1.2/32 (uplink queue 1)
///                                         core peer B         10.20.1.9/32 (started on demand)
///
/// The attacker lives in the internet namespace beside the peers (it is on the same internet),
/// with `attackerAddresses` of its own on inet0 (192.0.2.100 and up): it sends raw UDP
/// datagrams, crafted or captured, at the tenants' ports. The core peers (`CorePeer`) are
/// peers the test controls: their keypairs seal the transport messages that get replayed,
/// reordered or pushed out of the window.
///
/// Counters come from the gateway's stats segment (`StatsReader`, what `xdpwg stats` reads).
/// `close()` (idempotent, also from deinit) stops the gateway and removes every namespace.
final class WireAttackLab: @unchecked Sendable {
    /// A tenant of `TwoTenantGateway.distinct` and the core peer this lab gives it.
    struct Tenant {
        let setup: TwoTenantGateway.Tenant
        let corePeerKey: PrivateKey
        let corePeerAddress: String
        var name: String { setup.name }
        var namespaceName: String { setup.namespaceName }
        var key: PrivateKey { setup.key }
        var port: UInt16 { setup.port }
        /// The tenant's own address in its namespace.
        var address: String { setup.address }
        /// The interface inside the tenant's namespace (the configuration's tenant name).
        var interface: String { name }

        /// The tenant's section: its wireguard-go peer and its core peer.
        var section: String {
            setup.section(extraPeers: [TwoTenantGateway.peerSection(corePeerKey.publicKey, allowedIPs: "\(corePeerAddress)/32")])
        }
    }

    static let attackerBase = 100
    let topology: GatewayTopology
    let gateway: GatewayProcess
    let a: Tenant
    let b: Tenant
    let tenantA: NetworkNamespace
    let tenantB: NetworkNamespace
    let gatewayName: String
    let attackerAddresses: [String]
    let stats: StatsReader
    private var corePeers: [String: CorePeer] = [:]
    private let lock = NSLock()

    var peerA: GatewayTopology.Peer { topology.peers[0] }
    var peerB: GatewayTopology.Peer { topology.peers[1] }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Builds everything, establishes both wireguard-go tunnels (a ping each way) and checks
    /// the gateway counted no drop doing so.
    init(attackers: Int = 32) throws {
        let setup = try TwoTenantGateway.distinct(prefix: "k")
        topology = setup.topology
        do {
            gatewayName = setup.name
            a = Tenant(setup: setup.a, corePeerKey: .generate(), corePeerAddress: "10.10.1.9")
            b = Tenant(setup: setup.b, corePeerKey: .generate(), corePeerAddress: "10.20.1.9")
            attackerAddresses = (0..<attackers).map { "192.0.2.\(WireAttackLab.attackerBase + $0)" }
            // One `ip -batch` for all of them: 32 `ip` processes would cost a second.
            let link = topology.internetLinkName
            let batch = attackerAddresses.map { "addr add \($0)/32 dev \(link)" }
                .joined(separator: "\n") + "\n"
            try topology.internet.exec(["ip", "-batch", "-"], input: batch)

            tenantA = setup.namespace(setup.a)
            tenantB = setup.namespace(setup.b)
            gateway = try setup.start(setup.configuration(writtenBy: "WireAttackTests", tenants: [a.section, b.section]))
        } catch {
            topology.close()
            throw error
        }
        do {
            stats = try StatsReader.open(name: gatewayName)
        } catch {
            topology.close()
            throw error
        }
        do {
            try setup.configurePeers()
            try expectTunnelsCarryTraffic("before any attack")
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func close() {
        lock.lock()
        let peers = corePeers.values
        corePeers = [:]
        lock.unlock()
        for peer in peers { peer.close() }
        topology.close()
    }

    // MARK: Peers

    /// Both wireguard-go tunnels carry pings both ways (peer → tenant, tenant → peer). On this
    /// shared machine a ping can be late under load (every test's gateway pins its workers to
    /// the same cores): a round with a loss is printed with the gateway's drops and tried once
    /// more, so a tunnel that loses traffic every time still fails.
    func expectTunnelsCarryTraffic(_ when: String) throws {
        for (index, tenant, namespace) in [(0, a, tenantA), (1, b, tenantB)] {
            let peer = topology.peers[index]
            var rounds: [String] = []
            for _ in 1...2 {
                let out = try topology.ping(from: index, to: tenant.address, count: 3, interval: 0.1)
                let back = try GatewayTopology.ping(in: namespace, to: peer.innerIP, count: 3, interval: 0.1)
                if out.allReceived && back.allReceived { break }
                rounds.append("\(out)\n\(back)\ngateway drops: \(counts().drops.filter { $0.value > 0 })")
                print("\(when): tenant \(tenant.name)'s tunnel lost pings (round \(rounds.count)):\n\(rounds.last!)")
            }
            guard rounds.count < 2 else {
                throw Failure(description: "\(when): the tunnel of wireguard-go peer \(peer.innerIP) of tenant "
                              + "\(tenant.name) does not carry pings:\n\(rounds.joined(separator: "\n"))\n\(gateway.log)")
            }
        }
    }

    /// The core peer of `tenant`, with an established session (its ping answered by the
    /// tenant); with `wait: false`, the ping (identifier 1) is sent and not waited for
    /// (`expectEcho(..., send: false)` waits).
    func corePeer(_ tenant: Tenant, listenPort: UInt16, wait: Bool = true) throws -> CorePeer {
        lock.lock()
        if let peer = corePeers[tenant.name] { lock.unlock(); return peer }
        lock.unlock()
        let peer = try CorePeer(in: topology.internet, privateKey: tenant.corePeerKey, peer: tenant.key.publicKey,
                                listenPort: listenPort, peerAddress: GatewayTopology.gatewayAddress,
                                peerPort: tenant.port, innerAddress: tenant.corePeerAddress)
        lock.lock(); corePeers[tenant.name] = peer; lock.unlock()
        if wait {
            try expectEcho(from: peer, to: tenant, identifier: 1, "the core peer's first ping")
            // Peer records reach the stats segment a sweep (250 ms) behind: wait until it shows
            // this session, so that a test's later snapshot compares against it.
            _ = try waitForCounts("the core peer's session in the stats segment") {
                $0.peer(tenant.corePeerKey.publicKey.description)?.handshakes == 1
            }
        } else {
            WireAttackLab.sendEcho(from: peer, to: tenant, identifier: 1)
        }
        return peer
    }

    private static func sendEcho(from peer: CorePeer, to tenant: Tenant, identifier: UInt16) {
        peer.send(Packets.icmpEcho(source: peer.innerAddress, destination: tenant.address, identifier: identifier,
                                   sequence: 1, payload: Array("echo \(identifier)".utf8)))
    }

    /// `peer` pings `tenant`'s address (`send: false`: the ping was sent before) and gets the
    /// answer within `timeout` seconds.
    func expectEcho(from peer: CorePeer, to tenant: Tenant, identifier: UInt16, send: Bool = true, timeout: Double = 10,
                    _ what: String) throws {
        if send { WireAttackLab.sendEcho(from: peer, to: tenant, identifier: identifier) }
        let reply = peer.waitForPacket(timeout: timeout) {
            $0.source == tenant.address && $0.proto == 1 && $0.payload.first == 0
                && $0.payload.count >= 8 && UInt16($0.payload[4]) << 8 | UInt16($0.payload[5]) == identifier
        }
        guard reply != nil else {
            throw Failure(description: "\(what): core peer \(peer.innerAddress) got no echo reply from "
                          + "\(tenant.address); its drops: \(peer.drops)\n\(gateway.log)")
        }
    }

    // MARK: The attacker

    /// A UDP socket of the attacker's, bound to `address` (one of `attackerAddresses`).
    func attackerSocket(address: String, port: UInt16 = 0) throws -> OwnedSocket {
        OwnedSocket(fd: try topology.internet.udpSocket(port: port, address: address))
    }

    // MARK: Counters

    func counts() -> Counts { Counts(stats.snapshot()) }

    /// Reads the counters until `condition` holds; throws after `seconds`, naming `what` and
    /// showing the last counts (the control thread publishes them every few milliseconds).
    @discardableResult
    func waitForCounts(_ what: String, seconds: Double = 5, _ condition: (Counts) -> Bool) throws -> Counts {
        let deadline = Date().addingTimeInterval(seconds)
        var last = counts()
        while !condition(last) {
            guard Date() < deadline else {
                throw Failure(description: "timed out after \(seconds) s waiting for \(what); counters: \(last)")
            }
            guard gateway.isRunning else {
                throw Failure(description: "xdpwg exited while waiting for \(what):\n\(gateway.log)")
            }
            usleep(20_000)
            last = counts()
        }
        return last
    }

    /// A packet socket in `namespace` that sees every frame of every interface there, sent
    /// or received, before the kernel's IP layer decides anything (rp_filter, sockets).
    func frameTap(in namespace: NetworkNamespace) throws -> OwnedSocket {
        let all = UInt16(0x0003).bigEndian   // ETH_P_ALL
        return OwnedSocket(fd: try namespace.socket(domain: AF_PACKET,
                                                    type: Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                                                    protocol: Int32(all)))
    }
}

/// What the gateway's counters say, summed over its workers.
struct Counts: CustomStringConvertible {
    let snapshot: StatsSnapshot

    init(_ snapshot: StatsSnapshot) { self.snapshot = snapshot }

    /// Non-zero drop counters by reason, over all workers.
    var drops: [String: UInt64] {
        var d: [String: UInt64] = [:]
        for w in snapshot.workers { for (k, v) in w.drops where v > 0 { d[k, default: 0] += v } }
        return d
    }
    var failures: [String: UInt64] { snapshot.handshakes.failures.filter { $0.value > 0 } }
    var verdicts: [String: UInt64] { snapshot.xdp.verdicts.filter { $0.value > 0 } }

    func drop(_ reason: String) -> UInt64 { drops[reason] ?? 0 }
    func failure(_ reason: String) -> UInt64 { snapshot.handshakes.failures[reason] ?? 0 }
    func handshake(_ counter: String) -> UInt64 { snapshot.handshakes.counters[counter] ?? 0 }
    func verdict(_ name: String) -> UInt64 { snapshot.xdp.verdicts[name] ?? 0 }
    func worker(_ counter: String) -> UInt64 { snapshot.workers.reduce(0) { $0 + ($1.counters[counter] ?? 0) } }
    func peer(_ publicKey: String) -> StatsSnapshot.Peer? { snapshot.peers.first { $0.publicKey == publicKey } }

    /// What grew since `earlier`, by name (drops, handshake failures, XDP verdicts), zeros left out.
    func dropsSince(_ earlier: Counts) -> [String: UInt64] { Counts.delta(drops, earlier.drops) }
    func failuresSince(_ earlier: Counts) -> [String: UInt64] { Counts.delta(failures, earlier.failures) }
    func verdictsSince(_ earlier: Counts) -> [String: UInt64] { Counts.delta(verdicts, earlier.verdicts) }

    static func delta(_ now: [String: UInt64], _ before: [String: UInt64]) -> [String: UInt64] {
        now.reduce(into: [:]) { result, entry in
            let d = entry.value &- (before[entry.key] ?? 0)
            if d > 0 { result[entry.key] = d }
        }
    }

    var description: String {
        "drops \(drops.sorted { $0.key < $1.key }), handshake failures \(failures.sorted { $0.key < $1.key }), "
            + "handshakes \(snapshot.handshakes.counters.filter { $0.value > 0 }.sorted { $0.key < $1.key }), "
            + "xdp \(verdicts.sorted { $0.key < $1.key })"
    }
}

/// A socket the test owns (UDP, or a packet tap): send, and collect what arrives. Closed by
/// `close()` (idempotent, also from deinit).
final class OwnedSocket: @unchecked Sendable {
    let fd: Int32
    private var closed = false

    init(fd: Int32) { self.fd = fd }
    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Sends `datagram` to `address:port`; throws with the errno's text if the kernel refuses.
    func send(_ datagram: [UInt8], to address: String, port: UInt16) throws {
        var destination = CorePeer.address(address, port)
        let n = datagram.withUnsafeBytes { bytes in
            withUnsafePointer(to: &destination) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard n == datagram.count else {
            throw WireAttackLab.Failure(description: "sendto \(address):\(port) (\(datagram.count) bytes): "
                                        + String(cString: strerror(errno)))
        }
    }

    /// Everything that arrives until nothing has come for `quiet` seconds (at most `seconds`).
    func receiveAll(quiet: Double = 0.3, seconds: Double = 5) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, Int32(quiet * 1000)) > 0 else { break }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n >= 0 { out.append(Array(buffer[0..<n])) }
        }
        return out
    }
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs anywhere in these bytes.
    func contains(bytes needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        for start in 0...(count - needle.count) where self[start] == needle[0] {
            if Array(self[start..<(start + needle.count)]) == needle { return true }
        }
        return false
    }
}
