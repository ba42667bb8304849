import CSodium

/// ChaCha20-Poly1305 (IETF, 96-bit nonce) and XChaCha20-Poly1305 over raw memory, detached
/// tags, through libsodium: for handshakes (Noise) and cookies. Transport messages go through
/// `TransportCipher`, whose backend is chosen at start. Thin wrappers: no allocation, no
/// copies; `source` and `destination` may be the same memory (in place) or disjoint (out of
/// place), never partially overlapping.
public enum AEAD {
    public static let keySize = 32
    public static let tagSize = 16

    /// WireGuard's nonce: 4 zero bytes followed by the little-endian 64-bit counter. Three
    /// UInt32s, not (UInt32, UInt64): the latter has 4 bytes of padding at offset 4.
    @inline(__always)
    static func nonce(_ counter: UInt64) -> (UInt32, UInt32, UInt32) {
        (0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian)
    }

    /// Seals `length` bytes at `source` into `destination`, writing the tag right after the
    /// ciphertext (`destination + length`).
    @inline(__always)
    public static func seal(
        key: UnsafeRawPointer, counter: UInt64,
        source: UnsafeRawPointer, length: Int,
        destination: UnsafeMutableRawPointer,
        additionalData: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) {
        var n = nonce(counter)
        withUnsafeBytes(of: &n) { nonceBytes in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                destination.assumingMemoryBound(to: UInt8.self),
                (destination + length).assumingMemoryBound(to: UInt8.self), nil,
                source.assumingMemoryBound(to: UInt8.self), UInt64(length),
                additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
                nil,
                nonceBytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                key.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// Opens `length` ciphertext bytes at `source` whose tag follows them, into `destination`.
    /// Returns false (and leaves `destination` unspecified) when the tag does not verify.
    @inline(__always)
    public static func open(
        key: UnsafeRawPointer, counter: UInt64,
        source: UnsafeRawPointer, length: Int,
        destination: UnsafeMutableRawPointer,
        additionalData: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)
    ) -> Bool {
        var n = nonce(counter)
        return withUnsafeBytes(of: &n) { nonceBytes in
            crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                destination.assumingMemoryBound(to: UInt8.self), nil,
                source.assumingMemoryBound(to: UInt8.self), UInt64(length),
                (source + length).assumingMemoryBound(to: UInt8.self),
                additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
                nonceBytes.baseAddress!.assumingMemoryBound(to: UInt8.self),
                key.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// XChaCha20-Poly1305 with a 24-byte nonce (cookie replies). Tag follows the ciphertext.
    public static func xseal(
        key: UnsafeRawPointer, nonce: UnsafeRawPointer,
        source: UnsafeRawPointer, length: Int,
        destination: UnsafeMutableRawPointer,
        additionalData: UnsafeRawBufferPointer
    ) {
        _ = crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
            destination.assumingMemoryBound(to: UInt8.self),
            (destination + length).assumingMemoryBound(to: UInt8.self), nil,
            source.assumingMemoryBound(to: UInt8.self), UInt64(length),
            additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
            nil,
            nonce.assumingMemoryBound(to: UInt8.self),
            key.assumingMemoryBound(to: UInt8.self))
    }

    public static func xopen(
        key: UnsafeRawPointer, nonce: UnsafeRawPointer,
        source: UnsafeRawPointer, length: Int,
        destination: UnsafeMutableRawPointer,
        additionalData: UnsafeRawBufferPointer
    ) -> Bool {
        crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
            destination.assumingMemoryBound(to: UInt8.self), nil,
            source.assumingMemoryBound(to: UInt8.self), UInt64(length),
            (source + length).assumingMemoryBound(to: UInt8.self),
            additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
            nonce.assumingMemoryBound(to: UInt8.self),
            key.assumingMemoryBound(to: UInt8.self)) == 0
    }
}

/// What a completed handshake hands to the transport layer: the two symmetric keys and the
/// two session indices. Produced by `Handshake` (Noise), consumed by `Keypair`. The keys are
/// secrets: whoever consumes them wipes them (`wipe()`).
public struct SessionKeys: Sendable {
    public var sendKey: Key32
    public var receiveKey: Key32
    /// The index we chose: peers put it in the receiver field of messages to us.
    public var localIndex: UInt32
    /// The index the peer chose: we put it in the receiver field of messages to them.
    public var remoteIndex: UInt32
    /// True when we sent the initiation (the initiator may send data at once; the responder
    /// must wait for the first data message before using the keypair to send).
    public var isInitiator: Bool
    /// When the handshake completed.
    public var createdAt: Instant

    public init(sendKey: Key32, receiveKey: Key32, localIndex: UInt32, remoteIndex: UInt32,
                isInitiator: Bool, createdAt: Instant) {
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
        self.isInitiator = isInitiator
        self.createdAt = createdAt
    }

    public mutating func wipe() {
        sendKey.wipe()
        receiveKey.wipe()
    }
}
