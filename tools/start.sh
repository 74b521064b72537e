#!/usr/bin/env bash
# tools/start.sh - install dependencies, build a release build and start the
# broker, rivvend, on a local data directory (./data), listening on
# 127.0.0.1:9092 with one shard per core. Extra arguments go to rivvend
# (e.g. --listeners=PLAINTEXT://0.0.0.0:9092; see rivvend --help).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
if [ ! -d build-release ]; then
  meson setup build-release --buildtype=release
fi
ninja -C build-release
exec build-release/tools/rivvend --log.dirs=./data "$@"
