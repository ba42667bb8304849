import Engine
#if canImport(Glibc)
import Glibc
#endif

/// Puts a live-frame `BlastPool`'s frames on the wire through the kernel's XDP live-frames
/// mode (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES): an XDP program (`xdpwg_blast` in
/// bpf/bench/bench.bpf.c) runs on frames of the kernel's own page pool, copies the next frame of
/// the pool into each, and returns XDP_TX, which transmits it out of `interface` as an
/// xdp_frame: no skb, no socket, no copy from user space. From its own thread pinned to
/// `cpu`, inside `namespace`.
///
/// The fastest generator the kernel offers for a veth (see `measureCeiling`), several times
/// an AF_XDP socket in copy mode, which pays for an skb per frame. Conditions, from the veth
/// driver: the peer must have an XDP program attached (its NAPI takes the frames: a
/// `PacketSink`, the gateway's uplink program); and the peer's receive queue is chosen by the
/// sending CPU (cpu % the peer's queue count), not by a queue number — pin blasters to the
/// CPUs whose queues they should feed.
///
/// Frames go out in pool order; `.once` sends each exactly once. `sent` counts the frames the
/// program returned XDP_TX for. What the device does with them next it does not report back
/// to the run: a veth whose peer has no XDP program drops every frame, one whose peer ring is
/// full drops the excess, and neither shows in `dropped` (always 0) or in the interface's
/// rtnetlink counters (only in `ethtool -S`, as xdp_xmit_errors). The sink's count is the
/// truth. (Each batch is flushed and the peer's NAPI runs on this core before the next, so
/// the 256-entry ring does not fill while softirqs keep up.)
public final class LiveFrameBlaster: PoolBlaster, @unchecked Sendable {
    public let pool: BlastPool
    public let namespace: String?
    public let interface: String
    public let cpu: Int?
    /// Frames per kernel batch: transmissions are flushed (and the peer's NAPI runs) after each.
    public let batchSize: UInt32

    private let program: BenchBlastProgram
    private let interfaceIndex: Int32
    private let gate = BlastGate()

    /// Program runs in the first test-run call; later calls are sized from the rate seen to
    /// last `callSeconds`: long enough to amortise a call's fixed cost, short enough that a
    /// stop request is seen within that time.
    static let firstCall: UInt64 = 1 << 16
    static let callSeconds = 0.5

    /// Loads the program and installs the pool. Throws `LoadError` for an AF_XDP pool, a batch
    /// size outside 1...256, no such namespace or interface, or a load failure.
    public init(pool: BlastPool, namespace: String?, interface: String, cpu: Int? = nil,
                batchSize: UInt32 = 64) throws(LoadError) {
        let operation = "prepare a live-frame blaster"
        guard let map = pool.liveMap else {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: "the pool is an AF_XDP pool (for a FrameBlaster); make it with init(liveFramesCapacity:)")
        }
        guard (1...BenchBlastProgram.maxBatchSize).contains(batchSize) else {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: "the batch size must be 1 to \(BenchBlastProgram.maxBatchSize), got \(batchSize)")
        }
        do {
            interfaceIndex = try runInNamespace(namespace) { try NetworkInterface.named(interface).index }
            program = try BenchBlastProgram()
            try program.install(map)
        } catch {
            throw LoadError.wrap(error, operation, namespace: namespace, interface: interface)
        }
        self.pool = pool
        self.namespace = namespace
        self.interface = interface
        self.cpu = cpu
        self.batchSize = batchSize
    }

    /// Starts a blast on a new thread (in the namespace, pinned to `cpu`); `requestStop()` ends
    /// it early (within 0.5 s: the kernel is asked for frames in calls that long), `join()`
    /// returns the `BlastResult` or throws a `LoadError` (the kernel refused the run; frames
    /// with a bad length).
    ///
    /// `rate` paces the blast at that many frames per second (see struct blast_control in
    /// bpf/bench/bench.bpf.c): a constant offered load instead of the generator's ceiling.
    public func start(_ mode: BlastMode, frames: Range<Int>? = nil,
                      rate: Double? = nil) throws(LoadError) -> NamespaceThread<BlastResult> {
        let operation = "blast live frames (\(mode))"
        let range = try pool.blastRange(frames, operation: operation, interface: interface)
        if let rate, !(rate >= 1 && rate <= 1e9) {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: "the rate must be 1 to 1e9 frames per second, got \(rate)")
        }
        return try startBlast(mode, operation: operation, namespace: namespace, interface: interface, cpu: cpu,
                              threadName: "xdpwg-liveblast", gate: gate, pool: pool) { stop in
            try self.blast(mode, range: range, rate: rate, stop: stop)
        }
    }

    /// Why live frames cannot be used on a kernel that refuses them.
    public static let unsupportedReason = "this kernel refuses BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES "
        + "(EPERM): live frames are not available here; use the AF_XDP generator (FrameBlaster)"

    /// Whether this kernel runs XDP programs on live frames (some builds refuse with EPERM):
    /// asked once, by a run of the program that sends nothing (no pool installed) on the
    /// loopback device of the caller's namespace.
    public static let isSupported: Bool = {
        guard let program = try? BenchBlastProgram(), let loopback = try? NetworkInterface.named("lo") else { return false }
        var template = [UInt8](repeating: 0, count: 64)
        return template.withUnsafeMutableBytes { bytes in
            do throws(BPFError) {
                try program.runLive(template: UnsafeRawBufferPointer(bytes), interfaceIndex: loopback.index, count: 1)
                return true
            } catch {
                return error.errno != EPERM
            }
        }
    }()

    /// Frames sent so far by the blast running now (or the last one): readable from any
    /// thread while it runs, to measure a window in the middle of a blast.
    public func framesSent() throws(LoadError) -> UInt64 {
        do throws(BPFError) {
            return try program.readControl().sent
        } catch {
            throw LoadError("read the live-frame blaster's counters", namespace: namespace, interface: interface,
                            reason: "\(error)")
        }
    }

    private func blast(_ mode: BlastMode, range: Range<Int>, rate: Double?,
                       stop: StopSignal) throws(LoadError) -> BlastResult {
        let operation = "blast live frames (\(mode))"
        let (limit, deadline) = mode.bounds(onePass: range.count)
        // Every page starts as the first frame: when all frames are that long (one inner size
        // a pass, the usual case) the program never resizes one.
        let first = pool.frame(range.lowerBound)
        let template = UnsafeMutableRawBufferPointer.allocate(byteCount: first.count, alignment: 64)
        defer { template.deallocate() }
        template.copyMemory(from: first)

        let clock = BlastClock(cpu: cpu)
        // The program stops sending at `limit` itself (runs past it send nothing), so calls
        // are sized in runs, whatever share of them sends: all when unpaced, few when paced.
        var control = BenchBlastProgram.Control(
            next: UInt64(range.lowerBound), begin: UInt64(range.lowerBound), end: UInt64(range.upperBound),
            intervalNanoseconds: rate.map { UInt64((1e9 / $0).rounded()) } ?? 0, limit: limit ?? 0)
        do throws(BPFError) {
            try program.writeControl(control)
            var chunk = LiveFrameBlaster.firstCall
            while true {
                if let limit, control.sent + control.failed >= limit { break }
                let now = monotonicSeconds()
                if stop.isStopRequested || now >= deadline { break }
                let runs = control.runs
                do throws(BPFError) {
                    try program.runLive(template: UnsafeRawBufferPointer(template), interfaceIndex: interfaceIndex,
                                        count: Int32(chunk), batchSize: batchSize)
                } catch where error.errno == EINTR {
                    // A signal cut the run short: the counters say how far it got.
                }
                control = try program.readControl()
                // Each call costs a fixed setup and teardown (a page pool, an RCU grace period:
                // milliseconds of sleep): size the next to last `callSeconds` at the rate just
                // seen, and to end near the deadline.
                let elapsed = monotonicSeconds() - now
                let done = control.runs - runs
                if elapsed > 0 && done > 0 {
                    let runRate = Double(done) / elapsed
                    let seconds = min(LiveFrameBlaster.callSeconds, max(deadline - monotonicSeconds(), 0.001))
                    chunk = UInt64(max(1, min(runRate * seconds, Double(Int32.max))))
                }
            }
        } catch {
            let reason = error.errno == EPERM ? LiveFrameBlaster.unsupportedReason : "\(error)"
            throw LoadError(operation, namespace: namespace, interface: interface, reason: reason)
        }
        guard control.failed == 0 else {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: "\(control.failed) frames were not sent: a length outside 14...\(pool.maximumFrameLength)")
        }
        return clock.result(sent: control.sent, dropped: 0)
    }
}
