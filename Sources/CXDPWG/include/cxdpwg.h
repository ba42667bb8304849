#pragma once
#include <spawn.h>
// Thin C shims for what Swift cannot import from glibc: functions declared only under
// _GNU_SOURCE. Every function is prefixed cxdpwg_ and does nothing but forward.

/// setns(2) for a network namespace file descriptor (CLONE_NEWNET).
int cxdpwg_setns_net(int fd);

/// posix_spawn_file_actions_addclosefrom_np(3): the child closes every descriptor from `from`
/// up. Returns 0 or an errno value.
int cxdpwg_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

/// pipe2(fds, O_CLOEXEC). Returns 0, or -1 with errno set.
int cxdpwg_pipe_cloexec(int fds[2]);

/// memfd_create(name, MFD_CLOEXEC): an anonymous in-memory file. Returns it, or -1 with errno set.
int cxdpwg_memfd_cloexec(const char *name);

/// strerrorname_np(3): the symbolic name of an errno ("ENODEV"), or NULL for a number
/// glibc has no name for.
const char *cxdpwg_errno_name(int code);

/// pthread_setaffinity_np(pthread_self()) to the one CPU `cpu` (CPU_SET is a macro Swift
/// cannot call). Returns 0 or an errno value (EINVAL for a CPU outside CPU_SETSIZE).
int cxdpwg_pin_current_thread(int cpu);

/// sched_getaffinity(0): the CPUs the calling thread may run on, in ascending order, up to
/// `capacity` of them into `cpus`. Returns how many, or -errno.
int cxdpwg_current_thread_cpus(int *cpus, int capacity);

/// pthread_setname_np(pthread_self(), name); the name must fit in 15 bytes. Returns 0 or an errno.
int cxdpwg_set_current_thread_name(const char *name);

/// eventfd(2), non-blocking and close-on-exec: the workers' doorbell for the control thread
/// (Glibc's Swift module does not export <sys/eventfd.h>).
int cxdpwg_eventfd_nonblocking(void);

/// Turns transmit checksum offload of interface `name` (in the calling thread's network
/// namespace) on or off: the ETHTOOL_STXCSUM ioctl, which Swift cannot call (ioctl is
/// variadic). Returns 0 or an errno value.
int cxdpwg_set_transmit_checksumming(const char *name, int on);

struct msghdr;

/// sendmmsg(2), which glibc declares only under _GNU_SOURCE (with its struct mmsghdr): sends
/// up to `count` datagrams (at most 1024), message i being `messages[i]`, in one system call.
/// Returns how many were sent, or -1 with errno set when the first could not be.
int cxdpwg_sendmmsg(int fd, const struct msghdr *messages, unsigned int count, int flags);

/// unshare(CLONE_NEWNET): moves the calling thread into a new, empty network namespace
/// (declared only under _GNU_SOURCE). Returns 0, or -1 with errno set.
int cxdpwg_unshare_net(void);
