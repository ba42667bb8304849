import ArgumentParser
import Foundation
import Lab

#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg lab`: the whole gateway on one machine with real peers (the README's main command).
struct LabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "Run the whole gateway on this machine with real wireguard-go peers, traffic and live stats.",
        discussion: """
            Builds network namespaces: an "internet" with wireguard-go peers, the gateway's \
            namespace behind a 2-queue veth running `xdpwg up`, and one namespace per tenant (all \
            tenants on the same addresses). Every peer pings its tenant, then iperf3 runs from every \
            peer to its tenant and back for --duration seconds while the gateway's counters refresh \
            every second (the `xdpwg stats --watch` view). Prints a summary (throughput per tenant, \
            handshakes, drops by reason) and removes everything, also on Ctrl-C. --keep stays up \
            after the summary, says how to explore the lab, and tears down at Ctrl-C. Needs root. \
            Exits 1 if a peer could not reach its tenant or a flow carried nothing.
            """)

    @Option(name: .long, help: "Tenants (1-8).")
    var tenants = 2

    @Option(name: .long, help: "Peers per tenant (1-8).")
    var peers = 2

    @Option(name: .long, help: "Seconds of traffic (1-3600).")
    var duration = 20

    @Flag(name: .long, help: "After the summary, keep everything running until Ctrl-C and say how to explore it.")
    var keep = false

    @Option(name: .long, help: ArgumentHelp("The gateway's log level (default: info).", valueName: "level"))
    var logLevel: String?

    func validate() throws {
        guard LabRun.Options.tenantRange.contains(tenants) else { throw ValidationError("--tenants must be 1-8") }
        guard LabRun.Options.peerRange.contains(peers) else { throw ValidationError("--peers must be 1-8") }
        guard LabRun.Options.durationRange.contains(duration) else { throw ValidationError("--duration must be 1-3600") }
    }

    func run() throws {
        // Before any thread exists: Ctrl-C is then taken by the lab between its steps, which
        // tears down instead of dying half-way.
        LabRun.Interrupt.block()
        var options = LabRun.Options(executable: try currentExecutable())
        options.tenants = tenants
        options.peersPerTenant = peers
        options.duration = duration
        options.keep = keep
        options.logLevel = logLevel
        options.clearScreen = isatty(1) == 1
        let lab = LabRun(options: options) { text in
            var out = StandardOutput()
            print(text, to: &out)
        }
        do {
            if try !lab.run() { throw ExitCode.failure }
        } catch let error as LabRun.Interrupted {
            print("xdpwg lab: \(error)")
            throw ExitCode(130)
        } catch let error as Prerequisites.Missing {
            var err = StandardError()
            print("xdpwg lab cannot run here:", to: &err)
            for problem in error.problems { print("  \(problem)", to: &err) }
            throw ExitCode.failure
        } catch let exit as ExitCode {
            throw exit
        } catch {
            var err = StandardError()
            print("xdpwg lab: \(error)", to: &err)
            throw ExitCode.failure
        }
    }
}

/// This very binary (the gateway the lab starts is the same build as the lab).
func currentExecutable() throws -> String {
    do {
        return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    } catch {
        throw ValidationError("cannot find this executable through /proc/self/exe: \(error)")
    }
}
