/*
 * Unit tests of the in-memory shard indexes: the dedupe table (idem.c) and
 * the per-device FIFOs with their deadline heap (devq.c), checked against
 * a straightforward model under a fixed-seed random workload.
 */
#include <errno.h>
#include <stdlib.h>

#include "devq.h"
#include "fleetq/buf.h"
#include "fq_test.h"
#include "idem.h"
#include "util.h"

FQ_TEST(idem_collisions_and_deletes) {
  fq_idem_t *t = fq_idem_new(4);
  CHECK(t != NULL);
  if (!t) return;
  /* Many numbers under one hash, and many hashes: growth and probing. */
  for (uint64_t i = 1; i <= 5000; i++) CHECK_INT(fq_idem_put(t, 1 + i % 7, i), 0);
  CHECK_INT(fq_idem_count(t), 5000);
  size_t cur = 0;
  uint64_t num, n3 = 0;
  while (fq_idem_next(t, 3, &cur, &num)) {
    CHECK_INT(num % 7, 2);
    n3++;
  }
  CHECK_INT(n3, 715); /* i in 1..5000 with i % 7 == 2 */
  for (uint64_t i = 1; i <= 5000; i += 2) fq_idem_del(t, 1 + i % 7, i);
  CHECK_INT(fq_idem_count(t), 2500);
  for (uint64_t h = 1; h <= 7; h++) {
    cur = 0;
    while (fq_idem_next(t, h, &cur, &num)) CHECK(num % 2 == 0);
  }
  CHECK(fq_hash64_pair("a", 1, "bc", 2) != fq_hash64_pair("ab", 2, "c", 1));
  fq_idem_destroy(&t);
  CHECK(t == NULL);
}

FQ_TEST(devq_matches_model) {
  unsigned seed = 20261129;
  printf("  seed %u\n", seed);
  srand(seed);
  fq_devq_t *q = fq_devq_new();
  CHECK(q != NULL);
  if (!q) return;
  enum { N = 20000, DEV = 50 };
  static int64_t deadline[N + 1];
  static int dev_of[N + 1];
  static int alive[N + 1];
  for (uint64_t i = 1; i <= N; i++) {
    char dev[16];
    dev_of[i] = rand() % DEV;
    deadline[i] = rand() % 100000;
    alive[i] = 1;
    snprintf(dev, sizeof dev, "v:%d", dev_of[i]);
    CHECK_INT(fq_devq_push(q, dev, i, deadline[i]), 0);
    if (rand() % 3 == 0) {
      uint64_t victim = 1 + (uint64_t)rand() % i;
      if (alive[victim]) {
        fq_devq_remove(q, victim);
        alive[victim] = 0;
      }
    }
  }
  size_t live = 0;
  for (int i = 1; i <= N; i++) live += (size_t)alive[i];
  CHECK_INT(fq_devq_count(q), live);
  /* Each device's FIFO is its live commands in push order. */
  for (int d = 0; d < DEV; d++) {
    char dev[16];
    uint64_t got[N];
    snprintf(dev, sizeof dev, "v:%d", d);
    size_t n = fq_devq_list(q, dev, got, N);
    size_t k = 0;
    for (uint64_t i = 1; i <= N; i++) {
      if (!alive[i] || dev_of[i] != d) continue;
      if (k < n) CHECK_INT(got[k], i);
      k++;
    }
    CHECK_INT(n, k);
  }
  /* Deadlines come out in order, skipping removed commands. */
  int64_t last = -1, dl;
  uint64_t num;
  size_t seen = 0;
  while (fq_devq_first_deadline(q, &dl, &num) == 0) {
    CHECK(alive[num]);
    CHECK_INT(dl, deadline[num]);
    CHECK(dl >= last);
    last = dl;
    fq_devq_remove(q, num);
    seen++;
  }
  CHECK_INT(seen, live);
  CHECK_INT(fq_devq_count(q), 0);
  fq_devq_destroy(&q);
}

static int copy_pair(void *ud, uint64_t h, uint64_t num) { return fq_idem_put(ud, h, num); }

/* The compact dedupe table against a model: random puts (several numbers
 * per hash, hashes crowded into few homes), deletes, in-place updates and
 * lookups, through growth; then its size per entry. */
FQ_TEST(idem_matches_model) {
  unsigned seed = 20261204;
  printf("  seed %u\n", seed);
  srand(seed);
  enum { N = 60000 };
  static uint64_t mh[N], mv[N];
  static int live[N];
  fq_idem_t *t = fq_idem_new(16);
  CHECK(t != NULL);
  if (!t) return;
  size_t nlive = 0;
  for (int i = 0; i < N; i++) {
    /* A third share a few hashes (long runs of equal hashes); 0 and the
     * largest hash sit at the ends of the table. */
    uint64_t r = ((uint64_t)rand() << 40) ^ ((uint64_t)rand() << 20) ^ (uint64_t)rand();
    mh[i] = i % 3 == 0 ? (uint64_t)(i % 5) * (UINT64_MAX / 4) : r * 0x9E3779B97F4A7C15ULL;
    mv[i] = (uint64_t)i + 1;
    CHECK_INT(fq_idem_put(t, mh[i], mv[i]), 0);
    CHECK_INT(fq_idem_put(t, mh[i], mv[i]), 0); /* the same pair: held once */
    live[i] = 1;
    nlive++;
    if (rand() % 4 == 0) {
      int k = rand() % (i + 1);
      if (live[k]) {
        fq_idem_del(t, mh[k], mv[k]);
        live[k] = 0;
        nlive--;
      }
    }
    if (rand() % 8 == 0) {
      int k = rand() % (i + 1);
      if (live[k]) {
        CHECK_INT(fq_idem_set(t, mh[k], mv[k], mv[k] + N), 0);
        mv[k] += N;
      }
    }
  }
  CHECK_INT(fq_idem_count(t), nlive);
  /* Every live pair is found under its hash, no removed one is. */
  size_t bad = 0;
  for (int i = 0; i < N; i += 7) {
    size_t cur = 0;
    uint64_t v;
    int found = 0;
    while (fq_idem_next(t, mh[i], &cur, &v)) found += v == mv[i];
    if (found != live[i]) bad++;
  }
  CHECK_INT(bad, 0);
  fq_idem_destroy(&t);

  /* Sized for its count: at most 24 bytes per entry (a 16-byte slot, about
   * 70 % full) and one huge page of rounding, and a table filled from
   * another's walk (the ingress, from the shards' announcements) stays
   * correct. */
  enum { M = 200000 };
  t = fq_idem_new(M);
  fq_idem_t *u = fq_idem_new(1024);
  CHECK(t != NULL && u != NULL);
  if (!t || !u) return;
  for (uint64_t i = 1; i <= M; i++) CHECK_INT(fq_idem_put(t, fq_hash64(&i, sizeof i), i), 0);
  printf("  %zu entries: %.1f bytes each\n", fq_idem_count(t),
         (double)fq_idem_bytes(t) / (double)fq_idem_count(t));
  CHECK(fq_idem_bytes(t) <= (size_t)M * 24 + (2u << 20));
  CHECK_INT(fq_idem_foreach(t, copy_pair, u), 0);
  CHECK_INT(fq_idem_count(u), M);
  CHECK(fq_idem_bytes(u) <= (size_t)M * 32 + (2u << 20));
  size_t miss = 0;
  for (uint64_t i = 1; i <= M; i += 13) {
    size_t cur = 0;
    uint64_t v;
    if (!fq_idem_next(u, fq_hash64(&i, sizeof i), &cur, &v) || v != i) miss++;
  }
  CHECK_INT(miss, 0);
  fq_idem_destroy(&t);
  fq_idem_destroy(&u);
}

/* The device queues of many commands: memory per command, and the queue
 * order and deadlines after the removals the dispatcher makes (heads). */
FQ_TEST(devq_compact) {
  fq_devq_t *q = fq_devq_new();
  CHECK(q != NULL);
  if (!q) return;
  enum { N = 200000, DEV = 2000 };
  CHECK_INT(fq_devq_reserve(q, N), 0);
  for (uint64_t i = 1; i <= N; i++) {
    char dev[24];
    snprintf(dev, sizeof dev, "v:5YJ3E1EA%07u", (unsigned)(i % DEV));
    CHECK_INT(fq_devq_push(q, dev, i, 1000 + (int64_t)i), 0);
  }
  printf("  %d commands on %d devices: %.1f bytes each\n", N, DEV,
         (double)fq_devq_bytes(q) / N);
  CHECK(fq_devq_bytes(q) <= (size_t)N * 64);
  /* Each device's head leaves (dispatched), twice; the next deadline is
   * then the oldest left, and every queue keeps its order. */
  for (int round = 0; round < 2; round++) {
    for (unsigned d = 0; d < DEV; d++) {
      char dev[24];
      uint64_t head;
      snprintf(dev, sizeof dev, "v:5YJ3E1EA%07u", d);
      CHECK(fq_devq_list(q, dev, &head, 1) > 0);
      fq_devq_remove(q, head);
    }
  }
  int64_t dl;
  uint64_t num;
  CHECK_INT(fq_devq_first_deadline(q, &dl, &num), 0);
  CHECK_INT(num, 2 * DEV + 1);
  CHECK_INT(dl, 1000 + 2 * DEV + 1);
  fq_devq_clear_deadline(q, num);
  CHECK_INT(fq_devq_first_deadline(q, &dl, &num), 0);
  CHECK_INT(num, 2 * DEV + 2);
  uint64_t got[4];
  CHECK_INT(fq_devq_list(q, "v:5YJ3E1EA0000007", got, 4), N / DEV - 2);
  CHECK_INT(got[0], 2 * DEV + 7);
  CHECK_INT(got[1], 3 * DEV + 7);
  CHECK_INT(fq_devq_count(q), N - 2 * DEV);
  fq_devq_destroy(&q);
}

static int64_t dl_of(void *ud, uint64_t num) {
  (void)ud;
  return 1000000 + (int64_t)num;
}

/* The restart snapshot's queues: what fq_devq_import rebuilds from
 * fq_devq_export is the same queues, deadlines and order, cleared
 * deadlines given back by the callback; damaged words are refused. */
FQ_TEST(devq_export_import) {
  enum { DEV = 300, M = 30000 };
  fq_devq_t *q = fq_devq_new();
  char name[32];
  for (int i = 0; i < M; i++) {
    snprintf(name, sizeof name, "v:DEVICE%05d", i % DEV);
    CHECK_INT(fq_devq_push(q, name, (uint64_t)i + 1, 5000 + (i * 7919) % 100000), 0);
  }
  /* Heads removed, one cleared deadline, one pushed again. */
  for (int i = 0; i < DEV / 2; i++) fq_devq_remove(q, (uint64_t)i + 1);
  fq_devq_clear_deadline(q, DEV + 1);
  fq_devq_remove(q, 2 * DEV + 5);
  CHECK_INT(fq_devq_push(q, "v:DEVICE00005", 2 * DEV + 5, 42), 0);
  fq_buf_t b;
  fq_buf_init(&b, (size_t)1 << 30);
  CHECK_INT(fq_devq_export(q, &b, dl_of, NULL), 0);
  CHECK_INT(b.len % 8, 0);
  fq_devq_t *r = fq_devq_new();
  CHECK_INT(fq_devq_import(r, (const uint64_t *)b.data, b.len / 8), 0);
  CHECK_INT(fq_devq_count(r), fq_devq_count(q));
  static uint64_t a[M], c[M];
  for (int d = 0; d < DEV; d++) {
    snprintf(name, sizeof name, "v:DEVICE%05d", d);
    size_t na = fq_devq_list(q, name, a, M), nc = fq_devq_list(r, name, c, M);
    CHECK_INT(nc, na);
    CHECK(memcmp(a, c, na * sizeof *a) == 0);
  }
  /* Deadlines come out in the same order, the cleared one with the
   * callback's. */
  size_t n = 0;
  int64_t dq, dr;
  uint64_t nq, nr;
  bool seen_cleared = false;
  for (;;) {
    int rq = fq_devq_first_deadline(q, &dq, &nq), rr = fq_devq_first_deadline(r, &dr, &nr);
    if (rr != 0) break;
    if (nr == DEV + 1) {
      CHECK_INT(dr, 1000000 + DEV + 1);
      seen_cleared = true;
      fq_devq_remove(r, nr);
      continue;
    }
    CHECK_INT(rq, 0);
    CHECK_INT(dr, dq);
    CHECK_INT(nr, nq);
    fq_devq_remove(q, nq);
    fq_devq_remove(r, nr);
    n++;
  }
  CHECK(seen_cleared);
  CHECK_INT(n, M - DEV / 2 - 1);
  /* Damaged: a count too large, a number held twice; not into a filled q. */
  uint64_t *w = (uint64_t *)b.data;
  fq_devq_t *x = fq_devq_new();
  w[0]++;
  CHECK_INT(fq_devq_import(x, w, b.len / 8), -EINVAL);
  w[0]--;
  fq_devq_destroy(&x);
  x = fq_devq_new();
  size_t len0 = w[1], first = 2 + (len0 + 7) / 8 + 1;
  uint64_t keep = w[first + 1];
  w[first + 1] = w[first];
  CHECK_INT(fq_devq_import(x, w, b.len / 8), -EINVAL);
  w[first + 1] = keep;
  fq_devq_destroy(&x);
  x = fq_devq_new();
  CHECK_INT(fq_devq_push(x, "v:OTHER", 1, 1), 0);
  CHECK_INT(fq_devq_import(x, w, b.len / 8), -EINVAL);
  fq_devq_destroy(&x);
  fq_buf_free(&b);
  fq_devq_destroy(&q);
  fq_devq_destroy(&r);
}

/* An imported queue holds exactly its count (capacity 1 for a device
 * with one queued command): the pushes after it must grow it.  (A growth
 * of half the capacity gave 1 + 0 and wrote past the end: ASan's
 * heap-buffer-overflow in test_shard and test_schedule.) */
FQ_TEST(devq_push_after_import_grows) {
  fq_devq_t *q = fq_devq_new();
  CHECK_INT(fq_devq_push(q, "v:ONE", 1, 100), 0);
  CHECK_INT(fq_devq_push(q, "v:TWO", 2, 100), 0);
  CHECK_INT(fq_devq_push(q, "v:TWO", 3, 100), 0);
  fq_buf_t b;
  fq_buf_init(&b, (size_t)1 << 20);
  CHECK_INT(fq_devq_export(q, &b, dl_of, NULL), 0);
  fq_devq_t *r = fq_devq_new();
  CHECK_INT(fq_devq_import(r, (const uint64_t *)b.data, b.len / 8), 0);
  enum { MORE = 40 };
  for (uint64_t i = 0; i < MORE; i++) {
    CHECK_INT(fq_devq_push(r, "v:ONE", 10 + i, 200), 0);
    CHECK_INT(fq_devq_push(r, "v:TWO", 100 + i, 200), 0);
  }
  uint64_t got[MORE + 2];
  CHECK_INT(fq_devq_list(r, "v:ONE", got, MORE + 2), MORE + 1);
  CHECK_INT(got[0], 1);
  for (uint64_t i = 0; i < MORE; i++) CHECK_INT(got[i + 1], 10 + i);
  CHECK_INT(fq_devq_list(r, "v:TWO", got, MORE + 2), MORE + 2);
  CHECK_INT(got[0], 2);
  CHECK_INT(got[1], 3);
  for (uint64_t i = 0; i < MORE; i++) CHECK_INT(got[i + 2], 100 + i);
  CHECK_INT(fq_devq_count(r), 2 * MORE + 3);
  fq_buf_free(&b);
  fq_devq_destroy(&q);
  fq_devq_destroy(&r);
}
