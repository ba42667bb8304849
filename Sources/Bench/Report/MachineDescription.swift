// The machine a report was measured on: without it, a rate is a number without a unit.

import CSodium
import Engine
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public struct MachineDescription: Codable, Sendable, Equatable {
    /// /proc/cpuinfo's "model name" of the first CPU.
    public var cpuModel: String
    /// CPUs online (logical: hyperthreads count).
    public var logicalCPUs: Int
    /// NUMA nodes (/sys/devices/system/node/node*); 1 when the kernel shows none.
    public var numaNodes: Int
    /// MemTotal of /proc/meminfo, bytes.
    public var memoryBytes: UInt64
    /// uname -r.
    public var kernelRelease: String
    /// /etc/os-release PRETTY_NAME.
    public var os: String
    public var libsodiumVersion: String
    /// When the description was taken: UTC, ISO 8601 (e.g. 2025-01-31T12:00:00Z).
    public var date: String
    public var xdpwgVersion: String?
    /// The source commit the binary was built from, when the caller knows it.
    public var commit: String?
    // Added beyond the brief:
    /// The CPU's vector extensions that matter to ChaCha20-Poly1305 (of avx2, avx512f, avx512vl),
    /// as /proc/cpuinfo lists them: libsodium picks its code by them.
    public var vectorExtensions: [String]
    /// /proc/cpuinfo lists "hypervisor": a virtual machine, whose cores may be shared.
    public var virtualized: Bool

    public init(cpuModel: String, logicalCPUs: Int, numaNodes: Int, memoryBytes: UInt64, kernelRelease: String,
                os: String, libsodiumVersion: String, date: String, xdpwgVersion: String? = nil, commit: String? = nil,
                vectorExtensions: [String] = [], virtualized: Bool = false) {
        self.cpuModel = cpuModel
        self.logicalCPUs = logicalCPUs
        self.numaNodes = numaNodes
        self.memoryBytes = memoryBytes
        self.kernelRelease = kernelRelease
        self.os = os
        self.libsodiumVersion = libsodiumVersion
        self.date = date
        self.xdpwgVersion = xdpwgVersion
        self.commit = commit
        self.vectorExtensions = vectorExtensions
        self.virtualized = virtualized
    }

    enum CodingKeys: String, CodingKey {
        case cpuModel = "cpu_model"
        case logicalCPUs = "logical_cpus"
        case numaNodes = "numa_nodes"
        case memoryBytes = "memory_bytes"
        case kernelRelease = "kernel_release"
        case os
        case libsodiumVersion = "libsodium_version"
        case date
        case xdpwgVersion = "xdpwg_version"
        case commit
        case vectorExtensions = "vector_extensions"
        case virtualized
    }

    /// This machine, now. Whatever cannot be read is "unknown" (or 0), never a failure: a
    /// report without the memory size is still a report.
    public static func current(xdpwgVersion: String? = nil, commit: String? = nil) -> MachineDescription {
        let cpuinfo = readText("/proc/cpuinfo") ?? ""
        var model = "unknown"
        var flags: Set<Substring> = []
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            if key == "model name", model == "unknown" { model = parts[1].trimmingCharacters(in: .whitespaces) }
            if key == "flags", flags.isEmpty { flags = Set(parts[1].split(separator: " ")) }
        }
        let numa = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/devices/system/node"))?
            .filter { $0.hasPrefix("node") && $0.dropFirst(4).allSatisfy(\.isNumber) }.count ?? 0
        var memory: UInt64 = 0
        for line in (readText("/proc/meminfo") ?? "").split(separator: "\n") where line.hasPrefix("MemTotal:") {
            // "MemTotal:       24576000 kB"
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kB = UInt64(fields[1]) { memory = kB * 1024 }
        }
        var os = "unknown"
        for line in (readText("/etc/os-release") ?? "").split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            os = String(line.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        var names = utsname()
        let release = uname(&names) == 0
            ? withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            : "unknown"
        return MachineDescription(
            cpuModel: model,
            logicalCPUs: max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
            numaNodes: max(1, numa),
            memoryBytes: memory,
            kernelRelease: release,
            os: os,
            libsodiumVersion: String(cString: sodium_version_string()),
            date: isoDate(Date()),
            xdpwgVersion: xdpwgVersion,
            commit: commit,
            vectorExtensions: ["avx2", "avx512f", "avx512vl"].filter { flags.contains(Substring($0)) },
            virtualized: flags.contains("hypervisor"))
    }

    /// One line for the report's head.
    public var summary: String {
        let gib = Double(memoryBytes) / Double(1 << 30)
        var parts = ["\(cpuModel), \(logicalCPUs) logical CPUs, \(numaNodes) NUMA node\(numaNodes == 1 ? "" : "s")",
                     String(format: "%.1f GiB", gib),
                     "\(os), Linux \(kernelRelease)",
                     "libsodium \(libsodiumVersion)"]
        if !vectorExtensions.isEmpty { parts.append(vectorExtensions.joined(separator: "/")) }
        if virtualized { parts.append("virtual machine") }
        return parts.joined(separator: "; ")
    }
}

/// UTC, ISO 8601, whole seconds.
func isoDate(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}

/// A small text file (procfs, sysfs, /etc), or nil if it cannot be read.
func readText(_ path: String) -> String? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return String(decoding: data, as: UTF8.self)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees half a file. Errors name the path and the errno text.
func writeFileAtomically(_ bytes: [UInt8], to path: String) throws(BenchReportError) {
    let temporary = "\(path).tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw .writeFailed(path: path, reason: "open(\(temporary)): \(Errno.text(errno))") }
    var written = 0
    while written < bytes.count {
        let n = bytes.withUnsafeBytes { b in SystemCall.retryingEINTR { write(fd, b.baseAddress! + written, b.count - written) } }
        if n < 0 {
            let reason = "write: \(Errno.text(errno))"
            close(fd)
            unlink(temporary)
            throw .writeFailed(path: path, reason: reason)
        }
        written += n
    }
    guard close(fd) == 0 else {
        let reason = "close: \(Errno.text(errno))"
        unlink(temporary)
        throw .writeFailed(path: path, reason: reason)
    }
    guard rename(temporary, path) == 0 else {
        let reason = "rename from \(temporary): \(Errno.text(errno))"
        unlink(temporary)
        throw .writeFailed(path: path, reason: reason)
    }
}

