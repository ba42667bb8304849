import Foundation
import Gateway
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The gateway's command socket: one gateway per name, stale files replaced, requests answered.
@Suite struct ControlSocketTests {
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-control-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aSecondGatewayWithTheSameNameIsRefusedAndTheFirstKeepsItsSocket() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try ControlSocket(name: "edge", directory: dir)
        #expect(throws: GatewayError.self) { try ControlSocket(name: "edge", directory: dir) }
        do throws(GatewayError) {
            _ = try ControlSocket(name: "edge", directory: dir)
        } catch {
            #expect(error.description.contains("another process answers on it"), "\(error)")
            #expect(error.description.contains("give this one another [Gateway] Name"), "\(error)")
        }
        // The refused one did not remove the first one's socket: a request still gets answered.
        nonisolated(unsafe) let serving = first   // only the thread touches it until the reply
        let server = Thread {
            for _ in 0..<200 {
                serving.service { command in (command == "reload", ["heard \(command)"]) }
                usleep(5_000)
            }
        }
        server.start()
        let reply = try ControlSocket.request("reload", name: "edge", directory: dir)
        #expect(reply.ok && reply.lines == ["heard reload"])
        let mode = try FileManager.default.attributesOfItem(atPath: first.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func aStaleSocketIsReplacedAndAnythingElseIsLeftAlone() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do { _ = try ControlSocket(name: "stale", directory: dir) }
        // After a clean exit the file is gone.
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/stale.control"))
        // A socket file nobody answers on (left by a killed gateway) is replaced.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array("\(dir)/stale.control".utf8)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(rc == 0)
        close(fd)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/stale.control"))
        let replaced = try ControlSocket(name: "stale", directory: dir)
        #expect(replaced.path == "\(dir)/stale.control")
        // A regular file at the path is not ours to delete.
        FileManager.default.createFile(atPath: "\(dir)/file.control", contents: Data("x".utf8))
        #expect(throws: GatewayError.self) { try ControlSocket(name: "file", directory: dir) }
        #expect(FileManager.default.fileExists(atPath: "\(dir)/file.control"))
    }
}
