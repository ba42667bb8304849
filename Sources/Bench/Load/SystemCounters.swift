#if canImport(Glibc)
import Glibc
#endif

/// Seconds core `cpu` has been busy since boot — user, system, interrupt and softirq time,
/// whoever ran there (not steal: the hypervisor's) — from /proc/stat (in USER_HZ ticks: 10 ms resolution). A blaster's core
/// also runs receive processing for it, sometimes in ksoftirqd, which the blaster thread's
/// own CPU time does not include; this does. nil if /proc/stat has no such core.
func coreBusySeconds(cpu: Int) -> Double? {
    guard let file = fopen("/proc/stat", "r") else { return nil }
    defer { fclose(file) }
    let prefix = "cpu\(cpu) "
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    defer { free(line) }
    while getline(&line, &capacity, file) > 0 {
        guard let line else { break }
        let text = String(cString: line)
        guard text.hasPrefix(prefix) else { continue }
        // user nice system idle iowait irq softirq steal ...
        let ticks = text.dropFirst(prefix.count).split(separator: " ").compactMap { Double($0.trimmingSuffixNewline) }
        guard ticks.count >= 7 else { return nil }
        let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
    return nil
}

private extension Substring {
    var trimmingSuffixNewline: Substring {
        var s = self
        while s.last == "\n" { s.removeLast() }
        return s
    }
}
