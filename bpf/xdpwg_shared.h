/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * xdpwg_shared.h: the contract between the XDP programs (bpf/NAME.bpf.c) and the Swift loader
 * (Sources/Engine/BPF). The single source of truth: the BPF programs include it directly and
 * Swift imports it through Sources/CXDPWG/include/xdpwg_bpf.h. Change a number here and both
 * sides change with it; every shared layout is pinned with _Static_assert.
 *
 * Kernel object names are at most 15 characters (BPF_OBJ_NAME_LEN - 1): the kernel truncates
 * longer ones, and the loader recognises its own programs by the name the kernel reports.
 */
#ifndef XDPWG_SHARED_H
#define XDPWG_SHARED_H

#include <linux/types.h>

/* Program (function) names, as the kernel reports them in bpf_prog_info.name. */
#define XDPWG_UPLINK_PROG_NAME "xdpwg_uplink"
#define XDPWG_TENANT_PROG_NAME "xdpwg_tenant"

/* Map names, as libbpf finds them in the object (both programs define the same set; the
 * tenant program leaves xdpwg_ports out). */
#define XDPWG_XSKS_MAP_NAME "xsks_map"               /* XSKMAP: rx queue -> AF_XDP socket */
#define XDPWG_PORTS_MAP_NAME "xdpwg_ports"           /* ARRAY: bitmap of our UDP ports */
#define XDPWG_VERDICTS_MAP_NAME "xdpwg_verdicts"     /* PERCPU_ARRAY: packets per verdict */
#define XDPWG_QUEUE_REDIRECTS_MAP_NAME "xdpwg_qredirect" /* PERCPU_ARRAY: redirects per rx queue */
#define XDPWG_LIMITS_MAP_NAME "xdpwg_limits"         /* ARRAY, uplink only: xdpwg_frame_limit_t */

/* Receive queues an interface may use with us: the size of xsks_map and of the per-queue
 * redirect counters. A packet arriving on a higher queue finds no socket (counted). */
#define XDPWG_MAX_QUEUES 64

/*
 * Our UDP ports as a bitmap: 65536 bits in 1024 array entries of 64 bits. Port p is ours when
 * bit (p % 64) of entry (p / 64) is set. One inlined array lookup per packet and 8 KiB of
 * kernel memory, where an array keyed by port would take 512 KiB (entries round up to 8 bytes)
 * and a hash map would hash every UDP packet. Swift replaces the set word by word: a port in
 * both the old and the new set stays visible throughout.
 */
#define XDPWG_PORT_WORD_BITS 64
#define XDPWG_PORT_WORDS (65536 / XDPWG_PORT_WORD_BITS)

/*
 * What the programs did with a packet: the index into xdpwg_verdicts. Every drop has its own
 * counter. The tenant program uses only REDIRECTED, PASSED and DROPPED_NO_SOCKET.
 */
enum xdpwg_verdict {
	/* Handed to the AF_XDP socket registered for the packet's rx queue. */
	XDPWG_VERDICT_REDIRECTED = 0,
	/* Not ours (other port, other protocol, IPv6 extension header, ...): to the kernel. */
	XDPWG_VERDICT_PASSED = 1,
	/* Ours, but no socket is registered for its rx queue: dropped. */
	XDPWG_VERDICT_DROPPED_NO_SOCKET = 2,
	/* The first fragment of a fragmented IPv4 datagram to our port: WireGuard never
	 * fragments (it pads to the MTU), and the data path does not reassemble. */
	XDPWG_VERDICT_DROPPED_FRAGMENT = 3,
	/* To our port, but the UDP length disagrees with the IP length, or the frame is
	 * shorter than the IP header says. */
	XDPWG_VERDICT_DROPPED_BAD_LENGTH = 4,
	/* To our port, but the message type is not 1..4 or its three reserved bytes are not
	 * zero. */
	XDPWG_VERDICT_DROPPED_BAD_TYPE = 5,
	/* To our port, but the message size is not the one its type requires (148, 92, 64, or
	 * at least 32 for transport data), or is shorter than the 4-byte header. */
	XDPWG_VERDICT_DROPPED_BAD_SIZE = 6,
	/* To our port and well formed, but the frame is longer than an AF_XDP frame holds
	 * (xdpwg_limits): the kernel would drop it after the redirect, counting it only in the
	 * socket's rx_dropped, so it is dropped and counted here. A jumbo-MTU uplink, or an
	 * attacker's oversized datagram, is then visible in the stats. */
	XDPWG_VERDICT_DROPPED_TOO_BIG = 7,
	XDPWG_VERDICT_COUNT = 8
};

/* WireGuard message sizes (UDP payload bytes) the uplink program accepts. */
#define XDPWG_MSG_INITIATION_SIZE 148
#define XDPWG_MSG_RESPONSE_SIZE 92
#define XDPWG_MSG_COOKIE_REPLY_SIZE 64
#define XDPWG_MSG_TRANSPORT_MIN_SIZE 32 /* 16-byte header + 16-byte tag: a keepalive */

/*
 * The kernel's headroom before received data in an AF_XDP frame (XDP_PACKET_HEADROOM in
 * <linux/bpf.h>): a frame of N bytes receives at most N - 256 bytes of Ethernet frame.
 */
#define XDPWG_XSK_RX_HEADROOM 256

/* Value layouts of the maps, pinned on both sides. */
typedef __u64 xdpwg_counter_t;   /* one CPU's slot in a PERCPU_ARRAY entry */
/* xdpwg_limits' single entry (key 0): the longest Ethernet frame the uplink program
 * redirects (AF_XDP frame size - XDPWG_XSK_RX_HEADROOM); 0 means no limit. */
typedef __u32 xdpwg_frame_limit_t;
typedef __u64 xdpwg_port_word_t; /* one entry of xdpwg_ports */
typedef __u32 xdpwg_xsk_fd_t;    /* the value userspace writes into xsks_map: a socket fd */

_Static_assert(sizeof(xdpwg_counter_t) == 8, "counters are 64-bit");
_Static_assert(sizeof(xdpwg_port_word_t) * 8 == XDPWG_PORT_WORD_BITS, "a port word holds 64 ports");
_Static_assert(XDPWG_PORT_WORDS * XDPWG_PORT_WORD_BITS == 65536, "the bitmap covers every port");
_Static_assert(sizeof(xdpwg_xsk_fd_t) == 4, "XSKMAP values are 32-bit file descriptors");
_Static_assert(XDPWG_VERDICT_COUNT == 8, "update the Swift XDPVerdict enum with this list");
_Static_assert(sizeof(XDPWG_LIMITS_MAP_NAME) <= 16, "kernel object names are 15 chars");
_Static_assert(sizeof(XDPWG_QUEUE_REDIRECTS_MAP_NAME) <= 16, "kernel object names are 15 chars");
_Static_assert(sizeof(XDPWG_VERDICTS_MAP_NAME) <= 16, "kernel object names are 15 chars");
_Static_assert(sizeof(XDPWG_UPLINK_PROG_NAME) <= 16, "kernel object names are 15 chars");
_Static_assert(sizeof(XDPWG_TENANT_PROG_NAME) <= 16, "kernel object names are 15 chars");

#endif /* XDPWG_SHARED_H */
