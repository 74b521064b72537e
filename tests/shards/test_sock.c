/*
 * tests/shards/test_sock.c - tests shards/sock.c and the socket half of both
 * backends over loopback: a multishot accept feeding an echo server, gather
 * sends, a send larger than the socket buffers, the end of a stream and a
 * reset, cancelling a waiting accept and receive (after which the runtime
 * closes: nothing is left in flight), and calls from outside a shard.
 *
 * The test thread plays the clients with plain blocking sockets; the server
 * side runs in callbacks on shard 0 and reports through atomics and signals.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shards/sock.h"
#include "tests/support/rt.h"

TestSuite(sock, .timeout = 120);

static rv_runtime_t *sock_rt_open(enum rv_io_backend kind)
{
    struct rv_runtime_config cfg;
    rv_runtime_config_init(&cfg);
    cfg.shard_count = 1;
    cfg.io_backend = kind;
    rv_runtime_t *rt = NULL;
    int rc = rv_runtime_open(&rt, &cfg);
    cr_assert_eq(rc, 0, "%s", rv_err_msg());
    cr_assert_eq(rv_runtime_io_backend(rt), kind);
    return rt;
}

/* A listening socket on 127.0.0.1 at a free port, stored in *out_port. */
static int sock_listen(uint16_t *out_port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 64), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *out_port = ntohs(a.sin_port);
    return fd;
}

static int sock_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void read_exactly(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        cr_assert_gt(n, 0, "read: %zd after %zu of %zu", n, got, len);
        got += (size_t)n;
    }
}

/* ---- an echo server ------------------------------------------------------- */

struct echo_srv {
    int listen_fd;
    _Atomic int accepted;
    _Atomic int closed;
    _Atomic int errors;
    _Atomic int final_res; /* the accept's last result, once is_final */
    _Atomic bool is_final;
    struct test_signal conn_closed;
    struct test_signal accept_done;
};

struct echo_conn {
    struct echo_srv *srv;
    int fd;
    int64_t expect_sent;
    char buf[1000]; /* smaller than a client's message: several turns per echo */
};

static void echo_recv_done(void *p, int64_t res);

static void echo_closed(void *p, int64_t res)
{
    struct echo_conn *c = p;
    if (res != 0)
        c->srv->errors++;
    c->srv->closed++;
    test_signal_post(&c->srv->conn_closed);
    free(c);
}

static void echo_sent(void *p, int64_t res)
{
    struct echo_conn *c = p;
    if (res != c->expect_sent)
        c->srv->errors++;
    if (rv_sock_recv(c->fd, c->buf, sizeof(c->buf), echo_recv_done, c) < 0)
        c->srv->errors++;
}

static void echo_recv_done(void *p, int64_t res)
{
    struct echo_conn *c = p;
    int rc;
    if (res > 0) {
        c->expect_sent = res;
        rc = rv_sock_send(c->fd, c->buf, (uint32_t)res, echo_sent, c);
    } else {
        if (res < 0)
            c->srv->errors++;
        rc = rv_sock_close(c->fd, echo_closed, c);
    }
    if (rc < 0)
        c->srv->errors++;
}

static void echo_accepted(void *p, int64_t res)
{
    struct echo_srv *srv = p;
    if (res < 0) {
        srv->final_res = (int)res;
        srv->is_final = true;
        test_signal_post(&srv->accept_done);
        return;
    }
    if (srv->is_final)
        srv->errors++; /* nothing may follow the final completion */
    srv->accepted++;
    struct echo_conn *c = calloc(1, sizeof(*c));
    c->srv = srv;
    c->fd = (int)res;
    if (rv_sock_recv(c->fd, c->buf, sizeof(c->buf), echo_recv_done, c) < 0)
        srv->errors++;
}

static void echo_start(void *p)
{
    struct echo_srv *srv = p;
    cr_assert_eq(rv_sock_accept_multishot(srv->listen_fd, echo_accepted, srv), 0);
}

static void count_cancelled(void *p, int64_t res)
{
    *(_Atomic int64_t *)p = res;
}

static void echo_cancel(void *p)
{
    struct echo_srv *srv = p;
    static _Atomic int64_t ignored;
    cr_assert_eq(rv_sock_cancel(srv->listen_fd, count_cancelled, (void *)&ignored), 0);
}

static void echo_serves_clients(enum rv_io_backend kind)
{
    rv_runtime_t *rt = sock_rt_open(kind);
    struct echo_srv srv = {0};
    uint16_t port = 0;
    srv.listen_fd = sock_listen(&port);
    test_signal_init(&srv.conn_closed);
    test_signal_init(&srv.accept_done);
    test_run_on(rt, 0, echo_start, &srv);

    enum { CLIENTS = 4, MSG = 5000 };
    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        fds[i] = sock_connect(port);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < CLIENTS; i++) {
            char out[MSG], back[MSG];
            for (int j = 0; j < MSG; j++)
                out[j] = (char)(i * 31 + j + round);
            cr_assert_eq(write(fds[i], out, MSG), MSG);
            read_exactly(fds[i], back, MSG);
            cr_assert(memcmp(out, back, MSG) == 0, "client %d round %d", i, round);
        }
    }
    for (int i = 0; i < CLIENTS; i++) {
        close(fds[i]);
        test_signal_wait(&srv.conn_closed);
    }
    cr_assert_eq(srv.accepted, CLIENTS);
    cr_assert_eq(srv.closed, CLIENTS);
    cr_assert_not(srv.is_final);

    test_run_on(rt, 0, echo_cancel, &srv);
    test_signal_wait(&srv.accept_done);
    cr_assert_eq(srv.final_res, -ECANCELED);
    cr_assert_eq(srv.errors, 0);
    rv_runtime_close(rt); /* returns only when nothing is in flight */
    close(srv.listen_fd);
}

Test(sock, echo_server_on_io_uring)
{
    echo_serves_clients(RV_IO_URING);
}

Test(sock, echo_server_on_epoll)
{
    echo_serves_clients(RV_IO_EPOLL);
}

/* ---- one accepted connection driven step by step ----------------------------- */

struct one_conn {
    int listen_fd;
    _Atomic int fd;        /* accepted descriptor, -1 until then */
    _Atomic int64_t res;   /* result of the last operation */
    _Atomic int64_t count; /* rv_sock_cancel's count */
    struct test_signal step;
    char buf[64];
    struct iovec iov[3];
    char *big;
    size_t big_len;
    size_t big_sent;
};

static void one_step(void *p, int64_t res)
{
    struct one_conn *c = p;
    c->res = res;
    test_signal_post(&c->step);
}

static void one_accepted(void *p, int64_t res)
{
    struct one_conn *c = p;
    if (res >= 0)
        c->fd = (int)res;
    c->res = res;
    test_signal_post(&c->step);
}

static void one_accept(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_accept_multishot(c->listen_fd, one_accepted, c), 0);
}

static void one_recv(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_recv(c->fd, c->buf, sizeof(c->buf), one_step, c), 0);
}

static void one_cancel_done(void *p, int64_t res)
{
    struct one_conn *c = p;
    c->count = res;
    test_signal_post(&c->step);
}

static void one_cancel_listener(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_cancel(c->listen_fd, one_cancel_done, c), 0);
}

static void one_cancel_conn(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_cancel(c->fd, one_cancel_done, c), 0);
}

static void one_close(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_close(c->fd, one_step, c), 0);
}

static void one_sendv(void *p)
{
    struct one_conn *c = p;
    static const char *const parts[] = {"gather ", "send ", "works"};
    for (int i = 0; i < 3; i++)
        c->iov[i] = (struct iovec){.iov_base = (void *)parts[i], .iov_len = strlen(parts[i])};
    cr_assert_eq(rv_sock_sendv(c->fd, c->iov, 3, one_step, c), 0);
}

static void one_big_sent(void *p, int64_t res);

static void one_big_send(void *p)
{
    struct one_conn *c = p;
    cr_assert_eq(rv_sock_send(c->fd, c->big + c->big_sent, (uint32_t)(c->big_len - c->big_sent),
                              one_big_sent, c),
                 0);
}

static void one_big_sent(void *p, int64_t res)
{
    struct one_conn *c = p;
    if (res > 0)
        c->big_sent += (size_t)res;
    if (res > 0 && c->big_sent < c->big_len) {
        one_big_send(c); /* a short send: continue where it stopped */
        return;
    }
    one_step(c, res);
}

/* Start a runtime and a listener, connect, wait for the accept. */
static rv_runtime_t *one_open(enum rv_io_backend kind, struct one_conn *c, int *out_client)
{
    rv_runtime_t *rt = sock_rt_open(kind);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    test_signal_init(&c->step);
    uint16_t port = 0;
    c->listen_fd = sock_listen(&port);
    test_run_on(rt, 0, one_accept, c);
    *out_client = sock_connect(port);
    test_signal_wait(&c->step);
    cr_assert_geq(c->fd, 0, "accept: %lld", (long long)c->res);
    return rt;
}

/* Cancel the accept, close the connection, close the runtime. */
static void one_finish(rv_runtime_t *rt, struct one_conn *c)
{
    test_run_on(rt, 0, one_cancel_listener, c);
    test_signal_wait(&c->step); /* the accept's -ECANCELED and the count, either order */
    test_signal_wait(&c->step);
    cr_assert_eq(c->count, 1);
    test_run_on(rt, 0, one_close, c);
    test_signal_wait(&c->step);
    cr_assert_eq(c->res, 0);
    rv_runtime_close(rt);
    close(c->listen_fd);
}

static void cancel_a_waiting_recv(enum rv_io_backend kind)
{
    struct one_conn c;
    int client = -1;
    rv_runtime_t *rt = one_open(kind, &c, &client);
    test_run_on(rt, 0, one_recv, &c);
    usleep(20000); /* let it wait in the kernel (or in epoll) */
    c.count = -1;
    test_run_on(rt, 0, one_cancel_conn, &c);
    test_signal_wait(&c.step);
    test_signal_wait(&c.step);
    cr_assert_eq(c.res, -ECANCELED);
    cr_assert_eq(c.count, 1);
    /* The connection still works after a cancelled receive. */
    test_run_on(rt, 0, one_recv, &c);
    cr_assert_eq(write(client, "hi", 2), 2);
    test_signal_wait(&c.step);
    cr_assert_eq(c.res, 2);
    cr_assert(memcmp(c.buf, "hi", 2) == 0);
    close(client);
    one_finish(rt, &c);
}

Test(sock, cancel_a_waiting_recv_on_io_uring)
{
    cancel_a_waiting_recv(RV_IO_URING);
}

Test(sock, cancel_a_waiting_recv_on_epoll)
{
    cancel_a_waiting_recv(RV_IO_EPOLL);
}

static void end_of_stream_and_reset(enum rv_io_backend kind)
{
    struct one_conn c;
    int client = -1;
    rv_runtime_t *rt = one_open(kind, &c, &client);
    test_run_on(rt, 0, one_recv, &c);
    shutdown(client, SHUT_WR);
    test_signal_wait(&c.step);
    cr_assert_eq(c.res, 0, "end of stream: %lld", (long long)c.res);
    test_run_on(rt, 0, one_recv, &c);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    cr_assert_eq(setsockopt(client, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(client); /* an RST */
    test_signal_wait(&c.step);
    cr_assert(c.res == -ECONNRESET || c.res == 0, "after a reset: %lld", (long long)c.res);
    one_finish(rt, &c);
}

Test(sock, end_of_stream_and_reset_on_io_uring)
{
    end_of_stream_and_reset(RV_IO_URING);
}

Test(sock, end_of_stream_and_reset_on_epoll)
{
    end_of_stream_and_reset(RV_IO_EPOLL);
}

static void gather_and_big_sends(enum rv_io_backend kind)
{
    struct one_conn c;
    int client = -1;
    rv_runtime_t *rt = one_open(kind, &c, &client);
    test_run_on(rt, 0, one_sendv, &c);
    test_signal_wait(&c.step);
    cr_assert_eq(c.res, 17);
    char got[18] = {0};
    read_exactly(client, got, 17);
    cr_assert_str_eq(got, "gather send works");

    /* 8 MiB: far more than the socket buffers, read slowly by the client. */
    c.big_len = 8u << 20;
    c.big = malloc(c.big_len);
    for (size_t i = 0; i < c.big_len; i++)
        c.big[i] = (char)(i * 7 + i / 4096);
    test_run_on(rt, 0, one_big_send, &c);
    char *back = malloc(c.big_len);
    usleep(10000);
    read_exactly(client, back, c.big_len);
    test_signal_wait(&c.step);
    cr_assert_gt(c.res, 0);
    cr_assert_eq(c.big_sent, c.big_len);
    cr_assert(memcmp(c.big, back, c.big_len) == 0);
    free(back);
    free(c.big);
    close(client);
    one_finish(rt, &c);
}

Test(sock, gather_and_big_sends_on_io_uring)
{
    gather_and_big_sends(RV_IO_URING);
}

Test(sock, gather_and_big_sends_on_epoll)
{
    gather_and_big_sends(RV_IO_EPOLL);
}

Test(sock, socket_calls_outside_a_shard_are_refused)
{
    char buf[4];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    cr_assert_eq(rv_sock_accept_multishot(0, one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_recv(0, buf, sizeof(buf), one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_send(0, buf, sizeof(buf), one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_sendv(0, &iov, 1, one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_sendv(0, &iov, 0, one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_cancel(0, one_step, NULL), -EINVAL);
    cr_assert_eq(rv_sock_close(0, one_step, NULL), -EINVAL);
}
