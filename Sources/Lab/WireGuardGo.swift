import Foundation
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// A reference peer: wireguard-go in a namespace, configured with the real `wg` tool.
///
/// `namespace` holds the process and therefore its UDP socket. The TUN interface may live in
/// another namespace (`interfaceNamespace`): it is moved there before it is ever brought up,
/// so several peers can share one "internet" namespace (one address, one port each) while
/// their inner addresses and routes, which may overlap, live apart. wireguard-go follows the
/// moved interface: it learns up/down by polling its TUN file descriptor, which works across
/// namespaces, and its UAPI socket is a file in /var/run/wireguard, reachable from anywhere.
public final class WireGuardGo: @unchecked Sendable {
    public let namespace: NetworkNamespace
    /// Where the TUN interface lives (its addresses, routes, and the programs that use it).
    public let interfaceNamespace: NetworkNamespace
    public let interface: String
    public let privateKey: String
    public let publicKey: String
    public let listenPort: Int
    private let process: Process
    private let logFile: URL

    private static let counter = Counter()

    /// Starts wireguard-go in the foreground (we own its PID) and configures the interface.
    /// `interfaceNamespace`: move the TUN interface there (default: stay in `namespace`).
    /// `cpus`: pin every thread of wireguard-go to these CPUs from its start (`taskset`): so
    /// the datagrams it sends leave from a known CPU (the uplink harness steers queues with
    /// XPS), or to give it the same core budget as the gateway it is compared with.
    public init(in namespace: NetworkNamespace, listenPort: Int, address: String,
         interfaceNamespace: NetworkNamespace? = nil, cpus: [Int]? = nil) throws {
        self.namespace = namespace
        self.interfaceNamespace = interfaceNamespace ?? namespace
        // The UAPI socket directory is shared by all namespaces: the name must be unique
        // on the machine, and at most 15 characters.
        interface = "xwg\(getpid() % 100_000)g\(WireGuardGo.counter.next())"
        privateKey = try Command.run(["wg", "genkey"]).trimmingCharacters(in: .whitespacesAndNewlines)
        publicKey = try Command.run(["wg", "pubkey"], input: privateKey).trimmingCharacters(in: .whitespacesAndNewlines)
        self.listenPort = listenPort
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("\(interface).log")
        var command = [try Command.which("wireguard-go"), "-f", interface]
        if let cpus { command = ["taskset", "--cpu-list", cpus.map(String.init).joined(separator: ",")] + command }
        process = try namespace.spawn(
            command,
            environment: ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", "LOG_LEVEL": "debug"],
            log: logFile)
        do {
            let socketPath = "/var/run/wireguard/\(interface).sock"
            for _ in 0..<250 where !FileManager.default.fileExists(atPath: socketPath) {
                guard process.isRunning else { throw StartFailed(log: log) }
                usleep(20_000)
            }
            guard FileManager.default.fileExists(atPath: socketPath) else { throw StartFailed(log: log) }
            if self.interfaceNamespace !== namespace {
                // Move while still down: wireguard-go has not seen it up, so the move costs
                // it nothing (moving an up interface makes it log a failed MTU lookup).
                try namespace.exec(["ip", "link", "set", "dev", interface, "netns", self.interfaceNamespace.name])
            }
            try withSecretFile(privateKey) { path in
                try namespace.exec(["wg", "set", interface, "private-key", path, "listen-port", String(listenPort)])
            }
            try self.interfaceNamespace.exec(["ip", "addr", "add", address, "dev", interface])
            try self.interfaceNamespace.exec(["ip", "link", "set", interface, "up"])
        } catch {
            close()
            throw error
        }
    }

    public struct StartFailed: Error, CustomStringConvertible {
        public var log: String
        public var description: String { "wireguard-go did not start: \(log)" }
    }

    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// The wireguard-go process (to check that it is gone after `close()`).
    public var processIdentifier: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// `wg set IF peer ...` with the given options; the preshared key goes through a 0600 file.
    public func addPeer(publicKey: String, allowedIPs: String, endpoint: String? = nil,
                 presharedKey: String? = nil, persistentKeepalive: Int? = nil) throws {
        var args = ["wg", "set", interface, "peer", publicKey, "allowed-ips", allowedIPs]
        if let endpoint { args += ["endpoint", endpoint] }
        if let persistentKeepalive { args += ["persistent-keepalive", String(persistentKeepalive)] }
        if let presharedKey {
            try withSecretFile(presharedKey) { path in try namespace.exec(args + ["preshared-key", path]) }
        } else {
            try namespace.exec(args)
        }
    }

    /// `wg addconf IF FILE`: adds the peers of a `[Peer]`-sections text at once (thousands of
    /// peers in one call); through a 0600 file, as it may hold preshared keys.
    public func addConfiguration(_ text: String) throws {
        try withSecretFile(text) { path in try namespace.exec(["wg", "addconf", interface, path]) }
    }

    public struct PeerStatus {
        public var publicKey: String
        public var endpoint: String
        public var latestHandshake: Int
        public var receivedBytes: Int
        public var sentBytes: Int
    }

    /// The peers as `wg show IF dump` reports them.
    public func peers() throws -> [PeerStatus] {
        let dump = try namespace.exec(["wg", "show", interface, "dump"])
        return dump.split(separator: "\n").dropFirst().compactMap { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard f.count >= 8, let hs = Int(f[4]), let rx = Int(f[5]), let tx = Int(f[6]) else { return nil }
            return PeerStatus(publicKey: f[0], endpoint: f[2], latestHandshake: hs, receivedBytes: rx, sentBytes: tx)
        }
    }

    public func close() {
        NetworkNamespace.stop(process)
        try? FileManager.default.removeItem(atPath: "/var/run/wireguard/\(interface).sock")
        try? FileManager.default.removeItem(at: logFile)
    }

    deinit { close() }

    /// Writes a secret to a fresh 0600 file for the duration of `body`, then removes it.
    @discardableResult
    private func withSecretFile<R>(_ secret: String, _ body: (String) throws -> R) throws -> R {
        let dir = try FileManager.default.url(for: .itemReplacementDirectory, in: .userDomainMask,
                                              appropriateFor: FileManager.default.temporaryDirectory, create: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("key").path
        guard FileManager.default.createFile(atPath: path, contents: Data(secret.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw POSIXError(.EIO)
        }
        return try body(path)
    }
}
