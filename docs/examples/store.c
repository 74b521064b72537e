/*
 * docs/examples/store.c - store and read back records with librivven.
 *
 *   cc store.c $(pkg-config --cflags --libs rivven) -o store && ./store ./data
 */
#include <rivven.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct rv_runtime_config rc;
    rv_runtime_config_init(&rc);
    rc.data_dir = argc > 1 ? argv[1] : "./data";
    rv_runtime_t *rt;
    if (rv_runtime_open(&rt, &rc) < 0) {
        fprintf(stderr, "runtime: %s\n", rv_err_msg());
        return 1;
    }
    struct rv_store_config sc;
    rv_store_config_init(&sc);
    rv_store_t *st;
    if (rv_store_open(&st, rt, &sc) < 0) { /* recovers what is there */
        fprintf(stderr, "store: %s\n", rv_err_msg());
        rv_runtime_close(rt);
        return 1;
    }
    struct rv_topic_config tc;
    rv_topic_config_init(&tc);
    tc.partitions = 3;
    if (rv_topic_config_set(&tc, "compression.type", "zstd") < 0 ||
        (rv_topic_create(st, "orders", &tc) < 0 && rv_topic_describe(st, "orders", &tc) < 0)) {
        fprintf(stderr, "topic: %s\n", rv_err_msg());
        return 1;
    }
    const char *value = "hello, durable world";
    struct rv_record r = {
        .key = "k1", .key_len = 2, .value = value, .value_len = (int32_t)strlen(value)};
    int64_t offset = rv_produce_sync(st, "orders", 0, &r, 1, RV_ACKS_ALL);
    if (offset < 0) {
        fprintf(stderr, "produce: %s\n", rv_strerror((int)offset));
        return 1;
    }
    rv_fetch_result_t *res;
    if (rv_fetch_sync(st, "orders", 0, offset, 1 << 20, &res) < 0)
        return 1;
    struct rv_record_view v;
    int found = 0;
    while (rv_fetch_next(res, &v) == 1) {
        printf("offset %lld: %.*s\n", (long long)v.offset, (int)v.value_len, (const char *)v.value);
        found++;
    }
    rv_fetch_release(res);
    rv_store_close(st);
    rv_runtime_close(rt);
    return found > 0 ? 0 : 1;
}
