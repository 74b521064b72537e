/*
 * storage/topic.c - topic names, topic configuration (Kafka's setting names)
 * and the topic catalog files.
 *
 * A topic is described by DATA/meta/topics/<name>.topic, a text file of
 * `key=value` lines: `id` (a number unique in this data directory, the high
 * half of every WAL key of the topic), `partitions`, and every setting by its
 * Kafka name. It is replaced atomically (write a .tmp, fdatasync, rename,
 * fsync the directory). Everything here is blocking control-path work.
 */
#include "storage/topic.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/sys.h"
#include "storage/codec.h"

#define DAY_MS (24ll * 3600 * 1000)

void rv_topic_config_init(struct rv_topic_config *cfg)
{
    *cfg = (struct rv_topic_config){
        .partitions = 1,
        .retention_ms = 7 * DAY_MS,
        .retention_bytes = -1,
        .segment_bytes = 1ll << 30,
        .segment_ms = 7 * DAY_MS,
        .max_message_bytes = RV_TOPIC_BATCH_MAX, /* Kafka: 1048588; ours fits a pool block */
        .index_interval_bytes = 4096,
        .delete_retention_ms = DAY_MS,
        .min_cleanable_dirty_ratio = 0.5,
        .timestamp_before_max_ms = INT64_MAX,
        .timestamp_after_max_ms = 3600000,
    };
    snprintf(cfg->compression, sizeof(cfg->compression), "producer");
    snprintf(cfg->cleanup_policy, sizeof(cfg->cleanup_policy), "delete");
    snprintf(cfg->timestamp_type, sizeof(cfg->timestamp_type), "CreateTime");
}

bool rv_topic_name_is_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > RV_TOPIC_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int topic_parse_i64(const char *value, int64_t min, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < min)
        return -EINVAL;
    *out = v;
    return 0;
}

static int topic_set_text(char *dst, size_t cap, const char *value, const char *const *allowed)
{
    for (size_t i = 0; allowed[i] != NULL; i++) {
        if (strcasecmp(value, allowed[i]) == 0) {
            snprintf(dst, cap, "%s", allowed[i]);
            return 0;
        }
    }
    return -EINVAL;
}

static const char *const compressions[] = {"producer", "none", "uncompressed", "gzip",
                                           "snappy",   "lz4",  "zstd",         NULL};
static const char *const policies[] = {"delete", "compact", "compact,delete", "delete,compact",
                                       NULL};
static const char *const ts_types[] = {"CreateTime", "LogAppendTime", NULL};

/* Numeric settings: name, field offset, minimum. */
struct topic_num {
    const char *name;
    size_t offset;
    bool is_i32;
    int64_t min;
};

static const struct topic_num topic_nums[] = {
    {"retention.ms", offsetof(struct rv_topic_config, retention_ms), false, -1},
    {"retention.bytes", offsetof(struct rv_topic_config, retention_bytes), false, -1},
    {"segment.bytes", offsetof(struct rv_topic_config, segment_bytes), false, 14},
    {"segment.ms", offsetof(struct rv_topic_config, segment_ms), false, 1},
    {"max.message.bytes", offsetof(struct rv_topic_config, max_message_bytes), true, 0},
    {"index.interval.bytes", offsetof(struct rv_topic_config, index_interval_bytes), true, 0},
    {"partitions", offsetof(struct rv_topic_config, partitions), true, 1},
    {"delete.retention.ms", offsetof(struct rv_topic_config, delete_retention_ms), false, 0},
    {"message.timestamp.before.max.ms", offsetof(struct rv_topic_config, timestamp_before_max_ms),
     false, 0},
    {"message.timestamp.after.max.ms", offsetof(struct rv_topic_config, timestamp_after_max_ms),
     false, 0},
};

/* Kafka's older single bound, before and after at once (deprecated there). */
#define TOPIC_TS_DIFF_NAME "message.timestamp.difference.max.ms"

#define TOPIC_RATIO_NAME "min.cleanable.dirty.ratio"

/* A ratio 0..1, as Kafka's min.cleanable.dirty.ratio. */
static int topic_parse_ratio(const char *value, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || !(v >= 0.0 && v <= 1.0))
        return -EINVAL;
    *out = v;
    return 0;
}

int rv_topic_config_set(struct rv_topic_config *cfg, const char *name, const char *value)
{
    if (strcmp(name, TOPIC_TS_DIFF_NAME) == 0) {
        int64_t v;
        if (topic_parse_i64(value, 0, &v) < 0)
            return rv_errf(-EINVAL, "%s=%s: expected a whole number from 0", name, value);
        cfg->timestamp_before_max_ms = cfg->timestamp_after_max_ms = v;
        return 0;
    }
    for (size_t i = 0; i < RV_ARRAY_LEN(topic_nums); i++) {
        const struct topic_num *t = &topic_nums[i];
        if (strcmp(name, t->name) != 0)
            continue;
        int64_t v;
        int64_t max = t->is_i32 ? INT32_MAX : INT64_MAX;
        if (topic_parse_i64(value, t->min, &v) < 0 || v > max)
            return rv_errf(-EINVAL, "%s=%s: expected a whole number from %" PRId64, name, value,
                           t->min);
        if (t->is_i32)
            *(int32_t *)((char *)cfg + t->offset) = (int32_t)v;
        else
            *(int64_t *)((char *)cfg + t->offset) = v;
        return 0;
    }
    int rc = -ENOENT;
    if (strcmp(name, "compression.type") == 0 || strcmp(name, "compression") == 0)
        rc = topic_set_text(cfg->compression, sizeof(cfg->compression), value, compressions);
    else if (strcmp(name, "cleanup.policy") == 0)
        rc = topic_set_text(cfg->cleanup_policy, sizeof(cfg->cleanup_policy), value, policies);
    else if (strcmp(name, "message.timestamp.type") == 0)
        rc = topic_set_text(cfg->timestamp_type, sizeof(cfg->timestamp_type), value, ts_types);
    else if (strcmp(name, TOPIC_RATIO_NAME) == 0)
        rc = topic_parse_ratio(value, &cfg->min_cleanable_dirty_ratio);
    if (rc == -ENOENT)
        return rv_errf(-ENOENT, "unknown topic setting %s", name);
    if (rc < 0)
        return rv_errf(rc, "%s=%s: not an accepted value", name, value);
    return 0;
}

static const char *const topic_text_names[] = {"compression.type", "cleanup.policy",
                                               "message.timestamp.type"};

int rv_topic_config_get(const struct rv_topic_config *cfg, const char *name, char *buf, size_t len)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(topic_nums); i++) {
        const struct topic_num *t = &topic_nums[i];
        if (strcmp(name, t->name) != 0)
            continue;
        int64_t v = t->is_i32 ? *(const int32_t *)((const char *)cfg + t->offset)
                              : *(const int64_t *)((const char *)cfg + t->offset);
        snprintf(buf, len, "%" PRId64, v);
        return 0;
    }
    if (strcmp(name, TOPIC_RATIO_NAME) == 0) {
        snprintf(buf, len, "%g", cfg->min_cleanable_dirty_ratio);
        return 0;
    }
    const char *text = strcmp(name, topic_text_names[0]) == 0   ? cfg->compression
                       : strcmp(name, topic_text_names[1]) == 0 ? cfg->cleanup_policy
                       : strcmp(name, topic_text_names[2]) == 0 ? cfg->timestamp_type
                                                                : NULL;
    if (text == NULL)
        return -ENOENT;
    snprintf(buf, len, "%s", text);
    return 0;
}

int rv_topic_config_check(const struct rv_topic_config *cfg)
{
    if (cfg->partitions < 1 || cfg->partitions > RV_TOPIC_PARTITIONS_MAX)
        return rv_errf(-EINVAL, "partitions %d: must be 1..%d", cfg->partitions,
                       RV_TOPIC_PARTITIONS_MAX);
    if (cfg->segment_bytes < 14 || cfg->segment_bytes > (4ll << 30) - 1)
        return rv_errf(-EINVAL, "segment.bytes %" PRId64 ": must be 14..4294967295",
                       cfg->segment_bytes);
    if (cfg->max_message_bytes < RV_TOPIC_BATCH_MIN || cfg->max_message_bytes > RV_TOPIC_BATCH_MAX)
        return rv_errf(-EINVAL, "max.message.bytes %d: must be %d..%d", cfg->max_message_bytes,
                       RV_TOPIC_BATCH_MIN, RV_TOPIC_BATCH_MAX);
    if (cfg->index_interval_bytes < 1)
        return rv_errf(-EINVAL, "index.interval.bytes must be positive");
    return 0;
}

enum rv_codec rv_topic_codec(const struct rv_topic_config *cfg)
{
    enum rv_codec c = RV_CODEC_NONE;
    if (rv_codec_from_name(cfg->compression, &c) < 0)
        c = RV_CODEC_NONE; /* "producer", "uncompressed" */
    return c;
}

/* ---- catalog files ------------------------------------------------------------------------ */

/* DATA/meta/topics/<name><suffix>: ".topic" for the description, ".tmp" while
 * it is replaced (a 249-character name plus ".topic.tmp" would pass NAME_MAX;
 * no description ends in ".tmp", so the two never meet). */
static int topic_meta_path(char *out, size_t len, const char *data_dir, const char *name,
                           const char *suffix)
{
    int n = snprintf(out, len, "%s/meta/topics/%s%s", data_dir, name, suffix);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int rv_topic_meta_save(const char *data_dir, const char *name, uint32_t id,
                       const struct rv_topic_config *cfg)
{
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/meta/topics", data_dir);
    int rc = rv_sys_mkdir_p(dir, 0755);
    if (rc == 0)
        rc = topic_meta_path(path, sizeof(path), data_dir, name, ".topic");
    if (rc == 0)
        rc = topic_meta_path(tmp, sizeof(tmp), data_dir, name, ".tmp");
    if (rc < 0)
        return rc;
    char text[2048];
    int n = snprintf(text, sizeof(text), "id=%u\n", id);
    for (size_t i = 0; i < RV_ARRAY_LEN(topic_nums); i++) {
        char v[32];
        (void)rv_topic_config_get(cfg, topic_nums[i].name, v, sizeof(v)); /* known names */
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%s=%s\n", topic_nums[i].name, v);
    }
    for (size_t i = 0; i < RV_ARRAY_LEN(topic_text_names); i++) {
        char v[32];
        (void)rv_topic_config_get(cfg, topic_text_names[i], v, sizeof(v));
        n += snprintf(text + n, sizeof(text) - (size_t)n, "%s=%s\n", topic_text_names[i], v);
    }
    char ratio[32];
    (void)rv_topic_config_get(cfg, TOPIC_RATIO_NAME, ratio, sizeof(ratio));
    n += snprintf(text + n, sizeof(text) - (size_t)n, "%s=%s\n", TOPIC_RATIO_NAME, ratio);
    int fd = rv_sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return rv_errf(fd, "%s: create", tmp);
    ssize_t w = rv_sys_pwrite(fd, text, (size_t)n, 0);
    rc = w == n ? rv_sys_fdatasync(fd) : (w < 0 ? (int)w : -ENOSPC);
    int crc = rv_sys_close(fd);
    if (rc == 0)
        rc = crc;
    if (rc == 0)
        rc = rv_sys_rename(tmp, path);
    if (rc == 0)
        rc = rv_sys_fsync_dir(dir);
    return rc < 0 ? rv_errf(rc, "topic %s: saving its description", name) : 0;
}

int rv_topic_meta_remove(const char *data_dir, const char *name)
{
    char path[PATH_MAX], dir[PATH_MAX];
    int rc = topic_meta_path(path, sizeof(path), data_dir, name, ".topic");
    if (rc < 0)
        return rc;
    rc = rv_sys_unlink(path);
    if (rc < 0 && rc != -ENOENT)
        return rc;
    snprintf(dir, sizeof(dir), "%s/meta/topics", data_dir);
    return rv_sys_fsync_dir(dir);
}

static int topic_meta_parse(char *text, uint32_t *id, struct rv_topic_config *cfg)
{
    bool has_id = false;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (eq == NULL)
            return -EBADMSG;
        *eq = '\0';
        if (strcmp(line, "id") == 0) {
            int64_t v;
            if (topic_parse_i64(eq + 1, 0, &v) < 0 || v > UINT32_MAX)
                return -EBADMSG;
            *id = (uint32_t)v;
            has_id = true;
        } else if (rv_topic_config_set(cfg, line, eq + 1) < 0) {
            return -EBADMSG;
        }
    }
    return has_id ? rv_topic_config_check(cfg) : -EBADMSG;
}

int rv_topic_meta_load(const char *data_dir, const char *name, uint32_t *id,
                       struct rv_topic_config *cfg)
{
    char path[PATH_MAX];
    int rc = topic_meta_path(path, sizeof(path), data_dir, name, ".topic");
    if (rc < 0)
        return rc;
    int fd = rv_sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return rv_errf(fd, "%s: open", path);
    char text[4096];
    ssize_t n = rv_sys_pread(fd, text, sizeof(text) - 1, 0);
    (void)rv_sys_close(fd); /* read-only */
    if (n < 0)
        return rv_errf((int)n, "%s: read", path);
    text[n] = '\0';
    rv_topic_config_init(cfg);
    rc = topic_meta_parse(text, id, cfg);
    return rc < 0 ? rv_errf(-EBADMSG, "%s: not a valid topic description", path) : 0;
}

int rv_topic_meta_list(const char *data_dir, char ***out, uint32_t *count)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/meta/topics", data_dir);
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : rv_errf(-errno, "%s: opendir", dir);
    int rc = 0;
    uint32_t cap = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n <= 6 || strcmp(de->d_name + n - 6, ".topic") != 0)
            continue;
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            char **names = realloc(*out, cap * sizeof(*names));
            if (names == NULL) {
                rc = -ENOMEM;
                break;
            }
            *out = names;
        }
        (*out)[*count] = strndup(de->d_name, n - 6);
        rc = (*out)[*count] != NULL ? 0 : -ENOMEM;
        (*count) += rc == 0;
    }
    closedir(d);
    return rc;
}
