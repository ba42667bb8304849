// Each transport cipher backend (libsodium, OpenSSL EVP, ipsec-mb) on one pinned thread,
// single packets: the rate one worker core can seal or open with it, without the data plane
// around it. The same calls as the data plane (`TransportCipher` with WireGuard's nonce, a
// new counter per sealed packet, no additional data). `xdpwg bench-aead` prints the table;
// the perf lab may call `measure` for its report.

import CSodium
import Engine
import Foundation
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

public enum AEADOperation: String, Codable, CaseIterable, Sendable {
    /// `TransportCipher.seal`, the counter +1 per packet.
    case seal
    /// `TransportCipher.open` of one valid message over and over (a failed tag check is an
    /// error). In place, each packet first gets its ciphertext back (a copy of `size` bytes,
    /// timed with it: opening in place overwrites what the next open needs).
    case open
}

/// Why a baseline could not be measured.
public struct BaselineError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// One measured rate. Gbps counts the plaintext bytes, not the tag.
public struct AEADRate: Codable, Sendable, Equatable {
    public var backend: String
    public var operation: String
    public var size: Int
    public var inPlace: Bool
    public var mpps: Double
    public var gbps: Double

    public init(backend: String, operation: String, size: Int, inPlace: Bool, mpps: Double) {
        self.backend = backend
        self.operation = operation
        self.size = size
        self.inPlace = inPlace
        self.mpps = mpps
        gbps = mpps * 1e6 * Double(size) * 8 / 1e9
    }

    enum CodingKeys: String, CodingKey {
        case backend, operation, size
        case inPlace = "in_place"
        case mpps, gbps
    }
}

public enum AEADBaseline {
    /// Largest message measured: a UMEM frame's worth.
    public static let maximumSize = 65_536

    /// Runs `operation` with `backend` on `size`-byte packets for `seconds` on one thread
    /// pinned to `cpu` (nil: the first CPU this process may use), after a short untimed
    /// warm-up. The backend must pass its self-test first.
    public static func measure(backend: AEADBackend, operation: AEADOperation, size: Int, inPlace: Bool,
                               seconds: Double, cpu: Int? = nil) throws -> AEADRate {
        guard size >= 1, size <= maximumSize else {
            throw BaselineError("AEAD baseline: size \(size) B must be 1...\(maximumSize)")
        }
        guard seconds.isFinite, seconds > 0, seconds <= 3600 else {
            throw BaselineError("AEAD baseline: seconds \(seconds) must be more than 0 and at most 3600")
        }
        let core = cpu ?? CPUTopology.allowedCores().first ?? 0
        guard CPUTopology.allowedCores().contains(core) else {
            throw BaselineError("AEAD baseline: CPU \(core) is not one this process may run on (allowed: \(CPUTopology.allowedCores().map(String.init).joined(separator: ",")))")
        }
        // A thread of its own, so pinning never changes the caller's affinity; the cipher is
        // made on it (one per thread, as in the data plane).
        let box = RateBox()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            do {
                try CPUTopology.pinCurrentThread(to: core)
                CPUTopology.setCurrentThreadName("xdpwg-aead")
                let cipher = try AEADSelection.verifiedCipher(backend)
                box.set(.success(try run(cipher, operation, size: size, inPlace: inPlace, seconds: seconds)))
            } catch {
                box.set(.failure(error))
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
        done.wait()
        let (packets, elapsed) = try box.get()
        let mpps = Double(packets) / elapsed / 1e6
        return AEADRate(backend: backend.name, operation: operation.rawValue, size: size, inPlace: inPlace, mpps: mpps)
    }

    /// The timed loop: packets done and seconds taken, the clock read every `chunk` packets.
    private static func run(_ cipher: borrowing TransportCipher, _ operation: AEADOperation, size: Int, inPlace: Bool,
                            seconds: Double) throws -> (UInt64, Double) {
        let key = UnsafeMutableRawPointer.allocate(byteCount: AEAD.keySize, alignment: 16)
        let plaintext = UnsafeMutableRawPointer.allocate(byteCount: size + AEAD.tagSize, alignment: 64)
        let sealed = UnsafeMutableRawPointer.allocate(byteCount: size + AEAD.tagSize, alignment: 64)
        let output = UnsafeMutableRawPointer.allocate(byteCount: size + AEAD.tagSize, alignment: 64)
        defer {
            sodium_memzero(key, AEAD.keySize)
            for p in [key, plaintext, sealed, output] { p.deallocate() }
        }
        randombytes_buf(key, AEAD.keySize)
        randombytes_buf(plaintext, size + AEAD.tagSize)
        // The message every open opens (counter 0).
        guard cipher.seal(key: key, counter: 0, source: plaintext, length: size, destination: sealed) else {
            throw BaselineError("\(cipher.backend) could not seal a \(size)-byte packet")
        }
        var counter: UInt64 = 0
        let chunk = 128

        /// `n` packets; false if something failed.
        func batch(_ n: Int) -> Bool {
            var ok = true
            switch (operation, inPlace) {
            case (.seal, false):
                for _ in 0..<n {
                    counter &+= 1
                    ok = cipher.seal(key: key, counter: counter, source: plaintext, length: size, destination: output) && ok
                }
            case (.seal, true):
                // Sealing its own output again: the bytes change, the work does not.
                for _ in 0..<n {
                    counter &+= 1
                    ok = cipher.seal(key: key, counter: counter, source: output, length: size, destination: output) && ok
                }
            case (.open, false):
                for _ in 0..<n {
                    ok = cipher.open(key: key, counter: 0, source: sealed, length: size, destination: output) && ok
                }
            case (.open, true):
                for _ in 0..<n {
                    output.copyMemory(from: sealed, byteCount: size + AEAD.tagSize)
                    ok = cipher.open(key: key, counter: 0, source: output, length: size, destination: output) && ok
                }
            }
            return ok
        }

        let warmUpEnd = monotonicSeconds() + min(0.2, seconds * 0.1)
        while monotonicSeconds() < warmUpEnd {
            guard batch(chunk) else { throw BaselineError("\(cipher.backend): a \(operation) of \(size) B failed") }
        }
        var packets: UInt64 = 0
        let start = monotonicSeconds()
        var now = start
        while now - start < seconds {
            guard batch(chunk) else { throw BaselineError("\(cipher.backend): a \(operation) of \(size) B failed") }
            packets += UInt64(chunk)
            now = monotonicSeconds()
        }
        return (packets, now - start)
    }
}

/// Hands the measuring thread's result back (written once before the semaphore is signalled,
/// read after the wait: the semaphore orders the two).
private final class RateBox: @unchecked Sendable {
    private var result: Result<(UInt64, Double), any Error> = .failure(BaselineError("the measuring thread did not report"))
    func set(_ r: Result<(UInt64, Double), any Error>) { result = r }
    func get() throws -> (UInt64, Double) { try result.get() }
}
