#!/usr/bin/env bash
# tests/tools/test_rivvenctl.sh - end-to-end tests of rivvenctl.
#
#   test_rivvenctl.sh PATH_TO_RIVVENCTL [PATH_TO_TEST_MAKE_DATA]
#
# Builds a data directory with `rivvenctl make-fixture` in a temporary directory,
# checks that verify, topics and dump accept it (JSON output parsed with python3),
# then damages copies of it one way at a time (a flipped byte in a batch, a segment
# cut mid-batch, a corrupt WAL record, bad index files, offset gaps and overlaps, a
# WAL hole, a log-start past the log end, WAL records missing after the checkpoint)
# and checks that each is reported with its file and position and the right exit
# status. Usage errors exit 2.
#
# With test_make_data (tests/tools/make_data.c), the same for a data directory the
# engine wrote: verify finds it clean (the WAL's checkpoint file included), fails
# on a missing middle or first segment and on a closed segment cut at a batch
# boundary of a topic that does not compact, naming the missing offsets, and
# accepts the same gaps in a compacted topic and below the log start.
set -euo pipefail

BIN=${1:?usage: test_rivvenctl.sh PATH_TO_RIVVENCTL [PATH_TO_TEST_MAKE_DATA]}
MAKE_DATA=${2:-}
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rivvenctl-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

P0=topics/orders/0
P1=topics/orders/1
SEG0=00000000000000000000
SEG12=00000000000000000012
SEG20=00000000000000000020
SEG30=00000000000000000030
WAL0=wal/shard-0/00000000000000000000.wal

# shellcheck source=tests/tools/test_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test_lib.sh"

show_output() {
    sed 's/^/    | /' "$TMP/out" "$TMP/err" | head -n 30
}

# run NAME STATUS COMMAND...: run it (output in $TMP/out, $TMP/err), check the status.
run() {
    local name=$1 want=$2 st=0
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err" || st=$?
    if [ "$st" -eq "$want" ]; then
        ok "$name"
    else
        fail "$name (exit $st, want $want)"
        show_output
    fi
}

# expect NAME REGEX: a line of the last run's output matches the extended regex.
expect() {
    if grep -qE -- "$2" "$TMP/out" "$TMP/err"; then
        ok "$1"
    else
        fail "$1: no line matches /$2/"
        show_output
    fi
}

# reject NAME REGEX: no line of the last run's output matches.
reject() {
    if grep -qE -- "$2" "$TMP/out" "$TMP/err"; then
        fail "$1: a line matches /$2/"
        show_output
    else
        ok "$1"
    fi
}

# json NAME PYTHON_EXPR: the last run's stdout is valid JSON (python3 -m json.tool)
# and the expression holds with the document as `d`.
json() {
    if ! $PY -m json.tool "$TMP/out" >/dev/null 2>&1; then
        fail "$1: invalid JSON"
        show_output
        return
    fi
    local check='import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)'
    if $PY -c "$check" "$TMP/out" "$2"; then
        ok "$1"
    else
        fail "$1: JSON does not satisfy: $2"
        show_output
    fi
}

# set_policy VALUE: cleanup.policy of the fixture's topic description.
set_policy() {
    sed -i "s/^cleanup\.policy=.*/cleanup.policy=$1/" "$D/meta/topics/orders.topic" ||
        fail "set cleanup.policy=$1 in the fixture's topic description"
}

# A fresh copy of the fixture in $TMP/d.
fresh() {
    rm -rf "$TMP/d"
    cp -r "$TMP/pristine" "$TMP/d"
}

# flip FILE POS: invert the byte at POS.
flip() {
    $PY -c 'import sys
p, o = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
b[o] ^= 0xff
open(p, "wb").write(b)' "$1" "$2"
}

# put_be32 FILE POS VALUE: overwrite four bytes, big-endian.
put_be32() {
    $PY -c 'import sys
p, o, v = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = bytearray(open(p, "rb").read())
b[o:o + 4] = v.to_bytes(4, "big")
open(p, "wb").write(b)' "$1" "$2" "$3"
}

# flip_records FILE BATCH_POS: invert a byte of the batch's records and fix its CRC-32C,
# so that only the (compressed) records are wrong.
flip_records() {
    $PY -c 'import sys
def crc32c(data):
    crc = 0xffffffff
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
p, pos = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
size = int.from_bytes(b[pos + 8:pos + 12], "big") + 12
b[pos + 61 + 12] ^= 0xff
b[pos + 17:pos + 21] = crc32c(b[pos + 21:pos + size]).to_bytes(4, "big")
open(p, "wb").write(b)' "$1" "$2"
}

# batch_pos FILE N: byte position of the N-th batch (from dump --json).
batch_pos() {
    "$BIN" dump "$1" --json | $PY -c 'import json, sys
print(json.load(sys.stdin)["entries"][int(sys.argv[1])]["pos"])' "$2"
}

# wal_pos FILE N: byte position of the N-th WAL record.
wal_pos() {
    batch_pos "$1" "$2"
}

# ---- usage ----------------------------------------------------------------------------

run "--help exits 0" 0 "$BIN" --help
expect "--help lists the commands" "verify DATA_DIR"
for cmd in dump verify topics make-fixture; do
    run "$cmd --help exits 0" 0 "$BIN" "$cmd" --help
    expect "$cmd --help shows its usage" "usage: rivvenctl $cmd"
done
run "no arguments: exit 2" 2 "$BIN"
run "unknown command: exit 2" 2 "$BIN" frobnicate
expect "unknown command is named" "unknown command frobnicate"
run "verify without a directory: exit 2" 2 "$BIN" verify
run "verify with an unknown option: exit 2" 2 "$BIN" verify --bogus "$TMP"
expect "unknown option is named" "unknown option --bogus"
run "verify with two directories: exit 2" 2 "$BIN" verify "$TMP" "$TMP"
run "topics does not take --records: exit 2" 2 "$BIN" topics --records "$TMP"
run "dump of an unknown file type: exit 2" 2 "$BIN" dump "$TMP/file.txt"
run "make-fixture without a directory: exit 2" 2 "$BIN" make-fixture
run "verify of a missing directory: exit 1" 1 "$BIN" verify "$TMP/missing"

# ---- the fixture ----------------------------------------------------------------------

run "make-fixture" 0 "$BIN" make-fixture "$TMP/pristine"
if [ ! -d "$TMP/pristine/topics" ] || [ ! -d "$TMP/pristine/wal" ]; then
    echo "rivvenctl tests: $passed passed, $((failed + 1)) failed (no fixture: cannot go on)"
    exit 1
fi
fresh
D=$TMP/d

if grep -qx "cleanup.policy=delete" "$D/meta/topics/orders.topic" 2>/dev/null; then
    ok "the fixture describes its topic (cleanup.policy=delete)"
else
    fail "the fixture describes its topic (cleanup.policy=delete)"
fi
run "verify of the fixture exits 0" 0 "$BIN" verify "$D"
expect "verify of the fixture says OK" "^OK: no errors, 0 warnings"
expect "verify counts 2 partitions and 5 segments" "partitions=2 segments=5 batches=15"
run "verify --json exits 0" 0 "$BIN" verify "$D" --json
json "verify --json is clean" \
    'd["ok"] and d["problems"] == [] and d["summary"]["wal_files"] == 2 and d["summary"]["wal_records"] == 16'

run "topics exits 0" 0 "$BIN" topics "$D"
expect "topics: orders/0 from 0 to 35" "^orders +0 +0 +0 +35 +3 "
expect "topics: orders/1 log start 3, offsets 0 to 29" "^orders +1 +3 +0 +29 +2 "
run "topics --json exits 0" 0 "$BIN" topics "$D" --json
json "topics --json lists both partitions" \
    '[(p["partition"], p["first_offset"], p["last_offset"]) for p in d["partitions"]] == [(0, 0, 35), (1, 0, 29)]'

run "dump .log exits 0" 0 "$BIN" dump "$D/$P0/$SEG12.log"
expect "dump .log shows batches" "^batch pos=0 base_offset=12 last_offset=17 count=6 .*crc_ok=true"
expect "dump .log ends cleanly" "^clean end at byte 837"
run "dump .log --records exits 0" 0 "$BIN" dump "$D/$P1/$SEG0.log" --records
expect "dump --records shows escaped values" 'value="line one\\n\\"quoted\\"\\ttab café 2"'
expect "dump --records shows binary keys in hex" "key_hex=00ff03 value=null"
expect "dump --records shows headers" 'header key="trace" value="abc"'
run "dump .log --json --records exits 0" 0 "$BIN" dump "$D/$P1/$SEG0.log" --json --records
json "dump --json decodes every codec's records" \
    '[b["codec"] for b in d["entries"]] == ["none", "gzip", "zstd", "lz4"] and
     [r["offset"] for b in d["entries"] for r in b["records"]] == list(range(20))'
json "dump --json keeps text values intact" \
    'd["entries"][0]["records"][2]["value"] == "line one\n\"quoted\"\ttab café 2" and not d["end"]["is_corrupt"]'
run "dump of the snappy segment --json --records" 0 "$BIN" dump "$D/$P1/$SEG20.log" --json --records
json "snappy records decode" 'd["entries"][0]["codec"] == "snappy" and len(d["entries"][0]["records"]) == 5'
run "dump .index --json exits 0" 0 "$BIN" dump "$D/$P0/$SEG12.index" --json
json "dump .index lists entries" \
    '[(e["offset"], e["log_pos"]) for e in d["entries"]][0] == (12, 0) and len(d["entries"]) == 3'
run "dump .timeindex --json exits 0" 0 "$BIN" dump "$D/$P0/$SEG12.timeindex" --json
json "dump .timeindex lists increasing timestamps" \
    'len(d["entries"]) == 3 and sorted(e["timestamp"] for e in d["entries"]) == [e["timestamp"] for e in d["entries"]]'
run "dump .timeindex text exits 0" 0 "$BIN" dump "$D/$P0/$SEG12.timeindex"
expect "dump .timeindex shows entries" "^entry index=0 pos=0 timestamp=1700000000170 rel_offset=0 offset=12"
run "dump .wal exits 0" 0 "$BIN" dump "$D/$WAL0"
expect "dump .wal shows a meta record" "^record pos=0 lsn=0 type=2 type_name=meta"
expect "dump .wal splits the key" "key=4294967296 topic_id=1 partition=0 len=187"
expect "dump .wal summarises batches" "^  batch base_offset=0 last_offset=2 count=3 codec=none"
expect "dump .wal ends at the zero tail" "clean end at byte 2137 \(zero tail of 4096 bytes\)"
run "dump .wal --json exits 0" 0 "$BIN" dump "$D/$WAL0" --json
json "dump .wal --json has records and batches" \
    'len(d["entries"]) == 10 and d["entries"][1]["batch"]["count"] == 3 and d["summary"]["end_lsn"] == 2137'

# ---- a flipped byte inside a batch ----------------------------------------------------

fresh
pos=$(batch_pos "$D/$P0/$SEG12.log" 1)
flip "$D/$P0/$SEG12.log" $((pos + 70))
run "verify after a flipped byte exits 1" 1 "$BIN" verify "$D"
expect "verify names the file, position and crc" \
    "^ERROR $D/$P0/$SEG12\.log: torn tail at byte $pos: crc mismatch"
expect "verify says it failed" "^FAILED: "
run "dump after a flipped byte exits 1" 1 "$BIN" dump "$D/$P0/$SEG12.log"
expect "dump says where and why" "^torn tail at byte $pos: crc mismatch \(stored 0x[0-9a-f]{8}, computed"
expect "dump still shows the batch before" "^batch pos=0 base_offset=12"
run "dump --json after a flipped byte exits 1" 1 "$BIN" dump "$D/$P0/$SEG12.log" --json
json "dump --json reports the corruption" \
    "d['end']['is_corrupt'] and d['end']['pos'] == $pos and len(d['entries']) == 1"
run "verify --json after a flipped byte exits 1" 1 "$BIN" verify "$D" --json
json "verify --json lists the error" \
    "not d['ok'] and any(p['level'] == 'ERROR' and p['path'].endswith('$SEG12.log')
                         and 'byte $pos' in p['message'] for p in d['problems'])"

# A flipped magic byte.
fresh
flip "$D/$P0/$SEG0.log" 16
run "verify after a flipped magic exits 1" 1 "$BIN" verify "$D"
expect "verify reports the magic" "^ERROR $D/$P0/$SEG0\.log: torn tail at byte 0: magic "

# Compressed records that do not decompress, under a valid CRC.
fresh
pos=$(batch_pos "$D/$P1/$SEG0.log" 1)
flip_records "$D/$P1/$SEG0.log" "$pos"
run "verify with undecompressable records exits 1" 1 "$BIN" verify "$D"
expect "verify names the batch" \
    "^ERROR $D/$P1/$SEG0\.log: batch at byte $pos \(offset 5\): gzip records do not decompress"
run "dump --records of undecompressable records exits 1" 1 "$BIN" dump "$D/$P1/$SEG0.log" --records
expect "dump says which batch" "^corrupt batch at byte $pos: gzip records do not decompress"
run "dump without --records does not decompress" 0 "$BIN" dump "$D/$P1/$SEG0.log"

# ---- a segment cut mid-batch ----------------------------------------------------------

fresh
pos=$(batch_pos "$D/$P1/$SEG20.log" 1)
truncate -s $((pos + 30)) "$D/$P1/$SEG20.log"
run "verify after a cut mid-batch exits 1" 1 "$BIN" verify "$D"
expect "verify reports the torn tail" \
    "^ERROR $D/$P1/$SEG20\.log: torn tail at byte $pos: file ends inside a batch: 30 of its"
run "dump after a cut mid-batch exits 1" 1 "$BIN" dump "$D/$P1/$SEG20.log"
expect "dump reports the torn tail" "^torn tail at byte $pos: file ends inside a batch"

# A zero tail on a log is not corruption (recovery cuts it): a warning.
fresh
head -c 100 /dev/zero >>"$D/$P0/$SEG30.log"
run "verify with a zero tail exits 0" 0 "$BIN" verify "$D"
expect "verify warns about the zero tail" "^WARN $D/$P0/$SEG30\.log: clean end at byte 319 \(zero tail of 100 bytes\)"
run "dump with a zero tail exits 0" 0 "$BIN" dump "$D/$P0/$SEG30.log"

# ---- a corrupt WAL record ---------------------------------------------------------------

fresh
pos=$(wal_pos "$D/$WAL0" 3)
flip "$D/$WAL0" $((pos + 40))
run "verify after a corrupt WAL record exits 1" 1 "$BIN" verify "$D"
expect "verify names the WAL file, position and lsn" \
    "^ERROR $D/$WAL0: torn tail at byte $pos \(lsn $pos\): crc mismatch"
expect "verify reports the broken LSN chain" \
    "^ERROR $D/wal/shard-0/00000000000000002137\.wal: starts at lsn 2137, but the previous file's records end at lsn $pos"
run "dump of a corrupt WAL exits 1" 1 "$BIN" dump "$D/$WAL0"
expect "dump reports the WAL record" "^torn tail at byte $pos: crc mismatch"
run "dump --json of a corrupt WAL exits 1" 1 "$BIN" dump "$D/$WAL0" --json
json "dump --json of a corrupt WAL stops there" "len(d['entries']) == 3 and d['end']['is_corrupt']"

# A record whose lsn field is wrong (stale bytes).
fresh
pos=$(wal_pos "$D/$WAL0" 2)
flip "$D/$WAL0" $((pos + 12))
run "dump of a WAL with a wrong lsn exits 1" 1 "$BIN" dump "$D/$WAL0"
expect "dump explains the lsn" "^torn tail at byte $pos: lsn field [0-9]+, but this position is lsn $pos"

# A missing stretch of WAL between files.
fresh
mv "$D/wal/shard-0/00000000000000002137.wal" "$D/wal/shard-0/00000000000000009000.wal"
run "verify with a WAL hole exits 1" 1 "$BIN" verify "$D"
expect "verify reports the WAL hole" \
    "^ERROR $D/wal/shard-0/00000000000000009000\.wal: starts at lsn 9000, but the previous file's records end at lsn 2137"

# A reused WAL file (direct I/O keeps released files and makes spares of them)
# rolled before it was full: its old records follow its end, which is where the
# next file starts; replay stops there too. Kept free-*.wal.tmp files are not WAL.
fresh
dd if="$D/$WAL0" of="$D/$WAL0" bs=1 seek=2137 count=400 conv=notrunc status=none
cp "$D/$WAL0" "$D/wal/shard-0/free-00000000000000000000.wal.tmp"
run "verify of a reused WAL file exits 0" 0 "$BIN" verify "$D"
expect "verify of a reused WAL file is clean" "^OK: no errors, 0 warnings"
run "dump of a reused WAL file exits 0" 0 "$BIN" dump "$D/$WAL0"
expect "dump says where the next file starts" \
    "^clean end at byte 2137, where the next file starts \(.* old records follow"
# The same old records in the last file are a torn tail.
fresh
dd if="$D/$WAL0" of="$D/wal/shard-0/00000000000000002137.wal" bs=1 seek=1000 count=400 \
    conv=notrunc status=none
run "verify of old records in the last WAL file exits 1" 1 "$BIN" verify "$D"

# ---- bad indexes ------------------------------------------------------------------------

fresh
put_be32 "$D/$P0/$SEG12.index" 12 300
run "verify with an index entry off a batch boundary exits 1" 1 "$BIN" verify "$D"
expect "verify names the index entry" \
    "^ERROR $D/$P0/$SEG12\.index: entry 1 \(offset 18\) points at byte 300, which is not a batch boundary"

fresh
put_be32 "$D/$P0/$SEG12.index" 8 7
run "verify with an index entry naming the wrong offset exits 1" 1 "$BIN" verify "$D"
expect "verify names the offset mismatch" \
    "^ERROR $D/$P0/$SEG12\.index: entry 1 names offset 19, but the batch at byte [0-9]+ starts at offset 18"

fresh
put_be32 "$D/$P0/$SEG12.index" 8 0
run "verify with a non-increasing index exits 1" 1 "$BIN" verify "$D"
expect "verify reports the invalid entry" \
    "^ERROR $D/$P0/$SEG12\.index: invalid entry 1 at byte 8: relative offset 0 does not increase"
run "dump of a non-increasing index exits 1" 1 "$BIN" dump "$D/$P0/$SEG12.index"
expect "dump reports the invalid entry" "^corrupt entry at byte 8: relative offset 0 does not increase"

fresh
printf 'abc' >>"$D/$P0/$SEG12.index"
run "verify with a partial index entry exits 1" 1 "$BIN" verify "$D"
expect "verify reports the partial entry" "^ERROR $D/$P0/$SEG12\.index: invalid entry 3 at byte 24: partial entry"

fresh
put_be32 "$D/$P0/$SEG12.timeindex" 12 0
put_be32 "$D/$P0/$SEG12.timeindex" 16 0
run "verify with a time index going backwards exits 1" 1 "$BIN" verify "$D"
expect "verify reports the time index" "^ERROR $D/$P0/$SEG12\.timeindex: invalid entry 1 at byte 12: "

fresh
rm "$D/$P0/$SEG12.index"
run "verify with a missing index exits 0" 0 "$BIN" verify "$D"
expect "verify warns about the missing index" "^WARN $D/$P0/$SEG12\.index: missing"

# ---- offsets and log start -------------------------------------------------------------

# A missing segment of a topic that does not compact is lost data.
fresh
rm "$D/$P0/$SEG12".*
run "verify with an offset gap exits 1" 1 "$BIN" verify "$D"
expect "verify names the partition, file and missing offsets" \
    "^ERROR $D/$P0/$SEG30\.log: batch at byte 0: offset gap in partition orders/0: offsets 12\.\.29 are missing \(the batch before ends at offset 11 in $SEG0\.log; cleanup\.policy=delete does not compact\)"
expect "verify counts the gap as an error" "^FAILED: 1 errors, 0 warnings"
run "verify --json with an offset gap exits 1" 1 "$BIN" verify "$D" --json
json "verify --json lists the gap as an error" \
    "not d['ok'] and [(p['level'], p['path']) for p in d['problems']] == [('ERROR', '$D/$P0/$SEG30.log')]
     and 'offsets 12..29 are missing' in d['problems'][0]['message']"
# The same gap in a compacted topic is what compaction leaves.
for policy in compact compact,delete; do
    set_policy "$policy"
    run "verify of a gap under cleanup.policy=$policy exits 0" 0 "$BIN" verify "$D"
    reject "a gap under cleanup.policy=$policy is no problem" "offset gap|^(ERROR|WARN) "
done
# A partition compaction ran in (its point file) keeps its gaps after a policy change.
set_policy delete
printf '30 9223372036854775807\n' >"$D/$P0/compact-point"
run "verify of a gap in a partition compaction ran in exits 0" 0 "$BIN" verify "$D"
reject "its gap is no problem" "offset gap"
# Without a topic description the topic is taken as not compacted.
fresh
rm -f "$D/$P0/$SEG12".* "$D/meta/topics/orders.topic"
run "verify of a gap without a topic description exits 1" 1 "$BIN" verify "$D"
expect "verify says why the gap counts" \
    "^ERROR $D/$P0/$SEG30\.log: .*offsets 12\.\.29 are missing .*no topic description: taken as not compacted"

# A gap between two batches of one segment: the second batch of $SEG30 (33..35)
# claims 35..37 (the base offset is outside the CRC; the index names only the first).
fresh
pos=$(batch_pos "$D/$P0/$SEG30.log" 1)
put_be32 "$D/$P0/$SEG30.log" $((pos + 4)) 35
run "verify with a gap inside a segment exits 1" 1 "$BIN" verify "$D"
expect "verify names the gap inside the segment" \
    "^ERROR $D/$P0/$SEG30\.log: batch at byte $pos: offset gap in partition orders/0: offsets 33\.\.34 are missing \(the batch before ends at offset 32 in $SEG30\.log"
expect "only the gap is wrong" "^FAILED: 1 errors, 0 warnings"

# A missing first segment: the offsets from the log start up to the next one are lost.
fresh
rm "$D/$P0/$SEG0".*
run "verify without the first segment exits 1" 1 "$BIN" verify "$D"
expect "verify names the offsets from the log start" \
    "^ERROR $D/$P0/$SEG12\.log: batch at byte 0: offset gap in partition orders/0: offsets 0\.\.11 are missing \(the log starts at offset 0;"
# ... but not those below the log start: retention and delete_records remove them.
fresh
rm "$D/$P0/$SEG0".*
echo 12 >"$D/$P0/log-start"
run "verify of segments gone below the log start exits 0" 0 "$BIN" verify "$D"
expect "segments gone below the log start are no problem" "^OK: no errors, 0 warnings"

fresh
for ext in log index timeindex; do
    mv "$D/$P0/$SEG30.$ext" "$D/$P0/00000000000000000010.$ext"
done
run "verify with overlapping segments exits 1" 1 "$BIN" verify "$D"
expect "verify reports offsets going backwards" \
    "^ERROR $D/$P0/$SEG12\.log: batch at byte 0: offsets go backwards: base offset 12 overlaps offsets up to 35"

# An empty segment holds the offsets from its base on: one past the end is a gap.
fresh
: >"$D/$P0/00000000000000000040.log"
run "verify with an empty segment past the end exits 1" 1 "$BIN" verify "$D"
expect "verify names the offsets before the empty segment" \
    "^ERROR $D/$P0/00000000000000000040\.log: empty segment: offset gap in partition orders/0: offsets 36\.\.39 are missing"
fresh
: >"$D/$P0/00000000000000000036.log"
run "verify with an empty segment at the end exits 0" 0 "$BIN" verify "$D"

fresh
echo 40 >"$D/$P1/log-start"
run "verify with log-start past the end of the log exits 1" 1 "$BIN" verify "$D"
expect "verify reports log-start" "^ERROR $D/$P1: log-start 40 is past the end of the log \(its next offset is 30\)"

# Segments wholly below the log start that are still there: delete_records and
# retention write log-start first, and retention removes them later.
fresh
echo 25 >"$D/$P1/log-start"
run "verify with log-start past the first segment exits 0" 0 "$BIN" verify "$D"
expect "verify warns about the segment below log-start" \
    "^WARN $D/$P1: log-start 25 is past the end of the first segment \(its next offset is 20\): segments wholly below the log start are left for retention to remove"

fresh
echo nonsense >"$D/$P1/log-start"
run "verify with an unreadable log-start exits 1" 1 "$BIN" verify "$D"
expect "verify reports the log-start file" "^ERROR $D/$P1: log-start: does not hold a log start offset"
reject "nothing else is wrong" "^ERROR .*\.(log|index|timeindex|wal):"

# ---- the WAL checkpoint ------------------------------------------------------------------

# Replay starts at the checkpoint: WAL files wholly below it may be gone (released),
# the records from it on may not.
fresh
echo 2137 >"$D/wal/shard-0/checkpoint"
run "verify with a checkpoint exits 0" 0 "$BIN" verify "$D"
expect "the checkpoint is no problem" "^OK: no errors, 0 warnings"
rm "$D/$WAL0"
run "verify without the WAL files below the checkpoint exits 0" 0 "$BIN" verify "$D"
expect "released WAL files are no problem" "^OK: no errors, 0 warnings"
echo 100 >"$D/wal/shard-0/checkpoint"
run "verify with WAL records missing after the checkpoint exits 1" 1 "$BIN" verify "$D"
expect "verify names the missing WAL records" \
    "^ERROR $D/wal/shard-0/checkpoint: replay starts at lsn 100, but the first WAL file starts at lsn 2137: the records from lsn 100 up to 2137 are missing"
fresh
echo nonsense >"$D/wal/shard-0/checkpoint"
echo 5 >"$D/wal/shard-0/checkpoint.tmp"
run "verify with an unreadable checkpoint exits 0" 0 "$BIN" verify "$D"
expect "verify warns about the checkpoint" \
    "^WARN $D/wal/shard-0/checkpoint: does not hold an LSN \(recovery replays every WAL file\)"
reject "a leftover checkpoint.tmp is no problem" "checkpoint\.tmp"

# ---- a data directory written by the engine ------------------------------------------------

# seg_names DIR: the .log files of a partition directory, in order, without ".log".
seg_names() {
    ls "$1" | sed -n 's/\.log$//p' | sort
}

# range_before NAME NEXT: "A\.\.B" for the offsets from segment NAME's base to NEXT's - 1.
range_before() {
    echo "$((10#$1))\\.\\.$((10#$2 - 1))"
}

if [ -z "$MAKE_DATA" ]; then
    echo "skip the engine's data directory (no test_make_data given)"
elif ! "$MAKE_DATA" "$TMP/engine" >"$TMP/out" 2>"$TMP/err"; then
    fail "test_make_data wrote a data directory"
    show_output
else
    ok "test_make_data wrote a data directory"
    E=$TMP/e
    fresh_engine() {
        rm -rf "$E"
        cp -r "$TMP/engine" "$E"
    }
    fresh_engine
    run "verify of the engine's data exits 0" 0 "$BIN" verify "$E"
    expect "verify of the engine's data says OK" "^OK: no errors, 0 warnings"
    reject "the WAL's checkpoint file is known" "checkpoint"
    if [ -f "$E/wal/shard-0/checkpoint" ]; then
        ok "the engine wrote a checkpoint"
    else
        fail "the engine wrote a checkpoint"
    fi

    # A middle segment of a topic that does not compact.
    mapfile -t segs < <(seg_names "$E/topics/events/0")
    if [ "${#segs[@]}" -ge 4 ]; then
        ok "events has ${#segs[@]} segments"
    else
        fail "events has ${#segs[@]} segments, want 4 or more"
    fi
    fresh_engine
    rm "$E/topics/events/0/${segs[2]}".*
    run "verify without a middle segment exits 1" 1 "$BIN" verify "$E"
    expect "verify names the partition, file and missing offsets" \
        "^ERROR $E/topics/events/0/${segs[3]}\.log: batch at byte 0: offset gap in partition events/0: offsets $(range_before "${segs[2]}" "${segs[3]}") are missing \(the batch before ends at offset $((10#${segs[2]} - 1)) in ${segs[1]}\.log; cleanup\.policy=delete does not compact\)"
    expect "only the gap is wrong" "^FAILED: 1 errors, 0 warnings"

    # The first segment (the log start is 0).
    fresh_engine
    rm "$E/topics/events/0/${segs[0]}".*
    run "verify without the first segment exits 1" 1 "$BIN" verify "$E"
    expect "verify names the offsets from the log start" \
        "^ERROR $E/topics/events/0/${segs[1]}\.log: batch at byte 0: offset gap in partition events/0: offsets $(range_before "${segs[0]}" "${segs[1]}") are missing"

    # A closed segment cut at a batch boundary: its last batch is gone.
    fresh_engine
    f=$E/topics/events/0/${segs[1]}.log
    last=$("$BIN" dump "$f" --json | $PY -c 'import json, sys
e = json.load(sys.stdin)["entries"][-1]
print(e["pos"], e["base_offset"])')
    truncate -s "${last% *}" "$f"
    cut=${last#* }
    if [ "$cut" -eq "$((10#${segs[2]} - 1))" ]; then
        missing="offset $cut is"
    else
        missing="offsets $cut\\.\\.$((10#${segs[2]} - 1)) are"
    fi
    run "verify of a cut closed segment exits 1" 1 "$BIN" verify "$E"
    expect "verify names the offsets cut off" \
        "^ERROR $E/topics/events/0/${segs[2]}\.log: batch at byte 0: offset gap in partition events/0: $missing missing \(the batch before ends at offset $((cut - 1)) in ${segs[1]}\.log"
    expect "only the cut is wrong" "^FAILED: 1 errors, 0 warnings"

    # The same gap in the compacted topic.
    fresh_engine
    mapfile -t ksegs < <(seg_names "$E/topics/keyed/0")
    rm "$E/topics/keyed/0/${ksegs[2]}".*
    run "verify of a compacted topic without a middle segment exits 0" 0 "$BIN" verify "$E"
    reject "its gap is no problem" "offset gap"

    # delete_records moved the log start of "trimmed": the segments below it are gone
    # (the pristine directory verified clean above); the one holding it is not.
    fresh_engine
    mapfile -t tsegs < <(seg_names "$E/topics/trimmed/0")
    start=$(cat "$E/topics/trimmed/0/log-start")
    if [ "$((10#${tsegs[0]}))" -gt 0 ] && [ "$((10#${tsegs[0]}))" -le "$start" ]; then
        ok "trimmed starts at $start, in segment ${tsegs[0]}"
    else
        fail "trimmed starts at $start, in segment ${tsegs[0]}"
    fi
    rm "$E/topics/trimmed/0/${tsegs[0]}".*
    run "verify without the segment holding the log start exits 1" 1 "$BIN" verify "$E"
    expect "verify names the offsets from the log start" \
        "^ERROR $E/topics/trimmed/0/${tsegs[1]}\.log: batch at byte 0: offset gap in partition trimmed/0: offsets $start\\.\\.$((10#${tsegs[1]} - 1)) are missing \(the log starts at offset $start;"
fi

echo "rivvenctl tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
