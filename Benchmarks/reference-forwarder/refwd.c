/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * xdpwg-refwd: the perf lab's reference forwarder. It moves frames exactly the way xdpwg's
 * worker does (Sources/Engine/DataPlane/Worker.swift), without crypto, tables or routing:
 *
 *   decrypt direction  uplink AF_XDP RX (batch <= 64) -> copy the WireGuard type-4 payload
 *                      minus its 16-byte header and 16-byte tag (the "plaintext" inner IP
 *                      packet) into a frame of the tenant's UMEM behind a new Ethernet header
 *                      -> tenant AF_XDP TX, one burst per batch, kick;
 *   encrypt direction  tenant AF_XDP RX -> copy the inner IP packet into a frame of the
 *                      uplink's UMEM behind Ethernet/IPv4/UDP and a WireGuard type-4 header,
 *                      zero padding to 16 and a zero 16-byte tag -> uplink AF_XDP TX, kick.
 *
 * What it measures is the engine ceiling of a machine: the most a single pinned core can
 * forward through two AF_XDP sockets with xdpwg's ring sizes, batch, frame size and kick
 * policy. See README.md.
 *
 * One process, one thread, one uplink queue and one tenant queue; one UMEM per socket (as
 * xdpwg: a socket sharing a UMEM would inherit its copy/zero-copy mode). Busy loop, no poll.
 *
 * Ring protocol (libxdp <xdp/xsk.h>, kernel net/xdp/xsk_queue.h). We add no barrier of our
 * own; the ones inside the helpers are what make the hand-overs safe:
 *   - xsk_ring_cons__peek (RX, completion) loads the kernel's producer index with ACQUIRE
 *     when its cached view is empty: descriptors and frame bytes the kernel wrote before
 *     publishing are visible after it.
 *   - xsk_ring_cons__release stores our consumer index with RELEASE: our reads of the
 *     descriptors happen before the kernel may reuse those slots.
 *   - xsk_prod_nb_free / xsk_ring_prod__reserve (fill, TX) load the kernel's consumer index
 *     with ACQUIRE when the cached view is short: the slots it reports free are really done.
 *   - xsk_ring_prod__submit stores our producer index with RELEASE: the descriptors (and the
 *     frame bytes they point to) are written before the kernel can see them.
 * A frame is owned by exactly one party at a time: the pool (ours, free), the fill ring or
 * RX ring (the kernel's until peeked), us while processing, the TX ring (the kernel's until it
 * comes back on the completion ring).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

/* The XDP object, compiled from refwd.bpf.c and embedded at build time (the Makefile passes
 * its path), so the forwarder is one file to copy into a namespace or onto another host. */
#ifndef REFWD_BPF_OBJECT
#error "build with -DREFWD_BPF_OBJECT='\"path/to/refwd.bpf.o\"' (see the Makefile)"
#endif
__asm__(".pushsection .rodata\n"
	".balign 8\n"
	".globl refwd_bpf_object\n.hidden refwd_bpf_object\n"
	"refwd_bpf_object:\n"
	".incbin \"" REFWD_BPF_OBJECT "\"\n"
	".globl refwd_bpf_object_end\n.hidden refwd_bpf_object_end\n"
	"refwd_bpf_object_end:\n"
	".popsection\n");
extern const unsigned char refwd_bpf_object[];
extern const unsigned char refwd_bpf_object_end[];

#define ETH_HLEN 14
#define IP4_HLEN 20
#define UDP_HLEN 8
#define OUTER_HLEN (ETH_HLEN + IP4_HLEN + UDP_HLEN) /* 42 */
#define WG_HLEN 16                                 /* type, reserved, receiver, counter */
#define WG_TAG 16                                  /* Poly1305 tag: zeros here */
#define WG_TRANSPORT 4
#define MAX_BATCH 256
#define XDP_HEADROOM 256 /* the kernel's headroom before received data (XDP_PACKET_HEADROOM) */

/* ---------------------------------------------------------------- options */

struct options {
	const char *uplink, *tenant;
	unsigned uplink_queue, tenant_queue;
	unsigned port;                   /* our UDP port: steered by XDP, source of encrypted frames */
	uint8_t tenant_mac[6];           /* destination of frames to the tenant (inner veth end) */
	uint8_t tenant_src_mac[6];       /* source of those frames (default: the host end's MAC) */
	uint8_t local_mac[6], peer_mac[6];
	struct in_addr local_ip, peer_ip;
	unsigned peer_port;
	bool have_tenant_mac, have_tenant_src_mac, have_local_mac, have_peer_mac;
	bool have_local_ip, have_peer_ip, have_peer_port;
	uint32_t receiver_index;
	int cpu;                         /* -1: not pinned */
	bool generic;                    /* XDP in generic (skb) mode instead of native */
	unsigned frame_size, batch;
	unsigned ring, fill, uplink_frames, reserve; /* uplink: RX/TX/completion, fill, UMEM, reserve */
	unsigned tenant_ring, tenant_frames;         /* tenant: RX/TX/fill/completion, UMEM */
	double stats_interval;           /* seconds; 0: only on SIGUSR1 and at exit */
};

static void usage(FILE *out)
{
	fprintf(out,
"Usage: xdpwg-refwd --uplink IF --tenant IF --tenant-mac MAC [options]\n"
"\n"
"The perf lab's reference forwarder: xdpwg's data movement without crypto, on one pinned\n"
"core. Uplink RX -> copy the WireGuard type-4 payload (minus header and tag) into a tenant\n"
"frame behind an Ethernet header -> tenant TX; tenant RX -> copy the IP packet into an\n"
"uplink frame behind Ethernet/IPv4/UDP/WireGuard headers, zero padding and a zero tag ->\n"
"uplink TX. Attaches its own XDP programs to both interfaces (bpf_link: they go away when the\n"
"process does). Run it in the namespace where both interfaces live, as root.\n"
"\n"
"Interfaces:\n"
"  --uplink IF            uplink interface (required)\n"
"  --uplink-queue N       its queue (default 0)\n"
"  --tenant IF            host end of the tenant veth (required)\n"
"  --tenant-queue N       its queue (default 0)\n"
"  --port N               UDP port steered off the uplink; source port of encrypted\n"
"                         frames (default 51820)\n"
"\n"
"Decrypt direction (to the tenant):\n"
"  --tenant-mac MAC       destination MAC of frames sent to the tenant: the MAC of the\n"
"                         veth end inside the tenant namespace (required)\n"
"  --tenant-src-mac MAC   their source MAC (default: the MAC of --tenant)\n"
"\n"
"Encrypt direction (to the peer): the outer header of every frame. Whatever is not given\n"
"is learned from the first type-4 frame received on the uplink (its source becomes the\n"
"peer, its destination our local address); until then tenant frames are dropped and\n"
"counted as enc_drop_no_peer.\n"
"  --local-ip A           outer IPv4 source\n"
"  --local-mac MAC        outer Ethernet source (default: the MAC of --uplink)\n"
"  --peer-ip A            outer IPv4 destination\n"
"  --peer-port N          outer UDP destination port\n"
"  --peer-mac MAC         outer Ethernet destination (the next hop)\n"
"  --receiver-index N     receiver index written into the WireGuard header (default 1);\n"
"                         the 64-bit counter starts at 0 and counts up per frame\n"
"\n"
"Engine (defaults are xdpwg's):\n"
"  --cpu N                pin to CPU N (default: not pinned)\n"
"  --xdp-mode MODE        native (default) or generic\n"
"  --frame-size N         UMEM frame size, 2048 or 4096 (default 2048)\n"
"  --batch N              descriptors per RX batch, 1..%d (default 64)\n"
"  --ring N               uplink RX, TX and completion ring entries (default 2048)\n"
"  --fill N               uplink fill ring entries (default 4096)\n"
"  --uplink-frames N      uplink UMEM frames (default 8192)\n"
"  --reserve N            uplink frames kept off the fill ring for the encrypt\n"
"                         direction (default 512)\n"
"  --tenant-ring N        tenant RX, TX, fill and completion ring entries (default 1024)\n"
"  --tenant-frames N      tenant UMEM frames (default 2048; half go to the fill ring)\n"
"\n"
"Output (stdout, one JSON object per line):\n"
"  {\"refwd\":\"ready\",...}  once both sockets are bound and both programs attached\n"
"  {\"refwd\":\"stats\",...}  every --stats-interval seconds (default 0: never) and on SIGUSR1\n"
"  {\"refwd\":\"exit\",...}   on SIGINT, SIGTERM or SIGHUP, after which it detaches its\n"
"                         programs, frees everything and exits 0\n"
"  --stats-interval S     seconds between stats lines (fractions allowed)\n"
"  --help                 this text\n"
"\n"
"Counters: dec_* and enc_* per direction (rx, tx, bytes, drops by reason), batches, kicks,\n"
"fill wakeups, idle loops, and the kernel's XDP_STATISTICS of both sockets (*_xsk_*).\n"
"Exit status: 0 after a signal, 1 when setup or the loop failed, 2 for bad arguments.\n",
		MAX_BATCH);
}

/* ---------------------------------------------------------------- state */

/* A fixed-capacity LIFO of free frame addresses (frame starts) of one UMEM. */
struct pool {
	uint64_t *slots;
	uint32_t count, capacity;
	uint64_t mask; /* clears the in-frame offset (aligned mode) */
};

struct xsk {
	const char *name;
	unsigned queue;
	int ifindex;
	uint8_t mac[6];
	void *area;           /* UMEM memory */
	size_t area_len;
	struct xsk_umem *umem;
	struct xsk_socket *socket;
	int fd;
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	struct pool pool;
	uint32_t fill_target; /* frames the fill ring holds when full */
	uint32_t reserve;     /* frames kept in the pool, not given to the fill ring */
	int link_fd;          /* the XDP program's bpf_link: closing it detaches */
	bool zero_copy;
};

struct counters {
	uint64_t dec_rx, dec_rx_bytes, dec_tx, dec_tx_bytes, dec_keepalive;
	uint64_t dec_drop_not_transport, dec_drop_malformed, dec_drop_too_big, dec_drop_no_frame,
		dec_drop_tx_ring_full;
	uint64_t enc_rx, enc_rx_bytes, enc_tx, enc_tx_bytes;
	uint64_t enc_drop_malformed, enc_drop_no_peer, enc_drop_too_big, enc_drop_no_frame,
		enc_drop_tx_ring_full;
	uint64_t uplink_batches, tenant_batches, uplink_kicks, tenant_kicks, kick_errors;
	uint64_t fill_wakeups, idle_loops, completions;
	int last_kick_errno;
};

/* The outer header of encrypted frames, built once (when known) and patched per frame. */
struct outer {
	bool ready;
	uint8_t bytes[OUTER_HLEN];
	uint32_t partial_sum; /* ones'-complement sum of the IPv4 header with length and checksum 0 */
};

static struct options opt;
static struct xsk up = { .fd = -1, .link_fd = -1 }, ten = { .fd = -1, .link_fd = -1 };
static struct bpf_object *obj;
static struct counters cnt;
static struct outer outer;
static uint64_t wg_counter;
static struct timespec started;

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t stats_requested;

/* Frames of one batch on their way to a TX ring: (UMEM address, length). */
static struct xdp_desc pending[MAX_BATCH];

/* ---------------------------------------------------------------- helpers */

static void on_stop(int sig) { stop_signal = sig; }
static void on_usr1(int sig) { (void)sig; stats_requested = 1; }

static double now_seconds(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - started.tv_sec) + (double)(t.tv_nsec - started.tv_nsec) / 1e9;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	fprintf(stderr, "xdpwg-refwd: libbpf: ");
	return vfprintf(stderr, fmt, args);
}

static bool parse_mac(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	char tail;
	if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
		return false;
	for (int i = 0; i < 6; i++) {
		if (b[i] > 255)
			return false;
		mac[i] = (uint8_t)b[i];
	}
	return true;
}

static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

static bool is_power_of_two(unsigned v) { return v && !(v & (v - 1)); }

static int interface_mac(const char *name, uint8_t mac[6])
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return errno;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int rc = ioctl(s, SIOCGIFHWADDR, &ifr) ? errno : 0;
	close(s);
	if (!rc)
		memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
	return rc;
}

/* RFC 1071 sum of 16-bit big-endian words (n even), not folded. */
static uint32_t sum16(const uint8_t *p, size_t n)
{
	uint32_t s = 0;
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

/* Builds the outer header template once every field is known. */
static void build_outer(void)
{
	uint8_t *h = outer.bytes;
	memset(h, 0, sizeof(outer.bytes));
	memcpy(h, opt.peer_mac, 6);
	memcpy(h + 6, opt.local_mac, 6);
	put16(h + 12, 0x0800);
	uint8_t *ip = h + ETH_HLEN;
	ip[0] = 0x45;
	put16(ip + 6, 0x4000); /* don't fragment, as xdpwg and the kernel send */
	ip[8] = 64;            /* TTL */
	ip[9] = 17;            /* UDP */
	memcpy(ip + 12, &opt.local_ip, 4);
	memcpy(ip + 16, &opt.peer_ip, 4);
	outer.partial_sum = sum16(ip, IP4_HLEN); /* total length and checksum still 0 */
	uint8_t *udp = ip + IP4_HLEN;
	put16(udp, (uint16_t)opt.port);
	put16(udp + 2, (uint16_t)opt.peer_port);
	/* UDP length per frame; checksum 0 (none: RFC 768 allows it over IPv4). */
	outer.ready = true;
}

/* Length of the IP packet at p (IPv4 total length or IPv6 40 + payload length), or 0 if it
 * is not a well-formed IPv4/IPv6 header within `avail` bytes. */
static inline uint32_t ip_packet_length(const uint8_t *p, uint32_t avail)
{
	if (avail < 1)
		return 0;
	uint32_t len;
	if (p[0] >> 4 == 4) {
		if (avail < IP4_HLEN || (p[0] & 0x0f) < 5)
			return 0;
		len = get16(p + 2);
		if (len < (uint32_t)(p[0] & 0x0f) * 4)
			return 0;
	} else if (p[0] >> 4 == 6) {
		if (avail < 40)
			return 0;
		len = 40 + (uint32_t)get16(p + 4);
	} else {
		return 0;
	}
	return len <= avail ? len : 0;
}

/* ---------------------------------------------------------------- rings */

static inline uint64_t *pool_top(struct pool *p) { return &p->slots[p->count]; }

static inline bool pool_pop(struct pool *p, uint64_t *addr)
{
	if (!p->count)
		return false;
	*addr = p->slots[--p->count];
	return true;
}

static inline void pool_push(struct pool *p, uint64_t addr)
{
	/* More frees than frames would hand one frame to the kernel twice: stop here. */
	if (p->count >= p->capacity) {
		fprintf(stderr, "xdpwg-refwd: BUG: frame pool overflow (a frame freed twice)\n");
		abort();
	}
	p->slots[p->count++] = addr & p->mask;
}

/* Frames on a producer ring the kernel has not consumed yet (ACQUIRE on its consumer index
 * inside xsk_prod_nb_free). */
static inline uint32_t outstanding(struct xsk_ring_prod *r)
{
	return r->size - xsk_prod_nb_free(r, r->size);
}

/* Completed TX frames go back to the pool. */
static inline uint32_t reclaim(struct xsk *s)
{
	uint32_t idx;
	uint32_t n = xsk_ring_cons__peek(&s->comp, opt.batch * 4, &idx); /* ACQUIRE */
	if (!n)
		return 0;
	for (uint32_t i = 0; i < n; i++)
		pool_push(&s->pool, *xsk_ring_cons__comp_addr(&s->comp, idx + i));
	xsk_ring_cons__release(&s->comp, n); /* RELEASE: addresses read before the slots are reused */
	cnt.completions += n;
	return n;
}

/* Tops the fill ring up to its target from the pool, keeping `reserve` frames back. */
static inline void refill(struct xsk *s)
{
	if (s->pool.count > s->reserve) {
		uint32_t have = outstanding(&s->fill);
		uint32_t want = have < s->fill_target ? s->fill_target - have : 0;
		uint32_t spare = s->pool.count - s->reserve;
		if (want > spare)
			want = spare;
		uint32_t idx;
		if (want && xsk_ring_prod__reserve(&s->fill, want, &idx) == want) {
			uint64_t *top = pool_top(&s->pool);
			for (uint32_t i = 0; i < want; i++)
				*xsk_ring_prod__fill_addr(&s->fill, idx + i) = *--top;
			s->pool.count -= want;
			/* RELEASE: the addresses are in the ring before the kernel sees them. */
			xsk_ring_prod__submit(&s->fill, want);
		}
	}
	/* Copy mode never asks; a zero-copy driver that ran dry does. */
	if (xsk_ring_prod__needs_wakeup(&s->fill)) {
		recvfrom(s->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
		cnt.fill_wakeups++;
	}
}

/* sendto(fd, NULL, 0, MSG_DONTWAIT): 0, or an errno the kernel should not give a bound
 * socket. Tolerated: EAGAIN (copy mode sent its 32 and more remain, or the completion ring is
 * full), EBUSY (the device dropped a frame; it still completes), ENOBUFS (no skb now),
 * ENETDOWN (the descriptors wait). EINTR is retried. */
static inline int kick_once(int fd)
{
	for (;;) {
		if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
			return 0;
		int e = errno;
		if (e == EINTR)
			continue;
		if (e == EAGAIN || e == EBUSY || e == ENOBUFS || e == ENETDOWN)
			return 0;
		return e;
	}
}

/* xdpwg's kick policy: copy mode sends at most 32 descriptors per sendto, so kick until the
 * ring is empty or a kick makes no progress (completion ring full: the next iteration drains
 * it and kicks again), at most 8 times. */
static inline void kick(struct xsk *s, uint64_t *kicks)
{
	if (!xsk_ring_prod__needs_wakeup(&s->tx))
		return;
	uint32_t remaining = outstanding(&s->tx);
	int n = 0;
	while (remaining && n < 8) {
		int e = kick_once(s->fd);
		n++;
		if (e) {
			cnt.kick_errors++;
			cnt.last_kick_errno = e;
			break;
		}
		uint32_t after = outstanding(&s->tx);
		if (after >= remaining)
			break;
		remaining = after;
	}
	*kicks += (uint64_t)n;
}

/* Puts pending[0..n) on s's TX ring in one burst and kicks; what the ring cannot take goes
 * back to the pool, counted. */
static inline void transmit(struct xsk *s, uint32_t n, uint64_t *tx, uint64_t *tx_bytes,
			    uint64_t *ring_full, uint64_t *kicks)
{
	uint32_t free_slots = xsk_prod_nb_free(&s->tx, n); /* ACQUIRE if the cached view is short */
	uint32_t accepted = n < free_slots ? n : free_slots;
	uint32_t idx;
	if (accepted && xsk_ring_prod__reserve(&s->tx, accepted, &idx) == accepted) {
		uint64_t bytes = 0;
		for (uint32_t i = 0; i < accepted; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&s->tx, idx + i);
			*d = pending[i];
			bytes += pending[i].len;
		}
		/* RELEASE: descriptors and frame bytes are written before the kernel sees them. */
		xsk_ring_prod__submit(&s->tx, accepted);
		*tx += accepted;
		*tx_bytes += bytes;
		kick(s, kicks);
	} else {
		accepted = 0;
	}
	if (accepted < n) {
		*ring_full += n - accepted;
		for (uint32_t i = accepted; i < n; i++)
			pool_push(&s->pool, pending[i].addr);
	}
}

/* ---------------------------------------------------------------- the two directions */

/* Learns whatever the command line left out of the outer header from a received frame. */
static void learn_peer(const uint8_t *f, const uint8_t *ip, const uint8_t *udp)
{
	if (!opt.have_peer_mac)
		memcpy(opt.peer_mac, f + 6, 6);
	if (!opt.have_peer_ip)
		memcpy(&opt.peer_ip, ip + 12, 4);
	if (!opt.have_local_ip)
		memcpy(&opt.local_ip, ip + 16, 4);
	if (!opt.have_peer_port)
		opt.peer_port = get16(udp);
	build_outer();
	char peer[INET_ADDRSTRLEN], local[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &opt.peer_ip, peer, sizeof(peer));
	inet_ntop(AF_INET, &opt.local_ip, local, sizeof(local));
	fprintf(stderr, "xdpwg-refwd: outer header learned: %s:%u -> %s:%u, next hop %02x:%02x:%02x:%02x:%02x:%02x\n",
		local, opt.port, peer, opt.peer_port, opt.peer_mac[0], opt.peer_mac[1], opt.peer_mac[2],
		opt.peer_mac[3], opt.peer_mac[4], opt.peer_mac[5]);
}

/* Uplink RX -> tenant TX. Returns the number of frames received. */
static inline uint32_t decrypt_batch(void)
{
	uint32_t idx;
	uint32_t n = xsk_ring_cons__peek(&up.rx, opt.batch, &idx); /* ACQUIRE */
	if (!n)
		return 0;
	cnt.uplink_batches++;
	cnt.dec_rx += n;
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&up.rx, idx + i);
		const uint8_t *f = xsk_umem__get_data(up.area, d->addr);
		uint32_t len = d->len;
		cnt.dec_rx_bytes += len;
		/* Outer Ethernet/IPv4/UDP (the XDP program steered only IPv4 UDP to our port). */
		const uint8_t *ip = f + ETH_HLEN;
		uint32_t ihl = len >= OUTER_HLEN ? (ip[0] & 0x0f) * 4u : 0;
		if (ihl < IP4_HLEN || get16(f + 12) != 0x0800 || len < ETH_HLEN + ihl + UDP_HLEN) {
			cnt.dec_drop_malformed++;
			goto recycle;
		}
		const uint8_t *udp = ip + ihl;
		uint32_t udp_len = get16(udp + 4);
		if (udp_len < UDP_HLEN || ETH_HLEN + ihl + udp_len > len) {
			cnt.dec_drop_malformed++;
			goto recycle;
		}
		const uint8_t *msg = udp + UDP_HLEN;
		uint32_t msg_len = udp_len - UDP_HLEN;
		if (msg_len < WG_HLEN + WG_TAG || msg[0] != WG_TRANSPORT || msg[1] || msg[2] || msg[3]) {
			cnt.dec_drop_not_transport++;
			goto recycle;
		}
		if (!outer.ready)
			learn_peer(f, ip, udp);
		uint32_t plain_len = msg_len - WG_HLEN - WG_TAG;
		if (!plain_len) {
			cnt.dec_keepalive++; /* xdpwg consumes keepalives: nothing to deliver */
			goto recycle;
		}
		const uint8_t *inner = msg + WG_HLEN;
		uint32_t pkt_len = ip_packet_length(inner, plain_len); /* padding stays behind */
		if (!pkt_len) {
			cnt.dec_drop_malformed++;
			goto recycle;
		}
		if (ETH_HLEN + pkt_len > opt.frame_size) {
			cnt.dec_drop_too_big++;
			goto recycle;
		}
		uint64_t out;
		if (!pool_pop(&ten.pool, &out)) {
			cnt.dec_drop_no_frame++;
			goto recycle;
		}
		/* Out of place, as xdpwg decrypts: uplink frame -> tenant frame, Ethernet in front. */
		uint8_t *t = xsk_umem__get_data(ten.area, out);
		memcpy(t, opt.tenant_mac, 6);
		memcpy(t + 6, opt.tenant_src_mac, 6);
		put16(t + 12, inner[0] >> 4 == 6 ? 0x86dd : 0x0800);
		memcpy(t + ETH_HLEN, inner, pkt_len);
		pending[k].addr = out;
		pending[k].len = ETH_HLEN + pkt_len;
		pending[k].options = 0;
		k++;
recycle:
		/* The uplink frame was only read: it is free now (refilled after the release). */
		pool_push(&up.pool, d->addr);
	}
	xsk_ring_cons__release(&up.rx, n); /* RELEASE: descriptor reads done */
	if (k)
		transmit(&ten, k, &cnt.dec_tx, &cnt.dec_tx_bytes, &cnt.dec_drop_tx_ring_full, &cnt.tenant_kicks);
	return n;
}

/* Tenant RX -> uplink TX. Returns the number of frames received. */
static inline uint32_t encrypt_batch(void)
{
	uint32_t idx;
	uint32_t n = xsk_ring_cons__peek(&ten.rx, opt.batch, &idx); /* ACQUIRE */
	if (!n)
		return 0;
	cnt.tenant_batches++;
	cnt.enc_rx += n;
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&ten.rx, idx + i);
		const uint8_t *f = xsk_umem__get_data(ten.area, d->addr);
		uint32_t len = d->len;
		cnt.enc_rx_bytes += len;
		uint16_t type = len > ETH_HLEN ? get16(f + 12) : 0;
		uint32_t pkt_len = len > ETH_HLEN ? ip_packet_length(f + ETH_HLEN, len - ETH_HLEN) : 0;
		if (!pkt_len || (type != 0x0800 && type != 0x86dd) ||
		    (type == 0x86dd) != (f[ETH_HLEN] >> 4 == 6)) {
			cnt.enc_drop_malformed++;
			goto recycle;
		}
		if (!outer.ready) {
			cnt.enc_drop_no_peer++;
			goto recycle;
		}
		uint32_t padded = (pkt_len + 15) & ~15u;
		uint32_t msg_len = WG_HLEN + padded + WG_TAG;
		uint32_t total = OUTER_HLEN + msg_len;
		if (total > opt.frame_size) {
			cnt.enc_drop_too_big++;
			goto recycle;
		}
		uint64_t out;
		if (!pool_pop(&up.pool, &out)) {
			cnt.enc_drop_no_frame++;
			goto recycle;
		}
		uint8_t *p = xsk_umem__get_data(up.area, out);
		memcpy(p, outer.bytes, OUTER_HLEN);
		uint8_t *ip = p + ETH_HLEN;
		uint16_t ip_len = (uint16_t)(IP4_HLEN + UDP_HLEN + msg_len);
		put16(ip + 2, ip_len);
		put16(ip + 10, fold(outer.partial_sum + ip_len));
		put16(ip + IP4_HLEN + 4, (uint16_t)(UDP_HLEN + msg_len));
		uint8_t *msg = p + OUTER_HLEN;
		/* WireGuard type-4 header: type, 3 reserved zeros, receiver (LE32), counter (LE64). */
		msg[0] = WG_TRANSPORT;
		msg[1] = msg[2] = msg[3] = 0;
		uint32_t r = opt.receiver_index;
		uint64_t c = wg_counter++;
		for (int b = 0; b < 4; b++)
			msg[4 + b] = (uint8_t)(r >> (8 * b));
		for (int b = 0; b < 8; b++)
			msg[8 + b] = (uint8_t)(c >> (8 * b));
		memcpy(msg + WG_HLEN, f + ETH_HLEN, pkt_len);
		memset(msg + WG_HLEN + pkt_len, 0, padded - pkt_len + WG_TAG); /* padding + "tag" */
		pending[k].addr = out;
		pending[k].len = total;
		pending[k].options = 0;
		k++;
recycle:
		pool_push(&ten.pool, d->addr);
	}
	xsk_ring_cons__release(&ten.rx, n); /* RELEASE: descriptor reads done */
	if (k)
		transmit(&up, k, &cnt.enc_tx, &cnt.enc_tx_bytes, &cnt.enc_drop_tx_ring_full, &cnt.uplink_kicks);
	return n;
}

/* ---------------------------------------------------------------- stats */

static void print_xsk_stats(const char *prefix, struct xsk *s)
{
	struct xdp_statistics st;
	socklen_t len = sizeof(st);
	memset(&st, 0, sizeof(st));
	if (s->fd < 0 || getsockopt(s->fd, SOL_XDP, XDP_STATISTICS, &st, &len))
		return;
	printf(",\"%s_xsk_rx_dropped\":%llu,\"%s_xsk_rx_ring_full\":%llu,\"%s_xsk_fill_ring_empty\":%llu,"
	       "\"%s_xsk_rx_invalid\":%llu,\"%s_xsk_tx_invalid\":%llu,\"%s_xsk_tx_ring_empty\":%llu",
	       prefix, (unsigned long long)st.rx_dropped, prefix, (unsigned long long)st.rx_ring_full,
	       prefix, (unsigned long long)st.rx_fill_ring_empty_descs, prefix,
	       (unsigned long long)st.rx_invalid_descs, prefix, (unsigned long long)st.tx_invalid_descs,
	       prefix, (unsigned long long)st.tx_ring_empty_descs);
}

static void print_stats(const char *event)
{
#define C(name) printf(",\"" #name "\":%llu", (unsigned long long)cnt.name)
	printf("{\"refwd\":\"%s\",\"seconds\":%.6f", event, now_seconds());
	C(dec_rx); C(dec_rx_bytes); C(dec_tx); C(dec_tx_bytes); C(dec_keepalive);
	C(dec_drop_not_transport); C(dec_drop_malformed); C(dec_drop_too_big); C(dec_drop_no_frame);
	C(dec_drop_tx_ring_full);
	C(enc_rx); C(enc_rx_bytes); C(enc_tx); C(enc_tx_bytes);
	C(enc_drop_malformed); C(enc_drop_no_peer); C(enc_drop_too_big); C(enc_drop_no_frame);
	C(enc_drop_tx_ring_full);
	C(uplink_batches); C(tenant_batches); C(uplink_kicks); C(tenant_kicks); C(kick_errors);
	C(fill_wakeups); C(idle_loops); C(completions);
#undef C
	printf(",\"last_kick_errno\":%d,\"peer_learned\":%s", cnt.last_kick_errno, outer.ready ? "true" : "false");
	print_xsk_stats("uplink", &up);
	print_xsk_stats("tenant", &ten);
	printf("}\n");
	fflush(stdout);
}

/* ---------------------------------------------------------------- setup and teardown */

static void fail(const char *step, const char *name, int err)
{
	fprintf(stderr, "xdpwg-refwd: %s%s%s: %s\n", step, name ? " " : "", name ? name : "", strerror(err));
}

static void teardown_xsk(struct xsk *s)
{
	/* Program first, so nothing is redirected to a socket that is going away. */
	if (s->link_fd >= 0)
		close(s->link_fd);
	s->link_fd = -1;
	if (s->socket)
		xsk_socket__delete(s->socket); /* unmaps the rings, closes the fd */
	s->socket = NULL;
	s->fd = -1;
	if (s->umem)
		xsk_umem__delete(s->umem);
	s->umem = NULL;
	if (s->area)
		munmap(s->area, s->area_len);
	s->area = NULL;
	free(s->pool.slots);
	s->pool.slots = NULL;
}

static void teardown(void)
{
	teardown_xsk(&up);
	teardown_xsk(&ten);
	if (obj)
		bpf_object__close(obj);
	obj = NULL;
}

/* A UMEM of `frames` frames and one AF_XDP socket on it, all frames in the pool. */
static int setup_xsk(struct xsk *s, unsigned frames, unsigned fill_size, unsigned ring_size,
		     bool copy_mode)
{
	s->area_len = (size_t)frames * opt.frame_size;
	void *area = mmap(NULL, s->area_len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (area == MAP_FAILED) {
		fail("mmap UMEM for", s->name, errno);
		return -1;
	}
	s->area = area;
	struct xsk_umem_config ucfg = {
		.fill_size = fill_size,
		.comp_size = ring_size,
		.frame_size = opt.frame_size,
		.frame_headroom = 0,
		.flags = 0,
	};
	int rc = xsk_umem__create(&s->umem, s->area, s->area_len, &s->fill, &s->comp, &ucfg);
	if (rc) {
		s->umem = NULL;
		fail("xsk_umem__create for", s->name, -rc);
		return -1;
	}
	struct xsk_socket_config scfg;
	memset(&scfg, 0, sizeof(scfg));
	scfg.rx_size = ring_size;
	scfg.tx_size = ring_size;
	/* Our own XDP program steers; libxdp must not load its own. */
	scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD;
	/* As xdpwg: need_wakeup always; copy mode forced on the tenant veth, the uplink left to
	 * the kernel (copy on veth, zero-copy on a NIC that can). */
	scfg.bind_flags = XDP_USE_NEED_WAKEUP | (copy_mode ? XDP_COPY : 0);
	rc = xsk_socket__create(&s->socket, s->name, s->queue, s->umem, &s->rx, &s->tx, &scfg);
	if (rc) {
		s->socket = NULL;
		fprintf(stderr, "xdpwg-refwd: xsk_socket__create on %s queue %u: %s%s\n", s->name, s->queue,
			strerror(-rc),
			-rc == EBUSY ? " (another AF_XDP socket is bound to this queue)"
			: -rc == EINVAL ? " (does the interface have this queue?)" : "");
		return -1;
	}
	s->fd = xsk_socket__fd(s->socket);
	struct xdp_options xo;
	socklen_t len = sizeof(xo);
	if (!getsockopt(s->fd, SOL_XDP, XDP_OPTIONS, &xo, &len))
		s->zero_copy = xo.flags & XDP_OPTIONS_ZEROCOPY;

	s->pool.slots = calloc(frames, sizeof(uint64_t));
	if (!s->pool.slots) {
		fail("allocate the frame pool for", s->name, ENOMEM);
		return -1;
	}
	s->pool.capacity = frames;
	s->pool.mask = ~(uint64_t)(opt.frame_size - 1);
	for (unsigned i = frames; i-- > 0;)
		s->pool.slots[s->pool.count++] = (uint64_t)i * opt.frame_size; /* first pop: frame 0 */
	return 0;
}

/* Registers s's socket in `map` at its queue and attaches `prog` to its interface. */
static int attach(struct xsk *s, const char *map_name, const char *prog_name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, map_name);
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, prog_name);
	if (!map || !prog) {
		fprintf(stderr, "xdpwg-refwd: the embedded XDP object lacks %s or %s\n", map_name, prog_name);
		return -1;
	}
	__u32 key = s->queue, value = (__u32)s->fd;
	if (bpf_map_update_elem(bpf_map__fd(map), &key, &value, 0)) {
		fail("register the AF_XDP socket in", map_name, errno);
		return -1;
	}
	/* A bpf_link: the kernel detaches the program when the last fd closes, so even a killed
	 * forwarder leaves nothing behind. libxdp's dispatcher fails on this kernel. */
	LIBBPF_OPTS(bpf_link_create_opts, lopts, .flags = opt.generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
	int fd = bpf_link_create(bpf_program__fd(prog), s->ifindex, BPF_XDP, &lopts);
	if (fd < 0) {
		int e = errno;
		__u32 id = 0;
		bpf_xdp_query_id(s->ifindex, 0, &id);
		fprintf(stderr, "xdpwg-refwd: attach XDP program %s to %s (%s mode): %s", prog_name, s->name,
			opt.generic ? "generic" : "native", strerror(e));
		if (id)
			fprintf(stderr, " (XDP program id %u is already attached: remove it first)", id);
		else if (!opt.generic)
			fprintf(stderr, " (try --xdp-mode generic)");
		fprintf(stderr, "\n");
		return -1;
	}
	s->link_fd = fd;
	return 0;
}

static int setup(void)
{
	up.name = opt.uplink;
	up.queue = opt.uplink_queue;
	ten.name = opt.tenant;
	ten.queue = opt.tenant_queue;
	up.ifindex = (int)if_nametoindex(opt.uplink);
	if (!up.ifindex) {
		fail("no uplink interface", opt.uplink, errno);
		return -1;
	}
	ten.ifindex = (int)if_nametoindex(opt.tenant);
	if (!ten.ifindex) {
		fail("no tenant interface", opt.tenant, errno);
		return -1;
	}
	int e;
	if ((e = interface_mac(opt.uplink, up.mac)) || (e = interface_mac(opt.tenant, ten.mac))) {
		fail("read the MAC address (SIOCGIFHWADDR) of the interfaces", NULL, e);
		return -1;
	}
	if (!opt.have_local_mac)
		memcpy(opt.local_mac, up.mac, 6);
	if (!opt.have_tenant_src_mac)
		memcpy(opt.tenant_src_mac, ten.mac, 6);
	if (opt.have_peer_mac && opt.have_peer_ip && opt.have_local_ip && opt.have_peer_port)
		build_outer();

	if (opt.cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(opt.cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set)) {
			char c[16];
			snprintf(c, sizeof(c), "%d", opt.cpu);
			fail("pin to CPU", c, errno);
			return -1;
		}
	}
	/* Older kernels charge UMEM and maps to RLIMIT_MEMLOCK; newer ones to the memory cgroup. */
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	setrlimit(RLIMIT_MEMLOCK, &unlimited);

	libbpf_set_print(libbpf_print);
	LIBBPF_OPTS(bpf_object_open_opts, oopts, .object_name = "refwd");
	obj = bpf_object__open_mem(refwd_bpf_object, (size_t)(refwd_bpf_object_end - refwd_bpf_object), &oopts);
	if (!obj) {
		fail("open the embedded XDP object", NULL, errno);
		return -1;
	}
	if (bpf_object__load(obj)) {
		fail("load the XDP programs (bpf_object__load)", NULL, errno);
		return -1;
	}
	struct bpf_map *cfg = bpf_object__find_map_by_name(obj, "refwd_cfg");
	__u32 key = 0, port = opt.port;
	if (!cfg || bpf_map_update_elem(bpf_map__fd(cfg), &key, &port, 0)) {
		fail("write the port into refwd_cfg", NULL, cfg ? errno : ENOENT);
		return -1;
	}

	/* Sockets before programs: a steered frame always finds its socket. */
	if (setup_xsk(&up, opt.uplink_frames, opt.fill, opt.ring, false) ||
	    setup_xsk(&ten, opt.tenant_frames, opt.tenant_ring, opt.tenant_ring, true))
		return -1;
	up.fill_target = opt.fill;
	up.reserve = opt.reserve;
	ten.fill_target = opt.tenant_ring < opt.tenant_frames / 2 ? opt.tenant_ring : opt.tenant_frames / 2;
	ten.reserve = 0;
	refill(&up);
	refill(&ten);
	if (attach(&up, "uplink_xsks", "refwd_uplink") || attach(&ten, "tenant_xsks", "refwd_tenant"))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------- arguments */

enum {
	O_UPLINK = 256, O_UPLINK_QUEUE, O_TENANT, O_TENANT_QUEUE, O_PORT, O_TENANT_MAC, O_TENANT_SRC_MAC,
	O_LOCAL_IP, O_LOCAL_MAC, O_PEER_IP, O_PEER_PORT, O_PEER_MAC, O_RECEIVER, O_CPU, O_XDP_MODE,
	O_FRAME_SIZE, O_BATCH, O_RING, O_FILL, O_UPLINK_FRAMES, O_RESERVE, O_TENANT_RING,
	O_TENANT_FRAMES, O_STATS_INTERVAL, O_HELP
};

static int bad(const char *option, const char *value, const char *why)
{
	fprintf(stderr, "xdpwg-refwd: --%s %s: %s (see --help)\n", option, value ? value : "", why);
	return 2;
}

static int parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "uplink", required_argument, NULL, O_UPLINK },
		{ "uplink-queue", required_argument, NULL, O_UPLINK_QUEUE },
		{ "tenant", required_argument, NULL, O_TENANT },
		{ "tenant-queue", required_argument, NULL, O_TENANT_QUEUE },
		{ "port", required_argument, NULL, O_PORT },
		{ "tenant-mac", required_argument, NULL, O_TENANT_MAC },
		{ "tenant-src-mac", required_argument, NULL, O_TENANT_SRC_MAC },
		{ "local-ip", required_argument, NULL, O_LOCAL_IP },
		{ "local-mac", required_argument, NULL, O_LOCAL_MAC },
		{ "peer-ip", required_argument, NULL, O_PEER_IP },
		{ "peer-port", required_argument, NULL, O_PEER_PORT },
		{ "peer-mac", required_argument, NULL, O_PEER_MAC },
		{ "receiver-index", required_argument, NULL, O_RECEIVER },
		{ "cpu", required_argument, NULL, O_CPU },
		{ "xdp-mode", required_argument, NULL, O_XDP_MODE },
		{ "frame-size", required_argument, NULL, O_FRAME_SIZE },
		{ "batch", required_argument, NULL, O_BATCH },
		{ "ring", required_argument, NULL, O_RING },
		{ "fill", required_argument, NULL, O_FILL },
		{ "uplink-frames", required_argument, NULL, O_UPLINK_FRAMES },
		{ "reserve", required_argument, NULL, O_RESERVE },
		{ "tenant-ring", required_argument, NULL, O_TENANT_RING },
		{ "tenant-frames", required_argument, NULL, O_TENANT_FRAMES },
		{ "stats-interval", required_argument, NULL, O_STATS_INTERVAL },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	opt.port = 51820;
	opt.receiver_index = 1;
	opt.cpu = -1;
	opt.frame_size = 2048;
	opt.batch = 64;
	opt.ring = 2048;
	opt.fill = 4096;
	opt.uplink_frames = 8192;
	opt.reserve = 512;
	opt.tenant_ring = 1024;
	opt.tenant_frames = 2048;

	int c, index;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, &index)) != -1) {
		const char *name = c >= O_UPLINK ? longopts[index].name : NULL;
		unsigned u;
		switch (c) {
		case O_UPLINK: opt.uplink = optarg; break;
		case O_TENANT: opt.tenant = optarg; break;
		case O_UPLINK_QUEUE:
		case O_TENANT_QUEUE:
			if (!parse_uint(optarg, 0, 63, &u))
				return bad(name, optarg, "a queue number 0..63");
			*(c == O_UPLINK_QUEUE ? &opt.uplink_queue : &opt.tenant_queue) = u;
			break;
		case O_PORT:
		case O_PEER_PORT:
			if (!parse_uint(optarg, 1, 65535, &u))
				return bad(name, optarg, "a UDP port 1..65535");
			if (c == O_PORT) {
				opt.port = u;
			} else {
				opt.peer_port = u;
				opt.have_peer_port = true;
			}
			break;
		case O_TENANT_MAC:
		case O_TENANT_SRC_MAC:
		case O_LOCAL_MAC:
		case O_PEER_MAC: {
			uint8_t *mac = c == O_TENANT_MAC ? opt.tenant_mac : c == O_TENANT_SRC_MAC ? opt.tenant_src_mac
				       : c == O_LOCAL_MAC ? opt.local_mac : opt.peer_mac;
			if (!parse_mac(optarg, mac))
				return bad(name, optarg, "a MAC address like 02:00:00:00:00:01");
			*(c == O_TENANT_MAC ? &opt.have_tenant_mac : c == O_TENANT_SRC_MAC ? &opt.have_tenant_src_mac
			  : c == O_LOCAL_MAC ? &opt.have_local_mac : &opt.have_peer_mac) = true;
			break;
		}
		case O_LOCAL_IP:
		case O_PEER_IP:
			if (inet_pton(AF_INET, optarg, c == O_LOCAL_IP ? &opt.local_ip : &opt.peer_ip) != 1)
				return bad(name, optarg, "an IPv4 address (the outer header is IPv4 only)");
			*(c == O_LOCAL_IP ? &opt.have_local_ip : &opt.have_peer_ip) = true;
			break;
		case O_RECEIVER:
			if (!parse_uint(optarg, 0, UINT32_MAX, &u))
				return bad(name, optarg, "a 32-bit number");
			opt.receiver_index = u;
			break;
		case O_CPU: {
			long n = sysconf(_SC_NPROCESSORS_CONF);
			if (!parse_uint(optarg, 0, n > 0 ? (unsigned long)n - 1 : 0, &u))
				return bad(name, optarg, "a CPU number of this machine");
			opt.cpu = (int)u;
			break;
		}
		case O_XDP_MODE:
			if (!strcmp(optarg, "native"))
				opt.generic = false;
			else if (!strcmp(optarg, "generic"))
				opt.generic = true;
			else
				return bad(name, optarg, "native or generic");
			break;
		case O_FRAME_SIZE:
			if (!parse_uint(optarg, 2048, 4096, &u) || !is_power_of_two(u))
				return bad(name, optarg, "2048 or 4096");
			opt.frame_size = u;
			break;
		case O_BATCH:
			if (!parse_uint(optarg, 1, MAX_BATCH, &u))
				return bad(name, optarg, "1..256");
			opt.batch = u;
			break;
		case O_RING:
		case O_FILL:
		case O_TENANT_RING:
			if (!parse_uint(optarg, 64, 1u << 16, &u) || !is_power_of_two(u))
				return bad(name, optarg, "a power of two, 64..65536");
			*(c == O_RING ? &opt.ring : c == O_FILL ? &opt.fill : &opt.tenant_ring) = u;
			break;
		case O_UPLINK_FRAMES:
		case O_TENANT_FRAMES:
			if (!parse_uint(optarg, 128, 1u << 20, &u))
				return bad(name, optarg, "128..1048576 frames");
			*(c == O_UPLINK_FRAMES ? &opt.uplink_frames : &opt.tenant_frames) = u;
			break;
		case O_RESERVE:
			if (!parse_uint(optarg, 0, 1u << 20, &u))
				return bad(name, optarg, "0..1048576 frames");
			opt.reserve = u;
			break;
		case O_STATS_INTERVAL: {
			char *end;
			errno = 0;
			double s = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(s >= 0 && s <= 86400))
				return bad(name, optarg, "seconds, 0..86400");
			opt.stats_interval = s;
			break;
		}
		case O_HELP:
			usage(stdout);
			exit(0);
		case '?':
		default:
			fprintf(stderr, "xdpwg-refwd: unknown option or missing value: %s (see --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "xdpwg-refwd: unexpected argument: %s (see --help)\n", argv[optind]);
		return 2;
	}
	if (!opt.uplink || !opt.tenant || !opt.have_tenant_mac) {
		fprintf(stderr, "xdpwg-refwd: --uplink, --tenant and --tenant-mac are required (see --help)\n");
		return 2;
	}
	if (opt.uplink_frames < opt.fill + opt.reserve + opt.ring) {
		fprintf(stderr, "xdpwg-refwd: --uplink-frames %u is too few: it must hold the fill ring (%u), "
			"the reserve (%u) and a TX ring (%u)\n", opt.uplink_frames, opt.fill, opt.reserve, opt.ring);
		return 2;
	}
	return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
	int rc = parse_args(argc, argv);
	if (rc)
		return rc;

	/* Signals first: a stop during setup is honoured as soon as setup returns. */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A parent that blocks these signals (to take them between its own steps, as the perf
	 * lab does) passes its mask on through fork and exec: without this, SIGTERM would wait
	 * forever in the pending set. */
	sigset_t stops;
	sigemptyset(&stops);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGHUP);
	sigaddset(&stops, SIGUSR1);
	sigprocmask(SIG_UNBLOCK, &stops, NULL);
	clock_gettime(CLOCK_MONOTONIC, &started);

	if (setup()) {
		teardown();
		return 1;
	}
	printf("{\"refwd\":\"ready\",\"uplink\":\"%s\",\"uplink_queue\":%u,\"uplink_mode\":\"%s\","
	       "\"tenant\":\"%s\",\"tenant_queue\":%u,\"tenant_mode\":\"%s\",\"xdp_mode\":\"%s\",\"cpu\":%d,"
	       "\"port\":%u,\"frame_size\":%u,\"batch\":%u,\"ring\":%u,\"fill\":%u,\"uplink_frames\":%u,"
	       "\"reserve\":%u,\"tenant_ring\":%u,\"tenant_frames\":%u,\"peer_configured\":%s}\n",
	       opt.uplink, opt.uplink_queue, up.zero_copy ? "zero-copy" : "copy", opt.tenant, opt.tenant_queue,
	       ten.zero_copy ? "zero-copy" : "copy", opt.generic ? "generic" : "native", opt.cpu, opt.port,
	       opt.frame_size, opt.batch, opt.ring, opt.fill, opt.uplink_frames, opt.reserve, opt.tenant_ring,
	       opt.tenant_frames, outer.ready ? "true" : "false");
	fflush(stdout);

	double next_stats = opt.stats_interval > 0 ? now_seconds() + opt.stats_interval : 0;
	uint32_t loops = 0;
	while (!stop_signal) {
		uint32_t work = reclaim(&up) + reclaim(&ten);
		work += decrypt_batch();
		work += encrypt_batch();
		refill(&up);
		refill(&ten);
		if (!work) {
			/* A kick that made no progress left descriptors behind: send them now. */
			cnt.idle_loops++;
			if (outstanding(&up.tx))
				kick(&up, &cnt.uplink_kicks);
			if (outstanding(&ten.tx))
				kick(&ten, &cnt.tenant_kicks);
		}
		if (stats_requested) {
			stats_requested = 0;
			print_stats("stats");
		}
		/* The clock only every 1024 loops (a loop is at most two batches). */
		if (next_stats > 0 && !(++loops & 1023)) {
			double t = now_seconds();
			if (t >= next_stats) {
				print_stats("stats");
				next_stats = t + opt.stats_interval;
			}
		}
	}
	print_stats("exit");
	teardown();
	return 0;
}
