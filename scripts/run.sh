#!/usr/bin/env bash
# The main job: install what is missing, build, and run `xdpwg lab` (as root): the whole
# gateway on this machine with wireguard-go peers, traffic both ways, live stats, a summary,
# and everything removed at the end. Arguments go to `xdpwg lab` (e.g. --duration 60, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product xdpwg
exec "$(swift build -c release --show-bin-path)/xdpwg" lab "$@"
