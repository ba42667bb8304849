import Synchronization
import WireGuard

/// Every counter a worker keeps. Each worker owns one `WorkerCounters` block and is its only
/// writer (relaxed load + store: a plain `mov`, no locked instruction); readers (the control
/// plane, stats) load relaxed at any time and may see a value one batch old.
public enum WorkerCounter: Int, CaseIterable, Sendable {
    case uplinkRxPackets, uplinkRxBytes, uplinkTxPackets, uplinkTxBytes
    case tenantRxPackets, tenantRxBytes, tenantTxPackets, tenantTxBytes
    /// Loop iterations that found work, and the frames they carried (mean fill = frames / batches).
    case batches, batchFrames
    /// Transport messages decrypted and delivered / encrypted and sent; keepalives received.
    case decrypted, encrypted, keepalivesReceived
    /// Handshake messages and staged packets handed to the control plane.
    case handshakeMessagesForwarded, packetsStaged
    /// Ring events: RX polls that found nothing, TX ring full, transmit kicks (sendto), fill wakeups.
    case rxEmptyPolls, txRingFull, transmitKicks, fillWakeups
    /// The kernel's counters of the uplink socket and of the tenant sockets (summed over the
    /// worker's lanes), read with getsockopt(XDP_STATISTICS) about every 100 ms and when the
    /// worker goes idle: received packets dropped (for want of a fill-ring frame, or too
    /// long), dropped because the RX ring was full, times the fill ring was found empty, and
    /// descriptors refused as invalid (each is a frame the kernel discarded: it never comes
    /// back, so a non-zero value is a frame leak).
    case uplinkXskRxDropped, uplinkXskRxRingFull, uplinkXskFillRingEmpty, uplinkXskInvalidDescriptors
    case tenantXskRxDropped, tenantXskRxRingFull, tenantXskFillRingEmpty, tenantXskInvalidDescriptors

    public var name: String {
        switch self {
        case .uplinkRxPackets: "uplink_rx_packets"
        case .uplinkRxBytes: "uplink_rx_bytes"
        case .uplinkTxPackets: "uplink_tx_packets"
        case .uplinkTxBytes: "uplink_tx_bytes"
        case .tenantRxPackets: "tenant_rx_packets"
        case .tenantRxBytes: "tenant_rx_bytes"
        case .tenantTxPackets: "tenant_tx_packets"
        case .tenantTxBytes: "tenant_tx_bytes"
        case .batches: "batches"
        case .batchFrames: "batch_frames"
        case .decrypted: "decrypted"
        case .encrypted: "encrypted"
        case .keepalivesReceived: "keepalives_received"
        case .handshakeMessagesForwarded: "handshake_messages_forwarded"
        case .packetsStaged: "packets_staged"
        case .rxEmptyPolls: "rx_empty_polls"
        case .txRingFull: "tx_ring_full"
        case .transmitKicks: "transmit_kicks"
        case .fillWakeups: "fill_wakeups"
        case .uplinkXskRxDropped: "uplink_xsk_rx_dropped"
        case .uplinkXskRxRingFull: "uplink_xsk_rx_ring_full"
        case .uplinkXskFillRingEmpty: "uplink_xsk_fill_ring_empty"
        case .uplinkXskInvalidDescriptors: "uplink_xsk_invalid_descs"
        case .tenantXskRxDropped: "tenant_xsk_rx_dropped"
        case .tenantXskRxRingFull: "tenant_xsk_rx_ring_full"
        case .tenantXskFillRingEmpty: "tenant_xsk_fill_ring_empty"
        case .tenantXskInvalidDescriptors: "tenant_xsk_invalid_descs"
        }
    }
}

/// Why the data path dropped a packet. Every drop has exactly one, and a counter.
public enum DropReason: Int, CaseIterable, Sendable {
    // Uplink → tenant (decrypt direction).
    /// Not Ethernet/IP/UDP as the XDP program promised (truncated or inconsistent).
    case outerMalformed
    /// UDP to a port no tenant listens on (a reload raced the XDP port map).
    case unknownPort
    /// Not a WireGuard message of a known type and a valid length.
    case messageMalformed
    /// A transport message for a receiver index we do not hold (or that belongs to another tenant).
    case unknownReceiver
    case keypairInvalid, keypairExpired, keypairExhausted, counterBeyondLimit, counterTooOld
    case replayed
    case authenticationFailed
    /// Decrypted data that is not a whole IPv4/IPv6 packet.
    case innerMalformed
    /// The inner source address is not in the sending peer's AllowedIPs (cryptokey routing).
    case innerSourceNotAllowed
    /// No free tenant frame to decrypt into.
    case tenantFramesExhausted
    /// The tenant socket's TX ring was full.
    case tenantTxRingFull
    /// The control plane's queue was full (handshake message or staged packet).
    case controlQueueFull
    /// The packet's tenant has no lane: it is down (its namespace was deleted while running),
    /// or being removed (its port outlived it for a moment).
    case tenantDown

    // Tenant → uplink (encrypt direction).
    /// Not an IPv4/IPv6 frame of consistent length.
    case tenantMalformed
    /// The inner destination is in no peer's AllowedIPs.
    case noRoute
    /// The peer has a session but no known endpoint yet.
    case noEndpoint
    /// No free uplink frame to encrypt into.
    case uplinkFramesExhausted
    /// The uplink socket's TX ring was full.
    case uplinkTxRingFull
    /// The packet does not fit one uplink frame after encryption.
    case packetTooBig
    /// The cipher backend reported an error while sealing (never expected: it passed its
    /// self-test at start).
    case sealFailed

    public var name: String {
        switch self {
        case .outerMalformed: "outer_malformed"
        case .unknownPort: "unknown_port"
        case .messageMalformed: "message_malformed"
        case .unknownReceiver: "unknown_receiver"
        case .keypairInvalid: "keypair_invalid"
        case .keypairExpired: "keypair_expired"
        case .keypairExhausted: "keypair_exhausted"
        case .counterBeyondLimit: "counter_beyond_limit"
        case .counterTooOld: "counter_too_old"
        case .replayed: "replayed"
        case .authenticationFailed: "authentication_failed"
        case .innerMalformed: "inner_malformed"
        case .innerSourceNotAllowed: "inner_source_not_allowed"
        case .tenantFramesExhausted: "tenant_frames_exhausted"
        case .tenantTxRingFull: "tenant_tx_ring_full"
        case .controlQueueFull: "control_queue_full"
        case .tenantDown: "tenant_down"
        case .tenantMalformed: "tenant_malformed"
        case .noRoute: "no_route"
        case .noEndpoint: "no_endpoint"
        case .uplinkFramesExhausted: "uplink_frames_exhausted"
        case .uplinkTxRingFull: "uplink_tx_ring_full"
        case .packetTooBig: "packet_too_big"
        case .sealFailed: "seal_failed"
        }
    }

    /// The drop for a transport message the keypair refused.
    @inline(__always)
    public init(_ rejection: TransportRejection) {
        switch rejection {
        case .tooShort, .notTransport, .destinationTooSmall: self = .messageMalformed
        case .wrongReceiver: self = .unknownReceiver
        case .keypairInvalid: self = .keypairInvalid
        case .keypairExpired: self = .keypairExpired
        case .keypairExhausted: self = .keypairExhausted
        case .counterBeyondLimit: self = .counterBeyondLimit
        case .counterTooOld: self = .counterTooOld
        case .replayed: self = .replayed
        case .authenticationFailed: self = .authenticationFailed
        }
    }
}

/// Where a worker's UMEM frames are (`FrameCounts`), published by the worker after every
/// batch that did work and when it goes idle: current values, not counters. `uplink…` is the
/// worker's uplink UMEM; `tenant…` is summed over its lanes (a UMEM each).
public enum FrameGauge: Int, CaseIterable, Sendable {
    case uplinkTotal, uplinkFree, uplinkReceiving, uplinkTransmitting
    case tenantTotal, tenantFree, tenantReceiving, tenantTransmitting

    public var name: String {
        switch self {
        case .uplinkTotal: "uplink_frames_total"
        case .uplinkFree: "uplink_frames_free"
        case .uplinkReceiving: "uplink_frames_receiving"
        case .uplinkTransmitting: "uplink_frames_transmitting"
        case .tenantTotal: "tenant_frames_total"
        case .tenantFree: "tenant_frames_free"
        case .tenantReceiving: "tenant_frames_receiving"
        case .tenantTransmitting: "tenant_frames_transmitting"
        }
    }
}

/// One worker's counters: `WorkerCounter`s, `DropReason`s, then `FrameGauge`s, one 64-bit
/// atomic each, in memory the owner provides (so the block can live in a shared stats segment).
public struct WorkerCounters: @unchecked Sendable {
    public static let slotCount = WorkerCounter.allCases.count + DropReason.allCases.count + FrameGauge.allCases.count
    /// Where the gauges start, in slots.
    static let gaugeBase = WorkerCounter.allCases.count + DropReason.allCases.count
    public static let byteCount = slotCount * 8

    private let slots: UnsafeMutablePointer<Atomic<UInt64>>

    /// Allocates a zeroed block (for tests and until a stats segment exists).
    public static func allocate() -> WorkerCounters {
        let p = UnsafeMutablePointer<Atomic<UInt64>>.allocate(capacity: slotCount)
        for i in 0..<slotCount { (p + i).initialize(to: Atomic(0)) }
        return WorkerCounters(slots: p)
    }

    private init(slots: UnsafeMutablePointer<Atomic<UInt64>>) { self.slots = slots }

    /// Counters in memory the caller provides and keeps alive for as long as any copy of this
    /// value is used (a worker's block in the stats segment): `byteCount` bytes, 8-byte
    /// aligned, zeroed (a zero word is an `Atomic<UInt64>` holding 0).
    public init(memory: UnsafeMutableRawPointer) {
        precondition(UInt(bitPattern: memory) % 8 == 0, "WorkerCounters memory must be 8-byte aligned")
        slots = memory.bindMemory(to: Atomic<UInt64>.self, capacity: WorkerCounters.slotCount)
    }

    @inline(__always)
    public func add(_ counter: WorkerCounter, _ n: UInt64 = 1) {
        let s = slots + counter.rawValue
        s.pointee.store(s.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    @inline(__always)
    public func drop(_ reason: DropReason, _ n: UInt64 = 1) {
        let s = slots + WorkerCounter.allCases.count + reason.rawValue
        s.pointee.store(s.pointee.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Sets a gauge (a plain relaxed store; `value` is never negative, see `FrameCounts`).
    @inline(__always)
    public func set(_ gauge: FrameGauge, _ value: Int) {
        slots[WorkerCounters.gaugeBase + gauge.rawValue].store(UInt64(truncatingIfNeeded: value), ordering: .relaxed)
    }

    public func value(_ gauge: FrameGauge) -> UInt64 {
        slots[WorkerCounters.gaugeBase + gauge.rawValue].load(ordering: .relaxed)
    }

    public func value(_ counter: WorkerCounter) -> UInt64 {
        slots[counter.rawValue].load(ordering: .relaxed)
    }

    public func value(_ reason: DropReason) -> UInt64 {
        slots[WorkerCounter.allCases.count + reason.rawValue].load(ordering: .relaxed)
    }

    public var totalDrops: UInt64 { DropReason.allCases.reduce(0) { $0 + value($1) } }
}
