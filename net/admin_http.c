/*
 * net/admin_http.c - the admin HTTP listener on its own thread (net/admin_http.h).
 *
 * The thread waits in poll() on the listening socket and an eventfd that
 * stop signals; it takes one connection at a time, reads its request head
 * (bounded in size and time, still watching the eventfd), answers, and
 * closes it. Nothing here is shared with the shards: scrapes go through
 * rv_metrics_collect.
 */
#include "net/admin_http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/trace.h"
#include "net/metrics.h"
#include "net/server.h"

struct rv_admin_http {
    rv_runtime_t *rt;
    int listen_fd;
    int stop_fd; /* eventfd: written once by rv_admin_http_stop */
    uint16_t port;
    pthread_t thread;
    char head[RV_ADMIN_HTTP_HEAD_MAX + 1]; /* the request head being read */
};

/* An answer to send. */
struct admin_answer {
    int status;
    const char *reason;
    const char *content_type;
    const char *extra_header; /* "" or a whole "Name: value\r\n" line */
    const char *body;
    size_t body_len;
};

/* ---- sending ---------------------------------------------------------------------------------- */

static bool admin_send_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false; /* the peer went away or did not read within the timeout */
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void admin_send(int fd, const struct admin_answer *ans, bool is_head)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "%s"
                     "Connection: close\r\n\r\n",
                     ans->status, ans->reason, ans->content_type, ans->body_len, ans->extra_header);
    RV_ASSERT(n > 0 && (size_t)n < sizeof(head));
    if (admin_send_all(fd, head, (size_t)n) && !is_head)
        (void)admin_send_all(fd, ans->body, ans->body_len); /* closed next either way */
}

static void admin_send_text(int fd, int status, const char *reason, const char *body, bool is_head)
{
    struct admin_answer ans = {.status = status,
                               .reason = reason,
                               .content_type = "text/plain; charset=utf-8",
                               .extra_header = "",
                               .body = body,
                               .body_len = strlen(body)};
    admin_send(fd, &ans, is_head);
}

/* ---- the endpoints ---------------------------------------------------------------------------- */

static void admin_metrics(rv_admin_http_t *a, int fd, bool is_head)
{
    struct rv_metrics_snapshot *snap = NULL;
    int rc = rv_metrics_collect(a->rt, false, &snap);
    if (rc < 0) {
        char body[256];
        snprintf(body, sizeof(body), "metrics unavailable: %s\n", rv_strerror(rc));
        admin_send_text(fd, 503, "Service Unavailable", body, is_head);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    rc = f == NULL ? -ENOMEM : rv_metrics_format(snap, f);
    if (f != NULL && fclose(f) != 0 && rc == 0)
        rc = -ENOMEM;
    rv_metrics_snapshot_free(snap);
    if (rc < 0) {
        admin_send_text(fd, 500, "Internal Server Error", "no memory for the metrics\n", is_head);
        free(text);
        return;
    }
    struct admin_answer ans = {.status = 200,
                               .reason = "OK",
                               .content_type = "text/plain; version=0.0.4; charset=utf-8",
                               .extra_header = "",
                               .body = text,
                               .body_len = len};
    admin_send(fd, &ans, is_head);
    free(text);
}

static void admin_ready(rv_admin_http_t *a, int fd, bool is_head)
{
    struct rv_metrics_snapshot *snap = NULL;
    int rc = rv_metrics_collect(a->rt, true, &snap);
    if (rc < 0) {
        admin_send_text(fd, 503, "Service Unavailable", "not ready: a shard did not answer\n",
                        is_head);
        return;
    }
    char body[512];
    size_t used = 0;
    if (snap->is_ready) {
        snprintf(body, sizeof(body), "ready\n");
    } else {
        used = (size_t)snprintf(body, sizeof(body), "not ready: shards not serving:");
        for (uint32_t i = 0; i < snap->shard_count && used < sizeof(body) - 16; i++) {
            if (!snap->shards[i].is_serving)
                used += (size_t)snprintf(body + used, sizeof(body) - used, " %u", i);
        }
        snprintf(body + used, sizeof(body) - used, "\n");
    }
    if (snap->is_ready)
        admin_send_text(fd, 200, "OK", body, is_head);
    else
        admin_send_text(fd, 503, "Service Unavailable", body, is_head);
    rv_metrics_snapshot_free(snap);
}

/* Answer the request head in buf (NUL-terminated, complete). */
static void admin_answer(rv_admin_http_t *a, int fd, char *buf)
{
    /* METHOD SP TARGET SP HTTP/1.x CRLF */
    char *line_end = strstr(buf, "\r\n");
    *line_end = '\0';
    char *method = buf;
    char *sp1 = strchr(method, ' ');
    char *target = sp1 != NULL ? sp1 + 1 : NULL;
    char *sp2 = target != NULL ? strchr(target, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || target[0] != '/' || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        admin_send_text(fd, 400, "Bad Request", "bad request line\n", false);
        return;
    }
    *sp1 = '\0';
    *sp2 = '\0';
    target[strcspn(target, "?#")] = '\0'; /* a query changes nothing */
    bool is_head = strcmp(method, "HEAD") == 0;
    bool is_known = strcmp(target, "/metrics") == 0 || strcmp(target, "/health") == 0 ||
                    strcmp(target, "/ready") == 0;
    if (!is_known) {
        admin_send_text(fd, 404, "Not Found", "not found (try /metrics, /health, /ready)\n",
                        is_head);
        return;
    }
    if (!is_head && strcmp(method, "GET") != 0) {
        struct admin_answer ans = {.status = 405,
                                   .reason = "Method Not Allowed",
                                   .content_type = "text/plain; charset=utf-8",
                                   .extra_header = "Allow: GET, HEAD\r\n",
                                   .body = "method not allowed\n",
                                   .body_len = strlen("method not allowed\n")};
        admin_send(fd, &ans, false);
        return;
    }
    if (strcmp(target, "/metrics") == 0)
        admin_metrics(a, fd, is_head);
    else if (strcmp(target, "/ready") == 0)
        admin_ready(a, fd, is_head);
    else
        admin_send_text(fd, 200, "OK", "ok\n", is_head);
}

/* ---- one connection --------------------------------------------------------------------------- */

/* Read the request head; false when the client went away, was too slow, or
 * the listener is stopping (then nothing is answered). */
static bool admin_read_head(rv_admin_http_t *a, int fd, char *buf, size_t cap, bool *out_too_big)
{
    size_t len = 0;
    uint64_t deadline = rv_clock_now_ns() + (uint64_t)RV_ADMIN_HTTP_TIMEOUT_MS * 1000000ull;
    *out_too_big = false;
    for (;;) {
        uint64_t now = rv_clock_now_ns();
        if (now >= deadline)
            return false;
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = a->stop_fd, .events = POLLIN}};
        int n = poll(p, 2, (int)((deadline - now) / 1000000ull) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (p[1].revents & POLLIN) != 0)
            return false;
        if (n == 0)
            continue; /* the deadline check ends it */
        ssize_t got = recv(fd, buf + len, cap - 1 - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return false;
        len += (size_t)got;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            return true;
        if (len == cap - 1) {
            *out_too_big = true;
            return true;
        }
    }
}

static void admin_serve(rv_admin_http_t *a, int fd)
{
    struct timeval tv = {.tv_sec = RV_ADMIN_HTTP_TIMEOUT_MS / 1000,
                         .tv_usec = (RV_ADMIN_HTTP_TIMEOUT_MS % 1000) * 1000};
    /* Best effort: without it a client that never reads holds the thread longer. */
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    bool is_too_big = false;
    if (!admin_read_head(a, fd, a->head, sizeof(a->head), &is_too_big))
        return;
    if (is_too_big)
        admin_send_text(fd, 431, "Request Header Fields Too Large", "request head too large\n",
                        false);
    else
        admin_answer(a, fd, a->head);
}

static void *admin_thread(void *arg)
{
    rv_admin_http_t *a = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = a->listen_fd, .events = POLLIN},
                              {.fd = a->stop_fd, .events = POLLIN}};
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rv_error("admin http: poll: %s; no longer serving", rv_strerror(-errno));
            return NULL;
        }
        if ((p[1].revents & POLLIN) != 0)
            return NULL;
        if ((p[0].revents & POLLIN) == 0)
            continue;
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                rv_warn("admin http: accept: %s", rv_strerror(-errno));
                usleep(100000); /* EMFILE and the like: do not spin */
            }
            continue;
        }
        admin_serve(a, fd);
        close(fd);
    }
}

/* ---- lifecycle -------------------------------------------------------------------------------- */

/* The listening socket: the broker's own helper (net/server.h), named as ours. */
static int admin_bind(const char *host, uint16_t port, int *out_fd, uint16_t *out_port)
{
    int rc = rv_server_listen(host, port, false, out_fd, out_port);
    if (rc < 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s", rv_err_msg());
        return rv_errf(rc, "admin listener: %s", why);
    }
    return 0;
}

int rv_admin_http_start(rv_admin_http_t **out, rv_runtime_t *rt, const char *host, uint16_t port)
{
    RV_ASSERT(out != NULL && rt != NULL && host != NULL);
    rv_admin_http_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->rt = rt;
    int rc = admin_bind(host, port, &a->listen_fd, &a->port);
    if (rc < 0)
        goto err_free;
    a->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (a->stop_fd < 0) {
        rc = rv_errf(-errno, "admin listener: eventfd");
        goto err_close_listen;
    }
    rc = -pthread_create(&a->thread, NULL, admin_thread, a);
    if (rc < 0) {
        rv_errf(rc, "admin listener: thread");
        goto err_close_stop;
    }
    *out = a;
    return 0;

err_close_stop:
    close(a->stop_fd);
err_close_listen:
    close(a->listen_fd);
err_free:
    free(a);
    return rc;
}

void rv_admin_http_stop(rv_admin_http_t *a)
{
    if (a == NULL)
        return;
    uint64_t one = 1;
    while (write(a->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    pthread_join(a->thread, NULL);
    close(a->stop_fd);
    close(a->listen_fd);
    free(a);
}

uint16_t rv_admin_http_port(const rv_admin_http_t *a)
{
    return a->port;
}
