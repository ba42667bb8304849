#if canImport(Glibc)
import Glibc
#endif

/// Checks interface and namespace names before they reach the kernel or a command line.
/// Only letters, digits, '_', '-' and '.' are accepted, and no leading '-' or '.': such a name
/// cannot be mistaken for a command-line option, a path or the "." and ".." directories.
enum Names {
    /// IFNAMSIZ is 16 including the terminating NUL.
    static let maxInterfaceLength = 15
    /// A namespace name is a file name under /var/run/netns; keep it readable.
    static let maxNamespaceLength = 64

    static func validateInterface(_ name: String, role: String = "interface") throws(SystemError) {
        try validate(name, role: "\(role) name", maxLength: maxInterfaceLength)
    }

    static func validateNamespace(_ name: String) throws(SystemError) {
        try validate(name, role: "network namespace name", maxLength: maxNamespaceLength)
    }

    private static func validate(_ name: String, role: String, maxLength: Int) throws(SystemError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty else { throw .invalidArgument("the \(role) is empty") }
        guard bytes.count <= maxLength else {
            throw .invalidArgument("the \(role) '\(name)' is \(bytes.count) bytes long; at most \(maxLength) are allowed")
        }
        let allowed = bytes.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
        }
        guard allowed, bytes[0] != UInt8(ascii: "-"), bytes[0] != UInt8(ascii: ".") else {
            throw .invalidArgument("the \(role) '\(name)' may contain only letters, digits, '_', '-' and '.', and may not start with '-' or '.'")
        }
    }
}

/// Small readers for sysfs and procfs files (a few bytes each, read once at startup).
enum SystemFiles {
    /// The file's text without the trailing newline; nil if it cannot be read.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { Glibc.read(fd, b.baseAddress, b.count) } }
            if n < 0 { return nil }
            if n == 0 { break }
            data += chunk[..<n]
        }
        return String(decoding: data, as: UTF8.self).trimmingSuffixWhitespace()
    }

    /// Writes `text` to an existing file (a sysctl under /proc/sys).
    static func write(_ path: String, _ text: String) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .syscall(operation: "open(\(path)) for writing", errno: errno) }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { b in SystemCall.retryingEINTR { Glibc.write(fd, b.baseAddress, b.count) } }
        guard n == bytes.count else {
            throw .syscall(operation: "write(\(path), \"\(text)\")", errno: n < 0 ? errno : EIO)
        }
    }

    /// Names in a directory (without "." and ".."); nil if it cannot be opened.
    static func list(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }
}
