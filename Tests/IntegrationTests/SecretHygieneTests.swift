import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// Secrets stay secret on a running gateway, everywhere an operator or another user looks:
/// - a gateway at debug log level with two tenants, a preshared key, handshakes and traffic,
///   `wg show`, `wg set` refused, `xdpwg stats` (table, JSON, Prometheus, `/metrics`),
///   SIGUSR1's counters, a reload of a broken file and `check-config` of it, a reload of a
///   file others may read, and the final counters: no private or preshared key, nor any
///   12-character piece of one, in any of it; the stats segment holds no raw key either;
/// - a configuration file that group or others may read is refused on reload too, and the
///   running gateway keeps its configuration;
/// - the `wg` sockets, the control socket and the stats segment are not writable by group
///   or others, and belong to root.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct SecretHygieneTests {
    @Test func noKeyMaterialInAnythingTheGatewayPrints() throws {
        try Privileged.require()
        let topology = try GatewayTopology(peers: [
            .init(tenant: "a", innerAddress: "10.10.1.2/32", tenantRange: "10.10.0.0/24", queue: 0),
            .init(tenant: "b", innerAddress: "10.10.1.2/32", tenantRange: "10.10.0.0/24", queue: 1),
        ])
        defer { topology.close() }
        let tag = getpid() % 100_000
        let name = "sec\(tag)"
        let tenantNames = ["sa\(tag)", "sb\(tag)"]
        let namespaces = [topology.namespaceName(tag: "sa"), topology.namespaceName(tag: "sb")]
        let keys = [PrivateKey.generate(), PrivateKey.generate()]
        let psk = PresharedKey.generate()
        let ports = [51830, 51831]
        let metricsPort = 19_100 + Int(tag % 500)
        let secrets = KeyMaterial.texts(of: keys.map(\.secret) + [psk.secret])

        func configuration(presharedKey: String) -> String {
            var text = "[Gateway]\nUplink = \(topology.uplinkName)\nName = \(name)\nMetricsListen = 127.0.0.1:\(metricsPort)\n"
            for t in 0..<2 {
                text += "\n[Tenant]\nName = \(tenantNames[t])\nPrivateKey = \(keys[t].secret.base64ForDisplay)\n"
                text += "ListenPort = \(ports[t])\nNamespace = \(namespaces[t])\nAddress = 10.10.0.1/24\n"
                text += "\n[Peer]\nPublicKey = \(topology.peers[t].publicKey)\nAllowedIPs = 10.10.1.2/32\n"
                if t == 0 { text += "PresharedKey = \(presharedKey)\n" }
            }
            return text
        }
        let good = configuration(presharedKey: psk.secret.base64ForDisplay)
        // At debug level: every message the gateway has is enabled.
        let gateway = try GatewayProcess(executable: try Command.xdpwg, in: topology.gateway, configuration: good,
                                         arguments: ["--log-level", "debug"])
        defer { gateway.stop() }
        for namespace in namespaces { topology.adoptNamespace(named: namespace) }

        // Everything printed, by where it came from (so a leak names its source).
        var outputs: [(source: String, text: String)] = []
        func collect(_ source: String, _ result: (status: Int32, standardOutput: String, standardError: String)) {
            outputs.append((source, "exit \(result.status)\n" + result.standardOutput + result.standardError))
        }

        // Handshakes (one with the preshared key) and traffic both ways.
        for t in 0..<2 {
            try topology.configurePeer(t, gatewayPublicKey: keys[t].publicKey.description,
                                       endpoint: "\(GatewayTopology.gatewayAddress):\(ports[t])", allowedIPs: "10.10.0.0/24",
                                       presharedKey: t == 0 ? psk.secret.base64ForDisplay : nil)
            let ping = try topology.ping(from: t, to: "10.10.0.1", count: 3, interval: 0.2)
            #expect(ping.allReceived, "peer \(t) → its tenant: \(ping)\n\(gateway.log)")
        }

        // Files: the `wg` sockets, the control socket and the stats segment.
        var files = tenantNames.map { "/var/run/wireguard/\($0).sock" }
        files += ["/run/xdpwg/\(name).control", "/run/xdpwg/\(name).stats"]
        for path in files {
            var st = stat()
            guard stat(path, &st) == 0 else {
                Issue.record("\(path): \(String(cString: strerror(errno)))")
                continue
            }
            #expect(st.st_mode & 0o022 == 0, "\(path) is writable by group or others: mode \(String(st.st_mode & 0o7777, radix: 8))")
            #expect(st.st_uid == 0, "\(path) belongs to uid \(st.st_uid), not root")
        }
        let segment = try #require(FileManager.default.contents(atPath: "/run/xdpwg/\(name).stats"))
        #expect(!KeyMaterial.containsRaw(keys.map(\.secret) + [psk.secret], in: Array(segment)),
                "the stats segment holds a raw private or preshared key")

        // What operators look at.
        let xdpwg = try Command.xdpwg
        for t in 0..<2 { collect("wg show \(tenantNames[t])", try Command.runAllowingFailure(["wg", "show", tenantNames[t]])) }
        collect("xdpwg stats", try Command.runAllowingFailure([xdpwg, "stats", "--name", name]))
        collect("xdpwg stats --json", try Command.runAllowingFailure([xdpwg, "stats", "--name", name, "--json"]))
        collect("xdpwg stats --prometheus", try Command.runAllowingFailure([xdpwg, "stats", "--name", name, "--prometheus"]))
        let fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(metricsPort)/metrics', timeout=5).read().decode())"
        let metrics = try topology.gateway.execAllowingFailure(["python3", "-c", fetch])
        #expect(metrics.0 == 0 && metrics.1.contains("xdpwg_"), "GET /metrics: \(metrics)")
        collect("GET /metrics", metrics)
        #expect(outputs.contains { $0.source == "wg show \(tenantNames[0])" && $0.text.contains("preshared key: (hidden)") },
                "`wg show` does not show the preshared key as hidden: \(outputs)")

        // Errors: a `wg set` the gateway refuses (a port another tenant has).
        collect("wg set listen-port taken", try Command.runAllowingFailure(["wg", "set", tenantNames[0], "listen-port", "\(ports[1])"]))

        // A broken file: a mangled preshared key, and a private key alone on a line.
        let mangled = String(psk.secret.base64ForDisplay.dropLast(2))
        let broken = configuration(presharedKey: mangled) + "\(keys[1].secret.base64ForDisplay)\n"
        try write(broken, to: gateway.configurationPath, mode: 0o600)
        let brokenReload = try Command.runAllowingFailure([xdpwg, "reload", "--name", name])
        #expect(brokenReload.status == 1, "reload of a broken file: \(brokenReload)")
        collect("xdpwg reload (broken file)", brokenReload)
        let check = try Command.runAllowingFailure([xdpwg, "check-config", gateway.configurationPath])
        #expect(check.status != 0, "check-config of a broken file: \(check)")
        collect("xdpwg check-config (broken file)", check)

        // A good file others may read: refused, naming the fix; the gateway keeps its old one.
        try write(good + "# touched\n", to: gateway.configurationPath, mode: 0o644)
        let openReload = try Command.runAllowingFailure([xdpwg, "reload", "--name", name])
        #expect(openReload.status == 1 && (openReload.standardOutput + openReload.standardError).contains("chmod 600"),
                "reload of a file others may read: \(openReload)")
        collect("xdpwg reload (mode 0644)", openReload)
        try write(good, to: gateway.configurationPath, mode: 0o600)
        let after = try topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2)
        #expect(after.allReceived, "tenant A after the refused reloads: \(after)\n\(gateway.log)")

        // SIGUSR1's counters, then the final ones at SIGTERM: read the log before it goes.
        kill(gateway.processIdentifier, SIGUSR1)
        try gateway.waitForLog(what: "the counters after SIGUSR1") { $0.contains("stats:") }
        kill(gateway.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while gateway.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!gateway.isRunning, "xdpwg up did not exit after SIGTERM")
        let log = gateway.log
        outputs.append(("the gateway's log", log))

        for (source, text) in outputs {
            if let leak = KeyMaterial.leak(of: secrets, in: text) { Issue.record("\(source): \(leak)") }
        }
        #expect(outputs.count == 11)
    }

    private func write(_ text: String, to path: String, mode: mode_t) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw GatewayTopology.Failure(description: "cannot write \(path)")
        }
        guard chmod(path, mode) == 0 else {
            throw GatewayTopology.Failure(description: "chmod \(path): \(String(cString: strerror(errno)))")
        }
    }
}
