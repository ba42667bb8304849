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
public struct FramePool: ~Copyable, @unchecked Sendable {
    @usableFromInline
    struct Header {
        @usableFromInline var count: Int
        @usableFromInline let capacity: Int
        /// Clears the in-frame offset of an aligned-mode address.
        @usableFromInline let frameMask: UInt64
    }

    @usableFromInline let header: UnsafeMutablePointer<Header>
    @usableFromInline let slots: UnsafeMutablePointer<UInt64>

    /// An empty pool for up to `capacity` addresses of frames of `frameSize` bytes.
    public init(capacity: Int, frameSize: Int) {
        precondition(capacity > 0, "FramePool capacity must be positive")
        precondition(frameSize > 0 && frameSize & (frameSize - 1) == 0, "frameSize must be a power of two")
        // Header and slots in one allocation, the header on its own cache line.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 64 + capacity * 8, alignment: 64)
        header = raw.bindMemory(to: Header.self, capacity: 1)
        header.initialize(to: Header(count: 0, capacity: capacity, frameMask: ~UInt64(frameSize - 1)))
        slots = (raw + 64).bindMemory(to: UInt64.self, capacity: capacity)
    }

    /// A full pool holding frames `frames` of `umem` (all of them by default), so that the
    /// first `pop` returns the lowest frame.
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
