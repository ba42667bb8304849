// The perf lab's results: what `xdpwg bench` measured, the baselines beside it, and the
// machine it ran on. One model, three renderings: JSON (schema_version 1, snake_case keys,
// written to Benchmarks/results/), Markdown (BenchReport+Markdown.swift) and a PNG chart
// (BenchReport+Chart.swift).
//
// JSON keys are spelled out in CodingKeys rather than left to an encoder's key strategy, so
// the file has the same names whichever encoder writes or reads it. The computed rates of a
// result (mpps, gbps, ...) are written too, for readers of the JSON (the chart script); they
// are recomputed, not read back.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Which way traffic crosses the gateway.
public enum Direction: String, Codable, CaseIterable, Sendable {
    /// peer → tenant: WireGuard transport messages in on the uplink, inner packets out.
    case decrypt
    /// tenant → peer: inner packets in from a tenant, transport messages out on the uplink.
    case encrypt
    /// Both at once.
    case both

    /// How the report names it.
    public var title: String {
        switch self {
        case .decrypt: "Decrypt (peer → tenant)"
        case .encrypt: "Encrypt (tenant → peer)"
        case .both: "Both directions"
        }
    }
}

/// The gateway whose speed a result is.
public enum DeviceUnderTest: String, Codable, CaseIterable, Sendable {
    case xdpwg
    /// The engine with its bench-only crypto-off mode: the pure AF_XDP forwarding ceiling.
    case xdpwgCryptoOff = "xdpwg-crypto-off"
    case wireguardGo = "wireguard-go"
}

/// One point of the scenario grid.
public struct Scenario: Codable, Hashable, Sendable {
    public var direction: Direction
    /// Bytes of the inner IP packet (what a tenant sends or receives).
    public var innerSize: Int
    /// Worker cores given to the device (xdpwg: pinned workers, one per uplink queue).
    public var workers: Int
    public var peers: Int

    public init(direction: Direction, innerSize: Int, workers: Int, peers: Int) {
        self.direction = direction
        self.innerSize = innerSize
        self.workers = workers
        self.peers = peers
    }

    enum CodingKeys: String, CodingKey {
        case direction
        case innerSize = "inner_size"
        case workers
        case peers
    }
}

/// What one device did in one scenario, over one measured window.
public struct ScenarioResult: Codable, Sendable {
    public var device: DeviceUnderTest
    public var scenario: Scenario
    /// What the generator sent in the window.
    public var offeredPackets: UInt64
    /// What the sink counted.
    public var deliveredPackets: UInt64
    /// The measured window.
    public var seconds: Double
    /// The device's process(es), user + system, in the window.
    public var cpuSeconds: Double
    /// Cores the generator used (its own, never the device's).
    public var generatorCores: Int
    /// Why this scenario could not run here; then the numbers are 0 and every rate is nil.
    public var notRun: String?

    public init(device: DeviceUnderTest, scenario: Scenario, offeredPackets: UInt64, deliveredPackets: UInt64,
                seconds: Double, cpuSeconds: Double, generatorCores: Int, notRun: String? = nil) {
        self.device = device
        self.scenario = scenario
        self.offeredPackets = offeredPackets
        self.deliveredPackets = deliveredPackets
        self.seconds = seconds
        self.cpuSeconds = cpuSeconds
        self.generatorCores = generatorCores
        self.notRun = notRun
    }

    /// A scenario that could not run, with the reason the report shows in its place.
    public static func notRun(_ device: DeviceUnderTest, _ scenario: Scenario, reason: String) -> ScenarioResult {
        ScenarioResult(device: device, scenario: scenario, offeredPackets: 0, deliveredPackets: 0, seconds: 0,
                       cpuSeconds: 0, generatorCores: 0, notRun: reason)
    }

    /// True when it ran and measured a window.
    public var ran: Bool { notRun == nil && seconds > 0 }

    // Rates: nil when the scenario did not run (never 0 in its place).

    /// Delivered millions of packets per second.
    public var mpps: Double? {
        ran ? Double(deliveredPackets) / seconds / 1e6 : nil
    }

    /// Delivered inner bytes × 8 per second, in Gbit/s (outer headers not counted).
    public var gbps: Double? {
        ran ? Double(deliveredPackets) * Double(scenario.innerSize) * 8 / seconds / 1e9 : nil
    }

    /// CPU time the device spent per million delivered packets.
    public var cpuSecondsPerMillionPackets: Double? {
        ran && deliveredPackets > 0 ? cpuSeconds / (Double(deliveredPackets) / 1e6) : nil
    }

    /// Mpps per core. The normalisation differs by device, because they use cores differently:
    /// - xdpwg (and crypto-off): per worker core, `mpps / workers`. Workers are pinned busy
    ///   pollers, each owning a core whether or not it is saturated, so a worker core is the
    ///   unit of cost.
    /// - wireguard-go: per CPU-second used, `delivered / cpuSeconds / 1e6` (the rate of one
    ///   fully busy core). Its goroutines float over all cores and its CPU use is whatever the
    ///   Go scheduler makes of them; its worker count is not a core budget.
    public var mppsPerCore: Double? {
        guard ran else { return nil }
        switch device {
        case .xdpwg, .xdpwgCryptoOff:
            guard scenario.workers > 0 else { return nil }
            return Double(deliveredPackets) / seconds / 1e6 / Double(scenario.workers)
        case .wireguardGo:
            guard cpuSeconds > 0 else { return nil }
            return Double(deliveredPackets) / cpuSeconds / 1e6
        }
    }

    enum CodingKeys: String, CodingKey {
        case device, scenario
        case offeredPackets = "offered_packets"
        case deliveredPackets = "delivered_packets"
        case seconds
        case cpuSeconds = "cpu_seconds"
        case generatorCores = "generator_cores"
        case notRun = "not_run"
    }

    /// The computed rates, written for readers of the JSON; ignored when decoding.
    enum ComputedKeys: String, CodingKey {
        case mpps, gbps
        case cpuSecondsPerMillionPackets = "cpu_seconds_per_million_packets"
        case mppsPerCore = "mpps_per_core"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(device, forKey: .device)
        try c.encode(scenario, forKey: .scenario)
        try c.encode(offeredPackets, forKey: .offeredPackets)
        try c.encode(deliveredPackets, forKey: .deliveredPackets)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(cpuSeconds, forKey: .cpuSeconds)
        try c.encode(generatorCores, forKey: .generatorCores)
        try c.encode(notRun, forKey: .notRun)          // null when it ran: the key is always there
        var computed = encoder.container(keyedBy: ComputedKeys.self)
        try computed.encode(mpps, forKey: .mpps)
        try computed.encode(gbps, forKey: .gbps)
        try computed.encode(cpuSecondsPerMillionPackets, forKey: .cpuSecondsPerMillionPackets)
        try computed.encode(mppsPerCore, forKey: .mppsPerCore)
    }
}

/// The load generator's own ceiling: the most it can offer, measured with no device in the way
/// (into a sink that only counts). A device's rate near it says nothing about the device.
public struct GeneratorCeiling: Codable, Sendable {
    public var direction: Direction
    public var innerSize: Int
    public var mpps: Double
    /// How it was measured (e.g. "bpf_prog_test_run_opts live frames → AF_XDP rxdrop sink, 1 core").
    public var method: String

    public init(direction: Direction, innerSize: Int, mpps: Double, method: String) {
        self.direction = direction
        self.innerSize = innerSize
        self.mpps = mpps
        self.method = method
    }

    enum CodingKeys: String, CodingKey {
        case direction
        case innerSize = "inner_size"
        case mpps, method
    }
}

/// libsodium's ChaCha20-Poly1305 (IETF) on one pinned core: the rate no worker core can beat.
public struct SodiumRate: Codable, Sendable {
    /// "encrypt" or "decrypt" (`SodiumOperation.rawValue`).
    public var operation: String
    /// Message bytes (the inner packet's size).
    public var size: Int
    public var mpps: Double
    public var gbps: Double

    public init(operation: String, size: Int, mpps: Double, gbps: Double) {
        self.operation = operation
        self.size = size
        self.mpps = mpps
        self.gbps = gbps
    }
}

/// One function's share of the measured region, per packet.
public struct HotFunction: Codable, Sendable, Equatable {
    /// Demangled (simplified) when swift-demangle was found, as callgrind names it otherwise.
    public var name: String
    /// Instructions executed in the function itself (not its callees), per packet.
    public var instructionsPerPacket: Double

    public init(name: String, instructionsPerPacket: Double) {
        self.name = name
        self.instructionsPerPacket = instructionsPerPacket
    }

    enum CodingKeys: String, CodingKey {
        case name
        case instructionsPerPacket = "instructions_per_packet"
    }
}

/// Callgrind's count for the worker's per-packet work on a fixed batch (`xdpwg bench-probe`).
public struct InstructionCount: Codable, Sendable {
    public var direction: Direction
    public var innerSize: Int
    public var instructionsPerPacket: Double
    /// Heap allocations per packet (calls into malloc & co. or swift_allocObject from outside
    /// the allocators themselves: one per allocation).
    public var mallocsPerPacket: Double
    public var retainsPerPacket: Double
    public var releasesPerPacket: Double
    // Added beyond the brief:
    /// Packets in the measured batch.
    public var packets: Int
    /// Of `instructionsPerPacket`, those inside libsodium's ChaCha20-Poly1305 calls
    /// (inclusive): the cipher. The rest is the pipeline around it.
    public var cryptoInstructionsPerPacket: Double
    /// The functions with the most instructions of their own, most first.
    public var hotFunctions: [HotFunction]
    /// The functions that called an allocator inside the region (empty when none did).
    public var allocatingFunctions: [String]

    public init(direction: Direction, innerSize: Int, instructionsPerPacket: Double, mallocsPerPacket: Double,
                retainsPerPacket: Double, releasesPerPacket: Double, packets: Int = 0,
                cryptoInstructionsPerPacket: Double = 0, hotFunctions: [HotFunction] = [],
                allocatingFunctions: [String] = []) {
        self.direction = direction
        self.innerSize = innerSize
        self.instructionsPerPacket = instructionsPerPacket
        self.mallocsPerPacket = mallocsPerPacket
        self.retainsPerPacket = retainsPerPacket
        self.releasesPerPacket = releasesPerPacket
        self.packets = packets
        self.cryptoInstructionsPerPacket = cryptoInstructionsPerPacket
        self.hotFunctions = hotFunctions
        self.allocatingFunctions = allocatingFunctions
    }

    enum CodingKeys: String, CodingKey {
        case direction
        case innerSize = "inner_size"
        case instructionsPerPacket = "instructions_per_packet"
        case mallocsPerPacket = "mallocs_per_packet"
        case retainsPerPacket = "retains_per_packet"
        case releasesPerPacket = "releases_per_packet"
        case packets
        case cryptoInstructionsPerPacket = "crypto_instructions_per_packet"
        case hotFunctions = "hot_functions"
        case allocatingFunctions = "allocating_functions"
    }
}

/// The whole report of one `xdpwg bench` run.
public struct BenchReport: Codable, Sendable {
    /// The JSON layout's version; readers refuse any other.
    public static let currentSchemaVersion = 1

    public private(set) var schemaVersion = BenchReport.currentSchemaVersion
    public var machine: MachineDescription
    /// How it was run (the command line, to reproduce it).
    public var command: String
    public var secondsPerScenario: Double
    public var results: [ScenarioResult]
    public var generatorCeilings: [GeneratorCeiling]
    public var sodium: [SodiumRate]
    public var instructions: [InstructionCount]
    /// Free text: caveats, what this machine could not show, the proposed next step.
    public var notes: [String]

    public init(machine: MachineDescription, command: String, secondsPerScenario: Double,
                results: [ScenarioResult] = [], generatorCeilings: [GeneratorCeiling] = [],
                sodium: [SodiumRate] = [], instructions: [InstructionCount] = [], notes: [String] = []) {
        self.machine = machine
        self.command = command
        self.secondsPerScenario = secondsPerScenario
        self.results = results
        self.generatorCeilings = generatorCeilings
        self.sodium = sodium
        self.instructions = instructions
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case machine, command
        case secondsPerScenario = "seconds_per_scenario"
        case results
        case generatorCeilings = "generator_ceilings"
        case sodium, instructions, notes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.decode(Int.self, forKey: .schemaVersion)
        guard version == Self.currentSchemaVersion else {
            throw DecodingError.dataCorruptedError(
                forKey: .schemaVersion, in: c,
                debugDescription: "schema_version \(version) is not supported (this xdpwg reads \(Self.currentSchemaVersion))")
        }
        machine = try c.decode(MachineDescription.self, forKey: .machine)
        command = try c.decode(String.self, forKey: .command)
        secondsPerScenario = try c.decode(Double.self, forKey: .secondsPerScenario)
        results = try c.decode([ScenarioResult].self, forKey: .results)
        generatorCeilings = try c.decode([GeneratorCeiling].self, forKey: .generatorCeilings)
        sodium = try c.decode([SodiumRate].self, forKey: .sodium)
        instructions = try c.decode([InstructionCount].self, forKey: .instructions)
        notes = try c.decode([String].self, forKey: .notes)
    }

    // MARK: JSON

    /// The report as pretty-printed JSON with sorted keys (stable diffs between runs).
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            return try encoder.encode(self)
        } catch {
            // Only non-finite doubles can fail here: name them instead of Foundation's dump.
            throw BenchReportError.encoding("the report cannot be written as JSON (a NaN or infinite number?): \(error)")
        }
    }

    /// Writes `jsonData()` (plus a final newline) to `path`, replacing the file.
    public func writeJSON(to path: String) throws {
        try writeFileAtomically(Array(try jsonData()) + [0x0a], to: path)
    }

    /// Writes `markdown()` to `path`, replacing the file.
    public func writeMarkdown(to path: String) throws {
        try writeFileAtomically(Array(markdown().utf8), to: path)
    }

    /// Reads a report written by `writeJSON(to:)`.
    public static func read(from path: String) throws -> BenchReport {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = access(path, R_OK) == 0 ? "unreadable" : errnoText()
            throw BenchReportError.readFailed(path: path, reason: reason)
        }
        do {
            return try JSONDecoder().decode(BenchReport.self, from: data)
        } catch let DecodingError.dataCorrupted(context) {
            throw BenchReportError.readFailed(path: path, reason: context.debugDescription)
        } catch {
            throw BenchReportError.readFailed(path: path, reason: "not a bench report: \(error)")
        }
    }

    // MARK: Lookups the renderings share

    /// The result of `device` in `scenario`, if the run has one.
    public func result(_ device: DeviceUnderTest, _ scenario: Scenario) -> ScenarioResult? {
        results.first { $0.device == device && $0.scenario == scenario }
    }

    /// libsodium's single-core rate for the work a packet of `size` bytes needs in `direction`:
    /// decrypt, encrypt, or for both directions one of each (2 / (1/encrypt + 1/decrypt): the
    /// time per packet averaged over the two).
    public func sodiumMpps(_ direction: Direction, size: Int) -> Double? {
        func rate(_ op: SodiumOperation) -> Double? {
            sodium.first { $0.operation == op.rawValue && $0.size == size }?.mpps
        }
        switch direction {
        case .decrypt: return rate(.decrypt)
        case .encrypt: return rate(.encrypt)
        case .both:
            guard let e = rate(.encrypt), let d = rate(.decrypt), e > 0, d > 0 else { return nil }
            return 2 / (1 / e + 1 / d)
        }
    }

    /// The generator's ceiling in `direction` at `size`, if measured.
    public func ceiling(_ direction: Direction, size: Int) -> GeneratorCeiling? {
        generatorCeilings.first { $0.direction == direction && $0.innerSize == size }
    }

    /// Callgrind's count in `direction` at `size`, if measured.
    public func instructionCount(_ direction: Direction, size: Int) -> InstructionCount? {
        instructions.first { $0.direction == direction && $0.innerSize == size }
    }
}

/// What can go wrong writing, reading or drawing a report; every case says what and why.
public enum BenchReportError: Error, CustomStringConvertible, Equatable {
    case encoding(String)
    case writeFailed(path: String, reason: String)
    case readFailed(path: String, reason: String)
    /// No python3 interpreter at all.
    case pythonMissing(tried: [String])
    /// python3 found, but none of the interpreters can import matplotlib.
    case matplotlibMissing(tried: [String])
    case chartFailed(status: Int32, standardError: String)

    public var description: String {
        switch self {
        case .encoding(let reason): reason
        case .writeFailed(let path, let reason): "cannot write \(path): \(reason)"
        case .readFailed(let path, let reason): "cannot read the bench report \(path): \(reason)"
        case .pythonMissing(let tried):
            "cannot draw the chart: no python3 (looked for \(tried.joined(separator: ", "))): install the Debian packages python3 and python3-matplotlib (scripts/install-deps.sh)"
        case .matplotlibMissing(let tried):
            "cannot draw the chart: matplotlib is not importable by \(tried.joined(separator: " or ")): install the Debian package python3-matplotlib (scripts/install-deps.sh; apt-get install --no-install-recommends python3-matplotlib)"
        case .chartFailed(let status, let standardError):
            "the chart script exited \(status): \(standardError.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }
}
