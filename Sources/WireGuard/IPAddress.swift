/// Why a text form of an address or prefix was rejected.
public enum IPParseError: Error, Equatable, Sendable {
    case empty
    /// Not a dotted-quad IPv4 or an RFC 4291 IPv6 address (zones and spaces are not accepted).
    case invalidAddress
    /// Missing, not decimal, or longer than the address family allows.
    case invalidPrefixLength
}

/// An IPv4 or IPv6 address as numbers in host byte order, so that comparisons and masks are
/// plain integer operations.
public enum IPAddress: Hashable, Sendable {
    case v4(UInt32)
    /// The first eight bytes of the address in `high`, the last eight in `low`.
    case v6(high: UInt64, low: UInt64)

    public var isV4: Bool { if case .v4 = self { true } else { false } }

    /// 32 or 128.
    public var bitCount: Int { isV4 ? 32 : 128 }

    /// From 4 or 16 network-order bytes.
    public init?(bytes: some Collection<UInt8>) {
        var value: (UInt64, UInt64) = (0, 0)
        switch bytes.count {
        case 4:
            var v: UInt32 = 0
            for b in bytes { v = v << 8 | UInt32(b) }
            self = .v4(v)
        case 16:
            for (i, b) in bytes.enumerated() {
                if i < 8 { value.0 = value.0 << 8 | UInt64(b) } else { value.1 = value.1 << 8 | UInt64(b) }
            }
            self = .v6(high: value.0, low: value.1)
        default:
            return nil
        }
    }

    /// The address in network byte order (4 or 16 bytes).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a):
            return (0..<4).map { UInt8(truncatingIfNeeded: a >> (24 - 8 * UInt32($0))) }
        case .v6(let high, let low):
            return (0..<16).map { i in
                UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> (56 - 8 * UInt64(i % 8)))
            }
        }
    }

    /// The key the routing trie stores: IPv4 in the top 32 bits of `high`.
    var trieKey: (UInt64, UInt64) {
        switch self {
        case .v4(let a): return (UInt64(a) << 32, 0)
        case .v6(let high, let low): return (high, low)
        }
    }

    /// Parses "192.0.2.1" (four decimal parts, no leading zeros, as inet_pton) or an IPv6
    /// address in any RFC 4291 text form, including "::", "fd00::1" and "::ffff:192.0.2.1".
    public init(parsing text: some StringProtocol) throws(IPParseError) {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { throw .empty }
        guard let address = IPAddress.parse(bytes[...]) else { throw .invalidAddress }
        self = address
    }

    static func parse(_ s: ArraySlice<UInt8>) -> IPAddress? {
        if s.contains(UInt8(ascii: ":")) {
            guard let (high, low) = parseV6(s) else { return nil }
            return .v6(high: high, low: low)
        }
        return parseV4(s).map { .v4($0) }
    }

    static func parseV4(_ s: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var i = s.startIndex
        while true {
            var part: UInt32 = 0
            var digits = 0
            while i < s.endIndex, let d = decimalDigit(s[i]) {
                // A leading zero would be read as octal by some parsers: refuse the ambiguity.
                if digits == 1 && part == 0 { return nil }
                part = part * 10 + d
                digits += 1
                if digits > 3 { return nil }
                i += 1
            }
            if digits == 0 || part > 255 { return nil }
            value = value << 8 | part
            parts += 1
            if i == s.endIndex { break }
            if s[i] != UInt8(ascii: ".") || parts == 4 { return nil }
            i += 1
        }
        return parts == 4 ? value : nil
    }

    static func parseV6(_ s: ArraySlice<UInt8>) -> (UInt64, UInt64)? {
        var groups: [UInt16] = []              // as written; "::" is expanded at the end
        groups.reserveCapacity(8)
        var gapAt = -1                         // where "::" stood, in groups
        var i = s.startIndex
        if s.first == UInt8(ascii: ":") {
            guard s.count >= 2, s[i + 1] == UInt8(ascii: ":") else { return nil }
            gapAt = 0
            i += 2
        }
        while i < s.endIndex {
            var j = i
            var group: UInt16 = 0
            while j < s.endIndex, let h = hexDigit(s[j]) {
                if j - i == 4 { return nil }
                group = group << 4 | UInt16(h)
                j += 1
            }
            if j < s.endIndex && s[j] == UInt8(ascii: ".") {
                // An IPv4 tail fills the last two groups.
                guard groups.count <= 6, let v4 = parseV4(s[i...]) else { return nil }
                groups.append(UInt16(truncatingIfNeeded: v4 >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4))
                break
            }
            if j == i || groups.count == 8 { return nil }
            groups.append(group)
            i = j
            if i == s.endIndex { break }
            if s[i] != UInt8(ascii: ":") { return nil }
            i += 1
            if i == s.endIndex { return nil }   // a single trailing colon
            if s[i] == UInt8(ascii: ":") {
                if gapAt >= 0 { return nil }
                gapAt = groups.count
                i += 1
            }
        }
        if gapAt < 0 {
            guard groups.count == 8 else { return nil }
        } else {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gapAt)
        }
        var high: UInt64 = 0, low: UInt64 = 0
        for k in 0..<4 { high = high << 16 | UInt64(groups[k]) }
        for k in 4..<8 { low = low << 16 | UInt64(groups[k]) }
        return (high, low)
    }

    static func decimalDigit(_ c: UInt8) -> UInt32? {
        c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") ? UInt32(c - UInt8(ascii: "0")) : nil
    }

    static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension IPAddress: CustomStringConvertible, LosslessStringConvertible {
    public init?(_ description: String) {
        guard let a = try? IPAddress(parsing: description) else { return nil }
        self = a
    }

    /// Dotted quad, or RFC 5952 for IPv6: lowercase, no leading zeros, the longest run of two
    /// or more zero groups (the first of equals) as "::", IPv4-mapped addresses as ::ffff:a.b.c.d.
    public var description: String {
        switch self {
        case .v4(let a):
            return IPAddress.dottedQuad(a)
        case .v6(let high, let low):
            if high == 0 && low >> 32 == 0xffff {
                return "::ffff:" + IPAddress.dottedQuad(UInt32(truncatingIfNeeded: low))
            }
            let groups = (0..<8).map { i in
                UInt16(truncatingIfNeeded: (i < 4 ? high : low) >> (48 - 16 * UInt64(i % 4)))
            }
            var bestStart = -1, bestLength = 1, runStart = -1
            for i in 0...8 {
                if i < 8 && groups[i] == 0 {
                    if runStart < 0 { runStart = i }
                } else if runStart >= 0 {
                    if i - runStart > bestLength { bestStart = runStart; bestLength = i - runStart }
                    runStart = -1
                }
            }
            var out = ""
            var i = 0
            while i < 8 {
                if i == bestStart {
                    out += "::"
                    i += bestLength
                    continue
                }
                if !out.isEmpty && !out.hasSuffix(":") { out += ":" }
                out += String(groups[i], radix: 16)
                i += 1
            }
            return out
        }
    }

    static func dottedQuad(_ a: UInt32) -> String {
        "\(a >> 24).\(a >> 16 & 0xff).\(a >> 8 & 0xff).\(a & 0xff)"
    }
}

/// An address and a prefix length, as written: "10.0.0.5/24" keeps its host bits (an
/// interface address needs them); `masked` is the network the routing table stores.
public struct IPPrefix: Hashable, Sendable {
    public let address: IPAddress
    /// 0...32 for IPv4, 0...128 for IPv6.
    public let length: Int

    public init?(address: IPAddress, length: Int) {
        guard length >= 0 && length <= address.bitCount else { return nil }
        self.address = address
        self.length = length
    }

    /// The single-address prefix (/32 or /128).
    public init(host address: IPAddress) {
        self.address = address
        self.length = address.bitCount
    }

    init(uncheckedAddress address: IPAddress, length: Int) {
        self.address = address
        self.length = length
    }

    /// Parses "ADDRESS/LENGTH" or a bare address, which means a host prefix.
    public init(parsing text: some StringProtocol) throws(IPParseError) {
        let bytes = Array(text.utf8)
        if bytes.isEmpty { throw .empty }
        guard let slash = bytes.firstIndex(of: UInt8(ascii: "/")) else {
            self.init(host: try IPAddress(parsing: text))
            return
        }
        guard let address = IPAddress.parse(bytes[..<slash]) else { throw .invalidAddress }
        let digits = bytes[(slash + 1)...]
        var length = 0
        // At most three digits: enough for 128, and no overflow on hostile input.
        guard (1...3).contains(digits.count) else { throw .invalidPrefixLength }
        for c in digits {
            guard let d = IPAddress.decimalDigit(c) else { throw .invalidPrefixLength }
            length = length * 10 + Int(d)
        }
        guard length <= address.bitCount else { throw .invalidPrefixLength }
        self.init(uncheckedAddress: address, length: length)
    }

    /// The prefix with the host bits cleared.
    public var masked: IPPrefix {
        switch address {
        case .v4(let a):
            let mask: UInt32 = length == 0 ? 0 : ~0 << UInt32(32 - length)
            return IPPrefix(uncheckedAddress: .v4(a & mask), length: length)
        case .v6(let high, let low):
            let (h, l) = PrefixTrie.mask(high, low, length)
            return IPPrefix(uncheckedAddress: .v6(high: h, low: l), length: length)
        }
    }

    public var isMasked: Bool { masked == self }

    /// Whether `other` lies inside this prefix (always false across families).
    public func contains(_ other: IPAddress) -> Bool {
        guard other.isV4 == address.isV4 else { return false }
        return IPPrefix(uncheckedAddress: other, length: length).masked.address == masked.address
    }
}

extension IPPrefix: CustomStringConvertible, LosslessStringConvertible {
    public init?(_ description: String) {
        guard let p = try? IPPrefix(parsing: description) else { return nil }
        self = p
    }

    /// Always "ADDRESS/LENGTH", host prefixes included, as `wg` prints allowed IPs.
    public var description: String { "\(address)/\(length)" }
}
