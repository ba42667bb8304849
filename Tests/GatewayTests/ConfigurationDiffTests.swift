import Gateway
import Testing
import WireGuard

/// What a reload applies: only the differences, and nothing when the [Gateway] section or
/// the tables' room would have to change.
@Suite struct ConfigurationDiffTests {
    static let third = PrivateKey.generate()

    /// A file with tenant `acme` (peers as given) and optionally `globex`.
    static func file(acmePeers: [String], acme: [String] = [], globex: Bool = false, gateway: [String] = []) -> [String] {
        var lines = ["[Gateway]", "Uplink = eth0"] + gateway
        lines += ["[Tenant]", "Name = acme", "PrivateKey = \(Keys.tenantB64)", "ListenPort = 51820",
                  "Namespace = ns-acme", "Address = 10.10.0.1/24"] + acme
        lines += acmePeers
        if globex {
            lines += ["[Tenant]", "Name = globex", "PrivateKey = \(Keys.tenant2B64)", "ListenPort = 51821",
                      "Namespace = ns-globex"]
        }
        return lines
    }

    static let peer1 = ["[Peer]", "PublicKey = \(Keys.peerPub)", "AllowedIPs = 10.10.1.0/24"]
    static let peer2 = ["[Peer]", "PublicKey = \(Keys.peer2Pub)", "AllowedIPs = 10.10.2.0/24"]

    func diff(_ old: [String], _ new: [String]) throws -> ConfigurationDiff {
        let a = try #require(parse(old)), b = try #require(parse(new))
        return try a.diff(to: b, fileName: "gw.conf")
    }

    @Test func theSameFileChangesNothing() throws {
        let d = try diff(Self.file(acmePeers: Self.peer1), Self.file(acmePeers: Self.peer1))
        #expect(d.isEmpty)
        #expect(d.summary.isEmpty)
    }

    @Test func tenantsAddedAndRemoved() throws {
        let added = try diff(Self.file(acmePeers: Self.peer1), Self.file(acmePeers: Self.peer1, globex: true))
        #expect(added.addedTenants.map(\.name) == ["globex"])
        #expect(added.removedTenants.isEmpty && added.changedTenants.isEmpty && added.rebuiltTenants.isEmpty)
        #expect(added.summary == ["tenant globex: added with 0 peer(s)"])
        let removed = try diff(Self.file(acmePeers: Self.peer1, globex: true), Self.file(acmePeers: Self.peer1))
        #expect(removed.removedTenants == ["globex"])
        #expect(removed.summary == ["tenant globex: removed"])
    }

    @Test func peersAddedRemovedAndChangedInPlace() throws {
        let old = Self.file(acmePeers: Self.peer1 + Self.peer2)
        let changedPeer1 = ["[Peer]", "PublicKey = \(Keys.peerPub)", "AllowedIPs = 10.10.1.0/24, 10.10.3.0/24",
                            "Endpoint = 192.0.2.7:51820", "PersistentKeepalive = 25", "PresharedKey = \(Keys.pskB64)"]
        let newPeer = ["[Peer]", "PublicKey = \(Self.third.publicKey.base64)"]
        let d = try diff(old, Self.file(acmePeers: changedPeer1 + newPeer))
        let acme = try #require(d.changedTenants.first)
        #expect(d.changedTenants.count == 1 && acme.name == "acme")
        #expect(acme.removedPeers == [Keys.peer2.publicKey])
        #expect(acme.addedPeers.map(\.publicKey) == [Self.third.publicKey])
        let p = try #require(acme.changedPeers.first)
        #expect(p.allowedIPsChanged && p.endpointChanged && p.keepaliveChanged && p.presharedKeyChanged)
        #expect(acme.routesChanged && !acme.privateKeyChanged && !acme.listenPortChanged)
        #expect(d.summary == [
            "tenant acme: peer \(Keys.peer2.publicKey.shortName) removed",
            "tenant acme: peer \(Self.third.publicKey.shortName) added",
            "tenant acme: peer \(Keys.peer.publicKey.shortName) changed: allowed IPs, endpoint, persistent keepalive, preshared key",
        ])
        // No key material in what is logged and printed.
        let text = d.summary.joined(separator: "\n")
        for secret in Keys.allTexts where secret.count > 40 { #expect(!text.contains(secret)) }
    }

    @Test func theSameAllowedIPsInAnotherOrderAreNoChange() throws {
        let a = ["[Peer]", "PublicKey = \(Keys.peerPub)", "AllowedIPs = 10.10.1.0/24, 10.10.3.0/24"]
        let b = ["[Peer]", "PublicKey = \(Keys.peerPub)", "AllowedIPs = 10.10.3.0/24", "AllowedIPs = 10.10.1.0/24"]
        #expect(try diff(Self.file(acmePeers: a), Self.file(acmePeers: b)).isEmpty)
    }

    @Test func keyAndPortChangeInPlaceButTheNamespaceRebuilds() throws {
        let port = try diff(Self.file(acmePeers: Self.peer1),
                            Self.file(acmePeers: Self.peer1).map { $0 == "ListenPort = 51820" ? "ListenPort = 51830" : $0 })
        #expect(port.changedTenants.first?.listenPortChanged == true)
        let key = try diff(Self.file(acmePeers: Self.peer1), Self.file(acmePeers: Self.peer1).map {
            $0 == "PrivateKey = \(Keys.tenantB64)" ? "PrivateKey = \(Keys.tenant2B64)" : $0
        })
        #expect(key.changedTenants.first?.privateKeyChanged == true)
        let moved = try diff(Self.file(acmePeers: Self.peer1),
                             Self.file(acmePeers: Self.peer1).map { $0 == "Namespace = ns-acme" ? "Namespace = ns-other" : $0 })
        #expect(moved.rebuiltTenants.map(\.name) == ["acme"] && moved.changedTenants.isEmpty)
        let readdressed = try diff(Self.file(acmePeers: Self.peer1), Self.file(acmePeers: Self.peer1, acme: ["Address = 10.20.0.1/24"]))
        #expect(readdressed.rebuiltTenants.map(\.name) == ["acme"])
    }

    @Test func gatewaySectionChangesAreRefusedWithTheirLine() throws {
        let a = try #require(parse(Self.file(acmePeers: Self.peer1)))
        let b = try #require(parse(Self.file(acmePeers: Self.peer1, gateway: ["Queues = 0", "MaxPeers = 5000",
                                                                              "Crypto = openssl"])))
        do throws(ConfigurationError) {
            _ = try a.diff(to: b, fileName: "gw.conf")
            Issue.record("a change of Queues was accepted")
        } catch {
            #expect(error.description == """
                gw.conf:1: [Gateway] Queues cannot change while the gateway runs; restart it
                gw.conf:1: [Gateway] MaxPeers cannot change while the gateway runs; restart it
                gw.conf:1: [Gateway] Crypto cannot change while the gateway runs; restart it
                """)
        }
    }

    @Test func moreTenantsThanTheTablesHoldAreRefused() throws {
        // Room is fixed at start: twice the file's tenants, at least 64.
        let running = try #require(parse(Self.file(acmePeers: Self.peer1)))
        var lines = Self.file(acmePeers: Self.peer1)
        for t in 1...64 {
            lines += ["[Tenant]", "Name = t\(t)", "PrivateKey = \(Keys.tenant2B64)", "ListenPort = \(52000 + t)",
                      "Namespace = ns-t\(t)"]
        }
        let tooMany = try #require(parse(lines))
        do throws(ConfigurationError) {
            _ = try running.diff(to: tooMany, fileName: "gw.conf")
            Issue.record("65 tenants were accepted with room for 64")
        } catch {
            #expect(error.description == "gw.conf: 65 tenants do not fit the 64 the gateway has room for "
                    + "(MaxTenants, fixed at start); restart it with a larger MaxTenants")
        }
        let fits = try #require(parse(Array(lines.prefix(lines.count - 5))))
        #expect(try running.diff(to: fits, fileName: "gw.conf").addedTenants.count == 63)
    }
}
