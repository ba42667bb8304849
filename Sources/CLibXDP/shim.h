#pragma once
// libxdp 1.3.1's AF_XDP API. Swift imports the static inline xsk_ring_* helpers directly.
#include <xdp/xsk.h>
#include <xdp/libxdp.h>
