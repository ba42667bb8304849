import Bench
import Engine
import Foundation
import TestSupport
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// Two namespaces joined by one veth for the load-side tests: `a` (the sender, 192.0.2.1 on
/// `aInterface`) and `b` (the receiver, 192.0.2.2 on `bInterface`). IPv6 is off in both, so
/// the kernel's own router solicitations and MLD reports never reach a sink and every count
/// can be exact. Removed with everything in it by `close()` (also from `deinit`).
final class LoadLink: @unchecked Sendable {
    let a: NetworkNamespace
    let b: NetworkNamespace
    let aInterface = "ld-a"
    let bInterface = "ld-b"
    let aAddress = "192.0.2.1"
    let bAddress = "192.0.2.2"

    init() throws {
        a = try NetworkNamespace(tag: "la")
        do {
            b = try NetworkNamespace(tag: "lb")
        } catch {
            a.close()
            throw error
        }
        do {
            for ns in [a, b] {
                try ns.exec(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
                try ns.exec(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
            }
            // Made inside `a`, one end moved: nothing is ever left in the host's namespace.
            try a.exec(["ip", "link", "add", aInterface, "type", "veth", "peer", "name", bInterface])
            try a.exec(["ip", "link", "set", bInterface, "netns", b.name])
            try a.exec(["ip", "addr", "add", "\(aAddress)/24", "dev", aInterface])
            try b.exec(["ip", "addr", "add", "\(bAddress)/24", "dev", bInterface])
            try a.exec(["ip", "link", "set", aInterface, "up"])
            try b.exec(["ip", "link", "set", bInterface, "up"])
        } catch {
            close()
            throw error
        }
    }

    func close() {
        b.close()
        a.close()
    }

    deinit { close() }

    var aMAC: EthernetAddress { get throws { try interfaceMAC(namespace: a.name, interface: aInterface) } }
    var bMAC: EthernetAddress { get throws { try interfaceMAC(namespace: b.name, interface: bInterface) } }

    /// Frames from a to b (UDP 40000 → `port`), as the kernel in b accepts them.
    func frameBuilder(port: UInt16) throws -> UDPFrameBuilder {
        try UDPFrameBuilder(sourceMAC: try aMAC, destinationMAC: try bMAC,
                            source: IPAddress(aAddress)!, sourcePort: 40000,
                            destination: IPAddress(bAddress)!, destinationPort: port)
    }

    /// Resolves b's MAC in a's neighbour table (one ping), so that the first datagrams of a
    /// blast do not wait on ARP (the kernel queues only a few meanwhile).
    func resolveNeighbours() throws {
        try a.exec(["ping", "-c", "1", "-W", "2", bAddress])
    }

    /// The mode of the XDP program attached to the interface as `ip -j link` reports it
    /// ("native", "generic", ...), or nil when there is none.
    static func xdpMode(_ ns: NetworkNamespace, _ interface: String) throws -> String? {
        let json = try ns.exec(["ip", "-j", "link", "show", "dev", interface])
        let links = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
        guard let xdp = links?.first?["xdp"] as? [String: Any] else { return nil }
        // IFLA_XDP_ATTACHED: 1 driver, 2 generic (skb), 3 offloaded, 4 several.
        switch xdp["mode"] as? Int {
        case 1: return "native"
        case 2: return "generic"
        case let mode: return "mode \(mode.map(String.init) ?? "?")"
        }
    }

    static func hasXDP(_ ns: NetworkNamespace, _ interface: String) throws -> Bool {
        try xdpMode(ns, interface) != nil
    }
}

/// A UDP socket in a namespace that the tests read datagrams from.
final class Receiver {
    let fd: Int32

    init(in ns: NetworkNamespace, port: UInt16) throws {
        fd = try ns.udpSocket(port: port)
        // Room for every datagram of a test's blast: nothing is read until it is over.
        var size: Int32 = 32 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// Every datagram that arrives until none has for a second.
    func drain() -> [[UInt8]] {
        var datagrams: [[UInt8]] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { break }
            datagrams.append(Array(buffer[..<n]))
        }
        return datagrams
    }

    /// The 64-bit big-endian sequence numbers the blasters put first in each payload.
    static func sequence(_ datagram: [UInt8]) -> UInt64? {
        guard datagram.count >= 8 else { return nil }
        return datagram[..<8].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// A wireguard-go interface in a namespace, set up with the real `wg` tool: the kind of TUN
/// device the perf lab puts a sink on.
final class GoPeer: @unchecked Sendable {
    let ns: NetworkNamespace
    let interface: String
    let publicKey: String
    let privateKey: String
    private let process: Process

    private static let counter = Counter()

    init(in ns: NetworkNamespace, address: String, listenPort: Int) throws {
        self.ns = ns
        // The UAPI socket directory is shared by all namespaces: a unique name, ≤ 15 characters.
        interface = "ldwg\(getpid() % 100_000)n\(GoPeer.counter.next())"
        privateKey = try Command.run(["wg", "genkey"]).trimmingCharacters(in: .whitespacesAndNewlines)
        publicKey = try Command.run(["wg", "pubkey"], input: privateKey).trimmingCharacters(in: .whitespacesAndNewlines)
        process = try ns.spawn(["wireguard-go", "-f", interface],
                               environment: ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"])
        do {
            let socketPath = "/var/run/wireguard/\(interface).sock"
            for _ in 0..<250 where !FileManager.default.fileExists(atPath: socketPath) && process.isRunning {
                usleep(20_000)
            }
            guard FileManager.default.fileExists(atPath: socketPath) else {
                throw LoadError("start wireguard-go", namespace: ns.name, interface: interface,
                                reason: "its UAPI socket did not appear within 5 s")
            }
            // The key goes through standard input: never on a command line, never in a file.
            try ns.exec(["wg", "set", interface, "private-key", "/dev/stdin", "listen-port", String(listenPort)],
                        input: privateKey)
            try ns.exec(["ip", "addr", "add", address, "dev", interface])
            try ns.exec(["ip", "link", "set", interface, "up"])
        } catch {
            close()
            throw error
        }
    }

    func addPeer(_ other: GoPeer, allowedIPs: String, endpoint: String) throws {
        try ns.exec(["wg", "set", interface, "peer", other.publicKey, "allowed-ips", allowedIPs, "endpoint", endpoint])
    }

    func close() {
        NetworkNamespace.stop(process)
        try? FileManager.default.removeItem(atPath: "/var/run/wireguard/\(interface).sock")
    }

    deinit { close() }
}
