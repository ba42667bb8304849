import CXDPWG

/// Where worker threads run: the cores of the uplink's NUMA node, one pinned worker per queue.
public enum CPUTopology {
    /// The cores of NUMA node `node` that the calling thread may run on (its affinity mask,
    /// which `taskset` and cpusets restrict), ascending. Falls back to all cores the thread
    /// may run on when `node` is nil, the kernel has no NUMA information for it, or none of
    /// its cores is allowed (pinning to a forbidden core would fail).
    public static func cores(onNode node: Int?) -> [Int] {
        let allowed = allowedCores()
        guard let node, node >= 0,
              let text = SystemFiles.read("/sys/devices/system/node/node\(node)/cpulist"),
              let nodeCores = parseCPUList(text) else {
            return allowed
        }
        let allowedSet = Set(allowed)
        let usable = nodeCores.filter { allowedSet.contains($0) }
        return usable.isEmpty ? allowed : usable
    }

    /// The cores the calling thread may run on (sched_getaffinity), ascending. Call it before
    /// pinning: a pinned thread's answer is its one core.
    public static func allowedCores() -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024) // CPU_SETSIZE
        let count = cpus.withUnsafeMutableBufferPointer {
            cxdpwg_current_thread_cpus($0.baseAddress, Int32($0.count))
        }
        // sched_getaffinity on the calling thread cannot fail with a valid buffer; should it
        // anyway, core 0 always exists.
        guard count > 0 else { return [0] }
        return cpus[..<Int(count)].map(Int.init)
    }

    /// Restricts the calling thread to one core (pthread_setaffinity_np).
    public static func pinCurrentThread(to core: Int) throws(SystemError) {
        guard let cpu = Int32(exactly: core) else {
            throw .invalidArgument("cannot pin a thread to core \(core): no such core number")
        }
        let result = cxdpwg_pin_current_thread(cpu)
        guard result == 0 else {
            throw .syscall(operation: "pthread_setaffinity_np(core \(core))", errno: result)
        }
    }

    /// Names the calling thread as `top -H`, `ps -L` and `perf` show it. Linux keeps 15 bytes:
    /// longer names are cut (at a character boundary). Naming is cosmetic: failures are ignored.
    public static func setCurrentThreadName(_ name: String) {
        // Whole characters only: never half of a multi-byte UTF-8 sequence at the end.
        var bytes: [UInt8] = []
        for scalar in name.unicodeScalars {
            let encoded = Array(String(scalar).utf8)
            if bytes.count + encoded.count > 15 { break }
            bytes += encoded
        }
        bytes.append(0)
        _ = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { cxdpwg_set_current_thread_name($0.baseAddress) }
        }
    }

    /// The calling thread's name (from /proc/thread-self/comm).
    public static func currentThreadName() -> String? {
        SystemFiles.read("/proc/thread-self/comm")
    }

    /// Parses the kernel's CPU list format ("0-3,8,10-11", as in cpulist files); nil if malformed.
    static func parseCPUList(_ text: String) -> [Int]? {
        let trimmed = text.trimmingSuffixWhitespace()
        if trimmed.isEmpty { return [] } // a node without CPUs (memory only)
        var cores: [Int] = []
        for part in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count),
                  let low = Int(bounds[0]), low >= 0,
                  let high = Int(bounds[bounds.count - 1]), high >= low, high < 1 << 16 else { return nil }
            cores += low...high
        }
        return cores
    }
}
