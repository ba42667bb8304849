/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Maps and helpers both XDP programs share (BPF side only; Swift sees xdpwg_shared.h).
 * Each program's object gets its own copy of these maps.
 */
#ifndef XDPWG_COMMON_BPF_H
#define XDPWG_COMMON_BPF_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdpwg_shared.h"

/* rx queue index -> AF_XDP socket, filled by the loader (register/unregister). */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, XDPWG_MAX_QUEUES);
	__type(key, __u32);
	__type(value, xdpwg_xsk_fd_t);
} xsks_map SEC(".maps");

/* Packets per verdict (enum xdpwg_verdict), one slot per CPU: plain increments, no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPWG_VERDICT_COUNT);
	__type(key, __u32);
	__type(value, xdpwg_counter_t);
} xdpwg_verdicts SEC(".maps");

/* Successful redirects per rx queue: shows which queues carry our traffic. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPWG_MAX_QUEUES);
	__type(key, __u32);
	__type(value, xdpwg_counter_t);
} xdpwg_qredirect SEC(".maps");

static __always_inline void xdpwg_count(__u32 verdict)
{
	xdpwg_counter_t *slot = bpf_map_lookup_elem(&xdpwg_verdicts, &verdict);
	if (slot)
		*slot += 1;
}

/* Counts the verdict and returns the XDP action that goes with it. */
static __always_inline int xdpwg_pass(void)
{
	xdpwg_count(XDPWG_VERDICT_PASSED);
	return XDP_PASS;
}

static __always_inline int xdpwg_drop(__u32 verdict)
{
	xdpwg_count(verdict);
	return XDP_DROP;
}

/*
 * Hands the frame to the socket registered for its rx queue. bpf_redirect_map returns
 * XDP_REDIRECT when xsks_map holds a socket for the queue and the fallback (its flags' low
 * bits, XDP_DROP here) when it does not, so the return value tells the two cases apart
 * exactly, with no separate lookup. A socket bound to another queue still fails later in
 * the kernel (xdp_do_redirect): the kernel counts that, not us.
 */
static __always_inline int xdpwg_redirect(struct xdp_md *ctx)
{
	__u32 queue = ctx->rx_queue_index;
	long action = bpf_redirect_map(&xsks_map, queue, XDP_DROP);
	if (action != XDP_REDIRECT)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_NO_SOCKET);
	xdpwg_count(XDPWG_VERDICT_REDIRECTED);
	xdpwg_counter_t *slot = bpf_map_lookup_elem(&xdpwg_qredirect, &queue);
	if (slot)
		*slot += 1;
	return XDP_REDIRECT;
}

#endif /* XDPWG_COMMON_BPF_H */
