import Engine
import Foundation
@testable import Gateway
import Synchronization
import Testing
import TestSupport
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP client: sends `request` (all of it, or nothing), reads to EOF.
struct HTTPClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    struct Response {
        var statusLine: String
        var headers: [String: String]
        var body: String
    }

    static func connect(_ address: IPAddress, _ port: UInt16) throws -> Int32 {
        let v4 = address.isV4
        let fd = socket(v4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let rc: Int32
        if v4 {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &a.sin_addr) { $0.copyBytes(from: address.bytes) }
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } else {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &a.sin6_addr) { $0.copyBytes(from: address.bytes) }
            rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "connect to port \(port): \(String(cString: strerror(e)))")
        }
        return fd
    }

    static func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { recv(fd, b.baseAddress, b.count, 0) } }
            if n <= 0 { return out }
            out += buffer[0..<n]
        }
    }

    static func exchange(_ request: String, port: UInt16, address: IPAddress = IPAddress("127.0.0.1")!) throws -> Response {
        let fd = try connect(address, port)
        defer { close(fd) }
        let bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        return try parse(readAll(fd))
    }

    static func parse(_ raw: [UInt8]) throws -> Response {
        let text = String(decoding: raw, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw Failure(description: "no header end in \(text.debugDescription)") }
        var lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = lines.removeFirst()
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw Failure(description: "bad header \(line)") }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Response(statusLine: status, headers: headers, body: String(text[split.upperBound...]))
    }
}

@Suite("Stats metrics server")
struct StatsMetricsServerTests {
    /// A segment with one worker, a tenant and a peer, served on 127.0.0.1, port chosen by the kernel.
    static func withServer(address: String = "127.0.0.1", timeout: Int = 5,
                           _ body: (StatsSegment, MetricsServer) throws -> Void) throws {
        try withStatsDirectory { dir in
            let segment = try StatsSegment.create(name: SegmentNames.next("metrics"), directory: dir,
                                                  workers: [(queue: 0, core: nil)], tenantCapacity: 2, peerCapacity: 2,
                                                  rxQueueCount: 1)
            defer { segment.close() }
            segment.publishTenant(slot: 0, TenantStatsRecord(name: "acme", listenPort: 51820, peerCount: 1))
            segment.publishPeer(slot: 0, PeerStatsRecord(tenantSlot: 0, publicKey: StatsSegmentTests.keyA,
                                                         lastHandshakeNanoseconds: 1_700_000_000_000_000_000,
                                                         rxBytes: 1234, txBytes: 5678))
            let server = MetricsServer(endpoint: Endpoint(address: IPAddress(address)!, port: 0), segment: segment,
                                       requestTimeoutSeconds: timeout)
            try server.start()
            defer { server.stop() }
            #expect(server.port != 0)
            try body(segment, server)
        }
    }

    @Test("GET /metrics: 200, the exposition content type, a length that matches, Connection: close, fresh values")
    func scrape() throws {
        try Self.withServer { segment, server in
            segment.workerCounters(0).add(.batches, 7)
            let first = try HTTPClient.exchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", port: server.port)
            #expect(first.statusLine == "HTTP/1.1 200 OK")
            #expect(first.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
            #expect(first.headers["content-length"] == String(first.body.utf8.count))
            #expect(first.headers["connection"] == "close")
            let parsed = try PrometheusText(parsing: first.body)
            let key = StatsSegmentTests.keyA.base64
            #expect(parsed.samples.contains(.init(name: "wireguard_sent_bytes_total",
                                                  labels: ["interface": "acme", "public_key": key], value: 5678)))
            #expect(parsed.samples.contains(.init(name: "wireguard_received_bytes_total",
                                                  labels: ["interface": "acme", "public_key": key], value: 1234)))
            #expect(parsed.samples.contains(.init(name: "wireguard_latest_handshake_seconds",
                                                  labels: ["interface": "acme", "public_key": key], value: 1_700_000_000)))
            #expect(first.body.contains("xdpwg_worker_batches_total{queue=\"0\"} 7\n"))
            // Every scrape reads the segment afresh.
            segment.workerCounters(0).add(.batches, 3)
            let second = try HTTPClient.exchange("GET /metrics?x=1 HTTP/1.0\r\n\r\n", port: server.port)
            #expect(second.statusLine == "HTTP/1.1 200 OK")
            #expect(second.body.contains("xdpwg_worker_batches_total{queue=\"0\"} 10\n"))
        }
    }

    @Test("other paths 404, other methods 405, garbage 400, HEAD has no body, oversized requests 431")
    func errors() throws {
        try Self.withServer { _, server in
            let notFound = try HTTPClient.exchange("GET / HTTP/1.1\r\n\r\n", port: server.port)
            #expect(notFound.statusLine == "HTTP/1.1 404 Not Found")
            #expect(notFound.body == "not found: try /metrics\n")
            #expect(notFound.headers["connection"] == "close")
            let post = try HTTPClient.exchange("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", port: server.port)
            #expect(post.statusLine == "HTTP/1.1 405 Method Not Allowed")
            #expect(post.headers["allow"] == "GET, HEAD")
            let garbage = try HTTPClient.exchange("HELLO\r\n\r\n", port: server.port)
            #expect(garbage.statusLine == "HTTP/1.1 400 Bad Request")
            let head = try HTTPClient.exchange("HEAD /metrics HTTP/1.1\r\n\r\n", port: server.port)
            #expect(head.statusLine == "HTTP/1.1 200 OK")
            #expect(head.body.isEmpty)
            #expect(Int(head.headers["content-length"] ?? "") ?? 0 > 1000)
            let huge = try HTTPClient.exchange("GET /metrics HTTP/1.1\r\nX-Padding: " + String(repeating: "a", count: 10_000)
                                               + "\r\n\r\n", port: server.port)
            #expect(huge.statusLine == "HTTP/1.1 431 Request Header Fields Too Large")
        }
    }

    @Test("concurrent scrapes all succeed")
    func concurrentScrapes() throws {
        try Self.withServer { _, server in
            let port = server.port
            let results = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 8) { _ in
                for _ in 0..<5 {
                    let outcome: String
                    do {
                        let r = try HTTPClient.exchange("GET /metrics HTTP/1.1\r\n\r\n", port: port)
                        let complete = r.headers["content-length"] == String(r.body.utf8.count)
                            && (try? PrometheusText(parsing: r.body)) != nil
                        outcome = r.statusLine + (complete ? "" : " (incomplete body)")
                    } catch {
                        outcome = "\(error)"
                    }
                    results.withLock { $0.append(outcome) }
                }
            }
            let all = results.withLock { $0 }
            #expect(all.count == 40)
            #expect(all.allSatisfy { $0 == "HTTP/1.1 200 OK" }, "\(all.filter { $0 != "HTTP/1.1 200 OK" })")
        }
    }

    @Test("a client that sends nothing is dropped after the timeout and does not block the server for good")
    func idleClient() throws {
        try Self.withServer(timeout: 1) { _, server in
            let idle = try HTTPClient.connect(IPAddress("127.0.0.1")!, server.port)
            defer { close(idle) }
            let start = Date()
            let response = try HTTPClient.exchange("GET /metrics HTTP/1.1\r\n\r\n", port: server.port)
            #expect(response.statusLine == "HTTP/1.1 200 OK")
            #expect(Date().timeIntervalSince(start) < 4)
            // The idle connection was closed without an answer.
            #expect(HTTPClient.readAll(idle).isEmpty)
        }
    }

    @Test("an address in use is refused with a clear message; stop closes the port")
    func addressInUseAndStop() throws {
        var port: UInt16 = 0
        try Self.withServer { segment, server in
            port = server.port
            let second = MetricsServer(endpoint: Endpoint(address: IPAddress("127.0.0.1")!, port: server.port), segment: segment)
            let message = gatewayErrorMessage { try second.start() }
            #expect(message == "metrics: cannot listen on 127.0.0.1:\(server.port) (another program uses it): Address already in use (EADDRINUSE)")
            server.stop()
            server.stop()       // idempotent
            #expect(throws: HTTPClient.Failure.self) { _ = try HTTPClient.connect(IPAddress("127.0.0.1")!, port) }
        }
        #expect(port != 0)
    }

    @Test("IPv6 loopback")
    func ipv6() throws {
        try Self.withServer(address: "::1") { _, server in
            let r = try HTTPClient.exchange("GET /metrics HTTP/1.1\r\n\r\n", port: server.port, address: IPAddress("::1")!)
            #expect(r.statusLine == "HTTP/1.1 200 OK")
            #expect(r.body.contains("wireguard_sent_bytes_total"))
        }
    }
}
