// Targets `transportOpen`, `innerPacket` and `uplinkFrame`: transport messages opened by an
// established keypair (the protocol core) and whole frames through the data plane's
// per-packet pipeline (Engine's PacketProcessor), driven in memory by Bench's
// PipelineFixture with repeatable keys.

import Fixtures
import Engine
import WireGuard

/// The pipeline in memory: one tenant (UDP port 51820), peer 0 with AllowedIPs 10.10.1.0/24
/// and fd00:a::/64 and a published keypair, and the frames handed to it.
final class PipelineHarness {
    nonisolated(unsafe) static let shared = PipelineHarness()

    let fixture: PipelineFixture
    /// An uplink frame being processed (room for the largest input plus outer headers).
    let frame = Scratch(FuzzTarget.maxPacketInput + 256)
    /// The tenant frame (decrypt) or uplink frame (encrypt) the pipeline writes: one UMEM frame.
    let output = Scratch(PipelineFixture.frameCapacity)
    /// Plaintext opened by the peer's side in checks.
    let plaintext = Scratch(PipelineFixture.frameCapacity)

    private init() {
        let random = DeterministicRandom(seed: 0xF1_2A_7E)
        do throws(PipelineCheckFailed) {
            fixture = try PipelineFixture(length: 32, count: 1, random: { random.fill($0) })
        } catch {
            harnessFailure("the pipeline fixture: \(error)")
        }
    }

    /// The gateway's receive keypair for peer 0 (in the fixture's published entry).
    private var receiveKeypair: Keypair { fixture.entry.pointee.keypair.takeUnretainedValue() }

    /// Runs the first `length` bytes of `frame` through the pipeline's decrypt path (arrive,
    /// then decrypt into `output`) and checks what it delivers. The published keypair is
    /// renewed first when a previous frame moved its replay window, so every frame meets the
    /// same state.
    func decrypt(length: Int, expectedPlaintext: UnsafeRawBufferPointer? = nil) -> PacketProcessor.DecryptResult {
        if receiveKeypair.greatestReceivedCounter != nil { fixture.renewEntry() }
        defer { fixture.control.drain { _, _ in } }
        let f = frame.buffer.baseAddress!
        if let outer = OuterFrame.parse(f, length: length) {
            // Every offset the parser returns must lie inside the frame.
            guard outer.ipOffset >= Wire.ethernetHeaderSize,
                  outer.payloadOffset >= outer.ipOffset + Wire.ipv4HeaderSize + Wire.udpHeaderSize,
                  outer.payloadLength >= 0, outer.payloadOffset + outer.payloadLength <= length else {
                finding("OuterFrame.parse of a \(length)-byte frame: ip at \(outer.ipOffset), payload \(outer.payloadLength) B at \(outer.payloadOffset)")
            }
        }
        let result = fixture.processor.decrypt(f, length: length, into: output.buffer.baseAddress!,
                                               tenantCapacity: output.buffer.count, now: PipelineFixture.now)
        if case .deliver(let tenant, let delivered) = result {
            checkDelivered(tenant: tenant, length: delivered, expectedPlaintext: expectedPlaintext)
        }
        return result
    }

    /// A delivered tenant frame: tenant 0, an Ethernet header naming the inner IP version, an
    /// inner packet whose length fits, and an inner source inside peer 0's AllowedIPs
    /// (cryptokey routing: anything else delivered is a finding).
    private func checkDelivered(tenant: Int, length: Int, expectedPlaintext: UnsafeRawBufferPointer?) {
        let out = output.buffer
        guard tenant == 0, length > Wire.ethernetHeaderSize, length <= out.count else {
            finding("delivered \(length) B to tenant \(tenant)")
        }
        let inner = UnsafeRawBufferPointer(rebasing: out[Wire.ethernetHeaderSize..<length])
        let version = inner[0] >> 4
        let etherType = UInt16(out[12]) << 8 | UInt16(out[13])
        guard (version == 4 && etherType == Wire.etherTypeIPv4) || (version == 6 && etherType == Wire.etherTypeIPv6) else {
            finding("delivered an IPv\(version) packet as EtherType \(etherType)")
        }
        guard InnerPacket(inner)?.length == inner.count else {
            finding("delivered \(inner.count) B of a packet that declares \(String(describing: InnerPacket(inner)?.length))")
        }
        guard PipelineHarness.isPeerAddress(inner, sourceOf: true) else {
            finding("delivered a packet whose inner source is outside the peer's AllowedIPs")
        }
        if let expectedPlaintext {
            // The packet may declare a length reaching into the zero padding, as the kernel
            // allows (it only refuses lengths beyond the padded plaintext).
            for (i, byte) in inner.enumerated() where byte != (i < expectedPlaintext.count ? expectedPlaintext[i] : 0) {
                finding("delivered byte \(i) differs from the padded plaintext the peer sealed")
            }
        }
    }

    /// Whether the packet's source (or destination) is in peer 0's AllowedIPs: 10.10.1.0/24 or
    /// fd00:a::/64. Written out from the fixture's routes, independently of AllowedIPs.
    static func isPeerAddress(_ packet: UnsafeRawBufferPointer, sourceOf: Bool) -> Bool {
        if packet[0] >> 4 == 4 {
            let a = sourceOf ? 12 : 16
            return packet[a] == 10 && packet[a + 1] == 10 && packet[a + 2] == 1
        }
        let a = sourceOf ? 8 : 24
        return Array(packet[a..<(a + 8)]) == [0xfd, 0, 0, 0x0a, 0, 0, 0, 0]
    }

    /// Puts `message` behind the peer's outer header in `frame`; returns the frame's length.
    func wrap(_ message: UnsafeRawBufferPointer) -> Int {
        let header = fixture.fromPeer.length
        let n = min(message.count, frame.buffer.count - header)
        if n > 0 { (frame.buffer.baseAddress! + header).copyMemory(from: message.baseAddress!, byteCount: n) }
        fixture.fromPeer.write(to: frame.buffer.baseAddress!, payloadLength: n)
        return header + n
    }

    /// A fresh keypair of the peer's side (sends what the gateway receives, and opens what it sends).
    func peerKeypair() -> Keypair {
        var keys = fixture.peerKeys
        return Keypair(consuming: &keys)
    }

    /// The tenant frame at `tenantFrame` through the encrypt path into `output`; a sent frame
    /// must parse, open with the peer's keys to the inner packet, and go to a destination in
    /// the peer's AllowedIPs.
    func encrypt(_ tenantFrame: UnsafeRawBufferPointer) -> PacketProcessor.EncryptResult {
        defer { fixture.control.drain { _, _ in } }
        guard let base = tenantFrame.baseAddress else { return .dropped(.tenantMalformed) }
        let out = output.buffer
        let result = fixture.processor.encrypt(tenant: 0, frame: base, length: tenantFrame.count,
                                               into: out.baseAddress!, uplinkCapacity: out.count, now: PipelineFixture.now)
        guard case .send(let length) = result else { return result }
        guard length <= out.count, let outer = OuterFrame.parse(out.baseAddress!, length: length),
              outer.payloadOffset + outer.payloadLength == length else {
            finding("the encrypt path sent a \(length)-byte frame its own parser refuses")
        }
        let inner = UnsafeRawBufferPointer(rebasing: tenantFrame[Wire.ethernetHeaderSize...])
        guard let packetLength = InnerPacket(inner)?.length else {
            finding("the encrypt path sent a packet that declares no length")
        }
        guard PipelineHarness.isPeerAddress(inner, sourceOf: false) else {
            finding("the encrypt path sent a packet whose destination is outside the peer's AllowedIPs")
        }
        let opened: Int
        do throws(TransportRejection) {
            opened = try peerKeypair().open(out.baseAddress! + outer.payloadOffset, length: outer.payloadLength,
                                            into: plaintext.buffer.baseAddress!, capacity: plaintext.buffer.count,
                                            now: PipelineFixture.now, cipher: TransportCipher())
        } catch {
            finding("the peer cannot open what the encrypt path sent: \(error)")
        }
        guard opened >= packetLength,
              UnsafeRawBufferPointer(rebasing: plaintext.buffer[..<packetLength]).elementsEqual(inner.prefix(packetLength))
        else {
            finding("the peer opened other bytes than the tenant sent")
        }
        return result
    }
}

/// `transportOpen`. Control byte: `Mode` (the value modulo 3).
final class TransportHarness {
    nonisolated(unsafe) static let shared = TransportHarness()

    enum Mode: UInt8 {
        /// The body is a transport message: a fresh keypair of the transcript's responder opens
        /// it out of place; an accepted one must open in place alike, and be refused as a replay.
        case keypair = 0
        /// The body is a transport message sent to the pipeline fixture's tenant: wrapped in the
        /// peer's outer header and decrypted by the pipeline.
        case pipeline = 1
        /// The body is a sequence of 64-bit little-endian counters: each is sealed as a keepalive
        /// by the transcript's initiator and opened by one keypair, against a model of the
        /// replay window.
        case window = 2
    }

    let transcript = Transcript.shared
    let plaintext = Scratch(FuzzTarget.maxPacketInput)
    let copy = Scratch(FuzzTarget.maxPacketInput)
    let keepalive = Scratch(WireGuardProtocol.keepaliveSize)

    private init() {}

    func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let input = ControlledInput(input)
        let body = UnsafeRawBufferPointer(rebasing: input.body.prefix(FuzzTarget.maxPacketInput))
        switch Mode(rawValue: input.control % 3)! {
        case .keypair: return openWithKeypair(body)
        case .pipeline:
            let harness = PipelineHarness.shared
            let length = harness.wrap(body)
            return PipelineResult(harness.decrypt(length: length)).fuzzResult
        case .window: return replayWindow(body)
        }
    }

    private func receiver() -> Keypair {
        var keys = transcript.responderKeys
        return Keypair(consuming: &keys)
    }

    private func openWithKeypair(_ body: UnsafeRawBufferPointer) -> FuzzResult {
        guard let base = body.baseAddress else { return .rejected("empty") }
        let keypair = receiver()
        let n: Int
        do throws(TransportRejection) {
            n = try keypair.open(base, length: body.count, into: plaintext.buffer.baseAddress!,
                                 capacity: plaintext.buffer.count, now: FuzzClock.now, cipher: TransportCipher())
        } catch {
            return .rejected("\(error)")
        }
        guard n == body.count - WireGuardProtocol.keepaliveSize else {
            finding("opened \(n) B of plaintext from a \(body.count)-byte message")
        }
        // The same message again: a replay.
        do throws(TransportRejection) {
            _ = try keypair.open(base, length: body.count, into: plaintext.buffer.baseAddress!,
                                 capacity: plaintext.buffer.count, now: FuzzClock.now, cipher: TransportCipher())
            finding("a keypair accepted the same message twice")
        } catch {
            guard error == .replayed else { finding("a message opened twice is \(error), not .replayed") }
        }
        // In place, on a keypair that has seen nothing: the same plaintext.
        let m = copy.load(body)
        do throws(TransportRejection) {
            let n2 = try receiver().openInPlace(m.baseAddress!, length: m.count, now: FuzzClock.now,
                                                     cipher: TransportCipher())
            guard n2 == n, UnsafeRawBufferPointer(rebasing: m[16..<(16 + n)])
                .elementsEqual(UnsafeRawBufferPointer(rebasing: plaintext.buffer[..<n])) else {
                finding("open and openInPlace disagree")
            }
        } catch {
            finding("openInPlace refused (\(error)) what open accepted")
        }
        return .accepted("opened \(n) B")
    }

    /// The replay window against a model of the kernel's rule: a counter is taken once, and
    /// only while it is at most 8128 behind the greatest taken and below REJECT_AFTER_MESSAGES;
    /// once the greatest possible counter was taken, nothing more is. The window's documented
    /// limit: a counter exactly a multiple of 2^37 ahead of one taken before (same 32-bit tag,
    /// same bit) may be refused, never accepted twice.
    private func replayWindow(_ body: UnsafeRawBufferPointer) -> FuzzResult {
        let keypair = receiver()
        let key = transcript.initiatorKeys.sendKey
        var taken: [UInt64] = []
        var greatest: UInt64?
        let count = min(body.count / 8, 256)
        for i in 0..<count {
            let counter = UInt64(littleEndian: body.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
            let m = keepalive.buffer
            TransportHeader(receiverIndex: keypair.localIndex, counter: counter).write(to: m.baseAddress!)
            key.withUnsafeBytes { k in
                AEAD.seal(key: k.baseAddress!, counter: counter, source: UnsafeRawPointer(m.baseAddress! + 16), length: 0,
                          destination: m.baseAddress! + 16)
            }
            let accepted: Bool
            do throws(TransportRejection) {
                _ = try keypair.open(m.baseAddress!, length: m.count, into: plaintext.buffer.baseAddress!,
                                     capacity: plaintext.buffer.count, now: FuzzClock.now, cipher: TransportCipher())
                accepted = true
            } catch {
                accepted = false
            }
            let limit = WireGuardProtocol.rejectAfterMessages
            let exhausted = greatest == limit - 1
            let seen = taken.contains(counter)
            let inWindow = greatest.map { counter > $0 || $0 - counter <= UInt64(WireGuardProtocol.replayWindowSize) } ?? true
            let mayAccept = !exhausted && !seen && counter < limit && inWindow
            if accepted && !mayAccept {
                finding("the window took counter \(counter) (greatest \(String(describing: greatest)), seen \(seen))")
            }
            if !accepted && mayAccept && !taken.contains(where: { ($0 ^ counter) & ((1 << 37) - 1) == 0 }) {
                finding("the window refused new counter \(counter) (greatest \(String(describing: greatest)))")
            }
            if accepted {
                taken.append(counter)
                greatest = max(greatest ?? counter, counter)
            }
        }
        return .accepted("\(taken.count) of \(count) counters taken")
    }
}

/// `innerPacket` and `uplinkFrame`.
final class InnerPacketHarness {
    nonisolated(unsafe) static let shared = InnerPacketHarness()

    enum Mode: UInt8 {
        /// The body is the plaintext of a transport message the peer seals (so it authenticates)
        /// and the pipeline decrypts: the inner checks and cryptokey routing see any bytes.
        case decrypted = 0
        /// The body is an inner packet a tenant sends: the harness puts an Ethernet header in
        /// front (EtherType from the IP version nibble) and the pipeline encrypts it.
        case tenantPacket = 1
        /// The body is a whole tenant frame, Ethernet header included, for the encrypt path.
        case tenantFrame = 2
    }

    let pipeline = PipelineHarness.shared
    let sealed = Scratch(FuzzTarget.maxPacketInput + 64)
    let tenant = Scratch(FuzzTarget.maxPacketInput + Wire.ethernetHeaderSize)

    private init() {}

    func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let input = ControlledInput(input)
        let body = UnsafeRawBufferPointer(rebasing: input.body.prefix(PipelineFixture.frameCapacity))
        switch Mode(rawValue: input.control % 3)! {
        case .decrypted:
            // The peer seals the body; the pipeline opens it.
            let message: Int
            do throws(SealFailure) {
                let source = body.baseAddress ?? UnsafeRawPointer(sealed.buffer.baseAddress!)
                message = try pipeline.peerKeypair().seal(source, length: body.count, into: sealed.buffer.baseAddress!,
                                                          capacity: sealed.buffer.count, now: PipelineFixture.now,
                                                          cipher: TransportCipher(), mtu: PipelineFixture.mtu).length
            } catch {
                return .rejected("the peer cannot seal \(body.count) B: \(error)")
            }
            let length = pipeline.wrap(UnsafeRawBufferPointer(rebasing: sealed.buffer[..<message]))
            return PipelineResult(pipeline.decrypt(length: length, expectedPlaintext: body)).fuzzResult
        case .tenantPacket:
            let t = tenant.buffer
            PipelineFixture.innerMAC.store(to: t.baseAddress!)
            PipelineFixture.hostMAC.store(to: t.baseAddress! + 6)
            let v6 = body.first.map { $0 >> 4 == 6 } ?? false
            t[12] = v6 ? 0x86 : 0x08
            t[13] = v6 ? 0xdd : 0x00
            if !body.isEmpty { (t.baseAddress! + Wire.ethernetHeaderSize).copyMemory(from: body.baseAddress!, byteCount: body.count) }
            let frame = UnsafeRawBufferPointer(rebasing: t[..<(Wire.ethernetHeaderSize + body.count)])
            return PipelineResult(pipeline.encrypt(frame)).fuzzResult
        case .tenantFrame:
            return PipelineResult(pipeline.encrypt(body)).fuzzResult
        }
    }

    /// `uplinkFrame`: the input is the whole frame.
    func runUplinkFrame(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        let f = pipeline.frame.load(UnsafeRawBufferPointer(rebasing: input.prefix(FuzzTarget.maxPacketInput)))
        return PipelineResult(pipeline.decrypt(length: f.count)).fuzzResult
    }
}

/// The pipeline's verdicts as fuzz results, drops by their counter names.
struct PipelineResult {
    let fuzzResult: FuzzResult

    init(_ r: PacketProcessor.DecryptResult) {
        switch r {
        case .deliver(let tenant, let length): fuzzResult = .accepted("delivered \(length) B to tenant \(tenant)")
        case .consumed: fuzzResult = .accepted("consumed")
        case .dropped(let reason): fuzzResult = .rejected(reason.name)
        }
    }

    init(_ r: PacketProcessor.EncryptResult) {
        switch r {
        case .send(let length): fuzzResult = .accepted("sent \(length) B")
        case .staged: fuzzResult = .accepted("staged")
        case .dropped(let reason): fuzzResult = .rejected(reason.name)
        }
    }
}
