import Synchronization
import WireGuard

/// What the data path knows about one tenant: its routing table (AllowedIPs → peer handle)
/// and the MACs of its veth pair. Immutable once published: a change publishes a new one.
public struct TenantRoute: Sendable {
    public var listenPort: UInt16
    public var allowedIPs: AllowedIPs
    /// The host end's MAC (our frames' source) and the namespace end's (their destination).
    public var hostMAC: EthernetAddress
    public var innerMAC: EthernetAddress
    /// The tenant interface's MTU: plaintext is padded up to it, never past it.
    public var mtu: Int

    public init(listenPort: UInt16, allowedIPs: AllowedIPs, hostMAC: EthernetAddress,
                innerMAC: EthernetAddress, mtu: Int) {
        self.listenPort = listenPort
        self.allowedIPs = allowedIPs
        self.hostMAC = hostMAC
        self.innerMAC = innerMAC
        self.mtu = mtu
    }
}

/// Everything the workers share with the control plane: the keypair and peer tables, the
/// tenants' routes and the port map (the control plane publishes, workers read), and the
/// epochs that make retirement safe.
///
/// Tenants live in numbered slots (`tenantCapacity` of them). A slot holds a pointer to an
/// immutable `TenantRoute`, or nothing; a change (AllowedIPs, a new peer) publishes a new
/// route and retires the old one (`Retired.tenantRoute`), so workers never see a table
/// being edited.
public final class DataPlaneState: @unchecked Sendable {
    public let keypairs: KeypairTable
    public let peers: PeerTable
    public let epochs: WorkerEpochs
    public let tenantCapacity: Int
    /// Per tenant slot, `UnsafeMutablePointer<TenantRoute>` bits, or 0.
    let tenants: UnsafeMutablePointer<Atomic<UInt>>
    /// UDP port → tenant slot + 1 (0: none), 65536 entries.
    let ports: UnsafeMutablePointer<Atomic<UInt16>>

    public init(tenantCapacity: Int, peerCapacity: Int, keypairCapacity: Int, workerCount: Int) {
        keypairs = KeypairTable(capacity: keypairCapacity)
        peers = PeerTable(capacity: peerCapacity, workerCount: workerCount)
        epochs = WorkerEpochs(workerCount: workerCount)
        self.tenantCapacity = max(tenantCapacity, 1)
        tenants = .allocate(capacity: self.tenantCapacity)
        for i in 0..<self.tenantCapacity { (tenants + i).initialize(to: Atomic(0)) }
        ports = .allocate(capacity: 65536)
        for i in 0..<65536 { (ports + i).initialize(to: Atomic(0)) }
    }

    /// A state with `routes` published in slots 0..<routes.count and their ports mapped.
    public convenience init(tenants routes: [TenantRoute], tenantCapacity: Int? = nil, peerCapacity: Int,
                            keypairCapacity: Int, workerCount: Int) {
        self.init(tenantCapacity: tenantCapacity ?? routes.count, peerCapacity: peerCapacity,
                  keypairCapacity: keypairCapacity, workerCount: workerCount)
        for (t, route) in routes.enumerated() {
            _ = publishTenant(t, route)
            mapPort(route.listenPort, to: t)
        }
    }

    deinit {
        for i in 0..<tenantCapacity {
            if let p = UnsafeMutablePointer<TenantRoute>(bitPattern: tenants[i].load(ordering: .relaxed)) {
                Retired.tenantRoute(p).release()
            }
        }
        tenants.deinitialize(count: tenantCapacity)
        tenants.deallocate()
        ports.deinitialize(count: 65536)
        ports.deallocate()
    }

    // MARK: Control plane

    /// Publishes `route` in slot `t` (nil: empties it) and returns the route it replaced,
    /// which the caller retires.
    public func publishTenant(_ t: Int, _ route: TenantRoute?) -> UnsafeMutablePointer<TenantRoute>? {
        var bits: UInt = 0
        if let route {
            let p = UnsafeMutablePointer<TenantRoute>.allocate(capacity: 1)
            p.initialize(to: route)
            bits = UInt(bitPattern: p)
        }
        return UnsafeMutablePointer(bitPattern: tenants[t].exchange(bits, ordering: .acquiringAndReleasing))
    }

    /// Sends transport messages to UDP port `port` to tenant slot `t` (nil: to nobody).
    public func mapPort(_ port: UInt16, to t: Int?) {
        ports[Int(port)].store(t.map { UInt16($0 + 1) } ?? 0, ordering: .releasing)
    }

    public func tenantRoute(_ t: Int) -> TenantRoute? {
        UnsafePointer<TenantRoute>(bitPattern: tenants[t].load(ordering: .acquiring))?.pointee
    }
}
