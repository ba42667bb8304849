import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// Live reload, end to end: while an iperf3 run goes through tenant A, tenant B is added,
/// changed, given a bad file, given a [Gateway] change, and removed, by `xdpwg reload`.
/// Tenant A's session must survive it all: one handshake, and iperf3 sees bytes in every
/// second of its run.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct GatewayReloadTests {
    @Test func tenantsComeAndGoWhileAnotherCarriesTraffic() throws {
        try Privileged.require()
        let setup = try TwoTenantGateway.overlapping(prefix: "r")
        let topology = setup.topology
        defer { topology.close() }
        let name = setup.name
        let tenantAName = setup.a.name, tenantBName = setup.b.name
        let namespaceA = setup.a.namespaceName, namespaceB = setup.b.namespaceName
        let keyA = setup.a.key, keyB = setup.b.key
        let peerA = setup.a.peer

        func file(uplink: String? = nil, tenantB: String?) -> String {
            setup.configuration(writtenBy: "GatewayReloadTests", uplink: uplink,
                                tenants: [setup.a.section()] + (tenantB.map { [$0] } ?? []))
        }
        let tenantBFirst = setup.b.section(peerEndpoint: true)
        let tenantBChanged = setup.b.section(peerEndpoint: true, allowedIPs: "10.10.1.2/32, 10.10.2.0/24",
                                             peerLines: ["PersistentKeepalive = 5"])
        let tenantBBroken = setup.b.section(listenPort: "99999")

        let gateway = try setup.start(file(tenantB: nil))
        let configPath = gateway.configurationPath
        func write(_ text: String) {
            _ = FileManager.default.createFile(atPath: configPath, contents: Data(text.utf8),
                                               attributes: [.posixPermissions: 0o600])
        }
        func reload() throws -> (status: Int32, stdout: String, stderr: String) {
            let (status, stdout, stderr) = try Command.runAllowingFailure([try Command.xdpwg, "reload", "--name", name])
            return (status, stdout, stderr)
        }
        let tenantA = setup.namespace(setup.a)
        try setup.configurePeers()
        let first = try topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2)
        #expect(first.allReceived, "peer A → tenant A before any reload: \(first)\n\(gateway.log)")

        // Tenant A carries TCP for the whole sequence.
        let seconds = 20
        let traffic = Background {
            try topology.iperf(clientIn: peerA.namespace, server: "10.10.0.1", serverIn: tenantA, seconds: seconds)
        }
        usleep(1_500_000)

        // 1. Tenant B added.
        write(file(tenantB: tenantBFirst))
        let added = try reload()
        #expect(added.status == 0, "reload adding tenant B: \(added)")
        #expect(added.stdout.contains("tenant \(tenantBName): added with 1 peer(s)"), "\(added.stdout)")
        let tenantB = topology.adoptNamespace(named: namespaceB)
        let toB = try topology.ping(from: 1, to: "10.10.0.1", count: 5, interval: 0.2)
        #expect(toB.received >= 3, "peer B → the added tenant B: \(toB)\n\(gateway.log)")

        // 2. Tenant B's peer changed: another prefix (routed in its namespace), a keepalive.
        write(file(tenantB: tenantBChanged))
        let changed = try reload()
        #expect(changed.status == 0, "reload changing tenant B: \(changed)")
        #expect(changed.stdout.contains("changed: allowed IPs, persistent keepalive"), "\(changed.stdout)")
        let routes = try tenantB.exec(["ip", "route", "show"])
        #expect(routes.contains("10.10.2.0/24"), "the new AllowedIPs prefix is not routed in tenant B: \(routes)")
        let fromB = try GatewayTopology.ping(in: tenantB, to: "10.10.1.2", count: 3, interval: 0.2)
        #expect(fromB.allReceived, "tenant B → peer B after the change: \(fromB)")

        // 3. A broken file and a [Gateway] change are refused; tenant B keeps working.
        write(file(tenantB: tenantBBroken))
        let broken = try reload()
        #expect(broken.status == 1, "a broken file was accepted: \(broken)")
        #expect(broken.stderr.contains("\(configPath):"), "no file:line in \(broken.stderr)")
        #expect(broken.stderr.contains("ListenPort: '99999' is not a port number"), "\(broken.stderr)")
        #expect(broken.stderr.contains("the running configuration stays"), "\(broken.stderr)")
        write(file(uplink: "lo", tenantB: tenantBChanged))
        let uplinkChange = try reload()
        #expect(uplinkChange.status == 1 && uplinkChange.stderr.contains("Uplink cannot change while the gateway runs"),
                "\(uplinkChange)")
        let afterRefusals = try topology.ping(from: 1, to: "10.10.0.1", count: 3, interval: 0.2)
        #expect(afterRefusals.allReceived, "tenant B after refused reloads: \(afterRefusals)")

        // 4. Tenant B removed: its namespace (which the gateway created) goes with it.
        write(file(tenantB: nil))
        let removed = try reload()
        #expect(removed.status == 0 && removed.stdout.contains("tenant \(tenantBName): removed"), "\(removed)")
        #expect(!(try Command.run(["ip", "netns", "list"])).contains(namespaceB), "tenant B's namespace is still there")
        let unchanged = try reload()
        #expect(unchanged.status == 0 && unchanged.stdout.contains("no changes"), "\(unchanged)")

        // 5. SIGHUP does the same: tenant B comes back.
        write(file(tenantB: tenantBFirst))
        kill(gateway.processIdentifier, SIGHUP)
        try gateway.waitForLog(what: "the SIGHUP reload") {
            $0.components(separatedBy: "reload: tenant \(tenantBName): added").count == 3
        }
        // Peer B still holds a session with the tenant B that was removed: the new tenant B
        // speaks first, so the gateway initiates a new one.
        let newB = topology.adoptNamespace(named: namespaceB)
        let backB = try GatewayTopology.ping(in: newB, to: "10.10.1.2", count: 5, interval: 0.2)
        #expect(backB.received >= 3, "tenant B re-added by SIGHUP → peer B: \(backB)\n\(gateway.log)")

        // Tenant A's iperf3 run never stalled, and its session was never rebuilt.
        let run = try #require(try traffic.wait(seconds: Double(seconds + 30)), "the iperf3 run through tenant A hung")
        print("tenant A during reloads: \(run.client.receiverBitsPerSecond / 1e6) Mbit/s, per second: "
              + "\(run.server.intervalBytes.map { $0 / 1_000_000 }) MB")
        #expect(run.server.intervalBytes.count >= seconds - 1)
        // (The last interval is the fraction of a second after the client stopped.)
        #expect(run.server.intervalBytes.dropLast().allSatisfy { $0 > 0 },
                "a second without traffic: \(run.server.intervalBytes)")

        let status = gateway.stop()
        let text = gateway.log
        #expect(status == 0, "xdpwg up did not exit cleanly after SIGTERM (status \(status.map(String.init) ?? "killed"))\n\(text)")
        let peerLine = text.split(separator: "\n").first { $0.hasPrefix("stats: peer") && $0.contains(peerA.publicKey) }
        #expect(peerLine?.contains(" handshakes=1 ") == true, "tenant A's peer did not keep its one session: \(peerLine ?? "")\n\(text)")
        #expect(!text.contains(keyA.secret.base64ForDisplay) && !text.contains(keyB.secret.base64ForDisplay))
        #expect(!(try Command.run(["ip", "netns", "list"])).contains(namespaceA))
    }
}

/// Runs `body` on its own thread; `wait` returns its result (nil on timeout).
final class Background<T>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<T, Error>?

    private var body: (() throws -> T)?

    init(_ body: @escaping () throws -> T) {
        self.body = body
        let thread = Thread { [self] in
            result = Result { try self.body!() }
            done.signal()
        }
        thread.start()
    }

    func wait(seconds: Double) throws -> T? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return try result!.get()
    }
}

/// The operator's tools against a running gateway: the unmodified `wg` reads and changes a
/// tenant through its UAPI socket (sessions of unchanged peers survive), `xdpwg stats`
/// reads the shared-memory segment in every format, and `/metrics` is scraped over HTTP.
/// After SIGTERM the socket and the segment are gone.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct GatewayOperatorToolsTests {
    @Test func wgStatsAndMetricsAgainstARunningGateway() throws {
        try Privileged.require()
        let topology = try GatewayTopology(peers: [
            .init(tenant: "a", innerAddress: "10.10.1.2/32", tenantRange: "10.10.0.0/24", queue: 0),
        ])
        defer { topology.close() }
        let tag = getpid() % 100_000
        let name = "op\(tag)", tenant = "wa\(tag)"
        let key = PrivateKey.generate()
        let psk = PresharedKey.generate().secret.base64ForDisplay
        let namespace = topology.namespaceName(tag: "wa")
        let peer = topology.peers[0]
        let metricsPort = 19_000 + Int(tag % 1000)
        let config = """
            [Gateway]
            Uplink = \(topology.uplinkName)
            Name = \(name)
            MetricsListen = 127.0.0.1:\(metricsPort)

            [Tenant]
            Name = \(tenant)
            PrivateKey = \(key.secret.base64ForDisplay)
            ListenPort = 51820
            Namespace = \(namespace)
            Address = 10.10.0.1/24

            [Peer]
            PublicKey = \(peer.publicKey)
            PresharedKey = \(psk)
            AllowedIPs = 10.10.1.2/32
            """
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-tools-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let gateway = try GatewayProcess(executable: try Command.xdpwg, in: topology.gateway, configuration: config)
        topology.atClose { gateway.stop() }
        let inner = topology.adoptNamespace(named: namespace)
        try topology.configurePeer(0, gatewayPublicKey: key.publicKey.description,
                                   endpoint: "\(GatewayTopology.gatewayAddress):51820", allowedIPs: "10.10.0.0/24",
                                   presharedKey: psk)
        let ping = try topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2)
        #expect(ping.allReceived, "peer → tenant: \(ping)\n\(gateway.log)")
        usleep(300_000)   // the stats segment is published four times a second

        // `wg show` and `wg showconf`: what the tenant is, and what it has seen.
        let dump = try Command.run(["wg", "show", tenant, "dump"]).split(separator: "\n").map { $0.split(separator: "\t") }
        #expect(dump.count == 2, "\(dump)")
        if dump.count == 2 {
            #expect(dump[0][1] == Substring(key.publicKey.description) && dump[0][2] == "51820" && dump[0][3] == "off")
            let p = dump[1]
            #expect(p[0] == Substring(peer.publicKey) && p[1] == Substring(psk))
            #expect(p[2] == Substring(peer.endpoint), "endpoint learned from the peer: \(p)")
            #expect(p[3] == "10.10.1.2/32")
            #expect((Int(p[4]) ?? 0) > 1_600_000_000, "latest handshake (unix seconds): \(p)")
            #expect((Int(p[5]) ?? 0) > 0 && (Int(p[6]) ?? 0) > 0, "rx/tx bytes: \(p)")
        }
        let showconf = try Command.run(["wg", "showconf", tenant])
        #expect(showconf.contains("ListenPort = 51820") && showconf.contains("PublicKey = \(peer.publicKey)"))
        #expect(try Command.run(["wg", "show", "interfaces"]).split(separator: " ").contains { $0.trimmingCharacters(in: .whitespacesAndNewlines) == tenant })

        // `wg set`: a prefix for the live peer (its session stays), a peer added and removed.
        try Command.run(["wg", "set", tenant, "peer", peer.publicKey, "allowed-ips", "10.10.1.2/32,10.10.5.0/24"])
        #expect(try Command.run(["wg", "show", tenant, "allowed-ips"]).contains("10.10.5.0/24"))
        #expect(try inner.exec(["ip", "route", "show"]).contains("10.10.5.0/24"), "the new prefix is routed in the tenant")
        let newPeer = PrivateKey.generate().publicKey.description
        try Command.run(["wg", "set", tenant, "peer", newPeer, "allowed-ips", "10.10.7.0/24", "persistent-keepalive", "25"])
        #expect(try Command.run(["wg", "show", tenant, "peers"]).contains(newPeer))
        try Command.run(["wg", "set", tenant, "peer", newPeer, "remove"])
        #expect(!(try Command.run(["wg", "show", tenant, "peers"])).contains(newPeer))
        let refused = try Command.runAllowingFailure(["wg", "set", tenant, "listen-port", "0"])
        #expect(refused.0 != 0, "listen-port 0 was accepted: \(refused)")
        // syncconf with what showconf printed: nothing changes.
        let confPath = directory.appendingPathComponent("wg.conf").path
        _ = FileManager.default.createFile(atPath: confPath, contents: Data(try Command.run(["wg", "showconf", tenant]).utf8),
                                           attributes: [.posixPermissions: 0o600])
        try Command.run(["wg", "syncconf", tenant, confPath])
        let after = try topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2)
        #expect(after.allReceived, "peer → tenant after wg set: \(after)")

        // `xdpwg stats`: table, JSON, Prometheus; and /metrics over HTTP.
        let table = try Command.run([try Command.xdpwg, "stats", "--name", name])
        #expect(table.contains(tenant) && table.contains(String(peer.publicKey.prefix(8))), "\(table)")
        let json = try Command.run([try Command.xdpwg, "stats", "--name", name, "--json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["schema_version"] as? Int == 1)
        #expect((object["workers"] as? [Any])?.count == 2)
        let peers = object["peers"] as? [[String: Any]] ?? []
        let row = peers.first { $0["public_key"] as? String == peer.publicKey }
        #expect((row?["rx_packets"] as? Int ?? 0) >= 3 && row?["tenant"] as? String == tenant, "\(peers)")
        #expect(row?["handshakes"] as? Int == 1, "one session for the peer through all the wg set calls: \(String(describing: row))")
        let prometheus = try Command.run([try Command.xdpwg, "stats", "--name", name, "--prometheus"])
        #expect(prometheus.contains("wireguard_received_bytes_total{interface=\"\(tenant)\",public_key=\"\(peer.publicKey)\"}"),
                "\(prometheus)")
        let scrape = try topology.gateway.exec(["python3", "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(metricsPort)/metrics', timeout=5).read().decode())"])
        #expect(scrape.contains("wireguard_sent_bytes_total{interface=\"\(tenant)\"") && scrape.contains("xdpwg_"),
                "\(scrape.prefix(2000))")
        #expect(scrape.contains("wireguard_latest_handshake_seconds{interface=\"\(tenant)\""))

        // A new private key through `wg set`: the session starts over (with the same preshared
        // key) once the peer knows the new public key.
        let newKey = PrivateKey.generate()
        let keyPath = directory.appendingPathComponent("new.key").path
        _ = FileManager.default.createFile(atPath: keyPath, contents: Data(newKey.secret.base64ForDisplay.utf8),
                                           attributes: [.posixPermissions: 0o600])
        try Command.run(["wg", "set", tenant, "private-key", keyPath])
        #expect(try Command.run(["wg", "show", tenant, "public-key"]).contains(newKey.publicKey.description))
        try topology.configurePeer(0, gatewayPublicKey: newKey.publicKey.description,
                                   endpoint: "\(GatewayTopology.gatewayAddress):51820", allowedIPs: "10.10.0.0/24",
                                   presharedKey: psk)
        let rekeyed = try topology.ping(from: 0, to: "10.10.0.1", count: 5, interval: 0.2)
        #expect(rekeyed.received >= 3, "peer → tenant after the tenant's new private key: \(rekeyed)\n\(gateway.log)")

        let status = gateway.stop()
        #expect(status == 0, "\(gateway.log)")
        #expect(!FileManager.default.fileExists(atPath: "/var/run/wireguard/\(tenant).sock"))
        #expect(!FileManager.default.fileExists(atPath: "/run/xdpwg/\(name).stats"))
        let gone = try Command.runAllowingFailure([try Command.xdpwg, "stats", "--name", name])
        #expect(gone.0 == 1 && gone.2.contains("no gateway named"), "\(gone)")
        let text = gateway.log
        for secret in [key.secret, newKey.secret] {
            #expect(!text.contains(secret.base64ForDisplay) && !text.contains(secret.hexForDisplay))
        }
        #expect(!text.contains(psk))
    }
}
