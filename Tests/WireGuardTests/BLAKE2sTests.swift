import Testing
@testable import WireGuard

// Expected values: RFC 7693 Appendix B and E, and Vectors/blake2s_vectors.py (Python's
// hashlib.blake2s), e.g.
//   hashlib.blake2s(bytes(i % 251 for i in range(n)), key=bytes(range(k)), digest_size=d).hexdigest()
@Suite struct BLAKE2sTests {
    @Test func rfc7693AppendixB_abc() {
        #expect(Hex.encode(BLAKE2s.hash(Array("abc".utf8)))
            == "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    }

    @Test func emptyInput() {
        // hashlib.blake2s(b"").hexdigest()
        #expect(Hex.encode(BLAKE2s.hash([]))
            == "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
    }

    /// RFC 7693 Appendix E: selftest_seq, a Fibonacci-like generator.
    static func selftestSequence(_ count: Int, seed: UInt32) -> [UInt8] {
        var a: UInt32 = 0xDEAD_4BAD &* seed
        var b: UInt32 = 1
        var out = [UInt8]()
        for _ in 0..<count {
            let t = a &+ b
            a = b
            b = t
            out.append(UInt8(truncatingIfNeeded: t >> 24))
        }
        return out
    }

    @Test func rfc7693AppendixE_selfTest() {
        var grand = BLAKE2s(digestLength: 32)
        for outLength in [16, 20, 28, 32] {
            for inLength in [0, 3, 64, 65, 255, 1024] {
                let input = Self.selftestSequence(inLength, seed: UInt32(inLength))
                grand.update(BLAKE2s.hash(input, digestLength: outLength))
                let key = Self.selftestSequence(outLength, seed: UInt32(outLength))
                grand.update(BLAKE2s.hash(input, key: key, digestLength: outLength))
            }
        }
        var digest = [UInt8](repeating: 0, count: 32)
        digest.withUnsafeMutableBytes { grand.finalize(into: $0) }
        #expect(digest == [
            0x6A, 0x41, 0x1F, 0x08, 0xCE, 0x25, 0xAD, 0xCD, 0xFB, 0x02, 0xAB, 0xA6, 0x41, 0x45, 0x1C, 0xEC,
            0x53, 0xC5, 0x98, 0xB2, 0x4F, 0x4F, 0xC7, 0x87, 0xFB, 0xDC, 0x88, 0x79, 0x7F, 0x4C, 0x1D, 0xFE,
        ])
    }

    struct Keyed: Sendable, CustomTestStringConvertible {
        let keyLength: Int, messageLength: Int, digestLength: Int, expected: String
        var testDescription: String { "key \(keyLength) msg \(messageLength) out \(digestLength)" }
    }

    @Test(arguments: [
        Keyed(keyLength: 32, messageLength: 0, digestLength: 32, expected: "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"),
        Keyed(keyLength: 32, messageLength: 1, digestLength: 32, expected: "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"),
        Keyed(keyLength: 32, messageLength: 64, digestLength: 32, expected: "8975b0577fd35566d750b362b0897a26c399136df07bababbde6203ff2954ed4"),
        Keyed(keyLength: 32, messageLength: 65, digestLength: 32, expected: "21fe0ceb0052be7fb0f004187cacd7de67fa6eb0938d927677f2398c132317a8"),
        Keyed(keyLength: 16, messageLength: 200, digestLength: 16, expected: "b8d300fa7937e4d1e67c8468df4c9a43"),
        Keyed(keyLength: 1, messageLength: 3, digestLength: 20, expected: "4946852a2020bdfd855e2f2d0a4f86ada43e6e9e"),
        Keyed(keyLength: 32, messageLength: 1000, digestLength: 28, expected: "31f74a6b004a7a7e356ddffeadb5672e3be392037f2d1e36f73a998d"),
        Keyed(keyLength: 32, messageLength: 63, digestLength: 1, expected: "cc"),
    ])
    func keyedMatchesPython(_ v: Keyed) {
        let key = (0..<v.keyLength).map { UInt8($0) }
        let message = (0..<v.messageLength).map { UInt8($0 % 251) }
        #expect(Hex.encode(BLAKE2s.hash(message, key: key, digestLength: v.digestLength)) == v.expected)
    }

    /// Feeding the input in pieces of any size gives the one-shot digest.
    @Test(arguments: [1, 3, 63, 64, 65, 100])
    func incrementalMatchesOneShot(chunk: Int) {
        let message = (0..<1000).map { UInt8(($0 * 7) % 256) }
        let key = (0..<32).map { UInt8(255 - $0) }
        let expected = BLAKE2s.hash(message, key: key, digestLength: 32)
        var state = key.withUnsafeBytes { BLAKE2s(digestLength: 32, key: $0) }
        var i = 0
        while i < message.count {
            let end = min(i + chunk, message.count)
            message[i..<end].withUnsafeBytes { state.update($0) }
            i = end
        }
        #expect(state.finalize().bytes == expected)
    }

    @Test func finalizeWipesState() {
        var state = BLAKE2s(key: Key32(bytes: [UInt8](repeating: 0xAB, count: 32))!)
        state.update([1, 2, 3])
        _ = state.finalize()
        let raw = withUnsafeBytes(of: &state) { Array($0) }
        // Everything but the digest length is zero.
        #expect(raw.filter { $0 != 0 }.count <= MemoryLayout<Int>.size)
    }
}
