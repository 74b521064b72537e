/*
 * tests/net/test_config.c - the broker configuration: defaults, properties
 * files (comments, blanks, separators, continuations), flags overriding the
 * file, unknown keys and bad values named in the error, listener parsing, help.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/trace.h"
#include "net/config.h"

TestSuite(config);

/* A temporary file holding `text`; the caller unlinks it. */
static char *write_temp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/rv-config-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static int from_args(struct rv_config *cfg, bool *is_help, int argc, char **argv)
{
    return rv_config_from_args(cfg, argc, argv, is_help);
}

Test(config, defaults_are_kafkas_and_one_shard_per_core)
{
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(cfg.listener_count, 1);
    cr_assert_str_eq(cfg.listeners[0].name, "PLAINTEXT");
    cr_assert_str_eq(cfg.listeners[0].host, "127.0.0.1");
    cr_assert_eq(cfg.listeners[0].port, 9092);
    cr_assert_eq(cfg.advertised_count, 0);
    cr_assert_str_eq(cfg.log_dirs, "./data");
    cr_assert_eq(cfg.num_partitions, 1);
    cr_assert(cfg.is_auto_create_topics);
    cr_assert_eq(cfg.log_retention_ms, 604800000);
    cr_assert_eq(cfg.log_retention_bytes, -1);
    cr_assert_eq(cfg.log_segment_bytes, 1073741824);
    cr_assert_eq(cfg.socket_request_max_bytes, 104857600);
    cr_assert_eq(cfg.connections_max_idle_ms, 600000);
    cr_assert_eq(cfg.shard_count, 0);
    cr_assert_str_eq(cfg.cpuset, "");
    cr_assert_eq(cfg.io_backend, RV_IO_AUTO);
    cr_assert(cfg.is_advertise_shards);
    cr_assert_str_eq(cfg.compression_type, "producer");
    uint32_t n = 0;
    const struct rv_config_listener *adv = rv_config_advertised(&cfg, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(adv, cfg.listeners);
}

Test(config, file_with_comments_blanks_and_separators)
{
    const char *text = "# a comment\n"
                       "! another comment\n"
                       "\n"
                       "   \t\n"
                       "  log.dirs = /tmp/some dir  \n"
                       "num.partitions:6\n"
                       "auto.create.topics.enable  FALSE\r\n"
                       "rivven.io.backend=epoll\n"
                       "rivven.cpuset=0-1,3\n"
                       "listeners=PLAINTEXT://:19092\n"
                       "log.retention.ms=-1\n"
                       "rivven.shards=2";
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_parse_text(&cfg, text, "t"), 0, "%s", rv_err_msg());
    cr_assert_str_eq(cfg.log_dirs, "/tmp/some dir");
    cr_assert_eq(cfg.num_partitions, 6);
    cr_assert_not(cfg.is_auto_create_topics);
    cr_assert_eq(cfg.io_backend, RV_IO_EPOLL);
    cr_assert_str_eq(cfg.cpuset, "0-1,3");
    cr_assert_str_eq(cfg.listeners[0].host, "");
    cr_assert_eq(cfg.listeners[0].port, 19092);
    cr_assert_eq(cfg.log_retention_ms, -1);
    cr_assert_eq(cfg.shard_count, 2);
}

Test(config, later_lines_win_and_backslash_continues_a_line)
{
    const char *text = "num.partitions=2\n"
                       "num.partitions=3\n"
                       "listeners=PLAINTEXT://\\\n"
                       "    127.0.0.1:\\\n"
                       "    9999\n"
                       "# a comment ending in a backslash does not continue \\\n"
                       "log.dirs=/x\n";
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_parse_text(&cfg, text, "t"), 0, "%s", rv_err_msg());
    cr_assert_eq(cfg.num_partitions, 3);
    cr_assert_str_eq(cfg.listeners[0].host, "127.0.0.1");
    cr_assert_eq(cfg.listeners[0].port, 9999);
    cr_assert_str_eq(cfg.log_dirs, "/x");
}

Test(config, unknown_key_is_an_error_naming_it_and_its_line)
{
    struct rv_config cfg;
    rv_config_init(&cfg);
    int rc = rv_config_parse_text(&cfg, "num.partitions=4\n\nno.such.key=1\n", "f.properties");
    cr_assert_eq(rc, -EINVAL);
    cr_assert(strstr(rv_err_msg(), "no.such.key") != NULL, "%s", rv_err_msg());
    cr_assert(strstr(rv_err_msg(), "f.properties:3") != NULL, "%s", rv_err_msg());
    cr_assert_eq(rv_config_set(&cfg, "Num.Partitions", "1"), -EINVAL);
    cr_assert_eq(rv_config_parse_text(&cfg, "=5\n", "t"), -EINVAL);
}

Test(config, bad_values_are_errors_and_leave_the_value_unchanged)
{
    static const char *const bad[][2] = {
        {"num.partitions", "0"},
        {"num.partitions", "abc"},
        {"num.partitions", "3x"},
        {"num.partitions", ""},
        {"num.partitions", "99999999999999999999"},
        {"log.retention.ms", "-2"},
        {"log.segment.bytes", "13"},
        {"log.segment.bytes", "4294967296"},
        {"socket.request.max.bytes", "0"},
        {"socket.request.max.bytes", "-1"},
        {"connections.max.idle.ms", "0"},
        {"auto.create.topics.enable", "yes"},
        {"rivven.io.backend", "kqueue"},
        {"rivven.wal.io", "mmap"},
        {"rivven.log.idle.unload.ms", "-1"},
        {"rivven.log.idle.unload.ms", "4294967295"},
        {"rivven.shards", "257"},
        {"rivven.shards", "-1"},
        {"rivven.cpuset", "a-b"},
        {"rivven.cpuset", "3-1"},
        {"rivven.cpuset", "1,"},
        {"log.dirs", ""},
        {"log.dirs", "/a,/b"},
        {"compression.type", "brotli"},
        {"rivven.trace.level", "loud"},
        {"listeners", ""},
        {"advertised.listeners", "PLAINTEXT://0.0.0.0:9092"},
        {"advertised.listeners", "PLAINTEXT://:9092"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rv_config cfg, before;
        rv_config_init(&cfg);
        before = cfg;
        int rc = rv_config_set(&cfg, bad[i][0], bad[i][1]);
        cr_assert_eq(rc, -EINVAL, "%s=%s accepted", bad[i][0], bad[i][1]);
        cr_assert(strstr(rv_err_msg(), bad[i][0]) != NULL, "%s", rv_err_msg());
        cr_assert(memcmp(&cfg, &before, sizeof(cfg)) == 0, "%s=%s changed cfg", bad[i][0],
                  bad[i][1]);
    }
}

Test(config, good_values_of_every_type)
{
    struct rv_config cfg;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_set(&cfg, "rivven.io.backend", "io_uring"), 0);
    cr_assert_eq(cfg.io_backend, RV_IO_URING);
    cr_assert_eq(rv_config_set(&cfg, "rivven.io.backend", "URING"), 0);
    cr_assert_eq(cfg.io_backend, RV_IO_URING);
    cr_assert_eq(cfg.wal_io, RV_WAL_IO_AUTO, "the default");
    cr_assert_eq(rv_config_set(&cfg, "rivven.wal.io", "buffered"), 0);
    cr_assert_eq(cfg.wal_io, RV_WAL_IO_BUFFERED);
    cr_assert_eq(rv_config_set(&cfg, "rivven.wal.io", "direct"), 0);
    cr_assert_eq(cfg.wal_io, RV_WAL_IO_DIRECT);
    cr_assert_eq(cfg.log_idle_unload_ms, 300000, "the default");
    cr_assert_eq(rv_config_set(&cfg, "rivven.log.idle.unload.ms", "0"), 0);
    cr_assert_eq(cfg.log_idle_unload_ms, 0, "never");
    cr_assert_eq(rv_config_set(&cfg, "compression.type", "ZSTD"), 0);
    cr_assert_str_eq(cfg.compression_type, "zstd");
    cr_assert_eq(rv_config_set(&cfg, "rivven.trace.level", "debug"), 0);
    cr_assert_eq(cfg.trace_level, RV_TRACE_DEBUG);
    cr_assert_eq(rv_config_set(&cfg, "connections.max.idle.ms", "-1"), 0);
    cr_assert_eq(cfg.connections_max_idle_ms, -1);
    cr_assert_eq(rv_config_set(&cfg, "log.retention.bytes", "0"), 0);
    cr_assert_eq(rv_config_set(&cfg, "rivven.advertise.shards", "false"), 0);
    cr_assert_not(cfg.is_advertise_shards);
    cr_assert_eq(rv_config_set(&cfg, "rivven.cpuset", ""), 0);
    cr_assert_eq(rv_config_set(&cfg, "advertised.listeners", "PLAINTEXT://broker.example:9093"), 0);
    uint32_t n = 0;
    const struct rv_config_listener *adv = rv_config_advertised(&cfg, &n);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(adv[0].host, "broker.example");
    cr_assert_eq(adv[0].port, 9093);
    cr_assert_eq(rv_config_set(&cfg, "advertised.listeners", ""), 0);
    cr_assert_eq(cfg.advertised_count, 0);
}

Test(config, listeners_parse_host_and_port)
{
    struct rv_config_listener l[4];
    cr_assert_eq(rv_config_parse_listeners("PLAINTEXT://localhost:9092", l, 4), 1);
    cr_assert_str_eq(l[0].host, "localhost");
    cr_assert_eq(l[0].port, 9092);
    cr_assert_eq(rv_config_parse_listeners("plaintext://[::1]:0", l, 4), 1);
    cr_assert_str_eq(l[0].name, "PLAINTEXT");
    cr_assert_str_eq(l[0].host, "::1");
    cr_assert_eq(l[0].port, 0);
    cr_assert_eq(rv_config_parse_listeners(" PLAINTEXT://10.1.2.3:65535 ", l, 4), 1);
    cr_assert_str_eq(l[0].host, "10.1.2.3");
    cr_assert_eq(l[0].port, 65535);
}

Test(config, listener_errors)
{
    static const char *const bad[] = {
        "",
        "127.0.0.1:9092",
        "PLAINTEXT://127.0.0.1",
        "PLAINTEXT://127.0.0.1:",
        "PLAINTEXT://127.0.0.1:65536",
        "PLAINTEXT://127.0.0.1:99999999999",
        "PLAINTEXT://127.0.0.1:-1",
        "PLAINTEXT://127.0.0.1:90x",
        "PLAINTEXT://::1:9092",
        "PLAINTEXT://[::1:9092",
        "PLAINTEXT://ho st:9092",
        "SSL://127.0.0.1:9093",
        "://127.0.0.1:9092",
        "PLAIN TEXT://127.0.0.1:9092",
        "PLAINTEXT://a:1,PLAINTEXT://b:2",
        "PLAINTEXT://a:1,",
    };
    struct rv_config_listener l[4];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = rv_config_parse_listeners(bad[i], l, 4);
        cr_assert_eq(rc, -EINVAL, "'%s' gave %d", bad[i], rc);
        cr_assert_neq(rv_err_msg()[0], '\0');
    }
}

Test(config, flags_override_the_file_whatever_their_position)
{
    char *path = write_temp("num.partitions=4\nlog.dirs=/from/file\nrivven.shards=1\n");
    char *argv[] = {"rivvend", "--num.partitions=8", "-c", path, "--log.dirs=/from/flag", NULL};
    struct rv_config cfg;
    rv_config_init(&cfg);
    bool is_help = true;
    int rc = from_args(&cfg, &is_help, 5, argv);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", rv_err_msg());
    cr_assert_not(is_help);
    cr_assert_eq(cfg.num_partitions, 8);
    cr_assert_str_eq(cfg.log_dirs, "/from/flag");
    cr_assert_eq(cfg.shard_count, 1);
}

Test(config, config_flag_forms_and_no_arguments)
{
    char *path = write_temp("num.partitions=5\n");
    char arg[128];
    snprintf(arg, sizeof(arg), "--config=%s", path);
    char *argv[] = {"rivvend", arg, NULL};
    struct rv_config cfg;
    rv_config_init(&cfg);
    bool is_help = false;
    int rc = from_args(&cfg, &is_help, 2, argv);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", rv_err_msg());
    cr_assert_eq(cfg.num_partitions, 5);

    char *none[] = {"rivvend", NULL};
    rv_config_init(&cfg);
    cr_assert_eq(from_args(&cfg, &is_help, 1, none), 0);
    cr_assert_eq(cfg.num_partitions, 1);
}

Test(config, bad_command_lines)
{
    struct rv_config cfg;
    bool is_help = false;
    char *unknown[] = {"rivvend", "--no.such.key=1", NULL};
    char *no_value[] = {"rivvend", "--num.partitions", NULL};
    char *stray[] = {"rivvend", "file.properties", NULL};
    char *no_file[] = {"rivvend", "-c", NULL};
    char *two_files[] = {"rivvend", "-c", "a", "--config=b", NULL};
    char *missing[] = {"rivvend", "-c", "/nonexistent/rivven.properties", NULL};
    char *bad_value[] = {"rivvend", "--num.partitions=-3", NULL};
    char **lines[] = {unknown, no_value, stray, no_file, two_files, bad_value};
    int counts[] = {2, 2, 2, 2, 4, 2};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        rv_config_init(&cfg);
        cr_assert_eq(from_args(&cfg, &is_help, counts[i], lines[i]), -EINVAL, "line %zu", i);
    }
    cr_assert(strstr(rv_err_msg(), "num.partitions") != NULL, "%s", rv_err_msg());
    rv_config_init(&cfg);
    cr_assert_eq(from_args(&cfg, &is_help, 3, missing), -ENOENT);
    cr_assert(strstr(rv_err_msg(), "/nonexistent/rivven.properties") != NULL);
}

Test(config, help_stops_before_anything_is_applied)
{
    char *argv[] = {"rivvend", "--no.such.key=1x", "--help", "-c", "/nonexistent", NULL};
    struct rv_config cfg;
    rv_config_init(&cfg);
    bool is_help = false;
    cr_assert_eq(from_args(&cfg, &is_help, 5, argv), 0);
    cr_assert(is_help);
}

Test(config, help_lists_every_key_with_default_and_dump_reads_back)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rv_config_help(f);
    fclose(f);
    static const char *const keys[] = {"listeners=PLAINTEXT://127.0.0.1:9092",
                                       "advertised.listeners=",
                                       "log.dirs=./data",
                                       "num.partitions=1",
                                       "auto.create.topics.enable=true",
                                       "log.retention.ms=",
                                       "log.retention.bytes=-1",
                                       "log.segment.bytes=",
                                       "socket.request.max.bytes=104857600",
                                       "connections.max.idle.ms=600000",
                                       "rivven.shards=0",
                                       "rivven.cpuset=",
                                       "rivven.io.backend=auto",
                                       "rivven.advertise.shards=true"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_assert(strstr(buf, keys[i]) != NULL, "help lacks %s", keys[i]);
    free(buf);

    struct rv_config cfg, back;
    rv_config_init(&cfg);
    cr_assert_eq(rv_config_set(&cfg, "listeners", "PLAINTEXT://[::1]:19092"), 0);
    cr_assert_eq(rv_config_set(&cfg, "rivven.io.backend", "epoll"), 0);
    cr_assert_eq(rv_config_set(&cfg, "num.partitions", "7"), 0);
    f = open_memstream(&buf, &len);
    rv_config_dump(&cfg, f);
    fclose(f);
    rv_config_init(&back);
    cr_assert_eq(rv_config_parse_text(&back, buf, "dump"), 0, "%s\n%s", rv_err_msg(), buf);
    cr_assert(memcmp(&cfg, &back, sizeof(cfg)) == 0, "%s", buf);
    free(buf);
}
