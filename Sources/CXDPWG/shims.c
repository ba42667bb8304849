#define _GNU_SOURCE
#include <sched.h>
#include "cxdpwg.h"

int cxdpwg_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }
