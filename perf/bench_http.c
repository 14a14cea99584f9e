/*
 * bench_http: the libcurl-multi ceiling of one shard's HTTP client.
 *
 * Drives fq_http (one thread, one multi handle, the same code path a shard
 * uses) with N requests in flight against a server and reports requests per
 * second per round, the median, and client-thread CPU microseconds per
 * request.  By default it starts a tiny libmicrohttpd server on a loopback
 * port in this process (keep-alive, one epoll thread) that answers like
 * Fleet API's signed_command; with --url it targets any server instead
 * (e.g. fleetsim, with --ca-file for its test CA), so the end-to-end
 * benchmark can state this ceiling for the same simulator in the same run.
 *
 *   bench_http [--inflight N] [--requests N] [--rounds N] [--url URL]
 *              [--method GET|POST] [--token T] [--ca-file PEM]
 *              [--out FILE] [--append]
 *
 * A request counts as ok when it completes with HTTP 200.  Writes a
 * Markdown summary to --out (default perf/results/http.md); --append adds
 * a section instead of replacing the file (several targets, one file).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "util.h"

static const char REPLY[] = "{\"response\":\"MgQIAhADOgQKAggBSgQQASAB\"}";

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
  static int marker;
  (void)cls;
  (void)url;
  (void)method;
  (void)version;
  (void)upload;
  if (*con_cls == NULL) {
    *con_cls = &marker;
    return MHD_YES;
  }
  if (*upload_size) {
    *upload_size = 0; /* body consumed and ignored */
    return MHD_YES;
  }
  struct MHD_Response *r =
      MHD_create_response_from_buffer(sizeof REPLY - 1, (void *)REPLY, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(c, 200, r);
  MHD_destroy_response(r);
  return ret;
}

typedef struct bench {
  fq_http_t *h;
  const char *url, *token;
  bool get;
  long target, started, done, ok, failed;
  const char *body;
  size_t body_len;
} bench_t;

static void on_done(void *ud, const fq_http_resp_t *r);

static int start_one(bench_t *b) {
  uint64_t id;
  fq_err_t err;
  int rc = b->get ? fq_http_get(b->h, b->url, b->token, on_done, b, &id, &err)
                  : fq_http_post_json(b->h, b->url, b->token, b->body, b->body_len, on_done, b,
                                      &id, &err);
  if (rc == 0) b->started++;
  else if (rc != FQ_EBUSY) fprintf(stderr, "submit: %s\n", err.msg);
  return rc;
}

static void on_done(void *ud, const fq_http_resp_t *r) {
  bench_t *b = ud;
  b->done++;
  if (r->outcome == FQ_HTTP_COMPLETE && r->status == 200) b->ok++;
  else {
    if (b->failed++ == 0)
      fprintf(stderr, "first failure: %s, HTTP %ld, %s (after %.1f ms)\n",
              fq_http_outcome_name(r->outcome), r->status, r->err.msg,
              (double)r->elapsed_us / 1000);
  }
  if (b->started < b->target) start_one(b);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double thread_cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  long inflight = 256, requests = 20000, rounds = 5;
  const char *url = NULL, *ca = NULL, *out = "perf/results/http.md", *token = "bench-token";
  bool get = false, append = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--append") == 0) {
      append = true;
      continue;
    }
    if (!v) {
      fprintf(stderr, "usage: %s [--inflight N] [--requests N] [--rounds N] [--url URL] "
                      "[--method GET|POST] [--token T] [--ca-file PEM] [--out FILE] "
                      "[--append]\n", argv[0]);
      return 2;
    }
    if (strcmp(a, "--inflight") == 0) inflight = atol(v);
    else if (strcmp(a, "--requests") == 0) requests = atol(v);
    else if (strcmp(a, "--rounds") == 0) rounds = atol(v);
    else if (strcmp(a, "--url") == 0) url = v;
    else if (strcmp(a, "--ca-file") == 0) ca = v;
    else if (strcmp(a, "--token") == 0) token = v;
    else if (strcmp(a, "--method") == 0) get = strcmp(v, "GET") == 0 || strcmp(v, "get") == 0;
    else if (strcmp(a, "--out") == 0) out = v;
    else {
      fprintf(stderr, "unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  if (inflight < 1 || requests < inflight || rounds < 1 || rounds > 50) {
    fprintf(stderr, "need 1 <= inflight <= requests, 1 <= rounds <= 50\n");
    return 2;
  }

  struct MHD_Daemon *d = NULL;
  char local_url[128];
  if (!url) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* epoll with a pool of two threads, as fleetsim runs: a single epoll
     * thread (libmicrohttpd 0.9.75) was seen to leave a burst of new
     * connections unserved, which would measure the server, not the
     * client. */
    d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, handler, NULL,
                         MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT, 4000u,
                         MHD_OPTION_THREAD_POOL_SIZE, 2u,
                         MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (!d) {
      fprintf(stderr, "cannot start the local server\n");
      return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(local_url, sizeof local_url,
             "http://127.0.0.1:%u/api/1/vehicles/5YJ3E1EA7KF000001/signed_command",
             info ? info->port : 0);
    url = local_url;
  }

  fq_err_t err;
  fq_http_opts_t o = {.ca_file = ca, .max_inflight = (unsigned)inflight};
  fq_http_t *h = fq_http_new(&o, &err);
  if (!h) {
    fprintf(stderr, "fq_http_new: %s\n", err.msg);
    return 1;
  }
  static const char body[] =
      "{\"routable_message\":\"EgQIAhADGiAKHgoQ4b6w8m0P3xvV2rQn8p6Q9RIKCAESBgoEEAEYASocChoKBAg"
      "BEAESEgoQc2lnbmF0dXJlLWJ5dGVzLTEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MA==\"}";
  double rps[50], cpu[50];
  long total_failed = 0;
  printf("bench_http: %s, %ld in flight, %ld requests x %ld rounds\n", url, inflight, requests,
         rounds);
  for (long r = 0; r < rounds; r++) {
    bench_t b = {.h = h, .url = url, .token = token, .get = get, .target = requests, .body = body,
                 .body_len = sizeof body - 1};
    double c0 = thread_cpu_us();
    int64_t t0 = fq_mono_ns();
    for (long i = 0; i < inflight; i++) start_one(&b);
    int64_t deadline = t0 + 120LL * 1000000000;
    while (b.done < b.target && fq_mono_ns() < deadline) {
      if (fq_http_run_once(h, 100, &err) < 0) {
        fprintf(stderr, "run: %s\n", err.msg);
        break;
      }
    }
    double secs = (double)(fq_mono_ns() - t0) / 1e9;
    rps[r] = (double)b.ok / secs;
    cpu[r] = (thread_cpu_us() - c0) / (double)(b.done ? b.done : 1);
    total_failed += b.failed + (b.target - b.done);
    printf("  round %ld: %ld ok, %ld failed, %.0f req/s, %.1f client CPU us/req\n", r + 1, b.ok,
           b.failed, rps[r], cpu[r]);
  }
  double srt[50], scpu[50];
  memcpy(srt, rps, sizeof rps);
  memcpy(scpu, cpu, sizeof cpu);
  qsort(srt, (size_t)rounds, sizeof srt[0], cmp_double);
  qsort(scpu, (size_t)rounds, sizeof scpu[0], cmp_double);
  double med = srt[rounds / 2], medcpu = scpu[rounds / 2];
  printf("median: %.0f req/s, %.1f client CPU us/req, %ld failed in total\n", med, medcpu,
         total_failed);

  FILE *f = fopen(out, append ? "a" : "w");
  if (f) {
    struct utsname u;
    uname(&u);
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    if (!append) fprintf(f, "# libcurl multi ceiling (bench_http)\n");
    fprintf(f, "\n## %s %s\n\n", get ? "GET" : "POST", d ? "local libmicrohttpd server" : url);
    double la[1] = {0};
    if (getloadavg(la, 1) < 1) la[0] = -1;
    fprintf(f, "Measured %s on %s %s (%ld CPUs online, load average %.1f at the end: the "
               "machine is shared, so rounds vary), libcurl %s.\n\n", when, u.sysname, u.release,
            sysconf(_SC_NPROCESSORS_ONLN), la[0], curl_version_info(CURLVERSION_NOW)->version);
    if (get)
      fprintf(f, "One fq_http handle on one thread (the shard code path): GET with a bearer "
                 "token, %ld requests in flight, keep-alive, against %s.\n\n", inflight, url);
    else
      fprintf(f, "One fq_http handle on one thread (the shard code path): POST with a bearer "
               "token and a %zu-byte signed_command body, %ld requests in flight, keep-alive, "
               "against %s.\n\n", sizeof body - 1, inflight,
            d ? "a libmicrohttpd server on loopback in the same process (epoll, a pool of "
                "two threads, HTTP/1.1)" : url);
    fprintf(f, "| round | requests/s | client CPU us/request |\n|---:|---:|---:|\n");
    for (long r = 0; r < rounds; r++) fprintf(f, "| %ld | %.0f | %.1f |\n", r + 1, rps[r], cpu[r]);
    fprintf(f, "\n**Median: %.0f requests/s, %.1f client CPU us per request** "
               "(%ld requests per round, %ld failed in total).\n\n", med, medcpu, requests,
            total_failed);
    fprintf(f, "The machine has 2 cores shared with other work, and the server runs on the same "
               "machine, so this is a floor on what one shard's client can do, not a Fleet API "
               "figure.\n\nRe-run: `build/bin/bench_http --inflight %ld --requests %ld --rounds "
               "%ld%s%s%s` (add `--url URL [--method GET] [--token T] [--ca-file PEM]` for a "
               "simulator).\n", inflight, requests, rounds, d ? "" : " --url ", d ? "" : url,
            get ? " --method GET" : "");
    fclose(f);
    printf("wrote %s\n", out);
  } else {
    fprintf(stderr, "cannot write %s: %s\n", out, fq_strerror(-errno));
  }
  fq_http_destroy(&h);
  if (d) MHD_stop_daemon(d);
  return total_failed ? 1 : 0;
}
