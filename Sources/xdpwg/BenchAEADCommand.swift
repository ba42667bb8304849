import ArgumentParser
import Bench
import Foundation
import WireGuard

/// `xdpwg bench-aead`: every transport cipher backend on one pinned core, single packets.
/// Hidden: a measuring instrument, not an operator's command.
struct BenchAEAD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-aead",
        abstract: "Measure each transport cipher backend's seal and open rate on one pinned core.",
        discussion: """
            For every backend (after its self-test), operation (seal, open), size and placement \
            (out of place, in place): single packets for --seconds on --cpu, WireGuard's nonce, a \
            new counter per sealed packet. Prints Mpps and Gbps (plaintext bytes). Build with \
            -c release for figures worth reporting.
            """,
        shouldDisplay: false)

    @Option(help: "Plaintext sizes in bytes, comma-separated.")
    var sizes: String = "64,512,1420"

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 0.5

    @Option(help: "The CPU to pin the measuring thread to.")
    var cpu: Int = 1

    @Option(help: "Backends, comma-separated (default: all).")
    var backends: String?

    func run() throws {
        let sizeList = try sizes.split(separator: ",").map { text -> Int in
            guard let n = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--sizes: '\(text)' is not a number of bytes")
            }
            return n
        }
        let backendList = try backends.map { list in
            try list.split(separator: ",").map { name -> AEADBackend in
                guard let b = AEADBackend(name: String(name)) else {
                    throw ValidationError("--backends: '\(name)' is not libsodium, openssl or ipsec-mb")
                }
                return b
            }
        } ?? AEADBackend.allCases
        print("backend    operation  size  placement     Mpps    Gbps")
        for backend in backendList {
            for operation in AEADOperation.allCases {
                for size in sizeList {
                    for inPlace in [false, true] {
                        let r = try AEADBaseline.measure(backend: backend, operation: operation, size: size,
                                                         inPlace: inPlace, seconds: seconds, cpu: cpu)
                        print(pad(backend.name, 10) + " " + pad(operation.rawValue, 9) + " " + pad(String(size), 5, right: true)
                              + "  " + pad(inPlace ? "in place" : "out of place", 12) + " "
                              + pad(fixed(r.mpps, 3), 7, right: true) + " " + pad(fixed(r.gbps, 2), 7, right: true))
                    }
                }
            }
        }
    }

    private func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - s.count))
        return right ? fill + s : s + fill
    }

    private func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let n = Int((value * scale).rounded())
        let whole = n / Int(scale), fraction = String(n % Int(scale))
        return "\(whole)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }
}
