/*
 * Campaigns (issue 16): one command to many devices, with parts, a rate,
 * a start time, progress, abort and auto-abort.  Runs in the campaign
 * manager thread (campmgr.h: one owner, nothing thread safe), so that its
 * synchronous commits never stall the ingress; docs/operations.md
 * "Campaigns" describes the design.
 *
 * A campaign's definition and device lists live in their own LMDB
 * environment, <data dir>/campaigns (synchronous commits, like the
 * shards).  Once every part is in, the start time is fixed and written,
 * then the device commands are fanned out to the shards as ordinary
 * submits (key "<campaign key>/<vin or site>", the campaign id carried in
 * the internal kind frame 'C', shard.h), each shard storing its share in
 * its group commits; the campaign's reply leaves once every shard has
 * acknowledged every device.  A stop in between is repaired at the next
 * start: the same submits are sent again and dedupe makes that
 * idempotent.  Counts are read from the shards' records (exact across
 * restarts); progress events go out on the PUB socket.
 */
#ifndef FQ_CAMPAIGN_H
#define FQ_CAMPAIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "fleetq/error.h"
#include "fleetq/wire.h"

struct fq_accounts;

typedef struct fq_campaigns fq_campaigns_t;

/* What the campaign side needs from its thread (campmgr.h), which passes
 * it on to the ingress. */
typedef struct fq_camp_io {
  void *ud;
  /* An internal request to a shard: kind frame 'C' + campaign id, one
   * envelope frame (env), the body; keyhash, when not 0, is the hash of
   * the (tenant, key) it may store (for the ingress's dedupe table).
   * 0, or non-zero when it cannot be sent (try later). */
  int (*send)(void *ud, unsigned shard, const char *camp, const void *env, size_t envlen,
              const void *body, size_t len, uint64_t keyhash);
  /* A reply to a client: its envelope frames (routing id first), body. */
  void (*reply)(void *ud, zmq_msg_t *env, int nenv, const void *body, size_t len);
  /* A progress event on the PUB socket. */
  void (*publish)(void *ud, const char *topic, size_t tlen, const void *body, size_t len);
  /* Whether the client of a request (who, opaque; NULL without CURVE) may
   * see tenant. */
  bool (*tenant_ok)(void *ud, const void *who, const char *tenant, size_t tn);
} fq_camp_io_t;

/* Open (creating) <data_dir>/campaigns and load every campaign; those
 * whose fan-out did not finish are fanned out again, aborts not finished
 * are sent again (by the first ticks).  accounts may be NULL (no account
 * check).  A campaign over (done or aborted) is deleted retention_ms
 * after it finished (0: never), a bounded number per tick; its (tenant,
 * key) dedupes for dedupe_ms from the time its device commands were
 * stored.  shard_hwm: the shards' inbound queue limit (0: none); the
 * fan-outs keep at most a quarter of it in flight (and 2,048), leaving the
 * rest to ordinary requests. */
fq_campaigns_t *fq_campaigns_open(const char *data_dir, unsigned nshards,
                                  struct fq_accounts *accounts, int64_t retention_ms,
                                  int64_t dedupe_ms, int shard_hwm, const fq_camp_io_t *io,
                                  fq_err_t *err);
void fq_campaigns_close(fq_campaigns_t **cp);

/* A decoded campaign / campaign_get / campaign_abort request; env holds
 * nenv envelope frames (routing id first), moved out when the reply has
 * to wait. */
void fq_campaigns_request(fq_campaigns_t *c, const fq_request_t *req, const void *who,
                          zmq_msg_t *env, int nenv);

/* A shard's answer to an internal request ('C' record of a batch). */
void fq_campaigns_answer(fq_campaigns_t *c, const void *env, size_t envlen, const void *body,
                         size_t len);

/* Fan-out, start, progress, retention: call often; returns the ms until the next
 * call is useful (at most 1000). */
long fq_campaigns_tick(fq_campaigns_t *c, int64_t now);

/* Campaigns per state, for the metrics gauge. */
void fq_campaigns_states(const fq_campaigns_t *c, uint64_t counts[5]);

#endif
