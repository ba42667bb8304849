/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The perf lab's load programs (`xdpwg bench`, Sources/Bench/Load): the packet sink, and the
 * live-frame blaster at the end of this file.
 *
 * The packet sink: attached to the interface
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
 * they never match. The loaders (Sources/Bench/Load/Bench*Program.swift) know the names.
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

/*
 * The live-frame blaster: not attached anywhere, but run by user space through
 * BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, which makes the kernel run it `repeat`
 * times on frames of its own page pool and really transmit every frame it returns XDP_TX for,
 * out of the device named as the ingress interface (on a veth: into the peer's receive ring,
 * as xdp_frames, no skb). Each run copies the next frame of the pool (an mmapable array map
 * that user space fills, installed in xdpwg_blast_pool) into the packet: pre-encrypted
 * transport messages keep their order and each is sent exactly once per pass.
 *
 * A pool frame is 2048 bytes: up to 2040 bytes of frame data, then its length. The length is
 * checked (14...2040) and the frame resized to it before the copy.
 */
#define BLAST_SLOT_SIZE 2048
#define BLAST_MAX_FRAME_LEN 2040
#define BLAST_MIN_FRAME_LEN 14

struct blast_frame {
	__u8 data[BLAST_MAX_FRAME_LEN];
	__u32 len;
	__u32 reserved;
};
_Static_assert(sizeof(struct blast_frame) == BLAST_SLOT_SIZE, "the loader lays frames out 2048 bytes apart");

/* The template of the pool user space creates: BPF_F_INNER_MAP lets it have any number of
 * entries, BPF_F_MMAPABLE lets user space write frames without a syscall each. Sizes, not
 * types: a struct seen only through the inner map reaches BTF as a bare forward declaration,
 * which libbpf cannot size. */
struct blast_frames {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE | BPF_F_INNER_MAP);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, BLAST_SLOT_SIZE);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct blast_frames);
} xdpwg_blast_pool SEC(".maps");

/* Which frames to send, and what happened; written by user space between runs, read at any
 * time. The program runs on one CPU at a time (the caller's), so plain increments are exact.
 *
 * Pacing: with interval_ns set, a frame is sent only when it is due (due_ns, the monotonic
 * clock of bpf_ktime_get_ns); a run before that returns XDP_DROP, which sends nothing and
 * recycles the page. The offered load is then constant at 1e9 / interval_ns frames per second
 * for as long as the blast lasts, instead of bursts at the generator's ceiling. A generator
 * that fell behind (between two test runs the kernel sets up a page pool: milliseconds) sends
 * at most a batch to catch up, never a burst that would overflow the device's rings.
 */
struct blast_control {
	__u64 next;   /* the next frame to send */
	__u64 begin;  /* frames cycled through: [begin, end) */
	__u64 end;
	__u64 sent;   /* frames returned with XDP_TX */
	__u64 failed; /* no pool, or a frame whose length is out of range: not sent */
	__u64 interval_ns;    /* pacing: nanoseconds between frames; 0: as fast as the kernel runs */
	__u64 due_ns;         /* pacing: when the next frame is due; 0: now */
	__u64 limit;          /* stop sending once `sent` reaches it; 0: no limit */
	__u64 runs;           /* every run of the program, those that sent nothing included */
};
_Static_assert(sizeof(struct blast_control) == 72, "the loader reads nine 64-bit fields");

/* How far behind schedule pacing may fall before it forgets the debt: one kernel batch. */
#define BLAST_MAX_LAG_FRAMES 64

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct blast_control);
} xdpwg_blast_ctl SEC(".maps");

SEC("xdp")
int xdpwg_blast(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct blast_control *control = bpf_map_lookup_elem(&xdpwg_blast_ctl, &zero);
	if (!control)
		return XDP_ABORTED;
	void *pool = bpf_map_lookup_elem(&xdpwg_blast_pool, &zero);
	if (!pool) {
		control->failed += 1;
		return XDP_ABORTED;
	}
	control->runs += 1;
	if (control->limit && control->sent >= control->limit)
		return XDP_DROP;
	if (control->interval_ns) {
		__u64 now = bpf_ktime_get_ns();
		__u64 lag = control->interval_ns * BLAST_MAX_LAG_FRAMES;
		if (control->due_ns == 0 || control->due_ns + lag < now)
			control->due_ns = now;
		if (now < control->due_ns)
			return XDP_DROP;
		control->due_ns += control->interval_ns;
	}
	__u32 index = control->next;
	control->next = index + 1 >= control->end ? control->begin : index + 1;
	struct blast_frame *frame = bpf_map_lookup_elem(pool, &index);
	if (!frame) {
		control->failed += 1;
		return XDP_ABORTED;
	}
	__u32 len = frame->len;
	if (len < BLAST_MIN_FRAME_LEN || len > BLAST_MAX_FRAME_LEN) {
		control->failed += 1;
		return XDP_ABORTED;
	}
	int delta = (int)len - (int)(ctx->data_end - ctx->data);
	if (delta != 0 && bpf_xdp_adjust_tail(ctx, delta) != 0) {
		control->failed += 1;
		return XDP_ABORTED;
	}
	if (bpf_xdp_store_bytes(ctx, 0, frame->data, len) != 0) {
		control->failed += 1;
		return XDP_ABORTED;
	}
	control->sent += 1;
	return XDP_TX;
}
