import Engine
import WireGuard

/// Writes Ethernet + IPv4 (or IPv6) + UDP frames for the blasters: fixed MACs, addresses and
/// ports, with the IP packet's size given per frame. The headers are the Engine's own
/// `OuterHeaderTemplate` (the one the gateway prepends to every packet it sends), so there is
/// one way to build them: IPv4 header checksum complete, UDP checksum 0 over IPv4 (RFC 768
/// allows it; AF_XDP sends frames as they are, so nothing would fill in a partial one), a
/// full UDP checksum over IPv6 (where 0 is forbidden).
public struct UDPFrameBuilder: Sendable {
    public let header: OuterHeaderTemplate

    public init(sourceMAC: EthernetAddress, destinationMAC: EthernetAddress,
                source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16) throws(LoadError) {
        guard source.isV4 == destination.isV4 else {
            throw LoadError("build UDP frames", reason: "source \(source) and destination \(destination) are not the same IP version")
        }
        header = OuterHeaderTemplate(sourceMAC: sourceMAC, destinationMAC: destinationMAC, vlanTCI: 0,
                                     source: source, sourcePort: sourcePort,
                                     destination: destination, destinationPort: destinationPort)
    }

    /// Bytes in front of the UDP payload: 42 (IPv4) or 62 (IPv6).
    public var headerLength: Int { header.length }

    /// IP and UDP header bytes: 28 (IPv4) or 48 (IPv6). An IP packet of size S carries
    /// S - ipOverhead bytes of UDP payload.
    public var ipOverhead: Int { header.length - Wire.ethernetHeaderSize }

    /// The IP packet sizes a 2048-byte frame can carry: from the bare headers up.
    public var ipPacketSizes: ClosedRange<Int> { ipOverhead...(BlastPool.frameSize - Wire.ethernetHeaderSize) }

    /// Writes one frame at the start of `buffer` whose IP packet is `ipPacketSize` bytes
    /// (headers included) and returns the frame's length (14 + ipPacketSize). `payload` first
    /// writes the UDP payload (ipPacketSize - ipOverhead bytes, given zeroed or holding
    /// whatever the buffer held); then the headers go in front, lengths and checksums last.
    public func write(into buffer: UnsafeMutableRawBufferPointer, ipPacketSize: Int,
                      payload: (UnsafeMutableRawBufferPointer) throws -> Void = { _ in }) throws -> Int {
        guard ipPacketSizes.contains(ipPacketSize) else {
            throw LoadError("build a UDP frame", reason: "an IP packet of \(ipPacketSize) bytes: the sizes possible are "
                                + "\(ipPacketSizes.lowerBound) to \(ipPacketSizes.upperBound) (a frame is at most \(BlastPool.frameSize) bytes)")
        }
        let frameLength = Wire.ethernetHeaderSize + ipPacketSize
        guard buffer.count >= frameLength, let base = buffer.baseAddress else {
            throw LoadError("build a UDP frame", reason: "a \(frameLength)-byte frame does not fit a \(buffer.count)-byte buffer")
        }
        let payloadLength = ipPacketSize - ipOverhead
        try payload(UnsafeMutableRawBufferPointer(start: base + header.length, count: payloadLength))
        header.write(to: base, payloadLength: payloadLength)
        return frameLength
    }

    /// Appends one frame to `pool` (see `write`); returns its index.
    @discardableResult
    public func append(to pool: BlastPool, ipPacketSize: Int,
                       payload: (UnsafeMutableRawBufferPointer) throws -> Void = { _ in }) throws -> Int {
        try pool.append { buffer in try write(into: buffer, ipPacketSize: ipPacketSize, payload: payload) }
    }
}

/// Payloads for frames that must look like WireGuard to whoever receives them.
public enum TransportShape {
    /// The bytes a transport message adds to its inner packet: a 16-byte header (type 4, three
    /// zero bytes, receiver index, counter) and the 16-byte tag.
    public static let overhead = WireGuardProtocol.keepaliveSize

    /// Writes a message shaped like a WireGuard transport message at the start of `buffer`:
    /// type 4, receiver index and counter little-endian as the protocol has them, the rest
    /// zero. It is not encrypted: it satisfies the XDP programs' shape checks (the uplink's,
    /// the sink's), not a receiver's authentication. `buffer.count` is the message's length
    /// (at least 32 bytes: `overhead` plus the inner size).
    public static func write(into buffer: UnsafeMutableRawBufferPointer, receiverIndex: UInt32, counter: UInt64) {
        precondition(buffer.count >= overhead, "a transport message is at least \(overhead) bytes")
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.storeBytes(of: UInt32(4).littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: receiverIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
    }
}

/// The MAC address of `interface` in network namespace `namespace` (nil: the caller's).
/// Throws `LoadError` naming both when there is no such namespace or interface, or the
/// interface has no Ethernet address (a TUN device).
public func interfaceMAC(namespace: String?, interface: String) throws(LoadError) -> EthernetAddress {
    do {
        return try runInNamespace(namespace) { try NetworkInterface.named(interface).macAddress }
    } catch {
        throw LoadError.wrap(error, "read the MAC address", namespace: namespace, interface: interface)
    }
}
