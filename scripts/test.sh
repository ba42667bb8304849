#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, and runs every test.
# Privileged tests (network namespaces, wireguard-go peers) need root; with
# XDPWG_REQUIRE_PRIVILEGED=1 (as CI sets it) they fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build "$@"
