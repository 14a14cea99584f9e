/*
 * fq_cluster_probe: fq_cluster (src/cluster) driven from the command line,
 * for tests/integration/test_cluster_lease.py against real nats-servers.
 * Every line it prints is "word key=value ...", flushed, with wall times
 * in unix ms (t=, sent=) so the test can line events of several probes
 * up with its own clock.
 *
 *   fq_cluster_probe URLS NODE ensure SHARD...
 *   fq_cluster_probe URLS NODE contend SHARD SECONDS
 *       take the lease when free (every 250 ms), renew every TTL/3;
 *       prints taken / renewed / stop (may no longer act) / lost
 *   fq_cluster_probe URLS NODE append SHARD EXPECTED TERM TEXT
 *       exit 0 "ok seq=N", 3 fenced, 4 unavailable, 1 other
 *   fq_cluster_probe URLS NODE last SHARD
 *   fq_cluster_probe URLS NODE follow SHARD FROM COUNT WAIT_MS
 *       prints "msg seq=N len=L text" per message; exit 2 when fewer came
 *   fq_cluster_probe URLS NODE bench SHARD N SIZE PAUSE_MS
 *       N appends in a row (each expecting the last), a retry of an
 *       unavailable one with the same term until it lands (20 s at most);
 *       bodies "i=<k>" padded to SIZE; prints latency quantiles
 *
 * FQ_CL_TTL_MS sets the lease TTL (default 3000), FQ_CL_TIMEOUT_MS the
 * request timeout (default 2000).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "cluster.h"
#include "util.h"

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static int usage(void) {
  fprintf(stderr, "usage: fq_cluster_probe URLS NODE ensure|contend|append|last|follow|bench ...\n");
  return 1;
}

static int fail(const char *what, int rc, const fq_err_t *e) {
  printf("error op=%s code=%d %s (%s)\n", what, rc, e->msg, fq_cl_strerror(rc));
  fflush(stdout);
  return rc == FQ_CL_EFENCED ? 3 : rc == FQ_CL_EUNAVAIL ? 4 : 1;
}

static int cmd_contend(fq_cl_t *c, unsigned shard, int64_t seconds) {
  fq_err_t e;
  int rc = fq_cl_ensure_leases(c, &e);
  if (rc) return fail("ensure_leases", rc, &e);
  char endpoint[64];
  snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", (int)(getpid() % 50000) + 10000);
  int64_t ttl_ns = fq_cl_lease_ttl_ms(c) * 1000000;
  int64_t end = fq_mono_ns() + seconds * 1000000000;
  int64_t next_take = 0;
  fq_cl_lease_t l = {.shard = shard};
  bool acting = false;
  while (fq_mono_ns() < end) {
    int64_t now = fq_mono_ns();
    if (!l.held) {
      if (now >= next_take) {
        next_take = now + 250 * 1000000;
        int64_t wall = fq_now_ms();
        rc = fq_cl_lease_take(c, shard, endpoint, &l, &e);
        if (rc == 0) {
          printf("taken rev=%" PRIu64 " sent=%" PRId64 " t=%" PRId64 "\n", l.rev, wall,
                 fq_now_ms());
          acting = true;
        } else if (rc != FQ_CL_ELEASE) {
          printf("take_error %s\n", e.msg);
        }
        fflush(stdout);
      }
    } else {
      /* The check a shard makes before every batch. */
      bool may = fq_cl_lease_may_act(c, &l, now);
      if (acting && !may) {
        printf("stop t=%" PRId64 " since_renew_ms=%" PRId64 "\n", fq_now_ms(),
               (now - l.sent_ns) / 1000000);
        fflush(stdout);
      }
      acting = may;
      if (now - l.sent_ns >= ttl_ns / 3) {
        int64_t wall = fq_now_ms();
        uint64_t before = l.rev;
        rc = fq_cl_lease_renew(c, &l, endpoint, &e);
        if (rc == 0) {
          printf("renewed rev=%" PRIu64 " sent=%" PRId64 "\n", l.rev, wall);
          if (!acting) printf("act t=%" PRId64 "\n", fq_now_ms());
          acting = fq_cl_lease_may_act(c, &l, fq_mono_ns());
        } else if (rc == FQ_CL_ELEASE) {
          printf("lost t=%" PRId64 " rev=%" PRIu64 " %s\n", fq_now_ms(), before, e.msg);
          acting = false;
          next_take = fq_mono_ns() + 250 * 1000000;
        } else {
          printf("renew_error t=%" PRId64 " %s\n", fq_now_ms(), e.msg);
        }
        fflush(stdout);
      }
    }
    sleep_ms(20);
  }
  if (l.held) {
    rc = fq_cl_lease_release(c, &l, &e);
    printf("released rc=%d\n", rc);
  }
  printf("done\n");
  fflush(stdout);
  return 0;
}

static int print_msg(void *ud, uint64_t seq, const uint8_t *p, size_t n) {
  (void)ud;
  size_t show = n < 64 ? n : 64;
  printf("msg seq=%" PRIu64 " len=%zu %.*s\n", seq, n, (int)show, (const char *)p);
  return 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmd_bench(fq_cl_t *c, unsigned shard, long n, long size, long pause_ms) {
  fq_err_t e;
  uint64_t last = 0;
  int rc = fq_cl_last_seq(c, shard, &last, &e);
  if (rc) return fail("last", rc, &e);
  if (size < 16) size = 16;
  uint8_t *body = malloc((size_t)size);
  int64_t *lat = calloc((size_t)n, sizeof *lat);
  if (!body || !lat) return 1;
  memset(body, '.', (size_t)size);
  uint64_t first = last + 1;
  long retries = 0, fenced = 0;
  int64_t worst_gap_start = 0, worst_gap = 0;
  for (long i = 0; i < n; i++) {
    int len = snprintf((char *)body, 16, "i=%ld", i);
    body[len] = ' ';
    int64_t t0 = fq_mono_ns(), give_up = t0 + INT64_C(20000000000);
    uint64_t seq = 0;
    for (;;) {
      rc = fq_cl_append(c, shard, body, (size_t)size, last, 1, &seq, &e);
      if (rc != FQ_CL_EUNAVAIL || fq_mono_ns() > give_up) break;
      retries++;
      sleep_ms(50);
    }
    int64_t dt = fq_mono_ns() - t0;
    lat[i] = dt;
    if (dt > worst_gap) {
      worst_gap = dt;
      worst_gap_start = fq_now_ms() - dt / 1000000;
    }
    if (rc == FQ_CL_EFENCED) fenced++;
    if (rc) {
      printf("bench_failed i=%ld t=%" PRId64 " %s\n", i, fq_now_ms(), e.msg);
      fflush(stdout);
      free(body);
      free(lat);
      return fail("append", rc, &e);
    }
    last = seq;
    if (i % 50 == 0) {
      printf("progress i=%ld seq=%" PRIu64 " t=%" PRId64 "\n", i, seq, fq_now_ms());
      fflush(stdout);
    }
    if (pause_ms > 0) sleep_ms(pause_ms);
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
  printf("bench n=%ld size=%ld first=%" PRIu64 " last=%" PRIu64 " median_us=%" PRId64
         " p90_us=%" PRId64 " p99_us=%" PRId64 " max_us=%" PRId64 " retries=%ld fenced=%ld"
         " worst_at=%" PRId64 "\n",
         n, size, first, last, lat[n / 2] / 1000, lat[n * 9 / 10] / 1000, lat[n * 99 / 100] / 1000,
         lat[n - 1] / 1000, retries, fenced, worst_gap_start);
  fflush(stdout);
  free(body);
  free(lat);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) return usage();
  setvbuf(stdout, NULL, _IOLBF, 0);
  fq_cl_opts_t o;
  fq_cl_opts_init(&o);
  o.urls = argv[1];
  o.node_id = argv[2];
  const char *ttl = getenv("FQ_CL_TTL_MS");
  if (ttl) o.lease_ttl_ms = strtoll(ttl, NULL, 10);
  /* A renew that hangs must not hide the "stop" of this one-thread probe
   * (fleetqd renews on a thread of its own). */
  const char *tmo = getenv("FQ_CL_TIMEOUT_MS");
  if (tmo) o.timeout_ms = strtoll(tmo, NULL, 10);
  const char *cmd = argv[3];
  fq_err_t e;
  fq_cl_t *c = NULL;
  int rc = fq_cl_connect(&o, &c, &e);
  if (rc) return fail("connect", rc, &e);
  int ex = 0;
  if (!strcmp(cmd, "ensure") && argc >= 5) {
    rc = fq_cl_ensure_leases(c, &e);
    if (rc) ex = fail("ensure_leases", rc, &e);
    for (int i = 4; !ex && i < argc; i++) {
      rc = fq_cl_ensure_shard(c, (unsigned)atoi(argv[i]), &e);
      if (rc) ex = fail("ensure_shard", rc, &e);
    }
    if (!ex) printf("ensured\n");
  } else if (!strcmp(cmd, "contend") && argc == 6) {
    ex = cmd_contend(c, (unsigned)atoi(argv[4]), strtoll(argv[5], NULL, 10));
  } else if (!strcmp(cmd, "append") && argc == 8) {
    uint64_t seq = 0;
    const char *text = argv[7];
    rc = fq_cl_append(c, (unsigned)atoi(argv[4]), (const uint8_t *)text, strlen(text),
                      strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10), &seq, &e);
    if (rc) ex = fail("append", rc, &e);
    else printf("ok seq=%" PRIu64 "\n", seq);
  } else if (!strcmp(cmd, "last") && argc == 5) {
    uint64_t seq = 0;
    rc = fq_cl_last_seq(c, (unsigned)atoi(argv[4]), &seq, &e);
    if (rc) ex = fail("last", rc, &e);
    else printf("last seq=%" PRIu64 "\n", seq);
  } else if (!strcmp(cmd, "follow") && argc == 8) {
    fq_cl_follow_t *f = NULL;
    /* Opening needs the JetStream meta leader: right after a server died
     * there may be none for a few seconds (a follower retries, as here). */
    int64_t until = fq_mono_ns() + INT64_C(20000000000);
    while ((rc = fq_cl_follow_open(c, (unsigned)atoi(argv[4]), strtoull(argv[5], NULL, 10), &f,
                                   &e)) == FQ_CL_EUNAVAIL &&
           fq_mono_ns() < until) {
      printf("follow_retry %s\n", e.msg);
      sleep_ms(200);
    }
    if (rc) {
      ex = fail("follow", rc, &e);
    } else {
      size_t want = strtoull(argv[6], NULL, 10), total = 0, got = 0;
      /* WAIT_MS: how long without a new message before giving up; each
       * call waits at most a second, as a standby would. */
      int64_t wait = strtoll(argv[7], NULL, 10);
      int64_t idle_until = fq_mono_ns() + wait * 1000000;
      while (total < want && fq_mono_ns() < idle_until) {
        rc = fq_cl_follow_next(f, want - total, wait < 1000 ? wait : 1000, print_msg, NULL, &got,
                               &e);
        if (rc == FQ_CL_EUNAVAIL) { /* no meta leader yet to make the consumer again */
          printf("follow_retry %s\n", e.msg);
          sleep_ms(200);
          continue;
        }
        if (rc) {
          ex = fail("follow", rc, &e);
          break;
        }
        if (got) idle_until = fq_mono_ns() + wait * 1000000;
        total += got;
      }
      if (!ex) {
        printf("followed n=%zu pos=%" PRIu64 " resubs=%" PRIu64 "\n", total, fq_cl_follow_pos(f),
               fq_cl_follow_resubs(f));
        if (total < want) ex = 2;
      }
      fq_cl_follow_close(&f);
    }
  } else if (!strcmp(cmd, "bench") && argc == 8) {
    ex = cmd_bench(c, (unsigned)atoi(argv[4]), atol(argv[5]), atol(argv[6]), atol(argv[7]));
  } else {
    ex = usage();
  }
  fq_cl_close(&c);
  nats_Close();
  return ex;
}
