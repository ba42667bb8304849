// Samples what given CPUs spend their time on, with `perf record -e cpu-clock` (a software
// clock: this machine has no hardware counters), system-wide on those CPUs: kernel work and
// softirqs that land on a worker's core count whoever's context they run in.
//
// The window is exact: perf starts with its events disabled (-D -1) and is told to enable and
// disable them through a control FIFO, answering "ack" each time. Its start-up (reading every
// process's mappings) and its shutdown fall outside the window; `start` returns when sampling
// has begun, `stop` when it has ended and the report is read. perf is told to stop through
// the FIFO as well (then SIGINT, then SIGKILL by its PID past a timeout); every wait has a
// timeout; the scratch directory (the FIFOs, perf.data) goes on every path.

import Foundation
import Engine
import Lab

#if canImport(Glibc)
import Glibc
#endif

/// Why the CPUs could not be profiled: for the perf lab's "not measured: <why>".
public struct PerfError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One sampling window: `start`, then `stop` (or `stopReport`) once, from one thread at a time.
public final class PerfSampler: @unchecked Sendable {
    public struct Options: Sendable {
        /// Samples per second per CPU.
        public var frequency = 2000
        /// Record call chains (-g). The profile does not use them (it counts where each sample
        /// landed) and walking stacks costs the sampled core; for `keepDataAt` and a person
        /// reading it with `perf report -g`.
        public var callGraph = false
        /// Copy perf.data here before it is removed (for a person to read); nil: removed.
        public var keepDataAt: String?
        /// Seconds to wait for perf to start sampling, to stop, and to write its report.
        public var startTimeout: Double = 30
        public var stopTimeout: Double = 60
        public var reportTimeout: Double = 120

        public init() {}
    }

    /// The CPUs sampled, as perf's -C list.
    public let cpus: String
    private let options: Options
    private var scratch: ScratchDirectory?
    private let process: Subprocess.Child
    private var control: FileHandle?
    private var acknowledgements: Int32 = -1
    private var started: Double
    private var finished = false

    /// Starts perf on `cpus` and returns once it samples. Throws if perf is missing, cannot
    /// sample (permissions, perf_event_paranoid, a CPU that does not exist) or does not start
    /// within the timeout; nothing is left running or on disk then.
    public static func start(cpus: [Int], options: Options = Options()) throws(PerfError) -> PerfSampler {
        guard !cpus.isEmpty, cpus.allSatisfy({ $0 >= 0 }) else {
            throw PerfError("perf: no CPUs to sample (\(cpus))")
        }
        guard let perf = Subprocess.which("perf") else {
            throw PerfError(ToolError.notFound(program: "perf", package: "linux-perf").description)
        }
        let scratch: ScratchDirectory
        do { scratch = try ScratchDirectory() } catch { throw PerfError(error.description) }
        let list = cpus.map(String.init).joined(separator: ",")
        let controlPath = scratch.path + "/control", ackPath = scratch.path + "/ack"
        guard mkfifo(controlPath, 0o600) == 0, mkfifo(ackPath, 0o600) == 0 else {
            throw PerfError("perf: cannot make its control FIFOs in \(scratch.path): \(Errno.text(errno))")
        }
        // Read-write opens of a FIFO never block (Linux), whether or not perf has opened it yet.
        let controlFD = open(controlPath, O_RDWR | O_CLOEXEC)
        let ackFD = open(ackPath, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard controlFD >= 0, ackFD >= 0 else {
            if controlFD >= 0 { close(controlFD) }
            if ackFD >= 0 { close(ackFD) }
            throw PerfError("perf: cannot open its control FIFOs: \(Errno.text(errno))")
        }
        let arguments = [perf, "record", "-e", "cpu-clock", "-F", "\(options.frequency)", "-C", list]
            + (options.callGraph ? ["-g"] : [])
            // No build-ids: perf report reads the same files right away, and the build-id
            // cache (~/.debug) would keep a copy of every binary profiled.
            + ["--no-buildid", "--no-buildid-cache", "--delay", "-1",
               "--control", "fifo:\(controlPath),\(ackPath)", "-o", scratch.path + "/perf.data"]
        let process: Subprocess.Child
        do {
            process = try Subprocess.Child(arguments, standardOutput: "/dev/null",
                                           standardError: scratch.path + "/record.log")
        } catch {
            close(controlFD)
            close(ackFD)
            throw PerfError("perf could not be started: \(error)")
        }
        let sampler = PerfSampler(cpus: list, options: options, scratch: scratch, process: process,
                                  control: FileHandle(fileDescriptor: controlFD, closeOnDealloc: true),
                                  acknowledgements: ackFD)
        do {
            try sampler.command("enable", timeout: options.startTimeout)
        } catch {
            sampler.abandon()
            throw error
        }
        sampler.started = monotonicSeconds()
        return sampler
    }

    private init(cpus: String, options: Options, scratch: ScratchDirectory, process: Subprocess.Child, control: FileHandle,
                 acknowledgements: Int32) {
        self.cpus = cpus
        self.options = options
        self.scratch = scratch
        self.process = process
        self.control = control
        self.acknowledgements = acknowledgements
        started = monotonicSeconds()
    }

    deinit { abandon() }

    /// Ends the window and returns what was sampled in it (and the window's length). Call once.
    public func stopReport() throws(PerfError) -> (report: PerfReport, seconds: Double) {
        guard !finished, let scratch else { throw PerfError("perf: the sampler was already stopped") }
        defer { abandon() }
        try command("disable", timeout: options.stopTimeout)
        let seconds = monotonicSeconds() - started
        // "stop" (perf 6.1 knows it, though its help does not list it); SIGINT if it does not.
        try? control?.write(contentsOf: Data("stop\n".utf8))
        var status = process.wait(timeout: min(10, options.stopTimeout))
        if status == nil {
            process.signal(SIGINT)
            status = process.wait(timeout: options.stopTimeout)
        }
        guard let status else {
            throw PerfError("perf record did not stop within \(Int(options.stopTimeout)) s: \(recordLog)")
        }
        guard status == 0 else { throw PerfError("perf record exited \(status): \(recordLog)") }
        let data = scratch.path + "/perf.data"
        if let keep = options.keepDataAt {
            try? FileManager.default.removeItem(atPath: keep)
            try? FileManager.default.copyItem(atPath: data, toPath: keep)
        }
        let output = try PerfSampler.run(["report", "-i", data] + PerfReport.arguments, in: scratch,
                                         timeout: options.reportTimeout)
        if output.standardError.contains("has no samples") { return (PerfReport(), seconds) }
        do {
            return (try PerfReport.parse(output.standardOutput), seconds)
        } catch {
            throw PerfError("\(error.description); perf said: \(PerfSampler.tail(output.standardError))")
        }
    }

    /// Ends the window and classifies it: every sample on the CPUs, or those of `commands`
    /// (thread names, such as the worker's "xdpwg-w0") only.
    public func stop(classifier: PerfClassifier = PerfClassifier(), commands: Set<String> = [],
                     top: Int = 5) throws(PerfError) -> PerfProfile {
        let (report, seconds) = try stopReport()
        return PerfProfile(report: report, classifier: classifier, commands: commands, top: top, cpus: cpus,
                           seconds: seconds).demangled()
    }

    /// Samples `cpus` for `seconds` (blocking) and classifies what ran there.
    public static func profile(cpus: [Int], seconds: Double, classifier: PerfClassifier = PerfClassifier(),
                               commands: Set<String> = [], top: Int = 5,
                               options: Options = Options()) throws(PerfError) -> PerfProfile {
        let sampler = try start(cpus: cpus, options: options)
        usleep(useconds_t(max(0, min(seconds, 3600)) * 1e6))
        return try sampler.stop(classifier: classifier, commands: commands, top: top)
    }

    /// The defined code symbols of a static library (`nm --defined-only`): for
    /// `PerfClassifier.staticAEADSymbols` when the device links its AEAD statically, e.g.
    /// libipsec-mb-dev's libIPSec_MB.a. Empty when the archive or nm is missing.
    public static func archiveSymbols(_ path: String) -> Set<String> {
        guard FileManager.default.fileExists(atPath: path), let nm = Subprocess.which("nm"),
              let result = try? Command.runAllowingFailure([nm, "--defined-only", path]), result.status == 0
        else { return [] }
        var symbols = Set<String>()
        for line in result.standardOutput.split(separator: "\n") {
            // "0000000000000040 t exit_loop_poly": text (code) symbols only.
            let fields = line.split(separator: " ")
            if fields.count == 3, fields[1] == "T" || fields[1] == "t" { symbols.insert(String(fields[2])) }
        }
        return symbols
    }

    // MARK: Running perf

    /// Writes a control command and waits for perf's "ack" (or its exit, or the timeout).
    private func command(_ word: String, timeout: Double) throws(PerfError) {
        guard let control, acknowledgements >= 0 else { throw PerfError("perf: the sampler was already stopped") }
        do { try control.write(contentsOf: Data((word + "\n").utf8)) } catch {
            throw PerfError("perf: cannot write \"\(word)\" to its control FIFO: \(error)")
        }
        let deadline = monotonicSeconds() + timeout
        var received = ""
        while monotonicSeconds() < deadline {
            var descriptor = pollfd(fd: acknowledgements, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, 100) > 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                let n = read(acknowledgements, &buffer, buffer.count)
                if n > 0 { received += String(decoding: buffer[..<n], as: UTF8.self) }
                if received.contains("ack\n") { return }
            }
            if let status = process.reap() {
                throw PerfError("perf record exited (status \(status)) before it acknowledged \"\(word)\": "
                                + recordLog + PerfSampler.permissionHint)
            }
        }
        throw PerfError("perf record did not acknowledge \"\(word)\" within \(Int(timeout)) s: \(recordLog)")
    }

    /// Stops perf if it still runs (SIGINT, then SIGKILL: it is our child, by its PID) and
    /// removes the scratch directory. Idempotent.
    private func abandon() {
        guard !finished else { return }
        finished = true
        if process.reap() == nil {
            process.signal(SIGINT)
            if process.wait(timeout: 5) == nil {
                process.signal(SIGKILL)
                _ = process.wait(timeout: 5)
            }
        }
        try? control?.close()
        control = nil
        if acknowledgements >= 0 { close(acknowledgements) }
        acknowledgements = -1
        scratch = nil
    }

    private var recordLog: String {
        guard let scratch, let text = try? String(contentsOfFile: scratch.path + "/record.log", encoding: .utf8)
        else { return "(no output)" }
        // perf reports its own enable/disable: not a reason for anything.
        let lines = text.split(separator: "\n").filter { !$0.hasPrefix("Events enabled") && !$0.hasPrefix("Events disabled") }
        return PerfSampler.tail(lines.joined(separator: "\n"))
    }

    /// What to change when perf may not sample system-wide as this user.
    private static var permissionHint: String {
        guard geteuid() != 0 else { return "" }
        let paranoid = (try? String(contentsOfFile: "/proc/sys/kernel/perf_event_paranoid", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        return " (not root, and kernel.perf_event_paranoid is \(paranoid): sampling whole CPUs needs root, "
            + "CAP_PERFMON, or perf_event_paranoid <= 0)"
    }

    /// Runs `perf <arguments>` to completion, its output in files (a report can be large),
    /// killed past the timeout.
    private static func run(_ arguments: [String], in scratch: ScratchDirectory,
                            timeout: Double) throws(PerfError) -> (standardOutput: String, standardError: String) {
        guard let perf = Subprocess.which("perf") else {
            throw PerfError(ToolError.notFound(program: "perf", package: "linux-perf").description)
        }
        let outPath = scratch.path + "/report.out", errPath = scratch.path + "/report.err"
        let process: Subprocess.Child
        do {
            process = try Subprocess.Child([perf] + arguments, standardOutput: outPath, standardError: errPath)
        } catch {
            throw PerfError("perf could not be started: \(error)")
        }
        guard let status = process.wait(timeout: timeout) else {
            process.signal(SIGKILL)
            _ = process.wait(timeout: 5)
            throw PerfError("perf \(arguments.first ?? "") did not finish within \(Int(timeout)) s")
        }
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw PerfError("perf \(arguments.first ?? "") exited \(status): \(tail(err + out))")
        }
        return (out, err)
    }

    private static func tail(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.count > 1000 ? "…" + String(trimmed.suffix(1000)) : trimmed
    }
}
