import CIPSecMB
import CLibCrypto
import CSodium

/// The libraries that can run the transport AEAD, ChaCha20-Poly1305 (RFC 8439, 96-bit
/// nonce, detached 16-byte tag). All compute the same function; they differ in speed, which
/// depends on the CPU (AVX2, AVX-512) and the packet size, so the gateway measures them at
/// start (`[Gateway] Crypto = auto`). Handshakes, cookies, X25519, randomness and wiping stay
/// with libsodium whatever the backend.
public enum AEADBackend: CaseIterable, Sendable, Hashable, CustomStringConvertible {
    /// libsodium's `crypto_aead_chacha20poly1305_ietf_*_detached`.
    case libsodium
    /// OpenSSL's EVP interface (libcrypto), with a context reused per thread.
    case openssl
    /// Intel's ipsec-mb job API, one job per packet, a manager per thread.
    case ipsecMB

    /// How configuration files, logs and statistics spell it.
    public var name: String {
        switch self {
        case .libsodium: "libsodium"
        case .openssl: "openssl"
        case .ipsecMB: "ipsec-mb"
        }
    }

    public var description: String { name }

    /// The backend spelled `name` (case-insensitive), if any.
    public init?(name: String) {
        guard let backend = AEADBackend.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = backend
    }

    /// The linked library and its version, e.g. "OpenSSL 3.0.19 27 Jan 2026".
    public var libraryVersion: String {
        switch self {
        case .libsodium: "libsodium " + String(cString: sodium_version_string())
        case .openssl: String(cString: OpenSSL_version(OPENSSL_VERSION))
        case .ipsecMB: "ipsec-mb " + String(cString: imb_get_version_str())
        }
    }
}

/// Why a backend could not be set up (`TransportCipher.init`) or failed its known-answer
/// test (`TransportCipher.selfTest`).
public struct TransportCipherError: Error, Sendable, Equatable, CustomStringConvertible {
    public var backend: AEADBackend
    public var reason: String
    public init(_ backend: AEADBackend, _ reason: String) {
        self.backend = backend
        self.reason = reason
    }
    public var description: String { "\(backend.name): \(reason)" }
}

/// One thread's handle on a transport AEAD backend: whatever the backend keeps per thread,
/// allocated once (OpenSSL: one EVP context for sealing and one for opening; ipsec-mb: a
/// multi-buffer manager; libsodium: nothing), and freed, key material included, in deinit.
///
/// Threading: the contexts are not thread-safe, and several workers use one `Keypair` at
/// once, so a cipher belongs to one thread (each worker has its own, the control thread its
/// own) and the key travels with every call. Per call nothing is allocated, locked, retained
/// or dispatched dynamically: a switch on `backend`.
///
/// Memory: `source` and `destination` are the same memory (in place) or disjoint (out of
/// place), never partially overlapping. The tag is written (seal) or read (open) right after
/// the ciphertext.
public struct TransportCipher: ~Copyable {
    public let backend: AEADBackend
    /// OpenSSL only: `EVP_CIPHER_CTX`s with the cipher set, for sealing and for opening.
    private let sealContext: OpaquePointer?
    private let openContext: OpaquePointer?
    /// ipsec-mb only: the manager, initialised for the best code this CPU runs.
    private let manager: UnsafeMutablePointer<IMB_MGR>?
    /// ipsec-mb only: the code it picked for this CPU ("avx2", "avx512", ...).
    public let architecture: String?

    /// libsodium, which needs no per-thread state and cannot fail to set up.
    public init() {
        Sodium.ensureInitialized()
        backend = .libsodium
        sealContext = nil
        openContext = nil
        manager = nil
        architecture = nil
    }

    /// Sets up `backend` for the calling thread (or for the one it is handed to).
    public init(_ backend: AEADBackend) throws(TransportCipherError) {
        Sodium.ensureInitialized()
        var sealContext: OpaquePointer?
        var openContext: OpaquePointer?
        var manager: UnsafeMutablePointer<IMB_MGR>?
        var architectureName: String?
        switch backend {
        case .libsodium:
            break
        case .openssl:
            sealContext = EVP_CIPHER_CTX_new()
            openContext = EVP_CIPHER_CTX_new()
            // The cipher is set once; per packet only the key and the nonce are (EVP reuses the
            // context's fetched cipher when given none).
            guard let s = sealContext, let o = openContext,
                  EVP_CipherInit_ex(s, EVP_chacha20_poly1305(), nil, nil, nil, 1) == 1,
                  EVP_CipherInit_ex(o, EVP_chacha20_poly1305(), nil, nil, nil, 0) == 1
            else {
                EVP_CIPHER_CTX_free(sealContext)
                EVP_CIPHER_CTX_free(openContext)
                throw TransportCipherError(.openssl, "cannot create a ChaCha20-Poly1305 EVP context")
            }
        case .ipsecMB:
            guard let m = alloc_mb_mgr(0) else {
                throw TransportCipherError(.ipsecMB, "cannot allocate a multi-buffer manager")
            }
            var architecture = IMB_ARCH_NONE
            init_mb_mgr_auto(m, &architecture)
            let error = imb_get_errno(m)
            guard error == 0, architecture != IMB_ARCH_NONE else {
                free_mb_mgr(m)
                throw TransportCipherError(.ipsecMB, "cannot initialise a multi-buffer manager for this CPU: "
                                           + String(cString: imb_get_strerror(error)))
            }
            manager = m
            architectureName = switch architecture {
            case IMB_ARCH_NOAESNI: "noaesni"
            case IMB_ARCH_SSE: "sse"
            case IMB_ARCH_AVX: "avx"
            case IMB_ARCH_AVX2: "avx2"
            case IMB_ARCH_AVX512: "avx512"
            default: "arch \(architecture.rawValue)"
            }
        }
        self.backend = backend
        self.sealContext = sealContext
        self.openContext = openContext
        self.manager = manager
        self.architecture = architectureName
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the context, and with it the last packet's key.
        EVP_CIPHER_CTX_free(sealContext)
        EVP_CIPHER_CTX_free(openContext)
        // ipsec-mb's jobs hold pointers to keys, not copies.
        if let manager { free_mb_mgr(manager) }
    }

    // MARK: WireGuard's nonce

    /// Seals `length` bytes at `source` into `destination` under WireGuard's nonce for
    /// `counter` (4 zero bytes ‖ the little-endian counter), the tag at `destination + length`.
    /// False only if the backend reported an error (`destination` then holds no plaintext).
    @inline(__always)
    public func seal(key: UnsafeRawPointer, counter: UInt64, source: UnsafeRawPointer, length: Int,
                     destination: UnsafeMutableRawPointer) -> Bool {
        var nonce = AEAD.nonce(counter)
        return withUnsafeBytes(of: &nonce) {
            seal(key: key, nonce: $0.baseAddress!, source: source, length: length, destination: destination)
        }
    }

    /// Opens `length` ciphertext bytes at `source`, their tag at `source + length`, into
    /// `destination` under WireGuard's nonce for `counter`. False when the tag does not verify
    /// (or the backend reported an error); `destination` is then unspecified.
    @inline(__always)
    public func open(key: UnsafeRawPointer, counter: UInt64, source: UnsafeRawPointer, length: Int,
                     destination: UnsafeMutableRawPointer) -> Bool {
        var nonce = AEAD.nonce(counter)
        return withUnsafeBytes(of: &nonce) {
            open(key: key, nonce: $0.baseAddress!, source: source, length: length, destination: destination)
        }
    }

    // MARK: Any 12-byte nonce (the RFC's test vectors)

    /// As `seal(key:counter:...)` with the 12 bytes at `nonce` and optional additional data.
    @inline(__always)
    public func seal(key: UnsafeRawPointer, nonce: UnsafeRawPointer, source: UnsafeRawPointer, length: Int,
                     destination: UnsafeMutableRawPointer,
                     additionalData: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Bool {
        let tag = destination + length
        switch backend {
        case .libsodium:
            return crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                destination.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self), nil,
                source.assumingMemoryBound(to: UInt8.self), UInt64(length),
                additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
                nil, nonce.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self)) == 0
        case .openssl:
            let context = sealContext
            var written: Int32 = 0
            guard EVP_CipherInit_ex(context, nil, nil, key.assumingMemoryBound(to: UInt8.self),
                                    nonce.assumingMemoryBound(to: UInt8.self), 1) == 1,
                  additionalData.isEmpty
                    || EVP_CipherUpdate(context, nil, &written, additionalData.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                        Int32(additionalData.count)) == 1,
                  length == 0
                    || EVP_CipherUpdate(context, destination.assumingMemoryBound(to: UInt8.self), &written,
                                        source.assumingMemoryBound(to: UInt8.self), Int32(length)) == 1,
                  // A stream cipher: Final writes no bytes, it computes the tag.
                  EVP_CipherFinal_ex(context, tag.assumingMemoryBound(to: UInt8.self), &written) == 1,
                  EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_GET_TAG, Int32(AEAD.tagSize), tag) == 1
            else {
                destination.initializeMemory(as: UInt8.self, repeating: 0, count: length + AEAD.tagSize)
                return false
            }
            return true
        case .ipsecMB:
            guard xdpwg_imb_chacha20poly1305(manager, key, nonce, additionalData.baseAddress,
                                             UInt64(additionalData.count), source, destination, UInt64(length),
                                             tag, 1) == 1
            else {
                destination.initializeMemory(as: UInt8.self, repeating: 0, count: length + AEAD.tagSize)
                return false
            }
            return true
        }
    }

    /// As `open(key:counter:...)` with the 12 bytes at `nonce` and optional additional data.
    @inline(__always)
    public func open(key: UnsafeRawPointer, nonce: UnsafeRawPointer, source: UnsafeRawPointer, length: Int,
                     destination: UnsafeMutableRawPointer,
                     additionalData: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0)) -> Bool {
        let tag = source + length
        switch backend {
        case .libsodium:
            return crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                destination.assumingMemoryBound(to: UInt8.self), nil,
                source.assumingMemoryBound(to: UInt8.self), UInt64(length), tag.assumingMemoryBound(to: UInt8.self),
                additionalData.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(additionalData.count),
                nonce.assumingMemoryBound(to: UInt8.self), key.assumingMemoryBound(to: UInt8.self)) == 0
        case .openssl:
            let context = openContext
            var written: Int32 = 0
            // The expected tag goes in before the data; Final compares it (in constant time).
            return EVP_CipherInit_ex(context, nil, nil, key.assumingMemoryBound(to: UInt8.self),
                                     nonce.assumingMemoryBound(to: UInt8.self), 0) == 1
                && EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_AEAD_SET_TAG, Int32(AEAD.tagSize),
                                       UnsafeMutableRawPointer(mutating: tag)) == 1
                && (additionalData.isEmpty
                    || EVP_CipherUpdate(context, nil, &written, additionalData.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                        Int32(additionalData.count)) == 1)
                && (length == 0
                    || EVP_CipherUpdate(context, destination.assumingMemoryBound(to: UInt8.self), &written,
                                        source.assumingMemoryBound(to: UInt8.self), Int32(length)) == 1)
                && EVP_CipherFinal_ex(context, destination.assumingMemoryBound(to: UInt8.self) + length, &written) == 1
        case .ipsecMB:
            // ipsec-mb decrypts and hands back the tag the ciphertext should have; comparing it
            // with the received one is ours to do, in constant time.
            var expected: (UInt64, UInt64) = (0, 0)
            return withUnsafeMutableBytes(of: &expected) { computed in
                xdpwg_imb_chacha20poly1305(manager, key, nonce, additionalData.baseAddress,
                                           UInt64(additionalData.count), source, destination, UInt64(length),
                                           computed.baseAddress, 0) == 1
                    && sodium_memcmp(computed.baseAddress, tag, AEAD.tagSize) == 0
            }
        }
    }
}
