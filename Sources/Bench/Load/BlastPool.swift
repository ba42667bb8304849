import Engine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The frames a blaster sends: `capacity` slots of 2048 bytes, page-aligned, into which
/// callers write finished Ethernet frames with `append`, so sending copies nothing in user
/// space. Two kinds, one per blaster:
///
/// - for a `FrameBlaster` (`init(namespace:capacity:)`): the memory is the UMEM of the
///   blaster's AF_XDP socket, and a TX descriptor just names a frame. The UMEM is registered
///   through an AF_XDP socket, which belongs to a network namespace, and the first socket
///   bound to a UMEM is that very socket: so the pool is made in the namespace of the
///   interface it will be sent from. Frames up to 2048 bytes.
/// - for a `LiveFrameBlaster` (`init(liveFramesCapacity:)`): the memory is an mmapable BPF
///   array that the blaster's XDP program copies each frame from. Not tied to a namespace.
///   Frames up to 2040 bytes (the slot's last 8 hold the length).
///
/// (Named BlastPool, not FramePool: the Engine already has a `FramePool`, the worker's stack
/// of free frame addresses, and code importing both would have to qualify every use.)
///
/// Size: `capacity` frames, 2048 bytes each (`frameCount(byteBudget:)` converts a budget).
/// The memory is real and pinned — the UMEM by the kernel while registered, the BPF array is
/// kernel memory — so `maximumByteBudget` (8 GiB, 4,194,304 frames; a BPF array stops just
/// below 4 GiB, 2,097,000 frames) is the hard limit, and a pool above half the memory
/// available now is refused with a message saying both figures.
///
/// Frames may be appended or cleared between blasts, never during one (that throws); one
/// thread fills a pool (appends are not meant to race each other). Several blasters may
/// send from one pool at once (the frames are only read).
public final class BlastPool: @unchecked Sendable {
    /// Bytes per frame slot.
    public static let frameSize = 2048
    /// The smallest frame accepted: an Ethernet header.
    public static let minimumFrameLength = 14
    public static let defaultByteBudget = 512 << 20
    public static let maximumByteBudget = 8 << 30

    /// The frames a byte budget holds.
    public static func frameCount(byteBudget: Int) -> Int { byteBudget / frameSize }

    public enum Kind: Sendable, Equatable {
        /// The UMEM of a `FrameBlaster`'s AF_XDP socket.
        case afXDP
        /// The frame array of a `LiveFrameBlaster`'s XDP program.
        case liveFrames
    }

    public let kind: Kind
    /// Where an AF_XDP pool is registered (nil: the caller's namespace, or a live-frame pool).
    public let namespace: String?
    /// Frames the pool can hold.
    public let capacity: Int
    /// The longest frame a slot holds: 2048 (AF_XDP) or 2040 (live frames).
    public let maximumFrameLength: Int

    enum Backing {
        case umem(Umem)
        case live(LiveFramePoolMap)
    }
    let backing: Backing
    /// Slot i starts at `base + i * frameSize`.
    let base: UnsafeMutableRawPointer
    /// Frame lengths, one per frame appended; read by the blaster through this pointer.
    let lengths: UnsafeMutablePointer<UInt16>
    private let state = Mutex(State())

    private struct State {
        var count = 0
        /// Blasters sending from the pool now: appending or clearing would change frames the
        /// kernel is reading.
        var activeBlasts = 0
    }

    /// Rings of an AF_XDP pool's UMEM. The completion ring holds a slot for every frame in
    /// flight (twice the blaster's TX ring, so a full TX ring never waits for reaping); the
    /// fill ring is unused (the socket only sends) and kept small.
    static let completionRingSize: UInt32 = 4096
    static let fillRingSize: UInt32 = 64

    /// An AF_XDP pool with room for `byteBudget / 2048` frames, registered in `namespace`.
    public convenience init(namespace: String?, byteBudget: Int = BlastPool.defaultByteBudget) throws(LoadError) {
        try self.init(namespace: namespace, capacity: BlastPool.frameCount(byteBudget: byteBudget))
    }

    /// An AF_XDP pool (for a `FrameBlaster`) with room for `capacity` frames, registered in
    /// `namespace`.
    public init(namespace: String?, capacity: Int) throws(LoadError) {
        let operation = "create a frame pool of \(capacity) frames"
        try BlastPool.checkSize(capacity: capacity, operation: operation, namespace: namespace)
        let umem: Umem
        do {
            umem = try runInNamespace(namespace) {
                try Umem(frameCount: capacity, frameSize: BlastPool.frameSize,
                         fillRingSize: BlastPool.fillRingSize, completionRingSize: BlastPool.completionRingSize,
                         numaNode: nil)
            }
        } catch {
            throw LoadError.wrap(error, operation, namespace: namespace, interface: nil)
        }
        kind = .afXDP
        backing = .umem(umem)
        base = umem.base
        maximumFrameLength = BlastPool.frameSize
        self.namespace = namespace
        self.capacity = capacity
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
    }

    /// A live-frame pool (for a `LiveFrameBlaster`) with room for `capacity` frames.
    public init(liveFramesCapacity capacity: Int) throws(LoadError) {
        let operation = "create a live-frame pool of \(capacity) frames"
        try BlastPool.checkSize(capacity: capacity, operation: operation, namespace: nil)
        let map: LiveFramePoolMap
        do {
            map = try BenchBlastProgram.createPool(capacity: capacity)
        } catch {
            throw LoadError.wrap(error, operation, namespace: nil, interface: nil)
        }
        kind = .liveFrames
        backing = .live(map)
        base = map.base
        maximumFrameLength = BenchBlastProgram.maxFrameLength
        namespace = nil
        self.capacity = capacity
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
    }

    private static func checkSize(capacity: Int, operation: String, namespace: String?) throws(LoadError) {
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
    }

    deinit {
        lengths.deallocate()
    }

    /// The UMEM of an AF_XDP pool.
    var umem: Umem? {
        if case .umem(let umem) = backing { return umem }
        return nil
    }

    /// The BPF array of a live-frame pool.
    var liveMap: LiveFramePoolMap? {
        if case .live(let map) = backing { return map }
        return nil
    }

    /// Frames appended so far.
    public var count: Int { state.withLock { $0.count } }
    public var isFull: Bool { state.withLock { $0.count == capacity } }

    /// Appends one frame: `write` gets the next slot's `maximumFrameLength` bytes (zeroed the
    /// first time the pool is filled; after `removeAll` they hold the old frame), writes a
    /// complete Ethernet frame from the start and returns its length (14 to
    /// `maximumFrameLength`). Returns the frame's index. Throws when the pool is full, while a blaster sends from it, for a bad length,
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
        let slot = base + index * BlastPool.frameSize
        let length = try write(UnsafeMutableRawBufferPointer(start: slot, count: maximumFrameLength))
        guard (BlastPool.minimumFrameLength...maximumFrameLength).contains(length) else {
            throw LoadError("append a frame", namespace: namespace,
                            reason: "a frame is \(BlastPool.minimumFrameLength) to \(maximumFrameLength) bytes, "
                                + "the writer returned \(length)")
        }
        lengths[index] = UInt16(length)
        if kind == .liveFrames {
            // The XDP program reads the length from the slot itself.
            slot.storeBytes(of: UInt32(length), toByteOffset: BenchBlastProgram.lengthOffset, as: UInt32.self)
        }
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
        return UnsafeRawBufferPointer(start: base + index * BlastPool.frameSize, count: Int(lengths[index]))
    }

    /// Marks the pool in use by one more blaster (several may send disjoint or equal ranges
    /// at once: the frames are only read).
    func beginBlast() {
        state.withLock { $0.activeBlasts += 1 }
    }

    /// The frames a blast of `frames` sends (nil: all of them), checked against the pool.
    func blastRange(_ frames: Range<Int>?, operation: String, interface: String) throws(LoadError) -> Range<Int> {
        let count = self.count
        let range = frames ?? 0..<count
        guard !range.isEmpty, range.lowerBound >= 0, range.upperBound <= count else {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: count == 0 ? "the pool is empty" : "frames \(range) are not all in the pool (0..<\(count))")
        }
        return range
    }

    func endBlast() {
        state.withLock { $0.activeBlasts -= 1 }
    }
}
