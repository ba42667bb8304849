import Testing
@testable import WireGuard

@Suite struct MessageTests {
    static func message(type: UInt8, length: Int, fill: UInt8 = 0xA5) -> [UInt8] {
        var m = [UInt8](repeating: fill, count: length)
        if length > 0 { m[0] = type }
        for i in 1..<min(4, max(length, 1)) { m[i] = 0 }
        return m
    }

    @Test func classifiesEachWellFormedType() {
        #expect(MessageType.classify(Self.message(type: 1, length: 148)) == .success(.initiation))
        #expect(MessageType.classify(Self.message(type: 2, length: 92)) == .success(.response))
        #expect(MessageType.classify(Self.message(type: 3, length: 64)) == .success(.cookieReply))
        #expect(MessageType.classify(Self.message(type: 4, length: 32)) == .success(.transport))
        #expect(MessageType.classify(Self.message(type: 4, length: 1500)) == .success(.transport))
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let type: UInt8, length: Int, expected: MessageError
        var testDescription: String { "type \(type) length \(length)" }
    }

    @Test(arguments: [
        Case(type: 1, length: 0, expected: .tooShort),
        Case(type: 1, length: 3, expected: .tooShort),
        Case(type: 1, length: 147, expected: .tooShort),
        Case(type: 1, length: 149, expected: .wrongLength),
        Case(type: 2, length: 91, expected: .tooShort),
        Case(type: 2, length: 148, expected: .wrongLength),
        Case(type: 3, length: 63, expected: .tooShort),
        Case(type: 3, length: 65, expected: .wrongLength),
        Case(type: 4, length: 31, expected: .tooShort),
        Case(type: 4, length: 16, expected: .tooShort),
        Case(type: 0, length: 148, expected: .unknownType),
        Case(type: 5, length: 92, expected: .unknownType),
        Case(type: 0xFF, length: 4, expected: .unknownType),
    ])
    func rejectsMalformed(_ c: Case) {
        #expect(MessageType.classify(Self.message(type: c.type, length: c.length)) == .failure(c.expected))
    }

    @Test(arguments: [1, 2, 3])
    func rejectsNonZeroReservedBytes(position: Int) {
        var m = Self.message(type: 1, length: 148)
        m[position] = 1
        #expect(MessageType.classify(m) == .failure(.reservedNotZero))
        m.withUnsafeBytes { (b) -> Void in
            #expect(throws: MessageError.reservedNotZero) { try InitiationMessage(b) }
        }
    }

    @Test func typedViewsRejectOtherTypes() {
        Self.message(type: 2, length: 92).withUnsafeBytes { b in
            #expect(throws: MessageError.unexpectedType) { try InitiationMessage(b) }
            #expect(throws: MessageError.unexpectedType) { try CookieReplyMessage(b) }
            #expect(throws: MessageError.unexpectedType) { try TransportMessageHeader(b) }
            #expect(throws: Never.self) { try ResponseMessage(b) }
        }
        Self.message(type: 4, length: 92).withUnsafeBytes { (b) -> Void in
            #expect(throws: MessageError.unexpectedType) { try ResponseMessage(b) }
        }
    }

    @Test func initiationFieldsRoundTrip() throws {
        var out = [UInt8](repeating: 0xFF, count: 148)
        let eph = PublicKey(Key32(bytes: (0..<32).map { UInt8($0) })!)
        let encStatic = (0..<48).map { UInt8(100 + $0) }
        let encTime = (0..<28).map { UInt8(200 + $0) }
        let mac1 = MAC16(bytes: [UInt8](repeating: 0x11, count: 16))!
        let mac2 = MAC16(bytes: [UInt8](repeating: 0x22, count: 16))!
        let written = out.withUnsafeMutableBytes { o in
            encStatic.withUnsafeBytes { s in
                encTime.withUnsafeBytes { t in
                    InitiationMessage.write(into: o, senderIndex: 0xDEAD_BEEF, ephemeral: eph,
                                            encryptedStatic: s, encryptedTimestamp: t, mac1: mac1, mac2: mac2)
                }
            }
        }
        #expect(written)
        #expect(Array(out[0..<8]) == [1, 0, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE])
        try out.withUnsafeBytes { b in
            let m = try InitiationMessage(b)
            #expect(m.senderIndex == 0xDEAD_BEEF)
            #expect(m.ephemeral == eph)
            #expect(Array(m.encryptedStatic) == encStatic)
            #expect(Array(m.encryptedTimestamp) == encTime)
            #expect(m.mac1 == mac1 && m.mac2 == mac2)
        }
        var small = [UInt8](repeating: 0, count: 147)
        let refused = small.withUnsafeMutableBytes { o in
            encStatic.withUnsafeBytes { s in
                encTime.withUnsafeBytes { t in
                    InitiationMessage.write(into: o, senderIndex: 1, ephemeral: eph, encryptedStatic: s, encryptedTimestamp: t)
                }
            }
        }
        #expect(!refused)
    }

    @Test func responseFieldsRoundTrip() throws {
        var out = [UInt8](repeating: 0xFF, count: 92)
        let eph = PublicKey(Key32(bytes: (0..<32).map { UInt8(50 + $0) })!)
        let tag = (0..<16).map { UInt8(9 * $0) }
        let ok = out.withUnsafeMutableBytes { o in
            tag.withUnsafeBytes { ResponseMessage.write(into: o, senderIndex: 7, receiverIndex: 0x0102_0304, ephemeral: eph, encryptedNothing: $0) }
        }
        #expect(ok)
        try out.withUnsafeBytes { b in
            let m = try ResponseMessage(b)
            #expect(m.senderIndex == 7 && m.receiverIndex == 0x0102_0304)
            #expect(m.ephemeral == eph)
            #expect(Array(m.encryptedNothing) == tag)
            #expect(m.mac1 == .zero && m.mac2 == .zero)
        }
        #expect(Array(out[8..<12]) == [4, 3, 2, 1])
    }

    @Test func transportHeaderRoundTrip() throws {
        var out = [UInt8](repeating: 0xCC, count: 48)
        #expect(out.withUnsafeMutableBytes { TransportMessageHeader.write(into: $0, receiverIndex: 0xA1B2_C3D4, counter: 0x0102_0304_0506_0708) })
        #expect(Array(out[0..<16]) == [4, 0, 0, 0, 0xD4, 0xC3, 0xB2, 0xA1, 8, 7, 6, 5, 4, 3, 2, 1])
        try out.withUnsafeBytes { b in
            let h = try TransportMessageHeader(b)
            #expect(h.receiverIndex == 0xA1B2_C3D4)
            #expect(h.counter == 0x0102_0304_0506_0708)
            #expect(h.payload.count == 32)
        }
        var tiny = [UInt8](repeating: 0, count: 15)
        #expect(!tiny.withUnsafeMutableBytes { TransportMessageHeader.write(into: $0, receiverIndex: 1, counter: 1) })
    }

    @Test func cookieReplyView() throws {
        var bytes = Self.message(type: 3, length: 64)
        bytes.replaceSubrange(4..<8, with: [0x78, 0x56, 0x34, 0x12])
        try bytes.withUnsafeBytes { b in
            let r = try CookieReplyMessage(b)
            #expect(r.receiverIndex == 0x1234_5678)
            #expect(r.nonce.count == 24 && r.encryptedCookie.count == 32)
        }
    }

    @Test func tai64nLayoutAndRounding() throws {
        // 2^62 + 1_700_000_000 seconds; 123_456_789 ns rounded down to 7 × 2^24 = 117_440_512.
        let t = TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 123_456_789)
        #expect(t.nanoseconds == 117_440_512)
        #expect(Hex.encode(t.bytes) == "400000006553f100" + "07000000")
        #expect(TAI64N(bytes: t.bytes) == t)
        #expect(TAI64N(bytes: [1, 2, 3]) == nil)
        let later = TAI64N(secondsSinceEpoch: 1_700_000_000, nanoseconds: 140_000_000)
        let muchLater = TAI64N(secondsSinceEpoch: 1_700_000_001, nanoseconds: 0)
        #expect(t < later && later < muchLater)
        // Within one 2^24 ns step the timestamps are equal: the whitener hides fine timing.
        #expect(TAI64N(secondsSinceEpoch: 5, nanoseconds: 1) == TAI64N(secondsSinceEpoch: 5, nanoseconds: 16_777_215))
        // Ordering follows the wire bytes, including out-of-range nanoseconds.
        #expect(TAI64N(label: 10, nanoseconds: 0xFFFF_FFFF) < TAI64N(label: 11, nanoseconds: 0))
    }

    /// Random bytes of every length up to 200, with each type byte: classification and the
    /// typed views agree and never trap.
    @Test func arbitraryInputNeverTraps() {
        var rng = SplitMix64(seed: 0x5EED)
        for length in 0...200 {
            for _ in 0..<8 {
                var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if length > 0 { bytes[0] = UInt8(rng.next() % 6) }
                if length > 3 && rng.next() % 2 == 0 { bytes[1] = 0; bytes[2] = 0; bytes[3] = 0 }
                bytes.withUnsafeBytes { b in
                    let c = MessageType.classify(b)
                    let views: [(MessageType, Bool)] = [
                        (.initiation, (try? InitiationMessage(b)) != nil),
                        (.response, (try? ResponseMessage(b)) != nil),
                        (.cookieReply, (try? CookieReplyMessage(b)) != nil),
                        (.transport, (try? TransportMessageHeader(b)) != nil),
                    ]
                    for (type, parsed) in views {
                        #expect(parsed == (c == .success(type)))
                    }
                }
            }
        }
    }
}

/// A small deterministic generator for the fuzz-style tests.
