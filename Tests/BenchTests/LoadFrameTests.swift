import Bench
import Engine
import Testing
import TestSupport
import WireGuard

/// The load side's frames and figures, as bytes and numbers: no root needed.
@Suite("Load frames")
struct LoadFrameTests {
    static let source = EthernetAddress(0x02, 0, 0, 0, 0, 0x0a)
    static let destination = EthernetAddress(0x02, 0, 0, 0, 0, 0x0b)

    @Test("A UDP frame over IPv4: exact header bytes, header checksum right, UDP checksum 0, payload in place")
    func ipv4Frame() throws {
        let builder = try UDPFrameBuilder(sourceMAC: Self.source, destinationMAC: Self.destination,
                                          source: IPAddress("192.0.2.1")!, sourcePort: 40000,
                                          destination: IPAddress("192.0.2.2")!, destinationPort: 51820)
        #expect(builder.headerLength == 42)
        #expect(builder.ipOverhead == 28)
        var bytes = [UInt8](repeating: 0xEE, count: 2048)
        let length = try bytes.withUnsafeMutableBytes { buffer in
            try builder.write(into: buffer, ipPacketSize: 64) { payload in
                #expect(payload.count == 36)
                for i in 0..<payload.count { payload[i] = UInt8(i) }
            }
        }
        #expect(length == 78)
        let frame = Array(bytes[..<length])
        #expect(Array(frame[0..<14]) == [2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a, 0x08, 0x00])
        // Version/IHL, TOS, total length 64, id 0, DF, TTL 64, UDP, checksum, addresses.
        #expect(Array(frame[14..<24]) == [0x45, 0, 0, 64, 0, 0, 0x40, 0, 64, 17])
        #expect(Array(frame[26..<34]) == [192, 0, 2, 1, 192, 0, 2, 2])
        #expect(Wire.internetChecksum(frame[14..<34]) == 0, "the IPv4 header checksum verifies")
        // Ports 40000 → 51820, UDP length 44, checksum 0 (none).
        #expect(Array(frame[34..<42]) == [0x9c, 0x40, 0xca, 0x6c, 0, 44, 0, 0])
        #expect(Array(frame[42...]) == (0..<36).map(UInt8.init))
        let parsed = try #require(Packets.parseIPv4(Array(frame[14...])))
        #expect(parsed.headerChecksumValid)
        #expect(parsed.proto == 17)
    }

    @Test("A UDP frame over IPv6 carries a UDP checksum that verifies")
    func ipv6Frame() throws {
        let builder = try UDPFrameBuilder(sourceMAC: Self.source, destinationMAC: Self.destination,
                                          source: IPAddress("2001:db8::1")!, sourcePort: 1,
                                          destination: IPAddress("2001:db8::2")!, destinationPort: 2)
        #expect(builder.ipOverhead == 48)
        var bytes = [UInt8](repeating: 0, count: 2048)
        let length = try bytes.withUnsafeMutableBytes { buffer in
            try builder.write(into: buffer, ipPacketSize: 100) { payload in
                payload.initializeMemory(as: UInt8.self, repeating: 0xA5)
            }
        }
        #expect(length == 114)
        #expect(Array(bytes[12..<14]) == [0x86, 0xdd])
        #expect(Array(bytes[18..<20]) == [0, 60], "payload length: 8 + 52")
        // Pseudo-header (addresses, UDP length, next header) plus the datagram sums to 0xffff.
        let udp = Array(bytes[54..<114])
        let pseudo = Array(bytes[22..<54]) + [0, 0, 0, 60, 0, 0, 0, 17]
        #expect(Wire.internetChecksum(pseudo + udp) == 0)
        #expect(udp[6] != 0 || udp[7] != 0)
    }

    @Test("A transport-shaped message: type 4, receiver and counter little-endian, the rest zero")
    func transportShape() {
        var bytes = [UInt8](repeating: 0xFF, count: 48)
        bytes.withUnsafeMutableBytes { TransportShape.write(into: $0, receiverIndex: 0x0403_0201, counter: 0x0807_0605) }
        #expect(TransportShape.overhead == 32)
        #expect(Array(bytes[0..<16]) == [4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0])
        #expect(bytes[16...].allSatisfy { $0 == 0 })
    }

    @Test("Ceiling figures: rates, inner bits and per-busy-core rates from counts and times")
    func ceilingFigures() {
        let m = CeilingMeasurement(generator: "g", payload: "plain IP", innerSize: 1420, frameLength: 1434,
                                   sent: 2_000_000, received: 1_000_000, dropped: 0, seconds: 2,
                                   cpuSeconds: 1, coreBusySeconds: 0.5)
        #expect(m.sentPerSecond == 1_000_000)
        #expect(m.receivedPerSecond == 500_000)
        #expect(m.innerBitsPerSecond == 500_000 * 1420 * 8)
        #expect(m.receivedPerBusyCoreSecond == 2_000_000)
        #expect(m.description.contains("received 0.5 Mpps"))
        let result = BlastResult(sent: 300, dropped: 1, seconds: 0.5, cpuSeconds: 0.25)
        #expect(result.packetsPerSecond == 600)
    }
}
