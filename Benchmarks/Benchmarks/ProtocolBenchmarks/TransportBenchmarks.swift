// Transport data messages: `Keypair.seal`/`Keypair.open` (header, counter, expiry checks,
// padding rule, replay window) next to raw libsodium ChaCha20-Poly1305 on the same buffers.

import BenchSupport
import Benchmark
import BenchSodium
import WireGuard

/// The interface MTU passed to `seal` (wg-quick's default). With it a 1420-byte packet is not
/// padded (the kernel's calculate_skb_padding never pads past the MTU), and 64 and 512 are
/// multiples of 16 already, so Keypair and raw libsodium encrypt the same number of bytes
/// and `seal` encrypts straight from the source (no padding copy) at every size here.
let interfaceMTU = 1420

/// A fixed monotonic time inside the keypairs' lifetime (they are created at 0).
let transportNow = Instant(nanoseconds: 1_000_000_000)

/// Keys, keypairs and buffers for one packet size, built once in `setup`.
///
/// `messages` holds 1000 transport messages sealed by a `Keypair` with counters 0..<1000
/// (one per packet of a sample), laid out `stride` bytes apart like frames in a ring. The
/// open benchmarks open all 1000 each sample, with a receive `Keypair` made new before the
/// measured region (a window that has seen counters 0..<1000 would reject them as replays).
/// Raw libsodium opens the same messages with the same counters.
final class TransportState {
    let length: Int                  // plaintext bytes (inner packet)
    let messageLength: Int           // 16 + length + 16 (no padding at these sizes)
    let stride: Int
    let sendKeys: SessionKeys        // initiator's view: sends with k1
    let receiveKeys: SessionKeys     // responder's view: receives with k1
    let sender: Keypair
    var receiver: Keypair
    let key: UnsafeMutableRawPointer         // k1, for raw libsodium
    let nonce: UnsafeMutableRawPointer       // 12 bytes: 4 zero bytes ‖ LE counter
    let plaintext: UnsafeMutableRawPointer   // length
    let output: UnsafeMutableRawPointer      // messageLength: seal destination, open destination
    let messages: UnsafeMutableRawPointer    // 1000 × stride
    let pristine: UnsafeMutableRawPointer    // a copy of `messages`, to undo in-place opens
    var rawCounter: UInt64 = 0

    static var count: Int { packetsPerSample.rawValue }

    init(length: Int) throws(SetupCheckFailed) {
        self.length = length
        messageLength = Keypair.messageLength(plaintextLength: length, mtu: interfaceMTU)
        guard messageLength == WireGuardProtocol.keepaliveSize + length else {
            throw SetupCheckFailed("\(length) B would be padded; the raw baseline would encrypt fewer bytes")
        }
        stride = (messageLength + 63) & ~63
        let k1 = randomKey32(), k2 = randomKey32()
        sendKeys = SessionKeys(sendKey: k1, receiveKey: k2, localIndex: 0x1111_1111, remoteIndex: 0x2222_2222,
                               isInitiator: true, createdAt: .zero)
        receiveKeys = SessionKeys(sendKey: k2, receiveKey: k1, localIndex: 0x2222_2222, remoteIndex: 0x1111_1111,
                                  isInitiator: false, createdAt: .zero)
        var ks = sendKeys, kr = receiveKeys
        sender = Keypair(consuming: &ks)
        receiver = Keypair(consuming: &kr)

        key = .allocate(byteCount: 32, alignment: 64)
        nonce = .allocate(byteCount: 12, alignment: 16)
        plaintext = .allocate(byteCount: length, alignment: 64)
        output = .allocate(byteCount: messageLength, alignment: 64)
        messages = .allocate(byteCount: TransportState.count * stride, alignment: 64)
        pristine = .allocate(byteCount: TransportState.count * stride, alignment: 64)
        k1.withUnsafeBytes { key.copyMemory(from: $0.baseAddress!, byteCount: 32) }
        nonce.initializeMemory(as: UInt8.self, repeating: 0, count: 12)
        randombytes_buf(plaintext, length)
        output.initializeMemory(as: UInt8.self, repeating: 0, count: messageLength)
        messages.initializeMemory(as: UInt8.self, repeating: 0, count: TransportState.count * stride)

        try check()
    }

    deinit {
        sodium_memzero(key, 32)
        for p in [key, nonce, plaintext, output, messages, pristine] { p.deallocate() }
    }

    /// WireGuard's nonce for `counter`, written in place (bytes 0–3 stay zero).
    @inline(__always)
    func setNonce(_ counter: UInt64) {
        nonce.storeBytes(of: counter.littleEndian, toByteOffset: 4, as: UInt64.self)
    }

    @inline(__always)
    func message(_ i: Int) -> UnsafeMutableRawPointer { messages + i &* stride }

    /// A receive keypair that has seen nothing yet. The previous one is freed first, so the
    /// new one normally lands in the same heap block: every sample sees one address, as a
    /// long-lived keypair would, instead of two blocks used in turn.
    func renewReceiver() {
        receiver = sender
        var k = receiveKeys
        receiver = Keypair(consuming: &k)
    }

    /// Undoes in-place opens.
    func restoreMessages() {
        messages.copyMemory(from: pristine, byteCount: TransportState.count * stride)
    }

    /// Raw libsodium seal of the plaintext with `counter`, into `destination` (ciphertext ‖ tag).
    func rawSeal(counter: UInt64, into destination: UnsafeMutableRawPointer) {
        setNonce(counter)
        _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            destination.assumingMemoryBound(to: UInt8.self),
            (destination + length).assumingMemoryBound(to: UInt8.self), nil,
            plaintext.assumingMemoryBound(to: UInt8.self), UInt64(length),
            nil, 0, nil,
            nonce.assumingMemoryBound(to: UInt8.self),
            key.assumingMemoryBound(to: UInt8.self))
    }

    /// Seals the ring of messages with a fresh Keypair, and checks before anything is timed:
    /// Keypair's messages are header ‖ exactly libsodium's ciphertext and tag under WireGuard's
    /// nonce, raw libsodium opens them with counter i, and a fresh receive Keypair opens all
    /// 1000 in order to the original plaintext (then rejects a replay).
    private func check() throws(SetupCheckFailed) {
        var ks = sendKeys
        let ringSender = Keypair(consuming: &ks)
        let reference = UnsafeMutableRawPointer.allocate(byteCount: length + 16, alignment: 64)
        defer { reference.deallocate() }
        for i in 0..<TransportState.count {
            let m = message(i)
            let sealed: SealedMessage
            do { sealed = try ringSender.seal(plaintext, length: length, into: m, capacity: stride,
                                              now: transportNow, cipher: TransportCipher(), mtu: interfaceMTU) }
            catch { throw SetupCheckFailed("Keypair.seal failed: \(error)") }
            guard sealed.length == messageLength, sealed.counter == UInt64(i) else {
                throw SetupCheckFailed("Keypair.seal wrote \(sealed.length) B with counter \(sealed.counter)")
            }
            guard let header = TransportHeader(m, length: messageLength),
                  header.receiverIndex == sendKeys.remoteIndex, header.counter == UInt64(i) else {
                throw SetupCheckFailed("Keypair.seal wrote a wrong header")
            }
            rawSeal(counter: UInt64(i), into: reference)
            guard sodium_memcmp(m + 16, reference, length + 16) == 0 else {
                throw SetupCheckFailed("Keypair.seal (\(length) B) differs from libsodium with WireGuard's nonce")
            }
            setNonce(UInt64(i))
            guard crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                output.assumingMemoryBound(to: UInt8.self), nil,
                (m + 16).assumingMemoryBound(to: UInt8.self), UInt64(length),
                (m + 16 + length).assumingMemoryBound(to: UInt8.self), nil, 0,
                nonce.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self)) == 0
            else { throw SetupCheckFailed("libsodium does not open Keypair's message \(i)") }
        }
        pristine.copyMemory(from: messages, byteCount: TransportState.count * stride)
        setNonce(0)

        renewReceiver()
        for i in 0..<TransportState.count {
            let n: Int
            do { n = try receiver.open(message(i), length: messageLength, into: output, capacity: messageLength,
                                       now: transportNow, cipher: TransportCipher()) }
            catch { throw SetupCheckFailed("Keypair.open of message \(i) failed: \(error)") }
            guard n == length, sodium_memcmp(output, plaintext, length) == 0 else {
                throw SetupCheckFailed("Keypair.open of message \(i) gave the wrong plaintext")
            }
        }
        var replayRejected = false
        do {
            _ = try receiver.open(message(0), length: messageLength, into: output, capacity: messageLength,
                                  now: transportNow, cipher: TransportCipher())
        } catch {
            replayRejected = error == .replayed
        }
        guard replayRejected else { throw SetupCheckFailed("Keypair.open did not reject a replay as .replayed") }
        renewReceiver()
    }
}

func registerTransportBenchmarks() {
    for size in packetSizes {
        // MARK: seal (out of place)

        Benchmark("transport libsodium seal \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            let payload = s.output + WireGuardProtocol.transportHeaderSize
            var counter = s.rawCounter
            for _ in benchmark.scaledIterations {
                s.setNonce(counter)
                counter &+= 1
                _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                    payload.assumingMemoryBound(to: UInt8.self),
                    (payload + length).assumingMemoryBound(to: UInt8.self), nil,
                    s.plaintext.assumingMemoryBound(to: UInt8.self), UInt64(length),
                    nil, 0, nil,
                    s.nonce.assumingMemoryBound(to: UInt8.self),
                    s.key.assumingMemoryBound(to: UInt8.self))
            }
            s.rawCounter = counter
            blackHole(s.output.load(fromByteOffset: 16, as: UInt8.self))
        } setup: {
            try TransportState(length: size)
        }

        Benchmark("transport Keypair.seal \(size) B (1k packets)") { benchmark, s in
            let sender = s.sender
            let cipher = TransportCipher()
            let length = s.length
            let capacity = s.messageLength
            var bytes = 0
            var failures = 0
            for _ in benchmark.scaledIterations {
                do {
                    let sealed = try sender.seal(s.plaintext, length: length, into: s.output, capacity: capacity,
                                                 now: transportNow, cipher: cipher, mtu: interfaceMTU)
                    bytes &+= sealed.length
                } catch {
                    failures &+= 1
                }
            }
            blackHole(bytes)
            if failures != 0 { benchmark.error("\(failures) packets failed to seal") }
        } setup: {
            try TransportState(length: size)
        }

        // MARK: open (out of place)

        Benchmark("transport libsodium open \(size) B (1k packets)") { benchmark, s in
            let length = s.length
            var failures = 0
            benchmark.startMeasurement()   // the same bracketing as Keypair.open, nothing before it
            for i in benchmark.scaledIterations {
                s.setNonce(UInt64(truncatingIfNeeded: i))
                let payload = s.message(i) + WireGuardProtocol.transportHeaderSize
                let rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                    s.output.assumingMemoryBound(to: UInt8.self), nil,
                    payload.assumingMemoryBound(to: UInt8.self), UInt64(length),
                    (payload + length).assumingMemoryBound(to: UInt8.self),
                    nil, 0,
                    s.nonce.assumingMemoryBound(to: UInt8.self),
                    s.key.assumingMemoryBound(to: UInt8.self))
                failures &+= Int(rc != 0 ? 1 : 0)
            }
            benchmark.stopMeasurement()
            blackHole(failures)
            if failures != 0 { benchmark.error("\(failures) packets failed to open") }
        } setup: {
            try TransportState(length: size)
        }

        Benchmark("transport Keypair.open \(size) B (1k packets)") { benchmark, s in
            s.renewReceiver()              // not measured: fresh replay window, counters 0..<1000 new
            let receiver = s.receiver
            let cipher = TransportCipher()
            let messageLength = s.messageLength
            var bytes = 0
            var failures = 0
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                do {
                    bytes &+= try receiver.open(s.message(i), length: messageLength, into: s.output,
                                                capacity: messageLength, now: transportNow, cipher: cipher)
                } catch {
                    failures &+= 1
                }
            }
            benchmark.stopMeasurement()
            blackHole(bytes)
            if failures != 0 { benchmark.error("\(failures) packets failed to open") }
        } setup: {
            try TransportState(length: size)
        }
    }

    // MARK: in place, 1420 B

    let size = 1420

    Benchmark("transport libsodium seal in place \(size) B (1k packets)") { benchmark, s in
        let length = s.length
        let payload = s.output + WireGuardProtocol.transportHeaderSize
        var counter = s.rawCounter
        for _ in benchmark.scaledIterations {
            s.setNonce(counter)
            counter &+= 1
            _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                payload.assumingMemoryBound(to: UInt8.self),
                (payload + length).assumingMemoryBound(to: UInt8.self), nil,
                payload.assumingMemoryBound(to: UInt8.self), UInt64(length),
                nil, 0, nil,
                s.nonce.assumingMemoryBound(to: UInt8.self),
                s.key.assumingMemoryBound(to: UInt8.self))
        }
        s.rawCounter = counter
        blackHole(s.output.load(fromByteOffset: 16, as: UInt8.self))
    } setup: { () throws -> TransportState in
        let s = try TransportState(length: size)
        (s.output + 16).copyMemory(from: s.plaintext, byteCount: size)
        return s
    }

    // Each packet seals whatever the buffer holds (the previous packet's ciphertext): the
    // same work as sealing fresh plaintext.
    Benchmark("transport Keypair.sealInPlace \(size) B (1k packets)") { benchmark, s in
        let sender = s.sender
        let cipher = TransportCipher()
        let length = s.length
        let capacity = s.messageLength
        var bytes = 0
        var failures = 0
        for _ in benchmark.scaledIterations {
            do {
                let sealed = try sender.sealInPlace(s.output, plaintextLength: length, capacity: capacity,
                                                    now: transportNow, cipher: cipher, mtu: interfaceMTU)
                bytes &+= sealed.length
            } catch {
                failures &+= 1
            }
        }
        blackHole(bytes)
        if failures != 0 { benchmark.error("\(failures) packets failed to seal") }
    } setup: { () throws -> TransportState in
        let s = try TransportState(length: size)
        (s.output + 16).copyMemory(from: s.plaintext, byteCount: size)
        return s
    }

    Benchmark("transport libsodium open in place \(size) B (1k packets)") { benchmark, s in
        s.restoreMessages()            // not measured: the previous sample decrypted them
        let length = s.length
        var failures = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            s.setNonce(UInt64(truncatingIfNeeded: i))
            let payload = s.message(i) + WireGuardProtocol.transportHeaderSize
            let rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                payload.assumingMemoryBound(to: UInt8.self), nil,
                payload.assumingMemoryBound(to: UInt8.self), UInt64(length),
                (payload + length).assumingMemoryBound(to: UInt8.self),
                nil, 0,
                s.nonce.assumingMemoryBound(to: UInt8.self),
                s.key.assumingMemoryBound(to: UInt8.self))
            failures &+= Int(rc != 0 ? 1 : 0)
        }
        benchmark.stopMeasurement()
        blackHole(failures)
        if failures != 0 { benchmark.error("\(failures) packets failed to open") }
    } setup: {
        try TransportState(length: size)
    }

    Benchmark("transport Keypair.openInPlace \(size) B (1k packets)") { benchmark, s in
        s.restoreMessages()            // not measured: ciphertexts back,
        s.renewReceiver()              // and a fresh replay window
        let receiver = s.receiver
        let cipher = TransportCipher()
        let messageLength = s.messageLength
        var bytes = 0
        var failures = 0
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            do {
                bytes &+= try receiver.openInPlace(s.message(i), length: messageLength, now: transportNow,
                                                   cipher: cipher)
            } catch {
                failures &+= 1
            }
        }
        benchmark.stopMeasurement()
        blackHole(bytes)
        if failures != 0 { benchmark.error("\(failures) packets failed to open") }
    } setup: {
        try TransportState(length: size)
    }
}
