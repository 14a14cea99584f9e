/*
 * The dispatcher of one shard.  See dispatch.h for how it follows the
 * shard's group commit.
 *
 * Per device there is at most one command in flight (`dev->cur`).  What a
 * device is doing is its phase:
 *   IDLE       nothing in flight; a kick looks at the queue head
 *   HANDSHAKE  a session-info request is out (signed commands)
 *   SEND       the command is out (signed, REST or energy)
 *   WAKE       a wake_up is out (the car answered 408 or 503: not awake)
 *   WAKE_POLL  a GET of the vehicle's state is out while waking
 *   WAIT       a timer is set; `resume` says what happens when it fires
 *   HOLD       waiting for something outside: a token refresh; the auth
 *              generation counter wakes it
 * Everything a phase change decides is recorded through env.transition in
 * the open transaction; HTTP requests prepared meanwhile leave only after
 * the commit (fq_dispatch_launch).
 */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "auth.h"
#include "budget.h"
#include "fleetapi.h"
#include "heap.h"
#include "hmap.h"
#include "fleetq/commands.h"
#include "fleetq/wire.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "precheck.h"
#include "ratelimit.h"
#include "util.h"

enum phase { PH_IDLE = 0, PH_HANDSHAKE, PH_SEND, PH_WAKE, PH_WAKE_POLL, PH_WAIT, PH_HOLD };
enum resume { R_NONE = 0, R_KICK, R_SEND, R_WAKE_POLL, R_LAUNCH, R_TOKEN_TIMEOUT };

#define URL_MAX 512
#define RM_CAP 16384

typedef struct dev {
  fq_dispatch_t *owner;      /* for HTTP callbacks (at most one request per device) */
  struct dev *hold_next;     /* list of HOLD devices */
  char name[FQ_DEVICE_MAX];
  bool vehicle;
  char vin[18];
  uint64_t site;

  uint64_t cur;              /* command in flight, 0 = none */
  int phase;
  int resume;
  int64_t timer_at;
  uint64_t http_id;
  bool kick_pending, in_hold;
  bool legacy, legacy_known;

  /* Per-command bookkeeping, reset when a command starts. */
  int resync_used, refresh_used, region_switches;
  int64_t wake_started;      /* the wake timer: first wake_up of the command */
  bool woke;                 /* the car reported online during this command */
  int64_t token_stamp;       /* account's updated_at when a refresh was asked */
  fq_vcp_request_t vreq;
  int domain;

  /* The prepared request (phase HANDSHAKE/SEND/WAKE/WAKE_POLL). */
  bool launch_pending;
  struct dev *launch_next;
  fq_http_method_t method;
  fq_fa_endpoint_t ep;
  char url[URL_MAX];
  char account[FQ_ACCOUNT_ID_MAX + 1];
  char tenant[FQ_TENANT_MAX + 1]; /* whose command: its answers count in its budget */
  fq_buf_t body;
  int launch_error;          /* set by a failed launch, acted on next step */
  char launch_msg[FQ_ERRMSG_MAX];

  uint64_t snap_gen;         /* the step (transaction) whose snapshot holds this device */

  /* For fleetq_dispatch_send_wait_seconds: when the current command was
   * accepted (unix ms), and whether its first request has left. */
  int64_t cur_created;
  bool first_sent;
} dev_t_;

/* --- a transaction's changes, until it is known committed ---------------------
 *
 * Everything a step decides lands in the shard's transaction, but the
 * dispatcher also changes its own memory: which command a device is on,
 * what is out, timers, the vehicle request a reply must match.  When the
 * transaction is aborted (the map or the disk is full, a storage error)
 * the store is back where it was and the memory must follow, or the two
 * disagree: a command the store still holds as `sent` would look idle
 * and be signed and sent again.
 *
 * So the first time a transaction touches a device, the device's dispatch
 * state is copied (dsnap_t); an abort restores every copy.  And an answer
 * of Fleet API cannot be un-received: each one is kept (kept_t) until the
 * transaction that acted on it is committed.  After an abort the device is
 * back to "request out", and its kept answer is acted on again in the next
 * step: the request left once and its outcome is recorded once, whatever
 * had to be retried in between.  A step may also leave answers for later
 * (a work budget after failures, or while the shard cannot write at all:
 * fq_dispatch_collect), in the order they came. */
typedef struct dsnap {
  dev_t_ *dev;
  uint64_t cur, http_id;
  int phase, resume, domain, launch_error;
  int64_t timer_at, wake_started, token_stamp;
  bool legacy, legacy_known, woke;
  int resync_used, refresh_used, region_switches;
  fq_http_method_t method;
  fq_fa_endpoint_t ep;
  fq_vcp_request_t vreq;
} dsnap_t;

typedef struct kept {
  dev_t_ *dev;
  bool pending;              /* still to be acted on (in the next step) */
  int64_t at_ns;             /* when it was read (fq_mono_ns) */
  fq_http_resp_t r;          /* r.body points into body when delivered */
  fq_buf_t body;
} kept_t;

/* Counters reserved by one session save: the store holds the counter
 * plus this, so a session is written once per SESS_RESERVE commands, not
 * once per command (see fq_vcp_session_save_ahead). */
#define SESS_RESERVE 256

typedef struct sess {
  char vin[18];
  int domain;
  fq_vcp_session_t *s;
  /* What the store holds for it (valid when saved). */
  bool saved, saved_stale;
  uint32_t saved_ctr;
  int64_t saved_off;
  uint8_t saved_epoch[FQ_VCP_EPOCH_LEN];
} sess_t;

typedef struct acct {
  uint64_t gen;
  bool missing;
  fq_account_t a;
} acct_t;

struct fq_dispatch {
  fq_dispatch_opts_t o;
  fq_dispatch_env_t env;
  fq_dispatch_transport_t tr; /* opts.transport, or the wrappers of http below */
  fq_http_t *http;            /* NULL when opts.transport was given */
  fq_rl_t *rl_dev;
  fq_shared_rl_t *arl;       /* opts.account_rl, or own_arl */
  fq_shared_rl_t own_arl;
  bool own_arl_mu;           /* own_arl.mu initialised */
  void *auth_push;
  fq_precheck_t *pc;         /* fleet_status pre-check, or NULL (fleet_status_ttl_ms 0) */

  fq_hmap_t devs;            /* dev_t_ * by name: every kick looks its device up */
  fq_hmap_t sess;            /* sess_t * by (vin, domain): every send and reply */
  fq_hmap_t accts;           /* acct_t * by account id */
  uint64_t seen_gen;

  fq_heap_t timers;          /* (timer_at, dev); stale when dev->timer_at moved */
  dev_t_ **kicks;
  size_t nkicks, akicks;
  dev_t_ *launch_head;
  dev_t_ *hold_head;

  uint8_t rm[RM_CAP];
  fq_buf_t scratch;
  int64_t now;
  fq_err_t *err;             /* the current step's error slot */
  int step_rc;               /* first storage error in the current step */
  uint64_t puts;             /* records written through move() */
  bool draining;             /* stopping: no request leaves for a new attempt */
  unsigned drain_left;       /* commands still waiting for an answer (last drain) */
  fq_dispatch_stats_t st;

  /* The open transaction's changes (see dsnap_t above). */
  bool in_txn;               /* a step or drain ran since the last launch / rollback */
  bool rolled_back;          /* the last transaction was aborted */
  bool collecting;           /* inside fq_dispatch_collect(): keep answers only */
  uint64_t gen;              /* transaction generation (dev->snap_gen) */
  dsnap_t *snaps;
  size_t nsnaps, asnaps;
  kept_t *kept;
  size_t nkept, akept;
  uint64_t gen_at_begin;     /* seen_gen when the transaction began */
  fq_dispatch_stats_t st_at_begin;
  size_t budget;             /* most pieces of work in one transaction */
  size_t work;               /* pieces of work done in this one */

  /* fleetq_dispatch_settle_wait_seconds: the arrival (fq_mono_ns) of the
   * answer acted on now (0: none), and of each answer that ended a
   * command in the open transaction, observed once it commits. */
  int64_t answer_ns;
  int64_t *settled;
  size_t nsettled, asettled;
};

/* --- small tables ------------------------------------------------------------ */

static uint64_t hash_str(const char *s) { return fq_hash64(s, strlen(s)); }

static bool dev_eq(const void *item, const void *name) {
  return strcmp((*(dev_t_ *const *)item)->name, name) == 0;
}

static dev_t_ *dev_get(fq_dispatch_t *d, const char *name) {
  uint64_t h = hash_str(name);
  dev_t_ **slot = fq_hmap_find(&d->devs, h, dev_eq, name);
  if (slot) return *slot;
  dev_t_ *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  slot = fq_hmap_add(&d->devs, h);
  if (!slot) {
    free(x);
    return NULL;
  }
  *slot = x;
  snprintf(x->name, sizeof x->name, "%s", name);
  if (name[0] == 'v') {
    x->vehicle = true;
    snprintf(x->vin, sizeof x->vin, "%s", name + 2);
  } else {
    x->site = strtoull(name + 2, NULL, 10);
  }
  fq_buf_init(&x->body, 64 * 1024);
  x->owner = d;
  return x;
}

static void heap_push(fq_dispatch_t *d, int64_t at, dev_t_ *dev) {
  /* Out of memory: the device is looked at again by its next kick. */
  (void)fq_heap_push(&d->timers, (fq_heap_ent_t){.key = at, .v.p = dev});
}

/* The earliest timer still armed (stale entries are dropped), or NULL. */
static const fq_heap_ent_t *live_timer(fq_dispatch_t *d) {
  const fq_heap_ent_t *t;
  while ((t = fq_heap_top(&d->timers)) && ((dev_t_ *)t->v.p)->timer_at != t->key)
    fq_heap_pop(&d->timers);
  return t;
}

static void set_timer(fq_dispatch_t *d, dev_t_ *dev, int64_t at, int resume) {
  dev->phase = PH_WAIT;
  dev->resume = resume;
  dev->timer_at = at;
  heap_push(d, at, dev);
}

/* set_timer for a device whose queue head waits its turn (R_KICK), when
 * the device already had a heap entry at `prev` (0: none): the entry is
 * reused when the time is the same, so that looking at a waiting head
 * again on every kick does not grow the heap. */
static void wait_turn(fq_dispatch_t *d, dev_t_ *dev, int64_t at, int64_t prev) {
  if (at != prev) heap_push(d, at, dev);
  dev->phase = PH_WAIT;
  dev->resume = R_KICK;
  dev->timer_at = at;
}

static void hold(fq_dispatch_t *d, dev_t_ *dev) {
  dev->phase = PH_HOLD;
  if (!dev->in_hold) {
    dev->in_hold = true;
    dev->hold_next = d->hold_head;
    d->hold_head = dev;
  }
}

bool fq_dispatch_refers(const fq_dispatch_t *d, const char *device, uint64_t num) {
  dev_t_ *const *slot = fq_hmap_find(&d->devs, hash_str(device), dev_eq, device);
  return slot && (*slot)->cur == num;
}

void fq_dispatch_kick(fq_dispatch_t *d, const char *device) {
  dev_t_ *dev = dev_get(d, device);
  if (!dev || dev->kick_pending) return;
  if (d->nkicks == d->akicks) {
    size_t n = d->akicks ? d->akicks * 2 : 256;
    dev_t_ **k = realloc(d->kicks, n * sizeof *k);
    if (!k) return;
    d->kicks = k;
    d->akicks = n;
  }
  dev->kick_pending = true;
  d->kicks[d->nkicks++] = dev;
}

/* --- transactions: snapshots, kept answers, work budget ----------------------- */

/* Most pieces of work after a failed transaction: each failure halves the
 * next one's work (so that a step whose changes do not fit in the room
 * left can still go on in smaller pieces), each commit doubles it, up to
 * no limit again past this. */
#define BUDGET_FREE 4096

/* Copy dev's dispatch state, once per transaction, before it changes.
 * False (and the step fails) only when no memory is left for the copy:
 * the caller then leaves the device alone. */
static bool touch(fq_dispatch_t *d, dev_t_ *dev) {
  if (dev->snap_gen == d->gen) return true;
  if (d->nsnaps == d->asnaps) {
    size_t n = d->asnaps ? d->asnaps * 2 : 64;
    dsnap_t *p = realloc(d->snaps, n * sizeof *p);
    if (!p) {
      if (!d->step_rc) d->step_rc = fq_errf(d->err, -ENOMEM, "out of memory for a dispatch snapshot");
      return false;
    }
    d->snaps = p;
    d->asnaps = n;
  }
  dsnap_t *x = &d->snaps[d->nsnaps++];
  x->dev = dev;
  x->cur = dev->cur;
  x->http_id = dev->http_id;
  x->phase = dev->phase;
  x->resume = dev->resume;
  x->domain = dev->domain;
  x->launch_error = dev->launch_error;
  x->timer_at = dev->timer_at;
  x->wake_started = dev->wake_started;
  x->token_stamp = dev->token_stamp;
  x->legacy = dev->legacy;
  x->legacy_known = dev->legacy_known;
  x->woke = dev->woke;
  x->resync_used = dev->resync_used;
  x->refresh_used = dev->refresh_used;
  x->region_switches = dev->region_switches;
  x->method = dev->method;
  x->ep = dev->ep;
  x->vreq = dev->vreq;
  dev->snap_gen = d->gen;
  return true;
}

static void restore(fq_dispatch_t *d, const dsnap_t *x) {
  dev_t_ *dev = x->dev;
  dev->cur = x->cur;
  dev->http_id = x->http_id;
  dev->phase = x->phase;
  dev->resume = x->resume;
  dev->domain = x->domain;
  dev->launch_error = x->launch_error;
  dev->timer_at = x->timer_at;
  dev->wake_started = x->wake_started;
  dev->token_stamp = x->token_stamp;
  dev->legacy = x->legacy;
  dev->legacy_known = x->legacy_known;
  dev->woke = x->woke;
  dev->resync_used = x->resync_used;
  dev->refresh_used = x->refresh_used;
  dev->region_switches = x->region_switches;
  dev->method = x->method;
  dev->ep = x->ep;
  dev->vreq = x->vreq;
  dev->snap_gen = 0;
  /* Its timer may have fired in the aborted step (popped): arm it again
   * (a duplicate entry is dropped as stale once it fires). */
  if (dev->timer_at) heap_push(d, dev->timer_at, dev);
  if (dev->phase == PH_HOLD) hold(d, dev);
  if (!dev->cur && dev->phase == PH_IDLE) fq_dispatch_kick(d, dev->name);
}

/* A transaction begins with the first step or drain after a launch or a
 * rollback: answers acted on in a committed one are done with. */
static int txn_begin(fq_dispatch_t *d) {
  if (d->in_txn) return 0;
  d->in_txn = true;
  d->gen++;
  d->nsnaps = 0;
  d->work = 0;
  if (!d->rolled_back) {
    /* Keep the pending ones, in order; the others' buffers move to the
     * tail for reuse. */
    size_t w = 0;
    for (size_t i = 0; i < d->nkept; i++) {
      if (!d->kept[i].pending) continue;
      if (i != w) {
        kept_t t = d->kept[w];
        d->kept[w] = d->kept[i];
        d->kept[i] = t;
      }
      w++;
    }
    d->nkept = w;
  }
  d->rolled_back = false;
  d->gen_at_begin = d->seen_gen;
  d->st_at_begin = d->st;
  /* Every device can be touched once: make room now, so that no snapshot
   * is missing half way through. */
  size_t need = fq_hmap_count(&d->devs) + 1;
  if (need > d->asnaps) {
    size_t n = d->asnaps * 2 > need ? d->asnaps * 2 : need;
    dsnap_t *p = realloc(d->snaps, n * sizeof *p);
    if (!p) return -ENOMEM;
    d->snaps = p;
    d->asnaps = n;
  }
  return 0;
}

/* One piece of work (an answer, a timer, a kick) within the budget. */
static bool spend(fq_dispatch_t *d) {
  if (d->work >= d->budget) return false;
  d->work++;
  return true;
}

/* Room to keep every answer that may arrive in the next perform. */
static int kept_reserve(fq_dispatch_t *d) {
  size_t need = d->nkept + d->tr.inflight(d->tr.ud) + 1;
  if (need <= d->akept) return 0;
  size_t n = d->akept ? d->akept : 64;
  while (n < need) n *= 2;
  kept_t *p = realloc(d->kept, n * sizeof *p);
  if (!p) return -ENOMEM;
  for (size_t i = d->akept; i < n; i++) {
    memset(&p[i], 0, sizeof p[i]);
    fq_buf_init(&p[i].body, (size_t)2 << 20);
  }
  d->kept = p;
  d->akept = n;
  return 0;
}

/* Keep an answer (copied) until the transaction acting on it commits.
 * NULL when there is no slot (kept_reserve failed): the answer is then
 * acted on without a copy, as before this existed.  A body that cannot
 * be copied is kept as an unknown outcome: after an abort the command is
 * settled as if no answer had come (never sent again unless idempotent). */
static kept_t *keep(fq_dispatch_t *d, dev_t_ *dev, const fq_http_resp_t *resp, bool pending) {
  if (d->nkept == d->akept) return NULL;
  kept_t *k = &d->kept[d->nkept++];
  k->dev = dev;
  k->pending = pending;
  k->at_ns = fq_mono_ns();
  k->r = *resp; /* the header fields; the body is copied below */
  fq_buf_reset(&k->body);
  int rc = resp->body_len ? fq_buf_append(&k->body, resp->body, resp->body_len) : 0;
  if (!rc) rc = fq_buf_append(&k->body, "", 1); /* NUL-terminated, as fq_http's */
  if (rc) {
    fq_buf_reset(&k->body);
    k->r.outcome = FQ_HTTP_UNKNOWN;
    k->r.status = 0;
    k->r.body_len = 0;
    fq_errf(&k->r.err, FQ_EHTTP, "fleetqd could not keep the answer (%s)", fq_strerror(rc));
  } else {
    k->r.body_len = k->body.len - 1;
  }
  k->r.body = NULL; /* set when delivered: the buffer may move */
  return k;
}

static bool kept_pending(const fq_dispatch_t *d) {
  for (size_t i = 0; i < d->nkept; i++)
    if (d->kept[i].pending) return true;
  return false;
}

/* --- accounts and sessions ------------------------------------------------ */

static bool acct_eq(const void *item, const void *id) {
  return strcmp((*(acct_t *const *)item)->a.id, id) == 0;
}

static acct_t *acct_get(fq_dispatch_t *d, const char *id) {
  uint64_t h = hash_str(id);
  acct_t **slot = fq_hmap_find(&d->accts, h, acct_eq, id);
  acct_t *a = slot ? *slot : NULL;
  uint64_t gen = fq_auth_generation(d->o.auth);
  if (a && a->gen == gen) return a->missing ? NULL : a;
  if (!a) {
    a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (!(slot = fq_hmap_add(&d->accts, h))) {
      free(a);
      return NULL;
    }
    *slot = a;
    snprintf(a->a.id, sizeof a->a.id, "%s", id);
  }
  fq_err_t e;
  char keep[FQ_ACCOUNT_ID_MAX + 1];
  snprintf(keep, sizeof keep, "%s", id);
  fq_account_wipe(&a->a);
  int rc = d->o.accounts ? fq_accounts_get(d->o.accounts, keep, &a->a, &e) : FQ_ENOTFOUND;
  snprintf(a->a.id, sizeof a->a.id, "%s", keep);
  a->gen = gen;
  a->missing = rc != 0;
  if (rc && rc != FQ_ENOTFOUND)
    fq_warn("dispatch", "account %s unreadable: %s", keep, e.msg);
  return a->missing ? NULL : a;
}

static const char *acct_base(const acct_t *a) {
  if (a->a.base_url[0]) return a->a.base_url;
  const char *u = fq_fa_region_base_url(a->a.region[0] ? a->a.region : "na");
  return u ? u : fq_fa_region_base_url("na");
}

/* Until when (now_ms clock) the account must not send: a 429 or a low
 * RateLimit-Remaining parked it, on any shard.  0 when it may send. */
static int64_t acct_parked(fq_dispatch_t *d, const char *account) {
  if (!d->arl || !d->arl->park) return 0;
  pthread_mutex_lock(&d->arl->mu);
  int64_t until = fq_rl_parked_until(d->arl->park, account, strlen(account), d->now);
  pthread_mutex_unlock(&d->arl->mu);
  return until > d->now ? until : 0;
}

static void acct_park(fq_dispatch_t *d, const char *account, int64_t until) {
  if (!d->arl || !d->arl->park || until <= d->now) return;
  pthread_mutex_lock(&d->arl->mu);
  int rc = fq_rl_park(d->arl->park, account, strlen(account), until, d->now);
  pthread_mutex_unlock(&d->arl->mu);
  if (rc) fq_warn("dispatch", "account %s: cannot park it: %s", account, fq_strerror(rc));
}

/* Slow down before Fleet API's limit: with fewer than 10 % of
 * RateLimit-Limit left, the account's next request waits
 * reset / (remaining + 1), so what is left lasts until RateLimit-Reset
 * (remaining 0: the whole time to the reset). */
static void acct_pace(fq_dispatch_t *d, const char *account, const fq_http_resp_t *resp) {
  char *end;
  if (!resp->ratelimit_limit[0] || !resp->ratelimit_remaining[0]) return;
  long long lim = strtoll(resp->ratelimit_limit, &end, 10);
  if (*end && *end != ' ') return;
  long long left = strtoll(resp->ratelimit_remaining, &end, 10);
  if (*end && *end != ' ') return;
  int64_t reset = fq_rl_retry_after_ms(resp->ratelimit_reset, d->now, FQ_FA_RETRY_AFTER_MAX_MS);
  if (lim <= 0 || left < 0 || left * 10 >= lim || reset <= 0) return;
  acct_park(d, account, d->now + reset / (left + 1));
}

typedef struct sess_key {
  const char *vin;
  int domain;
} sess_key_t;

static uint64_t sess_hash(const char *vin, int domain) { return hash_str(vin) + (unsigned)domain; }

static bool sess_eq(const void *item, const void *key) {
  const sess_t *x = *(sess_t *const *)item;
  const sess_key_t *k = key;
  return x->domain == k->domain && strcmp(x->vin, k->vin) == 0;
}

/* Where (vin, domain)'s session is kept, or NULL. */
static sess_t **sess_slot(fq_dispatch_t *d, const char *vin, int domain) {
  sess_key_t k = {vin, domain};
  return fq_hmap_find(&d->sess, sess_hash(vin, domain), sess_eq, &k);
}

/* Keep a new session entry; NULL (nothing kept) when out of memory. */
static sess_t *sess_add(fq_dispatch_t *d, const char *vin, int domain, fq_vcp_session_t *s) {
  sess_t *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  sess_t **slot = fq_hmap_add(&d->sess, sess_hash(vin, domain));
  if (!slot) {
    free(n);
    return NULL;
  }
  *slot = n;
  snprintf(n->vin, sizeof n->vin, "%s", vin);
  n->domain = domain;
  n->s = s;
  return n;
}

static void sess_mark_saved(sess_t *e, uint32_t ahead) {
  uint32_t c = fq_vcp_session_counter(e->s);
  e->saved = true;
  e->saved_ctr = c > UINT32_MAX - ahead ? UINT32_MAX : c + ahead;
  e->saved_off = fq_vcp_session_clock_offset(e->s);
  e->saved_stale = fq_vcp_session_stale(e->s);
  memcpy(e->saved_epoch, fq_vcp_session_epoch(e->s), FQ_VCP_EPOCH_LEN);
}

/* The session of (vin, domain): memory, else the store, else NULL. */
static fq_vcp_session_t *sess_get(fq_dispatch_t *d, const char *vin, int domain) {
  sess_t **pp = sess_slot(d, vin, domain);
  if (pp) return (*pp)->s;
  fq_buf_t b;
  fq_buf_init(&b, FQ_VCP_SESSION_BLOB_MAX * 2);
  fq_err_t e;
  fq_vcp_session_t *s = NULL;
  if (fq_store_session_get(d->env.store, vin, domain, &b, &e) == 0 &&
      fq_vcp_session_restore(d->o.key, b.data, b.len, &s, &e) != 0)
    s = NULL;
  fq_buf_free(&b);
  if (!s) return NULL;
  sess_t *n = sess_add(d, vin, domain, s);
  if (!n) {
    fq_vcp_session_destroy(&s);
    return NULL;
  }
  sess_mark_saved(n, 0); /* what was just read */
  return s;
}

static void sess_put(fq_dispatch_t *d, const char *vin, int domain, fq_vcp_session_t *s) {
  sess_t **pp = sess_slot(d, vin, domain);
  if (pp) {
    if ((*pp)->s != s) fq_vcp_session_destroy(&(*pp)->s);
    (*pp)->s = s;
    (*pp)->saved = false;
    return;
  }
  sess_add(d, vin, domain, s);
}

static void sess_drop(fq_dispatch_t *d, const char *vin, int domain) {
  sess_t **pp = sess_slot(d, vin, domain);
  if (!pp) return;
  sess_t *x = *pp;
  fq_hmap_del(&d->sess, pp);
  fq_vcp_session_destroy(&x->s);
  free(x);
}

/* Forget every session object. */
static void sess_free_all(fq_dispatch_t *d) {
  size_t pos = 0;
  for (sess_t **x; (x = fq_hmap_each(&d->sess, &pos));) {
    fq_vcp_session_destroy(&(*x)->s);
    free(*x);
  }
  fq_hmap_clear(&d->sess);
}

/* Make the store cover the session (counter, epoch, clock) in the open
 * transaction.  Nothing is written while the counter stays within the
 * last reservation and nothing else changed.  A rolled-back transaction
 * drops every session object (fq_dispatch_rollback), so `saved` never
 * outlives a write that did not land. */
static int sess_save(fq_dispatch_t *d, const char *vin, int domain, fq_vcp_session_t *s) {
  sess_t *e = *sess_slot(d, vin, domain);
  if (e && e->s != s) e = NULL;
  if (e && e->saved && fq_vcp_session_counter(s) <= e->saved_ctr &&
      fq_vcp_session_clock_offset(s) == e->saved_off &&
      fq_vcp_session_stale(s) == e->saved_stale &&
      memcmp(fq_vcp_session_epoch(s), e->saved_epoch, FQ_VCP_EPOCH_LEN) == 0)
    return 0;
  uint8_t blob[FQ_VCP_SESSION_BLOB_MAX];
  size_t n = fq_vcp_session_save_ahead(s, SESS_RESERVE, blob);
  int rc = fq_store_session_put(d->env.store, vin, domain, blob, n, d->err);
  if (rc == 0 && e) sess_mark_saved(e, SESS_RESERVE);
  return rc;
}

/* Whether a car speaks REST only, remembered per VIN under domain 0. */
static void legacy_load(fq_dispatch_t *d, dev_t_ *dev) {
  if (dev->legacy_known || !dev->vehicle) return;
  fq_buf_t b;
  fq_buf_init(&b, 16);
  fq_err_t e;
  dev->legacy = fq_store_session_get(d->env.store, dev->vin, 0, &b, &e) == 0 && b.len == 1 &&
                b.data[0] == 'L';
  fq_buf_free(&b);
  dev->legacy_known = true;
}

static int legacy_save(fq_dispatch_t *d, dev_t_ *dev, bool legacy) {
  dev->legacy = legacy;
  dev->legacy_known = true;
  return fq_store_session_put(d->env.store, dev->vin, 0, (const uint8_t *)(legacy ? "L" : "S"), 1,
                              d->err);
}

/* --- command helpers -------------------------------------------------------- */

static int load(fq_dispatch_t *d, uint64_t num, fq_cmdrec_t *rec) {
  char id[FQ_ID_LEN + 1];
  fq_store_id_format(d->env.shard_index, num, id);
  return fq_store_cmd_get(d->env.store, id, FQ_ID_LEN, rec, d->err);
}

static const fq_cmd_t *cmd_of(const dev_t_ *dev, const fq_cmdrec_t *rec) {
  return fq_cmd_find(rec->command, strlen(rec->command),
                     dev->vehicle ? FQ_DEV_VEHICLE : FQ_DEV_SITE, NULL);
}

static void note_rc(fq_dispatch_t *d, int rc) {
  if (rc && !d->step_rc) d->step_rc = rc;
}

static void move(fq_dispatch_t *d, fq_cmdrec_t *rec, int state, const char *reason, int error) {
  note_rc(d, d->env.transition(d->env.shard, rec, state, reason, error, d->now, true, d->err));
  d->puts++;
}

/* A command reached a terminal state: free the device for the next one. */
static void finish(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, int state, const char *reason,
                   int error) {
  move(d, rec, state, reason, error);
  if (d->answer_ns) {
    if (d->nsettled == d->asettled) {
      size_t n = d->asettled ? d->asettled * 2 : 256;
      int64_t *p = realloc(d->settled, n * sizeof *p);
      if (p) {
        d->settled = p;
        d->asettled = n;
      }
    }
    if (d->nsettled < d->asettled) d->settled[d->nsettled++] = d->answer_ns;
  }
  if (state == FQ_ST_SUCCEEDED) d->st.succeeded++;
  else if (state == FQ_ST_UNKNOWN) d->st.unknown++;
  else d->st.failed++;
  dev->cur = 0;
  dev->phase = PH_IDLE;
  dev->resume = R_NONE;
  dev->timer_at = 0;
  fq_dispatch_kick(d, dev->name);
}

static void expire(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const char *why) {
  char reason[FQ_REASON_MAX];
  snprintf(reason, sizeof reason, "deadline passed: %.440s", why);
  finish(d, dev, rec, FQ_ST_EXPIRED, reason, FQ_EEXPIRED);
}

/* Wait and try again, or expire when the wait would pass the deadline. */
static void retry_later(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, int64_t delay,
                        const char *reason) {
  if (d->now + delay >= rec->deadline) {
    expire(d, dev, rec, reason);
    return;
  }
  d->st.retries++;
  char r[FQ_REASON_MAX];
  snprintf(r, sizeof r, "%.440s; retrying in %" PRId64 " ms", reason, delay);
  move(d, rec, FQ_ST_RETRYING, r, 0);
  set_timer(d, dev, d->now + delay, R_SEND);
}

/* The request may have reached the car and no answer says what came of
 * it.  reason says what happened (the classifiers give the cause only);
 * what it means for the command is said here, once. */
static void unknown_outcome(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const fq_cmd_t *cmd,
                            const char *reason) {
  if (cmd && cmd->idempotent && d->now + d->o.retry_backoff_ms < rec->deadline) {
    char r[FQ_REASON_MAX];
    snprintf(r, sizeof r, "%.400s (idempotent command: safe to send again)", reason);
    retry_later(d, dev, rec, d->o.retry_backoff_ms, r);
    return;
  }
  char r[FQ_REASON_MAX];
  snprintf(r, sizeof r,
           "%.380s; the command may have been executed: check the device before sending it "
           "again",
           reason);
  finish(d, dev, rec, FQ_ST_UNKNOWN, r, FQ_EHTTP);
}

/* The daemon is stopping and dev's command has nothing out that could
 * reach the car: give it back to the queue, attempts unchanged, so that
 * the next start sends it (see fq_dispatch_drain). */
static void requeue(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec) {
  move(d, rec, FQ_ST_QUEUED,
       "fleetqd stopped before this command was sent (again): it stays queued and is sent "
       "after the restart",
       0);
  dev->cur = 0;
  dev->phase = PH_IDLE;
  dev->resume = R_NONE;
  dev->timer_at = 0;
}

/* Prepare the HTTP request in dev (sent after the commit). */
static int prepare(fq_dispatch_t *d, dev_t_ *dev, fq_http_method_t m, fq_fa_endpoint_t ep,
                   const acct_t *a, const char *path, const char *tenant) {
  dev->method = m;
  dev->ep = ep;
  const char *base = acct_base(a);
  size_t bl = strlen(base), pl = strlen(path);
  while (bl && base[bl - 1] == '/') bl--; /* no "//" between base and path */
  if (bl + pl >= sizeof dev->url) return fq_errf(d->err, FQ_ETOOLARGE, "request URL too long");
  memcpy(dev->url, base, bl);
  memcpy(dev->url + bl, path, pl + 1);
  snprintf(dev->account, sizeof dev->account, "%s", a->a.id);
  snprintf(dev->tenant, sizeof dev->tenant, "%s", tenant);
  if (!dev->launch_pending) {
    dev->launch_pending = true;
    dev->launch_next = d->launch_head;
    d->launch_head = dev;
  }
  return 0;
}

static int body_routable(fq_dispatch_t *d, dev_t_ *dev, const uint8_t *msg, size_t len) {
  fq_buf_reset(&dev->body);
  int rc = fq_buf_append_str(&dev->body, "{\"routable_message\":\"");
  if (!rc) rc = fq_buf_reserve(&dev->body, 4 * ((len + 2) / 3) + 4);
  if (rc) return fq_errf(d->err, rc, "request body too large");
  dev->body.len += fq_base64_encode(msg, len, (char *)dev->body.data + dev->body.len);
  return fq_buf_append_str(&dev->body, "\"}");
}

static void fail_pairing(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec) {
  /* The car refused our key: whatever fleet_status said is stale. */
  if (d->pc) fq_precheck_forget(d->pc, dev->vin);
  char reason[FQ_REASON_MAX];
  fq_fa_pairing_reason(reason, sizeof reason, d->o.pairing_domain);
  rec->fault = 3;
  finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_ENOTPAIRED);
}

/* Send (or resend) dev's current command: handshake first when there is
 * no session; sign inside the transaction so the advanced counter is
 * durable before the bytes leave. */
static void send_cmd(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec) {
  if (d->draining) {
    requeue(d, dev, rec);
    return;
  }
  const fq_cmd_t *cmd = cmd_of(dev, rec);
  acct_t *a = acct_get(d, rec->account);
  if (!cmd || !a) {
    finish(d, dev, rec, FQ_ST_FAILED,
           !cmd ? "command no longer known to this fleetqd" : "account was removed",
           FQ_ECONFIG);
    return;
  }
  if (d->now >= rec->deadline) {
    expire(d, dev, rec, "the command could not be sent in time");
    return;
  }
  fq_pval_t pv[FQ_MAX_PARAMS];
  size_t np = 0;
  fq_err_t pe;
  if (rec->params_len && fq_wire_decode_params(rec->params, rec->params_len, pv, &np, &pe) != 0) {
    finish(d, dev, rec, FQ_ST_FAILED, pe.msg, FQ_EBADPARAM);
    return;
  }
  char path[256];
  int rc;
  if (!dev->vehicle || dev->legacy || cmd->domain == FQ_DOMAIN_NONE) {
    /* REST: energy sites, cars without the protocol, wake_up and the
     * vehicle commands Fleet API takes only as REST (navigation_request). */
    if (dev->vehicle && dev->legacy && cmd->signed_only) {
      /* Fleet API has no command/<name> for it: sent, it would be an
       * unknown endpoint (billed, maybe a wake-up first).  Nothing to
       * retry: the car takes no signed command either. */
      char why[FQ_REASON_MAX];
      snprintf(why, sizeof why,
               "vehicle does not support the Vehicle Command Protocol and %s has no REST form: "
               "not sent (actuate_trunk moves the trunk or frunk of such a car)",
               cmd->name);
      finish(d, dev, rec, FQ_ST_FAILED, why, FQ_EUNKCMD);
      return;
    }
    fq_buf_reset(&dev->body);
    if (cmd->build_json) {
      fq_err_t be;
      if ((rc = cmd->build_json(cmd, pv, np, &dev->body, &be)) != 0) {
        finish(d, dev, rec, FQ_ST_FAILED, be.msg, FQ_EBADPARAM);
        return;
      }
    } else {
      fq_buf_append_str(&dev->body, "{}");
    }
    if (dev->vehicle)
      snprintf(path, sizeof path, "/api/1/vehicles/%s/%s", dev->vin, cmd->rest_suffix);
    else
      snprintf(path, sizeof path, "/api/1/energy_sites/%" PRIu64 "/%s", dev->site,
               cmd->rest_suffix);
    fq_fa_endpoint_t ep = !dev->vehicle ? FQ_FA_EP_ENERGY
                          : cmd->wake                     ? FQ_FA_EP_WAKE
                                                          : FQ_FA_EP_REST_COMMAND;
    if (ep == FQ_FA_EP_WAKE && rec->wakes >= (uint32_t)d->o.wake_max) {
      /* The user's own wake_up is billed as one, and sent again after a
       * 503 or a lost answer: bounded like the dispatcher's own. */
      char reason[FQ_REASON_MAX];
      const char *last = rec->reason[0] ? rec->reason : "none";
      const char *cut = strstr(last, "; retrying in "); /* not any more */
      int n = (int)(cut ? (size_t)(cut - last) : strlen(last));
      if (n > 200) n = 200;
      snprintf(reason, sizeof reason,
               "vehicle not online after %" PRIu32 " wake_up requests, the limit (--wake-max "
               "%d) (last answer: %.*s)",
               rec->wakes, d->o.wake_max, n, last);
      finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EASLEEP);
      return;
    }
    note_rc(d, prepare(d, dev, FQ_HTTP_POST, ep, a, path, rec->tenant));
    dev->phase = PH_SEND;
    if (ep == FQ_FA_EP_WAKE) rec->wakes++; /* the user's own wake_up is billed as one */
    rec->attempts++;
    d->st.sent++;
    rec->http = 0;
    rec->fault = -1;
    move(d, rec, FQ_ST_SENT, "", 0);
    return;
  }
  if (!d->o.key) {
    finish(d, dev, rec, FQ_ST_FAILED,
           "fleetqd has no fleet key (--key): vehicle commands cannot be signed", FQ_ECONFIG);
    return;
  }
  snprintf(path, sizeof path, "/api/1/vehicles/%s/signed_command", dev->vin);
  dev->domain = cmd->domain;
  fq_vcp_session_t *s = sess_get(d, dev->vin, cmd->domain);
  if (s && fq_vcp_session_stale(s)) {
    sess_drop(d, dev->vin, cmd->domain);
    s = NULL;
  }
  fq_buf_t *m = &d->scratch;
  fq_buf_reset(m);
  fq_err_t se;
  if (!s) {
    if ((rc = fq_vcp_handshake_request(d->o.key, cmd->domain, NULL, NULL, d->now, &dev->vreq, m,
                                       &se)) != 0) {
      finish(d, dev, rec, FQ_ST_FAILED, se.msg, rc);
      return;
    }
    note_rc(d, body_routable(d, dev, m->data, m->len));
    note_rc(d, prepare(d, dev, FQ_HTTP_POST, FQ_FA_EP_SIGNED, a, path, rec->tenant));
    dev->phase = PH_HANDSHAKE;
    d->st.handshakes++;
    return;
  }
  uint8_t payload[FQ_VCP_MAX_PAYLOAD];
  fq_buf_t pb = {.data = payload, .alloc = sizeof payload, .cap = sizeof payload};
  if (!cmd->build_payload || (rc = cmd->build_payload(cmd, pv, np, &pb, &se)) != 0) {
    finish(d, dev, rec, FQ_ST_FAILED, cmd->build_payload ? se.msg : "no payload builder",
           FQ_EBADPARAM);
    return;
  }
  fq_vcp_sign_opts_t so = {.now_ms = d->now, .deadline_ms = rec->deadline};
  rc = fq_vcp_sign(s, pb.data, pb.len, &so, &dev->vreq, m, &se);
  if (rc == FQ_EEXPIRED) {
    expire(d, dev, rec, "no time left to sign the command before its deadline");
    return;
  }
  if (rc == FQ_ERANGE) {
    /* The counter would wrap: a new handshake starts a fresh session. */
    sess_drop(d, dev->vin, cmd->domain);
    send_cmd(d, dev, rec);
    return;
  }
  if (rc) {
    finish(d, dev, rec, FQ_ST_FAILED, se.msg, rc);
    return;
  }
  note_rc(d, sess_save(d, dev->vin, cmd->domain, s));
  note_rc(d, body_routable(d, dev, m->data, m->len));
  note_rc(d, prepare(d, dev, FQ_HTTP_POST, FQ_FA_EP_SIGNED, a, path, rec->tenant));
  dev->phase = PH_SEND;
  rec->attempts++;
  d->st.sent++;
  rec->http = 0;
  rec->fault = -1;
  move(d, rec, FQ_ST_SENT, "", 0);
}

/* Every wake_up is billed and a wake loop drains the car's battery: a
 * command gets at most --wake-max of them.  They are spaced by at least
 * wake_poll_ms because each is followed by a poll that long after it, and
 * the next one only follows a poll (or a command) that found the car not
 * awake. */
static void wake(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const char *why) {
  if (d->draining) {
    requeue(d, dev, rec);
    return;
  }
  acct_t *a = acct_get(d, rec->account);
  if (!a) {
    finish(d, dev, rec, FQ_ST_FAILED, "account was removed", FQ_ECONFIG);
    return;
  }
  if (rec->wakes >= (uint32_t)d->o.wake_max) {
    char reason[FQ_REASON_MAX];
    snprintf(reason, sizeof reason,
             "vehicle still not awake after %" PRIu32 " wake_up requests, the limit "
             "(--wake-max %d): the command did not reach the car (last answer: %.200s)",
             rec->wakes, d->o.wake_max, why);
    finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EASLEEP);
    return;
  }
  rec->wakes++;
  if (rec->state != FQ_ST_WAKING)
    move(d, rec, FQ_ST_WAKING, why, 0);
  else /* no transition writes the record: keep the count anyway */
    note_rc(d, fq_store_cmd_put(d->env.store, rec, d->err));
  if (!dev->wake_started) dev->wake_started = d->now;
  char path[128];
  snprintf(path, sizeof path, "/api/1/vehicles/%s/wake_up", dev->vin);
  fq_buf_reset(&dev->body);
  note_rc(d, prepare(d, dev, FQ_HTTP_POST, FQ_FA_EP_WAKE, a, path, rec->tenant));
  dev->phase = PH_WAKE;
  d->st.wakes++;
}

static void wake_poll(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec) {
  acct_t *a = acct_get(d, rec->account);
  if (!a) {
    finish(d, dev, rec, FQ_ST_FAILED, "account was removed", FQ_ECONFIG);
    return;
  }
  char path[128];
  snprintf(path, sizeof path, "/api/1/vehicles/%s", dev->vin);
  note_rc(d, prepare(d, dev, FQ_HTTP_GET, FQ_FA_EP_WAKE, a, path, rec->tenant));
  dev->phase = PH_WAKE_POLL;
}

static void schedule_wake_poll(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec);

/* The command did not reach the car because it is not awake: a 408, or a
 * 503, which Tesla's client treats alike. */
static void not_awake(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const char *why) {
  if (rec->no_wake) {
    char reason[FQ_REASON_MAX];
    snprintf(reason, sizeof reason,
             "vehicle is asleep (HTTP %d) and the command was submitted with wake: false: "
             "nothing was sent to the car and no wake_up was requested",
             rec->http);
    finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EASLEEP);
    return;
  }
  if (dev->woke && rec->http == 408) {
    /* The car reported online during this command: a 408 now is its
     * infotainment computer still starting after VCSEC woke, not a car
     * asleep again.  Poll on the wake timer already running (not
     * restarted) instead of billing another wake_up. */
    if (rec->state != FQ_ST_WAKING)
      move(d, rec, FQ_ST_WAKING, "vehicle is online but still answers 408: waiting for it", 0);
    schedule_wake_poll(d, dev, rec);
    return;
  }
  int64_t parked = acct_parked(d, rec->account);
  if (parked) {
    /* A parked account sends nothing, wake_ups included: try the command
     * again when the park ends, and wake the car then if it still sleeps. */
    if (rec->state != FQ_ST_WAKING) move(d, rec, FQ_ST_WAKING, why, 0);
    set_timer(d, dev, parked, R_SEND);
    return;
  }
  wake(d, dev, rec, why);
}

static void schedule_wake_poll(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec) {
  int64_t at = d->now + d->o.wake_poll_ms;
  if (at >= rec->deadline) {
    expire(d, dev, rec, "the vehicle did not wake up in time");
    return;
  }
  if (d->now - dev->wake_started > d->o.wake_timeout_ms) {
    finish(d, dev, rec, FQ_ST_FAILED,
           "the vehicle did not come online after a wake_up: it may be offline (no "
           "connectivity)",
           FQ_EHTTP);
    return;
  }
  set_timer(d, dev, at, R_WAKE_POLL);
}

/* Which scope to name when a command is not allowed. */
static const char *scope_label(const fq_cmd_t *cmd) {
  if ((cmd->scopes & FQ_SCOPE_VEHICLE_CMDS) && (cmd->scopes & FQ_SCOPE_VEHICLE_CHARGING_CMDS))
    return "vehicle_cmds (or vehicle_charging_cmds)";
  for (unsigned b = 1; b; b <<= 1)
    if (cmd->scopes & b) return fq_scope_name(b);
  return "?";
}

/* A command found started (not queued) while its device has nothing in
 * flight: like a restart (shard.c, recover), a non-idempotent one whose
 * request may have left (`sent`) ends `unknown`; any other goes back to
 * `queued`, attempts unchanged, and is started again. */
static void settle_lost(fq_dispatch_t *d, dev_t_ *dev, uint64_t num, fq_cmdrec_t *rec) {
  const fq_cmd_t *cmd = cmd_of(dev, rec);
  fq_error("dispatch", "device %s: command %s is %s but not in flight here: settling it",
           dev->name, rec->id, fq_state_name(rec->state));
  if (rec->state == FQ_ST_SENT && !(cmd && cmd->idempotent)) {
    dev->cur = num;
    finish(d, dev, rec, FQ_ST_UNKNOWN,
           "fleetqd lost track of this command's request: it may have been executed; check the "
           "device before sending it again",
           FQ_EINTERNAL);
    return;
  }
  move(d, rec, FQ_ST_QUEUED, "re-queued: fleetqd lost track of this command's attempt", 0);
}

/* fleet_status says the fleet key is not on the car and the car needs
 * signed commands: fail now, the same reason and code as the car's own
 * refusal, before any wake_up or billed command. */
static void precheck_unpaired(fq_dispatch_t *d, dev_t_ *dev, uint64_t num, fq_cmdrec_t *rec) {
  char link[FQ_REASON_MAX], reason[FQ_REASON_MAX];
  fq_fa_pairing_reason(link, sizeof link, d->o.pairing_domain);
  snprintf(reason, sizeof reason,
           "%.380s (fleet_status lists the car as unpaired: nothing was sent to it, no wake_up)",
           link);
  dev->cur = num;
  note_rc(d, d->env.transition(d->env.shard, rec, FQ_ST_DISPATCHING, "", 0, d->now, false,
                               d->err));
  fq_precheck_count_unpaired(d->pc);
  finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_ENOTPAIRED);
}

/* Look at the device's queue head and start it when nothing holds it. */
static void start_next(fq_dispatch_t *d, dev_t_ *dev) {
  /* No account store: nothing is dispatched (dispatch.h); the shard
   * expires what stays queued. */
  if (dev->cur || d->draining || !d->o.accounts) return;
  if (!touch(d, dev)) {
    fq_dispatch_kick(d, dev->name); /* this step fails: look again in the next */
    return;
  }
  /* A device whose queue head waits its turn (its account parked after a
   * 429, an empty rate-limit bucket) waits for that head only: when the
   * head ended meanwhile (cancelled, expired, superseded) the next command
   * must not wait for the old one's timer, so look at the queue again.
   * The wait is taken again when the head still has to wait, its timer
   * kept when the time is the same (wait_turn). */
  int64_t held_until = 0;
  if (dev->phase == PH_WAIT && dev->resume == R_KICK) {
    held_until = dev->timer_at;
    dev->phase = PH_IDLE;
    dev->resume = R_NONE;
    dev->timer_at = 0;
  }
  if (dev->phase != PH_IDLE) return;
  for (int guard = 0; guard < 64; guard++) {
    uint64_t num;
    if (fq_devq_list(*d->env.q, dev->name, &num, 1) == 0) return;
    fq_cmdrec_t rec;
    if (load(d, num, &rec) != 0) {
      note_rc(d, d->err->code ? d->err->code : FQ_ESTORAGE);
      return;
    }
    if (fq_state_terminal(rec.state)) {
      fq_devq_remove(*d->env.q, num);
      fq_cmdrec_free(&rec);
      continue;
    }
    if (rec.state != FQ_ST_QUEUED) {
      /* Only a queued command may start.  Any other state means it was
       * started before and this dispatcher no longer knows what became of
       * its attempt (a rollback must restore the device, so this is a
       * bug's safety net): settle it as a restart would, never sign it
       * blindly again. */
      settle_lost(d, dev, num, &rec);
      fq_cmdrec_free(&rec);
      continue;
    }
    if (d->now >= rec.deadline) {
      dev->cur = num;
      expire(d, dev, &rec, "it was still queued");
      fq_cmdrec_free(&rec);
      continue;
    }
    const fq_cmd_t *cmd = cmd_of(dev, &rec);
    acct_t *a = acct_get(d, rec.account);
    char reason[FQ_REASON_MAX];
    if (!cmd) {
      dev->cur = num;
      finish(d, dev, &rec, FQ_ST_FAILED, "command no longer known to this fleetqd", FQ_EUNKCMD);
      fq_cmdrec_free(&rec);
      continue;
    }
    if (!a) {
      /* Submits for an account fleetqd does not have are refused
       * (unknown_account), so this one was removed (or its record cannot
       * be read) after the command was accepted.  Never wait for an
       * account: the device's later commands would wait behind it. */
      snprintf(reason, sizeof reason,
               "account \"%s\" is not registered with fleetqd (removed after this command was "
               "accepted): nothing was sent; add it with `fleetq account add` and submit again",
               rec.account);
      dev->cur = num;
      finish(d, dev, &rec, FQ_ST_FAILED, reason, FQ_EUNKACCT);
      fq_cmdrec_free(&rec);
      continue;
    }
    char fail[384];
    if (fq_auth_refresh_failure(d->o.auth, a->a.id, fail, sizeof fail)) {
      dev->cur = num;
      finish(d, dev, &rec, FQ_ST_FAILED, fail, FQ_EAUTH);
      fq_cmdrec_free(&rec);
      continue;
    }
    char why[FQ_REASON_MAX];
    int refused = fq_auth_account_refused(d->o.auth, a->a.id, why, sizeof why);
    if (refused) {
      snprintf(reason, sizeof reason, "not sent: Fleet API refused account %s earlier: %.400s",
               a->a.id, why);
      dev->cur = num;
      finish(d, dev, &rec, FQ_ST_FAILED, reason, refused);
      fq_cmdrec_free(&rec);
      continue;
    }
    /* Unknown scopes (a token that is not a JWT): Fleet API's 403 decides. */
    if (!(a->a.scopes & FQ_SCOPES_UNKNOWN) && !fq_cmd_allowed(cmd, a->a.scopes)) {
      fq_fa_scope_reason(reason, sizeof reason, scope_label(cmd), a->a.client_id);
      dev->cur = num;
      finish(d, dev, &rec, FQ_ST_FAILED, reason, FQ_ESCOPE);
      fq_cmdrec_free(&rec);
      continue;
    }
    /* Rate limits: the account's park (429, RateLimit-Remaining), per
     * device, then per account. */
    int64_t wait = 0, parked = acct_parked(d, a->a.id);
    if (parked) {
      wait_turn(d, dev, parked, held_until);
      fq_cmdrec_free(&rec);
      return;
    }
    /* The fleet_status pre-check (precheck.h), for what may be signed:
     * wake_up and navigation_request have no signed form and need no key. */
    int signing = -1;
    if (d->pc && dev->vehicle && cmd->domain != FQ_DOMAIN_NONE) {
      int v = fq_precheck_look(d->pc, a->a.id, dev->vin, dev->name, d->now, &signing);
      if (v == FQ_PC_WAIT) { /* kicked when the answer comes */
        fq_cmdrec_free(&rec);
        return;
      }
      if (v == FQ_PC_UNPAIRED) {
        precheck_unpaired(d, dev, num, &rec);
        fq_cmdrec_free(&rec);
        continue;
      }
    }
    if (d->rl_dev) {
      wait = fq_rl_take(d->rl_dev, dev->name, strlen(dev->name), d->now);
      if (wait < 0) wait = 100;
    }
    fq_shared_rl_t *arl = d->arl;
    if (wait == 0 && arl && arl->rl) {
      pthread_mutex_lock(&arl->mu);
      wait = fq_rl_take(arl->rl, a->a.id, strlen(a->a.id), fq_mono_ns() / 1000000);
      pthread_mutex_unlock(&arl->mu);
      if (wait < 0) wait = 100;
      if (wait && d->rl_dev) fq_rl_refund(d->rl_dev, dev->name, strlen(dev->name));
    }
    if (wait > 0) {
      wait_turn(d, dev, d->now + wait, held_until);
      fq_cmdrec_free(&rec);
      return;
    }
    dev->cur = num;
    dev->cur_created = rec.created;
    dev->first_sent = false;
    dev->resync_used = dev->refresh_used = dev->region_switches = 0;
    dev->wake_started = 0;
    dev->woke = false;
    dev->launch_error = 0;
    legacy_load(d, dev);
    /* fleet_status said how the car takes commands: REST up front for one
     * without the Vehicle Command Protocol (no signed attempt first). */
    if (signing == 0 && !dev->legacy) note_rc(d, legacy_save(d, dev, true));
    else if (signing == 1 && dev->legacy) note_rc(d, legacy_save(d, dev, false));
    /* `dispatching` is almost always followed by `sent` (or an end) in
     * this same transaction, which writes the record again: write it once,
     * after send_cmd, unless send_cmd wrote it (the handshake path does
     * not). */
    note_rc(d, d->env.transition(d->env.shard, &rec, FQ_ST_DISPATCHING, "", 0, d->now, false,
                                 d->err));
    uint64_t puts = d->puts;
    send_cmd(d, dev, &rec);
    if (d->puts == puts) note_rc(d, fq_store_cmd_put(d->env.store, &rec, d->err));
    fq_cmdrec_free(&rec);
    return;
  }
}

/* --- completions ------------------------------------------------------------ */

static void ask_refresh(fq_dispatch_t *d, const char *account) {
  if (!d->auth_push) return;
  char msg[1 + FQ_ACCOUNT_ID_MAX + 1];
  int n = snprintf(msg, sizeof msg, "R%s", account);
  zmq_send(d->auth_push, msg, (size_t)n, ZMQ_DONTWAIT);
}

static void on_class(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const fq_cmd_t *cmd,
                     const fq_fa_result_t *r) {
  acct_t *a;
  switch (r->cls) {
    case FQ_FA_SUCCESS: /* handled by the caller */
      return;
    case FQ_FA_REJECTED:
      finish(d, dev, rec, FQ_ST_FAILED, r->reason, FQ_EFAULT);
      return;
    case FQ_FA_ASLEEP:
      if (!dev->vehicle) {
        retry_later(d, dev, rec, d->o.retry_backoff_ms, r->reason);
        return;
      }
      not_awake(d, dev, rec, r->reason);
      return;
    case FQ_FA_WRONG_REGION:
      a = acct_get(d, rec->account);
      if (!a || dev->region_switches >= 2 || !r->base_url[0]) {
        finish(d, dev, rec, FQ_ST_FAILED, r->reason, FQ_EHTTP);
        return;
      }
      dev->region_switches++;
      if (fq_accounts_set_base_url(d->o.accounts, a->a.id, r->base_url, d->err) == 0) {
        fq_auth_bump_generation(d->o.auth);
        a->gen = UINT64_MAX; /* re-read here too, even without an auth side */
        fq_info("dispatch", "account %s: switched to %s after a 421", a->a.id, r->base_url);
      }
      move(d, rec, FQ_ST_RETRYING, r->reason, 0);
      send_cmd(d, dev, rec);
      return;
    case FQ_FA_LEGACY:
      if (d->pc) fq_precheck_note_signing(d->pc, dev->vin, 0);
      note_rc(d, legacy_save(d, dev, true));
      move(d, rec, FQ_ST_RETRYING,
           "vehicle does not support the Vehicle Command Protocol: using the REST endpoint", 0);
      send_cmd(d, dev, rec);
      return;
    case FQ_FA_PROTOCOL_REQUIRED:
      /* The car takes signed commands (now): later commands are signed. */
      if (d->pc) fq_precheck_note_signing(d->pc, dev->vin, 1);
      if (dev->legacy) note_rc(d, legacy_save(d, dev, false));
      if (!cmd || cmd->domain == FQ_DOMAIN_NONE || dev->ep == FQ_FA_EP_WAKE) {
        /* wake_up has no signed form: the user's own, or the one waking
         * the car for another command (which then was not sent); nor has
         * a REST-only command.  Sending it again would get the same
         * answer: there is nothing to retry. */
        char why[FQ_REASON_MAX];
        if (dev->ep == FQ_FA_EP_WAKE && cmd && cmd->domain != FQ_DOMAIN_NONE)
          snprintf(why, sizeof why,
                   "vehicle requires signed commands (Vehicle Command Protocol) and wake_up has "
                   "no signed form: not retried, the car cannot be woken, so %s was not sent",
                   cmd->name);
        else
          snprintf(why, sizeof why,
                   "vehicle requires signed commands (Vehicle Command Protocol) and %s has no "
                   "signed form: not retried, the car cannot be sent this command",
                   cmd ? cmd->name : "this command");
        finish(d, dev, rec, FQ_ST_FAILED, why, FQ_EHTTP);
        return;
      }
      move(d, rec, FQ_ST_RETRYING, "vehicle requires signed commands: signing it", 0);
      send_cmd(d, dev, rec);
      return;
    case FQ_FA_MISSING_SCOPE:
      finish(d, dev, rec, FQ_ST_FAILED, r->reason, FQ_ESCOPE);
      return;
    case FQ_FA_UNAUTHORIZED:
      if (dev->refresh_used || !d->auth_push) {
        char reason[FQ_REASON_MAX];
        snprintf(reason, sizeof reason,
                 "%.380s; the access token was refused again after a refresh: connect the "
                 "account "
                 "again",
                 r->reason);
        finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EAUTH);
        return;
      }
      dev->refresh_used = 1;
      a = acct_get(d, rec->account);
      dev->token_stamp = a ? a->a.updated_at_ms : 0;
      ask_refresh(d, rec->account);
      move(d, rec, FQ_ST_RETRYING, "access token refused (401): refreshing it", 0);
      hold(d, dev);
      heap_push(d, d->now + 30000, dev);
      dev->timer_at = d->now + 30000;
      dev->resume = R_TOKEN_TIMEOUT;
      return;
    case FQ_FA_RATE_LIMITED: {
      /* Tesla limits per account and app: every device of the account
       * waits, on every shard (start_next and on_timer look at the park). */
      int64_t wait = r->retry_after_ms > 0 ? r->retry_after_ms : d->o.retry_backoff_ms;
      if (d->rl_dev) fq_rl_park(d->rl_dev, dev->name, strlen(dev->name), d->now + wait, d->now);
      acct_park(d, rec->account, d->now + wait);
      char reason[FQ_REASON_MAX], when[32];
      time_t t = (time_t)((d->now + wait + 999) / 1000);
      struct tm tm;
      if (!gmtime_r(&t, &tm) || !strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(when, sizeof when, "?");
      snprintf(reason, sizeof reason, "%.300s; account %s paused until %s", r->reason,
               rec->account, when);
      retry_later(d, dev, rec, wait, reason);
      return;
    }
    case FQ_FA_ACCOUNT_REFUSED: {
      /* The same answer awaits every command of the account: remember it
       * (all shards) so they fail without a request until it is cleared. */
      char reason[FQ_REASON_MAX], where[160], full[2 * FQ_REASON_MAX];
      a = acct_get(d, rec->account);
      /* The region of the host the request went to: an account added with
       * --base-url, or moved by a 421, has no (or a stale) region field. */
      const char *region = a ? fq_fa_base_url_region(acct_base(a)) : NULL;
      if (region)
        snprintf(where, sizeof where, "region %s, %.120s", region, acct_base(a));
      else
        snprintf(where, sizeof where, "base URL %.140s", a ? acct_base(a) : "?");
      snprintf(full, sizeof full,
               "%.200s [account %s, %.150s]; its later commands fail without a request until "
               "`fleetq account retry --account %s` (or `fleetq account add`)",
               r->reason, rec->account, where, rec->account);
      snprintf(reason, sizeof reason, "%.*s", (int)sizeof reason - 1, full);
      fq_auth_account_refuse(d->o.auth, rec->account, r->code, reason);
      finish(d, dev, rec, FQ_ST_FAILED, reason, r->code);
      return;
    }
    case FQ_FA_NOT_PAIRED:
      fail_pairing(d, dev, rec);
      return;
    case FQ_FA_CLIENT_ERROR:
      finish(d, dev, rec, FQ_ST_FAILED, r->reason, FQ_EHTTP);
      return;
    case FQ_FA_TRANSIENT:
      retry_later(d, dev, rec,
                  r->retry_after_ms > 0 ? r->retry_after_ms : d->o.retry_backoff_ms, r->reason);
      return;
    case FQ_FA_UNKNOWN:
      unknown_outcome(d, dev, rec, cmd, r->reason);
      return;
  }
}

/* A signed command's reply (HTTP 200 with a RoutableMessage). */
static void on_signed_reply(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec, const fq_cmd_t *cmd,
                            const fq_fa_result_t *r) {
  fq_vcp_session_t *s = sess_get(d, dev->vin, dev->domain);
  if (!s) {
    unknown_outcome(d, dev, rec, cmd, "session lost while the command was in flight");
    return;
  }
  fq_vcp_outcome_t o;
  fq_err_t e;
  int rc = fq_vcp_open_reply(s, &dev->vreq, d->rm, r->rm_len, d->now, NULL, &o, &e);
  note_rc(d, sess_save(d, dev->vin, dev->domain, s));
  if (o.fault >= 0) rec->fault = o.fault;
  if (rc && o.action != FQ_VCP_UNKNOWN) o.action = FQ_VCP_UNKNOWN;
  switch (o.action) {
    case FQ_VCP_OK:
      finish(d, dev, rec, FQ_ST_SUCCEEDED, "", 0);
      return;
    case FQ_VCP_RETRY:
      retry_later(d, dev, rec, d->o.retry_backoff_ms, o.reason);
      return;
    case FQ_VCP_RESYNC_RETRY:
      if (o.fault == FQ_VCP_FAULT_REPEATED_COUNTER && !(cmd && cmd->idempotent)) {
        /* A repeated counter may answer a copy of a command the car already
         * ran: Tesla's client does not retry it, and neither do we. */
        unknown_outcome(d, dev, rec, cmd, "vehicle saw a repeated counter");
        return;
      }
      if (dev->resync_used) {
        char reason[FQ_REASON_MAX];
        snprintf(reason, sizeof reason, "%.300s (again after a session resync)", o.reason);
        finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EFAULT);
        return;
      }
      dev->resync_used = 1;
      move(d, rec, FQ_ST_RETRYING, o.reason, 0);
      send_cmd(d, dev, rec);
      return;
    case FQ_VCP_FAIL:
      if (o.error == FQ_ENOTPAIRED) {
        fail_pairing(d, dev, rec);
        return;
      }
      if (o.car_refused) {
        /* The same table and words as a REST result:false (fleetapi.c). */
        if (fq_cmd_refusal(rec->command, o.car_reason) == FQ_REFUSAL_DONE) {
          finish(d, dev, rec, FQ_ST_SUCCEEDED, o.car_reason, 0);
          return;
        }
        char reason[FQ_REASON_MAX];
        fq_cmd_refusal_reason(reason, sizeof reason, o.car_reason);
        finish(d, dev, rec, FQ_ST_FAILED, reason, FQ_EFAULT);
        return;
      }
      finish(d, dev, rec, FQ_ST_FAILED, o.reason, o.error ? o.error : FQ_EFAULT);
      return;
    case FQ_VCP_UNKNOWN:
      unknown_outcome(d, dev, rec, cmd, rc ? e.msg : o.reason);
      return;
  }
}

static void on_handshake_reply(fq_dispatch_t *d, dev_t_ *dev, fq_cmdrec_t *rec,
                               const fq_fa_result_t *r) {
  fq_vcp_session_t *s = NULL;
  fq_vcp_outcome_t o;
  fq_err_t e;
  int rc = fq_vcp_handshake_finish(d->o.key, dev->vin, &dev->vreq, d->rm, r->rm_len, d->now, &s,
                                   &o, &e);
  if (rc == 0) {
    sess_put(d, dev->vin, dev->domain, s);
    note_rc(d, sess_save(d, dev->vin, dev->domain, s));
    send_cmd(d, dev, rec);
    return;
  }
  if (o.fault >= 0) rec->fault = o.fault;
  if (o.error == FQ_ENOTPAIRED || rc == FQ_ENOTPAIRED) {
    fail_pairing(d, dev, rec);
    return;
  }
  /* A handshake has no side effect on the car: anything but a definite
   * refusal is worth another try within the deadline. */
  if (o.action == FQ_VCP_FAIL) {
    finish(d, dev, rec, FQ_ST_FAILED, o.reason[0] ? o.reason : e.msg, o.error ? o.error : rc);
    return;
  }
  retry_later(d, dev, rec, d->o.retry_backoff_ms, o.reason[0] ? o.reason : e.msg);
}

/* Act on an answer to dev's request (dev already touched). */
static void act_on_answer(fq_dispatch_t *d, dev_t_ *dev, const fq_http_resp_t *resp) {
  dev->http_id = 0;
  if (!dev->cur) return;
  fq_cmdrec_t rec;
  if (load(d, dev->cur, &rec) != 0) {
    note_rc(d, FQ_ESTORAGE);
    return;
  }
  if (fq_state_terminal(rec.state)) { /* settled meanwhile */
    dev->cur = 0;
    dev->phase = PH_IDLE;
    fq_dispatch_kick(d, dev->name);
    fq_cmdrec_free(&rec);
    return;
  }
  const fq_cmd_t *cmd = cmd_of(dev, &rec);
  acct_t *a = acct_get(d, rec.account);
  fq_fa_result_t r;
  if (resp->outcome == FQ_HTTP_NOT_SENT && resp->curl_code == CURLE_PEER_FAILED_VERIFICATION) {
    /* A refused certificate does not get better by retrying: say what to
     * fix instead of waiting for the deadline.  A certificate for other
     * names is not a trust problem, and --ca-file cannot fix it. */
    char reason[FQ_REASON_MAX];
    if (resp->tls == FQ_HTTP_TLS_NAME_MISMATCH)
      snprintf(reason, sizeof reason,
               "TLS: the Fleet API host's certificate is trusted but not issued for the host "
               "the account's base URL names (%.200s); nothing was sent. Use a base URL with a "
               "host name the certificate names",
               resp->err.msg);
    else
      snprintf(reason, sizeof reason,
               "TLS: the Fleet API host's certificate is not trusted (%.200s); nothing was "
               "sent. %s",
               resp->err.msg,
               d->o.ca_file ? "The CA given with --ca-file does not vouch for it either"
                            : "If it is a test simulator, give its CA with --ca-file");
    finish(d, dev, &rec, FQ_ST_FAILED, reason, FQ_EHTTP);
    fq_cmdrec_free(&rec);
    return;
  }
  if (resp->outcome != FQ_HTTP_COMPLETE) {
    fq_fa_classify_transport(resp->outcome, resp->err.msg, &r);
    /* A failed wake-up poll or handshake had no effect on the car. */
    if (r.cls == FQ_FA_UNKNOWN && (dev->phase == PH_WAKE_POLL || dev->phase == PH_WAKE ||
                                   dev->phase == PH_HANDSHAKE))
      r.cls = FQ_FA_TRANSIENT;
  } else {
    acct_pace(d, rec.account, resp);
    fq_fa_input_t in = {.status = resp->status,
                        .body = resp->body,
                        .body_len = resp->body_len,
                        .retry_after = resp->retry_after,
                        .alt_svc = resp->alt_svc,
                        .ratelimit_reset = resp->ratelimit_reset,
                        .endpoint = dev->ep,
                        .command = rec.command,
                        .scope_name = cmd ? scope_label(cmd) : NULL,
                        .client_id = a ? a->a.client_id : NULL,
                        .extra_host = d->o.allow_host,
                        .now_unix_ms = d->now,
                        .rm_buf = d->rm,
                        .rm_cap = sizeof d->rm};
    fq_fa_classify(&in, &r);
    if (r.cls == FQ_FA_UNKNOWN && (dev->phase == PH_WAKE_POLL || dev->phase == PH_WAKE ||
                                   dev->phase == PH_HANDSHAKE))
      r.cls = FQ_FA_TRANSIENT;
  }
  rec.http = (int)resp->status;
  int phase = dev->phase;
  if (r.cls != FQ_FA_SUCCESS) {
    on_class(d, dev, &rec, cmd, &r);
  } else if (phase == PH_HANDSHAKE) {
    on_handshake_reply(d, dev, &rec, &r);
  } else if (phase == PH_WAKE) {
    schedule_wake_poll(d, dev, &rec);
  } else if (phase == PH_WAKE_POLL) {
    if (strcmp(r.vehicle_state, "online") == 0 && cmd && cmd->wake) {
      /* The user's own wake_up: online is what it asked for; sending it
       * again would bill one more. */
      finish(d, dev, &rec, FQ_ST_SUCCEEDED, "", 0);
    } else if (strcmp(r.vehicle_state, "online") == 0) {
      /* The wake timer keeps running: a 408 that follows does not get a
       * fresh wake_timeout_ms. */
      dev->woke = true;
      send_cmd(d, dev, &rec);
    } else {
      /* As Tesla's client: another wake_up one poll interval after the
       * last, until --wake-max of them. */
      char why[128];
      snprintf(why, sizeof why, "vehicle still %s %" PRId64 " ms after a wake_up",
               r.vehicle_state[0] ? r.vehicle_state : "not online", d->o.wake_poll_ms);
      wake(d, dev, &rec, why);
    }
  } else if (dev->ep == FQ_FA_EP_SIGNED) {
    on_signed_reply(d, dev, &rec, cmd, &r);
  } else if (dev->ep == FQ_FA_EP_WAKE) {
    /* The user's own wake_up command: done once the car is online. */
    if (strcmp(r.vehicle_state, "online") == 0) {
      finish(d, dev, &rec, FQ_ST_SUCCEEDED, "", 0);
    } else {
      if (!dev->wake_started) dev->wake_started = d->now;
      if (rec.state != FQ_ST_WAKING) move(d, &rec, FQ_ST_WAKING, "vehicle is waking up", 0);
      schedule_wake_poll(d, dev, &rec);
    }
  } else {
    finish(d, dev, &rec, FQ_ST_SUCCEEDED, r.has_result ? r.car_reason : "", 0);
  }
  fq_cmdrec_free(&rec);
}

/* Every answer is kept (see kept_t): acted on now when the open
 * transaction can take it, else left for a later step. */
static void http_cb(void *ud, const fq_http_resp_t *resp) {
  dev_t_ *dev = ud;
  fq_dispatch_t *d = dev->owner;
  /* Counted here, once per request: a kept answer may be acted on twice. */
  fq_metrics_fleet_api(dev->method == FQ_HTTP_GET       ? FQ_MK_VEHICLE
                       : dev->ep == FQ_FA_EP_SIGNED     ? FQ_MK_SIGNED_COMMAND
                       : dev->ep == FQ_FA_EP_WAKE       ? FQ_MK_WAKE_UP
                       : dev->ep == FQ_FA_EP_ENERGY     ? FQ_MK_ENERGY
                                                        : FQ_MK_COMMAND,
                       resp->outcome == FQ_HTTP_COMPLETE ? resp->status : 0, dev->account);
  /* Billed answers (below 500) count in the tenant's daily budget; the
   * wake_up POSTs apart, in its wakes (budget.h). */
  fq_budget_count(dev->tenant, dev->account,
                  resp->outcome == FQ_HTTP_COMPLETE ? resp->status : 0,
                  dev->method == FQ_HTTP_POST && dev->ep == FQ_FA_EP_WAKE, fq_now_ms());
  if (resp->elapsed_us > 0) fq_metrics_dispatch_request_us(resp->elapsed_us);
  bool act = !d->collecting && d->in_txn && !d->step_rc && touch(d, dev) && spend(d);
  kept_t *k = keep(d, dev, resp, !act);
  if (act) {
    d->answer_ns = k ? k->at_ns : fq_mono_ns();
    act_on_answer(d, dev, resp);
    d->answer_ns = 0;
  } else if (!k) {
    /* Not reached: perform runs only with a slot for every transfer. */
    fq_error("dispatch", "device %s: an answer could not be kept", dev->name);
  }
}

/* --- timers --------------------------------------------------------------- */

static void on_timer(fq_dispatch_t *d, dev_t_ *dev) {
  if (!touch(d, dev)) {
    heap_push(d, dev->timer_at, dev); /* fires again in a later step */
    return;
  }
  int resume = dev->resume;
  dev->resume = R_NONE;
  dev->timer_at = 0;
  if (resume == R_KICK) {
    dev->phase = PH_IDLE;
    fq_dispatch_kick(d, dev->name);
    return;
  }
  if (!dev->cur) {
    dev->phase = PH_IDLE;
    fq_dispatch_kick(d, dev->name);
    return;
  }
  fq_cmdrec_t rec;
  if (load(d, dev->cur, &rec) != 0) {
    note_rc(d, FQ_ESTORAGE);
    return;
  }
  if (fq_state_terminal(rec.state)) {
    dev->cur = 0;
    dev->phase = PH_IDLE;
    fq_dispatch_kick(d, dev->name);
  } else if ((resume == R_SEND || resume == R_WAKE_POLL) && acct_parked(d, rec.account)) {
    /* Another device of the account met a 429 meanwhile: wait with it. */
    set_timer(d, dev, acct_parked(d, rec.account), resume);
  } else if (resume == R_SEND) {
    dev->phase = PH_IDLE;
    send_cmd(d, dev, &rec);
  } else if (resume == R_WAKE_POLL) {
    wake_poll(d, dev, &rec);
  } else if (resume == R_TOKEN_TIMEOUT) {
    dev->phase = PH_IDLE;
    finish(d, dev, &rec, FQ_ST_FAILED,
           "access token refused (401) and no refreshed token arrived within 30 s", FQ_EAUTH);
  } else if (resume == R_LAUNCH) {
    if (dev->launch_error) {
      finish(d, dev, &rec, FQ_ST_FAILED, dev->launch_msg, dev->launch_error);
    } else {
      dev->phase = PH_SEND;
      if (!dev->launch_pending) {
        dev->launch_pending = true;
        dev->launch_next = d->launch_head;
        d->launch_head = dev;
      }
    }
  }
  fq_cmdrec_free(&rec);
}

/* --- the default transport: fq_http ----------------------------------------- */

static int http_tr_request(void *ud, const fq_http_req_t *req, fq_http_cb cb, void *cb_ud,
                           uint64_t *id, fq_err_t *err) {
  return fq_http_request(ud, req, cb, cb_ud, id, err);
}

static int http_tr_perform(void *ud, const zmq_pollitem_t *items, int n, fq_err_t *err) {
  return fq_http_perform(ud, items, n, err);
}

static unsigned http_tr_inflight(void *ud) { return fq_http_inflight(ud); }

/* --- public ----------------------------------------------------------------- */

static void precheck_kick(void *owner, const char *device);

fq_dispatch_t *fq_dispatch_new(const fq_dispatch_opts_t *opts, const fq_dispatch_env_t *env,
                               fq_err_t *err) {
  fq_dispatch_t *d = calloc(1, sizeof *d);
  if (!d) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  d->o = *opts;
  d->env = *env;
  if (!d->o.wake_poll_ms) d->o.wake_poll_ms = 10000;
  if (!d->o.retry_backoff_ms) d->o.retry_backoff_ms = 1000;
  if (!d->o.http_timeout_ms) d->o.http_timeout_ms = 10000;
  if (!d->o.wake_timeout_ms) d->o.wake_timeout_ms = 120000;
  if (d->o.wake_max <= 0) d->o.wake_max = 3;
  d->budget = SIZE_MAX;
  if (!d->o.pairing_domain) d->o.pairing_domain = "fleetq.example.com";
  fq_hmap_init(&d->devs, sizeof(dev_t_ *), 50);
  fq_hmap_init(&d->sess, sizeof(sess_t *), 50);
  fq_hmap_init(&d->accts, sizeof(acct_t *), 50);
  fq_buf_init(&d->scratch, 64 * 1024);
  fq_http_opts_t ho = {.ca_file = opts->ca_file,
                       .total_timeout_ms = d->o.http_timeout_ms,
                       .max_body = 1 << 20,
                       .max_inflight = 4096};
  if (!opts->transport && !(d->http = fq_http_new(&ho, err))) goto fail;
  d->tr = opts->transport ? *opts->transport
                          : (fq_dispatch_transport_t){.ud = d->http,
                                                      .request = http_tr_request,
                                                      .perform = http_tr_perform,
                                                      .inflight = http_tr_inflight};
  if (opts->device_rate > 0) {
    fq_rl_opts_t ro = {.rate = opts->device_rate,
                       .burst = opts->device_burst >= 1 ? opts->device_burst : 1,
                       .capacity = 65536};
    if (!(d->rl_dev = fq_rl_new(&ro, err))) goto fail;
  } else {
    /* No limit configured: still needed to park devices after a 429. */
    fq_rl_opts_t ro = {.rate = 1e9, .burst = 1e9, .capacity = 65536};
    if (!(d->rl_dev = fq_rl_new(&ro, err))) goto fail;
  }
  d->arl = opts->account_rl;
  if (!d->arl) {
    /* No shared tables (a lone dispatcher): park this shard's accounts. */
    fq_rl_opts_t ro = {.rate = 1e9, .burst = 1e9, .capacity = 65536};
    if (!(d->own_arl.park = fq_rl_new(&ro, err))) goto fail;
    int rc = pthread_mutex_init(&d->own_arl.mu, NULL);
    if (rc) {
      fq_errf(err, FQ_EINTERNAL, "cannot create a mutex: %s", fq_strerror(-rc));
      goto fail;
    }
    d->own_arl_mu = true;
    d->arl = &d->own_arl;
  }
  if (opts->auth_refresh_ep && opts->zmq_ctx) {
    int linger = 0;
    d->auth_push = zmq_socket(opts->zmq_ctx, ZMQ_PUSH);
    if (!d->auth_push || zmq_setsockopt(d->auth_push, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(d->auth_push, opts->auth_refresh_ep) != 0) {
      fq_errf(err, FQ_EINTERNAL, "cannot connect to the auth thread (%s): %s",
              opts->auth_refresh_ep, zmq_strerror(zmq_errno()));
      goto fail;
    }
  }
  if (opts->fleet_status_ttl_ms > 0 &&
      !(d->pc = fq_precheck_new(opts->fleet_status_ttl_ms, precheck_kick, d))) {
    fq_errf(err, -ENOMEM, "out of memory");
    goto fail;
  }
  d->seen_gen = fq_auth_generation(d->o.auth);
  return d;
fail:
  fq_dispatch_destroy(&d);
  return NULL;
}

void fq_dispatch_destroy(fq_dispatch_t **dp) {
  if (!dp || !*dp) return;
  fq_dispatch_t *d = *dp;
  fq_http_destroy(&d->http); /* aborts transfers; their callbacks do not fire */
  fq_precheck_destroy(&d->pc);
  fq_rl_destroy(&d->rl_dev);
  fq_rl_destroy(&d->own_arl.park);
  if (d->own_arl_mu) pthread_mutex_destroy(&d->own_arl.mu);
  if (d->auth_push) zmq_close(d->auth_push);
  size_t pos = 0;
  for (dev_t_ **x; (x = fq_hmap_each(&d->devs, &pos));) {
    fq_buf_free(&(*x)->body);
    free(*x);
  }
  fq_hmap_free(&d->devs);
  sess_free_all(d);
  fq_hmap_free(&d->sess);
  pos = 0;
  for (acct_t **x; (x = fq_hmap_each(&d->accts, &pos));) {
    fq_account_wipe(&(*x)->a);
    free(*x);
  }
  fq_hmap_free(&d->accts);
  fq_heap_free(&d->timers);
  free(d->kicks);
  free(d->snaps);
  free(d->settled);
  for (size_t i = 0; i < d->akept; i++) fq_buf_free(&d->kept[i].body);
  free(d->kept);
  fq_buf_free(&d->scratch);
  free(d);
  *dp = NULL;
}

typedef struct kick_all_ctx {
  fq_dispatch_t *d;
  char last[FQ_DEVICE_MAX];
} kick_all_ctx_t;

static int kick_visit(void *ud, const char *id, const char *device, int64_t deadline) {
  kick_all_ctx_t *c = ud;
  (void)id;
  (void)deadline;
  if (strcmp(c->last, device) != 0) {
    fq_dispatch_kick(c->d, device);
    snprintf(c->last, sizeof c->last, "%s", device);
  }
  return 0;
}

void fq_dispatch_kick_all(fq_dispatch_t *d) {
  kick_all_ctx_t c = {.d = d};
  fq_err_t e;
  fq_store_active_scan(d->env.store, kick_visit, &c, &e);
}

int fq_dispatch_pollitems(fq_dispatch_t *d, zmq_pollitem_t *items, int max) {
  if (!d->http) return 0;
  int n = fq_http_fds(d->http, items, max);
  return n > max ? max : n;
}

long fq_dispatch_timeout_ms(fq_dispatch_t *d, int64_t now_ms) {
  long t = d->http ? fq_http_timeout_ms(d->http) : -1;
  if (d->nkicks || d->launch_head || kept_pending(d)) return 0;
  const fq_heap_ent_t *timer = live_timer(d);
  if (timer) {
    int64_t w = timer->key - now_ms;
    if (w < 0) w = 0;
    if (t < 0 || w < t) t = (long)w;
  }
  if (d->hold_head && (t < 0 || t > 100)) t = 100; /* watch the auth generation */
  return t;
}

bool fq_dispatch_pending(fq_dispatch_t *d, int64_t now_ms) {
  if (d->nkicks || kept_pending(d)) return true;
  if (d->tr.inflight(d->tr.ud)) return true;
  const fq_heap_ent_t *timer = live_timer(d);
  if (timer && timer->key <= now_ms) return true;
  if (d->hold_head && fq_auth_generation(d->o.auth) != d->seen_gen) return true;
  return false;
}

int fq_dispatch_step(fq_dispatch_t *d, const zmq_pollitem_t *items, int n, int64_t now_ms,
                     fq_err_t *err) {
  d->now = now_ms;
  d->err = err;
  d->step_rc = 0;
  if (txn_begin(d) != 0) return fq_errf(err, -ENOMEM, "out of memory for dispatch snapshots");
  /* First the answers an aborted transaction acted on, or a step left for
   * later, in the order they came. */
  for (size_t i = 0; i < d->nkept && !d->step_rc; i++) {
    kept_t *k = &d->kept[i];
    if (!k->pending) continue;
    if (!touch(d, k->dev) || !spend(d)) break;
    k->pending = false;
    k->r.body = k->body.data;
    d->answer_ns = k->at_ns;
    act_on_answer(d, k->dev, &k->r);
    d->answer_ns = 0;
  }
  fq_err_t he;
  /* Without room to keep every answer, the transfers wait in the client. */
  if (kept_reserve(d) == 0) d->tr.perform(d->tr.ud, items, n, &he);
  /* Token refreshes release held devices. */
  uint64_t gen = fq_auth_generation(d->o.auth);
  if (gen != d->seen_gen && !d->step_rc) {
    d->seen_gen = gen;
    dev_t_ *x = d->hold_head;
    d->hold_head = NULL;
    while (x) {
      dev_t_ *next = x->hold_next;
      x->in_hold = false;
      x->hold_next = NULL;
      if (!touch(d, x)) {
        hold(d, x); /* the step fails; the rollback keeps the generation */
      } else if (x->phase == PH_HOLD && x->cur) {
        /* Waiting for a refreshed token: go on once this account's record
         * changed; another account's change leaves it waiting (its token
         * timeout still armed). */
        fq_cmdrec_t rec;
        if (load(d, x->cur, &rec) == 0) {
          acct_t *a = acct_get(d, rec.account);
          char fail[384];
          if (fq_state_terminal(rec.state)) {
            x->cur = 0;
            x->phase = PH_IDLE;
            fq_dispatch_kick(d, x->name);
          } else if (a && fq_auth_refresh_failure(d->o.auth, rec.account, fail, sizeof fail)) {
            x->timer_at = 0;
            finish(d, x, &rec, FQ_ST_FAILED, fail, FQ_EAUTH);
          } else if (!a || a->a.updated_at_ms != x->token_stamp) {
            x->timer_at = 0;
            x->resume = R_NONE;
            x->phase = PH_IDLE;
            if (!a)
              finish(d, x, &rec, FQ_ST_FAILED, "account was removed", FQ_ECONFIG);
            else
              send_cmd(d, x, &rec);
          } else {
            hold(d, x);
          }
          fq_cmdrec_free(&rec);
        }
      }
      x = next;
    }
  }
  const fq_heap_ent_t *top;
  while (!d->step_rc && (top = fq_heap_top(&d->timers)) && top->key <= now_ms) {
    dev_t_ *dev = top->v.p;
    if (dev->timer_at != top->key || (dev->phase == PH_HOLD && dev->resume == R_NONE)) {
      fq_heap_pop(&d->timers);
      continue;
    }
    if (!spend(d)) break;
    fq_heap_pop(&d->timers);
    on_timer(d, dev);
  }
  /* Kicks may add kicks (a finished command kicks its device).  Once the
   * step has failed, or its budget is spent, the rest wait for the next. */
  size_t i = 0;
  for (; i < d->nkicks && !d->step_rc; i++) {
    dev_t_ *x = d->kicks[i];
    if (!x->cur && !d->draining && !spend(d)) break;
    x->kick_pending = false;
    start_next(d, x);
  }
  if (i < d->nkicks) memmove(d->kicks, d->kicks + i, (d->nkicks - i) * sizeof *d->kicks);
  d->nkicks -= i;
  return d->step_rc;
}

/* --- the fleet_status pre-check's requests (precheck.h) ---------------------- */

static void precheck_kick(void *owner, const char *device) { fq_dispatch_kick(owner, device); }

/* A fleet_status answer: read outside the command state machine (it
 * changes no command and nothing in the store); the devices that waited
 * are kicked and look again in the next step. */
static void precheck_cb(void *ud, const fq_http_resp_t *resp) {
  fq_precheck_batch_t *b = ud;
  fq_dispatch_t *d = fq_precheck_owner(b);
  int64_t now = d->now;
  const char *account = fq_precheck_account(b);
  fq_metrics_fleet_api(FQ_MK_FLEET_STATUS,
                       resp->outcome == FQ_HTTP_COMPLETE ? resp->status : 0, account);
  if (resp->outcome == FQ_HTTP_COMPLETE) {
    /* Billed like any answer below 500: it counts against the account's
     * budget, so its RateLimit headers and a 429 park the account as a
     * command's would. */
    acct_pace(d, account, resp);
    if (resp->status == 429) {
      int64_t wait = fq_rl_retry_after_ms(resp->retry_after, now, FQ_FA_RETRY_AFTER_MAX_MS);
      acct_park(d, account, now + (wait > 0 ? wait : d->o.retry_backoff_ms));
    }
  }
  fq_precheck_answer(d->pc, b, resp, now, acct_parked(d, account));
}

static void precheck_launch(fq_dispatch_t *d, int64_t now_ms) {
  const char *account;
  const void *body;
  size_t len;
  fq_precheck_batch_t *b;
  while ((b = fq_precheck_next(d->pc, now_ms, &account, &body, &len))) {
    acct_t *a = acct_get(d, account);
    if (!a) {
      fq_precheck_not_sent(d->pc, b, now_ms, "account not readable");
      continue;
    }
    char url[URL_MAX];
    const char *base = acct_base(a);
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    if (snprintf(url, sizeof url, "%.*s/api/1/vehicles/fleet_status", (int)bl, base) >=
        (int)sizeof url) {
      fq_precheck_not_sent(d->pc, b, now_ms, "request URL too long");
      continue;
    }
    fq_http_req_t req = {.method = FQ_HTTP_POST,
                         .url = url,
                         .bearer = a->a.access_token,
                         .body = body,
                         .body_len = len};
    uint64_t id;
    fq_err_t e;
    if (d->tr.request(d->tr.ud, &req, precheck_cb, b, &id, &e) != 0)
      fq_precheck_not_sent(d->pc, b, now_ms, e.msg);
  }
}

void fq_dispatch_launch(fq_dispatch_t *d, int64_t now_ms) {
  if (d->in_txn) {
    /* The transaction is committed: its answers are recorded, and the
     * work budget a failure halved grows back. */
    d->in_txn = false;
    if (d->budget != SIZE_MAX) d->budget = d->budget >= BUDGET_FREE ? SIZE_MAX : d->budget * 2;
    if (d->nsettled) {
      int64_t t = fq_mono_ns();
      for (size_t i = 0; i < d->nsettled; i++)
        fq_metrics_dispatch_settle_wait_us((t - d->settled[i]) / 1000);
    }
  }
  d->nsettled = 0;
  dev_t_ *x = d->launch_head;
  d->launch_head = NULL;
  while (x) {
    dev_t_ *next = x->launch_next;
    x->launch_pending = false;
    x->launch_next = NULL;
    if (!x->cur) { /* given back to the queue after it was prepared (stopping) */
      x = next;
      continue;
    }
    acct_t *a = acct_get(d, x->account);
    fq_http_req_t req = {.method = x->method,
                         .url = x->url,
                         .bearer = a ? a->a.access_token : NULL,
                         .body = x->method == FQ_HTTP_POST ? x->body.data : NULL,
                         .body_len = x->method == FQ_HTTP_POST ? x->body.len : 0};
    if (x->method == FQ_HTTP_POST && x->body.len == 0) {
      req.body = "{}";
      req.body_len = 2;
    }
    fq_err_t e;
    int rc = d->tr.request(d->tr.ud, &req, http_cb, x, &x->http_id, &e);
    if (rc == 0 && !x->first_sent) {
      x->first_sent = true;
      if (x->cur_created > 0) fq_metrics_dispatch_send_wait_us((now_ms - x->cur_created) * 1000);
    }
    if (rc != 0) {
      /* Not sent: try again shortly, or fail the command next step. */
      if (rc != FQ_EBUSY && rc != -ENOMEM) {
        x->launch_error = rc;
        snprintf(x->launch_msg, sizeof x->launch_msg, "cannot send the request: %.200s", e.msg);
      }
      set_timer(d, x, now_ms + (rc == FQ_EBUSY ? 20 : 0), R_LAUNCH);
    }
    x = next;
  }
  if (d->pc && !d->draining) precheck_launch(d, now_ms);
}

void fq_dispatch_rollback(fq_dispatch_t *d) {
  /* The transaction is gone: the requests it prepared never leave, every
   * device it touched is as it was before (a request that was out is out
   * again, waiting for its kept answer), every answer it acted on is due
   * again, and every session object is dropped (it may hold counters that
   * were never stored; the store's reservation covers the ones used). */
  dev_t_ *x = d->launch_head;
  d->launch_head = NULL;
  while (x) {
    dev_t_ *next = x->launch_next;
    x->launch_pending = false;
    x->launch_next = NULL;
    x = next;
  }
  for (size_t i = 0; i < d->nsnaps; i++) restore(d, &d->snaps[i]);
  d->nsnaps = 0;
  for (size_t i = 0; i < d->nkept; i++) d->kept[i].pending = true;
  if (d->in_txn) {
    d->seen_gen = d->gen_at_begin;
    d->st = d->st_at_begin;
    /* Maybe the step's changes did not fit: do half as much next time
     * (a failure that the step's own work did not cause costs a few
     * batches of slower dispatch while the budget grows back). */
    if (d->work >= 2) d->budget = d->work / 2;
  }
  d->in_txn = false;
  d->rolled_back = true;
  d->nsettled = 0; /* their answers are acted on again */
  sess_free_all(d);
}

void fq_dispatch_collect(fq_dispatch_t *d, const zmq_pollitem_t *items, int n) {
  fq_err_t he;
  if (kept_reserve(d) != 0) return;
  d->collecting = true;
  d->tr.perform(d->tr.ud, items, n, &he);
  d->collecting = false;
}

int fq_dispatch_drain(fq_dispatch_t *d, int64_t now_ms, bool final, fq_err_t *err) {
  d->now = now_ms;
  d->err = err;
  d->step_rc = 0;
  if (txn_begin(d) != 0) return fq_errf(err, -ENOMEM, "out of memory for dispatch snapshots");
  d->draining = true;
  unsigned left = 0;
  size_t pos = 0;
  for (dev_t_ **x; (x = fq_hmap_each(&d->devs, &pos));) {
    dev_t_ *dev = *x;
    if (!dev->cur) continue;
    /* The command's own request is out: its answer is its real outcome,
     * worth waiting for until the drain ends. */
    bool out = dev->phase == PH_SEND && dev->http_id != 0;
    if (out && !final) {
      left++;
      continue;
    }
    if (!touch(d, dev)) break;
    fq_cmdrec_t rec;
    if (load(d, dev->cur, &rec) != 0) {
      note_rc(d, d->err->code ? d->err->code : FQ_ESTORAGE);
      break;
    }
    const fq_cmd_t *cmd = cmd_of(dev, &rec);
    if (fq_state_terminal(rec.state)) {
      dev->cur = 0;
      dev->phase = PH_IDLE;
    } else if (out && !(cmd && cmd->idempotent)) {
      /* It may have reached the car and no answer came: only the car
       * knows.  An idempotent one is simply sent again after the
       * restart. */
      finish(d, dev, &rec, FQ_ST_UNKNOWN,
             "fleetqd stopped while the request was in flight and no answer came within "
             "--drain-timeout-ms: the command may have been executed; check the device "
             "before sending it again",
             FQ_EINTERNAL);
    } else if (!out && d->now >= rec.deadline) {
      expire(d, dev, &rec, "fleetqd was stopping");
    } else {
      /* Waiting (timer, wake-up, handshake, token refresh) or, at the
       * end of the drain, an idempotent command still in flight. */
      requeue(d, dev, &rec);
    }
    fq_cmdrec_free(&rec);
  }
  d->drain_left = left;
  return d->step_rc;
}

bool fq_dispatch_drained(const fq_dispatch_t *d) { return d->draining && d->drain_left == 0; }

void fq_dispatch_stats(const fq_dispatch_t *d, fq_dispatch_stats_t *st) {
  *st = d->st;
  st->inflight = d->tr.inflight(d->tr.ud);
}
