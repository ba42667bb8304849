import Foundation
import TestSupport
@testable import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// An attacker's initiation flood at one tenant's port, from many sources (every address ×
/// `portsPerAddress` ports), at a fixed total rate. Each source behaves as a cookie-aware
/// attacker: it repeats one initiation of garbage behind a valid mac1 (anyone can compute
/// mac1: it needs only the tenant's public key) until the gateway, under load, answers it
/// with a cookie reply; it opens the cookie and from then on repeats garbage with a valid
/// mac2 too. So the gateway sees every path of its gate: processed (not under load), cookie
/// replies (under load, no mac2) and the per-source rate limiter (under load, valid mac2).
/// What gets past the gate fails the Noise handshake (`decryption_failed`).
///
/// `run` blocks for its duration (start it on a thread of its own) and allocates nothing per
/// datagram but what the kernel does.
final class InitiationFlood: @unchecked Sendable {
    struct Report: CustomStringConvertible {
        var sources = 0
        var seconds = 0.0
        /// Datagrams the kernel took, and those it refused (socket or qdisc full).
        var sent = 0
        var refused = 0
        /// Cookie replies that arrived; those that opened with the source's last mac1.
        var cookieRepliesReceived = 0
        var cookieRepliesOpened = 0
        /// Datagrams that arrived and were not cookie replies (the gateway must send none).
        var otherReplies = 0
        /// Sources that opened a cookie and then sent with mac2.
        var sourcesWithCookie = 0
        var description: String {
            String(format: "%d sources, %.1f s: %d initiations sent (%.0f/s, %d refused by the kernel), "
                   + "%d cookie replies received (%d opened, %d sources with a cookie), %d other replies",
                   sources, seconds, sent, Double(sent) / max(seconds, 0.001), refused, cookieRepliesReceived,
                   cookieRepliesOpened, sourcesWithCookie, otherReplies)
        }
    }

    private struct Source {
        let socket: OwnedSocket
        var macs: CookieGenerator
        var message: [UInt8]
        var hasCookie = false
    }

    private var sources: [Source] = []
    private let target: sockaddr_in

    /// One UDP socket per source, bound in `namespace` (the addresses must be its own), aimed
    /// at `address:port`, whose tenant has public key `tenantKey`.
    init(in namespace: NetworkNamespace, addresses: [String], portsPerAddress: Int, address: String, port: UInt16,
         tenantKey: PublicKey) throws {
        target = CorePeer.address(address, port)
        let now = CorePeer.now()
        for a in addresses {
            for _ in 0..<portsPerAddress {
                var source = Source(socket: OwnedSocket(fd: try namespace.udpSocket(port: 0, address: a)),
                                    macs: CookieGenerator(peer: tenantKey), message: [])
                source.message = InitiationFlood.garbage(macs: &source.macs, now: now)
                sources.append(source)
            }
        }
    }

    /// An initiation of random bytes behind the type, with mac1 (and mac2 once `macs` holds
    /// a cookie) computed over them.
    private static func garbage(macs: inout CookieGenerator, now: Instant) -> [UInt8] {
        var m = [UInt8](repeating: 0, count: InitiationMessage.size)
        m.withUnsafeMutableBytes { bytes in
            systemRandomBytes(UnsafeMutableRawBufferPointer(rebasing: bytes[4...]))
            bytes[0] = MessageType.initiation.rawValue
            macs.addMACs(to: bytes, now: now)
        }
        return m
    }

    /// Sends for `seconds` at `rate` datagrams per second in total, sources in turn, and
    /// answers cookie replies as it goes.
    func run(seconds: Double, rate: Int) -> Report {
        var report = Report(sources: sources.count)
        let start = CorePeer.now()
        var target = self.target
        var next = 0
        var buffer = [UInt8](repeating: 0, count: 2048)
        var fds = sources.map { pollfd(fd: $0.socket.fd, events: Int16(POLLIN), revents: 0) }
        while true {
            let elapsed = Double(CorePeer.now().since(start).nanoseconds) / 1e9
            guard elapsed < seconds else { report.seconds = elapsed; break }
            let due = Int(elapsed * Double(rate))
            while report.sent + report.refused < due {
                let n = sources[next].message.withUnsafeBytes { bytes in
                    withUnsafePointer(to: &target) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(sources[next].socket.fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0,
                                   socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                }
                if n == InitiationMessage.size { report.sent += 1 } else { report.refused += 1 }
                next = (next + 1) % sources.count
            }
            // Answers: cookie replies to open.
            if poll(&fds, nfds_t(fds.count), 0) > 0 {
                for (i, pfd) in fds.enumerated() where pfd.revents & Int16(POLLIN) != 0 {
                    while true {
                        let n = buffer.withUnsafeMutableBytes { recv(pfd.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                        guard n >= 0 else { break }
                        guard n == CookieReplyMessage.size, buffer[0] == MessageType.cookieReply.rawValue else {
                            report.otherReplies += 1
                            continue
                        }
                        report.cookieRepliesReceived += 1
                        let opened: Bool = buffer.withUnsafeBytes { bytes in
                            let raw = UnsafeRawBufferPointer(rebasing: bytes[0..<n])
                            guard let reply = try? CookieReplyMessage(raw) else { return false }
                            do throws(HandshakeError) {
                                try sources[i].macs.consumeCookieReply(reply, now: CorePeer.now())
                                return true
                            } catch { return false }
                        }
                        guard opened else { continue }   // a late reply to a message already replaced
                        report.cookieRepliesOpened += 1
                        if !sources[i].hasCookie { report.sourcesWithCookie += 1 }
                        sources[i].hasCookie = true
                        sources[i].message = InitiationFlood.garbage(macs: &sources[i].macs, now: CorePeer.now())
                    }
                }
                for i in fds.indices { fds[i].revents = 0 }
            }
            var pause = timespec(tv_sec: 0, tv_nsec: 500_000)
            nanosleep(&pause, nil)
        }
        return report
    }

    func close() {
        for source in sources { source.socket.close() }
    }
}
