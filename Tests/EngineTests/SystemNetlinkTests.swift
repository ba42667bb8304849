@testable import Engine
import Testing
import WireGuard

/// "24 00 1a 00" → bytes; spaces and line breaks are ignored.
func hex(_ text: String) -> [UInt8] {
    let digits = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    return digits.map { UInt8($0, radix: 16)! }
}

/// Netlink requests and replies on known bytes (no privileges needed). The request bytes
/// were cross-checked against the kernel headers' NLMSG_LENGTH / RTA_LENGTH / RTA_ALIGN
/// macros as iproute2's addattr_l uses them.
@Suite struct SystemNetlinkTests {
    // MARK: Requests

    @Test func routeRequestIPv4() {
        let bytes = RouteNetlink.routeRequest(to: IPAddress("192.0.2.1")!, sequence: 7)
        #expect(bytes == hex("""
            24 00 00 00 1a 00 01 00 07 00 00 00 00 00 00 00
            02 20 00 00 00 00 00 00 00 00 00 00
            08 00 01 00 c0 00 02 01
            """))
    }

    @Test func routeRequestIPv6() {
        let bytes = RouteNetlink.routeRequest(to: IPAddress("2001:db8::1")!, sequence: 0x0102_0304)
        #expect(bytes == hex("""
            30 00 00 00 1a 00 01 00 04 03 02 01 00 00 00 00
            0a 80 00 00 00 00 00 00 00 00 00 00
            14 00 01 00 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01
            """))
    }

    @Test func neighbourRequest() {
        let bytes = RouteNetlink.neighbourRequest(of: IPAddress("192.0.2.2")!, interfaceIndex: 5, sequence: 1)
        #expect(bytes == hex("""
            24 00 00 00 1e 00 01 00 01 00 00 00 00 00 00 00
            02 00 00 00 05 00 00 00 00 00 00 00
            08 00 01 00 c0 00 02 02
            """))
    }

    /// A 5-byte string attribute is followed by 3 bytes of padding that its length does not count.
    @Test func linkRequestPadsTheName() {
        let bytes = RouteNetlink.linkRequest(named: "eth0", sequence: 2)
        #expect(bytes == hex("""
            34 00 00 00 12 00 01 00 02 00 00 00 00 00 00 00
            00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
            09 00 03 00 65 74 68 30 00 00 00 00
            08 00 1d 00 08 00 00 00
            """))
    }

    // MARK: Replies

    /// RTM_NEWROUTE for 198.51.100.7 via 192.0.2.2 on ifindex 3, with an unknown 5-byte
    /// attribute in the middle: the parser must step over it by its aligned length.
    static let routeReply = hex("""
        4c 00 00 00 18 00 00 00 07 00 00 00 d2 04 00 00
        02 20 00 00 fe 00 00 01 00 02 00 00
        08 00 0f 00 fe 00 00 00
        08 00 01 00 c6 33 64 07
        05 00 63 00 aa 00 00 00
        08 00 04 00 03 00 00 00
        08 00 07 00 c0 00 02 01
        08 00 05 00 c0 00 02 02
        """)

    @Test func parsesRouteReply() throws {
        let messages = try NetlinkMessage.parse(SystemNetlinkTests.routeReply[...])
        #expect(messages.count == 1)
        let message = try #require(messages.first)
        #expect(message.type == NL.newRoute)
        #expect(message.sequence == 7)
        #expect(message.portID == 1234)
        #expect(message.payload.count == 76 - 16)
        let destination = IPAddress("198.51.100.7")!
        let route = try RouteNetlink.parseRoute(message, destination: destination)
        #expect(route == Route(destination: destination, kind: .unicast, interfaceIndex: 3,
                               gateway: IPAddress("192.0.2.2"), preferredSource: IPAddress("192.0.2.1"), table: 254))
        #expect(route.nextHop == IPAddress("192.0.2.2"))
    }

    @Test func routeWithoutGatewayHasTheDestinationAsNextHop() throws {
        // Same reply without RTA_GATEWAY (the last 8 bytes) and with the length adjusted.
        var bytes = Array(SystemNetlinkTests.routeReply.dropLast(8))
        bytes[0] = UInt8(bytes.count)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        let route = try RouteNetlink.parseRoute(message, destination: IPAddress("198.51.100.7")!)
        #expect(route.gateway == nil)
        #expect(route.nextHop == IPAddress("198.51.100.7"))
    }

    /// RFC 5549: an IPv4 route with an IPv6 next hop comes as RTA_VIA (family, address).
    @Test func parsesViaAttribute() throws {
        let bytes = hex("""
            3c 00 00 00 18 00 00 00 01 00 00 00 00 00 00 00
            02 20 00 00 fe 00 00 01 00 00 00 00
            08 00 04 00 02 00 00 00
            16 00 12 00 0a 00 fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        let route = try RouteNetlink.parseRoute(message, destination: IPAddress("203.0.113.9")!)
        #expect(route.gateway == IPAddress("fe80::1"))
        #expect(route.interfaceIndex == 2)
    }

    @Test func routeWithoutOutputInterfaceIsMalformed() throws {
        let bytes = hex("""
            24 00 00 00 18 00 00 00 01 00 00 00 00 00 00 00
            02 20 00 00 fe 00 00 07 00 00 00 00
            08 00 01 00 c6 33 64 07
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(throws: SystemError.self) { try RouteNetlink.parseRoute(message, destination: IPAddress("198.51.100.7")!) }
    }

    /// A neighbour dump: two RTM_NEWNEIGH parts and NLMSG_DONE in one datagram, preceded by a
    /// stale reply to an older request (sequence 8) that must be ignored.
    static let neighbourDump = hex("""
        24 00 00 00 1c 00 02 00 08 00 00 00 00 00 00 00
        02 00 00 00 03 00 00 00 02 00 00 01
        08 00 01 00 c0 00 02 63
        30 00 00 00 1c 00 02 00 09 00 00 00 00 00 00 00
        02 00 00 00 03 00 00 00 02 00 00 01
        08 00 01 00 c0 00 02 02
        0a 00 02 00 02 aa bb cc dd ee 00 00
        24 00 00 00 1c 00 02 00 09 00 00 00 00 00 00 00
        02 00 00 00 03 00 00 00 01 00 00 01
        08 00 01 00 c0 00 02 03
        14 00 00 00 03 00 02 00 09 00 00 00 00 00 00 00
        00 00 00 00
        """)

    @Test func collectsMultipartDumpUntilDone() throws {
        let messages = try NetlinkMessage.parse(SystemNetlinkTests.neighbourDump[...])
        #expect(messages.map(\.sequence) == [8, 9, 9, 9])
        var reply = NetlinkReply(sequence: 9, isDump: true, request: "neighbour dump")
        for (i, m) in messages.enumerated() {
            #expect(!reply.isComplete, "complete before message \(i)")
            try reply.consume(m)
        }
        #expect(reply.isComplete)
        #expect(reply.messages.count == 2)
        // The first is REACHABLE with an address, the second INCOMPLETE without one.
        #expect(try RouteNetlink.parseNeighbour(reply.messages[0]) == EthernetAddress("02:aa:bb:cc:dd:ee"))
        #expect(try RouteNetlink.parseNeighbour(reply.messages[1]) == nil)
    }

    /// A plain (non-dump) request completes with its first reply.
    @Test func plainRequestCompletesWithItsReply() throws {
        let messages = try NetlinkMessage.parse(SystemNetlinkTests.routeReply[...])
        var reply = NetlinkReply(sequence: 7, isDump: false, request: "route")
        try reply.consume(messages[0])
        #expect(reply.isComplete)
        #expect(reply.messages.count == 1)
        var other = NetlinkReply(sequence: 6, isDump: false, request: "route")
        try other.consume(messages[0])
        #expect(!other.isComplete, "a reply with another sequence number is not ours")
    }

    @Test(arguments: [
        (UInt16(0x02), true), (0x04, true), (0x08, true), (0x10, true), (0x40, true), (0x80, true),
        (0x01, false), (0x20, false), (0x00, false),
    ])
    func neighbourStates(state: UInt16, usable: Bool) throws {
        var bytes = hex("""
            30 00 00 00 1c 00 00 00 01 00 00 00 00 00 00 00
            0a 00 00 00 03 00 00 00 00 00 00 01
            14 00 01 00 fd 00 00 00 00 00 00 00 00 00 00 00 00 00 00 02
            0a 00 02 00 02 11 22 33 44 55 00 00
            """)
        bytes[0] = UInt8(bytes.count)
        bytes[24] = UInt8(state & 0xff)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        let mac = try RouteNetlink.parseNeighbour(message)
        #expect(mac == (usable ? EthernetAddress("02:11:22:33:44:55") : nil))
    }

    @Test func neighbourWithoutLinkLayerAddressIsNil() throws {
        let bytes = hex("""
            24 00 00 00 1c 00 00 00 01 00 00 00 00 00 00 00
            02 00 00 00 03 00 00 00 40 00 00 01
            08 00 01 00 c0 00 02 02
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(try RouteNetlink.parseNeighbour(message) == nil)
    }

    @Test func parsesLinkReplyWithNestedKind() throws {
        let bytes = hex("""
            5c 00 00 00 10 00 00 00 02 00 00 00 00 00 00 00
            00 00 01 00 07 00 00 00 43 10 01 00 00 00 00 00
            08 00 03 00 76 30 00 00
            08 00 04 00 94 05 00 00
            0a 00 01 00 02 00 00 00 00 07 00 00
            08 00 1f 00 02 00 00 00
            08 00 20 00 03 00 00 00
            10 00 12 80 09 00 01 00 76 65 74 68 00 00 00 00
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        let link = try RouteNetlink.parseLink(message)
        #expect(link == LinkAttributes(index: 7, name: "v0", hardwareType: 1, flags: 0x11043, mtu: 1428,
                                       address: [2, 0, 0, 0, 0, 7], rxQueues: 3, txQueues: 2, kind: "veth"))
        let interface = try NetworkInterface(link, role: "interface", consultSysfs: false)
        #expect(interface.isUp)
        #expect(!interface.isNoARP)
        #expect(interface.macAddress == EthernetAddress("02:00:00:00:00:07"))
        #expect(interface.rxQueueCount == 3)
        #expect(interface.txQueueCount == 2)
        #expect(interface.numaNode == nil)
    }

    // MARK: Errors and acknowledgements

    /// NLMSG_ERROR with NETLINK_CAP_ACK (request not echoed) and an extended-ack message.
    @Test func errorWithExtendedAck() throws {
        let bytes = hex("""
            34 00 00 00 02 00 00 03 05 00 00 00 00 00 00 00
            ed ff ff ff
            34 00 00 00 12 00 01 00 05 00 00 00 00 00 00 00
            10 00 01 00 6e 6f 20 73 75 63 68 20 64 65 76 00
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(try NetlinkError(message) == NetlinkError(code: -19, message: "no such dev"))
        var reply = NetlinkReply(sequence: 5, isDump: false, request: "link lookup for 'x'")
        #expect(throws: SystemError.netlink(request: "link lookup for 'x'", errno: 19, message: "no such dev")) {
            try reply.consume(message)
        }
        let error = SystemError.netlink(request: "link lookup for 'x'", errno: 19, message: "no such dev")
        #expect(error.description == "link lookup for 'x': No such device (ENODEV) (no such dev)")
    }

    /// Without CAP_ACK the request's payload is echoed, and the extended ack follows it.
    @Test func errorEchoingTheRequest() throws {
        let bytes = hex("""
            40 00 00 00 02 00 00 02 05 00 00 00 00 00 00 00
            9b ff ff ff
            24 00 00 00 1a 00 01 00 05 00 00 00 00 00 00 00
            02 20 00 00 00 00 00 00 00 00 00 00 08 00 01 00 cb 00 71 01
            08 00 01 00 78 79 7a 00
            """)
        let message = try #require(try NetlinkMessage.parse(bytes[...]).first)
        #expect(try NetlinkError(message) == NetlinkError(code: -101, message: "xyz"))
    }

    @Test func plainErrorAndAcknowledgement() throws {
        let error = hex("""
            24 00 00 00 02 00 00 00 05 00 00 00 00 00 00 00
            9b ff ff ff 24 00 00 00 1a 00 01 00 05 00 00 00 00 00 00 00
            """)
        let message = try #require(try NetlinkMessage.parse(error[...]).first)
        #expect(try NetlinkError(message) == NetlinkError(code: -101, message: nil))
        var reply = NetlinkReply(sequence: 5, isDump: false, request: "route lookup for 203.0.113.1")
        #expect(throws: SystemError.netlink(request: "route lookup for 203.0.113.1", errno: 101, message: nil)) {
            try reply.consume(message)
        }

        var ackBytes = error
        ackBytes[16] = 0; ackBytes[17] = 0; ackBytes[18] = 0; ackBytes[19] = 0
        let ack = try #require(try NetlinkMessage.parse(ackBytes[...]).first)
        var acknowledged = NetlinkReply(sequence: 5, isDump: false, request: "set")
        try acknowledged.consume(ack)
        #expect(acknowledged.isComplete)
        #expect(acknowledged.messages.isEmpty)
    }

    @Test func failedOrInterruptedDumpThrows() throws {
        let failed = hex("14 00 00 00 03 00 02 00 09 00 00 00 00 00 00 00 f0 ff ff ff")
        var reply = NetlinkReply(sequence: 9, isDump: true, request: "dump")
        #expect(throws: SystemError.netlink(request: "dump", errno: 16, message: nil)) {
            try reply.consume(try NetlinkMessage.parse(failed[...])[0])
        }
        let interrupted = hex("14 00 00 00 03 00 12 00 09 00 00 00 00 00 00 00 00 00 00 00")
        var second = NetlinkReply(sequence: 9, isDump: true, request: "dump")
        #expect(throws: SystemError.self) { try second.consume(try NetlinkMessage.parse(interrupted[...])[0]) }
        let overrun = hex("10 00 00 00 04 00 00 00 09 00 00 00 00 00 00 00")
        var third = NetlinkReply(sequence: 9, isDump: true, request: "dump")
        #expect(throws: SystemError.self) { try third.consume(try NetlinkMessage.parse(overrun[...])[0]) }
    }

    @Test func malformedLengthsAreRejected() {
        // A message claiming 100 bytes in a 20-byte datagram.
        #expect(throws: SystemError.self) {
            try NetlinkMessage.parse(hex("64 00 00 00 18 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00")[...])
        }
        // A message claiming less than its own header.
        #expect(throws: SystemError.self) {
            try NetlinkMessage.parse(hex("08 00 00 00 18 00 00 00 01 00 00 00 00 00 00 00")[...])
        }
        // An attribute shorter than its header, and one running past the end.
        #expect(throws: SystemError.self) { try NetlinkAttributes(hex("02 00 01 00 00 00 00 00")[...]) }
        #expect(throws: SystemError.self) { try NetlinkAttributes(hex("0c 00 01 00 00 00 00 00")[...]) }
        // A family header longer than the payload.
        let short = hex("14 00 00 00 18 00 00 00 01 00 00 00 00 00 00 00 02 20 00 00")
        #expect(throws: SystemError.self) {
            try RouteNetlink.parseRoute(try NetlinkMessage.parse(short[...])[0], destination: IPAddress("192.0.2.1")!)
        }
    }

    @Test func attributeTypeFlagsAreMasked() throws {
        // NLA_F_NESTED (0x8000) on type 18.
        let attributes = try NetlinkAttributes(hex("08 00 12 80 01 02 03 04")[...])
        #expect(attributes[18] == [1, 2, 3, 4][...])
    }

    // MARK: The real kernel, unprivileged

    /// Route and link lookups need no privileges: ask the kernel about loopback.
    @Test func loopbackThroughTheKernel() throws {
        let netlink = try RouteNetlink()
        let route = try netlink.route(to: IPAddress("127.0.0.1")!)
        #expect(route.kind == .local)
        #expect(route.interfaceIndex == 1)
        #expect(route.gateway == nil)
        let link = try netlink.link(named: "lo")
        #expect(link.index == 1)
        #expect(link.hardwareType == 772) // ARPHRD_LOOPBACK
        let lo = try NetworkInterface.named("lo")
        #expect(lo.index == 1)
        #expect(lo.macAddress == .zero)
        #expect(lo.isUp)
        #expect(lo.rxQueueCount >= 1)
        // Many requests on one socket: sequence numbers keep replies apart.
        for _ in 0..<50 { _ = try netlink.link(named: "lo") }
    }

    @Test func absentInterfaceIsNamed() {
        #expect(throws: SystemError.noSuchInterface(name: "eth9x", role: "uplink")) {
            try NetworkInterface.named("eth9x", role: "uplink")
        }
        #expect(SystemError.noSuchInterface(name: "eth9", role: "uplink").description
            == "uplink 'eth9' does not exist in this network namespace")
        #expect(throws: SystemError.self) { try NetworkInterface.named("much-too-long-name0") }
    }
}
