import Engine
#if canImport(Glibc)
import Glibc
#endif

/// A listening Unix stream socket at a path only root may reach: what the `wg` sockets and
/// the gateway's control socket have in common.
enum UnixSocketFile {
    /// The address of `path`, or a clear error when it does not fit (107 bytes).
    static func address(_ path: String) throws(GatewayError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw GatewayError("socket path \(path) is longer than a Unix socket address allows (107 bytes)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }

    /// Binds `fd` to `path`, the file created 0600. A socket file left behind by a process
    /// that is gone (connecting is refused) is replaced; one a live process answers on is
    /// refused, and so is a file that is not a socket. `what` names the socket in messages.
    static func bind(_ fd: Int32, path: String, what: String) throws(GatewayError) {
        var address = try address(path)
        var bound = bindPrivately(fd, &address)
        if bound == EADDRINUSE {
            try checkStale(path: path, address: address)
            guard unlink(path) == 0 || errno == ENOENT else {
                throw GatewayError("cannot remove the stale \(what) \(path)", errno: errno)
            }
            Log.info("replaced the stale \(what) \(path) (no process answered on it)")
            bound = bindPrivately(fd, &address)
        }
        guard bound == 0 else { throw GatewayError("cannot bind the \(what) \(path)", errno: bound) }
    }

    /// bind(2) under umask 177, so the socket file is created 0600 (wireguard-go's umask 077
    /// gives 0700; the x bit means nothing on a socket). The umask is the process's, so it
    /// is restored at once (`withProcessUmask`). Returns 0 or the errno.
    private static func bindPrivately(_ fd: Int32, _ address: inout sockaddr_un) -> Int32 {
        withProcessUmask(0o177) {
            let rc = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            return rc == 0 ? 0 : errno
        }
    }

    /// Returns when the file at `path` is a socket nobody answers on; throws otherwise.
    private static func checkStale(path: String, address: sockaddr_un) throws(GatewayError) {
        var st = stat()
        if lstat(path, &st) == 0, st.st_mode & S_IFMT != S_IFSOCK {
            throw GatewayError("\(path) exists and is not a socket; not replacing it")
        }
        // Non-blocking, so that a live server with a full backlog cannot stall us (EAGAIN).
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { throw GatewayError("cannot create a socket to test \(path)", errno: errno) }
        defer { close(probe) }
        var address = address
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        let e = errno
        if rc == 0 || e == EAGAIN || e == EINPROGRESS {
            throw GatewayError("\(path) is in use: another process answers on it (is another xdpwg, or wireguard-go, "
                + "serving an interface of the same name?)")
        }
        guard e == ECONNREFUSED || e == ENOENT else {
            throw GatewayError("cannot tell whether \(path) is in use", errno: e)
        }
    }
}
