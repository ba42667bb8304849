// Netlink message building and parsing, kept apart from the socket so that it can be tested
// on known bytes without privileges. Netlink integers are in host byte order; every object
// (message, attribute) starts on a 4-byte boundary (NLMSG_ALIGN, RTA_ALIGN), and the length
// fields count the unpadded size.

#if canImport(Glibc)
import Glibc
#endif
import WireGuard

/// Constants from <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h> and
/// <linux/neighbour.h>: stable kernel ABI, written out because Swift's Glibc module does not
/// import those headers.
enum NL {
    static let headerSize = 16          // struct nlmsghdr
    static let attributeHeaderSize = 4  // struct rtattr / nlattr

    // Message types.
    static let noop: UInt16 = 1         // NLMSG_NOOP
    static let error: UInt16 = 2        // NLMSG_ERROR (also the acknowledgement)
    static let done: UInt16 = 3         // NLMSG_DONE: end of a multi-part dump
    static let overrun: UInt16 = 4      // NLMSG_OVERRUN
    static let newLink: UInt16 = 16     // RTM_NEWLINK
    static let getLink: UInt16 = 18     // RTM_GETLINK
    static let newRoute: UInt16 = 24    // RTM_NEWROUTE
    static let getRoute: UInt16 = 26    // RTM_GETROUTE
    static let newNeighbour: UInt16 = 28 // RTM_NEWNEIGH
    static let getNeighbour: UInt16 = 30 // RTM_GETNEIGH

    // Header flags.
    static let request: UInt16 = 0x01   // NLM_F_REQUEST
    static let multi: UInt16 = 0x02     // NLM_F_MULTI: part of a dump, ended by NLMSG_DONE
    static let ack: UInt16 = 0x04       // NLM_F_ACK
    static let dumpInterrupted: UInt16 = 0x10 // NLM_F_DUMP_INTR
    static let dump: UInt16 = 0x300     // NLM_F_ROOT | NLM_F_MATCH
    static let capped: UInt16 = 0x100   // NLM_F_CAPPED (in NLMSG_ERROR): request not echoed
    static let ackTLVs: UInt16 = 0x200  // NLM_F_ACK_TLVS (in NLMSG_ERROR): extended ack follows

    // Socket options (level SOL_NETLINK).
    static let solNetlink: Int32 = 270
    static let capAck: Int32 = 10       // NETLINK_CAP_ACK: do not echo requests in errors
    static let extAck: Int32 = 11       // NETLINK_EXT_ACK: errors carry a message
    static let protocolRoute: Int32 = 0 // NETLINK_ROUTE

    // Extended ack attributes.
    static let errorAttributeMessage: UInt16 = 1 // NLMSGERR_ATTR_MSG

    // Attribute type bits that are flags, not part of the type (NLA_F_NESTED, NLA_F_NET_BYTEORDER).
    static let attributeTypeMask: UInt16 = 0x3fff

    // Link attributes (IFLA_*) and link-info nest (IFLA_INFO_*).
    static let iflaAddress: UInt16 = 1
    static let iflaName: UInt16 = 3
    static let iflaAlias: UInt16 = 20
    static let iflaMTU: UInt16 = 4
    static let iflaLinkInfo: UInt16 = 18
    static let iflaExtMask: UInt16 = 29
    static let iflaNumTXQueues: UInt16 = 31
    static let iflaNumRXQueues: UInt16 = 32
    static let iflaInfoKind: UInt16 = 1
    static let extFilterSkipStats: UInt32 = 1 << 3 // RTEXT_FILTER_SKIP_STATS

    // Route attributes (RTA_*).
    static let rtaDestination: UInt16 = 1
    static let rtaOutputInterface: UInt16 = 4
    static let rtaGateway: UInt16 = 5
    static let rtaPreferredSource: UInt16 = 7
    static let rtaTable: UInt16 = 15
    static let rtaVia: UInt16 = 18

    // Neighbour attributes (NDA_*).
    static let ndaDestination: UInt16 = 1
    static let ndaLinkLayerAddress: UInt16 = 2

    // Interface flags (IFF_*).
    static let iffUp: UInt32 = 0x1
    static let iffNoARP: UInt32 = 0x80
    static let iffLowerUp: UInt32 = 0x1_0000

    // Address families as netlink carries them in one byte.
    static let afInet: UInt8 = 2
    static let afInet6: UInt8 = 10
}

/// Aligns a length to netlink's 4-byte boundary (NLMSG_ALIGN and RTA_ALIGN are the same).
@inline(__always)
func netlinkAlign(_ length: Int) -> Int { (length + 3) & ~3 }

/// Builds one netlink request: header, family header, attributes. `bytes` is ready to send
/// after each append: the header's length field always counts everything appended so far.
struct NetlinkMessageBuilder {
    private(set) var bytes: [UInt8] = []

    init(type: UInt16, flags: UInt16, sequence: UInt32, portID: UInt32 = 0) {
        bytes.reserveCapacity(64)
        append(UInt32(0)) // nlmsg_len, kept current by `finishAppend`
        append(type)
        append(flags)
        append(sequence)
        append(portID)
        finishAppend()
    }

    /// The family header (rtmsg, ndmsg, ifinfomsg) as raw bytes.
    mutating func appendFamilyHeader(_ header: [UInt8]) {
        bytes += header
        finishAppend()
    }

    /// One attribute: its length counts header and value but not the padding that follows.
    mutating func appendAttribute(type: UInt16, value: some Collection<UInt8>) {
        append(UInt16(NL.attributeHeaderSize + value.count))
        append(type)
        bytes += value
        finishAppend()
    }

    mutating func appendAttribute(type: UInt16, uint32 value: UInt32) {
        appendAttribute(type: type, value: withUnsafeBytes(of: value) { Array($0) })
    }

    /// A NUL-terminated string attribute (as the kernel expects IFLA_IFNAME).
    mutating func appendAttribute(type: UInt16, string: String) {
        appendAttribute(type: type, value: Array(string.utf8) + [0])
    }

    mutating func appendAttribute(type: UInt16, uint8 value: UInt8) {
        appendAttribute(type: type, value: [value])
    }

    /// A nested attribute: `body` appends its contents (attributes, or a family header and
    /// attributes as in VETH_INFO_PEER); the nest's length then counts all of them.
    mutating func appendNest(type: UInt16, _ body: (inout NetlinkMessageBuilder) -> Void) {
        let start = bytes.count
        append(UInt16(0)) // nla_len, set below
        append(type)
        body(&self)
        let length = UInt16(bytes.count - start)
        withUnsafeBytes(of: length) { bytes.replaceSubrange(start..<(start + 2), with: $0) }
        finishAppend()
    }

    private mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value) { bytes += $0 }
    }

    /// Pads to the next 4-byte boundary (the next object starts there) and updates nlmsg_len.
    private mutating func finishAppend() {
        while bytes.count % 4 != 0 { bytes.append(0) }
        let length = UInt32(bytes.count)
        withUnsafeBytes(of: length) { bytes.replaceSubrange(0..<4, with: $0) }
    }
}

/// Reads host-order integers out of a received buffer, bounds-checked.
extension ArraySlice<UInt8> {
    func integer<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T? {
        let start = startIndex + offset
        guard offset >= 0, start + MemoryLayout<T>.size <= endIndex else { return nil }
        return withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }
}

/// One received netlink message; `payload` is what follows the 16-byte header, up to the
/// header's length (without the alignment padding before the next message).
struct NetlinkMessage: Equatable {
    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    var portID: UInt32
    var payload: ArraySlice<UInt8>

    /// Splits a datagram into its messages. A length that is shorter than a header or runs
    /// past the datagram is malformed (the kernel never sends one).
    static func parse(_ buffer: ArraySlice<UInt8>) throws(SystemError) -> [NetlinkMessage] {
        var messages: [NetlinkMessage] = []
        var offset = 0
        while buffer.count - offset >= NL.headerSize {
            let rest = buffer[(buffer.startIndex + offset)...]
            let length = Int(rest.integer(at: 0, as: UInt32.self)!)
            guard length >= NL.headerSize, length <= rest.count else {
                throw .malformed("message length \(length) at offset \(offset) of a \(buffer.count)-byte datagram")
            }
            messages.append(NetlinkMessage(
                type: rest.integer(at: 4)!, flags: rest.integer(at: 6)!,
                sequence: rest.integer(at: 8)!, portID: rest.integer(at: 12)!,
                payload: rest[(rest.startIndex + NL.headerSize)..<(rest.startIndex + length)]))
            offset += netlinkAlign(length)
        }
        // Trailing bytes shorter than a header can only be padding.
        return messages
    }

    /// The attributes after a fixed family header of `headerSize` bytes.
    func attributes(after headerSize: Int) throws(SystemError) -> NetlinkAttributes {
        guard payload.count >= headerSize else {
            throw .malformed("message type \(type) has \(payload.count) payload bytes, fewer than its \(headerSize)-byte header")
        }
        return try NetlinkAttributes(payload.dropFirst(netlinkAlign(headerSize)))
    }
}

/// The attributes (type-length-value, each 4-byte aligned) of a message or of a nest. Types
/// are reported without the NLA_F_NESTED and NLA_F_NET_BYTEORDER flag bits.
struct NetlinkAttributes {
    private(set) var entries: [(type: UInt16, value: ArraySlice<UInt8>)] = []

    init(_ bytes: ArraySlice<UInt8>) throws(SystemError) {
        var offset = bytes.startIndex
        while bytes.endIndex - offset >= NL.attributeHeaderSize {
            let rest = bytes[offset...]
            let length = Int(rest.integer(at: 0, as: UInt16.self)!)
            let type = rest.integer(at: 2, as: UInt16.self)! & NL.attributeTypeMask
            guard length >= NL.attributeHeaderSize, length <= rest.count else {
                throw .malformed("attribute type \(type) with length \(length) where \(rest.count) bytes remain")
            }
            entries.append((type, bytes[(offset + NL.attributeHeaderSize)..<(offset + length)]))
            offset += netlinkAlign(length)
        }
    }

    /// The first attribute of that type.
    subscript(type: UInt16) -> ArraySlice<UInt8>? {
        entries.first { $0.type == type }?.value
    }

    func uint32(_ type: UInt16) -> UInt32? {
        guard let value = self[type], value.count == 4 else { return nil }
        return value.integer(at: 0)
    }

    /// A string attribute, without its terminating NUL.
    func string(_ type: UInt16) -> String? {
        guard let value = self[type] else { return nil }
        return String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An IPv4 or IPv6 address attribute (4 or 16 bytes, network order).
    func address(_ type: UInt16) -> IPAddress? {
        self[type].flatMap { IPAddress(bytes: $0) }
    }
}

/// The payload of an NLMSG_ERROR message: `code` is 0 for an acknowledgement or a negative
/// errno, `message` the kernel's extended-ack text when it sent one.
struct NetlinkError: Equatable {
    var code: Int32
    var message: String?

    init(code: Int32, message: String?) {
        self.code = code
        self.message = message
    }

    init(_ error: NetlinkMessage) throws(SystemError) {
        let payload = error.payload
        guard let code = payload.integer(at: 0, as: Int32.self),
              let echoedLength = payload.integer(at: 4, as: UInt32.self) else {
            throw .malformed("NLMSG_ERROR with \(payload.count) payload bytes")
        }
        self.code = code
        guard error.flags & NL.ackTLVs != 0 else { return }
        // struct nlmsgerr = error code + the request's header; the request's payload follows
        // unless the kernel capped it (NETLINK_CAP_ACK, or always for acknowledgements).
        var tlvOffset = 4 + NL.headerSize
        if error.flags & NL.capped == 0 { tlvOffset = 4 + netlinkAlign(Int(echoedLength)) }
        guard tlvOffset <= payload.count else {
            throw .malformed("NLMSG_ERROR announces extended ack at offset \(tlvOffset) of \(payload.count) bytes")
        }
        let tlvs = try NetlinkAttributes(payload.dropFirst(tlvOffset))
        message = tlvs.string(NL.errorAttributeMessage)
    }
}

/// Collects the replies to one request. The socket reads datagrams and feeds every message
/// here until `isComplete`; replies to older requests (a sequence number that is not ours,
/// left over after a timeout) are skipped.
struct NetlinkReply {
    let sequence: UInt32
    /// A dump ends with NLMSG_DONE; a plain request with its one reply or its NLMSG_ERROR.
    let isDump: Bool
    /// For error messages: what was asked ("route to 192.0.2.1").
    let request: String
    private(set) var messages: [NetlinkMessage] = []
    private(set) var isComplete = false

    init(sequence: UInt32, isDump: Bool, request: String) {
        self.sequence = sequence
        self.isDump = isDump
        self.request = request
    }

    mutating func consume(_ message: NetlinkMessage) throws(SystemError) {
        guard message.sequence == sequence, !isComplete else { return }
        switch message.type {
        case NL.noop:
            return
        case NL.error:
            let error = try NetlinkError(message)
            if error.code != 0 {
                throw .netlink(request: request, errno: -error.code, message: error.message)
            }
            isComplete = true // an acknowledgement
        case NL.done:
            // A dump that failed part-way ends with NLMSG_DONE carrying a negative errno.
            if let code = message.payload.integer(at: 0, as: Int32.self), code < 0 {
                throw .netlink(request: request, errno: -code, message: nil)
            }
            if message.flags & NL.dumpInterrupted != 0 {
                throw .netlink(request: request + " (dump interrupted by a concurrent change; retry)",
                               errno: EINTR, message: nil)
            }
            isComplete = true
        case NL.overrun:
            throw .malformed("NLMSG_OVERRUN: the kernel dropped part of the reply to \(request)")
        default:
            messages.append(message)
            if !isDump && message.flags & NL.multi == 0 { isComplete = true }
        }
    }
}
