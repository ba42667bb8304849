import CXDPWG
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// Sends UDP datagrams through the kernel's UDP stack as fast as one core can: a UDP socket
/// made in network namespace `namespace`, `sendmmsg` batches of 64 from a thread pinned to
/// `cpu`, destinations taken round robin.
///
/// For the one place AF_XDP cannot feed: packets that must enter a wireguard-go TUN device
/// (the encrypt direction against wireguard-go, where the tenant namespace routes the peers'
/// inner addresses into the TUN). It costs far more per packet than a `FrameBlaster` (a full
/// trip through the IP stack); `measureCeiling` says how much.
///
/// Every datagram is `packetSize` bytes as an IPv4 packet (20 + 8 header bytes + payload).
/// The payload starts with the datagram's sequence number in the blast (64-bit big-endian,
/// from 0; when the payload has room) and is zero after it: receivers can check order and loss.
public final class DatagramBlaster: @unchecked Sendable {
    /// Where datagrams go: an IPv4 address and UDP port.
    public struct Destination: Sendable, Hashable, CustomStringConvertible {
        public let address: IPAddress
        public let port: UInt16

        public init(_ address: IPAddress, port: UInt16) {
            self.address = address
            self.port = port
        }

        public var description: String { "\(address):\(port)" }
    }

    public let namespace: String?
    public let cpu: Int?
    public let destinations: [Destination]
    /// Bytes of each datagram as an IP packet.
    public let packetSize: Int

    private let fd: Int32
    private let gate = BlastGate()

    /// IPv4 and UDP headers.
    public static let headerSize = 28
    /// Datagrams per sendmmsg call.
    static let batch = 64
    /// The socket's send buffer: room for several batches of the largest datagrams, so the
    /// sender never waits on it while the device keeps up.
    static let sendBuffer: Int32 = 4 << 20

    /// Makes and binds the socket in `namespace` (source port `sourcePort`, 0 for any).
    /// Throws `LoadError` for no destinations, an IPv6 destination, a size outside
    /// 28...65535, or a namespace or socket failure (errno as text).
    public init(namespace: String?, cpu: Int? = nil, destinations: [Destination], packetSize: Int,
                sourcePort: UInt16 = 0) throws(LoadError) {
        let operation = "make a UDP blaster"
        guard !destinations.isEmpty else {
            throw LoadError(operation, namespace: namespace, reason: "no destinations")
        }
        if let v6 = destinations.first(where: { !$0.address.isV4 }) {
            throw LoadError(operation, namespace: namespace, reason: "destination \(v6) is IPv6; only IPv4 is supported")
        }
        guard (DatagramBlaster.headerSize...65535).contains(packetSize) else {
            throw LoadError(operation, namespace: namespace,
                            reason: "a datagram of \(packetSize) bytes: IPv4 packets are \(DatagramBlaster.headerSize) to 65535 bytes")
        }
        do {
            fd = try runInNamespace(namespace) {
                try DatagramBlaster.openSocket(sourcePort: sourcePort, namespace: namespace)
            }
        } catch {
            throw LoadError.wrap(error, operation, namespace: namespace, interface: nil)
        }
        self.namespace = namespace
        self.cpu = cpu
        self.destinations = destinations
        self.packetSize = packetSize
    }

    deinit { close(fd) }

    private static func openSocket(sourcePort: UInt16, namespace: String?) throws(LoadError) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LoadError("socket(AF_INET, SOCK_DGRAM)", namespace: namespace, errno: errno) }
        // Root may exceed wmem_max (SO_SNDBUFFORCE); otherwise take what the limit allows.
        var size = sendBuffer
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        // A send blocked on a full buffer gives up after 100 ms, so a stop request is seen.
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_port = sourcePort.bigEndian
        let rc = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let code = errno
            close(fd)
            throw LoadError("bind a UDP socket to port \(sourcePort)", namespace: namespace, errno: code)
        }
        return fd
    }

    /// Starts a blast on a new thread (in the namespace, pinned to `cpu`); `requestStop()`
    /// ends it early, `join()` returns the `BlastResult` (`sent`: datagrams the socket took)
    /// or throws the `LoadError` of a send the kernel refused for good (no route, ...).
    public func start(_ mode: BlastMode) throws(LoadError) -> NamespaceThread<BlastResult> {
        try startBlast(mode, operation: "blast datagrams (\(mode))", namespace: namespace, interface: nil, cpu: cpu,
                       threadName: "xdpwg-udpblast", gate: gate, pool: nil) { stop in
            try self.blast(mode, stop: stop)
        }
    }

    /// `start` and `join`.
    public func run(_ mode: BlastMode) throws -> BlastResult {
        try start(mode).join()
    }

    // MARK: The sending loop

    private func blast(_ mode: BlastMode, stop: StopSignal) throws(LoadError) -> BlastResult {
        let batch = DatagramBlaster.batch
        let payloadLength = packetSize - DatagramBlaster.headerSize
        let (limit, deadline) = mode.bounds(onePass: destinations.count)

        // Everything sendmmsg reads, allocated once: addresses, payloads, iovecs, headers.
        let addresses = UnsafeMutablePointer<sockaddr_in>.allocate(capacity: destinations.count)
        defer { addresses.deallocate() }
        for (i, destination) in destinations.enumerated() {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = destination.port.bigEndian
            if case .v4(let value) = destination.address { address.sin_addr.s_addr = value.bigEndian }
            addresses[i] = address
        }
        let stride = max(payloadLength, 8)
        let payloads = UnsafeMutableRawPointer.allocate(byteCount: batch * stride, alignment: 64)
        defer { payloads.deallocate() }
        payloads.initializeMemory(as: UInt8.self, repeating: 0, count: batch * stride)
        let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        defer { vectors.deallocate() }
        let messages = UnsafeMutablePointer<msghdr>.allocate(capacity: batch)
        defer { messages.deallocate() }
        for i in 0..<batch {
            vectors[i] = iovec(iov_base: payloads + i * stride, iov_len: payloadLength)
            var message = msghdr()
            message.msg_iov = vectors + i
            message.msg_iovlen = 1
            message.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            messages[i] = message
        }
        let hasSequence = payloadLength >= 8

        var sent: UInt64 = 0
        var destination = 0
        let clock = BlastClock(cpu: cpu)
        var turns: UInt64 = 0
        while true {
            if let limit, sent == limit { break }
            turns &+= 1
            if stop.isStopRequested || (turns & 15 == 0 && monotonicSeconds() >= deadline) { break }
            var count = batch
            if let limit { count = Int(min(UInt64(batch), limit - sent)) }
            // Sequence numbers and destinations for this batch; a short send is simply
            // redone from the first datagram not taken.
            var d = destination
            for i in 0..<count {
                if hasSequence {
                    (payloads + i * stride).storeBytes(of: (sent &+ UInt64(i)).bigEndian, as: UInt64.self)
                }
                messages[i].msg_name = UnsafeMutableRawPointer(addresses + d)
                d += 1
                if d == destinations.count { d = 0 }
            }
            let taken = cxdpwg_sendmmsg(fd, messages, UInt32(count), 0)
            if taken > 0 {
                sent &+= UInt64(taken)
                destination = (destination + Int(taken)) % destinations.count
                continue
            }
            let code = errno
            switch code {
            case EINTR, EAGAIN, ENOBUFS, ECONNREFUSED:
                // Interrupted; send buffer full for 100 ms; no memory now; an ICMP error from
                // an earlier datagram reported on this one: none of these stops a blast.
                continue
            default:
                throw LoadError("blast datagrams: sendmmsg to \(destinations[destination])", namespace: namespace, errno: code)
            }
        }
        return clock.result(sent: sent, dropped: 0)
    }
}
