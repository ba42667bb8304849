import ArgumentParser
import Engine
import WireGuard

#if canImport(Glibc)
import Glibc
#endif

@main
struct XDPWG: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xdpwg",
        abstract: "An AF_XDP WireGuard gateway.",
        subcommands: [Up.self, Reload.self, Stats.self, LabCommand.self, BenchCommand.self, ScaleCommand.self, SoakCommand.self,
                      CheckConfig.self, GenKey.self,
                      PubKey.self, GenPSK.self, Version.self, BenchProbe.self, BenchAEAD.self, BenchCryptoOffGateway.self]
    )
}


struct GenKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genkey",
        abstract: "Generate a new private key and write it in base64 to standard output (like `wg genkey`).")
    func run() throws {
        warnIfOutputIsWorldAccessible()
        print(PrivateKey.generate().secret.base64ForDisplay)
    }
}

struct GenPSK: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genpsk",
        abstract: "Generate a new preshared key and write it in base64 to standard output (like `wg genpsk`).")
    func run() throws {
        warnIfOutputIsWorldAccessible()
        print(PresharedKey.generate().secret.base64ForDisplay)
    }
}

struct PubKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pubkey",
        abstract: "Read a private key in base64 from standard input and write its public key (like `wg pubkey`).")
    func run() throws {
        // Read into one buffer we wipe: the private key's text is never copied into Strings.
        let input = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 1)
        defer { wipe(input); input.deallocate() }
        var length = 0
        while length < input.count {
            let n = SystemCall.retryingEINTR { read(0, input.baseAddress! + length, input.count - length) }
            if n > 0 { length += n } else { break }
        }
        // Like `wg pubkey`: the key, then optional whitespace.
        var end = length
        while end > 0, [0x20, 0x0a, 0x0d, 0x09].contains(input[end - 1]) { end -= 1 }
        guard var raw = Key32(base64Bytes: UnsafeRawBufferPointer(rebasing: input[0..<end])) else {
            var err = StandardError()
            print("xdpwg pubkey: standard input is not a base64 WireGuard private key (44 characters)", to: &err)
            throw ExitCode.failure
        }
        let key = PrivateKey(consuming: &raw)
        print(key.publicKey.base64)
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the version, the linked system libraries and the transport cipher backends.",
        discussion: """
            Each backend is self-tested and timed here, as `[Gateway] Crypto = auto` does at \
            start (a few milliseconds; rates vary with what else runs).
            """)
    func run() throws {
        print("xdpwg 0.1.0")
        print("libsodium \(SystemLibraries.libsodiumVersion), libbpf \(SystemLibraries.libbpfVersion), libxdp \(SystemLibraries.libxdpLinked ? "linked" : "missing"), libnuma \(SystemLibraries.numaAvailable ? "available" : "unavailable")")
        let survey = AEADSelection.survey()
        print("transport cipher backends ([Gateway] Crypto):")
        let width = survey.map(\.library.count).max() ?? 0
        for m in survey {
            let library = m.library + String(repeating: " ", count: width - m.library.count)
            let name = m.backend.name + String(repeating: " ", count: 10 - m.backend.name.count)
            print("  \(name) \(library)  " + (m.failure.map { "unusable: \($0)" } ?? String(m.summary.dropFirst(m.backend.name.count + 1))))
        }
        print("auto would pick: \(AEADSelection.fastest(survey)?.name ?? "nothing (no backend passed its self-test)")")
    }
}

/// Like `wg genkey`: warn when standard output is a regular file that others can access.
private func warnIfOutputIsWorldAccessible() {
    var st = stat()
    if fstat(1, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_mode & 0o007 != 0 {
        var err = StandardError()
        print("Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.", to: &err)
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Unbuffered standard output: what the lab prints appears at once, also through a pipe.
struct StandardOutput: TextOutputStream {
    mutating func write(_ string: String) {
        var bytes = Array(string.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { Glibc.write(1, b.baseAddress! + written, b.count - written) } }
            guard n > 0 else { return }
            written += n
        }
    }
}
