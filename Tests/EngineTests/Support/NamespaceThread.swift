import Engine
import CXDPWG
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

extension NetworkNamespace {
    /// Runs `body` on a dedicated thread that has moved into this namespace with
    /// setns(CLONE_NEWNET), so that everything it does (netlink sockets, `ip` commands it
    /// spawns, /proc/sys/net) happens here, while the test's own threads stay home. The thread
    /// returns to its original namespace before it ends.
    func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let box = ResultBox<T>()
        let path = "\(ThreadNetworkNamespace.directory)/\(name)"
        let thread = Thread {
            box.set(Result { try ThreadNetworkNamespace.run(path: path) { try body() }.get() })
        }
        thread.start()
        return try box.wait().get()
    }
}

/// Runs `body` on a dedicated thread (for tests that change the calling thread's affinity
/// or name, which must not leak into the test runner's threads).
func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    let box = ResultBox<T>()
    let thread = Thread { box.set(Result { try body() }) }
    thread.start()
    return try box.wait().get()
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var result: Result<T, any Error>?

    func set(_ value: Result<T, any Error>) {
        condition.lock()
        result = value
        condition.signal()
        condition.unlock()
    }

    func wait() -> Result<T, any Error> {
        condition.lock()
        defer { condition.unlock() }
        while result == nil { condition.wait() }
        return result!
    }
}

/// `ip -j ...` output as JSON objects.
enum IPJSON {
    struct Unexpected: Error, CustomStringConvertible {
        var output: String
        var description: String { "unexpected `ip -j` output: \(output)" }
    }

    static func objects(_ arguments: [String]) throws -> [[String: Any]] {
        let output = try Command.run(arguments)
        guard let parsed = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] else {
            throw Unexpected(output: output)
        }
        return parsed
    }

    static func object(_ arguments: [String]) throws -> [String: Any] {
        let all = try objects(arguments)
        guard all.count == 1 else { throw Unexpected(output: "\(all.count) objects from \(arguments)") }
        return all[0]
    }
}
