// The perf lab's results: what `xdpwg bench` measured, the baselines beside it, and the
// machine it ran on. One model, three renderings: JSON (schema_version 1, snake_case keys,
// written to Benchmarks/results/), Markdown (BenchReport+Markdown.swift) and a PNG chart
// (BenchReport+Chart.swift).
//
// JSON keys are spelled out in CodingKeys rather than left to an encoder's key strategy, so
// the file has the same names whichever encoder writes or reads it. The computed rates of a
// result (mpps, gbps, ...) are written too, for readers of the JSON (the chart script); they
// are recomputed, not read back.

import Engine
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
    /// The engine with its bench-only crypto-off mode: everything but the AEAD.
    case xdpwgCryptoOff = "xdpwg-crypto-off"
    /// The reference forwarder (Benchmarks/reference-forwarder): a minimal C AF_XDP forwarder
    /// doing the same ring and copy work as xdpwg on the same links, cores, rings and batches,
    /// with no crypto and no tables: the engine ceiling of this machine.
    case referenceForwarder = "reference-forwarder"
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

/// What one device did in one scenario, over one measured window in the middle of a constant
/// offered load (after a discarded warm-up, before the load stops).
public struct ScenarioResult: Codable, Sendable {
    public var device: DeviceUnderTest
    public var scenario: Scenario
    /// What the generator sent in the window.
    public var offeredPackets: UInt64
    /// What the sink counted in the window.
    public var deliveredPackets: UInt64
    /// The measured window.
    public var seconds: Double
    /// The load ran this long before the window (discarded).
    public var warmupSeconds: Double
    /// CPU time (user + system) of the threads that do the device's work, in the window:
    /// xdpwg's workers, the reference forwarder's and wireguard-go's whole process.
    public var cpuSeconds: Double
    /// Softirq and interrupt time on the cores the device runs on, in the window: work the
    /// kernel does there (copy-mode transmit's far end, NAPI), in the device's threads or not.
    public var softirqSeconds: Double
    /// Busy time (user, system, irq, softirq) of the cores the device is pinned to, in the
    /// window: what the device cost, each tick counted once whoever ran there. Threads' CPU
    /// plus softirq would count twice the softirq that interrupted the device's own threads
    /// (tick-based accounting charges it to both: the thread's system time and the core's
    /// softirq), and miss nothing this does not.
    public var coreBusySeconds: Double
    /// The generator and path the load took ("XDP live frames → uplink XDP", ...).
    public var generator: String
    /// That generator's ceiling on that path at this size (nil: not measured).
    public var generatorCeilingMpps: Double?
    /// The AEAD backend the device used (xdpwg), as it reported it.
    public var aead: String?
    /// Where the device's core spent the window (perf, software clock), if measured.
    public var profile: String?
    /// Why this scenario could not run here; then the numbers are 0 and every rate is nil.
    public var notRun: String?

    public init(device: DeviceUnderTest, scenario: Scenario, offeredPackets: UInt64, deliveredPackets: UInt64,
                seconds: Double, warmupSeconds: Double = 0, cpuSeconds: Double, softirqSeconds: Double = 0,
                coreBusySeconds: Double? = nil,
                generator: String = "", generatorCeilingMpps: Double? = nil, aead: String? = nil,
                profile: String? = nil, notRun: String? = nil) {
        self.device = device
        self.scenario = scenario
        self.offeredPackets = offeredPackets
        self.deliveredPackets = deliveredPackets
        self.seconds = seconds
        self.warmupSeconds = warmupSeconds
        self.cpuSeconds = cpuSeconds
        self.softirqSeconds = softirqSeconds
        self.coreBusySeconds = coreBusySeconds ?? cpuSeconds
        self.generator = generator
        self.generatorCeilingMpps = generatorCeilingMpps
        self.aead = aead
        self.profile = profile
        self.notRun = notRun
    }

    /// A scenario that could not run, with the reason the report shows in its place.
    public static func notRun(_ device: DeviceUnderTest, _ scenario: Scenario, reason: String) -> ScenarioResult {
        ScenarioResult(device: device, scenario: scenario, offeredPackets: 0, deliveredPackets: 0, seconds: 0,
                       cpuSeconds: 0, notRun: reason)
    }

    /// True when it ran and measured a window.
    public var ran: Bool { notRun == nil && seconds > 0 }

    // Rates: nil when the scenario did not run (never 0 in its place).

    /// Delivered millions of packets per second.
    public var mpps: Double? {
        ran ? Double(deliveredPackets) / seconds / 1e6 : nil
    }

    /// Offered millions of packets per second.
    public var offeredMpps: Double? {
        ran ? Double(offeredPackets) / seconds / 1e6 : nil
    }

    /// The share of the offered packets not delivered (0 when all were).
    public var loss: Double? {
        guard ran, offeredPackets > 0 else { return nil }
        return max(0, 1 - Double(deliveredPackets) / Double(offeredPackets))
    }

    /// Delivered inner bytes × 8 per second, in Gbit/s (outer headers not counted).
    public var gbps: Double? {
        ran ? Double(deliveredPackets) * Double(scenario.innerSize) * 8 / seconds / 1e9 : nil
    }

    /// CPU microseconds the device's cores spent per delivered packet.
    public var cpuMicrosecondsPerPacket: Double? {
        ran && deliveredPackets > 0 ? coreBusySeconds / Double(deliveredPackets) * 1e6 : nil
    }

    /// Delivered Mpps per busy second of the device's cores (its threads, and the kernel's
    /// work there, softirq included): the rate of one fully busy core, measured the same way
    /// for every device.
    public var mppsPerCore: Double? {
        guard ran, coreBusySeconds > 0 else { return nil }
        return Double(deliveredPackets) / coreBusySeconds / 1e6
    }

    /// Whether the figure says more about the load than the device: the device delivered
    /// within 10% of the generator's ceiling, or it lost (almost) nothing of a load at least
    /// 90% of that ceiling. Such a figure is a lower bound for the device.
    public var boundedByGenerator: Bool {
        guard let mpps, let offered = offeredMpps, let ceiling = generatorCeilingMpps, ceiling > 0 else { return false }
        return mpps >= 0.9 * ceiling || (offered >= 0.9 * ceiling && (loss ?? 0) < 0.02)
    }

    /// Whether the device delivered (almost) all it was offered, below the generator's
    /// ceiling: the offered load, not the device, set the figure (a lower bound).
    public var boundedByOffer: Bool {
        guard let loss else { return false }
        return loss < 0.02 && !boundedByGenerator
    }

    enum CodingKeys: String, CodingKey {
        case device, scenario
        case offeredPackets = "offered_packets"
        case deliveredPackets = "delivered_packets"
        case seconds
        case warmupSeconds = "warmup_seconds"
        case cpuSeconds = "cpu_seconds"
        case softirqSeconds = "softirq_seconds"
        case coreBusySeconds = "core_busy_seconds"
        case generator
        case generatorCeilingMpps = "generator_ceiling_mpps"
        case aead, profile
        case notRun = "not_run"
    }

    /// The computed rates, written for readers of the JSON; ignored when decoding.
    enum ComputedKeys: String, CodingKey {
        case mpps, gbps, loss
        case offeredMpps = "offered_mpps"
        case cpuMicrosecondsPerPacket = "cpu_microseconds_per_packet"
        case mppsPerCore = "mpps_per_core"
        case boundedByGenerator = "bounded_by_generator"
        case boundedByOffer = "bounded_by_offer"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(device, forKey: .device)
        try c.encode(scenario, forKey: .scenario)
        try c.encode(offeredPackets, forKey: .offeredPackets)
        try c.encode(deliveredPackets, forKey: .deliveredPackets)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(warmupSeconds, forKey: .warmupSeconds)
        try c.encode(cpuSeconds, forKey: .cpuSeconds)
        try c.encode(softirqSeconds, forKey: .softirqSeconds)
        try c.encode(coreBusySeconds, forKey: .coreBusySeconds)
        try c.encode(generator, forKey: .generator)
        try c.encode(generatorCeilingMpps, forKey: .generatorCeilingMpps)
        try c.encode(aead, forKey: .aead)
        try c.encode(profile, forKey: .profile)
        try c.encode(notRun, forKey: .notRun)          // null when it ran: the key is always there
        var computed = encoder.container(keyedBy: ComputedKeys.self)
        try computed.encode(mpps, forKey: .mpps)
        try computed.encode(offeredMpps, forKey: .offeredMpps)
        try computed.encode(loss, forKey: .loss)
        try computed.encode(gbps, forKey: .gbps)
        try computed.encode(cpuMicrosecondsPerPacket, forKey: .cpuMicrosecondsPerPacket)
        try computed.encode(mppsPerCore, forKey: .mppsPerCore)
        try computed.encode(boundedByGenerator, forKey: .boundedByGenerator)
        try computed.encode(boundedByOffer, forKey: .boundedByOffer)
    }
}

/// A load generator's own ceiling on one path: the most it offers, measured with no device
/// in the way, by the same method and into the same kind of receiver the scenarios use. A
/// device's rate near it says nothing about the device.
public struct GeneratorCeiling: Codable, Sendable, Equatable {
    public var direction: Direction
    public var innerSize: Int
    public var mpps: Double
    /// The generator and path, as scenario results name theirs (`ScenarioResult.generator`).
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
    /// The crypto-off variant (everything but the AEAD: plaintext and a zero tag).
    public var cryptoOff: Bool
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

    public init(direction: Direction, innerSize: Int, cryptoOff: Bool = false, instructionsPerPacket: Double,
                mallocsPerPacket: Double,
                retainsPerPacket: Double, releasesPerPacket: Double, packets: Int = 0,
                cryptoInstructionsPerPacket: Double = 0, hotFunctions: [HotFunction] = [],
                allocatingFunctions: [String] = []) {
        self.direction = direction
        self.innerSize = innerSize
        self.cryptoOff = cryptoOff
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
        case cryptoOff = "crypto_off"
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
    public static let currentSchemaVersion = 2

    public private(set) var schemaVersion = BenchReport.currentSchemaVersion
    public var machine: MachineDescription
    /// How it was run (the command line, to reproduce it).
    public var command: String
    /// The build configuration of the binary measured ("release", "debug"); its commit is
    /// `machine.commit` (`git describe --always --dirty`).
    public var build: String
    public var secondsPerScenario: Double
    public var results: [ScenarioResult]
    public var generatorCeilings: [GeneratorCeiling]
    public var aead: [AEADRate]
    public var instructions: [InstructionCount]
    /// Free text: caveats, what this machine could not show, the proposed next step.
    public var notes: [String]

    public init(machine: MachineDescription, command: String, build: String = "release",
                secondsPerScenario: Double, results: [ScenarioResult] = [], generatorCeilings: [GeneratorCeiling] = [],
                aead: [AEADRate] = [], instructions: [InstructionCount] = [], notes: [String] = []) {
        self.machine = machine
        self.command = command
        self.build = build
        self.secondsPerScenario = secondsPerScenario
        self.results = results
        self.generatorCeilings = generatorCeilings
        self.aead = aead
        self.instructions = instructions
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case machine, command, build
        case secondsPerScenario = "seconds_per_scenario"
        case results
        case generatorCeilings = "generator_ceilings"
        case aead, instructions, notes
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
        build = try c.decode(String.self, forKey: .build)
        secondsPerScenario = try c.decode(Double.self, forKey: .secondsPerScenario)
        results = try c.decode([ScenarioResult].self, forKey: .results)
        generatorCeilings = try c.decode([GeneratorCeiling].self, forKey: .generatorCeilings)
        aead = try c.decode([AEADRate].self, forKey: .aead)
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

    /// Reads a report written by `writeJSON(to:)`.
    public static func read(from path: String) throws -> BenchReport {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = access(path, R_OK) == 0 ? "unreadable" : Errno.text(errno)
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

    /// An AEAD backend's single-core rate (out of place, as the data path runs it) for the
    /// work a packet of `size` bytes needs in `direction`: open, seal, or for both directions
    /// one of each (2 / (1/seal + 1/open): the time per packet averaged over the two).
    public func aeadMpps(_ backend: String, _ direction: Direction, size: Int) -> Double? {
        func rate(_ operation: AEADOperation) -> Double? {
            aead.first { $0.backend == backend && $0.operation == operation.rawValue && $0.size == size && !$0.inPlace }?.mpps
        }
        switch direction {
        case .decrypt: return rate(.open)
        case .encrypt: return rate(.seal)
        case .both:
            guard let e = rate(.seal), let d = rate(.open), e > 0, d > 0 else { return nil }
            return 2 / (1 / e + 1 / d)
        }
    }

    /// The most a worker core can do when it must run the AEAD and the engine's work one after
    /// the other: 1 / (1 / AEAD rate + 1 / engine ceiling), per core. The AEAD is the backend
    /// xdpwg used in that scenario; the engine ceiling the reference forwarder's per-core rate.
    public func combinedBoundMpps(_ scenario: Scenario) -> Double? {
        guard let backend = result(.xdpwg, scenario)?.aead,
              let cipher = aeadMpps(backend, scenario.direction, size: scenario.innerSize),
              let engine = result(.referenceForwarder, scenario)?.mppsPerCore, cipher > 0, engine > 0
        else { return nil }
        return 1 / (1 / cipher + 1 / engine)
    }

    /// Callgrind's count in `direction` at `size` (with crypto or, `cryptoOff`, without), if measured.
    public func instructionCount(_ direction: Direction, size: Int, cryptoOff: Bool = false) -> InstructionCount? {
        instructions.first { $0.direction == direction && $0.innerSize == size && $0.cryptoOff == cryptoOff }
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
