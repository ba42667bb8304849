#if canImport(Glibc)
import Glibc
#endif

/// A failure setting up AF_XDP: what was attempted, on which interface and queue, the errno
/// as text, and a hint for the causes we have met. Only control-path code creates these;
/// the per-packet path reports errnos as plain integers so it never allocates.
public struct XDPError: Error, CustomStringConvertible, Sendable {
    /// The call or step that failed, e.g. "xsk_socket__create" or "mmap UMEM (4 MiB)".
    public var operation: String
    public var interface: String?
    public var queue: UInt32?
    /// The errno the call reported (positive), or 0 when the failure is a rule of ours.
    public var code: Int32
    /// Extra words from us, for failures that are not (only) an errno.
    public var detail: String?

    public init(_ operation: String, interface: String? = nil, queue: UInt32? = nil, code: Int32, detail: String? = nil) {
        self.operation = operation
        self.interface = interface
        self.queue = queue
        self.code = code
        self.detail = detail
    }

    /// libxdp and libbpf return negative errno values; either sign is accepted here.
    public init(_ operation: String, interface: String? = nil, queue: UInt32? = nil, returned value: Int32) {
        self.init(operation, interface: interface, queue: queue, code: value < 0 ? -value : value)
    }

    /// What usually causes this errno for this step, and what to do about it. Failures of
    /// our own rules (`detail` set) say what is wrong in `detail` and carry no hint.
    public var hint: String? {
        guard detail == nil else { return nil }
        switch code {
        case EPERM, EACCES:
            return "AF_XDP and BPF need root, or CAP_NET_ADMIN + CAP_BPF (+ CAP_NET_RAW, CAP_IPC_LOCK for the UMEM)"
        case ENOMEM, ENOBUFS:
            return "the UMEM is pinned memory: raise RLIMIT_MEMLOCK (ulimit -l), or use fewer/smaller frames or rings"
        case EBUSY:
            return "this interface queue already has an AF_XDP socket (another process, or a socket not yet closed)"
        case ENODEV:
            return "no such interface in this network namespace"
        case EOPNOTSUPP:
            return "the driver does not support this mode: set copyMode"
        case EINVAL where operation.contains("socket"):
            return "the queue may not exist (it must be below the interface's RX queue count), "
                + "or the driver rejects zero-copy: set copyMode"
        case EINVAL where operation.contains("umem"):
            return "frame size must be a power of two from 2048 to the page size, ring sizes powers of two"
        default:
            return nil
        }
    }

    public var description: String {
        var where_ = ""
        if let interface { where_ += " on \(interface)" }
        if let queue { where_ += " queue \(queue)" }
        var text = "\(operation)\(where_) failed"
        if code != 0 { text += ": \(Errno.text(code))" }
        if let detail { text += ": \(detail)" }
        if let hint { text += " — \(hint)" }
        return text
    }
}
