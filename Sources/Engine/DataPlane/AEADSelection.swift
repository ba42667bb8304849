import WireGuard

/// One transport AEAD backend as found on this machine: whether it set up and passed its
/// self-test, and how fast it sealed.
public struct AEADMeasurement: Sendable, Equatable {
    public var backend: AEADBackend
    /// The linked library and its version (`AEADBackend.libraryVersion`), with ipsec-mb's code
    /// path for this CPU.
    public var library: String
    /// Why the backend cannot be used (it did not set up, or failed its self-test); nil when it can.
    public var failure: String?
    /// Single-packet seals per second, in millions, of 1420-byte and 64-byte plaintexts on
    /// the calling thread (0 when unusable).
    public var mpps1420: Double
    public var mpps64: Double

    /// What `auto` minimises: the time to seal one 1420-byte and one 64-byte packet, in
    /// nanoseconds. One of each weighs the cipher's throughput on full-MTU packets and its
    /// per-call overhead on small ones (ACKs, keepalives) alike.
    public var cost: Double {
        guard failure == nil, mpps1420 > 0, mpps64 > 0 else { return .infinity }
        return 1e3 / mpps1420 + 1e3 / mpps64
    }

    public var isUsable: Bool { failure == nil }

    /// "openssl 0.49 Mpps at 1420 B, 0.83 Mpps at 64 B", or "openssl unusable (why)".
    public var summary: String {
        if let failure { return "\(backend.name) unusable (\(failure))" }
        return "\(backend.name) \(AEADMeasurement.format(mpps1420)) Mpps at 1420 B, \(AEADMeasurement.format(mpps64)) Mpps at 64 B"
    }

    static func format(_ mpps: Double) -> String {
        let hundredths = Int((mpps * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

/// Which transport AEAD backend runs the data plane (`[Gateway] Crypto`).
///
/// A backend is used only after its known-answer self-test passed on this CPU
/// (`TransportCipher.selfTest`). `auto` then times every verified backend for a few
/// milliseconds (a few thousand single-packet seals at 1420 and 64 bytes, best of three
/// rounds, interleaved so that a busy neighbour on a shared core hurts all alike) and picks
/// the lowest `AEADMeasurement.cost`.
public enum AEADSelection {
    /// Seals per round at each size; three rounds. About 2–8 ms per backend on this class of
    /// machine.
    static let sealsPerRound = (large: 300, small: 1000)
    static let rounds = 3

    /// Every backend: set up, self-tested, and (when usable) timed on the calling thread.
    public static func survey() -> [AEADMeasurement] {
        var measurements: [AEADMeasurement] = AEADBackend.allCases.map { backend in
            var m = AEADMeasurement(backend: backend, library: backend.libraryVersion, failure: nil, mpps1420: 0, mpps64: 0)
            do throws(TransportCipherError) {
                let cipher = try verifiedCipher(backend)
                if let architecture = cipher.architecture { m.library += " (\(architecture))" }
            } catch {
                m.failure = error.reason
            }
            return m
        }
        let buffers = SealBuffers()
        var best = [(large: Double, small: Double)](repeating: (.infinity, .infinity), count: measurements.count)
        for _ in 0..<rounds {
            for (i, m) in measurements.enumerated() where m.isUsable {
                guard let cipher = try? TransportCipher(m.backend) else { continue }
                best[i].large = min(best[i].large, buffers.nanosecondsPerSeal(cipher, size: 1420, count: sealsPerRound.large))
                best[i].small = min(best[i].small, buffers.nanosecondsPerSeal(cipher, size: 64, count: sealsPerRound.small))
            }
        }
        for i in measurements.indices where measurements[i].isUsable {
            measurements[i].mpps1420 = best[i].large.isFinite ? 1e3 / best[i].large : 0
            measurements[i].mpps64 = best[i].small.isFinite ? 1e3 / best[i].small : 0
        }
        return measurements
    }

    /// The usable backend with the lowest cost; nil when none is usable.
    public static func fastest(_ measurements: [AEADMeasurement]) -> AEADBackend? {
        measurements.filter(\.isUsable).min { $0.cost < $1.cost }?.backend
    }

    /// A cipher for `backend` that passed its self-test on this CPU; the error says why not.
    public static func verifiedCipher(_ backend: AEADBackend) throws(TransportCipherError) -> TransportCipher {
        let cipher = try TransportCipher(backend)
        try cipher.selfTest()
        return cipher
    }

    /// The start-up log line's detail: every backend's rates, the chosen one first.
    public static func summary(_ measurements: [AEADMeasurement], chosen: AEADBackend) -> String {
        let ordered = measurements.filter { $0.backend == chosen } + measurements.filter { $0.backend != chosen }
        return ordered.map(\.summary).joined(separator: ", ")
    }
}

/// Plaintext and output for timing seals, allocated once per survey.
private final class SealBuffers {
    let key = UnsafeMutableRawPointer.allocate(byteCount: AEAD.keySize, alignment: 16)
    let plaintext = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 64)
    let output = UnsafeMutableRawPointer.allocate(byteCount: 2048 + AEAD.tagSize, alignment: 64)

    init() {
        // Any key will do for timing; not a secret of anyone's.
        key.initializeMemory(as: UInt8.self, repeating: 0x5a, count: AEAD.keySize)
        plaintext.initializeMemory(as: UInt8.self, repeating: 0xa5, count: 2048)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: 2048 + AEAD.tagSize)
    }

    deinit {
        key.deallocate()
        plaintext.deallocate()
        output.deallocate()
    }

    /// Average nanoseconds per seal of `count` `size`-byte packets, a new counter each.
    func nanosecondsPerSeal(_ cipher: borrowing TransportCipher, size: Int, count: Int) -> Double {
        let start = Clock.now()
        var ok = true
        for counter in 0..<UInt64(count) {
            ok = cipher.seal(key: key, counter: counter, source: plaintext, length: size, destination: output) && ok
        }
        let elapsed = Clock.now().since(start)
        guard ok else { return .infinity }
        return Double(elapsed.nanoseconds) / Double(count)
    }
}
