import Testing
@testable import Engine
import WireGuard

/// The per-packet pipeline in memory: frames built here, decrypted and encrypted by
/// `PacketProcessor`, checked against the core's keypairs on the other side.
@Suite struct PipelineTests {
    static let gatewayIndex: UInt32 = 0x0000_0005    // slot 5 of the keypair table
    static let peerIndex: UInt32 = 0x7777_0001
    static let uplinkMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0, 0x01])!
    static let nextHopMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0, 0x02])!
    static let hostMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0, 0x11])!
    static let innerMAC = EthernetAddress(bytes: [0x02, 0, 0, 0, 0, 0x12])!

    /// A gateway with two tenants (ports 51820 and 51821, the same address ranges), one peer
    /// each (handles 0 and 1), and a session for peer 0: `gateway` is our side, `peer` theirs.
    /// The processor's cipher runs `backend`; the peer's side always uses libsodium.
    struct Fixture: ~Copyable {
        let state: DataPlaneState
        let counters = WorkerCounters.allocate()
        let control = ControlQueue(capacity: 8)
        var processor: PacketProcessor
        let gateway: Keypair
        let peer: Keypair

        init(publishSending: Bool = true, publishRoute: Bool = true, crypto: TransportCrypto = .on,
             backend: AEADBackend = .libsodium) {
            var routes: [TenantRoute] = []
            for (i, port) in [UInt16(51820), 51821].enumerated() {
                var table = AllowedIPs()
                table.insert(IPPrefix("10.10.1.0/24")!, peer: UInt32(i))
                table.insert(IPPrefix("fd00:a::/64")!, peer: UInt32(i))
                routes.append(TenantRoute(listenPort: port, allowedIPs: table, hostMAC: PipelineTests.hostMAC,
                                          innerMAC: PipelineTests.innerMAC, mtu: 1420))
            }
            state = DataPlaneState(tenants: routes, peerCapacity: 2, keypairCapacity: 64, workerCount: 1)
            let k1 = Key32(bytes: [UInt8](repeating: 1, count: 32))!, k2 = Key32(bytes: [UInt8](repeating: 2, count: 32))!
            var ours = SessionKeys(sendKey: k1, receiveKey: k2, localIndex: PipelineTests.gatewayIndex,
                                   remoteIndex: PipelineTests.peerIndex, isInitiator: false, createdAt: .zero)
            var theirs = SessionKeys(sendKey: k2, receiveKey: k1, localIndex: PipelineTests.peerIndex,
                                     remoteIndex: PipelineTests.gatewayIndex, isInitiator: true, createdAt: .zero)
            gateway = Keypair(consuming: &ours)
            peer = Keypair(consuming: &theirs)
            let entry = KeypairEntry.make(gateway, peer: 0, tenant: 0)
            state.keypairs.publish(entry)
            if publishSending { state.peers.setSending(0, entry) }
            if publishRoute {
                _ = state.peers.setRoute(0, PipelineTests.template(endpointKey: 0))
            }
            processor = PacketProcessor(state: state, counters: counters, control: control, workerIndex: 0,
                                        crypto: crypto, cipher: try! TransportCipher(backend))
        }
    }

    static func template(endpointKey: UInt64) -> OuterHeaderTemplate {
        OuterHeaderTemplate(sourceMAC: uplinkMAC, destinationMAC: nextHopMAC, vlanTCI: 0,
                            source: IPAddress("192.0.2.2")!, sourcePort: 51820,
                            destination: IPAddress("192.0.2.1")!, destinationPort: 40000, endpointKey: endpointKey)
    }

    /// An IPv4/UDP inner packet from `source` to `destination` with `payload` bytes.
    static func innerPacket(source: String, destination: String, payload: Int = 100) -> [UInt8] {
        let total = 28 + payload
        var p = [UInt8](repeating: 0, count: total)
        p[0] = 0x45; p[2] = UInt8(total >> 8); p[3] = UInt8(total & 0xff); p[8] = 64; p[9] = 17
        p.replaceSubrange(12..<16, with: IPAddress(source)!.bytes)
        p.replaceSubrange(16..<20, with: IPAddress(destination)!.bytes)
        for i in 0..<payload { p[28 + i] = UInt8(truncatingIfNeeded: i &* 7) }
        return p
    }

    /// The peer's transport message for `inner`, inside Ethernet/IPv4/UDP to `port`.
    static func uplinkFrame(_ peer: Keypair, inner: [UInt8], port: UInt16 = 51820,
                            crypto: TransportCrypto = .on) -> [UInt8] {
        let t = OuterHeaderTemplate(sourceMAC: nextHopMAC, destinationMAC: uplinkMAC, vlanTCI: 0,
                                    source: IPAddress("192.0.2.1")!, sourcePort: 40000,
                                    destination: IPAddress("192.0.2.2")!, destinationPort: port)
        var frame = [UInt8](repeating: 0, count: 2048)
        let length = frame.withUnsafeMutableBytes { f -> Int in
            let sealed = inner.withUnsafeBytes { src in
                try! crypto.seal(peer, src.baseAddress!, length: src.count, into: f.baseAddress! + t.length,
                                 capacity: 2048 - t.length, now: .zero, cipher: TransportCipher())
            }
            t.write(to: f.baseAddress!, payloadLength: sealed.length)
            return t.length + sealed.length
        }
        return Array(frame.prefix(length))
    }

    static func run(_ fixture: inout Fixture, _ frame: [UInt8]) -> (PacketProcessor.DecryptResult, [UInt8]) {
        var input = frame
        var out = [UInt8](repeating: 0, count: 2048)
        let r = input.withUnsafeMutableBytes { i in
            out.withUnsafeMutableBytes { o in
                fixture.processor.decrypt(i.baseAddress!, length: i.count, into: o.baseAddress!, tenantCapacity: 2048,
                                          now: .zero)
            }
        }
        return (r, out)
    }

    @Test(arguments: AEADBackend.allCases) func decryptsIntoTheTenantFrameWithAnEthernetHeader(backend: AEADBackend) {
        var f = Fixture(backend: backend)
        let inner = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1")
        let (result, out) = Self.run(&f, Self.uplinkFrame(f.peer, inner: inner))
        #expect(result == .deliver(tenant: 0, length: 14 + inner.count))
        #expect(Array(out[0..<6]) == [0x02, 0, 0, 0, 0, 0x12])       // to the namespace end
        #expect(Array(out[6..<12]) == [0x02, 0, 0, 0, 0, 0x11])      // from the host end
        #expect(out[12] == 0x08 && out[13] == 0x00)
        #expect(Array(out[14..<(14 + inner.count)]) == inner)
        #expect(f.counters.value(.decrypted) == 1)
        let activity = f.state.peers.activity(0)
        #expect(activity.rxPackets == 1)
    }

    @Test func replayedMessageIsDroppedAndCounted() {
        var f = Fixture()
        let frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        #expect(Self.run(&f, frame).0 == .deliver(tenant: 0, length: 14 + 128))
        #expect(Self.run(&f, frame).0 == .dropped(.replayed))
    }

    @Test func innerSourceOutsideThePeersAllowedIPsIsDropped() {
        var f = Fixture()
        let spoofed = Self.innerPacket(source: "10.10.9.9", destination: "10.10.0.1")
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: spoofed)).0 == .dropped(.innerSourceNotAllowed))
    }

    @Test func aReceiverIndexOfAnotherTenantIsUnknownOnThisPort() {
        var f = Fixture()
        // Tenant 0's session, sent to tenant 1's port: tenants never share receiver indices.
        let frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"),
                                     port: 51821)
        #expect(Self.run(&f, frame).0 == .dropped(.unknownReceiver))
    }

    @Test(arguments: AEADBackend.allCases) func forgedMessageFailsAuthentication(backend: AEADBackend) {
        var f = Fixture(backend: backend)
        var frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        frame[frame.count - 1] ^= 1
        #expect(Self.run(&f, frame).0 == .dropped(.authenticationFailed))
    }

    @Test func truncatedAndUnknownFramesAreDroppedByName() {
        var f = Fixture()
        let frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        #expect(Self.run(&f, Array(frame.prefix(30))).0 == .dropped(.outerMalformed))
        var junk = frame
        junk[42] = 9   // message type 9
        #expect(Self.run(&f, junk).0 == .dropped(.messageMalformed))
    }

    @Test func handshakeMessagesGoToTheControlQueueWithTheirOrigin() {
        var f = Fixture()
        var frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        frame[42] = 1   // pretend initiation: the worker only forwards it
        #expect(Self.run(&f, frame).0 == .consumed)
        let pending = f.processor.controlPending     // read first: #expect copies what it inspects
        #expect(pending)
        var seen = 0
        f.control.drain { header, payload in
            seen += 1
            #expect(header.pointee.kind == .handshake)
            #expect(header.pointee.tenant == 0)
            #expect(header.pointee.sourceAddress == IPAddress("192.0.2.1")!)
            #expect(header.pointee.destinationAddress == IPAddress("192.0.2.2")!)
            #expect(header.pointee.sourcePort == 40000)
            #expect(header.pointee.sourceMAC == PipelineTests.nextHopMAC)
            #expect(payload.first == 1)
            #expect(payload.count == frame.count - 42)
        }
        #expect(seen == 1)
    }

    /// A flood of initiations fills the control queue (8 slots) to three quarters only: the
    /// rest stays for responses and cookie replies, which still fill it to the last slot.
    @Test func initiationsLeaveRoomInTheControlQueueForResponses() {
        var f = Fixture()
        var frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        frame[42] = 1
        let initiations = (0..<10).map { _ in Self.run(&f, frame).0 }
        #expect(initiations.filter { $0 == .consumed }.count == 6)
        #expect(initiations.filter { $0 == .dropped(.controlQueueFull) }.count == 4)
        var replies: [PacketProcessor.DecryptResult] = []
        for type: UInt8 in [2, 3, 2] {
            frame[42] = type
            replies.append(Self.run(&f, frame).0)
        }
        #expect(replies == [.consumed, .consumed, .dropped(.controlQueueFull)])
        var types: [UInt8] = []
        f.control.drain { _, payload in types.append(payload.first ?? 0) }
        #expect(types == [1, 1, 1, 1, 1, 1, 2, 3])
    }

    @Test func aNewEndpointIsReportedOnceAndTheConfirmedKeypairOnce() {
        var f = Fixture(publishSending: false)
        for _ in 0..<3 {
            let frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
            _ = Self.run(&f, frame)
        }
        var kinds: [ControlMessageKind] = []
        f.control.drain { header, _ in kinds.append(header.pointee.kind) }
        #expect(kinds.sorted { $0.rawValue < $1.rawValue } == [.keypairConfirmed, .endpointChanged])
    }

    /// Encrypts a tenant frame for peer 0, then opens it with the peer's keypair.
    @Test(arguments: AEADBackend.allCases) func encryptsTenantFramesBehindTheOuterHeader(backend: AEADBackend) throws {
        var f = Fixture(backend: backend)
        let inner = Self.innerPacket(source: "10.10.0.1", destination: "10.10.1.2", payload: 1000)
        var tenantFrame = [UInt8](repeating: 0, count: 14) + inner
        tenantFrame[12] = 0x08
        var out = [UInt8](repeating: 0, count: 2048)
        let result = tenantFrame.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { o in
                f.processor.encrypt(tenant: 0, frame: i.baseAddress!, length: i.count, into: o.baseAddress!,
                                    uplinkCapacity: 2048, now: .zero)
            }
        }
        guard case .send(let length) = result else { Issue.record("not sent: \(result)"); return }
        let parsed = try #require(out.withUnsafeBytes { OuterFrame.parse($0.baseAddress!, length: length) })
        #expect(parsed.destinationPort == 40000 && parsed.sourcePort == 51820)
        // The IPv4 header checksum verifies.
        #expect(out.withUnsafeBytes { Wire.ipv4HeaderChecksum($0.baseAddress! + 14) } == 0)
        var plain = [UInt8](repeating: 0, count: 2048)
        let n = try out.withUnsafeBytes { o in
            try plain.withUnsafeMutableBytes { p in
                try f.peer.open(o.baseAddress! + parsed.payloadOffset, length: parsed.payloadLength,
                                into: p.baseAddress!, capacity: 2048, now: .zero, cipher: TransportCipher())
            }
        }
        #expect(n == 1040)   // 1028 padded to 16
        #expect(Array(plain.prefix(inner.count)) == inner)
        #expect(f.counters.value(.encrypted) == 1)
    }

    @Test func withoutASessionThePacketIsStagedForTheControlPlane() {
        var f = Fixture(publishSending: false)
        let inner = Self.innerPacket(source: "10.10.0.1", destination: "10.10.1.2")
        var tenantFrame = [UInt8](repeating: 0, count: 14) + inner
        tenantFrame[12] = 0x08
        var out = [UInt8](repeating: 0, count: 2048)
        let result = tenantFrame.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { o in
                f.processor.encrypt(tenant: 0, frame: i.baseAddress!, length: i.count, into: o.baseAddress!,
                                    uplinkCapacity: 2048, now: .zero)
            }
        }
        #expect(result == .staged)
        var staged: [[UInt8]] = []
        f.control.drain { header, payload in
            #expect(header.pointee.kind == .stagedPacket && header.pointee.peer == 0)
            staged.append(Array(payload))
        }
        #expect(staged == [inner])
    }

    @Test func destinationsOutsideEveryAllowedIPAreDropped() {
        var f = Fixture()
        var tenantFrame = [UInt8](repeating: 0, count: 14) + Self.innerPacket(source: "10.10.0.1", destination: "192.168.7.7")
        tenantFrame[12] = 0x08
        var out = [UInt8](repeating: 0, count: 2048)
        let result = tenantFrame.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { o in
                f.processor.encrypt(tenant: 0, frame: i.baseAddress!, length: i.count, into: o.baseAddress!,
                                    uplinkCapacity: 2048, now: .zero)
            }
        }
        #expect(result == .dropped(.noRoute))
    }

    @Test func ipv6OuterHeaderCarriesAValidUDPChecksum() throws {
        let t = OuterHeaderTemplate(sourceMAC: Self.uplinkMAC, destinationMAC: Self.nextHopMAC, vlanTCI: 7,
                                    source: IPAddress("fd00::2")!, sourcePort: 51820,
                                    destination: IPAddress("fd00::1")!, destinationPort: 40000)
        var frame = [UInt8](repeating: 0, count: 200)
        for i in 0..<37 { frame[t.length + i] = UInt8(i * 3) }
        frame.withUnsafeMutableBytes { t.write(to: $0.baseAddress!, payloadLength: 37) }
        let parsed = try #require(frame.withUnsafeBytes { OuterFrame.parse($0.baseAddress!, length: t.length + 37) })
        #expect(parsed.vlanTCI == 7 && parsed.isIPv6 && parsed.payloadLength == 37)
        // Verify: the sum over the pseudo-header and the datagram (checksum included) is 0xffff.
        var pseudo: [UInt8] = Array(frame[(parsed.ipOffset + 8)..<(parsed.ipOffset + 40)])
        pseudo += [0, 0, 0, 45, 0, 0, 0, 17]
        let udp = Array(frame[(parsed.ipOffset + 40)..<(parsed.ipOffset + 40 + 45)])
        let sum = (pseudo + udp + (udp.count % 2 == 1 ? [0] : [])).withUnsafeBytes {
            Wire.finishChecksum(Wire.onesComplementSum($0.baseAddress!, length: $0.count))
        }
        #expect(sum == 0)
    }

    // MARK: Changes while running

    static func route(_ prefixes: [(String, UInt32)], port: UInt16 = 51820) -> TenantRoute {
        var table = AllowedIPs()
        for (prefix, peer) in prefixes { table.insert(IPPrefix(prefix)!, peer: peer) }
        return TenantRoute(listenPort: port, allowedIPs: table, hostMAC: hostMAC, innerMAC: innerMAC, mtu: 1420)
    }

    @Test func aRepublishedRouteTakesEffectAtOnce() {
        var f = Fixture()
        let spoofed = Self.innerPacket(source: "10.10.9.9", destination: "10.10.0.1")
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: spoofed)).0 == .dropped(.innerSourceNotAllowed))
        // The peer is now allowed 10.10.9.0/24 too: the same packet (a new counter) passes.
        let old = f.state.publishTenant(0, Self.route([("10.10.1.0/24", 0), ("10.10.9.0/24", 0)]))
        #expect(old != nil)
        if let old { Retired.tenantRoute(old).release() }
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: spoofed)).0 == .deliver(tenant: 0, length: 14 + 128))
        // 10.10.1.0/24 moves to peer 1: peer 0 may no longer send from there.
        if let old = f.state.publishTenant(0, Self.route([("10.10.1.0/24", 1)])) { Retired.tenantRoute(old).release() }
        let honest = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1")
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: honest)).0 == .dropped(.innerSourceNotAllowed))
        #expect(f.state.peers.activity(0).drops == 2, "drops of a known peer are counted on the peer")
    }

    @Test func aRemovedTenantDropsItsTrafficByName() {
        var f = Fixture()
        let packet = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1")
        let first = Self.uplinkFrame(f.peer, inner: packet), second = Self.uplinkFrame(f.peer, inner: packet)
        // Route gone but port still mapped (the moment between two steps of a removal).
        if let old = f.state.publishTenant(0, nil) { Retired.tenantRoute(old).release() }
        #expect(Self.run(&f, first).0 == .dropped(.tenantDown))
        var out = [UInt8](repeating: 0, count: 2048)
        var tenantFrame = [UInt8](repeating: 0, count: 14) + Self.innerPacket(source: "10.10.0.1", destination: "10.10.1.2")
        tenantFrame[12] = 0x08
        let encrypted = tenantFrame.withUnsafeMutableBytes { i in
            out.withUnsafeMutableBytes { o in
                f.processor.encrypt(tenant: 0, frame: i.baseAddress!, length: i.count, into: o.baseAddress!,
                                    uplinkCapacity: 2048, now: .zero)
            }
        }
        #expect(encrypted == .dropped(.tenantDown))
        // Port unmapped: nothing reaches the tenant's tables at all.
        f.state.mapPort(51820, to: nil)
        #expect(Self.run(&f, second).0 == .dropped(.unknownPort))
    }

    @Test func aRemovedPeersHandleIsClearedBeforeReuse() {
        let f = Fixture()
        var input = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"))
        var processor = f.processor
        var out = [UInt8](repeating: 0, count: 2048)
        _ = input.withUnsafeMutableBytes { i in
            out.withUnsafeMutableBytes { o in
                processor.decrypt(i.baseAddress!, length: i.count, into: o.baseAddress!, tenantCapacity: 2048, now: .zero)
            }
        }
        #expect(f.state.peers.activity(0).rxPackets == 1)
        var reclaimer = Reclaimer(epochs: f.state.epochs)
        var reused: [UInt32] = []
        f.state.epochs.announce(worker: 0)          // the worker is busy: it may hold handle 0
        reclaimer.retire(.peerHandle(0, f.state.peers, reuse: { reused.append($0) }))
        reclaimer.collect()
        #expect(reused.isEmpty, "reused while a worker could still hold it")
        f.state.epochs.announce(worker: 0)          // the worker moved on
        reclaimer.collect()
        #expect(reused == [0])
        #expect(f.state.peers.activity(0) == PeerTable.Activity(rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0,
                                                                drops: 0))
    }
}

// MARK: Crypto-off mode (the perf lab's forwarding ceiling)

extension PipelineTests {
    /// Runs `encrypt` for one tenant frame carrying `inner` (IPv4) and returns the result and the uplink frame.
    static func encrypt(_ fixture: inout Fixture, inner: [UInt8]) -> (PacketProcessor.EncryptResult, [UInt8]) {
        var tenantFrame = [UInt8](repeating: 0, count: 14) + inner
        tenantFrame[12] = 0x08
        var out = [UInt8](repeating: 0xee, count: 2048)   // not zero: a missing write would show
        let result = tenantFrame.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { o in
                fixture.processor.encrypt(tenant: 0, frame: i.baseAddress!, length: i.count, into: o.baseAddress!,
                                          uplinkCapacity: 2048, now: .zero)
            }
        }
        return (result, out)
    }

    /// A crypto-off frame is the header, the plaintext (padded) and 16 zero bytes; the
    /// crypto-off gateway delivers exactly the inner packet and counts as usual.
    @Test func cryptoOffDecryptCopiesThePayload() {
        var f = Fixture(crypto: .off)
        let inner = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1", payload: 101)   // 129: padded to 144
        let frame = Self.uplinkFrame(f.peer, inner: inner, crypto: .off)
        #expect(frame.count == 42 + 16 + 144 + 16)
        #expect(Array(frame[58..<(58 + 129)]) == inner, "the plaintext stands where the ciphertext would")
        #expect(frame[(58 + 129)...].allSatisfy { $0 == 0 }, "padding and tag are zeros")
        let (result, out) = Self.run(&f, frame)
        #expect(result == .deliver(tenant: 0, length: 14 + inner.count))
        #expect(Array(out[14..<(14 + inner.count)]) == inner)
        #expect(Array(out[0..<6]) == [0x02, 0, 0, 0, 0, 0x12])
        #expect(f.counters.value(.decrypted) == 1)
        #expect(f.state.peers.activity(0).rxPackets == 1)
        #expect(f.state.peers.activity(0).rxBytes == UInt64(16 + 144 + 16))
    }

    @Test func cryptoOffStillEnforcesTheReplayWindowAndAllowedIPs() {
        var f = Fixture(crypto: .off)
        let frame = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1"),
                                     crypto: .off)
        #expect(Self.run(&f, frame).0 == .deliver(tenant: 0, length: 14 + 128))
        #expect(Self.run(&f, frame).0 == .dropped(.replayed))
        let spoofed = Self.uplinkFrame(f.peer, inner: Self.innerPacket(source: "10.10.9.9", destination: "10.10.0.1"),
                                       crypto: .off)
        #expect(Self.run(&f, spoofed).0 == .dropped(.innerSourceNotAllowed))
        // A counter more than the window (8128) behind the newest is refused as too old.
        let honest = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1")
        let heldBack = Self.uplinkFrame(f.peer, inner: honest, crypto: .off)
        var scratch = [UInt8](repeating: 0, count: 64)
        let nothing = [UInt8](repeating: 0, count: 1)
        for _ in 0..<8200 {
            _ = scratch.withUnsafeMutableBytes { out in
                nothing.withUnsafeBytes { empty in
                    try? TransportCrypto.off.seal(f.peer, empty.baseAddress!, length: 0, into: out.baseAddress!, capacity: 64, now: .zero,
                                                  cipher: TransportCipher())
                }
            }
        }
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: honest, crypto: .off)).0 == .deliver(tenant: 0, length: 14 + 128))
        #expect(Self.run(&f, heldBack).0 == .dropped(.counterTooOld))
        #expect(f.counters.value(.decrypted) == 3)
        #expect(f.state.peers.activity(0).drops == 3)
    }

    /// Encrypt in crypto-off mode: the plaintext (padded) and a zero tag behind the usual
    /// headers, a fresh counter per packet; the peer's crypto-off open gets the packet back and
    /// its real open refuses it.
    @Test func cryptoOffEncryptCopiesThePlaintextAndWritesAZeroTag() throws {
        var f = Fixture(crypto: .off)
        let inner = Self.innerPacket(source: "10.10.0.1", destination: "10.10.1.2", payload: 1000)   // 1028 → 1040
        let (result, out) = Self.encrypt(&f, inner: inner)
        guard case .send(let length) = result else { Issue.record("not sent: \(result)"); return }
        #expect(length == 42 + 16 + 1040 + 16)
        let parsed = try #require(out.withUnsafeBytes { OuterFrame.parse($0.baseAddress!, length: length) })
        #expect(parsed.destinationPort == 40000 && parsed.payloadLength == 16 + 1040 + 16)
        #expect(out.withUnsafeBytes { Wire.ipv4HeaderChecksum($0.baseAddress! + 14) } == 0)
        let message = Array(out[parsed.payloadOffset..<(parsed.payloadOffset + parsed.payloadLength)])
        #expect(Array(message[0..<4]) == [4, 0, 0, 0])
        #expect(message.withUnsafeBytes { TransportHeader($0) } == TransportHeader(receiverIndex: Self.peerIndex, counter: 0))
        #expect(Array(message[16..<(16 + inner.count)]) == inner)
        #expect(message[(16 + inner.count)...].allSatisfy { $0 == 0 }, "padding and tag are zeros")
        #expect(f.counters.value(.encrypted) == 1)
        #expect(f.state.peers.activity(0).txPackets == 1)

        // The peer's real open refuses it; its crypto-off open returns the packet.
        var plain = [UInt8](repeating: 0, count: 2048)
        #expect(throws: TransportRejection.authenticationFailed) {
            _ = try message.withUnsafeBytes { m in
                try plain.withUnsafeMutableBytes { p in
                    try f.peer.open(m.baseAddress!, length: m.count, into: p.baseAddress!, capacity: 2048, now: .zero,
                                    cipher: TransportCipher())
                }
            }
        }
        let n = try message.withUnsafeBytes { m in
            try plain.withUnsafeMutableBytes { p in
                try TransportCrypto.off.open(f.peer, m.baseAddress!, length: m.count, into: p.baseAddress!, capacity: 2048, now: .zero,
                                             cipher: TransportCipher())
            }
        }
        #expect(n == 1040)
        #expect(Array(plain.prefix(inner.count)) == inner)

        // The next packet takes the next counter.
        let (second, out2) = Self.encrypt(&f, inner: inner)
        guard case .send = second else { Issue.record("not sent: \(second)"); return }
        #expect(out2.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[42...])) }?.counter == 1)
        #expect(f.counters.value(.encrypted) == 2)
    }

    /// The normal gateway refuses a crypto-off frame: the zero tag does not verify, and it is
    /// counted as the usual authentication failure (and does not move the replay window: the
    /// same counter, properly sealed, is accepted afterwards).
    @Test func normalModeRejectsACryptoOffFrameAsAnAuthenticationFailure() {
        var f = Fixture()
        let inner = Self.innerPacket(source: "10.10.1.2", destination: "10.10.0.1")
        let plainFrame = Self.uplinkFrame(f.peer, inner: inner, crypto: .off)
        #expect(Self.run(&f, plainFrame).0 == .dropped(.authenticationFailed))
        #expect(f.counters.value(.decrypted) == 0)
        #expect(f.state.peers.activity(0).drops == 1)
        // Counter 1, sealed for real: delivered. Counter 0 (the forged one) was never committed.
        #expect(Self.run(&f, Self.uplinkFrame(f.peer, inner: inner)).0 == .deliver(tenant: 0, length: 14 + inner.count))
    }
}
