// Logging for xdpwg, through apple/swift-log.
//
// SECRETS NEVER GO TO THE LOG. Private keys, preshared keys, handshake state and anything
// derived from them (chaining keys, session keys, cookies' secrets) must never be passed to
// `Log` — not in the message, not in metadata, not through `description` of a type that
// holds them. Public keys appear only as `PublicKey.shortName` (8 characters of base64),
// enough to tell peers apart and useless for anything else. The handler below prints what
// it is given without decoding, expanding or adding anything (the tests prove it), so what
// a call site passes is exactly what reaches the journal: the rule has to hold there.
//
// Shape: `Log.info("message")` or `Log.info("message", ["tenant": name, "peer": key.shortName])`.
// Messages and metadata are built only when their level is enabled. Lines go to standard
// error, one per message: `LEVEL message key=value…` (metadata sorted by key), which
// journald stores as is when xdpwg runs as a service (contrib/xdpwg.service).

import Engine
import Logging
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

public enum Log {
    /// swift-log's levels: trace, debug, info, notice, warning, error, critical.
    public typealias Level = Logger.Level

    /// The process's one logger. Created on first use, so the CLI must bootstrap the logging
    /// system (`LoggingSystem.bootstrap` with a `Log.StandardErrorHandler`) before anything
    /// logs; until then (in tests, say) swift-log's default handler is used.
    public static let logger = Logger(label: "xdpwg")

    /// The environment variable `xdpwg up` reads its level from when `--log-level` is absent.
    public static let levelEnvironmentVariable = "XDPWG_LOG_LEVEL"

    public static func trace(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                             file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.trace, message(), metadata(), file: file, function: function, line: line)
    }
    public static func debug(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                             file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.debug, message(), metadata(), file: file, function: function, line: line)
    }
    public static func info(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                            file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.info, message(), metadata(), file: file, function: function, line: line)
    }
    public static func notice(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                              file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.notice, message(), metadata(), file: file, function: function, line: line)
    }
    public static func warning(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                               file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.warning, message(), metadata(), file: file, function: function, line: line)
    }
    public static func error(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                             file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.error, message(), metadata(), file: file, function: function, line: line)
    }
    public static func critical(_ message: @autoclosure () -> String, _ metadata: @autoclosure () -> [String: String] = [:],
                                file: String = #fileID, function: String = #function, line: UInt = #line) {
        log(.critical, message(), metadata(), file: file, function: function, line: line)
    }

    /// Every level function ends here. Metadata is plain strings so call sites can pass
    /// names directly (`["tenant": tenant.name]`); the logger evaluates both closures only
    /// when `level` is enabled.
    public static func log(_ level: Level, _ message: @autoclosure () -> String,
                           _ metadata: @autoclosure () -> [String: String] = [:],
                           file: String = #fileID, function: String = #function, line: UInt = #line) {
        logger.log(level: level, "\(message())", metadata: metadata().mapValues { .string($0) },
                   source: "xdpwg", file: file, function: function, line: line)
    }
}

// MARK: - Level from the command line and the environment

extension Log {
    /// The level `xdpwg up` runs at: `--log-level` (`option`), or `--verbose` (debug), or
    /// `XDPWG_LOG_LEVEL` (`environment`), or info. The command line wins over the environment;
    /// `--verbose` with a different `--log-level` is a contradiction and an error, as is a
    /// name that is not a level (from either source). Names are case-insensitive.
    public static func resolveLevel(option: String?, verbose: Bool, environment: String?) throws(GatewayError) -> Level {
        if let option {
            guard let level = level(named: option) else {
                throw GatewayError("--log-level \(option): not a log level (\(levelNames))")
            }
            if verbose && level != .debug {
                throw GatewayError("--verbose means --log-level debug, which contradicts --log-level \(option): give one of them")
            }
            return level
        }
        if verbose { return .debug }
        if let environment {
            guard let level = level(named: environment) else {
                throw GatewayError("\(levelEnvironmentVariable)=\(environment): not a log level (\(levelNames))")
            }
            return level
        }
        return .info
    }

    /// The level called `name` (trace, debug, info, notice, warning, error, critical; any case).
    public static func level(named name: String) -> Level? {
        Level(rawValue: name.lowercased())
    }

    static var levelNames: String { Level.allCases.map(\.rawValue).joined(separator: ", ") }
}

// MARK: - The handler

extension Log {
    /// Writes each message as one line to standard error: `LEVEL message key=value…`.
    /// No timestamp and no label: journald (or the terminal's user) has the time, and every
    /// line is xdpwg's. One `write(2)` per line, so lines from different threads never
    /// interleave within a line and no lock is needed.
    public struct StandardErrorHandler: LogHandler {
        public var logLevel: Logger.Level
        /// Metadata attached to the logger itself (`logger[metadataKey:]`); the message's own
        /// metadata wins over it for the same key.
        public var metadata: Logger.Metadata = [:]

        public init(logLevel: Logger.Level) {
            self.logLevel = logLevel
        }

        public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        public func log(event: LogEvent) {
            var line = line(for: event)
            line.append("\n")
            line.withUTF8 { bytes in
                var done = 0
                while done < bytes.count {
                    let n = SystemCall.retryingEINTR { write(2, bytes.baseAddress! + done, bytes.count - done) }
                    if n > 0 { done += n } else { break }
                }
            }
        }

        /// The line for `event`, without its newline: `format` with the logger's metadata and
        /// the event's merged. Source, file, function and line are not printed.
        public func line(for event: LogEvent) -> String {
            var all = metadata
            if let own = event.metadata { all.merge(own) { _, message in message } }
            return Self.format(level: event.level, message: event.message.description, metadata: all)
        }

        /// The line for one message, without its newline: the level in capitals, the message,
        /// then `key=value` per metadata entry in key order. Printable text passes unchanged
        /// (Unicode included); what could break the one-line-per-message shape or be mistaken
        /// for structure is escaped, so every line parses back to exactly what was logged:
        /// in the message, backslash and control characters (`\\`, `\n`, `\r`, `\t`,
        /// `\u{1b}` …); in keys and values, the same, and a value that is empty or holds a
        /// space, `"` or `=` is put in double quotes (with `\"` inside).
        public static func format(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
            var line = level.rawValue.uppercased()
            line.append(" ")
            line.append(escape(message))
            for key in metadata.keys.sorted() {
                line.append(" ")
                line.append(quoteIfNeeded(escape(key)))
                line.append("=")
                line.append(quoteIfNeeded(escape(metadata[key]!.description)))
            }
            return line
        }

        /// Backslash and control characters (C0, DEL, C1) as escapes; everything else as is.
        static func escape(_ text: String) -> String {
            var out = ""
            out.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\\": out.append("\\\\")
                case "\n": out.append("\\n")
                case "\r": out.append("\\r")
                case "\t": out.append("\\t")
                case "\u{00}"..."\u{1f}", "\u{7f}"..."\u{9f}":
                    out.append("\\u{\(String(scalar.value, radix: 16))}")
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out
        }

        /// An escaped key or value in double quotes when it would not read as one token.
        static func quoteIfNeeded(_ escaped: String) -> String {
            guard escaped.isEmpty || escaped.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) else {
                return escaped
            }
            return "\"" + escaped.replacing("\"", with: "\\\"") + "\""
        }
    }
}

// MARK: - Rate limiting per key

extension Log {
    /// Lets a message through at most once per `interval` for each key (a peer, say), and
    /// counts what it held back so the next message that passes can say so:
    ///
    ///     if let pass = handshakeLog.admit(peer, now: now) {
    ///         Log.info("handshake completed\(pass.note)", ["peer": peer.shortName])
    ///     }
    ///
    /// The first message for a key passes; then one per interval, measured from the last one
    /// that passed. Pure: the caller passes `now` (the control plane's monotonic clock).
    /// Not thread-safe (the control thread owns it). Keys should come from a bounded set
    /// (configured peers), not from packet contents: an entry stays while it has held-back
    /// messages to report; entries with nothing to report are dropped once their interval
    /// has passed (checked at most once per interval), and `forget` drops a key at once
    /// (a removed peer).
    public struct Throttle<Key: Hashable & Sendable>: Sendable {
        /// A message that may be logged, with how many for its key were held back before it.
        public struct Pass: Equatable, Sendable {
            public let suppressed: Int
            /// "" or " (N similar suppressed)": append it to the message.
            public var note: String { suppressed == 0 ? "" : " (\(suppressed) similar suppressed)" }
        }

        private struct Entry: Sendable {
            var lastPassed: Instant
            var suppressed: Int
        }

        public let interval: Duration
        private var entries: [Key: Entry] = [:]
        private var lastExpiry: Instant?

        public init(interval: Duration = .seconds(60)) {
            precondition(interval > .zero, "a throttle needs a positive interval")
            self.interval = interval
        }

        /// The number of keys tracked.
        public var count: Int { entries.count }

        /// A `Pass` if a message for `key` may be logged now, nil if it is held back (and counted).
        public mutating func admit(_ key: Key, now: Instant) -> Pass? {
            expireIfDue(now: now)
            if var entry = entries[key] {
                guard now.since(entry.lastPassed) >= interval else {
                    entry.suppressed += 1
                    entries[key] = entry
                    return nil
                }
                entries[key] = Entry(lastPassed: now, suppressed: 0)
                return Pass(suppressed: entry.suppressed)
            }
            entries[key] = Entry(lastPassed: now, suppressed: 0)
            return Pass(suppressed: 0)
        }

        /// Drops `key`'s entry, with any count not yet reported.
        public mutating func forget(_ key: Key) {
            entries[key] = nil
        }

        /// Drops entries whose interval has passed and that have nothing to report: their
        /// next message passes either way. At most once per interval, so `admit` stays cheap.
        private mutating func expireIfDue(now: Instant) {
            guard let last = lastExpiry else { lastExpiry = now; return }
            guard now.since(last) >= interval else { return }
            lastExpiry = now
            entries = entries.filter { $0.value.suppressed > 0 || now.since($0.value.lastPassed) < interval }
        }
    }
}

extension PublicKey {
    /// The first 8 characters of the base64 key and an ellipsis: enough to tell peers apart
    /// in logs, and the only form in which a key may appear there.
    public var shortName: String { String(description.prefix(8)) + "…" }
}
