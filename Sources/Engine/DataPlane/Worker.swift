import CLibXDP
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// One data-plane worker: one uplink queue's AF_XDP socket, the same queue of every tenant's
/// veth, a thread pinned to one core. It owns its rings, its two frame pools and its
/// counters; it shares only the read-mostly tables with the control plane.
///
/// The loop, per iteration (xdpsock's batch rule on each ring):
/// 1. announce the epoch (nothing read before is held any more);
/// 2. drain completion rings into the pools;
/// 3. uplink RX: peek ≤ 64, decrypt each frame out of place into a tenant frame, queue
///    the results per tenant, release; TX them to each tenant socket, kick;
/// 4. each tenant's RX: peek ≤ 64, encrypt into uplink frames, release; TX, kick;
/// 5. refill the fill rings; ring the control plane's doorbell if anything was queued;
/// 6. with nothing to do for a while, park and sleep in poll() on all sockets.
public final class Worker: @unchecked Sendable {
    public static let batchSize = 64
    /// Uplink frames kept out of the fill ring so encryption always finds some.
    static let transmitReserve = 512

    public let index: Int
    public let core: Int?
    public let uplink: XskSocket
    /// Tenant sockets, indexed by tenant number; all share one UMEM.
    public let tenantSockets: [XskSocket]
    public let counters: WorkerCounters
    public let control: ControlQueue
    let state: DataPlaneState
    private let stopRequested = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Set by the thread if it could not pin itself (reported, not fatal).
    public private(set) var pinningError: String?

    public init(index: Int, core: Int?, uplink: XskSocket, tenantSockets: [XskSocket], state: DataPlaneState,
                control: ControlQueue, counters: WorkerCounters = .allocate()) {
        precondition(!tenantSockets.isEmpty, "a worker serves at least one tenant")
        self.index = index
        self.core = core
        self.uplink = uplink
        self.tenantSockets = tenantSockets
        self.state = state
        self.control = control
        self.counters = counters
    }

    /// Starts the worker's thread.
    public func start() throws(XDPError) {
        let context = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw XDPError("pthread_create (worker \(index))", code: rc)
        }
        thread = t
    }

    /// Asks the thread to finish its batch and stop, and waits for it.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }

    private func run() {
        if let core {
            do throws(SystemError) { try CPUTopology.pinCurrentThread(to: core) } catch { pinningError = "\(error)" }
        }
        CPUTopology.setCurrentThreadName("xdpwg-w\(index)")
        var loop = WorkerLoop(self)
        loop.run(stop: stopRequested)
        state.epochs.park(worker: index)
    }
}

/// The worker's hot loop with everything it touches in local values: ring structs, frame
/// pools, the processor. No class property is read per packet.
struct WorkerLoop: ~Copyable {
    let index: Int
    let uplinkRx: RxRing, uplinkTx: TxRing, uplinkFill: FillRing, uplinkCompletion: CompletionRing
    let uplinkFrames: UmemFrames
    let uplinkPool: FramePool
    let uplinkSocket: XskSocket
    let tenantRx: [RxRing], tenantTx: [TxRing], tenantFill: [FillRing], tenantCompletion: [CompletionRing]
    let tenantFrames: UmemFrames
    let tenantPool: FramePool
    let tenantSockets: [XskSocket]
    /// Per tenant, up to one batch of (frame address, length) to transmit.
    let tenantPending: UnsafeMutablePointer<(UInt64, UInt32)>
    let tenantPendingCount: UnsafeMutablePointer<Int>
    let uplinkPending: UnsafeMutablePointer<(UInt64, UInt32)>
    var processor: PacketProcessor
    let counters: WorkerCounters
    let epochs: WorkerEpochs
    let pollSet: UnsafeMutablePointer<pollfd>
    let pollCount: Int
    /// Fill-ring sizes: how many frames each fill ring holds when full.
    let uplinkFillTarget: UInt32
    let tenantFillTarget: UInt32

    init(_ w: Worker) {
        index = w.index
        uplinkSocket = w.uplink
        uplinkRx = w.uplink.rxRing; uplinkTx = w.uplink.txRing
        uplinkFill = w.uplink.fillRing; uplinkCompletion = w.uplink.completionRing
        uplinkFrames = w.uplink.umem.frames
        uplinkPool = FramePool(umem: w.uplink.umem)
        tenantSockets = w.tenantSockets
        tenantRx = w.tenantSockets.map { $0.rxRing }
        tenantTx = w.tenantSockets.map { $0.txRing }
        tenantFill = w.tenantSockets.map { $0.fillRing }
        tenantCompletion = w.tenantSockets.map { $0.completionRing }
        let tenantUmem = w.tenantSockets[0].umem
        tenantFrames = tenantUmem.frames
        tenantPool = FramePool(umem: tenantUmem)
        let n = w.tenantSockets.count
        tenantPending = .allocate(capacity: n * Worker.batchSize)
        tenantPendingCount = .allocate(capacity: n)
        tenantPendingCount.initialize(repeating: 0, count: n)
        uplinkPending = .allocate(capacity: Worker.batchSize)
        processor = PacketProcessor(state: w.state, counters: w.counters, control: w.control, workerIndex: w.index)
        counters = w.counters
        epochs = w.state.epochs
        pollCount = 1 + n
        pollSet = .allocate(capacity: pollCount)
        pollSet[0] = pollfd(fd: w.uplink.fd, events: Int16(POLLIN), revents: 0)
        for (i, s) in w.tenantSockets.enumerated() { pollSet[1 + i] = pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0) }
        uplinkFillTarget = w.uplink.umem.fillRingSize
        // The tenant UMEM's frames are shared by every tenant's fill ring and the decrypt
        // path: give each fill ring an equal share of half the frames at most.
        tenantFillTarget = UInt32(max(Worker.batchSize, tenantUmem.frameCount / (2 * n)))
    }

    deinit {
        tenantPending.deallocate()
        tenantPendingCount.deallocate()
        uplinkPending.deallocate()
        pollSet.deallocate()
    }

    mutating func run(stop: borrowing Atomic<Bool>) {
        refill()
        var idle = 0
        while !stop.load(ordering: .relaxed) {
            epochs.announce(worker: index)
            let now = Clock.now()
            var work = reclaimCompletions()
            work += receiveUplink(now: now)
            work += receiveTenants(now: now)
            refill()
            if processor.controlPending {
                processor.control.notify()
                processor.controlPending = false
            }
            if work > 0 {
                idle = 0
                continue
            }
            counters.add(.rxEmptyPolls)
            flushTransmits()
            idle += 1
            if idle >= 64 {
                // Nothing for a while: hold nothing, sleep until a socket has frames (or
                // 20 ms, to notice a stop request).
                epochs.park(worker: index)
                _ = poll(pollSet, nfds_t(pollCount), 20)
                idle = 0
            }
        }
    }

    /// Transmitted frames come back to their pools.
    @inline(__always)
    mutating func reclaimCompletions() -> Int {
        var n = Int(uplinkCompletion.drain(into: uplinkPool, maximum: UInt32(Worker.batchSize * 4)))
        for i in 0..<tenantCompletion.count {
            n += Int(tenantCompletion[i].drain(into: tenantPool, maximum: UInt32(Worker.batchSize * 4)))
        }
        return n
    }

    /// Keeps every fill ring topped up, leaving a reserve of uplink frames for encryption.
    @inline(__always)
    func refill() {
        let spareUplink = uplinkPool.count - Worker.transmitReserve
        if spareUplink > 0 {
            let wanted = min(UInt32(spareUplink), uplinkFillTarget &- min(uplinkFillTarget, uplinkFill.outstanding))
            if wanted > 0 { _ = uplinkFill.replenish(from: uplinkPool, maximum: wanted) }
        }
        if uplinkFill.needsWakeup { uplinkSocket.wakeFill(); counters.add(.fillWakeups) }
        for i in 0..<tenantFill.count {
            let have = tenantFill[i].outstanding
            if have < tenantFillTarget {
                _ = tenantFill[i].replenish(from: tenantPool, maximum: tenantFillTarget &- have)
            }
        }
    }

    // MARK: Uplink → tenants

    @inline(__always)
    mutating func receiveUplink(now: Instant) -> Int {
        let (count, first) = uplinkRx.peek(maximum: UInt32(Worker.batchSize))
        guard count > 0 else { return 0 }
        counters.add(.batches)
        counters.add(.batchFrames, UInt64(count))
        var bytes: UInt64 = 0
        for i in 0..<count {
            let d = uplinkRx.descriptor(first &+ i)
            bytes &+= UInt64(d.len)
            guard let out = tenantPool.pop() else {
                counters.drop(.tenantFramesExhausted)
                uplinkPool.push(d.addr)
                continue
            }
            let result = processor.decrypt(uplinkFrames.frame(d.addr), length: Int(d.len),
                                           into: tenantFrames.frame(out), tenantCapacity: tenantFrames.frameSize,
                                           now: now)
            // Out of place: the uplink frame is free as soon as it was read.
            uplinkPool.push(d.addr)
            switch result {
            case .deliver(let tenant, let length):
                let slot = tenantPendingCount[tenant]
                tenantPending[tenant * Worker.batchSize + slot] = (out, UInt32(length))
                tenantPendingCount[tenant] = slot + 1
            case .consumed:
                tenantPool.push(out)
            case .dropped(let reason):
                counters.drop(reason)
                tenantPool.push(out)
            }
        }
        uplinkRx.release(count)
        counters.add(.uplinkRxPackets, UInt64(count))
        counters.add(.uplinkRxBytes, bytes)
        for tenant in 0..<tenantTx.count where tenantPendingCount[tenant] > 0 {
            transmitToTenant(tenant)
        }
        return Int(count)
    }

    @inline(__always)
    mutating func transmitToTenant(_ tenant: Int) {
        let n = tenantPendingCount[tenant]
        tenantPendingCount[tenant] = 0
        transmit(tenantPending + tenant * Worker.batchSize, count: n, tx: tenantTx[tenant],
                 socket: tenantSockets[tenant], pool: tenantPool,
                 packets: .tenantTxPackets, bytes: .tenantTxBytes, ringFull: .tenantTxRingFull)
    }

    /// Puts `n` (frame, length) pairs on `tx` and kicks; frames the ring cannot take go back
    /// to `pool`, counted as `ringFull` drops.
    @inline(__always)
    func transmit(_ pending: UnsafeMutablePointer<(UInt64, UInt32)>, count n: Int, tx: TxRing, socket: XskSocket,
                  pool: borrowing FramePool, packets: WorkerCounter, bytes: WorkerCounter, ringFull: DropReason) {
        var accepted = Int(min(UInt32(n), tx.freeSlots(wanted: UInt32(n))))
        if accepted > 0, let first = tx.reserve(UInt32(accepted)) {
            var sent: UInt64 = 0
            for i in 0..<accepted {
                tx.setDescriptor(first &+ UInt32(i), address: pending[i].0, length: pending[i].1)
                sent &+= UInt64(pending[i].1)
            }
            tx.submit(UInt32(accepted))
            counters.add(packets, UInt64(accepted))
            counters.add(bytes, sent)
            kick(socket, tx)
        } else {
            accepted = 0
        }
        if accepted < n {
            counters.add(.txRingFull)
            counters.drop(ringFull, UInt64(n - accepted))
            for i in accepted..<n { pool.push(pending[i].0) }
        }
    }

    // MARK: Tenants → uplink

    @inline(__always)
    mutating func receiveTenants(now: Instant) -> Int {
        var total = 0
        for tenant in 0..<tenantRx.count {
            let rx = tenantRx[tenant]
            let (count, first) = rx.peek(maximum: UInt32(Worker.batchSize))
            guard count > 0 else { continue }
            total += Int(count)
            counters.add(.batches)
            counters.add(.batchFrames, UInt64(count))
            var pending = 0
            var bytes: UInt64 = 0
            for i in 0..<count {
                let d = rx.descriptor(first &+ i)
                bytes &+= UInt64(d.len)
                guard let out = uplinkPool.pop() else {
                    counters.drop(.uplinkFramesExhausted)
                    tenantPool.push(d.addr)
                    continue
                }
                let result = processor.encrypt(tenant: tenant, frame: tenantFrames.frame(d.addr), length: Int(d.len),
                                               into: uplinkFrames.frame(out), uplinkCapacity: uplinkFrames.frameSize,
                                               now: now)
                tenantPool.push(d.addr)
                switch result {
                case .send(let length):
                    uplinkPending[pending] = (out, UInt32(length))
                    pending += 1
                case .staged:
                    uplinkPool.push(out)
                case .dropped(let reason):
                    counters.drop(reason)
                    uplinkPool.push(out)
                }
            }
            rx.release(count)
            counters.add(.tenantRxPackets, UInt64(count))
            counters.add(.tenantRxBytes, bytes)
            if pending > 0 {
                transmit(uplinkPending, count: pending, tx: uplinkTx, socket: uplinkSocket, pool: uplinkPool,
                         packets: .uplinkTxPackets, bytes: .uplinkTxBytes, ringFull: .uplinkTxRingFull)
            }
        }
        return total
    }

    /// Kicks every TX ring that still holds descriptors (a kick that made no progress left
    /// them there; nothing else would send them before the next packet).
    func flushTransmits() {
        if uplinkTx.outstanding > 0 { kick(uplinkSocket, uplinkTx) }
        for i in 0..<tenantTx.count where tenantTx[i].outstanding > 0 { kick(tenantSockets[i], tenantTx[i]) }
    }

    /// Copy mode sends at most 32 descriptors per kick: kick until the ring is empty, or the
    /// kernel stops taking (completion ring full: the next iteration drains it and kicks again).
    @inline(__always)
    func kick(_ socket: XskSocket, _ tx: TxRing) {
        guard tx.needsWakeup else { return }
        var remaining = tx.outstanding
        var kicks = 0
        while remaining > 0 && kicks < 8 {
            socket.kickTransmit()
            kicks += 1
            let after = tx.outstanding
            if after >= remaining { break }   // no progress: leave it to the next iteration
            remaining = after
        }
        counters.add(.transmitKicks, UInt64(kicks))
    }
}
