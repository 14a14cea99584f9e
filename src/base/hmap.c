/*
 * The out-of-line half of hmap.h: growth, backward-shift deletion, walks.
 */
#include "hmap.h"

#include <errno.h>
#include <stdlib.h>

#define MIN_CAP 16

static unsigned char *slot_at(const fq_hmap_t *m, size_t i) { return m->slots + i * m->stride; }

void fq_hmap_init(fq_hmap_t *m, size_t item_size, unsigned max_load_pct) {
  memset(m, 0, sizeof *m);
  m->item_size = item_size;
  m->stride = sizeof(uint64_t) + (item_size + 7) / 8 * 8;
  m->max_load = max_load_pct < 10 ? 10 : max_load_pct > 90 ? 90 : max_load_pct;
}

void fq_hmap_free(fq_hmap_t *m) {
  free(m->slots);
  m->slots = NULL;
  m->cap = m->count = m->limit = 0;
}

/* How many items cap slots may hold: cap * max_load / 100 without
 * overflowing. */
static size_t limit_of(const fq_hmap_t *m, size_t cap) {
  return cap / 100 * m->max_load + cap % 100 * m->max_load / 100;
}

/* Move every item into a table of new_cap slots. */
static int rehash(fq_hmap_t *m, size_t new_cap) {
  if (new_cap > SIZE_MAX / m->stride) return -ENOMEM;
  unsigned char *ns = calloc(new_cap, m->stride);
  if (!ns) return -ENOMEM;
  size_t mask = new_cap - 1;
  for (size_t i = 0; i < m->cap; i++) {
    const unsigned char *s = slot_at(m, i);
    uint64_t h = fq__hmap_slot_h(s);
    if (!h) continue;
    size_t j = h & mask;
    while (fq__hmap_slot_h(ns + j * m->stride)) j = (j + 1) & mask;
    memcpy(ns + j * m->stride, s, m->stride);
  }
  free(m->slots);
  m->slots = ns;
  m->cap = new_cap;
  m->limit = limit_of(m, new_cap);
  return 0;
}

int fq__hmap_grow(fq_hmap_t *m, size_t n) {
  size_t cap = m->cap ? m->cap : MIN_CAP;
  while (limit_of(m, cap) < n) {
    if (cap > SIZE_MAX / 2) return -ENOMEM;
    cap *= 2;
  }
  return cap == m->cap ? 0 : rehash(m, cap);
}

void fq_hmap_del(fq_hmap_t *m, void *item) {
  size_t mask = m->cap - 1;
  size_t hole = (size_t)((unsigned char *)item - sizeof(uint64_t) - m->slots) / m->stride;
  /* Walk the rest of the probe run.  An item may fill the hole when the
   * hole lies between its home slot and where it sits now (cyclically):
   * then a lookup starting at its home still reaches it without crossing
   * an empty slot. */
  for (size_t k = (hole + 1) & mask;; k = (k + 1) & mask) {
    unsigned char *s = slot_at(m, k);
    uint64_t h = fq__hmap_slot_h(s);
    if (!h) break;
    size_t home = h & mask;
    if (((k - home) & mask) >= ((k - hole) & mask)) {
      memcpy(slot_at(m, hole), s, m->stride);
      hole = k;
    }
  }
  memset(slot_at(m, hole), 0, m->stride);
  m->count--;
}

void fq_hmap_clear(fq_hmap_t *m) {
  if (m->slots) memset(m->slots, 0, m->cap * m->stride);
  m->count = 0;
}

void *fq_hmap_each(const fq_hmap_t *m, size_t *pos) {
  for (size_t i = *pos; i < m->cap; i++) {
    unsigned char *s = slot_at(m, i);
    if (fq__hmap_slot_h(s)) {
      *pos = i + 1;
      return s + sizeof(uint64_t);
    }
  }
  *pos = m->cap;
  return NULL;
}
