import CLibXDP
import CXDPWG
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// One tenant's AF_XDP socket on one worker's queue. The socket has a UMEM of its own, so a
/// lane can come and go while the gateway runs (a tenant added or removed) without touching
/// any other lane's frames.
public final class TenantLane: @unchecked Sendable {
    /// The tenant's slot in `DataPlaneState`.
    public let tenant: Int
    public let socket: XskSocket

    public init(tenant: Int, socket: XskSocket) {
        self.tenant = tenant
        self.socket = socket
    }
}

/// One data-plane worker: one uplink queue's AF_XDP socket, the same queue of every tenant's
/// veth (its lanes), a thread pinned to one core. It owns its rings, its frame pools and its
/// counters; it shares only the read-mostly tables with the control plane.
///
/// The loop, per iteration (xdpsock's batch rule on each ring):
/// 1. announce the epoch (nothing read before is held any more); take a new set of lanes if
///    the control plane offered one;
/// 2. drain completion rings into the pools;
/// 3. uplink RX: peek ≤ 64, decrypt each frame out of place into a frame of its tenant's
///    lane, release; TX them to each tenant socket, kick;
/// 4. each lane's RX: peek ≤ 64, encrypt into uplink frames, release; TX, kick;
/// 5. refill the fill rings; ring the control plane's doorbell if anything was queued;
/// 6. account for the frames: in debug builds check that every frame of every UMEM is free
///    or with the kernel (`FrameCounts.isBalanced`); publish where they are (`FrameGauge`)
///    and, about every 100 ms, the kernel's XDP_STATISTICS;
/// 7. with nothing to do for a while, park and sleep in poll() on all sockets.
public final class Worker: @unchecked Sendable {
    public static let batchSize = 64
    /// Uplink frames kept out of the fill ring so encryption always finds some.
    public static let transmitReserve = 512

    public let index: Int
    public let core: Int?
    public let uplink: XskSocket
    public let counters: WorkerCounters
    public let control: ControlQueue
    /// `.off` only in the perf lab's crypto-off mode; fixed for the worker's life.
    public let crypto: TransportCrypto
    /// The worker's cipher until its thread takes it (`WorkerLoop.init`): made on the thread
    /// that builds the worker, where a failure can still be reported, then used only by the
    /// worker's thread.
    private var handedCipher: TransportCipher?
    let state: DataPlaneState
    /// The lanes in use, as the control plane last set them (control thread only).
    public private(set) var lanes: [TenantLane] = []
    /// The set handed to the thread: written before `offered` is bumped, read by the thread
    /// after it sees the bump.
    private var offeredLanes: [TenantLane] = []
    /// [0]: generation of the lanes offered (control thread stores, release);
    /// [1]: generation the thread has taken (thread stores, release).
    let handoff: UnsafeMutablePointer<Atomic<UInt64>>
    /// Wakes the thread from poll() when lanes are offered.
    let wakeFD: Int32
    private let stopRequested = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// Set by the thread if it could not pin itself (reported, not fatal).
    public private(set) var pinningError: String?

    public init(index: Int, core: Int?, uplink: XskSocket, state: DataPlaneState, control: ControlQueue,
                counters: WorkerCounters = .allocate(), crypto: TransportCrypto = .on,
                cipher: consuming TransportCipher = TransportCipher()) throws(XDPError) {
        self.index = index
        self.crypto = crypto
        handedCipher = consume cipher
        self.core = core
        self.uplink = uplink
        self.state = state
        self.control = control
        self.counters = counters
        let fd = cxdpwg_eventfd_nonblocking()
        guard fd >= 0 else { throw XDPError("eventfd (worker \(index))", code: errno) }
        wakeFD = fd
        handoff = .allocate(capacity: 2)
        handoff.initialize(to: Atomic(0))
        (handoff + 1).initialize(to: Atomic(0))
    }

    deinit {
        stop()
        close(wakeFD)
        handoff.deinitialize(count: 2)
        handoff.deallocate()
    }

    /// Hands the thread a new set of lanes (at most one per tenant slot) and waits until it
    /// has taken them, so that lanes left out can be closed when this returns. Control
    /// thread only. Before `start`, the thread takes them when it starts.
    public func setLanes(_ newLanes: [TenantLane]) {
        offeredLanes = newLanes
        let generation = handoff[0].load(ordering: .relaxed) + 1
        handoff[0].store(generation, ordering: .releasing)
        if thread != nil {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
            while handoff[1].load(ordering: .acquiring) < generation && thread != nil {
                usleep(100)
            }
        }
        lanes = newLanes
    }

    /// Starts the worker's thread.
    public func start() throws(XDPError) {
        guard handedCipher != nil else { throw XDPError("starting worker \(index) again", code: EALREADY) }
        let context = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let worker = Unmanaged<Worker>.fromOpaque(raw!).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Worker>.fromOpaque(context).release()
            throw XDPError("pthread_create (worker \(index))", code: rc)
        }
        thread = t
    }

    /// Asks the thread to finish its batch and stop, and waits for it.
    public func stop() {
        stopRequested.store(true, ordering: .releasing)
        if let t = thread {
            pthread_join(t, nil)
            thread = nil
        }
    }

    private func run() {
        if let core {
            do throws(SystemError) { try CPUTopology.pinCurrentThread(to: core) } catch { pinningError = "\(error)" }
        }
        CPUTopology.setCurrentThreadName("xdpwg-w\(index)")
        var loop = WorkerLoop(self)
        loop.run(stop: stopRequested)
        state.epochs.park(worker: index)
    }

    /// The thread's side of the hand-over of the cipher: once, when the loop starts.
    func takeCipher() -> TransportCipher {
        guard let cipher = handedCipher.take() else { preconditionFailure("worker \(index) started twice") }
        return cipher
    }

    /// The thread's side of `setLanes`: the offered set and its generation.
    func takeOffer() -> (lanes: [TenantLane], generation: UInt64) {
        let generation = handoff[0].load(ordering: .acquiring)
        return (offeredLanes, generation)
    }
}
