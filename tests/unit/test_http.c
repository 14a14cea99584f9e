/*
 * Unit tests of http.c against a real HTTP server: libmicrohttpd on an
 * ephemeral loopback port, in this process, with handlers for the cases
 * dispatch depends on (200 echo, 429 with Retry-After, slow replies,
 * oversized bodies, a redirect that must not be followed), plus HTTPS with
 * a throwaway CA made by the openssl CLI at test time.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "fq_test.h"
#include "http.h"
#include "util.h"

/* ---- the test server --------------------------------------------------- */

typedef struct srv {
  struct MHD_Daemon *d;
  int port;
  atomic_int conns;        /* connections accepted */
  atomic_int target_hits;  /* hits on /target (must stay 0) */
  atomic_int requests;
  atomic_int drops;        /* hits on /drop, which closes without a reply */
  char last_auth[256];     /* Authorization header of the last /echo */
  char last_ct[128];
} srv_t;

typedef struct upload {
  char buf[8192];
  size_t len;
} upload_t;

static void on_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                    enum MHD_ConnectionNotificationCode toe) {
  srv_t *s = cls;
  (void)c;
  (void)socket_context;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) atomic_fetch_add(&s->conns, 1);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  free(*con_cls);
  *con_cls = NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
                             const char *h1, const char *v1) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  if (h1) MHD_add_response_header(r, h1, v1);
  MHD_add_response_header(r, "Content-Type", "application/json");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* Chunked body of `left` bytes, no Content-Length, so only the write cap
 * can stop it. */
static ssize_t chunk_gen(void *cls, uint64_t pos, char *buf, size_t max) {
  size_t total = (size_t)(uintptr_t)cls;
  if (pos >= total) return MHD_CONTENT_READER_END_OF_STREAM;
  size_t n = total - (size_t)pos < max ? total - (size_t)pos : max;
  memset(buf, 'x', n);
  return (ssize_t)n;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version,
                               const char *upload_data, size_t *upload_size, void **con_cls) {
  srv_t *s = cls;
  (void)version;
  if (*con_cls == NULL) {
    upload_t *u = calloc(1, sizeof *u);
    if (!u) return MHD_NO;
    *con_cls = u;
    return MHD_YES;
  }
  upload_t *u = *con_cls;
  if (*upload_size) {
    size_t n = *upload_size;
    if (u->len + n < sizeof u->buf) {
      memcpy(u->buf + u->len, upload_data, n);
      u->len += n;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  atomic_fetch_add(&s->requests, 1);
  const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "n");
  long n = arg ? atol(arg) : 0;
  if (strcmp(url, "/echo") == 0) {
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    snprintf(s->last_auth, sizeof s->last_auth, "%s", a ? a : "");
    snprintf(s->last_ct, sizeof s->last_ct, "%s", ct ? ct : "");
    char body[9000];
    snprintf(body, sizeof body, "%s:%.*s", method, (int)u->len, u->buf);
    return reply(c, 200, body, NULL, NULL);
  }
  if (strcmp(url, "/429") == 0) {
    struct MHD_Response *r = MHD_create_response_from_buffer(
        2, (void *)"{}", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Retry-After", "7");
    MHD_add_response_header(r, "RateLimit-Reset", "45");
    MHD_add_response_header(r, "Alt-Svc", "h2=https://fleet-api.prd.eu.vn.cloud.tesla.com");
    enum MHD_Result ret = MHD_queue_response(c, 429, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (strcmp(url, "/slow") == 0) {
    usleep((useconds_t)(n > 0 ? n : 1000) * 1000);
    return reply(c, 200, "{\"slow\":true}", NULL, NULL);
  }
  if (strcmp(url, "/big") == 0) {
    char *b = malloc((size_t)n + 1);
    if (!b) return MHD_NO;
    memset(b, 'y', (size_t)n);
    struct MHD_Response *r =
        MHD_create_response_from_buffer((size_t)n, b, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (strcmp(url, "/chunked") == 0) {
    struct MHD_Response *r = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, 4096, chunk_gen, (void *)(uintptr_t)n, NULL);
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (strcmp(url, "/drop") == 0) {
    /* Read the whole request, then hang up without answering: the server
     * got the command and the reply is lost. */
    atomic_fetch_add(&s->drops, 1);
    return MHD_NO;
  }
  if (strcmp(url, "/redirect") == 0) return reply(c, 302, "{}", "Location", "/target");
  if (strcmp(url, "/target") == 0) {
    atomic_fetch_add(&s->target_hits, 1);
    return reply(c, 200, "{}", NULL, NULL);
  }
  return reply(c, 404, "{\"error\":\"not found\"}", NULL, NULL);
}

/* Start a server on 127.0.0.1:ephemeral; with key/cert PEM for HTTPS. */
static int srv_start(srv_t *s, const char *key_pem, const char *cert_pem) {
  memset(s, 0, sizeof *s);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
  if (key_pem) flags |= MHD_USE_TLS;
  if (key_pem)
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_CONNECTION, on_conn, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, 2000u,
                            MHD_OPTION_HTTPS_MEM_KEY, key_pem, MHD_OPTION_HTTPS_MEM_CERT,
                            cert_pem, MHD_OPTION_END);
  else
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, s, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_CONNECTION, on_conn, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
                            MHD_OPTION_CONNECTION_LIMIT, 2000u, MHD_OPTION_END);
  if (!s->d) return -1;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : 0;
  return s->port ? 0 : -1;
}

static void srv_stop(srv_t *s) {
  if (s->d) MHD_stop_daemon(s->d);
  s->d = NULL;
}

/* ---- client side helpers ----------------------------------------------- */

#define MAXR 512
typedef struct results {
  int done;
  fq_http_resp_t r[MAXR];
  char body[MAXR][512];
} results_t;

static void collect(void *ud, const fq_http_resp_t *resp) {
  results_t *res = ud;
  if (res->done < MAXR) {
    res->r[res->done] = *resp;
    snprintf(res->body[res->done], sizeof res->body[0], "%.*s",
             (int)(resp->body_len < 500 ? resp->body_len : 500), (const char *)resp->body);
    res->r[res->done].body = NULL;
  }
  res->done++;
}

/* Drive h until `want` callbacks ran or 10 s passed. */
static void run_until(fq_http_t *h, results_t *res, int want) {
  int64_t end = fq_mono_ns() + 10 * 1000000000LL;
  fq_err_t err;
  while (res->done < want && fq_mono_ns() < end) {
    int rc = fq_http_run_once(h, 100, &err);
    if (rc < 0) {
      fprintf(stderr, "  run_once: %s\n", err.msg);
      break;
    }
  }
}

static void url(char *out, size_t n, const char *scheme, const srv_t *s, const char *path) {
  snprintf(out, n, "%s://127.0.0.1:%d%s", scheme, s->port, path);
}

static results_t *new_results(void) { return calloc(1, sizeof(results_t)); }

/* ---- plain HTTP ---------------------------------------------------------- */

FQ_TEST(http_post_json_sends_headers_and_body) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  CHECK(h != NULL);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/echo");
  uint64_t id = 0;
  const char *body = "{\"routable_message\":\"AAAA\"}";
  CHECK_INT(fq_http_post_json(h, u, "tok-123", body, strlen(body), collect, res, &id, &err), 0);
  CHECK(id != 0);
  CHECK_INT(fq_http_inflight(h), 1);
  CHECK_INT(res->done, 0); /* never called from inside the submit */
  run_until(h, res, 1);
  CHECK_INT(res->done, 1);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[0].status, 200);
  CHECK(res->r[0].id == id);
  CHECK_STR(res->body[0], "POST:{\"routable_message\":\"AAAA\"}");
  CHECK_STR(s.last_auth, "Bearer tok-123");
  CHECK_STR(s.last_ct, "application/json");
  CHECK_INT(fq_http_inflight(h), 0);

  /* GET without a token sends no Authorization header. */
  CHECK_INT(fq_http_get(h, u, NULL, collect, res, &id, &err), 0);
  run_until(h, res, 2);
  CHECK_STR(res->body[1], "GET:");
  CHECK_STR(s.last_auth, "");
  /* Tesla's Fleet API wants Content-Type: application/json on GETs too
   * (the server records each request's own, "" when absent). */
  CHECK_STR(s.last_ct, "application/json");
  /* A GET with a token carries both. */
  CHECK_INT(fq_http_get(h, u, "tok-456", collect, res, &id, &err), 0);
  run_until(h, res, 3);
  CHECK_STR(res->body[2], "GET:");
  CHECK_STR(s.last_auth, "Bearer tok-456");
  CHECK_STR(s.last_ct, "application/json");
  /* A token with a line break cannot inject a header. */
  CHECK_INT(fq_http_post_json(h, u, "a\r\nX-Evil: 1", "{}", 2, collect, res, &id, &err),
            FQ_EBADPARAM);
  CHECK_INT(fq_http_post_json(h, "ftp://127.0.0.1/", NULL, "{}", 2, collect, res, &id, &err),
            FQ_EBADPARAM);
  CHECK_INT(fq_http_inflight(h), 0);
  free(res);
  fq_http_destroy(&h);
  CHECK(h == NULL);
  srv_stop(&s);
}

FQ_TEST(http_429_headers_are_reported) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/429");
  uint64_t id;
  CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[0].status, 429);
  CHECK_STR(res->r[0].retry_after, "7");
  CHECK_STR(res->r[0].ratelimit_reset, "45");
  CHECK_STR(res->r[0].alt_svc, "h2=https://fleet-api.prd.eu.vn.cloud.tesla.com");
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_redirect_is_not_followed) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/redirect");
  uint64_t id;
  CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[0].status, 302);
  CHECK_STR(res->r[0].location, "/target");
  usleep(100000);
  CHECK_INT(atomic_load(&s.target_hits), 0);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_timeout_after_send_is_unknown) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/slow?n=1500");
  fq_http_req_t req = {.method = FQ_HTTP_POST, .url = u, .bearer = "t", .body = "{}",
                       .body_len = 2, .timeout_ms = 300};
  uint64_t id;
  int64_t t0 = fq_mono_ns();
  CHECK_INT(fq_http_request(h, &req, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  int64_t ms = (fq_mono_ns() - t0) / 1000000;
  CHECK_INT(res->r[0].outcome, FQ_HTTP_UNKNOWN);
  CHECK_INT(res->r[0].status, 0);
  CHECK_INT(res->r[0].curl_code, 28); /* CURLE_OPERATION_TIMEDOUT */
  CHECK_INT(res->r[0].err.code, FQ_EHTTP);
  CHECK(ms >= 250 && ms < 1400);
  if (!(ms >= 250 && ms < 1400)) fprintf(stderr, "  elapsed %lld ms\n", (long long)ms);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

/* A reused keep-alive connection that dies after the request reached the
 * server: curl would normally re-send on a fresh connection; fq_http must
 * not (the server already has the command) and must report unknown. */
FQ_TEST(http_no_silent_resend_on_reused_connection) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u1[128], u2[128];
  url(u1, sizeof u1, "http", &s, "/echo");
  url(u2, sizeof u2, "http", &s, "/drop");
  uint64_t id;
  CHECK_INT(fq_http_post_json(h, u1, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 1); /* the connection is now in curl's keep-alive pool */
  CHECK_INT(fq_http_post_json(h, u2, "t", "{\"cmd\":1}", 9, collect, res, &id, &err), 0);
  run_until(h, res, 2);
  CHECK_INT(res->done, 2);
  CHECK_INT(res->r[1].outcome, FQ_HTTP_UNKNOWN);
  CHECK_INT(res->r[1].status, 0);
  usleep(200000);
  CHECK_INT(atomic_load(&s.drops), 1); /* delivered once, never twice */
  /* curl did want to re-send it on a new connection; the second
   * pre-request call was refused before anything went out. */
  CHECK_INT(res->r[1].curl_code, 42); /* CURLE_ABORTED_BY_CALLBACK */
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_connect_refused_is_not_sent) {
  /* Take an ephemeral port and close it again: nothing listens there. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
  close(fd);
  char u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/echo", ntohs(sa.sin_port));
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  uint64_t id;
  CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  CHECK_INT(res->done, 1);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_NOT_SENT);
  CHECK_INT(res->r[0].curl_code, 7); /* CURLE_COULDNT_CONNECT */
  CHECK(strstr(res->r[0].err.msg, "not sent") != NULL);
  free(res);
  fq_http_destroy(&h);
}

FQ_TEST(http_body_cap_truncates) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_opts_t o = {.max_body = 65536};
  fq_http_t *h = fq_http_new(&o, &err);
  results_t *res = new_results();
  char u1[128], u2[128], u3[128];
  url(u1, sizeof u1, "http", &s, "/big?n=200000");     /* Content-Length over cap */
  url(u2, sizeof u2, "http", &s, "/chunked?n=200000"); /* no length: write cap */
  url(u3, sizeof u3, "http", &s, "/big?n=65536");      /* exactly the cap: fine */
  uint64_t id;
  CHECK_INT(fq_http_get(h, u1, NULL, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  CHECK_INT(fq_http_get(h, u2, NULL, collect, res, &id, &err), 0);
  run_until(h, res, 2);
  CHECK_INT(fq_http_get(h, u3, NULL, collect, res, &id, &err), 0);
  run_until(h, res, 3);
  CHECK_INT(res->done, 3);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_TRUNCATED);
  CHECK_INT(res->r[0].err.code, FQ_ETOOLARGE);
  CHECK_INT(res->r[1].outcome, FQ_HTTP_TRUNCATED);
  CHECK_INT(res->r[1].err.code, FQ_ETOOLARGE);
  CHECK(res->r[1].body_len <= 65536);
  CHECK_INT(res->r[2].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[2].body_len, 65536);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_keepalive_reuses_connections) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/echo");
  for (int i = 0; i < 50; i++) {
    uint64_t id;
    CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
    run_until(h, res, i + 1);
  }
  CHECK_INT(res->done, 50);
  int conns = atomic_load(&s.conns);
  CHECK(conns >= 1 && conns <= 2);
  if (conns > 2) fprintf(stderr, "  %d connections for 50 sequential requests\n", conns);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_hundreds_in_flight) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_opts_t o = {.max_inflight = 300};
  fq_http_t *h = fq_http_new(&o, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/slow?n=200");
  for (int i = 0; i < 300; i++) {
    uint64_t id;
    CHECK_INT(fq_http_get(h, u, NULL, collect, res, &id, &err), 0);
  }
  CHECK_INT(fq_http_inflight(h), 300);
  uint64_t id;
  CHECK_INT(fq_http_get(h, u, NULL, collect, res, &id, &err), FQ_EBUSY);
  int max_fds = 0;
  int64_t t0 = fq_mono_ns();
  int64_t end = t0 + 10 * 1000000000LL;
  while (res->done < 300 && fq_mono_ns() < end) {
    if (fq_http_nsockets(h) > max_fds) max_fds = fq_http_nsockets(h);
    fq_http_run_once(h, 100, &err);
  }
  int64_t ms = (fq_mono_ns() - t0) / 1000000;
  CHECK_INT(res->done, 300);
  int ok = 0;
  for (int i = 0; i < 300; i++) ok += res->r[i].status == 200;
  CHECK_INT(ok, 300);
  /* 300 replies of 200 ms each in well under 300 * 200 ms: they ran at
   * the same time. */
  CHECK(ms < 5000);
  CHECK(max_fds > 100);
  printf("  300 x 200 ms in flight: %lld ms, up to %d sockets\n", (long long)ms, max_fds);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

FQ_TEST(http_cancel_suppresses_callback) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/slow?n=300");
  uint64_t a, b;
  CHECK_INT(fq_http_get(h, u, NULL, collect, res, &a, &err), 0);
  CHECK_INT(fq_http_get(h, u, NULL, collect, res, &b, &err), 0);
  CHECK(a != b);
  fq_http_run_once(h, 50, &err);
  CHECK_INT(fq_http_cancel(h, a), 0);
  CHECK_INT(fq_http_cancel(h, a), FQ_ENOTFOUND);
  run_until(h, res, 1);
  usleep(400000);
  fq_http_run_once(h, 50, &err);
  CHECK_INT(res->done, 1);
  CHECK(res->r[0].id == b);
  CHECK_INT(fq_http_cancel(h, b), FQ_ENOTFOUND);
  CHECK_INT(fq_http_inflight(h), 0);
  free(res);
  fq_http_destroy(&h);
  srv_stop(&s);
}

/* Transfers that end in the same perform are all read from curl before
 * any callback runs (fq_http_perform): a callback that cancels one of
 * the others, or starts a new request in the slot that frees, must still
 * see cancel's contract (no callback for the cancelled one) and the new
 * request's own answer, never the old one's. */
typedef struct batch_ctx {
  fq_http_t *h;
  results_t *res;
  uint64_t ids[20];
  uint64_t new_id;
  int first_done; /* res->done when the first callback ran */
  char echo_url[128];
} batch_ctx_t;

static void batch_cb(void *ud, const fq_http_resp_t *resp) {
  batch_ctx_t *c = ud;
  bool first = c->res->done == 0;
  collect(c->res, resp);
  if (!first) return;
  for (int i = 0; i < 20; i++)
    if (c->ids[i] != resp->id) CHECK_INT(fq_http_cancel(c->h, c->ids[i]), 0);
  fq_err_t err;
  CHECK_INT(fq_http_post_json(c->h, c->echo_url, NULL, "{\"n\":1}", 7, collect, c->res,
                              &c->new_id, &err),
            0);
  c->first_done = c->res->done;
}

FQ_TEST(http_callback_cancels_transfers_done_in_the_same_perform) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  fq_err_t err;
  fq_http_opts_t o = {.max_inflight = 20}; /* the new request must reuse a freed slot */
  batch_ctx_t c = {.h = fq_http_new(&o, &err), .res = new_results()};
  char u[128];
  url(u, sizeof u, "http", &s, "/slow?n=1000");
  url(c.echo_url, sizeof c.echo_url, "http", &s, "/echo");
  /* One request first: until curl knows the server speaks HTTP/1.1 it
   * waits for the first connection instead of opening more (PIPEWAIT). */
  results_t *warm = new_results();
  uint64_t id;
  CHECK_INT(fq_http_get(c.h, c.echo_url, NULL, collect, warm, &id, &err), 0);
  run_until(c.h, warm, 1);
  CHECK_INT(warm->done, 1);
  free(warm);
  for (int i = 0; i < 20; i++) CHECK_INT(fq_http_get(c.h, u, NULL, batch_cb, &c, &c.ids[i], &err), 0);
  /* Until the server has every request, then let all answers arrive
   * before curl reads any of them: one perform ends the 20 transfers. */
  int64_t end = fq_mono_ns() + 5 * 1000000000LL;
  while (atomic_load(&s.requests) < 21 && fq_mono_ns() < end) fq_http_run_once(c.h, 5, &err);
  CHECK_INT(atomic_load(&s.requests), 21);
  CHECK_INT(c.res->done, 0);
  usleep(1500000);
  CHECK(fq_http_perform(c.h, NULL, 0, &err) >= 1);
  CHECK_INT(c.res->done, 1);     /* only the first: the others were cancelled */
  CHECK_INT(c.first_done, 1);
  CHECK_INT(fq_http_inflight(c.h), 1); /* the new request */
  run_until(c.h, c.res, 2);
  usleep(200000);
  fq_http_run_once(c.h, 20, &err);
  CHECK_INT(c.res->done, 2);
  CHECK(c.res->r[1].id == c.new_id);
  CHECK_INT((int)c.res->r[1].status, 200);
  CHECK_STR(c.res->body[1], "POST:{\"n\":1}");
  CHECK_INT(fq_http_inflight(c.h), 0);
  free(c.res);
  fq_http_destroy(&c.h);
  srv_stop(&s);
}

/* The integration the shards use: one zmq_poll over an inproc socket and
 * curl's sockets. */
FQ_TEST(http_driven_by_zmq_poll_with_inproc_socket) {
  srv_t s;
  CHECK_INT(srv_start(&s, NULL, NULL), 0);
  void *ctx = zmq_ctx_new();
  void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
  CHECK_INT(zmq_bind(a, "inproc://t"), 0);
  CHECK_INT(zmq_connect(b, "inproc://t"), 0);
  fq_err_t err;
  fq_http_t *h = fq_http_new(NULL, &err);
  results_t *res = new_results();
  char u[128];
  url(u, sizeof u, "http", &s, "/slow?n=100");
  uint64_t id;
  CHECK_INT(fq_http_get(h, u, NULL, collect, res, &id, &err), 0);
  CHECK_INT(zmq_send(b, "hi", 2, 0), 2);
  int got_msg = 0;
  int64_t end = fq_mono_ns() + 5 * 1000000000LL;
  while ((res->done < 1 || !got_msg) && fq_mono_ns() < end) {
    zmq_pollitem_t items[16];
    items[0] = (zmq_pollitem_t){.socket = a, .events = ZMQ_POLLIN};
    int n = fq_http_fds(h, items + 1, 15);
    CHECK_INT(n, 1); /* one descriptor, however many transfers */
    long t = fq_http_timeout_ms(h);
    zmq_poll(items, 1 + n, t < 0 || t > 1000 ? 1000 : t);
    if (items[0].revents & ZMQ_POLLIN) {
      char buf[8];
      if (zmq_recv(a, buf, sizeof buf, ZMQ_DONTWAIT) == 2) got_msg++;
    }
    CHECK(fq_http_perform(h, items + 1, n, &err) >= 0);
  }
  CHECK_INT(got_msg, 1);
  CHECK_INT(res->done, 1);
  CHECK_INT(res->r[0].status, 200);
  free(res);
  fq_http_destroy(&h);
  zmq_close(a);
  zmq_close(b);
  zmq_ctx_term(ctx);
  srv_stop(&s);
}

/* ---- HTTPS with a throwaway CA -------------------------------------------- */

static char tls_dir[256];

/* Make ca.pem/ca.key, a server cert for 127.0.0.1 + localhost signed by
 * it, one for "otherhost" signed by it, and an unrelated CA. */
static int make_pki(void) {
  const char *openssl = getenv("FQ_OPENSSL");
  if (!openssl) openssl = "openssl";
  snprintf(tls_dir, sizeof tls_dir, "/tmp/fq-test-http-XXXXXX");
  if (!mkdtemp(tls_dir)) return -1;
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "set -e; cd %s; O=%s;"
           "$O req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
           "  -out ca.pem -days 2 -subj /CN=fleetq-test-ca "
           "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null;"
           "$O req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout other.key "
           "  -out other-ca.pem -days 2 -subj /CN=other-ca "
           "  -addext basicConstraints=critical,CA:TRUE 2>/dev/null;"
           "for n in good bad; do "
           "  $O req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key -out $n.csr "
           "    -subj /CN=$n 2>/dev/null; done;"
           "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > good.ext;"
           "printf 'subjectAltName=DNS:otherhost\\n' > bad.ext;"
           "for n in good bad; do "
           "  $O x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
           "    -extfile $n.ext -out $n.pem 2>/dev/null; done",
           tls_dir, openssl);
  return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *name) {
  char path[512], *out = NULL;
  size_t n;
  snprintf(path, sizeof path, "%s/%s", tls_dir, name);
  if (fq_read_file(path, 1 << 20, &out, &n) != 0) return NULL;
  return out;
}

FQ_TEST(https_with_extra_ca_and_refusals) {
  if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
    CHECK(!"libmicrohttpd built without TLS");
    return;
  }
  CHECK_INT(make_pki(), 0);
  char *gk = slurp("good.key"), *gc = slurp("good.pem");
  char *bk = slurp("bad.key"), *bc = slurp("bad.pem");
  CHECK(gk && gc && bk && bc);
  if (!gk || !gc || !bk || !bc) return;
  srv_t good, bad;
  CHECK_INT(srv_start(&good, gk, gc), 0);
  CHECK_INT(srv_start(&bad, bk, bc), 0);
  char ca[512], other[512], u[128], ub[128];
  snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
  snprintf(other, sizeof other, "%s/other-ca.pem", tls_dir);
  url(u, sizeof u, "https", &good, "/echo");
  url(ub, sizeof ub, "https", &bad, "/echo");
  fq_err_t err;
  uint64_t id;
  results_t *res = new_results();

  /* Trusted through the extra CA: works, verification on. */
  fq_http_opts_t o = {.ca_file = ca};
  fq_http_t *h = fq_http_new(&o, &err);
  CHECK(h != NULL);
  CHECK_INT(fq_http_post_json(h, u, "tls-tok", "{\"x\":1}", 7, collect, res, &id, &err), 0);
  run_until(h, res, 1);
  CHECK_INT(res->r[0].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[0].status, 200);
  CHECK_STR(res->body[0], "POST:{\"x\":1}");
  CHECK_STR(good.last_auth, "Bearer tls-tok");
  /* Same CA, but the certificate names another host: refused. */
  CHECK_INT(fq_http_post_json(h, ub, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 2);
  CHECK_INT(res->r[1].outcome, FQ_HTTP_NOT_SENT);
  CHECK_INT(res->r[1].curl_code, 60); /* CURLE_PEER_FAILED_VERIFICATION */
  CHECK_INT(atomic_load(&bad.requests), 0);
  /* ... and said to be a name mismatch, not an untrusted CA (issue 13, 8),
   * with curl's own words. */
  CHECK_INT(res->r[1].tls, FQ_HTTP_TLS_NAME_MISMATCH);
  CHECK(strstr(res->r[1].err.msg, "target host name") != NULL);
  CHECK_INT(res->r[0].tls, FQ_HTTP_TLS_OK);
  /* A second trusted server through the same handle: a new connection
   * after the first (curl may reuse a cached trust store by then) still
   * trusts the extra CA. */
  srv_t good2;
  CHECK_INT(srv_start(&good2, gk, gc), 0);
  char u2[128];
  url(u2, sizeof u2, "https", &good2, "/echo");
  CHECK_INT(fq_http_post_json(h, u2, "t2", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 3);
  CHECK_INT(res->r[2].outcome, FQ_HTTP_COMPLETE);
  CHECK_INT(res->r[2].status, 200);
  CHECK_STR(good2.last_auth, "Bearer t2");
  srv_stop(&good2);
  fq_http_destroy(&h);

  /* Without the CA, or with an unrelated one: refused, nothing sent. */
  h = fq_http_new(NULL, &err);
  CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 4);
  CHECK_INT(res->r[3].outcome, FQ_HTTP_NOT_SENT);
  CHECK_INT(res->r[3].curl_code, 60);
  CHECK_INT(res->r[3].tls, FQ_HTTP_TLS_UNTRUSTED);
  CHECK(strstr(res->r[3].err.msg, "certificate problem") != NULL);
  fq_http_destroy(&h);
  o.ca_file = other;
  h = fq_http_new(&o, &err);
  CHECK_INT(fq_http_post_json(h, u, "t", "{}", 2, collect, res, &id, &err), 0);
  run_until(h, res, 5);
  CHECK_INT(res->r[4].outcome, FQ_HTTP_NOT_SENT);
  CHECK_INT(res->r[4].tls, FQ_HTTP_TLS_UNTRUSTED);
  fq_http_destroy(&h);
  CHECK_INT(atomic_load(&good.requests), 1);

  /* A CA file with no certificate is a start-up error. */
  o.ca_file = "/dev/null";
  CHECK(fq_http_new(&o, &err) == NULL);
  CHECK_INT(err.code, FQ_ECONFIG);

  free(res);
  srv_stop(&good);
  srv_stop(&bad);
  free(gk);
  free(gc);
  free(bk);
  free(bc);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
  if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", tls_dir);
}

/* HTTP/2 over TLS against a real h2 server (nghttpd, from Debian's
 * nghttp2-server, installed by scripts/deps.sh): many transfers multiplexed
 * on one connection, the extra CA trusted, the bodies echoed back. */
FQ_TEST(https_http2_multiplexes_on_one_connection) {
  char nghttpd[64] = "";
  const char *cands[] = {"/usr/sbin/nghttpd", "/usr/bin/nghttpd", "/usr/local/bin/nghttpd"};
  for (size_t i = 0; i < 3; i++)
    if (access(cands[i], X_OK) == 0) snprintf(nghttpd, sizeof nghttpd, "%s", cands[i]);
  if (!nghttpd[0]) {
    CHECK(!"nghttpd not found: scripts/deps.sh installs nghttp2-server");
    return;
  }
  CHECK_INT(make_pki(), 0);
  /* A free port: bind to 0, read it, close (nghttpd binds it next). */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_INT(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
  int port = ntohs(sa.sin_port);
  close(fd);
  char ports[16], key[300], cert[300];
  snprintf(ports, sizeof ports, "%d", port);
  snprintf(key, sizeof key, "%s/good.key", tls_dir);
  snprintf(cert, sizeof cert, "%s/good.pem", tls_dir);
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execl(nghttpd, "nghttpd", "-a", "127.0.0.1", "-d", tls_dir, "--echo-upload", ports, key,
          cert, (char *)NULL);
    _exit(127);
  }
  CHECK(pid > 0);
  /* Wait until it listens. */
  int up = 0;
  for (int i = 0; i < 100 && !up; i++) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&sa, sizeof sa) == 0) up = 1;
    close(c);
    if (!up) usleep(30000);
  }
  CHECK(up);
  char ca[300], u[128];
  snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
  snprintf(u, sizeof u, "https://127.0.0.1:%d/echo", port);
  fq_err_t err;
  fq_http_opts_t o = {.ca_file = ca};
  fq_http_t *h = fq_http_new(&o, &err);
  results_t *res = new_results();
  char bodies[50][32];
  uint64_t ids[50];
  for (int i = 0; i < 50; i++) {
    snprintf(bodies[i], sizeof bodies[i], "{\"i\":%d}", i);
    CHECK_INT(fq_http_post_json(h, u, "h2-tok", bodies[i], strlen(bodies[i]), collect, res,
                                &ids[i], &err), 0);
  }
  int max_socks = 0;
  int64_t end = fq_mono_ns() + 10 * 1000000000LL;
  while (res->done < 50 && fq_mono_ns() < end) {
    if (fq_http_nsockets(h) > max_socks) max_socks = fq_http_nsockets(h);
    fq_http_run_once(h, 100, &err);
  }
  CHECK_INT(res->done, 50);
  int matched = 0;
  for (int i = 0; i < res->done && i < 50; i++) {
    CHECK_INT(res->r[i].outcome, FQ_HTTP_COMPLETE);
    CHECK_INT(res->r[i].status, 200);
    CHECK_INT(res->r[i].http_version, 20);
    for (int j = 0; j < 50; j++)
      if (res->r[i].id == ids[j] && strcmp(res->body[i], bodies[j]) == 0) matched++;
  }
  CHECK_INT(matched, 50); /* each reply is its own request's echo */
  CHECK_INT(max_socks, 1); /* one connection, 50 streams */
  printf("  50 POSTs over HTTP/2: up to %d socket(s)\n", max_socks);
  fq_http_destroy(&h);
  free(res);
  if (pid > 0) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
  }
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
  if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", tls_dir);
}
