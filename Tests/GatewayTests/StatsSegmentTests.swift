import Engine
import Foundation
@testable import Gateway
import Synchronization
import Testing
import TestSupport
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}

/// The message of the `GatewayError` `body` throws, or nil (and an issue) when it does not.
func gatewayErrorMessage(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do {
        try body()
        Issue.record("expected a GatewayError", sourceLocation: sourceLocation)
        return nil
    } catch let error as GatewayError {
        return error.description
    } catch {
        Issue.record("expected a GatewayError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

@Suite("Stats segment")
struct StatsSegmentTests {
    static let keyA = PrivateKey.generate().publicKey
    static let keyB = PrivateKey.generate().publicKey

    @Test("what the writer publishes, the reader reads back, field by field")
    func roundTrip() throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("rt")
            let segment = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: 1), (queue: 3, core: nil)],
                                                  tenantCapacity: 4, peerCapacity: 8, rxQueueCount: 4)
            let path = "\(dir)/\(name).stats"
            #expect(segment.path == path)
            var st = stat()
            #expect(stat(path, &st) == 0)
            #expect(st.st_mode & 0o7777 == 0o644)
            #expect(st.st_mode & S_IFMT == S_IFREG)

            // Workers write through the counters the segment hands out, from their own threads.
            DispatchQueue.concurrentPerform(iterations: 2) { w in
                let c = segment.workerCounters(w)
                for (i, k) in WorkerCounter.allCases.enumerated() { c.add(k, UInt64(100 * (w + 1) + i)) }
                for (i, r) in DropReason.allCases.enumerated() { c.drop(r, UInt64(1000 * (w + 1) + i)) }
                for (i, f) in FrameGauge.allCases.enumerated() { c.set(f, 10_000 * (w + 1) + i) }
            }

            var handshakes = HandshakeCounters()
            for (i, c) in HandshakeCounter.allCases.enumerated() { handshakes.add(c, 10 + i) }
            for (i, f) in HandshakeFailure.allCases.enumerated() { for _ in 0...i { handshakes.fail(f) } }
            segment.publish(handshakes: handshakes)
            segment.publish(xdpVerdicts: [.redirected: 500, .passed: 7, .droppedBadSize: 3], redirectsPerQueue: [200, 0, 0, 300, 99])

            segment.publishTenant(slot: 0, TenantStatsRecord(name: "acme", listenPort: 51820, peerCount: 2, rxPackets: 1,
                                                             rxBytes: 2, txPackets: 3, txBytes: 4, drops: 5))
            segment.publishTenant(slot: 2, TenantStatsRecord(name: "quote\"back\\slash", listenPort: 51821, peerCount: 1,
                                                             up: false))
            segment.publish(uplinkUp: false, uplinkDownEvents: 2)
            segment.publish(crypto: .openssl)
            segment.publishTenant(slot: 3, TenantStatsRecord(name: "gone", listenPort: 1, peerCount: 0))
            segment.publishTenant(slot: 3, nil)
            let now = StatsSegment.wallNanoseconds()
            segment.publishPeer(slot: 0, PeerStatsRecord(
                tenantSlot: 0, publicKey: Self.keyA, endpoint: Endpoint(address: IPAddress("192.0.2.7")!, port: 51820),
                lastHandshakeNanoseconds: 1_700_000_123_456_789_000, keypairCreatedNanoseconds: now - 90_000_000_000,
                rxPackets: 11, rxBytes: 12, txPackets: 13, txBytes: 14, drops: 15, handshakes: 16))
            segment.publishPeer(slot: 5, PeerStatsRecord(
                tenantSlot: 2, publicKey: Self.keyB, endpoint: Endpoint(address: IPAddress("2001:db8::1")!, port: 4500)))
            segment.publishPeer(slot: 7, PeerStatsRecord(tenantSlot: 0, publicKey: Self.keyB))
            segment.heartbeat()
            segment.heartbeat()

            let reader = try StatsReader.open(name: name, directory: dir)
            let s = reader.snapshot()
            let expected = StatsSnapshot(
                gateway: name, pid: Int(getpid()), time: s.time, started: s.started, heartbeat: s.heartbeat,
                generation: 2,
                workers: (0..<2).map { w in
                    StatsSnapshot.Worker(
                        index: w, queue: w == 0 ? 0 : 3, core: w == 0 ? 1 : nil,
                        counters: Dictionary(uniqueKeysWithValues: WorkerCounter.allCases.enumerated().map { ($1.name, UInt64(100 * (w + 1) + $0)) }),
                        drops: Dictionary(uniqueKeysWithValues: DropReason.allCases.enumerated().map { ($1.name, UInt64(1000 * (w + 1) + $0)) }),
                        frames: Dictionary(uniqueKeysWithValues: FrameGauge.allCases.enumerated().map { ($1.name, UInt64(10_000 * (w + 1) + $0)) }))
                },
                handshakes: StatsSnapshot.Handshakes(
                    counters: Dictionary(uniqueKeysWithValues: HandshakeCounter.allCases.enumerated().map { ($1.name, UInt64(10 + $0)) }),
                    failures: Dictionary(uniqueKeysWithValues: HandshakeFailure.allCases.enumerated().map { ($1.name, UInt64($0 + 1)) })),
                xdp: StatsSnapshot.XDP(
                    verdicts: ["redirected": 500, "passed": 7, "dropped_no_socket": 0, "dropped_fragment": 0,
                               "dropped_bad_length": 0, "dropped_bad_type": 0, "dropped_bad_size": 3,
                               "dropped_too_big": 0],
                    redirectsPerQueue: [200, 0, 0, 300]),
                uplink: .init(state: "down", downEvents: 2),
                crypto: "openssl",
                tenants: [
                    .init(slot: 0, name: "acme", listenPort: 51820, peers: 2, rxPackets: 1, rxBytes: 2, txPackets: 3, txBytes: 4, drops: 5),
                    // Names are kept to 15 bytes, as interface names are.
                    .init(slot: 2, name: "quote\"back\\slas", listenPort: 51821, peers: 1, rxPackets: 0, rxBytes: 0, txPackets: 0,
                          txBytes: 0, drops: 0, state: "down"),
                ],
                peers: [
                    .init(slot: 0, tenant: "acme", publicKey: Self.keyA.base64, endpoint: "192.0.2.7:51820",
                          latestHandshake: 1_700_000_123, keypairAge: 90, rxPackets: 11, rxBytes: 12, txPackets: 13,
                          txBytes: 14, drops: 15, handshakes: 16),
                    .init(slot: 5, tenant: "quote\"back\\slas", publicKey: Self.keyB.base64, endpoint: "[2001:db8::1]:4500",
                          latestHandshake: 0, keypairAge: nil, rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: 0,
                          handshakes: 0),
                    .init(slot: 7, tenant: "acme", publicKey: Self.keyB.base64, endpoint: nil, latestHandshake: 0,
                          keypairAge: nil, rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: 0, handshakes: 0),
                ])
            // The keypair age is counted from the moment of reading: 90 s, or 91 on a slow machine.
            var adjusted = s
            if let age = s.peers.first?.keypairAge, (90...91).contains(age) { adjusted.peers[0].keypairAge = 90 }
            #expect(adjusted == expected)
            let wall = Double(StatsSegment.wallNanoseconds()) / 1e9
            #expect(abs(s.time - wall) < 5 && abs(s.started - wall) < 60 && s.heartbeat >= s.started && s.heartbeat <= s.time)

            // The writer's own view (the metrics server's) is the same.
            var own = segment.snapshot()
            own.time = s.time
            if let age = own.peers.first?.keypairAge, (90...91).contains(age) { own.peers[0].keypairAge = 90 }
            #expect(own == adjusted)

            // Unpublished peers disappear; close removes the file.
            segment.publishPeer(slot: 7, nil)
            #expect(reader.snapshot().peers.map(\.slot) == [0, 5])
            segment.close()
            #expect(access(path, F_OK) != 0)
        }
    }

    @Test("a second gateway of the same name is refused, naming the pid that holds the segment")
    func secondWriterRefused() throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("lock")
            let first = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: nil)],
                                                tenantCapacity: 1, peerCapacity: 1, rxQueueCount: 1)
            let message = gatewayErrorMessage {
                _ = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: nil)],
                                            tenantCapacity: 1, peerCapacity: 1, rxQueueCount: 1)
            }
            #expect(message == "a gateway named \(name) is already running (pid \(getpid()) holds \(dir)/\(name).stats); "
                    + "give this one another [Gateway] Name")
            // The refusal touched nothing: the first gateway's segment still reads.
            #expect(try StatsReader.open(name: name, directory: dir).snapshot().workers.count == 1)
            first.close()
            // Once it is gone, the name is free again.
            let second = try StatsSegment.create(name: name, directory: dir, workers: [], tenantCapacity: 1, peerCapacity: 1,
                                                 rxQueueCount: 0)
            second.close()
        }
    }

    @Test("a segment left by a gateway that died is called stale, and a new gateway replaces it")
    func staleSegment() throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("live"), staleName = SegmentNames.next("stale")
            let segment = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: nil)],
                                                  tenantCapacity: 1, peerCapacity: 1, rxQueueCount: 1)
            segment.workerCounters(0).add(.batches, 42)
            // A second name for the file, which outlives the writer's lock: what a gateway
            // killed with SIGKILL leaves behind.
            let stalePath = "\(dir)/\(staleName).stats"
            #expect(link(segment.path, stalePath) == 0)
            let oldReader = try StatsReader.open(name: name, directory: dir)
            segment.close()
            let message = gatewayErrorMessage { _ = try StatsReader.open(name: staleName, directory: dir) }
            #expect(message == "gateway \(staleName) is not running (its stats segment \(stalePath) is stale)")

            var before = stat()
            #expect(stat(stalePath, &before) == 0)
            let replacement = try StatsSegment.create(name: staleName, directory: dir, workers: [(queue: 5, core: nil)],
                                                      tenantCapacity: 1, peerCapacity: 1, rxQueueCount: 1)
            var after = stat()
            #expect(stat(stalePath, &after) == 0)
            #expect(before.st_ino != after.st_ino, "the stale file is replaced, not rewritten under its readers")
            let fresh = try StatsReader.open(name: staleName, directory: dir).snapshot()
            #expect(fresh.workers.map(\.queue) == [5])
            #expect(fresh.workers[0].counters["batches"] == 0)
            // A reader that mapped the old file still reads it, unchanged.
            #expect(oldReader.snapshot().workers[0].counters["batches"] == 42)
            replacement.close()
        }
    }

    @Test("no segment: the reader says no such gateway is running")
    func noSegment() throws {
        try withStatsDirectory { dir in
            let message = gatewayErrorMessage { _ = try StatsReader.open(name: "absent", directory: dir) }
            #expect(message == "no gateway named absent is running (no \(dir)/absent.stats)")
            let noDirectory = gatewayErrorMessage { _ = try StatsReader.open(name: "absent", directory: dir + "/missing") }
            #expect(noDirectory == "no gateway named absent is running (no \(dir)/missing/absent.stats)")
            let badName = gatewayErrorMessage { _ = try StatsReader.open(name: "../etc", directory: dir) }
            #expect(badName?.hasPrefix("gateway name: '../etc' may hold only letters") == true)
        }
    }

    @Test("a segment of another layout version or another build is refused")
    func versionMismatch() throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("version")
            let segment = try StatsSegment.create(name: name, directory: dir, workers: [(queue: 0, core: nil)],
                                                  tenantCapacity: 1, peerCapacity: 1, rxQueueCount: 1)
            defer { segment.close() }
            func poke(_ field: StatsLayout.Header, _ value: UInt64) {
                let fd = open(segment.path, O_WRONLY)
                var v = value
                #expect(pwrite(fd, &v, 8, off_t(field.offset)) == 8)
                close(fd)
            }
            poke(.version, 99)
            let message = gatewayErrorMessage { _ = try StatsReader.open(name: name, directory: dir) }
            #expect(message == "\(segment.path) has stats layout version 99; this xdpwg reads version \(StatsLayout.version): "
                    + "use the xdpwg binary the gateway runs")
            poke(.version, StatsLayout.version)
            poke(.workerSlotCount, 3)
            let build = gatewayErrorMessage { _ = try StatsReader.open(name: name, directory: dir) }
            #expect(build == "\(segment.path) was written by another build of xdpwg (workerSlotCount is 3, this xdpwg has "
                    + "\(WorkerCounters.slotCount)): use the xdpwg binary the gateway runs")
            poke(.workerSlotCount, UInt64(WorkerCounters.slotCount))
            poke(.peerStride, 8)
            let corrupt = gatewayErrorMessage { _ = try StatsReader.open(name: name, directory: dir) }
            #expect(corrupt == "\(segment.path) is corrupt: peerStride is 8, expected \(StatsLayout.PeerWord.count.rawValue * 8)")
            poke(.peerStride, UInt64(StatsLayout.PeerWord.count.rawValue * 8))
            poke(.magic, 0x1234)
            let magic = gatewayErrorMessage { _ = try StatsReader.open(name: name, directory: dir) }
            #expect(magic == "\(segment.path) is not an xdpwg stats segment")
            poke(.magic, StatsLayout.magic)
            #expect(try StatsReader.open(name: name, directory: dir).snapshot().gateway == name)
        }
    }

    @Test("a locked segment whose header is not written yet is reported as starting")
    func startingGateway() throws {
        try withStatsDirectory { dir in
            let path = "\(dir)/starting.stats"
            let fd = open(path, O_RDWR | O_CREAT, 0o644)
            defer { close(fd) }
            #expect(flock(fd, LOCK_EX) == 0)
            #expect(ftruncate(fd, 4096) == 0)
            let message = gatewayErrorMessage { _ = try StatsReader.open(name: "starting", directory: dir) }
            #expect(message == "gateway starting is starting: its stats segment \(path) is not ready yet")
        }
    }

    @Test("peer records are never read torn while the control thread rewrites them")
    func seqlockNeverTorn() throws {
        try withStatsDirectory { dir in
            let name = SegmentNames.next("seq")
            let segment = try StatsSegment.create(name: name, directory: dir, workers: [], tenantCapacity: 1,
                                                  peerCapacity: 1, rxQueueCount: 0)
            defer { segment.close() }
            segment.publishTenant(slot: 0, TenantStatsRecord(name: "t", listenPort: 1, peerCount: 1))
            // Two versions of one peer whose every field differs.
            let a = PeerStatsRecord(tenantSlot: 0, publicKey: Self.keyA, endpoint: Endpoint(address: IPAddress("10.0.0.1")!, port: 1111),
                                    lastHandshakeNanoseconds: 1_000_000_000_000, rxPackets: 1, rxBytes: 1, txPackets: 1,
                                    txBytes: 1, drops: 1, handshakes: 1)
            let b = PeerStatsRecord(tenantSlot: 0, publicKey: Self.keyB,
                                    endpoint: Endpoint(address: IPAddress("2001:db8::ffff:2")!, port: 2222),
                                    lastHandshakeNanoseconds: 2_000_000_000_000, rxPackets: 2, rxBytes: 2, txPackets: 2,
                                    txBytes: 2, drops: 2, handshakes: 2)
            segment.publishPeer(slot: 0, a)
            let reader = try StatsReader.open(name: name, directory: dir)
            let stop = Flag(), stopped = Flag()
            let writer = Thread {
                var flip = false
                while !stop.value.load(ordering: .relaxed) {
                    segment.publishPeer(slot: 0, flip ? a : b)
                    flip.toggle()
                    // Far busier than a control thread (which rewrites a record at most every
                    // tick), but leaves the reader a moment when both share a core.
                    sched_yield()
                }
                stopped.value.store(true, ordering: .releasing)
            }
            writer.start()
            defer {
                stop.value.store(true, ordering: .relaxed)
                while !stopped.value.load(ordering: .acquiring) { usleep(100) }
            }
            let allowed: [(String, String, Int, UInt64)] = [
                (Self.keyA.base64, "10.0.0.1:1111", 1000, 1), (Self.keyB.base64, "[2001:db8::ffff:2]:2222", 2000, 2),
            ]
            var seen = Set<String>()
            for _ in 0..<20_000 {
                guard let p = reader.snapshot().peers.first else { Issue.record("the peer vanished"); return }
                let consistent = allowed.contains { key, endpoint, handshake, n in
                    p.publicKey == key && p.endpoint == endpoint && p.latestHandshake == handshake && p.rxPackets == n
                        && p.rxBytes == n && p.txPackets == n && p.txBytes == n && p.drops == n && p.handshakes == n
                }
                if !consistent { Issue.record("torn peer record: \(p)"); return }
                seen.insert(p.publicKey)
            }
            #expect(seen.count == 2, "the writer ran while the reader read")
        }
    }

    @Test("names that are not gateway names are refused before any file is made")
    func badName() throws {
        try withStatsDirectory { dir in
            let message = gatewayErrorMessage {
                _ = try StatsSegment.create(name: "a/b", directory: dir, workers: [], tenantCapacity: 1, peerCapacity: 1,
                                            rxQueueCount: 0)
            }
            #expect(message == "stats segment: gateway name: 'a/b' may hold only letters, digits, '-' and '_', and not start with '-'")
            let contents = try FileManager.default.contentsOfDirectory(atPath: dir)
            #expect(contents.isEmpty)
        }
    }

    @Test("the directory is created 0755 and the segment 0644 whatever the umask")
    func modes() throws {
        try withStatsDirectory { dir in
            let sub = dir + "/run"
            let segment = try withProcessUmask(0o077) {
                try StatsSegment.create(name: "modes", directory: sub, workers: [], tenantCapacity: 1,
                                        peerCapacity: 1, rxQueueCount: 0)
            }
            defer { segment.close() }
            var st = stat()
            #expect(stat(sub, &st) == 0 && st.st_mode & 0o7777 == 0o755)
            #expect(stat(segment.path, &st) == 0 && st.st_mode & 0o7777 == 0o644)
        }
    }

    @Test("handshake timestamps and monotonic instants convert to Unix nanoseconds")
    func timeConversions() {
        let t = TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 0)
        #expect(StatsSegment.unixNanoseconds(t) == 1_700_000_000_000_000_000)
        let before = StatsSegment.wallNanoseconds()
        let instant = Instant(nanoseconds: Clock.now().nanoseconds - 10_000_000_000)
        let tenSecondsAgo = StatsSegment.wallNanoseconds(of: instant)
        let after = StatsSegment.wallNanoseconds()
        #expect(tenSecondsAgo >= before - 10_001_000_000 && tenSecondsAgo <= after - 10_000_000_000)
        #expect(tenSecondsAgo % 1_000_000 == 0)
        // Stable from call to call (but for a millisecond boundary crossed between the reads).
        let again = StatsSegment.wallNanoseconds(of: instant)
        #expect(again == tenSecondsAgo || again == tenSecondsAgo + 1_000_000 || again == tenSecondsAgo - 1_000_000)
    }
}
