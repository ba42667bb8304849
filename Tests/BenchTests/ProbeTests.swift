import Foundation
import Testing
import WireGuard
import Engine
import TestSupport
@testable import Bench
import Fixtures

/// A small profile in callgrind's format, with every feature the parser must handle: name
/// compression defined and referred back to (fn= and cfn= share the table), file and object
/// lines to ignore, relative and repeated positions, two event columns, a recursion level
/// ("'2"), calls whose next line is inclusive cost, and an allocation chain inside the
/// allocator family (swift_allocObject → swift_slowAlloc → malloc) that counts once.
///
/// Own Ir: malloc 40, swift_slowAlloc 10, swift_allocObject 20, the batch 400, the AEAD 100,
/// chacha20 200 + 100 (its recursion level), swift_retain 12, a static function of libsodium
/// callgrind knows only by address 8: 890 in all, for 2 packets.
let profileFixture = """
    # callgrind format
    version: 1
    creator: callgrind-3.19.0
    pid: 4242
    cmd: ./xdpwg bench-probe --direction decrypt --size 64 --packets 2
    part: 2
    desc: I1 cache:
    desc: Trigger: --dump-after=$s5Bench*measuredBatch*
    positions: line
    events: Dr Ir
    summary: 0 890

    ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
    fl=(1) ???
    fn=(1) malloc
    0 3 40

    ob=(2) /opt/swift/usr/lib/swift/linux/libswiftCore.so
    fn=(2) swift_slowAlloc
    0 1 10
    cob=(1)
    cfi=(1)
    cfn=(1)
    calls=2 0
    0 0 80
    fn=(3) swift_allocObject
    0 0 20
    cfn=(2)
    calls=2 0
    0 0 90

    ob=(3) /tmp/xdpwg
    fl=(2) Sources/Bench/Probe/PipelineProbe.swift
    fn=(4) $s5Bench20measuredBatchDecrypt_7fixture5countSi6Engine15PacketProcessorVz_AA15PipelineFixtureCSitF
    16 5 300
    +1 0 100
    cfn=(3)
    calls=2 0
    * 0 110
    cfn=(1)
    calls=1 0
    -1 0 20
    cfn=(5) crypto_aead_chacha20poly1305_ietf_decrypt_detached
    calls=2 0
    17 0 400
    cfn=(6) swift_retain
    calls=4 0
    18 0 12
    jump=1 +2

    ob=(4) /usr/lib/x86_64-linux-gnu/libsodium.so.23
    fn=(5)
    0 0 100
    cfn=(7) chacha20_encrypt_bytes
    calls=2 0
    0 0 300
    fn=(7)
    fi=(3) chacha.c
    0 0 200
    cfn=(8) chacha20_encrypt_bytes'2
    calls=1 0
    0 0 100
    fe=(2)
    fn=(8)
    0 0 100
    fn=(6)
    0 0 12
    fn=(11) 0x0000000000040520
    0 0 8
    ob=(1)
    fn=(9) posix_memalign
    0 0 0
    cfn=(10) _mid_memalign.constprop.0
    calls=1 0
    0 0 0
    fn=(10)
    0 0 0
    cfn=(1)
    calls=1 0
    0 0 0

    totals: 9 890
    """

@Suite("Callgrind profile parser")
struct CallgrindProfileTests {
    @Test("own costs, totals, calls and inclusive costs of a known profile")
    func parse() throws {
        let p = try CallgrindProfile.parse(profileFixture)
        #expect(p.totalInstructions == 890)
        #expect(p.selfInstructionsSum == 890)
        #expect(p.selfInstructions["malloc"] == 40)
        #expect(p.selfInstructions["chacha20_encrypt_bytes"] == 300)        // both recursion levels
        #expect(p.selfInstructions["$s5Bench20measuredBatchDecrypt_7fixture5countSi6Engine15PacketProcessorVz_AA15PipelineFixtureCSitF"] == 400)
        let batch = try #require(p.calls["$s5Bench20measuredBatchDecrypt_7fixture5countSi6Engine15PacketProcessorVz_AA15PipelineFixtureCSitF"])
        #expect(batch["swift_allocObject"] == .init(count: 2, inclusiveInstructions: 110))
        #expect(batch["malloc"] == .init(count: 1, inclusiveInstructions: 20))
        #expect(batch["swift_retain"] == .init(count: 4, inclusiveInstructions: 12))
        #expect(p.calls["swift_slowAlloc"]?["malloc"]?.count == 2)
        #expect(p.calls["chacha20_encrypt_bytes"]?["chacha20_encrypt_bytes"]?.count == 1)
        #expect(p.calls["posix_memalign"]?["_mid_memalign"]?.count == 1)     // ".constprop.0" dropped
        #expect(p.objects["malloc"] == "/usr/lib/x86_64-linux-gnu/libc.so.6")
        #expect(p.objects["posix_memalign"] == "/usr/lib/x86_64-linux-gnu/libc.so.6")   // "ob=(1)" referred back
        #expect(p.objects["chacha20_encrypt_bytes"] == "/usr/lib/x86_64-linux-gnu/libsodium.so.23")

        // Allocations: 2 through swift_allocObject, 1 direct malloc; the chains inside the family
        // (swift_slowAlloc → malloc, posix_memalign → _mid_memalign → malloc) are not counted again.
        #expect(p.callCount(to: CallgrindProbe.allocators, excludingCallersIn: CallgrindProbe.allocators) == 3)
        #expect(p.callCount(to: ["malloc"], excludingCallersIn: []) == 4)
        #expect(p.callCount(to: CallgrindProbe.retains, excludingCallersIn: CallgrindProbe.retains) == 4)
        #expect(p.callCount(to: CallgrindProbe.releases, excludingCallersIn: CallgrindProbe.releases) == 0)
        // The cipher: inclusive cost of the calls into it from outside, its own calls not again.
        #expect(p.inclusiveInstructions(ofCallsIntoPrefix: CallgrindProbe.cryptoPrefix) == 400)
    }

    @Test("per-packet figures of a known profile")
    func count() throws {
        let p = try CallgrindProfile.parse(profileFixture)
        let c = try CallgrindProbe.count(p, direction: .decrypt, innerSize: 64, packets: 2)
        #expect(c.instructionsPerPacket == 445)
        #expect(c.mallocsPerPacket == 1.5)
        #expect(c.retainsPerPacket == 2)
        #expect(c.releasesPerPacket == 0)
        #expect(c.cryptoInstructionsPerPacket == 200)
        #expect(c.packets == 2)
        #expect(c.hotFunctions.map(\.instructionsPerPacket) == [200, 150, 50, 20, 10, 6, 5, 4])
        #expect(c.hotFunctions[7].name == "libsodium.so.23+0x40520")
        // swift-demangle (from the toolchain) makes the batch readable; without it, the mangled name stays.
        #expect(c.hotFunctions[0].name.contains("measuredBatchDecrypt"))
        #expect(c.hotFunctions[1].name == "chacha20_encrypt_bytes")
        #expect(c.allocatingFunctions.count == 1 && c.allocatingFunctions[0].contains("measuredBatchDecrypt"))
    }

    @Test("a profile where one batch function calls another is refused")
    func nested() throws {
        let text = """
            events: Ir
            fn=(1) $s5Bench20measuredBatchDecryptA
            0 10
            cfn=(2) $s5Bench20measuredBatchDecryptB
            calls=1 0
            0 5
            fn=(2)
            0 5
            """
        let p = try CallgrindProfile.parse(text)
        let error = #expect(throws: ProbeError.self) { try CallgrindProbe.count(p, direction: .decrypt, innerSize: 64, packets: 1) }
        #expect(error?.description.contains("nested") == true)
        let empty = try CallgrindProfile.parse("events: Ir\n")
        #expect(throws: ProbeError.self) { try CallgrindProbe.count(empty, direction: .decrypt, innerSize: 64, packets: 1) }
    }

    @Test("malformed profiles name the line and the problem", arguments: [
        ("fn=(1) f\n0 10\n", 2, "before the events: line"),
        ("events: Ir\nfn=(3)\n", 2, "name (3) used before it was defined"),
        ("events: Ir\nfn=(1) f\ncalls=1 0\n0 1\n", 3, "calls= without a cfn="),
        ("events: Ir\nfn=(1) f\n0 ten\n", 3, "cost \"ten\" is not a number"),
        ("events: Ir\n0 10\n", 2, "outside any fn="),
        ("events: Dr\n", 1, "no Ir among the events"),
        ("hello world\n", 1, "unrecognised line"),
        ("fn=(1) f\n", 2, "no events: line"),
    ])
    func malformed(text: String, line: Int, reason: String) {
        let error = #expect(throws: CallgrindProfile.ParseError.self) { try CallgrindProfile.parse(text) }
        #expect(error?.line == line)
        #expect(error?.reason.contains(reason) == true, "\(String(describing: error))")
    }
}

@Suite("Scratch directory and tools")
struct ToolTests {
    @Test("a scratch directory and everything in it goes with its owner")
    func scratch() throws {
        var path = ""
        do {
            let scratch = try ScratchDirectory()
            path = scratch.path
            #expect(path.hasPrefix("/tmp/xdpwg-bench-\(getpid())-"))
            #expect(FileManager.default.createFile(atPath: path + "/file", contents: Data("x".utf8)))
            try FileManager.default.createDirectory(atPath: path + "/sub", withIntermediateDirectories: false)
        }
        #expect(access(path, F_OK) != 0)
    }

    @Test("Command.runAllowingFailure: exit status, both outputs, standard input; a missing program is an error")
    func run() throws {
        let sh = try #require(Subprocess.which("sh"))
        let r = try Command.runAllowingFailure([sh, "-c", "cat; echo out; echo err >&2; exit 3"], input: "in\n")
        #expect(r.status == 3)
        #expect(r.standardOutput == "in\nout\n")
        #expect(r.standardError == "err\n")
        let killed = try Command.runAllowingFailure([sh, "-c", "kill -9 $$"])
        #expect(killed.status == 128 + 9)
        #expect(Subprocess.which("no-such-program-\(getpid())") == nil)
        #expect(throws: (any Error).self) { try Command.runAllowingFailure(["/nonexistent/program"]) }
    }
}

@Suite("Pipeline probe")
struct PipelineProbeTests {
    @Test("every packet of the measured batch goes through the delivering path",
          arguments: [Direction.decrypt, .encrypt], [64, 512, 1420])
    func batch(direction: Direction, size: Int) throws {
        let outcome = try PipelineProbe.run(direction: direction, size: size, packets: 100)
        #expect(outcome == .init(direction: direction, innerSize: size, packets: 100, completed: 100, allocatingCanary: false,
                                 cryptoOff: false))
        let canary = try PipelineProbe.run(direction: direction, size: size, packets: 10, allocatingCanary: true)
        #expect(canary.completed == 10)
        // The crypto-off variant passes the same checks (plaintext and a zero tag both ways).
        let off = try PipelineProbe.run(direction: direction, size: size, packets: 100, cryptoOff: true)
        #expect(off.completed == 100 && off.cryptoOff)
    }

    @Test("bad input is refused with the reason", arguments: [
        (Direction.decrypt, 100, 10, "would be padded"),
        (.decrypt, 20, 10, "must be 28...1420"),
        (.encrypt, 1500, 10, "must be 28...1420"),
        (.both, 64, 10, "one direction at a time"),
        (.encrypt, 64, 0, "packets 0"),
    ])
    func badInput(direction: Direction, size: Int, packets: Int, reason: String) {
        let error = #expect(throws: PipelineCheckFailed.self) {
            try PipelineProbe.run(direction: direction, size: size, packets: packets)
        }
        #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
    }

    @Test("xdpwg bench-probe runs the batch and says how many packets completed")
    func command() throws {
        let xdpwg = try Command.xdpwg
        let out = try Command.run([xdpwg, "bench-probe", "--direction", "encrypt", "--size", "64", "--packets", "25"])
        #expect(out == "direction=encrypt size=64 packets=25 completed=25\n")
        let (status, _, err) = try Command.runAllowingFailure([xdpwg, "bench-probe", "--direction", "sideways", "--size", "64"])
        #expect(status != 0)
        #expect(err.contains("--direction must be decrypt or encrypt"))
        let (status2, _, err2) = try Command.runAllowingFailure([xdpwg, "bench-probe", "--direction", "decrypt", "--size", "100"])
        #expect(status2 == 1)
        #expect(err2.contains("xdpwg bench-probe: inner packet size 100 B would be padded"))
        // Hidden from the help, as a measuring instrument.
        let help = try Command.run([xdpwg, "--help"])
        #expect(!help.contains("bench-probe"))
    }
}

@Suite("AEAD baselines")
struct AEADBaselineTests {
    @Test("seal and open rates of every backend on one pinned core", arguments: AEADBackend.allCases)
    func rate(backend: AEADBackend) throws {
        for operation in AEADOperation.allCases {
            let r = try AEADBaseline.measure(backend: backend, operation: operation, size: 64, inPlace: false, seconds: 0.1)
            #expect(r.backend == backend.name && r.operation == operation.rawValue && r.size == 64 && !r.inPlace)
            #expect(r.mpps > 0 && r.mpps.isFinite)
            #expect(abs(r.gbps - r.mpps * 64 * 8 / 1000) < 1e-9 * r.gbps)
        }
    }

    @Test("pinning leaves the caller's own CPUs alone")
    func callerAffinity() throws {
        let before = CPUTopologyProbe.allowed()
        #expect(before.hasPrefix("Cpus_allowed_list:"))
        _ = try AEADBaseline.measure(backend: .libsodium, operation: .seal, size: 64, inPlace: false, seconds: 0.05,
                                     cpu: CPUTopology.allowedCores().last)
        #expect(CPUTopologyProbe.allowed() == before)
    }

    @Test("bad input is refused with the reason")
    func badInput() {
        let size = #expect(throws: BaselineError.self) {
            try AEADBaseline.measure(backend: .libsodium, operation: .seal, size: 0, inPlace: false, seconds: 0.1)
        }
        #expect(size?.description.contains("size 0 B") == true)
        let time = #expect(throws: BaselineError.self) {
            try AEADBaseline.measure(backend: .openssl, operation: .open, size: 64, inPlace: false, seconds: 0)
        }
        #expect(time?.description.contains("seconds 0.0") == true)
        let cpu = #expect(throws: BaselineError.self) {
            try AEADBaseline.measure(backend: .ipsecMB, operation: .open, size: 64, inPlace: false, seconds: 0.1, cpu: 100_000)
        }
        #expect(cpu?.description.contains("CPU 100000 is not one this process may run on") == true)
    }
}

/// The CPUs the calling thread may run on, as /proc says (independent of the code under test).
enum CPUTopologyProbe {
    static func allowed() -> String {
        let status = readText("/proc/thread-self/status") ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }.map(String.init) ?? ""
    }
}

/// End to end under valgrind, with the xdpwg built beside the tests (a debug build: its counts
/// are larger than a release build's, the relations tested hold for both). Serialized: each
/// run keeps a core busy for a few seconds.
@Suite("Callgrind probe", .serialized)
struct CallgrindProbeTests {
    static let packets = 200

    @Test("instructions per packet are counted, grow with size, and include the cipher")
    func growsWithSize() throws {
        let xdpwg = try Command.xdpwg
        for direction in [Direction.decrypt, .encrypt] {
            let small = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: 64, packets: Self.packets)
            let large = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: 1420, packets: Self.packets)
            #expect(small.instructionsPerPacket > 500, "\(direction) 64 B: \(small.instructionsPerPacket)")
            #expect(large.instructionsPerPacket > small.instructionsPerPacket + 1000, "\(direction): \(small.instructionsPerPacket) → \(large.instructionsPerPacket)")
            // ChaCha20-Poly1305 is most of a large packet's work and grows with it.
            #expect(large.cryptoInstructionsPerPacket > small.cryptoInstructionsPerPacket)
            #expect(large.cryptoInstructionsPerPacket > large.instructionsPerPacket / 2)
            #expect(large.cryptoInstructionsPerPacket < large.instructionsPerPacket)
            #expect(large.packets == Self.packets)
            #expect(!large.hotFunctions.isEmpty)
        }
    }

    @Test("only the batch is counted: the per-packet figure does not depend on the batch size")
    func onlyTheBatch() throws {
        // Decrypt's set-up (fixture, checks) grows with the packet count: if any of it leaked
        // into the count, the per-packet figure would differ between the two.
        let xdpwg = try Command.xdpwg
        let a = try CallgrindProbe.measure(executable: xdpwg, direction: .decrypt, innerSize: 64, packets: 100)
        let b = try CallgrindProbe.measure(executable: xdpwg, direction: .decrypt, innerSize: 64, packets: 400)
        #expect(abs(a.instructionsPerPacket - b.instructionsPerPacket) < 0.01 * b.instructionsPerPacket,
                "\(a.instructionsPerPacket) vs \(b.instructionsPerPacket)")
        #expect(a.mallocsPerPacket == b.mallocsPerPacket)
    }

    @Test("the pipeline allocates nothing per packet; the canary's one allocation and retain/release are seen",
          arguments: [Direction.encrypt, .decrypt])
    func allocations(direction: Direction) throws {
        let xdpwg = try Command.xdpwg
        let plain = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: 64, packets: Self.packets)
        let canary = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: 64,
                                                packets: Self.packets, allocatingCanary: true)
        switch direction {
        case .encrypt:
            #expect(plain.mallocsPerPacket == 0, "allocating: \(plain.allocatingFunctions)")
        default:
            // Unoptimised (debug) code boxes the variable OuterFrame.endpointKey's nested `mix`
            // captures: one allocation a packet there and nowhere else (a release build has
            // none; Benchmarks/results show its counts). Anything more is a new allocation.
            #expect(plain.mallocsPerPacket <= 1, "allocating: \(plain.allocatingFunctions)")
            #expect(plain.allocatingFunctions.allSatisfy { $0.contains("endpointKey") }, "\(plain.allocatingFunctions)")
        }
        #expect(canary.mallocsPerPacket - plain.mallocsPerPacket == 1)
        #expect(canary.retainsPerPacket - plain.retainsPerPacket >= 1)
        #expect(canary.releasesPerPacket - plain.releasesPerPacket >= 1)
        // The canary's allocation comes from a call site the pipeline does not have (in a debug
        // build the stdlib's UnsafeMutableRawPointer.allocate, in a release build the canary).
        #expect(!Set(canary.allocatingFunctions).subtracting(plain.allocatingFunctions).isEmpty,
                "\(canary.allocatingFunctions)")
    }

    /// The hot path's promise, on the build that runs in production: no allocation, retain or
    /// release per packet, either direction, with and without the cipher. CI (which sets
    /// XDPWG_REQUIRE_PRIVILEGED) must have the release build; elsewhere it runs when one exists.
    @Test("a release build allocates, retains and releases nothing per packet",
          .enabled(if: Command.releaseXdpwg != nil || ProcessInfo.processInfo.environment["XDPWG_REQUIRE_PRIVILEGED"] == "1"),
          arguments: [Direction.decrypt, .encrypt], [false, true])
    func releaseAllocatesNothing(direction: Direction, cryptoOff: Bool) throws {
        let xdpwg = try #require(Command.releaseXdpwg, "no release build of xdpwg: run `swift build -c release` (scripts/test.sh does)")
        for size in [64, 1420] {
            let count = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: size,
                                                   packets: Self.packets, cryptoOff: cryptoOff)
            let name = "\(direction) \(size) B\(cryptoOff ? " crypto off" : "")"
            #expect(count.mallocsPerPacket == 0, "\(name): allocating \(count.allocatingFunctions)")
            #expect(count.retainsPerPacket == 0, "\(name)")
            #expect(count.releasesPerPacket == 0, "\(name)")
            #expect(count.cryptoOff == cryptoOff)
            // Crypto off, the cipher's instructions are gone and the rest is the pipeline's.
            if cryptoOff { #expect(count.cryptoInstructionsPerPacket == 0, "\(name)") }
        }
        // The canary still shows up in the release build: the counting counts.
        let canary = try CallgrindProbe.measure(executable: xdpwg, direction: direction, innerSize: 64,
                                                packets: Self.packets, allocatingCanary: true, cryptoOff: cryptoOff)
        #expect(canary.mallocsPerPacket == 1)
    }

    @Test("what cannot be measured says why")
    func errors() throws {
        let both = #expect(throws: ProbeError.self) {
            try CallgrindProbe.measure(executable: "/bin/true", direction: .both, innerSize: 64, packets: 10)
        }
        #expect(both?.description.contains("decrypt and encrypt separately") == true)
        let missing = #expect(throws: ProbeError.self) {
            try CallgrindProbe.measure(executable: "/nonexistent/xdpwg", direction: .decrypt, innerSize: 64, packets: 10)
        }
        #expect(missing?.description.contains("No such file or directory") == true)
        // A probe that refuses its input: its reason comes through.
        let noBatch = #expect(throws: ProbeError.self) {
            try CallgrindProbe.measure(executable: try Command.xdpwg, direction: .decrypt, innerSize: 100, packets: 10)
        }
        #expect(noBatch?.description.contains("would be padded") == true, "\(String(describing: noBatch))")
    }
}
