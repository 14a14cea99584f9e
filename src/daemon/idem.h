/*
 * The in-memory dedupe table of one shard: 64-bit hash of (tenant, key) ->
 * command number.  It is only an accelerator: the durable truth is the
 * store's `idemlog` (written in the same transaction as the command), from
 * which the table is rebuilt at start-up, and every hit is verified against
 * it, so a hash collision can never merge two commands.
 *
 * Keeping this index in memory instead of a B-tree keyed by the client's
 * key turns every dedupe write into an append, which is what lets group
 * commit write few pages per batch.  Cost: a 16-byte slot per remembered
 * command in a table kept up to 80 % full (idem.c): 20 to 30 bytes each.
 *
 * Owned by one shard thread; not thread safe.
 */
#ifndef FQ_IDEM_H
#define FQ_IDEM_H

#include <stddef.h>
#include <stdint.h>

typedef struct fq_idem fq_idem_t;

/* A table sized to hold `initial` entries about 70 % full (it grows by
 * half when 80 % full). */
fq_idem_t *fq_idem_new(size_t initial);
void fq_idem_destroy(fq_idem_t **ip);

/* Make room for n entries in all (sized as fq_idem_new does): 0 or
 * -ENOMEM, the table unchanged. */
int fq_idem_reserve(fq_idem_t *t, size_t n);

/* Insert (h -> num), h being fq_hash64_pair(tenant, key) (util.h).
 * Several numbers may share one h.  0 or -ENOMEM. */
int fq_idem_put(fq_idem_t *t, uint64_t h, uint64_t num);

/* Replace the number of the pair (h, old) by repl, in place (no
 * allocation): 0, or -1 when there is no such pair. */
int fq_idem_set(fq_idem_t *t, uint64_t h, uint64_t old, uint64_t repl);

/* Remove one (h, num) pair if present. */
void fq_idem_del(fq_idem_t *t, uint64_t h, uint64_t num);

/* Iterate the numbers stored under h: start with *cursor = 0; returns 1
 * and sets *num while there are more, 0 at the end. */
int fq_idem_next(const fq_idem_t *t, uint64_t h, size_t *cursor, uint64_t *num);

size_t fq_idem_count(const fq_idem_t *t);
/* The memory the table holds, in bytes. */
size_t fq_idem_bytes(const fq_idem_t *t);

/* Visit every (h, num) pair, in no particular order; fn returns non-zero to
 * stop (that value is returned). */
int fq_idem_foreach(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num), void *ud);

/* Visit every (h, num) pair in increasing order of h (the table's own
 * order, store.c's snapshot writes it so): fn as above. */
int fq_idem_foreach_sorted(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num),
                           void *ud);

/* Fill an empty table from n pairs (h, num) laid out as 2n words in the
 * order fq_idem_foreach_sorted gives, sized as fq_idem_new(reserve) would
 * be when that is larger: one pass, no probing or shifting.  0; -EINVAL
 * when the table is not empty, or the pairs are not in that order or hold
 * a hash of 0 (then the table is left empty); -ENOMEM. */
int fq_idem_load_sorted(fq_idem_t *t, const uint64_t *pairs, size_t n, size_t reserve);

#endif
