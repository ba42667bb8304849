import ArgumentParser
import Gateway

/// `xdpwg check-config FILE`: parse and validate a configuration file without touching the
/// system, for editors, deploy scripts and CI.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a gateway configuration file and report every problem in it.",
        discussion: """
            Prints "FILE: OK: N tenants, M peers, crypto C" and exits 0 when the file is valid; otherwise \
            prints each problem as FILE:LINE: MESSAGE on standard error and exits 1. The file \
            holds private keys and is refused when its group or others may read or write it.
            """)

    @Argument(help: "The configuration file.")
    var file: String

    func run() throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration.load(path: file)
        } catch {
            var err = StandardError()
            print(error.description, to: &err)
            throw ExitCode.failure
        }
        let tenants = configuration.tenants.count, peers = configuration.peerCount
        print("\(file): OK: \(tenants) \(tenants == 1 ? "tenant" : "tenants"), \(peers) \(peers == 1 ? "peer" : "peers"), "
              + "crypto \(configuration.gateway.crypto.name)")
    }
}
