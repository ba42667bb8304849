/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * refwd-blast's sink (a rough-rate helper for the reference forwarder): attached to where
 * the load arrives, blast_sink counts and drops IPv4/IPv6 frames and passes the rest (ARP).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} blast_count SEC(".maps");

SEC("xdp")
int blast_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(&blast_count, &key);
	if (n)
		*n += 1;
	return XDP_DROP;
}
