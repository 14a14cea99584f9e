/*
 * The one seeded pseudo-random generator: xoshiro256** (Blackman and
 * Vigna), its 256-bit state filled from the 64-bit seed by splitmix64, so
 * every seed, 0 included, gives a good state.  The same seed gives the same
 * sequence on every machine and in every version: synthetic traffic files,
 * simulated failures and randomised tests are reproducible from the seed
 * their owner logs.
 *
 * Not for secrets: keys, nonces and tokens come from OpenSSL's RAND_bytes.
 * A generator is a plain value owned by one thread; nothing here locks.
 */
#ifndef FQ_RNG_H
#define FQ_RNG_H

#include <stdint.h>

typedef struct fq_rng {
  uint64_t s[4];
} fq_rng_t;

/* Start the sequence of `seed`. */
void fq_rng_seed(fq_rng_t *r, uint64_t seed);

/* Next 64 uniformly distributed bits. */
uint64_t fq_rng_next(fq_rng_t *r);

/* Uniform double in [0, 1), with 53 random bits. */
double fq_rng_unit(fq_rng_t *r);

/* Uniform in [0, n), without modulo bias; n must be > 0 (n == 0 returns
 * 0). */
uint64_t fq_rng_below(fq_rng_t *r, uint64_t n);

#endif
