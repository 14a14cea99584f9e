/*
 * Unit tests of the in-memory shard indexes: the dedupe table (idem.c) and
 * the per-device FIFOs with their deadline heap (devq.c), checked against
 * a straightforward model under a fixed-seed random workload.
 */
#include <stdlib.h>

#include "devq.h"
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
