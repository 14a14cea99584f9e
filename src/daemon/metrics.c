/*
 * fleetqd's metrics: process-wide atomic counters that the daemon's
 * threads bump, and the libmicrohttpd server that renders them for
 * Prometheus.  See metrics.h for the thread rules and docs/operations.md
 * ("Metrics") for what each metric means.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "budget.h"
#include "fleetq/wire.h"
#include "log.h"
#include "util.h"

typedef _Atomic uint64_t counter_t;

#define ADD(c, n) atomic_fetch_add_explicit(&(c), (uint64_t)(n), memory_order_relaxed)
#define GET(c) atomic_load_explicit(&(c), memory_order_relaxed)
#define SET(c, v) atomic_store_explicit(&(c), (uint64_t)(v), memory_order_relaxed)

/* --- storage --------------------------------------------------------------------- */

/* Submits: [0] accepted, [1] duplicate, then one slot per project error
 * code (code - FQ_ERROR_BASE_ + 1); any other code counts as internal. */
#define NERR (FQ_ERROR_END_ - FQ_ERROR_BASE_)
#define SUBMIT_SLOTS (2 + NERR)

/* A histogram over integer observations in `unit` parts of a second:
 * per-bucket counts (not cumulative: one increment per observation), the
 * last one for values above every bound. */
#define HIST_MAX_BOUNDS 16
typedef struct hist {
  const char *name, *help;
  uint64_t unit;                  /* observations per second: 1e6 = microseconds */
  uint64_t bounds[HIST_MAX_BOUNDS];
  int nb;
  counter_t b[HIST_MAX_BOUNDS + 1];
  counter_t sum;
} hist_t;

/* Billable requests per account: an open-addressing table that threads
 * insert into without a lock.  A slot is claimed by a compare-and-swap of
 * its hash from 0; the claimer writes the name and then sets `ready`
 * (release), so that a reader that sees ready (acquire) sees the name. */
#define BILL_KINDS 3 /* wake_up, command, data */
static const char *const bill_kind_name[BILL_KINDS] = {"wake_up", "command", "data"};
#define NAME_CAP 65 /* FQ_ACCOUNT_ID_MAX + 1, without pulling the account store in */
typedef struct bill_slot {
  _Atomic uint64_t hash;          /* 0 = free */
  _Atomic int ready;
  char name[NAME_CAP];
  counter_t n[BILL_KINDS];
} bill_slot_t;
#define PROBE_MAX 64

typedef struct shard_g {
  _Alignas(64) counter_t active, in_flight, used, map_size, scheduled;
  counter_t busy_ns; /* wall time spent in batches (fq_metrics_batch) */
  /* Cluster mode (docs/cluster.md): this node serves the shard (1/0), log
   * entries it appended as owner and applied as a follower, takeovers. */
  counter_t owned, appended, applied, takeovers;
} shard_g_t;

static atomic_bool cluster_on;

static struct {
  counter_t submits[SUBMIT_SLOTS];
  counter_t terminal[FQ_ST_COUNT_];
  counter_t fleet[FQ_MK_COUNT_][600]; /* [kind][HTTP status]; 0 = no answer */
  counter_t wakeups;
  counter_t refresh[FQ_MR_COUNT_];
  counter_t events;
  counter_t campaigns[5];     /* per campaign state, set by the ingress */
  counter_t campaign_cmds;
  shard_g_t shard[FQ_METRICS_MAX_SHARDS];
  bill_slot_t bill[FQ_METRICS_MAX_ACCOUNTS];
  bill_slot_t bill_other;
} M;

/* A histogram's initializer: the bounds once, their count from them (a
 * hand-kept count that disagrees with the list would drop buckets). */
#define HIST(name, help, unit, ...)                                                     \
  {(name), (help), (unit), {__VA_ARGS__},                                                \
   (int)(sizeof((uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t)), {0}, 0}

/* Ack: 100 us .. 10 s; a group commit is an fsync, so most land in the
 * low milliseconds.  Dispatch: 10 ms .. 1 h; a command may wait for a
 * wake-up (minutes) or a retry until its deadline. */
static hist_t H_ack = HIST("fleetq_ack_seconds",
                           "Time from a submit received by its shard to its ack sent (after the "
                           "commit), accepted submits only.",
                           1000000, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                           250000, 500000, 1000000, 2500000, 5000000, 10000000);
static hist_t H_disp = HIST("fleetq_dispatch_seconds",
                            "Time from a command's acceptance to its terminal state.", 1000, 10,
                            50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000,
                            300000, 600000, 1800000, 3600000);

/* Where a dispatched command's time goes (issue 17): accepted -> its
 * first request leaves (the commit that records it `sent` included),
 * the Fleet API round trip, and the answer's arrival -> its terminal
 * state committed (the shard busy with other work, then the commit).
 * Microseconds, 100 us .. 10 s like the ack. */
#define DISP_US_BOUNDS                                                                       \
  {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,    \
   2500000, 5000000, 10000000}
static hist_t H_dsend = {"fleetq_dispatch_send_wait_seconds",
                         "Time from a command's acceptance to its first request to Fleet API "
                         "leaving (after the commit recording it sent).",
                         1000000, DISP_US_BOUNDS, 16, {0}, 0};
static hist_t H_dapi = {"fleetq_dispatch_request_seconds",
                        "Time from a dispatch request to Fleet API leaving to its answer "
                        "(or transport failure) read by the shard.",
                        1000000, DISP_US_BOUNDS, 16, {0}, 0};
static hist_t H_dend = {"fleetq_dispatch_settle_wait_seconds",
                        "Time from the answer that ended a command to the commit recording "
                        "its terminal state.",
                        1000000, DISP_US_BOUNDS, 16, {0}, 0};

/* The shards' group commits (fq_metrics_batch): where an ack's time goes
 * under load.  A request waits in the shard's socket until the batch
 * before it is done, then its batch is processed and committed (fsync),
 * and only then acked; the batch size says how many requests shared one
 * commit, and the busy counter (per shard) how close the shard is to
 * having no idle time left, where the wait in its socket grows.  Both
 * wall times of a batch: 50 us .. 10 s, in microseconds. */
#define BATCH_US_BOUNDS                                                                 \
  50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, \
      2500000, 10000000
static hist_t H_bsize = HIST("fleetq_batch_requests",
                             "Requests (submits, gets, cancels...) handled by one group commit "
                             "of a shard.",
                             1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096);
static hist_t H_bproc = HIST("fleetq_batch_process_seconds",
                             "Wall time a shard spent applying a batch's requests in its write "
                             "transaction, before the commit.",
                             1000000, BATCH_US_BOUNDS);
static hist_t H_bcommit = HIST("fleetq_batch_commit_seconds",
                               "Wall time of a group commit: LMDB writing the batch's pages and "
                               "its meta page, each followed by fdatasync.",
                               1000000, BATCH_US_BOUNDS);

static const char *const kind_name[FQ_MK_COUNT_] = {
    "signed_command", "command", "wake_up", "vehicle", "energy", "token", "fleet_status"};
static const char *const refresh_name[FQ_MR_COUNT_] = {
    "ok", "unreachable", "lost", "unavailable", "unreadable", "rejected", "store_failed"};

static void hist_observe(hist_t *h, int64_t v) {
  if (v < 0) v = 0;
  int i = 0;
  while (i < h->nb && (uint64_t)v > h->bounds[i]) i++;
  ADD(h->b[i], 1);
  ADD(h->sum, v);
}

void fq_metrics_reset(void) {
  /* Only unit tests call this, with no other thread counting. */
  memset(&M, 0, sizeof M);
  hist_t *hs[] = {&H_ack, &H_disp, &H_bsize, &H_bproc, &H_bcommit, &H_dsend, &H_dapi, &H_dend};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
    for (int j = 0; j <= HIST_MAX_BOUNDS; j++) SET(hs[i]->b[j], 0);
    SET(hs[i]->sum, 0);
  }
}

/* --- updates ------------------------------------------------------------------- */

void fq_metrics_submit(int code) {
  size_t i;
  if (code == FQ_METRICS_ACCEPTED || code == FQ_METRICS_DUPLICATE)
    i = (size_t)code;
  else if (code > FQ_ERROR_BASE_ && code < FQ_ERROR_END_)
    i = (size_t)(2 + code - FQ_ERROR_BASE_ - 1);
  else
    i = (size_t)(2 + FQ_EINTERNAL - FQ_ERROR_BASE_ - 1);
  ADD(M.submits[i], 1);
}

void fq_metrics_campaigns(const uint64_t counts[5]) {
  for (int i = 0; i < 5; i++) SET(M.campaigns[i], counts[i]);
}

void fq_metrics_campaign_commands(uint64_t n) { ADD(M.campaign_cmds, n); }

void fq_metrics_ack_ns(int64_t ns) { hist_observe(&H_ack, ns / 1000); }

void fq_metrics_batch(unsigned shard, uint64_t requests, int64_t process_ns, int64_t commit_ns,
                      int64_t busy_ns) {
  if (requests) {
    hist_observe(&H_bsize, (int64_t)requests);
    hist_observe(&H_bproc, process_ns / 1000);
    hist_observe(&H_bcommit, commit_ns / 1000);
  }
  if (shard < FQ_METRICS_MAX_SHARDS && busy_ns > 0) ADD(M.shard[shard].busy_ns, busy_ns);
}

void fq_metrics_terminal(int state, int64_t age_ms) {
  if (state < 0 || state >= FQ_ST_COUNT_) return;
  ADD(M.terminal[state], 1);
  hist_observe(&H_disp, age_ms);
}

void fq_metrics_dispatch_send_wait_us(int64_t us) { hist_observe(&H_dsend, us); }
void fq_metrics_dispatch_request_us(int64_t us) { hist_observe(&H_dapi, us); }
void fq_metrics_dispatch_settle_wait_us(int64_t us) { hist_observe(&H_dend, us); }

void fq_metrics_shard_load(unsigned shard, uint64_t active, uint64_t in_flight) {
  if (shard >= FQ_METRICS_MAX_SHARDS) return;
  SET(M.shard[shard].active, active);
  SET(M.shard[shard].in_flight, in_flight);
}

void fq_metrics_shard_scheduled(unsigned shard, uint64_t scheduled) {
  if (shard >= FQ_METRICS_MAX_SHARDS) return;
  SET(M.shard[shard].scheduled, scheduled);
}

void fq_metrics_cluster_owned(unsigned shard, bool owned) {
  if (shard >= FQ_METRICS_MAX_SHARDS) return;
  atomic_store(&cluster_on, true);
  SET(M.shard[shard].owned, owned ? 1 : 0);
  if (owned) ADD(M.shard[shard].takeovers, 1);
}

void fq_metrics_cluster_log(unsigned shard, uint64_t appended, uint64_t applied) {
  if (shard >= FQ_METRICS_MAX_SHARDS) return;
  atomic_store(&cluster_on, true);
  if (appended) ADD(M.shard[shard].appended, appended);
  if (applied) ADD(M.shard[shard].applied, applied);
}

void fq_metrics_shard_store(unsigned shard, uint64_t used, uint64_t map_size) {
  if (shard >= FQ_METRICS_MAX_SHARDS) return;
  SET(M.shard[shard].used, used);
  SET(M.shard[shard].map_size, map_size);
}

/* The slot counting account, claimed on first use; the shared "_other"
 * slot when the table is full around its hash, or when a claimer has not
 * finished writing a name yet (never wait for another thread here). */
static bill_slot_t *bill_slot(const char *account) {
  size_t n = strnlen(account, NAME_CAP);
  if (n == 0 || n >= NAME_CAP) return &M.bill_other;
  uint64_t h = fq_hash64(account, n) | 1;
  for (size_t k = 0; k < PROBE_MAX; k++) {
    bill_slot_t *s = &M.bill[(h + k) & (FQ_METRICS_MAX_ACCOUNTS - 1)];
    uint64_t cur = atomic_load_explicit(&s->hash, memory_order_acquire);
    if (cur == 0) {
      uint64_t zero = 0;
      if (atomic_compare_exchange_strong_explicit(&s->hash, &zero, h, memory_order_acq_rel,
                                                  memory_order_acquire)) {
        memcpy(s->name, account, n + 1);
        atomic_store_explicit(&s->ready, 1, memory_order_release);
        return s;
      }
      cur = zero; /* someone else claimed it: see whose it is */
    }
    if (cur != h) continue;
    if (!atomic_load_explicit(&s->ready, memory_order_acquire)) return &M.bill_other;
    if (strcmp(s->name, account) == 0) return s;
  }
  return &M.bill_other;
}

void fq_metrics_fleet_api(fq_metrics_kind_t kind, long status, const char *account) {
  if ((unsigned)kind >= FQ_MK_COUNT_) return;
  long st = status >= 100 && status <= 599 ? status : 0;
  ADD(M.fleet[kind][st], 1);
  if (kind == FQ_MK_WAKE_UP) ADD(M.wakeups, 1);
  /* Tesla bills every answer below 500; the token endpoint is not Fleet
   * API and is not billed.  No answer (0) is not billed either. */
  if (kind == FQ_MK_TOKEN || st == 0 || st >= 500 || !account) return;
  int bk = kind == FQ_MK_WAKE_UP                                   ? 0
           : kind == FQ_MK_VEHICLE || kind == FQ_MK_FLEET_STATUS ? 2
                                                                  : 1;
  ADD(bill_slot(account)->n[bk], 1);
}

void fq_metrics_token_refresh(fq_metrics_refresh_t result) {
  if ((unsigned)result < FQ_MR_COUNT_) ADD(M.refresh[result], 1);
}

void fq_metrics_events(uint64_t n) { ADD(M.events, n); }

/* --- rendering ------------------------------------------------------------------ */

typedef struct sb {
  char *p;
  size_t len, cap;
  bool oom;
} sb_t;

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = true;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 > b->len + (size_t)n + 1 ? b->cap * 2 : b->len + (size_t)n + 1;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
}

/* A label value as the format wants it: backslash, double quote and
 * newline escaped.  Account ids are checked when added, but the metrics
 * do not rely on that. */
static void sb_label(sb_t *b, const char *v) {
  char out[2 * NAME_CAP + 1];
  size_t o = 0;
  for (const char *s = v; *s && o + 2 < sizeof out; s++) {
    if (*s == '\\' || *s == '"') {
      out[o++] = '\\';
      out[o++] = *s;
    } else if (*s == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else {
      out[o++] = *s;
    }
  }
  out[o] = 0;
  sb_printf(b, "%s", out);
}

static void head(sb_t *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A value in the unit's seconds, exactly enough digits to round-trip. */
static void sb_seconds(sb_t *b, uint64_t v, uint64_t unit) {
  sb_printf(b, "%.15g", (double)v / (double)unit);
}

static void render_hist(sb_t *b, hist_t *h) {
  head(b, h->name, "histogram", h->help);
  uint64_t cum = 0;
  for (int i = 0; i <= h->nb; i++) {
    cum += GET(h->b[i]);
    if (i < h->nb) {
      sb_printf(b, "%s_bucket{le=\"", h->name);
      sb_seconds(b, h->bounds[i], h->unit);
      sb_printf(b, "\"} %llu\n", (unsigned long long)cum);
    } else {
      sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", h->name, (unsigned long long)cum);
    }
  }
  /* The sum read after the buckets may hold an observation they missed:
   * a small skew the format allows (count and +Inf must agree, and do). */
  sb_printf(b, "%s_sum ", h->name);
  sb_seconds(b, GET(h->sum), h->unit);
  sb_printf(b, "\n%s_count %llu\n", h->name, (unsigned long long)cum);
}

static void render_submits(sb_t *b) {
  head(b, "fleetq_submits_total", "counter",
       "Submits answered, by result: accepted, duplicate (the original returned), or the "
       "error code of a refusal.");
  sb_printf(b, "fleetq_submits_total{result=\"accepted\"} %llu\n",
            (unsigned long long)GET(M.submits[0]));
  sb_printf(b, "fleetq_submits_total{result=\"duplicate\"} %llu\n",
            (unsigned long long)GET(M.submits[1]));
  /* Codes that are internal on the wire add up under "internal", the
   * name a client saw. */
  uint64_t by[NERR];
  memset(by, 0, sizeof by);
  for (int i = 0; i < NERR - 1; i++) {
    int code = FQ_ERROR_BASE_ + 1 + i;
    uint64_t v = GET(M.submits[2 + i]);
    if (!v) continue;
    int canon = fq_errcode(fq_wire_errname(code));
    if (canon <= FQ_ERROR_BASE_ || canon >= FQ_ERROR_END_) canon = FQ_EINTERNAL;
    by[canon - FQ_ERROR_BASE_ - 1] += v;
  }
  for (int i = 0; i < NERR - 1; i++)
    if (by[i])
      sb_printf(b, "fleetq_submits_total{result=\"%s\"} %llu\n",
                fq_wire_errname(FQ_ERROR_BASE_ + 1 + i), (unsigned long long)by[i]);
}

static void render_states(sb_t *b) {
  head(b, "fleetq_commands_total", "counter", "Commands that reached a terminal state, by state.");
  for (int s = 0; s < FQ_ST_COUNT_; s++)
    if (fq_state_terminal(s))
      sb_printf(b, "fleetq_commands_total{state=\"%s\"} %llu\n", fq_state_name(s),
                (unsigned long long)GET(M.terminal[s]));
}

static void render_shards(sb_t *b, unsigned nshards) {
  uint64_t act[FQ_METRICS_MAX_SHARDS], inf[FQ_METRICS_MAX_SHARDS];
  for (unsigned i = 0; i < nshards; i++) {
    act[i] = GET(M.shard[i].active);
    inf[i] = GET(M.shard[i].in_flight);
    if (inf[i] > act[i]) inf[i] = act[i]; /* read at two moments */
  }
  head(b, "fleetq_commands_queued", "gauge",
       "Commands accepted and not finished that have no Fleet API request out, per shard.");
  for (unsigned i = 0; i < nshards; i++)
    sb_printf(b, "fleetq_commands_queued{shard=\"%u\"} %llu\n", i,
              (unsigned long long)(act[i] - inf[i]));
  head(b, "fleetq_commands_in_flight", "gauge",
       "Commands with a Fleet API request out (at most one per device), per shard.");
  for (unsigned i = 0; i < nshards; i++)
    sb_printf(b, "fleetq_commands_in_flight{shard=\"%u\"} %llu\n", i, (unsigned long long)inf[i]);
  head(b, "fleetq_commands_scheduled", "gauge",
       "Commands waiting for their not_before, in no device queue yet, per shard.");
  for (unsigned i = 0; i < nshards; i++)
    sb_printf(b, "fleetq_commands_scheduled{shard=\"%u\"} %llu\n", i,
              (unsigned long long)GET(M.shard[i].scheduled));
  if (atomic_load(&cluster_on)) {
    static const struct {
      const char *name, *type, *help;
      size_t off; /* of the counter in shard_g_t */
    } cl[] = {
        {"fleetq_cluster_shard_owned", "gauge",
         "1 when this node owns and serves the shard (cluster mode), else 0.",
         offsetof(shard_g_t, owned)},
        {"fleetq_cluster_takeovers_total", "counter",
         "Times this node took the shard over (cluster mode).", offsetof(shard_g_t, takeovers)},
        {"fleetq_cluster_log_appended_total", "counter",
         "Entries this node appended to the shard's log as its owner (cluster mode).",
         offsetof(shard_g_t, appended)},
        {"fleetq_cluster_log_applied_total", "counter",
         "Entries of the shard's log this node applied as a follower (cluster mode).",
         offsetof(shard_g_t, applied)},
    };
    for (size_t m = 0; m < sizeof cl / sizeof cl[0]; m++) {
      head(b, cl[m].name, cl[m].type, cl[m].help);
      for (unsigned i = 0; i < nshards; i++) {
        counter_t *c = (counter_t *)((char *)&M.shard[i] + cl[m].off);
        sb_printf(b, "%s{shard=\"%u\"} %llu\n", cl[m].name, i, (unsigned long long)GET(*c));
      }
    }
  }
  static const char *const cstate[5] = {"receiving", "scheduled", "running", "done", "aborted"};
  head(b, "fleetq_campaigns", "gauge", "Campaigns known to fleetqd, per campaign state.");
  for (int i = 0; i < 5; i++)
    sb_printf(b, "fleetq_campaigns{state=\"%s\"} %llu\n", cstate[i],
              (unsigned long long)GET(M.campaigns[i]));
  head(b, "fleetq_campaign_device_commands_total", "counter",
       "Device commands campaigns created (each device once; a redone fan-out adds nothing).");
  sb_printf(b, "fleetq_campaign_device_commands_total %llu\n",
            (unsigned long long)GET(M.campaign_cmds));
  head(b, "fleetq_shard_busy_seconds_total", "counter",
       "Wall time the shard spent processing, committing and answering batches; its rate is "
       "the shard's utilization (near 1: requests queue in front of it).");
  for (unsigned i = 0; i < nshards; i++) {
    sb_printf(b, "fleetq_shard_busy_seconds_total{shard=\"%u\"} ", i);
    sb_seconds(b, GET(M.shard[i].busy_ns), 1000000000);
    sb_printf(b, "\n");
  }
  head(b, "fleetq_store_bytes", "gauge",
       "Bytes of live pages in the shard's LMDB store, as of its last batch.");
  for (unsigned i = 0; i < nshards; i++)
    sb_printf(b, "fleetq_store_bytes{shard=\"%u\"} %llu\n", i,
              (unsigned long long)GET(M.shard[i].used));
  head(b, "fleetq_store_map_used_ratio", "gauge",
       "Share of the shard's LMDB map in use (0..1); new commands are refused at 0.9.");
  for (unsigned i = 0; i < nshards; i++) {
    uint64_t used = GET(M.shard[i].used), map = GET(M.shard[i].map_size);
    sb_printf(b, "fleetq_store_map_used_ratio{shard=\"%u\"} %.6f\n", i,
              map ? (double)used / (double)map : 0.0);
  }
}

static void render_fleet(sb_t *b) {
  head(b, "fleetq_fleet_api_requests_total", "counter",
       "Fleet API and token endpoint requests by endpoint kind and HTTP status of the answer; "
       "code 0: no answer (not sent, timed out, connection lost).");
  for (int k = 0; k < FQ_MK_COUNT_; k++)
    for (int st = 0; st < 600; st++) {
      uint64_t v = GET(M.fleet[k][st]);
      if (v)
        sb_printf(b, "fleetq_fleet_api_requests_total{kind=\"%s\",code=\"%d\"} %llu\n",
                  kind_name[k], st, (unsigned long long)v);
    }
  head(b, "fleetq_wakeups_total", "counter", "wake_up requests answered or failed.");
  sb_printf(b, "fleetq_wakeups_total %llu\n", (unsigned long long)GET(M.wakeups));
  head(b, "fleetq_billable_requests_total", "counter",
       "Fleet API answers below HTTP 500 (what Tesla bills), per account and kind: wake_up, "
       "command (signed, REST and energy commands, session info), data (vehicle state).");
  for (size_t i = 0; i <= FQ_METRICS_MAX_ACCOUNTS; i++) {
    bill_slot_t *s = i < FQ_METRICS_MAX_ACCOUNTS ? &M.bill[i] : &M.bill_other;
    const char *name = "_other";
    if (i < FQ_METRICS_MAX_ACCOUNTS) {
      if (!atomic_load_explicit(&s->ready, memory_order_acquire)) continue;
      name = s->name;
    }
    for (int k = 0; k < BILL_KINDS; k++) {
      uint64_t v = GET(s->n[k]);
      if (!v) continue;
      sb_printf(b, "fleetq_billable_requests_total{account=\"");
      sb_label(b, name);
      sb_printf(b, "\",kind=\"%s\"} %llu\n", bill_kind_name[k], (unsigned long long)v);
    }
  }
}

static void refusal_line(void *ud, const char *tenant, uint64_t n) {
  sb_t *b = ud;
  sb_printf(b, "fleetq_budget_refusals_total{tenant=\"");
  sb_label(b, tenant);
  sb_printf(b, "\"} %llu\n", (unsigned long long)n);
}

char *fq_metrics_render(unsigned nshards, size_t *len) {
  if (nshards > FQ_METRICS_MAX_SHARDS) nshards = FQ_METRICS_MAX_SHARDS;
  sb_t b = {malloc(16384), 0, 16384, false};
  if (!b.p) return NULL;
  render_submits(&b);
  render_states(&b);
  render_shards(&b, nshards);
  render_hist(&b, &H_ack);
  render_hist(&b, &H_disp);
  render_hist(&b, &H_bsize);
  render_hist(&b, &H_bproc);
  render_hist(&b, &H_bcommit);
  render_hist(&b, &H_dsend);
  render_hist(&b, &H_dapi);
  render_hist(&b, &H_dend);
  render_fleet(&b);
  head(&b, "fleetq_budget_refusals_total", "counter",
       "Submits refused budget_exceeded, per tenant (tenant \"*\": those past the first 1024).");
  fq_budget_refusals(refusal_line, &b);
  head(&b, "fleetq_token_refreshes_total", "counter", "OAuth token refreshes by outcome.");
  for (int r = 0; r < FQ_MR_COUNT_; r++)
    sb_printf(&b, "fleetq_token_refreshes_total{result=\"%s\"} %llu\n", refresh_name[r],
              (unsigned long long)GET(M.refresh[r]));
  head(&b, "fleetq_events_published_total", "counter",
       "Status events handed to the PUB socket (a slow subscriber may still drop some).");
  sb_printf(&b, "fleetq_events_published_total %llu\n", (unsigned long long)GET(M.events));
  head(&b, "fleetq_build_info", "gauge", "The fleetqd version; always 1.");
  sb_printf(&b, "fleetq_build_info{version=\"");
  sb_label(&b, FQ_VERSION);
  sb_printf(&b, "\"} 1\n");
  if (b.oom) {
    free(b.p);
    return NULL;
  }
  *len = b.len;
  return b.p;
}

/* --- the server ------------------------------------------------------------------ */

struct fq_metrics {
  struct MHD_Daemon *mhd;
  unsigned nshards;
  char where[96];
};

int fq_metrics_parse_addr(const char *spec, struct sockaddr_storage *addr, socklen_t *len,
                          fq_err_t *err) {
  char host[64] = "";
  const char *port;
  const char *colon = strrchr(spec, ':');
  if (spec[0] == '[') {
    const char *close = strchr(spec, ']');
    if (!close || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof host)
      return fq_errf(err, FQ_ECONFIG,
                     "metrics: \"%.100s\" is not HOST:PORT (an IPv6 address goes in brackets: "
                     "[::1]:9464)", spec);
    memcpy(host, spec + 1, (size_t)(close - spec - 1));
    host[close - spec - 1] = 0;
    port = close + 2;
  } else if (colon) {
    if (strchr(spec, ':') != colon)
      return fq_errf(err, FQ_ECONFIG,
                     "metrics: \"%.100s\": an IPv6 address goes in brackets ([::1]:9464)", spec);
    if ((size_t)(colon - spec) >= sizeof host)
      return fq_errf(err, FQ_ECONFIG, "metrics: host of \"%.100s\" is too long", spec);
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    port = colon + 1;
  } else {
    port = spec;
  }
  char *end;
  errno = 0;
  long p = strtol(port, &end, 10);
  if (!*port || *end || errno || p < 1 || p > 65535)
    return fq_errf(err, FQ_ECONFIG,
                   "metrics: \"%.100s\" has no valid port (expected HOST:PORT, :PORT or PORT, "
                   "with PORT 1..65535)", spec);
  memset(addr, 0, sizeof *addr);
  /* No host: loopback.  Another address only when the operator names it. */
  if (!host[0] || !strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
  struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)p);
    *len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)p);
    *len = sizeof *v6;
  } else {
    return fq_errf(err, FQ_ECONFIG,
                   "metrics: \"%.60s\" is not an IP address (give a numeric IPv4 or IPv6 "
                   "address, or localhost)", host);
  }
  return 0;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *text,
                              bool allow_get) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
  if (allow_get) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  fq_metrics_t *m = cls;
  (void)version;
  (void)upload_data;
  (void)upload_data_size;
  (void)con_cls;
  if (strcmp(url, "/metrics") != 0)
    return answer(c, MHD_HTTP_NOT_FOUND, "not found: fleetqd serves only GET /metrics\n", false);
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET /metrics\n", true);
  size_t len = 0;
  char *text = fq_metrics_render(m->nshards, &len);
  if (!text)
    return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory rendering the metrics\n",
                  false);
  struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(text);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
  enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ret;
}

/* The listening socket is made here rather than by libmicrohttpd, so that
 * a port in use is reported as such (MHD_start_daemon only says NULL). */
static int listen_on(const struct sockaddr_storage *addr, socklen_t alen, const char *where,
                     fq_err_t *err) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fq_errf(err, -errno, "metrics: socket: %s", fq_strerror(-errno));
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, (const struct sockaddr *)addr, alen) != 0 || listen(fd, 64) != 0) {
    int e = errno;
    close(fd);
    return fq_errf(err, -e, "metrics: cannot listen on %s: %s%s", where, fq_strerror(-e),
                   e == EADDRINUSE ? " (another program uses that port: pick another with "
                                     "--metrics)"
                                   : "");
  }
  return fd;
}

fq_metrics_t *fq_metrics_start(const char *spec, unsigned nshards, fq_err_t *err) {
  struct sockaddr_storage addr;
  socklen_t alen = 0;
  if (fq_metrics_parse_addr(spec, &addr, &alen, err) != 0) return NULL;
  fq_metrics_t *m = calloc(1, sizeof *m);
  if (!m) {
    fq_errf(err, -ENOMEM, "metrics: out of memory");
    return NULL;
  }
  m->nshards = nshards > FQ_METRICS_MAX_SHARDS ? FQ_METRICS_MAX_SHARDS : nshards;
  char ip[INET6_ADDRSTRLEN] = "?";
  unsigned port;
  if (addr.ss_family == AF_INET) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof ip);
    port = ntohs(v4->sin_port);
    snprintf(m->where, sizeof m->where, "%s:%u", ip, port);
  } else {
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof ip);
    port = ntohs(v6->sin6_port);
    snprintf(m->where, sizeof m->where, "[%s]:%u", ip, port);
  }
  int fd = listen_on(&addr, alen, m->where, err);
  if (fd < 0) {
    free(m);
    return NULL;
  }
  /* One thread polls every connection: a scraper that reads slowly holds
   * only its own connection, which is dropped after 10 s idle. */
  m->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                            on_request, m, MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (!m->mhd) {
    close(fd);
    free(m);
    fq_errf(err, FQ_EINTERNAL, "metrics: cannot start the HTTP server on %s", spec);
    return NULL;
  }
  fq_info("metrics", "serving GET /metrics on http://%s/metrics", m->where);
  /* The operator asked for it, but the endpoint has no authentication:
   * say so once, as for the ZeroMQ endpoints without CURVE. */
  bool loop = addr.ss_family == AF_INET
                  ? (ntohl(((struct sockaddr_in *)&addr)->sin_addr.s_addr) >> 24) == 127
                  : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&addr)->sin6_addr);
  if (!loop)
    fq_warn("metrics", "--metrics %s is not a loopback address: anyone who reaches it reads the "
                       "metrics (account ids included); keep it behind a firewall",
            m->where);
  return m;
}

void fq_metrics_destroy(fq_metrics_t **mp) {
  if (!mp || !*mp) return;
  /* MHD_stop_daemon closes the listening socket too. */
  MHD_stop_daemon((*mp)->mhd);
  free(*mp);
  *mp = NULL;
}
