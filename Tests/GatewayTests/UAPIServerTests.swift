import Dispatch
import Engine
import Foundation
import Gateway
import Testing
import TestSupport
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// A gateway in memory: tenants by name, changed by `applied(to:)`, with fixed statistics for
/// one peer so that `wg show` has something to show. Called from the server's loop thread
/// while the test reads it, hence the lock.
final class FakeUAPIGateway: UAPIHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var tenants: [String: TenantConfiguration] = [:]
    /// Statistics reported for a peer: (handshake seconds, nanoseconds, rx, tx).
    private var statistics: [PublicKey: (Int64, Int64, UInt64, UInt64)] = [:]
    private(set) var setCount = 0

    func add(_ tenant: TenantConfiguration) { lock.withLock { tenants[tenant.name] = tenant } }
    func remove(_ name: String) { _ = lock.withLock { tenants.removeValue(forKey: name) } }
    func tenant(_ name: String) -> TenantConfiguration? { lock.withLock { tenants[name] } }
    func setStatistics(_ key: PublicKey, _ value: (Int64, Int64, UInt64, UInt64)) { lock.withLock { statistics[key] = value } }

    func uapiGet(interface: String) -> UAPIDeviceState? {
        lock.withLock {
            guard let tenant = tenants[interface] else { return nil }
            var state = UAPIDeviceState(tenant)
            for i in state.peers.indices {
                if let (seconds, nanoseconds, rx, tx) = statistics[state.peers[i].publicKey] {
                    state.peers[i].lastHandshake = (seconds, nanoseconds)
                    state.peers[i].rxBytes = rx
                    state.peers[i].txBytes = tx
                }
            }
            return state
        }
    }

    func uapiSet(interface: String, _ request: UAPISetRequest) -> UAPIError? {
        lock.withLock {
            guard let tenant = tenants[interface] else { return UAPIError(ENODEV, "no such tenant") }
            do throws(UAPIError) {
                tenants[interface] = try request.applied(to: tenant)
                setCount += 1
                return nil
            } catch {
                return error
            }
        }
    }
}

/// Runs a server's poll loop on a thread of its own, as the gateway's control thread would.
/// The server is touched by one thread at a time: the test's before `start` and after `stop`.
final class UAPIServerLoop: @unchecked Sendable {
    let server: UAPIServer
    private let lock = NSLock()
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)
    private var running = false

    init(_ server: UAPIServer) { self.server = server }

    func start() {
        running = true
        Thread { [self] in
            while !lock.withLock({ stopping }) {
                var fds = server.pollDescriptors()
                let n = SystemCall.retryingEINTR { poll(&fds, nfds_t(fds.count), 20) }
                if n < 0 { Issue.record("poll failed: \(String(cString: strerror(errno)))"); break }
                server.service(n > 0 ? fds : [])
            }
            finished.signal()
        }.start()
    }

    func stop() {
        guard running else { return }
        lock.withLock { stopping = true }
        finished.wait()
        running = false
    }
}

/// A raw client of a UAPI socket, for what `wg` never sends. Reads time out after 5 s.
final class RawUAPIClient {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(.init(rawValue: e) ?? .EIO)
        }
    }

    deinit { close(fd) }

    /// Sends everything; false when the server closed the connection.
    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { b in
                SystemCall.retryingEINTR { Glibc.send(fd, b.baseAddress! + offset, b.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// Reads one reply (through its blank line), or what came before EOF, a reset or the timeout.
    func readReply() -> String {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !(data.count >= 2 && data.suffix(2) == [10, 10]) {
            // One byte: never past the reply.
            let n = buffer.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { recv(fd, b.baseAddress, 1, 0) } }
            guard n > 0 else { break }
            data.append(buffer[0])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// True when the server has closed the connection (EOF or reset) within the timeout.
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        let n = SystemCall.retryingEINTR { recv(fd, &byte, 1, 0) }
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}

/// Unique interface names (at most 15 characters, as `wg` allows): xdpwg<pid>-<n>.
enum UAPITestNames {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var next = 0

    static func interface() -> String {
        let n = lock.withLock { next += 1; return next }
        let name = "xdpwg\(getpid())-\(n)"
        precondition(name.utf8.count <= 15)
        return name
    }

    static func file(_ what: String) -> String {
        let n = lock.withLock { next += 1; return next }
        return "/tmp/xdpwg-uapi-\(getpid())-\(n).\(what)"
    }
}

/// A server on real sockets in /var/run/wireguard for `names`, each a tenant holding
/// `twoPeerTenant()`'s peers under a fresh private key and port 51820 + i, its loop running.
/// Everything is closed and removed when `body` returns or throws.
func withUAPIServer(interfaces count: Int = 1, limits: UAPIServer.Limits = .init(),
                    _ body: (_ names: [String], _ gateway: FakeUAPIGateway, _ server: UAPIServer) throws -> Void) throws {
    try Privileged.require()
    let gateway = FakeUAPIGateway()
    let server = UAPIServer(handler: gateway, limits: limits)
    let names = (0..<count).map { _ in UAPITestNames.interface() }
    let loop = UAPIServerLoop(server)
    defer {
        loop.stop()
        server.shutdown()
        for name in names {
            let path = server.socketPath(interface: name)
            #expect(!FileManager.default.fileExists(atPath: path), "shutdown left \(path) behind")
            unlink(path)
        }
    }
    for (i, name) in names.enumerated() {
        var tenant = twoPeerTenant()
        tenant.name = name
        tenant.privateKey = PrivateKey.generate()
        tenant.listenPort = 51820 + UInt16(i)
        gateway.add(tenant)
        try server.listen(interface: name)
    }
    loop.start()
    try body(names, gateway, server)
}

/// A file for `wg` to read (a key or a configuration), mode 0600, removed afterwards.
func withTemporaryFile(_ contents: String, _ body: (String) throws -> Void) throws {
    let path = UAPITestNames.file("conf")
    defer { unlink(path) }
    guard FileManager.default.createFile(atPath: path, contents: Data(contents.utf8), attributes: [.posixPermissions: 0o600]) else {
        throw POSIXError(.EIO)
    }
    try body(path)
}

/// `wg ARGS`; fails the test on a non-zero exit.
@discardableResult
func wg(_ arguments: String...) throws -> String { try Command.run(["wg"] + arguments) }

/// `wg ARGS` expected to fail: its standard error.
func wgFailing(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let (status, _, err) = try Command.runAllowingFailure(["wg"] + arguments)
    #expect(status != 0, "`wg \(arguments.joined(separator: " "))` succeeded", sourceLocation: sourceLocation)
    return err
}

extension PublicKey {
    static func fixture(_ byte: UInt8) -> PublicKey { UAPIFixture.publicKey(byte) }
}

@Suite("UAPI server with the real wg", .serialized, .enabled(if: Privileged.shouldRun))
struct UAPIServerTests {
    let a = UAPIFixture.publicKey(0xaa).base64
    let b = UAPIFixture.publicKey(0xbb).base64
    let c = UAPIFixture.publicKey(0xcc).base64

    // MARK: show

    @Test func showDumpIsExact() throws {
        try withUAPIServer { names, gateway, _ in
            let name = names[0]
            gateway.setStatistics(.fixture(0xaa), (1_700_000_000, 5, 1234, 5678))
            let tenant = try #require(gateway.tenant(name))
            let psk = try #require(tenant.peers[0].presharedKey).secret.base64ForDisplay
            let expected = [
                "\(tenant.privateKey.secret.base64ForDisplay)\t\(tenant.privateKey.publicKey.base64)\t51820\toff",
                "\(a)\t\(psk)\t192.0.2.7:51821\t10.1.0.0/24,fd00:1::/64\t1700000000\t1234\t5678\t25",
                "\(b)\t(none)\t(none)\t10.2.0.0/24\t0\t0\t0\toff",
            ].joined(separator: "\n") + "\n"
            #expect(try wg("show", name, "dump") == expected)
            // Single fields, as scripts read them.
            #expect(try wg("show", name, "public-key") == tenant.privateKey.publicKey.base64 + "\n")
            #expect(try wg("show", name, "listen-port") == "51820\n")
            #expect(try wg("show", name, "allowed-ips") == "\(a)\t10.1.0.0/24 fd00:1::/64\n\(b)\t10.2.0.0/24\n")
            #expect(try wg("show", name, "latest-handshakes") == "\(a)\t1700000000\n\(b)\t0\n")
            // The human form hides the keys.
            let pretty = try wg("show", name)
            #expect(pretty.contains("interface: \(name)"))
            #expect(pretty.contains("peer: \(a)"))
            #expect(pretty.contains("transfer: 1.21 KiB received, 5.54 KiB sent"))
            #expect(!pretty.contains(tenant.privateKey.secret.base64ForDisplay) && !pretty.contains(psk))
            #expect(try wg("show", "interfaces").split(whereSeparator: \.isWhitespace).contains { $0 == name })
        }
    }

    @Test func showAllDumpListsEveryInterface() throws {
        try withUAPIServer(interfaces: 2) { names, gateway, _ in
            let all = try wg("show", "all", "dump").split(separator: "\n").map(String.init)
            for (i, name) in names.enumerated() {
                let tenant = try #require(gateway.tenant(name))
                let lines = all.filter { $0.hasPrefix(name + "\t") }
                #expect(lines.count == 3, "\(name): \(lines)")
                #expect(lines.first == "\(name)\t\(tenant.privateKey.secret.base64ForDisplay)\t"
                        + "\(tenant.privateKey.publicKey.base64)\t\(51820 + i)\toff")
                #expect(lines.dropFirst().first?.hasPrefix("\(name)\t\(a)\t") == true)
            }
        }
    }

    @Test func showconfIsExact() throws {
        try withUAPIServer { names, gateway, _ in
            let tenant = try #require(gateway.tenant(names[0]))
            let expected = """
                [Interface]
                ListenPort = 51820
                PrivateKey = \(tenant.privateKey.secret.base64ForDisplay)

                [Peer]
                PublicKey = \(a)
                PresharedKey = \(try #require(tenant.peers[0].presharedKey).secret.base64ForDisplay)
                AllowedIPs = 10.1.0.0/24, fd00:1::/64
                Endpoint = 192.0.2.7:51821
                PersistentKeepalive = 25

                [Peer]
                PublicKey = \(b)
                AllowedIPs = 10.2.0.0/24

                """
            #expect(try wg("showconf", names[0]) == expected)
        }
    }

    @Test func vanishedInterfaceIsNoSuchDevice() throws {
        try withUAPIServer { (names, gateway, _) throws in
            gateway.remove(names[0])
            #expect(try wgFailing("show", names[0], "dump").contains("No such device"))
            #expect(try wgFailing("set", names[0], "listen-port", "5").contains("No such device"))
        }
    }

    // MARK: set

    @Test func setAllowedIPs() throws {
        try withUAPIServer { names, gateway, _ in
            // Replaces 0xbb's allowed IPs, taking 10.1.0.0/24 from 0xaa.
            try wg("set", names[0], "peer", b, "allowed-ips", "10.1.0.0/24,10.9.0.7/32,fd00:9::/48")
            let peers = summary(try #require(gateway.tenant(names[0])))
            #expect(peers.map(\.allowedIPs) == [["fd00:1::/64"], ["10.1.0.0/24", "10.9.0.7/32", "fd00:9::/48"]])
            // A new peer, by naming it.
            try wg("set", names[0], "peer", c, "allowed-ips", "10.3.0.0/24")
            #expect(try wg("show", names[0], "allowed-ips").contains("\(c)\t10.3.0.0/24\n"))
        }
    }

    @Test func removePeer() throws {
        try withUAPIServer { names, gateway, _ in
            try wg("set", names[0], "peer", a, "remove")
            #expect(summary(try #require(gateway.tenant(names[0]))) == [PeerSummary(0xbb, ["10.2.0.0/24"], line: 14)])
            #expect(try wg("show", names[0], "peers") == "\(b)\n")
        }
    }

    @Test func setPrivateKeyAndListenPort() throws {
        try withUAPIServer { names, gateway, _ in
            let key = PrivateKey.generate()
            try withTemporaryFile(key.secret.base64ForDisplay + "\n") { path in
                try wg("set", names[0], "private-key", path, "listen-port", "40000")
            }
            let tenant = try #require(gateway.tenant(names[0]))
            #expect(tenant.privateKey.publicKey == key.publicKey)
            #expect(tenant.listenPort == 40000)
            #expect(try wg("show", names[0], "public-key") == key.publicKey.base64 + "\n")
            #expect(try wg("show", names[0], "private-key") == key.secret.base64ForDisplay + "\n")
            #expect(try wg("show", names[0], "listen-port") == "40000\n")
        }
    }

    @Test func refusedChangesSayWhyAndChangeNothing() throws {
        try withUAPIServer { names, gateway, _ in
            // listen-port 0 (random), an empty private key file (remove the key), an fwmark.
            #expect(try wgFailing("set", names[0], "listen-port", "0").contains("Unable to modify interface: Invalid argument"))
            #expect(try wgFailing("set", names[0], "private-key", "/dev/null").contains("Invalid argument"))
            #expect(try wgFailing("set", names[0], "fwmark", "7").contains("Operation not supported"))
            #expect(try wgFailing("set", names[0], "fwmark", "0x10", "listen-port", "1234").contains("Operation not supported"))
            let tenant = try #require(gateway.tenant(names[0]))
            #expect(tenant.listenPort == 51820)
            #expect(gateway.setCount == 0)
            try wg("set", names[0], "fwmark", "off")
            #expect(gateway.setCount == 1)
        }
    }

    @Test func setPresharedKeyEndpointKeepalive() throws {
        try withUAPIServer { names, gateway, _ in
            let psk = PresharedKey.generate()
            try withTemporaryFile(psk.secret.base64ForDisplay + "\n") { path in
                try wg("set", names[0], "peer", b, "preshared-key", path, "endpoint", "[2001:db8::5]:4500",
                       "persistent-keepalive", "17")
            }
            let peer = try #require(gateway.tenant(names[0])?.peers[1])
            #expect(peer.presharedKey?.secret.equals(psk.secret) == true)
            #expect(peer.endpoint?.description == "[2001:db8::5]:4500")
            #expect(peer.persistentKeepalive == 17)
            #expect(try wg("show", names[0], "endpoints").contains("\(b)\t[2001:db8::5]:4500\n"))
            // And off again: /dev/null is no preshared key, 0 no keepalive.
            try wg("set", names[0], "peer", b, "preshared-key", "/dev/null", "persistent-keepalive", "off", "endpoint", "192.0.2.1:9")
            let after = try #require(gateway.tenant(names[0])?.peers[1])
            #expect(after.presharedKey == nil && after.persistentKeepalive == 0 && after.endpoint?.description == "192.0.2.1:9")
        }
    }

    @Test func syncconfAddsChangesAndRemovesPeers() throws {
        try withUAPIServer { names, gateway, _ in
            let key = try #require(gateway.tenant(names[0])).privateKey.secret.base64ForDisplay
            let file = """
                [Interface]
                PrivateKey = \(key)
                ListenPort = 51830

                [Peer]
                PublicKey = \(a)
                PresharedKey = \(Key32(hex: UAPIFixture.hex(0x44))!.base64)
                AllowedIPs = 10.1.0.0/24
                Endpoint = 192.0.2.8:1000
                PersistentKeepalive = 7

                [Peer]
                PublicKey = \(c)
                PresharedKey = \(Key32(hex: UAPIFixture.hex(0x66))!.base64)
                AllowedIPs = 10.3.0.0/24, fd00:3::/64
                PersistentKeepalive = 15

                """
            try withTemporaryFile(file) { path in try wg("syncconf", names[0], path) }
            let tenant = try #require(gateway.tenant(names[0]))
            #expect(tenant.listenPort == 51830)
            // 0xbb went, 0xaa changed (its fd00:1::/64 gone), 0xcc came. (Every field of 0xaa is
            // given: newer `wg` versions also clear a preshared key or keepalive the file omits.)
            #expect(summary(tenant) == [
                PeerSummary(0xaa, psk: 0x44, ["10.1.0.0/24"], endpoint: "192.0.2.8:1000", keepalive: 7, line: 8),
                PeerSummary(0xcc, psk: 0x66, ["10.3.0.0/24", "fd00:3::/64"], keepalive: 15),
            ])
            // A file without peers removes them all.
            try withTemporaryFile("[Interface]\nPrivateKey = \(key)\nListenPort = 51830\n") { path in
                try wg("syncconf", names[0], path)
            }
            #expect(gateway.tenant(names[0])?.peers.isEmpty == true)
        }
    }

    @Test func syncconfNeedsPrivateKeyAndListenPort() throws {
        // setconf and syncconf describe the whole interface: a file without PrivateKey sends an
        // all-zero key (remove it), one without ListenPort port 0 (pick one). Both refused.
        try withUAPIServer { (names, gateway, _) throws in
            let key = try #require(gateway.tenant(names[0])).privateKey.secret.base64ForDisplay
            for file in ["[Interface]\nListenPort = 51830\n", "[Interface]\nPrivateKey = \(key)\n"] {
                for command in ["syncconf", "setconf"] {
                    try withTemporaryFile(file + "[Peer]\nPublicKey = \(c)\n") { (path) throws in
                        #expect(try wgFailing(command, names[0], path).contains("Unable to modify interface: Invalid argument"))
                    }
                }
            }
            #expect(gateway.setCount == 0)
            #expect(summary(try #require(gateway.tenant(names[0]))) == summary(twoPeerTenant()))
        }
    }

    @Test func setconfReplacesEverything() throws {
        try withUAPIServer { names, gateway, _ in
            let key = PrivateKey.generate()
            let file = """
                [Interface]
                PrivateKey = \(key.secret.base64ForDisplay)
                ListenPort = 51840

                [Peer]
                PublicKey = \(c)
                AllowedIPs = 10.2.0.0/24

                """
            try withTemporaryFile(file) { path in try wg("setconf", names[0], path) }
            let tenant = try #require(gateway.tenant(names[0]))
            #expect(tenant.privateKey.publicKey == key.publicKey)
            #expect(tenant.listenPort == 51840)
            #expect(summary(tenant) == [PeerSummary(0xcc, ["10.2.0.0/24"])])
            // addconf adds to it.
            try withTemporaryFile("[Peer]\nPublicKey = \(a)\nAllowedIPs = 10.1.0.0/24\n") { path in try wg("addconf", names[0], path) }
            #expect(summary(try #require(gateway.tenant(names[0]))).map(\.publicKey) == [UAPIFixture.hex(0xcc), UAPIFixture.hex(0xaa)])
        }
    }

    @Test func oversizedSetconfIsRefusedWithMessageTooLong() throws {
        // A small limit, so that a file of 2,000 peers exceeds it; `wg` must read the answer
        // rather than die writing to a closed socket.
        try withUAPIServer(limits: .init(maxRequestBytes: 64 << 10)) { names, gateway, _ in
            var file = "[Interface]\nListenPort = 51850\n"
            for i in 0..<2000 {
                var key = Key32()
                key.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(i + 1).bigEndian, as: UInt32.self) }
                file += "[Peer]\nPublicKey = \(key.base64)\nAllowedIPs = 10.\(i >> 8).\(i & 255).0/24\n"
            }
            try withTemporaryFile(file) { (path) throws in
                #expect(try wgFailing("setconf", names[0], path).contains("Message too long"))
            }
            #expect(gateway.tenant(names[0])?.listenPort == 51820)
            #expect(try wg("show", names[0], "listen-port") == "51820\n")
        }
    }

    // MARK: raw clients

    @Test func rawClientsGetErrnoRepliesAndTheServerKeepsServing() throws {
        try withUAPIServer { names, gateway, server in
            let path = server.socketPath(interface: names[0])

            // Garbage: EINVAL, then closed.
            let garbage = try RawUAPIClient(path: path)
            garbage.send("hello world\n")
            #expect(garbage.readReply() == "errno=-22\n\n")
            #expect(garbage.isClosedByServer())
            let binary = try RawUAPIClient(path: path)
            binary.send([0, 0xff, 0xfe, 10, 10])
            #expect(binary.readReply() == "errno=-22\n\n")
            #expect(binary.isClosedByServer())

            // Several requests on one connection, sent at once: answered in order; a refused
            // set leaves the connection open.
            let pipelined = try RawUAPIClient(path: path)
            pipelined.send("get=1\n\nget=1\n\nset=1\nlisten_port=0\n\nset=1\nprotocol_version=1\n\nset=1\nlisten_port=4000\n\n")
            let first = pipelined.readReply()
            #expect(first.hasPrefix("private_key=") && first.hasSuffix("\nerrno=0\n\n"))
            #expect(pipelined.readReply() == first)
            #expect(pipelined.readReply() == "errno=-22\n\n")
            #expect(pipelined.readReply() == "errno=-22\n\n")
            #expect(pipelined.readReply() == "errno=0\n\n")
            #expect(gateway.tenant(names[0])?.listenPort == 4000)
            pipelined.send("get=1\nx\n\n")
            #expect(pipelined.readReply() == "errno=22\n\n")
            pipelined.send("get=1\n\n")
            #expect(pipelined.readReply().contains("listen_port=4000\n"))

            // Half a request, then close: nothing applied.
            let half = try RawUAPIClient(path: path)
            half.send("set=1\nlisten_port=4001\n")
            shutdown(half.fd, Int32(SHUT_WR))
            #expect(half.isClosedByServer())
            #expect(gateway.tenant(names[0])?.listenPort == 4000)

            // A whole request, then close of our sending side: still answered.
            let halfClosed = try RawUAPIClient(path: path)
            halfClosed.send("set=1\nlisten_port=4002\n\n")
            shutdown(halfClosed.fd, Int32(SHUT_WR))
            #expect(halfClosed.readReply() == "errno=0\n\n")
            #expect(halfClosed.isClosedByServer())
            #expect(gateway.tenant(names[0])?.listenPort == 4002)

            // Oversized (the default limit, 16 MiB, without a blank line): EMSGSIZE at once,
            // then closed once the rest of the request has come.
            let big = try RawUAPIClient(path: path)
            let line = Array("public_key=\(UAPIFixture.hex(0xaa))\n".utf8)
            var request = Array("set=1\n".utf8)
            while request.count <= server.limits.maxRequestBytes { request += line }
            #expect(big.send(request))
            #expect(big.readReply() == "errno=-90\n\n")
            big.send("\n")
            #expect(big.isClosedByServer())

            #expect(try wg("show", names[0], "listen-port") == "4002\n")
        }
    }

    @Test func manyConnectionsAtOnce() throws {
        try withUAPIServer { names, _, server in
            let path = server.socketPath(interface: names[0])
            // More clients than the server keeps (64): each is answered or closed.
            let clients = try (0..<150).map { _ in try RawUAPIClient(path: path) }
            for client in clients { client.send("get=1\n\n") }
            var answered = 0
            for client in clients {
                let reply = client.readReply()
                if reply.isEmpty { continue }                   // closed to make room
                #expect(reply.hasPrefix("private_key=") && reply.hasSuffix("\nerrno=0\n\n"))
                answered += 1
            }
            #expect(answered >= 64, "only \(answered) of 150 were answered")
            #expect(try wg("show", names[0], "listen-port") == "51820\n")
        }
    }

    @Test func silentConnectionsTimeOut() throws {
        try withUAPIServer(limits: .init(timeout: .milliseconds(300))) { names, _, server in
            let path = server.socketPath(interface: names[0])
            let silent = try RawUAPIClient(path: path)
            let partial = try RawUAPIClient(path: path)
            partial.send("get=1\n")
            let clock = ContinuousClock()
            let start = clock.now
            #expect(silent.isClosedByServer())
            #expect(partial.isClosedByServer())
            #expect(clock.now - start < .seconds(3))
            // A connection that keeps asking is not cut off between requests.
            let busy = try RawUAPIClient(path: path)
            for _ in 0..<5 {
                busy.send("get=1\n\n")
                #expect(busy.readReply().hasSuffix("errno=0\n\n"))
                usleep(150_000)
            }
            #expect(try wg("show", names[0], "listen-port") == "51820\n")
        }
    }

    @Test func otherUsersAreRefused() throws {
        try withUAPIServer { names, gateway, server in
            let path = server.socketPath(interface: names[0])
            // Let uid 65534 reach the socket (the 0600 mode normally stops it at connect).
            #expect(chmod(path, 0o666) == 0)
            defer { chmod(path, 0o600) }
            let (status, out, err) = try Command.runAllowingFailure(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", try Command.which("wg"), "show", names[0], "dump"])
            // Closed unanswered: `wg` reports a protocol error, or dies of SIGPIPE writing its request.
            #expect(status != 0)
            #expect(err.isEmpty || err.contains("Unable to access interface"), "\(err)")
            let secret = try #require(gateway.tenant(names[0])).privateKey.secret.base64ForDisplay
            #expect(!out.contains(secret) && !err.contains(secret))
            #expect(try wg("show", names[0], "listen-port") == "51820\n")
        }
    }

    // MARK: sockets

    @Test func socketIsPrivateAndRemovedWhenStopped() throws {
        try withUAPIServer(interfaces: 2) { names, _, server in
            var st = stat()
            let path = server.socketPath(interface: names[0])
            #expect(stat(path, &st) == 0)
            #expect(st.st_mode & S_IFMT == S_IFSOCK)
            #expect(st.st_mode & 0o777 == 0o600)
            #expect(st.st_uid == 0)
            #expect(stat(server.directory, &st) == 0 && st.st_mode & 0o777 == 0o755)
            #expect(server.interfaces == names.sorted())
            // Stopping one interface leaves the other serving.
            let client = try RawUAPIClient(path: path)
            server.stopListening(interface: names[0])
            #expect(!FileManager.default.fileExists(atPath: path))
            #expect(try wg("show", names[1], "listen-port") == "51821\n")
            #expect(client.isClosedByServer() || client.readReply().isEmpty)
        }
    }

    @Test func staleSocketIsReplaced() throws {
        try Privileged.require()
        let name = UAPITestNames.interface()
        let gateway = FakeUAPIGateway()
        var tenant = twoPeerTenant()
        tenant.name = name
        gateway.add(tenant)
        let server = UAPIServer(handler: gateway)
        let path = server.socketPath(interface: name)
        defer { server.shutdown(); unlink(path) }

        // A socket file nobody listens on, as a crashed process leaves it.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        #expect(bound == 0)
        #expect(throws: POSIXError(.ECONNREFUSED)) { try RawUAPIClient(path: path) }

        try server.listen(interface: name)
        let loop = UAPIServerLoop(server)
        loop.start()
        defer { loop.stop() }
        #expect(try wg("show", name, "listen-port") == "51820\n")
    }

    @Test func liveSocketIsRefused() throws {
        try withUAPIServer { (names, gateway, server) throws in
            let second = UAPIServer(handler: gateway)
            defer { second.shutdown() }
            do throws(GatewayError) {
                try second.listen(interface: names[0])
                Issue.record("a second server took a live socket")
            } catch {
                #expect(error.description.contains("in use"), "\(error)")
            }
            // The first server's socket is untouched and still answers.
            #expect(try wg("show", names[0], "listen-port") == "51820\n")
            #expect(throws: GatewayError.self) { try server.listen(interface: names[0]) }
        }
    }

    @Test func fileThatIsNotASocketIsLeftAlone() throws {
        try Privileged.require()
        let name = UAPITestNames.interface()
        let gateway = FakeUAPIGateway()
        let server = UAPIServer(handler: gateway)
        let path = server.socketPath(interface: name)
        defer { server.shutdown(); unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8)))
        do throws(GatewayError) {
            try server.listen(interface: name)
            Issue.record("listened over a regular file")
        } catch {
            #expect(error.description.contains("not a socket"), "\(error)")
        }
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func directoryOthersMayWriteIsRefused() throws {
        try Privileged.require()
        let directory = UAPITestNames.file("dir")
        #expect(mkdir(directory, 0o755) == 0)
        defer { rmdir(directory) }
        #expect(chmod(directory, 0o777) == 0)
        let server = UAPIServer(directory: directory, handler: FakeUAPIGateway())
        defer { server.shutdown() }
        do throws(GatewayError) {
            try server.listen(interface: "x")
            Issue.record("listened in a world-writable directory")
        } catch {
            #expect(error.description.contains("writable by other users"), "\(error)")
        }
        // Fixed, it serves (in any directory given).
        #expect(chmod(directory, 0o755) == 0)
        try server.listen(interface: "x")
        var st = stat()
        #expect(stat(directory + "/x.sock", &st) == 0 && st.st_mode & S_IFMT == S_IFSOCK)
        server.shutdown()
        #expect(!FileManager.default.fileExists(atPath: directory + "/x.sock"))
    }

    @Test func badInterfaceNamesAreRefused() throws {
        let server = UAPIServer(directory: "/nonexistent-\(getpid())", handler: FakeUAPIGateway())
        for bad in ["", "a/b", "..", "sixteen-chars-xx", "with space"] {
            #expect(throws: GatewayError.self, "\(bad)") { try server.listen(interface: bad) }
        }
        #expect(server.interfaces.isEmpty)
    }
}
