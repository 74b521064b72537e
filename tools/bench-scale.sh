#!/usr/bin/env bash
# The shard scaling run of docs/benchmarks.md ("Scaling"): rivven-bench's
# storage produce cells at 1, 2, 4, 8 and 16 shards (or as many as the CPUs
# allow), once on the disk and once on a tmpfs, so the engine's own scaling
# shows apart from the disk's. Prints the machine first.
#
#   tools/bench-scale.sh [OUTDIR]
#
# BENCH names the bench command (default build-release/tools/rivven-bench; it
# may be a loader line such as "ld.so --library-path lib rivven-bench").
# SCALE overrides the shard counts, CELLS the --cell list, DURATION the disk
# run's --duration (default 1: short cells of 0.25 s, sustained ones of 2 s)
# and TMPFS_DURATION the tmpfs run's (default 0.5: a sustained cell at 16
# shards must fit the tmpfs, as every cell keeps its data until it ends).
set -u
out=${1:-.}
bench=${BENCH:-build-release/tools/rivven-bench}
cells=${CELLS:-100b_b1000_none,1k_b1000_all,1k_b16_all,16k_b16_leader}
cpus=$(nproc)
if [[ -z "${SCALE:-}" ]]; then
    SCALE=1
    for n in 2 4 8 16; do
        if ((n <= cpus)); then SCALE+=",$n"; fi
    done
fi
mkdir -p "$out"

{
    echo "== machine"
    date -u
    uname -a
    echo "cpus: $cpus"
    grep -m1 'model name' /proc/cpuinfo
    echo "threads per core: $(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list 2>/dev/null)"
    ls -d /sys/devices/system/node/node* 2>/dev/null | wc -l | sed 's/^/numa nodes: /'
    free -g | head -2
    echo "io_uring_disabled: $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo n/a)"
    df -h /var/tmp /dev/shm 2>/dev/null
} 2>&1 | tee "$out/machine.txt"

run() { # NAME DIR SECONDS DURATION
    local name=$1 dir=$2 limit=$3 duration=$4
    echo "== $name: $bench --scale $SCALE --only produce --duration $duration --cell $cells --dir $dir storage"
    # shellcheck disable=SC2086 # BENCH may be a loader line
    timeout -k 10 "$limit" $bench --scale "$SCALE" --only produce --duration "$duration" \
        --cell "$cells" --dir "$dir" storage 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

disk=/var/tmp/rivven-scale
mkdir -p "$disk"
run disk "$disk" "${DISK_LIMIT:-240}" "${DURATION:-1}"
rm -rf "$disk"

mem=/mnt/rivven-scale
mkdir -p "$mem"
if ! mount -t tmpfs -o size=64g tmpfs "$mem" 2>/dev/null; then
    mem=/dev/shm/rivven-scale
    mkdir -p "$mem"
fi
run tmpfs "$mem" "${TMPFS_LIMIT:-180}" "${TMPFS_DURATION:-0.5}"
rm -rf "${mem:?}"/*
umount "$mem" 2>/dev/null || true
