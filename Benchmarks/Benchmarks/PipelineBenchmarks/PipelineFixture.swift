// One gateway's data-plane state, built through the Engine's public API only (as the control
// plane builds it): one tenant on UDP port 51820 whose AllowedIPs send 10.10.1.0/24 to peer 0,
// one published keypair for peer 0 (receive lookup and sending keypair), and peer 0's outer
// header template. Plus the frames the benchmarks feed it, and the core `Keypair`s the
// baselines use on exactly the same bytes.

import BenchSupport
import Benchmark
import BenchSodium
import Engine
import WireGuard

/// A fixed monotonic time inside every keypair's lifetime (all are created at 0): no
/// rekey-after-time, no expiry.
let pipelineNow = Instant(nanoseconds: 1_000_000_000)

/// The tenant interface's MTU (wg-quick's default). A 1420-byte inner packet is not padded
/// (padding never goes past the MTU) and 64 is a multiple of 16, so the pipeline and the
/// `Keypair` baselines encrypt the same number of bytes.
let tenantMTU = 1420

/// Room in every output buffer, as in a UMEM frame (2048 bytes per frame).
let frameCapacity = 2048

/// Why a benchmark's setup refused to time something: the thing under test does not do
/// what it should, so its speed would mean nothing.
struct SetupCheckFailed: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// State for one inner packet size, built once per benchmark in `setup`.
///
/// `frames` holds 1000 uplink frames (Ethernet/IPv4 or IPv6/UDP to port 51820, carrying the
/// peer's transport messages with counters 0..<1000, all of the same inner packet), one per
/// packet of a sample, `stride` bytes apart like frames in a UMEM. The decrypt and open
/// benchmarks go through all 1000 every sample, with a receive keypair that has seen none of
/// them, made before the measured region (`renewEntry()`, `renewReceiver()`): a keypair that
/// had seen them would drop every one as a replay before decrypting anything.
final class PipelineState {
    static var count: Int { packetsPerSample.rawValue }

    static let uplinkMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x01)
    static let nextHopMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x02)
    static let hostMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x11)
    static let innerMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x12)
    static let listenPort: UInt16 = 51820
    static let peerPort: UInt16 = 40000

    let length: Int                  // inner IP packet bytes (the plaintext)
    let messageLength: Int           // transport message: 16 + length + 16
    let outerLength: Int             // Ethernet + IP + UDP in front of the message
    let frameLength: Int             // one uplink frame
    let stride: Int

    let state: DataPlaneState
    var processor: PacketProcessor
    let counters: WorkerCounters
    /// Kept alive here: the processor holds it without a reference count.
    let control: ControlQueue
    let localIndex: UInt32
    /// The gateway's session keys (receives with k1, sends with k2) and the peer's mirror.
    let gatewayKeys: SessionKeys
    let peerKeys: SessionKeys
    /// The entry published for `localIndex` and as peer 0's sending keypair.
    var entry: UnsafeMutablePointer<KeypairEntry>

    /// Baselines: plain `Keypair`s from the same keys, used on the same buffers.
    let sender: Keypair
    var receiver: Keypair

    let frames: UnsafeMutableRawPointer        // count × stride uplink frames
    let tenantFrame: UnsafeMutableRawPointer   // Ethernet + inner packet: what a tenant sends
    let output: UnsafeMutableRawPointer        // frameCapacity: tenant frame (decrypt) or uplink frame (encrypt)
    let uplinkInner: [UInt8]                   // the inner packet the peer sent (decrypt)
    let tenantInner: [UInt8]                   // the inner packet the tenant sends (encrypt)

    init(length: Int, outerIPv6: Bool = false) throws(SetupCheckFailed) {
        self.length = length
        messageLength = Keypair.messageLength(plaintextLength: length, mtu: tenantMTU)
        guard messageLength == WireGuardProtocol.keepaliveSize + length else {
            throw SetupCheckFailed("\(length) B would be padded; pipeline and baseline must encrypt the same bytes")
        }
        let gatewayAddress = IPAddress(outerIPv6 ? "2001:db8::2" : "192.0.2.2")!
        let peerAddress = IPAddress(outerIPv6 ? "2001:db8::1" : "192.0.2.1")!
        let toPeer = OuterHeaderTemplate(sourceMAC: Self.uplinkMAC, destinationMAC: Self.nextHopMAC, vlanTCI: 0,
                                         source: gatewayAddress, sourcePort: Self.listenPort,
                                         destination: peerAddress, destinationPort: Self.peerPort)
        let fromPeer = OuterHeaderTemplate(sourceMAC: Self.nextHopMAC, destinationMAC: Self.uplinkMAC, vlanTCI: 0,
                                           source: peerAddress, sourcePort: Self.peerPort,
                                           destination: gatewayAddress, destinationPort: Self.listenPort)
        let outerLength = toPeer.length, messageLength = messageLength
        let stride = (outerLength + messageLength + 63) & ~63
        self.outerLength = outerLength
        frameLength = outerLength + messageLength
        self.stride = stride
        let uplinkInner = Self.innerPacket(length: length, source: "10.10.1.2", destination: "10.10.0.1")
        self.uplinkInner = uplinkInner
        tenantInner = Self.innerPacket(length: length, source: "10.10.0.1", destination: "10.10.1.2")

        // The tenant and its routes.
        var table = AllowedIPs()
        table.insert(IPPrefix("10.10.1.0/24")!, peer: 0)
        table.insert(IPPrefix("fd00:a::/64")!, peer: 0)
        state = DataPlaneState(tenants: [TenantRoute(listenPort: Self.listenPort, allowedIPs: table,
                                                     hostMAC: Self.hostMAC, innerMAC: Self.innerMAC, mtu: tenantMTU)],
                               peerCapacity: 1, keypairCapacity: 64, workerCount: 1)

        // A session with peer 0, published as the control plane does after a handshake.
        guard let index = state.keypairs.allocateIndex(random: { 0x5EED_0000 }) else {
            throw SetupCheckFailed("keypair table has no free index")
        }
        localIndex = index
        let k1 = randomKey32(), k2 = randomKey32()
        gatewayKeys = SessionKeys(sendKey: k2, receiveKey: k1, localIndex: index, remoteIndex: 0x7777_0001,
                                  isInitiator: false, createdAt: .zero)
        peerKeys = SessionKeys(sendKey: k1, receiveKey: k2, localIndex: 0x7777_0001, remoteIndex: index,
                               isInitiator: true, createdAt: .zero)
        var g = gatewayKeys
        entry = KeypairEntry.make(Keypair(consuming: &g), peer: 0, tenant: 0)
        state.keypairs.publish(entry)
        state.peers.setSending(0, entry)

        var ks = gatewayKeys, kr = gatewayKeys
        sender = Keypair(consuming: &ks)
        receiver = Keypair(consuming: &kr)

        counters = WorkerCounters.allocate()
        control = ControlQueue(capacity: 8)
        processor = PacketProcessor(state: state, counters: counters, control: control, workerIndex: 0)

        frames = .allocate(byteCount: Self.count * stride, alignment: 64)
        frames.initializeMemory(as: UInt8.self, repeating: 0, count: Self.count * stride)
        tenantFrame = .allocate(byteCount: Wire.ethernetHeaderSize + length, alignment: 64)
        output = .allocate(byteCount: frameCapacity, alignment: 64)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: frameCapacity)

        // The frames from the peer: its keypair seals counters 0..<1000.
        var kp = peerKeys
        let peer = Keypair(consuming: &kp)
        for i in 0..<Self.count {
            let f = frames + i * stride
            let sealed: SealedMessage
            do {
                sealed = try uplinkInner.withUnsafeBytes { src in
                    try peer.seal(src.baseAddress!, length: length, into: f + outerLength,
                                  capacity: stride - outerLength, now: pipelineNow, mtu: tenantMTU)
                }
            } catch {
                throw SetupCheckFailed("peer Keypair.seal failed: \(error)")
            }
            guard sealed.length == messageLength, sealed.counter == UInt64(i) else {
                throw SetupCheckFailed("peer sealed \(sealed.length) B with counter \(sealed.counter)")
            }
            fromPeer.write(to: f, payloadLength: messageLength)
        }

        // Peer 0's route: the outer header template, built for the endpoint the frames come
        // from, so that receiving reports no endpoint change (the steady state).
        guard let outer = OuterFrame.parse(frames, length: frameLength) else {
            throw SetupCheckFailed("OuterFrame.parse rejects the uplink frame")
        }
        var route = toPeer
        route.endpointKey = outer.endpointKey(in: frames)
        _ = state.peers.setRoute(0, route)

        // What the tenant sends: Ethernet (namespace end → host end) + IPv4/UDP to the peer's range.
        Self.innerMAC.store(to: tenantFrame)
        Self.hostMAC.store(to: tenantFrame + 6)
        storeBigEndian16(tenantFrame, 12, Wire.etherTypeIPv4)
        tenantInner.withUnsafeBytes {
            (tenantFrame + Wire.ethernetHeaderSize).copyMemory(from: $0.baseAddress!, byteCount: length)
        }
    }

    deinit {
        for p in [frames, tenantFrame, output] { p.deallocate() }
        // The keypair table frees the published entry with the state.
    }

    @inline(__always)
    func frame(_ i: Int) -> UnsafeMutableRawPointer { frames + i &* stride }

    /// A fresh keypair for `localIndex`, published in place of the old one (receive lookup and
    /// sending keypair), as a rekey publishes one: the old entry unpublished and, with no
    /// worker running, retired at once (its keypair released, the entry freed) before the new
    /// one is made, so the new ones normally reuse the same heap blocks. 3 mallocs
    /// (the Keypair, its key block, the entry): call outside the measured region.
    func renewEntry() {
        if let old = state.keypairs.unpublish(index: localIndex) {
            state.peers.setSending(0, nil)
            // What KeypairEntry.destroy (internal) does, through the entry's public fields.
            old.pointee.keypair.release()
            old.deinitialize(count: 1)
            old.deallocate()
        }
        var g = gatewayKeys
        entry = KeypairEntry.make(Keypair(consuming: &g), peer: 0, tenant: 0)
        state.keypairs.publish(entry)
        state.peers.setSending(0, entry)
    }

    /// A receive keypair for the `Keypair open` baseline that has seen nothing yet. The old
    /// one is freed first (same heap block every sample). 2 mallocs: outside the measured region.
    func renewReceiver() {
        receiver = sender
        var k = gatewayKeys
        receiver = Keypair(consuming: &k)
    }

    /// An IPv4/UDP packet of `length` bytes (≥ 28) with a pseudo-random payload.
    static func innerPacket(length: Int, source: String, destination: String) -> [UInt8] {
        precondition(length >= 28 && length <= 0xffff)
        var p = [UInt8](repeating: 0, count: length)
        p[0] = 0x45
        p[2] = UInt8(length >> 8); p[3] = UInt8(length & 0xff)
        p[6] = 0x40                       // don't fragment
        p[8] = 64; p[9] = 17
        p.replaceSubrange(12..<16, with: IPAddress(source)!.bytes)
        p.replaceSubrange(16..<20, with: IPAddress(destination)!.bytes)
        p[20] = 0x9c; p[21] = 0x40; p[22] = 0x13; p[23] = 0x89      // ports 40000 → 5001
        p[24] = UInt8((length - 20) >> 8); p[25] = UInt8((length - 20) & 0xff)
        p.withUnsafeMutableBytes { randombytes_buf($0.baseAddress! + 28, length - 28) }
        return p
    }
}

func randomKey32() -> Key32 {
    var k = Key32()
    k.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, 32) }
    return k
}

/// A 16-bit field in network byte order (Engine's `Wire.store16` is internal).
func storeBigEndian16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
    p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
}
