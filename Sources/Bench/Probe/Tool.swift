// What the perf lab's measurement side needs around the external tools it runs through
// `Command` (valgrind, objcopy, python3, swift-demangle): their errors and a scratch directory.

import Engine
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why an external tool could not be used; each case names the tool and what to install.
public enum ToolError: Error, CustomStringConvertible, Equatable {
    case notFound(program: String, package: String)
    case scratch(String)

    public var description: String {
        switch self {
        case .notFound(let program, let package):
            "\(program) not found on PATH or in /usr/sbin, /usr/bin: install the Debian package \(package) (scripts/install-deps.sh)"
        case .scratch(let reason):
            "cannot make a scratch directory: \(reason)"
        }
    }
}

/// A private directory under /tmp, named after the process, removed with everything in it when
/// the value goes away (on every exit path of the scope that holds it).
final class ScratchDirectory {
    let path: String

    init() throws(ToolError) {
        var template = Array("/tmp/xdpwg-bench-\(getpid())-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw .scratch("mkdtemp in /tmp: \(Errno.text(errno))")
        }
        path = String(cString: made)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}
