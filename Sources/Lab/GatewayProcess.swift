import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg up` (or the perf lab's crypto-off gateway command) as a child process in a
/// namespace: its configuration in a private directory
/// (0700, file 0600: it holds private keys), its log in a file beside it, started and waited
/// for until it says it is up, and stopped by its PID. The lab, the perf lab and the
/// integration tests start gateways this one way.
public final class GatewayProcess: @unchecked Sendable {
    public let namespace: NetworkNamespace
    /// The private directory holding the configuration and the log.
    public let directory: URL
    public let configurationPath: String
    public let logPath: String
    private let process: Process
    private let lock = NSLock()
    private var stopped = false
    /// The log as it was when `stop` removed the directory (the final counters are in it).
    private var finalLog: String?

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Writes `configuration` and starts `executable COMMAND --config …` in `namespace`
    /// (sharing the caller's mount namespace, so the tenant namespaces it creates are visible
    /// to everyone), then waits up to `timeout` seconds for its "up:" line. `command` is `up`,
    /// or a command that runs the same gateway (the perf lab's crypto-off one). Throws with
    /// the log if it exits or does not come up; nothing is left behind then. `environment` is
    /// added to the caller's.
    public init(executable: String, command: String = "up", in namespace: NetworkNamespace, configuration: String,
                arguments: [String] = [], environment: [String: String] = [:], timeout: Double = 30) throws {
        self.namespace = namespace
        directory = try GatewayProcess.privateDirectory()
        configurationPath = directory.appendingPathComponent("gateway.conf").path
        logPath = directory.appendingPathComponent("gateway.log").path
        guard FileManager.default.createFile(atPath: configurationPath, contents: Data(configuration.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            try? FileManager.default.removeItem(at: directory)
            throw Failure(description: "cannot write the gateway's configuration to \(configurationPath)")
        }
        do {
            process = try namespace.spawn([executable, command, "--config", configurationPath] + arguments,
                                          environment: environment, log: URL(fileURLWithPath: logPath),
                                          sharedMounts: true)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        do {
            try waitForLog(what: "the gateway to come up", timeout: timeout) { $0.contains("up: uplink") }
        } catch {
            stop()
            throw error
        }
    }

    deinit { stop() }

    public var processIdentifier: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    /// Everything the gateway logged so far (after `stop`, everything it logged).
    public var log: String {
        lock.lock()
        defer { lock.unlock() }
        return finalLog ?? (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// Keeps the log, then removes the private directory.
    private func removeDirectory() {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        lock.lock()
        finalLog = text
        lock.unlock()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Polls the log until `condition` holds; throws (with the log) if the gateway exits first
    /// or `timeout` passes.
    public func waitForLog(what: String, timeout: Double = 20, _ condition: (String) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(log) { return }
            guard process.isRunning else {
                throw Failure(description: "xdpwg exited (status \(process.terminationStatus)) before \(what):\n\(log)")
            }
            usleep(50_000)
        }
        throw Failure(description: "timed out after \(timeout) s waiting for \(what):\n\(log)")
    }

    /// SIGTERM, and waits up to `timeout` seconds for it to remove what it made (then
    /// SIGKILL). Returns the exit status; nil if it had to be killed. Idempotent.
    @discardableResult
    public func stop(timeout: Double = 15) -> Int32? {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.unlock()
        if first {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                removeDirectory()
                return nil
            }
            removeDirectory()
        }
        process.waitUntilExit()
        return process.terminationReason == .exit ? process.terminationStatus : nil
    }

    /// A fresh directory only root can enter.
    private static func privateDirectory() throws -> URL {
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-gateway-XXXXXX").path
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else {
            throw Failure(description: "cannot create a private directory at \(template): \(Errno.text(errno))")
        }
        return URL(fileURLWithPath: String(cString: made))
    }
}
