/// Everything the stats segment holds at one moment, as plain values: what `xdpwg stats`
/// renders and what `xdpwg stats --json` prints. Its `Codable` form is the documented JSON
/// schema (README, "xdpwg stats"): snake_case keys, every key always present (`null` where a
/// value is unknown), counters keyed by their stable names. Fields are only ever added;
/// removing or changing one increments `schema_version`.
public struct StatsSnapshot: Codable, Sendable, Equatable {
    public static let currentSchemaVersion = 1

    public var schemaVersion: Int
    /// The gateway's name (`[Gateway] Name`).
    public var gateway: String
    public var pid: Int
    /// When the snapshot was taken, when the gateway started, and when its control thread
    /// last marked the segment (it does on every tick, so an old value means it is stuck):
    /// Unix time in seconds, with microseconds.
    public var time: Double
    public var started: Double
    public var heartbeat: Double
    /// How many times the control thread has marked the segment.
    public var generation: UInt64
    public var workers: [Worker]
    public var handshakes: Handshakes
    public var xdp: XDP
    public var uplink: Uplink
    /// The transport cipher backend in use: "libsodium", "openssl", "ipsec-mb"; "off" in the
    /// perf lab's crypto-off mode; "unknown" before the gateway chose one.
    public var crypto: String
    public var tenants: [Tenant]
    public var peers: [Peer]

    /// One worker (one uplink RX queue).
    public struct Worker: Codable, Sendable, Equatable {
        public var index: Int
        public var queue: UInt32
        /// The core it was pinned to; nil when it was not.
        public var core: Int?
        /// `WorkerCounter` names → values.
        public var counters: [String: UInt64]
        /// `DropReason` names → values.
        public var drops: [String: UInt64]
        /// `FrameGauge` names → current values: where the worker's UMEM frames are.
        public var frames: [String: UInt64]

        public init(index: Int, queue: UInt32, core: Int?, counters: [String: UInt64], drops: [String: UInt64],
                    frames: [String: UInt64] = [:]) {
            self.index = index; self.queue = queue; self.core = core; self.counters = counters; self.drops = drops
            self.frames = frames
        }

        enum CodingKeys: String, CodingKey { case index, queue, core, counters, drops, frames }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(queue, forKey: .queue)
            try c.encode(core, forKey: .core)          // null, not absent
            try c.encode(counters, forKey: .counters)
            try c.encode(drops, forKey: .drops)
            try c.encode(frames, forKey: .frames)
        }
    }

    public struct Handshakes: Codable, Sendable, Equatable {
        /// `HandshakeCounter` names → values.
        public var counters: [String: UInt64]
        /// `HandshakeFailure` names → values.
        public var failures: [String: UInt64]

        public init(counters: [String: UInt64], failures: [String: UInt64]) {
            self.counters = counters; self.failures = failures
        }
    }

    /// The uplink XDP program's counters.
    public struct XDP: Codable, Sendable, Equatable {
        /// `XDPVerdict` names → packets.
        public var verdicts: [String: UInt64]
        /// Packets redirected to the AF_XDP socket of each RX queue (index = queue).
        public var redirectsPerQueue: [UInt64]

        public init(verdicts: [String: UInt64], redirectsPerQueue: [UInt64]) {
            self.verdicts = verdicts; self.redirectsPerQueue = redirectsPerQueue
        }

        enum CodingKeys: String, CodingKey {
            case verdicts
            case redirectsPerQueue = "redirects_per_queue"
        }
    }

    /// The uplink NIC's state as the control thread last saw it.
    public struct Uplink: Codable, Sendable, Equatable {
        /// "up" (up, with a carrier) or "down".
        public var state: String
        /// How many times it went down since the gateway started.
        public var downEvents: UInt64

        public init(state: String = "up", downEvents: UInt64 = 0) {
            self.state = state; self.downEvents = downEvents
        }

        enum CodingKeys: String, CodingKey {
            case state
            case downEvents = "down_events"
        }
    }

    public struct Tenant: Codable, Sendable, Equatable {
        public var slot: Int
        public var name: String
        /// "up", or "down" while its network namespace is gone (its packets are dropped as
        /// `tenant_down` until a reload reattaches it).
        public var state: String
        public var listenPort: UInt16
        public var peers: Int
        public var rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64
        public var drops: UInt64

        public init(slot: Int, name: String, listenPort: UInt16, peers: Int, rxPackets: UInt64, rxBytes: UInt64,
                    txPackets: UInt64, txBytes: UInt64, drops: UInt64, state: String = "up") {
            self.slot = slot; self.name = name; self.listenPort = listenPort; self.peers = peers
            self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.txPackets = txPackets; self.txBytes = txBytes
            self.drops = drops; self.state = state
        }

        enum CodingKeys: String, CodingKey {
            case slot, name, state, peers, drops
            case listenPort = "listen_port"
            case rxPackets = "rx_packets", rxBytes = "rx_bytes", txPackets = "tx_packets", txBytes = "tx_bytes"
        }
    }

    public struct Peer: Codable, Sendable, Equatable {
        public var slot: Int
        /// The tenant's name.
        public var tenant: String
        /// Base64, as `wg` shows it.
        public var publicKey: String
        /// "192.0.2.1:51820" or "[2001:db8::1]:51820"; nil until known.
        public var endpoint: String?
        /// Unix seconds of the last handshake; 0: never (as `wg show dump`).
        public var latestHandshake: Int
        /// Seconds since the current keypair was made; nil: no keypair.
        public var keypairAge: Int?
        public var rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64
        public var drops: UInt64
        public var handshakes: UInt64

        public init(slot: Int, tenant: String, publicKey: String, endpoint: String?, latestHandshake: Int,
                    keypairAge: Int?, rxPackets: UInt64, rxBytes: UInt64, txPackets: UInt64, txBytes: UInt64,
                    drops: UInt64, handshakes: UInt64) {
            self.slot = slot; self.tenant = tenant; self.publicKey = publicKey; self.endpoint = endpoint
            self.latestHandshake = latestHandshake; self.keypairAge = keypairAge
            self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.txPackets = txPackets; self.txBytes = txBytes
            self.drops = drops; self.handshakes = handshakes
        }

        enum CodingKeys: String, CodingKey {
            case slot, tenant, endpoint, drops, handshakes
            case publicKey = "public_key"
            case latestHandshake = "latest_handshake"
            case keypairAge = "keypair_age_seconds"
            case rxPackets = "rx_packets", rxBytes = "rx_bytes", txPackets = "tx_packets", txBytes = "tx_bytes"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(slot, forKey: .slot)
            try c.encode(tenant, forKey: .tenant)
            try c.encode(publicKey, forKey: .publicKey)
            try c.encode(endpoint, forKey: .endpoint)          // null, not absent
            try c.encode(latestHandshake, forKey: .latestHandshake)
            try c.encode(keypairAge, forKey: .keypairAge)      // null, not absent
            try c.encode(rxPackets, forKey: .rxPackets)
            try c.encode(rxBytes, forKey: .rxBytes)
            try c.encode(txPackets, forKey: .txPackets)
            try c.encode(txBytes, forKey: .txBytes)
            try c.encode(drops, forKey: .drops)
            try c.encode(handshakes, forKey: .handshakes)
        }
    }

    public init(schemaVersion: Int = StatsSnapshot.currentSchemaVersion, gateway: String, pid: Int, time: Double,
                started: Double, heartbeat: Double, generation: UInt64, workers: [Worker], handshakes: Handshakes,
                xdp: XDP, uplink: Uplink = Uplink(), crypto: String = "unknown", tenants: [Tenant], peers: [Peer]) {
        self.schemaVersion = schemaVersion; self.gateway = gateway; self.pid = pid; self.time = time
        self.started = started; self.heartbeat = heartbeat; self.generation = generation; self.workers = workers
        self.handshakes = handshakes; self.xdp = xdp; self.uplink = uplink; self.crypto = crypto
        self.tenants = tenants; self.peers = peers
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case gateway, pid, time, started, heartbeat, generation, workers, handshakes, xdp, uplink, crypto, tenants, peers
    }
}
