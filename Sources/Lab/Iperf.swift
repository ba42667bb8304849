import Foundation
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// iperf3 TCP tests between network namespaces, read from iperf3's JSON reports (`-J`).
/// Every iperf3 process is started through `NetworkNamespace.spawn`, so we own its PID and it
/// ends with its namespace (or with the test process) whatever happens.
public enum Iperf {
    public static let defaultPort = 5201

    /// One side's view of a finished test: `end.sum_sent` and `end.sum_received` of its report.
    public struct Result: CustomStringConvertible {
        public var sentBytes: UInt64
        public var receivedBytes: UInt64
        public var senderBitsPerSecond: Double
        public var receiverBitsPerSecond: Double
        /// TCP retransmissions of the sending side (reported by the side that sent: the client
        /// unless the test ran in reverse).
        public var retransmits: Int?
        /// Bytes per reporting interval (one a second), as this side saw them: a stall shows
        /// as an interval with nothing.
        public var intervalBytes: [UInt64] = []

        public var description: String {
            let r = retransmits.map { ", \($0) retransmits" } ?? ""
            return String(format: "sent %llu B at %.1f Mbit/s, received %llu B at %.1f Mbit/s",
                          sentBytes, senderBitsPerSecond / 1e6, receivedBytes, receiverBitsPerSecond / 1e6) + r
        }
    }

    /// Both ends of one test.
    public struct Run: CustomStringConvertible {
        public var client: Result
        public var server: Result
        public var description: String { "client: \(client); server: \(server)" }
    }

    public struct Failed: Error, CustomStringConvertible {
        public var what: String
        public var output: String
        public var description: String { "iperf3 \(what): \(output)" }
    }

    /// A one-off server (`-s -1`): it serves one test, prints its report and exits.
    public final class Server: @unchecked Sendable {
        public let namespace: NetworkNamespace
        public let address: String
        public let port: Int
        private let process: Process
        private let logFile: URL

        private static let counter = Counter()

        /// Starts the server bound to `address` and returns once it listens.
        public init(in namespace: NetworkNamespace, address: String, port: Int = Iperf.defaultPort) throws {
            self.namespace = namespace
            self.address = address
            self.port = port
            logFile = FileManager.default.temporaryDirectory
                .appendingPathComponent("xdpwg-iperf-\(getpid())-\(Server.counter.next()).json")
            process = try namespace.spawn(["iperf3", "--server", "--one-off", "--json", "--bind", address,
                                           "--port", String(port)], log: logFile)
            do {
                try waitUntilListening()
            } catch {
                stop()
                throw error
            }
        }

        deinit { stop() }

        /// Polls the namespace's listening TCP sockets: iperf3 has no readiness signal of its own.
        private func waitUntilListening() throws {
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline {
                guard process.isRunning else { throw Failed(what: "server in \(namespace.name) exited", output: log) }
                let listening = try namespace.exec(["ss", "-Hltn", "sport", "=", ":\(port)"])
                if listening.contains("\(address):\(port)") { return }
                usleep(20_000)
            }
            throw Failed(what: "server in \(namespace.name) does not listen on \(address):\(port) after 5 s", output: log)
        }

        /// Whether it is still waiting for (or serving) its one test.
        public var isRunning: Bool { process.isRunning }
        public var processIdentifier: Int32 { process.processIdentifier }
        public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

        /// Waits for the server to finish its test and returns its report.
        public func result(timeout: TimeInterval = 10) throws -> Result {
            guard Iperf.wait(for: process, timeout: timeout) else {
                throw Failed(what: "server in \(namespace.name) did not finish within \(timeout) s", output: log)
            }
            return try Iperf.parse(log, what: "server in \(namespace.name)")
        }

        /// Ends the process by PID (if still running) and removes its report file.
        public func stop() {
            NetworkNamespace.stop(process)
            try? FileManager.default.removeItem(at: logFile)
        }
    }

    /// Runs a client to completion: `seconds` of TCP from `namespace` to `address`
    /// (`reverse`: the server sends). Throws if it fails or overruns by more than 20 s.
    public static func client(in namespace: NetworkNamespace, to address: String, port: Int = defaultPort,
                       seconds: Int, reverse: Bool = false) throws -> Result {
        let logFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("xdpwg-iperf-\(getpid())-c\(clientCounter.next()).json")
        defer { try? FileManager.default.removeItem(at: logFile) }
        var arguments = ["iperf3", "--client", address, "--port", String(port), "--time", String(seconds),
                         "--json", "--connect-timeout", "5000"]
        if reverse { arguments.append("--reverse") }
        let process = try namespace.spawn(arguments, log: logFile)
        let finished = wait(for: process, timeout: TimeInterval(seconds + 20))
        NetworkNamespace.stop(process)
        let output = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        guard finished else { throw Failed(what: "client in \(namespace.name) to \(address) hung", output: output) }
        guard process.terminationStatus == 0 else {
            throw Failed(what: "client in \(namespace.name) to \(address) exited \(process.terminationStatus)",
                         output: output)
        }
        return try parse(output, what: "client in \(namespace.name) to \(address)")
    }

    private static let clientCounter = Counter()

    /// Polls until the process exits; false if it is still running after `timeout`.
    public static func wait(for process: Process, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }

    /// The parts of iperf3's JSON report we read.
    private struct Report: Decodable {
        public struct Sum: Decodable {
            public var bytes: Double
            public var bits_per_second: Double
            public var retransmits: Int?
        }
        public struct End: Decodable {
            public var sum_sent: Sum?
            public var sum_received: Sum?
        }
        public struct Interval: Decodable {
            public var sum: Sum
        }
        public var intervals: [Interval]?
        public var end: End?
        public var error: String?
    }

    public static func parse(_ json: String, what: String) throws -> Result {
        // The server's log may hold text before its JSON object (none is expected, but a
        // warning must not hide the report).
        guard let start = json.firstIndex(of: "{") else { throw Failed(what: "\(what): no JSON report", output: json) }
        let report: Report
        do {
            report = try JSONDecoder().decode(Report.self, from: Data(json[start...].utf8))
        } catch {
            throw Failed(what: "\(what): unreadable JSON report (\(error))", output: json)
        }
        if let message = report.error { throw Failed(what: "\(what) reports an error", output: message) }
        guard let sent = report.end?.sum_sent, let received = report.end?.sum_received else {
            throw Failed(what: "\(what): report without end.sum_sent/sum_received", output: json)
        }
        return Result(sentBytes: UInt64(sent.bytes), receivedBytes: UInt64(received.bytes),
                      senderBitsPerSecond: sent.bits_per_second, receiverBitsPerSecond: received.bits_per_second,
                      retransmits: sent.retransmits,
                      intervalBytes: (report.intervals ?? []).map { UInt64($0.sum.bytes) })
    }
}
