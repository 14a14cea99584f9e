/*
 * Retention of one shard's store: bounded pruning steps.  See retention.h.
 */
#include "retention.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/wire.h"
#include "log.h"
#include "util.h"

/* After a failed step, wait this long before the next (smaller) one. */
#define RETRY_MS 1000
/* Look again at least this often, whatever the oldest row said: a clock
 * set back must not postpone pruning by as much as it moved. */
#define POLL_MS 60000
/* How often the totals are logged while something is pruned. */
#define LOG_EVERY_MS 60000

typedef struct forget {
  uint64_t h, num;
} forget_t;

struct fq_retention {
  fq_store_t *store;
  bool (*busy)(void *ud, const char *device, uint64_t num);
  void *busy_ud;
  int64_t retention_ms, window_ms;
  size_t batch_max, batch; /* batch: the current bound, halved after a failure */
  int64_t due;
  /* In-memory removals waiting for the outer commit. */
  forget_t *forget;
  size_t nforget, aforget;
  /* Hashes no longer held by this shard, for the ingress. */
  uint64_t *gone;
  size_t ngone, agone;
  /* The current step's counts (folded into st by committed()). */
  uint64_t step_events, step_commands, step_keys;
  fq_retention_stats_t st;
  fq_retention_stats_t logged; /* totals at the last log line */
  int64_t log_at;
  bool failing; /* the last step failed: log the next failure only after a success */
};

fq_retention_t *fq_retention_new(fq_store_t *store, const fq_retention_opts_t *o, int64_t now,
                                 fq_err_t *err) {
  if (o->retention_ms < 0 || o->dedupe_window_ms < 0) {
    fq_errf(err, FQ_ECONFIG, "retention and dedupe window must not be negative");
    return NULL;
  }
  if (o->retention_ms > 0 && o->dedupe_window_ms > o->retention_ms) {
    fq_errf(err, FQ_ECONFIG,
            "the dedupe window (%" PRId64 " ms) is longer than the retention (%" PRId64
            " ms): a key cannot dedupe against a command that is no longer stored",
            o->dedupe_window_ms, o->retention_ms);
    return NULL;
  }
  fq_retention_t *r = calloc(1, sizeof *r);
  if (!r) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  r->store = store;
  r->busy = o->busy;
  r->busy_ud = o->busy_ud;
  r->retention_ms = o->retention_ms;
  r->window_ms = o->dedupe_window_ms;
  r->batch_max = r->batch = o->batch ? o->batch : FQ_RETENTION_BATCH;
  r->due = (r->retention_ms || r->window_ms) ? now : INT64_MAX;
  r->log_at = now;
  size_t dropped = 0;
  if (fq_store_set_dedupe_window(store, r->window_ms, now, &dropped, err) != 0) {
    free(r);
    return NULL;
  }
  if (dropped)
    fq_info("retention", "shard %u: %zu key(s) past the dedupe window no longer dedupe",
            fq_store_shard(store), dropped);
  return r;
}

void fq_retention_destroy(fq_retention_t **rp) {
  if (!rp || !*rp) return;
  free((*rp)->forget);
  free((*rp)->gone);
  free(*rp);
  *rp = NULL;
}

int64_t fq_retention_due(const fq_retention_t *r) { return r ? r->due : INT64_MAX; }

static int forget_add(fq_retention_t *r, uint64_t h, const char *id, fq_err_t *err) {
  if (r->nforget == r->aforget) {
    size_t n = r->aforget ? r->aforget * 2 : 256;
    forget_t *p = realloc(r->forget, n * sizeof *p);
    if (!p) return fq_errf(err, -ENOMEM, "out of memory");
    r->forget = p;
    r->aforget = n;
  }
  r->forget[r->nforget++] = (forget_t){h, fq_store_id_num(id)};
  return 0;
}

/* Expired keys, oldest first: ids grow with the time of acceptance, so
 * they are a prefix of `idemlog`.  *due gets the time the first live key
 * expires. */
static int prune_keys(fq_retention_t *r, int64_t now, size_t *done, int64_t *due,
                      fq_err_t *err) {
  fq_store_t *s = r->store;
  while (*done < r->batch) {
    char id[FQ_ID_LEN + 1];
    int64_t created = 0;
    int rc = fq_store_idem_first(s, id, err);
    if (rc == FQ_ENOTFOUND) return 0;
    if (rc) return rc;
    rc = fq_store_cmd_created(s, id, &created, err);
    if (rc == 0 && now - created < r->window_ms) {
      if (created + r->window_ms < *due) *due = created + r->window_ms;
      return 0;
    }
    if (rc && rc != FQ_ENOTFOUND) return rc; /* no record: nothing to dedupe against */
    uint64_t h = 0;
    if ((rc = fq_store_idem_del(s, id, &h, err)) != 0) return rc;
    if ((rc = forget_add(r, h, id, err)) != 0) return rc;
    r->step_keys++;
    (*done)++;
  }
  return 0;
}

/* The command whose terminal event is about to leave the log: it has
 * been terminal for longer than the retention.  Terminal states are final,
 * so its record says terminal too (anything else, a damaged log, keeps the
 * record).  *busy when the shard still refers to it (r->busy): then
 * neither the event nor the record may go yet, or the record would never
 * be looked at again. */
static int command_prunable(fq_retention_t *r, const char *id, bool *prune, bool *busy,
                            fq_err_t *err) {
  fq_cmdrec_t rec;
  *prune = *busy = false;
  int rc = fq_store_cmd_get(r->store, id, FQ_ID_LEN, &rec, err);
  if (rc == FQ_ENOTFOUND) return 0;
  if (rc) return rc;
  *prune = fq_state_terminal(rec.state);
  *busy = *prune && r->busy && r->busy(r->busy_ud, rec.device, fq_store_id_num(id));
  fq_cmdrec_free(&rec);
  return 0;
}

static int prune_command(fq_retention_t *r, const char *id, size_t *done, fq_err_t *err) {
  fq_store_t *s = r->store;
  int rc = fq_store_cmd_del(s, id, err);
  if (rc) return rc;
  uint64_t h = 0;
  rc = fq_store_idem_del(s, id, &h, err); /* still there if the key pruning lags */
  if (rc == 0) {
    if ((rc = forget_add(r, h, id, err)) != 0) return rc;
    r->step_keys++;
    (*done)++;
  } else if (rc != FQ_ENOTFOUND) {
    return rc;
  }
  r->step_commands++;
  (*done)++;
  return 0;
}

/* Events older than the retention, from the start of the log, with the
 * commands whose terminal event they are. */
static int prune_events(fq_retention_t *r, int64_t now, size_t *done, int64_t *due,
                        fq_err_t *err) {
  fq_store_t *s = r->store;
  while (*done < r->batch) {
    uint64_t seq;
    const uint8_t *ev;
    size_t len;
    int rc = fq_store_event_first(s, &seq, &ev, &len, err);
    if (rc == FQ_ENOTFOUND) return 0;
    if (rc) return rc;
    if (seq + 1 >= fq_store_next_seq(s)) {
      /* The last event: the next seq is derived from it on open.  It goes
       * once a newer one exists, itself due a retention from now at the
       * soonest (the step's default due). */
      return 0;
    }
    fq_event_t e;
    fq_err_t derr;
    char tenant[FQ_TENANT_MAX + 1] = "", id[FQ_ID_LEN + 1] = "";
    size_t tlen = 0;
    uint64_t tseq = 0;
    bool terminal = false;
    if (fq_wire_event_unpack(ev, len, &e, &derr) != 0) {
      /* Our own bytes, damaged: it cannot be dated, and cannot be served
       * either; it is as old as its neighbours. */
      fq_warn("retention", "shard %u: event %" PRIu64 " is unreadable (%s); pruning it",
              fq_store_shard(s), seq, derr.msg);
    } else {
      if (now - e.at < r->retention_ms) {
        if (e.at + r->retention_ms < *due) *due = e.at + r->retention_ms;
        return 0;
      }
      if (e.tenant.n > 0 && e.tenant.n <= FQ_TENANT_MAX) {
        memcpy(tenant, e.tenant.p, e.tenant.n);
        tlen = e.tenant.n;
        tseq = e.tseq;
      }
      if (e.id.n == FQ_ID_LEN) {
        memcpy(id, e.id.p, FQ_ID_LEN);
        terminal = fq_state_terminal(e.state);
      }
    }
    bool prune = false, busy = false;
    if (terminal && (rc = command_prunable(r, id, &prune, &busy, err)) != 0) return rc;
    if (busy) {
      /* Not yet: the log waits here (history stays gap-free). */
      if (now + RETRY_MS < *due) *due = now + RETRY_MS;
      return 0;
    }
    /* ev is borrowed from the page the deletion changes: copied above. */
    if ((rc = fq_store_event_del(s, seq, tlen ? tenant : NULL, tlen, tseq, err)) != 0) return rc;
    r->step_events++;
    (*done)++;
    if (prune && (rc = prune_command(r, id, done, err)) != 0) return rc;
  }
  return 0;
}

size_t fq_retention_step(fq_retention_t *r, int64_t now) {
  if (!r || (!r->retention_ms && !r->window_ms)) return 0;
  fq_store_t *s = r->store;
  fq_err_t err;
  fq_err_clear(&err);
  /* What this step adds, to take back if it fails. */
  size_t mark = r->nforget, done = 0;
  uint64_t ev0 = r->step_events, cmd0 = r->step_commands, keys0 = r->step_keys;
  /* A key or event added from now on is due no sooner than a window or a
   * retention from now; the oldest rows of the store lower this below. */
  int64_t due = now + POLL_MS;
  if (r->window_ms && now + r->window_ms < due) due = now + r->window_ms;
  if (r->retention_ms && now + r->retention_ms < due) due = now + r->retention_ms;
  r->st.steps++;
  int rc = fq_store_nest_begin(s, &err);
  if (rc == 0 && r->window_ms) rc = prune_keys(r, now, &done, &due, &err);
  if (rc == 0 && r->retention_ms) rc = prune_events(r, now, &done, &due, &err);
  if (rc == 0) {
    rc = fq_store_nest_commit(s, &err);
  } else {
    fq_store_nest_abort(s);
  }
  if (rc) {
    r->nforget = mark;
    r->step_events = ev0;
    r->step_commands = cmd0;
    r->step_keys = keys0;
    r->st.failures++;
    size_t tried = r->batch;
    if (r->batch > 1) r->batch /= 2;
    r->due = now + RETRY_MS;
    if (!r->failing)
      fq_warn("retention", "shard %u: pruning %zu row(s) failed: %s; retrying with at most %zu",
              fq_store_shard(s), tried, err.msg, r->batch);
    r->failing = true;
    return 0;
  }
  r->failing = false;
  if (r->batch < r->batch_max) r->batch = r->batch * 2 < r->batch_max ? r->batch * 2 : r->batch_max;
  /* A full step leaves more to do: come back on the next loop turn. */
  r->due = done >= r->batch ? now : (due > now ? due : now + RETRY_MS);
  if (r->due > now + POLL_MS) r->due = now + POLL_MS;
  return done;
}

static int gone_add(fq_retention_t *r, uint64_t h) {
  if (r->ngone == r->agone) {
    size_t n = r->agone ? r->agone * 2 : 256;
    uint64_t *p = realloc(r->gone, n * sizeof *p);
    if (!p) return -ENOMEM;
    r->gone = p;
    r->agone = n;
  }
  r->gone[r->ngone++] = h;
  return 0;
}

void fq_retention_committed(fq_retention_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->nforget; i++) {
    fq_store_idem_forget(r->store, r->forget[i].h, r->forget[i].num);
    /* A hash the shard no longer holds at all; when out of memory the
     * ingress just keeps asking this shard about it (a harmless miss). */
    if (!fq_store_idem_has(r->store, r->forget[i].h)) gone_add(r, r->forget[i].h);
  }
  r->nforget = 0;
  r->st.events += r->step_events;
  r->st.commands += r->step_commands;
  r->st.keys += r->step_keys;
  r->step_events = r->step_commands = r->step_keys = 0;
  int64_t now = fq_now_ms();
  if (now - r->log_at >= LOG_EVERY_MS) {
    uint64_t ev = r->st.events - r->logged.events, cmd = r->st.commands - r->logged.commands,
             keys = r->st.keys - r->logged.keys;
    if (ev || cmd || keys)
      fq_info("retention",
              "shard %u: pruned %" PRIu64 " command(s), %" PRIu64 " event(s), %" PRIu64
              " expired key(s) in the last %" PRId64 " s",
              fq_store_shard(r->store), cmd, ev, keys, (now - r->log_at) / 1000);
    r->logged = r->st;
    r->log_at = now;
  }
}

void fq_retention_aborted(fq_retention_t *r) {
  if (!r) return;
  r->nforget = 0;
  r->step_events = r->step_commands = r->step_keys = 0;
}

size_t fq_retention_take_gone(fq_retention_t *r, const uint64_t **h) {
  if (!r) return 0;
  size_t n = r->ngone;
  *h = r->gone;
  r->ngone = 0;
  return n;
}

void fq_retention_stats(const fq_retention_t *r, fq_retention_stats_t *st) {
  if (r) *st = r->st;
  else memset(st, 0, sizeof *st);
}
