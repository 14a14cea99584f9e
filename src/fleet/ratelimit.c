/*
 * Token buckets in a bounded hash table with an LRU list; see ratelimit.h.
 *
 * Entries live in one array; the hash table (hmap.h) maps a key to its
 * index, sized for every entry up front, and the LRU and free lists are
 * index links inside the array, so no operation allocates after
 * fq_rl_new().
 */
#include "ratelimit.h"

#include "hmap.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define EVICT_SCAN 8 /* LRU entries examined for an idle one */

typedef struct ent {
  char key[FQ_RL_KEY_MAX];
  uint8_t klen;
  int64_t tokens;    /* in millionths of a token: exact waits */
  int64_t last_ms;   /* when tokens was last brought up to date */
  int64_t park_ms;   /* parked until, 0 = not parked */
  uint32_t free_next; /* free list */
  uint32_t prev, next; /* LRU list (head = most recent) */
  uint64_t hash;
} ent_t;

struct fq_rl {
  fq_rl_opts_t o;
  ent_t *ents;
  fq_hmap_t index;   /* uint32_t entry index by key */
  uint32_t free_head;
  uint32_t lru_head, lru_tail;
  size_t size;
};

static uint64_t hash_key(const char *k, size_t n) { return fq_hash64(k, n); }

/* What a lookup compares an index entry with. */
typedef struct lkey {
  const fq_rl_t *rl;
  const char *k;
  size_t n;
} lkey_t;

static bool key_eq(const void *item, const void *key) {
  const lkey_t *lk = key;
  const ent_t *e = &lk->rl->ents[*(const uint32_t *)item];
  return e->klen == lk->n && memcmp(e->key, lk->k, lk->n) == 0;
}

static bool index_eq(const void *item, const void *i) {
  return *(const uint32_t *)item == *(const uint32_t *)i;
}

fq_rl_t *fq_rl_new(const fq_rl_opts_t *opts, fq_err_t *err) {
  if (!opts || !(opts->rate > 0) || !(opts->burst >= 1)) {
    fq_errf(err, FQ_EBADPARAM, "rate limit needs rate > 0 and burst >= 1");
    return NULL;
  }
  fq_rl_t *rl = calloc(1, sizeof *rl);
  if (!rl) goto nomem;
  rl->o = *opts;
  if (!rl->o.capacity) rl->o.capacity = 4096;
  if (rl->o.capacity > (1u << 26)) rl->o.capacity = 1u << 26;
  if (rl->o.max_park_ms <= 0) rl->o.max_park_ms = 86400000;
  fq_hmap_init(&rl->index, sizeof(uint32_t), 50);
  rl->ents = calloc(rl->o.capacity, sizeof *rl->ents);
  if (!rl->ents || fq_hmap_reserve(&rl->index, rl->o.capacity) != 0) goto nomem;
  for (uint32_t i = 0; i < rl->o.capacity; i++)
    rl->ents[i].free_next = i + 1 < rl->o.capacity ? i + 1 : NIL;
  rl->free_head = 0;
  rl->lru_head = rl->lru_tail = NIL;
  return rl;
nomem:
  fq_errf(err, -ENOMEM, "out of memory");
  fq_rl_destroy(&rl);
  return NULL;
}

void fq_rl_destroy(fq_rl_t **rlp) {
  if (!rlp || !*rlp) return;
  free((*rlp)->ents);
  fq_hmap_free(&(*rlp)->index);
  free(*rlp);
  *rlp = NULL;
}

size_t fq_rl_size(const fq_rl_t *rl) { return rl->size; }

static void lru_unlink(fq_rl_t *rl, uint32_t i) {
  ent_t *e = &rl->ents[i];
  if (e->prev != NIL) rl->ents[e->prev].next = e->next;
  else rl->lru_head = e->next;
  if (e->next != NIL) rl->ents[e->next].prev = e->prev;
  else rl->lru_tail = e->prev;
}

static void lru_push_front(fq_rl_t *rl, uint32_t i) {
  ent_t *e = &rl->ents[i];
  e->prev = NIL;
  e->next = rl->lru_head;
  if (rl->lru_head != NIL) rl->ents[rl->lru_head].prev = i;
  rl->lru_head = i;
  if (rl->lru_tail == NIL) rl->lru_tail = i;
}

static uint32_t lookup(const fq_rl_t *rl, const char *k, size_t n, uint64_t h) {
  lkey_t lk = {rl, k, n};
  const uint32_t *i = fq_hmap_find(&rl->index, h, key_eq, &lk);
  return i ? *i : NIL;
}

/* Bring the bucket's tokens up to now. */
static void refill(const fq_rl_t *rl, ent_t *e, int64_t now_ms) {
  if (now_ms > e->last_ms) {
    double add = (double)(now_ms - e->last_ms) * rl->o.rate * 1000.0 + 0.5;
    int64_t full = (int64_t)(rl->o.burst * 1e6);
    e->tokens = add >= (double)full ? full : e->tokens + (int64_t)add;
    if (e->tokens > full) e->tokens = full;
    e->last_ms = now_ms;
  }
  if (e->park_ms && e->park_ms <= now_ms) e->park_ms = 0;
}

static bool idle(const fq_rl_t *rl, ent_t *e, int64_t now_ms) {
  refill(rl, e, now_ms);
  return e->park_ms == 0 && e->tokens >= (int64_t)(rl->o.burst * 1e6);
}

static void remove_ent(fq_rl_t *rl, uint32_t i) {
  ent_t *e = &rl->ents[i];
  uint32_t *slot = fq_hmap_find(&rl->index, e->hash, index_eq, &i);
  if (slot) fq_hmap_del(&rl->index, slot);
  lru_unlink(rl, i);
  e->free_next = rl->free_head;
  rl->free_head = i;
  rl->size--;
}

/* Find or insert key; NIL with *rc set on failure. */
static uint32_t get(fq_rl_t *rl, const char *k, size_t n, int64_t now_ms, int64_t *rc) {
  if (n == 0 || n > FQ_RL_KEY_MAX) {
    *rc = FQ_EBADPARAM;
    return NIL;
  }
  uint64_t h = hash_key(k, n);
  uint32_t i = lookup(rl, k, n, h);
  if (i != NIL) {
    lru_unlink(rl, i);
    lru_push_front(rl, i);
    return i;
  }
  if (rl->free_head == NIL) {
    uint32_t c = rl->lru_tail;
    for (int s = 0; s < EVICT_SCAN && c != NIL; s++, c = rl->ents[c].prev) {
      if (idle(rl, &rl->ents[c], now_ms)) {
        remove_ent(rl, c);
        break;
      }
    }
    if (rl->free_head == NIL) {
      *rc = FQ_EBUSY;
      return NIL;
    }
  }
  i = rl->free_head;
  ent_t *e = &rl->ents[i];
  rl->free_head = e->free_next;
  memcpy(e->key, k, n);
  e->klen = (uint8_t)n;
  e->hash = h;
  e->tokens = (int64_t)(rl->o.burst * 1e6);
  e->last_ms = now_ms;
  e->park_ms = 0;
  /* Sized for every entry in fq_rl_new: cannot fail. */
  *(uint32_t *)fq_hmap_add(&rl->index, h) = i;
  lru_push_front(rl, i);
  rl->size++;
  return i;
}

static int64_t wait_ms(const fq_rl_t *rl, const ent_t *e, int64_t now_ms) {
  if (e->park_ms > now_ms) return e->park_ms - now_ms;
  if (e->tokens >= 1000000) return 0;
  /* Round up: waking early would only find the bucket still empty. */
  double ms = (double)(1000000 - e->tokens) / (rl->o.rate * 1000.0);
  int64_t w = (int64_t)ms;
  return w < ms ? w + 1 : (w > 0 ? w : 1);
}

int64_t fq_rl_take(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms) {
  int64_t rc = 0;
  uint32_t i = get(rl, key, klen, now_ms, &rc);
  if (i == NIL) return rc;
  ent_t *e = &rl->ents[i];
  refill(rl, e, now_ms);
  int64_t w = wait_ms(rl, e, now_ms);
  if (w == 0) e->tokens -= 1000000;
  return w;
}

int64_t fq_rl_peek(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms) {
  if (klen == 0 || klen > FQ_RL_KEY_MAX) return FQ_EBADPARAM;
  uint32_t i = lookup(rl, key, klen, hash_key(key, klen));
  if (i == NIL) return 0;
  refill(rl, &rl->ents[i], now_ms);
  return wait_ms(rl, &rl->ents[i], now_ms);
}

void fq_rl_refund(fq_rl_t *rl, const char *key, size_t klen) {
  if (klen == 0 || klen > FQ_RL_KEY_MAX) return;
  uint32_t i = lookup(rl, key, klen, hash_key(key, klen));
  if (i == NIL) return;
  ent_t *e = &rl->ents[i];
  e->tokens += 1000000;
  if (e->tokens > (int64_t)(rl->o.burst * 1e6)) e->tokens = (int64_t)(rl->o.burst * 1e6);
}

int fq_rl_park(fq_rl_t *rl, const char *key, size_t klen, int64_t until_ms, int64_t now_ms) {
  int64_t rc = 0;
  uint32_t i = get(rl, key, klen, now_ms, &rc);
  if (i == NIL) return (int)rc;
  ent_t *e = &rl->ents[i];
  refill(rl, e, now_ms);
  if (until_ms > now_ms + rl->o.max_park_ms) until_ms = now_ms + rl->o.max_park_ms;
  if (until_ms > e->park_ms && until_ms > now_ms) e->park_ms = until_ms;
  return 0;
}

int64_t fq_rl_parked_until(fq_rl_t *rl, const char *key, size_t klen, int64_t now_ms) {
  if (klen == 0 || klen > FQ_RL_KEY_MAX) return 0;
  uint32_t i = lookup(rl, key, klen, hash_key(key, klen));
  if (i == NIL) return 0;
  ent_t *e = &rl->ents[i];
  return e->park_ms > now_ms ? e->park_ms : 0;
}

/* ---- Retry-After --------------------------------------------------------- */

static int month_of(const char *m) {
  static const char *names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; i++)
    if (memcmp(m, names[i], 3) == 0) return i;
  return -1;
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static bool digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

int64_t fq_rl_retry_after_ms(const char *v, int64_t now_unix_ms, int64_t max_ms) {
  int64_t d = fq_rl_parse_retry_after(v, now_unix_ms);
  if (d < 0 && v) {
    /* All digits but too many to read: the farthest a delay can be. */
    const char *p = v + strspn(v, " ");
    size_t nd = strspn(p, "0123456789");
    if (nd && p[nd + strspn(p + nd, " ")] == 0) d = max_ms;
  }
  return d > max_ms ? max_ms : d;
}

int64_t fq_rl_parse_retry_after(const char *v, int64_t now_unix_ms) {
  if (!v) return -1;
  while (*v == ' ') v++;
  if (*v >= '0' && *v <= '9') {
    int64_t n = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
      if (n > 100000000) return -1; /* absurd: refuse rather than overflow */
      n = n * 10 + (*v - '0');
    }
    while (*v == ' ') v++;
    return *v ? -1 : n * 1000;
  }
  /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" (29 characters). */
  if (strlen(v) < 29 || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
      v[16] != ' ' || v[19] != ':' || v[22] != ':' || memcmp(v + 25, " GMT", 4) != 0)
    return -1;
  int day, year, hh, mm, ss, mon = month_of(v + 8);
  if (mon < 0 || !digits(v + 5, 2, &day) || !digits(v + 12, 4, &year) ||
      !digits(v + 17, 2, &hh) || !digits(v + 20, 2, &mm) || !digits(v + 23, 2, &ss))
    return -1;
  if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return -1;
  int64_t t = (days_from_civil(year, mon + 1, day) * 86400 + hh * 3600 + mm * 60 + ss) * 1000;
  return t > now_unix_ms ? t - now_unix_ms : 0;
}
