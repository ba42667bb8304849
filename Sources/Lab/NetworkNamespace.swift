import Engine
import CXDPWG
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A network namespace created for one test (or one lab) and removed with every process
/// started in it, on every exit path: `close()` is idempotent and also runs from `deinit`.
/// Names are unique per process (`xdpwg-t<pid>-<n>` for tests, `xdpwg-l<pid>-<n>` for the
/// lab), so tests can run in parallel, and namespaces left by a process that died are
/// recognised by their dead pid and removed on the next run.
public final class NetworkNamespace: @unchecked Sendable {
    public let name: String
    private var processes: [Process] = []
    private let lock = NSLock()
    private var closed = false

    private static let counter = Counter()
    /// Every name in this scheme starts so.
    public static let prefix = "xdpwg-"

    /// Who makes a namespace: the letter after the prefix, so that `ip netns` tells a lab's
    /// namespaces from a test run's.
    public enum Maker: String, Sendable {
        case test = "t"
        case lab = "l"
    }

    public init(tag: String = "", maker: Maker = .test) throws {
        name = NetworkNamespace.uniqueName(tag: tag, maker: maker)
        try Command.run(["ip", "netns", "add", name])
        try exec(["ip", "link", "set", "lo", "up"])
    }

    /// Takes charge of a namespace that something else creates (or will create) under `name`,
    /// for example a tenant namespace the gateway makes from its configuration: `close()`
    /// stops the processes spawned through this object and deletes the namespace if it
    /// exists. Give such namespaces a name from `uniqueName(tag:)`, so that one left behind
    /// by a test process that died is removed on the next run.
    public init(adopting name: String) {
        self.name = name
    }

    /// A fresh name in this scheme (`xdpwg-t<pid>-<n>[-tag]`); also removes namespaces left
    /// behind by processes that no longer exist.
    public static func uniqueName(tag: String = "", maker: Maker = .test) -> String {
        removeStaleNamespaces()
        return "\(prefix)\(maker.rawValue)\(getpid())-\(counter.next())\(tag.isEmpty ? "" : "-" + tag)"
    }

    /// Whether the namespace currently exists (`ip netns add` made its file).
    public var exists: Bool { FileManager.default.fileExists(atPath: "/var/run/netns/\(name)") }

    deinit { close() }

    /// Runs a command inside the namespace to completion.
    @discardableResult
    public func exec(_ arguments: [String], input: String? = nil) throws -> String {
        try Command.run(["ip", "netns", "exec", name] + arguments, input: input)
    }

    public func execAllowingFailure(_ arguments: [String]) throws -> (Int32, String, String) {
        try Command.runAllowingFailure(["ip", "netns", "exec", name] + arguments)
    }

    /// Starts a long-running process inside the namespace. It is killed by PID when the
    /// namespace closes, and by the kernel (parent-death signal) if the test process dies.
    ///
    /// `ip netns exec` also gives the process a private mount namespace (to remount /sys);
    /// a process that itself creates named namespaces (`ip netns add`, as `xdpwg up` does for
    /// its tenants) must stay in ours, or its namespace mounts are invisible to everyone else:
    /// pass `sharedMounts: true` to enter only the network namespace (nsenter).
    @discardableResult
    public func spawn(_ arguments: [String], environment: [String: String] = [:], log: URL? = nil,
               sharedMounts: Bool = false) throws -> Process {
        let process = Process()
        let command = [try Command.which("setpriv"), "--pdeathsig", "KILL", "--", try Command.which(arguments[0])]
            + arguments.dropFirst()
        if sharedMounts {
            process.executableURL = URL(fileURLWithPath: try Command.which("nsenter"))
            process.arguments = ["--net=/run/netns/\(name)", "--"] + command
        } else {
            process.executableURL = URL(fileURLWithPath: try Command.which("ip"))
            process.arguments = ["netns", "exec", name] + command
        }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        if let log {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        lock.lock()
        defer { lock.unlock() }
        try process.run()
        processes.append(process)
        return process
    }

    /// Ends one process we started (SIGTERM, then SIGKILL after a grace period).
    public static func stop(_ process: Process) { stop([process]) }

    /// Ends processes we started: SIGTERM to all, then SIGKILL to those still running after
    /// one shared grace period of 2 s.
    public static func stop(_ processes: [Process]) {
        let running = processes.filter(\.isRunning)
        for p in running { kill(p.processIdentifier, SIGTERM) }
        for _ in 0..<100 where running.contains(where: \.isRunning) { usleep(20_000) }
        for p in running where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in running { p.waitUntilExit() }
    }

    public func close() {
        lock.lock()
        let toStop = closed ? [] : processes
        let wasClosed = closed
        closed = true
        processes = []
        lock.unlock()
        guard !wasClosed else { return }
        NetworkNamespace.stop(toStop)
        _ = try? Command.runAllowingFailure(["ip", "netns", "delete", name])
    }

    /// Creates a socket inside this namespace: the calling thread enters the namespace for
    /// the `socket()` call only and returns to its own right after. A socket keeps the
    /// namespace it was created in, whichever thread uses it later.
    public func socket(domain: Int32, type: Int32, protocol proto: Int32 = 0) throws(SystemError) -> Int32 {
        let path = "\(ThreadNetworkNamespace.directory)/\(name)"
        return try ThreadNetworkNamespace.run(path: path) { () throws(SystemError) -> Int32 in
            try SystemCall.checked("socket() in network namespace \(name)") { Glibc.socket(domain, type, proto) }
        }.get()
    }

    /// Removes namespaces named by this scheme whose creating process no longer exists.
    private static func removeStaleNamespaces() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns") else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let letter = rest.first, Maker(rawValue: String(letter)) != nil else { continue }
            let digits = rest.dropFirst().prefix { $0.isNumber }
            guard let pid = Int32(digits), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                _ = try? Command.runAllowingFailure(["ip", "netns", "delete", name])
            }
        }
    }
}

public final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    public init() {}
    public func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
}

/// A pair of namespaces joined by a veth link, with IPv4 addresses on each end.
public final class LinkedNamespaces: @unchecked Sendable {
    public let left: NetworkNamespace
    public let right: NetworkNamespace
    public let leftAddress: String
    public let rightAddress: String

    /// `subnet` is the first three octets of a /24 that exists only inside these namespaces.
    public init(subnet: String = "192.0.2") throws {
        left = try NetworkNamespace(tag: "a")
        right = try NetworkNamespace(tag: "b")
        leftAddress = "\(subnet).1"
        rightAddress = "\(subnet).2"
        // Create the pair inside `left` and move one end: nothing is left in the host namespace.
        try left.exec(["ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"])
        try left.exec(["ip", "link", "set", "veth1", "netns", right.name])
        try left.exec(["ip", "addr", "add", "\(leftAddress)/24", "dev", "veth0"])
        try right.exec(["ip", "addr", "add", "\(rightAddress)/24", "dev", "veth1"])
        try left.exec(["ip", "link", "set", "veth0", "up"])
        try right.exec(["ip", "link", "set", "veth1", "up"])
    }

    public func close() {
        right.close()
        left.close()
    }

    deinit { close() }
}
