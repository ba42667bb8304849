import Foundation

/// A process's resident memory, as the kernel reports it in /proc/PID/status.
public enum ProcessMemory {
    /// VmRSS of `pid` in KiB (anonymous, file and shared-memory pages it has mapped in).
    public static func residentKiB(pid: Int32) throws -> Int {
        let path = "/proc/\(pid)/status"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ScaleFailure("cannot read \(path): process \(pid) is gone")
        }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            // "VmRSS:     12345 kB"
            if let kib = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) }) {
                return kib
            }
        }
        throw ScaleFailure("\(path) has no readable VmRSS line")
    }
}

/// Why a scale or soak run failed.
public struct ScaleFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
