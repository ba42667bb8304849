// Before anything is timed, every setup checks that the pipeline and the baselines do what
// they should on exactly the frames and buffers the benchmarks use: a drop path (replay,
// spoofed source, no route) would be faster and measure nothing.

import BenchSupport
import BenchSodium
import Engine
import WireGuard

extension PipelineState {
    /// Runs every check, leaving the state as the benchmarks expect it (fresh receive
    /// keypairs). Throws the first failure, which stops the run with its reason.
    func checked() throws(SetupCheckFailed) -> PipelineState {
        try checkDecrypt()
        try checkOpen()
        try checkEncrypt()
        return self
    }

    /// The pipeline delivers all 1000 frames, in order, as the tenant frame
    /// (namespace MAC ← host MAC, IPv4, the peer's inner packet), drops a replay, counts them,
    /// and reports nothing to the control plane (same endpoint, same keypair: steady state).
    private func checkDecrypt() throws(SetupCheckFailed) {
        renewEntry()
        let decryptedBefore = counters.value(.decrypted)
        let expected = Wire.ethernetHeaderSize + length
        for i in 0..<Self.count {
            output.initializeMemory(as: UInt8.self, repeating: 0, count: frameCapacity)
            let result = processor.decrypt(frame(i), length: frameLength, into: output,
                                           tenantCapacity: frameCapacity, now: pipelineNow)
            guard result == .deliver(tenant: 0, length: expected) else {
                throw SetupCheckFailed("Pipeline decrypt of frame \(i) (\(length) B): \(result), expected deliver \(expected) B")
            }
            var header = [UInt8](repeating: 0, count: Wire.ethernetHeaderSize)
            header.withUnsafeMutableBytes { h in
                Self.innerMAC.store(to: h.baseAddress!)
                Self.hostMAC.store(to: h.baseAddress! + 6)
                storeBigEndian16(h.baseAddress!, 12, Wire.etherTypeIPv4)
            }
            let delivered = Array(UnsafeRawBufferPointer(start: output, count: expected))
            guard delivered == header + uplinkInner else {
                throw SetupCheckFailed("Pipeline decrypt of frame \(i) delivered the wrong tenant frame")
            }
        }
        let replay = processor.decrypt(frame(0), length: frameLength, into: output, tenantCapacity: frameCapacity,
                                       now: pipelineNow)
        guard replay == .dropped(.replayed) else {
            throw SetupCheckFailed("Pipeline decrypt of a replayed frame: \(replay), expected dropped(replayed)")
        }
        guard counters.value(.decrypted) - decryptedBefore == UInt64(Self.count) else {
            throw SetupCheckFailed("decrypted counter says \(counters.value(.decrypted) - decryptedBefore), expected \(Self.count)")
        }
        try expectNoControlMessages("decrypt")
        renewEntry()
    }

    /// The baseline's Keypair opens the same messages to the same inner packet.
    private func checkOpen() throws(SetupCheckFailed) {
        renewReceiver()
        let inner = output + Wire.ethernetHeaderSize
        for i in 0..<Self.count {
            let n: Int
            do {
                n = try receiver.open(frame(i) + outerLength, length: messageLength, into: inner,
                                      capacity: frameCapacity - Wire.ethernetHeaderSize, now: pipelineNow)
            } catch {
                throw SetupCheckFailed("Keypair.open of message \(i): \(error)")
            }
            guard n == length, Array(UnsafeRawBufferPointer(start: inner, count: n)) == uplinkInner else {
                throw SetupCheckFailed("Keypair.open of message \(i) gave the wrong plaintext")
            }
        }
        renewReceiver()
    }

    /// The pipeline's uplink frame is the peer's outer header (ports, lengths, IPv4 checksum)
    /// in front of exactly the message the baseline's `Keypair.seal` writes for the same
    /// counter, and the peer opens it to the tenant's inner packet.
    private func checkEncrypt() throws(SetupCheckFailed) {
        let encryptedBefore = counters.value(.encrypted)
        let sent = processor.encrypt(tenant: 0, frame: tenantFrame, length: Wire.ethernetHeaderSize + length,
                                     into: output, uplinkCapacity: frameCapacity, now: pipelineNow)
        guard sent == .send(length: frameLength) else {
            throw SetupCheckFailed("Pipeline encrypt (\(length) B): \(sent), expected send \(frameLength) B")
        }
        guard let outer = OuterFrame.parse(output, length: frameLength),
              outer.payloadOffset == outerLength, outer.payloadLength == messageLength,
              outer.sourcePort == Self.listenPort, outer.destinationPort == Self.peerPort
        else { throw SetupCheckFailed("Pipeline encrypt wrote a wrong outer header") }
        if !outer.isIPv6 {
            guard Wire.ipv4HeaderChecksum(output + outer.ipOffset) == 0 else {
                throw SetupCheckFailed("Pipeline encrypt: the outer IPv4 header checksum does not verify")
            }
        }
        guard counters.value(.encrypted) - encryptedBefore == 1 else {
            throw SetupCheckFailed("encrypted counter did not count the packet")
        }

        // The same counter (0) through the baseline's own sending Keypair: the same bytes.
        let pipelineMessage = Array(UnsafeRawBufferPointer(start: output + outerLength, count: messageLength))
        let reference = UnsafeMutableRawPointer.allocate(byteCount: frameCapacity, alignment: 64)
        defer { reference.deallocate() }
        let sealed: SealedMessage
        do {
            sealed = try sender.seal(tenantFrame + Wire.ethernetHeaderSize, length: length, into: reference,
                                     capacity: frameCapacity, now: pipelineNow, mtu: tenantMTU)
        } catch {
            throw SetupCheckFailed("Keypair.seal (\(length) B): \(error)")
        }
        guard sealed.counter == 0, sealed.length == messageLength,
              Array(UnsafeRawBufferPointer(start: reference, count: messageLength)) == pipelineMessage
        else { throw SetupCheckFailed("Pipeline encrypt's message differs from Keypair.seal's with the same counter") }

        var k = peerKeys
        let peer = Keypair(consuming: &k)
        let n: Int
        do {
            n = try peer.open(output + outerLength, length: messageLength, into: reference,
                              capacity: frameCapacity, now: pipelineNow)
        } catch {
            throw SetupCheckFailed("the peer cannot open the pipeline's message: \(error)")
        }
        guard n == length, Array(UnsafeRawBufferPointer(start: reference, count: n)) == tenantInner else {
            throw SetupCheckFailed("the peer opens the pipeline's message to the wrong inner packet")
        }
        try expectNoControlMessages("encrypt")
    }

    private func expectNoControlMessages(_ path: String) throws(SetupCheckFailed) {
        var kinds: [ControlMessageKind] = []
        control.drain { header, _ in kinds.append(header.pointee.kind) }
        guard kinds.isEmpty, !processor.controlPending else {
            throw SetupCheckFailed("Pipeline \(path) queued control messages \(kinds): not the steady state")
        }
    }
}
