import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's test network, proven end to end with a wireguard-go stand-in for the gateway:
/// two tenants with the same address (10.10.0.1/24) and peers with the same inner addresses
/// (10.10.1.2 and 10.10.1.3 in each tenant), every peer on the uplink queue it was given.
///
///  1. Each peer alone: ping to its tenant and back; every datagram it sent arrived on its
///     own uplink queue (per-queue packet counts).
///  2. Two peers at a time, one per queue, from different tenants (the first pair even shares
///     its inner address): 5 s of iperf3 TCP peer → tenant, then tenant → peer, with decoy
///     servers at the same address and port in the other tenant (or at the other tenant's
///     peer with the same inner address) that must stay untouched. Each queue's bytes match
///     what the peers steered to it say they sent (`wg show`).
///  3. The stand-in saw each peer in its own tenant only; after `close()` nothing is left.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct TopologyTests {
    static let tenantAddress = "10.10.0.1/24"
    static let tenantRange = "10.10.0.0/24"

    @Test func overlappingTenantsThroughAWireGuardGoStandIn() throws {
        try Privileged.require()
        let started = Date()
        // Each tenant uses both queues and each queue carries both tenants.
        let specs = [
            GatewayTopology.PeerSpec(tenant: "a", innerAddress: "10.10.1.2/32", tenantRange: Self.tenantRange, queue: 0),
            GatewayTopology.PeerSpec(tenant: "b", innerAddress: "10.10.1.2/32", tenantRange: Self.tenantRange, queue: 1),
            GatewayTopology.PeerSpec(tenant: "a", innerAddress: "10.10.1.3/32", tenantRange: Self.tenantRange, queue: 1),
            GatewayTopology.PeerSpec(tenant: "b", innerAddress: "10.10.1.3/32", tenantRange: Self.tenantRange, queue: 0),
        ]
        let topology = try GatewayTopology(peers: specs)
        defer { topology.close() }
        let standIn = try WireGuardGoGateway(topology: topology, tenants: [
            .init(name: "a", address: Self.tenantAddress, listenPort: 51820),
            .init(name: "b", address: Self.tenantAddress, listenPort: 51821),
        ])
        try standIn.connect(topology, presharedKeys: true)

        var processes = topology.peers.map(\.wireGuard.processIdentifier)
        processes += standIn.tenants.values.map(\.wireGuard.processIdentifier)
        let interfaces = topology.peers.map(\.wireGuard.interface) + standIn.tenants.values.map(\.wireGuard.interface)
        let namespaces = topology.namespaceNames
        #expect(namespaces.count == 2 + specs.count + 2)
        print("topology up after \(Self.elapsed(since: started))")

        // 1. Each peer alone: ping both ways; its datagrams (handshake, echo requests, echo
        //    replies) all arrive on its queue. Strays on the other queue: ARP at most.
        for peer in topology.peers {
            let tenant = try #require(standIn.tenants[peer.spec.tenant])
            let (_, queues) = try topology.countingQueues {
                let out = try topology.ping(from: peer.index, to: tenant.ip, count: 10, interval: 0.05)
                #expect(out.allReceived, "peer \(peer.index) → tenant \(tenant.spec.name): \(out)")
                let back = try GatewayTopology.ping(in: tenant.namespace, to: peer.innerIP, count: 10, interval: 0.05)
                #expect(back.allReceived, "tenant \(tenant.spec.name) → peer \(peer.index): \(back)")
            }
            let stray = queues.indices.filter { $0 != peer.spec.queue }.reduce(0) { $0 + queues[$1].packets }
            print("peer \(peer.index) ping, per uplink queue: \(queues)")
            #expect(queues[peer.spec.queue].packets >= 20, "peer \(peer.index)'s pings are not on queue \(peer.spec.queue): \(queues)")
            #expect(stray <= 5, "peer \(peer.index)'s pings leaked onto other queues: \(queues)")
        }
        print("pings done after \(Self.elapsed(since: started))")

        // 2. Rounds of one peer per queue, running at once.
        let onQueue = (0..<GatewayTopology.queueCount).map { q in topology.peers.filter { $0.spec.queue == q } }
        var total = [GatewayTopology.QueueCounters](repeating: .init(packets: 0, bytes: 0), count: onQueue.count)
        for round in 0..<onQueue.map(\.count).max()! {
            let group = onQueue.compactMap { $0.indices.contains(round) ? $0[round] : nil }
            let sentBefore = try topology.peerSentBytes()
            let (runs, queues) = try topology.countingQueues {
                Self.concurrently(group.indices) { slot -> (up: Iperf.Run, down: Iperf.Run) in
                    let peer = group[slot]
                    let tenant = standIn.tenants[peer.spec.tenant]!
                    let otherTenants = standIn.tenants.values.filter { $0 !== tenant }.map(\.namespace)
                    let twins = topology.peers.filter { $0 !== peer && $0.innerIP == peer.innerIP }.map(\.namespace)
                    let port = Iperf.defaultPort + slot
                    let up = try topology.iperf(clientIn: peer.namespace, server: tenant.ip, serverIn: tenant.namespace,
                                                decoys: otherTenants, seconds: 5, port: port)
                    let down = try topology.iperf(clientIn: tenant.namespace, server: peer.innerIP,
                                                  serverIn: peer.namespace, decoys: twins, seconds: 5, port: port)
                    return (up, down)
                }
            }
            let sent = zip(try topology.peerSentBytes(), sentBefore).map { $0 - $1 }
            for (peer, run) in zip(group, runs) {
                let (up, down) = try run.get()
                print("peer \(peer.index) (tenant \(peer.spec.tenant), queue \(peer.spec.queue)): up \(up); down \(down)")
                #expect(up.client.receiverBitsPerSecond > 0 && up.server.receivedBytes > 0, "\(up)")
                #expect(down.client.receiverBitsPerSecond > 0 && down.server.receivedBytes > 0, "\(down)")
            }
            // Each queue carried exactly the WireGuard messages of the peers steered to it (ARP
            // frames are 42 bytes and cancel out; an idle peer's keepalive is within the slack).
            print("round \(round), per uplink queue: \(queues); sent by peers \(sent)")
            for q in queues.indices {
                let messages = queues[q].bytes &- GatewayTopology.frameOverhead * queues[q].packets
                let expected = topology.peers.filter { $0.spec.queue == q }.reduce(0) { $0 + sent[$1.index] }
                #expect(queues[q].packets > 10_000 && expected > 10_000_000, "queue \(q) idle in round \(round): \(queues)")
                let slack = expected / 100 + 4096
                #expect(messages <= expected + slack && messages + slack >= expected,
                        "queue \(q) in round \(round) carried \(messages) B of WireGuard messages, its peers sent \(expected) B")
                total[q].packets += queues[q].packets
                total[q].bytes += queues[q].bytes
            }
        }
        print("iperf3 rounds done after \(Self.elapsed(since: started)); per uplink queue: \(total)")

        // 3. Each tenant's interface knows its own peers only, and exchanged data with each.
        for tenant in standIn.tenants.values {
            let seen = try tenant.wireGuard.peers()
            let expected = topology.peers.filter { $0.spec.tenant == tenant.spec.name }.map(\.publicKey)
            #expect(Set(seen.map(\.publicKey)) == Set(expected))
            for status in seen {
                #expect(status.latestHandshake > 0 && status.receivedBytes > 1_000_000 && status.sentBytes > 1_000_000,
                        "tenant \(tenant.spec.name): \(status)")
            }
        }

        topology.close()
        topology.close() // idempotent
        let netnsDirectory = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        #expect(Set(namespaces).isDisjoint(with: netnsDirectory), "namespaces left behind")
        for pid in processes {
            #expect(kill(pid, 0) == -1 && errno == ESRCH, "process \(pid) is still there")
        }
        for interface in interfaces {
            #expect(!FileManager.default.fileExists(atPath: "/var/run/wireguard/\(interface).sock"),
                    "UAPI socket of \(interface) left behind")
        }
        print("closed after \(Self.elapsed(since: started))")
    }

    static func elapsed(since start: Date) -> String { String(format: "%.1f s", Date().timeIntervalSince(start)) }

    /// Runs `body` for every index on threads of its own and returns the outcomes in order.
    /// (Expectations are checked by the caller, on the test's own thread.)
    static func concurrently<T>(_ indices: Range<Int>, _ body: @escaping @Sendable (Int) throws -> T)
        -> [Result<T, any Error>] {
        let box = ResultBox<T>(count: indices.count)
        let done = DispatchGroup()
        for i in indices {
            done.enter()
            Thread.detachNewThread {
                box.set(i - indices.lowerBound, Result { try body(i) })
                done.leave()
            }
        }
        done.wait()
        return box.results
    }

    private final class ResultBox<T>: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [Result<T, any Error>?]
        init(count: Int) { slots = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ r: Result<T, any Error>) { lock.lock(); slots[i] = r; lock.unlock() }
        var results: [Result<T, any Error>] { lock.lock(); defer { lock.unlock() }; return slots.map { $0! } }
    }

    /// Ping a peer with no gateway configured: the harness reports the failure instead of hanging,
    /// and a second topology built right after gets fresh names (nothing collides).
    @Test func unconfiguredPeerFailsPingQuicklyAndNamesDoNotCollide() throws {
        try Privileged.require()
        let spec = GatewayTopology.PeerSpec(tenant: "a", innerAddress: "10.10.1.2/32", tenantRange: Self.tenantRange,
                                            queue: 1)
        let first = try GatewayTopology(peers: [spec])
        defer { first.close() }
        let second = try GatewayTopology(peers: [spec])
        defer { second.close() }
        #expect(Set(first.namespaceNames).isDisjoint(with: second.namespaceNames))
        let started = Date()
        let out = try first.ping(from: 0, to: "10.10.0.1", count: 2)
        #expect(!out.allReceived && out.transmitted == 2, "\(out)")
        #expect(Date().timeIntervalSince(started) < 10)
        // The uplink has its two queues in the gateway namespace.
        let queues = try first.gateway.exec(["ls", "/sys/class/net/\(first.uplinkName)/queues"])
        #expect(queues.split(separator: "\n").sorted() == ["rx-0", "rx-1", "tx-0", "tx-1"])
    }

    /// A step failing half-way (the second peer's route) leaves nothing behind: the first
    /// peer's wireguard-go is stopped, its UAPI socket removed, every namespace deleted.
    @Test func failedSetupLeavesNothingBehind() throws {
        try Privileged.require()
        let good = GatewayTopology.PeerSpec(tenant: "a", innerAddress: "10.10.1.2/32", tenantRange: Self.tenantRange,
                                            queue: 0)
        var bad = good
        bad.tenantRange = "10.10.0.0/33" // `ip route add` refuses it after wireguard-go has started
        var namespaces: Set<String> = []
        var processes: Set<Int32> = []
        var interfaces: Set<String> = []
        #expect(throws: Command.Failed.self) {
            _ = try GatewayTopology(peers: [good, bad]) { topology in
                namespaces.formUnion(topology.namespaceNames)
                processes.formUnion(topology.peers.map(\.wireGuard.processIdentifier))
                interfaces.formUnion(topology.peers.map(\.wireGuard.interface))
            }
        }
        #expect(namespaces.count == 3 && processes.count == 1, "the failure came after the first peer was up")
        let netnsDirectory = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        #expect(namespaces.isDisjoint(with: netnsDirectory), "namespaces left behind")
        for pid in processes {
            #expect(kill(pid, 0) == -1 && errno == ESRCH, "process \(pid) is still there")
        }
        for interface in interfaces {
            #expect(!FileManager.default.fileExists(atPath: "/var/run/wireguard/\(interface).sock"))
        }
    }

    /// A namespace the gateway creates from its configuration (here: `ip netns add`, as the
    /// gateway would) is removed with the topology, with the processes started in it.
    @Test func adoptedNamespacesGoWithTheTopology() throws {
        try Privileged.require()
        let topology = try GatewayTopology(peers: [])
        defer { topology.close() }
        let name = topology.namespaceName(tag: "tenant-a")
        #expect(name.hasPrefix("\(NetworkNamespace.prefix)t\(getpid())-"), "a later run must recognise it as ours")
        let tenant = topology.adoptNamespace(named: name)
        #expect(!tenant.exists)
        try Command.run(["ip", "netns", "add", name])
        #expect(tenant.exists)
        let sleeper = try tenant.spawn(["sleep", "60"])
        #expect(topology.namespaceNames.contains(name))
        topology.close()
        #expect(!tenant.exists)
        #expect(!sleeper.isRunning)
    }
}
