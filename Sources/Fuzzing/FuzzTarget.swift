// The fuzz targets of xdpwg as plain Swift: each takes any bytes and drives one part of the
// production code with them. The libFuzzer executables (Fuzz/, built with
// `-sanitize=fuzzer,address`) and the FuzzingTests suite (which replays every committed
// corpus and regression input without sanitizers) call the same entry point.
//
// Every target is deterministic: fixed keys, fixed clocks, a fixed "random" source, no I/O.
// State that the production code changes on success (a peer's latest timestamp, a keypair's
// replay window) is rebuilt before the next input, so an input does the same thing whenever
// it runs. What an input cannot change (a rejected message changes nothing, which the core
// promises) is built once.
//
// Inputs whose first byte is a control byte (modes and flags) say so in their target's
// documentation: a valid MAC or a harness-made outer header lets mutated bodies reach the
// code behind those checks, where the fuzzer could not compute them itself.

import WireGuard

/// One fuzz target.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The message codec: the bytes parsed as every WireGuard message type, what parses
    /// re-encoded byte for byte. No control byte.
    case messages
    /// The responder's initiation path: the cookie/rate-limit gate (under load: cookie
    /// replies, mac2, the per-source limit), then the Noise responder. Control byte:
    /// `InitiationHarness.Flag`.
    case handshakeInitiation
    /// The initiator consuming a response to its initiation, behind the same gate. Control
    /// byte: `ResponseHarness.Flag`.
    case handshakeResponse
    /// The initiator consuming a cookie reply to its initiation. Control byte: bit 0 sets the
    /// receiver index to the initiation's (the control plane finds the handshake by it).
    case handshakeCookie
    /// Transport messages opened by an established keypair (out of place and in place), by the
    /// data plane's decrypt path, and sequences of counters against the replay window.
    /// Control byte: `TransportHarness.Mode`.
    case transportOpen
    /// Inner packets: decrypted plaintext (sealed by the peer, so it passes authentication)
    /// through the pipeline's inner checks and cryptokey routing; tenant frames through the
    /// encrypt path. Control byte: `InnerPacketHarness.Mode`.
    case innerPacket
    /// Whole uplink frames (Ethernet, VLAN, IPv4/IPv6, UDP, then a message) through the
    /// worker's outer parser and the pipeline. No control byte.
    case uplinkFrame
    /// The configuration parser: the bytes as a configuration file (any bytes, invalid UTF-8
    /// included). No control byte.
    case configuration
    /// The UAPI protocol (`wg`'s): the bytes as one request, a set applied to a fixed tenant,
    /// replies rendered. No control byte.
    case uapi

    /// Runs one input through the target. Returns what happened (tests check known answers);
    /// traps with "fuzz finding: …" when an invariant breaks, which libFuzzer reports as a crash.
    @discardableResult
    public func run(_ input: UnsafeRawBufferPointer) -> FuzzResult {
        switch self {
        case .messages: MessageHarness.run(input)
        case .handshakeInitiation: InitiationHarness.shared.run(input)
        case .handshakeResponse: ResponseHarness.shared.run(input)
        case .handshakeCookie: CookieHarness.shared.run(input)
        case .transportOpen: TransportHarness.shared.run(input)
        case .innerPacket: InnerPacketHarness.shared.run(input)
        case .uplinkFrame: InnerPacketHarness.shared.runUplinkFrame(input)
        case .configuration: TextHarness.runConfiguration(input)
        case .uapi: TextHarness.runUAPI(input)
        }
    }

    @discardableResult
    public func run(_ input: [UInt8]) -> FuzzResult { input.withUnsafeBytes { run($0) } }

    /// The largest input worth running: a datagram or frame never exceeds it, and libFuzzer's
    /// default -max_len is 4096. Longer inputs are cut (configuration and UAPI take 64 KiB).
    static let maxPacketInput = 4096
}

/// What one input did.
public enum FuzzResult: Equatable, Sendable, CustomStringConvertible {
    /// The production code took the input; the text names the deepest step reached.
    case accepted(String)
    /// The production code refused the input; the text names why.
    case rejected(String)

    public var description: String {
        switch self {
        case .accepted(let s): "accepted: \(s)"
        case .rejected(let s): "rejected: \(s)"
        }
    }

    public var isAccepted: Bool { if case .accepted = self { true } else { false } }
}

/// A broken invariant: the harness's "crash", which libFuzzer catches and saves the input for.
func finding(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("fuzz finding: \(message)", file: file, line: line)
}

/// The harness itself could not be set up (fixed keys that do not handshake, …): not a finding
/// about the input, but nothing could be tested.
func harnessFailure(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("fuzz harness broken: \(message)", file: file, line: line)
}

/// An input split into its control byte (0 when empty) and the rest.
struct ControlledInput {
    let control: UInt8
    let body: UnsafeRawBufferPointer

    init(_ input: UnsafeRawBufferPointer) {
        if input.isEmpty {
            control = 0
            body = input
        } else {
            control = input[0]
            body = UnsafeRawBufferPointer(rebasing: input[1...])
        }
    }
}

/// A buffer the harness owns for the life of the process (fuzzers run one input at a time).
final class Scratch {
    let buffer: UnsafeMutableRawBufferPointer

    init(_ byteCount: Int) {
        buffer = .allocate(byteCount: byteCount, alignment: 64)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { buffer.deallocate() }

    /// Copies `bytes` (cut to the capacity) to the start and returns that region.
    func load(_ bytes: UnsafeRawBufferPointer) -> UnsafeMutableRawBufferPointer {
        let n = min(bytes.count, buffer.count)
        if n > 0 { buffer.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: n) }
        return UnsafeMutableRawBufferPointer(rebasing: buffer[..<n])
    }
}
