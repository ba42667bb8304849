#!/usr/bin/env bash
# The perf lab: install what is missing, build xdpwg in release mode and the reference
# forwarder (Benchmarks/reference-forwarder), and run `xdpwg bench` (as root), writing
# report.md, report.json and chart.png under Benchmarks/results/DATE/.
# Arguments go to `xdpwg bench` (e.g. --sizes 1420 --peers 1 --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
# Relative paths: the report quotes the command line.
bin="$(realpath --relative-to=. "$(swift build -c release --show-bin-path)")"
make -s -C Benchmarks/reference-forwarder OUT="$bin/reference-forwarder"
exec "$bin/xdpwg" bench --output "Benchmarks/results/$(date -u +%Y-%m-%d)" \
  --reference-forwarder "$bin/reference-forwarder/xdpwg-refwd" \
  --commit "$(git describe --always --dirty 2>/dev/null || echo unknown)" "$@"
