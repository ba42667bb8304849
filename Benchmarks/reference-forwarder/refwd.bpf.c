/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The reference forwarder's two XDP programs (one object, loaded once by xdpwg-refwd):
 *
 *   refwd_uplink  on the uplink: IPv4 UDP to the configured port (refwd_cfg[0]) goes to the
 *                 AF_XDP socket of its rx queue (uplink_xsks); everything else to the kernel.
 *   refwd_tenant  on the tenant veth's host end: every IPv4/IPv6 frame goes to the AF_XDP
 *                 socket of its rx queue (tenant_xsks); everything else to the kernel.
 *
 * Deliberately smaller than bpf/uplink.bpf.c: no WireGuard shape checks, no verdict counters,
 * no VLAN, no outer IPv6 (the forwarder writes and parses outer IPv4 only). It costs one
 * array lookup per uplink packet, as xdpwg's port bitmap does, and one redirect.
 * Each program has its own XSKMAP, so the uplink and the tenant may use the same queue index.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define REFWD_MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, REFWD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} uplink_xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, REFWD_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} tenant_xsks SEC(".maps");

/* Entry 0: the UDP port (host order) the uplink program steers, written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} refwd_cfg SEC(".maps");

SEC("xdp")
int refwd_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end || ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	/* Fragments (any offset or more-fragments bit): to the kernel. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	struct udphdr *udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	__u32 key = 0;
	__u32 *port = bpf_map_lookup_elem(&refwd_cfg, &key);
	if (!port || udp->dest != bpf_htons((__u16)*port))
		return XDP_PASS;
	/* No socket on this queue: XDP_PASS (the fallback in the flags' low bits). */
	return bpf_redirect_map(&uplink_xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int refwd_tenant(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	return bpf_redirect_map(&tenant_xsks, ctx->rx_queue_index, XDP_PASS);
}
