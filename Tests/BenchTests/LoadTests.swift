import Bench
import Engine
import Foundation
import Testing
import TestSupport
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The perf lab's load side in real namespaces: threads that join namespaces, the XDP packet
/// sink on veth and on wireguard-go's TUN, the AF_XDP frame blaster and the UDP blaster.
/// Counts are exact (IPv6 is off in the test namespaces, so nothing else reaches a sink).
@Suite("Load side", .serialized, .enabled(if: Privileged.shouldRun))
struct LoadTests {
    // MARK: runInNamespace, NamespaceThread

    @Test("runInNamespace runs in the namespace (sees its interfaces) and pins to the core")
    func runsInNamespaceAndPins() throws {
        try Privileged.require()
        let ns = try NetworkNamespace(tag: "lt")
        defer { ns.close() }
        let probe = "ldp\(getpid() % 100_000)"
        try ns.exec(["ip", "link", "add", probe, "type", "veth", "peer", "name", probe + "p"])
        let cpu = CPUTopology.allowedCores().last!

        let seen = try runInNamespace(ns.name, cpu: cpu) {
            (index: if_nametoindex(probe), cores: CPUTopology.allowedCores(), running: currentCPU())
        }
        #expect(seen.index != 0, "the thread sees the namespace's interface")
        #expect(seen.cores == [cpu])
        #expect(seen.running == cpu)
        // The caller stayed where it was: the interface is not in its namespace.
        #expect(if_nametoindex(probe) == 0)
        // nil stays in the caller's namespace.
        let here = try runInNamespace(nil) { if_nametoindex(probe) }
        #expect(here == 0)
        // Errors thrown by the body come back as they are.
        struct Marker: Error {}
        #expect(throws: Marker.self) { try runInNamespace(ns.name) { () throws -> Int in throw Marker() } }
    }

    @Test("A long-lived NamespaceThread runs until asked to stop and returns its result")
    func longLivedThreadStops() throws {
        try Privileged.require()
        let ns = try NetworkNamespace(tag: "lt")
        defer { ns.close() }
        let thread = try NamespaceThread(namespace: ns.name, cpu: CPUTopology.allowedCores().first!) { stop in
            var turns = 0
            while !stop.isStopRequested {
                turns += 1
                usleep(1000)
            }
            return turns
        }
        usleep(50_000)
        thread.requestStop()
        let turns = try thread.join()
        #expect(turns > 0)
        #expect(try thread.join() == turns, "joining again returns the same result")
    }

    @Test("A missing namespace, a bad name and a missing core are clear errors")
    func threadErrors() throws {
        try Privileged.require()
        let missing = "xdpwg-missing-\(getpid())"
        let error = try #require(throws: LoadError.self) { try runInNamespace(missing) { 1 } }
        #expect(error.description.contains("'\(missing)'"))
        #expect(error.description.contains("no network namespace of that name"))
        #expect(error.errno == nil || error.errno == ENOENT)

        let badName = try #require(throws: LoadError.self) { try runInNamespace("../etc") { 1 } }
        #expect(badName.description.contains("is not a namespace name"))

        let core = try #require(throws: LoadError.self) { try runInNamespace(nil, cpu: 4000) { 1 } }
        #expect(core.description.contains("core 4000"))
        #expect(core.description.contains("Invalid argument"))
    }

    // MARK: PacketSink

    @Test("Sink and blaster on missing interfaces and namespaces: errors name them and say why")
    func missingInterfaceErrors() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }

        let sink = try #require(throws: LoadError.self) {
            try PacketSink(namespace: link.b.name, interface: "nosuch0", match: .innerIP)
        }
        #expect(sink.description.contains("nosuch0"))
        #expect(sink.description.contains("'\(link.b.name)'"))
        #expect(sink.description.contains("does not exist"))

        let elsewhere = try #require(throws: LoadError.self) {
            // b's interface does not exist in a.
            try PacketSink(namespace: link.a.name, interface: link.bInterface, match: .innerIP)
        }
        #expect(elsewhere.description.contains("'\(link.a.name)'"))

        let noNamespace = try #require(throws: LoadError.self) {
            try PacketSink(namespace: "xdpwg-missing-\(getpid())", interface: link.bInterface, match: .innerIP)
        }
        #expect(noNamespace.description.contains("no network namespace of that name"))

        let pool = try BlastPool(namespace: link.a.name, capacity: 16)
        let blaster = try #require(throws: LoadError.self) {
            try FrameBlaster(pool: pool, interface: "nosuch0", queue: 0)
        }
        #expect(blaster.description.contains("nosuch0"))
        #expect(blaster.description.contains("'\(link.a.name)'"))
        #expect(blaster.description.contains("No such device"))

        let queue = try #require(throws: LoadError.self) {
            try FrameBlaster(pool: pool, interface: link.aInterface, queue: 7)
        }
        #expect(queue.description.contains("queue 7"))
    }

    @Test("The sink passes what it does not match: ARP and ping work, a UDP socket gets its datagram")
    func sinkPassesTheRest() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        #expect(sink.attachedMode == .native)
        #expect(sink.framing == .ethernet)

        // ARP (not IP) and ICMP (not WireGuard) reach the kernel.
        try link.a.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", link.bAddress])
        // A UDP datagram that is not a transport message reaches its socket.
        let receiver = try Receiver(in: link.b, port: 5555)
        let udp = try DatagramBlaster(namespace: link.a.name, destinations: [.init(IPAddress(link.bAddress)!, port: 5555)],
                                      packetSize: 100)
        #expect(try udp.run(.once).sent == 1)
        let got = receiver.drain()
        #expect(got.count == 1)
        #expect(got.first.map(Receiver.sequence) == 0)

        let counters = try sink.read()
        #expect(counters.packets == 0)
        #expect(counters.bytes == 0)
        #expect(counters.passedPackets >= 4, "ARP request, 2 echo requests, the datagram, at least")
    }

    @Test("An inner-IP sink counts and drops every IP packet, and still passes ARP")
    func innerIPSinkCountsPing() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .innerIP)
        defer { sink.close() }

        // Three echo requests, all dropped: ping fails, yet ARP was answered (the requests
        // left a only once b's MAC was known).
        let (status, _, _) = try link.a.execAllowingFailure(["ping", "-c", "3", "-i", "0.2", "-W", "1", link.bAddress])
        #expect(status != 0)
        let counters = try sink.read()
        #expect(counters.packets == 3)
        #expect(counters.bytes == 3 * 84, "20-byte IP header + 8-byte ICMP header + 56 bytes of data")
        #expect(counters.passedPackets >= 1, "the ARP request")
        let neighbour = try link.a.exec(["ip", "neigh", "show", link.bAddress, "dev", link.aInterface])
        #expect(neighbour.contains(try link.bMAC.description))
    }

    @Test("The sink's parser on crafted frames: what each match counts (with its IP length) and what it passes")
    func sinkKnownAnswers() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let (aMAC, bMAC) = (try link.aMAC, try link.bMAC)
        func frame(_ source: String, _ destination: String, ipSize: Int,
                   _ payload: @escaping (UnsafeMutableRawBufferPointer) -> Void) throws -> [UInt8] {
            let builder = try UDPFrameBuilder(sourceMAC: aMAC, destinationMAC: bMAC, source: IPAddress(source)!, sourcePort: 40000,
                                              destination: IPAddress(destination)!, destinationPort: 51820)
            var bytes = [UInt8](repeating: 0, count: 2048)
            let length = try bytes.withUnsafeMutableBytes { try builder.write(into: $0, ipPacketSize: ipSize, payload: payload) }
            return Array(bytes.prefix(length))
        }
        func transport(_ message: UnsafeMutableRawBufferPointer) {
            TransportShape.write(into: message, receiverIndex: 3, counter: 0)
        }
        let wg4 = try frame("192.0.2.1", "192.0.2.2", ipSize: 28 + 96, transport)
        let wg6 = try frame("2001:db8::1", "2001:db8::2", ipSize: 48 + 96, transport)
        let keepalive = try frame("192.0.2.1", "192.0.2.2", ipSize: 28 + 32, transport)
        let short = try frame("192.0.2.1", "192.0.2.2", ipSize: 28 + 31) { $0.storeBytes(of: 4, as: UInt8.self) }
        let initiation = try frame("192.0.2.1", "192.0.2.2", ipSize: 28 + 148) { $0.storeBytes(of: 1, as: UInt8.self) }
        var reserved = wg4
        reserved[42 + 2] = 1                       // a non-zero reserved byte
        var fragment = wg4
        fragment[14 + 6] = 0x20                    // more fragments
        var tcp = wg4
        tcp[14 + 9] = 6                            // protocol TCP: same bytes, not UDP
        var withOptions = Array(wg4[..<34]) + [1, 1, 1, 1] + Array(wg4[34...])
        withOptions[14] = 0x46                     // IHL 6
        withOptions[17] = UInt8(124 + 4)           // total length (low byte)
        let vlan = Array(wg4[..<12]) + [0x81, 0x00, 0x00, 0x07] + Array(wg4[12...])
        let arp = Array(wg4[..<12]) + [0x08, 0x06] + [UInt8](repeating: 0, count: 28)
        var icmp6 = wg6
        icmp6[14 + 6] = 58                         // next header ICMPv6

        // (frame, counted by the WireGuard-transport sink, counted by the inner-IP sink)
        let table: [(name: String, bytes: [UInt8], transport: Bool, innerIP: Bool)] = [
            ("IPv4 transport", wg4, true, true), ("IPv6 transport", wg6, true, true),
            ("keepalive", keepalive, true, true), ("31-byte type 4", short, false, true),
            ("initiation", initiation, false, true), ("reserved byte set", reserved, false, true),
            ("IPv4 fragment", fragment, false, true), ("TCP", tcp, false, true),
            ("IPv4 options", withOptions, true, true), ("VLAN tag", vlan, false, false),
            ("ARP", arp, false, false), ("ICMPv6", icmp6, false, true),
        ]
        let pool = try BlastPool(namespace: link.a.name, capacity: table.count)
        for entry in table {
            try pool.append { buffer in
                buffer.copyBytes(from: entry.bytes)
                return entry.bytes.count
            }
        }
        let blaster = try FrameBlaster(pool: pool, interface: link.aInterface)
        func ipLength(_ bytes: [UInt8]) -> UInt64 {
            bytes[14] >> 4 == 4 ? UInt64(bytes[16]) << 8 | UInt64(bytes[17]) : 40 + (UInt64(bytes[18]) << 8 | UInt64(bytes[19]))
        }
        for match in [PacketSink.Match.wireGuardTransport, .innerIP] {
            let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: match)
            defer { sink.close() }
            #expect(try blaster.run(.once).sent == UInt64(table.count))
            let counted = table.filter { match == .wireGuardTransport ? $0.transport : $0.innerIP }
            let counters = try sink.readSettled()
            #expect(counters.packets == UInt64(counted.count), "\(match): \(counted.map(\.name))")
            #expect(counters.bytes == counted.reduce(0) { $0 + ipLength($1.bytes) }, "\(match)")
            #expect(counters.passedPackets >= UInt64(table.count - counted.count), "\(match)")
        }
    }

    @Test("Closing the sink (or dropping it) leaves no XDP program on the interface")
    func sinkCloseRemovesProgram() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .innerIP)
        #expect(try LoadLink.hasXDP(link.b, link.bInterface))
        #expect(sink.isAttached)
        sink.close()
        sink.close()  // idempotent
        #expect(!sink.isAttached)
        #expect(!(try LoadLink.hasXDP(link.b, link.bInterface)))
        #expect(try sink.read().packets == 0, "counters stay readable after close")

        do {
            let scoped = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
            #expect(scoped.isAttached)
            #expect(try LoadLink.hasXDP(link.b, link.bInterface))
        }
        #expect(!(try LoadLink.hasXDP(link.b, link.bInterface)), "deinit detaches")

        // A second sink on an interface that has one is refused, naming the first.
        let first = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .innerIP)
        defer { first.close() }
        let second = try #require(throws: LoadError.self) {
            try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        }
        #expect(second.description.contains("xdpwg_sink_ip"))
    }

    // MARK: FrameBlaster

    @Test("A blast of N transport-shaped frames, once: the far sink counts exactly N packets and their bytes")
    func blastOnceCountsExactly() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let builder = try link.frameBuilder(port: 51820)
        let frames = 50_000
        let pool = try BlastPool(namespace: link.a.name, capacity: frames)
        #expect(pool.capacity == frames)
        // Three inner sizes in turn: the byte count checks each frame's IP length.
        let innerSizes = [64, 512, 1420]
        var expectedBytes: UInt64 = 0
        for counter in 0..<frames {
            let ipSize = builder.ipOverhead + TransportShape.overhead + innerSizes[counter % 3]
            try builder.append(to: pool, ipPacketSize: ipSize) { message in
                TransportShape.write(into: message, receiverIndex: 7, counter: UInt64(counter))
            }
            expectedBytes += UInt64(ipSize)
        }
        #expect(pool.count == frames)
        #expect(pool.isFull)
        #expect(throws: LoadError.self) { try pool.append { _ in 60 } }

        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try FrameBlaster(pool: pool, interface: link.aInterface, queue: 0,
                                       cpu: CPUTopology.allowedCores().last!)
        // The TX socket loaded no program on its interface.
        #expect(!(try LoadLink.hasXDP(link.a, link.aInterface)))

        let result = try blaster.run(.once)
        #expect(result.sent == UInt64(frames))
        #expect(result.dropped == 0)
        #expect(result.seconds > 0)
        let counters = try sink.readSettled()
        #expect(counters.packets == UInt64(frames))
        #expect(counters.bytes == expectedBytes)

        // Packets mode cycles through the pool: 1.5 passes.
        let more = try blaster.run(.packets(UInt64(frames + frames / 2)))
        #expect(more.sent == UInt64(frames + frames / 2))
        #expect(try sink.readSettled().packets == UInt64(frames * 2 + frames / 2))
    }

    @Test("Frames are sent in pool order: a socket in the far namespace reads their sequence numbers in order")
    func blastKeepsOrder() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let port: UInt16 = 6001
        let receiver = try Receiver(in: link.b, port: port)
        let builder = try link.frameBuilder(port: port)
        let frames = 2000
        let pool = try BlastPool(namespace: link.a.name, capacity: frames)
        for sequence in 0..<frames {
            try builder.append(to: pool, ipPacketSize: 100) { payload in
                payload.storeBytes(of: UInt64(sequence).bigEndian, toByteOffset: 0, as: UInt64.self)
            }
        }
        // Frame 0 as the kernel will see it: IPv4 header checksum right, UDP checksum 0.
        let first = Array(pool.frame(0))
        #expect(first.count == 114)
        #expect(Wire.internetChecksum(first[14..<34]) == 0)
        #expect(first[40] == 0 && first[41] == 0)

        // A sink that matches nothing here: the frames go through the native XDP path and on.
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try FrameBlaster(pool: pool, interface: link.aInterface)
        let result = try blaster.run(.once)
        #expect(result.sent == UInt64(frames))

        let sequences = receiver.drain().compactMap(Receiver.sequence)
        #expect(sequences == (0..<UInt64(frames)).map { $0 })
        #expect(try sink.read().packets == 0)
    }

    @Test("A blast for a duration stops early on request; the sink saw every frame sent")
    func blastStopsEarly() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let builder = try link.frameBuilder(port: 51820)
        let pool = try BlastPool(namespace: link.a.name, capacity: 256)
        for counter in 0..<256 {
            try builder.append(to: pool, ipPacketSize: 124) { message in
                TransportShape.write(into: message, receiverIndex: 1, counter: UInt64(counter))
            }
        }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try FrameBlaster(pool: pool, interface: link.aInterface, cpu: CPUTopology.allowedCores().last!)
        let blast = try blaster.start(.duration(seconds: 60))
        #expect(throws: LoadError.self, "one blast at a time") { try blaster.start(.once) }
        #expect(throws: LoadError.self, "frames are not changed during a blast") { try pool.removeAll() }
        usleep(300_000)
        blast.requestStop()
        let result = try blast.join()
        #expect(result.seconds < 10)
        #expect(result.sent > 0)
        #expect(result.cpuSeconds > 0)
        #expect(try sink.readSettled().packets == result.sent)
        // The pool is free again.
        try pool.removeAll()
        #expect(pool.count == 0)
        #expect(throws: LoadError.self, "an empty pool is refused") { try blaster.start(.once) }
    }

    @Test("A paced blast offers no more than its rate, is readable while it runs, and sends once when asked")
    func pacedBlast() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let builder = try link.frameBuilder(port: 51820)
        let pool = try BlastPool(namespace: link.a.name, capacity: 4096)
        for counter in 0..<4096 {
            try builder.append(to: pool, ipPacketSize: builder.ipOverhead + TransportShape.overhead + 64) { message in
                TransportShape.write(into: message, receiverIndex: 9, counter: UInt64(counter))
            }
        }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try FrameBlaster(pool: pool, interface: link.aInterface, cpu: CPUTopology.allowedCores().last!)
        let rate = 20_000.0
        let began = Date()
        let blast = try blaster.start(.duration(seconds: 60), frames: nil, rate: rate)
        usleep(300_000)
        let midway = blaster.framesSent()
        let midwayAt = Date().timeIntervalSince(began)
        usleep(300_000)
        blast.requestStop()
        let result = try blast.join()
        // The pacer never runs ahead of its schedule (a batch, 256 frames, of slack): the offered load is
        // what was asked for, not the generator's ceiling.
        #expect(midway > 0 && Double(midway) <= rate * midwayAt + 256, "\(midway) by \(midwayAt) s")
        #expect(Double(result.sent) <= rate * result.seconds + 256, "\(result)")
        #expect(result.sent >= midway)
        #expect(try sink.readSettled().packets == result.sent)
        // Once, paced: every frame exactly once.
        let before = try sink.readSettled().packets
        #expect(try blaster.start(.once, frames: 0..<1000, rate: 50_000).join().sent == 1000)
        #expect(try sink.readSettled().packets - before == 1000)
    }

    @Test("Bad pool and frame sizes are clear errors")
    func poolLimits() throws {
        try Privileged.require()
        let tooBig = try #require(throws: LoadError.self) { try BlastPool(namespace: nil, byteBudget: 16 << 30) }
        #expect(tooBig.description.contains("4194304 frames"))
        let zero = try #require(throws: LoadError.self) { try BlastPool(namespace: nil, capacity: 0) }
        #expect(zero.description.contains("1 to"))

        let pool = try BlastPool(namespace: nil, capacity: 4)
        let short = try #require(throws: LoadError.self) { try pool.append { _ in 10 } }
        #expect(short.description.contains("14 to 2048"))
        #expect(pool.count == 0)
        let builder = try UDPFrameBuilder(sourceMAC: .zero, destinationMAC: .broadcast, source: IPAddress("192.0.2.1")!,
                                          sourcePort: 1, destination: IPAddress("192.0.2.2")!, destinationPort: 2)
        #expect(builder.ipPacketSizes == 28...2034)
        let large = try #require(throws: LoadError.self) { try builder.append(to: pool, ipPacketSize: 2035) }
        #expect(large.description.contains("28 to 2034"))
        let mixed = try #require(throws: LoadError.self) {
            try UDPFrameBuilder(sourceMAC: .zero, destinationMAC: .zero, source: IPAddress("192.0.2.1")!, sourcePort: 1,
                                destination: IPAddress("2001:db8::1")!, destinationPort: 2)
        }
        #expect(mixed.description.contains("not the same IP version"))
        #expect(try builder.append(to: pool, ipPacketSize: 2034) == 0)
        #expect(pool.frame(0).count == 2048)
    }

    // MARK: LiveFrameBlaster

    @Test("Live frames, once: N frames of three sizes, the far sink counts exactly N and their bytes")
    func liveOnceCountsExactly() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let builder = try link.frameBuilder(port: 51820)
        let frames = 50_000
        let pool = try BlastPool(liveFramesCapacity: frames)
        #expect(pool.kind == .liveFrames)
        #expect(pool.maximumFrameLength == 2040)
        let innerSizes = [64, 1420, 512]
        var expectedBytes: UInt64 = 0
        for counter in 0..<frames {
            let ipSize = builder.ipOverhead + TransportShape.overhead + innerSizes[counter % 3]
            try builder.append(to: pool, ipPacketSize: ipSize) { message in
                TransportShape.write(into: message, receiverIndex: 9, counter: UInt64(counter))
            }
            expectedBytes += UInt64(ipSize)
        }
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try LiveFrameBlaster(pool: pool, namespace: link.a.name, interface: link.aInterface,
                                           cpu: CPUTopology.allowedCores().last!)
        #expect(!(try LoadLink.hasXDP(link.a, link.aInterface)), "nothing is attached on the sending side")
        guard LiveFrameBlaster.isSupported else {
            // A kernel that refuses live frames: the blast says so, and why.
            let refused = try #require(throws: LoadError.self) { try blaster.run(.once) }
            #expect(refused.description.contains("refuses BPF_PROG_TEST_RUN"))
            #expect(try sink.readSettled().packets == 0)
            return
        }
        let result = try blaster.run(.once)
        #expect(result.sent == UInt64(frames))
        let counters = try sink.readSettled()
        #expect(counters.packets == UInt64(frames))
        #expect(counters.bytes == expectedBytes)

        // A blast for a duration ends early on request; the sink saw every frame.
        let before = try sink.readSettled().packets
        let blast = try blaster.start(.duration(seconds: 60))
        #expect(throws: LoadError.self, "one blast at a time") { try blaster.start(.once) }
        usleep(300_000)
        blast.requestStop()
        let stopped = try blast.join()
        #expect(stopped.seconds < 5)
        #expect(stopped.sent > 0)
        #expect(try sink.readSettled().packets - before == stopped.sent)

        // A range, cycled: frames 10..<20 three times.
        let counted = try sink.readSettled().packets
        let more = try blaster.run(.packets(30), frames: 10..<20)
        #expect(more.sent == 30)
        #expect(try sink.readSettled().packets == counted + 30)
    }

    @Test("Live frames keep pool order: a socket behind the sink reads their sequence numbers in order")
    func liveKeepsOrder() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let port: UInt16 = 6002
        let receiver = try Receiver(in: link.b, port: port)
        let builder = try link.frameBuilder(port: port)
        let frames = 2000
        let pool = try BlastPool(liveFramesCapacity: frames)
        for sequence in 0..<frames {
            try builder.append(to: pool, ipPacketSize: 60 + sequence % 200) { payload in
                payload.storeBytes(of: UInt64(sequence).bigEndian, toByteOffset: 0, as: UInt64.self)
            }
        }
        // The peer needs an XDP program to take live frames: a sink that matches none of these.
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { sink.close() }
        let blaster = try LiveFrameBlaster(pool: pool, namespace: link.a.name, interface: link.aInterface)
        guard LiveFrameBlaster.isSupported else {
            #expect(throws: LoadError.self) { try blaster.run(.once) }
            #expect(receiver.drain().isEmpty)
            return
        }
        #expect(try blaster.run(.once).sent == UInt64(frames))
        let datagrams = receiver.drain()
        #expect(datagrams.compactMap(Receiver.sequence) == (0..<UInt64(frames)).map { $0 })
        #expect(datagrams.enumerated().allSatisfy { $0.element.count == 60 + $0.offset % 200 - 28 })
    }

    @Test("Live frames need an XDP program on the peer; the wrong pool, a bad batch size, a missing interface are clear errors")
    func liveErrors() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let pool = try BlastPool(liveFramesCapacity: 4)
        try link.frameBuilder(port: 9).append(to: pool, ipPacketSize: 100)
        let blaster = try LiveFrameBlaster(pool: pool, namespace: link.a.name, interface: link.aInterface)
        // Without an XDP program on the peer, the veth drops live frames, and says so nowhere
        // the run can see: nothing arrives. With one (a sink that passes everything here) the
        // same frame does.
        let receiver = try Receiver(in: link.b, port: 9)
        if LiveFrameBlaster.isSupported {
            #expect(try blaster.run(.once).sent == 1)
            #expect(receiver.drain().isEmpty)
            let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
            defer { sink.close() }
            #expect(try blaster.run(.once).sent == 1)
            #expect(receiver.drain().count == 1)
        }
        let pace = try #require(throws: LoadError.self) { try blaster.start(.once, frames: nil, rate: 0) }
        #expect(pace.description.contains("rate must be 1 to 1e9"))

        let umemPool = try BlastPool(namespace: link.a.name, capacity: 4)
        let wrongPool = try #require(throws: LoadError.self) {
            try LiveFrameBlaster(pool: umemPool, namespace: link.a.name, interface: link.aInterface)
        }
        #expect(wrongPool.description.contains("AF_XDP pool"))
        let wrongKind = try #require(throws: LoadError.self) { try FrameBlaster(pool: pool, interface: link.aInterface) }
        #expect(wrongKind.description.contains("live-frame pool"))
        let batch = try #require(throws: LoadError.self) {
            try LiveFrameBlaster(pool: pool, namespace: link.a.name, interface: link.aInterface, batchSize: 1000)
        }
        #expect(batch.description.contains("1 to 256"))
        let missing = try #require(throws: LoadError.self) {
            try LiveFrameBlaster(pool: pool, namespace: link.a.name, interface: "nosuch0")
        }
        #expect(missing.description.contains("nosuch0"))
        #expect(missing.description.contains("does not exist"))
        let long = try #require(throws: LoadError.self) { try pool.append { _ in 2041 } }
        #expect(long.description.contains("14 to 2040"))
    }

    // MARK: DatagramBlaster

    @Test("DatagramBlaster: every datagram arrives, in order, round robin over its destinations")
    func datagramsArrive() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let even = try Receiver(in: link.b, port: 7001)
        let odd = try Receiver(in: link.b, port: 7002)
        try link.resolveNeighbours()
        let destination = IPAddress(link.bAddress)!
        let blaster = try DatagramBlaster(namespace: link.a.name, cpu: CPUTopology.allowedCores().last!,
                                          destinations: [.init(destination, port: 7001), .init(destination, port: 7002)],
                                          packetSize: 200)
        let result = try blaster.run(.packets(3000))
        #expect(result.sent == 3000)
        let evens = even.drain(), odds = odd.drain()
        #expect(evens.compactMap(Receiver.sequence) == stride(from: 0, to: 3000, by: 2).map { UInt64($0) })
        #expect(odds.compactMap(Receiver.sequence) == stride(from: 1, to: 3000, by: 2).map { UInt64($0) })
        #expect(evens.allSatisfy { $0.count == 200 - 28 })

        // The same through an inner-IP sink: exact packets and bytes.
        let sink = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .innerIP)
        defer { sink.close() }
        #expect(try blaster.run(.packets(1000)).sent == 1000)
        let counters = try sink.readSettled()
        #expect(counters.packets == 1000)
        #expect(counters.bytes == 1000 * 200)
    }

    @Test("DatagramBlaster refuses bad input clearly")
    func datagramErrors() throws {
        try Privileged.require()
        let none = try #require(throws: LoadError.self) {
            try DatagramBlaster(namespace: nil, destinations: [], packetSize: 100)
        }
        #expect(none.description.contains("no destinations"))
        let v6 = try #require(throws: LoadError.self) {
            try DatagramBlaster(namespace: nil, destinations: [.init(IPAddress("2001:db8::1")!, port: 1)], packetSize: 100)
        }
        #expect(v6.description.contains("IPv6"))
        let small = try #require(throws: LoadError.self) {
            try DatagramBlaster(namespace: nil, destinations: [.init(IPAddress("192.0.2.1")!, port: 1)], packetSize: 27)
        }
        #expect(small.description.contains("28 to 65535"))
        let ns = try #require(throws: LoadError.self) {
            try DatagramBlaster(namespace: "xdpwg-missing-\(getpid())",
                                destinations: [.init(IPAddress("192.0.2.1")!, port: 1)], packetSize: 100)
        }
        #expect(ns.description.contains("no network namespace of that name"))
        // No route: the kernel's refusal comes back with its errno and the destination.
        let lonely = try NetworkNamespace(tag: "lt")
        defer { lonely.close() }
        let blaster = try DatagramBlaster(namespace: lonely.name, destinations: [.init(IPAddress("198.51.100.1")!, port: 9)],
                                          packetSize: 100)
        let unreachable = try #require(throws: LoadError.self) { try blaster.run(.once) }
        #expect(unreachable.description.contains("198.51.100.1:9"))
        #expect(unreachable.description.contains("unreachable"))
    }

    // MARK: wireguard-go

    @Test("Through wireguard-go: a sink on its TUN (generic XDP, no Ethernet header) counts the inner packets; a sink on the veth counts the transport packets")
    func wireGuardGoTUN() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        let left = try GoPeer(in: link.a, address: "10.99.0.1/24", listenPort: 51820)
        defer { left.close() }
        let right = try GoPeer(in: link.b, address: "10.99.0.2/24", listenPort: 51820)
        defer { right.close() }
        try left.addPeer(right, allowedIPs: "10.99.0.2/32", endpoint: "\(link.bAddress):51820")
        try right.addPeer(left, allowedIPs: "10.99.0.1/32", endpoint: "\(link.aAddress):51820")
        // A handshake first: packets sent before it completes are queued (a few) or dropped.
        try link.a.exec(["ping", "-c", "1", "-W", "5", "10.99.0.2"])

        let blaster = try DatagramBlaster(namespace: link.a.name, destinations: [.init(IPAddress("10.99.0.2")!, port: 9)],
                                          packetSize: 100)
        do {
            let tun = try PacketSink(namespace: link.b.name, interface: right.interface, match: .innerIP)
            defer { tun.close() }
            #expect(tun.framing == .ip)
            #expect(tun.attachedMode == .generic)
            #expect(try LoadLink.xdpMode(link.b, right.interface) == "generic")
            #expect(try blaster.run(.packets(200)).sent == 200)
            let counters = try tun.readSettled()
            #expect(counters.packets == 200)
            #expect(counters.bytes == 200 * 100)
        }
        #expect(!(try LoadLink.hasXDP(link.b, right.interface)))

        // The same datagrams as transport messages on the wire: 100 bytes padded to 112, plus
        // 32 bytes of WireGuard and 28 of UDP/IP.
        let wire = try PacketSink(namespace: link.b.name, interface: link.bInterface, match: .wireGuardTransport)
        defer { wire.close() }
        #expect(try blaster.run(.packets(200)).sent == 200)
        let counters = try wire.readSettled()
        #expect(counters.packets == 200)
        #expect(counters.bytes == 200 * (28 + 32 + 112))
    }

    // MARK: Ceilings

    /// Seconds per ceiling point: short by default (the test checks the accounting, not the
    /// speed); `XDPWG_CEILING_SECONDS=3` for the figures in a report.
    static var ceilingSeconds: Double {
        ProcessInfo.processInfo.environment["XDPWG_CEILING_SECONDS"].flatMap(Double.init) ?? 0.2
    }

    @Test("Ceiling measurements at 64, 512 and 1420 bytes run, account for every packet and remove their sinks")
    func ceilings() throws {
        try Privileged.require()
        let link = try LoadLink()
        defer { link.close() }
        try link.resolveNeighbours()
        let cpu = CPUTopology.allowedCores().last!
        let seconds = LoadTests.ceilingSeconds
        var lines: [String] = []
        for size in [64, 512, 1420] {
            for payload in [CeilingPayload.wireGuardTransport, .plainIP] {
                let live = !LiveFrameBlaster.isSupported ? nil : try LiveFrameBlaster.measureCeiling(
                    senderNamespace: link.a.name, senderInterface: link.aInterface, cpu: cpu,
                    receiverNamespace: link.b.name, receiverInterface: link.bInterface,
                    innerSize: size, payload: payload, seconds: seconds)
                let frames = try FrameBlaster.measureCeiling(
                    senderNamespace: link.a.name, senderInterface: link.aInterface, cpu: cpu,
                    receiverNamespace: link.b.name, receiverInterface: link.bInterface,
                    innerSize: size, payload: payload, seconds: seconds)
                for m in [live, frames].compactMap({ $0 }) {
                    #expect(m.frameLength == size + (payload == .wireGuardTransport ? 42 + 32 : 14))
                    #expect(m.sent > 0)
                    #expect(m.received == m.sent, "every frame sent reached the sink: \(m)")
                    lines.append("\(m)")
                }
            }
            let m = try DatagramBlaster.measureCeiling(
                senderNamespace: link.a.name, cpu: cpu, destination: .init(IPAddress(link.bAddress)!, port: 9),
                receiverNamespace: link.b.name, receiverInterface: link.bInterface, innerSize: size, seconds: seconds)
            #expect(m.frameLength == size + 14)
            #expect(m.sent > 0)
            #expect(m.received > 0 && m.received <= m.sent, "\(m)")
            lines.append("\(m)")
            #expect(!(try LoadLink.hasXDP(link.b, link.bInterface)), "the sink is gone")
        }
        print("Load generator ceilings, one sending core (CPU \(cpu)), veth into an XDP sink, \(seconds) s each:\n"
              + lines.map { "  " + $0 }.joined(separator: "\n"))
    }
}

/// The CPU the calling thread runs on: field 39 of /proc/thread-self/stat.
func currentCPU() -> Int? {
    guard let stat = try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")") else { return nil }
    // Fields after the command name start with the third (state).
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    return fields.count > 36 ? Int(fields[36]) : nil
}
