import CLibXDP

// Typed views of the four AF_XDP rings for the per-packet path.
//
// Each is a struct around the pointer to libxdp's ring bookkeeping (`struct xsk_ring_prod`
// or `xsk_ring_cons`), so a worker copies them out of its socket once and uses them with no
// reference counting. Every method is `@inlinable @inline(__always)` and calls libxdp's
// `XDP_ALWAYS_INLINE` helpers from <xdp/xsk.h>, which Swift imports and inlines: no call
// into libxdp.so happens on the per-packet path.
//
// Memory ordering: we rely on the barriers inside those helpers and add none of our own
// (see net/xdp/xsk_queue.h in the kernel for the protocol):
//   - consumer `peek` (xsk_cons_nb_avail) loads the kernel's producer index with ACQUIRE
//     before we read descriptors, so the descriptors and frame bytes the kernel wrote are
//     visible to us;
//   - consumer `release` stores our consumer index with RELEASE after our reads of the
//     descriptors, so the kernel cannot overwrite a slot we are still reading;
//   - producer `reserve` (xsk_prod_nb_free) loads the kernel's consumer index with ACQUIRE
//     when it needs fresh room, so slots the kernel has finished reading are really free;
//   - producer `submit` stores our producer index with RELEASE after our writes of the
//     descriptors (and of the frame bytes they point to), so the kernel sees them whole.
// Indices are free-running UInt32 values; the helpers mask them with the ring size.
// The slot helpers return C pointers without nullability (imported as implicitly unwrapped
// optionals); they are never null for a mapped ring, so `unsafelyUnwrapped` skips the check.
//
// The batch rule, as xdpsock's receive step has it: peek N descriptors, process them, put
// their frames back to work (fill or TX), submit, release. Peek and release on one ring must
// alternate: release exactly the count peek returned, before peeking again.

// The two consumer rings (RX, completion) and the two producer rings (TX, fill) share their
// index handling through a protocol each, whose methods live in protocol extensions: called
// on the concrete ring structs they are dispatched statically and inlined (no existential,
// no witness table on the per-packet path). Only the slot accessors differ.

/// A ring the kernel produces and we consume (RX, completion).
public protocol XskConsumerRing {
    var ring: UnsafeMutablePointer<xsk_ring_cons> { get }
}

extension XskConsumerRing {
    /// Up to `maximum` entries the kernel produced: how many, and the ring index of the first.
    /// ACQUIRE (inside xsk_ring_cons__peek): the entries (and for RX the frame data) are
    /// visible after this.
    @inlinable @inline(__always)
    public func peek(maximum: UInt32) -> (count: UInt32, index: UInt32) {
        var index: UInt32 = 0
        let count = xsk_ring_cons__peek(ring, maximum, &index)
        return (count, index)
    }

    /// Hands `count` slots back to the kernel. RELEASE (inside xsk_ring_cons__release): our
    /// reads of those entries happen before.
    @inlinable @inline(__always)
    public func release(_ count: UInt32) {
        xsk_ring_cons__release(ring, count)
    }
}

/// A ring we produce and the kernel consumes (TX, fill).
public protocol XskProducerRing {
    var ring: UnsafeMutablePointer<xsk_ring_prod> { get }
}

extension XskProducerRing {
    /// Reserves exactly `count` slots and returns the ring index of the first, or nil when
    /// fewer are free (nothing is reserved then). ACQUIRE on the kernel's consumer index when
    /// the cached view is short (inside xsk_ring_prod__reserve).
    @inlinable @inline(__always)
    public func reserve(_ count: UInt32) -> UInt32? {
        var index: UInt32 = 0
        return xsk_ring_prod__reserve(ring, count, &index) == count ? index : nil
    }

    /// Publishes `count` reserved slots. RELEASE (inside xsk_ring_prod__submit): slot and
    /// frame writes happen before the kernel can see the new producer index.
    @inlinable @inline(__always)
    public func submit(_ count: UInt32) {
        xsk_ring_prod__submit(ring, count)
    }

    /// The kernel asks to be woken (TX: a `sendto` kick, which in copy mode it always asks
    /// for and which sends at most 32 descriptors; fill: `XskSocket.wakeFill`, which
    /// zero-copy drivers ask for when they ran dry).
    @inlinable @inline(__always)
    public var needsWakeup: Bool { xsk_ring_prod__needs_wakeup(ring) != 0 }

    /// Entries submitted (or reserved) that the kernel has not consumed yet (ACQUIRE on its
    /// consumer index). For TX, non-zero after a kick means: kick again.
    @inlinable @inline(__always)
    public var outstanding: UInt32 {
        ring.pointee.size &- xsk_prod_nb_free(ring, ring.pointee.size)
    }
}

/// The RX ring: the kernel produces descriptors of frames it received into; we consume them
/// (`peek`, then `release` exactly the count peeked; the frames stay ours until put on fill
/// or TX).
public struct RxRing: XskConsumerRing, @unchecked Sendable {
    public let ring: UnsafeMutablePointer<xsk_ring_cons>

    @inlinable public init(_ ring: UnsafeMutablePointer<xsk_ring_cons>) { self.ring = ring }

    /// The descriptor at ring index `index` (as returned by `peek`, plus 0..<count):
    /// `addr` (UMEM address of the first byte of the packet), `len`, `options`.
    @inlinable @inline(__always)
    public func descriptor(_ index: UInt32) -> xdp_desc {
        xsk_ring_cons__rx_desc(ring, index).unsafelyUnwrapped.pointee
    }

    /// Descriptors the kernel has produced that we have not peeked yet (refreshes with ACQUIRE
    /// only when the cached view is empty). For tests and statistics.
    @inlinable
    public var available: UInt32 { xsk_cons_nb_avail(ring, ring.pointee.size) }
}

/// The TX ring: we produce descriptors of frames to send; the kernel consumes them and later
/// returns each frame's address on the completion ring.
public struct TxRing: XskProducerRing, @unchecked Sendable {
    public let ring: UnsafeMutablePointer<xsk_ring_prod>

    @inlinable public init(_ ring: UnsafeMutablePointer<xsk_ring_prod>) { self.ring = ring }

    /// Free slots, refreshed from the kernel's consumer index (ACQUIRE) if fewer than
    /// `wanted` are free in the cached view.
    @inlinable @inline(__always)
    public func freeSlots(wanted: UInt32) -> UInt32 {
        xsk_prod_nb_free(ring, wanted)
    }

    /// Writes the descriptor at ring index `index`: send `length` bytes starting at UMEM
    /// address `address` (which may point anywhere inside a frame; the bytes must not cross
    /// the frame's end).
    @inlinable @inline(__always)
    public func setDescriptor(_ index: UInt32, address: UInt64, length: UInt32) {
        let d = xsk_ring_prod__tx_desc(ring, index).unsafelyUnwrapped
        d.pointee.addr = address
        d.pointee.len = length
        d.pointee.options = 0
    }
}

/// The fill ring: we produce free frames; the kernel consumes them to receive into.
public struct FillRing: XskProducerRing, @unchecked Sendable {
    public let ring: UnsafeMutablePointer<xsk_ring_prod>

    @inlinable public init(_ ring: UnsafeMutablePointer<xsk_ring_prod>) { self.ring = ring }

    /// Moves as many frames as fit (at most `maximum`) from `pool` to the ring and submits
    /// them (the pool counts them as receiving); returns how many. Call every batch: an empty fill ring makes the kernel drop
    /// received packets (counted as rxFillRingEmpty / rxDropped).
    @inlinable @inline(__always)
    public func replenish(from pool: borrowing FramePool, maximum: UInt32) -> UInt32 {
        let wanted = min(maximum, UInt32(truncatingIfNeeded: pool.count))
        guard wanted > 0 else { return 0 }
        // ACQUIRE on the kernel's consumer index if the cached view is short.
        let n = min(wanted, xsk_prod_nb_free(ring, wanted))
        guard n > 0 else { return 0 }
        var index: UInt32 = 0
        // Cannot fail: n slots were just seen free and only this thread produces.
        _ = xsk_ring_prod__reserve(ring, n, &index)
        // Take the top n frames of the pool in one step (count read and written once).
        let top = pool.header.pointee.count
        for i in 0..<Int(n) {
            xsk_ring_prod__fill_addr(ring, index &+ UInt32(truncatingIfNeeded: i)).unsafelyUnwrapped.pointee =
                pool.slots[top &- 1 &- i]
        }
        pool.header.pointee.count = top &- Int(n)
        pool.handedToFill(Int(n))
        // RELEASE: the addresses are in the ring before the kernel sees the producer move.
        xsk_ring_prod__submit(ring, n)
        return n
    }
}

/// The completion ring: the kernel produces the addresses of frames it has transmitted;
/// we consume them and the frames are free again.
public struct CompletionRing: XskConsumerRing, @unchecked Sendable {
    public let ring: UnsafeMutablePointer<xsk_ring_cons>

    @inlinable public init(_ ring: UnsafeMutablePointer<xsk_ring_cons>) { self.ring = ring }

    /// The address at ring index `index`: exactly the `address` of the TX descriptor.
    @inlinable @inline(__always)
    public func address(_ index: UInt32) -> UInt64 {
        xsk_ring_cons__comp_addr(ring, index).unsafelyUnwrapped.pointee
    }

    /// Moves up to `maximum` completed frames into `pool` (as frame starts; the pool counts
    /// them as transmitting no more); returns how many.
    /// Drain every batch: a full completion ring stops transmission (copy mode: the kick
    /// returns EAGAIN).
    @inlinable @inline(__always)
    public func drain(into pool: borrowing FramePool, maximum: UInt32) -> UInt32 {
        var index: UInt32 = 0
        let n = xsk_ring_cons__peek(ring, maximum, &index)   // ACQUIRE
        guard n > 0 else { return 0 }
        for i in 0..<n {
            pool.push(xsk_ring_cons__comp_addr(ring, index &+ i).unsafelyUnwrapped.pointee)
        }
        xsk_ring_cons__release(ring, n)                        // RELEASE
        pool.completed(Int(n))
        return n
    }
}
