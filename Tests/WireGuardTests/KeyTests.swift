import Testing
@testable import WireGuard

@Suite struct KeyTests {
    // RFC 7748 §6.1.
    let alicePrivateHex = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
    let alicePublicHex = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    let bobPrivateHex = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
    let bobPublicHex = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    let sharedHex = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

    @Test func publicKeyMatchesRFC7748() throws {
        let alice = try #require(PrivateKey(hex: alicePrivateHex))
        #expect(alice.publicKey.key.hex == alicePublicHex)
        let bob = try #require(PrivateKey(hex: bobPrivateHex))
        #expect(bob.publicKey.key.hex == bobPublicHex)
    }

    @Test func sharedSecretMatchesRFC7748() throws {
        let alice = try #require(PrivateKey(hex: alicePrivateHex))
        let bob = try #require(PrivateKey(hex: bobPrivateHex))
        var ab = Key32(), ba = Key32()
        #expect(alice.sharedSecret(with: bob.publicKey, into: &ab))
        #expect(bob.sharedSecret(with: alice.publicKey, into: &ba))
        #expect(ab.hex == sharedHex)
        #expect(ab == ba)
    }

    @Test func lowOrderPointIsRejected() throws {
        let alice = try #require(PrivateKey(hex: alicePrivateHex))
        var out = Key32()
        #expect(!alice.sharedSecret(with: PublicKey(Key32()), into: &out))
    }

    @Test func base64RoundTripsAndMatchesKnownEncoding() throws {
        let k = try #require(Key32(hex: alicePublicHex))
        // Independently computed with Python's base64 module.
        #expect(k.base64 == "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")
        #expect(Key32(base64: k.base64) == k)
        #expect(Key32(hex: k.hex) == k)
        #expect(Key32(hex: alicePublicHex.uppercased()) == k)
    }

    @Test(arguments: [
        "",                                                // empty
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",     // 43 characters
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo==",   // 45 characters
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmoA",    // no padding
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=",    // non-canonical trailing bits
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066Spjqqb*mo=",    // invalid character
        "hSDwCYkwp1R0i33ctD73Wg2-Og0mOBr066SpjqqbTmo=",    // URL-safe alphabet
    ])
    func malformedBase64IsRejected(_ text: String) {
        #expect(Key32(base64: text) == nil)
    }

    @Test(arguments: [
        "", String(repeating: "0", count: 63), String(repeating: "0", count: 65),
        String(repeating: "g", count: 64), String(repeating: "0", count: 62) + "0x",
    ])
    func malformedHexIsRejected(_ text: String) {
        #expect(Key32(hex: text) == nil)
    }

    @Test func generatedPrivateKeysAreClampedAndDistinct() {
        let a = PrivateKey.generate(), b = PrivateKey.generate()
        #expect(!a.secret.equals(b.secret))
        var raw = a.secret.unsafeValue
        defer { raw.wipe() }
        let bytes = raw.bytes
        #expect(bytes[0] & 7 == 0)
        #expect(bytes[31] & 0x80 == 0)
        #expect(bytes[31] & 0x40 == 0x40)
    }

    @Test func parsingClampsLikeWg() throws {
        // An unclamped scalar and its clamped form have the same public key and secret.
        let raw = String(repeating: "ff", count: 32)
        let key = try #require(PrivateKey(hex: raw))
        #expect(key.secret.hexForDisplay == "f8" + String(repeating: "ff", count: 30) + "7f")
    }

    @Test func constantTimeEqualityDistinguishesEveryByte() {
        let base = Key32()
        for i in 0..<32 {
            var other = Key32()
            other.withUnsafeMutableBytes { $0[i] = 1 }
            #expect(base != other)
        }
        #expect(Key32() == Key32.zero)
        #expect(Key32().isZero)
    }
}
