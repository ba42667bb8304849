import Bench
import Engine
import Foundation
import Gateway
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The peer emulator against a responder built on the protocol core, over loopback (no root):
/// handshakes (plain, through cookie replies, with lost initiations, with none answered),
/// frames that the responder's keypairs open to exactly the expected inner packets, in both
/// the sealed and the crypto-off form, and the way back (`open`).
@Suite struct PeerEmulatorTests {
    static let loopback = IPAddress("127.0.0.1")!
    static let emulatorMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0xbe, 0x01])!
    static let gatewayMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0xbe, 0x02])!
    static let tenant = Endpoint(address: IPAddress("10.20.0.1")!, port: 5555)

    /// An emulator of `peers` peers that completed a handshake with a fresh responder.
    static func established(peers: Int, behaviour: LoopbackResponder.Behaviour = .answer,
                            psk: PresharedKey? = nil) throws -> (PeerEmulator, LoopbackResponder, PeerSocket) {
        let emulator = try PeerEmulator(peerCount: peers, presharedKey: psk)
        let responder = try LoopbackResponder(peers: emulator.publicKeys, presharedKey: psk, behaviour: behaviour)
        let socket = try PeerSocket(address: loopback)
        try emulator.handshake(over: socket, gateway: responder.endpoint, gatewayPublicKey: responder.publicKey,
                               timeout: .seconds(20))
        return (emulator, responder, socket)
    }

    static func layout(peers: Int, innerSize: Int, sealed: Bool = true) throws -> TransportFrameLayout {
        TransportFrameLayout(sourceMAC: emulatorMAC, destinationMAC: gatewayMAC, innerSize: innerSize,
                             innerSources: try PeerEmulator.consecutiveIPv4(from: IPAddress("10.21.0.1")!, count: peers),
                             innerDestination: tenant, innerSourcePort: 40000, sealed: sealed)
    }

    /// Writes frames into arrays (the caller decides where frames live: here, the heap).
    static func frames(_ emulator: PeerEmulator, count: Int, layout: TransportFrameLayout) throws -> [[UInt8]] {
        var frames: [[UInt8]] = []
        try emulator.writeTransportFrames(count: count, layout: layout) { fill in
            var buffer = [UInt8](repeating: 0xee, count: 2048)
            let n = buffer.withUnsafeMutableBytes { fill($0) }
            frames.append(Array(buffer.prefix(n)))
        }
        return frames
    }

    /// The inner packet peer `peer` sends with `counter`, spelled out byte by byte.
    static func expectedInner(size: Int, source: [UInt8], peer: Int, counter: UInt64) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: size)
        p[0] = 0x45; p[2] = UInt8(size >> 8); p[3] = UInt8(size & 0xff); p[6] = 0x40; p[8] = 64; p[9] = 17
        p.replaceSubrange(12..<16, with: source)
        p.replaceSubrange(16..<20, with: [10, 20, 0, 1])
        let ipChecksum = Wire.internetChecksum(p[0..<20])
        p[10] = UInt8(ipChecksum >> 8); p[11] = UInt8(ipChecksum & 0xff)
        let udpLength = size - 20
        p.replaceSubrange(20..<26, with: [0x9c, 0x40, 0x15, 0xb3, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)])
        for k in 0..<4 { p[28 + k] = UInt8(truncatingIfNeeded: UInt32(peer) >> (24 - 8 * k)) }
        for k in 0..<8 { p[32 + k] = UInt8(truncatingIfNeeded: counter >> (56 - 8 * UInt64(k))) }
        for k in 40..<size { p[k] = UInt8(truncatingIfNeeded: k - 28) }
        let pseudo = Array(p[12..<20]) + [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)]
        var udpChecksum = Wire.internetChecksum(pseudo + Array(p[20...]))
        if udpChecksum == 0 { udpChecksum = 0xffff }
        p[26] = UInt8(udpChecksum >> 8); p[27] = UInt8(udpChecksum & 0xff)
        return p
    }

    // MARK: Handshakes

    @Test func everyPeerCompletesAHandshakeAndGetsCountersFromZero() throws {
        let (emulator, responder, socket) = try Self.established(peers: 5)
        defer { responder.stop(); socket.close() }
        #expect(emulator.establishedCount == 5)
        #expect(responder.sessions.count == 5)
        #expect(Set(responder.sessions.map(\.peer)) == Set(emulator.publicKeys))
        #expect(emulator.local == Endpoint(address: Self.loopback, port: socket.local.port))
        #expect(emulator.gateway == responder.endpoint)
        // The first frame of every peer carries counter 0.
        let frames = try Self.frames(emulator, count: 5, layout: Self.layout(peers: 5, innerSize: 64))
        #expect(frames.map { $0.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...]))?.counter } }
                == [0, 0, 0, 0, 0])
    }

    @Test func framesOpenWithTheRespondersKeypairsToTheExactInnerPackets() throws {
        let psk = PresharedKey.generate()
        let (emulator, responder, socket) = try Self.established(peers: 3, psk: psk)
        defer { responder.stop(); socket.close() }
        // Round robin across calls (peers 0 1 2 0 1 2 0, then 1 2 0 ...), each peer's counter +1 per frame.
        var global = 0
        var counters: [UInt64] = [0, 0, 0]
        for size in [64, 512, 1420] {
            let frames = try Self.frames(emulator, count: 7, layout: Self.layout(peers: 3, innerSize: size))
            for (n, frame) in frames.enumerated() {
                let peer = global % 3
                let counter = counters[peer]
                global += 1
                counters[peer] += 1
                try Self.checkOuter(frame, emulator: emulator, responder: responder, messageLength: 16 + size + 16)
                let message = Array(frame[42...])
                let header = try #require(message.withUnsafeBytes { TransportHeader($0) })
                #expect(header.counter == counter, "size \(size) frame \(n)")
                let session = try #require(responder.session(localIndex: header.receiverIndex))
                #expect(session.peer == emulator.publicKeys[peer], "frame \(n) is peer \(peer)'s")
                let plain = try session.keypair.open(message)
                #expect(plain.count == size)   // 64, 512 and 1420 need no padding (1420 = the MTU)
                #expect(plain == Self.expectedInner(size: size, source: [10, 21, 0, UInt8(1 + peer)], peer: peer,
                                                    counter: counter), "size \(size) frame \(n)")
                let marker = plain.withUnsafeBytes { InnerPacket.marker($0) }
                #expect(marker?.peer == peer && marker?.counter == counter)
            }
        }
    }

    /// Ethernet (MACs, IPv4), IPv4 (checksum right, lengths, addresses), UDP (ports, length,
    /// checksum 0) of one frame.
    static func checkOuter(_ frame: [UInt8], emulator: PeerEmulator, responder: LoopbackResponder,
                           messageLength: Int) throws {
        #expect(frame.count == 42 + messageLength)
        #expect(Array(frame[0..<6]) == gatewayMAC.bytes && Array(frame[6..<12]) == emulatorMAC.bytes)
        #expect(frame[12] == 0x08 && frame[13] == 0x00)
        let ip = try #require(Packets.parseIPv4(Array(frame[14...])))
        #expect(ip.headerChecksumValid)
        #expect(ip.proto == 17 && ip.source == "127.0.0.1" && ip.destination == "127.0.0.1")
        #expect(Int(frame[16]) << 8 | Int(frame[17]) == 28 + messageLength)
        let port = { (o: Int) in UInt16(frame[o]) << 8 | UInt16(frame[o + 1]) }
        #expect(port(34) == emulator.local!.port && port(36) == responder.endpoint.port)
        #expect(Int(port(38)) == 8 + messageLength)
        #expect(port(40) == 0, "outer UDP checksum 0")
    }

    @Test func cryptoOffFramesCarryThePlaintextAndAZeroTag() throws {
        let (emulator, responder, socket) = try Self.established(peers: 2)
        defer { responder.stop(); socket.close() }
        // 100 bytes: padded to 112 in the message.
        let frames = try Self.frames(emulator, count: 4, layout: Self.layout(peers: 2, innerSize: 100, sealed: false))
        for (n, frame) in frames.enumerated() {
            try Self.checkOuter(frame, emulator: emulator, responder: responder, messageLength: 16 + 112 + 16)
            let message = Array(frame[42...])
            let header = try #require(message.withUnsafeBytes { TransportHeader($0) })
            #expect(header.counter == UInt64(n / 2))
            let expected = Self.expectedInner(size: 100, source: [10, 21, 0, UInt8(1 + n % 2)], peer: n % 2,
                                              counter: UInt64(n / 2))
            #expect(Array(message[16..<116]) == expected, "the plaintext where the ciphertext goes")
            #expect(message[116...].allSatisfy { $0 == 0 }, "zero padding and a zero tag")
            let session = try #require(responder.session(localIndex: header.receiverIndex))
            #expect(throws: TransportRejection.authenticationFailed) { _ = try session.keypair.open(message) }
            #expect(Array(try TransportCrypto.off.open(session.keypair, message).prefix(100)) == expected)
        }
    }

    @Test func cookieRepliesAreAnsweredWithMAC2() throws {
        let (emulator, responder, socket) = try Self.established(peers: 4, behaviour: .cookieFirst)
        defer { responder.stop(); socket.close() }
        #expect(emulator.establishedCount == 4)
        #expect(responder.cookieRepliesSent == 4)
        #expect(responder.acceptedWithMAC2 == 4, "every peer came back with a valid mac2")
        let frames = try Self.frames(emulator, count: 4, layout: Self.layout(peers: 4, innerSize: 64))
        for frame in frames {
            let message = Array(frame[42...])
            let header = try #require(message.withUnsafeBytes { TransportHeader($0) })
            #expect(try responder.session(localIndex: header.receiverIndex)?.keypair.open(message).count == 64)
        }
    }

    @Test func lostInitiationsAreSentAgain() throws {
        let emulator = try PeerEmulator(peerCount: 3)
        let responder = try LoopbackResponder(peers: emulator.publicKeys, behaviour: .dropFirst)
        defer { responder.stop() }
        let socket = try PeerSocket(address: Self.loopback)
        let report = try emulator.handshake(over: socket, gateway: responder.endpoint,
                                            gatewayPublicKey: responder.publicKey, timeout: .seconds(10),
                                            pacing: .init(window: 8, retryAfter: .milliseconds(100)))
        #expect(emulator.establishedCount == 3)
        #expect(report.retries >= 3 && report.initiationsSent >= 6, "\(report)")
        #expect(responder.sessions.count == 3)
    }

    /// A second pass: new sessions, counters from 0 again, old keypairs gone.
    @Test func aSecondPassStartsFreshSessions() throws {
        let (emulator, responder, socket) = try Self.established(peers: 3)
        defer { responder.stop(); socket.close() }
        let layout = try Self.layout(peers: 3, innerSize: 64)
        let before = try Self.frames(emulator, count: 3, layout: layout)
        try emulator.handshake(over: socket, gateway: responder.endpoint, gatewayPublicKey: responder.publicKey,
                               timeout: .seconds(10))
        #expect(responder.sessions.count == 6)
        let after = try Self.frames(emulator, count: 3, layout: layout)
        for (old, new) in zip(before, after) {
            let h0 = try #require(old.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...])) })
            let h1 = try #require(new.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...])) })
            #expect(h1.counter == 0 && h0.receiverIndex != h1.receiverIndex)
            #expect(try responder.session(localIndex: h1.receiverIndex)?.keypair.open(Array(new[42...])).count == 64)
        }
    }

    @Test func anUnansweredHandshakeSaysHowManyCompletedAndWhy() throws {
        let emulator = try PeerEmulator(peerCount: 3)
        let responder = try LoopbackResponder(peers: emulator.publicKeys, behaviour: .silent)
        defer { responder.stop() }
        let socket = try PeerSocket(address: Self.loopback)
        let error = #expect(throws: PeerEmulatorError.self) {
            try emulator.handshake(over: socket, gateway: responder.endpoint, gatewayPublicKey: responder.publicKey,
                                   timeout: .milliseconds(400), pacing: .init(retryAfter: .milliseconds(100)))
        }
        let text = error?.description ?? ""
        #expect(text.contains("0 of 3 peers completed"), "\(text)")
        #expect(text.contains("3 peer(s): no answer"), "\(text)")
        #expect(emulator.establishedCount == 0)
        #expect(throws: PeerEmulatorError.self) { try Self.frames(emulator, count: 1, layout: Self.layout(peers: 3, innerSize: 64)) }
    }

    // MARK: Bad input, the way back

    @Test func badInputGetsClearErrors() throws {
        #expect(throws: PeerEmulatorError.self) { try PeerEmulator(peerCount: 0) }
        let emulator = try PeerEmulator(peerCount: 2)
        let noHandshake = #expect(throws: PeerEmulatorError.self) {
            try Self.frames(emulator, count: 1, layout: Self.layout(peers: 2, innerSize: 64))
        }
        #expect(noHandshake?.description.contains("no handshake yet") == true)
        let (ready, responder, socket) = try Self.established(peers: 2)
        defer { responder.stop(); socket.close() }
        let small = #expect(throws: PeerEmulatorError.self) {
            try Self.frames(ready, count: 1, layout: Self.layout(peers: 2, innerSize: 30))
        }
        #expect(small?.description.contains("inner size 30") == true, "\(small?.description ?? "")")
        let wrongCount = #expect(throws: PeerEmulatorError.self) {
            try Self.frames(ready, count: 1, layout: Self.layout(peers: 3, innerSize: 64))
        }
        #expect(wrongCount?.description.contains("3 inner sources for 2 peers") == true)
        let tooSmall = #expect(throws: PeerEmulatorError.self) {
            try ready.writeTransportFrames(count: 1, layout: Self.layout(peers: 2, innerSize: 1420)) { fill in
                var buffer = [UInt8](repeating: 0, count: 1000)
                _ = buffer.withUnsafeMutableBytes { fill($0) }
            }
        }
        #expect(tooSmall?.description.contains("a buffer of 1000 bytes cannot hold a frame of 1494") == true,
                "\(tooSmall?.description ?? "")")
        // A sink that refuses a length of 0 itself (as the load side's pool does): the reason is still ours.
        struct PoolError: Error {}
        let refused = #expect(throws: PeerEmulatorError.self) {
            try ready.writeTransportFrames(count: 1, layout: Self.layout(peers: 2, innerSize: 1420)) { fill in
                var buffer = [UInt8](repeating: 0, count: 1000)
                if buffer.withUnsafeMutableBytes({ fill($0) }) == 0 { throw PoolError() }
            }
        }
        #expect(refused?.description.contains("cannot hold a frame of 1494") == true, "\(refused?.description ?? "")")
        // A sink that fails on its own (a full pool, say) after two frames.
        var taken = 0
        let full = #expect(throws: PeerEmulatorError.self) {
            try ready.writeTransportFrames(count: 5, layout: Self.layout(peers: 2, innerSize: 64)) { fill in
                guard taken < 2 else { throw PoolError() }
                var buffer = [UInt8](repeating: 0, count: 2048)
                _ = buffer.withUnsafeMutableBytes { fill($0) }
                taken += 1
            }
        }
        #expect(full?.description.contains("the frame sink failed after 2 frames") == true, "\(full?.description ?? "")")
        // The frames that did not fit used no counter: peer 0 used 1 (its first frame above), peer 1 used 1.
        let next = try Self.frames(ready, count: 2, layout: Self.layout(peers: 2, innerSize: 64))
        #expect(next.map { $0.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...]))?.counter } }
                == [1, 1])
        #expect(throws: PeerEmulatorError.self) { try PeerSocket(address: IPAddress("::1")!) }
    }

    @Test func opensWhatTheGatewaySentAndRefusesAReplay() throws {
        let (emulator, responder, socket) = try Self.established(peers: 3)
        defer { responder.stop(); socket.close() }
        let inner = Packets.udp(source: "10.20.0.1", sourcePort: 5555, destination: "10.21.0.3", destinationPort: 9,
                                payload: Array(repeating: 0x5a, count: 200))
        let session = try #require(responder.sessions.first { $0.peer == emulator.publicKeys[2] })
        for crypto in [TransportCrypto.on, .off] {
            let message = try crypto.seal(session.keypair, inner)
            var plain = [UInt8](repeating: 0, count: 2048)
            let (peer, length) = try message.withUnsafeBytes { m in
                try plain.withUnsafeMutableBytes { try emulator.open(m, into: $0, crypto: crypto) }
            }
            #expect(peer == 2 && length == 240)   // 228 padded to 240
            #expect(Array(plain.prefix(inner.count)) == inner)
            let replay = #expect(throws: PeerEmulatorError.self) {
                try message.withUnsafeBytes { m in try plain.withUnsafeMutableBytes { _ = try emulator.open(m, into: $0, crypto: crypto) } }
            }
            #expect(replay?.description.contains("replayed") == true, "\(replay?.description ?? "")")
        }
        // As a whole frame, too.
        let message = try session.keypair.seal(inner)
        let template = OuterHeaderTemplate(sourceMAC: Self.gatewayMAC, destinationMAC: Self.emulatorMAC, vlanTCI: 0,
                                           source: Self.loopback, sourcePort: responder.endpoint.port,
                                           destination: Self.loopback, destinationPort: socket.local.port)
        var frame = [UInt8](repeating: 0, count: template.length + message.count)
        frame.withUnsafeMutableBytes { f in
            message.withUnsafeBytes { (f.baseAddress! + template.length).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            template.write(to: f.baseAddress!, payloadLength: message.count)
        }
        var plain = [UInt8](repeating: 0, count: 2048)
        let opened = try frame.withUnsafeBytes { f in try plain.withUnsafeMutableBytes { try emulator.open(frame: f, into: $0) } }
        #expect(opened.peer == 2 && Array(plain.prefix(inner.count)) == inner)
        let foreign = [UInt8](repeating: 4, count: 1) + [0, 0, 0, 1, 2, 3, 4] + [UInt8](repeating: 0, count: 40)
        let unknown = #expect(throws: PeerEmulatorError.self) {
            try foreign.withUnsafeBytes { m in try plain.withUnsafeMutableBytes { _ = try emulator.open(m, into: $0) } }
        }
        #expect(unknown?.description.contains("none of this pass's peers") == true, "\(unknown?.description ?? "")")
    }

    @Test func keepalivesUseCounterZero() throws {
        let (emulator, responder, socket) = try Self.established(peers: 3)
        defer { responder.stop(); socket.close() }
        try emulator.sendKeepalives(over: socket)
        #expect(responder.waitForKeepalives(3, timeout: 5), "keepalives received: \(responder.keepalives)")
        let frames = try Self.frames(emulator, count: 3, layout: Self.layout(peers: 3, innerSize: 64))
        #expect(frames.map { $0.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...]))?.counter } }
                == [1, 1, 1])
    }

    /// Speed is measured, not asserted: this prints what preparing 1420 B frames costs here.
    @Test func preparingFramesIsCheap() throws {
        let (emulator, responder, socket) = try Self.established(peers: 100)
        defer { responder.stop(); socket.close() }
        let count = 20_000
        let region = UnsafeMutableRawBufferPointer.allocate(byteCount: count * 2048, alignment: 4096)
        defer { region.deallocate() }
        region.initializeMemory(as: UInt8.self, repeating: 0)   // fault the pages in before timing
        for sealed in [true, false] {
            var next = 0
            let start = Engine.Clock.now()
            let written = try emulator.writeTransportFrames(count: count, layout: Self.layout(peers: 100, innerSize: 1420,
                                                                                              sealed: sealed)) { fill in
                _ = fill(UnsafeMutableRawBufferPointer(rebasing: region[(next * 2048)..<((next + 1) * 2048)]))
                next += 1
            }
            let seconds = Double(Engine.Clock.now().since(start).nanoseconds) / 1e9
            #expect(written == WrittenFrames(count: count, frameLength: 1494, messageLength: 1452))
            print("PeerEmulator: \(count) frames of 1420 B (\(sealed ? "sealed" : "crypto-off")) in "
                  + "\(Int(seconds * 1000)) ms: \(Int(Double(count) / seconds / 1000)) k frames/s "
                  + "(\(_isDebugAssertConfiguration() ? "debug" : "release") build)")
        }
    }
}

// MARK: - The responder

/// The gateway's side of the handshake, built on the protocol core, on a loopback UDP socket
/// with a thread of its own. `cookieFirst` answers each peer's first initiation with a cookie
/// reply (as a gateway under load) and then wants a valid mac2; `dropFirst` ignores each
/// peer's first initiation; `silent` never answers.
final class LoopbackResponder: @unchecked Sendable {
    enum Behaviour { case answer, cookieFirst, dropFirst, silent }

    struct Session {
        let peer: PublicKey
        let keypair: Keypair
    }

    let publicKey: PublicKey
    let endpoint: Endpoint
    private let identity: StaticIdentity
    private let behaviour: Behaviour
    private let socket: Int32
    private var cookies: CookieChecker
    private var handshakes: [PublicKey: PeerHandshake] = [:]
    private var seen: Set<PublicKey> = []
    private let lock = NSLock()
    private var _sessions: [UInt32: Session] = [:]
    private var _cookieRepliesSent = 0, _acceptedWithMAC2 = 0, _keepalives = 0
    private var running = true
    private let done = DispatchSemaphore(value: 0)

    init(peers: [PublicKey], presharedKey: PresharedKey? = nil, behaviour: Behaviour) throws {
        identity = StaticIdentity(privateKey: .generate())
        publicKey = identity.publicKey
        self.behaviour = behaviour
        cookies = CookieChecker(identity: identity)
        for key in peers {
            handshakes[key] = PeerHandshake(identity: identity, remoteStatic: key, presharedKey: presharedKey ?? .none)
        }
        let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        socket = fd
        endpoint = Endpoint(address: PeerEmulatorTests.loopback, port: UInt16(bigEndian: sa.sin_port))
        Thread { [self] in run() }.start()
    }

    var sessions: [Session] { lock.lock(); defer { lock.unlock() }; return Array(_sessions.values) }
    func session(localIndex: UInt32) -> Session? { lock.lock(); defer { lock.unlock() }; return _sessions[localIndex] }
    var cookieRepliesSent: Int { lock.lock(); defer { lock.unlock() }; return _cookieRepliesSent }
    var acceptedWithMAC2: Int { lock.lock(); defer { lock.unlock() }; return _acceptedWithMAC2 }
    var keepalives: Int { lock.lock(); defer { lock.unlock() }; return _keepalives }

    func waitForKeepalives(_ n: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while keepalives < n && Date() < deadline { usleep(10_000) }
        return keepalives >= n
    }

    func stop() {
        lock.lock()
        let was = running
        running = false
        lock.unlock()
        if was { done.wait(); close(socket) }
    }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            lock.lock(); let keepGoing = running; lock.unlock()
            guard keepGoing else { break }
            var pfd = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 10) > 0 else { continue }
            var from = sockaddr_in()
            var fromLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(socket, b.baseAddress, b.count, 0, $0, &fromLength) }
                }
            }
            guard n > 0 else { continue }
            let datagram = Array(buffer.prefix(n))
            if datagram[0] == 4 {
                if let header = datagram.withUnsafeBytes({ TransportHeader($0) }), let s = session(localIndex: header.receiverIndex),
                   (try? s.keypair.open(datagram))?.isEmpty == true {
                    lock.lock(); _keepalives += 1; lock.unlock()
                }
                continue
            }
            guard datagram[0] == 1, behaviour != .silent, let reply = answer(datagram, from: from) else { continue }
            _ = reply.withUnsafeBytes { r in
                withUnsafePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(socket, r.baseAddress, r.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
        }
        done.signal()
    }

    /// The response (or cookie reply) to one initiation, or nil to stay silent.
    private func answer(_ datagram: [UInt8], from: sockaddr_in) -> [UInt8]? {
        let now = Engine.Clock.now()
        return datagram.withUnsafeBytes { bytes -> [UInt8]? in
            guard let message = try? InitiationMessage(bytes) else { return nil }
            let source = SourceAddress(ipv4: UInt32(bigEndian: from.sin_addr.s_addr))
            let port = UInt16(bigEndian: from.sin_port)
            var withMAC2 = false
            if behaviour == .cookieFirst {
                switch cookies.evaluate(message, source: source, port: port, underLoad: true, now: now) {
                case .sendCookieReply:
                    lock.lock(); _cookieRepliesSent += 1; lock.unlock()
                    return cookies.createCookieReply(to: message, source: source, port: port, now: now)
                case .processIfRateLimiterAllows: withMAC2 = true
                default: return nil
                }
            }
            guard let peer = try? identity.consumeInitiation(message, now: now, lookup: { handshakes[$0] }) else { return nil }
            if behaviour == .dropFirst && !seen.contains(peer.remoteStatic) {
                seen.insert(peer.remoteStatic)
                peer.reset()
                return nil
            }
            var index: UInt32 = 0
            withUnsafeMutableBytes(of: &index) { systemRandomBytes($0) }
            guard let (response, keys) = try? peer.createResponse(ephemeral: .generate(), localIndex: index, now: now)
            else { return nil }
            var k = keys
            lock.lock()
            _sessions[index] = Session(peer: peer.remoteStatic, keypair: Keypair(consuming: &k))
            if withMAC2 { _acceptedWithMAC2 += 1 }
            lock.unlock()
            return response
        }
    }
}

extension Keypair {
    /// Opens a whole transport message into a new array (padded plaintext).
    func open(_ message: [UInt8]) throws -> [UInt8] { try TransportCrypto.on.open(self, message) }

    /// Seals `packet` into a new transport message.
    func seal(_ packet: [UInt8]) throws -> [UInt8] { try TransportCrypto.on.seal(self, packet) }
}

extension TransportCrypto {
    /// Opens a whole transport message with `keypair` into a new array (padded plaintext).
    func open(_ keypair: Keypair, _ message: [UInt8]) throws -> [UInt8] {
        var plain = [UInt8](repeating: 0, count: message.count)
        let n = try message.withUnsafeBytes { m in
            try plain.withUnsafeMutableBytes { p in
                try open(keypair, m.baseAddress!, length: m.count, into: p.baseAddress!, capacity: p.count,
                         now: Engine.Clock.now(), cipher: TransportCipher())
            }
        }
        return Array(plain.prefix(n))
    }

    /// Seals `packet` with `keypair` into a new transport message.
    func seal(_ keypair: Keypair, _ packet: [UInt8]) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: packet.count + 64)
        let n = try packet.withUnsafeBytes { p in
            try out.withUnsafeMutableBytes { o in
                try seal(keypair, p.baseAddress!, length: p.count, into: o.baseAddress!, capacity: o.count,
                         now: Engine.Clock.now(), cipher: TransportCipher()).length
            }
        }
        return Array(out.prefix(n))
    }
}
