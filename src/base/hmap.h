/*
 * The one hash table: open addressing with linear probing and
 * backward-shift deletion (no tombstones, so lookups never slow down as
 * entries come and go), holding fixed-size items inline.
 *
 * The table does not know what a key is.  The caller hashes the key
 * (fq_hash64() of its bytes from util.h, fq_hmap_hash_u64() for a number)
 * and the item holds the key or points at it; a lookup walks the items
 * stored under the same 64-bit hash and the caller (or the eq callback of
 * fq_hmap_find) decides which one matches.  So one table serves string maps
 * of pointers (item = a pointer to a struct that holds its name), maps of
 * numbers to small records stored inline, and multimaps (several items
 * under one hash, e.g. the dedupe table).  Each slot is the 64-bit hash
 * plus the item, rounded up to 8 bytes; items are 8-byte aligned.
 *
 * Lifetimes: an item pointer is valid until the next fq_hmap_add,
 * fq_hmap_del, fq_hmap_reserve, fq_hmap_clear or fq_hmap_free on the same
 * table (adding may grow the table and deleting shifts later items back).
 * Keys an item points to are the caller's and must outlive the item.
 *
 * Allocation: only growth allocates (fq_hmap_add past the load limit, or
 * fq_hmap_reserve); after fq_hmap_reserve(m, n) succeeds, adding until the
 * table holds n items neither allocates nor fails.  Lookups, adds and the
 * reserve check are inline (the device queues and the dispatcher use them
 * per command); lookups never allocate.  Not thread safe: one owner.
 */
#ifndef FQ_HMAP_H
#define FQ_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct fq_hmap {
  unsigned char *slots; /* cap slots of `stride` bytes: uint64 hash (0 = empty), item */
  size_t cap;           /* 0 (nothing allocated yet) or a power of two */
  size_t count;
  size_t limit;         /* most items cap slots may hold under max_load */
  size_t item_size, stride;
  unsigned max_load;    /* percent of cap in use before the table doubles */
} fq_hmap_t;

/* An empty table of items of item_size bytes that doubles when more than
 * max_load_pct percent of its slots would be in use (clamped to 10..90;
 * lower means shorter probes and more memory).  Allocates nothing. */
void fq_hmap_init(fq_hmap_t *m, size_t item_size, unsigned max_load_pct);

/* Free the slots; the table is empty and usable again (same item size and
 * load).  Items that own memory must be freed by the caller first. */
void fq_hmap_free(fq_hmap_t *m);

/* Grow to hold n items (n > m->limit): 0 or -ENOMEM, table unchanged. */
int fq__hmap_grow(fq_hmap_t *m, size_t n);

/* Make room for n items in all.  0, or -ENOMEM with the table unchanged. */
static inline int fq_hmap_reserve(fq_hmap_t *m, size_t n) {
  return n <= m->limit ? 0 : fq__hmap_grow(m, n);
}

/* Remove an item (a pointer fq_hmap_add, _next, _find or _each returned,
 * still valid).  Later items of its probe run move back one by one. */
void fq_hmap_del(fq_hmap_t *m, void *item);

/* Remove every item, keeping the slots allocated. */
void fq_hmap_clear(fq_hmap_t *m);

/* Visit every item, in no particular order: start with *pos = 0; returns
 * NULL after the last.  The table must not change during the walk (collect
 * what to delete, or fq_hmap_clear at the end). */
void *fq_hmap_each(const fq_hmap_t *m, size_t *pos);

static inline size_t fq_hmap_count(const fq_hmap_t *m) { return m->count; }

/* Hash of a 64-bit number for this table: the first half of MurmurHash3's
 * finalizer, which spreads sequential numbers over the low bits the table
 * indexes by.  A bijection, so different numbers never share a hash. */
static inline uint64_t fq_hmap_hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

/* 0 marks an empty slot, so a hash of 0 is stored as 1. */
static inline uint64_t fq__hmap_h(uint64_t h) { return h ? h : 1; }

static inline uint64_t fq__hmap_slot_h(const unsigned char *slot) {
  uint64_t h;
  memcpy(&h, slot, sizeof h);
  return h;
}

/* The hash an item was stored under (0 reads back as 1, which the table
 * treats as the same hash). */
static inline uint64_t fq_hmap_item_hash(const void *item) {
  return fq__hmap_slot_h((const unsigned char *)item - sizeof(uint64_t));
}

/* The next item stored under hash h: start with *cursor = 0 and call again
 * for more; returns NULL when there are no more.  Items of other keys that
 * share the 64-bit hash come too, so check the key.  The table must not
 * change between calls. */
static inline void *fq_hmap_next(const fq_hmap_t *m, uint64_t h, size_t *cursor) {
  if (!m->count) return NULL;
  h = fq__hmap_h(h);
  size_t mask = m->cap - 1;
  for (size_t i = *cursor; i < m->cap; i++) {
    unsigned char *slot = m->slots + ((h + i) & mask) * m->stride;
    uint64_t sh = fq__hmap_slot_h(slot);
    if (sh == 0) break; /* the end of the probe run: h is not further on */
    if (sh == h) {
      *cursor = i + 1;
      return slot + sizeof(uint64_t);
    }
  }
  *cursor = m->cap;
  return NULL;
}

/* A new, zeroed item stored under hash h, for the caller to fill in.  It
 * does not look for an existing item with this hash: find first when keys
 * must be unique.  NULL when the table cannot grow (out of memory). */
static inline void *fq_hmap_add(fq_hmap_t *m, uint64_t h) {
  if (m->count >= m->limit && fq__hmap_grow(m, m->count + 1) != 0) return NULL;
  h = fq__hmap_h(h);
  size_t mask = m->cap - 1, j = h & mask;
  unsigned char *slot = m->slots + j * m->stride;
  while (fq__hmap_slot_h(slot)) {
    j = (j + 1) & mask;
    slot = m->slots + j * m->stride;
  }
  memcpy(slot, &h, sizeof h);
  m->count++;
  return slot + sizeof(uint64_t); /* empty slots are kept zeroed */
}

/* The first item under hash h for which eq(item, key) is true, or NULL.
 * Inline, so a constant eq is called directly. */
static inline void *fq_hmap_find(const fq_hmap_t *m, uint64_t h,
                                 bool (*eq)(const void *item, const void *key), const void *key) {
  size_t cursor = 0;
  void *item;
  while ((item = fq_hmap_next(m, h, &cursor)))
    if (eq(item, key)) return item;
  return NULL;
}

#endif
