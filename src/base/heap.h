/*
 * A binary min-heap of (int64 key, payload) entries: the deadline and timer
 * queues of the device queues, the dispatcher and the simulator's delayed
 * answers.  Every user orders by a time and carries one number or one
 * pointer, so the entry is that pair and the heap needs no comparison
 * callback; push and pop are inline because they sit on the dispatcher's
 * hot path.  Users that cancel entries do it lazily: they leave the entry
 * in and skip it when it reaches the top.
 *
 * A zeroed fq_heap_t is an empty heap.  Only push allocates (the array
 * doubles, from 64 entries); nothing is allocated per entry.  Entries with
 * equal keys leave in an unspecified order.  Not thread safe: one owner.
 */
#ifndef FQ_HEAP_H
#define FQ_HEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct fq_heap_ent {
  int64_t key;
  union {
    uint64_t u;
    void *p;   /* borrowed: the heap never follows or frees it */
  } v;
} fq_heap_ent_t;

typedef struct fq_heap {
  fq_heap_ent_t *a;
  size_t n, cap;
} fq_heap_t;

/* Make room for one more entry: 0 or -ENOMEM (the heap is unchanged). */
int fq__heap_grow(fq_heap_t *h);

/* Free the array; the heap is empty and usable again. */
void fq_heap_free(fq_heap_t *h);

static inline size_t fq_heap_count(const fq_heap_t *h) { return h->n; }

/* The entry with the smallest key, or NULL when empty.  Valid until the
 * next push or pop. */
static inline const fq_heap_ent_t *fq_heap_top(const fq_heap_t *h) { return h->n ? h->a : NULL; }

/* Add e.  0, or -ENOMEM with the heap unchanged. */
static inline int fq_heap_push(fq_heap_t *h, fq_heap_ent_t e) {
  if (h->n == h->cap) {
    int rc = fq__heap_grow(h);
    if (rc) return rc;
  }
  /* Sift up: move parents with a larger key down into the hole. */
  size_t i = h->n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (h->a[parent].key <= e.key) break;
    h->a[i] = h->a[parent];
    i = parent;
  }
  h->a[i] = e;
  return 0;
}

/* Remove and return the entry with the smallest key.  The heap must not be
 * empty (check fq_heap_top first). */
static inline fq_heap_ent_t fq_heap_pop(fq_heap_t *h) {
  fq_heap_ent_t top = h->a[0], last = h->a[--h->n];
  /* Sift the last entry down from the root into the smaller child's
   * place until both children are no smaller. */
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->a[c + 1].key < h->a[c].key) c++;
    if (h->a[c].key >= last.key) break;
    h->a[i] = h->a[c];
    i = c;
  }
  if (h->n) h->a[i] = last;
  return top;
}

#endif
