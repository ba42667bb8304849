import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// Faults while traffic flows, end to end with wireguard-go peers (the topology of
/// `GatewayUpTests`: tenant A's peer on uplink queue 0, tenant B's on queue 1, both tenants
/// with the same addresses):
///
/// - `kill -9` of the gateway, then `xdpwg up` again with the same configuration: nothing of
///   ours is left on the uplink (the XDP programs hang on bpf_links, which the kernel frees
///   with the process), the runtime files and the tenant links left behind are reclaimed and
///   logged, the peers handshake again and ping and iperf3 go through.
/// - A tenant's namespace deleted while both tenants carry traffic: the gateway keeps running,
///   the other tenant's iperf3 run never has a second without traffic, the deleted tenant is
///   shown as down (log, `xdpwg stats` table and JSON) and its peer's packets are counted as
///   `tenant_down`; `xdpwg reload` reattaches it, and its peer's session carries on.
/// - The uplink set down and up in the gateway's namespace while iperf3 runs: both are logged
///   and shown in `xdpwg stats`, traffic comes back, and the peer keeps its session.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct GatewayFaultTests {
    /// The two overlapping tenants of `TwoTenantGateway` (peer B's endpoint configured, so the
    /// gateway can initiate to it; peer A's learned), and what these tests ask of the gateway.
    final class Fixture {
        let setup: TwoTenantGateway
        /// The tenant namespaces, to run things in (the gateway makes them; the topology
        /// removes them on every exit path: a killed gateway leaves them behind).
        let a: NetworkNamespace, b: NetworkNamespace
        var topology: GatewayTopology { setup.topology }
        var name: String { setup.name }
        var tenantA: String { setup.a.name }
        var tenantB: String { setup.b.name }
        var namespaceA: String { setup.a.namespaceName }
        var namespaceB: String { setup.b.namespaceName }
        var peerA: GatewayTopology.Peer { setup.a.peer }
        var peerB: GatewayTopology.Peer { setup.b.peer }

        init(prefix: String) throws {
            setup = try .overlapping(prefix: prefix)
            a = setup.namespace(setup.a)
            b = setup.namespace(setup.b)
        }

        /// `xdpwg up` with both tenants; the topology stops it at close.
        func start() throws -> GatewayProcess {
            try setup.start(setup.configuration(writtenBy: "GatewayFaultTests"))
        }

        /// Tells both peers about the gateway.
        func configurePeers() throws { try setup.configurePeers() }

        /// `xdpwg stats --name NAME --json`, parsed.
        func statsJSON() throws -> [String: Any] {
            let json = try Command.run([try Command.xdpwg, "stats", "--name", name, "--json"])
            return try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "\(json)")
        }

        /// A drop reason summed over the workers, from `xdpwg stats --json`.
        func drops(_ reason: String) throws -> UInt64 {
            let workers = try statsJSON()["workers"] as? [[String: Any]] ?? []
            return workers.reduce(0) { $0 + UInt64(($1["drops"] as? [String: Any])?[reason] as? Int ?? 0) }
        }

        /// The tenant's record in `xdpwg stats --json`.
        func tenantStats(_ tenant: String) throws -> [String: Any]? {
            (try statsJSON()["tenants"] as? [[String: Any]])?.first { $0["name"] as? String == tenant }
        }

        /// The peer's record in `xdpwg stats --json`.
        func peerStats(_ peer: GatewayTopology.Peer) throws -> [String: Any]? {
            (try statsJSON()["peers"] as? [[String: Any]])?.first { $0["public_key"] as? String == peer.publicKey }
        }

        /// The XDP programs attached to the uplink, as `ip -d link` shows them ("" if none).
        func uplinkXDP() throws -> String {
            let link = try topology.gateway.exec(["ip", "-d", "link", "show", "dev", topology.uplinkName])
            return link.split(separator: "\n").filter { $0.contains("prog/xdp") || $0.contains("xdp") && $0.contains("id") }
                .joined(separator: "\n")
        }

        /// Pings from `namespace` once a second until one echo is answered; the seconds it
        /// took, or nil after `timeout`.
        func waitForPing(in namespace: NetworkNamespace, to address: String, timeout: Double) throws -> Double? {
            let start = Date()
            while Date().timeIntervalSince(start) < timeout {
                let result = try GatewayTopology.ping(in: namespace, to: address, count: 1, interval: 0.2)
                if result.received == 1 { return Date().timeIntervalSince(start) }
                usleep(200_000)
            }
            return nil
        }
    }

    /// Polls `condition` every 100 ms for up to `timeout` seconds.
    static func eventually(_ timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if try condition() { return true }
            usleep(100_000)
        } while Date() < deadline
        return false
    }

    // MARK: kill -9

    @Test func killNineThenStartAgain() throws {
        try Privileged.require()
        let f = try Fixture(prefix: "kn")
        defer { f.topology.close() }
        let first = try f.start()
        try f.configurePeers()
        let a = f.a, b = f.b
        #expect(try f.topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2).allReceived,
                "peer A → tenant A before the crash\n\(first.log)")
        #expect(try GatewayTopology.ping(in: b, to: "10.10.1.2", count: 5, interval: 0.2).received >= 3,
                "tenant B → peer B before the crash\n\(first.log)")

        // iperf3 through tenant A, and the gateway killed outright in the middle of it.
        let traffic = Background {
            try f.topology.iperf(clientIn: f.peerA.namespace, server: "10.10.0.1", serverIn: a, seconds: 6)
        }
        sleep(2)
        kill(first.processIdentifier, SIGKILL)
        #expect(first.stop() == nil, "xdpwg up survived SIGKILL")

        // What a crash leaves: the kernel frees our bpf_links with the process, so no XDP
        // program stays on the uplink; the files in /run, the tenant namespaces and their veth
        // pairs stay until the next start reclaims them.
        #expect(try f.uplinkXDP().isEmpty, "XDP left on the uplink after kill -9: \((try? f.uplinkXDP()) ?? "?")")
        let leftovers = ["/run/xdpwg/\(f.name).stats", "/run/xdpwg/\(f.name).control",
                         "/var/run/wireguard/\(f.tenantA).sock", "/var/run/wireguard/\(f.tenantB).sock"]
        for path in leftovers { #expect(FileManager.default.fileExists(atPath: path), "\(path) after kill -9") }
        #expect(a.exists && b.exists, "the tenant namespaces after kill -9")
        let stale = try Command.runAllowingFailure([try Command.xdpwg, "stats", "--name", f.name])
        #expect(stale.0 == 1 && stale.2.contains("is not running"), "xdpwg stats on a dead gateway: \(stale)")

        // At once the same configuration again (as systemd's Restart= would): everything
        // reclaimed, each thing said in the log.
        let second = try f.start()
        let log = second.log
        #expect(log.contains("replaced the stale stats segment /run/xdpwg/\(f.name).stats (left by pid \(first.processIdentifier), which is gone)"), "\(log)")
        #expect(log.contains("replaced the stale control socket /run/xdpwg/\(f.name).control"), "\(log)")
        for tenant in [f.tenantA, f.tenantB] {
            #expect(log.contains("replaced the stale UAPI socket /var/run/wireguard/\(tenant).sock"), "\(log)")
            #expect(log.contains("tenant \(tenant): removed the stale veth"), "\(log)")
        }
        for namespace in [f.namespaceA, f.namespaceB] {
            #expect(log.contains("adopted network namespace '\(namespace)', which an earlier run of xdpwg made"), "\(log)")
        }
        _ = try traffic.wait(seconds: 40)   // cut short by the crash: only its end matters

        // Peer B's endpoint is configured: tenant B speaks first and the gateway initiates.
        let toB = try f.waitForPing(in: b, to: "10.10.1.2", timeout: 20)
        #expect(toB != nil, "tenant B → peer B after the restart\n\(second.log)")
        // Peer A still holds its old session: wireguard-go handshakes again once its data
        // has gone unanswered for 15 s (keepalive timeout + rekey timeout).
        let toA = try f.waitForPing(in: f.peerA.namespace, to: "10.10.0.1", timeout: 45)
        #expect(toA != nil, "peer A → tenant A after the restart\n\(second.log)")
        print("after the restart: tenant B reached peer B in \(toB ?? -1) s, peer A reached tenant A in \(toA ?? -1) s")
        for (name, run) in [
            ("peer A → tenant A", { try f.topology.iperf(clientIn: f.peerA.namespace, server: "10.10.0.1", serverIn: a,
                                                         decoys: [b], seconds: 3) }),
            ("tenant B → peer B", { try f.topology.iperf(clientIn: b, server: "10.10.1.2", serverIn: f.peerB.namespace,
                                                         decoys: [f.peerA.namespace], seconds: 3) }),
        ] {
            do {
                let result = try run()
                print("after the restart: \(name) \(result.client.receiverBitsPerSecond / 1e6) Mbit/s")
                #expect(result.server.receivedBytes > 0, "\(name)")
            } catch {
                Issue.record("\(name) after the restart: \(error)\n\(second.log)")
            }
        }

        // The restarted gateway owns what the first one made: a clean stop removes it all.
        #expect(second.stop() == 0, "\(second.log)")
        #expect(try f.uplinkXDP().isEmpty)
        #expect(!a.exists && !b.exists, "the adopted tenant namespaces were left")
        for path in leftovers { #expect(!FileManager.default.fileExists(atPath: path), "\(path) after a clean stop") }
    }

    // MARK: A tenant's namespace deleted

    @Test func tenantNamespaceDeletedWhileTrafficFlows() throws {
        try Privileged.require()
        let f = try Fixture(prefix: "nd")
        defer { f.topology.close() }
        let gateway = try f.start()
        try f.configurePeers()
        let b = f.b
        #expect(try f.topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2).allReceived, "\(gateway.log)")
        #expect(try f.topology.ping(from: 1, to: "10.10.0.1", count: 3, interval: 0.2).allReceived, "\(gateway.log)")
        #expect(try f.tenantStats(f.tenantA)?["state"] as? String == "up")

        // Tenant B carries iperf3 throughout; tenant A's namespace goes in the middle of it
        // (nothing runs in it, so the namespace and its veth pair go at once).
        let seconds = 8
        let trafficB = Background {
            try f.topology.iperf(clientIn: f.peerB.namespace, server: "10.10.0.1", serverIn: b, seconds: seconds)
        }
        sleep(2)
        try Command.run(["ip", "netns", "delete", f.namespaceA])
        try gateway.waitForLog(what: "tenant A to be shown as down", timeout: 10) {
            $0.contains("tenant \(f.tenantA) is down: its network namespace '\(f.namespaceA)' was deleted")
        }
        // Peer A's packets now have nowhere to go: dropped and counted, never delivered.
        let droppedBefore = try f.drops("tenant_down")
        let pings = try GatewayTopology.ping(in: f.peerA.namespace, to: "10.10.0.1", count: 5, interval: 0.2)
        #expect(pings.received == 0, "\(pings)")
        #expect(try Self.eventually(3) { try f.drops("tenant_down") >= droppedBefore + 5 },
                "peer A's pings not counted as tenant_down: \((try? f.drops("tenant_down")) ?? 0) after \(droppedBefore)")
        #expect(gateway.isRunning, "the gateway died when a tenant's namespace was deleted\n\(gateway.log)")

        // Shown as down in both forms of `xdpwg stats`; tenant B is up.
        #expect(try Self.eventually(2) { try f.tenantStats(f.tenantA)?["state"] as? String == "down" })
        #expect(try f.tenantStats(f.tenantB)?["state"] as? String == "up")
        let table = try Command.run([try Command.xdpwg, "stats", "--name", f.name])
        let rowA = table.split(separator: "\n").first { $0.hasPrefix(f.tenantA + " ") }
        #expect(rowA?.split(separator: " ").dropFirst().first == "down", "\(table)")

        // Tenant B never had a second without traffic.
        let run = try #require(try trafficB.wait(seconds: Double(seconds + 40)), "tenant B's iperf3 hung")
        print("tenant B while A's namespace went: \(run.client.receiverBitsPerSecond / 1e6) Mbit/s, per second: "
              + "\(run.server.intervalBytes.map { $0 / 1_000_000 }) MB")
        #expect(run.server.intervalBytes.count >= seconds - 1)
        #expect(run.server.intervalBytes.dropLast().allSatisfy { $0 > 0 }, "a second without traffic: \(run.server.intervalBytes)")

        // A reload reattaches tenant A (its namespace made anew); peer A's session carries on.
        let reload = try Command.runAllowingFailure([try Command.xdpwg, "reload", "--name", f.name])
        #expect(reload.0 == 0 && reload.1.contains("tenant \(f.tenantA): reattached"), "\(reload)\n\(gateway.log)")
        #expect(f.a.exists)
        #expect(try f.topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2).allReceived,
                "peer A → reattached tenant A\n\(gateway.log)")
        #expect(try f.tenantStats(f.tenantA)?["state"] as? String == "up")
        #expect(try f.peerStats(f.peerA)?["handshakes"] as? Int == 1, "peer A's session did not survive")

        #expect(gateway.stop() == 0, "\(gateway.log)")
        #expect(!f.a.exists, "the namespace made when reattaching is the gateway's to remove")
    }

    // MARK: Uplink down and up

    @Test func uplinkDownAndUpWhileTrafficFlows() throws {
        try Privileged.require()
        let f = try Fixture(prefix: "ud")
        defer { f.topology.close() }
        let gateway = try f.start()
        try f.configurePeers()
        let a = f.a
        #expect(try f.topology.ping(from: 0, to: "10.10.0.1", count: 3, interval: 0.2).allReceived, "\(gateway.log)")
        let program = try f.uplinkXDP()

        // iperf3 through tenant A; the uplink goes down for 2 s in the middle of it.
        // (TCP backs off while the link is down: its retransmissions come 0.2, 0.4, 0.8, 1.6,
        // 3.2 s apart, so it may take some seconds after "up" to send again.)
        let seconds = 15
        let traffic = Background {
            try f.topology.iperf(clientIn: f.peerA.namespace, server: "10.10.0.1", serverIn: a, seconds: seconds)
        }
        sleep(3)
        let uplink = f.topology.uplinkName
        try f.topology.gateway.exec(["ip", "link", "set", "dev", uplink, "down"])
        try gateway.waitForLog(what: "the uplink to be logged as down", timeout: 5) {
            $0.contains("uplink \(uplink) is down (set down)")
        }
        #expect(try Self.eventually(2) {
            (try f.statsJSON()["uplink"] as? [String: Any])?["state"] as? String == "down"
        }, "xdpwg stats --json does not show the uplink down")
        let table = try Command.run([try Command.xdpwg, "stats", "--name", f.name])
        #expect(table.contains("warning: the uplink is down"), "\(table)")
        sleep(2)
        try f.topology.gateway.exec(["ip", "link", "set", "dev", uplink, "up"])
        try gateway.waitForLog(what: "the uplink to be logged as up", timeout: 5) {
            $0.contains("uplink \(uplink) is up again")
        }
        // The kernel kept the program (and the sockets) across down and up.
        #expect(try f.uplinkXDP() == program, "the uplink's XDP program changed")

        let run = try #require(try traffic.wait(seconds: Double(seconds + 40)), "iperf3 through the uplink's down and up hung")
        let perSecond = run.server.intervalBytes
        print("through the uplink's down and up: per second: \(perSecond.map { $0 / 1_000_000 }) MB")
        // Traffic came back: the last two full seconds carried bytes again.
        #expect(perSecond.count >= seconds - 1)
        #expect(perSecond.dropLast().suffix(2).allSatisfy { $0 > 0 }, "traffic did not recover: \(perSecond)")
        print("seconds without traffic: \(perSecond.dropLast().filter { $0 == 0 }.count) (the link was down for about 2 s)")
        #expect(try GatewayTopology.ping(in: a, to: "10.10.1.2", count: 3, interval: 0.2).allReceived, "tenant A → peer A after up")
        let uplinkStats = try f.statsJSON()["uplink"] as? [String: Any]
        #expect(uplinkStats?["state"] as? String == "up" && uplinkStats?["down_events"] as? Int == 1, "\(String(describing: uplinkStats))")
        // The peer kept its keys, and so its session: no new handshake was needed.
        #expect(try f.peerStats(f.peerA)?["handshakes"] as? Int == 1, "peer A handshook again")
        #expect(gateway.stop() == 0, "\(gateway.log)")
    }
}
