import Foundation
import Gateway
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// contrib/xdpwg.service: the settings it must have, the ones it must not have (they would
/// hide the tenants' namespaces from the host), commands that the built `xdpwg` really
/// accepts, and systemd's own verdict (`systemd-analyze verify`). Unprivileged.
@Suite struct SystemdUnitTests {
    static var unitURL: URL { Repository.root.appendingPathComponent("contrib/xdpwg.service") }

    static func unit() throws -> UnitFile {
        try UnitFile(parsing: String(contentsOf: unitURL, encoding: .utf8))
    }

    @Test func requiredSettings() throws {
        let unit = try Self.unit()
        #expect(unit.value("Service", "Type") == "simple")
        #expect(unit.value("Service", "ExecStart") == "/usr/local/bin/xdpwg up --config /etc/xdpwg/xdpwg.conf")
        #expect(unit.value("Service", "ExecReload") == "/usr/local/bin/xdpwg reload --name xdpwg")
        #expect(unit.value("Service", "Restart") == "on-failure")
        #expect(unit.value("Service", "KillSignal") == "SIGTERM")
        #expect(unit.value("Service", "KillMode") == "mixed")
        #expect(unit.value("Service", "LimitMEMLOCK") == "infinity")
        #expect(unit.value("Service", "RuntimeDirectory") == "xdpwg")
        #expect(unit.value("Service", "NoNewPrivileges") == "yes")
        #expect(unit.value("Install", "WantedBy") == "multi-user.target")
        #expect(unit.values("Unit", "After").flatMap { $0.split(separator: " ") }.contains("network-online.target"))
        // Long enough for the teardown, shorter than systemd's default (90 s).
        let stop = try #require(unit.value("Service", "TimeoutStopSec"))
        let seconds = try #require(Int(stop.hasSuffix("s") ? String(stop.dropLast()) : stop), "TimeoutStopSec=\(stop)")
        #expect((10...90).contains(seconds))
        // Exactly the capabilities xdpwg up uses, and it runs as root (it checks), so no
        // User= and no ambient capabilities.
        let capabilities = Set(unit.values("Service", "CapabilityBoundingSet").flatMap { $0.split(separator: " ").map(String.init) })
        #expect(capabilities == ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_IPC_LOCK"])
        #expect(unit.values("Service", "User").isEmpty)
        #expect(unit.values("Service", "AmbientCapabilities").isEmpty)
        #expect(unit.value("Service", "RestrictAddressFamilies")?.split(separator: " ").contains("AF_XDP") == true)
    }

    /// Every option that gives a service a mount namespace of its own (systemd's
    /// `exec_needs_mount_namespace`): mounts made there (`ip netns add`) never reach the host.
    @Test func noOptionThatHidesTheTenantsNamespaces() throws {
        let unit = try Self.unit()
        let forbidden = ["ProtectSystem", "ProtectHome", "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths",
                         "ExecPaths", "NoExecPaths", "PrivateTmp", "PrivateDevices", "PrivateMounts", "PrivateNetwork",
                         "PrivateIPC", "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                         "ProtectControlGroups", "ProtectProc", "ProcSubset", "BindPaths", "BindReadOnlyPaths",
                         "TemporaryFileSystem", "RootDirectory", "RootImage", "MountImages", "ExtensionImages",
                         "ExtensionDirectories", "LogNamespace", "DynamicUser",
                         // Older names of the *Paths options.
                         "ReadWriteDirectories", "ReadOnlyDirectories", "InaccessibleDirectories"]
        for key in forbidden {
            #expect(unit.values("Service", key).isEmpty, "\(key)= would put xdpwg in a mount namespace of its own")
        }
        for flags in unit.values("Service", "MountFlags") {
            #expect(flags == "shared", "MountFlags=\(flags) would keep ip netns add's mounts from the host")
        }
    }

    /// ExecStart (and ExecReload when it runs xdpwg) name a subcommand the built binary has,
    /// with options that subcommand takes; a signal-based ExecReload sends a signal the
    /// gateway handles.
    @Test func commandsAreOnesXdpwgAccepts() throws {
        let unit = try Self.unit()
        let start = try #require(unit.value("Service", "ExecStart"))
        try checkXdpwgCommand(start)
        let reload = try #require(unit.value("Service", "ExecReload"))
        let argv = reload.split(separator: " ").map(String.init)
        if argv.first?.hasSuffix("/xdpwg") == true {
            try checkXdpwgCommand(reload)
        } else {
            #expect(argv == ["/bin/kill", "-HUP", "$MAINPID"])
            #expect(FileManager.default.isExecutableFile(atPath: "/bin/kill"))
            #expect(Gateway.handledSignals.contains(SIGHUP), "ExecReload sends SIGHUP, which xdpwg up does not handle")
        }
    }

    /// `systemd-analyze verify` on the unit, with ExecStart pointing at the built binary (verify
    /// requires the program to exist): no warning about our file, exit status 0.
    @Test func systemdAcceptsTheUnit() throws {
        let analyze = try Command.which("systemd-analyze")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-unit-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        let copy = directory.appendingPathComponent("xdpwg.service")
        let text = try String(contentsOf: Self.unitURL, encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/xdpwg", with: try Command.xdpwg)
        try text.write(to: copy, atomically: false, encoding: .utf8)

        let (status, out, err) = try Command.runAllowingFailure([analyze, "verify", copy.path])
        #expect(status == 0, "systemd-analyze verify exited \(status): \(out)\(err)")
        let aboutUs = (out + err).split(separator: "\n").filter { $0.contains(copy.path) || $0.contains("xdpwg.service") }
        #expect(aboutUs.isEmpty, "systemd-analyze verify: \(aboutUs.joined(separator: "\n"))")

        // The check itself sees problems: an unknown key is reported.
        try (text + "\n[Service]\nNoSuchSetting=1\n").write(to: copy, atomically: false, encoding: .utf8)
        let (_, out2, err2) = try Command.runAllowingFailure([analyze, "verify", copy.path])
        #expect((out2 + err2).contains("NoSuchSetting"))
    }

    @Test func parserKnowsTheUnitSyntaxItUses() throws {
        let unit = try UnitFile(parsing: """
            # comment
            ; also a comment
            [Unit]
            After=a.target
            After=b.target c.target

            [Service]
            ExecStart = /bin/true  x
            """)
        #expect(unit.values("Unit", "After") == ["a.target", "b.target c.target"])
        #expect(unit.value("Service", "ExecStart") == "/bin/true  x")
        #expect(throws: GatewayError.self) { try UnitFile(parsing: "Key=outside a section") }
        #expect(throws: GatewayError.self) { try UnitFile(parsing: "[Service]\nExecStart=/bin/a \\\n  b") }
        #expect(throws: GatewayError.self) { try UnitFile(parsing: "[Service]\nno equals sign") }
    }

    // MARK: Helpers

    /// `/usr/local/bin/xdpwg SUBCOMMAND --option value …`: the subcommand is listed by
    /// `xdpwg --help`, and `xdpwg SUBCOMMAND --help` shows every option used.
    private func checkXdpwgCommand(_ command: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let argv = command.split(separator: " ").map(String.init)
        #expect(argv.first == "/usr/local/bin/xdpwg", sourceLocation: sourceLocation)
        let subcommand = try #require(argv.dropFirst().first, "no subcommand in \(command)", sourceLocation: sourceLocation)
        let xdpwg = try Command.xdpwg
        let overview = try Command.run([xdpwg, "--help"])
        // Under SUBCOMMANDS:, a line "  name   abstract" per subcommand.
        let listed = overview.components(separatedBy: "SUBCOMMANDS:").last!.split(separator: "\n")
            .compactMap { $0.wholeMatch(of: #/ {2}([a-z][a-z0-9-]*) {2}.*/#)?.output.1 }.map(String.init)
        #expect(listed.contains("up"), "cannot read the subcommands from `xdpwg --help`: \(overview)", sourceLocation: sourceLocation)
        #expect(listed.contains(subcommand), "`xdpwg \(subcommand)` is not a subcommand (\(listed))", sourceLocation: sourceLocation)
        let help = try Command.run([xdpwg, subcommand, "--help"])
        #expect(help.contains("USAGE: xdpwg \(subcommand) "), sourceLocation: sourceLocation)
        for option in argv.dropFirst(2) where option.hasPrefix("-") {
            #expect(help.contains("\(option) "), "`xdpwg \(subcommand)` has no option \(option)", sourceLocation: sourceLocation)
        }
    }
}

/// A systemd unit file as sections of `Key=Value` lines (systemd.syntax(7)), enough for ours:
/// comments, blank lines, repeated keys; line continuations are refused (the unit uses none).
struct UnitFile {
    private var entries: [(section: String, key: String, value: String)] = []

    init(parsing text: String) throws(GatewayError) {
        var section: String?
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast())
                continue
            }
            guard let section else { throw GatewayError("line \(number + 1): \(line) is outside any section") }
            guard !line.hasSuffix("\\") else { throw GatewayError("line \(number + 1): continuation lines are not supported") }
            guard let equals = line.firstIndex(of: "=") else { throw GatewayError("line \(number + 1): \(line) has no '='") }
            entries.append((section, line[..<equals].trimmingCharacters(in: .whitespaces),
                            line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)))
        }
    }

    func values(_ section: String, _ key: String) -> [String] {
        entries.filter { $0.section == section && $0.key == key }.map(\.value)
    }

    /// The one value of a key that must appear once (nil if absent or repeated).
    func value(_ section: String, _ key: String) -> String? {
        let all = values(section, key)
        return all.count == 1 ? all[0] : nil
    }
}
