import Engine
import Foundation
import Gateway
import Lab
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

/// `xdpwg bench`: every scenario against every device under test, in one run, on one
/// topology, with one generator and one core budget; then the baselines, the instruction
/// counts and the report.
///
///     internet namespace (generator, pinned to CPU 0)        gateway namespace          tenant namespace
///     inet0 192.0.2.1: AF_XDP TX of pre-encrypted frames ══ uplink0 192.0.2.2 ══ device ══ tenant interface: sink
///     sink (WireGuard transport) for the encrypt direction                          ◀══ AF_XDP TX (or UDP for wireguard-go)
///
/// Decrypt: the peer emulator completes a real handshake for every peer, writes a pool of
/// transport frames (peers in turn, counters increasing) into the generator's UMEM and the
/// generator sends each exactly once; a pass is repeated with a new handshake until the
/// scenario has `seconds` of sending. Encrypt: plain IPv4/UDP packets to every peer's inner
/// address, cycled for `seconds`. Both: the two at once. The sinks are XDP programs that count
/// and drop: what they count in the window is what the device delivered; its process's CPU
/// time in the window is what it cost.
public final class BenchRunner: @unchecked Sendable {
    public struct Options: Sendable {
        public var executable: String
        public var directions: [Direction] = Direction.allCases
        public var sizes: [Int] = [64, 512, 1420]
        public var workers: [Int] = [1, 2]
        public var peers: [Int] = [1, 100]
        public var devices: [DeviceUnderTest] = DeviceUnderTest.allCases
        /// Seconds of the measured window per scenario.
        public var seconds: Double = 1
        /// Run the callgrind probe (needs valgrind; a release build gives figures worth reading).
        public var callgrind = true
        /// How the run was started, for the report.
        public var command: String = "xdpwg bench"
        /// The measured binary's source commit (`git describe --always --dirty`) and build.
        public var commit: String?
        public var build: String = "release"
        /// The reference forwarder's executable (Benchmarks/reference-forwarder); without it
        /// that device's scenarios say they did not run.
        public var referenceForwarder: String?

        public init(executable: String) { self.executable = executable }
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    static let tenantAddress = IPAddress("10.20.0.1")!
    static let firstPeerAddress = IPAddress("10.21.0.1")!
    static let sinkPort: UInt16 = 9
    static let listenPort: UInt16 = 51820
    /// A sealed-frame pool holds at most a million frames of 2 KiB (`poolCapacity`).
    static let maximumPoolFrames = 1 << 20
    static let generatorCPU = 0

    let options: Options
    let say: (String) -> Void
    /// Frames a sealed-frame pool holds (`poolCapacity`).
    var poolFrames = 65_536
    /// The generators' ceilings, measured first.
    var generatorCeilings: [GeneratorCeiling] = []

    public init(options: Options, output: @escaping (String) -> Void) {
        self.options = options
        say = output
    }

    /// Runs everything and returns the report (the caller writes it).
    public func run() throws -> BenchReport {
        try Prerequisites.check()
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        var report = BenchReport(machine: .current(commit: options.commit), command: options.command,
                                 secondsPerScenario: options.seconds)
        func list<T>(_ values: [T], _ text: (T) -> String) -> String { values.map(text).joined(separator: "/") }
        let matrix = [list(options.directions) { $0.rawValue }, list(options.sizes) { "\($0) B" },
                      list(options.workers) { "\($0) workers" }, list(options.peers) { "\($0) peers" }]
        say("xdpwg bench: \(list(options.devices) { $0.rawValue }); \(matrix.joined(separator: " × ")); \(cpus) CPUs")

        report.build = options.build
        report.aead = measureAEAD(cpu: cpus > 1 ? 1 : 0, notes: &report.notes)
        report.generatorCeilings = try measureCeilings()
        generatorCeilings = report.generatorCeilings
        // Enough frames for a window at the fastest generator's ceiling, within the memory cap.
        let fastest = (generatorCeilings.map(\.mpps).max() ?? 1) * 1e6
        let loadSeconds = BenchRunner.warmupSeconds + options.seconds + BenchRunner.slack
        poolFrames = min(BenchRunner.poolCapacity(), max(65_536, Int(fastest * loadSeconds)))
        for workers in options.workers {
            for peers in options.peers {
                for device in options.devices {
                    if LabRun.Interrupt.pending() { throw LabRun.Interrupted() }
                    let scenarios = options.directions.flatMap { d in
                        options.sizes.map { Scenario(direction: d, innerSize: $0, workers: workers, peers: peers) }
                    }
                    if workers + 1 > cpus {
                        let reason = "needs \(workers + 1) CPUs (\(workers) worker\(workers == 1 ? "" : "s") and the "
                            + "generator, each on its own core); this machine has \(cpus)"
                        report.results += scenarios.map { .notRun(device, $0, reason: reason) }
                        continue
                    }
                    do {
                        report.results += try runDevice(device, workers: workers, peers: peers, scenarios: scenarios)
                    } catch let interrupted as LabRun.Interrupted {
                        throw interrupted   // Ctrl-C ends the run (the signal was taken: nothing else sees it)
                    } catch {
                        say("  \(device.rawValue), \(workers) worker(s), \(peers) peers: FAILED: \(error)")
                        report.results += scenarios.map { .notRun(device, $0, reason: "failed: \(error)") }
                    }
                }
            }
        }
        if cpus < 3 {
            report.notes.append("This machine has \(cpus) CPUs: the generator takes one, so only 1-worker scenarios ran; "
                                + "the 2-worker scenarios need 3.")
        }
        report.notes.append("veth runs the receive side's XDP program and the copy into the AF_XDP socket in the "
                            + "sender's softirq: that cost lands on the generator's core (as a NIC's DMA and driver "
                            + "would), not on the device under test.")

        if options.callgrind {
            for direction in [Direction.decrypt, .encrypt] {
                for size in options.sizes {
                    for cryptoOff in [false, true] {
                        let variant = "\(direction.rawValue) \(size) B\(cryptoOff ? ", crypto off" : "")"
                        do {
                            let count = try CallgrindProbe.measure(executable: options.executable, direction: direction,
                                                                   innerSize: size, packets: 2000, cryptoOff: cryptoOff)
                            report.instructions.append(count)
                            say("callgrind \(variant): \(Int(count.instructionsPerPacket)) instructions, "
                                + "\(count.mallocsPerPacket) mallocs per packet")
                        } catch {
                            report.notes.append("callgrind \(variant) failed: \(error)")
                        }
                    }
                }
            }
        }
        return report
    }

    // MARK: One device

    /// A device under test running with its tenant and peers, and where to send and count.
    struct Device {
        var kind: DeviceUnderTest
        var pid: Int32
        /// Threads doing the device's work: those whose names start with this (nil: all).
        var threadPrefix: String?
        /// The cores it runs on (their softirq time is its cost too).
        var cores: [Int]
        /// The tenant's namespace and the interface the tenant sees.
        var tenantNamespace: String
        var tenantInterface: String
        /// The gateway's public key (nil: the device speaks no handshake, e.g. the reference forwarder).
        var gatewayPublicKey: PublicKey?
        var sealed: Bool
        /// The encrypt direction's generator: AF_XDP into the tenant's veth (xdpwg), or UDP
        /// through the kernel into wireguard-go's TUN.
        var plainByDatagrams: Bool
        /// For live frames into the tenant link: the gateway's end of it.
        var tenantPeerMAC: EthernetAddress?
        /// The AEAD backend the device reported (xdpwg).
        var aead: String?

        /// The name its code has in a profile (the executable's file name).
        var executableName: String {
            let link = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
            return link.split(separator: "/").last.map(String.init) ?? kind.rawValue
        }
    }

    /// Seconds of load before the window (discarded), and of frames beyond it (the sealed
    /// pool must not run dry before the window ends).
    static let warmupSeconds = 0.3
    static let slack = 0.4
    /// The offered load for transport frames, as a multiple of the rate the device showed in a
    /// calibration burst (at most the generator's ceiling): enough above it to keep it
    /// saturated through the window.
    static let overload = 1.5

    /// What the device delivered and cost up to one instant; two readings bound the window.
    struct Reading {
        var time: Double
        var offered: UInt64?
        var delivered: UInt64
        var threadSeconds: Double
        var softirqSeconds: Double
        var coreBusySeconds: Double
    }

    private func read(_ device: Device, sinks: [PacketSink], offered: () throws -> UInt64?) throws -> Reading {
        let cpus = CPUTimes.now()
        guard let threads = threadCPUSeconds(pid: device.pid, threadPrefix: device.threadPrefix) else {
            throw Failure("the device under test (pid \(device.pid)) is gone")
        }
        let softirq = device.cores.reduce(0.0) { $0 + (cpus[$1].map { $0.softirq + $0.irq } ?? 0) }
        let busy = device.cores.reduce(0.0) { $0 + (cpus[$1]?.busy ?? 0) }
        let delivered = try sinks.reduce(UInt64(0)) { $0 + (try $1.read().packets) }
        return Reading(time: monotonicSeconds(), offered: try offered(), delivered: delivered, threadSeconds: threads,
                       softirqSeconds: softirq, coreBusySeconds: busy)
    }

    private func runDevice(_ kind: DeviceUnderTest, workers: Int, peers: Int, scenarios: [Scenario]) throws -> [ScenarioResult] {
        let topology = try GatewayTopology(peers: [], maker: .lab)
        defer { topology.close() }
        let emulator = try PeerEmulator(peerCount: peers)
        let innerSources = try PeerEmulator.consecutiveIPv4(from: BenchRunner.firstPeerAddress, count: peers)
        let peerSections = try emulator.configurationPeers(allowedIPs: innerSources)
        let cores = Array(1...workers)
        let started = Date()
        let device = try start(kind, topology: topology, cores: cores, peerSections: peerSections)
        say("  \(kind.rawValue), \(workers) worker(s) on core(s) \(cores.map(String.init).joined(separator: ",")), "
            + "\(peers) peers: up in \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
            + (device.aead.map { ", AEAD \($0)" } ?? ""))

        let internet = topology.internet.name
        let socket = try runInNamespace(internet) {
            try PeerSocket(address: IPAddress(GatewayTopology.internetAddress)!, port: 0)
        }
        defer { socket.close() }
        let gatewayEndpoint = Endpoint(address: IPAddress(GatewayTopology.gatewayAddress)!, port: BenchRunner.listenPort)
        func handshake() throws {
            guard let key = device.gatewayPublicKey else {
                emulator.assumeSessions(local: socket.local, gateway: gatewayEndpoint)
                return
            }
            // From the generator's core: a veth picks the far end's RX queue by the sending CPU
            // (XPS), and a gateway with one worker serves queue 0 only.
            _ = try runInNamespace(internet, cpu: BenchRunner.generatorCPU) {
                try emulator.handshake(over: socket, gateway: gatewayEndpoint, gatewayPublicKey: key, timeout: .seconds(120))
            }
        }
        try handshake()

        let uplinkMAC = try interfaceMAC(namespace: topology.gateway.name, interface: topology.uplinkName)
        let internetMAC = try interfaceMAC(namespace: internet, interface: topology.internetLinkName)
        let decryptSink = try PacketSink(namespace: device.tenantNamespace, interface: device.tenantInterface, match: .innerIP)
        defer { decryptSink.close() }
        let encryptSink = try PacketSink(namespace: internet, interface: topology.internetLinkName, match: .wireGuardTransport)
        defer { encryptSink.close() }
        // Live frames where the kernel runs them and the receiving end runs an XDP program
        // (xdpwg's uplink, the reference forwarder's): several times the AF_XDP sender's rate.
        // wireguard-go's uplink has none, and live frames would be dropped unseen there; some
        // kernels refuse live frames altogether: the AF_XDP sender then.
        let transportPool: BlastPool
        let transportBlaster: any PoolBlaster
        if device.plainByDatagrams || !LiveFrameBlaster.isSupported {
            transportPool = try BlastPool(namespace: internet, capacity: poolFrames)
            transportBlaster = try FrameBlaster(pool: transportPool, interface: topology.internetLinkName, queue: 0,
                                                cpu: BenchRunner.generatorCPU)
        } else {
            transportPool = try BlastPool(liveFramesCapacity: poolFrames)
            transportBlaster = try LiveFrameBlaster(pool: transportPool, namespace: internet,
                                                    interface: topology.internetLinkName, cpu: BenchRunner.generatorCPU)
        }

        var results: [ScenarioResult] = []
        for scenario in scenarios {
            if LabRun.Interrupt.pending() { throw LabRun.Interrupted() }
            let layout = TransportFrameLayout(sourceMAC: internetMAC, destinationMAC: uplinkMAC, innerSize: scenario.innerSize,
                                              innerSources: innerSources,
                                              innerDestination: Endpoint(address: BenchRunner.tenantAddress, port: BenchRunner.sinkPort),
                                              sealed: device.sealed)
            let decryptGenerator = transportBlaster is LiveFrameBlaster ? Generator.liveUplink : Generator.afxdpUplink
            let encryptGenerator = device.plainByDatagrams ? Generator.datagrams
                : LiveFrameBlaster.isSupported ? Generator.liveTenant : Generator.afxdpTenant
            var window = options.seconds
            var loads: [RunningLoad] = []
            defer { for load in loads { _ = try? load.stop() } }

            // Everything made before any load starts (calibration, frames), so that the
            // profile and the window see the load alone.
            var plain: (any PlainGenerator)?
            if scenario.direction != .decrypt {
                if device.gatewayPublicKey != nil {
                    // The gateway, as responder, sends only after the peer's first message.
                    let crypto: TransportCrypto = device.sealed ? .on : .off
                    try runInNamespace(internet, cpu: BenchRunner.generatorCPU) {
                        try emulator.sendKeepalives(over: socket, crypto: crypto)
                    }
                    usleep(100_000)
                }
                plain = try plainGenerator(device, scenario: scenario, innerSources: innerSources)
            }
            var transportRate: Double?
            if scenario.direction != .encrypt {
                // Transport frames are sent once each (the replay window refuses a counter
                // twice): a pool made for this window, offered at a constant rate a little
                // above what the device showed it can take.
                let rate = try offeredRate(for: device, scenario: scenario, blaster: transportBlaster, pool: transportPool,
                                           sink: decryptSink, layout: layout, emulator: emulator, handshake: handshake)
                let frames = min(poolFrames, max(4096, Int(rate * (BenchRunner.warmupSeconds + window + BenchRunner.slack))))
                window = min(window, max(0.2, Double(frames) / rate - BenchRunner.warmupSeconds - BenchRunner.slack))
                try handshake()
                try transportPool.removeAll()
                try emulator.writeTransportFrames(count: frames, layout: layout) { fill in
                    _ = try transportPool.append { fill($0) }
                }
                transportRate = rate
            }
            // Where the device's cores spend the load: sampled through warm-up and window.
            var profile: String?
            let profiler: PerfSampler?
            do throws(PerfError) {
                profiler = try PerfSampler.start(cpus: device.cores)
            } catch {
                profiler = nil
                profile = "not measured: \(error)"
            }
            if let plain { loads.append(try plain.startLoad(seconds: 3600)) }
            if let transportRate { loads.append(try transportBlaster.startLoad(.once, rate: transportRate)) }
            let sinks: [PacketSink] = switch scenario.direction {
            case .decrypt: [decryptSink]
            case .encrypt: [encryptSink]
            case .both: [decryptSink, encryptSink]
            }
            let offered: () throws -> UInt64? = {
                var total: UInt64 = 0
                for load in loads {
                    guard let sent = try load.sent() else { return nil }
                    total += sent
                }
                return total
            }
            usleep(useconds_t(BenchRunner.warmupSeconds * 1e6))
            let first = try read(device, sinks: sinks, offered: offered)
            usleep(useconds_t(window * 1e6))
            let last = try read(device, sinks: sinks, offered: offered)
            if let profiler {
                do throws(PerfError) {
                    profile = try profiler.stop(classifier: PerfClassifier(deviceObjects: [device.executableName])).summary
                } catch {
                    profile = "not measured: \(error)"
                }
            }
            var blasts: [BlastResult] = []
            for load in loads { blasts.append(try load.stop()) }
            loads = []
            _ = try BenchRunner.settle(decryptSink, encryptSink)

            let seconds = last.time - first.time
            // Generators that cannot be read mid-blast: their average rate over the blast.
            let offeredPackets: UInt64 = if let a = first.offered, let b = last.offered { b &- a } else {
                UInt64(blasts.reduce(0.0) { $0 + $1.packetsPerSecond } * seconds)
            }
            let generator = scenario.direction == .decrypt ? decryptGenerator
                : scenario.direction == .encrypt ? encryptGenerator : "\(decryptGenerator) + \(encryptGenerator)"
            let ceiling: Double? = scenario.direction == .both ? nil
                : generatorCeilings.first { $0.direction == scenario.direction && $0.innerSize == scenario.innerSize
                    && $0.method == generator }?.mpps
            let outcome = ScenarioResult(
                device: kind, scenario: scenario, offeredPackets: offeredPackets,
                deliveredPackets: last.delivered &- first.delivered, seconds: seconds,
                warmupSeconds: BenchRunner.warmupSeconds, cpuSeconds: last.threadSeconds - first.threadSeconds,
                softirqSeconds: last.softirqSeconds - first.softirqSeconds,
                coreBusySeconds: last.coreBusySeconds - first.coreBusySeconds, generator: generator,
                generatorCeilingMpps: ceiling, aead: device.aead, profile: profile)
            say("    \(scenario.direction.rawValue) \(scenario.innerSize) B: "
                + String(format: "%.3f Mpps delivered of %.3f offered (%.1f%% lost) in %.2f s, %.3f CPU-µs per packet",
                         outcome.mpps ?? 0, outcome.offeredMpps ?? 0, (outcome.loss ?? 0) * 100, seconds,
                         outcome.cpuMicrosecondsPerPacket ?? 0))
            results.append(outcome)
        }
        return results
    }

    /// The constant rate to offer sealed frames at: the device's rate in a calibration burst
    /// (one pass of a small pool at the generator's full speed, until the sink settles) times
    /// `overload`, at most the generator's ceiling.
    private func offeredRate(for device: Device, scenario: Scenario, blaster: any PoolBlaster, pool: BlastPool,
                             sink: PacketSink, layout: TransportFrameLayout, emulator: PeerEmulator,
                             handshake: () throws -> Void) throws -> Double {
        let method = blaster is LiveFrameBlaster ? Generator.liveUplink : Generator.afxdpUplink
        let ceiling = (generatorCeilings.first { $0.direction == .decrypt && $0.innerSize == scenario.innerSize
            && $0.method == method }?.mpps ?? 1) * 1e6
        try handshake()
        try pool.removeAll()
        try emulator.writeTransportFrames(count: min(poolFrames, 65_536), layout: layout) { fill in
            _ = try pool.append { fill($0) }
        }
        let before = try sink.read()
        let began = monotonicSeconds()
        _ = try blaster.run(.once, frames: nil)
        var last = try sink.read(), lastChange = monotonicSeconds()
        while monotonicSeconds() - lastChange < 0.05 {
            usleep(5_000)
            let now = try sink.read()
            if now != last { last = now; lastChange = monotonicSeconds() }
        }
        let delivered = Double(last.since(before).packets)
        let burstRate = delivered / max(lastChange - began, 1e-3)
        guard burstRate > 0 else { throw Failure("the device delivered nothing of a calibration burst") }
        return min(ceiling, burstRate * BenchRunner.overload)
    }

    /// Starts the device with one tenant whose peers are `peerSections`; the topology's
    /// `close()` stops it.
    private func start(_ kind: DeviceUnderTest, topology: GatewayTopology, cores: [Int], peerSections: String) throws -> Device {
        let tag = getpid() % 100_000
        let tenant = "bench\(tag)"
        switch kind {
        case .xdpwg, .xdpwgCryptoOff:
            let namespace = topology.namespaceName(tag: "tenant")
            topology.adoptNamespace(named: namespace)
            let key = PrivateKey.generate()
            let queues = cores.count == 1 ? "0" : "0-\(cores.count - 1)"
            let configuration = """
                # written by xdpwg bench
                [Gateway]
                Uplink = \(topology.uplinkName)
                Queues = \(queues)
                Cores = \(cores.map(String.init).joined(separator: ","))
                Name = \(tenant)

                [Tenant]
                Name = \(tenant)
                PrivateKey = \(key.secret.base64ForDisplay)
                ListenPort = \(BenchRunner.listenPort)
                Namespace = \(namespace)
                Address = \(BenchRunner.tenantAddress)/16

                \(peerSections)
                """
            let gateway = try GatewayProcess(executable: options.executable,
                                             command: kind == .xdpwgCryptoOff ? CryptoOffGateway.commandName : "up",
                                             in: topology.gateway, configuration: configuration, timeout: 120)
            topology.atClose { gateway.stop() }
            let hostMAC = try interfaceMAC(namespace: topology.gateway.name, interface: Gateway.hostLinkName(tenant))
            return Device(kind: kind, pid: gateway.processIdentifier, threadPrefix: "xdpwg-w", cores: cores,
                          tenantNamespace: namespace, tenantInterface: tenant, gatewayPublicKey: key.publicKey,
                          sealed: kind == .xdpwg, plainByDatagrams: false, tenantPeerMAC: hostMAC,
                          aead: kind == .xdpwg ? BenchRunner.cipherInUse(log: gateway.log) : nil)
        case .wireguardGo:
            let namespace = try NetworkNamespace(tag: "tenant", maker: .lab)
            topology.register(namespace)
            let wireGuard = try WireGuardGo(in: topology.gateway, listenPort: Int(BenchRunner.listenPort),
                                            address: "\(BenchRunner.tenantAddress)/16", interfaceNamespace: namespace,
                                            cpus: cores)
            topology.atClose { wireGuard.close() }
            try wireGuard.addConfiguration(peerSections)
            // The encrypt direction's datagrams leave the tenant through the tunnel.
            try namespace.exec(["ip", "route", "add", "10.21.0.0/16", "dev", wireGuard.interface])
            guard let key = PublicKey(base64: wireGuard.publicKey) else { throw Failure("wireguard-go's public key is unreadable") }
            return Device(kind: kind, pid: wireGuard.processIdentifier, threadPrefix: nil, cores: cores,
                          tenantNamespace: namespace.name, tenantInterface: wireGuard.interface, gatewayPublicKey: key,
                          sealed: true, plainByDatagrams: true, tenantPeerMAC: nil, aead: nil)
        case .referenceForwarder:
            guard let executable = options.referenceForwarder else {
                throw Failure("the reference forwarder is not built (scripts/bench.sh builds it; --reference-forwarder PATH)")
            }
            // The tenant link as xdpwg makes it: a veth from the gateway's namespace into the
            // tenant's, NOARP, the tenant's address, a route to the peers, no partial checksums.
            let namespace = try NetworkNamespace(tag: "tenant", maker: .lab)
            topology.register(namespace)
            let host = "refwd\(getpid() % 100_000)", inner = "tenant0"
            try topology.gateway.exec(["ip", "link", "add", host, "type", "veth", "peer", "name", inner])
            try topology.gateway.exec(["ip", "link", "set", inner, "netns", namespace.name])
            try topology.gateway.exec(["ip", "link", "set", host, "up"])
            try namespace.exec(["ip", "link", "set", inner, "arp", "off", "up"])
            try namespace.exec(["ip", "addr", "add", "\(BenchRunner.tenantAddress)/16", "dev", inner])
            let innerMAC = try interfaceMAC(namespace: namespace.name, interface: inner)
            let hostMAC = try interfaceMAC(namespace: topology.gateway.name, interface: host)
            let internetMAC = try interfaceMAC(namespace: topology.internet.name, interface: topology.internetLinkName)
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("xdpwg-refwd-\(getpid()).log")
            let process = try topology.gateway.spawn([
                executable, "--uplink", topology.uplinkName, "--uplink-queue", "0", "--tenant", host, "--tenant-queue", "0",
                "--tenant-mac", "\(innerMAC)", "--port", "\(BenchRunner.listenPort)",
                "--local-ip", GatewayTopology.gatewayAddress, "--peer-ip", GatewayTopology.internetAddress,
                "--peer-port", "\(BenchRunner.listenPort)", "--peer-mac", "\(internetMAC)", "--cpu", "\(cores[0])",
            ], log: log)
            topology.atClose {
                if process.isRunning { kill(process.processIdentifier, SIGTERM) }
                process.waitUntilExit()
                try? FileManager.default.removeItem(at: log)
            }
            let deadline = Date().addingTimeInterval(10)
            while !((try? String(contentsOf: log, encoding: .utf8))?.contains("\"ready\"") ?? false) {
                guard process.isRunning, Date() < deadline else {
                    let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                    throw Failure("the reference forwarder did not come up: \(text)")
                }
                usleep(20_000)
            }
            return Device(kind: kind, pid: process.processIdentifier, threadPrefix: nil, cores: [cores[0]],
                          tenantNamespace: namespace.name, tenantInterface: inner, gatewayPublicKey: nil,
                          sealed: false, plainByDatagrams: false, tenantPeerMAC: hostMAC, aead: nil)
        }
    }

    /// A generator of plain packets from the tenant to every peer's inner address (cycled).
    private func plainGenerator(_ device: Device, scenario: Scenario, innerSources: [IPAddress]) throws -> any PlainGenerator {
        if device.plainByDatagrams {
            return try DatagramBlaster(namespace: device.tenantNamespace, cpu: BenchRunner.generatorCPU,
                                       destinations: innerSources.map { .init($0, port: BenchRunner.sinkPort) },
                                       packetSize: scenario.innerSize)
        }
        guard let hostMAC = device.tenantPeerMAC else { throw Failure("no MAC for the tenant link's gateway end") }
        let sourceMAC = try interfaceMAC(namespace: device.tenantNamespace, interface: device.tenantInterface)
        // The tenant link's gateway end runs the device's XDP program: live frames reach it
        // where the kernel runs them; the AF_XDP sender otherwise.
        let live = LiveFrameBlaster.isSupported
        let pool = live ? try BlastPool(liveFramesCapacity: innerSources.count)
            : try BlastPool(namespace: device.tenantNamespace, capacity: max(innerSources.count, 4096))
        for i in 0..<(live ? innerSources.count : max(innerSources.count, 4096)) {
            let builder = try UDPFrameBuilder(sourceMAC: sourceMAC, destinationMAC: hostMAC, source: BenchRunner.tenantAddress,
                                              sourcePort: BenchRunner.sinkPort, destination: innerSources[i % innerSources.count],
                                              destinationPort: BenchRunner.sinkPort)
            try builder.append(to: pool, ipPacketSize: scenario.innerSize)
        }
        if live {
            return PlainFrames(blaster: try LiveFrameBlaster(pool: pool, namespace: device.tenantNamespace,
                                                             interface: device.tenantInterface, cpu: BenchRunner.generatorCPU))
        }
        return PlainFrames(blaster: try FrameBlaster(pool: pool, interface: device.tenantInterface, queue: 0,
                                                     cpu: BenchRunner.generatorCPU))
    }

    /// The AEAD backend a gateway's log says it chose ("crypto: NAME (…)"), nil if it says none.
    static func cipherInUse(log: String) -> String? {
        for line in log.split(separator: "\n") {
            guard let range = line.range(of: "crypto: ") else { continue }
            let name = line[range.upperBound...].prefix { !$0.isWhitespace }
            if AEADBackend.allCases.contains(where: { $0.name == name }) && !line.contains(" skipped") { return String(name) }
        }
        return nil
    }

    /// Reads both sinks until they stop moving (the device drains its rings), at most 1 s.
    static func settle(_ a: PacketSink, _ b: PacketSink) throws -> (SinkCounters, SinkCounters) {
        var last = (try a.read(), try b.read())
        for _ in 0..<20 {
            usleep(50_000)
            let now = (try a.read(), try b.read())
            if now.0 == last.0 && now.1 == last.1 { return now }
            last = now
        }
        return last
    }
}
