#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include "cxdpwg.h"

int cxdpwg_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int cxdpwg_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int cxdpwg_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cxdpwg_memfd_cloexec(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

const char *cxdpwg_errno_name(int code) { return strerrorname_np(code); }

int cxdpwg_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int cxdpwg_current_thread_cpus(int *cpus, int capacity) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -errno;
    int count = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && count < capacity; cpu++) {
        if (CPU_ISSET(cpu, &set)) cpus[count++] = cpu;
    }
    return count;
}

int cxdpwg_set_current_thread_name(const char *name) {
    return pthread_setname_np(pthread_self(), name);
}

int cxdpwg_eventfd_nonblocking(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int cxdpwg_set_transmit_checksumming(const char *name, int on) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return errno;
    struct ethtool_value value = { .cmd = ETHTOOL_STXCSUM, .data = on ? 1 : 0 };
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_data = (void *)&value;
    int result = ioctl(fd, SIOCETHTOOL, &request) == 0 ? 0 : errno;
    close(fd);
    return result;
}

int cxdpwg_sendmmsg(int fd, const struct msghdr *messages, unsigned int count, int flags) {
    if (count == 0) return 0;
    if (count > 1024) { /* UIO_MAXIOV: the kernel takes no more in one call */
        errno = EINVAL;
        return -1;
    }
    struct mmsghdr batch[count];
    for (unsigned int i = 0; i < count; i++) {
        batch[i].msg_hdr = messages[i];
        batch[i].msg_len = 0;
    }
    return sendmmsg(fd, batch, count, flags);
}

int cxdpwg_unshare_net(void) { return unshare(CLONE_NEWNET); }
