import ArgumentParser
import Gateway
import WireGuard

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
            it created. Logs go to standard error, one line per message (LEVEL message \
            key=value…), at the level of --log-level, else of the XDPWG_LOG_LEVEL environment \
            variable, else info. SIGUSR1 prints every counter; SIGHUP (or `xdpwg reload`) \
            re-reads the file and applies what changed.
            """)

    @Option(name: .long, help: "The configuration file (see `xdpwg check-config`).")
    var config: String

    @Option(name: .long, help: ArgumentHelp(
        "The lowest level logged: trace, debug, info, notice, warning, error or critical (default: $XDPWG_LOG_LEVEL, else info).",
        valueName: "level"))
    var logLevel: String?

    @Flag(name: .long, help: "The same as --log-level debug.")
    var verbose = false

    /// The perf lab's crypto-off mode (the forwarding ceiling without the cipher): packets are
    /// neither encrypted nor authenticated. Hidden, and deliberately not a configuration key.
    @Flag(name: .long, help: .hidden)
    var benchCryptoOff = false

    func validate() throws {
        _ = try level()
    }

    /// The level from the options and the environment (`Log.resolveLevel` says which wins).
    private func level() throws -> Log.Level {
        do throws(GatewayError) {
            return try Log.resolveLevel(option: logLevel, verbose: verbose,
                                        environment: getenv(Log.levelEnvironmentVariable).map { String(cString: $0) })
        } catch {
            throw ValidationError(error.description)
        }
    }

    func run() throws {
        bootstrapLogging(level: try level())
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
        if benchCryptoOff { gateway.transportCrypto = .off }
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
