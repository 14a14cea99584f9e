/*
 * Deliberately broken tests for test_runner.c, which runs this binary and
 * checks that the forking runner (fq_test.c) reports each one by name and
 * goes on.  Not a ctest test of its own: it is meant to fail.
 */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "fq_test.h"

FQ_TEST(passes) { CHECK_INT(2 + 2, 4); }

FQ_TEST(fails_check) { CHECK_INT(1, 2); }

FQ_TEST(crashes) {
  /* Without a sanitizer's handler in the way, so the child surely dies of
   * the signal. */
  signal(SIGSEGV, SIG_DFL);
  raise(SIGSEGV);
}

/* What AddressSanitizer does with abort_on_error=1. */
FQ_TEST(aborts) { abort(); }

/* What LeakSanitizer does at exit when a test leaked (its exitcode 23). */
FQ_TEST(exits_23) { exit(23); }

/* Hangs, after starting a process of its own that would hang forever too;
 * test_runner checks that the runner killed both. */
FQ_TEST_WITH_TIMEOUT(hangs, 1) {
  pid_t pid = fork();
  if (pid == 0) {
    for (;;) pause();
  }
  printf("grandchild %d\n", (int)pid);
  fflush(stdout);
  for (;;) pause();
}

/* Longer than FQ_TEST_TIMEOUT=1, well within the default. */
FQ_TEST(sleeps_3s) { sleep(3); }

FQ_TEST(prints_pid) { printf("pid %d\n", (int)getpid()); }

/* Leaks: in a sanitizer build LeakSanitizer reports it when the child
 * exits, which must fail the test. */
static void *volatile leaked;
FQ_TEST(leaks) {
  leaked = malloc(64);
  leaked = NULL;
}
