#!/usr/bin/env bash
# The main job. Until `xdpwg lab` exists: install, build, and show the key tools at work
# next to `wg`, which they match byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
bin=$(swift build -c release --show-bin-path)/xdpwg
"$bin" version
umask 077
key=$("$bin" genkey)
echo "public key (xdpwg pubkey): $(printf '%s\n' "$key" | "$bin" pubkey)"
echo "public key (wg pubkey):    $(printf '%s\n' "$key" | wg pubkey)"
