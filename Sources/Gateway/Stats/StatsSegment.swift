import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

// The stats segment (VPP's idea; ARCHITECTURE.md, "Shared memory"): one file in /run/xdpwg (tmpfs), mapped shared by
// the gateway, which writes it, and by `xdpwg stats` and the metrics server, which read it.
// Reading costs the data path nothing: workers keep their counters in the segment itself and
// nobody ever asks them for anything.
//
// Memory model. Every value is one 64-bit word read and written through `Atomic<UInt64>`
// (Synchronization) over the mapping with relaxed ordering: on x86-64 and arm64 that is a
// plain `mov` / `ldr` / `str`, no locked instruction, and no value is ever torn. Each word has
// exactly one writing thread (a worker for its block, the control thread for the rest).
// Records of several words that must be seen together (a tenant, a peer: an endpoint's
// address and port) carry a sequence counter (a seqlock): odd while the control thread
// rewrites the record; a reader retries until it sees the same even value before and after
// copying the record. Single counters need no such care: a reader may see one a batch old.
//
// Layout (all offsets in bytes, every section 64-byte aligned so no two writers share a
// cache line):
//   header           `StatsLayout.Header` words; `magic` is written last, with release order
//   workers[w]       queue id, core (-1: none), then `WorkerCounters.slotCount` words
//                    (`WorkerCounter`s, `DropReason`s, then `FrameGauge`s, in declaration order)
//   control          `HandshakeCounter`s then `HandshakeFailure`s
//   xdp              one word per `XDPVerdict`, then redirects per RX queue (up to 256 queues)
//   tenants[slot]    `StatsLayout.TenantWord` words
//   peers[slot]      `StatsLayout.PeerWord` words
// Names of counters are not stored: the reader is the same binary and uses the enums' `name`s;
// the header's layout version and counts must match the reader's or it refuses the segment.

/// What the gateway publishes about one tenant (from the control thread).
public struct TenantStatsRecord: Sendable, Equatable {
    /// The tenant's interface name (at most 15 bytes; a longer name is cut).
    public var name: String
    public var listenPort: UInt16
    public var peerCount: Int
    /// Summed over the tenant's peers: packets and bytes received from / sent to them.
    public var rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64
    /// Packets dropped that could be attributed to this tenant.
    public var drops: UInt64
    /// False while the tenant is down (its network namespace was deleted while running).
    public var up: Bool

    public init(name: String, listenPort: UInt16, peerCount: Int, rxPackets: UInt64 = 0, rxBytes: UInt64 = 0,
                txPackets: UInt64 = 0, txBytes: UInt64 = 0, drops: UInt64 = 0, up: Bool = true) {
        self.name = name; self.listenPort = listenPort; self.peerCount = peerCount
        self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.txPackets = txPackets; self.txBytes = txBytes
        self.drops = drops; self.up = up
    }
}

/// What the gateway publishes about one peer (from the control thread). Public data only:
/// the peer's public key and endpoint, never a private or preshared key.
public struct PeerStatsRecord: Sendable, Equatable {
    /// The slot of the peer's tenant (as given to `publishTenant`).
    public var tenantSlot: Int
    public var publicKey: PublicKey
    public var endpoint: Endpoint?
    /// Wall-clock time of the last completed handshake, in Unix nanoseconds; 0: never.
    public var lastHandshakeNanoseconds: UInt64
    /// Wall-clock creation time of the current keypair, in Unix nanoseconds; 0: none.
    public var keypairCreatedNanoseconds: UInt64
    public var rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64
    public var drops: UInt64
    /// Handshakes completed with this peer.
    public var handshakes: UInt64

    public init(tenantSlot: Int, publicKey: PublicKey, endpoint: Endpoint? = nil, lastHandshakeNanoseconds: UInt64 = 0,
                keypairCreatedNanoseconds: UInt64 = 0, rxPackets: UInt64 = 0, rxBytes: UInt64 = 0,
                txPackets: UInt64 = 0, txBytes: UInt64 = 0, drops: UInt64 = 0, handshakes: UInt64 = 0) {
        self.tenantSlot = tenantSlot; self.publicKey = publicKey; self.endpoint = endpoint
        self.lastHandshakeNanoseconds = lastHandshakeNanoseconds
        self.keypairCreatedNanoseconds = keypairCreatedNanoseconds
        self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.txPackets = txPackets; self.txBytes = txBytes
        self.drops = drops; self.handshakes = handshakes
    }
}

/// The segment's binary layout, shared by writer and reader (one binary: see the file comment).
enum StatsLayout {
    /// "XDPWGSEG" in memory order.
    static let magic: UInt64 = 0x4745_5347_5750_4458
    /// Bump on any change of the layout below or of the counter enums' cases.
    /// 2: frame gauges and the kernel's XDP_STATISTICS in the worker blocks; the uplink's
    /// state in the header, a tenant's state in its record; the dropped_too_big verdict.
    /// 3: the transport cipher backend in the header; the seal_failed drop.
    static let version: UInt64 = 3
    static let headerBytes = 256
    static let maxRedirectQueues = 256
    static let maxWorkers = 4096
    static let gatewayNameWords = 4
    static let tenantNameBytes = 16

    enum Header: Int, CaseIterable {
        case magic, version, totalSize, pid, startedNanoseconds, generation, heartbeatNanoseconds
        case workerCount, tenantCapacity, peerCapacity, rxQueueCount
        case workerSlotCount, handshakeCounterCount, handshakeFailureCount, verdictCount, redirectQueueMax
        case workersOffset, workerStride, controlOffset, xdpOffset, tenantsOffset, tenantStride, peersOffset, peerStride
        /// `gatewayNameWords` words: the gateway's name, NUL-padded.
        case name
        /// 1 while the uplink is up with a carrier, 0 while down; and how often it went down.
        case uplinkUp = 28, uplinkDownEvents
        /// The transport cipher backend in use (`cryptoCode`).
        case crypto
        var offset: Int { rawValue * 8 }
    }

    /// The header's `crypto` word: 0 not yet chosen, 1 + the index in `AEADBackend.allCases`,
    /// or `cryptoOff` (the perf lab's crypto-off mode).
    static let cryptoOff: UInt64 = 0xff
    static func cryptoCode(_ backend: AEADBackend?) -> UInt64 {
        guard let backend else { return cryptoOff }
        return UInt64(AEADBackend.allCases.firstIndex(of: backend)! + 1)
    }
    static func cryptoName(_ code: UInt64) -> String {
        if code == cryptoOff { return "off" }
        let index = Int(truncatingIfNeeded: code) - 1
        return AEADBackend.allCases.indices.contains(index) ? AEADBackend.allCases[index].name : "unknown"
    }

    /// Words of a worker's block before its counters.
    enum WorkerWord: Int { case queue, core, counters }

    enum TenantWord: Int {
        case sequence, active
        /// Two words: up to 15 bytes of name, NUL-padded.
        case name
        case listenPort = 4, peerCount, rxPackets, rxBytes, txPackets, txBytes, drops
        /// 1: up; 0: down (its namespace was deleted while running).
        case up
        case count
    }

    enum PeerWord: Int {
        case sequence, active, tenantSlot
        /// Four words: the 32 bytes of the public key.
        case publicKey
        /// 0: no endpoint; 4 or 6.
        case endpointFamily = 7
        /// Two words: 4 (IPv4, first) or 16 address bytes in network order.
        case endpointAddress
        case endpointPort = 10, lastHandshakeNanoseconds, keypairCreatedNanoseconds
        case rxPackets, rxBytes, txPackets, txBytes, drops, handshakes
        case count
    }

    static func align64(_ n: Int) -> Int { (n + 63) & ~63 }

    /// Where everything is, from the counts in the header (a reader recomputes it and checks
    /// the header's offsets against it, so it never follows an offset it did not expect).
    struct Geometry: Equatable {
        var workerCount: Int, tenantCapacity: Int, peerCapacity: Int, rxQueueCount: Int
        var workersOffset: Int, workerStride: Int, controlOffset: Int, xdpOffset: Int
        var tenantsOffset: Int, tenantStride: Int, peersOffset: Int, peerStride: Int, totalSize: Int

        init(workerCount: Int, tenantCapacity: Int, peerCapacity: Int, rxQueueCount: Int) {
            self.workerCount = workerCount; self.tenantCapacity = tenantCapacity
            self.peerCapacity = peerCapacity; self.rxQueueCount = rxQueueCount
            workersOffset = headerBytes
            workerStride = align64((WorkerWord.counters.rawValue + WorkerCounters.slotCount) * 8)
            controlOffset = workersOffset + workerCount * workerStride
            xdpOffset = controlOffset + align64((HandshakeCounter.allCases.count + HandshakeFailure.allCases.count) * 8)
            tenantsOffset = xdpOffset + align64((XDPVerdict.allCases.count + maxRedirectQueues) * 8)
            tenantStride = TenantWord.count.rawValue * 8
            peersOffset = tenantsOffset + align64(tenantCapacity * tenantStride)
            peerStride = PeerWord.count.rawValue * 8
            totalSize = peersOffset + align64(peerCapacity * peerStride)
        }
    }
}

/// Typed access to a mapped segment: relaxed 64-bit atomic loads and stores (see the file
/// comment). The reader's mapping is read-only; it only ever loads.
struct SegmentMemory: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let size: Int

    @inline(__always)
    func word(_ offset: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    @inline(__always)
    func load(_ offset: Int) -> UInt64 { word(offset).pointee.load(ordering: .relaxed) }

    @inline(__always)
    func store(_ offset: Int, _ value: UInt64) { word(offset).pointee.store(value, ordering: .relaxed) }

    func header(_ field: StatsLayout.Header) -> UInt64 { load(field.offset) }

    /// Copies the seqlocked record at `offset` (`words.count` words, the sequence first) so
    /// that all its words come from one write. The writer holds a record for nanoseconds, but
    /// may be preempted while it does: keep trying (spinning, then yielding, then sleeping)
    /// for up to a second; false means it died mid-write.
    func readRecord(at offset: Int, into words: UnsafeMutableBufferPointer<UInt64>) -> Bool {
        var attempt = 0
        var deadline: UInt64 = 0
        while true {
            let before = word(offset).pointee.load(ordering: .acquiring)
            if before & 1 == 0 {
                for i in 1..<words.count { words[i] = load(offset + 8 * i) }
                // Orders the copies above before the second read of the sequence.
                atomicMemoryFence(ordering: .acquiring)
                if load(offset) == before {
                    words[0] = before
                    return true
                }
            }
            attempt += 1
            if attempt < 100 { continue }
            if attempt == 100 { deadline = Clock.now().nanoseconds + 1_000_000_000 }
            if Clock.now().nanoseconds > deadline { return false }
            if attempt < 1000 { sched_yield() } else { usleep(50) }
        }
    }

    /// Rewrites the seqlocked record at `offset` from `words` (word 0, the sequence, is
    /// ignored). Only the control thread calls this. Skips records that have not changed, so
    /// idle peers cost a comparison and dirty no cache line (or tmpfs page).
    func writeRecord(at offset: Int, _ words: UnsafeBufferPointer<UInt64>) {
        var changed = false
        for i in 1..<words.count where load(offset + 8 * i) != words[i] { changed = true; break }
        guard changed else { return }
        let sequence = load(offset)
        store(offset, sequence &+ 1)
        // Orders the odd sequence before the record's stores (Boehm's seqlock with fences).
        atomicMemoryFence(ordering: .releasing)
        for i in 1..<words.count { store(offset + 8 * i, words[i]) }
        word(offset).pointee.store(sequence &+ 2, ordering: .releasing)
    }
}

/// The gateway's side of the stats segment: creates `/run/xdpwg/NAME.stats`, holds an
/// exclusive `flock` on it for the gateway's lifetime (a second gateway of the same name is
/// refused; a file whose lock is free was left by a gateway that died), hands the workers
/// their counter blocks and takes the control thread's publications.
///
/// Threads: `workerCounters(w)` is written by worker `w` only; every `publish…` and
/// `heartbeat` by the control thread only; `snapshot()` may be called from any thread (the
/// metrics server's). Keep the segment alive until the workers and the metrics server have
/// stopped: their counters live in its mapping, which `deinit` unmaps.
public final class StatsSegment: @unchecked Sendable {
    public let name: String
    public let path: String
    let memory: SegmentMemory
    let geometry: StatsLayout.Geometry
    private var fd: Int32
    private let inode: (dev: UInt64, ino: UInt64)

    public static let defaultDirectory = "/run/xdpwg"

    /// The segment's file for gateway `name` in `directory`.
    public static func path(name: String, directory: String = defaultDirectory) -> String {
        "\(directory)/\(name).stats"
    }

    /// Why `name` cannot name a gateway (the rule of `[Gateway] Name`), or nil.
    public static func nameProblem(_ name: String) -> String? {
        var copy = name
        return copy.withUTF8 { ConfigurationParser.gatewayNameProblem(ConfigurationParser.Value(bytes: UnsafeRawBufferPointer($0))) }
    }

    /// Creates the segment for a gateway with these workers and table capacities; its
    /// directory is created (0755) if absent. `rxQueueCount` is the uplink's number of RX
    /// queues (XDP redirects are counted per queue; at most 256 are kept).
    public static func create(name: String, directory: String = defaultDirectory,
                              workers: [(queue: UInt32, core: Int?)], tenantCapacity: Int, peerCapacity: Int,
                              rxQueueCount: Int) throws(GatewayError) -> StatsSegment {
        if let problem = nameProblem(name) { throw GatewayError("stats segment: gateway name: \(problem)") }
        guard workers.count <= StatsLayout.maxWorkers, (0...GatewaySection.tenantLimit).contains(tenantCapacity),
              (0...GatewaySection.peerLimit).contains(peerCapacity), rxQueueCount >= 0
        else {
            throw GatewayError("stats segment: \(workers.count) workers, \(tenantCapacity) tenants, \(peerCapacity) peers "
                               + "is beyond the limits (\(StatsLayout.maxWorkers), \(GatewaySection.tenantLimit), "
                               + "\(GatewaySection.peerLimit))")
        }
        if mkdir(directory, 0o755) == 0 {
            chmod(directory, 0o755)     // whatever the umask says: readers need to get in
        } else if errno != EEXIST {
            throw GatewayError("cannot create the stats directory \(directory)", errno: errno)
        }
        let path = path(name: name, directory: directory)
        let (fd, inode) = try openLocked(path: path, name: name)
        let geometry = StatsLayout.Geometry(workerCount: workers.count, tenantCapacity: tenantCapacity,
                                            peerCapacity: peerCapacity,
                                            rxQueueCount: min(rxQueueCount, StatsLayout.maxRedirectQueues))
        // Reserve the memory now (tmpfs): a write to a hole in a full tmpfs would be SIGBUS.
        let rc = posix_fallocate(fd, 0, off_t(geometry.totalSize))
        guard rc == 0 else {
            unlink(path); Glibc.close(fd)
            throw GatewayError("cannot allocate \(geometry.totalSize) bytes for the stats segment \(path)", errno: rc)
        }
        let mapped = mmap(nil, geometry.totalSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            let e = errno
            unlink(path); Glibc.close(fd)
            throw GatewayError("cannot map the stats segment \(path)", errno: e)
        }
        mapped.bindMemory(to: Atomic<UInt64>.self, capacity: geometry.totalSize / 8)
        let segment = StatsSegment(name: name, path: path, fd: fd, inode: inode,
                                   memory: SegmentMemory(base: mapped, size: geometry.totalSize), geometry: geometry)
        segment.writeHeader(workers: workers)
        return segment
    }

    /// Opens (creating) the file and takes the exclusive lock. A file whose lock is free but
    /// that holds data was left by a gateway that died: it is unlinked and a fresh file made,
    /// so a reader still mapping the old one never sees it shrink or change.
    private static func openLocked(path: String, name: String) throws(GatewayError) -> (Int32, (UInt64, UInt64)) {
        for _ in 0..<8 {
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw GatewayError("cannot create the stats segment \(path)", errno: errno) }
            var st = stat()
            guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == geteuid() else {
                Glibc.close(fd)
                throw GatewayError("\(path) is not a regular file owned by this user: refusing to use it as a stats segment")
            }
            // `xdpwg stats` takes a shared lock for a moment to tell a live segment from a
            // stale one: try for a while before calling the name taken.
            var locked = false
            for _ in 0..<50 {
                if SystemCall.retryingEINTR({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 { locked = true; break }
                guard errno == EWOULDBLOCK else {
                    let e = errno
                    Glibc.close(fd)
                    throw GatewayError("cannot lock the stats segment \(path)", errno: e)
                }
                usleep(4_000)
            }
            guard locked else {
                var header = [UInt64](repeating: 0, count: StatsLayout.Header.pid.rawValue + 1)
                let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
                Glibc.close(fd)
                let holder = n == header.count * 8 && header[0] == StatsLayout.magic ? "pid \(header[StatsLayout.Header.pid.rawValue])"
                                                                                      : "a starting process"
                throw GatewayError("a gateway named \(name) is already running (\(holder) holds \(path)); "
                                   + "give this one another [Gateway] Name")
            }
            // The holder we waited for may have unlinked the file before releasing it: the
            // lock is only ours if the path still names this file.
            var now = stat()
            guard stat(path, &now) == 0, now.st_dev == st.st_dev, now.st_ino == st.st_ino else {
                Glibc.close(fd)
                continue
            }
            if st.st_size != 0 {
                // Stale: left by a gateway that died (nobody holds the lock).
                var header = [UInt64](repeating: 0, count: StatsLayout.Header.pid.rawValue + 1)
                let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
                let owner = n == header.count * 8 && header[0] == StatsLayout.magic
                    ? "by pid \(header[StatsLayout.Header.pid.rawValue]), which is gone" : "by a gateway that is gone"
                Log.info("replaced the stale stats segment \(path) (left \(owner))")
                unlink(path)
                Glibc.close(fd)
                continue
            }
            fchmod(fd, 0o644)       // whatever the umask says: `xdpwg stats` needs no root
            return (fd, (UInt64(st.st_dev), UInt64(st.st_ino)))
        }
        throw GatewayError("cannot create the stats segment \(path): it keeps being replaced by another process")
    }

    private init(name: String, path: String, fd: Int32, inode: (UInt64, UInt64), memory: SegmentMemory,
                 geometry: StatsLayout.Geometry) {
        self.name = name; self.path = path; self.fd = fd; self.inode = inode
        self.memory = memory; self.geometry = geometry
    }

    deinit {
        close()
        munmap(memory.base, memory.size)
    }

    private func writeHeader(workers: [(queue: UInt32, core: Int?)]) {
        typealias H = StatsLayout.Header
        let g = geometry
        let now = StatsSegment.wallNanoseconds()
        let values: [(H, Int)] = [
            (.version, Int(StatsLayout.version)), (.totalSize, g.totalSize), (.pid, Int(getpid())),
            (.workerCount, g.workerCount), (.tenantCapacity, g.tenantCapacity), (.peerCapacity, g.peerCapacity),
            (.rxQueueCount, g.rxQueueCount), (.workerSlotCount, WorkerCounters.slotCount),
            (.handshakeCounterCount, HandshakeCounter.allCases.count),
            (.handshakeFailureCount, HandshakeFailure.allCases.count), (.verdictCount, XDPVerdict.allCases.count),
            (.redirectQueueMax, StatsLayout.maxRedirectQueues), (.workersOffset, g.workersOffset),
            (.workerStride, g.workerStride), (.controlOffset, g.controlOffset), (.xdpOffset, g.xdpOffset),
            (.tenantsOffset, g.tenantsOffset), (.tenantStride, g.tenantStride), (.peersOffset, g.peersOffset),
            (.peerStride, g.peerStride),
        ]
        for (field, value) in values { memory.store(field.offset, UInt64(value)) }
        memory.store(H.startedNanoseconds.offset, now)
        memory.store(H.heartbeatNanoseconds.offset, now)
        memory.store(H.uplinkUp.offset, 1)
        let nameWords = StatsSegment.pack(name, words: StatsLayout.gatewayNameWords)
        for (i, w) in nameWords.enumerated() { memory.store(H.name.offset + 8 * i, w) }
        for (w, worker) in workers.enumerated() {
            let block = g.workersOffset + w * g.workerStride
            memory.store(block, UInt64(worker.queue))
            memory.store(block + 8, UInt64(bitPattern: Int64(worker.core ?? -1)))
        }
        // Last, and with release order: a reader that sees the magic sees everything above.
        memory.word(H.magic.offset).pointee.store(StatsLayout.magic, ordering: .releasing)
    }

    // MARK: Writing

    /// Worker `worker`'s counters (index into the `workers` given to `create`), for
    /// `Worker(…, counters:)`. Only that worker may write them.
    public func workerCounters(_ worker: Int) -> WorkerCounters {
        precondition((0..<geometry.workerCount).contains(worker), "no worker \(worker) in the stats segment")
        let block = geometry.workersOffset + worker * geometry.workerStride + StatsLayout.WorkerWord.counters.rawValue * 8
        return WorkerCounters(memory: memory.base + block)
    }

    /// The control plane's handshake counters (control thread).
    public func publish(handshakes: HandshakeCounters) {
        for c in HandshakeCounter.allCases { memory.store(geometry.controlOffset + 8 * c.rawValue, handshakes[c]) }
        let failures = geometry.controlOffset + 8 * HandshakeCounter.allCases.count
        for f in HandshakeFailure.allCases { memory.store(failures + 8 * f.rawValue, handshakes[f]) }
    }

    /// The uplink XDP program's counters (`UplinkProgram.verdictCounters()` and
    /// `redirectsPerQueue()`; control thread). Queues beyond the segment's are not kept.
    public func publish(xdpVerdicts: [XDPVerdict: UInt64], redirectsPerQueue: [UInt64]) {
        for v in XDPVerdict.allCases { memory.store(geometry.xdpOffset + 8 * v.rawValue, xdpVerdicts[v] ?? 0) }
        let redirects = geometry.xdpOffset + 8 * XDPVerdict.allCases.count
        for q in 0..<geometry.rxQueueCount {
            memory.store(redirects + 8 * q, q < redirectsPerQueue.count ? redirectsPerQueue[q] : 0)
        }
    }

    /// The transport cipher backend the gateway runs; nil: none (the perf lab's crypto-off mode).
    public func publish(crypto backend: AEADBackend?) {
        memory.store(StatsLayout.Header.crypto.offset, StatsLayout.cryptoCode(backend))
    }

    /// The uplink's state (control thread).
    public func publish(uplinkUp: Bool, uplinkDownEvents: UInt64) {
        memory.store(StatsLayout.Header.uplinkUp.offset, uplinkUp ? 1 : 0)
        memory.store(StatsLayout.Header.uplinkDownEvents.offset, uplinkDownEvents)
    }

    /// Publishes tenant `slot` (0..<tenantCapacity), or marks it unused (nil). Control thread.
    public func publishTenant(slot: Int, _ record: TenantStatsRecord?) {
        precondition((0..<geometry.tenantCapacity).contains(slot), "tenant slot \(slot) beyond the stats segment's capacity")
        typealias T = StatsLayout.TenantWord
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: T.count.rawValue) { w in
            w.initialize(repeating: 0)
            if let r = record {
                w[T.active.rawValue] = 1
                let name = StatsSegment.pack(r.name, words: 2, maxBytes: StatsLayout.tenantNameBytes - 1)
                w[T.name.rawValue] = name[0]; w[T.name.rawValue + 1] = name[1]
                w[T.listenPort.rawValue] = UInt64(r.listenPort)
                w[T.peerCount.rawValue] = UInt64(max(r.peerCount, 0))
                w[T.rxPackets.rawValue] = r.rxPackets; w[T.rxBytes.rawValue] = r.rxBytes
                w[T.txPackets.rawValue] = r.txPackets; w[T.txBytes.rawValue] = r.txBytes
                w[T.drops.rawValue] = r.drops
                w[T.up.rawValue] = r.up ? 1 : 0
            }
            memory.writeRecord(at: geometry.tenantsOffset + slot * geometry.tenantStride, UnsafeBufferPointer(w))
        }
    }

    /// Publishes peer `slot` (0..<peerCapacity), or marks it unused (nil). Control thread.
    public func publishPeer(slot: Int, _ record: PeerStatsRecord?) {
        precondition((0..<geometry.peerCapacity).contains(slot), "peer slot \(slot) beyond the stats segment's capacity")
        typealias P = StatsLayout.PeerWord
        withUnsafeTemporaryAllocation(of: UInt64.self, capacity: P.count.rawValue) { w in
            w.initialize(repeating: 0)
            if let r = record {
                w[P.active.rawValue] = 1
                w[P.tenantSlot.rawValue] = UInt64(max(r.tenantSlot, 0))
                r.publicKey.key.withUnsafeBytes { key in
                    for i in 0..<4 { w[P.publicKey.rawValue + i] = key.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self) }
                }
                if let e = r.endpoint {
                    w[P.endpointFamily.rawValue] = e.address.isV4 ? 4 : 6
                    var address = e.address.bytes
                    address += [UInt8](repeating: 0, count: 16 - address.count)
                    address.withUnsafeBytes { a in
                        w[P.endpointAddress.rawValue] = a.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
                        w[P.endpointAddress.rawValue + 1] = a.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                    }
                    w[P.endpointPort.rawValue] = UInt64(e.port)
                }
                w[P.lastHandshakeNanoseconds.rawValue] = r.lastHandshakeNanoseconds
                w[P.keypairCreatedNanoseconds.rawValue] = r.keypairCreatedNanoseconds
                w[P.rxPackets.rawValue] = r.rxPackets; w[P.rxBytes.rawValue] = r.rxBytes
                w[P.txPackets.rawValue] = r.txPackets; w[P.txBytes.rawValue] = r.txBytes
                w[P.drops.rawValue] = r.drops; w[P.handshakes.rawValue] = r.handshakes
            }
            memory.writeRecord(at: geometry.peersOffset + slot * geometry.peerStride, UnsafeBufferPointer(w))
        }
    }

    /// Tells readers the gateway is alive: bumps the generation and stamps the wall clock.
    /// The control thread calls it on every tick.
    public func heartbeat() {
        let generation = StatsLayout.Header.generation.offset
        memory.store(generation, memory.load(generation) &+ 1)
        memory.store(StatsLayout.Header.heartbeatNanoseconds.offset, StatsSegment.wallNanoseconds())
    }

    /// A snapshot of everything, read from this process's own mapping (the metrics server).
    public func snapshot() -> StatsSnapshot {
        StatsSnapshot(reading: memory, geometry: geometry)
    }

    /// Removes the file and releases the lock (idempotent; also done by `deinit`). The
    /// mapping stays until `deinit`, so late writes by workers still land somewhere.
    public func close() {
        guard fd >= 0 else { return }
        var st = stat()
        if stat(path, &st) == 0, UInt64(st.st_dev) == inode.dev, UInt64(st.st_ino) == inode.ino { unlink(path) }
        // Explicitly: the mapping keeps the open file, and with it the lock, alive past close(2).
        flock(fd, LOCK_UN)
        Glibc.close(fd)
        fd = -1
    }

    // MARK: Helpers

    /// The wall clock in Unix nanoseconds.
    public static func wallNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// The wall-clock time, in Unix nanoseconds rounded down to the millisecond, of a
    /// monotonic `instant` in the past (a keypair's `createdAt`). Both clocks are read here,
    /// back to back; the rounding keeps the result the same from one call to the next, so an
    /// unchanged peer record is not rewritten.
    public static func wallNanoseconds(of instant: Instant) -> UInt64 {
        let monotonic = Clock.now().nanoseconds, wall = wallNanoseconds()
        let ago = monotonic > instant.nanoseconds ? monotonic - instant.nanoseconds : 0
        let then = wall > ago ? wall - ago : 0
        return then - then % 1_000_000
    }

    /// A handshake timestamp (as `Clock.wall()` makes them) in Unix nanoseconds.
    public static func unixNanoseconds(_ t: TAI64N) -> UInt64 {
        (t.seconds &- TAI64N.epochOffset) &* 1_000_000_000 &+ UInt64(t.nanoseconds)
    }

    /// `text`'s UTF-8 (cut to `maxBytes` at a character boundary) in `words` NUL-padded words.
    static func pack(_ text: String, words: Int, maxBytes: Int? = nil) -> [UInt64] {
        let limit = min(maxBytes ?? words * 8, words * 8)
        var bytes: [UInt8] = []
        for c in text { let u = Array(String(c).utf8); if bytes.count + u.count > limit { break }; bytes += u }
        bytes += [UInt8](repeating: 0, count: words * 8 - bytes.count)
        return bytes.withUnsafeBytes { b in (0..<words).map { b.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self) } }
    }

    /// The text packed by `pack`.
    static func unpack(_ words: some Collection<UInt64>) -> String {
        var bytes: [UInt8] = []
        for w in words { withUnsafeBytes(of: w) { bytes += $0 } }
        if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
