/*
 * Store generators and comparisons shared by the tests of replicated
 * stores (tests/unit/test_store_ws.c, tests/cluster/fq_replica_check.c):
 * the writes of a submit and of a transition made through the store API
 * as the shard makes them, and a row-by-row dump of an LMDB environment.
 * Checks report through fq_test.h's macros (fq_test_failures).
 */
#include "store_gen.h"

#include <lmdb.h>
#include <stdlib.h>
#include <string.h>

#include "fleetq/wire.h"
#include "fq_test.h"

void rm_rf(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cleanup failed\n");
}

static const char *const DBS[] = {"meta",    "cmd",    "idemlog", "active", "events",
                                  "session", "tcount", "tindex",  "sched",  "camp"};
#define NDBS (sizeof DBS / sizeof DBS[0])

static void hex_to(fq_buf_t *b, const void *p, size_t n) {
  static const char hx[] = "0123456789abcdef";
  const uint8_t *q = p;
  for (size_t i = 0; i < n; i++) {
    char t[2] = {hx[q[i] >> 4], hx[q[i] & 15]};
    fq_buf_append(b, t, 2);
  }
}

/* Every named database of the environment in dir (no store may have it
 * open), one line per row: "db key value" in hex, in key order; and the
 * names in the main database.  Returns the number of rows. */
size_t dump_env(const char *dir, fq_buf_t *out) {
  MDB_env *env;
  MDB_txn *txn;
  size_t rows = 0;
  fq_buf_reset(out);
  CHECK_INT(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_mapsize(env, STORE_GEN_MAP);
  CHECK_INT(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600), 0);
  CHECK_INT(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  MDB_dbi main;
  CHECK_INT(mdb_dbi_open(txn, NULL, 0, &main), 0);
  MDB_cursor *cur;
  MDB_val k, d;
  CHECK_INT(mdb_cursor_open(txn, main, &cur), 0);
  fq_buf_append(out, "names:", 6);
  for (int rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    fq_buf_append(out, " ", 1);
    fq_buf_append(out, k.mv_data, k.mv_size);
  }
  fq_buf_append(out, "\n", 1);
  mdb_cursor_close(cur);
  for (size_t i = 0; i < NDBS; i++) {
    MDB_dbi dbi;
    CHECK_INT(mdb_dbi_open(txn, DBS[i], 0, &dbi), 0);
    CHECK_INT(mdb_cursor_open(txn, dbi, &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
      /* meta `store_id` names this copy (it stamps the restart snapshot,
       * store.c): each node's copy has its own, never replicated. */
      if (strcmp(DBS[i], "meta") == 0 && k.mv_size == 8 && memcmp(k.mv_data, "store_id", 8) == 0)
        continue;
      fq_buf_append(out, DBS[i], strlen(DBS[i]));
      fq_buf_append(out, " ", 1);
      hex_to(out, k.mv_data, k.mv_size);
      fq_buf_append(out, " ", 1);
      hex_to(out, d.mv_data, d.mv_size);
      fq_buf_append(out, "\n", 1);
      rows++;
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return rows;
}

/* Equal dumps; else the first line that differs, with its line number. */
bool same_dump(const fq_buf_t *a, const fq_buf_t *b, const char *what) {
  if (a->len == b->len && memcmp(a->data, b->data, a->len) == 0) return true;
  const char *pa = (const char *)a->data, *ea = pa + a->len;
  const char *pb = (const char *)b->data, *eb = pb + b->len;
  for (int line = 1;; line++) {
    const char *na = pa < ea ? memchr(pa, '\n', (size_t)(ea - pa)) : NULL;
    const char *nb = pb < eb ? memchr(pb, '\n', (size_t)(eb - pb)) : NULL;
    size_t la = na ? (size_t)(na - pa) : 0, lb = nb ? (size_t)(nb - pb) : 0;
    if (!na || !nb || la != lb || memcmp(pa, pb, la) != 0) {
      FQ__FAIL("%s: line %d differs:\n    %.*s\n    %.*s", what, line, (int)(la > 300 ? 300 : la),
               na ? pa : "(end)", (int)(lb > 300 ? 300 : lb), nb ? pb : "(end)");
      if (!na) FQ__FAIL("%s: first dump ends at line %d", what, line);
      return false;
    }
    pa = na + 1;
    pb = nb + 1;
  }
}

void add_event(fq_store_t *s, const fq_cmdrec_t *rec, int prev) {
  fq_event_t ev;
  fq_err_t err;
  memset(&ev, 0, sizeof ev);
  ev.id = (fq_str_t){rec->id, strlen(rec->id)};
  ev.tenant = (fq_str_t){rec->tenant, strlen(rec->tenant)};
  ev.key = (fq_str_t){rec->key, strlen(rec->key)};
  ev.vin = (fq_str_t){rec->vin, strlen(rec->vin)};
  ev.command = (fq_str_t){rec->command, strlen(rec->command)};
  ev.reason = (fq_str_t){"", 0};
  if (rec->campaign[0]) ev.campaign = (fq_str_t){rec->campaign, strlen(rec->campaign)};
  ev.state = rec->state;
  ev.prev = prev;
  ev.at = rec->updated;
  ev.fault = -1;
  ev.shard = fq_store_shard(s);
  ev.seq = fq_store_next_seq(s);
  ev.tseq = fq_store_next_tseq(s, rec->tenant, strlen(rec->tenant));
  fq_buf_t b;
  fq_buf_init(&b, 0);
  CHECK_INT(fq_wire_event_pack(&b, &ev), 0);
  CHECK_INT(fq_store_event_append(s, rec->tenant, strlen(rec->tenant), b.data, b.len, &err), 0);
  fq_buf_free(&b);
}

/* A new command (what a submit writes): key, record, queue row (or a
 * `sched` row when not_before is set), campaign row, `queued` event. */
void submit(fq_store_t *s, fq_cmdrec_t *r, const char *tenant, const char *key, int vin,
                   int64_t at, int64_t not_before, const char *campaign) {
  fq_err_t err;
  memset(r, 0, sizeof *r);
  fq_store_new_id(s, r->id, &r->qseq);
  snprintf(r->tenant, sizeof r->tenant, "%s", tenant);
  snprintf(r->key, sizeof r->key, "%s", key);
  snprintf(r->account, sizeof r->account, "acct");
  snprintf(r->vin, sizeof r->vin, "5YJ3%013d", vin);
  snprintf(r->device, sizeof r->device, "v:%s", r->vin);
  snprintf(r->command, sizeof r->command, "door_lock");
  if (campaign) snprintf(r->campaign, sizeof r->campaign, "%s", campaign);
  r->hash[0] = (uint8_t)key[0];
  r->hash[31] = (uint8_t)vin;
  r->fault = -1;
  r->created = r->updated = at;
  r->deadline = at + 60000;
  r->ttl_ms = 60000;
  r->not_before = not_before;
  r->state = not_before ? FQ_ST_SCHEDULED : FQ_ST_QUEUED;
  r->trans[r->ntrans++] = (fq_transition_t){r->state, at};
  CHECK_INT(fq_store_idem_put(s, r, &err), 0);
  CHECK_INT(fq_store_cmd_put(s, r, &err), 0);
  if (not_before)
    CHECK_INT(fq_store_sched_put(s, r, &err), 0);
  else
    CHECK_INT(fq_store_active_put(s, r, &err), 0);
  if (campaign) CHECK_INT(fq_store_camp_put(s, campaign, r->id, &err), 0);
  add_event(s, r, -1);
}

/* A transition (record and event); terminal ones leave the queue. */
void move(fq_store_t *s, fq_cmdrec_t *r, int state, int64_t at) {
  fq_err_t err;
  int prev = r->state;
  r->state = state;
  r->updated = at;
  if (r->ntrans < FQ_MAX_TRANSITIONS) r->trans[r->ntrans++] = (fq_transition_t){state, at};
  CHECK_INT(fq_store_cmd_put(s, r, &err), 0);
  if (fq_state_terminal(state)) CHECK_INT(fq_store_active_del(s, r->id, &err), 0);
  add_event(s, r, prev);
}

