import CXDPWG
import Foundation
@_exported import Lab
#if canImport(Glibc)
import Glibc
#endif

// The lab's topology, namespaces and external commands (Sources/Lab) are the tests' too;
// what follows only tests need.

extension Command {
    /// The `xdpwg` executable built beside the test bundle.
    public static var xdpwg: String {
        get throws {
            let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
            // Swift Testing may run from inside the .xctest bundle directory.
            if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
            let candidate = dir.appendingPathComponent("xdpwg").path
            guard FileManager.default.isExecutableFile(atPath: candidate) else {
                throw NotInstalled(program: "xdpwg (expected at \(candidate); run `swift build` first)")
            }
            return candidate
        }
    }

    /// The release build of `xdpwg` beside the debug one (`swift build -c release`; scripts/test.sh
    /// builds it), nil when there is none.
    public static var releaseXdpwg: String? {
        guard let debug = try? xdpwg else { return nil }
        let candidate = URL(fileURLWithPath: debug).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("release/xdpwg").path
        return FileManager.default.isExecutableFile(atPath: candidate) ? candidate : nil
    }
}

extension NetworkNamespace {
    /// An IPv4 UDP socket inside this namespace, bound to `port` on `address` (default: every
    /// address; port 0: any free port).
    public func udpSocket(port: UInt16, address: String = "0.0.0.0") throws -> Int32 {
        let fd = try socket(domain: AF_INET, type: Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
        var local = CorePeer.address(address, port)
        let rc = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            Glibc.close(fd)
            throw POSIXError(.init(rawValue: e) ?? .EIO)
        }
        return fd
    }}
