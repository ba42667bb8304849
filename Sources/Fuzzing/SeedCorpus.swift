// The seed corpora (Fuzz/Corpus/TARGET/seed-NAME): small valid and near-valid inputs made
// from the fixed world, so they are the same bytes on every machine and every run. The
// FuzzingTests suite checks that the committed files are exactly these, and rewrites them
// when XDPWG_WRITE_FUZZ_SEEDS=1 is set.

import Fixtures
import Engine
import WireGuard

/// One seed input.
public struct FuzzSeed: Sendable {
    /// The file name under Fuzz/Corpus/TARGET/ ("seed-" and a description).
    public let name: String
    public let bytes: [UInt8]

    init(_ name: String, _ bytes: [UInt8]) {
        self.name = "seed-" + name
        self.bytes = bytes
    }

    init(_ name: String, control: UInt8, _ body: [UInt8]) { self.init(name, [control] + body) }

    init(_ name: String, text: String) { self.init(name, Array(text.utf8)) }
}

extension FuzzTarget {
    /// This target's seeds, in a fixed order.
    public var seeds: [FuzzSeed] {
        switch self {
        case .messages: SeedCorpus.messages()
        case .handshakeInitiation: SeedCorpus.initiation()
        case .handshakeResponse: SeedCorpus.response()
        case .handshakeCookie: SeedCorpus.cookie()
        case .transportOpen: SeedCorpus.transport()
        case .innerPacket: SeedCorpus.innerPacket()
        case .uplinkFrame: SeedCorpus.uplinkFrame()
        case .configuration: SeedCorpus.configuration()
        case .uapi: SeedCorpus.uapi()
        }
    }
}

enum SeedCorpus {
    static var transcript: Transcript { Transcript.shared }

    /// `bytes` with byte `index` XORed with `mask`.
    static func flipped(_ bytes: [UInt8], at index: Int, _ mask: UInt8 = 0x01) -> [UInt8] {
        var b = bytes
        b[index] ^= mask
        return b
    }

    static func messages() -> [FuzzSeed] {
        let t = transcript
        var unknown = t.transport[0]
        unknown[0] = 5
        return [
            FuzzSeed("initiation", t.initiation),
            FuzzSeed("initiation-mac2", t.initiationWithMAC2),
            FuzzSeed("response", t.response),
            FuzzSeed("cookie-reply", t.cookieReply),
            FuzzSeed("transport-keepalive", t.transport[0]),
            FuzzSeed("transport-ipv4", t.transport[1]),
            FuzzSeed("transport-ipv6", t.transport[2]),
            FuzzSeed("initiation-truncated", Array(t.initiation.dropLast())),
            FuzzSeed("response-trailing-byte", t.response + [0]),
            FuzzSeed("transport-short", Array(t.transport[0].dropLast())),
            FuzzSeed("unknown-type", unknown),
            FuzzSeed("reserved-not-zero", flipped(t.cookieReply, at: 2)),
            FuzzSeed("empty", []),
        ]
    }

    /// Fields of a constructed initiation (see InitiationHarness.runConstructed).
    static func constructed(sender: UInt8, delayMilliseconds: UInt16) -> [UInt8] {
        [sender] + Array(repeating: 0x55, count: 32) + FuzzClock.timestamp.bytes
            + [0x01, 0x00, 0x11, 0x11] + [UInt8(delayMilliseconds & 0xff), UInt8(delayMilliseconds >> 8)]
    }

    static func initiation() -> [FuzzSeed] {
        typealias F = InitiationHarness.Flag
        let t = transcript
        var garbage = [UInt8](repeating: 0xA5, count: InitiationMessage.size)
        garbage[0] = 1; garbage[1] = 0; garbage[2] = 0; garbage[3] = 0
        return [
            FuzzSeed("as-sent", control: 0, t.initiation),
            FuzzSeed("as-sent-with-mac2", control: 0, t.initiationWithMAC2),
            FuzzSeed("harness-mac1", control: F.validMAC1, t.initiation),
            FuzzSeed("under-load-cookie-reply", control: F.validMAC1 | F.underLoad, t.initiation),
            FuzzSeed("under-load-valid-mac2", control: F.validMAC2 | F.underLoad, t.initiation),
            FuzzSeed("under-load-rate-limited", control: F.validMAC2 | F.underLoad | F.exhaustedSource, t.initiation),
            FuzzSeed("bad-mac1", control: 0, flipped(t.initiation, at: InitiationMessage.Offset.mac1)),
            FuzzSeed("garbage-with-mac1", control: F.validMAC1, garbage),
            FuzzSeed("bad-static-with-mac1", control: F.validMAC1, flipped(t.initiation, at: InitiationMessage.Offset.encryptedStatic)),
            FuzzSeed("constructed-peer-a", control: F.constructed, constructed(sender: 0, delayMilliseconds: 0)),
            FuzzSeed("constructed-peer-b-later", control: F.constructed, constructed(sender: 1, delayMilliseconds: 25)),
            FuzzSeed("constructed-stranger", control: F.constructed, constructed(sender: 2, delayMilliseconds: 0)),
        ]
    }

    static func response() -> [FuzzSeed] {
        typealias F = ResponseHarness.Flag
        let t = transcript
        var garbage = [UInt8](repeating: 0x5A, count: ResponseMessage.size)
        garbage[0] = 2; garbage[1] = 0; garbage[2] = 0; garbage[3] = 0
        return [
            FuzzSeed("as-sent", control: 0, t.response),
            FuzzSeed("harness-mac1", control: F.validMAC1, t.response),
            FuzzSeed("under-load-cookie-reply", control: F.validMAC1 | F.underLoad, t.response),
            FuzzSeed("under-load-valid-mac2", control: F.validMAC2 | F.underLoad, t.response),
            FuzzSeed("wrong-receiver", control: F.validMAC1, flipped(t.response, at: ResponseMessage.Offset.receiver)),
            FuzzSeed("bad-tag", control: F.validMAC1, flipped(t.response, at: ResponseMessage.Offset.encryptedNothing)),
            FuzzSeed("garbage-with-mac1", control: F.validMAC1, garbage),
        ]
    }

    static func cookie() -> [FuzzSeed] {
        let t = transcript
        var noReceiver = t.cookieReply
        for i in 4..<8 { noReceiver[i] = 0 }
        return [
            FuzzSeed("as-sent", control: 0, t.cookieReply),
            FuzzSeed("receiver-by-harness", control: 1, noReceiver),
            FuzzSeed("bad-nonce", control: 0, flipped(t.cookieReply, at: CookieReplyMessage.Offset.nonce)),
            FuzzSeed("bad-cookie", control: 0, flipped(t.cookieReply, at: CookieReplyMessage.Offset.encryptedCookie)),
        ]
    }

    /// 64-bit little-endian counters.
    static func counters(_ values: [UInt64]) -> [UInt8] {
        values.flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    }

    static func transport() -> [FuzzSeed] {
        let t = transcript
        let pipeline = PipelineHarness.shared.fixture
        let fixtureMessage = Array(UnsafeRawBufferPointer(start: pipeline.frame(0) + pipeline.outerLength,
                                                          count: pipeline.messageLength))
        let window = UInt64(WireGuardProtocol.replayWindowSize)
        let limit = WireGuardProtocol.rejectAfterMessages
        return [
            FuzzSeed("keypair-keepalive", control: TransportHarness.Mode.keypair.rawValue, t.transport[0]),
            FuzzSeed("keypair-ipv4", control: TransportHarness.Mode.keypair.rawValue, t.transport[1]),
            FuzzSeed("keypair-ipv6", control: TransportHarness.Mode.keypair.rawValue, t.transport[2]),
            FuzzSeed("keypair-bad-tag", control: TransportHarness.Mode.keypair.rawValue, flipped(t.transport[1], at: 20)),
            FuzzSeed("keypair-wrong-receiver", control: TransportHarness.Mode.keypair.rawValue, flipped(t.transport[1], at: 4)),
            FuzzSeed("pipeline-ipv4", control: TransportHarness.Mode.pipeline.rawValue, fixtureMessage),
            FuzzSeed("pipeline-bad-tag", control: TransportHarness.Mode.pipeline.rawValue, flipped(fixtureMessage, at: 20)),
            FuzzSeed("window-in-order-and-replays", control: TransportHarness.Mode.window.rawValue,
                     counters([0, 1, 2, 2, 1, 0, 5, 3, 4])),
            FuzzSeed("window-far-ahead-and-behind", control: TransportHarness.Mode.window.rawValue,
                     counters([10_000, 10_000 - window, 10_000 - window - 1, 20_000, 9_999, 1 << 40])),
            FuzzSeed("window-limit", control: TransportHarness.Mode.window.rawValue,
                     counters([limit - 2, limit, limit - 1, limit - 3, 0])),
        ]
    }

    static func innerPacket() -> [FuzzSeed] {
        typealias M = InnerPacketHarness.Mode
        let fromPeer4 = InnerPackets.ipv4(source: [10, 10, 1, 2], destination: [10, 10, 0, 1], payloadLength: 36)
        let fromPeer6 = InnerPackets.ipv6(source: InnerPackets.peerIPv6, destination: InnerPackets.tenantIPv6, payloadLength: 24)
        let spoofed = InnerPackets.ipv4(source: [10, 10, 9, 9], destination: [10, 10, 0, 1], payloadLength: 36)
        let toPeer4 = InnerPackets.ipv4(source: [10, 10, 0, 1], destination: [10, 10, 1, 2], payloadLength: 36)
        let toPeer6 = InnerPackets.ipv6(source: InnerPackets.tenantIPv6, destination: InnerPackets.peerIPv6, payloadLength: 24)
        let nowhere = InnerPackets.ipv4(source: [10, 10, 0, 1], destination: [10, 20, 0, 1], payloadLength: 36)
        let pipeline = PipelineHarness.shared.fixture
        let tenantFrame = Array(UnsafeRawBufferPointer(start: pipeline.tenantFrame,
                                                       count: Wire.ethernetHeaderSize + pipeline.length))
        return [
            FuzzSeed("decrypted-ipv4", control: M.decrypted.rawValue, fromPeer4),
            FuzzSeed("decrypted-ipv6", control: M.decrypted.rawValue, fromPeer6),
            FuzzSeed("decrypted-spoofed-source", control: M.decrypted.rawValue, spoofed),
            FuzzSeed("decrypted-keepalive", control: M.decrypted.rawValue, []),
            FuzzSeed("decrypted-truncated", control: M.decrypted.rawValue, Array(fromPeer4.prefix(19))),
            FuzzSeed("decrypted-length-beyond", control: M.decrypted.rawValue, flipped(fromPeer4, at: 2, 0x04)),
            FuzzSeed("tenant-ipv4", control: M.tenantPacket.rawValue, toPeer4),
            FuzzSeed("tenant-ipv6", control: M.tenantPacket.rawValue, toPeer6),
            FuzzSeed("tenant-no-route", control: M.tenantPacket.rawValue, nowhere),
            FuzzSeed("tenant-frame", control: M.tenantFrame.rawValue, tenantFrame),
        ]
    }

    static func uplinkFrame() -> [FuzzSeed] {
        let pipeline = PipelineHarness.shared.fixture
        let frame = Array(UnsafeRawBufferPointer(start: pipeline.frame(0), count: pipeline.frameLength))
        let message = Array(frame[pipeline.outerLength...])
        func framed(_ payload: [UInt8], ipv6: Bool = false, vlan: UInt16 = 0, port: UInt16 = PipelineFixture.listenPort) -> [UInt8] {
            let header = OuterHeaderTemplate(
                sourceMAC: PipelineFixture.nextHopMAC, destinationMAC: PipelineFixture.uplinkMAC, vlanTCI: vlan,
                source: IPAddress(ipv6 ? "2001:db8::1" : "192.0.2.1")!, sourcePort: PipelineFixture.peerPort,
                destination: IPAddress(ipv6 ? "2001:db8::2" : "192.0.2.2")!, destinationPort: port)
            var out = [UInt8](repeating: 0, count: header.length + payload.count)
            out.withUnsafeMutableBytes { o in
                o.baseAddress!.advanced(by: header.length).copyMemory(from: payload, byteCount: payload.count)
                header.write(to: o.baseAddress!, payloadLength: payload.count)
            }
            return out
        }
        return [
            FuzzSeed("transport-ipv4", frame),
            FuzzSeed("transport-ipv6", framed(message, ipv6: true)),
            FuzzSeed("transport-vlan", framed(message, vlan: 5)),
            FuzzSeed("initiation", framed(transcript.initiation)),
            FuzzSeed("unknown-port", framed(message, port: 9)),
            FuzzSeed("ipv4-fragment", flipped(frame, at: Wire.ethernetHeaderSize + 6, 0x20)),
            FuzzSeed("truncated", Array(frame.prefix(40))),
        ]
    }

    static func configuration() -> [FuzzSeed] {
        let tenantKey = FuzzKeys.responder.secret.base64ForDisplay
        let peerA = FuzzKeys.initiator.publicKey.base64
        let peerB = FuzzKeys.otherPeer.publicKey.base64
        let psk = FuzzKeys.presharedKey().secret.base64ForDisplay
        // The README's documented example (as ConfigurationTests.theDocumentedExampleParses).
        let documented = """
            [Gateway]
            Uplink = eth0                 # required: the NIC facing the peers
            Queues = 0-1                  # optional: RX queues to serve; default all of the uplink's
            Cores = 2,3                   # optional: one per queue; default cores on the uplink's NUMA node
            XDPMode = native              # optional: native (default) | generic

            [Tenant]
            Name = acme                   # unique; also the WireGuard interface name (`wg show acme`)
            PrivateKey = \(tenantKey)
            ListenPort = 51820
            Namespace = acme              # the tenant's network namespace; created if absent
            Address = 10.10.0.1/24        # repeatable, IPv4 or IPv6: the tenant interface's addresses

            [Peer]                        # belongs to the [Tenant] above it
            PublicKey = \(peerA)
            PresharedKey = \(psk)       # optional
            AllowedIPs = 10.10.1.0/24, fd00:a::/64
            Endpoint = 198.51.100.7:51820 # optional; learned and updated from authenticated packets
            PersistentKeepalive = 25      # optional

            """
        let everyKey = """
            [Gateway]
            Uplink = ens1f0
            Queues = 0,2-3
            Cores = 4,5,6
            XDPMode = generic
            MetricsListen = 127.0.0.1:9586
            Name = edge1
            MaxTenants = 16
            MaxPeers = 128

            [Tenant]
            Name = blue
            PrivateKey = \(tenantKey)
            ListenPort = 51821
            Namespace = blue
            Address = 10.10.0.1/24, fd00:b::1/64
            InterfaceName = wg0

            [Peer]
            PublicKey = \(peerA)
            AllowedIPs = 10.10.1.0/24
            AllowedIPs = fd00:a::/64
            Endpoint = [2001:db8::7]:51820
            PersistentKeepalive = off

            [Peer]
            PublicKey = \(peerB)
            AllowedIPs = 10.10.2.0/24

            [Tenant]
            Name = green
            PrivateKey = \(tenantKey)
            ListenPort = 51822
            Namespace = green
            Address = 10.10.0.1/24

            [Peer]
            PublicKey = \(peerA)
            AllowedIPs = 10.10.1.0/24

            """
        let problems = """
            [Gateway]
            Uplink = eth0
            [Tenant]
            Name = acme
            PrivateKey = not-a-key
            ListenPort = 51820
            Namespace = acme
            [Peer]
            PublicKey = \(peerA)
            AllowedIPs = 10.10.1.0/33
            Endpoint = example.com:51820
            [Tenant]
            Name = acme
            ListenPort = 51820
            Namespace = acme
            Colour = blue

            """
        var invalidUTF8 = Array("[Gateway]\nUplink = eth0\n[Tenant]\nName = ".utf8)
        invalidUTF8 += [0xC3, 0x28, 0xFF, 0x0A]
        invalidUTF8 += Array("PrivateKey = \(tenantKey)\nListenPort = 51820\nNamespace = a\n".utf8)
        return [
            FuzzSeed("documented-example", text: documented),
            FuzzSeed("every-key", text: everyKey),
            FuzzSeed("problems", text: problems),
            FuzzSeed("invalid-utf8", invalidUTF8),
            FuzzSeed("empty", []),
        ]
    }

    static func uapi() -> [FuzzSeed] {
        let privateHex = FuzzKeys.responder.secret.hexForDisplay
        let peerA = FuzzKeys.initiator.publicKey.key.hex
        let peerB = FuzzKeys.otherPeer.publicKey.key.hex
        let stranger = FuzzKeys.stranger.publicKey.key.hex
        let pskHex = FuzzKeys.presharedKey().secret.hexForDisplay
        func request(_ lines: [String]) -> String { lines.joined(separator: "\n") + "\n\n" }
        return [
            FuzzSeed("get", text: "get=1\n\n"),
            // What `wg setconf`/`syncconf` send (wireguard-tools ipc-uapi.h): every interface key,
            // replace_peers, then each peer with replace_allowed_ips.
            FuzzSeed("setconf", text: request([
                "set=1", "private_key=\(privateHex)", "listen_port=51820", "fwmark=0", "replace_peers=true",
                "public_key=\(peerA)", "preshared_key=\(pskHex)", "endpoint=192.0.2.1:40000",
                "persistent_keepalive_interval=25", "replace_allowed_ips=true",
                "allowed_ip=10.10.1.0/24", "allowed_ip=fd00:a::/64",
                "public_key=\(peerB)", "endpoint=[2001:db8::7]:51820", "replace_allowed_ips=true",
                "allowed_ip=10.10.2.0/24",
            ])),
            // `wg set fuzz0 peer B allowed-ips 10.10.1.0/24` takes A's prefix.
            FuzzSeed("set-allowed-ips", text: request([
                "set=1", "public_key=\(peerB)", "replace_allowed_ips=true", "allowed_ip=10.10.1.7/24",
            ])),
            FuzzSeed("set-remove-peer", text: request(["set=1", "public_key=\(peerA)", "remove=true"])),
            FuzzSeed("set-update-only", text: request([
                "set=1", "public_key=\(stranger)", "update_only=true", "allowed_ip=10.10.3.0/24",
            ])),
            FuzzSeed("set-new-peer-no-psk", text: request([
                "set=1", "public_key=\(stranger)", "preshared_key=" + String(repeating: "0", count: 64),
                "protocol_version=1", "allowed_ip=::/0",
            ])),
            FuzzSeed("set-listen-port-zero", text: request(["set=1", "listen_port=0"])),
            FuzzSeed("set-peer-key-first", text: request(["set=1", "endpoint=192.0.2.1:1"])),
            FuzzSeed("unknown-operation", text: "put=1\n\n"),
            FuzzSeed("no-blank-line", text: "get=1\n"),
        ]
    }
}
