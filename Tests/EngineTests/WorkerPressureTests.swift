import CLibXDP
import Engine
import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// A real worker under UMEM and ring pressure (root): its uplink socket on one veth pair, one
/// tenant lane on another, a session with one peer published as the control plane would, and
/// AF_XDP senders on the far ends playing the peer and the tenant. Each test squeezes one
/// resource, checks that the drops are counted under their names and that every frame is
/// still accounted for (free + in flight == total, against the kernel's own rings), then
/// lets go and checks that traffic flows again. Counts are exact; nothing is timed.
@Suite(.enabled(if: Privileged.shouldRun), .serialized)
struct WorkerPressureTests {
    /// TX ring full: the tenant's host end is down, so the kernel refuses to transmit
    /// (ENETDOWN) and the lane's TX ring keeps what it has. With a TX ring smaller than the
    /// frames free for decryption the ring fills (tenant_tx_ring_full); with a larger one the
    /// frames run out first (tenant_frames_exhausted). Link up: everything held is sent.
    @Test(arguments: [UInt32(64), 256])
    func tenantTransmitStalls(laneTxRing: UInt32) throws {
        try Privileged.require()
        let sizing = WorkerRig.Sizing(laneTxRing: laneTxRing)
        let rig = try WorkerRig(sizing)
        defer { rig.close() }
        let c = rig.counters
        // The lane's fill ring takes half its frames; decryption has the other half.
        let decryptFrames = sizing.laneFrames - Int(sizing.laneFillRing)
        let stuck = min(Int(laneTxRing), decryptFrames)
        let sent = 200

        try rig.setLink(rig.tenant.a, up: false)
        try rig.sendFromPeer(sent)
        try rig.waitUntil("every frame accounted for") {
            c.value(.tenantTxPackets) + c.totalDrops == UInt64(sent)
        }
        #expect(c.value(.uplinkRxPackets) == UInt64(sent))
        #expect(c.value(.tenantTxPackets) == UInt64(stuck))
        if Int(laneTxRing) < decryptFrames {
            #expect(c.value(.decrypted) == UInt64(sent))      // decrypted, then found no room on the ring
            #expect(c.value(.tenantTxRingFull) == UInt64(sent - stuck))
            #expect(c.value(.tenantFramesExhausted) == 0)
        } else {
            #expect(c.value(.decrypted) == UInt64(stuck))     // the rest found no frame to decrypt into
            #expect(c.value(.tenantFramesExhausted) == UInt64(sent - stuck))
            #expect(c.value(.tenantTxRingFull) == 0)
        }
        #expect(c.totalDrops == UInt64(sent - stuck))
        // While it stalls, the held frames are counted as transmitting, none is lost.
        try rig.waitUntil("the stalled frames published") { c.value(.tenantTransmitting) == UInt64(stuck) }
        #expect(c.value(.tenantFree) + c.value(.tenantReceiving) + UInt64(stuck) == UInt64(sizing.laneFrames))

        // Pressure off: the frames held go out, every frame comes back.
        let farEnd = try rig.received(rig.tenant.b)
        try rig.setLink(rig.tenant.a, up: true)
        try rig.waitUntil("the held frames sent and completed") {
            try rig.received(rig.tenant.b) - farEnd == UInt64(stuck) && c.value(.tenantTransmitting) == 0
        }
        // Traffic flows again.
        let more = 64
        try rig.sendFromPeer(more)
        try rig.waitUntil("fresh traffic delivered") { try rig.received(rig.tenant.b) - farEnd == UInt64(stuck + more) }
        #expect(c.value(.tenantTxPackets) == UInt64(stuck + more))
        #expect(c.value(.uplinkRxPackets) == c.value(.tenantTxPackets) + c.totalDrops)

        try rig.stopAndCheckFrames()
    }

    /// The other direction: the uplink is down, so encrypted frames pile up in the uplink TX
    /// ring (uplink_tx_ring_full with a small ring) or use up every uplink frame first
    /// (uplink_frames_exhausted, the worker's own shortage). Link up: they are all sent.
    @Test(arguments: [UInt32(64), 1024])
    func uplinkTransmitStalls(uplinkTxRing: UInt32) throws {
        try Privileged.require()
        let sizing = WorkerRig.Sizing(uplinkFrames: Worker.transmitReserve + 128, uplinkFillRing: 64,
                                      uplinkTxRing: uplinkTxRing)
        let rig = try WorkerRig(sizing)
        defer { rig.close() }
        let c = rig.counters
        // The fill ring holds its 64; encryption may use every other uplink frame.
        let encryptFrames = sizing.uplinkFrames - Int(sizing.uplinkFillRing)
        let stuck = min(Int(uplinkTxRing), encryptFrames)
        let sent = 700

        try rig.setLink(rig.uplink.a, up: false)
        try rig.sendFromTenant(sent)
        try rig.waitUntil("every frame accounted for") {
            c.value(.uplinkTxPackets) + c.totalDrops == UInt64(sent)
        }
        #expect(c.value(.tenantRxPackets) == UInt64(sent))
        #expect(c.value(.uplinkTxPackets) == UInt64(stuck))
        if Int(uplinkTxRing) < encryptFrames {
            #expect(c.value(.uplinkTxRingFull) == UInt64(sent - stuck))
            #expect(c.value(.uplinkFramesExhausted) == 0)
        } else {
            #expect(c.value(.uplinkFramesExhausted) == UInt64(sent - stuck))
            #expect(c.value(.uplinkTxRingFull) == 0)
        }
        #expect(c.totalDrops == UInt64(sent - stuck))
        try rig.waitUntil("the stalled frames published") { c.value(.uplinkTransmitting) == UInt64(stuck) }
        #expect(c.value(.uplinkFree) + c.value(.uplinkReceiving) + UInt64(stuck) == UInt64(sizing.uplinkFrames))

        let farEnd = try rig.received(rig.uplink.b)
        try rig.setLink(rig.uplink.a, up: true)
        try rig.waitUntil("the held frames sent and completed") {
            try rig.received(rig.uplink.b) - farEnd == UInt64(stuck) && c.value(.uplinkTransmitting) == 0
        }
        let more = 64
        try rig.sendFromTenant(more)
        try rig.waitUntil("fresh traffic delivered") { try rig.received(rig.uplink.b) - farEnd == UInt64(stuck + more) }
        #expect(c.value(.uplinkTxPackets) == UInt64(stuck + more))
        #expect(c.value(.tenantRxPackets) == c.value(.uplinkTxPackets) + c.totalDrops)

        try rig.stopAndCheckFrames()
    }

    /// Fill ring empty: an uplink UMEM with only 16 frames beyond the transmit reserve, so
    /// the fill ring never holds more than 16, and a flood of bursts of 32. The kernel drops
    /// what finds no frame (rx_dropped, fill ring empty), the worker publishes those counts,
    /// and every packet the XDP program redirected is either received by the worker or
    /// counted by the kernel. Then paced traffic is all delivered.
    @Test func uplinkFillRingRunsDry() throws {
        try Privileged.require()
        let sizing = WorkerRig.Sizing(uplinkFrames: Worker.transmitReserve + 16, uplinkFillRing: 16)
        let rig = try WorkerRig(sizing)
        defer { rig.close() }
        let c = rig.counters

        // Flood until the kernel has found the fill ring empty (bounded: a failure, not a hang).
        var flooded = 0
        var statistics = try rig.uplinkSocket.statistics()
        while statistics.rxFillRingEmpty == 0 && flooded < 50_000 {
            try rig.sendFromPeer(1024, burst: 32, paced: false)
            flooded += 1024
            statistics = try rig.uplinkSocket.statistics()
        }
        #expect(statistics.rxFillRingEmpty > 0, "the kernel never found the fill ring empty after \(flooded) frames")
        #expect(statistics.rxDropped > 0)
        // Settled: everything the XDP program redirected is received or counted as dropped.
        try rig.waitUntil("every redirected frame accounted for") {
            let s = try rig.uplinkSocket.statistics()
            return rig.uplinkProgram.redirectsPerQueue()[0]
                == c.value(.uplinkRxPackets) + s.rxDropped + s.rxRingFull && c.value(.tenantTransmitting) == 0
        }
        #expect(c.value(.uplinkRxPackets) == c.value(.tenantTxPackets) + c.totalDrops)
        #expect(c.value(.uplinkFramesExhausted) == 0)   // the reserve is for encryption, never touched here

        // Pressure off: paced traffic (bursts of 8, each taken before the next) is all delivered.
        let farEnd = try rig.received(rig.tenant.b)
        let decrypted = c.value(.decrypted)
        let more = 64
        try rig.sendFromPeer(more)
        try rig.waitUntil("paced traffic delivered") { try rig.received(rig.tenant.b) - farEnd == UInt64(more) }
        #expect(c.value(.decrypted) - decrypted == UInt64(more))

        let kernel = try rig.stopAndCheckFrames()
        // The worker published the kernel's counts (it read them as it stopped).
        #expect(c.value(.uplinkXskRxDropped) == kernel.rxDropped)
        #expect(c.value(.uplinkXskFillRingEmpty) == kernel.rxFillRingEmpty)
        #expect(c.value(.uplinkXskRxRingFull) == kernel.rxRingFull)
        #expect(rig.uplinkProgram.redirectsPerQueue()[0]
                == c.value(.uplinkRxPackets) + kernel.rxDropped + kernel.rxRingFull)
    }
}

/// The worker and everything around it (see `WorkerPressureTests`). Uplink pair: `uplink.a`
/// holds the gateway's end ("xa", 198.18.0.1, the uplink XDP program and socket), `uplink.b`
/// the peer's. Tenant pair: `tenant.a` holds the host end ("xa", tenant XDP program, the
/// lane's socket), `tenant.b` the tenant's end. IPv6 is off everywhere, so the far ends'
/// receive counters count exactly the test's frames.
final class WorkerRig: @unchecked Sendable {
    struct Sizing {
        var uplinkFrames = 1024
        var uplinkFillRing: UInt32 = 256
        var uplinkTxRing: UInt32 = 256
        var laneFrames = 256
        var laneFillRing: UInt32 = 128
        var laneTxRing: UInt32 = 256
    }

    static let listenPort: UInt16 = 51820
    static let peerPort: UInt16 = 40000
    static let innerLength = 128

    let uplink: MultiQueueVeth
    let tenant: MultiQueueVeth
    let state: DataPlaneState
    let counters = WorkerCounters.allocate()
    let control = ControlQueue()
    /// The peer's side of the session: seals what the peer sends.
    let peer: Keypair
    let fromPeer: OuterHeaderTemplate
    let uplinkProgram: UplinkProgram
    let tenantProgram: TenantProgram
    let uplinkSocket: XskSocket
    let laneSocket: XskSocket
    let peerSender: TxLoop
    let tenantSender: TxLoop
    let worker: Worker

    init(_ sizing: Sizing) throws {
        uplink = try MultiQueueVeth(queues: 1)
        tenant = try MultiQueueVeth(queues: 1)
        for ns in [uplink.a, uplink.b, tenant.a, tenant.b] {
            try ns.exec(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        }

        // One tenant on port 51820 whose peer 0 owns 10.10.1.0/24; a session with peer 0 made
        // now (the worker's clock), published for receiving and sending.
        var table = AllowedIPs()
        table.insert(IPPrefix("10.10.1.0/24")!, peer: 0)
        let route = TenantRoute(listenPort: Self.listenPort, allowedIPs: table,
                                hostMAC: EthernetAddress(bytes: tenant.macA)!, innerMAC: EthernetAddress(bytes: tenant.macB)!,
                                mtu: 1420)
        state = DataPlaneState(tenants: [route], peerCapacity: 1, keypairCapacity: 16, workerCount: 1)
        let index = state.keypairs.allocateIndex(random: { 0x5EED_0001 })!
        let k1 = Key32(bytes: [UInt8](repeating: 0x11, count: 32))!, k2 = Key32(bytes: [UInt8](repeating: 0x22, count: 32))!
        let now = Clock.now()
        var ours = SessionKeys(sendKey: k2, receiveKey: k1, localIndex: index, remoteIndex: 0x7777_0001,
                               isInitiator: false, createdAt: now)
        var theirs = SessionKeys(sendKey: k1, receiveKey: k2, localIndex: 0x7777_0001, remoteIndex: index,
                                 isInitiator: true, createdAt: now)
        let entry = KeypairEntry.make(Keypair(consuming: &ours), peer: 0, tenant: 0)
        state.keypairs.publish(entry)
        _ = state.peers.setSending(0, entry)
        peer = Keypair(consuming: &theirs)
        let peerMAC = EthernetAddress(bytes: uplink.macB)!, gatewayMAC = EthernetAddress(bytes: uplink.macA)!
        let peerAddress = IPAddress(uplink.addressB)!, gatewayAddress = IPAddress(uplink.addressA)!
        fromPeer = OuterHeaderTemplate(sourceMAC: peerMAC, destinationMAC: gatewayMAC, vlanTCI: 0,
                                       source: peerAddress, sourcePort: Self.peerPort,
                                       destination: gatewayAddress, destinationPort: Self.listenPort)
        // The peer's route, for the endpoint its frames come from (no roaming to report).
        var probe = [UInt8](repeating: 0, count: 128)
        let endpointKey = probe.withUnsafeMutableBytes { [fromPeer] p -> UInt64 in
            fromPeer.write(to: p.baseAddress!, payloadLength: 32)
            return OuterFrame.parse(p.baseAddress!, length: fromPeer.length + 32)!.endpointKey(in: p.baseAddress!)
        }
        _ = state.peers.setRoute(0, OuterHeaderTemplate(sourceMAC: gatewayMAC, destinationMAC: peerMAC, vlanTCI: 0,
                                                       source: gatewayAddress, sourcePort: Self.listenPort,
                                                       destination: peerAddress, destinationPort: Self.peerPort,
                                                       endpointKey: endpointKey))

        let uplinkInterface = uplink.interfaceA, tenantInterface = tenant.interfaceA
        (uplinkProgram, uplinkSocket) = try NamespaceThread.run(in: uplink.a) {
            let program = try UplinkProgram(interfaceIndex: Int32(if_nametoindex(uplinkInterface)),
                                            interfaceName: uplinkInterface, ports: [WorkerRig.listenPort])
            let umem = try Umem(frameCount: sizing.uplinkFrames, fillRingSize: sizing.uplinkFillRing,
                                completionRingSize: sizing.uplinkTxRing, numaNode: nil)
            let socket = try XskSocket(interface: uplinkInterface, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 2048, txSize: sizing.uplinkTxRing))
            try program.register(socketFD: socket.fd, queue: 0)
            return (program, socket)
        }
        (tenantProgram, laneSocket) = try NamespaceThread.run(in: tenant.a) {
            let program = try TenantProgram(interfaceIndex: Int32(if_nametoindex(tenantInterface)),
                                            interfaceName: tenantInterface)
            let umem = try Umem(frameCount: sizing.laneFrames, fillRingSize: sizing.laneFillRing,
                                completionRingSize: sizing.laneTxRing, numaNode: nil)
            let socket = try XskSocket(interface: tenantInterface, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 256, txSize: sizing.laneTxRing, copyMode: true))
            try program.register(socketFD: socket.fd, queue: 0)
            return (program, socket)
        }
        peerSender = try WorkerRig.sender(in: uplink.b, interface: uplink.interfaceB)
        tenantSender = try WorkerRig.sender(in: tenant.b, interface: tenant.interfaceB)

        worker = try Worker(index: 0, core: nil, uplink: uplinkSocket, state: state, control: control, counters: counters)
        worker.setLanes([TenantLane(tenant: 0, socket: laneSocket)])
        try worker.start()
        try waitUntil("the worker's first frame counts") { counters.value(.uplinkTotal) == UInt64(sizing.uplinkFrames) }
    }

    /// An AF_XDP socket on the far end's queue 0 that transmits the test's frames.
    private static func sender(in ns: NetworkNamespace, interface: String) throws -> TxLoop {
        try NamespaceThread.run(in: ns) {
            let umem = try Umem(frameCount: 256, fillRingSize: 64, completionRingSize: 256, numaNode: nil)
            let socket = try XskSocket(interface: interface, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 64, txSize: 256, copyMode: true))
            return TxLoop(socket: socket, pool: FramePool(umem: umem))
        }
    }

    /// Stops the worker and removes the namespaces (the sockets go with this object).
    func close() {
        worker.stop()
        uplinkProgram.detach()
        tenantProgram.detach()
        uplink.close()
        tenant.close()
    }

    struct Timeout: Error, CustomStringConvertible {
        var description: String
    }

    /// Polls `condition` every millisecond for up to 10 s.
    func waitUntil(_ what: String, _ condition: () throws -> Bool) throws {
        let deadline = monotonicMilliseconds() + 10_000
        while try !condition() {
            guard monotonicMilliseconds() < deadline else { throw Timeout(description: "timed out waiting: \(what)") }
            usleep(1000)
        }
    }

    func setLink(_ ns: NetworkNamespace, up: Bool) throws {
        try ns.exec(["ip", "link", "set", "xa", up ? "up" : "down"])
    }

    /// Packets the far end ("xb") of a pair has received.
    func received(_ ns: NetworkNamespace) throws -> UInt64 {
        let text = try ns.exec(["cat", "/sys/class/net/xb/statistics/rx_packets"])
        guard let n = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Timeout(description: "unreadable rx_packets: \(text)")
        }
        return n
    }

    /// The peer's transport frames (fresh counters) to the gateway, `burst` per kick. Paced:
    /// each burst is taken by the worker before the next goes (bursts of 8 always find frames
    /// on the fill ring); unpaced: as fast as the sender goes.
    func sendFromPeer(_ count: Int, burst: Int = 8, paced: Bool = true) throws {
        let inner = Packets.udp(source: "10.10.1.2", sourcePort: 5001, destination: "10.10.0.1", destinationPort: 5001,
                                payload: [UInt8](repeating: 0xA5, count: Self.innerLength - 28))
        try send(count, burst: burst, with: peerSender, paced: paced, counter: .uplinkRxPackets) {
            var frame = [UInt8](repeating: 0, count: 2048)
            let length = try frame.withUnsafeMutableBytes { f throws -> Int in
                let sealed = try inner.withUnsafeBytes { src in
                    try peer.seal(src.baseAddress!, length: src.count, into: f.baseAddress! + fromPeer.length,
                                  capacity: 2048 - fromPeer.length, now: Clock.now(), cipher: TransportCipher(),
                                  mtu: 1420)
                }
                fromPeer.write(to: f.baseAddress!, payloadLength: sealed.length)
                return fromPeer.length + sealed.length
            }
            return Array(frame.prefix(length))
        }
    }

    /// The tenant's packets to the peer's range, from the tenant's end of its veth.
    func sendFromTenant(_ count: Int, burst: Int = 32) throws {
        let frame = Frames.udp(sourceMAC: tenant.macB, destinationMAC: tenant.macA, source: "10.10.0.1", sourcePort: 5001,
                               destination: "10.10.1.2", destinationPort: 5001,
                               payload: [UInt8](repeating: 0x5A, count: Self.innerLength - 28))
        try send(count, burst: burst, with: tenantSender, paced: true, counter: .tenantRxPackets) { frame }
    }

    private func send(_ count: Int, burst: Int, with sender: TxLoop, paced: Bool, counter: WorkerCounter,
                      _ make: () throws -> [UInt8]) throws {
        var sent = 0
        let start = counters.value(counter)
        while sent < count {
            let n = min(burst, count - sent)
            try sender.enqueue(try (0..<n).map { _ in try make() })
            guard sender.flush() else { throw Timeout(description: "the sender's frames did not complete") }
            sent += n
            if paced {
                try waitUntil("the worker took \(sent) frames") { counters.value(counter) - start >= UInt64(sent) }
            }
        }
    }

    /// Stops the worker and checks every UMEM's frames against the kernel's rings: none in
    /// transmission, those receiving exactly on the fill and RX rings, the rest free. Returns
    /// the uplink socket's kernel counters as the worker last read them.
    @discardableResult
    func stopAndCheckFrames(sourceLocation: SourceLocation = #_sourceLocation) throws -> XskStatistics {
        worker.stop()   // the worker publishes its counts and the kernel's as it stops
        let c = counters
        for (name, socket, gauges) in [("uplink", uplinkSocket, [FrameGauge.uplinkTotal, .uplinkFree, .uplinkReceiving, .uplinkTransmitting]),
                                       ("tenant", laneSocket, [.tenantTotal, .tenantFree, .tenantReceiving, .tenantTransmitting])] {
            let (total, free, receiving, transmitting) = (c.value(gauges[0]), c.value(gauges[1]), c.value(gauges[2]), c.value(gauges[3]))
            #expect(total == UInt64(socket.umem.frameCount), "\(name) total", sourceLocation: sourceLocation)
            #expect(free + receiving + transmitting == total, "\(name): free + in flight == total", sourceLocation: sourceLocation)
            #expect(transmitting == 0, "\(name): nothing left in transmission", sourceLocation: sourceLocation)
            let onRings = UInt64(socket.fillRing.outstanding) + UInt64(socket.rxRing.available)
            #expect(receiving == onRings, "\(name): receiving == fill + RX rings", sourceLocation: sourceLocation)
            #expect(socket.txRing.outstanding == 0, "\(name) TX ring empty", sourceLocation: sourceLocation)
        }
        #expect(c.value(.uplinkXskInvalidDescriptors) == 0 && c.value(.tenantXskInvalidDescriptors) == 0,
                "the kernel refused no descriptor (each would be a frame lost)", sourceLocation: sourceLocation)
        return try uplinkSocket.statistics()
    }
}
