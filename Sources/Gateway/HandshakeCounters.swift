import WireGuard

/// What the control plane counts about handshakes. The names are stable: they appear in
/// `xdpwg stats`, its JSON and the metrics.
public enum HandshakeCounter: Int, CaseIterable, Sendable {
    case initiationsReceived, responsesReceived, cookieRepliesReceived
    case initiationsSent, responsesSent, cookieRepliesSent
    case sessionsEstablished
    /// Packets staged while no session existed that were dropped (queue full, or timed out).
    case stagedDropped
    /// Handshake or staged messages the kernel socket refused to send.
    case sendErrors

    public var name: String {
        switch self {
        case .initiationsReceived: "initiations_received"
        case .responsesReceived: "responses_received"
        case .cookieRepliesReceived: "cookie_replies_received"
        case .initiationsSent: "initiations_sent"
        case .responsesSent: "responses_sent"
        case .cookieRepliesSent: "cookie_replies_sent"
        case .sessionsEstablished: "sessions_established"
        case .stagedDropped: "staged_dropped"
        case .sendErrors: "send_errors"
        }
    }
}

/// Why a handshake message was not answered or not accepted.
public enum HandshakeFailure: Int, CaseIterable, Sendable {
    case malformedInitiation, malformedResponse, malformedCookieReply
    case responseToNoInitiation, cookieReplyToNoInitiation, unknownMessageType
    /// mac1 did not verify (the sender does not know the tenant's public key).
    case invalidMAC1
    /// Over the per-source limit while under load.
    case rateLimited
    /// Every local index is in use.
    case noFreeIndex
    // From the Noise handshake itself (`HandshakeError`).
    case decryptionFailed, unknownPeer, replayedTimestamp, floodedInitiations, lowOrderPoint
    case wrongState, unknownIndex, unexpectedCookieReply, internalError

    public var name: String {
        switch self {
        case .malformedInitiation: "malformed_initiation"
        case .malformedResponse: "malformed_response"
        case .malformedCookieReply: "malformed_cookie_reply"
        case .responseToNoInitiation: "response_to_no_initiation"
        case .cookieReplyToNoInitiation: "cookie_reply_to_no_initiation"
        case .unknownMessageType: "unknown_message_type"
        case .invalidMAC1: "invalid_mac1"
        case .rateLimited: "rate_limited"
        case .noFreeIndex: "no_free_index"
        case .decryptionFailed: "decryption_failed"
        case .unknownPeer: "unknown_peer"
        case .replayedTimestamp: "replayed_timestamp"
        case .floodedInitiations: "flooded_initiations"
        case .lowOrderPoint: "low_order_point"
        case .wrongState: "wrong_state"
        case .unknownIndex: "unknown_index"
        case .unexpectedCookieReply: "unexpected_cookie_reply"
        case .internalError: "internal_error"
        }
    }

    init(_ error: HandshakeError) {
        switch error {
        case .malformed: self = .malformedInitiation
        case .invalidMAC1: self = .invalidMAC1
        case .decryptionFailed: self = .decryptionFailed
        case .unknownPeer: self = .unknownPeer
        case .replayedTimestamp: self = .replayedTimestamp
        case .floodedInitiations: self = .floodedInitiations
        case .lowOrderPoint: self = .lowOrderPoint
        case .wrongState: self = .wrongState
        case .unknownIndex: self = .unknownIndex
        case .unexpectedCookieReply: self = .unexpectedCookieReply
        case .bufferTooSmall: self = .internalError
        }
    }
}

/// The control plane's handshake counters (one thread writes them).
public struct HandshakeCounters: Sendable {
    public private(set) var counts = [UInt64](repeating: 0, count: HandshakeCounter.allCases.count)
    public private(set) var failures = [UInt64](repeating: 0, count: HandshakeFailure.allCases.count)

    public subscript(_ c: HandshakeCounter) -> UInt64 { counts[c.rawValue] }
    public subscript(_ f: HandshakeFailure) -> UInt64 { failures[f.rawValue] }

    mutating func add(_ c: HandshakeCounter, _ n: Int = 1) { counts[c.rawValue] &+= UInt64(n) }
    mutating func fail(_ f: HandshakeFailure) { failures[f.rawValue] &+= 1 }
}
