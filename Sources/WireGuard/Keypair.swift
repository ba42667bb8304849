import Synchronization

/// The 16-byte header of a transport data message (type 4), read from raw bytes:
/// `04 00 00 00 | receiver index (LE u32) | counter (LE u64)`.
///
/// The data plane reads it before it knows which keypair the message belongs to (the
/// receiver index picks the keypair), so parsing is a free-standing value, and it never traps:
/// short or mistyped input gives nil.
public struct TransportHeader: Sendable, Equatable {
    /// The first four bytes of a transport message read as a little-endian u32: type 4 and
    /// three zero reserved bytes.
    public static let typeWord = UInt32(MessageType.transport.rawValue)
    public static let size = WireGuardProtocol.transportHeaderSize

    /// The index the receiver chose for this session (our `Keypair.localIndex` on receive).
    public var receiverIndex: UInt32
    /// The sender's nonce counter.
    public var counter: UInt64

    public init(receiverIndex: UInt32, counter: UInt64) {
        self.receiverIndex = receiverIndex
        self.counter = counter
    }

    /// Parses the header at `bytes`; nil when fewer than 16 bytes are readable or the first
    /// four bytes are not 4, 0, 0, 0. Does not check the full message length (see
    /// `Keypair.open`).
    @inline(__always)
    public init?(_ bytes: UnsafeRawPointer, length: Int) {
        guard length >= TransportHeader.size,
              UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self)) == TransportHeader.typeWord
        else { return nil }
        receiverIndex = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        counter = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    }

    /// Parses the header at the start of `buffer` (nil as above, also for an empty buffer).
    @inline(__always)
    public init?(_ buffer: UnsafeRawBufferPointer) {
        guard let base = buffer.baseAddress else { return nil }
        self.init(base, length: buffer.count)
    }

    /// Writes the 16 header bytes at `destination` (no alignment needed).
    @inline(__always)
    public func write(to destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: TransportHeader.typeWord.littleEndian, as: UInt32.self)
        destination.storeBytes(of: receiverIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        destination.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
    }
}

/// Why a transport message was not accepted. Every drop on the receive path has one of
/// these names (and the data plane a counter per case, indexed by `rawValue`).
public enum TransportRejection: UInt8, Error, CaseIterable, Sendable {
    /// Shorter than a keepalive (32 bytes: header and tag).
    case tooShort
    /// The first four bytes are not 4, 0, 0, 0.
    case notTransport
    /// The receiver index is not this keypair's local index (the caller's lookup disagrees).
    case wrongReceiver
    /// The keypair was invalidated (cleared by a newer handshake, or exhausted earlier).
    case keypairInvalid
    /// The keypair is REJECT_AFTER_TIME (180 s) old or older.
    case keypairExpired
    /// The peer already used counter REJECT_AFTER_MESSAGES − 1 with this keypair.
    case keypairExhausted
    /// The counter is at or beyond REJECT_AFTER_MESSAGES: no honest sender uses it.
    case counterBeyondLimit
    /// The counter is more than the replay window (8128) behind the newest one.
    case counterTooOld
    /// The counter was already received.
    case replayed
    /// The Poly1305 tag did not verify (corrupted, forged, or the wrong key).
    case authenticationFailed
    /// The caller's destination cannot hold the plaintext.
    case destinationTooSmall
}

/// Why a packet could not be sealed. The keypair-related cases mean "start a handshake and
/// stage the packet" (the kernel's out_nokey/out_invalid path).
public enum SealFailure: UInt8, Error, CaseIterable, Sendable {
    /// The keypair was invalidated (cleared, or exhausted or expired earlier).
    case keypairInvalid
    /// The keypair is REJECT_AFTER_TIME (180 s) old or older; it is now invalid for sending.
    case keypairExpired
    /// The next counter would reach REJECT_AFTER_MESSAGES; the keypair is now invalid for sending.
    case messagesExhausted
    /// Negative plaintext length.
    case invalidLength
    /// The destination cannot hold header, padded ciphertext and tag.
    case destinationTooSmall
    /// The AEAD backend reported an error (never expected: it passed its self-test). The
    /// counter was used up; nothing of the plaintext was written.
    case cipherFailed
}

/// The result of sealing one message.
public struct SealedMessage: Sendable, Equatable {
    /// Bytes written: header, padded ciphertext, tag.
    public var length: Int
    /// The counter (nonce) used.
    public var counter: UInt64
    /// The kernel's send-side keep_key_fresh: this keypair should be replaced (we sent more
    /// than REKEY_AFTER_MESSAGES, or we are its initiator and it is REKEY_AFTER_TIME old).
    /// The caller asks for a handshake (`SessionTimers.requestHandshake`); the keypair stays
    /// usable until it expires.
    public var rekeyDue: Bool
}

/// One WireGuard session's symmetric state: send and receive keys, the two indices, the send
/// counter and the receive replay window.
///
/// Created by the control plane when a handshake completes and read by the data plane, so it
/// is a class with identity (the receiver-index table and the `KeypairSlots` point at it).
/// Per-packet work allocates nothing: the keys and the replay window live in one heap block
/// allocated at init and wiped and freed in deinit.
///
/// Threading: every method is safe from any thread, without locks. The send counter is an
/// atomic (relaxed `wrappingAdd` hands each message a unique nonce even when several workers
/// send on one keypair); validity flags are atomics; the replay window is lock-free (see
/// `ReplayWindow`), so two workers may `open` messages of one keypair at the same time (a
/// peer's packets can arrive on several NIC queues) and a message delivered twice is still
/// accepted once. The kernel serialises its window with a spinlock; the core takes no locks.
public final class Keypair: @unchecked Sendable {
    /// The index we chose; peers send it as the receiver index of messages to us.
    public let localIndex: UInt32
    /// The index the peer chose; we send it as the receiver index.
    public let remoteIndex: UInt32
    /// When the handshake that produced the keypair completed (the kernel's birthdate).
    public let createdAt: Instant
    /// True when we sent the initiation. Only the initiator rekeys on age, and a responder's
    /// keypair waits in `KeypairSlots.next` until the initiator's first data message.
    public let isInitiator: Bool

    /// The next nonce to use; also the number of nonces handed out.
    private let sendCounter = Atomic<UInt64>(0)
    private let sendingValid = Atomic<Bool>(true)
    private let receivingValid = Atomic<Bool>(true)

    /// [send key: 32][receive key: 32][ReplayWindow], one cache-line-aligned block. The window
    /// starts on its own cache line so the receiving workers' writes do not evict the send key
    /// from the senders' caches. The window's atomics need a stable address: this block never
    /// moves.
    private let block: UnsafeMutableRawPointer
    private static let keysSize = 2 * Key32.byteCount
    private static let windowOffset = 64
    private static let blockSize = windowOffset + MemoryLayout<ReplayWindow>.stride
    private static let blockAlignment = 64

    @inline(__always) private var sendKey: UnsafeRawPointer { UnsafeRawPointer(block) }
    @inline(__always) private var receiveKey: UnsafeRawPointer { UnsafeRawPointer(block + Key32.byteCount) }
    @inline(__always) private var window: UnsafeMutablePointer<ReplayWindow> {
        (block + Keypair.windowOffset).assumingMemoryBound(to: ReplayWindow.self)
    }

    /// Takes the keys out of `keys` and wipes them there.
    public init(consuming keys: inout SessionKeys) {
        // The data path calls libsodium without checking; make sure it picked its fast code.
        Sodium.ensureInitialized()
        localIndex = keys.localIndex
        remoteIndex = keys.remoteIndex
        createdAt = keys.createdAt
        isInitiator = keys.isInitiator
        block = UnsafeMutableRawPointer.allocate(byteCount: Keypair.blockSize, alignment: Keypair.blockAlignment)
        keys.sendKey.withUnsafeBytes { block.copyMemory(from: $0.baseAddress!, byteCount: Key32.byteCount) }
        keys.receiveKey.withUnsafeBytes {
            (block + Key32.byteCount).copyMemory(from: $0.baseAddress!, byteCount: Key32.byteCount)
        }
        (block + Keypair.windowOffset).bindMemory(to: ReplayWindow.self, capacity: 1).initialize(to: ReplayWindow())
        keys.wipe()
    }

    deinit {
        Sodium.wipe(UnsafeMutableRawBufferPointer(start: block, count: Keypair.keysSize))
        window.deinitialize(count: 1)
        block.deallocate()
    }

    // MARK: State

    /// Nonces handed out so far (the next counter to be used).
    public var messagesSent: UInt64 { sendCounter.load(ordering: .relaxed) }

    /// The greatest counter received and authenticated, nil before the first (a snapshot while
    /// other threads receive).
    public var greatestReceivedCounter: UInt64? { window.pointee.greatestCounter }

    public var isValidForSending: Bool { sendingValid.load(ordering: .relaxed) }
    public var isValidForReceiving: Bool { receivingValid.load(ordering: .relaxed) }

    /// REJECT_AFTER_TIME reached: the keypair may neither send nor receive (the kernel's
    /// wg_birthdate_has_expired is inclusive: expired at exactly 180 s).
    @inline(__always)
    public func isExpired(at now: Instant) -> Bool {
        now.since(createdAt) >= WireGuardProtocol.rejectAfterTime
    }

    /// True when `seal` would not fail for keypair reasons now.
    public func canSend(at now: Instant) -> Bool {
        isValidForSending && !isExpired(at: now) && messagesSent < WireGuardProtocol.rejectAfterMessages
    }

    /// Stops all use of the keypair (a newer session replaced it, or keys are being cleared).
    /// The keys themselves are wiped when the last reference goes away.
    public func invalidate() {
        sendingValid.store(false, ordering: .relaxed)
        receivingValid.store(false, ordering: .relaxed)
    }

    /// Stops sending only (the kernel's wg_noise_expire_current_peer_keypairs).
    public func invalidateForSending() { sendingValid.store(false, ordering: .relaxed) }

    /// The kernel's send-side keep_key_fresh rule for a keypair in the current slot.
    public func needsRekeyAfterSending(at now: Instant) -> Bool {
        Keypair.rekeyDue(messagesSent: messagesSent, isInitiator: isInitiator, age: now.since(createdAt))
    }

    @inline(__always)
    static func rekeyDue(messagesSent: UInt64, isInitiator: Bool, age: Duration) -> Bool {
        messagesSent > WireGuardProtocol.rekeyAfterMessages
            || (isInitiator && age >= WireGuardProtocol.rekeyAfterTime)
    }

    /// Testing hook: jump the send counter (to reach the message limits without 2^60 seals).
    func setMessagesSent(_ value: UInt64) { sendCounter.store(value, ordering: .relaxed) }

    // MARK: Sizes

    /// The plaintext length after padding: a multiple of 16, but never past `mtu` (when
    /// non-zero) unless the plaintext itself is longer — the kernel's calculate_skb_padding,
    /// so a full-MTU packet does not grow by up to 15 bytes and fragment outside.
    @inline(__always)
    public static func paddedLength(plaintextLength n: Int, mtu: Int = 0) -> Int {
        let m = WireGuardProtocol.paddingMultiple
        let rounded = (n + m - 1) & ~(m - 1)
        if mtu > 0 && rounded > mtu { return max(n, mtu) }
        return rounded
    }

    /// The transport message length for a plaintext of `n` bytes.
    @inline(__always)
    public static func messageLength(plaintextLength n: Int, mtu: Int = 0) -> Int {
        WireGuardProtocol.transportHeaderSize + paddedLength(plaintextLength: n, mtu: mtu) + WireGuardProtocol.authTagSize
    }

    // MARK: Seal

    /// Seals `length` plaintext bytes at `plaintext` into a transport message at `message`
    /// (out of place; the two ranges must not overlap). `capacity` is the room at `message`.
    ///
    /// The padded plaintext must be contiguous for the one-shot AEAD, so when padding is needed
    /// the plaintext is first copied behind the header and zero-padded there (one memcpy, far
    /// cheaper than the cipher); when `length` is already a multiple of 16 it is encrypted
    /// straight from the source.
    ///
    /// `cipher` is the calling thread's own (see `TransportCipher`); the key comes from here.
    @inline(__always)
    public func seal(_ plaintext: UnsafeRawPointer, length: Int,
                     into message: UnsafeMutableRawPointer, capacity: Int,
                     now: Instant, cipher: borrowing TransportCipher, mtu: Int = 0) throws(SealFailure) -> SealedMessage {
        let sealed = try beginSeal(into: message, plaintextLength: length, capacity: capacity, now: now, mtu: mtu)
        let padded = sealed.length - WireGuardProtocol.transportHeaderSize - WireGuardProtocol.authTagSize
        let payload = message + WireGuardProtocol.transportHeaderSize
        if padded == length {
            guard cipher.seal(key: sendKey, counter: sealed.counter, source: plaintext, length: length, destination: payload)
            else { throw .cipherFailed }
        } else {
            payload.copyMemory(from: plaintext, byteCount: length)
            (payload + length).initializeMemory(as: UInt8.self, repeating: 0, count: padded - length)
            guard cipher.seal(key: sendKey, counter: sealed.counter, source: payload, length: padded, destination: payload)
            else { throw .cipherFailed }
        }
        return sealed
    }

    /// Seals in place: the plaintext already sits at `message + 16`, and `capacity` (counted
    /// from `message`) leaves room for the padding and the tag. The header is written in front.
    @inline(__always)
    public func sealInPlace(_ message: UnsafeMutableRawPointer, plaintextLength length: Int,
                            capacity: Int, now: Instant, cipher: borrowing TransportCipher,
                            mtu: Int = 0) throws(SealFailure) -> SealedMessage {
        let sealed = try beginSeal(into: message, plaintextLength: length, capacity: capacity, now: now, mtu: mtu)
        let padded = sealed.length - WireGuardProtocol.transportHeaderSize - WireGuardProtocol.authTagSize
        let payload = message + WireGuardProtocol.transportHeaderSize
        (payload + length).initializeMemory(as: UInt8.self, repeating: 0, count: padded - length)
        guard cipher.seal(key: sendKey, counter: sealed.counter, source: payload, length: padded, destination: payload)
        else { throw .cipherFailed }
        return sealed
    }

    /// Everything `seal` does but the payload: checks the length and the room, checks the
    /// keypair may send and takes the next counter, and writes the header at `message`.
    /// Returns the message as `seal` reports it; its payload (what `seal` puts there: the padded
    /// plaintext sealed, then the tag, the returned length minus 16 bytes at `message + 16`) is
    /// the caller's to write. Public for a data plane that fills the payload by other means;
    /// protocol code calls `seal`.
    @inline(__always)
    public func beginSeal(into message: UnsafeMutableRawPointer, plaintextLength length: Int, capacity: Int,
                          now: Instant, mtu: Int = 0) throws(SealFailure) -> SealedMessage {
        guard length >= 0 else { throw .invalidLength }
        let padded = Keypair.paddedLength(plaintextLength: length, mtu: mtu)
        let total = WireGuardProtocol.transportHeaderSize + padded + WireGuardProtocol.authTagSize
        guard capacity >= total else { throw .destinationTooSmall }
        let counter = try takeCounter(now: now)
        TransportHeader(receiverIndex: remoteIndex, counter: counter).write(to: message)
        return SealedMessage(length: total, counter: counter, rekeyDue: rekeyDue(after: counter, now: now))
    }

    /// Checks the keypair may send, then hands out the next nonce. Invalidates the keypair
    /// for sending when it expired or ran out of nonces, as the kernel does, so later calls
    /// stop at the flag and the counter cannot creep towards wrapping: concurrent senders can
    /// overshoot REJECT_AFTER_MESSAGES by at most one each, far inside the 2^13 margin.
    @inline(__always)
    private func takeCounter(now: Instant) throws(SealFailure) -> UInt64 {
        guard sendingValid.load(ordering: .relaxed) else { throw .keypairInvalid }
        guard !isExpired(at: now) else {
            invalidateForSending()
            throw .keypairExpired
        }
        let counter = sendCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        guard counter < WireGuardProtocol.rejectAfterMessages else {
            invalidateForSending()
            throw .messagesExhausted
        }
        return counter
    }

    @inline(__always)
    private func rekeyDue(after counter: UInt64, now: Instant) -> Bool {
        Keypair.rekeyDue(messagesSent: counter &+ 1, isInitiator: isInitiator, age: now.since(createdAt))
    }

    // MARK: Open

    /// Authenticates and decrypts the transport message at `message` (`length` bytes as
    /// received) into `plaintext` (out of place, not overlapping). Returns the plaintext
    /// length including padding; the inner IP header says how much of it is the packet.
    ///
    /// Order matters: cheap checks and the replay pre-check come before the cipher, so junk
    /// and replays cost no decryption; the counter is committed only after the tag verified,
    /// so forged messages cannot move the window. Safe from any thread: when two threads open
    /// copies of one message at once, both may decrypt, but only one commit succeeds and the
    /// other throws `.replayed`.
    @inline(__always)
    public func open(_ message: UnsafeRawPointer, length: Int,
                     into plaintext: UnsafeMutableRawPointer, capacity: Int,
                     now: Instant, cipher: borrowing TransportCipher) throws(TransportRejection) -> Int {
        let counter = try beginOpen(message, length: length, capacity: capacity, now: now)
        let cipherLength = length - WireGuardProtocol.keepaliveSize
        guard cipher.open(key: receiveKey, counter: counter,
                          source: message + WireGuardProtocol.transportHeaderSize, length: cipherLength,
                          destination: plaintext)
        else { throw .authenticationFailed }
        try finishOpen(counter)
        return cipherLength
    }

    /// As `open`, decrypting in place: the plaintext ends up at `message + 16`.
    @inline(__always)
    public func openInPlace(_ message: UnsafeMutableRawPointer, length: Int,
                            now: Instant, cipher: borrowing TransportCipher) throws(TransportRejection) -> Int {
        let counter = try precheck(UnsafeRawPointer(message), length: length, now: now)
        let cipherLength = length - WireGuardProtocol.keepaliveSize
        let payload = message + WireGuardProtocol.transportHeaderSize
        guard cipher.open(key: receiveKey, counter: counter, source: payload, length: cipherLength,
                          destination: payload)
        else { throw .authenticationFailed }
        try finishOpen(counter)
        return cipherLength
    }

    /// What `open` does before the cipher: the checks (shape, receiver, keypair state, the
    /// replay pre-check) and the room for the payload (`length - 32` bytes). Returns the
    /// message's counter, for `finishOpen`. Public, with `finishOpen`, for a data plane that
    /// takes the payload out by other means; protocol code calls `open`.
    @inline(__always)
    public func beginOpen(_ message: UnsafeRawPointer, length: Int, capacity: Int,
                          now: Instant) throws(TransportRejection) -> UInt64 {
        let counter = try precheck(message, length: length, now: now)
        guard capacity >= length - WireGuardProtocol.keepaliveSize else { throw .destinationTooSmall }
        return counter
    }

    /// What `open` does after the cipher: commits `counter` to the replay window, so the same
    /// counter is refused from now on. Only for a message whose payload was taken (in
    /// `open`: authenticated); throws when a copy of it committed first.
    @inline(__always)
    public func finishOpen(_ counter: UInt64) throws(TransportRejection) {
        guard window.pointee.commit(counter) else { throw commitRejection(counter) }
    }

    /// Why a commit failed after the pre-check passed: a copy of the message committed first
    /// (here or on another thread), or other threads moved the window past the counter meanwhile.
    @inline(never)
    private func commitRejection(_ counter: UInt64) -> TransportRejection {
        window.pointee.check(counter) == .tooOld ? .counterTooOld : .replayed
    }

    /// Everything before the cipher: shape, receiver, keypair state (the kernel's
    /// decrypt_packet checks), replay pre-check. Returns the counter.
    @inline(__always)
    private func precheck(_ message: UnsafeRawPointer, length: Int, now: Instant) throws(TransportRejection) -> UInt64 {
        guard length >= WireGuardProtocol.keepaliveSize else { throw .tooShort }
        guard let header = TransportHeader(message, length: length) else { throw .notTransport }
        guard header.receiverIndex == localIndex else { throw .wrongReceiver }
        guard receivingValid.load(ordering: .relaxed) else { throw .keypairInvalid }
        guard !isExpired(at: now) else {
            receivingValid.store(false, ordering: .relaxed)
            throw .keypairExpired
        }
        guard !window.pointee.isExhausted else {
            receivingValid.store(false, ordering: .relaxed)
            throw .keypairExhausted
        }
        switch window.pointee.check(header.counter) {
        case .acceptable: return header.counter
        case .duplicate: throw .replayed
        case .tooOld: throw .counterTooOld
        case .beyondLimit: throw .counterBeyondLimit
        }
    }
}
