import Foundation
import TestSupport
import Testing
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg up` refusing to start: what it says, and that it leaves nothing behind.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct UpCommandTests {
    /// Without root, `up` says so before reading anything.
    @Test func refusesToStartWithoutRoot() throws {
        try Privileged.require()
        let (status, _, stderr) = try Command.runAllowingFailure(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", try Command.xdpwg, "up",
             "--config", "/nonexistent.conf"])
        #expect(status == 1)
        #expect(stderr.contains("must run as root"), "\(stderr)")
    }

    /// A configuration naming an uplink that does not exist is refused before anything is
    /// created (run in a fresh namespace, so nothing could touch this machine's links).
    @Test func refusesAMissingUplinkAndLeavesNothing() throws {
        try Privileged.require()
        let namespace = try NetworkNamespace(tag: "nouplink")
        defer { namespace.close() }
        let tenantNamespace = NetworkNamespace.uniqueName(tag: "never")
        let config = """
            [Gateway]
            Uplink = nope0
            Name = nouplink\(getpid())
            [Tenant]
            Name = never\(getpid() % 10_000)
            PrivateKey = \(PrivateKey.generate().secret.base64ForDisplay)
            ListenPort = 51820
            Namespace = \(tenantNamespace)
            """
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-nouplink-\(getpid()).conf").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(config.utf8), attributes: [.posixPermissions: 0o600])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, _, stderr) = try namespace.execAllowingFailure([try Command.xdpwg, "up", "--config", path])
        #expect(status == 1)
        #expect(stderr.contains("uplink 'nope0' does not exist"), "\(stderr)")
        #expect(!(try Command.run(["ip", "netns", "list"])).contains(tenantNamespace))
    }
}
