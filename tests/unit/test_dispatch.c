/*
 * Unit tests of the dispatcher's state machine, without a network: the
 * test plays the shard (a real store in a temporary directory, the device
 * queues, the transition callback), Fleet API (a transport table that
 * records every request and delivers the answers each test chooses) and,
 * for signed commands, the car (the car-side verifier of src/sim checks
 * every signature, counter and expiry).  Time is the test's: every step
 * gets an explicit now, so retry, wake and expiry timing is exact.
 *
 * Each case checks the command's final state, reason, error code and
 * attempts, the transitions it went through and the requests it made.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>
#include <zmq.h>

#include "accounts.h"
#include "auth.h"
#include "devq.h"
#include "dispatch.h"
#include "fleetq/commands.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "http.h"
#include "store.h"
#include "util.h"
#include "vcp.h"
#include "vcp_car.h"

/* A fixed clock: whole seconds, so vehicle times are easy to predict. */
#define T0 INT64_C(1700000000000)
#define VIN "5YJ3E1EA7KF000001"
#define VIN2 "5YJ3E1EA7KF000002"
#define DEV "v:" VIN
#define DEV2 "v:" VIN2
#define BASE "https://fleet-api.test.example"
#define PAIRING "fleet.test.example"
#define TOKEN_A "tok-A-not-a-secret"
#define TOKEN_B "tok-B-not-a-secret"

/* --- the fake Fleet API ------------------------------------------------------ */

#define MAX_REQS 64
#define MAX_LOG 256

/* One request the dispatcher started, and the answer the test gave it. */
typedef struct treq {
  fq_http_method_t method;
  char url[512];
  char body[8192];
  size_t body_len;
  int token;                 /* which test token was sent: 0 = A, 1 = B, -1 none, -2 other */
  int64_t at;                /* test clock when it was launched */
  fq_http_cb cb;
  void *cb_ud;
  uint64_t id;
  bool ready, done;          /* an answer is set / was delivered */
  fq_http_resp_t resp;
  char resp_body[8192];
} treq_t;

/* One transition the dispatcher recorded. */
typedef struct tlog {
  uint64_t num;
  int state, error;
  uint32_t attempts;
  char reason[FQ_REASON_MAX];
} tlog_t;

/* The car: both domains of one vehicle, with their own key; the fleet key
 * is paired unless a test says otherwise. */
typedef struct car {
  fq_vcp_key_t *key;
  fq_vcp_vdomain_t *vd[2];   /* VCSEC, INFOTAINMENT */
  const char *reject;        /* NULL: execute; else refuse with this reason */
  int handshakes, accepted, faults;
  uint32_t last_expires_at;  /* of the last command accepted */
} car_t;

typedef struct h {
  char dir[64];
  fq_store_t *store;
  fq_devq_t *q;
  fq_accounts_t *acc;
  void *actx;        /* the auth side's own context (never started) */
  fq_auth_t *auth;   /* lent to the dispatcher: its account generation */
  fq_vcp_key_t *key;
  fq_dispatch_t *d;
  fq_dispatch_transport_t tr;
  void *zctx, *pull;         /* auth refresh requests (when asked for) */
  int64_t now;
  treq_t reqs[MAX_REQS];
  int nreqs;
  int fail_request;          /* when set, request() refuses with this code once */
  tlog_t log[MAX_LOG];
  int nlog;
  car_t car;
  int nsubmits;
  bool no_wake;              /* the next submits carry `wake: false` */
  const char *account;       /* account of the next submits; NULL: "acct" */
  int fail_transitions;      /* the next this many state changes fail (storage full) */
} h_t;

static int tr_request(void *ud, const fq_http_req_t *req, fq_http_cb cb, void *cb_ud,
                      uint64_t *id, fq_err_t *err) {
  h_t *h = ud;
  if (h->fail_request) {
    int rc = h->fail_request;
    h->fail_request = 0;
    return fq_errf(err, rc, "refused by the test transport");
  }
  if (h->nreqs == MAX_REQS) return fq_errf(err, FQ_EBUSY, "test transport full");
  treq_t *r = &h->reqs[h->nreqs];
  memset(r, 0, sizeof *r);
  r->method = req->method;
  snprintf(r->url, sizeof r->url, "%s", req->url);
  r->body_len = req->body_len < sizeof r->body - 1 ? req->body_len : sizeof r->body - 1;
  if (r->body_len) memcpy(r->body, req->body, r->body_len);
  /* Record which token was used, never the token itself. */
  r->token = !req->bearer                        ? -1
             : strcmp(req->bearer, TOKEN_A) == 0 ? 0
             : strcmp(req->bearer, TOKEN_B) == 0 ? 1
                                                 : -2;
  r->at = h->now;
  r->cb = cb;
  r->cb_ud = cb_ud;
  r->id = (uint64_t)h->nreqs + 1;
  *id = r->id;
  h->nreqs++;
  return 0;
}

static int tr_perform(void *ud, const zmq_pollitem_t *items, int n, fq_err_t *err) {
  h_t *h = ud;
  (void)items;
  (void)n;
  (void)err;
  int ran = 0;
  for (int i = 0; i < h->nreqs; i++) {
    treq_t *r = &h->reqs[i];
    if (!r->ready || r->done) continue;
    r->done = true;
    r->resp.id = r->id;
    r->resp.body = (const uint8_t *)r->resp_body;
    r->resp.body_len = strlen(r->resp_body);
    r->cb(r->cb_ud, &r->resp);
    ran++;
  }
  return ran;
}

static unsigned tr_inflight(void *ud) {
  h_t *h = ud;
  unsigned n = 0;
  for (int i = 0; i < h->nreqs; i++) n += !h->reqs[i].done;
  return n;
}

/* Answer request i (delivered by the next step). */
static void answer_hdr(h_t *h, int i, long status, const char *retry_after, const char *body) {
  if (i < 0 || i >= h->nreqs || h->reqs[i].ready) {
    FQ__FAIL("answer to request %d of %d (already answered or never made)", i, h->nreqs);
    return;
  }
  treq_t *r = &h->reqs[i];
  r->ready = true;
  r->resp.outcome = FQ_HTTP_COMPLETE;
  r->resp.status = status;
  if (retry_after) snprintf(r->resp.retry_after, sizeof r->resp.retry_after, "%s", retry_after);
  snprintf(r->resp_body, sizeof r->resp_body, "%s", body ? body : "");
}

static void answer(h_t *h, int i, long status, const char *body) {
  answer_hdr(h, i, status, NULL, body);
}

/* Fleet API's RateLimit-* headers on answer i (call before its step). */
static void answer_budget(h_t *h, int i, const char *limit, const char *remaining,
                          const char *reset) {
  treq_t *r = &h->reqs[i];
  snprintf(r->resp.ratelimit_limit, sizeof r->resp.ratelimit_limit, "%s", limit);
  snprintf(r->resp.ratelimit_remaining, sizeof r->resp.ratelimit_remaining, "%s", remaining);
  snprintf(r->resp.ratelimit_reset, sizeof r->resp.ratelimit_reset, "%s", reset);
}

/* A transport failure instead of an answer. */
static void answer_transport(h_t *h, int i, fq_http_outcome_t outcome, int curl_code,
                             const char *msg) {
  if (i < 0 || i >= h->nreqs || h->reqs[i].ready) {
    FQ__FAIL("transport answer to request %d of %d", i, h->nreqs);
    return;
  }
  treq_t *r = &h->reqs[i];
  r->ready = true;
  r->resp.outcome = outcome;
  r->resp.curl_code = curl_code;
  fq_errf(&r->resp.err, outcome == FQ_HTTP_TRUNCATED ? FQ_ETOOLARGE : FQ_EHTTP, "%s", msg);
}

/* --- the car ------------------------------------------------------------------ */

static int car_init(h_t *h, bool paired) {
  fq_err_t err;
  car_t *c = &h->car;
  if (fq_vcp_key_generate(&c->key, &err) != 0) return -1;
  const int doms[2] = {FQ_VCP_DOMAIN_VCSEC, FQ_VCP_DOMAIN_INFOTAINMENT};
  for (int i = 0; i < 2; i++) {
    /* The car's clock reads 100 s at T0. */
    if (fq_vcp_vdomain_new(VIN, doms[i], c->key, NULL, T0 - 100000, &c->vd[i], &err) != 0)
      return -1;
    if (paired && fq_vcp_vdomain_pair(c->vd[i], fq_vcp_key_public(h->key), &err) != 0)
      return -1;
  }
  return 0;
}

static void car_free(car_t *c) {
  for (int i = 0; i < 2; i++) fq_vcp_vdomain_destroy(&c->vd[i]);
  fq_vcp_key_destroy(&c->key);
}

/* Answer request i as Fleet API and the car would: verify the signed
 * message, execute or refuse it, and wrap the car's reply. */
static void car_answer(h_t *h, int i) {
  treq_t *r = &h->reqs[i];
  car_t *c = &h->car;
  static const char key[] = "{\"routable_message\":\"";
  if (i >= h->nreqs || !strstr(r->url, "/signed_command") ||
      strncmp(r->body, key, sizeof key - 1) != 0) {
    FQ__FAIL("request %d is not a signed command: %s", i, i < h->nreqs ? r->url : "(none)");
    return;
  }
  const char *b64 = r->body + sizeof key - 1;
  const char *end = strchr(b64, '"');
  uint8_t msg[FQ_VCP_MAX_MSG];
  long n = end ? fq_base64_decode(b64, (size_t)(end - b64), msg, sizeof msg) : -1;
  if (n < 0) {
    FQ__FAIL("request %d: routable_message is not base64", i);
    return;
  }
  int dom = fq_vcp_peek_domain(msg, (size_t)n);
  fq_vcp_vdomain_t *vd = dom == FQ_VCP_DOMAIN_VCSEC ? c->vd[0] : c->vd[1];
  static fq_vcp_vrequest_t vr;
  fq_buf_t out, app;
  fq_buf_init(&out, 1 << 16);
  fq_buf_init(&app, 1 << 12);
  fq_err_t err;
  int rc = fq_vcp_vdomain_handle(vd, msg, (size_t)n, h->now, &vr, &out, &err);
  CHECK_INT(rc, 0);
  if (vr.is_handshake) {
    c->handshakes++;
  } else if (vr.fault) {
    c->faults++;
  } else {
    c->accepted++;
    c->last_expires_at = vr.expires_at;
    if (dom == FQ_VCP_DOMAIN_VCSEC)
      rc = fq_vcp_app_vcsec_reply(-1, c->reject ? 5 : 0, &app);
    else
      rc = fq_vcp_app_carserver_reply(!c->reject, c->reject, &app);
    if (!rc) rc = fq_vcp_vdomain_reply(vd, &vr, app.data, app.len, NULL, 0, &out, &err);
    CHECK_INT(rc, 0);
  }
  char *body = malloc(4 * ((out.len + 2) / 3) + 32);
  if (body) {
    int k = snprintf(body, 32, "{\"response\":\"");
    k += (int)fq_base64_encode(out.data, out.len, body + k);
    snprintf(body + k, 4, "\"}");
    answer(h, i, 200, body);
  }
  free(body);
  fq_buf_free(&out);
  fq_buf_free(&app);
}

/* --- the fake shard ----------------------------------------------------------- */

/* The shard's side of env.transition: record, transition list, queue
 * membership when terminal; and a log line for the test. */
static int t_transition(void *shard, fq_cmdrec_t *rec, int state, const char *reason, int error,
                        int64_t now, bool put, fq_err_t *err) {
  h_t *h = shard;
  if (h->fail_transitions > 0) {
    /* As a full map fails a write: nothing of the change is recorded. */
    h->fail_transitions--;
    return fq_errf(err, FQ_ESTORFULL, "storage full (the test's)");
  }
  rec->state = state;
  rec->updated = now;
  snprintf(rec->reason, sizeof rec->reason, "%s", reason ? reason : "");
  rec->error = error;
  if (rec->ntrans < FQ_MAX_TRANSITIONS) {
    rec->trans[rec->ntrans].state = state;
    rec->trans[rec->ntrans].at = now;
    rec->ntrans++;
  }
  int rc;
  if (fq_state_terminal(state)) {
    if ((rc = fq_store_active_del(h->store, rec->id, err)) != 0) return rc;
    fq_devq_remove(h->q, fq_store_id_num(rec->id));
  }
  if (put && (rc = fq_store_cmd_put(h->store, rec, err)) != 0) return rc;
  if (h->nlog < MAX_LOG) {
    tlog_t *l = &h->log[h->nlog++];
    l->num = fq_store_id_num(rec->id);
    l->state = state;
    l->error = error;
    l->attempts = rec->attempts;
    snprintf(l->reason, sizeof l->reason, "%s", rec->reason);
  }
  return 0;
}

typedef struct hopts {
  bool refresh;              /* give the dispatcher an auth refresh endpoint */
  bool unpaired;             /* the car does not know the fleet key */
  int64_t wake_timeout_ms;
  int wake_max;              /* 0: the default (3) */
  double device_rate;
  uint64_t map_size;         /* the store's map; 0: 64 MiB */
  int64_t fleet_status_ttl_ms; /* 0: no fleet_status pre-check */
} hopts_t;

static int h_open(h_t *h, const hopts_t *o) {
  memset(h, 0, sizeof *h);
  snprintf(h->dir, sizeof h->dir, "/tmp/fq_dispatch_XXXXXX");
  if (!mkdtemp(h->dir)) return -1;
  fq_err_t err;
  h->now = T0;
  if (!(h->store = fq_store_open(h->dir, 0, o && o->map_size ? o->map_size : 64 << 20, &err)))
    goto fail;
  if (!(h->q = fq_devq_new())) goto fail;
  if (!(h->acc = fq_accounts_open(h->dir, &err))) goto fail;
  /* An auth side that is never started: the dispatcher only reads its
   * account generation, which the test bumps after each account write. */
  if (!(h->actx = zmq_ctx_new())) goto fail;
  fq_auth_opts_t ao = {.zmq_ctx = h->actx, .accounts = h->acc};
  if (!(h->auth = fq_auth_new(&ao, &err))) goto fail;
  if (fq_vcp_key_generate(&h->key, &err) != 0) goto fail;
  if (car_init(h, !(o && o->unpaired)) != 0) goto fail;
  fq_account_t *a = fq_account_new();
  if (!a) goto fail;
  snprintf(a->id, sizeof a->id, "acct");
  snprintf(a->client_id, sizeof a->client_id, "client-1");
  snprintf(a->base_url, sizeof a->base_url, "%s", BASE);
  snprintf(a->access_token, sizeof a->access_token, "%s", TOKEN_A);
  snprintf(a->refresh_token, sizeof a->refresh_token, "refresh-A");
  a->access_exp = T0 / 1000 + 86400;
  a->scopes = FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_ENERGY_CMDS;
  int rc = fq_accounts_put(h->acc, a, &err);
  fq_account_free(&a);
  if (rc) goto fail;
  fq_auth_bump_generation(h->auth); /* as the auth thread does after every write */
  fq_dispatch_opts_t dopts = {.key = h->key,
                              .accounts = h->acc,
                              .auth = h->auth,
                              .pairing_domain = PAIRING,
                              .wake_poll_ms = 10000,
                              .retry_backoff_ms = 1000,
                              .http_timeout_ms = 10000,
                              .wake_timeout_ms = o && o->wake_timeout_ms ? o->wake_timeout_ms
                                                                         : 120000,
                              .wake_max = o ? o->wake_max : 0,
                              .device_rate = o ? o->device_rate : 0,
                              .fleet_status_ttl_ms = o ? o->fleet_status_ttl_ms : 0,
                              .transport = &h->tr};
  h->tr = (fq_dispatch_transport_t){
      .ud = h, .request = tr_request, .perform = tr_perform, .inflight = tr_inflight};
  char ep[64];
  if (o && o->refresh) {
    /* One endpoint per harness: a forking runner or a sequential one. */
    static int seq;
    snprintf(ep, sizeof ep, "inproc://test-dispatch-refresh-%d", seq++);
    if (!(h->zctx = zmq_ctx_new())) goto fail;
    if (!(h->pull = zmq_socket(h->zctx, ZMQ_PULL)) || zmq_bind(h->pull, ep) != 0) goto fail;
    dopts.zmq_ctx = h->zctx;
    dopts.auth_refresh_ep = ep;
  }
  fq_dispatch_env_t env = {.shard = h,
                           .shard_index = 0,
                           .store = h->store,
                           .q = &h->q,
                           .transition = t_transition};
  if (!(h->d = fq_dispatch_new(&dopts, &env, &err))) goto fail;
  return 0;
fail:
  fprintf(stderr, "  harness: %s\n", err.msg);
  return -1;
}

static void h_close(h_t *h) {
  fq_dispatch_destroy(&h->d);
  fq_auth_destroy(&h->auth);
  if (h->actx) zmq_ctx_term(h->actx);
  if (h->pull) zmq_close(h->pull);
  if (h->zctx) zmq_ctx_term(h->zctx);
  car_free(&h->car);
  fq_vcp_key_destroy(&h->key);
  fq_accounts_destroy(&h->acc);
  fq_devq_destroy(&h->q);
  fq_store_destroy(&h->store);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->dir);
  if (system(cmd) != 0) fprintf(stderr, "  cleanup of %s failed\n", h->dir);
}

/* One turn of the shard's loop at time now: the step inside a write
 * transaction, the commit, then the launch. */
static void step(h_t *h, int64_t now) {
  fq_err_t err;
  fq_err_clear(&err);
  h->now = now;
  for (int turn = 0; turn < 8; turn++) {
    if (fq_store_begin(h->store, true, &err) != 0) {
      FQ__FAIL("begin: %s", err.msg);
      return;
    }
    int rc = fq_dispatch_step(h->d, NULL, 0, now, &err);
    if (rc) {
      FQ__FAIL("step: %d %s", rc, err.msg);
      fq_store_abort(h->store);
      fq_dispatch_rollback(h->d);
      return;
    }
    if (fq_store_commit(h->store, &err) != 0) {
      FQ__FAIL("commit: %s", err.msg);
      return;
    }
    fq_dispatch_launch(h->d, now);
    /* The shard steps again at once while the dispatcher says so (a
     * request that could not be launched, a kick left over). */
    if (fq_dispatch_timeout_ms(h->d, now) != 0) return;
  }
}

/* Queue a command as the shard does on a submit, and kick its device. */
static uint64_t submit_p(h_t *h, const char *device, const char *command, const uint8_t *params,
                         size_t plen, int64_t ttl_ms) {
  fq_err_t err;
  fq_cmdrec_t rec;
  memset(&rec, 0, sizeof rec);
  if (fq_store_begin(h->store, true, &err) != 0) {
    FQ__FAIL("begin: %s", err.msg);
    return 0;
  }
  fq_store_new_id(h->store, rec.id, &rec.qseq);
  snprintf(rec.tenant, sizeof rec.tenant, "acme");
  snprintf(rec.key, sizeof rec.key, "key-%d", h->nsubmits++);
  snprintf(rec.account, sizeof rec.account, "%s", h->account ? h->account : "acct");
  snprintf(rec.device, sizeof rec.device, "%s", device);
  if (device[0] == 'v') snprintf(rec.vin, sizeof rec.vin, "%s", device + 2);
  else rec.site = strtoull(device + 2, NULL, 10);
  snprintf(rec.command, sizeof rec.command, "%s", command);
  rec.params = (uint8_t *)params; /* borrowed */
  rec.params_len = plen;
  rec.ttl_ms = ttl_ms;
  rec.no_wake = h->no_wake;
  rec.created = h->now;
  rec.deadline = h->now + ttl_ms;
  rec.fault = -1;
  rec.state = -1;
  uint64_t num = fq_store_id_num(rec.id);
  int rc = fq_store_active_put(h->store, &rec, &err);
  if (!rc) rc = fq_devq_push(h->q, rec.device, num, rec.deadline);
  if (!rc) rc = t_transition(h, &rec, FQ_ST_QUEUED, "", 0, h->now, true, &err);
  if (!rc) rc = fq_store_commit(h->store, &err);
  else fq_store_abort(h->store);
  if (rc) {
    FQ__FAIL("submit: %s", err.msg);
    return 0;
  }
  fq_dispatch_kick(h->d, device);
  return num;
}

static uint64_t submit(h_t *h, const char *device, const char *command, int64_t ttl_ms) {
  return submit_p(h, device, command, NULL, 0, ttl_ms);
}

/* The stored record of command num. */
static fq_cmdrec_t rec_of(h_t *h, uint64_t num) {
  fq_cmdrec_t rec;
  memset(&rec, 0, sizeof rec);
  rec.state = -1;
  char id[FQ_ID_LEN + 1];
  fq_store_id_format(0, num, id);
  fq_err_t err;
  if (fq_store_begin(h->store, false, &err) == 0) {
    if (fq_store_cmd_get(h->store, id, FQ_ID_LEN, &rec, &err) != 0) rec.state = -1;
    fq_store_abort(h->store);
  }
  return rec;
}

/* Check the final record: state, error code, attempts and a piece of the
 * reason ("" = the reason must be empty). */
static void check_cmd(h_t *h, uint64_t num, int state, int error, uint32_t attempts,
                      const char *reason_has, int line) {
  fq_cmdrec_t r = rec_of(h, num);
  if (r.state != state || r.error != error || r.attempts != attempts ||
      (reason_has[0] ? !strstr(r.reason, reason_has) : r.reason[0] != 0)) {
    fprintf(stderr,
            "  line %d: command %llu is %s/%s attempts %u reason \"%s\";\n"
            "    want %s/%s attempts %u reason with \"%s\"\n",
            line, (unsigned long long)num, fq_state_name(r.state), fq_errname(r.error),
            r.attempts, r.reason, fq_state_name(state), fq_errname(error), attempts,
            reason_has);
    fq_test_failures++;
  }
  fq_cmdrec_free(&r);
}
#define CHECK_CMD(h, num, state, error, attempts, reason) \
  check_cmd(h, num, state, error, attempts, reason, __LINE__)

/* Check that the reason of command num also holds `has`. */
static void check_reason(h_t *h, uint64_t num, const char *has, int line) {
  fq_cmdrec_t r = rec_of(h, num);
  if (!strstr(r.reason, has)) {
    fprintf(stderr, "  line %d: reason \"%s\" lacks \"%s\"\n", line, r.reason, has);
    fq_test_failures++;
  }
  fq_cmdrec_free(&r);
}
#define CHECK_REASON(h, num, has) check_reason(h, num, has, __LINE__)

/* Check that the reason of command num holds `has` exactly once. */
static void check_reason_once(h_t *h, uint64_t num, const char *has, int line) {
  fq_cmdrec_t r = rec_of(h, num);
  int n = 0;
  for (const char *p = r.reason; (p = strstr(p, has)) != NULL; p += strlen(has)) n++;
  if (n != 1) {
    fprintf(stderr, "  line %d: reason \"%s\" holds \"%s\" %d times, want once\n", line,
            r.reason, has, n);
    fq_test_failures++;
  }
  fq_cmdrec_free(&r);
}
#define CHECK_REASON_ONCE(h, num, has) check_reason_once(h, num, has, __LINE__)

/* Check the states command num went through, in order. */
static void check_states(h_t *h, uint64_t num, const int *want, int n, int line) {
  char got[512] = "", exp[512] = "";
  int k = 0;
  bool ok = true;
  for (int i = 0; i < h->nlog; i++) {
    if (h->log[i].num != num) continue;
    size_t gl = strlen(got);
    snprintf(got + gl, sizeof got - gl, " %s", fq_state_name(h->log[i].state));
    if (k >= n || h->log[i].state != want[k]) ok = false;
    k++;
  }
  for (int i = 0; i < n; i++) {
    size_t el = strlen(exp);
    snprintf(exp + el, sizeof exp - el, " %s", fq_state_name(want[i]));
  }
  if (!ok || k != n) {
    fprintf(stderr, "  line %d: command %llu went through%s; want%s\n", line,
            (unsigned long long)num, got, exp);
    fq_test_failures++;
  }
}
#define CHECK_STATES(h, num, ...)                                                      \
  do {                                                                                 \
    const int want_[] = {__VA_ARGS__};                                                 \
    check_states(h, num, want_, (int)(sizeof want_ / sizeof want_[0]), __LINE__);     \
  } while (0)

/* Check request i: method and URL (base + path). */
static void check_req(h_t *h, int i, fq_http_method_t m, const char *path, int line) {
  char want[600];
  snprintf(want, sizeof want, "%s%s", BASE, path);
  if (i >= h->nreqs) {
    fprintf(stderr, "  line %d: request %d never made (%d made); want %s %s\n", line, i,
            h->nreqs, m == FQ_HTTP_GET ? "GET" : "POST", want);
    fq_test_failures++;
    return;
  }
  treq_t *r = &h->reqs[i];
  if (r->method != m || strcmp(r->url, want) != 0) {
    fprintf(stderr, "  line %d: request %d is %s %s; want %s %s\n", line, i,
            r->method == FQ_HTTP_GET ? "GET" : "POST", r->url, m == FQ_HTTP_GET ? "GET" : "POST",
            want);
    fq_test_failures++;
  }
}
#define CHECK_REQ(h, i, m, path) check_req(h, i, m, path, __LINE__)

/* Mark a car as speaking REST only (as a 422 on signed_command would). */
static void make_legacy(h_t *h, const char *vin) {
  fq_err_t err;
  CHECK_INT(fq_store_begin(h->store, true, &err), 0);
  CHECK_INT(fq_store_session_put(h->store, vin, 0, (const uint8_t *)"L", 1, &err), 0);
  CHECK_INT(fq_store_commit(h->store, &err), 0);
}

#define OK_RESULT "{\"response\":{\"result\":true,\"reason\":\"\"}}"
#define REST(cmd) "/api/1/vehicles/" VIN "/command/" cmd
#define SIGNED "/api/1/vehicles/" VIN "/signed_command"
/* {"percent": 80} */
static const uint8_t P_PERCENT[] = {0x81, 0xa7, 'p', 'e', 'r', 'c', 'e', 'n', 't', 0x50};

/* --- answers: success and refusals ------------------------------------------ */

FQ_TEST(rest_200_succeeds) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_STR(h.reqs[0].body, "{}");
  CHECK_INT(h.reqs[0].token, 0);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  /* Nothing happens while the answer is out. */
  step(&h, T0 + 5000);
  CHECK_INT(h.nreqs, 1);
  answer(&h, 0, 200, OK_RESULT);
  step(&h, T0 + 5100);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(h.nreqs, 1);
  fq_dispatch_stats_t st;
  fq_dispatch_stats(h.d, &st);
  CHECK_INT(st.sent, 1);
  CHECK_INT(st.succeeded, 1);
  CHECK_INT(st.inflight, 0);
  h_close(&h);
}

FQ_TEST(signed_200_succeeds_after_handshake) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "charge_start", 60000);
  step(&h, T0);
  /* No session yet: a handshake first; the command is only dispatching. */
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, SIGNED);
  CHECK_CMD(&h, a, FQ_ST_DISPATCHING, 0, 0, "");
  car_answer(&h, 0);
  step(&h, T0 + 200);
  CHECK_INT(h.car.handshakes, 1);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, SIGNED);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  car_answer(&h, 1);
  CHECK_INT(h.car.accepted, 1); /* the car verified signature, counter and expiry */
  step(&h, T0 + 400);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);

  /* The next command of the same domain reuses the session: one request. */
  uint64_t b = submit(&h, DEV, "charge_stop", 60000);
  step(&h, T0 + 1000);
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, SIGNED);
  car_answer(&h, 2);
  step(&h, T0 + 1100);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_INT(h.car.handshakes, 1);
  CHECK_INT(h.car.accepted, 2);
  CHECK_INT(h.car.faults, 0);
  fq_dispatch_stats_t st;
  fq_dispatch_stats(h.d, &st);
  CHECK_INT(st.handshakes, 1);
  h_close(&h);
}

FQ_TEST(vehicle_rejected_fails_with_its_reason) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  /* Signed: the car refuses with an application error. */
  h.car.reject = "user_not_present";
  uint64_t a = submit(&h, DEV, "charge_start", 60000);
  step(&h, T0);
  car_answer(&h, 0);
  step(&h, T0 + 100);
  car_answer(&h, 1);
  step(&h, T0 + 200);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EFAULT, 1, "user_not_present");
  CHECK_INT(h.nreqs, 2);

  /* REST: {"result": false, "reason": ...}. */
  make_legacy(&h, VIN2);
  uint64_t b = submit(&h, DEV2, "flash_lights", 60000);
  step(&h, T0 + 300);
  CHECK_INT(h.nreqs, 3);
  CHECK_STR(h.reqs[2].url, BASE "/api/1/vehicles/" VIN2 "/command/flash_lights");
  answer(&h, 2, 200, "{\"response\":{\"result\":false,\"reason\":\"user_not_present\"}}");
  step(&h, T0 + 400);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_EFAULT, 1,
            "vehicle could not execute the command: user_not_present");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_FAILED);
  CHECK_INT(h.nreqs, 3);
  h_close(&h);
}

FQ_TEST(unpaired_key_fails_with_pairing_link) {
  hopts_t o = {.unpaired = true};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  car_answer(&h, 0); /* session info: KEY_NOT_ON_WHITELIST */
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ENOTPAIRED, 0, "https://tesla.com/_ak/" PAIRING);
  fq_cmdrec_t r = rec_of(&h, a);
  CHECK_INT(r.fault, 3);
  fq_cmdrec_free(&r);
  CHECK_INT(h.nreqs, 1); /* nothing is signed for a car that does not know us */
  CHECK_INT(h.car.accepted, 0);

  /* The same refusal in Fleet API's proxy form (HTTP 500) on a REST car. */
  make_legacy(&h, VIN2);
  uint64_t b = submit(&h, DEV2, "honk_horn", 60000);
  step(&h, T0 + 200);
  answer(&h, 1, 500, "{\"error\":\"vehicle rejected request: your public key has not been "
                     "paired with the vehicle\"}");
  step(&h, T0 + 300);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_ENOTPAIRED, 1, "https://tesla.com/_ak/" PAIRING);
  h_close(&h);
}

#define PROTOCOL_REQUIRED                                                                 \
  "{\"response\":null,\"error\":\"Tesla Vehicle Command Protocol required, please refer to " \
  "the documentation here: https://developer.tesla.com/docs\",\"error_description\":\"\"}"

/* A car thought to speak REST only answers "Vehicle Command Protocol
 * required": the dispatcher says it signs the command, and does. */
FQ_TEST(protocol_required_resends_signed) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "charge_start", 60000);
  step(&h, T0);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("charge_start"));
  answer(&h, 0, 403, PROTOCOL_REQUIRED);
  step(&h, T0 + 100);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, SIGNED); /* the handshake */
  CHECK_REASON(&h, a, "vehicle requires signed commands: signing it");
  car_answer(&h, 1);
  step(&h, T0 + 200);
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, SIGNED);
  car_answer(&h, 2);
  step(&h, T0 + 300);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 2, "");
  CHECK_INT(h.car.accepted, 1);
  h_close(&h);
}

FQ_TEST(missing_scope_and_client_errors_fail_without_retry) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  answer(&h, 0, 403, "{\"error\":\"Unauthorized missing scopes\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ESCOPE, 1, "missing OAuth scope vehicle_cmds");
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 200);
  answer(&h, 1, 404, "{\"error\":\"not_found\"}");
  step(&h, T0 + 300);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_EHTTP, 1, "device not found (HTTP 404");
  /* A final refusal is never retried. */
  step(&h, T0 + 60000);
  CHECK_INT(h.nreqs, 2);
  h_close(&h);
}

/* A token that is not a JWT grants scopes fleetq cannot know: the
 * command is sent and Fleet API's 403 decides, with the same reason. */
FQ_TEST(unknown_scopes_are_sent_and_fleet_api_decides) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  fq_err_t err;
  CHECK_INT(fq_accounts_update_tokens(h.acc, "acct", TOKEN_A, NULL, 0, 0, &err), 0);
  fq_account_t *acc = fq_account_new();
  CHECK(acc != NULL);
  CHECK_INT(fq_accounts_get(h.acc, "acct", acc, &err), 0);
  CHECK_INT(acc->scopes, FQ_SCOPES_UNKNOWN);
  fq_account_free(&acc);
  fq_auth_bump_generation(h.auth);
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  answer(&h, 0, 403, "{\"error\":\"Unauthorized missing scopes\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ESCOPE, 1, "missing OAuth scope vehicle_cmds");
  CHECK_REASON(&h, a, "revoke_client_id=client-1");
  /* With known scopes that lack the command's, nothing is sent. */
  CHECK_INT(fq_accounts_update_tokens(h.acc, "acct", TOKEN_A, NULL, T0 / 1000 + 86400,
                                      FQ_SCOPE_VEHICLE_DEVICE_DATA, &err),
            0);
  fq_auth_bump_generation(h.auth);
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 200);
  CHECK_INT(h.nreqs, 1);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_ESCOPE, 0, "missing OAuth scope vehicle_cmds");
  h_close(&h);
}

/* --- tokens -------------------------------------------------------------------- */

FQ_TEST(unauthorized_without_refresh_fails) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  answer(&h, 0, 401, "{\"error\":\"token expired (401)\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EAUTH, 1, "access token rejected (HTTP 401");
  CHECK_REASON(&h, a, "connect the account again");
  step(&h, T0 + 60000);
  CHECK_INT(h.nreqs, 1);
  h_close(&h);
}

/* Read the refresh request the dispatcher pushed ("R<account>"). */
static bool got_refresh(h_t *h, const char *account) {
  char buf[128];
  int n = zmq_recv(h->pull, buf, sizeof buf - 1, ZMQ_DONTWAIT);
  if (n < 0) return false;
  buf[n] = 0;
  return buf[0] == 'R' && strcmp(buf + 1, account) == 0;
}

FQ_TEST(unauthorized_refreshes_once_then_retries) {
  hopts_t o = {.refresh = true};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.reqs[0].token, 0);
  answer(&h, 0, 401, "{\"error\":\"token expired (401)\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_RETRYING, 0, 1, "access token refused (401): refreshing it");
  CHECK(got_refresh(&h, "acct"));
  /* Held until the account changes: no request meanwhile. */
  step(&h, T0 + 5000);
  CHECK_INT(h.nreqs, 1);
  /* The auth thread stores a new token (a later updated_at) and bumps
   * the generation. */
  usleep(2000);
  fq_err_t err;
  CHECK_INT(fq_accounts_update_tokens(h.acc, "acct", TOKEN_B, NULL, T0 / 1000 + 86400,
                                      FQ_SCOPE_VEHICLE_CMDS, &err),
            0);
  fq_auth_bump_generation(h.auth);
  step(&h, T0 + 6000);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_INT(h.reqs[1].token, 1);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 2, "");
  answer(&h, 1, 200, OK_RESULT);
  step(&h, T0 + 6100);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 2, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_RETRYING, FQ_ST_SENT,
               FQ_ST_SUCCEEDED);

  /* Refused again after its one refresh: failed. */
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 7000);
  answer(&h, 2, 401, "{\"error\":\"token expired (401)\"}");
  step(&h, T0 + 7100);
  CHECK(got_refresh(&h, "acct"));
  usleep(2000);
  CHECK_INT(fq_accounts_update_tokens(h.acc, "acct", TOKEN_A, NULL, T0 / 1000 + 86400,
                                      FQ_SCOPE_VEHICLE_CMDS, &err),
            0);
  fq_auth_bump_generation(h.auth);
  step(&h, T0 + 8000);
  CHECK_INT(h.nreqs, 4);
  answer(&h, 3, 401, "{\"error\":\"token expired (401)\"}");
  step(&h, T0 + 8100);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_EAUTH, 2, "refused again after a refresh");
  CHECK(!got_refresh(&h, "acct"));

  /* No refreshed token within 30 s: failed. */
  uint64_t c = submit(&h, DEV, "honk_horn", 600000);
  step(&h, T0 + 9000);
  answer(&h, 4, 401, "{\"error\":\"token expired (401)\"}");
  step(&h, T0 + 9100);
  CHECK(got_refresh(&h, "acct"));
  step(&h, T0 + 9100 + 29999);
  CHECK_CMD(&h, c, FQ_ST_RETRYING, 0, 1, "refreshing it");
  step(&h, T0 + 9100 + 30000);
  CHECK_CMD(&h, c, FQ_ST_FAILED, FQ_EAUTH, 1, "no refreshed token arrived within 30 s");
  CHECK_INT(h.nreqs, 5);
  h_close(&h);
}

/* --- asleep: wake, poll, wake again up to --wake-max ----------------------- */

#define WAKE "/api/1/vehicles/" VIN "/wake_up"
#define POLL "/api/1/vehicles/" VIN
#define STATE(s) "{\"response\":{\"state\":\"" s "\"}}"

static int count_reqs(h_t *h, fq_http_method_t m, const char *path) {
  char url[600];
  snprintf(url, sizeof url, "%s%s", BASE, path);
  int n = 0;
  for (int i = 0; i < h->nreqs; i++)
    n += h->reqs[i].method == m && strcmp(h->reqs[i].url, url) == 0;
  return n;
}

/* Index of the first request at or after from to path, -1 when none. */
static int find_req(h_t *h, int from, const char *path) {
  char url[600];
  snprintf(url, sizeof url, "%s%s", BASE, path);
  for (int i = from; i < h->nreqs; i++)
    if (strcmp(h->reqs[i].url, url) == 0) return i;
  return -1;
}

/* The wakes count the store keeps for command num. */
static uint32_t wakes_of(h_t *h, uint64_t num) {
  fq_cmdrec_t r = rec_of(h, num);
  uint32_t n = r.wakes;
  fq_cmdrec_free(&r);
  return n;
}

FQ_TEST(asleep_408_wakes_polls_and_wakes_again) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  step(&h, T0);
  answer(&h, 0, 408, "{\"error\":\"vehicle unavailable: vehicle is offline or asleep\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_WAKING, 0, 1, "waking it");
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, WAKE);
  answer(&h, 1, 200, STATE("asleep"));
  step(&h, T0 + 200);
  /* Polls wake_poll_ms (10 s) after the wake_up's answer. */
  step(&h, T0 + 200 + 9999);
  CHECK_INT(h.nreqs, 2);
  step(&h, T0 + 200 + 10000);
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_GET, POLL);
  answer(&h, 2, 200, STATE("asleep"));
  step(&h, T0 + 10300);
  /* Still asleep: a second wake_up, as Tesla's client sends one every
   * 10 s (at most --wake-max per command). */
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, WAKE);
  CHECK_INT(h.reqs[3].at, T0 + 10300);
  answer(&h, 3, 200, STATE("asleep"));
  step(&h, T0 + 10400);
  step(&h, T0 + 20399);
  CHECK_INT(h.nreqs, 4);
  step(&h, T0 + 20400);
  CHECK_INT(h.nreqs, 5);
  CHECK_REQ(&h, 4, FQ_HTTP_GET, POLL);
  answer(&h, 4, 200, STATE("online"));
  step(&h, T0 + 20500);
  /* Online: the command goes again, at once. */
  CHECK_INT(h.nreqs, 6);
  CHECK_REQ(&h, 5, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_INT(h.reqs[5].at, T0 + 20500);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 2, "");
  answer(&h, 5, 200, OK_RESULT);
  step(&h, T0 + 20600);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 2, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_WAKING, FQ_ST_SENT,
               FQ_ST_SUCCEEDED);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 2);
  CHECK_INT(count_reqs(&h, FQ_HTTP_GET, POLL), 2);
  CHECK_INT(wakes_of(&h, a), 2);
  fq_dispatch_stats_t st;
  fq_dispatch_stats(h.d, &st);
  CHECK_INT(st.wakes, 2);

  /* The car is awake now: the next command of the backlog goes straight. */
  uint64_t b = submit(&h, DEV, "flash_lights", 60000);
  step(&h, T0 + 21000);
  CHECK_INT(h.nreqs, 7);
  CHECK_REQ(&h, 6, FQ_HTTP_POST, REST("flash_lights"));
  answer(&h, 6, 200, OK_RESULT);
  step(&h, T0 + 21100);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_INT(wakes_of(&h, b), 0);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 2);
  h_close(&h);
}

/* The user's own wake_up is billed like the dispatcher's: at most
 * --wake-max of them for the command, whatever answers come (503s are
 * retried); and once a poll finds the car online it is done, without one
 * more wake_up. */
FQ_TEST(own_wake_up_bounded_by_wake_max) {
  h_t h;
  hopts_t o = {.wake_max = 2};
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "wake_up", 600000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, WAKE);
  answer(&h, 0, 503, "{\"error\":\"upstream busy\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_RETRYING, 0, 1, "HTTP 503");
  step(&h, T0 + 1100);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, WAKE);
  answer(&h, 1, 503, "{\"error\":\"upstream busy\"}");
  step(&h, T0 + 1200);
  step(&h, T0 + 60000);
  CHECK_INT(h.nreqs, 2); /* no third wake_up */
  CHECK_INT(wakes_of(&h, a), 2);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EASLEEP, 2, "2 wake_up requests, the limit (--wake-max 2)");
  CHECK_REASON(&h, a, "HTTP 503");
  fq_cmdrec_t ra = rec_of(&h, a);
  CHECK(strstr(ra.reason, "retrying in") == NULL); /* the last answer, not the old plan */
  fq_cmdrec_free(&ra);

  /* Asleep, then online at the poll: succeeded, one wake_up in all. */
  uint64_t b = submit(&h, DEV, "wake_up", 600000);
  step(&h, T0 + 60100);
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, WAKE);
  answer(&h, 2, 200, STATE("asleep"));
  step(&h, T0 + 60200);
  CHECK_CMD(&h, b, FQ_ST_WAKING, 0, 1, "waking");
  step(&h, T0 + 60200 + 10000);
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_GET, POLL);
  answer(&h, 3, 200, STATE("online"));
  step(&h, T0 + 70300);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  step(&h, T0 + 130000);
  CHECK_INT(h.nreqs, 4);
  CHECK_INT(wakes_of(&h, b), 1);
  h_close(&h);
}

/* wake_up has no signed form: "Vehicle Command Protocol required" to it
 * fails the command at once, also for a car thought REST-only (no
 * "signing it" round that would send the same wake_up again), and the car
 * is known to take signed commands from then on.  The wake_up that wakes
 * the car for another command says that command was not sent. */
FQ_TEST(protocol_required_to_wake_up_fails_at_once) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "wake_up", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, WAKE);
  answer(&h, 0, 403, PROTOCOL_REQUIRED);
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EHTTP, 1,
            "and wake_up has no signed form: not retried, the car cannot be sent this command");
  step(&h, T0 + 30000);
  CHECK_INT(h.nreqs, 1);

  /* The next command is signed: handshake, command. */
  uint64_t b = submit(&h, DEV, "charge_start", 60000);
  step(&h, T0 + 30100);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, SIGNED);
  car_answer(&h, 1);
  step(&h, T0 + 30200);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, SIGNED);
  car_answer(&h, 2);
  step(&h, T0 + 30300);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");

  /* Asleep: the wake_up for honk_horn gets the same answer. */
  uint64_t c = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 30400);
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, SIGNED);
  answer(&h, 3, 408, "{\"error\":\"vehicle unavailable: vehicle is offline or asleep\"}");
  step(&h, T0 + 30500);
  CHECK_INT(h.nreqs, 5);
  CHECK_REQ(&h, 4, FQ_HTTP_POST, WAKE);
  answer(&h, 4, 403, PROTOCOL_REQUIRED);
  step(&h, T0 + 30600);
  CHECK_CMD(&h, c, FQ_ST_FAILED, FQ_EHTTP, 1,
            "wake_up has no signed form: not retried, the car cannot be woken, so honk_horn was "
            "not sent");
  step(&h, T0 + 90000);
  CHECK_INT(h.nreqs, 5);
  CHECK_INT(h.car.accepted, 1);
  h_close(&h);
}

FQ_TEST(asleep_503_wakes_up_to_wake_max) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  /* 503 naming a sleeping car is "asleep", not "try again". */
  uint64_t a = submit(&h, DEV, "honk_horn", 300000);
  step(&h, T0);
  answer(&h, 0, 503, "{\"error\":\"vehicle is offline or asleep\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_WAKING, 0, 1, "HTTP 503");
  int64_t t = T0 + 100;
  int n = 1;
  for (uint32_t w = 1; w <= 3; w++) {
    CHECK_REQ(&h, n, FQ_HTTP_POST, WAKE);
    CHECK_INT(h.reqs[n].at, t);
    CHECK_INT(wakes_of(&h, a), w);
    answer(&h, n++, 200, STATE("asleep"));
    step(&h, t += 100);
    CHECK_CMD(&h, a, FQ_ST_WAKING, 0, 1, "waking it");
    step(&h, t += 10000);
    CHECK_REQ(&h, n, FQ_HTTP_GET, POLL);
    answer(&h, n++, 200, STATE("offline"));
    step(&h, t += 10);
  }
  /* The third poll still finds it offline: a fourth wake_up would pass
   * --wake-max (3), so the command fails naming the limit. */
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EASLEEP, 1,
            "after 3 wake_up requests, the limit (--wake-max 3)");
  CHECK_REASON(&h, a, "vehicle still offline");
  CHECK_INT(wakes_of(&h, a), 3);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 3);
  CHECK_INT(h.nreqs, 7);
  step(&h, t + 60000);
  CHECK_INT(h.nreqs, 7);

  /* Waking past the deadline: expired. */
  uint64_t b = submit(&h, DEV, "honk_horn", 15000);
  int64_t t1 = h.now;
  step(&h, t1);
  answer(&h, 7, 408, "");
  step(&h, t1 + 100);
  CHECK_REQ(&h, 8, FQ_HTTP_POST, WAKE);
  answer(&h, 8, 200, STATE("asleep"));
  step(&h, t1 + 200);
  step(&h, t1 + 10200);
  CHECK_REQ(&h, 9, FQ_HTTP_GET, POLL);
  answer(&h, 9, 200, STATE("asleep"));
  step(&h, t1 + 10300);
  CHECK_REQ(&h, 10, FQ_HTTP_POST, WAKE);
  answer(&h, 10, 200, STATE("asleep"));
  step(&h, t1 + 10400); /* the next poll would be past the deadline */
  CHECK_CMD(&h, b, FQ_ST_EXPIRED, FQ_EEXPIRED, 1, "did not wake up in time");
  CHECK_INT(h.nreqs, 11);
  h_close(&h);
}

/* --- rate limits -------------------------------------------------------------- */

FQ_TEST(rate_limited_429_parks_the_account_until_retry_after) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  step(&h, T0);
  answer_hdr(&h, 0, 429, "30", "{\"error\":\"rate limited\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_RETRYING, 0, 1, "waiting 30 s");
  CHECK_REASON(&h, a, "account acct paused until");
  /* Tesla limits per account: the account's other car waits too. */
  uint64_t a2 = submit(&h, DEV2, "flash_lights", 120000);
  step(&h, T0 + 200);
  step(&h, T0 + 100 + 29999);
  CHECK_INT(h.nreqs, 1);
  CHECK_CMD(&h, a2, FQ_ST_QUEUED, 0, 0, "");
  step(&h, T0 + 100 + 30000);
  CHECK_INT(h.nreqs, 3);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, REST("honk_horn")), 2);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/command/flash_lights"), 1);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 2, "");
  CHECK_CMD(&h, a2, FQ_ST_SENT, 0, 1, "");
  answer(&h, 1, 200, OK_RESULT);
  answer(&h, 2, 200, OK_RESULT);
  step(&h, T0 + 30200);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 2, "");
  CHECK_CMD(&h, a2, FQ_ST_SUCCEEDED, 0, 1, "");

  /* A wait that passes the deadline ends the command; the park still
   * holds the account's next commands back until Retry-After, the other
   * car's retry included. */
  uint64_t b = submit(&h, DEV, "honk_horn", 10000);
  uint64_t c = submit(&h, DEV, "flash_lights", 120000);
  uint64_t d2 = submit(&h, DEV2, "honk_horn", 120000);
  int64_t t = T0 + 40000;
  step(&h, t);
  CHECK_INT(h.nreqs, 5);
  int ib = find_req(&h, 3, REST("honk_horn")),
      id2 = find_req(&h, 3, "/api/1/vehicles/" VIN2 "/command/honk_horn");
  CHECK(ib >= 3 && id2 >= 3);
  if (ib < 0 || id2 < 0) {
    h_close(&h);
    return;
  }
  answer_hdr(&h, ib, 429, "60", "");
  step(&h, t + 50);
  /* A plain 503 means "not awake" (issue 12): DEV2 would send a wake_up,
   * but the account is parked, so it tries again when the park ends. */
  answer(&h, id2, 503, "");
  step(&h, t + 100);
  CHECK_CMD(&h, b, FQ_ST_EXPIRED, FQ_EEXPIRED, 1, "rate limited");
  CHECK_CMD(&h, c, FQ_ST_QUEUED, 0, 0, "");
  CHECK_CMD(&h, d2, FQ_ST_WAKING, 0, 1, "HTTP 503");
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/wake_up"), 0);
  step(&h, t + 1200);
  step(&h, t + 50 + 59999);
  CHECK_INT(h.nreqs, 5);
  step(&h, t + 100 + 60000);
  CHECK_INT(h.nreqs, 7);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, REST("flash_lights")), 1);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/command/honk_horn"), 2);
  h_close(&h);
}

FQ_TEST(ratelimit_remaining_low_spaces_the_account) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  /* 20 of 100 left: plenty, no wait. */
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  step(&h, T0);
  answer(&h, 0, 200, OK_RESULT);
  answer_budget(&h, 0, "100", "20", "40");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  uint64_t b = submit(&h, DEV2, "honk_horn", 120000);
  step(&h, T0 + 200);
  CHECK_INT(h.nreqs, 2);
  /* 3 of 100 left, reset in 40 s: the next request of the account waits
   * 40 s / (3 + 1) = 10 s, on either car. */
  answer(&h, 1, 200, OK_RESULT);
  answer_budget(&h, 1, "100", "3", "40");
  step(&h, T0 + 300);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  uint64_t c = submit(&h, DEV, "flash_lights", 120000);
  step(&h, T0 + 400);
  step(&h, T0 + 300 + 9999);
  CHECK_INT(h.nreqs, 2);
  CHECK_CMD(&h, c, FQ_ST_QUEUED, 0, 0, "");
  step(&h, T0 + 300 + 10000);
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, REST("flash_lights"));
  h_close(&h);
}

FQ_TEST(account_refusals_are_remembered) {
  static const struct {
    long status;
    const char *body;
    int code;
    const char *says;
  } rows[] = {
      {412, "{\"error\":\"application not registered\"}", FQ_ENOTREGISTERED,
       "POST /api/1/partner_accounts"},
      {451, "{\"error\":\"unavailable for legal reasons\"}", FQ_ELEGAL, "HTTP 451"},
      {401, "{\"error\":\"mobile_access_disabled\"}", FQ_EMOBILEOFF, "Allow Mobile Access"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
    h_t h;
    if (h_open(&h, NULL) != 0) {
      FQ__FAIL("harness");
      return;
    }
    make_legacy(&h, VIN);
    make_legacy(&h, VIN2);
    uint64_t a = submit(&h, DEV, "honk_horn", 120000);
    step(&h, T0);
    answer(&h, 0, rows[i].status, rows[i].body);
    step(&h, T0 + 100);
    CHECK_CMD(&h, a, FQ_ST_FAILED, rows[i].code, 1, rows[i].says);
    CHECK_REASON(&h, a, "fleetq account retry --account acct");
    CHECK_REASON(&h, a, BASE);
    char why[FQ_REASON_MAX];
    CHECK_INT(fq_auth_account_refused(h.auth, "acct", why, sizeof why), rows[i].code);
    CHECK(strstr(why, rows[i].says) != NULL);
    /* Every later command of the account fails at once, on any car,
     * without a request. */
    uint64_t b = submit(&h, DEV2, "flash_lights", 120000);
    step(&h, T0 + 200);
    CHECK_INT(h.nreqs, 1);
    CHECK_CMD(&h, b, FQ_ST_FAILED, rows[i].code, 0, "not sent: Fleet API refused account acct");
    CHECK_REASON(&h, b, rows[i].says);
    h_close(&h);
  }
}

/* The 412 reason names the region of the host the request went to, also
 * for an account given a base URL (no region field) or moved by a 421;
 * for any other host it names the base URL (above). */
FQ_TEST(account_refusal_names_the_region) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  fq_err_t err;
  CHECK_INT(fq_accounts_set_base_url(h.acc, "acct", "https://fleet-api.prd.eu.vn.cloud.tesla.com",
                                     &err),
            0);
  fq_auth_bump_generation(h.auth);
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK(strncmp(h.reqs[0].url, "https://fleet-api.prd.eu.vn.cloud.tesla.com/api/1/", 50) == 0);
  answer(&h, 0, 412, "{\"error\":\"Account must be registered in the current region\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ENOTREGISTERED, 1, "POST /api/1/partner_accounts");
  CHECK_REASON(&h, a, "[account acct, region eu, https://fleet-api.prd.eu.vn.cloud.tesla.com]");
  h_close(&h);
}

/* --- retries and unknown outcomes ---------------------------------------------- */

FQ_TEST(plain_503_goes_through_wake_path) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  answer(&h, 0, 503, "{\"error\":\"upstream busy\"}");
  step(&h, T0 + 100);
  /* Tesla's client reads any 503 as "not awake": a wake_up, not a resend
   * of the same request. */
  CHECK_CMD(&h, a, FQ_ST_WAKING, 0, 1, "HTTP 503: upstream busy");
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, WAKE);
  CHECK_INT(wakes_of(&h, a), 1);
  answer(&h, 1, 200, STATE("online"));
  step(&h, T0 + 200);
  step(&h, T0 + 200 + 9999);
  CHECK_INT(h.nreqs, 2);
  step(&h, T0 + 200 + 10000);
  CHECK_REQ(&h, 2, FQ_HTTP_GET, POLL);
  answer(&h, 2, 200, STATE("online"));
  step(&h, T0 + 10300);
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 2, "");
  /* Connect failure: nothing left, retried after the backoff. */
  answer_transport(&h, 3, FQ_HTTP_NOT_SENT, 7, "Failed to connect");
  step(&h, T0 + 10400);
  CHECK_CMD(&h, a, FQ_ST_RETRYING, 0, 2, "nothing was sent");
  step(&h, T0 + 11399);
  CHECK_INT(h.nreqs, 4);
  step(&h, T0 + 11400);
  CHECK_INT(h.nreqs, 5);
  CHECK_REQ(&h, 4, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 4, 200, OK_RESULT);
  step(&h, T0 + 11500);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 3, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_WAKING, FQ_ST_SENT,
               FQ_ST_RETRYING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(wakes_of(&h, a), 1);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 1);
  fq_dispatch_stats_t st;
  fq_dispatch_stats(h.d, &st);
  CHECK_INT(st.retries, 1);
  CHECK_INT(st.wakes, 1);

  /* Waking that would pass the deadline expires instead. */
  uint64_t b = submit(&h, DEV, "honk_horn", 5000); /* at T0 + 11500 */
  step(&h, T0 + 12000);
  CHECK_INT(h.nreqs, 6);
  answer(&h, 5, 503, "");
  step(&h, T0 + 12100);
  CHECK_REQ(&h, 6, FQ_HTTP_POST, WAKE);
  answer(&h, 6, 200, STATE("asleep"));
  step(&h, T0 + 12200); /* 12200 + 10000 >= 11500 + 5000 */
  CHECK_CMD(&h, b, FQ_ST_EXPIRED, FQ_EEXPIRED, 1, "did not wake up in time");
  step(&h, T0 + 30000);
  CHECK_INT(h.nreqs, 7);
  h_close(&h);
}

/* A car that keeps answering 503 gets at most --wake-max wake_ups, each
 * one poll interval after the one before; then the command fails naming
 * the limit. */
FQ_TEST(wake_max_bounds_wake_ups) {
  hopts_t o = {.wake_max = 2};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  int64_t t = T0;
  step(&h, t);
  int n = 0; /* requests answered so far */
  for (int round = 1; round <= 2; round++) {
    answer(&h, n++, 503, "");
    step(&h, t += 100);
    CHECK_CMD(&h, a, FQ_ST_WAKING, 0, (uint32_t)round, "HTTP 503");
    CHECK_REQ(&h, n, FQ_HTTP_POST, WAKE);
    CHECK_INT(h.reqs[n].at, t);
    CHECK_INT(wakes_of(&h, a), round);
    answer(&h, n++, 200, STATE("online"));
    step(&h, t += 100);
    step(&h, t += 10000);
    CHECK_REQ(&h, n, FQ_HTTP_GET, POLL);
    answer(&h, n++, 200, STATE("online"));
    step(&h, t += 100);
    CHECK_REQ(&h, n, FQ_HTTP_POST, REST("honk_horn"));
  }
  CHECK_INT(h.reqs[3 + 1].at - h.reqs[1].at >= 10000, 1);
  answer(&h, n++, 503, "");
  step(&h, t += 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EASLEEP, 3, "after 2 wake_up requests, the limit (--wake-max 2)");
  CHECK_INT(wakes_of(&h, a), 2);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 2);
  step(&h, t + 60000);
  CHECK_INT(h.nreqs, n);
  h_close(&h);
}

/* `wake: false`: an asleep car fails the command at once, no wake_up. */
FQ_TEST(wake_false_fails_asleep_car_without_wake) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  h.no_wake = true;
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV, "flash_lights", 60000);
  step(&h, T0);
  answer(&h, 0, 408, "{\"error\":\"vehicle unavailable: vehicle is offline or asleep\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EASLEEP, 1, "wake: false");
  CHECK_REASON(&h, a, "vehicle is asleep (HTTP 408)");
  CHECK_REASON(&h, a, "nothing was sent to the car and no wake_up");
  CHECK_INT(wakes_of(&h, a), 0);
  /* A plain 503 is "not awake" too. */
  CHECK_REQ(&h, 1, FQ_HTTP_POST, REST("flash_lights"));
  answer(&h, 1, 503, "");
  step(&h, T0 + 200);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_EASLEEP, 1, "vehicle is asleep (HTTP 503)");
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 0);
  step(&h, T0 + 60000);
  CHECK_INT(h.nreqs, 2);
  h_close(&h);
}

/* INFOTAINMENT answers 408 for a while after the car reported online:
 * polls on the running wake timer, no second wake_up, and the timer is
 * not restarted. */
FQ_TEST(asleep_408_after_online_polls_without_waking) {
  hopts_t o = {.wake_timeout_ms = 25000};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 120000);
  step(&h, T0);
  answer(&h, 0, 408, "");
  step(&h, T0 + 100); /* the wake timer starts here */
  CHECK_REQ(&h, 1, FQ_HTTP_POST, WAKE);
  answer(&h, 1, 200, STATE("asleep"));
  step(&h, T0 + 200);
  step(&h, T0 + 10200);
  CHECK_REQ(&h, 2, FQ_HTTP_GET, POLL);
  answer(&h, 2, 200, STATE("online"));
  step(&h, T0 + 10300);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 3, 408, "");
  step(&h, T0 + 10400);
  CHECK_CMD(&h, a, FQ_ST_WAKING, 0, 2, "still answers 408");
  step(&h, T0 + 20399);
  CHECK_INT(h.nreqs, 4);
  step(&h, T0 + 20400);
  CHECK_REQ(&h, 4, FQ_HTTP_GET, POLL);
  answer(&h, 4, 200, STATE("online"));
  step(&h, T0 + 20500);
  CHECK_REQ(&h, 5, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 5, 408, "");
  step(&h, T0 + 20600);
  step(&h, T0 + 30600);
  CHECK_REQ(&h, 6, FQ_HTTP_GET, POLL);
  answer(&h, 6, 200, STATE("online"));
  step(&h, T0 + 30700);
  CHECK_REQ(&h, 7, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 7, 408, "");
  /* 30.8 s after the one wake_up, over wake_timeout_ms (25 s): the timer
   * was not restarted when the car came online. */
  step(&h, T0 + 30800);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EHTTP, 4, "did not come online after a wake_up");
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 1);
  CHECK_INT(wakes_of(&h, a), 1);
  CHECK_INT(h.nreqs, 8);

  /* The same lag, then the command goes through: one wake only. */
  uint64_t b = submit(&h, DEV, "flash_lights", 120000);
  int64_t t = T0 + 40000;
  step(&h, t);
  answer(&h, 8, 408, "");
  step(&h, t + 100);
  CHECK_REQ(&h, 9, FQ_HTTP_POST, WAKE);
  answer(&h, 9, 200, STATE("online"));
  step(&h, t + 200);
  step(&h, t + 10200);
  CHECK_REQ(&h, 10, FQ_HTTP_GET, POLL);
  answer(&h, 10, 200, STATE("online"));
  step(&h, t + 10300);
  CHECK_REQ(&h, 11, FQ_HTTP_POST, REST("flash_lights"));
  answer(&h, 11, 408, "");
  step(&h, t + 10400);
  step(&h, t + 20400);
  CHECK_REQ(&h, 12, FQ_HTTP_GET, POLL);
  answer(&h, 12, 200, STATE("online"));
  step(&h, t + 20500);
  CHECK_REQ(&h, 13, FQ_HTTP_POST, REST("flash_lights"));
  answer(&h, 13, 200, OK_RESULT);
  step(&h, t + 20600);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 3, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_WAKING, FQ_ST_SENT,
               FQ_ST_WAKING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(wakes_of(&h, b), 1);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, WAKE), 2);
  h_close(&h);
}

FQ_TEST(server_5xx_after_send_unknown_unless_idempotent) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  /* honk_horn is not idempotent: a 500/502/504 may have executed it. */
  const long codes[] = {500, 502, 504};
  int64_t t = T0;
  for (int i = 0; i < 3; i++) {
    uint64_t a = submit(&h, DEV, "honk_horn", 60000);
    step(&h, t);
    CHECK_INT(h.nreqs, i + 1);
    answer(&h, i, codes[i], "{\"error\":\"internal\"}");
    step(&h, t + 100);
    CHECK_CMD(&h, a, FQ_ST_UNKNOWN, FQ_EHTTP, 1, "may have been executed");
    CHECK_REASON_ONCE(&h, a, "may have been executed");
    step(&h, t + 5000);
    CHECK_INT(h.nreqs, i + 1);
    t += 10000;
  }
  /* set_charge_limit is an idempotent set-point: sent again. */
  uint64_t b = submit_p(&h, DEV, "set_charge_limit", P_PERCENT, sizeof P_PERCENT, 60000);
  step(&h, t);
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, REST("set_charge_limit"));
  CHECK_STR(h.reqs[3].body, "{\"percent\":80}");
  answer(&h, 3, 502, "");
  step(&h, t + 100);
  CHECK_CMD(&h, b, FQ_ST_RETRYING, 0, 1, "idempotent command: safe to send again");
  step(&h, t + 1099);
  CHECK_INT(h.nreqs, 4);
  step(&h, t + 1100);
  CHECK_INT(h.nreqs, 5);
  CHECK_STR(h.reqs[4].body, "{\"percent\":80}");
  answer(&h, 4, 200, OK_RESULT);
  step(&h, t + 1200);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 2, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_RETRYING, FQ_ST_SENT,
               FQ_ST_SUCCEEDED);
  h_close(&h);
}

FQ_TEST(timeout_after_send_is_unknown) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "flash_lights", 60000);
  step(&h, T0);
  answer_transport(&h, 0, FQ_HTTP_UNKNOWN, 28, "Operation timed out after 10000 milliseconds");
  step(&h, T0 + 10000);
  CHECK_CMD(&h, a, FQ_ST_UNKNOWN, FQ_EHTTP, 1, "reply from Fleet API lost (Operation timed out");
  CHECK_REASON(&h, a, "check the device before sending it again");
  /* The advice once (issue 13, 8: the classifier and the dispatcher both
   * gave it). */
  CHECK_REASON_ONCE(&h, a, "may have been executed");
  CHECK_REASON_ONCE(&h, a, "before sending it again");
  /* A truncated reply is just as unknown. */
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 11000);
  answer_transport(&h, 1, FQ_HTTP_TRUNCATED, 23, "body over 1048576 bytes");
  step(&h, T0 + 11100);
  CHECK_CMD(&h, b, FQ_ST_UNKNOWN, FQ_EHTTP, 1, "too large to read");
  CHECK_REASON_ONCE(&h, b, "may have been executed");
  /* The same timeout on an idempotent command: sent again. */
  uint64_t c = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0 + 12000);
  answer_transport(&h, 2, FQ_HTTP_UNKNOWN, 28, "Operation timed out");
  step(&h, T0 + 12100);
  CHECK_CMD(&h, c, FQ_ST_RETRYING, 0, 1, "idempotent command");
  /* Sent again: no "check before sending it again" beside it. */
  CHECK_REASON_ONCE(&h, c, "safe to send again");
  fq_cmdrec_t rc_ = rec_of(&h, c);
  CHECK(strstr(rc_.reason, "before sending it again") == NULL);
  fq_cmdrec_free(&rc_);
  step(&h, T0 + 13100);
  CHECK_INT(h.nreqs, 4);
  CHECK_REQ(&h, 3, FQ_HTTP_POST, REST("door_lock"));
  /* An untrusted certificate: nothing was sent, and waiting does not help. */
  answer_transport(&h, 3, FQ_HTTP_NOT_SENT, 60, "SSL certificate problem");
  step(&h, T0 + 13200);
  CHECK_CMD(&h, c, FQ_ST_FAILED, FQ_EHTTP, 2, "--ca-file");
  CHECK_INT(h.nreqs, 4);
  h_close(&h);
}

FQ_TEST(launch_refused_fails_or_retries) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  /* A request the transport cannot take right now is tried again. */
  h.fail_request = FQ_EBUSY;
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 0);
  CHECK_INT(fq_dispatch_timeout_ms(h.d, T0), 20);
  step(&h, T0 + 20);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 0, 200, OK_RESULT);
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  /* One it refuses for good fails the command. */
  h.fail_request = FQ_EBADPARAM;
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 200);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_EBADPARAM, 1, "cannot send the request");
  CHECK_INT(h.nreqs, 1);
  h_close(&h);
}

/* --- deadlines ------------------------------------------------------------------ */

FQ_TEST(queued_command_past_deadline_expires) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV, "flash_lights", 5000);
  uint64_t c = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  /* b's deadline passes while a is in flight; it is never sent. */
  answer(&h, 0, 200, OK_RESULT);
  step(&h, T0 + 5000);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, b, FQ_ST_EXPIRED, FQ_EEXPIRED, 0, "deadline passed: it was still queued");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_EXPIRED);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, REST("door_lock"));
  CHECK_CMD(&h, c, FQ_ST_SENT, 0, 1, "");
  h_close(&h);
}

/* Issue 13 (4): nothing waits for an account.  Submits for an unknown
 * account are refused by the shard; a command whose account was removed
 * after it was accepted fails at once (unknown_account, nothing sent)
 * instead of holding its device until its deadline, and the command
 * behind it on the same device goes in the same step. */
FQ_TEST(removed_account_fails_at_once) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  fq_err_t err;
  h.account = "gone";
  uint64_t a = submit(&h, DEV, "honk_horn", 30000);
  h.account = NULL;
  uint64_t b = submit(&h, DEV, "flash_lights", 30000);
  step(&h, T0);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_EUNKACCT, 0, "account \"gone\" is not registered");
  CHECK_REASON(&h, a, "nothing was sent");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_FAILED);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("flash_lights"));
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 1, "");
  answer(&h, 0, 200, OK_RESULT);
  step(&h, T0 + 100);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  /* Removed while queued behind a command in flight: fails when its turn
   * comes, without a request. */
  uint64_t c = submit(&h, DEV, "flash_lights", 30000);
  uint64_t d = submit(&h, DEV, "honk_horn", 30000);
  step(&h, T0 + 200);
  CHECK_CMD(&h, c, FQ_ST_SENT, 0, 1, "");
  CHECK_INT(fq_accounts_remove(h.acc, "acct", &err), 0);
  fq_auth_bump_generation(h.auth);
  answer(&h, 1, 200, OK_RESULT);
  step(&h, T0 + 300);
  CHECK_CMD(&h, c, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, d, FQ_ST_FAILED, FQ_EUNKACCT, 0, "account \"acct\" is not registered");
  CHECK_INT(h.nreqs, 2);
  h_close(&h);
}

FQ_TEST(signed_expires_at_never_beyond_deadline) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  /* The car's clock reads 100 s at T0.  A long deadline: vehicle now + 5. */
  uint64_t a = submit(&h, DEV, "charge_start", 60000);
  step(&h, T0);
  car_answer(&h, 0);
  step(&h, T0);
  car_answer(&h, 1);
  CHECK_INT(h.car.accepted, 1);
  CHECK_INT(h.car.last_expires_at, 105);
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  /* A deadline 2.5 s away bounds it: vehicle time 102. */
  uint64_t b = submit(&h, DEV, "charge_stop", 2500); /* at T0 + 100 */
  step(&h, T0 + 200);
  CHECK_INT(h.nreqs, 3);
  car_answer(&h, 2);
  CHECK_INT(h.car.accepted, 2);
  CHECK_INT(h.car.last_expires_at, 102);
  step(&h, T0 + 300);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  /* A deadline within the car's current second leaves no expires_at in
   * the future: the command is not signed, not sent, and ends expired
   * although fleetqd's own deadline has not passed yet. */
  uint64_t c = submit(&h, DEV, "charge_stop", 500); /* deadline T0 + 800 */
  step(&h, T0 + 400);
  CHECK_CMD(&h, c, FQ_ST_EXPIRED, FQ_EEXPIRED, 0, "no time left to sign");
  CHECK_STATES(&h, c, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_EXPIRED);
  CHECK_INT(h.nreqs, 3);
  CHECK_INT(h.car.faults, 0);
  h_close(&h);
}

/* --- order -------------------------------------------------------------------- */

FQ_TEST(one_in_flight_per_device_in_fifo_order) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  const char *cmds[4] = {"honk_horn", "flash_lights", "door_lock", "door_unlock"};
  uint64_t n[4];
  for (int i = 0; i < 4; i++) n[i] = submit(&h, DEV, cmds[i], 60000);
  uint64_t other = submit(&h, DEV2, "honk_horn", 60000);
  step(&h, T0);
  /* One request per device, the oldest of each. */
  CHECK_INT(h.nreqs, 2);
  int first_a = strstr(h.reqs[0].url, VIN2) ? 1 : 0;
  CHECK_REQ(&h, first_a, FQ_HTTP_POST, REST("honk_horn"));
  CHECK_STR(h.reqs[1 - first_a].url, BASE "/api/1/vehicles/" VIN2 "/command/honk_horn");
  /* More steps, kicks and time change nothing while it is in flight. */
  for (int i = 0; i < 3; i++) fq_dispatch_kick(h.d, DEV);
  step(&h, T0 + 3000);
  CHECK_INT(h.nreqs, 2);
  for (int i = 1; i < 4; i++) CHECK_CMD(&h, n[i], FQ_ST_QUEUED, 0, 0, "");
  /* Each answer lets exactly the next one go, in submit order; a failure
   * does not stop the queue. */
  answer(&h, 1 - first_a, 200, OK_RESULT);
  int at = first_a;
  for (int i = 0; i < 4; i++) {
    char path[128];
    snprintf(path, sizeof path, "/api/1/vehicles/%s/command/%s", VIN, cmds[i]);
    CHECK_REQ(&h, at, FQ_HTTP_POST, path);
    answer(&h, at, i == 1 ? 400 : 200, i == 1 ? "{\"error\":\"bad\"}" : OK_RESULT);
    step(&h, T0 + 4000 + i * 100);
    at = h.nreqs - 1;
    CHECK_INT(h.nreqs, 2 + i + (i < 3 ? 1 : 0));
  }
  CHECK_CMD(&h, n[0], FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, n[1], FQ_ST_FAILED, FQ_EHTTP, 1, "HTTP 400");
  CHECK_CMD(&h, n[2], FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, n[3], FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, other, FQ_ST_SUCCEEDED, 0, 1, "");
  /* Every request of the device came after the previous one's answer. */
  for (int i = 1; i < h.nreqs; i++)
    if (strstr(h.reqs[i].url, VIN "/"))
      for (int j = 0; j < i; j++)
        if (strstr(h.reqs[j].url, VIN "/")) CHECK(h.reqs[j].done);
  h_close(&h);
}

/* --- a head the shard ends, and stopping ---------------------------------------- */

/* Cancel command num as the shard does: the transition in its own
 * transaction, then a kick of the device (shard.c's transition()). */
static void cancel(h_t *h, uint64_t num, const char *device) {
  fq_err_t err;
  fq_cmdrec_t rec = rec_of(h, num);
  int rc = fq_store_begin(h->store, true, &err);
  if (!rc) rc = t_transition(h, &rec, FQ_ST_CANCELLED, "cancelled by request", 0, h->now, true,
                             &err);
  if (!rc) rc = fq_store_commit(h->store, &err);
  if (rc) FQ__FAIL("cancel: %s", err.msg);
  fq_cmdrec_free(&rec);
  fq_dispatch_kick(h->d, device);
}

/* One turn of a stopping shard: fq_dispatch_drain() in a write
 * transaction at now, the commit, then the launch (which must send
 * nothing new). */
static void drain(h_t *h, int64_t now, bool final) {
  fq_err_t err;
  fq_err_clear(&err);
  h->now = now;
  if (fq_store_begin(h->store, true, &err) != 0) {
    FQ__FAIL("begin: %s", err.msg);
    return;
  }
  int rc = fq_dispatch_drain(h->d, now, final, &err);
  if (rc) {
    FQ__FAIL("drain: %d %s", rc, err.msg);
    fq_store_abort(h->store);
    fq_dispatch_rollback(h->d);
    return;
  }
  if (fq_store_commit(h->store, &err) != 0) FQ__FAIL("commit: %s", err.msg);
  fq_dispatch_launch(h->d, now);
}

/* A second account, "acct2", with token B. */
static int add_acct2(h_t *h) {
  fq_err_t err;
  fq_account_t *a = fq_account_new();
  if (!a) return -1;
  snprintf(a->id, sizeof a->id, "acct2");
  snprintf(a->client_id, sizeof a->client_id, "client-2");
  snprintf(a->base_url, sizeof a->base_url, "%s", BASE);
  snprintf(a->access_token, sizeof a->access_token, "%s", TOKEN_B);
  snprintf(a->refresh_token, sizeof a->refresh_token, "refresh-B");
  a->access_exp = T0 / 1000 + 86400;
  a->scopes = FQ_SCOPE_VEHICLE_CMDS | FQ_SCOPE_VEHICLE_CHARGING_CMDS | FQ_SCOPE_ENERGY_CMDS;
  int rc = fq_accounts_put(h->acc, a, &err);
  fq_account_free(&a);
  fq_auth_bump_generation(h->auth);
  return rc;
}

/* A head that waits its turn holds its device, and only it: the head's
 * account is parked by a 429 (Retry-After 30 s) met on another car, so the
 * device waits with the next command (another account's) behind it;
 * cancelling the head lets that one go in the very next step, not when
 * the park ends.  Issue 12 (1) did this for a head waiting for its
 * account, which no longer happens (issue 13 (4)). */
FQ_TEST(cancelled_head_releases_the_device_at_once) {
  h_t h;
  if (h_open(&h, NULL) != 0 || add_acct2(&h) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t p = submit(&h, DEV2, "honk_horn", 120000);
  step(&h, T0);
  answer_hdr(&h, 0, 429, "30", "{\"error\":\"rate limited\"}");
  step(&h, T0 + 100);
  CHECK_CMD(&h, p, FQ_ST_RETRYING, 0, 1, "waiting 30 s");
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);  /* acct: parked */
  h.account = "acct2";
  uint64_t b = submit(&h, DEV, "flash_lights", 60000);
  h.account = NULL;
  step(&h, T0 + 200);
  step(&h, T0 + 1000);
  CHECK_INT(h.nreqs, 1);
  CHECK_CMD(&h, a, FQ_ST_QUEUED, 0, 0, "");
  CHECK_CMD(&h, b, FQ_ST_QUEUED, 0, 0, "");
  /* Another submit to the waiting device changes nothing. */
  uint64_t e = submit(&h, DEV, "flash_lights", 60000);
  step(&h, T0 + 1001);
  CHECK_INT(h.nreqs, 1);
  /* Cancelling the head lets the next one (acct2, not parked) go now. */
  cancel(&h, a, DEV);
  step(&h, T0 + 1002);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, REST("flash_lights"));
  CHECK_INT(h.reqs[1].token, 1); /* acct2's token */
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 1, "");
  answer(&h, 1, 200, OK_RESULT);
  step(&h, T0 + 1100);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, a, FQ_ST_CANCELLED, 0, 0, "cancelled by request");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_CANCELLED);
  /* The next head is acct's again: it waits for the park, and goes when
   * it ends (with the parked car's retry). */
  step(&h, T0 + 1200);
  CHECK_CMD(&h, e, FQ_ST_QUEUED, 0, 0, "");
  CHECK_INT(h.nreqs, 2);
  step(&h, T0 + 100 + 30000);
  CHECK_INT(h.nreqs, 4);
  CHECK_CMD(&h, e, FQ_ST_SENT, 0, 1, "");
  CHECK_CMD(&h, p, FQ_ST_SENT, 0, 2, "");
  h_close(&h);
}

FQ_TEST(stop_waits_for_answers_and_leaves_the_unsent_queued) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV, "flash_lights", 60000);
  uint64_t c = submit(&h, DEV2, "door_lock", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 2);
  /* The launch order of two devices is not specified: find c's request. */
  int ic = strstr(h.reqs[0].url, VIN2) ? 0 : 1;
  /* c's request ends in a 500: c (idempotent) waits to be sent again when
   * the stop begins. */
  answer(&h, ic, 500, "{\"error\":\"internal\"}");
  step(&h, T0 + 10);
  CHECK_CMD(&h, c, FQ_ST_RETRYING, 0, 1, "safe to send again");
  drain(&h, T0 + 20, false);
  CHECK(!fq_dispatch_drained(h.d));
  /* c goes back to the queue with its one attempt; a is still awaited;
   * b was never touched. */
  CHECK_CMD(&h, c, FQ_ST_QUEUED, 0, 1, "sent after the restart");
  CHECK_STATES(&h, c, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_RETRYING,
               FQ_ST_QUEUED);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED);
  /* a's answer is its real outcome; nothing new starts after it. */
  answer(&h, 1 - ic, 200, OK_RESULT);
  step(&h, T0 + 2000);
  drain(&h, T0 + 2000, false);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK(fq_dispatch_drained(h.d));
  step(&h, T0 + 5000);
  drain(&h, T0 + 5000, true);
  CHECK_INT(h.nreqs, 2);
  CHECK_CMD(&h, b, FQ_ST_QUEUED, 0, 0, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED);
  CHECK_CMD(&h, c, FQ_ST_QUEUED, 0, 1, "sent after the restart");
  h_close(&h);
}

FQ_TEST(stop_deadline_unknown_only_for_a_non_idempotent_request_out) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV2, "door_lock", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 2);
  drain(&h, T0 + 10, false);
  CHECK(!fq_dispatch_drained(h.d));
  drain(&h, T0 + 15010, true);
  CHECK(fq_dispatch_drained(h.d));
  CHECK_CMD(&h, a, FQ_ST_UNKNOWN, FQ_EINTERNAL, 1, "--drain-timeout-ms");
  CHECK_REASON(&h, a, "may have been executed");
  CHECK_CMD(&h, b, FQ_ST_QUEUED, 0, 1, "sent after the restart");
  /* A late answer changes nothing and sends nothing. */
  answer(&h, 0, 200, OK_RESULT);
  answer(&h, 1, 200, OK_RESULT);
  step(&h, T0 + 15100);
  CHECK_CMD(&h, a, FQ_ST_UNKNOWN, FQ_EINTERNAL, 1, "--drain-timeout-ms");
  CHECK_CMD(&h, b, FQ_ST_QUEUED, 0, 1, "sent after the restart");
  CHECK_INT(h.nreqs, 2);
  h_close(&h);
}

/* --- a failed transaction (issue 13, defect 1) ---------------------------------- */

static int devq_visit(void *ud, const char *id, const char *device, int64_t deadline) {
  return fq_devq_push(ud, device, fq_store_id_num(id), deadline) ? -ENOMEM : 0;
}

/* One turn of the shard's loop whose transaction fails (a full map, a
 * storage error): the step reports the error, the shard aborts, rolls the
 * dispatcher back and rebuilds its queues from the store.  The log loses
 * what the aborted transaction recorded: it never happened. */
static void step_fails(h_t *h, int64_t now) {
  fq_err_t err;
  fq_err_clear(&err);
  h->now = now;
  int nlog = h->nlog;
  if (fq_store_begin(h->store, true, &err) != 0) {
    FQ__FAIL("begin: %s", err.msg);
    return;
  }
  int rc = fq_dispatch_step(h->d, NULL, 0, now, &err);
  if (rc == 0) FQ__FAIL("the step did not fail");
  fq_store_abort(h->store);
  fq_dispatch_rollback(h->d);
  fq_dispatch_launch(h->d, now);
  h->nlog = nlog;
  fq_devq_destroy(&h->q);
  h->q = fq_devq_new();
  if (!h->q || fq_store_begin(h->store, false, &err) != 0) {
    FQ__FAIL("rebuild");
    return;
  }
  if (fq_store_active_scan(h->store, devq_visit, h->q, &err) != 0) FQ__FAIL("rebuild scan");
  fq_store_abort(h->store);
}

/* The answer to a sent command arrives in a step whose transaction then
 * fails: the store still says `sent`.  The command must not be signed
 * and sent again (it was: queued dispatching sent dispatching sent, one
 * honk more than reported); its kept answer is recorded by the next step,
 * and the next command goes after it. */
FQ_TEST(failed_step_never_sends_a_command_twice) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV, "flash_lights", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, REST("honk_horn"));
  answer(&h, 0, 200, OK_RESULT);
  h.fail_transitions = 1; /* a's `succeeded` does not fit */
  step_fails(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  CHECK_INT(h.nreqs, 1);
  /* Whatever kicks the device next (a submit, a cancel) and however many
   * steps run: the honk is never sent again. */
  fq_dispatch_kick(h.d, DEV);
  step(&h, T0 + 200);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, REST("flash_lights"));
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 1, "");
  /* Two failures in a row, the second while acting on the kept answer
   * again: still once. */
  answer(&h, 1, 200, OK_RESULT);
  h.fail_transitions = 1;
  step_fails(&h, T0 + 300);
  h.fail_transitions = 1;
  step_fails(&h, T0 + 400);
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 1, "");
  step(&h, T0 + 500);
  step(&h, T0 + 600);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(h.nreqs, 2);
  fq_dispatch_stats_t st;
  fq_dispatch_stats(h.d, &st);
  CHECK_INT(st.sent, 2);
  CHECK_INT(st.succeeded, 2);
  h_close(&h);
}

/* A failed step that had started the next command (its request prepared,
 * never launched) and one that met a command in flight elsewhere: each
 * device is back exactly where it was. */
FQ_TEST(failed_step_puts_every_device_back) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV2, "flash_lights", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 2);
  int ia = strstr(h.reqs[0].url, VIN2) ? 1 : 0;
  uint64_t c = submit(&h, DEV, "door_lock", 60000);
  answer(&h, ia, 200, OK_RESULT);
  /* a succeeds and c starts (dispatching, sent: its request prepared),
   * then a later change fails. */
  h.fail_transitions = 0;
  int nlog = h.nlog;
  fq_err_t err;
  CHECK_INT(fq_store_begin(h.store, true, &err), 0);
  CHECK_INT(fq_dispatch_step(h.d, NULL, 0, T0 + 100, &err), 0);
  fq_store_abort(h.store);
  fq_dispatch_rollback(h.d);
  fq_dispatch_launch(h.d, T0 + 100);
  h.nlog = nlog;
  CHECK_INT(h.nreqs, 2); /* c's request never left */
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  CHECK_CMD(&h, c, FQ_ST_QUEUED, 0, 0, "");
  fq_devq_destroy(&h.q);
  h.q = fq_devq_new();
  CHECK_INT(fq_store_begin(h.store, false, &err), 0);
  CHECK_INT(fq_store_active_scan(h.store, devq_visit, h.q, &err), 0);
  fq_store_abort(h.store);
  /* b's device was not touched: its request is still awaited. */
  step(&h, T0 + 200);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_INT(h.nreqs, 3);
  CHECK_REQ(&h, 2, FQ_HTTP_POST, REST("door_lock"));
  CHECK_STATES(&h, c, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT);
  answer(&h, 1 - ia, 200, OK_RESULT);
  answer(&h, 2, 200, OK_RESULT);
  step(&h, T0 + 300);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, c, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_INT(h.nreqs, 3);
  h_close(&h);
}

/* A reader in another process holding the store's current snapshot: LMDB
 * then reuses no page freed after it.  Returns the pipe that lets it go
 * (close it), or -1. */
static int pin_snapshot(h_t *h, uint64_t map_size) {
  int up[2], down[2];
  if (pipe(up) != 0) return -1;
  if (pipe(down) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    MDB_env *env;
    MDB_txn *txn;
    char c = 'r';
    close(up[0]);
    close(down[1]);
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)map_size) ||
        mdb_env_open(env, h->dir, MDB_RDONLY | MDB_NOTLS, 0600) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))
      _exit(1);
    if (write(up[1], &c, 1) != 1) _exit(1);
    while (read(down[0], &c, 1) > 0) {
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    _exit(0);
  }
  close(up[1]);
  close(down[0]);
  char c;
  bool ok = pid > 0 && read(up[0], &c, 1) == 1;
  close(up[0]);
  if (!ok) {
    close(down[1]);
    return -1;
  }
  return down[1];
}

static void unpin_snapshot(int fd) {
  close(fd);
  int status;
  while (wait(&status) > 0) {
  }
}

/* Fill the store's map until not one more page can be had (with the pages
 * freed meanwhile pinned by pin_snapshot): junk sessions committed in ever
 * smaller transactions, then rewrites of one of them in place (each needs
 * only copies of the pages on its path) until even that fails.  A
 * transaction then fails at its first write that needs a page (every
 * change needs one), and LMDB refuses every later operation of it
 * (MDB_BAD_TXN), reads included. */
static void fill_map(h_t *h) {
  static const uint8_t junk[2000];
  static const size_t size[] = {2000, 200, 10};
  unsigned k = 0;
  for (size_t s = 0; s < 3; s++) {
    for (int per = 64; per >= 1; per /= 8) {
      for (bool fits = true; fits;) {
        fq_err_t err;
        if (fq_store_begin(h->store, true, &err) != 0) return;
        for (int i = 0; i < per && fits; i++) {
          char vin[18];
          snprintf(vin, sizeof vin, "J%015u", k++);
          fits = fq_store_session_put(h->store, vin, 9, junk, size[s], &err) == 0;
        }
        if (fits) fits = fq_store_commit(h->store, &err) == 0;
        else fq_store_abort(h->store);
      }
    }
  }
  for (bool fits = true; fits;) {
    fq_err_t err;
    if (fq_store_begin(h->store, true, &err) != 0) return;
    fits = fq_store_session_put(h->store, "J000000000000000", 9, junk, 2000, &err) == 0;
    if (fits) fits = fq_store_commit(h->store, &err) == 0;
    else fq_store_abort(h->store);
  }
}

/* The same with a real full map: the step's first write fails with
 * MDB_MAP_FULL and every later read of its transaction with MDB_BAD_TXN
 * (the answer could not even be looked at).  The honk is signed once; its
 * answer is recorded once the map has room (grown here). */
FQ_TEST(full_map_step_never_signs_a_command_twice) {
  h_t h;
  hopts_t o = {.map_size = 1 << 20};
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0);
  car_answer(&h, 0); /* the handshake */
  step(&h, T0 + 100);
  CHECK_INT(h.nreqs, 2);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  car_answer(&h, 1);
  CHECK_INT(h.car.accepted, 1);
  int pin = pin_snapshot(&h, o.map_size);
  CHECK(pin >= 0);
  fill_map(&h);
  step_fails(&h, T0 + 200);
  fq_dispatch_kick(h.d, DEV);
  step_fails(&h, T0 + 300);
  unpin_snapshot(pin);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  CHECK_INT(h.nreqs, 2);
  fq_err_t err;
  CHECK_INT(fq_store_set_map_size(h.store, 4 << 20, &err), 0);
  CHECK_INT((int)(fq_store_map_size(h.store) >> 20), 4);
  fq_dispatch_kick(h.d, DEV);
  step(&h, T0 + 400);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(h.nreqs, 3);
  car_answer(&h, 2);
  step(&h, T0 + 500);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  CHECK_INT(h.nreqs, 3);
  CHECK_INT(h.car.accepted, 2); /* two honks submitted, two executed */
  CHECK_INT(h.car.handshakes, 1);
  h_close(&h);
}

/* Answers that arrive while the shard cannot write are kept in order
 * (fq_dispatch_collect) and recorded by the next step. */
FQ_TEST(collected_answers_are_recorded_by_the_next_step) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV2, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 2);
  answer(&h, 0, 200, OK_RESULT);
  answer(&h, 1, 500, "{\"error\":\"internal\"}");
  fq_dispatch_collect(h.d, NULL, 0);
  CHECK(fq_dispatch_pending(h.d, T0 + 10));
  CHECK_INT(fq_dispatch_timeout_ms(h.d, T0 + 10), 0);
  CHECK_CMD(&h, a, FQ_ST_SENT, 0, 1, "");
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 1, "");
  step(&h, T0 + 20);
  int ia = strstr(h.reqs[0].url, VIN2) ? 1 : 0;
  CHECK_CMD(&h, ia == 0 ? a : b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_CMD(&h, ia == 0 ? b : a, FQ_ST_UNKNOWN, FQ_EHTTP, 1, "may have been executed");
  CHECK_INT(h.nreqs, 2);
  CHECK(!fq_dispatch_pending(h.d, T0 + 30));
  h_close(&h);
}

/* The safety net: a command stored as started while its device has
 * nothing in flight is settled as a restart would (a non-idempotent
 * `sent` one ends unknown, unsent; an idempotent one is sent again), never
 * started blindly. */
FQ_TEST(only_a_queued_command_is_started) {
  h_t h;
  if (h_open(&h, NULL) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN);
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "honk_horn", 60000);
  uint64_t b = submit(&h, DEV2, "door_lock", 60000);
  /* Behind the dispatcher's back, as a lost rollback would leave them. */
  fq_err_t err;
  CHECK_INT(fq_store_begin(h.store, true, &err), 0);
  uint64_t nums[2] = {a, b};
  for (int i = 0; i < 2; i++) {
    fq_cmdrec_t r;
    char id[FQ_ID_LEN + 1];
    fq_store_id_format(0, nums[i], id);
    CHECK_INT(fq_store_cmd_get(h.store, id, FQ_ID_LEN, &r, &err), 0);
    r.attempts = 1;
    CHECK_INT(t_transition(&h, &r, FQ_ST_SENT, "", 0, T0, true, &err), 0);
    fq_cmdrec_free(&r);
  }
  CHECK_INT(fq_store_commit(h.store, &err), 0);
  step(&h, T0 + 10);
  CHECK_CMD(&h, a, FQ_ST_UNKNOWN, FQ_EINTERNAL, 1, "lost track");
  CHECK_REASON(&h, a, "may have been executed");
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/command/door_lock");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_SENT, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT);
  CHECK_CMD(&h, b, FQ_ST_SENT, 0, 2, "");
  h_close(&h);
}

/* --- the fleet_status pre-check (precheck.c) ---------------------------------- */

#define FLEET_STATUS "/api/1/vehicles/fleet_status"
#define FS_UNPAIRED                                                                     \
  "{\"response\":{\"key_paired_vins\":[],\"unpaired_vins\":[\"" VIN "\"],"             \
  "\"vehicle_info\":{\"" VIN "\":{\"vehicle_command_protocol_required\":true}}}}"
#define FS_PAIRED                                                                       \
  "{\"response\":{\"key_paired_vins\":[\"" VIN "\",\"" VIN2 "\"],\"unpaired_vins\":[]," \
  "\"vehicle_info\":{\"" VIN "\":{\"vehicle_command_protocol_required\":true},\""      \
  VIN2 "\":{\"vehicle_command_protocol_required\":false}}}}"

/* An unpaired car: one fleet_status, then the command fails with the
 * pairing link; no handshake, no wake_up, nothing signed. */
FQ_TEST(precheck_unpaired_fails_without_touching_the_car) {
  hopts_t o = {.unpaired = true, .fleet_status_ttl_ms = 3600000};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, FLEET_STATUS);
  CHECK_MEM(h.reqs[0].body, h.reqs[0].body_len, "{\"vins\":[\"" VIN "\"]}",
            strlen("{\"vins\":[\"" VIN "\"]}"));
  CHECK_INT(h.reqs[0].token, 0);
  CHECK_CMD(&h, a, FQ_ST_QUEUED, 0, 0, ""); /* waits for the answer */
  answer(&h, 0, 200, FS_UNPAIRED);
  step(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ENOTPAIRED, 0, "https://tesla.com/_ak/" PAIRING);
  check_reason(&h, a, "fleet_status", __LINE__);
  CHECK_STATES(&h, a, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_FAILED);
  /* The next command shares the answer. */
  uint64_t b = submit(&h, DEV, "honk_horn", 60000);
  step(&h, T0 + 200);
  CHECK_CMD(&h, b, FQ_ST_FAILED, FQ_ENOTPAIRED, 0, "https://tesla.com/_ak/" PAIRING);
  CHECK_INT(h.nreqs, 1);
  CHECK_INT(h.car.handshakes, 0);
  CHECK_INT(h.car.accepted, 0);
  h_close(&h);
}

/* Paired: signed as before, fleet_status asked once for both cars of the
 * account; the car without the protocol goes to REST up front. */
FQ_TEST(precheck_batches_and_chooses_rest_up_front) {
  hopts_t o = {.fleet_status_ttl_ms = 3600000};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "door_lock", 60000);
  uint64_t b = submit(&h, DEV2, "honk_horn", 60000);
  step(&h, T0);
  CHECK_INT(h.nreqs, 1);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, FLEET_STATUS);
  CHECK(strstr(h.reqs[0].body, VIN) && strstr(h.reqs[0].body, VIN2));
  answer(&h, 0, 200, FS_PAIRED);
  step(&h, T0 + 100);
  CHECK_INT(h.nreqs, 3);
  int hs = find_req(&h, 1, SIGNED), rest = find_req(&h, 1, "/api/1/vehicles/" VIN2
                                                          "/command/honk_horn");
  CHECK(hs >= 1);
  CHECK(rest >= 1);
  if (rest >= 1) answer(&h, rest, 200, OK_RESULT);
  step(&h, T0 + 200);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  CHECK_STATES(&h, b, FQ_ST_QUEUED, FQ_ST_DISPATCHING, FQ_ST_SENT, FQ_ST_SUCCEEDED);
  if (hs >= 1) car_answer(&h, hs); /* session info */
  step(&h, T0 + 300);
  int cmd = find_req(&h, hs + 1, SIGNED);
  CHECK(cmd > hs);
  if (cmd > hs) car_answer(&h, cmd);
  step(&h, T0 + 400);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  /* More commands within the TTL: no fleet_status. */
  uint64_t c = submit(&h, DEV2, "flash_lights", 60000);
  step(&h, T0 + 500);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, FLEET_STATUS), 1);
  CHECK_REQ(&h, h.nreqs - 1, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/command/flash_lights");
  answer(&h, h.nreqs - 1, 200, OK_RESULT);
  step(&h, T0 + 600);
  CHECK_CMD(&h, c, FQ_ST_SUCCEEDED, 0, 1, "");
  /* Past the TTL: asked again. */
  h.now = T0 + 3600000 + 100;
  uint64_t d = submit(&h, DEV2, "flash_lights", 60000);
  step(&h, T0 + 3600000 + 100);
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, FLEET_STATUS), 2);
  CHECK_CMD(&h, d, FQ_ST_QUEUED, 0, 0, "");
  h_close(&h);
}

/* fleet_status fails: the command goes out as before (handshake), and
 * the account's next command does not ask during the back-off. */
FQ_TEST(precheck_failure_falls_back) {
  hopts_t o = {.fleet_status_ttl_ms = 3600000};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  make_legacy(&h, VIN2);
  uint64_t a = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0);
  CHECK_REQ(&h, 0, FQ_HTTP_POST, FLEET_STATUS);
  answer(&h, 0, 503, "{\"error\":\"upstream\"}");
  step(&h, T0 + 100);
  CHECK_INT(h.nreqs, 2);
  CHECK_REQ(&h, 1, FQ_HTTP_POST, SIGNED);
  car_answer(&h, 1);
  step(&h, T0 + 200);
  car_answer(&h, 2);
  step(&h, T0 + 300);
  CHECK_CMD(&h, a, FQ_ST_SUCCEEDED, 0, 1, "");
  uint64_t b = submit(&h, DEV2, "honk_horn", 60000);
  step(&h, T0 + 400);
  CHECK_REQ(&h, h.nreqs - 1, FQ_HTTP_POST, "/api/1/vehicles/" VIN2 "/command/honk_horn");
  CHECK_INT(count_reqs(&h, FQ_HTTP_POST, FLEET_STATUS), 1);
  answer(&h, h.nreqs - 1, 200, OK_RESULT);
  step(&h, T0 + 500);
  CHECK_CMD(&h, b, FQ_ST_SUCCEEDED, 0, 1, "");
  h_close(&h);
}

/* The step that acts on an unpaired answer fails (storage full): after
 * the rollback the next step fails the command the same way, without
 * asking again and without touching the car. */
FQ_TEST(precheck_survives_a_failed_step) {
  hopts_t o = {.unpaired = true, .fleet_status_ttl_ms = 3600000};
  h_t h;
  if (h_open(&h, &o) != 0) {
    FQ__FAIL("harness");
    return;
  }
  uint64_t a = submit(&h, DEV, "door_lock", 60000);
  step(&h, T0);
  answer(&h, 0, 200, FS_UNPAIRED);
  h.fail_transitions = 1;
  step_fails(&h, T0 + 100);
  CHECK_CMD(&h, a, FQ_ST_QUEUED, 0, 0, "");
  step(&h, T0 + 200);
  CHECK_CMD(&h, a, FQ_ST_FAILED, FQ_ENOTPAIRED, 0, "https://tesla.com/_ak/" PAIRING);
  CHECK_INT(h.nreqs, 1);
  CHECK_INT(h.car.handshakes, 0);
  h_close(&h);
}
