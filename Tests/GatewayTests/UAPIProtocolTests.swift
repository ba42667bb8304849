import Gateway
import Testing
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// Fixed keys for known-answer tests: 32 copies of one byte.
enum UAPIFixture {
    static func hex(_ byte: UInt8) -> String {
        let digits = String(byte, radix: 16)
        return String(repeating: digits.count == 1 ? "0" + digits : digits, count: 32)
    }
    static func publicKey(_ byte: UInt8) -> PublicKey { PublicKey(Key32(hex: hex(byte))!) }
    static func presharedKey(_ byte: UInt8) -> PresharedKey { var k = Key32(hex: hex(byte))!; return PresharedKey(consuming: &k) }
    /// 0x11 repeated, clamped: 0x10, 0x11 x 30, 0x51.
    static let privateKey = PrivateKey(hex: hex(0x11))!
    static let privateKeyHex = "10" + String(repeating: "11", count: 30) + "51"

    static func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
    static func endpoint(_ text: String) -> Endpoint { try! Endpoint(parsing: text) }

    static func tenant(peers: [PeerConfiguration] = []) -> TenantConfiguration {
        TenantConfiguration(name: "acme", privateKey: privateKey, listenPort: 51820, namespace: "acme", peers: peers, line: 3)
    }
}

/// A request's text as bytes, parsed.
func parseUAPI(_ text: String) throws(UAPIError) -> UAPIRequest {
    var bytes = Array(text.utf8)
    defer { bytes.withUnsafeMutableBytes { wipe($0) } }
    let result = bytes.withUnsafeBytes { raw in Result { () throws(UAPIError) in try UAPIRequest.parse(raw) } }
    return try result.get()
}

/// Whether a double optional is `.some(nil)`: "remove it".
func isRemoval<T>(_ value: T??) -> Bool {
    if case .some(.none) = value { true } else { false }
}

/// "set=1", the lines, a blank line.
func setText(_ lines: [String]) -> String { (["set=1"] + lines).joined(separator: "\n") + "\n\n" }

/// The set request in `lines`; records an issue when it does not parse.
func parseSet(_ lines: [String], sourceLocation: SourceLocation = #_sourceLocation) -> UAPISetRequest? {
    do throws(UAPIError) {
        guard case .set(let request) = try parseUAPI(setText(lines)) else {
            Issue.record("not a set request", sourceLocation: sourceLocation)
            return nil
        }
        return request
    } catch {
        Issue.record("unexpected error: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// What a test compares of a peer (keys as hex).
struct PeerSummary: Equatable, CustomStringConvertible {
    var publicKey: String
    var presharedKey: String?
    var allowedIPs: [String]
    var endpoint: String?
    var keepalive: UInt16
    var line: Int

    init(_ p: PeerConfiguration) {
        publicKey = p.publicKey.key.hex
        presharedKey = p.presharedKey?.secret.hexForDisplay
        allowedIPs = p.allowedIPs.map(\.description)
        endpoint = p.endpoint?.description
        keepalive = p.persistentKeepalive
        line = p.line
    }

    init(_ key: UInt8, psk: UInt8? = nil, _ allowedIPs: [String] = [], endpoint: String? = nil, keepalive: UInt16 = 0, line: Int = 0) {
        publicKey = UAPIFixture.hex(key)
        presharedKey = psk.map(UAPIFixture.hex)
        self.allowedIPs = allowedIPs
        self.endpoint = endpoint
        self.keepalive = keepalive
        self.line = line
    }

    var description: String {
        "\(publicKey.prefix(4)) psk=\(presharedKey.map { String($0.prefix(4)) } ?? "-") \(allowedIPs) \(endpoint ?? "-") ka=\(keepalive) line=\(line)"
    }
}

func summary(_ tenant: TenantConfiguration) -> [PeerSummary] { tenant.peers.map(PeerSummary.init) }

/// Two peers: 0xaa (line 8) with a preshared key, an endpoint, keepalive and two prefixes;
/// 0xbb (line 14) with one prefix.
func twoPeerTenant() -> TenantConfiguration {
    UAPIFixture.tenant(peers: [
        PeerConfiguration(publicKey: UAPIFixture.publicKey(0xaa), presharedKey: UAPIFixture.presharedKey(0x22),
                          allowedIPs: [UAPIFixture.prefix("10.1.0.0/24"), UAPIFixture.prefix("fd00:1::/64")],
                          endpoint: UAPIFixture.endpoint("192.0.2.7:51821"), persistentKeepalive: 25, line: 8),
        PeerConfiguration(publicKey: UAPIFixture.publicKey(0xbb), allowedIPs: [UAPIFixture.prefix("10.2.0.0/24")], line: 14),
    ])
}

/// Applies lines of a set request to `tenant`; records an issue on failure.
func apply(_ lines: [String], to tenant: TenantConfiguration,
           sourceLocation: SourceLocation = #_sourceLocation) -> TenantConfiguration? {
    guard let request = parseSet(lines, sourceLocation: sourceLocation) else { return nil }
    do throws(UAPIError) {
        return try request.applied(to: tenant)
    } catch {
        Issue.record("unexpected error: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The error applying lines of a set request raises.
func applyError(_ lines: [String], to tenant: TenantConfiguration,
                sourceLocation: SourceLocation = #_sourceLocation) -> UAPIError? {
    guard let request = parseSet(lines, sourceLocation: sourceLocation) else { return nil }
    do throws(UAPIError) {
        _ = try request.applied(to: tenant)
        Issue.record("applied, but an error was expected", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

@Suite("UAPI protocol")
struct UAPIProtocolTests {
    // MARK: get

    @Test func getParses() throws {
        guard case .get = try parseUAPI("get=1\n\n") else { Issue.record("not get"); return }
    }

    @Test func getReplyIsExact() {
        var state = UAPIDeviceState(twoPeerTenant())
        state.peers[0].lastHandshake = (1_700_000_000, 123_456_789)
        state.peers[0].rxBytes = 1234
        state.peers[0].txBytes = 5678
        state.peers[1].endpoint = UAPIFixture.endpoint("[2001:db8::7]:51822")
        let expected = """
            private_key=\(UAPIFixture.privateKeyHex)
            listen_port=51820
            public_key=\(UAPIFixture.hex(0xaa))
            preshared_key=\(UAPIFixture.hex(0x22))
            protocol_version=1
            endpoint=192.0.2.7:51821
            last_handshake_time_sec=1700000000
            last_handshake_time_nsec=123456789
            tx_bytes=5678
            rx_bytes=1234
            persistent_keepalive_interval=25
            allowed_ip=10.1.0.0/24
            allowed_ip=fd00:1::/64
            public_key=\(UAPIFixture.hex(0xbb))
            preshared_key=\(UAPIFixture.hex(0))
            protocol_version=1
            endpoint=[2001:db8::7]:51822
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            allowed_ip=10.2.0.0/24
            errno=0


            """
        #expect(String(decoding: state.renderGetReply(), as: UTF8.self) == expected)
    }

    @Test func getReplyOmitsZeroPortAndShowsFwmark() {
        let none = UAPIDeviceState(privateKey: UAPIFixture.privateKey, listenPort: 0, peers: [])
        #expect(String(decoding: none.renderGetReply(), as: UTF8.self)
                == "private_key=\(UAPIFixture.privateKeyHex)\nerrno=0\n\n")
        let marked = UAPIDeviceState(privateKey: UAPIFixture.privateKey, listenPort: 1, fwmark: 4_294_967_295, peers: [])
        #expect(String(decoding: marked.renderGetReply(), as: UTF8.self)
                == "private_key=\(UAPIFixture.privateKeyHex)\nlisten_port=1\nfwmark=4294967295\nerrno=0\n\n")
    }

    @Test func getReplyOfManyPeersFitsItsEstimate() {
        // Longest forms of every field: the reply is built in one allocation (asserted inside).
        let peers = (0..<50).map { i in
            UAPIPeerState(publicKey: UAPIFixture.publicKey(UInt8(i)), presharedKey: UAPIFixture.presharedKey(0x33),
                          endpoint: UAPIFixture.endpoint("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
                          lastHandshake: (Int64.max, Int64.max), rxBytes: .max, txBytes: .max, persistentKeepalive: .max,
                          allowedIPs: (0..<20).map { _ in UAPIFixture.prefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128") })
        }
        let reply = UAPIDeviceState(privateKey: UAPIFixture.privateKey, listenPort: 65535, fwmark: .max, peers: peers).renderGetReply()
        #expect(reply.count > 50 * 20 * 50)
        #expect(reply.suffix(9).elementsEqual("errno=0\n\n".utf8))
    }

    @Test func errorRepliesCarryTheSignWgExpects() {
        let error = UAPIError(EINVAL, "x")
        #expect(error.renderReply(to: .set) == Array("errno=-22\n\n".utf8))
        #expect(error.renderReply(to: nil) == Array("errno=-22\n\n".utf8))
        #expect(UAPIError(ENODEV, "gone").renderReply(to: .get) == Array("errno=19\n\n".utf8))
        #expect(error.description == "x: Invalid argument (EINVAL)")
    }

    // MARK: set: every key

    @Test func setParsesEveryKey() throws {
        let request = try #require(parseSet([
            "private_key=\(UAPIFixture.hex(0x11))",
            "listen_port=51821",
            "fwmark=0",
            "replace_peers=true",
            "public_key=\(UAPIFixture.hex(0xaa))",
            "protocol_version=1",
            "preshared_key=\(UAPIFixture.hex(0x22))",
            "endpoint=[2001:db8::1]:4500",
            "persistent_keepalive_interval=65535",
            "replace_allowed_ips=true",
            "allowed_ip=10.0.0.7/24",
            "allowed_ip=fd00::/8",
            "public_key=\(UAPIFixture.hex(0xbb))",
            "remove=true",
            "public_key=\(UAPIFixture.hex(0xcc))",
            "update_only=true",
            "preshared_key=\(UAPIFixture.hex(0))",
            "endpoint=198.51.100.1:1",
            "persistent_keepalive_interval=0",
        ]))
        #expect(request.privateKey??.secret.hexForDisplay == UAPIFixture.privateKeyHex)
        #expect(request.privateKey??.publicKey == UAPIFixture.privateKey.publicKey)
        #expect(request.listenPort == 51821)
        #expect(request.fwmark == 0)
        #expect(request.replacePeers)
        #expect(request.peers.count == 3)

        let a = request.peers[0]
        #expect(a.publicKey == UAPIFixture.publicKey(0xaa))
        #expect(!a.remove && !a.updateOnly)
        #expect(a.presharedKey??.secret.hexForDisplay == UAPIFixture.hex(0x22))
        #expect(a.endpoint == UAPIFixture.endpoint("[2001:db8::1]:4500"))
        #expect(a.persistentKeepalive == 65535)
        #expect(a.replaceAllowedIPs)
        #expect(a.allowedIPs == [UAPIFixture.prefix("10.0.0.7/24"), UAPIFixture.prefix("fd00::/8")])

        let b = request.peers[1]
        #expect(b.publicKey == UAPIFixture.publicKey(0xbb))
        #expect(b.remove)
        #expect(b.presharedKey == nil && b.endpoint == nil && b.persistentKeepalive == nil && !b.replaceAllowedIPs)

        let c = request.peers[2]
        #expect(c.updateOnly && !c.remove)
        #expect(isRemoval(c.presharedKey), "an all-zero preshared key means 'remove it'")
        #expect(c.endpoint == UAPIFixture.endpoint("198.51.100.1:1"))
        #expect(c.persistentKeepalive == 0)
        #expect(c.allowedIPs.isEmpty)
    }

    @Test func setWithNothingParses() throws {
        let request = try #require(parseSet([]))
        #expect(request.privateKey == nil && request.listenPort == nil && request.fwmark == nil)
        #expect(!request.replacePeers && request.peers.isEmpty)
    }

    @Test func allZeroPrivateKeyMeansRemove() throws {
        let request = try #require(parseSet(["private_key=\(UAPIFixture.hex(0))"]))
        #expect(isRemoval(request.privateKey))
    }

    @Test func uppercaseHexAndLeadingZerosAreAccepted() throws {
        // As wireguard-go (encoding/hex and strconv.ParseUint) accepts them.
        let request = try #require(parseSet(["listen_port=00080", "public_key=\(UAPIFixture.hex(0xab).uppercased())"]))
        #expect(request.listenPort == 80)
        #expect(request.peers.first?.publicKey == UAPIFixture.publicKey(0xab))
    }

    @Test func laterLinesWin() throws {
        let request = try #require(parseSet(["listen_port=1", "listen_port=2", "public_key=\(UAPIFixture.hex(0xaa))",
                                             "endpoint=192.0.2.1:1", "endpoint=192.0.2.2:2"]))
        #expect(request.listenPort == 2)
        #expect(request.peers.first?.endpoint == UAPIFixture.endpoint("192.0.2.2:2"))
    }

    @Test func replaceAllowedIPsDropsThoseBeforeIt() throws {
        // wireguard-go applies lines in order: allowed_ip, replace_allowed_ips, allowed_ip keeps the last only.
        let request = try #require(parseSet(["public_key=\(UAPIFixture.hex(0xaa))", "allowed_ip=10.0.0.0/8",
                                             "replace_allowed_ips=true", "allowed_ip=10.1.0.0/16"]))
        #expect(request.peers.first?.replaceAllowedIPs == true)
        #expect(request.peers.first?.allowedIPs == [UAPIFixture.prefix("10.1.0.0/16")])
    }

    // MARK: malformed requests

    static let peerLine = "public_key=\(UAPIFixture.hex(0xaa))"

    /// (request text, expected errno, why).
    static let malformed: [(String, Int32, String)] = [
        ("", EPROTO, "empty"),
        ("\n", EPROTO, "one newline"),
        ("\n\n", EPROTO, "only a blank line"),
        ("get=1\n", EPROTO, "no blank line"),
        ("get=1", EPROTO, "no newline at all"),
        ("set=1\nlisten_port=1\n", EPROTO, "set without its blank line"),
        ("set=1\nlisten_port=1\n\nget=1\n\n", EPROTO, "a second request after the blank line"),
        ("get=1\r\n\r\n", EPROTO, "CRLF"),
        ("get=1\nlisten_port=1\n\n", EINVAL, "get with a key"),
        ("get=2\n\n", EINVAL, "get version 2"),
        ("set=2\n\n", EINVAL, "set version 2"),
        ("GET=1\n\n", EINVAL, "uppercase operation"),
        ("hello\n\n", EINVAL, "unknown operation"),
        (setText(["listen_port"]), EPROTO, "a key line without '='"),
        (setText(["frobnicate=1"]), EINVAL, "unknown interface key"),
        (setText(["=1"]), EINVAL, "empty key"),
        (setText(["Listen_Port=1"]), EINVAL, "keys are case-sensitive"),
        (setText([" listen_port=1"]), EINVAL, "a space before the key"),
        (setText(["listen_port=65536"]), EINVAL, "port too large"),
        (setText(["listen_port=-1"]), EINVAL, "negative port"),
        (setText(["listen_port="]), EINVAL, "empty port"),
        (setText(["listen_port=0x10"]), EINVAL, "hex port"),
        (setText(["listen_port= 1"]), EINVAL, "space in the number"),
        (setText(["listen_port=1 "]), EINVAL, "trailing space"),
        (setText(["listen_port=99999999999"]), EINVAL, "huge number"),
        (setText(["fwmark=4294967296"]), EINVAL, "fwmark too large"),
        (setText(["fwmark=off"]), EINVAL, "fwmark as a word"),
        (setText(["private_key=\(String(UAPIFixture.hex(0x11).dropLast()))"]), EINVAL, "63 hex digits"),
        (setText(["private_key=\(UAPIFixture.hex(0x11))0"]), EINVAL, "65 hex digits"),
        (setText(["private_key=" + String(repeating: "g", count: 64)]), EINVAL, "not hex"),
        (setText(["private_key=\(UAPIFixture.privateKey.secret.base64ForDisplay)"]), EINVAL, "base64, not hex"),
        (setText(["private_key="]), EINVAL, "empty key"),
        (setText(["replace_peers=false"]), EINVAL, "replace_peers=false"),
        (setText(["replace_peers=1"]), EINVAL, "replace_peers=1"),
        (setText(["replace_peers=TRUE"]), EINVAL, "replace_peers=TRUE"),
        (setText(["protocol_version=1"]), EINVAL, "protocol_version before a peer"),
        (setText(["remove=true"]), EINVAL, "peer key before public_key"),
        (setText(["allowed_ip=10.0.0.0/8"]), EINVAL, "allowed_ip before public_key"),
        (setText(["endpoint=192.0.2.1:1"]), EINVAL, "endpoint before public_key"),
        (setText(["public_key=" + String(repeating: "0", count: 63)]), EINVAL, "short public key"),
        (setText(["public_key=xyz"]), EINVAL, "bad public key"),
        (setText([peerLine, "listen_port=1"]), EINVAL, "interface key after public_key"),
        (setText([peerLine, "private_key=\(UAPIFixture.hex(0x11))"]), EINVAL, "private_key after public_key"),
        (setText([peerLine, "replace_peers=true"]), EINVAL, "replace_peers after public_key"),
        (setText([peerLine, "frobnicate=1"]), EINVAL, "unknown peer key"),
        (setText([peerLine, "protocol_version=2"]), EINVAL, "protocol_version 2"),
        (setText([peerLine, "protocol_version=01"]), EINVAL, "protocol_version 01"),
        (setText([peerLine, "protocol_version="]), EINVAL, "empty protocol_version"),
        (setText([peerLine, "remove=false"]), EINVAL, "remove=false"),
        (setText([peerLine, "update_only=yes"]), EINVAL, "update_only=yes"),
        (setText([peerLine, "replace_allowed_ips=false"]), EINVAL, "replace_allowed_ips=false"),
        (setText([peerLine, "preshared_key=12"]), EINVAL, "short preshared key"),
        (setText([peerLine, "endpoint=192.0.2.1"]), EINVAL, "endpoint without a port"),
        (setText([peerLine, "endpoint=192.0.2.1:0"]), EINVAL, "endpoint port 0"),
        (setText([peerLine, "endpoint=192.0.2.1:65536"]), EINVAL, "endpoint port too large"),
        (setText([peerLine, "endpoint=2001:db8::1:51820"]), EINVAL, "IPv6 endpoint without brackets"),
        (setText([peerLine, "endpoint=vpn.example.com:51820"]), EINVAL, "host name"),
        (setText([peerLine, "endpoint="]), EINVAL, "empty endpoint"),
        (setText([peerLine, "allowed_ip=10.0.0.1"]), EINVAL, "allowed_ip without a length"),
        (setText([peerLine, "allowed_ip=10.0.0.0/33"]), EINVAL, "IPv4 length 33"),
        (setText([peerLine, "allowed_ip=::/129"]), EINVAL, "IPv6 length 129"),
        (setText([peerLine, "allowed_ip=10.0.0/8"]), EINVAL, "three-part IPv4"),
        (setText([peerLine, "allowed_ip=10.0.0.0/"]), EINVAL, "empty length"),
        (setText([peerLine, "allowed_ip=10.0.0.0/8,10.1.0.0/16"]), EINVAL, "a list in one line"),
        (setText([peerLine, "persistent_keepalive_interval=65536"]), EINVAL, "keepalive too large"),
        (setText([peerLine, "persistent_keepalive_interval=off"]), EINVAL, "keepalive as a word"),
    ]

    @Test(arguments: malformed)
    func malformedRequestIsRefused(_ text: String, _ expected: Int32, _ why: String) {
        do throws(UAPIError) {
            _ = try parseUAPI(text)
            Issue.record("\(why): parsed, but errno \(expected) was expected")
        } catch {
            #expect(error.errno == expected, "\(why): \(error)")
            #expect(!error.message.isEmpty)
        }
    }

    @Test func errorsNameTheLine() {
        do throws(UAPIError) {
            _ = try parseUAPI(setText(["listen_port=1", Self.peerLine, "endpoint=nonsense"]))
            Issue.record("parsed")
        } catch {
            #expect(error.message.hasPrefix("line 4: endpoint"), "\(error)")
        }
    }

    @Test func noErrorMessageContainsKeyMaterial() {
        let secret = PrivateKey.generate().secret
        let psk = PresharedKey.generate().secret
        let peer = PrivateKey.generate().publicKey.key
        let texts = [secret.hexForDisplay, psk.hexForDisplay, peer.hex]
        func requests(showing hex: String) -> [String] {
            let peerLine = "public_key=\(peer.hex)"
            var texts: [String] = []
            texts.append(setText(["private_key=\(hex.dropLast())"]))             // one digit short
            texts.append(setText(["private_key=\(hex)0"]))                        // one too many
            texts.append(setText(["private_key=\(hex.uppercased())x"]))
            texts.append(setText(["\(hex)=1"]))                                   // a key sent as a key name
            texts.append(setText(["\(hex.prefix(32))=1"]))
            texts.append(setText([hex]))                                          // a line without '='
            texts.append(setText(["listen_port=\(hex)"]))
            texts.append(setText([peerLine, "preshared_key=\(hex)z"]))
            texts.append(setText([peerLine, "endpoint=\(hex)"]))
            texts.append(setText([peerLine, "allowed_ip=\(hex)"]))
            texts.append(setText([peerLine, "protocol_version=\(hex)"]))
            texts.append(setText([peerLine, "remove=\(hex)"]))
            texts.append(setText([peerLine, "\(hex)=true"]))
            texts.append(setText([peerLine, "private_key=\(hex)"]))
            texts.append(setText(["public_key=\(hex)x"]))
            texts.append(setText(["remove=true", "private_key=\(hex)"]))
            texts.append("\(hex)\n\n")
            texts.append("get=1\n\(hex)\n\n")
            return texts
        }
        let requests = texts.flatMap(requests(showing:))
        for text in requests {
            do throws(UAPIError) {
                _ = try parseUAPI(text)
                Issue.record("parsed: a malformed request was expected")
            } catch {
                for key in texts {
                    // No run of 16 digits of any key, in either case.
                    for start in stride(from: 0, through: 48, by: 8) {
                        let piece = String(key.dropFirst(start).prefix(16))
                        #expect(!error.message.lowercased().contains(piece), "a message shows key material: \(error.message)")
                    }
                }
            }
        }
        // And none from refusing an all-zero private key or an unsupported listen port/fwmark.
        for lines in [["private_key=\(UAPIFixture.hex(0))"], ["listen_port=0"], ["fwmark=3"]] {
            let error = applyError(lines, to: twoPeerTenant())
            #expect(error.map { !$0.message.contains(UAPIFixture.privateKeyHex) } ?? false)
        }
    }

    // MARK: applied(to:)

    @Test func emptyRequestChangesNothing() throws {
        let before = twoPeerTenant()
        let after = try #require(apply([], to: before))
        #expect(summary(after) == summary(before))
        #expect(after.listenPort == 51820)
        #expect(after.privateKey.publicKey == before.privateKey.publicKey)
        #expect(after.name == "acme" && after.namespace == "acme" && after.line == 3)
    }

    @Test func newPeerIsAppendedWithLineZero() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xcc))", "allowed_ip=10.3.0.9/24",
                                        "allowed_ip=10.3.0.0/24", "endpoint=[2001:db8::3]:7", "persistent_keepalive_interval=5"],
                                       to: twoPeerTenant()))
        #expect(summary(after) == [
            PeerSummary(0xaa, psk: 0x22, ["10.1.0.0/24", "fd00:1::/64"], endpoint: "192.0.2.7:51821", keepalive: 25, line: 8),
            PeerSummary(0xbb, ["10.2.0.0/24"], line: 14),
            // Host bits cleared, and the same prefix stored once.
            PeerSummary(0xcc, ["10.3.0.0/24"], endpoint: "[2001:db8::3]:7", keepalive: 5, line: 0),
        ])
    }

    @Test func existingPeerChangesInPlace() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "preshared_key=\(UAPIFixture.hex(0))",
                                        "endpoint=198.51.100.9:9", "persistent_keepalive_interval=0", "allowed_ip=10.9.0.0/16"],
                                       to: twoPeerTenant()))
        #expect(summary(after) == [
            PeerSummary(0xaa, ["10.1.0.0/24", "fd00:1::/64", "10.9.0.0/16"], endpoint: "198.51.100.9:9", line: 8),
            PeerSummary(0xbb, ["10.2.0.0/24"], line: 14),
        ])
    }

    @Test func presharedKeyIsSet() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xbb))", "preshared_key=\(UAPIFixture.hex(0x44))"],
                                       to: twoPeerTenant()))
        #expect(summary(after)[1] == PeerSummary(0xbb, psk: 0x44, ["10.2.0.0/24"], line: 14))
    }

    @Test func replacePeers() throws {
        let after = try #require(apply(["replace_peers=true", "public_key=\(UAPIFixture.hex(0xbb))", "allowed_ip=10.7.0.0/24",
                                        "public_key=\(UAPIFixture.hex(0xcc))"], to: twoPeerTenant()))
        // 0xbb is created anew: nothing of its old self is kept.
        #expect(summary(after) == [PeerSummary(0xbb, ["10.7.0.0/24"]), PeerSummary(0xcc)])
        let none = try #require(apply(["replace_peers=true"], to: twoPeerTenant()))
        #expect(none.peers.isEmpty)
    }

    @Test func removePeer() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "endpoint=192.0.2.99:1", "remove=true",
                                        "public_key=\(UAPIFixture.hex(0xdd))", "remove=true"], to: twoPeerTenant()))
        #expect(summary(after) == [PeerSummary(0xbb, ["10.2.0.0/24"], line: 14)])
        // Its prefixes are free again.
        let reused = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "remove=true",
                                         "public_key=\(UAPIFixture.hex(0xbb))", "allowed_ip=10.1.0.0/24"], to: twoPeerTenant()))
        #expect(summary(reused) == [PeerSummary(0xbb, ["10.2.0.0/24", "10.1.0.0/24"], line: 14)])
    }

    @Test func removeThenAddAgainInOneRequest() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "remove=true",
                                        "public_key=\(UAPIFixture.hex(0xaa))", "allowed_ip=10.5.0.0/24"], to: twoPeerTenant()))
        #expect(summary(after) == [PeerSummary(0xbb, ["10.2.0.0/24"], line: 14), PeerSummary(0xaa, ["10.5.0.0/24"])])
    }

    @Test func updateOnly() throws {
        let absent = try #require(apply(["public_key=\(UAPIFixture.hex(0xcc))", "update_only=true", "allowed_ip=10.8.0.0/24"],
                                        to: twoPeerTenant()))
        #expect(summary(absent) == summary(twoPeerTenant()))
        let present = try #require(apply(["public_key=\(UAPIFixture.hex(0xbb))", "update_only=true", "persistent_keepalive_interval=9"],
                                         to: twoPeerTenant()))
        #expect(summary(present)[1] == PeerSummary(0xbb, ["10.2.0.0/24"], keepalive: 9, line: 14))
    }

    @Test func replaceAllowedIPs() throws {
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "replace_allowed_ips=true",
                                        "allowed_ip=fd00:1::/64", "allowed_ip=10.6.0.0/24"], to: twoPeerTenant()))
        #expect(summary(after)[0].allowedIPs == ["fd00:1::/64", "10.6.0.0/24"])
        let emptied = try #require(apply(["public_key=\(UAPIFixture.hex(0xaa))", "replace_allowed_ips=true"], to: twoPeerTenant()))
        #expect(summary(emptied)[0].allowedIPs == [])
        #expect(summary(emptied)[1].allowedIPs == ["10.2.0.0/24"])
    }

    @Test func allowedIPMovesBetweenPeers() throws {
        // 0xbb takes 10.1.0.0/24 from 0xaa (written with host bits); other prefixes stay.
        let after = try #require(apply(["public_key=\(UAPIFixture.hex(0xbb))", "allowed_ip=10.1.0.77/24"], to: twoPeerTenant()))
        #expect(summary(after)[0].allowedIPs == ["fd00:1::/64"])
        #expect(summary(after)[1].allowedIPs == ["10.2.0.0/24", "10.1.0.0/24"])
        // A different length is a different prefix: both peers keep theirs.
        let nested = try #require(apply(["public_key=\(UAPIFixture.hex(0xbb))", "allowed_ip=10.1.0.0/25"], to: twoPeerTenant()))
        #expect(summary(nested)[0].allowedIPs == ["10.1.0.0/24", "fd00:1::/64"])
        #expect(summary(nested)[1].allowedIPs == ["10.2.0.0/24", "10.1.0.0/25"])
        // To a new peer, and back again within one request: the last one named has it.
        let back = try #require(apply(["public_key=\(UAPIFixture.hex(0xcc))", "allowed_ip=10.2.0.0/24",
                                       "public_key=\(UAPIFixture.hex(0xbb))", "allowed_ip=10.2.0.0/24"], to: twoPeerTenant()))
        let expected: [[String]] = [["10.1.0.0/24", "fd00:1::/64"], ["10.2.0.0/24"], []]
        #expect(summary(back).map(\.allowedIPs) == expected)
    }

    @Test func ownPublicKeyIsIgnored() throws {
        let own = UAPIFixture.privateKey.publicKey.key.hex
        let after = try #require(apply(["public_key=\(own)", "allowed_ip=10.1.0.0/24"], to: twoPeerTenant()))
        #expect(summary(after) == summary(twoPeerTenant()))
    }

    @Test func privateKeyChange() throws {
        let newKey = PrivateKey(hex: UAPIFixture.hex(0x55))!
        let after = try #require(apply(["private_key=\(UAPIFixture.hex(0x55))"], to: twoPeerTenant()))
        #expect(after.privateKey.publicKey == newKey.publicKey)
        #expect(after.peers.count == 2)
        // A peer whose public key becomes the tenant's own goes, as in the kernel and wireguard-go.
        var tenant = twoPeerTenant()
        tenant.peers.append(PeerConfiguration(publicKey: newKey.publicKey, allowedIPs: [UAPIFixture.prefix("10.4.0.0/24")], line: 20))
        let collided = try #require(apply(["private_key=\(UAPIFixture.hex(0x55))"], to: tenant))
        #expect(summary(collided) == summary(twoPeerTenant()))
    }

    @Test func allZeroPrivateKeyIsRefused() {
        let error = applyError(["private_key=\(UAPIFixture.hex(0))"], to: twoPeerTenant())
        #expect(error?.errno == EINVAL)
        #expect(error?.message.contains("private_key") == true)
    }

    @Test func listenPort() throws {
        let after = try #require(apply(["listen_port=4242"], to: twoPeerTenant()))
        #expect(after.listenPort == 4242)
        let error = applyError(["listen_port=0"], to: twoPeerTenant())
        #expect(error?.errno == EINVAL)
        #expect(error?.message.contains("fixed") == true, "the message says why: \(String(describing: error))")
    }

    @Test func fwmark() throws {
        let after = try #require(apply(["fwmark=0"], to: twoPeerTenant()))
        #expect(summary(after) == summary(twoPeerTenant()))
        #expect(applyError(["fwmark=1"], to: twoPeerTenant())?.errno == EOPNOTSUPP)
    }

    @Test func whatWgSyncconfSends() throws {
        // `wg syncconf` with a file holding 0xaa (changed) and 0xcc (new), the interface holding
        // 0xaa (with a preshared key the file lacks) and 0xbb: 0xbb removed, 0xaa's preshared
        // key zeroed and its allowed IPs replaced, 0xcc created.
        let after = try #require(apply([
            "public_key=\(UAPIFixture.hex(0xbb))", "remove=true",
            "public_key=\(UAPIFixture.hex(0xaa))", "preshared_key=\(UAPIFixture.hex(0))", "endpoint=192.0.2.8:1000",
            "replace_allowed_ips=true", "allowed_ip=10.1.0.0/24",
            "public_key=\(UAPIFixture.hex(0xcc))", "replace_allowed_ips=true", "allowed_ip=10.2.0.0/24",
        ], to: twoPeerTenant()))
        #expect(summary(after) == [
            PeerSummary(0xaa, ["10.1.0.0/24"], endpoint: "192.0.2.8:1000", keepalive: 25, line: 8),
            PeerSummary(0xcc, ["10.2.0.0/24"]),
        ])
    }

    @Test func thousandsOfPeersApplyQuickly() throws {
        // A syncconf-sized request: 20,000 new peers with two prefixes each, and one removal.
        var lines: [String] = []
        for i in 0..<20_000 {
            var key = Key32()
            key.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(i + 1).bigEndian, as: UInt32.self) }
            lines += ["public_key=\(key.hex)", "allowed_ip=10.\(i >> 8).\(i & 255).0/24", "allowed_ip=fd00::\(String(i, radix: 16))/128"]
        }
        lines += ["public_key=\(UAPIFixture.hex(0xaa))", "remove=true"]
        let clock = ContinuousClock()
        let start = clock.now
        let after = try #require(apply(lines, to: twoPeerTenant()))
        #expect(after.peers.count == 20_001)
        #expect(clock.now - start < .seconds(10))
    }
}
