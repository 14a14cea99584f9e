/*
 * The shard store: LMDB environment, named databases, transactions, and the
 * msgpack codec of command records.  See store.h for the layout.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <inttypes.h>
#include <lmdb.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "byteorder.h"
#include "hmap.h"
#include "idem.h"
#include "mpread.h"
#include "log.h"
#include "util.h"
#include "writeset.h"

/* The tseq counter of one tenant.  `last` is the committed value;
 * `txn_last` is the value inside the open write transaction, valid only
 * while `gen` equals the store's txn_gen (a transaction that aborts simply
 * leaves a stale generation behind, so nothing has to be undone). */
typedef struct tctr {
  uint64_t last, txn_last, gen;
  size_t len;
  char name[FQ_TENANT_MAX + 1];
} tctr_t;

struct fq_store {
  char dir[4096];
  MDB_env *env;
  uint64_t disk_end;   /* the data file's blocks are allocated up to here (bytes) */
  bool no_fallocate;   /* the filesystem cannot reserve blocks ahead */
  MDB_txn *txn;
  bool txn_write;
  MDB_dbi meta, cmd, idemlog, active, events, session, tcount, tindex, sched, camp;
  fq_idem_t *idem;
  /* The dedupe snapshot: the store's identity (meta `store_id`, random,
   * written when the store is created), whether the table came from a
   * snapshot, and the smallest dedupe window that has dropped entries from
   * the table while their rows stay in `idemlog` (0: none did). */
  uint8_t store_id[16];
  bool idem_from_snap;
  int64_t idem_dropped_window;
  void *snap_map;       /* the snapshot read, mapped until the caller took its part */
  size_t snap_map_len;
  const uint64_t *snap_extra; /* the caller's part, in snap_map (store.h) */
  size_t snap_extra_words;
  fq_buf_t scratch; /* reused for record encoding */
  unsigned shard;
  /* Counters: the committed values and the ones of the open transaction. */
  uint64_t next_cmd, next_q, next_seq;
  uint64_t txn_next_cmd, txn_next_q, txn_next_seq;
  /* Per-tenant tseq counters (items: tctr_t *), and the ones the open
   * write transaction moved (their rows are written by commit). */
  fq_hmap_t tenants;
  tctr_t **tdirty;
  size_t ndirty, adirty;
  uint64_t txn_gen;
  /* Retention (see the section at the end of the file): the outer write
   * transaction while a nested one is open, and how long a (tenant, key)
   * dedupes (0: for ever). */
  MDB_txn *parent;
  int64_t idem_window_ms;
  /* The writer that keeps the data file written ahead of LMDB's last page
   * (see "Writing the file ahead" below): started by the first write
   * commit.  zmu is held by each LMDB commit and by each of the writer's
   * writes, so that they never overlap. */
  pthread_mutex_t zmu;
  pthread_cond_t zcv;
  pthread_t zthread;
  bool zstarted, zstop, zfailed;
  int zfd;
  uint64_t zused;        /* LMDB's pages end here (bytes), as of the last commit */
  uint64_t zcap;         /* writes stop here: the disk reserve, at most the map */
  uint64_t written_end;  /* the file is written up to here */
  /* Cluster mode (docs/cluster.md): the write set every write of a write
   * transaction is also recorded in (NULL: single node, nothing recorded;
   * see "The write path" below), where it stood when the nested
   * transaction began, and whether the counters commit would write are
   * already written (fq_store_prepare, fq_store_apply). */
  fq_ws_t *ws;
  fq_ws_mark_t nest_mark;
  bool prepared;
  /* fq_store_apply: the dedupe entries of the `idemlog` rows the applied
   * write set deleted, dropped from memory once the deletion is durable. */
  struct { uint64_t h, num; } *gone;
  size_t ngone, agone;
};

/* LMDB's codes are its own or errno values (a failed write or fsync).
 * Both ways of running out of room are storage_full: the map (fixed size)
 * and the disk (ENOSPC, EDQUOT); every other failure is a storage error. */
static int lmdb_err(fq_err_t *err, int rc, const char *what) {
  /* A failure of the write-set capture (below the range of LMDB's codes,
   * above the errno values it returns): the code passes through, so that
   * FQ_ETOOLARGE (the write set is full: cut the batch) stays itself. */
  if (rc < 0 && rc > MDB_LAST_ERRCODE)
    return fq_errf(err, rc, "%s: write set: %s", what, fq_strerror(rc));
  if (rc == MDB_MAP_FULL)
    return fq_errf(err, FQ_ESTORFULL, "%s: storage full (LMDB map size reached)", what);
  if (rc == ENOSPC || rc == EDQUOT)
    return fq_errf(err, FQ_ESTORFULL, "%s: disk full (%s)", what, fq_strerror(-rc));
  return fq_errf(err, FQ_ESTORAGE, "%s: %s", what, mdb_strerror(rc));
}

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *v) {
  MDB_val k = {strlen(name), (void *)name}, d;
  int rc = mdb_get(txn, dbi, &k, &d);
  if (rc) return rc;
  if (d.mv_size != 8) return MDB_CORRUPTED;
  *v = fq_get_be64(d.mv_data);
  return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t v) {
  uint8_t b[8];
  fq_put_be64(b, v);
  MDB_val k = {strlen(name), (void *)name}, d = {8, b};
  return mdb_put(txn, dbi, &k, &d, 0);
}

/* --- the write path -----------------------------------------------------------
 *
 * Every write of a write transaction (outer or nested) goes through st_put
 * and st_del.  In single-node mode (s->ws NULL) they are mdb_put and
 * mdb_del behind one pointer test.  In cluster mode they also record the
 * write in the write set, in the order made (docs/cluster.md): the
 * operation is recorded first and taken back when LMDB refuses it, so the
 * write set holds exactly the writes that changed the transaction (a
 * delete of a missing key, a MDB_APPEND put that meets MDB_KEYEXIST and
 * is retried, leave nothing), and a write the write set has no room for
 * (FQ_ETOOLARGE, -ENOMEM) is not made either.  No MDB_RESERVE here: the
 * value must be known when it is recorded.  The writes of
 * fq_store_open's own first transaction are not recorded: every copy of a
 * shard makes them itself. */

/* The database index of docs/cluster.md (the order of store.h), or -1. */
static int ws_db(const fq_store_t *s, MDB_dbi dbi) {
  const MDB_dbi order[] = {s->meta,    s->cmd,    s->idemlog, s->active, s->events,
                           s->session, s->tcount, s->tindex,  s->sched,  s->camp};
  for (int i = 0; i < (int)(sizeof order / sizeof order[0]); i++)
    if (order[i] == dbi) return i;
  return -1;
}

static int ws_put(fq_store_t *s, MDB_dbi dbi, MDB_val *k, MDB_val *d, unsigned flags) {
  int db = ws_db(s, dbi);
  /* A write after fq_store_prepare would be committed but not in the
   * write set already encoded and appended. */
  if (db < 0 || s->prepared) return FQ_EINTERNAL;
  fq_ws_mark_t m = fq_ws_mark(s->ws);
  int rc = fq_ws_put(s->ws, (unsigned)db, k->mv_data, k->mv_size, d->mv_data, d->mv_size);
  if (rc) return rc;
  if ((rc = mdb_put(s->txn, dbi, k, d, flags)) != 0) fq_ws_rollback(s->ws, m);
  return rc;
}

static int ws_del(fq_store_t *s, MDB_dbi dbi, MDB_val *k) {
  int db = ws_db(s, dbi);
  if (db < 0 || s->prepared) return FQ_EINTERNAL;
  fq_ws_mark_t m = fq_ws_mark(s->ws);
  int rc = fq_ws_del(s->ws, (unsigned)db, k->mv_data, k->mv_size);
  if (rc) return rc;
  if ((rc = mdb_del(s->txn, dbi, k, NULL)) != 0) fq_ws_rollback(s->ws, m);
  return rc;
}

/* mdb_put / mdb_del in the open write transaction: LMDB's code, or a
 * capture failure (a fleetq code, or -ENOMEM). */
static inline int st_put(fq_store_t *s, MDB_dbi dbi, MDB_val *k, MDB_val *d, unsigned flags) {
  if (!s->ws) return mdb_put(s->txn, dbi, k, d, flags);
  return ws_put(s, dbi, k, d, flags);
}

static inline int st_del(fq_store_t *s, MDB_dbi dbi, MDB_val *k) {
  if (!s->ws) return mdb_del(s->txn, dbi, k, NULL);
  return ws_del(s, dbi, k);
}

static int st_meta_put(fq_store_t *s, const char *name, uint64_t v) {
  uint8_t b[8];
  fq_put_be64(b, v);
  MDB_val k = {strlen(name), (void *)name}, d = {8, b};
  return st_put(s, s->meta, &k, &d, 0);
}

/* --- per-tenant event sequence (tseq) ---------------------------------------
 *
 * Each tenant's events of this shard are numbered 1, 2, 3... (tseq) in the
 * transaction that appends them, next to their seq.  The counters live in
 * memory (tenants, loaded on open) and in `tcount`, whose row of a tenant
 * is rewritten once per transaction that gave it events, not once per
 * event; `tindex` maps (tenant, tseq) to seq so that history pages by
 * tseq. */

static bool tctr_eq(const void *item, const void *key) {
  const tctr_t *c = *(tctr_t *const *)item;
  const fq_str_t *k = key;
  return c->len == k->n && memcmp(c->name, k->p, k->n) == 0;
}

static tctr_t *tctr_find(const fq_store_t *s, const char *tenant, size_t tlen) {
  fq_str_t k = {tenant, tlen};
  tctr_t **it = fq_hmap_find(&s->tenants, fq_hash64(tenant, tlen), tctr_eq, &k);
  return it ? *it : NULL;
}

/* The counter of tenant, created (at 0) when missing.  NULL when out of
 * memory or when the name cannot be a tenant (empty, too long). */
static tctr_t *tctr_get(fq_store_t *s, const char *tenant, size_t tlen) {
  tctr_t *c = tctr_find(s, tenant, tlen);
  if (c || tlen == 0 || tlen > FQ_TENANT_MAX) return c;
  if (!(c = calloc(1, sizeof *c))) return NULL;
  tctr_t **it = fq_hmap_add(&s->tenants, fq_hash64(tenant, tlen));
  if (!it) {
    free(c);
    return NULL;
  }
  memcpy(c->name, tenant, tlen);
  c->len = tlen;
  *it = c;
  return c;
}

static void tenants_free(fq_store_t *s) {
  size_t pos = 0;
  tctr_t **it;
  while ((it = fq_hmap_each(&s->tenants, &pos))) free(*it);
  fq_hmap_free(&s->tenants);
  free(s->tdirty);
  s->tdirty = NULL;
  s->ndirty = s->adirty = 0;
}

/* Index key: tenant \0 u64be(tseq).  Tenant names hold no \0 (and [A-Za-z0-9._-]
 * only), so one tenant's keys are one contiguous range in tseq order. */
static size_t tindex_key(uint8_t *kb, const char *tenant, size_t tlen, uint64_t tseq) {
  memcpy(kb, tenant, tlen);
  kb[tlen] = 0;
  fq_put_be64(kb + tlen + 1, tseq);
  return tlen + 9;
}

/* The highest tseq of tenant in `tindex` (0 when none). */
static int tindex_last(MDB_txn *txn, MDB_dbi dbi, const char *tenant, size_t tlen,
                       uint64_t *last) {
  uint8_t kb[FQ_TENANT_MAX + 9];
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return rc;
  MDB_val k = {tindex_key(kb, tenant, tlen, UINT64_MAX), kb}, d;
  rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
  if (rc == 0) rc = mdb_cursor_get(cur, &k, &d, MDB_PREV);
  else if (rc == MDB_NOTFOUND) rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
  *last = 0;
  if (rc == 0 && k.mv_size == tlen + 9 && memcmp(k.mv_data, tenant, tlen) == 0 &&
      ((const uint8_t *)k.mv_data)[tlen] == 0)
    *last = fq_get_be64((const uint8_t *)k.mv_data + tlen + 1);
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Load every tenant's counter from `tcount`.  A store written before tseq
 * existed has no rows: its tenants start at 1.  Each counter is checked
 * against the index (one lookup per tenant), so that a damaged row can
 * never make a tseq repeat. */
static int tenants_load(fq_store_t *s, MDB_txn *txn, fq_err_t *err) {
  MDB_stat ms;
  MDB_cursor *cur;
  MDB_val k, d;
  int rc = mdb_stat(txn, s->tcount, &ms);
  if (rc) return lmdb_err(err, rc, "tcount");
  fq_hmap_init(&s->tenants, sizeof(tctr_t *), 70);
  if (fq_hmap_reserve(&s->tenants, ms.ms_entries + 64) != 0)
    return fq_errf(err, -ENOMEM, "out of memory for the tenant counters");
  if ((rc = mdb_cursor_open(txn, s->tcount, &cur)) != 0) return lmdb_err(err, rc, "cursor");
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    if (k.mv_size == 0 || k.mv_size > FQ_TENANT_MAX || d.mv_size != 8) continue;
    tctr_t *c = tctr_get(s, k.mv_data, k.mv_size);
    if (!c) {
      mdb_cursor_close(cur);
      return fq_errf(err, -ENOMEM, "out of memory for the tenant counters");
    }
    c->last = fq_get_be64(d.mv_data);
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return lmdb_err(err, rc, "tcount scan");
  size_t pos = 0;
  tctr_t **it;
  while ((it = fq_hmap_each(&s->tenants, &pos))) {
    uint64_t last;
    if ((rc = tindex_last(txn, s->tindex, (*it)->name, (*it)->len, &last)) != 0)
      return lmdb_err(err, rc, "tindex");
    if (last > (*it)->last) {
      fq_warn("store", "shard %u: tenant %s: counter %" PRIu64 " behind its index (%" PRIu64
              "); continuing after the index", s->shard, (*it)->name, (*it)->last, last);
      (*it)->last = last;
    }
  }
  return 0;
}

/* The store's identity, meta `store_id`: 16 random bytes given when the
 * store is first opened by a fleetqd that knows it (inside the open's write
 * transaction).  It tells the dedupe snapshot of one store from another's. */
static int store_identity(fq_store_t *s, MDB_txn *txn, fq_err_t *err) {
  MDB_val k = {8, (void *)"store_id"}, d;
  int rc = mdb_get(txn, s->meta, &k, &d);
  if (rc == 0 && d.mv_size == sizeof s->store_id) {
    memcpy(s->store_id, d.mv_data, sizeof s->store_id);
    return 0;
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "read meta store_id");
  if (getrandom(s->store_id, sizeof s->store_id, 0) != (ssize_t)sizeof s->store_id)
    return fq_errf(err, FQ_ESTORAGE, "getrandom: %s", fq_strerror(-errno));
  d = (MDB_val){sizeof s->store_id, s->store_id};
  if ((rc = mdb_put(txn, s->meta, &k, &d, 0)) != 0) return lmdb_err(err, rc, "write meta store_id");
  return 0;
}

/* Build the in-memory dedupe table from the durable log (every `idemlog`
 * row), replacing the one there is. */
static int idem_scan(fq_store_t *s, MDB_txn *txn, fq_err_t *err) {
  MDB_stat ms;
  MDB_cursor *cur;
  MDB_val k, d;
  int rc;
  fq_idem_destroy(&s->idem);
  s->idem_from_snap = false;
  s->idem_dropped_window = 0;
  mdb_stat(txn, s->idemlog, &ms);
  s->idem = fq_idem_new(ms.ms_entries + 1024);
  if (!s->idem) return fq_errf(err, -ENOMEM, "out of memory for the dedupe table");
  if ((rc = mdb_cursor_open(txn, s->idemlog, &cur)) != 0) return lmdb_err(err, rc, "cursor");
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    if (k.mv_size != FQ_ID_LEN || d.mv_size < 32 + 2) continue;
    const char *tk = (const char *)d.mv_data + 32;
    size_t tkl = d.mv_size - 32;
    const char *sep = memchr(tk, 0, tkl);
    if (!sep) continue;
    char idbuf[FQ_ID_LEN + 1];
    memcpy(idbuf, k.mv_data, FQ_ID_LEN);
    idbuf[FQ_ID_LEN] = 0;
    uint64_t h = fq_hash64_pair(tk, (size_t)(sep - tk), sep + 1, tkl - (size_t)(sep - tk) - 1);
    if (fq_idem_put(s->idem, h, fq_store_id_num(idbuf)) != 0) {
      mdb_cursor_close(cur);
      return fq_errf(err, -ENOMEM, "out of memory for the dedupe table");
    }
  }
  mdb_cursor_close(cur);
  return 0;
}

/* --- the dedupe snapshot -------------------------------------------------
 *
 * Rebuilding the dedupe table at start reads every `idemlog` row: at half
 * a million keys a shard, 0.3-0.9 s of page faults and cursor steps (and
 * the shard's queues, rebuilt from `active`, as much again).  A clean stop
 * writes the table instead (store.h), with the caller's words (the
 * queues, devq.h fq_devq_export), as
 *
 *   header (snap_hdr_t) | count x (hash, number) in hash order
 *   | extra_words of the caller | checksum
 *
 * all in host byte order (the file never leaves its host: the backup does
 * not copy it).  The stamp is what makes it safe: LMDB's last transaction
 * id and last page, the `idemlog` B-tree's shape (rows, depth, pages), the
 * next command number and the store's random identity.  Every commit
 * moves the transaction id, so any write after the snapshot (a later run,
 * a crash's recovery, a backup restored over the directory) makes it
 * stale, and a snapshot is deleted once read, used or not: a process
 * killed later leaves none behind (only a clean stop writes one).  The
 * table it holds is the one in memory at the stop, which differs from a
 * rebuild only by keys the dedupe window dropped while their rows wait
 * for pruning: their window is recorded, and a start with a longer (or no)
 * window rebuilds from the log (fq_store_set_dedupe_window). */
#define SNAP_MAGIC "FQDSNAP1"
#define SNAP_VERSION 1

typedef struct snap_hdr {
  char magic[8];
  uint32_t version, shard;
  uint64_t txnid, last_pgno;
  uint64_t idem_rows, idem_depth, idem_pages, next_cmd;
  uint8_t store_id[16];
  int64_t dropped_window;
  uint64_t count;
  uint64_t extra_words; /* the caller's part, after the pairs */
} snap_hdr_t;

/* The stamp of the store as it is on disk (txn: any transaction). */
static int snap_stamp(fq_store_t *s, MDB_txn *txn, snap_hdr_t *h) {
  MDB_envinfo ei;
  MDB_stat ms;
  uint64_t next_cmd = 0;
  memset(h, 0, sizeof *h);
  if (mdb_env_info(s->env, &ei) != 0 || mdb_stat(txn, s->idemlog, &ms) != 0 ||
      meta_get_u64(txn, s->meta, "next_cmd", &next_cmd) != 0)
    return -1;
  memcpy(h->magic, SNAP_MAGIC, 8);
  h->version = SNAP_VERSION;
  h->shard = s->shard;
  h->txnid = ei.me_last_txnid;
  h->last_pgno = ei.me_last_pgno;
  h->idem_rows = ms.ms_entries;
  h->idem_depth = ms.ms_depth;
  h->idem_pages = ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
  h->next_cmd = next_cmd;
  memcpy(h->store_id, s->store_id, sizeof h->store_id);
  return 0;
}

/* A checksum over 64-bit words: each step is a bijection of the running
 * value, so any one changed word changes the result. */
static uint64_t snap_sum(uint64_t acc, const uint64_t *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    acc = (acc ^ w[i]) * UINT64_C(0x9E3779B97F4A7C15);
    acc ^= acc >> 29;
  }
  return acc;
}

static void snap_path(const fq_store_t *s, char *buf, size_t n, const char *suffix) {
  snprintf(buf, n, "%s/%s%s", s->dir, FQ_STORE_SNAP_NAME, suffix);
}

/* Read the snapshot into the dedupe table when it matches the store
 * (inside the open's transaction, before it writes): 0 when used, -1 when
 * there is none or it is stale or damaged (then the caller rebuilds).  The
 * file is deleted either way. */
static int snap_load(fq_store_t *s, MDB_txn *txn) {
  char path[4200];
  /* What a stop killed while writing left (never read). */
  snap_path(s, path, sizeof path, ".tmp");
  (void)unlink(path);
  snap_path(s, path, sizeof path, "");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT)
      fq_warn("store", "shard %u: cannot open %s: %s; rebuilding the dedupe table", s->shard,
              path, fq_strerror(-errno));
    return -1;
  }
  const char *why = NULL;
  uint64_t *buf = NULL;
  struct stat st;
  snap_hdr_t want, *h;
  size_t words = 0;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)(sizeof(snap_hdr_t) + 8) ||
      st.st_size % 8 != 0) {
    why = "damaged (size)";
    goto out;
  }
  words = (size_t)st.st_size / 8;
  /* Mapped, populated at once from the page cache: no copy, and no page
   * fault per 4 KiB (each costs more than reading the page on this kind
   * of virtual machine).  Private and read-only: nothing changes the file. */
  buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (buf == MAP_FAILED) {
    buf = NULL;
    why = "unreadable";
    goto out;
  }
  h = (snap_hdr_t *)buf;
  if (snap_sum(0, buf, words - 1) != buf[words - 1]) {
    why = "damaged (checksum)";
    goto out;
  }
  if (snap_stamp(s, txn, &want) != 0) {
    why = "not comparable";
    goto out;
  }
  want.dropped_window = h->dropped_window;
  want.count = h->count;
  want.extra_words = h->extra_words;
  if (memcmp(&want, h, sizeof want) != 0 || h->extra_words > words ||
      h->count != (words - 1 - sizeof(snap_hdr_t) / 8 - h->extra_words) / 2 ||
      (words - 1 - sizeof(snap_hdr_t) / 8 - h->extra_words) % 2 != 0) {
    why = "stale (the store was written after it)";
    goto out;
  }
  fq_idem_t *t = fq_idem_new(0);
  int rc = t ? fq_idem_load_sorted(t, buf + sizeof(snap_hdr_t) / 8, (size_t)h->count,
                                   (size_t)h->idem_rows + 1024)
             : -ENOMEM;
  if (rc != 0) {
    fq_idem_destroy(&t);
    why = rc == -ENOMEM ? "too large to load" : "damaged (order)";
    goto out;
  }
  if (h->extra_words) {
    /* Kept mapped until the caller has taken its part. */
    s->snap_extra = buf + sizeof(snap_hdr_t) / 8 + 2 * h->count;
    s->snap_extra_words = (size_t)h->extra_words;
    s->snap_map = buf;
    s->snap_map_len = (size_t)st.st_size;
    buf = NULL;
  }
  fq_idem_destroy(&s->idem);
  s->idem = t;
  s->idem_from_snap = true;
  s->idem_dropped_window = h->dropped_window;
out:
  if (buf) munmap(buf, (size_t)st.st_size);
  close(fd);
  if (why) fq_warn("store", "shard %u: restart snapshot %s: %s; rebuilding the dedupe table",
                   s->shard, path, why);
  /* Used or not, it must never be read again: the next write makes it
   * stale, and only a clean stop writes a new one. */
  if (unlink(path) != 0 && errno != ENOENT)
    fq_warn("store", "shard %u: cannot delete %s: %s", s->shard, path, fq_strerror(-errno));
  return why ? -1 : 0;
}

typedef struct snap_w {
  int fd;
  uint64_t buf[8192];
  size_t n;
  uint64_t sum;
  int err;
} snap_w_t;

static int snap_flush(snap_w_t *w) {
  w->sum = snap_sum(w->sum, w->buf, w->n);
  const char *p = (const char *)w->buf;
  size_t left = w->n * 8;
  while (left && !w->err) {
    ssize_t r = write(w->fd, p, left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) w->err = r < 0 ? -errno : -EIO;
    else {
      p += r;
      left -= (size_t)r;
    }
  }
  w->n = 0;
  return w->err;
}

static int snap_put(void *ud, uint64_t h, uint64_t num) {
  snap_w_t *w = ud;
  /* The header's words are not even in number: room for both first. */
  if (w->n + 2 > sizeof w->buf / 8 && snap_flush(w) != 0) return w->err;
  w->buf[w->n++] = h;
  w->buf[w->n++] = num;
  return 0;
}

int fq_store_save_snapshot(fq_store_t *s, const void *extra, size_t extra_len, fq_err_t *err) {
  if (s->txn) return fq_errf(err, FQ_EINTERNAL, "store: snapshot with a transaction open");
  if (extra_len % 8) return fq_errf(err, FQ_EINTERNAL, "store: snapshot part not in words");
  int64_t t0 = fq_mono_ns();
  snap_hdr_t h;
  MDB_txn *txn;
  int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
  if (rc) return lmdb_err(err, rc, "begin");
  rc = snap_stamp(s, txn, &h);
  mdb_txn_abort(txn);
  if (rc) return fq_errf(err, FQ_ESTORAGE, "cannot read the store's stamp");
  h.dropped_window = s->idem_dropped_window;
  h.count = fq_idem_count(s->idem);
  h.extra_words = extra_len / 8;
  char tmp[4200], path[4200];
  snap_path(s, tmp, sizeof tmp, ".tmp");
  snap_path(s, path, sizeof path, "");
  snap_w_t *w = calloc(1, sizeof *w);
  if (!w) return fq_errf(err, -ENOMEM, "out of memory");
  w->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (w->fd < 0) {
    rc = fq_errf(err, FQ_ESTORAGE, "cannot create %s: %s", tmp, fq_strerror(-errno));
    free(w);
    return rc;
  }
  memcpy(w->buf, &h, sizeof h);
  w->n = sizeof h / 8;
  rc = fq_idem_foreach_sorted(s->idem, snap_put, w);
  if (rc == 0) rc = snap_flush(w);
  /* The caller's words, summed and written in buffer-sized pieces. */
  for (size_t off = 0; rc == 0 && off < extra_len;) {
    size_t part = extra_len - off < sizeof w->buf ? extra_len - off : sizeof w->buf;
    memcpy(w->buf, (const char *)extra + off, part);
    w->n = part / 8;
    rc = snap_flush(w);
    off += part;
  }
  if (rc == 0) {
    uint64_t sum = w->sum;
    w->buf[w->n++] = sum;
    /* The checksum word is not summed: flush writes it as it is. */
    w->sum = 0;
    rc = snap_flush(w);
  }
  if (rc == 0 && fsync(w->fd) != 0) rc = -errno;
  if (close(w->fd) != 0 && rc == 0) rc = -errno;
  free(w);
  if (rc == 0 && rename(tmp, path) != 0) rc = -errno;
  if (rc) {
    unlink(tmp);
    return fq_errf(err, FQ_ESTORAGE, "cannot write %s: %s", path, fq_strerror(rc));
  }
  int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd); /* the rename; a lost one only costs a rebuild */
    close(dfd);
  }
  fq_info("store", "shard %u: wrote the restart snapshot (%zu dedupe entries, %zu bytes more, "
          "transaction %" PRIu64 ") in %.0f ms",
          s->shard, fq_idem_count(s->idem), extra_len, h.txnid,
          (double)(fq_mono_ns() - t0) / 1e6);
  return 0;
}

bool fq_store_from_snapshot(const fq_store_t *s) { return s->idem_from_snap; }

const uint64_t *fq_store_snapshot_extra(const fq_store_t *s, size_t *nwords) {
  *nwords = s->snap_extra_words;
  return s->snap_extra;
}

void fq_store_snapshot_release(fq_store_t *s) {
  if (s->snap_map) munmap(s->snap_map, s->snap_map_len);
  s->snap_map = NULL;
  s->snap_map_len = 0;
  s->snap_extra = NULL;
  s->snap_extra_words = 0;
}

fq_store_t *fq_store_open(const char *dir, unsigned shard, uint64_t map_size, fq_err_t *err) {
  fq_store_t *s = calloc(1, sizeof *s);
  MDB_txn *txn = NULL;
  int rc;
  int64_t t_open = fq_mono_ns();
  if (!s) {
    fq_errf(err, -ENOMEM, "out of memory");
    return NULL;
  }
  s->shard = shard;
  pthread_mutex_init(&s->zmu, NULL);
  pthread_cond_init(&s->zcv, NULL);
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  fq_buf_init(&s->scratch, 1 << 20);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fq_errf(err, FQ_ESTORAGE, "cannot create %s: %s", dir, fq_strerror(-errno));
    goto fail;
  }
  if ((rc = mdb_env_create(&s->env)) != 0) {
    lmdb_err(err, rc, "mdb_env_create");
    goto fail;
  }
  mdb_env_set_maxdbs(s->env, 16);
  mdb_env_set_mapsize(s->env, (size_t)map_size);
  mdb_env_set_maxreaders(s->env, 126);
  /* Synchronous, durable mode: no NOSYNC/NOMETASYNC/MAPASYNC/WRITEMAP. */
  if ((rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600)) != 0) {
    fq_errf(err, FQ_ESTORAGE, "cannot open store %s: %s", dir, mdb_strerror(rc));
    goto fail;
  }
  int dead = 0;
  mdb_reader_check(s->env, &dead);
  if (dead) fq_info("store", "shard %u: cleared %d stale reader slot(s)", shard, dead);

  if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
    lmdb_err(err, rc, "begin");
    goto fail;
  }
  struct {
    const char *name;
    MDB_dbi *dbi;
  } dbs[] = {{"meta", &s->meta},     {"cmd", &s->cmd},       {"idemlog", &s->idemlog},
             {"active", &s->active}, {"events", &s->events}, {"session", &s->session},
             {"tcount", &s->tcount}, {"tindex", &s->tindex}, {"sched", &s->sched},
             {"camp", &s->camp}};
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    if ((rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi)) != 0) {
      lmdb_err(err, rc, dbs[i].name);
      goto fail;
    }
  }
  uint64_t schema = 0, stored_shard = 0;
  rc = meta_get_u64(txn, s->meta, "schema", &schema);
  if (rc == MDB_NOTFOUND) {
    if ((rc = meta_put_u64(txn, s->meta, "schema", FQ_SCHEMA_VERSION)) ||
        (rc = meta_put_u64(txn, s->meta, "shard", shard)) ||
        (rc = meta_put_u64(txn, s->meta, "next_cmd", 1)) ||
        (rc = meta_put_u64(txn, s->meta, "next_q", 1))) {
      lmdb_err(err, rc, "initialise meta");
      goto fail;
    }
    schema = FQ_SCHEMA_VERSION;
    stored_shard = shard;
  } else if (rc) {
    lmdb_err(err, rc, "read meta");
    goto fail;
  } else if ((rc = meta_get_u64(txn, s->meta, "shard", &stored_shard)) != 0) {
    lmdb_err(err, rc, "read meta shard");
    goto fail;
  }
  if (schema != FQ_SCHEMA_VERSION) {
    fq_errf(err, FQ_ESTORAGE, "%s: schema version %" PRIu64 ", this fleetqd reads %d", dir,
            schema, FQ_SCHEMA_VERSION);
    goto fail;
  }
  if (stored_shard != shard) {
    fq_errf(err, FQ_ESTORAGE,
            "%s holds shard %" PRIu64 ", not %u: the shard count must not change for a data "
            "directory",
            dir, stored_shard, shard);
    goto fail;
  }
  if ((rc = meta_get_u64(txn, s->meta, "next_cmd", &s->next_cmd)) ||
      (rc = meta_get_u64(txn, s->meta, "next_q", &s->next_q))) {
    lmdb_err(err, rc, "read counters");
    goto fail;
  }
  if (store_identity(s, txn, err) != 0) goto fail;
  /* The next event seq is one past the last stored event: derived, so it can
   * never disagree with the log. */
  MDB_cursor *cur;
  if ((rc = mdb_cursor_open(txn, s->events, &cur)) != 0) {
    lmdb_err(err, rc, "cursor");
    goto fail;
  }
  MDB_val k, d;
  rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
  s->next_seq = (rc == 0 && k.mv_size == 8) ? fq_get_be64(k.mv_data) + 1 : 1;
  mdb_cursor_close(cur);
  /* The in-memory dedupe table: from the snapshot of the last clean stop
   * when it matches this store exactly, else rebuilt from the durable log. */
  int64_t t_idem = fq_mono_ns();
  if (snap_load(s, txn) != 0 && idem_scan(s, txn, err) != 0) goto fail;
  int64_t t_tenants = fq_mono_ns();
  if (tenants_load(s, txn, err) != 0) goto fail;
  if ((rc = mdb_txn_commit(txn)) != 0) {
    txn = NULL;
    lmdb_err(err, rc, "commit");
    goto fail;
  }
  /* What the file holds now is allocated; fq_store_reserve_disk() goes
   * further. */
  int fd;
  struct stat st;
  if (mdb_env_get_fd(s->env, &fd) == 0 && fstat(fd, &st) == 0) {
    s->disk_end = (uint64_t)st.st_size;
    s->written_end = (uint64_t)st.st_size;
  }
  /* What a restart costs, once per start: the dedupe table is rebuilt
   * from every remembered key. */
  int64_t t_end = fq_mono_ns();
  fq_info("store", "shard %u: store opened in %.0f ms: %s %zu dedupe entries in %.0f ms, "
          "%zu tenant counters in %.0f ms",
          shard, (double)(t_end - t_open) / 1e6,
          s->idem_from_snap ? "loaded (snapshot)" : "rebuilt", fq_idem_count(s->idem),
          (double)(t_tenants - t_idem) / 1e6, fq_hmap_count(&s->tenants),
          (double)(t_end - t_tenants) / 1e6);
  return s;
fail:
  if (txn) mdb_txn_abort(txn);
  if (s->env) mdb_env_close(s->env);
  fq_idem_destroy(&s->idem);
  tenants_free(s);
  fq_buf_free(&s->scratch);
  free(s);
  return NULL;
}

static void zero_stop(fq_store_t *s);

void fq_store_destroy(fq_store_t **sp) {
  if (!sp || !*sp) return;
  fq_store_t *s = *sp;
  fq_store_abort(s); /* first: an open write transaction holds zmu */
  zero_stop(s);
  mdb_env_close(s->env);
  fq_idem_destroy(&s->idem);
  fq_store_snapshot_release(s);
  tenants_free(s);
  fq_buf_free(&s->scratch);
  free(s->gone);
  pthread_mutex_destroy(&s->zmu);
  pthread_cond_destroy(&s->zcv);
  free(s);
  *sp = NULL;
}

/* The bounds of the mapping that holds address p, from /proc/self/maps:
 * 0, or -1 when not found. */
static int mapping_of(const void *p, uintptr_t *lo, uintptr_t *hi) {
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f) return -1;
  char line[512];
  int rc = -1;
  uintptr_t a = (uintptr_t)p;
  while (fgets(line, sizeof line, f)) {
    unsigned long long l, h;
    if (sscanf(line, "%llx-%llx", &l, &h) == 2 && a >= l && a < h) {
      *lo = (uintptr_t)l;
      *hi = (uintptr_t)h;
      rc = 0;
      break;
    }
  }
  fclose(f);
  return rc;
}

void fq_store_release_pages(fq_store_t *s) {
  if (s->txn) return;
  /* LMDB does not say where its map is (mdb_env_info's me_mapaddr is the
   * MDB_FIXEDMAP address, NULL here), but every value a read transaction
   * returns points into it. */
  MDB_txn *txn;
  if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0) return;
  MDB_val k = {6, (void *)"schema"}, d;
  uintptr_t lo = 0, hi = 0;
  int rc = mdb_get(txn, s->meta, &k, &d);
  if (rc == 0) rc = mapping_of(d.mv_data, &lo, &hi);
  mdb_txn_abort(txn);
  if (rc != 0) return;
  /* The map is PROT_READ and MAP_SHARED (no MDB_WRITEMAP): dropping its
   * page table entries loses nothing; LMDB writes with pwrite, never
   * through the map.  Without it a restart holds every page the rebuild's
   * scans touched, and the kernel's fault-around maps the cached pages
   * next to each one too: the whole data file, at a million commands. */
  if (madvise((void *)lo, hi - lo, MADV_DONTNEED) != 0)
    fq_debug("store", "shard %u: madvise: %s", s->shard, fq_strerror(-errno));
}

int fq_store_begin(fq_store_t *s, bool write, fq_err_t *err) {
  if (s->txn) return fq_errf(err, FQ_EINTERNAL, "store: transaction already open");
  /* A write transaction holds zmu from here to its commit or abort: LMDB
   * may write pages before the commit too (it spills dirty pages of a large
   * transaction to the file), so the ahead writer runs only between write
   * transactions (see "Writing the file ahead"). */
  if (write) pthread_mutex_lock(&s->zmu);
  int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &s->txn);
  if (rc) {
    if (write) pthread_mutex_unlock(&s->zmu);
    s->txn = NULL;
    return lmdb_err(err, rc, "begin");
  }
  s->txn_write = write;
  if (write) {
    /* The write set is the open (or last) write transaction's. */
    s->prepared = false;
    if (s->ws) fq_ws_reset(s->ws);
  }
  s->txn_next_cmd = s->next_cmd;
  s->txn_next_q = s->next_q;
  s->txn_next_seq = s->next_seq;
  /* A new generation: every tenant's txn_last is stale until touched. */
  s->txn_gen++;
  s->ndirty = 0;
  return 0;
}

static void zero_note(fq_store_t *s);
static void zero_ahead(fq_store_t *s);

/* What a write transaction writes at its end (fq_store_commit, or
 * fq_store_prepare ahead of it): the id and queue counters it moved, and
 * one `tcount` row per tenant it gave events to.  LMDB's code, or a
 * capture failure. */
static int write_counters(fq_store_t *s) {
  int rc;
  if (s->txn_next_cmd != s->next_cmd && (rc = st_meta_put(s, "next_cmd", s->txn_next_cmd)) != 0)
    return rc;
  if (s->txn_next_q != s->next_q && (rc = st_meta_put(s, "next_q", s->txn_next_q)) != 0)
    return rc;
  /* One counter row per tenant this transaction gave events to. */
  for (size_t i = 0; i < s->ndirty; i++) {
    tctr_t *c = s->tdirty[i];
    uint8_t b[8];
    fq_put_be64(b, c->txn_last);
    MDB_val k = {c->len, c->name}, d = {8, b};
    if ((rc = st_put(s, s->tcount, &k, &d, 0)) != 0) return rc;
  }
  return 0;
}

int fq_store_commit(fq_store_t *s, fq_err_t *err) {
  int rc;
  if (!s->txn) return fq_errf(err, FQ_EINTERNAL, "store: no transaction");
  /* Prepared: the counters are written already (and in the write set). */
  if (s->txn_write && !s->prepared && (rc = write_counters(s)) != 0) goto fail;
  s->prepared = false;
  rc = mdb_txn_commit(s->txn);
  /* Where LMDB's pages end now, before the writer may run again: it must
   * never write below (see "Writing the file ahead"). */
  if (s->txn_write && rc == 0) zero_note(s);
  if (s->txn_write) pthread_mutex_unlock(&s->zmu);
  s->txn = NULL;
  if (rc) {
    s->ndirty = 0;
    return lmdb_err(err, rc, "commit");
  }
  if (s->txn_write) {
    s->next_cmd = s->txn_next_cmd;
    s->next_q = s->txn_next_q;
    s->next_seq = s->txn_next_seq;
    for (size_t i = 0; i < s->ndirty; i++) s->tdirty[i]->last = s->tdirty[i]->txn_last;
  }
  s->ndirty = 0;
  if (s->txn_write) zero_ahead(s);
  return 0;
fail:
  mdb_txn_abort(s->txn);
  pthread_mutex_unlock(&s->zmu); /* only a write transaction gets here */
  s->txn = NULL;
  s->ndirty = 0;
  if (s->ws) fq_ws_reset(s->ws);
  return lmdb_err(err, rc, "commit counters");
}

/* --- writing the file ahead of LMDB ---------------------------------------------
 *
 * Why: LMDB appends its new pages past the end of data.mdb, so every
 * commit of a growing store changes the file's size and allocates (or,
 * in the blocks fq_store_reserve_disk reserved, converts) blocks, and its
 * fdatasync must then commit the filesystem's journal as well as the
 * data.  On ext4 that journal commit is shared with everything else the
 * filesystem does, and it was most of a commit's time under load (issue
 * 17, perf/RESULTS.md).  So a thread per store keeps the file written
 * with zeros (and synced) up to 8 MiB past LMDB's last page, once the
 * store has grown past 16 MiB (ZERO_FROM):
 * LMDB's commits then overwrite blocks the file already has, and their
 * fdatasync flushes data only.  The growth's journal commits are the
 * writer's, once per ZERO_SYNC, off the shard's path.
 *
 * Safe for the data: the writer writes only past LMDB's last committed
 * page, which LMDB never reads, and only while it holds zmu, which every
 * write transaction holds from its begin to its commit or abort (LMDB
 * writes pages in its commit, and before it when it spills the dirty
 * pages of a very large transaction), so a page LMDB writes is never
 * overwritten by zeros.  Under a load that leaves no gap between write
 * transactions the writer simply gets no turn, and commits pay the
 * growth as they did without it.  Never past the map,
 * and only into blocks the disk reserve already allocated (zcap), so that
 * it takes no room the full-disk checks do not know of.  Durability is
 * untouched: LMDB still syncs its pages and then its meta page before a
 * commit returns; a crash leaves zeros or stale pages past the last page.
 * A failed write (full disk, I/O error) stops the writer: commits then
 * pay the growth again, as before. */
/* The writer starts once LMDB's pages reach ZERO_FROM: a store that
 * grew that far is taking commands in, and a smaller one (most tests, a
 * quiet daemon) keeps the file exactly as LMDB writes it.  It keeps up to
 * ZERO_AHEAD written, refilled when less than half of it is left. */
#define ZERO_FROM ((uint64_t)16 << 20)
#define ZERO_AHEAD ((uint64_t)8 << 20)
#define ZERO_PIECE ((uint64_t)64 << 10)
#define ZERO_SYNC ((uint64_t)1 << 20)
static void *zero_main(void *arg) {
  fq_store_t *s = arg;
  static const uint8_t zeros[ZERO_PIECE];
  uint64_t unsynced = 0;
  pthread_mutex_lock(&s->zmu);
  while (!s->zstop && !s->zfailed) {
    uint64_t from = s->written_end > s->zused ? s->written_end : s->zused;
    uint64_t to = s->zused + ZERO_AHEAD;
    if (to > s->zcap) to = s->zcap;
    int e = 0;
    if (from < to) {
      /* One piece under the lock (no commit runs meanwhile): small, so
       * that a commit never waits long for it. */
      size_t n = to - from < ZERO_PIECE ? (size_t)(to - from) : (size_t)ZERO_PIECE;
      ssize_t w = pwrite(s->zfd, zeros, n, (off_t)from);
      if (w > 0) {
        s->written_end = from + (uint64_t)w;
        unsynced += (uint64_t)w;
      } else {
        e = w < 0 ? errno : EIO;
      }
    }
    /* The sync without the lock, once per ZERO_SYNC written and when done:
     * the file's new size and blocks reach the journal here, not in a
     * commit. */
    if (!e && unsynced && (unsynced >= ZERO_SYNC || from >= to)) {
      pthread_mutex_unlock(&s->zmu);
      if (fdatasync(s->zfd) != 0) e = errno;
      unsynced = 0;
      pthread_mutex_lock(&s->zmu);
    } else if (!e && from >= to) {
      /* Woken when less than half the span is left (zero_ahead): filled
       * up to the span, then asleep again. */
      pthread_cond_wait(&s->zcv, &s->zmu);
    }
    if (e) {
      s->zfailed = true;
      fq_warn("store", "shard %u: cannot write the data file ahead of its last page (%s): "
              "commits pay the file's growth from now on", s->shard, fq_strerror(-e));
    }
  }
  pthread_mutex_unlock(&s->zmu);
  return NULL;
}

/* Right after a successful write commit, zmu held (so that the writer
 * cannot run between the commit and this): where LMDB's pages end now,
 * and how far the writer may go.  If these cannot be read, the writer may
 * not write at all (zcap 0) until they can. */
static void zero_note(fq_store_t *s) {
  MDB_envinfo ei;
  MDB_stat ms;
  if (mdb_env_info(s->env, &ei) != 0 || mdb_env_stat(s->env, &ms) != 0) {
    s->zcap = 0;
    return;
  }
  s->zused = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
  uint64_t cap = s->no_fallocate ? (uint64_t)ei.me_mapsize : s->disk_end;
  s->zcap = cap > (uint64_t)ei.me_mapsize ? (uint64_t)ei.me_mapsize : cap;
}

/* After a write commit, in the shard's thread: wake the writer when less
 * than half its span is left, starting it the first time. */
static void zero_ahead(fq_store_t *s) {
  pthread_mutex_lock(&s->zmu);
  bool want = !s->zfailed && s->zused >= ZERO_FROM &&
              s->written_end < s->zused + ZERO_AHEAD / 2 && s->written_end < s->zcap;
  pthread_mutex_unlock(&s->zmu);
  if (!want) return;
  if (!s->zstarted) {
    int fd;
    if (mdb_env_get_fd(s->env, &fd) != 0) return;
    s->zfd = fd;
    if (pthread_create(&s->zthread, NULL, zero_main, s) != 0) {
      pthread_mutex_lock(&s->zmu);
      s->zfailed = true; /* commits pay the growth, as without the writer */
      pthread_mutex_unlock(&s->zmu);
      return;
    }
    char name[16];
    snprintf(name, sizeof name, "fq-zero-%u", s->shard);
    pthread_setname_np(s->zthread, name);
    s->zstarted = true;
  }
  pthread_cond_signal(&s->zcv);
}

static void zero_stop(fq_store_t *s) {
  if (!s->zstarted) return;
  pthread_mutex_lock(&s->zmu);
  s->zstop = true;
  pthread_cond_signal(&s->zcv);
  pthread_mutex_unlock(&s->zmu);
  pthread_join(s->zthread, NULL);
  s->zstarted = false;
}

/* The transaction's counters are dropped with it: next_seq, next_cmd and
 * next_q keep their committed values, and each tenant's txn_last is left
 * stale (its generation is over), so no seq or tseq is lost. */
void fq_store_abort(fq_store_t *s) {
  if (s->txn) {
    mdb_txn_abort(s->txn);
    if (s->txn_write) {
      pthread_mutex_unlock(&s->zmu);
      s->prepared = false;
      if (s->ws) fq_ws_reset(s->ws); /* nothing of it happened */
    }
  }
  s->txn = NULL;
  s->ndirty = 0;
}

uint64_t fq_store_next_seq(const fq_store_t *s) { return s->txn ? s->txn_next_seq : s->next_seq; }

uint64_t fq_store_next_tseq(const fq_store_t *s, const char *tenant, size_t tlen) {
  const tctr_t *c = tctr_find(s, tenant, tlen);
  if (!c) return 1;
  bool in_txn = s->txn && s->txn_write && c->gen == s->txn_gen;
  return (in_txn ? c->txn_last : c->last) + 1;
}

unsigned fq_store_shard(const fq_store_t *s) { return s->shard; }

void fq_store_id_format(unsigned shard, uint64_t num, char id[FQ_ID_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  id[0] = hex[(shard >> 4) & 15];
  id[1] = hex[shard & 15];
  for (int i = FQ_ID_LEN - 1; i >= 2; i--) {
    id[i] = hex[num & 15];
    num >>= 4;
  }
  id[FQ_ID_LEN] = 0;
}

uint64_t fq_store_id_num(const char *id) {
  uint64_t v = 0;
  for (int i = 2; i < FQ_ID_LEN && id[i]; i++) {
    char c = id[i];
    v = v << 4 | (uint64_t)((c >= 'a') ? c - 'a' + 10 : c - '0');
  }
  return v;
}

void fq_store_new_id(fq_store_t *s, char id[FQ_ID_LEN + 1], uint64_t *qseq) {
  fq_store_id_format(s->shard, s->txn_next_cmd++, id);
  *qseq = s->txn_next_q++;
}

int fq_store_id_shard(const char *id, size_t len) {
  if (len != FQ_ID_LEN) return -1;
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    char c = id[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    if (i < 2) v = v * 16 + d;
  }
  return v;
}

/* --- dedupe index ---------------------------------------------------- */

static int idem_expired(fq_store_t *s, const char *id, int64_t now, bool *expired, fq_err_t *err);

int fq_store_idem_get(fq_store_t *s, const char *tenant, size_t tlen, const char *key,
                      size_t klen, uint8_t hash[32], char id[FQ_ID_LEN + 1], fq_err_t *err) {
  uint64_t h = fq_hash64_pair(tenant, tlen, key, klen), num;
  size_t cursor = 0;
  while (fq_idem_next(s->idem, h, &cursor, &num)) {
    char cand[FQ_ID_LEN + 1];
    fq_store_id_format(s->shard, num, cand);
    MDB_val k = {FQ_ID_LEN, cand}, d;
    int rc = mdb_get(s->txn, s->idemlog, &k, &d);
    if (rc == MDB_NOTFOUND) continue; /* left over from an aborted batch */
    if (rc) return lmdb_err(err, rc, "idemlog get");
    const uint8_t *v = d.mv_data;
    if (d.mv_size != 32 + tlen + 1 + klen || memcmp(v + 32, tenant, tlen) != 0 ||
        v[32 + tlen] != 0 || memcmp(v + 33 + tlen, key, klen) != 0)
      continue; /* a hash collision: another (tenant, key) */
    if (s->idem_window_ms > 0) {
      /* Past its dedupe window the key names nothing, even while the
       * pruning of its entry is still to come. */
      bool expired;
      if ((rc = idem_expired(s, cand, fq_now_ms(), &expired, err)) != 0) return rc;
      if (expired) continue;
    }
    memcpy(hash, v, 32);
    memcpy(id, cand, FQ_ID_LEN + 1);
    return 0;
  }
  return FQ_ENOTFOUND;
}

int fq_store_idem_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err) {
  uint8_t vb[32 + 64 + 1 + 128];
  size_t tl = strlen(rec->tenant), kl = strlen(rec->key);
  memcpy(vb, rec->hash, 32);
  memcpy(vb + 32, rec->tenant, tl);
  vb[32 + tl] = 0;
  memcpy(vb + 33 + tl, rec->key, kl);
  MDB_val k = {FQ_ID_LEN, (void *)rec->id}, d = {33 + tl + kl, vb};
  int rc = st_put(s, s->idemlog, &k, &d, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = st_put(s, s->idemlog, &k, &d, 0);
  if (rc) return lmdb_err(err, rc, "idemlog put");
  if (fq_idem_put(s->idem, fq_hash64_pair(rec->tenant, tl, rec->key, kl), fq_store_id_num(rec->id)))
    return fq_errf(err, -ENOMEM, "out of memory for the dedupe table");
  return 0;
}

int fq_store_idem_foreach(fq_store_t *s, int (*fn)(void *ud, uint64_t h, uint64_t num),
                          void *ud) {
  return fq_idem_foreach(s->idem, fn, ud);
}

/* --- command records --------------------------------------------------- */

#define REC_MAGIC 0xC1 /* first byte of the compact form (see the codec below) */
static int cmdrec_decode(const uint8_t *p, size_t n, fq_cmdrec_t *rec, fq_err_t *err);

int fq_store_cmd_raw(fq_store_t *s, const char *id, size_t len, const uint8_t **p, size_t *n,
                     fq_err_t *err) {
  MDB_val k = {len, (void *)id}, d;
  int rc = mdb_get(s->txn, s->cmd, &k, &d);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  if (rc) return lmdb_err(err, rc, "cmd get");
  *p = d.mv_data;
  *n = d.mv_size;
  return 0;
}

int fq_store_cmd_wire(fq_store_t *s, const char *id, size_t len, fq_buf_t *out, fq_err_t *err) {
  const uint8_t *p = NULL;
  size_t n = 0;
  int rc = fq_store_cmd_raw(s, id, len, &p, &n, err);
  if (rc) return rc;
  if (!n || p[0] != REC_MAGIC) /* the older form is the map itself */
    return fq_buf_append(out, p, n) ? fq_errf(err, FQ_ETOOLARGE, "record too large") : 0;
  fq_cmdrec_t rec;
  memset(&rec, 0, sizeof rec);
  if ((rc = cmdrec_decode(p, n, &rec, err)) != 0) return rc;
  rc = fq_cmdrec_pack(&rec, out);
  fq_cmdrec_free(&rec);
  return rc ? fq_errf(err, rc, "cannot encode command record") : 0;
}

int fq_store_cmd_get(fq_store_t *s, const char *id, size_t len, fq_cmdrec_t *rec,
                     fq_err_t *err) {
  const uint8_t *p = NULL;
  size_t n = 0;
  int rc = fq_store_cmd_raw(s, id, len, &p, &n, err);
  if (rc) return rc;
  return fq_cmdrec_unpack(p, n, rec, err);
}

int fq_store_cmd_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err) {
  fq_buf_t *b = &s->scratch;
  fq_buf_reset(b);
  int rc = fq_cmdrec_encode(rec, b);
  if (rc) return fq_errf(err, rc, "cannot encode command record");
  MDB_val k = {FQ_ID_LEN, (void *)rec->id}, d = {b->len, b->data};
  /* New commands carry the highest id so far: append without a search. */
  rc = st_put(s, s->cmd, &k, &d, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = st_put(s, s->cmd, &k, &d, 0);
  return rc ? lmdb_err(err, rc, "cmd put") : 0;
}

/* --- non-terminal commands --------------------------------------------------- */

/* The value of an `active` row: u64be(deadline), 0x01, u64be(queue
 * position), device; or, when the position is the id's number,
 * u64be(deadline) || device (a device key starts with "v:" or "s:", never
 * 0x01), which is also what rows written before the position existed hold:
 * until then every command entered its queue when it was created, with
 * next_q and next_cmd moving together.  The position is what orders a device's queue when it is
 * rebuilt: a scheduled command enters its queue when its time comes, behind
 * commands created after it (fq_store_new_qseq). */
#define ACTIVE_QPOS 0x01

int fq_store_active_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err) {
  uint8_t vb[17 + FQ_DEVICE_MAX];
  size_t dl = strlen(rec->device), off = 8;
  fq_put_be64(vb, (uint64_t)rec->deadline);
  /* The position only when it differs from the id's number (the short
   * form's reading): every row stays as small as before until a scheduled
   * command has been released. */
  if (rec->qseq != fq_store_id_num(rec->id)) {
    vb[8] = ACTIVE_QPOS;
    fq_put_be64(vb + 9, rec->qseq);
    off = 17;
  }
  memcpy(vb + off, rec->device, dl);
  MDB_val k = {FQ_ID_LEN, (void *)rec->id}, d = {off + dl, vb};
  int rc = st_put(s, s->active, &k, &d, MDB_APPEND);
  if (rc == MDB_KEYEXIST) rc = st_put(s, s->active, &k, &d, 0);
  return rc ? lmdb_err(err, rc, "active put") : 0;
}

int fq_store_active_del(fq_store_t *s, const char *id, fq_err_t *err) {
  MDB_val k = {FQ_ID_LEN, (void *)id};
  int rc = st_del(s, s->active, &k);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "active del");
  return 0;
}

static int active_scan(fq_store_t *s, fq_store_active_fn fn, fq_store_active_q_fn fnq, void *ud,
                       fq_err_t *err) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->active, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  MDB_val k, d;
  int out = 0;
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    const uint8_t *v = d.mv_data;
    size_t off = 8;
    if (k.mv_size != FQ_ID_LEN || d.mv_size <= 8) continue;
    char id[FQ_ID_LEN + 1], dev[FQ_DEVICE_MAX];
    memcpy(id, k.mv_data, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    uint64_t qpos = fq_store_id_num(id);
    if (v[8] == ACTIVE_QPOS) {
      if (d.mv_size <= 17) continue;
      qpos = fq_get_be64(v + 9);
      off = 17;
    }
    if (d.mv_size - off >= FQ_DEVICE_MAX) continue;
    memcpy(dev, v + off, d.mv_size - off);
    dev[d.mv_size - off] = 0;
    int64_t deadline = (int64_t)fq_get_be64(v);
    out = fnq ? fnq(ud, id, dev, deadline, qpos) : fn(ud, id, dev, deadline);
    if (out) break;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "active scan");
  return out;
}

int fq_store_active_scan(fq_store_t *s, fq_store_active_fn fn, void *ud, fq_err_t *err) {
  return active_scan(s, fn, NULL, ud, err);
}

int fq_store_active_scan_q(fq_store_t *s, fq_store_active_q_fn fn, void *ud, fq_err_t *err) {
  return active_scan(s, NULL, fn, ud, err);
}

uint64_t fq_store_new_qseq(fq_store_t *s) { return s->txn_next_q++; }

/* --- scheduled commands ------------------------------------------------------
 * `sched`: u64be(not_before) || id -> device.  Keys sort by time, then by
 * id, so the rows due are a prefix of the database. */

static void sched_key(uint8_t kb[8 + FQ_ID_LEN], int64_t nb, const char *id) {
  fq_put_be64(kb, (uint64_t)nb);
  memcpy(kb + 8, id, FQ_ID_LEN);
}

int fq_store_sched_put(fq_store_t *s, const fq_cmdrec_t *rec, fq_err_t *err) {
  uint8_t kb[8 + FQ_ID_LEN];
  sched_key(kb, rec->not_before, rec->id);
  MDB_val k = {sizeof kb, kb}, d = {strlen(rec->device), (void *)rec->device};
  int rc = st_put(s, s->sched, &k, &d, 0);
  return rc ? lmdb_err(err, rc, "sched put") : 0;
}

int fq_store_sched_del(fq_store_t *s, int64_t not_before, const char *id, fq_err_t *err) {
  uint8_t kb[8 + FQ_ID_LEN];
  sched_key(kb, not_before, id);
  MDB_val k = {sizeof kb, kb};
  int rc = st_del(s, s->sched, &k);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "sched del");
  return 0;
}

int fq_store_sched_due(fq_store_t *s, int64_t upto, size_t max, fq_store_sched_fn fn, void *ud,
                       fq_err_t *err) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->sched, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  MDB_val k, d;
  int out = 0;
  size_t n = 0;
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0 && n < max;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    if (k.mv_size != 8 + FQ_ID_LEN) continue;
    int64_t nb = (int64_t)fq_get_be64(k.mv_data);
    if (nb > upto) break;
    char id[FQ_ID_LEN + 1];
    memcpy(id, (const uint8_t *)k.mv_data + 8, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    n++;
    if ((out = fn(ud, nb, id)) != 0) break;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "sched scan");
  return out;
}

int fq_store_sched_next(fq_store_t *s, int64_t *not_before, size_t *count, fq_err_t *err) {
  MDB_stat ms;
  int rc = mdb_stat(s->txn, s->sched, &ms);
  if (rc) return lmdb_err(err, rc, "sched stat");
  *count = ms.ms_entries;
  *not_before = INT64_MAX;
  MDB_cursor *cur;
  if ((rc = mdb_cursor_open(s->txn, s->sched, &cur)) != 0) return lmdb_err(err, rc, "cursor");
  MDB_val k, d;
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT))
    if (k.mv_size == 8 + FQ_ID_LEN) {
      *not_before = (int64_t)fq_get_be64(k.mv_data);
      break;
    }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "sched first");
  return 0;
}

/* --- campaigns ------------------------------------------------------------ */

static size_t camp_key(uint8_t *kb, const char *campaign, const char *id) {
  size_t cl = strnlen(campaign, 64);
  memcpy(kb, campaign, cl);
  kb[cl] = 0;
  size_t il = id ? FQ_ID_LEN : 0;
  if (id) memcpy(kb + cl + 1, id, FQ_ID_LEN);
  return cl + 1 + il;
}

int fq_store_camp_put(fq_store_t *s, const char *campaign, const char *id, fq_err_t *err) {
  uint8_t kb[64 + 1 + FQ_ID_LEN];
  MDB_val k = {camp_key(kb, campaign, id), kb}, d = {0, ""};
  int rc = st_put(s, s->camp, &k, &d, 0);
  return rc ? lmdb_err(err, rc, "camp put") : 0;
}

int fq_store_camp_scan(fq_store_t *s, const char *campaign, fq_store_camp_fn fn, void *ud,
                       fq_err_t *err) {
  uint8_t kb[64 + 1 + FQ_ID_LEN];
  size_t pl = camp_key(kb, campaign, NULL);
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->camp, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  MDB_val k = {pl, kb}, d;
  int out = 0;
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE); rc == 0;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    if (k.mv_size != pl + FQ_ID_LEN || memcmp(k.mv_data, kb, pl) != 0) break;
    char id[FQ_ID_LEN + 1];
    memcpy(id, (const uint8_t *)k.mv_data + pl, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    if ((out = fn(ud, id)) != 0) break;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "camp scan");
  return out;
}

/* --- events --------------------------------------------------------------- */

/* The first time the open write transaction moves c: remember it for
 * commit (which writes its row) and start its transaction value from the
 * committed one.  0 or -ENOMEM. */
static int tctr_touch(fq_store_t *s, tctr_t *c) {
  if (c->gen == s->txn_gen) return 0;
  if (s->ndirty == s->adirty) {
    size_t n = s->adirty ? s->adirty * 2 : 64;
    tctr_t **p = realloc(s->tdirty, n * sizeof *p);
    if (!p) return -ENOMEM;
    s->tdirty = p;
    s->adirty = n;
  }
  s->tdirty[s->ndirty++] = c;
  c->gen = s->txn_gen;
  c->txn_last = c->last;
  return 0;
}

int fq_store_event_append(fq_store_t *s, const char *tenant, size_t tlen, const uint8_t *ev,
                          size_t len, fq_err_t *err) {
  uint8_t kb[8];
  fq_put_be64(kb, s->txn_next_seq);
  MDB_val k = {8, kb}, d = {len, (void *)ev};
  int rc = st_put(s, s->events, &k, &d, MDB_APPEND);
  if (rc) return lmdb_err(err, rc, "event append");
  if (tenant) {
    if (tlen == 0 || tlen > FQ_TENANT_MAX)
      return fq_errf(err, FQ_EINTERNAL, "event append: tenant of %zu bytes", tlen);
    tctr_t *c = tctr_get(s, tenant, tlen);
    if (!c || tctr_touch(s, c) != 0)
      return fq_errf(err, -ENOMEM, "out of memory for the tenant counters");
    uint8_t ik[FQ_TENANT_MAX + 9];
    MDB_val ikv = {tindex_key(ik, tenant, tlen, c->txn_last + 1), ik}, sv = {8, kb};
    /* Within one tenant the keys grow; across tenants they do not, so no
     * MDB_APPEND here. */
    if ((rc = st_put(s, s->tindex, &ikv, &sv, 0)) != 0)
      return lmdb_err(err, rc, "tseq index put");
    c->txn_last++;
  }
  s->txn_next_seq++;
  return 0;
}

int fq_store_tenant_event_scan(fq_store_t *s, const char *tenant, size_t tlen, uint64_t after,
                               size_t limit, fq_store_event_fn fn, void *ud, fq_err_t *err) {
  if (tlen == 0 || tlen > FQ_TENANT_MAX || after == UINT64_MAX) return 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->tindex, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  uint8_t kb[FQ_TENANT_MAX + 9];
  MDB_val k = {tindex_key(kb, tenant, tlen, after + 1), kb}, d, ek, ed;
  MDB_cursor_op op = MDB_SET_RANGE;
  size_t n = 0;
  int out = 0;
  while (n < limit && (rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
    op = MDB_NEXT;
    const uint8_t *kp = k.mv_data;
    if (k.mv_size != tlen + 9 || memcmp(kp, tenant, tlen) != 0 || kp[tlen] != 0) {
      rc = MDB_NOTFOUND; /* past this tenant's range */
      break;
    }
    if (d.mv_size != 8) continue;
    ek = (MDB_val){8, d.mv_data};
    if ((rc = mdb_get(s->txn, s->events, &ek, &ed)) != 0) {
      if (rc == MDB_NOTFOUND) {
        mdb_cursor_close(cur);
        return fq_errf(err, FQ_ESTORAGE, "tseq index names seq %" PRIu64 ", not in the log",
                       fq_get_be64(d.mv_data));
      }
      break;
    }
    out = fn(ud, fq_get_be64(kp + tlen + 1), ed.mv_data, ed.mv_size);
    if (out) break;
    n++;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "tenant event scan");
  return out;
}

int fq_store_event_scan(fq_store_t *s, uint64_t after, size_t limit, fq_store_event_fn fn,
                        void *ud, fq_err_t *err) {
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->events, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  uint8_t kb[8];
  fq_put_be64(kb, after + 1);
  MDB_val k = {8, kb}, d;
  MDB_cursor_op op = MDB_SET_RANGE;
  size_t n = 0;
  int out = 0;
  while (n < limit && (rc = mdb_cursor_get(cur, &k, &d, op)) == 0) {
    op = MDB_NEXT;
    if (k.mv_size != 8) continue;
    out = fn(ud, fq_get_be64(k.mv_data), d.mv_data, d.mv_size);
    if (out) break;
    n++;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "event scan");
  return out;
}

/* --- sessions ---------------------------------------------------------- */

static size_t session_key(uint8_t *out, const char *vin, int domain) {
  size_t n = strlen(vin);
  if (n > 17) n = 17;
  memcpy(out, vin, n);
  out[n] = 0;
  out[n + 1] = (uint8_t)domain;
  return n + 2;
}

int fq_store_session_get(fq_store_t *s, const char *vin, int domain, fq_buf_t *out,
                         fq_err_t *err) {
  uint8_t kb[20];
  MDB_val k = {session_key(kb, vin, domain), kb}, d;
  int rc = mdb_get(s->txn, s->session, &k, &d);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  if (rc) return lmdb_err(err, rc, "session get");
  return fq_buf_append(out, d.mv_data, d.mv_size);
}

int fq_store_session_put(fq_store_t *s, const char *vin, int domain, const uint8_t *p, size_t n,
                         fq_err_t *err) {
  uint8_t kb[20];
  MDB_val k = {session_key(kb, vin, domain), kb}, d = {n, (void *)p};
  int rc = st_put(s, s->session, &k, &d, 0);
  return rc ? lmdb_err(err, rc, "session put") : 0;
}

int fq_store_stats(fq_store_t *s, fq_store_stats_t *st, fq_err_t *err) {
  MDB_stat ms;
  MDB_envinfo ei;
  memset(st, 0, sizeof *st);
  int rc;
  if ((rc = mdb_stat(s->txn, s->cmd, &ms)) != 0) return lmdb_err(err, rc, "stat");
  st->commands = ms.ms_entries;
  if ((rc = mdb_stat(s->txn, s->active, &ms)) != 0) return lmdb_err(err, rc, "stat");
  st->queued = ms.ms_entries;
  if ((rc = mdb_stat(s->txn, s->events, &ms)) != 0) return lmdb_err(err, rc, "stat");
  st->events = ms.ms_entries;
  st->next_seq = fq_store_next_seq(s);
  mdb_env_info(s->env, &ei);
  mdb_env_stat(s->env, &ms);
  st->map_size = ei.me_mapsize;
  st->map_used = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
  return 0;
}

/* --- room ------------------------------------------------------------------------ */

int fq_store_usage(fq_store_t *s, fq_store_usage_t *u, fq_err_t *err) {
  if (!s->txn) return fq_errf(err, FQ_EINTERNAL, "store: usage outside a transaction");
  /* LMDB's own free list (dbi 0) and main database (dbi 1), then ours:
   * every page in use is in one of their trees, except the two meta
   * pages.  The free list's entries are room, its own pages are not. */
  MDB_dbi dbis[11] = {0, 1, s->meta, s->cmd, s->idemlog, s->active, s->events, s->session,
                      s->tcount, s->tindex, s->sched};
  MDB_stat ms;
  uint64_t pages = 2;
  for (size_t i = 0; i < sizeof dbis / sizeof dbis[0]; i++) {
    int rc = mdb_stat(s->txn, dbis[i], &ms);
    if (rc) return lmdb_err(err, rc, "stat");
    pages += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
  }
  MDB_envinfo ei;
  mdb_env_info(s->env, &ei);
  u->page = ms.ms_psize;
  u->used = pages * ms.ms_psize;
  u->map_size = ei.me_mapsize;
  return 0;
}

int fq_store_reader_check(fq_store_t *s) {
  int dead = 0;
  mdb_reader_check(s->env, &dead);
  return dead;
}

uint64_t fq_store_map_size(const fq_store_t *s) {
  MDB_envinfo ei;
  mdb_env_info(s->env, &ei);
  return ei.me_mapsize;
}

int fq_store_set_map_size(fq_store_t *s, uint64_t bytes, fq_err_t *err) {
  if (s->txn) return fq_errf(err, FQ_EINTERNAL, "store: map size change inside a transaction");
  int rc = mdb_env_set_mapsize(s->env, (size_t)bytes);
  if (rc) return lmdb_err(err, rc, "map size");
  return 0;
}

int fq_store_reserve_disk(fq_store_t *s, uint64_t end, fq_err_t *err) {
  uint64_t map = fq_store_map_size(s);
  if (end > map) end = map;
  if (s->no_fallocate || end <= s->disk_end) return 0;
  int fd;
  if (mdb_env_get_fd(s->env, &fd) != 0) return fq_errf(err, FQ_ESTORAGE, "no data file");
  /* KEEP_SIZE: the blocks are the file's, its size stays what LMDB wrote
   * (LMDB's own writes move it on, into blocks already there). */
  if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)s->disk_end, (off_t)(end - s->disk_end)) != 0) {
    int e = errno;
    if (e == EOPNOTSUPP || e == ENOSYS) {
      s->no_fallocate = true;
      fq_warn("store", "shard %u: the filesystem of %s cannot reserve blocks ahead (%s): a full "
              "disk is met at commit time only", s->shard, s->dir, fq_strerror(-e));
      return 0;
    }
    if (e == ENOSPC || e == EDQUOT) {
      struct statvfs vfs;
      double avail = statvfs(s->dir, &vfs) == 0 ? (double)vfs.f_bavail * vfs.f_frsize : 0;
      return fq_errf(err, FQ_ESTORFULL, "disk full: the filesystem of shard %u's store has "
                     "%.1f MiB free, not the %.1f MiB more its reserve needs (%s)", s->shard,
                     avail / 1048576.0, (double)(end - s->disk_end) / 1048576.0,
                     fq_strerror(-e));
    }
    return fq_errf(err, FQ_ESTORAGE, "fallocate %s: %s", s->dir, fq_strerror(-e));
  }
  s->disk_end = end;
  return 0;
}

uint64_t fq_store_disk_end(const fq_store_t *s) { return s->no_fallocate ? UINT64_MAX : s->disk_end; }

int fq_store_disk(const fq_store_t *s, uint64_t *avail, uint64_t *file_size, fq_err_t *err) {
  char path[sizeof s->dir + 16];
  struct statvfs vfs;
  struct stat st;
  snprintf(path, sizeof path, "%s/data.mdb", s->dir);
  if (statvfs(s->dir, &vfs) != 0)
    return fq_errf(err, FQ_ESTORAGE, "statvfs %s: %s", s->dir, fq_strerror(-errno));
  if (stat(path, &st) != 0)
    return fq_errf(err, FQ_ESTORAGE, "stat %s: %s", path, fq_strerror(-errno));
  *avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  *file_size = (uint64_t)st.st_size > s->disk_end ? (uint64_t)st.st_size : s->disk_end;
  return 0;
}

/* --- retention ---------------------------------------------------------------
 *
 * The primitives retention.c prunes with.  Every write here happens in the
 * nested transaction retention opens inside a batch's, and only deletes:
 * no id, seq or tseq is given out in it, so the counters of the outer
 * transaction stay as they are.  The in-memory dedupe table is never
 * changed here but by fq_store_idem_forget(), which the caller runs once
 * the outer transaction is durable: an entry still in memory whose log row
 * is gone is only a miss (fq_store_idem_get checks the log), while a row
 * whose entry left memory too early could let a key create a second
 * command. */

/* Offset of `created` in the compact record (see the codec below): magic,
 * version, state, ntrans, flags, then four 4-byte integers. */
#define REC_CREATED_OFF 21

int fq_store_cmd_created(fq_store_t *s, const char *id, int64_t *created, fq_err_t *err) {
  const uint8_t *p = NULL;
  size_t n = 0;
  int rc = fq_store_cmd_raw(s, id, FQ_ID_LEN, &p, &n, err);
  if (rc) return rc;
  if (n >= REC_CREATED_OFF + 8 && p[0] == REC_MAGIC) {
    *created = (int64_t)fq_get_le64(p + REC_CREATED_OFF);
    return 0;
  }
  fq_cmdrec_t rec;
  if ((rc = fq_cmdrec_unpack(p, n, &rec, err)) != 0) return rc;
  *created = rec.created;
  fq_cmdrec_free(&rec);
  return 0;
}

/* Whether the key recorded for command id has outlived the dedupe window.
 * A command whose record is gone dedupes nothing. */
static int idem_expired(fq_store_t *s, const char *id, int64_t now, bool *expired, fq_err_t *err) {
  int64_t created = 0;
  int rc = fq_store_cmd_created(s, id, &created, err);
  if (rc == FQ_ENOTFOUND) {
    *expired = true;
    return 0;
  }
  if (rc) return rc;
  *expired = s->idem_window_ms > 0 && now - created >= s->idem_window_ms;
  return 0;
}

/* The (tenant, key) hash of an `idemlog` row, or false when the row is not
 * one we write. */
static bool idem_row_hash(const MDB_val *d, uint64_t *h) {
  if (d->mv_size < 32 + 2) return false;
  const char *tk = (const char *)d->mv_data + 32;
  size_t tkl = d->mv_size - 32;
  const char *sep = memchr(tk, 0, tkl);
  if (!sep) return false;
  *h = fq_hash64_pair(tk, (size_t)(sep - tk), sep + 1, tkl - (size_t)(sep - tk) - 1);
  return true;
}

int fq_store_set_dedupe_window(fq_store_t *s, int64_t window_ms, int64_t now, size_t *dropped,
                               fq_err_t *err) {
  bool own = false;
  int rc = 0;
  MDB_cursor *cur = NULL;
  MDB_val k, d;
  *dropped = 0;
  s->idem_window_ms = window_ms > 0 ? window_ms : 0;
  /* Keys a shorter window dropped from memory (in this run, or in the one
   * whose snapshot the table came from) would dedupe again under this one:
   * the table is rebuilt from the log. */
  bool rescan = s->idem_dropped_window &&
                (!s->idem_window_ms || s->idem_window_ms > s->idem_dropped_window);
  if (!s->idem_window_ms && !rescan) return 0;
  if (!s->txn) {
    if ((rc = fq_store_begin(s, false, err)) != 0) return rc;
    own = true;
  }
  if (rescan) {
    fq_info("store", "shard %u: the dedupe window grew: rebuilding the dedupe table", s->shard);
    if ((rc = idem_scan(s, s->txn, err)) != 0 || !s->idem_window_ms) goto out;
  }
  /* Ids grow with the time of acceptance, so the expired keys are a
   * prefix of `idemlog`: drop them from memory up to the first live one
   * (their rows go with the pruning). */
  if ((rc = mdb_cursor_open(s->txn, s->idemlog, &cur)) != 0) {
    rc = lmdb_err(err, rc, "cursor");
    goto out;
  }
  for (int mrc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
    if (k.mv_size != FQ_ID_LEN) continue;
    char id[FQ_ID_LEN + 1];
    memcpy(id, k.mv_data, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    bool expired;
    if ((rc = idem_expired(s, id, now, &expired, err)) != 0) goto out;
    if (!expired) break;
    uint64_t h;
    if (idem_row_hash(&d, &h)) fq_idem_del(s->idem, h, fq_store_id_num(id));
    (*dropped)++;
  }
  if (*dropped && (!s->idem_dropped_window || s->idem_window_ms < s->idem_dropped_window))
    s->idem_dropped_window = s->idem_window_ms;
out:
  if (cur) mdb_cursor_close(cur);
  if (own) fq_store_abort(s);
  return rc;
}

int64_t fq_store_dedupe_window(const fq_store_t *s) { return s->idem_window_ms; }

int fq_store_idem_first(fq_store_t *s, char id[FQ_ID_LEN + 1], fq_err_t *err) {
  MDB_cursor *cur;
  MDB_val k, d;
  int rc = mdb_cursor_open(s->txn, s->idemlog, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0 && k.mv_size != FQ_ID_LEN;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
  }
  if (rc == 0) {
    memcpy(id, k.mv_data, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  return rc ? lmdb_err(err, rc, "idemlog first") : 0;
}

int fq_store_idem_del(fq_store_t *s, const char *id, uint64_t *h, fq_err_t *err) {
  MDB_val k = {FQ_ID_LEN, (void *)id}, d;
  int rc = mdb_get(s->txn, s->idemlog, &k, &d);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  if (rc) return lmdb_err(err, rc, "idemlog get");
  if (!idem_row_hash(&d, h)) *h = 0;
  rc = st_del(s, s->idemlog, &k);
  return rc ? lmdb_err(err, rc, "idemlog del") : 0;
}

void fq_store_idem_forget(fq_store_t *s, uint64_t h, uint64_t num) { fq_idem_del(s->idem, h, num); }

bool fq_store_idem_has(const fq_store_t *s, uint64_t h) {
  size_t cursor = 0;
  uint64_t num;
  return fq_idem_next(s->idem, h, &cursor, &num) != 0;
}

size_t fq_store_idem_count(const fq_store_t *s) { return fq_idem_count(s->idem); }

int fq_store_cmd_del(fq_store_t *s, const char *id, fq_err_t *err) {
  MDB_val k = {FQ_ID_LEN, (void *)id};
  int rc = st_del(s, s->cmd, &k);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  return rc ? lmdb_err(err, rc, "cmd del") : 0;
}

int fq_store_event_first(fq_store_t *s, uint64_t *seq, const uint8_t **ev, size_t *len,
                         fq_err_t *err) {
  MDB_cursor *cur;
  MDB_val k, d;
  int rc = mdb_cursor_open(s->txn, s->events, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0 && k.mv_size != 8;
       rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
  }
  if (rc == 0) {
    *seq = fq_get_be64(k.mv_data);
    *ev = d.mv_data;
    *len = d.mv_size;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  return rc ? lmdb_err(err, rc, "event first") : 0;
}

int fq_store_event_del(fq_store_t *s, uint64_t seq, const char *tenant, size_t tlen,
                       uint64_t tseq, fq_err_t *err) {
  uint8_t kb[8];
  fq_put_be64(kb, seq);
  MDB_val k = {8, kb};
  int rc = st_del(s, s->events, &k);
  if (rc == MDB_NOTFOUND) return FQ_ENOTFOUND;
  if (rc) return lmdb_err(err, rc, "event del");
  if (tenant && tlen > 0 && tlen <= FQ_TENANT_MAX && tseq) {
    uint8_t ik[FQ_TENANT_MAX + 9];
    MDB_val ikv = {tindex_key(ik, tenant, tlen, tseq), ik}, iv;
    /* Only the row that names this event: a damaged event must not take
     * another event's index row with it. */
    rc = mdb_get(s->txn, s->tindex, &ikv, &iv);
    if (rc == 0 && iv.mv_size == 8 && fq_get_be64(iv.mv_data) == seq)
      rc = st_del(s, s->tindex, &ikv);
    if (rc && rc != MDB_NOTFOUND) return lmdb_err(err, rc, "tseq index del");
  }
  return 0;
}

int fq_store_first_seq(fq_store_t *s, uint64_t *first, fq_err_t *err) {
  const uint8_t *ev;
  size_t len;
  int rc = fq_store_event_first(s, first, &ev, &len, err);
  if (rc == FQ_ENOTFOUND) *first = fq_store_next_seq(s);
  return rc == FQ_ENOTFOUND ? 0 : rc;
}

int fq_store_tenant_first_tseq(fq_store_t *s, const char *tenant, size_t tlen, uint64_t *first,
                               fq_err_t *err) {
  *first = fq_store_next_tseq(s, tenant, tlen);
  if (tlen == 0 || tlen > FQ_TENANT_MAX) return 0;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(s->txn, s->tindex, &cur);
  if (rc) return lmdb_err(err, rc, "cursor");
  uint8_t kb[FQ_TENANT_MAX + 9];
  MDB_val k = {tindex_key(kb, tenant, tlen, 0), kb}, d;
  rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
  const uint8_t *kp = k.mv_data;
  if (rc == 0 && k.mv_size == tlen + 9 && memcmp(kp, tenant, tlen) == 0 && kp[tlen] == 0)
    *first = fq_get_be64(kp + tlen + 1);
  mdb_cursor_close(cur);
  return rc && rc != MDB_NOTFOUND ? lmdb_err(err, rc, "tindex first") : 0;
}

int fq_store_nest_begin(fq_store_t *s, fq_err_t *err) {
  if (!s->txn || !s->txn_write || s->parent)
    return fq_errf(err, FQ_EINTERNAL, "store: no write transaction to nest in");
  MDB_txn *child;
  int rc = mdb_txn_begin(s->env, s->txn, 0, &child);
  if (rc) return lmdb_err(err, rc, "begin nested");
  s->parent = s->txn;
  s->txn = child;
  /* Where the nested transaction's writes start in the write set: if it
   * is dropped, they are dropped from the write set too. */
  if (s->ws) s->nest_mark = fq_ws_mark(s->ws);
  return 0;
}

int fq_store_nest_commit(fq_store_t *s, fq_err_t *err) {
  if (!s->parent) return fq_errf(err, FQ_EINTERNAL, "store: no nested transaction");
  int rc = mdb_txn_commit(s->txn); /* frees the child, committed or not */
  s->txn = s->parent;
  s->parent = NULL;
  if (rc && s->ws) fq_ws_rollback(s->ws, s->nest_mark);
  return rc ? lmdb_err(err, rc, "commit nested") : 0;
}

void fq_store_nest_abort(fq_store_t *s) {
  if (!s->parent) return;
  mdb_txn_abort(s->txn);
  s->txn = s->parent;
  s->parent = NULL;
  if (s->ws) fq_ws_rollback(s->ws, s->nest_mark);
}

/* --- cluster: write sets out and in ---------------------------------------------
 *
 * The owner of a shard captures each write transaction's writes
 * (fq_store_capture, "The write path" above), prepares the transaction
 * (the rows commit would add, and meta "applied" = the log sequence the
 * transaction will have), appends the encoded write set to the shard's log
 * and commits.  A follower applies each log entry in one write transaction
 * with the same "applied", so the entry and the position move together
 * (docs/cluster.md). */

#define META_APPLIED "applied"

int fq_store_capture(fq_store_t *s, struct fq_ws *ws, fq_err_t *err) {
  if (s->txn) return fq_errf(err, FQ_EINTERNAL, "store: capture switched inside a transaction");
  s->ws = ws;
  return 0;
}

/* meta "applied" in the open transaction: 0 when absent (a store that
 * never took a log entry).  LMDB's code. */
static int applied_get(fq_store_t *s, uint64_t *v) {
  int rc = meta_get_u64(s->txn, s->meta, META_APPLIED, v);
  if (rc == MDB_NOTFOUND) {
    *v = 0;
    rc = 0;
  }
  return rc;
}

int fq_store_applied(fq_store_t *s, uint64_t *applied, fq_err_t *err) {
  bool own = !s->txn;
  int rc;
  if (own && (rc = fq_store_begin(s, false, err)) != 0) return rc;
  rc = applied_get(s, applied);
  if (own) fq_store_abort(s);
  return rc ? lmdb_err(err, rc, "read meta applied") : 0;
}

/* seq against the applied position: the specific code of a repeat or a
 * hole, 0 when seq is the next one. */
static int seq_check(uint64_t seq, uint64_t applied, const char *what, fq_err_t *err) {
  if (seq <= applied)
    return fq_errf(err, FQ_STORE_EREPEAT,
                   "%s log entry %" PRIu64 ": this store has applied up to %" PRIu64
                   " already (a repeat)",
                   what, seq, applied);
  if (seq != applied + 1)
    return fq_errf(err, FQ_STORE_EHOLE,
                   "%s log entry %" PRIu64 ": this store has applied up to %" PRIu64
                   " (entries %" PRIu64 "..%" PRIu64 " are missing)",
                   what, seq, applied, applied + 1, seq - 1);
  return 0;
}

int fq_store_prepare(fq_store_t *s, uint64_t seq, fq_err_t *err) {
  if (!s->txn || !s->txn_write || s->parent || s->prepared)
    return fq_errf(err, FQ_EINTERNAL,
                   "store: prepare needs an open write transaction, no nested one, once");
  uint64_t applied;
  int rc = applied_get(s, &applied);
  if (rc) return lmdb_err(err, rc, "read meta applied");
  if ((rc = seq_check(seq, applied, "prepare as", err)) != 0) return rc;
  if ((rc = write_counters(s)) != 0 || (rc = st_meta_put(s, META_APPLIED, seq)) != 0)
    return lmdb_err(err, rc, "prepare");
  s->prepared = true;
  return 0;
}

typedef struct apply_ctx {
  fq_store_t *s;
  MDB_dbi dbs[10];  /* by the index of docs/cluster.md */
  uint64_t seq;
  uint32_t op;      /* the operation being applied, from 0 (for errors) */
  fq_err_t *err;
} apply_ctx_t;

static const char *const ws_db_names[10] = {"meta",    "cmd",    "idemlog", "active", "events",
                                            "session", "tcount", "tindex",  "sched",  "camp"};

/* Apply one operation of a write set inside the apply transaction, and
 * note what it changes in memory: an `idemlog` row added goes into the
 * dedupe table now (an entry whose row is not durable is only a miss, as
 * on the owner), one deleted leaves it after the commit (s->gone); a
 * `tcount` row moves the tenant's counter with the transaction. */
static int apply_op(void *ud, unsigned db, int op, const uint8_t *key, size_t klen,
                    const uint8_t *val, size_t vlen) {
  apply_ctx_t *a = ud;
  fq_store_t *s = a->s;
  uint32_t i = a->op++;
  if (db >= sizeof a->dbs / sizeof a->dbs[0])
    return fq_errf(a->err, FQ_EPROTO,
                   "log entry %" PRIu64 ", operation %" PRIu32 ": db index %u names no database",
                   a->seq, i, db);
  MDB_dbi dbi = a->dbs[db];
  MDB_val k = {klen, (void *)key}, d = {vlen, (void *)val};
  int rc;
  if (dbi == s->meta && klen == strlen(META_APPLIED) && memcmp(key, META_APPLIED, klen) == 0 &&
      (op != FQ_WS_PUT || vlen != 8 || fq_get_be64(val) != a->seq))
    return fq_errf(a->err, FQ_EPROTO,
                   "log entry %" PRIu64 " was prepared as another entry (meta applied %" PRIu64
                   ")",
                   a->seq, op == FQ_WS_PUT && vlen == 8 ? fq_get_be64(val) : 0);
  /* meta store_id names this copy (the restart snapshot's stamp): never
   * in a write set, and a log entry that carried one is not to be trusted. */
  if (dbi == s->meta && klen == 8 && memcmp(key, "store_id", 8) == 0)
    return fq_errf(a->err, FQ_EPROTO,
                   "log entry %" PRIu64 ", operation %" PRIu32 ": writes meta store_id, which "
                   "names one copy and is never replicated", a->seq, i);
  if (op == FQ_WS_PUT) {
    if ((rc = mdb_put(s->txn, dbi, &k, &d, 0)) != 0) return lmdb_err(a->err, rc, "apply put");
    uint64_t h;
    if (dbi == s->idemlog && klen == FQ_ID_LEN && idem_row_hash(&d, &h)) {
      char id[FQ_ID_LEN + 1];
      memcpy(id, key, FQ_ID_LEN);
      id[FQ_ID_LEN] = 0;
      if (fq_idem_put(s->idem, h, fq_store_id_num(id)) != 0)
        return fq_errf(a->err, -ENOMEM, "out of memory for the dedupe table");
    } else if (dbi == s->tcount && klen >= 1 && klen <= FQ_TENANT_MAX && vlen == 8) {
      tctr_t *c = tctr_get(s, (const char *)key, klen);
      if (!c || tctr_touch(s, c) != 0)
        return fq_errf(a->err, -ENOMEM, "out of memory for the tenant counters");
      c->txn_last = fq_get_be64(val);
    }
    return 0;
  }
  uint64_t h = 0;
  bool idem = false;
  if (dbi == s->idemlog && klen == FQ_ID_LEN) {
    MDB_val old;
    if ((rc = mdb_get(s->txn, dbi, &k, &old)) == 0) idem = idem_row_hash(&old, &h);
    else if (rc != MDB_NOTFOUND) return lmdb_err(a->err, rc, "apply: idemlog get");
  }
  rc = mdb_del(s->txn, dbi, &k, NULL);
  /* The owner records only deletions that deleted something: a key this
   * copy lacks means the copy is not the owner's. */
  if (rc == MDB_NOTFOUND)
    return fq_errf(a->err, FQ_ESTORAGE,
                   "log entry %" PRIu64 ", operation %" PRIu32 " deletes a key that `%s` "
                   "does not hold: this copy of shard %u differs from the log",
                   a->seq, i, ws_db_names[db], s->shard);
  if (rc) return lmdb_err(a->err, rc, "apply del");
  if (idem) {
    if (s->ngone == s->agone) {
      size_t n = s->agone ? s->agone * 2 : 256;
      void *p = realloc(s->gone, n * sizeof *s->gone);
      if (!p) return fq_errf(a->err, -ENOMEM, "out of memory");
      s->gone = p;
      s->agone = n;
    }
    char id[FQ_ID_LEN + 1];
    memcpy(id, key, FQ_ID_LEN);
    id[FQ_ID_LEN] = 0;
    s->gone[s->ngone].h = h;
    s->gone[s->ngone++].num = fq_store_id_num(id);
  }
  return 0;
}

int fq_store_apply(fq_store_t *s, const uint8_t *msg, size_t len, uint64_t seq, fq_err_t *err) {
  if (s->txn || s->ws)
    return fq_errf(err, FQ_EINTERNAL,
                   "store: apply needs no open transaction and no capture (a follower's store)");
  /* The whole message is checked before anything is written: a hostile
   * or damaged one never opens a write transaction. */
  fq_ws_head_t h;
  int rc = fq_ws_decode(msg, len, &h, NULL, NULL, err);
  if (rc) return rc;
  if (h.genesis && seq != 1)
    return fq_errf(err, FQ_EPROTO, "log entry %" PRIu64 " is empty: only the genesis (1) may be",
                   seq);
  if (!h.genesis && h.shard != s->shard)
    return fq_errf(err, FQ_STORE_ESHARD,
                   "log entry %" PRIu64 " is shard %u's (from node %s), not shard %u's", seq,
                   h.shard, h.node, s->shard);
  if ((rc = fq_store_begin(s, true, err)) != 0) return rc;
  uint64_t applied;
  if ((rc = applied_get(s, &applied)) != 0) {
    rc = lmdb_err(err, rc, "read meta applied");
    goto fail;
  }
  if ((rc = seq_check(seq, applied, "apply", err)) != 0) goto fail;
  apply_ctx_t a = {.s = s, .seq = seq, .err = err,
                   .dbs = {s->meta, s->cmd, s->idemlog, s->active, s->events, s->session,
                           s->tcount, s->tindex, s->sched, s->camp}};
  s->ngone = 0;
  if (!h.genesis && (rc = fq_ws_decode(msg, len, &h, apply_op, &a, err)) != 0) goto fail;
  uint8_t b[8];
  fq_put_be64(b, seq);
  MDB_val k = {strlen(META_APPLIED), (void *)META_APPLIED}, d = {8, b};
  if ((rc = mdb_put(s->txn, s->meta, &k, &d, 0)) != 0) {
    rc = lmdb_err(err, rc, "apply: meta applied");
    goto fail;
  }
  /* The counters this store keeps in memory follow the rows, as a reopen
   * would load them (fq_store_open): ids and queue positions from meta,
   * the next seq from the last event, the tenants' tseq from the `tcount`
   * rows seen above.  Commit takes them over as it does its own. */
  if ((rc = meta_get_u64(s->txn, s->meta, "next_cmd", &s->txn_next_cmd)) != 0 ||
      (rc = meta_get_u64(s->txn, s->meta, "next_q", &s->txn_next_q)) != 0) {
    rc = lmdb_err(err, rc, "apply: read counters");
    goto fail;
  }
  MDB_cursor *cur;
  if ((rc = mdb_cursor_open(s->txn, s->events, &cur)) != 0) {
    rc = lmdb_err(err, rc, "cursor");
    goto fail;
  }
  MDB_val ek, ed;
  rc = mdb_cursor_get(cur, &ek, &ed, MDB_LAST);
  if (rc == 0 && ek.mv_size == 8) s->txn_next_seq = fq_get_be64(ek.mv_data) + 1;
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) {
    rc = lmdb_err(err, rc, "apply: last event");
    goto fail;
  }
  s->prepared = true; /* the rows are the owner's: commit adds none */
  if ((rc = fq_store_commit(s, err)) != 0) {
    s->ngone = 0;
    return rc;
  }
  for (size_t i = 0; i < s->ngone; i++) fq_idem_del(s->idem, s->gone[i].h, s->gone[i].num);
  s->ngone = 0;
  return 0;
fail:
  fq_store_abort(s);
  s->ngone = 0;
  return rc;
}

/* --- record codec ------------------------------------------------------------ */

static int buf_write(void *data, const char *p, size_t n) {
  return fq_buf_append((fq_buf_t *)data, p, n) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v) {
  pk_str(pk, k);
  pk_str(pk, v);
}

static void pk_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
  pk_str(pk, k);
  msgpack_pack_int64(pk, v);
}

void fq_cmdrec_free(fq_cmdrec_t *rec) {
  free(rec->params);
  rec->params = NULL;
  rec->params_len = 0;
}

int fq_cmdrec_pack(const fq_cmdrec_t *rec, fq_buf_t *out) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, out, buf_write);
  size_t start = out->len;
  msgpack_pack_map(&pk, rec->campaign[0] ? 27 : 26);
  pk_kv_str(&pk, "id", rec->id);
  if (rec->campaign[0]) pk_kv_str(&pk, "campaign", rec->campaign);
  pk_kv_str(&pk, "tenant", rec->tenant);
  pk_kv_str(&pk, "key", rec->key);
  pk_kv_str(&pk, "account", rec->account);
  if (rec->vin[0]) {
    pk_kv_str(&pk, "vin", rec->vin);
  } else {
    pk_str(&pk, "site");
    msgpack_pack_uint64(&pk, rec->site);
  }
  pk_kv_str(&pk, "command", rec->command);
  pk_str(&pk, "params");
  if (rec->params && rec->params_len) {
    if (fq_buf_append(out, rec->params, rec->params_len)) return FQ_ETOOLARGE;
  } else {
    msgpack_pack_map(&pk, 0);
  }
  pk_kv_str(&pk, "state", fq_state_name(rec->state));
  pk_kv_str(&pk, "reason", rec->reason);
  pk_str(&pk, "error");
  if (rec->error)
    pk_str(&pk, fq_errname(rec->error));
  else
    msgpack_pack_nil(&pk);
  pk_str(&pk, "http");
  if (rec->http)
    msgpack_pack_int(&pk, rec->http);
  else
    msgpack_pack_nil(&pk);
  pk_str(&pk, "fault");
  if (rec->fault >= 0)
    msgpack_pack_int(&pk, rec->fault);
  else
    msgpack_pack_nil(&pk);
  pk_kv_int(&pk, "attempts", rec->attempts);
  pk_kv_int(&pk, "created", rec->created);
  pk_kv_int(&pk, "updated", rec->updated);
  pk_kv_int(&pk, "deadline", rec->deadline);
  pk_kv_int(&pk, "ttl_ms", rec->ttl_ms);
  pk_str(&pk, "not_before");
  if (rec->not_before)
    msgpack_pack_int64(&pk, rec->not_before);
  else
    msgpack_pack_nil(&pk);
  pk_str(&pk, "coalesce");
  if (rec->coalesce)
    msgpack_pack_true(&pk);
  else
    msgpack_pack_false(&pk);
  pk_str(&pk, "wake");
  if (rec->no_wake)
    msgpack_pack_false(&pk);
  else
    msgpack_pack_true(&pk);
  pk_kv_int(&pk, "wakes", rec->wakes);
  pk_kv_int(&pk, "shard", fq_store_id_shard(rec->id, strlen(rec->id)));
  pk_kv_int(&pk, "queue_seq", (int64_t)rec->qseq);
  char hex[65];
  fq_hex_encode(rec->hash, 32, hex);
  pk_kv_str(&pk, "request_hash", hex);
  pk_kv_str(&pk, "device", rec->device);
  pk_str(&pk, "transitions");
  msgpack_pack_array(&pk, rec->ntrans);
  for (size_t i = 0; i < rec->ntrans; i++) {
    msgpack_pack_map(&pk, 2);
    pk_kv_str(&pk, "state", fq_state_name(rec->trans[i].state));
    pk_kv_int(&pk, "at", rec->trans[i].at);
  }
  /* The packer cannot report a failed write; a short buffer shows here. */
  if (out->len == start) return FQ_ETOOLARGE;
  return 0;
}

/* --- compact stored form ---------------------------------------------------
 * What the store keeps (the msgpack map above is what `get` returns, built
 * from it on demand).  A record is rewritten at every state change and
 * the pages it dirties are most of a commit's cost, so it is kept small
 * (about half the map's size) and cheap to write:
 *   u8 0xC1 (a byte msgpack never uses: tells it from the older map form)
 *   u8 version, u8 state, u8 ntrans,
 *   u8 flags (bit 0: coalesce, bit 1: `wake: false`; version 2)
 *   i32 error, i32 http, i32 fault, u32 attempts,
 *   i64 created, updated, deadline, ttl_ms, u64 site, u64 queue_seq,
 *   32 bytes request hash,
 *   u8-length strings: id, tenant, key, account, vin, device, command,
 *   u16-length reason, u32-length params (msgpack map bytes),
 *   ntrans x (u8 state, i64 at),
 *   version 2 on: u32 wakes
 *   version 3 on: i64 not_before (a record without one, and without a
 *   campaign, is written as version 2)
 *   version 4: u8-length campaign id
 * Integers are little endian.  Version 2 added the trailing wakes count
 * (and flag bit 1); version 1 records, written before, still decode, with
 * no wakes and `wake` true.  Version 3 added not_before (scheduled
 * commands); older records decode without one. */
#define REC_VERSION 4

static uint8_t *w_u32(uint8_t *o, uint32_t v) {
  fq_put_le32(o, v);
  return o + 4;
}

static uint8_t *w_u64(uint8_t *o, uint64_t v) {
  fq_put_le64(o, v);
  return o + 8;
}

static uint8_t *w_str8(uint8_t *o, const char *str, size_t cap) {
  size_t n = strnlen(str, cap < 255 ? cap : 255);
  *o++ = (uint8_t)n;
  memcpy(o, str, n);
  return o + n;
}

int fq_cmdrec_encode(const fq_cmdrec_t *rec, fq_buf_t *out) {
  size_t rl = strnlen(rec->reason, sizeof rec->reason - 1);
  size_t nt = rec->ntrans < FQ_MAX_TRANSITIONS ? rec->ntrans : FQ_MAX_TRANSITIONS;
  size_t pl = rec->params ? rec->params_len : 0;
  size_t max = 5 + 16 + 48 + 16 + 32 + 8 * 256 + 2 + rl + 4 + pl + nt * 9 + 4 + 8;
  int rc = fq_buf_reserve(out, max);
  if (rc) return rc;
  uint8_t *o = out->data + out->len;
  *o++ = REC_MAGIC;
  /* Without a not_before the record is what version 2 wrote: the most
   * common record stays as small as it was. */
  unsigned version = rec->campaign[0] ? 4 : rec->not_before ? 3 : 2;
  *o++ = (uint8_t)version;
  *o++ = (uint8_t)rec->state;
  *o++ = (uint8_t)nt;
  *o++ = (uint8_t)((rec->coalesce ? 1 : 0) | (rec->no_wake ? 2 : 0));
  o = w_u32(o, (uint32_t)rec->error);
  o = w_u32(o, (uint32_t)rec->http);
  o = w_u32(o, (uint32_t)rec->fault);
  o = w_u32(o, rec->attempts);
  o = w_u64(o, (uint64_t)rec->created);
  o = w_u64(o, (uint64_t)rec->updated);
  o = w_u64(o, (uint64_t)rec->deadline);
  o = w_u64(o, (uint64_t)rec->ttl_ms);
  o = w_u64(o, rec->site);
  o = w_u64(o, rec->qseq);
  memcpy(o, rec->hash, 32);
  o += 32;
  o = w_str8(o, rec->id, sizeof rec->id);
  o = w_str8(o, rec->tenant, sizeof rec->tenant);
  o = w_str8(o, rec->key, sizeof rec->key);
  o = w_str8(o, rec->account, sizeof rec->account);
  o = w_str8(o, rec->vin, sizeof rec->vin);
  o = w_str8(o, rec->device, sizeof rec->device);
  o = w_str8(o, rec->command, sizeof rec->command);
  fq_put_le16(o, (uint16_t)rl);
  o += 2;
  memcpy(o, rec->reason, rl);
  o += rl;
  o = w_u32(o, (uint32_t)pl);
  if (pl) memcpy(o, rec->params, pl);
  o += pl;
  for (size_t i = 0; i < nt; i++) {
    *o++ = (uint8_t)rec->trans[i].state;
    o = w_u64(o, (uint64_t)rec->trans[i].at);
  }
  o = w_u32(o, rec->wakes);
  if (version >= 3) o = w_u64(o, (uint64_t)rec->not_before);
  if (version >= 4) o = w_str8(o, rec->campaign, sizeof rec->campaign);
  out->len = (size_t)(o - out->data);
  return 0;
}

/* A bounded reader over a compact record: every read checks the length,
 * so damaged bytes end in FQ_ESTORAGE, never past the end. */
typedef struct crd {
  const uint8_t *p, *end;
  bool bad;
} crd_t;

static const uint8_t *r_take(crd_t *r, size_t n) {
  if (r->bad || (size_t)(r->end - r->p) < n) {
    r->bad = true;
    return NULL;
  }
  const uint8_t *q = r->p;
  r->p += n;
  return q;
}

/* A little-endian integer of 1, 2, 4 or 8 bytes. */
static uint64_t r_uint(crd_t *r, int bytes) {
  const uint8_t *q = r_take(r, (size_t)bytes);
  if (!q) return 0;
  switch (bytes) {
  case 1: return q[0];
  case 2: return fq_get_le16(q);
  case 4: return fq_get_le32(q);
  default: return fq_get_le64(q);
  }
}

static void r_str8(crd_t *r, char *dst, size_t cap) {
  size_t n = (size_t)r_uint(r, 1);
  const uint8_t *q = r_take(r, n);
  if (!q || n > cap - 1) {
    r->bad = true;
    dst[0] = 0;
    return;
  }
  memcpy(dst, q, n);
  dst[n] = 0;
}

static int cmdrec_decode(const uint8_t *p, size_t n, fq_cmdrec_t *rec, fq_err_t *err) {
  crd_t r = {p, p + n, false};
  if (r_uint(&r, 1) != REC_MAGIC)
    return fq_errf(err, FQ_ESTORAGE, "command record of an unknown version");
  unsigned version = (unsigned)r_uint(&r, 1);
  if (version < 1 || version > REC_VERSION)
    return fq_errf(err, FQ_ESTORAGE, "command record of an unknown version");
  rec->state = (int)r_uint(&r, 1);
  size_t nt = (size_t)r_uint(&r, 1);
  unsigned flags = (unsigned)r_uint(&r, 1);
  rec->coalesce = (flags & 1) != 0;
  rec->no_wake = version >= 2 && (flags & 2) != 0;
  rec->error = (int)(int32_t)(uint32_t)r_uint(&r, 4);
  rec->http = (int)(int32_t)(uint32_t)r_uint(&r, 4);
  rec->fault = (int)(int32_t)(uint32_t)r_uint(&r, 4);
  rec->attempts = (uint32_t)r_uint(&r, 4);
  rec->created = (int64_t)r_uint(&r, 8);
  rec->updated = (int64_t)r_uint(&r, 8);
  rec->deadline = (int64_t)r_uint(&r, 8);
  rec->ttl_ms = (int64_t)r_uint(&r, 8);
  rec->site = r_uint(&r, 8);
  rec->qseq = r_uint(&r, 8);
  const uint8_t *h = r_take(&r, 32);
  if (h) memcpy(rec->hash, h, 32);
  r_str8(&r, rec->id, sizeof rec->id);
  r_str8(&r, rec->tenant, sizeof rec->tenant);
  r_str8(&r, rec->key, sizeof rec->key);
  r_str8(&r, rec->account, sizeof rec->account);
  r_str8(&r, rec->vin, sizeof rec->vin);
  r_str8(&r, rec->device, sizeof rec->device);
  r_str8(&r, rec->command, sizeof rec->command);
  size_t rl = (size_t)r_uint(&r, 2);
  const uint8_t *q = r_take(&r, rl);
  if (q && rl < sizeof rec->reason) {
    memcpy(rec->reason, q, rl);
    rec->reason[rl] = 0;
  } else {
    r.bad = true;
  }
  size_t pl = (size_t)r_uint(&r, 4);
  q = r_take(&r, pl);
  if (!r.bad && pl) {
    rec->params = malloc(pl);
    if (!rec->params) return fq_errf(err, -ENOMEM, "out of memory");
    memcpy(rec->params, q, pl);
    rec->params_len = pl;
  }
  if (nt > FQ_MAX_TRANSITIONS) r.bad = true;
  for (size_t i = 0; i < nt && !r.bad; i++) {
    rec->trans[i].state = (int)r_uint(&r, 1);
    rec->trans[i].at = (int64_t)r_uint(&r, 8);
  }
  if (version >= 2) rec->wakes = (uint32_t)r_uint(&r, 4);
  if (version >= 3) rec->not_before = (int64_t)r_uint(&r, 8);
  if (version >= 4) r_str8(&r, rec->campaign, sizeof rec->campaign);
  rec->ntrans = r.bad ? 0 : nt;
  if (r.bad || r.p != r.end || rec->state >= FQ_ST_COUNT_ || strlen(rec->id) != FQ_ID_LEN) {
    fq_cmdrec_free(rec);
    return fq_errf(err, FQ_ESTORAGE, "command record corrupted");
  }
  return 0;
}

/* Records are our own bytes, but a damaged file must not crash the
 * daemon: the bounded reader (mpread.h) checks every size, and nothing is
 * allocated but the params copy. */
static bool key_eq(const fq__mp_obj_t *k, const char *name) {
  size_t n = strlen(name);
  return k->kind == FQ__MP_STR && k->len == n && memcmp(k->p, name, n) == 0;
}

static void copy_obj_str(char *dst, size_t cap, const fq__mp_obj_t *v) {
  size_t n = 0;
  if (v->kind == FQ__MP_STR) {
    n = v->len < cap - 1 ? v->len : cap - 1;
    memcpy(dst, v->p, n);
  }
  dst[n] = 0;
}

static int64_t obj_i64(const fq__mp_obj_t *v) {
  if (v->kind == FQ__MP_UINT) return (int64_t)v->v.u;
  if (v->kind == FQ__MP_NINT) return v->v.i;
  return 0;
}

static int obj_state_of(const fq__mp_obj_t *v) {
  return v->kind == FQ__MP_STR ? fq_state_parse((const char *)v->p, v->len) : -1;
}

int fq_cmdrec_unpack(const uint8_t *p, size_t n, fq_cmdrec_t *rec, fq_err_t *err) {
  fq__mp_rd_t r;
  fq__mp_obj_t top, k, v;
  fq_err_t e;
  memset(rec, 0, sizeof *rec);
  rec->fault = -1;
  if (n && p[0] == REC_MAGIC) return cmdrec_decode(p, n, rec, err);
  fq__mp_rd_init(&r, p, n);
  if (fq__mp_next(&r, &top, &e) || top.kind != FQ__MP_MAP) goto bad;
  for (uint32_t i = 0; i < top.v.count; i++) {
    if (fq__mp_next(&r, &k, &e)) goto bad;
    if (key_eq(&k, "params")) {
      const uint8_t *start = r.p;
      if (fq__mp_skip(&r, 2, 32, &e)) goto bad;
      size_t len = (size_t)(r.p - start);
      free(rec->params);
      rec->params = malloc(len ? len : 1);
      if (!rec->params) {
        fq_cmdrec_free(rec);
        return fq_errf(err, -ENOMEM, "out of memory");
      }
      memcpy(rec->params, start, len);
      rec->params_len = len;
      continue;
    }
    if (key_eq(&k, "transitions")) {
      if (fq__mp_next(&r, &v, &e) || v.kind != FQ__MP_ARRAY) goto bad;
      for (uint32_t j = 0; j < v.v.count; j++) {
        fq__mp_obj_t m, tk, tv;
        if (fq__mp_next(&r, &m, &e) || m.kind != FQ__MP_MAP) goto bad;
        fq_transition_t tr = {.state = -1};
        for (uint32_t q = 0; q < m.v.count; q++) {
          if (fq__mp_next(&r, &tk, &e) || fq__mp_next(&r, &tv, &e)) goto bad;
          if (key_eq(&tk, "state")) tr.state = obj_state_of(&tv);
          else if (key_eq(&tk, "at")) tr.at = obj_i64(&tv);
          else if (tv.kind == FQ__MP_ARRAY || tv.kind == FQ__MP_MAP) goto bad;
        }
        if (rec->ntrans < FQ_MAX_TRANSITIONS) rec->trans[rec->ntrans++] = tr;
      }
      continue;
    }
    if (fq__mp_next(&r, &v, &e)) goto bad;
    if (v.kind == FQ__MP_ARRAY || v.kind == FQ__MP_MAP) {
      /* Not ours (a newer version's field): step over its contents. */
      for (uint64_t c = (uint64_t)v.v.count * (v.kind == FQ__MP_MAP ? 2 : 1); c; c--)
        if (fq__mp_skip(&r, 2, 32, &e)) goto bad;
      continue;
    }
    if (key_eq(&k, "id")) copy_obj_str(rec->id, sizeof rec->id, &v);
    else if (key_eq(&k, "tenant")) copy_obj_str(rec->tenant, sizeof rec->tenant, &v);
    else if (key_eq(&k, "key")) copy_obj_str(rec->key, sizeof rec->key, &v);
    else if (key_eq(&k, "account")) copy_obj_str(rec->account, sizeof rec->account, &v);
    else if (key_eq(&k, "vin")) copy_obj_str(rec->vin, sizeof rec->vin, &v);
    else if (key_eq(&k, "site")) rec->site = (uint64_t)obj_i64(&v);
    else if (key_eq(&k, "device")) copy_obj_str(rec->device, sizeof rec->device, &v);
    else if (key_eq(&k, "command")) copy_obj_str(rec->command, sizeof rec->command, &v);
    else if (key_eq(&k, "state")) rec->state = obj_state_of(&v);
    else if (key_eq(&k, "reason")) copy_obj_str(rec->reason, sizeof rec->reason, &v);
    else if (key_eq(&k, "error")) {
      if (v.kind == FQ__MP_STR) {
        char name[64];
        copy_obj_str(name, sizeof name, &v);
        rec->error = fq_errcode(name);
        if (!rec->error) rec->error = FQ_EINTERNAL;
      }
    } else if (key_eq(&k, "http")) rec->http = (int)obj_i64(&v);
    else if (key_eq(&k, "fault")) rec->fault = v.kind == FQ__MP_NIL ? -1 : (int)obj_i64(&v);
    else if (key_eq(&k, "attempts")) rec->attempts = (uint32_t)obj_i64(&v);
    else if (key_eq(&k, "created")) rec->created = obj_i64(&v);
    else if (key_eq(&k, "updated")) rec->updated = obj_i64(&v);
    else if (key_eq(&k, "deadline")) rec->deadline = obj_i64(&v);
    else if (key_eq(&k, "ttl_ms")) rec->ttl_ms = obj_i64(&v);
    else if (key_eq(&k, "coalesce")) rec->coalesce = v.kind == FQ__MP_BOOL && v.v.b;
    else if (key_eq(&k, "wake")) rec->no_wake = v.kind == FQ__MP_BOOL && !v.v.b;
    else if (key_eq(&k, "wakes")) rec->wakes = (uint32_t)obj_i64(&v);
    else if (key_eq(&k, "queue_seq")) rec->qseq = (uint64_t)obj_i64(&v);
    else if (key_eq(&k, "request_hash")) {
      char hex[65];
      copy_obj_str(hex, sizeof hex, &v);
      if (fq_hex_decode(hex, rec->hash, 32) != 32) memset(rec->hash, 0, 32);
    }
  }
  if (rec->state < 0 || strlen(rec->id) != FQ_ID_LEN) goto bad;
  return 0;
bad:
  fq_cmdrec_free(rec);
  return fq_errf(err, FQ_ESTORAGE, "command record corrupted");
}

/* --- the data directory ----------------------------------------------------- */

struct fq_store_datadir {
  int lockfd; /* flock'ed LOCK; closing it releases the lock */
};

/* The text of errno value e (strerror_r: this may run beside threads). */
static const char *errno_text(int e, char *buf, size_t cap) { return strerror_r(e, buf, cap); }

/* Read SHARDS into *count.  0, FQ_ENOTFOUND when there is no file yet,
 * FQ_ECONFIG when it does not hold a count, FQ_ESTORAGE. */
static int shards_read(const char *path, unsigned *count, fq_err_t *err) {
  char buf[32], et[128];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return FQ_ENOTFOUND;
    return fq_errf(err, FQ_ESTORAGE, "cannot open %s: %s", path,
                   errno_text(errno, et, sizeof et));
  }
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int e = errno;
  close(fd);
  if (n < 0) return fq_errf(err, FQ_ESTORAGE, "cannot read %s: %s", path, errno_text(e, et, sizeof et));
  buf[n] = 0;
  /* Exactly what shards_write() writes: decimal digits and a newline. */
  unsigned long v = 0;
  ssize_t i = 0;
  for (; i < n && buf[i] >= '0' && buf[i] <= '9' && v <= 1000000; i++)
    v = v * 10 + (unsigned long)(buf[i] - '0');
  if (i == 0 || v == 0 || v > 1000000 || (i < n && !(buf[i] == '\n' && i + 1 == n)))
    return fq_errf(err, FQ_ECONFIG,
                   "%s does not hold a shard count: write the count this data directory "
                   "was created with into it (one decimal number)",
                   path);
  *count = (unsigned)v;
  return 0;
}

/* Write SHARDS so that it is never seen half written: a crash leaves
 * either no file or the whole count. */
static int shards_write(const char *dir, const char *path, unsigned count, fq_err_t *err) {
  char tmp[4200 + 8], line[16], et[128];
  int rc = 0;
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int len = snprintf(line, sizeof line, "%u\n", count);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write(fd, line, (size_t)len) != len || fsync(fd) != 0) {
    rc = fq_errf(err, FQ_ESTORAGE, "cannot write %s: %s", tmp, errno_text(errno, et, sizeof et));
    goto out;
  }
  if (close(fd) != 0) {
    fd = -1;
    rc = fq_errf(err, FQ_ESTORAGE, "cannot write %s: %s", tmp, errno_text(errno, et, sizeof et));
    goto out;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    rc = fq_errf(err, FQ_ESTORAGE, "cannot rename %s to %s: %s", tmp, path,
                 errno_text(errno, et, sizeof et));
    goto out;
  }
  /* Make the rename itself durable before any store is created. */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
out:
  if (fd >= 0) close(fd);
  if (rc) unlink(tmp);
  return rc;
}

int fq_store_open_datadir(const char *dir, unsigned shards, fq_store_datadir_t **out,
                          fq_err_t *err) {
  char lockpath[4200], countpath[4200], et[128];
  fq_store_datadir_t *dd = NULL;
  int rc = 0;
  *out = NULL;
  if (shards == 0) return fq_errf(err, FQ_ECONFIG, "the shard count must be at least 1");
  if (strlen(dir) > 4000) return fq_errf(err, FQ_ECONFIG, "data directory path too long");
  snprintf(lockpath, sizeof lockpath, "%s/LOCK", dir);
  snprintf(countpath, sizeof countpath, "%s/SHARDS", dir);
  if (!(dd = calloc(1, sizeof *dd))) return fq_errf(err, -ENOMEM, "out of memory");
  dd->lockfd = -1;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    rc = fq_errf(err, FQ_ESTORAGE, "cannot create data directory %s: %s", dir,
                 errno_text(errno, et, sizeof et));
    goto out;
  }
  /* O_CLOEXEC: a child (the simulator of --demo) must not keep the lock
   * alive after this daemon is gone. */
  dd->lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (dd->lockfd < 0) {
    rc = fq_errf(err, FQ_ESTORAGE, "cannot open %s: %s", lockpath,
                 errno_text(errno, et, sizeof et));
    goto out;
  }
  if (flock(dd->lockfd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      rc = fq_errf(err, FQ_EBUSY,
                   "data directory %s is in use by another fleetqd (%s is locked); stop it "
                   "or choose another --data",
                   dir, lockpath);
    else
      rc = fq_errf(err, FQ_ESTORAGE, "cannot lock %s: %s", lockpath,
                   errno_text(errno, et, sizeof et));
    goto out;
  }
  unsigned stored = 0;
  rc = shards_read(countpath, &stored, err);
  if (rc == FQ_ENOTFOUND) {
    rc = shards_write(dir, countpath, shards, err);
  } else if (rc == 0 && stored != shards) {
    rc = fq_errf(err, FQ_ECONFIG,
                 "data directory %s was created with %u shard(s); the shard count cannot "
                 "change for a data directory (start with --shards %u)",
                 dir, stored, stored);
  }
out:
  if (rc) {
    fq_store_close_datadir(&dd);
    return rc;
  }
  *out = dd;
  return 0;
}

void fq_store_close_datadir(fq_store_datadir_t **dp) {
  if (!dp || !*dp) return;
  /* Closing the only descriptor of the open file releases the flock. */
  if ((*dp)->lockfd >= 0) close((*dp)->lockfd);
  free(*dp);
  *dp = NULL;
}
