/// A compiled XDP program carried inside the binary. The EmbedBPFObjects build-tool plugin
/// compiles each `NAME.bpf.c` of a target's folder (bpf/ for Engine, bpf/bench/ for the perf
/// lab) during `swift build` and generates `extension EmbeddedBPFObject { static let NAME = ... }`
/// in that target, with the ELF object in base64: a string literal compiles fast where a
/// byte-array literal of the same size would not. `LoadedXDPObject` loads one.
public struct EmbeddedBPFObject: Sendable {
    /// The source's base name (`uplink` for bpf/uplink.bpf.c).
    public let name: String
    let base64: StaticString

    /// For the plugin's generated code.
    public init(name: String, base64: StaticString) {
        self.name = name
        self.base64 = base64
    }

    /// The ELF object. Decoded on every call: programs are loaded a handful of times per run.
    var elf: [UInt8] {
        base64.withUTF8Buffer { EmbeddedBPFObject.decodeBase64($0) }
    }

    /// RFC 4648 base64 without line breaks, as `base64 -w0` writes it. The input is generated
    /// at build time, so anything else is a build defect and stops the program.
    static func decodeBase64(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        precondition(text.count % 4 == 0, "embedded BPF object: base64 length \(text.count) is not a multiple of 4")
        var output: [UInt8] = []
        output.reserveCapacity(text.count / 4 * 3)
        var index = 0
        while index < text.count {
            var quantum: UInt32 = 0
            var padding = 0
            for offset in 0..<4 {
                let character = text[index + offset]
                let value: UInt32
                switch character {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(character - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(character - UInt8(ascii: "a")) + 26
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(character - UInt8(ascii: "0")) + 52
                case UInt8(ascii: "+"): value = 62
                case UInt8(ascii: "/"): value = 63
                case UInt8(ascii: "="):
                    precondition(index + 4 == text.count && offset >= 2, "embedded BPF object: misplaced base64 padding")
                    value = 0
                    padding += 1
                default: preconditionFailure("embedded BPF object: byte \(character) is not base64")
                }
                quantum = quantum << 6 | value
            }
            output.append(UInt8(truncatingIfNeeded: quantum >> 16))
            if padding < 2 { output.append(UInt8(truncatingIfNeeded: quantum >> 8)) }
            if padding < 1 { output.append(UInt8(truncatingIfNeeded: quantum)) }
            index += 4
        }
        return output
    }
}
