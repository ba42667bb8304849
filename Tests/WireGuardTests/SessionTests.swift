import Testing
@testable import WireGuard

/// The per-peer state machine driven directly, as the gateway's control plane drives it: what
/// it asks of its host (indices, keypairs), and its staging bound.
@Suite struct SessionTests {
    /// Hands out indices 1, 2, 3, … and records everything the session tells it.
    final class RecordingHost: SessionHost {
        var nextIndex: UInt32 = 1
        var released: [UInt32] = []
        var installed: [UInt32] = []
        var dropped: [UInt32] = []
        var expired = 0

        func allocateIndex() -> UInt32? {
            defer { nextIndex += 1 }
            return nextIndex
        }
        func releaseIndex(_ index: UInt32) { released.append(index) }
        func keypairsChanged(installed keypair: Keypair?, dropped gone: DroppedKeypairs) {
            if let keypair { installed.append(keypair.localIndex) }
            for k in gone { dropped.append(k.localIndex) }
        }
        func stagedPacketsExpired(_ count: Int) { expired += count }
    }

    let now = Instant(nanoseconds: 1_000_000_000)
    let wall = TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 0)

    @Test func stagingDropsTheOldestWhenFull() {
        let session = Session(handshake: PeerHandshake(identity: StaticIdentity(privateKey: .generate()),
                                                       remoteStatic: PrivateKey.generate().publicKey))
        for i in 0..<(Session.maxStagedPackets + 2) {
            let evicted = [UInt8](repeating: UInt8(i & 0xff), count: 10 + i).withUnsafeBytes {
                session.stage($0, now: now)
            }
            #expect(evicted == (i >= Session.maxStagedPackets))
        }
        #expect(session.stagedCount == Session.maxStagedPackets)
        // Packets 2 … 129 remain: sizes 12 … 139.
        #expect(session.stagedBytes == (12...(11 + Session.maxStagedPackets)).reduce(0, +))
    }

    @Test func initiatorTakesItsIndicesFromTheHostAndGivesBackAbandonedOnes() throws {
        let keyA = PrivateKey.generate(), keyB = PrivateKey.generate()
        let host = RecordingHost()
        let session = Session(handshake: PeerHandshake(identity: StaticIdentity(privateKey: keyA),
                                                       remoteStatic: keyB.publicKey))
        let responder = Tunnel(identity: StaticIdentity(privateKey: keyB), peer: keyA.publicKey)
        var buffer = [UInt8](repeating: 0, count: 2048)
        let cipher = TransportCipher()

        // A staged packet asks for a handshake: the initiation carries index 1.
        _ = [UInt8](repeating: 0x45, count: 20).withUnsafeBytes { session.stage($0, now: now) }
        let first = buffer.withUnsafeMutableBytes {
            session.poll(now: now, wallClock: wall, into: $0, cipher: cipher, host: host)
        }
        #expect(first == .writeToNetwork(InitiationMessage.size))
        #expect(session.handshakeIndex == 1)

        // Initiating again abandons index 1.
        let second = buffer.withUnsafeMutableBytes { session.initiate(now: now, wallClock: wall, into: $0, host: host) }
        #expect(second == .writeToNetwork(InitiationMessage.size))
        #expect(host.released == [1] && session.handshakeIndex == 2)

        // The responder answers the second; its response completes the session.
        let initiation = Array(buffer[0..<InitiationMessage.size])
        var out = [UInt8](repeating: 0, count: 2048)
        let answer = initiation.withUnsafeBytes { i in
            out.withUnsafeMutableBytes { responder.decapsulate(i, into: $0, now: now, wallClock: wall) }
        }
        #expect(answer == .writeToNetwork(ResponseMessage.size))
        try out.withUnsafeBytes { o throws in
            let response = try ResponseMessage(UnsafeRawBufferPointer(rebasing: o[0..<ResponseMessage.size]))
            try session.consumeResponse(response, now: now, host: host)
        }
        #expect(host.installed == [2], "the keypair takes the initiation's index")
        #expect(session.handshakeIndex == nil && session.slots.current?.localIndex == 2)

        // The staged packet goes, sealed with the new keypair; then nothing is left to do.
        let sent = buffer.withUnsafeMutableBytes {
            session.poll(now: now, wallClock: wall, into: $0, cipher: cipher, host: host)
        }
        #expect(sent == .writeToNetwork(Keypair.messageLength(plaintextLength: 20)))
        #expect(session.stagedCount == 0 && session.stagedBytes == 0)
        let done = buffer.withUnsafeMutableBytes {
            session.poll(now: now, wallClock: wall, into: $0, cipher: cipher, host: host)
        }
        #expect(done == .done)

        // Ending the session drops the keypair.
        #expect(session.clear(host: host) == 0)
        #expect(host.dropped == [2])
    }

    @Test func withoutAnEndpointADueInitiationIsNotMade() {
        let host = RecordingHost()
        let session = Session(handshake: PeerHandshake(identity: StaticIdentity(privateKey: .generate()),
                                                       remoteStatic: PrivateKey.generate().publicKey))
        _ = [UInt8](repeating: 0x45, count: 20).withUnsafeBytes { session.stage($0, now: now) }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let cipher = TransportCipher()
        let output = buffer.withUnsafeMutableBytes {
            session.poll(now: now, wallClock: wall, into: $0, cipher: cipher, reachable: false, host: host)
        }
        #expect(output == .dropped(.noEndpoint))
        #expect(session.handshakeIndex == nil && host.nextIndex == 1, "no index taken")
        #expect(session.stagedCount == 1, "the packet waits")
    }

    @Test func innerPacketNamesItsAddresses() {
        var v4 = [UInt8](repeating: 0, count: 28)
        v4[0] = 0x45; v4[3] = 24
        v4.replaceSubrange(12..<16, with: [10, 0, 0, 1])
        v4.replaceSubrange(16..<20, with: [10, 0, 0, 2])
        v4.withUnsafeBytes { b in
            let p = InnerPacket(b)
            #expect(p?.version == 4 && p?.length == 24)
            #expect(p.map { Array(UnsafeRawBufferPointer(start: $0.source, count: 4)) } == [10, 0, 0, 1])
            #expect(p.map { Array(UnsafeRawBufferPointer(start: $0.destination, count: 4)) } == [10, 0, 0, 2])
        }
        var v6 = [UInt8](repeating: 0, count: 48)
        v6[0] = 0x60; v6[5] = 8
        v6[8] = 0xfd; v6[24] = 0xfe
        v6.withUnsafeBytes { b in
            let p = InnerPacket(b)
            #expect(p?.version == 6 && p?.length == 48)
            #expect(p.map { UnsafeRawBufferPointer(start: $0.source, count: 16)[0] } == 0xfd)
            #expect(p.map { UnsafeRawBufferPointer(start: $0.destination, count: 16)[0] } == 0xfe)
        }
        var table = AllowedIPs()
        table.insert(IPPrefix("10.0.0.2/32")!, peer: 7)
        v4.withUnsafeBytes { b in
            #expect(InnerPacket(b).flatMap { table.lookup(destinationOf: $0) } == 7)
            #expect(InnerPacket(b).flatMap { table.lookup(sourceOf: $0) } == nil)
        }
    }
}
