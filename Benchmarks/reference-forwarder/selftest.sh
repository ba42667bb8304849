#!/usr/bin/env bash
# Self-test of xdpwg-refwd (run as root): builds it, makes three network namespaces of its own,
#
#   internet  inet0 192.0.2.1 ══ up0 192.0.2.2  gateway  th0 ══ tn0 10.20.0.1/16  tenant
#             (the peer)            (xdpwg-refwd on up0 and th0)  (NOARP, 10.21.0.0/16 via tn0)
#
# and checks both directions and the forwarder's counters:
#   0. tenant UDP before any peer is known: dropped, counted as enc_drop_no_peer;
#   1. decrypt: WireGuard-shaped datagrams (type-4 header + plaintext IPv4/UDP + zero padding
#      + 16 zero bytes) from the internet namespace arrive in the tenant as the inner packets
#      (a UDP socket there checks every payload); handshake-typed messages are dropped
#      (dec_drop_not_transport), keepalives consumed (dec_keepalive); the first transport
#      message teaches the forwarder the outer header of the encrypt direction;
#   2. encrypt: UDP from the tenant to 10.21.0.1 arrives in the internet namespace as
#      WireGuard type-4 frames (an AF_PACKET socket checks the IPv4 header checksum, UDP
#      length, receiver index, counters 0,1,2..., the inner packet, zero padding and tag; a
#      UDP socket checks that the kernel accepts them);
#   3. SIGINT: the forwarder prints its exit counters, which must match what was sent, and
#      leaves no XDP program attached.
# Then a rough rate (skip it with --no-rate): a second forwarder, told the outer header on the
# command line this time, pinned to CPU 1; refwd-blast (an AF_XDP copy-mode sender) on CPU 0
# sends 64-byte inner packets, WireGuard-shaped into the uplink (decrypt) or plain into the
# tenant veth (encrypt), and an XDP sink counts what comes out the other side. The sender is
# slower than the forwarder here, so this is a floor of the ceiling, not the ceiling.
#
# Everything it makes (namespaces refwd-PID-*, processes, a temporary folder) is removed on
# every exit path; it kills only processes it started. Traffic stays inside its namespaces.
#   sudo Benchmarks/reference-forwarder/selftest.sh [--no-rate] [--rate-seconds S]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tag=$$
ns_inet=refwd-$tag-a
ns_gw=refwd-$tag-g
ns_ten=refwd-$tag-t
work=$(mktemp -d "${TMPDIR:-/tmp}/refwd-selftest.XXXXXX")
pids=()
made_ns=()
fwd_pid=

# Waits for a process this script started and forgets it (its pid may be reused afterwards).
reap() {
    local pid=$1 rc=0 keep=() p
    wait "$pid" || rc=$?
    for p in "${pids[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    pids=("${keep[@]}")
    return "$rc"
}
say() { printf 'selftest: %s\n' "$*"; }
die() { printf 'selftest: FAIL: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    for ns in "${made_ns[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$work"
    if [ "$rc" -eq 0 ]; then say "PASS (cleaned up)"; else say "exit $rc (cleaned up)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

measure_rate=1 rate_seconds=3
while [ $# -gt 0 ]; do
    case $1 in
        --no-rate) measure_rate=0 ;;
        --rate-seconds) rate_seconds=${2:?--rate-seconds needs a value}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
[ "$(id -u)" -eq 0 ] || die "run as root (namespaces, XDP, AF_XDP)"
command -v python3 >/dev/null || die "python3 is needed"

say "building"
make -s -C "$here" OUT="$work/build" >/dev/null
fwd=$work/build/xdpwg-refwd
[ -x "$fwd" ] || die "build produced no $fwd"

say "topology: $ns_inet, $ns_gw, $ns_ten"
for ns in "$ns_inet" "$ns_gw" "$ns_ten"; do
    ip netns add "$ns"
    made_ns+=("$ns")
    # No IPv6: no router solicitations or MLD reports among the counted frames.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$ns_inet" link add inet0 type veth peer name up0 netns "$ns_gw"
ip -n "$ns_inet" addr add 192.0.2.1/24 dev inet0
ip -n "$ns_inet" link set inet0 up
ip -n "$ns_gw" addr add 192.0.2.2/24 dev up0
ip -n "$ns_gw" link set up0 up
ip -n "$ns_gw" link add th0 type veth peer name tn0 netns "$ns_ten"
ip -n "$ns_gw" link set th0 up
# The tenant end looks like a wg interface: NOARP (frames go to its own MAC), its address, a
# route to the peers' range.
ip -n "$ns_ten" link set tn0 arp off
ip -n "$ns_ten" addr add 10.20.0.1/16 dev tn0
ip -n "$ns_ten" link set tn0 up
ip -n "$ns_ten" route add 10.21.0.0/16 dev tn0
tenant_mac=$(ip netns exec "$ns_ten" cat /sys/class/net/tn0/address)

# The helpers: one Python file, a role per argument.
cat > "$work/peer.py" <<'PY'
import array, fcntl, os, socket, struct, sys, time

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def ipv4_udp(src, dst, sport, dport, payload, ident=0):
    udp_len = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + udp

def payload(i):
    # Sizes 1..1300 so that every padding remainder shows up.
    n = 1 + (i * 37) % 1300
    return (b"refwd-%06d-" % i + bytes((i + k) & 0xFF for k in range(n)))[:max(n, 12)]

def wg(msg_type, body):
    return struct.pack("<BBBBIQ", msg_type, 0, 0, 0, 7, 0) + body

role = sys.argv[1]

if role == "decrypt-send":
    # From the peer's socket (192.0.2.1:40000) to the gateway's port.
    count, handshakes, keepalives = map(int, sys.argv[2:5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("192.0.2.1", 40000))
    dst = ("192.0.2.2", 51820)
    for _ in range(handshakes):       # type 1 (initiation, 148 bytes): not transport
        s.sendto(bytes([1, 0, 0, 0]) + bytes(144), dst)
    for i in range(count):
        inner = ipv4_udp("10.21.0.1", "10.20.0.1", 5000, 9999, payload(i), ident=i)
        body = inner + bytes(-len(inner) % 16) + bytes(16)
        s.sendto(struct.pack("<BBBBIQ", 4, 0, 0, 0, 7, i) + body, dst)
        if i % 32 == 31:
            time.sleep(0.002)          # a socket's pace, not a flood: nothing may be lost
    for k in range(keepalives):       # type 4 with no plaintext: 32 bytes
        s.sendto(struct.pack("<BBBBIQ", 4, 0, 0, 0, 7, count + k) + bytes(16), dst)

elif role == "tenant-receive":
    # The inner packets, as the tenant's kernel hands them to a UDP socket.
    count, timeout, ready = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("10.20.0.1", 9999))
    open(ready, "w").close()
    s.settimeout(timeout)
    seen, bad = set(), 0
    try:
        while len(seen) < count:
            data, (src, sport) = s.recvfrom(4096)
            i = int(data[6:12])
            if src != "10.21.0.1" or sport != 5000 or data != payload(i):
                bad += 1
            seen.add(i)
    except socket.timeout:
        pass
    print("tenant received %d of %d inner packets, %d wrong" % (len(seen), count, bad))
    sys.exit(0 if len(seen) == count and bad == 0 else 1)

elif role == "tenant-send":
    # From the tenant to a peer's inner address; tx checksum offload off first (as xdpwg's
    # tenant links have it), so the inner UDP checksum is complete and can be checked.
    count, port = int(sys.argv[2]), int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ev = array.array("B", struct.pack("II", 0x17, 0))  # ETHTOOL_STXCSUM, off
    ifr = struct.pack("16sP", b"tn0", ev.buffer_info()[0]) + bytes(16)
    fcntl.ioctl(s.fileno(), 0x8946, ifr)               # SIOCETHTOOL
    s.bind(("10.20.0.1", port))
    for i in range(count):
        s.sendto(payload(i), ("10.21.0.1", 9))
        if i % 32 == 31:
            time.sleep(0.002)

elif role == "internet-receive":
    # Every frame on inet0, as an AF_PACKET socket sees it, plus a UDP socket on the peer's
    # port to show the kernel accepts the frames (IPv4 checksum, UDP checksum 0).
    count, timeout, ready = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    raw.bind(("inet0", 0))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp.bind(("192.0.2.1", 40000))
    udp.setblocking(False)
    open(ready, "w").close()
    raw.settimeout(timeout)
    frames, problems, kernel = 0, [], 0
    expected_counter = 0
    try:
        while frames < count:
            f, addr = raw.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            ip = f[14:]
            if len(ip) < 28 or ip[9] != 17 or ip[12:16] != socket.inet_aton("192.0.2.2"):
                continue
            ihl = (ip[0] & 15) * 4
            udph = ip[ihl:ihl + 8]
            sport, dport, ulen, ucsum = struct.unpack("!HHHH", udph)
            if sport != 51820:
                continue
            frames += 1
            err = []
            if csum(ip[:ihl]) != 0:
                err.append("IPv4 header checksum wrong")
            tot = struct.unpack("!H", ip[2:4])[0]
            if tot != ihl + ulen or tot > len(ip):
                err.append("lengths: ip %d udp %d frame %d" % (tot, ulen, len(ip)))
            if dport != 40000 or ucsum != 0:
                err.append("udp port %d checksum %#x" % (dport, ucsum))
            msg = ip[ihl + 8:ihl + ulen]
            t, r0, r1, r2, recv, ctr = struct.unpack("<BBBBIQ", msg[:16])
            if (t, r0, r1, r2, recv) != (4, 0, 0, 0, 1):
                err.append("header %r" % (msg[:8],))
            if ctr != expected_counter:
                err.append("counter %d, expected %d" % (ctr, expected_counter))
            expected_counter = ctr + 1
            body, tag = msg[16:-16], msg[-16:]
            if len(body) % 16 or tag != bytes(16):
                err.append("padding/tag: body %d bytes, tag %r" % (len(body), tag))
            inner_len = struct.unpack("!H", body[2:4])[0]
            inner = body[:inner_len]
            if body[inner_len:] != bytes(len(body) - inner_len) or len(body) - inner_len >= 16:
                err.append("padding not zero or too long")
            i_ihl = (inner[0] & 15) * 4
            if csum(inner[:i_ihl]) != 0:
                err.append("inner IPv4 checksum wrong")
            src, dst = inner[12:16], inner[16:20]
            pseudo = src + dst + struct.pack("!BBH", 0, 17, inner_len - i_ihl)
            if csum(pseudo + inner[i_ihl:]) != 0:
                err.append("inner UDP checksum wrong")
            data = inner[i_ihl + 8:]
            if socket.inet_ntoa(src) != "10.20.0.1" or socket.inet_ntoa(dst) != "10.21.0.1" \
                    or data != payload(int(data[6:12])):
                err.append("inner packet differs from what the tenant sent")
            if err:
                problems.append("frame %d: %s" % (frames, "; ".join(err)))
    except socket.timeout:
        pass
    time.sleep(0.2)
    try:
        while True:
            udp.recv(65535)
            kernel += 1
    except BlockingIOError:
        pass
    print("internet received %d of %d WireGuard frames (%d with problems); the kernel's UDP socket took %d"
          % (frames, count, len(problems), kernel))
    for p in problems[:10]:
        print("  " + p)
    sys.exit(0 if frames == count and not problems and kernel == count else 1)

elif role == "frame":
    # One Ethernet frame for refwd-blast: "decrypt" (WireGuard-shaped, into the uplink) or
    # "encrypt" (plain, into the tenant veth's host end), with a 64-byte inner packet whose
    # destination the receiving namespace does not own (dropped quietly if it got that far).
    kind, dst_mac, src_mac, path = sys.argv[2:6]
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))
    if kind == "decrypt":
        inner = ipv4_udp("10.21.0.1", "10.20.0.2", 5000, 9, bytes(36))
        msg = struct.pack("<BBBBIQ", 4, 0, 0, 0, 7, 0) + inner + bytes(-len(inner) % 16) + bytes(16)
        frame = ipv4_udp("192.0.2.1", "192.0.2.2", 40001, 51820, msg)
    else:
        frame = ipv4_udp("10.20.0.1", "10.21.0.2", 6000, 9, bytes(36))
    open(path, "wb").write(mac(dst_mac) + mac(src_mac) + b"\x08\x00" + frame)
PY

stats_line() { # the last JSON line of kind $1 in the forwarder's output
    grep "\"refwd\":\"$1\"" "$work/fwd.out" 2>/dev/null | tail -n 1
}
wait_for() { # file, seconds
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -e "$1" ] && return 0; sleep 0.05; done
    return 1
}

say "starting xdpwg-refwd in $ns_gw (tenant MAC $tenant_mac; outer header to be learned)"
ip netns exec "$ns_gw" "$fwd" --uplink up0 --tenant th0 --tenant-mac "$tenant_mac" --port 51820 \
    --cpu "$(($(nproc) > 1 ? 1 : 0))" >"$work/fwd.out" 2>"$work/fwd.err" &
fwd_pid=$!
pids+=("$fwd_pid")
for ((i = 0; i < 100; i++)); do
    [ -n "$(stats_line ready)" ] && break
    kill -0 "$fwd_pid" 2>/dev/null || { cat "$work/fwd.err" >&2; die "the forwarder exited during setup"; }
    sleep 0.05
done
[ -n "$(stats_line ready)" ] || die "the forwarder did not report ready"
say "ready: $(stats_line ready)"

# 0. Before any peer: the encrypt direction has no outer header.
early=5
ip netns exec "$ns_ten" python3 "$work/peer.py" tenant-send "$early" 6001
sleep 0.3

# 1. Decrypt direction.
count_dec=300 handshakes=3 keepalives=2
ip netns exec "$ns_ten" python3 "$work/peer.py" tenant-receive "$count_dec" 5 "$work/tenant.ready" \
    >"$work/tenant.out" 2>&1 &
recv_pid=$!
pids+=("$recv_pid")
wait_for "$work/tenant.ready" 5 || die "the tenant's receiver did not start"
ip netns exec "$ns_inet" python3 "$work/peer.py" decrypt-send "$count_dec" "$handshakes" "$keepalives"
if reap "$recv_pid"; then dec_ok=1; else dec_ok=0; fi
cat "$work/tenant.out"
[ "$dec_ok" = 1 ] || die "decrypt direction"

# 2. Encrypt direction (the outer header was learned from step 1).
count_enc=200
ip netns exec "$ns_inet" python3 "$work/peer.py" internet-receive "$count_enc" 5 "$work/inet.ready" \
    >"$work/inet.out" 2>&1 &
inet_pid=$!
pids+=("$inet_pid")
wait_for "$work/inet.ready" 5 || die "the internet receiver did not start"
ip netns exec "$ns_ten" python3 "$work/peer.py" tenant-send "$count_enc" 6000
if reap "$inet_pid"; then enc_ok=1; else enc_ok=0; fi
cat "$work/inet.out"
[ "$enc_ok" = 1 ] || die "encrypt direction"

# SIGUSR1: a stats line on request.
kill -USR1 "$fwd_pid"
sleep 0.3
[ -n "$(stats_line stats)" ] || die "no stats line after SIGUSR1"
say "SIGUSR1 gave a stats line"

# 3. Stop: exit counters.
kill -INT "$fwd_pid"
if reap "$fwd_pid"; then fwd_rc=0; else fwd_rc=$?; fi
[ "$fwd_rc" = 0 ] || { cat "$work/fwd.err" >&2; die "the forwarder exited $fwd_rc after SIGINT"; }
exit_line=$(stats_line exit)
[ -n "$exit_line" ] || die "no exit line"
say "exit: $exit_line"
sed 's/^/selftest: forwarder stderr: /' "$work/fwd.err"
python3 - "$exit_line" "$count_dec" "$handshakes" "$keepalives" "$count_enc" "$early" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
dec, hs, ka, enc, early = map(int, sys.argv[2:7])
want = {
    "dec_rx": dec + hs + ka, "dec_tx": dec, "dec_keepalive": ka,
    "dec_drop_not_transport": hs, "dec_drop_malformed": 0, "dec_drop_too_big": 0,
    "dec_drop_no_frame": 0, "dec_drop_tx_ring_full": 0,
    "enc_rx": early + enc, "enc_tx": enc, "enc_drop_no_peer": early, "enc_drop_malformed": 0,
    "enc_drop_too_big": 0, "enc_drop_no_frame": 0, "enc_drop_tx_ring_full": 0,
    "kick_errors": 0, "peer_learned": True,
    "uplink_xsk_rx_invalid": 0, "uplink_xsk_tx_invalid": 0,
    "tenant_xsk_rx_invalid": 0, "tenant_xsk_tx_invalid": 0,
}
bad = ["%s = %r, expected %r" % (k, c.get(k), v) for k, v in want.items() if c.get(k) != v]
# Every frame sent came back on a completion ring.
if c["completions"] != c["dec_tx"] + c["enc_tx"]:
    bad.append("completions %d != dec_tx + enc_tx %d" % (c["completions"], c["dec_tx"] + c["enc_tx"]))
for line in bad:
    print("selftest: counter mismatch: " + line)
print("selftest: exit counters %s" % ("match" if not bad else "DO NOT match"))
sys.exit(1 if bad else 0)
PY
# Nothing of ours is left attached.
for pair in "$ns_gw up0" "$ns_gw th0"; do
    set -- $pair
    if ip -n "$1" link show "$2" | grep -q 'xdp'; then die "an XDP program is still attached to $2"; fi
done
say "XDP programs detached from up0 and th0"

[ "$measure_rate" = 1 ] || exit 0

# 4. Rough rate. Generator on CPU 0, forwarder on CPU 1 (a machine with one CPU shares it).
# The kernel's live-frames generator (BPF_F_TEST_XDP_LIVE_FRAMES) would outrun the forwarder,
# but it gets EPERM in these sessions; refwd-blast sends through AF_XDP instead.
cpu_fwd=$(($(nproc) > 1 ? 1 : 0))
blast=$work/build/refwd-blast
inet_mac=$(ip netns exec "$ns_inet" cat /sys/class/net/inet0/address)
up_mac=$(ip netns exec "$ns_gw" cat /sys/class/net/up0/address)
th_mac=$(ip netns exec "$ns_gw" cat /sys/class/net/th0/address)
python3 "$work/peer.py" frame decrypt "$up_mac" "$inet_mac" "$work/decrypt.frame"
python3 "$work/peer.py" frame encrypt "$th_mac" "$tenant_mac" "$work/encrypt.frame"
: >"$work/fwd.out"
ip netns exec "$ns_gw" "$fwd" --uplink up0 --tenant th0 --tenant-mac "$tenant_mac" --port 51820 \
    --local-ip 192.0.2.2 --peer-ip 192.0.2.1 --peer-port 40000 --peer-mac "$inet_mac" \
    --cpu "$cpu_fwd" >"$work/fwd.out" 2>"$work/fwd.err" &
fwd_pid=$!
pids+=("$fwd_pid")
for ((i = 0; i < 100; i++)); do [ -n "$(stats_line ready)" ] && break; sleep 0.05; done
[ -n "$(stats_line ready)" ] || { cat "$work/fwd.err" >&2; die "the second forwarder did not report ready"; }

# rate DIRECTION SINK_NS SINK_IF GEN_NS GEN_IF FRAME
rate() {
    local dir=$1 sink_ns=$2 sink_if=$3 gen_ns=$4 gen_if=$5 frame=$6 sink_pid before after sent
    ip netns exec "$sink_ns" "$blast" sink "$sink_if" >"$work/sink.out" 2>&1 &
    sink_pid=$!
    pids+=("$sink_pid")
    for ((i = 0; i < 100; i++)); do grep -q ready "$work/sink.out" && break; sleep 0.05; done
    grep -q ready "$work/sink.out" || { cat "$work/sink.out" >&2; die "the sink on $sink_if did not start"; }
    kill -USR1 "$fwd_pid"; sleep 0.2
    before=$(stats_line stats)
    sent=$(ip netns exec "$gen_ns" "$blast" send "$gen_if" "$frame" "$rate_seconds" 0) \
        || die "refwd-blast send on $gen_if failed"
    sleep 0.3
    kill -USR1 "$fwd_pid"; sleep 0.2
    after=$(stats_line stats)
    kill -INT "$sink_pid"
    reap "$sink_pid" || die "the sink on $sink_if failed"
    python3 - "$dir" "$before" "$after" "$sent" "$(tail -n 1 "$work/sink.out")" <<'PY'
import json, sys
d = sys.argv[1]
a, b, g, k = (json.loads(x) for x in sys.argv[2:6])
t = g["seconds"]
delta = lambda key: b[key] - a[key]
side = "uplink" if d == "dec" else "tenant"
drops = {key[len(d) + 6:]: delta(key) for key in b if key.startswith(d + "_drop_") and delta(key)}
kernel = {key[len(side) + 5:]: delta(key) for key in ("%s_xsk_rx_ring_full" % side, "%s_xsk_rx_dropped" % side,
                                                       "%s_xsk_fill_ring_empty" % side) if delta(key)}
name = {"dec": "decrypt (uplink RX -> tenant TX)", "enc": "encrypt (tenant RX -> uplink TX)"}[d]
load = open("/proc/loadavg").read().split()[0]
print("selftest: rate (load average %s), %s, 64 B inner, %.1f s: offered %.3f Mpps, forwarder received %.3f and sent %.3f Mpps, "
      "sink counted %.3f Mpps; %.1f frames per batch; forwarder drops %s; socket %s"
      % (load, name, t, g["sent"] / t / 1e6, delta(d + "_rx") / t / 1e6, delta(d + "_tx") / t / 1e6, k["sink"] / t / 1e6,
         delta(d + "_rx") / max(1, delta("uplink_batches" if d == "dec" else "tenant_batches")),
         drops or "none", kernel or "no kernel drops"))
PY
}
rate dec "$ns_ten" tn0 "$ns_inet" inet0 "$work/decrypt.frame"
rate enc "$ns_inet" inet0 "$ns_ten" tn0 "$work/encrypt.frame"
kill -INT "$fwd_pid"
reap "$fwd_pid" || die "the second forwarder exited $? after SIGINT"
say "second forwarder: $(stats_line exit)"
