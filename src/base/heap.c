/*
 * The out-of-line half of heap.h: growing and freeing the array.
 */
#include "heap.h"

#include <errno.h>
#include <stdlib.h>

int fq__heap_grow(fq_heap_t *h) {
  size_t cap = h->cap ? h->cap * 2 : 64;
  if (cap > SIZE_MAX / sizeof *h->a) return -ENOMEM;
  fq_heap_ent_t *a = realloc(h->a, cap * sizeof *a);
  if (!a) return -ENOMEM;
  h->a = a;
  h->cap = cap;
  return 0;
}

void fq_heap_free(fq_heap_t *h) {
  free(h->a);
  h->a = NULL;
  h->n = h->cap = 0;
}
