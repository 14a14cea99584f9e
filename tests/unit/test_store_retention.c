/*
 * Unit tests of retention (src/daemon/retention.c) on a real store: each
 * step is bounded; old events leave the log from its start (with their
 * tenant index rows, never the tseq counters) and terminal commands with
 * their terminal event; commands that are not terminal stay; a key stops
 * deduping after the dedupe window, also across a reopen; an aborted
 * outer transaction takes nothing from memory; the next seq and tseq
 * continue after everything old was pruned and the store reopened.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "fleetq/buf.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "retention.h"
#include "store.h"
#include "util.h"

static char *tmpdir(void) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/fq_ret_XXXXXX");
  return mkdtemp(path);
}

static void rm_rf(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

/* Append the event of rec entering its current state (at rec->updated),
 * as the shard does: seq and tseq from the store's counters. */
static void add_event(fq_store_t *s, const fq_cmdrec_t *rec, int prev) {
  fq_event_t ev;
  fq_err_t err;
  memset(&ev, 0, sizeof ev);
  ev.id = (fq_str_t){rec->id, strlen(rec->id)};
  ev.tenant = (fq_str_t){rec->tenant, strlen(rec->tenant)};
  ev.key = (fq_str_t){rec->key, strlen(rec->key)};
  ev.vin = (fq_str_t){rec->vin, strlen(rec->vin)};
  ev.command = (fq_str_t){rec->command, strlen(rec->command)};
  ev.reason = (fq_str_t){"", 0};
  ev.state = rec->state;
  ev.prev = prev;
  ev.at = rec->updated;
  ev.fault = -1;
  ev.seq = fq_store_next_seq(s);
  ev.tseq = fq_store_next_tseq(s, rec->tenant, strlen(rec->tenant));
  fq_buf_t b;
  fq_buf_init(&b, 0);
  CHECK_INT(fq_wire_event_pack(&b, &ev), 0);
  CHECK_INT(fq_store_event_append(s, rec->tenant, strlen(rec->tenant), b.data, b.len, &err), 0);
  fq_buf_free(&b);
}

/* A command of tenant/key accepted at `created`, inside the open write
 * transaction: key, record and `queued` event; then, when end_state is
 * terminal, its end at `ended` (record and event).  Its id in id. */
static void add_cmd(fq_store_t *s, const char *tenant, const char *key, int64_t created,
                    int end_state, int64_t ended, char id[FQ_ID_LEN + 1]) {
  fq_cmdrec_t r;
  fq_err_t err;
  memset(&r, 0, sizeof r);
  fq_store_new_id(s, r.id, &r.qseq);
  snprintf(r.tenant, sizeof r.tenant, "%s", tenant);
  snprintf(r.key, sizeof r.key, "%s", key);
  snprintf(r.account, sizeof r.account, "acct");
  snprintf(r.vin, sizeof r.vin, "5YJ30123456789ABC");
  snprintf(r.device, sizeof r.device, "v:5YJ30123456789ABC");
  snprintf(r.command, sizeof r.command, "door_lock");
  r.hash[0] = (uint8_t)key[0];
  r.fault = -1;
  r.created = r.updated = created;
  r.deadline = created + 60000;
  r.ttl_ms = 60000;
  r.state = FQ_ST_QUEUED;
  r.trans[r.ntrans++] = (fq_transition_t){FQ_ST_QUEUED, created};
  CHECK_INT(fq_store_idem_put(s, &r, &err), 0);
  CHECK_INT(fq_store_cmd_put(s, &r, &err), 0);
  add_event(s, &r, -1);
  if (fq_state_terminal(end_state)) {
    r.state = end_state;
    r.updated = ended;
    r.trans[r.ntrans++] = (fq_transition_t){end_state, ended};
    CHECK_INT(fq_store_cmd_put(s, &r, &err), 0);
    add_event(s, &r, FQ_ST_QUEUED);
  } else {
    CHECK_INT(fq_store_active_put(s, &r, &err), 0);
  }
  memcpy(id, r.id, FQ_ID_LEN + 1);
}

/* One retention step in its own transaction, committed; returns its rows. */
static size_t step(fq_store_t *s, fq_retention_t *r, int64_t now) {
  fq_err_t err;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  size_t n = fq_retention_step(r, now);
  CHECK_INT(fq_store_commit(s, &err), 0);
  fq_retention_committed(r);
  return n;
}

static bool has_cmd(fq_store_t *s, const char *id) {
  fq_err_t err;
  fq_cmdrec_t rec;
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  int rc = fq_store_cmd_get(s, id, FQ_ID_LEN, &rec, &err);
  if (rc == 0) fq_cmdrec_free(&rec);
  fq_store_abort(s);
  CHECK(rc == 0 || rc == FQ_ENOTFOUND);
  return rc == 0;
}

/* The id a (tenant, key) dedupes to, or "" when it dedupes nothing. */
static void key_id(fq_store_t *s, const char *tenant, const char *key, char id[FQ_ID_LEN + 1]) {
  fq_err_t err;
  uint8_t h[32];
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  int rc = fq_store_idem_get(s, tenant, strlen(tenant), key, strlen(key), h, id, &err);
  fq_store_abort(s);
  CHECK(rc == 0 || rc == FQ_ENOTFOUND);
  if (rc) id[0] = 0;
}

static uint64_t first_seq(fq_store_t *s, const char *tenant) {
  fq_err_t err;
  uint64_t first = 0;
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  if (tenant)
    CHECK_INT(fq_store_tenant_first_tseq(s, tenant, strlen(tenant), &first, &err), 0);
  else
    CHECK_INT(fq_store_first_seq(s, &first, &err), 0);
  fq_store_abort(s);
  return first;
}

typedef struct seen {
  uint64_t n, lo, hi;
} seen_t;

static int see(void *ud, uint64_t seq, const uint8_t *ev, size_t len) {
  seen_t *x = ud;
  (void)ev;
  (void)len;
  if (!x->n) x->lo = seq;
  else CHECK_INT(seq, x->hi + 1); /* retained history has no hole */
  x->hi = seq;
  x->n++;
  return 0;
}

static seen_t scan(fq_store_t *s, const char *tenant) {
  fq_err_t err;
  seen_t x = {0, 0, 0};
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  if (tenant)
    CHECK_INT(fq_store_tenant_event_scan(s, tenant, strlen(tenant), 0, 100000, see, &x, &err), 0);
  else
    CHECK_INT(fq_store_event_scan(s, 0, 100000, see, &x, &err), 0);
  fq_store_abort(s);
  return x;
}

#define DAY (86400 * 1000LL)

FQ_TEST(steps_are_bounded_and_prune_everything_old) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 256 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  int64_t now = fq_now_ms(), old = now - 10 * DAY;
  /* 1000 commands of two tenants, accepted and ended ten days ago. */
  char ids[1000][FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  for (int i = 0; i < 1000; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%d", i);
    add_cmd(s, i % 2 ? "beta" : "acme", key, old + i, FQ_ST_SUCCEEDED, old + i + 1, ids[i]);
  }
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK_INT(fq_store_next_seq(s), 2001);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 1001);
  CHECK_INT(first_seq(s, NULL), 1);
  CHECK_INT(first_seq(s, "beta"), 1);

  fq_retention_opts_t o = {.retention_ms = 7 * DAY, .dedupe_window_ms = DAY, .batch = 100};
  fq_retention_t *r = fq_retention_new(s, &o, now, &err);
  CHECK(r != NULL);
  if (!r) return;
  /* Every key had expired: the table was emptied on the spot. */
  CHECK_INT(fq_store_idem_count(s), 0);
  CHECK(fq_retention_due(r) <= now);
  int steps = 0;
  size_t total = 0, n;
  fq_retention_stats_t st, prev = {0};
  while ((n = step(s, r, now)) > 0 && steps < 1000) {
    steps++;
    total += n;
    fq_retention_stats(r, &st);
    /* Bounded: at most the batch (+1 when its last event ends a command). */
    uint64_t rows = (st.events - prev.events) + (st.commands - prev.commands) +
                    (st.keys - prev.keys);
    CHECK(rows <= 101);
    CHECK_INT(rows, n);
    prev = st;
    /* A full step leaves more to do: due again at once. */
    if (n >= 100) CHECK(fq_retention_due(r) <= now);
  }
  fq_retention_stats(r, &st);
  /* Everything but the last event (the next seq is derived from it) and
   * the one command it ends. */
  CHECK_INT(st.keys, 1000);
  CHECK_INT(st.events, 1999);
  CHECK_INT(st.commands, 999);
  CHECK_INT(st.failures, 0);
  CHECK(steps >= 30); /* 3998 rows, 100 a step */
  CHECK(fq_retention_due(r) > now);
  CHECK(!has_cmd(s, ids[0]));
  CHECK(!has_cmd(s, ids[998]));
  CHECK(has_cmd(s, ids[999]));
  char id[FQ_ID_LEN + 1];
  key_id(s, "acme", "k0", id);
  CHECK_STR(id, "");
  /* Retained history begins at the last event; the tenant whose events
   * are all gone begins at its next tseq. */
  CHECK_INT(first_seq(s, NULL), 2000);
  seen_t x = scan(s, NULL);
  CHECK_INT(x.n, 1);
  CHECK_INT(x.lo, 2000);
  CHECK_INT(first_seq(s, "beta"), 1000);
  CHECK_INT(first_seq(s, "acme"), 1001);
  CHECK_INT(scan(s, "acme").n, 0);
  CHECK_INT(scan(s, "beta").n, 1);
  fq_retention_destroy(&r);
  fq_store_destroy(&s);

  /* Reopened: seq and tseq go on from where they were, never reused. */
  s = fq_store_open(dir, 0, 256 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_next_seq(s), 2001);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 1001);
  CHECK_INT(fq_store_next_tseq(s, "beta", 4), 1001);
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "k0", now, FQ_ST_QUEUED, 0, id); /* the key is free again */
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK(strcmp(id, ids[999]) > 0);
  char again[FQ_ID_LEN + 1];
  key_id(s, "acme", "k0", again);
  CHECK_STR(again, id);
  x = scan(s, "acme");
  CHECK_INT(x.n, 1);
  CHECK_INT(x.lo, 1001);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(only_old_terminal_commands_go) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  int64_t now = fq_now_ms(), ret = 1000;
  char a[FQ_ID_LEN + 1], b[FQ_ID_LEN + 1], c[FQ_ID_LEN + 1], d[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "a", now - 5000, FQ_ST_CANCELLED, now - 4000, a); /* old, ended old */
  add_cmd(s, "acme", "b", now - 5000, FQ_ST_QUEUED, 0, b);              /* old, not ended */
  add_cmd(s, "acme", "c", now - 5000, FQ_ST_EXPIRED, now - 10, c);     /* old, ended now */
  add_cmd(s, "acme", "d", now - 10, FQ_ST_FAILED, now - 5, d);         /* new */
  CHECK_INT(fq_store_commit(s, &err), 0);
  /* seq: 1 a queued, 2 a cancelled, 3 b queued, 4 c queued, 5 c expired,
   * 6 d queued, 7 d failed. */
  fq_retention_opts_t o = {.retention_ms = ret, .dedupe_window_ms = ret};
  fq_retention_t *r = fq_retention_new(s, &o, now, &err);
  CHECK(r != NULL);
  if (!r) return;
  CHECK_INT(step(s, r, now), 4 + 1 + 3); /* 4 events, command a, keys a b c */
  CHECK(!has_cmd(s, a));
  CHECK(has_cmd(s, b)); /* not terminal: kept however old (its event went) */
  CHECK(has_cmd(s, c)); /* terminal for less than the retention */
  CHECK(has_cmd(s, d));
  CHECK_INT(first_seq(s, NULL), 5);
  CHECK_INT(first_seq(s, "acme"), 5);
  seen_t x = scan(s, "acme");
  CHECK_INT(x.n, 3);
  CHECK_INT(x.lo, 5);
  /* Nothing more until c's end is old: due then (not before). */
  CHECK_INT(step(s, r, now), 0);
  CHECK_INT(fq_retention_due(r), now - 10 + ret);
  CHECK_INT(step(s, r, now - 10 + ret), 1 + 2 + 1); /* d's key, c's end and d's start, c */
  CHECK(!has_cmd(s, c));
  CHECK(has_cmd(s, d));
  fq_retention_destroy(&r);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(dedupe_window_expires_and_holds_across_reopen) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  int64_t now = fq_now_ms(), win = 60000;
  char old[FQ_ID_LEN + 1], live[FQ_ID_LEN + 1], id[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "old", now - win - 1, FQ_ST_QUEUED, 0, old);
  add_cmd(s, "acme", "live", now - win + 30000, FQ_ST_QUEUED, 0, live);
  CHECK_INT(fq_store_commit(s, &err), 0);
  /* Without a window (the store's default) keys dedupe for ever. */
  key_id(s, "acme", "old", id);
  CHECK_STR(id, old);
  size_t dropped = 0;
  CHECK_INT(fq_store_set_dedupe_window(s, win, now, &dropped, &err), 0);
  CHECK_INT(dropped, 1);
  CHECK_INT(fq_store_idem_count(s), 1);
  key_id(s, "acme", "old", id);
  CHECK_STR(id, "");
  key_id(s, "acme", "live", id);
  CHECK_STR(id, live);
  /* The key is free: a new command takes it, and the key names it. */
  char fresh[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "old", now, FQ_ST_QUEUED, 0, fresh);
  CHECK_INT(fq_store_commit(s, &err), 0);
  key_id(s, "acme", "old", id);
  CHECK_STR(id, fresh);
  fq_store_destroy(&s);

  /* Reopened with the window: the expired key is not loaded (its row is
   * still in the log: nothing pruned it), the others are. */
  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_idem_count(s), 3);
  fq_retention_opts_t o = {.retention_ms = 7 * DAY, .dedupe_window_ms = win};
  fq_retention_t *r = fq_retention_new(s, &o, now, &err);
  CHECK(r != NULL);
  if (!r) return;
  CHECK_INT(fq_store_idem_count(s), 2);
  key_id(s, "acme", "old", id);
  CHECK_STR(id, fresh);
  key_id(s, "acme", "live", id);
  CHECK_STR(id, live);
  /* The expired row goes with the first step; nothing else is due for
   * the keys until "live" expires. */
  CHECK_INT(step(s, r, now), 1);
  fq_retention_stats_t st;
  fq_retention_stats(r, &st);
  CHECK_INT(st.keys, 1);
  CHECK_INT(fq_retention_due(r), now - win + 30000 + win);
  /* Later, "live" expires too, even if the step has not run yet. */
  fq_retention_destroy(&r);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(window_longer_than_retention_is_refused) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  fq_retention_opts_t o = {.retention_ms = 1000, .dedupe_window_ms = 1001};
  fq_retention_t *r = fq_retention_new(s, &o, fq_now_ms(), &err);
  CHECK(r == NULL);
  CHECK(strstr(err.msg, "dedupe window") != NULL);
  /* Retention off: any window. */
  o.retention_ms = 0;
  r = fq_retention_new(s, &o, fq_now_ms(), &err);
  CHECK(r != NULL);
  fq_retention_destroy(&r);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(aborted_outer_transaction_keeps_everything) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  int64_t now = fq_now_ms();
  char a[FQ_ID_LEN + 1], b[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "a", now - 5000, FQ_ST_SUCCEEDED, now - 5000, a);
  add_cmd(s, "acme", "b", now - 5000, FQ_ST_SUCCEEDED, now - 5000, b);
  CHECK_INT(fq_store_commit(s, &err), 0);
  fq_retention_opts_t o = {.retention_ms = 1000, .dedupe_window_ms = 1000};
  fq_retention_t *r = fq_retention_new(s, &o, now - 4500, &err); /* keys still live */
  CHECK(r != NULL);
  if (!r) return;
  CHECK_INT(fq_store_idem_count(s), 2);
  /* The step runs, then the batch around it fails. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_retention_step(r, now), 2 + 3 + 1); /* keys a b, events 1-3, command a */
  fq_store_abort(s);
  fq_retention_aborted(r);
  CHECK_INT(fq_store_idem_count(s), 2);
  CHECK(has_cmd(s, a));
  CHECK_INT(first_seq(s, NULL), 1);
  fq_retention_stats_t st;
  fq_retention_stats(r, &st);
  CHECK_INT(st.events, 0);
  /* A nested transaction dropped alone leaves the outer one as it was. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_store_nest_begin(s, &err), 0);
  CHECK_INT(fq_store_cmd_del(s, a, &err), 0);
  fq_store_nest_abort(s);
  CHECK_INT(fq_store_cmd_del(s, b, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK(has_cmd(s, a));
  CHECK(!has_cmd(s, b));
  /* Committed this time: memory follows. */
  CHECK_INT(step(s, r, now), 2 + 3 + 1);
  CHECK_INT(fq_store_idem_count(s), 0);
  CHECK(!has_cmd(s, a));
  const uint64_t *gone;
  CHECK_INT(fq_retention_take_gone(r, &gone), 2);
  CHECK_INT(fq_retention_take_gone(r, &gone), 0);
  fq_retention_destroy(&r);
  fq_store_destroy(&s);
  rm_rf(dir);
}

static uint64_t g_busy_num;

static bool busy_cb(void *ud, const char *device, uint64_t num) {
  (void)ud;
  CHECK_STR(device, "v:5YJ30123456789ABC");
  return num == g_busy_num;
}

/* A terminal command the shard still refers to (its dispatcher's current
 * command) stays, and so does the log from its terminal event on, until
 * the shard lets go. */
FQ_TEST(command_in_use_waits_with_the_log) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  int64_t now = fq_now_ms();
  char a[FQ_ID_LEN + 1], b[FQ_ID_LEN + 1], c[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  add_cmd(s, "acme", "a", now - 5000, FQ_ST_SUCCEEDED, now - 4900, a); /* seq 1, 2 */
  add_cmd(s, "acme", "b", now - 4800, FQ_ST_EXPIRED, now - 4700, b);   /* seq 3, 4 */
  add_cmd(s, "acme", "c", now - 4600, FQ_ST_SUCCEEDED, now - 4500, c); /* seq 5, 6 */
  CHECK_INT(fq_store_commit(s, &err), 0);
  g_busy_num = fq_store_id_num(b);
  fq_retention_opts_t o = {.retention_ms = 1000, .dedupe_window_ms = 1000, .busy = busy_cb};
  fq_retention_t *r = fq_retention_new(s, &o, now, &err);
  CHECK(r != NULL);
  if (!r) return;
  CHECK_INT(step(s, r, now), 3 + 3 + 1); /* keys a b c, seq 1-3, command a */
  CHECK(!has_cmd(s, a));
  CHECK(has_cmd(s, b));
  CHECK_INT(first_seq(s, NULL), 4);
  CHECK(fq_retention_due(r) <= now + 1000); /* soon: a second, not a retention */
  CHECK_INT(step(s, r, now), 0);
  g_busy_num = 0; /* let go */
  CHECK_INT(step(s, r, now), 2 + 1); /* seq 4, 5, command b (seq 6 is the last) */
  CHECK(!has_cmd(s, b));
  CHECK(has_cmd(s, c));
  CHECK_INT(first_seq(s, NULL), 6);
  fq_retention_destroy(&r);
  fq_store_destroy(&s);
  rm_rf(dir);
}
