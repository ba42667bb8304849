import Foundation
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The protocol core as a WireGuard peer over a plain UDP socket, for interoperability tests.
/// It has no TUN device: inner packets are handed to it (`send`) and collected from it
/// (`received`), and it answers ICMP echo requests itself, so a real `ping` from the other
/// side gets its replies. One thread owns the `Tunnel` and the socket; other threads talk to
/// it through a locked in-box and out-box.
public final class CorePeer: @unchecked Sendable {
    public let publicKey: PublicKey
    public let innerAddress: String
    private let tunnel: Tunnel
    private let socket: Int32
    private var peerEndpoint: sockaddr_in
    private let lock = NSLock()
    private var outbox: [[UInt8]] = []
    private var inbox: [[UInt8]] = []
    private var dropReasons: [Tunnel.DropReason] = []
    private var sent: [[UInt8]] = []
    private var rawOutbox: [[UInt8]] = []
    /// Inner packets to seal without sending (`seal`), and what sealing them gave.
    private var sealRequests: [[UInt8]] = []
    private var sealResults: [[UInt8]] = []
    private var running = true
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)

    /// `namespace` holds the socket, bound to `listenPort`; the peer is at `peerAddress:peerPort`.
    public init(in namespace: NetworkNamespace, privateKey: PrivateKey, peer: PublicKey, presharedKey: PresharedKey = .none,
         listenPort: UInt16, peerAddress: String, peerPort: UInt16, innerAddress: String) throws {
        publicKey = privateKey.publicKey
        self.innerAddress = innerAddress
        tunnel = Tunnel(identity: StaticIdentity(privateKey: privateKey), peer: peer, presharedKey: presharedKey)
        socket = try namespace.udpSocket(port: listenPort)
        peerEndpoint = CorePeer.address(peerAddress, peerPort)
        start()
    }

    private func start() {
        let t = Thread { [unowned self] in self.run() }
        t.name = "core-peer"
        thread = t
        t.start()
    }

    deinit { close() }

    public func close() {
        lock.lock()
        let wasRunning = running
        running = false
        lock.unlock()
        if wasRunning, thread != nil {
            stopped.wait()
            Glibc.close(socket)
        }
    }

    /// Queues an inner packet for the peer (sent through the tunnel, after a handshake if needed).
    public func send(_ packet: [UInt8]) {
        lock.lock(); outbox.append(packet); lock.unlock()
    }

    /// Every datagram sent so far, as sent (for replaying one).
    public var sentDatagrams: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return sent }

    /// Sends `datagram` to the peer as it is, bypassing the tunnel (a replay, or junk).
    public func sendRaw(_ datagram: [UInt8]) {
        lock.lock(); rawOutbox.append(datagram); lock.unlock()
    }

    /// Seals `packets` with the current session, in order, and returns the transport
    /// datagrams without sending them: a peer's own messages to send later in any order, as
    /// often as wanted (reordering, replays) or never (to make later counters jump ahead).
    /// Needs an established session (send a packet and wait for its answer first); throws if
    /// there is none, or if the tunnel does not answer within `timeout` seconds.
    public func seal(_ packets: [[UInt8]], timeout: Double = 10) throws -> [[UInt8]] {
        lock.lock(); sealRequests += packets; lock.unlock()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            lock.lock()
            let done = sealResults.count >= packets.count
            let results = done ? Array(sealResults.prefix(packets.count)) : []
            if done { sealResults.removeFirst(packets.count) }
            lock.unlock()
            if done {
                guard results.allSatisfy({ $0.first == 4 }) else {
                    throw SealFailed(description: "core peer \(innerAddress): no session to seal with (establish one first)")
                }
                return results
            }
            guard Date() < deadline else {
                throw SealFailed(description: "core peer \(innerAddress): sealing \(packets.count) packets took over \(timeout) s")
            }
            usleep(1_000)
        }
    }

    public struct SealFailed: Error, CustomStringConvertible {
        public var description: String
    }

    /// Inner packets delivered so far (echo requests it answered are included).
    public var received: [[UInt8]] { lock.lock(); defer { lock.unlock() }; return inbox }

    public var drops: [Tunnel.DropReason] { lock.lock(); defer { lock.unlock() }; return dropReasons }

    /// Waits until a delivered packet satisfies `match`, up to `timeout` seconds.
    public func waitForPacket(timeout: Double = 10, _ match: (Packets.IPv4) -> Bool) -> Packets.IPv4? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let hit = received.compactMap(Packets.parseIPv4).first(where: match) { return hit }
            usleep(20_000)
        }
        return nil
    }

    // MARK: The pump (its own thread)

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 2048)
        var datagram = [UInt8](repeating: 0, count: 2048)
        while true {
            lock.lock()
            let keepRunning = running
            let toSend = outbox
            outbox.removeAll()
            let raw = rawOutbox
            rawOutbox.removeAll()
            let toSeal = sealRequests
            sealRequests.removeAll()
            lock.unlock()
            guard keepRunning else { break }

            for datagram in raw { transmit(datagram, count: datagram.count) }

            // Sealed, not sent. Without a session the tunnel would stage the packet and start a
            // handshake: that datagram is sent as usual and the caller gets an empty result.
            var sealed: [[UInt8]] = []
            for packet in toSeal {
                let o = buffer.withUnsafeMutableBytes { out in
                    packet.withUnsafeBytes { tunnel.encapsulate($0, into: out, now: CorePeer.now(), wallClock: CorePeer.wall()) }
                }
                if case .writeToNetwork(let n) = o, buffer[0] == 4 {
                    sealed.append(Array(buffer[0..<n]))
                } else {
                    handle(o, buffer)
                    sealed.append([])
                }
            }
            if !sealed.isEmpty { lock.lock(); sealResults += sealed; lock.unlock() }

            for packet in toSend {
                let o = buffer.withUnsafeMutableBytes { out in
                    packet.withUnsafeBytes { tunnel.encapsulate($0, into: out, now: CorePeer.now(), wallClock: CorePeer.wall()) }
                }
                handle(o, buffer)
            }
            var pfd = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            if Glibc.poll(&pfd, 1, 20) > 0 {
                let n = datagram.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
                if n >= 0 {
                    let o = buffer.withUnsafeMutableBytes { out in
                        datagram.withUnsafeBytes {
                            tunnel.decapsulate(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: out,
                                               now: CorePeer.now(), wallClock: CorePeer.wall())
                        }
                    }
                    handle(o, buffer)
                }
            }
            // Drain whatever the last input or the timers asked for.
            while true {
                let o = buffer.withUnsafeMutableBytes { tunnel.poll(now: CorePeer.now(), wallClock: CorePeer.wall(), into: $0) }
                if o == .done { break }
                handle(o, buffer)
            }
        }
        stopped.signal()
    }

    private func handle(_ output: Tunnel.Output, _ buffer: [UInt8]) {
        switch output {
        case .done: break
        case .writeToNetwork(let n):
            transmit(buffer, count: n)
        case .writeToTunnel(let n):
            let packet = Array(buffer[0..<n])
            lock.lock(); inbox.append(packet); lock.unlock()
            if let reply = echoReply(to: packet) { lock.lock(); outbox.append(reply); lock.unlock() }
        case .dropped(let reason):
            lock.lock(); dropReasons.append(reason); lock.unlock()
        }
    }

    private func transmit(_ buffer: [UInt8], count n: Int) {
        lock.lock(); sent.append(Array(buffer[0..<n])); lock.unlock()
        _ = buffer.withUnsafeBytes { b in
            withUnsafePointer(to: &peerEndpoint) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(socket, b.baseAddress, n, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    /// The reply to an ICMP echo request addressed to us, as a host's kernel would send it.
    private func echoReply(to packet: [UInt8]) -> [UInt8]? {
        guard let ip = Packets.parseIPv4(packet), ip.proto == 1, ip.destination == innerAddress,
              ip.payload.count >= 8, ip.payload[0] == 8 else { return nil }
        let id = UInt16(ip.payload[4]) << 8 | UInt16(ip.payload[5])
        let seq = UInt16(ip.payload[6]) << 8 | UInt16(ip.payload[7])
        return Packets.icmpEcho(source: innerAddress, destination: ip.source, identifier: id, sequence: seq,
                                payload: Array(ip.payload[8...]), reply: true)
    }

    // MARK: Clocks and addresses

    /// The monotonic clock, as the tunnel sees it.
    public static func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    /// The wall clock as a TAI64N timestamp.
    public static func wall() -> TAI64N {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return TAI64N(secondsSinceEpoch: UInt64(ts.tv_sec), nanoseconds: UInt32(ts.tv_nsec))
    }

    public static func address(_ text: String, _ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, text, &a.sin_addr)
        return a
    }
}
