// ChaCha20-Poly1305 (IETF, detached tag): raw libsodium and the core's `AEAD` wrappers on the
// same buffers, side by side. Out of place, as the data plane decrypts from an uplink frame
// into a tenant frame.

import BenchSupport
import Benchmark
import BenchSodium
import WireGuard

/// Buffers for one packet size, allocated once in `setup` and reused by every packet.
final class AEADState {
    let length: Int
    let key: UnsafeMutableRawPointer          // 32 bytes
    let nonce: UnsafeMutableRawPointer        // 12 bytes: 4 zero bytes ‖ LE counter (raw path)
    let plaintext: UnsafeMutableRawPointer    // length
    let sealed: UnsafeMutableRawPointer       // length + 16: ciphertext ‖ tag, counter 0
    let output: UnsafeMutableRawPointer       // length + 16: where seal/open write
    var counter: UInt64 = 0

    init(length: Int) {
        self.length = length
        key = .allocate(byteCount: 32, alignment: 64)
        nonce = .allocate(byteCount: 12, alignment: 16)
        plaintext = .allocate(byteCount: max(length, 1), alignment: 64)
        sealed = .allocate(byteCount: length + 16, alignment: 64)
        output = .allocate(byteCount: length + 16, alignment: 64)
        randombytes_buf(key, 32)
        randombytes_buf(plaintext, length)
        nonce.initializeMemory(as: UInt8.self, repeating: 0, count: 12)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: length + 16)
        // The ciphertext every "open" packet opens (counter 0), sealed by libsodium itself.
        _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            sealed.assumingMemoryBound(to: UInt8.self),
            (sealed + length).assumingMemoryBound(to: UInt8.self), nil,
            plaintext.assumingMemoryBound(to: UInt8.self), UInt64(length),
            nil, 0, nil,
            nonce.assumingMemoryBound(to: UInt8.self),
            key.assumingMemoryBound(to: UInt8.self))
    }

    deinit {
        sodium_memzero(key, 32)
        for p in [key, nonce, plaintext, sealed, output] { p.deallocate() }
    }

    /// The core's wrappers must be byte-for-byte WireGuard's construction before they are
    /// timed: a wrapper that feeds libsodium a different nonce could be cheaper or dearer
    /// and would not interoperate anyway. Checked at a counter with all 8 bytes in use.
    func verifyCore() throws(CoreMismatch) {
        let counter: UInt64 = 0x0102_0304_0506_0708
        let reference = UnsafeMutableRawPointer.allocate(byteCount: length + 16, alignment: 64)
        defer { reference.deallocate() }
        setNonce(counter)
        defer { setNonce(0) }
        _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            reference.assumingMemoryBound(to: UInt8.self),
            (reference + length).assumingMemoryBound(to: UInt8.self), nil,
            plaintext.assumingMemoryBound(to: UInt8.self), UInt64(length),
            nil, 0, nil,
            nonce.assumingMemoryBound(to: UInt8.self),
            key.assumingMemoryBound(to: UInt8.self))
        AEAD.seal(key: key, counter: counter, source: plaintext, length: length, destination: output)
        guard sodium_memcmp(output, reference, length + 16) == 0 else { throw .seal(length) }
        guard AEAD.open(key: key, counter: counter, source: reference, length: length, destination: output),
              sodium_memcmp(output, plaintext, length) == 0 else { throw .open(length) }
        guard AEAD.open(key: key, counter: 0, source: sealed, length: length, destination: output) else {
            throw .open(length)
        }
    }

    /// WireGuard's nonce for `counter`, written in place (bytes 0–3 stay zero).
    @inline(__always)
    func setNonce(_ counter: UInt64) {
        nonce.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
    }
}

/// Why a core benchmark refused to run.
enum CoreMismatch: Error, CustomStringConvertible {
    case seal(Int)
    case open(Int)

    var description: String {
        switch self {
        case .seal(let n):
            "AEAD.seal (\(n) B) differs from libsodium with WireGuard's nonce (4 zero bytes ‖ LE counter): check AEAD.nonce's layout"
        case .open(let n):
            "AEAD.open (\(n) B) rejects libsodium's ciphertext under WireGuard's nonce (4 zero bytes ‖ LE counter): check AEAD.nonce's layout"
        }
    }
}

func registerAEADBenchmarks() {
    for size in packetSizes {
        Benchmark("libsodium seal \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            var counter = s.counter
            for _ in benchmark.scaledIterations {
                s.setNonce(counter)
                counter &+= 1
                _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                    s.output.assumingMemoryBound(to: UInt8.self),
                    (s.output + length).assumingMemoryBound(to: UInt8.self), nil,
                    s.plaintext.assumingMemoryBound(to: UInt8.self), UInt64(length),
                    nil, 0, nil,
                    s.nonce.assumingMemoryBound(to: UInt8.self),
                    s.key.assumingMemoryBound(to: UInt8.self))
            }
            s.counter = counter
            blackHole(s.output.load(as: UInt8.self))
        } setup: {
            AEADState(length: size)
        }

        Benchmark("core AEAD.seal \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            var counter = s.counter
            for _ in benchmark.scaledIterations {
                AEAD.seal(key: s.key, counter: counter, source: s.plaintext, length: length,
                          destination: s.output)
                counter &+= 1
            }
            s.counter = counter
            blackHole(s.output.load(as: UInt8.self))
        } setup: { () throws -> AEADState in
            let s = AEADState(length: size)
            try s.verifyCore()
            return s
        }

        Benchmark("libsodium open \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            var failures = 0
            s.setNonce(0)
            for _ in benchmark.scaledIterations {
                let rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                    s.output.assumingMemoryBound(to: UInt8.self), nil,
                    s.sealed.assumingMemoryBound(to: UInt8.self), UInt64(length),
                    (s.sealed + length).assumingMemoryBound(to: UInt8.self),
                    nil, 0,
                    s.nonce.assumingMemoryBound(to: UInt8.self),
                    s.key.assumingMemoryBound(to: UInt8.self))
                failures &+= Int(rc != 0 ? 1 : 0)
            }
            blackHole(failures)
            if failures != 0 { benchmark.error("\(failures) packets failed to open") }
        } setup: {
            AEADState(length: size)
        }

        Benchmark("core AEAD.open \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            var failures = 0
            for _ in benchmark.scaledIterations {
                let ok = AEAD.open(key: s.key, counter: 0, source: s.sealed, length: length,
                                   destination: s.output)
                failures &+= ok ? 0 : 1
            }
            blackHole(failures)
            if failures != 0 { benchmark.error("\(failures) packets failed to open") }
        } setup: { () throws -> AEADState in
            let s = AEADState(length: size)
            try s.verifyCore()
            return s
        }
    }
}

// MARK: - X25519

final class X25519State {
    let scalar: UnsafeMutablePointer<UInt8>   // 32 bytes, a clamped private key
    let point: UnsafeMutablePointer<UInt8>    // 32 bytes, a valid public key
    let output: UnsafeMutablePointer<UInt8>

    init() {
        scalar = .allocate(capacity: 32)
        point = .allocate(capacity: 32)
        output = .allocate(capacity: 32)
        let other = UnsafeMutablePointer<UInt8>.allocate(capacity: 32)
        defer { sodium_memzero(other, 32); other.deallocate() }
        randombytes_buf(scalar, 32)
        randombytes_buf(other, 32)
        precondition(crypto_scalarmult_base(point, other) == 0)
    }

    deinit {
        sodium_memzero(scalar, 32)
        sodium_memzero(output, 32)
        scalar.deallocate(); point.deallocate(); output.deallocate()
    }
}

/// One X25519 per iteration: the floor under a handshake. The core computes the static-static
/// DH (ss) once per peer, so each side of a handshake does three variable-base
/// multiplications (es, ee, se or their mirror) plus one fixed-base for its ephemeral key.
func registerX25519Benchmark() {
    Benchmark(
        "libsodium X25519 crypto_scalarmult (per op)",
        configuration: .init(metrics: packetMetrics, timeUnits: .nanoseconds, warmupIterations: 10,
                             scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 10_000)
    ) { benchmark, s in
        var failures = 0
        for _ in benchmark.scaledIterations {
            failures &+= Int(crypto_scalarmult(s.output, s.scalar, s.point) != 0 ? 1 : 0)
        }
        blackHole(s.output.pointee)
        if failures != 0 { benchmark.error("crypto_scalarmult failed") }
    } setup: {
        X25519State()
    }

    // The fixed-base multiplication that makes an ephemeral public key (one per side per
    // handshake).
    Benchmark(
        "libsodium X25519 crypto_scalarmult_base (per op)",
        configuration: .init(metrics: packetMetrics, timeUnits: .nanoseconds, warmupIterations: 10,
                             scalingFactor: .one, maxDuration: .seconds(1), maxIterations: 10_000)
    ) { benchmark, s in
        var failures = 0
        for _ in benchmark.scaledIterations {
            failures &+= Int(crypto_scalarmult_base(s.output, s.scalar) != 0 ? 1 : 0)
        }
        blackHole(s.output.pointee)
        if failures != 0 { benchmark.error("crypto_scalarmult_base failed") }
    } setup: {
        X25519State()
    }
}
