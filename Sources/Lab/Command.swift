import Foundation

/// Runs external programs for the lab and the tests and reports failures with their output.
public enum Command {
    public struct Failed: Error, CustomStringConvertible {
        public var command: [String]
        public var status: Int32
        public var output: String
        public var description: String { "`\(command.joined(separator: " "))` exited \(status): \(output)" }
    }

    public struct NotInstalled: Error, CustomStringConvertible {
        public init(program: String) {
            self.program = program
        }

        public var program: String
        public var description: String {
            "`\(program)` is not installed: run scripts/install-deps.sh (it installs every package the lab and the tests use)"
        }
    }

    /// Where programs are looked for: PATH plus the sbin directories root tools live in.
    public static var searchPath: String {
        (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    }

    /// Absolute path of `program` from `searchPath`.
    public static func which(_ program: String) throws -> String {
        guard let found = find(program, in: searchPath) else { throw NotInstalled(program: program) }
        return found
    }

    /// The first executable `program` in the colon-separated `path` (or `program` itself when
    /// it is absolute); nil if there is none.
    public static func find(_ program: String, in path: String) -> String? {
        if program.hasPrefix("/") { return program }
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs to completion and returns standard output; throws on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil, environment: [String: String]? = nil) throws -> String {
        let (status, out, err) = try runAllowingFailure(arguments, input: input, environment: environment)
        guard status == 0 else { throw Failed(command: arguments, status: status, output: out + err) }
        return out
    }

    /// Runs to completion; returns the exit status (128 + the signal if it was killed),
    /// standard output and standard error.
    public static func runAllowingFailure(_ arguments: [String], input: String? = nil,
                                   environment: [String: String]? = nil) throws -> (status: Int32, standardOutput: String, standardError: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try which(arguments[0]))
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        let stdout = Pipe(), stderr = Pipe(), stdin = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        // Read both pipes before waiting so a chatty child cannot block on a full pipe.
        let errData = LockedData()
        let errReader = Thread { errData.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
        errReader.start()
        let outData = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        while !errData.isSet { usleep(1000) }
        // As a shell reports it: 128 + the signal for a program that was killed.
        let status = process.terminationReason == .uncaughtSignal
            ? 128 + process.terminationStatus : process.terminationStatus
        return (status, String(decoding: outData, as: UTF8.self),
                String(decoding: errData.value, as: UTF8.self))
    }
}

private final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private var done = false
    func set(_ d: Data) { lock.lock(); data = d; done = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return done }
    var value: Data { lock.lock(); defer { lock.unlock() }; return data }
}
