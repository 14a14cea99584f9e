/*
 * Retention: what a shard forgets, and when.  Without it every command
 * stays for ever (about 1.1 KB of record and key, 1.2-1.9 KB with its
 * events) and every store ends full.
 *
 *   events     an event older than the retention (its `at`) leaves the log,
 *              with its `tindex` row.  The log is pruned from its start
 *              only, so retained history is one gap-free run of seqs (and
 *              of each tenant's tseqs) that begins later; the last event
 *              of the log always stays, because the next seq is derived
 *              from it when the store opens.  tseq counters (`tcount`) are
 *              never touched: a tenant's tseq never repeats.
 *   commands   a command leaves (its record, and its key if still there)
 *              when its terminal event leaves the log: it has then been
 *              terminal for longer than the retention.  A command that is
 *              not terminal is never pruned, whatever its age; its early
 *              events may be (its record keeps the transitions).
 *   keys       a (tenant, key) dedupes for the dedupe window, counted from
 *              the acceptance of its command; then its `idemlog` row and
 *              in-memory entry go, and the key is free for a new command.
 *              The window never exceeds the retention: a key cannot
 *              dedupe against a command that is no longer stored.
 *
 * Work is bounded: a step deletes at most `batch` rows (an event with its
 * index row, a command, or a key; the last event it takes may add the
 * command it ends and that command's key), in a nested transaction
 * of the shard's batch transaction (store.h), so it costs no extra
 * fsync, never holds the writer long, and a failure in it (a full map)
 * drops only the step: the next one, a second later, tries half as much.
 * While more is due the shard runs a step every loop turn; otherwise the
 * next step is due when the oldest event or key reaches its age.
 *
 * Owned by one shard thread; not thread safe.
 */
#ifndef FQ_RETENTION_H
#define FQ_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"
#include "store.h"

#define FQ_RETENTION_BATCH 256   /* most rows one step deletes */

typedef struct fq_retention fq_retention_t;

typedef struct fq_retention_opts {
  int64_t retention_ms;     /* 0: keep every event and command */
  int64_t dedupe_window_ms; /* 0: keys dedupe for ever; else 1..retention_ms (if set) */
  size_t batch;             /* most rows per step; 0: FQ_RETENTION_BATCH */
  /* Optional: true while the shard still refers to terminal command num
   * of device (its dispatcher may look at it again); such a command, and
   * the log from its terminal event on, wait for the next step. */
  bool (*busy)(void *ud, const char *device, uint64_t num);
  void *busy_ud;
} fq_retention_opts_t;

typedef struct fq_retention_stats {
  uint64_t steps;     /* steps run */
  uint64_t events;    /* events pruned (committed) */
  uint64_t commands;  /* command records pruned */
  uint64_t keys;      /* expired keys removed */
  uint64_t failures;  /* steps dropped on an error */
} fq_retention_stats_t;

/* Retention for store (which must have no transaction open): sets the
 * store's dedupe window, which drops the keys already expired at `now`
 * from memory.  NULL with err on a bad option (window above retention) or
 * a storage error. */
fq_retention_t *fq_retention_new(fq_store_t *store, const fq_retention_opts_t *o, int64_t now,
                                 fq_err_t *err);
void fq_retention_destroy(fq_retention_t **rp);

/* When the next step is due (ms since the epoch; INT64_MAX: never). */
int64_t fq_retention_due(const fq_retention_t *r);

/* One bounded step, inside the store's open write transaction, at time
 * now.  Returns the rows it deleted; an error is logged, drops the step
 * (not the outer transaction) and is not returned.  What it removes from
 * memory waits for fq_retention_committed(). */
size_t fq_retention_step(fq_retention_t *r, int64_t now);

/* The outer transaction was committed (the step's deletions are durable:
 * apply them to memory) or aborted (forget them). */
void fq_retention_committed(fq_retention_t *r);
void fq_retention_aborted(fq_retention_t *r);

/* (tenant, key) hashes that, since the last call, no command of this
 * shard holds any more (for the ingress's table of which shard holds a
 * key).  Borrowed until the next step; the call empties the list. */
size_t fq_retention_take_gone(fq_retention_t *r, const uint64_t **h);

void fq_retention_stats(const fq_retention_t *r, fq_retention_stats_t *st);

#endif
