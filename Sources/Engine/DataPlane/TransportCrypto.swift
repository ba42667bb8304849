import WireGuard

/// What a worker does with transport payloads: `.on`, the AEAD, always in the product.
///
/// `.off` is the perf lab's crypto-off strategy: it measures the data plane's forwarding
/// ceiling without the cipher. The payload is copied instead: the plaintext (padded) and a
/// zero tag on the way out, the payload without its tag on the way in, and packets are NOT
/// authenticated. Handshakes, indices, counters, the replay window and padding are unchanged
/// (they are the core's `beginSeal`, `beginOpen` and `finishOpen`). Only the perf lab chooses
/// it (`Gateway`'s perf-lab interface, `xdpwg bench-crypto-off-gateway`); no configuration
/// key or `xdpwg up` option reaches it.
///
/// Chosen once per worker and kept in its `PacketProcessor`, so the cost per packet is one
/// compare of a value the worker holds.
public enum TransportCrypto: Sendable, Equatable {
    /// ChaCha20-Poly1305, as the protocol requires.
    case on
    /// Benchmark mode: no encryption, no authentication.
    case off

    /// `keypair.seal` (`.on`), or the same message with the plaintext where the ciphertext
    /// goes and 16 zero bytes where the tag goes (`.off`).
    @inline(__always)
    public func seal(_ keypair: Keypair, _ plaintext: UnsafeRawPointer, length: Int,
                     into message: UnsafeMutableRawPointer, capacity: Int, now: Instant,
                     cipher: borrowing TransportCipher, mtu: Int = 0) throws(SealFailure) -> SealedMessage {
        guard self == .off else {
            return try keypair.seal(plaintext, length: length, into: message, capacity: capacity, now: now,
                                    cipher: cipher, mtu: mtu)
        }
        let sealed = try keypair.beginSeal(into: message, plaintextLength: length, capacity: capacity, now: now, mtu: mtu)
        let payload = message + WireGuardProtocol.transportHeaderSize
        payload.copyMemory(from: plaintext, byteCount: length)
        (payload + length).initializeMemory(as: UInt8.self, repeating: 0,
                                            count: sealed.length - WireGuardProtocol.transportHeaderSize - length)
        return sealed
    }

    /// `keypair.open` (`.on`), or (`.off`) the payload copied without its last 16 bytes:
    /// nothing authenticated, anything accepted that passes the checks and the replay window.
    @inline(__always)
    public func open(_ keypair: Keypair, _ message: UnsafeRawPointer, length: Int,
                     into plaintext: UnsafeMutableRawPointer, capacity: Int, now: Instant,
                     cipher: borrowing TransportCipher) throws(TransportRejection) -> Int {
        guard self == .off else {
            return try keypair.open(message, length: length, into: plaintext, capacity: capacity, now: now,
                                    cipher: cipher)
        }
        let counter = try keypair.beginOpen(message, length: length, capacity: capacity, now: now)
        let payloadLength = length - WireGuardProtocol.keepaliveSize
        plaintext.copyMemory(from: message + WireGuardProtocol.transportHeaderSize, byteCount: payloadLength)
        try keypair.finishOpen(counter)
        return payloadLength
    }
}
