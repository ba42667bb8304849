import CSodium

/// libsodium must be initialised once before use; `sodium_init` is idempotent and
/// thread-safe, so every entry point that touches libsodium calls `Sodium.ensureInitialized()`.
enum Sodium {
    private static let initialized: Bool = sodium_init() >= 0

    @inline(__always)
    static func ensureInitialized() {
        precondition(initialized, "libsodium failed to initialise")
    }

    /// Fills `buffer` from the operating system's CSPRNG.
    static func randomBytes(_ buffer: UnsafeMutableRawBufferPointer) {
        ensureInitialized()
        guard let base = buffer.baseAddress else { return }
        randombytes_buf(base, buffer.count)
    }

    /// Zeroes memory in a way the optimiser cannot remove.
    @inline(__always)
    static func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        sodium_memzero(base, buffer.count)
    }

    /// Constant-time equality of two equally long byte ranges.
    static func constantTimeEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        precondition(a.count == b.count)
        return sodium_memcmp(a.baseAddress, b.baseAddress, a.count) == 0
    }

    /// Constant-time "all bytes are zero".
    static func isZero(_ a: UnsafeRawBufferPointer) -> Bool {
        sodium_is_zero(a.baseAddress?.assumingMemoryBound(to: UInt8.self), a.count) == 1
    }
}

/// Wipes a stack or inline value after use: `defer { wipe(&chainingKey) }`.
@inline(__always)
public func wipe<T: BitwiseCopyable>(_ value: inout T) {
    withUnsafeMutableBytes(of: &value) { Sodium.wipe($0) }
}

/// Zeroes memory that held a secret, in a way the optimiser cannot remove.
public func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
    Sodium.wipe(buffer)
}

/// The operating system's CSPRNG (through libsodium): the production `RandomBytesSource`.
public func systemRandomBytes(_ buffer: UnsafeMutableRawBufferPointer) {
    Sodium.randomBytes(buffer)
}
