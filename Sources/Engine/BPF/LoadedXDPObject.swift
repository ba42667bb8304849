import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// One of our BPF objects loaded into the kernel from the copy embedded in the binary: its
/// XDP program and its maps, alive until `deinit` closes the object (which closes their file
/// descriptors; an attachment holds its own reference to the program). Nothing is pinned:
/// bpffs may not be mounted (`ip netns exec` does not mount it). Public for the perf lab,
/// which loads its own programs (bpf/bench/) the same way.
public final class LoadedXDPObject: @unchecked Sendable {
    public let programName: String
    public let programFD: Int32
    /// The kernel's id for the program, as `bpf_xdp_query` and `bpftool prog` report it.
    public let programID: UInt32
    private let object: OpaquePointer

    /// Room for the verifier log of a rejected program. The kernel (since 6.4) keeps the end
    /// of the log when it overflows, and the end is where the reason is.
    private static let verifierLogSize = 1 << 20

    public init(_ embedded: EmbeddedBPFObject, programName: String) throws(BPFError) {
        self.programName = programName
        let operation = "load XDP program \(programName)"
        let elf = embedded.elf

        var options = bpf_object_open_opts()

        zeroAllBytes(&options)
        options.sz = MemoryLayout<bpf_object_open_opts>.size
        let opened: OpaquePointer? = programName.withCString { name in
            options.object_name = name
            return elf.withUnsafeBytes { bpf_object__open_mem($0.baseAddress, $0.count, &options) }
        }
        guard let object = opened else {
            throw .system("\(operation): open the embedded object", errno: Glibc.errno)
        }

        guard let program = bpf_object__find_program_by_name(object, programName) else {
            bpf_object__close(object)
            throw BPFError(operation, reason: .invalidArgument("the embedded object has no program named \(programName)"))
        }
        // libbpf loads without a log first and, on failure, retries at log level 1 into this
        // buffer: a successful load costs nothing.
        let log = UnsafeMutablePointer<CChar>.allocate(capacity: LoadedXDPObject.verifierLogSize)
        defer { log.deallocate() }
        log.initialize(to: 0)
        _ = bpf_program__set_log_buf(program, log, LoadedXDPObject.verifierLogSize)

        let rc = bpf_object__load(object)
        guard rc == 0 else {
            let tail = LoadedXDPObject.tail(of: String(cString: log), lines: 20)
            bpf_object__close(object)
            if tail.isEmpty { throw .system(operation, errno: -rc) }
            throw BPFError(operation, reason: .verifierRejected(errno: -rc, logTail: tail))
        }
        let fd = bpf_program__fd(program)
        guard fd >= 0, let info = LoadedXDPObject.programInfo(fd: fd) else {
            let code = fd < 0 ? -fd : Glibc.errno
            bpf_object__close(object)
            throw .system("\(operation): read the loaded program's id", errno: code)
        }
        self.object = object
        self.programFD = fd
        self.programID = info.id
    }

    deinit { bpf_object__close(object) }

    /// The file descriptor of one of the object's maps (owned by the object: do not close).
    public func mapFD(_ name: String) throws(BPFError) -> Int32 {
        guard let map = bpf_object__find_map_by_name(object, name) else {
            throw BPFError("find map \(name) in \(programName)", reason: .invalidArgument("the object has no such map"))
        }
        let fd = bpf_map__fd(map)
        guard fd >= 0 else { throw .system("find map \(name) in \(programName)", errno: -fd) }
        return fd
    }

    /// Runs the program once on `packet` in the kernel (BPF_PROG_TEST_RUN): nothing is sent
    /// or received, but the program's maps and counters are the live ones. `interfaceIndex`
    /// and `queue` set `ingress_ifindex`/`rx_queue_index`; the queue needs a device that has
    /// it (in the calling thread's network namespace). Packets shorter than an Ethernet
    /// header are refused by the kernel (EINVAL).
    func testRun(packet: [UInt8], interfaceIndex: Int32 = 0, queue: UInt32 = 0) throws(BPFError) -> XDPTestRun {
        var output = [UInt8](repeating: 0, count: packet.count + 512)
        var options = bpf_test_run_opts()
        zeroAllBytes(&options)
        options.sz = MemoryLayout<bpf_test_run_opts>.size
        options.repeat = 1
        // The kernel requires data_end == the packet's length when a context is given.
        var context = xdp_md()
        context.data = 0
        context.data_end = UInt32(packet.count)
        context.ingress_ifindex = UInt32(bitPattern: interfaceIndex)
        context.rx_queue_index = queue
        let useContext = interfaceIndex != 0 || queue != 0
        let rc = packet.withUnsafeBytes { input in
            output.withUnsafeMutableBytes { out in
                withUnsafePointer(to: &context) { ctx in
                    options.data_in = input.baseAddress
                    options.data_size_in = UInt32(input.count)
                    options.data_out = out.baseAddress
                    options.data_size_out = UInt32(out.count)
                    if useContext {
                        options.ctx_in = UnsafeRawPointer(ctx)
                        options.ctx_size_in = UInt32(MemoryLayout<xdp_md>.size)
                    }
                    return bpf_prog_test_run_opts(programFD, &options)
                }
            }
        }
        guard rc == 0 else { throw .system("test-run \(programName) on a \(packet.count)-byte packet", errno: -rc) }
        return XDPTestRun(action: XDPAction(rawValue: options.retval),
                          packet: Array(output.prefix(Int(options.data_size_out))))
    }

    /// The id and name the kernel reports for a program file descriptor.
    static func programInfo(fd: Int32) -> (id: UInt32, name: String)? {
        var info = bpf_prog_info()
        var length = UInt32(MemoryLayout<bpf_prog_info>.size)
        guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { return nil }
        let name = withUnsafeBytes(of: info.name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        return (info.id, name)
    }

    static func tail(of log: String, lines count: Int) -> String {
        log.split(separator: "\n", omittingEmptySubsequences: true).suffix(count).joined(separator: "\n")
    }
}

/// An XDP action (`enum xdp_action`): what a program told the kernel to do with a frame.
public struct XDPAction: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let aborted = XDPAction(rawValue: XDP_ABORTED.rawValue)
    public static let drop = XDPAction(rawValue: XDP_DROP.rawValue)
    public static let pass = XDPAction(rawValue: XDP_PASS.rawValue)
    public static let tx = XDPAction(rawValue: XDP_TX.rawValue)
    public static let redirect = XDPAction(rawValue: XDP_REDIRECT.rawValue)

    public var description: String {
        switch self {
        case .aborted: "XDP_ABORTED"
        case .drop: "XDP_DROP"
        case .pass: "XDP_PASS"
        case .tx: "XDP_TX"
        case .redirect: "XDP_REDIRECT"
        default: "XDP action \(rawValue)"
        }
    }
}

/// The outcome of running a program once on a crafted packet.
public struct XDPTestRun: Sendable {
    /// The program's return value. A redirect to a queue with no socket returns the
    /// fallback, XDP_DROP.
    public let action: XDPAction
    /// The packet as the program left it.
    public let packet: [UInt8]
}
