/*
 * The `health` op (proto/wire-protocol.md): what each shard says about
 * itself (fq_shard_health_t, sent by the shard thread in answer to an 'H'
 * message, shard.h), and the reply the ingress builds from the shards'
 * answers and the accounts whose token refresh failed.
 *
 * Verdicts, made here once for the daemon and `fleetq health`:
 *   - a shard that did not answer within the ingress's wait is stuck (its
 *     thread is busy in something long: a batch, a commit, a slow disk);
 *   - a shard with unfinished commands whose last commit that changed a
 *     command is older than stuck_ms is stuck (work waits, nothing moves);
 *   - a shard whose read transaction failed has a storage problem;
 *   - a shard is near full when the next new command would be refused
 *     storage_full (the map's high-water mark, less the room kept for the
 *     commands not yet finished) and the map cannot grow, or while it is
 *     refusing new commands;
 *   - an account whose token refresh was rejected cannot run commands.
 * Each is a problem; the daemon is healthy when there is none.
 */
#ifndef FQ_HEALTH_H
#define FQ_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"

/* One shard's answer (native layout: it never leaves the process). */
typedef struct fq_shard_health {
  uint32_t index;
  bool answered;          /* set by the ingress: the shard answered in time */
  bool read_ok;           /* a read transaction was opened and read */
  char read_error[160];   /* why not, when !read_ok */
  uint64_t queued;        /* commands not yet finished (queued or in flight) */
  int64_t oldest_ms;      /* creation time of the oldest of them; 0 = none */
  int64_t last_change_ms; /* the last commit that stored or moved a command (or start) */
  uint64_t map_used;      /* bytes in use in the map */
  uint64_t map_size;      /* the map's size now */
  uint64_t map_limit;     /* the high-water mark past which new commands are refused */
  uint64_t reserved;      /* kept for the unfinished commands plus one new one */
  uint64_t max_store;     /* the most the map may grow to */
  bool refusing;          /* new commands are being refused storage_full */
  int64_t at_ms;          /* when the shard answered */
  /* Cluster mode (docs/cluster.md): the node that owns the shard as this
   * node knows it ("" none known), and whether this node serves it. */
  bool cluster;
  bool served_here;
  char owner[33];
} fq_shard_health_t;

/* An account whose last token refresh was rejected. */
typedef struct fq_health_account {
  char name[130];
  int code;               /* project error code (FQ_EAUTH) */
  char reason[200];
} fq_health_account_t;

/* Append the msgpack reply of a health request to out: `ok` true (the
 * daemon answered), `healthy`, `problems` (strings), `stuck_ms`,
 * `shards` (n entries of sh, by index) and `accounts`, then `req` when
 * req_raw is set.  now_ms is the ingress's clock when it answers.
 * Returns 0 or FQ_EINTERNAL (out is left as it was). */
int fq_health_reply(fq_buf_t *out, const fq_shard_health_t *sh, unsigned n,
                    const fq_health_account_t *acc, size_t nacc, int64_t stuck_ms, int64_t now_ms,
                    const uint8_t *req_raw, size_t req_raw_len);

#endif
