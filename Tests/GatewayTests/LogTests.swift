import Foundation
import Gateway
import Logging
import TestSupport
import Testing
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// The log line format, the level from the command line and the environment, the per-key
/// throttle, and the rule that keys never reach the log.
@Suite struct LogTests {
    typealias Handler = Log.StandardErrorHandler

    // MARK: Format

    @Test func lineIsLevelMessageAndSortedMetadata() {
        #expect(Handler.format(level: .info, message: "session established",
                               metadata: ["tenant": "acme", "peer": "AbCd…"])
                == "INFO session established peer=AbCd… tenant=acme")
        #expect(Handler.format(level: .warning, message: "no metadata", metadata: [:]) == "WARNING no metadata")
        #expect(Handler.format(level: .debug, message: "", metadata: ["b": "2", "a": "1", "c": "3"]) == "DEBUG  a=1 b=2 c=3")
    }

    @Test func everyLevelHasItsName() {
        let names = Log.Level.allCases.map { Handler.format(level: $0, message: "m", metadata: [:]) }
        #expect(names == ["TRACE m", "DEBUG m", "INFO m", "NOTICE m", "WARNING m", "ERROR m", "CRITICAL m"])
    }

    @Test(arguments: [
        // (value, as printed)
        ("plain", "k=plain"),
        ("", "k=\"\""),
        ("two words", "k=\"two words\""),
        ("a=b", "k=\"a=b\""),
        ("say \"hi\"", "k=\"say \\\"hi\\\"\""),
        ("line\nbreak", "k=line\\nbreak"),
        ("back\\slash", "k=back\\\\slash"),
        ("10.0.0.1:51820", "k=10.0.0.1:51820"),
        ("ü…✓", "k=ü…✓"),
    ])
    func metadataValuesAreQuotedWhenTheyWouldNotReadAsOneToken(value: String, printed: String) {
        #expect(Handler.format(level: .info, message: "m", metadata: ["k": .string(value)]) == "INFO m \(printed)")
    }

    @Test func nonStringMetadataUsesItsDescription() {
        #expect(Handler.format(level: .info, message: "m", metadata: ["n": .stringConvertible(42), "l": ["a", "b"]])
                == "INFO m l=\"[\\\"a\\\", \\\"b\\\"]\" n=42")
    }

    @Test(arguments: [
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("\u{1b}[31mred\u{1b}[0m", "\\u{1b}[31mred\\u{1b}[0m"),
        ("nul\u{0}", "nul\\u{0}"),
        ("del\u{7f} nel\u{85}", "del\\u{7f} nel\\u{85}"),
        ("C:\\path", "C:\\\\path"),
        ("unicode ü … ✓ stays", "unicode ü … ✓ stays"),
        ("quotes \"stay\" = as is", "quotes \"stay\" = as is"),
    ])
    func messagesStayOnOneLine(message: String, printed: String) {
        #expect(Handler.format(level: .error, message: message, metadata: [:]) == "ERROR \(printed)")
    }

    /// The escaping is reversible: a line says exactly what was logged, no more, no less.
    @Test func escapingIsReversibleAndKeepsOneLine() {
        var samples = ["", "\\", "\\n", "\n", "\\\n", "\"", "a=b c", "\u{1b}", "\u{2028}", "é", "\r\n\t\u{0}\u{9f}"]
        // Plus pseudo-random strings over a tricky alphabet, from a fixed seed.
        let alphabet: [Unicode.Scalar] = ["a", " ", "=", "\"", "\\", "n", "u", "{", "}", "\n", "\r", "\t", "\u{0}",
                                          "\u{1b}", "\u{7f}", "\u{85}", "…", "ü", "\u{2028}"]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<500 {
            var s = String.UnicodeScalarView()
            state = state &* 6364136223846793005 &+ 1442695040888963407
            for _ in 0..<Int(state >> 60) {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                s.append(alphabet[Int(state >> 33) % alphabet.count])
            }
            samples.append(String(s))
        }
        for sample in samples {
            let line = Handler.format(level: .info, message: sample, metadata: ["k": .string(sample)])
            #expect(!line.unicodeScalars.contains { $0 == "\n" || $0 == "\r" }, "\(line.debugDescription)")
            let (message, value) = parseLine(line)
            #expect(message == sample, "message \(sample.debugDescription) → \(line.debugDescription)")
            #expect(value == sample, "value \(sample.debugDescription) → \(line.debugDescription)")
        }
    }

    @Test func messageMetadataWinsOverTheLoggersOwn() {
        var handler = Handler(logLevel: .info)
        handler[metadataKey: "tenant"] = "from-logger"
        handler[metadataKey: "gateway"] = "edge1"
        let event = LogEvent(level: .notice, message: "m", metadata: ["tenant": "acme"], source: nil,
                             file: #fileID, function: #function, line: #line)
        #expect(handler.line(for: event) == "NOTICE m gateway=edge1 tenant=acme")
    }

    // MARK: Secrets

    /// What a call site passes is all a line holds: the handler adds no source location, label
    /// or other data, and passes a key's short name through as it is, so a line shows no more
    /// of any key than its 8-character short name.
    @Test func aLineHoldsOnlyWhatWasPassedAndKeysOnlyAsShortNames() {
        let peer = Keys.peer.publicKey
        let tenant = Keys.tenant.publicKey
        #expect(peer.shortName == String(peer.description.prefix(8)) + "…")
        #expect(peer.shortName.count == 9)

        let handler = Handler(logLevel: .trace)
        let event = LogEvent(level: .info, message: "peer \(peer.shortName) moved to 192.0.2.7:51820",
                             metadata: ["tenant": "acme", "peer": .string(peer.shortName), "key": .string(tenant.shortName)],
                             source: "xdpwg", file: #fileID, function: #function, line: #line)
        let line = handler.line(for: event)
        #expect(line == "INFO peer \(peer.shortName) moved to 192.0.2.7:51820 key=\(tenant.shortName) peer=\(peer.shortName) tenant=acme")
        for text in Keys.allTexts {
            #expect(!line.contains(text), "a key in full (or more than its short name) reached a log line")
            #expect(!line.contains(text.prefix(9)), "more than 8 characters of a key reached a log line")
        }
        for file in [#fileID, "LogTests.swift", "\(#line)", "\(#function)"] {
            #expect(!line.contains(file))
        }
    }

    /// The project rule, checked where it has to hold: no `Log` call in Sources mentions a
    /// secret key, a key's full text, or the display forms that exist only for `wg showconf`.
    @Test func noLogCallInTheSourcesMentionsKeyMaterial() throws {
        let calls = try logCalls(inSourcesOf: Repository.root)
        #expect(calls.count >= 10, "found only \(calls.count) Log calls: the scan is broken")
        for call in calls {
            #expect(Self.mentionsKeyMaterial(call.text) == nil,
                    "\(call.location): \(call.text) mentions \(Self.mentionsKeyMaterial(call.text) ?? "")")
        }
        // The check itself catches what it is for.
        #expect(Self.mentionsKeyMaterial("Log.debug(\"key \\(tenant.privateKey.secret.base64ForDisplay)\")") != nil)
        #expect(Self.mentionsKeyMaterial("Log.info(\"peer \\(peer.publicKey.base64)\")") != nil)
        #expect(Self.mentionsKeyMaterial("Log.info(\"peer \\(peer.publicKey.shortName)\")") == nil)
    }

    static func mentionsKeyMaterial(_ call: String) -> String? {
        let forbidden = ["privateKey", "PrivateKey", "presharedKey", "PresharedKey", "psk", ".secret",
                         "ForDisplay", ".base64", ".hex", "chainingKey", "sendingKey", "receivingKey"]
        return forbidden.first { call.contains($0) }
    }

    // MARK: The process end to end

    /// The built binary with its logging bootstrapped: the level from --log-level and from
    /// XDPWG_LOG_LEVEL decides whether `xdpwg up`'s first error (not root) is printed, and
    /// the line has the handler's shape. Runs the binary as `nobody` (through setpriv when
    /// we are root) so that error is certain.
    @Test func upLogsThroughTheBootstrappedHandlerAtTheChosenLevel() throws {
        let expected = "ERROR xdpwg up must run as root: it loads XDP programs, creates network namespaces "
            + "and AF_XDP sockets (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)\n"
        #expect(try runUpUnprivileged([]) == expected)
        #expect(try runUpUnprivileged(["--log-level", "error"]) == expected)
        #expect(try runUpUnprivileged(["--log-level", "critical"]) == "")
        #expect(try runUpUnprivileged([], environment: "critical") == "")
        #expect(try runUpUnprivileged([], environment: "ERROR") == expected)
        #expect(try runUpUnprivileged(["--log-level", "warning"], environment: "critical") == expected)
    }

    /// Standard error of `xdpwg up --config /nonexistent ARGS` run as nobody; the exit status
    /// must be 1 (the privilege check failed). As root, the binary is run from a copy in a
    /// temporary directory that nobody may enter (the build directory may not be).
    private func runUpUnprivileged(_ arguments: [String], environment level: String? = nil) throws -> String {
        var environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]
        environment[Log.levelEnvironmentVariable] = level
        var command = [try Command.xdpwg, "up", "--config", "/nonexistent"] + arguments
        let manager = FileManager.default
        let directory = manager.temporaryDirectory.appendingPathComponent("xdpwg-log-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? manager.removeItem(at: directory) }
        if geteuid() == 0 {
            try manager.createDirectory(at: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
            let copy = directory.appendingPathComponent("xdpwg")
            try manager.copyItem(atPath: command[0], toPath: copy.path)
            try manager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy.path)
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", copy.path] + command.dropFirst()
        }
        let (status, out, err) = try Command.runAllowingFailure(command, environment: environment)
        #expect(status == 1, "xdpwg up \(arguments) exited \(status): \(out)\(err)")
        #expect(out == "")
        return err
    }

    // MARK: Level

    @Test(arguments: [
        // (--log-level, --verbose, XDPWG_LOG_LEVEL, result)
        (nil, false, nil, Log.Level.info),
        ("debug", false, nil, .debug),
        ("WARNING", false, nil, .warning),
        ("trace", false, nil, .trace),
        ("critical", false, nil, .critical),
        (nil, true, nil, .debug),
        ("debug", true, nil, .debug),
        (nil, false, "error", .error),
        (nil, false, "Notice", .notice),
        ("trace", false, "error", .trace),  // the command line wins
        (nil, true, "error", .debug),
    ] as [(String?, Bool, String?, Log.Level)])
    func levelFromOptionsAndEnvironment(option: String?, verbose: Bool, environment: String?, level: Log.Level) throws {
        #expect(try Log.resolveLevel(option: option, verbose: verbose, environment: environment) == level)
    }

    @Test(arguments: [
        ("loud", false, nil, "--log-level loud: not a log level (trace, debug, info, notice, warning, error, critical)"),
        ("warn", false, nil, "--log-level warn: not a log level (trace, debug, info, notice, warning, error, critical)"),
        ("info", true, nil, "--verbose means --log-level debug, which contradicts --log-level info: give one of them"),
        (nil, false, "", "XDPWG_LOG_LEVEL=: not a log level (trace, debug, info, notice, warning, error, critical)"),
        (nil, false, "verbose", "XDPWG_LOG_LEVEL=verbose: not a log level (trace, debug, info, notice, warning, error, critical)"),
    ] as [(String?, Bool, String?, String)])
    func badLevelsAreClearErrors(option: String?, verbose: Bool, environment: String?, message: String) {
        #expect(throws: GatewayError.self) {
            _ = try Log.resolveLevel(option: option, verbose: verbose, environment: environment)
        }
        do {
            _ = try Log.resolveLevel(option: option, verbose: verbose, environment: environment)
        } catch {
            #expect(error.description == message)
        }
    }

    // MARK: Throttle

    static func at(_ seconds: Double) -> Instant { Instant(nanoseconds: UInt64(seconds * 1e9)) }

    @Test func firstPassesThenOnePerIntervalWithTheCountHeldBack() {
        var throttle = Log.Throttle<String>(interval: .seconds(60))
        #expect(throttle.admit("a", now: Self.at(100))?.suppressed == 0)
        #expect(throttle.admit("a", now: Self.at(100)) == nil)
        #expect(throttle.admit("a", now: Self.at(130)) == nil)
        #expect(throttle.admit("a", now: Self.at(159.999)) == nil)
        let pass = throttle.admit("a", now: Self.at(160))  // exactly one interval after the last pass
        #expect(pass?.suppressed == 3)
        #expect(pass?.note == " (3 similar suppressed)")
        // The window restarts at the pass; nothing held back since, so no note.
        #expect(throttle.admit("a", now: Self.at(219)) == nil)
        #expect(throttle.admit("a", now: Self.at(220))?.note == " (1 similar suppressed)")
        #expect(throttle.admit("a", now: Self.at(1000))?.suppressed == 0)
        #expect(throttle.admit("a", now: Self.at(1000))?.note == nil)
    }

    @Test func keysAreIndependent() {
        var throttle = Log.Throttle<Int>(interval: .seconds(10))
        #expect(throttle.admit(1, now: Self.at(0)) != nil)
        #expect(throttle.admit(2, now: Self.at(1)) != nil)
        #expect(throttle.admit(1, now: Self.at(2)) == nil)
        #expect(throttle.admit(2, now: Self.at(3)) == nil)
        #expect(throttle.admit(2, now: Self.at(4)) == nil)
        #expect(throttle.admit(1, now: Self.at(10))?.suppressed == 1)
        #expect(throttle.admit(2, now: Self.at(10)) == nil)
        #expect(throttle.admit(2, now: Self.at(11))?.suppressed == 3)  // at 3, 4 and 10
    }

    @Test func aClockThatStepsBackHoldsMessagesBack() {
        var throttle = Log.Throttle<Int>(interval: .seconds(10))
        #expect(throttle.admit(1, now: Self.at(50)) != nil)
        #expect(throttle.admit(1, now: Self.at(5)) == nil)
        #expect(throttle.admit(1, now: Self.at(60))?.suppressed == 1)
    }

    @Test func forgetAndExpiryDropEntries() {
        var throttle = Log.Throttle<Int>(interval: .seconds(10))
        #expect(throttle.admit(1, now: Self.at(0)) != nil)
        #expect(throttle.admit(2, now: Self.at(0)) != nil)
        #expect(throttle.admit(2, now: Self.at(1)) == nil)  // 2 has a count to report
        #expect(throttle.admit(3, now: Self.at(5)) != nil)
        #expect(throttle.count == 3)
        throttle.forget(3)
        #expect(throttle.count == 2)
        #expect(throttle.admit(3, now: Self.at(6))?.suppressed == 0)  // new again
        // One interval after the first admit, expiry runs: 1 is quiet and old (dropped), 2 keeps
        // its count, 3 is within its interval, 4 is new.
        #expect(throttle.admit(4, now: Self.at(12)) != nil)
        #expect(throttle.count == 3)
        #expect(throttle.admit(2, now: Self.at(12))?.suppressed == 1)
        #expect(throttle.admit(1, now: Self.at(12))?.suppressed == 0)
    }
}

// MARK: - Helpers

/// Parses a line made by `format` with one metadata entry `k`: the message and the value,
/// unescaped. Independent of the handler's code, so the round trip checks it.
private func parseLine(_ line: String) -> (message: String, value: String) {
    let scalars = Array(line.unicodeScalars)
    var i = scalars.firstIndex(of: " ")! + 1
    // The message ends at the last " k=" (a message may itself contain " k=", a value not,
    // since a value with a space or "=" is quoted).
    let tail = Array(" k=".unicodeScalars)
    var end = scalars.count - tail.count
    while !(Array(scalars[end..<end + tail.count]) == tail && isValueToken(scalars[(end + tail.count)...])) { end -= 1 }
    let message = unescape(scalars[i..<end])
    i = end + tail.count
    var value = Array(scalars[i...])
    if value.first == "\"" && value.count >= 2 && value.last == "\"" {
        value = Array(value.dropFirst().dropLast())
        return (message, unescape(value[...], quoted: true))
    }
    return (message, unescape(value[...]))
}

/// Whether what follows " k=" is the whole value: quoted to the end, or free of spaces.
private func isValueToken(_ rest: ArraySlice<Unicode.Scalar>) -> Bool {
    if rest.first == "\"" {
        guard rest.count >= 2, rest.last == "\"" else { return false }
        var escaped = false
        for s in rest.dropFirst().dropLast() {
            if escaped { escaped = false } else if s == "\\" { escaped = true } else if s == "\"" { return false }
        }
        return !escaped
    }
    return !rest.contains(" ") && !rest.contains("=") && !rest.contains("\"") && !rest.isEmpty
}

private func unescape(_ scalars: ArraySlice<Unicode.Scalar>, quoted: Bool = false) -> String {
    var out = String.UnicodeScalarView()
    var i = scalars.startIndex
    while i < scalars.endIndex {
        let s = scalars[i]
        i += 1
        guard s == "\\" else { out.append(s); continue }
        let next = scalars[i]
        i += 1
        switch next {
        case "\\": out.append("\\")
        case "n": out.append("\n")
        case "r": out.append("\r")
        case "t": out.append("\t")
        case "\"" where quoted: out.append("\"")
        case "u":
            let close = scalars[i...].firstIndex(of: "}")!
            let hex = String(String.UnicodeScalarView(scalars[(i + 1)..<close]))
            out.append(Unicode.Scalar(UInt32(hex, radix: 16)!)!)
            i = close + 1
        default: Issue.record("unknown escape \\\(next)")
        }
    }
    return String(out)
}

/// Every `Log.<level>(…)` call in Sources, with its arguments up to the matching parenthesis.
private func logCalls(inSourcesOf root: URL) throws -> [(location: String, text: String)] {
    let sources = root.appendingPathComponent("Sources")
    guard let files = FileManager.default.enumerator(atPath: sources.path) else {
        throw GatewayError("cannot list \(sources.path)")
    }
    let opening = /Log\.(trace|debug|info|notice|warning|error|critical|log)\(/
    var calls: [(String, String)] = []
    for case let file as String in files where file.hasSuffix(".swift") {
        let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
        for match in text.matches(of: opening) {
            var depth = 1
            var end = match.range.upperBound
            while depth > 0 && end < text.endIndex {
                if text[end] == "(" { depth += 1 } else if text[end] == ")" { depth -= 1 }
                end = text.index(after: end)
            }
            let line = text[..<match.range.lowerBound].filter { $0 == "\n" }.count + 1
            calls.append(("Sources/\(file):\(line)", String(text[match.range.lowerBound..<end])))
        }
    }
    return calls
}
