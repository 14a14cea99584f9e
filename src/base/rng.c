/*
 * xoshiro256** seeded through splitmix64; see rng.h.  Both are public
 * domain algorithms, written here from their published descriptions.
 */
#include "rng.h"

/* splitmix64: a Weyl sequence through a 64-bit finalizer; consecutive
 * outputs are well spread even for seeds 0, 1, 2, ... */
static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void fq_rng_seed(fq_rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fq_rng_next(fq_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double fq_rng_unit(fq_rng_t *r) { return (double)(fq_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t fq_rng_below(fq_rng_t *r, uint64_t n) {
  if (n == 0) return 0;
  /* Draws at or above the largest multiple of n are redrawn, so every
   * residue is equally likely. */
  uint64_t lim = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do v = fq_rng_next(r);
  while (v >= lim);
  return v % n;
}
