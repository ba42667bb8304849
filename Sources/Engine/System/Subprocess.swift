#if canImport(Glibc)
import Glibc
#endif

/// Runs a short-lived external program (iproute2's `ip`) to completion with posix_spawn and
/// captures its output. Control-plane setup only: the output is expected to be small.
enum Subprocess {
    struct Result {
        /// The exit code, or 128 + the signal number if the program was killed.
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    /// The absolute path of `program` on PATH, then in the sbin directories where root tools
    /// live (a service's PATH often lacks them); nil if none is executable.
    static func which(_ program: String) -> String? {
        if program.hasPrefix("/") { return access(program, X_OK) == 0 ? program : nil }
        let path = (getenv("PATH").map { String(cString: $0) } ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `arguments[0]` (an absolute path) with the rest as its arguments, `input` on its
    /// standard input (none: /dev/null), and waits for it. Throws only if it cannot be
    /// started or waited for.
    static func run(_ arguments: [String], input: [UInt8] = []) throws(SystemError) -> Result {
        // Socket pairs rather than pipes: they can be created close-on-exec atomically
        // (pipe2 is not imported), so a program another thread spawns at the same moment
        // cannot inherit our ends and hold them open.
        let out = try socketPair(for: arguments[0])
        let err: (Int32, Int32)
        do { err = try socketPair(for: arguments[0]) } catch {
            close(out.0); close(out.1)
            throw error
        }
        var inp: (Int32, Int32) = (-1, -1)
        if !input.isEmpty {
            do { inp = try socketPair(for: arguments[0]) } catch {
                close(out.0); close(out.1); close(err.0); close(err.1)
                throw error
            }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 onto 0, 1 and 2 clears close-on-exec on the copies; the originals close at exec.
        if input.isEmpty {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        } else {
            posix_spawn_file_actions_adddup2(&actions, inp.1, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, out.1, 1)
        posix_spawn_file_actions_adddup2(&actions, err.1, 2)

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        close(out.1)
        close(err.1)
        if !input.isEmpty { close(inp.1) }
        guard spawned == 0 else {
            close(out.0); close(err.0)
            if !input.isEmpty { close(inp.0) }
            throw .syscall(operation: "posix_spawn(\(arguments[0]))", errno: spawned)
        }
        // Write the input while reading both streams until both close, so neither side ever
        // blocks on a full buffer.
        let (stdout, stderr) = drain(out.0, err.0, input: input, to: inp.0)
        close(out.0)
        close(err.0)

        var status: Int32 = 0
        try SystemCall.checked("waitpid(\(arguments[0]))") { waitpid(pid, &status, 0) }
        // WIFEXITED / WEXITSTATUS / WTERMSIG are macros: the status word is
        // (code << 8) for an exit, the signal number in the low 7 bits for a kill.
        let signal = status & 0x7f
        let code = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return Result(status: code, standardOutput: String(decoding: stdout, as: UTF8.self),
                      standardError: String(decoding: stderr, as: UTF8.self))
    }

    private static func socketPair(for program: String) throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .syscall(operation: "socketpair() for the output of \(program)", errno: errno)
        }
        return (fds[0], fds[1])
    }

    /// Reads `a` and `b` until both close; meanwhile writes `input` to `inputFD` (if any)
    /// and closes it when all is written, or when the program stops reading.
    private static func drain(_ a: Int32, _ b: Int32, input: [UInt8], to inputFD: Int32) -> ([UInt8], [UInt8]) {
        var outputs: [[UInt8]] = [[], []]
        var open = [true, true]
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        var written = 0
        var writing = inputFD >= 0
        while open[0] || open[1] {
            var fds = [pollfd(fd: open[0] ? a : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: open[1] ? b : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: writing ? inputFD : -1, events: Int16(POLLOUT), revents: 0)]
            guard SystemCall.retryingEINTR({ poll(&fds, 3, -1) }) >= 0 else { break }
            if writing && fds[2].revents != 0 {
                let n = input.withUnsafeBytes { b in
                    SystemCall.retryingEINTR {
                        send(inputFD, b.baseAddress! + written, b.count - written, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                    }
                }
                if n > 0 { written += n }
                if written == input.count || (n < 0 && errno != EAGAIN) {
                    close(inputFD)
                    writing = false
                }
            }
            for i in 0..<2 where open[i] && fds[i].revents != 0 {
                let fd = fds[i].fd
                let n = chunk.withUnsafeMutableBytes { b in SystemCall.retryingEINTR { read(fd, b.baseAddress, b.count) } }
                if n > 0 {
                    outputs[i] += chunk[..<n]
                } else {
                    open[i] = false
                }
            }
        }
        if writing { close(inputFD) }
        return (outputs[0], outputs[1])
    }
}

/// iproute2's `ip`, found once on PATH; every failure quotes the command and its stderr.
struct IPCommand {
    let path: String

    init() throws(SystemError) {
        guard let path = Subprocess.which("ip") else {
            throw .commandFailed(command: ["ip"], status: 127,
                                 standardError: "not found on PATH or in /usr/sbin, /sbin: install iproute2")
        }
        self.path = path
    }

    /// Runs `ip ARGUMENTS`; returns standard output, throws on a non-zero exit.
    @discardableResult
    func run(_ arguments: [String]) throws(SystemError) -> String {
        let result = try Subprocess.run([path] + arguments)
        guard result.status == 0 else {
            throw .commandFailed(command: ["ip"] + arguments, status: result.status,
                                 standardError: result.standardError)
        }
        return result.standardOutput
    }

    /// Runs many `ip` commands (one argument list each) in one process (`ip -batch -`,
    /// stopping at the first failure, whose line `ip` names): thousands of routes cost one
    /// program start instead of thousands. `options` go before `-batch` (e.g. `-n NS`).
    func batch(_ commands: [[String]], options: [String] = []) throws(SystemError) {
        guard !commands.isEmpty else { return }
        let script = commands.map { $0.joined(separator: " ") + "\n" }.joined()
        let arguments = options + ["-batch", "-"]
        let result = try Subprocess.run([path] + arguments, input: Array(script.utf8))
        guard result.status == 0 else {
            throw .commandFailed(command: ["ip"] + arguments + ["(\(commands.count) commands, the first: \(commands[0].joined(separator: " "))"],
                                 status: result.status, standardError: result.standardError)
        }
    }
}
