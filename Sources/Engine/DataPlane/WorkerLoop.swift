import CLibXDP
import CXDPWG
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// What the loop keeps of one lane: ring views and the frame area, as plain values.
struct Lane {
    let rx: RxRing, tx: TxRing, fill: FillRing, completion: CompletionRing
    let frames: UmemFrames
    let fd: Int32
    /// How many frames the fill ring holds when full: half the lane's UMEM, the other half
    /// being what decryption writes into.
    let fillTarget: UInt32
    /// The socket's XDP_STATISTICS as last read (the counters get the difference).
    var seen = XskStatistics()
}

/// The worker's hot loop with everything it touches in local values: ring structs, frame
/// pools, the processor. No class property is read per packet.
struct WorkerLoop: ~Copyable {
    let index: Int
    let uplinkRx: RxRing, uplinkTx: TxRing, uplinkFill: FillRing, uplinkCompletion: CompletionRing
    let uplinkFrames: UmemFrames
    let uplinkPool: FramePool
    let uplinkFD: Int32
    /// Per tenant slot: the lane, or nil; its pool is initialized exactly when the lane is set.
    let lanes: UnsafeMutablePointer<Lane?>
    let pools: UnsafeMutablePointer<FramePool>
    let laneCapacity: Int
    /// The tenant slots that have a lane, in slot order.
    let active: UnsafeMutablePointer<Int>
    var activeCount = 0
    /// Decrypted frames of one uplink batch, with their tenants, waiting to be transmitted.
    let delivered: UnsafeMutablePointer<(UInt64, UInt32)>
    let deliveredTenant: UnsafeMutablePointer<Int>
    /// One tenant's share of `delivered`, or one lane's encrypted frames, made contiguous.
    let outgoing: UnsafeMutablePointer<(UInt64, UInt32)>
    var processor: PacketProcessor
    let counters: WorkerCounters
    let epochs: WorkerEpochs
    /// uplink, wake eventfd, then each active lane.
    let pollSet: UnsafeMutablePointer<pollfd>
    var pollCount = 2
    let uplinkFillTarget: UInt32
    /// The worker, for the rare lane hand-over only.
    let owner: Unmanaged<Worker>
    let handoff: UnsafeMutablePointer<Atomic<UInt64>>
    var takenGeneration: UInt64 = 0
    /// The uplink socket's XDP_STATISTICS as last read, and when to read them next.
    var uplinkSeen = XskStatistics()
    var nextStatisticsRead: UInt64 = 0
    static let statisticsInterval: UInt64 = 100_000_000

    init(_ w: Worker) {
        index = w.index
        owner = .passUnretained(w)
        handoff = w.handoff
        uplinkFD = w.uplink.fd
        uplinkRx = w.uplink.rxRing; uplinkTx = w.uplink.txRing
        uplinkFill = w.uplink.fillRing; uplinkCompletion = w.uplink.completionRing
        uplinkFrames = w.uplink.umem.frames
        uplinkPool = FramePool(umem: w.uplink.umem)
        laneCapacity = w.state.tenantCapacity
        lanes = .allocate(capacity: laneCapacity)
        lanes.initialize(repeating: nil, count: laneCapacity)
        pools = .allocate(capacity: laneCapacity)
        active = .allocate(capacity: laneCapacity)
        delivered = .allocate(capacity: Worker.batchSize)
        deliveredTenant = .allocate(capacity: Worker.batchSize)
        outgoing = .allocate(capacity: Worker.batchSize)
        processor = PacketProcessor(state: w.state, counters: w.counters, control: w.control, workerIndex: w.index,
                                    crypto: w.crypto, cipher: w.takeCipher())
        counters = w.counters
        epochs = w.state.epochs
        pollSet = .allocate(capacity: 2 + laneCapacity)
        pollSet[0] = pollfd(fd: w.uplink.fd, events: Int16(POLLIN), revents: 0)
        pollSet[1] = pollfd(fd: w.wakeFD, events: Int16(POLLIN), revents: 0)
        uplinkFillTarget = w.uplink.umem.fillRingSize
    }

    deinit {
        for t in 0..<laneCapacity where lanes[t] != nil { (pools + t).deinitialize(count: 1) }
        lanes.deinitialize(count: laneCapacity)
        lanes.deallocate()
        pools.deallocate()
        active.deallocate()
        delivered.deallocate()
        deliveredTenant.deallocate()
        outgoing.deallocate()
        pollSet.deallocate()
    }

    mutating func run(stop: borrowing Atomic<Bool>) {
        takeLanesIfOffered()
        refill()
        publishFrames()
        var idle = 0
        while !stop.load(ordering: .relaxed) {
            epochs.announce(worker: index)
            takeLanesIfOffered()
            let now = Clock.now()
            var work = reclaimCompletions()
            work += receiveUplink(now: now)
            work += receiveTenants(now: now)
            refill()
            if processor.controlPending {
                processor.control.notify()
                processor.controlPending = false
            }
            checkFrames()
            if work > 0 {
                idle = 0
                publishFrames()
                if now.nanoseconds >= nextStatisticsRead {
                    readKernelStatistics()
                    nextStatisticsRead = now.nanoseconds &+ WorkerLoop.statisticsInterval
                }
                continue
            }
            counters.add(.rxEmptyPolls)
            flushTransmits()
            idle += 1
            if idle >= 64 {
                // Nothing for a while: publish the settled state, hold nothing, sleep until a
                // socket has frames, lanes are offered, or 20 ms pass (to notice a stop request).
                publishFrames()
                readKernelStatistics()
                epochs.park(worker: index)
                _ = poll(pollSet, nfds_t(pollCount), 20)
                idle = 0
            }
        }
        // What the frames look like as the worker stops (its rings stay as they are).
        publishFrames()
        readKernelStatistics()
    }

    // MARK: Lanes

    /// Takes the control plane's new set of lanes, if it offered one: lanes that left are
    /// forgotten with their pools (their UMEMs go away with them), new lanes get a full
    /// pool. Called between batches, so no frame of a lane is pending anywhere.
    @inline(__always)
    mutating func takeLanesIfOffered() {
        guard handoff[0].load(ordering: .relaxed) != takenGeneration else { return }
        takeLanes()
    }

    /// The rare part, out of line: it builds dictionaries and touches the worker object,
    /// which must not happen (and, out of line, visibly does not) on every iteration.
    @inline(never)
    mutating func takeLanes() {
        let (offered, generation) = owner._withUnsafeGuaranteedRef { $0.takeOffer() }
        var byTenant: [Int: TenantLane] = [:]
        for lane in offered { byTenant[lane.tenant] = lane }
        for t in 0..<laneCapacity {
            let new = byTenant[t]
            if let old = lanes[t], old.fd == new?.socket.fd { continue }
            if lanes[t] != nil {
                (pools + t).deinitialize(count: 1)
                lanes[t] = nil
            }
            if let lane = new {
                let s = lane.socket
                lanes[t] = Lane(rx: s.rxRing, tx: s.txRing, fill: s.fillRing, completion: s.completionRing,
                                frames: s.umem.frames, fd: s.fd,
                                fillTarget: min(s.umem.fillRingSize, UInt32(s.umem.frameCount / 2)))
                (pools + t).initialize(to: FramePool(umem: s.umem))
            }
        }
        activeCount = 0
        pollCount = 2
        for t in 0..<laneCapacity {
            guard let lane = lanes[t] else { continue }
            active[activeCount] = t
            activeCount += 1
            pollSet[pollCount] = pollfd(fd: lane.fd, events: Int16(POLLIN), revents: 0)
            pollCount += 1
        }
        var drained: UInt64 = 0
        _ = read(pollSet[1].fd, &drained, 8)
        takenGeneration = generation
        handoff[1].store(generation, ordering: .releasing)
        refill()
    }

    /// Transmitted frames come back to their pools.
    @inline(__always)
    mutating func reclaimCompletions() -> Int {
        var n = Int(uplinkCompletion.drain(into: uplinkPool, maximum: UInt32(Worker.batchSize * 4)))
        for k in 0..<activeCount {
            let t = active[k]
            n += Int(lanes[t].unsafelyUnwrapped.completion.drain(into: pools[t], maximum: UInt32(Worker.batchSize * 4)))
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
        if uplinkFill.needsWakeup {
            _ = recvfrom(uplinkFD, nil, 0, Int32(MSG_DONTWAIT), nil, nil)
            counters.add(.fillWakeups)
        }
        for k in 0..<activeCount {
            let t = active[k]
            let lane = lanes[t].unsafelyUnwrapped
            let have = lane.fill.outstanding
            if have < lane.fillTarget {
                _ = lane.fill.replenish(from: pools[t], maximum: lane.fillTarget &- have)
            }
        }
    }

    // MARK: Uplink → tenants

    @inline(__always)
    mutating func receiveUplink(now: Instant) -> Int {
        let (count, first) = uplinkRx.peek(maximum: UInt32(Worker.batchSize))
        guard count > 0 else { return 0 }
        uplinkPool.received(Int(count))
        counters.add(.batches)
        counters.add(.batchFrames, UInt64(count))
        var bytes: UInt64 = 0
        var deliveredCount = 0
        for i in 0..<count {
            let d = uplinkRx.descriptor(first &+ i)
            bytes &+= UInt64(d.len)
            let frame = uplinkFrames.frame(d.addr)
            switch processor.arrive(frame, length: Int(d.len)) {
            case .done(.dropped(let reason)):
                counters.drop(reason)
            case .done:
                break
            case .transport(let outer, let tenant):
                guard tenant < laneCapacity, let lane = lanes[tenant] else {
                    counters.drop(.tenantDown)
                    break
                }
                guard let out = pools[tenant].pop() else {
                    counters.drop(.tenantFramesExhausted)
                    break
                }
                let result = processor.decrypt(frame, outer: outer, tenant: tenant, into: lane.frames.frame(out),
                                               tenantCapacity: lane.frames.frameSize, now: now)
                switch result {
                case .deliver(_, let length):
                    delivered[deliveredCount] = (out, UInt32(length))
                    deliveredTenant[deliveredCount] = tenant
                    deliveredCount += 1
                case .consumed:
                    pools[tenant].push(out)
                case .dropped(let reason):
                    counters.drop(reason)
                    pools[tenant].push(out)
                }
            }
            // Out of place: the uplink frame is free as soon as it was read.
            uplinkPool.push(d.addr)
        }
        uplinkRx.release(count)
        counters.add(.uplinkRxPackets, UInt64(count))
        counters.add(.uplinkRxBytes, bytes)
        transmitDelivered(deliveredCount)
        return Int(count)
    }

    /// Sends the batch's decrypted frames, one TX burst per tenant in order of first
    /// appearance (a batch usually holds one or two tenants).
    @inline(__always)
    func transmitDelivered(_ count: Int) {
        for i in 0..<count where deliveredTenant[i] >= 0 {
            let tenant = deliveredTenant[i]
            var n = 0
            for j in i..<count where deliveredTenant[j] == tenant {
                outgoing[n] = delivered[j]
                n += 1
                deliveredTenant[j] = -1
            }
            let lane = lanes[tenant].unsafelyUnwrapped
            transmit(outgoing, count: n, tx: lane.tx, fd: lane.fd, pool: pools[tenant],
                     packets: .tenantTxPackets, bytes: .tenantTxBytes, ringFull: .tenantTxRingFull)
        }
    }

    /// Puts `n` (frame, length) pairs on `tx` and kicks; frames the ring cannot take go back
    /// to `pool`, counted as `ringFull` drops.
    @inline(__always)
    func transmit(_ pending: UnsafeMutablePointer<(UInt64, UInt32)>, count n: Int, tx: TxRing, fd: Int32,
                  pool: borrowing FramePool, packets: WorkerCounter, bytes: WorkerCounter, ringFull: DropReason) {
        var accepted = Int(min(UInt32(n), tx.freeSlots(wanted: UInt32(n))))
        if accepted > 0, let first = tx.reserve(UInt32(accepted)) {
            var sent: UInt64 = 0
            for i in 0..<accepted {
                tx.setDescriptor(first &+ UInt32(i), address: pending[i].0, length: pending[i].1)
                sent &+= UInt64(pending[i].1)
            }
            tx.submit(UInt32(accepted))
            pool.submittedForTransmit(accepted)
            counters.add(packets, UInt64(accepted))
            counters.add(bytes, sent)
            kick(fd, tx)
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
        for k in 0..<activeCount {
            let tenant = active[k]
            let lane = lanes[tenant].unsafelyUnwrapped
            let (count, first) = lane.rx.peek(maximum: UInt32(Worker.batchSize))
            guard count > 0 else { continue }
            pools[tenant].received(Int(count))
            total += Int(count)
            counters.add(.batches)
            counters.add(.batchFrames, UInt64(count))
            var pending = 0
            var bytes: UInt64 = 0
            for i in 0..<count {
                let d = lane.rx.descriptor(first &+ i)
                bytes &+= UInt64(d.len)
                guard let out = uplinkPool.pop() else {
                    counters.drop(.uplinkFramesExhausted)
                    pools[tenant].push(d.addr)
                    continue
                }
                let result = processor.encrypt(tenant: tenant, frame: lane.frames.frame(d.addr), length: Int(d.len),
                                               into: uplinkFrames.frame(out), uplinkCapacity: uplinkFrames.frameSize,
                                               now: now)
                pools[tenant].push(d.addr)
                switch result {
                case .send(let length):
                    outgoing[pending] = (out, UInt32(length))
                    pending += 1
                case .staged:
                    uplinkPool.push(out)
                case .dropped(let reason):
                    counters.drop(reason)
                    uplinkPool.push(out)
                }
            }
            lane.rx.release(count)
            counters.add(.tenantRxPackets, UInt64(count))
            counters.add(.tenantRxBytes, bytes)
            if pending > 0 {
                transmit(outgoing, count: pending, tx: uplinkTx, fd: uplinkFD, pool: uplinkPool,
                         packets: .uplinkTxPackets, bytes: .uplinkTxBytes, ringFull: .uplinkTxRingFull)
            }
        }
        return total
    }

    /// Kicks every TX ring that still holds descriptors (a kick that made no progress left
    /// them there; nothing else would send them before the next packet).
    func flushTransmits() {
        if uplinkTx.outstanding > 0 { kick(uplinkFD, uplinkTx) }
        for k in 0..<activeCount {
            let lane = lanes[active[k]].unsafelyUnwrapped
            if lane.tx.outstanding > 0 { kick(lane.fd, lane.tx) }
        }
    }

    /// Copy mode sends at most the socket's `transmitBudget` per kick (the whole ring where the
    /// kernel lets it be raised, else 32): kick until the ring is empty, or the kernel stops
    /// taking (completion ring full: the next iteration drains it and kicks again).
    @inline(__always)
    func kick(_ fd: Int32, _ tx: TxRing) {
        guard tx.needsWakeup else { return }
        var remaining = tx.outstanding
        var kicks = 0
        while remaining > 0 && kicks < 8 {
            XskSocket.kickTransmit(fd: fd)
            kicks += 1
            let after = tx.outstanding
            if after >= remaining { break }   // no progress: leave it to the next iteration
            remaining = after
        }
        counters.add(.transmitKicks, UInt64(kicks))
    }

    // MARK: Frame accounting

    /// Debug builds: every frame of every UMEM is free or with the kernel between batches
    /// (free + in flight == total). A frame popped and neither pushed nor sent, or pushed
    /// twice, stops the worker here, on the batch that lost it.
    @inline(__always)
    func checkFrames() {
        #if DEBUG
        let uplink = uplinkPool.counts
        assert(uplink.isBalanced, "worker \(index): uplink frames out of balance: \(uplink)")
        for k in 0..<activeCount {
            let lane = pools[active[k]].counts
            assert(lane.isBalanced, "worker \(index): tenant slot \(active[k]) frames out of balance: \(lane)")
        }
        #endif
    }

    /// Publishes where the frames are (`FrameGauge`): a few relaxed stores per batch.
    @inline(__always)
    func publishFrames() {
        let uplink = uplinkPool.counts
        counters.set(.uplinkTotal, uplink.total)
        counters.set(.uplinkFree, uplink.free)
        counters.set(.uplinkReceiving, uplink.receiving)
        counters.set(.uplinkTransmitting, uplink.transmitting)
        var tenant = FrameCounts(total: 0, free: 0, receiving: 0, transmitting: 0)
        for k in 0..<activeCount {
            let c = pools[active[k]].counts
            tenant.total &+= c.total
            tenant.free &+= c.free
            tenant.receiving &+= c.receiving
            tenant.transmitting &+= c.transmitting
        }
        counters.set(.tenantTotal, tenant.total)
        counters.set(.tenantFree, tenant.free)
        counters.set(.tenantReceiving, tenant.receiving)
        counters.set(.tenantTransmitting, tenant.transmitting)
    }

    /// Adds what the kernel counted since the last read (getsockopt, one per socket; a
    /// socket that cannot be read keeps its old values and is tried again next time).
    @inline(never)
    mutating func readKernelStatistics() {
        var current = XskStatistics()
        if XskSocket.statistics(fd: uplinkFD, into: &current) == 0 {
            counters.add(.uplinkXskRxDropped, current.rxDropped &- uplinkSeen.rxDropped)
            counters.add(.uplinkXskRxRingFull, current.rxRingFull &- uplinkSeen.rxRingFull)
            counters.add(.uplinkXskFillRingEmpty, current.rxFillRingEmpty &- uplinkSeen.rxFillRingEmpty)
            counters.add(.uplinkXskInvalidDescriptors, (current.rxInvalidDescriptors &+ current.txInvalidDescriptors)
                         &- (uplinkSeen.rxInvalidDescriptors &+ uplinkSeen.txInvalidDescriptors))
            uplinkSeen = current
        }
        for k in 0..<activeCount {
            let t = active[k]
            guard XskSocket.statistics(fd: lanes[t].unsafelyUnwrapped.fd, into: &current) == 0 else { continue }
            let seen = lanes[t].unsafelyUnwrapped.seen
            counters.add(.tenantXskRxDropped, current.rxDropped &- seen.rxDropped)
            counters.add(.tenantXskRxRingFull, current.rxRingFull &- seen.rxRingFull)
            counters.add(.tenantXskFillRingEmpty, current.rxFillRingEmpty &- seen.rxFillRingEmpty)
            counters.add(.tenantXskInvalidDescriptors, (current.rxInvalidDescriptors &+ current.txInvalidDescriptors)
                         &- (seen.rxInvalidDescriptors &+ seen.txInvalidDescriptors))
            lanes[t]!.seen = current
        }
    }
}
