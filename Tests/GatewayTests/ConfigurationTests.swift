import Gateway
import TestSupport
import Testing
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

/// Keys made fresh for each run, so no test can pass by knowing them.
enum Keys {
    static let tenant = PrivateKey.generate()
    static let tenant2 = PrivateKey.generate()
    static let peer = PrivateKey.generate()
    static let peer2 = PrivateKey.generate()
    static let psk = PresharedKey.generate()

    static var tenantB64: String { tenant.secret.base64ForDisplay }
    static var tenant2B64: String { tenant2.secret.base64ForDisplay }
    static var peerPub: String { peer.publicKey.base64 }
    static var peer2Pub: String { peer2.publicKey.base64 }
    static var pskB64: String { psk.secret.base64ForDisplay }

    /// Every secret and public key of the fixtures, in base64 and hex (both cases).
    static var allTexts: [String] {
        let secrets = [tenant.secret, tenant2.secret, peer.secret, peer2.secret, psk.secret]
        let publics = [tenant, tenant2, peer, peer2].map(\.publicKey.key)
        return secrets.flatMap { [$0.base64ForDisplay, $0.hexForDisplay, $0.hexForDisplay.uppercased()] }
            + publics.flatMap { [$0.base64, $0.hex, $0.hex.uppercased()] }
    }
}

/// Parses lines joined by "\n" (so line numbers are the array's, 1-based) and returns the
/// problems; records an issue when the text parsed.
func problems(_ lines: [String], sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigurationProblem] {
    do throws(ConfigurationError) {
        _ = try GatewayConfiguration.parse(lines.joined(separator: "\n"), fileName: "gw.conf")
        Issue.record("the configuration parsed, but problems were expected", sourceLocation: sourceLocation)
        return []
    } catch {
        return error.problems
    }
}

/// Parses lines that must be valid.
@discardableResult
func parse(_ lines: [String], sourceLocation: SourceLocation = #_sourceLocation) -> GatewayConfiguration? {
    do throws(ConfigurationError) {
        return try GatewayConfiguration.parse(lines.joined(separator: "\n"), fileName: "gw.conf")
    } catch {
        Issue.record("unexpected problems:\n\(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A valid file's lines: 1 [Gateway], 3 [Tenant], 8 [Peer].
var base: [String] {
    [
        "[Gateway]",                           // 1
        "Uplink = eth0",                       // 2
        "[Tenant]",                            // 3
        "Name = acme",                         // 4
        "PrivateKey = \(Keys.tenantB64)",      // 5
        "ListenPort = 51820",                  // 6
        "Namespace = acme",                    // 7
        "[Peer]",                              // 8
        "PublicKey = \(Keys.peerPub)",         // 9
        "AllowedIPs = 10.10.1.0/24",           // 10
    ]
}

/// `base` with `line` (1-based) replaced by `text`.
func replacing(_ line: Int, with text: String...) -> [String] {
    var lines = base
    lines.replaceSubrange((line - 1)..<line, with: text)
    return lines
}

/// `base` with lines inserted before `line` (1-based; base.count + 1 appends).
func inserting(_ text: String..., before line: Int) -> [String] {
    var lines = base
    lines.insert(contentsOf: text, at: line - 1)
    return lines
}

func prefix(_ text: String) -> IPPrefix { try! IPPrefix(parsing: text) }

@Suite struct ConfigurationTests {
    // MARK: Valid files

    @Test func theDocumentedExampleParses() throws {
        let text = """
            [Gateway]
            Uplink = eth0                 # required: the NIC facing the peers
            Queues = 0-1                  # optional: RX queues to serve; default all of the uplink's
            Cores = 2,3                   # optional: one per queue; default cores on the uplink's NUMA node
            XDPMode = native              # optional: native (default) | generic

            [Tenant]
            Name = acme                   # unique; also the WireGuard interface name (`wg show acme`)
            PrivateKey = \(Keys.tenantB64)
            ListenPort = 51820
            Namespace = acme              # the tenant's network namespace; created if absent
            Address = 10.10.0.1/24        # repeatable, IPv4 or IPv6: the tenant interface's addresses

            [Peer]                        # belongs to the [Tenant] above it
            PublicKey = \(Keys.peerPub)
            PresharedKey = \(Keys.pskB64)       # optional
            AllowedIPs = 10.10.1.0/24, fd00:a::/64
            Endpoint = 198.51.100.7:51820 # optional; learned and updated from authenticated packets
            PersistentKeepalive = 25      # optional
            """
        let c = try GatewayConfiguration.parse(text, fileName: "gw.conf")
        #expect(c.gateway.uplink == "eth0")
        #expect(c.gateway.queues == [0, 1])
        #expect(c.gateway.cores == [2, 3])
        #expect(c.gateway.xdpMode == .native)
        #expect(c.gateway.metricsListen == nil)
        #expect(c.gateway.line == 1)
        #expect(c.tenants.count == 1)
        let t = try #require(c.tenants.first)
        #expect(t.name == "acme")
        #expect(t.privateKey.secret.equals(Keys.tenant.secret))
        #expect(t.privateKey.publicKey == Keys.tenant.publicKey)
        #expect(t.listenPort == 51820)
        #expect(t.namespace == "acme")
        #expect(t.interfaceName == "acme")
        // The interface address keeps its host part.
        #expect(t.addresses == [prefix("10.10.0.1/24")])
        #expect(t.addresses.first?.address == .v4(0x0a0a_0001))
        #expect(t.addresses.first?.length == 24)
        #expect(t.line == 7)
        #expect(t.peers.count == 1)
        let p = try #require(t.peers.first)
        #expect(p.publicKey == Keys.peer.publicKey)
        #expect(p.presharedKey?.secret.equals(Keys.psk.secret) == true)
        #expect(p.allowedIPs == [prefix("10.10.1.0/24"), prefix("fd00:a::/64")])
        #expect(p.endpoint == Endpoint(address: .v4(0xc633_6407), port: 51820))
        #expect(p.endpoint?.description == "198.51.100.7:51820")
        #expect(p.persistentKeepalive == 25)
        #expect(p.line == 14)
        #expect(c.peerCount == 1)
    }

    /// `Crypto` takes each backend's name or auto, in any case; without it, auto.
    @Test(arguments: [("auto", CryptoSetting.auto), ("AUTO", .auto), ("openssl", .forced(.openssl)),
                      ("OpenSSL", .forced(.openssl)), ("libsodium", .forced(.libsodium)),
                      ("ipsec-mb", .forced(.ipsecMB)), ("IPsec-MB", .forced(.ipsecMB))])
    func cryptoSetting(value: String, expected: CryptoSetting) throws {
        let c = try #require(parse(inserting("Crypto = \(value)", before: 3)))
        #expect(c.gateway.crypto == expected)
        #expect(try #require(parse(base)).gateway.crypto == .auto)
        #expect(CryptoSetting(name: value) == expected)
        #expect(CryptoSetting.allCases.map(\.name) == ["auto", "libsodium", "openssl", "ipsec-mb"])
    }

    @Test func gatewayNameAndCapacities() throws {
        let c = try #require(parse(inserting("name = edge-1", "MaxTenants = 8", "MAXPEERS = 100", before: 3)))
        #expect(c.gateway.name == "edge-1")
        #expect(c.gateway.maxTenants == 8)
        #expect(c.gateway.maxPeers == 100)
        #expect(c.gateway.capacity(tenants: 1, peers: 1) == (8, 100))
    }

    @Test func severalTenantsWithOverlappingAddressesAndEveryOption() throws {
        let c = try #require(parse([
            "[Gateway]",
            "Uplink = ens1f0",
            "Queues = 0, 2-3,5",
            "Cores = 4-7",
            "XDPMode = Generic",
            "MetricsListen = [::1]:9100",
            "[Tenant]",                                    // 7
            "Name = acme",
            "PrivateKey = \(Keys.tenantB64)",
            "ListenPort = 51820",
            "Namespace = ns-acme",
            "InterfaceName = wg0",
            "Address = 10.10.0.1/24, fd00:a::1/64",
            "Address = 10.20.0.1/16",
            "[Peer]",                                      // 15
            "PublicKey = \(Keys.peerPub)",
            "AllowedIPs = 10.10.1.7/24",                   // host bits: normalised
            "AllowedIPs = 10.10.1.0/24, 192.0.2.1",        // the same prefix again, and a bare address
            "Endpoint = [2001:db8::7]:51821",
            "PersistentKeepalive = off",
            "[Peer]",                                      // 21
            "PublicKey = \(Keys.peer2Pub)",
            "PersistentKeepalive = 0",
            "[Tenant]",                                    // 24
            "Name = globex",
            "PrivateKey = \(Keys.tenant2B64)",
            "ListenPort = 51821",
            "Namespace = ns-globex",
            "Address = 10.10.0.1/24",                      // the same as acme's: tenants may overlap
            "[Peer]",                                      // 30
            "PublicKey = \(Keys.peerPub)",                 // the same peer key in another tenant
            "AllowedIPs = 10.10.1.0/24",                   // the same prefix in another tenant
        ]))
        #expect(c.gateway.queues == [0, 2, 3, 5])
        #expect(c.gateway.cores == [4, 5, 6, 7])
        #expect(c.gateway.xdpMode == .generic)
        #expect(c.gateway.metricsListen == Endpoint(address: try IPAddress(parsing: "::1"), port: 9100))
        #expect(c.gateway.name == GatewaySection.defaultName)
        #expect(c.gateway.capacity(tenants: 2, peers: 3) == (64, 1024))
        #expect(c.tenants.map(\.name) == ["acme", "globex"])
        #expect(c.tenants.map(\.line) == [7, 24])
        let acme = c.tenants[0]
        #expect(acme.interfaceName == "wg0")
        #expect(acme.namespace == "ns-acme")
        #expect(acme.addresses == [prefix("10.10.0.1/24"), prefix("fd00:a::1/64"), prefix("10.20.0.1/16")])
        #expect(acme.peers.map(\.line) == [15, 21])
        #expect(acme.peers[0].allowedIPs == [prefix("10.10.1.0/24"), prefix("192.0.2.1/32")])
        #expect(acme.peers[0].endpoint?.description == "[2001:db8::7]:51821")
        #expect(acme.peers[0].persistentKeepalive == 0)
        #expect(acme.peers[0].presharedKey == nil)
        #expect(acme.peers[1].allowedIPs.isEmpty)
        #expect(acme.peers[1].endpoint == nil)
        #expect(c.tenants[1].interfaceName == "globex")
        #expect(c.tenants[1].addresses == [prefix("10.10.0.1/24")])
        #expect(c.peerCount == 3)
    }

    @Test func commentsCaseAndWhitespaceFollowWgQuick() throws {
        let text = "# a comment first\r\n"
            + "\r\n"
            + "   [gAtEwAy]   # comment after a header\r\n"
            + "\tUPLINK=eth0#no space before the comment\r\n"
            + "xdpmode\t =  NATIVE \r\n"
            + "[ tenant ]\n"
            + "name=acme\n"
            + "   privatekey   =   \(Keys.tenantB64)   # a key ends in '=', and so does this: =\n"
            + "LISTENPORT = 51820\n"
            + "namespace = acme\n"
            + "    \t   \n"
            + "# [Peer] commented out is no section\n"
            + "[PEER]\n"
            + "publickey = \(Keys.peerPub)\n"
            + "allowedips=10.10.1.0/24,fd00:a::/64 ,  10.10.2.0/24\n"
            + "persistentKEEPALIVE = OFF"            // no newline at the end
        let c = try GatewayConfiguration.parse(text, fileName: "gw.conf")
        #expect(c.gateway.uplink == "eth0")
        #expect(c.gateway.line == 3)
        #expect(c.tenants.first?.name == "acme")
        #expect(c.tenants.first?.privateKey.publicKey == Keys.tenant.publicKey)
        #expect(c.tenants.first?.peers.first?.line == 13)
        #expect(c.tenants.first?.peers.first?.allowedIPs == [prefix("10.10.1.0/24"), prefix("fd00:a::/64"), prefix("10.10.2.0/24")])
    }

    // MARK: Problems, one class at a time

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var lines: [String]
        var expected: [(Int?, String)]
        var testDescription: String { name }
        init(_ name: String, _ lines: [String], _ expected: (Int?, String)...) {
            self.name = name
            self.lines = lines
            self.expected = expected
        }
    }

    static let tenantBeforePeer = "[Peer] before any [Tenant]: a peer belongs to the [Tenant] above it"
    static let badInterfaceName = "is not a valid interface name: no '/', ':', whitespace or non-ASCII characters"
    static let badKey = "not a base64 WireGuard key (44 characters)"
    static let noTenant = "no [Tenant] section: at least one tenant is required"
    static let noGateway = "no [Gateway] section: the file needs one, with the Uplink"

    static let cases: [Case] = [
        // Structure
        Case("key outside a section", ["Uplink = eth0"] + base,
             (1, "Uplink is outside a section: keys belong under [Gateway], [Tenant] or [Peer]")),
        Case("unknown key outside a section", ["Colour = blue"] + base,
             (1, "key 'Colour' is outside a section: keys belong under [Gateway], [Tenant] or [Peer]")),
        Case("unknown section", inserting("[Interface]", "Address = 10.0.0.1/24", before: 3),
             (3, "unknown section [Interface]: expected [Gateway], [Tenant] or [Peer]")),
        Case("malformed header", replacing(3, with: "[Tenant"),
             (3, "malformed section header: expected [Gateway], [Tenant] or [Peer]"),
             (8, tenantBeforePeer), (nil, noTenant)),
        Case("line without =", inserting("ListenPort 51821", before: 8),
             (8, "expected `Key = Value` or a [Section] header")),
        Case("empty key", inserting(" = 3", before: 8), (8, "expected `Key = Value`: the key is missing")),
        Case("unknown key", inserting("Colour = blue", before: 8), (8, "unknown key 'Colour' in [Tenant]")),
        Case("key of another section", inserting("ListenPort = 3", before: 11),
             (11, "ListenPort belongs in [Tenant], not in [Peer]")),
        Case("duplicate single-valued key", inserting("listenport = 51821", before: 8),
             (8, "ListenPort is given twice (first at line 6)")),
        Case("second [Gateway]", inserting("[Gateway]", "Uplink = eth1", before: 3),
             (3, "a second [Gateway] section (the first is at line 1): there is one uplink")),
        Case("[Peer] before any [Tenant]", inserting("[Peer]", "PublicKey = \(Keys.peer2Pub)", before: 3),
             (3, tenantBeforePeer)),
        Case("no [Gateway]", Array(base[2...]), (nil, noGateway)),
        Case("no [Tenant]", Array(base[..<2]), (nil, noTenant)),
        Case("empty file", [""], (nil, noGateway), (nil, noTenant)),

        // Required keys, reported at the section's header
        Case("missing Uplink", replacing(2, with: "XDPMode = native"), (1, "[Gateway] is missing Uplink (the NIC facing the peers)")),
        Case("missing Name", replacing(4, with: "# no Name"), (3, "[Tenant] is missing Name")),
        Case("missing PrivateKey and Namespace", Array(base[0..<4]) + ["ListenPort = 51820"] + Array(base[7...]),
             (3, "[Tenant] is missing PrivateKey"), (3, "[Tenant] is missing Namespace")),
        Case("missing ListenPort", replacing(6, with: ""), (3, "[Tenant] is missing ListenPort")),
        Case("missing PublicKey", replacing(9, with: "Endpoint = 192.0.2.1:51820"), (8, "[Peer] is missing PublicKey")),

        // [Gateway] values
        Case("Uplink with whitespace", replacing(2, with: "Uplink = eth 0"), (2, "Uplink: 'eth 0' \(badInterfaceName)")),
        Case("Uplink too long", replacing(2, with: "Uplink = enp0s31f6abcdefghij"),
             (2, "Uplink: not a valid interface name: longer than 15 characters")),
        Case("XDPMode", inserting("XDPMode = turbo", before: 3), (3, "XDPMode: 'turbo' is not native or generic")),
        Case("Crypto", inserting("Crypto = aesni", before: 3), (3, "Crypto: 'aesni' is not auto, openssl, libsodium or ipsec-mb")),
        Case("Crypto misspelt", inserting("Crypto = ipsecmb", before: 3),
             (3, "Crypto: 'ipsecmb' is not auto, openssl, libsodium or ipsec-mb")),
        Case("Crypto twice", inserting("Crypto = auto", "crypto = openssl", before: 3),
             (4, "Crypto is given twice (first at line 3)")),
        Case("Queues backwards", inserting("Queues = 3-1", before: 3), (3, "Queues: the range 3-1 runs backwards")),
        Case("Queues twice", inserting("Queues = 0-2, 2", before: 3), (3, "Queues: queue 2 is listed twice")),
        Case("Queues not a number", inserting("Queues = one", before: 3),
             (3, "Queues: 'one' is not a queue number or range N-M (0 to 65535)")),
        Case("Queues empty", inserting("Queues =", before: 3),
             (3, "Queues: empty; give queue numbers (N, N-M, or a comma list)")),
        Case("Cores and Queues differ", inserting("Queues = 0-1", "Cores = 1,2,3", before: 3),
             (4, "Cores: 3 cores for 2 queues: give one core per queue")),
        Case("Cores negative", inserting("Cores = -1", before: 3),
             (3, "Cores: '-1' is not a core number or range N-M (0 to 65535)")),
        Case("MetricsListen host name", inserting("MetricsListen = localhost:9100", before: 3),
             (3, "MetricsListen: 'localhost:9100' is a host name; names are not resolved: give an IP address (a.b.c.d:port or [IPv6]:port)")),
        Case("Name with a slash", inserting("Name = ../x", before: 3),
             (3, "Name: '../x' may hold only letters, digits, '-' and '_', and not start with '-'")),
        Case("MaxPeers zero", inserting("MaxPeers = 0", before: 3), (3, "MaxPeers: '0' is not a number from 1 to 1048576")),
        Case("MaxTenants below the file", inserting("MaxTenants = 1", before: 3) + ["[Tenant]", "Name = t2",
                                                    "PrivateKey = \(Keys.tenant2B64)", "ListenPort = 9", "Namespace = n2"],
             (3, "MaxTenants: 1 is fewer than the 2 tenants in this file")),
        Case("MetricsListen no port", inserting("MetricsListen = 127.0.0.1", before: 3),
             (3, "MetricsListen: '127.0.0.1' is not an IPv4 a.b.c.d:port or IPv6 [address]:port")),

        // [Tenant] values
        Case("PrivateKey short", replacing(5, with: "PrivateKey = \(Keys.tenantB64.dropLast(2))"), (5, "PrivateKey: \(badKey)")),
        Case("PrivateKey not base64", replacing(5, with: "PrivateKey = " + String(repeating: "!", count: 43) + "="),
             (5, "PrivateKey: \(badKey)")),
        Case("PrivateKey in hex", replacing(5, with: "PrivateKey = \(Keys.tenant.secret.hexForDisplay)"), (5, "PrivateKey: \(badKey)")),
        Case("ListenPort 0", replacing(6, with: "ListenPort = 0"), (6, "ListenPort: '0' is not a port number from 1 to 65535")),
        Case("ListenPort 65536", replacing(6, with: "ListenPort = 65536"),
             (6, "ListenPort: '65536' is not a port number from 1 to 65535")),
        Case("ListenPort signed", replacing(6, with: "ListenPort = +80"), (6, "ListenPort: '+80' is not a port number from 1 to 65535")),
        Case("Name with colon", replacing(4, with: "Name = wg:1"), (4, "Name: 'wg:1' \(badInterfaceName)")),
        Case("Name with slash", replacing(4, with: "Name = a/b"), (4, "Name: 'a/b' \(badInterfaceName)")),
        Case("Name dot-dot", replacing(4, with: "Name = .."), (4, "Name: '..' is not a valid interface name")),
        Case("Name 16 characters", replacing(4, with: "Name = abcdefghijklmnop"),
             (4, "Name: not a valid interface name: longer than 15 characters")),
        Case("Name empty", replacing(4, with: "Name ="), (4, "Name: empty; give an interface name")),
        Case("InterfaceName invalid", inserting("InterfaceName = wg 0", before: 8), (8, "InterfaceName: 'wg 0' \(badInterfaceName)")),
        Case("Namespace with slash", replacing(7, with: "Namespace = ../etc"),
             (7, "Namespace: '../etc' is not a valid network namespace name: no '/', whitespace, non-ASCII characters, '.' or '..'")),
        Case("Address invalid", inserting("Address = 10.10.0.1/33", before: 8),
             (8, "Address: '10.10.0.1/33' is not an IP address with an optional /prefix length")),
        Case("Address twice", inserting("Address = 10.10.0.1/24", "Address = 10.10.0.1/24", before: 8),
             (9, "Address: 10.10.0.1/24 is given twice")),
        Case("Address empty item", inserting("Address = 10.10.0.1/24,,fd00::1/64", before: 8),
             (8, "Address: an empty item in the list")),

        // Across tenants
        Case("same Name twice", base + ["[Tenant]", "Name = acme", "PrivateKey = \(Keys.tenant2B64)",
                                        "ListenPort = 51821", "Namespace = other"],
             (12, "Name: 'acme' is already the name of the [Tenant] at line 3 (names must be unique: they name the WireGuard interfaces)")),
        Case("same ListenPort twice", base + ["[Tenant]", "Name = globex", "PrivateKey = \(Keys.tenant2B64)",
                                              "ListenPort = 51820", "Namespace = globex"],
             (14, "ListenPort: 51820 is already used by tenant 'acme' (line 6)")),
        Case("same interface in one namespace", base + ["[Tenant]", "Name = globex", "PrivateKey = \(Keys.tenant2B64)",
                                                        "ListenPort = 51821", "Namespace = acme", "InterfaceName = acme"],
             (16, "InterfaceName: 'acme' in namespace 'acme' is already used by the [Tenant] at line 3")),

        // [Peer] values
        Case("PublicKey invalid", replacing(9, with: "PublicKey = \(Keys.peerPub.dropFirst())"), (9, "PublicKey: \(badKey)")),
        Case("PublicKey non-canonical", replacing(9, with: "PublicKey = " + Keys.peerPub.dropLast(2) + "/="),
             (9, "PublicKey: \(badKey)")),
        Case("PresharedKey invalid", inserting("PresharedKey = abc", before: 11), (11, "PresharedKey: \(badKey)")),
        Case("the same peer twice", base + ["[Peer]", "PublicKey = \(Keys.peerPub)"],
             (12, "PublicKey: the same key as the [Peer] at line 8 of this tenant")),
        Case("the tenant's own key as a peer", replacing(9, with: "PublicKey = \(Keys.tenant.publicKey.base64)"),
             (9, "PublicKey: this is the tenant's own public key (of its PrivateKey)")),
        Case("AllowedIPs invalid", replacing(10, with: "AllowedIPs = 10.10.1.0/24, 300.1.1.1/8, fd00::/129, bogus"),
             (10, "AllowedIPs: '300.1.1.1/8' is not an IP prefix (ADDRESS/LENGTH or an address)"),
             (10, "AllowedIPs: 'fd00::/129' is not an IP prefix (ADDRESS/LENGTH or an address)"),
             (10, "AllowedIPs: 'bogus' is not an IP prefix (ADDRESS/LENGTH or an address)")),
        Case("AllowedIPs for two peers", base + ["[Peer]", "PublicKey = \(Keys.peer2Pub)", "AllowedIPs = 10.0.0.0/8",
                                                 "AllowedIPs = 10.10.1.99/24"],
             (14, "AllowedIPs: 10.10.1.0/24 is already allowed for the [Peer] at line 8; a prefix routes to one peer")),
        Case("Endpoint host name", inserting("Endpoint = vpn.example.com:51820", before: 11),
             (11, "Endpoint: 'vpn.example.com:51820' is a host name; names are not resolved: give an IP address (a.b.c.d:port or [IPv6]:port)")),
        Case("Endpoint without port", inserting("Endpoint = 198.51.100.7", before: 11),
             (11, "Endpoint: '198.51.100.7' is not an IPv4 a.b.c.d:port or IPv6 [address]:port")),
        Case("Endpoint IPv6 without brackets", inserting("Endpoint = fd00::1:51820", before: 11),
             (11, "Endpoint: 'fd00::1:51820' is not an IPv4 a.b.c.d:port or IPv6 [address]:port")),
        Case("Endpoint port 0", inserting("Endpoint = [fd00::1]:0", before: 11),
             (11, "Endpoint: the port must be a number from 1 to 65535")),
        Case("Endpoint port 65536", inserting("Endpoint = 198.51.100.7:65536", before: 11),
             (11, "Endpoint: the port must be a number from 1 to 65535")),
        Case("PersistentKeepalive too big", inserting("PersistentKeepalive = 65536", before: 11),
             (11, "PersistentKeepalive: '65536' is not a number of seconds from 0 to 65535, or off")),
        Case("PersistentKeepalive word", inserting("PersistentKeepalive = sometimes", before: 11),
             (11, "PersistentKeepalive: 'sometimes' is not a number of seconds from 0 to 65535, or off")),
    ]

    @Test(arguments: cases)
    func eachProblemIsReportedWithItsLine(_ c: Case) {
        let found = problems(c.lines)
        let got = found.map { "\($0.line.map(String.init) ?? "-"): \($0.message)" }
        let want = c.expected.map { "\($0.0.map(String.init) ?? "-"): \($0.1)" }
        #expect(got == want)
        // Every problem is labelled with the file, and with its line when it has one.
        for (problem, (line, message)) in zip(found, c.expected) {
            #expect(problem.description == (line.map { "gw.conf:\($0): \(message)" } ?? "gw.conf: \(message)"))
        }
    }

    @Test func boundariesThatMustPass() {
        parse(replacing(6, with: "ListenPort = 65535"))
        parse(replacing(6, with: "ListenPort = 1"))
        parse(replacing(4, with: "Name = abcdefghijklmno"))          // 15 characters
        parse(inserting("PersistentKeepalive = 65535", before: 11))
        parse(inserting("Endpoint = 198.51.100.7:65535", before: 11))
        parse(inserting("AllowedIPs = 0.0.0.0/0, ::/0", before: 11))
        parse(inserting("AllowedIPs =", before: 11))                  // an empty list
        parse(inserting("Queues = 7", "Cores = 0", before: 3))
        parse(inserting("Cores = 1,3", before: 3))                   // without Queues: checked at start-up
    }

    @Test func allProblemsAreReportedAtOnce() {
        let found = problems([
            "Uplink = eth0",                                     // 1 outside
            "[Gateway]",
            "Uplink = eth 0",                                    // 3
            "XDPMode = turbo",                                   // 4
            "[Peer]",                                            // 5 before any tenant
            "PublicKey = nope",                                  // 6 checked all the same
            "[Tenant]",                                          // 7 missing Namespace
            "Name = acme",
            "PrivateKey = \(Keys.tenantB64)",
            "ListenPort = 0",                                    // 10
            "[Tenant]",                                          // 11
            "Name = acme",                                       // 12 duplicate name
            "PrivateKey = \(Keys.tenant2B64)",
            "ListenPort = 51821",
            "Namespace = globex",
            "[Peer]",                                            // 16
            "PublicKey = \(Keys.tenant2.publicKey.base64)",      // 17 own key
            "Endpoint = vpn.example.com:1",                      // 18
        ])
        #expect(found.map(\.line) == [1, 3, 4, 5, 6, 7, 10, 12, 17, 18])
        #expect(found.allSatisfy { $0.fileName == "gw.conf" })
        // The error's description: one "file:line: message" per line, in line order.
        let error = ConfigurationError(problems: found)
        #expect(error.description.split(separator: "\n").count == found.count)
        #expect(error.description.hasPrefix("gw.conf:1: Uplink is outside a section"))
    }

    // MARK: Secrets

    @Test func noKeyMaterialInAnyMessage() {
        let k = Keys.tenantB64, p = Keys.peerPub, psk = Keys.pskB64, hex = Keys.tenant.secret.hexForDisplay
        var texts: [[String]] = [
            // Keys where names, numbers and addresses belong.
            replacing(2, with: "Uplink = \(k)"),
            replacing(4, with: "Name = \(k)"),
            replacing(4, with: "Name = \(hex)"),
            replacing(6, with: "ListenPort = \(psk)"),
            replacing(7, with: "Namespace = \(k) x"),
            replacing(10, with: "AllowedIPs = \(k), \(hex)"),
            inserting("Address = \(psk)", before: 8),
            inserting("Endpoint = \(p)", before: 11),
            inserting("Endpoint = [\(hex)]:1", before: 11),
            inserting("Endpoint = \(hex):1", before: 11),
            inserting("PersistentKeepalive = \(k)", before: 11),
            inserting("XDPMode = \(k)", "Queues = \(k)", "Cores = \(hex)", "MetricsListen = \(k)", before: 3),
            // Keys where keys belong, but broken, doubled or misplaced.
            replacing(5, with: "PrivateKey = \(k.dropLast())"),
            replacing(5, with: "PrivateKey = \(k)x"),
            replacing(5, with: "PrivateKey = \(hex)"),
            replacing(5, with: "PrivateKey \(k)"),
            inserting("PrivateKey = \(Keys.tenant2B64)", before: 8),
            inserting("PresharedKey = \(psk) \(psk)", before: 11),
            replacing(9, with: "PublicKey = \(Keys.tenant.publicKey.base64)"),
            base + ["[Peer]", "PublicKey = \(p)"],
            // Keys as keys and section names, and alone on a line.
            inserting("\(k)", before: 8),
            inserting("\(k) = 1", before: 8),
            inserting("[\(k)]", before: 8),
            ["\(psk)"] + base,
        ]
        // And everything at once.
        texts.append(texts.flatMap { $0 })
        for lines in texts {
            let found = problems(lines)
            let description = ConfigurationError(problems: found).description
            #expect(!description.isEmpty)
            // Not any key, and not any 12-character piece of one.
            if let leak = KeyMaterial.leak(of: Keys.allTexts, in: description) {
                Issue.record("key material in the problems: \(leak)")
                return
            }
        }
    }

    // MARK: Files

    struct FileProblem: Error { var message: String }

    /// A file in the temporary directory with `contents` and `mode`; the caller removes it.
    static func temporaryFile(_ contents: String, mode: mode_t) throws -> String {
        var template = Array("/tmp/xdpwg-config-test-\(getpid())-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw FileProblem(message: "mkstemp: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let bytes = Array(contents.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fchmod(fd, mode) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw FileProblem(message: "writing \(path): \(reason)")
        }
        return path
    }

    @Test func loadRefusesFilesOthersMayReadOrWriteAndAcceptsOwnerOnly() throws {
        let text = base.joined(separator: "\n") + "\n"
        for mode: mode_t in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let path = try Self.temporaryFile(text, mode: mode)
            defer { unlink(path) }
            do throws(ConfigurationError) {
                _ = try GatewayConfiguration.load(path: path)
                Issue.record("mode \(String(mode, radix: 8)) was accepted")
            } catch {
                let octal = "0" + String(mode, radix: 8)
                #expect(error.problems.count == 1)
                #expect(error.description == "\(path): mode \(octal) lets group or others read or write this file, "
                        + "which holds private keys: run `chmod 600 \(path)`")
            }
        }
        for mode: mode_t in [0o600, 0o400] {
            let path = try Self.temporaryFile(text, mode: mode)
            defer { unlink(path) }
            let c = try GatewayConfiguration.load(path: path)
            #expect(c.tenants.first?.privateKey.publicKey == Keys.tenant.publicKey)
        }
    }

    @Test func loadNamesTheFileInEveryProblem() throws {
        let path = try Self.temporaryFile(replacing(6, with: "ListenPort = 0").joined(separator: "\n"), mode: 0o600)
        defer { unlink(path) }
        do throws(ConfigurationError) {
            _ = try GatewayConfiguration.load(path: path)
            Issue.record("an invalid file was accepted")
        } catch {
            #expect(error.description == "\(path):6: ListenPort: '0' is not a port number from 1 to 65535")
        }
        do throws(ConfigurationError) {
            _ = try GatewayConfiguration.load(path: path + ".absent")
            Issue.record("a missing file was accepted")
        } catch {
            #expect(error.description == "\(path).absent: cannot open: No such file or directory (ENOENT)")
        }
        do throws(ConfigurationError) {
            _ = try GatewayConfiguration.load(path: "/tmp")
            Issue.record("a directory was accepted")
        } catch {
            #expect(error.description == "/tmp: not a regular file")
        }
    }

    // MARK: Endpoint

    @Test func endpointForms() throws {
        #expect(try Endpoint(parsing: "192.0.2.1:1") == Endpoint(address: .v4(0xc000_0201), port: 1))
        #expect(try Endpoint(parsing: "[::ffff:192.0.2.1]:65535").port == 65535)
        #expect(try Endpoint(parsing: "[2001:db8::1]:51820").description == "[2001:db8::1]:51820")
        #expect(throws: Endpoint.ParseError.hostName) { try Endpoint(parsing: "example.com:1") }
        #expect(throws: Endpoint.ParseError.hostName) { try Endpoint(parsing: "example.com") }
        #expect(throws: Endpoint.ParseError.malformed) { try Endpoint(parsing: "[192.0.2.1]:1") }
        #expect(throws: Endpoint.ParseError.malformed) { try Endpoint(parsing: "[fe80::1%eth0]:1") }
        #expect(throws: Endpoint.ParseError.malformed) { try Endpoint(parsing: "[::1]51820") }
        #expect(throws: Endpoint.ParseError.invalidPort) { try Endpoint(parsing: "192.0.2.1:") }
        #expect(throws: Endpoint.ParseError.invalidPort) { try Endpoint(parsing: "192.0.2.1:0x10") }
    }
}
