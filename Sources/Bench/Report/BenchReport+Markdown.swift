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
    /// Crypto off, per core, at least this share of the reference forwarder (64 and 1420 B).
    public static let engineShareTarget = 0.90
    /// Crypto on, per core, at least this share of the combined bound at 1420 B.
    public static let combinedBoundShareTarget = 0.85
    /// Per core, at least this many times wireguard-go: at 1420 B, and at 64 B.
    public static let wireguardGoRatioTargetLarge = 3.0
    public static let wireguardGoRatioTargetSmall = 4.0

    /// The Markdown report.
    public func markdown() -> String {
        var notes = Footnotes()
        var out = "# xdpwg perf lab\n\n"
        out += "- **Machine:** \(machine.summary)\n"
        var version = machine.xdpwgVersion.map { "xdpwg \($0)" } ?? "xdpwg (version unknown)"
        version += " at \(machine.commit ?? "an unknown commit"), \(build) build"
        out += "- **Date:** \(machine.date); \(version)\n"
        out += "- **Command:** `\(command)`\n"
        out += "- **Window:** \(format(secondsPerScenario, "%g")) s per scenario, measured in the middle of a "
        out += "constant offered load after a discarded warm-up\n\n"
        out += "Mpps counts packets delivered in the window; offered is what the generator sent in it, loss the "
        out += "share not delivered. Per core is the same for every device: delivered packets ÷ busy time of the cores "
        out += "it is pinned to (its threads and the kernel's work there, softirq included: /proc/stat, each tick "
        out += "counted once), i.e. the rate of one fully busy core. "
        out += "Engine: the reference forwarder (C, libxdp, same links, cores, rings and batches, no crypto). "
        out += "Bound: 1 / (1 / AEAD rate + 1 / engine rate), per core, with the AEAD backend xdpwg used. "
        out += "† the generator, not the device, set the figure (within 10% of its ceiling); "
        out += "≥ the device delivered all it was offered (a lower bound). \"—\": not part of this run.\n\n"

        let directions = Direction.allCases.filter { d in results.contains { $0.scenario.direction == d } }
        if directions.isEmpty {
            out += "No scenario results in this report.\n\n"
        }
        for direction in directions {
            out += mainTable(direction, notes: &notes)
        }
        out += detailSection(notes: &notes)
        out += ceilingsSection()
        out += aeadSection()
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
        out += "| Inner size | Workers | Peers | xdpwg Mpps | Gbps | per core | crypto-off per core | engine per core "
        out += "| wireguard-go per core | crypto-off / engine | xdpwg / bound | xdpwg / wireguard-go |\n"
        out += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for s in scenarios {
            let x = result(.xdpwg, s), off = result(.xdpwgCryptoOff, s)
            let engine = result(.referenceForwarder, s), go = result(.wireguardGo, s)
            let cells = [
                "\(s.innerSize) B", "\(s.workers)", "\(s.peers)",
                cell(x, notes: &notes) { marked($0, formatMpps($0.mpps)) },
                cell(x, notes: &notes) { format($0.gbps, "%.2f") },
                cell(x, notes: &notes) { marked($0, formatMpps($0.mppsPerCore)) },
                cell(off, notes: &notes) { marked($0, formatMpps($0.mppsPerCore)) },
                cell(engine, notes: &notes) { marked($0, formatMpps($0.mppsPerCore)) },
                cell(go, notes: &notes) { marked($0, formatMpps($0.mppsPerCore)) },
                ratio(off?.mppsPerCore, engine?.mppsPerCore),
                ratio(x?.mppsPerCore, combinedBoundMpps(s)),
                ratio(x?.mppsPerCore, go?.mppsPerCore),
            ]
            out += "| " + cells.joined(separator: " | ") + " |\n"
        }
        return out + "\n"
    }

    /// Every result's load and cost: offered, loss, CPU, and where the time went.
    private func detailSection(notes: inout Footnotes) -> String {
        let ran = results.filter(\.ran)
        guard !ran.isEmpty else { return "" }
        var out = "## Load and cost of every figure\n\n"
        out += "| Device | Direction | Size | Workers | Peers | Offered Mpps | Delivered Mpps | Loss | Window s "
        out += "| CPU µs / packet | core busy s (threads, softirq) | Generator (ceiling Mpps) | AEAD |\n"
        out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
        let sorted = ran.sorted {
            ($0.scenario.direction.sortKey, $0.scenario.innerSize, $0.scenario.workers, $0.device.sortKey)
                < ($1.scenario.direction.sortKey, $1.scenario.innerSize, $1.scenario.workers, $1.device.sortKey)
        }
        for r in sorted {
            let busy = "\(format(r.coreBusySeconds, "%.2f")) (\(format(r.cpuSeconds, "%.2f")), \(format(r.softirqSeconds, "%.2f")))"
            let cells = [
                r.device.rawValue, r.scenario.direction.rawValue, "\(r.scenario.innerSize) B", "\(r.scenario.workers)",
                "\(r.scenario.peers)", formatMpps(r.offeredMpps), marked(r, formatMpps(r.mpps)),
                r.loss.map { String(format: "%.1f%%", $0 * 100) } ?? "—", format(r.seconds, "%.2f"),
                format(r.cpuMicrosecondsPerPacket, "%.3f"), busy,
                "\(r.generator) (\(formatMpps(r.generatorCeilingMpps)))", r.aead ?? "—",
            ]
            out += "| " + cells.joined(separator: " | ") + " |\n"
        }
        let profiled = sorted.filter { $0.profile != nil }
        if !profiled.isEmpty {
            out += "\nWhere each device's core spent the window (`perf record -e cpu-clock` on its cores, "
            out += "share of busy samples):\n\n"
            for r in profiled {
                out += "- \(r.device.rawValue) \(r.scenario.direction.rawValue) \(r.scenario.innerSize) B: \(r.profile!)\n"
            }
        }
        return out + "\n"
    }

    private func ceilingsSection() -> String {
        guard !generatorCeilings.isEmpty else {
            return "## Generator ceilings\n\nNot measured in this run: no rate above can be told apart from "
                + "the generator's limit.\n\n"
        }
        var out = "## Generator ceilings\n\nEach generator alone, on the path it is used with, into a sink that only "
        out += "counts (no device in the way): the most it offers.\n\n"
        out += "| Direction | Inner size | Mpps | Generator and path |\n|---|---:|---:|---|\n"
        for c in generatorCeilings.sorted(by: { ($0.direction.sortKey, $0.innerSize, $0.method) < ($1.direction.sortKey, $1.innerSize, $1.method) }) {
            out += "| \(c.direction.rawValue) | \(c.innerSize) B | \(formatMpps(c.mpps)) | \(c.method) |\n"
        }
        return out + "\n"
    }

    private func aeadSection() -> String {
        guard !aead.isEmpty else { return "" }
        var out = "## ChaCha20-Poly1305 backends, one pinned core\n\n"
        out += "Single packets, out of place, the key and the WireGuard nonce as the data path uses them "
        out += "(seal: the encrypt direction's work, open: the decrypt direction's).\n\n"
        let rates = aead.filter { !$0.inPlace }
        let backends = Array(Set(rates.map(\.backend))).sorted()
        let rows = Array(Set(rates.map { "\($0.operation)|\($0.size)" })).map { key -> (String, Int) in
            let parts = key.split(separator: "|")
            return (String(parts[0]), Int(parts[1]) ?? 0)
        }
        out += "| Operation | Size | " + backends.map { "\($0) Mpps" }.joined(separator: " | ") + " |\n"
        out += "|---|---:|" + backends.map { _ in "---:" }.joined(separator: "|") + "|\n"
        for (operation, size) in rows.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) {
            let cells = backends.map { b in formatMpps(rates.first { $0.backend == b && $0.operation == operation && $0.size == size }?.mpps) }
            out += "| \(operation) | \(size) B | " + cells.joined(separator: " | ") + " |\n"
        }
        return out + "\n"
    }

    private func instructionsSection() -> String {
        guard !instructions.isEmpty else { return "" }
        var out = "## Instructions per packet (callgrind)\n\n"
        out += "The worker's per-packet work on a fixed batch in memory (`xdpwg bench-probe`: arrive + decrypt "
        out += "into a tenant frame, or encrypt into an uplink frame), counted by `valgrind --tool=callgrind`; "
        out += "no rings, syscalls or kernel work (the sampled profiles above show those). Under valgrind the "
        out += "AEAD runs the code valgrind's CPU offers (AVX2 at most).\n\n"
        out += "| Direction | Inner size | Crypto | Instructions | in the AEAD | rest (pipeline) | mallocs | retains | releases | batch |\n"
        out += "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n"
        let sorted = instructions.sorted {
            ($0.direction.sortKey, $0.innerSize, $0.cryptoOff ? 1 : 0) < ($1.direction.sortKey, $1.innerSize, $1.cryptoOff ? 1 : 0)
        }
        for i in sorted {
            let rest = i.instructionsPerPacket - i.cryptoInstructionsPerPacket
            out += "| \(i.direction.rawValue) | \(i.innerSize) B | \(i.cryptoOff ? "off" : "libsodium") | \(format(i.instructionsPerPacket, "%.0f")) "
            out += "| \(format(i.cryptoInstructionsPerPacket, "%.0f")) (\(share(i.cryptoInstructionsPerPacket, of: i.instructionsPerPacket))) "
            out += "| \(format(rest, "%.0f")) | \(format(i.mallocsPerPacket, "%g")) | \(format(i.retainsPerPacket, "%g")) "
            out += "| \(format(i.releasesPerPacket, "%g")) | \(i.packets) |\n"
        }
        out += "\nHottest functions (own instructions per packet):\n\n"
        for i in sorted where !i.hotFunctions.isEmpty {
            let list = i.hotFunctions.prefix(5).map { "`\($0.name)` \(format($0.instructionsPerPacket, "%.0f"))" }
            out += "- \(i.direction.rawValue) \(i.innerSize) B\(i.cryptoOff ? ", crypto off" : ""): " + list.joined(separator: ", ") + "\n"
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
        let directions = [Direction.decrypt, .encrypt]

        for d in directions {
            for size in [small, large] {
                let target = "xdpwg crypto-off ≥ \(format(Self.engineShareTarget, "%g")) × the reference forwarder per core, \(d.rawValue) \(size) B"
                checks.append(rateCheck(target: target, device: .xdpwgCryptoOff, direction: d, size: size,
                                        goal: Self.engineShareTarget, asPercent: false, alsoNeeds: .referenceForwarder) { r in
                    guard let x = r.mppsPerCore, let e = result(.referenceForwarder, r.scenario)?.mppsPerCore, e > 0 else { return nil }
                    return x / e
                })
            }
        }
        for d in directions {
            let target = "xdpwg ≥ \(format(Self.combinedBoundShareTarget, "%g")) × the combined bound (AEAD + engine) per core, \(d.rawValue) \(large) B"
            checks.append(rateCheck(target: target, device: .xdpwg, direction: d, size: large,
                                    goal: Self.combinedBoundShareTarget, asPercent: false, alsoNeeds: .referenceForwarder) { r in
                guard let x = r.mppsPerCore, let bound = combinedBoundMpps(r.scenario) else { return nil }
                return x / bound
            })
        }
        for d in directions {
            for (size, goal) in [(large, Self.wireguardGoRatioTargetLarge), (small, Self.wireguardGoRatioTargetSmall)] {
                let target = "xdpwg ≥ \(format(goal, "%g"))× wireguard-go per core, \(d.rawValue) \(size) B"
                checks.append(rateCheck(target: target, device: .xdpwg, direction: d, size: size,
                                        goal: goal, asPercent: false, alsoNeeds: .wireguardGo) { r in
                    guard let x = r.mppsPerCore, let go = result(.wireguardGo, r.scenario)?.mppsPerCore, go > 0 else { return nil }
                    return x / go
                })
            }
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
        func bounded(_ r: ScenarioResult?) -> Bool { r.map { $0.boundedByGenerator || $0.boundedByOffer } ?? false }
        var text = "Worst \(show(worst.1)) (\(at(worst.0.scenario)))"
        if measured.count > 1 { text += ", best \(show(best.1)) (\(at(best.0.scenario)))" }
        text += " over \(measured.count) scenario\(measured.count == 1 ? "" : "s")"
        // A figure the load set (not the device) is a lower bound of the device's rate: as the
        // numerator it makes the ratio a lower bound, as the denominator an upper bound. Met
        // needs a denominator that is the device's own; missed a numerator that is.
        let numeratorBounded = bounded(worst.0)
        let denominatorBounded = bounded(other.flatMap { result($0, worst.0.scenario) })
        if worst.1 >= goal {
            if denominatorBounded {
                return TargetCheck(target: target, verdict: .notMeasured(
                    "not decidable here: the \(other?.rawValue ?? "") figure is bounded by the load (the device was not "
                        + "saturated), so the ratio \(show(worst.1)) is only an upper bound"), measured: text, whereTimeGoes: nil)
            }
            return TargetCheck(target: target, verdict: .met, measured: text + (numeratorBounded ? " (a lower bound)" : ""),
                               whereTimeGoes: nil)
        }
        if numeratorBounded {
            return TargetCheck(target: target, verdict: .notMeasured(
                "not decidable here: the \(device.rawValue) figure is bounded by the load (the device was not saturated), "
                    + "so the ratio \(show(worst.1)) is only a lower bound"), measured: text, whereTimeGoes: nil)
        }
        // Where the time goes: the sampled profile of the worst figure's cores (kernel included),
        // then callgrind's instruction count of the per-packet work.
        var account: [String] = []
        if let profile = worst.0.profile { account.append("perf on the \(device.rawValue) core(s): \(profile)") }
        if let other, let profile = result(other, worst.0.scenario)?.profile {
            account.append("perf on the \(other.rawValue) core(s): \(profile)")
        }
        if let callgrind = timeAccount(direction, size: size, cryptoOff: device == .xdpwgCryptoOff) { account.append(callgrind) }
        return TargetCheck(target: target, verdict: .missed(shortfallPercent: (goal - worst.1) / goal * 100),
                           measured: text, whereTimeGoes: account.joined(separator: ". "))
    }

    private func mallocCheck() -> TargetCheck {
        let target = "zero mallocs, retains and releases per packet in the steady state (callgrind, worker's per-packet work)"
        guard !instructions.isEmpty else {
            return TargetCheck(target: target, verdict: .notMeasured("no callgrind counts in this report"),
                               measured: "", whereTimeGoes: nil)
        }
        let allocating = instructions.filter { $0.mallocsPerPacket > 0 || $0.retainsPerPacket > 0 || $0.releasesPerPacket > 0 }
        let checked = instructions.map { "\($0.direction.rawValue) \($0.innerSize) B\($0.cryptoOff ? " crypto off" : "")" }
            .joined(separator: ", ")
        guard let worst = allocating.max(by: { $0.mallocsPerPacket < $1.mallocsPerPacket }) else {
            return TargetCheck(target: target, verdict: .met, measured: "0 in every probe (\(checked))", whereTimeGoes: nil)
        }
        let sites = Set(allocating.flatMap(\.allocatingFunctions)).sorted()
        return TargetCheck(
            target: target, verdict: .missed(shortfallPercent: nil),
            measured: "\(format(worst.mallocsPerPacket, "%g")) mallocs, \(format(worst.retainsPerPacket, "%g")) retains, "
                + "\(format(worst.releasesPerPacket, "%g")) releases per packet at \(worst.direction.rawValue) \(worst.innerSize) B "
                + "(\(allocating.count) of \(instructions.count) probes)",
            whereTimeGoes: sites.isEmpty ? nil : "allocations called from " + sites.map { "`\($0)`" }.joined(separator: ", "))
    }

    /// Callgrind's account of one packet's work: how much is the cipher, how much the pipeline,
    /// and the hottest functions.
    private func timeAccount(_ direction: Direction, size: Int, cryptoOff: Bool) -> String? {
        let probes = direction == .both ? [Direction.decrypt, .encrypt] : [direction]
        let parts = probes.compactMap { d -> String? in
            guard let i = instructionCount(d, size: size, cryptoOff: cryptoOff), i.instructionsPerPacket > 0 else { return nil }
            let rest = i.instructionsPerPacket - i.cryptoInstructionsPerPacket
            var text = "callgrind, \(d.rawValue) \(size) B: \(format(i.instructionsPerPacket, "%.0f")) instructions per packet"
            if cryptoOff {
                text += " with crypto off; the AF_XDP rings, the kicks (syscalls) and the kernel's side of each frame "
                text += "are not in the probe (the sampled profile has them)"
            } else {
                text += ", \(share(i.cryptoInstructionsPerPacket, of: i.instructionsPerPacket)) in the AEAD, "
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

extension DeviceUnderTest {
    var sortKey: Int { DeviceUnderTest.allCases.firstIndex(of: self)! }
}

/// A rate with its mark: † set by the generator, ≥ by the offered load.
private func marked(_ r: ScenarioResult, _ text: String) -> String {
    if r.boundedByGenerator { return text + " †" }
    if r.boundedByOffer { return "≥ " + text }
    return text
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
