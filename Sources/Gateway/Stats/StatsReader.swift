import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg stats`' side: maps a running gateway's segment read-only. Needs no privileges (the
/// file is 0644) and never disturbs the gateway.
public final class StatsReader: @unchecked Sendable {
    public let name: String
    public let path: String
    let memory: SegmentMemory
    let geometry: StatsLayout.Geometry

    /// Opens gateway `name`'s segment; throws, with a message for people, when no such gateway
    /// is running, its segment is stale (the gateway died) or was written by another xdpwg.
    public static func open(name: String, directory: String = StatsSegment.defaultDirectory) throws(GatewayError) -> StatsReader {
        if let problem = StatsSegment.nameProblem(name) { throw GatewayError("gateway name: \(problem)") }
        let path = StatsSegment.path(name: name, directory: directory)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { throw GatewayError("no gateway named \(name) is running (no \(path))") }
            throw GatewayError("cannot open the stats segment \(path)", errno: errno)
        }
        defer { Glibc.close(fd) }      // the mapping outlives the descriptor
        // The gateway holds an exclusive lock for its lifetime: if a shared one is granted,
        // nobody does, and the file was left by a gateway that died.
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            throw GatewayError("gateway \(name) is not running (its stats segment \(path) is stale)")
        }
        // A gateway that is starting has the lock but may not have sized or filled the file.
        let memory: SegmentMemory
        var waited = 0
        while true {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw GatewayError("cannot stat \(path)", errno: errno) }
            let size = Int(st.st_size)
            if size >= StatsLayout.headerBytes {
                guard let m = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), m != MAP_FAILED else {
                    throw GatewayError("cannot map the stats segment \(path)", errno: errno)
                }
                let candidate = SegmentMemory(base: m, size: size)
                if candidate.word(0).pointee.load(ordering: .acquiring) != 0 { memory = candidate; break }
                munmap(m, size)
            }
            guard waited < 100 else { throw GatewayError("gateway \(name) is starting: its stats segment \(path) is not ready yet") }
            waited += 1
            usleep(10_000)
        }
        do throws(GatewayError) {
            let geometry = try validate(memory, path: path)
            return StatsReader(name: name, path: path, memory: memory, geometry: geometry)
        } catch {
            munmap(memory.base, memory.size)
            throw error
        }
    }

    /// Checks the header against this binary's layout and the mapping's size.
    private static func validate(_ memory: SegmentMemory, path: String) throws(GatewayError) -> StatsLayout.Geometry {
        typealias H = StatsLayout.Header
        guard memory.header(.magic) == StatsLayout.magic else {
            throw GatewayError("\(path) is not an xdpwg stats segment")
        }
        let differentBinary = "use the xdpwg binary the gateway runs"
        let version = memory.header(.version)
        guard version == StatsLayout.version else {
            throw GatewayError("\(path) has stats layout version \(version); this xdpwg reads version "
                               + "\(StatsLayout.version): \(differentBinary)")
        }
        let counts: [(H, Int)] = [
            (.workerSlotCount, WorkerCounters.slotCount), (.handshakeCounterCount, HandshakeCounter.allCases.count),
            (.handshakeFailureCount, HandshakeFailure.allCases.count), (.verdictCount, XDPVerdict.allCases.count),
            (.redirectQueueMax, StatsLayout.maxRedirectQueues),
        ]
        for (field, expected) in counts where memory.header(field) != UInt64(expected) {
            throw GatewayError("\(path) was written by another build of xdpwg (\(field) is \(memory.header(field)), "
                               + "this xdpwg has \(expected)): \(differentBinary)")
        }
        let workers = memory.header(.workerCount), tenants = memory.header(.tenantCapacity)
        let peers = memory.header(.peerCapacity), queues = memory.header(.rxQueueCount)
        guard workers <= UInt64(StatsLayout.maxWorkers), tenants <= UInt64(GatewaySection.tenantLimit),
              peers <= UInt64(GatewaySection.peerLimit), queues <= UInt64(StatsLayout.maxRedirectQueues)
        else { throw GatewayError("\(path) is corrupt: its capacities are out of range") }
        let g = StatsLayout.Geometry(workerCount: Int(workers), tenantCapacity: Int(tenants), peerCapacity: Int(peers),
                                     rxQueueCount: Int(queues))
        let offsets: [(H, Int)] = [
            (.totalSize, g.totalSize), (.workersOffset, g.workersOffset), (.workerStride, g.workerStride),
            (.controlOffset, g.controlOffset), (.xdpOffset, g.xdpOffset), (.tenantsOffset, g.tenantsOffset),
            (.tenantStride, g.tenantStride), (.peersOffset, g.peersOffset), (.peerStride, g.peerStride),
        ]
        for (field, expected) in offsets where memory.header(field) != UInt64(expected) {
            throw GatewayError("\(path) is corrupt: \(field) is \(memory.header(field)), expected \(expected)")
        }
        guard g.totalSize <= memory.size else {
            throw GatewayError("\(path) is truncated: \(memory.size) bytes, its header says \(g.totalSize)")
        }
        return g
    }

    private init(name: String, path: String, memory: SegmentMemory, geometry: StatsLayout.Geometry) {
        self.name = name; self.path = path; self.memory = memory; self.geometry = geometry
    }

    deinit { munmap(memory.base, memory.size) }

    /// Everything, as of now.
    public func snapshot() -> StatsSnapshot {
        StatsSnapshot(reading: memory, geometry: geometry)
    }
}

extension StatsSnapshot {
    /// Reads a validated segment. Timestamps relative to now (keypair ages) use the wall
    /// clock at the time of reading.
    init(reading memory: SegmentMemory, geometry g: StatsLayout.Geometry) {
        typealias H = StatsLayout.Header
        let now = StatsSegment.wallNanoseconds()
        func seconds(_ ns: UInt64) -> Double { Double(ns / 1_000) / 1_000_000 }   // microsecond precision

        var workers: [Worker] = []
        for w in 0..<g.workerCount {
            let block = g.workersOffset + w * g.workerStride
            let slots = block + StatsLayout.WorkerWord.counters.rawValue * 8
            var counters: [String: UInt64] = [:], drops: [String: UInt64] = [:], frames: [String: UInt64] = [:]
            for c in WorkerCounter.allCases { counters[c.name] = memory.load(slots + 8 * c.rawValue) }
            for r in DropReason.allCases {
                drops[r.name] = memory.load(slots + 8 * (WorkerCounter.allCases.count + r.rawValue))
            }
            let gauges = slots + 8 * (WorkerCounter.allCases.count + DropReason.allCases.count)
            for f in FrameGauge.allCases { frames[f.name] = memory.load(gauges + 8 * f.rawValue) }
            let core = Int64(bitPattern: memory.load(block + 8))
            workers.append(Worker(index: w, queue: UInt32(truncatingIfNeeded: memory.load(block)),
                                  core: core < 0 ? nil : Int(core), counters: counters, drops: drops, frames: frames))
        }

        var handshakeCounts: [String: UInt64] = [:], failures: [String: UInt64] = [:]
        for c in HandshakeCounter.allCases { handshakeCounts[c.name] = memory.load(g.controlOffset + 8 * c.rawValue) }
        for f in HandshakeFailure.allCases {
            failures[f.name] = memory.load(g.controlOffset + 8 * (HandshakeCounter.allCases.count + f.rawValue))
        }

        var verdicts: [String: UInt64] = [:]
        for v in XDPVerdict.allCases { verdicts[v.description] = memory.load(g.xdpOffset + 8 * v.rawValue) }
        let redirectsOffset = g.xdpOffset + 8 * XDPVerdict.allCases.count
        let redirects = (0..<g.rxQueueCount).map { memory.load(redirectsOffset + 8 * $0) }

        typealias T = StatsLayout.TenantWord
        var tenants: [Tenant] = []
        var tenantNames: [Int: String] = [:]
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: T.count.rawValue) { w in
            for slot in 0..<g.tenantCapacity {
                guard memory.readRecord(at: g.tenantsOffset + slot * g.tenantStride, into: w),
                      w[T.active.rawValue] != 0 else { continue }
                let name = StatsSegment.unpack(w[T.name.rawValue...(T.name.rawValue + 1)])
                tenantNames[slot] = name
                tenants.append(Tenant(slot: slot, name: name, listenPort: UInt16(truncatingIfNeeded: w[T.listenPort.rawValue]),
                                      peers: Int(truncatingIfNeeded: w[T.peerCount.rawValue]),
                                      rxPackets: w[T.rxPackets.rawValue], rxBytes: w[T.rxBytes.rawValue],
                                      txPackets: w[T.txPackets.rawValue], txBytes: w[T.txBytes.rawValue],
                                      drops: w[T.drops.rawValue], state: w[T.up.rawValue] != 0 ? "up" : "down"))
            }
        }

        typealias P = StatsLayout.PeerWord
        var peers: [Peer] = []
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: P.count.rawValue) { w in
            for slot in 0..<g.peerCapacity {
                guard memory.readRecord(at: g.peersOffset + slot * g.peerStride, into: w),
                      w[P.active.rawValue] != 0 else { continue }
                var key = Key32()
                key.withUnsafeMutableBytes { k in
                    for i in 0..<4 { k.storeBytes(of: w[P.publicKey.rawValue + i], toByteOffset: 8 * i, as: UInt64.self) }
                }
                var endpoint: String?
                let family = w[P.endpointFamily.rawValue]
                if family == 4 || family == 6 {
                    var bytes: [UInt8] = []
                    withUnsafeBytes(of: w[P.endpointAddress.rawValue]) { bytes += $0 }
                    withUnsafeBytes(of: w[P.endpointAddress.rawValue + 1]) { bytes += $0 }
                    if let address = IPAddress(bytes: bytes.prefix(family == 4 ? 4 : 16)) {
                        endpoint = Endpoint(address: address, port: UInt16(truncatingIfNeeded: w[P.endpointPort.rawValue])).description
                    }
                }
                let tenantSlot = Int(truncatingIfNeeded: w[P.tenantSlot.rawValue])
                let handshake = w[P.lastHandshakeNanoseconds.rawValue]
                let created = w[P.keypairCreatedNanoseconds.rawValue]
                peers.append(Peer(slot: slot, tenant: tenantNames[tenantSlot] ?? "#\(tenantSlot)",
                                  publicKey: PublicKey(key).base64, endpoint: endpoint,
                                  latestHandshake: Int(handshake / 1_000_000_000),
                                  keypairAge: created == 0 ? nil : Int((now > created ? now - created : 0) / 1_000_000_000),
                                  rxPackets: w[P.rxPackets.rawValue], rxBytes: w[P.rxBytes.rawValue],
                                  txPackets: w[P.txPackets.rawValue], txBytes: w[P.txBytes.rawValue],
                                  drops: w[P.drops.rawValue], handshakes: w[P.handshakes.rawValue]))
            }
        }

        let nameWords = (0..<StatsLayout.gatewayNameWords).map { memory.load(H.name.offset + 8 * $0) }
        self.init(gateway: StatsSegment.unpack(nameWords), pid: Int(memory.header(.pid)), time: seconds(now),
                  started: seconds(memory.header(.startedNanoseconds)),
                  heartbeat: seconds(memory.header(.heartbeatNanoseconds)), generation: memory.header(.generation),
                  workers: workers, handshakes: Handshakes(counters: handshakeCounts, failures: failures),
                  xdp: XDP(verdicts: verdicts, redirectsPerQueue: redirects),
                  uplink: Uplink(state: memory.header(.uplinkUp) != 0 ? "up" : "down",
                                 downEvents: memory.header(.uplinkDownEvents)),
                  crypto: StatsLayout.cryptoName(memory.header(.crypto)),
                  tenants: tenants, peers: peers)
    }
}
