#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, and runs every test.
# Privileged tests (network namespaces, wireguard-go peers) need root; with
# XDPWG_REQUIRE_PRIVILEGED=1 (as CI sets it) they fail instead of skipping.
# Arguments go to `swift test` (e.g. --filter SUITE); without any, every fuzz target
# then runs briefly too (XDPWG_FUZZ_SECONDS each, default 15; a crash fails the run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
# The release build too: a test runs its per-packet path under callgrind (no allocation,
# retain or release per packet where it counts).
swift build -c release --product xdpwg
swift test --skip-build "$@"
if [ $# -eq 0 ]; then
  scripts/fuzz.sh --seconds "${XDPWG_FUZZ_SECONDS:-15}"
fi
