// One gateway's data-plane state, built through the Engine's public API only (as the control
// plane builds it): one tenant on UDP port 51820 whose AllowedIPs send 10.10.1.0/24 to peer 0,
// one published keypair for peer 0 (receive lookup and sending keypair), and peer 0's outer
// header template. Plus the frames fed to it, and plain `Keypair`s from the same keys for
// baselines on exactly the same bytes.
//
// Shared by `xdpwg bench-probe` (callgrind's fixed batch) and the Benchmarks package's
// PipelineBenchmarks (package-benchmark), so both time the same thing, and by the fuzzers
// (the transport targets run on it).

import CSodium
import Engine
import WireGuard

/// Why a fixture refused to be used: the pipeline does not do what it should on these frames,
/// so any figure measured on it would mean nothing (a drop path is faster than delivery).
public struct PipelineCheckFailed: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// State for one inner packet size.
///
/// `frames` holds `count` uplink frames (Ethernet/IPv4 or IPv6/UDP to port 51820, carrying the
/// peer's transport messages with counters 0..<count, all of the same inner packet),
/// `stride` bytes apart like frames in a UMEM. Decrypting them needs a receive keypair that
/// has seen none of those counters (`renewEntry()`, `renewReceiver()`): one that had would drop
/// every frame as a replay before decrypting anything.
public final class PipelineFixture {
    /// A fixed monotonic time inside every keypair's lifetime (all are created at 0): no
    /// rekey-after-time, no expiry.
    public static let now = Instant(nanoseconds: 1_000_000_000)
    /// The tenant interface's MTU (wg-quick's default). Padding never goes past it, so a
    /// 1420-byte inner packet is not padded, nor is any multiple of 16.
    public static let mtu = 1420
    /// Room in every output buffer, as in a UMEM frame (2048 bytes per frame).
    public static let frameCapacity = 2048
    /// The smallest inner packet the fixture builds: IPv4 + UDP headers.
    public static let minimumLength = 28

    public static let uplinkMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x01)
    public static let nextHopMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x02)
    public static let hostMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x11)
    public static let innerMAC = EthernetAddress(0x02, 0, 0, 0, 0, 0x12)
    public static let listenPort: UInt16 = 51820
    public static let peerPort: UInt16 = 40000

    /// Uplink frames in `frames`.
    public let count: Int
    public let length: Int                  // inner IP packet bytes (the plaintext)
    public let messageLength: Int           // transport message: 16 + length + 16
    public let outerLength: Int             // Ethernet + IP + UDP in front of the message
    public let frameLength: Int             // one uplink frame
    public let stride: Int

    public let state: DataPlaneState
    public var processor: PacketProcessor
    /// `.off` in the crypto-off variant (see `init`).
    public let crypto: TransportCrypto
    public let counters: WorkerCounters
    /// Kept alive here: the processor holds it without a reference count.
    public let control: ControlQueue
    public let localIndex: UInt32
    /// The gateway's session keys (receives with k1, sends with k2) and the peer's mirror.
    /// Random test keys, wiped with the fixture all the same.
    public private(set) var gatewayKeys: SessionKeys
    public private(set) var peerKeys: SessionKeys
    /// The entry published for `localIndex` and as peer 0's sending keypair.
    public private(set) var entry: UnsafeMutablePointer<KeypairEntry>

    /// Baselines: plain `Keypair`s from the gateway's keys, for use on the same buffers.
    public let sender: Keypair
    public private(set) var receiver: Keypair

    public let frames: UnsafeMutableRawPointer        // count × stride uplink frames
    public let tenantFrame: UnsafeMutableRawPointer   // Ethernet + inner packet: what a tenant sends
    public let output: UnsafeMutableRawPointer        // frameCapacity: tenant frame (decrypt) or uplink frame (encrypt)
    public let uplinkInner: [UInt8]                   // the inner packet the peer sent (decrypt)
    public let tenantInner: [UInt8]                   // the inner packet the tenant sends (encrypt)
    /// The outer header of the peer's frames (peer → gateway): wraps other messages the same way.
    public let fromPeer: OuterHeaderTemplate

    /// Builds the state and `count` frames of `length`-byte inner packets. `length` must be
    /// 28...1420 and either 1420 or a multiple of 16, so that nothing is padded and the
    /// pipeline and a plain `Keypair` encrypt the same bytes. `random` supplies the session
    /// keys and the inner packets' payload: the CSPRNG unless a caller (the fuzzers) needs the
    /// same fixture in every run.
    ///
    /// `crypto: .off` builds the perf lab's crypto-off variant: the peer's frames and the
    /// pipeline carry plaintext and a zero tag (everything but the AEAD), for the cost of the
    /// pipeline around the cipher.
    public init(length: Int, count: Int, outerIPv6: Bool = false, crypto: TransportCrypto = .on,
                random: (UnsafeMutableRawBufferPointer) -> Void = PipelineFixture.systemRandom) throws(PipelineCheckFailed) {
        guard (Self.minimumLength...Self.mtu).contains(length) else {
            throw PipelineCheckFailed("inner packet size \(length) B: must be \(Self.minimumLength)...\(Self.mtu) B")
        }
        guard count >= 1, count <= 1_000_000 else {
            throw PipelineCheckFailed("frame count \(count): must be 1...1000000")
        }
        guard sodium_init() >= 0 else { throw PipelineCheckFailed("sodium_init failed: libsodium cannot be used") }
        self.count = count
        self.length = length
        self.crypto = crypto
        messageLength = Keypair.messageLength(plaintextLength: length, mtu: Self.mtu)
        guard messageLength == WireGuardProtocol.keepaliveSize + length else {
            throw PipelineCheckFailed(
                "inner packet size \(length) B would be padded to a multiple of 16: use 1420 or a multiple of 16")
        }
        let gatewayAddress = IPAddress(outerIPv6 ? "2001:db8::2" : "192.0.2.2")!
        let peerAddress = IPAddress(outerIPv6 ? "2001:db8::1" : "192.0.2.1")!
        let toPeer = OuterHeaderTemplate(sourceMAC: Self.uplinkMAC, destinationMAC: Self.nextHopMAC, vlanTCI: 0,
                                         source: gatewayAddress, sourcePort: Self.listenPort,
                                         destination: peerAddress, destinationPort: Self.peerPort)
        fromPeer = OuterHeaderTemplate(sourceMAC: Self.nextHopMAC, destinationMAC: Self.uplinkMAC, vlanTCI: 0,
                                       source: peerAddress, sourcePort: Self.peerPort,
                                       destination: gatewayAddress, destinationPort: Self.listenPort)
        let outerLength = toPeer.length, messageLength = messageLength
        // 64-byte aligned slots, like frames in a UMEM.
        let stride = (outerLength + messageLength + 63) & ~63
        self.outerLength = outerLength
        frameLength = outerLength + messageLength
        self.stride = stride
        let uplinkInner = Self.innerPacket(length: length, source: "10.10.1.2", destination: "10.10.0.1", random: random)
        self.uplinkInner = uplinkInner
        tenantInner = Self.innerPacket(length: length, source: "10.10.0.1", destination: "10.10.1.2", random: random)

        // The tenant and its routes.
        var table = AllowedIPs()
        table.insert(IPPrefix("10.10.1.0/24")!, peer: 0)
        table.insert(IPPrefix("fd00:a::/64")!, peer: 0)
        state = DataPlaneState(tenants: [TenantRoute(listenPort: Self.listenPort, allowedIPs: table,
                                                     hostMAC: Self.hostMAC, innerMAC: Self.innerMAC, mtu: Self.mtu)],
                               peerCapacity: 1, keypairCapacity: 64, workerCount: 1)

        // A session with peer 0, published as the control plane does after a handshake.
        guard let index = state.keypairs.allocateIndex(random: { 0x5EED_0000 }) else {
            throw PipelineCheckFailed("keypair table has no free index")
        }
        localIndex = index
        var k1 = Key32(), k2 = Key32()
        k1.withUnsafeMutableBytes(random)
        k2.withUnsafeMutableBytes(random)
        defer { k1.wipe(); k2.wipe() }
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
        processor = PacketProcessor(state: state, counters: counters, control: control, workerIndex: 0, crypto: crypto)

        frames = .allocate(byteCount: count * stride, alignment: 64)
        frames.initializeMemory(as: UInt8.self, repeating: 0, count: count * stride)
        tenantFrame = .allocate(byteCount: Wire.ethernetHeaderSize + length, alignment: 64)
        output = .allocate(byteCount: Self.frameCapacity, alignment: 64)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: Self.frameCapacity)

        // The frames from the peer: its keypair seals counters 0..<count.
        var kp = peerKeys
        let peer = Keypair(consuming: &kp)
        for i in 0..<count {
            let f = frames + i * stride
            let sealed: SealedMessage
            do {
                sealed = try uplinkInner.withUnsafeBytes { src in
                    try crypto.seal(peer, src.baseAddress!, length: length, into: f + outerLength,
                                    capacity: stride - outerLength, now: Self.now, cipher: TransportCipher(), mtu: Self.mtu)
                }
            } catch {
                throw PipelineCheckFailed("the peer's Keypair.seal of frame \(i) failed: \(error)")
            }
            guard sealed.length == messageLength, sealed.counter == UInt64(i) else {
                throw PipelineCheckFailed("the peer sealed \(sealed.length) B with counter \(sealed.counter) for frame \(i)")
            }
            fromPeer.write(to: f, payloadLength: messageLength)
        }

        // Peer 0's route: the outer header template, built for the endpoint the frames come
        // from, so that receiving reports no endpoint change (the steady state).
        guard let outer = OuterFrame.parse(frames, length: frameLength) else {
            throw PipelineCheckFailed("OuterFrame.parse rejects the uplink frame")
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
        gatewayKeys.wipe()
        peerKeys.wipe()
        for p in [frames, tenantFrame, output] { p.deallocate() }
        // The keypair table frees the published entry with the state.
    }

    /// Uplink frame `i` (0..<count).
    @inline(__always)
    public func frame(_ i: Int) -> UnsafeMutableRawPointer { frames + i &* stride }

    /// A fresh keypair for `localIndex`, published in place of the old one (receive lookup and
    /// sending keypair), as a rekey publishes one: the old entry unpublished and, with no
    /// worker running, retired at once (its keypair released, the entry freed) before the new
    /// one is made, so the new ones normally reuse the same heap blocks. 3 mallocs
    /// (the Keypair, its key block, the entry): call outside any measured region.
    public func renewEntry() {
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

    /// A baseline receive keypair that has seen nothing yet. The old one is freed first (same
    /// heap block every time). 2 mallocs: call outside any measured region.
    public func renewReceiver() {
        receiver = sender
        var k = gatewayKeys
        receiver = Keypair(consuming: &k)
    }

    /// An IPv4/UDP packet of `length` bytes (28...65535) with a pseudo-random payload.
    static func innerPacket(length: Int, source: String, destination: String,
                            random: (UnsafeMutableRawBufferPointer) -> Void) -> [UInt8] {
        var p = [UInt8](repeating: 0, count: length)
        p[0] = 0x45
        p[2] = UInt8(length >> 8); p[3] = UInt8(length & 0xff)
        p[6] = 0x40                       // don't fragment
        p[8] = 64; p[9] = 17
        p.replaceSubrange(12..<16, with: IPAddress(source)!.bytes)
        p.replaceSubrange(16..<20, with: IPAddress(destination)!.bytes)
        p[20] = 0x9c; p[21] = 0x40; p[22] = 0x13; p[23] = 0x89      // ports 40000 → 5001
        p[24] = UInt8((length - 20) >> 8); p[25] = UInt8((length - 20) & 0xff)
        p.withUnsafeMutableBytes { random(UnsafeMutableRawBufferPointer(rebasing: $0[28...])) }
        return p
    }

    /// libsodium's CSPRNG: the default source of keys and payloads.
    public static func systemRandom(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        randombytes_buf(base, buffer.count)
    }
}

/// A 16-bit field in network byte order (Engine's `Wire.store16` is internal).
func storeBigEndian16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: UInt16) {
    p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
}
