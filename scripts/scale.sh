#!/usr/bin/env bash
# Scale: one gateway with 100,000 peers across 100 tenants (start-up, memory per peer,
# handshakes per second): install what is missing, build in release mode, and run `xdpwg scale` (as root),
# writing scale.md and scale.json under Benchmarks/results/DATE/. Arguments go to `xdpwg scale`
# (e.g. --tenants 10 --peers 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
exec "$(swift build -c release --show-bin-path)/xdpwg" scale --output "Benchmarks/results/$(date -u +%Y-%m-%d)" "$@"
