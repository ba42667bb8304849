import Engine
@testable import Gateway
import Testing
import TestSupport

/// A snapshot with a known answer for every renderer.
enum StatsFixture {
    static let keyA = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
    static let keyB = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="

    static var snapshot: StatsSnapshot {
        StatsSnapshot(
            gateway: "edge1", pid: 4242, time: 1_700_003_723.5, started: 1_700_000_000, heartbeat: 1_700_003_723.25,
            generation: 372_350,
            workers: [
                .init(index: 0, queue: 0, core: 2,
                      counters: ["uplink_rx_packets": 1000, "uplink_rx_bytes": 148_000, "tenant_tx_packets": 997,
                                 "tenant_tx_bytes": 84_000, "batches": 80, "batch_frames": 1000, "decrypted": 997,
                                 "rx_empty_polls": 123_456],
                      drops: ["replayed": 3],
                      frames: ["uplink_frames_total": 8192, "uplink_frames_free": 4000, "uplink_frames_receiving": 4096,
                               "uplink_frames_transmitting": 96, "tenant_frames_total": 2048, "tenant_frames_free": 1000,
                               "tenant_frames_receiving": 1024, "tenant_frames_transmitting": 24]),
                .init(index: 1, queue: 1, core: nil,
                      counters: ["uplink_rx_packets": 3000, "uplink_rx_bytes": 444_000, "tenant_tx_packets": 2998,
                                 "tenant_tx_bytes": 250_000, "batches": 100, "batch_frames": 3000, "decrypted": 2998],
                      drops: ["authentication_failed": 2]),
            ],
            handshakes: .init(counters: ["initiations_received": 5, "responses_sent": 5, "sessions_established": 5],
                              failures: ["invalid_mac1": 2]),
            xdp: .init(verdicts: ["redirected": 4000, "passed": 17, "dropped_bad_size": 1], redirectsPerQueue: [1000, 3000]),
            crypto: "ipsec-mb",
            tenants: [
                .init(slot: 0, name: "acme", listenPort: 51820, peers: 2, rxPackets: 3995, rxBytes: 334_000,
                      txPackets: 10, txBytes: 1280, drops: 5),
                .init(slot: 1, name: "we\"ird\\x", listenPort: 51821, peers: 0, rxPackets: 0, rxBytes: 0, txPackets: 0,
                      txBytes: 0, drops: 0, state: "down"),
            ],
            peers: [
                .init(slot: 0, tenant: "acme", publicKey: keyA, endpoint: "192.0.2.7:51820", latestHandshake: 1_700_003_658,
                      keypairAge: 65, rxPackets: 3995, rxBytes: 334_000, txPackets: 10, txBytes: 1280, drops: 5,
                      handshakes: 1),
                .init(slot: 3, tenant: "acme", publicKey: keyB, endpoint: nil, latestHandshake: 0, keypairAge: nil,
                      rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0, drops: 0, handshakes: 0),
            ])
    }
}

@Suite("Stats rendering")
struct StatsRenderingTests {
    /// The fixture two seconds later, with some counters advanced.
    static var later: StatsSnapshot {
        var s = StatsFixture.snapshot
        s.time += 2
        s.workers[0].counters["uplink_rx_packets"] = 1200
        s.workers[0].counters["batches"] = 90
        s.workers[0].counters["batch_frames"] = 1200
        s.peers[0].rxBytes += 1000
        return s
    }

    @Test("the table: every counter per queue with totals, batch fill, drops by reason, handshakes, XDP, tenants, peers")
    func table() {
        let expected = #"""
        gateway edge1: pid 4242, up 1h 02m 03s, crypto ipsec-mb

        workers                       queue 0  queue 1   total
        core                                2        -
        uplink_rx_packets                1000     3000    4000
        uplink_rx_bytes                148000   444000  592000
        uplink_tx_packets                   0        0       0
        uplink_tx_bytes                     0        0       0
        tenant_rx_packets                   0        0       0
        tenant_rx_bytes                     0        0       0
        tenant_tx_packets                 997     2998    3995
        tenant_tx_bytes                 84000   250000  334000
        batches                            80      100     180
        batch_frames                     1000     3000    4000
        decrypted                         997     2998    3995
        encrypted                           0        0       0
        keepalives_received                 0        0       0
        handshake_messages_forwarded        0        0       0
        packets_staged                      0        0       0
        rx_empty_polls                 123456        0  123456
        tx_ring_full                        0        0       0
        transmit_kicks                      0        0       0
        fill_wakeups                        0        0       0
        uplink_xsk_rx_dropped               0        0       0
        uplink_xsk_rx_ring_full             0        0       0
        uplink_xsk_fill_ring_empty          0        0       0
        uplink_xsk_invalid_descs            0        0       0
        tenant_xsk_rx_dropped               0        0       0
        tenant_xsk_rx_ring_full             0        0       0
        tenant_xsk_fill_ring_empty          0        0       0
        tenant_xsk_invalid_descs            0        0       0
        mean_batch_fill                  12.5     30.0    22.2
        uplink_frames_total              8192        0    8192
        uplink_frames_free               4000        0    4000
        uplink_frames_receiving          4096        0    4096
        uplink_frames_transmitting         96        0      96
        tenant_frames_total              2048        0    2048
        tenant_frames_free               1000        0    1000
        tenant_frames_receiving          1024        0    1024
        tenant_frames_transmitting         24        0      24
        drops                               3        2       5
          replayed                          3        0       3
          authentication_failed             0        2       2

        handshakes
          initiations_received     5
          responses_received       0
          cookie_replies_received  0
          initiations_sent         0
          responses_sent           5
          cookie_replies_sent      0
          sessions_established     5
          staged_dropped           0
          send_errors              0
          failures                 2
            invalid_mac1           2

        xdp verdicts
          redirected             4000
          passed                   17
          dropped_no_socket         0
          dropped_fragment          0
          dropped_bad_length        0
          dropped_bad_type          0
          dropped_bad_size          1
          dropped_too_big           0
          redirected to queue 0  1000
          redirected to queue 1  3000

        tenant    state  listen_port  peers  rx_packets  rx_bytes  tx_packets  tx_bytes  drops
        acme      up           51820      2        3995    334000          10      1280      5
        we"ird\x  down         51821      0           0         0           0         0      0

        peer                                          tenant  endpoint         latest_handshake  keypair_age  rx_packets  rx_bytes  tx_packets  tx_bytes  drops  handshakes
        xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=  acme    192.0.2.7:51820  1m 05s ago        1m 05s             3995    334000          10      1280      5           1
        TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=  acme    (none)           never             -                     0         0           0         0      0           0

        """#
        #expect(StatsRendering.renderTable(StatsFixture.snapshot) == expected)
    }

    @Test("the watch view: rates per second between two snapshots")
    func watch() {
        let expected = #"""
        gateway edge1: pid 4242, up 1h 02m 05s, crypto ipsec-mb, rates per second over the last 2.0 s

        workers                       queue 0  queue 1  total
        core                                2        -
        uplink_rx_packets               100.0      0.0  100.0
        uplink_rx_bytes                   0.0      0.0    0.0
        uplink_tx_packets                 0.0      0.0    0.0
        uplink_tx_bytes                   0.0      0.0    0.0
        tenant_rx_packets                 0.0      0.0    0.0
        tenant_rx_bytes                   0.0      0.0    0.0
        tenant_tx_packets                 0.0      0.0    0.0
        tenant_tx_bytes                   0.0      0.0    0.0
        batches                           5.0      0.0    5.0
        batch_frames                    100.0      0.0  100.0
        decrypted                         0.0      0.0    0.0
        encrypted                         0.0      0.0    0.0
        keepalives_received               0.0      0.0    0.0
        handshake_messages_forwarded      0.0      0.0    0.0
        packets_staged                    0.0      0.0    0.0
        rx_empty_polls                    0.0      0.0    0.0
        tx_ring_full                      0.0      0.0    0.0
        transmit_kicks                    0.0      0.0    0.0
        fill_wakeups                      0.0      0.0    0.0
        uplink_xsk_rx_dropped             0.0      0.0    0.0
        uplink_xsk_rx_ring_full           0.0      0.0    0.0
        uplink_xsk_fill_ring_empty        0.0      0.0    0.0
        uplink_xsk_invalid_descs          0.0      0.0    0.0
        tenant_xsk_rx_dropped             0.0      0.0    0.0
        tenant_xsk_rx_ring_full           0.0      0.0    0.0
        tenant_xsk_fill_ring_empty        0.0      0.0    0.0
        tenant_xsk_invalid_descs          0.0      0.0    0.0
        mean_batch_fill                  20.0        -   20.0
        uplink_frames_total              8192        0   8192
        uplink_frames_free               4000        0   4000
        uplink_frames_receiving          4096        0   4096
        uplink_frames_transmitting         96        0     96
        tenant_frames_total              2048        0   2048
        tenant_frames_free               1000        0   1000
        tenant_frames_receiving          1024        0   1024
        tenant_frames_transmitting         24        0     24
        drops                             0.0      0.0    0.0
          replayed                        0.0      0.0    0.0
          authentication_failed           0.0      0.0    0.0

        handshakes
          initiations_received     0.0
          responses_received       0.0
          cookie_replies_received  0.0
          initiations_sent         0.0
          responses_sent           0.0
          cookie_replies_sent      0.0
          sessions_established     0.0
          staged_dropped           0.0
          send_errors              0.0
          failures                 0.0
            invalid_mac1           0.0

        xdp verdicts
          redirected             0.0
          passed                 0.0
          dropped_no_socket      0.0
          dropped_fragment       0.0
          dropped_bad_length     0.0
          dropped_bad_type       0.0
          dropped_bad_size       0.0
          dropped_too_big        0.0
          redirected to queue 0  0.0
          redirected to queue 1  0.0

        tenant    state  listen_port  peers  rx_packets  rx_bytes  tx_packets  tx_bytes  drops
        acme      up           51820      2         0.0       0.0         0.0       0.0    0.0
        we"ird\x  down         51821      0         0.0       0.0         0.0       0.0    0.0

        peer                                          tenant  endpoint         latest_handshake  keypair_age  rx_packets  rx_bytes  tx_packets  tx_bytes  drops  handshakes
        xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=  acme    192.0.2.7:51820  1m 07s ago        1m 05s              0.0     500.0         0.0       0.0    0.0         0.0
        TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=  acme    (none)           never             -                   0.0       0.0         0.0       0.0    0.0         0.0

        """#
        #expect(StatsRendering.renderWatch(previous: StatsFixture.snapshot, current: Self.later) == expected)
    }

    @Test("the watch view shows totals when the gateway restarted in between, and '-' for new peers")
    func watchAcrossRestarts() {
        var restarted = Self.later
        restarted.pid = 4243
        #expect(StatsRendering.renderWatch(previous: StatsFixture.snapshot, current: restarted)
                == StatsRendering.renderTable(restarted))
        var previous = StatsFixture.snapshot
        previous.peers.removeLast()
        let lines = StatsRendering.renderWatch(previous: previous, current: Self.later).split(separator: "\n")
        let newPeer = lines.first { $0.hasPrefix(StatsFixture.keyB) }
        #expect(newPeer == "\(StatsFixture.keyB)  acme    (none)           never             -                     -         -           -         -      -           -")
    }

    @Test("a silent control thread is called out")
    func heartbeatWarning() {
        var s = StatsFixture.snapshot
        s.heartbeat = s.time - 75
        let lines = StatsRendering.renderTable(s).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[1] == "warning: the control thread has not updated the statistics for 1m 15s")
        s.heartbeat = s.time - 4.9
        #expect(!StatsRendering.renderTable(s).contains("warning"))
    }

    @Test("an uplink that is down is called out, in the table and in Prometheus")
    func uplinkDownWarning() {
        var s = StatsFixture.snapshot
        s.uplink = .init(state: "down", downEvents: 3)
        let lines = StatsRendering.renderTable(s).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[1] == "warning: the uplink is down: nothing is received or sent until it is up again")
        let prometheus = StatsRendering.renderPrometheus(s)
        #expect(prometheus.contains("\nxdpwg_uplink_up 0\n") && prometheus.contains("\nxdpwg_uplink_down_events_total 3\n"))
    }

    @Test("empty tables say so")
    func empty() {
        var s = StatsFixture.snapshot
        s.tenants = []
        s.peers = []
        #expect(StatsRendering.renderTable(s).hasSuffix("\n\ntenants: none\n\npeers: none\n"))
    }

    @Test("JSON: the documented schema, exactly, and it decodes back to the same snapshot")
    func json() throws {
        let expected = #"""
        {
          "crypto" : "ipsec-mb",
          "gateway" : "edge1",
          "generation" : 372350,
          "handshakes" : {
            "counters" : {
              "initiations_received" : 5,
              "responses_sent" : 5,
              "sessions_established" : 5
            },
            "failures" : {
              "invalid_mac1" : 2
            }
          },
          "heartbeat" : 1700003723.25,
          "peers" : [
            {
              "drops" : 5,
              "endpoint" : "192.0.2.7:51820",
              "handshakes" : 1,
              "keypair_age_seconds" : 65,
              "latest_handshake" : 1700003658,
              "public_key" : "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
              "rx_bytes" : 334000,
              "rx_packets" : 3995,
              "slot" : 0,
              "tenant" : "acme",
              "tx_bytes" : 1280,
              "tx_packets" : 10
            },
            {
              "drops" : 0,
              "endpoint" : null,
              "handshakes" : 0,
              "keypair_age_seconds" : null,
              "latest_handshake" : 0,
              "public_key" : "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=",
              "rx_bytes" : 0,
              "rx_packets" : 0,
              "slot" : 3,
              "tenant" : "acme",
              "tx_bytes" : 0,
              "tx_packets" : 0
            }
          ],
          "pid" : 4242,
          "schema_version" : 1,
          "started" : 1700000000,
          "tenants" : [
            {
              "drops" : 5,
              "listen_port" : 51820,
              "name" : "acme",
              "peers" : 2,
              "rx_bytes" : 334000,
              "rx_packets" : 3995,
              "slot" : 0,
              "state" : "up",
              "tx_bytes" : 1280,
              "tx_packets" : 10
            },
            {
              "drops" : 0,
              "listen_port" : 51821,
              "name" : "we\"ird\\x",
              "peers" : 0,
              "rx_bytes" : 0,
              "rx_packets" : 0,
              "slot" : 1,
              "state" : "down",
              "tx_bytes" : 0,
              "tx_packets" : 0
            }
          ],
          "time" : 1700003723.5,
          "uplink" : {
            "down_events" : 0,
            "state" : "up"
          },
          "workers" : [
            {
              "core" : 2,
              "counters" : {
                "batch_frames" : 1000,
                "batches" : 80,
                "decrypted" : 997,
                "rx_empty_polls" : 123456,
                "tenant_tx_bytes" : 84000,
                "tenant_tx_packets" : 997,
                "uplink_rx_bytes" : 148000,
                "uplink_rx_packets" : 1000
              },
              "drops" : {
                "replayed" : 3
              },
              "frames" : {
                "tenant_frames_free" : 1000,
                "tenant_frames_receiving" : 1024,
                "tenant_frames_total" : 2048,
                "tenant_frames_transmitting" : 24,
                "uplink_frames_free" : 4000,
                "uplink_frames_receiving" : 4096,
                "uplink_frames_total" : 8192,
                "uplink_frames_transmitting" : 96
              },
              "index" : 0,
              "queue" : 0
            },
            {
              "core" : null,
              "counters" : {
                "batch_frames" : 3000,
                "batches" : 100,
                "decrypted" : 2998,
                "tenant_tx_bytes" : 250000,
                "tenant_tx_packets" : 2998,
                "uplink_rx_bytes" : 444000,
                "uplink_rx_packets" : 3000
              },
              "drops" : {
                "authentication_failed" : 2
              },
              "frames" : {

              },
              "index" : 1,
              "queue" : 1
            }
          ],
          "xdp" : {
            "redirects_per_queue" : [
              1000,
              3000
            ],
            "verdicts" : {
              "dropped_bad_size" : 1,
              "passed" : 17,
              "redirected" : 4000
            }
          }
        }

        """#
        let text = try StatsRendering.renderJSON(StatsFixture.snapshot)
        #expect(text == expected)
        #expect(try StatsRendering.decodeJSON(text) == StatsFixture.snapshot)
    }

    @Test("Prometheus: the WireGuard exporter's metrics and the data plane's, exactly")
    func prometheusExact() {
        let text = StatsRendering.renderPrometheus(StatsFixture.snapshot)
        let wireguard = #"""
        # HELP wireguard_sent_bytes_total Bytes sent to the peer
        # TYPE wireguard_sent_bytes_total counter
        wireguard_sent_bytes_total{interface="acme",public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 1280
        wireguard_sent_bytes_total{interface="acme",public_key="TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="} 0
        # HELP wireguard_received_bytes_total Bytes received from the peer
        # TYPE wireguard_received_bytes_total counter
        wireguard_received_bytes_total{interface="acme",public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 334000
        wireguard_received_bytes_total{interface="acme",public_key="TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="} 0
        # HELP wireguard_latest_handshake_seconds Unix time of the latest handshake with the peer (0: never)
        # TYPE wireguard_latest_handshake_seconds gauge
        wireguard_latest_handshake_seconds{interface="acme",public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 1700003658
        wireguard_latest_handshake_seconds{interface="acme",public_key="TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="} 0
        # HELP xdpwg_start_time_seconds Unix time the gateway started
        # TYPE xdpwg_start_time_seconds gauge
        xdpwg_start_time_seconds 1700000000
        # HELP xdpwg_heartbeat_timestamp_seconds Unix time the gateway's control thread last updated the statistics
        # TYPE xdpwg_heartbeat_timestamp_seconds gauge
        xdpwg_heartbeat_timestamp_seconds 1700003723.25
        # HELP xdpwg_uplink_up 1 while the uplink is up with a carrier, 0 while it is down
        # TYPE xdpwg_uplink_up gauge
        xdpwg_uplink_up 1
        # HELP xdpwg_uplink_down_events_total Times the uplink went down
        # TYPE xdpwg_uplink_down_events_total counter
        xdpwg_uplink_down_events_total 0
        # HELP xdpwg_crypto_backend_info The transport cipher backend in use (always 1)
        # TYPE xdpwg_crypto_backend_info gauge
        xdpwg_crypto_backend_info{backend="ipsec-mb"} 1

        """#
        let xdpAndTenants = #"""
        # HELP xdpwg_xdp_verdicts_total Packets the uplink XDP program saw, per verdict
        # TYPE xdpwg_xdp_verdicts_total counter
        xdpwg_xdp_verdicts_total{verdict="redirected"} 4000
        xdpwg_xdp_verdicts_total{verdict="passed"} 17
        xdpwg_xdp_verdicts_total{verdict="dropped_no_socket"} 0
        xdpwg_xdp_verdicts_total{verdict="dropped_fragment"} 0
        xdpwg_xdp_verdicts_total{verdict="dropped_bad_length"} 0
        xdpwg_xdp_verdicts_total{verdict="dropped_bad_type"} 0
        xdpwg_xdp_verdicts_total{verdict="dropped_bad_size"} 1
        xdpwg_xdp_verdicts_total{verdict="dropped_too_big"} 0
        # HELP xdpwg_xdp_redirects_total Packets the uplink XDP program redirected, per RX queue
        # TYPE xdpwg_xdp_redirects_total counter
        xdpwg_xdp_redirects_total{queue="0"} 1000
        xdpwg_xdp_redirects_total{queue="1"} 3000
        # HELP xdpwg_tenant_peers Peers of the tenant
        # TYPE xdpwg_tenant_peers gauge
        xdpwg_tenant_peers{interface="acme"} 2
        xdpwg_tenant_peers{interface="we\"ird\\x"} 0
        # HELP xdpwg_tenant_up 1 while the tenant is up, 0 while its network namespace is gone
        # TYPE xdpwg_tenant_up gauge
        xdpwg_tenant_up{interface="acme"} 1
        xdpwg_tenant_up{interface="we\"ird\\x"} 0
        # HELP xdpwg_tenant_rx_packets_total Packets received from the tenant's peers
        # TYPE xdpwg_tenant_rx_packets_total counter
        xdpwg_tenant_rx_packets_total{interface="acme"} 3995
        xdpwg_tenant_rx_packets_total{interface="we\"ird\\x"} 0

        """#
        let batches = #"""
        # HELP xdpwg_worker_batches_total Worker counter batches, per uplink RX queue
        # TYPE xdpwg_worker_batches_total counter
        xdpwg_worker_batches_total{queue="0"} 80
        xdpwg_worker_batches_total{queue="1"} 100

        """#
        let keypairs = #"""
        # HELP xdpwg_peer_keypair_age_seconds Age of the peer's current keypair
        # TYPE xdpwg_peer_keypair_age_seconds gauge
        xdpwg_peer_keypair_age_seconds{interface="acme",public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} 65

        """#
        #expect(text.hasPrefix(wireguard))
        #expect(text.contains(xdpAndTenants))
        #expect(text.contains(batches))
        // Only peers with a keypair have an age; the family ends the exposition.
        #expect(text.hasSuffix(keypairs))
        #expect(text.contains(#"xdpwg_drops_total{queue="0",reason="replayed"} 3"# + "\n"))
        #expect(text.contains(#"xdpwg_drops_total{queue="1",reason="authentication_failed"} 2"# + "\n"))
        #expect(text.contains(#"xdpwg_handshake_failures_total{reason="invalid_mac1"} 2"# + "\n"))
        #expect(text.contains("xdpwg_handshake_sessions_established_total 5\n"))
    }

    @Test("Prometheus: every line parses, every sample has a TYPE, names and labels are valid, values unescape")
    func prometheusGrammar() throws {
        let text = StatsRendering.renderPrometheus(StatsFixture.snapshot)
        let exposition = try PrometheusText(parsing: text)
        // Every family of the snapshot: 3 WireGuard + 2 gateway + 2 uplink + 1 crypto + workers +
        // frame gauges + drops + handshakes + failures + 2 XDP + 7 tenant + 5 peer.
        #expect(exposition.types.count == 3 + 2 + 2 + 1 + WorkerCounter.allCases.count + FrameGauge.allCases.count + 1
                + HandshakeCounter.allCases.count + 1 + 2 + 7 + 5)
        #expect(exposition.samples.count == text.split(separator: "\n").filter { !$0.hasPrefix("#") }.count)
        let weird = exposition.samples.first { $0.name == "xdpwg_tenant_peers" && $0.labels["interface"] != "acme" }
        #expect(weird?.labels == ["interface": "we\"ird\\x"])
        let drops = exposition.samples.filter { $0.name == "xdpwg_drops_total" }
        #expect(drops.count == 2 * DropReason.allCases.count)
        #expect(Set(drops.map { $0.labels["reason"]! }) == Set(DropReason.allCases.map(\.name)))
        // Label values with a line feed are escaped too.
        var s = StatsFixture.snapshot
        s.tenants[1].name = "line\nfeed"
        let escaped = try PrometheusText(parsing: StatsRendering.renderPrometheus(s))
        #expect(escaped.samples.contains { $0.labels["interface"] == "line\nfeed" })
    }

    @Test("helpers: durations and fixed-point numbers")
    func helpers() {
        #expect(StatsRendering.duration(0) == "0s")
        #expect(StatsRendering.duration(-3) == "0s")
        #expect(StatsRendering.duration(59.9) == "59s")
        #expect(StatsRendering.duration(61) == "1m 01s")
        #expect(StatsRendering.duration(3723) == "1h 02m 03s")
        #expect(StatsRendering.duration(90061) == "1d 01h 01m")
        #expect(StatsRendering.fixed(2.25, digits: 1) == "2.3")
        #expect(StatsRendering.fixed(0.04, digits: 1) == "0.0")
        #expect(StatsRendering.fixed(-1.25, digits: 2) == "-1.25")
        #expect(StatsRendering.fixed(1234567.0, digits: 1) == "1234567.0")
        #expect(StatsRendering.fixed(.nan, digits: 1) == "-")
    }
}
