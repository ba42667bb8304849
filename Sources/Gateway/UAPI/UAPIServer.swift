import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// What the UAPI server asks of the gateway. Called on the thread that calls
/// `UAPIServer.service`, one request at a time. The handler may stop serving an interface
/// (`stopListening`) from inside a call; the connection asking is then closed unanswered.
public protocol UAPIHandler: AnyObject {
    /// The interface's state for `get=1`; nil when it no longer exists (the reply is ENODEV).
    func uapiGet(interface: String) -> UAPIDeviceState?
    /// Applies a `set=1`; nil when applied, else the error the reply carries. All or nothing:
    /// a refused request changes nothing.
    func uapiSet(interface: String, _ request: UAPISetRequest) -> UAPIError?
}

/// Serves the WireGuard UAPI (see UAPIProtocol.swift) on DIRECTORY/NAME.sock for each tenant,
/// so that the unmodified `wg` tool shows and changes xdpwg tenants as it does wireguard-go
/// interfaces. It has no thread of its own: the gateway's control thread adds
/// `pollDescriptors()` to its poll set and hands what poll returned to `service(_:)`. No call
/// blocks; every socket is non-blocking.
///
/// For an operator's peace of mind:
/// - Only root (or the user the gateway runs as) may connect: the socket is 0600 in a
///   directory only root writes, and a connection whose SO_PEERCRED uid is another is closed
///   unanswered.
/// - One request at a time per connection, in order, as wireguard-go: a connection may send
///   several; the next is read once the previous reply has been written.
/// - Bounded: requests of at most `Limits.maxRequestBytes`, at most `Limits.maxConnections`
///   connections (the least recently active idle one makes room, else the newcomer is
///   closed), and each request must arrive and its reply be taken within `Limits.timeout`
///   of the connection opening or of the previous reply.
/// - A malformed request is answered `errno=N` and a blank line, and logged (never its keys).
/// - Buffers that held requests or replies (private and preshared keys) are wiped.
///
/// Not thread-safe: every call must come from one thread.
public final class UAPIServer {
    public struct Limits: Sendable {
        /// The largest request: `wg syncconf` sends about 250 bytes per peer plus about 30
        /// per allowed IP, so the default (16 MiB) takes some 50,000 peers at once.
        public var maxRequestBytes: Int
        /// Connections open at once, over all interfaces (`wg` opens one per command, and
        /// `wg show` one more per interface to test that it answers).
        public var maxConnections: Int
        /// How long a connection may take to send a request and read the reply.
        public var timeout: Duration

        /// Values below 64 bytes and 1 connection are raised to those.
        public init(maxRequestBytes: Int = 16 << 20, maxConnections: Int = 64, timeout: Duration = .seconds(5)) {
            self.maxRequestBytes = max(64, maxRequestBytes)
            self.maxConnections = max(1, maxConnections)
            self.timeout = timeout
        }
    }

    /// Where the sockets live: `wg` looks in /var/run/wireguard.
    public let directory: String
    public let limits: Limits
    /// Held weakly, so that a gateway that owns the server can be its handler; once it is
    /// gone, requests are answered ENODEV.
    public private(set) weak var handler: UAPIHandler?

    private var listeners: [String: Listener] = [:]
    private var connections: [Int32: Connection] = [:]
    /// Scratch for reading what a refused request still sends (wiped after each read).
    private let discardBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
    /// Bytes read from one connection in one `service` call, so that one busy client cannot
    /// hold the control thread.
    private static let readBudget = 1 << 20

    public init(directory: String = "/var/run/wireguard", handler: UAPIHandler, limits: Limits = Limits()) {
        self.directory = directory
        self.handler = handler
        self.limits = limits
    }

    deinit {
        shutdown()
        wipe(discardBuffer)
        discardBuffer.deallocate()
    }

    /// The interfaces being served, sorted.
    public var interfaces: [String] { listeners.keys.sorted() }

    /// The socket path of `interface`: DIRECTORY/NAME.sock.
    public func socketPath(interface: String) -> String { "\(directory)/\(interface).sock" }

    // MARK: Listening

    /// Serves `interface` at DIRECTORY/NAME.sock. Creates the directory (0755) if needed, and
    /// refuses one that others may write; the socket file is created 0600, so only its owner
    /// (root) may connect. A socket file left
    /// behind by a process that is gone (connecting is refused) is replaced; one that a live
    /// process answers is not, and neither is a file that is not a socket.
    public func listen(interface: String) throws(GatewayError) {
        var name = interface
        let nameProblem = name.withUTF8 { ConfigurationParser.interfaceNameProblem(.init(bytes: UnsafeRawBufferPointer($0))) }
        if let nameProblem { throw GatewayError("UAPI interface name: \(nameProblem)") }
        guard listeners[interface] == nil else { throw GatewayError("UAPI: already serving \(interface)") }
        try makeDirectory()

        let path = socketPath(interface: interface)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw GatewayError("cannot create the UAPI socket for \(interface)", errno: errno) }
        var keep = false
        defer { if !keep { close(fd) } }
        try UnixSocketFile.bind(fd, path: path, what: "UAPI socket")
        guard Glibc.listen(fd, SOMAXCONN) == 0 else {
            let e = errno
            unlink(path)
            throw GatewayError("cannot listen on the UAPI socket \(path)", errno: e)
        }
        var st = stat()
        guard stat(path, &st) == 0 else {
            let e = errno
            unlink(path)
            throw GatewayError("cannot stat the UAPI socket \(path) just bound", errno: e)
        }
        keep = true
        listeners[interface] = Listener(interface: interface, fd: fd, path: path, device: st.st_dev, inode: st.st_ino)
    }

    /// Stops serving `interface`: closes its listener and connections and removes its socket
    /// file (unless another process has put its own socket there since).
    public func stopListening(interface: String) {
        guard let listener = listeners.removeValue(forKey: interface) else { return }
        close(listener.fd)
        var st = stat()
        if lstat(listener.path, &st) == 0, st.st_dev == listener.device, st.st_ino == listener.inode {
            unlink(listener.path)
        }
        for (fd, connection) in connections where connection.interface == interface { closeConnection(fd) }
    }

    /// Closes every listener and connection and removes every socket file.
    public func shutdown() {
        for interface in Array(listeners.keys) { stopListening(interface: interface) }
        for fd in Array(connections.keys) { closeConnection(fd) }
    }

    private func makeDirectory() throws(GatewayError) {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw GatewayError("cannot create the UAPI directory \(directory)", errno: errno)
        }
        var st = stat()
        guard stat(directory, &st) == 0 else { throw GatewayError("cannot stat the UAPI directory \(directory)", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw GatewayError("\(directory) is not a directory") }
        // Whoever may write the directory may put a socket of their own in place of ours, and
        // read the keys `wg set` sends to it.
        guard st.st_uid == 0 || st.st_uid == geteuid(), st.st_mode & 0o022 == 0 else {
            throw GatewayError("the UAPI directory \(directory) is writable by other users (owner uid \(st.st_uid), "
                + "mode \(String(st.st_mode & 0o7777, radix: 8))): they could replace the sockets; "
                + "run `chown root \(directory); chmod 755 \(directory)`")
        }
    }

    // MARK: Polling

    /// The descriptors to poll: each listener for POLLIN, each connection for POLLIN while it
    /// may read a request and POLLOUT while a reply waits to be written.
    public func pollDescriptors() -> [pollfd] {
        var fds: [pollfd] = []
        fds.reserveCapacity(listeners.count + connections.count)
        for listener in listeners.values { fds.append(pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)) }
        for connection in connections.values {
            var events: Int32 = 0
            if connection.wantsInput { events |= Int32(POLLIN) }
            if connection.hasOutput { events |= Int32(POLLOUT) }
            fds.append(pollfd(fd: connection.fd, events: Int16(events), revents: 0))
        }
        return fds
    }

    /// Does what `ready` (poll's answer for `pollDescriptors()`, or any part of it) allows:
    /// reads, answers complete requests, writes, closes, accepts. Also closes connections past
    /// their deadline, so call it at least every second or so even when nothing is ready.
    /// Never blocks.
    public func service(_ ready: [pollfd]) {
        let now = Clock.now()
        var readyListeners: [Listener] = []
        for p in ready where p.revents != 0 {
            if let connection = connections[p.fd] {
                serviceConnection(connection, revents: Int32(p.revents), now: now)
            } else if let listener = listeners.values.first(where: { $0.fd == p.fd }) {
                readyListeners.append(listener)
            }
        }
        for (fd, connection) in connections where connection.deadline < now {
            Log.warning("UAPI \(connection.interface): closing a connection that sent no complete request or read no "
                + "reply within \(limits.timeout)")
            closeConnection(fd)
        }
        // Last, so that no descriptor closed above and reused by accept gets stale events.
        for listener in readyListeners { accept(on: listener, now: now) }
    }

    private func serviceConnection(_ c: Connection, revents: Int32, now: Instant) {
        // A broken socket (or one closed under us) stays ready forever: drop it at once.
        if revents & Int32(POLLERR | POLLNVAL) != 0 { closeConnection(c.fd); return }
        if revents & Int32(POLLOUT) != 0 && !flush(c, now: now) { return }
        if revents & Int32(POLLIN | POLLHUP) != 0 && c.wantsInput && !read(c) { return }
        progress(c, now: now)
    }

    // MARK: Connections

    private func accept(on listener: Listener, now: Instant) {
        var dropped = 0
        defer {
            if dropped > 0 {
                Log.info("UAPI: \(limits.maxConnections) connections open; closed the \(dropped) longest idle to make room")
            }
        }
        // A bounded number per call; the listener stays readable for the rest.
        for _ in 0..<limits.maxConnections {
            let fd = SystemCall.retryingEINTR { Glibc.accept(listener.fd, nil, nil) }
            if fd < 0 {
                let e = errno
                if e == ECONNABORTED { continue }
                if e != EAGAIN && e != EWOULDBLOCK {
                    Log.warning("UAPI \(listener.interface): accept failed: \(Errno.text(e))")
                }
                return
            }
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
                Log.warning("UAPI \(listener.interface): cannot make a connection non-blocking: \(Errno.text(errno))")
                close(fd)
                continue
            }
            guard let uid = peerUID(fd), uid == 0 || uid == geteuid() else {
                Log.warning("UAPI \(listener.interface): refused a connection from uid "
                    + "\(peerUID(fd).map(String.init) ?? "unknown"): only root may configure interfaces")
                close(fd)
                continue
            }
            if connections.count >= limits.maxConnections {
                guard dropOldestIdleConnection() else {
                    Log.warning("UAPI \(listener.interface): \(limits.maxConnections) connections are busy; closed a new one")
                    close(fd)
                    continue
                }
                dropped += 1
            }
            connections[fd] = Connection(fd: fd, interface: listener.interface, deadline: now + limits.timeout)
        }
    }

    /// SO_PEERCRED's uid, or nil (and the connection is refused) when the kernel does not say.
    private func peerUID(_ fd: Int32) -> UInt32? {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc exports it only under _GNU_SOURCE).
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout.size(ofValue: credentials))
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, length == 12 else { return nil }
        return credentials.uid
    }

    /// Closes the connection that has waited longest since its last request, if one is idle
    /// (nothing read or to write). Returns false when every connection is busy.
    private func dropOldestIdleConnection() -> Bool {
        let idle = connections.values.filter(\.isIdle).min { $0.deadline < $1.deadline }
        guard let idle else { return false }
        closeConnection(idle.fd)
        return true
    }

    private func closeConnection(_ fd: Int32) {
        guard let connection = connections.removeValue(forKey: fd) else { return }
        close(fd)
        connection.input.removeAll()
        connection.output.removeAll()
    }

    /// Reads what is there (up to the budget). Returns false when the connection was closed.
    private func read(_ c: Connection) -> Bool {
        var budget = UAPIServer.readBudget
        while budget > 0 {
            let n: Int
            if c.state == .discarding {
                n = SystemCall.retryingEINTR { Glibc.read(c.fd, discardBuffer.baseAddress, min(discardBuffer.count, budget)) }
                if n > 0 {
                    // Whatever the refused request still sends, until its blank line.
                    for i in 0..<n {
                        if discardBuffer[i] == UInt8(ascii: "\n") && c.lastDiscardedNewline { c.state = .closing }
                        c.lastDiscardedNewline = discardBuffer[i] == UInt8(ascii: "\n")
                    }
                    wipe(UnsafeMutableRawBufferPointer(rebasing: discardBuffer[..<n]))
                    if c.state == .closing { return true }
                }
            } else {
                // Grows the buffer as data comes (doubling), up to one byte past the limit, to
                // notice a request that is longer.
                let room = min(budget, limits.maxRequestBytes + 1 - c.input.count, max(4096, c.input.spareCapacity))
                n = c.input.appending(upTo: room) { b in SystemCall.retryingEINTR { Glibc.read(c.fd, b.baseAddress, b.count) } }
                if n > 0 && c.input.count > limits.maxRequestBytes { return true }
            }
            if n > 0 { budget -= n; continue }
            if n == 0 { c.sawEOF = true; return true }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK { return true }
            if e != ECONNRESET { Log.warning("UAPI \(c.interface): read failed: \(Errno.text(e))") }
            closeConnection(c.fd)
            return false
        }
        return true
    }

    /// Writes what is pending. Returns false when the connection was closed.
    private func flush(_ c: Connection, now: Instant) -> Bool {
        guard c.hasOutput else { return true }
        while c.hasOutput {
            let pending = c.output.bytes
            let n = SystemCall.retryingEINTR { send(c.fd, pending.baseAddress, pending.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { c.output.removeFirst(n); continue }
            let e = errno
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { return true }
            if n < 0 && e != EPIPE && e != ECONNRESET {
                Log.warning("UAPI \(c.interface): write failed: \(Errno.text(e))")
            }
            closeConnection(c.fd)
            return false
        }
        // A reply taken in full: the next request has a timeout of its own.
        if c.state == .reading { c.deadline = now + limits.timeout }
        return true
    }

    /// Answers complete requests one at a time, each once the previous reply is written;
    /// closes the connection when it is done.
    private func progress(_ c: Connection, now: Instant) {
        while true {
            if c.hasOutput && !flush(c, now: now) { return }
            if c.hasOutput { return }                              // the client reads slowly: wait for POLLOUT
            switch c.state {
            case .closing:
                closeConnection(c.fd)
                return
            case .discarding:
                if c.sawEOF { closeConnection(c.fd) }
                return
            case .reading:
                break
            }
            // The operation line is known from its first six bytes: garbage is refused at once,
            // not after a blank line that may never come.
            let input = c.input.bytes
            let head = UnsafeRawBufferPointer(rebasing: input.prefix(6))
            let operation: UAPIOperation
            if "get=1\n".utf8.starts(with: head) {
                operation = .get
            } else if "set=1\n".utf8.starts(with: head) {
                operation = .set
            } else {
                // Answered, and closed: wireguard-go drops such a connection.
                let firstLine = input.prefix(32).split(separator: UInt8(ascii: "\n"), maxSplits: 1,
                                                       omittingEmptySubsequences: false)[0]
                let shown = ConfigurationParser.shown(.init(bytes: UnsafeRawBufferPointer(rebasing: firstLine)))
                let error = UAPIError.invalid("unknown operation \(shown) (expected get=1 or set=1)")
                Log.warning("UAPI \(c.interface): \(error)")
                c.input.removeAll()
                queueReply(c, error.renderReply(to: nil))
                c.state = .closing
                continue
            }
            guard head.count == 6, let end = c.requestEnd() else {
                if input.count > limits.maxRequestBytes {
                    refuseOversized(c, operation)
                    continue
                }
                if c.sawEOF {                                      // half a request, then EOF
                    c.state = .closing
                    continue
                }
                return
            }
            answer(c, operation: operation, request: UnsafeRawBufferPointer(rebasing: input[..<end]))
            // A handler that stopped serving this interface has closed the connection.
            guard connections[c.fd] === c else { return }
            c.input.removeFirst(end)
        }
    }

    /// A request longer than the limit: answered EMSGSIZE at once; what follows of it is read
    /// and dropped until its blank line (so that `wg`, still writing, reads the answer rather
    /// than dying of SIGPIPE), then the connection closes.
    private func refuseOversized(_ c: Connection, _ operation: UAPIOperation) {
        let error = UAPIError(EMSGSIZE, "a request longer than \(limits.maxRequestBytes) bytes; refused")
        Log.warning("UAPI \(c.interface): \(error)")
        c.lastDiscardedNewline = c.input.bytes.last == UInt8(ascii: "\n")
        c.input.removeAll()
        queueReply(c, error.renderReply(to: operation))
        c.state = c.sawEOF ? .closing : .discarding
    }

    /// Parses and answers one request; the reply (which may hold the private key) is queued
    /// and its temporary copy wiped.
    private func answer(_ c: Connection, operation: UAPIOperation, request: UnsafeRawBufferPointer) {
        var reply: [UInt8]
        do throws(UAPIError) {
            switch try UAPIRequest.parse(request) {
            case .get:
                if let state = handler?.uapiGet(interface: c.interface) {
                    reply = state.renderGetReply()
                } else {
                    let error = UAPIError(ENODEV, "the interface no longer exists")
                    Log.warning("UAPI \(c.interface): get: \(error)")
                    reply = error.renderReply(to: .get)
                }
            case .set(let set):
                let error: UAPIError?
                if let handler {
                    error = handler.uapiSet(interface: c.interface, set)
                } else {
                    error = UAPIError(ENODEV, "the interface no longer exists")
                }
                if let error {
                    Log.warning("UAPI \(c.interface): set refused: \(error)")
                    reply = error.renderReply(to: .set)
                } else {
                    reply = Array("errno=0\n\n".utf8)
                }
            }
        } catch {
            Log.warning("UAPI \(c.interface): \(operation == .get ? "get" : "set"): \(error)")
            reply = error.renderReply(to: operation)
        }
        queueReply(c, reply)
        reply.withUnsafeMutableBytes { wipe($0) }
    }

    private func queueReply(_ c: Connection, _ reply: [UInt8]) {
        reply.withUnsafeBytes { c.output.append($0) }
    }
}

/// One listening socket.
private struct Listener {
    let interface: String
    let fd: Int32
    let path: String
    /// The socket file's identity, so that only our own file is removed.
    let device: dev_t
    let inode: ino_t
}

/// One client connection.
private final class Connection {
    enum State {
        /// Reading requests.
        case reading
        /// A request was refused for its size: reading and dropping the rest of it.
        case discarding
        /// Closes once the pending output is written (or cannot be).
        case closing
    }

    let fd: Int32
    let interface: String
    var deadline: Instant
    var state = State.reading
    /// The client closed its side (read returned 0).
    var sawEOF = false
    /// While discarding: whether the last byte dropped was '\n' (a blank line ends the request).
    var lastDiscardedNewline = false
    /// Where the search for the request's blank line resumes (bytes before it were searched).
    private var scanned = 0
    let input = WipingBuffer()
    let output = WipingBuffer()

    init(fd: Int32, interface: String, deadline: Instant) {
        self.fd = fd
        self.interface = interface
        self.deadline = deadline
    }

    var hasOutput: Bool { output.count > 0 }
    /// Reads only when no reply waits (one request at a time), or to drop a refused one; never
    /// after EOF (which stays readable).
    var wantsInput: Bool { !sawEOF && (state == .discarding || (state == .reading && !hasOutput)) }
    var isIdle: Bool { state == .reading && input.count == 0 && !hasOutput }

    /// One past the blank line that ends the first request in `input`, or nil when it has not
    /// all arrived. Resumes where the previous search stopped, so a request arriving in many
    /// pieces is searched once.
    func requestEnd() -> Int? {
        let bytes = input.bytes
        var i = max(1, min(scanned, bytes.count))
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\n") && bytes[i - 1] == UInt8(ascii: "\n") {
                scanned = 0
                return i + 1
            }
            i += 1
        }
        scanned = bytes.count
        return nil
    }
}

/// A byte buffer for secrets: every byte it gives up is wiped first, whether consumed from the
/// front, left behind by growing into a new allocation, or freed.
final class WipingBuffer {
    private var storage: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    private static let initialCapacity = 4096

    init() {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: WipingBuffer.initialCapacity, alignment: 16)
    }

    deinit {
        wipe(storage)
        storage.deallocate()
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[..<count]) }
    var spareCapacity: Int { storage.count - count }

    func append(_ data: UnsafeRawBufferPointer) {
        reserve(data.count)
        UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + data.count)]).copyMemory(from: data)
        count += data.count
    }

    /// Lets `body` fill up to `limit` bytes at the end (as read(2) does) and keeps the count it
    /// returns when positive; returns that result unchanged.
    func appending(upTo limit: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) -> Int {
        reserve(limit)
        let n = body(UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + limit)]))
        if n > 0 { count += n }
        return n
    }

    /// Drops the first `n` bytes: the rest moves down and the vacated tail is wiped.
    func removeFirst(_ n: Int) {
        precondition(n <= count)
        if n == count { removeAll(); return }
        let base = storage.baseAddress!
        (base).copyMemory(from: base + n, byteCount: count - n)
        wipe(UnsafeMutableRawBufferPointer(rebasing: storage[(count - n)..<count]))
        count -= n
    }

    /// Wipes everything; a large allocation (after a big request) is given back.
    func removeAll() {
        wipe(UnsafeMutableRawBufferPointer(rebasing: storage[..<count]))
        count = 0
        if storage.count > 16 * WipingBuffer.initialCapacity {
            storage.deallocate()
            storage = UnsafeMutableRawBufferPointer.allocate(byteCount: WipingBuffer.initialCapacity, alignment: 16)
        }
    }

    private func reserve(_ extra: Int) {
        guard count + extra > storage.count else { return }
        var capacity = storage.count
        while capacity < count + extra { capacity *= 2 }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        grown.copyMemory(from: bytes)
        wipe(storage)
        storage.deallocate()
        storage = grown
    }
}
