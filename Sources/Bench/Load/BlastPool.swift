import Engine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The frames a `FrameBlaster` sends: a page-aligned region of `capacity` frames of 2048
/// bytes that is itself the UMEM of the blaster's AF_XDP socket. Callers write finished
/// Ethernet frames straight into it with `append`, so sending copies nothing in user space:
/// a TX descriptor just names a frame.
///
/// (Named BlastPool, not FramePool: the Engine already has a `FramePool`, the worker's stack
/// of free frame addresses, and code importing both would have to qualify every use.)
///
/// Size: set by a byte budget (`init(namespace:byteBudget:)`), 2048 bytes a frame. The
/// memory is prefaulted and pinned by the kernel while registered, so the budget is real
/// memory: `maximumByteBudget` (8 GiB, 4,194,304 frames) is the hard limit, and a budget
/// above half the memory available now is refused with a message saying both figures. The
/// default, 512 MiB, holds 262,144 frames.
///
/// The UMEM is registered through an AF_XDP socket that belongs to a network namespace, and
/// the first socket bound to a UMEM is that very socket: so the pool is made in the
/// namespace of the interface it will be sent from, and serves exactly one `FrameBlaster`.
/// Frames may be appended or cleared between blasts, never during one (that throws).
public final class BlastPool: @unchecked Sendable {
    /// Bytes per frame. No headroom: a frame may be up to this long.
    public static let frameSize = 2048
    /// The smallest frame accepted: an Ethernet header.
    public static let minimumFrameLength = 14
    public static let defaultByteBudget = 512 << 20
    public static let maximumByteBudget = 8 << 30

    public let namespace: String?
    /// Frames the pool can hold.
    public let capacity: Int
    let umem: Umem
    /// Frame lengths, one per frame appended; read by the blaster through this pointer.
    let lengths: UnsafeMutablePointer<UInt16>
    private let state = Mutex(State())

    private struct State {
        var count = 0
        /// Blasters sending from the pool now: appending or clearing would change frames the
        /// kernel is reading.
        var activeBlasts = 0
    }

    /// Rings of the pool's UMEM. The completion ring holds a slot for every frame in flight
    /// (twice the blaster's TX ring, so a full TX ring never waits for reaping); the fill ring
    /// is unused (the socket only sends) and kept small.
    static let completionRingSize: UInt32 = 4096
    static let fillRingSize: UInt32 = 64

    /// A pool with room for `byteBudget / 2048` frames, made (registered) in `namespace`.
    public convenience init(namespace: String?, byteBudget: Int = BlastPool.defaultByteBudget) throws(LoadError) {
        try self.init(namespace: namespace, capacity: byteBudget / BlastPool.frameSize)
    }

    /// A pool with room for `capacity` frames, made (registered) in `namespace`.
    public init(namespace: String?, capacity: Int) throws(LoadError) {
        let operation = "create a frame pool of \(capacity) frames"
        let bytes = capacity.multipliedReportingOverflow(by: BlastPool.frameSize)
        guard capacity > 0, !bytes.overflow, bytes.partialValue <= BlastPool.maximumByteBudget else {
            throw LoadError(operation, namespace: namespace,
                            reason: "a pool holds 1 to \(BlastPool.maximumByteBudget / BlastPool.frameSize) frames "
                                + "(\(BlastPool.maximumByteBudget >> 30) GiB at \(BlastPool.frameSize) bytes a frame)")
        }
        let available = Int(sysconf(Int32(_SC_AVPHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        guard available <= 0 || bytes.partialValue <= available / 2 else {
            throw LoadError(operation, namespace: namespace,
                            reason: "\(bytes.partialValue >> 20) MiB of pinned memory is more than half of the "
                                + "\(available >> 20) MiB available now; use a smaller byte budget")
        }
        do {
            umem = try runInNamespace(namespace) {
                try Umem(frameCount: capacity, frameSize: BlastPool.frameSize,
                         fillRingSize: BlastPool.fillRingSize, completionRingSize: BlastPool.completionRingSize,
                         numaNode: nil)
            }
        } catch {
            throw LoadError.wrap(error, operation, namespace: namespace, interface: nil)
        }
        self.namespace = namespace
        self.capacity = capacity
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
    }

    deinit {
        lengths.deallocate()
    }

    /// Frames appended so far.
    public var count: Int { state.withLock { $0.count } }
    public var isFull: Bool { state.withLock { $0.count == capacity } }

    /// Appends one frame: `write` gets the next frame's 2048 bytes (zeroed only the first time
    /// the pool is filled; after `removeAll` they hold the old frame), writes a complete
    /// Ethernet frame from the start and returns its length (14...2048). Returns the frame's
    /// index. Throws when the pool is full, while a blaster sends from it, for a bad length,
    /// or what `write` throws (nothing is appended then).
    @discardableResult
    public func append(_ write: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Int {
        let index = try state.withLock { state throws(LoadError) -> Int in
            guard state.activeBlasts == 0 else {
                throw LoadError("append a frame", namespace: namespace, reason: "a blaster is sending from the pool")
            }
            guard state.count < capacity else {
                throw LoadError("append a frame", namespace: namespace,
                                reason: "the pool is full (\(capacity) frames); make it with a larger byte budget")
            }
            return state.count
        }
        let frame = UnsafeMutableRawBufferPointer(start: umem.base + index * BlastPool.frameSize,
                                                  count: BlastPool.frameSize)
        let length = try write(frame)
        guard (BlastPool.minimumFrameLength...BlastPool.frameSize).contains(length) else {
            throw LoadError("append a frame", namespace: namespace,
                            reason: "a frame is \(BlastPool.minimumFrameLength) to \(BlastPool.frameSize) bytes, "
                                + "the writer returned \(length)")
        }
        lengths[index] = UInt16(length)
        state.withLock { $0.count = index + 1 }
        return index
    }

    /// Forgets every frame (the memory stays registered), for refilling between blasts.
    public func removeAll() throws(LoadError) {
        try state.withLock { state throws(LoadError) in
            guard state.activeBlasts == 0 else {
                throw LoadError("clear the frame pool", namespace: namespace, reason: "a blaster is sending from it")
            }
            state.count = 0
        }
    }

    /// Frame `index` as it will be sent (for checks).
    public func frame(_ index: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < count, "frame \(index) is not in the pool (\(count) frames)")
        return UnsafeRawBufferPointer(start: umem.base + index * BlastPool.frameSize, count: Int(lengths[index]))
    }

    /// Marks the pool in use by one more blaster (several may send disjoint or equal ranges
    /// at once: the frames are only read) and returns its frame count.
    func beginBlast() -> Int {
        state.withLock { state in
            state.activeBlasts += 1
            return state.count
        }
    }

    func endBlast() {
        state.withLock { $0.activeBlasts -= 1 }
    }
}
