/*
 * tools/rivven-bench.c - micro-benchmarks of the runtime, each printed beside
 * the machine's own limit measured in the same run (docs/benchmarks.md).
 *
 *   rivven-bench mailbox  cross-shard messages, shard 0 -> shard 1: one-way
 *                         throughput with batched publish and with one message
 *                         per loop turn, round trips with and without
 *                         busy-polling, the CPU cost of polling idle and at
 *                         1000 round trips/s; limits: the bare SPSC ring and
 *                         the cache-line round trip between the two CPUs;
 *                         baseline: a mutex + condvar queue on the same CPUs
 *   rivven-bench io       rv_file_* on io_uring, epoll and io_uring without
 *                         polling: sequential 1 MiB writes ending in one
 *                         fdatasync, and 4 KiB write + fdatasync pairs;
 *                         limits: fio (io_uring engine) on the same directory,
 *                         memcpy
 *   rivven-bench storage  the storage engine through the public API: append
 *                         throughput and latency (value size x records per
 *                         produce x acks x 1 and 2 shards) from driver tasks
 *                         on the owner shards, fetch from the hot tier and from
 *                         disk, reopen time after a clean close and after a
 *                         SIGKILL, memory and descriptors per partition for
 *                         many partitions; limits: the disk's sequential write
 *                         and fdatasync rates (fio) from the same run
 *   rivven-bench broker   a running rivvend (or one it starts, --start) driven
 *                         by librdkafka: produce throughput and latency (acks,
 *                         message size, compression), consume throughput,
 *                         end-to-end latency; limits: loopback TCP through the
 *                         runtime's sockets, the disk's fdatasync p99. In
 *                         bench_broker.c; needs librdkafka-dev at build time
 *   rivven-bench all      mailbox, io and storage
 *
 * Threading: every runtime measurement runs in shard tasks. The main thread
 * opens and closes runtimes (one at a time), starts a measurement with
 * rv_runtime_submit and waits for its done flag: the shard writes every result
 * field, then sets the flag with release; the main thread reads the fields
 * after an acquire load. While it waits it watches a progress counter and
 * breaks stalls (see bench_wait), reading the shards' shared atomics from
 * shards/shard_impl.h to tell a lost wake-up from a busy machine. Results are
 * collected as named figures and printed at the end, as tables or as one JSON
 * object (--json).
 *
 * Exit status: 0 success, 1 a benchmark could not run (runtime open, I/O
 * error), 2 bad usage.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/hist.h"
#include "core/topo.h"
#include "rivven.h"
#include "shards/shard_impl.h"
#include "shards/sock.h"
#include "storage/part.h"
#include "tools/bench.h"

extern char **environ;

/* Mailbox benchmark. */
#define MB_BURST       256           /* messages per sender task, batched */
#define MB_ACK_EVERY   256           /* messages per acknowledging reply */
#define MB_WINDOW      2048          /* sent and not yet acknowledged, at most (ring: 4096) */
#define MB_CHECK_EVERY 64            /* sender task runs between clock reads */
#define MB_PACE_US     1000          /* the paced round trip: one per millisecond */
#define MB_WINDOW_NS   1000000000ull /* the idle and paced CPU windows */
#define MB_SETTLE_NS   100000000ull  /* let shards fall asleep before an idle window */
#define BENCH_NUDGE_NS 2000000ull    /* no reply for this long: a stall, nudge the shards */
#define HW_PING_NS     100000000ull  /* each cache-line ping-pong measurement */
#define HW_PING_BATCH  1024          /* round trips per timed batch */
#define MB_RING_SLOTS  4096          /* the runtime's default ring, for the bare ring */
#define MQ_SLOTS       4096          /* the mutex queue's capacity, like a mailbox ring */

RV_STATIC_ASSERT(MB_WINDOW % MB_ACK_EVERY == 0);
RV_STATIC_ASSERT(MB_BURST <= MB_WINDOW);

/* I/O benchmark. */
#define IO_SEQ_BLOCK     (1u << 20) /* bytes per sequential write */
#define IO_SEQ_DEPTH     8          /* sequential writes in flight */
#define IO_SEQ_BYTES_MAX (1ull << 30)
#define IO_SYNC_BLOCK    4096u
#define MEMCPY_BYTES     (64u << 20)
#define LB_BLOCK         (256u << 10) /* bytes per send of the loopback blast */
#define LB_RUNS          3            /* loopback blasts; the best is the limit */
#define LB_RUN_MIN_NS    250000000ull
RV_STATIC_ASSERT(LB_RUNS == 3); /* the note prints three */
#define FIO_ARG_COUNT 20
#define FIO_JSON_MAX  (8u << 20)

/* Storage benchmark. */
#define ST_WINDOW             64             /* produces in flight per driver, at most */
#define ST_WINDOW_BYTES       (4u << 20)     /* and batch bytes in flight, at most */
#define ST_CELL_BYTES         (256ull << 20) /* payload per matrix cell, at most */
#define ST_CELL_MIN_NS        50000000ull    /* shortest cell, whatever --duration says */
#define ST_SUSTAIN_FACTOR     8u             /* a sustained cell is this many cells long */
#define ST_GUARD_S            120            /* a store close or topic delete longer: wedged */
#define ST_IO_DEPTH           32768u         /* the storage runtimes' io_depth (see the doc) */
#define ST_VALUE_MAX          16384u
#define ST_BATCH_MAX          1000u
#define ST_BATCH_HEADER       61u           /* RecordBatch v2 header bytes */
#define ST_RECORD_OVERHEAD    16u           /* record framing with a null key, at most */
#define ST_PARTS_DRIVEN       64u           /* partitions one st_produce drives, at most */
#define ST_FETCH_BYTES        (32ull << 20) /* payload per fetch data set (< hot_bytes) */
#define ST_FETCH_MAX_BYTES    (1u << 20)    /* max_bytes of each rv_fetch */
#define ST_HOT_SMALL          (1ull << 20)  /* hot_bytes of the store that reads segments */
#define ST_RECOVERY_BYTES     (1ull << 30)
#define ST_RECOVERY_SLOW      (256ull << 20) /* the default on a slow disk */
#define ST_SLOW_MBPS          400.0
#define ST_LIMIT_SEQ_BYTES    (512ull << 20) /* fio's sequential job without the io section */
#define ST_KILL_AFTER_NS      1500000000ull  /* the child produces this long, then SIGKILL */
#define ST_CHILD_REPORT_NS    10000000ull    /* the child reports its acked bytes this often */
#define ST_PARTITIONS_DEFAULT 10000u
#define ST_PARTS_IDLE_MS      1000u /* the partition test's idle_unload_ms */
#define ST_PARTS_IDLE_WAIT_S  120u  /* how long it waits for every log to unload */
#define ST_PART_WINDOW        64u   /* produces in flight in the partition test */
#define ST_RETRY_US           50u   /* a driver refused with -ENOBUFS tries again after */

/* The parts of the storage benchmark (--only). */
#define ST_PART_PRODUCE    (1u << 0)
#define ST_PART_FETCH      (1u << 1)
#define ST_PART_RECOVERY   (1u << 2)
#define ST_PART_PARTITIONS (1u << 3)
#define ST_PART_ALL        0xfu
RV_STATIC_ASSERT(ST_PART_PRODUCE == BENCH_PART_PRODUCE);
RV_STATIC_ASSERT((ST_PART_ALL & (BENCH_PART_CONSUME | BENCH_PART_E2E)) == 0);

RV_STATIC_ASSERT(ST_VALUE_MAX <= IO_SEQ_BLOCK);

/* ---- options ------------------------------------------------------------- */

static void bench_usage(FILE *out)
{
    fprintf(out,
            "usage: " BENCH_NAME " [options] mailbox|io|storage|broker|all\n"
            "\n"
            "  mailbox          cross-shard message throughput and round-trip latency\n"
            "                   (needs 2 shards), polling cost, mutex+condvar baseline\n"
            "  io               file writes through io_uring and epoll, against fio\n"
            "  storage          produce/fetch throughput and latency, recovery time,\n"
            "                   memory and descriptors per partition, against the disk\n"
            "  broker           a running rivvend through librdkafka: produce, consume and\n"
            "                   end-to-end throughput and latency, against the loopback\n"
            "                   TCP limit and the disk's fdatasync latency\n"
            "  all              mailbox, io and storage (not broker)\n"
            "\n"
            "options:\n"
            "  --shards N       shards per runtime (default 2, or fewer if fewer CPUs)\n"
            "  --cpuset LIST    CPUs to run on, e.g. 0-1 or 2,5 (default: all allowed)\n"
            "  --duration SECS  length of each measurement, fractions allowed (default 2)\n"
            "  --json           print one JSON object with every figure\n"
            "  --dir PATH       directory for the io and storage files, and the broker\n"
            "                   mode's disk measurements and --start data (default: a\n"
            "                   temporary directory under /var/tmp, removed afterwards)\n"
            "  --recovery-bytes SIZE  storage: size of the log reopened in the recovery\n"
            "                   test, e.g. 256M or 1G (default 1G, 256M on a slow disk)\n"
            "  --partitions N   storage: partitions of the partition test (default 10000);\n"
            "                   broker: partitions of each topic (default: one per cpu)\n"
            "  --io-depth N     storage: the runtimes' io_depth (default 32768; the\n"
            "                   runtime's own default, 256, fails logs: see the doc)\n"
            "  --only LIST      storage: run only these of produce,fetch,recovery,partitions;\n"
            "                   broker: of produce,consume,e2e (consume alone still\n"
            "                   produces the acks=1 topics it reads)\n"
            "  --brokers H:P    broker: the broker to drive (default 127.0.0.1:9092)\n"
            "  --start PATH     broker: start this rivvend on a free port with a temporary\n"
            "                   data directory (in --dir), and stop it (SIGTERM) at the end\n"
            "  --topic NAME     broker: topic name prefix (default rivven-bench); each\n"
            "                   measurement uses a new topic NAME-<run id>-<cell>\n"
            "  --seconds SECS   broker: length of each cell (same as --duration)\n"
            "  --messages N     broker: messages per produce cell instead of --seconds\n"
            "  --rate N         broker: messages/s of the paced latency runs (default 1000)\n"
            "  --cell TEXT[,TEXT]  broker: only the produce cells whose key contains one\n"
            "                   of the texts (p100_none_a1 ... p1k_zstd_all, e.g. p1k_none);\n"
            "                   storage: likewise (p1_100b_b1_none ... s2_1k_b1000_all,\n"
            "                   e.g. p1_100b_b1000 or 100b_b1000_none,1k_b1000_all)\n"
            "  --scale LIST     storage: the shard counts of the produce matrix, e.g.\n"
            "                   1,2,4,8,16 (default 1,2), with a scaling summary; each\n"
            "                   count at most the cpus to run on\n"
            "  --wal-io MODE    storage: auto (default), direct or buffered: how the WAL\n"
            "                   writes (rv_store_config.wal_io)\n"
            "  --segment-io MODE  storage: auto (default), direct or buffered: how the\n"
            "                   active segments are written (rv_store_config.segment_io)\n"
            "  --window-mb N    storage: batch bytes each produce driver keeps in flight\n"
            "                   (default 4; at most 64 produces either way)\n"
            "  -X, --producer-set KEY=VALUE  broker: a librdkafka setting for the\n"
            "                   throughput producers, after the bench's own (repeatable)\n"
            "  --no-settle      broker: no sync() before each latency run (they then run\n"
            "                   while the previous cell's data is written back)\n"
            "  --help           this text\n");
}

/* Print a usage error and return the exit status for it. */
static int __attribute__((format(printf, 1, 2))) bench_usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(BENCH_NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see " BENCH_NAME " --help)\n", stderr);
    return 2;
}

static bool opts_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v < min || v > max)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool opts_parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* The comparisons also reject NaN. */
    if (end == s || *end != '\0' || errno != 0 || !(v >= 0.01 && v <= 3600.0))
        return false;
    *out = v;
    return true;
}

/* A size with an optional K, M or G suffix (powers of 1024), 1 MiB to 64 GiB. */
static bool opts_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno != 0)
        return false;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else if (*end == 'M' || *end == 'm')
        shift = 20;
    else if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift != 0)
        end++;
    if (*end != '\0' || v > (64ull << 30) >> shift)
        return false;
    v <<= shift;
    if (v < (1ull << 20))
        return false;
    *out = v;
    return true;
}

/* "1,2,4,8,16" into o->scale: rising shard counts, at most BENCH_SCALE_MAX. */
static bool opts_parse_scale(const char *s, struct bench_opts *o)
{
    o->scale_count = 0;
    while (*s != '\0') {
        char num[16];
        size_t len = strcspn(s, ",");
        uint32_t n;
        if (len == 0 || len >= sizeof(num) || o->scale_count == BENCH_SCALE_MAX)
            return false;
        memcpy(num, s, len);
        num[len] = '\0';
        if (!opts_parse_u32(num, 1, RV_SHARD_COUNT_MAX, &n))
            return false;
        if (o->scale_count > 0 && n <= o->scale[o->scale_count - 1])
            return false;
        o->scale[o->scale_count++] = n;
        s += len;
        if (*s == ',' && *++s == '\0')
            return false; /* "1,2," */
    }
    return o->scale_count > 0;
}

/* "produce,fetch" and the like into ST_PART_* and BENCH_PART_* bits; 0 for a
 * bad list. */
static uint32_t opts_parse_parts(const char *s)
{
    static const char *const names[] = {"produce",    "fetch",   "recovery",
                                        "partitions", "consume", "e2e"};
    uint32_t bits = 0;
    while (*s != '\0') {
        size_t len = strcspn(s, ",");
        size_t i = 0;
        while (i < RV_ARRAY_LEN(names) && (strlen(names[i]) != len || strncmp(s, names[i], len)))
            i++;
        if (i == RV_ARRAY_LEN(names))
            return 0;
        bits |= 1u << i;
        s += len + (s[len] == ',');
    }
    return bits;
}

static int opts_check_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return bench_usage_error("--dir %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return bench_usage_error("--dir %s: not a directory", dir);
    if (access(dir, W_OK | X_OK) < 0)
        return bench_usage_error("--dir %s: not writable", dir);
    return 0;
}

/* Check the cpuset against the process's CPUs, pick the default shard count. */
static int opts_resolve_cpus(struct bench_opts *o, bool has_shards)
{
    struct rv_cpuset allowed, cpus;
    if (rv_topo_allowed_cpus(&allowed) < 0)
        return bench_usage_error("cannot read this process's CPUs");
    cpus = allowed;
    if (o->cpuset != NULL) {
        if (rv_cpuset_parse(o->cpuset, &cpus) < 0)
            return bench_usage_error("--cpuset %s: %s", o->cpuset, rv_err_msg());
        for (unsigned i = 0; i < rv_cpuset_count(&cpus); i++) {
            int cpu = rv_cpuset_nth(&cpus, i);
            if (!rv_cpuset_has(&allowed, (unsigned)cpu))
                return bench_usage_error("--cpuset %s: cpu %d is not available to this process",
                                         o->cpuset, cpu);
        }
    }
    unsigned n = rv_cpuset_count(&cpus);
    /* As the runtime places shards: shard i on the i-th CPU of the set. */
    o->cpu_ids[0] = rv_cpuset_nth(&cpus, 0);
    o->cpu_ids[1] = rv_cpuset_nth(&cpus, n > 1 ? 1 : 0);
    o->cpu_count = n;
    if (!has_shards)
        o->shard_count = n < 2 ? n : 2;
    if (o->shard_count > n)
        return bench_usage_error("--shards %u: only %u cpus to run on (one shard per cpu)",
                                 o->shard_count, n);
    if (rv_cpuset_format(&cpus, o->cpus_text, sizeof(o->cpus_text)) < 0)
        snprintf(o->cpus_text, sizeof(o->cpus_text), "%u cpus", n);
    return 0;
}

static const struct option opts_long[] = {
    {"shards", required_argument, NULL, 's'},
    {"cpuset", required_argument, NULL, 'c'},
    {"duration", required_argument, NULL, 'd'},
    {"json", no_argument, NULL, 'j'},
    {"dir", required_argument, NULL, 'D'},
    {"recovery-bytes", required_argument, NULL, 'R'},
    {"partitions", required_argument, NULL, 'P'},
    {"io-depth", required_argument, NULL, 'I'},
    {"only", required_argument, NULL, 'O'},
    {"brokers", required_argument, NULL, 'b'},
    {"start", required_argument, NULL, 'S'},
    {"topic", required_argument, NULL, 't'},
    {"seconds", required_argument, NULL, 'd'},
    {"messages", required_argument, NULL, 'm'},
    {"rate", required_argument, NULL, 'r'},
    {"cell", required_argument, NULL, 'C'},
    {"producer-set", required_argument, NULL, 'X'},
    {"no-settle", no_argument, NULL, 'N'},
    {"wal-io", required_argument, NULL, 'W'},
    {"segment-io", required_argument, NULL, 'G'},
    {"window-mb", required_argument, NULL, 'M'},
    {"scale", required_argument, NULL, 'Z'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* The command and the options that depend on each other or on the machine. */
static int opts_check(struct bench_opts *o, bool has_shards)
{
    if (strcmp(o->cmd, "mailbox") != 0 && strcmp(o->cmd, "io") != 0 &&
        strcmp(o->cmd, "storage") != 0 && strcmp(o->cmd, "broker") != 0 &&
        strcmp(o->cmd, "all") != 0)
        return bench_usage_error(
            "unknown command '%s': expected mailbox, io, storage, broker or all", o->cmd);
    if (o->brokers != NULL && o->start_path != NULL)
        return bench_usage_error("--brokers and --start exclude each other");
    if (o->dir != NULL && opts_check_dir(o->dir) != 0)
        return 2;
    if (opts_resolve_cpus(o, has_shards) != 0)
        return 2;
    for (uint32_t i = 0; i < o->scale_count; i++)
        if (o->scale[i] > o->cpu_count)
            return bench_usage_error("--scale: %u shards, but only %u cpus to run on (one "
                                     "shard per cpu)",
                                     o->scale[i], o->cpu_count);
    if (strcmp(o->cmd, "mailbox") == 0 && o->shard_count < 2)
        return bench_usage_error(has_shards
                                     ? "mailbox needs --shards 2 or more"
                                     : "mailbox needs 2 shards, and only 1 cpu is available");
    return -1;
}

#define OPTS_UNKNOWN (-2) /* opts_parse_broker: not one of its options */

/* The broker mode's options: -1 when c was one and is stored, 2 after a usage
 * error, OPTS_UNKNOWN when c is not a broker option. */
static int opts_parse_broker(int c, const char *arg, struct bench_opts *o)
{
    uint32_t n;
    switch (c) {
    case 'b':
        if (strchr(arg, ':') == NULL)
            return bench_usage_error("--brokers %s: expected HOST:PORT", arg);
        o->brokers = arg;
        break;
    case 'S':
        if (access(arg, X_OK) < 0)
            return bench_usage_error("--start %s: %s", arg, strerror(errno));
        o->start_path = arg;
        break;
    case 't':
        if (arg[0] == '\0' || strlen(arg) > 200 ||
            strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
                strlen(arg))
            return bench_usage_error("--topic %s: expected 1 to 200 of a-z A-Z 0-9 . _ -", arg);
        o->topic = arg;
        break;
    case 'm':
        if (!opts_parse_u32(arg, 1, 1000000000, &n))
            return bench_usage_error("--messages %s: expected a number from 1 to 1000000000", arg);
        o->messages = n;
        break;
    case 'C': o->cell = arg; break;
    case 'M':
        if (!opts_parse_u32(arg, 1, 1024, &n))
            return bench_usage_error("--window-mb %s: expected a number from 1 to 1024", arg);
        o->window_mb = n;
        break;
    case 'W':
    case 'G': {
        enum rv_wal_io *io = c == 'W' ? &o->wal_io : &o->segment_io;
        if (strcmp(arg, "auto") == 0)
            *io = RV_WAL_IO_AUTO;
        else if (strcmp(arg, "direct") == 0)
            *io = RV_WAL_IO_DIRECT;
        else if (strcmp(arg, "buffered") == 0)
            *io = RV_WAL_IO_BUFFERED;
        else
            return bench_usage_error("--%s %s: expected auto, direct or buffered",
                                     c == 'W' ? "wal-io" : "segment-io", arg);
        break;
    }
    case 'N': o->is_no_settle = true; break;
    case 'X':
        if (strchr(arg, '=') == NULL || arg[0] == '=' || strlen(arg) > 255)
            return bench_usage_error("-X %s: expected KEY=VALUE (at most 255 bytes)", arg);
        if (o->producer_set_count == BENCH_PRODUCER_SET_MAX)
            return bench_usage_error("-X: at most %d settings", BENCH_PRODUCER_SET_MAX);
        o->producer_set[o->producer_set_count++] = arg;
        break;
    case 'r':
        if (!opts_parse_u32(arg, 1, 1000000, &o->rate))
            return bench_usage_error("--rate %s: expected messages/s from 1 to 1000000", arg);
        break;
    default: return OPTS_UNKNOWN;
    }
    return -1;
}

/* Fill *o from argv. Returns -1 to go on, or the exit status (0 for --help). */
static int opts_parse(int argc, char **argv, struct bench_opts *o)
{
    bool has_shards = false;
    int c;
    *o = (struct bench_opts){.duration_s = 2.0,
                             .partitions = ST_PARTITIONS_DEFAULT,
                             .parts = ST_PART_ALL | BENCH_PART_CONSUME | BENCH_PART_E2E,
                             .topic = "rivven-bench",
                             .rate = 1000};
    opterr = 0; /* our own messages */
    while ((c = getopt_long(argc, argv, ":hX:", opts_long, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!opts_parse_u32(optarg, 1, RV_SHARD_COUNT_MAX, &o->shard_count))
                return bench_usage_error("--shards %s: expected a number from 1 to %u", optarg,
                                         RV_SHARD_COUNT_MAX);
            has_shards = true;
            break;
        case 'c': o->cpuset = optarg; break;
        case 'd':
            if (!opts_parse_seconds(optarg, &o->duration_s))
                return bench_usage_error("--duration/--seconds %s: expected seconds from 0.01 "
                                         "to 3600",
                                         optarg);
            break;
        case 'j': o->is_json = true; break;
        case 'D': o->dir = optarg; break;
        case 'R':
            if (!opts_parse_size(optarg, &o->recovery_bytes))
                return bench_usage_error("--recovery-bytes %s: expected a size from 1M to 64G",
                                         optarg);
            break;
        case 'O':
            if ((o->parts = opts_parse_parts(optarg)) == 0)
                return bench_usage_error("--only %s: expected a list of produce, fetch, "
                                         "recovery, partitions (storage) or produce, consume, "
                                         "e2e (broker)",
                                         optarg);
            break;
        case 'I':
            if (!opts_parse_u32(optarg, 1, 32768, &o->io_depth))
                return bench_usage_error("--io-depth %s: expected a number from 1 to 32768",
                                         optarg);
            break;
        case 'P':
            if (!opts_parse_u32(optarg, 1, 100000, &o->partitions))
                return bench_usage_error("--partitions %s: expected a number from 1 to 100000",
                                         optarg);
            o->has_partitions = true;
            break;
        case 'Z':
            if (!opts_parse_scale(optarg, o))
                return bench_usage_error("--scale %s: expected rising shard counts from 1 to %u, "
                                         "at most %u of them, e.g. 1,2,4,8",
                                         optarg, RV_SHARD_COUNT_MAX, BENCH_SCALE_MAX);
            break;
        case 'h': bench_usage(stdout); return 0;
        case ':': return bench_usage_error("option %s needs a value", argv[optind - 1]);
        default: {
            int rc = opts_parse_broker(c, optarg, o);
            if (rc == OPTS_UNKNOWN)
                return bench_usage_error("unknown option '%s'", argv[optind - 1]);
            if (rc >= 0)
                return rc;
            break;
        }
        }
    }
    if (optind >= argc)
        return bench_usage_error("missing command: mailbox, io, storage, broker or all");
    if (optind + 1 < argc)
        return bench_usage_error("unexpected argument '%s'", argv[optind + 1]);
    o->cmd = argv[optind];
    return opts_check(o, has_shards);
}

/* ---- figures --------------------------------------------------------------- */

#define FIG_COUNT_MAX 1024 /* a full run has about 500 */

static struct bench_fig bench_figs[FIG_COUNT_MAX];
static uint32_t bench_fig_count;

struct bench_fig *fig_num(const char *section, const char *key, const char *label, double value,
                          const char *unit)
{
    RV_ASSERT(bench_fig_count < FIG_COUNT_MAX);
    struct bench_fig *f = &bench_figs[bench_fig_count++];
    f->section = section;
    snprintf(f->key, sizeof(f->key), "%s", key);
    snprintf(f->label, sizeof(f->label), "%s", label);
    f->unit = unit;
    f->kind = FIG_NUMBER;
    f->value = value;
    return f;
}

/* fig_num with a printf-formatted key. */
struct bench_fig *__attribute__((format(printf, 5, 6)))
fig_numf(const char *section, const char *label, double value, const char *unit,
         const char *key_fmt, ...)
{
    char key[sizeof(bench_figs[0].key)];
    va_list ap;
    va_start(ap, key_fmt);
    vsnprintf(key, sizeof(key), key_fmt, ap);
    va_end(ap);
    return fig_num(section, key, label, value, unit);
}

struct bench_fig *__attribute__((format(printf, 4, 5)))
fig_text(const char *section, const char *key, const char *label, const char *fmt, ...)
{
    struct bench_fig *f = fig_num(section, key, label, 0, "");
    va_list ap;
    f->kind = FIG_TEXT;
    va_start(ap, fmt);
    vsnprintf(f->text, sizeof(f->text), fmt, ap);
    va_end(ap);
    return f;
}

void __attribute__((format(printf, 2, 3))) fig_note(struct bench_fig *f, const char *fmt, ...)
{
    va_list ap;
    if (f == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(f->note, sizeof(f->note), fmt, ap);
    va_end(ap);
}

/* The figure section.key, or NULL. */
struct bench_fig *fig_find(const char *section, const char *key)
{
    for (uint32_t i = 0; i < bench_fig_count; i++) {
        if (strcmp(bench_figs[i].section, section) == 0 && strcmp(bench_figs[i].key, key) == 0)
            return &bench_figs[i];
    }
    return NULL;
}

/* The figure's value, 0 when it is missing. */
double fig_value(const char *section, const char *key)
{
    const struct bench_fig *f = fig_find(section, key);
    return f == NULL ? 0 : f->value;
}

/* p50, p99, p99.9 and max of h as <prefix>_p50_ns ..., labelled "  p50" ... to sit
 * under the figure they belong to. */
void fig_hist(const char *section, const char *prefix, const struct rv_hist *h)
{
    static const struct {
        const char *key;
        const char *name;
        double pct;
    } points[] = {
        {"p50", "p50", 50.0}, {"p99", "p99", 99.0}, {"p999", "p99.9", 99.9}, {"max", "max", 100.0}};
    for (size_t i = 0; i < RV_ARRAY_LEN(points); i++) {
        char key[48], text[48];
        snprintf(key, sizeof(key), "%s_%s_ns", prefix, points[i].key);
        snprintf(text, sizeof(text), "  %s", points[i].name);
        fig_num(section, key, text, (double)rv_hist_percentile(h, points[i].pct), "ns");
    }
}

/* How often the main thread had to wake the shards during a measurement, and
 * how often a shard slept on messages (see bench_wait); in the table only when
 * it happened. */
static void fig_stalls(const char *prefix, uint64_t nudges, uint64_t lost_wakeups)
{
    char key[sizeof(bench_figs[0].key)];
    snprintf(key, sizeof(key), "%.38s_stalls", prefix);
    fig_num("mailbox", key, nudges > 0 ? "  stalls > 2 ms, nudged" : "", (double)nudges, "");
    fig_numf("mailbox", lost_wakeups > 0 ? "  of which lost wake-ups" : "", (double)lost_wakeups,
             "", "%.38s_lost_wakeups", prefix);
}

double bench_rate(uint64_t count, uint64_t elapsed_ns)
{
    return elapsed_ns == 0 ? 0 : (double)count * 1e9 / (double)elapsed_ns;
}

static bool unit_is_rate(const char *unit)
{
    return strcmp(unit, "msg/s") == 0 || strcmp(unit, "rt/s") == 0 || strcmp(unit, "op/s") == 0 ||
           strcmp(unit, "rec/s") == 0;
}

/* A value for people: scaled to a readable unit ("30.1" "us", "23.4" "M msg/s"). */
void fig_format(double v, const char *u, char *num, size_t num_len, char *unit, size_t unit_len)
{
    const char *prefix = "";
    if (strcmp(u, "ns") == 0 && v >= 1e7) {
        v /= 1e6;
        u = "ms";
    } else if (strcmp(u, "ns") == 0 && v >= 1e4) {
        v /= 1e3;
        u = "us";
    } else if (unit_is_rate(u) && v >= 1e6) {
        v /= 1e6;
        prefix = "M ";
    } else if (unit_is_rate(u) && v >= 1e4) {
        v /= 1e3;
        prefix = "k ";
    }
    bool is_whole = v == (double)(int64_t)v && v < 1e15;
    int prec = is_whole || v >= 100 ? 0 : v >= 10 ? 1 : 2;
    snprintf(num, num_len, "%.*f", prec, v);
    snprintf(unit, unit_len, "%s%s", prefix, u);
}

/* Set f's note to "<what>: <value unit>" (nothing when f is NULL). */
static void fig_note_value(struct bench_fig *f, const char *what, double v, const char *u)
{
    char num[32], unit[24];
    fig_format(v, u, num, sizeof(num), unit, sizeof(unit));
    fig_note(f, "%s: %s %s", what, num, unit);
}

static void bench_print_text(const struct bench_opts *o)
{
    const char *done[8];
    uint32_t done_count = 0;
    printf("%s %d.%d.%d: %u shard%s on cpus %s, %.2g s per measurement\n", BENCH_NAME,
           RIVVEN_VERSION_MAJOR, RIVVEN_VERSION_MINOR, RIVVEN_VERSION_PATCH, o->shard_count,
           o->shard_count == 1 ? "" : "s", o->cpus_text, o->duration_s);
    for (uint32_t i = 0; i < bench_fig_count; i++) {
        const char *section = bench_figs[i].section;
        bool is_done = false;
        for (uint32_t k = 0; k < done_count; k++)
            is_done |= strcmp(done[k], section) == 0;
        if (is_done || done_count == RV_ARRAY_LEN(done))
            continue;
        done[done_count++] = section;
        bool has_heading = false;
        for (uint32_t j = i; j < bench_fig_count; j++) {
            const struct bench_fig *f = &bench_figs[j];
            if (strcmp(f->section, section) != 0 || f->label[0] == '\0')
                continue;
            if (!has_heading)
                printf("\n%s\n", section);
            has_heading = true;
            char num[32], unit[24];
            if (f->kind == FIG_TEXT)
                printf("  %-38s %s\n", f->label, f->text);
            else {
                fig_format(f->value, f->unit, num, sizeof(num), unit, sizeof(unit));
                printf("  %-38s %10s %-9s %s\n", f->label, num, unit, f->note);
            }
        }
    }
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void bench_print_json(void)
{
    const char *done[8];
    uint32_t done_count = 0;
    printf("{\n  \"tool\": \"%s\",\n  \"version\": \"%d.%d.%d\"", BENCH_NAME, RIVVEN_VERSION_MAJOR,
           RIVVEN_VERSION_MINOR, RIVVEN_VERSION_PATCH);
    for (uint32_t i = 0; i < bench_fig_count; i++) {
        const char *section = bench_figs[i].section;
        bool is_done = false;
        for (uint32_t k = 0; k < done_count; k++)
            is_done |= strcmp(done[k], section) == 0;
        if (is_done || done_count == RV_ARRAY_LEN(done))
            continue;
        done[done_count++] = section;
        printf(",\n  \"%s\": {", section);
        const char *sep = "\n";
        for (uint32_t j = i; j < bench_fig_count; j++) {
            const struct bench_fig *f = &bench_figs[j];
            if (strcmp(f->section, section) != 0)
                continue;
            printf("%s    \"%s\": ", sep, f->key);
            if (f->kind == FIG_TEXT)
                json_string(f->text);
            else
                printf("%.10g", f->value);
            sep = ",\n";
        }
        printf("\n  }");
    }
    printf("\n}\n");
}

/* ---- runtime helpers ------------------------------------------------------- */

static void bench_config(const struct bench_opts *o, struct rv_runtime_config *cfg)
{
    rv_runtime_config_init(cfg);
    cfg->shard_count = o->shard_count;
    cfg->cpuset = o->cpuset;
    /* No stall watchdog: its 5 ms tick thread shares the CPUs under test, and on
     * a busy machine (or in the epoll backend's blocking fdatasync, by design)
     * its backtrace signals would interrupt the very loop being measured. */
    cfg->stall_ms = 0;
}

static int bench_open(rv_runtime_t **out, const struct rv_runtime_config *cfg)
{
    int rc = rv_runtime_open(out, cfg);
    if (rc < 0) {
        const char *msg = rv_err_msg();
        fprintf(stderr, BENCH_NAME ": cannot open the runtime: %s\n",
                msg[0] != '\0' ? msg : rv_strerror(rc));
    }
    return rc;
}

static void bench_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* What the main thread watches while a measurement runs on the shards. */
struct bench_watch {
    _Atomic int is_done;       /* set once by shard 0 with release, after the results */
    _Atomic uint64_t progress; /* bumped by shard 0 at every reply (relaxed) */
    uint64_t nudges;           /* main thread's: stalls it broke by waking the shards */
    uint64_t lost_wakeups;     /* main thread's: stalls with a shard asleep on messages */
};

static void bench_nudge(void *arg)
{
    (void)arg; /* the point is the wake-up that delivers it */
}

/* Whether shard `id` sleeps although a peer published messages for it, a
 * wake-up the sender owed it. Reads the shared atomics of shard_impl.h. */
static bool bench_is_lost_wakeup(rv_runtime_t *rt, uint32_t id)
{
    if (!atomic_load(&rt->shards[id]->sleeping))
        return false;
    for (uint32_t peer = 0; peer < rt->n; peer++) {
        struct rv_spsc *ring = &rt->rings[(size_t)peer * rt->n + id];
        if (peer != id && atomic_load(&ring->tail) != atomic_load(&ring->head))
            return true;
    }
    return false;
}

/*
 * Wait for shard 0 to finish. Without rt, sleep through the expected time first
 * so the main thread steals no cycles from the shards. With rt (cross-shard
 * measurements), check progress every BENCH_NUDGE_NS. No reply for that long
 * is a stall: the machine took a shard's CPU, or a message sits in a ring
 * behind a shard that sleeps (a lost wake-up, told apart by looking at both).
 * Either way wake both shards from outside, count it and go on, rather than
 * hang.
 */
static void bench_wait(struct bench_watch *w, rv_runtime_t *rt, uint64_t expect_ns)
{
    uint64_t last = UINT64_MAX;
    if (rt == NULL)
        bench_sleep_ns(expect_ns);
    /* Acquire pairs with the shard's release: its result fields are visible. */
    while (!atomic_load_explicit(&w->is_done, memory_order_acquire)) {
        bench_sleep_ns(rt == NULL ? 1000000 : BENCH_NUDGE_NS);
        uint64_t now = atomic_load_explicit(&w->progress, memory_order_relaxed);
        if (rt == NULL || now != last || atomic_load(&w->is_done)) {
            last = now;
            continue;
        }
        w->nudges++;
        for (uint32_t i = 0; i < 2; i++) {
            w->lost_wakeups += bench_is_lost_wakeup(rt, i);
            (void)rv_runtime_submit(rt, i, bench_nudge, NULL); /* best effort */
        }
    }
}

static void bench_progress(struct bench_watch *w)
{
    /* Single writer: a relaxed load and store. */
    atomic_store_explicit(&w->progress,
                          atomic_load_explicit(&w->progress, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void bench_set_done(struct bench_watch *w)
{
    /* Release: every result field written before is visible to the waiter. */
    atomic_store_explicit(&w->is_done, 1, memory_order_release);
}

uint64_t bench_duration_ns(const struct bench_opts *o)
{
    return (uint64_t)(o->duration_s * 1e9);
}

bool bench_cell_wanted(const struct bench_opts *o, const char *key)
{
    if (o->cell == NULL)
        return true;
    for (const char *s = o->cell; *s != '\0';) {
        size_t len = strcspn(s, ",");
        char text[64];
        if (len > 0 && len < sizeof(text)) {
            memcpy(text, s, len);
            text[len] = '\0';
            if (strstr(key, text) != NULL)
                return true;
        }
        s += len + (s[len] == ',');
    }
    return false;
}

/* CPU time used so far by a thread (0 if it cannot be read). */
static uint64_t bench_thread_cpu_ns(pthread_t thread)
{
    clockid_t clock;
    struct timespec ts;
    if (pthread_getcpuclockid(thread, &clock) != 0 || clock_gettime(clock, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct bench_cpu {
    uint64_t shards_ns;  /* shards 0 and 1 together */
    uint64_t process_ns; /* every thread of the process */
};

static void bench_cpu_sample(rv_runtime_t *rt, struct bench_cpu *out)
{
    struct timespec ts;
    out->shards_ns = 0;
    for (uint32_t i = 0; i < 2 && i < rt->n; i++)
        out->shards_ns += bench_thread_cpu_ns(rt->shards[i]->thread);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    out->process_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double bench_cpu_pct(const struct bench_cpu *a, const struct bench_cpu *b, uint64_t wall_ns,
                            bool is_process)
{
    uint64_t used = is_process ? b->process_ns - a->process_ns : b->shards_ns - a->shards_ns;
    /* Shards: the average of shards 0 and 1, in percent of one core each. */
    double cores = is_process ? 1.0 : 2.0;
    return wall_ns == 0 ? 0 : 100.0 * (double)used / ((double)wall_ns * cores);
}

/* Shard counters, CPU times and the time, before and after a measurement. */
struct bench_sample {
    struct rv_shard_stats s0;
    struct rv_shard_stats s1;
    struct bench_cpu cpu;
    uint64_t now_ns;
};

static void bench_sample_take(rv_runtime_t *rt, struct bench_sample *out)
{
    (void)rv_runtime_shard_stats(rt, 0, &out->s0); /* shards 0 and 1 exist: cannot fail */
    (void)rv_runtime_shard_stats(rt, 1, &out->s1);
    bench_cpu_sample(rt, &out->cpu);
    out->now_ns = rv_clock_now_ns();
}

/* The share of wall time shards 0 and 1 were on their CPUs: about 100% for a
 * spinning measurement on an otherwise idle machine, less when other processes
 * (or the hypervisor) took the CPUs. */
static void fig_cpu_share(const char *prefix, const struct bench_sample *a,
                          const struct bench_sample *b)
{
    fig_numf("mailbox", "  shards on cpu (of wall time)",
             bench_cpu_pct(&a->cpu, &b->cpu, b->now_ns - a->now_ns, false), "%",
             "%.40s_shard_cpu_pct", prefix);
}

static int hw_ping_run(const struct bench_opts *o, double *out_ns);

/* The cache-line round trip measured just before <prefix>, under its figure. */
static void fig_line_rtt(const char *prefix, double ns)
{
    fig_numf("mailbox", "  cache-line round trip just before", ns, "ns", "%.40s_line_rtt_ns",
             prefix);
}

/* ---- mailbox: one-way throughput --------------------------------------------- */

/* Shard 0 streams calls to shard 1 and keeps at most MB_WINDOW of them
 * unacknowledged: every MB_ACK_EVERY-th call carries a reply, and calls and
 * replies run in order, so a reply proves every call before it ran. The rings
 * (4096 slots) never fill, so this measures the ring, not overflow growth. */
struct mb_flow {
    rv_runtime_t *rt;
    uint64_t duration_ns;
    uint64_t deadline_ns;
    uint64_t start_ns;
    uint64_t end_ns; /* the last acknowledgement arrived */
    uint64_t sent;
    uint64_t acked;
    uint32_t burst; /* calls per sender task: MB_BURST, or 1 for a turn per call */
    uint32_t runs;  /* sender task runs, to read the clock every MB_CHECK_EVERY */
    bool is_stopping;
    int err;
    struct bench_watch watch;
    uint64_t received RV_ALIGNED_CACHE; /* shard 1's, on its own cache line */
};

static void mb_flow_count(void *arg)
{
    struct mb_flow *f = arg;
    f->received++;
}

static void mb_flow_ack(void *arg)
{
    struct mb_flow *f = arg;
    f->acked += MB_ACK_EVERY;
    bench_progress(&f->watch);
}

static void mb_flow_finish(struct mb_flow *f, int err)
{
    f->end_ns = rv_clock_now_ns();
    f->err = err;
    bench_set_done(&f->watch);
}

static void mb_flow_send(void *arg)
{
    struct mb_flow *f = arg;
    if (!f->is_stopping && f->runs++ % MB_CHECK_EVERY == 0 && rv_clock_now_ns() >= f->deadline_ns)
        f->is_stopping = true;
    uint64_t room = MB_WINDOW - (f->sent - f->acked);
    uint64_t count = room < f->burst ? room : f->burst;
    if (f->is_stopping) {
        /* Round up to an acknowledged call, then wait for the last reply. */
        uint64_t tail = (MB_ACK_EVERY - f->sent % MB_ACK_EVERY) % MB_ACK_EVERY;
        count = count < tail ? count : tail;
        if (tail == 0 && f->acked == f->sent) {
            mb_flow_finish(f, 0);
            return;
        }
    }
    for (uint64_t i = 0; i < count; i++) {
        f->sent++;
        rv_task_fn *reply = f->sent % MB_ACK_EVERY == 0 ? mb_flow_ack : NULL;
        int rc = rv_shard_call(1, mb_flow_count, f, reply);
        if (rc < 0) {
            mb_flow_finish(f, rc);
            return;
        }
    }
    /* To itself: the local task queue, run at the next loop turn, after this
     * turn's flush published the calls. */
    int rc = rv_runtime_submit(f->rt, 0, mb_flow_send, f);
    if (rc < 0)
        mb_flow_finish(f, rc);
}

static void mb_flow_start(void *arg)
{
    struct mb_flow *f = arg;
    f->start_ns = rv_clock_now_ns();
    f->deadline_ns = f->start_ns + f->duration_ns;
    mb_flow_send(f);
}

/* The figures of one flow: <key>_msgs_per_s in the table, the counters that
 * explain it (messages per receiver turn, sender turns, wake-ups) in JSON. */
static void mb_flow_figures(const struct mb_flow *f, const char *key, const char *label,
                            const struct bench_sample *a, const struct bench_sample *b)
{
    char name[64];
    fig_numf("mailbox", label, bench_rate(f->sent, f->end_ns - f->start_ns), "msg/s",
             "%s_msgs_per_s", key);
    fig_cpu_share(key, a, b);
    fig_stalls(key, f->watch.nudges, f->watch.lost_wakeups);
    fig_numf("mailbox", "", (double)f->sent, "", "%s_msgs", key);
    uint64_t turns1 = b->s1.loop_turns - a->s1.loop_turns;
    fig_numf("mailbox", "", turns1 == 0 ? 0 : (double)f->sent / (double)turns1, "",
             "%s_receiver_msgs_per_turn", key);
    fig_numf("mailbox", "", (double)(b->s0.loop_turns - a->s0.loop_turns), "", "%s_sender_turns",
             key);
    snprintf(name, sizeof(name), "%s_wakeups", key);
    fig_num(
        "mailbox", name, "",
        (double)(b->s0.wakeups_sent - a->s0.wakeups_sent + b->s1.wakeups_sent - a->s1.wakeups_sent),
        "");
}

/* Measure one flow and add its figures as <key>_msgs_per_s and diagnostics. */
static int mb_flow_measure(rv_runtime_t *rt, const struct bench_opts *o, uint32_t burst,
                           const char *key, const char *label)
{
    struct mb_flow *f = aligned_alloc(RV_CACHELINE, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    memset(f, 0, sizeof(*f));
    f->rt = rt;
    f->burst = burst;
    f->duration_ns = bench_duration_ns(o);
    struct bench_sample a, b;
    double line_ns = 0;
    int rc = hw_ping_run(o, &line_ns);
    bench_sample_take(rt, &a);
    if (rc == 0)
        rc = rv_runtime_submit(rt, 0, mb_flow_start, f);
    if (rc == 0) {
        bench_wait(&f->watch, rt, bench_duration_ns(o));
        rc = f->err;
    }
    bench_sample_take(rt, &b);
    if (rc == 0 && f->received != f->sent)
        rc = -EPROTO;
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": mailbox %s: %s\n", key, rv_strerror(rc));
    else {
        mb_flow_figures(f, key, label, &a, &b);
        fig_line_rtt(key, line_ns);
    }
    free(f);
    return rc;
}

/* ---- mailbox: round trips ------------------------------------------------------ */

/* Shard 0 calls a no-op on shard 1 and times the reply: back to back, or one
 * per MB_PACE_US timer tick (is_paced) to model light traffic. */
struct mb_rtt {
    uint64_t duration_ns;
    uint64_t deadline_ns;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t sent_ns; /* the call in flight left at this time */
    uint64_t count;
    bool is_paced;
    bool is_waiting; /* paced: a call is in flight */
    int err;
    struct bench_watch watch;
    struct rv_hist hist; /* shard 0's */
};

static void mb_rtt_noop(void *arg)
{
    (void)arg;
}

static void mb_rtt_finish(struct mb_rtt *r, int err)
{
    r->end_ns = rv_clock_now_ns();
    r->err = err;
    bench_set_done(&r->watch);
}

static void mb_rtt_reply(void *arg);

static void mb_rtt_call(struct mb_rtt *r)
{
    r->sent_ns = rv_clock_now_ns();
    r->is_waiting = true;
    int rc = rv_shard_call(1, mb_rtt_noop, r, mb_rtt_reply);
    if (rc < 0)
        mb_rtt_finish(r, rc);
}

static void mb_rtt_reply(void *arg)
{
    struct mb_rtt *r = arg;
    uint64_t now = rv_clock_now_ns();
    rv_hist_record(&r->hist, now - r->sent_ns);
    r->count++;
    r->is_waiting = false;
    bench_progress(&r->watch);
    if (r->is_paced)
        return; /* the next tick calls */
    if (now >= r->deadline_ns)
        mb_rtt_finish(r, 0);
    else
        mb_rtt_call(r);
}

static void mb_rtt_tick(void *arg)
{
    struct mb_rtt *r = arg;
    if (rv_clock_now_ns() >= r->deadline_ns && !r->is_waiting) {
        mb_rtt_finish(r, 0);
        return;
    }
    if (!r->is_waiting)
        mb_rtt_call(r);
    int rc = rv_timer_add(MB_PACE_US, mb_rtt_tick, r, NULL);
    if (rc < 0)
        mb_rtt_finish(r, rc);
}

static void mb_rtt_start(void *arg)
{
    struct mb_rtt *r = arg;
    r->start_ns = rv_clock_now_ns();
    r->deadline_ns = r->start_ns + r->duration_ns;
    if (r->is_paced)
        mb_rtt_tick(r);
    else
        mb_rtt_call(r);
}

/* Run round trips for duration_ns; *out holds the results (free it). */
static int mb_rtt_run(rv_runtime_t *rt, uint64_t duration_ns, bool is_paced, struct mb_rtt **out)
{
    struct mb_rtt *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    rv_hist_init(&r->hist);
    r->duration_ns = duration_ns;
    r->is_paced = is_paced;
    int rc = rv_runtime_submit(rt, 0, mb_rtt_start, r);
    if (rc == 0) {
        bench_wait(&r->watch, rt, duration_ns);
        rc = r->err;
    }
    if (rc < 0) {
        fprintf(stderr, BENCH_NAME ": mailbox round trip: %s\n", rv_strerror(rc));
        free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Back-to-back round trips on a runtime that polls poll_us before sleeping. */
static int mb_rtt_measure(rv_runtime_t *rt, const struct bench_opts *o, uint32_t poll_us)
{
    struct mb_rtt *r;
    struct bench_sample a, b;
    double line_ns = 0;
    int rc = hw_ping_run(o, &line_ns);
    if (rc < 0)
        return rc;
    bench_sample_take(rt, &a);
    rc = mb_rtt_run(rt, bench_duration_ns(o), false, &r);
    bench_sample_take(rt, &b);
    if (rc < 0)
        return rc;
    char key[48], label[48];
    snprintf(key, sizeof(key), "rtt_poll%u_per_s", poll_us);
    snprintf(label, sizeof(label), "round trips, poll %u us", poll_us);
    fig_num("mailbox", key, label, bench_rate(r->count, r->end_ns - r->start_ns), "rt/s");
    snprintf(key, sizeof(key), "rtt_poll%u", poll_us);
    fig_hist("mailbox", key, &r->hist);
    fig_cpu_share(key, &a, &b);
    fig_stalls(key, r->watch.nudges, r->watch.lost_wakeups);
    fig_line_rtt(key, line_ns);
    free(r);
    return 0;
}

/* ---- mailbox: the latency / idle CPU trade-off ---------------------------------- */

/* CPU use of an idle runtime, then of one round trip per millisecond, and
 * the latency of those round trips, with poll_us of busy-polling. */
static int mb_tradeoff_measure(const struct bench_opts *o, uint32_t poll_us)
{
    struct rv_runtime_config cfg;
    rv_runtime_t *rt;
    bench_config(o, &cfg);
    cfg.poll_us = poll_us;
    int rc = bench_open(&rt, &cfg);
    if (rc < 0)
        return rc;
    struct bench_cpu a, b;
    bench_sleep_ns(MB_SETTLE_NS);
    bench_cpu_sample(rt, &a);
    uint64_t t0 = rv_clock_now_ns();
    bench_sleep_ns(MB_WINDOW_NS);
    bench_cpu_sample(rt, &b);
    uint64_t idle_ns = rv_clock_now_ns() - t0;
    struct mb_rtt *r = NULL;
    struct bench_cpu c, d;
    bench_cpu_sample(rt, &c);
    t0 = rv_clock_now_ns();
    rc = mb_rtt_run(rt, MB_WINDOW_NS, true, &r);
    bench_cpu_sample(rt, &d);
    uint64_t paced_ns = rv_clock_now_ns() - t0;
    rv_runtime_close(rt);
    if (rc < 0)
        return rc;
    char key[48], label[48];
    snprintf(key, sizeof(key), "poll%u_idle_cpu_pct", poll_us);
    snprintf(label, sizeof(label), "poll %u us: idle CPU per shard", poll_us);
    fig_num("mailbox", key, label, bench_cpu_pct(&a, &b, idle_ns, false), "%");
    fig_numf("mailbox", "", bench_cpu_pct(&a, &b, idle_ns, true), "%",
             "poll%u_idle_process_cpu_pct", poll_us);
    snprintf(key, sizeof(key), "poll%u_paced_cpu_pct", poll_us);
    snprintf(label, sizeof(label), "poll %u us: 1k rt/s, CPU per shard", poll_us);
    fig_num("mailbox", key, label, bench_cpu_pct(&c, &d, paced_ns, false), "%");
    fig_numf("mailbox", "", bench_cpu_pct(&c, &d, paced_ns, true), "%",
             "poll%u_paced_process_cpu_pct", poll_us);
    snprintf(key, sizeof(key), "poll%u_paced_rtt", poll_us);
    fig_hist("mailbox", key, &r->hist);
    fig_stalls(key, r->watch.nudges, r->watch.lost_wakeups);
    fig_numf("mailbox", "", (double)r->count, "", "poll%u_paced_count", poll_us);
    free(r);
    return 0;
}

/* ---- mailbox: the mutex + condition variable baseline ----------------------------- */

/* A bounded FIFO of 32-byte messages under one mutex, as a naive design would
 * hand work between threads: one message per lock, a signal per operation. */
struct mq {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    uint32_t head;
    uint32_t len;
    struct rv_msg slots[MQ_SLOTS];
};

static void mq_init(struct mq *q)
{
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->head = 0;
    q->len = 0;
}

static void mq_fini(struct mq *q)
{
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

static void mq_push(struct mq *q, const struct rv_msg *m)
{
    pthread_mutex_lock(&q->lock);
    while (q->len == MQ_SLOTS)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->slots[(q->head + q->len) % MQ_SLOTS] = *m;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static void mq_pop(struct mq *q, struct rv_msg *out)
{
    pthread_mutex_lock(&q->lock);
    while (q->len == 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    *out = q->slots[q->head];
    q->head = (q->head + 1) % MQ_SLOTS;
    q->len--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
}

/* Two plain threads pinned to the CPUs of shards 0 (thread A) and 1 (thread
 * B): the mutex baseline and the machine's own limits. */
struct pair_bench {
    struct mq to_b;      /* thread A -> thread B */
    struct mq to_a;      /* thread B -> thread A (round trips) */
    struct rv_spsc ring; /* the bare ring: thread A -> thread B */
    int cpu_a;
    int cpu_b;
    uint64_t duration_ns;
    pthread_barrier_t go;
    uint64_t start_ns; /* thread A */
    uint64_t end_ns;   /* one-way: thread B, round trips: thread A */
    uint64_t count;
    int err;                           /* a failed pin */
    struct rv_hist hist;               /* thread A */
    _Atomic int ball RV_ALIGNED_CACHE; /* ping-pong: 1 A served, 0 B returned, 2 stop */
    _Atomic int is_aborted;            /* thread B never started */
    uint64_t best_batch_ns;            /* ping-pong: the fastest batch, thread A */
};

static void pair_thread_begin(struct pair_bench *b, int cpu)
{
    int rc = rv_topo_pin_self((unsigned)cpu);
    if (rc < 0)
        b->err = rc; /* either thread's write; both finish before the reader joins */
    pthread_barrier_wait(&b->go);
}

static void *mq_oneway_producer(void *arg)
{
    struct pair_bench *b = arg;
    struct rv_msg m = {.kind = RV_MSG_TASK};
    pair_thread_begin(b, b->cpu_a);
    b->start_ns = rv_clock_now_ns();
    uint64_t deadline = b->start_ns + b->duration_ns;
    for (uint64_t i = 1;; i++) {
        mq_push(&b->to_b, &m);
        if (i % MB_CHECK_EVERY == 0 && rv_clock_now_ns() >= deadline)
            break;
    }
    m.kind = 0; /* the end */
    mq_push(&b->to_b, &m);
    return NULL;
}

static void *mq_oneway_consumer(void *arg)
{
    struct pair_bench *b = arg;
    struct rv_msg m;
    pair_thread_begin(b, b->cpu_b);
    for (;;) {
        mq_pop(&b->to_b, &m);
        if (m.kind == 0)
            break;
        b->count++;
    }
    b->end_ns = rv_clock_now_ns();
    return NULL;
}

static void *mq_rtt_client(void *arg)
{
    struct pair_bench *b = arg;
    struct rv_msg m = {.kind = RV_MSG_CALL};
    pair_thread_begin(b, b->cpu_a);
    b->start_ns = rv_clock_now_ns();
    uint64_t deadline = b->start_ns + b->duration_ns;
    uint64_t now = b->start_ns;
    while (now < deadline) {
        uint64_t sent = now;
        mq_push(&b->to_b, &m);
        mq_pop(&b->to_a, &m);
        now = rv_clock_now_ns();
        rv_hist_record(&b->hist, now - sent);
        b->count++;
    }
    b->end_ns = now;
    m.kind = 0;
    mq_push(&b->to_b, &m);
    return NULL;
}

static void *mq_rtt_server(void *arg)
{
    struct pair_bench *b = arg;
    struct rv_msg m;
    pair_thread_begin(b, b->cpu_b);
    for (;;) {
        mq_pop(&b->to_b, &m);
        if (m.kind == 0)
            break;
        mq_push(&b->to_a, &m);
    }
    return NULL;
}

/* Run fa on thread A and fb on thread B; abort_a ends thread A alone when
 * thread B cannot start. */
static int pair_run(struct pair_bench *b, void *(*fa)(void *), void *(*fb)(void *),
                    void (*abort_a)(struct pair_bench *))
{
    pthread_t ta, tb;
    pthread_barrier_init(&b->go, NULL, 2);
    b->count = 0;
    rv_hist_init(&b->hist);
    int rc = pthread_create(&ta, NULL, fa, b);
    if (rc == 0) {
        rc = pthread_create(&tb, NULL, fb, b);
        if (rc != 0) {
            /* Thread A waits at the barrier for B: stand in for it. */
            pthread_barrier_wait(&b->go);
            abort_a(b);
        } else {
            pthread_join(tb, NULL);
        }
        pthread_join(ta, NULL);
    }
    pthread_barrier_destroy(&b->go);
    return rc != 0 ? -rc : b->err;
}

static void mq_abort(struct pair_bench *b)
{
    struct rv_msg end = {.kind = 0};
    mq_push(&b->to_b, &end);
    mq_push(&b->to_a, &end);
}

/* The baseline on the CPUs of shards 0 and 1. */
static int mq_measure(const struct bench_opts *o)
{
    struct pair_bench *b = calloc(1, sizeof(*b));
    double line_ns[2] = {0, 0};
    if (b == NULL)
        return -ENOMEM;
    b->cpu_a = o->cpu_ids[0];
    b->cpu_b = o->cpu_ids[1];
    b->duration_ns = bench_duration_ns(o);
    mq_init(&b->to_b);
    mq_init(&b->to_a);
    int rc = hw_ping_run(o, &line_ns[0]);
    if (rc == 0)
        rc = pair_run(b, mq_oneway_producer, mq_oneway_consumer, mq_abort);
    if (rc == 0) {
        fig_num("mailbox", "mutex_oneway_msgs_per_s", "mutex+condvar one-way",
                bench_rate(b->count, b->end_ns - b->start_ns), "msg/s");
        fig_line_rtt("mutex_oneway", line_ns[0]);
        rc = hw_ping_run(o, &line_ns[1]);
    }
    if (rc == 0)
        rc = pair_run(b, mq_rtt_client, mq_rtt_server, mq_abort);
    mq_fini(&b->to_b);
    mq_fini(&b->to_a);
    if (rc == 0) {
        fig_num("mailbox", "mutex_rtt_per_s", "mutex+condvar round trips",
                bench_rate(b->count, b->end_ns - b->start_ns), "rt/s");
        fig_hist("mailbox", "mutex_rtt", &b->hist);
        fig_line_rtt("mutex_rtt", line_ns[1]);
    } else {
        fprintf(stderr, BENCH_NAME ": mutex baseline: %s\n", rv_strerror(rc));
    }
    free(b);
    return rc;
}

/* ---- mailbox: the machine's limits ---------------------------------------------- */

/* Cache-line ping-pong: thread A serves, thread B returns, HW_PING_NS long.
 * The result is the fastest batch of HW_PING_BATCH round trips, so that a
 * thread preempted now and then does not inflate it. */
static void *hw_ping(void *arg)
{
    struct pair_bench *b = arg;
    pair_thread_begin(b, b->cpu_a);
    uint64_t batch_start = rv_clock_now_ns();
    uint64_t deadline = batch_start + HW_PING_NS;
    int ball = 0;
    b->best_batch_ns = UINT64_MAX;
    for (uint64_t i = 1; ball != 2; i++) {
        /* Release/acquire: the only data is the flag's own cache line. */
        atomic_store_explicit(&b->ball, 1, memory_order_release);
        while ((ball = atomic_load_explicit(&b->ball, memory_order_acquire)) == 1)
            rv_cpu_relax();
        if (i % HW_PING_BATCH != 0)
            continue;
        uint64_t now = rv_clock_now_ns();
        b->best_batch_ns =
            now - batch_start < b->best_batch_ns ? now - batch_start : b->best_batch_ns;
        batch_start = now;
        if (now >= deadline)
            break;
    }
    atomic_store_explicit(&b->ball, 2, memory_order_release);
    return NULL;
}

static void *hw_pong(void *arg)
{
    struct pair_bench *b = arg;
    pair_thread_begin(b, b->cpu_b);
    for (;;) {
        int ball = atomic_load_explicit(&b->ball, memory_order_acquire);
        if (ball == 2)
            break;
        if (ball == 1)
            atomic_store_explicit(&b->ball, 0, memory_order_release);
        else
            rv_cpu_relax();
    }
    return NULL;
}

static void hw_ping_abort(struct pair_bench *b)
{
    atomic_store(&b->ball, 2);
}

/* Copy m into the bare ring, waiting for room; false once aborted. */
static bool hw_ring_put(struct pair_bench *b, const struct rv_msg *m)
{
    struct rv_msg *slot;
    while ((slot = rv_spsc_reserve(&b->ring)) == NULL) {
        rv_spsc_publish(&b->ring);
        if (atomic_load_explicit(&b->is_aborted, memory_order_relaxed))
            return false;
        rv_cpu_relax();
    }
    *slot = *m;
    rv_spsc_commit(&b->ring);
    return true;
}

/* The mailbox's ring without the runtime: the same slots, the same publish
 * every 64 messages, the same consumer batches of up to 256. */
static void *hw_ring_producer(void *arg)
{
    struct pair_bench *b = arg;
    struct rv_msg m = {.kind = RV_MSG_TASK};
    pair_thread_begin(b, b->cpu_a);
    b->start_ns = rv_clock_now_ns();
    uint64_t deadline = b->start_ns + b->duration_ns;
    for (uint64_t i = 1; hw_ring_put(b, &m); i++) {
        if (i % 64 == 0)
            rv_spsc_publish(&b->ring);
        if (i % 4096 == 0 && rv_clock_now_ns() >= deadline)
            break;
    }
    m.kind = 0;               /* the end */
    (void)hw_ring_put(b, &m); /* false only when aborted: nobody reads it then */
    rv_spsc_publish(&b->ring);
    return NULL;
}

static void *hw_ring_consumer(void *arg)
{
    struct pair_bench *b = arg;
    bool is_end = false;
    pair_thread_begin(b, b->cpu_b);
    while (!is_end) {
        struct rv_msg *slot;
        uint32_t got = 0;
        while (got < RV_SHARD_MSGS_PER_PEER && (slot = rv_spsc_peek(&b->ring)) != NULL) {
            is_end = slot->kind == 0;
            rv_spsc_consume(&b->ring);
            got++;
            if (is_end)
                break;
        }
        b->count += got - is_end;
        if (got > 0)
            rv_spsc_consume_done(&b->ring);
        else
            rv_cpu_relax();
    }
    b->end_ns = rv_clock_now_ns();
    return NULL;
}

static void hw_ring_abort(struct pair_bench *b)
{
    atomic_store(&b->is_aborted, 1);
}

/* The cache-line round trip between the CPUs of shards 0 and 1 right now, in
 * *out_ns: the floor under any cross-shard round trip. The hypervisor may move
 * the vCPUs while we run (one core complex or two: a factor of 8 here), so it
 * is taken next to every mailbox measurement. */
static int hw_ping_run(const struct bench_opts *o, double *out_ns)
{
    struct pair_bench *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    b->cpu_a = o->cpu_ids[0];
    b->cpu_b = o->cpu_ids[1];
    int rc = pair_run(b, hw_ping, hw_pong, hw_ping_abort);
    if (rc == 0)
        *out_ns = b->best_batch_ns == UINT64_MAX ? 0 : (double)b->best_batch_ns / HW_PING_BATCH;
    else
        fprintf(stderr, BENCH_NAME ": ping-pong: %s\n", rv_strerror(rc));
    free(b);
    return rc;
}

/* The bare ring's one-way throughput between the two CPUs. */
static int hw_ring_measure(const struct bench_opts *o)
{
    struct pair_bench *b = calloc(1, sizeof(*b));
    double line_ns = 0;
    if (b == NULL)
        return -ENOMEM;
    b->cpu_a = o->cpu_ids[0];
    b->cpu_b = o->cpu_ids[1];
    b->duration_ns = bench_duration_ns(o);
    int rc = hw_ping_run(o, &line_ns);
    if (rc == 0)
        rc = rv_spsc_init(&b->ring, MB_RING_SLOTS, sizeof(struct rv_msg));
    if (rc == 0) {
        rc = pair_run(b, hw_ring_producer, hw_ring_consumer, hw_ring_abort);
        rv_spsc_fini(&b->ring);
    }
    if (rc == 0) {
        fig_num("mailbox", "ring_oneway_msgs_per_s", "bare spsc ring one-way (no runtime)",
                bench_rate(b->count, b->end_ns - b->start_ns), "msg/s");
        fig_line_rtt("ring_oneway", line_ns);
    } else {
        fprintf(stderr, BENCH_NAME ": bare ring: %s\n", rv_strerror(rc));
    }
    free(b);
    return rc;
}

/* Put the baseline beside each mailbox figure. */
static void mb_add_notes(void)
{
    double base = fig_value("mailbox", "mutex_oneway_msgs_per_s");
    double ring = fig_value("mailbox", "ring_oneway_msgs_per_s");
    const char *flows[] = {"batched_msgs_per_s", "unbatched_msgs_per_s"};
    for (size_t i = 0; i < RV_ARRAY_LEN(flows); i++) {
        struct bench_fig *f = fig_find("mailbox", flows[i]);
        if (f != NULL && base > 0 && ring > 0)
            fig_note(f, "bare ring %.1f M (%.0f%%), mutex %.2f M (x%.1f)", ring / 1e6,
                     100.0 * f->value / ring, base / 1e6, f->value / base);
    }
    const char *points[] = {"p50", "p99", "p999", "max"};
    for (size_t i = 0; i < RV_ARRAY_LEN(points); i++) {
        char key[48];
        snprintf(key, sizeof(key), "mutex_rtt_%s_ns", points[i]);
        double v = fig_value("mailbox", key);
        for (uint32_t poll = 0; poll <= 50; poll += 50) {
            snprintf(key, sizeof(key), "rtt_poll%u_%s_ns", poll, points[i]);
            fig_note_value(fig_find("mailbox", key), "mutex+condvar", v, "ns");
        }
    }
    struct bench_fig *f = fig_find("mailbox", "rtt_poll50_per_s");
    double v = fig_value("mailbox", "mutex_rtt_per_s");
    fig_note_value(f, "mutex+condvar", v, "rt/s");
    fig_note_value(fig_find("mailbox", "rtt_poll0_per_s"), "mutex+condvar", v, "rt/s");
}

/* The runtime's measurements: flows and round trips with the default poll,
 * round trips without polling, and the poll trade-off. */
static int mb_runtime_measure(const struct bench_opts *o)
{
    struct rv_runtime_config cfg;
    rv_runtime_t *rt;
    bench_config(o, &cfg); /* poll_us: the default, 50 */
    int rc = bench_open(&rt, &cfg);
    if (rc < 0)
        return rc;
    RV_ASSERT(rv_runtime_shard_cpu(rt, 0) == o->cpu_ids[0]);
    RV_ASSERT(rv_runtime_shard_cpu(rt, 1) == o->cpu_ids[1]);
    fig_num("mailbox", "poll_us_default", "", cfg.poll_us, "us");
    rc = mb_flow_measure(rt, o, MB_BURST, "batched", "one-way batched");
    if (rc == 0)
        rc = mb_flow_measure(rt, o, 1, "unbatched", "one-way unbatched (a turn per msg)");
    if (rc == 0)
        rc = mb_rtt_measure(rt, o, cfg.poll_us);
    rv_runtime_close(rt);
    if (rc < 0)
        return rc;
    cfg.poll_us = 0;
    rc = bench_open(&rt, &cfg);
    if (rc < 0)
        return rc;
    rc = mb_rtt_measure(rt, o, 0);
    rv_runtime_close(rt);
    static const uint32_t polls[] = {0, 50, 200};
    for (size_t i = 0; i < RV_ARRAY_LEN(polls) && rc == 0; i++)
        rc = mb_tradeoff_measure(o, polls[i]);
    return rc;
}

static int bench_mailbox(const struct bench_opts *o)
{
    fig_text("mailbox", "path", "path", "shard 0 (cpu %d) -> shard 1 (cpu %d)", o->cpu_ids[0],
             o->cpu_ids[1]);
    int rc = hw_ring_measure(o);
    if (rc == 0)
        rc = mb_runtime_measure(o);
    if (rc == 0)
        rc = mq_measure(o);
    if (rc == 0)
        mb_add_notes();
    return rc;
}

/* ---- io: one file job on a shard ------------------------------------------------ */

/* A file written from shard 0: sequential IO_SEQ_BLOCK writes, IO_SEQ_DEPTH in
 * flight, then one fdatasync (is_seq); or IO_SYNC_BLOCK appends each followed
 * by fdatasync, timed from write to sync completion. The job ends with the
 * file closed; err holds the first failure. */
struct io_job {
    const char *path;
    const uint8_t *buf; /* the data of every write */
    bool is_seq;
    uint64_t duration_ns; /* UINT64_MAX: bytes_max alone ends the sequential job */
    uint64_t bytes_max;
    int fd;
    uint64_t deadline_ns;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t pos_next;
    uint64_t bytes_done;
    uint64_t op_start_ns; /* the current write + sync began; seq: the sync began */
    uint64_t ops;
    uint32_t inflight;
    bool is_stopping;
    int err;
    const char *err_what;
    struct bench_watch watch;
    struct rv_hist hist;
};

static void io_job_closed(void *arg, int64_t res)
{
    struct io_job *j = arg;
    if (res < 0 && j->err == 0) {
        j->err = (int)res;
        j->err_what = "close";
    }
    bench_set_done(&j->watch);
}

static void io_job_fail(struct io_job *j, int64_t res, const char *what)
{
    if (j->err == 0) {
        j->err = res < 0 ? (int)res : -EIO; /* a short write */
        j->err_what = what;
    }
    j->is_stopping = true;
}

static void io_job_close(struct io_job *j)
{
    if (j->end_ns == 0)
        j->end_ns = rv_clock_now_ns();
    int rc = rv_file_close(j->fd, io_job_closed, j);
    if (rc < 0) {
        io_job_fail(j, rc, "close");
        bench_set_done(&j->watch);
    }
}

static void io_seq_synced(void *arg, int64_t res)
{
    struct io_job *j = arg;
    j->end_ns = rv_clock_now_ns();
    if (res < 0)
        io_job_fail(j, res, "fdatasync");
    io_job_close(j);
}

static void io_seq_written(void *arg, int64_t res);

/* Keep IO_SEQ_DEPTH writes in flight; once stopped and drained, sync. */
static void io_seq_fill(struct io_job *j)
{
    while (!j->is_stopping && j->inflight < IO_SEQ_DEPTH) {
        if (j->pos_next >= j->bytes_max || rv_clock_now_ns() >= j->deadline_ns) {
            j->is_stopping = true;
            break;
        }
        int rc = rv_file_write(j->fd, j->buf, IO_SEQ_BLOCK, j->pos_next, io_seq_written, j);
        if (rc < 0) {
            io_job_fail(j, rc, "write");
            break;
        }
        j->pos_next += IO_SEQ_BLOCK;
        j->inflight++;
    }
    if (!j->is_stopping || j->inflight > 0)
        return;
    j->op_start_ns = rv_clock_now_ns(); /* the writes are done: the sync starts */
    int rc = j->err < 0 ? j->err : rv_file_fdatasync(j->fd, io_seq_synced, j);
    if (rc < 0) {
        io_job_fail(j, rc, "fdatasync");
        io_job_close(j);
    }
}

static void io_seq_written(void *arg, int64_t res)
{
    struct io_job *j = arg;
    j->inflight--;
    if (res != IO_SEQ_BLOCK)
        io_job_fail(j, res, "write");
    else
        j->bytes_done += (uint64_t)res;
    io_seq_fill(j);
}

static void io_sync_written(void *arg, int64_t res);
static void io_sync_synced(void *arg, int64_t res);

/* The next append + fdatasync, or the end. */
static void io_sync_next(struct io_job *j)
{
    uint64_t now = rv_clock_now_ns();
    if (now >= j->deadline_ns || j->is_stopping) {
        j->end_ns = now;
        io_job_close(j);
        return;
    }
    j->op_start_ns = now;
    int rc = rv_file_write(j->fd, j->buf, IO_SYNC_BLOCK, j->pos_next, io_sync_written, j);
    if (rc < 0) {
        io_job_fail(j, rc, "write");
        io_job_close(j);
    }
}

static void io_sync_written(void *arg, int64_t res)
{
    struct io_job *j = arg;
    if (res != IO_SYNC_BLOCK) {
        io_job_fail(j, res, "write");
        io_job_close(j);
        return;
    }
    j->pos_next += IO_SYNC_BLOCK;
    int rc = rv_file_fdatasync(j->fd, io_sync_synced, j);
    if (rc < 0) {
        io_job_fail(j, rc, "fdatasync");
        io_job_close(j);
    }
}

static void io_sync_synced(void *arg, int64_t res)
{
    struct io_job *j = arg;
    if (res < 0) {
        io_job_fail(j, res, "fdatasync");
        io_job_close(j);
        return;
    }
    rv_hist_record(&j->hist, rv_clock_now_ns() - j->op_start_ns);
    j->ops++;
    io_sync_next(j);
}

static void io_job_opened(void *arg, int64_t res)
{
    struct io_job *j = arg;
    if (res < 0) {
        io_job_fail(j, res, "open");
        bench_set_done(&j->watch);
        return;
    }
    j->fd = (int)res;
    j->start_ns = rv_clock_now_ns();
    j->deadline_ns = j->duration_ns == UINT64_MAX ? UINT64_MAX : j->start_ns + j->duration_ns;
    if (j->is_seq)
        io_seq_fill(j);
    else
        io_sync_next(j);
}

static void io_job_start(void *arg)
{
    struct io_job *j = arg;
    int rc =
        rv_file_open(j->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644, io_job_opened, j);
    if (rc < 0) {
        io_job_fail(j, rc, "open");
        bench_set_done(&j->watch);
    }
}

/* Run a job on shard 0 and remove its file. */
static int io_job_run(rv_runtime_t *rt, struct io_job *j)
{
    int rc = rv_runtime_submit(rt, 0, io_job_start, j);
    if (rc == 0) {
        bench_wait(&j->watch, NULL, j->duration_ns == UINT64_MAX ? 0 : j->duration_ns);
        rc = j->err;
    }
    (void)unlink(j->path); /* best effort: a leftover file is harmless here */
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": %s %s: %s\n", j->err_what ? j->err_what : "submit", j->path,
                rv_strerror(rc));
    return rc;
}

/* ---- io: one backend --------------------------------------------------------------- */

struct io_backend_run {
    enum rv_io_backend backend;
    const char *name;  /* the figure key prefix: "uring", "epoll", "uring_poll0" */
    const char *label; /* for the table */
    uint32_t poll_us;  /* the runtime's busy-poll before sleeping */
    const char *dir;
    const uint8_t *buf;     /* IO_SEQ_BLOCK bytes */
    uint64_t seq_bytes_max; /* 0: IO_SEQ_BYTES_MAX or the duration, whichever first */
    uint64_t seq_bytes;     /* out: bytes the sequential job wrote */
    int cpu;                /* out: shard 0's CPU */
};

static void io_job_prepare(struct io_job *j, const struct io_backend_run *b, const char *path,
                           bool is_seq, uint64_t duration_ns)
{
    memset(j, 0, sizeof(*j));
    rv_hist_init(&j->hist);
    j->path = path;
    j->buf = b->buf;
    j->is_seq = is_seq;
    j->fd = -1;
    j->bytes_max = b->seq_bytes_max != 0 ? b->seq_bytes_max : IO_SEQ_BYTES_MAX;
    j->duration_ns = is_seq && b->seq_bytes_max != 0 ? UINT64_MAX : duration_ns;
}

static void io_backend_figures(const struct io_backend_run *b, const struct io_job *seq,
                               const struct io_job *sync)
{
    char key[48], label[48];
    snprintf(key, sizeof(key), "%s_seq_write_mb_per_s", b->name);
    snprintf(label, sizeof(label), "seq 1 MiB + fdatasync, %s", b->label);
    fig_num("io", key, label, bench_rate(seq->bytes_done, seq->end_ns - seq->start_ns) / 1e6,
            "MB/s");
    fig_numf("io", "", (double)seq->bytes_done, "", "%s_seq_write_bytes", b->name);
    fig_numf("io", "", (double)(seq->op_start_ns - seq->start_ns), "ns", "%s_seq_writes_ns",
             b->name);
    fig_numf("io", "", (double)(seq->end_ns - seq->op_start_ns), "ns", "%s_seq_fdatasync_ns",
             b->name);
    snprintf(key, sizeof(key), "%s_fsync_ops_per_s", b->name);
    snprintf(label, sizeof(label), "4 KiB write + fdatasync, %s", b->label);
    fig_num("io", key, label, bench_rate(sync->ops, sync->end_ns - sync->start_ns), "op/s");
    snprintf(key, sizeof(key), "%s_fsync", b->name);
    fig_hist("io", key, &sync->hist);
}

static int io_backend_measure(const struct bench_opts *o, struct io_backend_run *b)
{
    struct rv_runtime_config cfg;
    rv_runtime_t *rt;
    bench_config(o, &cfg);
    cfg.io_backend = b->backend;
    cfg.poll_us = b->poll_us;
    int rc = bench_open(&rt, &cfg);
    if (rc < 0)
        return rc;
    b->cpu = rv_runtime_shard_cpu(rt, 0);
    struct io_job *seq = malloc(sizeof(*seq));
    struct io_job *sync = malloc(sizeof(*sync));
    char seq_path[PATH_MAX], sync_path[PATH_MAX];
    snprintf(seq_path, sizeof(seq_path), "%s/rivven-bench-%d-seq.dat", b->dir, (int)getpid());
    snprintf(sync_path, sizeof(sync_path), "%s/rivven-bench-%d-sync.dat", b->dir, (int)getpid());
    rc = seq == NULL || sync == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        io_job_prepare(seq, b, seq_path, true, bench_duration_ns(o));
        io_job_prepare(sync, b, sync_path, false, bench_duration_ns(o));
        rc = io_job_run(rt, seq);
    }
    if (rc == 0)
        rc = io_job_run(rt, sync);
    rv_runtime_close(rt);
    if (rc == 0) {
        b->seq_bytes = seq->bytes_done;
        io_backend_figures(b, seq, sync);
    }
    free(seq);
    free(sync);
    return rc;
}

/* ---- io: fio, the machine's limit ---------------------------------------------------- */

struct fio_cmd {
    char args[FIO_ARG_COUNT][PATH_MAX + 32];
    char *argv[FIO_ARG_COUNT + 1];
    uint32_t argc;
};

static void __attribute__((format(printf, 2, 3))) fio_arg(struct fio_cmd *c, const char *fmt, ...)
{
    va_list ap;
    RV_ASSERT(c->argc < FIO_ARG_COUNT);
    va_start(ap, fmt);
    vsnprintf(c->args[c->argc], sizeof(c->args[0]), fmt, ap);
    va_end(ap);
    c->argv[c->argc] = c->args[c->argc];
    c->argc++;
    c->argv[c->argc] = NULL;
}

/* Run fio with output to /dev/null. 0, -ENOENT when fio is not on PATH, or
 * -ECHILD when it failed. */
static int fio_spawn(struct fio_cmd *c)
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawnp(&pid, "fio", &fa, NULL, c->argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -rc;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}

/* The text after "key" and its colon, searching from `from`; NULL if absent. */
static const char *json_after_key(const char *from, const char *key)
{
    size_t len = strlen(key);
    for (const char *p = from; p != NULL && (p = strchr(p, '"')) != NULL; p++) {
        if (strncmp(p + 1, key, len) != 0 || p[1 + len] != '"')
            continue;
        const char *q = p + 2 + len;
        q += strspn(q, " \t\r\n");
        if (*q == ':')
            return q + 1 + strspn(q + 1, " \t\r\n");
    }
    return NULL;
}

/* The number at the path keys[0] > keys[1] > ... (each searched after the last). */
static bool json_number(const char *text, const char *const *keys, size_t count, double *out)
{
    const char *p = text;
    for (size_t i = 0; i < count && p != NULL; i++)
        p = json_after_key(p, keys[i]);
    if (p == NULL)
        return false;
    char *end;
    *out = strtod(p, &end);
    return end != p;
}

struct fio_result {
    double write_bytes;
    double runtime_ms; /* includes the end_fsync */
    double iops;
    double sync_p50_ns;
    double sync_p99_ns;
};

static int fio_parse(const char *path, struct fio_result *out)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -errno;
    char *text = malloc(FIO_JSON_MAX + 1);
    size_t len = text == NULL ? 0 : fread(text, 1, FIO_JSON_MAX, f);
    fclose(f);
    if (text == NULL)
        return -ENOMEM;
    text[len] = '\0';
    const char *w_bytes[] = {"jobs", "write", "io_bytes"};
    const char *w_runtime[] = {"jobs", "write", "runtime"};
    const char *w_iops[] = {"jobs", "write", "iops"};
    const char *s_p50[] = {"jobs", "sync", "lat_ns", "percentile", "50.000000"};
    const char *s_p99[] = {"jobs", "sync", "lat_ns", "percentile", "99.000000"};
    bool is_ok = json_number(text, w_bytes, 3, &out->write_bytes) &&
                 json_number(text, w_runtime, 3, &out->runtime_ms) &&
                 json_number(text, w_iops, 3, &out->iops);
    if (!json_number(text, s_p50, 5, &out->sync_p50_ns))
        out->sync_p50_ns = 0; /* only with fdatasync=1 */
    if (!json_number(text, s_p99, 5, &out->sync_p99_ns))
        out->sync_p99_ns = 0;
    free(text);
    return is_ok ? 0 : -EBADMSG;
}

/* The common fio arguments: a buffered io_uring write job pinned like shard 0. */
static void fio_common(struct fio_cmd *c, const char *dir, const char *name, int cpu)
{
    fio_arg(c, "fio");
    fio_arg(c, "--name=rivven-%s", name);
    fio_arg(c, "--filename=%s/rivven-bench-%d-fio-%s.dat", dir, (int)getpid(), name);
    fio_arg(c, "--output=%s/rivven-bench-%d-fio-%s.json", dir, (int)getpid(), name);
    fio_arg(c, "--output-format=json");
    fio_arg(c, "--ioengine=io_uring");
    fio_arg(c, "--direct=0");
    fio_arg(c, "--fallocate=none");
    fio_arg(c, "--rw=write");
    if (cpu >= 0)
        fio_arg(c, "--cpus_allowed=%d", cpu);
}

/* Run one fio job (arguments after the common ones) and parse its result. */
static int fio_job(struct fio_cmd *c, const char *dir, const char *name, struct fio_result *out)
{
    char path[PATH_MAX];
    int rc = fio_spawn(c);
    snprintf(path, sizeof(path), "%s/rivven-bench-%d-fio-%s.json", dir, (int)getpid(), name);
    if (rc == 0)
        rc = fio_parse(path, out);
    (void)unlink(path); /* best effort cleanup of fio's files */
    snprintf(path, sizeof(path), "%s/rivven-bench-%d-fio-%s.dat", dir, (int)getpid(), name);
    (void)unlink(path);
    return rc;
}

static void fio_add_figures(const struct fio_result *seq, const struct fio_result *direct,
                            const struct fio_result *sync)
{
    double fio_mbps = seq->runtime_ms > 0 ? seq->write_bytes / seq->runtime_ms / 1e3 : 0;
    double direct_mbps =
        direct->runtime_ms > 0 ? direct->write_bytes / direct->runtime_ms / 1e3 : 0;
    fig_num("io", "fio_seq_write_mb_per_s", "fio io_uring seq 1 MiB + end_fsync", fio_mbps, "MB/s");
    fig_num("io", "fio_seq_direct_mb_per_s", "fio io_uring seq 1 MiB O_DIRECT + end_fsync",
            direct_mbps, "MB/s");
    fig_num("io", "fio_fsync_ops_per_s", "fio io_uring 4 KiB + fdatasync", sync->iops, "op/s");
    fig_num("io", "fio_fdatasync_p50_ns", "  fio fdatasync alone p50", sync->sync_p50_ns, "ns");
    fig_num("io", "fio_fdatasync_p99_ns", "  fio fdatasync alone p99", sync->sync_p99_ns, "ns");
    const char *names[] = {"uring", "epoll", "uring_poll0"};
    for (size_t i = 0; i < RV_ARRAY_LEN(names); i++) {
        char key[48];
        snprintf(key, sizeof(key), "%s_seq_write_mb_per_s", names[i]);
        struct bench_fig *f = fig_find("io", key);
        if (f != NULL && fio_mbps > 0) {
            fig_note(f, "fio: %.0f MB/s, %.0f%%", fio_mbps, 100.0 * f->value / fio_mbps);
            fig_numf("io", "", 100.0 * f->value / fio_mbps, "%", "%s_seq_pct_of_fio", names[i]);
        }
        snprintf(key, sizeof(key), "%s_fsync_ops_per_s", names[i]);
        f = fig_find("io", key);
        if (f != NULL && sync->iops > 0) {
            fig_note(f, "fio: %.0f op/s, %.0f%%", sync->iops, 100.0 * f->value / sync->iops);
            fig_numf("io", "", 100.0 * f->value / sync->iops, "%", "%s_fsync_pct_of_fio", names[i]);
        }
    }
}

/* fio on the same directory: the sequential job at our size, the fdatasync job
 * for our duration. A missing or failing fio is reported, not fatal. */
static void fio_measure(const struct bench_opts *o, const char *dir, uint64_t seq_bytes, int cpu)
{
    struct fio_cmd *c = calloc(1, sizeof(*c));
    struct fio_result seq, direct, sync;
    int rc = c == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        fio_common(c, dir, "seq", cpu);
        fio_arg(c, "--bs=1m");
        fio_arg(c, "--iodepth=%u", IO_SEQ_DEPTH);
        fio_arg(c, "--size=%llu", (unsigned long long)seq_bytes);
        fio_arg(c, "--end_fsync=1");
        rc = fio_job(c, dir, "seq", &seq);
    }
    if (rc == 0) { /* the same with O_DIRECT: what the WAL and segments use by default */
        memset(c, 0, sizeof(*c));
        fio_common(c, dir, "direct", cpu);
        fio_arg(c, "--direct=1");
        fio_arg(c, "--bs=1m");
        fio_arg(c, "--iodepth=%u", IO_SEQ_DEPTH);
        fio_arg(c, "--size=%llu", (unsigned long long)seq_bytes);
        fio_arg(c, "--end_fsync=1");
        rc = fio_job(c, dir, "direct", &direct);
    }
    if (rc == 0) {
        memset(c, 0, sizeof(*c));
        fio_common(c, dir, "fsync", cpu);
        fio_arg(c, "--bs=4k");
        fio_arg(c, "--iodepth=1");
        fio_arg(c, "--fdatasync=1");
        fio_arg(c, "--size=1g");
        fio_arg(c, "--runtime=%llums", (unsigned long long)(bench_duration_ns(o) / 1000000));
        rc = fio_job(c, dir, "fsync", &sync);
    }
    free(c);
    if (rc == 0) {
        fig_text("io", "fio", "fio", "io_uring engine, buffered and O_DIRECT, same directory");
        fio_add_figures(&seq, &direct, &sync);
    } else if (rc == -ENOENT) {
        fig_text("io", "fio", "fio", "not found on PATH: no comparison");
    } else {
        fig_text("io", "fio", "fio", "failed (%s): no comparison", rv_strerror(rc));
    }
}

/* ---- io: the benchmark ------------------------------------------------------------- */

/* memcpy of a 64 MiB buffer, the best of 5: bytes copied per second. */
static double bench_memcpy_gbps(void)
{
    char *src = malloc(MEMCPY_BYTES);
    char *dst = malloc(MEMCPY_BYTES);
    uint64_t best = UINT64_MAX;
    if (src != NULL && dst != NULL) {
        memset(src, 0x5a, MEMCPY_BYTES);
        memset(dst, 0xa5, MEMCPY_BYTES); /* fault the pages in first */
        for (int i = 0; i < 5; i++) {
            uint64_t t0 = rv_clock_now_ns();
            memcpy(dst, src, MEMCPY_BYTES);
            /* Keep the copy: dst is "read" by the empty asm. */
            __asm__ volatile("" : : "r"(dst) : "memory");
            uint64_t took = rv_clock_now_ns() - t0;
            best = took < best ? took : best;
        }
    }
    free(src);
    free(dst);
    return best == UINT64_MAX || best == 0 ? 0 : (double)MEMCPY_BYTES / (double)best;
}

/* The block device under dir, e.g. "vda (254:0)". */
static void io_describe_dir(const char *dir, char *buf, size_t len)
{
    struct stat st;
    char link[PATH_MAX], target[PATH_MAX];
    if (stat(dir, &st) < 0) {
        snprintf(buf, len, "unknown device");
        return;
    }
    unsigned maj = major(st.st_dev), min = minor(st.st_dev);
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", maj, min);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0) {
        snprintf(buf, len, "device %u:%u (not a block device)", maj, min);
        return;
    }
    target[n] = '\0';
    const char *name = strrchr(target, '/');
    snprintf(buf, len, "%.64s (%u:%u)", name != NULL ? name + 1 : target, maj, min);
}

/*
 * io_uring and epoll with the default poll, then io_uring without polling: the
 * io-wq worker that runs a punted buffered write or fdatasync inherits the
 * shard's CPU, where a polling shard competes with it. The first run sets the
 * size every later run and fio write.
 */
static int io_run_all(const struct bench_opts *o, const char *dir, const uint8_t *buf)
{
    struct rv_runtime_config defaults;
    rv_runtime_config_init(&defaults);
    struct io_backend_run runs[] = {
        {.backend = RV_IO_URING, .name = "uring", .label = "io_uring", .poll_us = defaults.poll_us},
        {.backend = RV_IO_EPOLL, .name = "epoll", .label = "epoll", .poll_us = defaults.poll_us},
        {.backend = RV_IO_URING, .name = "uring_poll0", .label = "io_uring poll 0", .poll_us = 0},
    };
    uint64_t size = 0;
    int cpu = -1;
    for (size_t i = 0; i < RV_ARRAY_LEN(runs); i++) {
        runs[i].dir = dir;
        runs[i].buf = buf;
        runs[i].seq_bytes_max = size;
        int rc = io_backend_measure(o, &runs[i]);
        if (rc == -ENOSYS) {
            fig_text("io", runs[i].name, runs[i].label, "unavailable: %s", rv_err_msg());
            continue;
        }
        if (rc < 0)
            return rc;
        size = size != 0 ? size : runs[i].seq_bytes;
        cpu = runs[i].cpu;
    }
    if (size > 0)
        fio_measure(o, dir, size, cpu);
    return 0;
}

static int bench_io(const struct bench_opts *o)
{
    char tmp[] = "/var/tmp/rivven-bench.XXXXXX";
    char device[PATH_MAX];
    const char *dir = o->dir;
    if (dir == NULL && (dir = mkdtemp(tmp)) == NULL) {
        fprintf(stderr, BENCH_NAME ": mkdtemp %s: %s\n", tmp, strerror(errno));
        return -errno;
    }
    io_describe_dir(dir, device, sizeof(device));
    fig_text("io", "dir", "directory", "%s", dir);
    fig_text("io", "device", "device", "%s", device);
    fig_num("io", "memcpy_gb_per_s", "memcpy 64 MiB", bench_memcpy_gbps(), "GB/s");
    uint8_t *buf = aligned_alloc(4096, IO_SEQ_BLOCK);
    int rc = buf == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        for (uint32_t i = 0; i < IO_SEQ_BLOCK; i++)
            buf[i] = (uint8_t)(i * 131u + 7u); /* not zeros: no sparse shortcut anywhere */
        rc = io_run_all(o, dir, buf);
    }
    free(buf);
    if (o->dir == NULL && rmdir(dir) < 0)
        fprintf(stderr, BENCH_NAME ": rmdir %s: %s\n", dir, strerror(errno));
    return rc;
}

/* ---- limits for the broker mode: loopback TCP and the disk's fdatasync ---------------- */

/* One connected TCP pair over 127.0.0.1: *out_send and *out_recv. */
static int lb_pair(int *out_send, int *out_recv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fds[3] = {-1, -1, -1}; /* listener, sender, receiver */
    int rc = 0;
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fds[0] < 0 || bind(fds[0], (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fds[0], 1) < 0 || getsockname(fds[0], (struct sockaddr *)&addr, &len) < 0)
        rc = -errno;
    if (rc == 0 && (fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        rc = -errno;
    if (rc == 0 && connect(fds[1], (struct sockaddr *)&addr, sizeof(addr)) < 0)
        rc = -errno;
    if (rc == 0 && (fds[2] = accept4(fds[0], NULL, NULL, SOCK_CLOEXEC)) < 0)
        rc = -errno;
    if (fds[0] >= 0)
        close(fds[0]);
    if (rc < 0) {
        for (int i = 1; i < 3; i++) {
            if (fds[i] >= 0)
                close(fds[i]);
        }
        fprintf(stderr, BENCH_NAME ": loopback socket pair: %s\n", strerror(-rc));
        return rc;
    }
    *out_send = fds[1];
    *out_recv = fds[2];
    return 0;
}

/*
 * The blast through the ring: shard 0 sends LB_BLOCK blocks (the rest of a
 * block after a short send) until the deadline, then shuts its side down; the
 * receiving shard counts bytes until the end of the stream and then sets done.
 */
struct lb_blast {
    int send_fd;
    int recv_fd;
    uint8_t *send_buf;
    uint8_t *recv_buf;
    uint64_t deadline_ns;
    uint32_t send_off;    /* sender's: bytes of the current block sent */
    uint64_t received;    /* receiver's */
    uint64_t end_ns;      /* receiver's: the end of the stream arrived */
    _Atomic int send_err; /* the first send failure */
    int recv_err;
    struct bench_watch watch;
};

static void lb_send(struct lb_blast *b);

static void lb_send_end(struct lb_blast *b, int err)
{
    if (err < 0)
        atomic_store(&b->send_err, err);
    (void)shutdown(b->send_fd, SHUT_WR); /* the receiver sees the end of the stream */
}

static void lb_sent(void *arg, int64_t res)
{
    struct lb_blast *b = arg;
    if (res <= 0) {
        lb_send_end(b, res < 0 ? (int)res : -EIO);
        return;
    }
    b->send_off = (uint32_t)((b->send_off + (uint64_t)res) % LB_BLOCK);
    if (b->send_off == 0 && rv_clock_now_ns() >= b->deadline_ns) {
        lb_send_end(b, 0);
        return;
    }
    lb_send(b);
}

static void lb_send(struct lb_blast *b)
{
    int rc =
        rv_sock_send(b->send_fd, b->send_buf + b->send_off, LB_BLOCK - b->send_off, lb_sent, b);
    if (rc < 0)
        lb_send_end(b, rc);
}

static void lb_send_start(void *arg)
{
    lb_send(arg);
}

static void lb_recv(struct lb_blast *b);

static void lb_received(void *arg, int64_t res)
{
    struct lb_blast *b = arg;
    if (res <= 0) {
        b->end_ns = rv_clock_now_ns();
        b->recv_err = (int)res;
        bench_set_done(&b->watch);
        return;
    }
    b->received += (uint64_t)res;
    lb_recv(b);
}

static void lb_recv(struct lb_blast *b)
{
    int rc = rv_sock_recv(b->recv_fd, b->recv_buf, LB_BLOCK, lb_received, b);
    if (rc < 0) {
        b->end_ns = rv_clock_now_ns();
        b->recv_err = rc;
        bench_set_done(&b->watch);
    }
}

static void lb_recv_start(void *arg)
{
    lb_recv(arg);
}

/* The blast through the runtime's sockets; *mbps = MB/s received. */
static int lb_ring_measure(const struct bench_opts *o, uint64_t duration_ns, uint8_t *bufs,
                           double *mbps)
{
    struct rv_runtime_config cfg;
    rv_runtime_t *rt;
    struct lb_blast *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -ENOMEM;
    int rc = lb_pair(&b->send_fd, &b->recv_fd);
    if (rc == 0) {
        bench_config(o, &cfg);
        rc = bench_open(&rt, &cfg);
        if (rc < 0) {
            close(b->send_fd);
            close(b->recv_fd);
        }
    }
    if (rc < 0) {
        free(b);
        return rc;
    }
    b->send_buf = bufs;
    b->recv_buf = bufs + LB_BLOCK;
    uint32_t receiver = o->shard_count > 1 ? 1 : 0;
    uint64_t start_ns = rv_clock_now_ns();
    b->deadline_ns = start_ns + duration_ns;
    rc = rv_runtime_submit(rt, receiver, lb_recv_start, b);
    if (rc == 0) {
        rc = rv_runtime_submit(rt, 0, lb_send_start, b);
        if (rc < 0)
            (void)shutdown(b->send_fd, SHUT_RDWR); /* ends the receive */
        bench_wait(&b->watch, NULL, duration_ns);
    }
    rv_runtime_close(rt);
    close(b->send_fd);
    close(b->recv_fd);
    if (rc == 0)
        rc = atomic_load(&b->send_err) < 0 ? atomic_load(&b->send_err) : b->recv_err;
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": loopback blast through the ring: %s\n", rv_strerror(rc));
    *mbps = bench_rate(b->received, b->end_ns - start_ns) / 1e6;
    free(b);
    return rc;
}

struct lb_thread {
    int fd;
    int cpu;
    uint8_t *buf;
    uint64_t deadline_ns; /* sender */
    uint64_t bytes;       /* receiver */
    uint64_t end_ns;      /* receiver: the end of the stream */
    bool is_pinned;
    int err;
};

static void *lb_thread_send(void *arg)
{
    struct lb_thread *t = arg;
    uint32_t off = 0;
    t->is_pinned = rv_topo_pin_self((unsigned)t->cpu) == 0; /* best effort: a reference */
    for (;;) {
        ssize_t n = send(t->fd, t->buf + off, LB_BLOCK - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            t->err = n < 0 ? -errno : -EIO;
            break;
        }
        off = (uint32_t)((off + (uint64_t)n) % LB_BLOCK);
        if (off == 0 && rv_clock_now_ns() >= t->deadline_ns)
            break;
    }
    (void)shutdown(t->fd, SHUT_WR);
    return NULL;
}

static void *lb_thread_recv(void *arg)
{
    struct lb_thread *t = arg;
    t->is_pinned = rv_topo_pin_self((unsigned)t->cpu) == 0;
    for (;;) {
        ssize_t n = recv(t->fd, t->buf, LB_BLOCK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            t->err = n < 0 ? -errno : 0;
            break;
        }
        t->bytes += (uint64_t)n;
    }
    t->end_ns = rv_clock_now_ns();
    return NULL;
}

/* The same blast between two plain threads, blocking send and recv, pinned to
 * the CPUs of shards 0 and 1. */
static int lb_threads_measure(const struct bench_opts *o, uint64_t duration_ns, uint8_t *bufs,
                              double *mbps)
{
    struct lb_thread tx = {.cpu = o->cpu_ids[0], .buf = bufs};
    struct lb_thread rx = {.cpu = o->cpu_ids[1], .buf = bufs + LB_BLOCK};
    pthread_t threads[2];
    int rc = lb_pair(&tx.fd, &rx.fd);
    if (rc < 0)
        return rc;
    uint64_t start_ns = rv_clock_now_ns();
    tx.deadline_ns = start_ns + duration_ns;
    rc = -pthread_create(&threads[1], NULL, lb_thread_recv, &rx);
    if (rc == 0) {
        int tx_rc = -pthread_create(&threads[0], NULL, lb_thread_send, &tx);
        if (tx_rc < 0)
            (void)shutdown(tx.fd, SHUT_RDWR); /* the receiver sees the end */
        else
            (void)pthread_join(threads[0], NULL);
        (void)pthread_join(threads[1], NULL);
        rc = tx_rc < 0 ? tx_rc : tx.err < 0 ? tx.err : rx.err;
    }
    close(tx.fd);
    close(rx.fd);
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": loopback blast, threads: %s\n", rv_strerror(rc));
    *mbps = rc < 0 ? 0 : bench_rate(rx.bytes, rx.end_ns - start_ns) / 1e6;
    return rc;
}

int bench_loopback_limit(const struct bench_opts *o, const char *section, double *mbps)
{
    uint8_t *bufs = malloc(2 * LB_BLOCK);
    double runs[LB_RUNS], threads_mbps = 0;
    uint64_t run_ns = bench_duration_ns(o) / LB_RUNS;
    run_ns = run_ns > LB_RUN_MIN_NS ? run_ns : LB_RUN_MIN_NS;
    *mbps = 0;
    if (bufs == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < 2 * LB_BLOCK; i++)
        bufs[i] = (uint8_t)(i * 131u + 7u);
    int rc = 0;
    for (uint32_t i = 0; i < LB_RUNS && rc == 0; i++) {
        rc = lb_ring_measure(o, run_ns, bufs, &runs[i]);
        *mbps = runs[i] > *mbps ? runs[i] : *mbps;
    }
    if (rc == 0)
        rc = lb_threads_measure(o, run_ns, bufs, &threads_mbps);
    free(bufs);
    if (rc < 0)
        return rc;
    struct bench_fig *f =
        fig_num(section, "loopback_mb_per_s", "loopback TCP limit (io_uring)", *mbps, "MB/s");
    fig_note(f, "best of %.0f, %.0f, %.0f; 1 conn, %u KiB sends; threads %.0f", runs[0], runs[1],
             runs[2], LB_BLOCK >> 10, threads_mbps);
    for (uint32_t i = 0; i < LB_RUNS; i++)
        fig_numf(section, "", runs[i], "MB/s", "loopback_run%u_mb_per_s", i + 1);
    fig_num(section, "loopback_threads_mb_per_s", "", threads_mbps, "MB/s");
    return 0;
}

int bench_fsync_measure(const struct bench_opts *o, const char *dir, uint64_t duration_ns,
                        struct bench_fsync *out)
{
    struct fio_cmd *c = calloc(1, sizeof(*c));
    struct fio_result r;
    int rc = c == NULL ? -ENOMEM : 0;
    memset(out, 0, sizeof(*out));
    if (rc == 0) {
        fio_common(c, dir, "fsync", -1);
        fio_arg(c, "--bs=4k");
        fio_arg(c, "--iodepth=1");
        fio_arg(c, "--fdatasync=1");
        fio_arg(c, "--size=1g");
        fio_arg(c, "--runtime=%llums", (unsigned long long)(duration_ns / 1000000));
        rc = fio_job(c, dir, "fsync", &r);
    }
    free(c);
    if (rc == 0 && r.sync_p99_ns > 0) {
        *out = (struct bench_fsync){
            .p50_ns = r.sync_p50_ns, .p99_ns = r.sync_p99_ns, .ops_per_s = r.iops, .is_fio = true};
        return 0;
    }
    /* No fio: rivven's own 4 KiB write + fdatasync pairs. */
    struct rv_runtime_config cfg;
    rv_runtime_t *rt;
    struct io_job *j = malloc(sizeof(*j));
    uint8_t *buf = aligned_alloc(4096, IO_SYNC_BLOCK);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/rivven-bench-%d-sync.dat", dir, (int)getpid());
    bench_config(o, &cfg);
    rc = j == NULL || buf == NULL ? -ENOMEM : bench_open(&rt, &cfg);
    if (rc == 0) {
        memset(buf, 0x5a, IO_SYNC_BLOCK);
        struct io_backend_run b = {.backend = RV_IO_URING, .dir = dir, .buf = buf};
        io_job_prepare(j, &b, path, false, duration_ns);
        rc = io_job_run(rt, j);
        rv_runtime_close(rt);
    }
    if (rc == 0)
        *out = (struct bench_fsync){.p50_ns = (double)rv_hist_percentile(&j->hist, 50.0),
                                    .p99_ns = (double)rv_hist_percentile(&j->hist, 99.0),
                                    .ops_per_s = bench_rate(j->ops, j->end_ns - j->start_ns)};
    free(j);
    free(buf);
    return rc;
}

int bench_fsync_limit(const struct bench_opts *o, const char *dir, const char *section,
                      double *p99_ns)
{
    struct bench_fsync d;
    int rc = bench_fsync_measure(o, dir, bench_duration_ns(o), &d);
    *p99_ns = rc == 0 ? d.p99_ns : 0;
    if (rc < 0)
        return rc;
    struct bench_fig *f =
        fig_num(section, "disk_fdatasync_p99_ns",
                d.is_fio ? "disk fdatasync p99 (fio)" : "disk write+fdatasync p99 (no fio)",
                d.p99_ns, "ns");
    fig_note(f, "p50 %.0f us; 4 KiB write + fdatasync %.0f op/s%s", d.p50_ns / 1e3, d.ops_per_s,
             d.is_fio ? "" : " (rivven io_uring)");
    fig_num(section, "disk_fdatasync_p50_ns", "", d.p50_ns, "ns");
    fig_num(section, "disk_fsync_ops_per_s", "", d.ops_per_s, "op/s");
    fig_text(section, "disk_source", "", "%s", d.is_fio ? "fio" : "rivven io_uring (no fio)");
    return 0;
}

/* ---- storage: a guard against a wedged store ------------------------------------------ */

/*
 * A store whose log failed with batches still queued never becomes idle, so
 * rv_store_close and rv_topic_delete wait forever (docs/benchmarks.md). Such
 * calls run on a helper thread; when one has not returned after ST_GUARD_S,
 * the store is "wedged": the thread is left behind, no runtime is closed any
 * more (the stuck call still uses it), the rest of the storage run is skipped,
 * and the figures so far are printed.
 */
static bool st_is_wedged;

struct st_guard {
    rv_store_t *st;
    const char *topic; /* NULL: close the store */
    int rc;
    sem_t done;
};

static void *st_guard_main(void *arg)
{
    struct st_guard *g = arg;
    if (g->topic != NULL)
        g->rc = rv_topic_delete(g->st, g->topic);
    else
        rv_store_close(g->st);
    sem_post(&g->done);
    return NULL;
}

/* Run the guard's call; false when it did not return in time. */
static bool st_guard_run(struct st_guard *g, const char *what)
{
    pthread_t thread;
    struct timespec deadline;
    sem_init(&g->done, 0, 0);
    if (pthread_create(&thread, NULL, st_guard_main, g) != 0) {
        st_guard_main(g); /* no thread: call it here, unguarded */
        sem_destroy(&g->done);
        return true;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ST_GUARD_S;
    int rc;
    while ((rc = sem_timedwait(&g->done, &deadline)) < 0 && errno == EINTR) {
    }
    if (rc < 0) {
        st_is_wedged = true;
        (void)pthread_detach(thread); /* g stays allocated: the thread still uses it */
        fig_text("storage", "wedged", "STORE WEDGED",
                 "%s did not return in %d s: the rest of the "
                 "storage run is skipped",
                 what, ST_GUARD_S);
        fprintf(stderr, BENCH_NAME ": %s did not return in %d s\n", what, ST_GUARD_S);
        return false;
    }
    pthread_join(thread, NULL);
    sem_destroy(&g->done);
    return true;
}

/* rv_store_close, guarded. NULL is a no-op. */
static void st_store_close(rv_store_t *st)
{
    struct st_guard *g = calloc(1, sizeof(*g));
    if (st == NULL || st_is_wedged || g == NULL) {
        free(g);
        return;
    }
    g->st = st;
    if (st_guard_run(g, "rv_store_close"))
        free(g);
}

/* rv_topic_delete, guarded: 0, -errno, or -ETIMEDOUT when wedged. */
static int st_topic_delete(rv_store_t *st, const char *topic)
{
    struct st_guard *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    if (st_is_wedged) {
        free(g);
        return -ETIMEDOUT;
    }
    *g = (struct st_guard){.st = st, .topic = topic};
    if (!st_guard_run(g, "rv_topic_delete"))
        return -ETIMEDOUT;
    int rc = g->rc;
    free(g);
    return rc;
}

/* rv_runtime_close, unless a wedged store keeps it busy for ever. */
static void st_runtime_close(rv_runtime_t *rt)
{
    if (!st_is_wedged)
        rv_runtime_close(rt);
}

/* ---- storage: helpers ---------------------------------------------------------------- */

/* The storage run's shared context: the parent directory, the disk's limits
 * measured in this run, and the records every producer sends. */
struct st_ctx {
    const struct bench_opts *o;
    const char *dir;             /* data directories are made under it */
    double seq_mbps;             /* the disk's sequential write limit (0: unknown) */
    double fsync_ops;            /* its 4 KiB write + fdatasync limit (0: unknown) */
    uint64_t cell_ns;            /* length of each produce cell */
    uint8_t *values;             /* ST_VALUE_MAX bytes, the value of every record */
    struct rv_record *recs;      /* ST_BATCH_MAX records pointing into values */
    uint32_t value_len_prepared; /* the value length recs currently hold */
    uint32_t seq;                /* makes each data directory name unique */
};

/* VmRSS of this process in KiB, 0 if it cannot be read. */
static uint64_t st_rss_kib(void)
{
    char line[128];
    unsigned long long kib = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %llu kB", &kib) == 1)
            break;
    }
    if (f != NULL)
        fclose(f);
    return kib;
}

/* Open descriptors of this process (entries of /proc/self/fd, less the one
 * reading it), or -1. */
static int64_t st_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int64_t n = 0;
    const struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

static int st_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? -1 : 0;
}

/* Remove a data directory and everything under it (best effort, reported). */
static void st_rm_tree(const char *path)
{
    if (nftw(path, st_rm_entry, 64, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
        fprintf(stderr, BENCH_NAME ": removing %s: %s\n", path, strerror(errno));
}

void bench_rm_tree(const char *path)
{
    st_rm_tree(path);
}

static int st_drop_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag != FTW_F)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;        /* best effort */
    (void)fdatasync(fd); /* dirty pages are not dropped */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    return 0;
}

/* Push every file under path out of the page cache (no root needed), so the
 * next reads of it come from the disk. */
static void st_drop_cache(const char *path)
{
    (void)nftw(path, st_drop_entry, 64, FTW_PHYS);
}

/* A fresh data directory name under the run's directory. */
static void st_data_dir(struct st_ctx *c, const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/rivven-bench-%d-%s-%u", c->dir, (int)getpid(), name, c->seq++);
}

/* A runtime of `shards` shards on data_dir, configured like the others. */
static int st_runtime_open(const struct st_ctx *c, uint32_t shards, const char *data_dir,
                           rv_runtime_t **out)
{
    struct rv_runtime_config cfg;
    bench_config(c->o, &cfg);
    cfg.shard_count = shards;
    cfg.data_dir = data_dir;
    cfg.io_depth = c->o->io_depth != 0 ? c->o->io_depth : ST_IO_DEPTH;
    return bench_open(out, &cfg);
}

static enum rv_wal_io bench_wal_io;     /* --wal-io, for every store of the run */
static enum rv_wal_io bench_segment_io; /* --segment-io, likewise */

/* rv_store_open with hot_bytes (0: the default), timed into *took_ns. */
/* The stores' idle_unload_ms (0: the default); the partition test sets it. */
static uint32_t st_idle_unload_ms;

static int st_store_open(rv_runtime_t *rt, uint64_t hot_bytes, rv_store_t **out, uint64_t *took_ns)
{
    struct rv_store_config cfg;
    rv_store_config_init(&cfg);
    if (hot_bytes != 0)
        cfg.hot_bytes = hot_bytes;
    if (st_idle_unload_ms != 0)
        cfg.idle_unload_ms = st_idle_unload_ms;
    cfg.wal_io = bench_wal_io;
    cfg.segment_io = bench_segment_io;
    uint64_t t0 = rv_clock_now_ns();
    int rc = rv_store_open(out, rt, &cfg);
    if (took_ns != NULL)
        *took_ns = rv_clock_now_ns() - t0;
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": rv_store_open: %s\n",
                rv_err_msg()[0] != '\0' ? rv_err_msg() : rv_strerror(rc));
    return rc;
}

/* Create a topic of `partitions` partitions with the default settings. */
static int st_topic_create(rv_store_t *st, const char *name, int32_t partitions)
{
    struct rv_topic_config cfg;
    rv_topic_config_init(&cfg);
    cfg.partitions = partitions;
    int rc = rv_topic_create(st, name, &cfg);
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": creating topic %s (%d partitions): %s\n", name, partitions,
                rv_err_msg()[0] != '\0' ? rv_err_msg() : rv_strerror(rc));
    return rc;
}

/* Point the first ST_BATCH_MAX records at value_len bytes of the shared value. */
static void st_prepare_records(struct st_ctx *c, uint32_t value_len)
{
    for (uint32_t i = 0; i < ST_BATCH_MAX; i++)
        c->recs[i] =
            (struct rv_record){.key_len = -1, .value = c->values, .value_len = (int32_t)value_len};
    c->value_len_prepared = value_len;
}

/* Records of value_len bytes that fit one batch under max.message.bytes. */
static uint32_t st_batch_fit(uint32_t batch, uint32_t value_len)
{
    struct rv_topic_config cfg;
    rv_topic_config_init(&cfg); /* max.message.bytes as topics get it */
    uint32_t fit =
        ((uint32_t)cfg.max_message_bytes - ST_BATCH_HEADER) / (value_len + ST_RECORD_OVERHEAD);
    return batch < fit ? batch : fit;
}

static const char *st_acks_name(enum rv_acks acks)
{
    return acks == RV_ACKS_ALL ? "all" : acks == RV_ACKS_LEADER ? "leader" : "none";
}

/* "100 B", "1 KiB", "16 KiB" */
static void st_size_name(uint32_t bytes, char *out, size_t len)
{
    if (bytes >= 1024 && bytes % 1024 == 0)
        snprintf(out, len, "%u KiB", bytes / 1024);
    else
        snprintf(out, len, "%u B", bytes);
}

/* ---- storage: producer drivers on the owner shards ----------------------------------- */

struct st_driver;

/* One produce in flight: the slot is the callback's argument. */
struct st_slot {
    struct st_driver *d;
    uint64_t sent_ns;
};

/*
 * A task on the shard that owns `partition`: keeps up to `window` rv_produce
 * calls of `batch` records in flight and sends the next one from each
 * completion, until duration_ns or bytes_max (payload) is used up, then waits
 * for the rest. Everything but acked_bytes and the watch is the shard's.
 */
struct st_driver {
    rv_store_t *st;
    const char *topic;
    int32_t partition;
    uint32_t shard;
    const struct rv_record *recs;
    uint32_t batch;
    uint32_t value_len;
    enum rv_acks acks;
    uint32_t window;
    uint64_t duration_ns; /* UINT64_MAX: bytes_max alone */
    uint64_t bytes_max;
    const _Atomic uint64_t *turns; /* the shard's loop_turns counter */
    uint64_t deadline_ns;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t bytes_issued;
    uint64_t produces;
    uint64_t records;
    uint64_t nobufs; /* -ENOBUFS answers (WAL or buffer pool full), sent again */
    uint64_t last_turn;
    uint64_t completion_turns; /* loop turns in which produces completed */
    uint32_t inflight;
    uint32_t parked_count; /* slots refused with -ENOBUFS, waiting to be sent again */
    bool is_retry_armed;   /* a timer sends the parked slots when nothing is in flight */
    bool is_stopping;
    bool is_finished;
    int err;
    struct st_slot *parked[ST_WINDOW];
    _Atomic uint64_t acked_bytes; /* payload acknowledged, read by other threads */
    struct bench_watch watch;
    struct rv_hist hist; /* submit -> callback, ns */
    struct st_slot slots[ST_WINDOW];
};

static void st_produced(void *arg, int64_t res);

static void st_driver_finish(struct st_driver *d)
{
    if (d->is_finished || !d->is_stopping || d->inflight > 0 || d->is_retry_armed)
        return;
    d->is_finished = true;
    d->end_ns = rv_clock_now_ns();
    bench_set_done(&d->watch);
}

static void st_driver_fail(struct st_driver *d, int err)
{
    if (d->err == 0)
        d->err = err;
    d->is_stopping = true;
}

/* Send slot s's next batch, or stop once the time or the bytes are used up. */
static void st_issue(struct st_slot *s)
{
    struct st_driver *d = s->d;
    uint64_t now = rv_clock_now_ns();
    if (now >= d->deadline_ns || d->bytes_issued >= d->bytes_max)
        d->is_stopping = true;
    if (d->is_stopping)
        return;
    s->sent_ns = now;
    int rc = rv_produce(d->st, d->topic, d->partition, d->recs, d->batch, d->acks, st_produced, s);
    if (rc < 0) {
        st_driver_fail(d, rc);
        return;
    }
    d->bytes_issued += (uint64_t)d->batch * d->value_len;
    d->inflight++;
}

/* Send the slots parked by -ENOBUFS again. */
static void st_unpark(struct st_driver *d)
{
    while (d->parked_count > 0)
        st_issue(d->parked[--d->parked_count]);
}

static void st_retry_tick(void *arg)
{
    struct st_driver *d = arg;
    d->is_retry_armed = false;
    st_unpark(d);
    st_driver_finish(d);
}

/* Backpressure: the batch was not taken. Send it again after the next
 * completion, or after ST_RETRY_US when nothing is in flight. */
static void st_park(struct st_slot *s)
{
    struct st_driver *d = s->d;
    d->nobufs++;
    d->bytes_issued -= (uint64_t)d->batch * d->value_len;
    d->parked[d->parked_count++] = s;
    if (d->inflight > 0 || d->is_retry_armed)
        return;
    int rc = rv_timer_add(ST_RETRY_US, st_retry_tick, d, NULL);
    if (rc < 0)
        st_driver_fail(d, rc);
    d->is_retry_armed = rc == 0;
}

static void st_produced(void *arg, int64_t res)
{
    struct st_slot *s = arg;
    struct st_driver *d = s->d;
    uint64_t bytes = (uint64_t)d->batch * d->value_len;
    d->inflight--;
    if (res == -ENOBUFS) {
        st_park(s);
        st_driver_finish(d);
        return;
    } else if (res < 0) {
        st_driver_fail(d, (int)res);
    } else {
        rv_hist_record(&d->hist, rv_clock_now_ns() - s->sent_ns);
        d->produces++;
        d->records += d->batch;
        atomic_fetch_add_explicit(&d->acked_bytes, bytes, memory_order_relaxed);
        uint64_t turn = atomic_load_explicit(d->turns, memory_order_relaxed);
        d->completion_turns += turn != d->last_turn;
        d->last_turn = turn;
    }
    st_issue(s);
    st_unpark(d);
    st_driver_finish(d);
}

static void st_driver_start(void *arg)
{
    struct st_driver *d = arg;
    d->start_ns = rv_clock_now_ns();
    d->deadline_ns = d->duration_ns == UINT64_MAX ? UINT64_MAX : d->start_ns + d->duration_ns;
    for (uint32_t i = 0; i < d->window && !d->is_stopping; i++)
        st_issue(&d->slots[i]);
    d->is_stopping |= d->inflight == 0; /* nothing could be sent */
    st_driver_finish(d);
}

/* A driver for partition p of topic (its owner looked up), not started. */
static int st_driver_create(struct st_ctx *c, rv_runtime_t *rt, rv_store_t *st, const char *topic,
                            int32_t p, struct st_driver **out)
{
    struct rv_partition_info info;
    int rc = rv_partition_info(st, topic, p, &info);
    if (rc < 0)
        return rc;
    struct st_driver *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    rv_hist_init(&d->hist);
    d->st = st;
    d->topic = topic;
    d->partition = p;
    d->shard = info.shard;
    d->recs = c->recs;
    d->value_len = c->value_len_prepared;
    d->turns = &rt->shards[info.shard]->stats.loop_turns;
    for (uint32_t i = 0; i < ST_WINDOW; i++)
        d->slots[i].d = d;
    *out = d;
    return 0;
}

static uint64_t bench_window_bytes = ST_WINDOW_BYTES; /* --window-mb */

/* The window for batches of batch_bytes: ST_WINDOW, fewer for large batches. */
static uint32_t st_window(uint64_t batch_bytes)
{
    uint64_t w = bench_window_bytes / (batch_bytes ? batch_bytes : 1);
    return w < 2 ? 2 : w > ST_WINDOW ? ST_WINDOW : (uint32_t)w;
}

/* What a set of drivers did together. */
struct st_result {
    uint64_t records;
    uint64_t produces;
    uint64_t bytes; /* record payload */
    uint64_t elapsed_ns;
    uint64_t nobufs;
    uint64_t completion_turns;
    uint64_t shard_cpu_ns;       /* CPU time of the shards that drove it (st_cell_run) */
    double log_bytes_per_record; /* what the log stores per record, batch framing included */
    struct rv_hist *hist;
};

/* CPU time used so far by shards 0 .. count-1. */
static uint64_t st_shards_cpu_ns(rv_runtime_t *rt, uint32_t count)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < count && i < rt->n; i++)
        sum += bench_thread_cpu_ns(rt->shards[i]->thread);
    return sum;
}

/* Start every driver on its shard, wait for all, and sum them up into *r
 * (r->hist, if set, gets every latency). */
static int st_drive(rv_runtime_t *rt, struct st_driver **ds, uint32_t count, struct st_result *r)
{
    int rc = 0;
    uint32_t started = 0;
    for (; started < count && rc == 0; started++)
        rc = rv_runtime_submit(rt, ds[started]->shard, st_driver_start, ds[started]);
    started -= rc < 0;
    uint64_t first = UINT64_MAX, last = 0;
    for (uint32_t i = 0; i < started; i++) {
        struct st_driver *d = ds[i];
        bench_wait(&d->watch, NULL, d->duration_ns == UINT64_MAX ? 0 : d->duration_ns);
        rc = rc < 0 ? rc : d->err;
        first = d->start_ns < first ? d->start_ns : first;
        last = d->end_ns > last ? d->end_ns : last;
        r->records += d->records;
        r->produces += d->produces;
        r->bytes += d->records * d->value_len;
        r->nobufs += d->nobufs;
        r->completion_turns += d->completion_turns;
        if (r->hist != NULL)
            rv_hist_merge(r->hist, &d->hist);
    }
    r->elapsed_ns = last > first ? last - first : 0;
    if (rc < 0)
        fprintf(stderr, BENCH_NAME ": produce: %s\n", rv_strerror(rc));
    return rc;
}

/* What st_produce sends to each partition. */
struct st_produce_args {
    uint32_t batch; /* records per rv_produce */
    enum rv_acks acks;
    uint64_t duration_ns; /* UINT64_MAX: bytes_max alone */
    uint64_t bytes_max;   /* payload per partition */
};

/* Produce to every partition of topic (one driver each, on its owner shard):
 * batch records of the prepared value per call, bytes_max payload per
 * partition, for at most duration_ns. */
static int st_produce(struct st_ctx *c, rv_runtime_t *rt, rv_store_t *st, const char *topic,
                      int32_t partitions, const struct st_produce_args *a, struct st_result *r)
{
    struct st_driver *ds[ST_PARTS_DRIVEN] = {0};
    int rc = partitions <= (int32_t)ST_PARTS_DRIVEN ? 0 : -EINVAL;
    for (int32_t p = 0; p < partitions && rc == 0; p++) {
        rc = st_driver_create(c, rt, st, topic, p, &ds[p]);
        if (rc < 0)
            break;
        ds[p]->batch = a->batch;
        ds[p]->acks = a->acks;
        ds[p]->window =
            st_window((uint64_t)a->batch * (c->value_len_prepared + ST_RECORD_OVERHEAD));
        ds[p]->duration_ns = a->duration_ns;
        ds[p]->bytes_max = a->bytes_max;
    }
    if (rc == 0)
        rc = st_drive(rt, ds, (uint32_t)partitions, r);
    for (int32_t p = 0; p < partitions && p < (int32_t)ST_PARTS_DRIVEN; p++)
        free(ds[p]);
    return rc;
}

/* ---- storage: the produce matrix ------------------------------------------------------ */

/* One cell of the matrix. */
struct st_cell {
    uint32_t shards;
    uint32_t value_len;
    uint32_t batch;     /* asked for */
    uint32_t batch_fit; /* sent: fewer when batch records exceed max.message.bytes */
    enum rv_acks acks;
    bool is_sustained; /* ST_SUSTAIN_FACTOR times longer, without the byte budget */
};

static void st_cell_key(const struct st_cell *cell, char *out, size_t len)
{
    const char *v = cell->value_len == 100 ? "100b" : cell->value_len == 1024 ? "1k" : "16k";
    snprintf(out, len, "%c%u_%s_b%u_%s", cell->is_sustained ? 's' : 'p', cell->shards, v,
             cell->batch, st_acks_name(cell->acks));
}

/* "2 sh  1 KiB x16   all": the cell's row label. */
static void st_cell_label(const struct st_cell *cell, char *out, size_t len)
{
    char size[16];
    st_size_name(cell->value_len, size, sizeof(size));
    snprintf(out, len, "%s%u sh %6s x%-4u %s%s", cell->is_sustained ? "sustained " : "",
             cell->shards, size, cell->batch, st_acks_name(cell->acks),
             cell->batch_fit != cell->batch ? " (*)" : "");
}

/* The cell's figures (JSON) and its row in the table. */
static void st_cell_figures(const struct st_ctx *c, const struct st_cell *cell,
                            const struct st_result *r)
{
    char key[48], label[48], rate[32], unit[24], p50[24], p99[24], u50[8], u99[8];
    st_cell_key(cell, key, sizeof(key));
    double rec_s = bench_rate(r->records, r->elapsed_ns);
    double mb_s = bench_rate(r->bytes, r->elapsed_ns) / 1e6;
    double syncs = bench_rate(r->completion_turns, r->elapsed_ns);
    double cpu = r->elapsed_ns == 0
                     ? 0
                     : 100.0 * (double)r->shard_cpu_ns / ((double)r->elapsed_ns * cell->shards);
    fig_numf("storage", "", rec_s, "rec/s", "%s_records_per_s", key);
    fig_numf("storage", "", rec_s / cell->shards, "rec/s", "%s_records_per_s_per_shard", key);
    fig_numf("storage", "", mb_s, "MB/s", "%s_mb_per_s", key);
    fig_numf("storage", "", cell->batch_fit, "", "%s_batch_sent", key);
    fig_numf("storage", "", (double)rv_hist_percentile(r->hist, 50), "ns", "%s_p50_ns", key);
    fig_numf("storage", "", (double)rv_hist_percentile(r->hist, 99), "ns", "%s_p99_ns", key);
    fig_numf("storage", "", (double)r->nobufs, "", "%s_enobufs_retries", key);
    fig_numf("storage", "", cpu, "%", "%s_shard_cpu_pct", key);
    fig_format(rec_s, "rec/s", rate, sizeof(rate), unit, sizeof(unit));
    fig_format((double)rv_hist_percentile(r->hist, 50), "ns", p50, sizeof(p50), u50, sizeof(u50));
    fig_format((double)rv_hist_percentile(r->hist, 99), "ns", p99, sizeof(p99), u99, sizeof(u99));
    st_cell_label(cell, label, sizeof(label));
    char extra[64] = "";
    /* Every byte goes to the disk twice (WAL, segment): the records/s the
     * disk's sequential rate allows, and this cell's share of it. */
    double bound = c->seq_mbps > 0 && r->log_bytes_per_record > 0
                       ? c->seq_mbps * 1e6 / (2.0 * r->log_bytes_per_record)
                       : 0;
    fig_numf("storage", "", r->log_bytes_per_record, "B", "%s_log_bytes_per_record", key);
    fig_numf("storage", "", bound, "rec/s", "%s_disk_bound_records_per_s", key);
    fig_numf("storage", "", bound > 0 ? 100.0 * rec_s / bound : 0, "%", "%s_pct_of_disk_bound",
             key);
    if (cell->acks == RV_ACKS_ALL) {
        double pct = c->seq_mbps > 0 ? 100.0 * mb_s / c->seq_mbps : 0;
        fig_numf("storage", "", pct, "%", "%s_pct_of_disk_seq", key);
        fig_numf("storage", "", syncs, "op/s", "%s_sync_groups_per_s", key);
        snprintf(extra, sizeof(extra), "  %3.0f%% of disk, %5.0f syncs/s", pct, syncs);
    } else if (bound > 0) {
        snprintf(extra, sizeof(extra), "  %3.0f%% of the disk's bound", 100.0 * rec_s / bound);
    }
    fig_text("storage", key, label, "%6s %-7s %6.0f MB/s  p50 %5s %-2s p99 %5s %-2s cpu %3.0f%%%s",
             rate, unit, mb_s, p50, u50, p99, u99, cpu, extra);
}

/* Bytes the topic's log holds per record (0 when empty). */
static double st_log_bytes_per_record(rv_store_t *st, const char *topic, int32_t partitions)
{
    double bytes = 0, records = 0;
    for (int32_t p = 0; p < partitions; p++) {
        struct rv_partition_info info;
        if (rv_partition_info(st, topic, p, &info) == 0) {
            bytes += (double)info.size_bytes;
            records += (double)(info.high_watermark - info.log_start);
        }
    }
    return records > 0 ? bytes / records : 0;
}

/* Run one cell: a fresh store and topic with a partition per shard, a driver
 * on each owner, then delete the topic so the disk does not fill up. Each cell
 * has its own store so that no cell inherits another's pool, hot tier or WAL
 * position (a pool once kept its chunks in the classes that first used them:
 * problem B of docs/benchmarks.md, fixed since). */
static int st_cell_run(struct st_ctx *c, rv_runtime_t *rt, struct st_cell *cell)
{
    char topic[64];
    rv_store_t *st;
    st_cell_key(cell, topic, sizeof(topic));
    if (!bench_cell_wanted(c->o, topic))
        return 0; /* not asked for (--cell) */
    if (c->value_len_prepared != cell->value_len)
        st_prepare_records(c, cell->value_len);
    cell->batch_fit = st_batch_fit(cell->batch, cell->value_len);
    int rc = st_store_open(rt, 0, &st, NULL);
    if (rc < 0)
        return rc;
    rc = st_topic_create(st, topic, (int32_t)cell->shards);
    if (rc < 0) {
        st_store_close(st);
        return rc;
    }
    struct rv_hist *h = malloc(sizeof(*h));
    struct st_result r = {.hist = h};
    struct st_produce_args a = {.batch = cell->batch_fit,
                                .acks = cell->acks,
                                .duration_ns = c->cell_ns,
                                .bytes_max = ST_CELL_BYTES / cell->shards};
    if (cell->is_sustained) {
        a.duration_ns = c->cell_ns * ST_SUSTAIN_FACTOR;
        a.bytes_max = UINT64_MAX;
    }
    rc = h == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        rv_hist_init(h);
        uint64_t cpu0 = st_shards_cpu_ns(rt, cell->shards);
        rc = st_produce(c, rt, st, topic, (int32_t)cell->shards, &a, &r);
        r.shard_cpu_ns = st_shards_cpu_ns(rt, cell->shards) - cpu0;
        r.log_bytes_per_record = st_log_bytes_per_record(st, topic, (int32_t)cell->shards);
    }
    if (rc == 0) {
        st_cell_figures(c, cell, &r);
    } else {
        char label[48];
        st_cell_label(cell, label, sizeof(label));
        fig_text("storage", topic, label, "failed: %s (after %llu records)", rv_strerror(rc),
                 (unsigned long long)r.records);
        fig_numf("storage", "", (double)rc, "", "%s_error", topic);
    }
    free(h);
    rc = st_topic_delete(st, topic); /* a failed cell does not stop the matrix */
    st_store_close(st);
    return rc;
}

/* Check that the partitions of a 1-per-shard topic are spread one per shard. */
static void st_check_placement(rv_store_t *st, uint32_t shards)
{
    uint32_t seen = 0;
    if (st_topic_create(st, "placement", (int32_t)shards) < 0)
        return;
    for (uint32_t p = 0; p < shards && p < 32; p++) {
        struct rv_partition_info info;
        if (rv_partition_info(st, "placement", (int32_t)p, &info) == 0 && info.shard < 32)
            seen |= 1u << info.shard;
    }
    fig_numf("storage", "", (double)__builtin_popcount(seen), "", "p%u_owner_shards", shards);
    (void)st_topic_delete(st, "placement");
}

/* The matrix on a runtime of `shards` shards: value sizes x batch sizes x acks. */
static int st_matrix_run(struct st_ctx *c, uint32_t shards)
{
    static const uint32_t sizes[] = {100, 1024, 16384};
    static const uint32_t batches[] = {1, 16, 1000};
    static const enum rv_acks acks[] = {RV_ACKS_NONE, RV_ACKS_LEADER, RV_ACKS_ALL};
    char dir[PATH_MAX];
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    st_data_dir(c, "produce", dir, sizeof(dir));
    int rc = st_runtime_open(c, shards, dir, &rt);
    if (rc < 0)
        return rc;
    rc = st_store_open(rt, 0, &st, NULL);
    if (rc == 0)
        st_check_placement(st, shards);
    st_store_close(st); /* a store per cell: see st_cell_run */
    for (size_t i = 0; i < RV_ARRAY_LEN(sizes) && rc == 0; i++) {
        for (size_t j = 0; j < RV_ARRAY_LEN(batches) && rc == 0; j++) {
            for (size_t k = 0; k < RV_ARRAY_LEN(acks) && rc == 0; k++) {
                struct st_cell cell = {
                    .shards = shards, .value_len = sizes[i], .batch = batches[j], .acks = acks[k]};
                rc = st_cell_run(c, rt, &cell);
            }
        }
    }
    /* The targets' cells once more, long enough for the page cache to fill and
     * writeback to set the pace. */
    struct st_cell sustained[] = {
        {.shards = shards, .value_len = 100, .batch = 1000, .acks = RV_ACKS_NONE},
        {.shards = shards, .value_len = 1024, .batch = 1000, .acks = RV_ACKS_ALL},
    };
    for (size_t i = 0; i < RV_ARRAY_LEN(sustained) && rc == 0; i++) {
        sustained[i].is_sustained = true;
        rc = st_cell_run(c, rt, &sustained[i]);
    }
    st_runtime_close(rt);
    st_rm_tree(dir);
    return rc;
}

/* ---- storage: fetch --------------------------------------------------------------------- */

/* A consumer task on the partition's owner: one rv_fetch of ST_FETCH_MAX_BYTES
 * at a time from `next_offset` to `end_offset`, every record read with
 * rv_fetch_next (offsets checked; values not touched). */
struct st_reader {
    rv_store_t *st;
    const char *topic;
    int32_t partition;
    int64_t next_offset;
    int64_t end_offset;
    uint64_t start_ns;
    uint64_t end_ns;
    uint64_t records;
    uint64_t bytes;
    uint64_t fetches;
    int err;
    struct bench_watch watch;
};

static void st_read_next(struct st_reader *r);

static void st_read_finish(struct st_reader *r, int err)
{
    r->err = r->err < 0 ? r->err : err;
    r->end_ns = rv_clock_now_ns();
    bench_set_done(&r->watch);
}

static void st_fetched(void *arg, rv_fetch_result_t *res, int err)
{
    struct st_reader *r = arg;
    if (err < 0) {
        st_read_finish(r, err);
        return;
    }
    struct rv_record_view v;
    int64_t before = r->next_offset;
    int rc;
    while ((rc = rv_fetch_next(res, &v)) == 1) {
        if (v.offset != r->next_offset) {
            rc = -EBADMSG; /* a gap or a repeat: the log is not what was written */
            break;
        }
        r->next_offset++;
        r->records++;
        r->bytes += v.value_len > 0 ? (uint64_t)v.value_len : 0;
    }
    rv_fetch_release(res);
    r->fetches++;
    if (rc == 0 && r->next_offset == before)
        rc = -EIO; /* nothing new below the end: stop rather than spin */
    if (rc < 0) {
        st_read_finish(r, rc);
        return;
    }
    st_read_next(r);
}

static void st_read_next(struct st_reader *r)
{
    if (r->next_offset >= r->end_offset) {
        st_read_finish(r, 0);
        return;
    }
    int rc =
        rv_fetch(r->st, r->topic, r->partition, r->next_offset, ST_FETCH_MAX_BYTES, st_fetched, r);
    if (rc < 0)
        st_read_finish(r, rc);
}

static void st_read_start(void *arg)
{
    struct st_reader *r = arg;
    r->start_ns = rv_clock_now_ns();
    st_read_next(r);
}

/* Read partition 0 of topic from offset 0 to end on its owner and record
 * <key>_mb_per_s and <key>_records_per_s with a table row. */
static int st_read_measure(rv_store_t *st, rv_runtime_t *rt, const char *topic, int64_t end,
                           const char *key, const char *label)
{
    struct rv_partition_info info;
    int rc = rv_partition_info(st, topic, 0, &info);
    struct st_reader *r = calloc(1, sizeof(*r));
    rc = rc < 0 ? rc : r == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        *r = (struct st_reader){.st = st, .topic = topic, .end_offset = end};
        rc = rv_runtime_submit(rt, info.shard, st_read_start, r);
    }
    if (rc == 0) {
        bench_wait(&r->watch, NULL, 0);
        rc = r->err;
    }
    if (rc == 0) {
        double mb_s = bench_rate(r->bytes, r->end_ns - r->start_ns) / 1e6;
        double rec_s = bench_rate(r->records, r->end_ns - r->start_ns);
        char rate[32], unit[24];
        fig_format(rec_s, "rec/s", rate, sizeof(rate), unit, sizeof(unit));
        fig_numf("storage", "", rec_s, "rec/s", "%s_records_per_s", key);
        fig_numf("storage", "", mb_s, "MB/s", "%s_mb_per_s", key);
        fig_numf("storage", "", (double)r->fetches, "", "%s_fetches", key);
        fig_text("storage", key, label, "%6s %-7s %6.0f MB/s  (%llu MB in %llu fetches)", rate,
                 unit, mb_s, (unsigned long long)(r->bytes / 1000000),
                 (unsigned long long)r->fetches);
    } else {
        fprintf(stderr, BENCH_NAME ": fetch %s: %s\n", topic, rv_strerror(rc));
    }
    free(r);
    return rc;
}

/* The fetch data sets: value size and records per produce. */
static const struct {
    uint32_t value_len;
    uint32_t batch;
    const char *key;
} st_fetch_sets[] = {{100, 1000, "100b_b1000"}, {1024, 16, "1k_b16"}, {16384, 16, "16k_b16"}};

/* Wait until partition 0 of topic shows `end` records: acks=leader completes
 * before the WAL write, and a fetch sees a batch only after it. */
static int st_wait_visible(rv_store_t *st, const char *topic, int64_t end)
{
    for (int i = 0; i < 100000; i++) {
        int64_t hw = rv_list_offset(st, topic, 0, RV_OFFSET_LATEST);
        if (hw < 0 || hw >= end)
            return hw < 0 ? (int)hw : 0;
        usleep(100);
    }
    return -ETIMEDOUT;
}

/* Produce ST_FETCH_BYTES of each set into its own topic and read it back at
 * once, from the hot tier. The records written go to *ends. */
static int st_fetch_hot(struct st_ctx *c, rv_runtime_t *rt, rv_store_t *st, int64_t *ends)
{
    int rc = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(st_fetch_sets) && rc == 0; i++) {
        char topic[64], key[48], label[48], size[16];
        snprintf(topic, sizeof(topic), "f-%s", st_fetch_sets[i].key);
        st_prepare_records(c, st_fetch_sets[i].value_len);
        struct st_result r = {0};
        struct st_produce_args a = {.batch = st_fetch_sets[i].batch,
                                    .acks = RV_ACKS_LEADER,
                                    .duration_ns = UINT64_MAX,
                                    .bytes_max = ST_FETCH_BYTES};
        rc = st_topic_create(st, topic, 1);
        if (rc == 0)
            rc = st_produce(c, rt, st, topic, 1, &a, &r);
        if (rc < 0)
            break;
        ends[i] = (int64_t)r.records;
        rc = st_wait_visible(st, topic, ends[i]);
        if (rc < 0)
            break;
        snprintf(key, sizeof(key), "fetch_hot_%s", st_fetch_sets[i].key);
        st_size_name(st_fetch_sets[i].value_len, size, sizeof(size));
        snprintf(label, sizeof(label), "fetch hot tier, %s x%u", size, st_fetch_sets[i].batch);
        rc = st_read_measure(st, rt, topic, ends[i], key, label);
    }
    return rc;
}

/* Read every set again after a restart with a 1 MiB hot tier: first with the
 * segment files pushed out of the page cache (the disk), then again (the
 * page cache). */
static int st_fetch_disk(struct st_ctx *c, rv_runtime_t *rt, rv_store_t **st, const char *dir,
                         const int64_t *ends)
{
    static const char *const passes[] = {"disk", "cache"};
    static const char *const labels[] = {"from disk (cold)", "from segments (page cache)"};
    st_store_close(*st);
    *st = NULL;
    if (st_is_wedged)
        return -ETIMEDOUT;
    st_drop_cache(dir);
    int rc = st_store_open(rt, ST_HOT_SMALL, st, NULL);
    for (size_t pass = 0; pass < RV_ARRAY_LEN(passes) && rc == 0; pass++) {
        for (size_t i = 0; i < RV_ARRAY_LEN(st_fetch_sets) && rc == 0; i++) {
            char topic[64], key[48], label[48], size[16];
            snprintf(topic, sizeof(topic), "f-%s", st_fetch_sets[i].key);
            snprintf(key, sizeof(key), "fetch_%s_%s", passes[pass], st_fetch_sets[i].key);
            st_size_name(st_fetch_sets[i].value_len, size, sizeof(size));
            snprintf(label, sizeof(label), "fetch %s, %s", labels[pass], size);
            rc = st_read_measure(*st, rt, topic, ends[i], key, label);
        }
    }
    (void)c;
    return rc;
}

/* Fetch throughput on one shard: hot tier, then disk after a restart. */
static int st_fetch_run(struct st_ctx *c)
{
    char dir[PATH_MAX];
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    int64_t ends[RV_ARRAY_LEN(st_fetch_sets)] = {0};
    st_data_dir(c, "fetch", dir, sizeof(dir));
    int rc = st_runtime_open(c, 1, dir, &rt);
    if (rc < 0)
        return rc;
    rc = st_store_open(rt, 0, &st, NULL);
    if (rc == 0)
        rc = st_fetch_hot(c, rt, st, ends);
    if (rc == 0)
        rc = st_fetch_disk(c, rt, &st, dir, ends);
    st_store_close(st);
    st_runtime_close(rt);
    st_rm_tree(dir);
    return rc;
}

/* ---- storage: recovery ------------------------------------------------------------------ */

/* The sum over shards of the LSNs in DATA/wal/shard-<k>/checkpoint. */
static uint64_t st_ckpt_sum(const char *dir, uint32_t shards)
{
    uint64_t sum = 0;
    for (uint32_t k = 0; k < shards; k++) {
        char path[PATH_MAX];
        unsigned long long lsn = 0;
        snprintf(path, sizeof(path), "%s/wal/shard-%u/checkpoint", dir, k);
        FILE *f = fopen(path, "r");
        if (f != NULL && fscanf(f, "%llu", &lsn) == 1)
            sum += lsn;
        if (f != NULL)
            fclose(f);
    }
    return sum;
}

/* Records stored in topic "r" (partitions 0..shards-1): the sum of their high
 * watermarks, or -errno. */
static int64_t st_records_stored(rv_store_t *st, uint32_t shards)
{
    int64_t sum = 0;
    for (uint32_t p = 0; p < shards; p++) {
        struct rv_partition_info info;
        int rc = rv_partition_info(st, "r", (int32_t)p, &info);
        if (rc < 0)
            return rc;
        sum += info.high_watermark;
    }
    return sum;
}

/* Write `bytes` of 1 KiB records (1000 per produce, acks=leader) into topic
 * "r", one partition per shard, and report the rate. */
static int st_recovery_fill(struct st_ctx *c, rv_runtime_t *rt, rv_store_t *st, uint32_t shards,
                            uint64_t bytes)
{
    st_prepare_records(c, 1024);
    struct st_result r = {0};
    struct st_produce_args a = {.batch = 1000,
                                .acks = RV_ACKS_LEADER,
                                .duration_ns = UINT64_MAX,
                                .bytes_max = bytes / shards};
    int rc = st_topic_create(st, "r", (int32_t)shards);
    if (rc == 0)
        rc = st_produce(c, rt, st, "r", (int32_t)shards, &a, &r);
    if (rc == 0) {
        double mb_s = bench_rate(r.bytes, r.elapsed_ns) / 1e6;
        fig_num("storage", "recovery_log_bytes", "", (double)r.bytes, "");
        fig_num("storage", "recovery_fill_mb_per_s", "", mb_s, "MB/s");
        fig_text("storage", "recovery_log", "recovery: log written",
                 "%.0f MiB of 1 KiB records, %u partition%s, at %.0f MB/s (acks=leader)",
                 (double)r.bytes / 1048576.0, shards, shards == 1 ? "" : "s", mb_s);
    }
    return rc;
}

/* Close and reopen the store, timing both; with is_cold, the files leave the
 * page cache in between. */
static int st_reopen_timed(rv_runtime_t *rt, rv_store_t **st, const char *dir, bool is_cold,
                           const char *key, const char *label)
{
    uint64_t t0 = rv_clock_now_ns(), took;
    st_store_close(*st);
    *st = NULL;
    if (st_is_wedged)
        return -ETIMEDOUT;
    uint64_t close_ns = rv_clock_now_ns() - t0;
    if (is_cold)
        st_drop_cache(dir);
    int rc = st_store_open(rt, 0, st, &took);
    if (rc < 0)
        return rc;
    char num[32], unit[24];
    fig_format((double)took, "ns", num, sizeof(num), unit, sizeof(unit));
    fig_numf("storage", "", (double)took, "ns", "%s_open_ns", key);
    fig_numf("storage", "", (double)close_ns, "ns", "%s_close_ns", key);
    struct bench_fig *f = fig_text("storage", key, label, "rv_store_open %s %s", num, unit);
    fig_format((double)close_ns, "ns", num, sizeof(num), unit, sizeof(unit));
    snprintf(f->text + strlen(f->text), sizeof(f->text) - strlen(f->text),
             " (rv_store_close before it: %s %s)", num, unit);
    return 0;
}

/* The child of the kill test: open the store, produce 1 KiB records x16 with
 * acks=all to every partition, and report the acknowledged payload on `wfd`
 * every ST_CHILD_REPORT_NS until killed. Never returns. */
static void __attribute__((noreturn))
st_child_run(struct st_ctx *c, uint32_t shards, const char *dir, int wfd)
{
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    struct st_driver *ds[ST_PARTS_DRIVEN] = {0};
    int rc = st_runtime_open(c, shards, dir, &rt);
    if (rc == 0)
        rc = st_store_open(rt, 0, &st, NULL);
    st_prepare_records(c, 1024);
    for (uint32_t p = 0; p < shards && rc == 0; p++) {
        rc = st_driver_create(c, rt, st, "r", (int32_t)p, &ds[p]);
        if (rc == 0) {
            ds[p]->batch = 16;
            ds[p]->acks = RV_ACKS_ALL;
            ds[p]->window = ST_WINDOW;
            ds[p]->duration_ns = UINT64_MAX;
            ds[p]->bytes_max = UINT64_MAX;
            rc = rv_runtime_submit(rt, ds[p]->shard, st_driver_start, ds[p]);
        }
    }
    while (rc == 0) {
        uint64_t acked = 0;
        for (uint32_t p = 0; p < shards; p++)
            acked += atomic_load_explicit(&ds[p]->acked_bytes, memory_order_relaxed);
        if (write(wfd, &acked, sizeof(acked)) != (ssize_t)sizeof(acked))
            _exit(1);
        bench_sleep_ns(ST_CHILD_REPORT_NS);
    }
    _exit(1); /* the parent sees the pipe close early */
}

/* Read the child's reports until it has produced for ST_KILL_AFTER_NS, then
 * SIGKILL it. *acked gets the last acknowledged payload it reported. */
static int st_child_kill(pid_t pid, int rfd, uint64_t *acked)
{
    uint64_t first_ns = 0, v;
    int rc = -ECHILD;
    for (;;) {
        ssize_t n = read(rfd, &v, sizeof(v));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(v))
            break; /* the child failed */
        *acked = v;
        uint64_t now = rv_clock_now_ns();
        first_ns = first_ns != 0 ? first_ns : now;
        if (now - first_ns >= ST_KILL_AFTER_NS) {
            rc = 0;
            break;
        }
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return rc;
}

static void st_kill_figures(uint64_t open_ns, uint64_t acked_bytes, uint64_t wal_bytes,
                            int64_t records_added)
{
    char num[32], unit[24];
    uint64_t acked_records = acked_bytes / 1024;
    bool is_complete = records_added >= (int64_t)acked_records;
    fig_num("storage", "recovery_kill_open_ns", "", (double)open_ns, "ns");
    fig_num("storage", "recovery_kill_wal_replayed_bytes", "", (double)wal_bytes, "");
    fig_num("storage", "recovery_kill_acked_bytes", "", (double)acked_bytes, "");
    fig_num("storage", "recovery_kill_records_back", "", (double)records_added, "");
    fig_num("storage", "recovery_kill_acked_records_lost", "",
            is_complete ? 0 : (double)(acked_records - (uint64_t)records_added), "");
    fig_format((double)open_ns, "ns", num, sizeof(num), unit, sizeof(unit));
    fig_text("storage", "recovery_kill", "recovery after SIGKILL (acks=all)",
             "rv_store_open %s %s, %.0f MB of WAL replayed", num, unit, (double)wal_bytes / 1e6);
    fig_text("storage", "recovery_kill_check", "  acknowledged records",
             "%llu (%.0f MB in %.1f s before the kill): %s", (unsigned long long)acked_records,
             (double)acked_bytes / 1e6, (double)ST_KILL_AFTER_NS / 1e9,
             is_complete ? "all back" : "SOME LOST");
}

/* Fork a child that produces with acks=all, SIGKILL it, then time
 * rv_store_open here (it replays the WAL), and check every acknowledged
 * record came back. No runtime may be open in this process. */
static int st_kill_measure(struct st_ctx *c, uint32_t shards, const char *dir, int64_t before)
{
    int fds[2];
    uint64_t acked = 0, took;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        st_child_run(c, shards, dir, fds[1]);
    }
    close(fds[1]);
    int rc = pid < 0 ? -errno : st_child_kill(pid, fds[0], &acked);
    close(fds[0]);
    if (rc < 0) {
        fprintf(stderr, BENCH_NAME ": the producing child failed before the kill\n");
        return rc;
    }
    uint64_t ckpt_before = st_ckpt_sum(dir, shards);
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    rc = st_runtime_open(c, shards, dir, &rt);
    if (rc < 0)
        return rc;
    rc = st_store_open(rt, 0, &st, &took);
    int64_t after = rc == 0 ? st_records_stored(st, shards) : rc;
    st_store_close(st);
    st_runtime_close(rt);
    if (rc < 0 || after < 0)
        return rc < 0 ? rc : (int)after;
    st_kill_figures(took, acked, st_ckpt_sum(dir, shards) - ckpt_before, after - before);
    return 0;
}

/* Recovery: a log of `bytes`, reopened after a clean close (page cache warm,
 * then cold), then after a SIGKILL of a process producing with acks=all. */
static int st_recovery_run(struct st_ctx *c, uint64_t bytes)
{
    uint32_t shards = c->o->shard_count < ST_PARTS_DRIVEN ? c->o->shard_count : ST_PARTS_DRIVEN;
    char dir[PATH_MAX];
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    st_data_dir(c, "recovery", dir, sizeof(dir));
    int rc = st_runtime_open(c, shards, dir, &rt);
    if (rc < 0)
        return rc;
    rc = st_store_open(rt, 0, &st, NULL);
    if (rc == 0)
        rc = st_recovery_fill(c, rt, st, shards, bytes);
    if (rc == 0)
        rc = st_reopen_timed(rt, &st, dir, false, "recovery_clean_warm",
                             "recovery after clean close, cached");
    if (rc == 0)
        rc = st_reopen_timed(rt, &st, dir, true, "recovery_clean_cold",
                             "recovery after clean close, cold");
    int64_t before = rc == 0 ? st_records_stored(st, shards) : 0;
    rc = before < 0 ? (int)before : rc;
    st_store_close(st);
    st_runtime_close(rt);
    if (rc == 0)
        rc = st_kill_measure(c, shards, dir, before);
    st_rm_tree(dir);
    return rc;
}

/* ---- storage: many partitions ----------------------------------------------------------- */

/* One record to every partition from this (outside) thread, at most
 * ST_PART_WINDOW in flight; callbacks run on the owner shards. */
struct st_fanout {
    _Atomic uint32_t inflight;
    _Atomic uint64_t failed;
    _Atomic int err; /* the first failure */
};

static void st_fanout_done(void *arg, int64_t res)
{
    struct st_fanout *f = arg;
    if (res < 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&f->err, &expected, (int)res);
        atomic_fetch_add(&f->failed, 1);
    }
    atomic_fetch_sub(&f->inflight, 1);
}

/* Send one record to each of n partitions; the records that failed (and the
 * first error in *err) come back. */
static uint64_t st_fanout(rv_store_t *st, const char *topic, uint32_t n,
                          const struct rv_record *rec, int *err)
{
    struct st_fanout f = {0};
    uint64_t refused = 0;
    for (uint32_t p = 0; p < n; p++) {
        while (atomic_load(&f.inflight) >= ST_PART_WINDOW)
            bench_sleep_ns(20000);
        atomic_fetch_add(&f.inflight, 1);
        int rc = rv_produce(st, topic, (int32_t)p, rec, 1, RV_ACKS_LEADER, st_fanout_done, &f);
        if (rc < 0) {
            atomic_fetch_sub(&f.inflight, 1);
            int expected = 0;
            atomic_compare_exchange_strong(&f.err, &expected, rc);
            refused++;
        }
    }
    while (atomic_load(&f.inflight) > 0)
        bench_sleep_ns(100000);
    *err = atomic_load(&f.err);
    return refused + atomic_load(&f.failed);
}

/* Raise the soft descriptor limit to the hard one; the soft limit in use. */
static uint64_t st_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl); /* best effort: report what holds */
    (void)getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

/* Where the partition test stands: RSS and descriptors. */
struct st_mark {
    uint64_t rss_kib;
    int64_t fds;
    uint64_t now_ns;
};

/* Two descriptors kept for reading /proc when the store has used up the
 * rest (-1: none). */
static int st_fd_reserve[2] = {-1, -1};

static void st_fd_reserve_take(void)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(st_fd_reserve); i++) {
        if (st_fd_reserve[i] < 0)
            st_fd_reserve[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

static void st_fd_reserve_release(void)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(st_fd_reserve); i++) {
        if (st_fd_reserve[i] >= 0)
            close(st_fd_reserve[i]);
        st_fd_reserve[i] = -1;
    }
}

static void st_mark_take(struct st_mark *m)
{
    st_fd_reserve_release(); /* the shards may take them meanwhile: best effort */
    m->rss_kib = st_rss_kib();
    m->fds = st_fd_count();
    st_fd_reserve_take();
    m->now_ns = rv_clock_now_ns();
}

/* RSS and descriptors per partition of b against base, as figures. */
static void st_mark_figures(const struct st_mark *base, const struct st_mark *b, uint32_t n,
                            const char *key, const char *label)
{
    double rss = ((double)b->rss_kib - (double)base->rss_kib) * 1024.0 / n;
    double fds = (double)(b->fds - base->fds);
    char text_key[48];
    snprintf(text_key, sizeof(text_key), "parts_%s_mem", key);
    if (b->rss_kib == 0 || base->rss_kib == 0 || b->fds < 0 || base->fds < 0) {
        fig_text("storage", text_key, label, "RSS or descriptors unreadable (none left?)");
        return;
    }
    fig_numf("storage", "", rss, "", "parts_%s_rss_bytes_per_partition", key);
    fig_numf("storage", "", (double)b->rss_kib * 1024.0, "", "parts_%s_rss_bytes", key);
    fig_numf("storage", "", fds, "", "parts_%s_fds", key);
    fig_text("storage", text_key, label, "RSS +%.0f bytes/partition (%.0f MiB in all), fds +%.0f",
             rss, (double)b->rss_kib / 1024.0, fds);
}

static void st_parts_time(const char *key, const char *label, uint64_t ns, uint32_t n)
{
    char num[32], unit[24];
    fig_format((double)ns, "ns", num, sizeof(num), unit, sizeof(unit));
    fig_numf("storage", "", (double)ns, "ns", "parts_%s_ns", key);
    char text_key[48];
    snprintf(text_key, sizeof(text_key), "parts_%s_time", key);
    fig_text("storage", text_key, label, "%s %s (%.1f us/partition)", num, unit,
             (double)ns / 1e3 / n);
}

/* The partition test's stages, each measured where it ends. */
struct st_parts {
    uint32_t n;
    struct st_mark base;
    struct st_mark created;
    struct st_mark written;
    struct st_mark idle;
    struct st_mark closed;
    struct st_mark reopened;
};

/* Create the topic and write one record to each partition: 0, or the
 * creation's error. Failed records are reported, not fatal. */
static int st_parts_write(struct st_ctx *c, rv_store_t *st, struct st_parts *t)
{
    int err = 0;
    st_mark_take(&t->base);
    int rc = st_topic_create(st, "many", (int32_t)t->n);
    st_mark_take(&t->created);
    if (rc < 0) {
        fig_text("storage", "parts_create", "  rv_topic_create", "failed: %s",
                 rv_err_msg()[0] != '\0' ? rv_err_msg() : rv_strerror(rc));
        return rc;
    }
    st_parts_time("create", "  rv_topic_create", t->created.now_ns - t->base.now_ns, t->n);
    st_prepare_records(c, 100);
    uint64_t failed = st_fanout(st, "many", t->n, c->recs, &err);
    st_mark_take(&t->written);
    st_parts_time("write", "  one record to each", t->written.now_ns - t->created.now_ns, t->n);
    fig_num("storage", "parts_write_failed", "", (double)failed, "");
    if (failed > 0)
        fig_text("storage", "parts_write_failed_text", "  records that failed",
                 "%llu of %u (first: %s)", (unsigned long long)failed, t->n, rv_strerror(err));
    st_mark_figures(&t->base, &t->written, t->n, "written", "  after create + write");
    return 0;
}

/* Partition logs loaded on the shards, summed. */
struct st_loaded {
    rv_store_t *st;
    uint32_t loaded;
    sem_t done;
};

static void st_loaded_on_shard(void *arg)
{
    struct st_loaded *a = arg;
    struct rv_store_shard_stats s;
    rv_store_shard_stats(a->st, &s);
    a->loaded = s.logs_loaded;
    sem_post(&a->done);
}

static uint32_t st_logs_loaded(rv_runtime_t *rt, rv_store_t *st, uint32_t shards)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < shards; i++) {
        struct st_loaded a = {.st = st};
        sem_init(&a.done, 0, 0);
        if (rv_runtime_submit(rt, i, st_loaded_on_shard, &a) == 0) {
            while (sem_wait(&a.done) < 0 && errno == EINTR)
                ;
            sum += a.loaded;
        }
        sem_destroy(&a.done);
    }
    return sum;
}

/* Wait until the idle sweep unloaded every partition (ST_PARTS_IDLE_MS after
 * its last use, at the sweep's pace), then measure again. */
static void st_parts_idle(rv_runtime_t *rt, rv_store_t *st, struct st_parts *t, uint32_t shards)
{
    uint32_t loaded = st_logs_loaded(rt, st, shards);
    uint64_t t0 = rv_clock_now_ns();
    while (loaded > 0 && rv_clock_now_ns() - t0 < ST_PARTS_IDLE_WAIT_S * 1000000000ull) {
        usleep(100000);
        loaded = st_logs_loaded(rt, st, shards);
    }
    st_mark_take(&t->idle);
    fig_num("storage", "parts_idle_still_loaded", "", loaded, "");
    if (loaded > 0) {
        fig_text("storage", "parts_idle_mem", "  after idle unload",
                 "%u of %u partitions still loaded after %u s", loaded, t->n, ST_PARTS_IDLE_WAIT_S);
        return;
    }
    st_parts_time("unload", "  all unloaded (idle)", t->idle.now_ns - t->written.now_ns, t->n);
    st_mark_figures(&t->base, &t->idle, t->n, "idle", "  after idle unload");
}

/* Close the store and open it again, timing both; *st is the new store or
 * NULL. */
static void st_parts_reopen(rv_runtime_t *rt, rv_store_t **st, struct st_parts *t)
{
    st_store_close(*st);
    *st = NULL;
    if (st_is_wedged)
        return;
    st_mark_take(&t->closed);
    st_parts_time("close", "  rv_store_close", t->closed.now_ns - t->idle.now_ns, t->n);
    fig_num("storage", "parts_closed_fds", "", (double)(t->closed.fds - t->base.fds), "");
    int rc = st_store_open(rt, 0, st, NULL);
    st_mark_take(&t->reopened);
    if (rc < 0) {
        fig_text("storage", "parts_closed_fds_text", "  descriptors after rv_store_close", "+%lld",
                 (long long)(t->closed.fds - t->base.fds));
        fig_text("storage", "parts_reopen_time", "  rv_store_open", "failed: %s",
                 rv_err_msg()[0] != '\0' ? rv_err_msg() : rv_strerror(rc));
        return;
    }
    st_parts_time("reopen", "  rv_store_open", t->reopened.now_ns - t->closed.now_ns, t->n);
    st_mark_figures(&t->base, &t->reopened, t->n, "reopened", "  after reopen");
    struct rv_partition_info info = {0};
    rc = rv_partition_info(*st, "many", (int32_t)t->n - 1, &info);
    fig_num("storage", "parts_last_high_watermark", "", rc < 0 ? rc : (double)info.high_watermark,
            "");
}

/* N partitions in one topic: create, one record each, RSS and descriptors,
 * then close and reopen them all. A failure is reported, not fatal. */
static int st_parts_run(struct st_ctx *c, uint32_t n)
{
    uint32_t shards = c->o->shard_count;
    uint64_t nofile = st_raise_nofile();
    char dir[PATH_MAX];
    rv_runtime_t *rt;
    rv_store_t *st = NULL;
    struct st_parts t = {.n = n};
    st_data_dir(c, "partitions", dir, sizeof(dir));
    st_fd_reserve_take();
    fig_num("storage", "parts_count", "", n, "");
    fig_num("storage", "parts_nofile_limit", "", (double)nofile, "");
    fig_text("storage", "parts", "partitions",
             "%u in one topic on %u shard%s, one 100 B record each (acks=leader, %u in flight)", n,
             shards, shards == 1 ? "" : "s", ST_PART_WINDOW);
    int rc = st_runtime_open(c, shards, dir, &rt);
    if (rc < 0)
        return rc;
    st_idle_unload_ms = ST_PARTS_IDLE_MS;
    rc = st_store_open(rt, 0, &st, NULL);
    if (rc == 0)
        rc = st_parts_write(c, st, &t);
    if (rc == 0)
        st_parts_idle(rt, st, &t, shards);
    if (rc == 0)
        st_parts_reopen(rt, &st, &t);
    st_idle_unload_ms = 0;
    st_store_close(st);
    st_runtime_close(rt);
    st_fd_reserve_release();
    st_rm_tree(dir);
    return 0;
}

/* ---- storage: limits, targets, the benchmark ------------------------------------------ */

/* The disk's limits from this run's io section; when it did not run, a quick
 * fio (or, without fio, our own io_uring) measurement now. */
static int st_limits(struct st_ctx *c, const uint8_t *buf)
{
    const char *src = "fio, io section";
    if (fig_find("io", "fio") == NULL)
        fio_measure(c->o, c->dir, ST_LIMIT_SEQ_BYTES, c->o->cpu_ids[0]);
    /* The faster of fio's buffered and direct sequential writes: what the
     * disk does at least (buffered swings with the page cache's state). */
    c->seq_mbps = fig_value("io", "fio_seq_write_mb_per_s");
    double direct_mbps = fig_value("io", "fio_seq_direct_mb_per_s");
    if (direct_mbps > c->seq_mbps)
        c->seq_mbps = direct_mbps;
    c->fsync_ops = fig_value("io", "fio_fsync_ops_per_s");
    if (c->seq_mbps <= 0 && fig_find("io", "uring_seq_write_mb_per_s") == NULL) {
        struct io_backend_run b = {.backend = RV_IO_URING,
                                   .name = "uring",
                                   .label = "io_uring",
                                   .poll_us = 0,
                                   .dir = c->dir,
                                   .buf = buf,
                                   .seq_bytes_max = ST_LIMIT_SEQ_BYTES};
        int rc = io_backend_measure(c->o, &b);
        if (rc < 0)
            return rc;
    }
    if (c->seq_mbps <= 0) {
        src = "rivven io_uring, io section (no fio)";
        c->seq_mbps = fig_value("io", "uring_seq_write_mb_per_s");
        c->fsync_ops = fig_value("io", "uring_fsync_ops_per_s");
    }
    fig_num("storage", "limit_seq_write_mb_per_s", "", c->seq_mbps, "MB/s");
    fig_num("storage", "limit_fsync_ops_per_s", "", c->fsync_ops, "op/s");
    fig_text("storage", "limits", "disk limits (same run)",
             "seq 1 MiB write + fsync %.0f MB/s (the faster of buffered and O_DIRECT), 4 KiB "
             "write + fdatasync %.0f op/s (%s)",
             c->seq_mbps, c->fsync_ops, src);
    return 0;
}

/* The best pct_of_disk_seq of the short 1 KiB acks=all cells, and where. */
static double st_best_disk_pct(char *where, size_t len)
{
    static const uint32_t batches[] = {1, 16, 1000};
    double best = 0;
    for (uint32_t sh = 1; sh <= 2; sh++) {
        for (size_t i = 0; i < RV_ARRAY_LEN(batches); i++) {
            char key[48];
            snprintf(key, sizeof(key), "p%u_1k_b%u_all_pct_of_disk_seq", sh, batches[i]);
            const struct bench_fig *f = fig_find("storage", key);
            if (f != NULL && f->value > best) {
                best = f->value;
                snprintf(where, len, "%u sh x%u", sh, batches[i]);
            }
        }
    }
    return best;
}

/* A figure's value / scale as text with `prec` decimals and `suffix`, or
 * "n/a" when the figure is missing (a shard count not run, a failed cell). */
static const char *st_fig_text(const char *key, double scale, int prec, const char *suffix,
                               char *buf, size_t len)
{
    const struct bench_fig *f = fig_find("storage", key);
    if (f == NULL)
        return "n/a";
    snprintf(buf, len, "%.*f%s", prec, f->value / scale, suffix);
    return buf;
}

/* The acks=all target, judged on the sustained cells. */
static void st_target_disk(void)
{
    char where[48] = "";
    double best = st_best_disk_pct(where, sizeof(where));
    double s1 = fig_value("storage", "s1_1k_b1000_all_pct_of_disk_seq");
    double s2 = fig_value("storage", "s2_1k_b1000_all_pct_of_disk_seq");
    double sustained = s1 > s2 ? s1 : s2;
    fig_num("storage", "target_acks_all_1k_best_pct", "", best, "%");
    fig_num("storage", "target_acks_all_1k_sustained_pct", "", sustained, "%");
    char t1[16], t2[16];
    fig_text("storage", "target_disk", "target: acks=all 1 KiB >= 45% of disk",
             "sustained x1000: %s (1 sh), %s (2 sh); short cells up to %.0f%% (%s): %s",
             st_fig_text("s1_1k_b1000_all_pct_of_disk_seq", 1, 0, "%", t1, sizeof(t1)),
             st_fig_text("s2_1k_b1000_all_pct_of_disk_seq", 1, 0, "%", t2, sizeof(t2)), best, where,
             sustained >= 45.0 ? "met" : "NOT met");
}

/* The targets of the storage issue against this run's figures. */
static void st_targets(uint32_t parts)
{
    if (parts & ST_PART_PRODUCE) {
        st_target_disk();
        double r1 = fig_value("storage", "s1_100b_b1000_none_records_per_s_per_shard");
        double r2 = fig_value("storage", "s2_100b_b1000_none_records_per_s_per_shard");
        double p1 = fig_value("storage", "p1_100b_b1000_none_records_per_s_per_shard");
        char t1[16], t2[16];
        double b1 = fig_value("storage", "s1_100b_b1000_none_disk_bound_records_per_s");
        double pb1 = fig_value("storage", "s1_100b_b1000_none_pct_of_disk_bound");
        fig_text(
            "storage", "target_rate", "target: 10 M rec/s/shard, 100 B none x1000",
            "sustained %s/shard (1 sh), %s (2 sh); short cell %.2f M: %s (1 sh: %.0f%% of the "
            "%.2f M/s the disk allows, writing each byte twice)",
            st_fig_text("s1_100b_b1000_none_records_per_s_per_shard", 1e6, 2, " M", t1, sizeof(t1)),
            st_fig_text("s2_100b_b1000_none_records_per_s_per_shard", 1e6, 2, " M", t2, sizeof(t2)),
            p1 / 1e6, (r1 > r2 ? r1 : r2) >= 10e6 ? "met" : "NOT met", pb1, b1 / 1e6);
    }
    double bytes = fig_value("storage", "recovery_log_bytes");
    double warm = fig_value("storage", "recovery_clean_warm_open_ns");
    double cold = fig_value("storage", "recovery_clean_cold_open_ns");
    double worst = warm > cold ? warm : cold;
    if (parts & ST_PART_RECOVERY)
        fig_text("storage", "target_recovery", "target: clean 1 GiB reopen < 1 s",
                 "%.0f ms cached, %.0f ms cold, for %.2f GiB: %s%s", warm / 1e6, cold / 1e6,
                 bytes / 1073741824.0, worst < 1e9 ? "met" : "NOT met",
                 bytes < 1073741824.0 * 0.95 ? " (a smaller log than the target's)" : "");
}

/* The size of the recovery log: --recovery-bytes, else 1 GiB (256 MiB on a
 * slow disk), never more than a quarter of the free space. */
static uint64_t st_recovery_bytes(const struct st_ctx *c)
{
    uint64_t bytes = c->o->recovery_bytes;
    if (bytes == 0)
        bytes =
            c->seq_mbps > 0 && c->seq_mbps < ST_SLOW_MBPS ? ST_RECOVERY_SLOW : ST_RECOVERY_BYTES;
    struct statvfs vfs;
    if (statvfs(c->dir, &vfs) == 0) {
        uint64_t room = (uint64_t)vfs.f_bavail * vfs.f_frsize / 4;
        bytes = bytes < room ? bytes : room;
    }
    return bytes;
}

/* --scale: for each cell run at every shard count, its records/s at each
 * count and the share of linear scaling from the smallest count (total rate /
 * (rate at the first count x counts ratio)). */
static void st_scale_summary(const uint32_t *scale, uint32_t scale_count)
{
    static const uint32_t sizes[] = {100, 1024, 16384};
    static const uint32_t batches[] = {1, 16, 1000};
    static const enum rv_acks acks[] = {RV_ACKS_NONE, RV_ACKS_LEADER, RV_ACKS_ALL};
    for (int sus = 0; sus < 2; sus++) {
        for (size_t i = 0; i < RV_ARRAY_LEN(sizes); i++) {
            for (size_t j = 0; j < RV_ARRAY_LEN(batches); j++) {
                for (size_t k = 0; k < RV_ARRAY_LEN(acks); k++) {
                    struct st_cell cell = {.value_len = sizes[i],
                                           .batch = batches[j],
                                           .acks = acks[k],
                                           .is_sustained = sus != 0};
                    char key[48], fkey[64], text[160] = "";
                    size_t used = 0;
                    double base = 0;
                    for (uint32_t n = 0; n < scale_count; n++) {
                        cell.shards = scale[n];
                        st_cell_key(&cell, key, sizeof(key));
                        snprintf(fkey, sizeof(fkey), "%s_records_per_s", key);
                        const struct bench_fig *f = fig_find("storage", fkey);
                        if (f == NULL)
                            continue; /* not run (--cell) or failed */
                        if (base == 0)
                            base = f->value / scale[n];
                        double linear = base > 0 ? 100.0 * f->value / (base * scale[n]) : 0;
                        fig_numf("storage", "", linear, "%", "%s_pct_of_linear", key);
                        int w = snprintf(text + used, sizeof(text) - used, "%s%u: %.2f M (%.0f%%)",
                                         used > 0 ? ", " : "", scale[n], f->value / 1e6, linear);
                        if (w > 0 && (size_t)w < sizeof(text) - used)
                            used += (size_t)w;
                    }
                    if (used == 0)
                        continue;
                    /* "s0_1k_b1000_all" -> "scale_s_1k_b1000_all" */
                    cell.shards = 0;
                    st_cell_key(&cell, key, sizeof(key));
                    char skey[64], size[16], label[48];
                    snprintf(skey, sizeof(skey), "scale_%c%s", key[0], key + 2);
                    st_size_name(cell.value_len, size, sizeof(size));
                    snprintf(label, sizeof(label), "%sscale %s x%u %s", sus ? "sustained " : "",
                             size, cell.batch, st_acks_name(cell.acks));
                    fig_text("storage", skey, label, "rec/s by shards %s", text);
                }
            }
        }
    }
}

static int st_run_all(struct st_ctx *c)
{
    uint32_t parts = c->o->parts;
    int rc = 0;
    /* Partitions first: its RSS figures need a heap that earlier parts have
     * not grown (freed memory is reused before RSS grows). */
    if (parts & ST_PART_PARTITIONS)
        rc = st_parts_run(c, c->o->partitions);
    uint32_t scale[BENCH_SCALE_MAX] = {1, 2}, scale_count = c->o->shard_count >= 2 ? 2 : 1;
    if (c->o->scale_count > 0) {
        scale_count = c->o->scale_count;
        memcpy(scale, c->o->scale, scale_count * sizeof(scale[0]));
    }
    for (uint32_t i = 0; i < scale_count && (parts & ST_PART_PRODUCE); i++) {
        if (rc == 0 && !st_is_wedged)
            rc = st_matrix_run(c, scale[i]);
    }
    if (rc == 0 && !st_is_wedged && (parts & ST_PART_PRODUCE) && c->o->scale_count > 0)
        st_scale_summary(scale, scale_count);
    if (rc == 0 && !st_is_wedged && (parts & ST_PART_FETCH))
        rc = st_fetch_run(c);
    if (rc == 0 && !st_is_wedged && (parts & ST_PART_RECOVERY))
        rc = st_recovery_run(c, st_recovery_bytes(c));
    if (st_is_wedged)
        return 0; /* print what was measured; main exits with 1 */
    if (rc == 0)
        st_targets(parts);
    return rc;
}

static int bench_storage(const struct bench_opts *o)
{
    char tmp[] = "/var/tmp/rivven-bench.XXXXXX";
    struct st_ctx c = {.o = o, .dir = o->dir};
    bench_wal_io = o->wal_io;
    bench_segment_io = o->segment_io;
    if (o->window_mb != 0)
        bench_window_bytes = (uint64_t)o->window_mb << 20;
    if (c.dir == NULL && (c.dir = mkdtemp(tmp)) == NULL) {
        fprintf(stderr, BENCH_NAME ": mkdtemp %s: %s\n", tmp, strerror(errno));
        return -errno;
    }
    uint64_t cell_ns = bench_duration_ns(o) / 4;
    c.cell_ns = cell_ns > ST_CELL_MIN_NS ? cell_ns : ST_CELL_MIN_NS;
    c.values = aligned_alloc(4096, IO_SEQ_BLOCK); /* ST_VALUE_MAX of it are the value */
    c.recs = calloc(ST_BATCH_MAX, sizeof(*c.recs));
    int rc = c.values == NULL || c.recs == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        for (uint32_t i = 0; i < IO_SEQ_BLOCK; i++)
            c.values[i] = (uint8_t)(i * 131u + 7u);
        rc = st_limits(&c, c.values);
    }
    fig_num("storage", "cell_s", "", (double)c.cell_ns / 1e9, "s");
    fig_text("storage", "method", "produce",
             "driver task per owner shard, <= %u produces (<= %u MiB) in flight; %.2g s or %u "
             "MiB per cell",
             ST_WINDOW, (unsigned)(bench_window_bytes >> 20), (double)c.cell_ns / 1e9,
             (unsigned)(ST_CELL_BYTES >> 20));
    if (rc == 0)
        rc = st_run_all(&c);
    free(c.values);
    free(c.recs);
    if (o->dir == NULL && rmdir(c.dir) < 0)
        fprintf(stderr, BENCH_NAME ": rmdir %s: %s\n", c.dir, strerror(errno));
    return rc;
}

/* ---- machine ------------------------------------------------------------------------ */

static void bench_machine(const struct bench_opts *o)
{
    char model[160] = "unknown", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(model, sizeof(model), "%s", colon + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    struct utsname u;
    if (uname(&u) < 0)
        snprintf(u.release, sizeof(u.release), "unknown");
    fig_num("machine", "online_cpus", "online cpus", rv_topo_online_cpus(), "");
    fig_text("machine", "cpus_used", "cpus used", "%s", o->cpus_text);
    fig_text("machine", "cpu_model", "cpu model", "%s", model);
    fig_text("machine", "kernel", "kernel", "%s %s", u.sysname, u.release);
    double load[1] = {-1};
    (void)getloadavg(load, 1); /* -1 stays when unknown */
    fig_num("machine", "loadavg_1min", "load average at start (1 min)", load[0], "");
#if defined(__OPTIMIZE__) && defined(NDEBUG)
    fig_text("machine", "build", "build", "optimized, NDEBUG");
#elif defined(__OPTIMIZE__)
    fig_text("machine", "build", "build", "optimized");
#else
    fig_text("machine", "build", "build", "not optimized (-O0): figures are not representative");
#endif
    fig_text("config", "command", "", "%s", o->cmd);
    fig_num("config", "shards", "", o->shard_count, "");
    fig_text("config", "cpuset", "", "%s", o->cpus_text);
    fig_num("config", "duration_s", "", o->duration_s, "s");
}

/* Machine-wide CPU use from /proc/stat and this process's own, to tell how
 * much of the machine others took while we measured. */
struct bench_load {
    uint64_t busy_ticks;  /* user, nice, system, irq, softirq of all CPUs */
    uint64_t steal_ticks; /* taken by the hypervisor */
    uint64_t total_ticks; /* everything, idle included */
    uint64_t self_ns;     /* this process and its waited-for children (fio) */
};

static bool bench_load_sample(struct bench_load *out)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f == NULL ? 0
                      : fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                               &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    if (f != NULL)
        fclose(f);
    struct rusage self, children;
    if (n != 8 || getrusage(RUSAGE_SELF, &self) < 0 || getrusage(RUSAGE_CHILDREN, &children) < 0)
        return false;
    out->busy_ticks = v[0] + v[1] + v[2] + v[5] + v[6];
    out->steal_ticks = v[7];
    out->total_ticks = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    const struct timeval *tv[] = {&self.ru_utime, &self.ru_stime, &children.ru_utime,
                                  &children.ru_stime};
    out->self_ns = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(tv); i++)
        out->self_ns += (uint64_t)tv[i]->tv_sec * 1000000000ull + (uint64_t)tv[i]->tv_usec * 1000;
    return true;
}

static void bench_load_figures(const struct bench_load *a)
{
    struct bench_load b;
    long hz = sysconf(_SC_CLK_TCK);
    if (!bench_load_sample(&b) || hz <= 0 || b.total_ticks <= a->total_ticks)
        return;
    double tick_ns = 1e9 / (double)hz;
    double total_ns = (double)(b.total_ticks - a->total_ticks) * tick_ns;
    double others_ns =
        (double)(b.busy_ticks - a->busy_ticks) * tick_ns - (double)(b.self_ns - a->self_ns);
    fig_num("machine", "others_cpu_pct", "others' cpu use, of all cpus",
            others_ns > 0 ? 100.0 * others_ns / total_ns : 0, "%");
    fig_num("machine", "steal_pct", "hypervisor steal, of all cpus",
            100.0 * (double)(b.steal_ticks - a->steal_ticks) * tick_ns / total_ns, "%");
}

int main(int argc, char **argv)
{
    struct bench_opts o;
    int status = opts_parse(argc, argv, &o);
    if (status >= 0)
        return status;
    struct bench_load load;
    bool has_load = bench_load_sample(&load);
    bench_machine(&o);
    bool is_all = strcmp(o.cmd, "all") == 0;
    int rc = 0;
    if (strcmp(o.cmd, "mailbox") == 0 || is_all) {
        if (o.shard_count >= 2)
            rc = bench_mailbox(&o);
        else
            fig_text("mailbox", "skipped", "skipped", "needs 2 shards");
    }
    if (rc == 0 && (strcmp(o.cmd, "io") == 0 || is_all))
        rc = bench_io(&o);
    if (rc == 0 && (strcmp(o.cmd, "storage") == 0 || is_all))
        rc = bench_storage(&o);
    /* A broker run that fails still prints what it measured (the limits). */
    bool is_broker_failed = false;
    if (rc == 0 && strcmp(o.cmd, "broker") == 0)
        is_broker_failed = bench_broker(&o) < 0;
    if (rc < 0)
        return 1;
    if (has_load)
        bench_load_figures(&load);
    if (o.is_json)
        bench_print_json();
    else
        bench_print_text(&o);
    return st_is_wedged || is_broker_failed ? 1 : 0;
}
