import ArgumentParser
import Bench
import Foundation
import Lab

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg bench`: the perf lab. Every scenario against xdpwg, xdpwg with crypto off, the
/// reference forwarder and wireguard-go in one run, plus the AEAD baselines and callgrind's
/// instruction counts; writes report.md, report.json and chart.png.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure xdpwg against wireguard-go and the hardware's limits (the perf lab; root).",
        discussion: """
            Builds the lab's topology for each device under test (xdpwg, xdpwg with crypto off, \
            the reference forwarder, wireguard-go), worker count and peer count, emulates the peers \
            (real handshakes), and offers a constant load from a generator pinned to CPU 0: \
            pre-encrypted transport packets for the decrypt direction (paced a little above what the \
            device takes), plain packets for the encrypt direction, both at once for "both". After a \
            warm-up, XDP sinks count what each device delivers over the window; the busy time of the \
            core it is pinned to (its threads and the kernel's work there) is what it cost, and perf \
            samples where that time went. Also measures every \
            generator's ceiling on its path, every AEAD backend on one core and, under callgrind, \
            instructions and mallocs per packet of the worker's per-packet path (run a release build \
            for those). Writes report.md, report.json and chart.png into --output. Ctrl-C stops it \
            between scenarios and removes everything (exit 130).
            """)

    @Option(name: .long, help: "Where to write report.md, report.json and chart.png.")
    var output: String = "bench-results"

    @Option(name: .long, parsing: .upToNextOption, help: "decrypt, encrypt, both (default: all).")
    var directions: [String] = Direction.allCases.map(\.rawValue)

    @Option(name: .long, parsing: .upToNextOption, help: "Inner packet sizes in bytes (default: 64 512 1420).")
    var sizes: [Int] = [64, 512, 1420]

    @Option(name: .long, parsing: .upToNextOption, help: "Worker cores (default: 1 2).")
    var workers: [Int] = [1, 2]

    @Option(name: .long, parsing: .upToNextOption, help: "Emulated peers (default: 1 100).")
    var peers: [Int] = [1, 100]

    @Option(name: .long, parsing: .upToNextOption,
            help: "xdpwg, xdpwg-crypto-off, reference-forwarder, wireguard-go (default: all).")
    var devices: [String] = DeviceUnderTest.allCases.map(\.rawValue)

    @Option(name: .long, help: "Seconds of the measured window per scenario.")
    var seconds: Double = 1

    @Option(name: .long, help: "The reference forwarder's executable (scripts/bench.sh builds it).")
    var referenceForwarder: String?

    @Option(name: .long, help: "The measured build's source commit, for the report (git describe --always --dirty).")
    var commit: String?

    @Flag(name: .long, help: "Skip the callgrind probe.")
    var noCallgrind = false

    func validate() throws {
        for d in directions where Direction(rawValue: d) == nil { throw ValidationError("unknown direction '\(d)'") }
        for d in devices where DeviceUnderTest(rawValue: d) == nil { throw ValidationError("unknown device '\(d)'") }
        for s in sizes where !(64...1420).contains(s) { throw ValidationError("sizes must be 64-1420 bytes, not \(s)") }
        for w in workers where !(1...64).contains(w) { throw ValidationError("workers must be 1-64, not \(w)") }
        for p in peers where !(1...100_000).contains(p) { throw ValidationError("peers must be 1-100000, not \(p)") }
        guard seconds >= 0.2, seconds <= 600 else { throw ValidationError("--seconds must be 0.2-600") }
    }

    func run() throws {
        // Before any thread exists: Ctrl-C is then taken between steps, which tears down
        // instead of dying half-way.
        LabRun.Interrupt.block()
        var options = BenchRunner.Options(executable: try currentExecutable())
        options.directions = directions.compactMap(Direction.init(rawValue:))
        options.devices = devices.compactMap(DeviceUnderTest.init(rawValue:))
        options.sizes = sizes
        options.workers = workers
        options.peers = peers
        options.seconds = seconds
        options.callgrind = !noCallgrind
        // Absolute: it is started from inside a namespace, and the report quotes it as given.
        options.referenceForwarder = referenceForwarder.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        options.commit = commit
        #if DEBUG
        options.build = "debug"
        #endif
        options.command = (["xdpwg"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        let runner = BenchRunner(options: options) { text in
            var out = StandardOutput()
            print(text, to: &out)
        }
        do {
            let report = try runner.run()
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            let markdown = report.markdown()
            try markdown.write(toFile: "\(output)/report.md", atomically: true, encoding: .utf8)
            try report.writeJSON(to: "\(output)/report.json")
            var out = StandardOutput()
            print("\n" + markdown, to: &out)
            do {
                try report.writeChart(png: "\(output)/chart.png")
            } catch {
                var err = StandardError()
                print("xdpwg bench: no chart: \(error)", to: &err)
            }
            print("written: \(output)/report.md, report.json, chart.png", to: &out)
        } catch let error as LabRun.Interrupted {
            print("xdpwg bench: \(error)")
            throw ExitCode(130)
        } catch let error as Prerequisites.Missing {
            var err = StandardError()
            print("xdpwg bench cannot run here:", to: &err)
            for problem in error.problems { print("  \(problem)", to: &err) }
            throw ExitCode.failure
        } catch {
            var err = StandardError()
            print("xdpwg bench: \(error)", to: &err)
            throw ExitCode.failure
        }
    }
}
