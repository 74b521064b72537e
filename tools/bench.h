/*
 * tools/bench.h - what the parts of rivven-bench share: the options, the
 * figures every mode records (printed as tables or as one JSON object), and
 * the machine limits that more than one mode reports.
 *
 * rivven-bench.c has main, the options, the figures and the mailbox, io and
 * storage modes; bench_broker.c has the broker mode (librdkafka against a
 * running rivvend). meson compiles bench_broker.c and sets RV_BENCH_RDKAFKA
 * to 1 only when it finds librdkafka; otherwise the stub below stands in.
 *
 * Threading: the figure functions are the main thread's; none is thread-safe.
 */
#ifndef RV_TOOLS_BENCH_H
#define RV_TOOLS_BENCH_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/hist.h"

#define BENCH_NAME "rivven-bench"

/* --only bits of the broker mode (bench_opts.parts); the storage mode's own
 * are bits 0-3, and its "produce" is the same bit. */
#define BENCH_PART_PRODUCE (1u << 0)
#define BENCH_PART_CONSUME (1u << 4)
#define BENCH_PART_E2E     (1u << 5)

#define BENCH_PRODUCER_SET_MAX 16
#define BENCH_SCALE_MAX        8 /* shard counts of --scale, at most */

struct bench_opts {
    const char *cmd;      /* "mailbox", "io", "storage", "broker" or "all" */
    uint32_t shard_count; /* shards per runtime */
    const char *cpuset;   /* NULL: the process's CPUs */
    double duration_s;    /* per measurement (--duration, --seconds) */
    bool is_json;
    const char *dir;         /* NULL: a temporary directory under /var/tmp */
    char cpus_text[64];      /* the CPUs in use, for the report */
    int cpu_ids[2];          /* the CPUs of shards 0 and 1 */
    uint64_t recovery_bytes; /* storage: the recovery log (0: chosen from the disk) */
    uint32_t partitions;     /* storage: partitions of the many-partitions test;
                                broker: partitions of each topic */
    bool has_partitions;     /* --partitions was given */
    uint32_t io_depth;       /* storage: the runtimes' io_depth (0: the default) */
    uint32_t parts;          /* storage: ST_PART_* bits of the parts to run;
                                broker: BENCH_PART_* bits */
    const char *brokers;     /* broker: bootstrap HOST:PORT (NULL: 127.0.0.1:9092) */
    const char *topic;       /* broker: topic name prefix */
    uint64_t messages;       /* broker: messages per produce cell (0: --seconds) */
    uint32_t rate;           /* broker: messages/s of the paced latency runs */
    const char *start_path;  /* broker: a rivvend to start (NULL: use --brokers) */
    const char *cell;        /* only produce cells whose key contains one of these
                                comma-separated texts (bench_cell_wanted) */
    const char *producer_set[BENCH_PRODUCER_SET_MAX]; /* broker: -X KEY=VALUE */
    uint32_t producer_set_count;
    bool is_no_settle;               /* broker: no sync() before the latency runs */
    enum rv_wal_io wal_io;           /* storage: the stores' WAL I/O (--wal-io) */
    enum rv_wal_io segment_io;       /* storage: the stores' segment I/O (--segment-io) */
    uint32_t window_mb;              /* storage: MiB of batches in flight per driver (0: default) */
    uint32_t cpu_count;              /* CPUs in the set the shards run on */
    uint32_t scale[BENCH_SCALE_MAX]; /* storage: shard counts of the produce matrix */
    uint32_t scale_count;            /* 0: 1 and 2 (1 alone with one shard) */
};

/* Whether the produce cell `key` is asked for: no --cell, or one of its
 * comma-separated texts is part of key. */
bool bench_cell_wanted(const struct bench_opts *o, const char *key);

/* ---- figures (rivven-bench.c) ---------------------------------------------------- */

enum fig_kind {
    FIG_NUMBER = 0,
    FIG_TEXT,
};

struct bench_fig {
    const char *section; /* JSON object and table it belongs to */
    char key[48];        /* JSON key inside the section */
    char label[48];      /* table label; "" keeps the figure out of the table */
    const char *unit;    /* "msg/s", "rt/s", "op/s", "ns", "MB/s", "GB/s", "%", "" */
    enum fig_kind kind;
    double value;   /* FIG_NUMBER */
    char text[160]; /* FIG_TEXT */
    char note[128]; /* the comparison printed beside the value */
};

/* Record a number: section.key in the JSON, and a table line when label is
 * not "". unit: "msg/s", "rt/s", "op/s", "rec/s", "ns", "MB/s", "GB/s", "%",
 * "" (rates and nanoseconds are scaled for the table). */
struct bench_fig *fig_num(const char *section, const char *key, const char *label, double value,
                          const char *unit);
struct bench_fig *__attribute__((format(printf, 5, 6)))
fig_numf(const char *section, const char *label, double value, const char *unit,
         const char *key_fmt, ...);
/* A text figure (at most 159 characters are kept). */
struct bench_fig *__attribute__((format(printf, 4, 5)))
fig_text(const char *section, const char *key, const char *label, const char *fmt, ...);
/* The comparison printed beside a number (f may be NULL). */
void __attribute__((format(printf, 2, 3))) fig_note(struct bench_fig *f, const char *fmt, ...);
/* The figure section.key, or NULL; its value (0 when missing). */
struct bench_fig *fig_find(const char *section, const char *key);
double fig_value(const char *section, const char *key);
/* <prefix>_p50_ns, _p99_ns, _p999_ns and _max_ns of h, as table lines. */
void fig_hist(const char *section, const char *prefix, const struct rv_hist *h);
/* A value for people: "30.1" "us", "23.4" "M msg/s". */
void fig_format(double v, const char *u, char *num, size_t num_len, char *unit, size_t unit_len);

double bench_rate(uint64_t count, uint64_t elapsed_ns);
uint64_t bench_duration_ns(const struct bench_opts *o);
/* Remove a directory and everything under it (best effort, reported). */
void bench_rm_tree(const char *path);

/* ---- machine limits (rivven-bench.c) --------------------------------------------- */

/*
 * The loopback TCP limit: one TCP connection over 127.0.0.1, shard 0 of a
 * runtime sending 256 KiB blocks with rv_sock_send and shard 1 (shard 0 when
 * there is one) receiving them with rv_sock_recv, for --duration; then the
 * same with two plain threads in blocking send/recv, for reference. Records
 * section.loopback_* figures and returns the io_uring figure in MB/s in *mbps.
 */
int bench_loopback_limit(const struct bench_opts *o, const char *section, double *mbps);

/* The disk's fdatasync latency in dir, measured for duration_ns: fio's 4 KiB
 * write + fdatasync job (the io mode's) and fdatasync alone's p50/p99 from it
 * (is_fio); without fio, rivven's own io_uring 4 KiB write + fdatasync pairs
 * (the pair's percentiles). Records no figure. */
struct bench_fsync {
    double p50_ns;
    double p99_ns;
    double ops_per_s; /* 4 KiB write + fdatasync */
    bool is_fio;
};
int bench_fsync_measure(const struct bench_opts *o, const char *dir, uint64_t duration_ns,
                        struct bench_fsync *out);

/* bench_fsync_measure for --duration, recorded as section.disk_* figures; the
 * p99 in ns in *p99_ns. */
int bench_fsync_limit(const struct bench_opts *o, const char *dir, const char *section,
                      double *p99_ns);

/* ---- modes -------------------------------------------------------------------- */

#if RV_BENCH_RDKAFKA
/* rivven-bench broker (bench_broker.c). 0, or < 0 when it could not run or a
 * measurement failed (a message is on stderr, the figures say which). */
int bench_broker(const struct bench_opts *o);
#else
/* Built without librdkafka: the broker mode is not there, and says so. */
static inline int bench_broker(const struct bench_opts *o)
{
    (void)o;
    fprintf(stderr, BENCH_NAME ": the broker mode is not built: librdkafka was not found when "
                               "this build was configured (apt-get install librdkafka-dev, or "
                               "tools/install-deps.sh, then meson setup --reconfigure)\n");
    return -ENOTSUP;
}
#endif

#endif /* RV_TOOLS_BENCH_H */
