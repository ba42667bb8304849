import Engine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What a `PacketSink` has counted since it was attached, summed over CPUs.
public struct SinkCounters: Sendable, Equatable, CustomStringConvertible {
    /// Packets matched, counted and dropped.
    public var packets: UInt64
    /// Their IP packet lengths as their headers state them: the same for a packet whether the
    /// interface has an Ethernet header or not (Ethernet header and padding excluded).
    public var bytes: UInt64
    /// Packets that did not match and went on to the kernel (ARP, ping, control traffic).
    public var passedPackets: UInt64

    public init(packets: UInt64 = 0, bytes: UInt64 = 0, passedPackets: UInt64 = 0) {
        self.packets = packets
        self.bytes = bytes
        self.passedPackets = passedPackets
    }

    /// What arrived between an earlier reading and this one.
    public func since(_ earlier: SinkCounters) -> SinkCounters {
        SinkCounters(packets: packets &- earlier.packets, bytes: bytes &- earlier.bytes,
                     passedPackets: passedPackets &- earlier.passedPackets)
    }

    public var description: String { "\(packets) packets, \(bytes) bytes (\(passedPackets) passed)" }
}

/// Counts what arrives on an interface: an XDP program (bpf/bench/bench.bpf.c) attached to
/// `interface` inside network namespace `namespace` that counts and drops the packets it
/// matches and passes everything else to the kernel, so ARP, ping and control sockets keep
/// working beside the load.
///
/// On an Ethernet device (veth) the program runs in native mode; on a TUN device (such as
/// the one wireguard-go makes, which has no Ethernet header) in generic mode, parsing from
/// the IP header. Counting costs the receiving core a map update per packet and never an
/// skb, so the sink is not what limits a measurement.
///
/// The program is attached through a bpf_link: `close()` (idempotent, also run by `deinit`)
/// removes it, and so does the kernel if the process dies. Counters stay readable after close.
public final class PacketSink: @unchecked Sendable {
    public typealias Match = BenchSinkProgram.Match

    public let namespace: String?
    public let interface: String
    public let match: Match
    /// The device's framing, chosen from its link type.
    public let framing: BenchSinkProgram.Framing
    /// `.native` on veth; `.generic` on a TUN device, or when the driver refused native mode.
    public let attachedMode: XDPAttachMode

    private let program: Mutex<BenchSinkProgram>

    /// Attaches the sink. Throws `LoadError` naming the interface and namespace: no such
    /// namespace, no such interface there, another XDP program already attached, an
    /// interface the sink cannot parse, or the kernel's refusal with its errno.
    public init(namespace: String?, interface: String, match: Match) throws(LoadError) {
        let operation = "attach the packet sink (\(match))"
        let program: BenchSinkProgram
        do {
            program = try runInNamespace(namespace) { try BenchSinkProgram(interfaceName: interface, match: match) }
        } catch {
            throw LoadError.wrap(error, operation, namespace: namespace, interface: interface)
        }
        self.namespace = namespace
        self.interface = interface
        self.match = match
        self.framing = program.framing
        self.attachedMode = program.attachedMode
        self.program = Mutex(program)
    }

    deinit { close() }

    /// The counters now. Works after `close()` too (the last values).
    public func read() throws(LoadError) -> SinkCounters {
        do {
            let counters = try program.withLock { program throws(BPFError) in try program.counters() }
            return SinkCounters(packets: counters.matchedPackets, bytes: counters.matchedBytes,
                                passedPackets: counters.passedPackets)
        } catch {
            throw LoadError.wrap(error, "read the packet sink's counters", namespace: namespace, interface: interface)
        }
    }

    /// The counters once packets still in flight have landed: reads until two readings
    /// 20 ms apart agree, for at most `timeout` seconds (then the last reading). For the end
    /// of a blast, whose last frames may still sit in a ring or a backlog.
    public func readSettled(timeout: Double = 2) throws(LoadError) -> SinkCounters {
        var last = try read()
        let deadline = monotonicSeconds() + timeout
        while monotonicSeconds() < deadline {
            usleep(20_000)
            let now = try read()
            if now == last { return now }
            last = now
        }
        return last
    }

    /// Removes the program from the interface; idempotent. Detaching goes by the link's file
    /// descriptor, so it works from any thread and namespace.
    public func close() {
        program.withLock { $0.detach() }
    }

    public var isAttached: Bool { program.withLock { $0.isAttached } }
}
