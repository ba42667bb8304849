/// A fixed-capacity LIFO stack of free UMEM frame addresses, owned by one worker thread.
///
/// One allocation made at init holds the count and the addresses; the pool never grows.
/// LIFO hands back the most recently freed frame, whose cache lines are the likeliest to be warm.
///
/// Every operation works through the pointer and is `nonmutating`, so a worker holds its
/// pools as `let` properties: no exclusivity check, no reference counting, no copy-on-write
/// on the per-packet path. The type is `~Copyable` so two owners can never free the
/// allocation twice; `deinit` frees it.
///
/// Addresses are stored as frame starts: `push` clears the offset bits (below the frame
/// size), so an RX descriptor address (frame start + headroom) or a TX address pointing
/// into a frame can be pushed as it is. Not thread-safe: one thread per pool.
///
/// Frame accounting. A pool accounts for `total` frames of one UMEM, and every one of them is
/// in exactly one place at any time (`FrameCounts`):
///   - free: in the pool (`count`);
///   - receiving: given to the kernel to receive into — on the fill ring, held by the kernel
///     (copy mode keeps a frame it could not put on a full RX ring for the next packet), or
///     received on the RX ring and not yet peeked;
///   - transmitting: on the TX ring, or sent and not yet back on the completion ring;
///   - held: peeked from RX or popped from the pool by the worker, and not yet put anywhere.
/// `FillRing.replenish` and `CompletionRing.drain` move frames between free and the kernel;
/// whoever peeks RX calls `received`, whoever submits TX calls `submittedForTransmit`. Held is
/// what is left (total − free − receiving − transmitting): between batches it is zero, which
/// the worker asserts in debug builds. A frame popped and never pushed or sent (a leak) or
/// pushed twice shows up there. Each move is one add to a plain integer of the pool's own.
public struct FramePool: ~Copyable, @unchecked Sendable {
    @usableFromInline
    struct Header {
        @usableFromInline var count: Int
        @usableFromInline let capacity: Int
        /// Clears the in-frame offset of an aligned-mode address.
        @usableFromInline let frameMask: UInt64
        /// Frames this pool accounts for, and how many of them are with the kernel (see the
        /// type's comment). Same cache line as `count`: a batch touches them together.
        @usableFromInline let total: Int
        @usableFromInline var receiving: Int
        @usableFromInline var transmitting: Int
    }

    @usableFromInline let header: UnsafeMutablePointer<Header>
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>

    /// An empty pool for up to `capacity` addresses of frames of `frameSize` bytes. It
    /// accounts for `capacity` frames, all held by its owner until pushed.
    public init(capacity: Int, frameSize: Int) {
        precondition(capacity > 0, "FramePool capacity must be positive")
        precondition(frameSize > 0 && frameSize & (frameSize - 1) == 0, "frameSize must be a power of two")
        // Header and slots in one allocation, the header on its own cache line.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64 + capacity * 8, alignment: 64)
        header = raw.bindMemory(to: Header.self, capacity: 1)
        header.initialize(to: Header(count: 0, capacity: capacity, frameMask: ~UInt64(frameSize - 1), total: capacity,
                                     receiving: 0, transmitting: 0))
        slots = (raw + 64).bindMemory(to: UInt64.self, capacity: capacity)
    }

    /// A full pool holding frames `frames` of `umem` (all of them by default), so that the
    /// first `pop` returns the lowest frame. It accounts for `capacity` frames (by default
    /// exactly those): a larger capacity counts the difference as held elsewhere.
    public init(umem: Umem, frames: Range<Int>? = nil, capacity: Int? = nil) {
        let range = frames ?? 0..<umem.frameCount
        precondition(range.lowerBound >= 0 && range.upperBound <= umem.frameCount, "frames outside the UMEM")
        self.init(capacity: capacity ?? range.count, frameSize: umem.frameSize)
        precondition(header.pointee.capacity >= range.count, "capacity below the number of frames")
        for index in range.reversed() { push(umem.address(ofFrame: index)) }
    }

    deinit {
        UnsafeMutableRawPointer(header).deallocate()
    }

    @inlinable public var count: Int { header.pointee.count }
    @inlinable public var capacity: Int { header.pointee.capacity }
    @inlinable public var isEmpty: Bool { header.pointee.count == 0 }

    /// Where this pool's frames are now.
    @inlinable public var counts: FrameCounts {
        FrameCounts(total: header.pointee.total, free: header.pointee.count,
                    receiving: header.pointee.receiving, transmitting: header.pointee.transmitting)
    }

    /// `n` frames were peeked from the RX ring: they left the kernel and are held now.
    @inlinable @inline(__always)
    public func received(_ n: Int) {
        header.pointee.receiving &-= n
    }

    /// `n` held frames were submitted on the TX ring: they are the kernel's until completed.
    @inlinable @inline(__always)
    public func submittedForTransmit(_ n: Int) {
        header.pointee.transmitting &+= n
    }

    /// `n` free frames were put on the fill ring (`FillRing.replenish` says so itself).
    @inlinable @inline(__always)
    func handedToFill(_ n: Int) {
        header.pointee.receiving &+= n
    }

    /// `n` frames came back on the completion ring (`CompletionRing.drain` says so itself).
    @inlinable @inline(__always)
    func completed(_ n: Int) {
        header.pointee.transmitting &-= n
    }

    /// Returns a frame to the pool. Traps if the pool is full: more frees than frames is a
    /// double free, and continuing would hand one frame to the kernel twice.
    @inlinable @inline(__always)
    public func push(_ address: UInt64) {
        let n = header.pointee.count
        precondition(n < header.pointee.capacity, "FramePool overflow: a frame was freed twice")
        slots[n] = address & header.pointee.frameMask
        header.pointee.count = n &+ 1
    }

    /// Takes a free frame, or nil when none is left.
    @inlinable @inline(__always)
    public func pop() -> UInt64? {
        let n = header.pointee.count
        guard n > 0 else { return nil }
        header.pointee.count = n &- 1
        return slots[n &- 1]
    }

    /// Takes up to `maximum` frames into `destination`; returns how many.
    @inlinable @inline(__always)
    public func popBatch(into destination: UnsafeMutablePointer<UInt64>, maximum: Int) -> Int {
        let n = header.pointee.count
        let taken = min(n, maximum)
        let start = n &- taken
        for i in 0..<taken { destination[i] = slots[start &+ i] }
        header.pointee.count = start
        return taken
    }

    /// Returns `count` frames from `source`. Traps on overflow, as `push` does.
    @inlinable @inline(__always)
    public func pushBatch(from source: UnsafePointer<UInt64>, count: Int) {
        let n = header.pointee.count
        precondition(count <= header.pointee.capacity &- n, "FramePool overflow: a frame was freed twice")
        let mask = header.pointee.frameMask
        for i in 0..<count { slots[n &+ i] = source[i] & mask }
        header.pointee.count = n &+ count
    }
}

/// Where the frames of one pool (one UMEM, one worker) are at one moment; see `FramePool`.
public struct FrameCounts: Sendable, Equatable, CustomStringConvertible {
    public var total: Int
    /// In the pool.
    public var free: Int
    /// On the fill ring, with the kernel, or on the RX ring not yet peeked.
    public var receiving: Int
    /// On the TX ring, or sent and not yet back on the completion ring.
    public var transmitting: Int

    @inlinable
    public init(total: Int, free: Int, receiving: Int, transmitting: Int) {
        self.total = total
        self.free = free
        self.receiving = receiving
        self.transmitting = transmitting
    }

    /// Frames the kernel has: receiving + transmitting.
    @inlinable public var inFlight: Int { receiving &+ transmitting }
    /// Frames taken by the worker and not yet put anywhere: zero between batches.
    @inlinable public var held: Int { total &- free &- inFlight }
    /// free + in flight == total, and no place holds a negative number of frames.
    @inlinable public var isBalanced: Bool { held == 0 && free >= 0 && receiving >= 0 && transmitting >= 0 }

    public var description: String {
        "\(total) frames: \(free) free, \(receiving) receiving, \(transmitting) transmitting, \(held) held"
    }
}
