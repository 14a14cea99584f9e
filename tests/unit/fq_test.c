/*
 * Runner for the FQ_TEST harness (usage in fq_test.h).  Each test runs in a
 * child process, in a process group of its own, with a timeout: a test that
 * crashes, aborts (AddressSanitizer with abort_on_error does), exits
 * non-zero (a sanitizer's exit code, a leak report) or hangs fails under its
 * own name, the processes it started are killed with it, and the run goes on
 * to the next test.  The run ends with "N passed, M failed" and exits 0 only
 * when at least one test ran and none failed.
 */
#include "fq_test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 512
/* Per test, unless FQ_TEST_TIMEOUT or the test says otherwise.  Sanitizers
 * make some tests several times slower (test_client's mutation test takes
 * over 60 s under ASan on a loaded machine), so those builds allow more,
 * still below ctest's 120 s for the whole binary so a hang is named. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_TIMEOUT_S 100
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DEFAULT_TIMEOUT_S 100
#endif
#endif
#ifndef DEFAULT_TIMEOUT_S
#define DEFAULT_TIMEOUT_S 60
#endif
static struct {
  const char *name;
  fq_test_fn fn;
  int timeout_s; /* 0: the default */
} tests[MAX_TESTS];
static int ntests;
int fq_test_failures;

/* The child being waited for, so a signal that ends the runner (Ctrl-C,
 * ctest's kill) ends that child's process group too. */
static volatile sig_atomic_t running_pid;

void fq_test_register_timeout(const char *name, fq_test_fn fn, int timeout_s) {
  if (ntests >= MAX_TESTS) {
    /* A silently dropped test would be a test that never fails. */
    fprintf(stderr, "fq_test: more than %d tests; raise MAX_TESTS\n", MAX_TESTS);
    abort();
  }
  tests[ntests].name = name;
  tests[ntests].fn = fn;
  tests[ntests].timeout_s = timeout_s;
  ntests++;
}

void fq_test_register(const char *name, fq_test_fn fn) {
  fq_test_register_timeout(name, fn, 0);
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

static void on_chld(int sig) { (void)sig; }

static void on_fatal(int sig) {
  pid_t pid = running_pid;
  if (pid > 0) kill(-pid, SIGKILL);
  signal(sig, SIG_DFL);
  raise(sig);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run test i in a child; returns 1 if it passed.  why gets the reason of a
 * failure other than failed checks (which the test printed itself). */
static int run_forked(int i, int timeout_s, char *why, size_t whylen) {
  why[0] = '\0';
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  /* SIGCHLD stays blocked between fork and sigtimedwait so the child's end
   * cannot slip by unnoticed. */
  sigprocmask(SIG_BLOCK, &chld, &old);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    char buf[64];
    snprintf(why, whylen, "fork: %s", strerror_r(errno, buf, sizeof buf));
    sigprocmask(SIG_SETMASK, &old, NULL);
    return 0;
  }
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    setpgid(0, 0);
    tests[i].fn();
    /* exit(), not _exit(): LeakSanitizer and stdio flushing run at exit,
     * and a leak report turns the exit code non-zero. */
    exit(fq_test_failures ? 1 : 0);
  }
  /* Both sides set the group, so a kill right after fork finds it. */
  setpgid(pid, pid);
  running_pid = pid;
  double deadline = now_s() + timeout_s;
  int done = 0;
  siginfo_t info;
  for (;;) {
    /* WNOWAIT leaves the child a zombie, so its process group id cannot be
     * reused before the kill below. */
    memset(&info, 0, sizeof info);
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) {
      done = 1;
      break;
    }
    double left = deadline - now_s();
    if (left <= 0) break;
    struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
    sigtimedwait(&chld, NULL, &ts); /* a SIGCHLD, EAGAIN or EINTR: look again */
  }
  /* The child on a timeout, and after any end whatever the test started
   * and left running (a server it forked), so nothing outlives its test. */
  kill(-pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  running_pid = 0;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (!done) {
    snprintf(why, whylen, "timed out after %d s", timeout_s);
    return 0;
  }
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    snprintf(why, whylen, "killed by signal %d, %s", sig, strsignal(sig));
    return 0;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    /* 1 is failed checks, which the test printed; anything else is most
     * likely a sanitizer's or the test's own exit. */
    if (WEXITSTATUS(status) != 1) snprintf(why, whylen, "exit code %d", WEXITSTATUS(status));
    return 0;
  }
  return 1;
}

static int run_here(int i) {
  int before = fq_test_failures;
  tests[i].fn();
  return fq_test_failures == before;
}

static int find(const char *name) {
  for (int i = 0; i < ntests; i++)
    if (strcmp(tests[i].name, name) == 0) return i;
  return -1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int nofork = 0, list = 0, first = 1;
  const char *env = getenv("FQ_TEST_NOFORK");
  if (env && *env && strcmp(env, "0") != 0) nofork = 1;
  for (; first < argc && argv[first][0] == '-'; first++) {
    if (strcmp(argv[first], "--no-fork") == 0) {
      nofork = 1;
    } else if (strcmp(argv[first], "--list") == 0) {
      list = 1;
    } else {
      fprintf(stderr, "usage: %s [--no-fork] [--list] [TEST...]\n", argv[0]);
      return 2;
    }
  }
  if (list) {
    for (int i = 0; i < ntests; i++) printf("%s\n", tests[i].name);
    return 0;
  }
  int default_timeout = DEFAULT_TIMEOUT_S;
  env = getenv("FQ_TEST_TIMEOUT");
  if (env && *env) {
    char *end;
    long v = strtol(env, &end, 10);
    if (*end || v <= 0 || v > 86400) {
      fprintf(stderr, "FQ_TEST_TIMEOUT=%s: want seconds, 1 to 86400\n", env);
      return 2;
    }
    default_timeout = (int)v;
  }

  /* The tests to run: the named ones in the order given, or all. */
  static int order[MAX_TESTS];
  int n = 0;
  if (first < argc) {
    for (int j = first; j < argc; j++) {
      int i = find(argv[j]);
      if (i < 0) {
        fprintf(stderr, "no test named %s (--list shows them)\n", argv[j]);
        return 2;
      }
      if (n < MAX_TESTS) order[n++] = i;
    }
  } else {
    for (int i = 0; i < ntests; i++) order[n++] = i;
  }

  if (!nofork) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_handler = on_fatal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
  }

  int passed = 0, failed = 0;
  char failed_names[4096] = "";
  for (int k = 0; k < n; k++) {
    int i = order[k];
    char why[128] = "";
    int ok;
    if (nofork) {
      ok = run_here(i);
    } else {
      int t = tests[i].timeout_s > 0 ? tests[i].timeout_s : default_timeout;
      ok = run_forked(i, t, why, sizeof why);
    }
    if (ok) {
      passed++;
      printf("ok   %s\n", tests[i].name);
    } else {
      failed++;
      if (why[0]) printf("FAIL %s (%s)\n", tests[i].name, why);
      else printf("FAIL %s\n", tests[i].name);
      size_t used = strlen(failed_names);
      snprintf(failed_names + used, sizeof failed_names - used, " %s", tests[i].name);
    }
    fflush(stdout);
  }
  printf("%d passed, %d failed\n", passed, failed);
  if (failed) printf("failed:%s\n", failed_names);
  return failed ? 1 : (passed ? 0 : 1);
}
