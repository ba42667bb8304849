import CXDPWG
import Dispatch
import Engine
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` on a new thread that first joins the network namespace `namespace` (the
/// `ip netns` name, i.e. /var/run/netns/NAME; nil stays in the caller's) and, if `cpu` is
/// given, pins itself to that core; waits for it and returns its result or rethrows its error.
///
/// Everything `body` creates that belongs to a network namespace — sockets, AF_XDP sockets,
/// netlink sockets, XDP attachments by interface index — belongs to `namespace` and stays
/// there whichever thread uses it later. The thread ends with `body`: nothing else ever runs
/// in the namespace it joined, so it never has to find its way back.
///
/// Throws `LoadError` when the namespace cannot be joined (no such namespace: the message
/// says so) or the thread cannot be pinned (no such core).
public func runInNamespace<T: Sendable>(_ namespace: String?, cpu: Int? = nil,
                                        _ body: @Sendable () throws -> T) throws -> T {
    // The thread is joined before this returns, so `body` does not really escape.
    try withoutActuallyEscaping(body) { body in
        let thread = try NamespaceThread<T>(namespace: namespace, cpu: cpu) { _ in try body() }
        return try thread.join()
    }
}

/// Asks a long-lived `NamespaceThread` to finish: its body polls `isStopRequested`.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Raises the flag; idempotent, any thread.
    public func requestStop() { flag.store(true, ordering: .releasing) }

    /// One relaxed-enough load: cheap enough to poll once per batch.
    public var isStopRequested: Bool { flag.load(ordering: .acquiring) }
}

/// A thread that joins a network namespace, pins itself to a core and runs its body until
/// the body returns — typically a loop that polls `stopSignal` (a blaster) — then holds the
/// result for `join()`.
///
/// `init` returns once the thread has entered the namespace and pinned itself, and throws if
/// it could not (the thread has then ended): a body never runs in the wrong place. The thread
/// never outlives its object: `deinit` requests a stop and joins.
public final class NamespaceThread<Value: Sendable>: @unchecked Sendable {
    public let namespace: String?
    public let cpu: Int?
    /// Raised by `requestStop()`; passed to the body.
    public let stopSignal = StopSignal()

    private let context: Context
    private let thread: pthread_t
    /// Set once the thread has been joined; `join` then returns the same outcome again.
    private let outcome = Mutex<Result<Value, any Error>?>(nil)

    /// What the thread reads and writes. Retained once for the thread, released by it.
    private final class Context: ThreadEntry, @unchecked Sendable {
        let namespace: String?
        let cpu: Int?
        let name: String
        let stopSignal: StopSignal
        /// Cleared by the thread once it has run, so that nothing it captured outlives the run.
        var body: (@Sendable (StopSignal) throws -> Value)?
        /// Signalled once setup (namespace, pinning) has succeeded or failed.
        let ready = DispatchSemaphore(value: 0)
        /// Written by the thread before `ready` is signalled (setup) or before it exits (the
        /// result); read by others only after the semaphore or `pthread_join`, which order them.
        var setupError: LoadError?
        var result: Result<Value, any Error>?

        init(namespace: String?, cpu: Int?, name: String, stopSignal: StopSignal,
             body: @escaping @Sendable (StopSignal) throws -> Value) {
            self.namespace = namespace
            self.cpu = cpu
            self.name = name
            self.stopSignal = stopSignal
            self.body = body
        }

        override func main() { NamespaceThread.run(self) }
    }

    /// Starts the thread. `name` is what `top -H` shows (at most 15 bytes are kept).
    public init(namespace: String?, cpu: Int? = nil, name: String = "xdpwg-load",
                _ body: @escaping @Sendable (StopSignal) throws -> Value) throws(LoadError) {
        if let namespace { try NamespaceThread.validate(namespace: namespace) }
        self.namespace = namespace
        self.cpu = cpu
        let context = Context(namespace: namespace, cpu: cpu, name: name, stopSignal: stopSignal, body: body)
        self.context = context

        switch ThreadEntry.start(context) {
        case .success(let t): thread = t
        case .failure(let error): throw LoadError("start a thread", namespace: namespace, errno: error.code)
        }
        context.ready.wait()
        if let setupError = context.setupError {
            pthread_join(thread, nil)
            outcome.withLock { $0 = .failure(setupError) }
            throw setupError
        }
    }

    deinit {
        requestStop()
        _ = try? join()
    }

    /// Asks the body to finish (it sees `stopSignal.isStopRequested`); does not wait.
    public func requestStop() { stopSignal.requestStop() }

    /// Waits for the thread to end; returns the body's result or rethrows its error. Safe to
    /// call again (the same outcome) and from several threads.
    public func join() throws -> Value {
        let result = outcome.withLock { stored -> Result<Value, any Error> in
            if let stored { return stored }
            pthread_join(thread, nil)
            // pthread_join orders the thread's last writes before this read.
            let result = context.result ?? .failure(LoadError("run a thread", namespace: namespace,
                                                              reason: "the thread ended without a result"))
            stored = result
            return result
        }
        return try result.get()
    }

    // MARK: The thread

    private static func run(_ context: Context) {
        if let error = setUp(context) {
            context.setupError = error
            context.body = nil
            context.ready.signal()
            return
        }
        context.ready.signal()
        let body = context.body!
        context.body = nil
        context.result = Result { try body(context.stopSignal) }
    }

    /// Joins the namespace, pins, names the thread. Returns what went wrong, if anything.
    private static func setUp(_ context: Context) -> LoadError? {
        if let namespace = context.namespace {
            do throws(SystemError) {
                try ThreadNetworkNamespace.enter(path: "\(ThreadNetworkNamespace.directory)/\(namespace)")
            } catch {
                let hint = error.errno == ENOENT ? " — no network namespace of that name (see `ip netns list`)" : ""
                return LoadError("enter the network namespace", namespace: namespace, reason: "\(error)\(hint)")
            }
        }
        if let cpu = context.cpu {
            do throws(SystemError) {
                try CPUTopology.pinCurrentThread(to: cpu)
            } catch {
                return LoadError("pin a thread to core \(cpu)", namespace: context.namespace,
                                 reason: "\(error) (the allowed cores are \(CPUTopology.allowedCores()))")
            }
        }
        CPUTopology.setCurrentThreadName(context.name)
        return nil
    }


    /// A name `ip netns` could have made: not empty, no '/', not "." or "..".
    static func validate(namespace: String) throws(LoadError) {
        guard !namespace.isEmpty, !namespace.contains("/"), namespace != ".", namespace != "..",
              namespace.utf8.count <= 255 else {
            throw LoadError("enter the network namespace", namespace: namespace,
                            reason: "'\(namespace)' is not a namespace name (non-empty, no '/', at most 255 bytes)")
        }
    }
}

/// The start of a pthread: a C function pointer cannot mention a generic type, so the
/// thread enters through this non-generic class and `main` dispatches to the subclass.
class ThreadEntry: @unchecked Sendable {
    func main() {}

    /// Starts a thread that runs `entry.main()`; the thread holds `entry` until it ends.
    static func start(_ entry: ThreadEntry) -> Result<pthread_t, ThreadStartError> {
        let retained = Unmanaged.passRetained(entry).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<ThreadEntry>.fromOpaque(raw!).takeRetainedValue().main()
            return nil
        }, retained)
        guard rc == 0 else {
            Unmanaged<ThreadEntry>.fromOpaque(retained).release()
            return .failure(ThreadStartError(code: rc))
        }
        return .success(thread)
    }
}

/// pthread_create's errno.
struct ThreadStartError: Error {
    let code: Int32
}
