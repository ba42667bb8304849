import CXDPWG
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import WireGuard

/// What a tenant's namespace should look like: a veth end that behaves like a `wg`
/// interface (the tenant's addresses, NOARP, a route per peer AllowedIP, the tunnel MTU).
public struct TenantLinkSpec: Sendable {
    /// The `ip netns` name of the tenant's namespace; created if absent.
    public var namespace: String
    /// The veth end in the gateway's namespace: the tenant XDP program and AF_XDP sockets
    /// attach here.
    public var hostName: String
    /// The veth end inside the tenant's namespace (what the tenant sees as its wg interface).
    public var innerName: String
    /// RX and TX queues on both ends. Attaching XDP to the host end needs at least as many
    /// RX queues there as the inner end has TX queues; equal counts satisfy that.
    public var queues: Int
    /// Interface addresses of the inner end with their prefix lengths ("10.0.0.1/24").
    public var addresses: [(address: IPAddress, prefixLength: Int)]
    /// A route through the inner end per prefix (the tenant's peers' AllowedIPs).
    public var routes: [IPPrefix]
    /// MTU of both ends (WireGuard's default is 1420).
    public var mtu: Int

    public init(namespace: String, hostName: String, innerName: String, queues: Int = 1,
                addresses: [(address: IPAddress, prefixLength: Int)], routes: [IPPrefix], mtu: Int = 1420) {
        self.namespace = namespace
        self.hostName = hostName
        self.innerName = innerName
        self.queues = queues
        self.addresses = addresses
        self.routes = routes
        self.mtu = mtu
    }

    /// Rejects names and numbers the kernel would refuse (or misread), before anything is
    /// created.
    public func validate() throws(SystemError) {
        try Names.validateNamespace(namespace)
        try Names.validateInterface(hostName, role: "host-side veth")
        try Names.validateInterface(innerName, role: "tenant-side veth")
        guard (1...TenantLinkSpec.maxQueues).contains(queues) else {
            throw .invalidArgument("a tenant link needs 1 to \(TenantLinkSpec.maxQueues) queues, not \(queues)")
        }
        let hasV6 = addresses.contains { !$0.address.isV4 } || routes.contains { !$0.address.isV4 }
        let minimum = hasV6 ? 1280 : 68 // IPv6 requires 1280 (RFC 8200), IPv4 68 (RFC 791)
        guard (minimum...65535).contains(mtu) else {
            throw .invalidArgument("MTU \(mtu) of tenant link '\(innerName)' is outside \(minimum)...65535")
        }
        for entry in addresses where !(0...entry.address.bitCount).contains(entry.prefixLength) {
            throw .invalidArgument("address \(entry.address)/\(entry.prefixLength) has an invalid prefix length")
        }
    }

    /// veth's limit on queues (the kernel refuses more than 4096; far more than cores).
    public static let maxQueues = 4096
}

/// A tenant's veth pair and namespace, set up the way wg-quick sets up an interface, once, at
/// startup (never on the data path): over rtnetlink, the namespace made as `ip netns add`
/// makes one. No external program is run.
///
/// `destroy()` removes what `create` made; nothing is removed on deinit, because the
/// gateway decides when a tenant goes away (and a crash must not leave it half-removed
/// either: the next `create` replaces a stale host end of the same name).
public final class TenantLink: Sendable {
    public let spec: TenantLinkSpec
    /// ifindex of the host end, in the gateway's namespace.
    public let hostIndex: Int32
    public let hostMAC: EthernetAddress
    /// The destination MAC of frames sent into the namespace (the inner end drops frames
    /// addressed to another unicast MAC as "not for this host").
    public let innerMAC: EthernetAddress
    /// Whether `create` made the namespace, or adopted one an earlier run of xdpwg made (and
    /// so `destroy` removes it).
    public let createdNamespace: Bool
    /// What `create` found left behind by an earlier run (one that crashed or was killed) and
    /// removed or adopted, one sentence each, for the log.
    public let reclaimed: [String]
    private let destroyed = Mutex(false)

    /// The alias of the inner end when xdpwg made the namespace. A namespace outlives a
    /// killed gateway; the next `create` finds the mark on the stale inner end and adopts the
    /// namespace as its own (removed at exit), where one the operator made stays theirs.
    public static let ownershipMark = "xdpwg: namespace made by xdpwg"

    /// How error messages name the gateway's namespace (the calling thread's).
    static let gatewayPlace = "the gateway's network namespace"

    private init(spec: TenantLinkSpec, hostIndex: Int32, hostMAC: EthernetAddress, innerMAC: EthernetAddress,
                 createdNamespace: Bool, reclaimed: [String]) {
        self.spec = spec
        self.hostIndex = hostIndex
        self.hostMAC = hostMAC
        self.innerMAC = innerMAC
        self.createdNamespace = createdNamespace
        self.reclaimed = reclaimed
    }

    /// Creates the namespace (if absent) and the veth pair, and configures the inner end.
    /// The host end lives in the calling thread's namespace. On failure, whatever this call
    /// created is removed again before the error is thrown.
    public static func create(_ spec: TenantLinkSpec) throws(SystemError) -> TenantLink {
        try spec.validate()
        let namespacePath = NetworkNamespaceFile.path(of: spec.namespace)
        let host = try RouteNetlink() // the calling thread's namespace, where the host end goes

        var createdNamespace = false
        if !SystemFiles.exists(namespacePath) {
            do throws(SystemError) {
                try NetworkNamespaceFile.create(spec.namespace)
                createdNamespace = true
            } catch {
                // Someone else created it in the meantime: use theirs, as if it had existed.
                guard SystemFiles.exists(namespacePath) else { throw error }
            }
        }
        var createdPair = false
        var reclaimed: [String] = []
        do throws(SystemError) {
            let inner = try RouteNetlink(namespace: spec.namespace)
            let innerPlace = "network namespace '\(spec.namespace)'"
            // The inner end first: deleting a stale host end would take it, and our mark, along.
            if !createdNamespace, let stale = try removeStaleLink(named: spec.innerName, netlink: inner, place: innerPlace) {
                reclaimed.append("removed the stale veth '\(spec.innerName)' in \(innerPlace)")
                if stale.alias == ownershipMark {
                    createdNamespace = true
                    reclaimed.append("adopted network namespace '\(spec.namespace)', which an earlier run of xdpwg "
                                     + "made (it is removed at exit)")
                }
            }
            if try removeStaleLink(named: spec.hostName, netlink: host, place: gatewayPlace) != nil {
                reclaimed.append("removed the stale veth '\(spec.hostName)' in \(gatewayPlace)")
            }
            let namespaceFD = open(namespacePath, O_RDONLY | O_CLOEXEC)
            guard namespaceFD >= 0 else { throw .syscall(operation: "open(\(namespacePath))", errno: errno) }
            defer { close(namespaceFD) }
            try host.createVeth(name: spec.hostName, peer: spec.innerName, queues: spec.queues, mtu: spec.mtu,
                                peerNamespaceFD: namespaceFD, peerPlace: innerPlace)
            createdPair = true
            let hostLink = try host.link(named: spec.hostName)
            let innerLink = try inner.link(named: spec.innerName)
            try configureInner(spec, netlink: inner, index: innerLink.index, place: innerPlace)
            try configureHost(spec, netlink: host)

            guard let hostMAC = hostLink.address.flatMap({ EthernetAddress(bytes: $0) }),
                  let innerMAC = innerLink.address.flatMap({ EthernetAddress(bytes: $0) }) else {
                throw SystemError.malformed("veth '\(spec.hostName)' or '\(spec.innerName)' reports no Ethernet address")
            }
            if createdNamespace {
                try inner.setAlias(name: spec.innerName, ownershipMark, place: innerPlace)
            }
            return TenantLink(spec: spec, hostIndex: hostLink.index, hostMAC: hostMAC, innerMAC: innerMAC,
                              createdNamespace: createdNamespace, reclaimed: reclaimed)
        } catch {
            if createdPair, let hostEnd = try? host.link(named: spec.hostName) {
                _ = try? host.deleteLink(index: hostEnd.index, name: spec.hostName, place: gatewayPlace)
            }
            if createdNamespace { _ = try? NetworkNamespaceFile.delete(spec.namespace) }
            throw error
        }
    }

    /// Removes the veth pair (deleting the host end removes both) and the namespace if
    /// `create` made it. Safe to call more than once; a host end that is gone already, or
    /// that now belongs to another link of the same name, is left alone.
    public func destroy() throws(SystemError) {
        let alreadyDestroyed = destroyed.withLock { (done: inout Bool) -> Bool in
            defer { done = true }
            return done
        }
        guard !alreadyDestroyed else { return }
        try removeHostEnd()
        if createdNamespace && namespaceExists {
            try NetworkNamespaceFile.delete(spec.namespace)
        }
    }

    /// Whether the tenant's namespace still has its name (`ip netns delete` removes it at
    /// once, even while processes keep the namespace itself alive).
    public var namespaceExists: Bool { SystemFiles.exists(NetworkNamespaceFile.path(of: spec.namespace)) }

    /// The tenant's namespace is gone (deleted while the gateway runs): removes the host end
    /// if it is still there (a namespace deleted by name lives on while processes hold it,
    /// and so does the pair), and forgets the namespace, so that nothing of that name is ever
    /// removed by this link again: a namespace made later under the name is someone else's.
    /// Afterwards `destroy()` does nothing.
    public func abandon() throws(SystemError) {
        let alreadyDestroyed = destroyed.withLock { (done: inout Bool) -> Bool in
            defer { done = true }
            return done
        }
        guard !alreadyDestroyed else { return }
        try removeHostEnd()
    }

    /// Deletes the host end (which takes the inner end with it), if it is still ours.
    private func removeHostEnd() throws(SystemError) {
        let netlink = try RouteNetlink()
        do {
            let host = try netlink.link(named: spec.hostName)
            if host.index == hostIndex {
                try netlink.deleteLink(index: hostIndex, name: spec.hostName, place: TenantLink.gatewayPlace)
            }
        } catch .noSuchInterface {
            // Already gone (deleted by hand, or with the namespace of its peer).
        } catch .netlink(_, let e, _) where e == ENODEV {
            // Gone between the lookup and the deletion.
        }
    }

    /// Brings the namespace's routes through the inner interface in line with a new set of
    /// AllowedIPs (a peer added, removed or changed while running): routes of prefixes no
    /// longer allowed go, new ones come.
    public func updateRoutes(from old: [IPPrefix], to new: [IPPrefix]) throws(SystemError) {
        let netlink = try RouteNetlink(namespace: spec.namespace)
        let place = "network namespace '\(spec.namespace)'"
        let index = try netlink.link(named: spec.innerName).index
        let oldSet = Set(old.map(\.masked)), newSet = Set(new.map(\.masked))
        for prefix in new.map(\.masked) where !oldSet.contains(prefix) {
            try netlink.replaceRoute(prefix, interfaceIndex: index, interfaceName: spec.innerName, place: place)
        }
        for prefix in old.map(\.masked) where !newSet.contains(prefix) {
            // Gone already (the operator removed it, or the address's own route) is fine.
            _ = try? netlink.deleteRoute(prefix, interfaceIndex: index, interfaceName: spec.innerName, place: place)
        }
    }

    // MARK: Steps

    /// A link left by a crashed run is deleted, but only if it is a veth: a name clash with
    /// any other kind of interface is the operator's to resolve, not ours to delete. Returns
    /// what was deleted (nil: nothing was there).
    @discardableResult
    private static func removeStaleLink(named name: String, netlink: RouteNetlink,
                                        place: String) throws(SystemError) -> LinkAttributes? {
        let link: LinkAttributes
        do {
            link = try netlink.link(named: name)
        } catch .noSuchInterface {
            return nil
        }
        guard link.kind == "veth" else {
            throw .invalidArgument("'\(name)' already exists in \(place) and is not a veth (it is "
                + "\(link.kind.map { "a \($0)" } ?? "a physical device")); choose another name for the tenant link")
        }
        try netlink.deleteLink(index: link.index, name: name, place: place)
        return link
    }

    private static func configureInner(_ spec: TenantLinkSpec, netlink: RouteNetlink, index: Int32,
                                       place: String) throws(SystemError) {
        // Like a wg interface: no link-local address (so no router solicitations or MLD
        // reports leak to the gateway), no ARP/ND: the kernel then addresses every frame to
        // the link's own MAC, and the host end's XDP program takes them all regardless.
        try netlink.configureAsTunnel(name: spec.innerName, mtu: spec.mtu, place: place)
        for entry in spec.addresses {
            try netlink.addAddress(entry.address, prefixLength: entry.prefixLength, interfaceIndex: index,
                                   interfaceName: spec.innerName, place: place)
        }
        // The tenant's kernel must write complete checksums: with transmit checksum offload a
        // veth leaves TCP/UDP checksums partial (for a receiver on this host to trust), but
        // the gateway encrypts the frame exactly as the XDP program sees it and the peer's
        // kernel would drop it. Off, the kernel computes them in software.
        try ThreadNetworkNamespace.run(path: ThreadNetworkNamespace.path(named: spec.namespace)) { () throws(SystemError) in
            let rc = cxdpwg_set_transmit_checksumming(spec.innerName, 0)
            if rc != 0 { throw .syscall(operation: "ethtool: tx checksumming off on \(spec.innerName)", errno: rc) }
        }.get()
        try netlink.setUp(name: spec.innerName, place: place)
        try netlink.setUp(name: "lo", place: place)
        // The kernel refuses a prefix with host bits set (masked there); "replace" tolerates
        // the route an address already implies.
        for prefix in spec.routes {
            try netlink.replaceRoute(prefix, interfaceIndex: index, interfaceName: spec.innerName, place: place)
        }
    }

    private static func configureHost(_ spec: TenantLinkSpec, netlink: RouteNetlink) throws(SystemError) {
        // No IPv6 on the host end: it has no addresses and must not send ND or MLD into the
        // tenant's namespace. The sysctl exists only when IPv6 is enabled in the kernel.
        let sysctl = "/proc/sys/net/ipv6/conf/\(spec.hostName)/disable_ipv6"
        if SystemFiles.exists(sysctl) {
            try SystemFiles.write(sysctl, "1")
        }
        try netlink.setUp(name: spec.hostName, mtu: spec.mtu, place: gatewayPlace)
    }
}
