import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// A tenant's UDP socket in the kernel, bound to its ListenPort (dual stack). The control
/// plane *sends* handshake messages, keepalives and staged packets through it: rare packets,
/// and the kernel then resolves the next hop (ARP/ND) that the data path later reads back.
/// It receives nothing while the XDP program runs (every WireGuard-shaped datagram to the port
/// goes to the AF_XDP sockets); holding the port also keeps other programs off it.
public final class HandshakeSocket {
    public let port: UInt16
    private let fd: Int32

    public init(port: UInt16) throws(GatewayError) {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw GatewayError("cannot create the UDP socket for port \(port)", errno: errno) }
        var off: Int32 = 0
        setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = port.bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
        guard bound == 0 else {
            let e = errno
            close(fd)
            throw GatewayError("cannot bind UDP port \(port) (is another WireGuard or xdpwg using it?)", errno: e)
        }
        self.fd = fd
        self.port = port
    }

    deinit { close(fd) }

    /// Sends one datagram; returns false (and the errno) when the kernel refused it.
    @discardableResult
    public func send(_ bytes: UnsafeRawBufferPointer, to address: IPAddress, port: UInt16) -> Int32? {
        var to = sockaddr_in6()
        to.sin6_family = sa_family_t(AF_INET6)
        to.sin6_port = port.bigEndian
        let raw: [UInt8] = address.isV4 ? [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + address.bytes : address.bytes
        withUnsafeMutableBytes(of: &to.sin6_addr) { $0.copyBytes(from: raw) }
        let n = withUnsafePointer(to: &to) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                SystemCall.retryingEINTR {
                    sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), address, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        return n >= 0 ? nil : errno
    }
}
