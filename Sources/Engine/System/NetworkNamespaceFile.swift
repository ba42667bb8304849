import CXDPWG
#if canImport(Glibc)
import Glibc
#endif

/// Named network namespaces as iproute2 keeps them (`ip netns add` / `ip netns delete`): the
/// namespace is bind-mounted onto the file /var/run/netns/NAME, so it lives on with no
/// process in it and every tool that knows the convention (`ip netns exec`, nsenter) finds
/// it by name.
enum NetworkNamespaceFile {
    static func path(of name: String) -> String { "\(ThreadNetworkNamespace.directory)/\(name)" }

    /// Creates a new, empty network namespace under `name`, as `ip netns add` does. Throws
    /// `.syscall` with EEXIST when the name is taken. The namespace is made by a thread of its
    /// own that ends afterwards: the calling thread's namespace never changes. On failure
    /// the name is removed again.
    static func create(_ name: String) throws(SystemError) {
        try Names.validateNamespace(name)
        try prepareDirectory()
        let path = path(of: name)
        let fd = open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0)
        guard fd >= 0 else { throw .syscall(operation: "creating network namespace file \(path)", errno: errno) }
        close(fd)
        do {
            try runOnNewThread { () throws(SystemError) in
                guard cxdpwg_unshare_net() == 0 else {
                    throw .syscall(operation: "unshare(CLONE_NEWNET) for network namespace '\(name)'", errno: errno)
                }
                // The bind mount keeps the namespace alive once this thread has ended.
                guard mount("/proc/thread-self/ns/net", path, "none", UInt(MS_BIND), nil) == 0 else {
                    throw .syscall(operation: "mount --bind /proc/thread-self/ns/net \(path)", errno: errno)
                }
            }
        } catch {
            _ = unlink(path)
            throw error
        }
    }

    /// Removes the name, as `ip netns delete` does: the namespace itself goes once nothing
    /// (no process, socket or interface reference) holds it any more.
    static func delete(_ name: String) throws(SystemError) {
        try Names.validateNamespace(name)
        let path = path(of: name)
        // Detached, so that a process with an open handle on it does not make this fail;
        // an unmounted file (a half-made namespace) is removed all the same.
        _ = umount2(path, Int32(MNT_DETACH))
        guard unlink(path) == 0 else {
            throw .syscall(operation: "removing network namespace file \(path)", errno: errno)
        }
    }

    /// Creates the directory if needed and makes it a shared mount point (a bind mount onto
    /// itself first, when it is not a mount point yet), as iproute2 does: a namespace mounted
    /// or unmounted there then shows in every mount namespace that shares it, so one that is
    /// deleted in one place is freed everywhere.
    private static func prepareDirectory() throws(SystemError) {
        let directory = ThreadNetworkNamespace.directory
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw .syscall(operation: "mkdir(\(directory))", errno: errno)
        }
        var madeMountPoint = false
        while mount("", directory, "none", UInt(MS_SHARED | MS_REC), nil) != 0 {
            let e = errno
            // EINVAL: not a mount point yet.
            guard e == EINVAL, !madeMountPoint else {
                throw .syscall(operation: "mount --make-rshared \(directory)", errno: e)
            }
            guard mount(directory, directory, "none", UInt(MS_BIND | MS_REC), nil) == 0 else {
                throw .syscall(operation: "mount --rbind \(directory) \(directory)", errno: errno)
            }
            madeMountPoint = true
        }
    }

    /// Runs `body` on a thread created for it and waits for it to end: a thread that changes
    /// its own namespace then takes the change with it.
    private static func runOnNewThread(_ body: @escaping () throws(SystemError) -> Void) throws(SystemError) {
        final class Job {
            let body: () throws(SystemError) -> Void
            var error: SystemError?
            init(_ body: @escaping () throws(SystemError) -> Void) { self.body = body }
        }
        let job = Job(body)
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            let job = Unmanaged<Job>.fromOpaque(raw!).takeUnretainedValue()
            do throws(SystemError) { try job.body() } catch { job.error = error }
            return nil
        }, Unmanaged.passUnretained(job).toOpaque())
        guard rc == 0 else { throw .syscall(operation: "pthread_create (network namespace)", errno: rc) }
        pthread_join(thread, nil)
        if let error = withExtendedLifetime(job, { job.error }) { throw error }
    }
}
