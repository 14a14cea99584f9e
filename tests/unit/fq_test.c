/*
 * Runner for the FQ_TEST harness: runs every registered test (or the ones
 * named on the command line) and ends with "N passed, N failed".
 */
#include "fq_test.h"

#include <stdlib.h>

#define MAX_TESTS 512
static struct {
  const char *name;
  fq_test_fn fn;
} tests[MAX_TESTS];
static int ntests;
int fq_test_failures;

void fq_test_register(const char *name, fq_test_fn fn) {
  if (ntests < MAX_TESTS) {
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
  }
}

void fq_test_check_mem(const char *file, int line, const char *what,
                       const void *a, size_t alen, const void *b, size_t blen) {
  if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0)) return;
  fprintf(stderr, "  %s:%d: %s differ\n    got:  ", file, line, what);
  for (size_t i = 0; i < alen; i++) fprintf(stderr, "%02x", ((const unsigned char *)a)[i]);
  fprintf(stderr, "\n    want: ");
  for (size_t i = 0; i < blen; i++) fprintf(stderr, "%02x", ((const unsigned char *)b)[i]);
  fprintf(stderr, "\n");
  fq_test_failures++;
}

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  for (int i = 0; i < ntests; i++) {
    if (argc > 1) {
      int want = 0;
      for (int j = 1; j < argc; j++)
        if (strcmp(argv[j], tests[i].name) == 0) want = 1;
      if (!want) continue;
    }
    int before = fq_test_failures;
    tests[i].fn();
    if (fq_test_failures == before) {
      passed++;
      printf("ok   %s\n", tests[i].name);
    } else {
      failed++;
      printf("FAIL %s\n", tests[i].name);
    }
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : (passed ? 0 : 1);
}
