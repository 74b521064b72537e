#!/usr/bin/env bash
# tests/tools/test_rivvend.sh - the broker program from the outside.
#
#   test_rivvend.sh PATH_TO_RIVVEND
#
# --help lists every key with its default; an unknown key, a bad value and a
# stray argument stop start-up with exit status 2 and a message naming them; a
# config file is read and flags override it; the broker starts on a temporary
# data directory and a free port, answers ApiVersions (kcat gets past it, when
# kcat is installed), closes connections that send bad input (an oversized
# size, a negative size, garbage, an unknown API key) while others are served,
# refuses to start on a port in use (exit 1), and SIGTERM and SIGINT each stop
# it cleanly with exit 0.
set -euo pipefail

BIN=${1:?usage: test_rivvend.sh PATH_TO_RIVVEND}
# The configuration decides the diagnostics level here (the start-up lines this
# test waits for are at info); the environment would override it.
unset RIVVEN_TRACE
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rivvend-test.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
    sed 's/^/    | /' "$TMP/out" "$TMP/err" 2>/dev/null | head -n 30
}

# expect_exit STATUS NAME ARGS...: run the broker in the foreground.
expect_exit() {
    local want=$1 name=$2
    shift 2
    local rc=0
    timeout 20 "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [ "$rc" = "$want" ]; then ok "$name"; else fail "$name (exit $rc, want $want)"; fi
}

expect_exit 0 "--help exits 0" --help
for key in listeners=PLAINTEXT://127.0.0.1:9092 advertised.listeners= log.dirs=./data \
    num.partitions=1 auto.create.topics.enable=true log.retention.ms= log.retention.bytes=-1 \
    log.segment.bytes= socket.request.max.bytes=104857600 connections.max.idle.ms=600000 \
    rivven.shards=0 rivven.cpuset= rivven.io.backend=auto rivven.wal.io=auto rivven.advertise.shards=true; do
    if grep -qF -- "$key" "$TMP/out"; then ok "help lists $key"; else fail "help lists $key"; fi
done

expect_exit 2 "unknown key" --no.such.key=1
if grep -q "no.such.key" "$TMP/err"; then ok "unknown key named"; else fail "unknown key named"; fi
expect_exit 2 "bad value" --num.partitions=zero
if grep -q "num.partitions" "$TMP/err"; then ok "bad value named"; else fail "bad value named"; fi
expect_exit 2 "stray argument" extra
expect_exit 2 "missing config file" -c "$TMP/none.properties"
printf 'no.such.key=1\n' >"$TMP/bad.properties"
expect_exit 2 "unknown key in a file" -c "$TMP/bad.properties"
if grep -q "bad.properties:1" "$TMP/err"; then ok "file line named"; else fail "file line named"; fi

# start_broker NAME ARGS...: start in the background, wait until it logged start-up.
start_broker() {
    local name=$1
    shift
    # Empty the log before the start: the background job truncates it only once
    # it runs, and the loop below must not read the previous broker's lines.
    : >"$TMP/out"
    : >"$TMP/err"
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" &
    pid=$!
    for _ in $(seq 1 200); do
        if grep -q "rivvend: listening on" "$TMP/err"; then
            port=$(sed -n 's/.*listening on PLAINTEXT:.*:\([0-9]*\) (.*/\1/p' "$TMP/err")
            ok "$name starts (port $port)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    fail "$name starts"
    return 1
}

# stop_broker SIGNAL NAME: signal it and expect exit 0 within 20 s.
stop_broker() {
    local sig=$1 name=$2 rc=0
    kill "-$sig" "$pid"
    for _ in $(seq 1 400); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" # never wait forever: fail, with the log, and go on
        wait "$pid" 2>/dev/null || true
        pid=
        fail "$name stops on SIG$sig (still running after 20 s)"
        return 1
    fi
    wait "$pid" || rc=$?
    pid=
    if [ "$rc" = 0 ]; then ok "$name stops on SIG$sig"; else fail "$name stops (exit $rc)"; fi
}

printf '# test config\nlog.dirs=%s/file-dir\nrivven.shards=1\nrivven.trace.level=warn\n' \
    "$TMP" >"$TMP/rivven.properties"
LISTEN=--listeners=PLAINTEXT://127.0.0.1:0
start_broker "file + flags" -c "$TMP/rivven.properties" --log.dirs="$TMP/data" \
    --rivven.trace.level=info "$LISTEN" && stop_broker TERM "file + flags"
if [ -d "$TMP/data/wal" ] && [ ! -e "$TMP/file-dir" ]; then
    ok "the flag's log.dirs won over the file's"
else
    fail "the flag's log.dirs won over the file's"
fi
start_broker "restart, epoll" --log.dirs="$TMP/data" --rivven.shards=2 \
    --rivven.io.backend=epoll --rivven.wal.io=buffered "$LISTEN" && stop_broker INT "restart, epoll"
if grep -q "(epoll)" "$TMP/err"; then ok "epoll backend used"; else fail "epoll backend used"; fi

# wire PORT: ApiVersions over a raw socket, bad input on other connections, and
# ApiVersions again on the first connection, which must be unaffected.
wire() {
    /usr/bin/python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
def conn():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s
def api_versions(s, corr):
    hdr = struct.pack(">hhih", 18, 0, corr, 4) + b"test"
    s.sendall(struct.pack(">i", len(hdr)) + hdr)
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    body = s.recv(size, socket.MSG_WAITALL)
    got, err = struct.unpack(">ih", body[:6])
    assert got == corr and err == 0, (got, err)
def closed(s):
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
good = conn()
api_versions(good, 1)
bad = [struct.pack(">i", 200 << 20), struct.pack(">i", -2), b"GET / HTTP/1.1\r\n\r\n",
       struct.pack(">ihhih", 10, 1000, 0, 9, -1)]
for i, b in enumerate(bad):
    s = conn()
    s.sendall(b)
    assert closed(s), "bad input %d: connection not closed" % i
    s.close()
    api_versions(good, 2 + i)
print("wire ok")
PY
}
start_broker "served" --log.dirs="$TMP/data" --rivven.shards=2 "$LISTEN" || true
if [ -n "$pid" ]; then
    if wire "$port" >"$TMP/out" 2>&1; then ok "ApiVersions and bad input"; else fail "ApiVersions and bad input"; fi
    if grep -q "request size 209715200 outside" "$TMP/err"; then
        ok "oversized request logged"
    else
        fail "oversized request logged"
    fi
    if command -v kcat >/dev/null; then
        timeout 20 kcat -b "127.0.0.1:$port" -L -m 3 -d protocol >"$TMP/out" 2>&1 || true
        if grep -q "Received ApiVersionResponse" "$TMP/out"; then
            ok "kcat gets past ApiVersions"
        else
            fail "kcat gets past ApiVersions"
        fi
    else
        echo "skip kcat is not installed"
    fi
    used_port=$port
    saved_pid=$pid
    pid=
    expect_exit 1 "a port in use" --log.dirs="$TMP/data2" --rivven.shards=1 \
        "--listeners=PLAINTEXT://127.0.0.1:$used_port"
    if grep -q "listen on 127.0.0.1:$used_port.*in use" "$TMP/err"; then ok "the port in use named"; else fail "the port in use named"; fi
    pid=$saved_pid
    stop_broker TERM "served"
fi

echo "rivvend: $passed passed, $failed failed"
[ "$failed" = 0 ]
