import CLibXDP
import Engine
import Testing

/// Frame accounting (`FramePool.counts`) through the real ring helpers, on rings in plain
/// memory where the test plays the kernel: no socket, no root.
@Suite struct FrameAccountingTests {
    /// A ring laid out as the kernel maps one (producer index, consumer index, flags, entries)
    /// with libxdp's bookkeeping struct over it, as xsk_socket__create would set it up.
    final class MemoryRing {
        let size: UInt32
        let entryBytes: Int
        let indices: UnsafeMutablePointer<UInt32>       // producer, consumer, flags
        let entries: UnsafeMutableRawPointer
        let prod: UnsafeMutablePointer<xsk_ring_prod>
        let cons: UnsafeMutablePointer<xsk_ring_cons>

        init(size: UInt32, entryBytes: Int) {
            self.size = size
            self.entryBytes = entryBytes
            indices = .allocate(capacity: 3)
            indices.initialize(repeating: 0, count: 3)
            entries = .allocate(byteCount: Int(size) * entryBytes, alignment: 64)
            prod = .allocate(capacity: 1)
            // A producer's cached consumer runs `size` ahead (libxdp's convention).
            prod.initialize(to: xsk_ring_prod(cached_prod: 0, cached_cons: size, mask: size - 1, size: size,
                                              producer: indices, consumer: indices + 1, ring: entries,
                                              flags: indices + 2))
            cons = .allocate(capacity: 1)
            cons.initialize(to: xsk_ring_cons(cached_prod: 0, cached_cons: 0, mask: size - 1, size: size,
                                              producer: indices, consumer: indices + 1, ring: entries,
                                              flags: indices + 2))
        }

        deinit {
            indices.deallocate()
            entries.deallocate()
            prod.deallocate()
            cons.deallocate()
        }

        private func slot(_ index: UInt32) -> UnsafeMutableRawPointer {
            entries + Int(index & (size - 1)) * entryBytes
        }

        /// The kernel consumes `n` entries we produced; returns their addresses (the first
        /// 8 bytes of a fill-ring address or of a TX descriptor).
        func kernelConsume(_ n: Int) -> [UInt64] {
            let first = indices[1]
            let out = (0..<UInt32(n)).map { slot(first &+ $0).load(as: UInt64.self) }
            indices[1] = first &+ UInt32(n)
            return out
        }

        /// The kernel produces RX descriptors (address, length) or completion addresses.
        func kernelProduce(_ addresses: [UInt64], length: UInt32? = nil) {
            var p = indices[0]
            for a in addresses {
                if let length {
                    slot(p).storeBytes(of: xdp_desc(addr: a, len: length, options: 0), as: xdp_desc.self)
                } else {
                    slot(p).storeBytes(of: a, as: UInt64.self)
                }
                p &+= 1
            }
            indices[0] = p
        }
    }

    @Test func everyFrameIsInExactlyOnePlace() {
        let pool = FramePool(capacity: 16, frameSize: 2048)
        // An empty pool's frames start out held by its owner.
        #expect(pool.counts == FrameCounts(total: 16, free: 0, receiving: 0, transmitting: 0))
        #expect(pool.counts.held == 16 && !pool.counts.isBalanced)
        for i in 0..<16 { pool.push(UInt64(i * 2048)) }
        #expect(pool.counts.isBalanced)

        let fill = MemoryRing(size: 8, entryBytes: 8), rx = MemoryRing(size: 8, entryBytes: 16)
        let tx = MemoryRing(size: 8, entryBytes: 16), completion = MemoryRing(size: 8, entryBytes: 8)

        // Fill: as many as the ring takes.
        #expect(FillRing(fill.prod).replenish(from: pool, maximum: 16) == 8)
        #expect(pool.counts == FrameCounts(total: 16, free: 8, receiving: 8, transmitting: 0))

        // The kernel receives three packets: still receiving (on the RX ring, not yet peeked).
        let taken = fill.kernelConsume(3)
        rx.kernelProduce(taken.map { $0 + 256 }, length: 100)
        #expect(pool.counts.isBalanced && pool.counts.receiving == 8)

        // The worker peeks them: held until put somewhere.
        let (n, first) = RxRing(rx.cons).peek(maximum: 64)
        #expect(n == 3)
        pool.received(Int(n))
        #expect(pool.counts.held == 3 && !pool.counts.isBalanced)
        let descriptors = (0..<n).map { RxRing(rx.cons).descriptor(first &+ $0) }
        pool.push(descriptors[0].addr)
        pool.push(descriptors[1].addr)
        let txRing = TxRing(tx.prod)
        let index = txRing.reserve(1)
        #expect(index != nil)
        txRing.setDescriptor(index ?? 0, address: descriptors[2].addr, length: descriptors[2].len)
        txRing.submit(1)
        pool.submittedForTransmit(1)
        RxRing(rx.cons).release(n)
        #expect(pool.counts == FrameCounts(total: 16, free: 10, receiving: 5, transmitting: 1))
        #expect(pool.counts.isBalanced && pool.counts.inFlight == 6)

        // The kernel sends it and completes it: free again, as a frame start.
        let sent = tx.kernelConsume(1)
        #expect(sent == [descriptors[2].addr])
        completion.kernelProduce(sent)
        #expect(CompletionRing(completion.cons).drain(into: pool, maximum: 64) == 1)
        #expect(pool.counts == FrameCounts(total: 16, free: 11, receiving: 5, transmitting: 0))
        #expect(pool.pop() == descriptors[2].addr & ~2047)
        pool.push(descriptors[2].addr)

        // A leak (popped, never put anywhere) and a double free both unbalance the counts.
        let lost = pool.pop()
        #expect(lost != nil)
        #expect(pool.counts.held == 1 && !pool.counts.isBalanced)
        #expect(pool.counts.description == "16 frames: 10 free, 5 receiving, 0 transmitting, 1 held")
        pool.push(lost ?? 0)
        pool.push(lost ?? 0)
        #expect(pool.counts.held == -1 && !pool.counts.isBalanced)
    }

    @Test func frameGaugesAreStoredBesideTheCounters() {
        let counters = WorkerCounters.allocate()
        counters.set(.uplinkFree, 123)
        counters.set(.tenantTransmitting, 7)
        counters.add(.uplinkXskFillRingEmpty, 2)
        #expect(counters.value(.uplinkFree) == 123)
        #expect(counters.value(.tenantTransmitting) == 7)
        #expect(counters.value(.uplinkXskFillRingEmpty) == 2)
        #expect(counters.totalDrops == 0)
        #expect(WorkerCounters.slotCount == WorkerCounter.allCases.count + DropReason.allCases.count
                + FrameGauge.allCases.count)
        // Every name is distinct and snake_case (they are the stats keys).
        let names = WorkerCounter.allCases.map(\.name) + DropReason.allCases.map(\.name) + FrameGauge.allCases.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.allSatisfy { $0.isLowercase || $0 == "_" } })
    }
}
