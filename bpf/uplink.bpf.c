/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * xdpwg_uplink: runs on the uplink NIC. WireGuard-shaped UDP to one of our ports goes to the
 * AF_XDP socket of the rx queue it arrived on; malformed UDP to our ports, and frames longer
 * than the socket's frames hold, are dropped (each reason counted); everything else goes to
 * the kernel untouched.
 *
 * Parsed: Ethernet, at most one 802.1Q/802.1ad tag, IPv4 (options allowed) or IPv6 with UDP
 * directly after the fixed header. Not parsed, so passed: IPv6 extension headers (including
 * fragments), stacked VLAN tags, non-first IPv4 fragments (they carry no UDP header, so their
 * port is unknown; their first fragment was dropped, so the kernel's reassembly times out).
 * A packet too short to show its UDP ports is passed too: it is not provably ours, and the
 * kernel drops broken IP headers itself.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "xdpwg_common.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Our UDP ports: a bitmap, see XDPWG_PORT_WORDS. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPWG_PORT_WORDS);
	__type(key, __u32);
	__type(value, xdpwg_port_word_t);
} xdpwg_ports SEC(".maps");

/* The longest frame an AF_XDP frame holds (one entry; see xdpwg_frame_limit_t). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, xdpwg_frame_limit_t);
} xdpwg_limits SEC(".maps");

struct vlan_tag {
	__be16 tci;
	__be16 encapsulated_proto;
};

#define IPV4_MORE_FRAGMENTS 0x2000
#define IPV4_FRAGMENT_OFFSET 0x1fff

static __always_inline int is_our_port(__be16 port_be)
{
	__u32 port = bpf_ntohs(port_be);
	__u32 word = port / XDPWG_PORT_WORD_BITS;
	xdpwg_port_word_t *bits = bpf_map_lookup_elem(&xdpwg_ports, &word);
	return bits && ((*bits >> (port % XDPWG_PORT_WORD_BITS)) & 1);
}

/*
 * The UDP datagram is to our port: accept it only if it looks like a WireGuard message.
 * `ip_payload_len` is the UDP length the IP header implies.
 */
static __always_inline int check_wireguard(struct xdp_md *ctx, struct udphdr *udp,
					   __u32 ip_payload_len, void *data_end)
{
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len != ip_payload_len)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_LENGTH);
	if (udp_len < sizeof(*udp) + 4)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_SIZE);
	/*
	 * The frame must hold the whole datagram (it may be longer: Ethernet padding). The
	 * constant-size check comes first on purpose: after the variable one, the compiler would
	 * prove it redundant and delete it, and the verifier, which learns no range from a
	 * variable-length comparison, would then reject the read of the message header.
	 */
	__u8 *msg = (__u8 *)(udp + 1);
	if ((void *)(msg + 4) > data_end)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_LENGTH);
	if ((void *)udp + udp_len > data_end)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_LENGTH);
	/* Message type 1..4, then three reserved bytes that must be zero. */
	__u8 type = msg[0];
	if (type < 1 || type > 4 || msg[1] != 0 || msg[2] != 0 || msg[3] != 0)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_TYPE);

	__u32 size = udp_len - sizeof(*udp);
	int ok;
	switch (type) {
	case 1:
		ok = size == XDPWG_MSG_INITIATION_SIZE;
		break;
	case 2:
		ok = size == XDPWG_MSG_RESPONSE_SIZE;
		break;
	case 3:
		ok = size == XDPWG_MSG_COOKIE_REPLY_SIZE;
		break;
	default:
		/* 4: transport data. Any size from a keepalive up: plaintext is padded to a
		 * multiple of 16 but never past the sender's MTU, so a full-MTU packet (1420
		 * bytes, say) makes a message of any length. */
		ok = size >= XDPWG_MSG_TRANSPORT_MIN_SIZE;
		break;
	}
	if (!ok)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_SIZE);
	/* Checked last: a malformed message is counted as malformed whatever its length. */
	__u32 key = 0;
	xdpwg_frame_limit_t *limit = bpf_map_lookup_elem(&xdpwg_limits, &key);
	if (limit && *limit && (__u32)((long)ctx->data_end - (long)ctx->data) > *limit)
		return xdpwg_drop(XDPWG_VERDICT_DROPPED_TOO_BIG);
	return xdpwg_redirect(ctx);
}

SEC("xdp")
int xdpwg_uplink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return xdpwg_pass();
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = l3;
		if ((void *)(tag + 1) > data_end)
			return xdpwg_pass();
		proto = tag->encapsulated_proto;
		l3 = tag + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return xdpwg_pass();
		if (ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
			return xdpwg_pass();
		/* A non-first fragment has no UDP header: its port is unknown. */
		if (ip->frag_off & bpf_htons(IPV4_FRAGMENT_OFFSET))
			return xdpwg_pass();
		__u32 header_len = ip->ihl * 4;
		struct udphdr *udp = l3 + header_len;
		if ((void *)(udp + 1) > data_end)
			return xdpwg_pass();
		if (!is_our_port(udp->dest))
			return xdpwg_pass();
		if (ip->frag_off & bpf_htons(IPV4_MORE_FRAGMENTS))
			return xdpwg_drop(XDPWG_VERDICT_DROPPED_FRAGMENT);
		__u32 total_len = bpf_ntohs(ip->tot_len);
		if (total_len < header_len + sizeof(*udp))
			return xdpwg_drop(XDPWG_VERDICT_DROPPED_BAD_LENGTH);
		return check_wireguard(ctx, udp, total_len - header_len, data_end);
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return xdpwg_pass();
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return xdpwg_pass();
		struct udphdr *udp = (struct udphdr *)(ip6 + 1);
		if ((void *)(udp + 1) > data_end)
			return xdpwg_pass();
		if (!is_our_port(udp->dest))
			return xdpwg_pass();
		return check_wireguard(ctx, udp, bpf_ntohs(ip6->payload_len), data_end);
	}

	return xdpwg_pass();
}
