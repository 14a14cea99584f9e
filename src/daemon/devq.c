/*
 * Per-device FIFOs (a hash table of device -> array of numbers), a number
 * -> device index, and a binary min-heap of deadlines with lazy deletion.
 * See devq.h.
 */
#include "devq.h"

#include "heap.h"
#include "hmap.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct dev {
  uint64_t *nums;
  size_t n, cap;
  char name[];
} dev_t_;

typedef struct act {
  uint64_t num;
  int64_t deadline;
  dev_t_ *dev;
} act_t;

struct fq_devq {
  fq_hmap_t devs;   /* dev_t_ * by name */
  fq_hmap_t act;    /* act_t by number */
  fq_heap_t heap;   /* (deadline, num), stale entries dropped at the top */
};

static uint64_t str_hash(const char *s) { return fq_hash64(s, strlen(s)); }

static bool dev_eq(const void *item, const void *name) {
  return strcmp((*(dev_t_ *const *)item)->name, name) == 0;
}

static bool act_eq(const void *item, const void *num) {
  return ((const act_t *)item)->num == *(const uint64_t *)num;
}

fq_devq_t *fq_devq_new(void) {
  fq_devq_t *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  fq_hmap_init(&q->devs, sizeof(dev_t_ *), 50);
  fq_hmap_init(&q->act, sizeof(act_t), 75);
  if (fq_hmap_reserve(&q->devs, 512) || fq_hmap_reserve(&q->act, 768)) {
    fq_devq_destroy(&q);
    return NULL;
  }
  return q;
}

void fq_devq_destroy(fq_devq_t **qp) {
  if (!qp || !*qp) return;
  fq_devq_t *q = *qp;
  size_t pos = 0;
  for (dev_t_ **d; (d = fq_hmap_each(&q->devs, &pos));) {
    free((*d)->nums);
    free(*d);
  }
  fq_hmap_free(&q->devs);
  fq_hmap_free(&q->act);
  fq_heap_free(&q->heap);
  free(q);
  *qp = NULL;
}

static dev_t_ *dev_find(const fq_devq_t *q, const char *name) {
  dev_t_ **d = fq_hmap_find(&q->devs, str_hash(name), dev_eq, name);
  return d ? *d : NULL;
}

static dev_t_ *dev_get(fq_devq_t *q, const char *name) {
  dev_t_ *d = dev_find(q, name);
  if (d) return d;
  size_t len = strlen(name);
  d = calloc(1, sizeof *d + len + 1);
  if (!d) return NULL;
  memcpy(d->name, name, len + 1);
  dev_t_ **slot = fq_hmap_add(&q->devs, str_hash(name));
  if (!slot) {
    free(d);
    return NULL;
  }
  *slot = d;
  return d;
}

/* Drop an empty device entry so idle devices cost nothing. */
static void dev_drop(fq_devq_t *q, dev_t_ *dev) {
  dev_t_ **slot = fq_hmap_find(&q->devs, str_hash(dev->name), dev_eq, dev->name);
  if (!slot) return;
  fq_hmap_del(&q->devs, slot);
  free(dev->nums);
  free(dev);
}

static act_t *act_find(const fq_devq_t *q, uint64_t num) {
  return fq_hmap_find(&q->act, fq_hmap_hash_u64(num), act_eq, &num);
}

int fq_devq_push(fq_devq_t *q, const char *device, uint64_t num, int64_t deadline) {
  /* Room for the index entry first, so that the push cannot fail after
   * the FIFO and the heap have taken the number. */
  if (fq_hmap_reserve(&q->act, fq_hmap_count(&q->act) + 1) != 0) return -ENOMEM;
  dev_t_ *d = dev_get(q, device);
  if (!d) return -ENOMEM;
  if (d->n == d->cap) {
    size_t nc = d->cap ? d->cap * 2 : 4;
    uint64_t *p = realloc(d->nums, nc * sizeof *p);
    if (!p) return -ENOMEM;
    d->nums = p;
    d->cap = nc;
  }
  if (fq_heap_push(&q->heap, (fq_heap_ent_t){.key = deadline, .v.u = num}) != 0) return -ENOMEM;
  d->nums[d->n++] = num;
  act_t *a = fq_hmap_add(&q->act, fq_hmap_hash_u64(num)); /* reserved: cannot fail */
  *a = (act_t){num, deadline, d};
  return 0;
}

void fq_devq_remove(fq_devq_t *q, uint64_t num) {
  act_t *a = act_find(q, num);
  if (!a) return;
  dev_t_ *d = a->dev;
  for (size_t i = 0; i < d->n; i++) {
    if (d->nums[i] == num) {
      memmove(&d->nums[i], &d->nums[i + 1], (d->n - i - 1) * sizeof d->nums[0]);
      d->n--;
      break;
    }
  }
  fq_hmap_del(&q->act, a);
  if (d->n == 0) dev_drop(q, d);
  /* The heap entry goes lazily, when it reaches the top. */
}

void fq_devq_clear_deadline(fq_devq_t *q, uint64_t num) {
  act_t *a = act_find(q, num);
  if (a) a->deadline = INT64_MAX; /* its heap entry is now stale */
}

size_t fq_devq_list(const fq_devq_t *q, const char *device, uint64_t *nums, size_t max) {
  const dev_t_ *d = dev_find(q, device);
  if (!d) return 0;
  for (size_t i = 0; i < d->n && i < max; i++) nums[i] = d->nums[i];
  return d->n;
}

int fq_devq_each_head(const fq_devq_t *q, int (*fn)(void *ud, const char *device, uint64_t num),
                      void *ud) {
  size_t pos = 0;
  for (dev_t_ **d; (d = fq_hmap_each(&q->devs, &pos));) {
    if (!(*d)->n) continue;
    int rc = fn(ud, (*d)->name, (*d)->nums[0]);
    if (rc) return rc;
  }
  return 0;
}

int fq_devq_first_deadline(fq_devq_t *q, int64_t *deadline, uint64_t *num) {
  const fq_heap_ent_t *top;
  while ((top = fq_heap_top(&q->heap))) {
    act_t *a = act_find(q, top->v.u);
    if (a && a->deadline == top->key) {
      *deadline = top->key;
      *num = top->v.u;
      return 0;
    }
    fq_heap_pop(&q->heap);
  }
  return -1;
}

size_t fq_devq_count(const fq_devq_t *q) { return fq_hmap_count(&q->act); }
