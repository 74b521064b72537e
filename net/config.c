/*
 * net/config.c - the broker's configuration keys, their parsers, the
 * properties-file reader and the command line.
 *
 * config_keys[] is the single list of keys: name, type, where the value lives
 * in struct rv_config, its bounds or accepted words, its default (as text) and
 * its meaning. rv_config_init parses every default through rv_config_set, so a
 * default that does not parse is a bug caught by the first test that runs.
 *
 * Everything here runs on the main thread before the runtime starts, so plain
 * malloc and stdio are fine. Values come from users: nothing is asserted about
 * them; every failure is -EINVAL with a message naming the key.
 */
#include "net/config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/trace.h"

#define CONFIG_FILE_BYTES_MAX (1u << 20) /* a config file larger than this is a mistake */
#define CONFIG_SHARDS_MAX     256        /* RV_SHARD_COUNT_MAX of shards/ */

enum config_type {
    CONFIG_BOOL = 1,  /* bool: true|false */
    CONFIG_I32,       /* int32_t within [min, max] */
    CONFIG_I64,       /* int64_t within [min, max] */
    CONFIG_U32,       /* uint32_t within [min, max] */
    CONFIG_PATH,      /* char[size]: one directory */
    CONFIG_CPUSET,    /* char[size]: "0-3,8" or "" */
    CONFIG_WORD,      /* char[size]: one of words[] (stored as written there) */
    CONFIG_CHOICE,    /* int32_t or enum: values[i] for words[i] */
    CONFIG_LISTENERS, /* struct rv_config_listener[] at offset, count at count_offset */
    CONFIG_ENDPOINT,  /* host:port into a struct rv_config_listener, bool at count_offset */
};

struct config_key {
    const char *name;
    enum config_type type;
    size_t offset;         /* of the value in struct rv_config */
    size_t size;           /* bytes at offset (strings: capacity) */
    size_t count_offset;   /* LISTENERS: of the uint32_t count; ENDPOINT: of the bool */
    int64_t min;           /* numbers: smallest accepted */
    int64_t max;           /* numbers: largest accepted */
    bool is_minus_one_ok;  /* numbers: -1 accepted below min ("no limit") */
    bool is_empty_ok;      /* LISTENERS, CPUSET, ENDPOINT: "" accepted */
    const char *words;     /* WORD, CHOICE: accepted words, '|'-separated */
    const int32_t *values; /* CHOICE: the value of each word */
    const char *def;       /* the default, as text */
    const char *meaning;   /* one line for --help */
};

#define CONFIG_AT(field)                                                                           \
    .offset = offsetof(struct rv_config, field), .size = sizeof(((struct rv_config *)0)->field)

static const int32_t backend_values[] = {RV_IO_AUTO, RV_IO_URING, RV_IO_URING, RV_IO_EPOLL};
static const int32_t wal_io_values[] = {RV_WAL_IO_AUTO, RV_WAL_IO_DIRECT, RV_WAL_IO_BUFFERED};
static const int32_t trace_values[] = {RV_TRACE_DEBUG, RV_TRACE_INFO, RV_TRACE_WARN, RV_TRACE_ERROR,
                                       RV_TRACE_OFF};

static const struct config_key config_keys[] = {
    {.name = "listeners",
     .type = CONFIG_LISTENERS,
     CONFIG_AT(listeners),
     .count_offset = offsetof(struct rv_config, listener_count),
     .def = "PLAINTEXT://127.0.0.1:9092",
     .meaning = "where to accept clients: NAME://host:port (host empty: every interface; "
                "with rivven.advertise.shards, shard i listens on port + i)"},
    {.name = "advertised.listeners",
     .type = CONFIG_LISTENERS,
     CONFIG_AT(advertised),
     .count_offset = offsetof(struct rv_config, advertised_count),
     .is_empty_ok = true,
     .def = "",
     .meaning = "the endpoints given to clients in Metadata (empty: listeners)"},
    {.name = "node.id",
     .type = CONFIG_I32,
     CONFIG_AT(node_id),
     .min = 0,
     .max = 1 << 30,
     .def = "0",
     .meaning = "broker id of this node (shard i is advertised as node.id + i)"},
    {.name = "log.dirs",
     .type = CONFIG_PATH,
     CONFIG_AT(log_dirs),
     .def = "./data",
     .meaning = "the data directory (one; created if missing)"},
    {.name = "num.partitions",
     .type = CONFIG_I32,
     CONFIG_AT(num_partitions),
     .min = 1,
     .max = 1000000,
     .def = "1",
     .meaning = "partitions of an auto-created topic"},
    {.name = "auto.create.topics.enable",
     .type = CONFIG_BOOL,
     CONFIG_AT(is_auto_create_topics),
     .def = "true",
     .meaning = "create a topic when Metadata or Produce names an unknown one"},
    {.name = "log.retention.ms",
     .type = CONFIG_I64,
     CONFIG_AT(log_retention_ms),
     .min = 1,
     .max = INT64_MAX,
     .is_minus_one_ok = true,
     .def = "604800000",
     .meaning = "default retention.ms of topics: delete segments older than this (-1: never)"},
    {.name = "log.message.timestamp.before.max.ms",
     .type = CONFIG_I64,
     CONFIG_AT(log_ts_before_max_ms),
     .min = 0,
     .max = INT64_MAX,
     .def = "9223372036854775807",
     .meaning = "default message.timestamp.before.max.ms of topics: a CreateTime record this "
                "much older than the broker's clock is refused (INVALID_TIMESTAMP)"},
    {.name = "log.message.timestamp.after.max.ms",
     .type = CONFIG_I64,
     CONFIG_AT(log_ts_after_max_ms),
     .min = 0,
     .max = INT64_MAX,
     .def = "3600000",
     .meaning = "default message.timestamp.after.max.ms of topics: a CreateTime record this "
                "much ahead of the broker's clock is refused (INVALID_TIMESTAMP)"},
    {.name = "log.retention.bytes",
     .type = CONFIG_I64,
     CONFIG_AT(log_retention_bytes),
     .min = 0,
     .max = INT64_MAX,
     .is_minus_one_ok = true,
     .def = "-1",
     .meaning = "default retention.bytes: bytes kept per partition (-1: no limit)"},
    {.name = "log.segment.bytes",
     .type = CONFIG_I64,
     CONFIG_AT(log_segment_bytes),
     .min = 14,
     .max = INT32_MAX,
     .def = "1073741824",
     .meaning = "default segment.bytes: roll a segment file at this size"},
    {.name = "log.roll.ms",
     .type = CONFIG_I64,
     CONFIG_AT(log_roll_ms),
     .min = 1,
     .max = INT64_MAX,
     .def = "604800000",
     .meaning = "default segment.ms: roll a segment file at this age"},
    {.name = "message.max.bytes",
     .type = CONFIG_I32,
     CONFIG_AT(message_max_bytes),
     .min = 0,
     .max = INT32_MAX,
     .def = "1048588",
     .meaning = "default max.message.bytes: the largest record batch a topic takes"},
    {.name = "compression.type",
     .type = CONFIG_WORD,
     CONFIG_AT(compression_type),
     .words = "producer|none|uncompressed|gzip|snappy|lz4|zstd",
     .def = "producer",
     .meaning = "default compression.type of topics (producer: keep the producer's)"},
    {.name = "socket.request.max.bytes",
     .type = CONFIG_I32,
     CONFIG_AT(socket_request_max_bytes),
     .min = 1,
     .max = INT32_MAX,
     .def = "104857600",
     .meaning = "the largest request; a larger size prefix closes the connection"},
    {.name = "connections.max.idle.ms",
     .type = CONFIG_I64,
     CONFIG_AT(connections_max_idle_ms),
     .min = 1,
     .max = INT64_MAX,
     .is_minus_one_ok = true,
     .def = "600000",
     .meaning = "close a connection idle this long (-1: never)"},
    {.name = "group.initial.rebalance.delay.ms",
     .type = CONFIG_I32,
     CONFIG_AT(group_initial_rebalance_delay_ms),
     .min = 0,
     .max = INT32_MAX,
     .def = "3000",
     .meaning = "the first rebalance of an empty consumer group waits this long for more members"},
    {.name = "group.min.session.timeout.ms",
     .type = CONFIG_I32,
     CONFIG_AT(group_min_session_timeout_ms),
     .min = 1,
     .max = INT32_MAX,
     .def = "6000",
     .meaning = "the smallest session timeout a consumer group member may ask for"},
    {.name = "group.max.session.timeout.ms",
     .type = CONFIG_I32,
     CONFIG_AT(group_max_session_timeout_ms),
     .min = 1,
     .max = INT32_MAX,
     .def = "1800000",
     .meaning = "the largest session timeout a consumer group member may ask for"},
    {.name = "offsets.retention.minutes",
     .type = CONFIG_I32,
     CONFIG_AT(offsets_retention_minutes),
     .min = 1,
     .max = INT32_MAX,
     .def = "10080",
     .meaning = "committed offsets of a group that has had no member this long (a group "
                "without members ever: since the commit) are deleted"},
    {.name = "offsets.retention.check.interval.ms",
     .type = CONFIG_I64,
     CONFIG_AT(offsets_retention_check_interval_ms),
     .min = 1,
     .max = INT32_MAX,
     .def = "600000",
     .meaning = "how often each coordinator looks for expired offsets"},
    {.name = "rivven.offsets.retention.ms",
     .type = CONFIG_I64,
     CONFIG_AT(offsets_retention_ms),
     .min = 1,
     .max = INT64_MAX,
     .is_minus_one_ok = true,
     .def = "-1",
     .meaning = "offsets.retention.minutes in milliseconds, for finer settings and tests "
                "(-1: use the minutes)"},
    {.name = "rivven.shards",
     .type = CONFIG_U32,
     CONFIG_AT(shard_count),
     .min = 0,
     .max = CONFIG_SHARDS_MAX,
     .def = "0",
     .meaning = "shards (threads, one per core); 0: one per CPU of rivven.cpuset"},
    {.name = "rivven.cpuset",
     .type = CONFIG_CPUSET,
     CONFIG_AT(cpuset),
     .is_empty_ok = true,
     .def = "",
     .meaning = "CPUs to run on, e.g. 0-3,8 (empty: the process's CPUs)"},
    {.name = "rivven.io.backend",
     .type = CONFIG_CHOICE,
     CONFIG_AT(io_backend),
     .words = "auto|uring|io_uring|epoll",
     .values = backend_values,
     .def = "auto",
     .meaning = "shard I/O: io_uring, epoll, or auto (io_uring when the kernel allows it)"},
    {.name = "rivven.wal.io",
     .type = CONFIG_CHOICE,
     CONFIG_AT(wal_io),
     .words = "auto|direct|buffered",
     .values = wal_io_values,
     .def = "auto",
     .meaning = "how the shards' WALs write: direct (O_DIRECT, no page cache), buffered, or "
                "auto (direct where the filesystem takes it)"},
    {.name = "rivven.segment.io",
     .type = CONFIG_CHOICE,
     CONFIG_AT(segment_io),
     .words = "auto|direct|buffered",
     .values = wal_io_values,
     .def = "auto",
     .meaning = "how partitions' active segments are written: direct (O_DIRECT from aligned "
                "staging blocks, no page cache), buffered, or auto (direct where the filesystem "
                "takes it)"},
    {.name = "rivven.wal.group.bytes",
     .type = CONFIG_U32,
     CONFIG_AT(wal_group_bytes),
     .min = 0,
     .max = 1u << 30,
     .def = "0",
     .meaning = "group commit: a WAL group closes at this size (a multiple of 4096, at most a "
                "quarter of the 64 MiB WAL file; 0: 1 MiB)"},
    {.name = "rivven.log.idle.unload.ms",
     .type = CONFIG_U32,
     CONFIG_AT(log_idle_unload_ms),
     .min = 0,
     .max = 1u << 31,
     .def = "300000",
     .meaning = "a partition unused this long (no produce, fetch, offsets by time or delete "
                "records) gives back its memory and descriptor, and loads again on its next use "
                "(0: never)"},
    {.name = "rivven.segment.backlog.bytes",
     .type = CONFIG_U32,
     CONFIG_AT(segment_backlog_bytes),
     .min = 0,
     .max = 512u << 20,
     .def = "0",
     .meaning = "a shard's batches in the WAL but not yet in their segments, past which "
                "produces wait (retried) until the segment writes catch up (0: 64 MiB)"},
    {.name = "rivven.wal.group.window.us",
     .type = CONFIG_U32,
     CONFIG_AT(wal_group_window_us),
     .min = 0,
     .max = 1000000,
     .def = "0",
     .meaning = "group commit: how long a WAL group waits for more appends before it is "
                "written (0: the reactor turn's appends share a group)"},
    {.name = "rivven.advertise.shards",
     .type = CONFIG_BOOL,
     CONFIG_AT(is_advertise_shards),
     .def = "true",
     .meaning = "advertise every shard as a broker so clients reach the owning core "
                "(false: one broker, requests forwarded between shards)"},
    {.name = "rivven.trace.level",
     .type = CONFIG_CHOICE,
     CONFIG_AT(trace_level),
     .words = "debug|info|warn|error|off",
     .values = trace_values,
     .def = "info",
     .meaning = "diagnostics written to stderr from this level up"},
    {.name = "rivven.admin.listener",
     .type = CONFIG_ENDPOINT,
     CONFIG_AT(admin_listener),
     .count_offset = offsetof(struct rv_config, has_admin_listener),
     .is_empty_ok = true,
     .def = "127.0.0.1:9644",
     .meaning = "admin HTTP host:port serving /metrics (Prometheus), /health and /ready "
                "(empty: off; a port in use is logged and the broker runs without it)"},
};

/* Put `prefix: ` in front of the message of the last rv_errf on this thread
 * (copied first: rv_errf writes the buffer rv_err_msg reads), keeping one
 * " (CODE)" suffix. Returns rc. */
static int config_wrap(int rc, const char *prefix)
{
    char inner[512];
    char suffix[192];
    snprintf(inner, sizeof(inner), "%s", rv_err_msg());
    snprintf(suffix, sizeof(suffix), " (%s)", rv_strerror(rc));
    size_t n = strlen(inner);
    size_t m = strlen(suffix);
    if (n >= m && strcmp(inner + n - m, suffix) == 0)
        inner[n - m] = '\0';
    return rv_errf(rc, "%s: %s", prefix, inner);
}

static const struct config_key *config_find(const char *name)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(config_keys); i++) {
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    }
    return NULL;
}

/* ---- values ----------------------------------------------------------------- */

static int config_parse_i64(const struct config_key *k, const char *value, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0')
        return rv_errf(-EINVAL, "config: %s=%s: not a whole number", k->name, value);
    bool is_in_range = v >= k->min && v <= k->max;
    if (!is_in_range && !(k->is_minus_one_ok && v == -1)) {
        return rv_errf(-EINVAL, "config: %s=%s: out of range [%" PRId64 ", %" PRId64 "]%s", k->name,
                       value, k->min, k->max, k->is_minus_one_ok ? " or -1" : "");
    }
    *out = v;
    return 0;
}

/* The index of `value` among the '|'-separated words (case-insensitive), or -1. */
static int config_word_index(const char *words, const char *value)
{
    size_t len = strlen(value);
    int index = 0;
    for (const char *w = words; *w != '\0'; index++) {
        size_t wlen = strcspn(w, "|");
        if (wlen == len && len > 0 && strncasecmp(w, value, len) == 0)
            return index;
        w += wlen;
        if (*w == '|')
            w++;
    }
    return -1;
}

/* The canonical spelling of word `index` into buf. */
static void config_word_copy(const char *words, int index, char *buf, size_t cap)
{
    memset(buf, 0, cap);
    const char *w = words;
    for (int i = 0; i < index; i++)
        w += strcspn(w, "|") + 1;
    snprintf(buf, cap, "%.*s", (int)strcspn(w, "|"), w);
}

/* "0-3,8": ranges of CPU numbers; the runtime checks them against the machine. */
static bool config_cpuset_is_valid(const char *s)
{
    while (*s != '\0') {
        char *end = NULL;
        if (*s < '0' || *s > '9')
            return false;
        unsigned long lo = strtoul(s, &end, 10);
        unsigned long hi = lo;
        if (*end == '-') {
            if (end[1] < '0' || end[1] > '9')
                return false;
            hi = strtoul(end + 1, &end, 10);
        }
        if (hi < lo || hi >= 4096)
            return false;
        if (*end == ',' && end[1] != '\0')
            end++;
        else if (*end != '\0')
            return false;
        s = end;
    }
    return true;
}

static int config_set_text(const struct config_key *k, char *dst, const char *value)
{
    size_t len = strlen(value);
    if (len >= k->size)
        return rv_errf(-EINVAL, "config: %s: value longer than %zu bytes", k->name, k->size - 1);
    if (k->type == CONFIG_PATH && len == 0)
        return rv_errf(-EINVAL, "config: %s: empty", k->name);
    if (k->type == CONFIG_PATH && strchr(value, ',') != NULL)
        return rv_errf(-EINVAL, "config: %s=%s: only one directory is supported", k->name, value);
    if (k->type == CONFIG_CPUSET && !config_cpuset_is_valid(value))
        return rv_errf(-EINVAL, "config: %s=%s: expected CPU numbers and ranges, e.g. 0-3,8",
                       k->name, value);
    memset(dst, 0, k->size);
    memcpy(dst, value, len);
    return 0;
}

static int config_set_listeners(const struct config_key *k, struct rv_config *cfg,
                                const char *value)
{
    /* Zeroed so unused bytes and entries compare equal (dump, read back). */
    struct rv_config_listener tmp[RV_CONFIG_LISTENERS_MAX];
    memset(tmp, 0, sizeof(tmp));
    int n = 0;
    if (value[0] != '\0' || !k->is_empty_ok) {
        n = rv_config_parse_listeners(value, tmp, RV_ARRAY_LEN(tmp));
        if (n < 0) {
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "config: %s=%.64s", k->name, value);
            return config_wrap(n, prefix);
        }
    }
    bool is_advertised = k->offset == offsetof(struct rv_config, advertised);
    for (int i = 0; is_advertised && i < n; i++) {
        if (tmp[i].host[0] == '\0' || strcmp(tmp[i].host, "0.0.0.0") == 0 ||
            strcmp(tmp[i].host, "::") == 0 || tmp[i].port == 0)
            return rv_errf(-EINVAL, "config: %s=%s: clients need a host and a port to connect to",
                           k->name, value);
    }
    RV_ASSERT(k->size == sizeof(tmp));
    memcpy((char *)cfg + k->offset, tmp, sizeof(tmp));
    *(uint32_t *)((char *)cfg + k->count_offset) = (uint32_t)n;
    return 0;
}

static int config_parse_endpoint(const char *s, size_t len, struct rv_config_listener *out);

/* host:port, or "" (off). */
static int config_set_endpoint(const struct config_key *k, struct rv_config *cfg, const char *value)
{
    struct rv_config_listener tmp;
    memset(&tmp, 0, sizeof(tmp)); /* unused bytes compare equal (dump, read back) */
    bool is_on = value[0] != '\0';
    if (is_on) {
        int rc = config_parse_endpoint(value, strlen(value), &tmp);
        if (rc < 0) {
            char prefix[128];
            snprintf(prefix, sizeof(prefix), "config: %s=%.64s", k->name, value);
            return config_wrap(rc, prefix);
        }
    }
    RV_ASSERT(k->size == sizeof(tmp));
    memcpy((char *)cfg + k->offset, &tmp, sizeof(tmp));
    *(bool *)((char *)cfg + k->count_offset) = is_on;
    return 0;
}

static int config_set_number(const struct config_key *k, void *dst, const char *value)
{
    int64_t v = 0;
    int rc = config_parse_i64(k, value, &v);
    if (rc < 0)
        return rc;
    if (k->type == CONFIG_I64)
        *(int64_t *)dst = v;
    else if (k->type == CONFIG_I32)
        *(int32_t *)dst = (int32_t)v;
    else
        *(uint32_t *)dst = (uint32_t)v;
    return 0;
}

int rv_config_set(struct rv_config *cfg, const char *key, const char *value)
{
    RV_ASSERT(cfg != NULL && key != NULL && value != NULL);
    const struct config_key *k = config_find(key);
    if (k == NULL)
        return rv_errf(-EINVAL, "config: unknown key '%s' (rivvend --help lists them)", key);
    void *dst = (char *)cfg + k->offset;
    int index;
    switch (k->type) {
    case CONFIG_BOOL:
        index = config_word_index("false|true", value);
        if (index < 0)
            return rv_errf(-EINVAL, "config: %s=%s: expected true or false", key, value);
        *(bool *)dst = index == 1;
        return 0;
    case CONFIG_I32:
    case CONFIG_I64:
    case CONFIG_U32: return config_set_number(k, dst, value);
    case CONFIG_PATH:
    case CONFIG_CPUSET: return config_set_text(k, dst, value);
    case CONFIG_WORD:
    case CONFIG_CHOICE:
        index = config_word_index(k->words, value);
        if (index < 0)
            return rv_errf(-EINVAL, "config: %s=%s: expected one of %s", key, value, k->words);
        if (k->type == CONFIG_WORD)
            config_word_copy(k->words, index, dst, k->size);
        else
            *(int32_t *)dst = k->values[index];
        return 0;
    case CONFIG_LISTENERS: return config_set_listeners(k, cfg, value);
    case CONFIG_ENDPOINT: return config_set_endpoint(k, cfg, value);
    }
    RV_ASSERT(!"config key of unknown type");
    return -EINVAL;
}

void rv_config_init(struct rv_config *cfg)
{
    RV_STATIC_ASSERT(sizeof(enum rv_io_backend) == sizeof(int32_t));
    RV_STATIC_ASSERT(sizeof(enum rv_wal_io) == sizeof(int32_t));
    RV_STATIC_ASSERT(sizeof(bool) == 1);
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < RV_ARRAY_LEN(config_keys); i++) {
        int rc = rv_config_set(cfg, config_keys[i].name, config_keys[i].def);
        RV_ASSERT(rc == 0); /* the defaults are ours, not user input */
    }
    RV_ASSERT(cfg->listener_count >= 1);
}

/* ---- listeners --------------------------------------------------------------- */

static bool config_host_char_is_valid(char c, bool is_bracketed)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    if (c == '.' || c == '-' || c == '_')
        return true;
    return is_bracketed && (c == ':' || c == '%');
}

/* host:port (host may be [v6] or empty) of one entry, `len` bytes at s. */
static int config_parse_endpoint(const char *s, size_t len, struct rv_config_listener *out)
{
    const char *colon = NULL;
    for (size_t i = len; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = &s[i - 1];
            break;
        }
    }
    if (colon == NULL)
        return rv_errf(-EINVAL, "'%.*s' has no :port", (int)len, s);
    const char *host = s;
    size_t host_len = (size_t)(colon - s);
    bool is_bracketed = host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']';
    if (is_bracketed) {
        host++;
        host_len -= 2;
    }
    if (host_len >= sizeof(out->host))
        return rv_errf(-EINVAL, "host name longer than %zu bytes", sizeof(out->host) - 1);
    for (size_t i = 0; i < host_len; i++) {
        if (!config_host_char_is_valid(host[i], is_bracketed))
            return rv_errf(-EINVAL, "bad host '%.*s'", (int)(colon - s), s);
    }
    const char *port = colon + 1;
    size_t port_len = len - (size_t)(port - s);
    unsigned long v = 0;
    for (size_t i = 0; i < port_len && v <= 65535; i++) {
        if (port[i] < '0' || port[i] > '9')
            return rv_errf(-EINVAL, "bad port '%.*s'", (int)port_len, port);
        v = v * 10 + (unsigned long)(port[i] - '0');
    }
    if (port_len == 0 || v > 65535)
        return rv_errf(-EINVAL, "port '%.*s' not in [0, 65535]", (int)port_len, port);
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = (uint16_t)v;
    return 0;
}

/* NAME://host:port, `len` bytes at s. */
static int config_parse_listener(const char *s, size_t len, struct rv_config_listener *out)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 3 <= len; i++) {
        if (memcmp(&s[i], "://", 3) == 0) {
            sep = &s[i];
            break;
        }
    }
    if (sep == NULL || sep == s)
        return rv_errf(-EINVAL, "'%.*s' is not NAME://host:port", (int)len, s);
    size_t name_len = (size_t)(sep - s);
    if (name_len >= sizeof(out->name))
        return rv_errf(-EINVAL, "listener name longer than %zu bytes", sizeof(out->name) - 1);
    for (size_t i = 0; i < name_len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return rv_errf(-EINVAL, "bad listener name '%.*s'", (int)name_len, s);
    }
    if (name_len != 9 || strncasecmp(s, "PLAINTEXT", 9) != 0)
        return rv_errf(-EINVAL, "listener '%.*s': only PLAINTEXT is implemented", (int)name_len, s);
    int rc = config_parse_endpoint(sep + 3, len - name_len - 3, out);
    if (rc < 0)
        return rc;
    memcpy(out->name, "PLAINTEXT", 10);
    return 0;
}

int rv_config_parse_listeners(const char *text, struct rv_config_listener *out, uint32_t cap)
{
    RV_ASSERT(text != NULL && out != NULL);
    uint32_t n = 0;
    const char *s = text;
    for (;;) {
        size_t len = strcspn(s, ",");
        while (len > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            len--;
        }
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (n == cap)
            return rv_errf(-EINVAL, "more than %u listeners", cap);
        int rc = config_parse_listener(s, len, &out[n]);
        if (rc < 0)
            return rc;
        for (uint32_t i = 0; i < n; i++) {
            if (strcmp(out[i].name, out[n].name) == 0)
                return rv_errf(-EINVAL, "listener name %s given twice", out[n].name);
        }
        n++;
        s += strcspn(s, ",");
        if (*s == '\0')
            break;
        s++;
    }
    return (int)n;
}

const struct rv_config_listener *rv_config_advertised(const struct rv_config *cfg,
                                                      uint32_t *out_count)
{
    if (cfg->advertised_count > 0) {
        *out_count = cfg->advertised_count;
        return cfg->advertised;
    }
    *out_count = cfg->listener_count;
    return cfg->listeners;
}

/* ---- properties text ---------------------------------------------------------- */

static bool config_is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\r';
}

/* Split a logical line into key and value in place, as java.util.Properties:
 * the key ends at the first '=', ':' or blank; one '=' or ':' may follow. */
static int config_apply_line(struct rv_config *cfg, char *line, const char *origin,
                             uint32_t line_no)
{
    while (config_is_blank(*line))
        line++;
    if (*line == '\0' || *line == '#' || *line == '!')
        return 0;
    char *key = line;
    size_t key_len = strcspn(key, "=: \t\f\r");
    char *p = key + key_len;
    while (config_is_blank(*p))
        p++;
    if (*p == '=' || *p == ':')
        p++;
    while (config_is_blank(*p))
        p++;
    char *value = p;
    size_t value_len = strlen(value);
    while (value_len > 0 && config_is_blank(value[value_len - 1]))
        value[--value_len] = '\0';
    key[key_len] = '\0';
    if (key_len == 0)
        return rv_errf(-EINVAL, "%s:%u: a line with no key", origin, line_no);
    int rc = rv_config_set(cfg, key, value);
    if (rc < 0) {
        char prefix[256];
        snprintf(prefix, sizeof(prefix), "%s:%u", origin, line_no);
        return config_wrap(rc, prefix);
    }
    return 0;
}

/* A physical line continues on the next when it ends in an odd number of
 * backslashes (which one is then dropped). */
static bool config_line_continues(const char *s, size_t len)
{
    size_t slashes = 0;
    while (slashes < len && s[len - 1 - slashes] == '\\')
        slashes++;
    return slashes % 2 == 1;
}

int rv_config_parse_text(struct rv_config *cfg, const char *text, const char *origin)
{
    RV_ASSERT(cfg != NULL && text != NULL && origin != NULL);
    char *line = malloc(RV_CONFIG_LINE_MAX);
    if (line == NULL)
        return -ENOMEM;
    int rc = 0;
    uint32_t line_no = 0;
    const char *s = text;
    while (*s != '\0' && rc == 0) {
        uint32_t first_line = line_no + 1;
        size_t used = 0;
        bool is_continued = true;
        while (is_continued && *s != '\0') {
            size_t len = strcspn(s, "\n");
            line_no++;
            const char *part = s;
            s += len + (s[len] == '\n');
            if (used > 0) { /* a continuation drops its leading blanks */
                while (len > 0 && config_is_blank(*part)) {
                    part++;
                    len--;
                }
            }
            is_continued = config_line_continues(part, len) && part[0] != '#' && part[0] != '!';
            if (is_continued)
                len--;
            if (used + len >= RV_CONFIG_LINE_MAX) {
                rc = rv_errf(-EINVAL, "%s:%u: line longer than %u bytes", origin, first_line,
                             RV_CONFIG_LINE_MAX - 1);
                break;
            }
            memcpy(line + used, part, len);
            used += len;
        }
        line[used] = '\0';
        if (rc == 0)
            rc = config_apply_line(cfg, line, origin, first_line);
    }
    free(line);
    return rc;
}

int rv_config_load_file(struct rv_config *cfg, const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int err = -errno;
        return rv_errf(err, "config: cannot open %s: %s", path, rv_strerror(err));
    }
    int rc = 0;
    char *text = malloc(CONFIG_FILE_BYTES_MAX + 1);
    if (text == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    size_t n = fread(text, 1, CONFIG_FILE_BYTES_MAX + 1, f);
    if (ferror(f)) {
        rc = rv_errf(-EIO, "config: cannot read %s", path);
        goto out_free;
    }
    if (n > CONFIG_FILE_BYTES_MAX) {
        rc = rv_errf(-EFBIG, "config: %s is over %u bytes", path, CONFIG_FILE_BYTES_MAX);
        goto out_free;
    }
    text[n] = '\0';
    if (strlen(text) != n) {
        rc = rv_errf(-EINVAL, "config: %s holds a NUL byte", path);
        goto out_free;
    }
    rc = rv_config_parse_text(cfg, text, path);
out_free:
    free(text);
out_close:
    fclose(f);
    return rc;
}

/* ---- command line --------------------------------------------------------------- */

/* Find the file and help; check that every other argument is a --key=value. */
static int config_scan_args(int argc, char *const *argv, const char **out_file, bool *out_is_help)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *file = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *out_is_help = true;
            continue;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 == argc)
                return rv_errf(-EINVAL, "%s needs a file name", a);
            file = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            file = a + 9;
        } else if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '=') {
            return rv_errf(-EINVAL, "unexpected argument '%s' (expected --key=value)", a);
        } else if (strchr(a, '=') == NULL) {
            return rv_errf(-EINVAL, "%s: missing =value", a);
        }
        if (file != NULL && *out_file != NULL)
            return rv_errf(-EINVAL, "more than one config file given");
        if (file != NULL)
            *out_file = file;
    }
    return 0;
}

static int config_apply_flag(struct rv_config *cfg, const char *arg)
{
    const char *eq = strchr(arg, '=');
    size_t key_len = (size_t)(eq - arg) - 2;
    char key[128];
    if (key_len >= sizeof(key))
        return rv_errf(-EINVAL, "config: unknown key '%.*s'", (int)key_len, arg + 2);
    memcpy(key, arg + 2, key_len);
    key[key_len] = '\0';
    int rc = rv_config_set(cfg, key, eq + 1);
    if (rc < 0)
        return config_wrap(rc, "command line");
    return 0;
}

int rv_config_from_args(struct rv_config *cfg, int argc, char *const *argv, bool *out_is_help)
{
    RV_ASSERT(cfg != NULL && argv != NULL && out_is_help != NULL);
    const char *file = NULL;
    *out_is_help = false;
    int rc = config_scan_args(argc, argv, &file, out_is_help);
    if (rc < 0 || *out_is_help)
        return rc;
    if (file != NULL) {
        rc = rv_config_load_file(cfg, file);
        if (rc < 0)
            return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0)
            continue;
        rc = config_apply_flag(cfg, a);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- help and dump ---------------------------------------------------------------- */

static const char *config_type_name(const struct config_key *k)
{
    switch (k->type) {
    case CONFIG_BOOL: return "boolean";
    case CONFIG_I32:
    case CONFIG_I64:
    case CONFIG_U32: return "integer";
    case CONFIG_PATH: return "path";
    case CONFIG_CPUSET: return "cpu list";
    case CONFIG_WORD:
    case CONFIG_CHOICE: return k->words;
    case CONFIG_LISTENERS: return "listener list";
    case CONFIG_ENDPOINT: return "host:port";
    }
    return "?";
}

void rv_config_help(FILE *f)
{
    fprintf(f, "Configuration keys (in a -c FILE as key=value, or as --key=value flags):\n");
    for (size_t i = 0; i < RV_ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        fprintf(f, "  %s=%s\n      %s [%s", k->name, k->def, k->meaning, config_type_name(k));
        if (k->type == CONFIG_I32 || k->type == CONFIG_I64 || k->type == CONFIG_U32)
            fprintf(f, " %s%" PRId64 "..%" PRId64, k->is_minus_one_ok ? "-1 or " : "", k->min,
                    k->max);
        fprintf(f, "]\n");
    }
}

static void config_dump_listeners(const struct rv_config_listener *l, uint32_t n, FILE *f)
{
    for (uint32_t i = 0; i < n; i++) {
        bool is_v6 = strchr(l[i].host, ':') != NULL;
        fprintf(f, "%s%s://%s%s%s:%u", i > 0 ? "," : "", l[i].name, is_v6 ? "[" : "", l[i].host,
                is_v6 ? "]" : "", l[i].port);
    }
}

static void config_dump_word(const struct config_key *k, const void *src, FILE *f)
{
    int32_t v = *(const int32_t *)src;
    const char *w = k->words;
    for (int i = 0; *w != '\0'; i++) {
        size_t len = strcspn(w, "|");
        if (k->values[i] == v) {
            fprintf(f, "%.*s", (int)len, w);
            return;
        }
        w += len + (w[len] == '|');
    }
}

void rv_config_dump(const struct rv_config *cfg, FILE *f)
{
    for (size_t i = 0; i < RV_ARRAY_LEN(config_keys); i++) {
        const struct config_key *k = &config_keys[i];
        const void *src = (const char *)cfg + k->offset;
        fprintf(f, "%s=", k->name);
        switch (k->type) {
        case CONFIG_BOOL: fprintf(f, "%s", *(const bool *)src ? "true" : "false"); break;
        case CONFIG_I32: fprintf(f, "%" PRId32, *(const int32_t *)src); break;
        case CONFIG_I64: fprintf(f, "%" PRId64, *(const int64_t *)src); break;
        case CONFIG_U32: fprintf(f, "%" PRIu32, *(const uint32_t *)src); break;
        case CONFIG_PATH:
        case CONFIG_CPUSET:
        case CONFIG_WORD: fprintf(f, "%s", (const char *)src); break;
        case CONFIG_CHOICE: config_dump_word(k, src, f); break;
        case CONFIG_LISTENERS:
            config_dump_listeners(src, *(const uint32_t *)((const char *)cfg + k->count_offset), f);
            break;
        case CONFIG_ENDPOINT:
            if (*(const bool *)((const char *)cfg + k->count_offset)) {
                const struct rv_config_listener *l = src;
                bool is_v6 = strchr(l->host, ':') != NULL;
                fprintf(f, "%s%s%s:%u", is_v6 ? "[" : "", l->host, is_v6 ? "]" : "", l->port);
            }
            break;
        }
        fprintf(f, "\n");
    }
}
