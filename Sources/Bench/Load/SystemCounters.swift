import Engine
#if canImport(Glibc)
import Glibc
#endif

/// One CPU's time since boot from /proc/stat, in seconds (the file counts USER_HZ ticks:
/// 10 ms resolution).
public struct CPUTimes: Sendable, Equatable {
    public var user = 0.0, nice = 0.0, system = 0.0, idle = 0.0, iowait = 0.0, irq = 0.0, softirq = 0.0, steal = 0.0

    public init() {}

    /// Busy: user, system, interrupt and softirq time, whoever ran there (not steal: the
    /// hypervisor's; not idle or iowait).
    public var busy: Double { user + nice + system + irq + softirq }

    /// Time spent between an earlier reading and this one.
    public func since(_ earlier: CPUTimes) -> CPUTimes {
        var d = CPUTimes()
        d.user = user - earlier.user; d.nice = nice - earlier.nice; d.system = system - earlier.system
        d.idle = idle - earlier.idle; d.iowait = iowait - earlier.iowait; d.irq = irq - earlier.irq
        d.softirq = softirq - earlier.softirq; d.steal = steal - earlier.steal
        return d
    }

    /// The per-CPU lines of /proc/stat's text ("cpuN user nice system idle iowait irq softirq
    /// steal ..."), by CPU number; the aggregate "cpu" line and malformed lines are left out.
    public static func parse(procStat text: String, ticksPerSecond: Double) -> [Int: CPUTimes] {
        var result: [Int: CPUTimes] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("cpu") {
            let fields = line.split(separator: " ")
            guard fields.count >= 9, let cpu = Int(fields[0].dropFirst(3)) else { continue }
            let ticks = fields[1...8].compactMap { Double($0) }
            guard ticks.count == 8 else { continue }
            var t = CPUTimes()
            t.user = ticks[0] / ticksPerSecond; t.nice = ticks[1] / ticksPerSecond
            t.system = ticks[2] / ticksPerSecond; t.idle = ticks[3] / ticksPerSecond
            t.iowait = ticks[4] / ticksPerSecond; t.irq = ticks[5] / ticksPerSecond
            t.softirq = ticks[6] / ticksPerSecond; t.steal = ticks[7] / ticksPerSecond
            result[cpu] = t
        }
        return result
    }

    /// Every CPU's times now (empty if /proc/stat cannot be read).
    public static func now() -> [Int: CPUTimes] {
        guard let text = readProcFile("/proc/stat") else { return [:] }
        return parse(procStat: text, ticksPerSecond: ticksPerSecond)
    }

    static var ticksPerSecond: Double { Double(sysconf(Int32(_SC_CLK_TCK))) }
}

/// Seconds core `cpu` has been busy since boot (see `CPUTimes.busy`). A blaster's core also
/// runs receive processing for it, sometimes in ksoftirqd, which the blaster thread's own
/// CPU time does not include; this does. nil if /proc/stat has no such core.
func coreBusySeconds(cpu: Int) -> Double? {
    CPUTimes.now()[cpu]?.busy
}

/// User plus system seconds of a task from the text of its /proc/PID/stat or
/// /proc/PID/task/TID/stat (fields 14 and 15, counted after the parenthesised command name,
/// which may hold spaces), and the command name; nil for unreadable text.
public func parseTaskStat(_ text: String, ticksPerSecond: Double) -> (name: String, cpuSeconds: Double)? {
    guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")"), open < close else { return nil }
    let name = String(text[text.index(after: open)..<close])
    let fields = text[text.index(after: close)...].split(separator: " ")
    // fields[0] is the state (field 3): utime is field 14, stime field 15.
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (name, (user + system) / ticksPerSecond)
}

/// CPU seconds (user + system) of the threads of process `pid` whose names start with
/// `threadPrefix` (nil: every thread, i.e. the whole process); nil when the process is gone.
public func threadCPUSeconds(pid: Int32, threadPrefix: String?) -> Double? {
    let ticks = CPUTimes.ticksPerSecond
    guard threadPrefix != nil else {
        return readProcFile("/proc/\(pid)/stat").flatMap { parseTaskStat($0, ticksPerSecond: ticks)?.cpuSeconds }
    }
    guard let directory = opendir("/proc/\(pid)/task") else { return nil }
    defer { closedir(directory) }
    var total = 0.0
    while let entry = readdir(directory) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard Int(tid) != nil, let text = readProcFile("/proc/\(pid)/task/\(tid)/stat"),
              let task = parseTaskStat(text, ticksPerSecond: ticks) else { continue }
        if let threadPrefix, !task.name.hasPrefix(threadPrefix) { continue }
        total += task.cpuSeconds
    }
    return total
}

/// A small /proc file's text (these report a size of 0, so read until the end).
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { read(fd, b.baseAddress, 4096) } }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
