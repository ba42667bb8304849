/// The WireGuard wire format (whitepaper §5.4, the kernel's messages.h): typed read-only views
/// over received bytes and writers into caller-provided buffers. Every field is little-endian.
/// Parsing never traps: any input yields either a view or a named `MessageError`.
///
/// The views hold an `UnsafeRawBufferPointer`: they are valid only while the memory they were
/// made from is, and must not be stored beyond that.

/// Why bytes are not a well-formed WireGuard message.
public enum MessageError: Error, Equatable, Sendable {
    /// Fewer bytes than the message type needs (or than a header).
    case tooShort
    /// A fixed-size message (initiation, response, cookie reply) with trailing bytes.
    case wrongLength
    /// The type byte is not 1–4.
    case unknownType
    /// Bytes 1–3 are not zero.
    case reservedNotZero
    /// The bytes are a valid message of another type than the one asked for.
    case unexpectedType
}

@inline(__always)
private func loadLE32(_ p: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always)
private func storeLE32(_ p: UnsafeMutableRawBufferPointer, _ offset: Int, _ v: UInt32) {
    p.storeBytes(of: v.littleEndian, toByteOffset: offset, as: UInt32.self)
}

extension MessageType {
    /// The 4-byte header: type, then three zero bytes.
    public static let headerSize = 4

    /// Classifies received bytes by their header and length: the message type, or why they
    /// are not a WireGuard message. Never traps.
    public static func classify(_ bytes: UnsafeRawBufferPointer) -> Result<MessageType, MessageError> {
        guard bytes.count >= headerSize else { return .failure(.tooShort) }
        guard let type = MessageType(rawValue: bytes[0]) else { return .failure(.unknownType) }
        guard bytes[1] | bytes[2] | bytes[3] == 0 else { return .failure(.reservedNotZero) }
        let minimum: Int
        var exact = true
        switch type {
        case .initiation: minimum = WireGuardProtocol.initiationSize
        case .response: minimum = WireGuardProtocol.responseSize
        case .cookieReply: minimum = WireGuardProtocol.cookieReplySize
        case .transport: minimum = WireGuardProtocol.keepaliveSize; exact = false
        }
        if bytes.count < minimum { return .failure(.tooShort) }
        if exact && bytes.count != minimum { return .failure(.wrongLength) }
        return .success(type)
    }

    public static func classify(_ bytes: [UInt8]) -> Result<MessageType, MessageError> {
        bytes.withUnsafeBytes { classify($0) }
    }

    /// Validates `bytes` as a message of type `expected`: a header of another type is
    /// `.unexpectedType` whatever the length.
    @inline(__always)
    static func validate(_ bytes: UnsafeRawBufferPointer, as expected: MessageType) throws(MessageError) {
        switch classify(bytes) {
        case .success(let t):
            if t != expected { throw .unexpectedType }
        case .failure(let e):
            if (e == .tooShort || e == .wrongLength) && bytes.count >= headerSize && bytes[0] != expected.rawValue {
                throw .unexpectedType
            }
            throw e
        }
    }

    /// Writes the header (type and three zero bytes) at the start of `out`.
    @inline(__always)
    static func writeHeader(_ type: MessageType, into out: UnsafeMutableRawBufferPointer) {
        out[0] = type.rawValue
        out[1] = 0
        out[2] = 0
        out[3] = 0
    }
}

// MARK: - Handshake initiation (type 1, 148 bytes)

/// type(1) reserved(3) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
public struct InitiationMessage {
    public static let size = WireGuardProtocol.initiationSize
    public enum Offset {
        public static let sender = 4
        public static let ephemeral = 8
        public static let encryptedStatic = 40
        public static let encryptedTimestamp = 88
        public static let mac1 = 116
        public static let mac2 = 132
    }
    public static let encryptedStaticSize = 32 + AEAD.tagSize
    public static let encryptedTimestampSize = TAI64N.byteCount + AEAD.tagSize

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(MessageError) {
        try MessageType.validate(bytes, as: .initiation)
        self.bytes = bytes
    }

    public var senderIndex: UInt32 { loadLE32(bytes, Offset.sender) }
    public var ephemeral: PublicKey {
        PublicKey(Key32(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.ephemeral..<Offset.encryptedStatic])))
    }
    public var encryptedStatic: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.encryptedStatic..<Offset.encryptedTimestamp])
    }
    public var encryptedTimestamp: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.encryptedTimestamp..<Offset.mac1])
    }
    public var mac1: MAC16 { MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.mac1...])) }
    public var mac2: MAC16 { MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.mac2...])) }

    /// Lays a complete initiation out at the start of `out`; returns false (writing nothing)
    /// when `out` is smaller than 148 bytes. `encryptedStatic` must be 48 bytes and
    /// `encryptedTimestamp` 28.
    @discardableResult
    public static func write(
        into out: UnsafeMutableRawBufferPointer, senderIndex: UInt32, ephemeral: PublicKey,
        encryptedStatic: UnsafeRawBufferPointer, encryptedTimestamp: UnsafeRawBufferPointer,
        mac1: MAC16 = .zero, mac2: MAC16 = .zero
    ) -> Bool {
        precondition(encryptedStatic.count == encryptedStaticSize && encryptedTimestamp.count == encryptedTimestampSize)
        guard out.count >= size else { return false }
        MessageType.writeHeader(.initiation, into: out)
        storeLE32(out, Offset.sender, senderIndex)
        ephemeral.key.withUnsafeBytes { (out.baseAddress! + Offset.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        (out.baseAddress! + Offset.encryptedStatic).copyMemory(from: encryptedStatic.baseAddress!, byteCount: encryptedStaticSize)
        (out.baseAddress! + Offset.encryptedTimestamp).copyMemory(from: encryptedTimestamp.baseAddress!, byteCount: encryptedTimestampSize)
        MessageMACs.store(mac1, at: Offset.mac1, in: out)
        MessageMACs.store(mac2, at: Offset.mac2, in: out)
        return true
    }
}

// MARK: - Handshake response (type 2, 92 bytes)

/// type(1) reserved(3) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16)
public struct ResponseMessage {
    public static let size = WireGuardProtocol.responseSize
    public enum Offset {
        public static let sender = 4
        public static let receiver = 8
        public static let ephemeral = 12
        public static let encryptedNothing = 44
        public static let mac1 = 60
        public static let mac2 = 76
    }
    public static let encryptedNothingSize = AEAD.tagSize

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(MessageError) {
        try MessageType.validate(bytes, as: .response)
        self.bytes = bytes
    }

    public var senderIndex: UInt32 { loadLE32(bytes, Offset.sender) }
    public var receiverIndex: UInt32 { loadLE32(bytes, Offset.receiver) }
    public var ephemeral: PublicKey {
        PublicKey(Key32(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.ephemeral..<Offset.encryptedNothing])))
    }
    public var encryptedNothing: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.encryptedNothing..<Offset.mac1])
    }
    public var mac1: MAC16 { MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.mac1...])) }
    public var mac2: MAC16 { MAC16(copying: UnsafeRawBufferPointer(rebasing: bytes[Offset.mac2...])) }

    /// Lays a complete response out at the start of `out`; false when `out` is under 92
    /// bytes. `encryptedNothing` must be 16 bytes (the tag of the empty plaintext).
    @discardableResult
    public static func write(
        into out: UnsafeMutableRawBufferPointer, senderIndex: UInt32, receiverIndex: UInt32,
        ephemeral: PublicKey, encryptedNothing: UnsafeRawBufferPointer,
        mac1: MAC16 = .zero, mac2: MAC16 = .zero
    ) -> Bool {
        precondition(encryptedNothing.count == encryptedNothingSize)
        guard out.count >= size else { return false }
        MessageType.writeHeader(.response, into: out)
        storeLE32(out, Offset.sender, senderIndex)
        storeLE32(out, Offset.receiver, receiverIndex)
        ephemeral.key.withUnsafeBytes { (out.baseAddress! + Offset.ephemeral).copyMemory(from: $0.baseAddress!, byteCount: 32) }
        (out.baseAddress! + Offset.encryptedNothing).copyMemory(from: encryptedNothing.baseAddress!, byteCount: encryptedNothingSize)
        MessageMACs.store(mac1, at: Offset.mac1, in: out)
        MessageMACs.store(mac2, at: Offset.mac2, in: out)
        return true
    }
}

// MARK: - Cookie reply (type 3, 64 bytes)

/// type(1) reserved(3) receiver(4) nonce(24) cookie(16+16)
public struct CookieReplyMessage {
    public static let size = WireGuardProtocol.cookieReplySize
    public static let nonceSize = 24
    public static let encryptedCookieSize = MAC16.byteCount + AEAD.tagSize
    public enum Offset {
        public static let receiver = 4
        public static let nonce = 8
        public static let encryptedCookie = 32
    }

    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) throws(MessageError) {
        try MessageType.validate(bytes, as: .cookieReply)
        self.bytes = bytes
    }

    public var receiverIndex: UInt32 { loadLE32(bytes, Offset.receiver) }
    public var nonce: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.nonce..<Offset.encryptedCookie])
    }
    public var encryptedCookie: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.encryptedCookie..<CookieReplyMessage.size])
    }

    /// Writes the header and receiver index and returns false when `out` is under 64 bytes;
    /// the nonce and encrypted cookie are filled in by `CookieChecker`.
    static func writeHeader(into out: UnsafeMutableRawBufferPointer, receiverIndex: UInt32) -> Bool {
        guard out.count >= size else { return false }
        MessageType.writeHeader(.cookieReply, into: out)
        storeLE32(out, Offset.receiver, receiverIndex)
        return true
    }
}

// MARK: - Transport data (type 4, 16-byte header + ciphertext + 16-byte tag)

/// type(1) reserved(3) receiver(4) counter(8) then the sealed, padded packet.
public struct TransportMessageHeader {
    public static let size = WireGuardProtocol.transportHeaderSize
    public enum Offset {
        public static let receiver = 4
        public static let counter = 8
        public static let payload = 16
    }

    public let bytes: UnsafeRawBufferPointer

    /// Accepts any length from 32 bytes (a keepalive) up.
    public init(_ bytes: UnsafeRawBufferPointer) throws(MessageError) {
        try MessageType.validate(bytes, as: .transport)
        self.bytes = bytes
    }

    public var receiverIndex: UInt32 { loadLE32(bytes, Offset.receiver) }
    public var counter: UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: Offset.counter, as: UInt64.self))
    }
    /// Ciphertext followed by the 16-byte tag.
    public var payload: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Offset.payload...])
    }

    /// Writes the 16-byte header at the start of `out`; false when `out` is smaller.
    @discardableResult
    public static func write(into out: UnsafeMutableRawBufferPointer, receiverIndex: UInt32, counter: UInt64) -> Bool {
        guard out.count >= size else { return false }
        MessageType.writeHeader(.transport, into: out)
        storeLE32(out, Offset.receiver, receiverIndex)
        out.storeBytes(of: counter.littleEndian, toByteOffset: Offset.counter, as: UInt64.self)
        return true
    }
}

// MARK: - MAC fields

/// mac1 and mac2 are the last 32 bytes of initiations and responses. mac1 covers every byte
/// before it; mac2 every byte before it (mac1 included).
enum MessageMACs {
    @inline(__always)
    static func store(_ mac: MAC16, at offset: Int, in out: UnsafeMutableRawBufferPointer) {
        mac.withUnsafeBytes { (out.baseAddress! + offset).copyMemory(from: $0.baseAddress!, byteCount: MAC16.byteCount) }
    }

    /// The offset of mac1 in a message of `size` bytes (mac2 follows it).
    @inline(__always)
    static func mac1Offset(size: Int) -> Int { size - 2 * MAC16.byteCount }
    @inline(__always)
    static func mac2Offset(size: Int) -> Int { size - MAC16.byteCount }
}
