#!/usr/bin/env bash
# tools/install-deps.sh - install every Debian package rivven needs to build,
# test and benchmark. Idempotent: installs only what is missing, and runs
# apt-get update only when something is missing. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential pkg-config meson ninja-build git
  liburing-dev libmimalloc-dev libnuma-dev
  libzstd-dev liblz4-dev libsnappy-dev zlib1g-dev libisal-dev libwolfssl-dev
  libcriterion-dev
  clang-format fio
  kcat python3-confluent-kafka
  librdkafka-dev
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
