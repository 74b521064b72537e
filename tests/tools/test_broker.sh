#!/usr/bin/env bash
# tests/tools/test_broker.sh - rivvend driven by real clients (tests/broker/).
#
#   test_broker.sh PATH_TO_RIVVEND SCRIPT [unittest arguments...]
#
# Runs tests/broker/SCRIPT (test_clients.py, test_bad_input.py) with Debian's
# /usr/bin/python3, which owns python3-confluent-kafka, against PATH_TO_RIVVEND;
# the unittest arguments pick classes (e.g. ProduceShards Kcat). Skipped (exit
# 77) when /usr/bin/python3 cannot import confluent_kafka or kcat is missing
# (tools/install-deps.sh installs both).
set -euo pipefail

BIN=${1:?usage: test_broker.sh PATH_TO_RIVVEND SCRIPT [ARGS...]}
SCRIPT=${2:?usage: test_broker.sh PATH_TO_RIVVEND SCRIPT [ARGS...]}
shift 2
DIR=$(cd "$(dirname "$0")/../broker" && pwd)
PY=/usr/bin/python3

if [ ! -x "$PY" ] || ! "$PY" -c 'import confluent_kafka' 2>/dev/null; then
    echo "skip: $PY cannot import confluent_kafka (apt-get install python3-confluent-kafka)"
    exit 77
fi
if ! command -v kcat >/dev/null; then
    echo "skip: kcat is not installed (apt-get install kcat)"
    exit 77
fi
[ -x "$BIN" ] || { echo "no rivvend at $BIN"; exit 1; }

export RIVVEND=$BIN
exec "$PY" -u "$DIR/$SCRIPT" -v "$@"
