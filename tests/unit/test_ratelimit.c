/*
 * Unit tests of ratelimit.c.  The clock is an argument: each test walks
 * now_ms by hand.
 */
#include <stdlib.h>

#include "fq_test.h"
#include "ratelimit.h"

#define K(s) s, strlen(s)

FQ_TEST(rl_burst_then_rate) {
  fq_err_t err;
  fq_rl_opts_t o = {.rate = 2.0, .burst = 3.0};
  fq_rl_t *rl = fq_rl_new(&o, &err);
  int64_t t = 1000000;
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t), 0);
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t), 0);
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t), 0);
  /* Empty: one token per 500 ms at 2/s. */
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t), 500);
  CHECK_INT(fq_rl_peek(rl, K("VIN1"), t + 100), 400);
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t + 499), 1);
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t + 500), 0);
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t + 500), 500);
  /* Another key has its own bucket. */
  CHECK_INT(fq_rl_take(rl, K("VIN2"), t + 500), 0);
  /* Refund gives the token back. */
  fq_rl_refund(rl, K("VIN1"));
  CHECK_INT(fq_rl_take(rl, K("VIN1"), t + 500), 0);
  /* Long quiet: never more than the burst. */
  int64_t t2 = t + 3600 * 1000;
  for (int i = 0; i < 3; i++) CHECK_INT(fq_rl_take(rl, K("VIN1"), t2), 0);
  CHECK(fq_rl_take(rl, K("VIN1"), t2) > 0);
  CHECK_INT(fq_rl_take(rl, "", 0, t2), FQ_EBADPARAM);
  char longkey[FQ_RL_KEY_MAX + 2];
  memset(longkey, 'k', sizeof longkey);
  CHECK_INT(fq_rl_take(rl, longkey, sizeof longkey, t2), FQ_EBADPARAM);
  fq_rl_destroy(&rl);
  CHECK(rl == NULL);
  o.rate = 0;
  CHECK(fq_rl_new(&o, &err) == NULL);
  CHECK_INT(err.code, FQ_EBADPARAM);
}

FQ_TEST(rl_park_caps_and_never_shortens) {
  fq_err_t err;
  fq_rl_opts_t o = {.rate = 100, .burst = 10, .max_park_ms = 60000};
  fq_rl_t *rl = fq_rl_new(&o, &err);
  int64_t t = 5000;
  CHECK_INT(fq_rl_park(rl, K("acct:a"), t + 7000, t), 0);
  CHECK_INT(fq_rl_take(rl, K("acct:a"), t), 7000);
  CHECK_INT(fq_rl_parked_until(rl, K("acct:a"), t), t + 7000);
  /* A shorter park does not shorten it. */
  CHECK_INT(fq_rl_park(rl, K("acct:a"), t + 1000, t), 0);
  CHECK_INT(fq_rl_take(rl, K("acct:a"), t + 1000), 6000);
  /* A day-long Retry-After is capped at max_park_ms. */
  CHECK_INT(fq_rl_park(rl, K("acct:a"), t + 86400000, t + 2000), 0);
  CHECK_INT(fq_rl_parked_until(rl, K("acct:a"), t + 2000), t + 62000);
  CHECK_INT(fq_rl_take(rl, K("acct:a"), t + 62000), 0);
  CHECK_INT(fq_rl_parked_until(rl, K("acct:a"), t + 62000), 0);
  CHECK_INT(fq_rl_parked_until(rl, K("nobody"), t), 0);
  fq_rl_destroy(&rl);
}

FQ_TEST(rl_table_is_bounded_and_evicts_only_idle) {
  fq_err_t err;
  fq_rl_opts_t o = {.rate = 1, .burst = 1, .capacity = 4};
  fq_rl_t *rl = fq_rl_new(&o, &err);
  int64_t t = 0;
  char k[16];
  /* Four busy buckets (each just spent its only token). */
  for (int i = 0; i < 4; i++) {
    snprintf(k, sizeof k, "d%d", i);
    CHECK_INT(fq_rl_take(rl, K(k), t), 0);
  }
  CHECK_INT(fq_rl_size(rl), 4);
  /* Full of busy buckets: a fifth key cannot get one. */
  CHECK_INT(fq_rl_take(rl, K("d4"), t + 10), FQ_EBUSY);
  /* A second later d0..d3 are full again (idle): the LRU one goes. */
  CHECK_INT(fq_rl_take(rl, K("d4"), t + 1000), 0);
  CHECK_INT(fq_rl_size(rl), 4);
  /* d0 was evicted losslessly: it behaves like a fresh bucket... */
  CHECK_INT(fq_rl_peek(rl, K("d0"), t + 1000), 0);
  /* ...while busy d4 was kept and is still empty. */
  CHECK_INT(fq_rl_peek(rl, K("d4"), t + 1000), 1000);
  /* A parked bucket is not idle and is not evicted. */
  CHECK_INT(fq_rl_park(rl, K("d1"), t + 500000, t + 1000), 0);
  /* LRU now d1 (parked), d4 (busy), d3, d2 (idle): d5 and d6 take the
   * idle slots, d7 finds only busy or parked buckets. */
  CHECK_INT(fq_rl_take(rl, K("d5"), t + 1000), 0);
  CHECK_INT(fq_rl_take(rl, K("d6"), t + 1000), 0);
  CHECK_INT(fq_rl_take(rl, K("d7"), t + 1000), FQ_EBUSY);
  CHECK_INT(fq_rl_parked_until(rl, K("d1"), t + 1000), t + 500000);
  fq_rl_destroy(&rl);
}

FQ_TEST(rl_many_keys_stay_consistent) {
  /* Fixed pattern, logged: 10,000 operations over 300 keys in a table of
   * 256, checking the table never exceeds its capacity and that a key seen
   * twice at the same instant is refused the second time (burst 1). */
  fq_err_t err;
  fq_rl_opts_t o = {.rate = 0.5, .burst = 1, .capacity = 256};
  fq_rl_t *rl = fq_rl_new(&o, &err);
  unsigned seed = 12345;
  printf("  seed %u\n", seed);
  int refused_twice = 0, busy = 0;
  for (int i = 0; i < 10000; i++) {
    seed = seed * 1103515245u + 12345u;
    char k[16];
    snprintf(k, sizeof k, "v%u", (seed >> 16) % 300);
    int64_t now = (int64_t)i * 10;
    int64_t a = fq_rl_take(rl, K(k), now);
    if (a == FQ_EBUSY) {
      busy++;
      continue;
    }
    CHECK(a >= 0);
    if (a == 0) {
      int64_t again = fq_rl_take(rl, K(k), now);
      CHECK(again > 0); /* burst 1: never twice at the same instant */
      refused_twice += again > 0;
    }
    CHECK(fq_rl_size(rl) <= 256);
  }
  CHECK(refused_twice > 0);
  printf("  %d second takes refused, %d table-full answers\n", refused_twice, busy);
  fq_rl_destroy(&rl);
}

FQ_TEST(rl_retry_after_parsing) {
  int64_t now = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */
  CHECK_INT(fq_rl_parse_retry_after("120", now), 120000);
  CHECK_INT(fq_rl_parse_retry_after(" 0 ", now), 0);
  CHECK_INT(fq_rl_parse_retry_after("86400", now), 86400000);
  CHECK_INT(fq_rl_parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), 60000);
  CHECK_INT(fq_rl_parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), 0); /* past */
  CHECK_INT(fq_rl_parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 0), 10000);
  CHECK_INT(fq_rl_parse_retry_after("Sat, 29 Feb 2020 12:00:00 GMT", 0), 1582977600000LL);
  CHECK_INT(fq_rl_parse_retry_after("soon", now), -1);
  CHECK_INT(fq_rl_parse_retry_after("12abc", now), -1);
  CHECK_INT(fq_rl_parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now), -1);
  CHECK_INT(fq_rl_parse_retry_after("99999999999999999999", now), -1);
  CHECK_INT(fq_rl_parse_retry_after(NULL, now), -1);
  /* The capped reading: both forms, and numbers too large to read. */
  CHECK_INT(fq_rl_retry_after_ms("120", now, 60000), 60000);
  CHECK_INT(fq_rl_retry_after_ms("30", now, 60000), 30000);
  CHECK_INT(fq_rl_retry_after_ms("Sun, 06 Nov 1994 08:50:37 GMT", now, 30000), 30000);
  CHECK_INT(fq_rl_retry_after_ms("Thu, 31 Dec 2099 23:59:59 GMT", now, 86400000), 86400000);
  CHECK_INT(fq_rl_retry_after_ms(" 99999999999999999999 ", now, 86400000), 86400000);
  CHECK_INT(fq_rl_retry_after_ms("12abc", now, 86400000), -1);
  CHECK_INT(fq_rl_retry_after_ms(NULL, now, 86400000), -1);
}
