/*
 * Unit tests of heap.h: a fixed-seed random mix of pushes and pops checked
 * against a plain array reference (the popped key is always the smallest
 * left, and the payload pushed with it comes back with it), plus the
 * extreme keys and the empty heap.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "fq_test.h"
#include "heap.h"
#include "rng.h"

enum { REF_MAX = 20000 };

typedef struct ref {
  int64_t key[REF_MAX];
  uint64_t id[REF_MAX];
  size_t n;
} ref_t;

/* Index of the smallest key in the reference. */
static size_t ref_min(const ref_t *r) {
  size_t m = 0;
  for (size_t i = 1; i < r->n; i++)
    if (r->key[i] < r->key[m]) m = i;
  return m;
}

/* Remove the entry (key, id) from the reference; false if it is not
 * there. */
static bool ref_take(ref_t *r, int64_t key, uint64_t id) {
  for (size_t i = 0; i < r->n; i++) {
    if (r->key[i] == key && r->id[i] == id) {
      r->key[i] = r->key[r->n - 1];
      r->id[i] = r->id[r->n - 1];
      r->n--;
      return true;
    }
  }
  return false;
}

FQ_TEST(heap_pops_in_key_order_against_reference) {
  uint64_t seed = 20261129;
  printf("  seed %" PRIu64 "\n", seed);
  fq_rng_t rng;
  fq_rng_seed(&rng, seed);
  static ref_t ref;
  ref.n = 0;
  fq_heap_t h = {0};
  uint64_t next_id = 1;
  int bad = 0;
  for (int step = 0; step < 60000 && bad < 5; step++) {
    /* Push more than pop at first so the heap grows well past its first
     * array, then drain.  Keys come from a small range: many ties. */
    bool push = step < 40000 ? fq_rng_below(&rng, 3) != 0 : false;
    if (push && ref.n < REF_MAX) {
      int64_t key = (int64_t)fq_rng_below(&rng, 500) - 250;
      uint64_t id = next_id++;
      if (fq_heap_push(&h, (fq_heap_ent_t){.key = key, .v.u = id}) != 0) {
        FQ__FAIL("push failed at step %d", step);
        bad++;
        continue;
      }
      ref.key[ref.n] = key;
      ref.id[ref.n] = id;
      ref.n++;
    } else if (ref.n) {
      const fq_heap_ent_t *top = fq_heap_top(&h);
      int64_t want = ref.key[ref_min(&ref)];
      if (!top || top->key != want) {
        FQ__FAIL("step %d: top %" PRId64 ", want %" PRId64, step, top ? top->key : -999, want);
        bad++;
        continue;
      }
      fq_heap_ent_t e = fq_heap_pop(&h);
      if (e.key != want || !ref_take(&ref, e.key, e.v.u)) {
        FQ__FAIL("step %d: popped (%" PRId64 ", %" PRIu64 "), want key %" PRId64, step, e.key,
                 e.v.u, want);
        bad++;
      }
    }
    if (fq_heap_count(&h) != ref.n) {
      FQ__FAIL("step %d: count %zu, reference %zu", step, fq_heap_count(&h), ref.n);
      bad++;
    }
  }
  CHECK(next_id > 20000); /* the workload really grew the heap */
  CHECK_INT(ref.n, 0);
  CHECK(fq_heap_top(&h) == NULL);
  fq_heap_free(&h);
  CHECK(h.a == NULL && h.n == 0 && h.cap == 0);
}

FQ_TEST(heap_extreme_keys_and_pointer_payloads) {
  fq_heap_t h = {0};
  static int objs[4];
  static const int64_t keys[] = {INT64_MAX, 0, INT64_MIN, -1};
  for (int i = 0; i < 4; i++)
    CHECK_INT(fq_heap_push(&h, (fq_heap_ent_t){.key = keys[i], .v.p = &objs[i]}), 0);
  /* INT64_MIN, -1, 0, INT64_MAX, each with its own pointer. */
  static const int order[] = {2, 3, 1, 0};
  for (int i = 0; i < 4; i++) {
    fq_heap_ent_t e = fq_heap_pop(&h);
    CHECK(e.key == keys[order[i]]);
    CHECK(e.v.p == &objs[order[i]]);
  }
  CHECK(fq_heap_top(&h) == NULL);
  /* Freed and reused. */
  fq_heap_free(&h);
  CHECK_INT(fq_heap_push(&h, (fq_heap_ent_t){.key = 5, .v.u = 7}), 0);
  CHECK(fq_heap_top(&h) && fq_heap_top(&h)->v.u == 7);
  fq_heap_free(&h);
}
