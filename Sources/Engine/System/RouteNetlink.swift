#if canImport(Glibc)
import Glibc
#endif
import CXDPWG
import Synchronization
import WireGuard

/// The kernel's answer to "how do I reach this address?" (as `ip route get ADDRESS`).
public struct Route: Equatable, Sendable {
    /// RTN_* route types; a gateway forwards only `.unicast` destinations off-box.
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let unicast = Kind(rawValue: 1)
        public static let local = Kind(rawValue: 2)
        public static let broadcast = Kind(rawValue: 3)
        public static let multicast = Kind(rawValue: 5)
        public static let blackhole = Kind(rawValue: 6)
        public static let unreachable = Kind(rawValue: 7)
        public static let prohibit = Kind(rawValue: 8)
        public var description: String {
            switch self {
            case .unicast: "unicast"
            case .local: "local"
            case .broadcast: "broadcast"
            case .multicast: "multicast"
            case .blackhole: "blackhole"
            case .unreachable: "unreachable"
            case .prohibit: "prohibit"
            default: "type \(rawValue)"
            }
        }
    }

    public var destination: IPAddress
    public var kind: Kind
    /// The output interface (RTA_OIF).
    public var interfaceIndex: Int32
    /// RTA_GATEWAY, or RTA_VIA (an IPv6 next hop for an IPv4 route); nil when the destination
    /// is on the link.
    public var gateway: IPAddress?
    /// RTA_PREFSRC: the source address the kernel would use.
    public var preferredSource: IPAddress?
    /// The routing table the answer came from (RTA_TABLE, else rtm_table).
    public var table: UInt32

    public init(destination: IPAddress, kind: Kind, interfaceIndex: Int32, gateway: IPAddress?,
                preferredSource: IPAddress?, table: UInt32) {
        self.destination = destination
        self.kind = kind
        self.interfaceIndex = interfaceIndex
        self.gateway = gateway
        self.preferredSource = preferredSource
        self.table = table
    }

    /// The address whose link-layer address goes into the Ethernet header: the gateway, or
    /// the destination itself when it is on the link.
    public var nextHop: IPAddress { gateway ?? destination }
}

/// What RTM_GETLINK tells about one interface.
struct LinkAttributes: Equatable {
    var index: Int32
    var name: String
    /// ARPHRD_* (1 = Ethernet, 772 = loopback).
    var hardwareType: UInt16
    var flags: UInt32
    var mtu: Int
    /// IFLA_ADDRESS: 6 bytes on Ethernet, absent or other lengths elsewhere.
    var address: [UInt8]?
    /// IFLA_NUM_RX_QUEUES / IFLA_NUM_TX_QUEUES: the queues the device was created with.
    var rxQueues: Int?
    var txQueues: Int?
    /// IFLA_INFO_KIND: "veth", "bridge", ...; nil for physical devices.
    var kind: String?
    /// IFLA_IFALIAS (`ip link set dev X alias TEXT`); nil when none is set.
    var alias: String? = nil
}

/// A link's state as the gateway's control thread polls it.
public struct LinkState: Equatable, Sendable {
    /// The ifindex: a link deleted and made again under the same name has another one.
    public var index: Int32
    /// IFF_UP: administratively up (`ip link set dev X up`).
    public var isUp: Bool
    /// IFF_LOWER_UP: the driver reports a carrier (a veth has one while its peer is up).
    public var hasCarrier: Bool

    public init(index: Int32, isUp: Bool, hasCarrier: Bool) {
        self.index = index; self.isUp = isUp; self.hasCarrier = hasCarrier
    }

    /// Up and with a carrier: frames can pass.
    public var isRunning: Bool { isUp && hasCarrier }
}

/// A NETLINK_ROUTE socket for the control thread's lookups: routes, neighbours, links.
///
/// The socket belongs to the network namespace it was created in, whichever thread uses it
/// later. Requests are serialised by a lock (this is control-plane code, never per packet)
/// and each waits at most `receiveTimeout` for the kernel.
public final class RouteNetlink: Sendable {
    private struct State {
        var fd: Int32
        var sequence: UInt32
    }
    private let state: Mutex<State>

    /// A socket in the calling thread's network namespace.
    public convenience init(receiveTimeout: Duration = .seconds(2)) throws(SystemError) {
        self.init(fd: try RouteNetlink.openSocket(receiveTimeout: receiveTimeout))
    }

    /// A socket in the named namespace (`ip netns` name, under /var/run/netns): the calling
    /// thread enters the namespace only for the socket() call and returns to its own.
    public convenience init(namespace: String, receiveTimeout: Duration = .seconds(2)) throws(SystemError) {
        let fd = try ThreadNetworkNamespace.run(path: ThreadNetworkNamespace.path(named: namespace)) {
            () throws(SystemError) -> Int32 in try RouteNetlink.openSocket(receiveTimeout: receiveTimeout)
        }.get()
        self.init(fd: fd)
    }

    private init(fd: Int32) {
        // Start from an arbitrary point so that replies to another socket's requests (which
        // we never receive anyway) and our own are easy to tell apart in a trace.
        state = Mutex(State(fd: fd, sequence: UInt32(truncatingIfNeeded: time(nil))))
    }

    deinit {
        state.withLock { _ = close($0.fd) }
    }

    private static func openSocket(receiveTimeout: Duration) throws(SystemError) -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NL.protocolRoute)
        guard fd >= 0 else { throw .syscall(operation: "socket(AF_NETLINK, NETLINK_ROUTE)", errno: errno) }
        let seconds = receiveTimeout.components.seconds
        var timeout = timeval(tv_sec: Int(seconds),
                              tv_usec: Int(receiveTimeout.components.attoseconds / 1_000_000_000_000))
        if seconds == 0 && timeout.tv_usec == 0 { timeout.tv_usec = 1 } // 0 would mean "forever"
        var on: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        // CAP_ACK keeps error replies small; EXT_ACK makes the kernel say why it refused.
        // Both are best effort (old kernels lack EXT_ACK), the timeout is not.
        _ = setsockopt(fd, NL.solNetlink, NL.capAck, &on, size)
        _ = setsockopt(fd, NL.solNetlink, NL.extAck, &on, size)
        guard setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            let e = errno
            close(fd)
            throw .syscall(operation: "setsockopt(NETLINK_ROUTE, SO_RCVTIMEO)", errno: e)
        }
        return fd
    }

    // MARK: Lookups

    /// Like `ip route get DESTINATION`: the route the kernel would use to send to it.
    public func route(to destination: IPAddress) throws(SystemError) -> Route {
        let what = "route lookup for \(destination)"
        let replies = try perform(request: what, isDump: false) { sequence in
            RouteNetlink.routeRequest(to: destination, sequence: sequence)
        }
        guard let reply = replies.first(where: { $0.type == NL.newRoute }) else {
            throw .malformed("no RTM_NEWROUTE in the answer to the \(what)")
        }
        return try RouteNetlink.parseRoute(reply, destination: destination)
    }

    /// The link-layer address the kernel has for `address` on that interface, if it is usable
    /// (REACHABLE, STALE, DELAY, PROBE, PERMANENT or NOARP); nil when there is no entry, the
    /// entry is INCOMPLETE or FAILED, or it has no 6-byte address. A nil answer means: send
    /// something to the address (or wait) and ask again.
    public func neighbour(of address: IPAddress, interfaceIndex: Int32) throws(SystemError) -> EthernetAddress? {
        let what = "neighbour lookup for \(address) on interface \(interfaceIndex)"
        let replies: [NetlinkMessage]
        do {
            replies = try perform(request: what, isDump: false) { sequence in
                RouteNetlink.neighbourRequest(of: address, interfaceIndex: interfaceIndex, sequence: sequence)
            }
        } catch .netlink(_, let e, _) where e == ENOENT {
            return nil // no entry at all
        }
        guard let reply = replies.first(where: { $0.type == NL.newNeighbour }) else { return nil }
        return try RouteNetlink.parseNeighbour(reply)
    }

    /// What the control thread watches of a link (the uplink, a tenant's host end), or nil
    /// when no link of that name exists in this socket's namespace. One RTM_GETLINK.
    public func linkState(named name: String) throws(SystemError) -> LinkState? {
        do {
            let link = try link(named: name)
            return LinkState(index: link.index, isUp: link.flags & NL.iffUp != 0,
                             hasCarrier: link.flags & NL.iffLowerUp != 0)
        } catch .noSuchInterface {
            return nil
        }
    }

    /// RTM_GETLINK by name. Throws `.noSuchInterface` (role "interface") when it is absent.
    func link(named name: String) throws(SystemError) -> LinkAttributes {
        let what = "link lookup for '\(name)'"
        let replies: [NetlinkMessage]
        do {
            replies = try perform(request: what, isDump: false) { sequence in
                RouteNetlink.linkRequest(named: name, sequence: sequence)
            }
        } catch .netlink(_, let e, _) where e == ENODEV {
            throw .noSuchInterface(name: name, role: "interface")
        }
        guard let reply = replies.first(where: { $0.type == NL.newLink }) else {
            throw .malformed("no RTM_NEWLINK in the answer to the \(what)")
        }
        return try RouteNetlink.parseLink(reply)
    }

    // MARK: Request and reply formats (static so that tests can check them on known bytes)

    static func routeRequest(to destination: IPAddress, sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.getRoute, flags: NL.request, sequence: sequence)
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        message.appendFamilyHeader([family(of: destination), UInt8(destination.bitCount), 0, 0, 0, 0, 0, 0,
                                    0, 0, 0, 0])
        message.appendAttribute(type: NL.rtaDestination, value: destination.bytes)
        return message.bytes
    }

    static func neighbourRequest(of address: IPAddress, interfaceIndex: Int32, sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.getNeighbour, flags: NL.request, sequence: sequence)
        // struct ndmsg: family, pad1, pad2 (u16), ifindex (s32), state (u16), flags, type.
        // The kernel refuses a get whose padding, state or type is not zero.
        var header: [UInt8] = [family(of: address), 0, 0, 0]
        withUnsafeBytes(of: interfaceIndex) { header += $0 }
        header += [0, 0, 0, 0]
        message.appendFamilyHeader(header)
        message.appendAttribute(type: NL.ndaDestination, value: address.bytes)
        return message.bytes
    }

    static func linkRequest(named name: String, sequence: UInt32) -> [UInt8] {
        var message = NetlinkMessageBuilder(type: NL.getLink, flags: NL.request, sequence: sequence)
        // struct ifinfomsg: family, pad, type (u16), index (s32), flags (u32), change (u32);
        // index 0 means "look up by IFLA_IFNAME".
        message.appendFamilyHeader([UInt8](repeating: 0, count: 16))
        message.appendAttribute(type: NL.iflaName, string: name)
        // Counters are not needed and make the reply several times larger.
        message.appendAttribute(type: NL.iflaExtMask, uint32: NL.extFilterSkipStats)
        return message.bytes
    }

    static func parseRoute(_ message: NetlinkMessage, destination: IPAddress) throws(SystemError) -> Route {
        let attributes = try message.attributes(after: 12)
        let header = message.payload
        let rtmTable = header[header.startIndex + 4]
        let kind = Route.Kind(rawValue: header[header.startIndex + 7])
        var gateway = attributes.address(NL.rtaGateway)
        if gateway == nil, let via = attributes[NL.rtaVia], via.count >= 2 {
            // struct rtvia: family (u16), then the address.
            gateway = IPAddress(bytes: via.dropFirst(2))
        }
        guard let oif = attributes.uint32(NL.rtaOutputInterface) else {
            throw .malformed("the route to \(destination) (\(kind)) names no output interface")
        }
        return Route(destination: destination, kind: kind, interfaceIndex: Int32(bitPattern: oif),
                     gateway: gateway, preferredSource: attributes.address(NL.rtaPreferredSource),
                     table: attributes.uint32(NL.rtaTable) ?? UInt32(rtmTable))
    }

    /// NUD_* states in which the entry's address may be used.
    static let usableNeighbourStates: UInt16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80

    static func parseNeighbour(_ message: NetlinkMessage) throws(SystemError) -> EthernetAddress? {
        let attributes = try message.attributes(after: 12)
        guard let state = message.payload.integer(at: 8, as: UInt16.self) else { return nil }
        guard state & usableNeighbourStates != 0, let lladdr = attributes[NL.ndaLinkLayerAddress] else {
            return nil
        }
        return EthernetAddress(bytes: lladdr)
    }

    static func parseLink(_ message: NetlinkMessage) throws(SystemError) -> LinkAttributes {
        let attributes = try message.attributes(after: 16)
        let p = message.payload
        var kind: String?
        if let info = attributes[NL.iflaLinkInfo] {
            kind = try NetlinkAttributes(info).string(NL.iflaInfoKind)
        }
        guard let name = attributes.string(NL.iflaName), let mtu = attributes.uint32(NL.iflaMTU) else {
            throw .malformed("RTM_NEWLINK without a name or MTU")
        }
        return LinkAttributes(
            index: p.integer(at: 4)!, name: name, hardwareType: p.integer(at: 2)!, flags: p.integer(at: 8)!,
            mtu: Int(mtu), address: attributes[NL.iflaAddress].map(Array.init),
            rxQueues: attributes.uint32(NL.iflaNumRXQueues).map(Int.init),
            txQueues: attributes.uint32(NL.iflaNumTXQueues).map(Int.init), kind: kind,
            alias: attributes.string(NL.iflaAlias))
    }

    private static func family(of address: IPAddress) -> UInt8 {
        address.isV4 ? NL.afInet : NL.afInet6
    }

    // MARK: Socket I/O

    /// Sends one request and collects its replies (see `NetlinkReply`).
    func perform(request what: String, isDump: Bool,
                         _ build: (UInt32) -> [UInt8]) throws(SystemError) -> [NetlinkMessage] {
        try state.withLock { (state: inout State) throws(SystemError) -> [NetlinkMessage] in
            state.sequence &+= 1
            if state.sequence == 0 { state.sequence = 1 }
            let message = build(state.sequence)
            var reply = NetlinkReply(sequence: state.sequence, isDump: isDump, request: what)
            try RouteNetlink.send(fd: state.fd, message, what: what)
            var buffer = [UInt8](repeating: 0, count: RouteNetlink.receiveBufferSize)
            while !reply.isComplete {
                let count = try RouteNetlink.receive(fd: state.fd, into: &buffer, what: what)
                guard let count else { continue } // not from the kernel
                for m in try NetlinkMessage.parse(buffer[..<count]) {
                    try reply.consume(m)
                }
            }
            return reply.messages
        }
    }

    /// Large enough for any single datagram the kernel sends (dump parts are at most 32 KiB).
    private static let receiveBufferSize = 64 * 1024

    private static func send(fd: Int32, _ message: [UInt8], what: String) throws(SystemError) {
        // No address: an unconnected netlink socket sends to the kernel (port 0).
        let sent = message.withUnsafeBytes { b in SystemCall.retryingEINTR { Glibc.send(fd, b.baseAddress, b.count, 0) } }
        if sent == message.count { return }
        if sent < 0 { throw .syscall(operation: "send(NETLINK_ROUTE) for the \(what)", errno: errno) }
        throw .malformed("short send (\(sent) of \(message.count) bytes) for the \(what)")
    }

    /// One datagram into `buffer`; nil when it came from another process (only the kernel,
    /// port 0, answers our requests). EAGAIN means the receive timeout passed.
    private static func receive(fd: Int32, into buffer: inout [UInt8], what: String) throws(SystemError) -> Int? {
        var source = sockaddr_storage()
        let sourceLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var flags: Int32 = 0
        let received = buffer.withUnsafeMutableBytes { bytes in
            withUnsafeMutablePointer(to: &source) { sourcePointer in
                var iov = iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var header = msghdr()
                    header.msg_name = UnsafeMutableRawPointer(sourcePointer)
                    header.msg_namelen = sourceLength
                    header.msg_iov = iovPointer
                    header.msg_iovlen = 1
                    let n = SystemCall.retryingEINTR { recvmsg(fd, &header, 0) }
                    flags = header.msg_flags
                    return n
                }
            }
        }
        if received < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK { throw .timedOut(request: what) }
            throw .syscall(operation: "recvmsg(NETLINK_ROUTE) for the \(what)", errno: e)
        }
        if flags & Int32(MSG_TRUNC) != 0 {
            throw .malformed("a reply to the \(what) was larger than \(buffer.count) bytes")
        }
        // struct sockaddr_nl: family (u16), pad (u16), pid (u32), groups (u32).
        let sourcePort = withUnsafeBytes(of: &source) { $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self) }
        return sourcePort == 0 ? received : nil
    }
}
