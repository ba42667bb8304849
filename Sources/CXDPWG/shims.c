#define _GNU_SOURCE
#include <sched.h>
#include "cxdpwg.h"

int cxdpwg_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

#include <sys/eventfd.h>

int cxdpwg_eventfd_nonblocking(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}
