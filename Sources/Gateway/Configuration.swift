import WireGuard

/// The gateway's configuration file, as parsed and validated: one [Gateway] section and one
/// or more tenants, each a WireGuard interface with its peers (see `ConfigurationParser.swift`
/// for the format). Every value here has been checked; nothing needs validating again.
public struct GatewayConfiguration: Sendable {
    public var gateway: GatewaySection
    public var tenants: [TenantConfiguration]

    public init(gateway: GatewaySection, tenants: [TenantConfiguration]) {
        self.gateway = gateway
        self.tenants = tenants
    }

    /// All tenants' peers together.
    public var peerCount: Int { tenants.reduce(0) { $0 + $1.peers.count } }
}

/// How the XDP program is attached to the uplink.
public enum XDPModeSetting: String, Sendable, CaseIterable {
    /// In the driver (the default): the fast path.
    case native
    /// In the kernel's generic hook (skb mode): works on any NIC, much slower.
    case generic
}

/// Which library runs the transport AEAD (ChaCha20-Poly1305) on the workers and the control
/// thread: `[Gateway] Crypto`. Whichever it is, it must pass its known-answer self-test at start.
public enum CryptoSetting: Sendable, Equatable, CaseIterable {
    /// The fastest backend that passes its self-test on this CPU, measured at start (the default).
    case auto
    /// This backend; the gateway does not start if it fails its self-test.
    case forced(AEADBackend)

    public static var allCases: [CryptoSetting] { [.auto] + AEADBackend.allCases.map { .forced($0) } }

    /// As written in the file.
    public var name: String {
        switch self {
        case .auto: "auto"
        case .forced(let backend): backend.name
        }
    }

    /// The setting spelled `name` (case-insensitive), if any.
    public init?(name: String) {
        guard let setting = CryptoSetting.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = setting
    }
}

/// The [Gateway] section: the uplink NIC and how to serve it.
public struct GatewaySection: Sendable {
    /// The NIC facing the peers.
    public var uplink: String
    /// The RX queues to serve, in the order given; nil means all of the uplink's queues.
    public var queues: [UInt32]?
    /// One core per queue (same order as `queues`); nil means cores on the uplink's NUMA node.
    public var cores: [Int]?
    public var xdpMode: XDPModeSetting
    /// Where to serve Prometheus metrics over HTTP (`/metrics`); nil: nowhere.
    public var metricsListen: Endpoint?
    /// The gateway's name: `xdpwg stats --name` and `xdpwg reload --name` find it by this
    /// (its files are /run/xdpwg/NAME.*). Two gateways on one machine need different names.
    public var name: String
    /// Room for tenants and peers, including those added later through `wg set` or a reload
    /// (the tables are sized once, at start); nil: twice what the file has, at least 64
    /// tenants and 1024 peers.
    public var maxTenants: Int?
    public var maxPeers: Int?
    /// The transport AEAD backend, or `auto`.
    public var crypto: CryptoSetting
    /// The line of the [Gateway] header.
    public var line: Int

    public static let defaultName = "xdpwg"
    public static let tenantLimit = 4096
    public static let peerLimit = 1 << 20

    public init(uplink: String, queues: [UInt32]? = nil, cores: [Int]? = nil, xdpMode: XDPModeSetting = .native,
                metricsListen: Endpoint? = nil, name: String = GatewaySection.defaultName, maxTenants: Int? = nil,
                maxPeers: Int? = nil, crypto: CryptoSetting = .auto, line: Int) {
        self.uplink = uplink
        self.queues = queues
        self.cores = cores
        self.xdpMode = xdpMode
        self.metricsListen = metricsListen
        self.name = name
        self.maxTenants = maxTenants
        self.maxPeers = maxPeers
        self.crypto = crypto
        self.line = line
    }

    /// How many tenants and peers the tables hold for a file with `tenants` and `peers`.
    public func capacity(tenants: Int, peers: Int) -> (tenants: Int, peers: Int) {
        (maxTenants ?? max(64, 2 * tenants), maxPeers ?? max(1024, 2 * peers))
    }
}

/// A [Tenant] section: one WireGuard interface (its own key, port and peers) whose inner side
/// lives in its own network namespace.
public struct TenantConfiguration: Sendable {
    /// Unique across the file; also the name `wg` knows the interface by (`wg show NAME`,
    /// `/var/run/wireguard/NAME.sock`).
    public var name: String
    public var privateKey: PrivateKey
    /// The UDP port peers send to; unique across tenants.
    public var listenPort: UInt16
    /// The tenant's network namespace (created if absent).
    public var namespace: String
    /// The inner interface's addresses as written, host part included (10.10.0.1/24).
    public var addresses: [IPPrefix]
    /// The inner interface's name inside the namespace (defaults to `name`).
    public var interfaceName: String
    public var peers: [PeerConfiguration]
    /// The line of the [Tenant] header.
    public var line: Int

    public init(name: String, privateKey: PrivateKey, listenPort: UInt16, namespace: String,
                addresses: [IPPrefix] = [], interfaceName: String? = nil, peers: [PeerConfiguration] = [],
                line: Int) {
        self.name = name
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.namespace = namespace
        self.addresses = addresses
        self.interfaceName = interfaceName ?? name
        self.peers = peers
        self.line = line
    }
}

/// A [Peer] section, belonging to the [Tenant] above it.
public struct PeerConfiguration: Sendable {
    public var publicKey: PublicKey
    public var presharedKey: PresharedKey?
    /// Networks the peer may send from and is routed to, host bits cleared (as `wg` stores
    /// them), no prefix twice, none shared with another peer of the tenant.
    public var allowedIPs: [IPPrefix]
    /// Where to send before the peer has been heard from; afterwards learned from
    /// authenticated packets.
    public var endpoint: Endpoint?
    /// Seconds between keepalives when idle; 0 is off.
    public var persistentKeepalive: UInt16
    /// The line of the [Peer] header.
    public var line: Int

    public init(publicKey: PublicKey, presharedKey: PresharedKey? = nil, allowedIPs: [IPPrefix] = [],
                endpoint: Endpoint? = nil, persistentKeepalive: UInt16 = 0, line: Int) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.allowedIPs = allowedIPs
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.line = line
    }
}

/// A UDP endpoint: an IP address (never a host name) and a port.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Why a text form of an endpoint was rejected (the parser turns these into messages).
    public enum ParseError: Error, Equatable, Sendable {
        /// Not `a.b.c.d:port` or `[v6]:port`.
        case malformed
        /// The host part looks like a DNS name, which is not resolved.
        case hostName
        /// The port is not a number from 1 to 65535.
        case invalidPort
    }

    /// Parses "192.0.2.1:51820" or "[2001:db8::1]:51820", as `wg` prints endpoints. Host
    /// names are refused: a gateway must not depend on DNS to start, nor block on it.
    public init(parsing text: some StringProtocol) throws(ParseError) {
        let s = Substring(text)
        let host: Substring
        let portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else {
                throw .malformed
            }
            host = s[s.index(after: s.startIndex)..<close]
            portText = s[s.index(close, offsetBy: 2)...]
            guard host.contains(":") else { throw .malformed }      // brackets are for IPv6 only
        } else {
            guard let colon = s.lastIndex(of: ":") else {
                throw s.contains(where: \.isLetter) ? .hostName : .malformed
            }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
            // An IPv6 address needs brackets, else its last group would read as the port.
            guard !host.contains(":") else { throw .malformed }
        }
        guard let address = try? IPAddress(parsing: host) else {
            // An IPv4 address has no letters: letters, digits, dots and dashes make a host name,
            // which deserves its own message ("vpn.example.com:51820").
            let isName = host.contains(where: \.isLetter)
                && host.allSatisfy { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }
            throw isName ? .hostName : .malformed
        }
        guard let port = ConfigurationParser.decimal(portText, max: 65535), port >= 1 else { throw .invalidPort }
        self.init(address: address, port: UInt16(port))
    }

    /// "192.0.2.1:51820" or "[2001:db8::1]:51820".
    public var description: String {
        address.isV4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}

/// One problem found in a configuration file.
public struct ConfigurationProblem: Sendable, Equatable, CustomStringConvertible {
    public var fileName: String
    /// 1-based; nil for a problem of the whole file (it cannot be opened, a section is missing).
    public var line: Int?
    /// What is wrong. Never contains key material.
    public var message: String

    public init(fileName: String, line: Int?, message: String) {
        self.fileName = fileName
        self.line = line
        self.message = message
    }

    /// "FILE:LINE: MESSAGE", or "FILE: MESSAGE" without a line.
    public var description: String {
        if let line { "\(fileName):\(line): \(message)" } else { "\(fileName): \(message)" }
    }
}

/// Everything wrong with a configuration file, all at once.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigurationProblem]

    public init(problems: [ConfigurationProblem]) { self.problems = problems }

    /// One problem per line.
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
