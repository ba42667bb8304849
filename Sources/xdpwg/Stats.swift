import ArgumentParser
import Engine
import Gateway

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg stats`: reads a running gateway's stats segment (read-only shared memory; no root
/// needed, no cost to the gateway) and prints it as a table, JSON or Prometheus text.
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a running gateway's counters: per queue, handshakes, XDP, tenants and peers.",
        discussion: """
            Reads /run/xdpwg/NAME.stats, which the gateway keeps up to date; reading costs the \
            gateway nothing and needs no root. Prints a table (the default), the JSON schema \
            documented in the README (--json) or Prometheus text (--prometheus). --watch \
            refreshes the table every SECONDS (default 1) with per-second rates until Ctrl-C. \
            Exits 1 with a message when no gateway of that name is running.
            """)

    @Option(name: .long, help: "The gateway's name ([Gateway] Name).")
    var name: String = "xdpwg"

    @Option(name: .long, help: .hidden)
    var directory: String = StatsSegment.defaultDirectory

    @Flag(name: .long, help: "Print JSON (the schema in the README) instead of the table.")
    var json = false

    @Flag(name: .long, help: "Print Prometheus text exposition instead of the table.")
    var prometheus = false

    @Flag(name: .long, help: "Refresh the table every SECONDS (default 1) with per-second rates, until Ctrl-C.")
    var watch = false

    @Argument(help: ArgumentHelp("With --watch: seconds between refreshes (default 1).", valueName: "SECONDS"))
    var seconds: Double?

    func validate() throws {
        if json && prometheus { throw ValidationError("--json and --prometheus exclude each other") }
        if watch && (json || prometheus) { throw ValidationError("--watch shows the table; drop --json or --prometheus") }
        if let seconds {
            guard watch else { throw ValidationError("SECONDS is only for --watch") }
            guard seconds.isFinite, seconds >= 0.1, seconds <= 3600 else {
                throw ValidationError("SECONDS must be between 0.1 and 3600")
            }
        }
    }

    func run() throws {
        if watch { return try runWatch(interval: seconds ?? 1) }
        let snapshot = try read()
        if json {
            let text: String
            do { text = try StatsRendering.renderJSON(snapshot) } catch {
                try fail("cannot encode the statistics as JSON: \(error)")
            }
            try output(text)
        } else if prometheus {
            try output(StatsRendering.renderPrometheus(snapshot))
        } else {
            try output(StatsRendering.renderTable(snapshot))
        }
    }

    /// Opens the segment afresh (so a restarted gateway is followed) and reads it.
    private func read() throws -> StatsSnapshot {
        do throws(GatewayError) {
            return try StatsReader.open(name: name, directory: directory).snapshot()
        } catch {
            try fail(error.description)
        }
    }

    private func fail(_ message: String) throws -> Never {
        var err = StandardError()
        print("xdpwg stats: \(message)", to: &err)
        throw ExitCode.failure
    }

    /// Prints frames until SIGINT or SIGTERM (exit 0), or until the gateway goes away (exit 1).
    private func runWatch(interval: Double) throws {
        // Blocked and taken with sigtimedwait, which is also the wait between frames: Ctrl-C
        // ends the loop at once, between two frames, never in the middle of one.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        let terminal = isatty(1) == 1
        var previous: StatsSnapshot?
        while true {
            let current = try read()
            var frame = previous.map { StatsRendering.renderWatch(previous: $0, current: current) }
                ?? StatsRendering.renderTable(current)
            if terminal {
                frame = "\u{1B}[H\u{1B}[2J" + frame      // home, clear screen
            } else if previous != nil {
                frame = "\n" + frame
            }
            try output(frame)
            previous = current
            let whole = interval.rounded(.down)
            var wait = timespec(tv_sec: Int(whole), tv_nsec: Int((interval - whole) * 1e9))
            let signal = sigtimedwait(&signals, nil, &wait)
            if signal == SIGINT || signal == SIGTERM { throw ExitCode.success }
        }
    }

    private func output(_ text: String) throws {
        var bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { Glibc.write(1, b.baseAddress! + written, b.count - written) } }
            guard n > 0 else { throw ExitCode.failure }   // stdout closed (a pipe to `head`)
            written += n
        }
    }
}
