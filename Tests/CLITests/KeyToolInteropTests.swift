import Foundation
import TestSupport
import Testing

/// `xdpwg genkey | pubkey | genpsk` against the real `wg` tool, byte for byte.
@Suite struct KeyToolInteropTests {
    @Test func wgAndXdpwgDeriveTheSamePublicKeyFromWgKeys() throws {
        let xdpwg = try Command.xdpwg
        for _ in 0..<20 {
            let key = try Command.run(["wg", "genkey"])
            let expected = try Command.run(["wg", "pubkey"], input: key)
            let actual = try Command.run([xdpwg, "pubkey"], input: key)
            #expect(actual == expected)
            #expect(actual.count == 45) // 44 base64 characters and a newline, as wg prints
        }
    }

    @Test func wgAcceptsXdpwgKeysAndAgreesOnTheirPublicKeys() throws {
        let xdpwg = try Command.xdpwg
        for _ in 0..<20 {
            let key = try Command.run([xdpwg, "genkey"])
            #expect(key.count == 45)
            #expect(try Command.run(["wg", "pubkey"], input: key) == Command.run([xdpwg, "pubkey"], input: key))
        }
    }

    @Test func generatedKeysAreAlreadyClamped() throws {
        // A clamped key is unchanged by clamping: decode, clamp, re-encode and compare.
        let xdpwg = try Command.xdpwg
        for _ in 0..<20 {
            let key = try Command.run([xdpwg, "genkey"]).trimmingCharacters(in: .whitespacesAndNewlines)
            var bytes = try #require(Data(base64Encoded: key))
            bytes[0] &= 248
            bytes[31] = (bytes[31] & 127) | 64
            #expect(bytes.base64EncodedString() == key)
        }
    }

    @Test func genpskIsAValidWgKey() throws {
        let xdpwg = try Command.xdpwg
        let psk = try Command.run([xdpwg, "genpsk"])
        #expect(psk.count == 45)
        // `wg pubkey` parses any 32-byte base64 key: it must accept ours.
        _ = try Command.run(["wg", "pubkey"], input: psk)
    }

    @Test func pubkeyRejectsMalformedInputLikeWg() throws {
        let xdpwg = try Command.xdpwg
        for bad in ["", "not a key\n", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmp=\n"] {
            let (wgStatus, _, _) = try Command.runAllowingFailure(["wg", "pubkey"], input: bad)
            let (status, out, err) = try Command.runAllowingFailure([xdpwg, "pubkey"], input: bad)
            #expect(wgStatus != 0)
            #expect(status != 0)
            #expect(out.isEmpty)
            #expect(err.contains("not a base64 WireGuard private key"))
        }
    }
}
