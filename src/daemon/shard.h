/*
 * A shard: one thread that owns one store (LMDB environment), the queues of
 * the devices hashed to it, and (later) their dispatch.  It talks to the
 * ingress thread only through one inproc ZeroMQ PAIR socket, with the
 * framing below, and shares nothing else.
 *
 * Frames (first frame is a one-byte kind):
 *   ingress -> shard  'Q' envelope... body          a request
 *                     'F' token(8) envelope... body a lookup: get/cancel by
 *                                                   tenant + key on every
 *                                                   shard, or a dedupe check
 *                                                   of a submit (never stored)
 *                     'T'                           drain and stop
 *   shard -> ingress  'B' records                   everything one commit
 *                                                   produced, in one frame
 *                                                   (format in shard.c):
 *                                                   events, replies, lookup
 *                                                   replies
 *                     'K' u64[n]                    (tenant, key) hashes of
 *                                                   stored commands, at start
 *                     'L'                           start-up done
 *                     'D'                           stopped
 * Replies and events leave only after the transaction holding them has
 * been committed to disk.
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
  int64_t default_ttl_ms;
  size_t batch_max;           /* most requests in one transaction */
  const fq_dispatch_opts_t *dispatch; /* NULL: commands stay queued */
} fq_shard_opts_t;

/* Open the shard's store (so that storage errors surface at start-up, in
 * the caller's thread) and create the shard; the thread is not started.
 * Returns NULL with err filled on failure. */
fq_shard_t *fq_shard_new(const fq_shard_opts_t *opts, fq_err_t *err);

/* Endpoint the ingress must bind its PAIR socket to before start. */
const char *fq_shard_endpoint(const fq_shard_t *sh);

/* Start the thread.  0 or -errno. */
int fq_shard_start(fq_shard_t *sh);

/* Join the thread (after it was told 'T' and answered 'D') and free
 * everything.  Accepts NULL; NULLs the pointer. */
void fq_shard_destroy(fq_shard_t **shp);

/* Stable hash of a device key to a shard index. */
unsigned fq_shard_for_device(const char *device, size_t len, unsigned count);

#endif
