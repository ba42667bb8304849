import CXDPWG
#if canImport(Glibc)
import Glibc
#endif

/// The one way an errno is shown: strerror's text, then the symbolic name people search
/// for, as in "No such device (ENODEV)"; a number glibc has no name for shows as
/// "(errno N)". Every error type that carries an errno prints it through `text`.
public enum Errno {
    public static func text(_ code: Int32) -> String {
        let message = strerror(code).map { String(cString: $0) } ?? "Unknown error"
        return "\(message) (\(name(code) ?? "errno \(code)"))"
    }

    /// The symbolic name ("EPERM"), or nil; glibc's own table (strerrorname_np).
    public static func name(_ code: Int32) -> String? {
        cxdpwg_errno_name(code).map { String(cString: $0) }
    }
}
