import Engine
@_spi(PerfLab) import Gateway

/// The perf lab's crypto-off device (`xdpwg-crypto-off`): the gateway `xdpwg up` builds, with
/// the workers' AEAD replaced by a copy (`TransportCrypto.off`), for the data plane's
/// forwarding ceiling without the cipher. Packets are NOT authenticated. It runs as its own
/// hidden subcommand, never as an option of `up`, so the product cannot be started this way
/// by a flag or a configuration file; the gateway warns loudly when it starts.
public enum CryptoOffGateway {
    /// The hidden subcommand that runs it: `xdpwg bench-crypto-off-gateway --config FILE`,
    /// with `up`'s other options.
    public static let commandName = "bench-crypto-off-gateway"

    /// The gateway for `configuration`, crypto off; started and run as `up` runs its own.
    public static func make(configuration: GatewayConfiguration, configurationPath: String?) -> Gateway {
        let gateway = Gateway(configuration: configuration, configurationPath: configurationPath)
        gateway.transportCrypto = .off
        return gateway
    }
}
