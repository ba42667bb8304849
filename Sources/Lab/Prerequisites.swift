import Engine
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the lab needs from the machine before it touches anything, and the message that names
/// the missing Debian package when something is not there.
public enum Prerequisites {
    /// The programs the lab runs, each with the Debian package that provides it.
    public static let programs: [(program: String, package: String)] = [
        ("ip", "iproute2"), ("tc", "iproute2"), ("ss", "iproute2"),
        ("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools"),
        ("iperf3", "iperf3"), ("ping", "iputils-ping"),
        ("setpriv", "util-linux"), ("nsenter", "util-linux"), ("taskset", "util-linux"),
    ]

    public struct Missing: Error, CustomStringConvertible {
        public var problems: [String]
        public var description: String { problems.joined(separator: "\n") }
    }

    /// Every problem at once: not root, too few CPUs, programs missing (with their packages
    /// and the command that installs them). `searchPath` is where programs are looked for
    /// (default: PATH plus the sbin directories).
    public static func problems(searchPath: String? = nil, isRoot: Bool = geteuid() == 0,
                                cpus: Int = sysconf(Int32(_SC_NPROCESSORS_ONLN))) -> [String] {
        var problems: [String] = []
        if !isRoot {
            problems.append("it needs root (network namespaces, XDP): run it with sudo")
        }
        if cpus < GatewayTopology.queueCount {
            problems.append("it steers \(GatewayTopology.queueCount) uplink queues from as many CPUs; \(cpus) online")
        }
        let path = searchPath ?? Subprocess.searchPath
        let missing = programs.filter { Subprocess.which($0.program, in: path) == nil }
        if !missing.isEmpty {
            var packages: [String] = []
            for entry in missing where !packages.contains(entry.package) { packages.append(entry.package) }
            let list = missing.map { "\($0.program) (package \($0.package))" }.joined(separator: ", ")
            problems.append("missing: \(list); install with scripts/install-deps.sh, or: "
                            + "apt-get install --no-install-recommends \(packages.joined(separator: " "))")
        }
        return problems
    }

    /// Throws `Missing` naming every problem.
    public static func check() throws {
        let found = problems()
        if !found.isEmpty { throw Missing(problems: found) }
    }
}
