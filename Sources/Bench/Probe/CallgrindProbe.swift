// Instructions, allocations and reference counting per packet of the worker's per-packet
// work, counted by valgrind's callgrind on `xdpwg bench-probe`'s fixed batch. Callgrind counts
// executed instructions, which repeat run to run (this machine has no hardware counters for
// `perf stat`); they say nothing about cache misses or cycles per instruction.

import Engine
import Foundation
import Lab

#if canImport(Glibc)
import Glibc
#endif

public enum CallgrindProbe {
    /// Heap allocation entry points. An allocation made through swift_allocObject reaches
    /// malloc through swift_slowAlloc: calls between members of this family are not counted,
    /// so each allocation counts once, at the call from outside the family.
    public static let allocators: Set<String> = [
        "malloc", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign", "valloc",
        "pvalloc", "__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_memalign", "__posix_memalign",
        "_Znwm", "_Znam", "_ZnwmSt11align_val_t",
        // glibc's own steps between those and the heap (an aligned allocation goes
        // posix_memalign → _mid_memalign → malloc).
        "_mid_memalign", "_int_malloc", "_int_memalign", "_int_realloc", "tcache_init",
        "swift_allocObject", "swift_slowAlloc", "swift_allocBox", "swift_coroFrameAlloc",
    ]
    public static let retains: Set<String> = [
        "swift_retain", "swift_retain_n", "swift_nonatomic_retain", "swift_nonatomic_retain_n",
        "swift_bridgeObjectRetain", "swift_bridgeObjectRetain_n", "swift_unknownObjectRetain",
        "swift_unknownObjectRetain_n",
    ]
    public static let releases: Set<String> = [
        "swift_release", "swift_release_n", "swift_nonatomic_release", "swift_nonatomic_release_n",
        "swift_bridgeObjectRelease", "swift_bridgeObjectRelease_n", "swift_unknownObjectRelease",
        "swift_unknownObjectRelease_n",
    ]
    /// libsodium's ChaCha20-Poly1305 (IETF) entry points: their inclusive cost is the cipher's.
    public static let cryptoPrefix = "crypto_aead_chacha20poly1305_ietf_"
    /// How many of the hottest functions a count lists.
    public static let hotFunctionCount = 8

    /// The valgrind arguments `measure` uses, before the probe's command line.
    ///
    /// Callgrind dumps its counters when the measured batch is entered (`--dump-before`: all
    /// set-up, dumped and reset) and when it returns (`--dump-after`: exactly the batch).
    /// Not `--toggle-collect`: it toggles the collection of costs, but callgrind counts calls
    /// all the time, so calls made by the set-up and the warm-up through the same call sites
    /// (malloc from a helper both use) would be counted with the batch's. The two options are
    /// given differently spelt patterns matching the same functions, because callgrind keeps
    /// one setting per pattern string (the second option for an identical pattern is ignored).
    public static func valgrindOptions(outputFile: String) -> [String] {
        ["--tool=callgrind", "--dump-before=\(PipelineProbe.regionPattern)",
         "--dump-after=\(PipelineProbe.regionExitPattern)", "--callgrind-out-file=\(outputFile)"]
    }

    /// The command `measure` runs (for the report: how the figures were made). `executable`
    /// is run as a copy without debug information (see `measure`).
    public static func command(executable: String, direction: Direction, innerSize: Int, packets: Int,
                               allocatingCanary: Bool = false, cryptoOff: Bool = false,
                               outputFile: String = "callgrind.out") -> [String] {
        ["valgrind"] + valgrindOptions(outputFile: outputFile)
            + [executable, "bench-probe", "--direction", direction.rawValue, "--size", "\(innerSize)",
               "--packets", "\(packets)"]
            + (allocatingCanary ? ["--allocating-canary"] : [])
            + (cryptoOff ? ["--crypto-off"] : [])
    }

    /// Runs `executable bench-probe` under callgrind and returns the measured batch's counts per
    /// packet. `allocatingCanary` runs the probe's self-check (one allocation and one
    /// retain/release pair added per packet). Build `executable` in release mode
    /// (`swift build -c release`) for figures worth reporting; a debug build counts its
    /// unoptimised code.
    ///
    /// Valgrind 3.19 (Debian 12) cannot read the DWARF 5 debug information the Swift 6
    /// toolchain writes ("Possibly corrupted debuginfo file ... Giving up"), so the probe runs
    /// a copy made by `objcopy --strip-debug`: callgrind needs only the symbol table, which
    /// the copy keeps.
    public static func measure(executable: String, direction: Direction, innerSize: Int, packets: Int,
                               allocatingCanary: Bool = false, cryptoOff: Bool = false) throws -> InstructionCount {
        guard direction != .both else {
            throw ProbeError("callgrind probe: measure decrypt and encrypt separately (the probe runs one direction)")
        }
        guard packets >= 1 else { throw ProbeError("callgrind probe: packets \(packets) must be at least 1") }
        guard let valgrind = Subprocess.which("valgrind") else {
            throw ToolError.notFound(program: "valgrind", package: "valgrind")
        }
        guard let objcopy = Subprocess.which("objcopy") else {
            throw ToolError.notFound(program: "objcopy", package: "binutils")
        }
        guard access(executable, X_OK) == 0 else {
            throw ProbeError("callgrind probe: \(executable) is not an executable file: \(Errno.text(errno))")
        }
        let scratch = try ScratchDirectory()
        let stripped = scratch.path + "/xdpwg"
        let copy = try Command.runAllowingFailure([objcopy, "--strip-debug", executable, stripped])
        guard copy.status == 0 else {
            throw ProbeError("`objcopy --strip-debug \(executable)` exited \(copy.status): \(tail(copy.standardError))")
        }
        // objcopy creates its output under the process's umask, which another thread may hold
        // at 077 or 177 for a moment (a private socket or file being made): set the mode.
        guard chmod(stripped, 0o700) == 0 else {
            throw ProbeError("chmod 700 \(stripped): \(Errno.text(errno))")
        }
        let outputFile = scratch.path + "/callgrind.out"
        var arguments = command(executable: stripped, direction: direction, innerSize: innerSize, packets: packets,
                                allocatingCanary: allocatingCanary, cryptoOff: cryptoOff, outputFile: outputFile)
        arguments[0] = valgrind
        let run = try Command.runAllowingFailure(arguments)
        guard run.status == 0 else {
            throw ProbeError("`\(arguments.joined(separator: " "))` exited \(run.status): \(tail(run.standardError + run.standardOutput))")
        }
        // The probe says how many packets went through the path measured; anything else
        // (a drop path) would be cheaper and mean nothing.
        guard run.standardOutput.split(separator: " ").contains(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines) == "completed=\(packets)" }) else {
            throw ProbeError("the probe did not report all \(packets) packets completed: \(tail(run.standardOutput))")
        }
        let text = try regionDump(in: scratch.path, standardError: run.standardError)
        let profile = try CallgrindProfile.parse(text)
        var count = try count(profile, direction: direction, innerSize: innerSize, packets: packets)
        count.cryptoOff = cryptoOff
        return count
    }

    /// The one dump callgrind wrote when the measured batch returned (its `desc: Trigger:`
    /// line names --dump-after). None: the batch never ran; more than one: it ran twice or
    /// nested, and no single dump is the batch.
    static func regionDump(in directory: String, standardError: String) throws -> String {
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("callgrind.out") }.sorted()
        let dumps = files.compactMap { readText(directory + "/" + $0) }
            .filter { $0.contains("\ndesc: Trigger: --dump-after=") }
        guard dumps.count == 1 else {
            throw ProbeError(dumps.isEmpty
                ? "callgrind wrote no dump at the end of the measured batch: no function matching \(PipelineProbe.regionPattern) ran (renamed, or inlined away?): \(tail(standardError))"
                : "callgrind wrote \(dumps.count) dumps at the end of a measured batch: the batch ran more than once or nested")
        }
        return dumps[0]
    }

    /// The per-packet figures of a profile whose collected region ran `packets` packets.
    public static func count(_ profile: CallgrindProfile, direction: Direction, innerSize: Int,
                             packets: Int) throws -> InstructionCount {
        guard profile.totalInstructions > 0 else {
            throw ProbeError("callgrind counted no instructions in the measured batch")
        }
        // A region function called from inside another would have toggled collection off.
        for (caller, arcs) in profile.calls where isRegionFunction(caller) {
            if let nested = arcs.keys.first(where: isRegionFunction) {
                throw ProbeError("callgrind region is nested: \(caller) calls \(nested), both match \(PipelineProbe.regionPattern)")
            }
        }
        let n = Double(packets)
        let hot = profile.selfInstructions.filter { $0.value > 0 }.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(hotFunctionCount)
        // A library's static functions have no symbol: callgrind names them by address. Say whose.
        let readable = zip(demangled(hot.map(\.key)), hot).map { name, entry in
            guard name.hasPrefix("0x"), let object = profile.objects[entry.key] else { return name }
            let address = name.dropFirst(2).drop { $0 == "0" }
            return "\(object.split(separator: "/").last ?? "")+0x\(address.isEmpty ? "0" : address)"
        }
        let allocating = profile.callers(of: allocators, excludingCallersIn: allocators)
        let readableAllocating = demangled(allocating)
        return InstructionCount(
            direction: direction, innerSize: innerSize,
            instructionsPerPacket: Double(profile.totalInstructions) / n,
            mallocsPerPacket: Double(profile.callCount(to: allocators, excludingCallersIn: allocators)) / n,
            retainsPerPacket: Double(profile.callCount(to: retains, excludingCallersIn: retains)) / n,
            releasesPerPacket: Double(profile.callCount(to: releases, excludingCallersIn: releases)) / n,
            packets: packets,
            cryptoInstructionsPerPacket: Double(profile.inclusiveInstructions(ofCallsIntoPrefix: cryptoPrefix)) / n,
            hotFunctions: zip(readable, hot).map { HotFunction(name: $0, instructionsPerPacket: Double($1.value) / n) },
            allocatingFunctions: readableAllocating)
    }

    /// True for the names `PipelineProbe.regionPattern` matches (`*measuredBatch*`).
    static func isRegionFunction(_ name: String) -> Bool {
        name.contains("measuredBatch")
    }

    /// Swift's mangled names made readable by swift-demangle (--simplified), when it is
    /// installed (it comes with the toolchain); otherwise as they are.
    static func demangled(_ names: [String]) -> [String] {
        guard names.contains(where: { $0.hasPrefix("$s") }), let tool = Subprocess.which("swift-demangle"),
              let result = try? Command.runAllowingFailure([tool, "--simplified", "--compact"],
                                                           input: names.joined(separator: "\n") + "\n"),
              result.status == 0
        else { return names }
        let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.count >= names.count else { return names }
        return Array(lines.prefix(names.count))
    }

    private static func tail(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.count > 2000 ? "…" + String(trimmed.suffix(2000)) : trimmed
    }
}

/// Why the probe could not count.
public struct ProbeError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
