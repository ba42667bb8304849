import CSodium

/// The Noise_IKpsk2 handshake of WireGuard (whitepaper §5.4, the kernel's noise.c).
///
///     initiator                                   responder
///     PeerHandshake.createInitiation ── type 1 ─▶ StaticIdentity.consumeInitiation (→ peer)
///     PeerHandshake.consumeResponse ◀── type 2 ── PeerHandshake.createResponse
///          → SessionKeys (isInitiator: true)           → SessionKeys (isInitiator: false)
///
/// Pure: the monotonic `now`, the wall-clock TAI64N timestamp, the ephemeral private key and
/// the local session index all come from the caller, so runs are reproducible in tests.
/// Control plane: these types allocate a little and are not thread-safe (one owner, the
/// control thread). Secrets live in `SecretKey`s or in `Key32` values wiped on every path.
///
/// Every handshake message we send gets mac1 and (with a fresh cookie) mac2 from the peer's
/// `CookieGenerator`; every one we receive has its mac1 verified before any DH.

/// Why a handshake message was rejected or could not be produced.
public enum HandshakeError: Error, Equatable, Sendable {
    /// The bytes are not a well-formed message of the expected type.
    case malformed(MessageError)
    /// mac1 is wrong: the sender does not know our public key, or the message was altered.
    case invalidMAC1
    /// An AEAD field (static key, timestamp, empty payload, cookie) did not authenticate.
    case decryptionFailed
    /// The initiator's static key is not one of our peers.
    case unknownPeer
    /// The initiation's timestamp is not newer than the last accepted from that peer.
    case replayedTimestamp
    /// An initiation from that peer was accepted less than 1/50 s ago.
    case floodedInitiations
    /// A Diffie-Hellman result was all zeros (a low-order public key).
    case lowOrderPoint
    /// The handshake is not in the state this message needs (e.g. a response when no
    /// initiation is outstanding, or one already consumed).
    case wrongState
    /// The response's receiver index is not the index of our outstanding initiation.
    case unknownIndex
    /// A cookie reply arrived when we have no message it could answer.
    case unexpectedCookieReply
    /// The output buffer is smaller than the message.
    case bufferTooSmall
}

/// Noise constants, computed once.
enum Noise {
    /// C = HASH(CONSTRUCTION).
    static let initialChainingKey: Key32 = {
        var c = WireGuardProtocol.construction
        return c.withUTF8 { BLAKE2s.hash(UnsafeRawBufferPointer($0), UnsafeRawBufferPointer(start: nil, count: 0)) }
    }()

    /// H = HASH(C ‖ IDENTIFIER).
    static let identifierHash: Key32 = {
        var id = WireGuardProtocol.identifier
        return initialChainingKey.withUnsafeBytes { c in id.withUTF8 { BLAKE2s.hash(c, UnsafeRawBufferPointer($0)) } }
    }()

    /// H = HASH(HASH(C ‖ IDENTIFIER) ‖ responder's static public): the state after the
    /// pre-message, computed once per responder key.
    static func initialHash(responder: PublicKey) -> Key32 {
        mixHash(identifierHash, responder.key)
    }

    @inline(__always)
    static func mixHash(_ h: Key32, _ data: UnsafeRawBufferPointer) -> Key32 {
        h.withUnsafeBytes { BLAKE2s.hash($0, data) }
    }

    @inline(__always)
    static func mixHash(_ h: Key32, _ data: Key32) -> Key32 {
        data.withUnsafeBytes { mixHash(h, $0) }
    }

    /// DH(private, public) into `out`; false for an all-zero result (low-order point).
    @inline(__always)
    static func dh(_ priv: PrivateKey, _ pub: PublicKey, into out: inout Key32) -> Bool {
        priv.sharedSecret(with: pub, into: &out)
    }

    /// AEAD(key, 0, plaintext, ad): seals `length` bytes at `source` to `destination`
    /// (ciphertext then tag). Every handshake AEAD uses counter 0, i.e. a 12-byte zero nonce.
    @inline(__always)
    static func seal(_ key: Key32, _ source: UnsafeRawPointer?, _ length: Int,
                     _ destination: UnsafeMutableRawPointer, ad: Key32) {
        key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                AEAD.seal(key: k.baseAddress!, counter: 0, source: source ?? UnsafeRawPointer(destination),
                          length: length, destination: destination, additionalData: a)
            }
        }
    }

    /// Opens `ciphertext` (which ends with the tag) into `destination` with counter 0; false
    /// when it does not authenticate.
    @inline(__always)
    static func open(_ key: Key32, _ ciphertext: UnsafeRawBufferPointer,
                     _ destination: UnsafeMutableRawPointer, ad: Key32) -> Bool {
        guard ciphertext.count >= AEAD.tagSize, let c = ciphertext.baseAddress else { return false }
        return key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                AEAD.open(key: k.baseAddress!, counter: 0, source: c, length: ciphertext.count - AEAD.tagSize,
                          destination: destination, additionalData: a)
            }
        }
    }
}

// MARK: - Local identity

/// An interface's static key pair and the values derived from it once.
public struct StaticIdentity: Sendable {
    public let privateKey: PrivateKey
    public var publicKey: PublicKey { privateKey.publicKey }
    /// HASH("mac1----" ‖ our public): verifies mac1 on messages sent to us.
    let mac1Key: Key32
    /// HASH("cookie--" ‖ our public): seals the cookies we send.
    let cookieKey: Key32
    /// The responder's hash after the pre-message: HASH(HASH(C ‖ IDENTIFIER) ‖ our public).
    let initialHash: Key32

    public init(privateKey: PrivateKey) {
        self.privateKey = privateKey
        mac1Key = LabelKeys.mac1Key(for: privateKey.publicKey)
        cookieKey = LabelKeys.cookieKey(for: privateKey.publicKey)
        initialHash = Noise.initialHash(responder: privateKey.publicKey)
    }

    /// Whether the message's mac1 is right for our public key (constant time).
    public func checkMAC1(_ message: some MACProtectedMessage) -> Bool {
        MAC16.compute(key: mac1Key, data: message.mac1Input) == message.mac1Field
    }

    /// Responder: consumes a handshake initiation. Verifies mac1, decrypts the initiator's
    /// static key, finds the peer with `lookup` (nil → `.unknownPeer`), decrypts the
    /// timestamp and checks it is newer than the peer's last one and that the peer's last
    /// accepted initiation is at least 1/50 s old. On success the peer's handshake holds the
    /// state for `createResponse` and is returned; on failure no peer state changes.
    public func consumeInitiation(
        _ message: InitiationMessage, now: Instant, lookup: (PublicKey) -> PeerHandshake?
    ) throws(HandshakeError) -> PeerHandshake {
        guard checkMAC1(message) else { throw .invalidMAC1 }

        var chainingKey = Noise.initialChainingKey
        var hash = initialHash
        var key = Key32()
        var shared = Key32()
        defer { chainingKey.wipe(); hash.wipe(); key.wipe(); shared.wipe() }

        /* e */
        let ephemeral = message.ephemeral
        chainingKey = KDF.kdf1(key: chainingKey, input: ephemeral.key)
        hash = Noise.mixHash(hash, ephemeral.key)

        /* es */
        guard Noise.dh(privateKey, ephemeral, into: &shared) else { throw .lowOrderPoint }
        (chainingKey, key) = KDF.kdf2(key: chainingKey, input: shared)

        /* s */
        var remoteStatic = Key32()
        let staticOK = remoteStatic.withUnsafeMutableBytes { Noise.open(key, message.encryptedStatic, $0.baseAddress!, ad: hash) }
        guard staticOK else { throw .decryptionFailed }
        hash = Noise.mixHash(hash, message.encryptedStatic)

        guard let peer = lookup(PublicKey(remoteStatic)) else { throw .unknownPeer }

        /* ss */
        guard let staticStatic = peer.staticStatic else { throw .lowOrderPoint }
        (chainingKey, key) = staticStatic.withUnsafeBytes { KDF.kdf2(key: chainingKey, input: $0) }

        /* {t} */
        var plain: (UInt64, UInt32) = (0, 0)   // 12 bytes
        let timeOK = withUnsafeMutableBytes(of: &plain) { Noise.open(key, message.encryptedTimestamp, $0.baseAddress!, ad: hash) }
        guard timeOK, let timestamp = withUnsafeBytes(of: &plain, { TAI64N(bytes: $0) }) else { throw .decryptionFailed }
        hash = Noise.mixHash(hash, message.encryptedTimestamp)

        guard timestamp > peer.latestTimestamp else { throw .replayedTimestamp }
        if let last = peer.lastInitiationConsumed,
           now.since(last) < PeerHandshake.minimumInitiationInterval {
            throw .floodedInitiations
        }

        peer.acceptInitiation(hash: hash, chainingKey: chainingKey, remoteEphemeral: ephemeral,
                              remoteIndex: message.senderIndex, timestamp: timestamp, now: now)
        return peer
    }

    /// `consumeInitiation` over raw bytes (validated first).
    public func consumeInitiation(
        _ bytes: UnsafeRawBufferPointer, now: Instant, lookup: (PublicKey) -> PeerHandshake?
    ) throws(HandshakeError) -> PeerHandshake {
        let message: InitiationMessage
        do { message = try InitiationMessage(bytes) } catch { throw .malformed(error) }
        return try consumeInitiation(message, now: now, lookup: lookup)
    }

    public func consumeInitiation(
        _ bytes: [UInt8], now: Instant, lookup: (PublicKey) -> PeerHandshake?
    ) throws(HandshakeError) -> PeerHandshake {
        // withUnsafeBytes rethrows untyped errors; carry the typed one out by hand.
        let r: Result<PeerHandshake, HandshakeError> = bytes.withUnsafeBytes { b in
            do throws(HandshakeError) { return .success(try consumeInitiation(b, now: now, lookup: lookup)) }
            catch { return .failure(error) }
        }
        return try r.get()
    }
}

// MARK: - Per-peer handshake

/// The handshake with one peer: its static key, preshared key, precomputed values, the state
/// of a handshake in progress, replay/flood bookkeeping and the cookie we hold from it.
public final class PeerHandshake {
    public enum State: Sendable, Equatable {
        /// No handshake in progress.
        case zeroed
        /// We sent an initiation and wait for the response.
        case createdInitiation
        /// We accepted an initiation and may create the response.
        case consumedInitiation
    }

    /// At most `maxInitiationsPerSecond` initiations a second are accepted from a peer.
    public static let minimumInitiationInterval =
        Duration.nanoseconds(1_000_000_000 / Int64(WireGuardProtocol.maxInitiationsPerSecond))

    public let identity: StaticIdentity
    public let remoteStatic: PublicKey
    private var presharedKey: SecretKey
    /// DH(our static private, peer's static public), computed once; nil when the peer's key is
    /// a low-order point (every handshake with it then fails with `.lowOrderPoint`).
    let staticStatic: SecretKey?
    /// The initiator's hash after the pre-message (HASH(HASH(C ‖ IDENTIFIER) ‖ peer public)).
    private let remoteInitialHash: Key32
    /// mac1/mac2 on what we send to this peer, and the cookie it gave us.
    public private(set) var cookies: CookieGenerator

    public private(set) var state: State = .zeroed
    private var hash = Key32()
    private var chainingKey = Key32()
    private var localEphemeral: PrivateKey?
    private var remoteEphemeral = PublicKey(.zero)
    /// The index of our outstanding initiation or response.
    public private(set) var localIndex: UInt32 = 0
    /// The peer's index from its initiation (responder side).
    public private(set) var remoteIndex: UInt32 = 0
    /// The greatest timestamp accepted from this peer (kept across handshakes).
    public private(set) var latestTimestamp = TAI64N.zero
    /// When the last initiation from this peer was accepted.
    public private(set) var lastInitiationConsumed: Instant?

    public init(identity: StaticIdentity, remoteStatic: PublicKey, presharedKey: PresharedKey = .none) {
        self.identity = identity
        self.remoteStatic = remoteStatic
        self.presharedKey = presharedKey.secret
        var ss = Key32()
        if identity.privateKey.sharedSecret(with: remoteStatic, into: &ss) {
            staticStatic = SecretKey(consuming: &ss)
        } else {
            ss.wipe()
            staticStatic = nil
        }
        remoteInitialHash = Noise.initialHash(responder: remoteStatic)
        cookies = CookieGenerator(peer: remoteStatic)
    }

    deinit {
        hash.wipe()
        chainingKey.wipe()
    }

    /// Replaces the preshared key (all zeros = none).
    public func setPresharedKey(_ key: PresharedKey) { presharedKey = key.secret }

    /// Abandons any handshake in progress (wipes its secrets). Replay and flood bookkeeping
    /// and the cookie are kept.
    public func reset() {
        state = .zeroed
        hash.wipe()
        chainingKey.wipe()
        localEphemeral = nil
        remoteEphemeral = PublicKey(.zero)
        localIndex = 0
        remoteIndex = 0
    }

    // MARK: Initiator

    /// Initiator: writes a 148-byte initiation into `out` and remembers the handshake state.
    /// `ephemeral` must be fresh for every initiation; `localIndex` is the random index the
    /// caller registered for this handshake; `timestamp` is the wall clock now; `now` the
    /// monotonic clock (for the cookie's age). Replaces any handshake in progress.
    public func createInitiation(
        ephemeral: PrivateKey, localIndex: UInt32, timestamp: TAI64N, now: Instant,
        into out: UnsafeMutableRawBufferPointer
    ) throws(HandshakeError) {
        guard out.count >= InitiationMessage.size else { throw .bufferTooSmall }
        guard let staticStatic else { throw .lowOrderPoint }
        reset()

        var chainingKey = Noise.initialChainingKey
        var hash = remoteInitialHash
        var key = Key32()
        var shared = Key32()
        defer { chainingKey.wipe(); hash.wipe(); key.wipe(); shared.wipe() }

        let message = UnsafeMutableRawBufferPointer(rebasing: out[0..<InitiationMessage.size])
        let base = message.baseAddress!
        typealias O = InitiationMessage.Offset
        MessageType.writeHeader(.initiation, into: message)
        message.storeBytes(of: localIndex.littleEndian, toByteOffset: O.sender, as: UInt32.self)

        /* e */
        let e = ephemeral.publicKey.key
        e.withUnsafeBytes { (base + O.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        chainingKey = KDF.kdf1(key: chainingKey, input: e)
        hash = Noise.mixHash(hash, e)

        /* es */
        guard Noise.dh(ephemeral, remoteStatic, into: &shared) else { throw .lowOrderPoint }
        (chainingKey, key) = KDF.kdf2(key: chainingKey, input: shared)

        /* s */
        identity.publicKey.key.withUnsafeBytes {
            Noise.seal(key, $0.baseAddress!, 32, base + O.encryptedStatic, ad: hash)
        }
        hash = Noise.mixHash(hash, UnsafeRawBufferPointer(rebasing: message[O.encryptedStatic..<O.encryptedTimestamp]))

        /* ss */
        (chainingKey, key) = staticStatic.withUnsafeBytes { KDF.kdf2(key: chainingKey, input: $0) }

        /* {t} */
        var stamp: (UInt64, UInt32) = (0, 0)
        withUnsafeMutableBytes(of: &stamp) { timestamp.write(to: $0.baseAddress!) }
        withUnsafeBytes(of: &stamp) { Noise.seal(key, $0.baseAddress!, TAI64N.byteCount, base + O.encryptedTimestamp, ad: hash) }
        hash = Noise.mixHash(hash, UnsafeRawBufferPointer(rebasing: message[O.encryptedTimestamp..<O.mac1]))

        cookies.addMACs(to: message, now: now)

        self.hash = hash
        self.chainingKey = chainingKey
        self.localEphemeral = ephemeral
        self.localIndex = localIndex
        state = .createdInitiation
    }

    /// `createInitiation` into a new 148-byte array.
    public func createInitiation(
        ephemeral: PrivateKey, localIndex: UInt32, timestamp: TAI64N, now: Instant
    ) throws(HandshakeError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: InitiationMessage.size)
        let r: HandshakeError? = out.withUnsafeMutableBytes { b in
            do throws(HandshakeError) {
                try createInitiation(ephemeral: ephemeral, localIndex: localIndex, timestamp: timestamp, now: now, into: b)
                return nil
            } catch { return error }
        }
        if let r { throw r }
        return out
    }

    /// Initiator: consumes the response to our outstanding initiation (the caller found this
    /// peer by the response's receiver index). Returns the session keys and clears the
    /// handshake; on failure the handshake is unchanged (a forged response cannot end it).
    public func consumeResponse(_ message: ResponseMessage, now: Instant) throws(HandshakeError) -> SessionKeys {
        guard identity.checkMAC1(message) else { throw .invalidMAC1 }
        guard state == .createdInitiation, let localEphemeral else { throw .wrongState }
        guard message.receiverIndex == localIndex else { throw .unknownIndex }

        var chainingKey = self.chainingKey
        var hash = self.hash
        var key = Key32()
        var tau = Key32()
        var shared = Key32()
        defer { chainingKey.wipe(); hash.wipe(); key.wipe(); tau.wipe(); shared.wipe() }

        /* e */
        let remoteEphemeral = message.ephemeral
        chainingKey = KDF.kdf1(key: chainingKey, input: remoteEphemeral.key)
        hash = Noise.mixHash(hash, remoteEphemeral.key)

        /* ee */
        guard Noise.dh(localEphemeral, remoteEphemeral, into: &shared) else { throw .lowOrderPoint }
        chainingKey = KDF.kdf1(key: chainingKey, input: shared)

        /* se */
        guard Noise.dh(identity.privateKey, remoteEphemeral, into: &shared) else { throw .lowOrderPoint }
        chainingKey = KDF.kdf1(key: chainingKey, input: shared)

        /* psk */
        (chainingKey, tau, key) = presharedKey.withUnsafeBytes { KDF.kdf3(key: chainingKey, input: $0) }
        hash = Noise.mixHash(hash, tau)

        /* {} */
        var nothing: UInt8 = 0
        guard Noise.open(key, message.encryptedNothing, &nothing, ad: hash) else { throw .decryptionFailed }
        hash = Noise.mixHash(hash, message.encryptedNothing)

        var (send, receive) = KDF.kdf2(key: chainingKey, input: UnsafeRawBufferPointer(start: nil, count: 0))
        let keys = SessionKeys(sendKey: send, receiveKey: receive, localIndex: localIndex,
                               remoteIndex: message.senderIndex, isInitiator: true, createdAt: now)
        send.wipe()
        receive.wipe()
        reset()
        return keys
    }

    public func consumeResponse(_ bytes: UnsafeRawBufferPointer, now: Instant) throws(HandshakeError) -> SessionKeys {
        let message: ResponseMessage
        do { message = try ResponseMessage(bytes) } catch { throw .malformed(error) }
        return try consumeResponse(message, now: now)
    }

    public func consumeResponse(_ bytes: [UInt8], now: Instant) throws(HandshakeError) -> SessionKeys {
        let r: Result<SessionKeys, HandshakeError> = bytes.withUnsafeBytes { b in
            do throws(HandshakeError) { return .success(try consumeResponse(b, now: now)) } catch { return .failure(error) }
        }
        return try r.get()
    }

    // MARK: Responder

    /// Called by `StaticIdentity.consumeInitiation` once every check passed.
    fileprivate func acceptInitiation(hash: Key32, chainingKey: Key32, remoteEphemeral: PublicKey,
                                      remoteIndex: UInt32, timestamp: TAI64N, now: Instant) {
        reset()
        self.hash = hash
        self.chainingKey = chainingKey
        self.remoteEphemeral = remoteEphemeral
        self.remoteIndex = remoteIndex
        latestTimestamp = timestamp
        if let last = lastInitiationConsumed { lastInitiationConsumed = max(last, now) } else { lastInitiationConsumed = now }
        state = .consumedInitiation
    }

    /// Responder: writes the 92-byte response to the initiation this peer's handshake
    /// consumed, and returns the session keys (the responder must not send data with them
    /// before the initiator's first data message arrives). Clears the handshake.
    public func createResponse(
        ephemeral: PrivateKey, localIndex: UInt32, now: Instant, into out: UnsafeMutableRawBufferPointer
    ) throws(HandshakeError) -> SessionKeys {
        guard out.count >= ResponseMessage.size else { throw .bufferTooSmall }
        guard state == .consumedInitiation else { throw .wrongState }

        var chainingKey = self.chainingKey
        var hash = self.hash
        var key = Key32()
        var tau = Key32()
        var shared = Key32()
        defer { chainingKey.wipe(); hash.wipe(); key.wipe(); tau.wipe(); shared.wipe() }

        let message = UnsafeMutableRawBufferPointer(rebasing: out[0..<ResponseMessage.size])
        let base = message.baseAddress!
        typealias O = ResponseMessage.Offset
        MessageType.writeHeader(.response, into: message)
        message.storeBytes(of: localIndex.littleEndian, toByteOffset: O.sender, as: UInt32.self)
        message.storeBytes(of: remoteIndex.littleEndian, toByteOffset: O.receiver, as: UInt32.self)

        /* e */
        let e = ephemeral.publicKey.key
        e.withUnsafeBytes { (base + O.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        chainingKey = KDF.kdf1(key: chainingKey, input: e)
        hash = Noise.mixHash(hash, e)

        /* ee */
        guard Noise.dh(ephemeral, remoteEphemeral, into: &shared) else { throw .lowOrderPoint }
        chainingKey = KDF.kdf1(key: chainingKey, input: shared)

        /* se */
        guard Noise.dh(ephemeral, remoteStatic, into: &shared) else { throw .lowOrderPoint }
        chainingKey = KDF.kdf1(key: chainingKey, input: shared)

        /* psk */
        (chainingKey, tau, key) = presharedKey.withUnsafeBytes { KDF.kdf3(key: chainingKey, input: $0) }
        hash = Noise.mixHash(hash, tau)

        /* {} */
        Noise.seal(key, nil, 0, base + O.encryptedNothing, ad: hash)
        hash = Noise.mixHash(hash, UnsafeRawBufferPointer(rebasing: message[O.encryptedNothing..<O.mac1]))

        cookies.addMACs(to: message, now: now)

        // The initiator sends with the first key: we receive with it.
        var (receive, send) = KDF.kdf2(key: chainingKey, input: UnsafeRawBufferPointer(start: nil, count: 0))
        let keys = SessionKeys(sendKey: send, receiveKey: receive, localIndex: localIndex,
                               remoteIndex: remoteIndex, isInitiator: false, createdAt: now)
        send.wipe()
        receive.wipe()
        reset()
        return keys
    }

    /// `createResponse` into a new 92-byte array.
    public func createResponse(
        ephemeral: PrivateKey, localIndex: UInt32, now: Instant
    ) throws(HandshakeError) -> (message: [UInt8], keys: SessionKeys) {
        var out = [UInt8](repeating: 0, count: ResponseMessage.size)
        let r: Result<SessionKeys, HandshakeError> = out.withUnsafeMutableBytes { b in
            do throws(HandshakeError) {
                return .success(try createResponse(ephemeral: ephemeral, localIndex: localIndex, now: now, into: b))
            } catch { return .failure(error) }
        }
        return (out, try r.get())
    }

    // MARK: Cookies

    /// Consumes a cookie reply from this peer (the caller found the peer by the reply's
    /// receiver index, which is the sender index of our last initiation or response). The
    /// cookie is then used for mac2 on what we send to the peer for the next 115 s.
    public func consumeCookieReply(_ reply: CookieReplyMessage, now: Instant) throws(HandshakeError) {
        try cookies.consumeCookieReply(reply, now: now)
    }

    public func consumeCookieReply(_ bytes: UnsafeRawBufferPointer, now: Instant) throws(HandshakeError) {
        let reply: CookieReplyMessage
        do { reply = try CookieReplyMessage(bytes) } catch { throw .malformed(error) }
        try consumeCookieReply(reply, now: now)
    }

    public func consumeCookieReply(_ bytes: [UInt8], now: Instant) throws(HandshakeError) {
        let r: HandshakeError? = bytes.withUnsafeBytes { b in
            do throws(HandshakeError) { try consumeCookieReply(b, now: now); return nil } catch { return error }
        }
        if let r { throw r }
    }
}
