/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The perf lab's packet sink (`xdpwg bench`, Sources/Bench/Load): attached to the interface
 * where load arrives, it counts and drops what it is told to match and passes the rest to the
 * kernel, so that ARP, ping or a control socket keep working beside the measured traffic.
 * Counting and dropping in XDP costs a few tens of nanoseconds a packet: the sink is never
 * what limits a measurement.
 *
 * Four programs, one per (framing, match) pair, so that each is straight-line code with its
 * choice made at compile time:
 *   framing  Ethernet (veth, NICs; attached in native mode) or none (an L3 device such as
 *            wireguard-go's TUN, where generic XDP hands the program the IP header first);
 *   match    "inner IP": every IPv4 and IPv6 packet, the decrypted packets a tenant receives;
 *            "WireGuard transport": UDP whose payload is a WireGuard type-4 message (type byte
 *            4, three zero bytes, at least the 32 bytes of a keepalive), whatever the port.
 * Ethernet frames with a VLAN tag, IPv6 extension headers and IPv4 fragments are not parsed:
 * they never match. The loader (Sources/Engine/BPF/BenchSinkProgram.swift) knows the names.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Index into xdpwg_sink_cnt. */
enum sink_counter {
	SINK_MATCHED = 0, /* counted and dropped */
	SINK_PASSED = 1,  /* handed to the kernel */
	SINK_COUNTER_COUNT = 2
};

/*
 * One entry per counter, one slot per CPU: plain increments, no atomics; the loader sums the
 * slots. `bytes` of matched packets is the IP packet's length as its header states it (the
 * same whether or not the device has an Ethernet header, and without Ethernet padding); of
 * passed packets, the length of what the program saw.
 */
struct sink_value {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct sink_value) == 16, "the loader reads two 64-bit counters per CPU");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SINK_COUNTER_COUNT);
	__type(key, __u32);
	__type(value, struct sink_value);
} xdpwg_sink_cnt SEC(".maps");

enum sink_match { MATCH_INNER_IP, MATCH_WIREGUARD_TRANSPORT };

#define WG_TRANSPORT_TYPE 4
#define WG_KEEPALIVE_SIZE 32 /* 16-byte header + 16-byte tag: the shortest transport message */
#define IPV4_FRAGMENT_BITS 0x3fff /* more-fragments flag and fragment offset */

static __always_inline void count(__u32 counter, __u64 bytes)
{
	struct sink_value *value = bpf_map_lookup_elem(&xdpwg_sink_cnt, &counter);
	if (value) {
		value->packets += 1;
		value->bytes += bytes;
	}
}

static __always_inline int pass(void *data, void *data_end)
{
	count(SINK_PASSED, data_end - data);
	return XDP_PASS;
}

/* Whether the UDP payload at `udp` is a WireGuard transport message held whole in the frame. */
static __always_inline int is_transport(struct udphdr *udp, void *data_end)
{
	__u8 *msg = (__u8 *)(udp + 1);
	/* The constant-size check first: the verifier learns no range from a variable one. */
	if ((void *)(msg + WG_KEEPALIVE_SIZE) > data_end)
		return 0;
	if (bpf_ntohs(udp->len) < sizeof(*udp) + WG_KEEPALIVE_SIZE)
		return 0;
	return msg[0] == WG_TRANSPORT_TYPE && msg[1] == 0 && msg[2] == 0 && msg[3] == 0;
}

static __always_inline int sink(struct xdp_md *ctx, int ethernet, enum sink_match match)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l3 = data;

	if (ethernet) {
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return pass(data, data_end);
		if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
			return pass(data, data_end);
		l3 = eth + 1;
	}
	/* Without an Ethernet header the version nibble says which IP this is; with one it
	 * must agree with the ethertype, which a well-formed frame's does. */
	if (l3 + 1 > data_end)
		return pass(data, data_end);
	__u8 version = *(__u8 *)l3 >> 4;

	if (version == 4) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end || ip->ihl < 5)
			return pass(data, data_end);
		__u64 length = bpf_ntohs(ip->tot_len);
		if (match == MATCH_INNER_IP) {
			count(SINK_MATCHED, length);
			return XDP_DROP;
		}
		if (ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(IPV4_FRAGMENT_BITS)))
			return pass(data, data_end);
		struct udphdr *udp = l3 + ip->ihl * 4;
		if ((void *)(udp + 1) > data_end || !is_transport(udp, data_end))
			return pass(data, data_end);
		count(SINK_MATCHED, length);
		return XDP_DROP;
	}

	if (version == 6) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return pass(data, data_end);
		__u64 length = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		if (match == MATCH_INNER_IP) {
			count(SINK_MATCHED, length);
			return XDP_DROP;
		}
		if (ip6->nexthdr != IPPROTO_UDP)
			return pass(data, data_end);
		struct udphdr *udp = (struct udphdr *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end || !is_transport(udp, data_end))
			return pass(data, data_end);
		count(SINK_MATCHED, length);
		return XDP_DROP;
	}

	return pass(data, data_end);
}

/* Program names are at most 15 characters (the kernel truncates longer ones). */

SEC("xdp")
int xdpwg_sink_ip(struct xdp_md *ctx)
{
	return sink(ctx, 1, MATCH_INNER_IP);
}

SEC("xdp")
int xdpwg_sink_wg(struct xdp_md *ctx)
{
	return sink(ctx, 1, MATCH_WIREGUARD_TRANSPORT);
}

SEC("xdp")
int xdpwg_sinkl3_ip(struct xdp_md *ctx)
{
	return sink(ctx, 0, MATCH_INNER_IP);
}

SEC("xdp")
int xdpwg_sinkl3_wg(struct xdp_md *ctx)
{
	return sink(ctx, 0, MATCH_WIREGUARD_TRANSPORT);
}
