/*
 * fq_replica: the store (src/daemon/store.h, "cluster mode: write sets")
 * and the log (cluster.h) put together, the building blocks of steps 2
 * and 3 of docs/cluster.md ("Wiring it into fleetqd"):
 *
 *   owner     fq_replica_commit: a prepared batch goes into the shard's log
 *             (fenced by the expected last sequence) before it is committed
 *             to LMDB; a batch the log refused is aborted, never committed.
 *   follower  fq_replica_catch_up: the log's entries, in order, applied to
 *             a copy of the store.
 *   takeover  fq_replica_take_over: catch up, append an empty marker that
 *             moves the log past anything the old owner could still
 *             append, apply it, and turn capture on.
 *
 * Not linked by fleetqd yet.  One replica handle per (store, shard) and one
 * thread at a time, like the store and the fq_cl_t it uses.
 */
#ifndef FQ_REPLICA_H
#define FQ_REPLICA_H

#include <stdint.h>

#include "cluster.h"
#include "fleetq/buf.h"
#include "fleetq/error.h"
#include "store.h"
#include "writeset.h"

/* How long an append that gets FQ_CL_EUNAVAIL is retried (with the same
 * message id: a retry whose first attempt landed finds it and does not
 * append twice) before the batch is given up.  A nats-server's crash
 * leaves the streams it led without a leader for 4 - 8.5 s (measured,
 * docs/cluster.md): the default outlasts that. */
#define FQ_REPLICA_UNAVAIL_MS 20000

/* The owner's side of one shard's log: the term its appends carry and
 * what they have done. */
typedef struct fq_replica {
  unsigned shard;
  uint64_t term;        /* the lease revision: part of every message id */
  uint64_t commits;     /* batches appended in this term (the message's `commit`) */
  int64_t unavail_ms;   /* FQ_REPLICA_UNAVAIL_MS unless set */
  fq_buf_t msg;         /* the encoded message, reused */
  /* counters (tests, and later the metrics) */
  uint64_t appended;    /* entries this handle appended (batches and markers) */
  uint64_t retries;     /* appends retried after FQ_CL_EUNAVAIL */
  uint64_t applied;     /* entries fq_replica_catch_up applied */
  uint64_t repeats;     /* entries it found applied already */
  uint64_t resubs;      /* its followers' consumers made again (fq_cl_follow_resubs) */
} fq_replica_t;

/* term: the lease revision (fq_cl_lease_t.rev) under which this node
 * appends; a new lease is a new handle (or fq_replica_set_term). */
void fq_replica_init(fq_replica_t *r, unsigned shard, uint64_t term);
void fq_replica_set_term(fq_replica_t *r, uint64_t term);
void fq_replica_free(fq_replica_t *r);

/* Finish the owner's open write transaction of s (capture on, into ws):
 * L = applied, prepare(L + 1), encode ws, append it to the log expecting
 * last sequence L; commit when the log took it, abort otherwise.  The
 * transaction is closed on return, whatever happened:
 *   0                 in the log at L + 1 and committed (fsync);
 *   FQ_CL_EFENCED     another node appended after L: this node no longer
 *                     owns the shard's history: step down (nothing of
 *                     the batch is anywhere);
 *   FQ_CL_EUNAVAIL    no answer for r->unavail_ms (the attempt running at
 *                     that moment is finished first: up to the cluster's
 *                     request timeout more): given up, aborted; the
 *                     append may still land, so catch up before any
 *                     other commit (the next one is fenced otherwise);
 *   FQ_ESTORFULL      JetStream out of room, or the local disk;
 *   FQ_STORE_EHOLE    the store has applied nothing yet (catch up first:
 *                     the log starts with its genesis);
 *   FQ_EPROTO, ...    the append's or prepare's other errors (aborted);
 *   a commit error    after the append (FQ_ESTORAGE, FQ_ESTORFULL): the log
 *                     has the batch, this copy does not; stop serving the
 *                     shard, reopen the store and catch up.
 * Nothing is ever committed without the append. */
int fq_replica_commit(fq_store_t *s, fq_ws_t *ws, fq_cl_t *cl, fq_replica_t *r, fq_err_t *err);

/* Apply the log's entries after s's applied one, up to until_seq (0: the
 * stream's last sequence, read when called), in order, each with
 * fq_store_apply (capture must be off, no transaction open).  An entry the
 * store says it holds (FQ_STORE_EREPEAT) counts as applied; any other
 * error stops and is returned.  FQ_CL_EUNAVAIL from the follower is
 * retried (the follower is opened again from the store's applied + 1)
 * until no entry has come for r->unavail_ms.  0 when the store's applied is
 * >= until_seq. */
int fq_replica_catch_up(fq_store_t *s, fq_cl_t *cl, fq_replica_t *r, uint64_t until_seq,
                        fq_err_t *err);

/* Take over shard r->shard under r's term (a lease just taken): capture
 * off, catch up to the log's end L, append the takeover marker (an empty
 * write set, commit 0) expecting L (refused: someone appended after L,
 * catch up and try again, a few times), apply the marker, then capture on
 * into ws.  *marker = the marker's sequence.  On error capture stays off.
 * The caller then reopens the shard like a restart (docs/cluster.md). */
int fq_replica_take_over(fq_store_t *s, fq_ws_t *ws, fq_cl_t *cl, fq_replica_t *r,
                         uint64_t *marker, fq_err_t *err);

#endif
