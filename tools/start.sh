#!/usr/bin/env bash
# tools/start.sh - install dependencies, build a release build and start the
# main program on a local data directory (./data). Until the broker exists the
# main program is the runtime demo: one shard per core exchanging messages and
# writing a file each. Extra arguments go to the program.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
if [ ! -d build-release ]; then
  meson setup build-release --buildtype=release
fi
ninja -C build-release
exec build-release/tools/rivven-demo --data-dir ./data "$@"
