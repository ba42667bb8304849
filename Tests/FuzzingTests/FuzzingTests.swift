import Foundation
import Fuzzing
import Testing

/// The fuzz harnesses without sanitizers: every committed corpus and regression input is
/// replayed through its target on every test run (so a fixed crash stays fixed), the seeds
/// are the generator's, and the harnesses give known answers on the seeds (a harness that
/// rejected everything would fuzz nothing). Serialized: the harnesses keep state for one
/// input at a time, as libFuzzer runs them.
@Suite(.serialized) struct FuzzingTests {
    /// The repository's Fuzz/ directory, found from this file.
    static let fuzzDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    static func files(_ kind: String, _ target: FuzzTarget) throws -> [URL] {
        let dir = fuzzDirectory.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
        guard FileManager.default.fileExists(atPath: dir.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// Fuzz/Corpus/TARGET holds exactly the generator's seeds under their names (plus any
    /// inputs merged from long runs). XDPWG_WRITE_FUZZ_SEEDS=1 rewrites them instead.
    @Test(arguments: FuzzTarget.allCases)
    func committedSeedsAreTheGenerators(_ target: FuzzTarget) throws {
        let seeds = target.seeds
        #expect(!seeds.isEmpty)
        #expect(Set(seeds.map(\.name)).count == seeds.count, "seed names must be unique")
        let dir = Self.fuzzDirectory.appendingPathComponent("Corpus").appendingPathComponent(target.rawValue)
        if ProcessInfo.processInfo.environment["XDPWG_WRITE_FUZZ_SEEDS"] == "1" {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for old in try Self.files("Corpus", target) where old.lastPathComponent.hasPrefix("seed-") {
                try FileManager.default.removeItem(at: old)
            }
            for seed in seeds { try Data(seed.bytes).write(to: dir.appendingPathComponent(seed.name)) }
        }
        let committed = try Self.files("Corpus", target).filter { $0.lastPathComponent.hasPrefix("seed-") }
        #expect(committed.map(\.lastPathComponent) == seeds.map(\.name).sorted(),
                "Fuzz/Corpus/\(target.rawValue): regenerate with XDPWG_WRITE_FUZZ_SEEDS=1")
        for seed in seeds {
            let file = dir.appendingPathComponent(seed.name)
            let bytes = try? Data(contentsOf: file)
            #expect(bytes.map(Array.init) == seed.bytes, "\(file.lastPathComponent) differs from the generator's")
        }
    }

    /// Every corpus and regression input runs through its target without a crash, twice with
    /// the same result (the harness is deterministic).
    @Test(arguments: FuzzTarget.allCases)
    func corpusAndRegressionsReplay(_ target: FuzzTarget) throws {
        let inputs = try Self.files("Corpus", target) + Self.files("Regressions", target)
        #expect(!inputs.isEmpty, "no corpus for \(target.rawValue)")
        for file in inputs {
            let bytes = Array(try Data(contentsOf: file))
            let first = target.run(bytes)
            let second = target.run(bytes)
            #expect(first == second, "\(file.lastPathComponent): \(first), then \(second)")
        }
    }

    /// What each seed must do: the harness reaches what it was built to reach.
    static let knownAnswers: [(FuzzTarget, String, FuzzResult)] = [
        (.messages, "initiation", .accepted("initiation round trip")),
        (.messages, "response", .accepted("response round trip")),
        (.messages, "cookie-reply", .accepted("cookie reply round trip")),
        (.messages, "transport-ipv4", .accepted("transport round trip")),
        (.messages, "initiation-truncated", .rejected("tooShort")),
        (.messages, "response-trailing-byte", .rejected("wrongLength")),
        (.messages, "unknown-type", .rejected("unknownType")),
        (.messages, "reserved-not-zero", .rejected("reservedNotZero")),

        (.handshakeInitiation, "as-sent", .accepted("response to the transcript's initiation, same session keys")),
        (.handshakeInitiation, "as-sent-with-mac2", .accepted("response to the transcript's initiation, same session keys")),
        (.handshakeInitiation, "harness-mac1", .accepted("response to the transcript's initiation, same session keys")),
        (.handshakeInitiation, "under-load-cookie-reply", .accepted("cookie reply, taken by the sender")),
        (.handshakeInitiation, "under-load-valid-mac2", .accepted("response to the transcript's initiation, same session keys")),
        (.handshakeInitiation, "under-load-rate-limited", .rejected("rate limited")),
        (.handshakeInitiation, "bad-mac1", .rejected("invalid mac1")),
        (.handshakeInitiation, "garbage-with-mac1", .rejected("decryptionFailed")),
        (.handshakeInitiation, "bad-static-with-mac1", .rejected("decryptionFailed")),
        (.handshakeInitiation, "constructed-peer-a", .accepted("first accepted, replay refused, newer refused as a flood")),
        (.handshakeInitiation, "constructed-peer-b-later", .accepted("first accepted, replay refused, newer accepted")),
        (.handshakeInitiation, "constructed-stranger", .rejected("unknownPeer")),

        (.handshakeResponse, "as-sent", .accepted("session keys of the transcript")),
        (.handshakeResponse, "harness-mac1", .accepted("session keys of the transcript")),
        (.handshakeResponse, "under-load-cookie-reply", .accepted("cookie reply, taken by the sender")),
        (.handshakeResponse, "under-load-valid-mac2", .accepted("session keys of the transcript")),
        (.handshakeResponse, "wrong-receiver", .rejected("unknownIndex")),
        (.handshakeResponse, "bad-tag", .rejected("decryptionFailed")),

        (.handshakeCookie, "as-sent", .accepted("cookie taken, next mac2 valid")),
        (.handshakeCookie, "receiver-by-harness", .accepted("cookie taken, next mac2 valid")),
        (.handshakeCookie, "bad-nonce", .rejected("decryptionFailed")),
        (.handshakeCookie, "bad-cookie", .rejected("decryptionFailed")),

        (.transportOpen, "keypair-keepalive", .accepted("opened 0 B")),
        (.transportOpen, "keypair-ipv4", .accepted("opened 64 B")),
        (.transportOpen, "keypair-ipv6", .accepted("opened 80 B")),
        (.transportOpen, "keypair-bad-tag", .rejected("authenticationFailed")),
        (.transportOpen, "keypair-wrong-receiver", .rejected("wrongReceiver")),
        (.transportOpen, "pipeline-ipv4", .accepted("delivered 46 B to tenant 0")),
        (.transportOpen, "pipeline-bad-tag", .rejected("authentication_failed")),
        // 0 1 2 taken, 2 1 0 replays, 5 3 4 taken.
        (.transportOpen, "window-in-order-and-replays", .accepted("6 of 9 counters taken")),
        // 10000; 1872 exactly 8128 behind: taken; 1871: too old; 20000; 9999 too old; 2^40.
        (.transportOpen, "window-far-ahead-and-behind", .accepted("4 of 6 counters taken")),
        // limit-2; limit refused; limit-1 exhausts the keypair: nothing after.
        (.transportOpen, "window-limit", .accepted("2 of 5 counters taken")),

        (.innerPacket, "decrypted-ipv4", .accepted("delivered 78 B to tenant 0")),
        (.innerPacket, "decrypted-ipv6", .accepted("delivered 86 B to tenant 0")),
        (.innerPacket, "decrypted-spoofed-source", .rejected("inner_source_not_allowed")),
        (.innerPacket, "decrypted-keepalive", .accepted("consumed")),
        (.innerPacket, "decrypted-truncated", .rejected("inner_malformed")),
        (.innerPacket, "decrypted-length-beyond", .rejected("inner_malformed")),
        (.innerPacket, "tenant-ipv4", .accepted("sent 138 B")),
        (.innerPacket, "tenant-ipv6", .accepted("sent 154 B")),
        (.innerPacket, "tenant-no-route", .rejected("no_route")),
        (.innerPacket, "tenant-frame", .accepted("sent 106 B")),

        (.uplinkFrame, "transport-ipv4", .accepted("delivered 46 B to tenant 0")),
        (.uplinkFrame, "transport-ipv6", .accepted("delivered 46 B to tenant 0")),
        (.uplinkFrame, "transport-vlan", .accepted("delivered 46 B to tenant 0")),
        (.uplinkFrame, "initiation", .accepted("consumed")),
        (.uplinkFrame, "unknown-port", .rejected("unknown_port")),
        (.uplinkFrame, "ipv4-fragment", .rejected("outer_malformed")),
        (.uplinkFrame, "truncated", .rejected("outer_malformed")),

        (.configuration, "documented-example", .accepted("1 tenants, 1 peers")),
        (.configuration, "every-key", .accepted("2 tenants, 3 peers")),
        (.configuration, "empty", .rejected("2 problems")),   // no [Gateway], no [Tenant]

        (.uapi, "get", .accepted("get")),
        (.uapi, "setconf", .accepted("set: 2 peers")),
        (.uapi, "set-allowed-ips", .accepted("set: 2 peers")),
        (.uapi, "set-remove-peer", .accepted("set: 1 peers")),
        (.uapi, "set-update-only", .accepted("set: 2 peers")),
        (.uapi, "set-new-peer-no-psk", .accepted("set: 3 peers")),
    ]

    @Test(arguments: 0..<knownAnswers.count)
    func seedsGiveKnownAnswers(_ i: Int) throws {
        let (target, name, expected) = Self.knownAnswers[i]
        let seed = try #require(target.seeds.first { $0.name == "seed-" + name }, "no seed \(name) for \(target.rawValue)")
        #expect(target.run(seed.bytes) == expected, "\(target.rawValue)/\(seed.name)")
    }

    /// Refusals whose text comes from the production code: only the prefix is fixed.
    @Test func refusedRequestsNameTheirReason() {
        let uapi = FuzzTarget.uapi.seeds
        func result(_ name: String) -> FuzzResult? { uapi.first { $0.name == "seed-" + name }.map { FuzzTarget.uapi.run($0.bytes) } }
        #expect(result("set-listen-port-zero")?.description.hasPrefix("rejected: apply: listen_port 0") == true)
        #expect(result("set-peer-key-first")?.description.hasPrefix("rejected: parse: line 2: endpoint is a peer key") == true)
        #expect(result("unknown-operation")?.description.hasPrefix("rejected: parse: unknown operation") == true)
        #expect(result("no-blank-line")?.description.hasPrefix("rejected: parse: the request does not end with a blank line") == true)
        let problems = FuzzTarget.configuration.seeds.first { $0.name == "seed-problems" }!
        guard case .rejected(let text) = FuzzTarget.configuration.run(problems.bytes) else {
            Issue.record("the problems seed parsed")
            return
        }
        #expect(text.hasSuffix(" problems") && text != "1 problems", "several problems expected: \(text)")
    }

    /// Every target survives the inputs fuzzers start from: nothing, one byte of each value,
    /// and a long run of one byte.
    @Test(arguments: FuzzTarget.allCases)
    func edgeInputs(_ target: FuzzTarget) {
        _ = target.run([])
        for b in 0...255 { _ = target.run([UInt8(b)]) }
        _ = target.run([UInt8](repeating: 0xff, count: 5000))
        _ = target.run([UInt8](repeating: 0x00, count: 5000))
    }
}
