import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The protocol core against wireguard-go, configured with the real `wg` tool, across a veth
/// link between two network namespaces created for the test:
///
///     [core ns] CorePeer 192.0.2.1:51821  ── veth ──  192.0.2.2:51820 wireguard-go [peer ns]
///               inner 10.200.0.1                                      inner 10.200.0.2/24
///
/// Each case carries an ICMP echo and a UDP datagram through the tunnel both ways and checks
/// that `wg show` reports the handshake and traffic.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct WireGuardGoInteropTests {
    static let coreInner = "10.200.0.1"
    static let peerInner = "10.200.0.2"

    /// Both ends of a tunnel, torn down (processes, sockets, namespaces) when released.
    final class Pair {
        let link: LinkedNamespaces
        let wgGo: WireGuardGo
        let core: CorePeer

        /// `corePresharedKey: false` with `presharedKey: true` configures the PSK on the
        /// wireguard-go side only (a mismatch).
        init(presharedKey: Bool, corePresharedKey: Bool? = nil) throws {
            try Privileged.require()
            link = try LinkedNamespaces(subnet: "192.0.2")
            do {
                wgGo = try WireGuardGo(in: link.right, listenPort: 51820, address: "\(WireGuardGoInteropTests.peerInner)/24")
                let coreKey = PrivateKey.generate()
                var psk: PresharedKey = .none
                var pskText: String?
                if presharedKey {
                    psk = PresharedKey.generate()
                    pskText = psk.secret.base64ForDisplay
                }
                if corePresharedKey == false { psk = .none }
                try wgGo.addPeer(publicKey: coreKey.publicKey.base64, allowedIPs: "\(WireGuardGoInteropTests.coreInner)/32",
                                 endpoint: "\(link.leftAddress):51821", presharedKey: pskText)
                core = try CorePeer(in: link.left, privateKey: coreKey, peer: try #require(PublicKey(base64: wgGo.publicKey)),
                                    presharedKey: psk, listenPort: 51821, peerAddress: link.rightAddress, peerPort: 51820,
                                    innerAddress: WireGuardGoInteropTests.coreInner)
            } catch {
                link.close()
                throw error
            }
        }

        deinit {
            core.close()
            wgGo.close()
            link.close()
        }

        /// The core pings the wireguard-go side's kernel and waits for its echo reply.
        func coreSendsEcho(sequence: UInt16) throws {
            let payload = Array("xdpwg interop \(sequence)".utf8)
            core.send(Packets.icmpEcho(source: WireGuardGoInteropTests.coreInner, destination: WireGuardGoInteropTests.peerInner,
                                       identifier: 0x5747, sequence: sequence, payload: payload))
            let reply = core.waitForPacket { ip in
                ip.proto == 1 && ip.source == WireGuardGoInteropTests.peerInner && ip.payload.count >= 8
                    && ip.payload[0] == 0 && ip.payload[6] == UInt8(sequence >> 8) && ip.payload[7] == UInt8(sequence & 0xff)
            }
            let got = try #require(reply, "no echo reply through wireguard-go; its log:\n\(wgGo.log)\ncore drops: \(core.drops)")
            #expect(Array(got.payload[8...]) == payload)
            #expect(got.headerChecksumValid)
        }

        /// The wireguard-go side's kernel pings the core (which answers like a host).
        func peerPingsCore() throws {
            let (status, out, err) = try link.right.execAllowingFailure(
                ["ping", "-c", "3", "-i", "0.2", "-W", "5", WireGuardGoInteropTests.coreInner])
            #expect(status == 0, "ping through the tunnel failed: \(out)\(err)\ncore drops: \(core.drops)")
            #expect(out.contains("3 received"))
        }

        /// A UDP datagram from the core to a socket on the peer side, and one back.
        func udpBothWays() throws {
            let sock = try link.right.udpSocket(port: 7777)
            defer { Glibc.close(sock) }

            let toPeer = Array("datagram from the core".utf8)
            core.send(Packets.udp(source: WireGuardGoInteropTests.coreInner, sourcePort: 6666,
                                  destination: WireGuardGoInteropTests.peerInner, destinationPort: 7777, payload: toPeer))
            var pfd = pollfd(fd: sock, events: Int16(POLLIN), revents: 0)
            try #require(Glibc.poll(&pfd, 1, 10_000) == 1, "the datagram did not reach the peer's socket")
            var buffer = [UInt8](repeating: 0, count: 1500)
            let n = buffer.withUnsafeMutableBytes { recv(sock, $0.baseAddress, $0.count, 0) }
            #expect(n == toPeer.count && Array(buffer[0..<max(n, 0)]) == toPeer,
                    "the peer's kernel accepted our UDP checksum and delivered the payload")

            let toCore = Array("datagram from wireguard-go's side".utf8)
            var dest = CorePeer.address(WireGuardGoInteropTests.coreInner, 6666)
            let sent = toCore.withUnsafeBytes { b in
                withUnsafePointer(to: &dest) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(sock, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            #expect(sent == toCore.count)
            let got = core.waitForPacket { $0.proto == 17 && $0.destination == WireGuardGoInteropTests.coreInner }
            let udp = try #require(got, "no UDP datagram came back through the tunnel")
            #expect(Array(udp.payload.dropFirst(8)) == toCore)
        }

        /// `wg show` on the wireguard-go side: a handshake happened and bytes flowed both ways.
        func expectWgShowReportsTraffic() throws {
            let peers = try wgGo.peers()
            let peer = try #require(peers.first { $0.publicKey == core.publicKey.base64 })
            #expect(peer.latestHandshake > 0, "wg show reports no handshake")
            #expect(peer.receivedBytes > 0 && peer.sentBytes > 0, "wg show reports no traffic: \(peer)")
            #expect(peer.endpoint == "\(link.leftAddress):51821")
            #expect(core.drops.isEmpty, "the core dropped: \(core.drops)")
        }
    }

    @Test func coreInitiates() throws {
        let pair = try Pair(presharedKey: false)
        try pair.coreSendsEcho(sequence: 1)
        try pair.udpBothWays()
        try pair.peerPingsCore()
        try pair.expectWgShowReportsTraffic()
    }

    @Test func wireguardGoInitiates() throws {
        let pair = try Pair(presharedKey: false)
        try pair.peerPingsCore()
        try pair.coreSendsEcho(sequence: 2)
        try pair.udpBothWays()
        try pair.expectWgShowReportsTraffic()
    }

    @Test(arguments: [true, false])
    func withPresharedKey(coreFirst: Bool) throws {
        let pair = try Pair(presharedKey: true)
        if coreFirst {
            try pair.coreSendsEcho(sequence: 3)
            try pair.peerPingsCore()
        } else {
            try pair.peerPingsCore()
            try pair.coreSendsEcho(sequence: 3)
        }
        try pair.udpBothWays()
        try pair.expectWgShowReportsTraffic()
    }

    /// The tests can fail: with the preshared key on one side only, nothing crosses, and the
    /// core reports why.
    @Test func mismatchedPresharedKeyNeverConnects() throws {
        let pair = try Pair(presharedKey: true, corePresharedKey: false)
        pair.core.send(Packets.icmpEcho(source: Self.coreInner, destination: Self.peerInner,
                                        identifier: 1, sequence: 1, payload: [1, 2, 3]))
        #expect(pair.core.waitForPacket(timeout: 3) { _ in true } == nil)
        #expect(pair.core.drops.contains(.handshake(.decryptionFailed)))
        #expect(try pair.wgGo.peers().first?.latestHandshake == 0)
    }

    @Test func nothingIsLeftBehind() throws {
        try Privileged.require()
        var names: (String, String, String)
        do {
            let pair = try Pair(presharedKey: false)
            try pair.coreSendsEcho(sequence: 4)
            names = (pair.link.left.name, pair.link.right.name, pair.wgGo.interface)
        }
        let namespaces = try Command.run(["ip", "netns", "list"])
        #expect(!namespaces.contains(names.0) && !namespaces.contains(names.1))
        #expect(!FileManager.default.fileExists(atPath: "/var/run/wireguard/\(names.2).sock"))
        let processes = try Command.run(["ps", "-eo", "args"])
        #expect(!processes.contains("wireguard-go -f \(names.2)"))
    }
}
