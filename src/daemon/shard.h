/*
 * A shard: one thread that owns one store (LMDB environment), the queues of
 * the devices hashed to it, and (later) their dispatch.  It talks to the
 * ingress thread only through one inproc ZeroMQ PAIR socket, with the
 * framing below, and shares nothing else.
 *
 * Frames (first frame is a one-byte kind; the envelope is the client's
 * routing id and at most FQ_WIRE_MAX_ENVELOPE frames, the ingress's
 * limit: a request with more is refused, none of its frames taken as the
 * body):
 *   ingress -> shard  'Q' envelope... body          a request
 *                     'F' token(8) envelope... body a lookup: get/cancel by
 *                                                   tenant + key on every
 *                                                   shard, or a dedupe check
 *                                                   of a submit (never stored)
 *                     'H' token(8)                  health: answered at once,
 *                                                   between batches, with 'H'
 *                     'T'                           drain and stop: no new
 *                                                   request leaves; the ones
 *                                                   out get drain_timeout_ms
 *                                                   to be answered (see
 *                                                   fq_dispatch_drain)
 *   shard -> ingress  'B' records                   everything one commit
 *                                                   produced, in one frame
 *                                                   (format in shard.c):
 *                                                   events, replies, lookup
 *                                                   replies
 *                     'N' u64                       how many 'K' hashes
 *                                                   follow (the ingress sizes
 *                                                   its table once)
 *                     'K' u64[n]                    (tenant, key) hashes of
 *                                                   stored commands, at start
 *                     'X' u64 r, u64[n]             hashes no longer held
 *                                                   (dedupe window over), as
 *                                                   of the r-th 'Q'/'F'
 *                                                   received (retention.h)
 *                     'H' token(8) fq_shard_health_t  the answer to 'H' (health.h)
 *                     'L'                           start-up done
 *                     'D'                           stopped
 * Replies and events leave only after the transaction holding them has
 * been committed to disk.
 *
 * Full storage never stops a shard (shard.c, "storage full"): new commands
 * get storage_full at a high-water mark of the map that keeps room for the
 * commands already accepted to finish, and a batch whose transaction fails
 * is applied again asking less of the store (no new commands, then without
 * the dispatcher, then read only); the map grows up to max_store.
 *
 * Tenant restriction: the kind frame of 'Q' and 'F' may be longer than one
 * byte: the kind, then the tenants the requesting client may see, each
 * name followed by one \0 ("Qacme\0beta\0").  One byte, or a list holding
 * "*", means unrestricted.  With a list the shard answers as if other
 * tenants' commands did not exist: get / cancel of one (by id, or by
 * tenant + key) is `not_found` with the message of an unknown one, and
 * cancels nothing; history without `tenant` returns only the listed
 * tenants' events (examining a bounded number per request, `next` being
 * the seq of the last one examined); history of an unlisted tenant and a
 * submit for one are `forbidden`.  A malformed list allows no tenant.
 */
#ifndef FQ_SHARD_H
#define FQ_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "dispatch.h"
#include "fleetq/error.h"

typedef struct fq_shard fq_shard_t;

typedef struct fq_shard_opts {
  void *zmq_ctx;              /* shared context (thread safe) */
  const char *data_dir;       /* the daemon's data dir; the shard uses <dir>/shard-<i> */
  unsigned index, count;
  uint64_t map_size;          /* LMDB map size in bytes */
  uint64_t max_store;         /* the most the map may grow to, bytes (below map_size: no
                                 growth) */
  int64_t default_ttl_ms;
  size_t batch_max;           /* most requests in one transaction */
  const fq_dispatch_opts_t *dispatch; /* NULL: commands stay queued */
  /* The account store: a submit naming an account it does not hold is
   * refused at once with unknown_account (nothing stored), so that no
   * command waits in a device queue for an account that may never come.
   * NULL: no check (every account accepted).  auth (may be NULL) is the
   * auth side whose generation tells the shard when accounts changed: the
   * shard keeps the names it found present until the next change, and
   * looks up a name it has not found every time, so an account added a
   * moment ago is seen by the next submit.  Both borrowed. */
  fq_accounts_t *accounts;
  fq_auth_t *auth;
  int64_t drain_timeout_ms;   /* after 'T': longest wait for requests in flight (0: none) */
  int64_t retention_ms;       /* prune terminal commands and events older (0: never; retention.h) */
  int64_t dedupe_window_ms;   /* how long a (tenant, key) dedupes (0: for ever) */
  /* Cluster mode (docs/cluster.md): the node, borrowed.  The shard starts
   * as a standby (it follows its log, answers requests with busy, settles
   * nothing, dispatches nothing) and takes the shard over when the node's
   * lease thread gets its lease.  NULL: a single node. */
  struct fq_clnode *cluster;
} fq_shard_opts_t;

/* Create the shard, in the caller's thread, so that every start-up
 * failure comes back here as an error instead of ending the process from
 * inside the thread: open its store, allocate the loop's buffers, create
 * and connect its PAIR socket to the endpoint below, settle the commands
 * that were in flight when the previous process stopped (recovery; its
 * events are published when the thread starts), and create the dispatcher
 * (when opts->dispatch is set) with the devices that have queued commands.
 * The thread is not started.  Returns NULL with err filled ("recovery
 * failed: ...", "cannot create the dispatcher: ...", a storage error).
 *
 * Sockets: ZeroMQ sockets are not thread safe, but one may move to another
 * thread across a full memory barrier.  The shard's socket and the
 * dispatcher's socket to the auth thread are created, configured and
 * connected here and never used for messages by the caller;
 * fq_shard_start()'s pthread_create() is the barrier that hands them to
 * the thread, and fq_shard_destroy() closes them after pthread_join()
 * (again a barrier), or without any thread when the shard never started.
 * The caller must not touch the shard between start and destroy. */
fq_shard_t *fq_shard_new(const fq_shard_opts_t *opts, fq_err_t *err);

/* Endpoint the ingress must bind its PAIR socket to; the thread sends only
 * after it started, so bind before fq_shard_start(). */
const char *fq_shard_endpoint(const fq_shard_t *sh);

/* Start the thread; it does nothing that can fail before serving.
 * 0, -EALREADY, or -errno from pthread_create. */
int fq_shard_start(fq_shard_t *sh);

/* Join the thread (after it was told 'T' and answered 'D') and free
 * everything.  Accepts NULL; NULLs the pointer. */
void fq_shard_destroy(fq_shard_t **shp);

/* Stable hash of a device key to a shard index. */
unsigned fq_shard_for_device(const char *device, size_t len, unsigned count);

#endif
