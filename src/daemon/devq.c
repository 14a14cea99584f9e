/*
 * Per-device FIFOs (a chained hash map of device -> array of numbers), a
 * number -> device index, and a binary min-heap of deadlines with lazy
 * deletion.  See devq.h.
 */
#include "devq.h"

#include "heap.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct dev {
  struct dev *next;
  uint64_t *nums;
  size_t n, cap;
  char name[];
} dev_t_;

typedef struct act {
  uint64_t num; /* 0 = empty (numbers start at 1) */
  int64_t deadline;
  dev_t_ *dev;
} act_t;

struct fq_devq {
  dev_t_ **buckets;
  size_t nbuckets, ndevs;
  act_t *act;
  size_t acap, acount;
  fq_heap_t heap;   /* (deadline, num), stale entries dropped at the top */
};

static uint64_t str_hash(const char *s) { return fq_hash64(s, strlen(s)); }

static uint64_t num_hash(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

fq_devq_t *fq_devq_new(void) {
  fq_devq_t *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  q->nbuckets = 1024;
  q->buckets = calloc(q->nbuckets, sizeof *q->buckets);
  q->acap = 1024;
  q->act = calloc(q->acap, sizeof *q->act);
  if (!q->buckets || !q->act) {
    fq_devq_destroy(&q);
    return NULL;
  }
  return q;
}

void fq_devq_destroy(fq_devq_t **qp) {
  if (!qp || !*qp) return;
  fq_devq_t *q = *qp;
  for (size_t i = 0; q->buckets && i < q->nbuckets; i++) {
    dev_t_ *d = q->buckets[i];
    while (d) {
      dev_t_ *next = d->next;
      free(d->nums);
      free(d);
      d = next;
    }
  }
  free(q->buckets);
  free(q->act);
  fq_heap_free(&q->heap);
  free(q);
  *qp = NULL;
}

static dev_t_ *dev_find(const fq_devq_t *q, const char *name) {
  for (dev_t_ *d = q->buckets[str_hash(name) & (q->nbuckets - 1)]; d; d = d->next)
    if (strcmp(d->name, name) == 0) return d;
  return NULL;
}

static int dev_rehash(fq_devq_t *q) {
  size_t nb = q->nbuckets * 2;
  dev_t_ **b = calloc(nb, sizeof *b);
  if (!b) return -ENOMEM;
  for (size_t i = 0; i < q->nbuckets; i++) {
    dev_t_ *d = q->buckets[i];
    while (d) {
      dev_t_ *next = d->next;
      size_t j = str_hash(d->name) & (nb - 1);
      d->next = b[j];
      b[j] = d;
      d = next;
    }
  }
  free(q->buckets);
  q->buckets = b;
  q->nbuckets = nb;
  return 0;
}

static dev_t_ *dev_get(fq_devq_t *q, const char *name) {
  dev_t_ *d = dev_find(q, name);
  if (d) return d;
  if (q->ndevs >= q->nbuckets && dev_rehash(q) != 0) return NULL;
  size_t len = strlen(name);
  d = calloc(1, sizeof *d + len + 1);
  if (!d) return NULL;
  memcpy(d->name, name, len + 1);
  size_t j = str_hash(name) & (q->nbuckets - 1);
  d->next = q->buckets[j];
  q->buckets[j] = d;
  q->ndevs++;
  return d;
}

/* Drop an empty device entry so idle devices cost nothing. */
static void dev_drop(fq_devq_t *q, dev_t_ *dev) {
  dev_t_ **pp = &q->buckets[str_hash(dev->name) & (q->nbuckets - 1)];
  while (*pp && *pp != dev) pp = &(*pp)->next;
  if (!*pp) return;
  *pp = dev->next;
  free(dev->nums);
  free(dev);
  q->ndevs--;
}

static act_t *act_find(const fq_devq_t *q, uint64_t num) {
  size_t mask = q->acap - 1;
  for (size_t j = num_hash(num) & mask; q->act[j].num; j = (j + 1) & mask)
    if (q->act[j].num == num) return &q->act[j];
  return NULL;
}

static int act_grow(fq_devq_t *q) {
  size_t ncap = q->acap * 2;
  act_t *na = calloc(ncap, sizeof *na);
  if (!na) return -ENOMEM;
  for (size_t i = 0; i < q->acap; i++) {
    if (!q->act[i].num) continue;
    size_t j = num_hash(q->act[i].num) & (ncap - 1);
    while (na[j].num) j = (j + 1) & (ncap - 1);
    na[j] = q->act[i];
  }
  free(q->act);
  q->act = na;
  q->acap = ncap;
  return 0;
}

static void act_del(fq_devq_t *q, act_t *a) {
  size_t mask = q->acap - 1, hole = (size_t)(a - q->act);
  for (size_t k = (hole + 1) & mask; q->act[k].num; k = (k + 1) & mask) {
    size_t home = num_hash(q->act[k].num) & mask;
    if (((k - home) & mask) >= ((k - hole) & mask)) {
      q->act[hole] = q->act[k];
      hole = k;
    }
  }
  memset(&q->act[hole], 0, sizeof q->act[hole]);
  q->acount--;
}

int fq_devq_push(fq_devq_t *q, const char *device, uint64_t num, int64_t deadline) {
  if ((q->acount + 1) * 4 > q->acap * 3 && act_grow(q) != 0) return -ENOMEM;
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
  size_t mask = q->acap - 1, j = num_hash(num) & mask;
  while (q->act[j].num) j = (j + 1) & mask;
  q->act[j] = (act_t){num, deadline, d};
  q->acount++;
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
  act_del(q, a);
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

size_t fq_devq_count(const fq_devq_t *q) { return q->acount; }
