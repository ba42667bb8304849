import CXDPWG

/// What an XDP program did with a packet: the index of its counter in `xdpwg_verdicts`
/// (enum xdpwg_verdict in bpf/xdpwg_shared.h; the tests check the two agree).
public enum XDPVerdict: Int, CaseIterable, Sendable, CustomStringConvertible {
    /// Handed to the AF_XDP socket registered for its rx queue.
    case redirected = 0
    /// Not ours: passed to the kernel.
    case passed = 1
    /// Ours, but no socket is registered for its rx queue.
    case droppedNoSocket = 2
    /// First fragment of a fragmented IPv4 datagram to our port.
    case droppedFragment = 3
    /// To our port; UDP and IP lengths disagree, or the frame is shorter than they say.
    case droppedBadLength = 4
    /// To our port; message type not 1...4 or non-zero reserved bytes.
    case droppedBadType = 5
    /// To our port; message size wrong for its type.
    case droppedBadSize = 6
    /// To our port and well formed, but longer than the AF_XDP socket's frames hold (the
    /// kernel would drop it after the redirect without our counting it).
    case droppedTooBig = 7

    /// Dropped because the packet to our port was not a well-formed WireGuard message.
    public var isMalformed: Bool {
        switch self {
        case .droppedFragment, .droppedBadLength, .droppedBadType, .droppedBadSize: true
        case .redirected, .passed, .droppedNoSocket, .droppedTooBig: false
        }
    }

    /// A stable label for stats output.
    public var description: String {
        switch self {
        case .redirected: "redirected"
        case .passed: "passed"
        case .droppedNoSocket: "dropped_no_socket"
        case .droppedFragment: "dropped_fragment"
        case .droppedBadLength: "dropped_bad_length"
        case .droppedBadType: "dropped_bad_type"
        case .droppedBadSize: "dropped_bad_size"
        case .droppedTooBig: "dropped_too_big"
        }
    }
}

/// The uplink XDP program (bpf/uplink.bpf.c), loaded and attached to the uplink NIC: steers
/// WireGuard-shaped UDP to our ports into the AF_XDP socket of its rx queue, drops malformed
/// UDP to our ports, passes everything else to the kernel.
///
/// Attached through a bpf_link: the kernel detaches it when the process exits, however it
/// exits. `detach()` (also run by `deinit`) removes it earlier. A stale program of ours left
/// attached through netlink is replaced; a foreign one makes `init` fail, naming it.
///
/// Interface indexes are those of the calling thread's network namespace.
public final class UplinkProgram: @unchecked Sendable {
    private let core: XDPProgramCore

    public let interfaceIndex: Int32
    public let interfaceName: String
    /// The mode the program runs in: `.generic` after a native attach failed.
    public let attachedMode: XDPAttachMode
    /// Native was asked for and failed; `nativeAttachError` says why (worth a log line).
    public let fellBackToGeneric: Bool
    public let nativeAttachError: BPFError?
    /// A stale program of ours that was removed before attaching, if there was one.
    public let replacedStaleProgramID: UInt32?
    /// The kernel's id for the program (as `bpftool prog`, `ip link` report it).
    public let programID: UInt32

    /// The kernel's headroom before received data in an AF_XDP frame: a frame of N bytes
    /// receives Ethernet frames of at most N - `receiveHeadroom` bytes.
    public static let receiveHeadroom = Int(XDPWG_XSK_RX_HEADROOM)

    /// Loads the program, claims `ports` and attaches to the interface in `mode`. The ports
    /// are written before attaching, so the program steers correctly from its first packet.
    /// `maxFrameLength`: the longest Ethernet frame the sockets' frames hold (frame size -
    /// `receiveHeadroom`); longer ones are dropped as `droppedTooBig`. nil: no limit.
    public init(interfaceIndex: Int32, interfaceName: String, mode: XDPAttachMode = .native,
                ports: [UInt16], maxFrameLength: Int? = nil) throws(BPFError) {
        core = try XDPProgramCore(.uplink)
        try core.setPorts(ports)
        if let maxFrameLength { try core.setMaxFrameLength(maxFrameLength) }
        let result = try core.attach(interfaceIndex: interfaceIndex, interfaceName: interfaceName, mode: mode)
        self.interfaceIndex = interfaceIndex
        self.interfaceName = interfaceName
        attachedMode = result.mode
        fellBackToGeneric = result.nativeError != nil
        nativeAttachError = result.nativeError
        replacedStaleProgramID = result.replacedProgramID
        programID = core.object.programID
    }

    deinit { core.detach() }

    /// Directs the queue's packets to the AF_XDP socket `socketFD` (bound to that queue of
    /// this interface: a socket bound elsewhere makes the kernel drop them).
    public func register(socketFD: Int32, queue: UInt32) throws(BPFError) {
        try core.register(socketFD: socketFD, queue: queue)
    }

    public func unregister(queue: UInt32) { core.unregister(queue: queue) }

    /// Replaces the set of ports we claim (live reload). Ports in both sets stay claimed
    /// throughout the update.
    public func setPorts(_ ports: [UInt16]) throws(BPFError) { try core.setPorts(ports) }

    /// The ports currently claimed, ascending.
    public var ports: [UInt16] { core.ports }

    /// Packets per verdict since load, summed over CPUs.
    public func verdictCounters() -> [XDPVerdict: UInt64] { core.verdictCounters() }

    /// Successful redirects per rx queue (index = queue) since load, summed over CPUs.
    public func redirectsPerQueue() -> [UInt64] { core.redirectsPerQueue() }

    public var isAttached: Bool { core.isAttached }

    /// Removes the program from the interface; idempotent. Maps stay usable until deinit.
    public func detach() { core.detach() }

    /// Runs the program once on a crafted packet (BPF_PROG_TEST_RUN), counting into the live
    /// counters; see `XDPTestRun`.
    public func testRun(packet: [UInt8], interfaceIndex: Int32 = 0, queue: UInt32 = 0) throws(BPFError) -> XDPTestRun {
        try core.object.testRun(packet: packet, interfaceIndex: interfaceIndex, queue: queue)
    }
}

/// The tenant XDP program (bpf/tenant.bpf.c), attached to the host end of a tenant's veth:
/// hands every IPv4/IPv6 frame to the AF_XDP socket of its rx queue, passes other
/// ethertypes. Lifecycle and attachment rules as for `UplinkProgram`.
public final class TenantProgram: @unchecked Sendable {
    private let core: XDPProgramCore

    public let interfaceIndex: Int32
    public let interfaceName: String
    public let attachedMode: XDPAttachMode
    public let fellBackToGeneric: Bool
    public let nativeAttachError: BPFError?
    public let replacedStaleProgramID: UInt32?
    public let programID: UInt32

    public init(interfaceIndex: Int32, interfaceName: String, mode: XDPAttachMode = .native) throws(BPFError) {
        core = try XDPProgramCore(.tenant)
        let result = try core.attach(interfaceIndex: interfaceIndex, interfaceName: interfaceName, mode: mode)
        self.interfaceIndex = interfaceIndex
        self.interfaceName = interfaceName
        attachedMode = result.mode
        fellBackToGeneric = result.nativeError != nil
        nativeAttachError = result.nativeError
        replacedStaleProgramID = result.replacedProgramID
        programID = core.object.programID
    }

    deinit { core.detach() }

    public func register(socketFD: Int32, queue: UInt32) throws(BPFError) {
        try core.register(socketFD: socketFD, queue: queue)
    }

    public func unregister(queue: UInt32) { core.unregister(queue: queue) }
    public func verdictCounters() -> [XDPVerdict: UInt64] { core.verdictCounters() }
    public func redirectsPerQueue() -> [UInt64] { core.redirectsPerQueue() }
    public var isAttached: Bool { core.isAttached }
    public func detach() { core.detach() }

    public func testRun(packet: [UInt8], interfaceIndex: Int32 = 0, queue: UInt32 = 0) throws(BPFError) -> XDPTestRun {
        try core.object.testRun(packet: packet, interfaceIndex: interfaceIndex, queue: queue)
    }
}
