import WireGuard

/// Ethernet, VLAN, IPv4, IPv6 and UDP as the data path reads and writes them: byte offsets
/// into a frame, network byte order, unaligned loads. Nothing here allocates.
public enum Wire {
    public static let ethernetHeaderSize = 14
    public static let vlanTagSize = 4
    public static let ipv4HeaderSize = 20
    public static let ipv6HeaderSize = 40
    public static let udpHeaderSize = 8

    public static let etherTypeIPv4: UInt16 = 0x0800
    public static let etherTypeIPv6: UInt16 = 0x86DD
    public static let etherTypeVLAN: UInt16 = 0x8100
    public static let etherTypeQinQ: UInt16 = 0x88A8
    public static let protocolUDP: UInt8 = 17

    /// The largest outer header we prepend: Ethernet + VLAN + IPv6 + UDP.
    public static let maxOuterHeaderSize = ethernetHeaderSize + vlanTagSize + ipv6HeaderSize + udpHeaderSize

    @inline(__always) static func load16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) static func store16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    // The Internet checksum (RFC 1071), the one implementation: the data path, the perf
    // lab's generators and the tests all compute it here.

    /// The ones'-complement sum of `length` bytes (RFC 1071), not yet folded or inverted.
    /// Eight bytes per step: the UDP checksum of an outer IPv6 datagram covers the whole payload.
    @inlinable @inline(__always)
    public static func onesComplementSum(_ p: UnsafeRawPointer, length: Int, initial: UInt64 = 0) -> UInt64 {
        var sum = initial
        var i = 0
        // Summing native-order 64-bit words and byte-swapping the folded result gives the
        // network-order sum (RFC 1071 §2(B), byte-order independence).
        var wide: UInt64 = 0
        while i + 8 <= length {
            let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let (s, carry) = wide.addingReportingOverflow(w)
            wide = s &+ (carry ? 1 : 0)
            i += 8
        }
        var tail: UInt64 = 0
        withUnsafeMutableBytes(of: &tail) { t in
            t.baseAddress!.copyMemory(from: p + i, byteCount: length - i)
        }
        let (s, carry) = wide.addingReportingOverflow(tail)
        wide = s &+ (carry ? 1 : 0)
        // Fold the native-order 64-bit sum to 16 bits, then swap into network order.
        var folded = (wide & 0xffff_ffff) &+ (wide >> 32)
        folded = (folded & 0xffff) &+ (folded >> 16)
        folded = (folded & 0xffff) &+ (folded >> 16)
        folded = (folded & 0xffff) &+ (folded >> 16)
        sum &+= UInt64(UInt16(truncatingIfNeeded: folded).byteSwapped)
        return sum
    }

    /// Folds a 64-bit ones'-complement accumulator and inverts it: the checksum field value.
    @inlinable @inline(__always)
    public static func finishChecksum(_ sum: UInt64) -> UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xffff) &+ (s >> 16) }
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// The IPv4 header checksum of the 20 bytes at `p` (checksum field included as stored).
    @inline(__always)
    public static func ipv4HeaderChecksum(_ p: UnsafeRawPointer, headerLength: Int = ipv4HeaderSize) -> UInt16 {
        finishChecksum(onesComplementSum(p, length: headerLength))
    }

    /// The Internet checksum of `bytes`: 0 when they include a correct checksum field.
    /// For building and checking packets off the data path (it copies the bytes).
    public static func internetChecksum(_ bytes: some Collection<UInt8>) -> UInt16 {
        Array(bytes).withUnsafeBytes { b in
            guard let base = b.baseAddress else { return finishChecksum(0) }
            return finishChecksum(onesComplementSum(base, length: b.count))
        }
    }
}

/// Where the parts of a received outer frame are: the result of `OuterFrame.parse`.
public struct OuterFrame {
    /// Offset of the IP header (after Ethernet and an optional VLAN tag).
    public var ipOffset: Int
    /// Offset of the UDP payload (the WireGuard message).
    public var payloadOffset: Int
    /// Length of the UDP payload.
    public var payloadLength: Int
    public var isIPv6: Bool
    /// The VLAN tag control information, 0 when untagged.
    public var vlanTCI: UInt16
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    /// Parses Ethernet [+ 802.1Q/802.1ad] + IPv4/IPv6 + UDP. Returns nil for anything else or
    /// anything inconsistent; the XDP program already filtered, so nil means a malformed frame.
    @inline(__always)
    public static func parse(_ frame: UnsafeRawPointer, length: Int) -> OuterFrame? {
        guard length >= Wire.ethernetHeaderSize else { return nil }
        var offset = Wire.ethernetHeaderSize
        var etherType = Wire.load16(frame, 12)
        var tci: UInt16 = 0
        if etherType == Wire.etherTypeVLAN || etherType == Wire.etherTypeQinQ {
            guard length >= offset + Wire.vlanTagSize else { return nil }
            tci = Wire.load16(frame, offset)
            etherType = Wire.load16(frame, offset + 2)
            offset += Wire.vlanTagSize
        }
        let ipOffset = offset
        let isIPv6: Bool
        let ipPayloadEnd: Int
        switch etherType {
        case Wire.etherTypeIPv4:
            guard length >= offset + Wire.ipv4HeaderSize else { return nil }
            let versionIHL = frame.load(fromByteOffset: offset, as: UInt8.self)
            let headerLength = Int(versionIHL & 0x0f) * 4
            guard versionIHL >> 4 == 4, headerLength >= Wire.ipv4HeaderSize,
                  frame.load(fromByteOffset: offset + 9, as: UInt8.self) == Wire.protocolUDP
            else { return nil }
            // Fragments never reach us (the XDP program drops them), but check anyway.
            guard Wire.load16(frame, offset + 6) & 0x3fff == 0 else { return nil }
            let total = Int(Wire.load16(frame, offset + 2))
            guard total >= headerLength + Wire.udpHeaderSize, offset + total <= length else { return nil }
            ipPayloadEnd = offset + total
            offset += headerLength
            isIPv6 = false
        case Wire.etherTypeIPv6:
            guard length >= offset + Wire.ipv6HeaderSize,
                  frame.load(fromByteOffset: offset, as: UInt8.self) >> 4 == 6,
                  frame.load(fromByteOffset: offset + 6, as: UInt8.self) == Wire.protocolUDP
            else { return nil }
            let payload = Int(Wire.load16(frame, offset + 4))
            guard payload >= Wire.udpHeaderSize, offset + Wire.ipv6HeaderSize + payload <= length else { return nil }
            ipPayloadEnd = offset + Wire.ipv6HeaderSize + payload
            offset += Wire.ipv6HeaderSize
            isIPv6 = true
        default:
            return nil
        }
        let udpLength = Int(Wire.load16(frame, offset + 4))
        guard udpLength >= Wire.udpHeaderSize, offset + udpLength <= ipPayloadEnd else { return nil }
        return OuterFrame(ipOffset: ipOffset, payloadOffset: offset + Wire.udpHeaderSize,
                          payloadLength: udpLength - Wire.udpHeaderSize, isIPv6: isIPv6, vlanTCI: tci,
                          sourcePort: Wire.load16(frame, offset), destinationPort: Wire.load16(frame, offset + 2))
    }

    /// The source address bytes (4 or 16) of the parsed frame.
    @inline(__always)
    public func sourceAddress(in frame: UnsafeRawPointer) -> UnsafeRawPointer {
        frame + ipOffset + (isIPv6 ? 8 : 12)
    }

    /// The destination address bytes (4 or 16).
    @inline(__always)
    public func destinationAddress(in frame: UnsafeRawPointer) -> UnsafeRawPointer {
        frame + ipOffset + (isIPv6 ? 24 : 16)
    }

    /// A compact identity of where the frame came from: source address, source port and the
    /// previous hop's MAC. A peer's endpoint "changed" when this differs from the one its
    /// outer header template was built for (a hash: a collision only delays roaming detection
    /// until the next packet from a different flow, it never misdirects — the template itself
    /// is rebuilt from the full addresses).
    @inline(__always)
    public func endpointKey(in frame: UnsafeRawPointer) -> UInt64 {
        let src = sourceAddress(in: frame)
        var key: UInt64 = 0xcbf2_9ce4_8422_2325
        @inline(__always) func mix(_ v: UInt64) { key = (key ^ v) &* 0x0000_0100_0000_01b3; key ^= key >> 29 }
        if isIPv6 {
            mix(src.loadUnaligned(as: UInt64.self))
            mix(src.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        } else {
            mix(UInt64(src.loadUnaligned(as: UInt32.self)))
        }
        mix(UInt64(sourcePort) | UInt64(vlanTCI) << 16)
        // Source MAC: bytes 6..<12.
        mix(UInt64(frame.loadUnaligned(fromByteOffset: 6, as: UInt32.self))
            | UInt64(frame.loadUnaligned(fromByteOffset: 10, as: UInt16.self)) << 32)
        return key | 1   // never 0: 0 means "no endpoint"
    }
}

/// The outer Ethernet [+ VLAN] + IPv4/IPv6 + UDP header the gateway prepends to every
/// transport message for one peer: built once by the control plane when the endpoint is
/// learned, copied and patched (lengths, checksums) per packet.
public struct OuterHeaderTemplate: Sendable, Equatable {
    public static let capacity = 72
    /// The header bytes; only the first `length` are used.
    public var bytes: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0)
    public var length: Int = 0
    public var ipOffset: Int = 0
    public var isIPv6 = false
    /// The IPv4 header checksum's ones'-complement sum with the total length field zero, or
    /// for IPv6 the UDP pseudo-header sum of the two addresses and the next-header value.
    public var partialSum: UInt64 = 0
    /// The `OuterFrame.endpointKey` of the peer this was built for, or 0 if built from
    /// configuration (then any received frame updates it).
    public var endpointKey: UInt64 = 0

    public static func == (a: OuterHeaderTemplate, b: OuterHeaderTemplate) -> Bool {
        a.length == b.length && a.isIPv6 == b.isIPv6 && a.endpointKey == b.endpointKey
            && withUnsafeBytes(of: a.bytes) { x in withUnsafeBytes(of: b.bytes) { y in
                x.prefix(a.length).elementsEqual(y.prefix(a.length)) } }
    }

    public init() {}

    /// Builds the header for datagrams from `source`:`sourcePort` (ours) to
    /// `destination`:`destinationPort` (the peer's), over Ethernet from `sourceMAC` to
    /// `destinationMAC` (the next hop), tagged with `vlanTCI` when non-zero.
    public init(sourceMAC: EthernetAddress, destinationMAC: EthernetAddress, vlanTCI: UInt16,
                source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16,
                endpointKey: UInt64 = 0) {
        precondition(source.isV4 == destination.isV4, "outer source and destination must be the same family")
        self.endpointKey = endpointKey
        isIPv6 = !source.isV4
        withUnsafeMutableBytes(of: &bytes) { raw in
            let p = raw.baseAddress!
            destinationMAC.store(to: p)
            sourceMAC.store(to: p + 6)
            var offset = 12
            if vlanTCI != 0 {
                Wire.store16(p, offset, Wire.etherTypeVLAN)
                Wire.store16(p, offset + 2, vlanTCI)
                offset += 4
            }
            Wire.store16(p, offset, isIPv6 ? Wire.etherTypeIPv6 : Wire.etherTypeIPv4)
            offset += 2
            ipOffset = offset
            if isIPv6 {
                p.storeBytes(of: UInt32(0x6000_0000).bigEndian, toByteOffset: offset, as: UInt32.self)
                Wire.store16(p, offset + 4, 0)                  // payload length: per packet
                p.storeBytes(of: Wire.protocolUDP, toByteOffset: offset + 6, as: UInt8.self)
                p.storeBytes(of: UInt8(64), toByteOffset: offset + 7, as: UInt8.self)   // hop limit
                let s = source.bytes, d = destination.bytes
                for i in 0..<16 { p.storeBytes(of: s[i], toByteOffset: offset + 8 + i, as: UInt8.self) }
                for i in 0..<16 { p.storeBytes(of: d[i], toByteOffset: offset + 24 + i, as: UInt8.self) }
                // Pseudo-header: both addresses and the next header; the UDP length is added per packet.
                partialSum = Wire.onesComplementSum(UnsafeRawPointer(p + offset + 8), length: 32)
                    &+ UInt64(Wire.protocolUDP)
                offset += Wire.ipv6HeaderSize
            } else {
                p.storeBytes(of: UInt8(0x45), toByteOffset: offset, as: UInt8.self)
                p.storeBytes(of: UInt8(0), toByteOffset: offset + 1, as: UInt8.self)
                Wire.store16(p, offset + 2, 0)                  // total length: per packet
                Wire.store16(p, offset + 4, 0)                  // identification
                Wire.store16(p, offset + 6, 0x4000)             // don't fragment, as the kernel sends
                p.storeBytes(of: UInt8(64), toByteOffset: offset + 8, as: UInt8.self)
                p.storeBytes(of: Wire.protocolUDP, toByteOffset: offset + 9, as: UInt8.self)
                Wire.store16(p, offset + 10, 0)                 // checksum: per packet
                let s = source.bytes, d = destination.bytes
                for i in 0..<4 { p.storeBytes(of: s[i], toByteOffset: offset + 12 + i, as: UInt8.self) }
                for i in 0..<4 { p.storeBytes(of: d[i], toByteOffset: offset + 16 + i, as: UInt8.self) }
                partialSum = Wire.onesComplementSum(UnsafeRawPointer(p + offset), length: Wire.ipv4HeaderSize)
                offset += Wire.ipv4HeaderSize
            }
            Wire.store16(p, offset, sourcePort)
            Wire.store16(p, offset + 2, destinationPort)
            Wire.store16(p, offset + 4, 0)                      // length: per packet
            Wire.store16(p, offset + 6, 0)                      // checksum: per packet (0 = none, IPv4)
            length = offset + Wire.udpHeaderSize
        }
    }

    /// Writes the header in front of a `payloadLength`-byte WireGuard message at
    /// `frame + length`, with lengths and checksums filled in. IPv4 carries UDP checksum 0
    /// (RFC 768 allows it; the kernel accepts it); IPv6 requires a full UDP checksum.
    @inline(__always)
    public func write(to frame: UnsafeMutableRawPointer, payloadLength: Int) {
        withUnsafeBytes(of: bytes) { frame.copyMemory(from: $0.baseAddress!, byteCount: length) }
        let udpLength = Wire.udpHeaderSize + payloadLength
        let udp = length - Wire.udpHeaderSize
        Wire.store16(frame, udp + 4, UInt16(truncatingIfNeeded: udpLength))
        if isIPv6 {
            Wire.store16(frame, ipOffset + 4, UInt16(truncatingIfNeeded: udpLength))
            // Pseudo-header (addresses + next header precomputed, plus the UDP length), then
            // the UDP header and payload, checksum field still zero.
            let sum = Wire.onesComplementSum(UnsafeRawPointer(frame + udp), length: udpLength,
                                             initial: partialSum &+ UInt64(udpLength))
            var checksum = Wire.finishChecksum(sum)
            if checksum == 0 { checksum = 0xffff }   // 0 means "no checksum", forbidden over IPv6
            Wire.store16(frame, udp + 6, checksum)
        } else {
            let total = Wire.ipv4HeaderSize + udpLength
            Wire.store16(frame, ipOffset + 2, UInt16(truncatingIfNeeded: total))
            Wire.store16(frame, ipOffset + 10, Wire.finishChecksum(partialSum &+ UInt64(total)))
        }
    }
}
