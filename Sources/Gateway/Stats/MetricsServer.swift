import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// Serves `GET /metrics` (Prometheus text exposition of a fresh snapshot of the gateway's
/// stats segment) over HTTP/1.1 on `[Gateway] MetricsListen`, from a thread of its own: the
/// data path never sees it, and a scrape reads the segment like `xdpwg stats` does.
///
/// Deliberately tiny: one request per connection (`Connection: close`), connections served
/// one after another, requests of at most 8 KiB, `requestTimeoutSeconds` (5) to send one.
/// Other paths get 404, other methods 405. A slow client delays the next scrape by at most
/// the timeout.
public final class MetricsServer: @unchecked Sendable {
    public let endpoint: Endpoint
    private let segment: StatsSegment
    private var listenFD: Int32 = -1
    private var wakeFD: Int32 = -1
    private var thread: pthread_t?
    private let stopping = Atomic<Bool>(false)
    /// The port actually bound (differs from `endpoint.port` when that is 0).
    public private(set) var port: UInt16 = 0

    static let maxRequestBytes = 8192
    /// How long a client may take to send its request, and to take the response.
    public let requestTimeoutSeconds: Int

    public init(endpoint: Endpoint, segment: StatsSegment, requestTimeoutSeconds: Int = 5) {
        self.endpoint = endpoint
        self.segment = segment
        self.requestTimeoutSeconds = max(requestTimeoutSeconds, 1)
    }

    deinit { stop() }

    /// Binds, listens and starts the thread. Throws (naming the address and the errno) when
    /// the address is in use or not ours.
    public func start() throws(GatewayError) {
        precondition(thread == nil, "MetricsServer.start called twice")
        let v4 = endpoint.address.isV4
        let fd = socket(v4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayError("metrics: cannot create a TCP socket", errno: errno) }
        var one: Int32 = 1
        // Restarting while old connections sit in TIME_WAIT must work; a live listener on the
        // port still makes bind fail with EADDRINUSE.
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var storage = sockaddr_storage()
        let length = withUnsafeMutableBytes(of: &storage) { raw -> Int in
            let bytes = endpoint.address.bytes
            if v4 {
                var a = sockaddr_in()
                a.sin_family = sa_family_t(AF_INET)
                a.sin_port = endpoint.port.bigEndian
                withUnsafeMutableBytes(of: &a.sin_addr) { $0.copyBytes(from: bytes) }
                raw.storeBytes(of: a, as: sockaddr_in.self)
                return MemoryLayout<sockaddr_in>.size
            }
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &a.sin6_addr) { $0.copyBytes(from: bytes) }
            raw.storeBytes(of: a, as: sockaddr_in6.self)
            return MemoryLayout<sockaddr_in6>.size
        }
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(length)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw GatewayError("metrics: cannot listen on \(endpoint)\(e == EADDRINUSE ? " (another program uses it)" : "")",
                               errno: e)
        }
        var actual = sockaddr_storage()
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &actualLength) }
        }
        port = withUnsafeBytes(of: &actual) { raw in
            UInt16(bigEndian: v4 ? raw.load(as: sockaddr_in.self).sin_port : raw.load(as: sockaddr_in6.self).sin6_port)
        }
        let wake = cxdpwg_eventfd_nonblocking()
        guard wake >= 0 else {
            let e = errno
            Glibc.close(fd)
            throw GatewayError("metrics: cannot create an eventfd", errno: e)
        }
        listenFD = fd
        wakeFD = wake

        let context = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { raw in
            let server = Unmanaged<MetricsServer>.fromOpaque(raw!).takeRetainedValue()
            CPUTopology.setCurrentThreadName("xdpwg-metrics")
            server.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<MetricsServer>.fromOpaque(context).release()
            closeDescriptors()
            throw GatewayError("metrics: cannot start its thread", errno: rc)
        }
        thread = t
    }

    /// Stops accepting, waits for the thread and closes the socket. Idempotent.
    public func stop() {
        guard let t = thread else { closeDescriptors(); return }
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        pthread_join(t, nil)
        thread = nil
        closeDescriptors()
    }

    private func closeDescriptors() {
        if listenFD >= 0 { Glibc.close(listenFD); listenFD = -1 }
        if wakeFD >= 0 { Glibc.close(wakeFD); wakeFD = -1 }
    }

    private func run() {
        var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        while !stopping.load(ordering: .acquiring) {
            let n = SystemCall.retryingEINTR { poll(&fds, nfds_t(fds.count), -1) }
            if n < 0 { Log.error("metrics: poll failed: \(Errno.text(errno))"); return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            // (accept4 with SOCK_CLOEXEC is not in Glibc's Swift module.)
            let client = accept(listenFD, nil, nil)
            if client < 0 { continue }      // the client gave up, or EMFILE: try again later
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            serve(client)
            Glibc.close(client)
        }
    }

    /// Reads one request, answers it and returns (the caller closes the connection).
    private func serve(_ fd: Int32) {
        var timeout = timeval(tv_sec: requestTimeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // One deadline for the whole request, however the client trickles it in.
        let deadline = Clock.now().nanoseconds + UInt64(requestTimeoutSeconds) * 1_000_000_000
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        while MetricsServer.headerEnd(request) == nil {
            guard request.count < MetricsServer.maxRequestBytes else {
                respond(fd, status: "431 Request Header Fields Too Large", body: "request too large\n")
                discardInput(fd)
                return
            }
            let now = Clock.now().nanoseconds
            guard now < deadline else { return }       // too slow: just close
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let waited = poll(&ready, 1, Int32((deadline - now) / 1_000_000) + 1)
            if waited < 0 && errno == EINTR { continue }     // again, with what is left of the deadline
            guard waited > 0 else { return }
            let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { recv(fd, b.baseAddress, b.count, Int32(MSG_DONTWAIT)) } }
            if n < 0 && errno == EAGAIN { continue }
            guard n > 0 else { return }     // closed, or an error
            request += chunk[0..<n]
        }
        let response = MetricsServer.route(request)
        if response.status.hasPrefix("200") {
            let body = StatsRendering.renderPrometheus(segment.snapshot())
            respond(fd, status: response.status, body: response.isHead ? "" : body, length: body.utf8.count,
                    contentType: "text/plain; version=0.0.4; charset=utf-8")
        } else {
            respond(fd, status: response.status, body: response.body, extraHeaders: response.extraHeaders)
            discardInput(fd)
        }
    }

    /// Reads what the client still sends (a body, the rest of an oversized request) for a
    /// moment before the connection is closed: closing with unread input makes the kernel
    /// send a reset, which can destroy the answer before the client reads it.
    private func discardInput(_ fd: Int32) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        var discarded = 0
        while discarded < 65536 {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 200) > 0 else { return }
            let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { recv(fd, b.baseAddress, b.count, Int32(MSG_DONTWAIT)) } }
            if n < 0 && errno == EAGAIN { continue }
            guard n > 0 else { return }
            discarded += n
        }
    }

    /// What to answer to `request` (the bytes up to the blank line): status and, for errors,
    /// the body. Pure, for tests of the rules.
    static func route(_ request: [UInt8]) -> (status: String, body: String, extraHeaders: String, isHead: Bool) {
        let lineEnd = request.firstIndex(of: UInt8(ascii: "\r")) ?? request.endIndex
        let parts = request[..<lineEnd].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)), parts[1].first == UInt8(ascii: "/") else {
            return ("400 Bad Request", "bad request\n", "", false)
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        var target = Array(parts[1])
        if let query = target.firstIndex(of: UInt8(ascii: "?")) { target.removeSubrange(query...) }
        guard target == Array("/metrics".utf8) else { return ("404 Not Found", "not found: try /metrics\n", "", false) }
        guard method == "GET" || method == "HEAD" else {
            return ("405 Method Not Allowed", "method not allowed\n", "Allow: GET, HEAD\r\n", false)
        }
        return ("200 OK", "", "", method == "HEAD")
    }

    /// The index just past "\r\n\r\n", or nil.
    static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4)
        where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    private func respond(_ fd: Int32, status: String, body: String, length: Int? = nil,
                         contentType: String = "text/plain; charset=utf-8", extraHeaders: String = "") {
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(length ?? body.utf8.count)\r\n"
            + extraHeaders + "Connection: close\r\n\r\n"
        var bytes = Array(head.utf8) + Array(body.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { b in
                SystemCall.retryingEINTR { send(fd, b.baseAddress! + sent, b.count - sent, Int32(MSG_NOSIGNAL)) }
            }
            guard n > 0 else { return }     // the client went away or stalled past the timeout
            sent += n
        }
        // Half-close so the client reads everything before it sees the connection end.
        shutdown(fd, Int32(SHUT_WR))
    }
}
