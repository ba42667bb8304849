import Testing
@testable import WireGuard

/// Two ends of one session in memory: `a` is the initiator, `b` the responder; a's send key is
/// b's receive key and the other way round.
struct SessionPair {
    let a: Keypair
    let b: Keypair
    static let aIndex: UInt32 = 0x1111_1111
    static let bIndex: UInt32 = 0x2222_2222

    init(at t0: Instant = .zero, key1: Key32 = SessionPair.key(1), key2: Key32 = SessionPair.key(2)) {
        var ka = SessionKeys(sendKey: key1, receiveKey: key2, localIndex: Self.aIndex,
                             remoteIndex: Self.bIndex, isInitiator: true, createdAt: t0)
        var kb = SessionKeys(sendKey: key2, receiveKey: key1, localIndex: Self.bIndex,
                             remoteIndex: Self.aIndex, isInitiator: false, createdAt: t0)
        a = Keypair(consuming: &ka)
        b = Keypair(consuming: &kb)
    }

    static func key(_ seed: UInt8) -> Key32 { Key32(bytes: (0..<32).map { UInt8($0) &+ seed &* 37 })! }
}

/// Keypair calls on byte arrays, through a cipher of `backend` (libsodium unless a test says).
enum Transport {
    static func cipher(_ backend: AEADBackend) -> TransportCipher {
        do throws(TransportCipherError) { return try TransportCipher(backend) } catch {
            fatalError("cannot set up \(error)")
        }
    }

    static func seal(_ kp: Keypair, _ plaintext: [UInt8], now: Instant = .zero, mtu: Int = 0,
                     capacity: Int? = nil, backend: AEADBackend = .libsodium) -> Result<[UInt8], SealFailure> {
        let cipher = cipher(backend)
        var out = [UInt8](repeating: 0xee, count: Keypair.messageLength(plaintextLength: plaintext.count, mtu: mtu) + 8)
        let cap = capacity ?? out.count
        let r: Result<SealedMessage, SealFailure> = plaintext.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                Result { () throws(SealFailure) in
                    try kp.seal(src.baseAddress ?? UnsafeRawPointer(dst.baseAddress!), length: plaintext.count,
                                into: dst.baseAddress!, capacity: cap, now: now, cipher: cipher, mtu: mtu)
                }
            }
        }
        return r.map { Array(out.prefix($0.length)) }
    }

    static func sealInPlace(_ kp: Keypair, _ plaintext: [UInt8], now: Instant = .zero, mtu: Int = 0,
                            backend: AEADBackend = .libsodium) -> Result<[UInt8], SealFailure> {
        let cipher = cipher(backend)
        var buf = [UInt8](repeating: 0xee, count: Keypair.messageLength(plaintextLength: plaintext.count, mtu: mtu))
        buf.replaceSubrange(16..<(16 + plaintext.count), with: plaintext)
        let r: Result<SealedMessage, SealFailure> = buf.withUnsafeMutableBytes { b in
            Result { () throws(SealFailure) in
                try kp.sealInPlace(b.baseAddress!, plaintextLength: plaintext.count, capacity: b.count, now: now,
                                   cipher: cipher, mtu: mtu)
            }
        }
        return r.map { Array(buf.prefix($0.length)) }
    }

    static func open(_ kp: Keypair, _ message: [UInt8], now: Instant = .zero,
                     backend: AEADBackend = .libsodium) -> Result<[UInt8], TransportRejection> {
        let cipher = cipher(backend)
        var out = [UInt8](repeating: 0xee, count: max(message.count, 1))
        let r: Result<Int, TransportRejection> = message.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                Result { () throws(TransportRejection) in
                    try kp.open(src.baseAddress ?? UnsafeRawPointer(dst.baseAddress!), length: message.count,
                                into: dst.baseAddress!, capacity: dst.count, now: now, cipher: cipher)
                }
            }
        }
        return r.map { Array(out.prefix($0)) }
    }

    static func openInPlace(_ kp: Keypair, _ message: [UInt8], now: Instant = .zero,
                            backend: AEADBackend = .libsodium) -> Result<[UInt8], TransportRejection> {
        let cipher = cipher(backend)
        var buf = message
        if buf.isEmpty { buf = [0]; return .failure(.tooShort) }
        let r: Result<Int, TransportRejection> = buf.withUnsafeMutableBytes { b in
            Result { () throws(TransportRejection) in
                try kp.openInPlace(b.baseAddress!, length: message.count, now: now, cipher: cipher)
            }
        }
        return r.map { Array(buf[16..<(16 + $0)]) }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
}
func bytes(hex: String) -> [UInt8] {
    var out = [UInt8](); var it = hex.makeIterator()
    while let h = it.next(), let l = it.next() { out.append(UInt8(String([h, l]), radix: 16)!) }
    return out
}

extension Result {
    var value: Success? { if case .success(let v) = self { v } else { nil } }
    var error: Failure? { if case .failure(let e) = self { e } else { nil } }
}

@Suite struct TransportTests {
    static let sizes = [0, 1, 15, 16, 17, 64, 512, 1420]

    static func plaintext(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) } }

    static func padded(_ p: [UInt8]) -> [UInt8] { p + [UInt8](repeating: 0, count: (16 - p.count % 16) % 16) }

    @Test(arguments: AEADBackend.allCases, sizes) func sealOpenOutOfPlace(backend: AEADBackend, n: Int) throws {
        let s = SessionPair()
        let p = Self.plaintext(n)
        let msg = try #require(Transport.seal(s.a, p, backend: backend).value)
        #expect(msg.count == 32 + Self.padded(p).count)
        #expect(msg.count % 16 == 0)
        #expect(Array(msg[0..<4]) == [4, 0, 0, 0])
        #expect(msg.withUnsafeBytes { TransportHeader($0) } == TransportHeader(receiverIndex: SessionPair.bIndex, counter: 0))
        let opened = try #require(Transport.open(s.b, msg, backend: backend).value)
        #expect(opened == Self.padded(p))
    }

    @Test(arguments: AEADBackend.allCases, sizes) func sealOpenInPlace(backend: AEADBackend, n: Int) throws {
        let s = SessionPair()
        let p = Self.plaintext(n)
        let msg = try #require(Transport.sealInPlace(s.b, p, backend: backend).value)
        // In place and out of place produce the same bytes for the same counter.
        let s2 = SessionPair()
        #expect(msg == Transport.seal(s2.b, p, backend: backend).value)
        #expect(try #require(Transport.openInPlace(s.a, msg, backend: backend).value) == Self.padded(p))
    }

    @Test func mixedDirectionsAndCounters() throws {
        let s = SessionPair()
        for i in 0..<5 {
            let m = try #require(Transport.seal(s.a, Self.plaintext(i * 10)).value)
            #expect(bytes(hex: hex(m)) == m)
            #expect(m.withUnsafeBytes { TransportHeader($0) }?.counter == UInt64(i))
            #expect(Transport.open(s.b, m).value == Self.padded(Self.plaintext(i * 10)))
            let r = try #require(Transport.sealInPlace(s.b, Self.plaintext(i)).value)
            #expect(Transport.openInPlace(s.a, r).value == Self.padded(Self.plaintext(i)))
        }
        #expect(s.a.messagesSent == 5)
        #expect(s.b.greatestReceivedCounter == 4)
    }

    /// Known answer, computed independently with pyca/cryptography:
    ///
    ///     from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    ///     import struct
    ///     key = bytes(range(32)); counter = 0x0102030405060708; remote = 0xdeadbeef
    ///     pt = b"WireGuard transport KAT"; pt += b"\0" * (-len(pt) % 16)
    ///     nonce = b"\0" * 4 + struct.pack("<Q", counter)
    ///     msg = struct.pack("<IIQ", 4, remote, counter) + ChaCha20Poly1305(key).encrypt(nonce, pt, b"")
    ///     print(msg.hex())
    ///
    /// and the same with counter 0 and an empty plaintext for the keepalive.
    static let katKey = Key32(bytes: Array(0..<32))!
    static let katMessage = "04000000efbeadde0807060504030201a720df81ec4c8b6a008b5ebe121612c88f7486e4c305119e"
        + "5735a75de902a7dd576003f7325a78ad89d96aed3d66cb1c"
    static let katKeepalive = "04000000efbeadde000000000000000010324f800a160bd9a1794255be7ec29d"

    static func katKeypair(sending: Bool) -> Keypair {
        var keys = SessionKeys(sendKey: katKey, receiveKey: katKey, localIndex: 0xdeadbeef,
                               remoteIndex: 0xdeadbeef, isInitiator: true, createdAt: .zero)
        let kp = Keypair(consuming: &keys)
        #expect(keys.sendKey.isZero && keys.receiveKey.isZero, "the source keys are wiped")
        return kp
    }

    /// The nonce is 4 zero bytes followed by the 8-byte little-endian counter, with no
    /// padding in between (a `(UInt32, UInt64)` tuple would leave 4 uninitialised bytes and
    /// drop the counter's high half from the nonce).
    @Test func aeadNonceLayout() {
        var n = AEAD.nonce(0x0102030405060708)
        #expect(MemoryLayout.size(ofValue: n) == 12)
        #expect(withUnsafeBytes(of: &n) { Array($0) } == [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1])
    }

    @Test(arguments: AEADBackend.allCases) func knownAnswerTransportMessage(backend: AEADBackend) throws {
        let kp = Self.katKeypair(sending: true)
        kp.setMessagesSent(0x0102030405060708)
        let p = Array("WireGuard transport KAT".utf8)
        #expect(hex(try #require(Transport.seal(kp, p, backend: backend).value)) == Self.katMessage)
        kp.setMessagesSent(0x0102030405060708)
        #expect(hex(try #require(Transport.sealInPlace(kp, p, backend: backend).value)) == Self.katMessage)
        let rx = Self.katKeypair(sending: false)
        #expect(Transport.open(rx, bytes(hex: Self.katMessage), backend: backend).value == Self.padded(p))
        let rx2 = Self.katKeypair(sending: false)
        #expect(Transport.openInPlace(rx2, bytes(hex: Self.katMessage), backend: backend).value == Self.padded(p))
    }

    /// Every counter byte is part of the nonce, so changing any of them breaks the tag.
    @Test(arguments: AEADBackend.allCases, 8..<16) func everyCounterByteIsAuthenticated(backend: AEADBackend, offset: Int) throws {
        let s = SessionPair()
        s.a.setMessagesSent(0x0102030405060708)
        var m = try #require(Transport.seal(s.a, [1, 2, 3], backend: backend).value)
        m[offset] ^= 0x01
        #expect(Transport.open(s.b, m, backend: backend).error == .authenticationFailed)
    }

    @Test(arguments: AEADBackend.allCases) func knownAnswerKeepalive(backend: AEADBackend) throws {
        let kp = Self.katKeypair(sending: true)
        #expect(hex(try #require(Transport.seal(kp, [], backend: backend).value)) == Self.katKeepalive)
        let rx = Self.katKeypair(sending: false)
        #expect(Transport.open(rx, bytes(hex: Self.katKeepalive), backend: backend).value == [])
        #expect(Transport.openInPlace(rx, bytes(hex: Self.katKeepalive), backend: backend).error == .replayed)
    }

    @Test(arguments: AEADBackend.allCases) func tamperingIsRejected(backend: AEADBackend) throws {
        let s = SessionPair()
        let msg = try #require(Transport.seal(s.a, Self.plaintext(100), backend: backend).value)
        // Ciphertext, tag, counter: the tag no longer verifies (the counter is the nonce).
        for offset in [16, 20, msg.count - 17, msg.count - 16, msg.count - 1, 8, 9] {
            var m = msg; m[offset] ^= 0x01
            #expect(Transport.open(s.b, m, backend: backend).error == .authenticationFailed, "byte \(offset)")
            #expect(Transport.openInPlace(s.b, m, backend: backend).error == .authenticationFailed, "byte \(offset)")
        }
        // Type and reserved bytes.
        for offset in 0..<4 {
            var m = msg; m[offset] ^= 0x80
            #expect(Transport.open(s.b, m, backend: backend).error == .notTransport)
        }
        // Receiver index.
        var m = msg; m[4] ^= 1
        #expect(Transport.open(s.b, m, backend: backend).error == .wrongReceiver)
        // Truncation.
        #expect(Transport.open(s.b, Array(msg.prefix(31)), backend: backend).error == .tooShort)
        #expect(Transport.open(s.b, [], backend: backend).error == .tooShort)
        #expect(Transport.open(s.b, Array(msg.dropLast()), backend: backend).error == .authenticationFailed)
        // A failed message must not have moved the window: the genuine one still opens.
        #expect(s.b.greatestReceivedCounter == nil)
        #expect(Transport.open(s.b, msg, backend: backend).value == Self.padded(Self.plaintext(100)))
    }

    @Test func wrongKeyFailsAuthentication() throws {
        let s = SessionPair()
        let other = SessionPair(key1: SessionPair.key(9), key2: SessionPair.key(10))
        let msg = try #require(Transport.seal(s.a, [1, 2, 3]).value)
        #expect(Transport.open(other.b, msg).error == .authenticationFailed)
    }

    @Test func replayIsRejected() throws {
        let s = SessionPair()
        let msg = try #require(Transport.seal(s.a, [1, 2, 3]).value)
        #expect(Transport.open(s.b, msg).value != nil)
        #expect(Transport.open(s.b, msg).error == .replayed)
        #expect(Transport.openInPlace(s.b, msg).error == .replayed)
    }

    @Test func outOfOrderWithinWindowIsAccepted() throws {
        let s = SessionPair()
        let msgs = try (0..<40).map { i in try #require(Transport.seal(s.a, [UInt8(i)]).value) }
        for i in [39, 0, 20, 21, 5, 38, 1] { #expect(Transport.open(s.b, msgs[i]).value?.first == UInt8(i)) }
        for i in [39, 0, 21] { #expect(Transport.open(s.b, msgs[i]).error == .replayed) }
        #expect(s.b.greatestReceivedCounter == 39)
    }

    @Test func tooOldAndBeyondLimitCounters() throws {
        let s = SessionPair()
        let old = try #require(Transport.seal(s.a, [1]).value)            // counter 0
        s.a.setMessagesSent(UInt64(WireGuardProtocol.replayWindowSize) + 1)
        let new = try #require(Transport.seal(s.a, [2]).value)
        #expect(Transport.open(s.b, new).value != nil)
        #expect(Transport.open(s.b, old).error == .counterTooOld)
        // A counter at REJECT_AFTER_MESSAGES is refused before any decryption.
        var forged = new
        forged.withUnsafeMutableBytes { $0.storeBytes(of: WireGuardProtocol.rejectAfterMessages.littleEndian, toByteOffset: 8, as: UInt64.self) }
        #expect(Transport.open(s.b, forged).error == .counterBeyondLimit)
    }

    @Test func sendLimitByMessages() throws {
        let s = SessionPair()
        let reject = WireGuardProtocol.rejectAfterMessages
        s.a.setMessagesSent(reject - 1)
        let last = try #require(Transport.seal(s.a, [7]).value)
        #expect(last.withUnsafeBytes { TransportHeader($0) }?.counter == reject - 1)
        #expect(Transport.seal(s.a, [8]).error == .messagesExhausted)
        #expect(!s.a.isValidForSending)
        #expect(Transport.seal(s.a, [9]).error == .keypairInvalid)
        // The receiver takes the last counter, then the keypair is spent for receiving too.
        #expect(Transport.open(s.b, last).value != nil)
        s.a.setMessagesSent(0)
        let s2 = SessionPair()
        let again = try #require(Transport.seal(s2.a, [1]).value)
        #expect(Transport.open(s.b, again).error == .keypairExhausted)
        #expect(!s.b.isValidForReceiving)
    }

    @Test func rekeyDueReporting() throws {
        let s = SessionPair()
        let after = WireGuardProtocol.rekeyAfterMessages
        var r = try #require(Transport.sealResult(s.b, now: .zero))
        #expect(!r.rekeyDue)
        s.b.setMessagesSent(after - 1)
        r = try #require(Transport.sealResult(s.b, now: .zero))               // counter 2^60 - 1
        #expect(!r.rekeyDue)
        r = try #require(Transport.sealResult(s.b, now: .zero))               // counter 2^60: > 2^60 sent
        #expect(r.rekeyDue)
        // Age counts only for the initiator.
        let t = Instant.zero + WireGuardProtocol.rekeyAfterTime
        #expect(try #require(Transport.sealResult(s.a, now: Instant(nanoseconds: t.nanoseconds - 1))).rekeyDue == false)
        #expect(try #require(Transport.sealResult(s.a, now: t)).rekeyDue)
        let s2 = SessionPair()
        #expect(try #require(Transport.sealResult(s2.b, now: t)).rekeyDue == false)
    }

    @Test func expiryByTime() throws {
        let s = SessionPair(at: Instant(nanoseconds: 1_000))
        let limit = Instant(nanoseconds: 1_000) + WireGuardProtocol.rejectAfterTime
        let msg = try #require(Transport.seal(s.a, [1], now: Instant(nanoseconds: limit.nanoseconds - 1)).value)
        #expect(Transport.seal(s.a, [1], now: limit).error == .keypairExpired)
        #expect(Transport.seal(s.a, [1], now: .zero).error == .keypairInvalid)
        #expect(Transport.open(s.b, msg, now: limit).error == .keypairExpired)
        #expect(Transport.open(s.b, msg, now: .zero).error == .keypairInvalid)
    }

    @Test func invalidateStopsBothDirections() throws {
        let s = SessionPair()
        let msg = try #require(Transport.seal(s.a, [1]).value)
        s.b.invalidate()
        #expect(Transport.open(s.b, msg).error == .keypairInvalid)
        #expect(Transport.seal(s.b, [1]).error == .keypairInvalid)
        #expect(!s.b.canSend(at: .zero))
        #expect(s.a.canSend(at: .zero))
    }

    @Test func sizesAndPadding() throws {
        #expect(Keypair.paddedLength(plaintextLength: 0) == 0)
        #expect(Keypair.paddedLength(plaintextLength: 1) == 16)
        #expect(Keypair.paddedLength(plaintextLength: 1420) == 1424)
        #expect(Keypair.paddedLength(plaintextLength: 1420, mtu: 1420) == 1420)
        #expect(Keypair.paddedLength(plaintextLength: 1419, mtu: 1420) == 1420)
        #expect(Keypair.paddedLength(plaintextLength: 1400, mtu: 1420) == 1408)
        #expect(Keypair.paddedLength(plaintextLength: 1500, mtu: 1420) == 1500)
        let s = SessionPair()
        let msg = try #require(Transport.seal(s.a, Self.plaintext(1420), mtu: 1420).value)
        #expect(msg.count == 1420 + 32)
        #expect(Transport.open(s.b, msg).value == Self.plaintext(1420))
        #expect(Transport.seal(s.a, [1, 2], capacity: 47).error == .destinationTooSmall)
        #expect(Transport.seal(s.a, [1, 2], capacity: 48).value?.count == 48)
    }

    @Test func outOfPlaceOpenChecksCapacity() throws {
        let s = SessionPair()
        let msg = try #require(Transport.seal(s.a, Self.plaintext(32)).value)
        var out = [UInt8](repeating: 0, count: 31)
        let r: Result<Int, TransportRejection> = msg.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                Result { () throws(TransportRejection) in
                    try s.b.open(src.baseAddress!, length: src.count, into: dst.baseAddress!, capacity: dst.count, now: .zero,
                                 cipher: TransportCipher())
                }
            }
        }
        #expect(r.error == .destinationTooSmall)
        #expect(s.b.greatestReceivedCounter == nil)
    }

    @Test func headerParsingNeverTraps() {
        let good: [UInt8] = [4, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, 1, 0, 0, 0, 0, 0, 0, 0x80]
        let h = good.withUnsafeBytes { TransportHeader($0) }
        #expect(h == TransportHeader(receiverIndex: 0x1234_5678, counter: 0x8000_0000_0000_0001))
        for n in 0..<16 { #expect(good.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0.prefix(n))) } == nil) }
        #expect(TransportHeader(UnsafeRawBufferPointer(start: nil, count: 0)) == nil)
        var bad = good; bad[0] = 1
        #expect(bad.withUnsafeBytes { TransportHeader($0) } == nil)
        bad = good; bad[3] = 1
        #expect(bad.withUnsafeBytes { TransportHeader($0) } == nil)
        // Unaligned reads and writes.
        var buf = [UInt8](repeating: 0, count: 40)
        buf.withUnsafeMutableBytes { h!.write(to: $0.baseAddress! + 3) }
        #expect(Array(buf[3..<19]) == good)
        #expect(buf.withUnsafeBytes { TransportHeader(UnsafeRawBufferPointer(rebasing: $0[3...])) } == h)
    }
}

extension Transport {
    static func sealResult(_ kp: Keypair, now: Instant) -> SealedMessage? {
        var out = [UInt8](repeating: 0, count: 64)
        let p: [UInt8] = [1, 2, 3]
        return p.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                try? kp.seal(src.baseAddress!, length: 3, into: dst.baseAddress!, capacity: dst.count, now: now,
                             cipher: TransportCipher())
            }
        }
    }
}
