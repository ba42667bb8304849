import Testing
@testable import WireGuard

// Peer handles used by the tables, named like the kernel selftest's peers.
private let a: UInt32 = 1, b: UInt32 = 2, c: UInt32 = 3, d: UInt32 = 4, e: UInt32 = 5
private let f: UInt32 = 6, g: UInt32 = 7, h: UInt32 = 8, i: UInt32 = 9

private func prefix(_ text: String) -> IPPrefix {
    guard let p = IPPrefix(text) else { fatalError("bad prefix in test table: \(text)") }
    return p
}

private func address(_ text: String) -> IPAddress {
    guard let p = IPAddress(text) else { fatalError("bad address in test table: \(text)") }
    return p
}

/// Mutates outside `#expect`, whose expansion cannot take `inout` operands.
private func removing(_ t: inout AllowedIPs, _ p: IPPrefix, peer: UInt32) -> Bool {
    t.remove(p, peer: peer)
}

private func build(_ table: [(String, UInt32)]) -> AllowedIPs {
    var t = AllowedIPs()
    for (text, peer) in table { t.insert(prefix(text), peer: peer) }
    return t
}

private func expectValid(_ t: AllowedIPs, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(t.v4.validate() == nil, sourceLocation: sourceLocation)
    #expect(t.v6.validate() == nil, sourceLocation: sourceLocation)
}

@Suite struct AllowedIPsTableTests {
    static let v4Table: [(String, UInt32)] = [
        ("10.0.0.0/8", a),
        ("10.1.0.0/16", b),
        ("10.1.2.0/24", c),
        ("10.1.2.3/32", d),
        ("10.1.2.128/25", e),
        ("0.0.0.0/0", f),
        ("192.168.77.5/24", g),         // stored as 192.168.77.0/24
        ("192.168.77.0/26", h),
        ("172.16.0.0/12", a),
        ("128.0.0.0/1", i),
        ("128.0.0.0/2", c),
        ("203.0.113.7/32", e),
        ("203.0.113.6/31", i),
    ]

    static let v4Expectations: [(String, UInt32?)] = [
        ("10.1.2.3", d), ("10.1.2.4", c), ("10.1.2.127", c), ("10.1.2.128", e), ("10.1.2.255", e),
        ("10.1.3.1", b), ("10.1.255.255", b), ("10.2.0.1", a), ("10.255.255.255", a),
        ("9.255.255.255", f), ("11.0.0.0", f), ("0.0.0.0", f), ("127.255.255.255", f),
        ("192.168.77.5", h), ("192.168.77.63", h), ("192.168.77.64", g), ("192.168.77.255", g), ("192.168.78.1", i), // under 128.0.0.0/1, past 128.0.0.0/2
        ("172.16.0.1", a), ("172.31.255.255", a), ("172.32.0.0", c), ("172.15.255.255", c),
        ("128.0.0.1", c), ("191.255.255.255", c), ("255.255.255.255", i),
        ("203.0.113.7", e), ("203.0.113.6", i), ("203.0.113.5", i), ("203.0.113.8", i),
    ]

    static let v6Table: [(String, UInt32)] = [
        ("2001:db8::/32", a),
        ("2001:db8:1::/48", b),
        ("2001:db8:1:2::/64", c),
        ("2001:db8:1:2::1/128", d),
        ("::/0", e),
        ("fd00::/8", f),
        ("fd00:a::5/64", g),            // stored as fd00:a::/64
        ("2001:db8:1:2:8000::/65", h),
        ("2001:db8:1:2::/63", i),
        ("2001:db8:1:2::/112", a),
    ]

    static let v6Expectations: [(String, UInt32?)] = [
        ("2001:db8:1:2::1", d), ("2001:db8:1:2::2", a), ("2001:db8:1:2::1:0", c),
        ("2001:db8:1:2:7fff:ffff:ffff:ffff", c),
        ("2001:db8:1:2:8000::1", h), ("2001:db8:1:2:ffff:ffff:ffff:ffff", h),
        ("2001:db8:1:3::1", i), ("2001:db8:1:4::1", b), ("2001:db8:2::1", a),
        ("2001:db9::", e), ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", e),
        ("fd00:a::1", g), ("fd00:a:0:0:ffff:ffff:ffff:ffff", g), ("fd00:b::1", f), ("fdff::", f),
        ("fe80::1", e), ("::", e), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", e),
    ]

    @Test func ipv4KnownAnswers() {
        let t = build(Self.v4Table)
        for (text, peer) in Self.v4Expectations {
            #expect(t.lookup(address(text)) == peer, "\(text)")
        }
        #expect(t.count == Self.v4Table.count)
        expectValid(t)
    }

    @Test func ipv6KnownAnswers() {
        let t = build(Self.v6Table)
        for (text, peer) in Self.v6Expectations {
            #expect(t.lookup(address(text)) == peer, "\(text)")
        }
        #expect(t.count == Self.v6Table.count)
        expectValid(t)
    }

    @Test func familiesAreSeparate() {
        let t = build(Self.v4Table + Self.v6Table)
        for (text, peer) in Self.v4Expectations + Self.v6Expectations {
            #expect(t.lookup(address(text)) == peer, "\(text)")
        }
        var v4Only = build([("0.0.0.0/0", a)])
        #expect(v4Only.lookup(address("::")) == nil)
        #expect(v4Only.lookup(address("::ffff:10.0.0.1")) == nil)   // mapped is IPv6 here
        v4Only.insert(prefix("::/0"), peer: b)
        #expect(v4Only.lookup(address("10.0.0.1")) == a)
        #expect(v4Only.lookup(address("::ffff:10.0.0.1")) == b)
    }

    @Test func emptyTableFindsNothing() {
        var t = AllowedIPs()
        #expect(t.lookupV4(0) == nil)
        #expect(t.lookupV4(.max) == nil)
        #expect(t.lookupV6(high: 0, low: 0) == nil)
        #expect(t.lookupV6(high: .max, low: .max) == nil)
        #expect(removing(&t, prefix("0.0.0.0/0"), peer: a) == false)
        t.removeAll(peer: a)
        #expect(t.isEmpty)
        #expect(t.prefixes(peer: a).isEmpty)
    }

    @Test func defaultRouteAndHostRoutes() {
        var t = build([("0.0.0.0/0", a), ("::/0", a), ("198.51.100.1/32", b), ("2001:db8::1/128", b)])
        #expect(t.lookup(address("198.51.100.1")) == b)
        #expect(t.lookup(address("198.51.100.0")) == a)
        #expect(t.lookup(address("198.51.100.2")) == a)
        #expect(t.lookup(address("2001:db8::1")) == b)
        #expect(t.lookup(address("2001:db8::")) == a)
        #expect(t.lookup(address("2001:db8::1:1")) == a)
        #expect(removing(&t, prefix("0.0.0.0/0"), peer: a) == true)
        #expect(t.lookup(address("198.51.100.0")) == nil)
        #expect(t.lookup(address("198.51.100.1")) == b)
        #expect(t.lookup(address("2001:db8::")) == a)
        t.insert(prefix("0.0.0.0/0"), peer: c)
        #expect(t.lookup(address("1.1.1.1")) == c)
        expectValid(t)
    }

    @Test func insertingAnOwnedPrefixMovesIt() {
        var t = build(Self.v4Table + Self.v6Table)
        t.insert(prefix("10.1.2.0/24"), peer: b)                   // was c's
        #expect(t.lookup(address("10.1.2.4")) == b)
        #expect(t.lookup(address("10.1.2.3")) == d)
        #expect(!t.prefixes(peer: c).contains(prefix("10.1.2.0/24")))
        #expect(t.prefixes(peer: b).contains(prefix("10.1.2.0/24")))
        t.insert(prefix("2001:db8:1:2::9/64"), peer: f)             // was c's, host bits set
        #expect(t.lookup(address("2001:db8:1:2::1:0")) == f)
        #expect(t.prefixes(peer: c) == [prefix("128.0.0.0/2")])
        #expect(t.count == Self.v4Table.count + Self.v6Table.count)
        expectValid(t)
    }

    @Test func removingAPeerLeavesOthersIntact() {
        var t = build(Self.v4Table + Self.v6Table)
        t.removeAll(peer: a)
        #expect(t.prefixes(peer: a).isEmpty)
        #expect(t.count(peer: a) == 0)
        #expect(t.lookup(address("10.2.0.1")) == f)
        #expect(t.lookup(address("172.16.0.1")) == c)   // 128.0.0.0/2
        #expect(t.lookup(address("10.1.2.3")) == d)
        #expect(t.lookup(address("10.1.3.1")) == b)
        #expect(t.lookup(address("2001:db8:2::1")) == e)
        #expect(t.lookup(address("2001:db8:1:2::2")) == c)
        #expect(t.lookup(address("2001:db8:1:4::1")) == b)
        expectValid(t)
        t.removeAll(peer: f)
        #expect(t.lookup(address("11.0.0.1")) == nil)
        #expect(t.lookup(address("fd00:b::1")) == e)
        // Removing everyone leaves an empty, reusable table.
        for peer in [a, b, c, d, e, f, g, h, i] { t.removeAll(peer: peer) }
        #expect(t.isEmpty)
        #expect(t.lookup(address("10.1.2.3")) == nil)
        expectValid(t)
        t.insert(prefix("10.0.0.0/8"), peer: a)
        #expect(t.lookup(address("10.1.2.3")) == a)
        expectValid(t)
    }

    @Test func removingAPrefixRequiresTheOwner() {
        var t = build(Self.v4Table + Self.v6Table)
        #expect(removing(&t, prefix("10.1.0.0/16"), peer: a) == false)          // b owns it
        #expect(t.lookup(address("10.1.3.1")) == b)
        #expect(removing(&t, prefix("10.1.0.0/17"), peer: b) == false)          // not stored at all
        #expect(removing(&t, prefix("10.1.0.0/15"), peer: b) == false)
        #expect(removing(&t, prefix("10.0.0.0/7"), peer: a) == false)
        #expect(removing(&t, prefix("10.1.0.0/16"), peer: b) == true)
        #expect(removing(&t, prefix("10.1.0.0/16"), peer: b) == false)          // already gone
        #expect(t.lookup(address("10.1.3.1")) == a)
        #expect(removing(&t, prefix("10.1.2.3/24"), peer: c) == true)           // host bits masked on removal too
        #expect(t.lookup(address("10.1.2.4")) == a)
        #expect(t.lookup(address("10.1.2.3")) == d)
        #expect(removing(&t, prefix("2001:db8:1::/48"), peer: a) == false)
        #expect(removing(&t, prefix("2001:db8:1::/48"), peer: b) == true)
        #expect(t.lookup(address("2001:db8:1:4::1")) == a)
        #expect(t.count == Self.v4Table.count + Self.v6Table.count - 3)
        expectValid(t)
    }

    @Test func hostBitsAreMaskedOnInsert() {
        let t = build([("10.0.0.5/24", a), ("fd00:a::5/64", a), ("255.255.255.255/0", b), ("ffff::1/1", c)])
        #expect(t.prefixes(peer: a) == [prefix("10.0.0.0/24"), prefix("fd00:a::/64")])
        #expect(t.prefixes(peer: b) == [prefix("0.0.0.0/0")])
        #expect(t.prefixes(peer: c) == [prefix("8000::/1")])
        #expect(t.lookup(address("10.0.0.200")) == a)
        #expect(t.lookup(address("1.2.3.4")) == b)
        #expect(t.lookup(address("8000::")) == c)
        #expect(t.lookup(address("7fff::")) == nil)
    }

    @Test func listingPerPeer() {
        var t = AllowedIPs()
        t.insert(prefix("fd00::1/128"), peer: a)
        t.insert(prefix("10.0.0.1/32"), peer: a)
        t.insert(prefix("192.168.0.0/16"), peer: a)
        t.insert(prefix("10.9.9.9/8"), peer: a)
        t.insert(prefix("10.0.0.2/32"), peer: b)
        // IPv4 first, then IPv6, each in order of the last insert; canonical form.
        #expect(t.prefixes(peer: a).map(\.description)
                == ["10.0.0.1/32", "192.168.0.0/16", "10.0.0.0/8", "fd00::1/128"])
        t.insert(prefix("10.0.0.1/32"), peer: a)                    // re-insert moves to the tail
        #expect(t.prefixes(peer: a).map(\.description)
                == ["192.168.0.0/16", "10.0.0.0/8", "10.0.0.1/32", "fd00::1/128"])
        t.insert(prefix("192.168.0.0/16"), peer: b)
        #expect(t.prefixes(peer: a).map(\.description) == ["10.0.0.0/8", "10.0.0.1/32", "fd00::1/128"])
        #expect(t.prefixes(peer: b).map(\.description) == ["10.0.0.2/32", "192.168.0.0/16"])
        #expect(t.count(peer: a) == 3 && t.count(peer: b) == 2 && t.count(peer: c) == 0)
        #expect(t.prefixes(peer: c).isEmpty)
        expectValid(t)
    }

    @Test func peerHandlesSpanTheWholeRange() {
        var t = build([("10.0.0.0/8", 0), ("10.1.0.0/16", .max)])
        #expect(t.lookup(address("10.0.0.1")) == 0)
        #expect(t.lookup(address("10.1.0.1")) == .max)
        t.removeAll(peer: .max)
        #expect(t.lookup(address("10.1.0.1")) == 0)
    }

    @Test func freedNodesAreReused() {
        var t = AllowedIPs()
        for round in 0..<5 {
            for n in 0..<200 {
                t.insert(IPPrefix(host: .v4(0x0a00_0000 | UInt32(n) &* 977)), peer: UInt32(n % 7))
            }
            #expect(t.count == 200, "round \(round)")
            for peer in 0..<7 { t.removeAll(peer: UInt32(peer)) }
            #expect(t.isEmpty)
        }
        // Live nodes ≤ 2n - 1 for n prefixes; the array never grew past one round's worth.
        #expect(t.v4.nodes.count <= 400)
        expectValid(t)
    }

    /// A gateway-sized table: every peer's removal costs only its own entries.
    @Test func manyPeers() {
        var t = AllowedIPs()
        let peers: UInt32 = 20_000
        for p in 0..<peers {
            t.insert(IPPrefix(host: .v4(0x6440_0000 | p)), peer: p)                       // 100.64.x.y
            t.insert(IPPrefix(host: .v6(high: 0xfd00_0000_0000_0000, low: UInt64(p))), peer: p)
        }
        t.insert(prefix("100.64.0.0/10"), peer: peers)
        #expect(t.count == 2 * Int(peers) + 1)
        var wrong = 0
        for p in 0..<peers where t.lookupV4(0x6440_0000 | p) != p
            || t.lookupV6(high: 0xfd00_0000_0000_0000, low: UInt64(p)) != p { wrong += 1 }
        #expect(wrong == 0)
        expectValid(t)
        for p in stride(from: 0, to: peers, by: 2) { t.removeAll(peer: p) }
        #expect(t.lookupV4(0x6440_0000) == peers)
        #expect(t.lookupV4(0x6440_0001) == 1)
        #expect(t.lookupV6(high: 0xfd00_0000_0000_0000, low: 0) == nil)
        #expect(t.count == Int(peers) + 1)
        expectValid(t)
    }

    @Test func valueSemantics() {
        var original = build([("10.0.0.0/8", a)])
        let snapshot = original
        original.insert(prefix("10.0.0.0/8"), peer: b)
        original.insert(prefix("10.1.0.0/16"), peer: c)
        #expect(snapshot.lookup(address("10.1.0.1")) == a)
        #expect(original.lookup(address("10.1.0.1")) == c)
    }

    /// The data plane hands the table a pointer into a received frame: addresses sit at odd,
    /// unaligned offsets and in network byte order.
    @Test func lookupFromPacketMemory() {
        let t = build([("192.0.2.0/24", a), ("192.0.2.77/32", b), ("2001:db8:1::/48", c), ("2001:db8:1::42/128", d)])
        var frame = [UInt8](repeating: 0, count: 1 + 20 + 40)
        let v4 = 1                                // an IPv4 header at an odd offset
        frame[v4] = 0x45
        frame[v4 + 9] = 17
        frame.replaceSubrange((v4 + 12)..<(v4 + 16), with: [192, 0, 2, 77])     // source
        frame.replaceSubrange((v4 + 16)..<(v4 + 20), with: [192, 0, 2, 1])      // destination
        let v6 = v4 + 20                          // an IPv6 header right behind it
        frame[v6] = 0x60
        frame[v6 + 6] = 17
        let source6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42]
        let dest6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x43]
        frame.replaceSubrange((v6 + 8)..<(v6 + 24), with: source6)
        frame.replaceSubrange((v6 + 24)..<(v6 + 40), with: dest6)
        frame.withUnsafeBytes { raw in
            let base = raw.baseAddress!
            #expect(t.lookup(ipv4: base + v4 + 12) == b)
            #expect(t.lookup(ipv4: base + v4 + 16) == a)
            #expect(t.lookup(ipv6: base + v6 + 8) == d)
            #expect(t.lookup(ipv6: base + v6 + 24) == c)
        }
        #expect(t.lookupV4(0xc000_024d) == b)
        #expect(t.lookupV6(high: 0x2001_0db8_0001_0000, low: 0x42) == d)
        #expect(IPAddress(bytes: source6) == address("2001:db8:1::42"))
    }
}

// MARK: - Differential test against a linear scan


/// The obvious implementation: a list in order of last insert, scanned for the longest match.
private struct ReferenceTable {
    var entries: [(prefix: IPPrefix, peer: UInt32)] = []

    mutating func insert(_ p: IPPrefix, peer: UInt32) {
        let m = p.masked
        entries.removeAll { $0.prefix == m }
        entries.append((m, peer))
    }

    mutating func remove(_ p: IPPrefix, peer: UInt32) -> Bool {
        let m = p.masked
        guard let index = entries.firstIndex(where: { $0.prefix == m && $0.peer == peer }) else { return false }
        entries.remove(at: index)
        return true
    }

    mutating func removeAll(peer: UInt32) { entries.removeAll { $0.peer == peer } }

    func lookup(_ address: IPAddress) -> UInt32? {
        var best: (length: Int, peer: UInt32)? = nil
        for entry in entries where entry.prefix.contains(address) {
            if best == nil || entry.prefix.length > best!.length { best = (entry.prefix.length, entry.peer) }
        }
        return best?.peer
    }

    func prefixes(peer: UInt32) -> [IPPrefix] {
        let mine = entries.filter { $0.peer == peer }.map(\.prefix)
        return mine.filter { $0.address.isV4 } + mine.filter { !$0.address.isV4 }
    }
}

@Suite struct AllowedIPsDifferentialTests {
    /// Random addresses near a few bases, so prefixes nest, overlap and collide often.
    private func randomAddress(_ rng: inout SplitMix64, v4: Bool, bases: [UInt64]) -> IPAddress {
        let base = bases[rng.below(bases.count)]
        // Flip a few bits anywhere, most often near the end, to create siblings and cousins.
        var high = base, low = ~base &* 0x2545_f491_4f6c_dd1d
        for _ in 0..<rng.below(3) {
            let bit = rng.below(2) == 0 ? rng.below(v4 ? 32 : 128) : (v4 ? 24 : 112) + rng.below(v4 ? 8 : 16)
            if v4 { high ^= 1 << UInt64(63 - bit) } else if bit < 64 { high ^= 1 << UInt64(63 - bit) } else { low ^= 1 << UInt64(127 - bit) }
        }
        return v4 ? .v4(UInt32(truncatingIfNeeded: high >> 32)) : .v6(high: high, low: low)
    }

    private func randomLength(_ rng: inout SplitMix64, v4: Bool) -> Int {
        let max = v4 ? 32 : 128
        switch rng.below(4) {
        case 0: return max                                         // host routes
        case 1: return max - rng.below(9)                          // near-host
        default: return rng.below(max + 1)                          // anything, /0 included
        }
    }

    @Test(arguments: [(UInt64(0x5eed_0001), true), (0x5eed_0002, false), (0x5eed_0003, true), (0x5eed_0004, false)])
    func matchesLinearScan(seed: UInt64, v4: Bool) {
        var rng = SplitMix64(seed: seed)
        let bases = (0..<6).map { _ in rng.next() }
        var table = AllowedIPs()
        var reference = ReferenceTable()
        let peerCount = 6
        for step in 0..<3000 {
            let peer = UInt32(rng.below(peerCount))
            let roll = rng.below(100)
            if roll < 65 {
                let p = IPPrefix(address: randomAddress(&rng, v4: v4, bases: bases), length: randomLength(&rng, v4: v4))!
                table.insert(p, peer: peer)
                reference.insert(p, peer: peer)
            } else if roll < 93 {
                // Usually a stored prefix, mostly by its owner; sometimes a random one.
                let p: IPPrefix
                var peer = peer
                if !reference.entries.isEmpty && rng.below(4) != 0 {
                    let entry = reference.entries[rng.below(reference.entries.count)]
                    p = entry.prefix
                    if rng.below(4) != 0 { peer = entry.peer }
                } else {
                    p = IPPrefix(address: randomAddress(&rng, v4: v4, bases: bases), length: randomLength(&rng, v4: v4))!
                }
                let removed = table.remove(p, peer: peer)
                #expect(removed == reference.remove(p, peer: peer), "seed \(seed) step \(step): remove \(p) peer \(peer)")
            } else {
                table.removeAll(peer: peer)
                reference.removeAll(peer: peer)
            }
            for _ in 0..<4 {
                let probe = randomAddress(&rng, v4: v4, bases: bases)
                let got = table.lookup(probe), want = reference.lookup(probe)
                #expect(got == want, "seed \(seed) step \(step): lookup \(probe)")
                if got != want { return }
            }
            if step % 100 == 99 {
                #expect(table.count == reference.entries.count)
                for p in 0..<UInt32(peerCount) {
                    #expect(table.prefixes(peer: p) == reference.prefixes(peer: p), "seed \(seed) step \(step) peer \(p)")
                }
                let problem = v4 ? table.v4.validate() : table.v6.validate()
                #expect(problem == nil, "seed \(seed) step \(step)")
                if problem != nil { return }
            }
        }
    }
}

// MARK: - Parsing and printing

@Suite struct AllowedIPsParsingTests {
    @Test(arguments: [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("255.255.255.255/32", "255.255.255.255/32"),
        ("10.0.0.5/24", "10.0.0.5/24"),               // kept as written; `masked` clears host bits
        ("10.0.0.0/08", "10.0.0.0/8"),
        ("fd00::/64", "fd00::/64"),
        ("::", "::/128"),
        ("::/0", "::/0"),
        ("::1", "::1/128"),
        ("1::", "1::/128"),
        ("fd00:a::/64", "fd00:a::/64"),
        ("FD00:000A:0000:0000:0000:0000:0000:0001/128", "fd00:a::1/128"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8/128"),
        ("0:0:0:0:0:0:0:0/0", "::/0"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3/128"),        // the longest run is compressed
        ("1:0:0:2:3:0:0:4", "1::2:3:0:0:4/128"),      // the first of equal runs
        ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7/128"),   // a single zero group stays
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0/128"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("::ffff:1.2.3.4", "::ffff:1.2.3.4/128"),
        ("::ffff:0102:0304/96", "::ffff:1.2.3.4/96"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221/128"),
        ("::1.2.3.4", "::102:304/128"),
        ("fe80::1:2:3:4:5:6", "fe80:0:1:2:3:4:5:6/128"),
    ])
    func parsesAndPrintsCanonically(text: String, canonical: String) throws {
        let p = try IPPrefix(parsing: text)
        #expect(p.description == canonical)
        #expect(IPPrefix(canonical) == p)              // printing round-trips
    }

    @Test(arguments: [
        "10.0.0.0/33", "1.2.3", "1.2.3.4.5", "256.1.1.1", ":::", "fd00::/129", "", " 10.0.0.1", "1::2::3",
        "10.0.0.1 ", "10.0.0.0/", "/8", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/1000", "10.0.0.0/8/8",
        "01.2.3.4", "1..2.3", "1.2.3.", ".1.2.3", "1.2.3.4/8 ", "1.2.3.a", "1234.1.1.1",
        "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1::", "1::2:", "1:", ":", "12345::", "g::",
        "fe80::1%eth0", "::1.2.3", "1.2.3.4::", "::1.2.3.4.5", "1:2:3:4:5:6:7:1.2.3.4", "::/",
        "::1.2.3.4:5", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "[::1]", "0x0a.0.0.1", "١.2.3.4",
    ])
    func rejectsMalformedText(text: String) {
        #expect(IPPrefix(text) == nil)
        #expect(throws: IPParseError.self) { try IPPrefix(parsing: text) }
        if !text.contains("/") { #expect(IPAddress(text) == nil) }
    }

    /// Valid forms with random edits: parsing must never trap, and whatever parses must print
    /// to text that parses back to the same value.
    @Test func mutatedTextNeverTrapsAndRoundTrips() {
        var rng = SplitMix64(seed: 0xadd7_e55e)
        let seeds = ["10.1.2.3/24", "0.0.0.0/0", "255.255.255.255", "fd00:a::/64", "::", "::1/128",
                     "1:2:3:4:5:6:7:8/96", "::ffff:1.2.3.4", "2001:db8:0:0:1::/80", "64:ff9b::10.0.0.1/120"]
        let alphabet = Array("0123456789abcdefABF:::..//x %".utf8)
        var accepted = 0
        for _ in 0..<20_000 {
            var bytes = Array(seeds[rng.below(seeds.count)].utf8)
            for _ in 0...rng.below(3) {
                let at = rng.below(bytes.count + 1)
                switch rng.below(3) {
                case 0 where at < bytes.count: bytes.remove(at: at)
                case 1 where at < bytes.count: bytes[at] = alphabet[rng.below(alphabet.count)]
                default: bytes.insert(alphabet[rng.below(alphabet.count)], at: at)
                }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            guard let p = IPPrefix(text) else { continue }
            accepted += 1
            #expect(IPPrefix(p.description) == p, "\(text)")
        }
        #expect(accepted > 1000)
    }

    @Test func namesTheProblem() {
        #expect(throws: IPParseError.empty) { try IPPrefix(parsing: "") }
        #expect(throws: IPParseError.empty) { try IPAddress(parsing: "") }
        #expect(throws: IPParseError.invalidAddress) { try IPPrefix(parsing: "256.1.1.1/8") }
        #expect(throws: IPParseError.invalidAddress) { try IPPrefix(parsing: "1::2::3") }
        #expect(throws: IPParseError.invalidPrefixLength) { try IPPrefix(parsing: "10.0.0.0/33") }
        #expect(throws: IPParseError.invalidPrefixLength) { try IPPrefix(parsing: "fd00::/129") }
        #expect(throws: IPParseError.invalidPrefixLength) { try IPPrefix(parsing: "fd00::/") }
        #expect(throws: IPParseError.invalidAddress) { try IPAddress(parsing: "10.0.0.0/8") }
    }

    @Test func addressesRoundTripThroughBytesAndText() throws {
        for text in ["0.0.0.0", "10.20.30.40", "255.255.255.255", "::", "::1", "2001:db8::8a2e:370:7334",
                     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::ffff:192.0.2.128"] {
            let addr = try IPAddress(parsing: text)
            #expect(addr.description == text)
            #expect(IPAddress(bytes: addr.bytes) == addr)
        }
        #expect(try IPAddress(parsing: "10.20.30.40") == .v4(0x0a14_1e28))
        #expect(try IPAddress(parsing: "2001:db8::1:2") == .v6(high: 0x2001_0db8_0000_0000, low: 0x0000_0000_0001_0002))
        #expect(IPAddress(bytes: [1, 2, 3]) == nil)
    }

    @Test func prefixHelpers() throws {
        let p = try IPPrefix(parsing: "10.0.0.5/24")
        #expect(p.masked.description == "10.0.0.0/24")
        #expect(!p.isMasked && p.masked.isMasked)
        #expect(p.contains(address("10.0.0.200")) && !p.contains(address("10.0.1.0")))
        #expect(!p.contains(address("::ffff:10.0.0.1")))
        #expect(try IPPrefix(parsing: "fd00:a::5/64").masked.description == "fd00:a::/64")
        #expect(try IPPrefix(parsing: "ffff:ffff::ffff/0").masked.description == "::/0")
        #expect(IPPrefix(address: .v4(1), length: 33) == nil)
        #expect(IPPrefix(address: .v4(1), length: -1) == nil)
        #expect(IPPrefix(address: .v6(high: 1, low: 1), length: 128) != nil)
        #expect(IPPrefix(host: .v6(high: 0, low: 1)).description == "::1/128")
    }
}
