import Engine
import Foundation
@testable import Gateway
import Testing
import TestSupport
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg stats` end to end: the built binary reads segments this test process writes.
@Suite("Stats command")
struct StatsCommandTests {
    static let keyA = PrivateKey.generate().publicKey
    static let keyB = PrivateKey.generate().publicKey

    /// A segment as a gateway would have it: two queues, a tenant, two peers.
    static func withSegment(_ body: (String, String, StatsSegment) throws -> Void) throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("cli")
            let segment = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: 0), (queue: 1, core: 1)],
                                                  tenantCapacity: 4, peerCapacity: 4, rxQueueCount: 2)
            defer { segment.close() }
            segment.workerCounters(0).add(.batches, 7)
            segment.workerCounters(0).add(.batchFrames, 21)
            segment.workerCounters(1).drop(.replayed, 2)
            segment.publish(xdpVerdicts: [.redirected: 21, .passed: 4], redirectsPerQueue: [21, 0])
            segment.publishTenant(slot: 0, TenantStatsRecord(name: "acme", listenPort: 51820, peerCount: 2, rxPackets: 5,
                                                             rxBytes: 500, txPackets: 6, txBytes: 600))
            segment.publishPeer(slot: 0, PeerStatsRecord(tenantSlot: 0, publicKey: Self.keyA,
                                                         endpoint: Endpoint(address: IPAddress("198.51.100.7")!, port: 51820),
                                                         lastHandshakeNanoseconds: StatsSegment.wallNanoseconds(),
                                                         keypairCreatedNanoseconds: StatsSegment.wallNanoseconds(),
                                                         rxPackets: 5, rxBytes: 500, txPackets: 6, txBytes: 600, handshakes: 1))
            segment.publishPeer(slot: 1, PeerStatsRecord(tenantSlot: 0, publicKey: Self.keyB))
            segment.heartbeat()
            try body(dir, name, segment)
        }
    }

    static func stats(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let (status, out, err) = try Command.runAllowingFailure([try Command.xdpwg, "stats"] + arguments)
        return (status, out, err)
    }

    @Test("no gateway: exit status 1 and a message naming the missing file")
    func noGateway() throws {
        try withStatsDirectory { dir in
            let (status, out, err) = try Self.stats(["--directory", dir, "--name", "nobody-here"])
            #expect(status == 1)
            #expect(out.isEmpty)
            #expect(err == "xdpwg stats: no gateway named nobody-here is running (no \(dir)/nobody-here.stats)\n")
        }
    }

    @Test("a stale segment: exit status 1 and 'not running'")
    func staleGateway() throws {
        try Self.withSegment { dir, _, segment in
            // A second name that outlives the writer's lock: what a killed gateway leaves.
            #expect(link(segment.path, "\(dir)/dead.stats") == 0)
            segment.close()
            let (status, _, err) = try Self.stats(["--directory", dir, "--name", "dead"])
            #expect(status == 1)
            #expect(err == "xdpwg stats: gateway dead is not running (its stats segment \(dir)/dead.stats is stale)\n")
        }
    }

    @Test("the table, by default")
    func table() throws {
        try Self.withSegment { dir, name, _ in
            let (status, out, err) = try Self.stats(["--directory", dir, "--name", name])
            #expect(status == 0, "\(err)")
            let lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            #expect(lines.first?.hasPrefix("gateway \(name): pid \(getpid()), up ") == true)
            #expect(lines.contains("workers                       queue 0  queue 1  total"))
            #expect(lines.contains("batches                             7        0      7"))
            #expect(lines.contains("mean_batch_fill                   3.0        -    3.0"))
            #expect(lines.contains("  replayed                          0        2      2"))
            #expect(lines.contains("acme    up           51820      2           5       500           6       600      0"))
            #expect(lines.contains { $0.hasPrefix(Self.keyA.base64 + "  acme    198.51.100.7:51820  ") })
            #expect(lines.contains { $0.hasPrefix(Self.keyB.base64 + "  acme    (none)              never") })
        }
    }

    @Test("--json decodes back to what the segment holds")
    func json() throws {
        try Self.withSegment { dir, name, segment in
            let (status, out, err) = try Self.stats(["--directory", dir, "--name", name, "--json"])
            #expect(status == 0, "\(err)")
            var decoded = try StatsRendering.decodeJSON(out)
            var own = segment.snapshot()
            #expect(decoded.time >= own.time - 60 && decoded.time <= own.time + 60)
            decoded.time = own.time
            // Ages are counted when read: a second may pass between the two reads.
            for i in decoded.peers.indices where decoded.peers[i].keypairAge != nil {
                #expect(abs(decoded.peers[i].keypairAge! - own.peers[i].keypairAge!) <= 1)
                decoded.peers[i].keypairAge = own.peers[i].keypairAge
            }
            own.generation = decoded.generation
            #expect(decoded == own)
            #expect(decoded.schemaVersion == 1)
            #expect(decoded.workers[1].drops["replayed"] == 2)
            #expect(decoded.workers[0].counters.count == WorkerCounter.allCases.count)
            // Absent values are null, not missing keys.
            #expect(out.contains("\"endpoint\" : null"))
            #expect(out.contains("\"keypair_age_seconds\" : null"))
        }
    }

    @Test("--prometheus prints a valid exposition with the segment's values")
    func prometheus() throws {
        try Self.withSegment { dir, name, _ in
            let (status, out, err) = try Self.stats(["--directory", dir, "--name", name, "--prometheus"])
            #expect(status == 0, "\(err)")
            let parsed = try PrometheusText(parsing: out)
            let key = Self.keyA.base64
            #expect(parsed.samples.contains(.init(name: "wireguard_sent_bytes_total",
                                                  labels: ["interface": "acme", "public_key": key], value: 600)))
            #expect(parsed.samples.contains(.init(name: "xdpwg_drops_total", labels: ["queue": "1", "reason": "replayed"], value: 2)))
            #expect(parsed.samples.contains(.init(name: "xdpwg_xdp_verdicts_total", labels: ["verdict": "redirected"], value: 21)))
        }
    }

    @Test("reading needs no root: an unprivileged user reads the segment")
    func unprivileged() throws {
        try Self.withSegment { dir, name, _ in
            var arguments = [try Command.xdpwg, "stats", "--directory", dir, "--name", name, "--json"]
            if geteuid() == 0 { arguments = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + arguments }
            let (status, out, err) = try Command.runAllowingFailure(arguments)
            #expect(status == 0, "\(err)")
            #expect(try StatsRendering.decodeJSON(out).gateway == name)
        }
    }

    @Test("options that exclude each other are refused")
    func badOptions() throws {
        for arguments in [["--json", "--prometheus"], ["--watch", "--json"], ["2"], ["--watch", "0"]] {
            let (status, _, err) = try Self.stats(arguments)
            #expect(status == 64, "\(arguments)")
            #expect(err.hasPrefix("Error: "), "\(arguments): \(err)")
        }
    }

    /// Starts `xdpwg stats ARGS` without waiting for it.
    static func launch(_ arguments: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Command.xdpwg)
        process.arguments = ["stats"] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    @Test("--watch refreshes with rates until SIGINT, then exits 0")
    func watch() throws {
        try Self.withSegment { dir, name, segment in
            let (process, out, _) = try Self.launch(["--directory", dir, "--name", name, "--watch", "0.2"])
            defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
            for _ in 0..<10 {
                segment.workerCounters(0).add(.uplinkRxPackets, 100)
                usleep(100_000)
            }
            process.interrupt()        // SIGINT to the child we started
            process.waitUntilExit()
            #expect(process.terminationReason == .exit)
            #expect(process.terminationStatus == 0)
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(!text.contains("\u{1B}["), "no terminal codes when stdout is not a terminal")
            let frames = text.components(separatedBy: "gateway \(name): pid").count - 1
            #expect(frames >= 3, "\(frames) frames in \(text)")
            #expect(text.contains("rates per second over the last 0."))
            // The counter grew by 1000/s (100 every 0.1 s): some frame shows a rate of hundreds.
            let rates = text.split(separator: "\n").filter { $0.hasPrefix("uplink_rx_packets") }.dropFirst()
                .compactMap { Double($0.split(separator: " ")[1]) }
            #expect(rates.contains { $0 >= 300 && $0 <= 3000 }, "\(rates)")
        }
    }

    @Test("--watch on a terminal clears the screen before each frame")
    func watchOnTerminal() throws {
        try Self.withSegment { dir, name, _ in
            // script(1) gives the command a pseudo-terminal; timeout(1) sends SIGINT after 0.7 s
            // and passes on the exit status.
            let command = "timeout --preserve-status -s INT 0.7 \(try Command.xdpwg) stats --directory \(dir) --name \(name) --watch 0.2"
            let (status, out, err) = try Command.runAllowingFailure(["script", "-qec", command, "/dev/null"])
            #expect(status == 0, "\(out)\(err)")
            let clears = out.components(separatedBy: "\u{1B}[H\u{1B}[2J").count - 1
            #expect(clears >= 2, "\(out.debugDescription)")
            #expect(out.hasPrefix("\u{1B}[H\u{1B}[2Jgateway \(name): pid"))
        }
    }

    @Test("--watch exits 1 with the message when the gateway goes away")
    func watchGatewayGone() throws {
        try Self.withSegment { dir, name, segment in
            let (process, _, err) = try Self.launch(["--directory", dir, "--name", name, "--watch", "0.1"])
            defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
            usleep(300_000)
            segment.close()
            process.waitUntilExit()
            #expect(process.terminationStatus == 1)
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(message == "xdpwg stats: no gateway named \(name) is running (no \(dir)/\(name).stats)\n")
        }
    }
}
