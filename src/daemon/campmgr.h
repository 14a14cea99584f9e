/*
 * The campaign manager thread: owns the campaigns (campaign.h) and their
 * LMDB environment, so that their synchronous commits (an fsync, a few
 * ms each) never stall the ingress thread, which does no disk I/O.
 *
 * It has one inproc PAIR socket to the ingress and no other socket: the
 * ingress forwards campaign requests and the shards' answers to it, and
 * sends on its behalf what it asks for (replies on the ROUTER, progress
 * events on the PUB socket, internal requests to a shard).  Messages,
 * first frame the kind:
 *
 *   ingress -> manager
 *     'Q' who, envelope..., body    a decoded campaign / campaign_get /
 *                                   campaign_abort request (decoded again
 *                                   here); who: empty without CURVE, else
 *                                   'A' (every tenant) or 'L' + the
 *                                   client's tenant list (clients.h acl)
 *     'A' env, body                 a shard's answer ('C' record)
 *     'G'                           serving: every shard announced its keys,
 *                                   the ticks (fan-out, progress) may run
 *     'H'                           stopping: no more ticks
 *     'T'                           end the thread
 *   manager -> ingress
 *     'R' envelope..., body         a reply to a client
 *     'P' topic, body               a progress event
 *     'S'+u32 shard+u64 keyhash, kind ('C' + campaign id), env, body
 *                                   an internal request to a shard; a
 *                                   keyhash other than 0 is marked in the
 *                                   ingress's dedupe table as it is sent.
 *                                   When the shard's queue is full the
 *                                   ingress holds it (and reads nothing
 *                                   more from here) until it goes through.
 *
 * Both directions are unbounded (no high-water mark): what the manager
 * sends is bounded by its own windows (the fan-out window, one count and
 * one abort round per campaign).
 */
#ifndef FQ_CAMPMGR_H
#define FQ_CAMPMGR_H

#include <stdint.h>

#include "fleetq/error.h"

struct fq_accounts;

typedef struct fq_campmgr fq_campmgr_t;

typedef struct fq_campmgr_opts {
  void *zmq_ctx;
  const char *endpoint;   /* the ingress's PAIR (bound before the start) */
  const char *data_dir;   /* <data_dir>/campaigns */
  unsigned nshards;
  struct fq_accounts *accounts; /* borrowed, or NULL */
  int64_t retention_ms;   /* campaigns over are deleted after it (0: never) */
  int64_t dedupe_ms;      /* how long a campaign key dedupes */
  int shard_hwm;          /* the shards' inbound queue limit (fan-out window) */
} fq_campmgr_opts_t;

/* Open the campaigns (errors are reported here) and start the thread. */
fq_campmgr_t *fq_campmgr_start(const fq_campmgr_opts_t *o, fq_err_t *err);

/* Join the thread (the ingress has sent it 'T') and free everything. */
void fq_campmgr_join(fq_campmgr_t **m);

#endif
