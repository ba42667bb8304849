import ArgumentParser
import Bench
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

    @OptionGroup var options: GatewayOptions

    func validate() throws {
        _ = try options.level()
    }

    func run() throws {
        try options.serve { Gateway(configuration: $0, configurationPath: $1) }
    }
}

/// `xdpwg bench-crypto-off-gateway`: the perf lab's crypto-off device (`CryptoOffGateway`),
/// `up` with the workers' AEAD replaced by a copy. Hidden, and a command of its own so that
/// `up` has no way to turn authentication off.
struct BenchCryptoOffGateway: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: CryptoOffGateway.commandName,
        abstract: "Run the perf lab's crypto-off gateway: `up` without encryption or authentication.",
        shouldDisplay: false)

    @OptionGroup var options: GatewayOptions

    func validate() throws {
        _ = try options.level()
    }

    func run() throws {
        try options.serve(CryptoOffGateway.make)
    }
}

/// What `up` and the perf lab's gateway command share: the options and the run.
struct GatewayOptions: ParsableArguments {
    @Option(name: .long, help: "The configuration file (see `xdpwg check-config`).")
    var config: String

    @Option(name: .long, help: ArgumentHelp(
        "The lowest level logged: trace, debug, info, notice, warning, error or critical (default: $XDPWG_LOG_LEVEL, else info).",
        valueName: "level"))
    var logLevel: String?

    @Flag(name: .long, help: "The same as --log-level debug.")
    var verbose = false

    /// The level from the options and the environment (`Log.resolveLevel` says which wins).
    func level() throws -> Log.Level {
        do throws(GatewayError) {
            return try Log.resolveLevel(option: logLevel, verbose: verbose,
                                        environment: getenv(Log.levelEnvironmentVariable).map { String(cString: $0) })
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// Loads the configuration, builds the gateway with `makeGateway`, starts it and runs
    /// the control loop until a signal stops it; then removes everything.
    func serve(_ makeGateway: (GatewayConfiguration, String) -> Gateway) throws {
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
        let gateway = makeGateway(configuration, config)
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
