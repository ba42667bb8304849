import WireGuard

/// What changes between the running configuration and a new one, tenant by tenant and peer
/// by peer: what a reload (or a `wg set`) must do, and nothing more, so that everything
/// unchanged keeps running untouched (its sessions, counters and traffic).
public struct ConfigurationDiff: Sendable {
    /// Tenants to remove (by name), add, and rebuild (removed then added again, because
    /// something only a new namespace link can change did: namespace, addresses, interface).
    public var removedTenants: [String] = []
    public var addedTenants: [TenantConfiguration] = []
    public var rebuiltTenants: [TenantConfiguration] = []
    /// Tenants changed in place.
    public var changedTenants: [TenantDiff] = []

    public var isEmpty: Bool {
        removedTenants.isEmpty && addedTenants.isEmpty && rebuiltTenants.isEmpty && changedTenants.isEmpty
    }

    /// One line per change, for the log and `xdpwg reload` (no key material: peers by
    /// their short public key).
    public var summary: [String] {
        var lines: [String] = []
        for name in removedTenants { lines.append("tenant \(name): removed") }
        for t in addedTenants { lines.append("tenant \(t.name): added with \(t.peers.count) peer(s)") }
        for t in rebuiltTenants { lines.append("tenant \(t.name): rebuilt (namespace, address or interface changed)") }
        for t in changedTenants { lines.append(contentsOf: t.summary) }
        return lines
    }
}

/// The in-place changes of one tenant.
public struct TenantDiff: Sendable {
    public var name: String
    /// The tenant as it will be.
    public var new: TenantConfiguration
    public var privateKeyChanged = false
    public var listenPortChanged = false
    public var removedPeers: [PublicKey] = []
    public var addedPeers: [PeerConfiguration] = []
    public var changedPeers: [PeerDiff] = []

    public var isEmpty: Bool {
        !privateKeyChanged && !listenPortChanged && removedPeers.isEmpty && addedPeers.isEmpty && changedPeers.isEmpty
    }

    /// Whether the tenant's route (AllowedIPs → peers) must be published again.
    public var routesChanged: Bool {
        !removedPeers.isEmpty || !addedPeers.isEmpty || changedPeers.contains { $0.allowedIPsChanged }
    }

    var summary: [String] {
        var lines: [String] = []
        if privateKeyChanged { lines.append("tenant \(name): new private key (every session starts over)") }
        if listenPortChanged { lines.append("tenant \(name): listen port \(new.listenPort)") }
        for key in removedPeers { lines.append("tenant \(name): peer \(key.shortName) removed") }
        for p in addedPeers { lines.append("tenant \(name): peer \(p.publicKey.shortName) added") }
        for p in changedPeers {
            var what: [String] = []
            if p.allowedIPsChanged { what.append("allowed IPs") }
            if p.endpointChanged { what.append("endpoint") }
            if p.keepaliveChanged { what.append("persistent keepalive") }
            if p.presharedKeyChanged { what.append("preshared key") }
            lines.append("tenant \(name): peer \(p.new.publicKey.shortName) changed: \(what.joined(separator: ", "))")
        }
        return lines
    }
}

/// The changes of one peer that keeps its public key (and so its session).
public struct PeerDiff: Sendable {
    public var old: PeerConfiguration
    public var new: PeerConfiguration
    public var allowedIPsChanged: Bool { Set(old.allowedIPs) != Set(new.allowedIPs) }
    public var endpointChanged: Bool { old.endpoint != new.endpoint }
    public var keepaliveChanged: Bool { old.persistentKeepalive != new.persistentKeepalive }
    public var presharedKeyChanged: Bool { old.presharedKey != new.presharedKey }
    public var isEmpty: Bool { !allowedIPsChanged && !endpointChanged && !keepaliveChanged && !presharedKeyChanged }
}

extension GatewayConfiguration {
    /// The changes that turn this (running) configuration into `new`. The [Gateway]
    /// section cannot change while running (the uplink, its queues and cores, the tables'
    /// sizes are fixed at start): a change there is refused with its line, as is a new file
    /// that needs more room than the tables have.
    public func diff(to new: GatewayConfiguration, fileName: String) throws(ConfigurationError) -> ConfigurationDiff {
        var problems: [ConfigurationProblem] = []
        func refuse(_ line: Int, _ what: String) {
            problems.append(ConfigurationProblem(fileName: fileName, line: line,
                                                 message: "\(what) cannot change while the gateway runs; restart it"))
        }
        let g = gateway, n = new.gateway
        if g.uplink != n.uplink { refuse(n.line, "[Gateway] Uplink") }
        if g.queues != n.queues { refuse(n.line, "[Gateway] Queues") }
        if g.cores != n.cores { refuse(n.line, "[Gateway] Cores") }
        if g.xdpMode != n.xdpMode { refuse(n.line, "[Gateway] XDPMode") }
        if g.metricsListen != n.metricsListen { refuse(n.line, "[Gateway] MetricsListen") }
        if g.name != n.name { refuse(n.line, "[Gateway] Name") }
        if g.maxTenants != n.maxTenants { refuse(n.line, "[Gateway] MaxTenants") }
        if g.maxPeers != n.maxPeers { refuse(n.line, "[Gateway] MaxPeers") }
        // The backend is chosen and self-tested once, before the workers start.
        if g.crypto != n.crypto { refuse(n.line, "[Gateway] Crypto") }
        let capacity = g.capacity(tenants: tenants.count, peers: peerCount)
        if new.tenants.count > capacity.tenants {
            problems.append(ConfigurationProblem(fileName: fileName, line: nil, message:
                "\(new.tenants.count) tenants do not fit the \(capacity.tenants) the gateway has room for "
                + "(MaxTenants, fixed at start); restart it with a larger MaxTenants"))
        }
        if new.peerCount > capacity.peers {
            problems.append(ConfigurationProblem(fileName: fileName, line: nil, message:
                "\(new.peerCount) peers do not fit the \(capacity.peers) the gateway has room for "
                + "(MaxPeers, fixed at start); restart it with a larger MaxPeers"))
        }
        guard problems.isEmpty else { throw ConfigurationError(problems: problems) }

        var diff = ConfigurationDiff()
        let oldByName = Dictionary(uniqueKeysWithValues: tenants.map { ($0.name, $0) })
        let newNames = Set(new.tenants.map(\.name))
        diff.removedTenants = tenants.map(\.name).filter { !newNames.contains($0) }
        for t in new.tenants {
            guard let old = oldByName[t.name] else {
                diff.addedTenants.append(t)
                continue
            }
            if old.namespace != t.namespace || old.addresses != t.addresses || old.interfaceName != t.interfaceName {
                diff.rebuiltTenants.append(t)
                continue
            }
            let change = old.diff(to: t)
            if !change.isEmpty { diff.changedTenants.append(change) }
        }
        return diff
    }
}

extension TenantConfiguration {
    /// The in-place changes from this tenant to `new` (same name, namespace and link).
    public func diff(to new: TenantConfiguration) -> TenantDiff {
        var d = TenantDiff(name: name, new: new)
        d.privateKeyChanged = privateKey != new.privateKey
        d.listenPortChanged = listenPort != new.listenPort
        let oldPeers = Dictionary(uniqueKeysWithValues: peers.map { ($0.publicKey, $0) })
        let newKeys = Set(new.peers.map(\.publicKey))
        d.removedPeers = peers.map(\.publicKey).filter { !newKeys.contains($0) }
        for p in new.peers {
            if let old = oldPeers[p.publicKey] {
                let change = PeerDiff(old: old, new: p)
                if !change.isEmpty { d.changedPeers.append(change) }
            } else {
                d.addedPeers.append(p)
            }
        }
        return d
    }
}
