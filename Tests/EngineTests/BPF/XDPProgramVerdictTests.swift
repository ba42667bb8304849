import CXDPWG
@testable import Engine
import Foundation
import TestSupport
import Testing

/// Known-answer tables for the XDP programs, run in the kernel with BPF_PROG_TEST_RUN on the
/// programs as embedded in the binary. No socket is registered, so a WireGuard-shaped packet
/// ends in the redirect's fallback: XDP_DROP, counted as "no socket". Each case must move
/// exactly its own counter by one.
@Suite(.enabled(if: Privileged.shouldRun), .serialized)
struct XDPProgramVerdictTests {
    static let ports: [UInt16] = [51_820, 51_821]

    struct Case: CustomStringConvertible {
        let name: String
        let frame: [UInt8]
        let verdict: XDPVerdict
        var description: String { name }
    }

    typealias F = TestFrame

    static func v4(_ udp: [UInt8], tags: [UInt16] = [], fragment: UInt16 = 0) -> [UInt8] {
        F.ethernet(F.ethIPv4, tags: tags, F.ipv4(fragment: fragment, udp))
    }

    static func v6(_ udp: [UInt8], tags: [UInt16] = []) -> [UInt8] {
        F.ethernet(F.ethIPv6, tags: tags, F.ipv6(udp))
    }

    static func wg(_ type: UInt8, _ size: Int, port: UInt16 = 51_820, reserved: [UInt8] = [0, 0, 0]) -> [UInt8] {
        F.udp(destination: port, F.wireguard(type: type, size: size, reserved: reserved))
    }

    static let uplinkCases: [Case] = {
        var cases: [Case] = [
            // WireGuard-shaped, to our ports: redirect, which falls back to drop (no socket).
            Case(name: "v4 initiation", frame: v4(wg(1, 148)), verdict: .droppedNoSocket),
            Case(name: "v4 response to the second port", frame: v4(wg(2, 92, port: 51_821)), verdict: .droppedNoSocket),
            Case(name: "v4 cookie reply", frame: v4(wg(3, 64)), verdict: .droppedNoSocket),
            Case(name: "v4 keepalive (32)", frame: v4(wg(4, 32)), verdict: .droppedNoSocket),
            Case(name: "v4 transport 1440", frame: v4(wg(4, 32 + 16 * 88)), verdict: .droppedNoSocket),
            Case(name: "v4 don't-fragment initiation", frame: v4(wg(1, 148), fragment: 0x4000), verdict: .droppedNoSocket),
            Case(name: "v4 with IP options", frame: F.ethernet(F.ethIPv4, F.ipv4(options: [1, 1, 1, 0], wg(4, 48))),
                 verdict: .droppedNoSocket),
            Case(name: "v4 with Ethernet padding", frame: v4(wg(4, 32)) + [UInt8](repeating: 0, count: 20),
                 verdict: .droppedNoSocket),
            Case(name: "v6 initiation", frame: v6(wg(1, 148)), verdict: .droppedNoSocket),
            Case(name: "v6 transport 48", frame: v6(wg(4, 48, port: 51_821)), verdict: .droppedNoSocket),
            Case(name: "802.1Q v4 transport", frame: v4(wg(4, 64), tags: [F.vlan8021Q]), verdict: .droppedNoSocket),
            Case(name: "802.1ad v6 response", frame: v6(wg(2, 92), tags: [F.vlan8021AD]), verdict: .droppedNoSocket),

            // To our port, wrong size for the type.
            Case(name: "initiation 147", frame: v4(wg(1, 147)), verdict: .droppedBadSize),
            Case(name: "initiation 149", frame: v4(wg(1, 149)), verdict: .droppedBadSize),
            Case(name: "response 93", frame: v4(wg(2, 93)), verdict: .droppedBadSize),
            Case(name: "cookie reply 65", frame: v4(wg(3, 65)), verdict: .droppedBadSize),
            Case(name: "transport 31", frame: v4(wg(4, 31)), verdict: .droppedBadSize),
            Case(name: "transport 16", frame: v4(wg(4, 16)), verdict: .droppedBadSize),
            Case(name: "v6 initiation 150", frame: v6(wg(1, 150)), verdict: .droppedBadSize),
            Case(name: "3-byte payload", frame: v4(F.udp(destination: 51_820, [4, 0, 0])), verdict: .droppedBadSize),
            Case(name: "empty payload", frame: v4(F.udp(destination: 51_820, [])), verdict: .droppedBadSize),

            // To our port, not a WireGuard message type.
            Case(name: "type 0", frame: v4(wg(0, 148)), verdict: .droppedBadType),
            Case(name: "type 5", frame: v4(wg(5, 148)), verdict: .droppedBadType),
            Case(name: "initiation, reserved byte 3 set", frame: v4(wg(1, 148, reserved: [0, 0, 1])), verdict: .droppedBadType),
            Case(name: "transport, reserved byte 1 set", frame: v4(wg(4, 32, reserved: [0xff, 0, 0])), verdict: .droppedBadType),
            Case(name: "v6 type 0", frame: v6(wg(0, 32)), verdict: .droppedBadType),

            // To our port, fragmented.
            Case(name: "v4 first fragment (more fragments)", frame: v4(wg(1, 148), fragment: 0x2000), verdict: .droppedFragment),
            Case(name: "v4 first fragment of a transport", frame: v4(wg(4, 1440), fragment: 0x2000), verdict: .droppedFragment),

            // To our port, lengths that disagree.
            Case(name: "UDP length 8 over the IP length", frame: v4(F.udp(destination: 51_820, lengthDelta: 8, F.wireguard(type: 4, size: 32))),
                 verdict: .droppedBadLength),
            Case(name: "UDP length 16 under the IP length", frame: v4(F.udp(destination: 51_820, lengthDelta: -16, F.wireguard(type: 4, size: 48))),
                 verdict: .droppedBadLength),
            Case(name: "frame cut 10 bytes short of the IP length", frame: Array(v4(wg(1, 148)).dropLast(10)), verdict: .droppedBadLength),
            Case(name: "IPv4 total length shorter than its headers",
                 frame: F.ethernet(F.ethIPv4, F.ipv4(totalLengthDelta: -(8 + 32 + 1), wg(4, 32))), verdict: .droppedBadLength),
            Case(name: "v6 payload length 16 over", frame: F.ethernet(F.ethIPv6, F.ipv6(payloadLengthDelta: 16, wg(4, 32))),
                 verdict: .droppedBadLength),
            Case(name: "v6 frame cut short", frame: Array(v6(wg(2, 92)).dropLast(1)), verdict: .droppedBadLength),

            // Not ours: to the kernel.
            Case(name: "other port", frame: v4(wg(1, 148, port: 51_822)), verdict: .passed),
            Case(name: "from our port to another", frame: v4(F.udp(source: 51_820, destination: 40_000, F.wireguard(type: 1, size: 148))),
                 verdict: .passed),
            Case(name: "TCP to our port", frame: F.ethernet(F.ethIPv4, F.ipv4(protocol: 6, F.tcp(destination: 51_820, []))), verdict: .passed),
            Case(name: "v6 TCP to our port", frame: F.ethernet(F.ethIPv6, F.ipv6(nextHeader: 6, F.tcp(destination: 51_820, []))),
                 verdict: .passed),
            Case(name: "ARP", frame: F.arpRequest(), verdict: .passed),
            Case(name: "ICMP echo", frame: F.icmpEcho(), verdict: .passed),
            Case(name: "v6 hop-by-hop then UDP to our port", frame: F.ethernet(F.ethIPv6, F.ipv6(nextHeader: 0, F.hopByHop(next: 17, wg(1, 148)))),
                 verdict: .passed),
            Case(name: "v4 non-first fragment", frame: v4(wg(1, 148), fragment: 0x0010), verdict: .passed),
            Case(name: "v4 header cut short", frame: Array(v4(wg(1, 148)).prefix(14 + 12)), verdict: .passed),
            Case(name: "UDP header cut short", frame: Array(v4(wg(1, 148)).prefix(14 + 20 + 6)), verdict: .passed),
            Case(name: "IHL 4", frame: F.ethernet(F.ethIPv4, F.ipv4(ihl: 4, wg(1, 148))), verdict: .passed),
            Case(name: "two VLAN tags (not parsed)", frame: v4(wg(1, 148), tags: [F.vlan8021AD, F.vlan8021Q]), verdict: .passed),
            Case(name: "Ethernet header only", frame: F.ethernet(F.ethIPv4, []), verdict: .passed),
        ]
        // Transport sizes around the smallest and up to a full frame: every size from 32 on is
        // accepted, not only multiples of 16 (padding stops at the sender's MTU: a 1420-byte
        // packet makes a 1452-byte message).
        for size in Array(4..<32) + Array(32...64) + [1451, 1452, 1453, 1472] {
            let shaped = size >= 32
            cases.append(Case(name: "v4 transport \(size)", frame: v4(wg(4, size)),
                              verdict: shaped ? .droppedNoSocket : .droppedBadSize))
        }
        return cases
    }()

    static func expectedAction(_ verdict: XDPVerdict) -> XDPAction {
        switch verdict {
        case .redirected: .redirect
        case .passed: .pass
        default: .drop
        }
    }

    /// Runs every case, checking its action and that exactly its counter moved by one; then
    /// that the totals are the table's.
    func check(_ core: XDPProgramCore, _ cases: [Case]) throws {
        for testCase in cases {
            let before = core.verdictCounters()
            let run = try core.object.testRun(packet: testCase.frame)
            let after = core.verdictCounters()
            #expect(run.action == Self.expectedAction(testCase.verdict), "\(testCase.name)")
            for verdict in XDPVerdict.allCases {
                let moved = (after[verdict] ?? 0) - (before[verdict] ?? 0)
                #expect(moved == (verdict == testCase.verdict ? 1 : 0),
                        "\(testCase.name): counter \(verdict) moved by \(moved), expected \(testCase.verdict)")
            }
        }
        let totals = core.verdictCounters()
        for verdict in XDPVerdict.allCases {
            #expect(totals[verdict] == UInt64(cases.filter { $0.verdict == verdict }.count), "total \(verdict)")
        }
        #expect(core.redirectsPerQueue() == [UInt64](repeating: 0, count: Int(XDPWG_MAX_QUEUES)))
    }

    @Test func uplinkKnownAnswers() throws {
        try Privileged.require()
        let core = try XDPProgramCore(.uplink)
        try core.setPorts(Self.ports)
        #expect(core.ports == Self.ports)
        try check(core, Self.uplinkCases)
    }

    @Test func uplinkPortsReplace() throws {
        try Privileged.require()
        let core = try XDPProgramCore(.uplink)
        let initiation = { (port: UInt16) in Self.v4(Self.wg(1, 148, port: port)) }
        // No ports yet: nothing is ours.
        #expect(try core.object.testRun(packet: initiation(51_820)).action == .pass)
        try core.setPorts([51_820, 51_821, 0, 65_535])
        #expect(core.ports == [0, 51_820, 51_821, 65_535])
        for port: UInt16 in [51_820, 51_821, 0, 65_535] {
            #expect(try core.object.testRun(packet: initiation(port)).action == .drop, "port \(port)")
        }
        for port: UInt16 in [51_819, 51_822, 1, 65_534, 51_820 + 64] {
            #expect(try core.object.testRun(packet: initiation(port)).action == .pass, "port \(port)")
        }
        try core.setPorts([51_821, 60_000])
        #expect(core.ports == [51_821, 60_000])
        #expect(try core.object.testRun(packet: initiation(51_820)).action == .pass)
        #expect(try core.object.testRun(packet: initiation(51_821)).action == .drop)
        #expect(try core.object.testRun(packet: initiation(60_000)).action == .drop)
        #expect(try core.object.testRun(packet: initiation(0)).action == .pass)
        try core.setPorts([])
        #expect(core.ports.isEmpty)
        #expect(try core.object.testRun(packet: initiation(51_821)).action == .pass)
        let counters = core.verdictCounters()
        #expect(counters[.droppedNoSocket] == 6)
        #expect(counters[.passed] == 9)
    }

    /// With a frame limit (what a 2048-byte AF_XDP frame receives), a well-formed message in
    /// a longer frame is dropped as too big instead of being redirected to a socket that
    /// cannot hold it; a malformed one is still counted as malformed; limit 0 lifts the limit.
    @Test func uplinkFrameLimit() throws {
        try Privileged.require()
        let core = try XDPProgramCore(.uplink)
        try core.setPorts(Self.ports)
        let limit = 2048 - UplinkProgram.receiveHeadroom   // 1792 bytes of Ethernet frame
        try core.setMaxFrameLength(limit)
        let v4Overhead = 14 + 20 + 8, v6Overhead = 14 + 40 + 8
        #expect(Self.v4(Self.wg(4, limit - v4Overhead)).count == limit)
        try check(core, [
            Case(name: "v4 transport filling the frame", frame: Self.v4(Self.wg(4, limit - v4Overhead)), verdict: .droppedNoSocket),
            Case(name: "v4 transport one byte over", frame: Self.v4(Self.wg(4, limit - v4Overhead + 1)), verdict: .droppedTooBig),
            // (BPF_PROG_TEST_RUN keeps about 3.5 KB linear; a longer packet would be multi-buffer.)
            Case(name: "v4 transport of 3000", frame: Self.v4(Self.wg(4, 3000)), verdict: .droppedTooBig),
            Case(name: "v6 transport filling the frame", frame: Self.v6(Self.wg(4, limit - v6Overhead)), verdict: .droppedNoSocket),
            Case(name: "v6 transport one byte over", frame: Self.v6(Self.wg(4, limit - v6Overhead + 1)), verdict: .droppedTooBig),
            Case(name: "oversized initiation (malformed first)", frame: Self.v4(Self.wg(1, 2000)), verdict: .droppedBadSize),
            Case(name: "oversized unknown type", frame: Self.v4(Self.wg(9, 2000)), verdict: .droppedBadType),
            Case(name: "oversized to another port", frame: Self.v4(Self.wg(4, 2000, port: 51_822)), verdict: .passed),
            Case(name: "v4 initiation", frame: Self.v4(Self.wg(1, 148)), verdict: .droppedNoSocket),
        ])
        try core.setMaxFrameLength(0)
        #expect(try core.object.testRun(packet: Self.v4(Self.wg(4, 3000))).action == .drop)
        #expect(core.verdictCounters()[.droppedTooBig] == 3, "limit 0: no limit")
        #expect(core.verdictCounters()[.droppedNoSocket] == 4)
        #expect(throws: BPFError.self) { try XDPProgramCore(.tenant).setMaxFrameLength(limit) }
    }

    static let tenantCases: [Case] = [
        Case(name: "IPv4", frame: F.icmpEcho(), verdict: .droppedNoSocket),
        Case(name: "IPv4 UDP", frame: v4(F.udp(destination: 53, [1, 2, 3])), verdict: .droppedNoSocket),
        Case(name: "IPv6", frame: v6(F.udp(destination: 53, [1, 2, 3])), verdict: .droppedNoSocket),
        Case(name: "ARP", frame: F.arpRequest(), verdict: .passed),
        Case(name: "802.1Q-tagged IPv4", frame: v4(F.udp(destination: 53, []), tags: [F.vlan8021Q]), verdict: .passed),
        Case(name: "LLDP", frame: F.ethernet(0x88cc, [UInt8](repeating: 0, count: 32)), verdict: .passed),
    ]

    @Test func tenantKnownAnswers() throws {
        try Privileged.require()
        let core = try XDPProgramCore(.tenant)
        try check(core, Self.tenantCases)
    }

    /// The Swift enum and the C enum name the same counters.
    @Test func verdictIndicesMatchTheSharedHeader() {
        #expect(XDPVerdict.allCases.count == Int(XDPWG_VERDICT_COUNT.rawValue))
        #expect(XDPVerdict.redirected.rawValue == Int(XDPWG_VERDICT_REDIRECTED.rawValue))
        #expect(XDPVerdict.passed.rawValue == Int(XDPWG_VERDICT_PASSED.rawValue))
        #expect(XDPVerdict.droppedNoSocket.rawValue == Int(XDPWG_VERDICT_DROPPED_NO_SOCKET.rawValue))
        #expect(XDPVerdict.droppedFragment.rawValue == Int(XDPWG_VERDICT_DROPPED_FRAGMENT.rawValue))
        #expect(XDPVerdict.droppedBadLength.rawValue == Int(XDPWG_VERDICT_DROPPED_BAD_LENGTH.rawValue))
        #expect(XDPVerdict.droppedBadType.rawValue == Int(XDPWG_VERDICT_DROPPED_BAD_TYPE.rawValue))
        #expect(XDPVerdict.droppedBadSize.rawValue == Int(XDPWG_VERDICT_DROPPED_BAD_SIZE.rawValue))
        #expect(XDPVerdict.droppedTooBig.rawValue == Int(XDPWG_VERDICT_DROPPED_TOO_BIG.rawValue))
        #expect(XDPVerdict.allCases.filter(\.isMalformed) == [.droppedFragment, .droppedBadLength, .droppedBadType, .droppedBadSize])
    }

    /// Both programs are in the binary as BPF ELF objects (EM_BPF = 247, little-endian).
    @Test func objectsAreEmbedded() {
        for object in [EmbeddedBPFObject.uplink, EmbeddedBPFObject.tenant] {
            let elf = object.elf
            #expect(elf.count > 1000, "\(object.name)")
            #expect(Array(elf.prefix(4)) == [0x7f, 0x45, 0x4c, 0x46], "\(object.name): ELF magic")
            #expect(elf.count > 20 && elf[18] == 247 && elf[19] == 0, "\(object.name): e_machine EM_BPF")
        }
    }

    @Test func base64KnownAnswers() {
        func decode(_ text: String) -> [UInt8] {
            var text = text
            return text.withUTF8 { EmbeddedBPFObject.decodeBase64($0) }
        }
        #expect(decode("") == [])
        #expect(decode("TWFu") == Array("Man".utf8))
        #expect(decode("TWE=") == Array("Ma".utf8))
        #expect(decode("TQ==") == Array("M".utf8))
        #expect(decode("+/8A") == [0xfb, 0xff, 0x00])
        #expect(decode("AAECAwQFBgcICQ==") == Array(0...9))
    }
}
