import Foundation
import Gateway
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg up` end to end, as root, in namespaces: an "internet" namespace with wireguard-go
/// peers ↔ a 2-queue veth ↔ the gateway's namespace running `xdpwg up` ↔ two tenant
/// namespaces that xdpwg creates, with the same addresses (10.10.0.1/24) and peers with the
/// same inner address (10.10.1.2).
///
/// - Tenant A's peer initiates (ping, iperf3 both ways); tenant B's traffic starts from the
///   tenant, so the gateway initiates the handshake and sends the held packet afterwards.
/// - Peer A's datagrams arrive on uplink queue 0, peer B's on queue 1: both queues work
///   (the gateway's own per-queue counters and the XDP program's per-queue redirects).
/// - Isolation: iperf3 decoy servers at the same address in the other tenant stay untouched.
/// - A third peer in tenant A, built on the core (`CorePeer`), sends an inner packet with a
///   source outside its AllowedIPs and replays a transport message: both dropped, counted.
/// - After SIGTERM: exit status 0, no XDP program on the uplink, the tenant namespaces gone.
/// - `up` never ran iproute2's `ip` (a fake one first on its PATH would have noted it).
/// - All of it once per transport cipher backend, forced with `[Gateway] Crypto`.
/// (`up`'s refusals are in CLITests/UpCommandTests.)
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct GatewayUpTests {
    @Test(arguments: AEADBackend.allCases)
    func twoOverlappingTenantsThroughTheGateway(backend: AEADBackend) throws {
        try Privileged.require()
        let setup = try TwoTenantGateway.overlapping(prefix: "t")
        let topology = setup.topology
        defer { topology.close() }
        let a = setup.a, b = setup.b
        let coreKey = PrivateKey.generate()
        let peerA = a.peer, peerB = b.peer
        let corePeer = TwoTenantGateway.peerSection(coreKey.publicKey, allowedIPs: "10.10.1.9/32",
                                                    comment: "the core-based peer that spoofs and replays")
        // `up` runs no `ip` (everything is rtnetlink): a fake one first on its PATH would
        // note a call, and fail it.
        let fakeIP = try FakeProgram(name: "ip")
        let gateway = try setup.start(setup.configuration(writtenBy: "GatewayUpTests", gatewayLines: ["Crypto = \(backend.name)"],
                                                          extraPeersOfA: [corePeer]),
                                      environment: ["PATH": fakeIP.searchPath])
        let tenantA = setup.namespace(a), tenantB = setup.namespace(b)
        #expect(gateway.log.contains("crypto: \(backend.name) (forced"), "the log does not name the backend\n\(gateway.log)")
        #expect(try StatsReader.open(name: setup.name).snapshot().crypto == backend.name, "xdpwg stats names another backend")
        try setup.configurePeers()

        // Tenant B speaks first: the gateway holds the packets, initiates, then delivers.
        let fromB = try GatewayTopology.ping(in: tenantB, to: "10.10.1.2", count: 5, interval: 0.2)
        #expect(fromB.received >= 3, "tenant B → peer B with the gateway initiating: \(fromB)\n\(gateway.log)")
        // Tenant A's peer speaks first: the gateway responds.
        let toA = try topology.ping(from: 0, to: "10.10.0.1", count: 5, interval: 0.1)
        #expect(toA.allReceived, "peer A → tenant A: \(toA)\n\(gateway.log)")
        let fromA = try GatewayTopology.ping(in: tenantA, to: "10.10.1.2", count: 5, interval: 0.1)
        #expect(fromA.allReceived, "tenant A → peer A: \(fromA)")
        let toB = try topology.ping(from: 1, to: "10.10.0.1", count: 5, interval: 0.1)
        #expect(toB.allReceived, "peer B → tenant B: \(toB)")

        // 5 s of TCP each way per tenant, with decoys where the traffic must not go.
        let runs = [
            ("peer A → tenant A", { try topology.iperf(clientIn: peerA.namespace, server: "10.10.0.1", serverIn: tenantA,
                                                       decoys: [tenantB], seconds: 5) }),
            ("tenant A → peer A", { try topology.iperf(clientIn: tenantA, server: "10.10.1.2", serverIn: peerA.namespace,
                                                       decoys: [peerB.namespace], seconds: 5) }),
            ("peer B → tenant B", { try topology.iperf(clientIn: peerB.namespace, server: "10.10.0.1", serverIn: tenantB,
                                                       decoys: [tenantA], seconds: 5) }),
            ("tenant B → peer B", { try topology.iperf(clientIn: tenantB, server: "10.10.1.2", serverIn: peerB.namespace,
                                                       decoys: [peerA.namespace], seconds: 5) }),
        ]
        for (name, run) in runs {
            do {
                let result = try run()
                print("\(name): \(result.client.receiverBitsPerSecond / 1e6) Mbit/s")
                #expect(result.server.receivedBytes > 0, "\(name)")
            } catch {
                Issue.record("\(name): \(error)\n\(gateway.log)")
            }
        }

        // A peer on the core: one honest ping, then a spoofed inner source and a replay.
        let core = try CorePeer(in: topology.internet, privateKey: coreKey, peer: a.key.publicKey,
                                listenPort: 40100, peerAddress: GatewayTopology.gatewayAddress, peerPort: a.port,
                                innerAddress: "10.10.1.9")
        defer { core.close() }
        core.send(Packets.icmpEcho(source: "10.10.1.9", destination: "10.10.0.1", identifier: 7, sequence: 1,
                                   payload: Array(repeating: 0x42, count: 32)))
        let reply = core.waitForPacket(timeout: 10) { $0.source == "10.10.0.1" && $0.destination == "10.10.1.9" }
        #expect(reply != nil, "the core peer's ping was not answered\n\(gateway.log)")
        core.send(Packets.icmpEcho(source: "10.10.9.9", destination: "10.10.0.1", identifier: 7, sequence: 2,
                                   payload: Array(repeating: 0x42, count: 32)))
        usleep(300_000)
        let transport = core.sentDatagrams.filter { $0.first == 4 && $0.count > 32 }
        let replayed = try #require(transport.first, "the core peer sent no transport message")
        core.sendRaw(replayed)
        usleep(300_000)

        // Stop: SIGTERM, clean exit, final counters in the log.
        let status = gateway.stop()
        let log = gateway.log
        #expect(status == 0, "xdpwg up did not exit cleanly after SIGTERM (status \(status.map(String.init) ?? "killed"))\n\(log)")
        let stats = Self.stats(log)
        print(log.split(separator: "\n").filter { $0.hasPrefix("stats:") }.joined(separator: "\n"))

        // Both uplink queues carried traffic, by the worker's count and by the XDP program's.
        let q0 = stats["queue=0"]?["uplink_rx_packets"] ?? 0, q1 = stats["queue=1"]?["uplink_rx_packets"] ?? 0
        #expect(q0 > 100 && q1 > 100, "uplink RX per queue: \(q0), \(q1)\n\(gateway.log)")
        let redirects = stats["xdp_redirects"] ?? [:]
        #expect((redirects["queue0"] ?? 0) > 100 && (redirects["queue1"] ?? 0) > 100, "XDP redirects per queue: \(redirects)")
        let drops = stats.filter { $0.key.hasPrefix("drops") }.values
        #expect(drops.reduce(0) { $0 + ($1["inner_source_not_allowed"] ?? 0) } == 1, "spoofed source not counted: \(Array(drops))")
        #expect(drops.reduce(0) { $0 + ($1["replayed"] ?? 0) } == 1, "replay not counted: \(Array(drops))")
        #expect(!core.received.contains { Packets.parseIPv4($0)?.destination == "10.10.9.9" },
                "the spoofed packet was answered")

        // Nothing left behind: no XDP program on the uplink, no tenant namespace, no process.
        let link = try topology.gateway.exec(["ip", "-j", "-d", "link", "show", topology.uplinkName])
        #expect(!link.contains("\"xdp\""), "an XDP program is still attached: \(link)")
        let namespaces = try Command.run(["ip", "netns", "list"])
        #expect(!namespaces.contains(a.namespaceName) && !namespaces.contains(b.namespaceName), "tenant namespaces left: \(namespaces)")
        #expect(!gateway.isRunning)
        #expect(fakeIP.calls.isEmpty, "xdpwg up ran `ip`: \(fakeIP.calls)")
    }

    /// An executable `name` in a directory of its own that appends its arguments to a file
    /// and exits 1; `searchPath` puts that directory before the test's PATH.
    final class FakeProgram {
        let directory: URL
        let record: String

        init(name: String) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-fake-\(name)-\(getpid())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            record = directory.appendingPathComponent("calls").path
            let script = "#!/bin/sh\necho \"\(name) $*\" >> '\(record)'\nexit 1\n"
            guard FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path,
                                                 contents: Data(script.utf8), attributes: [.posixPermissions: 0o755]) else {
                throw GatewayProcess.Failure(description: "cannot write a fake \(name) into \(directory.path)")
            }
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        var searchPath: String {
            directory.path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin")
        }

        /// One line per call: the program's name and its arguments.
        var calls: [String] {
            ((try? String(contentsOfFile: record, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
    }

    // MARK: Helpers

    /// The `stats:` lines of the gateway's log: subject (`queue=0`, `drops queue=1`, `xdp`,
    /// `xdp_redirects`, ...) → key → value. Later lines replace earlier ones.
    static func stats(_ log: String) -> [String: [String: UInt64]] {
        var result: [String: [String: UInt64]] = [:]
        for line in log.split(separator: "\n") where line.hasPrefix("stats: ") {
            let words = line.dropFirst("stats: ".count).split(separator: " ")
            guard let first = words.first else { continue }
            var subject = String(first)
            var rest = words.dropFirst()
            if subject == "drops", let q = rest.first { subject += " " + q; rest = rest.dropFirst() }
            var values: [String: UInt64] = [:]
            for w in rest {
                let kv = w.split(separator: "=", maxSplits: 1)
                if kv.count == 2, let v = UInt64(kv[1]) { values[String(kv[0])] = v }
            }
            result[subject] = values
        }
        return result
    }
}
