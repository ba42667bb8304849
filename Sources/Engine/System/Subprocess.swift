import CXDPWG
#if canImport(Glibc)
import Glibc
#endif

/// The one process runner, with posix_spawn: `run` runs a program to completion and captures
/// its output (which is expected to fit in memory); `Child` starts one that runs beside the
/// caller (its output to files) until it exits or is signalled. The lab, the perf lab and the
/// tests run everything through it (Lab's `Command` adds their error policy).
///
/// The child starts clean, whoever spawns it: in a process group of its own (a Ctrl-C at the
/// terminal goes to the caller, which decides what to stop), with every signal unblocked and
/// at its default action (the caller's threads may block SIGINT and SIGTERM to take them
/// with sigwait, and a child must not inherit that), and with no descriptor but 0, 1 and 2.
public enum Subprocess {
    public struct Result: Sendable {
        /// The exit code, or 128 + the signal number if the program was killed.
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
    }

    /// Where programs are looked for: PATH, then the sbin directories where root tools live
    /// (a service's PATH often lacks them).
    public static var searchPath: String {
        (getenv("PATH").map { String(cString: $0) } ?? "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    }

    /// The absolute path of `program` in the colon-separated `path` (default `searchPath`),
    /// or `program` itself when it is absolute; nil if none is executable.
    public static func which(_ program: String, in path: String = searchPath) -> String? {
        if program.hasPrefix("/") { return access(program, X_OK) == 0 ? program : nil }
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs `arguments[0]` (an absolute path) with the rest as its arguments, `input` on its
    /// standard input (none: /dev/null), and waits for it. `environment` replaces the
    /// caller's environment when given. Throws only if it cannot be started or waited for.
    public static func run(_ arguments: [String], input: [UInt8] = [],
                           environment: [String: String]? = nil) throws(SystemError) -> Result {
        guard let program = arguments.first else { throw .invalidArgument("no program to run") }
        // Pipes, as a shell gives: a program may open /dev/stdout by name, which a socket
        // refuses. Made close-on-exec atomically (pipe2), so a program another thread spawns
        // at the same moment cannot inherit our ends and hold them open.
        let out = try pipe(for: program)
        let err: (Int32, Int32)
        do { err = try pipe(for: program) } catch {
            close(out.0); close(out.1)
            throw error
        }
        var inputFD: Int32 = -1
        if !input.isEmpty {
            do { inputFD = try inputFile(input, for: program) } catch {
                close(out.0); close(out.1); close(err.0); close(err.1)
                throw error
            }
        }
        let spawned = spawn(arguments, environment: environment) { actions in
            // dup2 onto 0, 1 and 2 clears close-on-exec on the copies; the originals close at exec.
            if input.isEmpty {
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            } else {
                posix_spawn_file_actions_adddup2(&actions, inputFD, 0)
            }
            posix_spawn_file_actions_adddup2(&actions, out.1, 1)
            posix_spawn_file_actions_adddup2(&actions, err.1, 2)
        }
        close(out.1)
        close(err.1)
        if inputFD >= 0 { close(inputFD) }
        let pid: pid_t
        switch spawned {
        case .success(let started): pid = started
        case .failure(let error):
            close(out.0); close(err.0)
            throw error
        }
        // Read both streams until both close, so the program never blocks on a full pipe.
        let (stdout, stderr) = drain(out.0, err.0)
        close(out.0)
        close(err.0)

        var status: Int32 = 0
        try SystemCall.checked("waitpid(\(program))") { waitpid(pid, &status, 0) }
        return Result(status: exitCode(status), standardOutput: String(decoding: stdout, as: UTF8.self),
                      standardError: String(decoding: stderr, as: UTF8.self))
    }

    /// Starts `arguments[0]` clean (see the type's comment) with `files` arranging its
    /// descriptors 0, 1 and 2; its PID.
    static func spawn(_ arguments: [String], environment: [String: String]?,
                      files: (inout posix_spawn_file_actions_t) -> Void) -> Swift.Result<pid_t, SystemError> {
        guard let program = arguments.first else { return .failure(.invalidArgument("no program to run")) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        files(&actions)
        // Descriptors the caller opened without close-on-exec stay with the caller.
        cxdpwg_spawn_close_from(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var envp: [UnsafeMutablePointer<CChar>?] = (environment ?? [:]).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in envp { free(p) } }
        var pid: pid_t = 0
        let result = environment == nil
            ? posix_spawn(&pid, program, &actions, &attributes, &argv, environ)
            : posix_spawn(&pid, program, &actions, &attributes, &argv, &envp)
        guard result == 0 else { return .failure(.syscall(operation: "posix_spawn(\(program))", errno: result)) }
        return .success(pid)
    }

    /// The exit code in a wait status, or 128 + the signal number if the program was killed.
    /// (WIFEXITED / WEXITSTATUS / WTERMSIG are macros: an exit is code << 8, a kill the
    /// signal in the low 7 bits.)
    static func exitCode(_ status: Int32) -> Int32 {
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    private static func pipe(for program: String) throws(SystemError) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        guard cxdpwg_pipe_cloexec(&fds) == 0 else {
            throw .syscall(operation: "pipe2() for the output of \(program)", errno: errno)
        }
        return (fds[0], fds[1])
    }

    /// `input` in an anonymous in-memory file, read from its start: the program's standard
    /// input. A file rather than a pipe: a program may open /dev/stdin by name (`wg set …
    /// private-key /dev/stdin`), and writing it can neither block nor raise SIGPIPE.
    private static func inputFile(_ input: [UInt8], for program: String) throws(SystemError) -> Int32 {
        let fd = cxdpwg_memfd_cloexec("stdin")
        guard fd >= 0 else { throw .syscall(operation: "memfd_create() for the input of \(program)", errno: errno) }
        var written = 0
        while written < input.count {
            let n = input.withUnsafeBytes { b in SystemCall.retryingEINTR { write(fd, b.baseAddress! + written, b.count - written) } }
            guard n > 0 else {
                let e = n < 0 ? errno : EIO
                close(fd)
                throw .syscall(operation: "write() of the input of \(program)", errno: e)
            }
            written += n
        }
        guard lseek(fd, 0, SEEK_SET) == 0 else {
            let e = errno
            close(fd)
            throw .syscall(operation: "lseek() of the input of \(program)", errno: e)
        }
        return fd
    }

    /// Reads `a` and `b` until both close.
    private static func drain(_ a: Int32, _ b: Int32) -> ([UInt8], [UInt8]) {
        var outputs: [[UInt8]] = [[], []]
        var open = [true, true]
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while open[0] || open[1] {
            var fds = [pollfd(fd: open[0] ? a : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: open[1] ? b : -1, events: Int16(POLLIN), revents: 0)]
            guard SystemCall.retryingEINTR({ poll(&fds, 2, -1) }) >= 0 else { break }
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
        return (outputs[0], outputs[1])
    }
}

extension Subprocess {
    /// A program running beside the caller, its output going to files (it may be large, and
    /// nothing can block on a full pipe). Killed and reaped when dropped while it still runs:
    /// no orphan, no zombie.
    public final class Child {
        public let pid: pid_t
        /// The exit code, or 128 + the signal that killed it; nil while it runs.
        public private(set) var status: Int32?

        /// Starts `arguments[0]` (an absolute path) with standard input from /dev/null and
        /// standard output and error written to the files at those paths (created 0600).
        public init(_ arguments: [String], standardOutput: String, standardError: String) throws(SystemError) {
            pid = try Subprocess.spawn(arguments, environment: nil) { actions in
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
                posix_spawn_file_actions_addopen(&actions, 1, standardOutput, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                posix_spawn_file_actions_addopen(&actions, 2, standardError, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            }.get()
        }

        deinit {
            if status == nil {
                kill(pid, SIGKILL)
                var raw: Int32 = 0
                _ = SystemCall.retryingEINTR { waitpid(pid, &raw, 0) }
            }
        }

        /// Waits up to `timeout` seconds for the child to exit: its status, or nil if it still runs.
        public func wait(timeout: Double) -> Int32? {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let deadline = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 + timeout
            while true {
                if let status = reap() { return status }
                clock_gettime(CLOCK_MONOTONIC, &now)
                if Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 >= deadline { return nil }
                usleep(10_000)
            }
        }

        /// Sends `signal` to the child (by its PID), unless it has been reaped.
        public func signal(_ signal: Int32) {
            if reap() == nil { kill(pid, signal) }
        }

        /// The status if the child has exited (reaping it once), else nil.
        @discardableResult
        public func reap() -> Int32? {
            if let status { return status }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            if result == pid {
                status = Subprocess.exitCode(raw)
            } else if result < 0 && errno == ECHILD {
                status = 128 + SIGKILL     // reaped by someone else: gone, whatever it was
            }
            return status
        }
    }
}
