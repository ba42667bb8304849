import Engine
#if canImport(Glibc)
import Glibc
#endif

/// Why the peer emulator could not do what was asked: what failed, and why (errno as text).
public struct PeerEmulatorError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }

    /// `what` failed with `errno`: "what: No such file or directory (ENOENT)".
    public init(_ what: String, errno code: Int32) {
        description = "\(what): \(Errno.text(code))"
    }
}
