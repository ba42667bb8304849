import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How long a blaster sends.
public enum BlastMode: Sendable, Equatable, CustomStringConvertible {
    /// One pass. `FrameBlaster`: every frame of the pool (or of the range given) exactly once,
    /// in order — for pre-encrypted transport packets whose counters must arrive in order.
    /// `DatagramBlaster`: one datagram to each destination.
    case once
    /// Exactly this many packets, cycling through the frames (or destinations) in order.
    case packets(UInt64)
    /// As many packets as the sender can for this long, cycling (or until stopped early).
    case duration(seconds: Double)

    /// The packets to send and the time to stop by, for a pass of `onePass` packets starting
    /// now: (n, ∞) for a count, (nil, now + seconds) for a duration.
    func bounds(onePass: Int) -> (limit: UInt64?, deadline: Double) {
        switch self {
        case .once: (UInt64(onePass), .infinity)
        case .packets(let n): (n, .infinity)
        case .duration(let seconds): (nil, monotonicSeconds() + seconds)
        }
    }

    public var description: String {
        switch self {
        case .once: "once"
        case .packets(let n): "\(n) packets"
        case .duration(let seconds): "\(seconds) s"
        }
    }
}

/// What a blaster did.
public struct BlastResult: Sendable, Equatable, CustomStringConvertible {
    /// Packets handed on by the sender's kernel: for a `FrameBlaster` transmitted by the
    /// device, for a `DatagramBlaster` accepted by the UDP socket. Whether they arrived is the
    /// sink's to say.
    public var sent: UInt64
    /// Packets the device refused (`FrameBlaster` only; a veth drops when the ring of its
    /// peer is full): sent + dropped frames left the TX ring.
    public var dropped: UInt64
    /// From the first packet submitted to the last one completed.
    public var seconds: Double
    /// CPU time the sending thread used meanwhile, user and kernel (CLOCK_THREAD_CPUTIME_ID):
    /// the kernel's transmit work, and whatever receive processing ran on that core inside
    /// its system calls (a veth peer's NAPI runs there).
    public var cpuSeconds: Double
    /// How long the pinned core was busy meanwhile, whatever ran there: the blaster, receive
    /// processing on its behalf (softirq, or ksoftirqd, which `cpuSeconds` misses), and other
    /// processes. 10 ms resolution; nil when the blaster was not pinned.
    public var coreBusySeconds: Double?

    public init(sent: UInt64, dropped: UInt64 = 0, seconds: Double, cpuSeconds: Double, coreBusySeconds: Double? = nil) {
        self.sent = sent
        self.dropped = dropped
        self.seconds = seconds
        self.cpuSeconds = cpuSeconds
        self.coreBusySeconds = coreBusySeconds
    }

    /// Packets sent per second (0 for an empty blast).
    public var packetsPerSecond: Double { seconds > 0 ? Double(sent) / seconds : 0 }

    public var description: String {
        let rate = packetsPerSecond / 1e6
        let core = coreBusySeconds.map { ", core busy \($0) s" } ?? ""
        return "\(sent) sent, \(dropped) dropped in \(seconds) s (\(rate) Mpps, \(cpuSeconds) CPU-s\(core))"
    }
}

/// The calling thread's CPU time in seconds (user + system).
func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The monotonic clock in seconds (CLOCK_MONOTONIC, read through the vDSO: no syscall).
@inline(__always)
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Samples a blast's clocks: wall, the thread's CPU time, the pinned core's busy time.
struct BlastClock {
    let cpu: Int?
    let wall = monotonicSeconds()
    let thread = threadCPUSeconds()
    let core: Double?

    init(cpu: Int?) {
        self.cpu = cpu
        core = cpu.flatMap(coreBusySeconds)
    }

    /// The result of a blast that sent `sent` and saw `dropped` refused, ending now.
    func result(sent: UInt64, dropped: UInt64) -> BlastResult {
        let coreNow = cpu.flatMap(coreBusySeconds)
        let busy: Double? = if let coreNow, let core { coreNow - core } else { nil }
        return BlastResult(sent: sent, dropped: dropped, seconds: monotonicSeconds() - wall,
                           cpuSeconds: threadCPUSeconds() - thread, coreBusySeconds: busy)
    }
}

/// What the pool blasters (`FrameBlaster`, `LiveFrameBlaster`) share, so that a runner can
/// choose one at run time.
public protocol PoolBlaster: AnyObject, Sendable {
    var pool: BlastPool { get }
    /// Starts a blast of `frames` of the pool (nil: all) on the blaster's pinned thread;
    /// `requestStop()` ends it early, `join()` returns its `BlastResult` or throws.
    /// Paced at `rate` frames per second (nil: as fast as the generator goes).
    func start(_ mode: BlastMode, frames: Range<Int>?, rate: Double?) throws(LoadError) -> NamespaceThread<BlastResult>
    /// Frames the running (or last) blast has sent so far, read from another thread.
    func framesSent() throws -> UInt64
}

extension PoolBlaster {
    /// `start` and `join`: blasts on the pinned thread and waits for it.
    public func run(_ mode: BlastMode, frames: Range<Int>? = nil) throws -> BlastResult {
        try start(mode, frames: frames, rate: nil).join()
    }
}

/// Lets one blast at a time run on a blaster (its rings or socket have one producer).
final class BlastGate: Sendable {
    private let busy = Atomic<Bool>(false)

    /// Takes the gate; false if a blast holds it.
    func enter() -> Bool {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }

    func leave() { busy.store(false, ordering: .releasing) }
}

/// How every blaster starts a blast: checks the mode, takes the blaster's gate (and marks
/// its pool in use, if it has one), and runs `blast` on a thread pinned to `cpu` in
/// `namespace`. What was taken is given back when the thread ends, or at once if it cannot
/// start.
func startBlast(_ mode: BlastMode, operation: String, namespace: String?, interface: String?, cpu: Int?,
                threadName: String, gate: BlastGate, pool: BlastPool?,
                _ blast: @escaping @Sendable (StopSignal) throws -> BlastResult) throws(LoadError) -> NamespaceThread<BlastResult> {
    if case .duration(let seconds) = mode, !(seconds > 0 && seconds.isFinite) {
        throw LoadError(operation, namespace: namespace, interface: interface, reason: "the duration must be positive")
    }
    guard gate.enter() else {
        throw LoadError(operation, namespace: namespace, interface: interface, reason: "this blaster is already sending")
    }
    pool?.beginBlast()
    do {
        return try NamespaceThread(namespace: namespace, cpu: cpu, name: threadName) { stop in
            defer {
                pool?.endBlast()
                gate.leave()
            }
            return try blast(stop)
        }
    } catch {
        pool?.endBlast()
        gate.leave()
        throw error
    }
}
