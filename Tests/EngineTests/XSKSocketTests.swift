import CLibXDP
import CNUMA
import Engine
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// AF_XDP sockets on a real two-queue veth pair between two network namespaces (root).
/// Side A ("xa") runs the sockets and, for receive tests, a test-only XDP program that
/// redirects UDP to port 47000 into xsks_map[rx_queue_index]; side B ("xb") is the ordinary
/// kernel stack with UDP sockets.
@Suite(.enabled(if: Privileged.shouldRun))
struct XSKSocketTests {
    static let frameSize = 2048

    /// Receive: copy mode, need_wakeup, queue 0. More datagrams than the UMEM has frames, so
    /// every frame goes round fill → RX → pool → fill several times; payloads intact.
    @Test func receivesAndRecyclesFrames() throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        try veth.steerTransmitOfB(toQueue: 0)
        let sender = try veth.b.udpSocket(port: 47_100)
        defer { close(sender) }
        let total = 1000, burst = 32, payloadLength = 200

        struct Report {
            var received = 0
            var mismatches: [String] = []
            var sequences: [UInt32] = []
            var distinctFrames = Set<UInt64>()
            var offsetsInFrame = Set<UInt64>()
            var inFlight = 0
            var poolCount = 0
            var fillWakeups = 0
            var fillNeedsWakeup = false
            var txNeedsWakeup = false
            var statistics = XskStatistics()
            var seen: [UInt64] = []
            var zeroCopy = true
            var violations = 0
        }
        let frameCount = 128
        let report = try NamespaceThread.run(in: veth.a) { () throws -> Report in
            let program = try RedirectProgram(interface: veth.interfaceA)
            defer { program.detach() }
            let umem = try Umem(frameCount: frameCount, frameSize: Self.frameSize, fillRingSize: 128,
                                completionRingSize: 64, numaNode: 0)
            let socket = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 64, txSize: 64, copyMode: true))
            try program.insert(socket: socket.fd, queue: 0)
            let loop = RxLoop(socket: socket, pool: FramePool(umem: umem))
            var r = Report()
            r.zeroCopy = socket.isZeroCopy
            var next: UInt32 = 0
            while next < total {
                for _ in 0..<burst where next < total {
                    try UDP.send(sender, Frames.payload(sequence: next, length: payloadLength),
                                 to: veth.addressA, port: RedirectProgram.port)
                    next += 1
                }
                let expected = Int(next) - r.received
                r.received += loop.receive(count: expected) { address, bytes in
                    r.distinctFrames.insert(address & ~UInt64(Self.frameSize - 1))
                    r.offsetsInFrame.insert(address & UInt64(Self.frameSize - 1))
                    let frame = Array(bytes)
                    guard frame.count == 14 + 20 + 8 + payloadLength, Array(frame[0..<6]) == veth.macA,
                          Array(frame[6..<12]) == veth.macB, frame[12] == 0x08, frame[13] == 0x00,
                          let ip = Packets.parseIPv4(Array(frame[14...])), ip.headerChecksumValid,
                          ip.source == veth.addressB, ip.destination == veth.addressA, ip.proto == 17,
                          ip.payload.count == 8 + payloadLength,
                          UInt16(ip.payload[2]) << 8 | UInt16(ip.payload[3]) == RedirectProgram.port,
                          let sequence = Frames.sequence(of: ip.payload.dropFirst(8)),
                          Array(ip.payload[8...]) == Frames.payload(sequence: sequence, length: payloadLength)
                    else {
                        r.mismatches.append("frame at \(address): \(frame.prefix(64))")
                        return
                    }
                    r.sequences.append(sequence)
                }
                if r.received < Int(next) { break }
            }
            r.inFlight = loop.inFlight
            r.poolCount = loop.pool.count
            r.fillWakeups = loop.fillWakeups
            r.violations = loop.ringInvariantViolations
            r.fillNeedsWakeup = socket.fillRing.needsWakeup
            r.txNeedsWakeup = socket.txRing.needsWakeup
            r.statistics = try socket.statistics()
            r.seen = [try program.seen(queue: 0), try program.seen(queue: 1)]
            return r
        }
        print("XSK RX: received \(report.received)/\(total) in \(report.distinctFrames.count) distinct frames; "
              + "offsets in frame \(report.offsetsInFrame.sorted()); fill wakeups asked \(report.fillWakeups); "
              + "flags now fill=\(report.fillNeedsWakeup) tx=\(report.txNeedsWakeup); \(report.statistics)")
        #expect(!report.zeroCopy)
        #expect(report.received == total)
        #expect(report.mismatches.isEmpty, "\(report.mismatches.prefix(3))")
        #expect(report.sequences == (0..<UInt32(total)).map { $0 }, "datagrams in order, none lost or repeated")
        // Frames were recycled: every frame of the UMEM was used, many times over.
        #expect(report.distinctFrames.count == frameCount)
        // Received data starts after the kernel's 256-byte XDP headroom (our UMEM headroom is 0).
        #expect(report.offsetsInFrame == [256])
        // No frame leaked: the pool holds all but those the kernel still has on the fill ring.
        #expect(report.poolCount + report.inFlight == frameCount)
        #expect(report.violations == 0, "every peeked entry released, every reserved entry submitted")
        #expect(report.statistics.rxDropped == 0)
        #expect(report.statistics.rxRingFull == 0)
        #expect(report.statistics.rxInvalidDescriptors == 0)
        // Everything arrived on RX queue 0, as steered.
        #expect(report.seen == [UInt64(total), 0])
    }

    /// Transmit: 100 frames (Ethernet + IPv4 + UDP with complete checksums) submitted at once.
    /// Copy mode sends at most XDP_MAX_TX_SKB_BUDGET per kick: 32, so the flush loop kicks
    /// several times, unless the kernel (6.17+) let the socket raise it to its ring size: then
    /// one kick sends them all.
    /// A plain UDP socket on B receives them all; every frame comes back through completion.
    /// Copy mode sends nothing until kicked, with or without need_wakeup.
    @Test(arguments: [true, false])
    func transmitsBatchLargerThanOneKick(needWakeup: Bool) throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        let receiver = try veth.b.udpSocket(port: 47_001)
        defer { close(receiver) }
        let count = 100, payloadLength = 300, frameCount = 256

        let packets = (0..<count).map { i in
            Frames.udp(sourceMAC: veth.macA, destinationMAC: veth.macB, source: veth.addressA, sourcePort: 47_002,
                       destination: veth.addressB, destinationPort: 47_001,
                       payload: Frames.payload(sequence: UInt32(i), length: payloadLength))
        }
        // The frames we emit carry correct checksums (veth does not verify them: check here).
        for p in packets {
            let ip = Array(p[14..<34]), udp = Array(p[34...])
            #expect(Wire.internetChecksum(ip) == 0)
            let pseudo = Array(ip[12..<20]) + [0, 17, UInt8(udp.count >> 8), UInt8(udp.count & 0xff)]
            #expect(Wire.internetChecksum(pseudo + udp) == 0)
        }

        struct Report { var done = false; var kicks = 0; var kickErrors: [Int32] = []; var poolCount = 0
                        var inFlight = 0; var completed = 0; var wakeupFlags: [Bool] = []; var stats = XskStatistics()
                        var outstandingBeforeKick: UInt32 = 0; var usesNeedWakeup = false; var violations = 0
                        var budget = 0 }
        let report = try NamespaceThread.run(in: veth.a) { () throws -> Report in
            let umem = try Umem(frameCount: frameCount, frameSize: Self.frameSize, fillRingSize: 64,
                                completionRingSize: 128, numaNode: nil)
            let socket = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 64, txSize: 128, copyMode: true,
                                                                       needWakeup: needWakeup))
            let loop = TxLoop(socket: socket, pool: FramePool(umem: umem))
            try loop.enqueue(packets)
            var r = Report()
            usleep(50_000)
            r.outstandingBeforeKick = socket.txRing.outstanding
            r.usesNeedWakeup = socket.usesNeedWakeup
            r.budget = socket.transmitBudget
            r.done = loop.flush()
            r.kicks = loop.kicks
            r.kickErrors = loop.kickErrors
            r.poolCount = loop.pool.count
            r.inFlight = loop.inFlight
            r.completed = loop.completed
            r.wakeupFlags = loop.txNeedsWakeupSeen
            r.violations = loop.ringInvariantViolations
            r.stats = try socket.statistics()
            return r
        }
        var received: [UInt32] = []
        while received.count < count, let datagram = try UDP.receive(receiver, timeoutMilliseconds: 2000) {
            if let s = Frames.sequence(of: datagram), datagram == Frames.payload(sequence: s, length: payloadLength) {
                received.append(s)
            }
        }
        print("XSK TX (need_wakeup \(needWakeup)): \(report.completed) completed after \(report.kicks) kicks; "
              + "tx needs_wakeup flag seen \(Set(report.wakeupFlags)); \(report.stats)")
        #expect(report.usesNeedWakeup == needWakeup)
        #expect(report.outstandingBeforeKick == UInt32(count), "copy mode transmits only when kicked")
        // Copy mode sets the TX ring's need_wakeup flag at bind and never clears it, with or
        // without XDP_USE_NEED_WAKEUP: every submit needs a kick.
        #expect(Set(report.wakeupFlags) == [true])
        #expect(report.done)
        #expect(report.kickErrors.isEmpty)
        #expect(report.violations == 0)
        let release = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? ""
        let version = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        if version.count == 2 && (version[0], version[1]) >= (6, 17) {
            #expect(report.budget == 128, "Linux \(release): the budget is raised to the TX ring's size")
        }
        #expect(report.budget == 128 || report.budget == XskSocket.defaultTransmitBudget)
        if report.budget == 128 {
            #expect(report.kicks == 1, "one kick sends the whole batch")
        } else {
            #expect(report.kicks >= (count + 31) / 32, "copy mode sends at most 32 per kick")
        }
        #expect(report.completed == count)
        #expect(report.poolCount == frameCount && report.inFlight == 0, "no frame leaked")
        #expect(report.stats.txInvalidDescriptors == 0)
        #expect(received.sorted() == (0..<UInt32(count)).map { $0 })
    }

    /// Two sockets on one UMEM: queue 0 (the UMEM's own fill/completion rings) and queue 1
    /// (xsk_socket__create_shared, rings of its own). Each receives only its queue's traffic,
    /// into frames from its own pool; the shared one also transmits.
    @Test func sharedUmemAcrossQueues() throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        let receiver = try veth.b.udpSocket(port: 47_011)
        defer { close(receiver) }
        let perPhase = 50, frameCount = 256, part = 96   // frames 0..<96 RX q0, 96..<192 RX q1, 192..<256 TX

        struct Report {
            var counts: [[Int]] = []          // [phase][queue] received
            var addressesInOwnRange = true
            var seen: [[UInt64]] = []
            var usesUmemRings: [Bool] = []
            var distinctFillRings = false
            var txDone = false
            var txCompleted = 0
            var leaks: [Int] = []
            var violations = 0
        }
        let txPackets = (0..<40).map { i in
            Frames.udp(sourceMAC: veth.macA, destinationMAC: veth.macB, source: veth.addressA, sourcePort: 47_012,
                       destination: veth.addressB, destinationPort: 47_011,
                       payload: Frames.payload(sequence: UInt32(i), length: 64))
        }
        let report = try NamespaceThread.run(in: veth.a) { () throws -> Report in
            let program = try RedirectProgram(interface: veth.interfaceA)
            defer { program.detach() }
            let umem = try Umem(frameCount: frameCount, frameSize: Self.frameSize, fillRingSize: 128,
                                completionRingSize: 64, numaNode: nil)
            let config = XskConfiguration(rxSize: 128, txSize: 64, copyMode: true)
            let first = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem, configuration: config)
            let second = try XskSocket(interface: veth.interfaceA, queue: 1, umem: umem, configuration: config)
            try program.insert(socket: first.fd, queue: 0)
            try program.insert(socket: second.fd, queue: 1)
            var r = Report()
            r.usesUmemRings = [first.usesUmemRings, second.usesUmemRings]
            r.distinctFillRings = first.fill == umem.fill && second.fill != umem.fill
                && second.completion != umem.completion
            let loops = [RxLoop(socket: first, pool: FramePool(umem: umem, frames: 0..<part)),
                         RxLoop(socket: second, pool: FramePool(umem: umem, frames: part..<2 * part))]
            for phase in 0..<2 {
                try veth.steerTransmitOfB(toQueue: phase)
                // A fresh socket per phase: the new XPS map applies to it from its first datagram.
                let sender = try veth.b.udpSocket(port: UInt16(47_200 + phase))
                defer { close(sender) }
                for i in 0..<perPhase {
                    try UDP.send(sender, Frames.payload(sequence: UInt32(i), length: 100), to: veth.addressA,
                                 port: RedirectProgram.port)
                }
                var counts = [0, 0]
                for (q, loop) in loops.enumerated() {
                    // The steered queue gets everything; the other must stay silent.
                    counts[q] = loop.receive(count: q == phase ? perPhase : 1,
                                             timeoutMilliseconds: q == phase ? 3000 : 300) { address, _ in
                        let frame = Int(address) / Self.frameSize
                        if !(q * part..<(q + 1) * part).contains(frame) { r.addressesInOwnRange = false }
                    }
                }
                r.counts.append(counts)
                r.seen.append([try program.seen(queue: 0), try program.seen(queue: 1)])
            }
            // Transmit through the shared socket: its own completion ring returns the frames.
            let tx = TxLoop(socket: second, pool: FramePool(umem: umem, frames: 2 * part..<frameCount))
            try tx.enqueue(txPackets)
            r.txDone = tx.flush()
            r.violations = loops[0].ringInvariantViolations + loops[1].ringInvariantViolations + tx.ringInvariantViolations
            r.txCompleted = tx.completed
            r.leaks = [loops[0].pool.count + loops[0].inFlight - part, loops[1].pool.count + loops[1].inFlight - part,
                       tx.pool.count + tx.inFlight - (frameCount - 2 * part)]
            return r
        }
        var received = 0
        while received < 40, let _ = try UDP.receive(receiver, timeoutMilliseconds: 2000) { received += 1 }
        print("XSK shared UMEM: received per phase/queue \(report.counts); XDP saw per queue \(report.seen)")
        #expect(report.usesUmemRings == [true, false])
        #expect(report.distinctFillRings)
        #expect(report.counts == [[perPhase, 0], [0, perPhase]], "each socket sees only its own queue")
        #expect(report.seen == [[UInt64(perPhase), 0], [UInt64(perPhase), UInt64(perPhase)]],
                "veth delivers on xa the RX queue numbered like xb's TX queue")
        #expect(report.addressesInOwnRange, "each socket receives into frames from its own fill ring")
        #expect(report.txDone && report.txCompleted == 40)
        #expect(received == 40)
        #expect(report.leaks == [0, 0, 0])
        #expect(report.violations == 0)
    }

    /// The kernel's counters are real: an empty fill ring drops and counts every datagram;
    /// a full RX ring counts the overflow.
    @Test func statisticsCountDrops() throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        try veth.steerTransmitOfB(toQueue: 0)
        let sender = try veth.b.udpSocket(port: 47_300)
        defer { close(sender) }

        let (initial, empty, fillFlagWhenDry, waiting, full) = try NamespaceThread.run(in: veth.a) {
            () throws -> (XskStatistics, XskStatistics, Bool, UInt32, XskStatistics) in
            let program = try RedirectProgram(interface: veth.interfaceA)
            defer { program.detach() }
            let umem = try Umem(frameCount: 64, frameSize: Self.frameSize, fillRingSize: 64, completionRingSize: 64,
                                numaNode: nil)
            let socket = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem,
                                       configuration: XskConfiguration(rxSize: 8, txSize: 64, copyMode: true))
            try program.insert(socket: socket.fd, queue: 0)
            let initial = try socket.statistics()
            // Nothing on the fill ring: 10 datagrams have nowhere to go.
            for i in 0..<10 {
                try UDP.send(sender, Frames.payload(sequence: UInt32(i), length: 64), to: veth.addressA, port: RedirectProgram.port)
            }
            usleep(100_000)
            let empty = try socket.statistics()
            let fillFlagWhenDry = socket.fillRing.needsWakeup
            // Now 64 frames on the fill ring but an 8-entry RX ring nobody reads: 20 datagrams,
            // 8 land, 12 find the RX ring full.
            let pool = FramePool(umem: umem)
            _ = socket.fillRing.replenish(from: pool, maximum: 64)
            for i in 0..<20 {
                try UDP.send(sender, Frames.payload(sequence: UInt32(i), length: 64), to: veth.addressA, port: RedirectProgram.port)
            }
            usleep(100_000)
            return (initial, empty, fillFlagWhenDry, socket.rxRing.available, try socket.statistics())
        }
        print("XSK stats: empty fill ring \(empty); full RX ring \(full)")
        #expect(initial == XskStatistics())
        #expect(waiting == 8)
        // Copy mode never asks for a fill-ring wakeup, not even when the fill ring ran dry.
        #expect(!fillFlagWhenDry)
        #expect(empty.rxDropped == 10)
        #expect(empty.rxFillRingEmpty >= 10)
        #expect(full.rxRingFull == 12)
        #expect(full.rxDropped == 10, "a full RX ring is counted apart from other drops")
    }

    /// Failures name the step, interface, queue and errno, with a hint.
    @Test func errorsAreClear() throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        let missing = "xdpwg-no\(getpid() % 100000)"
        let messages = try NamespaceThread.run(in: veth.a) { () throws -> [String: XDPError] in
            let umem = try Umem(frameCount: 64, frameSize: Self.frameSize, fillRingSize: 64, completionRingSize: 64,
                                numaNode: nil)
            let config = XskConfiguration(rxSize: 64, txSize: 64, copyMode: true)
            var errors: [String: XDPError] = [:]
            func capture(_ key: String, _ body: () throws(XDPError) -> Void) {
                do throws(XDPError) { try body() } catch { errors[key] = error }
            }
            capture("missing") { () throws(XDPError) in _ = try XskSocket(interface: missing, queue: 0, umem: umem, configuration: config) }
            capture("queue") { () throws(XDPError) in _ = try XskSocket(interface: veth.interfaceA, queue: 7, umem: umem, configuration: config) }
            let socket = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem, configuration: config)
            capture("sameUmem") { () throws(XDPError) in _ = try XskSocket(interface: veth.interfaceA, queue: 0, umem: umem, configuration: config) }
            let other = try Umem(frameCount: 64, frameSize: Self.frameSize, fillRingSize: 64, completionRingSize: 64,
                                 numaNode: nil)
            capture("otherUmem") { () throws(XDPError) in _ = try XskSocket(interface: veth.interfaceA, queue: 0, umem: other, configuration: config) }
            capture("frameSize") { () throws(XDPError) in _ = try Umem(frameCount: 64, frameSize: 1000, fillRingSize: 64, completionRingSize: 64, numaNode: nil) }
            capture("ringSize") { () throws(XDPError) in _ = try XskSocket(interface: veth.interfaceA, queue: 1, umem: umem,
                                                    configuration: XskConfiguration(rxSize: 100, txSize: 64)) }
            capture("numa") { () throws(XDPError) in _ = try Umem(frameCount: 64, fillRingSize: 64, completionRingSize: 64, numaNode: 4096) }
            withExtendedLifetime(socket) {}
            return errors
        }
        for (key, error) in messages.sorted(by: { $0.key < $1.key }) { print("XSK error \(key): \(error)") }

        let missingError = try #require(messages["missing"])
        #expect(missingError.code == ENODEV)
        #expect(missingError.description.contains(missing) && missingError.description.contains("ENODEV")
                && missingError.description.contains("no such interface"))
        let queueError = try #require(messages["queue"])
        #expect(queueError.code == EINVAL && queueError.queue == 7 && queueError.description.contains("queue 7"))
        let same = try #require(messages["sameUmem"])
        #expect(same.code == EBUSY)
        let other = try #require(messages["otherUmem"])
        #expect(other.code == EBUSY && other.description.contains("already has an AF_XDP socket"))
        let frameSizeError = try #require(messages["frameSize"])
        #expect(frameSizeError.code == EINVAL)
        let ringSizeError = try #require(messages["ringSize"])
        #expect(ringSizeError.description.contains("power of two"))
        let numaError = try #require(messages["numa"])
        #expect(numaError.code == EINVAL)
    }

    /// Busy-poll options reach the socket; huge pages fall back to normal pages when none are
    /// reserved; a NUMA-bound UMEM is populated on its node.
    @Test func busyPollHugePagesAndNUMA() throws {
        try Privileged.require()
        let veth = try MultiQueueVeth()
        defer { veth.close() }
        struct Report { var options: [Int32] = []; var hugePages = false; var nodes: Set<Int32> = []; var pages = 0 }
        let report = try NamespaceThread.run(in: veth.a) { () throws -> Report in
            let umem = try Umem(frameCount: 1024, frameSize: Self.frameSize, fillRingSize: 64, completionRingSize: 64,
                                numaNode: 0, hugePages: true)
            let socket = try XskSocket(interface: veth.interfaceA, queue: 1, umem: umem,
                                       configuration: XskConfiguration(rxSize: 64, txSize: 64, copyMode: true,
                                                                       busyPoll: .init(timeoutMicroseconds: 37, budget: 48)))
            var r = Report()
            for option: Int32 in [69 /* SO_PREFER_BUSY_POLL */, SO_BUSY_POLL, 70 /* SO_BUSY_POLL_BUDGET */] {
                var value: Int32 = -1
                var length = socklen_t(4)
                r.options.append(getsockopt(socket.fd, SOL_SOCKET, option, &value, &length) == 0 ? value : -errno)
            }
            r.hugePages = umem.usesHugePages
            // Ask the kernel where each page lives (nodes = nil: query only).
            let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
            r.pages = umem.mappedLength / pageSize
            var pages: [UnsafeMutableRawPointer?] = (0..<r.pages).map { umem.base + $0 * pageSize }
            var status = [Int32](repeating: -1, count: r.pages)
            _ = numa_move_pages(0, UInt(r.pages), &pages, nil, &status, 0)
            r.nodes = Set(status)
            return r
        }
        let hugePagesReserved = (try? String(contentsOfFile: "/proc/sys/vm/nr_hugepages", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        print("XSK busy poll options \(report.options); huge pages \(report.hugePages) (reserved \(hugePagesReserved)); "
              + "UMEM pages on nodes \(report.nodes)")
        // SO_BUSY_POLL_BUDGET can be set but not read back (getsockopt: ENOPROTOOPT).
        #expect(report.options == [1, 37, 48] || report.options == [1, 37, -ENOPROTOOPT])
        #expect(report.hugePages == (hugePagesReserved >= 1))
        // Every page is present (populated) and on node 0; a missing page would report -ENOENT.
        #expect(report.nodes == [0])
    }
}
