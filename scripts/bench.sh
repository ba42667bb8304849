#!/usr/bin/env bash
# The perf lab: install what is missing, build in release mode, and run `xdpwg bench` (as
# root), writing report.md, report.json and chart.png under Benchmarks/results/DATE/.
# Arguments go to `xdpwg bench` (e.g. --sizes 1420 --peers 1 --seconds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
exec "$(swift build -c release --show-bin-path)/xdpwg" bench --output "Benchmarks/results/$(date -u +%Y-%m-%d)" "$@"
