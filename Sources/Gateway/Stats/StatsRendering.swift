import Engine

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The forms `xdpwg stats` prints a snapshot in, and `/metrics` serves. Pure functions of
/// their snapshots (times come from the snapshots, never from a clock), so tests compare
/// their output with known text.
public enum StatsRendering {
    /// After this long without a heartbeat the table warns that the control thread is stuck.
    public static let heartbeatWarningSeconds = 5.0

    // MARK: Table

    /// The readable form: the gateway, then per queue every counter and the drops by reason,
    /// handshakes, XDP verdicts, tenants and peers, in aligned columns.
    public static func renderTable(_ s: StatsSnapshot) -> String {
        render(s, previous: nil)
    }

    /// The table of `xdpwg stats --watch`: the same layout, with every counter shown as a rate
    /// per second between `previous` and `current` (timed by their `time`s). Falls back to
    /// totals when the two do not come from the same gateway run or no time passed.
    public static func renderWatch(previous: StatsSnapshot, current: StatsSnapshot) -> String {
        let sameRun = previous.pid == current.pid && previous.started == current.started
            && previous.gateway == current.gateway
        guard sameRun, current.time > previous.time else { return render(current, previous: nil) }
        return render(current, previous: previous)
    }

    /// One counter cell: the total, or the rate since `previous` ("-" when there is none).
    private struct Cells {
        var elapsed: Double?

        func value(_ current: UInt64, _ previous: UInt64?) -> String {
            guard let elapsed else { return String(current) }
            guard let previous, current >= previous else { return "-" }
            return fixed(Double(current - previous) / elapsed, digits: 1)
        }
    }

    private static func render(_ s: StatsSnapshot, previous p: StatsSnapshot?) -> String {
        let cells = Cells(elapsed: p.map { s.time - $0.time })
        var out: [String] = []
        var title = "gateway \(s.gateway): pid \(s.pid), up \(duration(s.time - s.started)), crypto \(s.crypto)"
        if let p { title += ", rates per second over the last \(fixed(s.time - p.time, digits: 1)) s" }
        out.append(title)
        let silent = s.time - s.heartbeat
        if silent >= heartbeatWarningSeconds {
            out.append("warning: the control thread has not updated the statistics for \(duration(silent))")
        }
        if s.uplink.state != "up" {
            out.append("warning: the uplink is \(s.uplink.state): nothing is received or sent until it is up again")
        }

        // Workers: one column per queue, and a total.
        out.append("")
        let previousWorkers = p?.workers
        func previousWorker(_ w: StatsSnapshot.Worker) -> StatsSnapshot.Worker? {
            previousWorkers?.first { $0.index == w.index && $0.queue == w.queue }
        }
        var rows: [[String]] = [["workers"] + s.workers.map { "queue \($0.queue)" } + ["total"]]
        rows.append(["core"] + s.workers.map { $0.core.map(String.init) ?? "-" } + [""])
        func sum(_ workers: [StatsSnapshot.Worker]?, _ pick: (StatsSnapshot.Worker) -> UInt64) -> UInt64? {
            workers.map { $0.reduce(0) { $0 &+ pick($1) } }
        }
        func workerRow(_ label: String, _ pick: (StatsSnapshot.Worker) -> UInt64) -> [String] {
            [label] + s.workers.map { w in cells.value(pick(w), previousWorker(w).map(pick)) }
                + [cells.value(sum(s.workers, pick)!, sum(previousWorkers, pick))]
        }
        for c in WorkerCounter.allCases { rows.append(workerRow(c.name) { $0.counters[c.name] ?? 0 }) }
        // Mean batch fill: frames per batch, over the whole run or over the interval.
        func fill(_ w: StatsSnapshot.Worker?, _ pw: StatsSnapshot.Worker?) -> String {
            guard let w else { return "-" }
            var frames = w.counters[WorkerCounter.batchFrames.name] ?? 0, batches = w.counters[WorkerCounter.batches.name] ?? 0
            if p != nil {
                guard let pw else { return "-" }
                frames &-= pw.counters[WorkerCounter.batchFrames.name] ?? 0
                batches &-= pw.counters[WorkerCounter.batches.name] ?? 0
            }
            return batches == 0 || batches > UInt64(Int64.max) ? "-" : fixed(Double(frames) / Double(batches), digits: 1)
        }
        func merged(_ workers: [StatsSnapshot.Worker]?) -> StatsSnapshot.Worker? {
            guard let workers else { return nil }
            var total = StatsSnapshot.Worker(index: -1, queue: 0, core: nil, counters: [:], drops: [:])
            for w in workers { total.counters.merge(w.counters, uniquingKeysWith: &+) }
            return total
        }
        rows.append(["mean_batch_fill"] + s.workers.map { fill($0, previousWorker($0)) }
                    + [fill(merged(s.workers), merged(previousWorkers))])
        // Frames: where they are now (values, never rates).
        for f in FrameGauge.allCases {
            rows.append([f.name] + s.workers.map { String($0.frames[f.name] ?? 0) }
                        + [String(s.workers.reduce(UInt64(0)) { $0 &+ ($1.frames[f.name] ?? 0) })])
        }
        rows.append(workerRow("drops") { w in DropReason.allCases.reduce(0) { $0 &+ (w.drops[$1.name] ?? 0) } })
        for r in DropReason.allCases where s.workers.contains(where: { ($0.drops[r.name] ?? 0) > 0 }) {
            rows.append(workerRow("  " + r.name) { $0.drops[r.name] ?? 0 })
        }
        out += columns(rows, leftAligned: 1)

        // Handshakes and XDP: one value per line.
        out.append("")
        rows = [["handshakes", ""]]
        for c in HandshakeCounter.allCases {
            rows.append(["  " + c.name, cells.value(s.handshakes.counters[c.name] ?? 0, p?.handshakes.counters[c.name] ?? 0)])
        }
        let failures = { (h: StatsSnapshot.Handshakes) in HandshakeFailure.allCases.reduce(UInt64(0)) { $0 &+ (h.failures[$1.name] ?? 0) } }
        rows.append(["  failures", cells.value(failures(s.handshakes), p.map { failures($0.handshakes) })])
        for f in HandshakeFailure.allCases where (s.handshakes.failures[f.name] ?? 0) > 0 {
            rows.append(["    " + f.name, cells.value(s.handshakes.failures[f.name] ?? 0, p?.handshakes.failures[f.name] ?? 0)])
        }
        out += columns(rows, leftAligned: 1)

        out.append("")
        rows = [["xdp verdicts", ""]]
        for v in XDPVerdict.allCases {
            rows.append(["  " + v.description, cells.value(s.xdp.verdicts[v.description] ?? 0, p?.xdp.verdicts[v.description] ?? 0)])
        }
        for (q, n) in s.xdp.redirectsPerQueue.enumerated() where n > 0 {
            let before = p.map { q < $0.xdp.redirectsPerQueue.count ? $0.xdp.redirectsPerQueue[q] : 0 }
            rows.append(["  redirected to queue \(q)", cells.value(n, before)])
        }
        out += columns(rows, leftAligned: 1)

        // Tenants and peers: one row each.
        out.append("")
        if s.tenants.isEmpty {
            out.append("tenants: none")
        } else {
            rows = [["tenant", "state", "listen_port", "peers", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops"]]
            for t in s.tenants {
                let b = p?.tenants.first { $0.slot == t.slot && $0.name == t.name }
                let miss = p != nil && b == nil
                func v(_ cur: UInt64, _ prev: UInt64?) -> String { cells.value(cur, miss ? nil : prev) }
                rows.append([t.name, t.state, String(t.listenPort), String(t.peers), v(t.rxPackets, b?.rxPackets),
                             v(t.rxBytes, b?.rxBytes), v(t.txPackets, b?.txPackets), v(t.txBytes, b?.txBytes),
                             v(t.drops, b?.drops)])
            }
            out += columns(rows, leftAligned: 2)
        }

        out.append("")
        if s.peers.isEmpty {
            out.append("peers: none")
        } else {
            rows = [["peer", "tenant", "endpoint", "latest_handshake", "keypair_age", "rx_packets", "rx_bytes",
                     "tx_packets", "tx_bytes", "drops", "handshakes"]]
            for peer in s.peers {
                let b = p?.peers.first { $0.slot == peer.slot && $0.publicKey == peer.publicKey }
                let miss = p != nil && b == nil
                func v(_ cur: UInt64, _ prev: UInt64?) -> String { cells.value(cur, miss ? nil : prev) }
                let handshake = peer.latestHandshake == 0 ? "never"
                    : duration(max(0, s.time - Double(peer.latestHandshake))) + " ago"
                rows.append([peer.publicKey, peer.tenant, peer.endpoint ?? "(none)", handshake,
                             peer.keypairAge.map { duration(Double($0)) } ?? "-",
                             v(peer.rxPackets, b?.rxPackets), v(peer.rxBytes, b?.rxBytes),
                             v(peer.txPackets, b?.txPackets), v(peer.txBytes, b?.txBytes), v(peer.drops, b?.drops),
                             v(peer.handshakes, b?.handshakes)])
            }
            out += columns(rows, leftAligned: 5)
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// Rows as aligned columns two spaces apart: the first `leftAligned` columns flush left,
    /// the rest (numbers) flush right; no trailing spaces.
    static func columns(_ rows: [[String]], leftAligned: Int) -> [String] {
        let count = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            var line = ""
            for (i, cell) in row.enumerated() {
                if i > 0 { line += "  " }
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                line += i < leftAligned ? cell + pad : pad + cell
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }

    /// "45s", "3m 05s", "2h 03m 05s", "4d 02h 03m": whole seconds, rounded down.
    static func duration(_ seconds: Double) -> String {
        let t = seconds.isFinite && seconds > 0 ? Int(seconds) : 0
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : String(n) }
        let (d, h, m, sec) = (t / 86_400, t / 3_600 % 24, t / 60 % 60, t % 60)
        if d > 0 { return "\(d)d \(two(h))h \(two(m))m" }
        if h > 0 { return "\(h)h \(two(m))m \(two(sec))s" }
        if m > 0 { return "\(m)m \(two(sec))s" }
        return "\(sec)s"
    }

    /// `x` with exactly `digits` decimals (no Foundation formatting, so output is the same
    /// everywhere).
    static func fixed(_ x: Double, digits: Int) -> String {
        guard x.isFinite else { return "-" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(x) * scale).rounded()
        guard scaled < 9e18 else { return String(x) }
        let n = UInt64(scaled), unit = UInt64(scale)
        var text = (x < 0 && n > 0 ? "-" : "") + String(n / unit)
        if digits > 0 {
            let fraction = String(n % unit)
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        return text
    }

    // MARK: JSON

    /// The documented JSON schema (`StatsSnapshot`): pretty-printed, keys sorted, slashes in
    /// base64 keys not escaped; ends with a newline.
    public static func renderJSON(_ s: StatsSnapshot) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(s), as: UTF8.self) + "\n"
    }

    /// Reads what `renderJSON` wrote.
    public static func decodeJSON(_ text: String) throws -> StatsSnapshot {
        try JSONDecoder().decode(StatsSnapshot.self, from: Data(text.utf8))
    }

    // MARK: Prometheus

    /// The Prometheus text exposition format 0.0.4: the WireGuard exporter's
    /// `wireguard_sent_bytes_total`, `wireguard_received_bytes_total` and
    /// `wireguard_latest_handshake_seconds` (labels `interface` = tenant, `public_key`), then
    /// the data plane's `xdpwg_*` metrics. Every family has HELP and TYPE lines, even empty.
    public static func renderPrometheus(_ s: StatsSnapshot) -> String {
        var e = Exposition()
        let peerLabels = { (p: StatsSnapshot.Peer) in [("interface", p.tenant), ("public_key", p.publicKey)] }
        e.family("wireguard_sent_bytes_total", .counter, "Bytes sent to the peer",
                 s.peers.map { (peerLabels($0), String($0.txBytes)) })
        e.family("wireguard_received_bytes_total", .counter, "Bytes received from the peer",
                 s.peers.map { (peerLabels($0), String($0.rxBytes)) })
        e.family("wireguard_latest_handshake_seconds", .gauge,
                 "Unix time of the latest handshake with the peer (0: never)",
                 s.peers.map { (peerLabels($0), String($0.latestHandshake)) })

        e.family("xdpwg_start_time_seconds", .gauge, "Unix time the gateway started", [([], number(s.started))])
        e.family("xdpwg_heartbeat_timestamp_seconds", .gauge,
                 "Unix time the gateway's control thread last updated the statistics", [([], number(s.heartbeat))])
        e.family("xdpwg_uplink_up", .gauge, "1 while the uplink is up with a carrier, 0 while it is down",
                 [([], s.uplink.state == "up" ? "1" : "0")])
        e.family("xdpwg_uplink_down_events_total", .counter, "Times the uplink went down",
                 [([], String(s.uplink.downEvents))])
        e.family("xdpwg_crypto_backend_info", .gauge, "The transport cipher backend in use (always 1)",
                 [([("backend", s.crypto)], "1")])

        for c in WorkerCounter.allCases {
            e.family("xdpwg_worker_\(c.name)_total", .counter, "Worker counter \(c.name), per uplink RX queue",
                     s.workers.map { ([("queue", String($0.queue))], String($0.counters[c.name] ?? 0)) })
        }
        for f in FrameGauge.allCases {
            e.family("xdpwg_worker_\(f.name)", .gauge, "UMEM frames (\(f.name)), per uplink RX queue",
                     s.workers.map { ([("queue", String($0.queue))], String($0.frames[f.name] ?? 0)) })
        }
        e.family("xdpwg_drops_total", .counter, "Packets the data path dropped, per uplink queue and reason",
                 s.workers.flatMap { w in
                     DropReason.allCases.map { ([("queue", String(w.queue)), ("reason", $0.name)], String(w.drops[$0.name] ?? 0)) }
                 })

        for c in HandshakeCounter.allCases {
            e.family("xdpwg_handshake_\(c.name)_total", .counter, "Handshake counter \(c.name)",
                     [([], String(s.handshakes.counters[c.name] ?? 0))])
        }
        e.family("xdpwg_handshake_failures_total", .counter, "Handshake messages refused, per reason",
                 HandshakeFailure.allCases.map { ([("reason", $0.name)], String(s.handshakes.failures[$0.name] ?? 0)) })

        e.family("xdpwg_xdp_verdicts_total", .counter, "Packets the uplink XDP program saw, per verdict",
                 XDPVerdict.allCases.map { ([("verdict", $0.description)], String(s.xdp.verdicts[$0.description] ?? 0)) })
        e.family("xdpwg_xdp_redirects_total", .counter, "Packets the uplink XDP program redirected, per RX queue",
                 s.xdp.redirectsPerQueue.enumerated().map { ([("queue", String($0.offset))], String($0.element)) })

        let tenantLabels = { (t: StatsSnapshot.Tenant) in [("interface", t.name)] }
        e.family("xdpwg_tenant_peers", .gauge, "Peers of the tenant", s.tenants.map { (tenantLabels($0), String($0.peers)) })
        e.family("xdpwg_tenant_up", .gauge, "1 while the tenant is up, 0 while its network namespace is gone",
                 s.tenants.map { (tenantLabels($0), $0.state == "up" ? "1" : "0") })
        let tenantCounters: [(String, String, (StatsSnapshot.Tenant) -> UInt64)] = [
            ("rx_packets", "Packets received from the tenant's peers", \.rxPackets),
            ("rx_bytes", "Bytes received from the tenant's peers", \.rxBytes),
            ("tx_packets", "Packets sent to the tenant's peers", \.txPackets),
            ("tx_bytes", "Bytes sent to the tenant's peers", \.txBytes),
            ("drops", "Packets of the tenant dropped", \.drops),
        ]
        for (name, help, pick) in tenantCounters {
            e.family("xdpwg_tenant_\(name)_total", .counter, help, s.tenants.map { (tenantLabels($0), String(pick($0))) })
        }
        let peerCounters: [(String, String, (StatsSnapshot.Peer) -> UInt64)] = [
            ("rx_packets", "Packets received from the peer", \.rxPackets),
            ("tx_packets", "Packets sent to the peer", \.txPackets),
            ("drops", "Packets of the peer dropped", \.drops),
            ("handshakes", "Handshakes completed with the peer", \.handshakes),
        ]
        for (name, help, pick) in peerCounters {
            e.family("xdpwg_peer_\(name)_total", .counter, help, s.peers.map { (peerLabels($0), String(pick($0))) })
        }
        e.family("xdpwg_peer_keypair_age_seconds", .gauge, "Age of the peer's current keypair",
                 s.peers.compactMap { p in p.keypairAge.map { (peerLabels(p), String($0)) } })
        return e.text
    }

    /// A float as Prometheus reads it.
    private static func number(_ x: Double) -> String {
        if x.isNaN { return "NaN" }
        if x.isInfinite { return x > 0 ? "+Inf" : "-Inf" }
        return x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
    }

    /// Builds a text exposition, one metric family at a time.
    struct Exposition {
        enum Kind: String { case counter, gauge }
        var text = ""

        mutating func family(_ name: String, _ kind: Kind, _ help: String, _ samples: [([(String, String)], String)]) {
            text += "# HELP \(name) \(Exposition.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
            for (labels, value) in samples {
                text += name
                if !labels.isEmpty {
                    text += "{" + labels.map { "\($0.0)=\"\(Exposition.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
                }
                text += " \(value)\n"
            }
        }

        /// Label values: backslash, double quote and line feed escaped.
        static func escapeLabel(_ s: String) -> String {
            var out = ""
            for c in s {
                switch c {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                default: out.append(c)
                }
            }
            return out
        }

        /// HELP text: backslash and line feed escaped.
        static func escapeHelp(_ s: String) -> String {
            var out = ""
            for c in s {
                switch c {
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                default: out.append(c)
                }
            }
            return out
        }
    }
}
