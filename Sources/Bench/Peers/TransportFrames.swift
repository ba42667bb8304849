import Engine
import Gateway
import WireGuard

/// What `PeerEmulator.writeTransportFrames` writes: Ethernet + IPv4 + UDP from the
/// emulator's socket address to the gateway, carrying a transport message whose plaintext is
/// an inner IPv4/UDP packet of exactly `innerSize` bytes.
public struct TransportFrameLayout: Sendable {
    /// The sender's and the receiver's MAC: the emulator's side of the uplink, and the
    /// gateway's uplink interface.
    public var sourceMAC: EthernetAddress
    public var destinationMAC: EthernetAddress
    /// The inner packet's total length (IPv4 header included), e.g. 64, 512 or 1420; at least
    /// `InnerPacket.minimumSize`.
    public var innerSize: Int
    /// Peer i's inner source address (IPv4, inside its AllowedIPs at the gateway).
    public var innerSources: [IPAddress]
    /// Where the inner datagrams go inside the tenant (IPv4 address and UDP port).
    public var innerDestination: Endpoint
    public var innerSourcePort: UInt16
    /// false: the crypto-off form (for the crypto-off gateway, `CryptoOffGateway`): the
    /// plaintext stands where the ciphertext goes, followed by 16 zero bytes where the tag goes.
    public var sealed: Bool
    /// The peers' tunnel MTU: plaintext is padded to a multiple of 16 but never past it, as
    /// the kernel pads (1420 B packets stay 1420 B).
    public var mtu: Int

    public init(sourceMAC: EthernetAddress, destinationMAC: EthernetAddress, innerSize: Int,
                innerSources: [IPAddress], innerDestination: Endpoint, innerSourcePort: UInt16 = 40000,
                sealed: Bool = true, mtu: Int = 1420) {
        self.sourceMAC = sourceMAC
        self.destinationMAC = destinationMAC
        self.innerSize = innerSize
        self.innerSources = innerSources
        self.innerDestination = innerDestination
        self.innerSourcePort = innerSourcePort
        self.sealed = sealed
        self.mtu = mtu
    }
}

/// The inner packets the emulated peers send: IPv4 (DF, TTL 64, checksum right) + UDP (real
/// checksum) + a payload whose first 12 bytes say which peer sent it and with which
/// WireGuard counter (big-endian u32 peer index, u64 counter), then bytes `i & 0xff` at
/// payload offset i. A sink can tell every packet apart, and a test can rebuild it exactly.
public enum InnerPacket {
    public static let headerSize = 28
    /// Headers and the 12-byte marker.
    public static let minimumSize = headerSize + 12

    /// Peer index and counter from an inner packet written by the emulator (nil when it is
    /// shorter than `minimumSize`).
    public static func marker(_ packet: UnsafeRawBufferPointer) -> (peer: Int, counter: UInt64)? {
        guard packet.count >= minimumSize else { return nil }
        return (Int(UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: headerSize, as: UInt32.self))),
                UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: headerSize + 4, as: UInt64.self)))
    }
}

/// How many frames a call wrote, all of one length.
public struct WrittenFrames: Sendable, Equatable {
    public var count: Int
    /// Bytes per frame: 42 (Ethernet, IPv4, UDP) + the transport message.
    public var frameLength: Int
    /// Bytes per transport message: 16 + padded inner packet + 16.
    public var messageLength: Int

    public init(count: Int, frameLength: Int, messageLength: Int) {
        self.count = count
        self.frameLength = frameLength
        self.messageLength = messageLength
    }
}

extension PeerEmulator {
    /// Gives out one frame's buffer: the callee calls `fill` with room for a frame and keeps
    /// the length it returns. The load side's `BlastPool.append` has this shape:
    /// `writeTransportFrames(count: n, layout: l) { try pool.append($0) }`.
    public typealias FrameSink = (_ fill: (UnsafeMutableRawBufferPointer) -> Int) throws -> Void

    /// Writes `count` complete frames, peers in turn (the round robin goes on across calls
    /// and restarts at peer 0 with each handshake), each with its peer's next counter. Every
    /// frame goes into a buffer `sink` provides: `fill` writes the frame and returns its
    /// length, or 0 when the buffer is too small, after which this throws (that frame used no
    /// counter).
    ///
    /// Needs a completed handshake for every peer (the source and destination come from it).
    /// The cost is one seal per frame (≈ 1.4 µs at 1420 B on this machine's cores: ~0.7 M
    /// frames per second; crypto-off frames are a copy).
    @discardableResult
    public func writeTransportFrames(count: Int, layout: TransportFrameLayout,
                                     into sink: FrameSink) throws(PeerEmulatorError) -> WrittenFrames {
        guard let local, let gateway else {
            throw PeerEmulatorError("transport frames: no handshake yet (call handshake first)")
        }
        guard count >= 0 else { throw PeerEmulatorError("transport frames: count must not be negative (\(count))") }
        guard layout.innerSources.count == peerCount else {
            throw PeerEmulatorError("transport frames: \(layout.innerSources.count) inner sources for \(peerCount) peers")
        }
        guard layout.innerSources.allSatisfy(\.isV4), layout.innerDestination.address.isV4 else {
            throw PeerEmulatorError("transport frames: inner addresses must be IPv4")
        }
        guard (InnerPacket.minimumSize...65535).contains(layout.innerSize) else {
            throw PeerEmulatorError("transport frames: inner size \(layout.innerSize) is outside "
                                    + "\(InnerPacket.minimumSize)...65535")
        }
        if let missing = keypairs.firstIndex(where: { $0 == nil }) {
            throw PeerEmulatorError("transport frames: peer \(missing) has no session (\(establishedCount) of "
                                    + "\(peerCount) completed the last handshake)")
        }
        let crypto: TransportCrypto = layout.sealed ? .on : .off
        let header = OuterHeaderTemplate(sourceMAC: layout.sourceMAC, destinationMAC: layout.destinationMAC, vlanTCI: 0,
                                         source: local.address, sourcePort: local.port,
                                         destination: gateway.address, destinationPort: gateway.port)
        let messageLength = Keypair.messageLength(plaintextLength: layout.innerSize, mtu: layout.mtu)
        let frameLength = header.length + messageLength
        var written = WrittenFrames(count: 0, frameLength: frameLength, messageLength: messageLength)

        let template = InnerTemplate(layout)
        defer { template.deallocate() }
        let sources = layout.innerSources.map { address -> UInt32 in
            if case .v4(let a) = address { return a } else { return 0 }
        }
        let now = Engine.Clock.now()
        // `fill` cannot throw (it is the frame pool's callback): it leaves its error here.
        var failure: PeerEmulatorError?
        let cipher = TransportCipher()      // libsodium: the peers' side is not under test
        for _ in 0..<count {
            let i = nextPeer
            let keypair = keypairs[i].unsafelyUnwrapped
            do {
                try sink { frame in
                    guard frame.count >= frameLength, let base = frame.baseAddress else {
                        failure = PeerEmulatorError("transport frames: a buffer of \(frame.count) bytes cannot hold "
                                                    + "a frame of \(frameLength)")
                        return 0
                    }
                    do throws(SealFailure) {
                        template.stamp(peer: i, source: sources[i], counter: keypair.messagesSent)
                        let sealed = try crypto.seal(keypair, template.packet, length: layout.innerSize,
                                                     into: base + header.length, capacity: messageLength, now: now,
                                                     cipher: cipher, mtu: layout.mtu)
                        header.write(to: base, payloadLength: sealed.length)
                        return frameLength
                    } catch {
                        failure = PeerEmulatorError("transport frames: peer \(i): cannot seal (\(error)); "
                                                    + "handshake again")
                        return 0
                    }
                }
            } catch {
                // A sink that refuses a length of 0 throws on its own: the recorded reason says more.
                throw failure ?? PeerEmulatorError("transport frames: the frame sink failed after \(written.count) "
                                                   + "frames: \(error)")
            }
            if let failure { throw failure }
            written.count += 1
            nextPeer = i + 1 == peerCount ? 0 : i + 1
        }
        return written
    }

    /// Sends one keepalive per peer through `socket`: the gateway answers a handshake as
    /// responder and may send to a peer only after that peer's first transport message, so
    /// call this after `handshake` before the encrypt direction (tenant → peers). Uses each
    /// peer's counter 0; frames written afterwards start at 1.
    public func sendKeepalives(over socket: PeerSocket, crypto: TransportCrypto = .on) throws(PeerEmulatorError) {
        guard let gateway else { throw PeerEmulatorError("keepalives: no handshake yet (call handshake first)") }
        var message = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let now = Engine.Clock.now()
        let cipher = TransportCipher()
        for i in 0..<peerCount {
            guard let keypair = keypairs[i] else {
                throw PeerEmulatorError("keepalives: peer \(i) has no session")
            }
            let r: PeerEmulatorError? = withUnsafeMutableBytes(of: &message) { out in
                do throws(SealFailure) {
                    _ = try crypto.seal(keypair, out.baseAddress!, length: 0, into: out.baseAddress!, capacity: out.count,
                                        now: now, cipher: cipher)
                } catch {
                    return PeerEmulatorError("keepalives: peer \(i): cannot seal (\(error))")
                }
                do throws(PeerEmulatorError) { try socket.send(UnsafeRawBufferPointer(out), to: gateway) } catch {
                    return error
                }
                return nil
            }
            if let r { throw r }
        }
    }

    // MARK: Opening what the gateway sent

    /// Opens a transport message the gateway sent to one of the peers (a UDP payload):
    /// which peer it was for, and the plaintext length (padded; the inner IP header says how
    /// much of it is the packet) written at `plaintext`. `crypto: .off` for a gateway in
    /// crypto-off mode. Replays are refused as the protocol says.
    public func open(_ message: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer,
                     crypto: TransportCrypto = .on) throws(PeerEmulatorError) -> (peer: Int, length: Int) {
        guard let header = TransportHeader(message), let base = message.baseAddress,
              let out = plaintext.baseAddress else {
            throw PeerEmulatorError("open: not a transport message (\(message.count) bytes)")
        }
        guard let i = peer(forLocalIndex: header.receiverIndex), let keypair = keypairs[i] else {
            throw PeerEmulatorError("open: receiver index \(header.receiverIndex) is none of this pass's peers")
        }
        do throws(TransportRejection) {
            let n = try crypto.open(keypair, base, length: message.count, into: out, capacity: plaintext.count,
                                    now: Engine.Clock.now(), cipher: TransportCipher())
            return (i, n)
        } catch {
            throw PeerEmulatorError("open: peer \(i): rejected (\(error))")
        }
    }

    /// As `open(_:into:crypto:)`, for a whole Ethernet frame (IPv4 or IPv6, UDP).
    public func open(frame: UnsafeRawBufferPointer, into plaintext: UnsafeMutableRawBufferPointer,
                     crypto: TransportCrypto = .on) throws(PeerEmulatorError) -> (peer: Int, length: Int) {
        guard let base = frame.baseAddress, let outer = OuterFrame.parse(base, length: frame.count) else {
            throw PeerEmulatorError("open: not an Ethernet/IP/UDP frame (\(frame.count) bytes)")
        }
        return try open(UnsafeRawBufferPointer(start: base + outer.payloadOffset, count: outer.payloadLength),
                        into: plaintext, crypto: crypto)
    }
}

/// One inner packet, built once per call and patched per frame: only the source address,
/// the marker and the two checksums change, and the checksums are updated from sums
/// computed once (RFC 1071 sums are order-free, so the constant part is added up once).
private struct InnerTemplate {
    let packet: UnsafeMutableRawPointer
    let size: Int
    /// Ones'-complement sums of the IPv4 header and of the UDP pseudo-header + datagram,
    /// without the source address, the marker and the checksum fields.
    let ipSum: UInt64
    let udpSum: UInt64

    init(_ layout: TransportFrameLayout) {
        size = layout.innerSize
        packet = .allocate(byteCount: size, alignment: 16)
        let p = packet
        let udpLength = size - Wire.ipv4HeaderSize
        func store16(_ offset: Int, _ v: UInt16) { p.storeBytes(of: v.bigEndian, toByteOffset: offset, as: UInt16.self) }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: InnerPacket.minimumSize)
        p.storeBytes(of: UInt8(0x45), as: UInt8.self)
        store16(2, UInt16(size))
        store16(6, 0x4000)                                   // don't fragment
        p.storeBytes(of: UInt8(64), toByteOffset: 8, as: UInt8.self)
        p.storeBytes(of: Wire.protocolUDP, toByteOffset: 9, as: UInt8.self)
        var destination: UInt32 = 0
        if case .v4(let a) = layout.innerDestination.address { destination = a }
        p.storeBytes(of: destination.bigEndian, toByteOffset: 16, as: UInt32.self)
        store16(20, layout.innerSourcePort)
        store16(22, layout.innerDestination.port)
        store16(24, UInt16(udpLength))
        let payload = InnerPacket.minimumSize
        for k in payload..<size {
            p.storeBytes(of: UInt8(truncatingIfNeeded: k - InnerPacket.headerSize), toByteOffset: k, as: UInt8.self)
        }
        ipSum = Wire.onesComplementSum(p, length: Wire.ipv4HeaderSize)
        // Pseudo-header: destination, protocol, UDP length (the source is added per frame).
        udpSum = Wire.onesComplementSum(p + 16, length: 4) + UInt64(Wire.protocolUDP) + UInt64(udpLength)
            + Wire.onesComplementSum(p + Wire.ipv4HeaderSize, length: udpLength)
    }

    func deallocate() { packet.deallocate() }

    /// Sets peer i's source address and marker and both checksums.
    @inline(__always)
    func stamp(peer: Int, source: UInt32, counter: UInt64) {
        let p = packet
        p.storeBytes(of: source.bigEndian, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: UInt32(truncatingIfNeeded: peer).bigEndian, toByteOffset: InnerPacket.headerSize, as: UInt32.self)
        p.storeBytes(of: counter.bigEndian, toByteOffset: InnerPacket.headerSize + 4, as: UInt64.self)
        let sourceSum = UInt64(source >> 16) + UInt64(source & 0xffff)
        let peer32 = UInt64(UInt32(truncatingIfNeeded: peer))
        let markerSum = (peer32 >> 16) + (peer32 & 0xffff)
            + (counter >> 48) + ((counter >> 32) & 0xffff) + ((counter >> 16) & 0xffff) + (counter & 0xffff)
        p.storeBytes(of: Wire.finishChecksum(ipSum + sourceSum).bigEndian, toByteOffset: 10, as: UInt16.self)
        var udp = Wire.finishChecksum(udpSum + sourceSum + markerSum)
        if udp == 0 { udp = 0xffff }   // 0 would mean "no checksum"
        p.storeBytes(of: udp.bigEndian, toByteOffset: 26, as: UInt16.self)
    }
}
