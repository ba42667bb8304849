import ArgumentParser
import Bench
import Foundation
import Lab

/// `xdpwg scale`: start-up time, memory per peer and handshakes per second of one gateway
/// with many peers across many tenants; writes scale.md and scale.json.
struct ScaleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Measure one gateway with many peers across many tenants (root).",
        discussion: """
            Starts the gateway on the lab's topology with --tenants tenants and no peers (the baseline), \
            then with --peers peers spread over them: start-up time and resident memory (memory per peer \
            is the difference to the baseline); then every peer completes a real handshake (a peer emulator \
            per tenant) and sends one packet, which must be decrypted; then resident memory again and the \
            time to stop. Writes scale.md and scale.json into --output. Ctrl-C stops it between steps and \
            removes everything (exit 130).
            """)

    @Option(name: .long, help: "Where to write scale.md and scale.json.")
    var output: String = "scale-results"

    @Option(name: .long, help: "Tenants (1-1000).")
    var tenants: Int = 100

    @Option(name: .long, help: "Peers in all, spread evenly over the tenants (1-250000).")
    var peers: Int = 100_000

    @Option(name: .long, help: ArgumentHelp("The xdpwg binary to run as the gateway (another build, to compare).",
                                            visibility: .hidden))
    var gateway: String?

    func validate() throws {
        guard ScaleRunner.Options.tenantRange.contains(tenants) else { throw ValidationError("--tenants must be 1-1000") }
        guard ScaleRunner.Options.peerRange.contains(peers) else { throw ValidationError("--peers must be 1-250000") }
    }

    func run() throws {
        // Before any thread exists: Ctrl-C is then taken between steps, which tears down
        // instead of dying half-way.
        LabRun.Interrupt.block()
        var options = ScaleRunner.Options(executable: try gateway ?? currentExecutable())
        options.tenants = tenants
        options.peers = peers
        options.command = (["xdpwg"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        let runner = ScaleRunner(options: options) { text in
            var out = StandardOutput()
            print(text, to: &out)
        }
        try runReporting("scale") {
            let report = try runner.run()
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            try report.markdown().write(toFile: "\(output)/scale.md", atomically: true, encoding: .utf8)
            try report.writeJSON(to: "\(output)/scale.json")
            var out = StandardOutput()
            print("written: \(output)/scale.md, scale.json", to: &out)
        }
    }
}

/// `xdpwg soak`: the gateway under steady load for a long time, its resident memory sampled;
/// writes soak.md and soak.json.
struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Run the gateway under steady load and sample its memory (root).",
        discussion: """
            One tenant with --peers emulated peers on the lab's topology: transport packets at --rate per \
            second to the tenant and a quarter of that back, every peer handshaking again every \
            --rehandshake seconds, for --seconds; the gateway's VmRSS every --sample seconds. Reports the \
            samples, the slope after warm-up and whether memory stayed flat. Writes soak.md and soak.json \
            into --output. Ctrl-C stops it and removes everything (exit 130).
            """)

    @Option(name: .long, help: "Where to write soak.md and soak.json.")
    var output: String = "soak-results"

    @Option(name: .long, help: "Seconds under load (default 600).")
    var seconds: Int = 600

    @Option(name: .long, help: "Seconds between memory samples.")
    var sample: Double = 5

    @Option(name: .long, help: "Emulated peers.")
    var peers: Int = 1000

    @Option(name: .long, help: "Transport packets per second to the tenant.")
    var rate: Int = 20_000

    @Option(name: .long, help: "Seconds between each peer's handshakes (keypairs live 180 s).")
    var rehandshake: Double = 60

    func validate() throws {
        guard (1...86_400).contains(seconds) else { throw ValidationError("--seconds must be 1-86400") }
        guard sample >= 0.1 else { throw ValidationError("--sample must be at least 0.1 s") }
        guard (1...100_000).contains(peers) else { throw ValidationError("--peers must be 1-100000") }
        guard (1...1_000_000).contains(rate) else { throw ValidationError("--rate must be 1-1000000") }
        guard (1...170).contains(rehandshake) else { throw ValidationError("--rehandshake must be 1-170 s") }
    }

    func run() throws {
        // Before any thread exists: Ctrl-C is then taken between steps, which tears down
        // instead of dying half-way.
        LabRun.Interrupt.block()
        var options = SoakRunner.Options(executable: try currentExecutable())
        options.seconds = seconds
        options.sampleSeconds = sample
        options.peers = peers
        options.rate = rate
        options.rehandshakeSeconds = rehandshake
        options.command = (["xdpwg"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        let runner = SoakRunner(options: options) { text in
            var out = StandardOutput()
            print(text, to: &out)
        }
        try runReporting("soak") {
            let report = try runner.run()
            try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
            try report.markdown().write(toFile: "\(output)/soak.md", atomically: true, encoding: .utf8)
            try report.writeJSON(to: "\(output)/soak.json")
            var out = StandardOutput()
            print("written: \(output)/soak.md, soak.json", to: &out)
        }
    }
}

/// Runs `body`; a missing prerequisite or any other error is printed as `xdpwg NAME: …`
/// and the command fails.
private func runReporting(_ name: String, _ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as LabRun.Interrupted {
        print("xdpwg \(name): \(error)")
        throw ExitCode(130)
    } catch let error as Prerequisites.Missing {
        var err = StandardError()
        print("xdpwg \(name) cannot run here:", to: &err)
        for problem in error.problems { print("  \(problem)", to: &err) }
        throw ExitCode.failure
    } catch {
        var err = StandardError()
        print("xdpwg \(name): \(error)", to: &err)
        throw ExitCode.failure
    }
}
