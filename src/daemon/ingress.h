/*
 * The ingress thread: owns the client-facing ROUTER socket and the status
 * PUB socket (ZeroMQ sockets are not thread safe, so nothing else touches
 * them).  It decodes and validates each request with the strict wire
 * decoder, answers malformed requests and `ping` itself, routes the rest to
 * a shard by a stable hash of the device (or by the shard encoded in a
 * command id, or to every shard for a lookup by tenant + key), and relays
 * the shards' replies and events.  No disk or network I/O happens here.
 * A request with more than FQ_WIRE_MAX_ENVELOPE envelope frames (or one
 * above FQ_WIRE_MAX_ENVELOPE_FRAME bytes) is refused here; every reply
 * leaves through the per-client ledger of replies.h, which drops the
 * replies of a client holding client_reply_max bytes it has not read.
 */
#ifndef FQ_INGRESS_H
#define FQ_INGRESS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "clients.h"
#include "fleetq/error.h"
#include "shard.h"

typedef struct fq_ingress fq_ingress_t;

typedef struct fq_ingress_opts {
  void *zmq_ctx;
  const char *listen;      /* ROUTER endpoint */
  const char *publish;     /* PUB endpoint */
  fq_shard_t **shards;
  unsigned nshards;
  int max_msg_size;        /* ZMQ_MAXMSGSIZE on the ROUTER */
  int client_hwm;          /* ROUTER send/receive high-water mark */
  size_t client_reply_max; /* bytes of unread replies one client may hold
                              (replies.h); 0: no limit */
  int pub_hwm;             /* PUB send high-water mark */
  int shard_hwm;           /* requests waiting per shard before `busy` */
  int stop_fd;             /* readable when the daemon must stop */
  const char *auth_endpoint; /* auth thread's admin PAIR, or NULL */
  struct fq_auth *auth;      /* refresh failures for `health` (borrowed), or NULL */
  /* CURVE (docs/security.md).  curve_secret NULL: plaintext, and fleetqd
   * binds only loopback / ipc endpoints (checked by the caller).  With it,
   * both sockets are CURVE servers, a ZAP handler in this thread admits
   * only the keys of `clients`, and every request is authorized against
   * its key's roles and tenants. */
  const char *curve_secret;  /* Z85 secret key (40 chars), copied */
  fq_clients_t *clients;     /* taken over by the ingress (freed by it) */
  const char *clients_file;  /* reloaded when reload_fd becomes readable */
  int reload_fd;             /* -1: none */
  unsigned ipc_mode;         /* permission bits of ipc:// socket files */
  /* The systemd watchdog (sdnotify.h): when set, the loop increments
   * *heartbeat on every turn and turns at least every heartbeat_ms. */
  const char *data_dir;       /* campaigns live in <data_dir>/campaigns (campaign.h) */
  struct fq_accounts *accounts; /* for the campaign's account check (borrowed), or NULL */
  int64_t retention_s;        /* campaigns over are deleted after it (0: never) */
  int64_t dedupe_window_s;    /* how long a campaign key dedupes */
  _Atomic uint64_t *heartbeat;
  int heartbeat_ms;
  /* Cluster mode (docs/cluster.md), borrowed, or NULL: a request for a
   * shard this node does not own goes to the owner's ingress over a
   * DEALER (and its reply comes back the same way); none known: busy.
   * A request that came from another node is never forwarded again. */
  struct fq_clnode *cluster;
} fq_ingress_opts_t;

/* Create the sockets: bind ROUTER, PUB and the shards' inproc endpoints
 * (and the ZAP handler first, with CURVE).
 * Returns NULL with err filled (e.g. the address is in use). */
fq_ingress_t *fq_ingress_new(const fq_ingress_opts_t *opts, fq_err_t *err);

/* Run until stop_fd becomes readable; then stop reading requests, tell the
 * shards to drain, relay what they still send, and return 0 once every
 * shard has stopped.  Runs in the calling thread. */
int fq_ingress_run(fq_ingress_t *in);

void fq_ingress_destroy(fq_ingress_t **inp);

#endif
