#if canImport(Glibc)
import Glibc
#endif

/// A failure loading, attaching or using one of our XDP programs. It names what failed, on
/// which interface, why (errno as text), and for a verifier rejection the end of the
/// verifier's log, which is where the reason is.
public struct BPFError: Error, CustomStringConvertible, Sendable {
    public enum Reason: Sendable, Equatable {
        /// A bpf() or netlink call failed with this errno.
        case system(errno: Int32)
        /// The kernel's verifier refused the program: the last lines of its log.
        case verifierRejected(errno: Int32, logTail: String)
        /// Another XDP program (not one of ours) is attached: we never remove it.
        case foreignProgram(name: String, id: UInt32, mode: XDPAttachedProgram.Mode)
        /// Our program is attached through a bpf_link that a running process holds (another
        /// xdpwg on the same interface): it is not stale, so we do not take it over.
        case attachedByRunningProcess(id: UInt32, mode: XDPAttachedProgram.Mode)
        /// A caller error found before asking the kernel.
        case invalidArgument(String)
    }

    /// What was being done, e.g. "attach xdpwg_uplink (native)".
    public let operation: String
    /// The interface, when the operation concerns one.
    public let interface: String?
    public let reason: Reason

    public init(_ operation: String, interface: String? = nil, reason: Reason) {
        self.operation = operation
        self.interface = interface
        self.reason = reason
    }

    /// A failed call whose errno is `code` (positive), as libbpf reports it.
    public static func system(_ operation: String, interface: String? = nil, errno code: Int32) -> BPFError {
        BPFError(operation, interface: interface, reason: .system(errno: code))
    }

    /// The errno, when the failure came from the kernel.
    public var errno: Int32? {
        switch reason {
        case .system(let code), .verifierRejected(let code, _): code
        default: nil
        }
    }

    public var description: String {
        let target = interface.map { " on \($0)" } ?? ""
        switch reason {
        case .system(let code):
            return "BPF: \(operation)\(target) failed: \(Errno.text(code))"
        case .verifierRejected(let code, let logTail):
            return "BPF: \(operation)\(target) failed: the verifier rejected the program (\(Errno.text(code))); "
                + "end of the verifier log:\n\(logTail)"
        case .foreignProgram(let name, let id, let mode):
            let device = interface ?? "the interface"
            return "BPF: \(operation)\(target) refused: another XDP program, '\(name)' (id \(id), \(mode) mode), "
                + "is attached and xdpwg does not remove programs it does not own; "
                + "detach it first (ip link set dev \(device) xdp off)"
        case .attachedByRunningProcess(let id, let mode):
            return "BPF: \(operation)\(target) refused: our program (id \(id), \(mode) mode) is already attached "
                + "through a bpf_link held by a running process, most likely another xdpwg; stop it first"
        case .invalidArgument(let text):
            return "BPF: \(operation)\(target) failed: \(text)"
        }
    }
}

/// Sets every byte of a libbpf options struct to zero, tail padding included. libbpf refuses
/// options whose bytes past the last field it knows are not zero ("non-zero extra bytes"),
/// and Swift's initializer zeroes the fields but leaves the padding as it was (an optimized
/// build shows it).
@inline(__always)
public func zeroAllBytes<T>(_ value: inout T) {
    withUnsafeMutableBytes(of: &value) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
}
