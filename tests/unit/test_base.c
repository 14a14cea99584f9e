/*
 * Unit tests of the small base modules: byte order (byteorder.h) against
 * fixed bytes, and the seeded generator (rng.c) against known answers of
 * splitmix64 / xoshiro256** and for the range of its derived draws.
 */
#include <stdint.h>

#include "byteorder.h"
#include "fq_test.h"
#include "rng.h"

FQ_TEST(byteorder_big_endian_fixed_bytes) {
  static const uint8_t b[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  CHECK_INT(fq_get_be16(b), 0x0123);
  CHECK_INT(fq_get_be32(b), 0x01234567);
  CHECK(fq_get_be64(b) == 0x0123456789abcdefULL);
  CHECK(fq_get_be(b, 0) == 0);
  CHECK(fq_get_be(b, 3) == 0x012345);
  CHECK(fq_get_be(b, 8) == 0x0123456789abcdefULL);
  /* High bits set: no sign extension anywhere. */
  static const uint8_t f[8] = {0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8};
  CHECK_INT(fq_get_be16(f), 0xfffe);
  CHECK(fq_get_be32(f) == 0xfffefdfcu);
  CHECK(fq_get_be64(f) == 0xfffefdfcfbfaf9f8ULL);

  uint8_t o[9];
  memset(o, 0xaa, sizeof o);
  fq_put_be16(o, 0x0123);
  CHECK_MEM(o, 3, ((const uint8_t[]){0x01, 0x23, 0xaa}), 3);
  memset(o, 0xaa, sizeof o);
  fq_put_be32(o, 0x01234567);
  CHECK_MEM(o, 5, ((const uint8_t[]){0x01, 0x23, 0x45, 0x67, 0xaa}), 5);
  memset(o, 0xaa, sizeof o);
  fq_put_be64(o, 0x0123456789abcdefULL);
  CHECK_MEM(o, 9, ((const uint8_t[]){0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xaa}), 9);
  memset(o, 0xaa, sizeof o);
  fq_put_be(o, 0x0123456789abcdefULL, 3); /* the low three bytes */
  CHECK_MEM(o, 4, ((const uint8_t[]){0xab, 0xcd, 0xef, 0xaa}), 4);
}

FQ_TEST(byteorder_little_endian_fixed_bytes) {
  static const uint8_t b[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  CHECK_INT(fq_get_le16(b), 0x2301);
  CHECK_INT(fq_get_le32(b), 0x67452301);
  CHECK(fq_get_le64(b) == 0xefcdab8967452301ULL);
  uint8_t o[9];
  memset(o, 0xaa, sizeof o);
  fq_put_le16(o, 0x0123);
  CHECK_MEM(o, 3, ((const uint8_t[]){0x23, 0x01, 0xaa}), 3);
  memset(o, 0xaa, sizeof o);
  fq_put_le32(o, 0x01234567);
  CHECK_MEM(o, 5, ((const uint8_t[]){0x67, 0x45, 0x23, 0x01, 0xaa}), 5);
  memset(o, 0xaa, sizeof o);
  fq_put_le64(o, 0x0123456789abcdefULL);
  CHECK_MEM(o, 9, ((const uint8_t[]){0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0xaa}), 9);
}

FQ_TEST(byteorder_round_trips) {
  /* Values with every byte distinct and the top bit set or clear. */
  static const uint64_t vals[] = {0, 1, 0x80, 0x7fff, 0x8000, 0xdeadbeef, 0x80000000u,
                                  0x0102030405060708ULL, 0x8877665544332211ULL, UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    uint64_t v = vals[i];
    uint8_t b[8];
    fq_put_be16(b, (uint16_t)v);
    CHECK_INT(fq_get_be16(b), (uint16_t)v);
    fq_put_be32(b, (uint32_t)v);
    CHECK(fq_get_be32(b) == (uint32_t)v);
    fq_put_be64(b, v);
    CHECK(fq_get_be64(b) == v);
    for (size_t n = 0; n <= 8; n++) {
      fq_put_be(b, v, n);
      uint64_t mask = n == 8 ? UINT64_MAX : (UINT64_C(1) << (8 * n)) - 1;
      CHECK(fq_get_be(b, n) == (v & mask));
    }
    fq_put_le16(b, (uint16_t)v);
    CHECK_INT(fq_get_le16(b), (uint16_t)v);
    fq_put_le32(b, (uint32_t)v);
    CHECK(fq_get_le32(b) == (uint32_t)v);
    fq_put_le64(b, v);
    CHECK(fq_get_le64(b) == v);
  }
}

/* Known answers from an independent implementation of the published
 * algorithms (splitmix64's first output for seed 0 is the widely quoted
 * 0xe220a8397b1dcdaf, which is also the first state word). */
FQ_TEST(rng_known_answers) {
  fq_rng_t r;
  fq_rng_seed(&r, 0);
  CHECK(r.s[0] == 0xe220a8397b1dcdafULL);
  CHECK(r.s[1] == 0x6e789e6aa1b965f4ULL);
  CHECK(r.s[2] == 0x06c45d188009454fULL);
  CHECK(r.s[3] == 0xf88bb8a8724c81ecULL);
  static const uint64_t want0[] = {0x99ec5f36cb75f2b4ULL, 0xbf6e1f784956452aULL,
                                   0x1a5f849d4933e6e0ULL, 0x6aa594f1262d2d2cULL,
                                   0xbba5ad4a1f842e59ULL};
  for (int i = 0; i < 5; i++) {
    uint64_t got = fq_rng_next(&r);
    if (got != want0[i])
      FQ__FAIL("seed 0 output %d: %016" PRIx64 " != %016" PRIx64, i, got, want0[i]);
  }
  static const uint64_t want1[] = {0x15d7390b8b413d9dULL, 0x96422cb3f1d75970ULL,
                                   0x41ac321f02d76416ULL, 0x3e796c5511fad9deULL,
                                   0x78efedd1c3d57b3aULL};
  fq_rng_seed(&r, 20261129);
  for (int i = 0; i < 5; i++) {
    uint64_t got = fq_rng_next(&r);
    if (got != want1[i])
      FQ__FAIL("seed 20261129 output %d: %016" PRIx64 " != %016" PRIx64, i, got, want1[i]);
  }
}

FQ_TEST(rng_derived_draws_stay_in_range) {
  uint64_t seed = 77;
  printf("  seed %" PRIu64 "\n", seed);
  fq_rng_t r;
  fq_rng_seed(&r, seed);
  /* below(n): every value in range, and each of a few buckets gets about
   * its share (a broken reduction, e.g. always 0, fails this). */
  enum { N = 60000, K = 6 };
  int hist[K] = {0};
  for (int i = 0; i < N; i++) {
    uint64_t v = fq_rng_below(&r, K);
    if (v >= K) {
      FQ__FAIL("below(%d) gave %" PRIu64, K, v);
      return;
    }
    hist[v]++;
  }
  for (int k = 0; k < K; k++)
    if (hist[k] < N / K * 9 / 10 || hist[k] > N / K * 11 / 10)
      FQ__FAIL("below(%d): bucket %d got %d of %d", K, k, hist[k], N);
  CHECK(fq_rng_below(&r, 1) == 0);
  CHECK(fq_rng_below(&r, 0) == 0);
  /* A bound just above 2^63 rejects about half of all draws: still ends. */
  uint64_t big = (UINT64_C(1) << 63) + 1;
  for (int i = 0; i < 100; i++) CHECK(fq_rng_below(&r, big) < big);
  double lo = 1, hi = 0, sum = 0;
  for (int i = 0; i < N; i++) {
    double u = fq_rng_unit(&r);
    if (!(u >= 0 && u < 1)) {
      FQ__FAIL("unit() gave %g", u);
      return;
    }
    lo = u < lo ? u : lo;
    hi = u > hi ? u : hi;
    sum += u;
  }
  CHECK(lo < 0.001 && hi > 0.999);
  CHECK(sum / N > 0.49 && sum / N < 0.51);
  /* The same seed repeats the sequence; another seed does not. */
  fq_rng_t a, b, c;
  fq_rng_seed(&a, seed);
  fq_rng_seed(&b, seed);
  fq_rng_seed(&c, seed + 1);
  int same = 1, diff = 0;
  for (int i = 0; i < 100; i++) {
    uint64_t x = fq_rng_next(&a);
    same &= x == fq_rng_next(&b);
    diff += x != fq_rng_next(&c);
  }
  CHECK(same);
  CHECK(diff == 100);
}
