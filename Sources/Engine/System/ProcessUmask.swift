import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The umask belongs to the process, not the thread: two threads that each set it and put
/// back what they found can interleave and leave the temporary mask in place for good (every
/// file made afterwards, by this process or its children, would lose its group, other or x
/// bits). Every temporary change goes through here, one at a time.
private let umaskLock = Mutex(())

/// Runs `body` with the process's umask set to `mask`, then restores the previous one.
/// Other threads that create files meanwhile get `mask` too: keep `body` short.
public func withProcessUmask<T, E: Error>(_ mask: mode_t, _ body: () throws(E) -> T) throws(E) -> T {
    try umaskLock.withLock { _ throws(E) -> T in
        let saved = umask(mask)
        defer { umask(saved) }
        return try body()
    }
}
