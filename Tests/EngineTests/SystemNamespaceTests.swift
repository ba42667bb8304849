@testable import Engine
import Foundation
import TestSupport
import Testing
import WireGuard

/// Real kernel objects in namespaces of our own (root): interface facts, route and neighbour
/// lookups through rtnetlink.
@Suite(.enabled(if: Privileged.shouldRun)) struct SystemNamespaceTests {
    /// An interface inside a test namespace, looked up by a thread that moved into it.
    @Test func interfaceInANamespace() throws {
        try Privileged.require()
        let ns = try NetworkNamespace(tag: "if")
        defer { ns.close() }
        try ns.exec(["ip", "link", "add", "v0", "numrxqueues", "2", "numtxqueues", "2", "type", "veth",
                     "peer", "name", "v1", "numrxqueues", "2", "numtxqueues", "2"])
        try ns.exec(["ip", "link", "set", "dev", "v0", "mtu", "1400"])
        let json = try IPJSON.object(["ip", "-n", ns.name, "-j", "link", "show", "dev", "v0"])

        let down = try ns.onThread { try NetworkInterface.named("v0") }
        #expect(down.name == "v0")
        #expect(Int(down.index) == json["ifindex"] as? Int)
        #expect(down.macAddress.description == json["address"] as? String)
        #expect(down.mtu == 1400)
        #expect(down.rxQueueCount == 2)
        #expect(down.txQueueCount == 2)
        #expect(down.numaNode == nil)
        #expect(down.kind == "veth")
        #expect(!down.isUp)

        try ns.exec(["ip", "link", "set", "dev", "v0", "up"])
        let up = try ns.onThread { try NetworkInterface.named("v0") }
        #expect(up.isUp)
        #expect(up.index == down.index)

        // Absent names are reported with their role, in the namespace asked.
        #expect(throws: SystemError.noSuchInterface(name: "eth9", role: "uplink")) {
            try ns.onThread { try NetworkInterface.named("eth9", role: "uplink") }
        }
        // A netlink socket opened in the namespace answers for it from any thread.
        let netlink = try RouteNetlink(namespace: ns.name)
        #expect(try netlink.link(named: "v1").index == (try ns.onThread { try NetworkInterface.named("v1").index }))
    }

    /// In the namespace /sys was mounted for, the queue counts come from sysfs, which is
    /// what the uplink NIC uses: check they agree with the kernel's for a 3-queue veth.
    @Test func interfaceSeenThroughSysfs() throws {
        try Privileged.require()
        let a = "xw\(getpid())s", b = "xw\(getpid())t"
        try Command.run(["ip", "link", "add", a, "numrxqueues", "3", "numtxqueues", "3", "type", "veth",
                         "peer", "name", b, "numrxqueues", "3", "numtxqueues", "3"])
        defer { _ = try? Command.runAllowingFailure(["ip", "link", "del", "dev", a]) }
        let interface = try NetworkInterface.named(a)
        let sysfsRX = try FileManager.default.contentsOfDirectory(atPath: "/sys/class/net/\(a)/queues")
            .filter { $0.hasPrefix("rx-") }.count
        #expect(sysfsRX == 3)
        #expect(interface.rxQueueCount == 3)
        #expect(interface.txQueueCount == 3)
        #expect(interface.numaNode == nil, "a veth has no device, so no NUMA node")
        let address = try String(contentsOfFile: "/sys/class/net/\(a)/address", encoding: .utf8)
        #expect(interface.macAddress.description == address.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(Int32(exactly: if_nametoindex(a)) == interface.index)
    }

    /// Two namespaces joined by a veth, IPv4 and IPv6, a route via a gateway in each family.
    @Test func routesAndNeighbours() throws {
        try Privileged.require()
        let pair = try LinkedNamespaces(subnet: "192.0.2")
        defer { pair.close() }
        let left = pair.left, right = pair.right
        try left.exec(["ip", "addr", "add", "fd00:db8:1::1/64", "dev", "veth0", "nodad"])
        try right.exec(["ip", "addr", "add", "fd00:db8:1::2/64", "dev", "veth1", "nodad"])
        try left.exec(["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2"])
        try left.exec(["ip", "-6", "route", "add", "fd00:db8:99::/64", "via", "fd00:db8:1::2"])
        let veth0 = try #require(try IPJSON.object(["ip", "-n", left.name, "-j", "link", "show", "dev", "veth0"])["ifindex"] as? Int)
        let rightMACText = try #require(try IPJSON.object(["ip", "-n", right.name, "-j", "link", "show", "dev", "veth1"])["address"] as? String)
        let rightMAC = try #require(EthernetAddress(rightMACText))

        let netlink = try RouteNetlink(namespace: left.name)

        // On the link: no gateway, the kernel's preferred source.
        let direct = try netlink.route(to: IPAddress("192.0.2.2")!)
        #expect(direct.kind == .unicast)
        #expect(Int(direct.interfaceIndex) == veth0)
        #expect(direct.gateway == nil)
        #expect(direct.preferredSource == IPAddress("192.0.2.1"))
        #expect(direct.table == 254)
        let direct6 = try netlink.route(to: IPAddress("fd00:db8:1::2")!)
        #expect(Int(direct6.interfaceIndex) == veth0)
        #expect(direct6.gateway == nil)
        #expect(direct6.preferredSource == IPAddress("fd00:db8:1::1"))

        // Via a gateway.
        let routed = try netlink.route(to: IPAddress("198.51.100.7")!)
        #expect(Int(routed.interfaceIndex) == veth0)
        #expect(routed.gateway == IPAddress("192.0.2.2"))
        #expect(routed.nextHop == IPAddress("192.0.2.2"))
        let routed6 = try netlink.route(to: IPAddress("fd00:db8:99::5")!)
        #expect(routed6.gateway == IPAddress("fd00:db8:1::2"))

        // A thread inside the namespace gets the same answer from a socket of its own.
        let fromThread = try left.onThread { try RouteNetlink().route(to: IPAddress("198.51.100.7")!) }
        #expect(fromThread == routed)

        // No route: the kernel's errno, named.
        for unreachable in ["203.0.113.1", "2001:db8:ff::1"] {
            do {
                _ = try netlink.route(to: IPAddress(unreachable)!)
                Issue.record("route to \(unreachable) found without a default route")
            } catch {
                #expect(error.errno == ENETUNREACH, "\(error)")
                #expect(error.description.contains("Network is unreachable"), "\(error)")
            }
        }

        // Neighbours: none before any traffic, the peer's MAC once a ping resolved it.
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.2")!, interfaceIndex: Int32(veth0)) == nil)
        try left.exec(["ping", "-c", "1", "-W", "2", "192.0.2.2"])
        try left.exec(["ping", "-6", "-c", "1", "-W", "2", "fd00:db8:1::2"])
        let state = try IPJSON.object(["ip", "-n", left.name, "-j", "neigh", "show", "192.0.2.2", "dev", "veth0"])
        #expect((state["state"] as? [String])?.contains("REACHABLE") == true, "\(state)")
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.2")!, interfaceIndex: Int32(veth0)) == rightMAC)
        #expect(try netlink.neighbour(of: IPAddress("fd00:db8:1::2")!, interfaceIndex: Int32(veth0)) == rightMAC)
        // The same address on another interface is another entry (none).
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.2")!, interfaceIndex: 1) == nil)

        // Unknown: no entry at all, then an unresolved one (INCOMPLETE or FAILED).
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.77")!, interfaceIndex: Int32(veth0)) == nil)
        _ = try left.execAllowingFailure(["ping", "-c", "1", "-W", "1", "192.0.2.77"])
        let unresolved = try IPJSON.object(["ip", "-n", left.name, "-j", "neigh", "show", "192.0.2.77", "dev", "veth0"])
        let unresolvedState = unresolved["state"] as? [String] ?? []
        #expect(unresolvedState.contains("INCOMPLETE") || unresolvedState.contains("FAILED"), "\(unresolved)")
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.77")!, interfaceIndex: Int32(veth0)) == nil)

        // A permanent entry is usable.
        try left.exec(["ip", "neigh", "add", "192.0.2.50", "lladdr", "02:00:00:00:00:50", "dev", "veth0", "nud", "permanent"])
        #expect(try netlink.neighbour(of: IPAddress("192.0.2.50")!, interfaceIndex: Int32(veth0))
            == EthernetAddress("02:00:00:00:00:50"))
    }
}
