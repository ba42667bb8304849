import Engine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Puts a `BlastPool`'s frames on the wire at the rate the kernel can take them: an AF_XDP
/// socket bound to `interface`/`queue` in the pool's network namespace, used only to send,
/// driven from its own thread pinned to `cpu`.
///
/// Copy mode (veth has no zero copy): each frame costs the kernel an skb and a copy, so the
/// sending core's kernel time is the ceiling (`measureCeiling` says how high). Everything in
/// user space is kept off that path: frames are written once into the UMEM beforehand, a
/// TX descriptor only names one, the TX ring is kept full, completions are reaped in
/// batches, and the kernel is kicked (sendto) only while it holds descriptors it has not
/// taken. Each kick sends at most 32 frames unless the kernel accepts a larger budget
/// (XDP_MAX_TX_SKB_BUDGET, Linux 6.17+), which `XskSocket` asks for: `framesPerKick` says which.
///
/// No XDP program is loaded on the interface (libxdp's program loading is inhibited): what
/// the interface receives is untouched, and a `PacketSink` may be attached to it.
///
/// Frames go out in ring order, which is pool order; on a veth a single queue delivers them
/// to the peer in that order. One blast at a time per blaster; several blasters (on other
/// queues) may share one pool.
public final class FrameBlaster: PoolBlaster, @unchecked Sendable {
    public let pool: BlastPool
    public let interface: String
    public let queue: UInt32
    public let cpu: Int?
    /// The most frames one kick hands the kernel: 32, or the TX ring size where the kernel
    /// accepts XDP_MAX_TX_SKB_BUDGET.
    public let framesPerKick: Int
    public var namespace: String? { pool.namespace }

    private let socket: XskSocket
    private let gate = BlastGate()
    /// Frames the running (or last) blast has had completed so far, for readers on other threads.
    private let completedSoFar = Atomic<UInt64>(0)

    /// TX ring entries: the most frames in flight. The pool's completion ring is twice this.
    static let txRingSize: UInt32 = 2048
    /// The socket only sends, but libxdp always makes an RX ring: the smallest reasonable.
    static let rxRingSize: UInt32 = 64
    /// Completions reaped and descriptors written per turn of the loop.
    static let batch: UInt32 = 256
    /// With nothing left to send, how long to wait for the kernel to complete what it took.
    static let drainTimeout = 2.0

    /// Binds the socket (in the pool's namespace). Throws `LoadError` naming the interface,
    /// queue and namespace: no such namespace or interface, a queue the interface lacks, a
    /// queue another AF_XDP socket holds, or the kernel's refusal with its errno.
    public init(pool: BlastPool, interface: String, queue: UInt32 = 0, cpu: Int? = nil) throws(LoadError) {
        guard let umem = pool.umem else {
            throw LoadError("bind an AF_XDP socket for sending (queue \(queue))", interface: interface,
                            reason: "the pool is a live-frame pool (for a LiveFrameBlaster); make it with init(namespace:capacity:)")
        }
        let configuration = XskConfiguration(rxSize: FrameBlaster.rxRingSize, txSize: FrameBlaster.txRingSize,
                                             copyMode: true, needWakeup: true)
        do {
            socket = try runInNamespace(pool.namespace) {
                // A queue whose last AF_XDP socket was closed moments ago stays busy until a
                // kernel work item releases its buffer pool (xp_release_deferred): retry EBUSY
                // for up to a second before believing another socket holds it.
                var attempt = 0
                while true {
                    do {
                        return try XskSocket(interface: interface, queue: queue, umem: umem,
                                             configuration: configuration)
                    } catch let error as XDPError where error.code == EBUSY && attempt < 100 {
                        attempt += 1
                        usleep(10_000)
                    }
                }
            }
        } catch {
            throw LoadError.wrap(error, "bind an AF_XDP socket for sending (queue \(queue))",
                                 namespace: pool.namespace, interface: interface)
        }
        framesPerKick = socket.transmitBudget
        self.pool = pool
        self.interface = interface
        self.queue = queue
        self.cpu = cpu
    }

    /// Starts a blast on a new thread (in the pool's namespace, pinned to `cpu`) and returns
    /// it: `requestStop()` ends it early, `join()` waits and returns the `BlastResult` or
    /// throws a `LoadError` (the kernel refused a kick, the interface went down, frames were
    /// never completed). `frames` limits the blast to part of the pool (default: all).
    ///
    /// `rate` paces the blast at that many frames per second (a constant offered load instead
    /// of the generator's ceiling): frames are put on the ring only as they fall due.
    public func start(_ mode: BlastMode, frames: Range<Int>? = nil,
                      rate: Double? = nil) throws(LoadError) -> NamespaceThread<BlastResult> {
        let operation = "blast frames (\(mode))"
        let range = try pool.blastRange(frames, operation: operation, interface: interface)
        if let rate, !(rate >= 1 && rate <= 1e9) {
            throw LoadError(operation, namespace: namespace, interface: interface,
                            reason: "the rate must be 1 to 1e9 frames per second, got \(rate)")
        }
        return try startBlast(mode, operation: operation, namespace: namespace, interface: interface, cpu: cpu,
                              threadName: "xdpwg-blast", gate: gate, pool: pool) { stop in
            try self.blast(mode, range: range, rate: rate, stop: stop)
        }
    }

    /// Frames the blast running now (or the last one) has sent so far: readable from any
    /// thread while it runs, to measure a window in the middle of a blast.
    public func framesSent() -> UInt64 { completedSoFar.load(ordering: .relaxed) }

    // MARK: The sending loop

    private func blast(_ mode: BlastMode, range: Range<Int>, rate: Double?, stop: StopSignal) throws(LoadError) -> BlastResult {
        let tx = socket.txRing, completion = socket.completionRing, fd = socket.fd
        let lengths = pool.lengths
        let frameShift = UInt64(BlastPool.frameSize.trailingZeroBitCount)
        let (limit, deadline) = mode.bounds(onePass: range.count)
        let statisticsBefore = try? socket.statistics()

        var next = range.lowerBound
        var submitted: UInt64 = 0, completed: UInt64 = 0, dropped: UInt64 = 0
        var submitting = limit != 0
        var turns: UInt64 = 0
        let clock = BlastClock(cpu: cpu)
        var lastProgress = clock.wall
        completedSoFar.store(0, ordering: .relaxed)

        while true {
            // Reap: every completed frame is one the kernel has finished with (sent or dropped).
            let (done, _) = completion.peek(maximum: FrameBlaster.batch)
            if done > 0 {
                completion.release(done)
                completed &+= UInt64(done)
                completedSoFar.store(completed, ordering: .relaxed)
            }

            if submitting {
                turns &+= 1
                if let limit, submitted == limit {
                    submitting = false
                } else if stop.isStopRequested || (turns & 15 == 0 && monotonicSeconds() >= deadline) {
                    submitting = false
                }
            }
            if submitting {
                // Keep the ring full: as many descriptors as are free, up to a batch.
                var wanted = FrameBlaster.batch
                if let limit { wanted = UInt32(min(UInt64(wanted), limit - submitted)) }
                if let rate {
                    // Paced: only the frames due by now, at most a batch at a time.
                    let due = UInt64(max(0, (monotonicSeconds() - clock.wall) * rate))
                    wanted = due > submitted ? UInt32(min(UInt64(wanted), due - submitted)) : 0
                }
                let free = min(wanted, tx.freeSlots(wanted: wanted))
                if free > 0, let index = tx.reserve(free) {
                    for i in 0..<free {
                        tx.setDescriptor(index &+ i, address: UInt64(next) << frameShift, length: UInt32(lengths[next]))
                        next += 1
                        if next == range.upperBound { next = range.lowerBound }
                    }
                    tx.submit(free)  // RELEASE: descriptors visible before the producer index
                    submitted &+= UInt64(free)
                }
            } else if completed == submitted {
                break
            }

            // Kick only while the kernel holds descriptors it has not taken (copy mode always
            // asks for the wakeup; each kick takes up to framesPerKick).
            if tx.outstanding > 0 && tx.needsWakeup {
                let code = FrameBlaster.kick(fd)
                switch code {
                case 0, EAGAIN, ENOBUFS:
                    break  // sent, or try again: completion ring full, device busy, no memory now
                case EBUSY:
                    dropped &+= 1  // the device refused one frame; it completes all the same
                case ENETDOWN:
                    throw LoadError("blast frames", namespace: namespace, interface: interface,
                                    reason: "the interface is down (sendto: \(Errno.text(code)))")
                default:
                    throw LoadError("blast frames: kick the TX ring (sendto)", namespace: namespace,
                                    interface: interface, errno: code)
                }
            }

            if !submitting {
                // Draining: the kernel must complete what it took within a bound, or something
                // (invalid descriptors, a stuck device) keeps it.
                let now = monotonicSeconds()
                if done > 0 {
                    lastProgress = now
                } else if now - lastProgress > FrameBlaster.drainTimeout {
                    let invalid = (try? socket.statistics()).map { after in
                        after.txInvalidDescriptors &- (statisticsBefore?.txInvalidDescriptors ?? 0)
                    } ?? 0
                    throw LoadError("blast frames", namespace: namespace, interface: interface,
                                    reason: "\(submitted - completed) of \(submitted) frames were not completed within "
                                        + "\(FrameBlaster.drainTimeout) s; the kernel counted \(invalid) invalid TX "
                                        + "descriptors (a frame longer than the interface's MTU + 14?)")
                }
            }
        }
        return clock.result(sent: completed - dropped, dropped: dropped)
    }

    /// sendto(fd, NULL, 0, MSG_DONTWAIT): asks the kernel to transmit from the TX ring.
    /// Returns 0 or the errno; EINTR is retried. (Engine's `XskSocket.kickTransmit` folds
    /// EBUSY into success, but a blaster must count it: one EBUSY is one dropped frame.)
    @inline(__always)
    static func kick(_ fd: Int32) -> Int32 {
        SystemCall.retryingEINTR { sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) } >= 0 ? 0 : errno
    }
}
