extension TransportCipher {
    /// Checks this backend on this CPU before it carries traffic: the AEAD test vector of
    /// RFC 8439 §2.8.2 sealed and opened out of place and in place, a flipped tag bit and a
    /// flipped ciphertext bit rejected, and WireGuard's nonce (4 zero bytes ‖ a little-endian
    /// counter using all 8 bytes) giving libsodium's bytes for every length that matters to
    /// the transport (empty, partial and whole blocks, a full-MTU packet). Allocates: for start-up
    /// and tests, not for the data path.
    public func selfTest() throws(TransportCipherError) {
        let v = RFC8439Vector.self
        func fail(_ what: String) -> TransportCipherError {
            TransportCipherError(backend, "fails its known-answer test (\(what))")
        }
        let sealed = v.key.withUnsafeBytes { key in
            v.nonce.withUnsafeBytes { nonce in
                v.additionalData.withUnsafeBytes { ad in
                    v.plaintext.withUnsafeBytes { plain in
                        var out = [UInt8](repeating: 0, count: v.plaintext.count + AEAD.tagSize)
                        let ok = out.withUnsafeMutableBytes {
                            seal(key: key.baseAddress!, nonce: nonce.baseAddress!, source: plain.baseAddress!,
                                 length: plain.count, destination: $0.baseAddress!, additionalData: ad)
                        }
                        return ok ? out : nil
                    }
                }
            }
        }
        guard sealed == v.ciphertext + v.tag else { throw fail("RFC 8439 §2.8.2 seal, out of place") }
        var inPlace = v.plaintext + [UInt8](repeating: 0, count: AEAD.tagSize)
        guard rfcVector(&inPlace, seal: true), inPlace == v.ciphertext + v.tag else {
            throw fail("RFC 8439 §2.8.2 seal, in place")
        }
        guard rfcVector(&inPlace, seal: false), Array(inPlace.prefix(v.plaintext.count)) == v.plaintext else {
            throw fail("RFC 8439 §2.8.2 open, in place")
        }
        let opened: [UInt8]? = v.key.withUnsafeBytes { key in
            v.nonce.withUnsafeBytes { nonce in
                v.additionalData.withUnsafeBytes { ad in
                    (v.ciphertext + v.tag).withUnsafeBytes { sealed in
                        var out = [UInt8](repeating: 0, count: v.plaintext.count)
                        let ok = out.withUnsafeMutableBytes {
                            open(key: key.baseAddress!, nonce: nonce.baseAddress!, source: sealed.baseAddress!,
                                 length: v.plaintext.count, destination: $0.baseAddress!, additionalData: ad)
                        }
                        return ok ? out : nil
                    }
                }
            }
        }
        guard opened == v.plaintext else { throw fail("RFC 8439 §2.8.2 open, out of place") }
        for flipped in [0, v.ciphertext.count + 15] {
            var forged = v.ciphertext + v.tag
            forged[flipped] ^= 0x01
            guard !rfcVector(&forged, seal: false) else { throw fail("a forged message was accepted") }
        }

        let reference = TransportCipher()
        for length in TransportCipher.selfTestLengths {
            let key = (0..<AEAD.keySize).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ length) }
            let plain = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
            let counter: UInt64 = 0x8877_6655_4433_2211
            let expected = wireGuardSeal(reference, key: key, counter: counter, plaintext: plain)
            guard wireGuardSeal(self, key: key, counter: counter, plaintext: plain) == expected else {
                throw fail("WireGuard nonce, \(length) bytes, differs from libsodium")
            }
        }
    }

    /// The plaintext lengths the WireGuard-nonce check covers.
    public static let selfTestLengths = [0, 1, 15, 16, 17, 64, 1420, 1440]

    /// Seals (or opens) the RFC vector in place in `message` (payload then tag).
    private func rfcVector(_ message: inout [UInt8], seal sealing: Bool) -> Bool {
        let v = RFC8439Vector.self
        return v.key.withUnsafeBytes { key in
            v.nonce.withUnsafeBytes { nonce in
                v.additionalData.withUnsafeBytes { ad in
                    message.withUnsafeMutableBytes { m in
                        sealing
                            ? seal(key: key.baseAddress!, nonce: nonce.baseAddress!, source: m.baseAddress!,
                                   length: v.plaintext.count, destination: m.baseAddress!, additionalData: ad)
                            : open(key: key.baseAddress!, nonce: nonce.baseAddress!, source: m.baseAddress!,
                                   length: v.plaintext.count, destination: m.baseAddress!, additionalData: ad)
                    }
                }
            }
        }
    }
}

/// Ciphertext and tag of `plaintext` under WireGuard's nonce for `counter`, nil on failure.
func wireGuardSeal(_ cipher: borrowing TransportCipher, key: [UInt8], counter: UInt64, plaintext: [UInt8]) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: plaintext.count + AEAD.tagSize)
    let ok = key.withUnsafeBytes { k in
        plaintext.withUnsafeBytes { p in
            out.withUnsafeMutableBytes { o in
                cipher.seal(key: k.baseAddress!, counter: counter, source: p.baseAddress ?? UnsafeRawPointer(o.baseAddress!),
                            length: p.count, destination: o.baseAddress!)
            }
        }
    }
    return ok ? out : nil
}

/// RFC 8439 §2.8.2, "Example and Test Vector for AEAD_CHACHA20_POLY1305".
public enum RFC8439Vector {
    public static let key: [UInt8] = Array(0x80...0x9f)
    /// The constant 07 00 00 00, then the 8-byte IV 40..47.
    public static let nonce: [UInt8] = [0x07, 0x00, 0x00, 0x00, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47]
    public static let additionalData: [UInt8] = [0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7]
    public static let plaintext = Array(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
    public static let ciphertext: [UInt8] = [
        0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb, 0x7b, 0x86, 0xaf, 0xbc, 0x53, 0xef, 0x7e, 0xc2,
        0xa4, 0xad, 0xed, 0x51, 0x29, 0x6e, 0x08, 0xfe, 0xa9, 0xe2, 0xb5, 0xa7, 0x36, 0xee, 0x62, 0xd6,
        0x3d, 0xbe, 0xa4, 0x5e, 0x8c, 0xa9, 0x67, 0x12, 0x82, 0xfa, 0xfb, 0x69, 0xda, 0x92, 0x72, 0x8b,
        0x1a, 0x71, 0xde, 0x0a, 0x9e, 0x06, 0x0b, 0x29, 0x05, 0xd6, 0xa5, 0xb6, 0x7e, 0xcd, 0x3b, 0x36,
        0x92, 0xdd, 0xbd, 0x7f, 0x2d, 0x77, 0x8b, 0x8c, 0x98, 0x03, 0xae, 0xe3, 0x28, 0x09, 0x1b, 0x58,
        0xfa, 0xb3, 0x24, 0xe4, 0xfa, 0xd6, 0x75, 0x94, 0x55, 0x85, 0x80, 0x8b, 0x48, 0x31, 0xd7, 0xbc,
        0x3f, 0xf4, 0xde, 0xf0, 0x8e, 0x4b, 0x7a, 0x9d, 0xe5, 0x76, 0xd2, 0x65, 0x86, 0xce, 0xc6, 0x4b,
        0x61, 0x16,
    ]
    public static let tag: [UInt8] = [
        0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06, 0x91,
    ]
}
