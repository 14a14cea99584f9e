/*
 * Rate limits for dispatch: token buckets keyed by a short string (a
 * device id, or an account id), plus "parked until" after a 429.
 *
 * A shard keeps one table per limit class (per device, per account), each
 * with its own rate and burst.  Every operation is O(1): a hash lookup and
 * a move to the front of an LRU list.  The table is bounded; when it is full
 * the least recently used *idle* bucket is dropped.  A bucket is idle when
 * it is full and not parked: it then holds no information a fresh bucket
 * would not, so eviction never lets a device exceed its limit.  If the few
 * least recently used buckets are all busy, the call fails with FQ_EBUSY
 * and the caller simply tries later (size the table above the number of
 * devices a shard serves at once).
 *
 * Time is an argument (now_ms, any monotonic millisecond clock), never read
 * inside, so tests drive it directly.  A table belongs to one thread.
 */
#ifndef FQ_RATELIMIT_H
#define FQ_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "fleetq/error.h"

typedef struct fq_rl fq_rl_t;

#define FQ_RL_KEY_MAX 64

typedef struct fq_rl_opts {
  double rate;            /* tokens per second, > 0 */
  double burst;           /* bucket size, >= 1 */
  size_t capacity;        /* most keys tracked at once [4096] */
  int64_t max_park_ms;    /* longest park honoured [86400000 = 1 day] */
} fq_rl_opts_t;

/* Create a table; NULL with err set (FQ_EBADPARAM for rate <= 0 or
 * burst < 1, -ENOMEM). */
fq_rl_t *fq_rl_new(const fq_rl_opts_t *opts, fq_err_t *err);
void fq_rl_destroy(fq_rl_t **rl);

/* Take one token for key at now_ms.  Returns 0 when taken (go ahead), or
 * the number of milliseconds to wait before a token can be taken (> 0:
 * nothing was taken; the key is parked or its bucket is empty), or a
 * negative code: FQ_EBADPARAM (empty key or longer than FQ_RL_KEY_MAX),
 * FQ_EBUSY (table full of busy buckets). */
int64_t fq_rl_take(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms);

/* Like fq_rl_take() without taking: 0 if a take would succeed now, else
 * the wait in ms.  An unknown key answers 0 and is not inserted. */
int64_t fq_rl_peek(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms);

/* Give back a token taken for a request that was never sent (e.g. the
 * HTTP layer said FQ_EBUSY).  No-op for unknown keys; never above burst. */
void fq_rl_refund(fq_rl_t *rl, const char *key, size_t klen);

/* Park key until until_ms (capped at now_ms + max_park_ms; an earlier
 * park is never shortened).  Returns 0 or a negative code as for
 * fq_rl_take(). */
int fq_rl_park(fq_rl_t *rl, const char *key, size_t klen, int64_t until_ms, int64_t now_ms);

/* The park deadline of key in ms, 0 when not parked at now_ms. */
int64_t fq_rl_parked_until(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms);

/* Number of keys tracked. */
size_t fq_rl_size(const fq_rl_t *rl);

/* Parse a Retry-After value (delta seconds, or an HTTP date in IMF-fixdate
 * form "Sun, 06 Nov 1994 08:49:37 GMT") into a delay in ms from now_unix_ms
 * (wall clock, needed for dates).  Returns the delay (>= 0) or -1 when the
 * value is neither. */
int64_t fq_rl_parse_retry_after(const char *value, int64_t now_unix_ms);

/* The delay a Retry-After value (or RateLimit-Reset) asks for, capped at
 * max_ms whichever form it takes: delta seconds, including a number too
 * large to read, or an HTTP date however far off (a date in 2099 asked one
 * command to wait 2,299,916,018 s).  Returns 0..max_ms, or -1 when the
 * value is neither form. */
int64_t fq_rl_retry_after_ms(const char *value, int64_t now_unix_ms, int64_t max_ms);

#endif
