#if canImport(Glibc)
import Glibc
#endif

/// Why a system lookup or setup step failed. Every case names what was attempted and, where
/// the kernel said why, the errno as text, so the message alone is enough to act on.
public enum SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A name, size or count was refused before anything was run.
    case invalidArgument(String)
    /// No interface of that name in the calling thread's network namespace. `role` says what
    /// the interface was for ("uplink", "interface", ...).
    case noSuchInterface(name: String, role: String)
    /// A system call failed: `operation` names the call and its object.
    case syscall(operation: String, errno: Int32)
    /// The kernel refused a netlink request; `message` is its extended acknowledgement text.
    case netlink(request: String, errno: Int32, message: String?)
    /// The kernel did not answer a netlink request within the socket's receive timeout.
    case timedOut(request: String)
    /// A netlink reply that does not parse as the kernel's format.
    case malformed(String)

    /// The errno behind the failure, when there is one.
    public var errno: Int32? {
        switch self {
        case .syscall(_, let e), .netlink(_, let e, _): e
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .invalidArgument(let what):
            return what
        case .noSuchInterface(let name, let role):
            return "\(role) '\(name)' does not exist in this network namespace"
        case .syscall(let operation, let e):
            return "\(operation) failed: \(Errno.text(e))"
        case .netlink(let request, let e, let message):
            let detail = message.map { " (\($0))" } ?? ""
            return "\(request): \(Errno.text(e))\(detail)"
        case .timedOut(let request):
            return "\(request): the kernel did not answer within the netlink receive timeout"
        case .malformed(let what):
            return "malformed netlink reply: \(what)"
        }
    }
}

extension String {
    func trimmingSuffixWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return String(s)
    }
}
