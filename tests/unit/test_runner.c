/*
 * The forking runner (fq_test.c) proves itself: it runs runner_victim, whose
 * tests crash, abort, exit non-zero, fail a check and hang, and checks that
 * each is reported by name, that the tests after them still run, that a hang
 * is cut at its timeout together with what it started, and that the run
 * exits non-zero.  It also checks --no-fork, FQ_TEST_NOFORK, FQ_TEST_TIMEOUT
 * and an unknown test name.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fq_test.h"

/* The victim binary: $FQ_TEST_VICTIM (ctest sets it), else beside us. */
static const char *victim_path(void) {
  static char path[PATH_MAX];
  const char *env = getenv("FQ_TEST_VICTIM");
  if (env && *env) return env;
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return "fq_test_victim";
  path[n] = '\0';
  char *slash = strrchr(path, '/');
  snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "fq_test_victim");
  return path;
}

struct run {
  char out[16384]; /* stdout and stderr together */
  int status;      /* exit code, or 128 + signal */
  pid_t pid;
  double secs;
};

/* Run the victim with args (NULL-terminated) and, if env_kv is set, that
 * one extra NAME=value in its environment. */
static void run_victim(struct run *r, const char *env_kv, const char *const *args) {
  memset(r, 0, sizeof *r);
  r->status = -1;
  const char *argv[16] = {victim_path()};
  int argc = 1;
  for (; args[argc - 1] && argc < 15; argc++) argv[argc] = args[argc - 1];
  argv[argc] = NULL;
  int fds[2];
  if (pipe(fds) != 0) {
    CHECK(!"pipe");
    return;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    unsetenv("FQ_TEST_NOFORK");
    unsetenv("FQ_TEST_TIMEOUT");
    if (env_kv) putenv((char *)env_kv);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s failed\n", argv[0]);
    _exit(127);
  }
  close(fds[1]);
  r->pid = pid;
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fds[0], r->out + len, sizeof r->out - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    if (len == sizeof r->out - 1) break;
  }
  r->out[len] = '\0';
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  r->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  fprintf(stderr, "  --- %s ... exited %d after %.1f s:\n%s", argv[0], r->status, r->secs,
          r->out);
}

/* out has a line that starts with prefix. */
static int has_line(const char *out, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *p = out; *p;) {
    if (strncmp(p, prefix, n) == 0) return 1;
    const char *nl = strchr(p, '\n');
    if (!nl) break;
    p = nl + 1;
  }
  return 0;
}

#define CHECK_LINE(out, prefix)                                           \
  do {                                                                    \
    if (!has_line(out, prefix)) FQ__FAIL("no line starting \"%s\"", prefix); \
  } while (0)

/* A process that is gone (or a zombie nobody reaps in this container). */
static int process_gone(int pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *close_paren = strrchr(buf, ')');
  return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

FQ_TEST(every_failure_is_named_and_the_run_goes_on) {
  struct run r;
  run_victim(&r, NULL,
             (const char *const[]){"passes", "crashes", "fails_check", "hangs", "aborts",
                                   "exits_23", "prints_pid", NULL});
  CHECK_INT(r.status, 1);
  CHECK_LINE(r.out, "ok   passes");
  CHECK_LINE(r.out, "FAIL crashes (killed by signal 11");
  CHECK_LINE(r.out, "FAIL fails_check");
  CHECK(strstr(r.out, "1 == 2: 1 != 2") != NULL);
  CHECK_LINE(r.out, "FAIL hangs (timed out after 1 s)");
  CHECK_LINE(r.out, "FAIL aborts (killed by signal 6");
  CHECK_LINE(r.out, "FAIL exits_23 (exit code 23)");
  CHECK_LINE(r.out, "ok   prints_pid");
  CHECK_LINE(r.out, "2 passed, 5 failed");
  CHECK_LINE(r.out, "failed: crashes fails_check hangs aborts exits_23");
  /* The hang was cut at its own 1 s, not at the 60 s default. */
  CHECK(r.secs < 20);
  /* Forked: the test ran in a process other than the runner. */
  const char *p = strstr(r.out, "\npid ");
  CHECK(p != NULL);
  if (p) CHECK(atoi(p + 5) != (int)r.pid);
  /* What the hanging test started was killed with it. */
  p = strstr(r.out, "grandchild ");
  CHECK(p != NULL);
  if (p) {
    int gpid = atoi(p + 11);
    CHECK(gpid > 0);
    int gone = 0;
    for (int i = 0; i < 100 && gpid > 0 && !(gone = process_gone(gpid)); i++) usleep(20000);
    if (!gone && gpid > 0) kill(gpid, SIGKILL);
    CHECK(gone);
  }
}

/* A sanitizer's report in the child fails the test: in an ASan build
 * (GCC's __SANITIZE_ADDRESS__, clang's __has_feature) the leak is caught
 * at the child's exit; in a plain build the same test passes. */
#if defined(__SANITIZE_ADDRESS__)
#define FQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FQ_ASAN 1
#endif
#endif
FQ_TEST(a_sanitizer_report_fails_the_test) {
  struct run r;
  run_victim(&r, NULL, (const char *const[]){"leaks", "passes", NULL});
#ifdef FQ_ASAN
  const char *opts = getenv("ASAN_OPTIONS");
  if (opts && strstr(opts, "detect_leaks=0")) {
    fprintf(stderr, "  ASAN_OPTIONS has detect_leaks=0: nothing to check\n");
    return;
  }
  CHECK_INT(r.status, 1);
  CHECK_LINE(r.out, "FAIL leaks");
  CHECK(strstr(r.out, "LeakSanitizer") != NULL);
  CHECK_LINE(r.out, "1 passed, 1 failed");
#else
  CHECK_INT(r.status, 0);
  CHECK_LINE(r.out, "ok   leaks");
  CHECK_LINE(r.out, "2 passed, 0 failed");
#endif
}

FQ_TEST(env_timeout_sets_the_default) {
  struct run r;
  run_victim(&r, "FQ_TEST_TIMEOUT=1", (const char *const[]){"sleeps_3s", NULL});
  CHECK_INT(r.status, 1);
  CHECK_LINE(r.out, "FAIL sleeps_3s (timed out after 1 s)");
  CHECK_LINE(r.out, "0 passed, 1 failed");
  run_victim(&r, NULL, (const char *const[]){"sleeps_3s", NULL});
  CHECK_INT(r.status, 0);
  CHECK_LINE(r.out, "1 passed, 0 failed");
}

FQ_TEST(no_fork_runs_in_process) {
  struct run r;
  run_victim(&r, NULL, (const char *const[]){"--no-fork", "prints_pid", NULL});
  CHECK_INT(r.status, 0);
  CHECK_LINE(r.out, "ok   prints_pid");
  char want[32];
  snprintf(want, sizeof want, "pid %d", (int)r.pid);
  CHECK_LINE(r.out, want);
  run_victim(&r, "FQ_TEST_NOFORK=1", (const char *const[]){"fails_check", "prints_pid", NULL});
  CHECK_INT(r.status, 1);
  CHECK_LINE(r.out, "FAIL fails_check");
  snprintf(want, sizeof want, "pid %d", (int)r.pid);
  CHECK_LINE(r.out, want);
  CHECK_LINE(r.out, "1 passed, 1 failed");
}

FQ_TEST(unknown_name_is_an_error) {
  struct run r;
  run_victim(&r, NULL, (const char *const[]){"passes", "no_such_test", NULL});
  CHECK_INT(r.status, 2);
  CHECK_LINE(r.out, "no test named no_such_test");
  CHECK(!has_line(r.out, "ok   passes"));
  run_victim(&r, NULL, (const char *const[]){"--list", NULL});
  CHECK_INT(r.status, 0);
  CHECK_LINE(r.out, "hangs\n");
  CHECK_LINE(r.out, "crashes\n");
}
