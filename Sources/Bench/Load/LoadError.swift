import Engine
#if canImport(Glibc)
import Glibc
#endif

/// A failure of the perf lab's load side (threads in namespaces, sinks, blasters): what was
/// being done, where (namespace, interface), and why — the errno as text, or the underlying
/// error's own message. A nil namespace reads "the caller's network namespace".
public struct LoadError: Error, CustomStringConvertible, Sendable {
    /// What was being done, e.g. "attach packet sink (inner IP)".
    public let operation: String
    /// The network namespace (`ip netns` name); nil for the caller's own.
    public let namespace: String?
    public let interface: String?
    /// Why, as a sentence: "No such file or directory (errno 2)", or another error's text.
    public let reason: String
    /// The errno, when the failure was a system call's.
    public let errno: Int32?

    public init(_ operation: String, namespace: String? = nil, interface: String? = nil, reason: String) {
        self.operation = operation
        self.namespace = namespace
        self.interface = interface
        self.reason = reason
        self.errno = nil
    }

    public init(_ operation: String, namespace: String? = nil, interface: String? = nil, errno code: Int32) {
        self.operation = operation
        self.namespace = namespace
        self.interface = interface
        self.reason = Errno.text(code)
        self.errno = code
    }

    /// Wraps another error (an Engine `BPFError`, `XDPError`, `SystemError`, ...) with where
    /// it happened; a `LoadError` keeps its own operation and place, gaining those it lacks.
    static func wrap(_ error: any Error, _ operation: String, namespace: String?, interface: String?) -> LoadError {
        if let own = error as? LoadError {
            return LoadError(own.operation, namespace: own.namespace ?? namespace,
                             interface: own.interface ?? interface, reason: own.reason, errno: own.errno)
        }
        return LoadError(operation, namespace: namespace, interface: interface, reason: "\(error)", errno: nil)
    }

    private init(_ operation: String, namespace: String?, interface: String?, reason: String, errno: Int32?) {
        self.operation = operation
        self.namespace = namespace
        self.interface = interface
        self.reason = reason
        self.errno = errno
    }

    public var description: String {
        var place = ""
        if let interface { place += " on \(interface)" }
        place += " in " + LoadError.describe(namespace: namespace)
        return "\(operation)\(place) failed: \(reason)"
    }

    /// "network namespace 'x'" or "the caller's network namespace".
    static func describe(namespace: String?) -> String {
        namespace.map { "network namespace '\($0)'" } ?? "the caller's network namespace"
    }
}
