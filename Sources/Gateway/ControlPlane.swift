import Engine
import WireGuard

// The control plane by concern, one file each (as wireguard-go's device/): this file holds
// its state and reports; ControlPlane+Configuration.swift the configuration changes,
// ControlPlane+Receive.swift the workers' messages and handshake receive,
// ControlPlane+Keypairs.swift keypairs, their publication and the timers' scheduling,
// ControlPlane+Send.swift staging and what sessions send. The per-peer state machine itself
// is the protocol core's `Session`.

/// One peer as the control plane holds it: the protocol core's `Session` (the Noise handshake,
/// the keypair slots, the timers, the packets staged while no session exists) and the peer's
/// place in the data plane: its `PeerTable` slot (handle `handle`), the keypair entries
/// published for the workers, its endpoint. Only the control thread touches it.
final class PeerSession: Session {
    let handle: UInt32
    let tenant: Int
    let publicKey: PublicKey
    /// Kept to build the handshake again with a new private key.
    var presharedKey: PresharedKey?
    /// Keypair entries published in the keypair table, by local index.
    var entries: [UInt32: UnsafeMutablePointer<KeypairEntry>] = [:]
    var endpoint: (address: IPAddress, port: UInt16)?
    /// Activity timestamps already turned into timer events.
    var seen = (sent: Instant.zero, received: Instant.zero, keepalive: Instant.zero)
    var lastHandshake: TAI64N?
    var handshakesCompleted = 0
    /// When to ask the kernel's tables again for a route to an endpoint without one.
    var nextRouteLookup = Instant.zero
    /// The time this session is queued at in the control plane's `WakeupHeap` (nil: not queued).
    var scheduled: Instant?
    /// Whether it is in the control plane's list of sessions to `perform` this turn.
    var due = false

    init(handle: UInt32, tenant: Int, publicKey: PublicKey, handshake: PeerHandshake, persistentKeepalive: Duration) {
        self.handle = handle
        self.tenant = tenant
        self.publicKey = publicKey
        super.init(handshake: handshake, persistentKeepalive: persistentKeepalive)
    }
}

/// One tenant as the control plane sees it: its identity, cookie state, rate limiter and
/// the kernel socket its handshake messages leave through.
final class TenantControl {
    let name: String
    var identity: StaticIdentity
    var cookies: CookieChecker
    var rateLimiter = RateLimiter()
    var socket: HandshakeSocket
    var peersByKey: [PublicKey: UInt32] = [:]
    let mtu: Int

    init(name: String, identity: StaticIdentity, socket: HandshakeSocket, mtu: Int) {
        self.name = name; self.identity = identity; self.cookies = CookieChecker(identity: identity)
        self.socket = socket; self.mtu = mtu
    }
}

/// The control thread's side of the gateway: handshakes (responder and initiator), cookies
/// under load, timers, keypair rotation and publication, endpoint learning, staged packets,
/// for every peer of every tenant, each peer's protocol state a `Session`. One thread owns
/// it; workers reach it only through their `ControlQueue`s and the tables.
public final class ControlPlane {
    let state: DataPlaneState
    /// The control thread's own transport AEAD contexts (staged packets, keepalives): the
    /// workers' backend, never shared with a worker.
    let cipher: TransportCipher
    var reclaimer: Reclaimer
    /// By tenant slot (the slot in `DataPlaneState`).
    var tenants: [Int: TenantControl] = [:]
    /// By peer handle (the slot in the peer table).
    var peers: [UInt32: PeerSession] = [:]
    /// Handles free for new peers, and handles whose peer is gone and that every worker has
    /// moved past, waiting for one more drain of the queues (a message about the old peer
    /// may have been queued just before) before reuse.
    var freeHandles: [UInt32]
    var coolingHandles: [UInt32] = []
    /// Our handshakes in progress, by local index (responses and cookie replies name it).
    var pendingHandshakes: [UInt32: UInt32] = [:]
    public internal(set) var counters = HandshakeCounters()
    /// Builds an outer header template for an endpoint from the kernel's route and
    /// neighbour tables (rtnetlink), or nil while the next hop is unresolved. Used for
    /// endpoints we know before hearing from them (configured); received frames are the
    /// fast path and replace what this built.
    public var resolveRoute: ((_ address: IPAddress, _ port: UInt16, _ listenPort: UInt16) -> OuterHeaderTemplate?)?
    /// Called on every session established (`first`: the peer's first); the caller rate-limits logging.
    public var onSessionEstablished: ((_ tenant: String, _ peer: PublicKey, _ first: Bool) -> Void)?
    var underLoadUntil = Instant.zero
    /// Sessions that something touched since the last `tick` (a message, a configuration
    /// change, new activity, a due timer): `tick` performs exactly these.
    var dueSessions: [PeerSession] = []
    /// Every session's next deadline (timers, route lookups).
    var wakeups = WakeupHeap()
    /// Bytes staged across all peers, bounded by `stagedByteBudget`.
    public internal(set) var stagedBytes = 0
    /// The global bound on staged packets (the per-peer bound is `Session.maxStagedPackets`):
    /// 100,000 peers × 128 packets × 1,500 bytes would be 19 GB. A packet that does not fit
    /// is dropped and counted as `staged_dropped`.
    public var stagedByteBudget = ControlPlane.defaultStagedByteBudget
    public static let defaultStagedByteBudget = 32 << 20
    /// Where outgoing handshake and transport messages are built (one at a time).
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)

    public struct PeerSetup {
        public var publicKey: PublicKey
        public var presharedKey: PresharedKey?
        public var endpoint: (address: IPAddress, port: UInt16)?
        public var persistentKeepalive: Int
        public init(publicKey: PublicKey, presharedKey: PresharedKey?, endpoint: (address: IPAddress, port: UInt16)?,
                    persistentKeepalive: Int) {
            self.publicKey = publicKey; self.presharedKey = presharedKey
            self.endpoint = endpoint; self.persistentKeepalive = persistentKeepalive
        }
    }

    public init(state: DataPlaneState, cipher: consuming TransportCipher = TransportCipher()) {
        self.state = state
        self.cipher = cipher
        reclaimer = Reclaimer(epochs: state.epochs)
        freeHandles = (0..<UInt32(state.peers.capacity)).reversed()
    }

    deinit {
        // Workers are stopped before the control plane goes away.
        reclaimer.releaseAll()
        buffer.deallocate()
    }

    /// Stops every session: wipes keys (used at shutdown, after the workers stopped).
    public func shutdown() {
        for session in peers.values { endSession(session) }
        reclaimer.releaseAll()
    }

    // MARK: Reports

    func tenantName(_ session: PeerSession) -> String { tenants[session.tenant]?.name ?? "?" }

    /// What the control plane knows about one peer, for `wg show`, stats and logs.
    public struct PeerReport: Sendable {
        public var handle: UInt32
        public var tenant: Int
        public var publicKey: PublicKey
        public var endpoint: (address: IPAddress, port: UInt16)?
        public var handshakes: Int
        /// Wall clock of the latest completed handshake.
        public var lastHandshake: TAI64N?
        /// When (on the monotonic clock) the current keypair was made: its age is now minus this.
        public var keypairCreated: Instant?
        public var activity: PeerTable.Activity
    }

    public func report(_ handle: UInt32) -> PeerReport? {
        guard let s = peers[handle] else { return nil }
        return PeerReport(handle: handle, tenant: s.tenant, publicKey: s.publicKey, endpoint: s.endpoint,
                          handshakes: s.handshakesCompleted, lastHandshake: s.lastHandshake,
                          keypairCreated: s.slots.current?.createdAt, activity: state.peers.activity(handle))
    }

    public func peerReports() -> [PeerReport] {
        peers.keys.sorted().compactMap { report($0) }
    }

    public func tenantName(slot: Int) -> String? { tenants[slot]?.name }

    public static func format(_ a: IPAddress, _ port: UInt16) -> String {
        a.isV4 ? "\(a):\(port)" : "[\(a)]:\(port)"
    }

    /// Packets staged across all peers (tests and stats).
    public var stagedPackets: Int { peers.values.reduce(0) { $0 + $1.stagedCount } }
}
