/*
 * net/server.h - the broker's TCP server: listeners on every shard, Kafka
 * framing, requests answered in order per connection.
 *
 * With rivven.advertise.shards (each shard a broker in Metadata) shard i
 * listens on port + i alone: the base (bootstrap) port is node 0's, shard
 * 0's, so a client's connection to a node reaches the shard that owns that
 * node's partitions. Without it every shard accepts on the one port through
 * its own socket (SO_REUSEPORT: the kernel spreads connections over the
 * shards). A connection lives on the shard that accepted it, for its whole
 * life.
 *
 * Framing: an int32 size, then that many bytes of request. A size that is
 * negative or over socket.request.max.bytes, or a request the protocol layer
 * refuses (net/kapi.h), closes that connection with a log line; every other
 * connection carries on. Responses leave in request order. A connection whose
 * unsent responses pass a bound is not read until they drain (a client that
 * sends and never reads costs bounded memory); one idle for
 * connections.max.idle.ms is closed.
 *
 * Threading: start and stop from the thread that owns the runtime (not a
 * shard); everything else runs on the shards.
 */
#ifndef RV_NET_SERVER_H
#define RV_NET_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/assert.h"
#include "net/config.h"
#include "rivven.h"

#define RV_SERVER_OUT_BYTES_MAX  (4u << 20)  /* unsent responses before reading pauses */
#define RV_SERVER_RECV_BYTES_MIN (16u << 10) /* a connection's receive buffer, to start */

typedef struct rv_server rv_server_t;

/* ---- lifecycle ----------------------------------------------------------- */

/*
 * Bind the first listener of cfg on every shard of rt (blocking: name
 * resolution, bind), then start accepting; requests are served from st (which
 * must outlive the server). cfg is copied. Errors (nothing is
 * left open, *out untouched): -EADDRINUSE and the other bind errors,
 * -EINVAL for a host that does not resolve or own ports past 65535, -ENOMEM;
 * rv_err_msg names the address.
 */
RV_MUST_CHECK int rv_server_start(rv_server_t **out, rv_runtime_t *rt, rv_store_t *st,
                                  const struct rv_config *cfg);

/*
 * Stop accepting, close every connection (requests already answered are not
 * waited for), and return once no shard holds a socket of the server; then
 * free it. Blocking. NULL is a no-op.
 */
void rv_server_stop(rv_server_t *srv);

/*
 * A listening TCP socket on host:port (host "" = every interface; port 0 = the
 * system picks, *out_port says which), SO_REUSEADDR and optionally
 * SO_REUSEPORT. Blocking (name resolution); the broker's listeners and the
 * admin HTTP listener use it. -EINVAL for a host that does not resolve, else
 * the socket errors; rv_err_msg names the address.
 */
RV_MUST_CHECK int rv_server_listen(const char *host, uint16_t port, bool is_reuseport, int *out_fd,
                                   uint16_t *out_port);

/* ---- queries ------------------------------------------------------------- */

/* The shared port (the one bound, when the configuration said 0). */
uint16_t rv_server_port(const rv_server_t *srv);

/* The own port of a shard (the shared port without rivven.advertise.shards). */
uint16_t rv_server_shard_port(const rv_server_t *srv, uint32_t shard);

#endif /* RV_NET_SERVER_H */
