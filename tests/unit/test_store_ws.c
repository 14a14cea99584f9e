/*
 * Unit tests of the store's write sets (docs/cluster.md, "Wiring it into
 * fleetqd" step 1): an owner store captures every write of its
 * transactions, prepares each one with the log sequence it will have, and
 * a follower store applies the encoded write sets in order.  After a
 * realistic run of the store API (new commands with their keys, queue
 * rows, events and tenant indexes; transitions to terminal states;
 * sessions; scheduled commands; campaign rows; retention pruning; an
 * aborted transaction; an aborted nested transaction) every named
 * database of the two environments holds the same keys and values, the
 * follower's in-memory counters and dedupe table answer as the owner's,
 * and both stores say applied = the number of commits.  A repeated entry,
 * a hole, another shard's entry and malformed or hostile entries are
 * refused with their own codes and leave the follower as it was.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "fleetq/buf.h"
#include "fleetq/wire.h"
#include "fq_test.h"
#include "retention.h"
#include "store.h"
#include "store_gen.h"
#include "util.h"
#include "writeset.h"

#define SHARD 5
#define MAP (64ull << 20)

/* --- an owner and a follower --------------------------------------------- */

typedef struct pair {
  char odir[64], fdir[64];
  fq_store_t *o, *f;
  fq_ws_t ws;
  fq_buf_t msg;
  uint64_t seq;       /* the log's last sequence */
  unsigned commits;   /* write sets shipped */
  size_t max_ops;     /* the largest write set, in operations */
} pair_t;

static void pair_open_stores(pair_t *p) {
  fq_err_t err;
  p->o = fq_store_open(p->odir, SHARD, MAP, &err);
  p->f = fq_store_open(p->fdir, SHARD, MAP, &err);
  CHECK(p->o && p->f);
  if (p->o) CHECK_INT(fq_store_capture(p->o, &p->ws, &err), 0);
}

static bool pair_open(pair_t *p) {
  memset(p, 0, sizeof *p);
  snprintf(p->odir, sizeof p->odir, "/tmp/fq_ws_o_XXXXXX");
  snprintf(p->fdir, sizeof p->fdir, "/tmp/fq_ws_f_XXXXXX");
  if (!mkdtemp(p->odir) || !mkdtemp(p->fdir)) return false;
  fq_ws_init(&p->ws, 0);
  fq_buf_init(&p->msg, 64 << 20);
  pair_open_stores(p);
  return p->o && p->f;
}

static void pair_close_stores(pair_t *p) {
  fq_store_destroy(&p->o);
  fq_store_destroy(&p->f);
}

static void pair_free(pair_t *p) {
  pair_close_stores(p);
  fq_ws_free(&p->ws);
  fq_buf_free(&p->msg);
  rm_rf(p->odir);
  rm_rf(p->fdir);
}

/* The owner's end of a batch, then the follower's: prepare as the log's
 * next entry, encode, commit; apply the entry on the follower. */
static void ship(pair_t *p) {
  fq_err_t err;
  uint64_t seq = p->seq + 1;
  CHECK_INT(fq_store_prepare(p->o, seq, &err), 0);
  fq_buf_reset(&p->msg);
  CHECK_INT(fq_ws_encode(&p->ws, SHARD, p->commits + 1, "node-a", &p->msg), 0);
  if (p->ws.nops > p->max_ops) p->max_ops = p->ws.nops;
  uint64_t ap = 0;
  CHECK_INT(fq_store_applied(p->o, &ap, &err), 0); /* inside: sees the prepare */
  CHECK_INT(ap, seq);
  CHECK_INT(fq_store_commit(p->o, &err), 0);
  int rc = fq_store_apply(p->f, p->msg.data, p->msg.len, seq, &err);
  if (rc) FQ__FAIL("apply of entry %" PRIu64 ": %d %s", seq, rc, err.msg);
  p->seq = seq;
  p->commits++;
}

/* --- comparisons of what the two stores answer ----------------------------- */

static void key_id(fq_store_t *s, const char *tenant, const char *key, char id[FQ_ID_LEN + 1]) {
  fq_err_t err;
  uint8_t h[32];
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  int rc = fq_store_idem_get(s, tenant, strlen(tenant), key, strlen(key), h, id, &err);
  fq_store_abort(s);
  CHECK(rc == 0 || rc == FQ_ENOTFOUND);
  if (rc) id[0] = 0;
}

static const char *const TENANTS[] = {"acme", "globex", "initech", "umbrella"};
#define NTEN 4

/* The follower answers as the owner: next seq, each tenant's next tseq,
 * the next id and queue position, every key's command; and both stores
 * say applied = the log's last entry. */
static void same_answers(pair_t *p, int nkeys) {
  fq_err_t err;
  CHECK_INT(fq_store_next_seq(p->f), fq_store_next_seq(p->o));
  for (int t = 0; t < NTEN; t++)
    CHECK_INT(fq_store_next_tseq(p->f, TENANTS[t], strlen(TENANTS[t])),
              fq_store_next_tseq(p->o, TENANTS[t], strlen(TENANTS[t])));
  char ido[FQ_ID_LEN + 1], idf[FQ_ID_LEN + 1];
  uint64_t qo, qf;
  CHECK_INT(fq_store_begin(p->o, true, &err), 0);
  fq_store_new_id(p->o, ido, &qo);
  fq_store_abort(p->o);
  CHECK_INT(fq_store_begin(p->f, true, &err), 0);
  fq_store_new_id(p->f, idf, &qf);
  fq_store_abort(p->f);
  CHECK_STR(idf, ido);
  CHECK_INT(qf, qo);
  int found = 0;
  for (int i = 0; i < nkeys; i++) {
    char key[32];
    snprintf(key, sizeof key, "k%d", i);
    for (int t = 0; t < NTEN; t++) {
      key_id(p->o, TENANTS[t], key, ido);
      key_id(p->f, TENANTS[t], key, idf);
      if (strcmp(ido, idf) != 0) FQ__FAIL("%s/%s: owner %s, follower %s", TENANTS[t], key, ido, idf);
      found += ido[0] != 0;
    }
  }
  CHECK(found > 0);
  uint64_t ao = 0, af = 0;
  CHECK_INT(fq_store_applied(p->o, &ao, &err), 0);
  CHECK_INT(fq_store_applied(p->f, &af, &err), 0);
  CHECK_INT(ao, p->seq);
  CHECK_INT(af, p->seq);
}

/* Close both, compare every database row by row, reopen. */
static void same_rows(pair_t *p, const char *what) {
  fq_buf_t a, b;
  fq_buf_init(&a, 256 << 20);
  fq_buf_init(&b, 256 << 20);
  pair_close_stores(p);
  size_t ra = dump_env(p->odir, &a), rb = dump_env(p->fdir, &b);
  CHECK_INT(rb, ra);
  CHECK(ra > 0);
  same_dump(&a, &b, what);
  fq_buf_free(&a);
  fq_buf_free(&b);
  pair_open_stores(p);
}

/* --- the run ---------------------------------------------------------------- */

FQ_TEST(follower_reproduces_owner) {
  pair_t p;
  fq_err_t err;
  if (!pair_open(&p)) {
    FQ__FAIL("cannot open the stores");
    pair_free(&p);
    return;
  }
  enum { N = 400 };
  static fq_cmdrec_t c[N];
  int n = 0, k = 0;
  /* Two hours ago: old enough for the retention of batch 7 (the dedupe
   * window is checked against the clock). */
  int64_t t = fq_now_ms() - 2 * 3600 * 1000;
  char key[32];

  /* 1: a batch of submits for several tenants and cars, two of them
   * scheduled, some of a campaign. */
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = 0; i < 40; i++, n++, k++) {
    snprintf(key, sizeof key, "k%d", k);
    submit(p.o, &c[n], TENANTS[i % NTEN], key, i % 7, t, i % 20 == 3 ? t + 5000 : 0,
           i % 5 == 0 ? "camp-1" : NULL);
  }
  ship(&p);

  /* 2: dispatch: sessions saved (counters reserved ahead), commands
   * moving, some to a terminal state; a scheduled one released into its
   * queue; a scheduled one cancelled. */
  t += 100;
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int v = 0; v < 7; v++) {
    char vin[18];
    uint8_t sess[40];
    snprintf(vin, sizeof vin, "5YJ3%013d", v);
    memset(sess, v + 1, sizeof sess);
    CHECK_INT(fq_store_session_put(p.o, vin, 2, sess, sizeof sess, &err), 0);
  }
  for (int i = 0; i < 40; i++) {
    if (c[i].state == FQ_ST_SCHEDULED) continue;
    move(p.o, &c[i], FQ_ST_DISPATCHING, t);
    if (i % 3 == 0) move(p.o, &c[i], FQ_ST_SENT, t + 1);
    if (i % 6 == 0) move(p.o, &c[i], FQ_ST_SUCCEEDED, t + 2);
    if (i % 6 == 3) move(p.o, &c[i], FQ_ST_FAILED, t + 2);
  }
  /* i = 3 released: out of `sched`, into `active` at a fresh position */
  CHECK_INT(fq_store_sched_del(p.o, c[3].not_before, c[3].id, &err), 0);
  c[3].qseq = fq_store_new_qseq(p.o);
  move(p.o, &c[3], FQ_ST_QUEUED, t);
  CHECK_INT(fq_store_active_put(p.o, &c[3], &err), 0);
  /* i = 23 cancelled while scheduled */
  CHECK_INT(fq_store_sched_del(p.o, c[23].not_before, c[23].id, &err), 0);
  move(p.o, &c[23], FQ_ST_CANCELLED, t);
  ship(&p);

  /* 3: an aborted batch: its ids, seqs and rows are dropped, and so is
   * its write set (the next batch reuses the ids). */
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  fq_cmdrec_t lost[5];
  for (int i = 0; i < 5; i++) {
    snprintf(key, sizeof key, "lost%d", i);
    submit(p.o, &lost[i], "acme", key, 9, t, 0, NULL);
  }
  move(p.o, &c[1], FQ_ST_SUCCEEDED, t);
  CHECK(p.ws.nops > 0);
  fq_store_abort(p.o);
  CHECK_INT(p.ws.nops, 0);
  CHECK_INT(p.ws.ops.len, 0);
  c[1].state = FQ_ST_DISPATCHING; /* what the store still holds */
  c[1].ntrans--;

  /* 4: a batch with a nested transaction that deletes and is dropped,
   * then one that deletes and is kept. */
  t += 100;
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = 0; i < 30; i++, n++, k++) {
    snprintf(key, sizeof key, "k%d", k);
    submit(p.o, &c[n], TENANTS[(i + 1) % NTEN], key, 10 + i % 5, t, 0, NULL);
  }
  uint32_t before = p.ws.nops;
  CHECK_INT(fq_store_nest_begin(p.o, &err), 0);
  uint64_t h;
  CHECK_INT(fq_store_cmd_del(p.o, c[0].id, &err), 0);
  CHECK_INT(fq_store_idem_del(p.o, c[0].id, &h, &err), 0);
  const uint8_t *ev;
  size_t evlen;
  uint64_t seq0;
  CHECK_INT(fq_store_event_first(p.o, &seq0, &ev, &evlen, &err), 0);
  CHECK_INT(fq_store_event_del(p.o, seq0, c[0].tenant, strlen(c[0].tenant), 1, &err), 0);
  CHECK(p.ws.nops > before);
  fq_store_nest_abort(p.o);
  CHECK_INT(p.ws.nops, before);
  CHECK_INT(fq_store_nest_begin(p.o, &err), 0);
  CHECK_INT(fq_store_cmd_del(p.o, c[6].id, &err), 0); /* succeeded in batch 2 */
  CHECK_INT(fq_store_nest_commit(p.o, &err), 0);
  CHECK_INT(p.ws.nops, before + 1);
  /* a delete of a row that is not there writes nothing, records nothing */
  CHECK_INT(fq_store_active_del(p.o, c[6].id, &err), 0);
  CHECK_INT(p.ws.nops, before + 1);
  for (int i = 40; i < 55; i++) move(p.o, &c[i], FQ_ST_DISPATCHING, t + 1);
  ship(&p);

  /* 5: many tenants in one batch (more than the 64 counters the commit's
   * list starts with), a campaign's rows, sessions rewritten. */
  t += 100;
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = 0; i < 90; i++, n++, k++) {
    char tenant[16];
    snprintf(tenant, sizeof tenant, "t%02d", i);
    snprintf(key, sizeof key, "k%d", k);
    submit(p.o, &c[n], i < 80 ? tenant : TENANTS[i % NTEN], key, 20 + i % 11, t, 0,
           i % 2 ? "camp-2" : NULL);
  }
  for (int v = 0; v < 3; v++) {
    char vin[18];
    uint8_t sess[48];
    snprintf(vin, sizeof vin, "5YJ3%013d", v);
    memset(sess, 0x40 + v, sizeof sess);
    CHECK_INT(fq_store_session_put(p.o, vin, 2, sess, sizeof sess, &err), 0);
    CHECK_INT(fq_store_session_put(p.o, vin, 3, sess, 20, &err), 0);
  }
  ship(&p);

  /* 6: everything moves on; a scheduled command put and removed in one
   * batch (both writes are in the write set, in order). */
  t += 100;
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = 0; i < n; i++) {
    if (fq_state_terminal(c[i].state) || c[i].state == FQ_ST_SCHEDULED) continue;
    if (c[i].state == FQ_ST_QUEUED) move(p.o, &c[i], FQ_ST_DISPATCHING, t);
    move(p.o, &c[i], i % 4 ? FQ_ST_SUCCEEDED : FQ_ST_UNKNOWN, t + 1);
  }
  snprintf(key, sizeof key, "k%d", k++);
  submit(p.o, &c[n], "acme", key, 3, t, t + 9999, NULL);
  CHECK_INT(fq_store_sched_del(p.o, c[n].not_before, c[n].id, &err), 0);
  move(p.o, &c[n], FQ_ST_CANCELLED, t);
  n++;
  ship(&p);
  same_answers(&p, k);
  same_rows(&p, "after 5 batches");

  /* 7: retention in the shard's batch: old events, terminal commands and
   * expired keys pruned in a nested transaction of a batch that also
   * takes new submits. */
  int64_t now = fq_now_ms();
  fq_retention_opts_t ro = {.retention_ms = 1800 * 1000, .dedupe_window_ms = 1800 * 1000,
                            .batch = 1000};
  fq_retention_t *r = fq_retention_new(p.o, &ro, now, &err);
  CHECK(r != NULL);
  size_t dropped = 0;
  CHECK_INT(fq_store_set_dedupe_window(p.f, ro.dedupe_window_ms, now, &dropped, &err), 0);
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = 0; i < 10; i++, n++, k++) {
    snprintf(key, sizeof key, "k%d", k);
    submit(p.o, &c[n], TENANTS[i % NTEN], key, 40 + i, now, 0, NULL);
  }
  size_t pruned = r ? fq_retention_step(r, now) : 0;
  CHECK(pruned > 100);
  ship(&p);
  if (r) fq_retention_committed(r);

  /* 8: the next batch after pruning */
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  for (int i = n - 10; i < n; i++) move(p.o, &c[i], FQ_ST_EXPIRED, now + 5);
  ship(&p);

  same_answers(&p, k);
  CHECK_INT(p.commits, 7); /* batch 3 was aborted */
  CHECK_INT(p.seq, 7);
  /* a key of a pruned command dedupes nothing on either side */
  char id[FQ_ID_LEN + 1];
  key_id(p.f, "acme", "k0", id);
  CHECK_STR(id, "");
  fq_retention_destroy(&r);
  same_rows(&p, "after retention");
  /* and after both were reopened */
  same_answers(&p, k);
  fprintf(stderr, "  %u write sets shipped, up to %zu operations each, %d commands\n",
          p.commits, p.max_ops, n);
  pair_free(&p);
}

/* --- refusals ------------------------------------------------------------- */

/* A write set built by hand: ops appended with fq_ws_put / fq_ws_del. */
static void hand_msg(fq_buf_t *out, unsigned shard, const fq_ws_t *w) {
  fq_buf_reset(out);
  CHECK_INT(fq_ws_encode(w, shard, 1, "evil", out), 0);
}

FQ_TEST(apply_refuses_repeats_holes_strangers_and_garbage) {
  pair_t p;
  fq_err_t err;
  if (!pair_open(&p)) {
    FQ__FAIL("cannot open the stores");
    pair_free(&p);
    return;
  }
  fq_cmdrec_t c[8];
  fq_buf_t m2, m3, bad, before, after;
  fq_buf_init(&m2, 0);
  fq_buf_init(&m3, 0);
  fq_buf_init(&bad, 0);
  fq_buf_init(&before, 0);
  fq_buf_init(&after, 0);
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c[0], "acme", "k0", 1, 1000, 0, NULL);
  submit(p.o, &c[1], "acme", "k1", 2, 1000, 0, NULL);
  ship(&p);
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c[2], "globex", "k2", 3, 1000, 0, NULL);
  move(p.o, &c[0], FQ_ST_SUCCEEDED, 1001);
  ship(&p);
  fq_buf_append(&m2, p.msg.data, p.msg.len);
  /* entry 3 is made by the owner but not yet applied */
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c[3], "acme", "k3", 4, 1000, 0, NULL);
  move(p.o, &c[1], FQ_ST_FAILED, 1002);
  CHECK_INT(fq_store_prepare(p.o, 3, &err), 0);
  CHECK_INT(fq_ws_encode(&p.ws, SHARD, 3, "node-a", &m3), 0);
  CHECK_INT(fq_store_commit(p.o, &err), 0);

  pair_close_stores(&p);
  dump_env(p.fdir, &before);
  pair_open_stores(&p);

  /* a repeat: entry 2 again, and entry 1's seq */
  CHECK_INT(fq_store_apply(p.f, m2.data, m2.len, 2, &err), FQ_STORE_EREPEAT);
  CHECK(strstr(err.msg, "repeat") != NULL);
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 1, &err), FQ_STORE_EREPEAT);
  /* a hole: entry 3 delivered as 4, and entry 3's bytes at 5 */
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 4, &err), FQ_STORE_EHOLE);
  CHECK(strstr(err.msg, "missing") != NULL);
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 5, &err), FQ_STORE_EHOLE);
  /* entry 3's operations under another shard's number */
  hand_msg(&bad, SHARD + 1, &p.ws);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_STORE_ESHARD);
  /* every truncation of entry 3, and a byte too many */
  for (size_t cut = 1; cut < m3.len; cut++) {
    int rc = fq_store_apply(p.f, m3.data, cut, 3, &err);
    if (rc != FQ_EPROTO) FQ__FAIL("entry 3 cut at %zu/%zu: %d (%s)", cut, m3.len, rc, err.msg);
  }
  fq_buf_reset(&bad);
  fq_buf_append(&bad, m3.data, m3.len);
  fq_buf_append(&bad, "\xc0", 1);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_EPROTO);
  /* a length that claims more than there is */
  const uint8_t huge[] = {0x95, 0x01, SHARD, 0x01, 0xa1, 'x', 0xdd, 0x7f, 0xff, 0xff, 0xff};
  CHECK_INT(fq_store_apply(p.f, huge, sizeof huge, 3, &err), FQ_EPROTO);
  /* well-formed but hostile: a db index past camp; a delete of a key the
   * copy lacks after a put (the put must not stay); a write set prepared
   * as another entry; an empty entry that is not the genesis */
  fq_ws_t w;
  fq_ws_init(&w, 0);
  CHECK_INT(fq_ws_put(&w, 12, "k", 1, "v", 1), 0);
  hand_msg(&bad, SHARD, &w);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_EPROTO);
  CHECK(strstr(err.msg, "db index 12") != NULL);
  fq_ws_reset(&w);
  CHECK_INT(fq_ws_put(&w, 5, "planted", 7, "x", 1), 0);
  CHECK_INT(fq_ws_del(&w, 1, "00ffffffffffffff", 16), 0);
  hand_msg(&bad, SHARD, &w);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_ESTORAGE);
  CHECK(strstr(err.msg, "differs") != NULL);
  fq_ws_reset(&w);
  uint8_t seven[8] = {0, 0, 0, 0, 0, 0, 0, 7};
  CHECK_INT(fq_ws_put(&w, 0, "applied", 7, seven, 8), 0);
  hand_msg(&bad, SHARD, &w);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_EPROTO);
  CHECK(strstr(err.msg, "prepared as another") != NULL);
  /* meta store_id names one copy: a log entry that writes it is refused,
   * a put and a delete alike */
  fq_ws_reset(&w);
  CHECK_INT(fq_ws_put(&w, 0, "store_id", 8, "0123456789abcdef", 16), 0);
  hand_msg(&bad, SHARD, &w);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_EPROTO);
  CHECK(strstr(err.msg, "store_id") != NULL);
  fq_ws_reset(&w);
  CHECK_INT(fq_ws_del(&w, 0, "store_id", 8), 0);
  hand_msg(&bad, SHARD, &w);
  CHECK_INT(fq_store_apply(p.f, bad.data, bad.len, 3, &err), FQ_EPROTO);
  fq_ws_free(&w);
  CHECK_INT(fq_store_apply(p.f, (const uint8_t *)"", 0, 3, &err), FQ_EPROTO);
  /* apply is a follower's: not inside a transaction, not with capture on */
  CHECK_INT(fq_store_begin(p.f, false, &err), 0);
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 3, &err), FQ_EINTERNAL);
  fq_store_abort(p.f);
  fq_ws_t w2;
  fq_ws_init(&w2, 0);
  CHECK_INT(fq_store_capture(p.f, &w2, &err), 0);
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 3, &err), FQ_EINTERNAL);
  CHECK_INT(fq_store_capture(p.f, NULL, &err), 0);
  fq_ws_free(&w2);

  /* the follower is as it was: still at 2, the same rows */
  uint64_t ap = 0;
  CHECK_INT(fq_store_applied(p.f, &ap, &err), 0);
  CHECK_INT(ap, 2);
  CHECK_INT(fq_store_next_seq(p.f), 5);
  pair_close_stores(&p);
  dump_env(p.fdir, &after);
  same_dump(&before, &after, "follower after the refusals");
  pair_open_stores(&p);

  /* and entry 3 itself still applies, once */
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 3, &err), 0);
  CHECK_INT(fq_store_apply(p.f, m3.data, m3.len, 3, &err), FQ_STORE_EREPEAT);
  p.seq = 3;
  same_answers(&p, 4);
  same_rows(&p, "after entry 3");
  fq_buf_free(&m2);
  fq_buf_free(&m3);
  fq_buf_free(&bad);
  fq_buf_free(&before);
  fq_buf_free(&after);
  pair_free(&p);
}

/* The stream's first entry is the empty genesis: a new follower takes it
 * as entry 1, and the owner's first batch is entry 2. */
FQ_TEST(genesis_then_first_batch) {
  pair_t p;
  fq_err_t err;
  if (!pair_open(&p)) {
    FQ__FAIL("cannot open the stores");
    pair_free(&p);
    return;
  }
  uint64_t ap = 99;
  CHECK_INT(fq_store_applied(p.f, &ap, &err), 0);
  CHECK_INT(ap, 0);
  CHECK_INT(fq_store_apply(p.f, NULL, 0, 2, &err), FQ_EPROTO);
  CHECK_INT(fq_store_apply(p.f, NULL, 0, 1, &err), 0);
  CHECK_INT(fq_store_apply(p.f, NULL, 0, 1, &err), FQ_STORE_EREPEAT);
  CHECK_INT(fq_store_applied(p.f, &ap, &err), 0);
  CHECK_INT(ap, 1);
  /* the owner took the genesis too (its catch-up before the first append) */
  fq_store_capture(p.o, NULL, &err);
  CHECK_INT(fq_store_apply(p.o, NULL, 0, 1, &err), 0);
  CHECK_INT(fq_store_capture(p.o, &p.ws, &err), 0);
  p.seq = 1;
  fq_cmdrec_t c;
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c, "acme", "k0", 1, 1000, 0, NULL);
  ship(&p);
  CHECK_INT(p.seq, 2);
  same_answers(&p, 1);
  same_rows(&p, "genesis and one batch");
  pair_free(&p);
}

/* prepare's rules, and a write set without room. */
FQ_TEST(prepare_rules_and_full_write_set) {
  pair_t p;
  fq_err_t err;
  if (!pair_open(&p)) {
    FQ__FAIL("cannot open the stores");
    pair_free(&p);
    return;
  }
  fq_cmdrec_t c[4];
  /* outside a write transaction */
  CHECK_INT(fq_store_prepare(p.o, 1, &err), FQ_EINTERNAL);
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c[0], "acme", "k0", 1, 1000, 0, NULL);
  /* not the next entry */
  CHECK_INT(fq_store_prepare(p.o, 2, &err), FQ_STORE_EHOLE);
  CHECK_INT(fq_store_prepare(p.o, 0, &err), FQ_STORE_EREPEAT);
  /* not inside a nested transaction */
  CHECK_INT(fq_store_nest_begin(p.o, &err), 0);
  CHECK_INT(fq_store_prepare(p.o, 1, &err), FQ_EINTERNAL);
  fq_store_nest_abort(p.o);
  CHECK_INT(fq_store_prepare(p.o, 1, &err), 0);
  CHECK_INT(fq_store_prepare(p.o, 1, &err), FQ_EINTERNAL); /* once */
  /* no write after it: it would be committed but not in the log */
  uint32_t nops = p.ws.nops;
  CHECK_INT(fq_store_session_put(p.o, "5YJ30000000000001", 2, (const uint8_t *)"s", 1, &err),
            FQ_EINTERNAL);
  CHECK_INT(p.ws.nops, nops);
  fq_buf_reset(&p.msg);
  CHECK_INT(fq_ws_encode(&p.ws, SHARD, 1, "node-a", &p.msg), 0);
  CHECK_INT(fq_store_commit(p.o, &err), 0);
  CHECK_INT(fq_store_apply(p.f, p.msg.data, p.msg.len, 1, &err), 0);
  p.seq = 1;
  p.commits = 1;
  same_answers(&p, 1);

  /* a write set that is full: the write is refused and not made */
  fq_ws_t small;
  fq_ws_init(&small, 600);
  CHECK_INT(fq_store_capture(p.o, &small, &err), 0);
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  CHECK_INT(fq_store_capture(p.o, &p.ws, &err), FQ_EINTERNAL); /* not mid-transaction */
  int rc = 0, made = 0;
  for (int i = 1; i < 4 && !rc; i++) {
    memset(&c[i], 0, sizeof c[i]);
    fq_store_new_id(p.o, c[i].id, &c[i].qseq);
    snprintf(c[i].tenant, sizeof c[i].tenant, "acme");
    snprintf(c[i].key, sizeof c[i].key, "big%d", i);
    snprintf(c[i].device, sizeof c[i].device, "v:X");
    snprintf(c[i].reason, sizeof c[i].reason, "%0200d", i);
    c[i].ntrans = 0;
    rc = fq_store_cmd_put(p.o, &c[i], &err);
    if (!rc) made++;
  }
  CHECK_INT(rc, FQ_ETOOLARGE);
  CHECK_INT(small.nops, (uint32_t)made);
  fq_cmdrec_t got;
  CHECK_INT(fq_store_cmd_get(p.o, c[made + 1].id, FQ_ID_LEN, &got, &err), FQ_ENOTFOUND);
  fq_store_abort(p.o);
  CHECK_INT(fq_store_capture(p.o, NULL, &err), 0);
  fq_ws_free(&small);

  /* single node: commit writes no "applied" */
  CHECK_INT(fq_store_begin(p.o, true, &err), 0);
  submit(p.o, &c[1], "acme", "solo", 1, 1000, 0, NULL);
  CHECK_INT(fq_store_commit(p.o, &err), 0);
  uint64_t ap = 0;
  CHECK_INT(fq_store_applied(p.o, &ap, &err), 0);
  CHECK_INT(ap, 1);
  pair_free(&p);
}
