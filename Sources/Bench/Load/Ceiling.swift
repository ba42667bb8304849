import Engine
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// The load generator's own ceiling: what one sending core puts through a link into a
/// `PacketSink`, with no device under test in between. A figure for a device under test
/// means something only well below this.
public struct CeilingMeasurement: Sendable, Equatable, Codable, CustomStringConvertible {
    /// "XDP live frames", "AF_XDP TX (copy mode, N per kick)" or "UDP sendmmsg".
    public var generator: String
    /// What each packet carried: "WireGuard transport" or "plain IP".
    public var payload: String
    /// The inner IP packet size: the plaintext of a transport message, or the plain packet.
    public var innerSize: Int
    /// Bytes of each Ethernet frame on the link.
    public var frameLength: Int
    public var sent: UInt64
    /// Counted by the sink on the far end.
    public var received: UInt64
    /// Refused by the sending device (FrameBlaster only).
    public var dropped: UInt64
    public var seconds: Double
    /// The sending thread's CPU time (see `BlastResult.cpuSeconds`).
    public var cpuSeconds: Double
    /// The sending core's busy time, whatever ran there (see `BlastResult.coreBusySeconds`).
    public var coreBusySeconds: Double?

    public init(generator: String, payload: String, innerSize: Int, frameLength: Int, sent: UInt64, received: UInt64,
                dropped: UInt64, seconds: Double, cpuSeconds: Double, coreBusySeconds: Double?) {
        self.generator = generator
        self.payload = payload
        self.innerSize = innerSize
        self.frameLength = frameLength
        self.sent = sent
        self.received = received
        self.dropped = dropped
        self.seconds = seconds
        self.cpuSeconds = cpuSeconds
        self.coreBusySeconds = coreBusySeconds
    }

    /// Packets per second sent, and received by the sink.
    public var sentPerSecond: Double { seconds > 0 ? Double(sent) / seconds : 0 }
    public var receivedPerSecond: Double { seconds > 0 ? Double(received) / seconds : 0 }
    /// Inner bytes received per second, in bits (what a device under test would deliver).
    public var innerBitsPerSecond: Double { receivedPerSecond * Double(innerSize) * 8 }
    /// Packets received per second of the sending core's busy time: the ceiling of one core
    /// given to the generator (and to the receive path it drives), whatever else shared it.
    public var receivedPerBusyCoreSecond: Double? {
        coreBusySeconds.flatMap { $0 > 0 ? Double(received) / $0 : nil }
    }

    public var description: String {
        func fixed(_ value: Double, _ digits: Int) -> String {
            var scale = 1.0
            for _ in 0..<digits { scale *= 10 }
            let rounded = (value * scale).rounded() / scale
            return "\(rounded)"
        }
        return "\(generator), \(payload) \(innerSize) B (frame \(frameLength) B): "
            + "sent \(fixed(sentPerSecond / 1e6, 3)) Mpps, received \(fixed(receivedPerSecond / 1e6, 3)) Mpps "
            + "(\(fixed(innerBitsPerSecond / 1e9, 2)) Gbps inner), dropped \(dropped); "
            + "sending thread \(fixed(cpuSeconds / seconds * 100, 0))% of a core"
            + (coreBusySeconds.map { ", its core \(fixed($0 / seconds * 100, 0))% busy" } ?? "")
            + (receivedPerBusyCoreSecond.map { " → \(fixed($0 / 1e6, 2)) Mpps per busy core" } ?? "")
    }
}

/// What the frames of a ceiling measurement carry.
public enum CeilingPayload: Sendable, Hashable, CustomStringConvertible {
    /// UDP to port 51820 carrying a transport-shaped message (header, `innerSize` bytes, tag;
    /// not encrypted): frame = innerSize + 32 + 42 bytes, as the decrypt direction's.
    case wireGuardTransport
    /// A UDP packet of `innerSize` bytes as IP: frame = innerSize + 14 bytes, as a tenant's
    /// packet in the encrypt direction.
    case plainIP

    public var description: String {
        switch self {
        case .wireGuardTransport: "WireGuard transport"
        case .plainIP: "plain IP"
        }
    }

    var sinkMatch: PacketSink.Match { self == .wireGuardTransport ? .wireGuardTransport : .innerIP }
}

extension FrameBlaster {
    /// Measures the FrameBlaster's ceiling in a given topology: attaches a `PacketSink`
    /// (matching `payload`) to `receiverInterface` in `receiverNamespace`, fills a pool of
    /// 1024 frames addressed to it (MACs read from both interfaces, IPv4 198.18.0.1 →
    /// 198.18.0.2, the benchmarking range), blasts them in a cycle for `seconds` from
    /// `senderInterface`/`queue` in `senderNamespace` on `cpu`, and detaches the sink.
    /// The receiver must have no XDP program attached (the sink needs the slot).
    public static func measureCeiling(senderNamespace: String?, senderInterface: String, queue: UInt32 = 0,
                                      cpu: Int?, receiverNamespace: String?, receiverInterface: String,
                                      innerSize: Int, payload: CeilingPayload,
                                      seconds: Double = 3) throws -> CeilingMeasurement {
        let link = CeilingLink(senderNamespace: senderNamespace, senderInterface: senderInterface,
                               receiverNamespace: receiverNamespace, receiverInterface: receiverInterface)
        return try link.measure(try BlastPool(namespace: senderNamespace, capacity: ceilingFrames),
                                innerSize: innerSize, payload: payload, seconds: seconds,
                                generator: { "AF_XDP TX (copy mode, \($0.framesPerKick) per kick)" }) { pool in
            try FrameBlaster(pool: pool, interface: senderInterface, queue: queue, cpu: cpu)
        }
    }
}

extension LiveFrameBlaster {
    /// Measures the LiveFrameBlaster's ceiling in a given topology, as
    /// `FrameBlaster.measureCeiling` does (the same frames, sink and duration). The receiver's
    /// queue is `cpu` modulo its queue count.
    public static func measureCeiling(senderNamespace: String?, senderInterface: String, cpu: Int?,
                                      receiverNamespace: String?, receiverInterface: String,
                                      innerSize: Int, payload: CeilingPayload,
                                      seconds: Double = 3) throws -> CeilingMeasurement {
        let link = CeilingLink(senderNamespace: senderNamespace, senderInterface: senderInterface,
                               receiverNamespace: receiverNamespace, receiverInterface: receiverInterface)
        return try link.measure(try BlastPool(liveFramesCapacity: ceilingFrames),
                                innerSize: innerSize, payload: payload, seconds: seconds,
                                generator: { _ in "XDP live frames" }) { pool in
            try LiveFrameBlaster(pool: pool, namespace: senderNamespace, interface: senderInterface, cpu: cpu)
        }
    }
}

/// The two ends of a ceiling measurement.
private struct CeilingLink {
    let senderNamespace: String?
    let senderInterface: String
    let receiverNamespace: String?
    let receiverInterface: String

    /// A pool blaster's measurement: fills `pool` with `ceilingFrames` frames from the
    /// sender's MAC to the receiver's carrying `payload`, makes the blaster, and measures.
    func measure<Blaster: PoolBlaster>(_ pool: BlastPool, innerSize: Int, payload: CeilingPayload, seconds: Double,
                                       generator: (Blaster) -> String,
                                       _ makeBlaster: (BlastPool) throws -> Blaster) throws -> CeilingMeasurement {
        let builder = try UDPFrameBuilder(
            sourceMAC: try interfaceMAC(namespace: senderNamespace, interface: senderInterface),
            destinationMAC: try interfaceMAC(namespace: receiverNamespace, interface: receiverInterface),
            source: ceilingSource, sourcePort: 40000, destination: ceilingDestination, destinationPort: 51820)
        let ipPacketSize = switch payload {
        case .wireGuardTransport: builder.ipOverhead + TransportShape.overhead + innerSize
        case .plainIP: innerSize
        }
        for counter in 0..<ceilingFrames {
            try builder.append(to: pool, ipPacketSize: ipPacketSize) { message in
                if payload == .wireGuardTransport {
                    TransportShape.write(into: message, receiverIndex: 1, counter: UInt64(counter))
                }
            }
        }
        let blaster = try makeBlaster(pool)
        return try measureIntoSink(generator: generator(blaster), payload: payload, innerSize: innerSize,
                                   frameLength: Wire.ethernetHeaderSize + ipPacketSize,
                                   receiverNamespace: receiverNamespace, receiverInterface: receiverInterface) {
            try blaster.run(.duration(seconds: seconds))
        }
    }
}

/// Attaches a sink for `payload`, runs `blast`, and reads what the sink counted meanwhile.
private func measureIntoSink(generator: String, payload: CeilingPayload, innerSize: Int, frameLength: Int,
                             receiverNamespace: String?, receiverInterface: String,
                             _ blast: () throws -> BlastResult) throws -> CeilingMeasurement {
    let sink = try PacketSink(namespace: receiverNamespace, interface: receiverInterface, match: payload.sinkMatch)
    defer { sink.close() }
    let before = try sink.read()
    let result = try blast()
    let after = try sink.readSettled()
    return CeilingMeasurement(generator: generator, payload: payload.description, innerSize: innerSize,
                              frameLength: frameLength, sent: result.sent, received: after.since(before).packets,
                              dropped: result.dropped, seconds: result.seconds, cpuSeconds: result.cpuSeconds,
                              coreBusySeconds: result.coreBusySeconds)
}

extension DatagramBlaster {
    /// Measures the DatagramBlaster's ceiling in a given topology: attaches a `PacketSink`
    /// (inner IP) to `receiverInterface` in `receiverNamespace`, sends `innerSize`-byte
    /// datagrams from `senderNamespace` on `cpu` to `destination` for `seconds`, and
    /// detaches the sink. The sender's routes must take `destination` over the link to the
    /// receiver (its ARP still works: the sink passes it); the receiver must have no XDP
    /// program attached.
    public static func measureCeiling(senderNamespace: String?, cpu: Int?, destination: Destination,
                                      receiverNamespace: String?, receiverInterface: String,
                                      innerSize: Int, seconds: Double = 3) throws -> CeilingMeasurement {
        let blaster = try DatagramBlaster(namespace: senderNamespace, cpu: cpu, destinations: [destination],
                                          packetSize: innerSize)
        return try measureIntoSink(generator: "UDP sendmmsg", payload: .plainIP, innerSize: innerSize,
                                   frameLength: Wire.ethernetHeaderSize + innerSize,
                                   receiverNamespace: receiverNamespace, receiverInterface: receiverInterface) {
            try blaster.run(.duration(seconds: seconds))
        }
    }
}

/// Frames in a ceiling measurement's pool: enough to cycle through, few enough to register fast.
let ceilingFrames = 1024
let ceilingSource = IPAddress.v4(0xC612_0001)       // 198.18.0.1
let ceilingDestination = IPAddress.v4(0xC612_0002)  // 198.18.0.2
