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

extension PeerGatewayTests {
    /// The perf lab's crypto-off gateway (`xdpwg bench-crypto-off-gateway`) end to end: it
    /// warns loudly, delivers the emulator's
    /// crypto-off frames (plaintext, zero tag) with handshakes, counters and the replay
    /// window as usual, and sends the tenant's packets back as plaintext with a zero tag.
    @Test func cryptoOffGatewayForwardsPlaintextFrames() throws {
        try Privileged.require()
        let lab = try PeerLab(tag: "co")
        defer { lab.close() }
        let peers = 10
        let emulator = try PeerEmulator(peerCount: peers)
        let inner = try PeerEmulator.consecutiveIPv4(from: IPAddress("10.21.0.1")!, count: peers)
        try lab.start(emulator: emulator, innerAddresses: inner, command: CryptoOffGateway.commandName)
        #expect(lab.logText.contains("crypto is OFF: benchmark mode, packets are NOT authenticated"), "\(lab.logText)")
        let sink = try lab.tenantSink(port: 5555)
        defer { sink.close() }
        let socket = try inNamespace(lab.internet.name) {
            try PeerSocket(address: IPAddress(PeerLab.internetAddress)!, port: 0)
        }
        defer { socket.close() }
        try emulator.handshake(over: socket, gateway: lab.gatewayEndpoint, gatewayPublicKey: lab.tenantKey.publicKey,
                               timeout: .seconds(30))

        let layout = TransportFrameLayout(sourceMAC: try lab.mac(of: "inet0", in: lab.internet),
                                          destinationMAC: try lab.mac(of: "uplink0", in: lab.gateway),
                                          innerSize: 1420, innerSources: inner,
                                          innerDestination: Endpoint(address: IPAddress("10.20.0.1")!, port: 5555),
                                          sealed: false)
        let plainFrames = try frames(emulator, count: 20 * peers, layout: layout)
        try lab.inject(plainFrames, on: "inet0")
        let received = sink.wait(for: plainFrames.count, seconds: 10)
        #expect(received.count == plainFrames.count, "\(received.count) of \(plainFrames.count) arrived\n\(lab.logText)")
        #expect(Set(received.map { "\($0.peer)/\($0.counter)" }).count == received.count)
        #expect(received.allSatisfy { $0.length == 1420 - 28 && $0.source == inner[$0.peer] })
        var stats = try lab.stats()
        #expect(stats.drops.isEmpty, "\(stats.drops)")
        #expect(stats.counter("decrypted") == UInt64(plainFrames.count))

        // The replay window still works: the same frame again is dropped.
        try lab.inject([plainFrames[3]], on: "inet0")
        stats = try lab.waitForStats(seconds: 5) { $0.drops["replayed"] == 1 }
        #expect(stats.drops == ["replayed": 1], "\(stats.drops)")

        // Tenant → peer: the plaintext and a zero tag, which only a crypto-off open accepts.
        try sink.send(Array("plain to peer 4".utf8), to: Endpoint(address: inner[4], port: 9))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
        defer { buffer.deallocate() }
        var message: [UInt8]?
        while message == nil, let (n, from) = try socket.receive(into: buffer, timeout: .seconds(5)) {
            if from == lab.gatewayEndpoint, buffer[0] == 4, n > 32 { message = Array(buffer[0..<n]) }
        }
        let sent = try #require(message, "no transport message from the gateway\n\(lab.logText)")
        #expect(sent.suffix(16).allSatisfy { $0 == 0 }, "a zero tag")
        let ip = try #require(Packets.parseIPv4(Array(sent[16...])), "the plaintext stands behind the header")
        #expect(ip.source == "10.20.0.1" && ip.destination == "10.21.0.5")
        #expect(Array(ip.payload.dropFirst(8)) == Array("plain to peer 4".utf8))
        var plain = [UInt8](repeating: 0, count: 2048)
        #expect(throws: PeerEmulatorError.self, "a real open refuses it") {
            try sent.withUnsafeBytes { m in try plain.withUnsafeMutableBytes { _ = try emulator.open(m, into: $0) } }
        }
        let opened = try sent.withUnsafeBytes { m in
            try plain.withUnsafeMutableBytes { try emulator.open(m, into: $0, crypto: .off) }
        }
        #expect(opened.peer == 4)
        #expect(lab.stop() == 0, "\(CryptoOffGateway.commandName) exit status\n\(lab.logText)")
    }
}

/// The product cannot turn authentication off: `up` has no such option, and the perf lab's
/// command for it is not in the help.
@Suite struct CryptoOffFlagTests {
    @Test func upHasNoCryptoOption() throws {
        let (status, out, err) = try Command.runAllowingFailure([try Command.xdpwg, "up", "--help"])
        #expect(status == 0, "\(err)")
        #expect(out.contains("--config") && !out.contains("crypto"), "\(out)")
        let (all, helpAll, _) = try Command.runAllowingFailure([try Command.xdpwg, "help", "up"])
        #expect(all == 0 && !helpAll.contains("crypto"), "\(helpAll)")
    }

    /// The option the perf lab once used is refused like any unknown option, before anything
    /// is loaded (a usage error, exit status 64).
    @Test func upRejectsBenchCryptoOff() throws {
        let (status, out, err) = try Command.runAllowingFailure(
            [try Command.xdpwg, "up", "--config", "/nonexistent/xdpwg.conf", "--bench-crypto-off"])
        #expect(status == 64, "\(out)\n\(err)")
        #expect(err.contains("Unknown option '--bench-crypto-off'"), "\(err)")
        #expect(!err.contains("/nonexistent"), "refused before the configuration was read\n\(err)")
    }

    @Test func theCryptoOffGatewayCommandIsHidden() throws {
        let (status, out, err) = try Command.runAllowingFailure([try Command.xdpwg, "--help"])
        #expect(status == 0, "\(err)")
        #expect(!out.contains(CryptoOffGateway.commandName), "\(out)")
    }
}
