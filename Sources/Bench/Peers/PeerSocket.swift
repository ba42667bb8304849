import Engine
import Gateway
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// The one IPv4 UDP socket the emulated peers share: handshakes go through it, and its
/// address and port are the source of every transport frame the emulator writes.
///
/// A socket belongs to the network namespace it was created in, whichever thread uses it
/// later; so the caller decides where it lives: create it on a thread inside the lab's
/// "internet" namespace (`PeerSocket(address:port:)` there), or hand over a socket made
/// elsewhere (`PeerSocket(adopting:address:)`). Closed by `close()` or deinit.
public final class PeerSocket: @unchecked Sendable {
    /// The descriptor (owned: closed with this object).
    public let fileDescriptor: Int32
    /// The address and port peers send from; the gateway learns this endpoint for every peer.
    public let local: Endpoint
    private var closed = false

    /// Creates a socket in the calling thread's network namespace, bound to `address:port`
    /// (port 0: the kernel picks one). `address` must be an IPv4 address of this namespace.
    public init(address: IPAddress, port: UInt16 = 0) throws(PeerEmulatorError) {
        guard address.isV4 else { throw PeerEmulatorError("peer socket: \(address) is not an IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw PeerEmulatorError("peer socket: socket(AF_INET, SOCK_DGRAM)", errno: errno) }
        var sa = PeerSocket.socketAddress(Endpoint(address: address, port: port))
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw PeerEmulatorError("peer socket: bind to \(address):\(port)", errno: e)
        }
        do throws(PeerEmulatorError) {
            try PeerSocket.configure(fd)
            local = Endpoint(address: address, port: try PeerSocket.boundPort(fd))
        } catch {
            Glibc.close(fd)
            throw error
        }
        fileDescriptor = fd
    }

    /// Takes over a bound IPv4 UDP socket (made, say, inside a namespace by the caller).
    /// `address` is the source address its datagrams carry (the socket may be bound to
    /// 0.0.0.0); the port is read from the socket. The socket is closed with this object,
    /// also when this initializer throws.
    public init(adopting fd: Int32, address: IPAddress) throws(PeerEmulatorError) {
        do throws(PeerEmulatorError) {
            guard address.isV4 else { throw PeerEmulatorError("peer socket: \(address) is not an IPv4 address") }
            try PeerSocket.configure(fd)
            let port = try PeerSocket.boundPort(fd)
            guard port != 0 else { throw PeerEmulatorError("peer socket: descriptor \(fd) is not bound to a port") }
            local = Endpoint(address: address, port: port)
        } catch {
            Glibc.close(fd)
            throw error
        }
        fileDescriptor = fd
    }

    deinit { close() }

    /// Closes the socket (idempotent).
    public func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fileDescriptor)
    }

    /// Handshakes of thousands of peers arrive in bursts: room for all of them.
    private static func configure(_ fd: Int32) throws(PeerEmulatorError) {
        var size: Int32 = 8 << 20
        for option in [SO_RCVBUF, SO_SNDBUF] {
            // SO_*BUFFORCE needs CAP_NET_ADMIN; without it the plain option is capped by sysctl, which is fine.
            let force = option == SO_RCVBUF ? SO_RCVBUFFORCE : SO_SNDBUFFORCE
            if setsockopt(fd, SOL_SOCKET, force, &size, socklen_t(4)) != 0,
               setsockopt(fd, SOL_SOCKET, option, &size, socklen_t(4)) != 0 {
                throw PeerEmulatorError("peer socket: setsockopt(SO_RCVBUF/SO_SNDBUF)", errno: errno)
            }
        }
    }

    private static func boundPort(_ fd: Int32) throws(PeerEmulatorError) -> UInt16 {
        var sa = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw PeerEmulatorError("peer socket: getsockname(\(fd))", errno: errno) }
        guard sa.sin_family == sa_family_t(AF_INET) else {
            throw PeerEmulatorError("peer socket: descriptor \(fd) is not an IPv4 socket")
        }
        return UInt16(bigEndian: sa.sin_port)
    }

    static func socketAddress(_ endpoint: Endpoint) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = endpoint.port.bigEndian
        if case .v4(let a) = endpoint.address { sa.sin_addr.s_addr = a.bigEndian }
        return sa
    }

    // MARK: I/O

    /// Sends one datagram to `destination`. EINTR is retried; anything else throws.
    public func send(_ datagram: UnsafeRawBufferPointer, to destination: Endpoint) throws(PeerEmulatorError) {
        var sa = PeerSocket.socketAddress(destination)
        let n = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                SystemCall.retryingEINTR {
                    sendto(fileDescriptor, datagram.baseAddress, datagram.count, 0, address,
                           socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard n >= 0 else { throw PeerEmulatorError("peer socket: sendto \(destination)", errno: errno) }
    }

    public func send(_ datagram: [UInt8], to destination: Endpoint) throws(PeerEmulatorError) {
        let r: PeerEmulatorError? = datagram.withUnsafeBytes { b in
            do throws(PeerEmulatorError) { try send(b, to: destination); return nil } catch { return error }
        }
        if let r { throw r }
    }

    /// Waits up to `timeout` for a datagram and reads it into `buffer`: its length and sender,
    /// or nil when none came in time. EINTR is retried (with the same deadline).
    public func receive(into buffer: UnsafeMutableRawBufferPointer,
                        timeout: Duration) throws(PeerEmulatorError) -> (length: Int, from: Endpoint)? {
        let deadline = Engine.Clock.now() + timeout
        while true {
            var sa = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = withUnsafeMutablePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(fileDescriptor, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT), $0, &length)
                }
            }
            if n >= 0 {
                let from = Endpoint(address: .v4(UInt32(bigEndian: sa.sin_addr.s_addr)), port: UInt16(bigEndian: sa.sin_port))
                return (n, from)
            }
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else {
                throw PeerEmulatorError("peer socket: recvfrom", errno: errno)
            }
            let now = Engine.Clock.now()
            guard now < deadline else { return nil }
            let milliseconds = Int32(min(1000, max(1, (deadline.nanoseconds - now.nanoseconds + 999_999) / 1_000_000)))
            var pfd = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, milliseconds) < 0 && errno != EINTR {
                throw PeerEmulatorError("peer socket: poll", errno: errno)
            }
        }
    }
}
