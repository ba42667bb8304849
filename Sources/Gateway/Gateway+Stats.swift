// The stats segment kept current from the control loop, and the counters printed on SIGUSR1
// and at stop.

import CXDPWG
import Engine
import Synchronization
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

extension Gateway {
    // MARK: Counters

    /// Keeps the stats segment current: the heartbeat and handshakes every turn; XDP
    /// verdicts (BPF map reads) four times a second; peers a slice of handles at a time, sized
    /// by the time since the last slice so that a pass over the whole table takes about
    /// 250 ms however many peers there are and however fast the loop turns, and no turn
    /// stalls the loop; tenants (sums of their peers) after each pass.
    func publishStats(now: Instant) {
        guard let stats, let control, let state else { return }
        stats.heartbeat()
        stats.publish(handshakes: control.counters)
        stats.publish(uplinkUp: uplinkRunning, uplinkDownEvents: uplinkDownEvents)
        if now >= nextStatsPublish, let program = uplinkProgram {
            nextStatsPublish = now + .milliseconds(250)
            stats.publish(xdpVerdicts: program.verdictCounters(), redirectsPerQueue: program.redirectsPerQueue())
        }
        let capacity = state.peers.capacity
        if publishedPeers.count != capacity { publishedPeers = Array(repeating: false, count: capacity) }
        let budget = Int64(capacity) * now.since(lastPeerStats).nanoseconds / 250_000_000
        guard budget >= Int64(min(256, capacity)) else { return }
        lastPeerStats = now
        let end = min(capacity, statsCursor + Int(min(budget, Int64(capacity))))
        for handle in UInt32(statsCursor)..<UInt32(end) {
            guard let s = control.peers[handle] else {
                if publishedPeers[Int(handle)] { stats.publishPeer(slot: Int(handle), nil) }
                publishedPeers[Int(handle)] = false
                continue
            }
            let a = state.peers.activity(handle)
            stats.publishPeer(slot: Int(handle), PeerStatsRecord(
                tenantSlot: s.tenant, publicKey: s.publicKey,
                endpoint: s.endpoint.map { Endpoint(address: $0.address, port: $0.port) },
                lastHandshakeNanoseconds: s.lastHandshake.map(StatsSegment.unixNanoseconds) ?? 0,
                keypairCreatedNanoseconds: s.slots.current.map { StatsSegment.wallNanoseconds(of: $0.createdAt) } ?? 0,
                rxPackets: a.rxPackets, rxBytes: a.rxBytes, txPackets: a.txPackets, txBytes: a.txBytes, drops: a.drops,
                handshakes: UInt64(s.handshakesCompleted)))
            publishedPeers[Int(handle)] = true
            var t = tenantSums[s.tenant] ?? TenantStatsRecord(name: "", listenPort: 0, peerCount: 0)
            t.peerCount += 1
            t.rxPackets &+= a.rxPackets; t.rxBytes &+= a.rxBytes
            t.txPackets &+= a.txPackets; t.txBytes &+= a.txBytes; t.drops &+= a.drops
            tenantSums[s.tenant] = t
        }
        statsCursor = end
        guard statsCursor >= capacity else { return }
        statsCursor = 0
        var slots = Set<Int>()
        for r in tenants.values {
            var record = tenantSums[r.slot] ?? TenantStatsRecord(name: "", listenPort: 0, peerCount: 0)
            record.name = r.configuration.name
            record.listenPort = r.configuration.listenPort
            record.up = r.down == nil
            stats.publishTenant(slot: r.slot, record)
            slots.insert(r.slot)
        }
        for slot in publishedTenants.subtracting(slots) { stats.publishTenant(slot: slot, nil) }
        publishedTenants = slots
        tenantSums.removeAll(keepingCapacity: true)
    }

    /// Every counter as `key=value` lines on standard error, one subject per line, so that
    /// people and tests can read them: per queue, per drop reason, XDP verdicts, handshakes,
    /// peers. (`xdpwg stats` will read the same counters from shared memory.)
    public func printCounters() {
        var lines: [String] = []
        for (w, worker) in workers.enumerated() {
            let c = worker.counters
            var line = "stats: queue=\(queues[w])"
            for k in WorkerCounter.allCases { line += " \(k.name)=\(c.value(k))" }
            lines.append(line)
            var drops = "stats: drops queue=\(queues[w])"
            for r in DropReason.allCases where c.value(r) > 0 { drops += " \(r.name)=\(c.value(r))" }
            lines.append(drops)
        }
        if let program = uplinkProgram {
            var line = "stats: xdp"
            for (verdict, count) in program.verdictCounters().sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                line += " \(verdict)=\(count)"
            }
            lines.append(line)
            var perQueue = "stats: xdp_redirects"
            for (q, n) in program.redirectsPerQueue().enumerated() where n > 0 { perQueue += " queue\(q)=\(n)" }
            lines.append(perQueue)
        }
        if let control {
            let h = control.counters
            var line = "stats: handshakes"
            for c in HandshakeCounter.allCases { line += " \(c.name)=\(h[c])" }
            for f in HandshakeFailure.allCases where h[f] > 0 { line += " \(f.name)=\(h[f])" }
            lines.append(line)
            for p in control.peerReports() {
                let endpoint = p.endpoint.map { ControlPlane.format($0.address, $0.port) } ?? "none"
                lines.append("stats: peer tenant=\(control.tenantName(slot: p.tenant) ?? "?") public_key=\(p.publicKey) endpoint=\(endpoint)"
                             + " handshakes=\(p.handshakes) rx_packets=\(p.activity.rxPackets) rx_bytes=\(p.activity.rxBytes)"
                             + " tx_packets=\(p.activity.txPackets) tx_bytes=\(p.activity.txBytes)")
            }
        }
        var text = lines.joined(separator: "\n") + "\n"
        text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
}
