import Engine
import Foundation
import Gateway
import Lab
import WireGuard
#if canImport(Glibc)
import Glibc
#endif

extension BenchRunner {
    // MARK: Baselines

    /// Every AEAD backend's ChaCha20-Poly1305 on one pinned core, at every size, both ways,
    /// out of place as the data path runs it. A backend that fails its self-test here is
    /// left out with a note.
    func measureAEAD(cpu: Int, notes: inout [String]) -> [AEADRate] {
        var rates: [AEADRate] = []
        for backend in AEADBackend.allCases {
            do {
                for size in options.sizes {
                    for operation in AEADOperation.allCases {
                        let rate = try AEADBaseline.measure(backend: backend, operation: operation, size: size,
                                                            inPlace: false, seconds: 0.3, cpu: cpu)
                        rates.append(rate)
                        say("\(backend.name) \(operation.rawValue) \(size) B on one core: \(String(format: "%.3f", rate.mpps)) Mpps")
                    }
                }
            } catch {
                notes.append("AEAD backend \(backend.name) not measured: \(error)")
            }
        }
        return rates
    }

    /// Frames in a sealed-frame pool: 2 KiB each, at most a million (2 GiB of kernel memory),
    /// at most a quarter of the memory available now.
    static func poolCapacity() -> Int {
        let available = Int(sysconf(Int32(_SC_AVPHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        return max(65_536, min(BenchRunner.maximumPoolFrames, available / 4 / BlastPool.frameSize))
    }

    // MARK: Generator ceilings

    /// Each generator alone, by the method and on the kind of path the scenarios use it on,
    /// into a sink that only counts, per size.
    func measureCeilings() throws -> [GeneratorCeiling] {
        let topology = try GatewayTopology(peers: [], maker: .lab)
        defer { topology.close() }
        let seconds = min(1, options.seconds)
        var ceilings: [GeneratorCeiling] = []
        func note(_ direction: Direction, _ size: Int, _ method: String, _ m: CeilingMeasurement) {
            ceilings.append(GeneratorCeiling(direction: direction, innerSize: size, mpps: m.receivedPerSecond / 1e6,
                                             method: method))
            say("generator ceiling, \(direction.rawValue) \(size) B, \(method): \(String(format: "%.3f", m.receivedPerSecond / 1e6)) Mpps")
        }
        let live = LiveFrameBlaster.isSupported
        if !live { say("generators: \(LiveFrameBlaster.unsupportedReason)") }
        // Which generator feeds which path (see runDevice): wireguard-go's uplink has no XDP
        // program, so it always gets the AF_XDP sender; the engines' links get live frames
        // where the kernel runs them.
        var decryptPaths = Set<String>(), encryptPaths = Set<String>()
        for device in options.devices {
            if device == .wireguardGo {
                decryptPaths.insert(Generator.afxdpUplink)
                encryptPaths.insert(Generator.datagrams)
            } else {
                decryptPaths.insert(live ? Generator.liveUplink : Generator.afxdpUplink)
                encryptPaths.insert(live ? Generator.liveTenant : Generator.afxdpTenant)
            }
        }
        for size in options.sizes {
            func measure(_ payload: CeilingPayload, live: Bool) throws -> CeilingMeasurement {
                live ? try LiveFrameBlaster.measureCeiling(
                    senderNamespace: topology.internet.name, senderInterface: topology.internetLinkName,
                    cpu: BenchRunner.generatorCPU, receiverNamespace: topology.gateway.name,
                    receiverInterface: topology.uplinkName, innerSize: size, payload: payload, seconds: seconds)
                : try FrameBlaster.measureCeiling(
                    senderNamespace: topology.internet.name, senderInterface: topology.internetLinkName,
                    cpu: BenchRunner.generatorCPU, receiverNamespace: topology.gateway.name,
                    receiverInterface: topology.uplinkName, innerSize: size, payload: payload, seconds: seconds)
            }
            if options.directions.contains(where: { $0 != .encrypt }) {
                for path in decryptPaths.sorted() {
                    note(.decrypt, size, path, try measure(.wireGuardTransport, live: path == Generator.liveUplink))
                }
            }
            if options.directions.contains(where: { $0 != .decrypt }) {
                // The tenant link's kind of path: a veth into an XDP program at the gateway's
                // end. The uplink pair is one.
                for path in encryptPaths.sorted() where path != Generator.datagrams {
                    note(.encrypt, size, path, try measure(.plainIP, live: path == Generator.liveTenant))
                }
                if encryptPaths.contains(Generator.datagrams) {
                    note(.encrypt, size, Generator.datagrams, try DatagramBlaster.measureCeiling(
                        senderNamespace: topology.internet.name, cpu: BenchRunner.generatorCPU,
                        destination: .init(IPAddress(GatewayTopology.gatewayAddress)!, port: BenchRunner.sinkPort),
                        receiverNamespace: topology.gateway.name, receiverInterface: topology.uplinkName,
                        innerSize: size, seconds: seconds))
                }
            }
        }
        return ceilings
    }

    /// The generators and paths the scenarios use (as the report names them).
    enum Generator {
        static let liveUplink = "XDP live frames → uplink XDP"
        static let afxdpUplink = "AF_XDP TX (copy mode) → uplink"
        static let liveTenant = "XDP live frames → tenant link XDP"
        static let afxdpTenant = "AF_XDP TX (copy mode) → tenant link XDP"
        static let datagrams = "UDP sendmmsg → kernel"
    }
}
