@testable import Engine
import Foundation
import TestSupport
import Testing
import WireGuard

/// TenantLink against the real kernel (root). The "gateway" is a test namespace: the link is
/// created by a thread that moved into it, so the host ends never touch the machine's own
/// namespace. Tenant namespaces are named like the test namespaces (`xdpwg-t<pid>-...`), so
/// a crashed run's leftovers are removed by the next run as well.
@Suite(.enabled(if: Privileged.shouldRun)) struct SystemTenantLinkTests {
    /// A fresh, unused tenant namespace name; removed (if it exists) when the test ends.
    final class TenantNamespaceName {
        let name = NetworkNamespace.uniqueName(tag: "tn")
        var path: String { "/var/run/netns/\(name)" }
        var exists: Bool { FileManager.default.fileExists(atPath: path) }
        deinit { _ = try? Command.runAllowingFailure(["ip", "netns", "delete", name]) }
    }

    static func spec(namespace: String, host: String = "xt0", inner: String = "wg0") -> TenantLinkSpec {
        TenantLinkSpec(
            namespace: namespace, hostName: host, innerName: inner, queues: 2,
            addresses: [(IPAddress("10.77.0.1")!, 24), (IPAddress("fd00:77::1")!, 64)],
            routes: [IPPrefix("10.88.0.0/16")!, IPPrefix("10.99.1.5/24")!, IPPrefix("fd00:88::/64")!],
            mtu: 1420)
    }

    static func rxPackets(_ gateway: NetworkNamespace, _ link: String) throws -> Int {
        let json = try IPJSON.object(["ip", "-n", gateway.name, "-j", "-s", "link", "show", "dev", link])
        let stats = json["stats64"] as? [String: Any]
        let rx = stats?["rx"] as? [String: Any]
        return try #require(rx?["packets"] as? Int)
    }

    static func linkExists(_ namespace: String, _ name: String) throws -> Bool {
        try Command.runAllowingFailure(["ip", "-n", namespace, "link", "show", "dev", name]).0 == 0
    }

    @Test func createConfiguresBothEndsAndDestroyRemovesThem() throws {
        try Privileged.require()
        let gateway = try NetworkNamespace(tag: "gw")
        defer { gateway.close() }
        let tenant = TenantNamespaceName()
        #expect(!tenant.exists)
        let spec = Self.spec(namespace: tenant.name)
        let link = try gateway.onThread { try TenantLink.create(spec) }
        defer { _ = try? gateway.onThread { try link.destroy() } }
        #expect(link.createdNamespace)
        #expect(tenant.exists)

        // The inner end: NOARP, up, MTU, queues, no link-local address, the MAC reported.
        let inner = try IPJSON.object(["ip", "-n", tenant.name, "-j", "-d", "link", "show", "dev", "wg0"])
        let innerFlags = inner["flags"] as? [String] ?? []
        #expect(innerFlags.contains("NOARP"), "\(innerFlags)")
        #expect(innerFlags.contains("UP"), "\(innerFlags)")
        #expect(inner["mtu"] as? Int == 1420)
        #expect(inner["num_rx_queues"] as? Int == 2)
        #expect(inner["num_tx_queues"] as? Int == 2)
        #expect(inner["address"] as? String == link.innerMAC.description)
        #expect(inner["inet6_addr_gen_mode"] as? String == "none")

        let addresses = try IPJSON.object(["ip", "-n", tenant.name, "-j", "addr", "show", "dev", "wg0"])
        let info = (addresses["addr_info"] as? [[String: Any]] ?? []).map {
            "\($0["local"] as? String ?? "?")/\($0["prefixlen"] as? Int ?? -1)"
        }
        #expect(Set(info) == ["10.77.0.1/24", "fd00:77::1/64"], "\(info)")

        let routes4 = try IPJSON.objects(["ip", "-n", tenant.name, "-j", "route", "show", "dev", "wg0"])
            .compactMap { $0["dst"] as? String }
        #expect(Set(routes4).isSuperset(of: ["10.88.0.0/16", "10.99.1.0/24", "10.77.0.0/24"]), "\(routes4)")
        let routes6 = try IPJSON.objects(["ip", "-n", tenant.name, "-6", "-j", "route", "show", "dev", "wg0"])
            .compactMap { $0["dst"] as? String }
        #expect(routes6.contains("fd00:88::/64"), "\(routes6)")
        let lo = try IPJSON.object(["ip", "-n", tenant.name, "-j", "link", "show", "dev", "lo"])
        #expect((lo["flags"] as? [String])?.contains("UP") == true)

        // The host end: up, no addresses, IPv6 off, same MTU and queues, the index and MAC reported.
        let host = try IPJSON.object(["ip", "-n", gateway.name, "-j", "-d", "link", "show", "dev", "xt0"])
        #expect(host["ifindex"] as? Int == Int(link.hostIndex))
        #expect(host["address"] as? String == link.hostMAC.description)
        #expect((host["flags"] as? [String])?.contains("UP") == true)
        #expect(host["mtu"] as? Int == 1420)
        #expect(host["num_rx_queues"] as? Int == 2)
        #expect(host["num_tx_queues"] as? Int == 2)
        let hostAddresses = try IPJSON.object(["ip", "-n", gateway.name, "-j", "addr", "show", "dev", "xt0"])
        #expect((hostAddresses["addr_info"] as? [Any])?.isEmpty == true, "\(hostAddresses)")
        #expect(try gateway.exec(["cat", "/proc/sys/net/ipv6/conf/xt0/disable_ipv6"]) == "1\n")
        #expect(link.hostMAC != link.innerMAC)

        // Packets the tenant sends to a routed address leave through the inner end and
        // arrive at the host end (no ARP or ND first: the link is NOARP).
        let before = try Self.rxPackets(gateway, "xt0")
        _ = try Command.runAllowingFailure(["ip", "netns", "exec", tenant.name, "ping", "-c", "3", "-i", "0.2",
                                            "-W", "1", "10.88.0.9"])
        let afterV4 = try Self.rxPackets(gateway, "xt0")
        #expect(afterV4 >= before + 3, "host end received \(afterV4 - before) packets for 3 pings")
        _ = try Command.runAllowingFailure(["ip", "netns", "exec", tenant.name, "ping", "-6", "-c", "2", "-i", "0.2",
                                            "-W", "1", "fd00:88::9"])
        let afterV6 = try Self.rxPackets(gateway, "xt0")
        #expect(afterV6 >= afterV4 + 2, "host end received \(afterV6 - afterV4) packets for 2 IPv6 pings")

        // Destroy removes the pair and the namespace it made; a second call is harmless.
        try gateway.onThread { try link.destroy() }
        #expect(!tenant.exists)
        #expect(try !Self.linkExists(gateway.name, "xt0"))
        try gateway.onThread { try link.destroy() }
    }

    /// An existing namespace is used and kept; a stale inner link left inside it and a stale
    /// host end left in the gateway's namespace (a crashed run) are replaced.
    @Test func existingNamespaceIsKeptAndStaleLinksReplaced() throws {
        try Privileged.require()
        let gateway = try NetworkNamespace(tag: "gw")
        defer { gateway.close() }
        let tenant = TenantNamespaceName()
        try Command.run(["ip", "netns", "add", tenant.name])
        try Command.run(["ip", "-n", tenant.name, "link", "add", "wg0", "type", "veth", "peer", "name", "stale1"])
        try gateway.exec(["ip", "link", "add", "xt0", "type", "veth", "peer", "name", "stale0"])
        let staleIndex = try #require(try IPJSON.object(["ip", "-n", gateway.name, "-j", "link", "show", "dev", "xt0"])["ifindex"] as? Int)

        let spec = Self.spec(namespace: tenant.name)
        let link = try gateway.onThread { try TenantLink.create(spec) }
        defer { _ = try? gateway.onThread { try link.destroy() } }
        #expect(!link.createdNamespace)
        #expect(Int(link.hostIndex) != staleIndex)
        #expect(try !Self.linkExists(gateway.name, "stale0"), "the stale pair was deleted")
        #expect(try !Self.linkExists(tenant.name, "stale1"), "the stale inner pair was deleted")
        #expect(try Self.linkExists(tenant.name, "wg0"))

        try gateway.onThread { try link.destroy() }
        #expect(tenant.exists, "a namespace we did not create is kept")
        #expect(try !Self.linkExists(tenant.name, "wg0"))
        #expect(try !Self.linkExists(gateway.name, "xt0"))
    }

    /// After a crash (a link never destroyed), the next `create` adopts the namespace the
    /// crashed run made (its inner end carries our mark), so that `destroy` removes it; the
    /// notes say what was reclaimed. `abandon` removes the host end and never the namespace.
    @Test func namespaceMadeByACrashedRunIsAdoptedAndAbandonKeepsNamespaces() throws {
        try Privileged.require()
        let gateway = try NetworkNamespace(tag: "gw")
        defer { gateway.close() }
        let tenant = TenantNamespaceName()
        let spec = Self.spec(namespace: tenant.name)
        let crashed = try gateway.onThread { try TenantLink.create(spec) }
        #expect(crashed.createdNamespace && crashed.reclaimed.isEmpty)
        let inner = try IPJSON.object(["ip", "-n", tenant.name, "-j", "link", "show", "dev", "wg0"])
        #expect(inner["ifalias"] as? String == TenantLink.ownershipMark, "\(inner)")

        let again = try gateway.onThread { try TenantLink.create(spec) }
        #expect(again.createdNamespace, "the namespace a crashed run made was not adopted")
        #expect(again.reclaimed == [
            "removed the stale veth 'wg0' in network namespace '\(tenant.name)'",
            "adopted network namespace '\(tenant.name)', which an earlier run of xdpwg made (it is removed at exit)",
        ], "deleting the inner end takes the host end along: \(again.reclaimed)")
        try gateway.onThread { try again.destroy() }
        #expect(!tenant.exists, "the adopted namespace was kept")

        // abandon: the host end goes (and the inner end with it), the namespace stays.
        let link = try gateway.onThread { try TenantLink.create(spec) }
        #expect(link.namespaceExists)
        try gateway.onThread { try link.abandon() }
        #expect(try !Self.linkExists(gateway.name, "xt0"))
        #expect(tenant.exists && link.namespaceExists, "abandon removed the namespace")
        try gateway.onThread { try link.destroy() }
        #expect(tenant.exists, "destroy after abandon removed the namespace")
    }

    /// A name clash with an interface that is not a veth is refused, and nothing is left behind.
    @Test func refusesToDeleteAnInterfaceThatIsNotAVeth() throws {
        try Privileged.require()
        let gateway = try NetworkNamespace(tag: "gw")
        defer { gateway.close() }
        let tenant = TenantNamespaceName()
        try gateway.exec(["ip", "link", "add", "xt0", "type", "bridge"])
        let spec = Self.spec(namespace: tenant.name)
        do {
            _ = try gateway.onThread { try TenantLink.create(spec) }
            Issue.record("created a tenant link over a bridge")
        } catch let error as SystemError {
            #expect(error.description.contains("is not a veth"), "\(error)")
            #expect(error.description.contains("a bridge"), "\(error)")
        }
        #expect(try Self.linkExists(gateway.name, "xt0"), "the bridge is untouched")
        #expect(!tenant.exists, "the namespace made for the failed link is removed")
    }

    /// A step that fails half-way names the step, the object and the namespace with the
    /// kernel's reason, and rolls back.
    @Test func failureHalfWayRollsBack() throws {
        try Privileged.require()
        let gateway = try NetworkNamespace(tag: "gw")
        defer { gateway.close() }
        let tenant = TenantNamespaceName()
        var duplicate = Self.spec(namespace: tenant.name)
        duplicate.addresses.append((IPAddress("10.77.0.1")!, 24)) // the same address twice
        let spec = duplicate
        do {
            _ = try gateway.onThread { try TenantLink.create(spec) }
            Issue.record("created a tenant link with a duplicate address")
        } catch let error as SystemError {
            guard case .netlink(let request, let errno, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(request == "adding address 10.77.0.1/24 to 'wg0' in network namespace '\(tenant.name)'")
            // The kernel's reason, as iproute2 printed it ("RTNETLINK answers: File exists").
            #expect(errno == EEXIST)
            #expect(error.description.hasPrefix("adding address 10.77.0.1/24 to 'wg0' in network namespace "
                + "'\(tenant.name)': File exists"), "\(error)")
        }
        #expect(!tenant.exists)
        #expect(try !Self.linkExists(gateway.name, "xt0"))
    }

    /// A namespace made as `ip netns add` makes one: a bind mount that `ip netns` can enter,
    /// /var/run/netns a shared mount point; the calling thread stays where it was. An existing
    /// name is refused and left alone; deletion removes the name.
    @Test func namespaceFileIsMadeAndRemovedAsIPNetnsDoes() throws {
        try Privileged.require()
        let tenant = TenantNamespaceName()
        let before = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
        try NetworkNamespaceFile.create(tenant.name)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net") == before)
        #expect(tenant.exists)
        // mountinfo: the fifth field is the mount point, optional fields ("shared:N") follow.
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).split(separator: "\n")
            .map { $0.split(separator: " ").map(String.init) }
        let places = { (path: String) in [path, path.replacingOccurrences(of: "/var/run/", with: "/run/")] }
        #expect(mounts.contains { places(tenant.path).contains($0[4]) }, "no mount at \(tenant.path)")
        let directory = mounts.filter { places(ThreadNetworkNamespace.directory).contains($0[4]) }
        #expect(directory.contains { $0.contains { $0.hasPrefix("shared:") } }, "\(directory)")
        // A namespace of its own: only lo, down.
        let links = try IPJSON.objects(["ip", "-n", tenant.name, "-j", "link", "show"])
        #expect(links.compactMap { $0["ifname"] as? String } == ["lo"])
        #expect(try Command.run(["ip", "netns", "exec", tenant.name, "readlink", "/proc/self/ns/net"]) != before + "\n")

        #expect(throws: SystemError.self) { try NetworkNamespaceFile.create(tenant.name) }
        #expect(tenant.exists, "a refused create removed the existing name")
        try NetworkNamespaceFile.delete(tenant.name)
        #expect(!tenant.exists)
        #expect(throws: SystemError.self) { try NetworkNamespaceFile.delete(tenant.name) }
    }

    @Test func invalidNamesAreRefusedBeforeAnythingRuns() throws {
        try Privileged.require()
        let tenant = TenantNamespaceName()
        for (host, inner) in [("bad name", "wg0"), ("xt0", "much-too-long-name"), ("-xt0", "wg0"), ("xt0", "")] {
            #expect(throws: SystemError.self) {
                try TenantLink.create(Self.spec(namespace: tenant.name, host: host, inner: inner))
            }
        }
        #expect(!tenant.exists)
    }
}
