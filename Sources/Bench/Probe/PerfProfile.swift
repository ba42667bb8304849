// Where a worker core's time goes, from `perf record -e cpu-clock` samples: the device's own
// code, the AEAD library, the Swift runtime, the kernel (with its hottest symbols), libc,
// other, and idle. A pure parser of `perf report`'s text and a classifier; `PerfSampler`
// runs perf.
//
// The report `PerfSampler` asks for (`PerfReport.arguments`): one line per (command, object,
// symbol) with its sample count, columns separated by "|" (perf replaces any "|" inside a
// field with "."), so thread names and C++ symbols with spaces split cleanly:
//
//   # Total Lost Samples: 0
//   # Overhead|     Samples|Command        |Shared Object       |Symbol
//    3.04%  | 122        |openssl        |libcrypto.so.3      |[.] EVP_EncryptUpdate
//    0.55%  | 22         |openssl        |[kernel.kallsyms]   |[k] finish_task_switch.isra.0
//
// "[k]" marks a sample taken in kernel mode, "[.]" in user mode: that decides what is the
// kernel even where perf could not name the object ("[unknown]").

import Foundation

/// The rows of a `perf report` (sorted by command, object, symbol; sample counts).
public struct PerfReport: Sendable, Equatable {
    public struct Row: Sendable, Equatable {
        public var samples: Int
        /// The thread's name when sampled (15 characters at most: the kernel's comm).
        public var command: String
        /// The object the sampled address is in, as perf names it: a file's base name,
        /// "[kernel.kallsyms]", "[unknown]", "[vdso]", ...
        public var object: String
        /// The symbol, or the address in hex where the object has no symbol for it.
        public var symbol: String
        /// Sampled in kernel mode ("[k]").
        public var inKernel: Bool

        public init(samples: Int, command: String, object: String, symbol: String, inKernel: Bool) {
            self.samples = samples
            self.command = command
            self.object = object
            self.symbol = symbol
            self.inKernel = inKernel
        }
    }

    public var rows: [Row]
    /// Samples perf could not write in time (its ring buffer was full): not in `rows`.
    public var lostSamples: Int

    public init(rows: [Row] = [], lostSamples: Int = 0) {
        self.rows = rows
        self.lostSamples = lostSamples
    }

    /// The `perf report` arguments (after `perf report -i <file>`) whose output `parse` reads.
    public static let arguments = ["--stdio", "--no-children", "--sort", "comm,dso,sym", "-g", "none",
                                   "--percent-limit", "0", "--show-nr-samples", "--field-separator", "|"]

    /// Why a text is not a report this parser understands (line numbers from 1).
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let line: Int
        public let reason: String
        public var description: String { "perf report output, line \(line): \(reason)" }
    }

    public static func parse(_ text: String) throws(ParseError) -> PerfReport {
        var report = PerfReport()
        // Column positions, from the header line (perf decides the order; do not assume it).
        var columns: (samples: Int, command: Int, object: Int, symbol: Int)?
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.last == "\r" ? rawLine.dropLast() : rawLine
            if line.hasPrefix("#") {
                let comment = line.dropFirst().trimmingCharacters(in: .whitespaces)
                if comment.hasPrefix("Total Lost Samples:") {
                    report.lostSamples = Int(comment.dropFirst("Total Lost Samples:".count)
                        .trimmingCharacters(in: .whitespaces)) ?? 0
                } else if comment.hasPrefix("Overhead"), comment.contains("|") {
                    let names = comment.split(separator: "|", omittingEmptySubsequences: false)
                        .map { $0.trimmingCharacters(in: .whitespaces) }
                    guard let s = names.firstIndex(of: "Samples"), let c = names.firstIndex(of: "Command"),
                          let o = names.firstIndex(of: "Shared Object"), let y = names.firstIndex(of: "Symbol") else {
                        throw ParseError(line: lineNumber, reason: "the header \"\(comment.prefix(120))\" lacks one of "
                                         + "Samples, Command, Shared Object, Symbol")
                    }
                    columns = (s, c, o, y)
                }
                continue
            }
            guard line.contains("|") else { continue }     // blank lines, perf's tips and warnings
            guard let columns else {
                throw ParseError(line: lineNumber, reason: "a row before the column header")
            }
            let fields = line.split(separator: "|", omittingEmptySubsequences: false)
            guard fields.count > max(columns.samples, columns.command, columns.object, columns.symbol) else {
                throw ParseError(line: lineNumber, reason: "\(fields.count) columns in \"\(line.prefix(120))\"")
            }
            let count = fields[columns.samples].trimmingCharacters(in: .whitespaces)
            guard let samples = Int(count), samples >= 0 else {
                throw ParseError(line: lineNumber, reason: "sample count \"\(count)\" is not a number")
            }
            // Every column but the symbol is padded on the right; so is the symbol, with
            // "[k] " or "[.] " before it.
            var symbol = fields[columns.symbol].trimmingCharacters(in: .whitespaces)
            var inKernel = false
            if symbol.count >= 3, symbol.first == "[", symbol.dropFirst(2).first == "]" {
                inKernel = symbol.dropFirst().first == "k"
                symbol = symbol.dropFirst(3).trimmingCharacters(in: .whitespaces)
            }
            report.rows.append(Row(samples: samples,
                                   command: fields[columns.command].trimmingCharacters(in: .whitespaces),
                                   object: fields[columns.object].trimmingCharacters(in: .whitespaces),
                                   symbol: symbol, inKernel: inKernel))
        }
        if columns == nil {
            // perf report prints only its banner for a file without samples (and says so on
            // standard error); anything else without a header is not its output.
            guard !text.contains("|") else { throw ParseError(line: lineNumber, reason: "no column header") }
        }
        return report
    }
}

/// Which bucket a sample belongs to.
public struct PerfClassifier: Sendable {
    public enum Bucket: String, Codable, Sendable, CaseIterable {
        /// The device under test's own executable (xdpwg, wireguard-go).
        case device
        /// The cipher: libsodium, libcrypto, ipsec-mb (a shared object, or linked into the device).
        case aead
        /// libswiftCore, Foundation, Dispatch: what Swift code costs outside its own binary
        /// (reference counting, allocation, metadata).
        case swiftRuntime
        case kernel
        /// glibc: libc, libm, the dynamic loader.
        case libc
        case other
        /// The kernel's idle loop: not work.
        case idle
    }

    /// Base names of the device's executables (a sample's object is its file's base name).
    public var deviceObjects: Set<String>
    /// Symbols of a statically linked AEAD library (`PerfSampler.archiveSymbols`): samples in
    /// a device object with one of these names are the AEAD's. ipsec-mb's assembly has many
    /// labels with generic names (`skip_lane_1`, `exit_loop_poly`) no pattern would catch.
    public var staticAEADSymbols: Set<String>

    public init(deviceObjects: Set<String> = ["xdpwg", "wireguard-go"], staticAEADSymbols: Set<String> = []) {
        self.deviceObjects = deviceObjects
        self.staticAEADSymbols = staticAEADSymbols
    }

    /// Where the kernel sits when its CPU has nothing to do (the sample's own function: perf
    /// report counts where each sample landed, not its callers).
    static let idleSymbols: Set<String> = [
        "do_idle", "default_idle", "default_idle_call", "cpu_idle_poll", "pv_native_safe_halt", "native_safe_halt",
        "arch_cpu_idle", "acpi_idle_do_entry", "acpi_idle_enter", "acpi_safe_halt", "intel_idle", "intel_idle_irq",
        "intel_idle_ibrs", "poll_idle", "mwait_idle", "mwait_idle_with_hints", "cpuidle_enter_state",
        "cpu_startup_entry", "start_secondary",
    ]

    static let aeadObjectPrefixes = ["libsodium", "libcrypto", "libIPSec_MB", "libipsec-mb"]

    public func bucket(of row: PerfReport.Row) -> Bucket {
        let symbol = row.symbol
        // C and assembly names only: a Swift function named after the cipher ("ChaChaPoly…")
        // is the device's own wrapper, not the cipher.
        let swiftMangled = symbol.hasPrefix("$s") || symbol.hasPrefix("_$s")
        let lowered = symbol.lowercased()
        if !swiftMangled, lowered.contains("chacha") || lowered.contains("poly1305") { return .aead }
        if isKernel(row) {
            return PerfClassifier.idleSymbols.contains(PerfClassifier.withoutCloneSuffix(symbol)) ? .idle : .kernel
        }
        let object = row.object
        if PerfClassifier.aeadObjectPrefixes.contains(where: { object.hasPrefix($0) }) { return .aead }
        if deviceObjects.contains(object) {
            if !swiftMangled, staticAEADSymbols.contains(symbol) || PerfClassifier.looksLikeIPSecMB(symbol) { return .aead }
            return .device
        }
        if object.hasPrefix("libswift") || object.hasPrefix("libFoundation") || object.hasPrefix("lib_Foundation")
            || object.hasPrefix("libdispatch") || object.hasPrefix("libBlocksRuntime") {
            return .swiftRuntime
        }
        if object.hasPrefix("libc.so") || object.hasPrefix("libc-") || object.hasPrefix("libm.so")
            || object.hasPrefix("libpthread") || object.hasPrefix("ld-linux") {
            return .libc
        }
        return .other
    }

    /// Kernel mode, or a kernel object ("[kernel.kallsyms]", a module such as "[wireguard]"),
    /// or an address perf could not place that lies in the kernel's half of the address space.
    func isKernel(_ row: PerfReport.Row) -> Bool {
        if row.inKernel || row.object.hasPrefix("[kernel") { return true }
        if row.object == "[unknown]", row.symbol.hasPrefix("0x"),
           let address = UInt64(row.symbol.dropFirst(2), radix: 16) {
            return address >= 0xffff_8000_0000_0000
        }
        return false
    }

    /// ipsec-mb's names as linked into an executable: its API (`imb_`), its per-architecture
    /// entry points (`submit_job_avx2`, `aes_gcm_enc_128_sse`, `..._avx512_t2`) and NASM's
    /// macro-local labels (`..@129.loop`). Swift never produces these.
    static func looksLikeIPSecMB(_ symbol: String) -> Bool {
        if symbol.hasPrefix("imb_") || symbol.hasPrefix("..@") { return true }
        let name = withoutCloneSuffix(symbol)
        let architectures = ["_sse", "_avx", "_avx2", "_avx512", "_sse_no_aesni", "_avx_gen2", "_avx_gen4"]
        var base = Substring(name)
        // ..._t1, ..._t2: ipsec-mb's generations of one architecture.
        if let underscore = base.lastIndex(of: "_"), base[base.index(after: underscore)...].count == 2,
           base[base.index(after: underscore)...].first == "t", base.last?.isNumber == true {
            base = base[..<underscore]
        }
        return architectures.contains { base.hasSuffix($0) }
    }

    /// "finish_task_switch.isra.0" → "finish_task_switch": GCC's clones are the same function.
    static func withoutCloneSuffix(_ symbol: String) -> String {
        guard let dot = symbol.firstIndex(of: "."), dot != symbol.startIndex else { return symbol }
        return String(symbol[..<dot])
    }
}

/// Where the sampled CPUs' time went, for the perf lab's report: shares of the busy (not idle)
/// samples per bucket, the idle share of all samples, and the hottest kernel and user symbols.
public struct PerfProfile: Codable, Sendable, Equatable {
    public struct BucketShare: Codable, Sendable, Equatable {
        public var bucket: PerfClassifier.Bucket
        public var samples: Int
        /// Percent of busy samples.
        public var percent: Double
    }

    public struct SymbolShare: Codable, Sendable, Equatable {
        public var symbol: String
        public var object: String
        public var samples: Int
        /// Percent of busy samples.
        public var percent: Double
    }

    /// The CPUs sampled, as perf's -C list ("1", "1-2"); empty when not known.
    public var cpus: String
    /// The sampling window in seconds (0 when not known).
    public var seconds: Double
    /// The threads counted (their names); empty: every sample on those CPUs, whoever's
    /// context (softirqs and other threads included).
    public var commands: [String]
    /// What the device bucket is called in the summary ("xdpwg", "wireguard-go").
    public var deviceName: String
    /// Every sample counted, idle included.
    public var samples: Int
    public var idleSamples: Int
    public var lostSamples: Int
    /// Every bucket but idle, in a fixed order (zeros included).
    public var buckets: [BucketShare]
    /// Percent of all samples.
    public var idlePercent: Double
    public var topKernelSymbols: [SymbolShare]
    /// User-mode symbols, whatever the object; addresses without a symbol count together
    /// per object as "(no symbol)".
    public var topUserSymbols: [SymbolShare]

    public var busySamples: Int { samples - idleSamples }

    public func percent(_ bucket: PerfClassifier.Bucket) -> Double {
        bucket == .idle ? idlePercent : buckets.first { $0.bucket == bucket }?.percent ?? 0
    }

    /// The name an unnamed address of `object` is listed under.
    public static let noSymbol = "(no symbol)"

    /// Classifies `report`'s rows (those of `commands` only, when given) and keeps the `top`
    /// hottest kernel and user symbols.
    public init(report: PerfReport, classifier: PerfClassifier = PerfClassifier(), commands: Set<String> = [],
                top: Int = 5, cpus: String = "", seconds: Double = 0) {
        let rows = commands.isEmpty ? report.rows : report.rows.filter { commands.contains($0.command) }
        var counts: [PerfClassifier.Bucket: Int] = [:]
        var kernelSymbols: [String: Int] = [:]
        var userSymbols: [SymbolKey: Int] = [:]
        var deviceObjectSamples: [String: Int] = [:]
        for row in rows {
            let bucket = classifier.bucket(of: row)
            counts[bucket, default: 0] += row.samples
            switch bucket {
            case .idle: continue
            case .kernel:
                kernelSymbols[row.symbol, default: 0] += row.samples
            default:
                if bucket == .device { deviceObjectSamples[row.object, default: 0] += row.samples }
                if classifier.isKernel(row) {
                    // A cipher inside the kernel (its own chacha20): listed with the kernel's.
                    kernelSymbols[row.symbol, default: 0] += row.samples
                } else {
                    let named = row.symbol.hasPrefix("0x") || row.symbol.isEmpty ? PerfProfile.noSymbol : row.symbol
                    userSymbols[SymbolKey(symbol: named, object: row.object), default: 0] += row.samples
                }
            }
        }
        let total = counts.values.reduce(0, +)
        let idle = counts[.idle] ?? 0
        let busy = total - idle
        func percent(_ n: Int, of whole: Int) -> Double {
            whole == 0 ? 0 : (Double(n) * 1000 / Double(whole)).rounded() / 10
        }
        func hottest<Key>(_ table: [Key: Int], name: (Key) -> (String, String)) -> [SymbolShare] {
            table.map { (name($0.key), $0.value) }
                .sorted { ($0.1, $1.0.0, $1.0.1) > ($1.1, $0.0.0, $0.0.1) }
                .prefix(max(0, top))
                .map { SymbolShare(symbol: $0.0.0, object: $0.0.1, samples: $0.1, percent: percent($0.1, of: busy)) }
        }
        self.cpus = cpus
        self.seconds = seconds
        self.commands = commands.sorted()
        deviceName = deviceObjectSamples.max { ($0.value, $1.key) < ($1.value, $0.key) }?.key
            ?? classifier.deviceObjects.sorted().first ?? "device"
        samples = total
        idleSamples = idle
        lostSamples = report.lostSamples
        buckets = PerfClassifier.Bucket.allCases.filter { $0 != .idle }.map {
            BucketShare(bucket: $0, samples: counts[$0] ?? 0, percent: percent(counts[$0] ?? 0, of: busy))
        }
        idlePercent = percent(idle, of: total)
        topKernelSymbols = hottest(kernelSymbols) { ($0, "[kernel.kallsyms]") }
        topUserSymbols = hottest(userSymbols) { ($0.symbol, $0.object) }
    }

    private struct SymbolKey: Hashable {
        var symbol: String
        var object: String
    }

    /// One line for the Markdown report, the biggest first, the kernel with its hottest
    /// symbols: "AEAD 61%, kernel 27% (__xsk_generic_xmit 6%, veth_xmit 4%, memcpy_orig 3%),
    /// xdpwg 9%, libc 2%, other 1%; idle 3%". Buckets without samples are left out.
    public var summary: String {
        guard samples > 0 else { return "no samples" }
        guard busySamples > 0 else { return "idle 100% (\(samples) samples)" }
        // From the counts, not the rounded percents: rounding twice turns 1.46% into 2%.
        func share(_ n: Int, of whole: Int) -> String { PerfProfile.format(n, of: whole) }
        let parts = buckets.filter { $0.samples > 0 }.sorted { ($0.samples, $1.bucket.order) > ($1.samples, $0.bucket.order) }
            .map { bucket -> String in
                var text = "\(label(bucket.bucket)) \(share(bucket.samples, of: busySamples))"
                if bucket.bucket == .kernel, !topKernelSymbols.isEmpty {
                    text += " (" + topKernelSymbols.prefix(3).map { "\($0.symbol) \(share($0.samples, of: busySamples))" }
                        .joined(separator: ", ") + ")"
                }
                return text
            }
        return parts.joined(separator: ", ") + "; idle \(share(idleSamples, of: samples))"
    }

    private func label(_ bucket: PerfClassifier.Bucket) -> String {
        switch bucket {
        case .device: deviceName
        case .aead: "AEAD"
        case .swiftRuntime: "Swift runtime"
        case .kernel: "kernel"
        case .libc: "libc"
        case .other: "other"
        case .idle: "idle"
        }
    }

    /// `part` of `whole` in whole percents; "<1%" for a share that is there but rounds to nothing.
    static func format(_ part: Int, of whole: Int) -> String {
        guard whole > 0 else { return "0%" }
        let percent = Double(part) * 100 / Double(whole)
        return part > 0 && percent < 0.5 ? "<1%" : "\(Int(percent.rounded()))%"
    }

    /// The same profile with Swift's mangled user symbols made readable (when swift-demangle
    /// is installed; otherwise unchanged).
    public func demangled() -> PerfProfile {
        var copy = self
        let names = CallgrindProbe.demangled(topUserSymbols.map(\.symbol))
        for (index, name) in names.enumerated() where index < copy.topUserSymbols.count {
            copy.topUserSymbols[index].symbol = name
        }
        return copy
    }
}

private extension PerfClassifier.Bucket {
    /// Ties in the summary keep the declaration order.
    var order: Int { PerfClassifier.Bucket.allCases.firstIndex(of: self) ?? 0 }
}
