import Testing
@testable import WireGuard

/// Two peers in memory: every message crosses a simulated wire, time is driven by hand.
@Suite struct TunnelTests {
    /// One side: a tunnel, its output buffer, and what it produced.
    final class Side {
        let tunnel: Tunnel
        var buffer = [UInt8](repeating: 0, count: 2048)
        var delivered: [[UInt8]] = []
        var drops: [Tunnel.DropReason] = []
        var underLoad = false

        init(_ tunnel: Tunnel) { self.tunnel = tunnel }

        /// Collects one output: network datagrams are returned, the rest recorded.
        private func collect(_ o: Tunnel.Output) -> [UInt8]? {
            switch o {
            case .done: return nil
            case .writeToNetwork(let n): return Array(buffer[0..<n])
            case .writeToTunnel(let n): delivered.append(Array(buffer[0..<n])); return nil
            case .dropped(let r): drops.append(r); return nil
            }
        }

        /// Runs `first`, then polls until done; returns the datagrams to send.
        private func drain(_ clock: Instant, _ first: (UnsafeMutableRawBufferPointer) -> Tunnel.Output) -> [[UInt8]] {
            var out: [[UInt8]] = []
            if let d = collect(buffer.withUnsafeMutableBytes(first)) { out.append(d) }
            while true {
                let o = buffer.withUnsafeMutableBytes { tunnel.poll(now: clock, wallClock: TunnelTests.wall(clock), into: $0) }
                if o == .done { break }
                if let d = collect(o) { out.append(d) }
            }
            return out
        }

        func send(_ packet: [UInt8], at clock: Instant) -> [[UInt8]] {
            drain(clock) { out in packet.withUnsafeBytes { tunnel.encapsulate($0, into: out, now: clock, wallClock: TunnelTests.wall(clock)) } }
        }

        func receive(_ datagram: [UInt8], at clock: Instant) -> [[UInt8]] {
            drain(clock) { out in
                datagram.withUnsafeBytes {
                    tunnel.decapsulate($0, into: out, now: clock, wallClock: TunnelTests.wall(clock),
                                       source: SourceAddress(ipv4: 0xc000_0201), port: 51820, underLoad: underLoad)
                }
            }
        }

        func poll(at clock: Instant) -> [[UInt8]] { drain(clock) { _ in .done } }
    }

    /// The wall clock follows the monotonic one from a fixed start, so timestamps increase.
    static func wall(_ clock: Instant) -> TAI64N {
        TAI64N(secondsSinceEpoch: 1_700_000_000 + clock.nanoseconds / 1_000_000_000,
               nanoseconds: UInt32(clock.nanoseconds % 1_000_000_000))
    }

    let a: Side
    let b: Side
    var now = Instant(nanoseconds: 1_000_000_000)

    init(presharedKey: Bool = false, keepaliveA: Duration = .zero) {
        let rng = SeededRandom(seed: 42)
        let keyA = PrivateKey.generate(), keyB = PrivateKey.generate()
        var psk = Key32()
        if presharedKey { psk.withUnsafeMutableBytes { rng.fill($0) } }
        var psk2 = psk
        a = Side(Tunnel(identity: StaticIdentity(privateKey: keyA), peer: keyB.publicKey,
                        presharedKey: PresharedKey(consuming: &psk), persistentKeepalive: keepaliveA,
                        random: { rng.fill($0) }))
        b = Side(Tunnel(identity: StaticIdentity(privateKey: keyB), peer: keyA.publicKey,
                        presharedKey: PresharedKey(consuming: &psk2), random: { rng.fill($0) }))
    }

    init() { self.init(presharedKey: false) }

    /// An IPv4 packet of `size` bytes (header with a correct total length, then a pattern).
    static func packet(_ size: Int, tag: UInt8 = 0) -> [UInt8] {
        var p = [UInt8](repeating: tag, count: size)
        p[0] = 0x45
        p[2] = UInt8(size >> 8); p[3] = UInt8(size & 0xff)
        p[9] = 17
        return p
    }

    /// Delivers datagrams back and forth until both sides are quiet; returns how many crossed.
    @discardableResult
    func exchange(from: Side, _ datagrams: [[UInt8]]) -> Int {
        var queue = datagrams.map { (from === a ? b : a, $0) }
        var crossed = 0
        while !queue.isEmpty {
            let (to, d) = queue.removeFirst()
            crossed += 1
            let replies = to.receive(d, at: now)
            queue += replies.map { (to === a ? b : a, $0) }
        }
        return crossed
    }

    /// Lets time pass a second at a time, with both sides' timers polled and whatever they
    /// send delivered, as a running pair of peers would.
    mutating func advance(seconds: Int) {
        for _ in 0..<seconds {
            now = now + .seconds(1)
            exchange(from: a, a.poll(at: now))
            exchange(from: b, b.poll(at: now))
        }
    }

    // MARK: Handshake and data

    @Test(arguments: [false, true])
    func initiatorSendsFirstPacketThroughAHandshake(psk: Bool) {
        let t = TunnelTests(presharedKey: psk)
        let p = Self.packet(100, tag: 7)
        let out = t.a.send(p, at: t.now)
        #expect(out.count == 1 && out[0].count == WireGuardProtocol.initiationSize)
        #expect(t.a.tunnel.stagedCount == 1)
        t.exchange(from: t.a, out)
        #expect(t.b.delivered == [p], "the staged packet arrives once the session exists")
        #expect(t.a.tunnel.stagedCount == 0)
        #expect(t.a.drops.isEmpty && t.b.drops.isEmpty)
        // And back: the responder may send now that the initiator's data confirmed the keypair.
        let reply = Self.packet(60, tag: 9)
        let back = t.b.send(reply, at: t.now)
        #expect(back.count == 1 && back[0].count == 16 + 64 + 16)
        t.exchange(from: t.b, back)
        #expect(t.a.delivered == [reply])
    }

    @Test func responderInitiatesToo() {
        let t = TunnelTests(presharedKey: true)
        let p = Self.packet(1420)
        t.exchange(from: t.b, t.b.send(p, at: t.now))
        #expect(t.a.delivered == [p])
        #expect(t.b.tunnel.slots.current?.isInitiator == true)
        #expect(t.a.tunnel.slots.current?.isInitiator == false)
    }

    @Test func mismatchedPresharedKeysNeverEstablish() {
        let rng = SeededRandom(seed: 7)
        let keyA = PrivateKey.generate(), keyB = PrivateKey.generate()
        var pskA = Key32(), pskB = Key32()
        pskA.withUnsafeMutableBytes { rng.fill($0) }
        pskB.withUnsafeMutableBytes { rng.fill($0) }
        let a = Side(Tunnel(identity: StaticIdentity(privateKey: keyA), peer: keyB.publicKey,
                            presharedKey: PresharedKey(consuming: &pskA), random: { rng.fill($0) }))
        let b = Side(Tunnel(identity: StaticIdentity(privateKey: keyB), peer: keyA.publicKey,
                            presharedKey: PresharedKey(consuming: &pskB), random: { rng.fill($0) }))
        let clock = Instant(nanoseconds: 1_000_000_000)
        let initiation = a.send(Self.packet(64), at: clock)
        let response = b.receive(initiation[0], at: clock)
        #expect(response.count == 1, "the PSK enters only after the responder's ephemeral")
        #expect(a.receive(response[0], at: clock).isEmpty)
        #expect(a.drops == [.handshake(.decryptionFailed)])
        #expect(b.delivered.isEmpty)
    }

    @Test func manyPacketsBothWaysInOrderAndOutOfOrder() {
        let t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        var datagrams: [[UInt8]] = []
        for i in 0..<200 { datagrams += t.a.send(Self.packet(40 + i, tag: UInt8(i & 0xff)), at: t.now) }
        #expect(datagrams.count == 200)
        // Deliver in reverse: all within the replay window, all accepted.
        for d in datagrams.reversed() { _ = t.b.receive(d, at: t.now) }
        #expect(t.b.delivered.count == 201)
        #expect(t.b.drops.isEmpty)
        // Each again: every one is a replay.
        for d in datagrams { _ = t.b.receive(d, at: t.now) }
        #expect(t.b.drops.count == 200)
        #expect(t.b.drops.allSatisfy { $0 == .transport(.replayed) })
    }

    // MARK: Rekey

    @Test func rekeyAfterTimeKeepsTrafficFlowing() {
        var t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        let first = t.a.tunnel.slots.current
        t.advance(seconds: 119)
        #expect(t.a.tunnel.slots.current === first, "idle but kept alive: no handshake before 120 s")
        let early = t.a.send(Self.packet(40), at: t.now)
        #expect(early.count == 1, "before 120 s: data only")
        t.exchange(from: t.a, early)
        t.advance(seconds: 1)
        let out = t.a.send(Self.packet(41), at: t.now)
        #expect(out.count == 2, "the data packet, then a new initiation")
        #expect(out[1].count == WireGuardProtocol.initiationSize)
        t.exchange(from: t.a, out)
        #expect(t.a.tunnel.slots.current !== first)
        #expect(t.a.tunnel.slots.previous === first)
        t.exchange(from: t.b, t.b.send(Self.packet(50), at: t.now))
        #expect(t.a.delivered.last == Self.packet(50))
        #expect(t.a.drops.isEmpty && t.b.drops.isEmpty)
    }

    @Test func rekeyAfterMessages() {
        var t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        t.advance(seconds: 6)   // past REKEY_TIMEOUT since the first initiation
        let first = t.a.tunnel.slots.current!
        first.setMessagesSent(WireGuardProtocol.rekeyAfterMessages)
        let out = t.a.send(Self.packet(40), at: t.now)
        #expect(out.count == 2, "past REKEY_AFTER_MESSAGES a send also initiates")
        t.exchange(from: t.a, out)
        #expect(t.a.tunnel.slots.current !== first)
    }

    @Test func rejectAfterTimeStagesAndRenegotiates() {
        var t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        // B (responder) never rekeys by time; after 180 s it must not send with the old keypair.
        t.now = t.now + .seconds(181)
        let out = t.b.send(Self.packet(77), at: t.now)
        #expect(t.b.tunnel.stagedCount == 1, "the packet waits for the new session")
        #expect(out.count == 1 && out[0].count == WireGuardProtocol.initiationSize)
        t.exchange(from: t.b, out)
        #expect(t.a.delivered.last == Self.packet(77))
    }

    // MARK: Timers

    @Test func keepaliveAfterTenSecondsOfOneWayTraffic() {
        var t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        t.now = t.now + .seconds(9)
        #expect(t.b.poll(at: t.now).isEmpty)
        t.now = t.now + .seconds(1)
        let ka = t.b.poll(at: t.now)
        #expect(ka.count == 1 && ka[0].count == WireGuardProtocol.keepaliveSize)
        t.exchange(from: t.b, ka)
        #expect(t.a.drops.isEmpty)
        #expect(t.a.delivered.isEmpty, "a keepalive delivers nothing")
    }

    @Test func persistentKeepalive() {
        var t = TunnelTests(presharedKey: false, keepaliveA: .seconds(25))
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        t.exchange(from: t.b, t.b.send(Self.packet(40), at: t.now))
        t.now = t.now + .seconds(25)
        let out = t.a.poll(at: t.now)
        #expect(out.contains { $0.count == WireGuardProtocol.keepaliveSize })
    }

    @Test func retransmitsInitiationThenGivesUpAndDropsStaged() {
        var t = TunnelTests()
        var initiations = t.a.send(Self.packet(40), at: t.now).count
        for _ in 0..<(25 * 10) {
            t.now = t.now + .milliseconds(500)
            initiations += t.a.poll(at: t.now).filter { $0.count == WireGuardProtocol.initiationSize }.count
        }
        #expect(initiations == 20, "1 + 19 retransmissions, as the kernel")
        #expect(t.a.tunnel.stagedCount == 0, "staged packets are dropped on giving up")
    }

    @Test func keysWipedAfter540Seconds() {
        var t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        #expect(t.a.tunnel.slots.current != nil)
        t.now = t.now + .seconds(541)
        _ = t.a.poll(at: t.now)
        #expect(t.a.tunnel.slots.current == nil && t.a.tunnel.slots.previous == nil && t.a.tunnel.slots.next == nil)
    }

    // MARK: Cookies under load

    @Test func cookieRoundTripUnderLoad() {
        var t = TunnelTests()
        t.b.underLoad = true
        let initiation = t.a.send(Self.packet(40), at: t.now)
        let reply = t.b.receive(initiation[0], at: t.now)
        #expect(reply.count == 1 && reply[0].count == WireGuardProtocol.cookieReplySize)
        #expect(t.a.receive(reply[0], at: t.now).isEmpty)
        #expect(t.a.drops.isEmpty)
        // The retransmission after 5 s carries mac2 and is accepted under load.
        t.now = t.now + .seconds(6)
        let retry = t.a.poll(at: t.now)
        #expect(retry.count == 1 && retry[0].count == WireGuardProtocol.initiationSize)
        #expect(retry[0][132..<148].contains { $0 != 0 }, "mac2 is set")
        t.exchange(from: t.a, retry)
        #expect(t.b.delivered == [Self.packet(40)])
    }

    // MARK: Rejections

    @Test func rejectsGarbageAndForgeries() {
        let t = TunnelTests()
        t.exchange(from: t.a, t.a.send(Self.packet(40), at: t.now))
        let data = t.a.send(Self.packet(40), at: t.now)[0]
        var unknownIndex = data
        unknownIndex[4] ^= 0xff
        var tampered = data
        tampered[20] ^= 1
        let garbage: [[UInt8]] = [[], [4], [9, 0, 0, 0, 1, 2, 3], [4, 1, 0, 0] + [UInt8](repeating: 0, count: 40),
                                  Array(data[0..<31]), unknownIndex, tampered,
                                  [1, 0, 0, 0] + [UInt8](repeating: 0, count: 144)]
        for g in garbage { #expect(t.b.receive(g, at: t.now).isEmpty) }
        #expect(t.b.drops.count == garbage.count)
        #expect(t.b.drops.contains(.unknownReceiverIndex))
        #expect(t.b.drops.contains(.transport(.authenticationFailed)))
        #expect(t.b.drops.contains(.handshake(.invalidMAC1)))
        #expect(t.b.delivered.count == 1, "only the first, genuine packet")
    }

    @Test func replayedInitiationIsRejected() {
        var t = TunnelTests()
        let initiation = t.a.send(Self.packet(40), at: t.now)[0]
        #expect(t.b.receive(initiation, at: t.now).count == 1)
        t.now = t.now + .seconds(1)
        #expect(t.b.receive(initiation, at: t.now).isEmpty)
        #expect(t.b.drops == [.handshake(.replayedTimestamp)])
    }

    @Test func innerPacketLengthIsValidated() {
        let bad: [[UInt8]] = [[], [0x45], [0x60] + [UInt8](repeating: 0, count: 10),
                              [0x45, 0, 0, 10] + [UInt8](repeating: 0, count: 16),   // total < header
                              [0x45, 0, 0x05, 0xdc] + [UInt8](repeating: 0, count: 60), // total > plaintext
                              [0x20] + [UInt8](repeating: 0, count: 63)]
        for b in bad { #expect(b.withUnsafeBytes { InnerPacket($0) } == nil) }
        var v6 = [UInt8](repeating: 0, count: 64)
        v6[0] = 0x60; v6[5] = 8
        #expect(v6.withUnsafeBytes { InnerPacket($0)?.length } == 48)
    }
}
