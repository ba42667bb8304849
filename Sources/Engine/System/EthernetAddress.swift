/// A 48-bit Ethernet (MAC) address, stored inline in one integer so that it is trivially
/// copyable and can sit in per-peer tables the data path reads without reference counting.
public struct EthernetAddress: Hashable, Sendable, BitwiseCopyable {
    /// The six bytes in transmission order, the first in bits 47...40.
    public let rawValue: UInt64

    public static let zero = EthernetAddress(rawValue: 0)
    public static let broadcast = EthernetAddress(rawValue: 0xffff_ffff_ffff)

    /// Keeps the low 48 bits of `rawValue`.
    public init(rawValue: UInt64) {
        self.rawValue = rawValue & 0xffff_ffff_ffff
    }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        rawValue = UInt64(b0) << 40 | UInt64(b1) << 32 | UInt64(b2) << 24
            | UInt64(b3) << 16 | UInt64(b4) << 8 | UInt64(b5)
    }

    /// From exactly six bytes (as netlink's IFLA_ADDRESS and NDA_LLADDR carry it).
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 6 else { return nil }
        var v: UInt64 = 0
        for b in bytes { v = v << 8 | UInt64(b) }
        rawValue = v
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (or with '-' throughout; one or two hex digits a part).
    public init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        let separator: UInt8 = utf8.contains(UInt8(ascii: ":")) ? UInt8(ascii: ":") : UInt8(ascii: "-")
        var value: UInt64 = 0
        var parts = 0
        for part in utf8.split(separator: separator, omittingEmptySubsequences: false) {
            guard (1...2).contains(part.count) else { return nil }
            var byte: UInt64 = 0
            for c in part {
                guard let digit = EthernetAddress.hexDigit(c) else { return nil }
                byte = byte << 4 | UInt64(digit)
            }
            value = value << 8 | byte
            parts += 1
        }
        guard parts == 6 else { return nil }
        rawValue = value
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The six bytes in transmission order.
    public var bytes: [UInt8] {
        (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64($0))) }
    }

    /// Writes the six bytes at `destination` (an Ethernet header field); no allocation.
    @inlinable
    public func store(to destination: UnsafeMutableRawPointer) {
        for i in 0..<6 {
            destination.storeBytes(of: UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64(i))),
                                   toByteOffset: i, as: UInt8.self)
        }
    }

    /// Reads six bytes at `source`.
    @inlinable
    public init(loadingFrom source: UnsafeRawPointer) {
        var v: UInt64 = 0
        for i in 0..<6 { v = v << 8 | UInt64(source.load(fromByteOffset: i, as: UInt8.self)) }
        rawValue = v
    }

    /// The I/G bit: group (multicast or broadcast) addresses cannot be a unicast next hop.
    public var isMulticast: Bool { rawValue >> 40 & 1 == 1 }
}

extension EthernetAddress: CustomStringConvertible, LosslessStringConvertible {
    public init?(_ description: String) {
        self.init(description[...])
    }

    /// Lowercase "aa:bb:cc:dd:ee:ff", as `ip link` prints it.
    public var description: String {
        bytes.map { b in
            let hex = String(b, radix: 16)
            return b < 16 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
