// The receive path's first lookup at scale: receiver index → keypair entry in a
// `KeypairTable` holding 100,000 published keypairs (a gateway with 100,000 peers, one
// session each), as `PacketProcessor.decrypt` does it (`KeypairTableView.lookup`: one
// acquire load of the slot, one compare of the whole index). The indices looked up are the
// published ones in a seeded random order, 64 windows of 1000, one window per sample, so a
// big table is not walked along the same few cache lines every sample. The AllowedIPs
// lookup at this scale is `AllowedIPs lookup v4/v6, 100000 routes` in CoreBenchmarks.

import BenchSupport
import Benchmark
import Engine
import WireGuard

/// A table with `count` published entries and the indices to look up.
final class LookupFixture: @unchecked Sendable {
    let table: KeypairTable
    let view: KeypairTableView
    let windows: [[UInt32]]
    var next = 0

    init(count: Int) {
        // 4 slots per peer, as the gateway sizes it (keypairCapacity = 4 × peer capacity).
        table = KeypairTable(capacity: 4 * count)
        var generator = SplitMix64(seed: 0x5ca1e)
        var indices: [UInt32] = []
        indices.reserveCapacity(count)
        for _ in 0..<count {
            guard let index = table.allocateIndex(random: { UInt32(truncatingIfNeeded: generator.next()) }) else { break }
            var keys = SessionKeys(sendKey: Key32(), receiveKey: Key32(), localIndex: index, remoteIndex: index,
                                   isInitiator: true, createdAt: Instant(nanoseconds: 1))
            table.publish(KeypairEntry.make(Keypair(consuming: &keys), peer: 0, tenant: 0))
            indices.append(index)
        }
        view = table.view
        windows = (0..<64).map { _ in (0..<1000).map { _ in indices[Int(generator.next() % UInt64(indices.count))] } }
        for w in windows { for i in w { precondition(view.lookup(i) != nil, "a published index must hit") } }
    }

    func window() -> [UInt32] {
        defer { next = (next + 1) % windows.count }
        return windows[next]
    }
}

func registerLookupBenchmarks() {
    for count in [1000, 100_000] {
        Benchmark("KeypairTable lookup, \(count) keypairs (1k lookups)") { benchmark, f in
            let indices = f.window()
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                blackHole(f.view.lookup(indices[i % indices.count]))
            }
            benchmark.stopMeasurement()
        } setup: {
            LookupFixture(count: count)
        }
    }
}
