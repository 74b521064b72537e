/*
 * tests/tools/make_data.c - a data directory written by the real engine, for the
 * rivvenctl tests (tests/tools/test_rivvenctl.sh).
 *
 *   test_make_data DIR
 *
 * Opens a runtime of one shard and the store on DIR (buffered WAL and segment
 * writes, so any filesystem takes them), creates three topics with 1 KiB
 * segments, produces to them with acks=all and closes cleanly:
 *
 *   events   cleanup.policy=delete, MAKE_DATA_RECORDS records: several segments
 *   keyed    cleanup.policy=compact, the same number of keyed records
 *   trimmed  cleanup.policy=delete, then delete_records to MAKE_DATA_TRIM: its
 *            first segments are gone and its log-start file says where it starts
 *
 * Offsets are contiguous in every partition (one record per batch). Every record
 * has the same timestamp, so a segment cut at a batch boundary keeps a valid time
 * index. delete_records runs after a reopen: acks=all answers once the WAL holds a
 * batch, before its segment write, and delete_records removes only the segments
 * written by then (the rest go at a later retention pass); after a reopen every
 * segment is on disk, so the directory is the same every time. Prints nothing on
 * success; exit status 0, or 1 with a message.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "rivven.h"

#define MAKE_DATA_RECORDS   60
#define MAKE_DATA_TRIM      25
#define MAKE_DATA_SEGMENT   "1024"
#define MAKE_DATA_KEYS      7
#define MAKE_DATA_VALUE_MAX 128
#define MAKE_DATA_TS_MS     1700000000000LL

static int make_topic(rv_store_t *st, const char *name, const char *policy)
{
    struct rv_topic_config cfg;
    rv_topic_config_init(&cfg);
    int rc = rv_topic_config_set(&cfg, "segment.bytes", MAKE_DATA_SEGMENT);
    if (rc == 0)
        rc = rv_topic_config_set(&cfg, "cleanup.policy", policy);
    if (rc == 0)
        rc = rv_topic_config_set(&cfg, "retention.ms", "-1");
    if (rc == 0)
        rc = rv_topic_create(st, name, &cfg);
    if (rc < 0)
        fprintf(stderr, "test_make_data: topic %s: %s (%s)\n", name, rv_strerror(rc), rv_err_msg());
    return rc;
}

/* MAKE_DATA_RECORDS batches of one record each; keys when is_keyed. */
static int make_records(rv_store_t *st, const char *topic, bool is_keyed)
{
    for (int i = 0; i < MAKE_DATA_RECORDS; i++) {
        char key[16];
        char value[MAKE_DATA_VALUE_MAX];
        int klen = snprintf(key, sizeof(key), "key-%d", i % MAKE_DATA_KEYS);
        int vlen = snprintf(value, sizeof(value), "%s record %d: some bytes to fill the segment",
                            topic, i);
        struct rv_record r = {
            .key = is_keyed ? key : NULL,
            .key_len = is_keyed ? klen : -1,
            .value = value,
            .value_len = vlen,
            .timestamp_ms = MAKE_DATA_TS_MS,
        };
        int64_t offset = rv_produce_sync(st, topic, 0, &r, 1, RV_ACKS_ALL);
        if (offset != i) {
            fprintf(stderr, "test_make_data: produce to %s: got %lld, want offset %d (%s)\n", topic,
                    (long long)offset, i, offset < 0 ? rv_strerror((int)offset) : "");
            return offset < 0 ? (int)offset : -1;
        }
    }
    return 0;
}

static int make_open(rv_store_t **st, rv_runtime_t *rt)
{
    struct rv_store_config cfg;
    rv_store_config_init(&cfg);
    cfg.wal_io = RV_WAL_IO_BUFFERED;
    cfg.segment_io = RV_WAL_IO_BUFFERED;
    int rc = rv_store_open(st, rt, &cfg);
    if (rc < 0)
        fprintf(stderr, "test_make_data: store: %s (%s)\n", rv_strerror(rc), rv_err_msg());
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_make_data DIR\n");
        return 2;
    }
    struct rv_runtime_config rcfg;
    rv_runtime_config_init(&rcfg);
    rcfg.shard_count = 1;
    rcfg.allow_oversubscribe = true;
    rcfg.data_dir = argv[1];
    rv_runtime_t *rt = NULL;
    int rc = rv_runtime_open(&rt, &rcfg);
    if (rc < 0) {
        fprintf(stderr, "test_make_data: runtime: %s (%s)\n", rv_strerror(rc), rv_err_msg());
        return 1;
    }
    rv_store_t *st = NULL;
    rc = make_open(&st, rt);
    if (rc < 0) {
        rv_runtime_close(rt);
        return 1;
    }
    rc = make_topic(st, "events", "delete");
    if (rc == 0)
        rc = make_topic(st, "keyed", "compact");
    if (rc == 0)
        rc = make_topic(st, "trimmed", "delete");
    if (rc == 0)
        rc = make_records(st, "events", false);
    if (rc == 0)
        rc = make_records(st, "keyed", true);
    if (rc == 0)
        rc = make_records(st, "trimmed", false);
    rv_store_close(st);
    st = NULL;
    if (rc == 0)
        rc = make_open(&st, rt);
    if (rc == 0) {
        int64_t start = rv_delete_records(st, "trimmed", 0, MAKE_DATA_TRIM);
        if (start != MAKE_DATA_TRIM) {
            fprintf(stderr, "test_make_data: delete_records: got %lld (%s)\n", (long long)start,
                    start < 0 ? rv_strerror((int)start) : "");
            rc = -1;
        }
    }
    rv_store_close(st);
    rv_runtime_close(rt);
    return rc == 0 ? 0 : 1;
}
