import ArgumentParser
import Bench
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg bench-probe`: the fixed batch that callgrind counts (CallgrindProbe runs it under
/// valgrind). Hidden: a measuring instrument, not an operator's command.
struct BenchProbe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-probe",
        abstract: "Run the worker's per-packet work over a fixed batch in memory (for callgrind).",
        discussion: """
            Builds one tenant with one peer and a published keypair, checks that every frame takes \
            the delivering path, warms up, then runs the measured batch: arrive + decrypt into a \
            tenant frame, or encrypt into an uplink frame, for --packets packets. Prints \
            completed=N; exits non-zero if any packet took another path. With --callgrind, runs \
            itself under valgrind's callgrind instead and prints the batch's counts per packet \
            as JSON (build with -c release for figures worth reporting).
            """,
        shouldDisplay: false)

    @Option(help: "decrypt (peer → tenant) or encrypt (tenant → peer).")
    var direction: String

    @Option(help: "Inner IP packet size in bytes: 28...1420, 1420 or a multiple of 16.")
    var size: Int

    @Option(help: "Packets in the measured batch (1...1000000).")
    var packets: Int = 1000

    @Flag(help: "Self-check: add one heap allocation and one retain/release pair per packet.")
    var allocatingCanary = false

    @Flag(help: "Run this probe under callgrind and print instructions, mallocs, retains and releases per packet.")
    var callgrind = false

    @Flag(help: "The crypto-off variant: everything but the AEAD (plaintext and a zero tag).")
    var cryptoOff = false

    func run() throws {
        guard let direction = Direction(rawValue: direction), direction != .both else {
            throw ValidationError("--direction must be decrypt or encrypt, not \"\(self.direction)\"")
        }
        if callgrind {
            try printCallgrindCount(direction)
            return
        }
        let outcome: PipelineProbe.Outcome
        do {
            outcome = try PipelineProbe.run(direction: direction, size: size, packets: packets,
                                            allocatingCanary: allocatingCanary, cryptoOff: cryptoOff)
        } catch {
            var err = StandardError()
            print("xdpwg bench-probe: \(error)", to: &err)
            throw ExitCode.failure
        }
        print("direction=\(outcome.direction.rawValue) size=\(outcome.innerSize) packets=\(outcome.packets) completed=\(outcome.completed)"
              + (outcome.cryptoOff ? " crypto=off" : ""))
    }

    /// This very binary under callgrind (CallgrindProbe), its counts as JSON on standard output.
    private func printCallgrindCount(_ direction: Direction) throws {
        var err = StandardError()
        do {
            let count = try CallgrindProbe.measure(executable: try currentExecutable(), direction: direction,
                                                   innerSize: size, packets: packets,
                                                   allocatingCanary: allocatingCanary, cryptoOff: cryptoOff)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(count), as: UTF8.self))
        } catch {
            print("xdpwg bench-probe --callgrind: \(error)", to: &err)
            throw ExitCode.failure
        }
    }
}
