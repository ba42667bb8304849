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
        subcommands: [GenKey.self, PubKey.self, GenPSK.self, Version.self]
    )
}


struct GenKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genkey",
        abstract: "Generate a new private key and write it in base64 to standard output (like `wg genkey`).")
    func run() throws {
        warnIfUmaskIsLoose()
        print(PrivateKey.generate().secret.base64ForDisplay)
    }
}

struct GenPSK: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genpsk",
        abstract: "Generate a new preshared key and write it in base64 to standard output (like `wg genpsk`).")
    func run() throws {
        warnIfUmaskIsLoose()
        print(PresharedKey.generate().secret.base64ForDisplay)
    }
}

struct PubKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pubkey",
        abstract: "Read a private key in base64 from standard input and write its public key (like `wg pubkey`).")
    func run() throws {
        var input = [UInt8]()
        while input.count <= 4096, let line = readLine(strippingNewline: false) {
            input.append(contentsOf: line.utf8)
        }
        defer { input.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        // `wg pubkey` accepts the key followed by whitespace only.
        let trimmed = input.split(whereSeparator: { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 })
        guard trimmed.count == 1, let key = PrivateKey(base64: String(decoding: trimmed[0], as: UTF8.self)) else {
            var err = StandardError()
            print("xdpwg pubkey: standard input is not a base64 WireGuard private key (44 characters)", to: &err)
            throw ExitCode.failure
        }
        print(key.publicKey.base64)
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the version and the linked system libraries.")
    func run() throws {
        print("xdpwg 0.1.0")
        print("libsodium \(SystemLibraries.libsodiumVersion), libbpf \(SystemLibraries.libbpfVersion), libxdp linked, libnuma \(SystemLibraries.numaAvailable ? "available" : "unavailable")")
    }
}

/// Like `wg genkey`: warn when standard output is a regular file that others can access.
private func warnIfUmaskIsLoose() {
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
