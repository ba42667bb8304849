import Foundation
import Testing
import Engine
import TestSupport
@testable import Bench

/// A real `perf report` (PerfReport.arguments) of CPU 1 of this 2-CPU VM for 2 s, trimmed:
/// `openssl speed -evp chacha20-poly1305` pinned there, sharing the core with another team's
/// packet forwarder (xdpwg-refwd). libcrypto is stripped: most of its samples are bare
/// addresses. Samples: libcrypto 641 (EVP_EncryptUpdate 122), openssl 41, xdpwg-refwd 1913
/// (main 1144, refill 615, outstanding 154), kernel 78, ld-linux 1: 2674 in all.
let perfReportFixture = """
    # To display the perf.data header info, please use --header/--header-only options.
    #
    #
    # Total Lost Samples: 0
    #
    # Samples: 4K of event 'cpu-clock'
    # Event count (approx.): 2007500000
    #
    # Overhead|     Samples|Command        |Shared Object       |Symbol
     3.19%  | 128        |openssl        |libcrypto.so.3      |[.] 0x00000000002fe77f
     3.11%  | 125        |openssl        |libcrypto.so.3      |[.] 0x00000000002fe76f
     3.04%  | 122        |openssl        |libcrypto.so.3      |[.] EVP_EncryptUpdate
     1.05%  | 42         |openssl        |libcrypto.so.3      |[.] 0x00000000002feeee
     0.87%  | 35         |openssl        |libcrypto.so.3      |[.] 0x00000000002fe7f5
     0.85%  | 34         |openssl        |libcrypto.so.3      |[.] 0x00000000002fe785
     0.77%  | 31         |openssl        |libcrypto.so.3      |[.] 0x00000000002fe5a0
     0.65%  | 26         |openssl        |libcrypto.so.3      |[.] 0x0000000000136052
     0.65%  | 26         |openssl        |libcrypto.so.3      |[.] 0x00000000002fe777
     0.62%  | 25         |openssl        |libcrypto.so.3      |[.] 0x0000000000135ff4
     0.60%  | 24         |openssl        |libcrypto.so.3      |[.] 0x0000000000136022
     0.57%  | 23         |openssl        |libcrypto.so.3      |[.] 0x0000000000136045
     0.55%  | 22         |openssl        |openssl             |[.] 0x00000000000861c6
     0.22%  | 9          |openssl        |openssl             |[.] 0x00000000000861f0
     0.15%  | 6          |openssl        |openssl             |[.] 0x00000000000861c2
     0.10%  | 4          |openssl        |openssl             |[.] 0x00000000000861ce
     28.49% | 1144       |xdpwg-refwd    |xdpwg-refwd         |[.] main
     15.32% | 615        |xdpwg-refwd    |xdpwg-refwd         |[.] refill
     3.84%  | 154        |xdpwg-refwd    |xdpwg-refwd         |[.] outstanding
     0.55%  | 22         |openssl        |[kernel.kallsyms]   |[k] finish_task_switch.isra.0
     0.45%  | 18         |xdpwg-refwd    |[kernel.kallsyms]   |[k] finish_task_switch.isra.0
     0.22%  | 9          |xdpwg-refwd    |[kernel.kallsyms]   |[k] __rseq_handle_notify_resume
     0.17%  | 7          |openssl        |[kernel.kallsyms]   |[k] __get_user_8
     0.12%  | 5          |xdpwg-refwd    |[kernel.kallsyms]   |[k] irqentry_exit_to_user_mode
     0.10%  | 4          |openssl        |[kernel.kallsyms]   |[k] irqentry_exit_to_user_mode
     0.05%  | 2          |head           |[kernel.kallsyms]   |[k] smp_call_function_many_cond
     0.05%  | 2          |openssl        |[kernel.kallsyms]   |[k] __put_user_8
     0.05%  | 2          |xdpwg-refwd    |[kernel.kallsyms]   |[k] __get_user_8
     0.05%  | 2          |xdpwg-refwd    |[kernel.kallsyms]   |[k] _raw_spin_unlock_irq
     0.05%  | 2          |xdpwg-refwd    |[kernel.kallsyms]   |[k] _raw_spin_unlock_irqrestore
     0.02%  | 1          |:20502         |[kernel.kallsyms]   |[k] exc_page_fault
     0.02%  | 1          |:20502         |[kernel.kallsyms]   |[k] unmap_page_range
     0.02%  | 1          |head           |[kernel.kallsyms]   |[k] __pi_memcpy
     0.02%  | 1          |head           |ld-linux-x86-64.so.2|[.] handle_amd
    """

/// Hand-made rows in perf report's format: the whole header, then `rows` ("samples|command|object|[x] symbol").
func perfReportText(_ rows: [String], lost: Int = 0) -> String {
    """
    # To display the perf.data header info, please use --header/--header-only options.
    #
    # Total Lost Samples: \(lost)
    #
    # Samples: 1K of event 'cpu-clock'
    #
    # Overhead|     Samples|Command        |Shared Object       |Symbol
    """ + "\n" + rows.map { " 1.00%  | " + $0 }.joined(separator: "\n") + "\n#\n# (Tip: perf report --tui)\n#\n"
}

@Suite("perf profile")
struct PerfProfileTests {
    @Test("A real report: rows, counts and the kernel/user marker as perf printed them")
    func parsesARealReport() throws {
        let report = try PerfReport.parse(perfReportFixture)
        #expect(report.rows.count == 34)
        #expect(report.lostSamples == 0)
        #expect(report.rows.map(\.samples).reduce(0, +) == 2674)
        #expect(report.rows.first == PerfReport.Row(samples: 128, command: "openssl", object: "libcrypto.so.3",
                                                     symbol: "0x00000000002fe77f", inKernel: false))
        #expect(report.rows.contains(PerfReport.Row(samples: 22, command: "openssl", object: "[kernel.kallsyms]",
                                                     symbol: "finish_task_switch.isra.0", inKernel: true)))
        #expect(report.rows.contains { $0.command == ":20502" && $0.symbol == "exc_page_fault" })
    }

    @Test("A real report, the whole CPU: shares of busy samples, the kernel's and user's hottest symbols")
    func classifiesTheWholeCPU() throws {
        let report = try PerfReport.parse(perfReportFixture)
        let profile = PerfProfile(report: report, classifier: PerfClassifier(deviceObjects: ["openssl"]), top: 5)
        #expect(profile.samples == 2674)
        #expect(profile.idleSamples == 0)
        #expect(profile.busySamples == 2674)
        func samples(_ bucket: PerfClassifier.Bucket) -> Int? { profile.buckets.first { $0.bucket == bucket }?.samples }
        #expect(samples(.aead) == 641)
        #expect(samples(.device) == 41)
        #expect(samples(.other) == 1913)
        #expect(samples(.kernel) == 78)
        #expect(samples(.libc) == 1)
        #expect(samples(.swiftRuntime) == 0)
        #expect(profile.buckets.map(\.bucket) == [.device, .aead, .swiftRuntime, .kernel, .libc, .other])
        // 641 / 2674, 1913 / 2674, 78 / 2674, to a tenth of a percent.
        #expect(profile.percent(.aead) == 24.0)
        #expect(profile.percent(.other) == 71.5)
        #expect(profile.percent(.kernel) == 2.9)
        #expect(profile.percent(.idle) == 0)
        #expect(profile.deviceName == "openssl")
        // Same symbol in two threads' context: one line (22 + 18); ties by name.
        #expect(profile.topKernelSymbols.map(\.symbol) == ["finish_task_switch.isra.0", "__get_user_8",
                                                            "__rseq_handle_notify_resume", "irqentry_exit_to_user_mode",
                                                            "__put_user_8"])
        #expect(profile.topKernelSymbols.map(\.samples) == [40, 9, 9, 9, 2])
        #expect(profile.topKernelSymbols[0].percent == 1.5)
        // libcrypto's bare addresses together: 641 - 122.
        #expect(profile.topUserSymbols.map { "\($0.symbol) \($0.object) \($0.samples)" } == [
            "main xdpwg-refwd 1144", "refill xdpwg-refwd 615", "\(PerfProfile.noSymbol) libcrypto.so.3 519",
            "outstanding xdpwg-refwd 154", "EVP_EncryptUpdate libcrypto.so.3 122",
        ])
        #expect(profile.summary == "other 72%, AEAD 24%, kernel 3% (finish_task_switch.isra.0 1%, __get_user_8 <1%, "
                + "__rseq_handle_notify_resume <1%), openssl 2%, libc <1%; idle 0%")
    }

    @Test("Samples of chosen threads only: the same report, openssl's thread")
    func filtersByCommand() throws {
        let report = try PerfReport.parse(perfReportFixture)
        let profile = PerfProfile(report: report, classifier: PerfClassifier(deviceObjects: ["openssl"]),
                                  commands: ["openssl"])
        // libcrypto 641, openssl 41, the kernel in openssl's context 22 + 7 + 4 + 2.
        #expect(profile.samples == 717)
        #expect(profile.commands == ["openssl"])
        #expect(profile.buckets.first { $0.bucket == .kernel }?.samples == 35)
        #expect(profile.buckets.first { $0.bucket == .other }?.samples == 0)
        #expect(profile.percent(.aead) == 89.4)
    }

    @Test("ipsec-mb linked into the executable: AEAD by its names; Swift names never; libc's _avx code stays libc")
    func classifiesStaticIPSecMB() throws {
        let text = perfReportText([
            "100        |xdpwg-w0       |xdpwg               |[.] aead_chacha20_poly1305_avx2",
            "50         |xdpwg-w0       |xdpwg               |[.] submit_job_avx512_t2",
            "10         |xdpwg-w0       |xdpwg               |[.] ..@129._poly1305_blocks_loop",
            "5          |xdpwg-w0       |xdpwg               |[.] imb_get_version",
            "20         |xdpwg-w0       |xdpwg               |[.] exit_loop_poly",
            "7          |xdpwg-w0       |xdpwg               |[.] skip_lane_1",
            "30         |xdpwg-w0       |xdpwg               |[.] $s6Engine15PacketProcessorV7processyyF",
            "8          |xdpwg-w0       |xdpwg               |[.] $s9WireGuard16ChaChaPolyCipherV4sealyyF",
            "12         |xdpwg-w0       |libsodium.so.23.3.0 |[.] crypto_onetimeauth_poly1305_update",
            "3          |xdpwg-w0       |libsodium.so.23.3.0 |[.] sodium_memzero",
            "9          |xdpwg-w0       |libswiftCore.so     |[.] swift_retain",
            "4          |xdpwg-w0       |libc.so.6           |[.] __memmove_avx_unaligned_erms",
            "6          |xdpwg-w0       |[unknown]           |[k] 0xffffffff81234567",
            "2          |xdpwg-w0       |[unknown]           |[.] 0xffffffff8100abcd",
            "1          |xdpwg-w0       |[unknown]           |[.] 0x00007f7c3d2c521d",
            "3          |xdpwg-w0       |libfoo.so.1         |[.] foo",
            "40         |xdpwg-w0       |[kernel.kallsyms]   |[k] __xsk_generic_xmit",
        ])
        let classifier = PerfClassifier(deviceObjects: ["xdpwg"], staticAEADSymbols: ["exit_loop_poly", "skip_lane_1"])
        let profile = PerfProfile(report: try PerfReport.parse(text), classifier: classifier, commands: ["xdpwg-w0"])
        func samples(_ bucket: PerfClassifier.Bucket) -> Int? { profile.buckets.first { $0.bucket == bucket }?.samples }
        #expect(samples(.aead) == 100 + 50 + 10 + 5 + 20 + 7 + 12 + 3)
        #expect(samples(.device) == 30 + 8)
        #expect(samples(.swiftRuntime) == 9)
        #expect(samples(.libc) == 4)
        #expect(samples(.kernel) == 6 + 2 + 40)
        #expect(samples(.other) == 1 + 3)
        #expect(profile.samples == 310)
        #expect(profile.deviceName == "xdpwg")
        // Without the archive's names, its generically named labels are the device's.
        let unaware = PerfProfile(report: try PerfReport.parse(text), classifier: PerfClassifier())
        #expect(unaware.buckets.first { $0.bucket == .device }?.samples == 30 + 8 + 20 + 7)
    }

    @Test("A static archive's code symbols, for the classifier; none for a missing archive")
    func readsArchiveSymbols() {
        #expect(PerfSampler.archiveSymbols("/nonexistent/libIPSec_MB.a").isEmpty)
        // Where libipsec-mb-dev puts it on Debian (amd64); checked only where it is installed.
        let archive = "/usr/lib/x86_64-linux-gnu/libIPSec_MB.a"
        if FileManager.default.fileExists(atPath: archive) {
            let symbols = PerfSampler.archiveSymbols(archive)
            #expect(symbols.contains("aead_chacha20_poly1305_avx2"))
            #expect(symbols.contains("exit_loop_poly"))
        }
    }

    @Test("Idle: reported apart, busy shares computed over the rest; softirq work in the idle task is work")
    func separatesIdle() throws {
        let text = perfReportText([
            "300        |swapper        |[kernel.kallsyms]   |[k] pv_native_safe_halt",
            "50         |swapper        |[kernel.kallsyms]   |[k] default_idle_call",
            "50         |swapper        |[kernel.kallsyms]   |[k] veth_xmit",
            "25         |swapper        |[kernel.kallsyms]   |[k] acpi_idle_do_entry.isra.0",
            "75         |xdpwg-w0       |xdpwg               |[.] $s6Engine6WorkerC3runyyF",
        ])
        let profile = PerfProfile(report: try PerfReport.parse(text))
        #expect(profile.samples == 500)
        #expect(profile.idleSamples == 375)
        #expect(profile.idlePercent == 75)
        #expect(profile.percent(.kernel) == 40)
        #expect(profile.percent(.device) == 60)
        #expect(profile.topKernelSymbols.map(\.symbol) == ["veth_xmit"])
        #expect(profile.summary == "xdpwg 60%, kernel 40% (veth_xmit 40%); idle 75%")

        let idleOnly = PerfProfile(report: try PerfReport.parse(perfReportText([
            "10         |swapper        |[kernel.kallsyms]   |[k] pv_native_safe_halt",
        ])))
        #expect(idleOnly.busySamples == 0)
        #expect(idleOnly.buckets.allSatisfy { $0.percent == 0 })
        #expect(idleOnly.summary == "idle 100% (10 samples)")
    }

    @Test("Nothing sampled: an empty text, perf's banner alone, a header without rows")
    func emptyReports() throws {
        for text in ["", "# To display the perf.data header info, please use --header/--header-only options.\n#\n",
                     perfReportText([], lost: 3)] {
            let report = try PerfReport.parse(text)
            #expect(report.rows.isEmpty)
            let profile = PerfProfile(report: report)
            #expect(profile.samples == 0)
            #expect(profile.summary == "no samples")
            #expect(profile.topKernelSymbols.isEmpty && profile.topUserSymbols.isEmpty)
        }
        #expect(try PerfReport.parse(perfReportText([], lost: 3)).lostSamples == 3)
    }

    @Test("Odd input: rows before the header, a count that is not a number, too few columns, a header without Samples")
    func rejectsOddInput() {
        #expect(throws: PerfReport.ParseError(line: 1, reason: "a row before the column header")) {
            try PerfReport.parse(" 1.00% | 12 |xdpwg |xdpwg |[.] main\n")
        }
        #expect(throws: PerfReport.ParseError.self) { try PerfReport.parse(perfReportText(["twelve |xdpwg |xdpwg |[.] main"])) }
        #expect(throws: PerfReport.ParseError.self) { try PerfReport.parse(perfReportText(["12 |xdpwg"])) }
        #expect(throws: PerfReport.ParseError.self) {
            try PerfReport.parse("# Overhead|Command|Shared Object|Symbol\n 1.00% |xdpwg |xdpwg |[.] main\n")
        }
        // A symbol without perf's marker, odd characters, huge counts: parsed, not a crash.
        let odd = try? PerfReport.parse(perfReportText(["99999999999 |ü ä |[x] |", "0 | | |[k]"]))
        #expect(odd?.rows.count == 2)
        #expect(odd?.rows[1].inKernel == true)
        #expect(odd.map { PerfProfile(report: $0).samples } == 99999999999)
    }

    @Test("The profile goes into the JSON report and comes back the same")
    func roundTripsThroughJSON() throws {
        let profile = PerfProfile(report: try PerfReport.parse(perfReportFixture),
                                  classifier: PerfClassifier(deviceObjects: ["openssl"]), cpus: "1", seconds: 2)
        let data = try JSONEncoder().encode(profile)
        #expect(try JSONDecoder().decode(PerfProfile.self, from: data) == profile)
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains("\"bucket\":\"aead\""))
    }
}

/// perf itself, on this machine: needs root (system-wide sampling).
@Suite("perf sampler", .serialized, .enabled(if: Privileged.shouldRun))
struct PerfSamplerTests {
    /// The CPU to sample: 1 when there is one (core 0 is the generator's), else 0.
    static var cpu: Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 ? 1 : 0 }

    @Test("A thread spinning on the sampled CPU: its samples are its own code; nothing left in /tmp")
    func samplesASpinningThread() throws {
        try Privileged.require()
        let executable = try #require(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        let before = scratchDirectories()
        let sampler = try PerfSampler.start(cpus: [Self.cpu])
        let spinner = Thread {
            try? CPUTopology.pinCurrentThread(to: Self.cpu)
            CPUTopology.setCurrentThreadName("pp-spin")
            spin(seconds: 1)
        }
        spinner.start()
        usleep(1_100_000)
        let profile = try sampler.stop(classifier: PerfClassifier(deviceObjects: [URL(fileURLWithPath: executable).lastPathComponent]),
                                       commands: ["pp-spin"])
        #expect(profile.cpus == "\(Self.cpu)")
        #expect(profile.seconds > 1 && profile.seconds < 10)
        // 2000 Hz for about a second, on a core shared with others' work.
        #expect(profile.samples > 200, "\(profile.summary)")
        #expect(profile.percent(.device) > 50, "\(profile.summary)")
        #expect(scratchDirectories() == before)
    }

    @Test("A CPU that does not exist: a clear error, quickly, and nothing left behind")
    func failsClearlyOnAMissingCPU() throws {
        try Privileged.require()
        let before = scratchDirectories()
        let start = Date()
        #expect {
            _ = try PerfSampler.start(cpus: [4000])
        } throws: { error in
            (error as? PerfError)?.description.contains("perf record exited") == true
        }
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(scratchDirectories() == before)
    }

    private func scratchDirectories() -> Set<String> {
        Set(((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [])
            .filter { $0.hasPrefix("xdpwg-bench-\(getpid())-") })
    }
}

/// Busy for `seconds` in this file's own code (a few clock reads aside).
@inline(never)
private func spin(seconds: Double) {
    let end = Date().addingTimeInterval(seconds)
    var x: UInt64 = 1
    while Date() < end {
        for _ in 0..<200_000 { x = x &* 6364136223846793005 &+ 1442695040888963407 }
    }
    if x == 42 { print(x) }
}
