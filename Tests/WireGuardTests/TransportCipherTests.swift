import CSodium
import Testing
@testable import WireGuard

/// Every transport AEAD backend against the RFC, against libsodium, and against each other.
@Suite struct TransportCipherTests {
    static let backends = AEADBackend.allCases

    /// Runs `body` with a fresh cipher of `backend` (each backend must set up on this machine:
    /// the build needs all three libraries, and all run on any x86-64).
    static func with<R>(_ backend: AEADBackend, _ body: (borrowing TransportCipher) throws -> R) throws -> R {
        let cipher = try TransportCipher(backend)
        return try body(cipher)
    }

    // MARK: RFC 8439 §2.8.2

    static func rfcSeal(_ cipher: borrowing TransportCipher, inPlace: Bool) -> [UInt8]? {
        let v = RFC8439Vector.self
        var buffer = v.plaintext + [UInt8](repeating: 0, count: 16)
        var out = [UInt8](repeating: 0, count: v.plaintext.count + 16)
        let ok = v.key.withUnsafeBytes { k in
            v.nonce.withUnsafeBytes { n in
                v.additionalData.withUnsafeBytes { ad in
                    buffer.withUnsafeMutableBytes { b in
                        out.withUnsafeMutableBytes { o in
                            cipher.seal(key: k.baseAddress!, nonce: n.baseAddress!, source: b.baseAddress!,
                                        length: v.plaintext.count, destination: inPlace ? b.baseAddress! : o.baseAddress!,
                                        additionalData: ad)
                        }
                    }
                }
            }
        }
        return ok ? (inPlace ? buffer : out) : nil
    }

    static func rfcOpen(_ cipher: borrowing TransportCipher, _ sealed: [UInt8], inPlace: Bool,
                        additionalData: [UInt8] = RFC8439Vector.additionalData) -> [UInt8]? {
        let v = RFC8439Vector.self
        var buffer = sealed
        let length = sealed.count - 16
        var out = [UInt8](repeating: 0, count: length)
        let ok = v.key.withUnsafeBytes { k in
            v.nonce.withUnsafeBytes { n in
                additionalData.withUnsafeBytes { ad in
                    buffer.withUnsafeMutableBytes { b in
                        out.withUnsafeMutableBytes { o in
                            cipher.open(key: k.baseAddress!, nonce: n.baseAddress!, source: b.baseAddress!,
                                        length: length, destination: inPlace ? b.baseAddress! : o.baseAddress!,
                                        additionalData: ad)
                        }
                    }
                }
            }
        }
        return ok ? (inPlace ? Array(buffer.prefix(length)) : out) : nil
    }

    @Test(arguments: backends, [false, true]) func rfc8439AEADVector(backend: AEADBackend, inPlace: Bool) throws {
        let v = RFC8439Vector.self
        try Self.with(backend) { cipher in
            #expect(Self.rfcSeal(cipher, inPlace: inPlace) == v.ciphertext + v.tag)
            #expect(Self.rfcOpen(cipher, v.ciphertext + v.tag, inPlace: inPlace) == v.plaintext)
            // A wrong tag, a changed ciphertext byte, changed additional data: all refused.
            for index in [0, 57, v.ciphertext.count - 1, v.ciphertext.count, v.ciphertext.count + 15] {
                var forged = v.ciphertext + v.tag
                forged[index] ^= 0x80
                #expect(Self.rfcOpen(cipher, forged, inPlace: inPlace) == nil, "byte \(index)")
            }
            var otherData = v.additionalData
            otherData[0] ^= 1
            #expect(Self.rfcOpen(cipher, v.ciphertext + v.tag, inPlace: inPlace, additionalData: otherData) == nil)
            // Still usable after a refusal (no state left behind in a reused context).
            #expect(Self.rfcOpen(cipher, v.ciphertext + v.tag, inPlace: inPlace) == v.plaintext)
        }
    }

    @Test(arguments: backends) func selfTestPasses(backend: AEADBackend) throws {
        try Self.with(backend) { try $0.selfTest() }
    }

    // MARK: WireGuard's nonce against libsodium

    /// libsodium's bytes for WireGuard's nonce, computed here without any backend: 4 zero bytes
    /// and the counter in little-endian order, handed to libsodium directly.
    static func libsodiumReference(key: [UInt8], counter: UInt64, plaintext: [UInt8]) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 4) + withUnsafeBytes(of: counter.littleEndian) { Array($0) }
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        out.withUnsafeMutableBytes { o in
            _ = crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                o.baseAddress!.assumingMemoryBound(to: UInt8.self),
                o.baseAddress!.assumingMemoryBound(to: UInt8.self) + plaintext.count, nil,
                plaintext, UInt64(plaintext.count), nil, 0, nil, &nonce, key)
        }
        return out
    }

    static let lengths = [0, 1, 15, 16, 17, 64, 1420, 1440, 8000]
    /// Every byte of the counter differs from every other and from zero.
    static let counters: [UInt64] = [0, 1, 0x8877_6655_4433_2211, 0xfeff_ffff_ffff_fffe]

    @Test(arguments: backends, lengths) func wireGuardNonceMatchesLibsodium(backend: AEADBackend, length: Int) throws {
        let key = (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ length) }
        let plaintext = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        try Self.with(backend) { cipher in
            for counter in Self.counters {
                let expected = Self.libsodiumReference(key: key, counter: counter, plaintext: plaintext)
                // Out of place.
                var sealed = [UInt8](repeating: 0, count: length + 16)
                let ok = key.withUnsafeBytes { k in
                    plaintext.withUnsafeBytes { p in
                        sealed.withUnsafeMutableBytes { o in
                            cipher.seal(key: k.baseAddress!, counter: counter,
                                        source: p.baseAddress ?? UnsafeRawPointer(o.baseAddress!), length: length,
                                        destination: o.baseAddress!)
                        }
                    }
                }
                #expect(ok)
                #expect(sealed == expected, "counter \(counter)")
                // In place, both ways.
                var buffer = plaintext + [UInt8](repeating: 0, count: 16)
                let sealedInPlace = key.withUnsafeBytes { k in
                    buffer.withUnsafeMutableBytes { b in
                        cipher.seal(key: k.baseAddress!, counter: counter, source: b.baseAddress!, length: length,
                                    destination: b.baseAddress!)
                    }
                }
                #expect(sealedInPlace && buffer == expected, "in place, counter \(counter)")
                let opened = key.withUnsafeBytes { k in
                    buffer.withUnsafeMutableBytes { b in
                        cipher.open(key: k.baseAddress!, counter: counter, source: b.baseAddress!, length: length,
                                    destination: b.baseAddress!)
                    }
                }
                #expect(opened && Array(buffer.prefix(length)) == plaintext, "open in place, counter \(counter)")
                // The wrong counter does not open.
                var scratch = [UInt8](repeating: 0, count: max(length, 1))
                let wrong = key.withUnsafeBytes { k in
                    expected.withUnsafeBytes { e in
                        scratch.withUnsafeMutableBytes { o in
                            cipher.open(key: k.baseAddress!, counter: counter ^ (1 << 56), source: e.baseAddress!,
                                        length: length, destination: o.baseAddress!)
                        }
                    }
                }
                #expect(!wrong, "a message sealed under counter \(counter) opened under another")
            }
        }
    }

    // MARK: Keypairs across backends

    /// What one backend seals, every other opens (in place and out of place): a gateway's
    /// backend is invisible to its peers.
    @Test(arguments: backends, backends) func keypairSealedByOneOpensWithAnother(sealer: AEADBackend, opener: AEADBackend) throws {
        for n in [0, 1, 100, 1420] {
            let s = SessionPair()
            let p = TransportTests.plaintext(n)
            let m1 = try #require(Transport.seal(s.a, p, backend: sealer).value)
            let m2 = try #require(Transport.sealInPlace(s.a, p, backend: sealer).value)
            #expect(Transport.open(s.b, m1, backend: opener).value == TransportTests.padded(p))
            #expect(Transport.openInPlace(s.b, m2, backend: opener).value == TransportTests.padded(p))
        }
    }

    @Test func backendNames() {
        #expect(AEADBackend.allCases.map(\.name) == ["libsodium", "openssl", "ipsec-mb"])
        #expect(AEADBackend(name: "IPsec-MB") == .ipsecMB)
        #expect(AEADBackend(name: "OpenSSL") == .openssl)
        #expect(AEADBackend(name: "ipsecmb") == nil)
        for backend in AEADBackend.allCases { #expect(!backend.libraryVersion.isEmpty) }
        #expect(AEADBackend.openssl.libraryVersion.hasPrefix("OpenSSL "))
        #expect(AEADBackend.ipsecMB.libraryVersion.hasPrefix("ipsec-mb "))
    }
}
