/*
 * Unit tests of hmap.c: a fixed-seed random mix of adds, deletes and
 * lookups checked against a plain array reference, with a hash that
 * collides on purpose (a handful of distinct values, 0 among them) so that
 * probe runs are long, wrap around the end of the table and get shifted
 * back by deletes; plus a string-keyed map of pointers the way the
 * daemon's tables use it, a multimap, and the reserve guarantee.
 */
#include <stdlib.h>

#include "fq_test.h"
#include "hmap.h"
#include "rng.h"
#include "util.h"

typedef struct item {
  uint64_t key;
  uint64_t val;
} item_t;

static bool item_eq(const void *it, const void *key) {
  return ((const item_t *)it)->key == *(const uint64_t *)key;
}

/* Few distinct hashes, including 0 (stored as 1) and values whose home
 * slot is the last one of a 16- or 32-slot table. */
static uint64_t bad_hash(uint64_t key) {
  static const uint64_t h[] = {0, 1, 15, 31, 47, 0x8000000000000000ULL, 7};
  return h[key % 7];
}

enum { KEYS = 600 };

FQ_TEST(hmap_matches_reference_with_collisions) {
  uint64_t seed = 4242;
  printf("  seed %" PRIu64 "\n", seed);
  fq_rng_t rng;
  fq_rng_seed(&rng, seed);
  fq_hmap_t m;
  fq_hmap_init(&m, sizeof(item_t), 75);
  static uint64_t ref[KEYS]; /* value + 1, 0 = absent */
  memset(ref, 0, sizeof ref);
  size_t live = 0;
  int bad = 0;
  for (int step = 0; step < 30000 && bad < 5; step++) {
    uint64_t k = fq_rng_below(&rng, KEYS);
    item_t *it = fq_hmap_find(&m, bad_hash(k), item_eq, &k);
    if ((it != NULL) != (ref[k] != 0) || (it && it->val + 1 != ref[k])) {
      FQ__FAIL("step %d: key %" PRIu64 " found %d (val %" PRIu64 "), reference %" PRIu64, step,
               k, it != NULL, it ? it->val : 0, ref[k]);
      bad++;
      continue;
    }
    /* Add while under a third of the keys are in, else lean to deletes:
     * the table fills, drains and refills. */
    bool add = fq_rng_below(&rng, KEYS) >= live * 3 / 2;
    if (add && !it) {
      item_t *n = fq_hmap_add(&m, bad_hash(k));
      if (!n) {
        FQ__FAIL("add failed");
        bad++;
        continue;
      }
      CHECK(n->key == 0 && n->val == 0); /* new items come zeroed */
      n->key = k;
      n->val = fq_rng_next(&rng) >> 1;
      ref[k] = n->val + 1;
      live++;
    } else if (!add && it) {
      fq_hmap_del(&m, it);
      ref[k] = 0;
      live--;
    }
    if (fq_hmap_count(&m) != live) {
      FQ__FAIL("step %d: count %zu, reference %zu", step, fq_hmap_count(&m), live);
      bad++;
    }
    /* Every so often, every key must be where the reference says. */
    if (step % 1000 == 999) {
      for (uint64_t q = 0; q < KEYS; q++) {
        item_t *x = fq_hmap_find(&m, bad_hash(q), item_eq, &q);
        if ((x != NULL) != (ref[q] != 0) || (x && x->val + 1 != ref[q])) {
          FQ__FAIL("step %d: key %" PRIu64 " lost or stale", step, q);
          bad++;
          break;
        }
      }
    }
  }
  /* A walk visits each live item exactly once. */
  static int seen[KEYS];
  memset(seen, 0, sizeof seen);
  size_t pos = 0, walked = 0;
  for (item_t *x; (x = fq_hmap_each(&m, &pos));) {
    CHECK(x->key < KEYS && ref[x->key] != 0);
    if (x->key < KEYS) seen[x->key]++;
    walked++;
  }
  CHECK_INT(walked, live);
  for (int q = 0; q < KEYS; q++)
    if (seen[q] > 1) FQ__FAIL("key %d visited %d times", q, seen[q]);
  fq_hmap_clear(&m);
  CHECK_INT(fq_hmap_count(&m), 0);
  uint64_t k0 = 0;
  CHECK(fq_hmap_find(&m, bad_hash(0), item_eq, &k0) == NULL);
  fq_hmap_free(&m);
}

FQ_TEST(hmap_wraparound_delete_keeps_runs_reachable) {
  /* Fill the last slots of a 16-slot table and wrap: items homed at 15
   * sit in 15, 0, 1; an item homed at 0 is pushed to 2.  Deleting the one
   * in 15 must pull the run back across the end without losing any. */
  fq_hmap_t m;
  fq_hmap_init(&m, sizeof(item_t), 75);
  CHECK_INT(fq_hmap_reserve(&m, 4), 0);
  CHECK_INT(m.cap, 16);
  static const uint64_t hashes[] = {15, 15, 15, 16 /* home 0 */, 14};
  item_t *it;
  for (uint64_t k = 0; k < 5; k++) {
    it = fq_hmap_add(&m, hashes[k]);
    CHECK(it != NULL);
    if (it) it->key = k;
  }
  for (uint64_t del = 0; del < 5; del++) {
    it = fq_hmap_find(&m, hashes[del], item_eq, &del);
    CHECK(it != NULL);
    if (it) fq_hmap_del(&m, it);
    for (uint64_t k = del + 1; k < 5; k++)
      if (!fq_hmap_find(&m, hashes[k], item_eq, &k))
        FQ__FAIL("after deleting %" PRIu64 ", key %" PRIu64 " is unreachable", del, k);
  }
  CHECK_INT(fq_hmap_count(&m), 0);
  fq_hmap_free(&m);
}

/* The daemon's shape: items are pointers to structs that hold their key. */
typedef struct named {
  char name[24];
  int n;
} named_t;

static bool named_eq(const void *it, const void *key) {
  return strcmp((*(named_t *const *)it)->name, key) == 0;
}

FQ_TEST(hmap_string_keys_to_pointers) {
  fq_hmap_t m;
  fq_hmap_init(&m, sizeof(named_t *), 50);
  enum { N = 3000 };
  static named_t objs[N];
  for (int i = 0; i < N; i++) {
    snprintf(objs[i].name, sizeof objs[i].name, "v:%d", i);
    objs[i].n = i;
    named_t **slot = fq_hmap_add(&m, fq_hash64(objs[i].name, strlen(objs[i].name)));
    CHECK(slot != NULL);
    if (slot) *slot = &objs[i];
  }
  CHECK_INT(fq_hmap_count(&m), N);
  CHECK(m.cap >= 2 * N); /* at most half full */
  for (int i = 0; i < N; i += 2) {
    named_t **slot = fq_hmap_find(&m, fq_hash64(objs[i].name, strlen(objs[i].name)), named_eq,
                                  objs[i].name);
    CHECK(slot && *slot == &objs[i]);
    if (slot) fq_hmap_del(&m, slot);
  }
  for (int i = 0; i < N; i++) {
    char key[24];
    snprintf(key, sizeof key, "v:%d", i);
    named_t **slot = fq_hmap_find(&m, fq_hash64(key, strlen(key)), named_eq, key);
    if (i % 2 == 0 && slot) FQ__FAIL("%s still there", key);
    if (i % 2 == 1 && (!slot || (*slot)->n != i)) FQ__FAIL("%s lost", key);
  }
  CHECK(fq_hmap_find(&m, fq_hash64("v:x", 3), named_eq, "v:x") == NULL);
  fq_hmap_free(&m);
}

FQ_TEST(hmap_multimap_cursor_and_reserve) {
  fq_hmap_t m;
  fq_hmap_init(&m, sizeof(uint64_t), 50);
  CHECK_INT(fq_hmap_reserve(&m, 1000), 0);
  unsigned char *slots = m.slots;
  size_t cap = m.cap;
  CHECK(cap >= 2000);
  /* Up to the reserved count nothing moves. */
  for (uint64_t i = 1; i <= 1000; i++) {
    uint64_t *v = fq_hmap_add(&m, i % 3);
    CHECK(v != NULL);
    if (v) *v = i;
  }
  CHECK(m.slots == slots && m.cap == cap);
  /* The items under hash 0 (stored as 1) and under 1 both come back under
   * either: hashes 0 and 1 are one hash to the table. */
  size_t cur = 0, n0 = 0, n2 = 0;
  for (uint64_t *v; (v = fq_hmap_next(&m, 2, &cur));) {
    CHECK(*v % 3 == 2);
    n2++;
  }
  CHECK_INT(n2, 333);
  cur = 0;
  for (uint64_t *v; (v = fq_hmap_next(&m, 0, &cur));) n0++;
  CHECK_INT(n0, 667);
  /* Growth past the reservation keeps every item. */
  for (uint64_t i = 1001; i <= 5000; i++) {
    uint64_t *v = fq_hmap_add(&m, fq_hmap_hash_u64(i));
    CHECK(v != NULL);
    if (v) *v = i;
  }
  CHECK_INT(fq_hmap_count(&m), 5000);
  size_t found = 0;
  for (uint64_t i = 1001; i <= 5000; i++) {
    cur = 0;
    for (uint64_t *v; (v = fq_hmap_next(&m, fq_hmap_hash_u64(i), &cur));)
      if (*v == i) found++;
  }
  CHECK_INT(found, 4000);
  /* hash_u64 is a bijection on a sample: no two of 0..4999 collide. */
  fq_hmap_t seen;
  fq_hmap_init(&seen, sizeof(uint64_t), 50);
  int dups = 0;
  for (uint64_t i = 0; i < 5000; i++) {
    uint64_t h = fq_hmap_hash_u64(i);
    size_t c = 0;
    if (fq_hmap_next(&seen, h, &c)) dups++;
    uint64_t *v = fq_hmap_add(&seen, h);
    if (v) *v = i;
  }
  CHECK_INT(dups, 0);
  fq_hmap_free(&seen);
  fq_hmap_free(&m);
}
