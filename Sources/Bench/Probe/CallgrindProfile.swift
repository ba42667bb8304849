// A parser for callgrind's output format (valgrind docs, "Callgrind Format Specification"),
// reduced to what the probe needs: the instructions collected, each function's own cost, and
// the calls between functions with their counts and inclusive cost.
//
// The parts of the format that matter here:
//   events: Ir ...           the event columns of every cost line
//   positions: line          how many position columns lead a cost line (default: one)
//   ob=(3) /path/lib.so      the object file of the functions that follow
//   fn=(12) name / fn=(12)   the current function; "(id) name" defines a compressed name,
//                            "(id)" alone refers back to it (cfn= shares fn='s table)
//   cfn=...                  the function the next calls= line calls
//   calls=N target           N calls; the next cost line is the call's inclusive cost,
//                            not the current function's own
//   123 456 / +2 7 / * 3     a cost line: positions (absolute, +/- relative, * same), costs
//   summary: / totals:       the totals of all events (per part; summed over parts)
// Function names get a "'2" suffix for recursion levels (--separate-recs), and GCC's clones
// of a function suffixes like ".constprop.0": names are kept without either.

public struct CallgrindProfile: Sendable, Equatable {
    /// Ir collected: the `totals:` (or `summary:`) lines, or, without them, the sum of all
    /// own costs.
    public var totalInstructions: UInt64
    /// The sum of every function's own Ir (equals `totalInstructions` in a consistent file).
    public var selfInstructionsSum: UInt64
    /// Own Ir by function name.
    public var selfInstructions: [String: UInt64]
    /// Calls by caller, then callee: count and inclusive Ir.
    public var calls: [String: [String: Call]]
    /// The object file (executable or shared library) of each function, where named.
    public var objects: [String: String] = [:]

    public struct Call: Sendable, Equatable {
        public var count: UInt64
        public var inclusiveInstructions: UInt64
    }

    /// Calls to any of `callees` from functions outside `family` (so a call chain inside the
    /// family, such as swift_allocObject → swift_slowAlloc → malloc, counts once).
    public func callCount(to callees: Set<String>, excludingCallersIn family: Set<String>) -> UInt64 {
        var total: UInt64 = 0
        for (caller, arcs) in calls where !family.contains(caller) {
            for (callee, call) in arcs where callees.contains(callee) { total += call.count }
        }
        return total
    }

    /// The callers (outside `family`) of any of `callees`, most calls first.
    public func callers(of callees: Set<String>, excludingCallersIn family: Set<String>) -> [String] {
        var counts: [String: UInt64] = [:]
        for (caller, arcs) in calls where !family.contains(caller) {
            for (callee, call) in arcs where callees.contains(callee) { counts[caller, default: 0] += call.count }
        }
        return counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map(\.key)
    }

    /// Inclusive Ir of calls into functions whose names start with `prefix`, from functions
    /// whose names do not (so nested calls inside the library are not counted twice).
    public func inclusiveInstructions(ofCallsIntoPrefix prefix: String) -> UInt64 {
        var total: UInt64 = 0
        for (caller, arcs) in calls where !caller.hasPrefix(prefix) {
            for (callee, call) in arcs where callee.hasPrefix(prefix) { total += call.inclusiveInstructions }
        }
        return total
    }

    /// Why a file is not a callgrind profile this parser understands (line numbers from 1).
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let line: Int
        public let reason: String
        public var description: String { "callgrind output, line \(line): \(reason)" }
    }

    public static func parse(_ text: String) throws(ParseError) -> CallgrindProfile {
        var irColumn: Int?
        var positionColumns = 1
        var names: [Int: String] = [:]
        var objectNames: [Int: String] = [:]
        var currentObject: String?
        var objects: [String: String] = [:]
        var currentFunction: String?
        var calledFunction: String?
        var pendingCall: (callee: String, count: UInt64)?
        var totalsSum: UInt64?
        var summarySum: UInt64?
        var selfInstructions: [String: UInt64] = [:]
        var calls: [String: [String: Call]] = [:]
        var sawEvents = false

        /// "(12) name" defines, "(12)" refers back, anything else is a plain name.
        func functionName(_ value: Substring, line: Int) throws(ParseError) -> String {
            let value = value.drop { $0 == " " }
            guard value.first == "(" else { return normalised(value) }
            guard let close = value.firstIndex(of: ")"),
                  let id = Int(value[value.index(after: value.startIndex)..<close]) else {
                throw ParseError(line: line, reason: "malformed compressed name \"\(value)\"")
            }
            let rest = value[value.index(after: close)...].drop { $0 == " " }
            if rest.isEmpty {
                guard let known = names[id] else {
                    throw ParseError(line: line, reason: "name (\(id)) used before it was defined")
                }
                return known
            }
            let name = normalised(rest)
            names[id] = name
            return name
        }

        /// The Ir column of a cost line (0 when the line has fewer event columns).
        func irCost(_ fields: [Substring], line: Int) throws(ParseError) -> UInt64 {
            guard let ir = irColumn else { throw ParseError(line: line, reason: "a cost line before the events: line") }
            let index = positionColumns + ir
            guard index < fields.count else { return 0 }
            guard let value = UInt64(fields[index]) else {
                throw ParseError(line: line, reason: "cost \"\(fields[index])\" is not a number")
            }
            return value
        }

        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.last == "\r" ? rawLine.dropLast() : rawLine
            guard let first = line.first, first != "#" else { continue }

            if first.isNumber || first == "+" || first == "-" || first == "*" {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                let cost = try irCost(fields, line: lineNumber)
                if let call = pendingCall {
                    // The inclusive cost of the call just announced.
                    guard let caller = currentFunction else {
                        throw ParseError(line: lineNumber, reason: "calls= outside any fn=")
                    }
                    var arc = calls[caller, default: [:]][call.callee, default: Call(count: 0, inclusiveInstructions: 0)]
                    arc.count += call.count
                    arc.inclusiveInstructions += cost
                    calls[caller, default: [:]][call.callee] = arc
                    pendingCall = nil
                } else {
                    guard let function = currentFunction else {
                        throw ParseError(line: lineNumber, reason: "a cost line outside any fn=")
                    }
                    selfInstructions[function, default: 0] += cost
                }
                continue
            }

            guard let colonOrEquals = line.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw ParseError(line: lineNumber, reason: "unrecognised line \"\(line.prefix(80))\"")
            }
            let key = line[..<colonOrEquals]
            let value = line[line.index(after: colonOrEquals)...]
            switch (key, line[colonOrEquals]) {
            case ("events", ":"):
                let events = value.split(separator: " ")
                guard let ir = events.firstIndex(of: "Ir") else {
                    throw ParseError(line: lineNumber, reason: "no Ir among the events \(events)")
                }
                irColumn = ir
                sawEvents = true
            case ("positions", ":"):
                positionColumns = max(1, value.split(separator: " ").count)
            case ("totals", ":"), ("summary", ":"):
                // One of each per part (summed over parts); totals: wins where both are present.
                let fields = value.split(separator: " ")
                guard let ir = irColumn, ir < fields.count, let v = UInt64(fields[ir]) else {
                    throw ParseError(line: lineNumber, reason: "\(key): without an Ir total")
                }
                if key == "totals" { totalsSum = (totalsSum ?? 0) + v } else { summarySum = (summarySum ?? 0) + v }
            case ("ob", "="):
                // Objects have a compression table of their own.
                let v = value.drop { $0 == " " }
                if v.first == "(", let close = v.firstIndex(of: ")"), let id = Int(v[v.index(after: v.startIndex)..<close]) {
                    let rest = v[v.index(after: close)...].drop { $0 == " " }
                    if !rest.isEmpty { objectNames[id] = String(rest) }
                    currentObject = objectNames[id]
                } else {
                    currentObject = String(v)
                }
            case ("fn", "="):
                let function = try functionName(value, line: lineNumber)
                currentFunction = function
                if let currentObject, objects[function] == nil { objects[function] = currentObject }
                pendingCall = nil
            case ("cfn", "="):
                calledFunction = try functionName(value, line: lineNumber)
            case ("calls", "="):
                guard let callee = calledFunction else {
                    throw ParseError(line: lineNumber, reason: "calls= without a cfn= before it")
                }
                guard let count = value.split(separator: " ").first.flatMap({ UInt64($0) }) else {
                    throw ParseError(line: lineNumber, reason: "calls= without a count")
                }
                pendingCall = (callee, count)
            default:
                // ob=, fl=, fi=, fe=, cob=, cfi=, cfl=, jump=, jcnd=, version:, creator:, pid:,
                // cmd:, part:, desc:, thread:, ...: nothing the counts need.
                break
            }
        }
        guard sawEvents else { throw ParseError(line: lineNumber, reason: "no events: line: not a callgrind profile") }
        let sum = selfInstructions.values.reduce(0, +)
        return CallgrindProfile(totalInstructions: totalsSum ?? summarySum ?? sum, selfInstructionsSum: sum,
                                selfInstructions: selfInstructions, calls: calls, objects: objects)
    }
}

/// A function name without callgrind's recursion suffix ("'2") and without the suffixes GCC
/// gives the clones of a function (glibc's "_mid_memalign.constprop.0"): one function, one name.
private func normalised(_ name: Substring) -> String {
    var name = name
    if let quote = name.lastIndex(of: "'"), quote != name.startIndex, name.index(after: quote) != name.endIndex,
       name[name.index(after: quote)...].allSatisfy(\.isNumber) {
        name = name[..<quote]
    }
    let cloneSuffixes: Set<Substring> = ["constprop", "isra", "part", "cold", "lto_priv", "localalias"]
    var parts = name.split(separator: ".", omittingEmptySubsequences: false)
    while parts.count > 1, let last = parts.last,
          cloneSuffixes.contains(last) || (last.allSatisfy(\.isNumber) && parts.count > 2 && cloneSuffixes.contains(parts[parts.count - 2])) {
        parts.removeLast()
    }
    return parts.count > 1 || name.contains(".") ? parts.joined(separator: ".") : String(name)
}
