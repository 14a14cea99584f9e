/*
 * Unit tests of the shard store: records, dedupe index, per-device FIFO,
 * deadline index, event log, per-tenant event sequence (tseq),
 * persistence across reopen, refusal of a store
 * of another shard, a full map reported as storage_full, and the data
 * directory's lock and shard-count file.
 */
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fq_test.h"
#include "store.h"
#include "util.h"

static char *tmpdir(void) {
  static char path[64];
  snprintf(path, sizeof path, "/tmp/fq_store_XXXXXX");
  return mkdtemp(path);
}

static void rm_rf(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

static void fill(fq_cmdrec_t *r, fq_store_t *s, const char *device, const char *key, int64_t dl) {
  memset(r, 0, sizeof *r);
  fq_store_new_id(s, r->id, &r->qseq);
  snprintf(r->tenant, sizeof r->tenant, "acme");
  snprintf(r->key, sizeof r->key, "%s", key);
  snprintf(r->account, sizeof r->account, "acct");
  snprintf(r->vin, sizeof r->vin, "5YJ30123456789ABC");
  snprintf(r->device, sizeof r->device, "%s", device);
  snprintf(r->command, sizeof r->command, "door_lock");
  r->state = FQ_ST_QUEUED;
  r->fault = -1;
  r->deadline = dl;
  r->created = r->updated = 1000;
  r->ttl_ms = 60000;
  r->hash[0] = (uint8_t)key[0];
  r->ntrans = 1;
  r->trans[0].state = FQ_ST_QUEUED;
  r->trans[0].at = 1000;
}

static int collect(void *ud, const char *id, const char *device, int64_t deadline) {
  char *out = ud;
  char item[64];
  snprintf(item, sizeof item, "%s@%s@%lld,", id + 12, device, (long long)deadline);
  strcat(out, item);
  return 0;
}

static int count_events(void *ud, uint64_t seq, const uint8_t *ev, size_t len) {
  uint64_t *c = ud;
  (void)ev;
  (void)len;
  CHECK_INT(seq, c[1] + 1);
  c[1] = seq;
  c[0]++;
  return 0;
}

FQ_TEST(record_roundtrip_and_indexes) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 3, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  fq_cmdrec_t a, b, c;
  fill(&a, s, "v:AAA", "k1", 5000);
  fill(&b, s, "v:BBB", "k2", 3000);
  fill(&c, s, "v:AAA", "k3", 4000);
  uint8_t params[] = {0x81, 0xa7, 'p', 'e', 'r', 'c', 'e', 'n', 't', 0x50};
  a.params = params;
  a.params_len = sizeof params;
  CHECK_INT(fq_store_id_shard(a.id, strlen(a.id)), 3);
  CHECK_INT(fq_store_cmd_put(s, &a, &err), 0);
  CHECK_INT(fq_store_cmd_put(s, &b, &err), 0);
  CHECK_INT(fq_store_cmd_put(s, &c, &err), 0);
  CHECK_INT(fq_store_idem_put(s, &a, &err), 0);
  CHECK_INT(fq_store_active_put(s, &a, &err), 0);
  CHECK_INT(fq_store_active_put(s, &b, &err), 0);
  CHECK_INT(fq_store_active_put(s, &c, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);

  CHECK_INT(fq_store_begin(s, false, &err), 0);
  fq_cmdrec_t got;
  CHECK_INT(fq_store_cmd_get(s, a.id, FQ_ID_LEN, &got, &err), 0);
  CHECK_STR(got.id, a.id);
  CHECK_STR(got.device, "v:AAA");
  CHECK_INT(got.state, FQ_ST_QUEUED);
  CHECK_INT(got.fault, -1);
  CHECK_INT(got.deadline, 5000);
  CHECK_MEM(got.params, got.params_len, params, sizeof params);
  CHECK_MEM(got.hash, 32, a.hash, 32);
  CHECK_INT(got.ntrans, 1);
  fq_cmdrec_free(&got);
  uint8_t h[32];
  char id[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_idem_get(s, "acme", 4, "k1", 2, h, id, &err), 0);
  CHECK_STR(id, a.id);
  CHECK_INT(fq_store_idem_get(s, "acme", 4, "nope", 4, h, id, &err), FQ_ENOTFOUND);
  CHECK_INT(fq_store_idem_get(s, "acm", 3, "ek1", 3, h, id, &err), FQ_ENOTFOUND);
  char order[4096] = "";
  CHECK_INT(fq_store_active_scan(s, collect, order, &err), 0);
  char want[4096];
  snprintf(want, sizeof want, "%.4s@v:AAA@5000,%.4s@v:BBB@3000,%.4s@v:AAA@4000,", a.id + 12,
           b.id + 12, c.id + 12);
  CHECK_STR(order, want);
  fq_store_abort(s);
  /* Removing from `active` is durable, and the id <-> number mapping holds. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_store_active_del(s, b.id, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);
  char idbuf[FQ_ID_LEN + 1];
  fq_store_id_format(3, fq_store_id_num(c.id), idbuf);
  CHECK_STR(idbuf, c.id);
  fq_store_destroy(&s);
  CHECK(s == NULL);
  /* Reopen: the dedupe table is rebuilt from the log, `active` kept. */
  s = fq_store_open(dir, 3, 64 << 20, &err);
  CHECK(s != NULL);
  if (s) {
    CHECK_INT(fq_store_begin(s, false, &err), 0);
    CHECK_INT(fq_store_idem_get(s, "acme", 4, "k1", 2, h, id, &err), 0);
    CHECK_STR(id, a.id);
    order[0] = 0;
    CHECK_INT(fq_store_active_scan(s, collect, order, &err), 0);
    snprintf(want, sizeof want, "%.4s@v:AAA@5000,%.4s@v:AAA@4000,", a.id + 12, c.id + 12);
    CHECK_STR(order, want);
    fq_store_abort(s);
    fq_store_destroy(&s);
  }
  rm_rf(dir);
}

static int collect_q(void *ud, const char *id, const char *device, int64_t deadline,
                     uint64_t qpos) {
  char *out = ud;
  char item[80];
  snprintf(item, sizeof item, "%s@%s@%lld@%llu,", id + 12, device, (long long)deadline,
           (unsigned long long)qpos);
  strcat(out, item);
  return 0;
}

static int collect_sched(void *ud, int64_t not_before, const char *id) {
  char *out = ud;
  char item[64];
  snprintf(item, sizeof item, "%s@%lld,", id + 12, (long long)not_before);
  strcat(out, item);
  return 0;
}

/* The schedule index: rows in time order, `due` bounded by time and
 * count, `next` the earliest time and the count, durable across reopen;
 * an `active` row carries its queue position only when it is not the id's
 * number, and both forms read back with the right position. */
FQ_TEST(sched_index_and_queue_positions) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 1, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  int64_t nb;
  size_t n;
  CHECK_INT(fq_store_sched_next(s, &nb, &n, &err), 0);
  CHECK(nb == INT64_MAX);
  CHECK_INT(n, 0);
  fq_cmdrec_t a, b, c;
  fill(&a, s, "v:AAA", "k1", 9000);
  fill(&b, s, "v:AAA", "k2", 9000);
  fill(&c, s, "v:BBB", "k3", 9000);
  a.not_before = 3000;
  b.not_before = 2000;
  c.not_before = 3000;
  CHECK_INT(fq_store_sched_put(s, &a, &err), 0);
  CHECK_INT(fq_store_sched_put(s, &b, &err), 0);
  CHECK_INT(fq_store_sched_put(s, &c, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);
  fq_store_destroy(&s);
  s = fq_store_open(dir, 1, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_store_sched_next(s, &nb, &n, &err), 0);
  CHECK(nb == 2000);
  CHECK_INT(n, 3);
  char got[1024] = "", want[1024];
  CHECK_INT(fq_store_sched_due(s, 1999, 10, collect_sched, got, &err), 0);
  CHECK_STR(got, "");
  CHECK_INT(fq_store_sched_due(s, 3000, 2, collect_sched, got, &err), 0);
  snprintf(want, sizeof want, "%.4s@2000,%.4s@3000,", b.id + 12, a.id + 12);
  CHECK_STR(got, want);
  /* Released: b enters its queue behind a command created after it. */
  CHECK_INT(fq_store_sched_del(s, b.not_before, b.id, &err), 0);
  CHECK_INT(fq_store_sched_del(s, 1, b.id, &err), 0); /* absent: no error */
  fq_cmdrec_t d;
  fill(&d, s, "v:AAA", "k4", 8000);
  CHECK_INT(fq_store_active_put(s, &d, &err), 0);
  b.qseq = fq_store_new_qseq(s);
  CHECK(b.qseq > d.qseq);
  CHECK_INT(fq_store_active_put(s, &b, &err), 0);
  /* Commands created after a release have a position past their number. */
  fq_cmdrec_t e;
  fill(&e, s, "v:AAA", "k5", 7000);
  CHECK(e.qseq != fq_store_id_num(e.id));
  CHECK_INT(fq_store_active_put(s, &e, &err), 0);
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  CHECK_INT(fq_store_sched_next(s, &nb, &n, &err), 0);
  CHECK(nb == 3000);
  CHECK_INT(n, 2);
  got[0] = 0;
  CHECK_INT(fq_store_active_scan_q(s, collect_q, got, &err), 0);
  snprintf(want, sizeof want, "%.4s@v:AAA@9000@%llu,%.4s@v:AAA@8000@%llu,%.4s@v:AAA@7000@%llu,",
           b.id + 12, (unsigned long long)b.qseq, d.id + 12,
           (unsigned long long)fq_store_id_num(d.id), e.id + 12, (unsigned long long)e.qseq);
  CHECK_STR(got, want);
  /* The scan without positions reads both row forms too. */
  got[0] = 0;
  CHECK_INT(fq_store_active_scan(s, collect, got, &err), 0);
  snprintf(want, sizeof want, "%.4s@v:AAA@9000,%.4s@v:AAA@8000,%.4s@v:AAA@7000,", b.id + 12,
           d.id + 12, e.id + 12);
  CHECK_STR(got, want);
  fq_store_abort(s);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(aborted_dedupe_entry_is_not_found) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  fq_cmdrec_t a;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  fill(&a, s, "v:AAA", "gone", 1);
  CHECK_INT(fq_store_idem_put(s, &a, &err), 0);
  uint8_t h[32];
  char id[FQ_ID_LEN + 1];
  CHECK_INT(fq_store_idem_get(s, "acme", 4, "gone", 4, h, id, &err), 0);
  fq_store_abort(s);
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  CHECK_INT(fq_store_idem_get(s, "acme", 4, "gone", 4, h, id, &err), FQ_ENOTFOUND);
  fq_store_abort(s);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(events_and_counters_survive_reopen) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  char first[FQ_ID_LEN + 1];
  uint64_t q;
  CHECK_INT(fq_store_next_seq(s), 1);
  for (int batch = 0; batch < 3; batch++) {
    CHECK_INT(fq_store_begin(s, true, &err), 0);
    for (int i = 0; i < 10; i++) CHECK_INT(fq_store_event_append(s, NULL, 0, (const uint8_t *)"\x80", 1, &err), 0);
    if (batch == 0) fq_store_new_id(s, first, &q);
    CHECK_INT(fq_store_commit(s, &err), 0);
  }
  /* An aborted transaction consumes nothing. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  CHECK_INT(fq_store_event_append(s, NULL, 0, (const uint8_t *)"\x80", 1, &err), 0);
  fq_store_abort(s);
  CHECK_INT(fq_store_next_seq(s), 31);
  fq_store_destroy(&s);

  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_next_seq(s), 31);
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  char next[FQ_ID_LEN + 1];
  fq_store_new_id(s, next, &q);
  CHECK(strcmp(next, first) > 0);
  uint64_t c[2] = {0, 10};
  CHECK_INT(fq_store_event_scan(s, 10, 1000, count_events, c, &err), 0);
  CHECK_INT(c[0], 20);
  fq_store_abort(s);
  fq_store_destroy(&s);

  /* The same directory opened as another shard is refused. */
  s = fq_store_open(dir, 1, 64 << 20, &err);
  CHECK(s == NULL);
  CHECK(strstr(err.msg, "shard") != NULL);
  rm_rf(dir);
}

/* --- tseq ------------------------------------------------------------------- */

typedef struct tev {
  int n;
  uint64_t seq[32];
  char body[32][16];
} tev_t;

static int collect_tev(void *ud, uint64_t seq, const uint8_t *ev, size_t len) {
  tev_t *t = ud;
  if (t->n == 32) return 1;
  t->seq[t->n] = seq;
  snprintf(t->body[t->n], sizeof t->body[0], "%.*s", (int)len, (const char *)ev);
  t->n++;
  return 0;
}

/* Append an event of tenant t (its body "t:tseq"), checking the tseq it
 * is about to get. */
static void append_t(fq_store_t *s, const char *t, uint64_t want, int line) {
  fq_err_t err;
  uint64_t got = fq_store_next_tseq(s, t, strlen(t));
  if (got != want) {
    fprintf(stderr, "  line %d: tenant %s: next tseq %llu, want %llu\n", line, t,
            (unsigned long long)got, (unsigned long long)want);
    fq_test_failures++;
  }
  char body[16];
  int n = snprintf(body, sizeof body, "%s:%llu", t, (unsigned long long)got);
  CHECK_INT(fq_store_event_append(s, t, strlen(t), (const uint8_t *)body, (size_t)n, &err), 0);
}
#define APPEND_T(s, t, want) append_t(s, t, want, __LINE__)

static tev_t tenant_scan(fq_store_t *s, const char *t, uint64_t after, size_t limit) {
  tev_t out;
  fq_err_t err;
  memset(&out, 0, sizeof out);
  CHECK_INT(fq_store_tenant_event_scan(s, t, strlen(t), after, limit, collect_tev, &out, &err), 0);
  return out;
}

/* Change the store as an older fleetqd (or damage) would have left it,
 * with LMDB directly: drop the tseq databases, or set one counter row. */
static int raw_edit(const char *dir, bool drop, const char *tenant, uint64_t last) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi count, index;
  int rc = mdb_env_create(&env);
  if (rc) return rc;
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_mapsize(env, 64 << 20);
  if ((rc = mdb_env_open(env, dir, MDB_NOTLS, 0600)) == 0 &&
      (rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
    if ((rc = mdb_dbi_open(txn, "tcount", 0, &count)) == 0 &&
        (rc = mdb_dbi_open(txn, "tindex", 0, &index)) == 0) {
      if (drop) {
        if ((rc = mdb_drop(txn, count, 1)) == 0) rc = mdb_drop(txn, index, 1);
      } else {
        uint8_t b[8];
        for (int i = 0; i < 8; i++) b[i] = (uint8_t)(last >> (56 - 8 * i));
        MDB_val k = {strlen(tenant), (void *)tenant}, d = {8, b};
        rc = mdb_put(txn, count, &k, &d, 0);
      }
    }
    if (rc) mdb_txn_abort(txn);
    else rc = mdb_txn_commit(txn);
  }
  mdb_env_close(env);
  return rc;
}

FQ_TEST(tseq_per_tenant_abort_reopen_and_old_stores) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  /* Interleaved tenants, one of them a prefix of another. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  APPEND_T(s, "acme", 1);
  APPEND_T(s, "beta", 1);
  APPEND_T(s, "acme", 2);
  APPEND_T(s, "acme2", 1);
  APPEND_T(s, "beta", 2);
  APPEND_T(s, "acme", 3);
  CHECK_INT(fq_store_next_seq(s), 7);
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 4);
  CHECK_INT(fq_store_next_tseq(s, "beta", 4), 3);
  CHECK_INT(fq_store_next_tseq(s, "zeta", 4), 1);

  /* An aborted transaction gives nothing away: the same tseqs again. */
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  APPEND_T(s, "acme", 4);
  APPEND_T(s, "zeta", 1);
  APPEND_T(s, "acme", 5);
  fq_store_abort(s);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 4);
  CHECK_INT(fq_store_next_tseq(s, "zeta", 4), 1);
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  APPEND_T(s, "zeta", 1);
  APPEND_T(s, "acme", 4);
  CHECK_INT(fq_store_commit(s, &err), 0);
  /* A read transaction sees the committed counters. */
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 5);
  fq_store_abort(s);

  /* The index pages by tseq, one tenant's events only. */
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  tev_t t = tenant_scan(s, "acme", 0, 100);
  CHECK_INT(t.n, 4);
  for (int i = 0; i < t.n; i++) {
    char want[16];
    snprintf(want, sizeof want, "acme:%d", i + 1);
    CHECK_INT(t.seq[i], (uint64_t)i + 1);
    CHECK_STR(t.body[i], want);
  }
  t = tenant_scan(s, "acme", 2, 1);
  CHECK(t.n == 1 && t.seq[0] == 3 && strcmp(t.body[0], "acme:3") == 0);
  t = tenant_scan(s, "acme", 4, 100);
  CHECK_INT(t.n, 0);
  t = tenant_scan(s, "acm", 0, 100);
  CHECK_INT(t.n, 0);
  t = tenant_scan(s, "acme2", 0, 100);
  CHECK(t.n == 1 && strcmp(t.body[0], "acme2:1") == 0);
  t = tenant_scan(s, "zeta", 0, 100);
  CHECK(t.n == 1 && strcmp(t.body[0], "zeta:1") == 0);
  fq_store_abort(s);
  fq_store_destroy(&s);

  /* Reopen: the counters are where they were. */
  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 5);
  CHECK_INT(fq_store_next_tseq(s, "beta", 4), 3);
  CHECK_INT(fq_store_next_tseq(s, "acme2", 5), 2);
  CHECK_INT(fq_store_next_tseq(s, "zeta", 4), 2);
  CHECK_INT(fq_store_next_seq(s), 9);
  fq_store_destroy(&s);

  /* A counter row behind the index (damage) never makes a tseq repeat. */
  CHECK_INT(raw_edit(dir, false, "acme", 1), 0);
  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 5);
  fq_store_destroy(&s);

  /* A store from before tseq (no tcount, no tindex) opens; its events
   * stay, without tseq; each tenant's next event gets 1. */
  CHECK_INT(raw_edit(dir, true, NULL, 0), 0);
  s = fq_store_open(dir, 0, 64 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_next_seq(s), 9);
  CHECK_INT(fq_store_next_tseq(s, "acme", 4), 1);
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  APPEND_T(s, "acme", 1);
  APPEND_T(s, "acme", 2);
  CHECK_INT(fq_store_commit(s, &err), 0);
  CHECK_INT(fq_store_begin(s, false, &err), 0);
  uint64_t c[2] = {0, 0};
  CHECK_INT(fq_store_event_scan(s, 0, 1000, count_events, c, &err), 0);
  CHECK_INT(c[0], 10);
  t = tenant_scan(s, "acme", 0, 100);
  CHECK(t.n == 2 && strcmp(t.body[0], "acme:1") == 0 && strcmp(t.body[1], "acme:2") == 0);
  fq_store_abort(s);
  fq_store_destroy(&s);
  rm_rf(dir);
}

FQ_TEST(full_map_is_storage_full) {
  char *dir = tmpdir();
  fq_err_t err;
  fq_store_t *s = fq_store_open(dir, 0, 1 << 20, &err);
  CHECK(s != NULL);
  if (!s) return;
  CHECK_INT(fq_store_begin(s, true, &err), 0);
  uint8_t big[2000];
  memset(big, 0x42, sizeof big);
  int rc = 0;
  for (int i = 0; i < 10000 && rc == 0; i++) rc = fq_store_event_append(s, NULL, 0, big, sizeof big, &err);
  CHECK_INT(rc, FQ_ESTORFULL);
  CHECK(strstr(err.msg, "storage full") != NULL);
  fq_store_abort(s);
  fq_store_destroy(&s);
  rm_rf(dir);
}

/* Records written before the wakes count (compact version 1: the same
 * layout without the trailing u32 and with flag bit 1 unused) still
 * decode: no wakes, `wake` true; they are rewritten as version 2. */
FQ_TEST(compact_record_v1_still_decodes) {
  fq_cmdrec_t a;
  memset(&a, 0, sizeof a);
  snprintf(a.id, sizeof a.id, "00030000000000ac");
  snprintf(a.tenant, sizeof a.tenant, "acme");
  snprintf(a.key, sizeof a.key, "k1");
  snprintf(a.account, sizeof a.account, "acct-1");
  snprintf(a.vin, sizeof a.vin, "5YJ30123456789ABC");
  snprintf(a.device, sizeof a.device, "v:5YJ30123456789ABC");
  snprintf(a.command, sizeof a.command, "door_lock");
  a.state = FQ_ST_WAKING;
  a.fault = -1;
  a.attempts = 1;
  a.coalesce = true;
  a.ntrans = 2;
  a.trans[0].state = FQ_ST_QUEUED;
  a.trans[1].state = FQ_ST_WAKING;
  fq_buf_t c;
  fq_buf_init(&c, 0);
  a.wakes = 3;
  /* Without a not_before: written as version 2, as before it existed. */
  CHECK_INT(fq_cmdrec_encode(&a, &c), 0);
  CHECK_INT(c.data[1], 2);
  fq_buf_reset(&c);
  a.not_before = 1764390000123;
  CHECK_INT(fq_cmdrec_encode(&a, &c), 0);
  CHECK_INT(c.data[1], 3);
  fq_cmdrec_t b;
  fq_err_t err;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), 0);
  CHECK(b.not_before == a.not_before);
  CHECK_INT(b.wakes, 3);
  fq_cmdrec_free(&b);
  /* What version 2 wrote: no not_before. */
  c.data[1] = 2;
  c.len -= 8;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), 0);
  CHECK(b.not_before == 0);
  CHECK_INT(b.wakes, 3);
  fq_cmdrec_free(&b);
  /* Turn it into what version 1 wrote. */
  c.data[1] = 1;
  c.len -= 4;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), 0);
  CHECK_STR(b.id, a.id);
  CHECK_INT(b.state, FQ_ST_WAKING);
  CHECK(b.coalesce);
  CHECK(!b.no_wake);
  CHECK_INT(b.wakes, 0);
  CHECK_INT(b.ntrans, 2);
  fq_cmdrec_free(&b);
  /* A version-1 record with four stray bytes after it is damage, not v2. */
  c.len += 4;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), FQ_ESTORAGE);
  /* An unknown newer version is refused. */
  c.data[1] = 4;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), FQ_ESTORAGE);
  fq_buf_free(&c);
}

/* The compact stored form: every field comes back, the `get` form built
 * from it is the map fq_cmdrec_pack gives for the same record, the older
 * map form still decodes, and every truncation or damaged version byte is
 * refused rather than read past. */
FQ_TEST(compact_record_codec) {
  fq_cmdrec_t a;
  memset(&a, 0, sizeof a);
  snprintf(a.id, sizeof a.id, "00030000000000ab");
  snprintf(a.tenant, sizeof a.tenant, "acme");
  memset(a.key, 'k', 128);
  snprintf(a.account, sizeof a.account, "acct-1");
  a.site = 0;
  snprintf(a.vin, sizeof a.vin, "5YJ30123456789ABC");
  snprintf(a.device, sizeof a.device, "v:5YJ30123456789ABC");
  snprintf(a.command, sizeof a.command, "set_charge_limit");
  uint8_t params[] = {0x81, 0xa7, 'p', 'e', 'r', 'c', 'e', 'n', 't', 0x50};
  a.params = params;
  a.params_len = sizeof params;
  for (int i = 0; i < 32; i++) a.hash[i] = (uint8_t)(i * 7 + 1);
  a.state = FQ_ST_FAILED;
  memset(a.reason, 'r', FQ_REASON_MAX - 1);
  a.error = FQ_ENOTPAIRED;
  a.http = 200;
  a.fault = 3;
  a.attempts = 2;
  a.created = 1764000000000;
  a.updated = 1764000000123;
  a.deadline = 1764000060000;
  a.ttl_ms = 60000;
  a.coalesce = true;
  a.no_wake = true;
  a.wakes = 3;
  a.qseq = 0x1234567890ull;
  a.ntrans = FQ_MAX_TRANSITIONS;
  for (int i = 0; i < FQ_MAX_TRANSITIONS; i++) {
    a.trans[i].state = i % FQ_ST_COUNT_;
    a.trans[i].at = 1764000000000 + i;
  }
  fq_buf_t c, w1, w2;
  fq_buf_init(&c, 0);
  fq_buf_init(&w1, 0);
  fq_buf_init(&w2, 0);
  CHECK_INT(fq_cmdrec_encode(&a, &c), 0);
  CHECK(c.len > 0 && c.data[0] == 0xC1);
  fq_cmdrec_t b;
  fq_err_t err;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), 0);
  CHECK_STR(b.id, a.id);
  CHECK_STR(b.tenant, a.tenant);
  CHECK_STR(b.key, a.key);
  CHECK_STR(b.account, a.account);
  CHECK_STR(b.vin, a.vin);
  CHECK_STR(b.device, a.device);
  CHECK_STR(b.command, a.command);
  CHECK_STR(b.reason, a.reason);
  CHECK_MEM(b.params, b.params_len, params, sizeof params);
  CHECK_MEM(b.hash, 32, a.hash, 32);
  CHECK_INT(b.state, a.state);
  CHECK_INT(b.error, a.error);
  CHECK_INT(b.http, a.http);
  CHECK_INT(b.fault, a.fault);
  CHECK_INT(b.attempts, a.attempts);
  CHECK_INT(b.created, a.created);
  CHECK_INT(b.updated, a.updated);
  CHECK_INT(b.deadline, a.deadline);
  CHECK_INT(b.ttl_ms, a.ttl_ms);
  CHECK(b.coalesce);
  CHECK(b.no_wake);
  CHECK_INT(b.wakes, 3);
  CHECK(b.qseq == a.qseq);
  CHECK_INT(b.ntrans, FQ_MAX_TRANSITIONS);
  CHECK_INT(b.trans[63].state, a.trans[63].state);
  CHECK_INT(b.trans[63].at, a.trans[63].at);
  /* The `get` map of the decoded record is the map of the original. */
  CHECK_INT(fq_cmdrec_pack(&a, &w1), 0);
  CHECK_INT(fq_cmdrec_pack(&b, &w2), 0);
  CHECK_MEM(w2.data, w2.len, w1.data, w1.len);
  fq_cmdrec_free(&b);
  /* A site command (no VIN, no fault) and the older map form. */
  a.vin[0] = 0;
  a.site = 1234567;
  a.fault = -1;
  a.params = NULL;
  a.params_len = 0;
  a.reason[0] = 0;
  fq_buf_reset(&c);
  CHECK_INT(fq_cmdrec_encode(&a, &c), 0);
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), 0);
  CHECK_STR(b.vin, "");
  CHECK(b.site == 1234567);
  CHECK_INT(b.fault, -1);
  CHECK(b.params == NULL && b.params_len == 0);
  fq_cmdrec_free(&b);
  fq_buf_reset(&w1);
  CHECK_INT(fq_cmdrec_pack(&a, &w1), 0);
  CHECK_INT(fq_cmdrec_unpack(w1.data, w1.len, &b, &err), 0);
  CHECK(b.site == 1234567);
  CHECK_INT(b.ntrans, FQ_MAX_TRANSITIONS);
  fq_cmdrec_free(&b);
  /* Damage. */
  for (size_t n = 0; n < c.len; n++) {
    int rc = fq_cmdrec_unpack(c.data, n, &b, &err);
    CHECK_INT(rc, FQ_ESTORAGE);
    if (rc == 0) fq_cmdrec_free(&b);
  }
  c.data[1] = 99;
  CHECK_INT(fq_cmdrec_unpack(c.data, c.len, &b, &err), FQ_ESTORAGE);
  fq_buf_free(&c);
  fq_buf_free(&w1);
  fq_buf_free(&w2);
}

/* The whole content of a small file, or "" when it cannot be read. */
static const char *slurp(const char *path) {
  static char buf[64];
  buf[0] = 0;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return buf;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  return buf;
}

static void put_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

/* First use creates the directory and records the count; a second claim
 * while the first is held is refused as busy (flock is per open file, so
 * this holds within one process too) and leaves the first one working;
 * closing releases the lock. */
FQ_TEST(datadir_lock_and_first_run) {
  char *tmp = tmpdir();
  char dir[128], path[160];
  snprintf(dir, sizeof dir, "%s/data", tmp);
  fq_err_t err;
  fq_err_clear(&err);
  /* b starts non-NULL: a refused call must set it to NULL. */
  fq_store_datadir_t *a = NULL, *b = (fq_store_datadir_t *)&err;
  CHECK_INT(fq_store_open_datadir(dir, 4, &a, &err), 0);
  CHECK(a != NULL);
  struct stat st;
  CHECK_INT(stat(dir, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0700);
  snprintf(path, sizeof path, "%s/SHARDS", dir);
  CHECK_STR(slurp(path), "4\n");
  snprintf(path, sizeof path, "%s/SHARDS.tmp", dir);
  CHECK(access(path, F_OK) != 0);

  CHECK_INT(fq_store_open_datadir(dir, 4, &b, &err), FQ_EBUSY);
  CHECK(b == NULL);
  CHECK(strstr(err.msg, "in use by another fleetqd") != NULL);
  CHECK(strstr(err.msg, dir) != NULL);

  fq_store_close_datadir(&a);
  CHECK(a == NULL);
  fq_store_close_datadir(&a); /* NULL is accepted */
  CHECK_INT(fq_store_open_datadir(dir, 4, &b, &err), 0);
  CHECK(b != NULL);
  fq_store_close_datadir(&b);
  rm_rf(tmp);
}

/* Another count than the recorded one is refused, naming the count to use,
 * and the file keeps the first count; a file that holds no count is
 * refused too rather than silently accepted. */
FQ_TEST(datadir_shard_count_fixed) {
  char *dir = tmpdir();
  char path[160];
  snprintf(path, sizeof path, "%s/SHARDS", dir);
  fq_err_t err;
  fq_err_clear(&err);
  fq_store_datadir_t *d = NULL;
  CHECK_INT(fq_store_open_datadir(dir, 2, &d, &err), 0);
  fq_store_close_datadir(&d);

  CHECK_INT(fq_store_open_datadir(dir, 3, &d, &err), FQ_ECONFIG);
  CHECK(d == NULL);
  CHECK(strstr(err.msg, "created with 2 shard(s)") != NULL);
  CHECK(strstr(err.msg, "--shards 2") != NULL);
  CHECK_STR(slurp(path), "2\n");
  /* The refusal released the lock. */
  CHECK_INT(fq_store_open_datadir(dir, 2, &d, &err), 0);
  fq_store_close_datadir(&d);

  const char *bad[] = {"", "x\n", "0\n", "2 shards\n", "99999999999\n"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    put_file(path, bad[i]);
    fq_err_clear(&err);
    CHECK_INT(fq_store_open_datadir(dir, 2, &d, &err), FQ_ECONFIG);
    CHECK(strstr(err.msg, "does not hold a shard count") != NULL);
  }
  /* Written by an older fleetqd without the newline: still read. */
  put_file(path, "2");
  CHECK_INT(fq_store_open_datadir(dir, 2, &d, &err), 0);
  fq_store_close_datadir(&d);
  rm_rf(dir);
}
