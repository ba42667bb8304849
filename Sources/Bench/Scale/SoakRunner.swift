import Engine
import Foundation
import Gateway
import Lab
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg soak`: one gateway under steady load for a long time (10 minutes by default),
/// its resident memory sampled every few seconds; the report gives the samples and the
/// slope after warm-up, and says whether memory stayed flat.
///
/// Same topology as `xdpwg scale`, one tenant. The load, both directions at once:
/// - peer → tenant: a peer emulator's transport packets at `rate` per second, every peer in
///   turn, each peer completing a new handshake every `rehandshakeSeconds` (so keypairs are
///   made, rotated and retired all along, not only packets forwarded);
/// - tenant → peer: a UDP socket in the tenant's namespace sending to every peer's inner
///   address at a quarter of that rate (the gateway encrypts them to the emulator).
///
/// Flat: the least-squares line through the samples of the second half of the run (the
/// first half is warm-up) grows by less than `Report.flatThresholdKiB` over that half. The
/// warm-up is long because memory settles in steps, one per handshake round (the allocator
/// and the UMEM pages the kernel touches reach their working set over a few rounds); a leak
/// of even a few bytes per packet or per handshake keeps growing through the second half.
/// The report also gives the slope over the whole run after its first minute.
public final class SoakRunner: @unchecked Sendable {
    public struct Options: Sendable {
        public var executable: String
        public var seconds = 600
        public var sampleSeconds = 5.0
        public var peers = 1000
        /// Transport packets per second, peer to tenant.
        public var rate = 20_000
        public var rehandshakeSeconds = 60.0
        /// How the run was started, for the report.
        public var command = "xdpwg soak"
        public init(executable: String) { self.executable = executable }
    }

    public struct Sample: Codable, Sendable {
        public var seconds: Double
        public var rssKiB: Int
    }

    public struct Report: Codable, Sendable {
        public var schemaVersion = 1
        public var date: String
        public var command: String
        public var machine: MachineDescription
        public var seconds: Int
        public var peers: Int
        public var rate: Int
        public var warmUpSeconds: Double
        public var samples: [Sample]
        public var packetsSent: Int
        public var packetsDecrypted: UInt64
        public var packetsEncrypted: UInt64
        public var handshakes: Int
        public var drops: [String: UInt64]

        /// Growth of the fitted line over the post-warm-up window at most this (or 1% of
        /// the resident memory at warm-up's end, if larger) counts as flat.
        public static let flatThresholdKiB = 1024

        var steady: [Sample] { samples.filter { $0.seconds >= warmUpSeconds } }
        public var startRSSKiB: Int { steady.first?.rssKiB ?? samples.first?.rssKiB ?? 0 }
        public var endRSSKiB: Int { samples.last?.rssKiB ?? 0 }
        public var maxRSSKiB: Int { samples.map(\.rssKiB).max() ?? 0 }
        /// Least-squares slope after warm-up, KiB per minute (0 with fewer than two samples).
        public var slopeKiBPerMinute: Double { SoakRunner.Report.slope(steady) }
        /// The same from the first minute on (or the first quarter of a shorter run).
        public var earlySlopeKiBPerMinute: Double {
            SoakRunner.Report.slope(samples.filter { $0.seconds >= min(60, Double(seconds) / 4) })
        }

        static func slope(_ s: [Sample]) -> Double {
            guard s.count >= 2 else { return 0 }
            let n = Double(s.count)
            let mx = s.reduce(0) { $0 + $1.seconds } / n, my = s.reduce(0) { $0 + Double($1.rssKiB) } / n
            let sxx = s.reduce(0) { $0 + ($1.seconds - mx) * ($1.seconds - mx) }
            let sxy = s.reduce(0) { $0 + ($1.seconds - mx) * (Double($1.rssKiB) - my) }
            return sxx > 0 ? sxy / sxx * 60 : 0
        }
        /// What the fitted line grew by over the post-warm-up window, KiB.
        public var fittedGrowthKiB: Double {
            let s = steady
            guard let first = s.first, let last = s.last else { return 0 }
            return slopeKiBPerMinute * (last.seconds - first.seconds) / 60
        }
        public var thresholdKiB: Double { max(Double(Report.flatThresholdKiB), Double(startRSSKiB) / 100) }
        public var isFlat: Bool { fittedGrowthKiB < thresholdKiB }
    }

    static let tenantAddress = IPAddress("10.20.0.1")!
    static let firstPeerAddress = IPAddress("10.21.0.1")!
    static let listenPort: UInt16 = 51820
    static let port: UInt16 = 9

    private let options: Options
    private let say: (String) -> Void

    public init(options: Options, output: @escaping (String) -> Void) {
        self.options = options
        say = output
    }

    public func run() throws -> Report {
        try Prerequisites.check()
        guard options.seconds >= 1, options.sampleSeconds > 0, options.peers >= 1, options.rate >= 1 else {
            throw ScaleFailure("soak: seconds, sample interval, peers and rate must be positive")
        }
        let topology = try GatewayTopology(peers: [], maker: .lab)
        defer { topology.close() }
        let tag = getpid() % 100_000
        let name = "so\(tag)"
        let key = PrivateKey.generate()
        let emulator = try PeerEmulator(peerCount: options.peers)
        let inner = try PeerEmulator.consecutiveIPv4(from: SoakRunner.firstPeerAddress, count: options.peers)
        let tenantNamespace = topology.adoptNamespace(named: topology.namespaceName(tag: "soak"))
        let configuration = """
            # written by xdpwg soak
            [Gateway]
            Uplink = uplink0
            Name = \(name)

            [Tenant]
            Name = \(name)
            PrivateKey = \(key.secret.base64ForDisplay)
            ListenPort = \(SoakRunner.listenPort)
            Namespace = \(tenantNamespace.name)
            Address = \(SoakRunner.tenantAddress)/16

            \(try emulator.configurationPeers(allowedIPs: inner))
            """
        let gateway = try GatewayProcess(executable: options.executable, in: topology.gateway,
                                         configuration: configuration, timeout: 120)
        topology.atClose { gateway.stop() }
        let pid = gateway.processIdentifier
        say("xdpwg soak: \(options.peers) peers, \(options.rate) packets/s to the tenant and \(options.rate / 4) back, "
            + "a new handshake per peer every \(Int(options.rehandshakeSeconds)) s, for \(options.seconds) s; "
            + "gateway pid \(pid), resident memory every \(options.sampleSeconds) s")

        let socket = try runInNamespace(topology.internet.name) {
            try PeerSocket(address: IPAddress(GatewayTopology.internetAddress)!, port: 0)
        }
        defer { socket.close() }
        let back = try tenantNamespace.socket(domain: AF_INET, type: Int32(SOCK_DGRAM.rawValue))
        defer { close(back) }
        let gatewayEndpoint = Endpoint(address: IPAddress(GatewayTopology.gatewayAddress)!, port: SoakRunner.listenPort)
        let layout = TransportFrameLayout(sourceMAC: .zero, destinationMAC: .zero, innerSize: 256, innerSources: inner,
                                          innerDestination: Endpoint(address: SoakRunner.tenantAddress, port: SoakRunner.port))
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
        defer { frame.deallocate() }
        let payload = [UInt8](repeating: 0x5a, count: 200)

        let warmUp = Double(options.seconds) / 2
        let start = Date()
        var samples: [Sample] = []
        var sent = 0, backSent = 0, handshakes = 0, nextPeer = 0
        var nextSample = 0.0, nextHandshake = 0.0
        var elapsed = 0.0
        while elapsed < Double(options.seconds) {
            if LabRun.Interrupt.pending() { throw LabRun.Interrupted() }
            if elapsed >= nextHandshake {
                try emulator.handshake(over: socket, gateway: gatewayEndpoint, gatewayPublicKey: key.publicKey,
                                       timeout: .seconds(60))
                handshakes += options.peers
                nextHandshake = Date().timeIntervalSince(start) + options.rehandshakeSeconds
            }
            if elapsed >= nextSample {
                samples.append(Sample(seconds: elapsed, rssKiB: try ProcessMemory.residentKiB(pid: pid)))
                nextSample += options.sampleSeconds
            }
            // Catch up to the rate: what should have gone out by now, in batches of at most 256.
            let due = min(256, Int(elapsed * Double(options.rate)) - sent)
            if due > 0 {
                try emulator.writeTransportFrames(count: due, layout: layout) { fill in
                    let n = fill(frame)
                    try socket.send(UnsafeRawBufferPointer(rebasing: frame[42..<n]), to: gatewayEndpoint)
                }
                sent += due
            }
            while backSent < sent / 4 {
                try sendDatagram(back, payload, to: inner[nextPeer])
                nextPeer = (nextPeer + 1) % inner.count
                backSent += 1
            }
            if due < 256 { usleep(2_000) }
            elapsed = Date().timeIntervalSince(start)
        }
        samples.append(Sample(seconds: elapsed, rssKiB: try ProcessMemory.residentKiB(pid: pid)))

        usleep(200_000)
        let snapshot = try StatsReader.open(name: name).snapshot()
        var drops: [String: UInt64] = [:]
        for worker in snapshot.workers {
            for (reason, count) in worker.drops where count > 0 { drops[reason, default: 0] += count }
        }
        guard gateway.stop() == 0 else { throw ScaleFailure("the gateway did not stop cleanly:\n\(gateway.log)") }
        let report = Report(date: ISO8601DateFormatter().string(from: Date()), command: options.command,
                            machine: .current(), seconds: options.seconds, peers: options.peers, rate: options.rate,
                            warmUpSeconds: warmUp, samples: samples, packetsSent: sent + backSent,
                            packetsDecrypted: snapshot.workers.reduce(0) { $0 + ($1.counters["decrypted"] ?? 0) },
                            packetsEncrypted: snapshot.workers.reduce(0) { $0 + ($1.counters["encrypted"] ?? 0) },
                            handshakes: handshakes, drops: drops)
        say(String(format: "  resident memory: %.1f MiB after warm-up, %.1f MiB at the end, %.1f MiB at most; "
                   + "slope %.1f KiB/min: %@", Double(report.startRSSKiB) / 1024, Double(report.endRSSKiB) / 1024,
                   Double(report.maxRSSKiB) / 1024, report.slopeKiBPerMinute, report.isFlat ? "flat" : "GROWING"))
        return report
    }

    private func sendDatagram(_ fd: Int32, _ payload: [UInt8], to address: IPAddress) throws {
        guard case .v4(let a) = address else { throw ScaleFailure("soak: IPv4 peers only") }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = SoakRunner.port.bigEndian
        sa.sin_addr.s_addr = a.bigEndian
        let n = payload.withUnsafeBytes { p in
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, p.baseAddress, p.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        // A full socket buffer is load shedding, not a failure of the soak.
        guard n == payload.count || errno == EAGAIN || errno == ENOBUFS else {
            throw ScaleFailure("soak: sendto \(address) from the tenant: \(Errno.text(errno))")
        }
    }
}

extension SoakRunner.Report {
    public func markdown() -> String {
        func mib(_ kib: Int) -> String { String(format: "%.1f MiB", Double(kib) / 1024) }
        var text = """
            # xdpwg soak: \(seconds) s under load

            \(date) · `\(command)` · \(machine.cpuModel), \(machine.logicalCPUs) CPUs

            \(peers) peers, \(rate) transport packets/s to the tenant and a quarter of that back; every peer
            made \(handshakes / max(peers, 1)) handshakes. The gateway's VmRSS was sampled every few seconds;
            the first \(Int(warmUpSeconds)) s are warm-up.

            | | |
            |---|---:|
            | Resident memory after warm-up | \(mib(startRSSKiB)) |
            | Resident memory at the end | \(mib(endRSSKiB)) |
            | Resident memory at most | \(mib(maxRSSKiB)) |
            | Slope after warm-up (second half) | \(String(format: "%.1f KiB/min", slopeKiBPerMinute)) |
            | Slope from \(Int(min(60, Double(seconds) / 4))) s on | \(String(format: "%.1f KiB/min", earlySlopeKiBPerMinute)) |
            | Fitted growth over the second half | \(String(format: "%.0f KiB (flat below %.0f KiB)", fittedGrowthKiB, thresholdKiB)) |
            | Verdict | \(isFlat ? "flat" : "GROWING") |
            | Packets sent (both directions) | \(packetsSent) |
            | Decrypted / encrypted by the gateway | \(packetsDecrypted) / \(packetsEncrypted) |
            | Drops | \(drops.isEmpty ? "none" : drops.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) |

            ## Samples (seconds, KiB)

            | s | VmRSS KiB |
            |---:|---:|

            """
        for s in samples { text += String(format: "| %.0f | %d |\n", s.seconds, s.rssKiB) }
        return text
    }

    public func writeJSON(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }
}
