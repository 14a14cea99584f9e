/*
 * The dedupe table: a multimap of (hash, number) pairs in the base hash
 * table (hmap.h), the number stored under its hash.  See idem.h.
 */
#include "idem.h"

#include <errno.h>
#include <stdlib.h>

#include "hmap.h"

struct fq_idem {
  fq_hmap_t m; /* uint64_t number under the (tenant, key) hash */
};

fq_idem_t *fq_idem_new(size_t initial) {
  fq_idem_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  /* At most half full: a miss (the common case: a new key) then probes
   * about 2.5 slots instead of ~8.5 at three quarters. */
  fq_hmap_init(&t->m, sizeof(uint64_t), 50);
  if (fq_hmap_reserve(&t->m, initial * 2 > 512 ? initial * 2 : 512) != 0) {
    free(t);
    return NULL;
  }
  return t;
}

void fq_idem_destroy(fq_idem_t **ip) {
  if (!ip || !*ip) return;
  fq_hmap_free(&(*ip)->m);
  free(*ip);
  *ip = NULL;
}

/* The slot holding (h, num), or NULL. */
static uint64_t *find(const fq_idem_t *t, uint64_t h, uint64_t num) {
  size_t cursor = 0;
  uint64_t *v;
  while ((v = fq_hmap_next(&t->m, h, &cursor)))
    if (*v == num) return v;
  return NULL;
}

int fq_idem_put(fq_idem_t *t, uint64_t h, uint64_t num) {
  if (find(t, h, num)) return 0;
  uint64_t *v = fq_hmap_add(&t->m, h);
  if (!v) return -ENOMEM;
  *v = num;
  return 0;
}

void fq_idem_del(fq_idem_t *t, uint64_t h, uint64_t num) {
  uint64_t *v = find(t, h, num);
  if (v) fq_hmap_del(&t->m, v);
}

int fq_idem_next(const fq_idem_t *t, uint64_t h, size_t *cursor, uint64_t *num) {
  const uint64_t *v = fq_hmap_next(&t->m, h, cursor);
  if (!v) return 0;
  *num = *v;
  return 1;
}

size_t fq_idem_count(const fq_idem_t *t) { return fq_hmap_count(&t->m); }

int fq_idem_foreach(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num), void *ud) {
  size_t pos = 0;
  for (uint64_t *v; (v = fq_hmap_each(&t->m, &pos));) {
    int rc = fn(ud, fq_hmap_item_hash(v), *v);
    if (rc) return rc;
  }
  return 0;
}
