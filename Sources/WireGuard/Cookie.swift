/// WireGuard's DoS mitigation (whitepaper §5.3 and §5.4.7, the kernel's cookie.c).
///
/// Every initiation and response carries two MACs over the bytes before them:
/// - mac1 = MAC(HASH("mac1----" ‖ receiver's static public), message…): proves the sender
///   knows whom it is talking to; checked on every handshake message before any DH.
/// - mac2 = MAC(cookie, message… ‖ mac1): present (non-zero) only when the sender holds a
///   fresh cookie from the receiver. A responder under load answers handshake messages that
///   lack a valid mac2 with a cookie reply instead of doing the expensive DH, and its rate
///   limiter bounds what it processes per source address.
///
/// The responder side is `CookieChecker` (one per interface); the sender side is
/// `CookieGenerator` (one per peer, inside `PeerHandshake`).

/// Fills a buffer with cryptographically secure random bytes (the caller's randomness source).
public typealias RandomBytesSource = (UnsafeMutableRawBufferPointer) -> Void

/// A handshake message protected by mac1/mac2 (initiation or response).
public protocol MACProtectedMessage {
    var bytes: UnsafeRawBufferPointer { get }
    static var size: Int { get }
    var senderIndex: UInt32 { get }
}

extension InitiationMessage: MACProtectedMessage {}
extension ResponseMessage: MACProtectedMessage {}

extension MACProtectedMessage {
    /// The bytes mac1 covers (everything before it).
    var mac1Input: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[0..<MessageMACs.mac1Offset(size: Self.size)])
    }
    /// The bytes mac2 covers (everything before it, mac1 included).
    var mac2Input: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[0..<MessageMACs.mac2Offset(size: Self.size)])
    }
    var mac1Field: MAC16 {
        MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[MessageMACs.mac1Offset(size: Self.size)...]))
    }
    var mac2Field: MAC16 {
        MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[MessageMACs.mac2Offset(size: Self.size)...]))
    }
}

/// The label-derived keys of a static public key (computed once per interface and per peer).
enum LabelKeys {
    /// HASH("mac1----" ‖ public): the key of mac1 on messages sent to the owner of `publicKey`.
    static func mac1Key(for publicKey: PublicKey) -> Key32 { derive(WireGuardProtocol.labelMAC1, publicKey) }
    /// HASH("cookie--" ‖ public): the XChaCha20-Poly1305 key of cookie replies sent by the
    /// owner of `publicKey`.
    static func cookieKey(for publicKey: PublicKey) -> Key32 { derive(WireGuardProtocol.labelCookie, publicKey) }

    private static func derive(_ label: String, _ publicKey: PublicKey) -> Key32 {
        var label = label
        return label.withUTF8 { l in
            publicKey.key.withUnsafeBytes { p in BLAKE2s.hash(UnsafeRawBufferPointer(l), p) }
        }
    }
}

/// What to do with a handshake message whose MACs were checked (wireguard-go's order).
public enum CookieDecision: Equatable, Sendable {
    /// mac1 valid and not under load: process it.
    case process
    /// Under load and mac2 valid: process it if the per-source rate limiter allows.
    case processIfRateLimiterAllows
    /// Under load and mac2 missing or stale: answer with a cookie reply, do not process.
    case sendCookieReply
    /// mac1 invalid: drop silently.
    case dropInvalidMAC1
}

// MARK: - Responder side

/// The receiving side of the cookie mechanism, one per interface. Not thread-safe: owned by
/// the control thread.
public struct CookieChecker {
    /// HASH("mac1----" ‖ our static public): verifies mac1 of messages to us.
    let mac1Key: Key32
    /// HASH("cookie--" ‖ our static public): encrypts the cookies we send.
    let encryptionKey: Key32
    /// The random secret cookies are MACs under; replaced when older than 120 s.
    private var secret: Key32 = .zero
    private var secretBirth: Instant?
    private let random: RandomBytesSource

    /// `random` supplies the cookie secrets and the cookie-reply nonces.
    public init(identity: StaticIdentity, random: @escaping RandomBytesSource) {
        mac1Key = identity.mac1Key
        encryptionKey = identity.cookieKey
        self.random = random
    }

    /// Uses the operating system's CSPRNG (libsodium) for secrets and nonces.
    public init(identity: StaticIdentity) {
        self.init(identity: identity, random: { Sodium.randomBytes($0) })
    }

    /// Whether the message's mac1 is correct for our static public key (constant time).
    public func checkMAC1(_ message: some MACProtectedMessage) -> Bool {
        MAC16.compute(key: mac1Key, data: message.mac1Input) == message.mac1Field
    }

    /// The cookie for a source endpoint: MAC(secret, address bytes ‖ big-endian port), with the
    /// secret rotated when it is 120 s old.
    public mutating func cookie(for source: SourceAddress, port: UInt16, now: Instant) -> MAC16 {
        if let birth = secretBirth, now.since(birth) < WireGuardProtocol.cookieSecretLifetime {
            // current secret
        } else {
            secret.withUnsafeMutableBytes { random($0) }
            secretBirth = now
        }
        var state = BLAKE2s(digestLength: MAC16.byteCount, key: secret)
        source.withAddressBytes { state.update($0) }
        var p = port.bigEndian
        Swift.withUnsafeBytes(of: &p) { state.update($0) }
        var out = MAC16()
        out.withUnsafeMutableBytes { state.finalize(into: $0) }
        return out
    }

    /// Whether the message's mac2 is the MAC under the current cookie of its source.
    public mutating func checkMAC2(_ message: some MACProtectedMessage, source: SourceAddress, port: UInt16,
                                   now: Instant) -> Bool {
        var cookie = cookie(for: source, port: port, now: now)
        defer { cookie.wipe() }
        return MAC16.compute(key: cookie, data: message.mac2Input) == message.mac2Field
    }

    /// The under-load policy. The caller decides "under load" (e.g. its handshake queue is
    /// over an eighth full, and for a second after); the rate limiter is the caller's too.
    public mutating func evaluate(_ message: some MACProtectedMessage, source: SourceAddress, port: UInt16,
                                  underLoad: Bool, now: Instant) -> CookieDecision {
        guard checkMAC1(message) else { return .dropInvalidMAC1 }
        guard underLoad else { return .process }
        return checkMAC2(message, source: source, port: port, now: now) ? .processIfRateLimiterAllows : .sendCookieReply
    }

    /// `evaluate`, then the rate limiter for messages that passed mac2 under load: true when
    /// the message should go on to the handshake, false when it was answered or dropped by
    /// the caller according to `decision`.
    public mutating func evaluate(_ message: some MACProtectedMessage, source: SourceAddress, port: UInt16,
                                  underLoad: Bool, now: Instant,
                                  rateLimiter: inout RateLimiter) -> (decision: CookieDecision, rateLimit: RateLimitDecision?) {
        let d = evaluate(message, source: source, port: port, underLoad: underLoad, now: now)
        guard d == .processIfRateLimiterAllows else { return (d, nil) }
        return (d, rateLimiter.allow(source, now: now))
    }

    /// Writes a 64-byte cookie reply to `message` (whose mac1 must be valid) into `out`:
    /// receiver = the message's sender index, a random 24-byte nonce, and the source's cookie
    /// sealed with XChaCha20-Poly1305 under HASH("cookie--" ‖ our public), the message's mac1
    /// as additional data. Returns false when `out` is smaller than 64 bytes.
    @discardableResult
    public mutating func createCookieReply(to message: some MACProtectedMessage, source: SourceAddress, port: UInt16,
                                           now: Instant, into out: UnsafeMutableRawBufferPointer) -> Bool {
        guard CookieReplyMessage.writeHeader(into: out, receiverIndex: message.senderIndex) else { return false }
        let base = out.baseAddress!
        random(UnsafeMutableRawBufferPointer(start: base + CookieReplyMessage.Offset.nonce,
                                             count: CookieReplyMessage.nonceSize))
        var cookie = cookie(for: source, port: port, now: now)
        defer { cookie.wipe() }
        let mac1 = message.mac1Field
        encryptionKey.withUnsafeBytes { key in
            cookie.withUnsafeBytes { c in
                mac1.withUnsafeBytes { ad in
                    AEAD.xseal(key: key.baseAddress!, nonce: base + CookieReplyMessage.Offset.nonce,
                               source: c.baseAddress!, length: MAC16.byteCount,
                               destination: base + CookieReplyMessage.Offset.encryptedCookie,
                               additionalData: ad)
                }
            }
        }
        return true
    }

    public mutating func createCookieReply(to message: some MACProtectedMessage, source: SourceAddress, port: UInt16,
                                           now: Instant) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: CookieReplyMessage.size)
        out.withUnsafeMutableBytes { _ = createCookieReply(to: message, source: source, port: port, now: now, into: $0) }
        return out
    }
}

// MARK: - Sender side

/// The sending side of the cookie mechanism, one per peer: computes mac1/mac2 on the
/// handshake messages we send to that peer and stores cookies the peer sends back.
public struct CookieGenerator: Sendable {
    /// HASH("mac1----" ‖ peer's static public).
    let mac1Key: Key32
    /// HASH("cookie--" ‖ peer's static public): decrypts the peer's cookie replies.
    let decryptionKey: Key32
    private var lastMAC1Sent = MAC16()
    private var hasSentMAC1 = false
    private var cookie = MAC16()
    private var cookieReceivedAt: Instant?

    /// A cookie is used for this long after it arrived: the secret's 120 s lifetime less the
    /// kernel's 5 s allowance for latency, so we never send a mac2 under a secret the peer
    /// has just replaced.
    public static let cookieUsableFor = WireGuardProtocol.cookieSecretLifetime - .seconds(5)

    public init(peer: PublicKey) {
        mac1Key = LabelKeys.mac1Key(for: peer)
        decryptionKey = LabelKeys.cookieKey(for: peer)
    }

    /// Whether a cookie from the peer is held and still usable at `now`.
    public func hasFreshCookie(now: Instant) -> Bool {
        guard let at = cookieReceivedAt else { return false }
        return now.since(at) < CookieGenerator.cookieUsableFor
    }

    /// Fills in mac1 (always) and mac2 (fresh cookie, else zeros) of a complete initiation or
    /// response laid out in `message` (exactly 148 or 92 bytes), and remembers mac1 for the
    /// cookie reply that may answer it. Public for harnesses that lay out messages themselves
    /// (the fuzzers give mutated bodies a valid mac1 so that they reach the handshake).
    public mutating func addMACs(to message: UnsafeMutableRawBufferPointer, now: Instant) {
        let mac1Offset = MessageMACs.mac1Offset(size: message.count)
        let mac2Offset = MessageMACs.mac2Offset(size: message.count)
        let mac1 = MAC16.compute(key: mac1Key, data: UnsafeRawBufferPointer(rebasing: message[0..<mac1Offset]))
        MessageMACs.store(mac1, at: mac1Offset, in: message)
        lastMAC1Sent = mac1
        hasSentMAC1 = true
        var mac2 = MAC16()
        if hasFreshCookie(now: now) {
            mac2 = MAC16.compute(key: cookie, data: UnsafeRawBufferPointer(rebasing: message[0..<mac2Offset]))
        }
        MessageMACs.store(mac2, at: mac2Offset, in: message)
    }

    /// Decrypts a cookie reply to the last message we sent (its mac1 is the additional data)
    /// and stores the cookie. A reply is accepted once: a later one needs a new message.
    public mutating func consumeCookieReply(_ reply: CookieReplyMessage, now: Instant) throws(HandshakeError) {
        guard hasSentMAC1 else { throw .unexpectedCookieReply }
        var candidate = MAC16()
        defer { candidate.wipe() }
        let ok = decryptionKey.withUnsafeBytes { key in
            lastMAC1Sent.withUnsafeBytes { ad in
                candidate.withUnsafeMutableBytes { c in
                    AEAD.xopen(key: key.baseAddress!, nonce: reply.nonce.baseAddress!,
                               source: reply.encryptedCookie.baseAddress!, length: MAC16.byteCount,
                               destination: c.baseAddress!, additionalData: ad)
                }
            }
        }
        guard ok else { throw .decryptionFailed }
        cookie = candidate
        cookieReceivedAt = now
        hasSentMAC1 = false
    }

    /// Forgets the cookie and the last mac1.
    public mutating func reset() {
        cookie.wipe()
        cookieReceivedAt = nil
        lastMAC1Sent = MAC16()
        hasSentMAC1 = false
    }
}
