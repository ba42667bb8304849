import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// How an XDP program runs on an interface: in the driver (native) or in the generic
/// network stack after the driver (generic, slower, works everywhere).
public enum XDPAttachMode: Sendable, Hashable, CustomStringConvertible {
    case native, generic

    var flag: UInt32 {
        switch self {
        case .native: XDPFlags.driverMode
        case .generic: XDPFlags.skbMode
        }
    }

    public var description: String {
        switch self {
        case .native: "native"
        case .generic: "generic"
        }
    }
}

/// A program the kernel reports attached to an interface.
public struct XDPAttachedProgram: Sendable, Hashable {
    public enum Mode: Sendable, Hashable, CustomStringConvertible {
        case native, generic, offloaded

        public var description: String {
            switch self {
            case .native: "native"
            case .generic: "generic"
            case .offloaded: "offloaded"
            }
        }
    }

    public let id: UInt32
    /// The program's name (at most 15 characters: the kernel truncates).
    public let name: String
    public let mode: Mode

    /// Every XDP program attached to the interface (at most one per mode), in the calling
    /// thread's network namespace.
    public static func attached(interfaceIndex: Int32, interfaceName: String) throws(BPFError) -> [XDPAttachedProgram] {
        var query = bpf_xdp_query_opts()
        zeroAllBytes(&query)
        query.sz = MemoryLayout<bpf_xdp_query_opts>.size
        let rc = bpf_xdp_query(interfaceIndex, 0, &query)
        guard rc == 0 else { throw .system("query attached XDP programs", interface: interfaceName, errno: -rc) }
        var programs: [XDPAttachedProgram] = []
        for (id, mode) in [(query.drv_prog_id, Mode.native), (query.skb_prog_id, .generic), (query.hw_prog_id, .offloaded)]
        where id != 0 {
            let fd = bpf_prog_get_fd_by_id(id)
            if fd < 0 {
                if -fd == ENOENT { continue }  // detached and freed since the query
                throw .system("open attached XDP program \(id)", interface: interfaceName, errno: -fd)
            }
            defer { close(fd) }
            guard let info = LoadedXDPObject.programInfo(fd: fd) else {
                throw .system("read attached XDP program \(id)", interface: interfaceName, errno: Glibc.errno)
            }
            programs.append(XDPAttachedProgram(id: id, name: info.name, mode: mode))
        }
        return programs
    }
}

/// XDP_FLAGS_* from <linux/if_link.h> (kernel UAPI, stable), which libbpf's headers do not
/// include.
enum XDPFlags {
    static let updateIfNoExist: UInt32 = 1 << 0
    static let skbMode: UInt32 = 1 << 1
    static let driverMode: UInt32 = 1 << 2
    static let hardwareMode: UInt32 = 1 << 3
    static let replace: UInt32 = 1 << 4

    static func of(_ mode: XDPAttachedProgram.Mode) -> UInt32 {
        switch mode {
        case .native: driverMode
        case .generic: skbMode
        case .offloaded: hardwareMode
        }
    }
}

/// Attaches a loaded program to an interface through a bpf_link, which the kernel removes
/// when its last file descriptor closes: a crashed or killed xdpwg leaves no program behind
/// (where a netlink attachment, `bpf_xdp_attach`, would stay and blackhole our traffic into
/// an xsks_map with no sockets). A link also cannot be replaced by anyone else's netlink
/// attach, and detaching it can only ever remove our own program. Public for the perf lab's
/// packet sink, which attaches this way too.
public struct XDPLinkAttacher {
    let programFD: Int32
    let programName: String
    let interfaceIndex: Int32
    let interfaceName: String

    public init(programFD: Int32, programName: String, interfaceIndex: Int32, interfaceName: String) {
        self.programFD = programFD
        self.programName = programName
        self.interfaceIndex = interfaceIndex
        self.interfaceName = interfaceName
    }

    public struct Outcome {
        /// The bpf_link: closing its last descriptor detaches the program.
        public let linkFD: Int32
        public let mode: XDPAttachMode
        /// Why native mode failed, when we fell back to generic.
        public let nativeError: BPFError?
        /// The stale program of ours we removed first, if there was one.
        public let replacedProgramID: UInt32?
    }

    /// Removes a stale program of ours, refuses a foreign one, then attaches in `mode`; a
    /// failed native attach falls back to generic (reported in the result).
    public func attach(mode: XDPAttachMode) throws(BPFError) -> Outcome {
        let replaced = try removeStaleProgram()
        let operation = "attach \(programName)"
        switch createLink(mode) {
        case .success(let fd):
            return Outcome(linkFD: fd, mode: mode, nativeError: nil, replacedProgramID: replaced)
        case .failure(let nativeError) where mode == .native:
            switch createLink(.generic) {
            case .success(let fd):
                return Outcome(linkFD: fd, mode: .generic, nativeError: nativeError, replacedProgramID: replaced)
            case .failure(let genericError):
                let nativeText = nativeError.errno.map(Errno.text) ?? "\(nativeError.reason)"
                throw BPFError("\(operation) (generic, after native failed: \(nativeText))",
                               interface: interfaceName, reason: genericError.reason)
            }
        case .failure(let error):
            throw error
        }
    }

    private func createLink(_ mode: XDPAttachMode) -> Result<Int32, BPFError> {
        var options = bpf_link_create_opts()
        zeroAllBytes(&options)
        options.sz = MemoryLayout<bpf_link_create_opts>.size
        options.flags = mode.flag
        let fd = bpf_link_create(programFD, interfaceIndex, BPF_XDP, &options)
        guard fd >= 0 else {
            return .failure(.system("attach \(programName) (\(mode))", interface: interfaceName, errno: -fd))
        }
        return .success(fd)
    }

    /// A program with our name still attached is either stale — attached through netlink by
    /// an earlier run or by hand (`ip link set dev X xdp obj ...`) — or held by a live link of
    /// another process. The first we remove, with XDP_FLAGS_REPLACE naming the exact program
    /// so that the kernel refuses (EEXIST) if anything else took its place meanwhile; the
    /// second the kernel will not let netlink remove (EBUSY), and we refuse. A program with
    /// another name is not ours: refuse, naming it.
    private func removeStaleProgram() throws(BPFError) -> UInt32? {
        let operation = "attach \(programName)"
        var replaced: UInt32?
        for program in try XDPAttachedProgram.attached(interfaceIndex: interfaceIndex, interfaceName: interfaceName) {
            guard program.name == programName else {
                throw BPFError(operation, interface: interfaceName,
                               reason: .foreignProgram(name: program.name, id: program.id, mode: program.mode))
            }
            let fd = bpf_prog_get_fd_by_id(program.id)
            if fd < 0 {
                if -fd == ENOENT { continue }
                throw .system("\(operation): open the stale program \(program.id)", interface: interfaceName, errno: -fd)
            }
            defer { close(fd) }
            var options = bpf_xdp_attach_opts()
            zeroAllBytes(&options)
            options.sz = MemoryLayout<bpf_xdp_attach_opts>.size
            options.old_prog_fd = fd
            let rc = bpf_xdp_detach(interfaceIndex, XDPFlags.of(program.mode) | XDPFlags.replace, &options)
            if rc == -EBUSY {
                throw BPFError(operation, interface: interfaceName,
                               reason: .attachedByRunningProcess(id: program.id, mode: program.mode))
            }
            guard rc == 0 else {
                throw .system("\(operation): remove our stale program \(program.id) (\(program.mode))",
                              interface: interfaceName, errno: -rc)
            }
            replaced = program.id
        }
        return replaced
    }
}
