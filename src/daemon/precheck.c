/*
 * The fleet_status pre-check.  See precheck.h.
 */
#include "precheck.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fleetq/buf.h"
#include "fleetstatus.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#define VIN_LEN 17
#define ACCT_MAX 65
#define DEVICE_MAX 32

enum { E_NONE = 0, E_ASKING, E_KNOWN };

typedef struct entry {
  char vin[VIN_LEN + 1];
  int state;
  int paired, signing;       /* E_KNOWN: as fq_fs_vin_t (-1: not named / not said) */
  int64_t at;                /* E_KNOWN: when the answer came */
  char device[DEVICE_MAX];   /* E_ASKING: kicked when the answer comes */
} entry_t;

/* One account's requests: the VINs waiting for the next one, and the
 * VINs of the one out (at most one out at a time). */
struct fq_precheck_batch {
  fq_precheck_t *p;
  char account[ACCT_MAX];
  char (*pending)[VIN_LEN + 1];
  size_t npending, apending;
  char out[FQ_FS_BATCH_MAX][VIN_LEN + 1];
  size_t nout;
  bool is_out;
  int64_t backoff_until;
  unsigned fails;            /* in a row */
  fq_buf_t body;
};

struct fq_precheck {
  int64_t ttl_ms;
  fq_precheck_kick_fn kick;
  void *owner;
  fq_hmap_t vins;            /* entry_t * by VIN */
  fq_hmap_t accts;           /* fq_precheck_batch_t * by account id */
  bool ready;                /* some account may have VINs to ask (a hint for next()) */
  fq_precheck_stats_t st;
};

static uint64_t hs(const char *s) { return fq_hash64(s, strlen(s)); }

static bool entry_eq(const void *item, const void *vin) {
  return strcmp((*(entry_t *const *)item)->vin, vin) == 0;
}

static bool acct_eq(const void *item, const void *id) {
  return strcmp((*(fq_precheck_batch_t *const *)item)->account, id) == 0;
}

fq_precheck_t *fq_precheck_new(int64_t ttl_ms, fq_precheck_kick_fn kick, void *owner) {
  fq_precheck_t *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->ttl_ms = ttl_ms > 0 ? ttl_ms : 1;
  p->kick = kick;
  p->owner = owner;
  fq_hmap_init(&p->vins, sizeof(entry_t *), 50);
  fq_hmap_init(&p->accts, sizeof(fq_precheck_batch_t *), 50);
  return p;
}

void fq_precheck_destroy(fq_precheck_t **pp) {
  if (!pp || !*pp) return;
  fq_precheck_t *p = *pp;
  size_t pos = 0;
  for (entry_t **e; (e = fq_hmap_each(&p->vins, &pos));) free(*e);
  fq_hmap_free(&p->vins);
  pos = 0;
  for (fq_precheck_batch_t **b; (b = fq_hmap_each(&p->accts, &pos));) {
    free((*b)->pending);
    fq_buf_free(&(*b)->body);
    free(*b);
  }
  fq_hmap_free(&p->accts);
  free(p);
  *pp = NULL;
}

static entry_t *entry_get(fq_precheck_t *p, const char *vin, bool create) {
  uint64_t h = hs(vin);
  entry_t **slot = fq_hmap_find(&p->vins, h, entry_eq, vin);
  if (slot || !create) return slot ? *slot : NULL;
  entry_t *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  if (!(slot = fq_hmap_add(&p->vins, h))) {
    free(e);
    return NULL;
  }
  *slot = e;
  snprintf(e->vin, sizeof e->vin, "%s", vin);
  e->paired = e->signing = -1;
  return e;
}

static fq_precheck_batch_t *acct_get(fq_precheck_t *p, const char *id) {
  uint64_t h = hs(id);
  fq_precheck_batch_t **slot = fq_hmap_find(&p->accts, h, acct_eq, id);
  if (slot) return *slot;
  fq_precheck_batch_t *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  if (!(slot = fq_hmap_add(&p->accts, h))) {
    free(b);
    return NULL;
  }
  *slot = b;
  b->p = p;
  snprintf(b->account, sizeof b->account, "%s", id);
  fq_buf_init(&b->body, 64 * 1024);
  return b;
}

/* Only what fleetqd accepts as a VIN goes into a request body (written by
 * hand, so nothing that needs escaping may reach it). */
static bool vin_ok(const char *vin) {
  size_t n = strlen(vin);
  if (n != VIN_LEN) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)vin[i])) return false;
  return true;
}

int fq_precheck_look(fq_precheck_t *p, const char *account, const char *vin, const char *device,
                     int64_t now_ms, int *signing) {
  *signing = -1;
  if (!vin_ok(vin) || strlen(account) >= ACCT_MAX || strlen(device) >= DEVICE_MAX)
    return FQ_PC_GO;
  entry_t *e = entry_get(p, vin, true);
  if (!e) return FQ_PC_GO; /* out of memory: as without the pre-check */
  if (e->state == E_KNOWN) {
    int64_t keep = p->ttl_ms;
    bool unpaired = e->paired == 0 && e->signing != 0;
    if (unpaired && keep > FQ_PRECHECK_UNPAIRED_KEEP_MS) keep = FQ_PRECHECK_UNPAIRED_KEEP_MS;
    if (now_ms - e->at < keep && now_ms >= e->at) {
      *signing = e->signing;
      return unpaired ? FQ_PC_UNPAIRED : FQ_PC_GO;
    }
    e->state = E_NONE; /* too old: ask again */
  }
  if (e->state == E_ASKING) {
    /* Asked for another device name (cannot happen: one device per VIN)
     * or for this one: it is kicked with the answer. */
    snprintf(e->device, sizeof e->device, "%s", device);
    return FQ_PC_WAIT;
  }
  fq_precheck_batch_t *b = acct_get(p, account);
  if (!b || now_ms < b->backoff_until) return FQ_PC_GO;
  if (b->npending == b->apending) {
    size_t n = b->apending ? b->apending * 2 : 16;
    void *x = realloc(b->pending, n * sizeof *b->pending);
    if (!x) return FQ_PC_GO;
    b->pending = x;
    b->apending = n;
  }
  snprintf(b->pending[b->npending++], VIN_LEN + 1, "%s", vin);
  p->ready = true;
  e->state = E_ASKING;
  snprintf(e->device, sizeof e->device, "%s", device);
  return FQ_PC_WAIT;
}

void fq_precheck_forget(fq_precheck_t *p, const char *vin) {
  entry_t *e = entry_get(p, vin, false);
  if (e && e->state == E_KNOWN) e->state = E_NONE;
}

void fq_precheck_note_signing(fq_precheck_t *p, const char *vin, int signing) {
  entry_t *e = entry_get(p, vin, false);
  if (e && e->state == E_KNOWN) e->signing = signing;
}

fq_precheck_batch_t *fq_precheck_next(fq_precheck_t *p, int64_t now_ms, const char **account,
                                      const void **body, size_t *len) {
  if (!p->ready) return NULL;
  size_t pos = 0;
  for (fq_precheck_batch_t **slot; (slot = fq_hmap_each(&p->accts, &pos));) {
    fq_precheck_batch_t *b = *slot;
    if (b->is_out || !b->npending) continue;
    (void)now_ms; /* VINs are only queued outside a back-off */
    size_t n = b->npending < FQ_FS_BATCH_MAX ? b->npending : FQ_FS_BATCH_MAX;
    fq_buf_reset(&b->body);
    int rc = fq_buf_append_str(&b->body, "{\"vins\":[");
    for (size_t i = 0; i < n && !rc; i++) {
      memcpy(b->out[i], b->pending[i], VIN_LEN + 1);
      rc = fq_buf_append_str(&b->body, i ? ",\"" : "\"");
      if (!rc) rc = fq_buf_append_str(&b->body, b->out[i]);
      if (!rc) rc = fq_buf_append_str(&b->body, "\"");
    }
    if (!rc) rc = fq_buf_append_str(&b->body, "]}");
    b->nout = n;
    memmove(b->pending, b->pending + n, (b->npending - n) * sizeof *b->pending);
    b->npending -= n;
    b->is_out = true;
    p->st.requests++;
    p->st.vins_asked += n;
    if (rc) { /* out of memory for the body: as a failed request */
      fq_precheck_not_sent(p, b, now_ms, "out of memory for the request body");
      return fq_precheck_next(p, now_ms, account, body, len);
    }
    *account = b->account;
    *body = b->body.data;
    *len = b->body.len;
    return b;
  }
  p->ready = false; /* nothing left to send */
  return NULL;
}

static void release(fq_precheck_t *p, const char *vin) {
  entry_t *e = entry_get(p, vin, false);
  if (!e || e->state != E_ASKING) return;
  e->state = E_NONE;
  if (e->device[0] && p->kick) p->kick(p->owner, e->device);
}

/* The request failed: every VIN it carried or that waits for the
 * account's next one goes out as before; the account backs off.  The
 * back-off counts from the end of the account's park (a 429, RateLimit
 * pacing), when there is one: the released commands wait for the park,
 * and a back-off that ended with it would only send them to ask again,
 * 429 after 429, never to the car. */
static void failed(fq_precheck_t *p, fq_precheck_batch_t *b, int64_t now_ms, int64_t wait,
                   int64_t parked_until_ms, const char *why) {
  p->st.failures++;
  b->fails++;
  if (wait <= 0) {
    unsigned sh = b->fails > 8 ? 8 : b->fails - 1;
    wait = (int64_t)FQ_PRECHECK_BACKOFF_MS << sh;
    if (wait > FQ_PRECHECK_BACKOFF_MAX_MS) wait = FQ_PRECHECK_BACKOFF_MAX_MS;
  }
  if (wait > p->ttl_ms) wait = p->ttl_ms;
  int64_t from = parked_until_ms > now_ms ? parked_until_ms : now_ms;
  b->backoff_until = from + wait;
  wait = b->backoff_until - now_ms;
  fq_warn("dispatch",
          "account %s: fleet_status pre-check failed (%s): %zu command(s) go out without it, "
          "and the account's commands do for the next %" PRId64 " ms",
          b->account, why, b->nout + b->npending, wait);
  for (size_t i = 0; i < b->nout; i++) release(p, b->out[i]);
  for (size_t i = 0; i < b->npending; i++) release(p, b->pending[i]);
  b->nout = b->npending = 0;
  b->is_out = false;
}

void fq_precheck_not_sent(fq_precheck_t *p, fq_precheck_batch_t *b, int64_t now_ms,
                          const char *why) {
  /* Counted by fq_precheck_next: it never left. */
  p->st.requests--;
  p->st.vins_asked -= b->nout;
  char w[256];
  snprintf(w, sizeof w, "not sent: %.200s", why);
  failed(p, b, now_ms, 0, 0, w);
}

typedef struct visit_ctx {
  fq_precheck_t *p;
  fq_precheck_batch_t *b;
  int64_t now;
} visit_ctx_t;

static int visit(void *ud, const fq_fs_vin_t *v) {
  visit_ctx_t *c = ud;
  /* Only the VINs this request asked about (case as fleetqd spells them). */
  for (size_t i = 0; i < c->b->nout; i++) {
    if (strcasecmp(c->b->out[i], v->vin) != 0) continue;
    entry_t *e = entry_get(c->p, c->b->out[i], false);
    if (!e || e->state != E_ASKING) continue;
    e->paired = v->paired;
    e->signing = v->protocol_required;
    e->at = c->now;
    e->state = E_KNOWN;
    if (e->device[0] && c->p->kick) c->p->kick(c->p->owner, e->device);
  }
  return 0;
}

void fq_precheck_answer(fq_precheck_t *p, fq_precheck_batch_t *b, const fq_http_resp_t *resp,
                        int64_t now_ms, int64_t parked_until_ms) {
  char why[256];
  b->is_out = false;
  if (b->npending) p->ready = true;
  if (resp->outcome != FQ_HTTP_COMPLETE) {
    snprintf(why, sizeof why, "no answer: %.200s", resp->err.msg);
    failed(p, b, now_ms, 0, parked_until_ms, why);
    return;
  }
  if (resp->status != 200) {
    snprintf(why, sizeof why, "HTTP %ld", resp->status);
    /* 404: an API without fleet_status; asking again before the TTL
     * would get the same answer. */
    failed(p, b, now_ms, resp->status == 404 ? p->ttl_ms : 0, parked_until_ms, why);
    return;
  }
  visit_ctx_t c = {p, b, now_ms};
  fq_err_t e;
  if (fq_fs_walk(resp->body, resp->body_len, visit, &c, &e) != 0) {
    snprintf(why, sizeof why, "HTTP 200 but %.200s", e.msg);
    failed(p, b, now_ms, 0, parked_until_ms, why);
    return;
  }
  /* A VIN the answer does not name: Fleet API does not list it for the
   * account.  Known as such (dispatched as before) until the TTL. */
  for (size_t i = 0; i < b->nout; i++) {
    entry_t *x = entry_get(p, b->out[i], false);
    if (!x || x->state != E_ASKING) continue;
    x->paired = x->signing = -1;
    x->at = now_ms;
    x->state = E_KNOWN;
    if (x->device[0] && p->kick) p->kick(p->owner, x->device);
  }
  b->nout = 0;
  b->fails = 0;
  b->backoff_until = 0;
}

void *fq_precheck_owner(const fq_precheck_batch_t *b) { return b->p->owner; }
fq_precheck_t *fq_precheck_of(const fq_precheck_batch_t *b) { return b->p; }
const char *fq_precheck_account(const fq_precheck_batch_t *b) { return b->account; }

void fq_precheck_stats(const fq_precheck_t *p, fq_precheck_stats_t *st) { *st = p->st; }
void fq_precheck_count_unpaired(fq_precheck_t *p) { p->st.unpaired_failed++; }
