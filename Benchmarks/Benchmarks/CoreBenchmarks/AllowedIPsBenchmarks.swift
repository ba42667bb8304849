// Cryptokey routing: `AllowedIPs` lookups, the per-packet cost of choosing a peer (outbound)
// or checking an inner source (inbound), on tables of random host routes.

import BenchSupport
import Benchmark
import WireGuard

/// A table of `routes` random host routes (/32 or /128, peer handles 0..<routes) and
/// `windows` × 1000 addresses in network byte order, each one of the stored routes picked
/// at random, packed like the address fields of consecutive packets. Each sample reads the
/// next window of 1000, so a large table is not walked along the same few paths every time.
final class LookupState {
    static let windows = 64

    let table: AllowedIPs
    let addresses: UnsafeMutableRawPointer
    let stride: Int                  // 4 or 16
    let windowBytes: Int
    var window = 0

    init(routes: Int, v6: Bool) {
        var rng = SplitMix64(seed: UInt64(routes) &* (v6 ? 6 : 4))
        var table = AllowedIPs()
        var stored: [IPAddress] = []
        var seen = Set<IPAddress>()
        stored.reserveCapacity(routes)
        while stored.count < routes {
            let address: IPAddress = v6
                ? .v6(high: rng.next(), low: rng.next())
                : .v4(UInt32(truncatingIfNeeded: rng.next()))
            guard seen.insert(address).inserted else { continue }
            table.insert(IPPrefix(host: address), peer: UInt32(stored.count))
            stored.append(address)
        }
        precondition(table.count == routes)

        stride = v6 ? 16 : 4
        let count = LookupState.windows * packetsPerSample.rawValue
        windowBytes = packetsPerSample.rawValue * stride
        addresses = .allocate(byteCount: count * stride, alignment: 64)
        for i in 0..<count {
            let pick = Int.random(in: 0..<routes, using: &rng)
            let bytes = stored[pick].bytes
            (addresses + i * stride).copyMemory(from: bytes, byteCount: stride)
            // Every lookup must hit, and hit the right peer.
            let found = v6 ? table.lookup(ipv6: addresses + i * stride) : table.lookup(ipv4: addresses + i * stride)
            precondition(found == UInt32(pick), "lookup of a stored route missed")
        }
        self.table = table
    }

    deinit { addresses.deallocate() }

    /// The addresses for the next sample.
    @inline(__always)
    func nextWindow() -> UnsafeRawPointer {
        let base = addresses + window * windowBytes
        window = window + 1 == LookupState.windows ? 0 : window + 1
        return UnsafeRawPointer(base)
    }
}

func registerAllowedIPsBenchmarks() {
    for routes in [1, 100, 10_000, 100_000] {
        Benchmark("AllowedIPs lookup v4, \(routes) routes (1k lookups)") { benchmark, s in
            let table = s.table
            let base = s.nextWindow()
            var sum: UInt32 = 0
            var misses = 0
            for i in benchmark.scaledIterations {
                if let peer = table.lookup(ipv4: base + i &* 4) { sum &+= peer } else { misses &+= 1 }
            }
            blackHole(sum)
            if misses != 0 { benchmark.error("\(misses) lookups missed") }
        } setup: {
            LookupState(routes: routes, v6: false)
        }

        Benchmark("AllowedIPs lookup v6, \(routes) routes (1k lookups)") { benchmark, s in
            let table = s.table
            let base = s.nextWindow()
            var sum: UInt32 = 0
            var misses = 0
            for i in benchmark.scaledIterations {
                if let peer = table.lookup(ipv6: base + i &* 16) { sum &+= peer } else { misses &+= 1 }
            }
            blackHole(sum)
            if misses != 0 { benchmark.error("\(misses) lookups missed") }
        } setup: {
            LookupState(routes: routes, v6: true)
        }
    }
}
