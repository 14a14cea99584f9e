/*
 * Shared by the tests of replicated stores (store_gen.c): realistic writes
 * through the store API, and row-by-row comparisons of two environments.
 */
#ifndef FQ_STORE_GEN_H
#define FQ_STORE_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fleetq/buf.h"
#include "store.h"

/* The map size dump_env opens an environment with (LMDB takes the file's
 * own when it is larger). */
#define STORE_GEN_MAP (64ull << 20)

void rm_rf(const char *dir);

/* Every named database of the environment in dir (no store may have it
 * open), one line per row: "db key value" in hex, in key order, meta
 * `store_id` left out (it names one copy); and the names in the main
 * database.  Returns the number of rows. */
size_t dump_env(const char *dir, fq_buf_t *out);
/* Equal dumps; else a failure naming the first line that differs. */
bool same_dump(const fq_buf_t *a, const fq_buf_t *b, const char *what);

/* An event for rec's state (prev: the state before, -1 for a new one). */
void add_event(fq_store_t *s, const fq_cmdrec_t *rec, int prev);
/* A new command (what a submit writes): key, record, queue row (or a
 * `sched` row when not_before is set), campaign row, `queued` event. */
void submit(fq_store_t *s, fq_cmdrec_t *r, const char *tenant, const char *key, int vin,
            int64_t at, int64_t not_before, const char *campaign);
/* A transition (record and event); terminal ones leave the queue. */
void move(fq_store_t *s, fq_cmdrec_t *r, int state, int64_t at);

#endif
