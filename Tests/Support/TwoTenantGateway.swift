import Foundation
import Lab
import WireGuard

/// The integration tests' usual set-up: a `GatewayTopology` (an "internet" namespace with one
/// wireguard-go peer per tenant, a 2-queue veth uplink, the gateway's namespace) and the two
/// tenants `xdpwg up` serves for those peers:
///
///     tenant A  ADDRESS_A/24, port 51820: wireguard-go peer A (uplink queue 0)
///     tenant B  ADDRESS_B/24, port 51821: wireguard-go peer B (uplink queue 1)
///
/// `overlapping` gives both tenants the same addresses (10.10.0.1/24, peers at 10.10.1.2: the
/// isolation case); `distinct` gives tenant B 10.20.0.1/24 (its peer at 10.20.1.2) instead, so that "another tenant's
/// address" means one thing. Names carry a per-test prefix and the process ID, so runs never
/// collide; `topology.close()` removes every namespace, the gateway's included.
public final class TwoTenantGateway: @unchecked Sendable {
    public struct Tenant: Sendable {
        /// The configuration's tenant name (also the interface inside its namespace).
        public let name: String
        public let namespaceName: String
        public let key: PrivateKey
        public let port: UInt16
        /// The tenant's own address in its namespace (a /24).
        public let address: String
        /// The tenant's wireguard-go peer in the internet namespace.
        public let peer: GatewayTopology.Peer

        /// This tenant's `[Tenant]` section (`listenPort` overrides its port) with its
        /// wireguard-go peer: that peer's endpoint too when `peerEndpoint` (so the gateway can
        /// initiate), `allowedIPs` instead of the peer's inner address, `peerLines` appended;
        /// then `extraPeers` (whole `[Peer]` sections).
        public func section(listenPort: String? = nil, peerEndpoint: Bool = false, allowedIPs: String? = nil,
                            peerLines: [String] = [], extraPeers: [String] = []) -> String {
            var lines = ["[Tenant]", "Name = \(name)", "PrivateKey = \(key.secret.base64ForDisplay)",
                         "ListenPort = \(listenPort ?? String(port))", "Namespace = \(namespaceName)",
                         "Address = \(address)/24", ""]
            lines += ["[Peer]", "PublicKey = \(peer.publicKey)", "AllowedIPs = \(allowedIPs ?? peer.spec.innerAddress)"]
            if peerEndpoint { lines.append("Endpoint = \(peer.endpoint)") }
            lines += peerLines
            return ([lines.joined(separator: "\n")] + extraPeers).joined(separator: "\n\n")
        }
    }

    public let topology: GatewayTopology
    /// The gateway's `Name` (its stats segment and control socket).
    public let name: String
    public let a: Tenant
    public let b: Tenant

    /// Both tenants at 10.10.0.1/24, both peers at 10.10.1.2.
    public static func overlapping(prefix: String) throws -> TwoTenantGateway {
        try TwoTenantGateway(prefix: prefix, addresses: ("10.10", "10.10"))
    }

    /// Tenant A at 10.10.0.1/24 with its peer at 10.10.1.2; tenant B at 10.20.0.1/24 with its
    /// peer at 10.20.1.2.
    public static func distinct(prefix: String) throws -> TwoTenantGateway {
        try TwoTenantGateway(prefix: prefix, addresses: ("10.10", "10.20"))
    }

    private init(prefix: String, addresses: (a: String, b: String)) throws {
        topology = try GatewayTopology(peers: [
            .init(tenant: "a", innerAddress: "\(addresses.a).1.2/32", tenantRange: "\(addresses.a).0.0/24", queue: 0),
            .init(tenant: "b", innerAddress: "\(addresses.b).1.2/32", tenantRange: "\(addresses.b).0.0/24", queue: 1),
        ])
        let tag = getpid() % 100_000
        name = "\(prefix)\(tag)"
        a = Tenant(name: "\(prefix)a\(tag)", namespaceName: topology.namespaceName(tag: "\(prefix)a"),
                   key: .generate(), port: 51820, address: "\(addresses.a).0.1", peer: topology.peers[0])
        b = Tenant(name: "\(prefix)b\(tag)", namespaceName: topology.namespaceName(tag: "\(prefix)b"),
                   key: .generate(), port: 51821, address: "\(addresses.b).0.1", peer: topology.peers[1])
    }

    /// A whole configuration: the `[Gateway]` section (the topology's uplink unless `uplink`,
    /// the name, then `gatewayLines`), then `tenants` (sections from `Tenant.section`).
    public func configuration(writtenBy test: String, uplink: String? = nil, gatewayLines: [String] = [],
                              tenants: [String]) -> String {
        let gateway = (["# written by \(test)", "[Gateway]", "Uplink = \(uplink ?? topology.uplinkName)", "Name = \(name)"]
                       + gatewayLines).joined(separator: "\n")
        return ([gateway] + tenants).joined(separator: "\n\n") + "\n"
    }

    /// The usual configuration: both tenants, peer B's endpoint known (tenant B can speak
    /// first), peer A's learned from its handshake.
    public func configuration(writtenBy test: String, gatewayLines: [String] = [],
                              extraPeersOfA: [String] = [], extraPeersOfB: [String] = []) -> String {
        configuration(writtenBy: test, gatewayLines: gatewayLines, tenants: [
            a.section(extraPeers: extraPeersOfA), b.section(peerEndpoint: true, extraPeers: extraPeersOfB),
        ])
    }

    /// `xdpwg up` with `configuration` (and `environment` added to the test's), waited for
    /// until it is up; stopped by `topology.close()` if the test has not stopped it.
    public func start(_ configuration: String, arguments: [String] = [],
                      environment: [String: String] = [:]) throws -> GatewayProcess {
        let gateway = try GatewayProcess(executable: try Command.xdpwg, in: topology.gateway,
                                         configuration: configuration, arguments: arguments, environment: environment)
        topology.atClose { gateway.stop() }
        return gateway
    }

    /// The tenant's namespace (the gateway makes it; the topology removes it on close).
    public func namespace(_ tenant: Tenant) -> NetworkNamespace {
        topology.adoptNamespace(named: tenant.namespaceName)
    }

    /// Tells each wireguard-go peer about its tenant: public key, endpoint, the tenant's /24.
    public func configurePeers(presharedKey: String? = nil) throws {
        for (index, tenant) in [a, b].enumerated() {
            try topology.configurePeer(index, gatewayPublicKey: tenant.key.publicKey.description,
                                       endpoint: "\(GatewayTopology.gatewayAddress):\(tenant.port)",
                                       allowedIPs: tenant.peer.spec.tenantRange, presharedKey: presharedKey)
        }
    }

    /// A `[Peer]` section.
    public static func peerSection(_ publicKey: PublicKey, allowedIPs: String, comment: String? = nil) -> String {
        ((comment.map { ["# \($0)"] } ?? []) + ["[Peer]", "PublicKey = \(publicKey)", "AllowedIPs = \(allowedIPs)"])
            .joined(separator: "\n")
    }
}
