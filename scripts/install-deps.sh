#!/usr/bin/env bash
# Installs every Debian package xdpwg needs to build, test and run its lab.
# Idempotent: packages already present are not touched, and apt is only asked
# when something is missing. Never pulls recommended packages (wireguard-tools
# would otherwise drag in a kernel image).
set -euo pipefail

packages=(
  # build: system libraries (headers + pkg-config files) and the BPF toolchain
  pkg-config libsodium-dev libxdp-dev libbpf-dev libnuma-dev libelf-dev zlib1g-dev
  # the transport cipher's other backends: OpenSSL's libcrypto and Intel's ipsec-mb
  libssl-dev libipsec-mb-dev
  # reference peers and tools for the integration tests and the lab
  wireguard-go wireguard-tools iperf3 iproute2 iputils-ping bpftool tcpdump
  # known-answer vector generation and interop helpers
  python3 python3-cryptography
  # the perf lab: instruction counts (objcopy strips debug info valgrind 3.19 cannot read)
  valgrind binutils
  # the perf lab: where a worker core's time goes (perf record -e cpu-clock)
  linux-perf
  # the perf lab: the reference forwarder's Makefile (Benchmarks/reference-forwarder)
  make
  # the perf lab: the report's PNG chart (Agg backend, run by /usr/bin/python3)
  python3-matplotlib
  # systemd-analyze verify for contrib/xdpwg.service (SystemdUnitTests)
  systemd
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo $0)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
