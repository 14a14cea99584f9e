/*
 * The auth thread: admin requests on accounts, and OAuth token refreshes
 * with single flight per account.  See auth.h for the messaging and
 * docs/accounts.md for the policy as a user sees it.
 *
 * Everything below runs on the auth thread except fq_auth_new/start/
 * destroy (the owner's thread) and the generation / failure functions
 * (any thread; they are the only shared state and are atomic or locked).
 */
#include "auth.h"
#include "zmsg.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fleetapi.h"
#include "fleetq/commands.h"
#include "fleetq/wire.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "mpread.h"
#include "oauth.h"
#include "util.h"

#define MOD "auth"
/* An admin request from the ingress: 'Q', the client's routing id, its
 * envelope (FQ_WIRE_MAX_ENVELOPE frames at most: the one limit of the
 * ingress, the shards and this thread) and the body. */
#define MAX_FRAMES (FQ_WIRE_MAX_ENVELOPE + 3)
#define REFRESH_TIMEOUT_MS 15000
#define TOKEN_REPLY_MAX (64 * 1024)
#define BACKOFF_MIN_MS 5000
#define BACKOFF_MAX_MS 300000
/* A failed (rejected) account is not retried automatically; an explicit
 * request retries it at most this often. */
#define FAILED_RETRY_MS 600000
#define FAILURE_MAX 512

/* ------------------------------------------------------------------ */
/* The auth object                                                      */

typedef enum ref_state {
  REF_IDLE = 0,   /* nothing going on (kept to remember last_ok / failed) */
  REF_INFLIGHT,   /* a token request is running */
  REF_WAIT,       /* waiting for next_ms to try again */
  REF_FAILED,     /* rejected: the user must connect again */
} ref_state_t;

typedef struct auth_ref {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  ref_state_t state;
  uint64_t http_id;
  int64_t next_ms;        /* REF_WAIT: when to try again */
  int64_t backoff_ms;     /* the wait after the next retryable failure */
  int64_t last_ok_ms;     /* last successful refresh */
  int64_t failed_ms;      /* when it was rejected */
  bool stale;             /* the account was replaced or removed while the
                             request ran: its answer must not be stored,
                             unless the new record kept the refresh token
                             that was sent */
  uint8_t sent_hash[32];  /* SHA-256 of the refresh token sent (no secret
                             kept in memory longer than the request) */
  bool pending;           /* another request came in while in flight */
  bool doubtful;          /* the previous attempt may have spent the refresh
                             token (lost or unreadable reply) */
  unsigned attempts;      /* token calls made (tests and logs) */
} auth_ref_t;

typedef struct ref_cb {
  struct fq_auth *a;
  char id[FQ_ACCOUNT_ID_MAX + 1];
} ref_cb_t;

/* The last rejected refresh of an account (fq_auth_refresh_failure), or
 * the account-wide refusal Fleet API gave it (fq_auth_account_refused). */
typedef struct failure {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  int code;
  char reason[FAILURE_MAX];
} failure_t;

typedef struct failtab {
  failure_t *v;
  size_t n, cap;
} failtab_t;

struct fq_auth {
  fq_auth_opts_t o;
  char *ca_file, *token_url, *extra_host;
  void *pair, *pull;
  fq_http_t *http;
  pthread_t th;
  bool started;
  bool stopping;
  int64_t next_scan_ms;
  auth_ref_t *refs;
  size_t nrefs, caprefs;
  _Atomic uint64_t token_calls;
  fq_buf_t out;
  /* Shared with the shards (the only state that is): the generation
   * counter, atomic, and the two failure tables behind their mutex. */
  _Atomic uint64_t generation;
  pthread_mutex_t fail_mu;
  bool fail_mu_ok;           /* initialised: destroy it */
  failtab_t fail;            /* rejected refreshes */
  failtab_t refused;         /* 412 / 451 / mobile_access_disabled, set by shards */
};

/* ------------------------------------------------------------------ */
/* Shared state: the generation counter and the failure table           */

/* The const-taking readers cast: the counter and the mutex change under a
 * reader's feet by design (they are how threads talk), not the handle. */
uint64_t fq_auth_generation(const fq_auth_t *a) {
  return a ? atomic_load(&((fq_auth_t *)a)->generation) : 0;
}

void fq_auth_bump_generation(fq_auth_t *a) {
  if (a) atomic_fetch_add(&a->generation, 1);
}

static void failure_set(fq_auth_t *a, failtab_t *t, const char *id, int code,
                        const char *reason) {
  pthread_mutex_lock(&a->fail_mu);
  failure_t *f = NULL;
  for (size_t i = 0; i < t->n && !f; i++)
    if (strcmp(t->v[i].id, id) == 0) f = &t->v[i];
  if (!f && t->n == t->cap) {
    size_t nc = t->cap ? t->cap * 2 : 8;
    failure_t *nw = realloc(t->v, nc * sizeof *nw);
    if (nw) {
      t->v = nw;
      t->cap = nc;
    }
  }
  if (!f && t->n < t->cap) f = &t->v[t->n++];
  if (f) {
    snprintf(f->id, sizeof f->id, "%s", id);
    f->code = code;
    snprintf(f->reason, sizeof f->reason, "%s", reason);
  }
  pthread_mutex_unlock(&a->fail_mu);
}

/* True when id had an entry. */
static bool failure_clear(fq_auth_t *a, failtab_t *t, const char *id) {
  bool found = false;
  pthread_mutex_lock(&a->fail_mu);
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->v[i].id, id) == 0) {
      t->v[i] = t->v[--t->n];
      found = true;
      break;
    }
  pthread_mutex_unlock(&a->fail_mu);
  return found;
}

/* The entry's code (FQ_EAUTH for refresh failures) and reason; 0 when
 * none. */
static int failure_get(const fq_auth_t *ca, const failtab_t *t, const char *account, char *out,
                       size_t cap) {
  fq_auth_t *a = (fq_auth_t *)ca;
  int code = 0;
  if (out && cap) out[0] = 0;
  if (!a || !account) return 0;
  pthread_mutex_lock(&a->fail_mu);
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->v[i].id, account) == 0) {
      if (out && cap) snprintf(out, cap, "%s", t->v[i].reason);
      code = t->v[i].code;
      break;
    }
  pthread_mutex_unlock(&a->fail_mu);
  return code;
}

bool fq_auth_refresh_failure(const fq_auth_t *a, const char *account, char *out, size_t cap) {
  return failure_get(a, a ? &a->fail : NULL, account, out, cap) != 0;
}

size_t fq_auth_refresh_failures(const fq_auth_t *ca, char (*ids)[FQ_ACCOUNT_ID_MAX + 1],
                                int *codes, char (*reasons)[200], size_t max) {
  fq_auth_t *a = (fq_auth_t *)ca;
  if (!a) return 0;
  pthread_mutex_lock(&a->fail_mu);
  size_t n = a->fail.n;
  for (size_t i = 0; i < n && i < max; i++) {
    snprintf(ids[i], sizeof ids[i], "%s", a->fail.v[i].id);
    codes[i] = a->fail.v[i].code;
    snprintf(reasons[i], sizeof reasons[i], "%.199s", a->fail.v[i].reason);
  }
  pthread_mutex_unlock(&a->fail_mu);
  return n;
}

void fq_auth_account_refuse(fq_auth_t *a, const char *account, int code, const char *reason) {
  if (!a || !account || !code) return;
  failure_set(a, &a->refused, account, code, reason);
}

int fq_auth_account_refused(const fq_auth_t *a, const char *account, char *out, size_t cap) {
  return failure_get(a, a ? &a->refused : NULL, account, out, cap);
}

const char *fq_auth_admin_endpoint(const fq_auth_t *a) {
  (void)a;
  return FQ_AUTH_ADMIN_ENDPOINT;
}

const char *fq_auth_refresh_endpoint(const fq_auth_t *a) {
  (void)a;
  return FQ_AUTH_REFRESH_ENDPOINT;
}

uint64_t fq_auth_token_calls(const fq_auth_t *a) {
  return a ? atomic_load(&((fq_auth_t *)a)->token_calls) : 0;
}

static int sockopt_int(void *s, int opt, int v) { return zmq_setsockopt(s, opt, &v, sizeof v); }

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

fq_auth_t *fq_auth_new(const fq_auth_opts_t *opts, fq_err_t *err) {
  fq_auth_t *a = calloc(1, sizeof *a);
  if (!a) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  a->o = *opts;
  atomic_init(&a->generation, 1);
  int mrc = pthread_mutex_init(&a->fail_mu, NULL);
  if (mrc) {
    fq_errf(err, -mrc, "auth: cannot create a mutex");
    goto fail;
  }
  a->fail_mu_ok = true;
  if (!opts->zmq_ctx || !opts->accounts) {
    fq_errf(err, FQ_ECONFIG, "auth: zmq context and account store are required");
    goto fail;
  }
  if (a->o.scan_interval_ms <= 0) a->o.scan_interval_ms = FQ_AUTH_SCAN_INTERVAL_MS;
  a->ca_file = dup_or_null(opts->ca_file);
  a->token_url = dup_or_null(opts->token_url);
  a->extra_host = dup_or_null(opts->extra_host);
  if ((opts->ca_file && *opts->ca_file && !a->ca_file) ||
      (opts->token_url && *opts->token_url && !a->token_url) ||
      (opts->extra_host && *opts->extra_host && !a->extra_host)) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  a->o.ca_file = a->ca_file;
  a->o.token_url = a->token_url;
  a->o.extra_host = a->extra_host;
  if (a->token_url && strncmp(a->token_url, "https://", 8) != 0 &&
      strncmp(a->token_url, "http://", 7) != 0) {
    fq_errf(err, FQ_ECONFIG, "auth: token URL must be an http(s) URL");
    goto fail;
  }
  fq_buf_init(&a->out, FQ_WIRE_MAX_MSG * 4);
  fq_http_opts_t ho = {.ca_file = a->ca_file,
                       .total_timeout_ms = REFRESH_TIMEOUT_MS,
                       .max_body = TOKEN_REPLY_MAX,
                       .max_inflight = 256};
  fq_err_t herr = {0};
  if (!(a->http = fq_http_new(&ho, &herr))) {
    fq_errf(err, herr.code ? herr.code : FQ_EHTTP, "auth: %s", herr.msg);
    goto fail;
  }
  a->pair = zmq_socket(opts->zmq_ctx, ZMQ_PAIR);
  a->pull = zmq_socket(opts->zmq_ctx, ZMQ_PULL);
  if (!a->pair || !a->pull) {
    fq_errf(err, FQ_EINTERNAL, "auth: cannot create sockets: %s", zmq_strerror(errno));
    goto fail;
  }
  /* Replies to the ingress are never dropped (it reads them promptly);
   * refresh requests from shards are tiny and idempotent. */
  sockopt_int(a->pair, ZMQ_SNDHWM, 0);
  sockopt_int(a->pair, ZMQ_RCVHWM, 0);
  sockopt_int(a->pair, ZMQ_LINGER, 0);
  sockopt_int(a->pull, ZMQ_LINGER, 0);
  if (zmq_bind(a->pair, FQ_AUTH_ADMIN_ENDPOINT) != 0 ||
      zmq_bind(a->pull, FQ_AUTH_REFRESH_ENDPOINT) != 0) {
    fq_errf(err, FQ_EINTERNAL, "auth: cannot bind %s / %s: %s", FQ_AUTH_ADMIN_ENDPOINT,
            FQ_AUTH_REFRESH_ENDPOINT, zmq_strerror(errno));
    goto fail;
  }
  return a;
fail:
  fq_auth_destroy(&a);
  return NULL;
}

void fq_auth_destroy(fq_auth_t **ap) {
  if (!ap || !*ap) return;
  fq_auth_t *a = *ap;
  if (a->started) pthread_join(a->th, NULL);
  if (a->pair) zmq_close(a->pair);
  if (a->pull) zmq_close(a->pull);
  fq_http_destroy(&a->http);
  fq_buf_free(&a->out);
  free(a->refs);
  free(a->fail.v);
  free(a->refused.v);
  if (a->fail_mu_ok) pthread_mutex_destroy(&a->fail_mu);
  free(a->ca_file);
  free(a->token_url);
  free(a->extra_host);
  free(a);
  *ap = NULL;
}

/* ------------------------------------------------------------------ */
/* Refresh bookkeeping                                                  */

static auth_ref_t *ref_find(fq_auth_t *a, const char *id) {
  for (size_t i = 0; i < a->nrefs; i++)
    if (strcmp(a->refs[i].id, id) == 0) return &a->refs[i];
  return NULL;
}

static auth_ref_t *ref_get(fq_auth_t *a, const char *id) {
  auth_ref_t *r = ref_find(a, id);
  if (r) return r;
  if (a->nrefs == a->caprefs) {
    size_t nc = a->caprefs ? a->caprefs * 2 : 16;
    auth_ref_t *nw = realloc(a->refs, nc * sizeof *nw);
    if (!nw) return NULL;
    a->refs = nw;
    a->caprefs = nc;
  }
  r = &a->refs[a->nrefs++];
  memset(r, 0, sizeof *r);
  snprintf(r->id, sizeof r->id, "%s", id);
  r->backoff_ms = BACKOFF_MIN_MS;
  return r;
}

/* Forget an account's refresh state after an admin write (add / remove):
 * the tokens changed under it.  A request still running keeps its slot
 * but its answer will be dropped. */
static void ref_reset(fq_auth_t *a, const char *id) {
  auth_ref_t *r = ref_find(a, id);
  if (!r) return;
  if (r->state == REF_INFLIGHT) {
    r->stale = true;
    r->pending = false;
    return;
  }
  *r = a->refs[--a->nrefs];
}

/* The token endpoint for an account.  Tesla's endpoints for a Tesla Fleet
 * API host; base_url + /oauth2/v3/token for another host (the simulator,
 * which serves the token endpoint next to the Fleet API). */
static int token_url_for(const fq_auth_t *a, const fq_account_t *acc, char *out, size_t cap) {
  if (a->token_url) return snprintf(out, cap, "%s", a->token_url) < (int)cap ? 0 : FQ_ETOOLARGE;
  if (acc->base_url[0]) {
    char host[FQ_BASE_URL_MAX + 1];
    const char *h = strstr(acc->base_url, "://");
    h = h ? h + 3 : acc->base_url;
    size_t n = strcspn(h, ":/");
    snprintf(host, sizeof host, "%.*s", (int)n, h);
    if (!fq_fa_host_allowed(host, NULL)) {
      return snprintf(out, cap, "%s/oauth2/v3/token", acc->base_url) < (int)cap ? 0
                                                                                : FQ_ETOOLARGE;
    }
    if (!acc->region[0]) {
      size_t hl = strlen(host);
      bool cn = hl > 9 && strcasecmp(host + hl - 9, ".tesla.cn") == 0;
      return snprintf(out, cap, "%s", fq_oauth_token_url(cn ? "cn" : "na")) < (int)cap
                 ? 0
                 : FQ_ETOOLARGE;
    }
  }
  const char *u = fq_oauth_token_url(acc->region);
  if (!u) return FQ_ENOTFOUND;
  return snprintf(out, cap, "%s", u) < (int)cap ? 0 : FQ_ETOOLARGE;
}

static void on_token_reply(void *ud, const fq_http_resp_t *resp);

/* SHA-256 of a refresh token, to recognise it later without keeping it. */
static void rt_hash(const char *rt, uint8_t out[32]) {
  unsigned n = 0;
  if (EVP_Digest(rt, strlen(rt), out, &n, EVP_sha256(), NULL) != 1) memset(out, 0, 32);
}

/* Does the stored account still hold the refresh token r sent? */
static bool still_holds_sent(fq_auth_t *a, const auth_ref_t *r) {
  fq_account_t *acc = fq_account_new();
  uint8_t h[32];
  bool same = false;
  if (acc && fq_accounts_get(a->o.accounts, r->id, acc, NULL) == 0) {
    rt_hash(acc->refresh_token, h);
    same = CRYPTO_memcmp(h, r->sent_hash, 32) == 0;
  }
  fq_account_free(&acc);
  return same;
}

/* Wait before the next try; the wait doubles up to BACKOFF_MAX_MS. */
static void ref_backoff(auth_ref_t *r, int64_t now, int64_t at_least_ms) {
  int64_t w = r->backoff_ms > at_least_ms ? r->backoff_ms : at_least_ms;
  r->state = REF_WAIT;
  r->next_ms = now + w;
  r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Record a refresh the user must act on, and let shards notice. */
static void ref_fail(fq_auth_t *a, auth_ref_t *r, const char *reason) {
  r->state = REF_FAILED;
  r->failed_ms = fq_now_ms();
  r->pending = false;
  failure_set(a, &a->fail, r->id, FQ_EAUTH, reason);
  fq_auth_bump_generation(a);
  fq_warn(MOD, "account %s: token refresh rejected: %s", r->id, reason);
  (void)a;
}

/* Start the token request of r now.  Single flight: the caller has made
 * sure none is running. */
static void ref_start(fq_auth_t *a, auth_ref_t *r) {
  fq_account_t *acc = fq_account_new();
  fq_buf_t body;
  fq_err_t err = {0};
  char url[FQ_BASE_URL_MAX + 64];
  ref_cb_t *cb = NULL;
  int64_t now = fq_now_ms();
  fq_buf_init(&body, FQ_TOKEN_MAX * 3 + 1024);
  if (!acc) {
    ref_backoff(r, now, 0);
    goto out;
  }
  int rc = fq_accounts_get(a->o.accounts, r->id, acc, &err);
  if (rc == FQ_ENOTFOUND) {
    /* Removed meanwhile: nothing to refresh. */
    r->state = REF_IDLE;
    r->pending = false;
    goto out;
  }
  if (rc) {
    fq_error(MOD, "account %s: cannot read it for a refresh: %s", r->id, err.msg);
    if (rc == FQ_EVERIFY) {
      ref_fail(a, r, "the stored account record does not decrypt (wrong token.key or a "
                     "damaged record): add the account again with fleetq account add");
    } else {
      ref_backoff(r, now, 0);
    }
    goto out;
  }
  if (token_url_for(a, acc, url, sizeof url) != 0) {
    ref_fail(a, r, "no token endpoint is known for this account (no region and no base URL)");
    goto out;
  }
  if ((rc = fq_oauth_refresh_body(&body, acc->client_id, acc->refresh_token, &err)) != 0) {
    ref_fail(a, r, err.msg);
    goto out;
  }
  cb = calloc(1, sizeof *cb);
  if (!cb) {
    ref_backoff(r, now, 0);
    goto out;
  }
  cb->a = a;
  snprintf(cb->id, sizeof cb->id, "%s", r->id);
  fq_http_req_t req = {.method = FQ_HTTP_POST,
                       .url = url,
                       .content_type = "application/x-www-form-urlencoded",
                       .body = body.data,
                       .body_len = body.len};
  uint64_t hid = 0;
  if ((rc = fq_http_request(a->http, &req, on_token_reply, cb, &hid, &err)) != 0) {
    free(cb);
    cb = NULL;
    if (rc == FQ_EBADPARAM) {
      ref_fail(a, r, "the account's token endpoint URL is not usable");
    } else {
      fq_warn(MOD, "account %s: cannot start a token refresh: %s", r->id, err.msg);
      ref_backoff(r, now, 0);
    }
    goto out;
  }
  rt_hash(acc->refresh_token, r->sent_hash);
  r->state = REF_INFLIGHT;
  r->http_id = hid;
  r->stale = false;
  r->pending = false;
  r->attempts++;
  atomic_fetch_add(&a->token_calls, 1);
  fq_debug(MOD, "account %s: refreshing the access token (attempt %u)", r->id, r->attempts);
out:
  fq_oauth_wipe_buf(&body);
  fq_account_free(&acc);
}

/* A refresh was asked for (a shard after a 401, the expiry scan, an admin
 * add of an expiring token).  Merged into a running one or into a
 * scheduled retry; a rejected account is retried only now and then. */
static void ref_request(fq_auth_t *a, const char *id, bool explicit_ask) {
  if (a->stopping) return;
  auth_ref_t *r = ref_get(a, id);
  if (!r) return;
  int64_t now = fq_now_ms();
  switch (r->state) {
  case REF_INFLIGHT:
    if (!r->stale) return; /* single flight: its result answers this one too */
    r->pending = true;     /* the running one is for replaced tokens */
    return;
  case REF_WAIT:
    return; /* the retry timer owns it */
  case REF_FAILED:
    if (!explicit_ask || now - r->failed_ms < FAILED_RETRY_MS) return;
    break;
  case REF_IDLE:
    /* Even right after a success: the asker may have been refused the new
     * token (it expired or was revoked early), and a request carries no
     * hint of which token it held.  One extra refresh costs little; a
     * skipped one fails commands. */
    break;
  }
  ref_start(a, r);
}

static void on_token_reply(void *ud, const fq_http_resp_t *resp) {
  ref_cb_t *cb = ud;
  fq_auth_t *a = cb->a;
  auth_ref_t *r = ref_find(a, cb->id);
  fq_oauth_result_t *res = calloc(1, sizeof *res);
  int64_t now = fq_now_ms();
  if (!r) goto out; /* cannot happen: slots of running requests stay */
  fq_metrics_fleet_api(FQ_MK_TOKEN, resp->outcome == FQ_HTTP_COMPLETE ? resp->status : 0, NULL);
  r->state = REF_IDLE;
  if (r->stale && still_holds_sent(a, r)) {
    /* Re-added with the same refresh token (say, the same `account add`
     * run twice): the endpoint may just have spent it, so this answer is
     * the account's only way forward.  Handle it as usual. */
    r->stale = false;
  }
  if (r->stale) {
    /* The account was replaced (other tokens) or removed while this ran:
     * the answer belongs to tokens nobody holds any more. */
    r->stale = false;
    fq_info(MOD, "account %s: dropped the answer of a refresh for replaced tokens", r->id);
    if (r->pending) {
      r->pending = false;
      ref_start(a, r);
    }
    goto out;
  }
  if (!res) {
    ref_backoff(r, now, 0);
    goto out;
  }
  if (resp->outcome == FQ_HTTP_NOT_SENT) {
    fq_warn(MOD, "account %s: token endpoint not reached (%s); retrying", r->id, resp->err.msg);
    fq_metrics_token_refresh(FQ_MR_UNREACHABLE);
    ref_backoff(r, now, 0);
    goto out;
  }
  if (resp->outcome != FQ_HTTP_COMPLETE) {
    /* The endpoint may have rotated the refresh token and we never saw
     * the new one.  Try once more with the old one; if that is refused the
     * account needs the user. */
    fq_warn(MOD, "account %s: token reply lost (%s); trying once more", r->id,
            fq_http_outcome_name(resp->outcome));
    fq_metrics_token_refresh(FQ_MR_LOST);
    if (r->doubtful) {
      ref_backoff(r, now, 0);
    } else {
      r->doubtful = true;
      r->state = REF_WAIT;
      r->next_ms = now + 1000;
    }
    goto out;
  }
  fq_oauth_parse_response(resp->status, resp->body, resp->body_len,
                          resp->retry_after[0] ? resp->retry_after : NULL, now / 1000, res);
  switch (res->status) {
  case FQ_OAUTH_OK: {
    fq_err_t err = {0};
    int rc = fq_accounts_update_tokens(a->o.accounts, r->id, res->access_token,
                                       res->refresh_token, res->access_exp, res->scopes, &err);
    if (rc == FQ_ENOTFOUND) {
      fq_info(MOD, "account %s: removed while its token was refreshed", r->id);
      break;
    }
    if (rc) {
      /* The new refresh token is lost with this answer: the old one is
       * spent.  Nothing but the user can fix that. */
      fq_error(MOD, "account %s: cannot store the refreshed tokens: %s", r->id, err.msg);
      char why[FAILURE_MAX];
      snprintf(why, sizeof why,
               "the refreshed tokens could not be stored (%s): connect the account again "
               "with fleetq account add",
               err.msg);
      fq_metrics_token_refresh(FQ_MR_STORE_FAILED);
      ref_fail(a, r, why);
      break;
    }
    fq_metrics_token_refresh(FQ_MR_OK);
    /* Durable now: only from here may anyone use the new access token. */
    r->last_ok_ms = now;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->doubtful = false;
    r->attempts = 0;
    failure_clear(a, &a->fail, r->id);
    fq_auth_bump_generation(a);
    fq_info(MOD, "account %s: access token refreshed (expires at %" PRId64 ")%s", r->id,
            res->access_exp, res->refresh_token[0] ? ", refresh token rotated" : "");
    break;
  }
  case FQ_OAUTH_RETRY:
    fq_metrics_token_refresh(FQ_MR_UNAVAILABLE);
    ref_backoff(r, now, res->retry_after_s * 1000);
    fq_warn(MOD, "account %s: token endpoint unavailable (HTTP %ld); next try in %lld s", r->id,
            resp->status, (long long)((r->next_ms - now) / 1000));
    break;
  case FQ_OAUTH_UNREADABLE:
    fq_warn(MOD, "account %s: unreadable token reply: %s", r->id, res->reason);
    fq_metrics_token_refresh(FQ_MR_UNREADABLE);
    if (r->doubtful) {
      ref_fail(a, r, res->reason);
    } else {
      r->doubtful = true;
      r->state = REF_WAIT;
      r->next_ms = now + 1000;
    }
    break;
  case FQ_OAUTH_REJECTED: {
    fq_metrics_token_refresh(FQ_MR_REJECTED);
    char why[FAILURE_MAX];
    if (r->doubtful)
      snprintf(why, sizeof why, "%.380s (an earlier token reply was lost, so the refresh token "
                                "may have been spent by it)",
               res->reason);
    else
      snprintf(why, sizeof why, "%s", res->reason);
    r->doubtful = false;
    ref_fail(a, r, why);
    break;
  }
  }
  if (r->state == REF_IDLE && r->pending) {
    r->pending = false;
    ref_request(a, r->id, true);
  }
out:
  if (res) fq_oauth_result_wipe(res);
  free(res);
  free(cb);
}

/* Start every refresh whose time has come: retries that are due, and
 * accounts whose access token expires within FQ_OAUTH_REFRESH_MARGIN_S. */
static void run_timers(fq_auth_t *a) {
  int64_t now = fq_now_ms();
  for (size_t i = 0; i < a->nrefs; i++) {
    auth_ref_t *r = &a->refs[i];
    if (r->state == REF_WAIT && r->next_ms <= now) ref_start(a, r);
  }
  if (now < a->next_scan_ms) return;
  a->next_scan_ms = now + a->o.scan_interval_ms;
  fq_account_info_t *list = NULL;
  size_t n = 0;
  fq_err_t err = {0};
  if (fq_accounts_list(a->o.accounts, &list, &n, &err) != 0) {
    fq_error(MOD, "cannot list accounts: %s", err.msg);
    return;
  }
  for (size_t i = 0; i < n; i++)
    if (fq_oauth_needs_refresh(now / 1000, list[i].access_exp)) ref_request(a, list[i].id, false);
  free(list);
}

/* Milliseconds until run_timers() has work; -1 when none. */
static long timer_wait_ms(const fq_auth_t *a) {
  int64_t now = fq_now_ms(), due = a->stopping ? INT64_MAX : a->next_scan_ms;
  for (size_t i = 0; i < a->nrefs; i++)
    if (a->refs[i].state == REF_WAIT && a->refs[i].next_ms < due) due = a->refs[i].next_ms;
  if (due == INT64_MAX) return -1;
  return due <= now ? 0 : (long)(due - now > 60000 ? 60000 : due - now);
}

/* ------------------------------------------------------------------ */
/* Replies                                                              */

typedef struct enc {
  fq_buf_t *out;
  msgpack_packer pk;
  int rc;
} enc_t;

static int enc_write(void *data, const char *buf, size_t len) {
  enc_t *e = data;
  int rc = fq_buf_append(e->out, buf, len);
  if (rc && !e->rc) e->rc = rc;
  return rc ? -1 : 0;
}

static void enc_init(enc_t *e, fq_buf_t *out) {
  e->out = out;
  e->rc = 0;
  msgpack_packer_init(&e->pk, e, enc_write);
}

static void p_str(enc_t *e, const char *s) {
  msgpack_pack_str_with_body(&e->pk, s, strlen(s));
}

static void p_str_or_nil(enc_t *e, const char *s) {
  if (s && *s) p_str(e, s);
  else msgpack_pack_nil(&e->pk);
}

static void p_scopes(enc_t *e, unsigned scopes) {
  unsigned n = 0;
  for (unsigned b = 0; b < 32; b++)
    if ((scopes & (1u << b)) && fq_scope_name(1u << b)) n++;
  msgpack_pack_array(&e->pk, n);
  for (unsigned b = 0; b < 32; b++)
    if ((scopes & (1u << b)) && fq_scope_name(1u << b)) p_str(e, fq_scope_name(1u << b));
}

/* One account without secrets. */
static void p_account(const fq_auth_t *a, enc_t *e, const fq_account_info_t *i) {
  char why[FAILURE_MAX], refused_why[FAILURE_MAX];
  bool failed = fq_auth_refresh_failure(a, i->id, why, sizeof why);
  int refused = fq_auth_account_refused(a, i->id, refused_why, sizeof refused_why);
  msgpack_pack_map(&e->pk, 7 + (failed ? 1 : 0) + (refused ? 2 : 0));
  p_str(e, "id");
  p_str(e, i->id);
  p_str(e, "client_id");
  p_str(e, i->client_id);
  p_str(e, "region");
  p_str_or_nil(e, i->region);
  p_str(e, "base_url");
  p_str_or_nil(e, i->base_url);
  p_str(e, "scopes");
  p_scopes(e, i->scopes);
  p_str(e, "access_expires");
  if (i->access_exp) msgpack_pack_int64(&e->pk, i->access_exp);
  else msgpack_pack_nil(&e->pk);
  p_str(e, "updated_at");
  msgpack_pack_int64(&e->pk, i->updated_at_ms);
  if (failed) {
    p_str(e, "refresh_failure");
    p_str(e, why);
  }
  if (refused) {
    p_str(e, "refused");
    p_str(e, refused_why);
    p_str(e, "refused_error");
    p_str(e, fq_errname(refused));
  }
}

static void info_of(const fq_account_t *acc, fq_account_info_t *i) {
  memset(i, 0, sizeof *i);
  memcpy(i->id, acc->id, sizeof i->id);
  memcpy(i->client_id, acc->client_id, sizeof i->client_id);
  memcpy(i->region, acc->region, sizeof i->region);
  memcpy(i->base_url, acc->base_url, sizeof i->base_url);
  i->access_exp = acc->access_exp;
  i->scopes = acc->scopes;
  i->updated_at_ms = acc->updated_at_ms;
}

/* Start {"ok": true, <extra> entries..., "req"}; the caller packs the
 * extra entries. */
static void p_ok_head(enc_t *e, unsigned extra, const fq_request_t *req) {
  msgpack_pack_map(&e->pk, 1 + extra + (req->req_raw ? 1 : 0));
  p_str(e, "ok");
  msgpack_pack_true(&e->pk);
  if (req->req_raw) {
    p_str(e, "req");
    if (fq_buf_append(e->out, req->req_raw, req->req_raw_len) && !e->rc) e->rc = FQ_ETOOLARGE;
  }
}

/* ------------------------------------------------------------------ */
/* Admin requests                                                       */

typedef struct admin_args {
  fq_str_t account, access_token, refresh_token, client_id, region, base_url;
} admin_args_t;

enum {
  A_ACCOUNT = 1u << 0,
  A_ACCESS = 1u << 1,
  A_REFRESH = 1u << 2,
  A_CLIENT = 1u << 3,
  A_REGION = 1u << 4,
  A_BASE = 1u << 5,
};

static const struct {
  const char *name;
  unsigned bit;
  size_t off;
} g_admin_keys[] = {
    {"account", A_ACCOUNT, offsetof(admin_args_t, account)},
    {"access_token", A_ACCESS, offsetof(admin_args_t, access_token)},
    {"refresh_token", A_REFRESH, offsetof(admin_args_t, refresh_token)},
    {"client_id", A_CLIENT, offsetof(admin_args_t, client_id)},
    {"region", A_REGION, offsetof(admin_args_t, region)},
    {"base_url", A_BASE, offsetof(admin_args_t, base_url)},
};

static const struct {
  const char *name;
  unsigned allowed, required;
} g_actions[] = {
    {"account_add", A_ACCOUNT | A_ACCESS | A_REFRESH | A_CLIENT | A_REGION | A_BASE,
     A_ACCOUNT | A_ACCESS | A_REFRESH | A_CLIENT},
    {"account_list", 0, 0},
    {"account_get", A_ACCOUNT, A_ACCOUNT},
    {"account_remove", A_ACCOUNT, A_ACCOUNT},
    {"account_retry", A_ACCOUNT, A_ACCOUNT},
};

static bool str_is(const uint8_t *p, size_t n, const char *s) {
  return strlen(s) == n && memcmp(p, s, n) == 0;
}

/* Walk the admin body: every key but the common ones must be one this
 * action takes, a string, valid UTF-8 without NUL, and given once.
 * Returns 0 or FQ_EBADREQ with the message in err. */
static int admin_decode(const fq_request_t *req, unsigned allowed, unsigned required,
                        const char *action, admin_args_t *out, fq_err_t *err) {
  fq__mp_rd_t rd;
  fq__mp_obj_t o;
  int rc;
  unsigned seen = 0;
  char q[64];
  memset(out, 0, sizeof *out);
  fq__mp_rd_init(&rd, req->admin_raw, req->admin_raw_len);
  if ((rc = fq__mp_next(&rd, &o, err))) return rc;
  if (o.kind != FQ__MP_MAP) return fq_errf(err, FQ_EBADREQ, "request body is not a map");
  uint32_t n = o.v.count;
  for (uint32_t i = 0; i < n; i++) {
    fq__mp_obj_t k;
    if ((rc = fq__mp_next(&rd, &k, err))) return rc;
    if (k.kind != FQ__MP_STR) return fq_errf(err, FQ_EBADREQ, "map keys must be strings");
    if (str_is(k.p, k.len, "op") || str_is(k.p, k.len, "v") || str_is(k.p, k.len, "req") ||
        str_is(k.p, k.len, "action")) {
      /* Checked by the wire decoder. */
      if ((rc = fq__mp_skip(&rd, 2, FQ_WIRE_MAX_DEPTH, err))) return rc;
      continue;
    }
    size_t ki = 0;
    for (; ki < sizeof g_admin_keys / sizeof *g_admin_keys; ki++)
      if (str_is(k.p, k.len, g_admin_keys[ki].name)) break;
    if (ki == sizeof g_admin_keys / sizeof *g_admin_keys ||
        !(allowed & g_admin_keys[ki].bit)) {
      fq__mp_quote(k.p, k.len, q, sizeof q);
      return fq_errf(err, FQ_EBADREQ, "unknown key \"%s\" for action %s", q, action);
    }
    const char *name = g_admin_keys[ki].name;
    if (seen & g_admin_keys[ki].bit)
      return fq_errf(err, FQ_EBADREQ, "duplicate key \"%s\"", name);
    seen |= g_admin_keys[ki].bit;
    fq__mp_obj_t v;
    if ((rc = fq__mp_next(&rd, &v, err))) return rc;
    if (v.kind != FQ__MP_STR) {
      /* Step over a container so the message stays about the type. */
      return fq_errf(err, FQ_EBADREQ, "\"%s\": expected string, got %s", name,
                     fq__mp_kind_name(v.kind));
    }
    if (!fq__utf8_valid(v.p, v.len) || memchr(v.p, 0, v.len))
      return fq_errf(err, FQ_EBADREQ, "\"%s\": not valid UTF-8 text", name);
    fq_str_t *dst = (fq_str_t *)((char *)out + g_admin_keys[ki].off);
    dst->p = (const char *)v.p;
    dst->n = v.len;
  }
  if (fq__mp_left(&rd)) return fq_errf(err, FQ_EBADREQ, "trailing bytes after the request map");
  for (size_t ki = 0; ki < sizeof g_admin_keys / sizeof *g_admin_keys; ki++)
    if ((required & g_admin_keys[ki].bit) && !(seen & g_admin_keys[ki].bit))
      return fq_errf(err, FQ_EBADREQ, "\"%s\": required for action %s", g_admin_keys[ki].name,
                     action);
  return 0;
}

/* Copy a decoded string into a C buffer: false when it does not fit. */
static bool copy_str(char *dst, size_t cap, const fq_str_t *s) {
  if (s->n >= cap) return false;
  memcpy(dst, s->p, s->n);
  dst[s->n] = 0;
  return true;
}

static bool valid_account_id(const fq_str_t *s) {
  if (s->n < 1 || s->n > FQ_ACCOUNT_ID_MAX) return false;
  for (size_t i = 0; i < s->n; i++) {
    char c = s->p[i];
    if (!(isalnum((unsigned char)c) || c == '.' || c == '_' || c == '@' || c == ':' || c == '-'))
      return false;
  }
  return true;
}

static bool loopback_host(const char *h) {
  return strcmp(h, "127.0.0.1") == 0 || strcasecmp(h, "localhost") == 0 ||
         strcmp(h, "[::1]") == 0;
}

/* base_url rules: http(s)://host[:port][/path], no userinfo, query,
 * fragment, spaces or trailing slash; https for Tesla hosts and the
 * configured simulator host, http only for loopback (the simulator in
 * tests), and no other host: the shards send bearer tokens there.
 * Returns 0 or FQ_EBADPARAM with the reason. */
int fq_auth_check_base_url(const char *url, const char *extra_host, fq_err_t *err) {
  bool https = strncmp(url, "https://", 8) == 0, http = strncmp(url, "http://", 7) == 0;
  if (!https && !http)
    return fq_errf(err, FQ_EBADPARAM, "\"base_url\": must start with https://");
  const char *h = url + (https ? 8 : 7);
  size_t len = strlen(url);
  if (len > FQ_BASE_URL_MAX)
    return fq_errf(err, FQ_EBADPARAM, "\"base_url\": longer than %d bytes", FQ_BASE_URL_MAX);
  for (const char *p = url; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#' ||
        *p == '@' || *p == '\\')
      return fq_errf(err, FQ_EBADPARAM,
                     "\"base_url\": no spaces, userinfo, query or fragment allowed");
  if (url[len - 1] == '/')
    return fq_errf(err, FQ_EBADPARAM, "\"base_url\": leave out the trailing slash");
  size_t hn;
  if (*h == '[') {
    const char *close = strchr(h, ']');
    if (!close) return fq_errf(err, FQ_EBADPARAM, "\"base_url\": bad IPv6 host");
    hn = (size_t)(close - h) + 1;
  } else {
    hn = strcspn(h, ":/");
  }
  if (hn == 0 || hn > 253) return fq_errf(err, FQ_EBADPARAM, "\"base_url\": no host");
  char host[256], hostport[300];
  snprintf(host, sizeof host, "%.*s", (int)hn, h);
  snprintf(hostport, sizeof hostport, "%.*s", (int)strcspn(h, "/"), h);
  const char *port = h + hn;
  if (*port == ':') {
    size_t pn = strspn(port + 1, "0123456789");
    if (pn < 1 || pn > 5 || atoi(port + 1) < 1 || atoi(port + 1) > 65535 ||
        (port[1 + pn] && port[1 + pn] != '/'))
      return fq_errf(err, FQ_EBADPARAM, "\"base_url\": bad port");
  } else if (*port && *port != '/') {
    return fq_errf(err, FQ_EBADPARAM, "\"base_url\": bad host");
  }
  bool loop = loopback_host(host);
  if (http && !loop)
    return fq_errf(err, FQ_EBADPARAM,
                   "\"base_url\": http:// is only allowed for a local simulator on 127.0.0.1, "
                   "localhost or [::1]; use https://");
  bool extra = extra_host && *extra_host &&
               (strcasecmp(extra_host, host) == 0 || strcasecmp(extra_host, hostport) == 0);
  if (!loop && !extra && !fq_fa_host_allowed(host, NULL))
    return fq_errf(err, FQ_EBADPARAM,
                   "\"base_url\": host %s is not a Tesla Fleet API host (*.tesla.com, "
                   "*.tesla.cn, *.teslamotors.com), the configured simulator host or loopback",
                   host);
  return 0;
}

static int admin_add(fq_auth_t *a, const fq_request_t *req, const admin_args_t *x, enc_t *e,
                     fq_err_t *err) {
  int rc = 0;
  fq_account_t *acc = fq_account_new();
  if (!acc) return fq_errf(err, -ENOMEM, "out of memory");
  if (!valid_account_id(&x->account)) {
    rc = fq_errf(err, FQ_EBADPARAM, "\"account\": must be 1..%d of A-Z a-z 0-9 . _ @ : -",
                 FQ_ACCOUNT_ID_MAX);
    goto out;
  }
  copy_str(acc->id, sizeof acc->id, &x->account);
  if (x->client_id.n == 0 || !copy_str(acc->client_id, sizeof acc->client_id, &x->client_id)) {
    rc = fq_errf(err, FQ_EBADPARAM, "\"client_id\": must be 1..%d bytes", FQ_CLIENT_ID_MAX);
    goto out;
  }
  for (size_t i = 0; i < x->client_id.n; i++)
    if ((unsigned char)x->client_id.p[i] < 0x20 || x->client_id.p[i] == 0x7f) {
      rc = fq_errf(err, FQ_EBADPARAM, "\"client_id\": control characters are not allowed");
      goto out;
    }
  const struct {
    const fq_str_t *s;
    char *dst;
    const char *name;
  } toks[2] = {{&x->access_token, acc->access_token, "access_token"},
               {&x->refresh_token, acc->refresh_token, "refresh_token"}};
  for (int t = 0; t < 2; t++) {
    if (toks[t].s->n == 0 || toks[t].s->n > FQ_TOKEN_MAX) {
      rc = fq_errf(err, FQ_EBADPARAM, "\"%s\": must be 1..%d bytes", toks[t].name, FQ_TOKEN_MAX);
      goto out;
    }
    for (size_t i = 0; i < toks[t].s->n; i++)
      if ((unsigned char)toks[t].s->p[i] <= 0x20 || (unsigned char)toks[t].s->p[i] >= 0x7f) {
        rc = fq_errf(err, FQ_EBADPARAM, "\"%s\": must be printable ASCII without spaces",
                     toks[t].name);
        goto out;
      }
    memcpy(toks[t].dst, toks[t].s->p, toks[t].s->n);
    toks[t].dst[toks[t].s->n] = 0;
  }
  if (!!x->region.p == !!x->base_url.p) {
    rc = fq_errf(err, FQ_EBADPARAM, "give exactly one of \"region\" (na, eu, cn) and \"base_url\"");
    goto out;
  }
  if (x->region.p) {
    if (!(str_is((const uint8_t *)x->region.p, x->region.n, "na") ||
          str_is((const uint8_t *)x->region.p, x->region.n, "eu") ||
          str_is((const uint8_t *)x->region.p, x->region.n, "cn"))) {
      rc = fq_errf(err, FQ_EBADPARAM, "\"region\": must be na, eu or cn");
      goto out;
    }
    copy_str(acc->region, sizeof acc->region, &x->region);
  } else {
    if (!copy_str(acc->base_url, sizeof acc->base_url, &x->base_url)) {
      rc = fq_errf(err, FQ_EBADPARAM, "\"base_url\": longer than %d bytes", FQ_BASE_URL_MAX);
      goto out;
    }
    if ((rc = fq_auth_check_base_url(acc->base_url, a->o.extra_host, err))) goto out;
  }
  /* A token that is not a JWT leaves scopes and expiry unknown: commands
   * then learn about scopes from Fleet API, and a 401 drives the refresh. */
  if ((rc = fq_accounts_put(a->o.accounts, acc, err))) {
    if (rc != FQ_EBADPARAM) fq_error(MOD, "account %s: cannot store it: %s", acc->id, err->msg);
    goto out;
  }
  /* Read it back: that is what is stored (scopes and expiry from the JWT,
   * the store's time stamp). */
  char id[FQ_ACCOUNT_ID_MAX + 1];
  memcpy(id, acc->id, sizeof id); /* the read below overwrites acc, id included */
  if ((rc = fq_accounts_get(a->o.accounts, id, acc, err))) goto out;
  ref_reset(a, acc->id);
  failure_clear(a, &a->fail, acc->id);
  /* New credentials or a new region: Fleet API may answer differently. */
  failure_clear(a, &a->refused, acc->id);
  fq_auth_bump_generation(a);
  fq_info(MOD, "account %s added (client %s, %s %s)", acc->id, acc->client_id,
          acc->region[0] ? "region" : "base URL", acc->region[0] ? acc->region : acc->base_url);
  fq_account_info_t info;
  info_of(acc, &info);
  p_ok_head(e, 1, req);
  p_str(e, "account");
  p_account(a, e, &info);
  /* A token already about to expire is refreshed right away rather than
   * at the next scan. */
  if (fq_oauth_needs_refresh(fq_now_ms() / 1000, acc->access_exp)) ref_request(a, acc->id, false);
out:
  fq_account_free(&acc);
  return rc;
}

static int admin_list(fq_auth_t *a, const fq_request_t *req, enc_t *e, fq_err_t *err) {
  fq_account_info_t *list = NULL;
  size_t n = 0;
  int rc = fq_accounts_list(a->o.accounts, &list, &n, err);
  if (rc) return rc;
  p_ok_head(e, 1, req);
  p_str(e, "accounts");
  msgpack_pack_array(&e->pk, (uint32_t)n);
  for (size_t i = 0; i < n; i++) p_account(a, e, &list[i]);
  free(list);
  return 0;
}

static int admin_get(fq_auth_t *a, const fq_request_t *req, const admin_args_t *x, enc_t *e,
                     fq_err_t *err) {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  if (!valid_account_id(&x->account) || !copy_str(id, sizeof id, &x->account))
    return fq_errf(err, FQ_EBADPARAM, "\"account\": must be 1..%d of A-Z a-z 0-9 . _ @ : -",
                   FQ_ACCOUNT_ID_MAX);
  fq_account_t *acc = fq_account_new();
  if (!acc) return fq_errf(err, -ENOMEM, "out of memory");
  int rc = fq_accounts_get(a->o.accounts, id, acc, err);
  if (rc == FQ_ENOTFOUND) {
    rc = fq_errf(err, FQ_ENOTFOUND, "no account \"%s\"", id);
  } else if (rc == FQ_EVERIFY) {
    rc = fq_errf(err, FQ_EINTERNAL,
                 "account \"%s\" is stored but does not decrypt (token.key replaced or the "
                 "record damaged): add it again",
                 id);
  } else if (rc == 0) {
    fq_account_info_t info;
    info_of(acc, &info);
    p_ok_head(e, 1, req);
    p_str(e, "account");
    p_account(a, e, &info);
  }
  fq_account_free(&acc);
  return rc;
}

static int admin_remove(fq_auth_t *a, const fq_request_t *req, const admin_args_t *x, enc_t *e,
                        fq_err_t *err) {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  if (!valid_account_id(&x->account) || !copy_str(id, sizeof id, &x->account))
    return fq_errf(err, FQ_EBADPARAM, "\"account\": must be 1..%d of A-Z a-z 0-9 . _ @ : -",
                   FQ_ACCOUNT_ID_MAX);
  int rc = fq_accounts_remove(a->o.accounts, id, err);
  if (rc == FQ_ENOTFOUND) return fq_errf(err, FQ_ENOTFOUND, "no account \"%s\"", id);
  if (rc) return rc;
  ref_reset(a, id);
  failure_clear(a, &a->fail, id);
  failure_clear(a, &a->refused, id);
  fq_auth_bump_generation(a);
  fq_info(MOD, "account %s removed", id);
  p_ok_head(e, 1, req);
  p_str(e, "account");
  p_str(e, id);
  return 0;
}

/* Forget an account's refusal (412, 451, mobile_access_disabled) once the
 * user fixed its cause: its next command is sent again.  An account with
 * no refusal is fine (nothing to do); an unknown one is not_found. */
static int admin_retry(fq_auth_t *a, const fq_request_t *req, const admin_args_t *x, enc_t *e,
                       fq_err_t *err) {
  char id[FQ_ACCOUNT_ID_MAX + 1];
  if (!valid_account_id(&x->account) || !copy_str(id, sizeof id, &x->account))
    return fq_errf(err, FQ_EBADPARAM, "\"account\": must be 1..%d of A-Z a-z 0-9 . _ @ : -",
                   FQ_ACCOUNT_ID_MAX);
  bool cleared = failure_clear(a, &a->refused, id);
  if (!cleared) {
    fq_account_t *acc = fq_account_new();
    if (!acc) return fq_errf(err, -ENOMEM, "out of memory");
    int rc = fq_accounts_get(a->o.accounts, id, acc, err);
    fq_account_free(&acc);
    if (rc == FQ_ENOTFOUND) return fq_errf(err, FQ_ENOTFOUND, "no account \"%s\"", id);
  }
  if (cleared) fq_info(MOD, "account %s: refusal cleared, its commands are sent again", id);
  p_ok_head(e, 2, req);
  p_str(e, "account");
  p_str(e, id);
  p_str(e, "cleared");
  if (cleared) msgpack_pack_true(&e->pk);
  else msgpack_pack_false(&e->pk);
  return 0;
}

/* Answer one admin body into a->out. */
static void admin_handle(fq_auth_t *a, const uint8_t *body, size_t len) {
  fq_request_t req;
  fq_err_t err = {0};
  enc_t e;
  memset(&req, 0, sizeof req);
  fq_buf_reset(&a->out);
  enc_init(&e, &a->out);
  int rc = fq_wire_decode_request(body, len, &req, &err);
  if (!rc && req.op != FQ_OP_ADMIN) rc = fq_errf(&err, FQ_EBADREQ, "\"op\": expected admin");
  size_t ai = 0;
  if (!rc) {
    for (; ai < sizeof g_actions / sizeof *g_actions; ai++)
      if (str_is((const uint8_t *)req.admin_action.p, req.admin_action.n, g_actions[ai].name))
        break;
    if (ai == sizeof g_actions / sizeof *g_actions) {
      char q[64];
      fq__mp_quote((const uint8_t *)req.admin_action.p, req.admin_action.n, q, sizeof q);
      rc = fq_errf(&err, FQ_EBADREQ,
                   "\"action\": unknown action \"%s\" (account_add, account_list, "
                   "account_get, account_remove, account_retry)",
                   q);
    }
  }
  admin_args_t x;
  if (!rc)
    rc = admin_decode(&req, g_actions[ai].allowed, g_actions[ai].required, g_actions[ai].name, &x,
                      &err);
  if (!rc) {
    switch (ai) {
    case 0: rc = admin_add(a, &req, &x, &e, &err); break;
    case 1: rc = admin_list(a, &req, &e, &err); break;
    case 2: rc = admin_get(a, &req, &x, &e, &err); break;
    case 3: rc = admin_remove(a, &req, &x, &e, &err); break;
    default: rc = admin_retry(a, &req, &x, &e, &err); break;
    }
  }
  if (!rc && e.rc) rc = fq_errf(&err, FQ_EINTERNAL, "reply too large");
  if (rc) {
    fq_buf_reset(&a->out);
    /* Storage and crypto details stay in the log; the client gets the
     * wire code and a message that never holds a token. */
    const char *msg = err.msg[0] ? err.msg : fq_strerror(rc);
    fq_wire_reply_error(&a->out, rc, msg, req.req_raw, req.req_raw_len);
  }
}

/* Drain the ingress PAIR.  Returns true when it said 'T'. */
static bool handle_pair(fq_auth_t *a) {
  bool stop = false;
  for (int budget = 0; budget < 256; budget++) {
    zmq_msg_t f[MAX_FRAMES];
    bool overflow;
    int n = fq_zmsg_recv(a->pair, f, MAX_FRAMES, ZMQ_DONTWAIT, &overflow);
    if (n <= 0) break;
    char kind = zmq_msg_size(&f[0]) == 1 ? *(const char *)zmq_msg_data(&f[0]) : '?';
    if (kind == 'T') {
      stop = true;
    } else if (kind == 'Q' && n >= 3 && overflow) {
      /* More frames than the limit (the ingress refuses such requests
       * first): answered, and none of the frames kept is taken as the
       * body, which may hold tokens: every frame kept is wiped. */
      char msg[96];
      snprintf(msg, sizeof msg, "too many frames: at most %d envelope frames before the body",
               FQ_WIRE_MAX_ENVELOPE);
      fq_buf_reset(&a->out);
      fq_wire_reply_error(&a->out, FQ_EBADREQ, msg, NULL, 0);
      char r = 'R';
      zmq_send(a->pair, &r, 1, ZMQ_SNDMORE);
      for (int i = 1; i < n && i <= 1 + FQ_WIRE_MAX_ENVELOPE; i++) {
        zmq_send(a->pair, zmq_msg_data(&f[i]), zmq_msg_size(&f[i]), ZMQ_SNDMORE);
      }
      zmq_send(a->pair, a->out.data, a->out.len, 0);
      for (int i = 1; i < n; i++) OPENSSL_cleanse(zmq_msg_data(&f[i]), zmq_msg_size(&f[i]));
    } else if (kind == 'Q' && n >= 3) {
      /* The body frame may hold tokens: wipe it once answered. */
      uint8_t *body = zmq_msg_data(&f[n - 1]);
      size_t blen = zmq_msg_size(&f[n - 1]);
      admin_handle(a, body, blen);
      OPENSSL_cleanse(body, blen);
      char r = 'R';
      zmq_send(a->pair, &r, 1, ZMQ_SNDMORE);
      for (int i = 1; i < n - 1; i++) {
        zmq_msg_send(&f[i], a->pair, ZMQ_SNDMORE);
      }
      zmq_send(a->pair, a->out.data, a->out.len, 0);
    } else {
      fq_warn(MOD, "dropped a malformed message from the ingress (kind '%c', %d frames)",
              kind >= 0x20 && kind < 0x7f ? kind : '?', n);
    }
    fq_zmsg_close(f, n);
  }
  return stop;
}

/* Drain refresh requests from shards: "R<account id>". */
static void handle_pull(fq_auth_t *a) {
  for (int budget = 0; budget < 1024; budget++) {
    char buf[FQ_ACCOUNT_ID_MAX + 2];
    int n = zmq_recv(a->pull, buf, sizeof buf, ZMQ_DONTWAIT);
    if (n < 0) break;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(a->pull, ZMQ_RCVMORE, &more, &ml);
    while (more) { /* not ours: a single frame is expected */
      char junk[1];
      if (zmq_recv(a->pull, junk, sizeof junk, 0) < 0) break;
      zmq_getsockopt(a->pull, ZMQ_RCVMORE, &more, &ml);
      n = -1;
    }
    if (n < 2 || n > FQ_ACCOUNT_ID_MAX + 1 || buf[0] != 'R') continue;
    fq_str_t id = {buf + 1, (size_t)n - 1};
    if (!valid_account_id(&id)) continue;
    buf[n] = 0;
    ref_request(a, buf + 1, true);
  }
}

static void *auth_main(void *arg) {
  fq_auth_t *a = arg;
  zmq_pollitem_t *items = NULL;
  int cap = 0;
  int64_t stop_deadline = 0;
  a->next_scan_ms = 0; /* scan at once: tokens may have expired while down */
  for (;;) {
    int nfd = fq_http_nfds(a->http);
    if (2 + nfd > cap) {
      int nc = 2 + nfd + 16;
      zmq_pollitem_t *ni = realloc(items, (size_t)nc * sizeof *ni);
      if (!ni) {
        fq_error(MOD, "out of memory");
        break;
      }
      items = ni;
      cap = nc;
    }
    items[0] = (zmq_pollitem_t){a->pair, 0, ZMQ_POLLIN, 0};
    items[1] = (zmq_pollitem_t){a->pull, 0, ZMQ_POLLIN, 0};
    nfd = fq_http_fds(a->http, items + 2, cap - 2);
    if (nfd > cap - 2) nfd = cap - 2;
    long t = fq_http_timeout_ms(a->http), tt = timer_wait_ms(a);
    if (t < 0 || (tt >= 0 && tt < t)) t = tt;
    if (a->stopping && (t < 0 || t > 100)) t = 100;
    int rc = zmq_poll(items, 2 + nfd, t);
    if (rc < 0 && errno == ETERM) break;
    fq_err_t err = {0};
    if (fq_http_perform(a->http, items + 2, rc > 0 ? nfd : 0, &err) < 0)
      fq_error(MOD, "HTTP client: %s", err.msg);
    if (rc > 0 && (items[1].revents & ZMQ_POLLIN)) handle_pull(a);
    if (rc > 0 && (items[0].revents & ZMQ_POLLIN) && handle_pair(a) && !a->stopping) {
      /* Let running refreshes finish: their answers may hold a rotated
       * refresh token that exists nowhere else. */
      a->stopping = true;
      stop_deadline = fq_now_ms() + REFRESH_TIMEOUT_MS + 1000;
      fq_info(MOD, "stopping (%u token request(s) to finish)", fq_http_inflight(a->http));
    }
    if (a->stopping) {
      if (fq_http_inflight(a->http) == 0 || fq_now_ms() > stop_deadline) break;
      continue;
    }
    run_timers(a);
  }
  free(items);
  char d = 'D';
  zmq_send(a->pair, &d, 1, 0);
  return NULL;
}

int fq_auth_start(fq_auth_t *a) {
  if (a->started) return -EALREADY;
  int rc = pthread_create(&a->th, NULL, auth_main, a);
  if (rc) return -rc;
  a->started = true;
  return 0;
}
