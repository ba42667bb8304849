// libsodium's ChaCha20-Poly1305 (IETF, detached tag) on one pinned thread: the single-core
// rate that bounds what one worker core can decrypt or encrypt. The same calls and nonce
// layout as the data plane (WireGuard's nonce: 4 zero bytes ‖ little-endian counter), out of
// place, no additional data. Benchmarks/ (CoreBenchmarks "libsodium seal/open") times the
// same thing with package-benchmark.

import CSodium
import Engine
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public enum SodiumOperation: String, Codable, CaseIterable, Sendable {
    /// crypto_aead_chacha20poly1305_ietf_encrypt_detached, the counter +1 per message.
    case encrypt
    /// crypto_aead_chacha20poly1305_ietf_decrypt_detached of one valid ciphertext (tag
    /// verified, then decrypted) over and over: a failed verification is an error.
    case decrypt
}

/// Why a baseline could not be measured.
public struct BaselineError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

public enum SodiumBaseline {
    /// Largest message measured: a UMEM frame's worth.
    public static let maximumSize = 65_536

    /// Runs `operation` on `size`-byte messages for `seconds` on one thread pinned to `cpu`
    /// (nil: the first CPU this process may use), after a short untimed warm-up, and returns
    /// the rate. Gbps counts the message bytes (the inner packet), not the tag.
    public static func measure(operation: SodiumOperation, size: Int, seconds: Double,
                               cpu: Int? = nil) throws -> AEADRate {
        guard size >= 1, size <= maximumSize else {
            throw BaselineError("libsodium baseline: size \(size) B must be 1...\(maximumSize)")
        }
        guard seconds.isFinite, seconds > 0, seconds <= 3600 else {
            throw BaselineError("libsodium baseline: seconds \(seconds) must be more than 0 and at most 3600")
        }
        let core = cpu ?? CPUTopology.allowedCores().first ?? 0
        guard CPUTopology.allowedCores().contains(core) else {
            throw BaselineError("libsodium baseline: CPU \(core) is not one this process may run on (allowed: \(CPUTopology.allowedCores().map(String.init).joined(separator: ",")))")
        }
        guard sodium_init() >= 0 else { throw BaselineError("sodium_init failed: libsodium cannot be used") }

        // A thread of its own, so pinning never changes the caller's affinity.
        let box = MeasurementBox()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            do {
                try CPUTopology.pinCurrentThread(to: core)
                CPUTopology.setCurrentThreadName("xdpwg-sodium")
                box.set(.success(try run(operation, size: size, seconds: seconds)))
            } catch {
                box.set(.failure(error))
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
        done.wait()
        let (messages, elapsed) = try box.get()
        let mpps = Double(messages) / elapsed / 1e6
        return AEADRate(backend: "libsodium", operation: operation.rawValue, size: size, mpps: mpps)
    }

    /// The timed loop: messages done and seconds taken. The clock is read every `chunk`
    /// messages (at 1420 B about every 0.2 ms), so reading it costs nothing measurable.
    private static func run(_ operation: SodiumOperation, size: Int, seconds: Double) throws -> (UInt64, Double) {
        let key = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
        let nonce = UnsafeMutablePointer<UInt8>.allocate(capacity: 12)
        let plaintext = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
        let sealed = UnsafeMutablePointer<UInt8>.allocate(capacity: size + 16)
        let output = UnsafeMutablePointer<UInt8>.allocate(capacity: size + 16)
        defer {
            sodium_memzero(key, 32)
            for p in [key, nonce, plaintext, sealed, output] { p.deallocate() }
        }
        randombytes_buf(key, 32)
        randombytes_buf(plaintext, size)
        nonce.initialize(repeating: 0, count: 12)
        // The ciphertext every decryption opens (counter 0).
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(sealed, sealed + size, nil, plaintext, UInt64(size),
                                                           nil, 0, nil, nonce, key)
        var counter: UInt64 = 0
        let chunk = 128

        /// `n` messages; false if a decryption failed its tag check.
        func batch(_ n: Int) -> Bool {
            switch operation {
            case .encrypt:
                for _ in 0..<n {
                    counter &+= 1
                    (UnsafeMutableRawPointer(nonce) + 4).storeBytes(of: counter.littleEndian, as: UInt64.self)
                    crypto_aead_chacha20poly1305_ietf_encrypt_detached(output, output + size, nil, plaintext,
                                                                       UInt64(size), nil, 0, nil, nonce, key)
                }
                return true
            case .decrypt:
                var failed: Int32 = 0
                for _ in 0..<n {
                    failed |= crypto_aead_chacha20poly1305_ietf_decrypt_detached(output, nil, sealed, UInt64(size),
                                                                                 sealed + size, nil, 0, nonce, key)
                }
                return failed == 0
            }
        }

        // Warm-up: caches, the CPU's clock, libsodium's code selection.
        let warmUpEnd = monotonicSeconds() + min(0.2, seconds * 0.1)
        while monotonicSeconds() < warmUpEnd {
            guard batch(chunk) else { throw BaselineError("libsodium rejected a valid \(size)-byte ciphertext") }
        }
        var messages: UInt64 = 0
        let start = monotonicSeconds()
        var now = start
        while now - start < seconds {
            guard batch(chunk) else { throw BaselineError("libsodium rejected a valid \(size)-byte ciphertext") }
            messages += UInt64(chunk)
            now = monotonicSeconds()
        }
        return (messages, now - start)
    }
}

/// Hands the measuring thread's result back (written once before the semaphore is signalled,
/// read after the wait: the semaphore orders the two).
private final class MeasurementBox: @unchecked Sendable {
    private var result: Result<(UInt64, Double), any Error> = .failure(BaselineError("the measuring thread did not report"))
    func set(_ r: Result<(UInt64, Double), any Error>) { result = r }
    func get() throws -> (UInt64, Double) { try result.get() }
}
