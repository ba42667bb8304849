import Engine

/// An error that stops the gateway from starting, or a failure worth a log line. Its text is
/// what is shown; the typed error behind it (a SystemError, XDPError, BPFError, ...) stays
/// available as `underlying`, so a caller can still ask it (an errno, a reason) instead of
/// parsing text.
public struct GatewayError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public let underlying: (any Error & Sendable)?

    public init(_ message: String, underlying: (any Error & Sendable)? = nil) {
        description = message
        self.underlying = underlying
    }

    /// `message`, then the errno: "cannot create /run/xdpwg: Permission denied (EACCES)".
    public init(_ message: String, errno code: Int32) {
        self.init("\(message): \(Errno.text(code))", underlying: SystemError.syscall(operation: message, errno: code))
    }

    /// `error` as it describes itself, kept as `underlying`.
    public init(_ error: some Error & Sendable) {
        self.init("\(error)", underlying: error)
    }

    /// "context: error", with `error` kept as `underlying`.
    public init(_ context: String, _ error: some Error & Sendable) {
        self.init("\(context): \(error)", underlying: error)
    }
}
