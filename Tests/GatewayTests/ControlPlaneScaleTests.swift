import Engine
@testable import Gateway
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The control plane's bounds and its timer scheduling, in memory: packets staged by the
/// workers (through a real `ControlQueue`) while no session exists, and handshake
/// initiations that go out through the tenant's real UDP socket to a local receiver.
@Suite struct ControlPlaneScaleTests {
    /// A control plane with one tenant on an ephemeral port, and a UDP socket on loopback
    /// standing in for the peers' endpoint.
    final class Fixture {
        let state = DataPlaneState(tenantCapacity: 4, peerCapacity: 64, keypairCapacity: 256, workerCount: 1)
        let control: ControlPlane
        let queue = ControlQueue()
        let receiver: Int32
        let receiverPort: UInt16
        let start = Instant(nanoseconds: 1_000_000_000_000)

        init() throws {
            control = ControlPlane(state: state)
            control.addTenant(slot: 0, name: "scale", privateKey: .generate(), socket: try HandshakeSocket(port: 0), mtu: 1420)
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            #expect(fd >= 0, "socket: \(String(cString: strerror(errno)))")
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            #expect(bound, "bind 127.0.0.1:0: \(String(cString: strerror(errno)))")
            receiver = fd
            receiverPort = UInt16(bigEndian: address.sin_port)
        }

        deinit {
            control.shutdown()
            close(receiver)
        }

        /// A peer with an endpoint at the receiver (or none).
        func addPeer(endpoint: Bool = true) -> UInt32 {
            let setup = ControlPlane.PeerSetup(publicKey: PrivateKey.generate().publicKey, presharedKey: nil,
                                               endpoint: endpoint ? (IPAddress("127.0.0.1")!, receiverPort) : nil,
                                               persistentKeepalive: 0)
            return control.addPeer(tenant: 0, setup, now: start)!
        }

        /// A worker stages `count` packets of `size` bytes for `peer`, then the control
        /// thread drains the queue.
        func stage(peer: UInt32, count: Int, size: Int, now: Instant) {
            for _ in 0..<count {
                let slot = queue.reserve()!
                slot.header.pointee = ControlMessage()
                slot.header.pointee.kind = .stagedPacket
                slot.header.pointee.tenant = 0
                slot.header.pointee.peer = peer
                slot.header.pointee.length = UInt16(size)
                slot.payload.initializeMemory(as: UInt8.self, repeating: 0x45, count: size)
                queue.commit()
                // The queue holds 512: drain as a worker's burst would be drained.
                if count > 256 { control.drain([queue], now: now) }
            }
            control.drain([queue], now: now)
        }

        /// Handshake initiations (148 bytes, type 1) that reached the receiver so far.
        func initiationsReceived() -> Int {
            var buffer = [UInt8](repeating: 0, count: 2048)
            var count = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                guard n > 0 else { return count }
                if n == InitiationMessage.size && buffer[0] == 1 { count += 1 }
            }
        }
    }

    /// One peer stages more than its 128 packets: the oldest go, each counted.
    @Test func perPeerBound() throws {
        let f = try Fixture()
        let peer = f.addPeer(endpoint: false)
        f.stage(peer: peer, count: Tunnel.maxStagedPackets + 5, size: 100, now: f.start)
        #expect(f.control.stagedPackets == Tunnel.maxStagedPackets)
        #expect(f.control.stagedBytes == Tunnel.maxStagedPackets * 100)
        #expect(f.control.counters[.stagedDropped] == 5)
    }

    /// Many peers together stay inside the global byte budget; what does not fit is dropped
    /// and counted, and a peer's staged packets leave the budget when the peer goes.
    @Test func globalBound() throws {
        let f = try Fixture()
        f.control.stagedByteBudget = 20_000
        let peers = (0..<10).map { _ in f.addPeer(endpoint: false) }
        for peer in peers { f.stage(peer: peer, count: 50, size: 100, now: f.start) }   // 50,000 bytes offered
        #expect(f.control.stagedBytes == 20_000)
        #expect(f.control.stagedPackets == 200)
        #expect(f.control.counters[.stagedDropped] == 300)
        // The first four peers took the budget; removing one frees its share for others.
        f.control.removePeer(peers[0])
        #expect(f.control.stagedBytes == 15_000)
        #expect(f.control.counters[.stagedDropped] == 350)
        f.stage(peer: peers[9], count: 50, size: 100, now: f.start)
        #expect(f.control.stagedBytes == 20_000)
        #expect(f.control.counters[.stagedDropped] == 350)
    }

    /// The default budget is bounded whatever the number of peers.
    @Test func defaultBudget() {
        #expect(ControlPlane.defaultStagedByteBudget == 32 << 20)
    }

    /// A staged packet asks for a handshake at once; the retransmission timer then fires
    /// 5 s (plus at most 333 ms of jitter) later through the wake-up queue, and not earlier,
    /// although no packet or message arrives in between; the give-up after 90 s of attempts
    /// drops the staged packets.
    @Test func timersFireWithoutActivity() throws {
        let f = try Fixture()
        let peer = f.addPeer()
        _ = f.addPeer()    // a quiet peer beside it: nothing for it to send
        f.control.tick(now: f.start)
        f.stage(peer: peer, count: 1, size: 60, now: f.start)
        f.control.tick(now: f.start)
        #expect(f.control.counters[.initiationsSent] == 1)
        f.control.tick(now: f.start + .milliseconds(4_990))
        #expect(f.control.counters[.initiationsSent] == 1)
        f.control.tick(now: f.start + .milliseconds(5_334))
        #expect(f.control.counters[.initiationsSent] == 2)
        // Keep ticking every 100 ms for two minutes: retries every ~5 s, then the give-up.
        var now = f.start + .milliseconds(5_334)
        while now < f.start + .seconds(120) {
            now = now + .milliseconds(100)
            f.control.tick(now: now)
        }
        let sent = f.control.counters[.initiationsSent]
        // As the kernel: the first, then a retry at each of 19 expiries; the 20th gives up.
        #expect(sent == UInt64(SessionTimers.maxHandshakeRetries + 2), "initiations: \(sent)")
        #expect(f.initiationsReceived() == Int(sent))
        #expect(f.control.stagedPackets == 0)
        #expect(f.control.counters[.stagedDropped] == 1)
    }
}
