/*
 * Open-addressing hash table of (hash, number) pairs with linear probing
 * and backward-shift deletion.  See idem.h.
 */
#include "idem.h"

#include <errno.h>
#include <stdlib.h>

typedef struct slot {
  uint64_t h;   /* 0 marks an empty slot; real hashes are never 0 */
  uint64_t num;
} slot_t;

struct fq_idem {
  slot_t *slots;
  size_t cap; /* power of two */
  size_t count;
};

fq_idem_t *fq_idem_new(size_t initial) {
  fq_idem_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  size_t cap = 1024;
  while (cap < initial * 4) cap <<= 1;
  t->slots = calloc(cap, sizeof *t->slots);
  if (!t->slots) {
    free(t);
    return NULL;
  }
  t->cap = cap;
  return t;
}

void fq_idem_destroy(fq_idem_t **ip) {
  if (!ip || !*ip) return;
  free((*ip)->slots);
  free(*ip);
  *ip = NULL;
}

uint64_t fq_idem_hash(const char *tenant, size_t tlen, const char *key, size_t klen) {
  /* FNV-1a over tenant, a separator that cannot occur in a tenant, and the
   * key, then a final avalanche so linear probing sees well-spread bits. */
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < tlen; i++) h = (h ^ (uint8_t)tenant[i]) * 1099511628211ULL;
  h = (h ^ 0xffu) * 1099511628211ULL;
  for (size_t i = 0; i < klen; i++) h = (h ^ (uint8_t)key[i]) * 1099511628211ULL;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h ? h : 1;
}

static int grow(fq_idem_t *t) {
  size_t ncap = t->cap * 2;
  slot_t *ns = calloc(ncap, sizeof *ns);
  if (!ns) return -ENOMEM;
  for (size_t i = 0; i < t->cap; i++) {
    if (!t->slots[i].h) continue;
    size_t j = t->slots[i].h & (ncap - 1);
    while (ns[j].h) j = (j + 1) & (ncap - 1);
    ns[j] = t->slots[i];
  }
  free(t->slots);
  t->slots = ns;
  t->cap = ncap;
  return 0;
}

int fq_idem_put(fq_idem_t *t, uint64_t h, uint64_t num) {
  /* At most half full: a miss (the common case: a new key) then probes
   * about 2.5 slots instead of ~8.5 at three quarters. */
  if ((t->count + 1) * 2 > t->cap) {
    int rc = grow(t);
    if (rc) return rc;
  }
  size_t j = h & (t->cap - 1);
  while (t->slots[j].h) {
    if (t->slots[j].h == h && t->slots[j].num == num) return 0;
    j = (j + 1) & (t->cap - 1);
  }
  t->slots[j].h = h;
  t->slots[j].num = num;
  t->count++;
  return 0;
}

void fq_idem_del(fq_idem_t *t, uint64_t h, uint64_t num) {
  size_t mask = t->cap - 1, j = h & mask;
  while (t->slots[j].h && !(t->slots[j].h == h && t->slots[j].num == num)) j = (j + 1) & mask;
  if (!t->slots[j].h) return;
  /* Backward-shift deletion keeps probe chains intact without tombstones. */
  size_t hole = j;
  for (size_t k = (j + 1) & mask; t->slots[k].h; k = (k + 1) & mask) {
    size_t home = t->slots[k].h & mask;
    if (((k - home) & mask) >= ((k - hole) & mask)) {
      t->slots[hole] = t->slots[k];
      hole = k;
    }
  }
  t->slots[hole].h = 0;
  t->slots[hole].num = 0;
  t->count--;
}

int fq_idem_next(const fq_idem_t *t, uint64_t h, size_t *cursor, uint64_t *num) {
  size_t mask = t->cap - 1;
  size_t j = (h + *cursor) & mask;
  while (t->slots[j].h && *cursor <= t->cap) {
    (*cursor)++;
    if (t->slots[j].h == h) {
      *num = t->slots[j].num;
      return 1;
    }
    j = (j + 1) & mask;
  }
  return 0;
}

size_t fq_idem_count(const fq_idem_t *t) { return t->count; }

int fq_idem_foreach(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num), void *ud) {
  for (size_t i = 0; i < t->cap; i++) {
    if (!t->slots[i].h) continue;
    int rc = fn(ud, t->slots[i].h, t->slots[i].num);
    if (rc) return rc;
  }
  return 0;
}
