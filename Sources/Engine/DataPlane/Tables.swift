import Synchronization
import WireGuard

/// What a receiver index resolves to on the data path: one published keypair, with its
/// peer and tenant. Immutable once published; the entry owns one retain of the keypair.
/// Published as one pointer so a worker always sees a consistent triple.
public struct KeypairEntry {
    public let keypair: Unmanaged<Keypair>
    public let localIndex: UInt32
    public let peer: UInt32
    public let tenant: UInt32

    /// Control plane: a new entry holding a retain of `keypair`.
    public static func make(_ keypair: Keypair, peer: UInt32, tenant: UInt32) -> UnsafeMutablePointer<KeypairEntry> {
        let p = UnsafeMutablePointer<KeypairEntry>.allocate(capacity: 1)
        p.initialize(to: KeypairEntry(keypair: .passRetained(keypair), localIndex: keypair.localIndex,
                                      peer: peer, tenant: tenant))
        return p
    }

    /// Control plane, after quiescence: drops the retain and frees the entry.
    static func destroy(_ p: UnsafeMutablePointer<KeypairEntry>) {
        p.pointee.keypair.release()
        p.deinitialize(count: 1)
        p.deallocate()
    }
}

/// Receiver index → keypair, for every tenant: the data path's only lookup on receive.
///
/// A local index is `random high bits | slot`: the slot makes the lookup one load, the random
/// bits keep indices unpredictable (as the kernel's random indices are) and let a stale index
/// miss after its slot was reused. The control plane allocates and publishes (release
/// stores); workers load with acquire and compare the whole index.
public final class KeypairTable: @unchecked Sendable {
    public let capacity: Int
    private let mask: UInt32
    private let slots: UnsafeMutablePointer<Atomic<UInt>>
    // Control-plane state: which slots are free (used by handshakes or keypairs otherwise).
    private var free: [UInt32]

    /// `capacity` is rounded up to a power of two, at least 64.
    public init(capacity: Int) {
        var c = 64
        while c < capacity { c <<= 1 }
        self.capacity = c
        mask = UInt32(c - 1)
        slots = .allocate(capacity: c)
        for i in 0..<c { (slots + i).initialize(to: Atomic(0)) }
        free = (0..<UInt32(c)).reversed()
    }

    deinit {
        for i in 0..<capacity {
            if let p = UnsafeMutablePointer<KeypairEntry>(bitPattern: slots[i].load(ordering: .relaxed)) {
                KeypairEntry.destroy(p)
            }
        }
        slots.deinitialize(count: capacity)
        slots.deallocate()
    }

    /// What the data path holds: the slots as plain values, no reference to this object
    /// (so no reference counting per packet). Valid while the table lives.
    public var view: KeypairTableView { KeypairTableView(slots: slots, mask: mask) }

    /// The entry for `receiverIndex`, or nil (the data path uses `view.lookup`).
    public func lookup(_ receiverIndex: UInt32) -> UnsafePointer<KeypairEntry>? { view.lookup(receiverIndex) }

    // MARK: Control plane (one thread)

    /// A fresh local index whose slot is reserved until `release(index:)`; nil when full.
    public func allocateIndex(random: () -> UInt32) -> UInt32? {
        guard let slot = free.popLast() else { return nil }
        return (random() & ~mask) | slot
    }

    /// Gives a reserved slot back (a handshake that produced no keypair). The caller must
    /// have unpublished and retired whatever was published there first.
    public func release(index: UInt32) {
        free.append(index & mask)
    }

    /// Publishes `entry` at its index's slot (reserved by `allocateIndex`).
    public func publish(_ entry: UnsafeMutablePointer<KeypairEntry>) {
        slots[Int(entry.pointee.localIndex & mask)].store(UInt(bitPattern: entry), ordering: .releasing)
    }

    /// Unpublishes the entry at `index`'s slot (if it is still that index's) and returns it
    /// for retirement. The slot stays reserved: release it after quiescence.
    public func unpublish(index: UInt32) -> UnsafeMutablePointer<KeypairEntry>? {
        let slot = Int(index & mask)
        guard let p = UnsafeMutablePointer<KeypairEntry>(bitPattern: slots[slot].load(ordering: .relaxed)),
              p.pointee.localIndex == index
        else { return nil }
        slots[slot].store(0, ordering: .releasing)
        return p
    }

    public var freeSlots: Int { free.count }
}

/// The data path's view of a `KeypairTable`.
public struct KeypairTableView: @unchecked Sendable {
    let slots: UnsafeMutablePointer<Atomic<UInt>>
    let mask: UInt32

    /// The entry for `receiverIndex`, or nil. Acquire: the entry's fields were written
    /// before the control plane published it.
    @inline(__always)
    public func lookup(_ receiverIndex: UInt32) -> UnsafePointer<KeypairEntry>? {
        let bits = slots[Int(receiverIndex & mask)].load(ordering: .acquiring)
        guard let entry = UnsafePointer<KeypairEntry>(bitPattern: bits),
              entry.pointee.localIndex == receiverIndex
        else { return nil }
        return entry
    }
}

/// The per-peer state the data path reads and writes. Fixed slots, one per peer handle.
public struct PeerSlot: ~Copyable {
    /// The keypair entry to send with (the session's current keypair), or 0.
    let sending = Atomic<UInt>(0)
    /// The outer header template (`UnsafeMutablePointer<OuterHeaderTemplate>`), or 0.
    let route = Atomic<UInt>(0)
    /// The endpoint key a worker last reported as new, so each change is reported once.
    let reportedEndpoint = Atomic<UInt64>(0)
    /// The local index of the keypair a worker last reported as confirmed (received with
    /// while not yet the sending keypair), so each is reported once.
    let reportedKeypair = Atomic<UInt32>(0)
    /// Activity for the timers, in `Instant` nanoseconds: the control plane turns these into
    /// timer events. Stored at most once per millisecond per peer, to keep the line quiet.
    let lastDataReceived = Atomic<UInt64>(0)
    let lastKeepaliveReceived = Atomic<UInt64>(0)
    let lastDataSent = Atomic<UInt64>(0)
}

/// One worker's traffic counters for one peer. Each worker writes only its own rows (relaxed
/// load + store, no locked instruction, no line shared with another writer); the control
/// plane sums the rows of all workers.
public struct PeerCounterRow: ~Copyable {
    let rxPackets = Atomic<UInt64>(0), rxBytes = Atomic<UInt64>(0)
    let txPackets = Atomic<UInt64>(0), txBytes = Atomic<UInt64>(0)
    /// Packets of this peer the data path dropped after it knew the peer (replayed, failed
    /// authentication, inner source not allowed, no endpoint, too big).
    let drops = Atomic<UInt64>(0)

    @inline(__always)
    static func bump(_ a: borrowing Atomic<UInt64>, _ n: UInt64) {
        a.store(a.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }
}

/// Every peer's `PeerSlot`, indexed by the peer handle the tenants' AllowedIPs map to, and
/// each worker's `PeerCounterRow`s. Handles are reused: a removed peer's handle is given out
/// again only after quiescence, when `reset` has cleared its slot and rows.
public final class PeerTable: @unchecked Sendable {
    public let capacity: Int
    public let workerCount: Int
    let slots: UnsafeMutablePointer<PeerSlot>
    /// `workerCount` blocks of `capacity` rows.
    let rows: UnsafeMutablePointer<PeerCounterRow>
    /// One bit per handle: a worker sets it after stamping new activity in the peer's slot,
    /// the control plane takes the set bits (`takeActive`), so its timers visit only peers
    /// with something new instead of walking every peer every turn.
    let activeBits: UnsafeMutablePointer<Atomic<UInt64>>
    let activeWords: Int

    public init(capacity: Int, workerCount: Int = 1) {
        self.capacity = max(capacity, 1)
        self.workerCount = max(workerCount, 1)
        slots = .allocate(capacity: self.capacity)
        for i in 0..<self.capacity { (slots + i).initialize(to: PeerSlot()) }
        rows = .allocate(capacity: self.capacity * self.workerCount)
        for i in 0..<(self.capacity * self.workerCount) { (rows + i).initialize(to: PeerCounterRow()) }
        activeWords = (self.capacity + 63) / 64
        activeBits = .allocate(capacity: activeWords)
        for i in 0..<activeWords { (activeBits + i).initialize(to: Atomic(0)) }
    }

    deinit {
        for i in 0..<capacity {
            if let p = UnsafeMutablePointer<OuterHeaderTemplate>(bitPattern: slots[i].route.load(ordering: .relaxed)) {
                p.deallocate()
            }
        }
        slots.deinitialize(count: capacity)
        slots.deallocate()
        rows.deinitialize(count: capacity * workerCount)
        rows.deallocate()
        activeBits.deinitialize(count: activeWords)
        activeBits.deallocate()
    }

    /// What worker `worker`'s data path holds: plain pointers (no reference counting per
    /// packet). Valid while the table lives.
    public func view(worker: Int) -> PeerTableView {
        precondition(worker < workerCount, "worker \(worker) has no counter rows")
        return PeerTableView(slots: slots, rows: rows + worker * capacity, activeBits: activeBits)
    }

    /// Calls `body` with every handle whose activity stamps changed since the last call, and
    /// clears their bits. Acquire on the exchange: the stamps the worker stored before setting
    /// a bit are visible to `activity` afterwards. A bit set again while `body` runs is seen
    /// next time. Control thread only.
    public func takeActive(_ body: (UInt32) -> Void) {
        for w in 0..<activeWords where activeBits[w].load(ordering: .relaxed) != 0 {
            var bits = activeBits[w].exchange(0, ordering: .acquiring)
            while bits != 0 {
                let b = bits.trailingZeroBitCount
                bits &= bits &- 1
                body(UInt32(w * 64 + b))
            }
        }
    }

    // MARK: Control plane

    /// Clears everything the data path left in a slot whose peer is gone, before its handle
    /// is reused: call only after quiescence (no worker can hold the old peer's handle), and
    /// after the sending entry and the route were unpublished.
    public func reset(_ peer: UInt32) {
        let s = slots + Int(peer)
        s.pointee.reportedEndpoint.store(0, ordering: .relaxed)
        s.pointee.reportedKeypair.store(0, ordering: .relaxed)
        s.pointee.lastDataReceived.store(0, ordering: .relaxed)
        s.pointee.lastKeepaliveReceived.store(0, ordering: .relaxed)
        s.pointee.lastDataSent.store(0, ordering: .relaxed)
        for w in 0..<workerCount {
            let r = rows + w * capacity + Int(peer)
            r.pointee.rxPackets.store(0, ordering: .relaxed); r.pointee.rxBytes.store(0, ordering: .relaxed)
            r.pointee.txPackets.store(0, ordering: .relaxed); r.pointee.txBytes.store(0, ordering: .relaxed)
            r.pointee.drops.store(0, ordering: .relaxed)
        }
    }

    /// Publishes the keypair entry to send with (nil: none) and returns the previous one.
    /// The previous entry is still published in the keypair table; it is not retired here.
    @discardableResult
    public func setSending(_ peer: UInt32, _ entry: UnsafeMutablePointer<KeypairEntry>?) -> UnsafeMutablePointer<KeypairEntry>? {
        let old = slots[Int(peer)].sending.exchange(UInt(bitPattern: entry), ordering: .acquiringAndReleasing)
        return UnsafeMutablePointer(bitPattern: old)
    }

    /// Publishes a new outer header template; returns the old one for retirement.
    public func setRoute(_ peer: UInt32, _ template: OuterHeaderTemplate?) -> UnsafeMutableRawPointer? {
        var bits: UInt = 0
        if let template {
            let p = UnsafeMutablePointer<OuterHeaderTemplate>.allocate(capacity: 1)
            p.initialize(to: template)
            bits = UInt(bitPattern: p)
        }
        let old = slots[Int(peer)].route.exchange(bits, ordering: .acquiringAndReleasing)
        return UnsafeMutableRawPointer(bitPattern: old)
    }

    public func currentRoute(_ peer: UInt32) -> OuterHeaderTemplate? {
        UnsafePointer<OuterHeaderTemplate>(bitPattern: slots[Int(peer)].route.load(ordering: .acquiring))?.pointee
    }

    public struct Activity: Sendable, Equatable {
        public var lastDataReceived: Instant?
        public var lastKeepaliveReceived: Instant?
        public var lastDataSent: Instant?
        /// Summed over every worker's row.
        public var rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64, drops: UInt64
    }

    public func activity(_ peer: UInt32) -> Activity {
        let s = slots + Int(peer)
        func instant(_ v: UInt64) -> Instant? { v == 0 ? nil : Instant(nanoseconds: v) }
        var a = Activity(lastDataReceived: instant(s.pointee.lastDataReceived.load(ordering: .relaxed)),
                         lastKeepaliveReceived: instant(s.pointee.lastKeepaliveReceived.load(ordering: .relaxed)),
                         lastDataSent: instant(s.pointee.lastDataSent.load(ordering: .relaxed)),
                         rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: 0)
        for w in 0..<workerCount {
            let r = rows + w * capacity + Int(peer)
            a.rxPackets &+= r.pointee.rxPackets.load(ordering: .relaxed)
            a.rxBytes &+= r.pointee.rxBytes.load(ordering: .relaxed)
            a.txPackets &+= r.pointee.txPackets.load(ordering: .relaxed)
            a.txBytes &+= r.pointee.txBytes.load(ordering: .relaxed)
            a.drops &+= r.pointee.drops.load(ordering: .relaxed)
        }
        return a
    }
}

/// One worker's view of a `PeerTable`: reads of the published pointers and activity stamps,
/// and that worker's own counter rows.
public struct PeerTableView: @unchecked Sendable {
    let slots: UnsafeMutablePointer<PeerSlot>
    let rows: UnsafeMutablePointer<PeerCounterRow>
    let activeBits: UnsafeMutablePointer<Atomic<UInt64>>

    @inline(__always)
    func sendingEntry(_ peer: UInt32) -> UnsafePointer<KeypairEntry>? {
        UnsafePointer(bitPattern: slots[Int(peer)].sending.load(ordering: .acquiring))
    }

    @inline(__always)
    func route(_ peer: UInt32) -> UnsafePointer<OuterHeaderTemplate>? {
        UnsafePointer(bitPattern: slots[Int(peer)].route.load(ordering: .acquiring))
    }

    /// Stamps `now`, at most once per millisecond; true when it stored.
    @inline(__always)
    static func touch(_ a: borrowing Atomic<UInt64>, _ now: Instant) -> Bool {
        guard now.nanoseconds &- a.load(ordering: .relaxed) > 1_000_000 else { return false }
        a.store(now.nanoseconds, ordering: .relaxed)
        return true
    }

    /// Tells the control plane the peer has new activity stamps (`PeerTable.takeActive`). At
    /// most once per millisecond per stamp, and the locked OR only when the bit is clear:
    /// the packet path pays a load. Release: the stamp stored before is visible with the bit.
    @inline(__always)
    func markActive(_ peer: UInt32) {
        let word = activeBits + Int(peer >> 6)
        let bit = UInt64(1) << UInt64(peer & 63)
        if word.pointee.load(ordering: .relaxed) & bit == 0 {
            _ = word.pointee.bitwiseOr(bit, ordering: .releasing)
        }
    }

    @inline(__always)
    func noteReceived(_ peer: UInt32, bytes: Int, keepalive: Bool, now: Instant) {
        let r = rows + Int(peer)
        PeerCounterRow.bump(r.pointee.rxPackets, 1)
        PeerCounterRow.bump(r.pointee.rxBytes, UInt64(bytes))
        let s = slots + Int(peer)
        let stamped = keepalive ? PeerTableView.touch(s.pointee.lastKeepaliveReceived, now)
                                : PeerTableView.touch(s.pointee.lastDataReceived, now)
        if stamped { markActive(peer) }
    }

    @inline(__always)
    func noteSent(_ peer: UInt32, bytes: Int, now: Instant) {
        let r = rows + Int(peer)
        PeerCounterRow.bump(r.pointee.txPackets, 1)
        PeerCounterRow.bump(r.pointee.txBytes, UInt64(bytes))
        if PeerTableView.touch(slots[Int(peer)].lastDataSent, now) { markActive(peer) }
    }

    @inline(__always)
    func noteDrop(_ peer: UInt32) {
        PeerCounterRow.bump(rows[Int(peer)].drops, 1)
    }

    /// True the first time a worker sees `key` as this peer's new endpoint.
    @inline(__always)
    func shouldReportEndpoint(_ peer: UInt32, key: UInt64) -> Bool {
        let s = slots + Int(peer)
        guard s.pointee.reportedEndpoint.load(ordering: .relaxed) != key else { return false }
        s.pointee.reportedEndpoint.store(key, ordering: .relaxed)
        return true
    }

    /// Clears what `shouldReportKeypair` and `shouldReportEndpoint` remember, when the report
    /// could not be queued (the control queue was full), so the next packet reports again.
    @inline(__always)
    func forgetReports(_ peer: UInt32) {
        let s = slots + Int(peer)
        s.pointee.reportedKeypair.store(0, ordering: .relaxed)
        s.pointee.reportedEndpoint.store(0, ordering: .relaxed)
    }

    /// True the first time a worker sees keypair `localIndex` in use while it is not the
    /// peer's sending keypair.
    @inline(__always)
    func shouldReportKeypair(_ peer: UInt32, localIndex: UInt32) -> Bool {
        let s = slots + Int(peer)
        guard s.pointee.reportedKeypair.load(ordering: .relaxed) != localIndex else { return false }
        s.pointee.reportedKeypair.store(localIndex, ordering: .relaxed)
        return true
    }
}
