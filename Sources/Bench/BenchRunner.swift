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
        public var peers: [Int] = [1, 100, 10_000]
        public var devices: [DeviceUnderTest] = DeviceUnderTest.allCases
        /// Seconds of sending per scenario.
        public var seconds: Double = 2
        /// Run the callgrind probe (needs valgrind; a release build gives figures worth reading).
        public var callgrind = true
        /// How the run was started, for the report.
        public var command: String = "xdpwg bench"

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
    /// The generator's pool holds at most 256 Ki frames of 2 KiB (512 MiB); fewer when the
    /// generator's ceiling times the scenario's seconds needs fewer (`poolFrames`).
    static let maximumPoolFrames = 256 * 1024
    static let generatorCPU = 0

    private let options: Options
    private let say: (String) -> Void
    /// Frames per decrypt pass: one pass lasts about `seconds` at the generator's ceiling.
    private var poolFrames = 4096

    public init(options: Options, output: @escaping (String) -> Void) {
        self.options = options
        say = output
    }

    /// Runs everything and returns the report (the caller writes it).
    public func run() throws -> BenchReport {
        try Prerequisites.check()
        let cpus = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        var report = BenchReport(machine: .current(), command: options.command, secondsPerScenario: options.seconds)
        func list<T>(_ values: [T], _ text: (T) -> String) -> String { values.map(text).joined(separator: "/") }
        let matrix = [list(options.directions) { $0.rawValue }, list(options.sizes) { "\($0) B" },
                      list(options.workers) { "\($0) workers" }, list(options.peers) { "\($0) peers" }]
        say("xdpwg bench: \(list(options.devices) { $0.rawValue }); \(matrix.joined(separator: " × ")); \(cpus) CPUs")

        report.generatorCeilings = try measureCeilings()
        let fastest = report.generatorCeilings.map(\.mpps).max() ?? 1
        poolFrames = min(BenchRunner.maximumPoolFrames, max(4096, Int(fastest * 1e6 * options.seconds * 1.1)))
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

        for size in options.sizes {
            for operation in [SodiumOperation.encrypt, .decrypt] {
                let rate = try SodiumBaseline.measure(operation: operation, size: size, seconds: 1, cpu: cpus > 1 ? 1 : 0)
                report.sodium.append(rate)
                say("libsodium \(operation) \(size) B on one core: \(String(format: "%.3f", rate.mpps)) Mpps")
            }
        }
        if options.callgrind {
            for direction in [Direction.decrypt, .encrypt] {
                for size in options.sizes {
                    do {
                        let count = try CallgrindProbe.measure(executable: options.executable, direction: direction,
                                                               innerSize: size, packets: 2000)
                        report.instructions.append(count)
                        say("callgrind \(direction.rawValue) \(size) B: \(Int(count.instructionsPerPacket)) instructions, "
                            + "\(count.mallocsPerPacket) mallocs per packet")
                    } catch {
                        report.notes.append("callgrind \(direction.rawValue) \(size) B failed: \(error)")
                    }
                }
            }
        }
        return report
    }

    // MARK: Generator ceilings

    /// The generator alone, into a sink on the gateway's uplink (no device), per size: the
    /// rate no device can be measured above.
    private func measureCeilings() throws -> [GeneratorCeiling] {
        let topology = try GatewayTopology(peers: [], maker: .lab)
        defer { topology.close() }
        var ceilings: [GeneratorCeiling] = []
        for size in options.sizes {
            let frames = try LiveFrameBlaster.measureCeiling(
                senderNamespace: topology.internet.name, senderInterface: topology.internetLinkName,
                cpu: BenchRunner.generatorCPU, receiverNamespace: topology.gateway.name,
                receiverInterface: topology.uplinkName, innerSize: size, payload: .wireGuardTransport,
                seconds: min(2, options.seconds))
            ceilings.append(GeneratorCeiling(direction: .decrypt, innerSize: size, mpps: frames.receivedPerSecond / 1e6,
                                             method: frames.generator))
            say("generator ceiling, \(size) B: \(String(format: "%.3f", frames.receivedPerSecond / 1e6)) Mpps (\(frames.generator))")
            if options.devices.contains(.wireguardGo) && options.directions.contains(where: { $0 != .decrypt }) {
                let datagrams = try DatagramBlaster.measureCeiling(
                    senderNamespace: topology.internet.name, cpu: BenchRunner.generatorCPU,
                    destination: .init(IPAddress(GatewayTopology.gatewayAddress)!, port: BenchRunner.sinkPort),
                    receiverNamespace: topology.gateway.name, receiverInterface: topology.uplinkName,
                    innerSize: size, seconds: min(2, options.seconds))
                ceilings.append(GeneratorCeiling(direction: .encrypt, innerSize: size,
                                                 mpps: datagrams.receivedPerSecond / 1e6, method: datagrams.generator))
                say("generator ceiling, \(size) B: \(String(format: "%.3f", datagrams.receivedPerSecond / 1e6)) Mpps (\(datagrams.generator))")
            }
        }
        return ceilings
    }

    // MARK: One device

    /// A device under test running with its tenant and peers, and where to send and count.
    struct Device {
        var pid: Int32
        /// The tenant's namespace and the interface the tenant sees.
        var tenantNamespace: String
        var tenantInterface: String
        var gatewayPublicKey: PublicKey
        var sealed: Bool
        /// The encrypt direction's generator: AF_XDP into the tenant's veth (xdpwg), or UDP
        /// through the kernel into wireguard-go's TUN.
        var plainByDatagrams: Bool
        /// For AF_XDP frames into the tenant link: the gateway's end of it.
        var tenantPeerMAC: EthernetAddress?
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
            + "\(peers) peers: up in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")

        let internet = topology.internet.name
        let socket = try runInNamespace(internet) {
            try PeerSocket(address: IPAddress(GatewayTopology.internetAddress)!, port: 0)
        }
        defer { socket.close() }
        let gatewayEndpoint = Endpoint(address: IPAddress(GatewayTopology.gatewayAddress)!, port: BenchRunner.listenPort)
        let handshake = try emulator.handshake(over: socket, gateway: gatewayEndpoint,
                                               gatewayPublicKey: device.gatewayPublicKey, timeout: .seconds(120))
        say("    handshakes: \(handshake)")

        let uplinkMAC = try interfaceMAC(namespace: topology.gateway.name, interface: topology.uplinkName)
        let internetMAC = try interfaceMAC(namespace: internet, interface: topology.internetLinkName)
        let decryptSink = try PacketSink(namespace: device.tenantNamespace, interface: device.tenantInterface, match: .innerIP)
        defer { decryptSink.close() }
        let encryptSink = try PacketSink(namespace: internet, interface: topology.internetLinkName, match: .wireGuardTransport)
        defer { encryptSink.close() }
        // Live frames where the receiving end runs an XDP program (xdpwg's uplink): several
        // times the AF_XDP sender's rate. wireguard-go's uplink has none, and live frames
        // would be dropped unseen there: the AF_XDP sender, still far above its rate.
        let transportPool: BlastPool
        let transportBlaster: any PoolBlaster
        if device.plainByDatagrams {
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
            let plain = try plainGenerator(device, scenario: scenario, innerSources: innerSources)
            var offered: UInt64 = 0, delivered: UInt64 = 0, seconds = 0.0, cpu = 0.0
            var passes = 0
            while seconds < options.seconds && passes < 20 {
                passes += 1
                // A new session per pass: counters start over with the new keypair.
                try emulator.handshake(over: socket, gateway: gatewayEndpoint, gatewayPublicKey: device.gatewayPublicKey,
                                       timeout: .seconds(120))
                if scenario.direction != .decrypt {
                    // The gateway, as responder, sends only after the peer's first message.
                    try emulator.sendKeepalives(over: socket, crypto: device.sealed ? .on : .off)
                    usleep(100_000)
                }
                if scenario.direction != .encrypt {
                    try transportPool.removeAll()
                    try emulator.writeTransportFrames(count: poolFrames, layout: layout) { fill in
                        _ = try transportPool.append { fill($0) }
                    }
                }
                let sinks = (try decryptSink.read(), try encryptSink.read())
                let cpuBefore = try BenchRunner.cpuSeconds(pid: device.pid)
                let result: BlastResult
                switch scenario.direction {
                case .decrypt:
                    result = try transportBlaster.run(.once, frames: nil)
                case .encrypt:
                    result = try plain.run(.duration(seconds: options.seconds))
                case .both:
                    let encrypting = try plain.start(.duration(seconds: 3600))
                    let decrypting = try transportBlaster.run(.once, frames: nil)
                    encrypting.requestStop()
                    let encrypted = try encrypting.join()
                    result = BlastResult(sent: decrypting.sent + encrypted.sent, dropped: decrypting.dropped + encrypted.dropped,
                                         seconds: decrypting.seconds, cpuSeconds: decrypting.cpuSeconds + encrypted.cpuSeconds)
                }
                let settled = try BenchRunner.settle(decryptSink, encryptSink)
                let cpuAfter = try BenchRunner.cpuSeconds(pid: device.pid)
                offered += result.sent
                let decryptedNow = settled.0.since(sinks.0).packets
                let encryptedNow = settled.1.since(sinks.1).packets
                switch scenario.direction {
                case .decrypt: delivered += decryptedNow
                case .encrypt: delivered += encryptedNow
                case .both: delivered += decryptedNow + encryptedNow
                }
                seconds += result.seconds
                cpu += cpuAfter - cpuBefore
            }
            let outcome = ScenarioResult(device: kind, scenario: scenario, offeredPackets: offered, deliveredPackets: delivered,
                                         seconds: seconds, cpuSeconds: cpu, generatorCores: 1)
            say("    \(scenario.direction.rawValue) \(scenario.innerSize) B: "
                + String(format: "%.3f Mpps delivered of %.3f offered, %.2f CPU-s per Mpkt",
                         Double(delivered) / max(seconds, 1e-9) / 1e6, Double(offered) / max(seconds, 1e-9) / 1e6,
                         delivered > 0 ? cpu / (Double(delivered) / 1e6) : 0))
            results.append(outcome)
        }
        return results
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
            let gateway = try GatewayProcess(executable: options.executable, in: topology.gateway, configuration: configuration,
                                             arguments: kind == .xdpwgCryptoOff ? ["--bench-crypto-off"] : [], timeout: 120)
            topology.atClose { gateway.stop() }
            let hostMAC = try interfaceMAC(namespace: topology.gateway.name, interface: Gateway.hostLinkName(tenant))
            return Device(pid: gateway.processIdentifier, tenantNamespace: namespace, tenantInterface: tenant,
                          gatewayPublicKey: key.publicKey, sealed: kind == .xdpwg, plainByDatagrams: false,
                          tenantPeerMAC: hostMAC)
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
            return Device(pid: wireGuard.processIdentifier, tenantNamespace: namespace.name, tenantInterface: wireGuard.interface,
                          gatewayPublicKey: key, sealed: true, plainByDatagrams: true, tenantPeerMAC: nil)
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
        let pool = try BlastPool(liveFramesCapacity: innerSources.count)
        for peer in innerSources {
            let builder = try UDPFrameBuilder(sourceMAC: sourceMAC, destinationMAC: hostMAC, source: BenchRunner.tenantAddress,
                                              sourcePort: BenchRunner.sinkPort, destination: peer,
                                              destinationPort: BenchRunner.sinkPort)
            try builder.append(to: pool, ipPacketSize: scenario.innerSize)
        }
        // The tenant link's gateway end runs xdpwg's tenant program: live frames reach it.
        return try LiveFrameBlaster(pool: pool, namespace: device.tenantNamespace, interface: device.tenantInterface,
                                    cpu: BenchRunner.generatorCPU)
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

    /// User plus system time of every thread of `pid` so far (/proc/PID/stat fields 14, 15).
    static func cpuSeconds(pid: Int32) throws -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else {
            throw Failure("cannot read /proc/\(pid)/stat: the device under test is gone")
        }
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else {
            throw Failure("unreadable /proc/\(pid)/stat")
        }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

/// What the encrypt direction's generators have in common.
protocol PlainGenerator {
    func run(_ mode: BlastMode) throws -> BlastResult
    func start(_ mode: BlastMode) throws(LoadError) -> NamespaceThread<BlastResult>
}

extension DatagramBlaster: PlainGenerator {}
extension LiveFrameBlaster: PlainGenerator {
    func start(_ mode: BlastMode) throws(LoadError) -> NamespaceThread<BlastResult> { try start(mode, frames: nil) }
    func run(_ mode: BlastMode) throws -> BlastResult { try run(mode, frames: nil) }
}
