import CLibXDP
#if canImport(Glibc)
import Glibc
#endif

/// How an AF_XDP socket is bound.
public struct XskConfiguration: Sendable, Equatable {
    /// RX and TX ring entries (powers of two).
    public var rxSize: UInt32
    public var txSize: UInt32
    /// Force copy mode (XDP_COPY). Otherwise no mode flag: the kernel uses zero-copy when the
    /// driver supports it and copies otherwise (veth always copies).
    public var copyMode: Bool
    /// XDP_USE_NEED_WAKEUP: the kernel says, through ring flags, when it needs a syscall to
    /// make progress, so a busy worker makes none it does not need.
    public var needWakeup: Bool
    /// Preferred busy polling (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET): the
    /// driver's NAPI runs in our recvfrom/sendto instead of in softirq. Needs the device's
    /// napi_defer_hard_irqs / gro_flush_timeout set to pay off.
    public var busyPoll: BusyPoll?

    public struct BusyPoll: Sendable, Equatable {
        public var timeoutMicroseconds: UInt32
        public var budget: UInt32
        public init(timeoutMicroseconds: UInt32 = 20, budget: UInt32 = 64) {
            self.timeoutMicroseconds = timeoutMicroseconds
            self.budget = budget
        }
    }

    public init(rxSize: UInt32 = 2048, txSize: UInt32 = 2048, copyMode: Bool = false, needWakeup: Bool = true,
                busyPoll: BusyPoll? = nil) {
        self.rxSize = rxSize
        self.txSize = txSize
        self.copyMode = copyMode
        self.needWakeup = needWakeup
        self.busyPoll = busyPoll
    }
}

/// The kernel's per-socket AF_XDP counters (getsockopt SOL_XDP / XDP_STATISTICS).
public struct XskStatistics: Sendable, Equatable {
    /// Received packets dropped for reasons other than a full RX ring or an empty fill ring
    /// (e.g. the packet did not fit the frame).
    public var rxDropped: UInt64 = 0
    /// Fill-ring addresses the kernel rejected (outside the UMEM, ...).
    public var rxInvalidDescriptors: UInt64 = 0
    /// TX descriptors the kernel rejected (bad address or length).
    public var txInvalidDescriptors: UInt64 = 0
    /// Received packets dropped because the RX ring was full (we fell behind).
    public var rxRingFull: UInt64 = 0
    /// Times the kernel found the fill ring empty (we did not replenish fast enough).
    public var rxFillRingEmpty: UInt64 = 0
    /// Times the kernel found the TX ring empty when woken.
    public var txRingEmpty: UInt64 = 0

    public init() {}
}

/// One AF_XDP socket bound to one queue of one interface, created through libxdp with
/// XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD: libxdp loads no XDP program; ours steers packets and
/// we put this socket's `fd` into its xsks_map ourselves.
///
/// The first socket on a Umem uses the Umem's fill and completion rings
/// (xsk_socket__create); a later socket on the same Umem, on another interface or queue,
/// is created with xsk_socket__create_shared and fill and completion rings of its own,
/// owned here. A later socket inherits the first one's mode (copy or zero-copy) and its
/// need_wakeup setting: the kernel takes no bind flags for a shared UMEM.
///
/// Create and delete sockets from the control path, in the network namespace the interface
/// lives in (the socket stays bound to that namespace). Ring access may then happen from any
/// one thread (the worker).
public final class XskSocket: @unchecked Sendable {
    public let interface: String
    public let queue: UInt32
    public let umem: Umem
    public let fd: Int32
    public let rx: UnsafeMutablePointer<xsk_ring_cons>
    public let tx: UnsafeMutablePointer<xsk_ring_prod>
    public let fill: UnsafeMutablePointer<xsk_ring_prod>
    public let completion: UnsafeMutablePointer<xsk_ring_cons>
    /// Whether this socket shares fill and completion rings with the Umem (the first socket).
    public let usesUmemRings: Bool
    /// The kernel bound this socket in zero-copy mode (XDP_OPTIONS); false means copy mode.
    public let isZeroCopy: Bool
    /// need_wakeup is in force (this socket's setting, or the first socket's for a shared one).
    public let usesNeedWakeup: Bool
    /// Frames one TX kick (`kickTransmit`) sends at most in copy mode.
    public let transmitBudget: Int

    /// libxdp's `struct xsk_socket *`.
    private let handle: OpaquePointer
    private let ifindex: UInt32
    /// rx, tx and (for a shared socket) fill and completion, one cache line each.
    private let ringStorage: UnsafeMutableRawPointer

    public init(interface: String, queue: UInt32, umem: Umem, configuration: XskConfiguration) throws(XDPError) {
        for (name, size) in [("rx", configuration.rxSize), ("tx", configuration.txSize)]
        where size == 0 || size & (size - 1) != 0 {
            throw XDPError("create AF_XDP socket", interface: interface, queue: queue, code: EINVAL,
                           detail: "\(name) ring size must be a power of two, got \(size)")
        }
        let ifindex = if_nametoindex(interface)
        guard ifindex != 0 else {
            throw XDPError("if_nametoindex", interface: interface, queue: queue, code: errno)
        }

        let storage = UnsafeMutableRawPointer.allocate(byteCount: 4 * 64, alignment: 64)
        storage.initializeMemory(as: UInt8.self, repeating: 0, count: 4 * 64)
        let rx = storage.bindMemory(to: xsk_ring_cons.self, capacity: 1)
        let tx = (storage + 64).bindMemory(to: xsk_ring_prod.self, capacity: 1)
        let ownFill = (storage + 128).bindMemory(to: xsk_ring_prod.self, capacity: 1)
        let ownCompletion = (storage + 192).bindMemory(to: xsk_ring_cons.self, capacity: 1)

        var bindFlags: UInt16 = 0
        if configuration.copyMode { bindFlags |= UInt16(XDP_COPY) }
        if configuration.needWakeup { bindFlags |= UInt16(XDP_USE_NEED_WAKEUP) }
        var config = xsk_socket_config()
        config.rx_size = configuration.rxSize
        config.tx_size = configuration.txSize
        config.libxdp_flags = UInt32(XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD)
        config.xdp_flags = 0
        config.bind_flags = bindFlags

        // libxdp's UMEM reference count and context list are not thread-safe: create under
        // the Umem's lock, and keep its bookkeeping of bound queues in step.
        let result: Result<(SocketHandle, Bool, Bool), XDPError> = umem.bindings.withLock { state in
            if state.live.contains(where: { $0.ifindex == ifindex && $0.queue == queue }) {
                return .failure(XDPError("create AF_XDP socket", interface: interface, queue: queue, code: EBUSY,
                                         detail: "this Umem already has a socket on this queue"))
            }
            let first = !state.firstSocketCreated
            if !first && state.live.isEmpty {
                // libxdp would reuse the Umem's own (already bound) fd and the bind would fail.
                return .failure(XDPError("create AF_XDP socket", interface: interface, queue: queue, code: EINVAL,
                                         detail: "this Umem's first socket was closed; a Umem cannot be bound again, create a new one"))
            }
            var handle: OpaquePointer?
            let rc: Int32
            if first {
                rc = xsk_socket__create(&handle, interface, queue, umem.handle, rx, tx, &config)
            } else {
                rc = xsk_socket__create_shared(&handle, interface, queue, umem.handle, rx, tx,
                                               ownFill, ownCompletion, &config)
            }
            guard rc == 0, let handle else {
                return .failure(XDPError(first ? "xsk_socket__create" : "xsk_socket__create_shared",
                                         interface: interface, queue: queue, returned: rc))
            }
            let needWakeup: Bool
            if first {
                state.firstSocketCreated = true
                state.firstNeedsWakeup = configuration.needWakeup
                needWakeup = configuration.needWakeup
            } else {
                needWakeup = state.firstNeedsWakeup
            }
            state.live.append((ifindex, queue))
            return .success((SocketHandle(pointer: handle), first, needWakeup))
        }
        let handle: OpaquePointer, first: Bool, needWakeup: Bool
        switch result {
        case .success(let created): (handle, first, needWakeup) = (created.0.pointer, created.1, created.2)
        case .failure(let error):
            storage.deallocate()
            throw error
        }

        self.interface = interface
        self.queue = queue
        self.umem = umem
        self.handle = handle
        self.ifindex = ifindex
        self.ringStorage = storage
        self.fd = xsk_socket__fd(handle)
        self.rx = rx
        self.tx = tx
        self.fill = first ? umem.fill : ownFill
        self.completion = first ? umem.completion : ownCompletion
        self.usesUmemRings = first
        self.usesNeedWakeup = needWakeup

        // From here on a failure must delete the socket: deinit does, once every stored
        // property is set, so set the remaining one first and then configure.
        var options = xdp_options()
        var length = socklen_t(MemoryLayout<xdp_options>.size)
        let optionsRC = getsockopt(fd, SOL_XDP, XDP_OPTIONS, &options, &length)
        let optionsErrno = errno
        self.isZeroCopy = optionsRC == 0 && options.flags & UInt32(XDP_OPTIONS_ZEROCOPY) != 0
        // Copy mode sends at most XDP_MAX_TX_SKB_BUDGET frames per kick: 32 unless raised (the
        // option is Linux 6.17's). Raised to the TX ring's size, one kick sends a whole batch
        // instead of one per 32 frames; an older kernel refuses the option and keeps 32.
        var budget = configuration.txSize
        if !isZeroCopy, setsockopt(fd, SOL_XDP, XskSocket.XDP_MAX_TX_SKB_BUDGET, &budget,
                                   socklen_t(MemoryLayout<UInt32>.size)) == 0 {
            transmitBudget = Int(budget)
        } else {
            transmitBudget = XskSocket.defaultTransmitBudget
        }
        guard optionsRC == 0 else {
            throw XDPError("getsockopt(XDP_OPTIONS)", interface: interface, queue: queue, code: optionsErrno)
        }
        if let busyPoll = configuration.busyPoll {
            try setOption(XskSocket.SO_PREFER_BUSY_POLL, 1, name: "SO_PREFER_BUSY_POLL")
            try setOption(SO_BUSY_POLL, Int32(clamping: busyPoll.timeoutMicroseconds), name: "SO_BUSY_POLL")
            try setOption(XskSocket.SO_BUSY_POLL_BUDGET, Int32(clamping: busyPoll.budget), name: "SO_BUSY_POLL_BUDGET")
        }
    }

    deinit {
        // xsk_socket__delete unmaps the rings (for the first socket: the Umem's fill and
        // completion rings too) and closes the fd unless it is the Umem's own.
        umem.bindings.withLock { state in
            xsk_socket__delete(handle)
            if let i = state.live.firstIndex(where: { $0.queue == queue && $0.ifindex == ifindex }) {
                state.live.remove(at: i)
            }
        }
        ringStorage.deallocate()
    }

    /// Carries libxdp's socket pointer out of the Umem's lock.
    private struct SocketHandle: @unchecked Sendable { let pointer: OpaquePointer }

    // Socket options from <asm-generic/socket.h> that Glibc's Swift overlay may not carry.
    static let SO_PREFER_BUSY_POLL: Int32 = 69
    static let SO_BUSY_POLL_BUDGET: Int32 = 70
    /// From <linux/if_xdp.h> of Linux 6.17, newer than the headers this builds against.
    static let XDP_MAX_TX_SKB_BUDGET: Int32 = 9
    /// Frames a copy-mode kick sends where the budget cannot be raised.
    public static let defaultTransmitBudget = 32

    private func setOption(_ option: Int32, _ value: Int32, name: String) throws(XDPError) {
        var v = value
        guard setsockopt(fd, SOL_SOCKET, option, &v, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw XDPError("setsockopt(\(name))", interface: interface, queue: queue, code: errno)
        }
    }

    /// Typed views of the rings for the worker loop (plain values: copy them out once).
    @inlinable public var rxRing: RxRing { RxRing(rx) }
    @inlinable public var txRing: TxRing { TxRing(tx) }
    @inlinable public var fillRing: FillRing { FillRing(fill) }
    @inlinable public var completionRing: CompletionRing { CompletionRing(completion) }

    /// Asks the kernel to process the TX ring: sendto(fd, NULL, 0, MSG_DONTWAIT). Call after
    /// `submit` when `txRing.needsWakeup`; in copy mode each kick sends at most 32
    /// descriptors, so kick again while `txRing.outstanding` is non-zero.
    ///
    /// Returns 0, or an errno the kernel should never give a bound socket (ENXIO, EBADF, ...)
    /// for the caller to count. Tolerated, returned as 0:
    ///   EAGAIN   copy mode: 32 sent and more remain, or the completion ring is full, or the
    ///            device queue is busy — drain completions and kick again;
    ///   EBUSY    copy mode: the device dropped a frame (NET_XMIT_DROP); it still completes;
    ///   ENOBUFS  copy mode: no memory for an skb now; the descriptor stays, kick later;
    ///   ENETDOWN the interface is down; descriptors wait in the ring.
    /// EINTR is retried.
    @discardableResult
    public func kickTransmit() -> Int32 { XskSocket.kickTransmit(fd: fd) }

    /// `kickTransmit` for a socket known by its descriptor (the worker loop holds no
    /// reference to the socket object, to avoid reference counting per batch).
    @discardableResult
    public static func kickTransmit(fd: Int32) -> Int32 {
        if SystemCall.retryingEINTR({ sendto(fd, nil, 0, Int32(MSG_DONTWAIT), nil, 0) }) >= 0 { return 0 }
        return tolerated(errno)
    }

    /// Wakes the kernel to receive into the fill ring: recvfrom(fd, NULL, 0, MSG_DONTWAIT).
    /// Call when `fillRing.needsWakeup` (zero-copy drivers that ran out of frames), and with
    /// busy polling on every idle turn: the syscall is what runs the driver's NAPI then.
    /// In copy mode the kernel never asks and the call does nothing.
    /// Returns 0 or an unexpected errno, as `kickTransmit` does; EAGAIN, EBUSY, ENOBUFS and
    /// ENETDOWN are tolerated, EINTR is retried.
    @discardableResult
    public func wakeFill() -> Int32 {
        if SystemCall.retryingEINTR({ recvfrom(fd, nil, 0, Int32(MSG_DONTWAIT), nil, nil) }) >= 0 { return 0 }
        return XskSocket.tolerated(errno)
    }

    /// 0 for the errnos a kick or wake-up tolerates (see `kickTransmit`), else the errno.
    @inline(__always)
    private static func tolerated(_ e: Int32) -> Int32 {
        switch e {
        case EAGAIN, EBUSY, ENOBUFS, ENETDOWN: return 0
        default: return e
        }
    }

    /// The kernel's counters for this socket.
    public func statistics() throws(XDPError) -> XskStatistics {
        var s = XskStatistics()
        let code = XskSocket.statistics(fd: fd, into: &s)
        guard code == 0 else {
            throw XDPError("getsockopt(XDP_STATISTICS)", interface: interface, queue: queue, code: code)
        }
        return s
    }

    /// `statistics()` for a socket known by its descriptor, without allocating (the worker
    /// loop reads its sockets' counters this way): 0, or the errno of getsockopt.
    public static func statistics(fd: Int32, into s: inout XskStatistics) -> Int32 {
        var raw = xdp_statistics()
        var length = socklen_t(MemoryLayout<xdp_statistics>.size)
        guard getsockopt(fd, SOL_XDP, XDP_STATISTICS, &raw, &length) == 0 else { return errno }
        // Kernels before 5.9 fill only the first three fields; the rest stay zero.
        s.rxDropped = raw.rx_dropped
        s.rxInvalidDescriptors = raw.rx_invalid_descs
        s.txInvalidDescriptors = raw.tx_invalid_descs
        s.rxRingFull = raw.rx_ring_full
        s.rxFillRingEmpty = raw.rx_fill_ring_empty_descs
        s.txRingEmpty = raw.tx_ring_empty_descs
        return 0
    }
}
