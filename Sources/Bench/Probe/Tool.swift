// Running the external tools the perf lab's measurement side needs (valgrind, python3,
// swift-demangle) and the scratch directory their files go to.

import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why an external tool could not be used; each case names the tool and what to install.
public enum ToolError: Error, CustomStringConvertible, Equatable {
    case notFound(program: String, package: String)
    case couldNotStart(program: String, reason: String)
    case scratch(String)

    public var description: String {
        switch self {
        case .notFound(let program, let package):
            "\(program) not found on PATH or in /usr/sbin, /usr/bin: install the Debian package \(package) (scripts/install-deps.sh)"
        case .couldNotStart(let program, let reason):
            "cannot run \(program): \(reason)"
        case .scratch(let reason):
            "cannot make a scratch directory: \(reason)"
        }
    }
}

enum Tool {
    struct Result {
        /// The exit code, or 128 + the signal number if the program was killed.
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// The absolute path of `program` on PATH, then in the directories system tools live in;
    /// nil if none is executable.
    static func which(_ program: String) -> String? {
        if program.hasPrefix("/") { return access(program, X_OK) == 0 ? program : nil }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `arguments[0]` (an absolute path) to completion. Standard output and error go to
    /// files in a scratch directory (no pipe a chatty tool could fill while we wait), standard
    /// input comes from `input` or /dev/null. Throws only if it cannot be started.
    static func run(_ arguments: [String], input: String? = nil) throws(ToolError) -> Result {
        let scratch = try ScratchDirectory()
        let outPath = scratch.path + "/stdout", errPath = scratch.path + "/stderr", inPath = scratch.path + "/stdin"
        guard FileManager.default.createFile(atPath: outPath, contents: nil),
              FileManager.default.createFile(atPath: errPath, contents: nil),
              FileManager.default.createFile(atPath: inPath, contents: Data((input ?? "").utf8)),
              let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath),
              let stdin = FileHandle(forReadingAtPath: inPath)
        else { throw .scratch("cannot create the output files in \(scratch.path): \(errnoText())") }
        defer { try? out.close(); try? err.close(); try? stdin.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin
        do {
            try process.run()
        } catch {
            throw .couldNotStart(program: arguments[0], reason: "\(error)")
        }
        process.waitUntilExit()
        let status = process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
        return Result(status: status,
                      standardOutput: readText(outPath) ?? "",
                      standardError: readText(errPath) ?? "")
    }
}

/// A private directory under /tmp, named after the process, removed with everything in it when
/// the value goes away (on every exit path of the scope that holds it).
final class ScratchDirectory {
    let path: String

    init() throws(ToolError) {
        var template = Array("/tmp/xdpwg-bench-\(getpid())-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw .scratch("mkdtemp in /tmp: \(errnoText())")
        }
        path = String(cString: made)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}
