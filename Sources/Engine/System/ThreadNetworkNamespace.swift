import CXDPWG
#if canImport(Glibc)
import Glibc
#endif

/// The one way into a network namespace: setns(CLONE_NEWNET), which moves only the calling
/// thread. Sockets, interface indexes and XDP attachments made meanwhile belong to the
/// namespace the thread was in when it made them, whichever thread uses them later.
public enum ThreadNetworkNamespace {
    /// Where `ip netns add` (and xdpwg) put the files of named namespaces.
    public static let directory = "/var/run/netns"

    /// The file of the namespace named `name`, after checking the name.
    public static func path(named name: String) throws(SystemError) -> String {
        try Names.validateNamespace(name)
        return "\(directory)/\(name)"
    }

    /// Moves the calling thread into the namespace at `path` for good: for a thread of its
    /// own, which ends there.
    public static func enter(path: String) throws(SystemError) {
        let target = open(path, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw .syscall(operation: "open(\(path))", errno: errno) }
        defer { close(target) }
        guard cxdpwg_setns_net(target) == 0 else {
            throw .syscall(operation: "setns(\(path), CLONE_NEWNET)", errno: errno)
        }
    }

    /// Runs `body` with the calling thread in the namespace at `path`, then moves the thread
    /// back where it was. Failing to enter throws; what `body` returned or threw comes back as
    /// the result (`.get()` it), with its own error type. `body` must not suspend: it has to
    /// stay on this thread.
    public static func run<T, E: Error>(path: String, _ body: () throws(E) -> T) throws(SystemError) -> Result<T, E> {
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw .syscall(operation: "open(/proc/thread-self/ns/net)", errno: errno) }
        defer { close(home) }
        try enter(path: path)
        // Returning must succeed: a thread left in another namespace would quietly do
        // everything after this in the wrong place.
        defer { precondition(cxdpwg_setns_net(home) == 0, "cannot return to this thread's own network namespace") }
        return Result(catching: body)
    }
}
