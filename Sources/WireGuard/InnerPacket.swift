/// A view of an inner IP packet (a transport message's plaintext, or what a tenant sends): its
/// version, the total length its header declares, and where its addresses are. It reads the
/// header in place: nothing is copied or allocated, so the data path uses it per packet. Valid
/// only while the memory it was made from is.
@frozen
public struct InnerPacket {
    /// The packet's first byte.
    public let start: UnsafeRawPointer
    /// The total length the header declares (IPv4's total length, or IPv6's 40 + payload
    /// length): never more than the bytes given (what follows is padding).
    public let length: Int
    public let isIPv6: Bool

    /// nil unless the `count` bytes at `start` begin with an IPv4 or IPv6 header whose declared
    /// total length fits in them (an IPv4 length shorter than its header does not).
    @inlinable @inline(__always)
    public init?(_ start: UnsafeRawPointer, count: Int) {
        guard count >= 1 else { return nil }
        switch start.load(as: UInt8.self) >> 4 {
        case 4:
            guard count >= InnerPacket.ipv4HeaderSize else { return nil }
            let total = Int(UInt16(bigEndian: start.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            guard total >= InnerPacket.ipv4HeaderSize && total <= count else { return nil }
            self.init(start: start, length: total, isIPv6: false)
        case 6:
            guard count >= InnerPacket.ipv6HeaderSize else { return nil }
            let payload = Int(UInt16(bigEndian: start.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
            let total = InnerPacket.ipv6HeaderSize + payload
            guard total <= count else { return nil }
            self.init(start: start, length: total, isIPv6: true)
        default:
            return nil
        }
    }

    @inlinable @inline(__always)
    public init?(_ bytes: UnsafeRawBufferPointer) {
        guard let start = bytes.baseAddress else { return nil }
        self.init(start, count: bytes.count)
    }

    @inlinable @inline(__always)
    init(start: UnsafeRawPointer, length: Int, isIPv6: Bool) {
        self.start = start
        self.length = length
        self.isIPv6 = isIPv6
    }

    /// 4 or 6.
    @inlinable
    public var version: Int { isIPv6 ? 6 : 4 }

    /// The source address: 4 (IPv4) or 16 (IPv6) network-order bytes at this pointer.
    @inlinable
    public var source: UnsafeRawPointer { start + (isIPv6 ? 8 : 12) }

    /// The destination address: 4 or 16 network-order bytes at this pointer.
    @inlinable
    public var destination: UnsafeRawPointer { start + (isIPv6 ? 24 : 16) }

    /// The fixed header sizes (IPv4 without options). Computed, so the per-packet code
    /// inlined into other modules reads constants rather than globals.
    @inlinable public static var ipv4HeaderSize: Int { 20 }
    @inlinable public static var ipv6HeaderSize: Int { 40 }
}

extension AllowedIPs {
    /// The peer owning `packet`'s source address (cryptokey routing of what a peer sent).
    @inlinable @inline(__always)
    public func lookup(sourceOf packet: InnerPacket) -> UInt32? {
        packet.isIPv6 ? lookup(ipv6: packet.source) : lookup(ipv4: packet.source)
    }

    /// The peer owning `packet`'s destination address (where a tenant's packet goes).
    @inlinable @inline(__always)
    public func lookup(destinationOf packet: InnerPacket) -> UInt32? {
        packet.isIPv6 ? lookup(ipv6: packet.destination) : lookup(ipv4: packet.destination)
    }
}
