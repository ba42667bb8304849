@testable import Engine
#if canImport(Glibc)
import Glibc
#endif
import Testing
import WireGuard

/// The requests that change links, addresses and routes, on known bytes (no privileges
/// needed): the fields iproute2's `ip` sets for the same commands.
@Suite struct SystemNetlinkWriteTests {
    /// `ip addr add 10.77.0.1/24 dev IFINDEX-5`: create + exclusive, global scope, local and
    /// address attributes.
    @Test func addAddressIPv4() {
        let bytes = RouteNetlink.addAddressRequest(IPAddress("10.77.0.1")!, prefixLength: 24, interfaceIndex: 5,
                                                   sequence: 1)
        #expect(bytes == hex("""
            28 00 00 00 14 00 05 06 01 00 00 00 00 00 00 00
            02 18 00 00 05 00 00 00
            08 00 02 00 0a 4d 00 01
            08 00 01 00 0a 4d 00 01
            """))
    }

    /// IPv6 addresses carry IFA_F_NODAD (`ip addr add … nodad`); 127/8 gets host scope.
    @Test func addAddressFlagsAndScope() throws {
        let v6 = try #require(try NetlinkMessage.parse(RouteNetlink.addAddressRequest(
            IPAddress("fd00:77::1")!, prefixLength: 64, interfaceIndex: 9, sequence: 3)[...]).first)
        #expect(Array(v6.payload.prefix(8)) == [10, 64, NL.ifaFlagNoDAD, NL.scopeUniverse, 9, 0, 0, 0])
        #expect(try v6.attributes(after: 8).address(NL.ifaLocal) == IPAddress("fd00:77::1"))
        let loopback = try #require(try NetlinkMessage.parse(RouteNetlink.addAddressRequest(
            IPAddress("127.0.0.2")!, prefixLength: 8, interfaceIndex: 1, sequence: 4)[...]).first)
        #expect(Array(loopback.payload.prefix(4)) == [2, 8, 0, NL.scopeHost])
    }

    /// `ip route replace 10.88.0.0/16 dev IFINDEX-7`: create + replace, main table, boot
    /// protocol, link scope, unicast.
    @Test func replaceRouteIPv4() {
        let bytes = RouteNetlink.routeRequest(type: NL.newRoute, IPPrefix("10.88.0.0/16")!, interfaceIndex: 7,
                                              sequence: 2)
        #expect(bytes == hex("""
            2c 00 00 00 18 00 05 05 02 00 00 00 00 00 00 00
            02 10 00 00 fe 03 fd 01 00 00 00 00
            08 00 01 00 0a 58 00 00
            08 00 04 00 07 00 00 00
            """))
    }

    /// `ip route del fd00:88::/64 dev IFINDEX-7`: no create flags, scope nowhere, no type or
    /// protocol (match any).
    @Test func deleteRouteIPv6() throws {
        let message = try #require(try NetlinkMessage.parse(RouteNetlink.routeRequest(
            type: NL.deleteRoute, IPPrefix("fd00:88::/64")!, interfaceIndex: 7, sequence: 5)[...]).first)
        #expect(message.type == NL.deleteRoute)
        #expect(message.flags == NL.request | NL.ack)
        #expect(Array(message.payload.prefix(8)) == [10, 64, 0, 0, NL.tableMain, 0, NL.scopeNowhere, 0])
        let attributes = try message.attributes(after: 12)
        #expect(attributes.address(NL.rtaDestination) == IPAddress("fd00:88::"))
        #expect(attributes.uint32(NL.rtaOutputInterface) == 7)
    }

    /// The veth request nests kind, data and the peer (its own ifinfomsg, name, queues, MTU
    /// and namespace); every nest's length covers exactly its contents.
    @Test func createVethNestsThePeer() throws {
        let bytes = RouteNetlink.createVethRequest(name: "xt0", peer: "wg0", queues: 3, mtu: 1420,
                                                   peerNamespaceFD: 11, sequence: 6)
        let messages = try NetlinkMessage.parse(bytes[...])
        #expect(messages.count == 1)
        let message = try #require(messages.first)
        #expect(Int(message.payload.count) + NL.headerSize == bytes.count)
        #expect(message.type == NL.newLink)
        #expect(message.flags == NL.request | NL.ack | NL.create | NL.exclusive)
        let link = try message.attributes(after: 16)
        #expect(link.string(NL.iflaName) == "xt0")
        #expect(link.uint32(NL.iflaNumTXQueues) == 3 && link.uint32(NL.iflaNumRXQueues) == 3)
        #expect(link.uint32(NL.iflaMTU) == 1420)
        let info = try NetlinkAttributes(try #require(link[NL.iflaLinkInfo]))
        #expect(info.string(NL.iflaInfoKind) == "veth")
        let data = try NetlinkAttributes(try #require(info[NL.iflaInfoData]))
        let peer = try #require(data[NL.vethInfoPeer])
        #expect(Array(peer.prefix(16)) == [UInt8](repeating: 0, count: 16)) // struct ifinfomsg
        let peerAttributes = try NetlinkAttributes(peer.dropFirst(16))
        #expect(peerAttributes.string(NL.iflaName) == "wg0")
        #expect(peerAttributes.uint32(NL.iflaNumTXQueues) == 3 && peerAttributes.uint32(NL.iflaNumRXQueues) == 3)
        #expect(peerAttributes.uint32(NL.iflaMTU) == 1420)
        #expect(peerAttributes.uint32(NL.iflaNetNamespaceFD) == 11)
    }

    /// `ip link set dev wg0 addrgenmode none arp off mtu 1420`: NOARP under the change mask,
    /// the name (no index), the MTU and IFLA_AF_SPEC → AF_INET6 → IFLA_INET6_ADDR_GEN_MODE.
    @Test func setLinkAsTunnel() throws {
        let bytes = RouteNetlink.setLinkRequest(name: "wg0", index: 0, flags: NL.iffNoARP, change: NL.iffNoARP,
                                                mtu: 1420, noIPv6AddressGeneration: true, sequence: 8)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(message.flags == NL.request | NL.ack)
        #expect(Array(message.payload.prefix(16)) == RouteNetlink.linkHeader(flags: NL.iffNoARP, change: NL.iffNoARP))
        let attributes = try message.attributes(after: 16)
        #expect(attributes.string(NL.iflaName) == "wg0")
        #expect(attributes.uint32(NL.iflaMTU) == 1420)
        let spec = try NetlinkAttributes(try #require(attributes[NL.iflaAFSpec]))
        let inet6 = try NetlinkAttributes(try #require(spec[UInt16(NL.afInet6)]))
        #expect(inet6[NL.iflaInet6AddressGenerationMode] == [NL.in6AddressGenerationModeNone][...])
    }

    /// A link is deleted by index only.
    @Test func deleteLinkByIndex() {
        #expect(RouteNetlink.deleteLinkRequest(index: 42, sequence: 9) == hex("""
            20 00 00 00 11 00 05 00 09 00 00 00 00 00 00 00
            00 00 00 00 2a 00 00 00 00 00 00 00 00 00 00 00
            """))
    }

    /// A refusal names the step, the object and the place, and the kernel's reason.
    @Test func refusalIsNamed() {
        let error = SystemError.netlink(request: "adding address 10.77.0.1/24 to 'wg0' in network namespace 'ns'",
                                        errno: EEXIST, message: nil)
        #expect(error.description == "adding address 10.77.0.1/24 to 'wg0' in network namespace 'ns': File exists (EEXIST)")
    }
}
