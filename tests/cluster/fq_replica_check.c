/*
 * fq_replica_check: the replica building blocks (src/cluster/replica.h)
 * against a real NATS JetStream cluster, for
 * tests/integration/test_cluster_replica.py.  Every line it prints is
 * "word key=value ...", flushed; failed checks print "FAIL ..." lines
 * (store_gen.c's CHECK macros) and make the exit status 1.
 *
 *   fq_replica_check URLS DIR run SHARD BATCHES PER_BATCH PAUSE_AFTER
 *       Three stores in DIR/a, DIR/b, DIR/c.  a takes the shard over
 *       (marker), then writes BATCHES batches of realistic commands through
 *       the store API (PER_BATCH submits with keys for several tenants,
 *       the earlier commands moved on to terminal states, sessions), each
 *       with fq_replica_commit; c catches up every few batches, b at the
 *       end.  After batch PAUSE_AFTER it prints "pause" and waits for a
 *       line on stdin (the test kills a nats-server meanwhile).  Then b
 *       takes over: a's next fq_replica_commit must be FQ_CL_EFENCED and
 *       leave a's store exactly as it was; b commits a batch; a and c
 *       catch up; the three environments must be equal row by row.
 *   fq_replica_check URLS DIR unavail SHARD PER_BATCH GIVE_UP_MS
 *       a takes the shard over and commits a batch, prints "pause" and
 *       waits for a line (the test kills 2 of the 3 nats-servers: no
 *       quorum); its next commit must give up after GIVE_UP_MS with
 *       FQ_CL_EUNAVAIL and leave the store as it was; "pause" again (the
 *       servers come back); a catches up (the given-up batch may have
 *       landed after all: then it is applied from the log), commits one
 *       more batch, and b, following, must equal a row by row.
 *   fq_replica_check URLS DIR bench SHARD BATCHES PER_BATCH
 *       The commit of a batch of PER_BATCH submits: fq_replica_commit
 *       (prepare, encode, append at R3, commit) against fq_store_commit of
 *       a single-node store; prints the medians and p90s.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nats/nats.h>

#include "fq_test.h"
#include "replica.h"
#include "store_gen.h"
#include "util.h"

#define MAP (1ull << 30)

static const char *const TENANTS[] = {"acme", "globex", "initech", "umbrella", "hooli"};
#define NTEN 5

typedef struct node {
  const char *name;
  char dir[512];
  fq_cl_t *cl;
  fq_store_t *s;
  fq_ws_t ws;
  fq_replica_t r;
} node_t;

static int say_fail(const char *what, int rc, const fq_err_t *e) {
  printf("FAIL %s: code=%d (%s) %s\n", what, rc, fq_cl_strerror(rc), e->msg);
  fflush(stdout);
  fq_test_failures++;
  return rc;
}

static bool node_open(node_t *n, const char *urls, const char *base, const char *name,
                      unsigned shard) {
  fq_err_t e;
  memset(n, 0, sizeof *n);
  n->name = name;
  snprintf(n->dir, sizeof n->dir, "%s/%s", base, name);
  fq_cl_opts_t o;
  fq_cl_opts_init(&o);
  o.urls = urls;
  o.node_id = name;
  int rc = fq_cl_connect(&o, &n->cl, &e);
  if (rc) return say_fail("connect", rc, &e), false;
  n->s = fq_store_open(n->dir, shard, MAP, &e);
  if (!n->s) return say_fail("store open", e.code, &e), false;
  fq_ws_init(&n->ws, 8u << 20);
  fq_replica_init(&n->r, shard, 0);
  return true;
}

static void node_close_store(node_t *n) { fq_store_destroy(&n->s); }

static bool node_reopen_store(node_t *n, unsigned shard, bool capture) {
  fq_err_t e;
  n->s = fq_store_open(n->dir, shard, MAP, &e);
  if (!n->s) return say_fail("store reopen", e.code, &e), false;
  if (capture) CHECK_INT(fq_store_capture(n->s, &n->ws, &e), 0);
  return true;
}

static void node_free(node_t *n) {
  fq_store_destroy(&n->s);
  fq_cl_close(&n->cl);
  fq_ws_free(&n->ws);
  fq_replica_free(&n->r);
}

static uint64_t applied_of(fq_store_t *s) {
  fq_err_t e;
  uint64_t a = 0;
  CHECK_INT(fq_store_applied(s, &a, &e), 0);
  return a;
}

/* --- a realistic stream of batches ------------------------------------------- */

typedef struct gen {
  fq_cmdrec_t *c;
  int n, cap;
  int moved;       /* commands before this one are terminal */
  int k;           /* next key */
  int64_t t;
} gen_t;

/* One batch as a shard writes it: the previous batch's commands move on
 * (dispatching, sent, a terminal state; a few stay in flight), sessions
 * are saved for the cars dispatched to, and `per` new submits arrive. */
static void gen_batch(fq_store_t *s, gen_t *g, int per, bool new_keys_only) {
  fq_err_t e;
  g->t += 40;
  if (!new_keys_only) {
    for (int i = g->moved; i < g->n; i++) {
      fq_cmdrec_t *r = &g->c[i];
      if (fq_state_terminal(r->state)) continue;
      if (r->state == FQ_ST_QUEUED) move(s, r, FQ_ST_DISPATCHING, g->t);
      if (i % 7 == 3) continue; /* still dispatching: moves next time */
      if (r->state == FQ_ST_DISPATCHING) move(s, r, FQ_ST_SENT, g->t + 1);
      move(s, r, i % 11 == 0 ? FQ_ST_UNKNOWN : i % 5 == 0 ? FQ_ST_FAILED : FQ_ST_SUCCEEDED,
           g->t + 2);
    }
    while (g->moved < g->n && fq_state_terminal(g->c[g->moved].state)) g->moved++;
    for (int v = 0; v < 4; v++) {
      char vin[18];
      uint8_t sess[44];
      snprintf(vin, sizeof vin, "5YJ3%013d", (g->k + v) % 37);
      memset(sess, (g->k + v) & 0xff, sizeof sess);
      CHECK_INT(fq_store_session_put(s, vin, 2, sess, sizeof sess, &e), 0);
    }
  }
  for (int i = 0; i < per; i++) {
    char key[32];
    snprintf(key, sizeof key, "key-%d", g->k);
    fq_cmdrec_t scratch, *r = &scratch;
    if (g->n < g->cap) r = &g->c[g->n++];
    submit(s, r, TENANTS[g->k % NTEN], key, g->k % 37, g->t, 0, g->k % 9 == 0 ? "camp-1" : NULL);
    g->k++;
  }
}

/* --- run ---------------------------------------------------------------------- */

static bool take_over(node_t *n, uint64_t term, uint64_t *marker) {
  fq_err_t e;
  fq_replica_set_term(&n->r, term);
  int rc = fq_replica_take_over(n->s, &n->ws, n->cl, &n->r, marker, &e);
  if (rc) return say_fail("take over", rc, &e), false;
  printf("takeover node=%s term=%" PRIu64 " marker=%" PRIu64 " applied=%" PRIu64 "\n", n->name,
         term, *marker, n->r.applied);
  return true;
}

static bool catch_up(node_t *n, const char *why) {
  fq_err_t e;
  int64_t t0 = fq_mono_ns();
  int rc = fq_replica_catch_up(n->s, n->cl, &n->r, 0, &e);
  if (rc) return say_fail(why, rc, &e), false;
  printf("caught_up node=%s applied=%" PRIu64 " took_ms=%" PRId64 " resubs=%" PRIu64
         " why=%s\n", n->name, applied_of(n->s), (fq_mono_ns() - t0) / 1000000, n->r.resubs, why);
  return true;
}

/* Close the stores, compare every row of each with a's, reopen; *same:
 * whether all were equal. */
static size_t compare_all(node_t *nodes, int count, unsigned shard, const char *what,
                          bool *same) {
  fq_buf_t ref, other;
  fq_buf_init(&ref, 512u << 20);
  fq_buf_init(&other, 512u << 20);
  for (int i = 0; i < count; i++) node_close_store(&nodes[i]);
  size_t rows = dump_env(nodes[0].dir, &ref);
  *same = true;
  for (int i = 1; i < count; i++) {
    size_t r2 = dump_env(nodes[i].dir, &other);
    char label[128];
    snprintf(label, sizeof label, "%s: %s vs %s", what, nodes[0].name, nodes[i].name);
    CHECK_INT(r2, rows);
    if (r2 != rows || !same_dump(&ref, &other, label)) {
      printf("FAIL rows differ: %s\n", label);
      *same = false;
    }
  }
  for (int i = 0; i < count; i++) node_reopen_store(&nodes[i], shard, false);
  fq_buf_free(&ref);
  fq_buf_free(&other);
  return rows;
}

static int cmd_run(const char *urls, const char *dir, unsigned shard, int batches, int per,
                   int pause_after) {
  fq_err_t e;
  node_t nd[3];
  memset(nd, 0, sizeof nd);
  node_t *a = &nd[0], *b = &nd[1], *c = &nd[2];
  if (!node_open(a, urls, dir, "a", shard) || !node_open(b, urls, dir, "b", shard) ||
      !node_open(c, urls, dir, "c", shard))
    return 1;
  int rc = fq_cl_ensure_shard(a->cl, shard, &e);
  if (rc) return say_fail("ensure shard", rc, &e), 1;
  uint64_t marker = 0;
  if (!take_over(a, 7, &marker)) return 1;
  CHECK_INT(marker, 2); /* after the genesis */

  gen_t g = {.cap = batches * per + per, .t = fq_now_ms()};
  g.c = calloc((size_t)g.cap, sizeof *g.c);
  if (!g.c) return 1;
  int64_t worst_ns = 0;
  for (int i = 1; i <= batches; i++) {
    CHECK_INT(fq_store_begin(a->s, true, &e), 0);
    gen_batch(a->s, &g, per, false);
    uint64_t before = applied_of(a->s), retries = a->r.retries;
    int64_t t0 = fq_mono_ns();
    rc = fq_replica_commit(a->s, &a->ws, a->cl, &a->r, &e);
    int64_t dt = fq_mono_ns() - t0;
    if (dt > worst_ns) worst_ns = dt;
    if (rc) {
      say_fail("commit", rc, &e);
      break;
    }
    CHECK_INT(applied_of(a->s), before + 1);
    printf("batch i=%d seq=%" PRIu64 " ops=%" PRIu32 " bytes=%zu commit_ms=%.1f retries=%" PRIu64
           "\n", i, applied_of(a->s), a->ws.nops, a->r.msg.len, dt / 1e6, a->r.retries - retries);
    fflush(stdout);
    if (i % 3 == 0 && !catch_up(c, "during")) break;
    if (i == pause_after) {
      printf("pause batch=%d\n", i);
      fflush(stdout);
      char line[64];
      if (!fgets(line, sizeof line, stdin)) break;
    }
  }
  printf("owner_done applied=%" PRIu64 " appended=%" PRIu64 " retries=%" PRIu64
         " worst_commit_ms=%.1f commands=%d\n", applied_of(a->s), a->r.appended, a->r.retries,
         worst_ns / 1e6, g.n);
  if (!catch_up(b, "end") || !catch_up(c, "end")) return 1;
  uint64_t la = applied_of(a->s);
  CHECK_INT(applied_of(b->s), la);
  CHECK_INT(applied_of(c->s), la);
  bool same = false;
  size_t rows = compare_all(nd, 3, shard, "after the batches", &same);
  CHECK_INT(fq_store_capture(a->s, &a->ws, &e), 0);
  printf("%s stage=batches rows=%zu applied=%" PRIu64 "\n", same ? "identical" : "differ", rows,
         la);

  /* Fencing.  b takes over; a, which still believes it owns the shard,
   * makes one more batch: the log refuses it, and a's store is as before. */
  if (!take_over(b, 8, &marker)) return 1;
  CHECK_INT(marker, la + 1);
  fq_buf_t before, after;
  fq_buf_init(&before, 512u << 20);
  fq_buf_init(&after, 512u << 20);
  node_close_store(a);
  dump_env(a->dir, &before);
  node_reopen_store(a, shard, true);
  uint64_t next_seq = fq_store_next_seq(a->s);
  CHECK_INT(fq_store_begin(a->s, true, &e), 0);
  gen_batch(a->s, &g, per, false);
  rc = fq_replica_commit(a->s, &a->ws, a->cl, &a->r, &e);
  printf("fenced rc=%d code=%s %s\n", rc, fq_cl_strerror(rc), e.msg);
  CHECK_INT(rc, FQ_CL_EFENCED);
  CHECK_INT(applied_of(a->s), la);
  CHECK_INT(fq_store_next_seq(a->s), next_seq);
  node_close_store(a);
  dump_env(a->dir, &after);
  if (!same_dump(&before, &after, "the fenced owner's store"))
    printf("FAIL the fenced owner's store changed\n");
  else
    printf("unchanged node=a applied=%" PRIu64 "\n", la);
  node_reopen_store(a, shard, false);
  fq_buf_free(&before);
  fq_buf_free(&after);

  /* The new owner goes on from its copy (a's lost batch is nowhere); the
   * old one steps down and follows. */
  gen_t g2 = {.cap = per, .t = fq_now_ms(), .k = 1000000};
  g2.c = calloc((size_t)g2.cap, sizeof *g2.c);
  CHECK_INT(fq_store_begin(b->s, true, &e), 0);
  gen_batch(b->s, &g2, per, false);
  rc = fq_replica_commit(b->s, &b->ws, b->cl, &b->r, &e);
  if (rc) say_fail("new owner's commit", rc, &e);
  CHECK_INT(applied_of(b->s), la + 2);
  if (!catch_up(a, "stepped down") || !catch_up(c, "after takeover")) return 1;
  CHECK_INT(fq_store_capture(b->s, NULL, &e), 0);
  rows = compare_all(nd, 3, shard, "after the takeover", &same);
  printf("%s stage=takeover rows=%zu applied=%" PRIu64 "\n", same ? "identical" : "differ", rows,
         applied_of(a->s));
  free(g.c);
  free(g2.c);
  for (int i = 0; i < 3; i++) node_free(&nd[i]);
  printf("done failures=%d\n", fq_test_failures);
  return fq_test_failures ? 1 : 0;
}

/* --- no quorum ------------------------------------------------------------------ */

static bool wait_line(const char *what) {
  printf("pause at=%s\n", what);
  fflush(stdout);
  char line[64];
  return fgets(line, sizeof line, stdin) != NULL;
}

static int cmd_unavail(const char *urls, const char *dir, unsigned shard, int per,
                       int64_t give_up_ms) {
  fq_err_t e;
  node_t nd[2];
  memset(nd, 0, sizeof nd);
  node_t *a = &nd[0], *b = &nd[1];
  if (!node_open(a, urls, dir, "a", shard) || !node_open(b, urls, dir, "b", shard)) return 1;
  int rc = fq_cl_ensure_shard(a->cl, shard, &e);
  if (rc) return say_fail("ensure shard", rc, &e), 1;
  uint64_t marker = 0;
  if (!take_over(a, 21, &marker)) return 1;
  gen_t g = {.cap = 4 * per, .t = fq_now_ms()};
  g.c = calloc((size_t)g.cap, sizeof *g.c);
  CHECK_INT(fq_store_begin(a->s, true, &e), 0);
  gen_batch(a->s, &g, per, false);
  rc = fq_replica_commit(a->s, &a->ws, a->cl, &a->r, &e);
  if (rc) return say_fail("first commit", rc, &e), 1;
  uint64_t la = applied_of(a->s);
  if (!wait_line("quorum_lost")) return 1;

  fq_buf_t before, after;
  fq_buf_init(&before, 512u << 20);
  fq_buf_init(&after, 512u << 20);
  node_close_store(a);
  dump_env(a->dir, &before);
  node_reopen_store(a, shard, true);
  uint64_t next_seq = fq_store_next_seq(a->s);
  a->r.unavail_ms = give_up_ms;
  CHECK_INT(fq_store_begin(a->s, true, &e), 0);
  gen_batch(a->s, &g, per, false);
  int64_t t0 = fq_mono_ns();
  rc = fq_replica_commit(a->s, &a->ws, a->cl, &a->r, &e);
  int64_t took = (fq_mono_ns() - t0) / 1000000;
  printf("gave_up rc=%d took_ms=%" PRId64 " retries=%" PRIu64 " %s\n", rc, took, a->r.retries,
         e.msg);
  CHECK_INT(rc, FQ_CL_EUNAVAIL);
  CHECK(took >= give_up_ms);
  CHECK_INT(applied_of(a->s), la);
  CHECK_INT(fq_store_next_seq(a->s), next_seq);
  node_close_store(a);
  dump_env(a->dir, &after);
  if (!same_dump(&before, &after, "the store after a given-up commit"))
    printf("FAIL the store changed after a given-up commit\n");
  else
    printf("unchanged node=a applied=%" PRIu64 "\n", la);
  fq_buf_free(&before);
  fq_buf_free(&after);
  node_reopen_store(a, shard, false);
  a->r.unavail_ms = FQ_REPLICA_UNAVAIL_MS;
  if (!wait_line("quorum_back")) return 1;

  /* The given-up batch is in the log or not (its leader may have kept it
   * and committed it once the others came back): either way this copy
   * takes what the log holds, and only that. */
  if (!catch_up(a, "quorum back")) return 1;
  uint64_t now_at = applied_of(a->s);
  printf("given_up_batch %s\n", now_at == la + 1 ? "landed" : now_at == la ? "dropped" : "?");
  CHECK(now_at == la || now_at == la + 1);
  CHECK_INT(fq_store_capture(a->s, &a->ws, &e), 0);
  CHECK_INT(fq_store_begin(a->s, true, &e), 0);
  gen_batch(a->s, &g, per, false);
  rc = fq_replica_commit(a->s, &a->ws, a->cl, &a->r, &e);
  if (rc) say_fail("commit after the quorum came back", rc, &e);
  CHECK_INT(applied_of(a->s), now_at + 1);
  CHECK_INT(fq_store_capture(a->s, NULL, &e), 0);
  if (!catch_up(b, "follower")) return 1;
  bool same = false;
  size_t rows = compare_all(nd, 2, shard, "after the quorum came back", &same);
  printf("%s stage=unavail rows=%zu applied=%" PRIu64 "\n", same ? "identical" : "differ", rows,
         applied_of(a->s));
  free(g.c);
  for (int i = 0; i < 2; i++) node_free(&nd[i]);
  return fq_test_failures ? 1 : 0;
}

/* --- bench ---------------------------------------------------------------------- */

static int cmp_i64(const void *x, const void *y) {
  int64_t p = *(const int64_t *)x, q = *(const int64_t *)y;
  return p < q ? -1 : p > q;
}

static int cmd_bench(const char *urls, const char *dir, unsigned shard, int batches, int per) {
  fq_err_t e;
  node_t a, l;
  if (!node_open(&a, urls, dir, "a", shard) || !node_open(&l, urls, dir, "local", shard)) return 1;
  int rc = fq_cl_ensure_shard(a.cl, shard, &e);
  if (rc) return say_fail("ensure shard", rc, &e), 1;
  uint64_t marker = 0;
  if (!take_over(&a, 11, &marker)) return 1;
  int64_t *rep = calloc((size_t)batches, sizeof *rep), *loc = calloc((size_t)batches, sizeof *loc);
  gen_t ga = {.t = fq_now_ms()}, gl = {.t = fq_now_ms()};
  size_t bytes = 0;
  for (int i = 0; i < batches; i++) {
    /* Alternate which goes first, so that neither always meets a warm
     * (or a busy) disk. */
    for (int w = 0; w < 2; w++) {
      bool replicated = (i + w) % 2 == 0;
      node_t *n = replicated ? &a : &l;
      CHECK_INT(fq_store_begin(n->s, true, &e), 0);
      gen_batch(n->s, replicated ? &ga : &gl, per, true);
      int64_t t0 = fq_mono_ns();
      rc = replicated ? fq_replica_commit(n->s, &n->ws, n->cl, &n->r, &e)
                      : fq_store_commit(n->s, &e);
      int64_t dt = fq_mono_ns() - t0;
      if (rc) return say_fail(replicated ? "replicated commit" : "local commit", rc, &e), 1;
      if (replicated) {
        rep[i] = dt;
        bytes += a.r.msg.len;
      } else {
        loc[i] = dt;
      }
    }
  }
  qsort(rep, (size_t)batches, sizeof *rep, cmp_i64);
  qsort(loc, (size_t)batches, sizeof *loc, cmp_i64);
  printf("bench per=%d batches=%d bytes_per_batch=%zu replicated_median_us=%" PRId64
         " replicated_p90_us=%" PRId64 " local_median_us=%" PRId64 " local_p90_us=%" PRId64
         " retries=%" PRIu64 "\n", per, batches, bytes / (size_t)batches, rep[batches / 2] / 1000,
         rep[batches * 9 / 10] / 1000, loc[batches / 2] / 1000, loc[batches * 9 / 10] / 1000,
         a.r.retries);
  free(rep);
  free(loc);
  node_free(&a);
  node_free(&l);
  return fq_test_failures ? 1 : 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 4) {
    fprintf(stderr, "usage: fq_replica_check URLS DIR run|unavail|bench ...\n");
    return 1;
  }
  const char *urls = argv[1], *dir = argv[2], *cmd = argv[3];
  mkdir(dir, 0700);
  int ex;
  if (!strcmp(cmd, "run") && argc == 8)
    ex = cmd_run(urls, dir, (unsigned)atoi(argv[4]), atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
  else if (!strcmp(cmd, "unavail") && argc == 7)
    ex = cmd_unavail(urls, dir, (unsigned)atoi(argv[4]), atoi(argv[5]), strtoll(argv[6], NULL, 10));
  else if (!strcmp(cmd, "bench") && argc == 7)
    ex = cmd_bench(urls, dir, (unsigned)atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
  else {
    fprintf(stderr, "usage: fq_replica_check URLS DIR run SHARD BATCHES PER PAUSE_AFTER | "
                    "unavail SHARD PER GIVE_UP_MS | bench SHARD BATCHES PER\n");
    ex = 1;
  }
  nats_Close();
  return ex;
}
