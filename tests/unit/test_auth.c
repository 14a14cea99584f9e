/*
 * Unit tests of the auth thread (auth.c) with real parts only: a real
 * ZeroMQ context and PAIR/PUSH sockets speaking the shard framing, a real
 * LMDB account store in a temporary directory, and real token endpoints on
 * loopback: fleetsim (single-use, rotating refresh tokens) and a small
 * libmicrohttpd server whose answers and delay the test controls.
 */
#include <errno.h>
#include <microhttpd.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <zmq.h>
#include <jansson.h>

#include "auth.h"
#include "fleetq/wire.h"
#include "fleetq/client.h"
#include "fleetq/commands.h"
#include "fq_test.h"
#include "log.h"
#include "sim.h"
#include "util.h"

static const char *SECRET_RT = "NA_rt-7c1e0f6a-do-not-leak";

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static char *tmpdir(char *d, size_t cap) {
  snprintf(d, cap, "/tmp/fq-test-auth-XXXXXX");
  return mkdtemp(d);
}

static void rmrf(const char *d) {
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf %s", d);
  if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", d);
}

static void b64url(const char *in, char *out) {
  fq_base64url_encode((const uint8_t *)in, strlen(in), out);
}

/* A JWT-shaped access token (unsigned: fleetq only reads the claims). */
static void make_jwt(char *out, size_t cap, int64_t exp, const char *scp, const char *salt) {
  char payload[512], h[128], p[1024];
  snprintf(payload, sizeof payload,
           "{\"iss\":\"test\",\"sub\":\"%s\",\"scp\":[%s],\"exp\":%lld,\"iat\":%lld}", salt, scp,
           (long long)exp, (long long)(exp - 3600));
  b64url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", h);
  b64url(payload, p);
  /* The caller's buffer holds any token this test makes (payloads are
   * short); the check keeps a mistake from going unnoticed. */
  int n = snprintf(out, cap, "%.127s.%.1023s.c2lnbmF0dXJl", h, p);
  if (n < 0 || (size_t)n >= cap) printf("  make_jwt: token truncated to %zu bytes\n", cap);
}

typedef struct harness {
  char dir[64];
  void *ctx, *pair, *push;
  fq_accounts_t *acc;
  fq_auth_t *auth;
} harness_t;

static int h_start(harness_t *h, const char *token_url, const char *extra_host, int scan_ms,
                   bool keep_dir) {
  fq_err_t err = {0};
  if (!keep_dir && !tmpdir(h->dir, sizeof h->dir)) return -1;
  h->ctx = zmq_ctx_new();
  h->acc = fq_accounts_open(h->dir, &err);
  if (!h->acc) {
    fprintf(stderr, "  accounts_open: %s\n", err.msg);
    return -1;
  }
  fq_auth_opts_t o = {.zmq_ctx = h->ctx, .accounts = h->acc, .token_url = token_url,
                      .extra_host = extra_host, .scan_interval_ms = scan_ms};
  h->auth = fq_auth_new(&o, &err);
  if (!h->auth) {
    fprintf(stderr, "  auth_new: %s\n", err.msg);
    return -1;
  }
  h->pair = zmq_socket(h->ctx, ZMQ_PAIR);
  h->push = zmq_socket(h->ctx, ZMQ_PUSH);
  int zero = 0;
  zmq_setsockopt(h->pair, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(h->push, ZMQ_LINGER, &zero, sizeof zero);
  if (zmq_connect(h->pair, fq_auth_admin_endpoint(h->auth)) ||
      zmq_connect(h->push, fq_auth_refresh_endpoint(h->auth)))
    return -1;
  return fq_auth_start(h->auth);
}

/* Stop with 'T', expect 'D', free everything but the directory. */
static void h_stop(harness_t *h) {
  if (h->pair && h->auth) {
    char t = 'T', d = 0;
    zmq_send(h->pair, &t, 1, 0);
    int to = 20000;
    zmq_setsockopt(h->pair, ZMQ_RCVTIMEO, &to, sizeof to);
    for (;;) {
      char buf[8];
      int n = zmq_recv(h->pair, buf, sizeof buf, 0);
      if (n < 0) break;
      int more = 0;
      size_t ml = sizeof more;
      zmq_getsockopt(h->pair, ZMQ_RCVMORE, &more, &ml);
      if (n == 1 && !more && buf[0] == 'D') {
        d = 'D';
        break;
      }
    }
    CHECK_INT(d, 'D');
  }
  if (h->pair) zmq_close(h->pair);
  if (h->push) zmq_close(h->push);
  fq_auth_destroy(&h->auth);
  fq_accounts_destroy(&h->acc);
  zmq_ctx_term(h->ctx);
  h->pair = h->push = h->ctx = NULL;
}

/* Request builder: n string pairs after op/action; an optional int req. */
typedef struct kv {
  const char *k, *v;
} kv_t;

static int buf_write(void *data, const char *b, size_t len) {
  return fq_buf_append(data, b, len) ? -1 : 0;
}

static void build(fq_buf_t *out, const char *action, const kv_t *kv, size_t n, int req) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  msgpack_pack_map(&pk, 2 + n + (req ? 1 : 0));
  msgpack_pack_str_with_body(&pk, "op", 2);
  msgpack_pack_str_with_body(&pk, "admin", 5);
  msgpack_pack_str_with_body(&pk, "action", 6);
  msgpack_pack_str_with_body(&pk, action, strlen(action));
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_str_with_body(&pk, kv[i].k, strlen(kv[i].k));
    msgpack_pack_str_with_body(&pk, kv[i].v, strlen(kv[i].v));
  }
  if (req) {
    msgpack_pack_str_with_body(&pk, "req", 3);
    msgpack_pack_int(&pk, req);
  }
}

/* Send [Q, "peer-1", body]; expect [R, "peer-1", reply]; reply into raw. */
static int roundtrip(harness_t *h, const fq_buf_t *body, fq_buf_t *raw) {
  char q = 'Q';
  zmq_send(h->pair, &q, 1, ZMQ_SNDMORE);
  zmq_send(h->pair, "peer-1", 6, ZMQ_SNDMORE);
  zmq_send(h->pair, body->data, body->len, 0);
  int to = 10000;
  zmq_setsockopt(h->pair, ZMQ_RCVTIMEO, &to, sizeof to);
  zmq_msg_t f[4];
  int n = 0;
  for (;;) {
    zmq_msg_init(&f[n]);
    if (zmq_msg_recv(&f[n], h->pair, 0) < 0) {
      zmq_msg_close(&f[n]);
      break;
    }
    int more = zmq_msg_more(&f[n]);
    n++;
    if (!more || n == 4) break;
  }
  int rc = -1;
  if (n == 3 && zmq_msg_size(&f[0]) == 1 && *(char *)zmq_msg_data(&f[0]) == 'R' &&
      zmq_msg_size(&f[1]) == 6 && memcmp(zmq_msg_data(&f[1]), "peer-1", 6) == 0) {
    fq_buf_reset(raw);
    fq_buf_append(raw, zmq_msg_data(&f[2]), zmq_msg_size(&f[2]));
    rc = 0;
  } else {
    fprintf(stderr, "  bad reply framing: %d frames\n", n);
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  return rc;
}

/* Send an admin request and decode the reply into m (caller frees). */
static int admin(harness_t *h, const char *action, const kv_t *kv, size_t n, int req,
                 fq_msg_t *m, fq_buf_t *raw) {
  fq_buf_t body;
  fq_buf_init(&body, 1 << 20);
  build(&body, action, kv, n, req);
  int rc = roundtrip(h, &body, raw);
  fq_buf_free(&body);
  if (rc) return rc;
  fq_err_t err;
  if (fq_msg_decode(m, raw->data, raw->len, &err)) {
    fprintf(stderr, "  reply does not decode: %s\n", err.msg);
    return -1;
  }
  return 0;
}

static bool reply_ok(const fq_msg_t *m) {
  bool ok = false;
  if (fq_mp_bool(fq_mp_get(m->root, "ok"), &ok) && ok) return true;
  const char *p = "", *msg = "";
  size_t pn = 0, mn = 0;
  fq_mp_str(fq_mp_get(m->root, "error"), &p, &pn);
  fq_mp_str(fq_mp_get(m->root, "message"), &msg, &mn);
  fprintf(stderr, "  reply: %.*s: %.*s\n", (int)pn, p, (int)mn, msg);
  return false;
}

/* Expect an error reply with code and a message containing `has`. */
static void expect_error(harness_t *h, const char *action, const kv_t *kv, size_t n,
                         const char *code, const char *has, int line) {
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  if (admin(h, action, kv, n, 42, &m, &raw) != 0) {
    fprintf(stderr, "  line %d: no reply\n", line);
    fq_test_failures++;
    fq_buf_free(&raw);
    return;
  }
  const char *p = "", *msg = "";
  size_t pn = 0, mn = 0;
  fq_mp_str(fq_mp_get(m.root, "error"), &p, &pn);
  fq_mp_str(fq_mp_get(m.root, "message"), &msg, &mn);
  int64_t req = 0;
  char got[64], gmsg[512];
  snprintf(got, sizeof got, "%.*s", (int)pn, p);
  snprintf(gmsg, sizeof gmsg, "%.*s", (int)mn, msg);
  bool ok = false;
  if ((fq_mp_bool(fq_mp_get(m.root, "ok"), &ok) && ok) || strcmp(got, code) != 0 || !strstr(gmsg, has) ||
      !fq_mp_int(fq_mp_get(m.root, "req"), &req) || req != 42) {
    fprintf(stderr, "  line %d: want %s containing \"%s\", got %s: \"%s\" (req %lld)\n", line,
            code, has, got, gmsg, (long long)req);
    fq_test_failures++;
  }
  fq_msg_free(&m);
  fq_buf_free(&raw);
}
#define EXPECT_ERROR(h, action, kv, code, has) \
  expect_error(h, action, kv, sizeof kv / sizeof *kv, code, has, __LINE__)

static bool wait_until(bool (*pred)(void *), void *arg, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    if (pred(arg)) return true;
    usleep(10000);
  }
  return pred(arg);
}

static bool mem_has(const fq_buf_t *b, const char *s) {
  return memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* ------------------------------------------------------------------ */
/* Admin                                                                */

FQ_TEST(auth_admin_add_list_get_remove) {
  harness_t h = {0};
  CHECK_INT(h_start(&h, NULL, NULL, 0, false), 0);
  char at[1024];
  int64_t exp = fq_now_ms() / 1000 + 8 * 3600;
  make_jwt(at, sizeof at, exp, "\"openid\",\"vehicle_cmds\",\"vehicle_device_data\"", "u1");
  kv_t add[] = {{"account", "fleet-1"}, {"access_token", at}, {"refresh_token", SECRET_RT},
                {"client_id", "client-abc"}, {"region", "eu"}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  uint64_t g0 = fq_auth_generation(h.auth);
  CHECK_INT(admin(&h, "account_add", add, 5, 7, &m, &raw), 0);
  CHECK(reply_ok(&m));
  CHECK(fq_auth_generation(h.auth) > g0);
  /* Never a token in a reply. */
  CHECK(!mem_has(&raw, SECRET_RT));
  CHECK(!mem_has(&raw, at));
  int64_t v = 0;
  CHECK(fq_mp_int(fq_mp_get(m.root, "req"), &v) && v == 7);
  const msgpack_object *acc = fq_mp_get(m.root, "account");
  CHECK(fq_mp_str_eq(fq_mp_get(acc, "id"), "fleet-1"));
  CHECK(fq_mp_str_eq(fq_mp_get(acc, "client_id"), "client-abc"));
  CHECK(fq_mp_str_eq(fq_mp_get(acc, "region"), "eu"));
  const msgpack_object *bu = fq_mp_get(acc, "base_url");
  CHECK(bu && bu->type == MSGPACK_OBJECT_NIL);
  CHECK(fq_mp_int(fq_mp_get(acc, "access_expires"), &v));
  CHECK_INT(v, exp);
  const msgpack_object *sc = fq_mp_get(acc, "scopes");
  CHECK(sc && sc->type == MSGPACK_OBJECT_ARRAY && sc->via.array.size == 2);
  if (sc && sc->type == MSGPACK_OBJECT_ARRAY && sc->via.array.size == 2) {
    CHECK(fq_mp_str_eq(&sc->via.array.ptr[0], "vehicle_cmds"));
    CHECK(fq_mp_str_eq(&sc->via.array.ptr[1], "vehicle_device_data"));
  }
  CHECK(fq_mp_get(acc, "refresh_failure") == NULL);
  fq_msg_free(&m);

  /* Stored for real, secrets included, decryptable. */
  fq_account_t *st = fq_account_new();
  fq_err_t err;
  CHECK_INT(fq_accounts_get(h.acc, "fleet-1", st, &err), 0);
  CHECK_STR(st->refresh_token, SECRET_RT);
  CHECK_STR(st->access_token, at);
  CHECK_INT(st->scopes, FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_DEVICE_DATA);
  fq_account_free(&st);

  /* A second one with a simulator base URL and a non-JWT token. */
  kv_t add2[] = {{"account", "sim-a"}, {"access_token", "opaque-token"},
                 {"refresh_token", "opaque-refresh"}, {"client_id", "c2"},
                 {"base_url", "http://127.0.0.1:8443"}};
  CHECK_INT(admin(&h, "account_add", add2, 5, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  acc = fq_mp_get(m.root, "account");
  CHECK(fq_mp_str_eq(fq_mp_get(acc, "base_url"), "http://127.0.0.1:8443"));
  const msgpack_object *ae = fq_mp_get(acc, "access_expires");
  CHECK(ae && ae->type == MSGPACK_OBJECT_NIL);
  CHECK(fq_mp_get(m.root, "req") == NULL);
  fq_msg_free(&m);

  CHECK_INT(admin(&h, "account_list", NULL, 0, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  const msgpack_object *list = fq_mp_get(m.root, "accounts");
  CHECK(list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2);
  if (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 2) {
    CHECK(fq_mp_str_eq(fq_mp_get(&list->via.array.ptr[0], "id"), "fleet-1"));
    CHECK(fq_mp_str_eq(fq_mp_get(&list->via.array.ptr[1], "id"), "sim-a"));
  }
  CHECK(!mem_has(&raw, SECRET_RT) && !mem_has(&raw, "opaque-refresh") &&
        !mem_has(&raw, "opaque-token"));
  fq_msg_free(&m);

  kv_t one[] = {{"account", "fleet-1"}};
  CHECK_INT(admin(&h, "account_get", one, 1, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  CHECK(fq_mp_str_eq(fq_mp_get(fq_mp_get(m.root, "account"), "id"), "fleet-1"));
  CHECK(!mem_has(&raw, SECRET_RT));
  fq_msg_free(&m);

  /* A remembered refusal shows in get and is cleared by account_retry. */
  char why[128];
  CHECK_INT(fq_auth_account_refused(h.auth, "fleet-1", why, sizeof why), 0);
  fq_auth_account_refuse(h.auth, "fleet-1", FQ_ENOTREGISTERED, "HTTP 412: register it");
  CHECK_INT(fq_auth_account_refused(h.auth, "fleet-1", why, sizeof why), FQ_ENOTREGISTERED);
  CHECK_STR(why, "HTTP 412: register it");
  CHECK_INT(admin(&h, "account_get", one, 1, 0, &m, &raw), 0);
  CHECK(fq_mp_str_eq(fq_mp_get(fq_mp_get(m.root, "account"), "refused"),
                     "HTTP 412: register it"));
  CHECK(fq_mp_str_eq(fq_mp_get(fq_mp_get(m.root, "account"), "refused_error"),
                     "not_registered"));
  fq_msg_free(&m);
  CHECK_INT(admin(&h, "account_retry", one, 1, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  bool cleared = false;
  CHECK(fq_mp_bool(fq_mp_get(m.root, "cleared"), &cleared) && cleared);
  fq_msg_free(&m);
  CHECK_INT(fq_auth_account_refused(h.auth, "fleet-1", why, sizeof why), 0);
  CHECK_INT(admin(&h, "account_retry", one, 1, 0, &m, &raw), 0);
  CHECK(fq_mp_bool(fq_mp_get(m.root, "cleared"), &cleared) && !cleared);
  fq_msg_free(&m);
  kv_t nobody[] = {{"account", "nobody"}};
  EXPECT_ERROR(&h, "account_retry", nobody, "not_found", "nobody");

  uint64_t g1 = fq_auth_generation(h.auth);
  CHECK_INT(admin(&h, "account_remove", one, 1, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  CHECK(fq_auth_generation(h.auth) > g1);
  fq_msg_free(&m);
  EXPECT_ERROR(&h, "account_get", one, "not_found", "fleet-1");
  EXPECT_ERROR(&h, "account_remove", one, "not_found", "fleet-1");
  CHECK_INT(fq_accounts_get(h.acc, "fleet-1", NULL, NULL), FQ_ENOTFOUND);

  fq_buf_free(&raw);
  h_stop(&h);
  rmrf(h.dir);
}

FQ_TEST(auth_admin_rejects_bad_requests) {
  harness_t h = {0};
  CHECK_INT(h_start(&h, NULL, "sim.example.net:4443", 0, false), 0);
  kv_t unknown[] = {{"account", "a"}, {"acount", "x"}};
  EXPECT_ERROR(&h, "account_get", unknown, "bad_request", "\"acount\"");
  kv_t notfor[] = {{"account", "a"}, {"region", "na"}};
  EXPECT_ERROR(&h, "account_remove", notfor, "bad_request", "\"region\"");
  kv_t missing[] = {{"access_token", "a"}, {"refresh_token", "r"}, {"client_id", "c"},
                    {"region", "na"}};
  EXPECT_ERROR(&h, "account_add", missing, "bad_request", "\"account\"");
  kv_t dup[] = {{"account", "a"}, {"account", "b"}};
  EXPECT_ERROR(&h, "account_get", dup, "bad_request", "duplicate");
  kv_t none[] = {{"account", "a"}};
  EXPECT_ERROR(&h, "account_frobnicate", none, "bad_request", "account_frobnicate");

  kv_t both[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                 {"client_id", "c"}, {"region", "na"}, {"base_url", "https://fleet-api.prd.na.vn.cloud.tesla.com"}};
  EXPECT_ERROR(&h, "account_add", both, "bad_param", "exactly one");
  kv_t neither[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                    {"client_id", "c"}};
  EXPECT_ERROR(&h, "account_add", neither, "bad_param", "exactly one");
  kv_t region[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                   {"client_id", "c"}, {"region", "us"}};
  EXPECT_ERROR(&h, "account_add", region, "bad_param", "\"region\"");
  kv_t plain[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                  {"client_id", "c"}, {"base_url", "http://fleet-api.prd.na.vn.cloud.tesla.com"}};
  EXPECT_ERROR(&h, "account_add", plain, "bad_param", "http://");
  kv_t evil[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                 {"client_id", "c"}, {"base_url", "https://tokens.evil.example"}};
  EXPECT_ERROR(&h, "account_add", evil, "bad_param", "tokens.evil.example");
  kv_t lookalike[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                      {"client_id", "c"}, {"base_url", "https://fleet-api.tesla.com@evil.example"}};
  EXPECT_ERROR(&h, "account_add", lookalike, "bad_param", "\"base_url\"");
  kv_t slash[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                  {"client_id", "c"}, {"base_url", "https://fleet-api.prd.eu.vn.cloud.tesla.com/"}};
  EXPECT_ERROR(&h, "account_add", slash, "bad_param", "trailing slash");
  kv_t badid[] = {{"account", "no spaces"}, {"access_token", "t"}, {"refresh_token", "r"},
                  {"client_id", "c"}, {"region", "na"}};
  EXPECT_ERROR(&h, "account_add", badid, "bad_param", "\"account\"");
  kv_t badtok[] = {{"account", "a"}, {"access_token", "t t"}, {"refresh_token", "r"},
                   {"client_id", "c"}, {"region", "na"}};
  EXPECT_ERROR(&h, "account_add", badtok, "bad_param", "\"access_token\"");
  kv_t empty[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", ""},
                  {"client_id", "c"}, {"region", "na"}};
  EXPECT_ERROR(&h, "account_add", empty, "bad_param", "\"refresh_token\"");

  /* The configured simulator host over https is fine, with its port. */
  fq_msg_t m;
  fq_buf_t raw, body;
  fq_buf_init(&raw, 1 << 20);
  kv_t simhost[] = {{"account", "a"}, {"access_token", "t"}, {"refresh_token", "r"},
                    {"client_id", "c"}, {"base_url", "https://sim.example.net:4443"}};
  CHECK_INT(admin(&h, "account_add", simhost, 5, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  fq_msg_free(&m);

  /* Wrong value type, and a body that is not an admin request. */
  fq_buf_init(&body, 4096);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &body, buf_write);
  msgpack_pack_map(&pk, 4);
  msgpack_pack_str_with_body(&pk, "op", 2);
  msgpack_pack_str_with_body(&pk, "admin", 5);
  msgpack_pack_str_with_body(&pk, "action", 6);
  msgpack_pack_str_with_body(&pk, "account_get", 11);
  msgpack_pack_str_with_body(&pk, "account", 7);
  msgpack_pack_int(&pk, 12);
  msgpack_pack_str_with_body(&pk, "req", 3);
  msgpack_pack_str_with_body(&pk, "r-1", 3);
  CHECK_INT(roundtrip(&h, &body, &raw), 0);
  fq_err_t err;
  CHECK_INT(fq_msg_decode(&m, raw.data, raw.len, &err), 0);
  CHECK(fq_mp_str_eq(fq_mp_get(m.root, "error"), "bad_request"));
  CHECK(fq_mp_str_eq(fq_mp_get(m.root, "req"), "r-1"));
  const char *msg = "";
  size_t mn = 0;
  fq_mp_str(fq_mp_get(m.root, "message"), &msg, &mn);
  CHECK(mn && memmem(msg, mn, "expected string", 15));
  fq_msg_free(&m);

  fq_buf_reset(&body);
  fq_req_ping(&body, false, 0);
  CHECK_INT(roundtrip(&h, &body, &raw), 0);
  CHECK_INT(fq_msg_decode(&m, raw.data, raw.len, &err), 0);
  CHECK(fq_mp_str_eq(fq_mp_get(m.root, "error"), "bad_request"));
  fq_msg_free(&m);

  /* Garbage and truncated bodies. */
  fq_buf_reset(&body);
  fq_buf_append(&body, "\x85\xa2op", 4);
  CHECK_INT(roundtrip(&h, &body, &raw), 0);
  CHECK_INT(fq_msg_decode(&m, raw.data, raw.len, &err), 0);
  CHECK(fq_mp_str_eq(fq_mp_get(m.root, "error"), "bad_request"));
  fq_msg_free(&m);

  /* Nothing got stored by the refused requests. */
  fq_account_info_t *list = NULL;
  size_t n = 0;
  CHECK_INT(fq_accounts_list(h.acc, &list, &n, &err), 0);
  CHECK_INT(n, 1);
  free(list);
  fq_buf_free(&raw);
  fq_buf_free(&body);
  h_stop(&h);
  rmrf(h.dir);
}

/* Seeded mutations of valid admin bodies: every one gets exactly one
 * well-formed reply map with a boolean `ok`, and the thread keeps serving. */
/* Send [Q, "peer-1", nenv x "eN", body] and read the answer's frames into
 * f (at most 32); returns how many, or -1 when none came. */
static int send_enveloped(harness_t *h, int nenv, const fq_buf_t *body, zmq_msg_t *f) {
  char q = 'Q';
  zmq_send(h->pair, &q, 1, ZMQ_SNDMORE);
  zmq_send(h->pair, "peer-1", 6, ZMQ_SNDMORE);
  for (int i = 0; i < nenv; i++) {
    char e[8];
    int l = snprintf(e, sizeof e, "e%d", i);
    zmq_send(h->pair, e, (size_t)l, ZMQ_SNDMORE);
  }
  zmq_send(h->pair, body->data, body->len, 0);
  int to = 10000;
  zmq_setsockopt(h->pair, ZMQ_RCVTIMEO, &to, sizeof to);
  int n = 0;
  for (;;) {
    zmq_msg_init(&f[n]);
    if (zmq_msg_recv(&f[n], h->pair, 0) < 0) {
      zmq_msg_close(&f[n]);
      break;
    }
    int more = zmq_msg_more(&f[n]);
    n++;
    if (!more || n == 32) break;
  }
  return n ? n : -1;
}

/* Issue 13 (7): the envelope limit of the ingress holds here too.  At the
 * limit the request is served with its envelope; over it (a request the
 * ingress would have refused first) it is answered bad_request instead of
 * being dropped without a reply, and no envelope frame is read as the
 * body. */
FQ_TEST(auth_admin_envelope_limit) {
  harness_t h = {0};
  CHECK_INT(h_start(&h, NULL, "sim.example.net:4443", 0, false), 0);
  fq_buf_t body;
  fq_buf_init(&body, 1 << 16);
  build(&body, "account_list", NULL, 0, 7);
  zmq_msg_t f[32];
  for (int over = 0; over <= 1; over++) {
    int nenv = over ? 14 : FQ_WIRE_MAX_ENVELOPE;
    int n = send_enveloped(&h, nenv, &body, f);
    CHECK(n >= 3);
    if (n < 3) continue;
    CHECK(zmq_msg_size(&f[0]) == 1 && *(char *)zmq_msg_data(&f[0]) == 'R');
    CHECK_MEM(zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), "peer-1", 6);
    /* The envelope: all of it at the limit, what fits of it over it. */
    CHECK_INT(n - 3, FQ_WIRE_MAX_ENVELOPE);
    CHECK_MEM(zmq_msg_data(&f[2]), zmq_msg_size(&f[2]), "e0", 2);
    fq_msg_t m;
    fq_err_t err;
    CHECK_INT(fq_msg_decode(&m, zmq_msg_data(&f[n - 1]), zmq_msg_size(&f[n - 1]), &err), 0);
    bool ok = false;
    CHECK(fq_mp_bool(fq_mp_get(m.root, "ok"), &ok));
    CHECK(ok == !over);
    if (over) {
      const char *code = "";
      size_t cn = 0;
      fq_mp_str(fq_mp_get(m.root, "error"), &code, &cn);
      CHECK_MEM(code, cn, "bad_request", 11);
    }
    fq_msg_free(&m);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  }
  fq_buf_free(&body);
  h_stop(&h);
}

FQ_TEST(auth_admin_mutations) {
  harness_t h = {0};
  CHECK_INT(h_start(&h, NULL, NULL, 0, false), 0);
  unsigned seed = 20261129;
  printf("  seed %u\n", seed);
  srand(seed);
  kv_t add[] = {{"account", "m-1"}, {"access_token", "tok-a"}, {"refresh_token", "tok-r"},
                {"client_id", "c"}, {"base_url", "http://127.0.0.1:9"}};
  kv_t one[] = {{"account", "m-1"}};
  fq_buf_t base[3], body, raw;
  for (int i = 0; i < 3; i++) fq_buf_init(&base[i], 4096);
  build(&base[0], "account_add", add, 5, 5);
  build(&base[1], "account_get", one, 1, 6);
  build(&base[2], "account_list", NULL, 0, 7);
  fq_buf_init(&body, 8192);
  fq_buf_init(&raw, 1 << 20);
  int bad = 0, oks = 0;
  for (int it = 0; it < 3000; it++) {
    const fq_buf_t *b = &base[it % 3];
    fq_buf_reset(&body);
    fq_buf_append(&body, b->data, b->len);
    int nmut = 1 + rand() % 4;
    for (int k = 0; k < nmut; k++) {
      size_t pos = (size_t)rand() % body.len;
      switch (rand() % 4) {
      case 0: body.data[pos] = (uint8_t)rand(); break;
      case 1: body.data[pos] ^= (uint8_t)(1u << (rand() % 8)); break;
      case 2: body.len = pos ? pos : 1; break; /* truncate */
      default: {
        uint8_t extra[4] = {(uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand(), (uint8_t)rand()};
        fq_buf_append(&body, extra, 1 + (size_t)rand() % 4);
      }
      }
    }
    if (roundtrip(&h, &body, &raw) != 0) {
      bad++;
      break;
    }
    fq_msg_t m;
    fq_err_t err;
    bool okv = false;
    if (fq_msg_decode(&m, raw.data, raw.len, &err) != 0) {
      bad++;
      continue;
    }
    if (!fq_mp_bool(fq_mp_get(m.root, "ok"), &okv)) bad++;
    if (okv) oks++;
    fq_msg_free(&m);
  }
  CHECK_INT(bad, 0);
  printf("  3000 mutated bodies, %d accepted\n", oks);
  fq_msg_t m;
  CHECK_INT(admin(&h, "account_list", NULL, 0, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  fq_msg_free(&m);
  for (int i = 0; i < 3; i++) fq_buf_free(&base[i]);
  fq_buf_free(&body);
  fq_buf_free(&raw);
  h_stop(&h);
  rmrf(h.dir);
}

FQ_TEST(auth_base_url_rules) {
  fq_err_t e;
  CHECK_INT(fq_auth_check_base_url("https://fleet-api.prd.na.vn.cloud.tesla.com", NULL, &e), 0);
  CHECK_INT(fq_auth_check_base_url("http://127.0.0.1:9000", NULL, &e), 0);
  CHECK_INT(fq_auth_check_base_url("http://localhost:9000/prefix", NULL, &e), 0);
  CHECK_INT(fq_auth_check_base_url("http://[::1]:9000", NULL, &e), 0);
  CHECK_INT(fq_auth_check_base_url("https://127.0.0.1:9000", NULL, &e), 0);
  CHECK_INT(fq_auth_check_base_url("http://127.0.0.2:9000", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("http://127.0.0.1.evil.example", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("https://evil-tesla.com", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("https://x.tesla.com:99999", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("https://x.tesla.com?a=b", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("ftp://x.tesla.com", NULL, &e), FQ_EBADPARAM);
  CHECK_INT(fq_auth_check_base_url("https://sim:8443", "sim:8443", &e), 0);
  CHECK_INT(fq_auth_check_base_url("https://sim:8443", "other", &e), FQ_EBADPARAM);
}

/* ------------------------------------------------------------------ */
/* A token endpoint under the test's control                            */

typedef struct tok_srv {
  struct MHD_Daemon *d;
  uint16_t port;
  _Atomic int calls;
  _Atomic int delay_ms;
  _Atomic int fail_status;   /* answer this (with Retry-After 1) instead, then clear */
  _Atomic int fail_count;    /* how many calls get fail_status */
  pthread_mutex_t mu;
  char current_rt[128];      /* the only refresh token accepted */
  char last_client[64];
  int seq;
  int64_t expires_in;
} tok_srv_t;

typedef struct post_ctx {
  char body[4096];
  size_t len;
  bool over;
} post_ctx_t;

static bool form_get(const char *form, const char *key, char *out, size_t cap) {
  size_t kl = strlen(key);
  for (const char *p = form; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t n = amp ? (size_t)(amp - p) : strlen(p);
    if (n > kl && p[kl] == '=' && strncmp(p, key, kl) == 0) {
      snprintf(out, cap, "%.*s", (int)(n - kl - 1), p + kl + 1);
      return true;
    }
    p = amp ? amp + 1 : NULL;
  }
  return false;
}

static enum MHD_Result tok_reply(struct MHD_Connection *c, unsigned status, const char *body) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header(r, "Content-Type", "application/json");
  if (status == 503 || status == 429) MHD_add_response_header(r, "Retry-After", "1");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result tok_handler(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *version,
                                   const char *upload, size_t *upload_size, void **con_cls) {
  tok_srv_t *s = cls;
  if (!*con_cls) {
    post_ctx_t *p = calloc(1, sizeof *p);
    if (!p) return MHD_NO;
    *con_cls = p;
    return MHD_YES;
  }
  post_ctx_t *p = *con_cls;
  if (*upload_size) {
    if (p->len + *upload_size >= sizeof p->body) p->over = true;
    else {
      memcpy(p->body + p->len, upload, *upload_size);
      p->len += *upload_size;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  p->body[p->len] = 0;
  if (strcmp(method, "POST") != 0 || strcmp(url, "/oauth2/v3/token") != 0 || p->over)
    return tok_reply(c, 404, "{\"error\":\"not_found\"}");
  atomic_fetch_add(&s->calls, 1);
  int d = atomic_load(&s->delay_ms);
  if (d > 0) usleep((useconds_t)d * 1000);
  if (atomic_load(&s->fail_count) > 0) {
    atomic_fetch_sub(&s->fail_count, 1);
    return tok_reply(c, (unsigned)atomic_load(&s->fail_status),
                     "{\"error\":\"temporarily_unavailable\"}");
  }
  char grant[64] = "", rt[256] = "", client[64] = "";
  form_get(p->body, "grant_type", grant, sizeof grant);
  form_get(p->body, "refresh_token", rt, sizeof rt);
  form_get(p->body, "client_id", client, sizeof client);
  pthread_mutex_lock(&s->mu);
  snprintf(s->last_client, sizeof s->last_client, "%s", client);
  if (strcmp(grant, "refresh_token") != 0 || strcmp(rt, s->current_rt) != 0) {
    pthread_mutex_unlock(&s->mu);
    return tok_reply(c, 401,
                     "{\"error\":\"login_required\",\"error_description\":\"The refresh_token "
                     "is invalid or was already used\"}");
  }
  s->seq++;
  snprintf(s->current_rt, sizeof s->current_rt, "NA_rotated-%d", s->seq);
  char at[1024], json[2048];
  char salt[32];
  snprintf(salt, sizeof salt, "seq%d", s->seq);
  make_jwt(at, sizeof at, fq_now_ms() / 1000 + s->expires_in, "\"vehicle_cmds\",\"energy_cmds\"",
           salt);
  snprintf(json, sizeof json,
           "{\"access_token\":\"%s\",\"refresh_token\":\"%s\",\"expires_in\":%lld,"
           "\"token_type\":\"Bearer\"}",
           at, s->current_rt, (long long)s->expires_in);
  pthread_mutex_unlock(&s->mu);
  return tok_reply(c, 200, json);
}

static void tok_done(void *cls, struct MHD_Connection *c, void **con_cls,
                     enum MHD_RequestTerminationCode toe) {
  free(*con_cls);
  *con_cls = NULL;
}

static int tok_start(tok_srv_t *s, const char *rt) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  snprintf(s->current_rt, sizeof s->current_rt, "%s", rt);
  s->expires_in = 8 * 3600;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                              MHD_USE_POLL,
                          0, NULL, NULL, tok_handler, s, MHD_OPTION_SOCK_ADDR, &sa,
                          MHD_OPTION_NOTIFY_COMPLETED, tok_done, NULL, MHD_OPTION_END);
  if (!s->d) return -1;
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : 0;
  return s->port ? 0 : -1;
}

static void tok_stop(tok_srv_t *s) {
  if (s->d) MHD_stop_daemon(s->d);
  pthread_mutex_destroy(&s->mu);
}

static void push_refresh(harness_t *h, const char *id) {
  char buf[80];
  int n = snprintf(buf, sizeof buf, "R%s", id);
  zmq_send(h->push, buf, (size_t)n, 0);
}

typedef struct acct_wait {
  harness_t *h;
  const char *id;
  const char *rt;   /* wait until the stored refresh token equals this */
} acct_wait_t;

static bool stored_rt_is(void *arg) {
  acct_wait_t *w = arg;
  fq_account_t *a = fq_account_new();
  bool ok = fq_accounts_get(w->h->acc, w->id, a, NULL) == 0 && strcmp(a->refresh_token, w->rt) == 0;
  fq_account_free(&a);
  return ok;
}

typedef struct fail_wait {
  harness_t *h;
  const char *id;
} fail_wait_t;

static bool has_failure(void *arg) {
  fail_wait_t *w = arg;
  return fq_auth_refresh_failure(w->h->auth, w->id, NULL, 0);
}

typedef struct calls_wait {
  tok_srv_t *s;
  int n;
} calls_wait_t;

static bool calls_reach(void *arg) {
  calls_wait_t *w = arg;
  return atomic_load(&w->s->calls) >= w->n;
}

/* Watches the generation from another thread, the way a shard would, and
 * checks that whenever it moves the store already holds what it
 * announces: a rotated refresh token is never announced before it is
 * stored. */
typedef struct watcher {
  harness_t *h;
  const char *id;
  _Atomic bool stop;
  int bumps;
  int bad;             /* bumps after which the access token changed but the
                          refresh token was still the old one */
  char old_rt[128];
} watcher_t;

static void *watch_main(void *arg) {
  watcher_t *w = arg;
  uint64_t g = fq_auth_generation(w->h->auth);
  fq_account_t *a = fq_account_new();
  char prev_at[2048] = "opaque-access";
  while (!atomic_load(&w->stop)) {
    uint64_t ng = fq_auth_generation(w->h->auth);
    if (ng != g) {
      g = ng;
      w->bumps++;
      /* The endpoint rotates on every refresh: a new access token with the
       * previous refresh token means the bump came before the write. */
      if (fq_accounts_get(w->h->acc, w->id, a, NULL) == 0 && strcmp(a->access_token, prev_at) != 0) {
        if (strcmp(a->refresh_token, w->old_rt) == 0) w->bad++;
        snprintf(prev_at, sizeof prev_at, "%.2000s", a->access_token);
        snprintf(w->old_rt, sizeof w->old_rt, "%.120s", a->refresh_token);
      }
    }
    usleep(200);
  }
  fq_account_free(&a);
  return NULL;
}

FQ_TEST(auth_refresh_single_flight_and_rotation) {
  tok_srv_t srv;
  CHECK_INT(tok_start(&srv, SECRET_RT), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/oauth2/v3/token", srv.port);
  harness_t h = {0};
  CHECK_INT(h_start(&h, url, NULL, 0, false), 0);
  /* A token without expiry: nothing refreshes it but a request. */
  kv_t add[] = {{"account", "acct-1"}, {"access_token", "opaque-access"},
                {"refresh_token", SECRET_RT}, {"client_id", "client-77"}, {"region", "na"}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  fq_msg_free(&m);

  watcher_t w = {.h = &h, .id = "acct-1"};
  snprintf(w.old_rt, sizeof w.old_rt, "%s", SECRET_RT);
  pthread_t wt;
  pthread_create(&wt, NULL, watch_main, &w);

  /* Three shards ask at once while the endpoint takes 400 ms: one call. */
  atomic_store(&srv.delay_ms, 400);
  push_refresh(&h, "acct-1");
  usleep(50000);
  push_refresh(&h, "acct-1");
  push_refresh(&h, "acct-1");
  acct_wait_t aw = {&h, "acct-1", "NA_rotated-1"};
  CHECK(wait_until(stored_rt_is, &aw, 5000));
  usleep(200000);
  CHECK_INT(atomic_load(&srv.calls), 1);
  CHECK_INT(fq_auth_token_calls(h.auth), 1);
  CHECK_STR(srv.last_client, "client-77");
  CHECK(!fq_auth_refresh_failure(h.auth, "acct-1", NULL, 0));

  fq_account_t *st = fq_account_new();
  fq_err_t err;
  CHECK_INT(fq_accounts_get(h.acc, "acct-1", st, &err), 0);
  CHECK_STR(st->refresh_token, "NA_rotated-1");
  CHECK(strncmp(st->access_token, "eyJ", 3) == 0);
  CHECK(st->access_exp > fq_now_ms() / 1000 + 7 * 3600);
  CHECK_INT(st->scopes, FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_ENERGY_CMDS);

  /* An ask after the success starts a new refresh (the asker may have been
   * refused the new token), which again rotates and stores. */
  atomic_store(&srv.delay_ms, 0);
  push_refresh(&h, "acct-1");
  acct_wait_t aw2 = {&h, "acct-1", "NA_rotated-2"};
  CHECK(wait_until(stored_rt_is, &aw2, 5000));
  usleep(200000);
  CHECK_INT(atomic_load(&srv.calls), 2);

  atomic_store(&w.stop, true);
  pthread_join(wt, NULL);
  CHECK(w.bumps >= 2);
  CHECK_INT(w.bad, 0);

  /* Durable: a fresh store handle after the thread stopped sees it. */
  h_stop(&h);
  fq_accounts_t *again = fq_accounts_open(h.dir, &err);
  CHECK(again != NULL);
  if (again) {
    CHECK_INT(fq_accounts_get(again, "acct-1", st, &err), 0);
    CHECK_STR(st->refresh_token, "NA_rotated-2");
    fq_accounts_destroy(&again);
  }
  fq_account_free(&st);
  fq_buf_free(&raw);
  tok_stop(&srv);
  rmrf(h.dir);
}

FQ_TEST(auth_refresh_retries_then_rejected) {
  tok_srv_t srv;
  CHECK_INT(tok_start(&srv, "NA_good"), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/oauth2/v3/token", srv.port);
  harness_t h = {0};
  CHECK_INT(h_start(&h, url, NULL, 0, false), 0);
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);

  /* 503 twice, then success: retried with backoff, no failure recorded. */
  kv_t add[] = {{"account", "busy"}, {"access_token", "opaque-a"}, {"refresh_token", "NA_good"},
                {"client_id", "c"}, {"region", "na"}};
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  atomic_store(&srv.fail_status, 503);
  atomic_store(&srv.fail_count, 1);
  int64_t t0 = fq_now_ms();
  push_refresh(&h, "busy");
  acct_wait_t aw = {&h, "busy", "NA_rotated-1"};
  CHECK(wait_until(stored_rt_is, &aw, 15000));
  int64_t took = fq_now_ms() - t0;
  CHECK_INT(atomic_load(&srv.calls), 2);
  CHECK(took >= 4500); /* the first backoff step is 5 s */
  CHECK(!fq_auth_refresh_failure(h.auth, "busy", NULL, 0));
  printf("  retry after 503 took %lld ms\n", (long long)took);

  /* A refresh token the endpoint does not know: rejected and recorded. */
  kv_t add2[] = {{"account", "dead"}, {"access_token", "opaque-b"},
                 {"refresh_token", "NA_spent"}, {"client_id", "c"}, {"region", "na"}};
  CHECK_INT(admin(&h, "account_add", add2, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  uint64_t g = fq_auth_generation(h.auth);
  int before = atomic_load(&srv.calls);
  push_refresh(&h, "dead");
  fail_wait_t fw = {&h, "dead"};
  CHECK(wait_until(has_failure, &fw, 5000));
  CHECK(fq_auth_generation(h.auth) > g);
  char why[512];
  CHECK(fq_auth_refresh_failure(h.auth, "dead", why, sizeof why));
  CHECK(strstr(why, "login_required") != NULL);
  CHECK(strstr(why, "fleetq account add") != NULL);
  CHECK(strstr(why, "NA_spent") == NULL);
  /* Not hammered: more asks do not call the endpoint again. */
  push_refresh(&h, "dead");
  push_refresh(&h, "dead");
  usleep(300000);
  CHECK_INT(atomic_load(&srv.calls), before + 1);
  /* The tokens are kept; account_get shows the failure. */
  fq_account_t *st = fq_account_new();
  CHECK_INT(fq_accounts_get(h.acc, "dead", st, NULL), 0);
  CHECK_STR(st->refresh_token, "NA_spent");
  fq_account_free(&st);
  kv_t one[] = {{"account", "dead"}};
  CHECK_INT(admin(&h, "account_get", one, 1, 0, &m, &raw), 0);
  const char *rf = NULL;
  size_t rn = 0;
  CHECK(fq_mp_str(fq_mp_get(fq_mp_get(m.root, "account"), "refresh_failure"), &rf, &rn));
  CHECK(rn && memmem(rf, rn, "login_required", 14));
  fq_msg_free(&m);
  /* Connecting again (account_add with good tokens) clears it. */
  pthread_mutex_lock(&srv.mu);
  snprintf(srv.current_rt, sizeof srv.current_rt, "NA_fresh");
  pthread_mutex_unlock(&srv.mu);
  kv_t add3[] = {{"account", "dead"}, {"access_token", "opaque-c"},
                 {"refresh_token", "NA_fresh"}, {"client_id", "c"}, {"region", "na"}};
  CHECK_INT(admin(&h, "account_add", add3, 5, 0, &m, &raw), 0);
  CHECK(fq_mp_get(fq_mp_get(m.root, "account"), "refresh_failure") == NULL);
  fq_msg_free(&m);
  CHECK(!fq_auth_refresh_failure(h.auth, "dead", NULL, 0));
  push_refresh(&h, "dead");
  acct_wait_t aw2 = {&h, "dead", "NA_rotated-2"};
  CHECK(wait_until(stored_rt_is, &aw2, 5000));

  fq_buf_free(&raw);
  h_stop(&h);
  tok_stop(&srv);
  rmrf(h.dir);
}

FQ_TEST(auth_refresh_expiring_tokens_by_itself) {
  tok_srv_t srv;
  CHECK_INT(tok_start(&srv, "NA_r0"), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/oauth2/v3/token", srv.port);
  harness_t h = {0};
  fq_err_t err;
  /* Stored before the daemon starts, expiring in 2 minutes (inside the
   * 5-minute margin), plus one that is good for hours. */
  CHECK(tmpdir(h.dir, sizeof h.dir) != NULL);
  fq_accounts_t *pre = fq_accounts_open(h.dir, &err);
  CHECK(pre != NULL);
  fq_account_t *a = fq_account_new();
  snprintf(a->id, sizeof a->id, "soon");
  snprintf(a->client_id, sizeof a->client_id, "c");
  snprintf(a->region, sizeof a->region, "na");
  make_jwt(a->access_token, sizeof a->access_token, fq_now_ms() / 1000 + 120, "\"vehicle_cmds\"",
           "soon");
  snprintf(a->refresh_token, sizeof a->refresh_token, "NA_r0");
  CHECK_INT(fq_accounts_put(pre, a, &err), 0);
  snprintf(a->id, sizeof a->id, "later");
  make_jwt(a->access_token, sizeof a->access_token, fq_now_ms() / 1000 + 6 * 3600,
           "\"vehicle_cmds\"", "later");
  snprintf(a->refresh_token, sizeof a->refresh_token, "NA_other");
  CHECK_INT(fq_accounts_put(pre, a, &err), 0);
  fq_account_free(&a);
  fq_accounts_destroy(&pre);

  CHECK_INT(h_start(&h, url, NULL, 200, true), 0);
  acct_wait_t aw = {&h, "soon", "NA_rotated-1"};
  CHECK(wait_until(stored_rt_is, &aw, 5000));
  usleep(600000); /* a few more scans: the fresh token is not refreshed again */
  CHECK_INT(atomic_load(&srv.calls), 1);

  /* account_add of an almost expired token refreshes it at once. */
  char at[1024];
  make_jwt(at, sizeof at, fq_now_ms() / 1000 + 60, "\"vehicle_cmds\"", "added");
  pthread_mutex_lock(&srv.mu);
  snprintf(srv.current_rt, sizeof srv.current_rt, "NA_added");
  pthread_mutex_unlock(&srv.mu);
  kv_t add[] = {{"account", "added"}, {"access_token", at}, {"refresh_token", "NA_added"},
                {"client_id", "c"}, {"region", "na"}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  fq_msg_free(&m);
  acct_wait_t aw2 = {&h, "added", "NA_rotated-2"};
  CHECK(wait_until(stored_rt_is, &aw2, 5000));
  calls_wait_t cw = {&srv, 2};
  CHECK(calls_reach(&cw));
  usleep(300000);
  CHECK_INT(atomic_load(&srv.calls), 2);
  fq_buf_free(&raw);
  h_stop(&h);
  tok_stop(&srv);
  rmrf(h.dir);
}

/* An account re-added while its refresh runs: with the same refresh token
 * the answer is still stored (the endpoint spent that token); with other
 * tokens it is dropped and the new tokens stay. */
FQ_TEST(auth_readd_during_refresh) {
  tok_srv_t srv;
  CHECK_INT(tok_start(&srv, "NA_same"), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/oauth2/v3/token", srv.port);
  harness_t h = {0};
  CHECK_INT(h_start(&h, url, NULL, 0, false), 0);
  kv_t add[] = {{"account", "readd"}, {"access_token", "opaque-r"},
                {"refresh_token", "NA_same"}, {"client_id", "c"}, {"region", "na"}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  atomic_store(&srv.delay_ms, 500);
  push_refresh(&h, "readd");
  calls_wait_t cw = {&srv, 1};
  CHECK(wait_until(calls_reach, &cw, 3000));
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0); /* the same again */
  fq_msg_free(&m);
  acct_wait_t aw = {&h, "readd", "NA_rotated-1"};
  CHECK(wait_until(stored_rt_is, &aw, 5000));

  push_refresh(&h, "readd");
  cw.n = 2;
  CHECK(wait_until(calls_reach, &cw, 3000));
  kv_t other[] = {{"account", "readd"}, {"access_token", "opaque-new"},
                  {"refresh_token", "NA_from_user"}, {"client_id", "c"}, {"region", "na"}};
  CHECK_INT(admin(&h, "account_add", other, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  usleep(900000); /* the running request answers meanwhile */
  fq_account_t *st = fq_account_new();
  CHECK_INT(fq_accounts_get(h.acc, "readd", st, NULL), 0);
  CHECK_STR(st->refresh_token, "NA_from_user");
  CHECK_STR(st->access_token, "opaque-new");
  fq_account_free(&st);
  CHECK_INT(atomic_load(&srv.calls), 2);
  fq_buf_free(&raw);
  h_stop(&h);
  tok_stop(&srv);
  rmrf(h.dir);
}

/* Stopping while a token request runs waits for its answer and stores
 * the rotated token: losing it would lock the account out. */
FQ_TEST(auth_stop_waits_for_running_refresh) {
  tok_srv_t srv;
  CHECK_INT(tok_start(&srv, "NA_s0"), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/oauth2/v3/token", srv.port);
  harness_t h = {0};
  CHECK_INT(h_start(&h, url, NULL, 0, false), 0);
  kv_t add[] = {{"account", "stopper"}, {"access_token", "opaque-s"},
                {"refresh_token", "NA_s0"}, {"client_id", "c"}, {"region", "na"}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  atomic_store(&srv.delay_ms, 700);
  push_refresh(&h, "stopper");
  calls_wait_t cw = {&srv, 1};
  CHECK(wait_until(calls_reach, &cw, 3000));
  h_stop(&h); /* sends 'T' while the endpoint still sleeps */
  fq_err_t err;
  fq_accounts_t *again = fq_accounts_open(h.dir, &err);
  CHECK(again != NULL);
  if (again) {
    fq_account_t *st = fq_account_new();
    CHECK_INT(fq_accounts_get(again, "stopper", st, &err), 0);
    CHECK_STR(st->refresh_token, "NA_rotated-1");
    fq_account_free(&st);
    fq_accounts_destroy(&again);
  }
  fq_buf_free(&raw);
  tok_stop(&srv);
  rmrf(h.dir);
}

/* ------------------------------------------------------------------ */
/* Against fleetsim: base_url + /oauth2/v3/token, single-use rotation    */

static int sim_get_json(uint16_t port, const char *path, char *out, size_t cap) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "curl -s --max-time 5 http://127.0.0.1:%u%s", port, path);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  return pclose(f) == 0 ? 0 : -1;
}

FQ_TEST(auth_refresh_against_fleetsim) {
  json_error_t je;
  json_t *cfg = json_loads(
      "{\"accounts\": [{\"id\": \"simacct\", \"token\": \"sim-t1\", \"refresh_token\": "
      "\"sim-r1\", \"vins\": [\"5YJ3E1EA7KF000001\"]},"
      "{\"id\": \"other\", \"token\": \"sim-t2\", \"refresh_token\": \"sim-r2\"}]}",
      0, &je);
  CHECK(cfg != NULL);
  fq_err_t err = {0};
  fq_sim_t *sim = cfg ? fq_sim_new_json(cfg, NULL, &err) : NULL;
  json_decref(cfg);
  if (!sim) {
    fprintf(stderr, "  fq_sim_new_json: %s\n", err.msg);
    fq_test_failures++;
    return;
  }
  CHECK_INT(fq_sim_start(sim, "127.0.0.1", 0, NULL, NULL, &err), 0);
  uint16_t port = fq_sim_port(sim);
  char base[64];
  snprintf(base, sizeof base, "http://127.0.0.1:%u", port);
  harness_t h = {0};
  CHECK_INT(h_start(&h, NULL, NULL, 0, false), 0);
  kv_t add[] = {{"account", "simacct"}, {"access_token", "sim-t1"},
                {"refresh_token", "sim-r1"}, {"client_id", "sim-client"}, {"base_url", base}};
  fq_msg_t m;
  fq_buf_t raw;
  fq_buf_init(&raw, 1 << 20);
  CHECK_INT(admin(&h, "account_add", add, 5, 0, &m, &raw), 0);
  CHECK(reply_ok(&m));
  fq_msg_free(&m);

  /* fleetsim rotates on every call and refuses a spent refresh token;
   * one ask makes exactly one rotation (seq 1).  (Single flight under
   * concurrent asks is checked against the slow endpoint above, where the
   * timing is under the test's control.) */
  push_refresh(&h, "simacct");
  fq_account_t *st = fq_account_new();
  bool done = false;
  for (int i = 0; i < 500 && !done; i++) {
    usleep(10000);
    done = fq_accounts_get(h.acc, "simacct", st, NULL) == 0 &&
           strcmp(st->refresh_token, "sim-r1") != 0;
  }
  CHECK(done);
  usleep(300000);
  CHECK(!fq_auth_refresh_failure(h.auth, "simacct", NULL, 0));
  CHECK_INT(fq_auth_token_calls(h.auth), 1);
  CHECK(strncmp(st->refresh_token, "NA_sim1", 7) == 0);
  CHECK(st->access_exp > fq_now_ms() / 1000 + 3600);
  /* What fleetsim holds now is exactly what we stored. */
  fq_accounts_get(h.acc, "simacct", st, NULL);
  char js[8192];
  CHECK_INT(sim_get_json(port, "/sim/accounts/simacct", js, sizeof js), 0);
  char want[256];
  snprintf(want, sizeof want, "\"refresh_token\": \"%.200s\"", st->refresh_token);
  char want2[256];
  snprintf(want2, sizeof want2, "\"refresh_token\":\"%.200s\"", st->refresh_token);
  CHECK(strstr(js, want) || strstr(js, want2));

  /* The new access token works against fleetsim's Fleet API. */
  char cmd[9000];
  snprintf(cmd, sizeof cmd,
           "curl -s -o /dev/null -w '%%{http_code}' --max-time 5 -H 'Authorization: Bearer %s' "
           "http://127.0.0.1:%u/api/1/vehicles",
           st->access_token, port);
  FILE *f = popen(cmd, "r");
  char code[8] = "";
  if (f) {
    if (!fgets(code, sizeof code, f)) code[0] = 0;
    pclose(f);
  }
  CHECK_STR(code, "200");

  /* Using the old, spent refresh token is refused by fleetsim: an account
   * added with it is rejected and recorded. */
  kv_t stale[] = {{"account", "simacct"}, {"access_token", "sim-t1"},
                  {"refresh_token", "sim-r1"}, {"client_id", "sim-client"}, {"base_url", base}};
  CHECK_INT(admin(&h, "account_add", stale, 5, 0, &m, &raw), 0);
  fq_msg_free(&m);
  push_refresh(&h, "simacct");
  fail_wait_t fw = {&h, "simacct"};
  CHECK(wait_until(has_failure, &fw, 5000));
  char why[512];
  fq_auth_refresh_failure(h.auth, "simacct", why, sizeof why);
  CHECK(strstr(why, "login_required") != NULL);
  printf("  rejected refresh reason: %s\n", why);
  fq_account_free(&st);
  fq_buf_free(&raw);
  h_stop(&h);
  fq_sim_destroy(&sim);
  rmrf(h.dir);
}
