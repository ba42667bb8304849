import Engine

/// Inner IPv4 packets the test harness writes and reads itself (it has no TUN device):
/// ICMP echo and UDP, with real checksums, so the peer's kernel accepts and answers them.
public enum Packets {
    static func ipv4(_ text: String) -> [UInt8] {
        text.split(separator: ".").map { UInt8($0)! }
    }

    static func ipv4Header(source: [UInt8], destination: [UInt8], protocol proto: UInt8, payloadLength: Int) -> [UInt8] {
        let total = 20 + payloadLength
        var h: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34, 0x40, 0, 64, proto, 0, 0]
        h += source + destination
        let c = Wire.internetChecksum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xff)
        return h
    }

    public static func icmpEcho(source: String, destination: String, identifier: UInt16, sequence: UInt16,
                         payload: [UInt8], reply: Bool = false) -> [UInt8] {
        var icmp: [UInt8] = [reply ? 0 : 8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xff),
                             UInt8(sequence >> 8), UInt8(sequence & 0xff)] + payload
        let c = Wire.internetChecksum(icmp)
        icmp[2] = UInt8(c >> 8); icmp[3] = UInt8(c & 0xff)
        return ipv4Header(source: ipv4(source), destination: ipv4(destination), protocol: 1, payloadLength: icmp.count) + icmp
    }

    public static func udp(source: String, sourcePort: UInt16, destination: String, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        var u: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff), UInt8(destinationPort >> 8),
                          UInt8(destinationPort & 0xff), UInt8(length >> 8), UInt8(length & 0xff), 0, 0] + payload
        let pseudo = ipv4(source) + ipv4(destination) + [0, 17, UInt8(length >> 8), UInt8(length & 0xff)]
        var c = Wire.internetChecksum(pseudo + u)
        if c == 0 { c = 0xffff }
        u[6] = UInt8(c >> 8); u[7] = UInt8(c & 0xff)
        return ipv4Header(source: ipv4(source), destination: ipv4(destination), protocol: 17, payloadLength: u.count) + u
    }

    /// A parsed inner IPv4 packet, trimmed to its total length (transport padding removed).
    public struct IPv4 {
        public var source: String
        public var destination: String
        public var proto: UInt8
        public var payload: [UInt8]
        public var headerChecksumValid: Bool
    }

    public static func parseIPv4(_ bytes: [UInt8]) -> IPv4? {
        guard bytes.count >= 20, bytes[0] >> 4 == 4 else { return nil }
        let ihl = Int(bytes[0] & 0x0f) * 4
        let total = Int(bytes[2]) << 8 | Int(bytes[3])
        guard ihl >= 20, total >= ihl, total <= bytes.count else { return nil }
        let addr = { (o: Int) in bytes[o..<(o + 4)].map(String.init).joined(separator: ".") }
        return IPv4(source: addr(12), destination: addr(16), proto: bytes[9],
                    payload: Array(bytes[ihl..<total]), headerChecksumValid: Wire.internetChecksum(bytes[0..<ihl]) == 0)
    }
}
