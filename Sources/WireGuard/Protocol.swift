/// Protocol constants of WireGuard (whitepaper §6 and the kernel's messages.h), named once.
public enum WireGuardProtocol {
    public static let construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    public static let identifier = "WireGuard v1 zx2c4 Jason@zx2c4.com"
    public static let labelMAC1 = "mac1----"
    public static let labelCookie = "cookie--"

    // Message sizes on the wire.
    public static let initiationSize = 148
    public static let responseSize = 92
    public static let cookieReplySize = 64
    /// type(1) + reserved(3) + receiver index(4) + counter(8).
    public static let transportHeaderSize = 16
    public static let authTagSize = 16
    /// A keepalive: header and tag around an empty plaintext.
    public static let keepaliveSize = transportHeaderSize + authTagSize
    /// Plaintext is zero-padded to a multiple of this before sealing.
    public static let paddingMultiple = 16

    // Message limits.
    public static let rekeyAfterMessages: UInt64 = 1 << 60
    public static let rejectAfterMessages: UInt64 = UInt64.max - (1 << 13)   // 2^64 - 2^13 - 1

    // Timers.
    public static let rekeyAfterTime = Duration.seconds(120)
    public static let rejectAfterTime = Duration.seconds(180)
    public static let rekeyAttemptTime = Duration.seconds(90)
    public static let rekeyTimeout = Duration.seconds(5)
    public static let rekeyTimeoutJitterMax = Duration.milliseconds(333)
    public static let keepaliveTimeout = Duration.seconds(10)
    public static let cookieSecretLifetime = Duration.seconds(120)
    /// Keys are wiped when no new handshake succeeded for this long (REJECT_AFTER_TIME × 3).
    public static let wipeKeysAfter = Duration.seconds(540)

    // Handshake flood protection.
    /// At most one initiation per peer every 1/50 s is accepted (the kernel's INITIATIONS_PER_SECOND).
    public static let maxInitiationsPerSecond = 50
    /// Per source address, under load: 20 handshakes a second, with a burst of 5.
    public static let rateLimitPacketsPerSecond = 20
    public static let rateLimitBurst = 5

    /// The anti-replay window: 8128 packets behind the newest are accepted, the kernel's
    /// (128 − 1) × 64. (`ReplayWindow` stores it lock-free as 256 tagged 32-bit words.)
    public static let replayBitmapWords = 128
    public static let replayWindowSize = (replayBitmapWords - 1) * 64
}

/// The first byte of every WireGuard message; bytes 1–3 are reserved and zero.
public enum MessageType: UInt8, Sendable {
    case initiation = 1
    case response = 2
    case cookieReply = 3
    case transport = 4

    /// The type of a message whose first four bytes, read as a little-endian word, are
    /// `typeWord`: the type byte and three zero reserved bytes. nil for anything else. The
    /// values are spelled out (not `rawValue`) so the data path inlines a plain compare.
    @inlinable @inline(__always)
    public init?(typeWord: UInt32) {
        switch typeWord {
        case 1: self = .initiation
        case 2: self = .response
        case 3: self = .cookieReply
        case 4: self = .transport
        default: return nil
        }
    }

    /// The first four bytes of a message of this type, as a little-endian word.
    @inlinable @inline(__always)
    public var typeWord: UInt32 {
        switch self {
        case .initiation: 1
        case .response: 2
        case .cookieReply: 3
        case .transport: 4
        }
    }
}
