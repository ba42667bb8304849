/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * refwd-blast: the reference forwarder's rough-rate helper (selftest.sh uses it; the perf
 * lab has its own generator and sinks in Swift).
 *
 *   refwd-blast send IF FRAME_FILE SECONDS [CPU]
 *       sends the frame in FRAME_FILE (raw bytes, Ethernet header first) out of IF queue 0 as
 *       fast as one AF_XDP socket in copy mode can for SECONDS, pinned to CPU; prints
 *       {"sent":N,"seconds":S} (frames the kernel completed: sent, or dropped by the device).
 *   refwd-blast sink IF
 *       counts and drops IP frames arriving on IF (program blast_sink, through a bpf_link)
 *       until SIGINT/SIGTERM/SIGHUP; prints {"sink":N}. On SIGUSR1 prints the count so far.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#ifndef BLAST_BPF_OBJECT
#error "build with -DBLAST_BPF_OBJECT='\"path/to/blast.bpf.o\"' (see the Makefile)"
#endif
__asm__(".pushsection .rodata\n"
	".balign 8\n"
	".globl blast_bpf_object\n.hidden blast_bpf_object\n"
	"blast_bpf_object:\n"
	".incbin \"" BLAST_BPF_OBJECT "\"\n"
	".globl blast_bpf_object_end\n.hidden blast_bpf_object_end\n"
	"blast_bpf_object_end:\n"
	".popsection\n");
extern const unsigned char blast_bpf_object[];
extern const unsigned char blast_bpf_object_end[];

static volatile sig_atomic_t stop, report;
static void on_stop(int sig) { (void)sig; stop = 1; }
static void on_usr1(int sig) { (void)sig; report = 1; }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int usage(void)
{
	fprintf(stderr, "usage: refwd-blast send IF FRAME_FILE SECONDS [CPU]\n"
			"       refwd-blast sink IF\n");
	return 2;
}

static struct bpf_object *load(void)
{
	LIBBPF_OPTS(bpf_object_open_opts, o, .object_name = "refwd_blast");
	struct bpf_object *obj = bpf_object__open_mem(blast_bpf_object,
						      (size_t)(blast_bpf_object_end - blast_bpf_object), &o);
	if (!obj) {
		fprintf(stderr, "refwd-blast: open the embedded XDP object: %s\n", strerror(errno));
		return NULL;
	}
	if (bpf_object__load(obj)) {
		fprintf(stderr, "refwd-blast: load the XDP programs: %s\n", strerror(errno));
		bpf_object__close(obj);
		return NULL;
	}
	return obj;
}

static __u64 sink_count(struct bpf_object *obj)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 values[ncpu > 0 ? ncpu : 1], sum = 0;
	__u32 key = 0;
	if (ncpu > 0 && !bpf_map_lookup_elem(bpf_map__fd(bpf_object__find_map_by_name(obj, "blast_count")), &key, values))
		for (int i = 0; i < ncpu; i++)
			sum += values[i];
	return sum;
}

static int sink(const char *ifname)
{
	int ifindex = (int)if_nametoindex(ifname);
	if (!ifindex) {
		fprintf(stderr, "refwd-blast: no interface %s: %s\n", ifname, strerror(errno));
		return 1;
	}
	struct bpf_object *obj = load();
	if (!obj)
		return 1;
	LIBBPF_OPTS(bpf_link_create_opts, lo, .flags = XDP_FLAGS_DRV_MODE);
	int link = bpf_link_create(bpf_program__fd(bpf_object__find_program_by_name(obj, "blast_sink")), ifindex,
				   BPF_XDP, &lo);
	if (link < 0) {
		fprintf(stderr, "refwd-blast: attach the sink to %s: %s\n", ifname, strerror(errno));
		bpf_object__close(obj);
		return 1;
	}
	printf("{\"sink\":\"ready\"}\n");
	fflush(stdout);
	while (!stop) {
		usleep(20000);
		if (report) {
			report = 0;
			printf("{\"sink\":%llu}\n", (unsigned long long)sink_count(obj));
			fflush(stdout);
		}
	}
	printf("{\"sink\":%llu}\n", (unsigned long long)sink_count(obj));
	close(link);
	bpf_object__close(obj);
	return 0;
}

/*
 * AF_XDP TX in copy mode from a UMEM whose every frame holds the same packet: batches of 64,
 * a kick per batch, completions counted. (The kernel's live-frames generator,
 * BPF_F_TEST_XDP_LIVE_FRAMES, would be faster, but this machine's sessions get EPERM from it.)
 * On a veth the receive side's XDP program runs on this core, as a NIC's driver would on
 * another.
 */
static int send_frames(const char *ifname, const char *path, double seconds, int cpu)
{
	enum { FRAMES = 4096, FRAME_SIZE = 2048, RING = 2048, BATCH = 64 };
	unsigned char frame[FRAME_SIZE];
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "refwd-blast: open %s: %s\n", path, strerror(errno));
		return 1;
	}
	size_t len = fread(frame, 1, sizeof(frame), f);
	fclose(f);
	if (len < 14) {
		fprintf(stderr, "refwd-blast: %s holds no Ethernet frame\n", path);
		return 1;
	}
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set)) {
			fprintf(stderr, "refwd-blast: pin to CPU %d: %s\n", cpu, strerror(errno));
			return 1;
		}
	}
	size_t area_len = (size_t)FRAMES * FRAME_SIZE;
	unsigned char *area = mmap(NULL, area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
				   -1, 0);
	if (area == MAP_FAILED) {
		fprintf(stderr, "refwd-blast: mmap: %s\n", strerror(errno));
		return 1;
	}
	for (unsigned i = 0; i < FRAMES; i++)
		memcpy(area + (size_t)i * FRAME_SIZE, frame, len);
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp;
	struct xsk_umem *umem = NULL;
	struct xsk_socket *xsk = NULL;
	struct xsk_umem_config ucfg = { .fill_size = 64, .comp_size = RING, .frame_size = FRAME_SIZE };
	int rc = xsk_umem__create(&umem, area, area_len, &fill, &comp, &ucfg);
	if (rc) {
		fprintf(stderr, "refwd-blast: xsk_umem__create: %s\n", strerror(-rc));
		munmap(area, area_len);
		return 1;
	}
	struct xsk_socket_config scfg;
	memset(&scfg, 0, sizeof(scfg));
	scfg.tx_size = RING;
	scfg.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD; /* TX only: no program */
	scfg.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
	rc = xsk_socket__create(&xsk, ifname, 0, umem, NULL, &tx, &scfg);
	if (rc) {
		fprintf(stderr, "refwd-blast: xsk_socket__create on %s queue 0: %s\n", ifname, strerror(-rc));
		xsk_umem__delete(umem);
		munmap(area, area_len);
		return 1;
	}
	int fd = xsk_socket__fd(xsk);
	unsigned long long submitted = 0, completed = 0;
	double start = now(), end = start + seconds;
	unsigned loops = 0;
	for (;;) {
		uint32_t idx;
		uint32_t n = xsk_ring_cons__peek(&comp, RING, &idx); /* ACQUIRE */
		if (n) {
			xsk_ring_cons__release(&comp, n);
			completed += n;
		}
		if (stop || (!(++loops & 63) && now() >= end))
			break;
		/* Frames in flight never exceed the UMEM: a frame is reused only once completed. */
		if (submitted - completed + BATCH <= FRAMES && xsk_ring_prod__reserve(&tx, BATCH, &idx) == BATCH) {
			for (uint32_t i = 0; i < BATCH; i++) {
				struct xdp_desc *d = xsk_ring_prod__tx_desc(&tx, idx + i);
				d->addr = (submitted + i) % FRAMES * FRAME_SIZE;
				d->len = (uint32_t)len;
				d->options = 0;
			}
			xsk_ring_prod__submit(&tx, BATCH); /* RELEASE */
			submitted += BATCH;
		}
		if (xsk_ring_prod__needs_wakeup(&tx))
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
	}
	double elapsed = now() - start;
	/* Let the last frames complete (each completes even if the device dropped it). */
	for (int i = 0; i < 100 && completed < submitted; i++) {
		uint32_t idx;
		sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		uint32_t n = xsk_ring_cons__peek(&comp, RING, &idx);
		if (n) {
			xsk_ring_cons__release(&comp, n);
			completed += n;
		}
		usleep(1000);
	}
	printf("{\"sent\":%llu,\"seconds\":%.6f}\n", completed, elapsed);
	xsk_socket__delete(xsk);
	xsk_umem__delete(umem);
	munmap(area, area_len);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };
	setrlimit(RLIMIT_MEMLOCK, &unlimited);
	if (argc == 3 && !strcmp(argv[1], "sink"))
		return sink(argv[2]);
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "send")) {
		char *end;
		double seconds = strtod(argv[4], &end);
		if (*end || !(seconds > 0))
			return usage();
		int cpu = argc == 6 ? atoi(argv[5]) : -1;
		return send_frames(argv[2], argv[3], seconds, cpu);
	}
	return usage();
}
