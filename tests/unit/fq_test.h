/*
 * A small unit-test harness: each test is a function registered with
 * FQ_TEST(name); checks print both sides on failure and the test goes on
 * so one run shows every broken assertion.  main() is in fq_test.c: it runs
 * each test in a child process of its own with a timeout, so a crash, a
 * sanitizer report or a hang fails that test by name and the run goes on.
 *
 *   test_x                    every test, each forked, default timeout 60 s
 *                             (100 s in a sanitizer build)
 *   test_x NAME...            only these, in this order
 *   test_x --no-fork NAME...  in this process, no timeout (for a debugger);
 *                             FQ_TEST_NOFORK=1 does the same
 *   test_x --list             the test names
 *   FQ_TEST_TIMEOUT=S         seconds per test for tests without their own
 */
#ifndef FQ_TEST_H
#define FQ_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef void (*fq_test_fn)(void);
void fq_test_register(const char *name, fq_test_fn fn);
/* timeout_s > 0: this test's own timeout, which FQ_TEST_TIMEOUT does not
 * change; 0: the default. */
void fq_test_register_timeout(const char *name, fq_test_fn fn, int timeout_s);
extern int fq_test_failures;

#define FQ_TEST(name)                                                     \
  static void name(void);                                                 \
  __attribute__((constructor)) static void name##_register(void) {        \
    fq_test_register(#name, name);                                        \
  }                                                                       \
  static void name(void)

/* A test that needs a timeout other than the default (a long soak, or a
 * deliberately short one). */
#define FQ_TEST_WITH_TIMEOUT(name, seconds)                               \
  static void name(void);                                                 \
  __attribute__((constructor)) static void name##_register(void) {        \
    fq_test_register_timeout(#name, name, (seconds));                     \
  }                                                                       \
  static void name(void)

#define FQ__FAIL(...)                                                     \
  do {                                                                    \
    fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                     \
    fprintf(stderr, __VA_ARGS__);                                         \
    fprintf(stderr, "\n");                                                \
    fq_test_failures++;                                                   \
  } while (0)

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) FQ__FAIL("CHECK(%s) failed", #cond);                     \
  } while (0)

#define CHECK_INT(a, b)                                                   \
  do {                                                                    \
    long long a_ = (long long)(a), b_ = (long long)(b);                   \
    if (a_ != b_) FQ__FAIL("%s == %s: %lld != %lld", #a, #b, a_, b_);     \
  } while (0)

#define CHECK_STR(a, b)                                                   \
  do {                                                                    \
    const char *a_ = (a), *b_ = (b);                                      \
    if (!a_ || !b_ || strcmp(a_, b_) != 0)                                \
      FQ__FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",  \
               b_ ? b_ : "(null)");                                       \
  } while (0)

/* Compare byte strings; prints both as hex on mismatch. */
void fq_test_check_mem(const char *file, int line, const char *what,
                       const void *a, size_t alen, const void *b, size_t blen);
#define CHECK_MEM(a, alen, b, blen) \
  fq_test_check_mem(__FILE__, __LINE__, #a " == " #b, a, alen, b, blen)

#endif
