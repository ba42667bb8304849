import Engine
#if canImport(Glibc)
import Glibc
#endif

/// The gateway's own command socket, `/run/xdpwg/NAME.control`: `xdpwg reload` asks the
/// running gateway to re-read its file and hears back what changed, or why nothing did.
///
/// One request per connection: a command line (`reload\n`); the reply is `ok` or `error` on
/// the first line, then one line per change or problem. The socket is 0600 in a root-owned
/// directory, so only root reaches it. The gateway's control thread serves it between its
/// other work (`service`), never blocking for long: a client has 200 ms to send its line.
public final class ControlSocket {
    public static let defaultDirectory = "/run/xdpwg"
    public let path: String
    public let fd: Int32

    /// Binds `DIRECTORY/NAME.control`, 0600. A file left by a gateway that died is replaced;
    /// one a running gateway answers on is refused (two gateways with one name).
    public init(name: String, directory: String = ControlSocket.defaultDirectory) throws(GatewayError) {
        path = "\(directory)/\(name).control"
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw GatewayError("cannot create \(directory)", errno: errno)
        }
        // Built in a local: `self` is complete (and its deinit would unlink the path, maybe
        // another gateway's socket) only once everything worked.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw GatewayError("cannot create the control socket", errno: errno) }
        do throws(GatewayError) {
            try UnixSocketFile.bind(fd, path: path, what: "control socket")
        } catch {
            close(fd)
            throw GatewayError("\(error) (two gateways named '\(name)'? give this one another [Gateway] Name)", underlying: error)
        }
        guard listen(fd, 8) == 0 else {
            let e = errno
            close(fd)
            unlink(path)
            throw GatewayError("cannot listen on \(path)", errno: e)
        }
        self.fd = fd
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Accepts waiting clients and answers each with `handle(command)`: (ok, lines).
    public func service(_ handle: (String) -> (ok: Bool, lines: [String])) {
        while true {
            let client = accept(fd, nil, nil)
            guard client >= 0 else { return }   // EAGAIN: nobody waiting (or a transient error)
            // Accepted sockets do not inherit O_NONBLOCK on Linux; close-on-exec is set by hand
            // (glibc's accept4 is not visible to Swift).
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            defer { close(client) }
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            timeout.tv_sec = 1
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            guard let line = ControlSocket.readLine(client) else { continue }
            let (ok, lines) = handle(line)
            ControlSocket.writeAll(client, ([ok ? "ok" : "error"] + lines).joined(separator: "\n") + "\n")
        }
    }

    // MARK: Client

    /// Sends `command` to the gateway named `name` and returns its reply.
    public static func request(_ command: String, name: String, directory: String = defaultDirectory,
                               timeoutSeconds: Int = 120) throws(GatewayError) -> (ok: Bool, lines: [String]) {
        let path = "\(directory)/\(name).control"
        let fd: Int32
        do throws(GatewayError) { fd = try connect(path: path) } catch {
            throw GatewayError("no gateway named '\(name)' is running (\(error))", underlying: error)
        }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        writeAll(fd, command + "\n")
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { read(fd, b.baseAddress, b.count) } }
            if n > 0 { reply += chunk[0..<n]; continue }
            if n < 0 { throw GatewayError("no reply from the gateway on \(path)", errno: errno) }
            break
        }
        var lines = String(decoding: reply, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard let status = lines.first, status == "ok" || status == "error" else {
            throw GatewayError("the gateway's reply on \(path) is not understood")
        }
        return (status == "ok", Array(lines.dropFirst()))
    }

    // MARK: Helpers

    static func connect(path: String) throws(GatewayError) -> Int32 {
        var address = try UnixSocketFile.address(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayError("socket", errno: errno) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw GatewayError("cannot connect to \(path)", errno: e)
        }
        return fd
    }

    /// One line of at most 256 bytes, without its newline; nil on timeout, EOF or overflow.
    static func readLine(_ fd: Int32) -> String? {
        var bytes: [UInt8] = []
        var byte: UInt8 = 0
        while bytes.count < 256 {
            let n = SystemCall.retryingEINTR { read(fd, &byte, 1) }
            guard n == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return nil
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { write(fd, b.baseAddress! + offset, b.count - offset) } }
            guard n > 0 else { return }
            offset += n
        }
    }
}
