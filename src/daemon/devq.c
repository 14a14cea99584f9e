/*
 * Per-device FIFOs (an array of numbers per device), a number -> device
 * index, and a binary min-heap of deadlines with lazy deletion.  See
 * devq.h.
 *
 * Memory per queued command, which a restart with a million stored
 * commands multiplies: 8 bytes in its device's array, a 16-byte heap entry
 * and a 16-byte slot of the index (idem.h's compact table, 70-80 % full),
 * about 50 bytes where a table of 32-byte records (number, deadline,
 * device pointer) kept at most 75 % full took 90 to 130.
 *
 * The index maps the number (mixed by fq_hmap_hash_u64, a bijection, so
 * the slot's hash alone identifies it) to one 64-bit word: the device's
 * slot in `devs`, the generation of the push (below) and a bit that says
 * the deadline was cleared.  The deadline itself lives only in the heap:
 * a heap entry counts while the index holds its number, pushed in the same
 * generation (the top 8 bits of the entry's number word), with the
 * deadline not cleared.  The generation tells an entry left over from an
 * earlier push of the same number from the current one.
 */
#include "devq.h"

#include "heap.h"
#include "hmap.h"
#include "idem.h"
#include "util.h"
#include "fleetq/buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct dev {
  uint64_t *nums;       /* the FIFO is nums[head..n) */
  uint32_t head, n, cap;
  uint32_t slot;        /* in fq_devq.devs */
  char name[];
} dev_t_;

struct fq_devq {
  fq_hmap_t names;   /* dev_t_ * by name */
  dev_t_ **devs;     /* by slot; NULL for a free slot */
  uint32_t *free;    /* free slots, a stack */
  uint32_t ndevs, capdevs, nfree;
  fq_idem_t *act;    /* fq_hmap_hash_u64(num) -> ACT word (above) */
  fq_heap_t heap;    /* (deadline, num | generation << 56) */
  uint8_t gen;
  size_t count;
};

#define NUM_MASK ((UINT64_C(1) << 56) - 1) /* numbers are 14 hex digits */
#define ACT(slot, gen) ((uint64_t)(slot) | (uint64_t)(gen) << 32)
#define ACT_SLOT(v) ((uint32_t)(v))
#define ACT_GEN(v) ((uint8_t)((v) >> 32))
#define ACT_CLEARED (UINT64_C(1) << 40)

static uint64_t str_hash(const char *s) { return fq_hash64(s, strlen(s)); }

static bool dev_eq(const void *item, const void *name) {
  return strcmp((*(dev_t_ *const *)item)->name, name) == 0;
}

fq_devq_t *fq_devq_new(void) {
  fq_devq_t *q = calloc(1, sizeof *q);
  if (!q) return NULL;
  fq_hmap_init(&q->names, sizeof(dev_t_ *), 50);
  q->act = fq_idem_new(512);
  if (!q->act || fq_hmap_reserve(&q->names, 512)) {
    fq_devq_destroy(&q);
    return NULL;
  }
  return q;
}

void fq_devq_destroy(fq_devq_t **qp) {
  if (!qp || !*qp) return;
  fq_devq_t *q = *qp;
  for (uint32_t i = 0; i < q->ndevs; i++) {
    if (!q->devs[i]) continue;
    free(q->devs[i]->nums);
    free(q->devs[i]);
  }
  free(q->devs);
  free(q->free);
  fq_hmap_free(&q->names);
  fq_idem_destroy(&q->act);
  fq_heap_free(&q->heap);
  free(q);
  *qp = NULL;
}

static dev_t_ *dev_find(const fq_devq_t *q, const char *name) {
  dev_t_ **d = fq_hmap_find(&q->names, str_hash(name), dev_eq, name);
  return d ? *d : NULL;
}

/* The device's entry, created (empty) when missing.  NULL when out of
 * memory. */
static dev_t_ *dev_get(fq_devq_t *q, const char *name) {
  dev_t_ *d = dev_find(q, name);
  if (d) return d;
  if (!q->nfree && q->ndevs == q->capdevs) {
    uint32_t nc = q->capdevs ? q->capdevs * 2 : 256;
    dev_t_ **p = realloc(q->devs, nc * sizeof *p);
    if (!p) return NULL;
    q->devs = p;
    uint32_t *f = realloc(q->free, nc * sizeof *f);
    if (!f) return NULL;
    q->free = f;
    q->capdevs = nc;
  }
  if (fq_hmap_reserve(&q->names, fq_hmap_count(&q->names) + 1) != 0) return NULL;
  size_t len = strlen(name);
  d = calloc(1, sizeof *d + len + 1);
  if (!d) return NULL;
  memcpy(d->name, name, len + 1);
  d->slot = q->nfree ? q->free[--q->nfree] : q->ndevs++;
  q->devs[d->slot] = d;
  *(dev_t_ **)fq_hmap_add(&q->names, str_hash(name)) = d; /* reserved: cannot fail */
  return d;
}

/* Drop an empty device entry so idle devices cost nothing. */
static void dev_drop(fq_devq_t *q, dev_t_ *dev) {
  dev_t_ **slot = fq_hmap_find(&q->names, str_hash(dev->name), dev_eq, dev->name);
  if (slot) fq_hmap_del(&q->names, slot);
  q->devs[dev->slot] = NULL;
  q->free[q->nfree++] = dev->slot;
  free(dev->nums);
  free(dev);
}

/* The index word of num in *v: true when num is held. */
static bool act_get(const fq_devq_t *q, uint64_t num, uint64_t *v) {
  size_t cur = 0;
  return fq_idem_next(q->act, fq_hmap_hash_u64(num), &cur, v) != 0;
}

int fq_devq_reserve(fq_devq_t *q, size_t n) {
  if (fq_idem_reserve(q->act, n) != 0) return -ENOMEM;
  if (n > q->heap.cap) {
    fq_heap_ent_t *a = realloc(q->heap.a, n * sizeof *a);
    if (!a) return -ENOMEM;
    q->heap.a = a;
    q->heap.cap = n;
  }
  return 0;
}

int fq_devq_push(fq_devq_t *q, const char *device, uint64_t num, int64_t deadline) {
  uint64_t v;
  num &= NUM_MASK;
  /* Pushed again (nothing does today): it moves to the tail with the new
   * deadline, never held twice. */
  if (act_get(q, num, &v)) fq_devq_remove(q, num);
  dev_t_ *d = dev_get(q, device);
  if (!d) return -ENOMEM;
  /* Room everywhere first, so that nothing fails once the number is in
   * one of the three. */
  if (d->n == d->cap) {
    if (d->head >= d->cap / 4 && d->head > 0) {
      /* Mostly taken from the front: move the rest down. */
      memmove(d->nums, d->nums + d->head, (d->n - d->head) * sizeof *d->nums);
      d->n -= d->head;
      d->head = 0;
    } else {
      /* At least 4 more: an imported queue holds exactly its count, and
       * half of 1 is 0. */
      uint32_t nc = d->cap < 8 ? d->cap + 4 : d->cap + d->cap / 2;
      uint64_t *p = realloc(d->nums, nc * sizeof *p);
      if (!p) goto nomem;
      d->nums = p;
      d->cap = nc;
    }
  }
  if (q->heap.n == q->heap.cap && fq__heap_grow(&q->heap) != 0) goto nomem;
  uint8_t gen = ++q->gen;
  if (fq_idem_put(q->act, fq_hmap_hash_u64(num), ACT(d->slot, gen)) != 0) goto nomem;
  fq_heap_push(&q->heap, (fq_heap_ent_t){.key = deadline, .v.u = num | (uint64_t)gen << 56});
  d->nums[d->n++] = num;
  q->count++;
  return 0;
nomem:
  if (d->n == d->head) dev_drop(q, d);
  return -ENOMEM;
}

void fq_devq_remove(fq_devq_t *q, uint64_t num) {
  uint64_t v;
  num &= NUM_MASK;
  if (!act_get(q, num, &v)) return;
  fq_idem_del(q->act, fq_hmap_hash_u64(num), v);
  q->count--;
  dev_t_ *d = q->devs[ACT_SLOT(v)];
  if (d->nums[d->head] == num) {
    d->head++; /* the common case: the head leaves */
  } else {
    for (uint32_t i = d->head + 1; i < d->n; i++) {
      if (d->nums[i] == num) {
        memmove(&d->nums[i], &d->nums[i + 1], (d->n - i - 1) * sizeof d->nums[0]);
        d->n--;
        break;
      }
    }
  }
  if (d->head == d->n) dev_drop(q, d);
  /* The heap entry goes lazily, when it reaches the top. */
}

void fq_devq_clear_deadline(fq_devq_t *q, uint64_t num) {
  uint64_t v;
  num &= NUM_MASK;
  /* Its heap entry is now stale. */
  if (act_get(q, num, &v)) fq_idem_set(q->act, fq_hmap_hash_u64(num), v, v | ACT_CLEARED);
}

size_t fq_devq_list(const fq_devq_t *q, const char *device, uint64_t *nums, size_t max) {
  const dev_t_ *d = dev_find(q, device);
  if (!d) return 0;
  size_t n = d->n - d->head;
  for (size_t i = 0; i < n && i < max; i++) nums[i] = d->nums[d->head + i];
  return n;
}

int fq_devq_each_head(const fq_devq_t *q, int (*fn)(void *ud, const char *device, uint64_t num),
                      void *ud) {
  size_t pos = 0;
  for (dev_t_ **d; (d = fq_hmap_each(&q->names, &pos));) {
    if ((*d)->n == (*d)->head) continue;
    int rc = fn(ud, (*d)->name, (*d)->nums[(*d)->head]);
    if (rc) return rc;
  }
  return 0;
}

int fq_devq_first_deadline(fq_devq_t *q, int64_t *deadline, uint64_t *num) {
  const fq_heap_ent_t *top;
  while ((top = fq_heap_top(&q->heap))) {
    uint64_t n = top->v.u & NUM_MASK, v;
    if (act_get(q, n, &v) && !(v & ACT_CLEARED) && ACT_GEN(v) == (uint8_t)(top->v.u >> 56)) {
      *deadline = top->key;
      *num = n;
      return 0;
    }
    fq_heap_pop(&q->heap);
  }
  return -1;
}

size_t fq_devq_count(const fq_devq_t *q) { return q->count; }

size_t fq_devq_bytes(const fq_devq_t *q) {
  size_t b = sizeof *q + fq_idem_bytes(q->act) + q->heap.cap * sizeof *q->heap.a +
             q->capdevs * (sizeof *q->devs + sizeof *q->free) + q->names.cap * q->names.stride;
  for (uint32_t i = 0; i < q->ndevs; i++)
    if (q->devs[i]) b += sizeof *q->devs[i] + strlen(q->devs[i]->name) + 1 +
                         q->devs[i]->cap * sizeof *q->devs[i]->nums;
  return b;
}

/* --- export and import (the restart snapshot) ------------------------------
 *
 * Words: ndev; per device: name length, the name in ceil(len / 8) words
 * (zero padded), the FIFO's length, its numbers oldest first; then the
 * deadline count and (deadline, number) pairs, one per command. */

#define NAME_MAX_ 256 /* longer device names are not exported (none are) */

static int put_w(fq_buf_t *b, uint64_t w) { return fq_buf_append(b, &w, 8); }

int fq_devq_export(const fq_devq_t *q, fq_buf_t *out,
                   int64_t (*deadline_of)(void *ud, uint64_t num), void *ud) {
  size_t ndev = 0, pos = 0;
  for (dev_t_ **d; (d = fq_hmap_each(&q->names, &pos));)
    if ((*d)->n > (*d)->head) ndev++;
  int rc = put_w(out, ndev);
  pos = 0;
  for (dev_t_ **d; rc == 0 && (d = fq_hmap_each(&q->names, &pos));) {
    const dev_t_ *dv = *d;
    if (dv->n == dv->head) continue;
    size_t len = strlen(dv->name), words = (len + 7) / 8;
    uint64_t name[NAME_MAX_ / 8] = {0};
    if (words > sizeof name / 8) return -EINVAL;
    memcpy(name, dv->name, len);
    if ((rc = put_w(out, len)) || (rc = fq_buf_append(out, name, words * 8)) ||
        (rc = put_w(out, dv->n - dv->head)) ||
        (rc = fq_buf_append(out, dv->nums + dv->head, (dv->n - dv->head) * 8)))
      return rc;
  }
  if (rc) return rc;
  /* The deadlines: the heap's entries that count, then the cleared ones
   * with the deadline a rebuild would give them. */
  size_t at = out->len;
  if ((rc = put_w(out, 0)) != 0) return rc;
  uint64_t nd = 0;
  for (size_t i = 0; i < q->heap.n; i++) {
    const fq_heap_ent_t *e = &q->heap.a[i];
    uint64_t n = e->v.u & NUM_MASK, v;
    if (!act_get(q, n, &v) || (v & ACT_CLEARED) || ACT_GEN(v) != (uint8_t)(e->v.u >> 56)) continue;
    uint64_t pair[2] = {(uint64_t)e->key, n};
    if ((rc = fq_buf_append(out, pair, 16)) != 0) return rc;
    nd++;
  }
  pos = 0;
  for (dev_t_ **d; (d = fq_hmap_each(&q->names, &pos));) {
    for (uint32_t i = (*d)->head; i < (*d)->n; i++) {
      uint64_t v, n = (*d)->nums[i];
      if (!act_get(q, n, &v) || !(v & ACT_CLEARED)) continue;
      uint64_t pair[2] = {(uint64_t)deadline_of(ud, n), n};
      if ((rc = fq_buf_append(out, pair, 16)) != 0) return rc;
      nd++;
    }
  }
  memcpy(out->data + at, &nd, 8);
  return 0;
}

int fq_devq_import(fq_devq_t *q, const uint64_t *w, size_t n) {
  if (q->count || n < 2) return -EINVAL;
  size_t i = 0, total = 0;
  uint64_t ndev = w[i++];
  /* Sizes first, so that the tables are reserved once. */
  for (uint64_t k = 0; k < ndev; k++) {
    if (i >= n) return -EINVAL;
    uint64_t len = w[i++], words = (len + 7) / 8;
    if (!len || len >= NAME_MAX_ || i + words + 1 > n) return -EINVAL;
    i += words;
    uint64_t cnt = w[i++];
    if (!cnt || cnt > UINT32_MAX || i + cnt > n) return -EINVAL;
    i += cnt;
    total += cnt;
  }
  if (i >= n || w[i] != total || i + 1 + 2 * total != n) return -EINVAL;
  int rc = fq_devq_reserve(q, total);
  if (rc) return rc;
  q->gen = 1;
  i = 1;
  for (uint64_t k = 0; k < ndev; k++) {
    uint64_t len = w[i++], words = (len + 7) / 8;
    char name[NAME_MAX_];
    memcpy(name, &w[i], len);
    name[len] = 0;
    i += words;
    uint64_t cnt = w[i++];
    if (strlen(name) != len || dev_find(q, name)) return -EINVAL;
    dev_t_ *d = dev_get(q, name);
    if (!d) return -ENOMEM;
    d->nums = malloc(cnt * sizeof *d->nums);
    if (!d->nums) return -ENOMEM;
    d->cap = d->n = (uint32_t)cnt;
    for (uint64_t j = 0; j < cnt; j++) {
      uint64_t num = w[i++], v;
      if (num != (num & NUM_MASK) || act_get(q, num, &v)) return -EINVAL;
      d->nums[j] = num;
      if (fq_idem_put(q->act, fq_hmap_hash_u64(num), ACT(d->slot, 1)) != 0) return -ENOMEM;
      q->count++;
    }
  }
  i++;
  for (size_t j = 0; j < total; j++, i += 2) {
    uint64_t num = w[i + 1], v;
    /* One deadline per command: the first marks it (cleared bit, taken
     * off below), a second finds it marked. */
    if (!act_get(q, num, &v) || (v & ACT_CLEARED)) return -EINVAL;
    fq_idem_set(q->act, fq_hmap_hash_u64(num), v, v | ACT_CLEARED);
    if (fq_heap_push(&q->heap, (fq_heap_ent_t){.key = (int64_t)w[i],
                                               .v.u = num | UINT64_C(1) << 56}) != 0)
      return -ENOMEM;
  }
  for (size_t j = 0, k = i - 2 * total; j < total; j++, k += 2) {
    uint64_t num = w[k + 1], v;
    act_get(q, num, &v);
    fq_idem_set(q->act, fq_hmap_hash_u64(num), v, v & ~ACT_CLEARED);
  }
  return 0;
}
