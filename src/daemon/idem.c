/*
 * The dedupe table: an ordered linear-probing table of (hash, number)
 * slots, 16 bytes each, with no per-entry allocation.  See idem.h.
 *
 * Layout.  A slot's home is the hash scaled to the table (the high bits:
 * (h * cap) >> 64), so homes grow with the hash, and the slots are kept
 * sorted by hash: every entry sits at or after its home, with no empty
 * slot in between, and the array never wraps around (a short tail of
 * extra slots past the last home takes the last run).  Then:
 *   - a lookup starts at the home and stops at the first slot whose hash is
 *     larger (or empty): a miss, the common case of a new key, costs about
 *     as much as a hit, even with the table 80 % full;
 *   - inserting shifts the rest of its run one slot on; deleting shifts the
 *     displaced entries after it one slot back (no tombstones);
 *   - growing walks the entries in order and lays them out again, each at
 *     its new home or just after the previous one, with no probing.
 * Because the table can be that full, it grows by half (not by doubling)
 * and is sized to the entries it is created for: between 20 and 30 bytes
 * per entry, where a power-of-two table kept at most half full took 32 to
 * 64.
 */
#include "idem.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct slot {
  uint64_t h; /* 0: empty */
  uint64_t v;
} slot_t;

struct fq_idem {
  slot_t *s;
  size_t cap;   /* home slots */
  size_t len;   /* cap plus the tail */
  size_t count;
  size_t limit; /* grow past this many entries (80 % of cap) */
};

#define MIN_CAP 64
#define LOAD_PCT 80  /* most entries per 100 home slots */
#define START_PCT 70 /* entries per 100 home slots when sized for a count */

/* 0 marks an empty slot, so a hash of 0 is stored as 1. */
static uint64_t norm(uint64_t h) { return h ? h : 1; }

/* GCC and Clang's 128-bit product: the high half scales h to [0, cap). */
__extension__ typedef unsigned __int128 u128_t;

static size_t home(const fq_idem_t *t, uint64_t h) { return (size_t)(((u128_t)h * t->cap) >> 64); }

/* Extra slots past the last home: room for the run that starts near the
 * end; a table whose tail fills grows instead. */
static size_t tail_of(size_t cap) { return 64 + cap / 64; }

/* The first slot at or after h's home holding h or a larger hash, or
 * empty: where h's entries start, or where it would go. */
static size_t first_at(const fq_idem_t *t, uint64_t h) {
  size_t i = home(t, h);
  while (i < t->len && t->s[i].h && t->s[i].h < h) i++;
  return i;
}

/* The slot arrays.  A large one is mapped on its own and asks for huge
 * pages (transparent huge pages in `madvise` mode): filling a table of a
 * million keys otherwise takes a page fault per 4 KiB, a few thousand
 * per table and per growth, which on a virtual machine cost more than
 * the inserts themselves.  Every slot of such a table is touched anyway,
 * so the 2 MiB pages hold no more memory than small ones would. */
#define HUGE_MIN (4u << 20)
#define HUGE_PAGE (2u << 20)

static size_t slots_bytes(size_t n) {
  size_t b = n * sizeof(slot_t);
  return b < HUGE_MIN ? b : (b + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
}

static slot_t *slots_alloc(size_t n) {
  size_t b = slots_bytes(n);
  if (n > SIZE_MAX / sizeof(slot_t)) return NULL;
  if (b < HUGE_MIN) return calloc(n, sizeof(slot_t));
  void *p = mmap(NULL, b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  (void)madvise(p, b, MADV_HUGEPAGE); /* a hint: without it, small pages */
  return p;                           /* fresh anonymous pages are zero */
}

static void slots_free(slot_t *s, size_t n) {
  if (!s) return;
  size_t b = slots_bytes(n);
  if (b < HUGE_MIN) free(s);
  else munmap(s, b);
}

/* Lay the entries of old (sorted by hash) out in a table of cap homes.
 * 0, or -ENOMEM with t unchanged. */
static int relayout(fq_idem_t *t, size_t cap) {
  for (size_t tail = tail_of(cap);; tail *= 2) {
    slot_t *ns = slots_alloc(cap + tail);
    if (!ns) return -ENOMEM;
    fq_idem_t n = {ns, cap, cap + tail, t->count, cap / 100 * LOAD_PCT + cap % 100 * LOAD_PCT / 100};
    size_t next = 0;
    bool fits = true;
    for (size_t i = 0; i < t->len && fits; i++) {
      if (!t->s[i].h) continue;
      size_t j = home(&n, t->s[i].h);
      if (j < next) j = next;
      if (j >= n.len) fits = false;
      else {
        ns[j] = t->s[i];
        next = j + 1;
      }
    }
    if (!fits) { /* a long last run: a longer tail */
      slots_free(ns, cap + tail);
      continue;
    }
    slots_free(t->s, t->len);
    *t = n;
    return 0;
  }
}

static size_t cap_for(size_t n) {
  size_t cap = n / START_PCT * 100 + n % START_PCT * 100 / START_PCT + 1;
  return cap < MIN_CAP ? MIN_CAP : cap;
}

fq_idem_t *fq_idem_new(size_t initial) {
  fq_idem_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  if (relayout(t, cap_for(initial)) != 0) {
    free(t);
    return NULL;
  }
  return t;
}

int fq_idem_reserve(fq_idem_t *t, size_t n) {
  size_t cap = cap_for(n);
  return cap <= t->cap ? 0 : relayout(t, cap);
}

void fq_idem_destroy(fq_idem_t **ip) {
  if (!ip || !*ip) return;
  slots_free((*ip)->s, (*ip)->len);
  free(*ip);
  *ip = NULL;
}

/* The slot holding (h, num), or NULL. */
static slot_t *find(const fq_idem_t *t, uint64_t h, uint64_t num) {
  for (size_t i = first_at(t, h); i < t->len && t->s[i].h == h; i++)
    if (t->s[i].v == num) return &t->s[i];
  return NULL;
}

int fq_idem_put(fq_idem_t *t, uint64_t h, uint64_t num) {
  h = norm(h);
  for (;;) {
    /* One pass: over h's entries (is the pair there already?), then up to
     * the first empty slot, the stretch that shifts one slot on. */
    size_t i = first_at(t, h);
    for (; i < t->len && t->s[i].h == h; i++)
      if (t->s[i].v == num) return 0;
    if (t->count < t->limit) {
      size_t j = i;
      while (j < t->len && t->s[j].h) j++;
      if (j < t->len) {
        memmove(&t->s[i + 1], &t->s[i], (j - i) * sizeof *t->s);
        t->s[i] = (slot_t){h, num};
        t->count++;
        return 0;
      }
    }
    /* Full, or the tail is: half as large again. */
    if (relayout(t, t->cap + t->cap / 2) != 0) return -ENOMEM;
  }
}

int fq_idem_set(fq_idem_t *t, uint64_t h, uint64_t old, uint64_t repl) {
  slot_t *x = find(t, norm(h), old);
  if (!x) return -1;
  x->v = repl;
  return 0;
}

static void del_at(fq_idem_t *t, size_t i) {
  /* Entries after it that sit past their home move one slot back. */
  size_t j = i + 1;
  while (j < t->len && t->s[j].h && home(t, t->s[j].h) < j) {
    t->s[j - 1] = t->s[j];
    j++;
  }
  t->s[j - 1] = (slot_t){0, 0};
  t->count--;
}

void fq_idem_del(fq_idem_t *t, uint64_t h, uint64_t num) {
  slot_t *x = find(t, norm(h), num);
  if (x) del_at(t, (size_t)(x - t->s));
}

int fq_idem_next(const fq_idem_t *t, uint64_t h, size_t *cursor, uint64_t *num) {
  h = norm(h);
  size_t i = *cursor ? *cursor : first_at(t, h);
  if (i >= t->len || t->s[i].h != h) {
    *cursor = t->len;
    return 0;
  }
  *num = t->s[i].v;
  *cursor = i + 1;
  return 1;
}

size_t fq_idem_count(const fq_idem_t *t) { return t->count; }

size_t fq_idem_bytes(const fq_idem_t *t) { return sizeof *t + slots_bytes(t->len); }

static size_t gcd(size_t a, size_t b) {
  while (b) {
    size_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* The walk goes through blocks of 64 slots in a scattered order, not
 * from the first slot to the last: the slots are sorted by hash, and a
 * table filled in hash order (the ingress fills its own from these walks,
 * shard.h 'K') would see every new entry land at the end of one run that
 * covers all of them so far, each insert shifting it: quadratic.  Within
 * a block the order stays (at most 64 entries, a short run). */
#define WALK_BLOCK 64

int fq_idem_foreach(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num), void *ud) {
  size_t nb = (t->len + WALK_BLOCK - 1) / WALK_BLOCK;
  /* A step coprime with the block count visits every block once. */
  size_t step = nb / 8 * 5 + 1;
  while (gcd(step, nb) != 1) step++;
  for (size_t k = 0, b = 0; k < nb; k++, b = (b + step) % nb) {
    size_t end = (b + 1) * WALK_BLOCK < t->len ? (b + 1) * WALK_BLOCK : t->len;
    for (size_t i = b * WALK_BLOCK; i < end; i++) {
      if (!t->s[i].h) continue;
      int rc = fn(ud, t->s[i].h, t->s[i].v);
      if (rc) return rc;
    }
  }
  return 0;
}

int fq_idem_foreach_sorted(const fq_idem_t *t, int (*fn)(void *ud, uint64_t h, uint64_t num),
                           void *ud) {
  for (size_t i = 0; i < t->len; i++) {
    if (!t->s[i].h) continue;
    int rc = fn(ud, t->s[i].h, t->s[i].v);
    if (rc) return rc;
  }
  return 0;
}

int fq_idem_load_sorted(fq_idem_t *t, const uint64_t *pairs, size_t n, size_t reserve) {
  if (t->count) return -EINVAL;
  /* Check the order first: a table laid out from unsorted pairs would
   * break every lookup (they stop at the first larger hash). */
  for (size_t i = 0; i < n; i++) {
    uint64_t h = pairs[2 * i];
    if (!h || (i && h < pairs[2 * i - 2])) return -EINVAL;
  }
  size_t cap = cap_for(n > reserve ? n : reserve);
  if (cap < t->cap) cap = t->cap;
  /* As relayout() does with the entries of a table, from the array. */
  for (size_t tail = tail_of(cap);; tail *= 2) {
    slot_t *ns = slots_alloc(cap + tail);
    if (!ns) return -ENOMEM;
    fq_idem_t nt = {ns, cap, cap + tail, n, cap / 100 * LOAD_PCT + cap % 100 * LOAD_PCT / 100};
    size_t next = 0;
    bool fits = true;
    for (size_t i = 0; i < n && fits; i++) {
      size_t j = home(&nt, pairs[2 * i]);
      if (j < next) j = next;
      if (j >= nt.len) fits = false;
      else {
        ns[j] = (slot_t){pairs[2 * i], pairs[2 * i + 1]};
        next = j + 1;
      }
    }
    if (!fits) {
      slots_free(ns, cap + tail);
      continue;
    }
    slots_free(t->s, t->len);
    *t = nt;
    return 0;
  }
}
