import Testing
@testable import WireGuard

// Expected values from Vectors/blake2s_vectors.py:
//   hmac.new(key, msg, hashlib.blake2s).hexdigest()
//   KDF_n: prk = HMAC(key, input); t1 = HMAC(prk, 0x01); ti = HMAC(prk, t(i-1) || i)
@Suite struct KDFTests {
    struct HMACVector: Sendable, CustomTestStringConvertible {
        let keyLength: Int, messageLength: Int, expected: String
        var testDescription: String { "key \(keyLength) msg \(messageLength)" }
    }

    @Test(arguments: [
        HMACVector(keyLength: 32, messageLength: 0, expected: "6742cb7da299ece6134643a2648547e903a0069f820ce3928bbdfe0f8fdd5eb3"),
        HMACVector(keyLength: 32, messageLength: 33, expected: "f2ff918dda1fe635626a33097fbc5cf647d614443febc6ff9a4b68d80cdcfbf2"),
        HMACVector(keyLength: 0, messageLength: 10, expected: "0dac3de8b0a9703b457187b65eefbf38e5480c653305963293dfb7bee316946f"),
        HMACVector(keyLength: 64, messageLength: 100, expected: "9158a5483c1e9d784a954416671e3d138d86e6898479431a4c416ac5fa39db2a"),
        HMACVector(keyLength: 100, messageLength: 64, expected: "e1c3dfea29833cb43598de5e85a87ea861199f6f42d284dab90a6dfffc3fc6a7"),
    ])
    func hmacMatchesPython(_ v: HMACVector) {
        let key = (0..<v.keyLength).map { UInt8((7 * $0 + 1) % 256) }
        let message = (0..<v.messageLength).map { UInt8((3 * $0) % 256) }
        #expect(Hex.encode(HMACBLAKE2s.authenticate(key: key, data: message)) == v.expected)
    }

    struct KDFVector: Sendable, CustomTestStringConvertible {
        let inputLength: Int, expected: [String]
        var testDescription: String { "input \(inputLength)" }
    }

    @Test(arguments: [
        KDFVector(inputLength: 0, expected: [
            "7a38c34bf2b8738d7374ca77c44ecb309a11d2b2528304fa86052c365e722624",
            "1a17621f346abdc520746a9fb64d8eb03231d674fc15687537b0780fd9c060fd",
            "4eaf02809ac4b930ef63479de62275f1c55656e61f78a3cc653c18a2223d6c5f"]),
        KDFVector(inputLength: 32, expected: [
            "de1ad4bce33d3784a0e77d2452e5b6a68cb3fee496657f93a598d0ddf782249a",
            "29b6d643e2c1b7a2245a658b45486ea290cbfa6e464c86ae6de62c83aa46b172",
            "cc6b8410c72a65c9ab62a6cfa93a6d5458d6c98582cecf3fc6e5d5f75261dd02"]),
        KDFVector(inputLength: 50, expected: [
            "4aca39341e0ded642b04c0c2a993af86c80187582a5ce7991e4c94b135f977a3",
            "0b1060966332bd4ef7d4cd99574a106e9e3aa972916528e94852417e0fb28d24",
            "e558a28f56e84f5124e6b370dcaeb05bcb26d7162041433766aa6a42d55ca0fd"]),
    ])
    func kdfMatchesPython(_ v: KDFVector) {
        let key = (0..<32).map { UInt8($0) }
        let input = (0..<v.inputLength).map { UInt8((255 - $0) % 256) }
        // KDF_n's outputs are prefixes of KDF_3's.
        for n in 1...3 {
            #expect(KDF.derive(key: key, input: input, count: n).map { Hex.encode($0) } == Array(v.expected.prefix(n)))
        }
    }

    @Test func kdfWithKey32Input() throws {
        let key = try #require(Key32(bytes: (0..<32).map { UInt8($0) }))
        let input = try #require(Key32(bytes: (0..<32).map { UInt8(255 - $0) }))
        let (a, b) = KDF.kdf2(key: key, input: input)
        #expect(a.hex == "de1ad4bce33d3784a0e77d2452e5b6a68cb3fee496657f93a598d0ddf782249a")
        #expect(b.hex == "29b6d643e2c1b7a2245a658b45486ea290cbfa6e464c86ae6de62c83aa46b172")
    }
}
