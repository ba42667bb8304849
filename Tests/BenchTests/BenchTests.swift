import Bench
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg bench` end to end with a small matrix: every device runs, delivers what the sinks
/// count, no more than was offered, and the report (JSON, Markdown, chart) is written. Speed
/// is not checked here: that is what the command is for.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct BenchCommandTests {
    @Test func smallMatrixAgainstEveryDevice() throws {
        try Privileged.require()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-bench-\(getpid())")
        defer { try? FileManager.default.removeItem(at: output) }
        let (status, out, err) = try Command.runAllowingFailure([
            try Command.xdpwg, "bench", "--devices", "xdpwg", "xdpwg-crypto-off", "wireguard-go",
            "--directions", "decrypt", "encrypt", "both", "--sizes", "64", "--workers", "1", "64",
            "--peers", "3", "--seconds", "0.3", "--no-callgrind", "--output", output.path])
        #expect(status == 0, "\(out)\n\(err)")
        let report = try BenchReport.read(from: output.appendingPathComponent("report.json").path)
        let ran = report.results.filter { $0.notRun == nil }
        #expect(ran.count == 9, "3 devices × 3 directions with 1 worker: \(report.results.map { "\($0.device) \($0.scenario) \($0.notRun ?? "ran")" })")
        for result in ran {
            #expect(result.deliveredPackets > 0, "\(result.device) \(result.scenario.direction) delivered nothing")
            #expect(result.deliveredPackets <= result.offeredPackets + 1000,
                    "\(result.device) \(result.scenario.direction): delivered more than offered (keepalives aside)")
            #expect(result.cpuSeconds > 0)
        }
        // 64 workers cannot run on this machine: said, not measured as zero.
        let wide = report.results.filter { $0.scenario.workers == 64 }
        #expect(wide.count == 9 && wide.allSatisfy { $0.notRun?.contains("CPUs") == true })
        #expect(!report.generatorCeilings.isEmpty && report.generatorCeilings.allSatisfy { $0.mpps > 0 })
        #expect(report.sodium.count == 2)
        let markdown = try String(contentsOf: output.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(markdown.contains("Targets"))
        #expect(FileManager.default.fileExists(atPath: output.appendingPathComponent("chart.png").path))
        // Nothing of the bench is left: every lab namespace still there belongs to a live
        // process (another test's lab), none to the bench that exited.
        let namespaces = try Command.run(["ip", "netns", "list"]).split(separator: "\n")
        for name in namespaces where name.hasPrefix("\(NetworkNamespace.prefix)l") {
            let pid = Int32(name.dropFirst(NetworkNamespace.prefix.count + 1).prefix { $0.isNumber }) ?? 0
            #expect(kill(pid, 0) == 0, "left behind by a process that exited: \(name)")
        }
    }
}
