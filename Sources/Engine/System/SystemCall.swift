#if canImport(Glibc)
import Glibc
#endif

/// The one way to make a system call that a signal may interrupt. A call that fails with
/// EINTR did nothing and is made again; any other result is the caller's to judge.
///
/// `retryingEINTR` sits on per-packet paths (the AF_XDP TX kick and fill wake-up): it is
/// inlined, takes a non-escaping closure (no context on the heap, no existential) and costs
/// one comparison when the call succeeds.
public enum SystemCall {
    /// Calls `call` until it does not fail with EINTR and returns what it returned: a
    /// non-negative result, or a negative one with `errno` set by that (other) failure.
    @inlinable @inline(__always)
    public static func retryingEINTR<Result: SignedInteger>(_ call: () -> Result) -> Result {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// As `retryingEINTR`, and a failure throws `SystemError.syscall` naming `operation`
    /// with the errno.
    @inlinable @discardableResult
    public static func checked<Result: SignedInteger>(_ operation: @autoclosure () -> String,
                                                      _ call: () -> Result) throws(SystemError) -> Result {
        let result = retryingEINTR(call)
        guard result >= 0 else {
            let code = errno    // before `operation()`, which may allocate and touch errno
            throw .syscall(operation: operation(), errno: code)
        }
        return result
    }
}
