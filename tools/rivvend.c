/*
 * tools/rivvend.c - the rivven broker.
 *
 *   rivvend [-c FILE] [--key=value ...] [--help]
 *
 * Reads the configuration (net/config.h: a properties file, then flags), opens
 * the shard runtime and the storage engine in log.dirs, starts the Kafka
 * server on every shard (net/server.h), and runs until SIGTERM or SIGINT; then
 * it stops the server (no more connections), closes the store (flushing and
 * checkpointing) and the runtime, and exits 0.
 *
 * Served today: the APIs of net/kapi.c's table (ApiVersions lists them).
 *
 * Admin HTTP (rivven.admin.listener, net/admin_http.h): started right after
 * the runtime, so /health answers and /ready says 503 while the store
 * recovers; the shards are marked serving once the server listens on every
 * one, and not serving again when stopping starts (/ready: 503 while the
 * connections drain). A port that cannot be bound is logged and the broker
 * runs without it.
 *
 * Signals: SIGTERM and SIGINT are blocked in the main thread before any other
 * thread exists, so every shard and helper thread inherits the mask and none of
 * them is ever interrupted; the main thread takes them from a signalfd. No code
 * runs in a signal handler. SIGPIPE is ignored: a peer that went away is an
 * error return on its socket, not a dead broker.
 *
 * Exit status: 0 after a clean shutdown, 1 when the runtime or the store cannot
 * start, 2 for a bad command line or configuration.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "core/err.h"
#include "core/trace.h"
#include "net/admin_http.h"
#include "net/config.h"
#include "net/metrics.h"
#include "net/server.h"
#include "rivven.h"

#define RIVVEND_EXIT_OK    0
#define RIVVEND_EXIT_START 1
#define RIVVEND_EXIT_USAGE 2

struct rivvend {
    struct rv_config cfg;
    int signal_fd; /* SIGTERM and SIGINT, blocked everywhere */
    rv_runtime_t *rt;
    rv_store_t *store;
    rv_server_t *server;
    bool has_metrics;       /* rv_metrics_open succeeded */
    rv_admin_http_t *admin; /* or NULL */
};

static void rivvend_usage(FILE *f)
{
    fprintf(f, "usage: rivvend [-c FILE] [--key=value ...] [--help]\n"
               "  -c, --config FILE  read key=value settings from FILE (flags override it)\n"
               "  -h, --help         this text\n\n");
    rv_config_help(f);
}

/* Block the shutdown signals in this (the only) thread and open a signalfd on
 * them. Threads created later inherit the mask. */
static int rivvend_signals_open(struct rivvend *d)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc != 0)
        return rv_errf(-rc, "pthread_sigmask");
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        return rv_errf(-errno, "ignore SIGPIPE");
    d->signal_fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (d->signal_fd < 0)
        return rv_errf(-errno, "signalfd");
    return 0;
}

/* Wait for SIGTERM or SIGINT; returns the signal number. */
static int rivvend_wait_signal(struct rivvend *d)
{
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(d->signal_fd, &si, sizeof(si));
        if (n == (ssize_t)sizeof(si))
            return (int)si.ssi_signo;
        if (n < 0 && errno != EINTR) {
            rv_error("rivvend: reading the signalfd: %s; shutting down", rv_strerror(-errno));
            return SIGTERM;
        }
    }
}

/* What went wrong: the message the failing call left, else the code's name. */
static const char *rivvend_why(int rc)
{
    return rv_err_msg()[0] != '\0' ? rv_err_msg() : rv_strerror(rc);
}

/* The per-shard counters and the admin HTTP listener; failing leaves the
 * broker without them (logged), never stops it. */
static void rivvend_admin_open(struct rivvend *d)
{
    if (!d->cfg.has_admin_listener)
        return;
    const struct rv_config_listener *l = &d->cfg.admin_listener;
    rv_err_clear();
    int rc = rv_metrics_open(d->rt);
    if (rc < 0) {
        rv_warn("rivvend: no metrics: %s", rivvend_why(rc));
        return;
    }
    d->has_metrics = true;
    rv_err_clear();
    rc = rv_admin_http_start(&d->admin, d->rt, l->host, l->port);
    if (rc < 0) {
        rv_warn("rivvend: no admin HTTP listener (/metrics, /health, /ready): %s", rivvend_why(rc));
        return;
    }
    bool is_v6 = strchr(l->host, ':') != NULL;
    rv_info("rivvend: admin on http://%s%s%s:%u (/metrics, /health, /ready)", is_v6 ? "[" : "",
            l->host[0] != '\0' ? l->host : "*", is_v6 ? "]" : "", rv_admin_http_port(d->admin));
}

static void rivvend_admin_close(struct rivvend *d)
{
    rv_admin_http_stop(d->admin);
    d->admin = NULL;
}

static void rivvend_metrics_close(struct rivvend *d)
{
    if (d->has_metrics)
        rv_metrics_close(d->rt);
    d->has_metrics = false;
}

static int rivvend_open(struct rivvend *d)
{
    struct rv_runtime_config rc_cfg;
    rv_runtime_config_init(&rc_cfg);
    rc_cfg.shard_count = d->cfg.shard_count;
    rc_cfg.cpuset = d->cfg.cpuset[0] != '\0' ? d->cfg.cpuset : NULL;
    rc_cfg.io_backend = d->cfg.io_backend;
    rc_cfg.data_dir = d->cfg.log_dirs;
    /* Every connection keeps a receive in flight: room for thousands per shard
     * beside the storage's file I/O (the ring holds this many entries). */
    rc_cfg.io_depth = 16384;
    rv_err_clear(); /* so that rivvend_why never reports an older failure */
    int rc = rv_runtime_open(&d->rt, &rc_cfg);
    if (rc < 0) {
        rv_error("rivvend: cannot start the runtime: %s", rivvend_why(rc));
        return rc;
    }
    rivvend_admin_open(d);
    struct rv_store_config st_cfg;
    rv_store_config_init(&st_cfg);
    st_cfg.wal_io = d->cfg.wal_io;
    st_cfg.segment_io = d->cfg.segment_io;
    st_cfg.wal_group_bytes = d->cfg.wal_group_bytes;
    st_cfg.wal_group_window_us = d->cfg.wal_group_window_us;
    st_cfg.segment_backlog_bytes = d->cfg.segment_backlog_bytes;
    st_cfg.idle_unload_ms =
        d->cfg.log_idle_unload_ms == 0 ? RV_IDLE_UNLOAD_NEVER : d->cfg.log_idle_unload_ms;
    rv_err_clear();
    rc = rv_store_open(&d->store, d->rt, &st_cfg);
    if (rc < 0) {
        rv_error("rivvend: cannot open the data directory %s: %s", d->cfg.log_dirs,
                 rivvend_why(rc));
        goto err_close_runtime;
    }
    rv_err_clear();
    rc = rv_server_start(&d->server, d->rt, d->store, &d->cfg);
    if (rc < 0) {
        rv_error("rivvend: cannot listen: %s", rivvend_why(rc));
        goto err_close_store;
    }
    if (d->has_metrics)
        rv_metrics_set_serving(d->rt, d->store); /* /ready answers 200 from now on */
    return 0;

err_close_store:
    rivvend_admin_close(d);
    rivvend_metrics_close(d);
    rv_store_close(d->store);
    d->store = NULL;
err_close_runtime:
    rivvend_admin_close(d);
    rivvend_metrics_close(d);
    rv_runtime_close(d->rt);
    d->rt = NULL;
    return rc;
}

static void rivvend_log_start(const struct rivvend *d)
{
    const char *backend = rv_runtime_io_backend(d->rt) == RV_IO_URING ? "io_uring" : "epoll";
    uint32_t n = rv_runtime_shard_count(d->rt);
    rv_info("rivvend: %u shards (%s), data in %s", n, backend, d->cfg.log_dirs);
    const struct rv_config_listener *l = &d->cfg.listeners[0];
    bool is_v6 = strchr(l->host, ':') != NULL;
    bool is_shards = d->cfg.is_advertise_shards && n > 1;
    rv_info("rivvend: listening on %s://%s%s%s:%u (%s)", l->name, is_v6 ? "[" : "",
            l->host[0] != '\0' ? l->host : "*", is_v6 ? "]" : "", rv_server_port(d->server),
            is_shards ? "node 0, shard 0" : "every shard");
    for (uint32_t i = 1; i < n && d->cfg.is_advertise_shards; i++)
        rv_info("rivvend: node %d, shard %u on port %u", d->cfg.node_id + (int32_t)i, i,
                rv_server_shard_port(d->server, i));
}

static void rivvend_close(struct rivvend *d)
{
    if (d->has_metrics)
        rv_metrics_set_serving(d->rt, NULL); /* /ready: 503 while the server drains */
    rv_server_stop(d->server);
    d->server = NULL;
    rivvend_admin_close(d); /* no scrape reads the store from here on */
    rivvend_metrics_close(d);
    rv_store_close(d->store);
    d->store = NULL;
    rv_runtime_close(d->rt);
    d->rt = NULL;
    close(d->signal_fd);
}

int main(int argc, char **argv)
{
    static struct rivvend d; /* large (listener tables): not on the stack */
    rv_config_init(&d.cfg);
    bool is_help = false;
    if (rv_config_from_args(&d.cfg, argc, argv, &is_help) < 0) {
        fprintf(stderr, "rivvend: %s\n", rv_err_msg());
        return RIVVEND_EXIT_USAGE;
    }
    if (is_help) {
        rivvend_usage(stdout);
        return RIVVEND_EXIT_OK;
    }
    if (getenv("RIVVEN_TRACE") == NULL) /* the environment wins, as for every rivven tool */
        rv_trace_set_level((enum rv_trace_level)d.cfg.trace_level);
    if (rivvend_signals_open(&d) < 0) {
        fprintf(stderr, "rivvend: %s\n", rv_err_msg());
        return RIVVEND_EXIT_START;
    }
    if (rivvend_open(&d) < 0) {
        close(d.signal_fd);
        return RIVVEND_EXIT_START;
    }
    rivvend_log_start(&d);
    int sig = rivvend_wait_signal(&d);
    rv_info("rivvend: %s: shutting down", strsignal(sig));
    rivvend_close(&d);
    rv_info("rivvend: stopped");
    return RIVVEND_EXIT_OK;
}
