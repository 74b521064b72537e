#!/usr/bin/env bash
# tests/tools/test_rivven_bench.sh - rivven-bench's options and one tiny run.
#
#   test_rivven_bench.sh PATH_TO_RIVVEN_BENCH
#
# Bad --scale and --cell values exit 2 with a message; a storage produce run with
# --scale and a two-text --cell runs exactly the cells named, at each shard count,
# and reports their share of linear scaling (JSON parsed with python3). The
# figures themselves are not checked: performance belongs to the benchmark.
set -euo pipefail

BIN=${1:?usage: test_rivven_bench.sh PATH_TO_RIVVEN_BENCH}
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rivven-bench-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/tools/test_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"

# usage_error NAME EXPECTED_TEXT ARGS...: exit 2 and the text on stderr.
usage_error() {
    local name=$1 want=$2 rc=0
    shift 2
    "$BIN" "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    if [[ $rc -eq 2 ]] && grep -qF -- "$want" "$TMP/err"; then
        ok "$name"
    else
        fail "$name (exit $rc, stderr: $(cat "$TMP/err"))"
    fi
}

cpus=$(nproc)
usage_error "--scale falling" "--scale 2,1: expected rising shard counts" --scale 2,1 storage
usage_error "--scale repeated" "expected rising" --scale 1,1 storage
usage_error "--scale trailing comma" "expected rising" --scale 1, storage
usage_error "--scale empty" "expected rising" --scale "" storage
usage_error "--scale zero" "expected rising" --scale 0 storage
usage_error "--scale not a number" "expected rising" --scale 1,x storage
usage_error "--scale too many" "at most 8" --scale 1,2,3,4,5,6,7,8,9 storage
usage_error "--scale past the cpus" "shards, but only $cpus cpus" --scale $((cpus + 1)) storage

scale=1
if ((cpus >= 2)); then scale=1,2; fi
if "$BIN" --json --scale "$scale" --only produce --duration 0.05 \
    --cell p1_1k_b16_all,_100b_b16_none --dir "$TMP" storage >"$TMP/run.json" 2>"$TMP/err"; then
    ok "a --scale $scale run exits 0"
else
    fail "a --scale $scale run exits 0 ($(cat "$TMP/err"))"
fi
if SCALE=$scale "$PY" - "$TMP/run.json" <<'PY'; then
import json, os, sys
s = json.load(open(sys.argv[1]))["storage"]
counts = [int(n) for n in os.environ["SCALE"].split(",")]
ran = sorted(k[: -len("_records_per_s")] for k in s
             if k.endswith("_records_per_s") and not k.endswith("per_shard_records_per_s")
             and not k.endswith("_disk_bound_records_per_s"))
want = sorted(["p1_1k_b16_all"] + ["p%d_100b_b16_none" % n for n in counts])
assert ran == want, (ran, want)
for key in want:
    assert s[key + "_records_per_s"] > 0, key
    # A 100 B or 1 KiB record and its share of a batch's framing, as stored.
    value = 100 if "_100b_" in key else 1024
    assert value < s[key + "_log_bytes_per_record"] < value + 80, (key, s[key + "_log_bytes_per_record"])
assert s["p1_100b_b16_none_pct_of_linear"] == 100, s["p1_100b_b16_none_pct_of_linear"]
if len(counts) > 1:
    assert s["p2_100b_b16_none_pct_of_linear"] > 0
text = s["scale_p_100b_b16_none"]
assert all(("%d: " % n) in text for n in counts), text
assert "scale_p_1k_b16_all" in s
PY
    ok "the run has the cells named, at each count, with a scaling summary"
else
    fail "the run has the cells named, at each count, with a scaling summary"
fi
if [[ -z "$(ls -A "$TMP" | grep -v -e '^run.json$' -e '^out$' -e '^err$')" ]]; then
    ok "the run leaves no files in --dir"
else
    fail "the run leaves files in --dir: $(ls "$TMP")"
fi

echo "rivven-bench: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
