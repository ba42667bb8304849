import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

// The WireGuard cross-platform configuration protocol (wireguard.com/xplatform), which `wg`
// speaks to userspace implementations over /var/run/wireguard/NAME.sock. A request is a
// line naming the operation, `KEY=VALUE` lines and a blank line; the reply ends with
// `errno=N` and a blank line:
//
//     get=1                          private_key=<hex>
//     <blank>                 ->     listen_port=51820
//                                    public_key=<hex>          (then that peer's keys)
//                                    ...
//                                    errno=0
//                                    <blank>
//
//     set=1                          errno=0
//     listen_port=51821       ->     <blank>
//     public_key=<hex>
//     allowed_ip=10.0.0.2/32
//     <blank>
//
// Keys are 64 lowercase hex digits. This file is the protocol without I/O: parsing a request,
// rendering a reply, and applying a `set` to a tenant's configuration with the semantics of
// the kernel and wireguard-go. Request and reply bytes hold private and preshared keys: keys
// are decoded straight from the caller's buffer and encoded straight into the reply, so no
// String ever holds one, and every message leaves key material out.

/// A failed UAPI request: the errno the reply carries, and a message for the log (which never
/// contains key material).
public struct UAPIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A positive errno.h value (EINVAL, EPROTO, ENODEV, ...).
    public var errno: Int32
    public var message: String

    public init(_ errno: Int32, _ message: String) {
        self.errno = errno
        self.message = message
    }

    /// "MESSAGE: Invalid argument (EINVAL)".
    public var description: String { "\(message): \(Errno.text(errno))" }

    static func invalid(_ message: String) -> UAPIError { UAPIError(EINVAL, message) }
}

/// Which operation a reply answers: `wg` reads the errno of the two differently.
public enum UAPIOperation: Sendable {
    case get, set
}

extension UAPIError {
    /// The reply that reports this error: `errno=-N` to a `set` (or to a request that names no
    /// known operation) and `errno=N` to a `get`. The sign differs because `wg` decodes them
    /// differently: after a set it negates the number it reads (wireguard-go sends
    /// `errno=-22`, which `wg` reports as "Invalid argument"), while its get parser accepts
    /// only digits (a negative number would read as "Protocol error").
    public func renderReply(to operation: UAPIOperation?) -> [UInt8] {
        let code = operation == .get ? errno : -errno
        return Array("errno=\(code)\n\n".utf8)
    }
}

// MARK: - get

/// What `get=1` reports for one interface (a tenant).
public struct UAPIDeviceState: Sendable {
    public var privateKey: PrivateKey
    public var listenPort: UInt16
    /// Always 0 for xdpwg (it marks no packets); `wg` shows 0 as "off".
    public var fwmark: UInt32
    public var peers: [UAPIPeerState]

    public init(privateKey: PrivateKey, listenPort: UInt16, fwmark: UInt32 = 0, peers: [UAPIPeerState]) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.peers = peers
    }

    /// A tenant's configuration with every statistic zero (no handshake yet, nothing sent);
    /// the gateway fills in its peers' statistics.
    public init(_ tenant: TenantConfiguration) {
        self.init(privateKey: tenant.privateKey, listenPort: tenant.listenPort, peers: tenant.peers.map(UAPIPeerState.init))
    }
}

/// One peer in a `get=1` reply.
public struct UAPIPeerState: Sendable {
    public var publicKey: PublicKey
    public var presharedKey: PresharedKey?
    public var endpoint: Endpoint?
    /// Wall clock (seconds and nanoseconds since 1970) of the last completed handshake; nil
    /// is never (sent as 0 and 0, which `wg` shows as no handshake).
    public var lastHandshake: (seconds: Int64, nanoseconds: Int64)?
    public var rxBytes: UInt64
    public var txBytes: UInt64
    /// Seconds; 0 is off.
    public var persistentKeepalive: UInt16
    public var allowedIPs: [IPPrefix]

    public init(publicKey: PublicKey, presharedKey: PresharedKey? = nil, endpoint: Endpoint? = nil,
                lastHandshake: (seconds: Int64, nanoseconds: Int64)? = nil, rxBytes: UInt64 = 0, txBytes: UInt64 = 0,
                persistentKeepalive: UInt16 = 0, allowedIPs: [IPPrefix] = []) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.lastHandshake = lastHandshake
        self.rxBytes = rxBytes
        self.txBytes = txBytes
        self.persistentKeepalive = persistentKeepalive
        self.allowedIPs = allowedIPs
    }

    /// A configured peer with every statistic zero.
    public init(_ peer: PeerConfiguration) {
        self.init(publicKey: peer.publicKey, presharedKey: peer.presharedKey, endpoint: peer.endpoint,
                  persistentKeepalive: peer.persistentKeepalive, allowedIPs: peer.allowedIPs)
    }
}

extension UAPIDeviceState {
    /// The whole reply to `get=1`, in wireguard-go's order: the interface's keys (listen_port
    /// and fwmark only when not 0), then per peer public_key, preshared_key (64 zeros when
    /// none), protocol_version=1, endpoint (when known), last_handshake_time_sec/_nsec,
    /// tx_bytes, rx_bytes, persistent_keepalive_interval and one allowed_ip line per prefix;
    /// then `errno=0` and a blank line.
    ///
    /// The bytes hold the private key: the caller wipes them after sending. The array is
    /// allocated once, large enough for the whole reply, so no reallocation leaves a copy.
    public func renderGetReply() -> [UInt8] {
        // Upper bounds per line: a peer's fixed lines come to about 420 bytes (the longest
        // endpoint is a bracketed IPv6 address), an allowed_ip line to at most 55.
        let allowedIPCount = peers.reduce(0) { $0 + $1.allowedIPs.count }
        let capacity = 256 + peers.count * 512 + allowedIPCount * 64
        var out = [UInt8]()
        out.reserveCapacity(capacity)

        func line(_ text: String) {
            out.append(contentsOf: text.utf8)
            out.append(UInt8(ascii: "\n"))
        }
        func keyLine(_ name: String, _ key: Key32) {
            out.append(contentsOf: name.utf8)
            out.append(UInt8(ascii: "="))
            let start = out.count
            out.append(contentsOf: repeatElement(0, count: 64))
            out.withUnsafeMutableBytes { key.writeHex(into: UnsafeMutableRawBufferPointer(rebasing: $0[start...])) }
            out.append(UInt8(ascii: "\n"))
        }
        func secretLine(_ name: String, _ secret: SecretKey?) {
            var key = secret?.unsafeValue ?? .zero
            defer { key.wipe() }
            keyLine(name, key)
        }

        secretLine("private_key", privateKey.secret)
        if listenPort != 0 { line("listen_port=\(listenPort)") }
        if fwmark != 0 { line("fwmark=\(fwmark)") }
        for peer in peers {
            keyLine("public_key", peer.publicKey.key)
            secretLine("preshared_key", peer.presharedKey?.secret)
            line("protocol_version=1")
            if let endpoint = peer.endpoint { line("endpoint=\(endpoint)") }
            let handshake = peer.lastHandshake ?? (0, 0)
            line("last_handshake_time_sec=\(handshake.seconds)")
            line("last_handshake_time_nsec=\(handshake.nanoseconds)")
            line("tx_bytes=\(peer.txBytes)")
            line("rx_bytes=\(peer.rxBytes)")
            line("persistent_keepalive_interval=\(peer.persistentKeepalive)")
            for prefix in peer.allowedIPs { line("allowed_ip=\(prefix)") }
        }
        line("errno=0")
        line("")
        assert(out.count <= capacity, "the get reply outgrew its estimate and was reallocated")
        return out
    }
}

// MARK: - set

/// A parsed `set=1` request, nothing applied yet: the interface's keys, then the changes to
/// peers in the order given (one public key may appear more than once).
public struct UAPISetRequest: Sendable {
    /// `.some(nil)`: an all-zero private_key, which asks to remove the key (refused by
    /// `applied(to:)`: a tenant cannot be without one).
    public var privateKey: PrivateKey??
    public var listenPort: UInt16?
    public var fwmark: UInt32?
    /// replace_peers=true: every peer not named again in this request goes.
    public var replacePeers: Bool
    public var peers: [UAPIPeerChange]

    public init(privateKey: PrivateKey?? = nil, listenPort: UInt16? = nil, fwmark: UInt32? = nil,
                replacePeers: Bool = false, peers: [UAPIPeerChange] = []) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.replacePeers = replacePeers
        self.peers = peers
    }
}

/// The changes to one peer: the lines after one public_key line.
public struct UAPIPeerChange: Sendable {
    public var publicKey: PublicKey
    /// remove=true: the peer goes; the change's other fields are ignored.
    public var remove: Bool
    /// update_only=true: change the peer only if it exists; never create it.
    public var updateOnly: Bool
    /// nil: unchanged; `.some(nil)`: remove the preshared key (an all-zero key).
    public var presharedKey: PresharedKey??
    public var endpoint: Endpoint?
    /// Seconds; 0 turns keepalives off. nil: unchanged.
    public var persistentKeepalive: UInt16?
    /// replace_allowed_ips=true: the peer's allowed IPs become exactly `allowedIPs`.
    public var replaceAllowedIPs: Bool
    /// Added to the peer's allowed IPs (as written; host bits are cleared when applied).
    public var allowedIPs: [IPPrefix]

    public init(publicKey: PublicKey, remove: Bool = false, updateOnly: Bool = false,
                presharedKey: PresharedKey?? = nil, endpoint: Endpoint? = nil, persistentKeepalive: UInt16? = nil,
                replaceAllowedIPs: Bool = false, allowedIPs: [IPPrefix] = []) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepalive = persistentKeepalive
        self.replaceAllowedIPs = replaceAllowedIPs
        self.allowedIPs = allowedIPs
    }
}

// MARK: - Parsing

/// One UAPI request.
public enum UAPIRequest: Sendable {
    case get
    case set(UAPISetRequest)

    /// Parses one whole request: the operation line through the terminating blank line, and
    /// nothing after it. Throws, as wireguard-go answers:
    /// - EPROTO for a request that is not lines ending in a blank line, and for a key line
    ///   without '=';
    /// - EINVAL for an unknown operation, `get=1` followed by anything, an unknown key, an
    ///   interface key after the first public_key, a peer key before it, a key that is not 64
    ///   hex digits, a number that is not decimal or too large, a flag other than `true`, an
    ///   endpoint that is not IP:port or [IPv6]:port, an allowed_ip that is not ADDRESS/LENGTH,
    ///   and a protocol_version other than 1.
    ///
    /// `bytes` may hold keys: the caller wipes it; nothing here keeps a copy of their text.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(UAPIError) -> UAPIRequest {
        let newline = UInt8(ascii: "\n")
        guard bytes.count >= 2, bytes[bytes.count - 1] == newline, bytes[bytes.count - 2] == newline else {
            throw UAPIError(EPROTO, "the request does not end with a blank line")
        }
        // Every line but the final blank one, without its '\n'.
        var lines: [UnsafeRawBufferPointer] = []
        var start = 0
        for i in 0..<(bytes.count - 1) where bytes[i] == newline {
            lines.append(UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
            start = i + 1
        }
        if let blank = lines.firstIndex(where: \.isEmpty) {
            throw UAPIError(EPROTO, blank == 0 ? "the request is a blank line, with no operation"
                                               : "line \(blank + 1) is blank: data after the end of the request")
        }
        let operation = lines[0]
        if operation.elementsEqual("get=1".utf8) {
            guard lines.count == 1 else { throw .invalid("get=1 takes no keys, but line 2 has one") }
            return .get
        }
        guard operation.elementsEqual("set=1".utf8) else {
            throw .invalid("unknown operation \(ConfigurationParser.shown(.init(bytes: operation))) (expected get=1 or set=1)")
        }
        return .set(try SetParser.parse(lines.dropFirst()))
    }
}

/// The keys of a set request.
private enum SetKey: String, CaseIterable {
    // The interface's, before the first public_key.
    case privateKey = "private_key", listenPort = "listen_port", fwmark, replacePeers = "replace_peers"
    // A peer's, after its public_key.
    case publicKey = "public_key", remove, updateOnly = "update_only", presharedKey = "preshared_key", endpoint
    case persistentKeepaliveInterval = "persistent_keepalive_interval", replaceAllowedIPs = "replace_allowed_ips"
    case allowedIP = "allowed_ip", protocolVersion = "protocol_version"

    var isInterfaceKey: Bool { [.privateKey, .listenPort, .fwmark, .replacePeers].contains(self) }

    /// Compares bytes without making a String of them (they may be anything, a key included).
    init?(_ bytes: UnsafeRawBufferPointer) {
        guard let key = SetKey.allCases.first(where: { bytes.elementsEqual($0.rawValue.utf8) }) else { return nil }
        self = key
    }
}

private enum SetParser {
    /// `lines` are the lines after set=1, none blank, each without its '\n'. Line numbers in
    /// messages count set=1 as line 1.
    static func parse(_ lines: ArraySlice<UnsafeRawBufferPointer>) throws(UAPIError) -> UAPISetRequest {
        var request = UAPISetRequest()
        var peer: UAPIPeerChange?
        for (index, line) in zip(lines.indices, lines) {
            let number = index + 1
            guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else {
                throw UAPIError(EPROTO, "line \(number) is not KEY=VALUE")
            }
            let name = UnsafeRawBufferPointer(rebasing: line[..<equals])
            let value = UnsafeRawBufferPointer(rebasing: line[(equals + 1)...])
            guard let key = SetKey(name) else {
                let section = peer == nil ? "interface" : "peer"
                throw .invalid("line \(number): unknown \(section) key \(ConfigurationParser.shownName(name))")
            }
            if key == .publicKey {
                if let done = peer { request.peers.append(done) }
                guard let k = Key32(hexBytes: value) else { throw badKey(number, key) }
                peer = UAPIPeerChange(publicKey: PublicKey(k))
                continue
            }
            if peer == nil {
                guard key.isInterfaceKey else {
                    throw .invalid("line \(number): \(key.rawValue) is a peer key, but no public_key line names a peer before it")
                }
                try parseInterfaceLine(key, value, number, into: &request)
            } else {
                guard !key.isInterfaceKey else {
                    throw .invalid("line \(number): \(key.rawValue) is an interface key and must come before the first public_key")
                }
                try parsePeerLine(key, value, number, into: &peer!)
            }
        }
        if let done = peer { request.peers.append(done) }
        return request
    }

    static func parseInterfaceLine(_ key: SetKey, _ value: UnsafeRawBufferPointer, _ number: Int,
                                   into request: inout UAPISetRequest) throws(UAPIError) {
        switch key {
        case .privateKey:
            guard var raw = Key32(hexBytes: value) else { throw badKey(number, key) }
            if raw.isZero {
                request.privateKey = .some(nil)
            } else {
                request.privateKey = .some(PrivateKey(consuming: &raw))
            }
            raw.wipe()
        case .listenPort:
            request.listenPort = UInt16(try decimal(value, max: Int(UInt16.max), number, key))
        case .fwmark:
            request.fwmark = UInt32(try decimal(value, max: Int(UInt32.max), number, key))
        case .replacePeers:
            try requireTrue(value, number, key)
            request.replacePeers = true
        default:
            preconditionFailure("not an interface key: \(key)")
        }
    }

    static func parsePeerLine(_ key: SetKey, _ value: UnsafeRawBufferPointer, _ number: Int,
                              into peer: inout UAPIPeerChange) throws(UAPIError) {
        switch key {
        case .remove:
            try requireTrue(value, number, key)
            peer.remove = true
        case .updateOnly:
            try requireTrue(value, number, key)
            peer.updateOnly = true
        case .presharedKey:
            guard var raw = Key32(hexBytes: value) else { throw badKey(number, key) }
            peer.presharedKey = raw.isZero ? .some(nil) : .some(PresharedKey(consuming: &raw))
            raw.wipe()
        case .endpoint:
            do {
                peer.endpoint = try Endpoint(parsing: String(decoding: value, as: UTF8.self))
            } catch {
                throw .invalid("line \(number): endpoint \(ConfigurationParser.shownAddress(.init(bytes: value))) is not "
                    + "IPv4:port or [IPv6]:port with a port from 1 to 65535")
            }
        case .persistentKeepaliveInterval:
            peer.persistentKeepalive = UInt16(try decimal(value, max: Int(UInt16.max), number, key))
        case .replaceAllowedIPs:
            try requireTrue(value, number, key)
            // As wireguard-go applies lines in order: allowed IPs given before this line go too.
            peer.replaceAllowedIPs = true
            peer.allowedIPs.removeAll()
        case .allowedIP:
            // ADDRESS/LENGTH, as wireguard-go's netip.ParsePrefix: a bare address is refused.
            guard value.contains(UInt8(ascii: "/")),
                  let prefix = try? IPPrefix(parsing: String(decoding: value, as: UTF8.self)) else {
                throw .invalid("line \(number): allowed_ip \(ConfigurationParser.shownAddress(.init(bytes: value))) "
                    + "is not ADDRESS/LENGTH")
            }
            peer.allowedIPs.append(prefix)
        case .protocolVersion:
            guard value.elementsEqual("1".utf8) else {
                throw .invalid("line \(number): protocol_version \(ConfigurationParser.shown(.init(bytes: value))) "
                    + "is not supported (only 1 is)")
            }
        default:
            preconditionFailure("not a peer key: \(key)")
        }
    }

    static func badKey(_ number: Int, _ key: SetKey) -> UAPIError {
        .invalid("line \(number): \(key.rawValue) is not 64 hex digits")
    }

    static func decimal(_ value: UnsafeRawBufferPointer, max: Int, _ number: Int, _ key: SetKey) throws(UAPIError) -> Int {
        guard let v = ConfigurationParser.decimal(value, max: max) else {
            throw .invalid("line \(number): \(key.rawValue) \(ConfigurationParser.shown(.init(bytes: value))) "
                + "is not a decimal number from 0 to \(max)")
        }
        return v
    }

    static func requireTrue(_ value: UnsafeRawBufferPointer, _ number: Int, _ key: SetKey) throws(UAPIError) {
        guard value.elementsEqual("true".utf8) else {
            throw .invalid("line \(number): \(key.rawValue) takes only 'true', not "
                + ConfigurationParser.shown(.init(bytes: value)))
        }
    }
}

// MARK: - Applying

extension UAPISetRequest {
    /// The tenant's configuration after this request, with the semantics of the kernel and
    /// wireguard-go. Pure: the caller checks what spans tenants (a listen port another tenant
    /// uses, room in the peer table) and applies the result.
    ///
    /// - private_key: a new key; a peer whose public key is the tenant's new public key goes
    ///   (as the kernel and wireguard-go do). An all-zero key asks to remove the key, which
    ///   leaves a kernel or wireguard-go interface keyless but up; `wg` sends it for
    ///   `wg set NAME private-key /dev/null` and for a `wg setconf`/`syncconf` file without
    ///   PrivateKey (those commands describe the whole interface). An xdpwg tenant always has
    ///   a key, so it is refused with EINVAL.
    /// - listen_port: 0 (a random port, to `wg`; also what setconf/syncconf send for a file
    ///   without ListenPort) is refused with EINVAL: the XDP program steers fixed ports.
    /// - fwmark: 0 is accepted (xdpwg marks nothing, and setconf/syncconf always send it); any
    ///   other value is refused with EOPNOTSUPP.
    /// - replace_peers: every peer goes first; the request's peers are then added.
    /// - Per peer, in order: a public key equal to the tenant's own is ignored (as the kernel
    ///   and wireguard-go do); remove drops the peer (absent: nothing happens); update_only
    ///   skips a peer that does not exist; otherwise the peer is created (`line: 0`) or
    ///   changed: an all-zero preshared key removes it, persistent_keepalive_interval 0 turns
    ///   keepalives off, replace_allowed_ips drops the peer's allowed IPs first. Each allowed
    ///   IP is stored with its host bits cleared, once, and is taken from whichever other peer
    ///   of the tenant had it: cryptokey routing gives a prefix to one peer only.
    public func applied(to tenant: TenantConfiguration) throws(UAPIError) -> TenantConfiguration {
        var result = tenant
        if let key = privateKey {
            guard let key else {
                throw .invalid("an all-zero private_key would leave the tenant without a key, and an xdpwg tenant "
                    + "always has one (`wg setconf`/`syncconf` send this for a file without PrivateKey; "
                    + "`wg set NAME private-key /dev/null` too)")
            }
            result.privateKey = key
            result.peers.removeAll { $0.publicKey == key.publicKey }
        }
        if let port = listenPort {
            guard port != 0 else {
                throw .invalid("listen_port 0 (a random port) is not supported: xdpwg's XDP program steers fixed "
                    + "ports, so give the port explicitly (`wg setconf`/`syncconf` send 0 for a file without ListenPort)")
            }
            result.listenPort = port
        }
        if let mark = fwmark, mark != 0 {
            throw UAPIError(EOPNOTSUPP, "fwmark \(mark) is not supported: xdpwg sends through AF_XDP and marks nothing")
        }
        if replacePeers { result.peers.removeAll() }

        // Slots keep peers in order while some are removed; maps find a peer by key and a
        // prefix's owner without scanning (a syncconf may name thousands of peers).
        var slots: [PeerConfiguration?] = result.peers
        var slotOfKey: [PublicKey: Int] = [:]
        var ownerOfPrefix: [IPPrefix: Int] = [:]
        for (slot, peer) in result.peers.enumerated() {
            slotOfKey[peer.publicKey] = slot
            for prefix in peer.allowedIPs { ownerOfPrefix[prefix.masked] = slot }
        }
        func dropPrefixes(of slot: Int) {
            for prefix in slots[slot]!.allowedIPs { ownerOfPrefix[prefix.masked] = nil }
            slots[slot]!.allowedIPs.removeAll()
        }

        let ownKey = result.privateKey.publicKey
        for change in peers where change.publicKey != ownKey {
            if change.remove {
                if let slot = slotOfKey.removeValue(forKey: change.publicKey) {
                    dropPrefixes(of: slot)
                    slots[slot] = nil
                }
                continue
            }
            let slot: Int
            if let existing = slotOfKey[change.publicKey] {
                slot = existing
            } else {
                if change.updateOnly { continue }
                slot = slots.count
                slots.append(PeerConfiguration(publicKey: change.publicKey, line: 0))
                slotOfKey[change.publicKey] = slot
            }
            if let psk = change.presharedKey { slots[slot]!.presharedKey = psk }
            if let endpoint = change.endpoint { slots[slot]!.endpoint = endpoint }
            if let keepalive = change.persistentKeepalive { slots[slot]!.persistentKeepalive = keepalive }
            if change.replaceAllowedIPs { dropPrefixes(of: slot) }
            for prefix in change.allowedIPs.map(\.masked) {
                switch ownerOfPrefix[prefix] {
                case slot:
                    continue                                    // already this peer's
                case let other?:
                    slots[other]!.allowedIPs.removeAll { $0 == prefix }
                case nil:
                    break
                }
                ownerOfPrefix[prefix] = slot
                slots[slot]!.allowedIPs.append(prefix)
            }
        }
        result.peers = slots.compactMap { $0 }
        return result
    }
}
