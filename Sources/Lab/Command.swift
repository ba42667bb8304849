import Engine

/// How the lab and the tests run programs: Engine's `Subprocess` (the one process runner),
/// with a program looked up on `Subprocess.searchPath`, a missing one named with the script
/// that installs it, and a non-zero exit as an error that quotes the output.
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

    /// Absolute path of `program` from `Subprocess.searchPath`.
    public static func which(_ program: String) throws(NotInstalled) -> String {
        guard let found = Subprocess.which(program) else { throw NotInstalled(program: program) }
        return found
    }

    /// Runs to completion and returns standard output; throws on a non-zero exit.
    @discardableResult
    public static func run(_ arguments: [String], input: String? = nil, environment: [String: String]? = nil) throws -> String {
        let (status, out, err) = try runAllowingFailure(arguments, input: input, environment: environment)
        guard status == 0 else { throw Failed(command: arguments, status: status, output: out + err) }
        return out
    }

    /// Runs to completion; returns the exit status (128 + the signal if it was killed),
    /// standard output and standard error. `environment` replaces ours when given.
    public static func runAllowingFailure(_ arguments: [String], input: String? = nil,
                                   environment: [String: String]? = nil) throws -> (status: Int32, standardOutput: String, standardError: String) {
        let result = try Subprocess.run([try which(arguments[0])] + arguments.dropFirst(),
                                        input: Array((input ?? "").utf8), environment: environment)
        return (result.status, result.standardOutput, result.standardError)
    }
}
