import Engine
import Foundation
import Gateway
import Lab
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg scale`: one gateway with many peers across many tenants (100,000 across 100 by
/// default), measured from the outside on the lab's topology:
///
///     internet namespace                         gateway namespace             tenant namespaces
///     one UDP socket 192.0.2.1 (every peer) ══ uplink0 192.0.2.2 ══ xdpwg up ══ T of them, 10.20.0.1/16 each
///
/// 1. A baseline: the same tenants without peers, started and stopped: its start-up time
///    and resident memory (UMEMs, XDP programs, namespaces) are what peers add to.
/// 2. The whole configuration: start-up time (spawn to the "up:" line), resident memory.
/// 3. Every peer completes a real handshake (a peer emulator per tenant, one tenant after
///    the other, the emulator's default pacing): handshakes per second.
/// 4. Every peer sends one transport packet: all must be decrypted, nothing dropped.
/// 5. Resident memory again (every peer now has a session), and the time the gateway takes
///    to stop and remove everything.
///
/// The per-packet lookups at this scale (receiver index, AllowedIPs) are micro-benchmarks in
/// Benchmarks/ (`KeypairTable lookup` and `AllowedIPs lookup`), not measured here.
public final class ScaleRunner: @unchecked Sendable {
    public struct Options: Sendable {
        public var executable: String
        public var tenants = 100
        /// In all, spread evenly over the tenants (the first ones take the remainder).
        public var peers = 100_000
        /// How the run was started, for the report.
        public var command = "xdpwg scale"
        public init(executable: String) { self.executable = executable }

        public static let tenantRange = 1...1000
        public static let peerRange = 1...250_000
    }

    public struct Report: Codable, Sendable {
        public var schemaVersion = 1
        public var date: String
        public var command: String
        public var machine: MachineDescription
        public var tenants: Int
        public var peers: Int
        /// The tenants without peers.
        public var baselineStartSeconds: Double
        public var baselineRSSKiB: Int
        /// The whole configuration: spawn to "up:".
        public var startSeconds: Double
        public var rssUpKiB: Int
        public var handshakeSeconds: Double
        public var handshakesPerSecond: Double
        public var handshakeRetries: Int
        public var cookieReplies: Int
        public var rssSessionsKiB: Int
        public var packetsSent: Int
        public var packetsDecrypted: UInt64
        /// Non-zero drop counters, summed over workers.
        public var drops: [String: UInt64]
        public var handshakeFailures: [String: UInt64]
        public var stopSeconds: Double

        /// Resident memory each configured peer adds (above the baseline).
        public var bytesPerPeer: Double { Double(rssUpKiB - baselineRSSKiB) * 1024 / Double(max(peers, 1)) }
        /// The same with every peer holding a session (keypairs, published entries).
        public var bytesPerPeerWithSession: Double {
            Double(rssSessionsKiB - baselineRSSKiB) * 1024 / Double(max(peers, 1))
        }
    }

    static let tenantAddress = "10.20.0.1/16"
    static let firstPeerAddress = IPAddress("10.21.0.1")!
    static let firstListenPort: UInt16 = 52000
    static let sinkPort: UInt16 = 9

    private let options: Options
    private let say: (String) -> Void

    public init(options: Options, output: @escaping (String) -> Void) {
        self.options = options
        say = output
    }

    /// Peers of tenant `t`.
    func peerCount(tenant t: Int) -> Int {
        options.peers / options.tenants + (t < options.peers % options.tenants ? 1 : 0)
    }

    public func run() throws -> Report {
        try Prerequisites.check()
        guard Options.tenantRange.contains(options.tenants), Options.peerRange.contains(options.peers) else {
            throw ScaleFailure("scale: tenants must be in \(Options.tenantRange) and peers in \(Options.peerRange)")
        }
        let topology = try GatewayTopology(peers: [], maker: .lab)
        defer { topology.close() }
        let tag = getpid() % 100_000
        say("xdpwg scale: \(options.peers) peers across \(options.tenants) tenants")

        var started = Date()
        let emulators = try (0..<options.tenants).map { t in try PeerEmulator(peerCount: max(peerCount(tenant: t), 1)) }
        let tenantKeys = (0..<options.tenants).map { _ in PrivateKey.generate() }
        let namespaces = (0..<options.tenants).map { t in topology.namespaceName(tag: "s\(t)") }
        for name in namespaces { topology.adoptNamespace(named: name) }
        say(String(format: "  %d peer keys generated in %.1f s", options.peers, Date().timeIntervalSince(started)))

        // 1. The baseline: the same tenants, no peers.
        let baselineConfiguration = try configuration(name: "sc\(tag)b", tag: tag, keys: tenantKeys,
                                                      namespaces: namespaces, emulators: nil)
        started = Date()
        let baseline = try GatewayProcess(executable: options.executable, in: topology.gateway,
                                          configuration: baselineConfiguration, timeout: 600)
        let baselineStart = Date().timeIntervalSince(started)
        let baselineRSS = try ProcessMemory.residentKiB(pid: baseline.processIdentifier)
        guard baseline.stop(timeout: 120) == 0 else { throw ScaleFailure("the baseline gateway did not stop cleanly:\n\(baseline.log)") }
        say(String(format: "  baseline (%d tenants, no peers): up in %.1f s, %.1f MiB resident",
                   options.tenants, baselineStart, Double(baselineRSS) / 1024))

        // 2. The whole configuration.
        let name = "sc\(tag)"
        let text = try configuration(name: name, tag: tag, keys: tenantKeys, namespaces: namespaces, emulators: emulators)
        started = Date()
        let gateway = try GatewayProcess(executable: options.executable, in: topology.gateway, configuration: text,
                                         timeout: 1200)
        topology.atClose { gateway.stop(timeout: 120) }
        let startSeconds = Date().timeIntervalSince(started)
        let rssUp = try ProcessMemory.residentKiB(pid: gateway.processIdentifier)
        say(String(format: "  %d peers: up in %.1f s, %.1f MiB resident (%.0f bytes per peer above the baseline)",
                   options.peers, startSeconds, Double(rssUp) / 1024,
                   Double(rssUp - baselineRSS) * 1024 / Double(options.peers)))

        // 3. Handshakes, tenant after tenant.
        let socket = try runInNamespace(topology.internet.name) {
            try PeerSocket(address: IPAddress(GatewayTopology.internetAddress)!, port: 0)
        }
        defer { socket.close() }
        var retries = 0, cookies = 0
        started = Date()
        for (t, emulator) in emulators.enumerated() {
            if LabRun.Interrupt.pending() { throw LabRun.Interrupted() }
            let report = try emulator.handshake(over: socket, gateway: endpoint(tenant: t),
                                                gatewayPublicKey: tenantKeys[t].publicKey, timeout: .seconds(300))
            retries += report.retries
            cookies += report.cookieReplies
        }
        let handshakeSeconds = Date().timeIntervalSince(started)
        say(String(format: "  handshakes: %d in %.1f s, %.0f per second (%d retries, %d cookie replies)",
                   options.peers, handshakeSeconds, Double(options.peers) / handshakeSeconds, retries, cookies))

        // 4. One packet from every peer.
        var sent = 0
        for (t, emulator) in emulators.enumerated() {
            if LabRun.Interrupt.pending() { throw LabRun.Interrupted() }
            let layout = TransportFrameLayout(sourceMAC: .zero, destinationMAC: .zero, innerSize: 64,
                                              innerSources: try innerAddresses(emulator),
                                              innerDestination: Endpoint(address: IPAddress("10.20.0.1")!,
                                                                         port: ScaleRunner.sinkPort))
            let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
            defer { frame.deallocate() }
            let destination = endpoint(tenant: t)
            try emulator.writeTransportFrames(count: emulator.peerCount, layout: layout) { fill in
                let n = fill(frame)
                // The UDP payload: the frame after its Ethernet, IPv4 and UDP headers.
                try socket.send(UnsafeRawBufferPointer(rebasing: frame[42..<n]), to: destination)
                sent += 1
                // Paced (≈ 13,000 a second): each first packet of a session makes the gateway
                // confirm it on the control thread, and the tenant answers each (ICMP port
                // unreachable) while the session is being confirmed; a burst of thousands would
                // measure the control queue's 512 slots, not scale.
                if sent % 64 == 0 { usleep(5_000) }
            }
        }
        let reader = try StatsReader.open(name: name)
        var snapshot = reader.snapshot()
        let deadline = Date().addingTimeInterval(30)
        while decrypted(snapshot) < UInt64(sent) && Date() < deadline {
            if LabRun.Interrupt.wait(seconds: 0.1) { throw LabRun.Interrupted() }
            snapshot = reader.snapshot()
        }
        say("  packets: \(decrypted(snapshot)) of \(sent) decrypted")
        let rssSessions = try ProcessMemory.residentKiB(pid: gateway.processIdentifier)
        say(String(format: "  with sessions: %.1f MiB resident", Double(rssSessions) / 1024))
        var drops: [String: UInt64] = [:]
        for worker in snapshot.workers {
            for (reason, count) in worker.drops where count > 0 { drops[reason, default: 0] += count }
        }

        // 5. Stop.
        started = Date()
        guard gateway.stop(timeout: 120) == 0 else { throw ScaleFailure("the gateway did not stop cleanly:\n\(gateway.log)") }
        let stopSeconds = Date().timeIntervalSince(started)
        say(String(format: "  stopped in %.1f s", stopSeconds))

        return Report(date: ISO8601DateFormatter().string(from: Date()), command: options.command, machine: .current(),
                      tenants: options.tenants, peers: options.peers, baselineStartSeconds: baselineStart,
                      baselineRSSKiB: baselineRSS, startSeconds: startSeconds, rssUpKiB: rssUp,
                      handshakeSeconds: handshakeSeconds, handshakesPerSecond: Double(options.peers) / handshakeSeconds,
                      handshakeRetries: retries, cookieReplies: cookies, rssSessionsKiB: rssSessions, packetsSent: sent,
                      packetsDecrypted: decrypted(snapshot), drops: drops,
                      handshakeFailures: snapshot.handshakes.failures.filter { $0.value > 0 }, stopSeconds: stopSeconds)
    }

    private func decrypted(_ s: StatsSnapshot) -> UInt64 { s.workers.reduce(0) { $0 + ($1.counters["decrypted"] ?? 0) } }

    private func endpoint(tenant t: Int) -> Endpoint {
        Endpoint(address: IPAddress(GatewayTopology.gatewayAddress)!, port: ScaleRunner.firstListenPort + UInt16(t))
    }

    /// Every tenant has the same ranges (overlapping addresses are the multi-tenant case).
    private func innerAddresses(_ emulator: PeerEmulator) throws -> [IPAddress] {
        try PeerEmulator.consecutiveIPv4(from: ScaleRunner.firstPeerAddress, count: emulator.peerCount)
    }

    /// The gateway's file: a worker per uplink queue, and per tenant its key, port, namespace and
    /// (unless `emulators` is nil) its emulator's peers.
    private func configuration(name: String, tag: Int32, keys: [PrivateKey], namespaces: [String],
                               emulators: [PeerEmulator]?) throws -> String {
        var text = "# written by xdpwg scale\n[Gateway]\nUplink = uplink0\nName = \(name)\n"
        for t in 0..<options.tenants {
            text += "\n[Tenant]\nName = sc\(tag)-\(t)\nPrivateKey = \(keys[t].secret.base64ForDisplay)\n"
            text += "ListenPort = \(ScaleRunner.firstListenPort + UInt16(t))\nNamespace = \(namespaces[t])\n"
            text += "Address = \(ScaleRunner.tenantAddress)\n\n"
            if let emulator = emulators?[t] {
                text += try emulator.configurationPeers(allowedIPs: try innerAddresses(emulator))
            }
        }
        return text
    }
}

extension ScaleRunner.Report {
    /// The report as Markdown: what was measured, how, and the figures.
    public func markdown() -> String {
        func mib(_ kib: Int) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }
        return """
            # xdpwg scale: \(peers) peers across \(tenants) tenants

            \(date) · `\(command)` · \(machine.cpuModel), \(machine.logicalCPUs) CPUs

            | | |
            |---|---:|
            | Start-up, \(tenants) tenants without peers | \(String(format: "%.1f s", baselineStartSeconds)) |
            | Start-up, \(tenants) tenants with \(peers) peers | \(String(format: "%.1f s", startSeconds)) |
            | Resident memory without peers | \(mib(baselineRSSKiB)) |
            | Resident memory with \(peers) peers | \(mib(rssUpKiB)) |
            | Memory per peer (configured) | \(String(format: "%.0f B", bytesPerPeer)) |
            | Resident memory, every peer with a session | \(mib(rssSessionsKiB)) |
            | Memory per peer (with a session) | \(String(format: "%.0f B", bytesPerPeerWithSession)) |
            | Handshakes | \(peers) in \(String(format: "%.1f s", handshakeSeconds)) |
            | Handshakes per second | \(String(format: "%.0f", handshakesPerSecond)) |
            | Handshake retries / cookie replies | \(handshakeRetries) / \(cookieReplies) |
            | Transport packets decrypted (one per peer) | \(packetsDecrypted) of \(packetsSent) |
            | Drops | \(drops.isEmpty ? "none" : drops.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) |
            | Handshake failures | \(handshakeFailures.isEmpty ? "none" : handshakeFailures.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) |
            | Stop (SIGTERM to exit, everything removed) | \(String(format: "%.1f s", stopSeconds)) |

            Start-up is the time from spawning `xdpwg up` to its "up:" line; memory is the gateway's
            VmRSS. Memory per peer is the difference to the same tenants without peers, divided by
            the peers (the tables are sized for twice the configured peers). Handshakes come from a
            peer emulator per tenant, one tenant after the other, all peers sharing one source
            address and at most 32 initiations in flight (the emulator's default pacing); the
            emulator's own work shares this machine's CPUs. The per-packet lookups at this scale
            (receiver index in a table of 100,000 keypairs, AllowedIPs with 100,000 routes) are
            micro-benchmarks: see Benchmarks/README.md.

            """
    }

    public func writeJSON(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }
}
