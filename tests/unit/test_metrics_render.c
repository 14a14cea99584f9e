/*
 * Unit tests of the metrics (metrics.c): --metrics address parsing, the
 * exposition text after known updates (names, labels, escaping, the
 * histogram's cumulative buckets, error names as a client sees them), the
 * per-account table past its capacity, and exact counts under concurrent
 * updates while another thread renders (the HTTP thread's part).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/wire.h"
#include "fq_test.h"
#include "metrics.h"
#include "util.h"

static char *render(void) {
  size_t len = 0;
  char *t = fq_metrics_render(2, &len);
  CHECK(t != NULL);
  if (t) CHECK_INT(strlen(t), len);
  return t;
}

/* True when text holds line as a whole line. */
static bool has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
    if ((p == text || p[-1] == '\n') && p[n] == '\n') return true;
  return false;
}

#define CHECK_LINE(text, line)                                             \
  do {                                                                     \
    if (!has_line((text), (line))) FQ__FAIL("line missing: %s", (line));   \
  } while (0)

FQ_TEST(parse_addr_forms) {
  struct sockaddr_storage sa;
  socklen_t sl;
  fq_err_t err;
  char ip[64];
  struct {
    const char *spec, *ip;
    int family, port;
  } ok[] = {{"9464", "127.0.0.1", AF_INET, 9464},
            {":9464", "127.0.0.1", AF_INET, 9464},
            {"localhost:1", "127.0.0.1", AF_INET, 1},
            {"0.0.0.0:65535", "0.0.0.0", AF_INET, 65535},
            {"10.1.2.3:80", "10.1.2.3", AF_INET, 80},
            {"[::1]:9464", "::1", AF_INET6, 9464},
            {"[::]:9464", "::", AF_INET6, 9464}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    fq_err_clear(&err);
    int rc = fq_metrics_parse_addr(ok[i].spec, &sa, &sl, &err);
    CHECK_INT(rc, 0);
    if (rc) {
      fprintf(stderr, "  %s: %s\n", ok[i].spec, err.msg);
      continue;
    }
    CHECK_INT(sa.ss_family, ok[i].family);
    if (sa.ss_family == AF_INET) {
      struct sockaddr_in *v4 = (struct sockaddr_in *)&sa;
      inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
      CHECK_INT(ntohs(v4->sin_port), ok[i].port);
      CHECK_INT(sl, sizeof *v4);
    } else {
      struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sa;
      inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
      CHECK_INT(ntohs(v6->sin6_port), ok[i].port);
    }
    CHECK_STR(ip, ok[i].ip);
  }
  const char *bad[] = {"", "0", ":0", "65536", "abc", "1.2.3.4:", "1.2.3.4:80x", "host:80",
                       "::1:80", "[::1]80", "[::1:80", "[nope]:80", "1.2.3.4:-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fq_err_clear(&err);
    int rc = fq_metrics_parse_addr(bad[i], &sa, &sl, &err);
    if (rc != FQ_ECONFIG) FQ__FAIL("\"%s\": rc %d, want FQ_ECONFIG", bad[i], rc);
    CHECK(strncmp(err.msg, "metrics: ", 9) == 0);
  }
}

FQ_TEST(render_after_known_updates) {
  fq_metrics_reset();
  for (int i = 0; i < 3; i++) fq_metrics_submit(FQ_METRICS_ACCEPTED);
  fq_metrics_submit(FQ_METRICS_DUPLICATE);
  fq_metrics_submit(FQ_EBADPARAM);
  fq_metrics_submit(FQ_EBADPARAM);
  /* Internal on the wire: counted under the name a client saw. */
  fq_metrics_submit(FQ_ESTORAGE);
  fq_metrics_submit(-12); /* an errno */
  fq_metrics_ack_ns(300000);    /* 0.3 ms: le 0.0005 */
  fq_metrics_ack_ns(2000000);   /* 2 ms: le 0.0025 */
  fq_metrics_ack_ns(20000000000LL); /* 20 s: +Inf only */
  fq_metrics_terminal(FQ_ST_SUCCEEDED, 700);
  fq_metrics_terminal(FQ_ST_FAILED, 40);
  fq_metrics_shard_load(1, 7, 2);
  fq_metrics_shard_scheduled(1, 4);
  uint64_t camps[5] = {0, 1, 2, 3, 0};
  fq_metrics_campaigns(camps);
  fq_metrics_campaign_commands(3);
  fq_metrics_campaign_commands(4);
  fq_metrics_shard_store(0, 1 << 20, 4 << 20);
  fq_metrics_fleet_api(FQ_MK_SIGNED_COMMAND, 200, "acct-a");
  fq_metrics_fleet_api(FQ_MK_SIGNED_COMMAND, 200, "acct-a");
  fq_metrics_fleet_api(FQ_MK_WAKE_UP, 200, "acct-a");
  fq_metrics_fleet_api(FQ_MK_VEHICLE, 408, "acct-a");
  fq_metrics_fleet_api(FQ_MK_ENERGY, 503, "acct-a");  /* not billed */
  fq_metrics_fleet_api(FQ_MK_COMMAND, 0, "acct-a");   /* no answer: not billed */
  fq_metrics_fleet_api(FQ_MK_TOKEN, 200, NULL);        /* not Fleet API */
  fq_metrics_fleet_api(FQ_MK_COMMAND, 429, "we\"ird\\one\nx");
  fq_metrics_token_refresh(FQ_MR_OK);
  fq_metrics_token_refresh(FQ_MR_REJECTED);
  fq_metrics_events(5);
  /* Two group commits of shard 1 (3 and 40 requests) and a batch with
   * no request (timers only: busy time, no histogram entry). */
  fq_metrics_batch(1, 3, 200000, 1500000, 1800000);     /* 0.2 ms, 1.5 ms, 1.8 ms */
  fq_metrics_batch(1, 40, 3000000, 30000000, 34000000); /* 3 ms, 30 ms, 34 ms */
  fq_metrics_batch(1, 0, 0, 0, 200000);
  int64_t t0 = fq_mono_ns();
  char *t = render();
  fprintf(stderr, "  render with 2 accounts: %.3f ms\n", (double)(fq_mono_ns() - t0) / 1e6);
  if (!t) return;
  CHECK_LINE(t, "# TYPE fleetq_submits_total counter");
  CHECK_LINE(t, "fleetq_submits_total{result=\"accepted\"} 3");
  CHECK_LINE(t, "fleetq_submits_total{result=\"duplicate\"} 1");
  CHECK_LINE(t, "fleetq_submits_total{result=\"bad_param\"} 2");
  CHECK_LINE(t, "fleetq_submits_total{result=\"internal\"} 2");
  CHECK(!strstr(t, "storage_error"));
  CHECK_LINE(t, "fleetq_commands_total{state=\"succeeded\"} 1");
  CHECK_LINE(t, "fleetq_commands_total{state=\"failed\"} 1");
  CHECK_LINE(t, "fleetq_commands_total{state=\"superseded\"} 0");
  CHECK(!strstr(t, "state=\"queued\""));
  CHECK_LINE(t, "fleetq_commands_queued{shard=\"1\"} 5");
  CHECK_LINE(t, "fleetq_commands_in_flight{shard=\"1\"} 2");
  CHECK_LINE(t, "fleetq_commands_queued{shard=\"0\"} 0");
  CHECK_LINE(t, "fleetq_commands_scheduled{shard=\"1\"} 4");
  CHECK_LINE(t, "fleetq_commands_scheduled{shard=\"0\"} 0");
  CHECK_LINE(t, "fleetq_campaigns{state=\"running\"} 2");
  CHECK_LINE(t, "fleetq_campaigns{state=\"aborted\"} 0");
  CHECK_LINE(t, "fleetq_campaign_device_commands_total 7");
  CHECK(!strstr(t, "shard=\"2\""));
  CHECK_LINE(t, "fleetq_store_bytes{shard=\"0\"} 1048576");
  CHECK_LINE(t, "fleetq_store_map_used_ratio{shard=\"0\"} 0.250000");
  CHECK_LINE(t, "# TYPE fleetq_ack_seconds histogram");
  CHECK_LINE(t, "fleetq_ack_seconds_bucket{le=\"0.00025\"} 0");
  CHECK_LINE(t, "fleetq_ack_seconds_bucket{le=\"0.0005\"} 1");
  CHECK_LINE(t, "fleetq_ack_seconds_bucket{le=\"0.0025\"} 2");
  CHECK_LINE(t, "fleetq_ack_seconds_bucket{le=\"10\"} 2");
  CHECK_LINE(t, "fleetq_ack_seconds_bucket{le=\"+Inf\"} 3");
  CHECK_LINE(t, "fleetq_ack_seconds_count 3");
  CHECK_LINE(t, "fleetq_ack_seconds_sum 20.0023");
  CHECK_LINE(t, "fleetq_dispatch_seconds_bucket{le=\"0.05\"} 1");
  CHECK_LINE(t, "fleetq_dispatch_seconds_bucket{le=\"1\"} 2");
  CHECK_LINE(t, "fleetq_dispatch_seconds_sum 0.74");
  CHECK_LINE(t, "# TYPE fleetq_batch_requests histogram");
  CHECK_LINE(t, "fleetq_batch_requests_bucket{le=\"2\"} 0");
  CHECK_LINE(t, "fleetq_batch_requests_bucket{le=\"4\"} 1");
  CHECK_LINE(t, "fleetq_batch_requests_bucket{le=\"64\"} 2");
  CHECK_LINE(t, "fleetq_batch_requests_count 2");
  CHECK_LINE(t, "fleetq_batch_requests_sum 43");
  CHECK_LINE(t, "fleetq_batch_process_seconds_bucket{le=\"0.00025\"} 1");
  CHECK_LINE(t, "fleetq_batch_process_seconds_sum 0.0032");
  CHECK_LINE(t, "fleetq_batch_commit_seconds_bucket{le=\"0.0025\"} 1");
  CHECK_LINE(t, "fleetq_batch_commit_seconds_bucket{le=\"0.025\"} 1");
  CHECK_LINE(t, "fleetq_batch_commit_seconds_bucket{le=\"0.05\"} 2");
  CHECK_LINE(t, "fleetq_batch_commit_seconds_sum 0.0315");
  CHECK_LINE(t, "# TYPE fleetq_shard_busy_seconds_total counter");
  CHECK_LINE(t, "fleetq_shard_busy_seconds_total{shard=\"1\"} 0.036");
  CHECK_LINE(t, "fleetq_shard_busy_seconds_total{shard=\"0\"} 0");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"signed_command\",code=\"200\"} 2");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"wake_up\",code=\"200\"} 1");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"vehicle\",code=\"408\"} 1");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"energy\",code=\"503\"} 1");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"command\",code=\"0\"} 1");
  CHECK_LINE(t, "fleetq_fleet_api_requests_total{kind=\"token\",code=\"200\"} 1");
  CHECK_LINE(t, "fleetq_wakeups_total 1");
  CHECK_LINE(t, "fleetq_billable_requests_total{account=\"acct-a\",kind=\"command\"} 2");
  CHECK_LINE(t, "fleetq_billable_requests_total{account=\"acct-a\",kind=\"wake_up\"} 1");
  CHECK_LINE(t, "fleetq_billable_requests_total{account=\"acct-a\",kind=\"data\"} 1");
  CHECK_LINE(t, "fleetq_billable_requests_total{account=\"we\\\"ird\\\\one\\nx\",kind=\"command\"} 1");
  CHECK_LINE(t, "fleetq_token_refreshes_total{result=\"ok\"} 1");
  CHECK_LINE(t, "fleetq_token_refreshes_total{result=\"rejected\"} 1");
  CHECK_LINE(t, "fleetq_events_published_total 5");
  char bi[128];
  snprintf(bi, sizeof bi, "fleetq_build_info{version=\"%s\"} 1", FQ_VERSION);
  CHECK_LINE(t, bi);
  /* Every family has its HELP and TYPE, once. */
  const char *fams[] = {"fleetq_submits_total", "fleetq_commands_total",
                        "fleetq_commands_queued", "fleetq_commands_in_flight",
                        "fleetq_commands_scheduled", "fleetq_campaigns",
                        "fleetq_campaign_device_commands_total",
                        "fleetq_store_bytes", "fleetq_store_map_used_ratio",
                        "fleetq_ack_seconds", "fleetq_dispatch_seconds",
                        "fleetq_fleet_api_requests_total", "fleetq_wakeups_total",
                        "fleetq_billable_requests_total", "fleetq_token_refreshes_total",
                        "fleetq_events_published_total", "fleetq_build_info"};
  for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
    char h[128], ty[128];
    snprintf(h, sizeof h, "# HELP %s ", fams[i]);
    snprintf(ty, sizeof ty, "# TYPE %s ", fams[i]);
    const char *p = strstr(t, h), *q = strstr(t, ty);
    if (!p || !q || strstr(p + 1, h) || strstr(q + 1, ty)) FQ__FAIL("HELP/TYPE of %s", fams[i]);
  }
  free(t);
}

FQ_TEST(accounts_past_capacity) {
  fq_metrics_reset();
  int n = FQ_METRICS_MAX_ACCOUNTS + 1000;
  char name[32];
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "acct-%d", i);
    fq_metrics_fleet_api(FQ_MK_COMMAND, 200, name);
    fq_metrics_fleet_api(FQ_MK_COMMAND, 200, name); /* the same slot again */
  }
  /* What a scrape costs with a full table (logged, not asserted:
   * docs/operations.md quotes it). */
  int64_t t0 = fq_mono_ns();
  char *t = render();
  fprintf(stderr, "  render with %d accounts: %.2f ms, %zu bytes\n", FQ_METRICS_MAX_ACCOUNTS,
          (double)(fq_mono_ns() - t0) / 1e6, t ? strlen(t) : 0);
  if (!t) return;
  /* Every request is counted once: per account, or under _other. */
  unsigned long long sum = 0, v;
  int lines = 0;
  bool other = false;
  for (const char *p = t; (p = strstr(p, "fleetq_billable_requests_total{")) != NULL; p++) {
    const char *sp = strchr(p, '}');
    if (!sp || sscanf(sp + 1, " %llu", &v) != 1) continue;
    sum += v;
    lines++;
    if (!strncmp(p + 31, "account=\"_other\"", 16)) other = true;
    else CHECK_INT(v, 2);
  }
  CHECK_INT(sum, 2ull * (unsigned long long)n);
  CHECK(other);
  CHECK(lines <= FQ_METRICS_MAX_ACCOUNTS + 1);
  free(t);
}

#define THREADS 4
#define PER_THREAD 200000

static void *bump(void *arg) {
  (void)arg;
  for (int i = 0; i < PER_THREAD; i++) {
    fq_metrics_submit(FQ_METRICS_ACCEPTED);
    fq_metrics_ack_ns(i % 5000 * 1000);
    fq_metrics_fleet_api(FQ_MK_SIGNED_COMMAND, 200, i % 2 ? "a" : "b");
  }
  return NULL;
}

static void *scrape(void *arg) {
  _Atomic int *stop = arg;
  while (!atomic_load(stop)) {
    size_t len;
    char *t = fq_metrics_render(2, &len);
    free(t);
  }
  return NULL;
}

FQ_TEST(concurrent_updates_are_exact) {
  fq_metrics_reset();
  pthread_t th[THREADS], sc;
  _Atomic int stop = 0;
  CHECK_INT(pthread_create(&sc, NULL, scrape, (void *)&stop), 0);
  for (int i = 0; i < THREADS; i++) CHECK_INT(pthread_create(&th[i], NULL, bump, NULL), 0);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  atomic_store(&stop, 1);
  pthread_join(sc, NULL);
  char *t = render();
  if (!t) return;
  char line[160];
  snprintf(line, sizeof line, "fleetq_submits_total{result=\"accepted\"} %d", THREADS * PER_THREAD);
  CHECK_LINE(t, line);
  snprintf(line, sizeof line, "fleetq_ack_seconds_count %d", THREADS * PER_THREAD);
  CHECK_LINE(t, line);
  snprintf(line, sizeof line,
           "fleetq_fleet_api_requests_total{kind=\"signed_command\",code=\"200\"} %d",
           THREADS * PER_THREAD);
  CHECK_LINE(t, line);
  snprintf(line, sizeof line, "fleetq_billable_requests_total{account=\"a\",kind=\"command\"} %d",
           THREADS * PER_THREAD / 2);
  CHECK_LINE(t, line);
  free(t);
}
