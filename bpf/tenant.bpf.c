/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * xdpwg_tenant: runs on the host end of a tenant's veth. Every IPv4 and IPv6 frame the tenant
 * namespace sends is a packet for the tunnel: hand it to the AF_XDP socket of its rx queue.
 * Other ethertypes go to the kernel (the namespace end is NOARP, so there should be none).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "xdpwg_common.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

SEC("xdp")
int xdpwg_tenant(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return xdpwg_pass();
	if (eth->h_proto == bpf_htons(ETH_P_IP) || eth->h_proto == bpf_htons(ETH_P_IPV6))
		return xdpwg_redirect(ctx);
	return xdpwg_pass();
}
