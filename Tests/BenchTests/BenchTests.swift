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
        // The reference forwarder, built as scripts/bench.sh builds it.
        try Command.run(["make", "-s", "-C", "Benchmarks/reference-forwarder", "OUT=\(output.path)/refwd"])
        let (status, out, err) = try Command.runAllowingFailure([
            try Command.xdpwg, "bench", "--devices", "xdpwg", "xdpwg-crypto-off", "reference-forwarder", "wireguard-go",
            "--directions", "decrypt", "encrypt", "both", "--sizes", "64", "--workers", "1", "64",
            "--peers", "3", "--seconds", "0.3", "--no-callgrind", "--output", output.path,
            "--reference-forwarder", "\(output.path)/refwd/xdpwg-refwd", "--commit", "test"])
        #expect(status == 0, "\(out)\n\(err)")
        let report = try BenchReport.read(from: output.appendingPathComponent("report.json").path)
        let ran = report.results.filter { $0.notRun == nil }
        #expect(ran.count == 12, "4 devices × 3 directions with 1 worker: \(report.results.map { "\($0.device) \($0.scenario) \($0.notRun ?? "ran")" })")
        for result in ran {
            let name = "\(result.device) \(result.scenario.direction)"
            #expect(result.deliveredPackets > 0, "\(name) delivered nothing")
            // In a window in the middle of the load, in-flight packets may land on either side.
            #expect(Double(result.deliveredPackets) <= Double(result.offeredPackets) * 1.1 + 3000,
                    "\(name): delivered more than offered")
            #expect(result.cpuSeconds > 0 && result.softirqSeconds >= 0 && result.seconds > 0.2)
            // The device's core is busy at most the window's length (each tick counted once; ticks
            // are 10 ms, and the two readings may each fall a tick off the window's edges).
            #expect(result.coreBusySeconds > 0 && result.coreBusySeconds <= result.seconds + 0.03,
                    "\(name): \(result.coreBusySeconds) s busy in \(result.seconds) s")
            #expect(!result.generator.isEmpty)
            #expect(result.scenario.direction == .both || result.generatorCeilingMpps != nil, "\(name): no ceiling")
        }
        #expect(ran.filter { $0.device == .xdpwg }.allSatisfy { $0.aead != nil })
        // 64 workers cannot run on this machine: said, not measured as zero.
        let wide = report.results.filter { $0.scenario.workers == 64 }
        #expect(wide.count == 12 && wide.allSatisfy { $0.notRun?.contains("CPUs") == true })
        #expect(!report.generatorCeilings.isEmpty && report.generatorCeilings.allSatisfy { $0.mpps > 0 })
        #expect(!report.aead.isEmpty && report.aead.allSatisfy { $0.mpps > 0 })
        #expect(report.machine.commit == "test")
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
