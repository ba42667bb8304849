#pragma once
// Thin C shims for what Swift cannot import from glibc: functions declared only under
// _GNU_SOURCE. Every function is prefixed cxdpwg_ and does nothing but forward.

/// setns(2) for a network namespace file descriptor (CLONE_NEWNET).
int cxdpwg_setns_net(int fd);
