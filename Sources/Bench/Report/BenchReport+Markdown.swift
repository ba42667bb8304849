// The report as Markdown: the machine, one main table per direction, the baselines, callgrind's
// counts, and the issue's targets, each met or missed by how much and where the time goes.
// A scenario that did not run shows "not run" and its reason, never a 0.

import Foundation

/// One of the perf lab's targets (issue 5), checked against a report.
public struct TargetCheck: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        case met
        /// Missed; `shortfallPercent` = (target − worst) / target × 100 for rate targets,
        /// nil for the malloc target (any allocation misses it).
        case missed(shortfallPercent: Double?)
        /// Nothing to check it against in this report, and why.
        case notMeasured(String)
    }

    /// The target, as the report states it.
    public var target: String
    public var verdict: Verdict
    /// What was measured (the worst scenario decides; the best is named too).
    public var measured: String
    /// For a missed target: callgrind's account of the per-packet work, when the report has it.
    public var whereTimeGoes: String?
}

extension BenchReport {
    /// Target 1: per worker core, at least this share of libsodium's single-core rate at 1420 B.
    public static let sodiumShareTarget = 0.90
    /// Target 2: per core, at least this many times wireguard-go at 1420 B.
    public static let wireguardGoRatioTarget = 5.0
    /// Target 3: with crypto off, at least this many Mpps per worker core at 64 B.
    public static let cryptoOffMppsTarget = 4.0

    /// The Markdown report.
    public func markdown() -> String {
        var notes = Footnotes()
        var out = "# xdpwg perf lab\n\n"
        out += "- **Machine:** \(machine.summary)\n"
        var version = machine.xdpwgVersion.map { "xdpwg \($0)" } ?? "xdpwg (version unknown)"
        if let commit = machine.commit { version += " (\(commit))" }
        out += "- **Date:** \(machine.date); \(version)\n"
        out += "- **Command:** `\(command)`\n"
        out += "- **Window:** \(format(secondsPerScenario, "%g")) s per scenario\n\n"
        out += "Rates count delivered packets; Gbps counts inner bytes only (no outer headers). "
        out += "Per core: xdpwg per worker core (Mpps ÷ workers); wireguard-go per CPU-second it used "
        out += "(delivered ÷ its CPU time: the rate of one fully busy core). "
        out += "libsodium: ChaCha20-Poly1305 on one pinned core at the same size (both directions: one "
        out += "encryption and one decryption per packet). \"—\": not part of this run.\n\n"

        let directions = Direction.allCases.filter { d in results.contains { $0.scenario.direction == d } }
        if directions.isEmpty {
            out += "No scenario results in this report.\n\n"
        }
        for direction in directions {
            out += mainTable(direction, notes: &notes)
        }
        out += ceilingsSection()
        out += sodiumSection()
        out += instructionsSection()
        out += targetsSection()
        if !notes.reasons.isEmpty {
            out += "## Not run\n\n"
            for (i, reason) in notes.reasons.enumerated() {
                out += "\(i + 1). \(reason)\n"
            }
            out += "\n"
        }
        if !self.notes.isEmpty {
            out += "## Notes\n\n"
            for note in self.notes { out += "- \(note)\n" }
            out += "\n"
        }
        return out
    }

    // MARK: Sections

    private func mainTable(_ direction: Direction, notes: inout Footnotes) -> String {
        let scenarios = Set(results.filter { $0.scenario.direction == direction }.map(\.scenario))
            .sorted { ($0.innerSize, $0.workers, $0.peers) < ($1.innerSize, $1.workers, $1.peers) }
        var out = "## \(direction.title)\n\n"
        out += "| Inner size | Workers | Peers | xdpwg Mpps | Gbps | CPU-s / Mpkt | crypto-off Mpps | wireguard-go Mpps "
        out += "| xdpwg / wireguard-go per core | xdpwg / crypto-off | xdpwg per core / libsodium |\n"
        out += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        var nearCeiling = false
        for s in scenarios {
            let x = result(.xdpwg, s), off = result(.xdpwgCryptoOff, s), go = result(.wireguardGo, s)
            var xdpwgMpps = cell(x, notes: &notes) { formatMpps($0.mpps) }
            if let mpps = x?.mpps, let ceiling = ceiling(direction, size: s.innerSize), mpps >= 0.9 * ceiling.mpps {
                xdpwgMpps += " †"
                nearCeiling = true
            }
            let row = [
                "\(s.innerSize) B", "\(s.workers)", "\(s.peers)",
                xdpwgMpps,
                cell(x, notes: &notes) { format($0.gbps, "%.2f") },
                cell(x, notes: &notes) { format($0.cpuSecondsPerMillionPackets, "%.3f") },
                cell(off, notes: &notes) { formatMpps($0.mpps) },
                cell(go, notes: &notes) { formatMpps($0.mpps) },
                ratio(x?.mppsPerCore, go?.mppsPerCore),
                ratio(x?.mpps, off?.mpps),
                percent(x?.mppsPerCore, sodiumMpps(direction, size: s.innerSize)),
            ]
            out += "| " + row.joined(separator: " | ") + " |\n"
        }
        if nearCeiling {
            out += "\n† within 10% of the generator's ceiling at this size: the generator, not xdpwg, may be the limit.\n"
        }
        return out + "\n"
    }

    private func ceilingsSection() -> String {
        guard !generatorCeilings.isEmpty else {
            return "## Generator ceilings\n\nNot measured in this run: no rate above can be told apart from the generator's limit.\n\n"
        }
        var out = "## Generator ceilings\n\nThe most the generator offers with no device in the way.\n\n"
        out += "| Direction | Inner size | Mpps | Gbps (inner) | Method |\n|---|---:|---:|---:|---|\n"
        for c in generatorCeilings.sorted(by: { ($0.direction.sortKey, $0.innerSize) < ($1.direction.sortKey, $1.innerSize) }) {
            let gbps = c.mpps * 1e6 * Double(c.innerSize) * 8 / 1e9
            out += "| \(c.direction.rawValue) | \(c.innerSize) B | \(formatMpps(c.mpps)) | \(format(gbps, "%.2f")) | \(c.method) |\n"
        }
        return out + "\n"
    }

    private func sodiumSection() -> String {
        guard !sodium.isEmpty else { return "" }
        var out = "## libsodium ChaCha20-Poly1305, one pinned core\n\n"
        out += "| Operation | Size | Mpps | Gbps |\n|---|---:|---:|---:|\n"
        for r in sodium.sorted(by: { ($0.operation, $0.size) < ($1.operation, $1.size) }) {
            out += "| \(r.operation) | \(r.size) B | \(formatMpps(r.mpps)) | \(format(r.gbps, "%.2f")) |\n"
        }
        return out + "\n"
    }

    private func instructionsSection() -> String {
        guard !instructions.isEmpty else { return "" }
        var out = "## Instructions per packet (callgrind)\n\n"
        out += "The worker's per-packet work on a fixed batch in memory (`xdpwg bench-probe`: arrive + decrypt "
        out += "into a tenant frame, or encrypt into an uplink frame), counted by `valgrind --tool=callgrind`; "
        out += "no rings, syscalls or kernel work. Under valgrind libsodium runs the code valgrind's CPU "
        out += "offers (AVX2 at most).\n\n"
        out += "| Direction | Inner size | Instructions | in libsodium AEAD | rest (pipeline) | mallocs | retains | releases | batch |\n"
        out += "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        let sorted = instructions.sorted { ($0.direction.sortKey, $0.innerSize) < ($1.direction.sortKey, $1.innerSize) }
        for i in sorted {
            let rest = i.instructionsPerPacket - i.cryptoInstructionsPerPacket
            out += "| \(i.direction.rawValue) | \(i.innerSize) B | \(format(i.instructionsPerPacket, "%.0f")) "
            out += "| \(format(i.cryptoInstructionsPerPacket, "%.0f")) (\(share(i.cryptoInstructionsPerPacket, of: i.instructionsPerPacket))) "
            out += "| \(format(rest, "%.0f")) | \(format(i.mallocsPerPacket, "%g")) | \(format(i.retainsPerPacket, "%g")) "
            out += "| \(format(i.releasesPerPacket, "%g")) | \(i.packets) |\n"
        }
        out += "\nHottest functions (own instructions per packet):\n\n"
        for i in sorted where !i.hotFunctions.isEmpty {
            let list = i.hotFunctions.prefix(5).map { "`\($0.name)` \(format($0.instructionsPerPacket, "%.0f"))" }
            out += "- \(i.direction.rawValue) \(i.innerSize) B: " + list.joined(separator: ", ") + "\n"
        }
        return out + "\n"
    }

    private func targetsSection() -> String {
        var out = "## Targets\n\n"
        for check in targetChecks() {
            let verdict: String
            switch check.verdict {
            case .met: verdict = "**met**"
            case .missed(let shortfall?): verdict = "**missed by \(format(shortfall, "%.1f"))%**"
            case .missed(nil): verdict = "**missed**"
            case .notMeasured(let why): verdict = "**not measured**: \(why)"
            }
            out += "- \(check.target): \(verdict)"
            if !check.measured.isEmpty { out += ". \(check.measured)" }
            out += "\n"
            if let why = check.whereTimeGoes { out += "  - Where the time goes: \(why)\n" }
        }
        return out + "\n"
    }

    // MARK: Targets

    /// The issue's targets, each checked against this report. The worst scenario decides a
    /// rate target (a target per core has to hold in every scenario).
    public func targetChecks() -> [TargetCheck] {
        var checks: [TargetCheck] = []
        let large = 1420, small = 64

        for d in [Direction.decrypt, .encrypt] {
            let target = "xdpwg per worker core ≥ \(format(Self.sodiumShareTarget * 100, "%g"))% of libsodium's single-core rate at \(large) B, \(d.rawValue)"
            guard let sodiumRate = sodiumMpps(d, size: large) else {
                checks.append(TargetCheck(target: target, verdict: .notMeasured("no libsodium \(d.rawValue) rate at \(large) B"),
                                          measured: "", whereTimeGoes: nil))
                continue
            }
            checks.append(rateCheck(target: target, device: .xdpwg, direction: d, size: large,
                                    goal: Self.sodiumShareTarget, asPercent: true) { r in
                r.mppsPerCore.map { $0 / sodiumRate }
            })
        }

        for d in Direction.allCases where d != .both || results.contains(where: { $0.scenario.direction == .both }) {
            let target = "xdpwg ≥ \(format(Self.wireguardGoRatioTarget, "%g"))× wireguard-go per core at \(large) B, \(d.rawValue)"
            checks.append(rateCheck(target: target, device: .xdpwg, direction: d, size: large,
                                    goal: Self.wireguardGoRatioTarget, asPercent: false, alsoNeeds: .wireguardGo) { r in
                guard let x = r.mppsPerCore, let go = result(.wireguardGo, r.scenario)?.mppsPerCore, go > 0 else { return nil }
                return x / go
            })
        }

        for d in Direction.allCases where d != .both || results.contains(where: { $0.scenario.direction == .both }) {
            let target = "crypto off ≥ \(format(Self.cryptoOffMppsTarget, "%g")) Mpps per worker core at \(small) B, \(d.rawValue)"
            checks.append(rateCheck(target: target, device: .xdpwgCryptoOff, direction: d, size: small,
                                    goal: Self.cryptoOffMppsTarget, asPercent: false) { $0.mppsPerCore })
        }

        checks.append(mallocCheck())
        return checks
    }

    /// A rate target: `value` of every result of `device` in `direction` at `size` that ran
    /// must reach `goal`. `alsoNeeds`: the other device a ratio target compares with, whose
    /// missing results are reasons too.
    private func rateCheck(target: String, device: DeviceUnderTest, direction: Direction, size: Int, goal: Double,
                           asPercent: Bool, alsoNeeds other: DeviceUnderTest? = nil,
                           value: (ScenarioResult) -> Double?) -> TargetCheck {
        func at(_ d: DeviceUnderTest) -> [ScenarioResult] {
            results.filter { $0.device == d && $0.scenario.direction == direction && $0.scenario.innerSize == size }
        }
        let candidates = at(device)
        let measured = candidates.compactMap { r in value(r).map { (r, $0) } }
        guard let worst = measured.min(by: { $0.1 < $1.1 }), let best = measured.max(by: { $0.1 < $1.1 }) else {
            let involved = [device] + (other.map { [$0] } ?? [])
            let reasons = Set(involved.flatMap { at($0).compactMap(\.notRun) }).sorted()
            let missing = involved.filter { d in !at(d).contains(where: \.ran) }.map(\.rawValue)
            let why = !reasons.isEmpty
                ? "not run: " + reasons.joined(separator: "; ")
                : "no \(missing.joined(separator: " and ")) \(direction.rawValue) result at \(size) B to compare"
            return TargetCheck(target: target, verdict: .notMeasured(why), measured: "", whereTimeGoes: nil)
        }
        func show(_ v: Double) -> String { asPercent ? "\(format(v * 100, "%.1f"))%" : format(v, "%.2f") }
        func at(_ s: Scenario) -> String { "\(s.workers) worker\(s.workers == 1 ? "" : "s"), \(s.peers) peer\(s.peers == 1 ? "" : "s")" }
        var text = "Worst \(show(worst.1)) (\(at(worst.0.scenario)))"
        if measured.count > 1 { text += ", best \(show(best.1)) (\(at(best.0.scenario)))" }
        text += " over \(measured.count) scenario\(measured.count == 1 ? "" : "s")"
        if worst.1 >= goal {
            return TargetCheck(target: target, verdict: .met, measured: text, whereTimeGoes: nil)
        }
        return TargetCheck(target: target, verdict: .missed(shortfallPercent: (goal - worst.1) / goal * 100),
                           measured: text, whereTimeGoes: timeAccount(direction, size: size, cryptoOff: device == .xdpwgCryptoOff))
    }

    private func mallocCheck() -> TargetCheck {
        let target = "zero mallocs per packet in the steady state (callgrind, worker's per-packet work)"
        guard !instructions.isEmpty else {
            return TargetCheck(target: target, verdict: .notMeasured("no callgrind counts in this report"),
                               measured: "", whereTimeGoes: nil)
        }
        let allocating = instructions.filter { $0.mallocsPerPacket > 0 }
        let checked = instructions.map { "\($0.direction.rawValue) \($0.innerSize) B" }.joined(separator: ", ")
        guard let worst = allocating.max(by: { $0.mallocsPerPacket < $1.mallocsPerPacket }) else {
            return TargetCheck(target: target, verdict: .met, measured: "0 in every probe (\(checked))", whereTimeGoes: nil)
        }
        let sites = Set(allocating.flatMap(\.allocatingFunctions)).sorted()
        return TargetCheck(
            target: target, verdict: .missed(shortfallPercent: nil),
            measured: "\(format(worst.mallocsPerPacket, "%g")) per packet at \(worst.direction.rawValue) \(worst.innerSize) B (\(allocating.count) of \(instructions.count) probes allocate)",
            whereTimeGoes: sites.isEmpty ? nil : "allocations called from " + sites.map { "`\($0)`" }.joined(separator: ", "))
    }

    /// Callgrind's account of one packet's work: how much is the cipher, how much the pipeline,
    /// and the hottest functions.
    private func timeAccount(_ direction: Direction, size: Int, cryptoOff: Bool) -> String? {
        let probes = direction == .both ? [Direction.decrypt, .encrypt] : [direction]
        let parts = probes.compactMap { d -> String? in
            guard let i = instructionCount(d, size: size), i.instructionsPerPacket > 0 else { return nil }
            let rest = i.instructionsPerPacket - i.cryptoInstructionsPerPacket
            var text = "callgrind, \(d.rawValue) \(size) B: \(format(i.instructionsPerPacket, "%.0f")) instructions per packet"
            if cryptoOff {
                text += ", of which \(format(rest, "%.0f")) outside the cipher (the pipeline work crypto-off still does); "
                text += "the AF_XDP rings, the kicks (syscalls) and the kernel's side of each frame are not in the probe, "
                text += "so the rest of a crypto-off packet's cost is there"
            } else {
                text += ", \(share(i.cryptoInstructionsPerPacket, of: i.instructionsPerPacket)) in libsodium's ChaCha20-Poly1305, "
                text += "\(format(rest, "%.0f")) in the pipeline around it"
            }
            let hot = i.hotFunctions.prefix(3).map { "`\($0.name)` \(share($0.instructionsPerPacket, of: i.instructionsPerPacket))" }
            if !hot.isEmpty { text += "; hottest: " + hot.joined(separator: ", ") }
            return text
        }
        if parts.isEmpty { return "no callgrind count at \(size) B in this report" }
        return parts.joined(separator: ". ")
    }
}

// MARK: - Formatting

/// Reasons for "not run" cells, numbered in order of first appearance.
struct Footnotes {
    var reasons: [String] = []

    mutating func number(_ reason: String) -> Int {
        if let i = reasons.firstIndex(of: reason) { return i + 1 }
        reasons.append(reason)
        return reasons.count
    }
}

extension Direction {
    var sortKey: Int { Direction.allCases.firstIndex(of: self)! }
}

/// A result's cell: its value, "not run [n]" with the reason numbered, or "—" when the run
/// has no such result.
private func cell(_ r: ScenarioResult?, notes: inout Footnotes, _ value: (ScenarioResult) -> String) -> String {
    guard let r else { return "—" }
    if let reason = r.notRun { return "not run [\(notes.number(reason))]" }
    guard r.ran else { return "not run [\(notes.number("no measured window (0 s)"))]" }
    return value(r)
}

func format(_ value: Double?, _ spec: String) -> String {
    guard let value, value.isFinite else { return "—" }
    return String(format: spec, value)
}

/// Mpps with three significant figures where it matters (0.682, 3.12, 12.4).
func formatMpps(_ value: Double?) -> String {
    guard let value, value.isFinite else { return "—" }
    if value < 1 { return String(format: "%.3f", value) }
    if value < 10 { return String(format: "%.2f", value) }
    return String(format: "%.1f", value)
}

private func ratio(_ a: Double?, _ b: Double?) -> String {
    guard let a, let b, b > 0 else { return "—" }
    return String(format: "%.2f×", a / b)
}

private func percent(_ a: Double?, _ b: Double?) -> String {
    guard let a, let b, b > 0 else { return "—" }
    return String(format: "%.0f%%", a / b * 100)
}

private func share(_ part: Double, of whole: Double) -> String {
    guard whole > 0 else { return "—" }
    return String(format: "%.1f%%", part / whole * 100)
}
