// Before anything is measured on a fixture, check that the pipeline and the baselines do what
// they should on exactly its frames and buffers: a drop path (replay, spoofed source, no
// route) would be faster and measure nothing.

import CSodium
import Engine
import WireGuard

extension PipelineFixture {
    /// Runs every check, leaving the fixture as measurements expect it (fresh receive
    /// keypairs, nothing queued for the control plane). Throws the first failure.
    @discardableResult
    public func checked() throws(PipelineCheckFailed) -> PipelineFixture {
        try checkDecrypt()
        try checkOpen()
        try checkEncrypt()
        return self
    }

    /// The pipeline delivers all frames, in order, as the tenant frame (namespace MAC ← host
    /// MAC, IPv4, the peer's inner packet), drops a replay, counts them, and reports nothing
    /// to the control plane (same endpoint, same keypair: the steady state).
    private func checkDecrypt() throws(PipelineCheckFailed) {
        renewEntry()
        let decryptedBefore = counters.value(.decrypted)
        let expected = Wire.ethernetHeaderSize + length
        var header = [UInt8](repeating: 0, count: Wire.ethernetHeaderSize)
        header.withUnsafeMutableBytes { h in
            Self.innerMAC.store(to: h.baseAddress!)
            Self.hostMAC.store(to: h.baseAddress! + 6)
            storeBigEndian16(h.baseAddress!, 12, Wire.etherTypeIPv4)
        }
        let expectedFrame = header + uplinkInner
        for i in 0..<count {
            output.initializeMemory(as: UInt8.self, repeating: 0, count: Self.frameCapacity)
            let result = processor.decrypt(frame(i), length: frameLength, into: output,
                                           tenantCapacity: Self.frameCapacity, now: Self.now)
            guard result == .deliver(tenant: 0, length: expected) else {
                throw PipelineCheckFailed("Pipeline decrypt of frame \(i) (\(length) B): \(result), expected deliver \(expected) B")
            }
            guard Array(UnsafeRawBufferPointer(start: output, count: expected)) == expectedFrame else {
                throw PipelineCheckFailed("Pipeline decrypt of frame \(i) delivered the wrong tenant frame")
            }
        }
        let replay = processor.decrypt(frame(0), length: frameLength, into: output,
                                       tenantCapacity: Self.frameCapacity, now: Self.now)
        guard replay == .dropped(.replayed) else {
            throw PipelineCheckFailed("Pipeline decrypt of a replayed frame: \(replay), expected dropped(replayed)")
        }
        let decrypted = counters.value(.decrypted) - decryptedBefore
        guard decrypted == UInt64(count) else {
            throw PipelineCheckFailed("the decrypted counter says \(decrypted), expected \(count)")
        }
        try expectNoControlMessages("decrypt")
        renewEntry()
    }

    /// The baseline's Keypair opens the same messages to the same inner packet.
    private func checkOpen() throws(PipelineCheckFailed) {
        renewReceiver()
        let inner = output + Wire.ethernetHeaderSize
        for i in 0..<count {
            let n: Int
            do {
                n = try crypto.open(receiver, frame(i) + outerLength, length: messageLength, into: inner,
                                    capacity: Self.frameCapacity - Wire.ethernetHeaderSize, now: Self.now,
                                    cipher: TransportCipher())
            } catch {
                throw PipelineCheckFailed("Keypair.open of message \(i): \(error)")
            }
            guard n == length, Array(UnsafeRawBufferPointer(start: inner, count: n)) == uplinkInner else {
                throw PipelineCheckFailed("Keypair.open of message \(i) gave the wrong plaintext")
            }
        }
        renewReceiver()
    }

    /// The pipeline's uplink frame is the peer's outer header (ports, lengths, IPv4 checksum)
    /// in front of exactly the message the baseline's `Keypair.seal` writes for the same
    /// counter, and the peer opens it to the tenant's inner packet.
    private func checkEncrypt() throws(PipelineCheckFailed) {
        let encryptedBefore = counters.value(.encrypted)
        let sent = processor.encrypt(tenant: 0, frame: tenantFrame, length: Wire.ethernetHeaderSize + length,
                                     into: output, uplinkCapacity: Self.frameCapacity, now: Self.now)
        guard sent == .send(length: frameLength) else {
            throw PipelineCheckFailed("Pipeline encrypt (\(length) B): \(sent), expected send \(frameLength) B")
        }
        guard let outer = OuterFrame.parse(output, length: frameLength),
              outer.payloadOffset == outerLength, outer.payloadLength == messageLength,
              outer.sourcePort == Self.listenPort, outer.destinationPort == Self.peerPort
        else { throw PipelineCheckFailed("Pipeline encrypt wrote a wrong outer header") }
        if !outer.isIPv6 {
            guard Wire.ipv4HeaderChecksum(output + outer.ipOffset) == 0 else {
                throw PipelineCheckFailed("Pipeline encrypt: the outer IPv4 header checksum does not verify")
            }
        }
        guard counters.value(.encrypted) - encryptedBefore == 1 else {
            throw PipelineCheckFailed("the encrypted counter did not count the packet")
        }

        // The same counter (0) through the baseline's own sending Keypair: the same bytes.
        let pipelineMessage = Array(UnsafeRawBufferPointer(start: output + outerLength, count: messageLength))
        let reference = UnsafeMutableRawPointer.allocate(byteCount: Self.frameCapacity, alignment: 64)
        defer { reference.deallocate() }
        let sealed: SealedMessage
        do {
            sealed = try crypto.seal(sender, tenantFrame + Wire.ethernetHeaderSize, length: length, into: reference,
                                     capacity: Self.frameCapacity, now: Self.now, cipher: TransportCipher(), mtu: Self.mtu)
        } catch {
            throw PipelineCheckFailed("Keypair.seal (\(length) B): \(error)")
        }
        guard sealed.counter == 0, sealed.length == messageLength,
              Array(UnsafeRawBufferPointer(start: reference, count: messageLength)) == pipelineMessage
        else { throw PipelineCheckFailed("Pipeline encrypt's message differs from Keypair.seal's with the same counter") }

        var k = peerKeys
        let peer = Keypair(consuming: &k)
        let n: Int
        do {
            n = try crypto.open(peer, output + outerLength, length: messageLength, into: reference,
                                capacity: Self.frameCapacity, now: Self.now, cipher: TransportCipher())
        } catch {
            throw PipelineCheckFailed("the peer cannot open the pipeline's message: \(error)")
        }
        guard n == length, Array(UnsafeRawBufferPointer(start: reference, count: n)) == tenantInner else {
            throw PipelineCheckFailed("the peer opens the pipeline's message to the wrong inner packet")
        }
        try expectNoControlMessages("encrypt")
    }

    private func expectNoControlMessages(_ path: String) throws(PipelineCheckFailed) {
        var kinds: [ControlMessageKind] = []
        control.drain { header, _ in kinds.append(header.pointee.kind) }
        guard kinds.isEmpty, !processor.controlPending else {
            throw PipelineCheckFailed("Pipeline \(path) queued control messages \(kinds): not the steady state")
        }
    }
}
