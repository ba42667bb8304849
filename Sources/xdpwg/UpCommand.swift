import ArgumentParser
import Gateway

#if canImport(Glibc)
import Glibc
#endif

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Run the gateway in the foreground from a configuration file.",
        discussion: """
            Loads the XDP programs, creates the tenants' namespaces and interfaces, starts one \
            worker per uplink queue and serves until SIGINT or SIGTERM; then removes everything \
            it created. Logs go to standard error. SIGUSR1 prints every counter; SIGHUP (or \
            `xdpwg reload`) re-reads the file and applies what changed.
            """)

    @Option(name: .long, help: "The configuration file (see `xdpwg check-config`).")
    var config: String

    @Flag(name: .long, help: "Log debug messages too.")
    var verbose = false

    func run() throws {
        if verbose { Log.minimum = .debug }
        do throws(GatewayError) { try Gateway.checkPrivileges() } catch {
            Log.error("\(error)")
            throw ExitCode.failure
        }
        let configuration: GatewayConfiguration
        do throws(ConfigurationError) {
            configuration = try GatewayConfiguration.load(path: config)
        } catch {
            var err = StandardError()
            print(error.description, to: &err)
            throw ExitCode.failure
        }
        // Before any thread exists, so every worker inherits the mask and only the control
        // loop receives these signals.
        Gateway.blockHandledSignals()
        let gateway = Gateway(configuration: configuration, configurationPath: config)
        do throws(GatewayError) {
            try gateway.start()
        } catch {
            Log.error("\(error)")
            throw ExitCode.failure
        }
        gateway.runControlLoop()
        gateway.stop()
        Log.info("down: everything removed")
    }
}
