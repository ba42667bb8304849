#!/usr/bin/env bash
# Soak: the gateway under steady load for 10 minutes, its resident memory sampled (flat or
# growing): install what is missing, build in release mode, and run `xdpwg soak` (as root),
# writing soak.md and soak.json under Benchmarks/results/DATE/. Arguments go to `xdpwg soak`
# (e.g. --seconds 60).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
exec "$(swift build -c release --show-bin-path)/xdpwg" soak --output "Benchmarks/results/$(date -u +%Y-%m-%d)" "$@"
