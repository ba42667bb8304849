import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// What the stats tests share: segments in a directory of their own, unique names, and a strict
// reader of what the metrics renderer emits.

public struct StatsDirectoryFailure: Error, CustomStringConvertible {
    public var errno: Int32
    public var description: String { "mkdtemp: \(String(cString: strerror(errno)))" }
}

/// A fresh directory for stats segments (instead of /run/xdpwg), removed with everything in
/// it when `body` returns or throws.
public func withStatsDirectory<R>(_ body: (String) throws -> R) throws -> R {
    var template = Array("/tmp/xdpwg-stats-test-\(getpid())-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw StatsDirectoryFailure(errno: errno) }
    let dir = String(cString: made)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    chmod(dir, 0o755)
    return try body(dir)
}

/// Unique segment names within this test process.
public enum SegmentNames {
    private static let counter = Atomic<Int>(0)
    public static func next(_ prefix: String) -> String {
        "\(prefix)-\(getpid())-\(counter.add(1, ordering: .relaxed).newValue)"
    }
}

/// A strict reader of the Prometheus text format 0.0.4, to check what we emit.
public struct PrometheusText {
    public struct Sample: Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
        public init(name: String, labels: [String: String], value: Double) {
            self.name = name
            self.labels = labels
            self.value = value
        }
    }

    public struct Problem: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var why: String
        public var description: String { "line \(line): \(why): \(text)" }
    }

    public var types: [String: String] = [:]
    public var helps: Set<String> = []
    public var samples: [Sample] = []

    static func isMetricName(_ s: Substring) -> Bool {
        guard let first = s.first, first.isASCII, first.isLetter || first == "_" || first == ":" else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    static func isLabelName(_ s: Substring) -> Bool {
        guard let first = s.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    public init(parsing text: String) throws {
        guard text.hasSuffix("\n") else { throw Problem(line: 0, text: "", why: "no final line feed") }
        var seriesSeen = Set<String>()
        for (n, line) in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func problem(_ why: String) -> Problem { Problem(line: n + 1, text: String(line), why: why) }
            if line.hasPrefix("# HELP ") {
                let rest = line.dropFirst(7)
                guard let space = rest.firstIndex(of: " "), Self.isMetricName(rest[..<space]) else { throw problem("bad HELP") }
                guard helps.insert(String(rest[..<space])).inserted else { throw problem("second HELP") }
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, Self.isMetricName(parts[0]),
                      ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[1]) else { throw problem("bad TYPE") }
                guard types[String(parts[0])] == nil else { throw problem("second TYPE") }
                guard helps.contains(String(parts[0])) else { throw problem("TYPE without HELP before it") }
                types[String(parts[0])] = String(parts[1])
                continue
            }
            guard !line.hasPrefix("#"), !line.isEmpty else { throw problem("unexpected comment or blank line") }
            // name, optional {labels}, one space, value.
            var i = line.startIndex
            while i < line.endIndex, line[i] != "{", line[i] != " " { i = line.index(after: i) }
            let name = line[..<i]
            guard Self.isMetricName(name) else { throw problem("bad metric name") }
            guard types[String(name)] != nil else { throw problem("sample without a TYPE") }
            var labels: [String: String] = [:]
            if i < line.endIndex, line[i] == "{" {
                i = line.index(after: i)
                while line[i] != "}" {
                    guard let eq = line[i...].firstIndex(of: "=") else { throw problem("label without =") }
                    let labelName = line[i..<eq]
                    guard Self.isLabelName(labelName), line[line.index(after: eq)] == "\"" else { throw problem("bad label") }
                    var j = line.index(eq, offsetBy: 2)
                    var value = ""
                    while line[j] != "\"" {
                        if line[j] == "\\" {
                            j = line.index(after: j)
                            switch line[j] {
                            case "\\": value.append("\\")
                            case "\"": value.append("\"")
                            case "n": value.append("\n")
                            default: throw problem("bad escape")
                            }
                        } else {
                            value.append(line[j])
                        }
                        j = line.index(after: j)
                    }
                    guard labels.updateValue(value, forKey: String(labelName)) == nil else { throw problem("label twice") }
                    i = line.index(after: j)
                    if line[i] == "," { i = line.index(after: i) } else if line[i] != "}" { throw problem("bad label list") }
                }
                i = line.index(after: i)
            }
            guard i < line.endIndex, line[i] == " " else { throw problem("no space before the value") }
            let valueText = line[line.index(after: i)...]
            guard let value = Double(valueText) ?? (valueText == "+Inf" ? .infinity : valueText == "-Inf" ? -.infinity : nil)
            else { throw problem("bad value") }
            if types[String(name)] == "counter" { guard value >= 0 else { throw problem("negative counter") } }
            let series = "\(name)\(labels.sorted { $0.key < $1.key })"
            guard seriesSeen.insert(series).inserted else { throw problem("series twice") }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
    }
}
