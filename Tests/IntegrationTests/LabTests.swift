import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg lab`, the README's main command, run as a user runs it: a child process whose
/// output is read as it comes. It must carry traffic through every tenant, print the live
/// view and the summary, and leave nothing behind: on a normal end, on Ctrl-C in the middle
/// of the traffic, and after `--keep`.
@Suite(.serialized, .enabled(if: Privileged.shouldRun))
struct LabTests {
    /// A running `xdpwg lab` with its output in a file.
    final class RunningLab {
        let process = Process()
        let output: URL

        init(_ arguments: [String]) throws {
            output = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-labtest-\(getpid())-\(arguments.count).out")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            let handle = try FileHandle(forWritingTo: output)
            process.executableURL = URL(fileURLWithPath: try Command.xdpwg)
            process.arguments = ["lab"] + arguments
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
        }

        deinit {
            if process.isRunning {
                kill(process.processIdentifier, SIGINT)
                process.waitUntilExit()
            }
            try? FileManager.default.removeItem(at: output)
        }

        var text: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

        func waitFor(_ what: String, seconds: Double) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if text.contains(what) { return }
                guard process.isRunning else { throw Failure(description: "the lab exited before \"\(what)\":\n\(text)") }
                usleep(100_000)
            }
            throw Failure(description: "no \"\(what)\" after \(seconds) s:\n\(text)")
        }

        /// Waits for the exit; nil if it did not exit in time.
        func exitStatus(within seconds: Double) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            return process.isRunning ? nil : process.terminationStatus
        }

        /// "xdpwg-l<pid>-": every namespace of this lab starts so.
        var namespacePrefix: String { "\(NetworkNamespace.prefix)l\(process.processIdentifier)-" }
        /// The gateway's stats name, from the line that announces it.
        var gatewayName: String? {
            text.components(separatedBy: "stats name ").dropFirst().first?.split(separator: "\n").first.map(String.init)
        }

        /// What is left of this lab on the machine: namespaces, wg sockets, the stats segment.
        func leftovers() throws -> [String] {
            let tag = "lab\(process.processIdentifier % 100_000)"
            let namespaces = try Command.run(["ip", "netns", "list"]).split(separator: "\n")
                .filter { $0.hasPrefix(namespacePrefix) }.map(String.init)
            let sockets = ((try? FileManager.default.contentsOfDirectory(atPath: "/var/run/wireguard")) ?? [])
                .filter { $0.hasPrefix(tag) }
            let segments = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/xdpwg")) ?? [])
                .filter { $0.hasPrefix(tag) }
            return namespaces + sockets + segments
        }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    @Test func runsTrafficThroughEveryTenantAndLeavesNothing() throws {
        try Privileged.require()
        let lab = try RunningLab(["--duration", "3", "--tenants", "2", "--peers", "1"])
        let status = lab.exitStatus(within: 120)
        let text = lab.text
        #expect(status == 0, "\(text)")
        #expect(text.contains("handshakes: every peer pinged its tenant"), "\(text)")
        #expect(text.contains("uplink_rx_packets"), "the live stats view was shown: \(text)")
        #expect(text.contains("result: every peer reached its tenant, traffic flowed both ways"), "\(text)")
        // Each tenant's summary row: 3/3 pings and traffic both ways.
        let rows = text.split(separator: "\n").filter { $0.hasPrefix("  lab") }
        #expect(rows.count == 2, "\(text)")
        for row in rows {
            let cells = row.split(separator: " ", omittingEmptySubsequences: true)
            #expect(cells.count >= 9 && cells[2] == "3/3", "\(row)")
            let rates = cells.enumerated().filter { $0.element == "Mbit/s" }.map { Double(cells[$0.offset - 1]) ?? 0 }
            #expect(rates.count == 2 && rates.allSatisfy { $0 > 0 }, "both directions carried traffic: \(row)")
        }
        #expect(text.contains("teardown: done, nothing left"), "\(text)")
        #expect(try lab.leftovers() == [])
    }

    @Test func ctrlCDuringTrafficTearsEverythingDown() throws {
        try Privileged.require()
        let lab = try RunningLab(["--duration", "60", "--tenants", "1", "--peers", "2"])
        try lab.waitFor("traffic:", seconds: 60)
        #expect(try !lab.leftovers().isEmpty, "the lab is up")
        usleep(1_500_000)
        kill(lab.process.processIdentifier, SIGINT)
        let status = lab.exitStatus(within: 40)
        #expect(status == 130, "\(lab.text)")
        #expect(lab.text.contains("teardown: done, nothing left"), "\(lab.text)")
        #expect(try lab.leftovers() == [])
    }

    @Test func keepStaysUpForTheOperatorUntilCtrlC() throws {
        try Privileged.require()
        let lab = try RunningLab(["--duration", "1", "--tenants", "1", "--peers", "1", "--keep"])
        try lab.waitFor("Press Ctrl-C", seconds: 90)
        let name = try #require(lab.gatewayName, "\(lab.text)")
        // What the explanation offers works: wg show on the tenant, xdpwg stats on the gateway.
        let tenant = try #require(lab.text.split(separator: "\n").first { $0.hasPrefix("  lab") }?
            .split(separator: " ").first.map(String.init), "\(lab.text)")
        let wg = try Command.run(["wg", "show", tenant])
        #expect(wg.contains("latest handshake"), "\(wg)")
        let stats = try Command.run([try Command.xdpwg, "stats", "--name", name])
        #expect(stats.contains(tenant), "\(stats)")
        #expect(lab.process.isRunning, "still up after the summary")
        kill(lab.process.processIdentifier, SIGINT)
        #expect(lab.exitStatus(within: 40) == 0, "\(lab.text)")
        #expect(try lab.leftovers() == [])
    }
}

/// What `xdpwg lab` says on a machine that lacks something (no root needed).
@Suite struct LabPrerequisiteTests {
    @Test func namesEveryMissingPackageAndTheWayToInstallIt() throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-empty-path-\(getpid())")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let problems = Prerequisites.problems(searchPath: empty.path, isRoot: false, cpus: 1)
        #expect(problems.count == 3, "\(problems)")
        let text = problems.joined(separator: "\n")
        for package in ["wireguard-go", "wireguard-tools", "iperf3", "iputils-ping", "iproute2"] {
            #expect(text.contains("(package \(package))"), "\(text)")
        }
        #expect(text.contains("scripts/install-deps.sh"))
        #expect(text.contains("apt-get install --no-install-recommends"))
        #expect(text.contains("sudo"))
        #expect(text.contains("1 online"))
        // And nothing when everything is there (this machine, as the test suite installs it).
        #expect(Prerequisites.problems(isRoot: true, cpus: 2) == [])
    }
}
