#pragma once
// Thin C shims for what Swift cannot import from glibc: functions declared only under
// _GNU_SOURCE. Every function is prefixed cxdpwg_ and does nothing but forward.

/// setns(2) for a network namespace file descriptor (CLONE_NEWNET).
int cxdpwg_setns_net(int fd);

/// eventfd(2), non-blocking and close-on-exec: the workers' doorbell for the control thread
/// (Glibc's Swift module does not export <sys/eventfd.h>).
int cxdpwg_eventfd_nonblocking(void);
