import CLibBPF
import Engine
#if canImport(Glibc)
import Glibc
#endif

/// The perf lab's packet sink (bpf/bench/bench.bpf.c, embedded in this module), loaded and
/// attached to one interface of the calling thread's network namespace: counts and drops the
/// packets it matches, passes the rest to the kernel. `PacketSink` wraps it with namespaces.
///
/// The program is chosen from the interface's link type: on an Ethernet device (veth, a NIC)
/// it parses the Ethernet header and is attached in native mode (generic if the driver
/// refuses); on an L3 device with no link-layer header (a TUN device such as wireguard-go's)
/// it parses from the IP header and is attached in generic mode, the only mode in which the
/// kernel runs XDP for packets a TUN device receives (tun's native XDP serves TAP only).
///
/// Attached through a bpf_link: the kernel detaches it when the process exits, however it
/// exits. A stale sink left attached through netlink is replaced; any other program makes
/// `init` fail, naming it.
public final class BenchSinkProgram: @unchecked Sendable {
    /// What the sink counts and drops.
    public enum Match: Sendable, Hashable, CustomStringConvertible {
        /// Every IPv4 and IPv6 packet: the decrypted inner packets a tenant receives.
        case innerIP
        /// UDP (over IPv4 or IPv6) whose payload is a WireGuard transport message (type 4,
        /// three zero bytes, at least 32 bytes), on any port: what a peer receives.
        case wireGuardTransport

        public var description: String {
            switch self {
            case .innerIP: "inner IP"
            case .wireGuardTransport: "WireGuard transport"
            }
        }
    }

    /// Whether frames on the interface start with an Ethernet header.
    public enum Framing: Sendable, Hashable, CustomStringConvertible {
        case ethernet
        /// No link-layer header: the IP header comes first (TUN, raw IP devices).
        case ip

        public var description: String {
            switch self {
            case .ethernet: "Ethernet"
            case .ip: "IP (no link-layer header)"
            }
        }
    }

    /// The counters since the program was loaded, summed over CPUs.
    public struct Counters: Sendable, Equatable {
        /// Packets matched, counted and dropped.
        public var matchedPackets: UInt64 = 0
        /// Their IP packet lengths as their headers state them (no Ethernet header, no padding).
        public var matchedBytes: UInt64 = 0
        /// Packets passed to the kernel (not matched).
        public var passedPackets: UInt64 = 0
        /// Their lengths as the program saw them (with the Ethernet header, if any).
        public var passedBytes: UInt64 = 0

        public init() {}
    }

    public let interfaceIndex: Int32
    public let interfaceName: String
    public let match: Match
    public let framing: Framing
    /// The mode the program runs in.
    public let attachedMode: XDPAttachMode
    /// Why native mode failed, when an Ethernet device fell back to generic.
    public let nativeAttachError: BPFError?
    public let programName: String
    public let programID: UInt32

    private let object: LoadedXDPObject
    private let countersMap: Int32
    private let linkFD: Int32
    private var detached = false

    /// The program names in bpf/bench/bench.bpf.c, by framing and match.
    static func programName(framing: Framing, match: Match) -> String {
        switch (framing, match) {
        case (.ethernet, .innerIP): "xdpwg_sink_ip"
        case (.ethernet, .wireGuardTransport): "xdpwg_sink_wg"
        case (.ip, .innerIP): "xdpwg_sinkl3_ip"
        case (.ip, .wireGuardTransport): "xdpwg_sinkl3_wg"
        }
    }

    static let countersMapName = "xdpwg_sink_cnt"
    /// Entries of the counters map (enum sink_counter in bpf/bench/bench.bpf.c).
    private static let matchedKey: UInt32 = 0
    private static let passedKey: UInt32 = 1

    /// ARPHRD_* values (<linux/if_arp.h>, kernel UAPI) of the devices the sink knows.
    private static let arphrdEther: UInt16 = 1
    private static let arphrdLoopback: UInt16 = 772
    private static let arphrdNone: UInt16 = 0xFFFE
    private static let arphrdRawIP: UInt16 = 519

    /// Loads the sink for `match` and attaches it to `interfaceName` in the calling thread's
    /// network namespace. Throws `SystemError.noSuchInterface` for a missing interface,
    /// `BPFError` for a load or attach failure, `SystemError.invalidArgument` for a link type
    /// the sink cannot parse.
    public init(interfaceName: String, match: Match) throws {
        let link = try NetworkInterface.linkType(named: interfaceName)
        let framing: Framing
        let mode: XDPAttachMode
        switch link.hardwareType {
        case BenchSinkProgram.arphrdEther:
            (framing, mode) = (.ethernet, .native)
        case BenchSinkProgram.arphrdLoopback:
            // Loopback frames carry a zeroed Ethernet header; it has no native XDP.
            (framing, mode) = (.ethernet, .generic)
        case BenchSinkProgram.arphrdNone, BenchSinkProgram.arphrdRawIP:
            (framing, mode) = (.ip, .generic)
        default:
            throw SystemError.invalidArgument(
                "packet sink: interface '\(interfaceName)' has link type \(link.hardwareType), "
                    + "neither Ethernet nor a bare IP device (TUN); the sink cannot parse its frames")
        }
        let name = BenchSinkProgram.programName(framing: framing, match: match)
        let object = try LoadedXDPObject(.bench, programName: name)
        let countersMap = try object.mapFD(BenchSinkProgram.countersMapName)
        let attacher = XDPLinkAttacher(programFD: object.programFD, programName: name,
                                       interfaceIndex: link.index, interfaceName: interfaceName)
        let outcome = try attacher.attach(mode: mode)

        self.object = object
        self.countersMap = countersMap
        self.linkFD = outcome.linkFD
        self.interfaceIndex = link.index
        self.interfaceName = interfaceName
        self.match = match
        self.framing = framing
        self.attachedMode = outcome.mode
        self.nativeAttachError = outcome.nativeError
        self.programName = name
        self.programID = object.programID
    }

    deinit { detach() }

    public var isAttached: Bool { !detached }

    /// Removes the program from its interface; idempotent. The counters stay readable. Not
    /// thread-safe: one owner calls it (the perf lab's `PacketSink` serialises).
    public func detach() {
        guard !detached else { return }
        detached = true
        // As XDPProgramCore.detach: BPF_LINK_DETACH removes exactly our program even if a
        // copy of the link descriptor survives somewhere.
        _ = bpf_link_detach(linkFD)
        close(linkFD)
    }

    /// Reads the counters: one syscall per counter, any thread, any time.
    public func counters() throws(BPFError) -> Counters {
        let matched = try read(BenchSinkProgram.matchedKey)
        let passed = try read(BenchSinkProgram.passedKey)
        var counters = Counters()
        (counters.matchedPackets, counters.matchedBytes) = matched
        (counters.passedPackets, counters.passedBytes) = passed
        return counters
    }

    /// A PERCPU_ARRAY lookup fills one 16-byte value (packets, bytes) per possible CPU.
    private func read(_ key: UInt32) throws(BPFError) -> (packets: UInt64, bytes: UInt64) {
        let cpus = BenchSinkProgram.possibleCPUs
        var slots = [UInt64](repeating: 0, count: 2 * cpus)
        var key = key
        let rc = slots.withUnsafeMutableBytes { bpf_map_lookup_elem(countersMap, &key, $0.baseAddress) }
        guard rc == 0 else {
            throw .system("read \(BenchSinkProgram.countersMapName)[\(key)] of \(programName)",
                          interface: interfaceName, errno: -rc)
        }
        var packets: UInt64 = 0, bytes: UInt64 = 0
        for cpu in 0..<cpus {
            packets &+= slots[2 * cpu]
            bytes &+= slots[2 * cpu + 1]
        }
        return (packets, bytes)
    }

    private static let possibleCPUs = max(1, Int(libbpf_num_possible_cpus()))
}
