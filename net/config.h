/*
 * net/config.h - the broker's configuration: Kafka's properties-style file,
 * overridden by `--key=value` flags.
 *
 * Every key the broker knows is in one table (net/config.c) with its type, its
 * default and a one-line meaning; rv_config_help prints that table. Defaults
 * are parsed from their text by the same code as user values, so the help and
 * the behaviour cannot drift apart. An unknown key or a value that does not
 * parse is -EINVAL with a message naming the key (rv_err_msg), never a silent
 * fallback: the broker refuses to start on a config it does not understand.
 *
 * Ownership and threading: a struct rv_config is a plain value filled on the
 * main thread before the runtime opens; afterwards it is read-only and may be
 * read from any shard.
 */
#ifndef RV_NET_CONFIG_H
#define RV_NET_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/assert.h"
#include "rivven.h"

#define RV_CONFIG_LISTENERS_MAX 8    /* entries of listeners / advertised.listeners */
#define RV_CONFIG_HOST_MAX      256  /* bytes of a host name, with its NUL */
#define RV_CONFIG_NAME_MAX      32   /* bytes of a listener name, with its NUL */
#define RV_CONFIG_PATH_MAX      4096 /* bytes of log.dirs, with its NUL */
#define RV_CONFIG_CPUSET_MAX    256  /* bytes of rivven.cpuset, with its NUL */
#define RV_CONFIG_LINE_MAX      8192 /* bytes of one logical line of a config file */

/* One endpoint of `listeners` or `advertised.listeners`: NAME://host:port. */
struct rv_config_listener {
    char name[RV_CONFIG_NAME_MAX]; /* the listener (and security protocol) name */
    char host[RV_CONFIG_HOST_MAX]; /* "" means every interface; IPv6 without brackets */
    uint16_t port;                 /* 0: the system picks one */
};

struct rv_config {
    struct rv_config_listener listeners[RV_CONFIG_LISTENERS_MAX];
    uint32_t listener_count; /* >= 1 */
    struct rv_config_listener advertised[RV_CONFIG_LISTENERS_MAX];
    uint32_t advertised_count; /* 0: advertise the listeners */
    int32_t node_id;           /* node.id: the first advertised broker id */
    char log_dirs[RV_CONFIG_PATH_MAX];
    int32_t num_partitions;            /* partitions of auto-created topics */
    bool is_auto_create_topics;        /* auto.create.topics.enable */
    int64_t log_retention_ms;          /* -1: keep forever */
    int64_t log_ts_before_max_ms;      /* log.message.timestamp.before.max.ms */
    int64_t log_ts_after_max_ms;       /* log.message.timestamp.after.max.ms */
    int64_t log_retention_bytes;       /* per partition; -1: no limit */
    int64_t log_segment_bytes;         /* roll a segment at this size */
    int64_t log_roll_ms;               /* roll a segment at this age */
    int32_t message_max_bytes;         /* largest record batch a topic takes */
    char compression_type[16];         /* producer|none|gzip|snappy|lz4|zstd */
    int32_t socket_request_max_bytes;  /* largest request frame */
    int64_t connections_max_idle_ms;   /* close idle connections; -1: never */
    uint32_t shard_count;              /* rivven.shards: 0 = one per CPU of the cpuset */
    char cpuset[RV_CONFIG_CPUSET_MAX]; /* rivven.cpuset: "" = the process's CPUs */
    enum rv_io_backend io_backend;     /* rivven.io.backend */
    enum rv_wal_io wal_io;             /* rivven.wal.io */
    enum rv_wal_io segment_io;         /* rivven.segment.io */
    uint32_t wal_group_bytes;          /* rivven.wal.group.bytes: 0 = the store's default */
    uint32_t wal_group_window_us;      /* rivven.wal.group.window.us */
    uint32_t log_idle_unload_ms;       /* rivven.log.idle.unload.ms: 0 = never */
    uint32_t segment_backlog_bytes;    /* rivven.segment.backlog.bytes: 0 = the store's default */
    bool is_advertise_shards;          /* rivven.advertise.shards */
    int32_t trace_level;               /* rivven.trace.level: enum rv_trace_level */

    /* Consumer groups (net/kgroup_api.c). */
    int32_t group_initial_rebalance_delay_ms; /* an empty group's first rebalance waits */
    int32_t group_min_session_timeout_ms;     /* the smallest session.timeout.ms */
    int32_t group_max_session_timeout_ms;     /* the largest session.timeout.ms */
    int32_t offsets_retention_minutes;        /* committed offsets of an empty group expire */
    int64_t offsets_retention_check_interval_ms;
    int64_t offsets_retention_ms; /* rivven.offsets.retention.ms: -1 = use the minutes */

    /* rivven.admin.listener: host and port; has_admin_listener is false when
     * the key is empty (no admin HTTP). */
    struct rv_config_listener admin_listener;
    bool has_admin_listener;
};

/* ---- lifecycle ------------------------------------------------------------ */

/* Every key at its default. Cannot fail. */
void rv_config_init(struct rv_config *cfg);

/* ---- parsing -------------------------------------------------------------- */

/*
 * Set one key from its text value (surrounding blanks already trimmed).
 * -EINVAL for an unknown key or a value that does not parse, with rv_err_msg
 * naming the key and the value; on failure *cfg is unchanged.
 */
RV_MUST_CHECK int rv_config_set(struct rv_config *cfg, const char *key, const char *value);

/*
 * Apply the lines of a properties text: `key=value` (also `key: value` and
 * `key value`, as Java properties), `#` or `!` comment lines, blank lines,
 * surrounding whitespace trimmed, a line ending in a backslash continued on the
 * next. Later lines override earlier ones. `origin` names the text in errors
 * ("FILE:LINE: ..."). -EINVAL as rv_config_set; keys before the bad line stay
 * applied.
 */
RV_MUST_CHECK int rv_config_parse_text(struct rv_config *cfg, const char *text, const char *origin);

/* Read `path` and apply it as rv_config_parse_text. -errno when the file cannot
 * be read (rv_err_msg names it), -EINVAL, -EFBIG for a file over 1 MiB. */
RV_MUST_CHECK int rv_config_load_file(struct rv_config *cfg, const char *path);

/*
 * The command line: `[-c FILE | --config=FILE] [--key=value ...] [-h | --help]`.
 * The file is applied first, then the flags in order, whatever their position.
 * Sets *out_is_help when help was asked for (nothing else is applied then).
 * -EINVAL for an unknown flag or key, a missing value or a stray argument.
 */
RV_MUST_CHECK int rv_config_from_args(struct rv_config *cfg, int argc, char *const *argv,
                                      bool *out_is_help);

/*
 * Parse a listener list "NAME://host:port[,NAME://host:port...]" into out
 * (cap entries). Hosts are names, IPv4 addresses, bracketed IPv6 addresses or
 * empty (every interface). Only the PLAINTEXT listener is implemented. Returns
 * the number of entries or -EINVAL (rv_err_msg says why).
 */
RV_MUST_CHECK int rv_config_parse_listeners(const char *text, struct rv_config_listener *out,
                                            uint32_t cap);

/* ---- queries -------------------------------------------------------------- */

/* The endpoints clients are told about: advertised.listeners, else listeners. */
const struct rv_config_listener *rv_config_advertised(const struct rv_config *cfg,
                                                      uint32_t *out_count);

/* Write every key with its type, default and meaning to f. */
void rv_config_help(FILE *f);

/* Write every key with its current value, as a properties file, to f. */
void rv_config_dump(const struct rv_config *cfg, FILE *f);

#endif /* RV_NET_CONFIG_H */
