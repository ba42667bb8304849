import Bench
import Foundation
import Lab
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg scale` and `xdpwg soak` at small size, as root: they run, every peer completes its
/// handshake and its packet is decrypted, memory is sampled, the reports are written, and
/// nothing is left behind. Figures are not asserted (the machine is shared); the full-size
/// runs are `scripts/scale.sh` and `scripts/soak.sh`.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct ScaleCommandTests {
    @Test func thousandPeersAcrossTenTenants() throws {
        try Privileged.require()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-scale-\(getpid())")
        defer { try? FileManager.default.removeItem(at: output) }
        let (status, out, err) = try Command.runAllowingFailure([
            try Command.xdpwg, "scale", "--tenants", "10", "--peers", "1000", "--output", output.path])
        #expect(status == 0, "\(out)\n\(err)")
        let data = try Data(contentsOf: output.appendingPathComponent("scale.json"))
        let report = try JSONDecoder().decode(ScaleRunner.Report.self, from: data)
        #expect(report.tenants == 10 && report.peers == 1000)
        #expect(report.packetsSent == 1000 && report.packetsDecrypted == 1000, "\(out)")
        #expect(report.drops.isEmpty, "\(report.drops)")
        #expect(report.handshakeFailures.isEmpty, "\(report.handshakeFailures)")
        #expect(report.baselineRSSKiB > 0 && report.rssUpKiB > 0 && report.rssSessionsKiB > 0)
        #expect(report.startSeconds > 0 && report.handshakesPerSecond > 0)
        let markdown = try String(contentsOf: output.appendingPathComponent("scale.md"), encoding: .utf8)
        #expect(markdown.contains("Memory per peer"))
        try expectNothingLeft()
    }

    @Test func shortSoak() throws {
        try Privileged.require()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-soak-\(getpid())")
        defer { try? FileManager.default.removeItem(at: output) }
        let (status, out, err) = try Command.runAllowingFailure([
            try Command.xdpwg, "soak", "--seconds", "20", "--sample", "1", "--peers", "50", "--rate", "2000",
            "--rehandshake", "8", "--output", output.path])
        #expect(status == 0, "\(out)\n\(err)")
        let data = try Data(contentsOf: output.appendingPathComponent("soak.json"))
        let report = try JSONDecoder().decode(SoakRunner.Report.self, from: data)
        #expect(report.samples.count >= 15, "one sample a second for 20 s: \(report.samples.count)")
        #expect(report.samples.allSatisfy { $0.rssKiB > 0 })
        #expect(report.handshakes >= 50 * 2 && report.handshakes % 50 == 0, "a pass every 8 s: \(report.handshakes)")
        #expect(report.packetsDecrypted > 0 && report.packetsEncrypted > 0, "\(out)")
        let markdown = try String(contentsOf: output.appendingPathComponent("soak.md"), encoding: .utf8)
        #expect(markdown.contains("Slope after warm-up"))
        try expectNothingLeft()
    }

    /// Every lab namespace still there belongs to a live process (another test's), none to
    /// the command that exited.
    func expectNothingLeft() throws {
        let namespaces = try Command.run(["ip", "netns", "list"]).split(separator: "\n")
        for name in namespaces where name.hasPrefix("\(NetworkNamespace.prefix)l") {
            let pid = Int32(name.dropFirst(NetworkNamespace.prefix.count + 1).prefix { $0.isNumber }) ?? 0
            #expect(kill(pid, 0) == 0, "left behind by a process that exited: \(name)")
        }
    }
}
