/*
 * Campaigns: see campaign.h and docs/operations.md "Campaigns".
 *
 * Storage (<data dir>/campaigns, one LMDB environment, synchronous):
 *   camp  id                       -> campaign record (rec_encode below)
 *   part  id \0 u32be(part)        -> 32-byte SHA-256 of the devices, then
 *                                     the `devices` array as sent
 *   key   tenant \0 key            -> id
 * Every change of a campaign is one transaction, committed before any
 * reply or event that shows it.
 *
 * Internal requests to the shards carry one envelope frame, an ienv_t:
 * what it is ('S' a device submit, 'G' counts, 'A' abort), the campaign's
 * slot and the generation of the round it belongs to, so an answer from
 * an earlier round (a fan-out given up, a count that timed out) is
 * recognised and dropped.
 */
#include "campaign.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <msgpack.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "accounts.h"
#include "budget.h"
#include "byteorder.h"
#include "hmap.h"
#include "log.h"
#include "metrics.h"
#include "mpread.h"
#include "shard.h"
#include "store.h"
#include "util.h"

enum { CS_RECEIVING, CS_SCHEDULED, CS_RUNNING, CS_DONE, CS_ABORTED, CS_N };
static const char *const cs_name[CS_N] = {"receiving", "scheduled", "running", "done",
                                          "aborted"};

/* Device submits in flight over every fan-out at once: enough to keep
 * every shard's group commit full; lower when the shards' queues are
 * small (fq_campaigns_open: at most a quarter of --shard-hwm), so that
 * ordinary requests always find room there.  A quarter, not a half:
 * libzmq tells the sender what the receiver consumed only every half of
 * the limit or so, so up to half of it may count messages already read. */
#define FANOUT_WINDOW 2048
#define WAITERS 8
#define QUERY_TIMEOUT_MS 15000
#define PROGRESS_MS 1000
#define MIN_FINISHED 20

typedef struct ienv {
  char type;
  uint32_t slot, gen, idx;
} __attribute__((packed)) ienv_t;

typedef struct waiter {
  int nenv;
  zmq_msg_t env[FQ_WIRE_MAX_ENVELOPE + 1];
  bool has_req;
  size_t req_len;
  uint8_t req[FQ_WIRE_MAX_REQ];
  bool dup;
} waiter_t;

typedef struct wlist {
  waiter_t *w[WAITERS];
  int n;
} wlist_t;

typedef struct camp {
  char id[24];
  char tenant[FQ_TENANT_MAX + 1];
  char key[FQ_WIRE_MAX_CAMPAIGN_KEY + 1];
  char command[65];
  uint8_t *params;
  size_t params_len;
  int64_t ttl_ms, not_before;
  bool has_nb, has_rate, has_ratio;
  double rate, ratio;
  uint32_t parts, parts_received, devices, rejected;
  uint8_t defhash[32];
  int state;
  bool fanned, abort_done;
  int64_t created_at, start, started_at, finished_at;
  /* When the fan-out finished (every device command stored): the
   * campaign's key dedupes for the dedupe window from then (key_free). */
  int64_t fanned_at;
  uint32_t slot;             /* index in fq_campaigns.c, in ienv_t */
  char reason[200];
  /* Devices of the parts received (hashes of their names), while
   * receiving: a device listed twice is refused. */
  fq_hmap_t devset;
  bool devset_ok;
  /* Fan-out. */
  bool fanning;
  uint32_t gen;
  uint32_t fo_part;          /* part being sent, 1-based; 0 before the first */
  uint8_t *fo_buf;
  size_t fo_len;
  fq_wire_devit_t fo_it;
  bool fo_have;              /* fo_dev was read and waits to be sent */
  fq_wire_device_t fo_dev;
  uint32_t fo_next, fo_out, fo_transient, fo_rejected;
  int fo_code;
  char fo_msg[240];
  wlist_t fo_w;
  /* Counts. */
  bool q_busy, q_failed, q_final;
  uint32_t q_gen;
  unsigned q_left;
  int64_t q_sent;
  uint64_t q_counts[FQ_ST_COUNT_];
  wlist_t q_w;
  int64_t last_query, last_event;
  uint64_t last_counts[FQ_ST_COUNT_];
  int last_ev_state;
  bool final_sent;
  /* Abort. */
  bool a_busy, a_failed, a_auto;
  uint32_t a_gen;
  int64_t a_sent;
  unsigned a_left;
  uint64_t a_cancelled;
  wlist_t a_w;
} camp_t;

struct fq_campaigns {
  fq_camp_io_t io;
  unsigned nshards;
  fq_accounts_t *accounts;
  MDB_env *env;
  MDB_dbi dcamp, dpart, dkey;
  /* Campaigns by slot; a slot of a deleted campaign is NULL (holes
   * counts them) until a new campaign takes it. */
  camp_t **c;
  size_t n, cap, holes;
  /* Generations of rounds (fan-out, counts, abort) come from one counter:
   * an answer of a deleted campaign's round never matches a round of the
   * campaign that takes its slot. */
  uint32_t gens;
  int64_t retention_ms, dedupe_ms;
  int64_t next_prune;
  uint32_t window, inflight; /* device submits in flight, all fan-outs */
  fq_buf_t out, body;
};

/* ---- small helpers --------------------------------------------------------- */

static int buf_write(void *data, const char *p, size_t n) {
  return fq_buf_append(data, p, n) ? -1 : 0;
}

static int pk_str(msgpack_packer *pk, const char *s) {
  return msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  pk_str(pk, k);
  pk_str(pk, v);
}

static void pk_kv_i64(msgpack_packer *pk, const char *k, int64_t v) {
  pk_str(pk, k);
  msgpack_pack_int64(pk, v);
}

/* A time, or nil when 0. */
static void pk_kv_time(msgpack_packer *pk, const char *k, int64_t v) {
  pk_str(pk, k);
  if (v) msgpack_pack_int64(pk, v);
  else msgpack_pack_nil(pk);
}

static void pk_req(msgpack_packer *pk, fq_buf_t *b, const uint8_t *req, size_t len) {
  if (!req) return;
  pk_str(pk, "req");
  fq_buf_append(b, req, len);
}

static void waiter_free(waiter_t *w) {
  if (!w) return;
  for (int i = 0; i < w->nenv; i++) zmq_msg_close(&w->env[i]);
  free(w);
}

static waiter_t *waiter_new(const fq_request_t *req, zmq_msg_t *env, int nenv) {
  if (nenv > FQ_WIRE_MAX_ENVELOPE + 1) return NULL;
  waiter_t *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->nenv = nenv;
  for (int i = 0; i < nenv; i++) {
    zmq_msg_init(&w->env[i]);
    zmq_msg_move(&w->env[i], &env[i]);
  }
  if (req->req_raw && req->req_raw_len <= sizeof w->req) {
    w->has_req = true;
    w->req_len = req->req_raw_len;
    memcpy(w->req, req->req_raw, w->req_len);
  }
  return w;
}

static void reply_err(fq_campaigns_t *c, zmq_msg_t *env, int nenv, int code, const char *msg,
                      const uint8_t *req, size_t req_len) {
  fq_buf_reset(&c->out);
  fq_wire_reply_error(&c->out, code, msg, req, req_len);
  c->io.reply(c->io.ud, env, nenv, c->out.data, c->out.len);
}

static void waiter_err(fq_campaigns_t *c, waiter_t *w, int code, const char *msg) {
  reply_err(c, w->env, w->nenv, code, msg, w->has_req ? w->req : NULL, w->req_len);
  waiter_free(w);
}

static bool wlist_add(wlist_t *l, waiter_t *w) {
  if (!w || l->n == WAITERS) return false;
  l->w[l->n++] = w;
  return true;
}

static uint32_t slot_of(const fq_campaigns_t *c, const camp_t *cp) {
  (void)c;
  return cp->slot;
}

static camp_t *find_id(fq_campaigns_t *c, const char *id, size_t n) {
  for (size_t i = 0; i < c->n; i++)
    if (c->c[i] && strlen(c->c[i]->id) == n && memcmp(c->c[i]->id, id, n) == 0) return c->c[i];
  return NULL;
}

/* Until when a campaign's (tenant, key) dedupes: the dedupe window, from
 * the time its device commands were stored (their own keys dedupe that
 * long in the shards: a new campaign with the key afterwards finds none of
 * them), or from the abort of one never fanned out.  A campaign still
 * receiving parts or being fanned out keeps its key. */
static bool key_free(const fq_campaigns_t *c, const camp_t *cp, int64_t now) {
  int64_t from;
  if (c->dedupe_ms <= 0) return false; /* no window given: for ever */
  if (cp->fanned) from = cp->fanned_at > cp->created_at ? cp->fanned_at : cp->created_at;
  else if (cp->state == CS_ABORTED && !cp->fanning) from = cp->finished_at;
  else return false;
  return now - from >= c->dedupe_ms;
}

/* The campaign (tenant, key) names inside its dedupe window. */
static camp_t *find_key(fq_campaigns_t *c, const fq_str_t *t, const fq_str_t *k) {
  int64_t now = fq_now_ms();
  for (size_t i = 0; i < c->n; i++) {
    camp_t *cp = c->c[i];
    if (cp && !key_free(c, cp, now) && strlen(cp->tenant) == t->n &&
        memcmp(cp->tenant, t->p, t->n) == 0 &&
        strlen(cp->key) == k->n && memcmp(cp->key, k->p, k->n) == 0)
      return cp;
  }
  return NULL;
}

static void camp_free(camp_t *cp) {
  if (!cp) return;
  free(cp->params);
  free(cp->fo_buf);
  fq_hmap_free(&cp->devset);
  for (int i = 0; i < cp->fo_w.n; i++) waiter_free(cp->fo_w.w[i]);
  for (int i = 0; i < cp->q_w.n; i++) waiter_free(cp->q_w.w[i]);
  for (int i = 0; i < cp->a_w.n; i++) waiter_free(cp->a_w.w[i]);
  free(cp);
}

/* Room for one more campaign: 0 or -ENOMEM. */
static int slots_grow(fq_campaigns_t *c) {
  if (c->holes || c->n < c->cap) return 0;
  size_t cap = c->cap ? c->cap * 2 : 16;
  void *p = realloc(c->c, cap * sizeof *c->c);
  if (!p) return -ENOMEM;
  c->c = p;
  c->cap = cap;
  return 0;
}

/* Put cp in a free slot (after slots_grow). */
static void slot_put(fq_campaigns_t *c, camp_t *cp) {
  size_t i = c->n;
  if (c->holes) {
    for (i = 0; i < c->n && c->c[i]; i++) {
    }
    c->holes--;
  } else {
    c->n++;
  }
  c->c[i] = cp;
  cp->slot = (uint32_t)i;
}

/* ---- storage --------------------------------------------------------------- */

static int lmdb_fail(fq_err_t *err, int rc, const char *what) {
  if (rc == MDB_MAP_FULL) return fq_errf(err, FQ_ESTORFULL, "campaigns: %s: storage full", what);
  return fq_errf(err, FQ_ESTORAGE, "campaigns: %s: %s", what, mdb_strerror(rc));
}

/* The record: u8 version 2, u8 state, u8 flags (1 not_before, 2 rate,
 * 4 max_failure_ratio, 8 fanned out, 16 abort sent), u32 parts,
 * parts_received, devices, rejected, i64 ttl_ms, not_before, created_at,
 * start, started_at, finished_at, f64 rate, ratio, 32 bytes definition
 * hash, then u16-length id, tenant, key, command, reason, u32-length
 * params, then (version 2) i64 fanned_at.  Little endian.  Version 1
 * records (no fanned_at) are read with fanned_at = started_at. */
static int rec_encode(const camp_t *cp, fq_buf_t *b) {
  uint8_t h[3 + 16 + 48 + 16 + 32];
  uint8_t *o = h;
  *o++ = 2;
  *o++ = (uint8_t)cp->state;
  *o++ = (uint8_t)((cp->has_nb ? 1 : 0) | (cp->has_rate ? 2 : 0) | (cp->has_ratio ? 4 : 0) |
                   (cp->fanned ? 8 : 0) | (cp->abort_done ? 16 : 0));
  uint32_t u32s[4] = {cp->parts, cp->parts_received, cp->devices, cp->rejected};
  for (int i = 0; i < 4; i++, o += 4) fq_put_le32(o, u32s[i]);
  int64_t i64s[6] = {cp->ttl_ms, cp->not_before, cp->created_at, cp->start, cp->started_at,
                     cp->finished_at};
  for (int i = 0; i < 6; i++, o += 8) fq_put_le64(o, (uint64_t)i64s[i]);
  double ds[2] = {cp->rate, cp->ratio};
  for (int i = 0; i < 2; i++, o += 8) {
    uint64_t bits;
    memcpy(&bits, &ds[i], 8);
    fq_put_le64(o, bits);
  }
  memcpy(o, cp->defhash, 32);
  o += 32;
  int rc = fq_buf_append(b, h, (size_t)(o - h));
  const char *strs[5] = {cp->id, cp->tenant, cp->key, cp->command, cp->reason};
  for (int i = 0; i < 5 && !rc; i++) {
    uint8_t l[2];
    fq_put_le16(l, (uint16_t)strlen(strs[i]));
    rc = fq_buf_append(b, l, 2) || fq_buf_append(b, strs[i], strlen(strs[i]));
  }
  uint8_t l4[4];
  fq_put_le32(l4, (uint32_t)cp->params_len);
  if (!rc)
    rc = fq_buf_append(b, l4, 4) ||
         (cp->params_len && fq_buf_append(b, cp->params, cp->params_len));
  uint8_t fa[8];
  fq_put_le64(fa, (uint64_t)cp->fanned_at);
  if (!rc) rc = fq_buf_append(b, fa, 8);
  return rc ? -ENOMEM : 0;
}

static bool take(const uint8_t **p, const uint8_t *end, void *out, size_t n) {
  if ((size_t)(end - *p) < n) return false;
  memcpy(out, *p, n);
  *p += n;
  return true;
}

static bool take_str(const uint8_t **p, const uint8_t *end, char *out, size_t cap) {
  uint8_t l[2];
  if (!take(p, end, l, 2)) return false;
  size_t n = fq_get_le16(l);
  if (n >= cap || !take(p, end, out, n)) return false;
  out[n] = 0;
  return true;
}

static camp_t *rec_decode(const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  uint8_t h[3 + 16 + 48 + 16 + 32];
  if (!take(&p, end, h, sizeof h) || h[0] < 1 || h[0] > 2 || h[1] >= CS_N) return NULL;
  int version = h[0];
  camp_t *cp = calloc(1, sizeof *cp);
  if (!cp) return NULL;
  fq_hmap_init(&cp->devset, 8, 70);
  const uint8_t *o = h + 1;
  cp->state = *o++;
  uint8_t fl = *o++;
  cp->has_nb = fl & 1;
  cp->has_rate = fl & 2;
  cp->has_ratio = fl & 4;
  cp->fanned = fl & 8;
  cp->abort_done = fl & 16;
  uint32_t *u32s[4] = {&cp->parts, &cp->parts_received, &cp->devices, &cp->rejected};
  for (int i = 0; i < 4; i++, o += 4) *u32s[i] = fq_get_le32(o);
  int64_t *i64s[6] = {&cp->ttl_ms, &cp->not_before, &cp->created_at, &cp->start, &cp->started_at,
                      &cp->finished_at};
  for (int i = 0; i < 6; i++, o += 8) *i64s[i] = (int64_t)fq_get_le64(o);
  double *ds[2] = {&cp->rate, &cp->ratio};
  for (int i = 0; i < 2; i++, o += 8) {
    uint64_t bits = fq_get_le64(o);
    memcpy(ds[i], &bits, 8);
  }
  memcpy(cp->defhash, o, 32);
  uint8_t l4[4];
  bool ok = take_str(&p, end, cp->id, sizeof cp->id) &&
            take_str(&p, end, cp->tenant, sizeof cp->tenant) &&
            take_str(&p, end, cp->key, sizeof cp->key) &&
            take_str(&p, end, cp->command, sizeof cp->command) &&
            take_str(&p, end, cp->reason, sizeof cp->reason) && take(&p, end, l4, 4);
  if (ok) {
    cp->params_len = fq_get_le32(l4);
    size_t tail = version >= 2 ? 8 : 0;
    if ((size_t)(end - p) != cp->params_len + tail) ok = false;
    else if (cp->params_len && (cp->params = malloc(cp->params_len)))
      memcpy(cp->params, p, cp->params_len);
    else if (cp->params_len)
      ok = false;
    if (ok && tail) cp->fanned_at = (int64_t)fq_get_le64(p + cp->params_len);
    else if (ok) cp->fanned_at = cp->started_at;
  }
  if (!ok) {
    camp_free(cp);
    return NULL;
  }
  return cp;
}

static size_t part_key(uint8_t *kb, const char *id, uint32_t part) {
  size_t n = strlen(id);
  memcpy(kb, id, n);
  kb[n] = 0;
  fq_put_be32(kb + n + 1, part);
  return n + 5;
}

static size_t key_key(uint8_t *kb, const char *tenant, const char *key) {
  size_t tn = strlen(tenant), kn = strlen(key);
  memcpy(kb, tenant, tn);
  kb[tn] = 0;
  memcpy(kb + tn + 1, key, kn);
  return tn + 1 + kn;
}

/* Write the record (and with devices a part, and on the first write the
 * key row) in one durable transaction. */
static int db_write(fq_campaigns_t *c, const camp_t *cp, bool first, uint32_t part,
                    const uint8_t hash[32], const uint8_t *devices, size_t dlen, fq_err_t *err) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  if (rc) return lmdb_fail(err, rc, "begin");
  fq_buf_reset(&c->body);
  if (rec_encode(cp, &c->body)) {
    mdb_txn_abort(txn);
    return fq_errf(err, -ENOMEM, "out of memory");
  }
  MDB_val k = {strlen(cp->id), (void *)cp->id}, d = {c->body.len, c->body.data};
  rc = mdb_put(txn, c->dcamp, &k, &d, 0);
  if (!rc && first) {
    uint8_t kb[FQ_TENANT_MAX + 2 + FQ_WIRE_MAX_CAMPAIGN_KEY];
    MDB_val kk = {key_key(kb, cp->tenant, cp->key), kb}, kd = {strlen(cp->id), (void *)cp->id};
    rc = mdb_put(txn, c->dkey, &kk, &kd, 0);
  }
  if (!rc && devices) {
    uint8_t kb[32];
    MDB_val pk = {part_key(kb, cp->id, part), kb}, pd = {32 + dlen, NULL};
    rc = mdb_put(txn, c->dpart, &pk, &pd, MDB_RESERVE);
    if (!rc) {
      memcpy(pd.mv_data, hash, 32);
      memcpy((uint8_t *)pd.mv_data + 32, devices, dlen);
    }
  }
  if (rc) {
    mdb_txn_abort(txn);
    return lmdb_fail(err, rc, "write");
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return lmdb_fail(err, rc, "commit");
  return 0;
}

/* The stored part: its hash and a copy of its devices (malloc'd).
 * FQ_ENOTFOUND when it was not received. */
static int db_part(fq_campaigns_t *c, const camp_t *cp, uint32_t part, uint8_t hash[32],
                   uint8_t **devices, size_t *dlen, fq_err_t *err) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
  if (rc) return lmdb_fail(err, rc, "begin");
  uint8_t kb[32];
  MDB_val k = {part_key(kb, cp->id, part), kb}, d;
  rc = mdb_get(txn, c->dpart, &k, &d);
  if (rc == MDB_NOTFOUND || (rc == 0 && d.mv_size < 32)) {
    mdb_txn_abort(txn);
    return FQ_ENOTFOUND;
  }
  if (rc) {
    mdb_txn_abort(txn);
    return lmdb_fail(err, rc, "read part");
  }
  memcpy(hash, d.mv_data, 32);
  if (devices) {
    *dlen = d.mv_size - 32;
    *devices = malloc(*dlen ? *dlen : 1);
    if (*devices) memcpy(*devices, (const uint8_t *)d.mv_data + 32, *dlen);
  }
  mdb_txn_abort(txn);
  if (devices && !*devices) return fq_errf(err, -ENOMEM, "out of memory");
  return 0;
}

static int save(fq_campaigns_t *c, camp_t *cp) {
  fq_err_t err;
  fq_err_clear(&err);
  int rc = db_write(c, cp, false, 0, NULL, NULL, 0, &err);
  if (rc) fq_error("campaign", "campaign %s: cannot write its state: %s", cp->id, err.msg);
  return rc;
}

/* ---- definition ------------------------------------------------------------ */

static void sha256(const void *p, size_t n, uint8_t out[32]) {
  unsigned len = 32;
  if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL)) memset(out, 0, 32);
}

/* What every part must repeat: tenant, key, command, params, ttl_ms,
 * rate, max_failure_ratio, not_before, parts. */
static void def_hash(fq_campaigns_t *c, const fq_request_t *req, uint8_t out[32]) {
  fq_buf_t *b = &c->body;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_array(&pk, 9);
  msgpack_pack_str_with_body(&pk, req->tenant.p, req->tenant.n);
  msgpack_pack_str_with_body(&pk, req->key.p, req->key.n);
  msgpack_pack_str_with_body(&pk, req->cmd->name, strlen(req->cmd->name));
  msgpack_pack_bin_with_body(&pk, req->params_raw ? req->params_raw : (const uint8_t *)"",
                             req->params_raw_len);
  msgpack_pack_int64(&pk, req->ttl_ms);
  if (req->has_rate) msgpack_pack_double(&pk, req->rate);
  else msgpack_pack_nil(&pk);
  if (req->has_ratio) msgpack_pack_double(&pk, req->max_failure_ratio);
  else msgpack_pack_nil(&pk);
  if (req->has_not_before) msgpack_pack_int64(&pk, req->not_before);
  else msgpack_pack_nil(&pk);
  msgpack_pack_uint32(&pk, req->parts);
  sha256(b->data, b->len, out);
}

static bool has_h(const fq_hmap_t *m, uint64_t h) {
  size_t cur = 0;
  return fq_hmap_next(m, h, &cur) != NULL;
}

static int dev_hash_add(camp_t *cp, const fq_wire_device_t *d, bool check_only) {
  char name[32];
  size_t n = fq_wire_device_name(d, name, sizeof name);
  uint64_t h = fq_hash64(name, n);
  if (!h) h = 1;
  if (has_h(&cp->devset, h)) return 1;
  if (check_only) return 0;
  uint64_t *it = fq_hmap_add(&cp->devset, h);
  if (!it) return -ENOMEM;
  *it = h;
  return 0;
}

/* The devices of the parts already received, for the duplicate check. */
static int devset_load(fq_campaigns_t *c, camp_t *cp, fq_err_t *err) {
  if (cp->devset_ok) return 0;
  for (uint32_t part = 1; part <= cp->parts; part++) {
    uint8_t hash[32], *dev = NULL;
    size_t dl = 0;
    int rc = db_part(c, cp, part, hash, &dev, &dl, err);
    if (rc == FQ_ENOTFOUND) continue;
    if (rc) return rc;
    fq_wire_devit_t it;
    fq_wire_device_t d;
    if (fq_wire_devices_begin(&it, dev, dl, NULL, err) == 0)
      while (fq_wire_devices_next(&it, &d, err) == 1)
        if (dev_hash_add(cp, &d, false) < 0) {
          free(dev);
          return fq_errf(err, -ENOMEM, "out of memory");
        }
    free(dev);
  }
  cp->devset_ok = true;
  return 0;
}

/* ---- replies and events ---------------------------------------------------- */

static void reply_accept(fq_campaigns_t *c, const camp_t *cp, bool dup, zmq_msg_t *env, int nenv,
                         const uint8_t *req, size_t req_len) {
  fq_buf_t *b = &c->out;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_map(&pk, 8 + (req ? 1 : 0));
  pk_str(&pk, "ok");
  msgpack_pack_true(&pk);
  pk_kv_str(&pk, "id", cp->id);
  pk_kv_i64(&pk, "devices", cp->devices);
  pk_str(&pk, "dup");
  if (dup) msgpack_pack_true(&pk);
  else msgpack_pack_false(&pk);
  pk_kv_str(&pk, "state", cs_name[cp->state]);
  pk_kv_i64(&pk, "parts_received", cp->parts_received);
  pk_kv_i64(&pk, "parts", cp->parts);
  /* Devices whose command was refused for good (an idempotency mismatch
   * of its key, a time too far ahead...): counted, never retried. */
  pk_kv_i64(&pk, "rejected", cp->rejected);
  pk_req(&pk, b, req, req_len);
  c->io.reply(c->io.ud, env, nenv, b->data, b->len);
}

static uint64_t sum_failed(const uint64_t *k) {
  return k[FQ_ST_FAILED] + k[FQ_ST_UNKNOWN] + k[FQ_ST_EXPIRED] + k[FQ_ST_SUPERSEDED];
}

static uint64_t sum_terminal(const uint64_t *k) {
  uint64_t t = 0;
  for (int s = 0; s < FQ_ST_COUNT_; s++)
    if (fq_state_terminal(s)) t += k[s];
  return t;
}

/* The fields campaign_get and the progress event share (13). */
static void pk_status(msgpack_packer *pk, const camp_t *cp, const uint64_t *k) {
  pk_kv_str(pk, "id", cp->id);
  pk_kv_str(pk, "tenant", cp->tenant);
  pk_kv_str(pk, "key", cp->key);
  pk_kv_str(pk, "command", cp->command);
  pk_kv_str(pk, "state", cs_name[cp->state]);
  pk_kv_i64(pk, "devices", cp->devices);
  int n = 0;
  for (int s = 0; s < FQ_ST_COUNT_; s++) n += k[s] > 0;
  pk_str(pk, "counts");
  msgpack_pack_map(pk, (size_t)n);
  for (int s = 0; s < FQ_ST_COUNT_; s++)
    if (k[s]) {
      pk_str(pk, fq_state_name(s));
      msgpack_pack_uint64(pk, k[s]);
    }
  pk_kv_i64(pk, "succeeded", (int64_t)k[FQ_ST_SUCCEEDED]);
  pk_kv_i64(pk, "failed", (int64_t)sum_failed(k));
  pk_kv_i64(pk, "rejected", cp->rejected);
  pk_kv_time(pk, "started_at", cp->started_at);
  pk_kv_time(pk, "finished_at", cp->finished_at);
  pk_kv_str(pk, "reason", cp->reason);
}

static void reply_get(fq_campaigns_t *c, const camp_t *cp, const uint64_t *k, waiter_t *w) {
  fq_buf_t *b = &c->out;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_map(&pk, 20 + (w->has_req ? 1 : 0));
  pk_str(&pk, "ok");
  msgpack_pack_true(&pk);
  pk_status(&pk, cp, k); /* 13 */
  pk_kv_i64(&pk, "created_at", cp->created_at);
  pk_kv_time(&pk, "not_before", cp->has_nb ? cp->not_before : 0);
  pk_str(&pk, "rate");
  if (cp->has_rate) msgpack_pack_double(&pk, cp->rate);
  else msgpack_pack_nil(&pk);
  pk_str(&pk, "max_failure_ratio");
  if (cp->has_ratio) msgpack_pack_double(&pk, cp->ratio);
  else msgpack_pack_nil(&pk);
  pk_kv_i64(&pk, "parts_received", cp->parts_received);
  pk_kv_i64(&pk, "parts", cp->parts);
  pk_req(&pk, b, w->has_req ? w->req : NULL, w->req_len);
  c->io.reply(c->io.ud, w->env, w->nenv, b->data, b->len);
  waiter_free(w);
}

static void publish(fq_campaigns_t *c, camp_t *cp, const uint64_t *k, int64_t now) {
  bool final = cp->state == CS_DONE || cp->state == CS_ABORTED;
  if (cp->final_sent) return;
  fq_buf_t *b = &c->out;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_map(&pk, 16);
  pk_kv_str(&pk, "type", "campaign");
  pk_status(&pk, cp, k); /* 13 */
  pk_kv_i64(&pk, "at", now);
  pk_str(&pk, "final");
  if (final) msgpack_pack_true(&pk);
  else msgpack_pack_false(&pk);
  char topic[FQ_TENANT_MAX + 16 + 24];
  int tl = snprintf(topic, sizeof topic, "%s/campaign/%s", cp->tenant, cp->id);
  c->io.publish(c->io.ud, topic, (size_t)tl, b->data, b->len);
  memcpy(cp->last_counts, k, sizeof cp->last_counts);
  cp->last_ev_state = cp->state;
  cp->last_event = now;
  if (final) cp->final_sent = true;
}

/* ---- fan-out --------------------------------------------------------------- */

static void fanout_finish(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  cp->fanning = false;
  free(cp->fo_buf);
  cp->fo_buf = NULL;
  cp->gen = ++c->gens;
  if (cp->fo_transient) {
    char msg[400];
    snprintf(msg, sizeof msg,
             "campaign %s is stored, but %" PRIu32 " device command(s) could not be: %s; send "
             "the same request again",
             cp->id, cp->fo_transient, cp->fo_msg);
    fq_warn("campaign", "%s", msg);
    for (int i = 0; i < cp->fo_w.n; i++) waiter_err(c, cp->fo_w.w[i], cp->fo_code, msg);
    cp->fo_w.n = 0;
    return;
  }
  cp->fanned = true;
  cp->fanned_at = now;
  cp->rejected = cp->fo_rejected;
  if (cp->state == CS_SCHEDULED && now >= cp->start) {
    cp->state = CS_RUNNING;
    cp->started_at = now;
  }
  int rc = save(c, cp);
  fq_info("campaign", "campaign %s (tenant %s, key %s): %" PRIu32 " device command(s) stored%s",
          cp->id, cp->tenant, cp->key, cp->devices - cp->rejected,
          cp->rejected ? ", some rejected" : "");
  for (int i = 0; i < cp->fo_w.n; i++) {
    waiter_t *w = cp->fo_w.w[i];
    if (rc) waiter_err(c, w, FQ_EINTERNAL, "cannot write the campaign's state; retry");
    else {
      reply_accept(c, cp, w->dup, w->env, w->nenv, w->has_req ? w->req : NULL, w->req_len);
      waiter_free(w);
    }
  }
  cp->fo_w.n = 0;
  cp->last_query = 0; /* a first progress event soon */
}

static void fanout_start(fq_campaigns_t *c, camp_t *cp) {
  if (cp->fanning) return;
  cp->fanning = true;
  cp->gen = ++c->gens;
  cp->fo_part = 0;
  cp->fo_have = false;
  /* Answers of a fan-out given up are dropped (gen): not in flight. */
  c->inflight -= cp->fo_out < c->inflight ? cp->fo_out : c->inflight;
  cp->fo_next = cp->fo_out = cp->fo_transient = cp->fo_rejected = 0;
  cp->fo_code = 0;
  cp->fo_msg[0] = 0;
  free(cp->fo_buf);
  cp->fo_buf = NULL;
}

/* The next device in order over the parts: 1, 0 after the last, <0. */
static int fanout_next(fq_campaigns_t *c, camp_t *cp) {
  if (cp->fo_have) return 1;
  fq_err_t err;
  fq_err_clear(&err);
  for (;;) {
    if (cp->fo_buf) {
      int rc = fq_wire_devices_next(&cp->fo_it, &cp->fo_dev, &err);
      if (rc == 1) {
        cp->fo_have = true;
        return 1;
      }
      free(cp->fo_buf);
      cp->fo_buf = NULL;
      if (rc < 0) {
        fq_error("campaign", "campaign %s: part %" PRIu32 " unreadable: %s", cp->id, cp->fo_part,
                 err.msg);
        return rc;
      }
    }
    if (cp->fo_part >= cp->parts) return 0;
    cp->fo_part++;
    uint8_t hash[32];
    int rc = db_part(c, cp, cp->fo_part, hash, &cp->fo_buf, &cp->fo_len, &err);
    if (rc) {
      fq_error("campaign", "campaign %s: part %" PRIu32 ": %s", cp->id, cp->fo_part, err.msg);
      cp->fo_buf = NULL;
      return rc == FQ_ENOTFOUND ? FQ_ESTORAGE : rc;
    }
    if ((rc = fq_wire_devices_begin(&cp->fo_it, cp->fo_buf, cp->fo_len, NULL, &err)) != 0)
      return rc;
  }
}

/* The submit of device i, exactly the same at every fan-out of the
 * campaign (its time comes from the stored start). */
static int device_body(fq_campaigns_t *c, const camp_t *cp, const fq_wire_device_t *d,
                       uint32_t i, char *key, size_t *klen) {
  char name[32];
  size_t nl = fq_wire_device_name(d, name, sizeof name);
  *klen = (size_t)snprintf(key, 160, "%s/%.*s", cp->key, (int)nl, name);
  fq_buf_t *b = &c->body;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  bool nb = cp->has_rate || cp->has_nb;
  msgpack_pack_map(&pk, 6 + (cp->params_len ? 1 : 0) + (cp->ttl_ms ? 1 : 0) + (nb ? 1 : 0));
  pk_kv_str(&pk, "op", "submit");
  pk_kv_str(&pk, "tenant", cp->tenant);
  pk_str(&pk, "key");
  msgpack_pack_str_with_body(&pk, key, *klen);
  pk_str(&pk, "account");
  msgpack_pack_str_with_body(&pk, d->account.p, d->account.n);
  if (d->vin.p) {
    pk_str(&pk, "vin");
    msgpack_pack_str_with_body(&pk, d->vin.p, d->vin.n);
  } else {
    pk_str(&pk, "site");
    msgpack_pack_uint64(&pk, d->site);
  }
  pk_kv_str(&pk, "command", cp->command);
  if (cp->params_len) {
    pk_str(&pk, "params");
    fq_buf_append(b, cp->params, cp->params_len);
  }
  if (cp->ttl_ms) pk_kv_i64(&pk, "ttl_ms", cp->ttl_ms);
  if (nb) {
    int64_t t = cp->has_rate ? cp->start + (int64_t)((double)i * 1000.0 / cp->rate) : cp->start;
    pk_kv_i64(&pk, "not_before", t);
  }
  return 0;
}

static void fanout_pump(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  uint32_t slot = slot_of(c, cp);
  while (cp->fanning && c->inflight < c->window) {
    int rc = fanout_next(c, cp);
    if (rc < 0) {
      cp->fo_transient++;
      cp->fo_code = FQ_EINTERNAL;
      snprintf(cp->fo_msg, sizeof cp->fo_msg, "a part of the campaign cannot be read");
      cp->fo_part = cp->parts; /* stop here */
      rc = 0;
    }
    if (rc == 0) {
      if (cp->fo_out == 0) fanout_finish(c, cp, now);
      return;
    }
    char key[160], dev[FQ_DEVICE_MAX];
    size_t kl;
    device_body(c, cp, &cp->fo_dev, cp->fo_next, key, &kl);
    fq_request_t r;
    memset(&r, 0, sizeof r);
    r.vin = cp->fo_dev.vin;
    r.site = cp->fo_dev.site;
    size_t dl = fq_wire_device_key(&r, dev, sizeof dev);
    unsigned shard = fq_shard_for_device(dev, dl, c->nshards);
    ienv_t e = {'S', slot, cp->gen, cp->fo_next};
    uint64_t kh = fq_hash64_pair(cp->tenant, strlen(cp->tenant), key, kl);
    if (c->io.send(c->io.ud, shard, cp->id, &e, sizeof e, c->body.data, c->body.len, kh) != 0)
      return; /* that shard's queue is full: the next tick goes on */
    cp->fo_have = false;
    cp->fo_next++;
    cp->fo_out++;
    c->inflight++;
  }
}

/* One device's answer: a submit reply (a msgpack map). */
static void fanout_answer(fq_campaigns_t *c, camp_t *cp, const uint8_t *body, size_t len,
                          int64_t now) {
  if (cp->fo_out) {
    cp->fo_out--;
    if (c->inflight) c->inflight--;
  }
  fq__mp_rd_t r;
  fq__mp_obj_t m, k, v;
  bool ok = false, dup = false;
  char ename[48] = "", msg[200] = "";
  fq__mp_rd_init(&r, body, len);
  if (fq__mp_next(&r, &m, NULL) == 0 && m.kind == FQ__MP_MAP) {
    for (uint32_t i = 0; i < m.v.count; i++) {
      if (fq__mp_next(&r, &k, NULL) || k.kind != FQ__MP_STR) break;
      const uint8_t *vat = r.p;
      if (fq__mp_next(&r, &v, NULL)) break;
      if (v.kind == FQ__MP_ARRAY || v.kind == FQ__MP_MAP) {
        r.p = vat;
        if (fq__mp_skip(&r, 2, FQ_WIRE_MAX_DEPTH, NULL)) break;
      }
      if (k.len == 2 && !memcmp(k.p, "ok", 2) && v.kind == FQ__MP_BOOL) ok = v.v.b;
      else if (k.len == 3 && !memcmp(k.p, "dup", 3) && v.kind == FQ__MP_BOOL) dup = v.v.b;
      else if (k.len == 5 && !memcmp(k.p, "error", 5) && v.kind == FQ__MP_STR)
        snprintf(ename, sizeof ename, "%.*s", (int)v.len, (const char *)v.p);
      else if (k.len == 7 && !memcmp(k.p, "message", 7) && v.kind == FQ__MP_STR)
        snprintf(msg, sizeof msg, "%.*s", (int)v.len, (const char *)v.p);
    }
  }
  if (ok && !dup) fq_metrics_campaign_commands(1);
  if (!ok) {
    int code = fq_errcode(ename);
    bool transient = code == FQ_EBUSY || code == FQ_ESTORFULL || code == FQ_EINTERNAL ||
                     code == FQ_ESTORAGE || code == 0;
    if (transient) {
      cp->fo_transient++;
      if (!cp->fo_code) {
        cp->fo_code = code ? code : FQ_EINTERNAL;
        snprintf(cp->fo_msg, sizeof cp->fo_msg, "%s", msg[0] ? msg : ename);
      }
    } else {
      cp->fo_rejected++;
      fq_warn("campaign", "campaign %s: a device command was refused (%s): %s", cp->id, ename,
              msg);
    }
  }
  fanout_pump(c, cp, now);
}

/* ---- counts and the state machine ------------------------------------------ */

static void abort_start(fq_campaigns_t *c, camp_t *cp, const char *reason, bool automatic,
                        int64_t now);

static void query_start(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  if (cp->q_busy) return;
  cp->q_busy = true;
  cp->q_failed = false;
  cp->q_gen = ++c->gens;
  cp->q_left = 0;
  cp->q_sent = now;
  cp->last_query = now;
  memset(cp->q_counts, 0, sizeof cp->q_counts);
  fq_buf_reset(&c->body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &c->body, buf_write);
  msgpack_pack_map(&pk, 2);
  pk_kv_str(&pk, "op", "campaign_get");
  pk_kv_str(&pk, "id", cp->id);
  ienv_t e = {'G', slot_of(c, cp), cp->q_gen, 0};
  for (unsigned s = 0; s < c->nshards; s++) {
    e.idx = s;
    if (c->io.send(c->io.ud, s, cp->id, &e, sizeof e, c->body.data, c->body.len, 0) == 0)
      cp->q_left++;
    else
      cp->q_failed = true;
  }
  if (cp->q_left == 0) cp->q_busy = false;
}

/* Counts from every shard: answer the waiting gets, move the state on,
 * publish progress. */
static void query_done(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  cp->q_busy = false;
  const uint64_t *k = cp->q_counts;
  if (cp->q_failed) {
    for (int i = 0; i < cp->q_w.n; i++)
      waiter_err(c, cp->q_w.w[i], FQ_EBUSY, "a shard could not be asked for the counts; retry");
    cp->q_w.n = 0;
    return;
  }
  int before = cp->state;
  if (cp->fanned && cp->state == CS_SCHEDULED && now >= cp->start) {
    cp->state = CS_RUNNING;
    cp->started_at = cp->start;
    save(c, cp);
  }
  uint64_t term = sum_terminal(k), failed = sum_failed(k);
  uint64_t finished = term - k[FQ_ST_CANCELLED];
  if (cp->fanned && cp->state == CS_RUNNING && cp->has_ratio && finished >= MIN_FINISHED &&
      (double)failed >= cp->ratio * (double)finished) {
    char reason[200];
    snprintf(reason, sizeof reason,
             "auto-abort: %" PRIu64 " of %" PRIu64 " finished devices failed (%.0f%%), "
             "max_failure_ratio %g",
             failed, finished, 100.0 * (double)failed / (double)finished, cp->ratio);
    for (int i = 0; i < cp->q_w.n; i++) reply_get(c, cp, k, cp->q_w.w[i]);
    cp->q_w.n = 0;
    abort_start(c, cp, reason, true, now);
    return;
  }
  if (cp->fanned && cp->state == CS_RUNNING && term + cp->rejected >= cp->devices) {
    cp->state = CS_DONE;
    cp->finished_at = now;
    save(c, cp);
    fq_info("campaign", "campaign %s done: %" PRIu64 " succeeded, %" PRIu64 " failed", cp->id,
            k[FQ_ST_SUCCEEDED], failed);
  }
  for (int i = 0; i < cp->q_w.n; i++) reply_get(c, cp, k, cp->q_w.w[i]);
  cp->q_w.n = 0;
  bool changed = memcmp(k, cp->last_counts, sizeof cp->last_counts) != 0;
  if (cp->state != before || cp->state != cp->last_ev_state || cp->q_final ||
      (changed && now - cp->last_event >= PROGRESS_MS))
    publish(c, cp, k, now);
  cp->q_final = false;
}

/* ---- abort ----------------------------------------------------------------- */

static void reply_abort(fq_campaigns_t *c, const camp_t *cp, uint64_t cancelled, waiter_t *w) {
  fq_buf_t *b = &c->out;
  fq_buf_reset(b);
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_map(&pk, 5 + (w->has_req ? 1 : 0));
  pk_str(&pk, "ok");
  msgpack_pack_true(&pk);
  pk_kv_str(&pk, "id", cp->id);
  pk_kv_str(&pk, "state", cs_name[cp->state]);
  pk_kv_i64(&pk, "cancelled", (int64_t)cancelled);
  pk_kv_str(&pk, "reason", cp->reason);
  pk_req(&pk, b, w->has_req ? w->req : NULL, w->req_len);
  c->io.reply(c->io.ud, w->env, w->nenv, b->data, b->len);
  waiter_free(w);
}

static int abort_one(fq_campaigns_t *c, camp_t *cp, unsigned shard) {
  fq_buf_reset(&c->body);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &c->body, buf_write);
  msgpack_pack_map(&pk, 2);
  pk_kv_str(&pk, "op", "campaign_abort");
  pk_kv_str(&pk, "id", cp->id);
  ienv_t e = {'A', slot_of(c, cp), cp->a_gen, shard};
  return c->io.send(c->io.ud, shard, cp->id, &e, sizeof e, c->body.data, c->body.len, 0);
}

/* Ask every shard to cancel what is still scheduled or queued.  The
 * state is durable first: a stop before the shards answered sends the
 * aborts again at the next start (abort_done not yet set). */
static void abort_send(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  cp->a_busy = true;
  cp->a_failed = false;
  cp->a_sent = now;
  cp->a_gen = ++c->gens;
  cp->a_left = 0;
  cp->a_cancelled = 0;
  for (unsigned s = 0; s < c->nshards; s++) {
    if (abort_one(c, cp, s) == 0) cp->a_left++;
    else cp->a_failed = true;
  }
  if (cp->a_left == 0) cp->a_busy = false; /* the tick tries again */
}

static void abort_start(fq_campaigns_t *c, camp_t *cp, const char *reason, bool automatic,
                        int64_t now) {
  cp->state = CS_ABORTED;
  cp->finished_at = now;
  cp->abort_done = false;
  cp->a_auto = automatic;
  snprintf(cp->reason, sizeof cp->reason, "%s", reason);
  save(c, cp);
  fq_info("campaign", "campaign %s aborted: %s", cp->id, reason);
  /* Once every part is in, device commands may exist (a fan-out cut
   * short included): the shards are asked. */
  if (cp->parts_received == cp->parts) abort_send(c, cp, now);
  else {
    cp->abort_done = true;
    save(c, cp);
  }
}

static void abort_done(fq_campaigns_t *c, camp_t *cp, int64_t now) {
  cp->a_busy = false;
  if (cp->a_failed) {
    for (int i = 0; i < cp->a_w.n; i++)
      waiter_err(c, cp->a_w.w[i], FQ_EBUSY,
                 "the campaign is aborted, but not every shard could cancel yet; retry");
    cp->a_w.n = 0;
    return; /* the tick sends the aborts again */
  }
  cp->abort_done = true;
  save(c, cp);
  for (int i = 0; i < cp->a_w.n; i++) reply_abort(c, cp, cp->a_cancelled, cp->a_w.w[i]);
  cp->a_w.n = 0;
  /* The final event, with the counts after the cancellations. */
  cp->q_final = true;
  if (!cp->q_busy) query_start(c, cp, now);
}

/* ---- shard answers ---------------------------------------------------------- */

void fq_campaigns_answer(fq_campaigns_t *c, const void *env, size_t envlen, const void *body,
                         size_t len) {
  ienv_t e;
  if (envlen != sizeof e) return;
  memcpy(&e, env, sizeof e);
  if (e.slot >= c->n || !c->c[e.slot]) return;
  camp_t *cp = c->c[e.slot];
  int64_t now = fq_now_ms();
  const uint8_t *b = body;
  switch (e.type) {
    case 'S':
      if (cp->fanning && e.gen == cp->gen) fanout_answer(c, cp, b, len, now);
      return;
    case 'G':
      if (!cp->q_busy || e.gen != cp->q_gen) return;
      if (len == 1 + sizeof cp->q_counts && b[0] == 'N') {
        uint64_t k[FQ_ST_COUNT_];
        memcpy(k, b + 1, sizeof k);
        for (int s = 0; s < FQ_ST_COUNT_; s++) cp->q_counts[s] += k[s];
      } else {
        cp->q_failed = true;
      }
      if (--cp->q_left == 0) query_done(c, cp, now);
      return;
    case 'A':
      if (!cp->a_busy || e.gen != cp->a_gen) return;
      if (len == 10 && b[0] == 'A') {
        uint64_t n;
        memcpy(&n, b + 1, 8);
        cp->a_cancelled += n;
        /* The shard cancels a bounded number per request: ask again. */
        if (b[9] && abort_one(c, cp, e.idx) == 0) {
          cp->a_sent = now;
          return;
        }
        if (b[9]) cp->a_failed = true;
      } else {
        cp->a_failed = true;
      }
      if (--cp->a_left == 0) abort_done(c, cp, now);
      return;
    default:
      return;
  }
}

/* ---- requests ---------------------------------------------------------------- */

static int check_accounts(fq_campaigns_t *c, const fq_request_t *req, char *msg, size_t cap) {
  if (!c->accounts) return 0;
  /* Accounts are few: remember the last names found. */
  fq_str_t seen[16];
  size_t nseen = 0;
  fq_wire_devit_t it;
  fq_wire_device_t d;
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_wire_devices_begin(&it, req->devices_raw, req->devices_len, NULL, &err)) return 0;
  while (fq_wire_devices_next(&it, &d, &err) == 1) {
    bool known = false;
    for (size_t i = 0; i < nseen && !known; i++)
      known = seen[i].n == d.account.n && !memcmp(seen[i].p, d.account.p, d.account.n);
    if (known) continue;
    int rc = fq_accounts_exists(c->accounts, d.account.p, d.account.n, &err);
    if (rc == FQ_ENOTFOUND) {
      snprintf(msg, cap,
               "\"devices\"[%" PRIu32 "]: account \"%.*s\" is not registered with fleetqd: add it "
               "with `fleetq account add`; nothing of the campaign was stored",
               it.index - 1, (int)(d.account.n > 128 ? 128 : d.account.n), d.account.p);
      return FQ_EUNKACCT;
    }
    if (rc) {
      snprintf(msg, cap, "cannot read the account store: %.150s", err.msg);
      return FQ_EINTERNAL;
    }
    seen[nseen++ % 16] = (fq_str_t){d.account.p, d.account.n};
    if (nseen > 16) nseen = 16;
  }
  return 0;
}

static void new_id(char out[24]) {
  uint8_t r[8];
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got = f ? fread(r, 1, 8, f) : 0;
  if (f) fclose(f);
  if (got != 8) {
    uint64_t t = (uint64_t)fq_now_ms() ^ ((uint64_t)(uintptr_t)out << 20);
    memcpy(r, &t, 8);
  }
  char hex[17];
  fq_hex_encode(r, 8, hex);
  snprintf(out, 24, "c-%s", hex);
}

static void handle_campaign(fq_campaigns_t *c, const fq_request_t *req, zmq_msg_t *env,
                            int nenv) {
  const uint8_t *rq = req->req_raw;
  size_t rql = req->req_raw_len;
  char msg[400];
  int64_t now = fq_now_ms();
  fq_err_t err;
  fq_err_clear(&err);
  if (req->has_not_before && req->not_before > now + FQ_WIRE_MAX_SCHEDULE_MS) {
    snprintf(msg, sizeof msg,
             "\"not_before\": %" PRId64 " is more than %lld days ahead of fleetqd's clock (%" PRId64
             ")",
             req->not_before, FQ_WIRE_MAX_SCHEDULE_MS / 86400000, now);
    reply_err(c, env, nenv, FQ_EBADPARAM, msg, rq, rql);
    return;
  }
  uint8_t dh[32], ph[32];
  def_hash(c, req, dh);
  sha256(req->devices_raw, req->devices_len, ph);
  camp_t *cp = find_key(c, &req->tenant, &req->key);
  bool first = cp == NULL;
  if (cp) {
    if (memcmp(cp->defhash, dh, 32) != 0) {
      snprintf(msg, sizeof msg,
               "campaign key \"%s\" of tenant \"%s\" was already used for a different campaign "
               "(%s): every part repeats the same command, params, ttl_ms, rate, "
               "max_failure_ratio, not_before and parts",
               cp->key, cp->tenant, cp->id);
      reply_err(c, env, nenv, FQ_EIDEMMISMATCH, msg, rq, rql);
      return;
    }
    uint8_t old[32];
    int rc = db_part(c, cp, req->part, old, NULL, NULL, &err);
    if (rc == 0) {
      if (memcmp(old, ph, 32) != 0) {
        snprintf(msg, sizeof msg,
                 "part %" PRIu32 " of campaign %s was already received with other devices",
                 req->part, cp->id);
        reply_err(c, env, nenv, FQ_EIDEMMISMATCH, msg, rq, rql);
        return;
      }
      /* A part sent again: the same answer, once it is true. */
      if (cp->state == CS_RECEIVING || cp->fanned || cp->state == CS_ABORTED) {
        reply_accept(c, cp, true, env, nenv, rq, rql);
        return;
      }
      waiter_t *w = waiter_new(req, env, nenv);
      if (w) w->dup = true;
      if (!wlist_add(&cp->fo_w, w)) {
        waiter_free(w);
        reply_err(c, env, nenv, FQ_EBUSY, "too many requests wait for this campaign; retry", rq,
                  rql);
        return;
      }
      fanout_start(c, cp); /* no-op while one runs; else a retry after a failed one */
      fanout_pump(c, cp, now);
      return;
    }
    if (rc != FQ_ENOTFOUND) {
      reply_err(c, env, nenv, FQ_EINTERNAL, err.msg, rq, rql);
      return;
    }
    if (cp->state != CS_RECEIVING) {
      /* Only an abort ends a campaign before all its parts are in. */
      snprintf(msg, sizeof msg, "campaign %s is %s: it takes no more parts", cp->id,
               cs_name[cp->state]);
      reply_err(c, env, nenv, FQ_EIDEMMISMATCH, msg, rq, rql);
      return;
    }
  }
  uint32_t have = cp ? cp->devices : 0;
  if ((uint64_t)have + req->ndevices > FQ_WIRE_MAX_CAMPAIGN_DEVICES) {
    snprintf(msg, sizeof msg,
             "\"devices\": %" PRIu64 " devices over the parts received, at most %d per campaign",
             (uint64_t)have + req->ndevices, FQ_WIRE_MAX_CAMPAIGN_DEVICES);
    reply_err(c, env, nenv, FQ_EBADREQ, msg, rq, rql);
    return;
  }
  /* Budgets: refused whole, as a submit would be. */
  {
    int64_t reset_at = 0;
    if (fq_budget_check(req->tenant.p, req->tenant.n, now, &reset_at, msg, sizeof msg)) {
      fq_buf_reset(&c->out);
      fq_wire_reply_budget(&c->out, msg, reset_at, rq, rql);
      c->io.reply(c->io.ud, env, nenv, c->out.data, c->out.len);
      return;
    }
  }
  int rc = check_accounts(c, req, msg, sizeof msg);
  if (rc) {
    reply_err(c, env, nenv, rc, msg, rq, rql);
    return;
  }
  camp_t *fresh = NULL;
  if (!cp) {
    if (slots_grow(c) != 0) {
      reply_err(c, env, nenv, FQ_EBUSY, "out of memory", rq, rql);
      return;
    }
    cp = fresh = calloc(1, sizeof *cp);
    if (!cp || (req->params_raw_len && !(cp->params = malloc(req->params_raw_len)))) {
      camp_free(cp);
      reply_err(c, env, nenv, FQ_EBUSY, "out of memory", rq, rql);
      return;
    }
    fq_hmap_init(&cp->devset, 8, 70);
    cp->devset_ok = true;
    new_id(cp->id);
    memcpy(cp->tenant, req->tenant.p, req->tenant.n);
    memcpy(cp->key, req->key.p, req->key.n);
    snprintf(cp->command, sizeof cp->command, "%s", req->cmd->name);
    if (req->params_raw_len) memcpy(cp->params, req->params_raw, req->params_raw_len);
    cp->params_len = req->params_raw_len;
    cp->ttl_ms = req->ttl_ms;
    cp->has_nb = req->has_not_before;
    cp->not_before = req->not_before;
    cp->has_rate = req->has_rate;
    cp->rate = req->rate;
    cp->has_ratio = req->has_ratio;
    cp->ratio = req->max_failure_ratio;
    cp->parts = req->parts;
    memcpy(cp->defhash, dh, 32);
    cp->state = CS_RECEIVING;
    cp->created_at = now;
    cp->last_ev_state = -1;
  }
  /* Devices listed twice, in this part or against the parts before. */
  if ((rc = devset_load(c, cp, &err)) != 0) {
    camp_free(fresh);
    reply_err(c, env, nenv, FQ_EINTERNAL, err.msg, rq, rql);
    return;
  }
  {
    fq_wire_devit_t it;
    fq_wire_device_t d;
    fq_wire_devices_begin(&it, req->devices_raw, req->devices_len, NULL, &err);
    fq_hmap_t mine;
    fq_hmap_init(&mine, 8, 70);
    while (fq_wire_devices_next(&it, &d, &err) == 1) {
      char name[32];
      size_t nl = fq_wire_device_name(&d, name, sizeof name);
      uint64_t h = fq_hash64(name, nl);
      if (!h) h = 1;
      bool dup = has_h(&cp->devset, h) || has_h(&mine, h);
      uint64_t *slot = dup ? NULL : fq_hmap_add(&mine, h);
      if (slot) *slot = h;
      if (dup || !slot) {
        /* The message first: cp may be the fresh campaign freed below. */
        snprintf(msg, sizeof msg,
                 "\"devices\"[%" PRIu32 "]: %s %s is listed twice in campaign \"%s\"",
                 it.index - 1, d.vin.p ? "vin" : "site", name, cp->key);
        fq_hmap_free(&mine);
        camp_free(fresh);
        if (!dup) {
          reply_err(c, env, nenv, FQ_EBUSY, "out of memory", rq, rql);
          return;
        }
        reply_err(c, env, nenv, FQ_EBADPARAM, msg, rq, rql);
        return;
      }
    }
    fq_hmap_free(&mine);
  }
  /* Durable: the part, and once all are in, the start time, before any
   * device command exists. */
  camp_t saved = *cp;
  cp->parts_received++;
  cp->devices += req->ndevices;
  bool complete = cp->parts_received == cp->parts;
  if (complete) {
    cp->start = cp->has_nb ? cp->not_before : now;
    cp->state = cp->start > now ? CS_SCHEDULED : CS_RUNNING;
    if (cp->state == CS_RUNNING) cp->started_at = now;
  }
  rc = db_write(c, cp, first, req->part, ph, req->devices_raw, req->devices_len, &err);
  if (rc) {
    fq_error("campaign", "%s", err.msg);
    if (fresh) camp_free(fresh);
    else {
      cp->parts_received = saved.parts_received;
      cp->devices = saved.devices;
      cp->state = saved.state;
      cp->start = saved.start;
      cp->started_at = saved.started_at;
    }
    reply_err(c, env, nenv, rc == FQ_ESTORFULL ? FQ_ESTORFULL : FQ_EINTERNAL, err.msg, rq, rql);
    return;
  }
  if (fresh) slot_put(c, fresh);
  /* Add this part's devices to the set (kept while receiving). */
  {
    fq_wire_devit_t it;
    fq_wire_device_t d;
    fq_wire_devices_begin(&it, req->devices_raw, req->devices_len, NULL, &err);
    while (fq_wire_devices_next(&it, &d, &err) == 1)
      if (dev_hash_add(cp, &d, false) < 0) cp->devset_ok = false;
  }
  if (!complete) {
    reply_accept(c, cp, false, env, nenv, rq, rql);
    return;
  }
  fq_hmap_free(&cp->devset);
  cp->devset_ok = false;
  waiter_t *w = waiter_new(req, env, nenv);
  if (!w)
    reply_err(c, env, nenv, FQ_EBUSY, "out of memory; send the same request again", rq, rql);
  else if (!wlist_add(&cp->fo_w, w))
    waiter_err(c, w, FQ_EBUSY, "too many requests wait for this campaign; send it again");
  fanout_start(c, cp);
  fanout_pump(c, cp, now);
}

static camp_t *lookup(fq_campaigns_t *c, const fq_request_t *req, const void *who, zmq_msg_t *env,
                      int nenv) {
  camp_t *cp = req->id.p ? find_id(c, req->id.p, req->id.n) : find_key(c, &req->tenant, &req->key);
  if (cp && req->id.p && req->tenant.p &&
      (strlen(cp->tenant) != req->tenant.n || memcmp(cp->tenant, req->tenant.p, req->tenant.n)))
    cp = NULL;
  if (cp && c->io.tenant_ok && !c->io.tenant_ok(c->io.ud, who, cp->tenant, strlen(cp->tenant)))
    cp = NULL;
  if (!cp) {
    char msg[300];
    if (req->id.p)
      snprintf(msg, sizeof msg, "no campaign with id \"%.*s\"",
               (int)(req->id.n > 64 ? 64 : req->id.n), req->id.p);
    else
      snprintf(msg, sizeof msg, "no campaign with tenant \"%.*s\" and key \"%.*s\"",
               (int)req->tenant.n, req->tenant.p, (int)req->key.n, req->key.p);
    reply_err(c, env, nenv, FQ_ENOTFOUND, msg, req->req_raw, req->req_raw_len);
  }
  return cp;
}

void fq_campaigns_request(fq_campaigns_t *c, const fq_request_t *req, const void *who,
                          zmq_msg_t *env, int nenv) {
  int64_t now = fq_now_ms();
  if (req->op == FQ_OP_CAMPAIGN) {
    handle_campaign(c, req, env, nenv);
    return;
  }
  camp_t *cp = lookup(c, req, who, env, nenv);
  if (!cp) return;
  if (req->op == FQ_OP_CAMPAIGN_GET) {
    waiter_t *w = waiter_new(req, env, nenv);
    if (!w) {
      reply_err(c, env, nenv, FQ_EBUSY, "out of memory", req->req_raw, req->req_raw_len);
      return;
    }
    if (cp->state == CS_RECEIVING) {
      uint64_t zero[FQ_ST_COUNT_] = {0};
      reply_get(c, cp, zero, w);
      return;
    }
    if (!wlist_add(&cp->q_w, w)) {
      waiter_err(c, w, FQ_EBUSY, "too many requests wait for this campaign; retry");
      return;
    }
    query_start(c, cp, now);
    if (!cp->q_busy) query_done(c, cp, now); /* no shard could be asked: q_failed */
    return;
  }
  /* campaign_abort */
  if (cp->state == CS_DONE) {
    fq_buf_reset(&c->out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->out, buf_write);
    msgpack_pack_map(&pk, 4 + (req->req_raw ? 1 : 0));
    pk_str(&pk, "ok");
    msgpack_pack_false(&pk);
    pk_kv_str(&pk, "error", fq_wire_errname(FQ_ENOTCANCEL));
    char msg[160];
    snprintf(msg, sizeof msg, "campaign %s is done: nothing left to abort", cp->id);
    pk_kv_str(&pk, "message", msg);
    pk_kv_str(&pk, "state", "done");
    pk_req(&pk, &c->out, req->req_raw, req->req_raw_len);
    c->io.reply(c->io.ud, env, nenv, c->out.data, c->out.len);
    return;
  }
  waiter_t *w = waiter_new(req, env, nenv);
  if (!w) {
    reply_err(c, env, nenv, FQ_EBUSY, "out of memory", req->req_raw, req->req_raw_len);
    return;
  }
  if (cp->state == CS_ABORTED && cp->abort_done && !cp->a_busy) {
    reply_abort(c, cp, 0, w);
    return;
  }
  if (cp->fanning) {
    waiter_err(c, w, FQ_EBUSY,
               "the campaign's device commands are being stored; abort again in a moment");
    return;
  }
  if (!wlist_add(&cp->a_w, w)) {
    waiter_err(c, w, FQ_EBUSY, "too many requests wait for this campaign; retry");
    return;
  }
  if (cp->state == CS_ABORTED) {
    if (!cp->a_busy) abort_send(c, cp, now);
  } else {
    abort_start(c, cp, "aborted by request", false, now);
  }
  if (!cp->a_busy) {
    if (cp->abort_done) {
      for (int i = 0; i < cp->a_w.n; i++) reply_abort(c, cp, 0, cp->a_w.w[i]);
      cp->a_w.n = 0;
      publish(c, cp, cp->last_counts, now);
    } else {
      abort_done(c, cp, now); /* a_failed: tells the waiters to retry */
    }
  }
}

/* ---- retention ------------------------------------------------------------------ */

/* Campaigns (with their parts) deleted per transaction: a step's work is
 * bounded (a campaign has at most 1,000 parts), as the shards' pruning. */
#define PRUNE_CAMPAIGNS 8
#define PRUNE_PARTS 1000

/* Whether cp may go now: over (done, or aborted with its cancellations
 * committed) for the retention, and nothing of it in progress. */
static bool prunable(const fq_campaigns_t *c, const camp_t *cp, int64_t now) {
  bool over = cp->state == CS_DONE || (cp->state == CS_ABORTED && cp->abort_done);
  return over && c->retention_ms > 0 && now - cp->finished_at >= c->retention_ms &&
         !cp->fanning && !cp->q_busy && !cp->a_busy && !cp->fo_w.n && !cp->q_w.n && !cp->a_w.n;
}

/* Delete cp's rows in txn: its record, its parts, its key row when that
 * still names it (a newer campaign may have the key now). */
static int prune_rows(fq_campaigns_t *c, MDB_txn *txn, const camp_t *cp) {
  MDB_val k = {strlen(cp->id), (void *)cp->id};
  int rc = mdb_del(txn, c->dcamp, &k, NULL);
  for (uint32_t part = 1; part <= cp->parts && (!rc || rc == MDB_NOTFOUND); part++) {
    uint8_t kb[32];
    MDB_val pk = {part_key(kb, cp->id, part), kb};
    rc = mdb_del(txn, c->dpart, &pk, NULL);
  }
  if (rc && rc != MDB_NOTFOUND) return rc;
  uint8_t kb[FQ_TENANT_MAX + 2 + FQ_WIRE_MAX_CAMPAIGN_KEY];
  MDB_val kk = {key_key(kb, cp->tenant, cp->key), kb}, kd;
  rc = mdb_get(txn, c->dkey, &kk, &kd);
  if (!rc && kd.mv_size == strlen(cp->id) && !memcmp(kd.mv_data, cp->id, kd.mv_size))
    rc = mdb_del(txn, c->dkey, &kk, NULL);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* One bounded step of retention: returns the ms until the next one is
 * due (1000 at most; a few when more are due already). */
static long prune(fq_campaigns_t *c, int64_t now) {
  if (c->retention_ms <= 0 || now < c->next_prune) return 1000;
  camp_t *batch[PRUNE_CAMPAIGNS];
  size_t nb = 0, parts = 0;
  bool more = false;
  int64_t next = now + 1000;
  for (size_t i = 0; i < c->n; i++) {
    camp_t *cp = c->c[i];
    if (!cp) continue;
    if (prunable(c, cp, now)) {
      if (nb == PRUNE_CAMPAIGNS || (nb && parts + cp->parts > PRUNE_PARTS)) {
        more = true;
        break;
      }
      batch[nb++] = cp;
      parts += cp->parts;
    } else if ((cp->state == CS_DONE || cp->state == CS_ABORTED) &&
               cp->finished_at + c->retention_ms < next) {
      next = cp->finished_at + c->retention_ms;
    }
  }
  c->next_prune = more ? now + 5 : next;
  if (!nb) return (long)(c->next_prune - now);
  MDB_txn *txn;
  int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
  for (size_t i = 0; i < nb && !rc; i++) rc = prune_rows(c, txn, batch[i]);
  if (!rc) rc = mdb_txn_commit(txn);
  else mdb_txn_abort(txn);
  if (rc) {
    fq_error("campaign", "retention: cannot delete %zu campaign(s): %s", nb, mdb_strerror(rc));
    c->next_prune = now + 1000;
    return 1000;
  }
  for (size_t i = 0; i < nb; i++) {
    camp_t *cp = batch[i];
    fq_info("campaign", "campaign %s (tenant %s, key %s) removed: %s %" PRId64 " s ago, past "
            "--retention-s",
            cp->id, cp->tenant, cp->key, cs_name[cp->state], (now - cp->finished_at) / 1000);
    c->c[cp->slot] = NULL;
    c->holes++;
    camp_free(cp);
  }
  return (long)(c->next_prune - now);
}

/* ---- ticks --------------------------------------------------------------------- */

long fq_campaigns_tick(fq_campaigns_t *c, int64_t now) {
  long next = 1000;
  uint64_t states[5];
  fq_campaigns_states(c, states);
  fq_metrics_campaigns(states);
  for (size_t i = 0; i < c->n; i++) {
    camp_t *cp = c->c[i];
    if (!cp) continue;
    if (cp->fanning) {
      fanout_pump(c, cp, now);
      if (cp->fanning) next = 5;
    } else if (!cp->fanned && cp->state != CS_RECEIVING && cp->state != CS_ABORTED &&
               cp->fo_w.n == 0 && cp->last_query == 0) {
      /* Stored but not fanned out (a stop in between): do it now. */
      cp->last_query = now;
      fanout_start(c, cp);
      fanout_pump(c, cp, now);
      next = 5;
    }
    if (cp->q_busy && now - cp->q_sent > QUERY_TIMEOUT_MS) {
      cp->q_failed = true;
      query_done(c, cp, now);
    }
    if (cp->a_busy && now - cp->a_sent > QUERY_TIMEOUT_MS) {
      cp->a_failed = true; /* a shard did not answer: sent again below */
      abort_done(c, cp, now);
    }
    if (cp->state == CS_ABORTED && !cp->abort_done && !cp->a_busy &&
        now - cp->last_query >= PROGRESS_MS) {
      cp->last_query = now;
      abort_send(c, cp, now);
    }
    if (cp->fanned && (cp->state == CS_SCHEDULED || cp->state == CS_RUNNING) && !cp->q_busy) {
      /* A second after the last query and the last event: at most one
       * progress event a second. */
      int64_t base = cp->last_query > cp->last_event ? cp->last_query : cp->last_event;
      long wait = (long)(base + PROGRESS_MS - now);
      if (cp->state == CS_SCHEDULED && cp->start - now < wait) wait = (long)(cp->start - now);
      if (wait <= 0) {
        query_start(c, cp, now);
        wait = PROGRESS_MS;
      }
      if (wait < next) next = wait;
    }
    if (cp->q_busy || cp->a_busy) next = next > 50 ? 50 : next;
  }
  long pw = prune(c, now);
  if (pw < next) next = pw;
  return next < 1 ? 1 : next;
}

void fq_campaigns_states(const fq_campaigns_t *c, uint64_t counts[5]) {
  memset(counts, 0, 5 * sizeof counts[0]);
  for (size_t i = 0; i < c->n; i++)
    if (c->c[i]) counts[c->c[i]->state]++;
}

/* ---- open / close -------------------------------------------------------------- */

fq_campaigns_t *fq_campaigns_open(const char *data_dir, unsigned nshards,
                                  fq_accounts_t *accounts, int64_t retention_ms,
                                  int64_t dedupe_ms, int shard_hwm, const fq_camp_io_t *io,
                                  fq_err_t *err) {
  fq_campaigns_t *c = calloc(1, sizeof *c);
  if (!c) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  c->io = *io;
  c->nshards = nshards;
  c->accounts = accounts;
  c->retention_ms = retention_ms;
  c->dedupe_ms = dedupe_ms;
  c->window = FANOUT_WINDOW;
  if (shard_hwm > 0 && (uint32_t)shard_hwm / 4 < c->window)
    c->window = shard_hwm / 4 > 0 ? (uint32_t)shard_hwm / 4 : 1;
  fq_buf_init(&c->out, 0);
  fq_buf_init(&c->body, 0);
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/campaigns", data_dir);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fq_errf(err, FQ_ESTORAGE, "cannot create %s: %s", dir, fq_strerror(-errno));
    goto fail;
  }
  int rc;
  MDB_txn *txn = NULL;
  if ((rc = mdb_env_create(&c->env)) != 0) {
    lmdb_fail(err, rc, "create");
    goto fail;
  }
  mdb_env_set_maxdbs(c->env, 4);
  /* Parts hold the device lists: 100,000 devices are about 6 MB. */
  mdb_env_set_mapsize(c->env, (size_t)4 << 30);
  /* Synchronous, durable mode (never MDB_NOSYNC). */
  if ((rc = mdb_env_open(c->env, dir, MDB_NOTLS, 0600)) != 0) {
    fq_errf(err, FQ_ESTORAGE, "cannot open %s: %s", dir, mdb_strerror(rc));
    goto fail;
  }
  int dead = 0;
  mdb_reader_check(c->env, &dead);
  if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)) != 0 ||
      (rc = mdb_dbi_open(txn, "camp", MDB_CREATE, &c->dcamp)) != 0 ||
      (rc = mdb_dbi_open(txn, "part", MDB_CREATE, &c->dpart)) != 0 ||
      (rc = mdb_dbi_open(txn, "key", MDB_CREATE, &c->dkey)) != 0) {
    if (txn) mdb_txn_abort(txn);
    lmdb_fail(err, rc, "open");
    goto fail;
  }
  MDB_cursor *cur;
  MDB_val k, d;
  if ((rc = mdb_cursor_open(txn, c->dcamp, &cur)) != 0) {
    mdb_txn_abort(txn);
    lmdb_fail(err, rc, "cursor");
    goto fail;
  }
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    camp_t *cp = rec_decode(d.mv_data, d.mv_size);
    if (!cp) {
      fq_error("campaign", "a damaged campaign record (%zu bytes) was skipped", d.mv_size);
      continue;
    }
    if (slots_grow(c) != 0) {
      camp_free(cp);
      break;
    }
    cp->last_ev_state = cp->state;
    /* A campaign over before the stop has had its final event. */
    cp->final_sent = cp->state == CS_DONE || (cp->state == CS_ABORTED && cp->abort_done);
    slot_put(c, cp);
  }
  mdb_cursor_close(cur);
  if ((rc = mdb_txn_commit(txn)) != 0) {
    lmdb_fail(err, rc, "commit");
    goto fail;
  }
  size_t pending = 0;
  for (size_t i = 0; i < c->n; i++)
    pending += !c->c[i]->fanned && c->c[i]->state != CS_RECEIVING &&
               c->c[i]->state != CS_ABORTED;
  if (c->n)
    fq_info("campaign", "%zu campaign(s) loaded%s", c->n,
            pending ? "; the fan-out of some is done again (it was cut short)" : "");
  return c;
fail:
  fq_campaigns_close(&c);
  return NULL;
}

void fq_campaigns_close(fq_campaigns_t **cpp) {
  if (!cpp || !*cpp) return;
  fq_campaigns_t *c = *cpp;
  for (size_t i = 0; i < c->n; i++) camp_free(c->c[i]);
  free(c->c);
  if (c->env) mdb_env_close(c->env);
  fq_buf_free(&c->out);
  fq_buf_free(&c->body);
  free(c);
  *cpp = NULL;
}
