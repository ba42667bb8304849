import CLibBPF
import CXDPWG
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the two programs share: a loaded object, its maps, and at most one attachment.
/// Control-plane code only (map updates and counter reads are syscalls); the data path never
/// calls into it.
final class XDPProgramCore: @unchecked Sendable {
    enum Kind: Sendable {
        case uplink, tenant

        var programName: String {
            switch self {
            case .uplink: XDPWG_UPLINK_PROG_NAME
            case .tenant: XDPWG_TENANT_PROG_NAME
            }
        }

        var embedded: EmbeddedBPFObject {
            switch self {
            case .uplink: .uplink
            case .tenant: .tenant
            }
        }
    }

    struct Attachment {
        let interfaceIndex: Int32
        let interfaceName: String
        let linkFD: Int32
    }

    private struct State {
        var attachment: Attachment?
        /// The port bitmap as last written to xdpwg_ports (uplink only).
        var portWords = [UInt64](repeating: 0, count: Int(XDPWG_PORT_WORDS))
    }

    let kind: Kind
    let object: LoadedXDPObject
    private let xsksMap: Int32
    private let verdictsMap: Int32
    private let queueRedirectsMap: Int32
    private let portsMap: Int32?
    private let limitsMap: Int32?
    private let state = Mutex(State())

    static let maxQueues = UInt32(XDPWG_MAX_QUEUES)

    /// Loads the program and its maps; attaches nothing.
    init(_ kind: Kind) throws(BPFError) {
        self.kind = kind
        object = try LoadedXDPObject(kind.embedded, programName: kind.programName)
        xsksMap = try object.mapFD(XDPWG_XSKS_MAP_NAME)
        verdictsMap = try object.mapFD(XDPWG_VERDICTS_MAP_NAME)
        queueRedirectsMap = try object.mapFD(XDPWG_QUEUE_REDIRECTS_MAP_NAME)
        portsMap = kind == .uplink ? try object.mapFD(XDPWG_PORTS_MAP_NAME) : nil
        limitsMap = kind == .uplink ? try object.mapFD(XDPWG_LIMITS_MAP_NAME) : nil
    }

    deinit { detach() }

    var programName: String { kind.programName }

    func attach(interfaceIndex: Int32, interfaceName: String, mode: XDPAttachMode) throws(BPFError) -> XDPLinkAttacher.Outcome {
        let attacher = XDPLinkAttacher(programFD: object.programFD, programName: programName,
                                       interfaceIndex: interfaceIndex, interfaceName: interfaceName)
        let result = try attacher.attach(mode: mode)
        state.withLock {
            $0.attachment = Attachment(interfaceIndex: interfaceIndex, interfaceName: interfaceName, linkFD: result.linkFD)
        }
        return result
    }

    var isAttached: Bool { state.withLock { $0.attachment != nil } }

    /// Removes the program from its interface; idempotent. Detaching the link removes exactly
    /// our program, whatever happened on the interface since, and works from any network
    /// namespace (it goes by file descriptor, not interface index). BPF_LINK_DETACH first so
    /// the program is gone even if a copy of the link descriptor survives somewhere (a child
    /// forked without exec); a link whose interface vanished is already detached.
    func detach() {
        let attachment = state.withLock { state -> Attachment? in
            defer { state.attachment = nil }
            return state.attachment
        }
        guard let attachment else { return }
        _ = bpf_link_detach(attachment.linkFD)
        close(attachment.linkFD)
    }

    // MARK: Maps

    func register(socketFD: Int32, queue: UInt32) throws(BPFError) {
        let operation = "register AF_XDP socket \(socketFD) for rx queue \(queue) in \(programName)'s \(XDPWG_XSKS_MAP_NAME)"
        guard queue < XDPProgramCore.maxQueues else {
            throw BPFError(operation, interface: interfaceName,
                           reason: .invalidArgument("queue \(queue) is beyond the map's \(XDPProgramCore.maxQueues) queues"))
        }
        var key = queue
        var value = UInt32(bitPattern: socketFD)
        let rc = bpf_map_update_elem(xsksMap, &key, &value, UInt64(BPF_ANY))
        guard rc == 0 else { throw .system(operation, interface: interfaceName, errno: -rc) }
    }

    /// Removes the queue's socket; its packets are then dropped as "no socket". Closing the
    /// socket removes it too (the kernel clears XSKMAP entries of closed sockets).
    func unregister(queue: UInt32) {
        guard queue < XDPProgramCore.maxQueues else { return }
        var key = queue
        _ = bpf_map_delete_elem(xsksMap, &key)  // ENOENT: nothing was registered
    }

    /// Replaces the set of UDP ports the uplink program claims. Each 64-port word is written
    /// whole with its final value, so a port in both the old and the new set never
    /// disappears, even for a packet racing the update; words that do not change are not
    /// written.
    func setPorts(_ ports: [UInt16]) throws(BPFError) {
        guard let portsMap else {
            throw BPFError("set ports", reason: .invalidArgument("\(programName) has no port map"))
        }
        var words = [UInt64](repeating: 0, count: Int(XDPWG_PORT_WORDS))
        for port in ports {
            words[Int(port) / Int(XDPWG_PORT_WORD_BITS)] |= 1 << (UInt64(port) % UInt64(XDPWG_PORT_WORD_BITS))
        }
        try state.withLock { (state: inout State) throws(BPFError) in
            for index in words.indices where words[index] != state.portWords[index] {
                var key = UInt32(index)
                var value = words[index]
                let rc = bpf_map_update_elem(portsMap, &key, &value, UInt64(BPF_ANY))
                guard rc == 0 else {
                    throw .system("write word \(index) of \(programName)'s \(XDPWG_PORTS_MAP_NAME)",
                                  interface: state.attachment?.interfaceName, errno: -rc)
                }
                state.portWords[index] = value
            }
        }
    }

    /// The longest Ethernet frame the uplink program redirects (0: no limit); longer frames to
    /// our ports are dropped as `droppedTooBig`.
    func setMaxFrameLength(_ length: Int) throws(BPFError) {
        guard let limitsMap else {
            throw BPFError("set the frame limit", reason: .invalidArgument("\(programName) has no limits map"))
        }
        guard (0...Int(UInt32.max)).contains(length) else {
            throw BPFError("set the frame limit", reason: .invalidArgument("frame length \(length) is out of range"))
        }
        var key: UInt32 = 0
        var value = xdpwg_frame_limit_t(length)
        let rc = bpf_map_update_elem(limitsMap, &key, &value, UInt64(BPF_ANY))
        guard rc == 0 else {
            throw .system("write \(programName)'s \(XDPWG_LIMITS_MAP_NAME)",
                          interface: state.withLock { $0.attachment?.interfaceName }, errno: -rc)
        }
    }

    /// The ports currently written to the map, ascending.
    var ports: [UInt16] {
        state.withLock { state in
            var ports: [UInt16] = []
            for (index, word) in state.portWords.enumerated() where word != 0 {
                for bit in 0..<64 where word & (1 << UInt64(bit)) != 0 {
                    ports.append(UInt16(index * 64 + bit))
                }
            }
            return ports
        }
    }

    func verdictCounters() -> [XDPVerdict: UInt64] {
        var counters: [XDPVerdict: UInt64] = [:]
        for verdict in XDPVerdict.allCases {
            counters[verdict] = XDPProgramCore.sumOverCPUs(map: verdictsMap, key: UInt32(verdict.rawValue))
        }
        return counters
    }

    func redirectsPerQueue() -> [UInt64] {
        (0..<XDPProgramCore.maxQueues).map { XDPProgramCore.sumOverCPUs(map: queueRedirectsMap, key: $0) }
    }

    /// A PERCPU_ARRAY lookup returns one 8-byte slot per possible CPU; the total is their sum.
    /// A failed lookup (it cannot fail for an index inside the array) reads as zero.
    private static func sumOverCPUs(map: Int32, key: UInt32) -> UInt64 {
        var values = [UInt64](repeating: 0, count: possibleCPUs)
        var key = key
        let rc = values.withUnsafeMutableBytes { bpf_map_lookup_elem(map, &key, $0.baseAddress) }
        guard rc == 0 else { return 0 }
        return values.reduce(0, &+)
    }

    private static let possibleCPUs = max(1, Int(libbpf_num_possible_cpus()))

    private var interfaceName: String? { state.withLock { $0.attachment?.interfaceName } }
}
